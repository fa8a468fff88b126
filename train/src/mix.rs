//! Mixup and CutMix of a training batch, as mmaction2 blends them
//! (`mmaction/models/utils/blending_utils.py`: `MixupBlending`, `CutmixBlending`,
//! `RandomBatchAugment`), with soft targets and the cross-entropy that takes them.
//!
//! Per batch: with probability `prob` the batch is blended (timm / SlowFast `MIXUP.PROB`), by
//! CutMix with probability `switch_prob` when both alphas are positive (mmaction2's
//! `RandomBatchAugment` over the two picks each with ½), otherwise by the one whose alpha is
//! positive. λ ~ Beta(α, α) per batch, and a random permutation π of the batch (torch.randperm):
//! - Mixup: x ← λ·x + (1 − λ)·x[π], y ← λ·y + (1 − λ)·y[π].
//! - CutMix: one box over H×W, the same for every frame and clip of the batch: cut ratio
//!   √(1 − λ), centre uniform over the pixels, clamped to the frame (`rand_bbox`); the box of
//!   every clip is replaced by clip π's, and λ becomes the kept area, 1 − box/(H·W).
//!
//! Targets are one-hot rows mixed as above, then label-smoothed as mmaction2's head does
//! (`(1 − ε)·y + ε/C`). The loss is mmaction2's `CrossEntropyLoss` on soft labels,
//! mean_b Σ_c −t_bc·log softmax(x_b)_c, composed from existing ops ([`soft_cross_entropy`]), so
//! its gradient, (softmax(x_b)·Σ_c t_bc − t_b)/B, falls out of the tape;
//! [`soft_cross_entropy_reference`] is its f64 definition.
//!
//! Randomness: each micro-batch draws from `Rng::new` of a hash of (seed, step, micro-batch), so
//! a run is the same for a seed and a resumed run needs no mixing state.
//! Layout: host batches are channels-last (B, T, H, W, 3) (source.rs).

use tubelet::{Error, Result, Rng, Tensor};

use crate::recipe::Mixup;

/// How one batch was blended (for logs and tests).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Blend {
    None,
    Mixup {
        lambda: f64,
    },
    /// Box rows y1..y2, columns x1..x2 (half-open), and the kept area's λ.
    Cutmix {
        lambda: f64,
        rows: (usize, usize),
        cols: (usize, usize),
    },
}

/// The generator of micro-batch `micro` of optimiser step `step` in a run seeded `seed`.
pub fn rng_for(seed: u64, step: u64, micro: usize) -> Rng {
    // splitmix64-style mixing of the three numbers: nearby steps get unrelated streams.
    let mut z = seed ^ 0x6D69_7875_705F_6375; // "mixup_cu"
    for v in [step, micro as u64] {
        z = (z ^ v).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    Rng::new(z)
}

/// Gamma(a, 1) by Marsaglia and Tsang (2000), with the a < 1 boost Γ(a) = Γ(a + 1)·U^(1/a).
fn gamma(a: f64, rng: &mut Rng) -> f64 {
    if a < 1.0 {
        let u = rng.uniform().max(f64::MIN_POSITIVE);
        return gamma(a + 1.0, rng) * u.powf(1.0 / a);
    }
    let d = a - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = rng.normal();
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = rng.uniform();
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// λ ~ Beta(α, α) = X / (X + Y), X, Y ~ Gamma(α).
pub fn beta(alpha: f64, rng: &mut Rng) -> f64 {
    let x = gamma(alpha, rng);
    let y = gamma(alpha, rng);
    if x + y > 0.0 {
        x / (x + y)
    } else {
        0.5
    }
}

/// A random permutation of 0..n (Fisher–Yates).
fn permutation(n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        p.swap(i, rng.below(i + 1));
    }
    p
}

/// Checks the recipe's (or the flags') mixing values, naming the field.
pub fn check(m: &Mixup) -> Result<()> {
    let ok_alpha = |a: f32| a >= 0.0 && a.is_finite();
    if !ok_alpha(m.mixup_alpha) || !ok_alpha(m.cutmix_alpha) {
        return Err(Error::Config(format!(
            "mixup alpha {} and cutmix alpha {} must be ≥ 0 (0 turns one off)",
            m.mixup_alpha, m.cutmix_alpha
        )));
    }
    for (name, p) in [("prob", m.prob), ("switch_prob", m.switch_prob)] {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::Config(format!(
                "mixup {name} must be in [0, 1], got {p}"
            )));
        }
    }
    Ok(())
}

/// Blends `data` ((B, T, H, W, 3) channels-last, one view per clip) in place and returns the
/// soft targets (B, classes), row-major, label-smoothed by `smoothing`, with how it blended.
pub fn blend(
    data: &mut [f32],
    shape: [usize; 5],
    labels: &[u32],
    classes: usize,
    m: &Mixup,
    smoothing: f32,
    rng: &mut Rng,
) -> Result<(Vec<f32>, Blend)> {
    let [b, t, h, w, ch] = shape;
    if b != labels.len() || data.len() != b * t * h * w * ch {
        return Err(Error::Shape(format!(
            "mixup: a batch of shape {shape:?} with {} values and {} labels",
            data.len(),
            labels.len()
        )));
    }
    if let Some(&y) = labels.iter().find(|&&y| y as usize >= classes) {
        return Err(Error::Config(format!(
            "mixup: label {y} of a {classes}-class head"
        )));
    }
    let blend = if rng.uniform() >= m.prob as f64 {
        Blend::None
    } else {
        let cut = match (m.mixup_alpha > 0.0, m.cutmix_alpha > 0.0) {
            (true, true) => rng.uniform() < m.switch_prob as f64,
            (false, true) => true,
            (_, false) => false,
        };
        if cut {
            let lambda = beta(m.cutmix_alpha as f64, rng);
            // mmaction2 rand_bbox: cut_w = int(W·√(1 − λ)), centre uniform, clamped.
            let r = (1.0 - lambda).sqrt();
            let (cw, chh) = ((w as f64 * r) as usize, (h as f64 * r) as usize);
            let (cx, cy) = (rng.below(w), rng.below(h));
            let cols = (cx.saturating_sub(cw / 2), (cx + cw / 2).min(w));
            let rows = (cy.saturating_sub(chh / 2), (cy + chh / 2).min(h));
            let area = (cols.1 - cols.0) * (rows.1 - rows.0);
            Blend::Cutmix {
                lambda: 1.0 - area as f64 / (h * w) as f64,
                rows,
                cols,
            }
        } else if m.mixup_alpha > 0.0 {
            Blend::Mixup {
                lambda: beta(m.mixup_alpha as f64, rng),
            }
        } else {
            Blend::None
        }
    };
    let perm = match blend {
        Blend::None => (0..b).collect(),
        _ => permutation(b, rng),
    };
    let clip = t * h * w * ch;
    let source = data.to_vec(); // x[π] reads the batch before blending
    let lambda = match blend {
        Blend::None => 1.0,
        Blend::Mixup { lambda } => {
            let l = lambda as f32;
            for (i, &j) in perm.iter().enumerate() {
                let (dst, src) = (&mut data[i * clip..(i + 1) * clip], &source[j * clip..]);
                for (d, s) in dst.iter_mut().zip(src) {
                    *d = l * *d + (1.0 - l) * s;
                }
            }
            lambda
        }
        Blend::Cutmix { lambda, rows, cols } => {
            for (i, &j) in perm.iter().enumerate() {
                for f in 0..t {
                    for y in rows.0..rows.1 {
                        // One row of the box, all channels: (x1..x2, 3).
                        let at = |n: usize| ((n * t + f) * h + y) * w * ch;
                        let (s0, s1) = (at(j) + cols.0 * ch, at(j) + cols.1 * ch);
                        let d0 = at(i) + cols.0 * ch;
                        data[d0..d0 + (s1 - s0)].copy_from_slice(&source[s0..s1]);
                    }
                }
            }
            lambda
        }
    };
    // Targets: λ·onehot(y) + (1 − λ)·onehot(y[π]), then (1 − ε)·t + ε/C.
    let (eps, c) = (smoothing as f64, classes as f64);
    let mut targets = vec![0.0f64; b * classes];
    for (i, &j) in perm.iter().enumerate() {
        targets[i * classes + labels[i] as usize] += lambda;
        targets[i * classes + labels[j] as usize] += 1.0 - lambda;
    }
    let targets = targets
        .iter()
        .map(|&v| ((1.0 - eps) * v + eps / c) as f32)
        .collect();
    Ok((targets, blend))
}

/// Cross-entropy against soft targets (B, C), mean over the batch, as mmaction2's
/// `CrossEntropyLoss` with soft labels: mean_b Σ_c t_bc·(lse_b − x_bc)
///   = mean_b (lse_b·Σ_c t_bc − Σ_c t_bc·x_bc),  lse_b = log Σ_c exp(x_bc).
/// logits (B, C) on the tape, targets (B, C) constant. The max used for the stable logsumexp is
/// detached: its shift cancels in the gradient.
pub fn soft_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if logits.rank() != 2 || targets.shape() != logits.shape() {
        return Err(Error::Shape(format!(
            "soft cross-entropy: logits {:?} and targets {:?}, expected two equal (B, C)",
            logits.shape(),
            targets.shape()
        )));
    }
    let m = logits.try_max(&[-1], true)?.detach(); // (B, 1)
    let lse = logits
        .try_sub(&m)?
        .try_exp()?
        .try_sum(&[-1], true)?
        .try_log()?
        .try_add(&m)?; // (B, 1)
    let mass = targets.try_sum(&[-1], true)?; // (B, 1): 1 for mixed one-hot rows
    let tx = targets.try_mul(logits)?.try_sum(&[-1], true)?; // (B, 1)
    lse.try_mul(&mass)?.try_sub(&tx)?.try_mean(&[0, 1], false)
}

/// The f64 reference of [`soft_cross_entropy`]: the loss and its gradient by the logits,
/// (softmax(x_b)·Σ_c t_bc − t_b)/B.
pub fn soft_cross_entropy_reference(
    logits: &[f64],
    targets: &[f64],
    classes: usize,
) -> (f64, Vec<f64>) {
    let b = logits.len() / classes;
    let mut loss = 0.0;
    let mut grad = vec![0.0; logits.len()];
    for r in 0..b {
        let row = &logits[r * classes..(r + 1) * classes];
        let t = &targets[r * classes..(r + 1) * classes];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        let mass: f64 = t.iter().sum();
        for c in 0..classes {
            loss -= t[c] * (row[c] - lse);
            grad[r * classes + c] = ((row[c] - lse).exp() * mass - t[c]) / b as f64;
        }
    }
    (loss / b as f64, grad)
}
