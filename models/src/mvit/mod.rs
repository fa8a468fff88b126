//! MViT: Multiscale Vision Transformers — Fan, Xiong, Mangalam, Li, Yan, Malik, Feichtenhofer
//! (ICCV 2021), arXiv:2104.11227; and MViTv2: Improved Multiscale Vision Transformers for
//! Classification and Detection — Li, Wu, Fan, Mangalam, Xiong, Malik, Feichtenhofer (CVPR 2022),
//! arXiv:2112.01526.
//!
//! Implemented: the video classifiers of both papers (Kinetics-400):
//! - v1: MViT-B 16×4 and MViT-B 32×3 (paper Table 2 rows; 16 layers), pooling attention with
//!   separable absolute position embeddings, the channel expansion in the MLP of the block before
//!   each stage (`proj(norm2(x))`);
//! - v2: MViTv2-S 16×4, -B 32×3, -L 40×3 @312² (MViTv2 Table 5 rows): decomposed relative
//!   positions (eq. 4), residual pooling (eq. 5), the dimension change inside the attention
//!   (`proj(norm1(x))`), no absolute positions.
//!
//! Reference implementation: facebookresearch/SlowFast @287ec00, `slowfast/models/attention.py`
//! and `video_model_builder.py::MViT`, configs `configs/Kinetics/MVIT_B_16x4_CONV.yaml`,
//! `MVITv2_{S_16x4,B_32x3,L_40x3_test}.yaml`; torchvision `models/video/mvit.py` agrees
//! (its `mvit_v1_b` / `mvit_v2_s` counts equal ours). Parameter keys are SF's state-dict keys.
//!
//! Deviations:
//! - The head returns logits. SF's `TransformerBasicHead` applies softmax when not training;
//!   apply it yourself to compare against an official eval run.
//! - MViT-B 32×3 follows the paper (16 layers, kernels 3³); SF's `MVIT_B_32x3_CONV.yaml` sets
//!   `DEPTH` twice and builds 24 layers with other kernels (seed-models.md §6.3).
//! - MViTv2-L: SF's README gives 217.6M parameters for K400; its own config builds 213,390,112,
//!   which is what this preset has (seed-models.md §0.1).
//! - Drop path (stochastic depth, the official linspace) goes through `blocks::residual`.
//! - The patch-embedding bias starts at 0 (PyTorch's default uniform init is not reproduced);
//!   every other init follows SF (`trunc_normal(0.02)`, Linear and LayerNorm biases 0.02).
//! - Only `POOL_KV_STRIDE_ADAPTIVE` schedules (every released config) and pool_first=False.

use std::cell::Cell;

use tubelet::nn::{Init, LayerNorm, Linear};
use tubelet::{Error, Result, Tensor};

use crate::TINY_CLASSES as NUM_CLASSES;
use crate::{BuildOptions, InputLayout, Preset, VideoModel};

pub mod pooling_attention;

pub use pooling_attention::{
    attention_pool, AttentionPool, AttentionSpec, MultiScaleAttention, Pool, PoolMode,
};

/// Which paper's block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// MViT: separable absolute positions, dim change in the MLP (`proj(norm2(x))`).
    V1,
    /// MViTv2: `REL_POS_SPATIAL`, `REL_POS_TEMPORAL`, `RESIDUAL_POOLING`, `DIM_MUL_IN_ATT`,
    /// `USE_ABS_POS False`.
    V2,
}

/// SF `cfg.MVIT` (plus the clip and head settings), with SF's names.
#[derive(Clone, Debug)]
pub struct Config {
    pub version: Version,
    /// `DATA.NUM_FRAMES`, `DATA.TRAIN_CROP_SIZE` (square).
    pub frames: usize,
    pub crop: usize,
    /// PatchEmbed Conv3d: kernel (3, 7, 7), stride (2, 4, 4), padding (1, 3, 3).
    pub patch_kernel: [usize; 3],
    pub patch_stride: [usize; 3],
    pub patch_padding: [usize; 3],
    pub embed_dim: usize,
    pub num_heads: usize,
    pub depth: usize,
    pub mlp_ratio: f64,
    pub qkv_bias: bool,
    /// (block, multiplier) pairs: `DIM_MUL`, `HEAD_MUL`.
    pub dim_mul: Vec<(usize, f64)>,
    pub head_mul: Vec<(usize, f64)>,
    /// (block, q stride) pairs: `POOL_Q_STRIDE`. v2 configs list every block (stride 1 too).
    pub pool_q_stride: Vec<(usize, [usize; 3])>,
    /// `POOL_KVQ_KERNEL`; None: kernel s + 1 where s > 1, else s.
    pub pool_kvq_kernel: Option<[usize; 3]>,
    /// `POOL_KV_STRIDE_ADAPTIVE`: the kv stride, divided by the q stride at each q-pool block.
    pub pool_kv_stride_adaptive: [usize; 3],
    pub mode: PoolMode,
    /// `DROPPATH_RATE`, linearly increasing from 0 over the blocks.
    pub drop_path_rate: f32,
    /// `MODEL.DROPOUT_RATE`, the head's dropout (training only).
    pub dropout_rate: f32,
    pub num_classes: usize,
}

/// One block of the stage schedule (seed-models.md §6.2).
#[derive(Clone, Debug, PartialEq)]
pub struct BlockSpec {
    pub attn: AttentionSpec,
    pub dim: usize,
    pub dim_out: usize,
    pub mlp_hidden: usize,
    /// The residual max-pool (kernel s + 1 where s > 1, stride s = the q stride), if any.
    pub skip: Option<Pool>,
    pub drop_path: f32,
}

/// SF `round_width`: width·multiplier rounded to a multiple of `divisor`, never below 90%.
pub fn round_width(width: usize, multiplier: f64, divisor: usize) -> usize {
    if multiplier == 0.0 {
        return width;
    }
    let w = width as f64 * multiplier;
    let d = divisor as f64;
    let mut out = (((w + d / 2.0) as usize / divisor) * divisor).max(1);
    if (out as f64) < 0.9 * w {
        out += divisor;
    }
    out
}

/// `POOL_Q_STRIDE` that lists every block, with `strided` blocks at their stride (v2 configs).
fn every_block(depth: usize, strided: &[usize]) -> Vec<(usize, [usize; 3])> {
    (0..depth)
        .map(|i| {
            (
                i,
                if strided.contains(&i) {
                    [1, 2, 2]
                } else {
                    [1, 1, 1]
                },
            )
        })
        .collect()
}

impl Config {
    /// The shared recipe: stem (3,7,7)/(2,4,4)/(1,3,3), MLP 4, qkv bias, kernels 3³, kv stride
    /// 1×8×8 adaptive, conv pooling, ×2 width and heads at each stage start in `stages`.
    fn base(
        version: Version,
        frames: usize,
        crop: usize,
        depth: usize,
        embed_dim: usize,
        num_heads: usize,
        stages: &[usize],
        drop_path_rate: f32,
    ) -> Config {
        let mul: Vec<(usize, f64)> = stages.iter().map(|&s| (s, 2.0)).collect();
        let pool_q_stride = match version {
            Version::V1 => stages.iter().map(|&s| (s, [1, 2, 2])).collect(),
            Version::V2 => every_block(depth, stages),
        };
        Config {
            version,
            frames,
            crop,
            patch_kernel: [3, 7, 7],
            patch_stride: [2, 4, 4],
            patch_padding: [1, 3, 3],
            embed_dim,
            num_heads,
            depth,
            mlp_ratio: 4.0,
            qkv_bias: true,
            dim_mul: mul.clone(),
            head_mul: mul,
            pool_q_stride,
            pool_kvq_kernel: Some([3, 3, 3]),
            pool_kv_stride_adaptive: [1, 8, 8],
            mode: PoolMode::Conv,
            drop_path_rate,
            dropout_rate: 0.5,
            num_classes: 400,
        }
    }

    /// MViT-B 16×4, K400 (SF `configs/Kinetics/MVIT_B_16x4_CONV.yaml`; paper Table 2).
    pub fn mvit_b_16x4() -> Config {
        Config::base(Version::V1, 16, 224, 16, 96, 1, &[1, 3, 14], 0.2)
    }

    /// MViT-B 32×3, K400, as in the paper: the 16×4 model on 32 frames (drop path 0.3 from
    /// SF's 32×3 yaml, whose depth 24 is not the paper's, see the module docs).
    pub fn mvit_b_32x3() -> Config {
        Config::base(Version::V1, 32, 224, 16, 96, 1, &[1, 3, 14], 0.3)
    }

    /// MViTv2-S 16×4, K400 (SF `configs/Kinetics/MVITv2_S_16x4.yaml`; MViTv2 Table 5).
    pub fn mvitv2_s_16x4() -> Config {
        Config::base(Version::V2, 16, 224, 16, 96, 1, &[1, 3, 14], 0.2)
    }

    /// MViTv2-B 32×3, K400 (SF `configs/Kinetics/MVITv2_B_32x3.yaml`).
    pub fn mvitv2_b_32x3() -> Config {
        Config::base(Version::V2, 32, 224, 24, 96, 1, &[2, 5, 21], 0.3)
    }

    /// MViTv2-L 40×3 at 312², K400 (SF `configs/Kinetics/MVITv2_L_40x3_test.yaml`).
    pub fn mvitv2_l_40x3() -> Config {
        Config::base(Version::V2, 40, 312, 48, 144, 2, &[2, 8, 44], 0.75)
    }

    /// A tiny model for the synthetic set: 8 frames of 32² (grid 4×8×8), embed 32, 3 blocks:
    /// a dim change 32→64 (v1: in block 0's MLP; v2: in block 1's attention), a q-pooling
    /// block (1) with stride 1×2×2, kv stride adaptive from 1×4×4. No dropout, no drop path.
    pub fn tiny(version: Version, num_classes: usize) -> Config {
        Config {
            pool_kv_stride_adaptive: [1, 4, 4],
            dropout_rate: 0.0,
            num_classes,
            ..Config::base(version, 8, 32, 3, 32, 1, &[1], 0.0)
        }
    }

    /// The patch grid (T, H, W) after the stem; SF requires it to equal input // stride.
    pub fn patch_grid(&self) -> Result<[usize; 3]> {
        let input = [self.frames, self.crop, self.crop];
        let stem = Pool {
            kernel: self.patch_kernel,
            stride: self.patch_stride,
        };
        let mut g = [0; 3];
        for d in 0..3 {
            let s = self.patch_stride[d];
            let p = self.patch_padding[d];
            let k = self.patch_kernel[d];
            if s == 0 || input[d] + 2 * p < k {
                return Err(Error::Config(format!(
                    "MViT config: patch {stem:?} padding {:?} does not fit the clip {input:?}",
                    self.patch_padding
                )));
            }
            g[d] = (input[d] + 2 * p - k) / s + 1;
            if g[d] != input[d] / s {
                return Err(Error::Config(format!(
                    "MViT config: the stem makes a {g:?} grid on axis {d} but SF requires input // stride = {} (clip {input:?})",
                    input[d] / s
                )));
            }
        }
        Ok(g)
    }

    /// The stage schedule: every block's widths, heads, grids and pools, as SF's `MViT.__init__`.
    pub fn schedule(&self) -> Result<Vec<BlockSpec>> {
        let bad = |what: String| Err(Error::Config(format!("MViT config: {what}")));
        if self.depth == 0 || self.embed_dim == 0 || self.num_heads == 0 || self.num_classes == 0 {
            return bad(format!(
                "depth {}, embed_dim {}, num_heads {}, classes {} must be positive",
                self.depth, self.embed_dim, self.num_heads, self.num_classes
            ));
        }
        let n = self.depth;
        let (mut dim_mul, mut head_mul) = (vec![1.0; n + 1], vec![1.0; n + 1]);
        let mut stride_q: Vec<Option<[usize; 3]>> = vec![None; n];
        for (list, target) in [
            (&self.dim_mul, &mut dim_mul),
            (&self.head_mul, &mut head_mul),
        ] {
            for &(i, m) in list {
                if i > n {
                    return bad(format!("multiplier at block {i} is past depth {n}"));
                }
                target[i] = m;
            }
        }
        for &(i, s) in &self.pool_q_stride {
            if i >= n || s.contains(&0) {
                return bad(format!("POOL_Q_STRIDE entry ({i}, {s:?}) for depth {n}"));
            }
            stride_q[i] = Some(s);
        }
        let kernel_for = |s: [usize; 3]| {
            self.pool_kvq_kernel
                .unwrap_or(s.map(|s| if s > 1 { s + 1 } else { s }))
        };
        let mut thw = self.patch_grid()?; // actual token grid
        let mut input_size = thw; // SF's `input_size`: floors size // stride (sizes the rel-pos tables)
        let mut kv_stride = self.pool_kv_stride_adaptive;
        let (mut dim, mut heads) = (self.embed_dim, self.num_heads);
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            heads = round_width(heads, head_mul[i], 1);
            let dim_out = match self.version {
                Version::V2 => round_width(dim, dim_mul[i], round_width(heads, head_mul[i], 1)),
                Version::V1 => {
                    round_width(dim, dim_mul[i + 1], round_width(heads, head_mul[i + 1], 1))
                }
            };
            if let Some(s) = stride_q[i] {
                kv_stride = [0, 1, 2].map(|d| (kv_stride[d] / s[d]).max(1));
            }
            let pool_q = stride_q[i]
                .map(|s| Pool {
                    kernel: kernel_for(s),
                    stride: s,
                })
                .filter(|p| !p.is_identity());
            let pool_kv = Some(Pool {
                kernel: kernel_for(kv_stride),
                stride: kv_stride,
            })
            .filter(|p| !p.is_identity());
            let att = if self.version == Version::V2 {
                dim_out
            } else {
                dim
            };
            if att % heads != 0 {
                return bad(format!(
                    "block {i}: width {att} is not divisible by {heads} heads"
                ));
            }
            let rel_pos = (self.version == Version::V2).then(|| {
                let q_size = input_size[1] / stride_q[i].map_or(1, |s| s[1]);
                let kv_size = input_size[1] / kv_stride[1];
                [2 * q_size.max(kv_size) - 1, 2 * input_size[0] - 1]
            });
            let attn = AttentionSpec {
                dim,
                dim_out: att,
                heads,
                thw,
                pool_q,
                pool_kv,
                mode: self.mode,
                qkv_bias: self.qkv_bias,
                rel_pos,
                residual_pooling: self.version == Version::V2,
            };
            let (q_thw, _) = attn.grids()?;
            let skip = stride_q[i]
                .filter(|s| s.iter().product::<usize>() > 1)
                .map(|s| Pool {
                    kernel: s.map(|s| if s > 1 { s + 1 } else { s }),
                    stride: s,
                });
            let drop_path = if n > 1 {
                self.drop_path_rate * i as f32 / (n - 1) as f32
            } else {
                0.0
            };
            let mlp_hidden = (att as f64 * self.mlp_ratio) as usize;
            out.push(BlockSpec {
                attn,
                dim,
                dim_out,
                mlp_hidden,
                skip,
                drop_path,
            });
            if let Some(s) = stride_q[i] {
                input_size = [0, 1, 2].map(|d| input_size[d] / s[d]);
            }
            thw = q_thw;
            dim = dim_out;
        }
        Ok(out)
    }

    /// Parameters counted from the config (seed-models.md §8); equals the built model's.
    pub fn num_params(&self) -> Result<usize> {
        let lin = |i: usize, o: usize| i * o + o;
        let [t, h, w] = self.patch_grid()?;
        let d0 = self.embed_dim;
        let [kt, kh, kw] = self.patch_kernel;
        let mut p = 3 * d0 * kt * kh * kw + d0 + d0; // patch_embed.proj + cls_token
        if self.version == Version::V1 {
            p += h * w * d0 + t * d0 + d0; // pos_embed_{spatial,temporal,class}
        }
        let blocks = self.schedule()?;
        for b in &blocks {
            let a = &b.attn;
            let (att, hd) = (a.dim_out, a.head_dim());
            p += 2 * b.dim + b.dim * 3 * att + if a.qkv_bias { 3 * att } else { 0 };
            p += lin(att, att) + 2 * att + lin(att, b.mlp_hidden) + lin(b.mlp_hidden, b.dim_out);
            let pool = |q: &Option<Pool>| {
                q.map_or(0, |q| {
                    if a.mode == PoolMode::Conv {
                        hd * q.kernel.iter().product::<usize>() + 2 * hd
                    } else {
                        0
                    }
                })
            };
            p += pool(&a.pool_q) + 2 * pool(&a.pool_kv);
            if let Some([l_hw, l_t]) = a.rel_pos {
                p += (2 * l_hw + l_t) * hd;
            }
            if b.dim != b.dim_out {
                p += lin(b.dim, b.dim_out);
            }
        }
        let d = blocks.last().map_or(d0, |b| b.dim_out);
        Ok(p + 2 * d + lin(d, self.num_classes))
    }

    /// Multiply-accumulates of one clip: conv, linear and the attention matmuls (plus the
    /// rel-pos einsums), the papers' "FLOPs" convention (seed-models.md §8).
    pub fn macs(&self) -> Result<f64> {
        let [t, h, w] = self.patch_grid()?;
        let k: usize = self.patch_kernel.iter().product();
        let mut m = (t * h * w * self.embed_dim * 3 * k) as f64;
        let blocks = self.schedule()?;
        for b in &blocks {
            let a = &b.attn;
            let (q, kv) = a.grids()?;
            let n = (a.thw.iter().product::<usize>() + 1) as f64;
            let (lq, lk) = (
                q.iter().product::<usize>() as f64,
                kv.iter().product::<usize>() as f64,
            );
            let (nq, nk) = (lq + 1.0, lk + 1.0);
            let (dim, att, out, hid) = (
                b.dim as f64,
                a.dim_out as f64,
                b.dim_out as f64,
                b.mlp_hidden as f64,
            );
            m += n * dim * 3.0 * att
                + 2.0 * nq * nk * att
                + nq * att * att
                + nq * (att * hid + hid * out);
            if a.mode == PoolMode::Conv {
                let taps =
                    |p: &Option<Pool>| p.map_or(0.0, |p| p.kernel.iter().product::<usize>() as f64);
                m += lq * att * taps(&a.pool_q) + 2.0 * lk * att * taps(&a.pool_kv);
            }
            if a.rel_pos.is_some() {
                m += lq * (kv[0] + kv[1] + kv[2]) as f64 * att;
            }
            if b.dim != b.dim_out {
                m += if self.version == Version::V2 { n } else { nq } * dim * out;
            }
        }
        let d = blocks.last().map_or(self.embed_dim, |b| b.dim_out);
        Ok(m + (d * self.num_classes) as f64)
    }
}

/// SF init: Linear weight trunc_normal(0.02), bias 0.02 (`MViT._init_weights`).
pub(crate) fn linear(init: &mut Init, d_in: usize, d_out: usize, bias: bool) -> Result<Linear> {
    Ok(Linear {
        weight: init.trunc_normal(&[d_out, d_in], 0.02)?,
        bias: if bias {
            Some(init.constant(&[d_out], 0.02)?)
        } else {
            None
        },
    })
}

/// SF norm: LayerNorm(eps 1e-6), weight 1, bias 0.02.
pub(crate) fn layer_norm(init: &mut Init, c: usize) -> Result<LayerNorm> {
    Ok(LayerNorm {
        weight: init.constant(&[c], 1.0)?,
        bias: init.constant(&[c], 0.02)?,
        eps: 1e-6,
        flax: false,
    })
}

/// `x + drop_path(branch)`: stochastic depth in training, `x + branch` in eval.
pub use crate::blocks::residual;

/// SF `Mlp`: fc1, GELU (erf), fc2.
#[derive(Clone)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

/// SF `MultiScaleBlock`.
#[derive(Clone)]
pub struct MultiScaleBlock {
    pub spec: BlockSpec,
    pub version: Version,
    pub norm1: LayerNorm,
    pub attn: MultiScaleAttention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
    /// The dim-change Linear(dim, dim_out), on the normalised tensor.
    pub proj: Option<Linear>,
}

impl MultiScaleBlock {
    pub fn new(init: &mut Init, spec: BlockSpec, version: Version) -> Result<MultiScaleBlock> {
        let att = spec.attn.dim_out;
        Ok(MultiScaleBlock {
            norm1: layer_norm(init, spec.dim)?,
            attn: MultiScaleAttention::new(init, spec.attn.clone())?,
            norm2: layer_norm(init, att)?,
            mlp: Mlp {
                fc1: linear(init, att, spec.mlp_hidden, true)?,
                fc2: linear(init, spec.mlp_hidden, spec.dim_out, true)?,
            },
            proj: if spec.dim != spec.dim_out {
                Some(linear(init, spec.dim, spec.dim_out, true)?)
            } else {
                None
            },
            spec,
            version,
        })
    }

    /// x (B, 1 + T·H·W, dim) -> (B, 1 + T'·H'·W', dim_out).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let dp = self.spec.drop_path;
        let x_norm = self.norm1.forward(x)?;
        let x_block = self.attn.forward(&x_norm)?; // (B, Nq, att)
        let mut x = x.clone();
        if let (Version::V2, Some(proj)) = (self.version, &self.proj) {
            x = proj.forward(&x_norm)?; // v2: project norm1(x), then pool
        }
        if let Some(s) = &self.spec.skip {
            // pool_skip: MaxPool3d(k, s, k//2) over the grid, cls excluded and re-attached.
            let (b, n, c) = (x.dim(0), x.dim(1), x.dim(2));
            let x4 = x.try_reshape(&[b, 1, n, c])?;
            let pooled = attention_pool(&x4, self.spec.attn.thw, |g| {
                g.try_max_pool3d(s.kernel, s.stride, s.padding())
            })?;
            x = pooled.try_reshape(&[b, pooled.dim(2), c])?;
        }
        let x = residual(&x, &x_block, dp, train)?;
        let x_norm = self.norm2.forward(&x)?;
        let x_mlp = self
            .mlp
            .fc2
            .forward(&self.mlp.fc1.forward(&x_norm)?.try_gelu()?)?;
        let x = match (self.version, &self.proj) {
            (Version::V1, Some(proj)) => proj.forward(&x_norm)?, // v1: project norm2(x)
            _ => x,
        };
        residual(&x, &x_mlp, dp, train)
    }

    pub fn params(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        self.norm1.params(&format!("{prefix}.norm1"), out);
        self.attn.params(&format!("{prefix}.attn"), out);
        self.norm2.params(&format!("{prefix}.norm2"), out);
        self.mlp.fc1.params(&format!("{prefix}.mlp.fc1"), out);
        self.mlp.fc2.params(&format!("{prefix}.mlp.fc2"), out);
        if let Some(p) = &self.proj {
            p.params(&format!("{prefix}.proj"), out);
        }
    }
}

/// v1 separable absolute positions (`SEP_POS_EMBED`): spatial (1, H·W, D) repeated over T,
/// plus temporal (1, T, D) repeated over H·W, after a class position (1, 1, D).
pub struct SepPosEmbed {
    pub spatial: Tensor,
    pub temporal: Tensor,
    pub class: Tensor,
}

/// The MViT classifier (SF `MViT`, cls token on, no mean pooling, no detection head).
pub struct MViT {
    pub config: Config,
    /// `patch_embed.proj`: Conv3d(3, D, k, s, p) weight (D, 3, kT, kH, kW) and bias (D).
    pub patch_embed: (Tensor, Tensor),
    pub cls_token: Tensor,
    pub pos_embed: Option<SepPosEmbed>,
    pub blocks: Vec<MultiScaleBlock>,
    pub norm: LayerNorm,
    /// `head.projection`.
    pub head: Linear,
    grid: [usize; 3],
    seed: u64,
    /// Training forwards so far: each draws a fresh head-dropout mask.
    steps: Cell<u64>,
}

impl MViT {
    pub fn new(config: Config, seed: u64) -> Result<MViT> {
        let schedule = config.schedule()?;
        let grid = config.patch_grid()?;
        let mut init = Init::new(seed);
        let d = config.embed_dim;
        let [kt, kh, kw] = config.patch_kernel;
        let patch_embed = (
            init.trunc_normal(&[d, 3, kt, kh, kw], 0.02)?,
            init.constant(&[d], 0.0)?,
        );
        let cls_token = init.trunc_normal(&[1, 1, d], 0.02)?;
        let pos_embed = match config.version {
            Version::V1 => Some(SepPosEmbed {
                spatial: init.trunc_normal(&[1, grid[1] * grid[2], d], 0.02)?,
                temporal: init.trunc_normal(&[1, grid[0], d], 0.02)?,
                class: init.trunc_normal(&[1, 1, d], 0.02)?,
            }),
            Version::V2 => None,
        };
        let blocks = schedule
            .into_iter()
            .map(|s| MultiScaleBlock::new(&mut init, s, config.version))
            .collect::<Result<Vec<_>>>()?;
        let d_last = blocks.last().map_or(d, |b| b.spec.dim_out);
        let norm = layer_norm(&mut init, d_last)?;
        let head = linear(&mut init, d_last, config.num_classes, true)?;
        Ok(MViT {
            config,
            patch_embed,
            cls_token,
            pos_embed,
            blocks,
            norm,
            head,
            grid,
            seed,
            steps: Cell::new(0),
        })
    }

    /// x (B, 3, T, H, W) -> logits (B, classes). SF's eval head would apply softmax; we don't.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = &self.config;
        let want = [3, c.frames, c.crop, c.crop];
        if x.rank() != 5 || x.shape()[1..] != want || x.dim(0) == 0 {
            return Err(Error::Shape(format!(
                "MViT: input of shape {:?}, expected (B, 3, {}, {}, {}) with B ≥ 1",
                x.shape(),
                c.frames,
                c.crop,
                c.crop
            )));
        }
        let b = x.dim(0);
        let d = c.embed_dim;
        let [t, h, w] = self.grid;
        let l = t * h * w;
        let tokens = patch_embed(&self.patch_embed, c.patch_stride, c.patch_padding, x)?; // (B, T·H·W, D), t-major
        debug_assert_eq!(tokens.dim(1), l);
        let cls = self.cls_token.try_broadcast_to(&[b, 1, d])?;
        let mut x = Tensor::try_cat(&[&cls, &tokens], 1)?; // (B, 1 + T·H·W, D)
        if let Some(p) = &self.pos_embed {
            // spatial.repeat(1, T, 1) + repeat_interleave(temporal, H·W, dim=1), as broadcasts.
            let grid = p
                .spatial
                .try_reshape(&[1, 1, h * w, d])?
                .try_add(&p.temporal.try_reshape(&[1, t, 1, d])?)?; // (1, T, H·W, D)
            let pos = Tensor::try_cat(&[&p.class, &grid.try_reshape(&[1, l, d])?], 1)?; // (1, 1 + T·H·W, D)
            x = x.try_add(&pos)?;
        }
        // Checkpoint segments: a stage is the blocks at one resolution (a new one at each q-pooling
        // block with a stride, where the residual is pooled too).
        let mut i = 0;
        while i < self.blocks.len() {
            let end = (i + 1..self.blocks.len())
                .find(|&j| self.blocks[j].spec.skip.is_some())
                .unwrap_or(self.blocks.len());
            x = crate::blocks::stage(&x, &self.blocks[i..end], move |blk, _, x| {
                blk.forward(x, train)
            })?;
            i = end;
        }
        let mut x = self.norm.forward(&x)?.try_select(1, 0)?; // cls token: (B, D')
        if train && c.dropout_rate > 0.0 {
            let step = self.steps.get();
            self.steps.set(step + 1);
            x = x.try_dropout(
                c.dropout_rate,
                self.seed ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            )?;
        }
        self.head.forward(&x)
    }

    /// Every parameter under its SF state-dict key.
    pub fn named_params(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![
            (
                "patch_embed.proj.weight".to_string(),
                self.patch_embed.0.clone(),
            ),
            (
                "patch_embed.proj.bias".to_string(),
                self.patch_embed.1.clone(),
            ),
            ("cls_token".to_string(), self.cls_token.clone()),
        ];
        if let Some(p) = &self.pos_embed {
            out.push(("pos_embed_spatial".to_string(), p.spatial.clone()));
            out.push(("pos_embed_temporal".to_string(), p.temporal.clone()));
            out.push(("pos_embed_class".to_string(), p.class.clone()));
        }
        for (i, blk) in self.blocks.iter().enumerate() {
            blk.params(&format!("blocks.{i}"), &mut out);
        }
        self.norm.params("norm", &mut out);
        self.head.params("head.projection", &mut out);
        out
    }
}

impl VideoModel for MViT {
    fn clip(&self) -> [usize; 3] {
        [self.config.frames, self.config.crop, self.config.crop]
    }

    fn num_classes(&self) -> usize {
        self.config.num_classes
    }

    fn input_layout(&self) -> InputLayout {
        InputLayout::Bcthw
    }

    /// Logits; SF's head applies softmax in eval, this one does not (see the module docs).
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        MViT::forward(self, x, train)
    }

    fn named_params(&self) -> Vec<(String, Tensor)> {
        MViT::named_params(self)
    }

    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    fn rng_counters(&self) -> Vec<(String, u64)> {
        vec![
            ("steps".into(), self.steps.get()),
            ("drop_path_calls".into(), crate::blocks::drop_path_calls()),
        ]
    }

    fn set_rng_counters(&self, counters: &[(String, u64)]) -> Result<()> {
        crate::set_counters(
            "MViT",
            counters,
            &[
                ("steps", &|v| self.steps.set(v)),
                ("drop_path_calls", &crate::blocks::set_drop_path_calls),
            ],
        )
    }

    /// v2: in the last block the q pooling conv and the rel-pos tables act only on the non-cls
    /// query rows (cls is split off before pooling and excluded from the rel-pos terms), and the
    /// head reads only the cls token: their gradient is exactly 0, in SF too.
    fn params_unreachable_from_the_loss(&self) -> Vec<String> {
        let last = self.blocks.len() - 1;
        self.named_params()
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| {
                self.config.version == Version::V2
                    && name.starts_with(&format!("blocks.{last}.attn."))
                    && (name.contains(".pool_q.") || name.contains(".rel_pos_"))
            })
            .collect()
    }
}

/// A preset's config at the options' class count, clip and drop-path rate (checked by the
/// model's own `Config::validate` when built).
fn configure(mut c: Config, o: &BuildOptions) -> Result<Config> {
    c.num_classes = o.classes(c.num_classes)?;
    let [t, h, w] = o.clip_or([c.frames, c.crop, c.crop])?;
    if h != w {
        return Err(Error::Config(format!("clip {t}×{h}×{w}: MViT takes square crops (DATA.TRAIN_CROP_SIZE), height must equal width")));
    }
    (c.frames, c.crop) = (t, h);
    if let Some(r) = o.drop_path {
        c.drop_path_rate = r;
    }
    Ok(c)
}

fn preset(
    name: &'static str,
    description: &'static str,
    c: Config,
    tiny: bool,
    build: fn(&BuildOptions) -> Result<Box<dyn VideoModel>>,
) -> Preset {
    // The preset configs are fixed and valid (the tests count every one), so a count error
    // here is a bug in this file; it reads as 0 rather than hiding the preset.
    Preset {
        name,
        description,
        params: c.num_params().unwrap_or(0),
        gmacs: c.macs().map_or(0.0, |m| m / 1e9),
        clip: [c.frames, c.crop, c.crop],
        tiny,
        num_classes: c.num_classes,
        build,
    }
}

/// MViT v1 and v2 presets.
pub fn presets() -> Vec<Preset> {
    let v1 = || Config::tiny(Version::V1, NUM_CLASSES);
    let v2 = || Config::tiny(Version::V2, NUM_CLASSES);
    vec![
        preset(
            "mvit-b-16x4",
            "MViT-B 16x4, K400 (SF MVIT_B_16x4_CONV)",
            Config::mvit_b_16x4(),
            false,
            |o| {
                Ok(Box::new(MViT::new(
                    configure(Config::mvit_b_16x4(), o)?,
                    o.seed,
                )?))
            },
        ),
        preset(
            "mvit-b-32x3",
            "MViT-B 32x3, K400, 16 layers as the paper",
            Config::mvit_b_32x3(),
            false,
            |o| {
                Ok(Box::new(MViT::new(
                    configure(Config::mvit_b_32x3(), o)?,
                    o.seed,
                )?))
            },
        ),
        preset(
            "mvitv2-s-16x4",
            "MViTv2-S 16x4, K400 (SF MVITv2_S_16x4)",
            Config::mvitv2_s_16x4(),
            false,
            |o| {
                Ok(Box::new(MViT::new(
                    configure(Config::mvitv2_s_16x4(), o)?,
                    o.seed,
                )?))
            },
        ),
        preset(
            "mvitv2-b-32x3",
            "MViTv2-B 32x3, K400 (SF MVITv2_B_32x3)",
            Config::mvitv2_b_32x3(),
            false,
            |o| {
                Ok(Box::new(MViT::new(
                    configure(Config::mvitv2_b_32x3(), o)?,
                    o.seed,
                )?))
            },
        ),
        preset(
            "mvitv2-l-40x3",
            "MViTv2-L 40x3 @312, K400 (SF MVITv2_L_40x3_test)",
            Config::mvitv2_l_40x3(),
            false,
            |o| {
                Ok(Box::new(MViT::new(
                    configure(Config::mvitv2_l_40x3(), o)?,
                    o.seed,
                )?))
            },
        ),
        preset(
            "mvit-tiny",
            "MViT v1, tiny: 8x32x32, embed 32, 3 blocks, one q-pool stage",
            v1(),
            true,
            |o| {
                Ok(Box::new(MViT::new(
                    configure(Config::tiny(Version::V1, NUM_CLASSES), o)?,
                    o.seed,
                )?))
            },
        ),
        preset(
            "mvitv2-tiny",
            "MViTv2, tiny: 8x32x32, embed 32, 3 blocks, one q-pool stage",
            v2(),
            true,
            |o| {
                Ok(Box::new(MViT::new(
                    configure(Config::tiny(Version::V2, NUM_CLASSES), o)?,
                    o.seed,
                )?))
            },
        ),
    ]
}

/// SlowFast `PatchEmbed` (3-D): Conv3d(proj, stride, padding), then `flatten(2).transpose(1,
/// 2)`: x (B, 3, T, H, W) -> tokens (B, T'·H'·W', D), t-major. `proj` is `proj.weight` (D, C,
/// kT, kH, kW) and `proj.bias` (D).
pub fn patch_embed(
    proj: &(Tensor, Tensor),
    stride: [usize; 3],
    padding: [usize; 3],
    x: &Tensor,
) -> Result<Tensor> {
    let y = x.try_conv3d(&proj.0, Some(&proj.1), stride, padding, 1)?; // (B, D, T', H', W')
    let (b, d) = (y.dim(0), y.dim(1));
    let l = y.numel() / (b * d);
    y.try_reshape(&[b, d, l])?.try_permute(&[0, 2, 1]) // (B, T'·H'·W', D)
}
