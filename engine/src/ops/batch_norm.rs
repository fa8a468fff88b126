//! Batch normalisation over axis 1 of x (N, C, …) (Ioffe & Szegedy 2015, arXiv:1502.03167),
//! with PyTorch `F.batch_norm` semantics (`nn.BatchNorm1d/2d/3d`, track_running_stats=True):
//!   y = (x − mean_c) / √(var_c + eps) · w_c + b_c
//! - training: mean_c, var_c are the batch statistics over the M = N·S elements of channel c
//!   (S = product of the dims after C), var biased; the running statistics are updated in place,
//!   running_mean ← (1 − μ)·running_mean + μ·mean, running_var ← (1 − μ)·running_var +
//!   μ·var·M/(M − 1) (unbiased), μ = momentum (0.1). M must be > 1, as in PyTorch.
//! - eval: mean_c, var_c are the running statistics (constants for autograd).
//!
//! Inputs x, weight (C), bias (C), running_mean (C), running_var (C); x, weight and bias get
//! gradients, the running statistics none. The running-stat update is a side effect outside
//! autograd, like the optimiser's in-place writes (see `Tensor::assign`); `num_batches_tracked`
//! belongs to the module (PyTorch's `_BatchNorm.forward` increments it, not `F.batch_norm`).
//!
//! Kernels: shaders/batch_norm_forward_stats.wgsl (per-channel partial sums over chunks, two
//! passes: Σx, then Σ(x − mean)²), shaders/batch_norm_forward_update.wgsl (variance and running
//! stats), shaders/batch_norm_forward.wgsl (normalise), shaders/batch_norm_backward_sums.wgsl
//! (partial Σdy and Σdy·x̂), shaders/batch_norm_backward.wgsl (dx). Partials are summed by
//! `reduce`: no atomics, every loop ≤ CHUNK / 256 trips.

use crate::autograd::apply;
use crate::error::Result;
use crate::gpu::{gpu, grid, grid_rows};
use crate::kernel;
use crate::ops::reduce::{reduce_raw, ReduceKind};
use crate::ops::Op;
use crate::reference::CpuTensor;
use crate::shape::numel;
use crate::tensor::Tensor;

/// Elements of a channel one workgroup of the partial-sum kernels covers (256 lanes × 64 trips).
pub const CHUNK: usize = 256 * 64;

/// PyTorch's default momentum for the running statistics.
pub const MOMENTUM: f32 = 0.1;

/// BatchNorm over axis 1. `forward` saves the statistics it normalised with (C each).
#[derive(Clone)]
pub struct BatchNorm {
    /// Batch statistics (and running-stat update) when true, running statistics when false.
    pub training: bool,
    pub momentum: f32,
    pub eps: f32,
    /// f32[C] mean and (biased) variance used by `forward`.
    saved: Option<(Tensor, Tensor)>,
}

impl std::fmt::Debug for BatchNorm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BatchNorm {{ training: {}, momentum: {}, eps: {:e} }}",
            self.training, self.momentum, self.eps
        )
    }
}

/// (N, C, S) of a shape (N, C, …): S is the product of the dims after C (1 for (N, C)).
fn ncs(shape: &[usize]) -> (usize, usize, usize) {
    (shape[0], shape[1], numel(&shape[2..]))
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct StatsParams {
    c: u32,
    s: u32,
    m: u32,
    chunk: u32,
    n_chunks: u32,
    square: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct UpdateParams {
    c: u32,
    m: f32,
    momentum: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ApplyParams {
    n: u32,
    c: u32,
    s: u32,
    eps: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SumsParams {
    c: u32,
    s: u32,
    m: u32,
    chunk: u32,
    n_chunks: u32,
    eps: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct DxParams {
    n: u32,
    c: u32,
    s: u32,
    train: u32,
    m: f32,
    eps: f32,
}

impl BatchNorm {
    pub fn new(training: bool, momentum: f32, eps: f32) -> BatchNorm {
        BatchNorm {
            training,
            momentum,
            eps,
            saved: None,
        }
    }

    /// The argument checks: errors name the shapes and the offending values.
    fn check(&self, x: &[&[usize]]) -> Result<()> {
        let xs = x[0];
        if xs.len() < 2 {
            crate::bail!(
                Shape,
                "batch_norm: x must be (N, C, …) with rank ≥ 2, got shape {xs:?}"
            );
        }
        let c = xs[1];
        for (name, s) in ["weight", "bias", "running_mean", "running_var"]
            .iter()
            .zip(&x[1..])
        {
            if *s != [c] {
                crate::bail!(
                    Shape,
                    "batch_norm: {name} {s:?} must be [C] = [{c}] for x of shape {xs:?}"
                );
            }
        }
        if !(self.eps >= 0.0 && self.eps.is_finite()) {
            crate::bail!(
                Config,
                "batch_norm: eps must be finite and ≥ 0, got {} (x of shape {xs:?})",
                self.eps
            );
        }
        if !(0.0..=1.0).contains(&self.momentum) {
            crate::bail!(
                Config,
                "batch_norm: momentum must be in [0, 1], got {} (x of shape {xs:?})",
                self.momentum
            );
        }
        let (n, _, s) = ncs(xs);
        if self.training && n * s <= 1 {
            crate::bail!(
                Shape,
                "batch_norm: expected more than 1 value per channel when training, got x of shape {xs:?}"
            );
        }
        Ok(())
    }

    /// Per-channel (mean, biased var) the reference normalises with.
    fn reference_stats(&self, x: &[&CpuTensor]) -> (Vec<f64>, Vec<f64>) {
        if !self.training {
            return (x[3].data.clone(), x[4].data.clone());
        }
        let (n, c, s) = ncs(&x[0].shape);
        let m = (n * s) as f64;
        let mut mean = vec![0.0; c];
        let mut var = vec![0.0; c];
        for ch in 0..c {
            let vals = (0..n).flat_map(|i| (0..s).map(move |j| (i * c + ch) * s + j));
            mean[ch] = vals.clone().map(|k| x[0].data[k]).sum::<f64>() / m;
            var[ch] = vals.map(|k| (x[0].data[k] - mean[ch]).powi(2)).sum::<f64>() / m;
        }
        (mean, var)
    }

    /// Partial sums (C, K) of `kernel` over chunks, summed to (C).
    fn channel_sums(part: Tensor, c: usize, k: usize) -> Result<Tensor> {
        Ok(if k == 1 {
            part.view(&[c])
        } else {
            reduce_raw(&part, ReduceKind::Sum, &[1])?.view(&[c])
        })
    }

    /// Training mode: batch mean and biased variance (C each), and the running-stat update.
    fn batch_stats(&self, x: &Tensor, rm: &Tensor, rv: &Tensor) -> Result<(Tensor, Tensor)> {
        let (n, c, s) = ncs(x.shape());
        let m = n * s;
        let k = m.div_ceil(CHUNK);
        let mut p = StatsParams {
            c: c as u32,
            s: s as u32,
            m: m as u32,
            chunk: CHUNK as u32,
            n_chunks: k as u32,
            square: 0,
        };
        // Pass 1: Σx about 0. x (N, C, S), center (C) -> part (C, K)
        let zero = Tensor::zeros(&[c]);
        let part = Tensor::empty(&[c, k])?;
        gpu().dispatch(
            kernel!(batch_norm_forward_stats),
            &[],
            &[x.buffer(), zero.buffer(), part.buffer()],
            &p,
            grid_rows(c * k),
        )?;
        let mean = Self::channel_sums(part, c, k)?.try_mul_scalar(1.0 / m as f32)?; // (C)
                                                                                    // Pass 2: Σ(x − mean)², the two-pass variance.
        p.square = 1;
        let part = Tensor::empty(&[c, k])?;
        gpu().dispatch(
            kernel!(batch_norm_forward_stats),
            &[],
            &[x.buffer(), mean.buffer(), part.buffer()],
            &p,
            grid_rows(c * k),
        )?;
        let ss = Self::channel_sums(part, c, k)?; // (C)
                                                  // var = ss / M; running_mean, running_var updated in place (outside autograd).
        let var = Tensor::empty(&[c])?;
        let up = UpdateParams {
            c: c as u32,
            m: m as f32,
            momentum: self.momentum,
        };
        gpu().dispatch(
            kernel!(batch_norm_forward_update),
            &[],
            &[
                ss.buffer(),
                mean.buffer(),
                var.buffer(),
                rm.buffer(),
                rv.buffer(),
            ],
            &up,
            grid(c, 64),
        )?;
        Ok((mean, var))
    }
}

/// PyTorch's running-statistics update after one training-mode forward, in f64:
/// (running_mean', running_var') from x (N, C, …) and the current running statistics.
pub fn reference_running_update(
    x: &CpuTensor,
    rm: &CpuTensor,
    rv: &CpuTensor,
    momentum: f64,
) -> (CpuTensor, CpuTensor) {
    let op = BatchNorm::new(true, momentum as f32, 0.0);
    let (mean, var) = op.reference_stats(&[x, rm, rm, rm, rv]);
    let (n, _, s) = ncs(&x.shape);
    let m = (n * s) as f64;
    let rm2 = CpuTensor::new(
        rm.shape.clone(),
        (0..mean.len())
            .map(|c| (1.0 - momentum) * rm.data[c] + momentum * mean[c])
            .collect(),
    );
    let rv2 = CpuTensor::new(
        rv.shape.clone(),
        (0..var.len())
            .map(|c| (1.0 - momentum) * rv.data[c] + momentum * var[c] * m / (m - 1.0))
            .collect(),
    );
    (rm2, rv2)
}

impl Op for BatchNorm {
    fn name(&self) -> &'static str {
        "batch_norm"
    }

    fn reference(&self, x: &[&CpuTensor]) -> CpuTensor {
        let (w, b) = (x[1], x[2]);
        let (_, c, s) = ncs(&x[0].shape);
        let (mean, var) = self.reference_stats(x);
        let eps = self.eps as f64;
        let mut y = CpuTensor::zeros(&x[0].shape);
        for (i, v) in x[0].data.iter().enumerate() {
            let ch = (i / s) % c;
            y.data[i] = (v - mean[ch]) / (var[ch] + eps).sqrt() * w.data[ch] + b.data[ch];
        }
        y
    }

    fn reference_backward(&self, x: &[&CpuTensor], dy: &CpuTensor) -> Vec<Option<CpuTensor>> {
        let w = x[1];
        let (n, c, s) = ncs(&x[0].shape);
        let m = (n * s) as f64;
        let (mean, var) = self.reference_stats(x);
        let rstd: Vec<f64> = var
            .iter()
            .map(|v| 1.0 / (v + self.eps as f64).sqrt())
            .collect();
        let xhat = |i: usize| (x[0].data[i] - mean[(i / s) % c]) * rstd[(i / s) % c];
        let mut dw = CpuTensor::zeros(&[c]);
        let mut db = CpuTensor::zeros(&[c]);
        for i in 0..x[0].numel() {
            let ch = (i / s) % c;
            dw.data[ch] += dy.data[i] * xhat(i);
            db.data[ch] += dy.data[i];
        }
        let mut dx = CpuTensor::zeros(&x[0].shape);
        for i in 0..x[0].numel() {
            let ch = (i / s) % c;
            let g = if self.training {
                // through the batch statistics: dy − mean(dy) − x̂·mean(dy·x̂)
                dy.data[i] - db.data[ch] / m - xhat(i) * dw.data[ch] / m
            } else {
                dy.data[i]
            };
            dx.data[i] = w.data[ch] * rstd[ch] * g;
        }
        vec![Some(dx), Some(dw), Some(db), None, None]
    }

    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        if x.len() != 5 {
            crate::bail!(
                Shape,
                "batch_norm: takes x, weight, bias, running_mean, running_var; got {} inputs",
                x.len()
            );
        }
        let shapes: Vec<&[usize]> = x.iter().map(|t| t.shape()).collect();
        self.check(&shapes)?;
        let (n, c, s) = ncs(x[0].shape());
        let (mean, var) = if self.training && crate::checkpoint::is_recomputing() {
            // A checkpointed segment's recompute (engine/src/checkpoint.rs): the same batch
            // statistics, but the running statistics were already updated by its forward.
            let (rm, rv) = (Tensor::empty(&[c])?, Tensor::empty(&[c])?);
            rm.assign(x[3])?;
            rv.assign(x[4])?;
            self.batch_stats(x[0], &rm, &rv)?
        } else if self.training {
            self.batch_stats(x[0], x[3], x[4])?
        } else {
            // Copies, so that a later training step's in-place update cannot change what this
            // forward's backward sees.
            let (mean, var) = (Tensor::empty(&[c])?, Tensor::empty(&[c])?);
            mean.assign(x[3])?;
            var.assign(x[4])?;
            (mean, var)
        };
        let y = Tensor::empty(x[0].shape())?;
        let p = ApplyParams {
            n: y.numel() as u32,
            c: c as u32,
            s: s as u32,
            eps: self.eps,
        };
        // x (N, C, S), mean, var, w, b (C) -> y (N, C, S)
        gpu().dispatch(
            kernel!(batch_norm_forward),
            &[],
            &[
                x[0].buffer(),
                mean.buffer(),
                var.buffer(),
                x[1].buffer(),
                x[2].buffer(),
                y.buffer(),
            ],
            &p,
            grid(n * c * s, 256),
        )?;
        self.saved = Some((mean, var));
        Ok(y)
    }

    // With x̂ = (x − mean)·rstd, db = Σ dy, dw = Σ dy·x̂ (per channel, over N·S):
    //   training: dx = w·rstd·(dy − db/M − x̂·dw/M)   (mean and var depend on x)
    //   eval:     dx = w·rstd·dy                      (running statistics are constants)
    fn backward(&self, x: &[&Tensor], _y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let Some((mean, var)) = &self.saved else {
            crate::bail!(
                Autograd,
                "batch_norm: backward before forward (no saved statistics)"
            );
        };
        let (n, c, s) = ncs(x[0].shape());
        let m = n * s;
        if m == 0 {
            return Ok(vec![
                Some(Tensor::empty(x[0].shape())?),
                Some(Tensor::zeros(&[c])),
                Some(Tensor::zeros(&[c])),
                None,
                None,
            ]);
        }
        let k = m.div_ceil(CHUNK);
        let db_part = Tensor::empty(&[c, k])?;
        let dw_part = Tensor::empty(&[c, k])?;
        let p = SumsParams {
            c: c as u32,
            s: s as u32,
            m: m as u32,
            chunk: CHUNK as u32,
            n_chunks: k as u32,
            eps: self.eps,
        };
        // x, dy (N, C, S), mean, var (C) -> db_part, dw_part (C, K)
        gpu().dispatch(
            kernel!(batch_norm_backward_sums),
            &[],
            &[
                x[0].buffer(),
                dy.buffer(),
                mean.buffer(),
                var.buffer(),
                db_part.buffer(),
                dw_part.buffer(),
            ],
            &p,
            grid_rows(c * k),
        )?;
        let db = Self::channel_sums(db_part, c, k)?;
        let dw = Self::channel_sums(dw_part, c, k)?;
        let dx = if x[0].requires_grad() {
            let dx = Tensor::empty(x[0].shape())?;
            let p = DxParams {
                n: dx.numel() as u32,
                c: c as u32,
                s: s as u32,
                train: self.training as u32,
                m: m as f32,
                eps: self.eps,
            };
            // x, dy (N, C, S), mean, var, w, db, dw (C) -> dx (N, C, S)
            gpu().dispatch(
                kernel!(batch_norm_backward),
                &[],
                &[
                    x[0].buffer(),
                    dy.buffer(),
                    mean.buffer(),
                    var.buffer(),
                    x[1].buffer(),
                    db.buffer(),
                    dw.buffer(),
                    dx.buffer(),
                ],
                &p,
                grid(dx.numel(), 256),
            )?;
            Some(dx)
        } else {
            None
        };
        Ok(vec![dx, Some(dw), Some(db), None, None])
    }
}

impl Tensor {
    /// BatchNorm over axis 1 of x (N, C, …) (PyTorch `F.batch_norm(x, running_mean, running_var,
    /// weight, bias, training, momentum=0.1, eps)`). In training mode it normalises with the batch
    /// statistics and updates `running_mean`/`running_var` in place; in eval mode it uses them.
    ///
    /// ```no_run
    /// use tubelet::Tensor;
    /// let x = Tensor::randn(&[2, 64, 8, 56, 56], 0.0, 1.0, 1).unwrap(); // BatchNorm3d(64)
    /// let (w, b) = (Tensor::ones(&[64]).param(), Tensor::zeros(&[64]).param());
    /// let (rm, rv) = (Tensor::zeros(&[64]), Tensor::ones(&[64]));
    /// let y = x.batch_norm(&w, &b, &rm, &rv, true, 1e-5); // rm, rv updated
    /// ```
    pub fn try_batch_norm(
        &self,
        weight: &Tensor,
        bias: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        training: bool,
        eps: f32,
    ) -> Result<Tensor> {
        apply(
            BatchNorm::new(training, MOMENTUM, eps),
            &[self, weight, bias, running_mean, running_var],
        )
    }

    /// BatchNorm over axis 1; see [`Tensor::try_batch_norm`].
    pub fn batch_norm(
        &self,
        weight: &Tensor,
        bias: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        training: bool,
        eps: f32,
    ) -> Tensor {
        self.try_batch_norm(weight, bias, running_mean, running_var, training, eps)
            .unwrap_or_else(|e| panic!("batch_norm{:?}: {e}", self.shape()))
    }
}

/// One case: x of `shape` (N, C, …), random weight/bias and running statistics (var > 0).
#[cfg(feature = "testing")]
pub fn case(
    shape: Vec<usize>,
    training: bool,
    eps: f32,
    shift: f64,
    seed: u64,
) -> crate::testing::Case<BatchNorm> {
    let mut rng = crate::Rng::new(seed);
    let (n, c, s) = ncs(&shape);
    let training = training && n * s > 1;
    // NOTE: as in layer_norm's spec, a channel of 2..8 values can be nearly constant and f32 is
    // then ill-conditioned whatever the kernel (errors scale with rstd, up to 1/√eps): such
    // channels get eps ≥ 0.05 in training mode.
    let eps = if training && (2..8).contains(&(n * s)) {
        eps.max(0.05)
    } else {
        eps
    };
    let x = CpuTensor::uniform(&shape, -2.0, 2.0, &mut rng).map(|v| v + shift);
    let w = CpuTensor::uniform(&[c], -1.5, 1.5, &mut rng);
    let b = CpuTensor::uniform(&[c], -1.0, 1.0, &mut rng);
    let rm = CpuTensor::uniform(&[c], -1.0, 1.0, &mut rng).map(|v| v + shift);
    let rv = CpuTensor::uniform(&[c], 0.3, 2.0, &mut rng);
    let label = format!("training {training} eps {eps:e} shift {shift:.2}");
    crate::testing::Case::new(
        BatchNorm::new(training, MOMENTUM, eps),
        vec![x, w, b, rm, rv],
        label,
    )
}

#[cfg(feature = "testing")]
pub fn test_spec() -> crate::testing::TestSpec<BatchNorm> {
    use crate::testing::{shape_strategy, TestSpec, Tol};
    use proptest::prelude::*;
    let eps = prop_oneof![Just(1e-5f32), Just(1e-3f32), 0.01f32..1.0];
    let shapes = prop_oneof![
        // (N, C), (N, C, L), BatchNorm2d (N, C, H, W), BatchNorm3d (N, C, T, H, W)
        6 => shape_strategy(2..=5, 200_000),
        // more than CHUNK and 65,535 elements per channel: several chunks, a second reduce pass
        1 => (1usize..=3, 1usize..=3, 30_000usize..=70_000).prop_map(|(n, c, s)| vec![n, c, s]),
        // more than 65,535 channel·chunk workgroups: the folded row grid
        1 => (2usize..=3, 65_536usize..=70_000).prop_map(|(n, c)| vec![n, c]),
        // UniFormer / TSM geometries at reduced size
        1 => prop::sample::select(vec![vec![2, 16, 4, 7, 7], vec![8, 24, 5, 5], vec![1, 64, 3, 14, 14]]),
    ];
    TestSpec {
        cases: (
            shapes,
            any::<bool>(),
            eps.clone(),
            -3.0f64..3.0,
            any::<u64>(),
        )
            .prop_map(|(s, t, e, sh, seed)| case(s, t, e, sh, seed))
            .boxed(),
        small_cases: (
            shape_strategy(2..=4, 48),
            any::<bool>(),
            eps,
            -3.0f64..3.0,
            any::<u64>(),
        )
            .prop_map(|(s, t, e, sh, seed)| case(s, t, e, sh, seed))
            .boxed(),
        // f32 channel mean and two-pass variance over up to 2e5 elements (chunk sums, then a
        // tree), scaled by rstd·|w| ≤ 1.5/√(0.3) in eval mode.
        forward_tol: Tol::new(
            1e-4,
            1e-4,
            "f32 channel sums over up to 2e5 elements, × rstd·|w|",
        ),
        // dw, db: f32 sums over up to 2e5 elements of |dy·x̂| (a partial per 16k chunk, then a
        // tree); dx in training mode subtracts those sums / M, scaled by rstd·|w|.
        backward_tol: Tol::new(
            5e-4,
            5e-4,
            "f32 channel sums over up to 2e5 elements; dx through them",
        ),
    }
}
