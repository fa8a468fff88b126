//! Joint (global) multi-head self-attention, fused, reading the packed qkv where it lies:
//!   q, k, v = qkv.reshape(B, N, 3, H, D)      (a ViT qkv Linear's output, unpermuted)
//!   O_h = softmax(scale · Q_h K_hᵀ) V_h        → y (B, N, H·D), ready for the proj Linear
//! FlashAttention-2 (Dao 2023, arXiv:2307.08691): a tiled online softmax keeps the N×N scores
//! out of global memory; the forward saves the row log-sum-exp (B, H, N) for the backward,
//! which recomputes P tile by tile (Algorithm 2) with Delta = rowsum(dO ∘ O).
//!
//! Long sequences are split (FlashDecoding style) along the looped-over side, keys in the
//! forward and dQ pass, queries in the dK/dV pass: each split writes a partial result and a
//! combine pass merges them in a fixed order (no float atomics). The split length keeps every
//! invocation's loops far under Mesa 22 llvmpipe's 65,535-iteration limit, whatever N is.
//!
//! Kernels: shaders/attention_forward.wgsl, attention_forward_combine.wgsl,
//! attention_backward_delta.wgsl, attention_backward_dq.wgsl, attention_backward_dkv.wgsl,
//! attention_backward_combine.wgsl.

use crate::autograd::apply;
use crate::error::{Error, Result};
use crate::gpu::{gpu, grid};
use crate::kernel;
use crate::ops::Op;
use crate::reference::CpuTensor;
use crate::tensor::Tensor;

/// Largest head dim: the kernels keep one row (DMAX4 vec4s) per invocation in registers.
pub const MAX_HEAD_DIM: usize = 128;
/// Rows per workgroup (the kernels' BQ override).
const BQ: u32 = 32;
/// vec4 slots per workgroup-memory tile (the kernels' TILE override): two tiles are 15 KiB.
const TILE: usize = 480;
/// Rows per tile, at most (attention_backward_dkv's MAX_BK).
const MAX_BK: usize = 64;
/// Loop iterations one invocation may spend on its split (llvmpipe stops at 65,535 in total).
const LOOP_BUDGET: usize = 30_000;

/// Fused joint attention over all tokens (see the module docs). `lse` is stashed by `forward`.
#[derive(Clone, Debug)]
pub struct Attention {
    pub heads: usize,
    pub scale: f32,
    /// Rows of the looped-over side per split; `None` picks the longest the loop budget allows.
    /// Tests set it small to exercise the split-and-combine path at small N.
    pub split: Option<usize>,
    lse: Option<Tensor>,
}

impl Attention {
    pub fn new(heads: usize, scale: f32) -> Attention {
        Attention {
            heads,
            scale,
            split: None,
            lse: None,
        }
    }

    /// (B, N, H, D) of a qkv shape, or an error naming the op and the shape.
    fn dims(&self, shape: &[usize]) -> Result<[usize; 4]> {
        if shape.len() != 3 {
            crate::bail!(
                Shape,
                "attention: qkv must be (B, N, 3·heads·head_dim), got shape {shape:?}"
            );
        }
        let (b, n, c) = (shape[0], shape[1], shape[2]);
        if self.heads == 0 || c == 0 || c % (3 * self.heads) != 0 {
            crate::bail!(
                Shape,
                "attention: last dim {c} of qkv {shape:?} is not a positive multiple \
                of 3·heads = 3·{}",
                self.heads
            );
        }
        let d = c / (3 * self.heads);
        if d > MAX_HEAD_DIM {
            crate::bail!(
                Shape,
                "attention: head dim {d} (qkv {shape:?}, {} heads) above the \
                supported {MAX_HEAD_DIM}",
                self.heads
            );
        }
        if !self.scale.is_finite() {
            crate::bail!(Config, "attention: scale {} is not finite", self.scale);
        }
        Ok([b, n, self.heads, d])
    }

    fn params(&self, [b, n, h, d]: [usize; 4]) -> Params {
        let d4 = d.div_ceil(4);
        let bk = (TILE / d4).min(MAX_BK);
        // Per looped-over row: 2·D4 + 1 trips in the widest kernel (dq, dkv), plus tile loads.
        let per_row = 4 * d4 + 2;
        let split = self
            .split
            .unwrap_or(LOOP_BUDGET / per_row)
            .max(1)
            .div_ceil(bk)
            * bk;
        Params {
            b: b as u32,
            n: n as u32,
            h: h as u32,
            d: d as u32,
            d4: d4 as u32,
            bk: bk as u32,
            split: split as u32,
            n_split: n.div_ceil(split).max(1) as u32,
            scale: self.scale,
            total: 0,
            _pad: [0; 2],
        }
    }
}

/// Shared by every attention kernel (same WGSL struct in each file).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    b: u32,
    n: u32,
    h: u32,
    d: u32,
    d4: u32,
    bk: u32,
    split: u32,
    n_split: u32,
    scale: f32,
    total: u32,
    _pad: [u32; 2],
}

const TILES: [(&str, f64); 2] = [("BQ", BQ as f64), ("TILE", TILE as f64)];

/// The kernels' override constants for `p`: the tiles and the head dim in vec4 slots (`D4`), so
/// every head dim gets its own pipeline with constant-trip row loops.
fn constants(p: &Params) -> [(&'static str, f64); 3] {
    [TILES[0], TILES[1], ("D4", p.d4 as f64)]
}

/// Row-wise softmax probabilities P[b, h] (N×N) of the reference, in f64.
fn probs(
    qkv: &CpuTensor,
    [_, n, hh, d]: [usize; 4],
    scale: f64,
    b: usize,
    h: usize,
) -> Vec<Vec<f64>> {
    let at = |tok: usize, t: usize, c: usize| qkv.at(&[b, tok, t * hh * d + h * d + c]);
    let mut p = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..n {
            let mut s = 0.0;
            for c in 0..d {
                s += at(i, 0, c) * at(j, 1, c);
            }
            p[i][j] = scale * s;
        }
        let mx = p[i].iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = p[i].iter().map(|s| (s - mx).exp()).sum();
        for j in 0..n {
            p[i][j] = (p[i][j] - mx).exp() / sum;
        }
    }
    p
}

impl Op for Attention {
    fn name(&self) -> &'static str {
        "attention"
    }

    // The plain unfused computation: S = scale·Q Kᵀ, P = softmax(S), O = P V, per (b, h).
    fn reference(&self, x: &[&CpuTensor]) -> CpuTensor {
        let [bb, n, hh, d] = self
            .dims(&x[0].shape)
            .expect("attention reference: bad shape");
        let mut y = CpuTensor::zeros(&[bb, n, hh * d]);
        for b in 0..bb {
            for h in 0..hh {
                let p = probs(x[0], [bb, n, hh, d], self.scale as f64, b, h);
                for i in 0..n {
                    for c in 0..d {
                        let mut o = 0.0;
                        for j in 0..n {
                            o += p[i][j] * x[0].at(&[b, j, 2 * hh * d + h * d + c]);
                        }
                        *y.at_mut(&[b, i, h * d + c]) = o;
                    }
                }
            }
        }
        y
    }

    // dV = Pᵀ dO;  dP = dO Vᵀ;  dS = P ∘ (dP − rowsum(dP ∘ P));  dQ = scale·dS K;  dK = scale·dSᵀ Q
    fn reference_backward(&self, x: &[&CpuTensor], dy: &CpuTensor) -> Vec<Option<CpuTensor>> {
        let [bb, n, hh, d] = self
            .dims(&x[0].shape)
            .expect("attention reference: bad shape");
        let scale = self.scale as f64;
        let at = |b: usize, tok: usize, t: usize, h: usize, c: usize| {
            x[0].at(&[b, tok, t * hh * d + h * d + c])
        };
        let mut dx = CpuTensor::zeros(&x[0].shape);
        for b in 0..bb {
            for h in 0..hh {
                let p = probs(x[0], [bb, n, hh, d], scale, b, h);
                let g = |i: usize, c: usize| dy.at(&[b, i, h * d + c]);
                let mut ds = vec![vec![0.0; n]; n];
                for i in 0..n {
                    let mut dp = vec![0.0; n];
                    for j in 0..n {
                        for c in 0..d {
                            dp[j] += g(i, c) * at(b, j, 2, h, c);
                        }
                    }
                    let row: f64 = (0..n).map(|j| dp[j] * p[i][j]).sum();
                    for j in 0..n {
                        ds[i][j] = p[i][j] * (dp[j] - row);
                    }
                }
                for i in 0..n {
                    for c in 0..d {
                        let (mut dq, mut dk, mut dv) = (0.0, 0.0, 0.0);
                        for j in 0..n {
                            dq += scale * ds[i][j] * at(b, j, 1, h, c);
                            dk += scale * ds[j][i] * at(b, j, 0, h, c);
                            dv += p[j][i] * g(j, c);
                        }
                        *dx.at_mut(&[b, i, h * d + c]) = dq;
                        *dx.at_mut(&[b, i, hh * d + h * d + c]) = dk;
                        *dx.at_mut(&[b, i, 2 * hh * d + h * d + c]) = dv;
                    }
                }
            }
        }
        vec![Some(dx)]
    }

    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        let dims @ [b, n, h, d] = self.dims(x[0].shape())?;
        let mut p = self.params(dims);
        let y = Tensor::empty(&[b, n, h * d])?;
        let lse = Tensor::empty(&[b, h, n])?;
        let tiles = [n.div_ceil(BQ as usize) as u32, p.n_split, (b * h) as u32];
        if p.n_split == 1 {
            // (B, N, 3·H·D) -> y (B, N, H·D), lse (B, H, N)
            gpu().dispatch(
                kernel!(attention_forward),
                &constants(&p),
                &[x[0].buffer(), y.buffer(), lse.buffer()],
                &p,
                tiles,
            )?;
        } else {
            let s = p.n_split as usize;
            let y_part = Tensor::empty(&[s, b, n, h * d])?;
            let lse_part = Tensor::empty(&[s, b, h, n])?;
            // (B, N, 3·H·D) -> y_part (S, B, N, H·D), lse_part (S, B, H, N)
            gpu().dispatch(
                kernel!(attention_forward),
                &constants(&p),
                &[x[0].buffer(), y_part.buffer(), lse_part.buffer()],
                &p,
                tiles,
            )?;
            p.total = (b * n * h * d) as u32;
            // (S, B, N, H·D), (S, B, H, N) -> (B, N, H·D), (B, H, N)
            gpu().dispatch(
                kernel!(attention_forward_combine),
                &[],
                &[y_part.buffer(), lse_part.buffer(), y.buffer(), lse.buffer()],
                &p,
                grid(y.numel(), 256),
            )?;
        }
        self.lse = Some(lse);
        Ok(y)
    }

    // FlashAttention-2 backward (formulas as in reference_backward), P recomputed from lse:
    //   Delta_i = Σ_c dO_ic·O_ic;  P_ij = exp(scale·q_i·k_j − lse_i);  dS_ij = P_ij·(dO_i·v_j − Delta_i)
    //   dq_i = scale·Σ_j dS_ij k_j;  dk_j = scale·Σ_i dS_ij q_i;  dv_j = Σ_i P_ij dO_i
    fn backward(&self, x: &[&Tensor], y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let dims @ [b, n, h, _] = self.dims(x[0].shape())?;
        let lse = self
            .lse
            .as_ref()
            .ok_or_else(|| Error::Autograd("attention: backward before forward".into()))?;
        let mut p = self.params(dims);
        let delta = Tensor::empty(&[b, h, n])?;
        // y, dy (B, N, H·D) -> delta (B, H, N)
        gpu().dispatch(
            kernel!(attention_backward_delta),
            &[],
            &[y.buffer(), dy.buffer(), delta.buffer()],
            &p,
            grid(b * h * n, 256),
        )?;
        let dx = Tensor::empty(x[0].shape())?;
        let s = p.n_split as usize;
        let part = if s == 1 {
            dx.clone()
        } else {
            Tensor::empty(&[s, b, n, x[0].shape()[2]])?
        };
        let tiles = [n.div_ceil(BQ as usize) as u32, p.n_split, (b * h) as u32];
        let ins = [
            x[0].buffer(),
            dy.buffer(),
            lse.buffer(),
            delta.buffer(),
            part.buffer(),
        ];
        // -> part (S, B, N, 3, H, D): q slot over key splits, k and v slots over query splits
        gpu().dispatch(
            kernel!(attention_backward_dq),
            &constants(&p),
            &ins,
            &p,
            tiles,
        )?;
        gpu().dispatch(
            kernel!(attention_backward_dkv),
            &constants(&p),
            &ins,
            &p,
            tiles,
        )?;
        if s > 1 {
            p.total = dx.numel() as u32;
            // (S, B, N, 3·H·D) -> (B, N, 3·H·D)
            gpu().dispatch(
                kernel!(attention_backward_combine),
                &[],
                &[part.buffer(), dx.buffer()],
                &p,
                grid(dx.numel(), 256),
            )?;
        }
        Ok(vec![Some(dx)])
    }
}

impl Tensor {
    /// Multi-head self-attention over all tokens of a packed qkv (B, N, 3·heads·D), laid out as
    /// a ViT qkv Linear produces it (`reshape(B, N, 3, heads, D)`); returns (B, N, heads·D).
    /// `scale` is usually D^-½. Fused (FlashAttention-2): the N×N scores never reach memory.
    ///
    /// ```no_run
    /// use tubelet::Tensor;
    /// let qkv = Tensor::randn(&[2, 197, 3 * 768], 0.0, 1.0, 7).unwrap(); // ViT-B, 12 heads
    /// let y = qkv.attention(12, 64f32.powf(-0.5));                       // (2, 197, 768)
    /// ```
    pub fn try_attention(&self, heads: usize, scale: f32) -> Result<Tensor> {
        apply(Attention::new(heads, scale), &[self])
    }

    pub fn attention(&self, heads: usize, scale: f32) -> Tensor {
        self.try_attention(heads, scale)
            .unwrap_or_else(|e| panic!("attention{:?} with {heads} heads: {e}", self.shape()))
    }
}

#[cfg(feature = "testing")]
pub fn test_spec() -> crate::testing::TestSpec<Attention> {
    use crate::testing::{Case, TestSpec, Tol};
    use proptest::prelude::*;
    fn case(
        b: usize,
        n: usize,
        h: usize,
        d: usize,
        split: Option<usize>,
        k: f32,
        seed: u64,
    ) -> Case<Attention> {
        let mut rng = crate::Rng::new(seed);
        let qkv = CpuTensor::uniform(&[b, n, 3 * h * d], -2.0, 2.0, &mut rng);
        let scale = k * (d as f32).powf(-0.5);
        let op = Attention {
            heads: h,
            scale,
            split,
            lse: None,
        };
        Case::new(
            op,
            vec![qkv],
            format!("B {b} N {n} H {h} D {d} scale {scale} split {split:?}"),
        )
    }
    // Head dims, a fixed bucket: the kernels are compiled per D4 = ⌈d/4⌉ (an override constant,
    // seconds to minutes of llvmpipe JIT each), so three D4s cover the code paths, chosen where
    // the suite compiles them anyway: 1 (d 1–3), 4 (d 13–16, every remainder d mod 4; the tiny
    // ViViT and TimeSformer presets' head dim 16; bk capped at MAX_BK) and 32 (d = 128, the
    // maximum: bk = ⌊TILE/D4⌋ = 15, as in ops/attention.rs's long-sequence test). Token counts,
    // batch, heads, scale and split stay random.
    let dims = prop::sample::select(vec![1usize, 2, 3, 13, 14, 15, 16, 128]);
    // Tokens: 1, primes, and non-multiples of the 32-row workgroup and of every tile height.
    let ns = prop_oneof![
        2 => Just(1usize),
        3 => 2usize..=9,
        4 => prop::sample::select(vec![13usize, 31, 32, 33, 49, 61, 64, 65, 97, 127, 197]),
    ];
    // None: the automatic split (one split at these N); Some(1): the shortest, so that the
    // split-and-combine passes run with several splits of one tile each.
    let split = prop_oneof![Just(None), Just(Some(1usize))];
    TestSpec {
        cases: (
            1usize..=3,
            ns,
            1usize..=3,
            dims,
            split.clone(),
            0.5f32..2.0,
            any::<u64>(),
        )
            .prop_map(|(b, n, h, d, s, k, seed)| case(b, n, h, d, s, k, seed))
            .boxed(),
        small_cases: (
            1usize..=2,
            1usize..=4,
            1usize..=2,
            1usize..=3,
            split,
            0.5f32..2.0,
            any::<u64>(),
        )
            .prop_map(|(b, n, h, d, s, k, seed)| case(b, n, h, d, s, k, seed))
            .boxed(),
        // f32 dot products of ≤ 128 terms and online-softmax sums over ≤ 197 keys, |v| ≤ 2.
        forward_tol: Tol::new(
            2e-5,
            1e-4,
            "f32 dots of ≤ 128 terms, softmax sums of ≤ 197 keys",
        ),
        // dK, dV sum ≤ 197 rows of dS·q and P·dO (|·| up to ~10); exp(s − lse) recomputed in f32.
        backward_tol: Tol::new(
            1e-4,
            5e-4,
            "f32 sums of ≤ 197 rows, P recomputed from an f32 lse",
        ),
    }
}
