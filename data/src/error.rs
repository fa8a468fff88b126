//! Errors of the data pipeline. Each names the file (and line, for annotation lists) and the
//! values that are wrong; a per-file error is what the loader reports when it skips a clip.

use std::path::PathBuf;

#[derive(Debug, Clone, thiserror::Error)]
pub enum DataError {
    /// A file or folder that cannot be read.
    #[error("{path}: {msg}")]
    Io { path: PathBuf, msg: String },
    /// A malformed line of an annotation list (1-based line number).
    #[error("{path}:{line}: {msg}")]
    Annotation {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    /// A video or image that cannot be decoded, or has too few frames.
    #[error("{path}: {msg}")]
    Decode { path: PathBuf, msg: String },
    /// A video handed to a build without video support.
    #[error(
        "{path}: this build of tubelet has no video support (cargo feature `video`, FFmpeg's \
         libraries); rebuild with `--features video`, or extract frames and use a rawframes list"
    )]
    NoVideoSupport { path: PathBuf },
    /// A bad option value (sampling, transform, loader settings).
    #[error("{0}")]
    Config(String),
    /// Too many files of a split failed; the run stops.
    #[error("{0}")]
    TooManyBad(String),
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
    /// True for a problem of one file (unreadable, undecodable, too short): the loader skips
    /// that item, warns once and counts it. Anything else (a bad option, a build without video
    /// support, too many bad files) stops the run.
    pub fn is_bad_file(&self) -> bool {
        matches!(self, DataError::Io { .. } | DataError::Decode { .. })
    }

    /// The reason alone, without the file name the message starts with (for tables that show
    /// the file in its own column).
    pub fn reason(&self) -> String {
        match self {
            DataError::Io { msg, .. } | DataError::Decode { msg, .. } => msg.clone(),
            DataError::Annotation { line, msg, .. } => format!("line {line}: {msg}"),
            other => other.to_string(),
        }
    }
}

impl From<DataError> for tubelet::Error {
    fn from(e: DataError) -> tubelet::Error {
        match e {
            DataError::Config(m) => tubelet::Error::Config(m),
            other => tubelet::Error::Io(other.to_string()),
        }
    }
}
