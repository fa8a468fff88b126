//! Video Swin 3D (shifted) window attention, fused (Liu et al. 2022, "Video Swin Transformer",
//! arXiv:2106.13230; official VST `swin_transformer.py`: SwinTransformerBlock3D.forward_part1 and
//! WindowAttention3D, minus the two Linears):
//!   qkv (B, D, H, W, 3C) → pad to window multiples (pad tokens: q = k = v = the qkv bias, since
//!   the official block pads after norm1 and before the Linear) → roll(−shift) → partition into
//!   windows of N = Wd·Wh·Ww tokens (batch-major) → per head
//!   softmax(scale·q kᵀ + table[index[:N,:N], h] + mask) v → reverse → roll(+shift) → crop
//!   → y (B, D, H, W, C).
//! The mask adds −100 (not −∞, as `compute_mask`) between tokens of different shift regions when
//! any shift is > 0; pad tokens are NOT masked in non-shifted windows and leak into the softmax,
//! as in the official code. All of it is index arithmetic inside the kernels (lib/window.wgsl):
//! no padded, rolled or partitioned copy is made, and the N×N scores never reach memory.
//!
//! Backward (FlashAttention-2 Algorithm 2 per window): d qkv, d(qkv bias) (the pad tokens' q, k, v
//! gradients, summed by a fixed-order reduction; zero without padding), and d(table), gathered per
//! table entry over chunks of windows, then reduced (no float atomics).
//!
//! Kernels: shaders/window_attention_forward.wgsl, window_attention_backward_delta.wgsl,
//! window_attention_backward_dq.wgsl, window_attention_backward_dkv.wgsl,
//! window_attention_backward_table.wgsl (+ reduce_forward for the two sums): the portable
//! variant (2). With SUBGROUP (subgroups of ≥ 8 lanes) the shipped variant is 3:
//! window_attention_forward_v3_subgroup.wgsl, window_attention_backward_dq_v3_subgroup.wgsl (dq
//! and the table gradient in one pass) and window_attention_backward_dkv_v3_subgroup.wgsl, which
//! read per-token descriptors made once per forward by window_attention_tokens.wgsl.

use crate::autograd::apply;
use crate::error::{Error, Result};
use crate::gpu::{gpu, grid};
use crate::kernel;
use crate::ops::attention::MAX_HEAD_DIM;
use crate::ops::reduce::{reduce_raw, ReduceKind};
use crate::ops::Op;
use crate::reference::CpuTensor;
use crate::tensor::{Indices, Tensor};

const BQ: u32 = 32;
const TILE: usize = 480;
const MAX_BK: usize = 64;
/// Keys the forward scores per step (its `KB`): the tile rows are a multiple of it.
const KB: usize = 8;
/// Loop iterations an invocation may spend (Mesa 22 llvmpipe stops at 65,535 in total).
const LOOP_BUDGET: usize = 50_000;
/// Window chunks of the v3 dq pass: each workgroup sums the table gradient of a chunk of
/// windows, so the partial tables (one per chunk and query tile) stay few.
const V3_CHUNKS: u32 = 8;
/// Table entries per head the v3 dq pass sums in workgroup memory (its `TMAX`, 16 KiB); larger
/// tables take the portable kernels.
const V3_TMAX: usize = 4096;
/// The widest original window (Ow) the v3 backward takes: the dq pass holds whole rows of Ow
/// queries per lane, at most `RMAX` queries; wider windows take the portable kernels.
const V3_MAX_OW: u32 = 8;
/// Queries per lane of the v3 (subgroup) forward and dkv kernels: their `R`.
const SG_R: u32 = 4;

/// Whether the adapter runs the v3 kernels: SUBGROUP with subgroups of at least 8 lanes (a
/// workgroup of 8 invocations is then one subgroup, lanes 0..7), as matmul v3.
fn subgroups() -> bool {
    let g = gpu();
    g.has_subgroups() && g.info.subgroup_min_size >= 8
}

/// The kernels' override constants: tiles, and the head dim in vec4s (constant loop bounds).
fn consts(p: &Params) -> [(&'static str, f64); 3] {
    [
        ("BQ", BQ as f64),
        ("TILE", TILE as f64),
        ("D4", p.d4 as f64),
    ]
}

/// The v3 kernels' override constants: the head dim in vec4s, and whether it is a multiple of 4.
fn v3_consts(p: &Params) -> [(&'static str, f64); 2] {
    [
        ("D4", p.d4 as f64),
        ("HD_EXACT", p.hd.is_multiple_of(4) as u32 as f64),
    ]
}

/// The v3 kernels' per-token descriptors (window_attention_tokens.wgsl): u32 pairs
/// (B·nW, N, 2) in a tensor's storage, 8 bytes a token.
fn tokens(p: &Params) -> Result<Tensor> {
    // The descriptor packs rel_off below 2^24 and rows below 2^31.
    let rows = p.b as usize * (p.pd * p.ph * p.pw) as usize;
    if p.table_len() >= 1 << 24 || rows >= 1 << 31 {
        crate::bail!(
            Shape,
            "window_attention: {rows} padded tokens or a {}-entry table is past the \
            v3 kernels' token descriptors (2^31 rows, 2^24 entries)",
            p.table_len()
        );
    }
    let n = p.n_inst as usize * p.n as usize;
    let toks = Tensor::empty(&[2 * n])?;
    // -> toks (B·nW, N, 2) u32
    gpu().dispatch(
        kernel!(window_attention_tokens),
        &[],
        &[toks.buffer()],
        p,
        grid(n, 256),
    )?;
    Ok(toks)
}

/// The window and shift a block uses on a given grid, and the window its bias table was built
/// for (the official `relative_position_index` is sliced `[:N, :N]` when the window is clamped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwinWindow {
    pub window: [usize; 3],
    pub shift: [usize; 3],
    pub full_window: [usize; 3],
}

/// Official `get_window_size`: on every axis whose size is ≤ the window, the window becomes the
/// size and the shift 0. `dims` = (D, H, W) of the token grid.
///
/// ```
/// use tubelet::ops::window_attention::video_swin_window;
/// // Swin-T stage 4 at 32×224²: H = W = 7 keep window 7 but lose their shift.
/// let w = video_swin_window([16, 7, 7], [8, 7, 7], [4, 3, 3]);
/// assert_eq!((w.window, w.shift), ([8, 7, 7], [4, 0, 0]));
/// ```
pub fn video_swin_window(dims: [usize; 3], window: [usize; 3], shift: [usize; 3]) -> SwinWindow {
    let (mut w, mut s) = (window, shift);
    for a in 0..3 {
        if dims[a] <= window[a] {
            w[a] = dims[a];
            s[a] = 0;
        }
    }
    SwinWindow {
        window: w,
        shift: s,
        full_window: window,
    }
}

/// Fused Video Swin window attention. Inputs: qkv (B, D, H, W, 3C), qkv_bias (3C),
/// table ((2Wd−1)(2Wh−1)(2Ww−1) of the full window, heads). `lse` is stashed by `forward`.
#[derive(Clone, Debug)]
pub struct WindowAttention {
    pub heads: usize,
    pub scale: f32,
    pub win: SwinWindow,
    /// Kernel variant: 0 the shipped one for this adapter (v3 with subgroups of ≥ 8 lanes,
    /// else v2), 2 the portable workgroup-memory kernels, 3 the subgroup kernels. For benches
    /// and the property tests, which exercise both.
    pub variant: u32,
    lse: Option<Tensor>,
    /// v3: the per-token descriptors of window_attention_tokens.wgsl (u32 pairs), made by the
    /// forward and read again by the backward.
    toks: Option<Tensor>,
}

/// Shared by every window_attention kernel: `struct Params` of shaders/lib/window.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    b: u32,
    gd: u32,
    gh: u32,
    gw: u32,
    wd: u32,
    wh: u32,
    ww: u32,
    n: u32,
    sd: u32,
    sh: u32,
    sw: u32,
    masked: u32,
    pd: u32,
    ph: u32,
    pw: u32,
    n_win: u32,
    od: u32,
    oh: u32,
    ow: u32,
    heads: u32,
    hd: u32,
    d4: u32,
    bk: u32,
    c: u32,
    scale: f32,
    n_pad: u32,
    chunk: u32,
    n_inst: u32,
}

impl Params {
    fn table_len(&self) -> usize {
        ((2 * self.od - 1) * (2 * self.oh - 1) * (2 * self.ow - 1)) as usize
    }
    fn n_chunks(&self) -> usize {
        (self.n_inst as usize).div_ceil(self.chunk as usize)
    }
}

impl WindowAttention {
    pub fn new(heads: usize, scale: f32, win: SwinWindow) -> WindowAttention {
        WindowAttention {
            heads,
            scale,
            win,
            variant: 0,
            lse: None,
            toks: None,
        }
    }

    /// Whether this op runs the v3 (subgroup) kernels, by `variant`.
    fn v3(&self) -> Result<bool> {
        match self.variant {
            0 => Ok(subgroups()),
            2 => Ok(false),
            3 if subgroups() => Ok(true),
            v => crate::bail!(
                Config,
                "window_attention: no kernel variant {v} on {} (0 shipped, \
                2 portable, 3 subgroup: needs SUBGROUP with subgroups of ≥ 8 lanes)",
                gpu().info.name
            ),
        }
    }

    /// Validates the three input shapes and the window; returns the kernels' geometry.
    fn geometry(&self, qkv: &[usize], bias: &[usize], table: &[usize]) -> Result<Params> {
        let SwinWindow {
            window: w,
            shift: s,
            full_window: o,
        } = self.win;
        let err = |msg: String| -> Result<Params> {
            Err(Error::Shape(format!(
                "window_attention: {msg} (qkv {qkv:?}, qkv_bias {bias:?}, \
                table {table:?}, heads {}, {:?})",
                self.heads, self.win
            )))
        };
        if qkv.len() != 5 || qkv[..4].contains(&0) {
            return err("qkv must be a non-empty (B, D, H, W, 3C) grid".into());
        }
        let c3 = qkv[4];
        if self.heads == 0 || c3 == 0 || !c3.is_multiple_of(3 * self.heads) {
            return err(format!(
                "last dim {c3} is not a positive multiple of 3·heads"
            ));
        }
        let hd = c3 / 3 / self.heads;
        if hd > MAX_HEAD_DIM {
            return err(format!("head dim {hd} above the supported {MAX_HEAD_DIM}"));
        }
        if (0..3).any(|a| w[a] == 0 || w[a] > o[a] || s[a] >= w[a]) {
            return err(
                "the window must be 1..=full window and the shift below it, per axis \
                (use video_swin_window)"
                    .into(),
            );
        }
        if bias != [c3] {
            return err(format!("qkv_bias must be ({c3})"));
        }
        let t = (2 * o[0] - 1) * (2 * o[1] - 1) * (2 * o[2] - 1);
        if table != [t, self.heads] {
            return err(format!(
                "table must be ({t}, {}) for the full window {o:?}",
                self.heads
            ));
        }
        if !self.scale.is_finite() {
            crate::bail!(
                Config,
                "window_attention: scale {} is not finite",
                self.scale
            );
        }
        let n = w[0] * w[1] * w[2];
        let d4 = hd.div_ceil(4);
        if n * (2 * d4 + 2) + 4 * d4 > LOOP_BUDGET {
            return err(format!(
                "a window of {n} tokens at head dim {hd} needs more loop \
                iterations per invocation than the {LOOP_BUDGET} budget (no window splitting yet)"
            ));
        }
        let pad = |g: usize, w: usize| g.div_ceil(w) * w;
        let (pd, ph, pw) = (pad(qkv[1], w[0]), pad(qkv[2], w[1]), pad(qkv[3], w[2]));
        let n_win = (pd / w[0]) * (ph / w[1]) * (pw / w[2]);
        // Table pass: ≤ N pairs an entry, each HD/4 + 2 trips, plus the coordinate loops.
        let chunk = (LOOP_BUDGET / (n * (d4 + 3) + o[0] * o[1])).max(1);
        let u = |v: usize| v as u32;
        Ok(Params {
            b: u(qkv[0]),
            gd: u(qkv[1]),
            gh: u(qkv[2]),
            gw: u(qkv[3]),
            wd: u(w[0]),
            wh: u(w[1]),
            ww: u(w[2]),
            n: u(n),
            sd: u(s[0]),
            sh: u(s[1]),
            sw: u(s[2]),
            masked: u(s.iter().any(|&v| v > 0) as usize),
            pd: u(pd),
            ph: u(ph),
            pw: u(pw),
            n_win: u(n_win),
            od: u(o[0]),
            oh: u(o[1]),
            ow: u(o[2]),
            heads: u(self.heads),
            hd: u(hd),
            d4: u(d4),
            bk: u((TILE / d4).min(MAX_BK) / KB * KB),
            c: u(c3 / 3),
            scale: self.scale,
            n_pad: u(pd * ph * pw - qkv[1] * qkv[2] * qkv[3]),
            chunk: u(chunk),
            n_inst: u(qkv[0] * n_win),
        })
    }
}

// ---------------------------------------------------------------- the CPU reference, literally

/// Python's `slice(start, stop)` on an axis of `len`, as a range (negative = from the end;
/// NOTE: `-0` is 0, so `slice(-0, None)` is the whole axis, as in `compute_mask` with shift 0).
fn py_slice(start: Option<i64>, stop: Option<i64>, len: usize) -> std::ops::Range<usize> {
    let norm = |i: i64| {
        if i < 0 {
            (len as i64 + i).max(0) as usize
        } else {
            (i as usize).min(len)
        }
    };
    let (a, b) = (start.map_or(0, norm), stop.map_or(len, norm));
    a..b.max(a)
}

struct RefGeom {
    b: usize,
    g: [usize; 3],
    p: [usize; 3],
    w: [usize; 3],
    s: [usize; 3],
    n: usize,
    nw: [usize; 3],
}

impl RefGeom {
    fn new(op: &WindowAttention, qkv: &[usize]) -> RefGeom {
        let w = op.win.window;
        let g = [qkv[1], qkv[2], qkv[3]];
        let p = [0, 1, 2].map(|a| g[a].div_ceil(w[a]) * w[a]);
        RefGeom {
            b: qkv[0],
            g,
            p,
            w,
            s: op.win.shift,
            n: w[0] * w[1] * w[2],
            nw: [0, 1, 2].map(|a| p[a] / w[a]),
        }
    }

    fn n_win(&self) -> usize {
        self.nw[0] * self.nw[1] * self.nw[2]
    }

    /// Pads (B, D, H, W, K) at the end of D, H, W with the row `fill`, rolls by −shift and
    /// partitions into (B·nW, N, K) windows, batch-major, tokens d-major.
    fn pad_roll_partition(&self, x: &CpuTensor, fill: &[f64]) -> CpuTensor {
        let k = x.shape[4];
        let [pd, ph, pw] = self.p;
        let xp = CpuTensor::from_fn(&[self.b, pd, ph, pw, k], |i| {
            if i[1] < self.g[0] && i[2] < self.g[1] && i[3] < self.g[2] {
                x.at(i)
            } else {
                fill[i[4]]
            }
        });
        // torch.roll(xp, (−sd, −sh, −sw)): rolled[x] = xp[(x + s) mod P]
        let rolled = CpuTensor::from_fn(&xp.shape, |i| {
            xp.at(&[
                i[0],
                (i[1] + self.s[0]) % pd,
                (i[2] + self.s[1]) % ph,
                (i[3] + self.s[2]) % pw,
                i[4],
            ])
        });
        CpuTensor::from_fn(&[self.b * self.n_win(), self.n, k], |i| {
            rolled.at(&self.window_coord(i[0], i[1], i[2]))
        })
    }

    /// Where token t of window instance g sits in the rolled padded frame (with channel k).
    fn window_coord(&self, g: usize, t: usize, k: usize) -> [usize; 5] {
        let [wd, wh, ww] = self.w;
        let (b, w) = (g / self.n_win(), g % self.n_win());
        let (wi, hi, xi) = (
            w / (self.nw[1] * self.nw[2]),
            (w / self.nw[2]) % self.nw[1],
            w % self.nw[2],
        );
        [
            b,
            wi * wd + t / (wh * ww),
            hi * wh + (t / ww) % wh,
            xi * ww + t % ww,
            k,
        ]
    }

    /// window_reverse then roll by +shift: (B·nW, N, K) → (B, Dp, Hp, Wp, K).
    fn reverse_unroll(&self, xw: &CpuTensor) -> CpuTensor {
        let k = xw.shape[2];
        let [pd, ph, pw] = self.p;
        let mut rolled = CpuTensor::zeros(&[self.b, pd, ph, pw, k]);
        for g in 0..xw.shape[0] {
            for t in 0..self.n {
                for c in 0..k {
                    *rolled.at_mut(&self.window_coord(g, t, c)) = xw.at(&[g, t, c]);
                }
            }
        }
        // torch.roll(rolled, (sd, sh, sw)): out[x] = rolled[(x − s) mod P]
        CpuTensor::from_fn(&rolled.shape, |i| {
            rolled.at(&[
                i[0],
                (i[1] + pd - self.s[0]) % pd,
                (i[2] + ph - self.s[1]) % ph,
                (i[3] + pw - self.s[2]) % pw,
                i[4],
            ])
        })
    }

    fn crop(&self, xp: &CpuTensor) -> CpuTensor {
        CpuTensor::from_fn(
            &[self.b, self.g[0], self.g[1], self.g[2], xp.shape[4]],
            |i| xp.at(i),
        )
    }

    /// Official `compute_mask` on the padded grid: (nW, N, N) of 0 / −100.
    fn mask(&self) -> CpuTensor {
        let img = shift_region_image(self.p, self.w, self.s);
        // window_partition of the mask image: the same windows as the batch-0 instances
        let labels = |w: usize, t: usize| {
            let c = self.window_coord(w, t, 0);
            img.at(&[0, c[1], c[2], c[3], 0])
        };
        CpuTensor::from_fn(&[self.n_win(), self.n, self.n], |i| {
            if labels(i[0], i[1]) != labels(i[0], i[2]) {
                -100.0
            } else {
                0.0
            }
        })
    }
}

/// The first half of the official `compute_mask`: `img_mask` (1, Dp, Hp, Wp, 1) of the padded
/// grid `p`, each token labelled by its shift region (a counter over the product of the slices
/// `(slice(−w), slice(−w, −s), slice(−s, None))` per axis, d outermost).
fn shift_region_image(p: [usize; 3], w: [usize; 3], s: [usize; 3]) -> CpuTensor {
    let [pd, ph, pw] = p;
    let mut img = CpuTensor::zeros(&[1, pd, ph, pw, 1]);
    let slices = |len: usize, w: usize, s: usize| {
        let (w, s) = (w as i64, s as i64);
        [
            py_slice(None, Some(-w), len),
            py_slice(Some(-w), Some(-s), len),
            py_slice(Some(-s), None, len),
        ]
    };
    let mut cnt = 0.0;
    for sd in slices(pd, w[0], s[0]) {
        for sh in slices(ph, w[1], s[1]) {
            for sw in slices(pw, w[2], s[2]) {
                for x in sd.clone() {
                    for y in sh.clone() {
                        for z in sw.clone() {
                            *img.at_mut(&[0, x, y, z, 0]) = cnt;
                        }
                    }
                }
                cnt += 1.0;
            }
        }
    }
    img
}

/// Official `relative_position_index` of window `o` (coords meshgrid 'ij', d-major), (N0, N0).
fn relative_position_index(o: [usize; 3]) -> Vec<Vec<usize>> {
    let n0 = o[0] * o[1] * o[2];
    let coord = |t: usize| [t / (o[1] * o[2]), (t / o[2]) % o[1], t % o[2]];
    (0..n0)
        .map(|i| {
            (0..n0)
                .map(|j| {
                    let (ci, cj) = (coord(i), coord(j));
                    let r = [0, 1, 2].map(|a| ci[a] + o[a] - 1 - cj[a]);
                    r[0] * (2 * o[1] - 1) * (2 * o[2] - 1) + r[1] * (2 * o[2] - 1) + r[2]
                })
                .collect()
        })
        .collect()
}

impl WindowAttention {
    /// Per (window instance, head): the windows' qkv (B·nW, N, 3C) and P (N×N), in f64.
    fn ref_probs(&self, x: &[&CpuTensor], geo: &RefGeom) -> (CpuTensor, Vec<Vec<Vec<f64>>>) {
        let c = x[0].shape[4] / 3;
        let hd = c / self.heads;
        let xw = geo.pad_roll_partition(x[0], &x[1].data);
        let index = relative_position_index(self.win.full_window);
        let mask = geo.mask();
        let shifted = self.win.shift.iter().any(|&s| s > 0);
        let n = geo.n;
        let mut probs = Vec::new();
        for g in 0..xw.shape[0] {
            for h in 0..self.heads {
                let mut p = vec![vec![0.0; n]; n];
                for i in 0..n {
                    for j in 0..n {
                        let mut s = 0.0;
                        for e in 0..hd {
                            s += xw.at(&[g, i, h * hd + e]) * xw.at(&[g, j, c + h * hd + e]);
                        }
                        p[i][j] = self.scale as f64 * s + x[2].at(&[index[i][j], h]);
                        if shifted {
                            p[i][j] += mask.at(&[g % geo.n_win(), i, j]);
                        }
                    }
                    let mx = p[i].iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = p[i].iter().map(|v| (v - mx).exp()).sum();
                    p[i].iter_mut().for_each(|v| *v = (*v - mx).exp() / z);
                }
                probs.push(p);
            }
        }
        (xw, probs)
    }
}

impl Op for WindowAttention {
    fn name(&self) -> &'static str {
        "window_attention"
    }

    // pad → roll(−shift) → partition → softmax(scale·q kᵀ + bias + mask) v → reverse → roll → crop
    fn reference(&self, x: &[&CpuTensor]) -> CpuTensor {
        self.geometry(&x[0].shape, &x[1].shape, &x[2].shape)
            .expect("window_attention reference");
        let geo = RefGeom::new(self, &x[0].shape);
        let c = x[0].shape[4] / 3;
        let hd = c / self.heads;
        let (xw, probs) = self.ref_probs(x, &geo);
        let mut out = CpuTensor::zeros(&[xw.shape[0], geo.n, c]);
        for g in 0..xw.shape[0] {
            for h in 0..self.heads {
                let p = &probs[g * self.heads + h];
                for i in 0..geo.n {
                    for e in 0..hd {
                        let o: f64 = (0..geo.n)
                            .map(|j| p[i][j] * xw.at(&[g, j, 2 * c + h * hd + e]))
                            .sum();
                        *out.at_mut(&[g, i, h * hd + e]) = o;
                    }
                }
            }
        }
        geo.crop(&geo.reverse_unroll(&out))
    }

    // Per window and head (P from the forward, dO the windows of dy padded with zeros):
    //   dV = Pᵀ dO;  dS = P ∘ (dO Vᵀ − rowsum(P ∘ dO Vᵀ));  dQ = scale·dS K;  dK = scale·dSᵀ Q;
    //   d table[index[i,j], h] += dS_ij;  then the windows' d qkv are reversed and rolled back:
    //   real tokens → d qkv, padding tokens → Σ into d qkv_bias.
    fn reference_backward(&self, x: &[&CpuTensor], dy: &CpuTensor) -> Vec<Option<CpuTensor>> {
        let geo = RefGeom::new(self, &x[0].shape);
        let c = x[0].shape[4] / 3;
        let hd = c / self.heads;
        let n = geo.n;
        let (xw, probs) = self.ref_probs(x, &geo);
        let gw = geo.pad_roll_partition(dy, &vec![0.0; c]); // (B·nW, N, C)
        let index = relative_position_index(self.win.full_window);
        let scale = self.scale as f64;
        let mut dxw = CpuTensor::zeros(&xw.shape);
        let mut dtable = CpuTensor::zeros(&x[2].shape);
        let at =
            |g: usize, t: usize, s: usize, h: usize, e: usize| xw.at(&[g, t, s * c + h * hd + e]);
        for g in 0..xw.shape[0] {
            for h in 0..self.heads {
                let p = &probs[g * self.heads + h];
                let mut ds = vec![vec![0.0; n]; n];
                for i in 0..n {
                    let dp: Vec<f64> = (0..n)
                        .map(|j| {
                            (0..hd)
                                .map(|e| gw.at(&[g, i, h * hd + e]) * at(g, j, 2, h, e))
                                .sum()
                        })
                        .collect();
                    let row: f64 = (0..n).map(|j| dp[j] * p[i][j]).sum();
                    for j in 0..n {
                        ds[i][j] = p[i][j] * (dp[j] - row);
                        *dtable.at_mut(&[index[i][j], h]) += ds[i][j];
                    }
                }
                for i in 0..n {
                    for e in 0..hd {
                        let (mut dq, mut dk, mut dv) = (0.0, 0.0, 0.0);
                        for j in 0..n {
                            dq += scale * ds[i][j] * at(g, j, 1, h, e);
                            dk += scale * ds[j][i] * at(g, j, 0, h, e);
                            dv += p[j][i] * gw.at(&[g, j, h * hd + e]);
                        }
                        *dxw.at_mut(&[g, i, h * hd + e]) = dq;
                        *dxw.at_mut(&[g, i, c + h * hd + e]) = dk;
                        *dxw.at_mut(&[g, i, 2 * c + h * hd + e]) = dv;
                    }
                }
            }
        }
        let dpad = geo.reverse_unroll(&dxw); // (B, Dp, Hp, Wp, 3C)
        let mut dbias = CpuTensor::zeros(&x[1].shape);
        for i in 0..dpad.numel() {
            let idx = crate::reference::unravel(i, &dpad.shape);
            if idx[1] >= geo.g[0] || idx[2] >= geo.g[1] || idx[3] >= geo.g[2] {
                dbias.data[idx[4]] += dpad.data[i];
            }
        }
        vec![Some(geo.crop(&dpad)), Some(dbias), Some(dtable)]
    }

    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        let p = self.geometry(x[0].shape(), x[1].shape(), x[2].shape())?;
        let s = x[0].shape();
        let y = Tensor::empty(&[s[0], s[1], s[2], s[3], s[4] / 3])?;
        let lse = Tensor::empty(&[p.n_inst as usize, p.heads as usize, p.n as usize])?;
        // qkv (B, D, H, W, 3C), bias (3C), table (T, heads) -> y (B, D, H, W, C), lse (B·nW, heads, N)
        let bufs = [
            x[0].buffer(),
            x[1].buffer(),
            x[2].buffer(),
            y.buffer(),
            lse.buffer(),
        ];
        if self.v3()? {
            let toks = tokens(&p)?;
            let bufs = [
                x[0].buffer(),
                x[1].buffer(),
                x[2].buffer(),
                toks.buffer(),
                y.buffer(),
                lse.buffer(),
            ];
            let groups = [p.n.div_ceil(8 * SG_R), p.n_inst, p.heads];
            gpu().dispatch(
                kernel!(window_attention_forward_v3_subgroup),
                &v3_consts(&p),
                &bufs,
                &p,
                groups,
            )?;
            self.toks = Some(toks);
        } else {
            gpu().dispatch(
                kernel!(window_attention_forward),
                &consts(&p),
                &bufs,
                &p,
                [p.n.div_ceil(BQ), p.n_inst, p.heads],
            )?;
        }
        self.lse = Some(lse);
        Ok(y)
    }

    // As reference_backward, with P recomputed from the saved lse (FlashAttention-2):
    //   Delta_i = rowsum(dO ∘ O);  dS_ij = P_ij·(dO_i·v_j − Delta_i);  dq, dk, dv as in attention.rs;
    //   d table[e, h] = Σ over windows and pairs with index e of dS_ij;  d bias = Σ_pad tokens d qkv.
    fn backward(&self, x: &[&Tensor], y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let p = self.geometry(x[0].shape(), x[1].shape(), x[2].shape())?;
        let lse = self
            .lse
            .as_ref()
            .ok_or_else(|| Error::Autograd("window_attention: backward before forward".into()))?;
        let (b, c3, heads) = (p.b as usize, 3 * p.c as usize, p.heads as usize);
        let rows = p.n_inst as usize * heads * p.n as usize;
        let delta = Tensor::empty(&[rows])?;
        // y, dy (B, D, H, W, C) -> delta (B·nW, heads, N)
        gpu().dispatch(
            kernel!(window_attention_backward_delta),
            &[],
            &[y.buffer(), dy.buffer(), delta.buffer()],
            &p,
            grid(rows, 256),
        )?;
        let dqkv = Tensor::empty(x[0].shape())?;
        let dpad = Tensor::empty(&[(b * p.n_pad as usize).max(1), c3])?;
        let ins = [
            x[0].buffer(),
            x[1].buffer(),
            x[2].buffer(),
            dy.buffer(),
            lse.buffer(),
            delta.buffer(),
        ];
        let t = p.table_len();
        let part = if self.v3()? && t <= V3_TMAX && p.ow <= V3_MAX_OW {
            // v3: dq and the table gradient in one pass, partial tables per workgroup (chunks of
            // windows bound their number), then dk, dv. The dq pass gives each lane RW = k·Ow
            // queries, whole rows (its header says why): 4 or Ow, so the property tests' small
            // windows compile few pipelines (each is tens of seconds on llvmpipe).
            let rw = if p.ow <= 4 { 4 / p.ow * p.ow } else { p.ow };
            let qt_rows = p.n.div_ceil(8 * rw);
            let qt = p.n.div_ceil(8 * SG_R);
            let mut p = p;
            p.chunk = p.n_inst.div_ceil(V3_CHUNKS.min(p.n_inst));
            let n_chunks = p.n_inst.div_ceil(p.chunk);
            let part = Tensor::empty(&[(n_chunks * qt_rows) as usize, t, heads])?;
            let toks = self.toks.as_ref().ok_or_else(|| {
                Error::Autograd("window_attention: backward before forward".into())
            })?;
            let bufs: Vec<&wgpu::Buffer> = ins
                .iter()
                .copied()
                .chain([toks.buffer(), dqkv.buffer(), dpad.buffer(), part.buffer()])
                .collect();
            // -> dqkv q slots (B, D, H, W, 3C), dpad (B, NPAD, 3C), part (NSLOT, T, heads)
            let [d4, exact] = v3_consts(&p);
            let consts = [d4, exact, ("RW", rw as f64)];
            gpu().dispatch(
                kernel!(window_attention_backward_dq_v3_subgroup),
                &consts,
                &bufs,
                &p,
                [qt_rows, n_chunks, p.heads],
            )?;
            let bufs: Vec<&wgpu::Buffer> = ins
                .iter()
                .copied()
                .chain([toks.buffer(), dqkv.buffer(), dpad.buffer()])
                .collect();
            // -> dqkv k, v slots, dpad k, v slots
            gpu().dispatch(
                kernel!(window_attention_backward_dkv_v3_subgroup),
                &v3_consts(&p),
                &bufs,
                &p,
                [qt, p.n_inst, p.heads],
            )?;
            part
        } else {
            let tiles = [p.n.div_ceil(BQ), p.n_inst, p.heads];
            let bufs: Vec<&wgpu::Buffer> = ins
                .iter()
                .copied()
                .chain([dqkv.buffer(), dpad.buffer()])
                .collect();
            // -> dqkv (B, D, H, W, 3C) for real tokens, dpad (B, NPAD, 3C) for padding tokens
            gpu().dispatch(
                kernel!(window_attention_backward_dq),
                &consts(&p),
                &bufs,
                &p,
                tiles,
            )?;
            gpu().dispatch(
                kernel!(window_attention_backward_dkv),
                &consts(&p),
                &bufs,
                &p,
                tiles,
            )?;
            let part = Tensor::empty(&[p.n_chunks(), t, heads])?;
            let bufs: Vec<&wgpu::Buffer> = ins.iter().copied().chain([part.buffer()]).collect();
            // -> part (NCHUNK, T, heads), one invocation per (chunk, entry, head)
            gpu().dispatch(
                kernel!(window_attention_backward_table),
                &[("D4", p.d4 as f64)],
                &bufs,
                &p,
                grid(part.numel(), 64),
            )?;
            part
        };
        let dbias = if p.n_pad == 0 {
            Tensor::try_full(&[c3], 0.0)?
        } else {
            // (B·NPAD, 3C) -> (3C), a fixed-order tree sum
            reduce_raw(&dpad, ReduceKind::Sum, &[0])?.view(&[c3])
        };
        // (NSLOT, T, heads) -> (T, heads), a fixed-order tree sum
        let dtable = if part.dim(0) == 1 {
            part.view(&[t, heads])
        } else {
            reduce_raw(&part, ReduceKind::Sum, &[0])?.view(&[t, heads])
        };
        Ok(vec![Some(dqkv), Some(dbias), Some(dtable)])
    }
}

impl Tensor {
    /// Video Swin 3D (shifted) window attention on a channels-last qkv grid (B, D, H, W, 3C),
    /// fused: padding, cyclic shift, window partition, relative-position bias, shift mask,
    /// window reverse and crop all happen inside the kernels. Returns (B, D, H, W, C), ready for
    /// the proj Linear. `qkv_bias` is the qkv Linear's bias (the value of padding tokens),
    /// `table` the ((2Wd−1)(2Wh−1)(2Ww−1), heads) bias table of `win.full_window`.
    ///
    /// ```no_run
    /// use tubelet::Tensor;
    /// use tubelet::ops::window_attention::video_swin_window;
    /// let (c, heads) = (96, 3); // Swin-T stage 1
    /// let qkv = Tensor::randn(&[1, 16, 56, 56, 3 * c], 0.0, 1.0, 1).unwrap();
    /// let bias = Tensor::zeros(&[3 * c]);
    /// let table = Tensor::trunc_normal(&[15 * 13 * 13, heads], 0.02, 2).unwrap();
    /// let win = video_swin_window([16, 56, 56], [8, 7, 7], [4, 3, 3]);
    /// let y = qkv.window_attention(&bias, &table, heads, 32f32.powf(-0.5), win); // (1, 16, 56, 56, 96)
    /// ```
    pub fn try_window_attention(
        &self,
        qkv_bias: &Tensor,
        table: &Tensor,
        heads: usize,
        scale: f32,
        win: SwinWindow,
    ) -> Result<Tensor> {
        apply(
            WindowAttention::new(heads, scale, win),
            &[self, qkv_bias, table],
        )
    }

    pub fn window_attention(
        &self,
        qkv_bias: &Tensor,
        table: &Tensor,
        heads: usize,
        scale: f32,
        win: SwinWindow,
    ) -> Tensor {
        self.try_window_attention(qkv_bias, table, heads, scale, win)
            .unwrap_or_else(|e| {
                panic!(
                    "window_attention{:?} with bias {:?}, table {:?}: {e}",
                    self.shape(),
                    qkv_bias.shape(),
                    table.shape()
                )
            })
    }
}

// ---------------------------------------------------------------- the unfused composition

/// Video Swin window attention built only from basic engine ops, step for step as the official
/// `SwinTransformerBlock3D.forward_part1` + `WindowAttention3D` (minus the two Linears): the
/// readable definition of what the fused kernels compute, their test oracle on the GPU, and the
/// baseline of `tubelet bench attention`. Same inputs, output and errors as
/// [`Tensor::try_window_attention`], so the two can be swapped. Every step materialises its
/// result (the padded grid, the rolled grid, the windows, the (B·nW, heads, N, N) scores), which
/// is what the fused op avoids.
///
/// ```no_run
/// use tubelet::Tensor;
/// use tubelet::ops::window_attention::{video_swin_window, window_attention_unfused};
/// let qkv = Tensor::randn(&[1, 8, 14, 14, 3 * 96], 0.0, 1.0, 1).unwrap();
/// let (bias, table) = (Tensor::zeros(&[3 * 96]), Tensor::zeros(&[15 * 13 * 13, 3]));
/// let win = video_swin_window([8, 14, 14], [8, 7, 7], [4, 3, 3]);
/// let y = window_attention_unfused(&qkv, &bias, &table, 3, 32f32.powf(-0.5), win).unwrap();
/// let z = qkv.window_attention(&bias, &table, 3, 32f32.powf(-0.5), win); // same values
/// ```
pub fn window_attention_unfused(
    qkv: &Tensor,
    qkv_bias: &Tensor,
    table: &Tensor,
    heads: usize,
    scale: f32,
    win: SwinWindow,
) -> Result<Tensor> {
    let g = WindowAttention::new(heads, scale, win).geometry(
        qkv.shape(),
        qkv_bias.shape(),
        table.shape(),
    )?;
    let SwinWindow {
        window: w,
        shift: s,
        full_window: o,
    } = win;
    let (b, c3, n, nw) = (
        g.b as usize,
        3 * g.c as usize,
        g.n as usize,
        g.n_win as usize,
    );
    let (c, hd) = (g.c as usize, g.hd as usize);
    let dims = [g.gd, g.gh, g.gw].map(|v| v as usize);
    let padded = [g.pd, g.ph, g.pw].map(|v| v as usize);
    // F.pad at the end of D, H, W (after norm1, before the qkv Linear: pad tokens = qkv bias)
    let mut x = qkv.clone(); // (B, D, H, W, 3C)
    for a in 0..3 {
        if padded[a] > dims[a] {
            let mut fill = x.shape().to_vec();
            fill[a + 1] = padded[a] - dims[a];
            let pad = qkv_bias
                .try_reshape(&[1, 1, 1, 1, c3])?
                .try_broadcast_to(&fill)?;
            x = Tensor::try_cat(&[&x, &pad], a + 1)?;
        }
    }
    // torch.roll(x, (−sd, −sh, −sw), dims=(1, 2, 3))
    for a in 0..3 {
        x = roll(&x, a + 1, padded[a] - s[a])?; // (B, Dp, Hp, Wp, 3C)
    }
    let xw = window_partition(&x, w)?; // (B·nW, N, 3C)
    let t = xw
        .try_reshape(&[b * nw, n, 3, heads, hd])?
        .try_permute(&[2, 0, 3, 1, 4])?; // (3, B·nW, nH, N, hd)
    let (q, k, v) = (
        t.try_select(0, 0)?,
        t.try_select(0, 1)?,
        t.try_select(0, 2)?,
    ); // (B·nW, nH, N, hd)
    let mut attn = q.try_mul_scalar(scale)?.try_matmul_nt(&k)?; // (B·nW, nH, N, N)
                                                                // + table[index[:N, :N].reshape(−1)].reshape(N, N, nH).permute(2, 0, 1)
    let full = relative_position_index(o);
    let index: Vec<u32> = (0..n * n).map(|ij| full[ij / n][ij % n] as u32).collect();
    let bias = table.try_index_select(&Indices::from_slice(&index)?)?; // (N·N, nH)
    attn = attn.try_add(&bias.try_reshape(&[n, n, heads])?.try_permute(&[2, 0, 1])?)?;
    if s.iter().any(|&v| v > 0) {
        // compute_mask: region labels partitioned into windows, −100 where two tokens differ
        let img = Tensor::from_cpu(&shift_region_image(padded, w, s))?; // (1, Dp, Hp, Wp, 1)
        let labels = window_partition(&img, w)?; // (nW, N, 1)
        let diff = labels.try_reshape(&[nw, 1, n])?.try_sub(&labels)?; // (nW, N, N)
        let ones = Tensor::try_full(&[1], 1.0)?;
        let mask = diff
            .try_mul(&diff)?
            .try_minimum(&ones)?
            .try_mul_scalar(-100.0)?; // 0 or −100
                                      // attn.view(B, nW, nH, N, N) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn
            .try_reshape(&[b, nw, heads, n, n])?
            .try_add(&mask.try_reshape(&[nw, 1, n, n])?)?;
        attn = attn.try_reshape(&[b * nw, heads, n, n])?;
    }
    let y = attn.try_softmax()?.try_matmul(&v)?; // (B·nW, nH, N, hd)
    let y = y.try_permute(&[0, 2, 1, 3])?.try_reshape(&[b * nw, n, c])?; // (B·nW, N, C)
    let mut y = window_reverse(&y, w, b, padded)?; // (B, Dp, Hp, Wp, C)
    for a in 0..3 {
        y = roll(&y, a + 1, s[a])?; // roll back by (+sd, +sh, +sw)
    }
    for a in 0..3 {
        if padded[a] > dims[a] {
            y = y.try_narrow(a + 1, 0, dims[a])?; // crop
        }
    }
    Ok(y) // (B, D, H, W, C)
}

/// `torch.roll(x, k, dims=axis)` for 0 ≤ k ≤ P: y[i] = x[(i − k) mod P], as two narrows and a cat.
fn roll(x: &Tensor, axis: usize, k: usize) -> Result<Tensor> {
    let p = x.dim(axis as isize);
    if k.is_multiple_of(p) {
        return Ok(x.clone());
    }
    Tensor::try_cat(
        &[
            &x.try_narrow(axis, p - k, k)?,
            &x.try_narrow(axis, 0, p - k)?,
        ],
        axis,
    )
}

/// Official `window_partition`: (B, Dp, Hp, Wp, K) → (B·nW, N, K), windows batch-major in
/// (D, H, W) order, tokens d-major inside a window.
fn window_partition(x: &Tensor, w: [usize; 3]) -> Result<Tensor> {
    let s = x.shape();
    let (b, k, nd, nh, nw) = (s[0], s[4], s[1] / w[0], s[2] / w[1], s[3] / w[2]);
    x.try_reshape(&[b, nd, w[0], nh, w[1], nw, w[2], k])?
        .try_permute(&[0, 1, 3, 5, 2, 4, 6, 7])? // (B, nD, nH, nW, Wd, Wh, Ww, K)
        .try_reshape(&[b * nd * nh * nw, w[0] * w[1] * w[2], k])
}

/// Official `window_reverse`: (B·nW, N, K) → (B, Dp, Hp, Wp, K).
fn window_reverse(x: &Tensor, w: [usize; 3], b: usize, p: [usize; 3]) -> Result<Tensor> {
    let (k, nd, nh, nw) = (x.dim(2), p[0] / w[0], p[1] / w[1], p[2] / w[2]);
    x.try_reshape(&[b, nd, nh, nw, w[0], w[1], w[2], k])?
        .try_permute(&[0, 1, 4, 2, 5, 3, 6, 7])? // (B, nD, Wd, nH, Wh, nW, Ww, K)
        .try_reshape(&[b, p[0], p[1], p[2], k])
}

#[cfg(feature = "testing")]
pub fn test_spec() -> crate::testing::TestSpec<WindowAttention> {
    use crate::testing::{Case, TestSpec, Tol};
    use proptest::prelude::*;
    #[allow(clippy::too_many_arguments)]
    fn case(
        b: usize,
        heads: usize,
        hd: usize,
        dims: [usize; 3],
        full: [usize; 3],
        shift: [usize; 3],
        k: f32,
        seed: u64,
    ) -> Case<WindowAttention> {
        let mut rng = crate::Rng::new(seed);
        let c3 = 3 * heads * hd;
        let shift = [0, 1, 2].map(|a| shift[a] % full[a]);
        let win = video_swin_window(dims, full, shift);
        let t = (2 * full[0] - 1) * (2 * full[1] - 1) * (2 * full[2] - 1);
        let qkv = CpuTensor::uniform(&[b, dims[0], dims[1], dims[2], c3], -1.5, 1.5, &mut rng);
        let bias = CpuTensor::uniform(&[c3], -1.0, 1.0, &mut rng);
        let table = CpuTensor::uniform(&[t, heads], -1.0, 1.0, &mut rng);
        let scale = k * (hd as f32).powf(-0.5);
        let label = format!("B {b} heads {heads} hd {hd} grid {dims:?} {win:?} scale {scale}");
        // A third of the cases run the portable kernels (the shipped ones are v3 on lavapipe).
        let mut op = WindowAttention::new(heads, scale, win);
        op.variant = if seed.is_multiple_of(3) { 2 } else { 0 };
        let label = format!("{label} variant {}", op.variant);
        Case::new(op, vec![qkv, bias, table], label)
    }
    // Grid sizes that are not multiples of the windows, and windows larger than the grid.
    let dim = prop::sample::select(vec![1usize, 2, 3, 4, 5, 7, 9]);
    let dims = [dim.clone(), dim.clone(), dim].prop_map(|[a, b, c]| [a, b, c]);
    let full = [1usize..=4, 1usize..=4, 1usize..=4].prop_map(|[a, b, c]| [a, b, c]);
    let shift = prop_oneof![
        Just([0usize; 3]),
        [0usize..4, 0usize..4, 0usize..4].prop_map(|[a, b, c]| [a, b, c])
    ];
    // Head dims, a fixed bucket: the kernels compile per (D4 = ⌈hd/4⌉, HD_EXACT) and the v3 dq
    // pass also per RW (override constants; llvmpipe JIT-compiles each in tens of seconds, and
    // for D4 8 in minutes). Three pairs cover the paths: D4 1 with HD_EXACT 0 (hd 1–3) and 1
    // (hd 4), and D4 2 with every remainder (hd 5–7, HD_EXACT 0). Windows up to 4 wide give RW 3
    // and 4, and a third of the cases take the portable kernels. Swin's head dim 32 (D4 8) runs
    // in ops/window_attention.rs (fused against unfused) and through swin-tiny in models/.
    let hds = prop::sample::select(vec![1usize, 2, 3, 4, 5, 6, 7]);
    let small_dim = 1usize..=3;
    let small_dims =
        [small_dim.clone(), small_dim.clone(), small_dim].prop_map(|[a, b, c]| [a, b, c]);
    let small_full = [1usize..=2, 1usize..=2, 1usize..=2].prop_map(|[a, b, c]| [a, b, c]);
    TestSpec {
        cases: (
            1usize..=2,
            1usize..=3,
            hds,
            dims,
            full,
            shift.clone(),
            0.5f32..2.0,
            any::<u64>(),
        )
            .prop_map(|(b, h, hd, d, f, s, k, seed)| case(b, h, hd, d, f, s, k, seed))
            .boxed(),
        small_cases: (
            1usize..=2,
            1usize..=2,
            1usize..=2,
            small_dims,
            small_full,
            shift,
            0.5f32..2.0,
            any::<u64>(),
        )
            .prop_map(|(b, h, hd, d, f, s, k, seed)| case(b, h, hd, d, f, s, k, seed))
            .boxed(),
        // f32 dots of ≤ 32 terms, softmax sums over ≤ 64 window tokens, logits |s| ≲ 10 (+ −100).
        forward_tol: Tol::new(
            2e-5,
            1e-4,
            "f32 dots of ≤ 32 terms, softmax sums of ≤ 64 keys",
        ),
        // d table and d bias sum dS over every window and pair: up to ~2·10³ f32 terms of |·| ≲ 1.
        backward_tol: Tol::new(
            2e-4,
            1e-3,
            "f32 sums of dS over all windows and pairs (d table, d bias)",
        ),
    }
}
