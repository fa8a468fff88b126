//! LayerNorm over the channel axis of a channels-first tensor x (B, C, S…) — (B, C, T, H, W) or
//! (B, C, L) — as UniFormer's patch embeds apply `nn.LayerNorm(C, eps=1e-5)` after
//! `flatten(2).transpose(1, 2)` (seed-models.md §5):
//!   y[b, :, s] = (x[b, :, s] − mean) / √(var + eps) · w + bias,   mean, var over the C channels
//! (biased variance, eps inside the root). w, bias (C); x, w and bias all get gradients.
//!
//! Why a kernel reading strided data: the model's activations stay channels-first for the
//! convolutions around the norm (patch-embed conv → LN → DPE depthwise conv). The composite
//! `x.permute([0,2,3,4,1]).layer_norm(..).permute([0,4,1,2,3])` makes two full copies forward
//! and two more backward, each as large as the activation (25 MB at UniFormer-S stage 1). Here
//! one invocation owns one column (b, s) and walks its C channels at stride S: neighbouring
//! lanes read neighbouring s, so the reads stay contiguous, and nothing is permuted.
//! Structure as in layer_norm.rs (the row layout): forward saves mean and rstd per column, dx
//! per column, dw/db as partial sums over chunks of columns, then `reduce`.
//! Kernels: shaders/layer_norm_channels_forward.wgsl, shaders/layer_norm_channels_backward.wgsl,
//! shaders/layer_norm_channels_backward_dwdb.wgsl.

use crate::autograd::apply;
use crate::error::Result;
use crate::gpu::{gpu, grid, grid_rows};
use crate::kernel;
use crate::ops::reduce::{reduce_raw, ReduceKind};
use crate::ops::Op;
use crate::reference::CpuTensor;
use crate::tensor::Tensor;

/// Columns summed by one workgroup of layer_norm_channels_backward_dwdb (64 trips a lane).
const CHUNK: usize = 256 * 64;
/// The most channels: the forward loops 3·C times per invocation, under lavapipe's 65,535.
pub const MAX_C: usize = 16_384;

/// LayerNorm over axis 1. `forward` saves the per-column mean and rstd = 1/√(var + eps).
#[derive(Clone)]
pub struct LayerNormChannels {
    pub eps: f32,
    /// f32[B·S] mean and rstd, set by `forward`.
    saved: Option<(Tensor, Tensor)>,
}

impl std::fmt::Debug for LayerNormChannels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LayerNormChannels {{ eps: {:e} }}", self.eps)
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ColumnParams {
    cols: u32,
    c: u32,
    s: u32,
    eps: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ChunkParams {
    cols: u32,
    c: u32,
    s: u32,
    chunk: u32,
    n_chunks: u32,
}

/// (B, C, S) of a channels-first shape.
fn bcs(x: &[usize]) -> (usize, usize, usize) {
    (x[0], x[1], x[2..].iter().product())
}

impl LayerNormChannels {
    pub fn new(eps: f32) -> LayerNormChannels {
        LayerNormChannels { eps, saved: None }
    }

    fn check(&self, x: &[usize], w: &[usize], b: &[usize]) -> Result<()> {
        if x.len() < 2 {
            crate::bail!(
                Shape,
                "layer_norm_channels: x must be channels-first (B, C, …), got shape {x:?}"
            );
        }
        let c = x[1];
        if w != [c] || b != [c] {
            crate::bail!(Shape, "layer_norm_channels: weight {w:?} and bias {b:?} must both be [C] = [{c}] for x of shape {x:?}");
        }
        if c == 0 || c > MAX_C {
            crate::bail!(
                Shape,
                "layer_norm_channels: C = {c} must be in 1..={MAX_C} (x of shape {x:?})"
            );
        }
        if !(self.eps >= 0.0 && self.eps.is_finite()) {
            crate::bail!(
                Config,
                "layer_norm_channels: eps must be finite and ≥ 0, got {} (x of shape {x:?})",
                self.eps
            );
        }
        if x.iter().product::<usize>() > u32::MAX as usize {
            crate::bail!(
                Shape,
                "layer_norm_channels: x of shape {x:?} has more than 2³² elements"
            );
        }
        Ok(())
    }

    /// (mean, rstd) of column (b, s) in f64.
    fn stats(&self, x: &CpuTensor, b: usize, s: usize) -> (f64, f64) {
        let (_, c, sp) = bcs(&x.shape);
        let col: Vec<f64> = (0..c).map(|k| x.data[(b * c + k) * sp + s]).collect();
        let mean = col.iter().sum::<f64>() / c as f64;
        let var = col.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / c as f64;
        (mean, 1.0 / (var + self.eps as f64).sqrt())
    }
}

impl Op for LayerNormChannels {
    fn name(&self) -> &'static str {
        "layer_norm_channels"
    }

    fn reference(&self, x: &[&CpuTensor]) -> CpuTensor {
        let (w, bias) = (x[1], x[2]);
        let (nb, c, sp) = bcs(&x[0].shape);
        let mut y = CpuTensor::zeros(&x[0].shape);
        for b in 0..nb {
            for s in 0..sp {
                let (mean, rstd) = self.stats(x[0], b, s);
                for k in 0..c {
                    let e = (b * c + k) * sp + s;
                    y.data[e] = (x[0].data[e] - mean) * rstd * w.data[k] + bias.data[k];
                }
            }
        }
        y
    }

    fn reference_backward(&self, x: &[&CpuTensor], dy: &CpuTensor) -> Vec<Option<CpuTensor>> {
        let w = x[1];
        let (nb, c, sp) = bcs(&x[0].shape);
        let mut dx = CpuTensor::zeros(&x[0].shape);
        let mut dw = CpuTensor::zeros(&[c]);
        let mut db = CpuTensor::zeros(&[c]);
        for b in 0..nb {
            for s in 0..sp {
                let (mean, rstd) = self.stats(x[0], b, s);
                let e = |k: usize| (b * c + k) * sp + s;
                let xhat: Vec<f64> = (0..c).map(|k| (x[0].data[e(k)] - mean) * rstd).collect();
                let g: Vec<f64> = (0..c).map(|k| dy.data[e(k)] * w.data[k]).collect();
                let mean_g = g.iter().sum::<f64>() / c as f64;
                let mean_gx = (0..c).map(|k| g[k] * xhat[k]).sum::<f64>() / c as f64;
                for k in 0..c {
                    dx.data[e(k)] = rstd * (g[k] - mean_g - xhat[k] * mean_gx);
                    dw.data[k] += dy.data[e(k)] * xhat[k];
                    db.data[k] += dy.data[e(k)];
                }
            }
        }
        vec![Some(dx), Some(dw), Some(db)]
    }

    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        self.check(x[0].shape(), x[1].shape(), x[2].shape())?;
        let (nb, c, sp) = bcs(x[0].shape());
        let cols = nb * sp;
        let y = Tensor::empty(x[0].shape())?;
        let mean = Tensor::empty(&[cols])?;
        let rstd = Tensor::empty(&[cols])?;
        if cols > 0 {
            let p = ColumnParams {
                cols: cols as u32,
                c: c as u32,
                s: sp as u32,
                eps: self.eps,
            };
            // (B, C, S), w (C), b (C) -> y (B, C, S), mean (B·S), rstd (B·S)
            gpu().dispatch(
                kernel!(layer_norm_channels_forward),
                &[],
                &[
                    x[0].buffer(),
                    x[1].buffer(),
                    x[2].buffer(),
                    y.buffer(),
                    mean.buffer(),
                    rstd.buffer(),
                ],
                &p,
                grid(cols, 256),
            )?;
        }
        self.saved = Some((mean, rstd));
        Ok(y)
    }

    // Per column (b, s), with x̂ = (x − mean)·rstd and g = dy ⊙ w over the channels:
    //   dx = rstd · (g − mean_c(g) − x̂ · mean_c(g ⊙ x̂))
    //   dw = Σ_{b,s} dy ⊙ x̂,   db = Σ_{b,s} dy     (reductions over B·T·H·W, chunked)
    fn backward(&self, x: &[&Tensor], _y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let Some((mean, rstd)) = &self.saved else {
            crate::bail!(
                Autograd,
                "layer_norm_channels: backward before forward (no saved mean and rstd)"
            );
        };
        let (nb, c, sp) = bcs(x[0].shape());
        let cols = nb * sp;
        if cols == 0 {
            return Ok(vec![
                Some(Tensor::empty(x[0].shape())?),
                Some(Tensor::zeros(&[c])),
                Some(Tensor::zeros(&[c])),
            ]);
        }
        let dx = if x[0].requires_grad() {
            let dx = Tensor::empty(x[0].shape())?;
            let p = ColumnParams {
                cols: cols as u32,
                c: c as u32,
                s: sp as u32,
                eps: self.eps,
            };
            // x, dy (B, C, S), w (C), mean, rstd (B·S) -> dx (B, C, S)
            gpu().dispatch(
                kernel!(layer_norm_channels_backward),
                &[],
                &[
                    x[0].buffer(),
                    x[1].buffer(),
                    mean.buffer(),
                    rstd.buffer(),
                    dy.buffer(),
                    dx.buffer(),
                ],
                &p,
                grid(cols, 256),
            )?;
            Some(dx)
        } else {
            None
        };
        if !x[1].requires_grad() && !x[2].requires_grad() {
            return Ok(vec![dx, None, None]);
        }
        let k = cols.div_ceil(CHUNK);
        let dw_part = Tensor::empty(&[c, k])?;
        let db_part = Tensor::empty(&[c, k])?;
        let p = ChunkParams {
            cols: cols as u32,
            c: c as u32,
            s: sp as u32,
            chunk: CHUNK as u32,
            n_chunks: k as u32,
        };
        // x, dy (B, C, S), mean, rstd (B·S) -> dw_part, db_part (C, K)
        gpu().dispatch(
            kernel!(layer_norm_channels_backward_dwdb),
            &[],
            &[
                x[0].buffer(),
                mean.buffer(),
                rstd.buffer(),
                dy.buffer(),
                dw_part.buffer(),
                db_part.buffer(),
            ],
            &p,
            grid_rows(c * k),
        )?;
        // (C, K) -> (C)
        let total = |part: Tensor| -> Result<Tensor> {
            Ok(if k == 1 {
                part.view(&[c])
            } else {
                reduce_raw(&part, ReduceKind::Sum, &[1])?.view(&[c])
            })
        };
        let dw = x[1].requires_grad().then(|| total(dw_part)).transpose()?;
        let db = x[2].requires_grad().then(|| total(db_part)).transpose()?;
        Ok(vec![dx, dw, db])
    }
}

impl Tensor {
    /// LayerNorm over the channels (axis 1) of a channels-first x (B, C, …), weight and bias (C):
    /// PyTorch's `LayerNorm(C)(x.flatten(2).transpose(1, 2))` transposed back, without copies.
    ///
    /// ```no_run
    /// use tubelet::Tensor;
    /// let x = Tensor::randn(&[1, 64, 8, 56, 56], 0.0, 1.0, 1).unwrap(); // UniFormer patch_embed1
    /// let (w, b) = (Tensor::ones(&[64]).param(), Tensor::zeros(&[64]).param());
    /// let y = x.layer_norm_channels(&w, &b, 1e-5); // (1, 64, 8, 56, 56)
    /// ```
    pub fn try_layer_norm_channels(
        &self,
        weight: &Tensor,
        bias: &Tensor,
        eps: f32,
    ) -> Result<Tensor> {
        apply(LayerNormChannels::new(eps), &[self, weight, bias])
    }

    pub fn layer_norm_channels(&self, weight: &Tensor, bias: &Tensor, eps: f32) -> Tensor {
        self.try_layer_norm_channels(weight, bias, eps)
            .unwrap_or_else(|e| {
                panic!(
                    "layer_norm_channels{:?} with weight {:?}, bias {:?}: {e}",
                    self.shape(),
                    weight.shape(),
                    bias.shape()
                )
            })
    }
}

#[cfg(feature = "testing")]
pub fn case(
    shape: Vec<usize>,
    eps: f32,
    shift: f64,
    seed: u64,
) -> crate::testing::Case<LayerNormChannels> {
    let mut rng = crate::Rng::new(seed);
    let c = shape[1];
    // NOTE: as in layer_norm.rs, a column of 2..8 channels can be nearly constant, and there f32
    // layer norm is ill-conditioned whatever the kernel (rounding of the mean × rstd, × rstd² in
    // dx, up to 1/eps): those columns get eps ≥ 0.05. One channel is exact (x − mean = 0).
    let eps = if (2..8).contains(&c) {
        eps.max(0.05)
    } else {
        eps
    };
    let x = CpuTensor::uniform(&shape, -2.0, 2.0, &mut rng).map(|v| v + shift);
    let w = CpuTensor::uniform(&[c], -1.5, 1.5, &mut rng);
    let b = CpuTensor::uniform(&[c], -1.0, 1.0, &mut rng);
    crate::testing::Case::new(
        LayerNormChannels::new(eps),
        vec![x, w, b],
        format!("eps {eps:e} shift {shift:.2}"),
    )
}

/// UniFormer's patch-embed norms (seed-models.md §5) at reduced sizes: (B, C, T, H, W) with odd
/// T and H·W, (B, C, L), and B·T·H·W = 2·3·109·101 = 66,054 > 65,535 columns for dw/db.
#[cfg(feature = "testing")]
pub fn seed_cases() -> Vec<crate::testing::Case<LayerNormChannels>> {
    vec![
        case(vec![1, 64, 3, 7, 9], 1e-5, 0.0, 1), // patch_embed1 (64 channels)
        case(vec![2, 128, 1, 5, 5], 1e-5, 1.0, 2), // patch_embed2, T = 1
        case(vec![2, 13, 49], 1e-5, -1.0, 3),     // (B, C, L)
        case(vec![2, 9, 3, 109, 101], 1e-5, 0.5, 4),
    ]
}

#[cfg(feature = "testing")]
pub fn test_spec() -> crate::testing::TestSpec<LayerNormChannels> {
    use crate::testing::{dim_strategy, shape_strategy, TestSpec, Tol};
    use proptest::prelude::*;
    // (B, C, rest…) of rank 2..5: the rest is T, H, W (or L, or nothing).
    fn shapes(max: usize) -> BoxedStrategy<Vec<usize>> {
        (1usize..=3, dim_strategy(), shape_strategy(0..=3, max))
            .prop_map(move |(b, c, rest)| {
                let mut s = vec![b, c];
                s.extend(rest);
                while s.iter().product::<usize>() > max {
                    let i = (0..s.len()).max_by_key(|&i| s[i]).unwrap();
                    s[i] = (s[i] / 2).max(1);
                }
                s
            })
            .boxed()
    }
    let eps = prop_oneof![Just(1e-5f32), Just(1e-6f32), 0.01f32..1.0];
    TestSpec {
        cases: prop_oneof![
            5 => (shapes(200_000), eps.clone(), -3.0f64..3.0, any::<u64>()).prop_map(|(s, e, sh, seed)| case(s, e, sh, seed)),
            1 => prop::sample::select(seed_cases()),
        ]
        .boxed(),
        small_cases: (shapes(48), eps, -3.0f64..3.0, any::<u64>())
            .prop_map(|(s, e, sh, seed)| case(s, e, sh, seed))
            .boxed(),
        // f32 column mean and variance of up to 257 channels of |x| ≤ 5, times rstd and |w| ≤ 1.5.
        forward_tol: Tol::new(1e-5, 1e-5, "f32 column mean/variance, scaled by rstd·|w|"),
        // dw, db: f32 sums over up to 2e5 columns (64 a lane, a tree, then reduce) of |dy·x̂| ≲ 2;
        // dx: f32 channel means of g and g·x̂, scaled by rstd.
        backward_tol: Tol::new(2e-4, 1e-4, "f32 sums over up to 2e5 columns; channel means × rstd"),
    }
}
