//! Per-kernel profiling of the engine's dispatches: what each kernel costs, how many times it
//! runs, how many submits and host transfers a phase makes, and how long each pipeline took to
//! compile. `tubelet profile` (tools/src/profile.rs) prints it; the hooks live in the dispatch
//! path of engine/src/gpu.rs.
//!
//! Zero cost when off: the dispatch path reads one relaxed atomic flag (`Gpu::profiling`) and
//! takes the unprofiled branch; nothing is allocated, recorded or timed.
//!
//! Timing, best first (see [`Timing`]):
//! - `GpuInPass`: a timestamp before and after every dispatch inside the one open compute pass
//!   (`TIMESTAMP_QUERY_INSIDE_PASSES`; lavapipe has it). The batching is unchanged, so dispatches
//!   and submits are those of an unprofiled step; the queries are resolved and read back at each
//!   submit (that wait is the profiler's, the kernels' times are not affected by it).
//! - `GpuPerPass`: `TIMESTAMP_QUERY` only: every dispatch gets its own pass with
//!   beginning/end timestamps (more passes than an unprofiled step).
//! - `Wall`: no timestamps: each dispatch is submitted alone and waited for; its time then
//!   includes a submit and a wait (~90 µs on lavapipe), so small kernels read high.
//!
//! Trap: on lavapipe a timestamp is the host clock when the driver's queue thread reaches it,
//! and llvmpipe JITs a pipeline at its first dispatch, so the first dispatch of a pipeline holds
//! its compile. `tubelet profile` therefore profiles a warm-up step apart (its compiles) from
//! the steady steps (its kernel times).
//!
//! "Bytes bound" is the sum of the sizes of the storage buffers a dispatch binds, at the
//! buffer pool's power-of-two size classes: an upper bound on what a kernel that touches each
//! element once moves, not a measurement of its traffic.

use std::collections::HashMap;

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel, MAX_BATCH};

/// How dispatch times are taken (see the header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timing {
    GpuInPass,
    GpuPerPass,
    Wall,
}

impl Timing {
    pub fn describe(self) -> &'static str {
        match self {
            Timing::GpuInPass => "GPU timestamps around each dispatch inside the pass",
            Timing::GpuPerPass => "GPU timestamps, one compute pass per dispatch",
            Timing::Wall => "wall time per dispatch (each submitted and waited for alone)",
        }
    }
}

/// One recorded dispatch.
#[derive(Clone, Debug)]
pub struct DispatchRecord {
    pub kernel: &'static str,
    pub phase: &'static str,
    /// Sum of the bound storage buffers' sizes (see the header).
    pub bytes_bound: u64,
    pub workgroups: u64,
    /// Its time in ns (GPU or wall, per [`Profile::timing`]); NaN until resolved.
    pub ns: f64,
}

/// A pipeline created while profiling.
#[derive(Clone, Debug)]
pub struct CompileRecord {
    pub kernel: &'static str,
    pub constants: String,
    /// `create_shader_module` + `create_compute_pipeline`, host wall time.
    pub create_ms: f64,
    /// The first dispatch alone, submitted and waited for (llvmpipe JITs here).
    pub first_dispatch_ms: f64,
}

/// Submits and host↔device transfers of one phase.
#[derive(Clone, Debug, Default)]
pub struct PhaseCounters {
    pub submits: u64,
    pub uploads: u64,
    pub upload_bytes: u64,
    pub downloads: u64,
    pub download_bytes: u64,
}

/// What a profiling session recorded.
#[derive(Clone, Debug)]
pub struct Profile {
    pub timing: Timing,
    pub dispatches: Vec<DispatchRecord>,
    pub compiles: Vec<CompileRecord>,
    /// Per phase, in the order the phases were first seen.
    pub phases: Vec<(&'static str, PhaseCounters)>,
}

/// One kernel's total over a profile (see [`Profile::by_kernel`]).
#[derive(Clone, Debug)]
pub struct KernelTotal {
    pub kernel: &'static str,
    pub phase: &'static str,
    pub dispatches: u64,
    pub ms: f64,
    pub bytes_bound: u64,
}

impl Profile {
    /// Totals per (kernel, phase), slowest first.
    pub fn by_kernel(&self) -> Vec<KernelTotal> {
        let mut map: HashMap<(&str, &str), KernelTotal> = HashMap::new();
        for d in &self.dispatches {
            let t = map.entry((d.kernel, d.phase)).or_insert(KernelTotal {
                kernel: d.kernel,
                phase: d.phase,
                dispatches: 0,
                ms: 0.0,
                bytes_bound: 0,
            });
            t.dispatches += 1;
            t.ms += d.ns / 1e6;
            t.bytes_bound += d.bytes_bound;
        }
        let mut v: Vec<KernelTotal> = map.into_values().collect();
        v.sort_by(|a, b| b.ms.total_cmp(&a.ms).then(a.kernel.cmp(b.kernel)));
        v
    }

    /// Dispatch time of one phase (ms).
    pub fn phase_ms(&self, phase: &str) -> f64 {
        self.dispatches
            .iter()
            .filter(|d| d.phase == phase)
            .map(|d| d.ns / 1e6)
            .sum()
    }

    pub fn phase_dispatches(&self, phase: &str) -> u64 {
        self.dispatches.iter().filter(|d| d.phase == phase).count() as u64
    }

    pub fn counters(&self, phase: &str) -> PhaseCounters {
        self.phases
            .iter()
            .find(|(p, _)| *p == phase)
            .map(|(_, c)| c.clone())
            .unwrap_or_default()
    }
}

/// Timestamp queries: a set of `2 × capacity` stamps, resolved into `resolve` and copied to
/// `readback` at each submit.
pub(crate) struct Queries {
    pub(crate) set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    pub(crate) capacity: u32,
    period_ns: f64,
}

/// The live recorder behind `Gpu::recorder` (locked after the batch, never before it).
pub(crate) struct Recorder {
    pub(crate) timing: Timing,
    phase: &'static str,
    records: Vec<DispatchRecord>,
    compiles: Vec<CompileRecord>,
    phases: Vec<(&'static str, PhaseCounters)>,
    pub(crate) queries: Option<Queries>,
    /// Records whose timestamps are in the open batch: record index, in query-pair order.
    pending: Vec<usize>,
    /// The first failure reading stamps back (returned by [`stop`]).
    error: Option<Error>,
    /// Each thread's latest record (Wall timing sets its time after the dispatch; other threads
    /// may dispatch in between, so "the last record" could be theirs).
    latest: Vec<(std::thread::ThreadId, usize)>,
}

impl Recorder {
    pub(crate) fn new(gpu: &Gpu, timing: Timing, capacity: u32) -> Recorder {
        let queries = (timing != Timing::Wall).then(|| {
            let n = 2 * capacity as u64;
            Queries {
                set: gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("tubelet profile"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2 * capacity,
                }),
                resolve: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("tubelet profile resolve"),
                    size: n * 8,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                }),
                readback: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("tubelet profile readback"),
                    size: n * 8,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
                capacity,
                period_ns: gpu.queue.get_timestamp_period() as f64,
            }
        });
        Recorder {
            timing,
            phase: "step",
            records: Vec::new(),
            compiles: Vec::new(),
            phases: Vec::new(),
            queries,
            pending: Vec::new(),
            error: None,
            latest: Vec::new(),
        }
    }

    fn counters(&mut self) -> &mut PhaseCounters {
        let phase = self.phase;
        match self.phases.iter().position(|(p, _)| *p == phase) {
            Some(i) => &mut self.phases[i].1,
            None => {
                self.phases.push((phase, PhaseCounters::default()));
                &mut self.phases.last_mut().unwrap().1
            }
        }
    }

    /// Adds a dispatch; returns its query pair's first index when timed on the GPU.
    pub(crate) fn dispatch(&mut self, kernel: &'static str, bytes: u64, groups: [u32; 3]) -> u32 {
        let pair = self.pending.len() as u32;
        self.records.push(DispatchRecord {
            kernel,
            phase: self.phase,
            bytes_bound: bytes,
            workgroups: groups.iter().map(|&g| g as u64).product(),
            ns: f64::NAN,
        });
        self.counters(); // the phase exists even if it never submits
        let (me, at) = (std::thread::current().id(), self.records.len() - 1);
        match self.latest.iter_mut().find(|(t, _)| *t == me) {
            Some(l) => l.1 = at,
            None => self.latest.push((me, at)),
        }
        if self.queries.is_some() {
            self.pending.push(self.records.len() - 1);
        }
        2 * pair
    }

    /// Whether the query set is full (the batch must be submitted before the next dispatch).
    pub(crate) fn queries_full(&self) -> bool {
        self.queries
            .as_ref()
            .is_some_and(|q| self.pending.len() as u32 >= q.capacity)
    }

    /// Wall time of this thread's last dispatch (Wall timing).
    pub(crate) fn set_last_ns(&mut self, ns: f64) {
        let me = std::thread::current().id();
        if let Some(&(_, at)) = self.latest.iter().find(|(t, _)| *t == me) {
            self.records[at].ns = ns;
        }
    }

    pub(crate) fn compiled(&mut self, rec: CompileRecord) {
        self.compiles.push(rec);
    }

    pub(crate) fn transfer(&mut self, upload: bool, bytes: u64) {
        let c = self.counters();
        if upload {
            c.uploads += 1;
            c.upload_bytes += bytes;
        } else {
            c.downloads += 1;
            c.download_bytes += bytes;
        }
    }

    /// Before the batch's encoder is finished: resolve its stamps. Returns how many pairs.
    pub(crate) fn resolve(&mut self, enc: &mut wgpu::CommandEncoder) -> u32 {
        let n = self.pending.len() as u32;
        if let (Some(q), true) = (&self.queries, n > 0) {
            enc.resolve_query_set(&q.set, 0..2 * n, &q.resolve, 0);
            enc.copy_buffer_to_buffer(&q.resolve, 0, &q.readback, 0, 2 * n as u64 * 8);
        }
        n
    }

    /// After the submit: count it and, when stamps were resolved, wait and read them.
    pub(crate) fn submitted(&mut self, gpu: &Gpu, pairs: u32) {
        self.counters().submits += 1;
        if let Err(e) = self.read_stamps(gpu, pairs) {
            self.error.get_or_insert(e);
        }
    }

    fn read_stamps(&mut self, gpu: &Gpu, pairs: u32) -> Result<()> {
        let Some(q) = &self.queries else {
            return Ok(());
        };
        if pairs == 0 {
            return Ok(());
        }
        let slice = q.readback.slice(..2 * pairs as u64 * 8);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        gpu.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("profile: waiting for the GPU failed: {e}")))?;
        rx.recv()
            .map_err(|_| Error::Gpu("profile: readback callback never ran".into()))?
            .map_err(|e| Error::Gpu(format!("profile: mapping timestamps failed: {e}")))?;
        let stamps: Vec<u64> = {
            let data = slice
                .get_mapped_range()
                .map_err(|e| Error::Gpu(format!("profile: reading timestamps failed: {e:?}")))?;
            bytemuck::pod_collect_to_vec(&data[..])
        };
        q.readback.unmap();
        let period = q.period_ns;
        for (i, &rec) in self.pending.iter().enumerate() {
            let (a, b) = (stamps[2 * i], stamps[2 * i + 1]);
            self.records[rec].ns = b.saturating_sub(a) as f64 * period;
        }
        self.pending.clear();
        Ok(())
    }

    fn finish(self) -> Result<Profile> {
        if let Some(e) = self.error {
            return Err(e);
        }
        Ok(Profile {
            timing: self.timing,
            dispatches: self.records,
            compiles: self.compiles,
            phases: self.phases,
        })
    }
}

/// The timings this adapter supports, best first (Wall always).
pub fn available() -> Result<Vec<Timing>> {
    let f = Gpu::global()?.features;
    let mut v = Vec::new();
    if f.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES) {
        v.push(Timing::GpuInPass);
    }
    if f.contains(wgpu::Features::TIMESTAMP_QUERY) {
        v.push(Timing::GpuPerPass);
    }
    v.push(Timing::Wall);
    Ok(v)
}

/// Starts recording every dispatch (after submitting what is pending). `timing` None picks the
/// best the adapter has. Returns the timing in use.
pub fn start(timing: Option<Timing>) -> Result<Timing> {
    let gpu = Gpu::global()?;
    let f = gpu.features;
    let best = if f.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES) {
        Timing::GpuInPass
    } else if f.contains(wgpu::Features::TIMESTAMP_QUERY) {
        Timing::GpuPerPass
    } else {
        Timing::Wall
    };
    let timing = match timing {
        None => best,
        Some(Timing::Wall) => Timing::Wall,
        Some(t) if t == best || (t == Timing::GpuPerPass && best == Timing::GpuInPass) => t,
        Some(t) => {
            return Err(Error::Config(format!(
                "profile: {} is not available on {} (it has: {})",
                t.describe(),
                gpu.info.name,
                best.describe()
            )))
        }
    };
    gpu.start_profile(timing)?;
    Ok(timing)
}

/// Names the phase the following dispatches, submits and transfers belong to (no-op when off).
pub fn phase(name: &'static str) {
    if let Ok(gpu) = Gpu::global() {
        gpu.profile_phase(name);
    }
}

/// Submits and waits for everything pending, stops recording and returns the profile.
pub fn stop() -> Result<Profile> {
    let gpu = Gpu::global()?;
    gpu.stop_profile()?.finish()
}

impl Recorder {
    pub(crate) fn set_phase(&mut self, name: &'static str) {
        self.phase = name;
    }
}

/// The profiling side of the dispatch path (engine/src/gpu.rs calls these when the flag is on).
impl Gpu {
    /// `dispatch` while profiling: a new pipeline's creation and first dispatch are timed alone
    /// (after draining the queue) as its compile; with Wall timing every dispatch runs alone.
    pub(crate) fn dispatch_profiled(
        &self,
        kernel: &Kernel,
        constants: &[(&'static str, f64)],
        buffers: &[&wgpu::Buffer],
        bytes: &[u8],
        groups: [u32; 3],
    ) -> Result<()> {
        let fresh = !self.has_pipeline(kernel, constants);
        let wall =
            (self.recorder.lock().unwrap().as_ref()).is_some_and(|r| r.timing == Timing::Wall);
        if fresh || wall {
            self.sync()?;
        }
        let t0 = Instant::now();
        let pipeline = self.pipeline(kernel, constants)?;
        let create_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = Instant::now();
        self.record(kernel, &pipeline, buffers, bytes, groups, true);
        if fresh || wall {
            self.sync()?;
            let ns = t1.elapsed().as_secs_f64() * 1e9;
            let mut rec = self.recorder.lock().unwrap();
            if let Some(r) = rec.as_mut() {
                if wall {
                    r.set_last_ns(ns);
                }
                if fresh {
                    r.compiled(CompileRecord {
                        kernel: kernel.name,
                        constants: format!("{constants:?}"),
                        create_ms,
                        first_dispatch_ms: ns / 1e6,
                    });
                }
            }
        }
        Ok(())
    }

    /// Submits `enc` while profiling: resolves the batch's timestamps into it, then reads them.
    pub(crate) fn submit_profiled(&self, mut enc: wgpu::CommandEncoder) {
        let mut rec = self.recorder.lock().unwrap();
        let Some(r) = rec.as_mut() else {
            self.queue.submit([enc.finish()]);
            return;
        };
        let pairs = r.resolve(&mut enc);
        self.queue.submit([enc.finish()]);
        r.submitted(self, pairs);
    }

    pub(crate) fn note_transfer(&self, upload: bool, bytes: u64) {
        if self.profiling.load(Ordering::Relaxed) {
            if let Some(r) = self.recorder.lock().unwrap().as_mut() {
                r.transfer(upload, bytes);
            }
        }
    }

    pub(crate) fn start_profile(&self, timing: Timing) -> Result<()> {
        self.sync()?;
        *self.recorder.lock().unwrap() = Some(Recorder::new(self, timing, MAX_BATCH));
        self.profiling.store(true, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn profile_phase(&self, name: &'static str) {
        if self.profiling.load(Ordering::Relaxed) {
            if let Some(r) = self.recorder.lock().unwrap().as_mut() {
                r.set_phase(name);
            }
        }
    }

    pub(crate) fn stop_profile(&self) -> Result<Recorder> {
        self.sync()?; // resolves the last batch's stamps
        self.profiling.store(false, Ordering::Relaxed);
        self.recorder
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| Error::Config("profile: stop without start".into()))
    }
}
