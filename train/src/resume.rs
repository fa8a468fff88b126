//! Resume: the loop's [`StateSaver`] that writes the whole state (checkpoint.rs's format) at
//! every save point, and [`restore`], which puts a saved state back into a [`Trainer`] so the run
//! continues exactly where it stopped: same parameters, buffers, optimiser moments and step
//! counts, same epoch and batch (the loader's order is a function of (seed, epoch), so the next
//! batch is the one the uninterrupted run would have taken), same schedule position, same best.
//!
//! Layout of a run directory: `last.safetensors` / `best.safetensors` hold the weights only (for
//! `run`, `eval` and `--weights`), `checkpoints/step-<N>.safetensors` the whole states (for
//! `--resume`; the last few kept, and `checkpoints/best.safetensors`).
//!
//! Drop path and dropout draw their masks' seeds from the model's counters
//! (`VideoModel::rng_counters`); a state holds them in its progress (`rng`, as `model.<name>`)
//! and a resume puts them back, so the resumed run draws the masks the uninterrupted run would
//! have (the resume test checks a drop-path model bit for bit). States written before the
//! counters were kept have none: their runs resume with the counters at 0.

use std::path::{Path, PathBuf};

use serde_json::json;
use tubelet::{Error, Result, Tensor};
use tubelet_models::VideoModel;

use crate::checkpoint::{self, Keeper, Loaded, OptimizerInfo, Progress, State};
use crate::optim::{Optimiser, OptimizerKind};
use crate::trainer::{LoopPosition, SaveReason, StateSaver, Trainer, WeightsSaver};

/// How many whole states a run keeps (besides the best).
pub const KEEP_LAST: usize = 3;

/// Writes the weights (`last`/`best.safetensors`, as [`WeightsSaver`]) and the whole state
/// (`checkpoints/step-<N>.safetensors`) at each save point.
pub struct StateFileSaver {
    weights: WeightsSaver,
    keeper: Keeper,
    data_seed: u64,
    config: serde_json::Value,
}

impl StateFileSaver {
    /// States go to `<run_dir>/checkpoints` (created; writability checked now, not after the
    /// first epoch). `config` is stored with each state and compared on resume.
    pub fn new(
        run_dir: &Path,
        data_seed: u64,
        config: serde_json::Value,
    ) -> Result<StateFileSaver> {
        let keeper = Keeper::new(&run_dir.join("checkpoints"), KEEP_LAST)?;
        Ok(StateFileSaver {
            weights: WeightsSaver {
                dir: run_dir.to_path_buf(),
            },
            keeper,
            data_seed,
            config,
        })
    }
}

/// The optimiser's state tensors under PyTorch's names (`exp_avg.<p>`, `exp_avg_sq.<p>` for
/// AdamW, `momentum_buffer.<p>` for SGD), its kind and step count, and the SGD buffers already
/// started (a buffer that never saw a gradient takes the first one whole).
fn optimizer_state(opt: &mut Optimiser) -> (Vec<(String, Tensor)>, OptimizerInfo, Vec<String>) {
    let mut tensors = Vec::new();
    let mut started = Vec::new();
    let mut step = 0u64;
    let kind = match opt.kind() {
        OptimizerKind::AdamW { .. } => {
            for (_, g) in opt.adamw_groups() {
                tensors.extend(g.state());
                step = step.max(g.steps_taken() as u64);
            }
            "adamw"
        }
        OptimizerKind::Sgd { .. } => {
            for (_, g) in opt.sgd_groups() {
                for (name, buf, s) in g.state() {
                    tensors.push((format!("momentum_buffer.{name}"), buf.clone()));
                    if s {
                        started.push(name.to_string());
                    }
                }
                step = step.max(g.steps_taken() as u64);
            }
            "sgd"
        }
    };
    (
        tensors,
        OptimizerInfo {
            kind: kind.into(),
            step,
        },
        started,
    )
}

impl StateSaver for StateFileSaver {
    fn save(
        &mut self,
        reason: SaveReason,
        pos: &LoopPosition,
        model: &dyn VideoModel,
        opt: &mut Optimiser,
    ) -> Result<Option<PathBuf>> {
        self.weights.save(reason, pos, model, opt)?;
        let params = model.named_params();
        let buffers = model.named_buffers();
        let (optimizer, optimizer_info, started) = optimizer_state(opt);
        let progress = Progress {
            step: pos.step,
            epoch: pos.epoch as u64,
            batch_in_epoch: pos.batch_in_epoch as u64,
            schedule_step: pos.step,
            data_seed: self.data_seed,
            // The keeper copies the state to best.safetensors when this beats its best.
            val_top1: if reason == (SaveReason::Epoch { best: true }) {
                pos.best_top1
            } else {
                None
            },
            best_val_top1: pos.best_top1,
            extra: json!({ "best_epoch": pos.best_epoch, "sgd_started": started }),
            rng: model
                .rng_counters()
                .into_iter()
                .map(|(k, v)| (format!("{RNG_PREFIX}{k}"), v))
                .collect(),
        };
        let state = State {
            params: &params,
            buffers: &buffers,
            optimizer: &optimizer,
            optimizer_info,
            progress: &progress,
            config: &self.config,
        };
        Ok(Some(self.keeper.save(&state)?.path))
    }
}

/// The prefix of the model's counters among a state's named RNG states.
const RNG_PREFIX: &str = "model.";

/// The fields of the run's configuration a resume must share with the run it continues.
pub const SAME_RUN_FIELDS: [&str; 9] = [
    "model",
    "seed",
    "clip",
    "num_classes",
    "data",
    "data_root",
    "steps_per_epoch",
    "batch",
    "accumulate",
];

/// A field's value in a run's config; states written before a field existed have its default
/// (`accumulate`: 1, no accumulation).
fn config_field(config: &serde_json::Value, key: &str) -> Option<serde_json::Value> {
    match (config.get(key), key) {
        (None, "accumulate") => Some(json!(1)),
        (v, _) => v.cloned(),
    }
}

/// Reads the state `path` names (a state file, or a run directory / its `checkpoints` folder:
/// the latest state), checks it continues the run `config` describes, and restores it into
/// `trainer`. Returns the loaded state (its progress, for the caller's messages).
pub fn restore(
    path: &Path,
    trainer: &mut Trainer<'_>,
    config: &serde_json::Value,
) -> Result<Loaded> {
    let file = resolve(path)?;
    let loaded = checkpoint::load(&file)?;
    let differ: Vec<String> = SAME_RUN_FIELDS
        .iter()
        .filter(|k| config_field(&loaded.config, k) != config_field(config, k))
        .map(|k| {
            let show =
                |v: Option<serde_json::Value>| v.map_or("(none)".to_string(), |v| v.to_string());
            format!(
                "{k}: state {}, now {}",
                show(config_field(&loaded.config, k)),
                show(config_field(config, k))
            )
        })
        .collect();
    if !differ.is_empty() {
        return Err(Error::Config(format!(
            "--resume {}: the state belongs to another run ({}); resume with the same command line, \
             or start a new run from its weights with --weights",
            file.display(),
            differ.join("; ")
        )));
    }
    loaded.restore_model(trainer.model)?;
    let counters: Vec<(String, u64)> = loaded
        .progress
        .rng
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(RNG_PREFIX)?.to_string(), *v)))
        .collect();
    trainer
        .model
        .set_rng_counters(&counters)
        .map_err(|e| Error::Config(format!("--resume {}: {e}", file.display())))?;
    let step = u32::try_from(loaded.optimizer_info.step).map_err(|_| {
        Error::Io(format!(
            "{}: optimiser step {} too large",
            file.display(),
            loaded.optimizer_info.step
        ))
    })?;
    let get = |k: &str| {
        loaded
            .optimizer
            .get(k)
            .map(|h| (h.shape.as_slice(), h.data.as_slice()))
    };
    match trainer.opt.kind() {
        OptimizerKind::AdamW { .. } => {
            if loaded.optimizer_info.kind != "adamw" {
                return Err(kind_mismatch(&file, &loaded.optimizer_info.kind, "adamw"));
            }
            for (_, g) in trainer.opt.adamw_groups() {
                g.load_state(get, step)
                    .map_err(|e| Error::Io(format!("{}: {e}", file.display())))?;
            }
        }
        OptimizerKind::Sgd { .. } => {
            if loaded.optimizer_info.kind != "sgd" {
                return Err(kind_mismatch(&file, &loaded.optimizer_info.kind, "sgd"));
            }
            let started: Vec<String> = loaded.progress.extra["sgd_started"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            for (_, g) in trainer.opt.sgd_groups() {
                let names: Vec<String> = g.state().iter().map(|(n, _, _)| n.to_string()).collect();
                for name in names {
                    let key = format!("momentum_buffer.{name}");
                    let h = loaded.optimizer.get(&key).ok_or_else(|| {
                        Error::Io(format!("{}: SGD state has no {key}", file.display()))
                    })?;
                    g.restore(&name, &h.data, started.contains(&name), step)?;
                }
            }
        }
    }
    let p = &loaded.progress;
    trainer.pos = LoopPosition {
        step: p.step,
        epoch: p.epoch as usize,
        batch_in_epoch: p.batch_in_epoch as usize,
        best_top1: p.best_val_top1,
        best_epoch: p.extra["best_epoch"].as_u64().map(|e| e as usize),
    };
    Ok(loaded)
}

fn kind_mismatch(file: &Path, saved: &str, now: &str) -> Error {
    Error::Config(format!(
        "--resume {}: the state was trained with {saved}, this run uses {now}",
        file.display()
    ))
}

/// A state file, or the latest state of a run directory or of its `checkpoints` folder.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    let sub = path.join("checkpoints");
    if path.is_dir() && sub.is_dir() {
        return checkpoint::resolve_resume(&sub);
    }
    if !path.exists() {
        return Err(Error::Io(format!(
            "--resume {}: no such file or folder",
            path.display()
        )));
    }
    checkpoint::resolve_resume(path)
}

/// The run directory a state file belongs to (`<run>/checkpoints/step-N.safetensors` → `<run>`),
/// so a resumed run keeps writing its logs and plots where it started.
pub fn run_dir_of(state: &Path) -> Option<PathBuf> {
    let dir = state.parent()?;
    (dir.file_name()? == "checkpoints")
        .then(|| dir.parent().map(Path::to_path_buf))
        .flatten()
}
