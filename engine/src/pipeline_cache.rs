//! wgpu's pipeline cache (`Features::PIPELINE_CACHE`: a `VkPipelineCache` on Vulkan) kept on
//! disk, so a second run does not compile its pipelines again. engine/src/gpu.rs creates every
//! pipeline with it and saves it (`Gpu::save_pipeline_cache`, called by the `tubelet` binary
//! when a command ends).
//!
//! Where: `$TUBELET_CACHE_DIR`, else `$XDG_CACHE_HOME/tubelet`, else `~/.cache/tubelet`; one
//! file per adapter, named by `wgpu::util::pipeline_cache_key`. `TUBELET_PIPELINE_CACHE=0`
//! turns it off.
//!
//! File: `TBLTPC01`, the adapter's identity (name, driver, driver info, backend) as a
//! length-prefixed string, the payload's length and FNV-1a hash (u64 LE each), then wgpu's
//! bytes. wgpu checks its own header (adapter, driver version) but reserves, and leaves
//! unchecked, the hash of the payload; the driver is handed those bytes unverified, so a
//! truncated or corrupted file must never reach it. A file that fails any check is ignored
//! with one warning and replaced at the next save: never an error. Writes are atomic
//! (engine/src/io.rs `write_atomic`), so concurrent runs leave one whole file.
//!
//! Trap: drivers keep their own caches, and on lavapipe wgpu's adds nothing. Mesa's
//! (`MESA_SHADER_CACHE_DIR`, on by default) holds llvmpipe's JIT output; lavapipe's
//! `VkPipelineCache` data is a 214-byte header with no pipelines in it (llvmpipe compiles at the
//! first dispatch, after the pipeline cache is consulted). Measured with `tubelet profile
//! --model vivit-tiny --steps 1 --json` (31 pipelines; creation + first dispatch; 2026-12, Mesa
//! 25.0.7, on a 2-core machine under a load of ~17, so absolute times are inflated):
//!
//! | Mesa cache | wgpu cache | creation | first dispatches (JIT) |
//! |---|---|---|---|
//! | cold | cold | 0.30 s | 14.5 s |
//! | warm | warm | 0.34 s | 0.80 s |
//! | warm | off  | 0.64 s | 1.05 s |
//! | off  | warm | 0.71 s | 54.6 s |
//! | off  | off  | 0.57 s | 35.0 s |
//!
//! swin-tiny (37 pipelines): both cold 22.6 s + 1987 s (33 min of JIT, the window-attention
//! kernels); both warm 14.1 s + 3.1 s; Mesa warm, wgpu off 6.8 s + 2.5 s (creation times swing
//! with the load). So the second run's saving is Mesa's; the rows with wgpu's cache warm differ from those
//! without by noise. The cache is kept because a real driver (NVIDIA, AMD, Intel Vulkan)
//! fills a `VkPipelineCache` with machine code.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Result;

const MAGIC: &[u8; 8] = b"TBLTPC01";

pub(crate) struct DiskCache {
    pub(crate) cache: wgpu::PipelineCache,
    path: PathBuf,
    identity: String,
    /// A pipeline was created since the load or the last save.
    dirty: AtomicBool,
}

/// The cache folder (see the header), or None when no home is known.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("TUBELET_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("tubelet")))
        .or_else(|| var("HOME").map(|h| h.join(".cache").join("tubelet")))
}

fn enabled() -> bool {
    !matches!(
        std::env::var("TUBELET_PIPELINE_CACHE").ok().as_deref(),
        Some("0") | Some("off") | Some("false")
    )
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn identity(info: &wgpu::AdapterInfo) -> String {
    format!(
        "{} | {} | {} | {:?}",
        info.name, info.driver, info.driver_info, info.backend
    )
}

fn wrap(identity: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + identity.len() + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(identity.len() as u32).to_le_bytes());
    out.extend_from_slice(identity.as_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&fnv1a(data).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// wgpu's bytes from a file's, or why they cannot be used.
fn unwrap<'a>(identity: &str, file: &'a [u8]) -> std::result::Result<&'a [u8], String> {
    let take = |at: usize, n: usize| file.get(at..at + n).ok_or("the file is truncated");
    if take(0, 8)? != MAGIC {
        return Err("it is not a tubelet pipeline cache (bad magic)".into());
    }
    let id_len = u32::from_le_bytes(take(8, 4)?.try_into().unwrap()) as usize;
    let id = take(12, id_len)?;
    if id != identity.as_bytes() {
        return Err(format!(
            "it was made for another adapter or driver ({:?}, this one is {identity:?})",
            String::from_utf8_lossy(id)
        ));
    }
    let at = 12 + id_len;
    let len = u64::from_le_bytes(take(at, 8)?.try_into().unwrap()) as usize;
    let hash = u64::from_le_bytes(take(at + 8, 8)?.try_into().unwrap());
    let data = file.get(at + 16..).ok_or("the file is truncated")?;
    if data.len() != len {
        return Err(format!(
            "it holds {} payload bytes, its header says {len}",
            data.len()
        ));
    }
    if fnv1a(data) != hash {
        return Err("its payload does not match its checksum (corrupted)".into());
    }
    Ok(data)
}

/// Opens the adapter's cache (None when the backend has none, it is turned off or no folder is
/// known), loading the file when it is usable.
pub(crate) fn open(
    device: &wgpu::Device,
    info: &wgpu::AdapterInfo,
    features: wgpu::Features,
) -> Option<DiskCache> {
    if !features.contains(wgpu::Features::PIPELINE_CACHE) || !enabled() {
        return None;
    }
    let path = cache_dir()?.join(wgpu::util::pipeline_cache_key(info)?);
    let identity = identity(info);
    let file = match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            eprintln!(
                "tubelet: warning: pipeline cache {} unreadable ({e}); ignored",
                path.display()
            );
            None
        }
    };
    let data = file.as_deref().and_then(|f| match unwrap(&identity, f) {
        Ok(d) => Some(d),
        Err(why) => {
            eprintln!(
                "tubelet: warning: pipeline cache {} ignored: {why}; it will be rewritten",
                path.display()
            );
            None
        }
    });
    // SAFETY: `data` is, byte for byte (checksum), what `get_data` returned for an adapter of
    // this name, driver and backend; wgpu checks its own header against the device, and with
    // `fallback` a cache the driver refuses starts empty instead of failing.
    let cache = unsafe {
        device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
            label: Some("tubelet pipeline cache"),
            data,
            fallback: true,
        })
    };
    Some(DiskCache {
        cache,
        path,
        identity,
        dirty: AtomicBool::new(false),
    })
}

impl DiskCache {
    pub(crate) fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Writes the cache when a pipeline was added since the last write; returns the path then.
    pub(crate) fn save(&self) -> Result<Option<PathBuf>> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(None);
        }
        let Some(data) = self.cache.get_data() else {
            return Ok(None);
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                crate::Error::Io(format!("pipeline cache folder {}: {e}", dir.display()))
            })?;
        }
        crate::io::write_atomic(&self.path, &wrap(&self.identity, &data))?;
        Ok(Some(self.path.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_round_trip_and_every_defect_is_refused() {
        let data = b"wgpu bytes".to_vec();
        let f = wrap("llvmpipe | x", &data);
        assert_eq!(unwrap("llvmpipe | x", &f).unwrap(), &data[..]);
        assert!(unwrap("other | y", &f)
            .unwrap_err()
            .contains("another adapter"));
        assert!(unwrap("llvmpipe | x", &f[..f.len() - 1]).is_err());
        assert!(unwrap("llvmpipe | x", &f[..5])
            .unwrap_err()
            .contains("truncated"));
        let mut bad = f.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(unwrap("llvmpipe | x", &bad)
            .unwrap_err()
            .contains("checksum"));
        bad[0] = b'X';
        assert!(unwrap("llvmpipe | x", &bad).unwrap_err().contains("magic"));
    }
}
