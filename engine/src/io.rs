//! Weights on disk: safetensors, written atomically, loaded by official key names.
//!
//! - [`save`] writes `path.tmp`, syncs it, then renames it over `path`: a crash mid-write never
//!   leaves a truncated checkpoint.
//! - [`load_into`] fills a model's named parameters from a file, after stripping the prefixes
//!   official checkpoints carry (`backbone.`, `model.`, `module.`), and fails with one message
//!   listing every missing, unexpected and wrongly shaped key.
//! - f32, f64, f16 and bf16 files are read (checkpoints converted from `.pth` are often half).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Prefixes stripped from checkpoint keys, as the official loaders do.
pub const KNOWN_PREFIXES: [&str; 4] = ["module.", "model.", "backbone.", "state_dict."];

/// A tensor read from a file: shape and f32 values.
#[derive(Clone, Debug)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Writes `tensors` (name → tensor) to `path` atomically, with optional string metadata.
pub fn save(path: &Path, tensors: &[(String, Tensor)], metadata: Option<HashMap<String, String>>) -> Result<()> {
    let mut host = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        host.push((name.clone(), t.shape().to_vec(), t.to_vec()?));
    }
    save_host(path, &host, metadata)
}

/// Writes host tensors (name, shape, values) to `path` atomically.
pub fn save_host(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let io = |what: &str, e: &dyn std::fmt::Display| Error::Io(format!("{what} {}: {e}", path.display()));
    let mut views = Vec::with_capacity(tensors.len());
    for (name, shape, data) in tensors {
        let view = TensorView::new(Dtype::F32, shape.clone(), bytemuck::cast_slice(data))
            .map_err(|e| io(&format!("tensor {name} for"), &e))?;
        views.push((name.clone(), view));
    }
    let bytes = safetensors::tensor::serialize(views, metadata).map_err(|e| io("serializing", &e))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(|e| io("creating a temporary file beside", &e))?;
        f.write_all(&bytes).map_err(|e| io("writing", &e))?;
        f.sync_all().map_err(|e| io("syncing", &e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| io("renaming the temporary file onto", &e))?;
    Ok(())
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if man == 0 => sign,
        0 => {
            // subnormal: normalise
            let mut e = 127 - 15 + 1;
            let mut m = man;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((m & 0x3ff) << 13)
        }
        0x1f => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// Reads every tensor of a safetensors file as f32.
pub fn read(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io(format!("reading {}: {e}", path.display())))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::Io(format!("{} is not a valid safetensors file: {e}", path.display())))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
            Dtype::F64 => raw.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
            Dtype::F16 => raw.chunks_exact(2).map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))).collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
                .collect(),
            Dtype::I64 | Dtype::I32 | Dtype::U8 | Dtype::BOOL => {
                // Integer buffers (e.g. BatchNorm's num_batches_tracked) are carried as f32.
                match view.dtype() {
                    Dtype::I64 => raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
                    Dtype::I32 => raw.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
                    _ => raw.iter().map(|&b| b as f32).collect(),
                }
            }
            other => {
                return Err(Error::Io(format!("{}: tensor {name} has unsupported dtype {other:?}", path.display())))
            }
        };
        out.insert(name, HostTensor { shape: view.shape().to_vec(), data });
    }
    Ok(out)
}

/// Strips the first matching known prefix (repeatedly: `module.backbone.x` → `x`).
pub fn strip_prefix(mut key: &str) -> &str {
    while let Some(p) = KNOWN_PREFIXES.iter().find(|p| key.starts_with(*p)) {
        key = &key[p.len()..];
    }
    key
}

/// Loads `path` into `params` (name → tensor) by key. Every parameter must be present with its
/// exact shape and no key may be left over, unless `strict` is false (then extra keys are
/// ignored; missing and mis-shaped keys are still errors).
pub fn load_into(path: &Path, params: &[(String, Tensor)], strict: bool) -> Result<()> {
    let file = read(path)?;
    let mut by_key: BTreeMap<&str, &HostTensor> = BTreeMap::new();
    for (k, v) in &file {
        by_key.insert(strip_prefix(k), v);
    }
    assign_by_key(&path.display().to_string(), &by_key, params, strict)
}

/// Writes host tensors (key → tensor, keys already stripped) into `params` by key, with the same
/// checks and the same one-message error as [`load_into`]; `source` names where the tensors
/// came from in that message. Nothing is written unless every key fits.
pub fn assign_by_key(
    source: &str,
    by_key: &BTreeMap<&str, &HostTensor>,
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
    let known: std::collections::HashSet<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
    let unexpected: Vec<&str> = by_key.keys().copied().filter(|k| !known.contains(k)).collect();
    if !missing.is_empty() || !wrong.is_empty() || (strict && !unexpected.is_empty()) {
        let mut msg = format!("{source} does not fit the model:");
        if !missing.is_empty() {
            msg += &format!("\n  missing keys ({}): {}", missing.len(), missing.join(", "));
        }
        if !wrong.is_empty() {
            msg += &format!("\n  wrongly shaped keys ({}): {}", wrong.len(), wrong.join("; "));
        }
        if strict && !unexpected.is_empty() {
            msg += &format!("\n  unexpected keys ({}): {}", unexpected.len(), unexpected.join(", "));
        }
        return Err(Error::Io(msg));
    }
    for (name, t) in params {
        t.write(&by_key[name.as_str()].data)?;
    }
    Ok(())
}
