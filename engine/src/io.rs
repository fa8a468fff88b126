//! Weights on disk: safetensors, written atomically, loaded by official key names.
//!
//! - [`save`] / [`save_host`] refuse non-finite values (a diverged run never overwrites a good
//!   file), write a temporary file with a unique name beside the target (pid + a counter, so
//!   two runs saving to one path never share a temporary), sync it, then rename it over the
//!   target: a crash mid-write never leaves a truncated checkpoint, and the temporary is
//!   removed on every error. [`check_writable`] creates (and removes) such a temporary up
//!   front, so an unwritable `--save` is found before training, not after.
//! - [`read`] refuses NaN and ±Inf, naming the tensor.
//! - [`load_into`] fills a model's named parameters from a file by key. Both the file's keys
//!   and the model's are compared after stripping the wrapper prefixes official checkpoints
//!   carry (`module.`, `model.`, `backbone.`, ...): a model whose own keys carry `backbone.`
//!   (Video Swin, as mmaction2 names it) then loads both the files it wrote and official
//!   files. One message lists every missing, unexpected and wrongly shaped key.
//! - f32, f64, f16 and bf16 files are read, and integer buffers as f32.
//!
//! PyTorch containers (`.pth`, `.pyth`) and fine-tuning semantics live in
//! `train/src/weights.rs`; whole training states in `train/src/checkpoint.rs`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Wrapper prefixes stripped from checkpoint keys (from both the file's and the model's), as
/// the official loaders do: DataParallel's `module.`, TimeSformer's `model.`, mmaction2's
/// `backbone.`, and the names of the dictionaries a state dict is nested in.
pub const KNOWN_PREFIXES: [&str; 5] = [
    "module.",
    "model.",
    "backbone.",
    "state_dict.",
    "model_state.",
];

/// A tensor read from a file: shape and f32 values.
#[derive(Clone, Debug)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Writes `tensors` (name → tensor) to `path` atomically, with optional string metadata.
pub fn save(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let mut host = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        host.push((name.clone(), t.shape().to_vec(), t.to_vec()?));
    }
    save_host(path, &host, metadata)
}

/// The first tensor holding a NaN or ±Inf, as "name (N non-finite values, the first, v, at
/// index i)"; `None` when every value is finite.
pub fn first_non_finite<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a [f32])>,
) -> Option<String> {
    for (name, data) in tensors {
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            let n = data.iter().filter(|v| !v.is_finite()).count();
            return Some(format!(
                "{name} ({n} non-finite values, the first, {}, at index {i})",
                data[i]
            ));
        }
    }
    None
}

/// Writes host tensors (name, shape, values) to `path` atomically. Refuses (and writes
/// nothing) when a value is NaN or ±Inf.
pub fn save_host(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let bytes = serialize_host(tensors, metadata).map_err(|e| {
        Error::Io(format!(
            "refusing to write {}: {e}; the file is left as it was",
            path.display()
        ))
    })?;
    write_atomic(path, &bytes)
}

/// Host tensors (name, shape, values) as safetensors bytes (f32), with optional string
/// metadata. Refuses a NaN or ±Inf, naming the tensor.
pub fn serialize_host(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    if let Some(bad) = first_non_finite(tensors.iter().map(|(n, _, d)| (n.as_str(), d.as_slice())))
    {
        return Err(Error::Io(format!("tensor {bad}")));
    }
    let mut views = Vec::with_capacity(tensors.len());
    for (name, shape, data) in tensors {
        let view = TensorView::new(Dtype::F32, shape.clone(), bytemuck::cast_slice(data))
            .map_err(|e| Error::Io(format!("tensor {name}: {e}")))?;
        views.push((name.clone(), view));
    }
    safetensors::tensor::serialize(views, metadata)
        .map_err(|e| Error::Io(format!("serializing: {e}")))
}

/// Temporaries made by this process so far: with the pid, it makes every temporary name
/// unique, so two runs (or two threads) saving to one path never write the same file.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary file beside `path`, created exclusively, removed on drop unless
/// [`TempFile::persist`] renamed it over its target.
pub struct TempFile {
    path: PathBuf,
    target: PathBuf,
    file: Option<std::fs::File>,
}

impl TempFile {
    /// Creates `<dir>/.<name>.<pid>.<n>.tmp` beside `target`. The error names the target, the
    /// folder and the cause (a missing folder, permissions, a full disk).
    pub fn create(target: &Path) -> Result<TempFile> {
        let name = target.file_name().ok_or_else(|| {
            Error::Io(format!(
                "{} is not a file name (it ends in a folder or \"..\")",
                target.display()
            ))
        })?;
        if target.is_dir() {
            return Err(Error::Io(format!(
                "{} is a folder; give a file name",
                target.display()
            )));
        }
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(Error::Io(format!(
                "cannot write {}: the folder {} does not exist",
                target.display(),
                dir.display()
            )));
        }
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.{n}.tmp", std::process::id()));
        let path = dir.join(tmp_name);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| {
                Error::Io(format!(
                    "cannot write {}: creating a temporary file in {} failed: {e}",
                    target.display(),
                    dir.display()
                ))
            })?;
        Ok(TempFile {
            path,
            target: target.to_path_buf(),
            file: Some(file),
        })
    }

    /// The temporary's own path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes all of `bytes` and syncs them to disk.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        let f = self.file.as_mut().expect("open until persisted");
        let err = |e: std::io::Error| {
            Error::Io(format!(
                "writing {} (temporary {}): {e}",
                self.target.display(),
                self.path.display()
            ))
        };
        f.write_all(bytes).map_err(err)?;
        f.sync_all().map_err(err)
    }

    /// Renames the temporary over the target (atomic on one file system).
    pub fn persist(mut self) -> Result<()> {
        drop(self.file.take());
        std::fs::rename(&self.path, &self.target).map_err(|e| {
            Error::Io(format!(
                "renaming the temporary file {} onto {}: {e}",
                self.path.display(),
                self.target.display()
            ))
        })?;
        self.path = PathBuf::new(); // nothing left to remove
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        drop(self.file.take());
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes `bytes` to `path` atomically: a unique temporary beside it, synced, then renamed.
/// On any error the temporary is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = TempFile::create(path)?;
    tmp.write_all(bytes)?;
    tmp.persist()
}

/// Fails now when `path` cannot be written (its folder is missing, read-only or full, or
/// `path` is a folder), by creating and removing the temporary a save would create.
pub fn check_writable(path: &Path) -> Result<()> {
    let mut tmp = TempFile::create(path)?;
    // One byte, synced: a full disk shows here rather than after training.
    tmp.write_all(&[0])
}

/// Reads every tensor of a safetensors file as f32. NaN or ±Inf anywhere is an error that
/// names the tensor.
pub fn read(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    Ok(read_with_metadata(path)?.0)
}

/// [`read`], plus the file's string metadata (empty when it has none).
pub fn read_with_metadata(
    path: &Path,
) -> Result<(BTreeMap<String, HostTensor>, HashMap<String, String>)> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::Io(format!("reading {}: {e}", path.display())))?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| {
        Error::Io(format!(
            "{} is not a valid safetensors file: {e}",
            path.display()
        ))
    })?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        Error::Io(format!(
            "{} is not a valid safetensors file: {e}",
            path.display()
        ))
    })?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let data = view_to_f32(&view).map_err(|d| {
            Error::Io(format!(
                "{}: tensor {name} has unsupported dtype {d}",
                path.display()
            ))
        })?;
        out.insert(
            name,
            HostTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    if let Some(bad) = first_non_finite(out.iter().map(|(k, t)| (k.as_str(), t.data.as_slice()))) {
        return Err(Error::Io(format!(
            "{}: tensor {bad}; a weights file must hold finite values",
            path.display()
        )));
    }
    Ok((out, metadata))
}

/// A safetensors view's values as f32; `Err(dtype name)` for a dtype tubelet does not read.
/// Integer buffers (BatchNorm's `num_batches_tracked`, index tables) are carried as f32.
fn view_to_f32(view: &TensorView<'_>) -> std::result::Result<Vec<f32>, String> {
    let raw = view.data();
    let le2 = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]);
    Ok(match view.dtype() {
        Dtype::F32 => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        Dtype::F64 => raw
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
            .collect(),
        Dtype::F16 => raw
            .chunks_exact(2)
            .map(|b| half::f16::from_bits(le2(b)).to_f32())
            .collect(),
        Dtype::BF16 => raw
            .chunks_exact(2)
            .map(|b| half::bf16::from_bits(le2(b)).to_f32())
            .collect(),
        Dtype::I64 => raw
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32)
            .collect(),
        Dtype::I32 => raw
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as f32)
            .collect(),
        Dtype::U8 | Dtype::BOOL => raw.iter().map(|&b| b as f32).collect(),
        other => return Err(format!("{other:?}")),
    })
}

/// Strips the known wrapper prefixes, repeatedly (`module.backbone.x` → `x`).
pub fn strip_prefix(mut key: &str) -> &str {
    while let Some(p) = KNOWN_PREFIXES.iter().find(|p| key.starts_with(*p)) {
        key = &key[p.len()..];
    }
    key
}

/// How a file's keys pair with a model's.
#[derive(Debug, Default)]
pub struct KeyMatch {
    /// Model key → file key, for every model key the file has (after stripping prefixes).
    pub matched: BTreeMap<String, String>,
    /// Model keys the file does not have.
    pub missing: Vec<String>,
    /// File keys no model key pairs with.
    pub unexpected: Vec<String>,
}

/// Pairs `file_keys` with `model_keys`: an exact key first, else equal keys after
/// [`strip_prefix`] on both sides. Two file keys that strip to one key are an error (the
/// file is ambiguous), as are two model keys that do.
pub fn match_keys<'a>(
    source: &str,
    file_keys: impl IntoIterator<Item = &'a str>,
    model_keys: impl IntoIterator<Item = &'a str>,
) -> Result<KeyMatch> {
    let file_keys: Vec<&str> = file_keys.into_iter().collect();
    let exact: std::collections::HashSet<&str> = file_keys.iter().copied().collect();
    let mut stripped: HashMap<&str, &str> = HashMap::new();
    for &k in &file_keys {
        if let Some(other) = stripped.insert(strip_prefix(k), k) {
            return Err(Error::Io(format!(
                "{source}: keys {other} and {k} both name {} once their prefixes are stripped",
                strip_prefix(k)
            )));
        }
    }
    let mut m = KeyMatch::default();
    let mut seen_model: HashMap<&str, &str> = HashMap::new();
    let mut used = std::collections::HashSet::new();
    for k in model_keys {
        if let Some(other) = seen_model.insert(strip_prefix(k), k) {
            return Err(Error::Io(format!(
                "the model's keys {other} and {k} both name {} once their prefixes are stripped",
                strip_prefix(k)
            )));
        }
        let found = if exact.contains(k) {
            Some(k)
        } else {
            stripped.get(strip_prefix(k)).copied()
        };
        match found {
            Some(f) if used.insert(f) => {
                m.matched.insert(k.to_string(), f.to_string());
            }
            _ => m.missing.push(k.to_string()),
        }
    }
    m.unexpected = file_keys
        .iter()
        .filter(|k| !used.contains(*k))
        .map(|k| k.to_string())
        .collect();
    Ok(m)
}

/// Loads `path` into `params` (name → tensor) by key (prefixes stripped on both sides, see
/// [`match_keys`]). Every parameter must be present with its exact shape and no key may be
/// left over, unless `strict` is false (then extra keys are ignored; missing and mis-shaped
/// keys are still errors). Nothing is written unless every key fits.
pub fn load_into(path: &Path, params: &[(String, Tensor)], strict: bool) -> Result<()> {
    let file = read(path)?;
    let source = path.display().to_string();
    let m = match_keys(
        &source,
        file.keys().map(String::as_str),
        params.iter().map(|(k, _)| k.as_str()),
    )?;
    let by_key: BTreeMap<&str, &HostTensor> = m
        .matched
        .iter()
        .map(|(mk, fk)| (mk.as_str(), &file[fk]))
        .collect();
    let unexpected: Vec<&str> = m.unexpected.iter().map(String::as_str).collect();
    assign_checked(&source, &by_key, &unexpected, params, strict)
}

/// Writes host tensors (model key → tensor) into `params` by key, with the same checks and the
/// same one-message error as [`load_into`]; `source` names where the tensors came from in
/// that message. Keys of `by_key` that name no parameter are the unexpected ones. Nothing is
/// written unless every key fits.
pub fn assign_by_key(
    source: &str,
    by_key: &BTreeMap<&str, &HostTensor>,
    params: &[(String, Tensor)],
    strict: bool,
) -> Result<()> {
    let known: std::collections::HashSet<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
    let unexpected: Vec<&str> = by_key
        .keys()
        .copied()
        .filter(|k| !known.contains(k))
        .collect();
    assign_checked(source, by_key, &unexpected, params, strict)
}

fn assign_checked(
    source: &str,
    by_key: &BTreeMap<&str, &HostTensor>,
    unexpected: &[&str],
    params: &[(String, Tensor)],
    strict: bool,
) -> Result<()> {
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    for (name, t) in params {
        match by_key.get(name.as_str()) {
            None => missing.push(name.clone()),
            Some(h) if h.shape != t.shape() => {
                wrong.push(format!("{name}: file {:?}, model {:?}", h.shape, t.shape()))
            }
            Some(_) => {}
        }
    }
    if !missing.is_empty() || !wrong.is_empty() || (strict && !unexpected.is_empty()) {
        let mut msg = format!("{source} does not fit the model:");
        if !missing.is_empty() {
            msg += &format!(
                "\n  missing keys ({}): {}",
                missing.len(),
                missing.join(", ")
            );
        }
        if !wrong.is_empty() {
            msg += &format!(
                "\n  wrongly shaped keys ({}): {}",
                wrong.len(),
                wrong.join("; ")
            );
        }
        if strict && !unexpected.is_empty() {
            msg += &format!(
                "\n  unexpected keys ({}): {}",
                unexpected.len(),
                unexpected.join(", ")
            );
        }
        return Err(Error::Io(msg));
    }
    for (name, t) in params {
        t.write(&by_key[name.as_str()].data)?;
    }
    Ok(())
}
