//! Shapes, strides, broadcasting and the packing of shapes into kernel parameters: plain
//! arithmetic on `[usize]`, with no tensor, device or tape behind it.
//!
//! Everything else builds on this module and it imports nothing of the engine but `error`: the
//! tensor (element counts), the CPU reference (strides), the device (the broadcast copy in
//! gpu.rs) and the ops (binary, reduce, expand, matmul, permute read broadcast strides and pack
//! them into their `Params`). Before it existed these lived in tensor.rs and ops/binary.rs, and
//! reference → tensor and binary ↔ reduce ↔ expand imported each other in cycles.
//! Multi-index ↔ offset helpers for the CPU loops stay in reference.rs (`ravel`, `unravel`).

use smallvec::SmallVec;

use crate::error::{Error, Result};

/// Dimensions, outermost first. Video tensors are `(B, C, T, H, W)` or `(B, T, H, W, C)`.
pub type Shape = SmallVec<[usize; 6]>;

/// The largest rank a kernel's packed shape holds (`[u32; 8]` in every `Params`).
pub const MAX_RANK: usize = 8;

/// Number of elements of a tensor of `shape` (1 for rank 0).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// The element count of `shape`, or an error when it overflows (a config asking for a
/// 10³⁰-wide layer must not wrap around or panic).
pub fn checked_numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= (u64::MAX / 4) as usize)
        .ok_or_else(|| {
            Error::DeviceLimit(format!(
                "a tensor of shape {shape:?} has more elements than any memory holds"
            ))
        })
}

/// Row-major strides of a contiguous tensor of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Shape {
    let mut s: Shape = SmallVec::from_elem(1, shape.len());
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The broadcast shape of `a` and `b` (NumPy rules: align from the right; each pair of dims is
/// equal or one of them is 1), or an error naming both.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Shape> {
    let r = a.len().max(b.len());
    let mut out = Shape::new();
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out.push(match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(Error::Shape(format!(
                    "cannot broadcast shapes {a:?} and {b:?}"
                )))
            }
        });
    }
    if r > MAX_RANK {
        return Err(Error::Shape(format!(
            "broadcast of {a:?} and {b:?}: rank above {MAX_RANK}"
        )));
    }
    Ok(out)
}

/// Element strides of a contiguous tensor of `shape` read at the dims of `out` (right-aligned;
/// 0 on broadcast dims), packed for a kernel.
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> [u32; MAX_RANK] {
    let strides = contiguous_strides(shape);
    let off = out.len() - shape.len();
    let mut s = [0u32; MAX_RANK];
    for d in 0..shape.len() {
        s[d + off] = if shape[d] == 1 && out[d + off] != 1 {
            0
        } else {
            strides[d] as u32
        };
    }
    s
}

/// Dims packed for a kernel's `array<u32, 8>`; unused trailing entries are 1.
pub fn pack8(v: &[usize]) -> [u32; MAX_RANK] {
    let mut a = [1u32; MAX_RANK];
    for (i, &x) in v.iter().enumerate() {
        a[i] = x as u32;
    }
    a
}

/// The `Params` of shaders/binary_forward.wgsl and binary_backward.wgsl: the output's dims and
/// both inputs' broadcast strides, merged (see [`broadcast_params`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BroadcastParams {
    pub n: u32,
    pub rank: u32,
    pub _pad: [u32; 2],
    pub shape: [u32; 8],
    pub a_stride: [u32; 8],
    pub b_stride: [u32; 8],
}

/// Packs `a` and `b`, both read at the broadcast shape `out`, for the binary kernels.
///
/// Runs of dims that both inputs step over contiguously are merged and size-1 dims dropped, so
/// a same-shape op runs at rank 1 and a bias add at rank 2: the kernels' index loop is RANK
/// trips (an override constant), and each trip is div/mod work per element on llvmpipe.
pub fn broadcast_params(a: &[usize], b: &[usize], out: &[usize]) -> BroadcastParams {
    let (sa, sb) = (broadcast_strides(a, out), broadcast_strides(b, out));
    let (mut dims, mut ta, mut tb): (Vec<usize>, Vec<u32>, Vec<u32>) = (vec![], vec![], vec![]);
    for d in (0..out.len()).rev() {
        if out[d] == 1 {
            continue;
        }
        match (dims.last_mut(), ta.last(), tb.last()) {
            (Some(size), Some(&ia), Some(&ib))
                if sa[d] as usize == ia as usize * *size
                    && sb[d] as usize == ib as usize * *size =>
            {
                *size *= out[d];
            }
            _ => {
                dims.push(out[d]);
                ta.push(sa[d]);
                tb.push(sb[d]);
            }
        }
    }
    if dims.is_empty() {
        (dims, ta, tb) = (vec![1], vec![0], vec![0]);
    }
    dims.reverse();
    ta.reverse();
    tb.reverse();
    let mut a_stride = [0u32; MAX_RANK];
    let mut b_stride = [0u32; MAX_RANK];
    a_stride[..ta.len()].copy_from_slice(&ta);
    b_stride[..tb.len()].copy_from_slice(&tb);
    BroadcastParams {
        n: numel(out) as u32,
        rank: dims.len() as u32,
        _pad: [0; 2],
        shape: pack8(&dims),
        a_stride,
        b_stride,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(
            broadcast_shape(&[2, 1, 4], &[3, 1]).unwrap().as_slice(),
            [2, 3, 4]
        );
        assert_eq!(broadcast_shape(&[], &[5]).unwrap().as_slice(), [5]);
        assert!(broadcast_shape(&[2, 3], &[4, 3]).is_err());
        assert!(checked_numel(&[usize::MAX, 2]).is_err());
    }

    #[test]
    fn params_merge_contiguous_runs() {
        // Same shape: one dim of 24. A bias (4,) over (2, 3, 4): (6, 4) with b's outer stride 0.
        let p = broadcast_params(&[2, 3, 4], &[2, 3, 4], &[2, 3, 4]);
        assert_eq!((p.rank, p.shape[0], p.a_stride[0]), (1, 24, 1));
        let p = broadcast_params(&[2, 3, 4], &[4], &[2, 3, 4]);
        assert_eq!(
            (p.rank, &p.shape[..2], &p.b_stride[..2]),
            (2, &[6, 4][..], &[0, 1][..])
        );
    }
}
