//! The optimiser side of a recipe: which parameters decay and at which learning-rate multiple
//! (the official configs' parameter-wise rules), the optimiser itself (AdamW or SGD from
//! tubelet::optim, one instance per learning-rate multiple), gradient clipping by global norm,
//! and the label-smoothed cross-entropy.
//!
//! Parameter-wise rules, by code base:
//! - mmaction2 `SwinOptimWrapperConstructor` (Video Swin): every key of `paramwise_cfg` found in
//!   the parameter's name multiplies its lr and decay (`absolute_pos_embed`,
//!   `relative_position_bias_table`, `norm`: decay ×0; `backbone`: lr ×0.1). The original
//!   Video Swin repository used mmcv's `custom_keys`, where only the longest matching key
//!   applies (so there backbone norms keep their decay); we follow mmaction2.
//! - SlowFast `ZERO_WD_1D_PARAM` (MViT, UniFormer): rank ≤ 1 tensors (biases, norm scales) get
//!   no decay; UniFormer's `no_weight_decay()` also names `pos_embed` and `cls_token`.
//! - SlowFast without it (TimeSformer): everything decays (only BatchNorm, which it lacks, not).
//! - TSM `get_optim_policies` (with `--npb`): BatchNorm (the ResNet's rank-1 tensors) no decay;
//!   `new_fc.weight` lr ×5, `new_fc.bias` lr ×10 and no decay (`fc_lr5`).
//! - tubelet's synthetic-set rule (`AdamW::new`): rank < 2 and `pos`/`cls`/`table` names no decay.
//!
//! Gradient clipping computes ‖g‖ over all gradients on the GPU (one sum of squares per tensor,
//! summed into one scalar) and reads that one value back; the scale is then applied to each
//! gradient in place. The same value feeds the NaN guard and the logs.

use tubelet::autograd::Grads;
use tubelet::optim::{AdamW, AdamWConfig, Sgd, SgdConfig};
use tubelet::{Error, Indices, Result, Tensor};

/// Which parameters decay and at which lr multiple.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamPolicy {
    /// mmaction2's multiplicative keys: (substring, lr_mult, decay_mult).
    Keys(Vec<(String, f64, f64)>),
    /// SlowFast `ZERO_WD_1D_PARAM`, plus names listed as `no_weight_decay` (substrings).
    ZeroWd1d { skip: Vec<String> },
    /// Every parameter decays at lr ×1.
    All,
    /// TSM's policies.
    Tsm,
    /// tubelet's rank/name rule for the synthetic set.
    Tubelet,
}

impl ParamPolicy {
    /// (lr multiple, decay multiple) of parameter `name` of rank `rank`.
    pub fn rule(&self, name: &str, rank: usize) -> (f64, f64) {
        match self {
            ParamPolicy::Keys(keys) => keys
                .iter()
                .filter(|(k, _, _)| name.contains(k.as_str()))
                .fold((1.0, 1.0), |(lr, wd), (_, l, d)| (lr * l, wd * d)),
            ParamPolicy::ZeroWd1d { skip } => {
                let off = rank <= 1
                    || name.ends_with(".bias")
                    || skip.iter().any(|s| name.contains(s.as_str()));
                (1.0, if off { 0.0 } else { 1.0 })
            }
            ParamPolicy::All => (1.0, 1.0),
            ParamPolicy::Tsm => {
                if name.ends_with("new_fc.weight") {
                    (5.0, 1.0)
                } else if name.ends_with("new_fc.bias") {
                    (10.0, 0.0)
                } else if rank <= 1 {
                    (1.0, 0.0)
                } else {
                    (1.0, 1.0)
                }
            }
            ParamPolicy::Tubelet => {
                let l = name.to_lowercase();
                let decay = rank >= 2 && !["pos", "cls", "table"].iter().any(|k| l.contains(k));
                (1.0, if decay { 1.0 } else { 0.0 })
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ParamPolicy::Keys(k) => {
                let parts: Vec<String> = k
                    .iter()
                    .map(|(s, l, d)| format!("'{s}': lr×{l} decay×{d}"))
                    .collect();
                format!(
                    "parameter-wise (products of matching keys): {}",
                    parts.join(", ")
                )
            }
            ParamPolicy::ZeroWd1d { skip } if skip.is_empty() => {
                "no decay on rank-1 tensors (biases, norms)".into()
            }
            ParamPolicy::ZeroWd1d { skip } => format!(
                "no decay on rank-1 tensors (biases, norms) and {}",
                skip.join(", ")
            ),
            ParamPolicy::All => "every parameter decays".into(),
            ParamPolicy::Tsm => {
                "TSM policies: BatchNorm no decay; new_fc.weight lr×5; new_fc.bias lr×10, no decay"
                    .into()
            }
            ParamPolicy::Tubelet => {
                "no decay on rank < 2 tensors and pos/cls/table embeddings".into()
            }
        }
    }
}

/// The optimiser of a recipe.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerKind {
    AdamW {
        beta1: f32,
        beta2: f32,
        eps: f32,
    },
    Sgd {
        momentum: f32,
        nesterov: bool,
        dampening: f32,
    },
}

impl OptimizerKind {
    pub fn describe(&self) -> String {
        match self {
            OptimizerKind::AdamW { beta1, beta2, eps } => {
                format!("AdamW (betas {beta1}, {beta2}; eps {eps:e})")
            }
            OptimizerKind::Sgd {
                momentum,
                nesterov,
                dampening,
            } => format!(
                "SGD (momentum {momentum}{}{})",
                if *nesterov { ", Nesterov" } else { "" },
                if *dampening != 0.0 {
                    format!(", dampening {dampening}")
                } else {
                    String::new()
                }
            ),
        }
    }
}

enum Inner {
    AdamW(AdamW),
    Sgd(Sgd),
}

/// One group: the parameters sharing a learning-rate multiple.
struct Group {
    lr_mult: f64,
    inner: Inner,
}

/// A recipe's optimiser over a model's parameters: groups by lr multiple, decay per parameter.
pub struct Optimiser {
    groups: Vec<Group>,
    kind: OptimizerKind,
    weight_decay: f32,
    /// (name, lr multiple, decays) of every parameter, in the model's order.
    table: Vec<(String, f64, bool)>,
}

impl Optimiser {
    pub fn new(
        params: &[(String, Tensor)],
        kind: OptimizerKind,
        weight_decay: f32,
        policy: &ParamPolicy,
    ) -> Result<Optimiser> {
        if !(weight_decay >= 0.0 && weight_decay.is_finite()) {
            return Err(Error::Config(format!(
                "weight_decay must be ≥ 0, got {weight_decay}"
            )));
        }
        // (lr multiple, its parameters as (name, tensor, decays)).
        type ByMult = Vec<(f64, Vec<(String, Tensor, bool)>)>;
        let mut by_mult: ByMult = Vec::new();
        let mut table = Vec::new();
        for (name, t) in params {
            let (lr, wd) = policy.rule(name, t.rank());
            let decay = wd != 0.0 && weight_decay != 0.0;
            table.push((name.clone(), lr, decay));
            match by_mult.iter_mut().find(|(m, _)| *m == lr) {
                Some((_, v)) => v.push((name.clone(), t.clone(), decay)),
                None => by_mult.push((lr, vec![(name.clone(), t.clone(), decay)])),
            }
        }
        let groups = by_mult
            .into_iter()
            .map(|(lr_mult, ps)| {
                let inner = match kind {
                    OptimizerKind::AdamW { beta1, beta2, eps } => Inner::AdamW(AdamW::with_decay(
                        ps,
                        AdamWConfig {
                            lr: 0.0,
                            beta1,
                            beta2,
                            eps,
                            weight_decay,
                        },
                    )?),
                    OptimizerKind::Sgd {
                        momentum,
                        nesterov,
                        dampening,
                    } => Inner::Sgd(Sgd::new(
                        ps,
                        SgdConfig {
                            lr: 0.0,
                            momentum,
                            dampening,
                            weight_decay,
                            nesterov,
                        },
                    )?),
                };
                Ok(Group { lr_mult, inner })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Optimiser {
            groups,
            kind,
            weight_decay,
            table,
        })
    }

    /// One update at base learning rate `lr` (each group at lr × its multiple).
    pub fn step(&mut self, grads: &Grads, lr: f64) -> Result<()> {
        for g in &mut self.groups {
            let glr = (lr * g.lr_mult) as f32;
            match &mut g.inner {
                Inner::AdamW(o) => {
                    o.config.lr = glr;
                    o.step(grads)?;
                }
                Inner::Sgd(o) => {
                    o.config.lr = glr;
                    o.step(grads)?;
                }
            }
        }
        Ok(())
    }

    /// (name, lr multiple, decays) of every parameter.
    pub fn table(&self) -> &[(String, f64, bool)] {
        &self.table
    }

    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }

    pub fn weight_decay(&self) -> f32 {
        self.weight_decay
    }

    /// The AdamW instances, one per lr multiple (for the checkpoint's optimiser state).
    pub fn adamw_groups(&mut self) -> Vec<(f64, &mut AdamW)> {
        self.groups
            .iter_mut()
            .filter_map(|g| match &mut g.inner {
                Inner::AdamW(o) => Some((g.lr_mult, o)),
                Inner::Sgd(_) => None,
            })
            .collect()
    }

    /// The SGD instances, one per lr multiple (for the checkpoint's optimiser state).
    pub fn sgd_groups(&mut self) -> Vec<(f64, &mut Sgd)> {
        self.groups
            .iter_mut()
            .filter_map(|g| match &mut g.inner {
                Inner::Sgd(o) => Some((g.lr_mult, o)),
                Inner::AdamW(_) => None,
            })
            .collect()
    }
}

/// Σ‖g‖² over the gradients of `params` as one GPU scalar (shape [1]); nothing is read back.
pub fn grad_sq_norm(params: &[(String, Tensor)], grads: &Grads) -> Result<Tensor> {
    let mut total: Option<Tensor> = None;
    for (_, p) in params {
        let Some(g) = grads.get(p) else { continue };
        let s = g
            .try_square()?
            .try_reshape(&[g.numel()])?
            .try_sum(&[0], true)?; // (1)
        total = Some(match total {
            None => s,
            Some(t) => t.try_add(&s)?,
        });
    }
    match total {
        Some(t) => Ok(t),
        None => Tensor::try_full(&[1], 0.0),
    }
}

/// PyTorch's `clip_grad_norm_`: given the global norm (already read back), scales every gradient
/// by `max_norm / (norm + 1e-6)` when that is below 1. Returns the factor applied (1 if none).
pub fn clip_grads(
    params: &[(String, Tensor)],
    grads: &Grads,
    norm: f32,
    max_norm: f32,
) -> Result<f32> {
    let coef = max_norm / (norm + 1e-6);
    if !(coef < 1.0) {
        return Ok(1.0);
    }
    for (_, p) in params {
        if let Some(g) = grads.get(p) {
            g.assign(&g.try_mul_scalar(coef)?)?;
        }
    }
    Ok(coef)
}

/// Σ (p·0) over all parameters: 0 when every value is finite, NaN otherwise (0·±∞ = NaN), as one
/// GPU scalar (shape [1]) — a finiteness check of the whole model at the cost of one read.
pub fn params_nonfinite_probe(params: &[(String, Tensor)]) -> Result<Tensor> {
    let mut total: Option<Tensor> = None;
    for (_, p) in params {
        let s = p
            .try_mul_scalar(0.0)?
            .try_reshape(&[p.numel()])?
            .try_sum(&[0], true)?;
        total = Some(match total {
            None => s,
            Some(t) => t.try_add(&s)?,
        });
    }
    match total {
        Some(t) => Ok(t),
        None => Tensor::try_full(&[1], 0.0),
    }
}

/// Cross-entropy with label smoothing ε, as PyTorch's `CrossEntropyLoss(label_smoothing=ε)` and
/// mmaction2's `label_smooth_eps` (targets (1 − ε)·onehot + ε/C), mean over the batch:
///   (1 − ε)·CE(x, y) + ε · mean_b( logsumexp(x_b) − mean_c(x_bc) ).
/// logits (B, C); composed from existing ops, so it has a backward. The max used for the stable
/// logsumexp is detached: the shift cancels in the gradient.
pub fn smoothed_cross_entropy(logits: &Tensor, labels: &Indices, eps: f32) -> Result<Tensor> {
    let ce = logits.try_cross_entropy(labels)?;
    if eps == 0.0 {
        return Ok(ce);
    }
    if !(0.0..=1.0).contains(&eps) {
        return Err(Error::Config(format!(
            "label smoothing must be in [0, 1], got {eps}"
        )));
    }
    let m = logits.try_max(&[-1], true)?.detach(); // (B, 1)
    let lse = logits
        .try_sub(&m)?
        .try_exp()?
        .try_sum(&[-1], true)?
        .try_log()?
        .try_add(&m)?; // (B, 1)
    let uniform = lse
        .try_mean(&[0, 1], false)?
        .try_sub(&logits.try_mean(&[0, 1], false)?)?; // mean_b lse − mean_bc x
    ce.try_mul_scalar(1.0 - eps)?
        .try_add(&uniform.try_mul_scalar(eps)?)
}

/// The f64 reference of [`smoothed_cross_entropy`] for the tests.
pub fn smoothed_cross_entropy_reference(
    logits: &[f64],
    classes: usize,
    labels: &[u32],
    eps: f64,
) -> f64 {
    let mut total = 0.0;
    for (row, &y) in logits.chunks(classes).zip(labels) {
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        let logp: Vec<f64> = row.iter().map(|v| v - lse).collect();
        let target = |c: usize| (1.0 - eps) * f64::from(c == y as usize) + eps / classes as f64;
        total -= (0..classes).map(|c| target(c) * logp[c]).sum::<f64>();
    }
    total / labels.len() as f64
}
