//! Softmax over the last axis, numerically stable (max-subtracted):
//!   y[r, c] = exp(x[r, c] − m_r) / Σ_c' exp(x[r, c'] − m_r),   m_r = max_c x[r, c]
//! Kernels: shaders/softmax_forward.wgsl, shaders/softmax_backward.wgsl, one workgroup per row
//! (`gpu::grid_rows`, so more than 65,535 rows fold into a 2-D grid).
//!
//! Also home of the two helpers every row kernel (softmax, cross_entropy, layer_norm) shares:
//! [`row_wg`] (workgroup size for a row length) and [`check_row`] (the row-length limit).

use crate::autograd::apply;
use crate::error::Result;
use crate::gpu::{gpu, grid_rows};
use crate::kernel;
use crate::ops::Op;
use crate::reference::CpuTensor;
use crate::tensor::Tensor;

/// Longest row a one-workgroup-per-row kernel accepts: 256 lanes × 16,384 trips. The kernels make
/// at most three strided passes over a row, so a lane loops at most 3 · 16,384 + 2 · log2(256)
/// = 49,168 times in all, below Mesa 22 llvmpipe's silent 65,535-trip limit (engine-notes.md),
/// which counts every loop of an invocation together.
pub const MAX_ROW: usize = 256 * 16_384;

/// Workgroup size for rows of `c` elements: a power of two (the tree reductions halve it), 256 at
/// most, and no wider than the row needs (32 at least): attention rows of 49 or 98 tokens would
/// otherwise leave most of 256 lanes idle.
pub(crate) fn row_wg(c: usize) -> u32 {
    (c.div_ceil(8).max(1).next_power_of_two() as u32).clamp(8, 256)
}

/// The error for a row above [`MAX_ROW`], naming the op and the shape.
pub(crate) fn check_row(op: &str, shape: &[usize]) -> Result<()> {
    let c = shape.last().copied().unwrap_or(1);
    if c > MAX_ROW {
        crate::bail!(
            Shape,
            "{op}: last axis of {shape:?} has {c} elements, above the {MAX_ROW} a one-workgroup \
             row kernel handles (longer loops stop silently on Mesa 22 lavapipe)"
        );
    }
    Ok(())
}

/// Softmax over the last axis. The backward needs only the output y, which the tape keeps.
#[derive(Clone, Copy, Debug, Default)]
pub struct Softmax;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    c: u32,
}

/// (rows, C) of a tensor seen as rows of its last axis.
pub(crate) fn rows_and_c(shape: &[usize]) -> (usize, usize) {
    let c = shape.last().copied().unwrap_or(1);
    let rows = shape.iter().product::<usize>().checked_div(c).unwrap_or(0);
    (rows, c)
}

impl Op for Softmax {
    fn name(&self) -> &'static str {
        "softmax"
    }

    fn reference(&self, x: &[&CpuTensor]) -> CpuTensor {
        let (rows, c) = rows_and_c(&x[0].shape);
        let mut y = CpuTensor::zeros(&x[0].shape);
        for r in 0..rows {
            let row = &x[0].data[r * c..(r + 1) * c];
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let mut s = 0.0;
            for &v in row {
                s += (v - m).exp();
            }
            for j in 0..c {
                y.data[r * c + j] = (row[j] - m).exp() / s;
            }
        }
        y
    }

    fn reference_backward(&self, x: &[&CpuTensor], dy: &CpuTensor) -> Vec<Option<CpuTensor>> {
        let y = self.reference(x);
        let (rows, c) = rows_and_c(&x[0].shape);
        let mut dx = CpuTensor::zeros(&x[0].shape);
        for r in 0..rows {
            let mut dot = 0.0;
            for j in 0..c {
                dot += dy.data[r * c + j] * y.data[r * c + j];
            }
            for j in 0..c {
                let i = r * c + j;
                dx.data[i] = y.data[i] * (dy.data[i] - dot);
            }
        }
        vec![Some(dx)]
    }

    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        if x[0].rank() == 0 {
            crate::bail!(
                Shape,
                "softmax: needs at least one axis, got a scalar of shape []"
            );
        }
        check_row("softmax", x[0].shape())?;
        let (rows, c) = rows_and_c(x[0].shape());
        let y = Tensor::empty(x[0].shape())?;
        let p = Params {
            rows: rows as u32,
            c: c as u32,
        };
        // (ROWS, C) -> (ROWS, C)
        let wg = [("WG", row_wg(c) as f64)];
        gpu().dispatch(
            kernel!(softmax_forward),
            &wg,
            &[x[0].buffer(), y.buffer()],
            &p,
            grid_rows(rows),
        )?;
        Ok(y)
    }

    // dx = y ⊙ (dy − Σ_row dy ⊙ y)   (the Jacobian diag(y) − y·yᵀ applied to dy)
    fn backward(&self, x: &[&Tensor], y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (rows, c) = rows_and_c(x[0].shape());
        let dx = Tensor::empty(x[0].shape())?;
        let p = Params {
            rows: rows as u32,
            c: c as u32,
        };
        // (ROWS, C), (ROWS, C) -> (ROWS, C)
        let wg = [("WG", row_wg(c) as f64)];
        gpu().dispatch(
            kernel!(softmax_backward),
            &wg,
            &[y.buffer(), dy.buffer(), dx.buffer()],
            &p,
            grid_rows(rows),
        )?;
        Ok(vec![Some(dx)])
    }
}

impl Tensor {
    /// Softmax over the last axis, max-subtracted: y = exp(x − max) / Σ exp(x − max).
    ///
    /// ```no_run
    /// let x = tubelet::Tensor::randn(&[2, 5], 0.0, 1.0, 1).unwrap();
    /// let p = x.softmax(); // (2, 5), each row sums to 1
    /// ```
    pub fn try_softmax(&self) -> Result<Tensor> {
        apply(Softmax, &[self])
    }

    /// Softmax over the last axis; see [`Tensor::try_softmax`].
    pub fn softmax(&self) -> Tensor {
        self.try_softmax()
            .unwrap_or_else(|e| panic!("softmax{:?}: {e}", self.shape()))
    }
}

#[cfg(feature = "testing")]
pub fn test_spec() -> crate::testing::TestSpec<Softmax> {
    use crate::testing::{shape_strategy, Case, TestSpec, Tol};
    use proptest::prelude::*;
    // Logits spread over ±8 around a shift of up to ±100: exp(100) overflows f32, so an
    // unstabilised kernel fails here.
    fn case(shape: Vec<usize>, shift: f64, seed: u64) -> Case<Softmax> {
        let mut rng = crate::Rng::new(seed);
        let x = CpuTensor::uniform(&shape, -8.0, 8.0, &mut rng).map(|v| v + shift);
        Case::new(Softmax, vec![x], format!("shift {shift:.1}"))
    }
    let shapes = prop_oneof![
        6 => shape_strategy(1..=4, 200_000),
        // long rows: several strided trips per lane
        1 => (1usize..=3, 10_000usize..=70_000).prop_map(|(r, c)| vec![r, c]),
        // more than 65,535 rows: the row grid folds into 2-D
        1 => (65_536usize..=70_000, 1usize..=3).prop_map(|(r, c)| vec![r, c]),
    ];
    TestSpec {
        cases: (shapes, -100.0f64..100.0, any::<u64>())
            .prop_map(|(s, sh, seed)| case(s, sh, seed))
            .boxed(),
        small_cases: (shape_strategy(1..=3, 48), -100.0f64..100.0, any::<u64>())
            .prop_map(|(s, sh, seed)| case(s, sh, seed))
            .boxed(),
        // f32 exp (a few ulps) and a row sum of up to 7e4 terms of at most 1: relative to y.
        forward_tol: Tol::new(1e-7, 2e-5, "f32 exp and a row sum of up to 7e4 terms"),
        // dx = y·(dy − Σdy·y): y carries the forward's relative error times |dy − Σdy·y| ≤ 2, and
        // the f32 row dot product errs absolutely (by ~1e-6), scaled by y ≤ 1.
        backward_tol: Tol::new(
            5e-6,
            5e-5,
            "forward's relative error on y, f32 row dot product",
        ),
    }
}
