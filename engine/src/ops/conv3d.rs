//! General 3D convolution with groups, stride and zero padding, channels-first like PyTorch's
//! `nn.Conv3d(CIN, COUT, k, stride, padding, groups=G)`:
//!   y[n,co,o] = b[co] + Σ_{ci < CIG, k} w[co,ci,k] · x[n, g·CIG + ci, o·s − p + k],  g = co / COG
//! with CIG = CIN/G, COG = COUT/G. x (B, CIN, T, H, W), w (COUT, CIG, KT, KH, KW), b (COUT).
//! 2D convolution is the T = 1 case (`conv2d`: the same op on 4-D tensors).
//! Seed uses (seed-models.md §7): tubelet embedding 2×16×16/2×16×16, Swin 2×4×4, UniFormer
//! 3×4×4 s 2×4×4 p 1×0×0 and 1×2×2 patch merges, MViT 3×7×7 s 2×4×4 p 1×3×3, 1×1×1 pointwise,
//! ResNet 7×7/2 p3 and 3×3 (conv2d).
//!
//! Direct kernels, one invocation per output element of each pass; every reduction is cut into
//! slices of ≤ `SPLIT` terms whose partial results are summed by `reduce::reduce_raw`, so loops
//! stay short (Mesa 22's llvmpipe stops loops at 65,535 trips) and nothing needs atomics.
//! Kernels: shaders/conv3d_forward.wgsl, shaders/conv3d_backward_input.wgsl,
//! shaders/conv3d_backward_weight.wgsl. For depthwise convolution use `depthwise_conv3d`,
//! whose kernels are specialised for groups = C.

use crate::autograd::apply;
use crate::error::{Error, Result};
use crate::gpu::{gpu, grid, Kernel};
use crate::kernel;
use crate::ops::depthwise_conv3d::{in_coord, out_len};
use crate::ops::reduce::{reduce_raw, ReduceKind};
use crate::ops::Op;
use crate::reference::CpuTensor;
use crate::tensor::Tensor;

/// Terms of a reduction one invocation sums before the slices are reduced again.
const SPLIT: usize = 1024;

#[derive(Clone, Debug)]
pub struct Conv3d {
    pub stride: [usize; 3],
    pub padding: [usize; 3],
    pub groups: usize,
    /// 4-D tensors (conv2d): x (B, C, H, W), w (COUT, CIG, KH, KW), read as T = KT = 1.
    pub two_d: bool,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    b: u32,
    cin: u32,
    cout: u32,
    groups: u32,
    t: u32,
    h: u32,
    w: u32,
    to: u32,
    ho: u32,
    wo: u32,
    kt: u32,
    kh: u32,
    kw: u32,
    st: u32,
    sh: u32,
    sw: u32,
    pt: u32,
    ph: u32,
    pw: u32,
    n: u32,
    red: u32,
    split: u32,
    n_split: u32,
    _pad: u32,
}

/// (B, C, H, W) -> (B, C, 1, H, W); 5-D shapes unchanged.
fn lift(s: &[usize]) -> [usize; 5] {
    if s.len() == 4 {
        [s[0], s[1], 1, s[2], s[3]]
    } else {
        [s[0], s[1], s[2], s[3], s[4]]
    }
}

impl Conv3d {
    fn name_dims(&self) -> (&'static str, usize) {
        if self.two_d {
            ("conv2d", 4)
        } else {
            ("conv3d", 5)
        }
    }

    /// The (5-D) output shape, or an error naming the op, the shapes and the parameters.
    fn check(&self, x: &[usize], w: &[usize], b: Option<&[usize]>) -> Result<[usize; 5]> {
        let (name, rank) = self.name_dims();
        let what = || {
            format!(
                "{name}: x {x:?}, weight {w:?}, bias {b:?}, stride {:?}, padding {:?}, groups {}",
                &self.stride[5 - rank..],
                &self.padding[5 - rank..],
                self.groups
            )
        };
        if x.len() != rank || w.len() != rank {
            return Err(Error::Shape(format!(
                "{}: x and weight must have rank {rank}",
                what()
            )));
        }
        let (xl, wl) = (lift(x), lift(w));
        let g = self.groups;
        if g == 0 || xl[1] % g != 0 || wl[0] % g != 0 {
            return Err(Error::Shape(format!(
                "{}: groups must divide the {} input and {} output channels",
                what(),
                xl[1],
                wl[0]
            )));
        }
        if wl[1] != xl[1] / g {
            return Err(Error::Shape(format!(
                "{}: weight dim 1 must be CIN/groups = {}",
                what(),
                xl[1] / g
            )));
        }
        if wl[2..].contains(&0) || self.stride.contains(&0) {
            return Err(Error::Shape(format!(
                "{}: kernel and stride must be ≥ 1",
                what()
            )));
        }
        if b.is_some_and(|b| b != [wl[0]]) {
            return Err(Error::Shape(format!(
                "{}: bias must be ({},)",
                what(),
                wl[0]
            )));
        }
        let mut out = [xl[0], wl[0], 0, 0, 0];
        for d in 0..3 {
            out[d + 2] = out_len(xl[d + 2], wl[d + 2], self.stride[d], self.padding[d])
                .ok_or_else(|| {
                    Error::Shape(format!(
                        "{}: kernel {} is larger than the padded input {}",
                        what(),
                        wl[d + 2],
                        xl[d + 2] + 2 * self.padding[d]
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

    fn params(&self, x: [usize; 5], w: [usize; 5], y: [usize; 5]) -> Params {
        Params {
            b: x[0] as u32,
            cin: x[1] as u32,
            cout: w[0] as u32,
            groups: self.groups as u32,
            t: x[2] as u32,
            h: x[3] as u32,
            w: x[4] as u32,
            to: y[2] as u32,
            ho: y[3] as u32,
            wo: y[4] as u32,
            kt: w[2] as u32,
            kh: w[3] as u32,
            kw: w[4] as u32,
            st: self.stride[0] as u32,
            sh: self.stride[1] as u32,
            sw: self.stride[2] as u32,
            pt: self.padding[0] as u32,
            ph: self.padding[1] as u32,
            pw: self.padding[2] as u32,
            n: 0,
            red: 0,
            split: SPLIT as u32,
            n_split: 0,
            _pad: 0,
        }
    }
}

/// Runs one pass whose `red`-term reductions are sliced: (N_SPLIT, out) partials, then their sum.
fn sliced(
    kernel: &Kernel,
    consts: &[(&'static str, f64)],
    bufs: &[&wgpu::Buffer],
    mut p: Params,
    out: &[usize],
    red: usize,
) -> Result<Tensor> {
    let n: usize = out.iter().product();
    p.n = n as u32;
    p.red = red as u32;
    p.n_split = red.div_ceil(SPLIT).max(1) as u32;
    let part = Tensor::empty(&[p.n_split as usize, n])?;
    let mut all = bufs.to_vec();
    all.push(part.buffer());
    // (inputs) -> (N_SPLIT, out)
    gpu().dispatch(kernel, consts, &all, &p, grid(n * p.n_split as usize, 256))?;
    let y = if p.n_split == 1 {
        part
    } else {
        reduce_raw(&part, ReduceKind::Sum, &[0])?
    };
    Ok(y.view(out))
}

impl Op for Conv3d {
    fn name(&self) -> &'static str {
        self.name_dims().0
    }

    fn reference(&self, x: &[&CpuTensor]) -> CpuTensor {
        let (xl, wl) = (lift(&x[0].shape), lift(&x[1].shape));
        let ys = self
            .check(&x[0].shape, &x[1].shape, None)
            .expect("valid shapes");
        let (xt, wt) = (x[0].reshape(&xl), x[1].reshape(&wl));
        let (cig, cog) = (wl[1], wl[0] / self.groups);
        let (s, p) = (self.stride, self.padding);
        let mut y = CpuTensor::zeros(&ys);
        for n in 0..ys[0] {
            for co in 0..ys[1] {
                for to in 0..ys[2] {
                    for ho in 0..ys[3] {
                        for wo in 0..ys[4] {
                            let mut acc = x.get(2).map_or(0.0, |b| b.data[co]);
                            for ci in 0..cig {
                                for a in 0..wl[2] {
                                    for i in 0..wl[3] {
                                        for j in 0..wl[4] {
                                            let (Some(t), Some(h), Some(v)) = (
                                                in_coord(to, a, s[0], p[0], xl[2]),
                                                in_coord(ho, i, s[1], p[1], xl[3]),
                                                in_coord(wo, j, s[2], p[2], xl[4]),
                                            ) else {
                                                continue;
                                            };
                                            acc += wt.at(&[co, ci, a, i, j])
                                                * xt.at(&[n, co / cog * cig + ci, t, h, v]);
                                        }
                                    }
                                }
                            }
                            *y.at_mut(&[n, co, to, ho, wo]) = acc;
                        }
                    }
                }
            }
        }
        y.reshape(&self.out_shape(ys))
    }

    fn reference_backward(&self, x: &[&CpuTensor], dy: &CpuTensor) -> Vec<Option<CpuTensor>> {
        let (xl, wl) = (lift(&x[0].shape), lift(&x[1].shape));
        let ys = self
            .check(&x[0].shape, &x[1].shape, None)
            .expect("valid shapes");
        let (xt, wt, g) = (x[0].reshape(&xl), x[1].reshape(&wl), dy.reshape(&ys));
        let (cig, cog) = (wl[1], wl[0] / self.groups);
        let (s, p) = (self.stride, self.padding);
        let mut dx = CpuTensor::zeros(&xl);
        let mut dw = CpuTensor::zeros(&wl);
        let mut db = CpuTensor::zeros(&[wl[0]]);
        for n in 0..ys[0] {
            for co in 0..ys[1] {
                for to in 0..ys[2] {
                    for ho in 0..ys[3] {
                        for wo in 0..ys[4] {
                            let gy = g.at(&[n, co, to, ho, wo]);
                            db.data[co] += gy;
                            for ci in 0..cig {
                                for a in 0..wl[2] {
                                    for i in 0..wl[3] {
                                        for j in 0..wl[4] {
                                            let (Some(t), Some(h), Some(v)) = (
                                                in_coord(to, a, s[0], p[0], xl[2]),
                                                in_coord(ho, i, s[1], p[1], xl[3]),
                                                in_coord(wo, j, s[2], p[2], xl[4]),
                                            ) else {
                                                continue;
                                            };
                                            let xi = [n, co / cog * cig + ci, t, h, v];
                                            *dx.at_mut(&xi) += gy * wt.at(&[co, ci, a, i, j]);
                                            *dw.at_mut(&[co, ci, a, i, j]) += gy * xt.at(&xi);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        let mut out = vec![Some(dx.reshape(&x[0].shape)), Some(dw.reshape(&x[1].shape))];
        if x.len() == 3 {
            out.push(Some(db));
        }
        out
    }

    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        let bias = x.get(2).copied();
        let ys = self.check(x[0].shape(), x[1].shape(), bias.map(Tensor::shape))?;
        let (xl, wl) = (lift(x[0].shape()), lift(x[1].shape()));
        let p = self.params(xl, wl, ys);
        // NOTE: without a bias the b binding still has to exist; w stands in and is never read.
        let b = bias.unwrap_or(x[1]);
        let consts = [("HAS_BIAS", f64::from(u8::from(bias.is_some())))];
        // (B, CIN, T, H, W) ⊛ (COUT, CIG, KT, KH, KW) + (COUT) -> (B, COUT, TO, HO, WO)
        sliced(
            kernel!(conv3d_forward),
            &consts,
            &[x[0].buffer(), x[1].buffer(), b.buffer()],
            p,
            &self.out_shape(ys),
            wl[1] * wl[2] * wl[3] * wl[4],
        )
    }

    // dx[n,ci,q] = Σ_{co in group, k, o: o·s − p + k = q} w[co,ci,k] · dy[n,co,o]   (gather)
    // dw[co,ci,k] = Σ_{n,o} dy[n,co,o] · x[n, g·CIG + ci, o·s − p + k]           (sliced sums)
    // db[co]      = Σ_{n,o} dy[n,co,o]
    fn backward(&self, x: &[&Tensor], y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (xl, wl, yl) = (lift(x[0].shape()), lift(x[1].shape()), lift(y.shape()));
        let p = self.params(xl, wl, yl);
        let taps = wl[2] * wl[3] * wl[4];
        let dx = if x[0].requires_grad() {
            // (B, COUT, TO, HO, WO), (COUT, CIG, KT, KH, KW) -> (B, CIN, T, H, W)
            Some(sliced(
                kernel!(conv3d_backward_input),
                &[],
                &[dy.buffer(), x[1].buffer()],
                p,
                x[0].shape(),
                wl[0] / self.groups * taps,
            )?)
        } else {
            None
        };
        let dw = if x[1].requires_grad() {
            // (B, CIN, T, H, W), (B, COUT, TO, HO, WO) -> (COUT, CIG, KT, KH, KW)
            Some(sliced(
                kernel!(conv3d_backward_weight),
                &[],
                &[x[0].buffer(), dy.buffer()],
                p,
                x[1].shape(),
                yl[0] * yl[2] * yl[3] * yl[4],
            )?)
        } else {
            None
        };
        let mut out = vec![dx, dw];
        if let Some(b) = x.get(2) {
            // (B, COUT, TO·HO·WO) summed over B and the positions -> (COUT)
            out.push(if b.requires_grad() {
                let g = dy.view(&[yl[0], yl[1], yl[2] * yl[3] * yl[4]]);
                Some(reduce_raw(&g, ReduceKind::Sum, &[0, 2])?.view(&[yl[1]]))
            } else {
                None
            });
        }
        Ok(out)
    }
}

fn run(op: Conv3d, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    match b {
        Some(b) => apply(op, &[x, w, b]),
        None => apply(op, &[x, w]),
    }
}

impl Tensor {
    /// 3D convolution of x (B, CIN, T, H, W) with weight (COUT, CIN/groups, KT, KH, KW) and an
    /// optional bias (COUT): PyTorch's `Conv3d(CIN, COUT, k, stride, padding, groups=groups)`.
    ///
    /// ```no_run
    /// use tubelet::Tensor;
    /// // ViViT tubelet embedding: 2×16×16 patches, stride 2×16×16.
    /// let x = Tensor::randn(&[1, 3, 16, 224, 224], 0.0, 1.0, 1).unwrap();
    /// let w = Tensor::randn(&[768, 3, 2, 16, 16], 0.0, 0.02, 2).unwrap();
    /// let y = x.conv3d(&w, None, [2, 16, 16], [0, 0, 0], 1); // (1, 768, 8, 14, 14)
    /// ```
    pub fn try_conv3d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: [usize; 3],
        padding: [usize; 3],
        groups: usize,
    ) -> Result<Tensor> {
        run(
            Conv3d {
                stride,
                padding,
                groups,
                two_d: false,
            },
            self,
            weight,
            bias,
        )
    }

    pub fn conv3d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: [usize; 3],
        padding: [usize; 3],
        groups: usize,
    ) -> Tensor {
        self.try_conv3d(weight, bias, stride, padding, groups)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// 2D convolution of x (B, CIN, H, W) with weight (COUT, CIN/groups, KH, KW): PyTorch's
    /// `Conv2d`, computed as conv3d with T = 1.
    ///
    /// ```no_run
    /// use tubelet::Tensor;
    /// // ResNet stem: 7×7, stride 2, padding 3.
    /// let x = Tensor::randn(&[8, 3, 224, 224], 0.0, 1.0, 1).unwrap();
    /// let w = Tensor::randn(&[64, 3, 7, 7], 0.0, 0.02, 2).unwrap();
    /// let y = x.conv2d(&w, None, [2, 2], [3, 3], 1); // (8, 64, 112, 112)
    /// ```
    pub fn try_conv2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: [usize; 2],
        padding: [usize; 2],
        groups: usize,
    ) -> Result<Tensor> {
        let op = Conv3d {
            stride: [1, stride[0], stride[1]],
            padding: [0, padding[0], padding[1]],
            groups,
            two_d: true,
        };
        run(op, self, weight, bias)
    }

    pub fn conv2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: [usize; 2],
        padding: [usize; 2],
        groups: usize,
    ) -> Tensor {
        self.try_conv2d(weight, bias, stride, padding, groups)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// One case: x (B, CIN, T, H, W), COUT, kernel, stride, padding, groups; values in [-1, 1).
/// `two_d` drops T (which must be 1) and KT.
#[cfg(feature = "testing")]
#[allow(clippy::too_many_arguments)]
pub fn case(
    x: [usize; 5],
    cout: usize,
    k: [usize; 3],
    stride: [usize; 3],
    padding: [usize; 3],
    groups: usize,
    bias: bool,
    two_d: bool,
    seed: u64,
) -> crate::testing::Case<Conv3d> {
    let mut rng = crate::Rng::new(seed);
    let (xs, ws): (Vec<usize>, Vec<usize>) = if two_d {
        (
            vec![x[0], x[1], x[3], x[4]],
            vec![cout, x[1] / groups, k[1], k[2]],
        )
    } else {
        (x.to_vec(), vec![cout, x[1] / groups, k[0], k[1], k[2]])
    };
    let mut inputs = vec![
        CpuTensor::uniform(&xs, -1.0, 1.0, &mut rng),
        CpuTensor::uniform(&ws, -1.0, 1.0, &mut rng),
    ];
    if bias {
        inputs.push(CpuTensor::uniform(&[cout], -1.0, 1.0, &mut rng));
    }
    let label = format!(
        "{} k {k:?} stride {stride:?} padding {padding:?} groups {groups} bias {bias}",
        if two_d { "conv2d" } else { "conv3d" }
    );
    crate::testing::Case::new(
        Conv3d {
            stride,
            padding,
            groups,
            two_d,
        },
        inputs,
        label,
    )
}

/// Seed-model geometries (seed-models.md §4–§7) at reduced channels and sizes that keep the
/// kernel/stride relation but are not multiples of the stride where the model allows padding.
#[cfg(feature = "testing")]
pub fn seed_cases() -> Vec<crate::testing::Case<Conv3d>> {
    vec![
        case(
            [1, 3, 4, 33, 32],
            4,
            [2, 16, 16],
            [2, 16, 16],
            [0, 0, 0],
            1,
            true,
            false,
            1,
        ), // ViViT tubelet
        case(
            [2, 3, 4, 9, 8],
            5,
            [2, 4, 4],
            [2, 4, 4],
            [0, 0, 0],
            1,
            true,
            false,
            2,
        ), // Swin patch embed
        case(
            [1, 3, 5, 13, 12],
            4,
            [3, 4, 4],
            [2, 4, 4],
            [1, 0, 0],
            1,
            true,
            false,
            3,
        ), // UniFormer PE1
        case(
            [1, 4, 3, 6, 6],
            6,
            [1, 2, 2],
            [1, 2, 2],
            [0, 0, 0],
            1,
            true,
            false,
            4,
        ), // UniFormer PE2-4
        case(
            [1, 3, 5, 15, 14],
            4,
            [3, 7, 7],
            [2, 4, 4],
            [1, 3, 3],
            1,
            true,
            false,
            5,
        ), // MViT stem
        case(
            [2, 6, 3, 5, 7],
            9,
            [1, 1, 1],
            [1, 1, 1],
            [0, 0, 0],
            1,
            true,
            false,
            6,
        ), // pointwise
        case(
            [2, 6, 3, 5, 7],
            4,
            [3, 3, 3],
            [1, 2, 2],
            [1, 1, 1],
            2,
            false,
            false,
            7,
        ), // grouped
        case(
            [2, 3, 1, 23, 22],
            4,
            [1, 7, 7],
            [1, 2, 2],
            [0, 3, 3],
            1,
            false,
            true,
            8,
        ), // ResNet stem
        case(
            [1, 4, 1, 9, 10],
            5,
            [1, 3, 3],
            [1, 2, 2],
            [0, 1, 1],
            1,
            false,
            true,
            9,
        ), // ResNet 3×3/2
        // dw reduces over B·TO·HO·WO = 2·2·130·130 = 67,600 > 65,535 positions (1×1×1 conv).
        case(
            [2, 2, 2, 130, 130],
            3,
            [1, 1, 1],
            [1, 1, 1],
            [0, 0, 0],
            1,
            true,
            false,
            10,
        ),
        // forward reduction CIG·K = 48·27 = 1,296 > SPLIT: two slices, then a sum.
        case(
            [1, 48, 3, 4, 4],
            2,
            [3, 3, 3],
            [1, 1, 1],
            [1, 1, 1],
            1,
            false,
            false,
            11,
        ),
    ]
}

#[cfg(feature = "testing")]
pub fn test_spec() -> crate::testing::TestSpec<Conv3d> {
    use crate::testing::{TestSpec, Tol};
    use proptest::prelude::*;
    // (x, cout, k, stride, padding, groups, two_d): odd sizes, kernels 1–4, strides 1–4.
    type Geometry = (
        [usize; 5],
        usize,
        [usize; 3],
        [usize; 3],
        [usize; 3],
        usize,
        bool,
    );
    fn geometry(max_side: usize) -> impl Strategy<Value = Geometry> {
        let side = prop_oneof![Just(1usize), 2usize..=max_side];
        let k = 1usize..=4;
        let s = prop::sample::select(vec![1usize, 1, 2, 3, 4]);
        (
            1usize..=2,
            1usize..=3,
            1usize..=3,
            prop::sample::select(vec![1usize, 1, 2, 3]),
            [side.clone(), side.clone(), side],
            [k.clone(), k.clone(), k],
            [s.clone(), s.clone(), s],
            any::<[u8; 3]>(),
            any::<bool>(),
        )
            .prop_map(|(b, cig, cog, g, mut sp, mut k, mut s, pr, two_d)| {
                if two_d {
                    (sp[0], k[0], s[0]) = (1, 1, 1);
                }
                let mut p = [0; 3];
                for d in 0..3 {
                    p[d] = pr[d] as usize % (k[d] / 2 + 1);
                    sp[d] = sp[d].max(k[d] - 2 * p[d]);
                }
                (
                    [b, cig * g, sp[0], sp[1], sp[2]],
                    cog * g,
                    k,
                    s,
                    p,
                    g,
                    two_d,
                )
            })
    }
    let cases = (geometry(19), any::<bool>(), any::<u64>())
        .prop_map(|((x, co, k, s, p, g, td), bias, seed)| case(x, co, k, s, p, g, bias, td, seed));
    let small = (geometry(3), any::<bool>(), any::<u64>()).prop_filter_map(
        "≤ 64 elements",
        |((x, co, k, s, p, g, td), bias, seed)| {
            (x.iter().product::<usize>() <= 64 && co * x[1] / g * k.iter().product::<usize>() <= 96)
                .then(|| case(x, co, k, s, p, g, bias, td, seed))
        },
    );
    TestSpec {
        cases: prop_oneof![4 => cases, 1 => prop::sample::select(seed_cases())].boxed(),
        small_cases: small.boxed(),
        // Sums of ≤ 1,536 products in [-1, 1) (tubelet 3·2·16·16), in slices of 1,024.
        forward_tol: Tol::new(1e-4, 1e-5, "f32 sums of ≤ 1.5e3 products in [-1, 1)"),
        // dw/db sum up to 7e4 products (random signs) in slices of 1,024, then a tree.
        backward_tol: Tol::new(2e-4, 1e-4, "f32 sums of up to 7e4 products in dw/db"),
    }
}
