//! The training loop: epochs of a batch source, the learning rate of each iteration from the
//! schedule, forward, (label-smoothed) loss, backward, gradient clipping, the optimiser step; a
//! validation pass after each epoch; logs and plots in the run directory; the weights of the
//! last and best epochs. Events go to the caller's [`Observer`] (the CLI prints them).
//!
//! NaN guard: each step reads back one small vector — the loss, the squared gradient norm and
//! Σ p·0 over the parameters (NaN iff some parameter is not finite) — before the update. If any
//! is not finite the step is not applied, BatchNorm buffers are restored from the copy taken
//! before the forward, nothing already written is overwritten, and the run stops with
//! [`Outcome::Diverged`]. The parameters then in memory are the ones the probe just found
//! finite (or, if the probe failed, none are written), and they go to a new file
//! `diverged-last-finite.safetensors` in the run directory; `last`/`best` stay as they were.
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
use tubelet::{Error, Indices, Result, Tensor};
use tubelet_models::VideoModel;

use crate::eval::{evaluate, model_input, EvalReport};
use crate::metrics::ViewAverage;
use crate::optim::{
    clip_grads, grad_sq_norm, params_nonfinite_probe, smoothed_cross_entropy, Optimiser,
    OptimizerKind, ParamPolicy,
};
use crate::plot;
use crate::runlog::RunLog;
use crate::schedule::LrSchedule;
use crate::source::BatchSource;

/// How to train.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub epochs: usize,
    /// At most this many steps per epoch (short runs, tests); None: the whole epoch.
    pub max_steps_per_epoch: Option<usize>,
    pub schedule: LrSchedule,
    pub optimizer: OptimizerKind,
    pub weight_decay: f32,
    pub policy: ParamPolicy,
    pub label_smoothing: f32,
    pub grad_clip: Option<f32>,
    /// How validation views are combined.
    pub view_average: ViewAverage,
    /// At most this many validation batches per epoch; None: all.
    pub max_val_batches: Option<usize>,
    /// Where logs, plots and weights go; None: nothing is written.
    pub run_dir: Option<PathBuf>,
    /// The resolved configuration to store as `config.json`.
    pub config: serde_json::Value,
    /// Log a `metrics.jsonl` line (and an event) every this many steps (1 = every step).
    pub log_every: usize,
    /// Redraw the loss plot every this many steps (and at every epoch's end).
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
    /// The epoch in progress (0-based) and the batches of it already consumed.
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
    pub grad_norm: f64,
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
        let per_epoch = o.max_steps_per_epoch.map_or(full, |m| m.min(full)).max(1);
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
            let mut data_t0 = Instant::now();
            while self.pos.batch_in_epoch < per_epoch {
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
                let Some(batch) = batches.next() else { break };
                let batch = batch?;
                skipped.extend(batch.skipped.iter().cloned());
                let data_s = data_t0.elapsed().as_secs_f64();
                let step_t0 = Instant::now();
                let b = batch.labels.len();
                let lr = o.schedule.lr_at_step(self.pos.step, per_epoch as u64);
                let gpu = tubelet::Gpu::global()?;
                gpu.reset_memory_peak();

                let x = model_input(self.model, &batch)?;
                let labels = Indices::from_slice(&batch.labels)?;
                if let Some(d) = &self.dist {
                    d.sync_buffers(&self.buffers)?;
                }
                for ((_, buf), copy) in self.buffers.iter().zip(&self.backups) {
                    copy.assign(buf)?;
                }
                let logits = self.model.forward(&x, true)?; // (B, classes)
                let loss = smoothed_cross_entropy(&logits, &labels, o.label_smoothing)?;
                let grads = match &self.dist {
                    Some(d) => d.backward(&loss, &self.params, b)?, // averaged over the ranks
                    None => loss.backward()?,
                };
                let gsq = grad_sq_norm(&self.params, &grads)?; // (1)
                let probe = params_nonfinite_probe(&self.params)?; // (1)
                                                                   // One read-back a step: loss, ‖g‖², Σ p·0.
                let checks =
                    Tensor::try_cat(&[&loss.try_reshape(&[1])?, &gsq, &probe], 0)?.to_vec()?;
                let (loss_v, gsq_v, probe_v) = (checks[0] as f64, checks[1] as f64, checks[2]);
                let logits_host = logits.to_vec()?;
                let hit = logits_host
                    .chunks(classes)
                    .zip(&batch.labels)
                    .filter(|(r, &y)| {
                        let best = r
                            .iter()
                            .enumerate()
                            .fold(0, |bi, (i, &v)| if v > r[bi] { i } else { bi });
                        best == y as usize
                    })
                    .count();
                // Every rank's loss, clips and hits (the loss of the global batch).
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
                if !loss_v.is_finite() || !gsq_v.is_finite() || !probe_v.is_finite() {
                    for ((_, buf), copy) in self.buffers.iter().zip(&self.backups) {
                        buf.assign(copy)?;
                    }
                    let what = if !probe_v.is_finite() {
                        "a parameter is not finite".to_string()
                    } else if !loss_v.is_finite() {
                        format!("the loss is {loss_v}")
                    } else {
                        format!("the gradient norm is {}", gsq_v.sqrt())
                    };
                    let last_finite = match (&o.run_dir, probe_v.is_finite()) {
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
                let gnorm = gsq_v.sqrt();
                if let Some(max) = o.grad_clip {
                    clip_grads(&self.params, &grads, gnorm as f32, max)?;
                }
                self.opt.step(&grads, lr)?;
                let step_s = step_t0.elapsed().as_secs_f64();
                let memory_peak_bytes = gpu.memory_peak();
                self.pos.step += 1;
                self.pos.batch_in_epoch += 1;
                steps += 1;
                clips += b as u64;
                seen += b as u64;
                hits += hit as u64;
                loss_sum += loss_v * b as f64;
                if !first_reported {
                    let this = data_s + step_s;
                    let last_of_run = self.pos.batch_in_epoch == per_epoch && epoch + 1 == o.epochs;
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
                    batch_in_epoch: self.pos.batch_in_epoch,
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
                if o.log_every > 0
                    && (rec.step.is_multiple_of(o.log_every as u64)
                        || self.pos.batch_in_epoch == per_epoch)
                {
                    if let Some(l) = &mut log {
                        l.step(&json!({
                            "step": rec.step, "epoch": epoch, "batch": rec.batch_in_epoch, "loss": rec.loss,
                            "lr": rec.lr, "grad_norm": rec.grad_norm, "batch_top1": rec.batch_top1,
                            "data_time": rec.data_seconds, "step_time": rec.step_seconds,
                            "clips_per_s": rec.clips_per_second, "memory_peak_mib": rec.memory_peak_bytes as f64 / (1 << 20) as f64,
                        }))?;
                    }
                    obs.event(Event::Step(&rec));
                }
                if let Some(l) = &log {
                    if o.plot_every > 0 && rec.step.is_multiple_of(o.plot_every as u64) {
                        plot::loss_and_lr(&l.path("loss_lr.png"), &curve)?;
                    }
                }
                if let Some(every) = o.save_every {
                    if every > 0
                        && self.pos.step.is_multiple_of(every as u64)
                        && self.pos.batch_in_epoch < per_epoch
                    {
                        self.save(saver, SaveReason::Periodic, obs)?;
                    }
                }
                data_t0 = Instant::now();
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

fn check_options(o: &TrainOptions) -> Result<()> {
    if o.epochs == 0 {
        return Err(Error::Config("epochs must be at least 1".into()));
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
