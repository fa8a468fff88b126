//! Layer normalisation over the last axis (Ba, Kiros & Hinton 2016, arXiv:1607.06450), with
//! PyTorch `nn.LayerNorm` / Flax `nn.LayerNorm` semantics (biased variance, eps inside the root):
//!   y = (x − mean) / √(var + eps) · w + b,   mean, var over the last axis C
//! Inputs x (..., C), weight w (C), bias b (C); all three get gradients.
//! Kernels: shaders/layer_norm_forward.wgsl (one workgroup per row; saves mean and rstd),
//! shaders/layer_norm_backward.wgsl (dx, one workgroup per row),
//! shaders/layer_norm_backward_dwdb.wgsl (partial column sums over chunks of ROW_CHUNK rows,
//! then summed by `reduce`: deterministic, no atomics, short loops for any number of rows).

use crate::autograd::apply;
use crate::error::Result;
use crate::gpu::{gpu, grid, grid_rows};
use crate::kernel;
use crate::ops::reduce::{reduce_raw, ReduceKind};
use crate::ops::softmax::{check_row, row_wg, rows_and_c};
use crate::ops::Op;
use crate::reference::CpuTensor;
use crate::tensor::Tensor;

/// Rows summed by one invocation of layer_norm_backward_dwdb (its loop trip count).
pub const ROW_CHUNK: usize = 64;

/// LayerNorm over the last axis. `forward` saves the per-row mean and rstd = 1/√(var + eps).
#[derive(Clone)]
pub struct LayerNorm {
    pub eps: f32,
    /// f32[ROWS] mean and rstd, set by `forward`.
    saved: Option<(Tensor, Tensor)>,
}

impl std::fmt::Debug for LayerNorm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LayerNorm {{ eps: {:e} }}", self.eps)
    }
}

impl LayerNorm {
    pub fn new(eps: f32) -> LayerNorm {
        LayerNorm { eps, saved: None }
    }

    /// The argument checks of `try_layer_norm`: errors name the shapes and eps.
    fn check(&self, x: &[usize], w: &[usize], b: &[usize]) -> Result<()> {
        let Some(&c) = x.last() else {
            crate::bail!(
                Shape,
                "layer_norm: x must have a last axis to normalise, got shape []"
            );
        };
        if w != [c] || b != [c] {
            crate::bail!(
                Shape,
                "layer_norm: weight {w:?} and bias {b:?} must both be [C] = [{c}] for x of shape {x:?}"
            );
        }
        if !(self.eps >= 0.0 && self.eps.is_finite()) {
            crate::bail!(
                Config,
                "layer_norm: eps must be finite and ≥ 0, got {} (x of shape {x:?})",
                self.eps
            );
        }
        check_row("layer_norm", x)
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RowParams {
    rows: u32,
    c: u32,
    eps: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ColumnParams {
    rows: u32,
    c: u32,
    chunk: u32,
    n_chunks: u32,
}

/// Row r's (mean, rstd) in f64.
fn row_stats(row: &[f64], eps: f64) -> (f64, f64) {
    let c = row.len() as f64;
    let mean = row.iter().sum::<f64>() / c;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / c;
    (mean, 1.0 / (var + eps).sqrt())
}

impl Op for LayerNorm {
    fn name(&self) -> &'static str {
        "layer_norm"
    }

    fn reference(&self, x: &[&CpuTensor]) -> CpuTensor {
        let (w, b) = (x[1], x[2]);
        let (rows, c) = rows_and_c(&x[0].shape);
        let mut y = CpuTensor::zeros(&x[0].shape);
        for r in 0..rows {
            let row = &x[0].data[r * c..(r + 1) * c];
            let (mean, rstd) = row_stats(row, self.eps as f64);
            for j in 0..c {
                y.data[r * c + j] = (row[j] - mean) * rstd * w.data[j] + b.data[j];
            }
        }
        y
    }

    fn reference_backward(&self, x: &[&CpuTensor], dy: &CpuTensor) -> Vec<Option<CpuTensor>> {
        let w = x[1];
        let (rows, c) = rows_and_c(&x[0].shape);
        let mut dx = CpuTensor::zeros(&x[0].shape);
        let mut dw = CpuTensor::zeros(&[c]);
        let mut db = CpuTensor::zeros(&[c]);
        for r in 0..rows {
            let row = &x[0].data[r * c..(r + 1) * c];
            let (mean, rstd) = row_stats(row, self.eps as f64);
            let xhat: Vec<f64> = row.iter().map(|v| (v - mean) * rstd).collect();
            let g: Vec<f64> = (0..c).map(|j| dy.data[r * c + j] * w.data[j]).collect();
            let mean_g = g.iter().sum::<f64>() / c as f64;
            let mean_gx = (0..c).map(|j| g[j] * xhat[j]).sum::<f64>() / c as f64;
            for j in 0..c {
                dx.data[r * c + j] = rstd * (g[j] - mean_g - xhat[j] * mean_gx);
                dw.data[j] += dy.data[r * c + j] * xhat[j];
                db.data[j] += dy.data[r * c + j];
            }
        }
        vec![Some(dx), Some(dw), Some(db)]
    }

    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        self.check(x[0].shape(), x[1].shape(), x[2].shape())?;
        let (rows, c) = rows_and_c(x[0].shape());
        let y = Tensor::empty(x[0].shape())?;
        let mean = Tensor::empty(&[rows])?;
        let rstd = Tensor::empty(&[rows])?;
        let p = RowParams {
            rows: rows as u32,
            c: c as u32,
            eps: self.eps,
        };
        if rows > 0 {
            // (ROWS, C), w (C), b (C) -> y (ROWS, C), mean (ROWS), rstd (ROWS)
            gpu().dispatch(
                kernel!(layer_norm_forward),
                &[("WG", row_wg(c) as f64)],
                &[
                    x[0].buffer(),
                    x[1].buffer(),
                    x[2].buffer(),
                    y.buffer(),
                    mean.buffer(),
                    rstd.buffer(),
                ],
                &p,
                grid_rows(rows),
            )?;
        }
        self.saved = Some((mean, rstd));
        Ok(y)
    }

    // With x̂ = (x − mean)·rstd and g = dy ⊙ w, per row:
    //   dx = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂))
    //   dw = Σ_rows dy ⊙ x̂,   db = Σ_rows dy
    fn backward(&self, x: &[&Tensor], _y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let Some((mean, rstd)) = &self.saved else {
            crate::bail!(
                Autograd,
                "layer_norm: backward before forward (no saved mean and rstd)"
            );
        };
        let (rows, c) = rows_and_c(x[0].shape());
        if rows == 0 {
            return Ok(vec![
                Some(Tensor::empty(x[0].shape())?),
                Some(Tensor::zeros(&[c])),
                Some(Tensor::zeros(&[c])),
            ]);
        }
        let dx = if x[0].requires_grad() {
            let dx = Tensor::empty(x[0].shape())?;
            let p = RowParams {
                rows: rows as u32,
                c: c as u32,
                eps: self.eps,
            };
            // x, dy (ROWS, C), w (C), mean, rstd (ROWS) -> dx (ROWS, C)
            gpu().dispatch(
                kernel!(layer_norm_backward),
                &[("WG", row_wg(c) as f64)],
                &[
                    x[0].buffer(),
                    x[1].buffer(),
                    mean.buffer(),
                    rstd.buffer(),
                    dy.buffer(),
                    dx.buffer(),
                ],
                &p,
                grid_rows(rows),
            )?;
            Some(dx)
        } else {
            None
        };
        if !x[1].requires_grad() && !x[2].requires_grad() {
            return Ok(vec![dx, None, None]);
        }
        let k = rows.div_ceil(ROW_CHUNK);
        let dw_part = Tensor::empty(&[k, c])?;
        let db_part = Tensor::empty(&[k, c])?;
        let p = ColumnParams {
            rows: rows as u32,
            c: c as u32,
            chunk: ROW_CHUNK as u32,
            n_chunks: k as u32,
        };
        // x, dy (ROWS, C), mean, rstd (ROWS) -> dw_part, db_part (K, C)
        gpu().dispatch(
            kernel!(layer_norm_backward_dwdb),
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
            grid(k * c, 256),
        )?;
        // (K, C) -> (C); reduce chunks the K axis again if it is long.
        let total = |part: Tensor| -> Result<Tensor> {
            Ok(if k == 1 {
                part.view(&[c])
            } else {
                reduce_raw(&part, ReduceKind::Sum, &[0])?.view(&[c])
            })
        };
        let dw = x[1].requires_grad().then(|| total(dw_part)).transpose()?;
        let db = x[2].requires_grad().then(|| total(db_part)).transpose()?;
        Ok(vec![dx, dw, db])
    }
}

impl Tensor {
    /// LayerNorm over the last axis: (x − mean) / √(var + eps) · weight + bias, biased variance
    /// (PyTorch `F.layer_norm(x, (C,), weight, bias, eps)`). x (..., C), weight and bias (C).
    ///
    /// ```no_run
    /// use tubelet::Tensor;
    /// let x = Tensor::randn(&[2, 8, 768], 0.0, 1.0, 1).unwrap();
    /// let (w, b) = (Tensor::ones(&[768]).param(), Tensor::zeros(&[768]).param());
    /// let y = x.layer_norm(&w, &b, 1e-6); // (2, 8, 768)
    /// ```
    pub fn try_layer_norm(&self, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
        apply(LayerNorm::new(eps), &[self, weight, bias])
    }

    /// LayerNorm over the last axis; see [`Tensor::try_layer_norm`].
    pub fn layer_norm(&self, weight: &Tensor, bias: &Tensor, eps: f32) -> Tensor {
        self.try_layer_norm(weight, bias, eps).unwrap_or_else(|e| {
            panic!(
                "layer_norm{:?} with weight {:?}, bias {:?}: {e}",
                self.shape(),
                weight.shape(),
                bias.shape()
            )
        })
    }
}

#[cfg(feature = "testing")]
pub fn test_spec() -> crate::testing::TestSpec<LayerNorm> {
    use crate::testing::{shape_strategy, Case, TestSpec, Tol};
    use proptest::prelude::*;
    fn case(shape: Vec<usize>, eps: f32, shift: f64, seed: u64) -> Case<LayerNorm> {
        let mut rng = crate::Rng::new(seed);
        let c = *shape.last().unwrap();
        // NOTE: a random row of 2..8 elements can be nearly constant, and there f32 layer norm
        // is ill-conditioned whatever the kernel: the mean's rounding (ulp(|x|)/2) reaches x̂
        // multiplied by rstd and dx by rstd², up to 1/eps. Those rows get eps ≥ 0.05 (rstd ≤ 4.5);
        // rows of one element are exact (x − mean = 0), rows of ≥ 8 are never near-constant.
        let eps = if (2..8).contains(&c) {
            eps.max(0.05)
        } else {
            eps
        };
        let x = CpuTensor::uniform(&shape, -2.0, 2.0, &mut rng).map(|v| v + shift);
        let w = CpuTensor::uniform(&[c], -1.5, 1.5, &mut rng);
        let b = CpuTensor::uniform(&[c], -1.0, 1.0, &mut rng);
        Case::new(
            LayerNorm::new(eps),
            vec![x, w, b],
            format!("eps {eps:e} shift {shift:.2}"),
        )
    }
    // The seed models' eps (1e-5 PyTorch, 1e-6 Flax / timm) and larger ones.
    let eps = prop_oneof![Just(1e-5f32), Just(1e-6f32), 0.01f32..1.0];
    let shapes = prop_oneof![
        6 => shape_strategy(1..=4, 200_000),
        // long rows: several strided trips per lane
        1 => (1usize..=3, 10_000usize..=70_000).prop_map(|(r, c)| vec![r, c]),
        // more than 65,535 rows: folded row grid; dw/db take many chunks and a second pass
        1 => (65_536usize..=70_000, 1usize..=3).prop_map(|(r, c)| vec![r, c]),
    ];
    TestSpec {
        cases: (shapes, eps.clone(), -3.0f64..3.0, any::<u64>())
            .prop_map(|(s, e, sh, seed)| case(s, e, sh, seed))
            .boxed(),
        small_cases: (shape_strategy(1..=3, 48), eps, -3.0f64..3.0, any::<u64>())
            .prop_map(|(s, e, sh, seed)| case(s, e, sh, seed))
            .boxed(),
        // f32 row mean and variance of up to 7e4 terms of |x| ≤ 5, times rstd and |w| ≤ 1.5.
        forward_tol: Tol::new(1e-5, 1e-5, "f32 row mean/variance, scaled by rstd·|w|"),
        // dw, db: f32 sums over up to 7e4 rows (chunks of 64, then a tree) of |dy·x̂| ≲ 2;
        // dx: f32 row means of g and g·x̂, scaled by rstd.
        backward_tol: Tol::new(
            1e-4,
            1e-4,
            "f32 column sums over up to 7e4 rows; row means × rstd",
        ),
    }
}
