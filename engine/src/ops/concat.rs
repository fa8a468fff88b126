//! `cat`: tensors joined along one axis (all dims equal except that one).
//! y[o, off_k + l, i] = x_k[o, l, i],  off_k = Σ_{j<k} L_j;   dx_k = dy[o, off_k .. off_k + L_k, i].
//! Kernel: shaders/concat_forward.wgsl, one dispatch per input writing its slab of y; the
//! backward cuts each input's slab out of dy with narrow's forward kernel.

use crate::autograd::apply;
use crate::error::Result;
use crate::gpu::{gpu, grid};
use crate::kernel;
use crate::ops::narrow::narrow_raw;
use crate::ops::Op;
use crate::reference::{unravel, CpuTensor};
use crate::shape::numel;
use crate::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct Concat {
    pub axis: usize,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    inner: u32,
    len: u32,
    total: u32,
    offset: u32,
}

/// The output shape, or an error naming the first input that does not fit.
fn cat_shape(shapes: &[&[usize]], axis: usize) -> Result<Vec<usize>> {
    let Some(first) = shapes.first() else {
        crate::bail!(Shape, "cat: no tensors to concatenate");
    };
    if axis >= first.len() {
        crate::bail!(
            Shape,
            "cat: axis {axis} out of range for input 0 of shape {first:?}"
        );
    }
    let mut out = first.to_vec();
    out[axis] = 0;
    for (k, s) in shapes.iter().enumerate() {
        let fits = s.len() == first.len() && (0..s.len()).all(|d| d == axis || s[d] == first[d]);
        if !fits {
            crate::bail!(
                Shape,
                "cat along axis {axis}: input {k} has shape {s:?}, input 0 has {first:?} \
                (all dims but the axis must match)"
            );
        }
        out[axis] += s[axis];
    }
    Ok(out)
}

impl Op for Concat {
    fn name(&self) -> &'static str {
        "concat"
    }

    fn reference(&self, x: &[&CpuTensor]) -> CpuTensor {
        let shapes: Vec<&[usize]> = x.iter().map(|t| t.shape.as_slice()).collect();
        let out = cat_shape(&shapes, self.axis).expect("cat shapes");
        let mut y = CpuTensor::zeros(&out);
        let mut offset = 0;
        for t in x {
            for i in 0..t.numel() {
                let mut idx = unravel(i, &t.shape);
                idx[self.axis] += offset;
                *y.at_mut(&idx) = t.data[i];
            }
            offset += t.shape[self.axis];
        }
        y
    }

    fn reference_backward(&self, x: &[&CpuTensor], dy: &CpuTensor) -> Vec<Option<CpuTensor>> {
        let mut grads = Vec::new();
        let mut offset = 0;
        for t in x {
            let mut dx = CpuTensor::zeros(&t.shape);
            for i in 0..t.numel() {
                let mut idx = unravel(i, &t.shape);
                idx[self.axis] += offset;
                dx.data[i] = dy.at(&idx);
            }
            offset += t.shape[self.axis];
            grads.push(Some(dx));
        }
        grads
    }

    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        let shapes: Vec<&[usize]> = x.iter().map(|t| t.shape()).collect();
        let out = cat_shape(&shapes, self.axis)?;
        let y = Tensor::empty(&out)?;
        let inner = numel(&out[self.axis + 1..]);
        let mut offset = 0;
        for t in x {
            let len = t.shape()[self.axis];
            let n = t.numel();
            let p = Params {
                n: n as u32,
                inner: inner as u32,
                len: len as u32,
                total: out[self.axis] as u32,
                offset: offset as u32,
            };
            // (O, L_k, I) -> slab [offset, offset + L_k) of (O, S, I)
            gpu().dispatch(
                kernel!(concat_forward),
                &[],
                &[t.buffer(), y.buffer()],
                &p,
                grid(n, 256),
            )?;
            offset += len;
        }
        Ok(y)
    }

    // dx_k = dy[..., off_k .. off_k + L_k, ...]: the slab each input was copied into.
    fn backward(&self, x: &[&Tensor], _y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let mut grads = Vec::with_capacity(x.len());
        let mut offset = 0;
        for t in x {
            let len = t.shape()[self.axis];
            grads.push(if t.requires_grad() {
                Some(narrow_raw(dy, self.axis, offset, len)?)
            } else {
                None
            });
            offset += len;
        }
        Ok(grads)
    }
}

impl Tensor {
    /// `xs` joined along `axis`; every other dim must agree.
    pub fn try_cat(xs: &[&Tensor], axis: usize) -> Result<Tensor> {
        apply(Concat { axis }, xs)
    }

    /// `xs` joined along `axis` (PyTorch `torch.cat`).
    ///
    /// ```no_run
    /// # use tubelet::Tensor;
    /// let cls = Tensor::zeros(&[2, 1, 768]);
    /// let patches = Tensor::zeros(&[2, 196, 768]);
    /// assert_eq!(Tensor::cat(&[&cls, &patches], 1).shape(), &[2, 197, 768]);
    /// ```
    pub fn cat(xs: &[&Tensor], axis: usize) -> Tensor {
        Tensor::try_cat(xs, axis).unwrap_or_else(|e| {
            let shapes: Vec<&[usize]> = xs.iter().map(|t| t.shape()).collect();
            panic!("cat {shapes:?} along axis {axis}: {e}")
        })
    }
}

#[cfg(feature = "testing")]
pub fn test_spec() -> crate::testing::TestSpec<Concat> {
    use crate::testing::{dim_strategy, shape_strategy, Case, TestSpec, Tol};
    use proptest::prelude::*;
    // Each input takes the base shape with its own size along the axis.
    // Sizes along the axis are clamped so that each input keeps at most `max` elements.
    fn case(shape: Vec<usize>, lens: Vec<usize>, max: usize, seed: u64) -> Case<Concat> {
        let mut rng = crate::Rng::new(seed);
        let axis = rng.below(shape.len());
        let rest = numel(&shape) / shape[axis];
        let lens: Vec<usize> = lens.iter().map(|&l| l.min((max / rest).max(1))).collect();
        let inputs = lens
            .iter()
            .map(|&l| {
                let mut s = shape.clone();
                s[axis] = l;
                CpuTensor::uniform(&s, -2.0, 2.0, &mut rng)
            })
            .collect();
        Case::new(
            Concat { axis },
            inputs,
            format!("axis {axis} lens {lens:?}"),
        )
    }
    fn strategy(max: usize) -> BoxedStrategy<Case<Concat>> {
        let lens = prop::collection::vec(dim_strategy(), 1..=4);
        (shape_strategy(1..=5, max), lens, any::<u64>())
            .prop_map(move |(s, l, seed)| case(s, l, max, seed))
            .boxed()
    }
    TestSpec {
        cases: strategy(60_000),
        small_cases: strategy(16),
        forward_tol: Tol::new(0.0, 0.0, "a copy"),
        backward_tol: Tol::new(0.0, 0.0, "slabs of dy, copied"),
    }
}
