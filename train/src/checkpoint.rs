//! The whole state of a training run in one file, so that `--resume` continues it exactly.
//!
//! A state file is safetensors (what `engine/src/io.rs` writes and reads) holding
//! - `param.<key>` and `buffer.<key>`: the model's parameters and buffers (BatchNorm running
//!   statistics), by official key, f32 (bit-exact);
//! - `optim.<name>`: the optimiser's tensors (AdamW's `exp_avg.<key>`, `exp_avg_sq.<key>`,
//!   from `tubelet::optim::AdamW::state`; an SGD's momentum buffers likewise);
//!
//! and in its string metadata: `format` = [`FORMAT`], `version`, `optimizer` (JSON: kind and
//! step count), `progress` (JSON [`Progress`]: step, epoch, schedule position, data order,
//! RNG states, validation top-1) and `config` (the run's configuration, JSON as the loop
//! gives it). The metadata marks the file as a whole state, which is how `--weights` and
//! `--resume` tell their files apart and say which flag the other kind needs.
//!
//! Writing (`tubelet::io::write_atomic`): serialised once, written to a uniquely named
//! temporary beside the target, synced, renamed; the temporary is removed on every error.
//! A state holding a NaN or ±Inf is refused before anything is written, so a diverged run
//! never overwrites a good file. [`Keeper`] keeps the last N states of a run directory and
//! the best by validation top-1.
//!
//! Weights-only files (official checkpoints, `tubelet train --save` output) are read by
//! `weights.rs`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tubelet::io::HostTensor;
use tubelet::optim::AdamW;
use tubelet::{Error, Result, Tensor};
use tubelet_models::VideoModel;

/// The `format` metadata of a whole-state file.
pub const FORMAT: &str = "tubelet-train-state";
/// Bumped when the layout changes; a newer file is refused with a message.
pub const VERSION: u32 = 1;

/// Where a run stands, besides its tensors: everything a resume needs to continue the same
/// sequence of updates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Optimiser steps taken.
    pub step: u64,
    /// Epochs completed.
    pub epoch: u64,
    /// Batches of the current epoch already consumed (the position in the data order).
    pub batch_in_epoch: u64,
    /// The learning-rate schedule's position (usually `step`; kept apart for schedules
    /// stepped per epoch).
    pub schedule_step: u64,
    /// The seed the data order is drawn from (each epoch's permutation derives from it).
    pub data_seed: u64,
    /// Named RNG states (`tubelet::Rng::state`), e.g. "augment", "drop_path", "mixup".
    pub rng: BTreeMap<String, u64>,
    /// Validation top-1 of the state, when it was evaluated (fraction in [0, 1]).
    pub val_top1: Option<f64>,
    /// The best validation top-1 of the run so far.
    pub best_val_top1: Option<f64>,
    /// Anything else the loop wants back (JSON).
    #[serde(default)]
    pub extra: serde_json::Value,
}

/// The optimiser's part of a state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerInfo {
    /// "adamw", "sgd", ...: a resume with another optimiser is refused.
    pub kind: String,
    /// Its step count (AdamW's bias corrections depend on it).
    pub step: u64,
}

/// A state to write: tensors by name (still on the GPU) and the rest.
pub struct State<'a> {
    pub params: &'a [(String, Tensor)],
    pub buffers: &'a [(String, Tensor)],
    /// The optimiser's tensors by name, e.g. `AdamW::state()`.
    pub optimizer: &'a [(String, Tensor)],
    pub optimizer_info: OptimizerInfo,
    pub progress: &'a Progress,
    /// The run's configuration (model, data, recipe, flags).
    pub config: &'a serde_json::Value,
}

impl<'a> State<'a> {
    /// The state of `model` trained by `opt`.
    pub fn adamw(
        params: &'a [(String, Tensor)],
        buffers: &'a [(String, Tensor)],
        opt_state: &'a [(String, Tensor)],
        opt: &AdamW,
        progress: &'a Progress,
        config: &'a serde_json::Value,
    ) -> State<'a> {
        State {
            params,
            buffers,
            optimizer: opt_state,
            optimizer_info: OptimizerInfo {
                kind: "adamw".into(),
                step: opt.steps_taken() as u64,
            },
            progress,
            config,
        }
    }
}

/// Whether safetensors metadata marks a whole training state.
pub fn is_train_state(metadata: &HashMap<String, String>) -> bool {
    metadata.get("format").is_some_and(|f| f == FORMAT)
}

/// The message for a whole state handed to `--weights`.
pub fn whole_state_message(path: &Path) -> String {
    format!(
        "this file holds the whole state of a training run (parameters, optimiser moments, step, config), \
         not weights alone: to continue that run use --resume {p}; to start a new run from its weights, \
         extract them with `tubelet convert {p} WEIGHTS.safetensors` and pass --weights WEIGHTS.safetensors",
        p = path.display()
    )
}

/// Serialises a state: refuses non-finite values (naming the tensor) before writing.
fn serialize(state: &State<'_>) -> Result<Vec<u8>> {
    let mut host: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for (prefix, list) in [
        ("param", state.params),
        ("buffer", state.buffers),
        ("optim", state.optimizer),
    ] {
        for (k, t) in list {
            host.push((format!("{prefix}.{k}"), t.shape().to_vec(), t.to_vec()?));
        }
    }
    let meta = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("version".to_string(), VERSION.to_string()),
        ("optimizer".to_string(), to_json(&state.optimizer_info)?),
        ("progress".to_string(), to_json(state.progress)?),
        ("config".to_string(), state.config.to_string()),
    ]);
    tubelet::io::serialize_host(&host, Some(meta)).map_err(|e| {
        Error::Io(format!(
            "refusing to write a training state: {e}; files already written are left as they were"
        ))
    })
}

/// JSON text of a serialisable value.
fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Io(format!("serialising a training state: {e}")))
}

/// Writes the whole state to `path` atomically (see the module docs).
pub fn save(path: &Path, state: &State<'_>) -> Result<()> {
    tubelet::io::write_atomic(path, &serialize(state)?)
}

/// A state read back: tensors on the host, by name without their `param.`/`buffer.`/`optim.`
/// prefix.
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub params: BTreeMap<String, HostTensor>,
    pub buffers: BTreeMap<String, HostTensor>,
    pub optimizer: BTreeMap<String, HostTensor>,
    pub optimizer_info: OptimizerInfo,
    pub progress: Progress,
    pub config: serde_json::Value,
}

/// Reads a whole state written by [`save`]. A weights-only file (safetensors without the
/// state's metadata, or any PyTorch file) is an error that says to use `--weights`.
pub fn load(path: &Path) -> Result<Loaded> {
    let weights_only = || {
        Error::Io(format!(
            "{p} holds weights only (no optimiser state, step or config), not the whole state of a run: \
             to start a run from these weights use --weights {p}; --resume takes a state file that \
             `tubelet train` wrote (or its run directory)",
            p = path.display()
        ))
    };
    let mut head = [0u8; 9];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path)
            .map_err(|e| Error::Io(format!("{}: cannot open: {e}", path.display())))?;
        let n = f
            .read(&mut head)
            .map_err(|e| Error::Io(format!("{}: cannot read: {e}", path.display())))?;
        if n < 9 || head[8] != b'{' {
            // Not safetensors: a PyTorch file or something else. Say what it is if we can.
            return Err(match crate::weights::read_weights(path) {
                Ok(_) => weights_only(),
                Err(e) => e,
            });
        }
    }
    let (tensors, meta) = tubelet::io::read_with_metadata(path)?;
    if !is_train_state(&meta) {
        return Err(weights_only());
    }
    let field = |k: &str| {
        meta.get(k)
            .ok_or_else(|| Error::Io(format!("{}: state metadata has no {k:?}", path.display())))
    };
    let version: u32 = field("version")?.parse().unwrap_or(u32::MAX);
    if version > VERSION {
        return Err(Error::Io(format!(
            "{}: training state version {version}; this tubelet reads up to {VERSION}",
            path.display()
        )));
    }
    let parse_err = |k: &str, e: serde_json::Error| {
        Error::Io(format!("{}: state metadata {k:?}: {e}", path.display()))
    };
    let optimizer_info: OptimizerInfo =
        serde_json::from_str(field("optimizer")?).map_err(|e| parse_err("optimizer", e))?;
    let progress: Progress =
        serde_json::from_str(field("progress")?).map_err(|e| parse_err("progress", e))?;
    let config: serde_json::Value =
        serde_json::from_str(field("config")?).map_err(|e| parse_err("config", e))?;
    let mut l = Loaded {
        path: path.to_path_buf(),
        params: BTreeMap::new(),
        buffers: BTreeMap::new(),
        optimizer: BTreeMap::new(),
        optimizer_info,
        progress,
        config,
    };
    for (k, t) in tensors {
        let (map, key) = if let Some(k) = k.strip_prefix("param.") {
            (&mut l.params, k)
        } else if let Some(k) = k.strip_prefix("buffer.") {
            (&mut l.buffers, k)
        } else if let Some(k) = k.strip_prefix("optim.") {
            (&mut l.optimizer, k)
        } else {
            return Err(Error::Io(format!(
                "{}: unexpected tensor {k} in a training state",
                path.display()
            )));
        };
        map.insert(key.to_string(), t);
    }
    Ok(l)
}

impl Loaded {
    /// Writes the saved parameters and buffers into `model`: the same keys and shapes, all of
    /// them (a resume is the same run), or an error listing every difference.
    pub fn restore_model(&self, model: &dyn VideoModel) -> Result<()> {
        let mut problems = Vec::new();
        let mut pairs = Vec::new();
        for (kind, saved, live) in [
            ("parameter", &self.params, model.named_params()),
            ("buffer", &self.buffers, model.named_buffers()),
        ] {
            for (k, t) in &live {
                match saved.get(k) {
                    None => problems.push(format!("{kind} {k} not in the state")),
                    Some(h) if h.shape != t.shape() => problems.push(format!(
                        "{kind} {k}: state {:?}, model {:?}",
                        h.shape,
                        t.shape()
                    )),
                    Some(h) => pairs.push((t.clone(), h)),
                }
            }
            let names: std::collections::HashSet<&str> =
                live.iter().map(|(k, _)| k.as_str()).collect();
            problems.extend(
                saved
                    .keys()
                    .filter(|k| !names.contains(k.as_str()))
                    .map(|k| format!("{kind} {k} not in the model")),
            );
        }
        if !problems.is_empty() {
            return Err(Error::Io(format!(
                "{} is the state of another model ({} differences): {}; --resume continues the same run \
                 (same --model and class count); to start from its weights use `tubelet convert` and --weights",
                self.path.display(),
                problems.len(),
                problems.join("; ")
            )));
        }
        for (t, h) in pairs {
            t.write(&h.data)?;
        }
        Ok(())
    }

    /// Restores AdamW's moments and step count.
    pub fn restore_adamw(&self, opt: &mut AdamW) -> Result<()> {
        if self.optimizer_info.kind != "adamw" {
            return Err(Error::Io(format!(
                "{}: the state was trained with {}, this run uses adamw",
                self.path.display(),
                self.optimizer_info.kind
            )));
        }
        let step = u32::try_from(self.optimizer_info.step).map_err(|_| {
            Error::Io(format!(
                "{}: optimiser step {} too large",
                self.path.display(),
                self.optimizer_info.step
            ))
        })?;
        opt.load_state(
            |k| {
                self.optimizer
                    .get(k)
                    .map(|h| (h.shape.as_slice(), h.data.as_slice()))
            },
            step,
        )
        .map_err(|e| Error::Io(format!("{}: {e}", self.path.display())))
    }
}

/// Reads back `tensors` and names the first holding a NaN or ±Inf (with how many and the
/// first index), or `None` when all are finite: the loop's guard before it keeps a state as
/// known good.
pub fn all_finite(tensors: &[(String, Tensor)]) -> Result<Option<String>> {
    for (name, t) in tensors {
        let v = t.to_vec()?;
        if let Some(bad) = tubelet::io::first_non_finite([(name.as_str(), v.as_slice())]) {
            return Ok(Some(bad));
        }
    }
    Ok(None)
}

/// The state files of one run directory: `step-<step>.safetensors` (the last `keep_last`
/// kept) and `best.safetensors` (the best validation top-1 so far).
pub struct Keeper {
    dir: PathBuf,
    keep_last: usize,
    best: Option<f64>,
}

/// What [`Keeper::save`] wrote.
#[derive(Debug)]
pub struct Saved {
    pub path: PathBuf,
    /// Whether the state became `best.safetensors`.
    pub best: bool,
    /// State files removed to keep the last N.
    pub removed: Vec<PathBuf>,
}

/// The file name of the state at `step`.
pub fn step_file_name(step: u64) -> String {
    format!("step-{step:09}.safetensors")
}

impl Keeper {
    /// Opens (creating it) `dir`, checks now that a file can be written there, and reads the
    /// best top-1 of an existing `best.safetensors` (a resumed run keeps its best).
    pub fn new(dir: &Path, keep_last: usize) -> Result<Keeper> {
        if keep_last == 0 {
            return Err(Error::Config(
                "keeping 0 checkpoints would leave nothing to resume from; keep at least 1".into(),
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Io(format!(
                "cannot create the run directory {}: {e}",
                dir.display()
            ))
        })?;
        tubelet::io::check_writable(&dir.join(step_file_name(0)))?;
        let best_path = dir.join("best.safetensors");
        let best = if best_path.exists() {
            load(&best_path)?.progress.val_top1
        } else {
            None
        };
        Ok(Keeper {
            dir: dir.to_path_buf(),
            keep_last,
            best,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The state files present, oldest first (by step).
    pub fn states(&self) -> Result<Vec<PathBuf>> {
        states_in(&self.dir)
    }

    /// Writes `state` as `step-<progress.step>.safetensors`; also as `best.safetensors` when
    /// its validation top-1 beats the best so far; then removes the oldest step files beyond
    /// `keep_last`. Non-finite states are refused before anything is written.
    pub fn save(&mut self, state: &State<'_>) -> Result<Saved> {
        let bytes = serialize(state)?;
        let path = self.dir.join(step_file_name(state.progress.step));
        tubelet::io::write_atomic(&path, &bytes)?;
        let best = match state.progress.val_top1 {
            Some(v) if self.best.is_none_or(|b| v > b) => {
                tubelet::io::write_atomic(&self.dir.join("best.safetensors"), &bytes)?;
                self.best = Some(v);
                true
            }
            _ => false,
        };
        let all = self.states()?;
        let mut removed = Vec::new();
        for old in &all[..all.len().saturating_sub(self.keep_last)] {
            std::fs::remove_file(old)
                .map_err(|e| Error::Io(format!("removing the old state {}: {e}", old.display())))?;
            removed.push(old.clone());
        }
        Ok(Saved {
            path,
            best,
            removed,
        })
    }

    /// The best validation top-1 so far.
    pub fn best(&self) -> Option<f64> {
        self.best
    }
}

/// `step-*.safetensors` in `dir`, oldest first.
pub fn states_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::Io(format!("reading the run directory {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-") && n.ends_with(".safetensors"))
        })
        .collect();
    v.sort(); // zero-padded steps sort by name
    Ok(v)
}

/// What `--resume PATH` names: a state file, or a run directory (its latest state).
pub fn resolve_resume(path: &Path) -> Result<PathBuf> {
    if path.is_dir() {
        return states_in(path)?.pop().ok_or_else(|| {
            Error::Io(format!(
                "--resume {}: the folder holds no step-*.safetensors state",
                path.display()
            ))
        });
    }
    Ok(path.to_path_buf())
}
