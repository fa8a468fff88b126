//! `tubelet train`: trains any preset of the model registry with its paper's recipe
//! (tubelet-train's `recipe`), every field of which a flag overrides. Tiny presets train on the
//! embedded synthetic moving-shapes set by default; with no arguments this is the run it always
//! was: vivit-tiny, 400 steps × 32 clips, the same clips for the same seed, the held-out accuracy
//! line, the weights written atomically under their official key names.
//!
//! The loop lives in tubelet-train (`trainer`); this file parses, builds, and prints its events.
//! A run directory (`runs/<model>-<timestamp>/`, `--run-dir`) gets the config, the metrics, the
//! plots and the last/best weights. The first step is timed and the time of an epoch estimated
//! before going on (a paper-size model on a software adapter takes minutes a step).
//! Ctrl-C / SIGTERM stop after the current step and save; a non-finite loss, gradient or
//! parameter stops before the update and overwrites nothing (see trainer.rs).
//!
//! Under `mpirun -np N` (feature `mpi`, tubelet-train's dist.rs) every rank runs this: `--batch`
//! is the global batch, each rank trains on `batch / N` clips of it (its shard of the data),
//! rank 0's starting weights (or the state it resumes) go to every rank, and rank 0 alone prints
//! and writes files.

use std::io::Stdout;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tubelet::{Error, Result};
use tubelet_data::spec::Mode;
use tubelet_data::synthetic::{Split, NUM_CLASSES};
use tubelet_data::LoaderConfig;
use tubelet_models::BuildOptions;
use tubelet_train::data::{pipeline_for, LoaderSource, Views};
use tubelet_train::metrics::ViewAverage;
use tubelet_train::optim::OptimizerKind;
use tubelet_train::recipe::{self, Recipe};
use tubelet_train::resume::StateFileSaver;
use tubelet_train::runlog::default_run_dir;
use tubelet_train::schedule::{LrSchedule, Warmup};
use tubelet_train::source::{BatchSource, Shard, Synthetic};
use tubelet_train::trainer::{
    model_state, Event, LoopPosition, Observer, Outcome, Quiet, SaveReason, StateSaver,
    TrainOptions, Trainer,
};

use crate::outln;
use crate::output::Output;

#[derive(clap::Parser, Debug)]
#[command(name = "train")]
pub struct Args {
    /// Model to train (see `tubelet models`; its recipe: `tubelet models --recipe NAME`).
    #[arg(long, default_value = "vivit-tiny")]
    pub model: String,
    /// Training annotation list (mmaction2 format) or folder; default: the synthetic set (tiny
    /// presets only).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Validation list, evaluated after each epoch (top-1, top-5, mean class accuracy).
    #[arg(long)]
    pub val: Option<PathBuf>,
    /// Folder the lists' paths are relative to.
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// Classes of the model's head; default: the data's (the synthetic set: 8).
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Clip size T,H,W to build the model at; default: the preset's.
    #[arg(long, value_parser = parse_clip)]
    pub clip: Option<[usize; 3]>,
    /// Epochs; default: the recipe's (the synthetic recipe: 1 epoch of --steps steps).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub epochs: Option<u32>,
    /// Synthetic set: optimiser steps per epoch. Other data: at most this many steps per epoch.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub steps: Option<u32>,
    /// Clips per forward pass (per micro-batch with --accumulate); default: the recipe's batch.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub batch: Option<u32>,
    /// Gradient accumulation: each optimiser step sums the gradients of K forward/backward passes
    /// of --batch clips, the update of one K×batch batch in 1/K of the activation memory. Steps
    /// (--steps, --save-every, the schedule, the logs) count updates. Models with BatchNorm (TSM)
    /// normalise each micro-batch with its own statistics, as PyTorch does, so their update is
    /// close to, not equal to, the large batch's.
    #[arg(long, default_value_t = 1, value_name = "K",
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub accumulate: u32,
    /// Base (peak) learning rate; default: the recipe's.
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Weight decay (the recipe's parameter-wise exclusions still apply).
    #[arg(long, allow_negative_numbers = true)]
    pub weight_decay: Option<f64>,
    /// Synthetic schedule: linear warm-up steps (default 40).
    #[arg(long)]
    pub warmup: Option<u32>,
    /// Paper schedules: warm-up epochs.
    #[arg(long)]
    pub warmup_epochs: Option<f64>,
    /// adamw or sgd; default: the recipe's.
    #[arg(long)]
    pub optimizer: Option<String>,
    /// SGD momentum (default 0.9 when switching to SGD).
    #[arg(long, allow_negative_numbers = true)]
    pub momentum: Option<f32>,
    /// SGD: Nesterov momentum (true/false).
    #[arg(long)]
    pub nesterov: Option<bool>,
    #[arg(long, allow_negative_numbers = true)]
    pub label_smoothing: Option<f32>,
    /// Max global gradient L2 norm; 0 turns clipping off.
    #[arg(long, allow_negative_numbers = true)]
    pub grad_clip: Option<f32>,
    /// Mixup alpha: blend each batch with a permutation of itself, λ ~ Beta(A, A), targets
    /// mixed alike (mmaction2's MixupBlending); 0 turns it off. Default: the recipe's (MViT,
    /// UniFormer: 0.8).
    #[arg(long, allow_negative_numbers = true, value_name = "A")]
    pub mixup: Option<f32>,
    /// CutMix alpha: paste one box (the same over every frame) from a permutation of the batch,
    /// λ ~ Beta(A, A) the kept area (mmaction2's CutmixBlending); 0 turns it off. With both,
    /// each batch uses one, CutMix with the recipe's switch probability (½). Default: the
    /// recipe's (MViT, UniFormer: 1.0).
    #[arg(long, allow_negative_numbers = true, value_name = "A")]
    pub cutmix: Option<f32>,
    /// Stochastic depth rate of the backbone.
    #[arg(long, allow_negative_numbers = true)]
    pub drop_path: Option<f32>,
    /// Seed for the weights and the dataset.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Held-out synthetic clips evaluated after each epoch.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub eval_clips: u32,
    /// Start from these weights (safetensors, or an official .pth/.pyth file; prefixes such as
    /// `module.` or `backbone.` are matched): tensors whose shapes fit are loaded, a head of
    /// another class count is re-initialised. Weights only; to continue a run use --resume.
    #[arg(long, conflicts_with = "resume")]
    pub weights: Option<PathBuf>,
    /// Continue a run exactly where it stopped: a whole-state file
    /// (`<run>/checkpoints/step-N.safetensors`) or a run directory (its latest state). Give the
    /// same command line as the run it continues; the run directory is the state's.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Activation checkpointing: keep only each block's (or stage's) input in the forward and
    /// recompute it in the backward (less memory, about one more forward of time). Gradients are
    /// bit-identical to `none`.
    #[arg(long, default_value = "none", value_name = "none|blocks|stages")]
    pub checkpoint: tubelet::checkpoint::Checkpointing,
    /// Where to write the trained weights (safetensors, written atomically); default
    /// `tubelet-<model>.safetensors`.
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Run directory (config, metrics.jsonl, epochs.jsonl, plots, last/best weights); default
    /// `runs/<model>-<timestamp>`.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Also save every this many steps (besides every epoch).
    #[arg(long)]
    pub save_every: Option<u32>,
    /// A line of metrics.jsonl (loss, lr, gradient norm, times, memory) every this many steps,
    /// and at each epoch's end; the gradient norm is computed only then (or when clipping).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub log_every: u32,
    /// No progress bar: one line every 50 steps (for logs and CI).
    #[arg(long)]
    pub quiet: bool,
    /// Under MPI: the most MiB of gradients one all-reduce bucket holds (PyTorch DDP's
    /// bucket_cap_mb).
    #[arg(long, default_value_t = 25.0)]
    pub bucket_mib: f64,
}

fn parse_clip(s: &str) -> std::result::Result<[usize; 3], String> {
    let v: Vec<usize> = s
        .split([',', 'x', '×'])
        .map(|p| p.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| format!("--clip {s:?}: give frames,height,width, e.g. 8,32,32"))?;
    match v[..] {
        [t, h, w] if t > 0 && h > 0 && w > 0 => Ok([t, h, w]),
        _ => Err(format!(
            "--clip {s:?}: give three positive numbers frames,height,width, e.g. 8,32,32"
        )),
    }
}

/// Fails now, not after training, when the weights cannot be written where asked: creates (and
/// removes) the uniquely named temporary a save would write.
fn check_writable(save: &Path) -> Result<()> {
    tubelet::io::check_writable(save)
        .map_err(|e| Error::Config(format!("--save {}: {e}", save.display())))
}

/// The recipe with every flag applied.
pub fn resolve_recipe(args: &Args) -> Result<Recipe> {
    let mut r = recipe::for_model(&args.model).ok_or_else(|| {
        Error::Config(format!(
            "model {:?} has no recipe (see `tubelet models`)",
            args.model
        ))
    })?;
    let positive = |name: &str, v: f64| {
        if v > 0.0 && v.is_finite() {
            Ok(v)
        } else {
            Err(Error::Config(format!(
                "--{name} must be a positive number, got {v}"
            )))
        }
    };
    if let Some(lr) = args.lr {
        let lr = positive("lr", lr)?;
        r.lr = lr;
        match &mut r.schedule {
            LrSchedule::Paper(s) => s.base_lr = lr,
            LrSchedule::Synthetic { peak, .. } => *peak = lr as f32,
        }
    }
    if let Some(wd) = args.weight_decay {
        if !(0.0..1.0).contains(&wd) {
            return Err(Error::Config(format!(
                "--weight-decay must be in [0, 1), got {wd}"
            )));
        }
        r.weight_decay = wd;
    }
    if let Some(e) = args.epochs {
        r.epochs = e as usize;
        if let LrSchedule::Paper(s) = &mut r.schedule {
            s.total_epochs = e as f64;
        }
    }
    if let Some(b) = args.batch {
        r.batch = b as usize;
    }
    if let LrSchedule::Synthetic {
        warmup_steps,
        total_steps,
        ..
    } = &mut r.schedule
    {
        if let Some(w) = args.warmup {
            *warmup_steps = w;
        }
        if let Some(s) = args.steps {
            *total_steps = s;
        }
    }
    if let Some(w) = args.warmup_epochs {
        match &mut r.schedule {
            LrSchedule::Paper(s) => match &mut s.warmup {
                Warmup::None => {
                    s.warmup = Warmup::Factor {
                        epochs: w,
                        start_factor: 0.0,
                    }
                }
                Warmup::Factor { epochs, .. } | Warmup::FromLr { epochs, .. } => *epochs = w,
            },
            LrSchedule::Synthetic { .. } => {
                return Err(Error::Config(
                    "--warmup-epochs: the synthetic recipe warms up by steps; use --warmup".into(),
                ))
            }
        }
    }
    if let Some(o) = &args.optimizer {
        r.optimizer = match (o.to_lowercase().as_str(), r.optimizer) {
            ("adamw", OptimizerKind::AdamW { .. }) | ("sgd", OptimizerKind::Sgd { .. }) => {
                r.optimizer
            }
            ("adamw", _) => OptimizerKind::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            ("sgd", _) => OptimizerKind::Sgd {
                momentum: 0.9,
                nesterov: false,
                dampening: 0.0,
            },
            _ => {
                return Err(Error::Config(format!(
                    "--optimizer {o:?}: use adamw or sgd"
                )))
            }
        };
    }
    if args.momentum.is_some() || args.nesterov.is_some() {
        match &mut r.optimizer {
            OptimizerKind::Sgd {
                momentum, nesterov, ..
            } => {
                if let Some(m) = args.momentum {
                    *momentum = m;
                }
                if let Some(n) = args.nesterov {
                    *nesterov = n;
                }
            }
            OptimizerKind::AdamW { .. } => {
                return Err(Error::Config(
                    "--momentum/--nesterov apply to SGD; add --optimizer sgd".into(),
                ))
            }
        }
    }
    // A value clap reads must still make sense: name the flag and the range.
    let in_unit = |name: &str, v: Option<f32>| match v {
        Some(x) if !(0.0..1.0).contains(&x) => Err(Error::Config(format!(
            "--{name} must be in [0, 1), got {x}"
        ))),
        _ => Ok(()),
    };
    in_unit("label-smoothing", args.label_smoothing)?;
    in_unit("drop-path", args.drop_path)?;
    in_unit("momentum", args.momentum)?;
    if let Some(c) = args.grad_clip {
        if !(c >= 0.0 && c.is_finite()) {
            return Err(Error::Config(format!(
                "--grad-clip must be ≥ 0 (0 turns clipping off), got {c}"
            )));
        }
    }
    if let Some(l) = args.label_smoothing {
        r.label_smoothing = l;
    }
    if let Some(c) = args.grad_clip {
        r.grad_clip = (c > 0.0).then_some(c);
    }
    if let Some(d) = args.drop_path {
        r.drop_path = Some(d);
    }
    for (name, a) in [("mixup", args.mixup), ("cutmix", args.cutmix)] {
        if let Some(a) = a {
            if !(a >= 0.0 && a.is_finite()) {
                return Err(Error::Config(format!(
                    "--{name} must be ≥ 0 (the Beta distribution's alpha; 0 turns it off), got {a}"
                )));
            }
        }
    }
    if args.mixup.is_some() || args.cutmix.is_some() {
        // A flag over a recipe without mixing: mixed on every batch, each kind half the time
        // (mmaction2's RandomBatchAugment over the two).
        let base = r.mixup.unwrap_or(recipe::Mixup {
            mixup_alpha: 0.0,
            cutmix_alpha: 0.0,
            prob: 1.0,
            switch_prob: 0.5,
        });
        let m = recipe::Mixup {
            mixup_alpha: args.mixup.unwrap_or(base.mixup_alpha),
            cutmix_alpha: args.cutmix.unwrap_or(base.cutmix_alpha),
            ..base
        };
        r.mixup = (m.mixup_alpha > 0.0 || m.cutmix_alpha > 0.0).then_some(m);
    }
    Ok(r)
}

/// Prints the loop's events: a progress bar, or a line every 50 steps with --quiet.
struct Printer {
    bar: ProgressBar,
    quiet: bool,
    ema_loss: Option<f64>,
    ema_acc: Option<f64>,
    ema_data: Option<f64>,
    ema_step: Option<f64>,
    clips: f64,
    seconds: f64,
    out: Output<Stdout>,
    /// The first write failure other than a closed pipe (an observer cannot fail; `run` returns
    /// it once the weights are saved).
    error: Option<Error>,
}

impl Printer {
    /// One line above the progress bar.
    fn say(&mut self, line: std::fmt::Arguments) {
        let out = &mut self.out;
        if let Err(e) = self.bar.suspend(|| out.line(line)) {
            self.error.get_or_insert(e);
        }
    }
}

impl Observer for Printer {
    fn event(&mut self, e: Event<'_>) {
        match e {
            Event::FirstStep {
                seconds,
                epoch_estimate_seconds,
                batches_per_epoch,
                memory_peak_bytes,
            } => {
                self.say(format_args!(
                        "first step: {seconds:.2} s (pipelines compile on first use), peak GPU memory {:.1} MiB; estimated {} per epoch of {batches_per_epoch} steps",
                        memory_peak_bytes as f64 / (1 << 20) as f64,
                        human(epoch_estimate_seconds)
                    ));
            }
            Event::Step(s) => {
                let smooth = |e: Option<f64>, v: f64| Some(e.map_or(v, |e| 0.9 * e + 0.1 * v));
                self.ema_loss = smooth(self.ema_loss, s.loss);
                self.ema_acc = smooth(self.ema_acc, s.batch_top1);
                self.clips += s.clips_per_second * (s.data_seconds + s.step_seconds);
                self.seconds += s.data_seconds + s.step_seconds;
                // Data time (waiting for the loader) apart from step time (forward, backward,
                // update): a data-bound run shows it here.
                self.ema_data = smooth(self.ema_data, s.data_seconds);
                self.ema_step = smooth(self.ema_step, s.step_seconds);
                let msg = format!(
                    "loss {:.3}  acc {:.1}%  lr {:.2e}  {:.0} clips/s  data {:.3} s  step {:.3} s",
                    self.ema_loss.unwrap_or(0.0),
                    100.0 * self.ema_acc.unwrap_or(0.0),
                    s.lr,
                    self.clips / self.seconds.max(1e-9),
                    self.ema_data.unwrap_or(0.0),
                    self.ema_step.unwrap_or(0.0)
                );
                self.bar.set_position(s.step);
                self.bar.set_message(msg.clone());
                if self.quiet && (s.step % 50 == 1 || s.batch_in_epoch == s.batches_per_epoch) {
                    self.say(format_args!(
                        "step {:>6} (epoch {} {}/{})  {msg}",
                        s.step,
                        s.epoch + 1,
                        s.batch_in_epoch,
                        s.batches_per_epoch
                    ));
                }
            }
            Event::Epoch(r) => {
                let val = r.val.as_ref().map_or(String::new(), |v| {
                    format!(
                        "; val top-1 {:.1}%  top-5 {:.1}%  mean class {:.1}% ({} videos × {} views)",
                        100.0 * v.top1(),
                        100.0 * v.top5(),
                        100.0 * v.mean_class_accuracy(),
                        v.tally.count,
                        v.views
                    )
                });
                let skipped = match r.skipped.len() {
                    0 => String::new(),
                    n => format!("; {n} bad file(s) skipped (warned above)"),
                };
                self.say(format_args!(
                    "epoch {}: train loss {:.3}, top-1 {:.1}%{val}{skipped} [{}]",
                    r.epoch + 1,
                    r.train_loss,
                    100.0 * r.train_top1,
                    human(r.seconds)
                ));
            }
            Event::Saved { reason, path } => {
                if !matches!(reason, SaveReason::Epoch { .. }) {
                    self.say(format_args!("saved ({reason:?}): {}", path.display()));
                }
            }
            Event::Validating { .. } => {}
        }
    }
}

fn human(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// The process-wide stop flag, set by Ctrl-C / SIGTERM (the handler is installed once).
fn stop_flag() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        // A second handler cannot be installed (e.g. in a test binary); training then simply
        // cannot be interrupted gracefully.
        let _ = ctrlc::set_handler(move || {
            if f.swap(true, Ordering::SeqCst) {
                eprintln!("\nsecond interrupt: exiting now");
                std::process::exit(130);
            }
            eprintln!("\ninterrupt: stopping after this step and saving (again to exit at once)");
        });
        flag
    })
    .clone()
}

/// The saver of ranks other than 0: rank 0 alone writes.
struct NoFiles;

impl StateSaver for NoFiles {
    fn save(
        &mut self,
        _: SaveReason,
        _: &LoopPosition,
        _: &dyn tubelet_models::VideoModel,
        _: &mut tubelet_train::optim::Optimiser,
    ) -> Result<Option<PathBuf>> {
        Ok(None)
    }
}

/// Every rank starts from rank 0's state: with --resume, rank 0 reads the state file and sends
/// its bytes, which every other rank restores (no shared file system needed); then rank 0's
/// parameters and buffers (its initialisation, its --weights) are broadcast.
fn start_alike(
    d: &tubelet_train::dist::Dist,
    trainer: &mut Trainer<'_>,
    resuming: bool,
    file: Option<&Path>,
    config: &serde_json::Value,
) -> Result<()> {
    if resuming {
        let bytes = match file {
            Some(f) if d.is_lead() => {
                std::fs::read(f).map_err(|e| Error::Io(format!("--resume {}: {e}", f.display())))?
            }
            _ => Vec::new(),
        };
        let bytes = d.broadcast_bytes("the resumed state's broadcast", bytes)?;
        if !d.is_lead() {
            let tmp = std::env::temp_dir().join(format!(
                "tubelet-resume-rank{}-{}.safetensors",
                d.rank(),
                std::process::id()
            ));
            std::fs::write(&tmp, &bytes)
                .map_err(|e| Error::Io(format!("{}: {e}", tmp.display())))?;
            let restored = tubelet_train::resume::restore(&tmp, trainer, config);
            let _ = std::fs::remove_file(&tmp);
            restored?;
        }
    }
    let tensors: Vec<tubelet::Tensor> = model_state(trainer.model)
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    d.broadcast_tensors("the start-up weight broadcast", &tensors)
}

pub fn run(args: Args) -> Result<()> {
    // NOTE: `train … | head -1` must still save its weights: every line goes through Output,
    // which stops printing when the reader has gone (println! would panic before the save).
    let out = &mut Output::stdout();
    // One rank of an MPI job (dist.rs), or the whole run.
    let dist = tubelet_train::dist::current();
    let shard = dist.as_ref().map_or(Shard::WHOLE, |d| Shard {
        rank: d.rank(),
        world: d.world(),
    });
    let lead = shard.rank == 0;
    if let Some(d) = &dist {
        if !(args.bucket_mib > 0.0 && args.bucket_mib.is_finite()) {
            return Err(Error::Config(format!(
                "--bucket-mib must be a positive number, got {}",
                args.bucket_mib
            )));
        }
        d.set_bucket_bytes((args.bucket_mib * (1 << 20) as f64) as usize)?;
    }
    let preset = tubelet_models::preset(&args.model)?;
    if args.data.is_none() && (args.val.is_some() || args.data_root.is_some()) {
        return Err(Error::Config(
            "--val and --data-root need --data (the training list or folder)".into(),
        ));
    }
    if !preset.tiny && args.data.is_none() {
        let tiny: Vec<String> = tubelet_models::presets()
            .iter()
            .filter(|p| p.tiny)
            .map(|p| p.name.to_string())
            .collect();
        return Err(Error::Config(format!(
            "model {:?} ({} parameters, {}×{}×{} clips) is too large for the synthetic set (8 classes, \
             32×32 clips): give it your videos with --data LIST (see `tubelet models --recipe {}`), or \
             train one of: {} (or run it with `tubelet run --model {}`)",
            preset.name, preset.params, preset.clip[0], preset.clip[1], preset.clip[2], preset.name,
            tiny.join(", "), preset.name
        )));
    }
    if args.data.is_none() {
        if let Some(n) = args.num_classes {
            if n != NUM_CLASSES {
                return Err(Error::Config(format!(
                    "--num-classes {n}: the synthetic set has {NUM_CLASSES} classes; other class counts need --data"
                )));
            }
        }
    }
    let recipe = resolve_recipe(&args)?;
    let save = args
        .save
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("tubelet-{}.safetensors", preset.name)));
    if lead {
        check_writable(&save)?;
    }
    let gpu = tubelet::Gpu::global()?;
    // `b`: the global batch; `b_rank`: this rank's share of it.
    let b = recipe.batch;
    if !b.is_multiple_of(shard.world) {
        return Err(Error::Config(format!(
            "--batch {b} does not split over {} ranks: the batch is the global one (every rank's              clips together); give a multiple of {}",
            shard.world, shard.world
        )));
    }
    let b_rank = b / shard.world;
    let clip = args.clip.unwrap_or(preset.clip);
    // The data: the user's through tubelet-data's loader, or the synthetic set.
    let files = match &args.data {
        Some(list) => {
            let pipeline = pipeline_for(preset.name, &recipe, clip, Views::Single);
            let cfg = LoaderConfig {
                batch: b_rank,
                seed: args.seed,
                shuffle: true,
                rank: shard.rank,
                world: shard.world,
                ..LoaderConfig::default()
            };
            let root = args.data_root.as_deref();
            let train = LoaderSource::open(
                list,
                root,
                args.num_classes,
                &pipeline,
                Mode::Train,
                cfg.clone(),
            )?;
            let classes = args.num_classes.unwrap_or(train.num_classes());
            let val = match &args.val {
                Some(v) => {
                    // Validation runs whole on every rank (dist.rs).
                    let cfg = LoaderConfig {
                        shuffle: false,
                        rank: 0,
                        world: 1,
                        ..cfg
                    };
                    Some(LoaderSource::open(
                        v,
                        root,
                        Some(classes),
                        &pipeline,
                        Mode::Test,
                        cfg,
                    )?)
                }
                None => None,
            };
            Some((train, val, classes))
        }
        None => None,
    };
    let classes = files.as_ref().map_or(NUM_CLASSES, |f| f.2);
    let opts = BuildOptions {
        seed: args.seed,
        num_classes: Some(classes),
        clip: Some(clip),
        drop_path: recipe.drop_path,
    };
    let model = (preset.build)(&opts)?;
    // Fine-tuning semantics: tensors whose shapes fit are loaded, a head of another class count is
    // re-initialised, and the report says which were loaded, re-initialised and unused.
    // Under MPI rank 0 alone reads them; the others get its weights below.
    let loaded = match &args.weights {
        Some(w) if lead => Some(tubelet_train::weights::load_finetune(model.as_ref(), w)?),
        _ => None,
    };
    let clip = model.clip();
    // Micro-batches per update.
    let k = args.accumulate as usize;
    let steps = match (&recipe.schedule, &files) {
        (_, Some((train, _, _))) => {
            let updates = train.batches_per_epoch().div_ceil(k);
            args.steps.map_or(updates, |s| (s as usize).min(updates))
        }
        (LrSchedule::Synthetic { total_steps, .. }, None) => *total_steps as usize,
        (LrSchedule::Paper(_), None) => args.steps.unwrap_or(400) as usize,
    };
    let mut recipe = recipe;
    if let (Some(_), LrSchedule::Synthetic { total_steps, .. }) = (&files, &mut recipe.schedule) {
        // The synthetic recipe's schedule spans the whole run of the user's data.
        *total_steps = (recipe.epochs * steps) as u32;
    }
    let synthetic_train = Synthetic {
        seed: args.seed,
        clip,
        split: Split::Train,
        batch: b_rank,
        clips: steps * k * b,
        shard,
    };
    let held_out = Synthetic {
        seed: args.seed,
        clip,
        split: Split::Test,
        batch: b_rank,
        clips: args.eval_clips as usize,
        shard: Shard::WHOLE,
    };
    let (train_src, val_src): (&dyn BatchSource, Option<&dyn BatchSource>) = match &files {
        Some((t, v, _)) => (t, v.as_ref().map(|v| v as &dyn BatchSource)),
        None => (&synthetic_train, Some(&held_out)),
    };
    let resume_file = match &args.resume {
        Some(p) if lead => Some(tubelet_train::resume::resolve(p)?),
        _ => None,
    };
    let run_dir = match (
        &args.run_dir,
        resume_file
            .as_deref()
            .and_then(tubelet_train::resume::run_dir_of),
    ) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => d,
        (None, None) => default_run_dir(preset.name),
    };
    let n_params: usize = model.named_params().iter().map(|(_, t)| t.numel()).sum();
    let per_step = match k {
        1 => format!("{b}"),
        _ => format!("{} ({k} accumulated micro-batches of {b})", k * b),
    };
    let ranks = match &dist {
        Some(d) if d.world() > 1 => format!(
            "; {} ranks × {b_rank} clips ({}, all-reduce buckets ≤ {} MiB)",
            d.world(),
            d.library(),
            args.bucket_mib
        ),
        _ => String::new(),
    };
    if lead {
        outln!(out,
            "tubelet train: {} ({} parameters) on {} ({:?}); {} epoch(s) of {} steps × {} clips of {}×{}×{}, {} classes{}{ranks}",
            args.model, n_params, gpu.info.name, gpu.info.backend, recipe.epochs, steps, per_step,
            clip[0], clip[1], clip[2], classes,
            files.as_ref().map_or(String::new(), |(t, v, _)| format!(
                "; {} training videos{}", t.len(), v.as_ref().map_or(String::new(), |v| format!(", {} validation videos", v.len()))))
        )?;
    }
    if let Some(r) = &loaded {
        outln!(out, "{}", r.summary())?;
    }
    if lead {
        outln!(
            out,
            "recipe: {}; {}; run directory {}",
            recipe.optimizer.describe(),
            recipe.schedule.describe(),
            run_dir.display()
        )?;
    }
    let config = json!({
        "model": preset.name, "seed": args.seed, "clip": clip, "num_classes": classes,
        "data": args.data.as_ref().map_or("synthetic".to_string(), |p| p.display().to_string()),
        "val": args.val.as_ref().map(|p| p.display().to_string()),
        "data_root": args.data_root.as_ref().map(|p| p.display().to_string()), "steps_per_epoch": steps, "eval_clips": args.eval_clips,
        "weights": args.weights.as_ref().map(|p| p.display().to_string()),
        // What --weights loaded, so the run says afterwards where its starting point came from.
        "weights_report": loaded.as_ref().map(|r| json!({
            "source": r.source, "loaded": r.loaded, "reinitialised": r.reinitialised,
            "mismatched": r.mismatched, "missing": r.missing, "unused": r.unused,
        })),
        "save": save.display().to_string(), "recipe": recipe.to_json(), "batch": b,
        "accumulate": k,
        "ranks": shard.world,
    });
    if let Some(d) = &dist {
        // Every rank must be doing the same run: each field of the config (but what only rank 0
        // knows), the model's tensors, the build, and whether it resumes.
        let mut fields: Vec<(&str, String)> = vec![
            ("tubelet version", env!("CARGO_PKG_VERSION").to_string()),
            ("world size", d.world().to_string()),
            ("--resume", args.resume.is_some().to_string()),
        ];
        let tensors: Vec<String> = model_state(model.as_ref())
            .iter()
            .map(|(k, t)| format!("{k}{:?}", t.shape()))
            .collect();
        let described = format!("{} tensors, {n_params} parameters", tensors.len());
        fields.push(("model tensors", described));
        fields.push(("model tensor names and shapes", tensors.join(",")));
        if let Some(map) = config.as_object() {
            for (k, v) in map.iter().filter(|(k, _)| *k != "weights_report") {
                fields.push((k.as_str(), v.to_string()));
            }
        }
        d.check_same(&fields)?;
    }
    let o = TrainOptions {
        epochs: recipe.epochs,
        max_steps_per_epoch: files.as_ref().map(|_| steps),
        schedule: recipe.schedule.clone(),
        optimizer: recipe.optimizer,
        weight_decay: recipe.weight_decay as f32,
        policy: recipe.policy.clone(),
        label_smoothing: recipe.label_smoothing,
        grad_clip: recipe.grad_clip,
        accumulate: k,
        mixup: recipe.mixup,
        seed: args.seed,
        // Synthetic: one view, raw scores (the argmax `tubelet train` always reported).
        view_average: if files.is_some() {
            recipe.view_average
        } else {
            ViewAverage::Score
        },
        max_val_batches: None,
        // Rank 0 alone writes logs and plots.
        run_dir: lead.then(|| run_dir.clone()),
        config,
        log_every: args.log_every as usize,
        // A plot is a PNG encode: every 200 steps and at each epoch's end is enough to follow.
        plot_every: 200,
        save_every: args.save_every.map(|s| s as usize),
        stop: Some(stop_flag()),
    };
    let total_steps = (recipe.epochs * steps) as u64;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total_steps).with_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .expect("static template"),
        )
    };
    let mut printer = Printer {
        bar: if lead { bar } else { ProgressBar::hidden() },
        quiet: args.quiet,
        ema_loss: None,
        ema_acc: None,
        ema_data: None,
        ema_step: None,
        clips: 0.0,
        seconds: 0.0,
        out: Output::stdout(),
        error: None,
    };
    // The loop runs on this thread: segments are marked per thread.
    tubelet::checkpoint::set_checkpointing(args.checkpoint);
    let mut trainer = Trainer::new(model.as_ref(), &o)?;
    trainer.set_dist(dist.clone());
    let mut saver: Box<dyn StateSaver> = if lead {
        Box::new(StateFileSaver::new(&run_dir, args.seed, o.config.clone())?)
    } else {
        Box::new(NoFiles)
    };
    if let Some(file) = &resume_file {
        let loaded = tubelet_train::resume::restore(file, &mut trainer, &o.config)?;
        outln!(
            out,
            "resumed from {}: step {}, epoch {} batch {}",
            loaded.path.display(),
            loaded.progress.step,
            loaded.progress.epoch + 1,
            loaded.progress.batch_in_epoch
        )?;
    }
    if let Some(d) = &dist {
        start_alike(
            d,
            &mut trainer,
            args.resume.is_some(),
            resume_file.as_deref(),
            &o.config,
        )?;
    }
    let mut quiet = Quiet;
    let obs: &mut dyn Observer = if lead { &mut printer } else { &mut quiet };
    let summary = trainer.run(train_src, val_src, &o, saver.as_mut(), obs)?;
    printer.bar.finish();
    match &summary.outcome {
        Outcome::Finished => {}
        Outcome::Interrupted { step } if lead => {
            outln!(
                out,
                "interrupted at step {step}; the weights so far are in {}",
                run_dir.join("last.safetensors").display()
            )?;
            return Ok(());
        }
        Outcome::Interrupted { .. } => return Ok(()),
        Outcome::Diverged {
            step,
            what,
            last_finite,
        } => {
            let kept = match last_finite {
                Some(p) => format!(
                    "the last finite weights (before this update) are in {}",
                    p.display()
                ),
                None => "no weights were written for this state".into(),
            };
            return Err(Error::Config(format!(
                "training diverged at step {step}: {what}; stopped before applying that update, overwrote \
                 nothing ({} is untouched); {kept}. Try a lower --lr (now {:e})",
                save.display(),
                recipe.lr
            )));
        }
    }
    if !lead {
        return Ok(()); // rank 0 reports and writes the weights
    }
    let last = summary.epochs.last().and_then(|e| e.val.as_ref());
    if let (Some(v), true) = (last, files.is_some()) {
        outln!(out,
            "validation: top-1 {:.2}%  top-5 {:.2}%  mean class accuracy {:.2}% ({} videos); best top-1 {:.2}% at epoch {}",
            100.0 * v.top1(),
            100.0 * v.top5(),
            100.0 * v.mean_class_accuracy(),
            v.tally.count,
            100.0 * summary.position.best_top1.unwrap_or(0.0),
            summary.position.best_epoch.map_or(0, |e| e + 1)
        )?;
    } else if let Some(v) = last {
        let n_eval = v.tally.count;
        outln!(
            out,
            "held-out accuracy: {:.1}% ({}/{n_eval} clips; chance {:.1}%); trained in {:.0} s \
             ({:.1} clips/s), evaluated in {:.1} s",
            100.0 * v.top1(),
            v.tally.top1,
            100.0 / NUM_CLASSES as f64,
            summary.seconds - v.seconds,
            summary.clips as f64 / (summary.seconds - v.seconds).max(1e-9),
            v.seconds
        )?;
    }
    if !trainer.params_finite()? {
        return Err(Error::Config(format!(
            "a parameter is not finite after training; {} is untouched",
            save.display()
        )));
    }
    tubelet::io::save(&save, &model_state(model.as_ref()), None)?;
    outln!(
        out,
        "weights: {} ({} parameters and {} buffers, official key names); logs and plots: {}",
        save.display(),
        model.named_params().len(),
        model.named_buffers().len(),
        run_dir.display()
    )?;
    printer.error.map_or(Ok(()), Err)
}
