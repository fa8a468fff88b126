//! Depthwise 3D convolution (groups = C, channel multiplier 1), channels-first like PyTorch's
//! `nn.Conv3d(C, C, k, stride, padding, groups=C)`:
//!   y[n,c,o] = b[c] + Σ_{a<KT, i<KH, j<KW} w[c,0,a,i,j] · x[n,c, o·s − p + (a,i,j)]
//! with zero padding. x (B, C, T, H, W), w (C, 1, KT, KH, KW), optional b (C),
//! y (B, C, TO, HO, WO) with TO = (T + 2·pt − KT)/st + 1 (likewise HO, WO).
//! Used by UniFormer's DPE (k3 p1) and local MHRA (k5 p2) and MViT's attention pooling
//! (k3, stride 1×{1,2,4,8}², p1; seed-models.md §5, §6).
//! Kernels: shaders/depthwise_conv3d_forward.wgsl (also dx at stride 1, the kernel flipped),
//! shaders/depthwise_conv3d_backward_input.wgsl (strided dx),
//! shaders/depthwise_conv3d_backward_weight.wgsl (pass 1 of dw; pass 2 is reduce::reduce_raw).
//! Their lanes hold register blocks sized by override constants, which bounds the geometry:
//! KH·KW ≤ 125, KW ≤ 64 and SH·SW ≤ 64 (an error names the shapes otherwise).

use crate::autograd::apply;
use crate::error::{Error, Result};
use crate::gpu::{gpu, grid_rows};
use crate::kernel;
use crate::ops::reduce::{reduce_raw, ReduceKind};
use crate::ops::Op;
use crate::reference::CpuTensor;
use crate::tensor::Tensor;

/// Most output rows (R) and columns (V) one lane of the v3 kernels owns; MAX_SPAN is the size
/// of the kernels' register arrays (R·V accumulators, a row's (V − 1)·SW + KW inputs).
const MAX_R: usize = 8;
const MAX_V: usize = 7;
const MAX_SPAN: usize = 64;
/// Taps one workgroup of the weight-gradient pass accumulates (its register array).
const MAX_TAPS: usize = 125;

/// The v3 kernels' tiling of an output volume (TO, HO, WO): lanes own R × V blocks of one
/// (n, c, to); a workgroup is WG consecutive blocks of one (n, c).
#[derive(Clone, Copy, Debug)]
struct Tiles {
    v: usize,
    r: usize,
    wg: usize,
    lw: usize,
    hb: usize,
    blocks: usize,
    /// Workgroups per (n, c).
    gpc: usize,
}

/// Blocks of at most 7 columns and 24/KH (≤ 8) rows, split evenly (a 56-wide row is 8 blocks
/// of 7, not 7 of 8 and a remainder): larger blocks load less (each input row is read once
/// per block), but measured on lavapipe, blocks past 56 accumulators or with more than ~8 rows
/// of work per input row ran 2-4× slower (k3: V8·R8 3.8× slower than V7·R8; k5: R8 3.7×
/// slower than R4). WG is the blocks of one (n, c), up to `max_wg`, in whole 8-lane vectors.
fn tiles(out: [usize; 3], k: [usize; 3], s: [usize; 3], max_wg: usize) -> Tiles {
    let even = |n: usize, most: usize| n.div_ceil(n.div_ceil(most.max(1)));
    let v = even(out[2], MAX_V.min((MAX_SPAN - k[2]) / s[2] + 1));
    let r = even(out[1], (24 / k[1]).clamp(1, MAX_R));
    let (lw, hb) = (out[2].div_ceil(v), out[1].div_ceil(r));
    let blocks = out[0] * hb * lw;
    let wg = blocks.next_multiple_of(8).min(max_wg);
    Tiles {
        v,
        r,
        wg,
        lw,
        hb,
        blocks,
        gpc: blocks.div_ceil(wg),
    }
}

/// The strided input gradient's tiling of dx (T, H, W): blocks start on a stride phase, so R
/// is a multiple of SH and V of SW (R·V ≤ 64 needs SH·SW ≤ 64, checked in `check`).
fn strided_tiles(out: [usize; 3], k: [usize; 3], s: [usize; 3], max_wg: usize) -> Tiles {
    let v = s[2] * (MAX_V / s[2]).max(1);
    let r = s[1] * ((24 / k[1]).clamp(1, MAX_R).min(MAX_SPAN / v) / s[1]).max(1);
    let (lw, hb) = (out[2].div_ceil(v), out[1].div_ceil(r));
    let blocks = out[0] * hb * lw;
    let wg = blocks.next_multiple_of(8).min(max_wg);
    Tiles {
        v,
        r,
        wg,
        lw,
        hb,
        blocks,
        gpc: blocks.div_ceil(wg),
    }
}

/// Output length of a convolution/pooling axis: (n + 2p − k)/s + 1, or None when the padded
/// input is shorter than the kernel (PyTorch's "kernel size can't be greater than input").
pub(crate) fn out_len(n: usize, k: usize, s: usize, p: usize) -> Option<usize> {
    (n + 2 * p >= k && s > 0).then(|| (n + 2 * p - k) / s + 1)
}

/// The input coordinate read by output `o` through tap `k`, if it is inside (not padding).
pub(crate) fn in_coord(o: usize, k: usize, s: usize, p: usize, n: usize) -> Option<usize> {
    (o * s + k).checked_sub(p).filter(|&q| q < n)
}

#[derive(Clone, Debug)]
pub struct DepthwiseConv3d {
    pub stride: [usize; 3],
    pub padding: [usize; 3],
}

/// Parameters of the v3 kernels (forward, both input-gradient paths, weight gradient).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    t: u32,
    h: u32,
    w: u32,
    c: u32,
    to: u32,
    ho: u32,
    wo: u32,
    gpc: u32,
    lw: u32,
    hb: u32,
    blocks: u32,
    n: u32,
    st: u32,
    pt: i32,
    ph: i32,
    pw: i32,
    ag: u32,
    n_chunks: u32,
    _pad: [u32; 2],
}

impl Params {
    /// x (B, C, T, H, W) read by a pass with T stride `st` and padding `pad` into outputs
    /// (B, C, TO, HO, WO) tiled by `tl`.
    fn new(x: &[usize], out: &[usize], st: usize, pad: [isize; 3], tl: Tiles) -> Params {
        Params {
            t: x[2] as u32,
            h: x[3] as u32,
            w: x[4] as u32,
            c: x[1] as u32,
            to: out[2] as u32,
            ho: out[3] as u32,
            wo: out[4] as u32,
            gpc: tl.gpc as u32,
            lw: tl.lw as u32,
            hb: tl.hb as u32,
            blocks: tl.blocks as u32,
            n: (x[0] * x[1] * tl.gpc) as u32,
            st: st as u32,
            pt: pad[0] as i32,
            ph: pad[1] as i32,
            pw: pad[2] as i32,
            ag: 1,
            n_chunks: 0,
            _pad: [0; 2],
        }
    }
}

/// Override constants of a v3 kernel: kernel, H/W strides and tiling.
fn consts(k: &[usize], s: [usize; 3], tl: Tiles) -> Vec<(&'static str, f64)> {
    vec![
        ("KT", k[0] as f64),
        ("KH", k[1] as f64),
        ("KW", k[2] as f64),
        ("SH", s[1] as f64),
        ("SW", s[2] as f64),
        ("V", tl.v as f64),
        ("R", tl.r as f64),
        ("WG", tl.wg as f64),
    ]
}

impl DepthwiseConv3d {
    /// The output shape, or an error naming the op, the shapes and the parameters.
    fn check(&self, x: &[usize], w: &[usize], b: Option<&[usize]>) -> Result<[usize; 5]> {
        let what = || {
            format!(
                "depthwise_conv3d: x {x:?}, weight {w:?}, bias {b:?}, stride {:?}, padding {:?}",
                self.stride, self.padding
            )
        };
        if x.len() != 5 || w.len() != 5 {
            return Err(Error::Shape(format!(
                "{}: x must be (B, C, T, H, W) and weight (C, 1, KT, KH, KW)",
                what()
            )));
        }
        if w[0] != x[1] || w[1] != 1 {
            return Err(Error::Shape(format!(
                "{}: weight must be ({}, 1, KT, KH, KW) for {} channels",
                what(),
                x[1],
                x[1]
            )));
        }
        if w[2..].contains(&0) || self.stride.contains(&0) {
            return Err(Error::Shape(format!(
                "{}: kernel and stride must be ≥ 1",
                what()
            )));
        }
        if w[3] * w[4] > MAX_TAPS || w[4] > MAX_SPAN || self.stride[1] * self.stride[2] > MAX_SPAN {
            return Err(Error::Shape(format!(
                "{}: the kernels hold at most KH·KW = {MAX_TAPS} taps, KW = {MAX_SPAN} and SH·SW = {MAX_SPAN} per lane",
                what())));
        }
        if b.is_some_and(|b| b != [x[1]]) {
            return Err(Error::Shape(format!(
                "{}: bias must be ({},)",
                what(),
                x[1]
            )));
        }
        let mut out = [x[0], x[1], 0, 0, 0];
        for d in 0..3 {
            out[d + 2] =
                out_len(x[d + 2], w[d + 2], self.stride[d], self.padding[d]).ok_or_else(|| {
                    Error::Shape(format!(
                        "{}: kernel {} is larger than the padded input {} on axis {}",
                        what(),
                        w[d + 2],
                        x[d + 2] + 2 * self.padding[d],
                        d + 2
                    ))
                })?;
        }
        Ok(out)
    }

    fn pad(&self) -> [isize; 3] {
        self.padding.map(|p| p as isize)
    }

    /// Calls `f(n, c, o, q, k)` for every output o = (to, ho, wo), tap k = (a, i, j) and the
    /// input q it reads (taps on padding skipped): the one loop nest the reference is made of.
    fn for_each_tap(
        &self,
        x: &[usize],
        w: &[usize],
        mut f: impl FnMut(usize, usize, [usize; 3], [usize; 3], [usize; 3]),
    ) {
        let y = self.check(x, w, None).expect("valid shapes");
        let (s, p) = (self.stride, self.padding);
        for n in 0..y[0] {
            for c in 0..y[1] {
                for to in 0..y[2] {
                    for ho in 0..y[3] {
                        for wo in 0..y[4] {
                            for a in 0..w[2] {
                                for i in 0..w[3] {
                                    for j in 0..w[4] {
                                        let (Some(t), Some(h), Some(v)) = (
                                            in_coord(to, a, s[0], p[0], x[2]),
                                            in_coord(ho, i, s[1], p[1], x[3]),
                                            in_coord(wo, j, s[2], p[2], x[4]),
                                        ) else {
                                            continue;
                                        };
                                        f(n, c, [to, ho, wo], [t, h, v], [a, i, j]);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Op for DepthwiseConv3d {
    fn name(&self) -> &'static str {
        "depthwise_conv3d"
    }

    fn reference(&self, x: &[&CpuTensor]) -> CpuTensor {
        let y_shape = self
            .check(&x[0].shape, &x[1].shape, None)
            .expect("valid shapes");
        let mut y = CpuTensor::zeros(&y_shape);
        if let Some(b) = x.get(2) {
            for i in 0..y.numel() {
                let c = i / (y_shape[2] * y_shape[3] * y_shape[4]) % y_shape[1];
                y.data[i] = b.data[c];
            }
        }
        self.for_each_tap(&x[0].shape, &x[1].shape, |n, c, o, q, k| {
            *y.at_mut(&[n, c, o[0], o[1], o[2]]) +=
                x[1].at(&[c, 0, k[0], k[1], k[2]]) * x[0].at(&[n, c, q[0], q[1], q[2]]);
        });
        y
    }

    fn reference_backward(&self, x: &[&CpuTensor], dy: &CpuTensor) -> Vec<Option<CpuTensor>> {
        let mut dx = CpuTensor::zeros(&x[0].shape);
        let mut dw = CpuTensor::zeros(&x[1].shape);
        self.for_each_tap(&x[0].shape, &x[1].shape, |n, c, o, q, k| {
            let g = dy.at(&[n, c, o[0], o[1], o[2]]);
            *dx.at_mut(&[n, c, q[0], q[1], q[2]]) += g * x[1].at(&[c, 0, k[0], k[1], k[2]]);
            *dw.at_mut(&[c, 0, k[0], k[1], k[2]]) += g * x[0].at(&[n, c, q[0], q[1], q[2]]);
        });
        let mut out = vec![Some(dx), Some(dw)];
        if x.len() == 3 {
            // db[c] = Σ_{n,o} dy[n,c,o]
            let mut db = CpuTensor::zeros(&x[2].shape);
            let per = dy.shape[2] * dy.shape[3] * dy.shape[4];
            for i in 0..dy.numel() {
                db.data[i / per % dy.shape[1]] += dy.data[i];
            }
            out.push(Some(db));
        }
        out
    }

    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        let bias = x.get(2).copied();
        let (xs, ws) = (x[0].shape(), x[1].shape());
        let y_shape = self.check(xs, ws, bias.map(Tensor::shape))?;
        let y = Tensor::empty(&y_shape)?;
        if y.numel() == 0 {
            return Ok(y);
        }
        let tl = tiles(
            [y_shape[2], y_shape[3], y_shape[4]],
            [ws[2], ws[3], ws[4]],
            self.stride,
            64,
        );
        let p = Params::new(xs, &y_shape, self.stride[0], self.pad(), tl);
        // NOTE: without a bias the b binding still has to exist; w stands in and is never read.
        let b = bias.unwrap_or(x[1]);
        let mut consts = consts(&ws[2..], self.stride, tl);
        consts.push(("HAS_BIAS", f64::from(u8::from(bias.is_some()))));
        // (B, C, T, H, W) ⊛ (C, 1, KT, KH, KW) + (C) -> (B, C, TO, HO, WO), one workgroup per
        // WG blocks of R × V outputs of one (n, c)
        gpu().dispatch(
            kernel!(depthwise_conv3d_forward),
            &consts,
            &[x[0].buffer(), x[1].buffer(), b.buffer(), y.buffer()],
            &p,
            grid_rows(p.n as usize),
        )?;
        Ok(y)
    }

    // dx[n,c,q] = Σ_{k, o: o·s − p + k = q} w[c,k] · dy[n,c,o]      (stride 1: dy ⊛ flip(w))
    // dw[c,k]   = Σ_{n,o} dy[n,c,o] · x[n,c, o·s − p + k]            (chunk partials, then reduce)
    // db[c]     = Σ_{n,o} dy[n,c,o]                                  (reduce over B and TO·HO·WO)
    fn backward(&self, x: &[&Tensor], y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (xs, ws, ys) = (x[0].shape(), x[1].shape(), y.shape());
        let k = [ws[2], ws[3], ws[4]];
        let dx = if x[0].requires_grad() {
            let dx = Tensor::empty(xs)?;
            if self.stride == [1, 1, 1] {
                // The forward kernel on dy with the kernel reversed and padding K − 1 − p (which
                // is negative, a crop, when p ≥ K): (B, C, TO, HO, WO) -> (B, C, T, H, W)
                let tl = tiles([xs[2], xs[3], xs[4]], k, [1, 1, 1], 64);
                let pad: [isize; 3] =
                    std::array::from_fn(|d| k[d] as isize - 1 - self.padding[d] as isize);
                let p = Params::new(ys, xs, 1, pad, tl);
                let mut consts = consts(&k, [1, 1, 1], tl);
                consts.push(("FLIP", 1.0));
                gpu().dispatch(
                    kernel!(depthwise_conv3d_forward),
                    &consts,
                    &[dy.buffer(), x[1].buffer(), x[1].buffer(), dx.buffer()],
                    &p,
                    grid_rows(p.n as usize),
                )?;
            } else {
                let tl = strided_tiles([xs[2], xs[3], xs[4]], k, self.stride, 64);
                let p = Params::new(ys, xs, self.stride[0], self.pad(), tl);
                let mut consts = consts(&k, self.stride, tl);
                consts.extend([
                    ("PH", self.padding[1] as f64),
                    ("PW", self.padding[2] as f64),
                ]);
                // (B, C, TO, HO, WO), (C, 1, KT, KH, KW) -> (B, C, T, H, W), one workgroup per
                // WG blocks of R × V elements of one (n, c)
                gpu().dispatch(
                    kernel!(depthwise_conv3d_backward_input),
                    &consts,
                    &[dy.buffer(), x[1].buffer(), dx.buffer()],
                    &p,
                    grid_rows(p.n as usize),
                )?;
            }
            Some(dx)
        } else {
            None
        };
        let dw = if x[1].requires_grad() {
            let taps = k[0] * k[1] * k[2];
            // t-taps per workgroup: the accumulators (AT·KH·KW ≤ 125) and workgroup memory
            // (AT·KH·KW·WG floats) bound it
            let at = k[0].min(MAX_TAPS / (k[1] * k[2]));
            let floats = gpu().limits.max_compute_workgroup_storage_size as usize / 4;
            let max_wg = (floats / (at * k[1] * k[2]) / 8 * 8).clamp(8, 64);
            let tl = tiles([ys[2], ys[3], ys[4]], k, self.stride, max_wg);
            let mut p = Params::new(xs, ys, self.stride[0], self.pad(), tl);
            p.ag = k[0].div_ceil(at) as u32;
            p.n *= p.ag;
            p.n_chunks = (xs[0] * tl.gpc) as u32;
            let part = Tensor::empty(&[xs[1] * taps, p.n_chunks as usize])?;
            let mut consts = consts(&k, self.stride, tl);
            consts.push(("AT", at as f64));
            // (B, C, T, H, W), (B, C, TO, HO, WO) -> (C·KT·KH·KW, N_CHUNKS), one chunk per
            // workgroup of WG blocks of one (n, c) and group of AT t-taps
            gpu().dispatch(
                kernel!(depthwise_conv3d_backward_weight),
                &consts,
                &[x[0].buffer(), dy.buffer(), part.buffer()],
                &p,
                grid_rows(p.n as usize),
            )?;
            let dw = if p.n_chunks == 1 {
                part
            } else {
                reduce_raw(&part, ReduceKind::Sum, &[1])?
            };
            Some(dw.view(ws))
        } else {
            None
        };
        let mut out = vec![dx, dw];
        if let Some(b) = x.get(2) {
            // (B, C, TO·HO·WO) summed over B and the positions -> (C)
            let db = if b.requires_grad() {
                let g = dy.view(&[ys[0], ys[1], ys[2] * ys[3] * ys[4]]);
                Some(reduce_raw(&g, ReduceKind::Sum, &[0, 2])?.view(&[ys[1]]))
            } else {
                None
            };
            out.push(db);
        }
        Ok(out)
    }
}

impl Tensor {
    /// Depthwise 3D convolution of x (B, C, T, H, W) with weight (C, 1, KT, KH, KW) and an
    /// optional bias (C): PyTorch's `Conv3d(C, C, k, stride, padding, groups=C)`.
    ///
    /// ```no_run
    /// use tubelet::Tensor;
    /// let x = Tensor::randn(&[1, 64, 8, 56, 56], 0.0, 1.0, 1).unwrap();
    /// let w = Tensor::randn(&[64, 1, 3, 3, 3], 0.0, 0.1, 2).unwrap();
    /// let y = x.depthwise_conv3d(&w, None, [1, 1, 1], [1, 1, 1]); // UniFormer DPE: same shape
    /// ```
    pub fn try_depthwise_conv3d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: [usize; 3],
        padding: [usize; 3],
    ) -> Result<Tensor> {
        let op = DepthwiseConv3d { stride, padding };
        match bias {
            Some(b) => apply(op, &[self, weight, b]),
            None => apply(op, &[self, weight]),
        }
    }

    pub fn depthwise_conv3d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: [usize; 3],
        padding: [usize; 3],
    ) -> Tensor {
        self.try_depthwise_conv3d(weight, bias, stride, padding)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// One case: x (B, C, T, H, W) and a kernel/stride/padding; random values in [-1, 1).
#[cfg(feature = "testing")]
pub fn case(
    x: [usize; 5],
    k: [usize; 3],
    stride: [usize; 3],
    padding: [usize; 3],
    bias: bool,
    seed: u64,
) -> crate::testing::Case<DepthwiseConv3d> {
    let mut rng = crate::Rng::new(seed);
    let mut inputs = vec![
        CpuTensor::uniform(&x, -1.0, 1.0, &mut rng),
        CpuTensor::uniform(&[x[1], 1, k[0], k[1], k[2]], -1.0, 1.0, &mut rng),
    ];
    if bias {
        inputs.push(CpuTensor::uniform(&[x[1]], -1.0, 1.0, &mut rng));
    }
    let label = format!("k {k:?} stride {stride:?} padding {padding:?} bias {bias}");
    crate::testing::Case::new(DepthwiseConv3d { stride, padding }, inputs, label)
}

/// Seed-model geometries (seed-models.md §5, §6) at reduced channels and frames, each with a
/// spatial size that is not a multiple of the stride.
#[cfg(feature = "testing")]
pub fn seed_cases() -> Vec<crate::testing::Case<DepthwiseConv3d>> {
    vec![
        case([1, 3, 4, 13, 11], [3, 3, 3], [1, 1, 1], [1, 1, 1], true, 1), // UniFormer DPE
        case([2, 2, 5, 9, 10], [5, 5, 5], [1, 1, 1], [2, 2, 2], true, 2),  // UniFormer MHRA
        case([2, 3, 3, 15, 14], [3, 3, 3], [1, 2, 2], [1, 1, 1], false, 3), // MViT q pool
        case([1, 2, 4, 29, 30], [3, 3, 3], [1, 4, 4], [1, 1, 1], false, 4), // MViT kv pool
        case([1, 2, 2, 57, 56], [3, 3, 3], [1, 8, 8], [1, 1, 1], false, 5), // MViT kv pool 56→7
        case([1, 2, 1, 7, 7], [1, 9, 9], [1, 1, 1], [0, 4, 4], true, 6),   // T = 1, (1,9,9) kv
        // dw reduces over B·TO·HO·WO = 2·3·110·110 = 72,600 > 65,535 positions per channel.
        case(
            [2, 2, 3, 110, 110],
            [3, 3, 3],
            [1, 1, 1],
            [1, 1, 1],
            true,
            7,
        ),
    ]
}

#[cfg(feature = "testing")]
pub fn test_spec() -> crate::testing::TestSpec<DepthwiseConv3d> {
    use crate::testing::{TestSpec, Tol};
    use proptest::prelude::*;
    /// Spatial (T, H, W), kernel, stride, padding.
    type Geometry = ([usize; 3], [usize; 3], [usize; 3], [usize; 3]);
    // Axis sizes: 1, primes and non-multiples of the strides; kernels odd up to 5 (and 1).
    fn geometry(
        max_side: usize,
    ) -> impl Strategy<Value = ([usize; 5], [usize; 3], [usize; 3], [usize; 3])> {
        let side = prop_oneof![Just(1usize), 2usize..=max_side];
        let k = prop::sample::select(vec![1usize, 3, 5]);
        let s = prop::sample::select(vec![1usize, 1, 2, 3, 4, 8]);
        (
            1usize..=2,
            1usize..=4,
            [side.clone(), side.clone(), side],
            [k.clone(), k.clone(), k],
            [s.clone(), s.clone(), s],
            any::<[u8; 3]>(),
        )
            .prop_map(|(b, c, mut sp, k, s, pr)| {
                let mut p = [0; 3];
                for d in 0..3 {
                    p[d] = pr[d] as usize % (k[d] / 2 + 1);
                    sp[d] = sp[d].max(k[d] - 2 * p[d]); // at least one output
                }
                ([b, c, sp[0], sp[1], sp[2]], k, s, p)
            })
    }
    // GPU cases: a fixed bucket of geometries. The kernels' override constants are the kernel
    // size, the H/W strides and the tiling (R, V, WG), which the spatial sizes decide, so nearly
    // every random geometry compiled three new pipelines (seconds of llvmpipe JIT each). These
    // cover the code paths: every kernel size on every axis, strides 1 (dx by the flipped
    // forward), 2, 3 (not dividing the size) and 8, padding 0 to K/2, T = 1, one element,
    // partial R × V blocks and idle lanes, several workgroups per (n, c), and the seed models'
    // geometries (`seed_cases`, one past 65,535 dw positions). Batch, channels, bias and values
    // stay random; the finite-difference cases below keep fully random geometries (CPU only).
    let bucket: Vec<Geometry> = vec![
        ([1, 1, 1], [1, 1, 1], [1, 1, 1], [0, 0, 0]), // one element
        ([3, 5, 7], [1, 3, 5], [2, 3, 1], [0, 1, 2]), // mixed kernels, stride 3 ∤ 5
        ([6, 37, 23], [3, 5, 1], [3, 1, 2], [1, 2, 0]), // wide rows: V blocks with a remainder
        ([5, 11, 17], [5, 1, 3], [1, 2, 8], [2, 0, 1]), // stride 8, R rows with a remainder
    ];
    let cases = (
        prop::sample::select(bucket),
        1usize..=2,
        1usize..=4,
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|((sp, k, s, p), b, c, bias, seed)| {
            case([b, c, sp[0], sp[1], sp[2]], k, s, p, bias, seed)
        });
    let small = (geometry(4), any::<bool>(), any::<u64>()).prop_filter_map(
        "≤ 64 elements",
        |((x, k, s, p), bias, seed)| {
            (x.iter().product::<usize>() <= 64).then(|| case(x, k, s, p, bias, seed))
        },
    );
    let seeds = seed_cases();
    TestSpec {
        cases: prop_oneof![1 => cases, 1 => prop::sample::select(seeds)].boxed(),
        small_cases: small.boxed(),
        // f32 sums of ≤ 125 products of values in [-1, 1): a few ulps of Σ|w·x| ≤ 125.
        forward_tol: Tol::new(2e-5, 1e-5, "f32 sums of ≤ 125 products in [-1, 1)"),
        // dw and db sum up to 7e4 products (random signs): ~√n·ulp·|term| plus the tree order.
        backward_tol: Tol::new(2e-4, 1e-4, "f32 sums of up to 7e4 products in dw/db"),
    }
}
