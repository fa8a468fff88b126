//! Cross-entropy of logits against integer class labels, log-softmax fused with the negative
//! log-likelihood (PyTorch `F.cross_entropy(logits, labels)`, reduction 'mean'):
//!   loss = 1/N · Σ_r (lse_r − x[r, label_r]),   lse_r = log Σ_c exp(x[r, c])  (max-subtracted)
//! Kernels: shaders/cross_entropy_forward.wgsl (one workgroup per row: lse and the row's loss),
//! the mean is `reduce`'s chunked sum; shaders/cross_entropy_backward.wgsl (one invocation per
//! logit, from the saved lse).

use std::sync::Arc;

use crate::autograd::apply;
use crate::error::Result;
use crate::gpu::{gpu, grid, grid_rows};
use crate::kernel;
use crate::ops::reduce::{reduce_raw, ReduceKind};
use crate::ops::softmax::{check_row, row_wg};
use crate::ops::Op;
use crate::reference::CpuTensor;
use crate::tensor::{Indices, Tensor};

/// The labels, on the GPU with their host copy, or (for test cases built without a GPU) on the
/// host only until the first `forward` uploads them.
#[derive(Clone)]
enum Labels {
    Device(Indices),
    Host(Arc<Vec<u32>>),
}

impl Labels {
    fn host(&self) -> &[u32] {
        match self {
            Labels::Device(i) => i.host(),
            Labels::Host(v) => v,
        }
    }
}

/// Mean cross-entropy over N rows of logits (N, C). The labels are a field, not an input: they
/// are not differentiable. `forward` saves the per-row logsumexp for `backward`.
#[derive(Clone)]
pub struct CrossEntropy {
    labels: Labels,
    /// f32[N] row logsumexp, set by `forward`.
    lse: Option<Tensor>,
}

impl std::fmt::Debug for CrossEntropy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CrossEntropy({} labels)", self.labels.host().len())
    }
}

impl CrossEntropy {
    pub fn new(labels: &Indices) -> CrossEntropy {
        CrossEntropy {
            labels: Labels::Device(labels.clone()),
            lse: None,
        }
    }

    /// From host values alone, uploaded by the first `forward` (so test cases build without a GPU).
    pub fn from_host(labels: Vec<u32>) -> CrossEntropy {
        CrossEntropy {
            labels: Labels::Host(Arc::new(labels)),
            lse: None,
        }
    }

    /// The argument checks of `try_cross_entropy`: errors name the shapes, labels and positions.
    fn check(&self, shape: &[usize]) -> Result<()> {
        let labels = self.labels.host();
        let &[n, c] = shape else {
            crate::bail!(
                Shape,
                "cross_entropy: logits must be (N, C), got shape {shape:?}"
            );
        };
        if labels.len() != n {
            crate::bail!(
                Shape,
                "cross_entropy: {} labels for logits of shape {shape:?} (N = {n})",
                labels.len()
            );
        }
        if n == 0 {
            crate::bail!(Shape, "cross_entropy: logits of shape {shape:?} have no rows; the mean over N = 0 is undefined");
        }
        if let Some((i, &l)) = labels.iter().enumerate().find(|&(_, &l)| l as usize >= c) {
            crate::bail!(Shape, "cross_entropy: label {l} at position {i} is not below C = {c} (logits shape {shape:?})");
        }
        check_row("cross_entropy", shape)
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ForwardParams {
    rows: u32,
    c: u32,
    inv_n: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BackwardParams {
    n: u32,
    c: u32,
    inv_n: f32,
}

/// Row r's log Σ_c exp(x[r, c]) in f64, max-subtracted.
fn logsumexp(row: &[f64]) -> f64 {
    let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut s = 0.0;
    for &v in row {
        s += (v - m).exp();
    }
    m + s.ln()
}

impl Op for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }

    fn reference(&self, x: &[&CpuTensor]) -> CpuTensor {
        let (n, c) = (x[0].shape[0], x[0].shape[1]);
        let labels = self.labels.host();
        let mut total = 0.0;
        for r in 0..n {
            let row = &x[0].data[r * c..(r + 1) * c];
            total += logsumexp(row) - row[labels[r] as usize];
        }
        CpuTensor::new(vec![], vec![total / n as f64])
    }

    fn reference_backward(&self, x: &[&CpuTensor], dy: &CpuTensor) -> Vec<Option<CpuTensor>> {
        let (n, c) = (x[0].shape[0], x[0].shape[1]);
        let labels = self.labels.host();
        let mut dx = CpuTensor::zeros(&x[0].shape);
        for r in 0..n {
            let row = &x[0].data[r * c..(r + 1) * c];
            let lse = logsumexp(row);
            for j in 0..c {
                let onehot = if j == labels[r] as usize { 1.0 } else { 0.0 };
                dx.data[r * c + j] = ((row[j] - lse).exp() - onehot) * dy.data[0] / n as f64;
            }
        }
        vec![Some(dx)]
    }

    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        self.check(x[0].shape())?;
        if let Labels::Host(v) = &self.labels {
            self.labels = Labels::Device(Indices::from_slice(v)?);
        }
        let Labels::Device(labels) = &self.labels else {
            unreachable!("uploaded above")
        };
        let (n, c) = (x[0].shape()[0], x[0].shape()[1]);
        let lse = Tensor::empty(&[n])?;
        let loss = Tensor::empty(&[n])?;
        let p = ForwardParams {
            rows: n as u32,
            c: c as u32,
            inv_n: 1.0 / n as f32,
        };
        // (N, C), labels (N) -> lse (N), loss (N)
        gpu().dispatch(
            kernel!(cross_entropy_forward),
            &[("WG", row_wg(c) as f64)],
            &[x[0].buffer(), labels.buffer(), lse.buffer(), loss.buffer()],
            &p,
            grid_rows(n),
        )?;
        self.lse = Some(lse);
        // (N) -> (): the rows' losses are already divided by N, so the sum is the mean.
        Ok(reduce_raw(&loss, ReduceKind::Sum, &[0])?.view(&[]))
    }

    // dlogits[r, c] = (softmax(x)[r, c] − [c == label_r]) · dloss / N,  softmax = exp(x − lse_r)
    fn backward(&self, x: &[&Tensor], _y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (Some(lse), Labels::Device(labels)) = (&self.lse, &self.labels) else {
            crate::bail!(
                Autograd,
                "cross_entropy: backward before forward (no saved logsumexp)"
            );
        };
        let (n, c) = (x[0].shape()[0], x[0].shape()[1]);
        let dx = Tensor::empty(x[0].shape())?;
        let p = BackwardParams {
            n: (n * c) as u32,
            c: c as u32,
            inv_n: 1.0 / n as f32,
        };
        // (N, C), lse (N), labels (N), dy () -> (N, C)
        gpu().dispatch(
            kernel!(cross_entropy_backward),
            &[],
            &[
                x[0].buffer(),
                lse.buffer(),
                labels.buffer(),
                dy.buffer(),
                dx.buffer(),
            ],
            &p,
            grid(n * c, 256),
        )?;
        Ok(vec![Some(dx)])
    }
}

impl Tensor {
    /// Mean cross-entropy of these logits (N, C) against `labels` (N values below C), as a
    /// one-element tensor of shape []: 1/N · Σ_r (log Σ_c exp(x[r, c]) − x[r, label_r]).
    ///
    /// ```no_run
    /// use tubelet::{Indices, Tensor};
    /// let logits = Tensor::randn(&[4, 10], 0.0, 1.0, 1).unwrap().param();
    /// let labels = Indices::from_slice(&[3, 0, 9, 3]).unwrap();
    /// let loss = logits.cross_entropy(&labels); // shape []
    /// let grads = loss.backward().unwrap();
    /// ```
    pub fn try_cross_entropy(&self, labels: &Indices) -> Result<Tensor> {
        apply(CrossEntropy::new(labels), &[self])
    }

    /// Mean cross-entropy; see [`Tensor::try_cross_entropy`].
    pub fn cross_entropy(&self, labels: &Indices) -> Tensor {
        self.try_cross_entropy(labels).unwrap_or_else(|e| {
            panic!(
                "cross_entropy{:?} with {} labels: {e}",
                self.shape(),
                labels.len()
            )
        })
    }
}

#[cfg(feature = "testing")]
pub fn test_spec() -> crate::testing::TestSpec<CrossEntropy> {
    use crate::testing::{dim_strategy, Case, TestSpec, Tol};
    use proptest::prelude::*;
    // Logits spread over ±8 around a shift of up to ±100 (exp(100) overflows f32 unless the
    // kernel subtracts the max); labels uniform over the classes.
    fn case(n: usize, c: usize, shift: f64, seed: u64) -> Case<CrossEntropy> {
        let mut rng = crate::Rng::new(seed);
        let x = CpuTensor::uniform(&[n, c], -8.0, 8.0, &mut rng).map(|v| v + shift);
        let labels: Vec<u32> = (0..n)
            .map(|_| ((rng.uniform() * c as f64) as u32).min(c as u32 - 1))
            .collect();
        Case::new(
            CrossEntropy::from_host(labels),
            vec![x],
            format!("shift {shift:.1}"),
        )
    }
    let shapes = prop_oneof![
        6 => (dim_strategy(), dim_strategy()),
        // long rows: several strided trips per lane
        1 => (1usize..=3, 10_000usize..=70_000),
        // more than 65,535 rows: the row grid folds into 2-D, the mean takes two reduce passes
        1 => (65_536usize..=70_000, 1usize..=3),
    ];
    let small = (1usize..=6, 1usize..=8);
    TestSpec {
        cases: (shapes, -100.0f64..100.0, any::<u64>())
            .prop_map(|((n, c), sh, seed)| case(n, c, sh, seed))
            .boxed(),
        small_cases: (small, -100.0f64..100.0, any::<u64>())
            .prop_map(|((n, c), sh, seed)| case(n, c, sh, seed))
            .boxed(),
        // Per row (m − x_label) + log Σ: a few ulps of terms ≤ ~30, then an f32 mean over N.
        forward_tol: Tol::new(
            1e-5,
            1e-5,
            "f32 log/exp of terms ≤ 30 and an f32 mean over N",
        ),
        // exp(x − lse) with |lse| ≤ 110: x − lse rounds by ulp(110)/2 ≈ 4e-6, a relative error
        // on p that survives the p − 1 cancellation at the label: ≤ 4e-6 · |dy| / N absolute.
        backward_tol: Tol::new(
            5e-6,
            2e-5,
            "f32 lse of shifted logits (≤ 110) rounds by 4e-6",
        ),
    }
}
