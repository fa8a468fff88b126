//! Learning-rate schedules of the papers' recipes, evaluated per iteration at a fractional epoch
//! `e = epoch + iteration / iterations_per_epoch` (so a run resumed mid-epoch gets the same lr).
//!
//! Each official code base has its own closed form; they are written out here, not unified,
//! because the differences (where the warm-up starts, whether the cosine counts from 0 or from
//! the end of the warm-up, whether it moves per epoch or per iteration) change the numbers:
//! - mmengine (mmaction2, Video Swin): `LinearLR(start_factor, end=W, convert_to_iter_based)`
//!   times `CosineAnnealingLR(T_max, eta_min, by_epoch=True)`: the warm-up factor moves per
//!   iteration, the cosine once per epoch, and the two multiply.
//! - SlowFast (MViT, UniFormer, TimeSformer): `slowfast/utils/lr_policy.py::get_lr_at_epoch`:
//!   a line from `WARMUP_START_LR` to the policy's value at `WARMUP_EPOCHS`, then the policy
//!   (cosine with `COSINE_AFTER_WARMUP` counts from the warm-up's end; `steps_with_relative_lrs`).
//! - scenic (ViViT): `constant * cosine_decay * linear_warmup`, per step, the cosine over all steps.
//! - TSM `main.py::adjust_learning_rate('step')`: ×0.1 at each of `lr_steps`, per epoch.
//! - tubelet's synthetic-set schedule (`tubelet train` with no arguments): warm-up `(s+1)/W`,
//!   then cosine to 0 over the remaining steps, in f32 exactly as it always was.
//!
//! Tests: train/tests/schedule.rs checks values of each against the formulas above.

use std::f64::consts::PI;

/// How the learning rate rises at the start.
#[derive(Clone, Debug, PartialEq)]
pub enum Warmup {
    None,
    /// mmengine `LinearLR` / scenic `linear_warmup`: the decay's lr times a factor rising
    /// linearly from `start_factor` at e = 0 to 1 at e = `epochs` (per iteration).
    Factor {
        epochs: f64,
        start_factor: f64,
    },
    /// SlowFast: a line from `start_lr` at e = 0 to the decay's value at e = `epochs`.
    FromLr {
        epochs: f64,
        start_lr: f64,
    },
}

/// How the learning rate falls.
#[derive(Clone, Debug, PartialEq)]
pub enum Decay {
    Constant,
    /// Half cosine from `base_lr` to `end_lr`. `by_epoch`: evaluated at ⌊e⌋ (mmengine's epoch-based
    /// `CosineAnnealingLR`); `after_warmup`: the cosine spans [warm-up end, total] (SlowFast's
    /// `COSINE_AFTER_WARMUP`), else [0, total].
    Cosine {
        end_lr: f64,
        by_epoch: bool,
        after_warmup: bool,
    },
    /// `base_lr · factors[i]` from epoch `epochs[i]` on (the last one whose start has passed);
    /// before `epochs[0]` (if it is above 0) the factor is 1. Evaluated at ⌊e⌋ when `by_epoch`.
    Steps {
        epochs: Vec<f64>,
        factors: Vec<f64>,
        by_epoch: bool,
    },
}

/// A whole schedule: lr at any fractional epoch of a run of `total_epochs`.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub base_lr: f64,
    pub warmup: Warmup,
    pub decay: Decay,
    pub total_epochs: f64,
}

impl Schedule {
    /// The learning rate at fractional epoch `e` (0 ≤ e ≤ total).
    pub fn lr(&self, e: f64) -> f64 {
        let decay = |e: f64| self.decay_at(e);
        match self.warmup {
            Warmup::None => decay(e),
            Warmup::Factor {
                epochs,
                start_factor,
            } => {
                let f = if epochs > 0.0 {
                    (e / epochs).min(1.0)
                } else {
                    1.0
                };
                decay(e) * (start_factor + (1.0 - start_factor) * f)
            }
            Warmup::FromLr { epochs, start_lr } => {
                if e < epochs {
                    let end = decay(epochs);
                    start_lr + (end - start_lr) * e / epochs
                } else {
                    decay(e)
                }
            }
        }
    }

    /// The learning rate at optimiser step `step` (0-based) of a run with `iters_per_epoch`.
    pub fn lr_at_step(&self, step: u64, iters_per_epoch: u64) -> f64 {
        self.lr(step as f64 / iters_per_epoch.max(1) as f64)
    }

    fn warmup_epochs(&self) -> f64 {
        match self.warmup {
            Warmup::None => 0.0,
            Warmup::Factor { epochs, .. } | Warmup::FromLr { epochs, .. } => epochs,
        }
    }

    fn decay_at(&self, e: f64) -> f64 {
        match &self.decay {
            Decay::Constant => self.base_lr,
            Decay::Cosine {
                end_lr,
                by_epoch,
                after_warmup,
            } => {
                let e = if *by_epoch { e.floor() } else { e };
                let start = if *after_warmup {
                    self.warmup_epochs()
                } else {
                    0.0
                };
                let span = (self.total_epochs - start).max(f64::MIN_POSITIVE);
                let t = ((e - start) / span).clamp(0.0, 1.0);
                end_lr + (self.base_lr - end_lr) * 0.5 * (1.0 + (PI * t).cos())
            }
            Decay::Steps {
                epochs,
                factors,
                by_epoch,
            } => {
                let e = if *by_epoch { e.floor() } else { e };
                let mut f = 1.0;
                for (s, k) in epochs.iter().zip(factors) {
                    if e >= *s {
                        f = *k;
                    }
                }
                self.base_lr * f
            }
        }
    }

    /// One line for logs and `tubelet models --recipe`.
    pub fn describe(&self) -> String {
        let warm = match self.warmup {
            Warmup::None => "no warm-up".to_string(),
            Warmup::Factor {
                epochs,
                start_factor,
            } => format!("linear warm-up ×{start_factor}→×1 over {epochs} epochs"),
            Warmup::FromLr { epochs, start_lr } => {
                format!("linear warm-up from {start_lr:e} over {epochs} epochs")
            }
        };
        let decay = match &self.decay {
            Decay::Constant => "constant".to_string(),
            Decay::Cosine {
                end_lr,
                by_epoch,
                after_warmup,
            } => format!(
                "cosine to {end_lr}{}{}",
                if *after_warmup {
                    " after the warm-up"
                } else {
                    ""
                },
                if *by_epoch {
                    ", stepped per epoch"
                } else {
                    ", per iteration"
                }
            ),
            Decay::Steps {
                epochs, factors, ..
            } => {
                let s: Vec<String> = epochs
                    .iter()
                    .zip(factors)
                    .map(|(e, f)| format!("×{f} from epoch {e}"))
                    .collect();
                format!("steps: {}", s.join(", "))
            }
        };
        format!(
            "base lr {:e}; {warm}; {decay}; {} epochs",
            self.base_lr, self.total_epochs
        )
    }
}

/// tubelet's schedule for the synthetic set, computed in f32 as `tubelet train` always has (so a
/// run with no arguments gives the same weights as before): warm-up `peak·(s+1)/W`, then a half
/// cosine from `peak` to 0 over the remaining `steps − W`.
pub fn synthetic_lr(step: u32, steps: u32, warmup: u32, peak: f32) -> f32 {
    if step < warmup {
        return peak * (step + 1) as f32 / warmup as f32;
    }
    let t = (step - warmup) as f32 / (steps - warmup).max(1) as f32;
    peak * 0.5 * (1.0 + (std::f32::consts::PI * t).cos())
}

/// The schedule a run follows: a paper's (by fractional epoch), or tubelet's synthetic-set one
/// (by step, in f32).
#[derive(Clone, Debug, PartialEq)]
pub enum LrSchedule {
    Paper(Schedule),
    Synthetic {
        peak: f32,
        warmup_steps: u32,
        total_steps: u32,
    },
}

impl LrSchedule {
    /// The learning rate of optimiser step `step` (0-based).
    pub fn lr_at_step(&self, step: u64, iters_per_epoch: u64) -> f64 {
        match self {
            LrSchedule::Paper(s) => s.lr_at_step(step, iters_per_epoch),
            LrSchedule::Synthetic {
                peak,
                warmup_steps,
                total_steps,
            } => synthetic_lr(
                step as u32,
                *total_steps,
                (*warmup_steps).min(*total_steps),
                *peak,
            ) as f64,
        }
    }

    pub fn base_lr(&self) -> f64 {
        match self {
            LrSchedule::Paper(s) => s.base_lr,
            LrSchedule::Synthetic { peak, .. } => *peak as f64,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            LrSchedule::Paper(s) => s.describe(),
            LrSchedule::Synthetic { peak, warmup_steps, total_steps } => format!(
                "peak lr {peak:e}; warm-up (s+1)/{warmup_steps} over {warmup_steps} steps; cosine to 0 by step; {total_steps} steps"
            ),
        }
    }
}
