//! Pooled multi-head attention of MViT v1 / v2 (Fan et al. 2021, arXiv:2104.11227, §3.1;
//! Li et al. 2022, arXiv:2112.01526, §4.1, eq. 4), fused: the query and key grids differ
//! (Q, K, V each pooled over the token grid by its own stride), and v2 adds the decomposed
//! relative-position term on the non-cls block, given per query and per key *coordinate*:
//!   q (B, h, Nq, d),  k, v (B, h, Nk, d),  rel (B, h, Nq − cls, kt + kh + kw)   (optional)
//!   s_ij = scale·q_i·k_j + [i, j ≥ cls]·(rel[i, t(j)] + rel[i, kt + y(j)] + rel[i, kt + kh + x(j)])
//!   y_i  = Σ_j softmax_j(s_ij)·v_j                                      → y (B, h, Nq, d)
//! where, with a cls token, row 0 of q and of k is the cls token and key j ≥ 1 is the grid
//! position j − 1 of the (kt, kh, kw) key grid in t-major order, (t(j), y(j), x(j)).
//! `rel` is MViTv2's q·Rt, q·Rh, q·Rw (linear in tokens); the model computes it from q and the
//! tables, so its gradient reaches both through composed ops. The (Nq, Nk) scores and their
//! (Nq, Nk) rel-pos expansion never reach memory: FlashAttention-2 (Dao 2023, arXiv:2307.08691),
//! forward with the row log-sum-exp saved, backward recomputing P from it, with
//! Delta = rowsum(dO ∘ O). The rel gradient d_rel[i, a] = Σ_{j on coordinate a} dS_ij is a
//! per-query reduction over keys, accumulated by the query's own invocation in the dQ pass
//! (no float atomics).
//!
//! Long sequences are split along the looped-over side (keys in the forward and dQ passes,
//! queries in the dK/dV pass) so every invocation's loops stay far under Mesa 22 llvmpipe's
//! 65,535-iteration limit; a combine pass merges the splits in a fixed order.
//!
//! Kernels: shaders/pooled_attention_forward.wgsl, pooled_attention_forward_combine.wgsl,
//! pooled_attention_backward_dq.wgsl, pooled_attention_backward_dkv.wgsl,
//! pooled_attention_backward_combine.wgsl. The unfused composition lives in the model
//! (`tubelet_models::mvit::pooling_attention::MultiScaleAttention::forward_unfused`).

use crate::autograd::apply;
use crate::error::{Error, Result};
use crate::gpu::{gpu, grid};
use crate::kernel;
use crate::ops::Op;
use crate::reference::CpuTensor;
use crate::tensor::Tensor;

/// Largest head dim: one row (DMAX4 vec4s) lives in registers per invocation.
pub const MAX_HEAD_DIM: usize = 128;
/// Rows per workgroup (the kernels' BQ override).
const BQ: u32 = 32;
/// vec4 slots per workgroup-memory tile (the kernels' TILE override): two tiles are 28 KiB.
const TILE: usize = 896;
/// Rows per tile at most (the kernels' MAX_BK), and the key sub-tile scored into registers (KB).
const MAX_BK: usize = 64;
const KB: usize = 8;
/// Loop iterations one invocation may spend on its split (llvmpipe stops at 65,535 in total).
const LOOP_BUDGET: usize = 40_000;

/// Fused pooled attention (see the module docs). `lse` is stashed by `forward`.
#[derive(Clone, Debug)]
pub struct PooledAttention {
    pub scale: f32,
    /// Row 0 of q and of k / v is a cls token (no rel-pos term on its row or column).
    pub cls: bool,
    /// The key grid (kt, kh, kw): Nk = cls + kt·kh·kw; the rel columns are t, then y, then x.
    pub kv_thw: [usize; 3],
    /// Rows of the looped-over side per split; `None` picks the longest the loop budget allows.
    /// Tests set it small to exercise the split-and-combine passes at small N.
    pub split: Option<usize>,
    lse: Option<Tensor>,
}

/// Shared by every pooled-attention kernel (the same WGSL struct in each file).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    bh: u32,
    nq: u32,
    nk: u32,
    d: u32,
    cls: u32,
    kt: u32,
    kh: u32,
    kw: u32,
    r: u32,
    bk: u32,
    split: u32,
    n_split: u32,
    scale: f32,
    total: u32,
    _pad: [u32; 2],
}

/// (B, h, Nq, Nk, d) of validated inputs.
#[derive(Clone, Copy, Debug)]
struct Dims {
    b: usize,
    h: usize,
    nq: usize,
    nk: usize,
    d: usize,
}

impl PooledAttention {
    pub fn new(scale: f32, cls: bool, kv_thw: [usize; 3]) -> PooledAttention {
        PooledAttention {
            scale,
            cls,
            kv_thw,
            split: None,
            lse: None,
        }
    }

    fn r(&self) -> usize {
        self.kv_thw.iter().sum()
    }

    /// Checks the inputs' shapes: q (B, h, Nq, d), k and v (B, h, Nk, d), rel (B, h, Nq − cls, R).
    fn dims(&self, shapes: &[&[usize]]) -> Result<Dims> {
        if shapes.len() != 3 && shapes.len() != 4 {
            crate::bail!(
                Shape,
                "pooled_attention: expected q, k, v and an optional rel, got {} inputs",
                shapes.len()
            );
        }
        let (q, k, v) = (shapes[0], shapes[1], shapes[2]);
        if q.len() != 4 || k.len() != 4 || v.len() != 4 {
            crate::bail!(Shape, "pooled_attention: q, k, v must be (B, heads, N, head_dim), got q {q:?} k {k:?} v {v:?}");
        }
        let (b, h, nq, d, nk) = (q[0], q[1], q[2], q[3], k[2]);
        if k != v || k[0] != b || k[1] != h || k[3] != d {
            crate::bail!(
                Shape,
                "pooled_attention: k {k:?} and v {v:?} must be (B, heads, Nk, head_dim) of q {q:?}"
            );
        }
        if b * h == 0 || d == 0 || d > MAX_HEAD_DIM {
            crate::bail!(
                Shape,
                "pooled_attention: q {q:?} needs B, heads ≥ 1 and head_dim in 1..={MAX_HEAD_DIM}"
            );
        }
        let c = usize::from(self.cls);
        let grid: usize = self.kv_thw.iter().product();
        if grid == 0 || nk != c + grid {
            crate::bail!(Shape, "pooled_attention: k {k:?} has {nk} tokens, expected {c} (cls) + {:?} (kv grid) = {}",
                self.kv_thw, c + grid);
        }
        if nq <= c {
            crate::bail!(
                Shape,
                "pooled_attention: q {q:?} has no query besides the cls token"
            );
        }
        if let Some(rel) = shapes.get(3) {
            let want = [b, h, nq - c, self.r()];
            if *rel != want {
                crate::bail!(Shape, "pooled_attention: rel {rel:?} must be (B, heads, Nq − cls, kt + kh + kw) = {want:?} \
                    for q {q:?} and kv grid {:?}", self.kv_thw);
            }
        }
        if !self.scale.is_finite() {
            crate::bail!(
                Config,
                "pooled_attention: scale {} is not finite",
                self.scale
            );
        }
        Ok(Dims { b, h, nq, nk, d })
    }

    fn params(&self, dm: Dims) -> Params {
        let d4 = dm.d.div_ceil(4);
        let bk = ((TILE / d4).min(MAX_BK) / KB * KB).max(KB);
        // Per looped-over row: 2·D4 + 4 trips in the widest kernel, plus its share of tile loads.
        let per_row = 2 * d4 + 4;
        let split = self
            .split
            .unwrap_or(LOOP_BUDGET / per_row)
            .max(1)
            .div_ceil(bk)
            * bk;
        let [kt, kh, kw] = self.kv_thw.map(|x| x as u32);
        Params {
            bh: (dm.b * dm.h) as u32,
            nq: dm.nq as u32,
            nk: dm.nk as u32,
            d: dm.d as u32,
            cls: u32::from(self.cls),
            kt,
            kh,
            kw,
            r: kt + kh + kw,
            bk: bk as u32,
            split: split as u32,
            n_split: 1,
            scale: self.scale,
            total: 0,
            _pad: [0; 2],
        }
    }

    /// rel columns (t, kt + y, kt + kh + x) of key j, or None for the cls key.
    fn key_axes(&self, j: usize) -> Option<[usize; 3]> {
        let c = usize::from(self.cls);
        let [kt, kh, kw] = self.kv_thw;
        (j >= c).then(|| {
            let g = j - c;
            [g / (kh * kw), kt + (g / kw) % kh, kt + kh + g % kw]
        })
    }

    /// Softmax probabilities P (Nq × Nk) of one (b, head) in f64.
    fn probs(&self, x: &[&CpuTensor], dm: Dims, b: usize, h: usize) -> Vec<Vec<f64>> {
        let c = usize::from(self.cls);
        let mut p = vec![vec![0.0; dm.nk]; dm.nq];
        for (i, row) in p.iter_mut().enumerate() {
            for (j, s) in row.iter_mut().enumerate() {
                let mut dot = 0.0;
                for e in 0..dm.d {
                    dot += x[0].at(&[b, h, i, e]) * x[1].at(&[b, h, j, e]);
                }
                *s = self.scale as f64 * dot;
                if let (Some(rel), Some(axes), true) = (x.get(3), self.key_axes(j), i >= c) {
                    *s += axes.iter().map(|&a| rel.at(&[b, h, i - c, a])).sum::<f64>();
                }
            }
            let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = row.iter().map(|s| (s - mx).exp()).sum();
            row.iter_mut().for_each(|s| *s = (*s - mx).exp() / sum);
        }
        p
    }
}

/// The kernels' override constants: tiles, the head dim in vec4s (constant loop bounds, as in
/// attention_forward.wgsl), and whether a rel input is bound (dead code otherwise).
fn constants(p: &Params, rel: bool) -> [(&'static str, f64); 4] {
    [
        ("BQ", BQ as f64),
        ("TILE", TILE as f64),
        ("D4", p.d.div_ceil(4) as f64),
        ("REL", f64::from(u8::from(rel))),
    ]
}

impl Op for PooledAttention {
    fn name(&self) -> &'static str {
        "pooled_attention"
    }

    // The plain unfused computation: S = scale·Q Kᵀ (+ the expanded rel term), P = softmax(S), Y = P V.
    fn reference(&self, x: &[&CpuTensor]) -> CpuTensor {
        let shapes: Vec<&[usize]> = x.iter().map(|t| t.shape.as_slice()).collect();
        let dm = self
            .dims(&shapes)
            .expect("pooled_attention reference: bad shapes");
        let mut y = CpuTensor::zeros(&[dm.b, dm.h, dm.nq, dm.d]);
        for b in 0..dm.b {
            for h in 0..dm.h {
                let p = self.probs(x, dm, b, h);
                for i in 0..dm.nq {
                    for e in 0..dm.d {
                        *y.at_mut(&[b, h, i, e]) =
                            (0..dm.nk).map(|j| p[i][j] * x[2].at(&[b, h, j, e])).sum();
                    }
                }
            }
        }
        y
    }

    // dV = Pᵀ dO;  dP = dO Vᵀ;  dS = P ∘ (dP − rowsum(dP ∘ P));  dQ = scale·dS K;  dK = scale·dSᵀ Q;
    // d_rel[i, a] = Σ_{j: a ∈ axes(j)} dS_ij  (i, j ≥ cls)
    fn reference_backward(&self, x: &[&CpuTensor], dy: &CpuTensor) -> Vec<Option<CpuTensor>> {
        let shapes: Vec<&[usize]> = x.iter().map(|t| t.shape.as_slice()).collect();
        let dm = self
            .dims(&shapes)
            .expect("pooled_attention reference: bad shapes");
        let (scale, c) = (self.scale as f64, usize::from(self.cls));
        let mut dq = CpuTensor::zeros(&x[0].shape);
        let mut dk = CpuTensor::zeros(&x[1].shape);
        let mut dv = CpuTensor::zeros(&x[2].shape);
        let mut drel = x.get(3).map(|r| CpuTensor::zeros(&r.shape));
        for b in 0..dm.b {
            for h in 0..dm.h {
                let p = self.probs(x, dm, b, h);
                for i in 0..dm.nq {
                    let dp: Vec<f64> = (0..dm.nk)
                        .map(|j| {
                            (0..dm.d)
                                .map(|e| dy.at(&[b, h, i, e]) * x[2].at(&[b, h, j, e]))
                                .sum()
                        })
                        .collect();
                    let row: f64 = (0..dm.nk).map(|j| dp[j] * p[i][j]).sum();
                    for j in 0..dm.nk {
                        let ds = p[i][j] * (dp[j] - row);
                        for e in 0..dm.d {
                            *dq.at_mut(&[b, h, i, e]) += scale * ds * x[1].at(&[b, h, j, e]);
                            *dk.at_mut(&[b, h, j, e]) += scale * ds * x[0].at(&[b, h, i, e]);
                            *dv.at_mut(&[b, h, j, e]) += p[i][j] * dy.at(&[b, h, i, e]);
                        }
                        if let (Some(dr), Some(axes), true) =
                            (drel.as_mut(), self.key_axes(j), i >= c)
                        {
                            for a in axes {
                                *dr.at_mut(&[b, h, i - c, a]) += ds;
                            }
                        }
                    }
                }
            }
        }
        let mut out = vec![Some(dq), Some(dk), Some(dv)];
        if let Some(dr) = drel {
            out.push(Some(dr));
        }
        out
    }

    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        let shapes: Vec<&[usize]> = x.iter().map(|t| t.shape()).collect();
        let dm = self.dims(&shapes)?;
        let rel = x.len() == 4;
        let mut p = self.params(dm);
        let (bh, nq, d) = (dm.b * dm.h, dm.nq, dm.d);
        let s = dm.nk.div_ceil(p.split as usize);
        p.n_split = s as u32;
        let y = Tensor::empty(&[dm.b, dm.h, nq, d])?;
        let lse = Tensor::empty(&[dm.b, dm.h, nq])?;
        let (y_part, lse_part) = if s == 1 {
            (y.clone(), lse.clone())
        } else {
            (
                Tensor::empty(&[s, bh, nq, d])?,
                Tensor::empty(&[s, bh, nq])?,
            )
        };
        let rel_buf = if rel { x[3].buffer() } else { x[0].buffer() }; // unread when REL is off
        let tiles = [nq.div_ceil(BQ as usize) as u32, p.n_split, bh as u32];
        // q, k, v, rel -> y_part (S, B·h, Nq, d), lse_part (S, B·h, Nq)
        let bufs = [
            x[0].buffer(),
            x[1].buffer(),
            x[2].buffer(),
            rel_buf,
            y_part.buffer(),
            lse_part.buffer(),
        ];
        gpu().dispatch(
            kernel!(pooled_attention_forward),
            &constants(&p, rel),
            &bufs,
            &p,
            tiles,
        )?;
        if s > 1 {
            p.total = (bh * nq * d) as u32;
            // (S, B·h, Nq, d), (S, B·h, Nq) -> y (B, h, Nq, d), lse (B, h, Nq)
            let bufs = [y_part.buffer(), lse_part.buffer(), y.buffer(), lse.buffer()];
            gpu().dispatch(
                kernel!(pooled_attention_forward_combine),
                &[],
                &bufs,
                &p,
                grid(y.numel(), 256),
            )?;
        }
        self.lse = Some(lse);
        Ok(y)
    }

    // FlashAttention-2 backward (formulas as in reference_backward), P recomputed from lse:
    //   Delta_i = Σ_e dO_ie·O_ie;  P_ij = exp(s_ij − lse_i);  dS_ij = P_ij·(dO_i·v_j − Delta_i)
    //   dq_i = scale·Σ_j dS_ij k_j, d_rel[i, ·] (dQ pass, per query over keys; it writes Delta);
    //   dk_j = scale·Σ_i dS_ij q_i,  dv_j = Σ_i P_ij dO_i (dK/dV pass, per key over queries).
    fn backward(&self, x: &[&Tensor], y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let shapes: Vec<&[usize]> = x.iter().map(|t| t.shape()).collect();
        let dm = self.dims(&shapes)?;
        let lse = self
            .lse
            .as_ref()
            .ok_or_else(|| Error::Autograd("pooled_attention: backward before forward".into()))?;
        let rel = x.len() == 4;
        let mut p = self.params(dm);
        let (bh, nq, nk, d, r) = (dm.b * dm.h, dm.nq, dm.nk, dm.d, p.r as usize);
        let nr = nq - usize::from(self.cls);
        let consts = constants(&p, rel);
        let part = |s: usize, t: &Tensor, shape: &[usize]| -> Result<Tensor> {
            if s == 1 {
                Ok(t.clone())
            } else {
                Tensor::empty(&[&[s][..], shape].concat())
            }
        };
        let sum_splits = |p: &mut Params, s: usize, part: &Tensor, out: &Tensor| -> Result<()> {
            if s > 1 {
                p.n_split = s as u32;
                p.total = out.numel() as u32;
                // (S, ·) -> (·), a fixed-order sum
                gpu().dispatch(
                    kernel!(pooled_attention_backward_combine),
                    &[],
                    &[part.buffer(), out.buffer()],
                    &*p,
                    grid(out.numel(), 256),
                )?;
            }
            Ok(())
        };
        // dQ pass over key splits.
        let sk = nk.div_ceil(p.split as usize);
        p.n_split = sk as u32;
        let dq = Tensor::empty(x[0].shape())?;
        let delta = Tensor::empty(&[bh, nq])?;
        let drel = if rel {
            Some(Tensor::empty(x[3].shape())?)
        } else {
            None
        };
        let dq_part = part(sk, &dq, &[bh, nq, d])?;
        let drel_part = match &drel {
            Some(t) => part(sk, t, &[bh, nr, r])?,
            None => delta.clone(), // unwritten when REL is off
        };
        let rel_buf = if rel { x[3].buffer() } else { x[0].buffer() };
        let bufs = [
            x[0].buffer(),
            x[1].buffer(),
            x[2].buffer(),
            rel_buf,
            y.buffer(),
            dy.buffer(),
            lse.buffer(),
            dq_part.buffer(),
            drel_part.buffer(),
            delta.buffer(),
        ];
        // -> dq_part (S, B·h, Nq, d), drel_part (S, B·h, Nq − cls, R), delta (B·h, Nq)
        gpu().dispatch(
            kernel!(pooled_attention_backward_dq),
            &consts,
            &bufs,
            &p,
            [nq.div_ceil(BQ as usize) as u32, sk as u32, bh as u32],
        )?;
        sum_splits(&mut p, sk, &dq_part, &dq)?;
        if let Some(t) = &drel {
            sum_splits(&mut p, sk, &drel_part, t)?;
        }
        // dK / dV pass over query splits.
        let sq = nq.div_ceil(p.split as usize);
        p.n_split = sq as u32;
        let dk = Tensor::empty(x[1].shape())?;
        let dv = Tensor::empty(x[2].shape())?;
        let (dk_part, dv_part) = (part(sq, &dk, &[bh, nk, d])?, part(sq, &dv, &[bh, nk, d])?);
        let bufs = [
            x[0].buffer(),
            x[1].buffer(),
            x[2].buffer(),
            rel_buf,
            dy.buffer(),
            lse.buffer(),
            delta.buffer(),
            dk_part.buffer(),
            dv_part.buffer(),
        ];
        // -> dk_part, dv_part (S, B·h, Nk, d)
        gpu().dispatch(
            kernel!(pooled_attention_backward_dkv),
            &consts,
            &bufs,
            &p,
            [nk.div_ceil(BQ as usize) as u32, sq as u32, bh as u32],
        )?;
        sum_splits(&mut p, sq, &dk_part, &dk)?;
        sum_splits(&mut p, sq, &dv_part, &dv)?;
        let mut out = vec![Some(dq), Some(dk), Some(dv)];
        if let Some(t) = drel {
            out.push(Some(t));
        }
        Ok(out)
    }
}

impl Tensor {
    /// MViT pooled attention: softmax(scale·q·kᵀ [+ the decomposed rel-pos term]) v for q
    /// (B, heads, Nq, d) and k, v (B, heads, Nk, d) on a key grid `kv_thw` (Nk = cls + kt·kh·kw),
    /// with `rel` (B, heads, Nq − cls, kt + kh + kw) the per-query terms q·Rt, q·Rh, q·Rw of
    /// MViTv2 eq. 4 (see the module docs); returns (B, heads, Nq, d). Fused: the Nq × Nk scores
    /// never reach memory, forward or backward.
    ///
    /// ```no_run
    /// use tubelet::Tensor;
    /// // MViT-B block 1: 2 heads of 96, q on 8×28×28 (+cls), k and v on 8×14×14 (+cls).
    /// let q = Tensor::randn(&[1, 2, 1 + 8 * 28 * 28, 96], 0.0, 1.0, 1).unwrap();
    /// let k = Tensor::randn(&[1, 2, 1 + 8 * 14 * 14, 96], 0.0, 1.0, 2).unwrap();
    /// let v = Tensor::randn(&[1, 2, 1 + 8 * 14 * 14, 96], 0.0, 1.0, 3).unwrap();
    /// let y = q.pooled_attention(&k, &v, None, 96f32.powf(-0.5), true, [8, 14, 14]);
    /// ```
    pub fn try_pooled_attention(
        &self,
        k: &Tensor,
        v: &Tensor,
        rel: Option<&Tensor>,
        scale: f32,
        cls: bool,
        kv_thw: [usize; 3],
    ) -> Result<Tensor> {
        let op = PooledAttention::new(scale, cls, kv_thw);
        match rel {
            Some(r) => apply(op, &[self, k, v, r]),
            None => apply(op, &[self, k, v]),
        }
    }

    pub fn pooled_attention(
        &self,
        k: &Tensor,
        v: &Tensor,
        rel: Option<&Tensor>,
        scale: f32,
        cls: bool,
        kv_thw: [usize; 3],
    ) -> Tensor {
        self.try_pooled_attention(k, v, rel, scale, cls, kv_thw)
            .unwrap_or_else(|e| {
                panic!(
                    "pooled_attention(q {:?}, k {:?}, v {:?}, rel {:?}, kv grid {kv_thw:?}): {e}",
                    self.shape(),
                    k.shape(),
                    v.shape(),
                    rel.map(|r| r.shape().to_vec())
                )
            })
    }
}

/// [`Tensor::pooled_attention`] composed from basic ops, the (B, heads, Nq, Nk) scores and the
/// expanded rel-pos term materialised: the bench's baseline (and a readable definition).
pub fn pooled_attention_unfused(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    rel: Option<&Tensor>,
    scale: f32,
    cls: bool,
    kv_thw: [usize; 3],
) -> Result<Tensor> {
    let mut shapes: Vec<&[usize]> = vec![q.shape(), k.shape(), v.shape()];
    shapes.extend(rel.map(|r| r.shape()));
    let dm = PooledAttention::new(scale, cls, kv_thw).dims(&shapes)?;
    let mut s = q.try_matmul_nt(k)?.try_mul_scalar(scale)?; // (B, h, Nq, Nk)
    if let Some(r) = rel {
        let ([kt, kh, kw], c) = (kv_thw, usize::from(cls));
        let (b, h, mq) = (dm.b, dm.h, dm.nq - c);
        let rt = r.try_narrow(3, 0, kt)?.try_reshape(&[b, h, mq, kt, 1, 1])?;
        let rh = r
            .try_narrow(3, kt, kh)?
            .try_reshape(&[b, h, mq, 1, kh, 1])?;
        let rw = r
            .try_narrow(3, kt + kh, kw)?
            .try_reshape(&[b, h, mq, 1, 1, kw])?;
        let mut e = rt
            .try_add(&rh)?
            .try_add(&rw)?
            .try_reshape(&[b, h, mq, kt * kh * kw])?; // (B, h, Nq', Nk')
        if cls {
            e = Tensor::try_cat(&[&Tensor::try_full(&[b, h, mq, 1], 0.0)?, &e], 3)?; // zero cls column
            e = Tensor::try_cat(&[&Tensor::try_full(&[b, h, 1, dm.nk], 0.0)?, &e], 2)?;
            // zero cls row
        }
        s = s.try_add(&e)?;
    }
    s.try_softmax()?.try_matmul(v) // (B, h, Nq, d)
}

#[cfg(feature = "testing")]
pub fn test_spec() -> crate::testing::TestSpec<PooledAttention> {
    use crate::testing::{Case, TestSpec, Tol};
    use proptest::prelude::*;
    #[allow(clippy::too_many_arguments)]
    fn case(
        b: usize,
        h: usize,
        d: usize,
        nq_grid: usize,
        kv: [usize; 3],
        cls: bool,
        rel: bool,
        split: Option<usize>,
        seed: u64,
    ) -> Case<PooledAttention> {
        let mut rng = crate::Rng::new(seed);
        let c = usize::from(cls);
        let (nq, nk) = (c + nq_grid, c + kv.iter().product::<usize>());
        let mut x = vec![
            CpuTensor::uniform(&[b, h, nq, d], -2.0, 2.0, &mut rng),
            CpuTensor::uniform(&[b, h, nk, d], -2.0, 2.0, &mut rng),
            CpuTensor::uniform(&[b, h, nk, d], -2.0, 2.0, &mut rng),
        ];
        if rel {
            x.push(CpuTensor::uniform(
                &[b, h, nq_grid, kv.iter().sum()],
                -1.0,
                1.0,
                &mut rng,
            ));
        }
        let scale = (d as f32).powf(-0.5);
        let op = PooledAttention {
            scale,
            cls,
            kv_thw: kv,
            split,
            lse: None,
        };
        Case::new(
            op,
            x,
            format!("B {b} heads {h} d {d} Nq {nq} kv {kv:?} cls {cls} rel {rel} split {split:?}"),
        )
    }
    // Head dims, a fixed bucket: each D4 = ⌈d/4⌉ (an override constant, with REL) compiles its own
    // pipelines, seconds to minutes apiece on lavapipe. D4 1 (d 1–3), 8 (d 29–32, every
    // remainder d mod 4; the tiny MViT presets' head dim 32, bk capped at MAX_BK) and 24 (MViT's
    // 96: bk = ⌊TILE/D4⌋ rounded down to KB, 32).
    let dims = prop::sample::select(vec![1usize, 2, 3, 29, 30, 31, 32, 96]);
    // Grid axes: 1, primes, and sizes whose products (≤ 147 keys) cross the 32-row workgroup,
    // the 8-key sub-tiles and the tiles (24 to 64 rows).
    let axis = prop::sample::select(vec![1usize, 1, 2, 3, 5, 7]);
    let t_axis = prop::sample::select(vec![1usize, 2, 3]);
    let nq = prop_oneof![
        Just(1usize),
        2usize..=9,
        prop::sample::select(vec![13usize, 31, 33, 64, 97, 127])
    ];
    // None: the automatic split (one split at these N); Some(1): one tile a split, so the
    // combine passes run with several splits.
    let split = prop_oneof![Just(None), Just(Some(1usize))];
    TestSpec {
        cases: (
            1usize..=2,
            1usize..=3,
            dims,
            nq,
            [t_axis, axis.clone(), axis],
            any::<bool>(),
            any::<bool>(),
            split.clone(),
            any::<u64>(),
        )
            .prop_map(|(b, h, d, nq, kv, cls, rel, s, seed)| {
                case(b, h, d, nq, kv, cls, rel, s, seed)
            })
            .boxed(),
        small_cases: (
            1usize..=2,
            1usize..=3,
            1usize..=4,
            [1usize..=2, 1usize..=2, 1usize..=3],
            any::<bool>(),
            any::<bool>(),
            split,
            any::<u64>(),
        )
            .prop_map(|(h, d, nq, kv, cls, rel, s, seed)| case(1, h, d, nq, kv, cls, rel, s, seed))
            .boxed(),
        // f32 dots of ≤ 128 terms, online-softmax sums of ≤ 148 keys, |q|, |k|, |v| ≤ 2.
        forward_tol: Tol::new(
            2e-5,
            1e-4,
            "f32 dots of ≤ 128 terms, softmax sums of ≤ 148 keys",
        ),
        // dK, dV, d_rel sum ≤ 128 rows / 148 keys of dS·q, P·dO; exp(s − lse) recomputed in f32.
        backward_tol: Tol::new(
            1e-4,
            5e-4,
            "f32 sums of ≤ 148 rows, P recomputed from an f32 lse",
        ),
    }
}
