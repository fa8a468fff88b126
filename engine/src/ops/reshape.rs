//! `reshape`: the same elements in row-major order under another shape of equal size.
//! y = x viewed as `shape`;  dx = dy viewed as x's shape.
//! No kernel: every tensor is contiguous, so the forward is a view sharing x's storage
//! (`Tensor::view`) and the backward a view of dy. `flatten` is a composite on top.

use crate::autograd::apply;
use crate::error::Result;
use crate::ops::Op;
use crate::reference::CpuTensor;
use crate::shape::numel;
use crate::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct Reshape {
    /// The exact output dims (no inferred `-1`).
    pub shape: Vec<usize>,
}

impl Op for Reshape {
    fn name(&self) -> &'static str {
        "reshape"
    }

    fn reference(&self, x: &[&CpuTensor]) -> CpuTensor {
        // Row-major data is unchanged; only the shape is new.
        let mut y = CpuTensor::zeros(&self.shape);
        for i in 0..x[0].numel() {
            y.data[i] = x[0].data[i];
        }
        y
    }

    fn reference_backward(&self, x: &[&CpuTensor], dy: &CpuTensor) -> Vec<Option<CpuTensor>> {
        let mut dx = CpuTensor::zeros(&x[0].shape);
        for i in 0..dy.numel() {
            dx.data[i] = dy.data[i];
        }
        vec![Some(dx)]
    }

    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        let (from, to) = (x[0].shape(), self.shape.as_slice());
        if numel(from) != numel(to) {
            crate::bail!(
                Shape,
                "reshape: shape {from:?} ({} elements) cannot become {to:?} ({} elements)",
                numel(from),
                numel(to)
            );
        }
        Ok(x[0].view(to)) // a view: no copy, no dispatch
    }

    // dx = dy reshaped to x's shape (a permutation-free identity on the flat data)
    fn backward(&self, x: &[&Tensor], _y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(dy.view(x[0].shape()))])
    }
}

impl Tensor {
    /// The same elements (row-major) under `shape`, which must have as many elements.
    pub fn try_reshape(&self, shape: &[usize]) -> Result<Tensor> {
        apply(
            Reshape {
                shape: shape.to_vec(),
            },
            &[self],
        )
    }

    /// The same elements (row-major) under `shape`. A view: no data moves.
    ///
    /// ```no_run
    /// # use tubelet::Tensor;
    /// let x = Tensor::zeros(&[2, 3, 4]);
    /// assert_eq!(x.reshape(&[6, 4]).shape(), &[6, 4]);
    /// ```
    pub fn reshape(&self, shape: &[usize]) -> Tensor {
        self.try_reshape(shape)
            .unwrap_or_else(|e| panic!("reshape{:?} to {shape:?}: {e}", self.shape()))
    }

    /// Merges dims `start..=end` into one (PyTorch `flatten(start_dim, end_dim)`).
    pub fn try_flatten(&self, start: usize, end: usize) -> Result<Tensor> {
        let s = self.shape();
        if start > end || end >= s.len() {
            crate::bail!(
                Shape,
                "flatten: dims {start}..={end} are not a range of shape {s:?}"
            );
        }
        let mut shape: Vec<usize> = s[..start].to_vec();
        shape.push(numel(&s[start..=end]));
        shape.extend_from_slice(&s[end + 1..]);
        self.try_reshape(&shape)
    }

    /// Merges dims `start..=end` into one: (B, C, T, H, W).flatten(2, 4) is (B, C, T·H·W).
    pub fn flatten(&self, start: usize, end: usize) -> Tensor {
        self.try_flatten(start, end)
            .unwrap_or_else(|e| panic!("flatten{:?} dims {start}..={end}: {e}", self.shape()))
    }
}

/// A random shape with `n` elements: n's prime factors dealt into up to 6 dims (for tests).
#[cfg(feature = "testing")]
pub(crate) fn random_shape_of(n: usize, rng: &mut crate::Rng) -> Vec<usize> {
    let mut factors = Vec::new();
    let (mut m, mut f) = (n, 2);
    while m > 1 {
        while m % f == 0 {
            factors.push(f);
            m /= f;
        }
        f += 1;
    }
    let rank = 1 + rng.below(6);
    let mut shape = vec![1usize; rank];
    for p in factors {
        shape[rng.below(rank)] *= p;
    }
    shape
}

#[cfg(feature = "testing")]
pub fn test_spec() -> crate::testing::TestSpec<Reshape> {
    use crate::testing::{shape_strategy, Case, TestSpec, Tol};
    use proptest::prelude::*;
    fn case(shape: Vec<usize>, seed: u64) -> Case<Reshape> {
        let mut rng = crate::Rng::new(seed);
        let to = random_shape_of(numel(&shape), &mut rng);
        let x = CpuTensor::uniform(&shape, -2.0, 2.0, &mut rng);
        Case::new(Reshape { shape: to.clone() }, vec![x], format!("to {to:?}"))
    }
    TestSpec {
        cases: (shape_strategy(1..=6, 200_000), any::<u64>())
            .prop_map(|(s, seed)| case(s, seed))
            .boxed(),
        small_cases: (shape_strategy(1..=4, 48), any::<u64>())
            .prop_map(|(s, seed)| case(s, seed))
            .boxed(),
        forward_tol: Tol::new(0.0, 0.0, "a view: the same f32 values"),
        backward_tol: Tol::new(0.0, 0.0, "a view of dy: the same f32 values"),
    }
}
