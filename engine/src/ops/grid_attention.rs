//! Grouped multi-head attention on a (T, H, W) token grid, fused: axis-factorised attention
//! (over T, H, W, or space H·W), joint attention, and TimeSformer's sparse local-global
//! attention, forward and backward on the GPU, reading the packed qkv where it lies.
//!
//!   qkv (B, N, 3·heads·HD), N = [1 cls +] T·H·W, tokens in any axis order given by per-axis
//!   strides (grid position (t, h, w) is token cls + t·st + h·sh + w·sw);
//!   per part (a head range and a [`Pattern`]) and per head: the grid is cut into groups, and
//!   every token attends to the members of its own group: O = softmax(scale·Q Kᵀ) V per group;
//!   → y (B, N, Σ part heads·HD), the parts' heads concatenated in part order.
//!
//! A pattern gives each axis a [`Span`]: `One` (batched: each position its own group), `All`
//! (the whole axis), `Block(w)` (consecutive blocks of w, the last one shorter), `Stride(s)`
//! (the positions ≡ r mod s, for each residue r). Groups are the products of the axis groups.
//!
//! cls token ([`Cls`]), TimeSformer's rules (seed-models.md §2.1/§2.3):
//! - `Excluded`: the cls token (token 0) takes no part (temporal attention); its output row is 0
//!   and its gradient is 0.
//! - `Shared`: the cls token is replicated into every group as an extra query AND key (spatial
//!   attention: `cls_token.repeat` per frame, concatenated before the frame's tokens); its output
//!   is the mean of its G per-group outputs (`cls_token.mean(1)`).
//!
//! Uses (see the `Pattern` and `TokenGrid` constructors):
//! - TimeSformer divided space-time, token order space-major `(h w t)` after a leading cls:
//!   temporal = `Pattern::time()` with `Cls::Excluded` (or on `x[:, 1:]` with `Cls::None`),
//!   spatial = `Pattern::space()` with `Cls::Shared`. Axial (paper) = time, width, height.
//! - ViViT Model 3 (t-major, no cls): `Pattern::time()` then `Pattern::space()`; Model 4: one op,
//!   two parts: heads [0, nh/2) over time, [nh/2, nh) over space, outputs concatenated on heads.
//! - TimeSformer sparse local-global (L+G; paper only, not in the official code). What we
//!   inferred from the paper's one sentence ("local attention over the neighbouring F × H/2 × W/2
//!   patches, then sparse global attention over the entire clip with a stride of 2 patches in
//!   time, height and width"): the local step PARTITIONS the grid into non-overlapping blocks of
//!   all T frames × ceil(H/2) × ceil(W/2) patches (four spatial quadrants; not a sliding window
//!   centred on each query), [`Pattern::timesformer_local`]; the global step attends among the
//!   tokens whose (t, h, w) are congruent mod 2 (Sparse Transformer's strided pattern, Child et
//!   al. 2019: j attends i when i − j ≡ 0 mod the stride, per axis), i.e. 8 groups of ~N/8 tokens,
//!   [`Pattern::timesformer_global`]. The cls token's treatment is not stated; either `Cls` rule
//!   may be used.
//!
//! Every group, the cls member, the token order and the head range are index arithmetic inside
//! the kernels (shaders/lib/grid.wgsl): no permuted, gathered or replicated copy is made. Kernels
//! follow FlashAttention-2 (Dao 2023, arXiv:2307.08691) as ops/attention.rs does (online softmax,
//! saved log-sum-exp, Delta = rowsum(dO∘O), a dQ pass and a dK/dV pass); the shared cls token's
//! per-group outputs and gradients are averaged / summed by small fixed-order passes (no atomics).
//! Limitation: a group is not split across invocations, so groups longer than the loop budget
//! (e.g. 785 tokens at HD 64) are refused with an error (Mesa 22 llvmpipe's 65,535-iteration cap).
//!
//! Kernels: shaders/grid_attention_forward.wgsl, grid_attention_forward_cls.wgsl,
//! grid_attention_backward_delta.wgsl, grid_attention_backward_dq.wgsl,
//! grid_attention_backward_dkv.wgsl, grid_attention_backward_cls.wgsl (+ lib/grid.wgsl).
//! Unfused definition from basic ops: [`grid_attention_unfused`].

use std::collections::BTreeMap;
use std::ops::Range;

use crate::autograd::apply;
use crate::error::{Error, Result};
use crate::gpu::{gpu, grid};
use crate::kernel;
use crate::ops::attention::MAX_HEAD_DIM;
use crate::ops::Op;
use crate::reference::CpuTensor;
use crate::tensor::{Indices, Tensor};

const BQ: u32 = 32;
const TILE: usize = 480;
const MAX_BK: usize = 64;
/// Loop iterations an invocation may spend (Mesa 22 llvmpipe stops at 65,535 in total).
const LOOP_BUDGET: usize = 50_000;
const TILES: [(&str, f64); 2] = [("BQ", BQ as f64), ("TILE", TILE as f64)];

/// The row kernels' override constants: the tiles and the head dim in vec4 slots (`D4`), so
/// every head dim gets its own pipeline with constant-trip row loops.
fn row_constants(p: &Params) -> [(&'static str, f64); 3] {
    [TILES[0], TILES[1], ("D4", p.d4 as f64)]
}
const MAX_GROUPS: usize = 65_535;

/// The longest group (tokens, a shared cls token included) the kernels take at `head_dim`: each
/// invocation loops over its whole group, within the loop budget. Longer groups are an error
/// (they are not split yet); callers with a composed fallback can test this first.
pub fn max_group_len(head_dim: usize) -> usize {
    let d4 = head_dim.div_ceil(4);
    LOOP_BUDGET.saturating_sub(4 * d4) / (4 * d4 + 4)
}

/// How one grid axis is cut into groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    /// Each position is its own group: the axis is batched over.
    One,
    /// The whole axis is one group.
    All,
    /// Consecutive blocks of `w` positions (the last one shorter when `w` does not divide).
    Block(usize),
    /// The positions congruent mod `s`: `s` groups of every s-th position.
    Stride(usize),
}

impl Span {
    /// (window, dilation) of lib/grid.wgsl on an axis of `n` positions. `Block` and `Stride` are
    /// clamped to the axis, so that no group is empty.
    fn window_dilation(self, n: usize) -> (usize, usize) {
        match self {
            Span::One => (1, 1),
            Span::All => (n, 1),
            Span::Block(w) => (w.clamp(1, n), 1),
            Span::Stride(s) => {
                let s = s.clamp(1, n);
                (n.div_ceil(s), s)
            }
        }
    }

    /// The reference's definition: (group coordinate, position within the group) of x < n.
    fn key(self, x: usize, n: usize) -> (usize, usize) {
        match self {
            Span::One => (x, 0),
            Span::All => (0, x),
            Span::Block(w) => (x / w.clamp(1, n), x % w.clamp(1, n)),
            Span::Stride(s) => (x % s.clamp(1, n), x / s.clamp(1, n)),
        }
    }
}

/// The groups of every axis (T, H, W): who attends to whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pattern(pub [Span; 3]);

impl Pattern {
    /// Attention over time, for each spatial position (TimeSformer temporal, ViViT M3 time).
    pub const fn time() -> Pattern {
        Pattern([Span::All, Span::One, Span::One])
    }
    /// Attention over H·W jointly, for each frame (TimeSformer spatial, ViViT M3 space).
    pub const fn space() -> Pattern {
        Pattern([Span::One, Span::All, Span::All])
    }
    /// Attention along H, for each (t, w) (axial attention).
    pub const fn height() -> Pattern {
        Pattern([Span::One, Span::All, Span::One])
    }
    /// Attention along W, for each (t, h) (axial attention).
    pub const fn width() -> Pattern {
        Pattern([Span::One, Span::One, Span::All])
    }
    /// Attention over all T·H·W tokens.
    pub const fn joint() -> Pattern {
        Pattern([Span::All, Span::All, Span::All])
    }
    /// TimeSformer L+G, local step: blocks of T × ceil(H/2) × ceil(W/2) (see the module docs).
    pub fn timesformer_local(dims: [usize; 3]) -> Pattern {
        Pattern([
            Span::All,
            Span::Block(dims[1].div_ceil(2)),
            Span::Block(dims[2].div_ceil(2)),
        ])
    }
    /// TimeSformer L+G, global step: stride 2 in t, h and w (see the module docs).
    pub const fn timesformer_global() -> Pattern {
        Pattern([Span::Stride(2), Span::Stride(2), Span::Stride(2)])
    }
}

/// The cls token's rule (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cls {
    /// No cls token: the N tokens are the grid.
    None,
    /// A cls token at index 0 that takes no part (output 0, gradient 0).
    Excluded,
    /// A cls token at index 0 that joins every group as query and key; its output is the mean.
    Shared,
}

/// Where the grid's tokens lie: grid (T, H, W), token strides per axis, and the cls rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenGrid {
    pub dims: [usize; 3],
    pub strides: [usize; 3],
    pub cls: Cls,
}

impl TokenGrid {
    /// Tokens ordered `(t h w)`, t slowest (ViViT: `[B, T, H·W, D]` flattened).
    pub fn t_major(dims: [usize; 3], cls: Cls) -> TokenGrid {
        TokenGrid {
            dims,
            strides: [dims[1] * dims[2], dims[2], 1],
            cls,
        }
    }
    /// Tokens ordered `(h w t)`, t fastest (TimeSformer after its time embedding).
    pub fn space_major(dims: [usize; 3], cls: Cls) -> TokenGrid {
        TokenGrid {
            dims,
            strides: [1, dims[2] * dims[0], dims[0]],
            cls,
        }
    }
    fn has_cls(&self) -> usize {
        (self.cls != Cls::None) as usize
    }
    /// Tokens a batch row: the grid and the cls token.
    pub fn n_tokens(&self) -> usize {
        self.has_cls() + self.dims.iter().product::<usize>()
    }
    fn token(&self, x: [usize; 3]) -> usize {
        self.has_cls() + (0..3).map(|a| x[a] * self.strides[a]).sum::<usize>()
    }
}

/// A head range and the pattern its heads attend with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub heads: Range<usize>,
    pub pattern: Pattern,
}

/// Fused grid attention (module docs). Input: qkv (B, N, 3·heads·HD). `saved` is stashed by
/// `forward`: per part, the log-sum-exp rows and the shared cls token's per-group outputs.
#[derive(Clone, Debug)]
pub struct GridAttention {
    pub heads: usize,
    pub scale: f32,
    pub grid: TokenGrid,
    pub parts: Vec<Part>,
    saved: Vec<(Tensor, Tensor)>,
}

/// Shared by every grid_attention kernel: `struct Params` of shaders/lib/grid.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    b: u32,
    n_tok: u32,
    c3: u32,
    c_out: u32,
    hd: u32,
    d4: u32,
    bk: u32,
    cls: u32,
    heads: u32,
    h0: u32,
    o0: u32,
    nh: u32,
    n_grp: u32,
    lmax: u32,
    n_inst: u32,
    scale: f32,
    dims: [u32; 4],
    strides: [u32; 4],
    win: [u32; 4],
    dil: [u32; 4],
    ngrp: [u32; 4],
}

/// Workgroups (x, y, z): `x` along a group's members, the instances folded over y and z.
fn launch(p: &Params) -> [u32; 3] {
    let n = p.n_inst as usize;
    let y = n.min(MAX_GROUPS);
    [p.lmax.div_ceil(BQ), y as u32, n.div_ceil(y) as u32]
}

impl GridAttention {
    pub fn new(heads: usize, scale: f32, grid: TokenGrid, parts: Vec<Part>) -> GridAttention {
        GridAttention {
            heads,
            scale,
            grid,
            parts,
            saved: Vec::new(),
        }
    }

    fn c_out(&self, hd: usize) -> usize {
        self.parts.iter().map(|p| p.heads.len()).sum::<usize>() * hd
    }

    /// Validates the qkv shape, grid and parts; returns the kernels' Params, one per part.
    fn geometry(&self, qkv: &[usize]) -> Result<Vec<Params>> {
        let g = &self.grid;
        let err = |msg: String| -> Result<Vec<Params>> {
            Err(Error::Shape(format!(
                "grid_attention: {msg} (qkv {qkv:?}, heads {}, {g:?}, parts {:?})",
                self.heads, self.parts
            )))
        };
        if g.dims.contains(&0) {
            return err("the grid (T, H, W) must be non-empty".into());
        }
        // The strides must lay the grid out as some permutation of its axes, densely.
        let mut axes: Vec<(usize, usize)> = (0..3)
            .filter(|&a| g.dims[a] > 1)
            .map(|a| (g.strides[a], g.dims[a]))
            .collect();
        axes.sort();
        let mut expect = 1;
        for (s, d) in axes {
            if s != expect {
                return err("the strides must place the T·H·W grid tokens densely (a permutation of the axes)".into());
            }
            expect *= d;
        }
        if qkv.len() != 3 || qkv[0] == 0 || qkv[1] != g.n_tokens() {
            return err(format!(
                "qkv must be (B, {}, 3·heads·head_dim) for this grid",
                g.n_tokens()
            ));
        }
        let c3 = qkv[2];
        if self.heads == 0 || c3 == 0 || !c3.is_multiple_of(3 * self.heads) {
            return err(format!(
                "last dim {c3} is not a positive multiple of 3·heads"
            ));
        }
        let hd = c3 / 3 / self.heads;
        if hd > MAX_HEAD_DIM {
            return err(format!("head dim {hd} above the supported {MAX_HEAD_DIM}"));
        }
        if !self.scale.is_finite() {
            crate::bail!(Config, "grid_attention: scale {} is not finite", self.scale);
        }
        if self.parts.is_empty() {
            return err("at least one part (head range, pattern) is needed".into());
        }
        let mut used = vec![false; self.heads];
        for part in &self.parts {
            if part.heads.is_empty()
                || part.heads.end > self.heads
                || part.heads.clone().any(|h| used[h])
            {
                return err(format!("part heads {:?} must be non-empty, within 0..{} and disjoint from the other parts", part.heads, self.heads));
            }
            part.heads.clone().for_each(|h| used[h] = true);
            if part
                .pattern
                .0
                .iter()
                .any(|s| matches!(s, Span::Block(0) | Span::Stride(0)))
            {
                return err(format!(
                    "pattern {:?}: Block and Stride need a size ≥ 1",
                    part.pattern
                ));
            }
        }
        let d4 = hd.div_ceil(4);
        let u = |v: usize| v as u32;
        let mut out = Vec::new();
        let mut o0 = 0;
        for part in &self.parts {
            let mut p = Params::default();
            let mut lmax = 1;
            let mut n_grp = 1;
            for a in 0..3 {
                let n = g.dims[a];
                let (w, s) = part.pattern.0[a].window_dilation(n);
                let ngrp = n.div_ceil(w * s) * s;
                (p.dims[a], p.strides[a], p.win[a], p.dil[a], p.ngrp[a]) =
                    (u(n), u(g.strides[a]), u(w), u(s), u(ngrp));
                lmax *= w.min(n.div_ceil(s)); // group 0 is the largest on every axis
                n_grp *= ngrp;
            }
            lmax += (g.cls == Cls::Shared) as usize;
            let nh = part.heads.len();
            if lmax * (4 * d4 + 4) + 4 * d4 > LOOP_BUDGET {
                return err(format!(
                    "a group of {lmax} tokens at head dim {hd} needs more loop iterations \
                    per invocation than the {LOOP_BUDGET} budget (groups are not split yet)"
                ));
            }
            if g.cls == Cls::Shared && n_grp > LOOP_BUDGET {
                return err(format!(
                    "a shared cls token in {n_grp} groups: its mean and gradient sums \
                    loop over more than the {LOOP_BUDGET} budget"
                ));
            }
            (p.b, p.n_tok, p.c3, p.c_out) = (u(qkv[0]), u(qkv[1]), u(c3), u(self.c_out(hd)));
            (p.hd, p.d4, p.bk, p.cls) = (u(hd), u(d4), u((TILE / d4).min(MAX_BK)), g.cls as u32);
            (p.heads, p.h0, p.o0, p.nh) = (u(self.heads), u(part.heads.start), u(o0), u(nh));
            (p.n_grp, p.lmax, p.n_inst, p.scale) =
                (u(n_grp), u(lmax), u(qkv[0] * n_grp * nh), self.scale);
            o0 += nh;
            out.push(p);
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------- the CPU reference, literally

/// The groups of one batch element, as lists of grid tokens: each grid position is keyed per
/// axis by [`Span::key`], and positions with equal group keys form a group, ordered by their
/// within-group keys. (The kernels compute the same sets by arithmetic, lib/grid.wgsl.)
fn ref_groups(grid: &TokenGrid, pattern: Pattern) -> Vec<Vec<usize>> {
    let [nt, nh, nw] = grid.dims;
    let mut groups: BTreeMap<[usize; 3], Vec<([usize; 3], usize)>> = BTreeMap::new();
    for t in 0..nt {
        for h in 0..nh {
            for w in 0..nw {
                let x = [t, h, w];
                let k = [0, 1, 2].map(|a| pattern.0[a].key(x[a], grid.dims[a]));
                groups
                    .entry(k.map(|k| k.0))
                    .or_default()
                    .push((k.map(|k| k.1), grid.token(x)));
            }
        }
    }
    groups
        .into_values()
        .map(|mut m| {
            m.sort();
            m.into_iter().map(|(_, tok)| tok).collect()
        })
        .collect()
}

/// The members of one group: `None` is the shared cls token.
fn ref_members(grid: &TokenGrid, grp: &[usize]) -> Vec<Option<usize>> {
    let cls = (grid.cls == Cls::Shared).then_some(None);
    cls.into_iter()
        .chain(grp.iter().map(|&t| Some(t)))
        .collect()
}

impl GridAttention {
    /// P (L×L) of one group of batch row b, qkv head hq, in f64.
    fn ref_probs(
        &self,
        qkv: &CpuTensor,
        b: usize,
        hq: usize,
        mem: &[Option<usize>],
    ) -> Vec<Vec<f64>> {
        let hd = qkv.shape[2] / 3 / self.heads;
        let at = |m: Option<usize>, t: usize, c: usize| {
            qkv.at(&[b, m.unwrap_or(0), (t * self.heads + hq) * hd + c])
        };
        let n = mem.len();
        let mut p = vec![vec![0.0; n]; n];
        for i in 0..n {
            for j in 0..n {
                p[i][j] = self.scale as f64
                    * (0..hd)
                        .map(|c| at(mem[i], 0, c) * at(mem[j], 1, c))
                        .sum::<f64>();
            }
            let mx = p[i].iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = p[i].iter().map(|v| (v - mx).exp()).sum();
            p[i].iter_mut().for_each(|v| *v = (*v - mx).exp() / z);
        }
        p
    }
}

impl Op for GridAttention {
    fn name(&self) -> &'static str {
        "grid_attention"
    }

    // Per part, head, batch row and group: O = softmax(scale·Q Kᵀ) V over the group's members;
    // grid rows of y take their O, the shared cls row the mean of its O over the groups.
    fn reference(&self, x: &[&CpuTensor]) -> CpuTensor {
        self.geometry(&x[0].shape)
            .expect("grid_attention reference");
        let (bb, n_tok) = (x[0].shape[0], x[0].shape[1]);
        let hd = x[0].shape[2] / 3 / self.heads;
        let mut y = CpuTensor::zeros(&[bb, n_tok, self.c_out(hd)]);
        let mut o0 = 0;
        for part in &self.parts {
            let groups = ref_groups(&self.grid, part.pattern);
            for b in 0..bb {
                for (hh, hq) in part.heads.clone().enumerate() {
                    for grp in &groups {
                        let mem = ref_members(&self.grid, grp);
                        let p = self.ref_probs(x[0], b, hq, &mem);
                        for (i, m) in mem.iter().enumerate() {
                            for c in 0..hd {
                                let o: f64 = (0..mem.len())
                                    .map(|j| {
                                        p[i][j]
                                            * x[0].at(&[
                                                b,
                                                mem[j].unwrap_or(0),
                                                (2 * self.heads + hq) * hd + c,
                                            ])
                                    })
                                    .sum();
                                let out = y.at_mut(&[b, m.unwrap_or(0), (o0 + hh) * hd + c]);
                                match m {
                                    Some(_) => *out = o,
                                    None => *out += o / groups.len() as f64,
                                }
                            }
                        }
                    }
                }
            }
            o0 += part.heads.len();
        }
        y
    }

    // Per group (dO_i = dy row of member i; the shared cls: dy_cls / G, as y_cls is a mean):
    //   dV = Pᵀ dO;  dS = P ∘ (dO Vᵀ − rowsum(P ∘ dO Vᵀ));  dQ = scale·dS K;  dK = scale·dSᵀ Q,
    // accumulated into the members' tokens (the shared cls token sums over its G groups).
    fn reference_backward(&self, x: &[&CpuTensor], dy: &CpuTensor) -> Vec<Option<CpuTensor>> {
        let bb = x[0].shape[0];
        let hd = x[0].shape[2] / 3 / self.heads;
        let scale = self.scale as f64;
        let mut dx = CpuTensor::zeros(&x[0].shape);
        let mut o0 = 0;
        for part in &self.parts {
            let groups = ref_groups(&self.grid, part.pattern);
            let ng = groups.len() as f64;
            for b in 0..bb {
                for (hh, hq) in part.heads.clone().enumerate() {
                    let col = |t: usize, c: usize| (t * self.heads + hq) * hd + c;
                    for grp in &groups {
                        let mem = ref_members(&self.grid, grp);
                        let n = mem.len();
                        let p = self.ref_probs(x[0], b, hq, &mem);
                        let at = |i: usize, t: usize, c: usize| {
                            x[0].at(&[b, mem[i].unwrap_or(0), col(t, c)])
                        };
                        let go = |i: usize, c: usize| {
                            let g = dy.at(&[b, mem[i].unwrap_or(0), (o0 + hh) * hd + c]);
                            if mem[i].is_some() {
                                g
                            } else {
                                g / ng
                            }
                        };
                        let mut ds = vec![vec![0.0; n]; n];
                        for i in 0..n {
                            let dp: Vec<f64> = (0..n)
                                .map(|j| (0..hd).map(|c| go(i, c) * at(j, 2, c)).sum())
                                .collect();
                            let row: f64 = (0..n).map(|j| dp[j] * p[i][j]).sum();
                            for j in 0..n {
                                ds[i][j] = p[i][j] * (dp[j] - row);
                            }
                        }
                        for i in 0..n {
                            let tok = mem[i].unwrap_or(0);
                            for c in 0..hd {
                                let (mut dq, mut dk, mut dv) = (0.0, 0.0, 0.0);
                                for j in 0..n {
                                    dq += scale * ds[i][j] * at(j, 1, c);
                                    dk += scale * ds[j][i] * at(j, 0, c);
                                    dv += p[j][i] * go(j, c);
                                }
                                *dx.at_mut(&[b, tok, col(0, c)]) += dq;
                                *dx.at_mut(&[b, tok, col(1, c)]) += dk;
                                *dx.at_mut(&[b, tok, col(2, c)]) += dv;
                            }
                        }
                    }
                }
            }
            o0 += part.heads.len();
        }
        vec![Some(dx)]
    }

    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        let params = self.geometry(x[0].shape())?;
        let s = x[0].shape();
        let y = Tensor::empty(&[s[0], s[1], params[0].c_out as usize])?;
        self.saved.clear();
        for p in &params {
            let rows = (p.n_inst * p.lmax) as usize;
            let lse = Tensor::empty(&[rows])?;
            let shared = p.cls == Cls::Shared as u32;
            let cls_o = Tensor::empty(&[if shared {
                (p.n_inst * p.hd) as usize
            } else {
                1
            }])?;
            // qkv (B, N, 3·heads·HD) -> y (B, N, C_out) at this part's heads, cls_o (B, G, nh, HD),
            // lse (B, G, nh, L)
            gpu().dispatch(
                kernel!(grid_attention_forward),
                &row_constants(p),
                &[x[0].buffer(), y.buffer(), cls_o.buffer(), lse.buffer()],
                p,
                launch(p),
            )?;
            if p.cls != Cls::None as u32 {
                // cls_o (B, G, nh, HD) -> y[:, 0] at this part's heads: the mean over G, or 0
                let n = (p.b * p.nh * p.hd) as usize;
                gpu().dispatch(
                    kernel!(grid_attention_forward_cls),
                    &[],
                    &[cls_o.buffer(), y.buffer()],
                    p,
                    grid(n, 256),
                )?;
            }
            self.saved.push((lse, cls_o));
        }
        Ok(y)
    }

    // As reference_backward, with P recomputed from the saved lse (FlashAttention-2):
    //   Delta_i = rowsum(dO ∘ O);  dS_ij = P_ij·(dO_i·v_j − Delta_i);  dq_i = scale·Σ_j dS_ij k_j;
    //   dk_j = scale·Σ_i dS_ij q_i;  dv_j = Σ_i P_ij dO_i;  the shared cls token sums over groups.
    fn backward(&self, x: &[&Tensor], y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let params = self.geometry(x[0].shape())?;
        if self.saved.len() != params.len() {
            return Err(Error::Autograd(
                "grid_attention: backward before forward".into(),
            ));
        }
        // Slots no kernel writes (heads outside every part, an excluded cls token) stay 0.
        let covered: usize = self.parts.iter().map(|p| p.heads.len()).sum();
        let dqkv = if covered < self.heads || self.grid.cls == Cls::Excluded {
            Tensor::try_full(x[0].shape(), 0.0)?
        } else {
            Tensor::empty(x[0].shape())?
        };
        for (p, (lse, cls_o)) in params.iter().zip(&self.saved) {
            let rows = (p.n_inst * p.lmax) as usize;
            let delta = Tensor::empty(&[rows])?;
            // y, dy (B, N, C_out), cls_o -> delta (B, G, nh, L)
            gpu().dispatch(
                kernel!(grid_attention_backward_delta),
                &[],
                &[y.buffer(), dy.buffer(), cls_o.buffer(), delta.buffer()],
                p,
                grid(rows, 256),
            )?;
            let shared = p.cls == Cls::Shared as u32;
            let dcls = Tensor::empty(&[if shared {
                (p.n_inst * 3 * p.hd) as usize
            } else {
                1
            }])?;
            let bufs = [
                x[0].buffer(),
                dy.buffer(),
                lse.buffer(),
                delta.buffer(),
                dqkv.buffer(),
                dcls.buffer(),
            ];
            // -> dqkv (B, N, 3, heads, HD) at this part's heads for grid tokens;
            //    dcls (B, G, nh, 3, HD) for the shared cls token
            gpu().dispatch(
                kernel!(grid_attention_backward_dq),
                &row_constants(p),
                &bufs,
                p,
                launch(p),
            )?;
            gpu().dispatch(
                kernel!(grid_attention_backward_dkv),
                &row_constants(p),
                &bufs,
                p,
                launch(p),
            )?;
            if shared {
                // dcls (B, G, nh, 3, HD) -> dqkv[:, 0] (Σ over G)
                let n = (p.b * p.nh * 3 * p.hd) as usize;
                gpu().dispatch(
                    kernel!(grid_attention_backward_cls),
                    &[],
                    &[dcls.buffer(), dqkv.buffer()],
                    p,
                    grid(n, 256),
                )?;
            }
        }
        Ok(vec![Some(dqkv)])
    }
}

/// The unfused composition from basic engine ops, the readable definition of the op (and the
/// oracle of `tests/tests/ops/grid_attention.rs`): per part, the groups' tokens are gathered into
/// (groups, L, 3, nh, HD) batches (one batch per group length), attended with matmul, softmax
/// and matmul as `blocks::attention_unfused`, and gathered back into token order; the shared
/// cls token's per-group rows are averaged. Materialises every copy the fused op avoids.
pub fn grid_attention_unfused(
    qkv: &Tensor,
    heads: usize,
    scale: f32,
    grid: TokenGrid,
    parts: &[Part],
) -> Result<Tensor> {
    let op = GridAttention::new(heads, scale, grid, parts.to_vec());
    op.geometry(qkv.shape())?;
    let (bb, n_tok, c3) = (qkv.dim(0), qkv.dim(1), qkv.dim(2));
    let hd = c3 / 3 / heads;
    let rows = qkv.try_reshape(&[bb * n_tok, c3])?; // (B·N, 3·heads·HD)
    let mut outs = Vec::new();
    for part in parts {
        let (h0, nh) = (part.heads.start, part.heads.len());
        let groups = ref_groups(&grid, part.pattern);
        let mut by_len: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (g, grp) in groups.iter().enumerate() {
            by_len
                .entry(ref_members(&grid, grp).len())
                .or_default()
                .push(g);
        }
        let mut where_row: Vec<Option<u32>> = vec![None; bb * n_tok]; // row of each token's output
        let mut cls_rows = Vec::new(); // (B, G) rows of the shared cls token's outputs
        let mut pieces = Vec::new();
        let mut offset = 0usize;
        for (&len, gs) in &by_len {
            let mut idx = Vec::new();
            for b in 0..bb {
                for &g in gs {
                    for m in ref_members(&grid, &groups[g]) {
                        match m {
                            Some(t) => where_row[b * n_tok + t] = Some((offset + idx.len()) as u32),
                            None => cls_rows.push((b, g, offset + idx.len())),
                        }
                        idx.push((b * n_tok + m.unwrap_or(0)) as u32);
                    }
                }
            }
            let n = bb * gs.len();
            let x = rows
                .try_index_select(&Indices::from_slice(&idx)?)? // (n·L, 3·heads·HD)
                .try_reshape(&[n, len, 3, heads, hd])?
                .try_narrow(3, h0, nh)? // (n, L, 3, nh, HD)
                .try_permute(&[2, 0, 3, 1, 4])?; // (3, n, nh, L, HD)
            let (q, k, v) = (
                x.try_select(0, 0)?,
                x.try_select(0, 1)?,
                x.try_select(0, 2)?,
            );
            let a = q.try_matmul_nt(&k)?.try_mul_scalar(scale)?.try_softmax()?; // (n, nh, L, L)
            let o = a
                .try_matmul(&v)?
                .try_permute(&[0, 2, 1, 3])?
                .try_reshape(&[n * len, nh * hd])?;
            offset += n * len;
            pieces.push(o);
        }
        let zeros = Tensor::zeros(&[1, nh * hd]);
        let mut all: Vec<&Tensor> = pieces.iter().collect();
        all.push(&zeros);
        let all = Tensor::try_cat(&all, 0)?; // (R + 1, nh·HD), the last row 0
                                             // Tokens without an output (an excluded or shared cls token) read the zero row.
        let where_row: Vec<u32> = where_row
            .into_iter()
            .map(|r| r.unwrap_or(offset as u32))
            .collect();
        let mut y = all
            .try_index_select(&Indices::from_slice(&where_row)?)?
            .try_reshape(&[bb, n_tok, nh * hd])?;
        if grid.cls == Cls::Shared {
            cls_rows.sort();
            let idx: Vec<u32> = cls_rows.iter().map(|r| r.2 as u32).collect();
            let cls = all
                .try_index_select(&Indices::from_slice(&idx)?)?
                .try_reshape(&[bb, groups.len(), nh * hd])?
                .try_mean(&[1], true)?; // (B, 1, nh·HD)
            y = Tensor::try_cat(&[&cls, &y.try_narrow(1, 1, n_tok - 1)?], 1)?;
        }
        outs.push(y);
    }
    Tensor::try_cat(&outs.iter().collect::<Vec<_>>(), 2)
}

impl Tensor {
    /// Multi-head attention within the groups of `pattern` on a token grid, all heads: qkv
    /// (B, N, 3·heads·HD) laid out as `grid` says → (B, N, heads·HD). Fused, forward and backward.
    ///
    /// ```no_run
    /// use tubelet::Tensor;
    /// use tubelet::ops::grid_attention::{Cls, Pattern, TokenGrid};
    /// // TimeSformer divided space-time, 8 frames of 14×14, cls first, order (h w t):
    /// let grid = TokenGrid::space_major([8, 14, 14], Cls::Shared);
    /// let qkv = Tensor::randn(&[2, 1 + 8 * 196, 3 * 768], 0.0, 1.0, 7).unwrap();
    /// let y = qkv.grid_attention(12, 64f32.powf(-0.5), grid, Pattern::space()); // (2, 1569, 768)
    /// ```
    pub fn try_grid_attention(
        &self,
        heads: usize,
        scale: f32,
        grid: TokenGrid,
        pattern: Pattern,
    ) -> Result<Tensor> {
        self.try_grid_attention_parts(
            heads,
            scale,
            grid,
            &[Part {
                heads: 0..heads,
                pattern,
            }],
        )
    }

    pub fn grid_attention(
        &self,
        heads: usize,
        scale: f32,
        grid: TokenGrid,
        pattern: Pattern,
    ) -> Tensor {
        self.try_grid_attention(heads, scale, grid, pattern)
            .unwrap_or_else(|e| panic!("grid_attention{:?} with {heads} heads: {e}", self.shape()))
    }

    /// As [`Tensor::grid_attention`], with a pattern per head range (disjoint ranges; heads in
    /// none get no output): → (B, N, Σ range lengths·HD), the ranges' outputs in part order.
    /// ViViT Model 4: `&[Part { heads: 0..6, pattern: Pattern::time() },
    /// Part { heads: 6..12, pattern: Pattern::space() }]`.
    pub fn try_grid_attention_parts(
        &self,
        heads: usize,
        scale: f32,
        grid: TokenGrid,
        parts: &[Part],
    ) -> Result<Tensor> {
        apply(
            GridAttention::new(heads, scale, grid, parts.to_vec()),
            &[self],
        )
    }

    pub fn grid_attention_parts(
        &self,
        heads: usize,
        scale: f32,
        grid: TokenGrid,
        parts: &[Part],
    ) -> Tensor {
        self.try_grid_attention_parts(heads, scale, grid, parts)
            .unwrap_or_else(|e| {
                panic!(
                    "grid_attention{:?} with {heads} heads, parts {parts:?}: {e}",
                    self.shape()
                )
            })
    }
}

#[cfg(feature = "testing")]
pub fn test_spec() -> crate::testing::TestSpec<GridAttention> {
    use crate::testing::{Case, TestSpec, Tol};
    use proptest::prelude::*;
    fn span(code: (u8, usize)) -> Span {
        match code.0 {
            0 => Span::One,
            1 => Span::All,
            2 => Span::Block(code.1),
            _ => Span::Stride(code.1),
        }
    }
    #[allow(clippy::too_many_arguments)]
    fn case(
        b: usize,
        heads: usize,
        hd: usize,
        dims: [usize; 3],
        order: usize,
        cls: u8,
        pats: [[(u8, usize); 3]; 2],
        split: usize,
        k: f32,
        seed: u64,
    ) -> Case<GridAttention> {
        let mut rng = crate::Rng::new(seed);
        let cls = [Cls::None, Cls::Excluded, Cls::Shared][cls as usize];
        // Axis order of the tokens: one of the 6 permutations, slowest first.
        let perm = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ][order % 6];
        let mut strides = [0; 3];
        let mut s = 1;
        for &a in perm.iter().rev() {
            strides[a] = s;
            s *= dims[a];
        }
        let grid = TokenGrid { dims, strides, cls };
        let pattern = |i: usize| Pattern(pats[i].map(span));
        // split 0: one part, all heads; else two parts (ViViT M4), the second maybe short of
        // the last head (a head range selection).
        let parts = if split == 0 || heads < 2 {
            vec![Part {
                heads: 0..heads,
                pattern: pattern(0),
            }]
        } else {
            let m = 1 + split % (heads - 1);
            let end = if split.is_multiple_of(2) {
                heads
            } else {
                heads - (heads > m + 1) as usize
            };
            vec![
                Part {
                    heads: 0..m,
                    pattern: pattern(0),
                },
                Part {
                    heads: m..end,
                    pattern: pattern(1),
                },
            ]
        };
        let qkv = CpuTensor::uniform(&[b, grid.n_tokens(), 3 * heads * hd], -2.0, 2.0, &mut rng);
        let scale = k * (hd as f32).powf(-0.5);
        let label = format!("B {b} heads {heads} hd {hd} {grid:?} parts {parts:?} scale {scale}");
        Case::new(
            GridAttention::new(heads, scale, grid, parts),
            vec![qkv],
            label,
        )
    }
    let span_code = (0u8..4, 1usize..=4);
    let pats = [
        [span_code.clone(), span_code.clone(), span_code.clone()],
        [span_code.clone(), span_code.clone(), span_code],
    ]
    .prop_map(|[[a, b, c], [d, e, f]]| [[a, b, c], [d, e, f]]);
    // Grid sizes 1, primes and composites; a group of up to 7·7·5 + 1 = 246 tokens (several
    // 32-row workgroups and 64-row tiles).
    let dim = prop::sample::select(vec![1usize, 2, 3, 4, 5, 7]);
    let dims = [dim.clone(), dim.clone(), dim].prop_map(|[a, b, c]| [a, b, c]);
    // Head dims, a fixed bucket: the kernels compile per D4 = ⌈hd/4⌉ (an override constant,
    // seconds to minutes of llvmpipe JIT each). D4 1, 2, 4 and 8 are the ones the fused-vs-unfused
    // seed patterns (ops/grid_attention.rs) and the tiny presets (head dim 16) compile anyway:
    // every remainder hd mod 4, bk capped at MAX_BK, and bk = ⌊TILE/8⌋ = 60 below it.
    let hds = prop::sample::select(vec![1usize, 2, 3, 5, 7, 8, 16, 29, 32]);
    let small_dims = [1usize..=2, 1usize..=3, 1usize..=2].prop_map(|[a, b, c]| {
        if a * b * c > 6 {
            [a, b, 1]
        } else {
            [a, b, c]
        }
    });
    TestSpec {
        cases: (
            1usize..=2,
            1usize..=3,
            hds,
            dims,
            0usize..6,
            0u8..3,
            pats.clone(),
            0usize..4,
            0.5f32..2.0,
            any::<u64>(),
        )
            .prop_map(|(b, h, hd, d, o, c, p, s, k, seed)| case(b, h, hd, d, o, c, p, s, k, seed))
            .boxed(),
        small_cases: (
            1usize..=2,
            1usize..=2,
            small_dims,
            0usize..6,
            0u8..3,
            pats,
            0usize..4,
            0.5f32..2.0,
            any::<u64>(),
        )
            .prop_map(|(h, hd, d, o, c, p, s, k, seed)| case(1, h, hd, d, o, c, p, s, k, seed))
            .boxed(),
        // f32 dots of ≤ 32 terms, online-softmax sums over ≤ 246 members, |q|, |k|, |v| ≤ 2.
        forward_tol: Tol::new(
            2e-5,
            1e-4,
            "f32 dots of ≤ 32 terms, softmax sums of ≤ 246 keys",
        ),
        // dK, dV (and the shared cls token's sums over groups) add ≤ ~250 f32 terms of |·| ≲ 10.
        backward_tol: Tol::new(
            1e-4,
            5e-4,
            "f32 sums of ≤ ~250 rows, P recomputed from an f32 lse",
        ),
    }
}
