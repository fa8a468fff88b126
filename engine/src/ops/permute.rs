//! `permute`: the dims of x reordered, rank ≤ 8.
//! y[i_0, …, i_{R−1}] = x[j] with j_{perm[d]} = i_d;  dx = permute(dy, perm⁻¹).
//! Rank 8 is what video patchify needs: (B, C, T/t, t, H/p, p, W/p, p) →
//! (B, T/t, H/p, W/p, C, t, p, p). `transpose(a, b)` is the two-dim special case.
//! Kernel: shaders/permute_forward.wgsl (output-contiguous strided copy), also the backward.

use crate::autograd::apply;
use crate::error::Result;
use crate::gpu::{gpu, grid};
use crate::kernel;
use crate::ops::Op;
use crate::reference::{ravel, unravel, CpuTensor};
use crate::shape::{contiguous_strides, pack8};
use crate::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct Permute {
    /// Output dim d is input dim `perm[d]`.
    pub perm: Vec<usize>,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    rank: u32,
    _pad: [u32; 2], // WGSL aligns the vec4 arrays to 16 bytes
    shape: [u32; 8],
    stride: [u32; 8],
}

/// Checks that `perm` is a permutation of 0..rank(shape), rank ≤ 8.
pub(crate) fn check_perm(shape: &[usize], perm: &[usize]) -> Result<()> {
    if perm.len() != shape.len() {
        crate::bail!(
            Shape,
            "permute: {} dims {perm:?} for shape {shape:?} of rank {}",
            perm.len(),
            shape.len()
        );
    }
    if shape.len() > 8 {
        crate::bail!(Shape, "permute: rank {} above 8 ({shape:?})", shape.len());
    }
    for (d, &a) in perm.iter().enumerate() {
        if a >= shape.len() || perm[..d].contains(&a) {
            crate::bail!(
                Shape,
                "permute: {perm:?} is not a permutation of the dims of shape {shape:?} \
                (entry {d} = {a} is out of range or repeated)"
            );
        }
    }
    Ok(())
}

fn permuted(shape: &[usize], perm: &[usize]) -> Vec<usize> {
    perm.iter().map(|&a| shape[a]).collect()
}

fn inverse(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (d, &a) in perm.iter().enumerate() {
        inv[a] = d;
    }
    inv
}

/// The kernel's (dims, strides) in output order: size-1 dims dropped and runs of output dims
/// that are also adjacent, in order, in x merged, so the 8-D patchify becomes a ≤ 6-D copy and
/// a permutation that moves nothing becomes one dim of stride 1.
fn plan(shape: &[usize], perm: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let strides = contiguous_strides(shape);
    let mut dims: Vec<usize> = Vec::new();
    let mut st: Vec<usize> = Vec::new();
    for &a in perm {
        if shape[a] == 1 {
            continue;
        }
        match (dims.last_mut(), st.last_mut()) {
            // previous output dim steps exactly over this one in x: one longer dim
            (Some(d), Some(s)) if *s == strides[a] * shape[a] => {
                *d *= shape[a];
                *s = strides[a];
            }
            _ => {
                dims.push(shape[a]);
                st.push(strides[a]);
            }
        }
    }
    if dims.is_empty() {
        return (vec![1], vec![1]);
    }
    (dims, st)
}

/// x permuted by `perm` (already checked), without autograd.
pub(crate) fn permute_raw(x: &Tensor, perm: &[usize]) -> Result<Tensor> {
    let y = Tensor::empty(&permuted(x.shape(), perm))?;
    let (dims, strides) = plan(x.shape(), perm);
    let n = y.numel();
    let p = Params {
        n: n as u32,
        rank: dims.len() as u32,
        _pad: [0; 2],
        shape: pack8(&dims),
        stride: pack8(&strides),
    };
    // (x through permuted strides) -> (N) contiguous
    gpu().dispatch(
        kernel!(permute_forward),
        &[("RANK", p.rank as f64)],
        &[x.buffer(), y.buffer()],
        &p,
        grid(n, 256),
    )?;
    Ok(y)
}

impl Op for Permute {
    fn name(&self) -> &'static str {
        "permute"
    }

    fn reference(&self, x: &[&CpuTensor]) -> CpuTensor {
        let out = permuted(&x[0].shape, &self.perm);
        let mut y = CpuTensor::zeros(&out);
        for i in 0..y.numel() {
            let idx = unravel(i, &out);
            let mut src = vec![0; self.perm.len()];
            for d in 0..self.perm.len() {
                src[self.perm[d]] = idx[d];
            }
            y.data[i] = x[0].data[ravel(&src, &x[0].shape)];
        }
        y
    }

    fn reference_backward(&self, x: &[&CpuTensor], dy: &CpuTensor) -> Vec<Option<CpuTensor>> {
        // Scatter each dy element back to where its value came from.
        let mut dx = CpuTensor::zeros(&x[0].shape);
        for i in 0..dy.numel() {
            let idx = unravel(i, &dy.shape);
            let mut src = vec![0; self.perm.len()];
            for d in 0..self.perm.len() {
                src[self.perm[d]] = idx[d];
            }
            *dx.at_mut(&src) += dy.data[i];
        }
        vec![Some(dx)]
    }

    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        check_perm(x[0].shape(), &self.perm)?;
        permute_raw(x[0], &self.perm)
    }

    // dx = permute(dy, perm⁻¹): a permutation's Jacobian is a permutation matrix, its transpose
    // the inverse permutation.
    fn backward(&self, _x: &[&Tensor], _y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(permute_raw(dy, &inverse(&self.perm))?)])
    }
}

impl Tensor {
    /// The dims reordered: output dim d is input dim `perm[d]` (rank ≤ 8).
    pub fn try_permute(&self, perm: &[usize]) -> Result<Tensor> {
        apply(
            Permute {
                perm: perm.to_vec(),
            },
            &[self],
        )
    }

    /// The dims reordered: output dim d is input dim `perm[d]` (rank ≤ 8). Copies.
    ///
    /// ```no_run
    /// # use tubelet::Tensor;
    /// let x = Tensor::zeros(&[2, 3, 8, 4, 4]); // (B, C, T, H, W)
    /// assert_eq!(x.permute(&[0, 2, 3, 4, 1]).shape(), &[2, 8, 4, 4, 3]); // (B, T, H, W, C)
    /// ```
    pub fn permute(&self, perm: &[usize]) -> Tensor {
        self.try_permute(perm)
            .unwrap_or_else(|e| panic!("permute{:?} by {perm:?}: {e}", self.shape()))
    }

    /// Dims `a` and `b` swapped.
    pub fn try_transpose(&self, a: usize, b: usize) -> Result<Tensor> {
        let r = self.rank();
        if a >= r || b >= r {
            crate::bail!(
                Shape,
                "transpose: dims ({a}, {b}) out of range for shape {:?}",
                self.shape()
            );
        }
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(a, b);
        self.try_permute(&perm)
    }

    /// Dims `a` and `b` swapped: (B, N, D).transpose(1, 2) is (B, D, N).
    pub fn transpose(&self, a: usize, b: usize) -> Tensor {
        self.try_transpose(a, b)
            .unwrap_or_else(|e| panic!("transpose{:?} ({a}, {b}): {e}", self.shape()))
    }
}

#[cfg(feature = "testing")]
pub fn test_spec() -> crate::testing::TestSpec<Permute> {
    use crate::testing::{shape_strategy, Case, TestSpec, Tol};
    use proptest::prelude::*;
    fn case(shape: Vec<usize>, perm: Vec<usize>, seed: u64) -> Case<Permute> {
        let mut rng = crate::Rng::new(seed);
        let x = CpuTensor::uniform(&shape, -2.0, 2.0, &mut rng);
        Case::new(
            Permute { perm: perm.clone() },
            vec![x],
            format!("perm {perm:?}"),
        )
    }
    fn strategy(
        ranks: std::ops::RangeInclusive<usize>,
        max: usize,
    ) -> BoxedStrategy<Case<Permute>> {
        shape_strategy(ranks, max)
            .prop_flat_map(|s| {
                let perm = Just((0..s.len()).collect::<Vec<_>>()).prop_shuffle();
                (Just(s), perm, any::<u64>())
            })
            .prop_map(|(s, p, seed)| case(s, p, seed))
            .boxed()
    }
    TestSpec {
        // Ranks up to 8 (patchify); numel up to 200k so the 1-D grid passes 256 workgroups.
        cases: strategy(1..=8, 200_000),
        small_cases: strategy(1..=8, 48),
        forward_tol: Tol::new(0.0, 0.0, "a copy"),
        backward_tol: Tol::new(0.0, 0.0, "a copy of dy"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_merges_adjacent_dims_and_drops_ones() {
        // identity: one dim of stride 1
        assert_eq!(plan(&[2, 3, 4], &[0, 1, 2]), (vec![24], vec![1]));
        // (B, N, D) -> (B, D, N): nothing merges
        assert_eq!(
            plan(&[2, 3, 4], &[0, 2, 1]),
            (vec![2, 4, 3], vec![12, 1, 4])
        );
        // (A, B, C) -> (C, A, B): A and B stay adjacent
        assert_eq!(plan(&[2, 3, 4], &[2, 0, 1]), (vec![4, 6], vec![1, 4]));
        // size-1 dims vanish
        assert_eq!(plan(&[1, 5, 1], &[2, 1, 0]), (vec![5], vec![1]));
    }
}
