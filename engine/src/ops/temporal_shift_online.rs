//! TSM's online (uni-directional) temporal shift (Lin et al., ICCV 2019, arXiv:1811.08383, §3.3
//! "online models"; official `online_demo/mobilenet_v2_tsm.py`, seed-models.md §4.1), one frame
//! at a time. For the current frame x (N, C, H, W), fold = ⌊C / fold_div⌋ (TSM: 8) and the
//! cached first fold channels of the previous frame, cache (N, fold, H, W) (zeros at frame 0):
//!   y         = cat(cache, x[:, fold:])   on channels   (past → current, channels [0, fold))
//!   new_cache = x[:, :fold]
//! NOTE: the online layout differs from the offline one (temporal_shift.rs: [0, fold) from the
//! future, [fold, 2·fold) from the past), so offline weights are not drop-in for online use.
//! Backward: dcache = dy[:, :fold], dx = dy with channels [0, fold) zeroed, plus new_cache's own
//! gradient, which flows through `narrow` (a separate op on the tape).
//! Kernel: shaders/temporal_shift_online_forward.wgsl (MODE 0 forward, MODE 1 dx); dcache is
//! `narrow_raw`.
//!
//! "In place" vs "residual" use, for both shifts (TSM's `--shift_place`, ops/temporal_shift.py):
//! - *in place* (`shift_place=block`): the shift is applied to the block's input and both the
//!   residual branch and the shortcut see the shifted tensor: `y = block(x.temporal_shift(..))`.
//! - *residual* (`blockres`, TSM's default and the online demo's `InvertedResidualWithShift`):
//!   only the residual branch's first conv reads the shifted tensor, the shortcut keeps the
//!   unshifted x, so the spatial features of the current frame are not lost:
//!   `y = x + conv(x.temporal_shift(..))` offline, or online
//!   `let (s, cache) = x.temporal_shift_online(cache, 8); y = x + conv(s)`.
//!
//! Neither op writes into x: "in place" in TSM's code is an in-place slice copy, an allocation
//! detail; here both return a new tensor and leave x intact for the shortcut.

use crate::autograd::apply;
use crate::error::{Error, Result};
use crate::gpu::{gpu, grid};
use crate::kernel;
use crate::ops::narrow::narrow_raw;
use crate::ops::Op;
use crate::reference::CpuTensor;
use crate::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct TemporalShiftOnline {
    pub fold_div: usize,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: u32,
    hw: u32,
    fold: u32,
}

impl TemporalShiftOnline {
    /// fold, or an error naming the shapes and fold_div.
    fn check(&self, x: &[usize], cache: &[usize]) -> Result<usize> {
        let what = || {
            format!(
                "temporal_shift_online: x {x:?}, cache {cache:?}, fold_div {}",
                self.fold_div
            )
        };
        if x.len() != 4 {
            return Err(Error::Shape(format!(
                "{}: x must be one frame (N, C, H, W)",
                what()
            )));
        }
        if self.fold_div == 0 {
            return Err(Error::Shape(format!("{}: fold_div must be ≥ 1", what())));
        }
        let fold = x[1] / self.fold_div;
        if cache != [x[0], fold, x[2], x[3]] {
            return Err(Error::Shape(format!(
                "{}: cache must be (N, C/fold_div, H, W) = {:?}",
                what(),
                [x[0], fold, x[2], x[3]]
            )));
        }
        Ok(fold)
    }

    fn launch(&self, x: &Tensor, cache: &Tensor, mode: u32) -> Result<Tensor> {
        let s = x.shape();
        let y = Tensor::empty(s)?;
        let p = Params {
            n: y.numel() as u32,
            c: s[1] as u32,
            hw: (s[2] * s[3]) as u32,
            fold: (s[1] / self.fold_div) as u32,
        };
        if y.numel() > 0 {
            // (N, C, H, W), (N, fold, H, W) -> (N, C, H, W)
            gpu().dispatch(
                kernel!(temporal_shift_online_forward),
                &[("MODE", mode as f64)],
                &[x.buffer(), cache.buffer(), y.buffer()],
                &p,
                grid(y.numel(), 256),
            )?;
        }
        Ok(y)
    }
}

impl Op for TemporalShiftOnline {
    fn name(&self) -> &'static str {
        "temporal_shift_online"
    }

    fn reference(&self, x: &[&CpuTensor]) -> CpuTensor {
        let fold = x[1].shape[1];
        CpuTensor::from_fn(&x[0].shape, |i| {
            if i[1] < fold {
                x[1].at(i)
            } else {
                x[0].at(i)
            }
        })
    }

    fn reference_backward(&self, x: &[&CpuTensor], dy: &CpuTensor) -> Vec<Option<CpuTensor>> {
        let fold = x[1].shape[1];
        let dx = CpuTensor::from_fn(&dy.shape, |i| if i[1] < fold { 0.0 } else { dy.at(i) });
        let dcache = CpuTensor::from_fn(&x[1].shape, |i| dy.at(i));
        vec![Some(dx), Some(dcache)]
    }

    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        self.check(x[0].shape(), x[1].shape())?;
        self.launch(x[0], x[1], 0)
    }

    // y = cat(cache, x[:, fold:]) is a copy: dx = dy with [0, fold) zeroed, dcache = dy[:, :fold].
    fn backward(&self, x: &[&Tensor], _y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let fold = x[1].shape()[1];
        let dx = x[0]
            .requires_grad()
            .then(|| self.launch(dy, dy, 1))
            .transpose()?;
        let dcache = if !x[1].requires_grad() {
            None
        } else if fold == 0 || dy.numel() == 0 {
            Some(Tensor::zeros(x[1].shape()))
        } else {
            Some(narrow_raw(dy, 1, 0, fold)?)
        };
        Ok(vec![dx, dcache])
    }
}

impl Tensor {
    /// TSM's online shift of one frame x (N, C, H, W): returns (y, new_cache) with
    /// y = cat(cache, x[:, fold:]) and new_cache = x[:, :fold], fold = ⌊C / fold_div⌋. `cache`
    /// is the previous frame's new_cache, `None` (zeros) at the first frame. Both outputs are
    /// differentiable (to x and to the cache).
    ///
    /// ```no_run
    /// use tubelet::Tensor;
    /// let mut cache = None;
    /// for t in 0..8 {
    ///     let frame = Tensor::randn(&[1, 64, 56, 56], 0.0, 1.0, t).unwrap();
    ///     let (shifted, next) = frame.temporal_shift_online(cache.as_ref(), 8);
    ///     cache = Some(next); // (1, 8, 56, 56): the first 8 channels of this frame
    ///     // residual block: frame + conv(shifted)
    /// }
    /// ```
    pub fn try_temporal_shift_online(
        &self,
        cache: Option<&Tensor>,
        fold_div: usize,
    ) -> Result<(Tensor, Tensor)> {
        let op = TemporalShiftOnline { fold_div };
        let s = self.shape();
        let zeros;
        let cache = match cache {
            Some(c) => c,
            None => {
                if s.len() != 4 || fold_div == 0 {
                    op.check(s, &[])?; // the error names x and fold_div
                }
                zeros = Tensor::zeros(&[s[0], s[1] / fold_div, s[2], s[3]]);
                &zeros
            }
        };
        let fold = op.check(s, cache.shape())?;
        let y = apply(op, &[self, cache])?;
        let new_cache = self.try_narrow(1, 0, fold)?;
        Ok((y, new_cache))
    }

    pub fn temporal_shift_online(
        &self,
        cache: Option<&Tensor>,
        fold_div: usize,
    ) -> (Tensor, Tensor) {
        self.try_temporal_shift_online(cache, fold_div)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

#[cfg(feature = "testing")]
pub fn case(
    x: [usize; 4],
    fold_div: usize,
    seed: u64,
) -> crate::testing::Case<TemporalShiftOnline> {
    let mut rng = crate::Rng::new(seed);
    let cache = [x[0], x[1] / fold_div, x[2], x[3]];
    let inputs = vec![
        CpuTensor::uniform(&x, -1.0, 1.0, &mut rng),
        CpuTensor::uniform(&cache, -1.0, 1.0, &mut rng),
    ];
    crate::testing::Case::new(
        TemporalShiftOnline { fold_div },
        inputs,
        format!("fold_div {fold_div}"),
    )
}

/// The online demo's shapes (MobileNetV2 at 224², fold_div 8) at reduced sizes, C not a multiple
/// of 8, fold 0 (C < fold_div), and fold_div 1 (the whole frame from the cache).
#[cfg(feature = "testing")]
pub fn seed_cases() -> Vec<crate::testing::Case<TemporalShiftOnline>> {
    vec![
        case([1, 16, 56, 56], 8, 1), // InvertedResidual of stage 2 (16 → fold 2)
        case([2, 24, 28, 28], 8, 2),
        case([1, 21, 5, 3], 8, 3),
        case([2, 7, 3, 3], 8, 4), // fold = 0: identity, empty cache
        case([1, 5, 2, 2], 1, 5),
    ]
}

#[cfg(feature = "testing")]
pub fn test_spec() -> crate::testing::TestSpec<TemporalShiftOnline> {
    use crate::testing::{dim_strategy, TestSpec, Tol};
    use proptest::prelude::*;
    fn geometry(max: usize) -> impl Strategy<Value = ([usize; 4], usize)> {
        (
            1usize..=3,
            1usize..=40,
            dim_strategy(),
            dim_strategy(),
            1usize..=9,
        )
            .prop_map(move |(n, c, h, w, fd)| {
                let (mut h, mut w) = (h, w);
                while n * c * h * w > max && h * w > 1 {
                    (h, w) = ((h / 2).max(1), (w / 2).max(1));
                }
                ([n, c, h, w], fd)
            })
    }
    TestSpec {
        cases: prop_oneof![
            4 => (geometry(300_000), any::<u64>()).prop_map(|((x, f), seed)| case(x, f, seed)),
            1 => prop::sample::select(seed_cases()),
        ]
        .boxed(),
        small_cases: (geometry(64), any::<u64>())
            .prop_filter_map("≤ 64 elements", |((x, f), seed)| {
                (x.iter().product::<usize>() <= 64).then(|| case(x, f, seed))
            })
            .boxed(),
        forward_tol: Tol::new(0.0, 0.0, "a copy"),
        backward_tol: Tol::new(0.0, 0.0, "a copy"),
    }
}
