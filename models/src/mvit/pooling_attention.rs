//! Multi-head pooling attention (MViT §3.1, Fig. 3; MViTv2 §4.1, Fig. 2): q, k and v are each
//! pooled over the (T, H, W) token grid before attending, so the query grid sets the output
//! resolution and the key/value grids set the cost.
//!
//!   q, k, v = qkv(x)                              x (B, N, dim), N = 1 + T·H·W (cls first)
//!   q̂ = LN(P_q(q)),  k̂ = LN(P_k(k)),  v̂ = LN(P_v(v))   (`attention_pool`: cls split off, pooled, re-attached)
//!   A = softmax(scale·q̂·k̂ᵀ [+ R_h + R_w + R_t on the non-cls block, v2])
//!   y = proj(A·v̂ [+ q̂ on the non-cls rows, v2 residual pooling])
//!
//! Official code: facebookresearch/SlowFast `slowfast/models/attention.py` (`attention_pool`,
//! `cal_rel_pos_spatial`, `cal_rel_pos_temporal`, `MultiScaleAttention`), read at 287ec00;
//! torchvision `models/video/mvit.py` is the same math.
//!
//! The attention itself is the engine's fused `pooled_attention` kernel (Nq ≠ Nk, cls row and
//! column, the v2 rel-pos term given per query and key coordinate): the Nq × Nk scores and the
//! (Nq, Nk) rel-pos expansion never reach memory. `RelPos::forward` computes only the small
//! (B, heads, Nq − 1, kt + kh + kw) term with composed ops, so its gradient reaches q and the
//! tables through them. `MultiScaleAttention::forward_unfused` keeps the composed path
//! (matmul, add the expanded rel-pos term, softmax, matmul) as the test oracle and bench baseline.

use tubelet::nn::{Init, LayerNorm, Linear};
use tubelet::{Error, Indices, Result, Tensor};

/// How q, k and v are pooled (SF `MVIT.MODE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMode {
    /// Depthwise Conv3d over head_dim channels, shared by all heads, no bias, then LayerNorm
    /// (`mode="conv"`, every released MViT).
    Conv,
    /// AvgPool3d, no norm (`mode="avg"`).
    Avg,
    /// MaxPool3d, no norm (`mode="max"`).
    Max,
}

/// A pooling window over the (T, H, W) grid; padding is kernel // 2 as in SF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
}

impl Pool {
    pub fn padding(&self) -> [usize; 3] {
        self.kernel.map(|k| k / 2)
    }

    /// The pooled grid: (n + 2·(k//2) − k)//s + 1 per axis, or an error if an axis vanishes.
    pub fn out(&self, thw: [usize; 3]) -> Result<[usize; 3]> {
        let mut o = [0; 3];
        for d in 0..3 {
            let (n, k, s) = (thw[d], self.kernel[d], self.stride[d]);
            let p = k / 2;
            if s == 0 || n + 2 * p < k {
                return Err(Error::Config(format!(
                    "MViT pooling: kernel {:?} stride {:?} does not fit the grid {thw:?}",
                    self.kernel, self.stride
                )));
            }
            o[d] = (n + 2 * p - k) / s + 1;
        }
        Ok(o)
    }

    /// SF skips a pooling whose kernel and stride are both all ones.
    pub fn is_identity(&self) -> bool {
        self.kernel == [1, 1, 1] && self.stride == [1, 1, 1]
    }
}

/// Everything that shapes one MultiScaleAttention (one row of the stage schedule).
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionSpec {
    pub dim: usize,
    /// Attention width (v1: dim; v2: the block's dim_out, `DIM_MUL_IN_ATT`).
    pub dim_out: usize,
    pub heads: usize,
    /// The input token grid (without the cls token).
    pub thw: [usize; 3],
    pub pool_q: Option<Pool>,
    pub pool_kv: Option<Pool>,
    pub mode: PoolMode,
    pub qkv_bias: bool,
    /// v2 decomposed relative positions: table lengths (h and w, t), from the block's nominal
    /// input size (SF sizes them from `input_size`, which floors `size // stride`).
    pub rel_pos: Option<[usize; 2]>,
    /// v2 residual pooling: add the pooled q to the non-cls rows of the output.
    pub residual_pooling: bool,
}

impl AttentionSpec {
    pub fn head_dim(&self) -> usize {
        self.dim_out / self.heads
    }

    /// Query and key/value grids.
    pub fn grids(&self) -> Result<([usize; 3], [usize; 3])> {
        let g = |p: &Option<Pool>| p.map_or(Ok(self.thw), |p| p.out(self.thw));
        Ok((g(&self.pool_q)?, g(&self.pool_kv)?))
    }
}

/// `attention_pool`: x (B, G, 1 + T·H·W, C) with the cls token first -> (B, G, 1 + T'·H'·W', C).
/// The cls row is split off, the rest is pooled as B·G images of C channels over (T, H, W) by
/// `pool` ((B·G, C, T, H, W) -> (B·G, C, T', H', W')), then the cls row is put back in front.
pub fn attention_pool(
    x: &Tensor,
    thw: [usize; 3],
    pool: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let (b, g, n, c) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3));
    let [t, h, w] = thw;
    if n != 1 + t * h * w {
        return Err(Error::Shape(format!(
            "attention_pool: {n} tokens, expected 1 + {t}·{h}·{w} (x {:?})",
            x.shape()
        )));
    }
    let cls = x.try_narrow(2, 0, 1)?; // (B, G, 1, C)
    let grid = x
        .try_narrow(2, 1, n - 1)? // (B, G, T·H·W, C)
        .try_reshape(&[b * g, t, h, w, c])?
        .try_permute(&[0, 4, 1, 2, 3])?; // (B·G, C, T, H, W)
    let y = pool(&grid)?; // (B·G, C, T', H', W')
    let l = y.dim(2) * y.dim(3) * y.dim(4);
    let y = y
        .try_reshape(&[b * g, c, l])?
        .try_permute(&[0, 2, 1])?
        .try_reshape(&[b, g, l, c])?; // (B, G, L', C)
    Tensor::try_cat(&[&cls, &y], 2) // (B, G, 1 + L', C)
}

/// One pooling of q, k or v: `pool_{q,k,v}` and, in conv mode, `norm_{q,k,v}`.
#[derive(Clone)]
pub struct AttentionPool {
    pub pool: Pool,
    pub mode: PoolMode,
    /// Conv mode: depthwise weight (hd, 1, kT, kH, kW), shared by the heads.
    pub weight: Option<Tensor>,
    /// Conv mode: LayerNorm(hd), applied after the cls row is re-attached (cls included).
    pub norm: Option<LayerNorm>,
}

impl AttentionPool {
    fn new(init: &mut Init, pool: Pool, mode: PoolMode, hd: usize) -> Result<AttentionPool> {
        let (weight, norm) = match mode {
            PoolMode::Conv => {
                let [kt, kh, kw] = pool.kernel;
                (
                    Some(init.trunc_normal(&[hd, 1, kt, kh, kw], 0.02)?),
                    Some(super::layer_norm(init, hd)?),
                )
            }
            PoolMode::Avg | PoolMode::Max => (None, None),
        };
        Ok(AttentionPool {
            pool,
            mode,
            weight,
            norm,
        })
    }

    /// x (B, heads, 1 + T·H·W, hd) -> (B, heads, 1 + T'·H'·W', hd).
    pub fn forward(&self, x: &Tensor, thw: [usize; 3]) -> Result<Tensor> {
        let (k, s, p) = (self.pool.kernel, self.pool.stride, self.pool.padding());
        let y = attention_pool(x, thw, |g| match (self.mode, &self.weight) {
            (PoolMode::Conv, Some(w)) => g.try_depthwise_conv3d(w, None, s, p),
            (PoolMode::Avg, _) => g.try_avg_pool3d(k, s, p),
            (PoolMode::Max, _) => g.try_max_pool3d(k, s, p),
            (PoolMode::Conv, None) => Err(Error::Config(
                "MViT attention pool: conv mode without a weight".into(),
            )),
        })?;
        match &self.norm {
            Some(n) => n.forward(&y),
            None => Ok(y),
        }
    }
}

/// SF `dist` for one axis of the decomposed relative positions: an index into the table for
/// every (query, key) pair, (q·k) row-major.
///   dist[i, j] = i·max(k/q, 1) − j·max(q/k, 1) + (k − 1)·max(q/k, 1), truncated to an integer.
/// NOTE: torch computes this in float32 (an int arange times a Python float); so do we, in the
/// same order, so that non-integer ratios truncate alike.
pub fn rel_pos_index(q: usize, k: usize) -> Vec<u32> {
    let q_ratio = (k as f64 / q as f64).max(1.0) as f32;
    let k_ratio = (q as f64 / k as f64).max(1.0) as f32;
    let offset = ((k - 1) as f64 * (q as f64 / k as f64).max(1.0)) as f32;
    let mut idx = Vec::with_capacity(q * k);
    for i in 0..q {
        for j in 0..k {
            let d = (i as f32 * q_ratio - j as f32 * k_ratio) + offset;
            idx.push(d as u32);
        }
    }
    idx
}

/// SF `get_rel_pos`: the (len, ori) matrix of `F.interpolate(mode="linear",
/// align_corners=False)` resizing a table of `ori` rows to `len` rows, or None when equal.
pub fn rel_pos_resize(ori: usize, len: usize) -> Option<Vec<f32>> {
    if ori == len {
        return None;
    }
    let scale = ori as f64 / len as f64;
    let mut m = vec![0f32; len * ori];
    for i in 0..len {
        let src = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(ori - 1);
        let i1 = (i0 + 1).min(ori - 1);
        let l = src - i0 as f64;
        m[i * ori + i0] += (1.0 - l) as f32;
        m[i * ori + i1] += l as f32;
    }
    Some(m)
}

/// One axis's table lookup, prepared at build time for the block's fixed grids.
#[derive(Clone)]
struct RelAxis {
    /// (q·k) indices into the (resized) table.
    index: Indices,
    /// (len, ori) linear-interpolation matrix when the table length differs from 2·max(q,k) − 1.
    resize: Option<Tensor>,
    q: usize,
    k: usize,
}

impl RelAxis {
    fn new(q: usize, k: usize, table_len: usize) -> Result<RelAxis> {
        let len = 2 * q.max(k) - 1;
        let resize = match rel_pos_resize(table_len, len) {
            Some(m) => Some(Tensor::from_slice(&m, &[len, table_len])?),
            None => None,
        };
        Ok(RelAxis {
            index: Indices::from_slice(&rel_pos_index(q, k))?,
            resize,
            q,
            k,
        })
    }

    /// R (q, k, hd) = table[dist] from a table (L, hd).
    fn lookup(&self, table: &Tensor) -> Result<Tensor> {
        let hd = table.dim(1);
        let t = match &self.resize {
            Some(m) => m.try_matmul(table)?, // (2·max − 1, hd)
            None => table.clone(),
        };
        t.try_index_select(&self.index)?
            .try_reshape(&[self.q, self.k, hd])
    }
}

/// MViTv2 decomposed relative positions (`rel_pos_h`, `rel_pos_w`, `rel_pos_t`, each (L, hd)).
#[derive(Clone)]
pub struct RelPos {
    pub rel_pos_h: Tensor,
    pub rel_pos_w: Tensor,
    pub rel_pos_t: Tensor,
    axes: [RelAxis; 3], // t, h, w
}

impl RelPos {
    /// The per-query, per-key-coordinate terms of MViTv2 eq. 4, linear in tokens:
    /// q (B, heads, 1 + Nq', hd), normalised and unscaled -> (B, heads, Nq', kt + kh + kw), the
    /// columns q·Rt[t, ·] (kt), then q·Rh[y, ·] (kh), then q·Rw[x, ·] (kw); the cls row is dropped.
    /// The three einsums (`bythwc,hkc->bythwk` and its w, t twins) are batched matmuls whose
    /// table operand broadcasts over (B, heads, …). `pooled_attention` adds
    /// rel[i, t'] + rel[i, kt + y'] + rel[i, kt + kh + x'] to the score of key (t', y', x').
    pub fn forward(&self, q: &Tensor) -> Result<Tensor> {
        let (b, nh, nq, hd) = (q.dim(0), q.dim(1), q.dim(2), q.dim(3));
        let [at, ah, aw] = &self.axes;
        let (qt, qh, qw) = (at.q, ah.q, aw.q);
        let (kt, kh, kw) = (at.k, ah.k, aw.k);
        let mq = qt * qh * qw;
        let r_q = q
            .try_narrow(2, 1, nq - 1)?
            .try_reshape(&[b, nh, qt, qh, qw, hd])?; // (B, n, qt, qh, qw, hd)
                                                     // Rh (qh, kh, hd): batch over y, rows over x.
        let rh = ah
            .lookup(&self.rel_pos_h)?
            .try_reshape(&[1, 1, 1, qh, kh, hd])?;
        let rel_h = r_q.try_matmul_nt(&rh)?.try_reshape(&[b, nh, mq, kh])?; // (B, n, qt·qh·qw, kh)
                                                                            // Rw (qw, kw, hd): batch over x, so x moves before y and back.
        let rw = aw
            .lookup(&self.rel_pos_w)?
            .try_reshape(&[1, 1, 1, qw, kw, hd])?;
        let rel_w = r_q
            .try_permute(&[0, 1, 2, 4, 3, 5])? // (B, n, qt, qw, qh, hd)
            .try_matmul_nt(&rw)? // (B, n, qt, qw, qh, kw)
            .try_permute(&[0, 1, 2, 4, 3, 5])?
            .try_reshape(&[b, nh, mq, kw])?;
        // Rt (qt, kt, hd): batch over t, rows over (y, x).
        let rt = at
            .lookup(&self.rel_pos_t)?
            .try_reshape(&[1, 1, qt, kt, hd])?;
        let rel_t = r_q
            .try_reshape(&[b, nh, qt, qh * qw, hd])?
            .try_matmul_nt(&rt)? // (B, n, qt, qh·qw, kt)
            .try_reshape(&[b, nh, mq, kt])?;
        Tensor::try_cat(&[&rel_t, &rel_h, &rel_w], 3) // (B, n, Nq', kt + kh + kw)
    }

    /// The additive term of the unfused scores, expanded to every (query, key) pair, zero on the
    /// cls row and column: q (B, heads, 1 + Nq', hd) -> (B, heads, 1 + Nq', 1 + Nk').
    ///   R[b,n,(t,y,x),(t',y',x')] = q·Rt[t,t'] + q·Rh[y,y'] + q·Rw[x,x']   (MViTv2 eq. 4)
    pub fn expanded(&self, q: &Tensor) -> Result<Tensor> {
        let (b, nh) = (q.dim(0), q.dim(1));
        let [at, ah, aw] = &self.axes;
        let (qt, qh, qw) = (at.q, ah.q, aw.q);
        let (kt, kh, kw) = (at.k, ah.k, aw.k);
        let (mq, mk) = (qt * qh * qw, kt * kh * kw);
        let rel = self.forward(q)?; // (B, n, Nq', kt + kh + kw)
        let rel_t = rel
            .try_narrow(3, 0, kt)?
            .try_reshape(&[b, nh, mq, kt, 1, 1])?;
        let rel_h = rel
            .try_narrow(3, kt, kh)?
            .try_reshape(&[b, nh, mq, 1, kh, 1])?;
        let rel_w = rel
            .try_narrow(3, kt + kh, kw)?
            .try_reshape(&[b, nh, mq, 1, 1, kw])?;
        let rel = rel_t
            .try_add(&rel_h)?
            .try_add(&rel_w)?
            .try_reshape(&[b, nh, mq, mk])?; // (B, n, Nq', Nk')
                                             // Zero cls column, then zero cls row: (B, n, 1 + Nq', 1 + Nk').
        let rel = Tensor::try_cat(&[&Tensor::try_full(&[b, nh, mq, 1], 0.0)?, &rel], 3)?;
        Tensor::try_cat(&[&Tensor::try_full(&[b, nh, 1, mk + 1], 0.0)?, &rel], 2)
    }
}

/// SF `MultiScaleAttention` (pool_first=False, separate_qkv=False: every released config).
/// Keys: `qkv`, `proj`, `pool_{q,k,v}`, `norm_{q,k,v}`, `rel_pos_{h,w,t}`.
#[derive(Clone)]
pub struct MultiScaleAttention {
    pub spec: AttentionSpec,
    pub qkv: Linear,
    pub proj: Linear,
    pub pool_q: Option<AttentionPool>,
    pub pool_k: Option<AttentionPool>,
    pub pool_v: Option<AttentionPool>,
    pub rel_pos: Option<RelPos>,
    pub q_thw: [usize; 3],
    pub kv_thw: [usize; 3],
}

impl MultiScaleAttention {
    pub fn new(init: &mut Init, spec: AttentionSpec) -> Result<MultiScaleAttention> {
        if spec.heads == 0 || !spec.dim_out.is_multiple_of(spec.heads) {
            return Err(Error::Config(format!(
                "MViT attention: width {} is not divisible by {} heads",
                spec.dim_out, spec.heads
            )));
        }
        let hd = spec.head_dim();
        let (q_thw, kv_thw) = spec.grids()?;
        let qkv = super::linear(init, spec.dim, 3 * spec.dim_out, spec.qkv_bias)?;
        let proj = super::linear(init, spec.dim_out, spec.dim_out, true)?;
        let mut pool = |p: Option<Pool>| {
            p.map(|p| AttentionPool::new(init, p, spec.mode, hd))
                .transpose()
        };
        let (pool_q, pool_k, pool_v) =
            (pool(spec.pool_q)?, pool(spec.pool_kv)?, pool(spec.pool_kv)?);
        let rel_pos = match spec.rel_pos {
            Some([l_hw, l_t]) => {
                if q_thw[1] != q_thw[2] || kv_thw[1] != kv_thw[2] {
                    return Err(Error::Config(format!(
                        "MViT rel pos: grids must be square, got q {q_thw:?} kv {kv_thw:?}"
                    )));
                }
                Some(RelPos {
                    rel_pos_h: init.trunc_normal(&[l_hw, hd], 0.02)?,
                    rel_pos_w: init.trunc_normal(&[l_hw, hd], 0.02)?,
                    rel_pos_t: init.trunc_normal(&[l_t, hd], 0.02)?,
                    axes: [
                        RelAxis::new(q_thw[0], kv_thw[0], l_t)?,
                        RelAxis::new(q_thw[1], kv_thw[1], l_hw)?,
                        RelAxis::new(q_thw[2], kv_thw[2], l_hw)?,
                    ],
                })
            }
            None => None,
        };
        Ok(MultiScaleAttention {
            spec,
            qkv,
            proj,
            pool_q,
            pool_k,
            pool_v,
            rel_pos,
            q_thw,
            kv_thw,
        })
    }

    /// x (B, 1 + T·H·W, dim) -> pooled and normed q (B, heads, Nq, hd), k and v (B, heads, Nk, hd).
    fn pooled_qkv(&self, x: &Tensor) -> Result<[Tensor; 3]> {
        let s = &self.spec;
        let (b, n) = (x.dim(0), x.dim(1));
        let (nh, hd) = (s.heads, s.head_dim());
        let qkv = self
            .qkv
            .forward(x)? // (B, N, 3·att)
            .try_reshape(&[b, n, 3, nh, hd])?
            .try_permute(&[2, 0, 3, 1, 4])?; // (3, B, heads, N, hd)
        let pooled = |i: usize, p: &Option<AttentionPool>| -> Result<Tensor> {
            let t = qkv.try_select(0, i)?; // (B, heads, N, hd)
            match p {
                Some(p) => p.forward(&t, s.thw),
                None => Ok(t),
            }
        };
        Ok([
            pooled(0, &self.pool_q)?,
            pooled(1, &self.pool_k)?,
            pooled(2, &self.pool_v)?,
        ])
    }

    /// Attention output y (B, heads, Nq, hd) -> (B, Nq, dim_out): v2 residual pooling, proj.
    fn finish(&self, y: Tensor, q: &Tensor) -> Result<Tensor> {
        let s = &self.spec;
        let (b, nh, nq, hd) = (q.dim(0), q.dim(1), q.dim(2), q.dim(3));
        let mut y = y;
        if s.residual_pooling {
            // x[:, :, 1:] += q[:, :, 1:]: the cls row gets nothing.
            let q_body = Tensor::try_cat(
                &[
                    &Tensor::try_full(&[b, nh, 1, hd], 0.0)?,
                    &q.try_narrow(2, 1, nq - 1)?,
                ],
                2,
            )?;
            y = y.try_add(&q_body)?;
        }
        let y = y
            .try_permute(&[0, 2, 1, 3])?
            .try_reshape(&[b, nq, s.dim_out])?; // (B, Nq, att)
        self.proj.forward(&y)
    }

    /// x (B, 1 + T·H·W, dim) -> (B, 1 + T'·H'·W', dim_out) on the query grid `self.q_thw`.
    /// softmax(scale·q·kᵀ [+ rel]) v is the fused `pooled_attention` kernel.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [q, k, v] = self.pooled_qkv(x)?;
        let scale = (self.spec.head_dim() as f32).powf(-0.5);
        // The rel-pos term uses the unscaled q (SF passes q, not q·scale).
        let rel = self.rel_pos.as_ref().map(|r| r.forward(&q)).transpose()?; // (B, heads, Nq − 1, kt + kh + kw)
        let y = q.try_pooled_attention(&k, &v, rel.as_ref(), scale, true, self.kv_thw)?; // (B, heads, Nq, hd)
        self.finish(y, &q)
    }

    /// [`forward`](Self::forward) composed from basic ops, the (B, heads, Nq, Nk) scores (and
    /// for v2 the expanded rel-pos term) materialised: the oracle of the fused path's tests and
    /// the bench's baseline.
    pub fn forward_unfused(&self, x: &Tensor) -> Result<Tensor> {
        let [q, k, v] = self.pooled_qkv(x)?;
        // (q·scale)·kᵀ, the scale applied to the scores (the same product).
        let mut attn = q
            .try_matmul_nt(&k)?
            .try_mul_scalar((self.spec.head_dim() as f32).powf(-0.5))?; // (B, heads, Nq, Nk)
        if let Some(r) = &self.rel_pos {
            attn = attn.try_add(&r.expanded(&q)?)?; // unscaled q (SF passes q, not q·scale)
        }
        let y = attn.try_softmax()?.try_matmul(&v)?; // (B, heads, Nq, hd)
        self.finish(y, &q)
    }

    /// Parameters under SF keys, below `prefix` (e.g. `blocks.3.attn`).
    pub fn params(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        self.qkv.params(&format!("{prefix}.qkv"), out);
        self.proj.params(&format!("{prefix}.proj"), out);
        for (name, p) in [
            ("q", &self.pool_q),
            ("k", &self.pool_k),
            ("v", &self.pool_v),
        ] {
            if let Some(p) = p {
                if let Some(w) = &p.weight {
                    out.push((format!("{prefix}.pool_{name}.weight"), w.clone()));
                }
                if let Some(n) = &p.norm {
                    n.params(&format!("{prefix}.norm_{name}"), out);
                }
            }
        }
        if let Some(r) = &self.rel_pos {
            out.push((format!("{prefix}.rel_pos_h"), r.rel_pos_h.clone()));
            out.push((format!("{prefix}.rel_pos_w"), r.rel_pos_w.clone()));
            out.push((format!("{prefix}.rel_pos_t"), r.rel_pos_t.clone()));
        }
    }
}
