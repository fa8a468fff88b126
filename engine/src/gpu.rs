//! The wgpu device: adapter choice, pipeline cache, batched dispatch, buffer pool, readback.
//!
//! One process-wide [`Gpu`] (see [`Gpu::global`]). Kernels come from `shaders/` through the
//! generated registry (`kernel!(name)`), are compiled lazily and cached per override constants.
//!
//! Dispatch cost model (lavapipe, engine-notes.md): ~27 µs a dispatch inside one compute pass,
//! ~90 µs a submit, and every submit slows down once an encoder has held many passes. So all
//! dispatches go into ONE open compute pass of ONE encoder, and the batch is submitted only when a
//! result is read back, an upload needs ordering, or `MAX_BATCH` dispatches have accumulated.
//!
//! Ordering contract: wgpu inserts barriers between dispatches of a pass, so a buffer freed to the
//! pool and handed to a later dispatch is safe. `queue.write_buffer` however runs at the start of
//! the *next* submit, before already-recorded dispatches; uploads therefore flush first.
//!
//! Profiling (engine/src/profile.rs) hooks into `dispatch`, `submit_locked` and the transfers
//! behind one relaxed atomic flag: off, the path is the unprofiled one. Pipelines are created
//! with wgpu's pipeline cache, persisted by engine/src/pipeline_cache.rs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::pipeline_cache::DiskCache;
use crate::profile::{Recorder, Timing};

/// A validated WGSL kernel from `shaders/` (see the generated `registry`).
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    pub name: &'static str,
    pub source: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// `kernel!(gelu_forward)`: the kernel built from `shaders/gelu_forward.wgsl`.
/// A missing shader is a compile error.
#[macro_export]
macro_rules! kernel {
    ($name:ident) => {
        &$crate::gpu::registry::$name
    };
}

/// Dispatches recorded before a forced submit (keeps one encoder from growing without bound).
pub(crate) const MAX_BATCH: u32 = 512;
/// Size of one uniform-parameter slot; `min_uniform_buffer_offset_alignment` is ≤ 256 everywhere.
const PARAM_SLOT: u64 = 256;
/// Workgroups per grid dimension; larger 1-D launches fold into y (see `grid`).
pub const MAX_GROUPS: u32 = 65_535;

/// What tubelet asks of an adapter when it has it (never required).
const WANTED_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::TIMESTAMP_QUERY)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES)
    .union(wgpu::Features::PIPELINE_CACHE)
    .union(wgpu::Features::SHADER_FLOAT32_ATOMIC)
    .union(wgpu::Features::SHADER_INT64);

type PipelineKey = (&'static str, Vec<(&'static str, u64)>);

struct Batch {
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    dispatches: u32,
    /// The batch's uniform parameters, one `PARAM_SLOT` per dispatch, written to `Gpu::params`
    /// in one `write_buffer` at submit (it runs before the batch's dispatches either way; one
    /// call a batch instead of one a dispatch: each allocates a staging chunk in wgpu).
    params: Vec<u8>,
}

/// A compiled kernel and its bind group layout (looked up once: wgpu's
/// `get_bind_group_layout` registers a new handle every call).
pub(crate) struct Pipeline {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

/// Buffers kept for reuse, by size class (powers of two, at least 256 bytes).
#[derive(Default)]
struct Pool {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
}

pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub features: wgpu::Features,
    pub limits: wgpu::Limits,
    pipelines: Mutex<HashMap<PipelineKey, Arc<Pipeline>>>,
    batch: Mutex<Batch>,
    params: wgpu::Buffer,
    param_slots: u64,
    pool: Mutex<Pool>,
    bytes_in_use: AtomicU64,
    /// Most `bytes_in_use` since the last `reset_memory_peak` (benches' workspace figures).
    bytes_peak: AtomicU64,
    bytes_pooled: AtomicU64,
    dispatch_count: AtomicU64,
    submit_count: AtomicU64,
    /// Memory accounting only (see [`Gpu::set_accounting_only`]).
    accounting_only: AtomicBool,
    /// Profiling on (engine/src/profile.rs): the one flag the dispatch path reads.
    pub(crate) profiling: AtomicBool,
    /// Locked after `batch`, never before it.
    pub(crate) recorder: Mutex<Option<Recorder>>,
    /// wgpu's pipeline cache on disk, where the backend has one.
    disk_cache: Option<DiskCache>,
}

static GPU: OnceLock<std::result::Result<Gpu, Error>> = OnceLock::new();

/// The backends tubelet uses by default; GL is opt-in only (`TUBELET_BACKEND=gl`) because wgpu
/// falls back to it silently and it lacks f16 and subgroups.
fn backends_from_env() -> Result<wgpu::Backends> {
    match std::env::var("TUBELET_BACKEND")
        .ok()
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("") | Some("auto") => Ok(wgpu::Backends::PRIMARY),
        Some("vulkan") => Ok(wgpu::Backends::VULKAN),
        Some("metal") => Ok(wgpu::Backends::METAL),
        Some("dx12") => Ok(wgpu::Backends::DX12),
        Some("gl") => Ok(wgpu::Backends::GL),
        Some(other) => Err(Error::Config(format!(
            "TUBELET_BACKEND={other:?} is not one of auto, vulkan, metal, dx12, gl"
        ))),
    }
}

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

/// All adapters on the configured backends, best first (discrete > integrated > virtual > CPU).
pub fn list_adapters() -> Result<Vec<wgpu::AdapterInfo>> {
    let instance = wgpu::Instance::new(instance_desc(backends_from_env()?));
    let mut infos: Vec<_> = pollster::block_on(instance.enumerate_adapters(backends_from_env()?))
        .iter()
        .map(|a| a.get_info())
        .collect();
    infos.sort_by_key(|i| rank(i.device_type));
    Ok(infos)
}

fn instance_desc(backends: wgpu::Backends) -> wgpu::InstanceDescriptor {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    desc
}

impl Gpu {
    /// The process-wide device, created on first use.
    ///
    /// `TUBELET_ADAPTER` picks an adapter by index (as listed by `tubelet info`) or by a
    /// case-insensitive substring of its name; `TUBELET_BACKEND` restricts the backend.
    pub fn global() -> Result<&'static Gpu> {
        GPU.get_or_init(Gpu::new).as_ref().map_err(Clone::clone)
    }

    /// The device if it was opened (without opening it): `Some(Err)` when opening failed.
    pub fn initialised() -> Option<std::result::Result<&'static Gpu, Error>> {
        GPU.get().map(|r| r.as_ref().map_err(Clone::clone))
    }

    fn new() -> Result<Gpu> {
        let backends = backends_from_env()?;
        let instance = wgpu::Instance::new(instance_desc(backends));
        let mut adapters = pollster::block_on(instance.enumerate_adapters(backends));
        if adapters.is_empty() {
            return Err(Error::NoAdapter(format!(
                "no GPU adapter found on backends {backends:?}. Install a Vulkan, Metal or DX12 \
                 driver; on a Debian/Ubuntu machine without a GPU, `apt-get install \
                 mesa-vulkan-drivers` gives the lavapipe CPU driver"
            )));
        }
        adapters.sort_by_key(|a| rank(a.get_info().device_type));
        let adapter = match std::env::var("TUBELET_ADAPTER")
            .ok()
            .filter(|s| !s.is_empty())
        {
            None => adapters.swap_remove(0),
            Some(sel) => {
                let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
                let pos = match sel.parse::<usize>() {
                    Ok(i) if i < adapters.len() => Some(i),
                    _ => names
                        .iter()
                        .position(|n| n.to_lowercase().contains(&sel.to_lowercase())),
                };
                match pos {
                    Some(i) => adapters.swap_remove(i),
                    None => {
                        return Err(Error::NoAdapter(format!(
                            "TUBELET_ADAPTER={sel:?} matches none of the adapters {names:?}"
                        )))
                    }
                }
            }
        };
        let info = adapter.get_info();
        let features = adapter.features() & WANTED_FEATURES;
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("tubelet"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| Error::NoAdapter(format!("{} refused a device: {e}", info.name)))?;
        device.set_device_lost_callback(|reason, msg| {
            if reason != wgpu::DeviceLostReason::Destroyed {
                eprintln!("tubelet: GPU device lost ({reason:?}): {msg}");
            }
        });
        let disk_cache = crate::pipeline_cache::open(&device, &info, features);
        let param_slots =
            (limits.max_uniform_buffer_binding_size as u64 / PARAM_SLOT).clamp(1, 512);
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tubelet params"),
            size: param_slots * PARAM_SLOT,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Gpu {
            device,
            queue,
            info,
            features,
            limits,
            pipelines: Mutex::new(HashMap::new()),
            batch: Mutex::new(Batch {
                encoder: None,
                pass: None,
                dispatches: 0,
                params: Vec::new(),
            }),
            params,
            param_slots: param_slots.min(MAX_BATCH as u64),
            pool: Mutex::new(Pool::default()),
            bytes_in_use: AtomicU64::new(0),
            bytes_peak: AtomicU64::new(0),
            bytes_pooled: AtomicU64::new(0),
            dispatch_count: AtomicU64::new(0),
            submit_count: AtomicU64::new(0),
            accounting_only: AtomicBool::new(false),
            profiling: AtomicBool::new(false),
            recorder: Mutex::new(None),
            disk_cache,
        })
    }

    pub fn has_subgroups(&self) -> bool {
        self.features.contains(wgpu::Features::SUBGROUP)
    }

    // ---------------------------------------------------------------- buffers

    fn size_class(bytes: u64) -> u64 {
        bytes.max(256).next_power_of_two()
    }

    /// A storage buffer of at least `bytes`, from the pool when one of its size class is free.
    /// Fails with a clear error above `max_storage_buffer_binding_size`.
    pub(crate) fn alloc(&self, bytes: u64, what: &str) -> Result<wgpu::Buffer> {
        self.check_size(bytes, what)?;
        let limit = self.limits.max_storage_buffer_binding_size;
        let class = Self::size_class(bytes).min(limit.max(256));
        let now = self.bytes_in_use.fetch_add(class, Ordering::Relaxed) + class;
        self.bytes_peak.fetch_max(now, Ordering::Relaxed);
        if let Some(buf) = self
            .pool
            .lock()
            .unwrap()
            .free
            .get_mut(&class)
            .and_then(Vec::pop)
        {
            self.bytes_pooled.fetch_sub(class, Ordering::Relaxed);
            return Ok(buf);
        }
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: class,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }))
    }

    /// An error naming `what` when `bytes` pass `max_storage_buffer_binding_size` (every tensor is
    /// one binding), with how much smaller a batch would fit.
    pub(crate) fn check_size(&self, bytes: u64, what: &str) -> Result<()> {
        let limit = self.limits.max_storage_buffer_binding_size;
        if bytes > limit {
            // Most large tensors grow with the batch: say by how much it must shrink.
            let factor = bytes as f64 / limit as f64;
            return Err(Error::DeviceLimit(format!(
                "{what} needs {bytes} bytes ({:.1} MiB) in one buffer, {factor:.2}× this adapter's \
                 max_storage_buffer_binding_size of {limit} bytes ({:.0} MiB, {}); if it grows \
                 with the batch (its first dimension usually does), a batch at least {factor:.2}× \
                 smaller fits",
                bytes as f64 / (1 << 20) as f64,
                limit as f64 / (1 << 20) as f64,
                self.info.name
            )));
        }
        Ok(())
    }

    /// Returns a buffer to the pool (called when its last tensor is dropped).
    pub(crate) fn release(&self, buf: wgpu::Buffer) {
        let class = buf.size();
        self.bytes_in_use.fetch_sub(class, Ordering::Relaxed);
        self.bytes_pooled.fetch_add(class, Ordering::Relaxed);
        self.pool
            .lock()
            .unwrap()
            .free
            .entry(class)
            .or_default()
            .push(buf);
    }

    /// Bytes held by live tensors (rounded up to the pool's size classes).
    pub fn memory_in_use(&self) -> u64 {
        self.bytes_in_use.load(Ordering::Relaxed)
    }

    /// The most bytes live tensors held at once since the last [`Gpu::reset_memory_peak`].
    pub fn memory_peak(&self) -> u64 {
        self.bytes_peak.load(Ordering::Relaxed)
    }

    /// Restarts the peak from the bytes in use now.
    pub fn reset_memory_peak(&self) {
        self.bytes_peak
            .store(self.memory_in_use(), Ordering::Relaxed);
    }

    /// Memory accounting only: while on, buffers are allocated and released as ever (so
    /// [`Gpu::memory_peak`] is exactly that of the real run: shapes, hence allocations, never
    /// depend on values, and nothing is read back inside a training step), but no kernel is
    /// recorded, nothing is uploaded and downloads return zeros. `tubelet bench memory` measures
    /// paper-size steps this way in seconds where lavapipe would take minutes; it checks the
    /// peak against a real run at a small clip. Values computed meanwhile are garbage.
    pub fn set_accounting_only(&self, on: bool) {
        self.flush();
        self.accounting_only.store(on, Ordering::Relaxed);
    }

    fn accounting_only(&self) -> bool {
        self.accounting_only.load(Ordering::Relaxed)
    }

    /// Bytes kept in the pool for reuse.
    pub fn memory_pooled(&self) -> u64 {
        self.bytes_pooled.load(Ordering::Relaxed)
    }

    /// Frees every pooled buffer.
    pub fn trim_pool(&self) {
        let mut pool = self.pool.lock().unwrap();
        pool.free.clear();
        self.bytes_pooled.store(0, Ordering::Relaxed);
    }

    /// (dispatches, submits) since start: for benches and the dispatch-cost tests.
    pub fn counters(&self) -> (u64, u64) {
        (
            self.dispatch_count.load(Ordering::Relaxed),
            self.submit_count.load(Ordering::Relaxed),
        )
    }

    /// Writes `data` into `buf` at offset 0, ordered after every dispatch recorded so far.
    pub(crate) fn upload(&self, buf: &wgpu::Buffer, data: &[u8]) {
        if self.accounting_only() {
            return;
        }
        self.flush();
        self.note_transfer(true, data.len() as u64);
        self.queue.write_buffer(buf, 0, data);
    }

    /// Copies the first `bytes` of `buf` back to the host (submits pending work and waits).
    pub(crate) fn download(&self, buf: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        if bytes == 0 {
            return Ok(Vec::new());
        }
        if self.accounting_only() {
            return Ok(vec![0; bytes as usize]);
        }
        self.note_transfer(false, bytes);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tubelet readback"),
            size: bytes.div_ceil(4) * 4,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        {
            let mut batch = self.batch.lock().unwrap();
            batch.pass = None;
            let enc = batch.encoder.get_or_insert_with(|| {
                self.device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor::default())
            });
            enc.copy_buffer_to_buffer(buf, 0, &staging, 0, staging.size());
            self.submit_locked(&mut batch);
        }
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU failed: {e}")))?;
        rx.recv()
            .map_err(|_| Error::Gpu("readback callback never ran".into()))?
            .map_err(|e| Error::Gpu(format!("mapping a readback buffer failed: {e}")))?;
        let data = slice
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("reading a mapped buffer failed: {e:?}")))?
            [..bytes as usize]
            .to_vec();
        staging.unmap();
        Ok(data)
    }

    /// Submits every recorded dispatch (does not wait).
    pub fn flush(&self) {
        let mut batch = self.batch.lock().unwrap();
        self.submit_locked(&mut batch);
    }

    /// Submits and waits for the GPU to finish: for timing.
    pub fn sync(&self) -> Result<()> {
        self.flush();
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU failed: {e}")))
    }

    fn submit_locked(&self, batch: &mut Batch) {
        batch.pass = None; // ends the pass, unlocking the encoder
        if !batch.params.is_empty() {
            self.queue.write_buffer(&self.params, 0, &batch.params);
            batch.params.clear();
        }
        if let Some(enc) = batch.encoder.take() {
            if self.profiling.load(Ordering::Relaxed) {
                self.submit_profiled(enc);
            } else {
                self.queue.submit([enc.finish()]);
            }
            self.submit_count.fetch_add(1, Ordering::Relaxed);
        }
        batch.dispatches = 0;
    }

    // ---------------------------------------------------------------- pipelines and dispatch

    pub(crate) fn pipeline(
        &self,
        kernel: &Kernel,
        constants: &[(&'static str, f64)],
    ) -> Result<Arc<Pipeline>> {
        let key = pipeline_key(kernel, constants);
        if let Some(p) = self.pipelines.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        let t0 = Instant::now();
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(kernel.name),
            source: wgpu::ShaderSource::Wgsl(kernel.source.into()),
        };
        // NOTE: a kernel whose header says `// #bounded-loops` declares that every loop in it
        // has a trip count bounded by its parameters, so it goes without the loop guard wgpu
        // otherwise injects (a counter that makes every trip count unknown to the driver): Mesa
        // then unrolls loops bounded by override constants and keeps their arrays in registers
        // (6× on depthwise_conv3d, 1.5× on the v3 window attention backward). Bounds checks stay on.
        // Not every kernel: with the guard gone Mesa fully unrolls the FlashAttention kernels' D4
        // loops, and the attention property test (one pipeline per head dim) then ran for over 9
        // minutes of CPU instead of seconds), so a kernel opts in once that is measured.
        let module = if kernel
            .source
            .lines()
            .any(|l| l.trim() == "// #bounded-loops")
        {
            let checks = wgpu::ShaderRuntimeChecks {
                force_loop_bounding: false,
                ..wgpu::ShaderRuntimeChecks::checked()
            };
            // SAFETY: the kernel's loops terminate (its header says so, and its Dispatch note
            // bounds them); out-of-bounds accesses are still checked.
            unsafe { self.device.create_shader_module_trusted(desc, checks) }
        } else {
            self.device.create_shader_module(desc)
        };
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.name),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: self.disk_cache.as_ref().map(|c| &c.cache),
            });
        if let Some(c) = &self.disk_cache {
            c.mark_dirty();
        }
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!(
                "kernel {} with constants {constants:?} was rejected by {}: {err}",
                kernel.name, self.info.name
            )));
        }
        if log_pipelines() {
            eprintln!(
                "tubelet: pipeline {} {constants:?} created in {:.0} ms",
                kernel.name,
                t0.elapsed().as_secs_f64() * 1e3
            );
        }
        let layout = pipeline.get_bind_group_layout(0);
        let pipeline = Arc::new(Pipeline { pipeline, layout });
        self.pipelines.lock().unwrap().insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Records one dispatch of `kernel` into the open batch.
    ///
    /// Bindings follow the house order: `buffers` (inputs, then outputs) at bindings 0.., then
    /// `params` as one uniform at the next binding. `groups` comes from [`grid`] or is explicit.
    pub fn dispatch<P: bytemuck::Pod>(
        &self,
        kernel: &Kernel,
        constants: &[(&'static str, f64)],
        buffers: &[&wgpu::Buffer],
        params: &P,
        groups: [u32; 3],
    ) -> Result<()> {
        if groups
            .iter()
            .any(|&g| g > self.limits.max_compute_workgroups_per_dimension)
        {
            return Err(Error::DeviceLimit(format!(
                "kernel {} asks for {groups:?} workgroups, above max_compute_workgroups_per_dimension {}",
                kernel.name, self.limits.max_compute_workgroups_per_dimension
            )));
        }
        if groups.contains(&0) || self.accounting_only() {
            return Ok(());
        }
        let bytes = bytemuck::bytes_of(params);
        assert!(
            bytes.len() as u64 <= PARAM_SLOT,
            "{}: Params larger than one slot",
            kernel.name
        );
        if self.profiling.load(Ordering::Relaxed) {
            return self.dispatch_profiled(kernel, constants, buffers, bytes, groups);
        }
        let fresh = log_pipelines() && !self.has_pipeline(kernel, constants);
        let pipeline = self.pipeline(kernel, constants)?;
        self.record(kernel, &pipeline, buffers, bytes, groups, false);
        if fresh {
            // A driver may compile at the first dispatch, not at pipeline creation (llvmpipe
            // JITs its code then): time it alone.
            let t0 = Instant::now();
            self.sync()?;
            eprintln!(
                "tubelet: pipeline {} {constants:?}: first dispatch {groups:?} took {:.0} ms",
                kernel.name,
                t0.elapsed().as_secs_f64() * 1e3
            );
        }
        Ok(())
    }

    /// Records one dispatch into the open batch (`prof`: and into the profile, with stamps).
    pub(crate) fn record(
        &self,
        kernel: &Kernel,
        pipeline: &Pipeline,
        buffers: &[&wgpu::Buffer],
        bytes: &[u8],
        groups: [u32; 3],
        prof: bool,
    ) {
        let mut batch = self.batch.lock().unwrap();
        let queries_full =
            prof && (self.recorder.lock().unwrap().as_ref()).is_some_and(Recorder::queries_full);
        if queries_full
            || batch.dispatches >= MAX_BATCH
            || batch.params.len() as u64 / PARAM_SLOT >= self.param_slots
        {
            self.submit_locked(&mut batch);
        }
        let slot = batch.params.len() as u64 / PARAM_SLOT;
        batch.params.extend_from_slice(bytes);
        batch.params.resize(((slot + 1) * PARAM_SLOT) as usize, 0);

        let mut entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        entries.push(wgpu::BindGroupEntry {
            binding: buffers.len() as u32,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.params,
                offset: slot * PARAM_SLOT,
                size: wgpu::BufferSize::new(bytes.len().max(16).next_multiple_of(16) as u64),
            }),
        });
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.name),
            layout: &pipeline.layout,
            entries: &entries,
        });

        // Profiling: (timing, first stamp index, query set) of this dispatch.
        let stamp = if prof {
            let mut rec = self.recorder.lock().unwrap();
            rec.as_mut().map(|r| {
                let bound = buffers.iter().map(|b| b.size()).sum();
                let i = r.dispatch(kernel.name, bound, groups);
                (r.timing, i, r.queries.as_ref().map(|q| q.set.clone()))
            })
        } else {
            None
        };
        let per_pass = match &stamp {
            Some((Timing::GpuPerPass, i, Some(set))) => Some((*i, set.clone())),
            _ => None,
        };
        if per_pass.is_some() {
            batch.pass = None;
        }
        if batch.pass.is_none() {
            let enc = batch.encoder.get_or_insert_with(|| {
                self.device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor::default())
            });
            let timestamp_writes =
                per_pass
                    .as_ref()
                    .map(|(i, set)| wgpu::ComputePassTimestampWrites {
                        query_set: set,
                        beginning_of_pass_write_index: Some(*i),
                        end_of_pass_write_index: Some(*i + 1),
                    });
            let pass = enc
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: None,
                    timestamp_writes,
                })
                .forget_lifetime();
            batch.pass = Some(pass);
        }
        let in_pass = match &stamp {
            Some((Timing::GpuInPass, i, Some(set))) => Some((*i, set)),
            _ => None,
        };
        let pass = batch.pass.as_mut().unwrap();
        if let Some((i, set)) = in_pass {
            pass.write_timestamp(set, i);
        }
        pass.set_pipeline(&pipeline.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        if let Some((i, set)) = in_pass {
            pass.write_timestamp(set, i + 1);
        }
        if per_pass.is_some() {
            batch.pass = None; // the stamps close this dispatch's own pass
        }
        batch.dispatches += 1;
        self.dispatch_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes wgpu's pipeline cache to disk when pipelines were created since the last write
    /// (engine/src/pipeline_cache.rs). Returns the file written, if any.
    pub fn save_pipeline_cache(&self) -> Result<Option<std::path::PathBuf>> {
        match &self.disk_cache {
            Some(c) => c.save(),
            None => Ok(None),
        }
    }

    /// Whether pipelines go through a persisted wgpu pipeline cache.
    pub fn has_pipeline_cache(&self) -> bool {
        self.disk_cache.is_some()
    }

    pub(crate) fn has_pipeline(&self, kernel: &Kernel, constants: &[(&'static str, f64)]) -> bool {
        self.pipelines
            .lock()
            .unwrap()
            .contains_key(&pipeline_key(kernel, constants))
    }
}

/// Device-side creation and assignment: `fill` (y = value) and `copy` (y = x, broadcasting).
/// Not ops: nothing differentiates them and the tape never records them; tensors are made and
/// parameters updated with them (Tensor::full, Tensor::assign), and the broadcast of expand.rs
/// and of sum's backward is a copy. Kernels: shaders/fill_forward.wgsl, copy_forward.wgsl, and
/// binary_forward.wgsl with OP 6 (y = b read through broadcast strides).
impl Gpu {
    /// Writes `value` into the first `n` f32 of `y`.
    pub fn fill(&self, y: &wgpu::Buffer, n: usize, value: f32) -> Result<()> {
        #[repr(C)]
        #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        struct FillParams {
            n: u32,
            value: f32,
        }
        // (N) -> (N)
        let p = FillParams { n: n as u32, value };
        self.dispatch(kernel!(fill_forward), &[], &[y], &p, grid(n, 256))
    }

    /// Copies `x` (contiguous, `x_shape`) into `y` (contiguous, `y_shape`), reading `x` at `y`'s
    /// shape with broadcasting. Equal shapes take the plain copy kernel.
    pub fn copy(
        &self,
        x: &wgpu::Buffer,
        x_shape: &[usize],
        y: &wgpu::Buffer,
        y_shape: &[usize],
    ) -> Result<()> {
        #[repr(C)]
        #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        struct CopyParams {
            n: u32,
        }
        let n = crate::shape::numel(y_shape);
        if x_shape == y_shape {
            // (N) -> (N)
            let p = CopyParams { n: n as u32 };
            return self.dispatch(kernel!(copy_forward), &[], &[x, y], &p, grid(n, 256));
        }
        let out = crate::shape::broadcast_shape(x_shape, y_shape)?;
        if out.as_slice() != y_shape {
            return Err(Error::Shape(format!(
                "copy: shape {x_shape:?} does not broadcast to {y_shape:?}"
            )));
        }
        // (x broadcast) -> (y_shape); OP 6 reads only its second input.
        let p = crate::shape::broadcast_params(x_shape, x_shape, y_shape);
        self.dispatch(
            kernel!(binary_forward),
            &[("OP", 6.0), ("RANK", p.rank as f64)],
            &[x, x, y],
            &p,
            grid(n, 256),
        )
    }
}

/// A pipeline's cache key: the kernel and its override constants (bit patterns).
fn pipeline_key(kernel: &Kernel, constants: &[(&'static str, f64)]) -> PipelineKey {
    (
        kernel.name,
        constants.iter().map(|&(k, v)| (k, v.to_bits())).collect(),
    )
}

/// `TUBELET_LOG_PIPELINES=1`: say on stderr when each pipeline is created and how long its first
/// dispatch takes (the driver's compile: seconds for an unrolled kernel on llvmpipe, once per
/// kernel and override set). Slows the first use of every pipeline down to a synchronous one.
fn log_pipelines() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("TUBELET_LOG_PIPELINES").is_some_and(|v| v == "1"))
}

/// Workgroups for `n` invocations at `wg` per group, folded into a 2-D grid when the count
/// passes 65,535. Kernels recover the linear id with `linear_index` from `lib/index.wgsl`.
pub fn grid(n: usize, wg: u32) -> [u32; 3] {
    let groups = n.div_ceil(wg as usize).max(1);
    if groups <= MAX_GROUPS as usize {
        [groups as u32, 1, 1]
    } else {
        let y = groups.div_ceil(MAX_GROUPS as usize);
        [groups.div_ceil(y) as u32, y as u32, 1]
    }
}

/// Workgroups for `rows` independent rows of work (one workgroup each), folded like [`grid`].
pub fn grid_rows(rows: usize) -> [u32; 3] {
    grid(rows, 1)
}

/// The global GPU, or a panic that says how to get one (for the infallible API).
///
/// NOTE: the `try_` paths reach this only once a tensor exists, and every tensor comes from
/// [`crate::Tensor::empty`], which opens the device with `Gpu::global()?`: without an adapter
/// they return the `NoAdapter` error (what to install) at the first tensor, and cannot get here.
/// The `tubelet` binary opens the device before any subcommand that needs one.
pub fn gpu() -> &'static Gpu {
    match Gpu::global() {
        Ok(g) => g,
        Err(e) => panic!("tubelet: {e}"),
    }
}

/// For tests and tools: the GPU, `None` (after printing `SKIPPED (no adapter)`) when there is
/// none, or a panic when `TUBELET_REQUIRE_GPU=1` and the adapter is missing or on the GL fallback.
pub fn gpu_or_skip() -> Option<&'static Gpu> {
    let required = std::env::var("TUBELET_REQUIRE_GPU").is_ok_and(|v| v == "1");
    match Gpu::global() {
        Ok(g) => {
            if required && g.info.backend == wgpu::Backend::Gl {
                panic!(
                    "TUBELET_REQUIRE_GPU=1 but the adapter {} is on the GL fallback backend; \
                     install mesa-vulkan-drivers",
                    g.info.name
                );
            }
            Some(g)
        }
        Err(e) if required => panic!("TUBELET_REQUIRE_GPU=1 and {e}"),
        Err(_) => {
            eprintln!("SKIPPED (no adapter)");
            None
        }
    }
}
