//! Data-parallel training across processes (PyTorch DDP's scheme, on MPI): one process per GPU,
//! each with a whole copy of the model and optimiser, each training on its own shard of every
//! batch; after the backward the gradients are averaged over the ranks, so every rank takes the
//! same optimiser step and the weights stay identical.
//!
//! - Launch: `mpirun -np N tubelet train …` (or `srun`). [`init_from_env`] starts MPI when a
//!   launcher's variables say this process is one of several (and refuses, naming the variable,
//!   when this build has no MPI or MPI sees another world size: `srun` with an MPI that cannot
//!   talk to Slurm starts N independent singletons that would overwrite each other's files).
//! - Adapter: the local rank among the machine's best adapters ([`pick_adapter`]);
//!   `TUBELET_ADAPTER` (or `--adapter`) still wins.
//! - Start: the ranks compare what they were asked to do ([`Dist::check_same`]: model, config,
//!   world, version) and name every difference; rank 0's weights are broadcast
//!   ([`Dist::broadcast_tensors`]), and a resumed state's file is read by rank 0 alone and its
//!   bytes broadcast ([`Dist::broadcast_bytes`]).
//! - Batches: `--batch` is the global batch (the papers' recipes state the total), each rank
//!   takes `batch / world` of it; the sampler gives rank r positions r, r + N, … of the epoch's
//!   order, padded like `DistributedSampler` (tubelet-data's loader, source.rs's synthetic set),
//!   so at every step the ranks' batches together are exactly the single process's batch, and a
//!   checkpoint resumes under any number of ranks.
//! - Gradients ([`Dist::backward`]): as the backward walk finishes each parameter's gradient
//!   (`Tensor::backward_each`), it joins the current bucket; once `bucket_bytes` of them are
//!   waiting they are read back in one copy and cut into buckets of at most `bucket_bytes`,
//!   each all-reduced (sum) on a communication thread while the backward goes on. Each rank's
//!   mean-loss gradient is scaled by its batch size and the sum divided by the global batch (a
//!   rank that skipped bad files weighs less). The order of the buckets is the walk's, a
//!   function of the graph, so it is the same on every rank.
//!   NOTE: the overlap is partial: reading a bucket back waits for the GPU's queue up to that
//!   point (wgpu has no second stream to copy on), and the communication then runs beside the
//!   rest of the backward. A model smaller than one bucket (the tiny presets with the default
//!   25 MiB, DDP's default) has a single bucket, sent after the backward.
//! - BatchNorm: statistics are per rank (DDP's default; no SyncBatchNorm); the running buffers
//!   are broadcast from rank 0 before each forward, as DDP's `broadcast_buffers=True` does.
//! - Metrics: loss, accuracy and clips/s are summed over the ranks; only rank 0 writes files
//!   (checkpoints, logs, plots, the weights) and prints. Validation runs whole on every rank
//!   (the ranks agree on the best epoch; no faster than on one rank).
//! - Faults: every collective runs on the communication thread under a watchdog; one that waits
//!   longer than `TUBELET_DIST_TIMEOUT` seconds (default 600, PyTorch's NCCL default) prints
//!   which collective on which rank and aborts the job (`MPI_Abort`). A rank that fails calls
//!   [`Dist::abort`] with its error, which stops every rank at once. A rank killed outright is
//!   noticed by `mpirun` itself, which stops the others.
//!
//! Counterparts: the MPI calls are in mpi.rs (feature `mpi`); the loop's hook in trainer.rs
//! (`Trainer::set_dist`); the sharded sources in source.rs and tubelet-data's loader.rs.

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tubelet::{Error, Grads, Result, Tensor};

/// The collectives the trainer needs, on one communicator. Called from one thread at a time
/// (the communication thread), in the same order on every rank. MPI errors abort the job
/// (MPI's default handler), so these do not return errors.
pub trait Comm: Send + Sync {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    /// Sum over the ranks, in place.
    fn all_reduce_f32(&self, buf: &mut [f32]);
    fn all_reduce_f64(&self, buf: &mut [f64]);
    /// Rank 0's bytes to every rank (`buf` is replaced on the others).
    fn broadcast(&self, buf: &mut Vec<u8>);
    /// Every rank's bytes, by rank.
    fn all_gather(&self, bytes: &[u8]) -> Vec<Vec<u8>>;
    /// Stops every rank of the job with `code`.
    fn abort(&self, code: i32) -> !;
    /// The MPI library, for messages.
    fn library(&self) -> String;
}

/// The default bucket size: PyTorch DDP's `bucket_cap_mb` (25 MiB).
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;
/// The default watchdog timeout (PyTorch's NCCL default of 10 minutes): the ranks may legitimately
/// drift apart by a first step's pipeline compiles, so it is long.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Time spent communicating, for `tubelet bench allreduce` and the step's split.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CommStats {
    /// Seconds the training thread waited for collectives (not hidden behind computation).
    pub wait_seconds: f64,
    /// Seconds the communication thread spent inside collectives.
    pub busy_seconds: f64,
    /// Bytes all-reduced.
    pub bytes: u64,
    pub collectives: u64,
}

type Job = Box<dyn FnOnce(&dyn Comm) + Send>;

/// What the communication thread is doing, for the watchdog.
#[derive(Default)]
struct Watch {
    busy: Option<(Instant, String)>,
    stop: bool,
}

/// A running collective's result.
pub struct Pending<T> {
    rx: Receiver<T>,
    what: String,
}

/// One rank of a data-parallel job: the communicator, its thread and its watchdog.
pub struct Dist {
    comm: Arc<dyn Comm>,
    rank: usize,
    world: usize,
    jobs: Mutex<Option<Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    watch: Arc<Mutex<Watch>>,
    stats: Arc<Mutex<CommStats>>,
    bucket_bytes: Mutex<usize>,
    /// Kept alive until [`Dist::finish`] (MPI's universe: dropping it finalises MPI).
    keep: Mutex<Option<Box<dyn Send>>>,
}

impl Dist {
    /// Starts the communication thread and the watchdog over `comm`. `keep` is dropped by
    /// [`Dist::finish`] after the threads have stopped.
    pub fn new(comm: Arc<dyn Comm>, timeout: Duration, keep: Option<Box<dyn Send>>) -> Arc<Dist> {
        let (tx, rx) = channel::<Job>();
        let watch = Arc::new(Mutex::new(Watch::default()));
        let worker = {
            let comm = comm.clone();
            std::thread::Builder::new()
                .name("tubelet-comm".into())
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        job(comm.as_ref());
                    }
                })
                .expect("spawning the communication thread")
        };
        let watchdog = {
            let (comm, watch) = (comm.clone(), watch.clone());
            std::thread::Builder::new()
                .name("tubelet-watchdog".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_millis(200));
                    let w = watch.lock().expect("watch");
                    if w.stop {
                        return;
                    }
                    if let Some((since, what)) = &w.busy {
                        if since.elapsed() > timeout {
                            eprintln!(
                                "error: rank {} of {}: {what} waited {:.0} s for the other ranks \
                                 (TUBELET_DIST_TIMEOUT={}): a rank has died, hung or stopped \
                                 early; aborting the job",
                                comm.rank(),
                                comm.world(),
                                since.elapsed().as_secs_f64(),
                                timeout.as_secs()
                            );
                            comm.abort(3);
                        }
                    }
                })
                .expect("spawning the watchdog")
        };
        Arc::new(Dist {
            rank: comm.rank(),
            world: comm.world(),
            comm,
            jobs: Mutex::new(Some(tx)),
            threads: Mutex::new(vec![worker, watchdog]),
            watch,
            stats: Arc::new(Mutex::new(CommStats::default())),
            bucket_bytes: Mutex::new(DEFAULT_BUCKET_BYTES),
            keep: Mutex::new(keep),
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    /// Rank 0 writes files and prints.
    pub fn is_lead(&self) -> bool {
        self.rank == 0
    }

    pub fn library(&self) -> String {
        self.comm.library()
    }

    /// The most bytes one gradient bucket holds.
    pub fn bucket_bytes(&self) -> usize {
        *self.bucket_bytes.lock().expect("bucket size")
    }

    pub fn set_bucket_bytes(&self, bytes: usize) -> Result<()> {
        if bytes < 4 {
            return Err(Error::Config(format!(
                "the gradient bucket must hold at least one value (4 bytes), got {bytes} bytes"
            )));
        }
        *self.bucket_bytes.lock().expect("bucket size") = bytes;
        Ok(())
    }

    /// The communication time so far, and zeroes it.
    pub fn take_stats(&self) -> CommStats {
        std::mem::take(&mut *self.stats.lock().expect("stats"))
    }

    /// Queues `f` on the communication thread; `what` names it in the watchdog's message.
    pub fn start<T: Send + 'static>(
        &self,
        what: &str,
        bytes: u64,
        f: impl FnOnce(&dyn Comm) -> T + Send + 'static,
    ) -> Result<Pending<T>> {
        let (tx, rx) = channel();
        let (watch, stats, name) = (self.watch.clone(), self.stats.clone(), what.to_string());
        let job: Job = Box::new(move |c| {
            watch.lock().expect("watch").busy = Some((Instant::now(), name));
            let t0 = Instant::now();
            let out = f(c);
            watch.lock().expect("watch").busy = None;
            {
                let mut s = stats.lock().expect("stats");
                s.busy_seconds += t0.elapsed().as_secs_f64();
                s.bytes += bytes;
                s.collectives += 1;
            }
            let _ = tx.send(out);
        });
        let jobs = self.jobs.lock().expect("jobs");
        let sender = jobs.as_ref().ok_or_else(|| {
            Error::Config(format!("{what}: the communication thread has stopped"))
        })?;
        sender
            .send(job)
            .map_err(|_| Error::Config(format!("{what}: the communication thread has stopped")))?;
        Ok(Pending {
            rx,
            what: what.to_string(),
        })
    }

    /// Waits for a collective started by [`Dist::start`].
    pub fn wait<T>(&self, p: Pending<T>) -> Result<T> {
        let t0 = Instant::now();
        let out = p.rx.recv().map_err(|_| {
            Error::Config(format!(
                "rank {}: {}: the communication thread stopped",
                self.rank, p.what
            ))
        });
        self.stats.lock().expect("stats").wait_seconds += t0.elapsed().as_secs_f64();
        out
    }

    /// Runs `f` on the communication thread and waits for it.
    pub fn run<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce(&dyn Comm) -> T + Send + 'static,
    ) -> Result<T> {
        let p = self.start(what, 0, f)?;
        self.wait(p)
    }

    /// Sums `v` over the ranks.
    pub fn sum(&self, what: &str, mut v: Vec<f64>) -> Result<Vec<f64>> {
        self.run(what, move |c| {
            c.all_reduce_f64(&mut v);
            v
        })
    }

    /// Whether `flag` is set on any rank (stop requests must be agreed on, or the ranks that
    /// stop leave the others waiting).
    pub fn any(&self, what: &str, flag: bool) -> Result<bool> {
        Ok(self.sum(what, vec![f64::from(u8::from(flag))])?[0] > 0.0)
    }

    /// Rank 0's `bytes` on every rank.
    pub fn broadcast_bytes(&self, what: &str, mut bytes: Vec<u8>) -> Result<Vec<u8>> {
        self.run(what, move |c| {
            c.broadcast(&mut bytes);
            bytes
        })
    }

    /// Checks that every rank was given the same `(name, value)` fields, and names each field
    /// that differs with every rank's value.
    pub fn check_same(&self, fields: &[(&str, String)]) -> Result<()> {
        let mine = serde_json::to_vec(&fields.to_vec())
            .map_err(|e| Error::Config(format!("start-up check: {e}")))?;
        let all = self.run("the start-up check", move |c| c.all_gather(&mine))?;
        let parsed: Vec<Vec<(String, String)>> = all
            .iter()
            .map(|b| serde_json::from_slice(b).unwrap_or_default())
            .collect();
        let mut problems = Vec::new();
        for (i, (name, _)) in fields.iter().enumerate() {
            let values: Vec<Option<&String>> = parsed
                .iter()
                .map(|p| p.get(i).filter(|(n, _)| n == name).map(|(_, v)| v))
                .collect();
            if values.iter().any(|v| *v != values[0]) {
                let each: Vec<String> = values
                    .iter()
                    .enumerate()
                    .map(|(r, v)| format!("rank {r}: {}", v.map_or("(missing)", |s| s.as_str())))
                    .collect();
                problems.push(format!("{name} differs ({})", each.join(", ")));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "the {} ranks were not started alike: {}; launch every rank with the same build and \
                 command line",
                self.world,
                problems.join("; ")
            )))
        }
    }

    /// Rank 0's values of `tensors` on every rank (weights at the start), in groups of at most
    /// one bucket (a group is read back in one copy).
    pub fn broadcast_tensors(&self, what: &str, tensors: &[Tensor]) -> Result<()> {
        for group in groups(tensors.iter().map(Tensor::numel), self.bucket_bytes() / 4) {
            let ts: Vec<&Tensor> = group.iter().map(|&i| &tensors[i]).collect();
            let host = if self.is_lead() {
                read_back(&ts)?
            } else {
                Vec::new()
            };
            let bytes = self.broadcast_bytes(what, bytemuck_bytes(&host))?;
            let vals = f32s(&bytes);
            let want: usize = ts.iter().map(|t| t.numel()).sum();
            if vals.len() != want {
                return Err(Error::Config(format!(
                    "rank {}: {what}: rank 0 sent {} values for {want}: the ranks built different models",
                    self.rank,
                    vals.len()
                )));
            }
            if !self.is_lead() {
                let mut at = 0;
                for t in ts {
                    t.write(&vals[at..at + t.numel()])?;
                    at += t.numel();
                }
            }
        }
        Ok(())
    }

    /// Back-propagates `loss` (this rank's mean over `local_batch` clips) and returns the
    /// gradients averaged over every rank's clips: each parameter's gradient as if one process
    /// had the whole global batch. Buckets of at most `bucket_bytes` start their all-reduce as
    /// soon as their gradients are final (see the header for how much that overlaps).
    pub fn backward(
        &self,
        loss: &Tensor,
        params: &[(String, Tensor)],
        local_batch: usize,
    ) -> Result<Grads> {
        let by_id: HashMap<usize, usize> = params
            .iter()
            .enumerate()
            .map(|(i, (_, t))| (t.id(), i))
            .collect();
        let cap = (self.bucket_bytes() / 4).max(1);
        let scale = local_batch as f32;
        let mut b = Buckets {
            dist: self,
            cap,
            waiting: Vec::new(),
            waiting_len: 0,
            host: Vec::new(),
            pieces: Vec::new(),
            sent: Vec::new(),
            done: vec![false; params.len()],
        };
        let mut grads = loss.backward_each(&mut |t, g| {
            let Some(&i) = by_id.get(&t.id()) else {
                return Ok(());
            };
            b.add(i, g.clone())?;
            if b.waiting_len >= cap {
                b.read_waiting(scale)?;
            }
            Ok(())
        })?;
        b.read_waiting(scale)?;
        // Parameters the backward did not reach on this rank still take part (zeros), so every
        // rank sends the same buckets; the last value is this rank's batch size.
        for i in 0..params.len() {
            if !b.done[i] {
                b.push_host(Some(i), &vec![0.0; params[i].1.numel()])?;
            }
        }
        b.push_host(None, &[scale])?;
        b.flush()?;
        // Unpack: piece by piece into each parameter's host gradient.
        let mut host: Vec<Vec<f32>> = params.iter().map(|_| Vec::new()).collect();
        let mut total = 0.0f32;
        for (pieces, pending) in std::mem::take(&mut b.sent) {
            let vals = self.wait(pending)?;
            let mut at = 0;
            for (who, len) in pieces {
                match who {
                    Some(i) => host[i].extend_from_slice(&vals[at..at + len]),
                    None => total = vals[at],
                }
                at += len;
            }
        }
        if !(total > 0.0) {
            return Err(Error::Config(format!(
                "rank {}: the ranks' batches hold {total} clips in all",
                self.rank
            )));
        }
        let inv = 1.0 / total;
        for ((_, p), h) in params.iter().zip(host) {
            let local = grads.get(p).is_some();
            if !local && h.iter().all(|&v| v == 0.0) {
                continue; // no rank's backward reached it
            }
            let avg: Vec<f32> = h.iter().map(|v| v * inv).collect();
            grads.insert(p, Tensor::from_slice(&avg, p.shape())?);
        }
        Ok(grads)
    }

    /// Broadcasts rank 0's running buffers (BatchNorm) before a forward, as DDP does.
    pub fn sync_buffers(&self, buffers: &[(String, Tensor)]) -> Result<()> {
        if buffers.is_empty() || self.world == 1 {
            return Ok(());
        }
        let ts: Vec<Tensor> = buffers.iter().map(|(_, t)| t.clone()).collect();
        self.broadcast_tensors("the buffer broadcast", &ts)
    }

    /// Prints `err` as this rank's and stops every rank of the job (MPI_Abort): the others may
    /// be waiting in a collective that will never complete.
    pub fn abort(&self, err: &dyn std::fmt::Display) -> ! {
        eprintln!(
            "error: rank {} of {}: {err}\n(stopping every rank)",
            self.rank, self.world
        );
        self.comm.abort(1)
    }

    /// Stops the threads and finalises MPI (every rank must call it, after its last collective).
    pub fn finish(&self) {
        if let Ok(p) = self.start("the final barrier", 0, |c| {
            let mut v = [0.0f64];
            c.all_reduce_f64(&mut v);
        }) {
            let _ = self.wait(p);
        }
        self.jobs.lock().expect("jobs").take();
        self.watch.lock().expect("watch").stop = true;
        for h in self.threads.lock().expect("threads").drain(..) {
            let _ = h.join();
        }
        drop(self.keep.lock().expect("keep").take());
    }
}

/// What a bucket's values are, in order: (the parameter, or None for the batch size; count).
type Pieces = Vec<(Option<usize>, usize)>;

/// Gradients on their way into buckets.
struct Buckets<'a> {
    dist: &'a Dist,
    cap: usize,
    /// Final gradients not yet read back: (parameter, gradient).
    waiting: Vec<(usize, Tensor)>,
    waiting_len: usize,
    /// The bucket being filled, and what its values are: (parameter or the batch size, count).
    host: Vec<f32>,
    pieces: Pieces,
    sent: Vec<(Pieces, Pending<Vec<f32>>)>,
    done: Vec<bool>,
}

impl Buckets<'_> {
    fn add(&mut self, i: usize, g: Tensor) -> Result<()> {
        if self.done[i] {
            return Ok(());
        }
        self.done[i] = true;
        self.waiting_len += g.numel();
        self.waiting.push((i, g));
        Ok(())
    }

    /// Reads the waiting gradients back in one copy (×`scale`) and cuts them into buckets.
    fn read_waiting(&mut self, scale: f32) -> Result<()> {
        if self.waiting.is_empty() {
            return Ok(());
        }
        let waiting = std::mem::take(&mut self.waiting);
        self.waiting_len = 0;
        let ts: Vec<&Tensor> = waiting.iter().map(|(_, g)| g).collect();
        let mut vals = read_back(&ts)?;
        for v in &mut vals {
            *v *= scale;
        }
        let mut at = 0;
        for (i, g) in &waiting {
            self.push_host(Some(*i), &vals[at..at + g.numel()])?;
            at += g.numel();
        }
        Ok(())
    }

    /// Appends values to the current bucket, sending each bucket that fills.
    fn push_host(&mut self, who: Option<usize>, mut vals: &[f32]) -> Result<()> {
        while !vals.is_empty() {
            let room = self.cap - self.host.len();
            let n = room.min(vals.len());
            self.host.extend_from_slice(&vals[..n]);
            self.pieces.push((who, n));
            vals = &vals[n..];
            if self.host.len() == self.cap {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.host.is_empty() {
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.host);
        let pieces = std::mem::take(&mut self.pieces);
        let what = format!("the all-reduce of gradient bucket {}", self.sent.len() + 1);
        let bytes = 4 * buf.len() as u64;
        let p = self.dist.start(&what, bytes, move |c| {
            c.all_reduce_f32(&mut buf);
            buf
        })?;
        self.sent.push((pieces, p));
        Ok(())
    }
}

/// Consecutive groups of indices whose sizes sum to at most `cap` (a larger item alone).
fn groups(sizes: impl Iterator<Item = usize>, cap: usize) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut len = 0;
    for (i, n) in sizes.enumerate() {
        if out.is_empty() || len + n > cap {
            out.push(Vec::new());
            len = 0;
        }
        out.last_mut().expect("a group").push(i);
        len += n;
    }
    out
}

/// The values of `ts`, one after another, in one read-back.
fn read_back(ts: &[&Tensor]) -> Result<Vec<f32>> {
    let flat = ts
        .iter()
        .map(|t| t.try_reshape(&[t.numel()]))
        .collect::<Result<Vec<_>>>()?;
    match flat.len() {
        0 => Ok(Vec::new()),
        1 => flat[0].to_vec(),
        _ => Tensor::try_cat(&flat.iter().collect::<Vec<_>>(), 0)?.to_vec(),
    }
}

fn bytemuck_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

// ------------------------------------------------------------------ the process's job

static DIST: OnceLock<Option<Arc<Dist>>> = OnceLock::new();

/// This process's data-parallel job, when [`init_from_env`] started one.
pub fn current() -> Option<Arc<Dist>> {
    DIST.get().cloned().flatten()
}

/// The world size a launcher announced in the environment, and the variable that said so.
/// `srun` sets SLURM_STEP_NUM_TASKS for the tasks of a step (SLURM_PROCID says we are one).
pub fn launcher_world() -> Option<(String, usize)> {
    let vars = [
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_SIZE",
        "MV2_COMM_WORLD_SIZE",
    ];
    let slurm = std::env::var_os("SLURM_PROCID")
        .is_some()
        .then_some("SLURM_STEP_NUM_TASKS");
    vars.into_iter().chain(slurm).find_map(|v| {
        let n = std::env::var(v).ok()?.trim().parse::<usize>().ok()?;
        Some((v.to_string(), n))
    })
}

/// The local rank a launcher announced (before MPI starts, so the adapter is chosen first).
pub fn launcher_local_rank() -> Option<usize> {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "PMI_LOCAL_RANK",
        "MV2_COMM_WORLD_LOCAL_RANK",
        "SLURM_LOCALID",
    ]
    .into_iter()
    .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
}

/// Sets `TUBELET_ADAPTER` (unless the user did) to the `local_rank`-th of the machine's best
/// adapters (those of the best device type, e.g. every discrete GPU), wrapping around, so N
/// ranks on a machine with N GPUs of any vendor take one each.
pub fn pick_adapter(local_rank: usize) -> Result<()> {
    if std::env::var("TUBELET_ADAPTER").is_ok_and(|s| !s.is_empty()) {
        return Ok(());
    }
    let all = tubelet::gpu::list_adapters()?;
    let Some(best) = all.first().map(|a| a.device_type) else {
        return Ok(()); // Gpu::global will say there is none
    };
    let same = all.iter().take_while(|a| a.device_type == best).count();
    // NOTE: set before MPI (and any thread) starts: setting the environment is not thread-safe.
    std::env::set_var("TUBELET_ADAPTER", (local_rank % same).to_string());
    Ok(())
}

/// Starts the data-parallel job when a launcher says this process is one of several (or was
/// started by `mpirun` at all): picks the adapter by local rank, starts MPI, checks the world
/// size against the launcher's. Without a launcher: a single process, `None`. Call once, before
/// the GPU is opened.
pub fn init_from_env() -> Result<Option<Arc<Dist>>> {
    if let Some(d) = DIST.get() {
        return Ok(d.clone());
    }
    let d = start()?;
    let _ = DIST.set(d.clone());
    Ok(d)
}

#[cfg(feature = "mpi")]
fn timeout_from_env() -> Result<Duration> {
    match std::env::var("TUBELET_DIST_TIMEOUT") {
        Err(_) => Ok(DEFAULT_TIMEOUT),
        Ok(s) => match s.trim().parse::<f64>() {
            Ok(v) if v > 0.0 && v.is_finite() => Ok(Duration::from_secs_f64(v)),
            _ => Err(Error::Config(format!(
                "TUBELET_DIST_TIMEOUT={s:?}: give the seconds a collective may wait, e.g. 600"
            ))),
        },
    }
}

#[cfg(not(feature = "mpi"))]
fn start() -> Result<Option<Arc<Dist>>> {
    match launcher_world() {
        Some((var, n)) if n > 1 => Err(Error::Config(format!(
            "{var}={n}: this process is one of {n} launched together, but this tubelet was built \
             without MPI, so each would train alone and overwrite the others' files: build it with \
             `--features mpi` (cargo install --path tools --features mpi)"
        ))),
        _ => Ok(None),
    }
}

#[cfg(feature = "mpi")]
fn start() -> Result<Option<Arc<Dist>>> {
    let Some((var, n)) = launcher_world() else {
        return Ok(None);
    };
    let timeout = timeout_from_env()?;
    if let Some(l) = launcher_local_rank() {
        pick_adapter(l)?;
    }
    let (comm, keep) = crate::mpi::start()?;
    if comm.world() != n {
        return Err(Error::Config(format!(
            "{var}={n} but MPI ({}) sees a world of {}: the launcher and this MPI library do not \
             talk to each other (with srun, try `srun --mpi=pmix`, or launch with this MPI's \
             mpirun)",
            comm.library(),
            comm.world()
        )));
    }
    Ok(Some(Dist::new(Arc::new(comm), timeout, Some(keep))))
}

/// Stops the job's threads and finalises MPI; a no-op without a job.
pub fn finish() {
    if let Some(d) = current() {
        d.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::groups;

    #[test]
    fn groups_never_exceed_the_cap_but_for_one_large_item() {
        let g = groups([3, 3, 5, 1, 9, 2].into_iter(), 6);
        assert_eq!(g, vec![vec![0, 1], vec![2, 3], vec![4], vec![5]]);
    }
}
