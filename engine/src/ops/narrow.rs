//! `narrow`: a contiguous range along one axis (PyTorch `narrow`), and `select` (narrow to
//! one index and drop the axis: a composite with reshape).
//! y[o, l, i] = x[o, start + l, i]   with x viewed as (O, A, I) around the axis;
//! dx[o, a, i] = dy[o, a − start, i] inside the range, 0 outside.
//! Kernels: shaders/narrow_forward.wgsl, shaders/narrow_backward.wgsl. The forward kernel is also
//! concat's backward (`narrow_raw`).

use crate::autograd::apply;
use crate::error::Result;
use crate::gpu::{gpu, grid};
use crate::kernel;
use crate::ops::Op;
use crate::reference::{unravel, CpuTensor};
use crate::shape::numel;
use crate::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct Narrow {
    pub axis: usize,
    pub start: usize,
    pub len: usize,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    inner: u32,
    len: u32,
    full: u32,
    start: u32,
}

fn params(shape: &[usize], axis: usize, start: usize, len: usize, n: usize) -> Params {
    Params {
        n: n as u32,
        inner: numel(&shape[axis + 1..]) as u32,
        len: len as u32,
        full: shape[axis] as u32,
        start: start as u32,
    }
}

fn narrowed(shape: &[usize], axis: usize, len: usize) -> Vec<usize> {
    let mut s = shape.to_vec();
    s[axis] = len;
    s
}

/// `x[..., start..start + len, ...]` along `axis` (already checked), without autograd.
pub(crate) fn narrow_raw(x: &Tensor, axis: usize, start: usize, len: usize) -> Result<Tensor> {
    let y = Tensor::empty(&narrowed(x.shape(), axis, len))?;
    let n = y.numel();
    // (O, A, I) -> (O, L, I)
    gpu().dispatch(
        kernel!(narrow_forward),
        &[],
        &[x.buffer(), y.buffer()],
        &params(x.shape(), axis, start, len, n),
        grid(n, 256),
    )?;
    Ok(y)
}

impl Narrow {
    fn check(&self, shape: &[usize]) -> Result<()> {
        let Narrow { axis, start, len } = *self;
        if axis >= shape.len() {
            crate::bail!(
                Shape,
                "narrow: axis {axis} out of range for shape {shape:?}"
            );
        }
        if start.checked_add(len).is_none_or(|end| end > shape[axis]) {
            crate::bail!(
                Shape,
                "narrow: range {start}..{} along axis {axis} of size {} (shape {shape:?})",
                start.saturating_add(len),
                shape[axis]
            );
        }
        Ok(())
    }
}

impl Op for Narrow {
    fn name(&self) -> &'static str {
        "narrow"
    }

    fn reference(&self, x: &[&CpuTensor]) -> CpuTensor {
        let out = narrowed(&x[0].shape, self.axis, self.len);
        let mut y = CpuTensor::zeros(&out);
        for i in 0..y.numel() {
            let mut idx = unravel(i, &out);
            idx[self.axis] += self.start;
            y.data[i] = x[0].at(&idx);
        }
        y
    }

    fn reference_backward(&self, x: &[&CpuTensor], dy: &CpuTensor) -> Vec<Option<CpuTensor>> {
        let mut dx = CpuTensor::zeros(&x[0].shape);
        for i in 0..dy.numel() {
            let mut idx = unravel(i, &dy.shape);
            idx[self.axis] += self.start;
            *dx.at_mut(&idx) += dy.data[i];
        }
        vec![Some(dx)]
    }

    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        self.check(x[0].shape())?;
        narrow_raw(x[0], self.axis, self.start, self.len)
    }

    // dx = dy padded with zeros back to x's extent along the axis (one kernel writes all of dx).
    fn backward(&self, x: &[&Tensor], _y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let dx = Tensor::empty(x[0].shape())?;
        let n = dx.numel();
        let p = params(x[0].shape(), self.axis, self.start, self.len, n);
        // (O, L, I) -> (O, A, I)
        gpu().dispatch(
            kernel!(narrow_backward),
            &[],
            &[dy.buffer(), dx.buffer()],
            &p,
            grid(n, 256),
        )?;
        Ok(vec![Some(dx)])
    }
}

impl Tensor {
    /// Elements `start..start + len` along `axis` (PyTorch `narrow`).
    pub fn try_narrow(&self, axis: usize, start: usize, len: usize) -> Result<Tensor> {
        apply(Narrow { axis, start, len }, &[self])
    }

    /// Elements `start..start + len` along `axis` (PyTorch `narrow`). Copies.
    ///
    /// ```no_run
    /// # use tubelet::Tensor;
    /// let x = Tensor::zeros(&[2, 197, 768]);     // (B, 1 + N, D) with a cls token
    /// assert_eq!(x.narrow(1, 1, 196).shape(), &[2, 196, 768]); // patch tokens
    /// ```
    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Tensor {
        self.try_narrow(axis, start, len)
            .unwrap_or_else(|e| panic!("narrow{:?} axis {axis} {start}..+{len}: {e}", self.shape()))
    }

    /// Index `index` along `axis`, the axis dropped (narrow to one, then reshape).
    pub fn try_select(&self, axis: usize, index: usize) -> Result<Tensor> {
        let y = self.try_narrow(axis, index, 1)?;
        let mut shape = y.shape().to_vec();
        shape.remove(axis);
        y.try_reshape(&shape)
    }

    /// Index `index` along `axis`, the axis dropped: (B, 1 + N, D).select(1, 0) is the cls
    /// token, (B, D).
    pub fn select(&self, axis: usize, index: usize) -> Tensor {
        self.try_select(axis, index)
            .unwrap_or_else(|e| panic!("select{:?} axis {axis} index {index}: {e}", self.shape()))
    }
}

#[cfg(feature = "testing")]
pub fn test_spec() -> crate::testing::TestSpec<Narrow> {
    use crate::testing::{shape_strategy, Case, TestSpec, Tol};
    use proptest::prelude::*;
    fn case(shape: Vec<usize>, seed: u64) -> Case<Narrow> {
        let mut rng = crate::Rng::new(seed);
        let axis = rng.below(shape.len());
        let start = rng.below(shape[axis]);
        let len = 1 + rng.below(shape[axis] - start);
        let x = CpuTensor::uniform(&shape, -2.0, 2.0, &mut rng);
        let op = Narrow { axis, start, len };
        Case::new(op.clone(), vec![x], format!("{op:?}"))
    }
    TestSpec {
        cases: (shape_strategy(1..=5, 200_000), any::<u64>())
            .prop_map(|(s, seed)| case(s, seed))
            .boxed(),
        small_cases: (shape_strategy(1..=3, 48), any::<u64>())
            .prop_map(|(s, seed)| case(s, seed))
            .boxed(),
        forward_tol: Tol::new(0.0, 0.0, "a copy"),
        backward_tol: Tol::new(0.0, 0.0, "a copy of dy and zeros"),
    }
}
