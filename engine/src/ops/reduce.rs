//! Sum and max over chosen axes (mean is sum × 1/count, a composite).
//!
//! The reduced axes are read through strides, so `x.sum(&[1, 3])` on a (B, T, H, W) tensor makes
//! no permuted copy. Long reductions are split into chunks of at most `CHUNK` elements, one
//! workgroup each, and the partial results reduced again: every invocation's loop stays short
//! (Mesa 22's llvmpipe silently stops loops after 65,535 trips) and a full reduction uses more
//! than one core.
//! Kernels: shaders/reduce_forward.wgsl, shaders/reduce_max_backward.wgsl; sum's backward is
//! the device's broadcasting copy (`Gpu::copy`, the forward of expand.rs, whose backward is
//! [`sum_to_raw`] here: so expand imports reduce and not the other way).

use crate::autograd::apply;
use crate::error::{Error, Result};
use crate::gpu::{gpu, grid_rows};
use crate::kernel;
use crate::ops::Op;
use crate::reference::{unravel, CpuTensor};
use crate::shape::{contiguous_strides, numel, pack8};
use crate::tensor::Tensor;

/// Reduced elements one workgroup handles (256 lanes × 256 trips at most).
const CHUNK: usize = 256 * 256;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReduceKind {
    Sum,
    Max,
}

#[derive(Clone, Debug)]
pub struct Reduce {
    pub kind: ReduceKind,
    /// Sorted, distinct, non-negative axes.
    pub axes: Vec<usize>,
    pub keepdim: bool,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_out: u32,
    n_red: u32,
    chunk: u32,
    n_chunks: u32,
    nk: u32,
    nr: u32,
    _pad: [u32; 2],
    k_shape: [u32; 8],
    k_stride: [u32; 8],
    r_shape: [u32; 8],
    r_stride: [u32; 8],
}

/// Kept and reduced (dims, strides) of a contiguous tensor of `shape`.
fn split(shape: &[usize], axes: &[usize]) -> Params {
    let strides = contiguous_strides(shape);
    let (mut ks, mut kt, mut rs, mut rt) = (vec![], vec![], vec![], vec![]);
    for d in 0..shape.len() {
        if axes.contains(&d) {
            rs.push(shape[d]);
            rt.push(strides[d]);
        } else {
            ks.push(shape[d]);
            kt.push(strides[d]);
        }
    }
    let n_red = numel(&rs);
    Params {
        n_out: numel(&ks) as u32,
        n_red: n_red as u32,
        chunk: CHUNK as u32,
        n_chunks: n_red.div_ceil(CHUNK).max(1) as u32,
        nk: ks.len() as u32,
        nr: rs.len() as u32,
        _pad: [0; 2],
        k_shape: pack8(&ks),
        k_stride: pack8(&kt),
        r_shape: pack8(&rs),
        r_stride: pack8(&rt),
    }
}

fn keepdim_shape(shape: &[usize], axes: &[usize]) -> Vec<usize> {
    (0..shape.len())
        .map(|d| if axes.contains(&d) { 1 } else { shape[d] })
        .collect()
}

fn out_shape(shape: &[usize], axes: &[usize], keepdim: bool) -> Vec<usize> {
    if keepdim {
        keepdim_shape(shape, axes)
    } else {
        (0..shape.len())
            .filter(|d| !axes.contains(d))
            .map(|d| shape[d])
            .collect()
    }
}

/// Reduces `x` over `axes` (sorted, distinct) without autograd; the result has keepdim shape.
pub(crate) fn reduce_raw(x: &Tensor, kind: ReduceKind, axes: &[usize]) -> Result<Tensor> {
    if x.rank() > 8 {
        crate::bail!(Shape, "reduce: rank {} above 8 ({:?})", x.rank(), x.shape());
    }
    let p = split(x.shape(), axes);
    // NOTE: a short reduction with many outputs (a broadcast gradient such as (B, H, N, N) →
    // (H, N, N)) gets a workgroup no wider than its length: 256 lanes and 8 barrier rounds per
    // 4-element sum made such sums ~100× slower on llvmpipe. Same results: one chunk, tree order.
    let wg = (p.n_red.max(1) as usize).next_power_of_two().min(256) as f64;
    let op = [
        ("OP", if kind == ReduceKind::Sum { 0.0 } else { 1.0 }),
        ("WG", wg),
    ];
    let keep = keepdim_shape(x.shape(), axes);
    if p.n_chunks == 1 {
        let y = Tensor::empty(&keep)?;
        gpu().dispatch(
            kernel!(reduce_forward),
            &op,
            &[x.buffer(), y.buffer()],
            &p,
            grid_rows(p.n_out as usize),
        )?;
        return Ok(y);
    }
    // (N_OUT, N_CHUNKS) partials, then reduce the chunk axis.
    let partial = Tensor::empty(&[p.n_out as usize, p.n_chunks as usize])?;
    gpu().dispatch(
        kernel!(reduce_forward),
        &op,
        &[x.buffer(), partial.buffer()],
        &p,
        grid_rows((p.n_out * p.n_chunks) as usize),
    )?;
    Ok(reduce_raw(&partial, kind, &[1])?.view(&keep))
}

/// Sums a gradient `g` of a broadcast result down to `shape` (no autograd): over the leading
/// dims `g` has in excess and the dims where `shape` is 1.
pub(crate) fn sum_to_raw(g: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if g.shape() == shape {
        return Ok(g.clone());
    }
    let off = g.rank() - shape.len();
    let axes: Vec<usize> = (0..g.rank())
        .filter(|&d| d < off || (shape[d - off] == 1 && g.shape()[d] != 1))
        .collect();
    Ok(reduce_raw(g, ReduceKind::Sum, &axes)?.view(shape))
}

impl Reduce {
    fn check(&self, shape: &[usize]) -> Result<()> {
        if let Some(&a) = self.axes.iter().find(|&&a| a >= shape.len()) {
            return Err(Error::Shape(format!(
                "{:?}: axis {a} out of range for shape {shape:?}",
                self.kind
            )));
        }
        Ok(())
    }
}

impl Op for Reduce {
    fn name(&self) -> &'static str {
        "reduce"
    }

    fn reference(&self, x: &[&CpuTensor]) -> CpuTensor {
        let keep = keepdim_shape(&x[0].shape, &self.axes);
        let init = if self.kind == ReduceKind::Sum {
            0.0
        } else {
            f64::NEG_INFINITY
        };
        let mut y = CpuTensor::full(&keep, init);
        for i in 0..x[0].numel() {
            let mut idx = unravel(i, &x[0].shape);
            for &a in &self.axes {
                idx[a] = 0;
            }
            let v = x[0].data[i];
            let o = y.at_mut(&idx);
            *o = if self.kind == ReduceKind::Sum {
                *o + v
            } else {
                o.max(v)
            };
        }
        y.reshape(&out_shape(&x[0].shape, &self.axes, self.keepdim))
    }

    fn reference_backward(&self, x: &[&CpuTensor], dy: &CpuTensor) -> Vec<Option<CpuTensor>> {
        let keep = keepdim_shape(&x[0].shape, &self.axes);
        let dy = dy.reshape(&keep);
        let y = Reduce {
            keepdim: true,
            ..self.clone()
        }
        .reference(x);
        let key = |i: usize| {
            let mut idx = unravel(i, &x[0].shape);
            for &a in &self.axes {
                idx[a] = 0;
            }
            idx
        };
        let mut dx = CpuTensor::zeros(&x[0].shape);
        match self.kind {
            // dx = dy broadcast back over the reduced axes
            ReduceKind::Sum => {
                for i in 0..dx.numel() {
                    dx.data[i] = dy.at(&key(i));
                }
            }
            // dx = dy / (number of maxima) at every maximum (torch.amax)
            ReduceKind::Max => {
                let mut count = CpuTensor::zeros(&keep);
                for i in 0..dx.numel() {
                    if x[0].data[i] == y.at(&key(i)) {
                        *count.at_mut(&key(i)) += 1.0;
                    }
                }
                for i in 0..dx.numel() {
                    let k = key(i);
                    if x[0].data[i] == y.at(&k) {
                        dx.data[i] = dy.at(&k) / count.at(&k);
                    }
                }
            }
        }
        vec![Some(dx)]
    }

    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        self.check(x[0].shape())?;
        let y = reduce_raw(x[0], self.kind, &self.axes)?;
        Ok(y.view(&out_shape(x[0].shape(), &self.axes, self.keepdim)))
    }

    fn backward(&self, x: &[&Tensor], y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let keep = keepdim_shape(x[0].shape(), &self.axes);
        let dy = dy.view(&keep);
        let dx = match self.kind {
            // dx = dy broadcast back over the reduced axes
            ReduceKind::Sum => {
                let dx = Tensor::empty(x[0].shape())?;
                gpu().copy(dy.buffer(), &keep, dx.buffer(), x[0].shape())?;
                dx
            }
            ReduceKind::Max => {
                let dx = Tensor::empty(x[0].shape())?;
                let p = split(x[0].shape(), &self.axes);
                gpu().dispatch(
                    kernel!(reduce_max_backward),
                    &[],
                    &[x[0].buffer(), y.buffer(), dy.buffer(), dx.buffer()],
                    &p,
                    grid_rows(p.n_out as usize),
                )?;
                dx
            }
        };
        Ok(vec![Some(dx)])
    }
}

/// Resolves possibly negative axes against `t`, sorted and distinct.
fn resolve(t: &Tensor, axes: &[isize]) -> Result<Vec<usize>> {
    let mut v = axes
        .iter()
        .map(|&a| t.axis(a))
        .collect::<Result<Vec<_>>>()?;
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

impl Tensor {
    /// Σ over `axes` (negative counts from the end).
    pub fn try_sum(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        apply(
            Reduce {
                kind: ReduceKind::Sum,
                axes: resolve(self, axes)?,
                keepdim,
            },
            &[self],
        )
    }

    pub fn sum(&self, axes: &[isize], keepdim: bool) -> Tensor {
        self.try_sum(axes, keepdim)
            .unwrap_or_else(|e| panic!("sum{:?} over {axes:?}: {e}", self.shape()))
    }

    /// Σ over every element: a one-element tensor of shape [].
    pub fn sum_all(&self) -> Tensor {
        let axes: Vec<isize> = (0..self.rank() as isize).collect();
        self.sum(&axes, false)
    }

    /// Max over `axes`; the gradient is shared evenly among tied maxima (torch.amax).
    pub fn try_max(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        apply(
            Reduce {
                kind: ReduceKind::Max,
                axes: resolve(self, axes)?,
                keepdim,
            },
            &[self],
        )
    }

    pub fn max(&self, axes: &[isize], keepdim: bool) -> Tensor {
        self.try_max(axes, keepdim)
            .unwrap_or_else(|e| panic!("max{:?} over {axes:?}: {e}", self.shape()))
    }

    /// Mean over `axes`: Σ / count (composite).
    pub fn try_mean(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let count: usize = resolve(self, axes)?
            .iter()
            .map(|&a| self.shape()[a])
            .product();
        self.try_sum(axes, keepdim)?
            .try_mul_scalar(1.0 / count.max(1) as f32)
    }

    pub fn mean(&self, axes: &[isize], keepdim: bool) -> Tensor {
        self.try_mean(axes, keepdim)
            .unwrap_or_else(|e| panic!("mean{:?} over {axes:?}: {e}", self.shape()))
    }
}

#[cfg(feature = "testing")]
pub fn test_spec() -> crate::testing::TestSpec<Reduce> {
    use crate::testing::{shape_strategy, Case, TestSpec, Tol};
    use proptest::prelude::*;
    fn case(
        kind: ReduceKind,
        shape: Vec<usize>,
        mask: u32,
        keepdim: bool,
        seed: u64,
    ) -> Case<Reduce> {
        let mut rng = crate::Rng::new(seed);
        let axes: Vec<usize> = (0..shape.len()).filter(|i| mask >> i & 1 == 1).collect();
        let x = CpuTensor::uniform(&shape, -2.0, 2.0, &mut rng);
        Case::new(
            Reduce {
                kind,
                axes: axes.clone(),
                keepdim,
            },
            vec![x],
            format!("{kind:?} axes {axes:?} keepdim {keepdim}"),
        )
    }
    let kinds = prop_oneof![Just(ReduceKind::Sum), Just(ReduceKind::Max)];
    TestSpec {
        // Up to 400k elements: full reductions then take the chunked two-pass path.
        cases: (
            kinds.clone(),
            shape_strategy(1..=5, 400_000),
            any::<u32>(),
            any::<bool>(),
            any::<u64>(),
        )
            .prop_map(|(k, s, m, kd, seed)| case(k, s, m, kd, seed))
            .boxed(),
        small_cases: (
            kinds,
            shape_strategy(1..=3, 48),
            any::<u32>(),
            any::<bool>(),
            any::<u64>(),
        )
            .prop_map(|(k, s, m, kd, seed)| case(k, s, m, kd, seed))
            .boxed(),
        // f32 tree sums of up to 4e5 terms of |x| ≤ 2: error ~ log2(n)·ulp·Σ|x| ≈ 1e-3 absolute.
        forward_tol: Tol::new(2e-3, 1e-5, "f32 tree sums of up to 4e5 terms"),
        backward_tol: Tol::new(1e-6, 1e-6, "sum: a copy of dy; max: dy/count, one rounding"),
    }
}
