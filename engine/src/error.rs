//! The error type of every fallible call: each message names the thing and the offending values.

/// Errors at the boundaries a user touches: shapes, configs, files, device limits.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Shapes that do not fit the op, e.g. `matmul: inner dims differ: [2, 3] @ [4, 5]`.
    #[error("{0}")]
    Shape(String),
    /// No usable adapter, with what to install.
    #[error("{0}")]
    NoAdapter(String),
    /// A request above what the adapter allows (buffer size, workgroups, workgroup memory).
    #[error("{0}")]
    DeviceLimit(String),
    /// A wgpu failure that is not the user's doing.
    #[error("GPU error: {0}")]
    Gpu(String),
    /// A bad configuration value (model config, environment variable, CLI argument).
    #[error("{0}")]
    Config(String),
    /// A weight, checkpoint or data file that cannot be read or written.
    #[error("{0}")]
    Io(String),
    /// Autograd misuse, e.g. backward from a non-scalar.
    #[error("{0}")]
    Autograd(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `bail!(Shape, "...")` shorthand for returning an error variant with a formatted message.
#[macro_export]
macro_rules! bail {
    ($kind:ident, $($arg:tt)*) => {
        return Err($crate::Error::$kind(format!($($arg)*)))
    };
}
