//! Blocks shared by several papers, used identically by each.

use tubelet::checkpoint::{segment, Segment};
use tubelet::nn::Init;
use tubelet::{NoGradGuard, Result, Tensor};

/// Multi-head self-attention on a packed qkv (B, N, 3·H·d), last dim ordered [3][H][d] as a
/// qkv Linear produces it, -> (B, N, H·d). softmax(q·kᵀ·scale)·v per head.
///
/// The unfused composition: the readable definition, and the fallback for comparisons.
pub fn attention_unfused(qkv: &Tensor, heads: usize, scale: f32) -> Result<Tensor> {
    let (b, n, d3) = (qkv.dim(0), qkv.dim(1), qkv.dim(2));
    let d = d3 / 3;
    let t = qkv
        .try_reshape(&[b, n, 3, heads, d / heads])?
        .try_permute(&[2, 0, 3, 1, 4])?; // (3, B, H, N, d)
    let (q, k, v) = (
        t.try_select(0, 0)?,
        t.try_select(0, 1)?,
        t.try_select(0, 2)?,
    ); // (B, H, N, d)
    let a = q.try_matmul_nt(&k)?.try_mul_scalar(scale)?.try_softmax()?; // (B, H, N, N)
    a.try_matmul(&v)?
        .try_permute(&[0, 2, 1, 3])?
        .try_reshape(&[b, n, d]) // (B, N, H·d)
}

/// Multi-head self-attention on a packed qkv: the engine's fused FlashAttention-2 kernel
/// (engine/src/ops/attention.rs), forward and backward on the GPU.
pub fn attention(qkv: &Tensor, heads: usize, scale: f32) -> Result<Tensor> {
    qkv.try_attention(heads, scale)
}

/// PyTorch `nn.BatchNorm1d/2d/3d(C)` (eps 1e-5, momentum 0.1, affine, tracking running stats),
/// over axis 1 of (N, C, …): the engine's `batch_norm` kernel op plus the module's state.
/// Used identically by TSM's ResNet and UniFormer's CBlocks and final norm.
#[derive(Clone)]
pub struct BatchNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    /// Buffers: updated in place by training-mode forwards, used by eval-mode ones.
    pub running_mean: Tensor,
    pub running_var: Tensor,
    /// Training-mode forwards so far (int64 in PyTorch; an f32 scalar here, exact to 2²⁴).
    pub num_batches_tracked: Tensor,
    pub eps: f32,
}

impl BatchNorm {
    /// PyTorch's init: weight 1, bias 0, running mean 0, running var 1.
    pub fn new(init: &mut Init, c: usize) -> Result<BatchNorm> {
        Ok(BatchNorm {
            weight: init.constant(&[c], 1.0)?,
            bias: init.constant(&[c], 0.0)?,
            running_mean: Tensor::try_full(&[c], 0.0)?,
            running_var: Tensor::try_full(&[c], 1.0)?,
            num_batches_tracked: Tensor::try_full(&[], 0.0)?,
            eps: 1e-5,
        })
    }

    /// `train` normalises with the batch statistics and updates the buffers; otherwise the
    /// running statistics are used.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = x.try_batch_norm(
            &self.weight,
            &self.bias,
            &self.running_mean,
            &self.running_var,
            train,
            self.eps,
        )?;
        // Once per training forward: not again in a checkpointed segment's recompute.
        if train && !tubelet::checkpoint::is_recomputing() {
            let _g = NoGradGuard::new();
            self.num_batches_tracked
                .assign(&self.num_batches_tracked.try_add_scalar(1.0)?)?;
        }
        Ok(y)
    }

    pub fn params(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        out.push((format!("{prefix}.weight"), self.weight.clone()));
        out.push((format!("{prefix}.bias"), self.bias.clone()));
    }

    pub fn buffers(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        out.push((format!("{prefix}.running_mean"), self.running_mean.clone()));
        out.push((format!("{prefix}.running_var"), self.running_var.clone()));
        out.push((
            format!("{prefix}.num_batches_tracked"),
            self.num_batches_tracked.clone(),
        ));
    }
}

/// Seeds for stochastic depth: a fresh one for every residual of every training forward, from a
/// process-wide counter (runs are reproducible for the same sequence of calls).
static DROP_PATH_CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The process-wide drop-path counter [`residual`] draws from (models report it as
/// `drop_path_calls` in [`crate::VideoModel::rng_counters`], so a resume restores it).
pub fn drop_path_calls() -> u64 {
    DROP_PATH_CALLS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Sets the counter of [`drop_path_calls`] (a resumed run continues the masks' sequence).
pub fn set_drop_path_calls(n: u64) {
    DROP_PATH_CALLS.store(n, std::sync::atomic::Ordering::Relaxed);
}

/// `x + drop_path(branch)` (stochastic depth, Huang et al. 2016; timm's `DropPath`): in training,
/// each sample's branch is dropped with probability `rate` and kept ones are scaled by
/// 1/(1 − rate); in eval, and at rate 0, it is `x + branch`. Every residual of the PyTorch-origin
/// models goes through here.
pub fn residual(x: &Tensor, branch: &Tensor, rate: f32, train: bool) -> Result<Tensor> {
    if train && rate > 0.0 {
        // A checkpointed segment's recompute replays its forward's seeds (engine/src/checkpoint.rs)
        // and must not advance the counter, or later forwards would differ from an
        // uncheckpointed run's.
        let call = if tubelet::checkpoint::is_recomputing() {
            0
        } else {
            DROP_PATH_CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        };
        let seed = call.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        return x.try_add(&branch.try_drop_path(rate, seed)?);
    }
    x.try_add(branch)
}

/// One stage: `blocks` in order, `f(block, index, x)` each, marked for activation checkpointing
/// (engine/src/checkpoint.rs) as a [`Segment::Stage`] of [`Segment::Block`]s. `f` owns what it
/// uses; the blocks are cloned (handles: the parameters are shared).
pub fn stage<B, F>(x: &Tensor, blocks: &[B], f: F) -> Result<Tensor>
where
    B: Clone + Send + Sync + 'static,
    F: Fn(&B, usize, &Tensor) -> Result<Tensor> + Clone + Send + Sync + 'static,
{
    let blocks = blocks.to_vec();
    segment(Segment::Stage, x, move |x| {
        run_blocks(Segment::Block, x, &blocks, &f)
    })
}

/// The blocks of a stage that the model marks as a segment itself (Video Swin's BasicLayer,
/// with its PatchMerging), each a [`Segment::Block`].
pub fn blocks<B, F>(x: &Tensor, blocks: &[B], f: F) -> Result<Tensor>
where
    B: Clone + Send + Sync + 'static,
    F: Fn(&B, usize, &Tensor) -> Result<Tensor> + Clone + Send + Sync + 'static,
{
    run_blocks(Segment::Block, x, blocks, &f)
}

/// The blocks of a model without stages (ViViT, TimeSformer), each a [`Segment::Layer`].
pub fn layers<B, F>(x: &Tensor, blocks: &[B], f: F) -> Result<Tensor>
where
    B: Clone + Send + Sync + 'static,
    F: Fn(&B, usize, &Tensor) -> Result<Tensor> + Clone + Send + Sync + 'static,
{
    run_blocks(Segment::Layer, x, blocks, &f)
}

fn run_blocks<B, F>(kind: Segment, x: &Tensor, blocks: &[B], f: &F) -> Result<Tensor>
where
    B: Clone + Send + Sync + 'static,
    F: Fn(&B, usize, &Tensor) -> Result<Tensor> + Clone + Send + Sync + 'static,
{
    let mut x = x.clone();
    for (j, b) in blocks.iter().enumerate() {
        let (b, f) = (b.clone(), f.clone());
        x = segment(kind, &x, move |x| f(&b, j, x))?;
    }
    Ok(x)
}
