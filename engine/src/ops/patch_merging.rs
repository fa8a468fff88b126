//! Video Swin patch merging's 2×2 gather (Liu et al. 2022, "Video Swin Transformer",
//! arXiv:2106.13230; official VST `swin_transformer.py` PatchMerging.forward up to the `cat`,
//! seed-models.md §3.1), on channels-last x (B, D, H, W, C):
//!   pad H and W at the end with zeros if odd (D is never merged), then
//!   y = cat([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], −1)
//!   → (B, D, ⌈H/2⌉, ⌈W/2⌉, 4C); quadrant order (h0,w0), (h1,w0), (h0,w1), (h1,w1).
//! The model's PatchMerging is this gather → LayerNorm(4C) → Linear(4C → 2C, no bias)
//! (models/src/video_swin.rs). Padding is index arithmetic in the kernel, not a copy.
//! Backward: every input element went to exactly one output element, so the scatter is a gather
//! of dy (no atomics); dy at padding positions is dropped.
//! Kernels: shaders/patch_merging_forward.wgsl, shaders/patch_merging_backward.wgsl.

use crate::autograd::apply;
use crate::error::{Error, Result};
use crate::gpu::{gpu, grid};
use crate::kernel;
use crate::ops::Op;
use crate::reference::CpuTensor;
use crate::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct PatchMerging;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    h: u32,
    w: u32,
    c: u32,
    ho: u32,
    wo: u32,
}

/// Where quadrant `q` of output cell (i, j) comes from: (2i + (q & 1), 2j + (q >> 1)).
fn source(i: usize, j: usize, q: usize) -> (usize, usize) {
    (2 * i + (q & 1), 2 * j + (q >> 1))
}

/// (B, D, H, W, C) -> (B, D, ⌈H/2⌉, ⌈W/2⌉, 4C), or a shape error naming x.
fn out_shape(x: &[usize]) -> Result<[usize; 5]> {
    if x.len() != 5 || x.contains(&0) {
        return Err(Error::Shape(format!(
            "patch_merging: x {x:?} must be a non-empty (B, D, H, W, C) grid"
        )));
    }
    Ok([x[0], x[1], x[2].div_ceil(2), x[3].div_ceil(2), 4 * x[4]])
}

impl PatchMerging {
    fn params(x: &[usize], n: usize) -> Params {
        let u = |v: usize| v as u32;
        Params {
            n: u(n),
            h: u(x[2]),
            w: u(x[3]),
            c: u(x[4]),
            ho: u(x[2].div_ceil(2)),
            wo: u(x[3].div_ceil(2)),
        }
    }
}

impl Op for PatchMerging {
    fn name(&self) -> &'static str {
        "patch_merging"
    }

    // y[b,d,i,j,q·C+c] = x[b,d,2i+(q&1),2j+(q>>1),c], zero past the end of H or W
    fn reference(&self, x: &[&CpuTensor]) -> CpuTensor {
        let s = &x[0].shape;
        let c = s[4];
        CpuTensor::from_fn(&out_shape(s).expect("patch_merging reference"), |o| {
            let (h, w) = source(o[2], o[3], o[4] / c);
            if h < s[2] && w < s[3] {
                x[0].at(&[o[0], o[1], h, w, o[4] % c])
            } else {
                0.0
            }
        })
    }

    fn reference_backward(&self, x: &[&CpuTensor], dy: &CpuTensor) -> Vec<Option<CpuTensor>> {
        let c = x[0].shape[4];
        let mut dx = CpuTensor::zeros(&x[0].shape);
        for i in 0..dy.numel() {
            let o = crate::reference::unravel(i, &dy.shape);
            let (h, w) = source(o[2], o[3], o[4] / c);
            if h < dx.shape[2] && w < dx.shape[3] {
                *dx.at_mut(&[o[0], o[1], h, w, o[4] % c]) += dy.data[i];
            }
        }
        vec![Some(dx)]
    }

    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        let y = Tensor::empty(&out_shape(x[0].shape())?)?;
        let p = PatchMerging::params(x[0].shape(), y.numel());
        // x (B, D, H, W, C) -> y (B, D, HO, WO, 4C)
        gpu().dispatch(
            kernel!(patch_merging_forward),
            &[],
            &[x[0].buffer(), y.buffer()],
            &p,
            grid(y.numel(), 256),
        )?;
        Ok(y)
    }

    // dx[b,d,h,w,c] = dy[b,d,⌊h/2⌋,⌊w/2⌋,q·C+c], q = (h & 1) + 2·(w & 1): a permutation of dy
    // minus the padding entries, so each dx element has exactly one source.
    fn backward(&self, x: &[&Tensor], _y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let dx = Tensor::empty(x[0].shape())?;
        let p = PatchMerging::params(x[0].shape(), dx.numel());
        // dy (B, D, HO, WO, 4C) -> dx (B, D, H, W, C)
        gpu().dispatch(
            kernel!(patch_merging_backward),
            &[],
            &[dy.buffer(), dx.buffer()],
            &p,
            grid(dx.numel(), 256),
        )?;
        Ok(vec![Some(dx)])
    }
}

impl Tensor {
    /// Video Swin's patch-merging gather on channels-last x (B, D, H, W, C): the 2×2 spatial
    /// neighbours, in the official order (h0,w0), (h1,w0), (h0,w1), (h1,w1), concatenated on
    /// channels, with an odd H or W zero-padded at the end → (B, D, ⌈H/2⌉, ⌈W/2⌉, 4C).
    ///
    /// ```no_run
    /// use tubelet::Tensor;
    /// let x = Tensor::randn(&[1, 16, 56, 56, 96], 0.0, 1.0, 1).unwrap(); // Swin-T stage 1
    /// let y = x.patch_merging(); // (1, 16, 28, 28, 384), then LayerNorm(384) and Linear(384 → 192)
    /// ```
    pub fn try_patch_merging(&self) -> Result<Tensor> {
        apply(PatchMerging, &[self])
    }

    pub fn patch_merging(&self) -> Tensor {
        self.try_patch_merging().unwrap_or_else(|e| panic!("{e}"))
    }
}

#[cfg(feature = "testing")]
pub fn case(x: [usize; 5], seed: u64) -> crate::testing::Case<PatchMerging> {
    let mut rng = crate::Rng::new(seed);
    crate::testing::Case::new(
        PatchMerging,
        vec![CpuTensor::uniform(&x, -1.0, 1.0, &mut rng)],
        String::new(),
    )
}

/// Video Swin stage shapes at reduced sizes: even grids (Swin-T at 224²: 56 → 28 → 14 → 7),
/// odd H and W (256² crops: 64 → 32 → 16 → 8 is even, but 7 and 9 occur at other sizes), H or W
/// of 1 (one padded neighbour), and D = 1.
#[cfg(feature = "testing")]
pub fn seed_cases() -> Vec<crate::testing::Case<PatchMerging>> {
    vec![
        case([1, 4, 14, 14, 24], 1),
        case([2, 3, 7, 9, 5], 2),
        case([1, 1, 1, 5, 3], 3),
        case([1, 2, 3, 1, 4], 4),
        case([1, 1, 1, 1, 1], 5),
    ]
}

#[cfg(feature = "testing")]
pub fn test_spec() -> crate::testing::TestSpec<PatchMerging> {
    use crate::testing::{dim_strategy, TestSpec, Tol};
    use proptest::prelude::*;
    fn geometry(max: usize) -> impl Strategy<Value = [usize; 5]> {
        (
            1usize..=3,
            1usize..=9,
            dim_strategy(),
            dim_strategy(),
            1usize..=40,
        )
            .prop_map(move |(b, d, h, w, c)| {
                let (mut h, mut w) = (h, w);
                while b * d * h * w * c > max && h * w > 1 {
                    (h, w) = ((h / 2).max(1), (w / 2).max(1));
                }
                [b, d, h, w, c]
            })
    }
    TestSpec {
        cases: prop_oneof![
            4 => (geometry(300_000), any::<u64>()).prop_map(|(x, seed)| case(x, seed)),
            1 => prop::sample::select(seed_cases()),
        ]
        .boxed(),
        small_cases: (geometry(64), any::<u64>())
            .prop_filter_map("≤ 64 elements", |(x, seed)| {
                (x.iter().product::<usize>() <= 64).then(|| case(x, seed))
            })
            .boxed(),
        forward_tol: Tol::new(0.0, 0.0, "a copy"),
        backward_tol: Tol::new(0.0, 0.0, "a copy (one source per element)"),
    }
}
