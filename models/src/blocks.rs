//! Blocks shared by several papers, used identically by each.

use tubelet::{Result, Tensor};

/// Multi-head self-attention on a packed qkv (B, N, 3·H·d), last dim ordered [3][H][d] as a
/// qkv Linear produces it, -> (B, N, H·d). softmax(q·kᵀ·scale)·v per head.
///
/// The unfused composition: the readable definition, and the fallback for comparisons.
pub fn attention_unfused(qkv: &Tensor, heads: usize, scale: f32) -> Result<Tensor> {
    let (b, n, d3) = (qkv.dim(0), qkv.dim(1), qkv.dim(2));
    let d = d3 / 3;
    let t = qkv.try_reshape(&[b, n, 3, heads, d / heads])?.try_permute(&[2, 0, 3, 1, 4])?; // (3, B, H, N, d)
    let (q, k, v) = (t.try_select(0, 0)?, t.try_select(0, 1)?, t.try_select(0, 2)?); // (B, H, N, d)
    let a = q.try_matmul_nt(&k)?.try_mul_scalar(scale)?.try_softmax()?; // (B, H, N, N)
    a.try_matmul(&v)?.try_permute(&[0, 2, 1, 3])?.try_reshape(&[b, n, d]) // (B, N, H·d)
}

/// Multi-head self-attention on a packed qkv: the engine's fused FlashAttention-2 kernel
/// (engine/src/ops/attention.rs), forward and backward on the GPU.
pub fn attention(qkv: &Tensor, heads: usize, scale: f32) -> Result<Tensor> {
    qkv.try_attention(heads, scale)
}
