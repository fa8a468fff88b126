//! The training loop: epochs of a batch source, the learning rate of each iteration from the
//! schedule, forward, (label-smoothed) loss, backward, gradient clipping, the optimiser step; a
//! validation pass after each epoch; logs and plots in the run directory; the weights of the
//! last and best epochs. Events go to the caller's [`Observer`] (the CLI prints them).
//!
//! Mixup / CutMix ([`TrainOptions::mixup`], mix.rs): each micro-batch is blended on the host
//! before its forward, and the loss is the cross-entropy against the blended, smoothed targets.
//!
//! Gradient accumulation ([`TrainOptions::accumulate`] = K): a step is one optimiser update of K
//! micro-batches (the data's batches); each micro-batch's graph is freed after its backward
//! (`Grads::accumulate`, engine/src/autograd.rs). The schedule, `max_steps_per_epoch`,
//! `save_every` and the logs count updates; [`LoopPosition::batch_in_epoch`] counts micro-batches
//! (the data position), and states are saved only between updates.
//!
//! NaN guard: each update reads back one small vector before it is applied — the loss of each
//! micro-batch and the logits (for the training top-1), plus the squared gradient norm when
//! clipping needs it or the step is logged, plus Σ p·0 over the parameters (NaN iff some
//! parameter is not finite) on logged steps. These reductions cost a dispatch chain per
//! parameter, so they are not made on every step (they were ~8% of a vivit-tiny step on
//! lavapipe). If any value read is not finite the update is not applied, BatchNorm buffers are
//! restored from the copy taken before the forward, nothing already written is overwritten, and
//! the run stops with [`Outcome::Diverged`]. The parameters then in memory (those of the last
//! applied update, which gave this loss) are probed; if finite they go to a new file
//! `diverged-last-finite.safetensors` in the run directory, else nothing is written;
//! `last`/`best` stay as they were. A non-finite parameter outside the loss's reach between
//! logged steps is caught by the next probe or save (every save probes first and refuses a
//! non-finite state).
//!
//! Stop requests (Ctrl-C / SIGTERM, set by the caller in [`TrainOptions::stop`]) are honoured
//! between steps: the state is saved through the [`StateSaver`] and the loop returns
//! [`Outcome::Interrupted`].
//!
//! The whole-state checkpoint file (optimiser moments, data position, RNG) is the checkpoint
//! module's; this loop calls [`StateSaver`] at the points where one is due and passes what it
//! knows ([`LoopPosition`]).
//!
//! Data-parallel training (dist.rs, [`Trainer::set_dist`]) hooks in at four points, each a
//! line here: the stop request is agreed on by every rank, BatchNorm buffers come from rank 0
//! before the forward, the backward averages the gradients over the ranks, and the step's loss,
//! clips and hits are summed over the ranks before the NaN guard decides (so every rank
//! decides alike).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::dist::Dist;

use serde_json::json;
use tubelet::autograd::Grads;
use tubelet::{Error, Indices, Result, Tensor};
use tubelet_models::VideoModel;

use crate::eval::{evaluate, model_input, EvalReport};
use crate::metrics::ViewAverage;
use crate::mix;
use crate::optim::{
    clip_grads, grad_sq_norm, params_nonfinite_probe, smoothed_cross_entropy, Optimiser,
    OptimizerKind, ParamPolicy,
};
use crate::plot;
use crate::recipe::Mixup;
use crate::runlog::RunLog;
use crate::schedule::LrSchedule;
use crate::source::BatchSource;

/// How to train.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub epochs: usize,
    /// At most this many steps (optimiser updates) per epoch (short runs, tests); None: the whole
    /// epoch.
    pub max_steps_per_epoch: Option<usize>,
    pub schedule: LrSchedule,
    pub optimizer: OptimizerKind,
    pub weight_decay: f32,
    pub policy: ParamPolicy,
    pub label_smoothing: f32,
    pub grad_clip: Option<f32>,
    /// Gradient accumulation: one optimiser update per this many batches of the data (≥ 1), the
    /// update of one K× larger batch (up to f32 rounding). BatchNorm statistics are per
    /// micro-batch, as in PyTorch; drop path and dropout draw their masks per micro-batch.
    pub accumulate: usize,
    /// Mixup / CutMix of each training batch (mix.rs, mmaction2's blendings); None: off.
    pub mixup: Option<Mixup>,
    /// The run's seed: each micro-batch's mixing draws from (seed, step, micro-batch).
    pub seed: u64,
    /// How validation views are combined.
    pub view_average: ViewAverage,
    /// At most this many validation batches per epoch; None: all.
    pub max_val_batches: Option<usize>,
    /// Where logs, plots and weights go; None: nothing is written.
    pub run_dir: Option<PathBuf>,
    /// The resolved configuration to store as `config.json`.
    pub config: serde_json::Value,
    /// Log a `metrics.jsonl` line (with the gradient norm and a parameter probe) every this many
    /// steps (1 = every step; 0 = never), and at each epoch's last step. Events come every step.
    pub log_every: usize,
    /// Redraw the loss plot every this many steps (0 = only at each epoch's end, where every
    /// plot is redrawn).
    pub plot_every: usize,
    /// Save the state through the saver every this many steps too (besides each epoch's end).
    pub save_every: Option<usize>,
    /// Set by the caller's signal handler: stop after the current step, saving the state.
    pub stop: Option<Arc<AtomicBool>>,
}

/// Where the loop stands, for checkpoints and resume.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LoopPosition {
    /// Optimiser steps taken.
    pub step: u64,
    /// The epoch in progress (0-based) and the batches (micro-batches) of it already consumed.
    pub epoch: usize,
    pub batch_in_epoch: usize,
    /// Best validation top-1 so far, and its epoch.
    pub best_top1: Option<f64>,
    pub best_epoch: Option<usize>,
}

/// Why the saver is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveReason {
    /// The end of an epoch; `best`: it has the best validation top-1 so far.
    Epoch { best: bool },
    /// `save_every` steps passed.
    Periodic,
    /// A stop request (Ctrl-C, SIGTERM).
    Interrupt,
    /// The end of the run.
    Final,
}

/// Writes the state at the points the loop asks for. Only called when the parameters were just
/// checked finite.
pub trait StateSaver {
    fn save(
        &mut self,
        reason: SaveReason,
        pos: &LoopPosition,
        model: &dyn VideoModel,
        opt: &mut Optimiser,
    ) -> Result<Option<PathBuf>>;
}

/// The default saver: the weights (parameters and buffers, official keys) as safetensors,
/// `last.safetensors` at every save and `best.safetensors` at the best epoch, in `dir`.
pub struct WeightsSaver {
    pub dir: PathBuf,
}

/// Parameters then buffers of `model`, by official key.
pub fn model_state(model: &dyn VideoModel) -> Vec<(String, Tensor)> {
    let mut all = model.named_params();
    all.extend(model.named_buffers());
    all
}

impl StateSaver for WeightsSaver {
    fn save(
        &mut self,
        reason: SaveReason,
        _pos: &LoopPosition,
        model: &dyn VideoModel,
        _opt: &mut Optimiser,
    ) -> Result<Option<PathBuf>> {
        let state = model_state(model);
        let last = self.dir.join("last.safetensors");
        tubelet::io::save(&last, &state, None)?;
        if reason == (SaveReason::Epoch { best: true }) {
            tubelet::io::save(&self.dir.join("best.safetensors"), &state, None)?;
        }
        Ok(Some(last))
    }
}

/// One logged step.
#[derive(Clone, Debug, PartialEq)]
pub struct StepRecord {
    pub step: u64,
    pub epoch: usize,
    pub batch_in_epoch: usize,
    pub batches_per_epoch: usize,
    pub loss: f64,
    pub lr: f64,
    /// The global gradient norm (before clipping), computed on logged steps and whenever
    /// clipping is on; None on the other steps.
    pub grad_norm: Option<f64>,
    /// Top-1 of this batch's training logits.
    pub batch_top1: f64,
    pub data_seconds: f64,
    pub step_seconds: f64,
    pub clips_per_second: f64,
    /// The most bytes of GPU tensors held at once during the step (engine accounting).
    pub memory_peak_bytes: u64,
}

/// One finished epoch.
#[derive(Clone, Debug)]
pub struct EpochRecord {
    pub epoch: usize,
    pub steps: usize,
    pub train_loss: f64,
    pub train_top1: f64,
    pub val: Option<EvalReport>,
    pub seconds: f64,
    /// (file, reason) of the training items left out this epoch because their file is bad.
    pub skipped: Vec<(String, String)>,
}

/// What the caller hears about.
pub enum Event<'a> {
    /// The first two steps are done: the first's time (pipelines compile in it) and the
    /// estimate for one epoch from the second's (the first's when the run has one step).
    /// `memory_peak_bytes`: the most bytes of GPU tensors held at once during the step.
    FirstStep {
        seconds: f64,
        epoch_estimate_seconds: f64,
        batches_per_epoch: usize,
        memory_peak_bytes: u64,
    },
    Step(&'a StepRecord),
    Epoch(&'a EpochRecord),
    Saved {
        reason: SaveReason,
        path: PathBuf,
    },
    /// Validation progress.
    Validating {
        done: usize,
        total: usize,
    },
}

pub trait Observer {
    fn event(&mut self, e: Event<'_>);
}

/// An observer that ignores everything.
pub struct Quiet;
impl Observer for Quiet {
    fn event(&mut self, _: Event<'_>) {}
}

/// How the run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Finished,
    Interrupted {
        step: u64,
    },
    /// A non-finite loss, gradient or parameter at `step`; what was found, and where the last
    /// finite parameters were written (if they were).
    Diverged {
        step: u64,
        what: String,
        last_finite: Option<PathBuf>,
    },
}

/// The result of [`train`].
#[derive(Clone, Debug)]
pub struct Summary {
    pub outcome: Outcome,
    pub position: LoopPosition,
    pub epochs: Vec<EpochRecord>,
    pub seconds: f64,
    pub clips: u64,
}

/// The loop's state: the model's tensors, the optimiser, where it stands.
pub struct Trainer<'m> {
    pub model: &'m dyn VideoModel,
    pub opt: Optimiser,
    pub pos: LoopPosition,
    params: Vec<(String, Tensor)>,
    buffers: Vec<(String, Tensor)>,
    backups: Vec<Tensor>,
    dist: Option<Arc<Dist>>,
}

impl<'m> Trainer<'m> {
    pub fn new(model: &'m dyn VideoModel, o: &TrainOptions) -> Result<Trainer<'m>> {
        let params = model.named_params();
        let buffers = model.named_buffers();
        let backups = buffers
            .iter()
            .map(|(_, t)| Tensor::try_full(t.shape(), 0.0))
            .collect::<Result<Vec<_>>>()?;
        let opt = Optimiser::new(&params, o.optimizer, o.weight_decay, &o.policy)?;
        Ok(Trainer {
            model,
            opt,
            pos: LoopPosition::default(),
            params,
            buffers,
            backups,
            dist: None,
        })
    }

    /// Trains as one rank of a data-parallel job (dist.rs): each batch is this rank's shard of
    /// the global batch.
    pub fn set_dist(&mut self, dist: Option<Arc<Dist>>) {
        self.dist = dist;
    }

    /// Whether any rank asks to stop (every rank must stop at the same step).
    fn any_rank(&self, local: bool) -> Result<bool> {
        match &self.dist {
            Some(d) => d.any("the stop check", local),
            None => Ok(local),
        }
    }

    /// Whether every parameter is finite (one read-back).
    pub fn params_finite(&self) -> Result<bool> {
        Ok(params_nonfinite_probe(&self.params)?
            .to_vec()?
            .iter()
            .all(|v| v.is_finite()))
    }

    /// Runs the epochs from [`Trainer::pos`] on.
    pub fn run(
        &mut self,
        data: &dyn BatchSource,
        val: Option<&dyn BatchSource>,
        o: &TrainOptions,
        saver: &mut dyn StateSaver,
        obs: &mut dyn Observer,
    ) -> Result<Summary> {
        check_options(o)?;
        let classes = self.model.num_classes();
        if data.num_classes() > classes {
            return Err(Error::Config(format!(
                "the training data has {} classes, the model's head {classes}: build the model with --num-classes {}",
                data.num_classes(),
                data.num_classes()
            )));
        }
        let mut log = match &o.run_dir {
            Some(d) => Some(RunLog::create(d, &o.config)?),
            None => None,
        };
        let names = val
            .and_then(|v| v.class_names())
            .or_else(|| data.class_names());
        let full = data.batches_per_epoch();
        if full == 0 {
            return Err(Error::Config("the training data gives no batches".into()));
        }
        // The data's batches are micro-batches; K of them make one optimiser update (a step:
        // the schedule, --steps, --save-every and the logs count updates).
        let k = o.accumulate;
        let micro_per_epoch = o
            .max_steps_per_epoch
            .map_or(full, |m| m.saturating_mul(k).min(full))
            .max(1);
        let per_epoch = micro_per_epoch.div_ceil(k);
        let start = Instant::now();
        let mut clips = 0u64;
        let mut records: Vec<EpochRecord> = Vec::new();
        let mut curve: Vec<(u64, f64, f64)> = Vec::new();
        let mut acc_rows: Vec<plot::AccuracyRow> = Vec::new();
        let mut first_reported = false;
        // The first step's time includes compiling every pipeline (seconds to minutes on a
        // software adapter): the epoch estimate uses the second step's, when there is one.
        let mut first_step: Option<(f64, u64)> = None;
        let stop_requested = || o.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));

        while self.pos.epoch < o.epochs {
            let epoch = self.pos.epoch;
            let epoch_start = Instant::now();
            let (mut loss_sum, mut hits, mut seen, mut steps) = (0.0f64, 0u64, 0u64, 0usize);
            let mut skipped: Vec<(String, String)> = Vec::new();
            let mut batches = data.epoch(epoch as u64, self.pos.batch_in_epoch)?;
            // One iteration is one optimiser update of up to K micro-batches. Saves and stop
            // requests happen only here, between updates: a state never holds half an update's
            // micro-batches (they would be lost on resume).
            while self.pos.batch_in_epoch < micro_per_epoch {
                if self.any_rank(stop_requested())? {
                    self.save(saver, SaveReason::Interrupt, obs)?;
                    return Ok(self.summary(
                        Outcome::Interrupted {
                            step: self.pos.step,
                        },
                        records,
                        start,
                        clips,
                    ));
                }
                let lr = o.schedule.lr_at_step(self.pos.step, per_epoch as u64);
                let gpu = tubelet::Gpu::global()?;
                gpu.reset_memory_peak();
                // Data parallel: rank 0's running buffers (BatchNorm) before the update's forwards,
                // as DDP's broadcast_buffers does; the backups are then alike on every rank.
                if let Some(d) = &self.dist {
                    d.sync_buffers(&self.buffers)?;
                }
                for ((_, buf), copy) in self.buffers.iter().zip(&self.backups) {
                    copy.assign(buf)?;
                }
                let (mut data_s, mut step_s) = (0.0f64, 0.0f64);
                let mut acc: Option<Grads> = None;
                // Per micro-batch: the loss (1), the logits (b, classes) and the labels.
                let mut micro: Vec<(Tensor, Tensor, Vec<u32>)> = Vec::with_capacity(k);
                while micro.len() < k && self.pos.batch_in_epoch + micro.len() < micro_per_epoch {
                    let data_t0 = Instant::now();
                    let Some(batch) = batches.next() else { break };
                    let mut batch = batch?;
                    data_s += data_t0.elapsed().as_secs_f64();
                    let step_t0 = Instant::now();
                    skipped.extend(batch.skipped.iter().cloned());
                    // Mixup/CutMix blend the host clips and give soft targets (b, classes),
                    // label-smoothed as mmaction2's head smooths them.
                    let targets = match &o.mixup {
                        Some(m) => {
                            let mut rng = mix::rng_for(o.seed, self.pos.step, micro.len());
                            let (t, _) = mix::blend(
                                &mut batch.data,
                                batch.shape,
                                &batch.labels,
                                classes,
                                m,
                                o.label_smoothing,
                                &mut rng,
                            )?;
                            Some(Tensor::from_slice(&t, &[batch.labels.len(), classes])?)
                        }
                        None => None,
                    };
                    let x = model_input(self.model, &batch)?;
                    let logits = self.model.forward(&x, true)?; // (b, classes)
                    let loss = match &targets {
                        Some(t) => mix::soft_cross_entropy(&logits, t)?,
                        None => {
                            let labels = Indices::from_slice(&batch.labels)?;
                            smoothed_cross_entropy(&logits, &labels, o.label_smoothing)?
                        }
                    };
                    // K = 1: the plain mean's gradient (bit for bit the loop without
                    // accumulation). K > 1: b·mean here and 1/Σb once the update's
                    // micro-batches are in, the gradient of the mean over all of them (also
                    // when the last micro-batch of an epoch is short).
                    // Data parallel (dist.rs): the backward all-reduces the gradients in buckets.
                    // K = 1: the global batch's mean. K > 1: Σ over ranks of b·mean, / world (the
                    // all-reduce's own weighting with a weight of 1 per rank), rescaled below.
                    let bl = batch.labels.len();
                    let grads = match (&self.dist, k) {
                        (None, 1) => loss.backward()?,
                        (None, _) => loss.try_mul_scalar(bl as f32)?.backward()?,
                        (Some(d), 1) => d.backward(&loss, &self.params, bl)?,
                        (Some(d), _) => {
                            d.backward(&loss.try_mul_scalar(bl as f32)?, &self.params, 1)?
                        }
                    };
                    match &mut acc {
                        None => acc = Some(grads),
                        Some(a) => a.accumulate(grads)?, // frees micro-batch i's graph
                    }
                    micro.push((
                        loss.detach().try_reshape(&[1])?,
                        logits.detach(),
                        batch.labels,
                    ));
                    step_s += step_t0.elapsed().as_secs_f64();
                }
                let Some(mut grads) = acc else { break }; // the data ended early
                let step_t0 = Instant::now();
                let b: usize = micro.iter().map(|m| m.2.len()).sum();
                if k > 1 {
                    // 1/Σb over the update's clips; data parallel: world/Σb over every rank's
                    // clips (the backward above divided the ranks' sum by world).
                    let scale = match &self.dist {
                        Some(d) => {
                            let all = d.sum("the update's clip count", vec![b as f64])?[0];
                            d.world() as f64 / all.max(1.0)
                        }
                        None => 1.0 / b.max(1) as f64,
                    };
                    grads.scale(scale as f32)?;
                }
                let n = micro.len();
                let last_of_epoch = self.pos.batch_in_epoch + n == micro_per_epoch;
                let next_step = self.pos.step + 1;
                let log_now = o.log_every > 0
                    && (next_step.is_multiple_of(o.log_every as u64) || last_of_epoch);
                // ‖g‖² costs a reduction per parameter: only when clipping needs it or this
                // step is logged. The parameter probe likewise only on logged steps (and before
                // every save, and when the run diverges).
                let gsq = match o.grad_clip.is_some() || log_now {
                    true => Some(grad_sq_norm(&self.params, &grads)?), // (1)
                    false => None,
                };
                let probe = match log_now {
                    true => Some(params_nonfinite_probe(&self.params)?), // (1)
                    false => None,
                };
                // One read-back an update, before it is applied: the micro-batches' losses (n),
                // ‖g‖² and Σ p·0 when computed, and the logits for the training top-1.
                let mut parts: Vec<&Tensor> = micro.iter().map(|m| &m.0).collect();
                parts.extend(gsq.iter().chain(&probe));
                let flat: Vec<Tensor> = micro
                    .iter()
                    .map(|m| m.1.try_reshape(&[m.1.numel()]))
                    .collect::<Result<_>>()?;
                parts.extend(&flat);
                let host = Tensor::try_cat(&parts, 0)?.to_vec()?;
                let (losses, rest) = host.split_at(n);
                let (gsq_v, rest) = match gsq {
                    Some(_) => (Some(rest[0] as f64), &rest[1..]),
                    None => (None, rest),
                };
                let (probe_v, logits_host) = match probe {
                    Some(_) => (rest[0], &rest[1..]),
                    None => (0.0, rest),
                };
                // The update's loss: the mean over its clips (each micro-batch's mean weighted by
                // its size), and its training top-1 (against the clips' own labels, also when
                // mixup/cutmix blended them).
                let mut loss_v = 0.0f64;
                let mut hit = 0usize;
                let mut at = 0;
                for (l, (_, _, labels)) in losses.iter().zip(&micro) {
                    loss_v += *l as f64 * labels.len() as f64 / b.max(1) as f64;
                    let len = labels.len() * classes;
                    hit += top1_hits(&logits_host[at..at + len], classes, labels);
                    at += len;
                }
                // Data parallel: every rank's loss, clips and hits (the global batch's), before
                // the guard decides, so that every rank decides alike.
                let (loss_v, b, hit) = match &self.dist {
                    Some(d) => {
                        let v = d.sum(
                            "the step's metrics",
                            vec![loss_v * b as f64, b as f64, hit as f64],
                        )?;
                        (v[0] / v[1].max(1.0), v[1] as usize, v[2] as usize)
                    }
                    None => (loss_v, b, hit),
                };
                let bad_loss = Some(loss_v).filter(|l| !l.is_finite());
                let bad_norm = gsq_v.filter(|g| !g.is_finite());
                if bad_loss.is_some() || bad_norm.is_some() || !probe_v.is_finite() {
                    for ((_, buf), copy) in self.buffers.iter().zip(&self.backups) {
                        buf.assign(copy)?;
                    }
                    // The parameters in memory are those of the last applied update; written
                    // only when a probe finds them finite.
                    let finite = probe_v.is_finite() && self.params_finite()?;
                    let what = if !finite {
                        "a parameter is not finite".to_string()
                    } else if let Some(l) = bad_loss {
                        format!("the loss is {l}")
                    } else {
                        format!("the gradient norm is {}", bad_norm.unwrap_or(0.0).sqrt())
                    };
                    let last_finite = match (&o.run_dir, finite) {
                        (Some(d), true) => {
                            let p = d.join("diverged-last-finite.safetensors");
                            tubelet::io::save(&p, &model_state(self.model), None)?;
                            Some(p)
                        }
                        _ => None,
                    };
                    let summary = self.summary(
                        Outcome::Diverged {
                            step: self.pos.step,
                            what,
                            last_finite,
                        },
                        records,
                        start,
                        clips,
                    );
                    return Ok(summary);
                }
                let gnorm = gsq_v.map(f64::sqrt);
                if let (Some(max), Some(norm)) = (o.grad_clip, gnorm) {
                    clip_grads(&self.params, &grads, norm as f32, max)?;
                }
                self.opt.step(&grads, lr)?;
                step_s += step_t0.elapsed().as_secs_f64();
                let memory_peak_bytes = gpu.memory_peak();
                self.pos.step += 1;
                self.pos.batch_in_epoch += n;
                let update_in_epoch = self.pos.batch_in_epoch.div_ceil(k);
                steps += 1;
                clips += b as u64;
                seen += b as u64;
                hits += hit as u64;
                loss_sum += loss_v * b as f64;
                if !first_reported {
                    let this = data_s + step_s;
                    let last_of_run =
                        self.pos.batch_in_epoch == micro_per_epoch && epoch + 1 == o.epochs;
                    match first_step {
                        None if !last_of_run => first_step = Some((this, memory_peak_bytes)),
                        _ => {
                            first_reported = true;
                            let (first, peak) = first_step.unwrap_or((this, memory_peak_bytes));
                            obs.event(Event::FirstStep {
                                seconds: first,
                                epoch_estimate_seconds: this * per_epoch as f64,
                                batches_per_epoch: per_epoch,
                                memory_peak_bytes: peak.max(memory_peak_bytes),
                            });
                        }
                    }
                }
                let rec = StepRecord {
                    step: self.pos.step,
                    epoch,
                    batch_in_epoch: update_in_epoch,
                    batches_per_epoch: per_epoch,
                    loss: loss_v,
                    lr,
                    grad_norm: gnorm,
                    batch_top1: hit as f64 / b.max(1) as f64,
                    data_seconds: data_s,
                    step_seconds: step_s,
                    clips_per_second: b as f64 / (data_s + step_s).max(1e-9),
                    memory_peak_bytes,
                };
                curve.push((rec.step, rec.loss, rec.lr));
                if log_now {
                    if let Some(l) = &mut log {
                        l.step(&json!({
                            "step": rec.step, "epoch": epoch, "batch": rec.batch_in_epoch, "loss": rec.loss,
                            "lr": rec.lr, "grad_norm": rec.grad_norm, "batch_top1": rec.batch_top1,
                            "clips": b, "micro_batches": n,
                            "data_time": rec.data_seconds, "step_time": rec.step_seconds,
                            "clips_per_s": rec.clips_per_second, "memory_peak_mib": rec.memory_peak_bytes as f64 / (1 << 20) as f64,
                        }))?;
                    }
                }
                // Every update is an event (a progress bar is cheap); the file gets a line
                // every `log_every` updates.
                obs.event(Event::Step(&rec));
                if let Some(l) = &log {
                    // The epoch's end redraws every plot anyway.
                    if o.plot_every > 0
                        && rec.step.is_multiple_of(o.plot_every as u64)
                        && !last_of_epoch
                    {
                        plot::loss_and_lr(&l.path("loss_lr.png"), &curve)?;
                    }
                }
                if let Some(every) = o.save_every {
                    if every > 0
                        && self.pos.step.is_multiple_of(every as u64)
                        && self.pos.batch_in_epoch < micro_per_epoch
                    {
                        self.save(saver, SaveReason::Periodic, obs)?;
                    }
                }
            }
            drop(batches);
            // Validation.
            let report = match val {
                Some(v) => {
                    let mut progress =
                        |done: usize, total: usize| obs.event(Event::Validating { done, total });
                    Some(evaluate(
                        self.model,
                        v,
                        o.view_average,
                        o.max_val_batches,
                        &mut progress,
                    )?)
                }
                None => None,
            };
            let rec = EpochRecord {
                epoch,
                steps,
                train_loss: loss_sum / seen.max(1) as f64,
                train_top1: hits as f64 / seen.max(1) as f64,
                val: report,
                seconds: epoch_start.elapsed().as_secs_f64(),
                skipped,
            };
            let best = match &rec.val {
                Some(r) if self.pos.best_top1.is_none_or(|b| r.top1() > b) => {
                    self.pos.best_top1 = Some(r.top1());
                    self.pos.best_epoch = Some(epoch);
                    true
                }
                _ => false,
            };
            acc_rows.push((
                epoch + 1,
                Some(rec.train_top1),
                rec.val.as_ref().map(|r| r.top1()),
                rec.val.as_ref().map(|r| r.top5()),
            ));
            if let Some(l) = &mut log {
                let v = rec.val.as_ref();
                l.epoch(&json!({
                    "epoch": epoch + 1, "steps": rec.steps, "step": self.pos.step, "train_loss": rec.train_loss,
                    "train_top1": rec.train_top1, "val_top1": v.map(|r| r.top1()), "val_top5": v.map(|r| r.top5()),
                    "val_mean_class_accuracy": v.map(|r| r.mean_class_accuracy()), "val_loss": v.and_then(|r| r.loss),
                    "val_videos": v.map(|r| r.tally.count), "val_views": v.map(|r| r.views), "seconds": rec.seconds,
                    "skipped": rec.skipped.len(),
                    "skipped_files": rec.skipped.iter().map(|(f, why)| json!({"file": f, "reason": why})).collect::<Vec<_>>(),
                }))?;
                plot::loss_and_lr(&l.path("loss_lr.png"), &curve)?;
                plot::accuracy(&l.path("accuracy.png"), &acc_rows)?;
                if let Some(r) = v {
                    plot::confusion(&l.path("confusion.png"), &r.tally, names.as_deref())?;
                    crate::runlog::write_atomic(
                        &l.path("per_class.csv"),
                        r.tally.per_class_csv(names.as_deref()).as_bytes(),
                    )?;
                }
            }
            obs.event(Event::Epoch(&rec));
            records.push(rec);
            self.pos.epoch += 1;
            self.pos.batch_in_epoch = 0;
            self.save(saver, SaveReason::Epoch { best }, obs)?;
        }
        Ok(self.summary(Outcome::Finished, records, start, clips))
    }

    /// Saves through `saver` after checking the parameters are finite (a non-finite state is
    /// never written).
    fn save(
        &mut self,
        saver: &mut dyn StateSaver,
        reason: SaveReason,
        obs: &mut dyn Observer,
    ) -> Result<Option<PathBuf>> {
        if !self.params_finite()? {
            return Err(Error::Config(format!(
                "not saving at step {} ({reason:?}): a parameter is not finite; the files written before stay as they were",
                self.pos.step
            )));
        }
        let path = saver.save(reason, &self.pos, self.model, &mut self.opt)?;
        if let Some(p) = &path {
            obs.event(Event::Saved {
                reason,
                path: p.clone(),
            });
        }
        Ok(path)
    }

    fn summary(
        &self,
        outcome: Outcome,
        epochs: Vec<EpochRecord>,
        start: Instant,
        clips: u64,
    ) -> Summary {
        Summary {
            outcome,
            position: self.pos,
            epochs,
            seconds: start.elapsed().as_secs_f64(),
            clips,
        }
    }
}

/// How many rows of `logits` (rows of `classes`) have their largest value at the label.
fn top1_hits(logits: &[f32], classes: usize, labels: &[u32]) -> usize {
    logits
        .chunks(classes)
        .zip(labels)
        .filter(|(r, &y)| {
            let best = r
                .iter()
                .enumerate()
                .fold(0, |bi, (i, &v)| if v > r[bi] { i } else { bi });
            best == y as usize
        })
        .count()
}

fn check_options(o: &TrainOptions) -> Result<()> {
    if o.epochs == 0 {
        return Err(Error::Config("epochs must be at least 1".into()));
    }
    if let Some(m) = &o.mixup {
        mix::check(m)?;
    }
    if o.accumulate == 0 {
        return Err(Error::Config(
            "accumulate must be at least 1 (batches per optimiser update)".into(),
        ));
    }
    if let Some(c) = o.grad_clip {
        if !(c > 0.0 && c.is_finite()) {
            return Err(Error::Config(format!(
                "grad clip must be a positive number, got {c}"
            )));
        }
    }
    if !(0.0..1.0).contains(&o.label_smoothing) {
        return Err(Error::Config(format!(
            "label smoothing must be in [0, 1), got {}",
            o.label_smoothing
        )));
    }
    if !(o.schedule.base_lr() > 0.0 && o.schedule.base_lr().is_finite()) {
        return Err(Error::Config(format!(
            "the learning rate must be a positive number, got {}",
            o.schedule.base_lr()
        )));
    }
    Ok(())
}
