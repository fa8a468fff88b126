//! 3D average and max pooling with kernel, stride and padding, channels-first like PyTorch's
//! `avg_pool3d` / `max_pool3d` (ceil_mode=False, dilation 1):
//!   avg: y[n,c,o] = Σ_{k in window} x[n,c, o·s − p + k] / (KT·KH·KW)   (count_include_pad=True)
//!   max: y[n,c,o] = max over the window's elements inside x (padding is −inf)
//! x (B, C, T, H, W) -> y (B, C, TO, HO, WO), TO = (T + 2·pt − KT)/st + 1. 2D pooling is the
//! T = 1 case (`max_pool2d`, `avg_pool2d` on 4-D tensors).
//! Seed uses: MViT skip max-pool k 1×3×3 s 1×2×2 p 0×1×1, TSM tpool k 3×1×1 s 2×1×1 p 1×0×0,
//! ResNet stem max-pool 3×3/2 p1 (seed-models.md §4, §6). Global average pooling is `mean`.
//! Kernels: shaders/pool3d_forward.wgsl, shaders/pool3d_backward.wgsl (OP = `PoolKind`).

use crate::autograd::apply;
use crate::error::{Error, Result};
use crate::gpu::{gpu, grid};
use crate::kernel;
use crate::ops::depthwise_conv3d::{in_coord, out_len};
use crate::ops::Op;
use crate::reference::CpuTensor;
use crate::tensor::Tensor;

/// Largest max-pool window: its backward recomputes a window's argmax for each of the ≤ K
/// windows covering an input, K² loop trips, and Mesa 22's llvmpipe stops loops at 65,535.
const MAX_WINDOW: usize = 255;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PoolKind {
    Avg = 0,
    Max = 1,
}

#[derive(Clone, Debug)]
pub struct Pool3d {
    pub kind: PoolKind,
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub padding: [usize; 3],
    /// 4-D tensors (B, C, H, W), read as T = KT = 1 (max_pool2d / avg_pool2d).
    pub two_d: bool,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    bc: u32,
    t: u32,
    h: u32,
    w: u32,
    to: u32,
    ho: u32,
    wo: u32,
    n: u32,
    kt: u32,
    kh: u32,
    kw: u32,
    _p0: u32,
    st: u32,
    sh: u32,
    sw: u32,
    _p1: u32,
    pt: u32,
    ph: u32,
    pw: u32,
    _p2: u32,
}

impl Pool3d {
    fn name_str(&self) -> &'static str {
        match (self.kind, self.two_d) {
            (PoolKind::Avg, false) => "avg_pool3d",
            (PoolKind::Max, false) => "max_pool3d",
            (PoolKind::Avg, true) => "avg_pool2d",
            (PoolKind::Max, true) => "max_pool2d",
        }
    }

    /// x as 5-D, or an error naming the op, the shape and the parameters.
    fn lift(&self, x: &[usize]) -> Result<[usize; 5]> {
        let rank = if self.two_d { 4 } else { 5 };
        if x.len() != rank {
            let d = 5 - rank;
            return Err(Error::Shape(format!(
                "{}: x {x:?} must have rank {rank} (kernel {:?}, stride {:?}, padding {:?})",
                self.name_str(),
                &self.kernel[d..],
                &self.stride[d..],
                &self.padding[d..]
            )));
        }
        Ok(if self.two_d {
            [x[0], x[1], 1, x[2], x[3]]
        } else {
            [x[0], x[1], x[2], x[3], x[4]]
        })
    }

    /// The (5-D) output shape, or an error naming the op, the shape and the parameters.
    fn check(&self, x: &[usize]) -> Result<[usize; 5]> {
        let xl = self.lift(x)?;
        let d = if self.two_d { 1 } else { 0 };
        let what = || {
            format!(
                "{}: x {x:?}, kernel {:?}, stride {:?}, padding {:?}",
                self.name_str(),
                &self.kernel[d..],
                &self.stride[d..],
                &self.padding[d..]
            )
        };
        if self.kernel.contains(&0) || self.stride.contains(&0) {
            return Err(Error::Shape(format!(
                "{}: kernel and stride must be ≥ 1",
                what()
            )));
        }
        if (0..3).any(|i| 2 * self.padding[i] > self.kernel[i]) {
            return Err(Error::Shape(format!(
                "{}: padding must be at most half the kernel",
                what()
            )));
        }
        if self.kind == PoolKind::Max && self.kernel.iter().product::<usize>() > MAX_WINDOW {
            return Err(Error::Shape(format!(
                "{}: windows above {MAX_WINDOW} elements are not supported",
                what()
            )));
        }
        let mut out = [xl[0], xl[1], 0, 0, 0];
        for i in 0..3 {
            out[i + 2] = out_len(xl[i + 2], self.kernel[i], self.stride[i], self.padding[i])
                .ok_or_else(|| {
                    Error::Shape(format!(
                        "{}: kernel {} is larger than the padded input {}",
                        what(),
                        self.kernel[i],
                        xl[i + 2] + 2 * self.padding[i]
                    ))
                })?;
        }
        Ok(out)
    }

    fn out_shape(&self, y: [usize; 5]) -> Vec<usize> {
        if self.two_d {
            vec![y[0], y[1], y[3], y[4]]
        } else {
            y.to_vec()
        }
    }

    fn params(&self, x: [usize; 5], y: [usize; 5], n: usize) -> Params {
        let [kt, kh, kw] = self.kernel.map(|v| v as u32);
        let [st, sh, sw] = self.stride.map(|v| v as u32);
        let [pt, ph, pw] = self.padding.map(|v| v as u32);
        Params {
            bc: (x[0] * x[1]) as u32,
            t: x[2] as u32,
            h: x[3] as u32,
            w: x[4] as u32,
            to: y[2] as u32,
            ho: y[3] as u32,
            wo: y[4] as u32,
            n: n as u32,
            kt,
            kh,
            kw,
            _p0: 0,
            st,
            sh,
            sw,
            _p1: 0,
            pt,
            ph,
            pw,
            _p2: 0,
        }
    }

    /// For each output (n, c, o): the window's in-bounds input positions, in (a, i, j) scan order.
    fn windows(&self, xl: [usize; 5], mut f: impl FnMut([usize; 5], &[[usize; 5]])) {
        let y = self.check(&self.out_shape(xl)).expect("valid shape");
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        for n in 0..y[0] {
            for c in 0..y[1] {
                for to in 0..y[2] {
                    for ho in 0..y[3] {
                        for wo in 0..y[4] {
                            let mut win = Vec::new();
                            for a in 0..k[0] {
                                for i in 0..k[1] {
                                    for j in 0..k[2] {
                                        if let (Some(t), Some(h), Some(v)) = (
                                            in_coord(to, a, s[0], p[0], xl[2]),
                                            in_coord(ho, i, s[1], p[1], xl[3]),
                                            in_coord(wo, j, s[2], p[2], xl[4]),
                                        ) {
                                            win.push([n, c, t, h, v]);
                                        }
                                    }
                                }
                            }
                            f([n, c, to, ho, wo], &win);
                        }
                    }
                }
            }
        }
    }
}

impl Op for Pool3d {
    fn name(&self) -> &'static str {
        self.name_str()
    }

    fn reference(&self, x: &[&CpuTensor]) -> CpuTensor {
        let xl = self.lift(&x[0].shape).expect("valid shape");
        let xt = x[0].reshape(&xl);
        let mut y = CpuTensor::zeros(&self.check(&x[0].shape).expect("valid shape"));
        let count = self.kernel.iter().product::<usize>() as f64;
        self.windows(xl, |o, win| {
            let vals = win.iter().map(|q| xt.at(q));
            *y.at_mut(&o) = match self.kind {
                PoolKind::Avg => vals.sum::<f64>() / count,
                PoolKind::Max => vals.fold(f64::NEG_INFINITY, f64::max),
            };
        });
        let ys = y.shape.clone();
        y.reshape(&self.out_shape([ys[0], ys[1], ys[2], ys[3], ys[4]]))
    }

    fn reference_backward(&self, x: &[&CpuTensor], dy: &CpuTensor) -> Vec<Option<CpuTensor>> {
        let xl = self.lift(&x[0].shape).expect("valid shape");
        let xt = x[0].reshape(&xl);
        let g = dy.reshape(&self.check(&x[0].shape).expect("valid shape"));
        let mut dx = CpuTensor::zeros(&xl);
        let count = self.kernel.iter().product::<usize>() as f64;
        self.windows(xl, |o, win| match self.kind {
            PoolKind::Avg => {
                for q in win {
                    *dx.at_mut(q) += g.at(&o) / count;
                }
            }
            PoolKind::Max => {
                // The first maximum in scan order takes the whole gradient (PyTorch).
                let mut arg = 0;
                for (k, q) in win.iter().enumerate() {
                    if xt.at(q) > xt.at(&win[arg]) {
                        arg = k;
                    }
                }
                *dx.at_mut(&win[arg]) += g.at(&o);
            }
        });
        vec![Some(dx.reshape(&x[0].shape))]
    }

    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        let ys = self.check(x[0].shape())?;
        let y = Tensor::empty(&self.out_shape(ys))?;
        let p = self.params(self.lift(x[0].shape())?, ys, y.numel());
        // (B, C, T, H, W) -> (B, C, TO, HO, WO)
        gpu().dispatch(
            kernel!(pool3d_forward),
            &[("OP", self.kind as u8 as f64)],
            &[x[0].buffer(), y.buffer()],
            &p,
            grid(y.numel(), 256),
        )?;
        Ok(y)
    }

    // avg: dx[q] = Σ_{windows o ∋ q} dy[o] / (KT·KH·KW)
    // max: dx[q] = Σ_{windows o whose first argmax is q} dy[o]   (argmax recomputed from x)
    fn backward(&self, x: &[&Tensor], y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let ys = self.check(x[0].shape())?;
        let dx = Tensor::empty(x[0].shape())?;
        let p = self.params(self.lift(x[0].shape())?, ys, dx.numel());
        debug_assert_eq!(y.numel(), ys.iter().product::<usize>());
        // (B, C, T, H, W), (B, C, TO, HO, WO) -> (B, C, T, H, W)
        gpu().dispatch(
            kernel!(pool3d_backward),
            &[("OP", self.kind as u8 as f64)],
            &[x[0].buffer(), dy.buffer(), dx.buffer()],
            &p,
            grid(dx.numel(), 256),
        )?;
        Ok(vec![Some(dx)])
    }
}

fn pool(
    x: &Tensor,
    kind: PoolKind,
    kernel: [usize; 3],
    stride: [usize; 3],
    padding: [usize; 3],
    two_d: bool,
) -> Result<Tensor> {
    apply(
        Pool3d {
            kind,
            kernel,
            stride,
            padding,
            two_d,
        },
        &[x],
    )
}

impl Tensor {
    /// Max over 3D windows of x (B, C, T, H, W): PyTorch's `max_pool3d(x, kernel, stride,
    /// padding)`; the gradient goes to each window's first maximum.
    ///
    /// ```no_run
    /// use tubelet::Tensor;
    /// let x = Tensor::randn(&[1, 96, 8, 56, 56], 0.0, 1.0, 1).unwrap();
    /// let y = x.max_pool3d([1, 3, 3], [1, 2, 2], [0, 1, 1]); // MViT skip: (1, 96, 8, 28, 28)
    /// ```
    pub fn try_max_pool3d(
        &self,
        kernel: [usize; 3],
        stride: [usize; 3],
        padding: [usize; 3],
    ) -> Result<Tensor> {
        pool(self, PoolKind::Max, kernel, stride, padding, false)
    }

    pub fn max_pool3d(
        &self,
        kernel: [usize; 3],
        stride: [usize; 3],
        padding: [usize; 3],
    ) -> Tensor {
        self.try_max_pool3d(kernel, stride, padding)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Mean over 3D windows of x (B, C, T, H, W), padding counted as zeros (PyTorch's
    /// `avg_pool3d` with count_include_pad=True).
    pub fn try_avg_pool3d(
        &self,
        kernel: [usize; 3],
        stride: [usize; 3],
        padding: [usize; 3],
    ) -> Result<Tensor> {
        pool(self, PoolKind::Avg, kernel, stride, padding, false)
    }

    pub fn avg_pool3d(
        &self,
        kernel: [usize; 3],
        stride: [usize; 3],
        padding: [usize; 3],
    ) -> Tensor {
        self.try_avg_pool3d(kernel, stride, padding)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Max over 2D windows of x (B, C, H, W): `max_pool2d` (ResNet stem: k 3, s 2, p 1).
    pub fn try_max_pool2d(
        &self,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Result<Tensor> {
        pool(
            self,
            PoolKind::Max,
            [1, kernel[0], kernel[1]],
            [1, stride[0], stride[1]],
            [0, padding[0], padding[1]],
            true,
        )
    }

    pub fn max_pool2d(
        &self,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Tensor {
        self.try_max_pool2d(kernel, stride, padding)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Mean over 2D windows of x (B, C, H, W), count_include_pad=True.
    pub fn try_avg_pool2d(
        &self,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Result<Tensor> {
        pool(
            self,
            PoolKind::Avg,
            [1, kernel[0], kernel[1]],
            [1, stride[0], stride[1]],
            [0, padding[0], padding[1]],
            true,
        )
    }

    pub fn avg_pool2d(
        &self,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Tensor {
        self.try_avg_pool2d(kernel, stride, padding)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// One case on x (B, C, T, H, W) (T dropped when `two_d`); values uniform in [-1, 1), so ties
/// between maxima (which would make the gradient ill-defined for finite differences) do not occur.
#[cfg(feature = "testing")]
pub fn case(
    kind: PoolKind,
    x: [usize; 5],
    kernel: [usize; 3],
    stride: [usize; 3],
    padding: [usize; 3],
    two_d: bool,
    seed: u64,
) -> crate::testing::Case<Pool3d> {
    let mut rng = crate::Rng::new(seed);
    let xs: Vec<usize> = if two_d {
        vec![x[0], x[1], x[3], x[4]]
    } else {
        x.to_vec()
    };
    let op = Pool3d {
        kind,
        kernel,
        stride,
        padding,
        two_d,
    };
    let label = format!(
        "{} k {kernel:?} stride {stride:?} padding {padding:?}",
        op.name_str()
    );
    crate::testing::Case::new(
        op,
        vec![CpuTensor::uniform(&xs, -1.0, 1.0, &mut rng)],
        label,
    )
}

/// Seed-model geometries (seed-models.md §4, §6), odd sizes.
#[cfg(feature = "testing")]
pub fn seed_cases() -> Vec<crate::testing::Case<Pool3d>> {
    use PoolKind::{Avg, Max};
    vec![
        case(
            Max,
            [2, 3, 3, 15, 14],
            [1, 3, 3],
            [1, 2, 2],
            [0, 1, 1],
            false,
            1,
        ), // MViT skip
        case(
            Max,
            [2, 3, 7, 5, 4],
            [3, 1, 1],
            [2, 1, 1],
            [1, 0, 0],
            false,
            2,
        ), // TSM tpool
        case(
            Max,
            [2, 3, 1, 17, 16],
            [1, 3, 3],
            [1, 2, 2],
            [0, 1, 1],
            true,
            3,
        ), // ResNet stem pool
        case(
            Max,
            [1, 2, 5, 9, 9],
            [3, 3, 3],
            [2, 2, 2],
            [1, 1, 1],
            false,
            4,
        ),
        case(
            Avg,
            [2, 3, 5, 9, 11],
            [3, 3, 3],
            [2, 2, 2],
            [1, 1, 1],
            false,
            5,
        ), // padding counted
        case(
            Avg,
            [1, 2, 1, 13, 12],
            [1, 2, 2],
            [1, 2, 2],
            [0, 0, 0],
            true,
            6,
        ),
    ]
}

#[cfg(feature = "testing")]
pub fn test_spec() -> crate::testing::TestSpec<Pool3d> {
    use crate::testing::{TestSpec, Tol};
    use proptest::prelude::*;
    type Geometry = (
        PoolKind,
        [usize; 5],
        [usize; 3],
        [usize; 3],
        [usize; 3],
        bool,
    );
    fn geometry(max_side: usize) -> impl Strategy<Value = Geometry> {
        let side = prop_oneof![Just(1usize), 2usize..=max_side];
        let k = 1usize..=4;
        let s = prop::sample::select(vec![1usize, 1, 2, 3]);
        let kind = prop_oneof![Just(PoolKind::Avg), Just(PoolKind::Max)];
        (
            kind,
            1usize..=2,
            1usize..=4,
            [side.clone(), side.clone(), side],
            [k.clone(), k.clone(), k],
            [s.clone(), s.clone(), s],
            any::<[u8; 3]>(),
            any::<bool>(),
        )
            .prop_map(|(kind, b, c, mut sp, mut k, mut s, pr, two_d)| {
                if two_d {
                    (sp[0], k[0], s[0]) = (1, 1, 1);
                }
                let mut p = [0; 3];
                for d in 0..3 {
                    p[d] = pr[d] as usize % (k[d] / 2 + 1);
                    sp[d] = sp[d].max(k[d] - 2 * p[d]);
                }
                (kind, [b, c, sp[0], sp[1], sp[2]], k, s, p, two_d)
            })
    }
    let cases = (geometry(40), any::<u64>())
        .prop_map(|((kd, x, k, s, p, td), seed)| case(kd, x, k, s, p, td, seed));
    let small = (geometry(4), any::<u64>()).prop_filter_map(
        "≤ 64 elements",
        |((kd, x, k, s, p, td), seed)| {
            (x.iter().product::<usize>() <= 64).then(|| case(kd, x, k, s, p, td, seed))
        },
    );
    TestSpec {
        cases: prop_oneof![4 => cases, 1 => prop::sample::select(seed_cases())].boxed(),
        small_cases: small.boxed(),
        // max is exact; avg is a sum of ≤ 64 values in [-1, 1) times 1/K in f32.
        forward_tol: Tol::new(5e-6, 1e-6, "max exact; avg one f32 sum of ≤ 64 terms"),
        backward_tol: Tol::new(
            5e-6,
            1e-6,
            "max routes dy exactly; avg sums ≤ 64 terms dy/K",
        ),
    }
}
