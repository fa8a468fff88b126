//! The parallel loader: worker threads build whole batches ahead of the training step, at most
//! `prefetch` batches ahead of the consumer (memory stays bounded), and hand them over in order.
//!
//! Determinism: the epoch's order is a function of (seed, epoch) (a seeded Fisher–Yates
//! shuffle), and every random choice inside an item comes from `item_rng(seed, epoch, index)`
//! (dataset.rs). Which worker builds a batch, and when, changes nothing. Skipped files are
//! reported (warnings, the too-many-bad check) by the consumer in batch order, so they are
//! deterministic too.
//!
//! Sharding (`rank`/`world`) follows PyTorch's `DistributedSampler(drop_last=False)`: the
//! (shuffled) order is padded by repeating its start to a multiple of `world`, and rank r takes
//! positions r, r + world, ….
//!
//! Bad data: an item whose file fails ([`DataError::is_bad_file`]) is left out of its batch
//! (which gets smaller) and listed in [`Batch::skipped`]; the first time a file fails, one
//! warning names it and the reason; a file that failed is not retried in later epochs. More bad
//! files than `max_bad_fraction` of the split stops the epoch with an error listing the first
//! few.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tubelet::Rng;

use crate::dataset::Dataset;
use crate::{DataError, Result};

/// Loader options.
#[derive(Clone, Debug, PartialEq)]
pub struct LoaderConfig {
    /// Items per batch (before views: a batch holds B·V clips).
    pub batch: usize,
    /// Worker threads; 0 = the machine's cores.
    pub workers: usize,
    /// Batches built ahead of the consumer; 0 = 2 per worker.
    pub prefetch: usize,
    pub shuffle: bool,
    /// Drop a last, incomplete batch.
    pub drop_last: bool,
    /// Seed of the order and of every random crop.
    pub seed: u64,
    /// This process's rank among `world` (distributed training); 0 of 1 otherwise.
    pub rank: usize,
    pub world: usize,
    /// Stop when more than this fraction of the split's files are bad (default 0.05).
    pub max_bad_fraction: f64,
}

impl Default for LoaderConfig {
    fn default() -> LoaderConfig {
        LoaderConfig {
            batch: 8,
            workers: 0,
            prefetch: 0,
            shuffle: true,
            drop_last: false,
            seed: 0,
            rank: 0,
            world: 1,
            max_bad_fraction: 0.05,
        }
    }
}

/// One batch of clips, host side.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// (B·V, T, H, W, 3) channels-last, normalised; the V views of item b are rows b·V..b·V + V.
    pub data: Vec<f32>,
    /// [B·V, T, H, W, 3].
    pub shape: [usize; 5],
    /// Views per item (1 in training).
    pub views: usize,
    /// One label per item (B).
    pub labels: Vec<u32>,
    /// Dataset index of each item (B).
    pub indices: Vec<usize>,
    /// Position of this batch in the epoch (what to resume from: `index + 1`).
    pub index: usize,
    /// How long the consumer waited for this batch (data time).
    pub wait: Duration,
    /// (file, reason) of the items skipped while making it (bad files).
    pub skipped: Vec<(String, String)>,
}

/// The bad files seen so far: dataset index → (file, reason), and the order they were met.
#[derive(Default)]
struct BadLog {
    files: HashMap<usize, (String, String)>,
    order: Vec<usize>,
}

/// Batches over a dataset, epoch after epoch.
pub struct Loader {
    dataset: Arc<dyn Dataset>,
    cfg: LoaderConfig,
    bad: Arc<Mutex<BadLog>>,
}

impl Loader {
    /// Checks the options (the message names the option and its value).
    pub fn new(dataset: Arc<dyn Dataset>, cfg: LoaderConfig) -> Result<Loader> {
        let bad = |m: String| Err(DataError::Config(m));
        if cfg.batch == 0 {
            return bad("loader: batch must be at least 1".into());
        }
        if cfg.world == 0 || cfg.rank >= cfg.world {
            return bad(format!(
                "loader: rank {} must be below world {} (world ≥ 1)",
                cfg.rank, cfg.world
            ));
        }
        if !(0.0..=1.0).contains(&cfg.max_bad_fraction) {
            return bad(format!(
                "loader: max_bad_fraction {} must be in [0, 1]",
                cfg.max_bad_fraction
            ));
        }
        if dataset.is_empty() {
            return bad("loader: the dataset has no items".into());
        }
        Ok(Loader {
            dataset,
            cfg,
            bad: Arc::new(Mutex::new(BadLog::default())),
        })
    }

    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// Worker threads used.
    pub fn workers(&self) -> usize {
        if self.cfg.workers > 0 {
            self.cfg.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// This rank's dataset indices for `epoch`, in order (padded like DistributedSampler).
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let n = self.dataset.len();
        let mut idx: Vec<usize> = (0..n).collect();
        if self.cfg.shuffle {
            let mut rng =
                Rng::new(Rng::new(self.cfg.seed ^ 0x5348_5546_464c_4500).next_u64() ^ epoch);
            for i in (1..n).rev() {
                idx.swap(i, rng.below(i + 1));
            }
        }
        let world = self.cfg.world;
        let total = n.div_ceil(world) * world;
        let padded: Vec<usize> = (0..total).map(|k| idx[k % n]).collect();
        padded
            .into_iter()
            .skip(self.cfg.rank)
            .step_by(world)
            .collect()
    }

    /// Batches in one epoch on this rank.
    pub fn batches_per_epoch(&self) -> usize {
        let n = self.dataset.len().div_ceil(self.cfg.world);
        if self.cfg.drop_last {
            n / self.cfg.batch
        } else {
            n.div_ceil(self.cfg.batch)
        }
    }

    /// Every bad file met so far, in the order met: (file, reason).
    pub fn bad_files(&self) -> Vec<(String, String)> {
        let log = self.bad.lock().expect("bad-file log");
        log.order.iter().map(|i| log.files[i].clone()).collect()
    }

    /// The batches of `epoch`, starting at batch `start` (0 for a whole epoch; to resume after
    /// batch k, pass k + 1). Workers start now and stop when the iterator is dropped.
    pub fn epoch(&self, epoch: u64, start: usize) -> Epoch {
        let order = self.order(epoch);
        let b = self.cfg.batch;
        let end = self.batches_per_epoch();
        let jobs: Vec<Vec<usize>> = (0..end)
            .map(|k| order[k * b..((k + 1) * b).min(order.len())].to_vec())
            .collect();
        let known_bad: Arc<HashMap<usize, (String, String)>> =
            Arc::new(self.bad.lock().expect("bad log").files.clone());
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_job: start,
                consumed: start,
                done: BTreeMap::new(),
                stop: false,
            }),
            cv: Condvar::new(),
        });
        let workers = self.workers();
        let prefetch = if self.cfg.prefetch > 0 {
            self.cfg.prefetch
        } else {
            2 * workers
        };
        let jobs = Arc::new(jobs);
        let handles = (0..workers.min(end.saturating_sub(start)).max(1))
            .map(|_| {
                let (shared, jobs, ds, known_bad) = (
                    shared.clone(),
                    jobs.clone(),
                    self.dataset.clone(),
                    known_bad.clone(),
                );
                let (seed, epoch_n) = (self.cfg.seed, epoch);
                std::thread::spawn(move || {
                    worker(
                        &shared,
                        &jobs,
                        end,
                        prefetch,
                        ds.as_ref(),
                        &known_bad,
                        seed,
                        epoch_n,
                    )
                })
            })
            .collect();
        Epoch {
            shared,
            handles,
            end,
            dataset_len: self.dataset.len(),
            max_bad: self.cfg.max_bad_fraction,
            bad: self.bad.clone(),
            carried: Vec::new(),
            failed: false,
        }
    }
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

/// A batch as a worker made it: the batch, plus (index, file, reason) of skipped items.
type Made = Result<(Batch, Vec<(usize, String, String)>)>;

struct State {
    /// Next batch a worker may take.
    next_job: usize,
    /// Next batch the consumer hands out.
    consumed: usize,
    done: BTreeMap<usize, Made>,
    stop: bool,
}

#[allow(clippy::too_many_arguments)]
fn worker(
    shared: &Shared,
    jobs: &[Vec<usize>],
    end: usize,
    prefetch: usize,
    ds: &dyn Dataset,
    known_bad: &HashMap<usize, (String, String)>,
    seed: u64,
    epoch: u64,
) {
    loop {
        let job = {
            let mut st = shared.state.lock().expect("loader state");
            while !st.stop && st.next_job < end && st.next_job >= st.consumed + prefetch {
                st = shared.cv.wait(st).expect("loader state");
            }
            if st.stop || st.next_job >= end {
                return;
            }
            st.next_job += 1;
            st.next_job - 1
        };
        // A panic inside a dataset must not leave the consumer waiting forever for this batch.
        let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            make_batch(ds, &jobs[job], job, known_bad, seed, epoch)
        }))
        .unwrap_or_else(|p| {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(DataError::Config(format!(
                "a loader worker panicked while making batch {job}: {what}"
            )))
        });
        let mut st = shared.state.lock().expect("loader state");
        st.done.insert(job, made);
        shared.cv.notify_all();
    }
}

fn make_batch(
    ds: &dyn Dataset,
    items: &[usize],
    index: usize,
    known_bad: &HashMap<usize, (String, String)>,
    seed: u64,
    epoch: u64,
) -> Made {
    let [t, h, w] = ds.clip();
    let views = ds.views();
    let mut batch = Batch {
        views,
        index,
        ..Batch::default()
    };
    batch.data.reserve(items.len() * views * t * h * w * 3);
    let mut skipped = Vec::new();
    for &i in items {
        if let Some((file, reason)) = known_bad.get(&i) {
            skipped.push((i, file.clone(), reason.clone()));
            continue;
        }
        match ds.load(i, seed, epoch) {
            Ok(clips) => {
                debug_assert_eq!(clips.len(), views);
                for c in clips {
                    debug_assert_eq!(c.len(), t * h * w * 3);
                    batch.data.extend_from_slice(&c);
                }
                batch.labels.push(ds.label(i));
                batch.indices.push(i);
            }
            Err(e) if e.is_bad_file() => {
                let file = ds.describe(i);
                skipped.push((i, file.clone(), reason(&file, &e)));
            }
            Err(e) => return Err(e),
        }
    }
    batch.shape = [batch.labels.len() * views, t, h, w, 3];
    Ok((batch, skipped))
}

/// The error message without the item's own path in front (a frame file keeps its name).
fn reason(file: &str, e: &DataError) -> String {
    let msg = e.to_string();
    match msg.strip_prefix(file) {
        Some(rest) => rest.trim_start_matches(['/', '\\', ':', ' ']).to_string(),
        None => msg,
    }
}

/// The batches of one epoch, in order; dropping it stops the workers.
pub struct Epoch {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
    end: usize,
    dataset_len: usize,
    max_bad: f64,
    bad: Arc<Mutex<BadLog>>,
    /// Skips of batches that came out empty, carried into the next batch's report.
    carried: Vec<(String, String)>,
    failed: bool,
}

impl Epoch {
    /// Batches this epoch has in all (including any before the start batch).
    pub fn len(&self) -> usize {
        self.end
    }

    pub fn is_empty(&self) -> bool {
        self.end == 0
    }

    /// Records the skips of a batch in order: one warning per new bad file, and the
    /// too-many-bad check.
    fn record(&mut self, skipped: &[(usize, String, String)]) -> Result<()> {
        let mut log = self.bad.lock().expect("bad log");
        for (i, file, reason) in skipped {
            if !log.files.contains_key(i) {
                eprintln!("warning: skipping {file}: {reason}");
                log.files.insert(*i, (file.clone(), reason.clone()));
                log.order.push(*i);
            }
        }
        let n = log.order.len();
        if n as f64 > self.max_bad * self.dataset_len as f64 {
            let first: Vec<String> = log
                .order
                .iter()
                .take(5)
                .map(|i| format!("  {}: {}", log.files[i].0, log.files[i].1))
                .collect();
            return Err(DataError::TooManyBad(format!(
                "{n} of {} files of this split are bad (more than {:.1}%); first ones:\n{}",
                self.dataset_len,
                100.0 * self.max_bad,
                first.join("\n")
            )));
        }
        Ok(())
    }

    fn stop(&mut self) {
        if let Ok(mut st) = self.shared.state.lock() {
            st.stop = true;
        }
        self.shared.cv.notify_all();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

impl Iterator for Epoch {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        let started = Instant::now();
        loop {
            if self.failed {
                return None;
            }
            let made = {
                let mut st = self.shared.state.lock().expect("loader state");
                if st.consumed >= self.end {
                    return None;
                }
                let k = st.consumed;
                while !st.done.contains_key(&k) {
                    st = self.shared.cv.wait(st).expect("loader state");
                }
                st.consumed += 1;
                self.shared.cv.notify_all();
                st.done.remove(&k).expect("present")
            };
            let result = made.and_then(|(mut batch, skipped)| {
                self.record(&skipped)?;
                self.carried
                    .extend(skipped.into_iter().map(|(_, f, r)| (f, r)));
                batch.skipped = std::mem::take(&mut self.carried);
                Ok(batch)
            });
            match result {
                Ok(batch) if batch.labels.is_empty() => {
                    // Every item was bad: report its skips with the next batch.
                    self.carried = batch.skipped;
                    continue;
                }
                Ok(mut batch) => {
                    batch.wait = started.elapsed();
                    return Some(Ok(batch));
                }
                Err(e) => {
                    self.failed = true;
                    self.stop();
                    return Some(Err(e));
                }
            }
        }
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        self.stop();
    }
}
