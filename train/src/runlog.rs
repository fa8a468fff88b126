//! The run directory: `runs/<model>-<timestamp>/` by default. It holds `config.json` (the
//! resolved recipe and flags), `metrics.jsonl` (one line per logged step: step, epoch, loss, lr,
//! grad norm, data time, step time, clips/s), `epochs.jsonl` (per-epoch train and validation
//! metrics), the PNG plots (plot.rs) and `per_class.csv` of the last validation. Files are
//! appended line by line and flushed, so a killed run keeps what it logged; whole files
//! (config, CSV) are written atomically.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tubelet::{Error, Result};

/// `runs/<model>-<UTC timestamp>` under the current folder.
pub fn default_run_dir(model: &str) -> PathBuf {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    PathBuf::from("runs").join(format!("{model}-{}", utc_stamp(secs)))
}

/// `YYYYmmdd-HHMMSS` of a Unix time, UTC (civil-from-days, Howard Hinnant's algorithm).
pub fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Io(format!("{what} {}: {e}", path.display()))
}

/// Writes `bytes` to `path` through a unique temporary file in the same folder, then renames it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(|e| io_err("cannot create", &tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| io_err("cannot write", &tmp, e))?;
        f.sync_all().map_err(|e| io_err("cannot sync", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io_err("cannot rename into", path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// An open run directory.
pub struct RunLog {
    pub dir: PathBuf,
    metrics: File,
    epochs: File,
}

impl RunLog {
    /// Creates `dir` (and parents) and writes `config.json`. A folder that already holds a
    /// `metrics.jsonl` is appended to (a resumed run keeps its history).
    pub fn create(dir: &Path, config: &Value) -> Result<RunLog> {
        std::fs::create_dir_all(dir).map_err(|e| io_err("cannot create the run folder", dir, e))?;
        let text = serde_json::to_string_pretty(config)
            .map_err(|e| Error::Io(format!("config.json: {e}")))?;
        write_atomic(&dir.join("config.json"), text.as_bytes())?;
        let open = |name: &str| {
            let p = dir.join(name);
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .map_err(|e| io_err("cannot open", &p, e))
        };
        Ok(RunLog {
            dir: dir.to_path_buf(),
            metrics: open("metrics.jsonl")?,
            epochs: open("epochs.jsonl")?,
        })
    }

    fn line(file: &mut File, v: &Value, path: &Path) -> Result<()> {
        writeln!(file, "{v}")
            .and_then(|_| file.flush())
            .map_err(|e| io_err("cannot write", path, e))
    }

    pub fn step(&mut self, v: &Value) -> Result<()> {
        let p = self.dir.join("metrics.jsonl");
        Self::line(&mut self.metrics, v, &p)
    }

    pub fn epoch(&mut self, v: &Value) -> Result<()> {
        let p = self.dir.join("epochs.jsonl");
        Self::line(&mut self.epochs, v, &p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}
