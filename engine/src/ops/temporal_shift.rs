//! TSM temporal shift (Lin et al., ICCV 2019, arXiv:1811.08383; official `ops/temporal_shift.py`
//! `TemporalShift.shift`, seed-models.md §4), on x (N·T, C, H, W) with T = n_segment frames per
//! video, fold = ⌊C / fold_div⌋:
//!   y[:, t, :fold]       = x[:, t+1, :fold]        (from the future; zero at t = T−1)
//!   y[:, t, fold:2·fold] = x[:, t−1, fold:2·fold]  (from the past; zero at t = 0)
//!   y[:, t, 2·fold:]     = x[:, t, 2·fold:]
//! Zero parameters, zero FLOPs; the backward is the opposite shift with zero fill.
//! Kernel: shaders/temporal_shift_forward.wgsl (DIR 0 forward, DIR 1 backward).

use crate::autograd::apply;
use crate::error::{Error, Result};
use crate::gpu::{gpu, grid};
use crate::kernel;
use crate::ops::Op;
use crate::reference::CpuTensor;
use crate::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct TemporalShift {
    pub n_segment: usize,
    pub fold_div: usize,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    t: u32,
    c: u32,
    hw: u32,
    fold: u32,
}

impl TemporalShift {
    fn check(&self, x: &[usize]) -> Result<()> {
        let what = || {
            format!(
                "temporal_shift: x {x:?}, n_segment {}, fold_div {}",
                self.n_segment, self.fold_div
            )
        };
        if x.len() != 4 {
            return Err(Error::Shape(format!(
                "{}: x must be (N·T, C, H, W)",
                what()
            )));
        }
        if self.n_segment == 0 || self.fold_div == 0 {
            return Err(Error::Shape(format!(
                "{}: n_segment and fold_div must be ≥ 1",
                what()
            )));
        }
        if !x[0].is_multiple_of(self.n_segment) {
            return Err(Error::Shape(format!(
                "{}: the batch {} is not a multiple of n_segment",
                what(),
                x[0]
            )));
        }
        Ok(())
    }

    /// Source frame offset of channel c: +1 (future), −1 (past) or 0.
    fn offset(&self, c: usize, channels: usize) -> isize {
        let fold = channels / self.fold_div;
        if c < fold {
            1
        } else if c < 2 * fold {
            -1
        } else {
            0
        }
    }

    /// y = x shifted by `dir`·offset(c) frames (dir −1 is the backward), zero filled.
    fn shift_ref(&self, x: &CpuTensor, dir: isize) -> CpuTensor {
        let (t_seg, c) = (self.n_segment, x.shape[1]);
        CpuTensor::from_fn(&x.shape, |i| {
            let t = (i[0] % t_seg) as isize;
            let src = t + dir * self.offset(i[1], c);
            if src < 0 || src >= t_seg as isize {
                0.0
            } else {
                x.at(&[(i[0] as isize - t + src) as usize, i[1], i[2], i[3]])
            }
        })
    }

    fn launch(&self, x: &Tensor, dir: u32) -> Result<Tensor> {
        self.check(x.shape())?;
        let s = x.shape();
        let y = Tensor::empty(s)?;
        let p = Params {
            n: y.numel() as u32,
            t: self.n_segment as u32,
            c: s[1] as u32,
            hw: (s[2] * s[3]) as u32,
            fold: (s[1] / self.fold_div) as u32,
        };
        // (N·T, C, H, W) -> (N·T, C, H, W)
        gpu().dispatch(
            kernel!(temporal_shift_forward),
            &[("DIR", dir as f64)],
            &[x.buffer(), y.buffer()],
            &p,
            grid(y.numel(), 256),
        )?;
        Ok(y)
    }
}

impl Op for TemporalShift {
    fn name(&self) -> &'static str {
        "temporal_shift"
    }

    fn reference(&self, x: &[&CpuTensor]) -> CpuTensor {
        self.shift_ref(x[0], 1)
    }

    fn reference_backward(&self, _x: &[&CpuTensor], dy: &CpuTensor) -> Vec<Option<CpuTensor>> {
        vec![Some(self.shift_ref(dy, -1))]
    }

    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        self.launch(x[0], 0)
    }

    // dx = the opposite shift of dy: dx[t, :fold] = dy[t−1, :fold], dx[t, fold:2·fold] =
    // dy[t+1, fold:2·fold], the rest dy; zero filled at the video's ends.
    fn backward(&self, _x: &[&Tensor], _y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(self.launch(dy, 1)?)])
    }
}

impl Tensor {
    /// TSM's bi-directional temporal shift of x (N·T, C, H, W), T = `n_segment`: 1/fold_div of
    /// the channels from the next frame, 1/fold_div from the previous one (TSM uses 8).
    ///
    /// ```no_run
    /// use tubelet::Tensor;
    /// let x = Tensor::randn(&[2 * 8, 64, 56, 56], 0.0, 1.0, 1).unwrap(); // 2 videos × 8 frames
    /// let y = x.temporal_shift(8, 8);
    /// ```
    pub fn try_temporal_shift(&self, n_segment: usize, fold_div: usize) -> Result<Tensor> {
        apply(
            TemporalShift {
                n_segment,
                fold_div,
            },
            &[self],
        )
    }

    pub fn temporal_shift(&self, n_segment: usize, fold_div: usize) -> Tensor {
        self.try_temporal_shift(n_segment, fold_div)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

#[cfg(feature = "testing")]
pub fn case(
    x: [usize; 4],
    n_segment: usize,
    fold_div: usize,
    seed: u64,
) -> crate::testing::Case<TemporalShift> {
    let mut rng = crate::Rng::new(seed);
    let op = TemporalShift {
        n_segment,
        fold_div,
    };
    let label = format!("n_segment {n_segment} fold_div {fold_div}");
    crate::testing::Case::new(op, vec![CpuTensor::uniform(&x, -1.0, 1.0, &mut rng)], label)
}

/// TSM-ResNet shapes (seed-models.md §4) at reduced sizes: 8 segments, fold_div 8, C not a
/// multiple of 8 (floor), T = 1 (nothing to shift from), and two videos in one batch.
#[cfg(feature = "testing")]
pub fn seed_cases() -> Vec<crate::testing::Case<TemporalShift>> {
    vec![
        case([16, 64, 7, 7], 8, 8, 1),
        case([8, 21, 5, 3], 8, 8, 2),
        case([3, 16, 2, 2], 1, 8, 3),
        case([6, 7, 1, 1], 3, 8, 4), // fold = 0: identity
        case([6, 9, 3, 5], 3, 3, 5),
    ]
}

#[cfg(feature = "testing")]
pub fn test_spec() -> crate::testing::TestSpec<TemporalShift> {
    use crate::testing::{dim_strategy, TestSpec, Tol};
    use proptest::prelude::*;
    fn geometry(max: usize) -> impl Strategy<Value = ([usize; 4], usize, usize)> {
        (
            1usize..=3,
            1usize..=9,
            1usize..=40,
            dim_strategy(),
            dim_strategy(),
            1usize..=9,
        )
            .prop_map(move |(n, t, c, h, w, fd)| {
                let (mut h, mut w) = (h, w);
                while n * t * c * h * w > max && h * w > 1 {
                    (h, w) = ((h / 2).max(1), (w / 2).max(1));
                }
                ([n * t, c, h, w], t, fd)
            })
    }
    TestSpec {
        cases: prop_oneof![
            4 => (geometry(300_000), any::<u64>()).prop_map(|((x, t, f), seed)| case(x, t, f, seed)),
            1 => prop::sample::select(seed_cases()),
        ]
        .boxed(),
        small_cases: (geometry(64), any::<u64>())
            .prop_filter_map("≤ 64 elements", |((x, t, f), seed)| {
                (x.iter().product::<usize>() <= 64).then(|| case(x, t, f, seed))
            })
            .boxed(),
        forward_tol: Tol::new(0.0, 0.0, "a copy"),
        backward_tol: Tol::new(0.0, 0.0, "a copy"),
    }
}
