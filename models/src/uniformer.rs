//! UniFormer: Unified Transformer for Efficient Spatiotemporal Representation Learning —
//! Li, Wang, Song, Gao, Liu, Zhang, Qiao (ICLR 2022), arXiv:2201.04676.
//!
//! Implemented: the video UniFormer of the SlowFast codebase, UniFormer-S and -B (paper Table 1;
//! K400 16×224², seed-models.md §5) and a tiny config for the synthetic set. Four stages:
//! patch embeddings (Conv3d + LayerNorm over channels), CBlocks with *local* MHRA (stages 1–2:
//! DPE, BatchNorm, a depthwise 5³ conv between two 1×1×1 convs, a conv MLP), SABlocks with
//! *global* MHRA (stages 3–4: DPE, LayerNorm, multi-head self-attention, MLP), a final
//! BatchNorm3d, a mean over T·H·W and a linear head.
//! Reference implementation: Sense-X/UniFormer @52a0415,
//! `video_classification/slowfast/models/uniformer.py` (class `Uniformer`); parameter and buffer
//! names are its state-dict keys (flat, no prefix).
//!
//! Deviations: `forward` takes the clip (B, 3, T, H, W) itself; the official forward takes a
//! SlowFast list and uses `x[0]`. Conv weights and biases are drawn from a normal with the std of
//! PyTorch's default (Kaiming-uniform a=√5: std 1/√(3·fan_in)) instead of that uniform; Linear
//! and LayerNorm follow the official `_init_weights`. Dropout rates are 0 in the released
//! configs and are not applied; drop path (stochastic depth, linspace over all blocks as the
//! official `dpr`) goes through [`residual`] (`blocks::residual`).
//! `SplitSABlock` and the `std` patch embedding are off in every released config and not built
//! by [`UniFormer`] (the `std` embedding exists as [`PatchEmbed::plain`] for parity).
//! `qkv_bias` and `qk_scale` (`UNIFORMER.QKV_BIAS`, `UNIFORMER.QKV_SCALE`) are [`Config`] fields.

use tubelet::nn::{Init, LayerNorm, Linear};
use tubelet::{Error, Result, Tensor};

use crate::blocks::BatchNorm;
use crate::TINY_CLASSES as NUM_CLASSES;
use crate::{BuildOptions, InputLayout, Preset, VideoModel};

/// UniFormer configuration (UNI `config/defaults.py` + `exp/*/config.yaml`).
#[derive(Clone, Debug)]
pub struct Config {
    /// Input clip: frames, height, width.
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    /// Channels of the four stages (`UNIFORMER.EMBED_DIM`).
    pub embed_dim: [usize; 4],
    /// Blocks per stage (`UNIFORMER.DEPTH`).
    pub depth: [usize; 4],
    /// Channels per attention head (`UNIFORMER.HEAD_DIM`): heads = embed_dim / head_dim.
    pub head_dim: usize,
    /// `UNIFORMER.MLP_RATIO`: each block's MLP has int(C·mlp_ratio) hidden units (4 in every
    /// config).
    pub mlp_ratio: f64,
    pub qkv_bias: bool,
    /// `UNIFORMER.QKV_SCALE` (the blocks' `qk_scale`): the attention logits' scale; `None` is
    /// head_dim^−0.5 (`qk_scale or head_dim ** -0.5`).
    pub qk_scale: Option<f32>,
    /// Stochastic depth, linearly increasing over all blocks (`UNIFORMER.DROP_DEPTH_RATE`).
    pub drop_path_rate: f32,
    pub num_classes: usize,
}

/// `int(dim * mlp_ratio)`: the official MLP width (Python's int truncates).
pub fn mlp_hidden(dim: usize, mlp_ratio: f64) -> usize {
    (dim as f64 * mlp_ratio) as usize
}

impl Config {
    /// UniFormer-S, K400 16×224² (UNI `exp/uniformer_s16x4_k400`): 64/128/320/512, depth
    /// 3/4/8/3, head_dim 64, drop path 0.1 (run.sh).
    pub fn uniformer_s() -> Config {
        Config {
            frames: 16,
            height: 224,
            width: 224,
            embed_dim: [64, 128, 320, 512],
            depth: [3, 4, 8, 3],
            head_dim: 64,
            mlp_ratio: 4.0,
            qkv_bias: true,
            qk_scale: None,
            drop_path_rate: 0.1,
            num_classes: 400,
        }
    }

    /// UniFormer-B, K400 16×224² (UNI `exp/uniformer_b16x4_k400`): depth 5/8/20/7, drop path 0.3.
    pub fn uniformer_b() -> Config {
        Config {
            depth: [5, 8, 20, 7],
            drop_path_rate: 0.3,
            ..Config::uniformer_s()
        }
    }

    /// A tiny UniFormer for the synthetic set: 8 frames of 32², channels 16/32/48/64, one block
    /// per stage, head_dim 16 (stages 3–4 attend over 4·2·2 and 4·1·1 tokens).
    pub fn tiny(num_classes: usize) -> Config {
        Config {
            frames: 8,
            height: 32,
            width: 32,
            embed_dim: [16, 32, 48, 64],
            depth: [1, 1, 1, 1],
            head_dim: 16,
            mlp_ratio: 4.0,
            qkv_bias: true,
            qk_scale: None,
            drop_path_rate: 0.0,
            num_classes,
        }
    }

    /// Token grid (T, H, W) after each patch embedding.
    pub fn grids(&self) -> [[usize; 3]; 4] {
        let t = (self.frames + 2 - 3) / 2 + 1; // k 3, s 2, p 1
        let (h, w) = (self.height / 4, self.width / 4);
        [
            [t, h, w],
            [t, h / 2, w / 2],
            [t, h / 4, w / 4],
            [t, h / 8, w / 8],
        ]
    }

    /// Parameters, counted from the config (the official model's, with the head).
    pub fn num_params(&self) -> usize {
        let e = self.embed_dim;
        let m = |c: usize| mlp_hidden(c, self.mlp_ratio);
        let lin = |i: usize, o: usize| i * o + o;
        let dpe = |c: usize| 27 * c + c;
        let cblock = |c: usize| {
            dpe(c) + 2 * lin(c, c) + 125 * c + c + 2 * 2 * c + lin(c, m(c)) + lin(m(c), c)
        };
        let sablock = |c: usize| {
            let qkv = if self.qkv_bias {
                lin(c, 3 * c)
            } else {
                3 * c * c
            };
            dpe(c) + 2 * 2 * c + qkv + lin(c, c) + lin(c, m(c)) + lin(m(c), c)
        };
        let embed = 3 * 48 * e[0]
            + e[0]
            + 2 * e[0]
            + (1..4)
                .map(|k| 4 * e[k - 1] * e[k] + e[k] + 2 * e[k])
                .sum::<usize>();
        let blocks = self.depth[0] * cblock(e[0])
            + self.depth[1] * cblock(e[1])
            + self.depth[2] * sablock(e[2])
            + self.depth[3] * sablock(e[3]);
        embed + blocks + 2 * e[3] + lin(e[3], self.num_classes)
    }

    /// Multiply-accumulates of one clip: convs, linears and the two attention matmuls.
    pub fn macs(&self) -> f64 {
        let e = self.embed_dim.map(|c| c as f64);
        // The MLP's two layers: 2·C·int(C·mlp_ratio) per token.
        let m = |c: f64| 2.0 * c * mlp_hidden(c as usize, self.mlp_ratio) as f64;
        let n = self.grids().map(|[t, h, w]| (t * h * w) as f64);
        let cblock = |n: f64, c: f64| n * (27.0 * c + 2.0 * c * c + 125.0 * c + m(c));
        let sablock = |n: f64, c: f64| n * (27.0 * c + 4.0 * c * c + m(c)) + 2.0 * n * n * c;
        let embed =
            n[0] * e[0] * 3.0 * 48.0 + (1..4).map(|k| n[k] * e[k] * e[k - 1] * 4.0).sum::<f64>();
        let d = self.depth.map(|v| v as f64);
        embed
            + d[0] * cblock(n[0], e[0])
            + d[1] * cblock(n[1], e[1])
            + d[2] * sablock(n[2], e[2])
            + d[3] * sablock(n[3], e[3])
            + e[3] * self.num_classes as f64
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Config(format!("UniFormer config: {what}")));
        if self.frames == 0
            || !self.height.is_multiple_of(32)
            || !self.width.is_multiple_of(32)
            || self.height == 0
            || self.width == 0
        {
            return bad(format!(
                "clip {}×{}×{}: frames must be ≥ 1 and height, width positive multiples of 32 (patch 4, then three 2× merges)",
                self.frames, self.height, self.width
            ));
        }
        if self.head_dim == 0
            || self
                .embed_dim
                .iter()
                .any(|&c| c == 0 || c % self.head_dim != 0)
        {
            return bad(format!(
                "embed_dim {:?} must be positive multiples of head_dim {}",
                self.embed_dim, self.head_dim
            ));
        }
        if !self.mlp_ratio.is_finite()
            || mlp_hidden(self.embed_dim[0], self.mlp_ratio) == 0
            || self.num_classes == 0
        {
            return bad(format!(
                "mlp_ratio {} (an MLP of int({} × ratio) ≥ 1 units in stage 1) and classes {} must be positive",
                self.mlp_ratio, self.embed_dim[0], self.num_classes
            ));
        }
        if !(0.0..1.0).contains(&self.drop_path_rate) {
            return bad(format!(
                "drop_path_rate {} must be in [0, 1)",
                self.drop_path_rate
            ));
        }
        Ok(())
    }
}

pub use crate::blocks::residual;

/// LayerNorm over the channels of x (B, C, T, H, W), the official flatten → LN → permute back,
/// as one strided kernel (engine/src/ops/layer_norm_channels.rs): no permuted copies.
pub fn layer_norm_channels(x: &Tensor, norm: &LayerNorm) -> Result<Tensor> {
    x.try_layer_norm_channels(&norm.weight, &norm.bias, norm.eps)
}

/// A Conv3d's weight and bias, PyTorch default init (see the deviations above).
#[derive(Clone)]
pub struct Conv {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Conv {
    /// weight (COUT, CIN/groups, KT, KH, KW), bias (COUT).
    fn new(init: &mut Init, cout: usize, cin_per_group: usize, k: [usize; 3]) -> Result<Conv> {
        let fan_in = cin_per_group * k.iter().product::<usize>();
        let std = 1.0 / (3.0 * fan_in as f32).sqrt();
        Ok(Conv {
            weight: init.normal(&[cout, cin_per_group, k[0], k[1], k[2]], std)?,
            bias: init.normal(&[cout], std)?,
        })
    }

    /// Dense Conv3d.
    fn dense(&self, x: &Tensor, stride: [usize; 3], padding: [usize; 3]) -> Result<Tensor> {
        x.try_conv3d(&self.weight, Some(&self.bias), stride, padding, 1)
    }

    /// Depthwise Conv3d (groups = C), stride 1, "same" padding.
    fn depthwise(&self, x: &Tensor, padding: usize) -> Result<Tensor> {
        x.try_depthwise_conv3d(&self.weight, Some(&self.bias), [1, 1, 1], [padding; 3])
    }

    fn params(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        out.push((format!("{prefix}.weight"), self.weight.clone()));
        out.push((format!("{prefix}.bias"), self.bias.clone()));
    }
}

/// `SpeicalPatchEmbed` (stage 1: Conv3d k(3,4,4) s(2,4,4) p(1,0,0), halving T) and `PatchEmbed`
/// (stages 2–4: k = s = (1,2,2)), each followed by LayerNorm(C, eps 1e-5) over channels.
pub struct PatchEmbed {
    pub proj: Conv,
    pub norm: LayerNorm,
    pub stride: [usize; 3],
    pub padding: [usize; 3],
}

impl PatchEmbed {
    /// `SpeicalPatchEmbed(patch_size = p, in_chans = cin, embed_dim = cout)` (official
    /// spelling): `conv_3xnxn`, Conv3d k (3, p, p), s (2, p, p), padding (1, 0, 0).
    pub fn special(init: &mut Init, cin: usize, cout: usize, p: usize) -> Result<PatchEmbed> {
        PatchEmbed::with_conv(init, cin, cout, [3, p, p], [2, p, p], [1, 0, 0])
    }

    /// `PatchEmbed(patch_size = p, in_chans = cin, embed_dim = cout, std)`: `conv_1xnxn`, k = s
    /// = (1, p, p); with `std`, `conv_3xnxn_std`, k (3, p, p), s (1, p, p), padding (1, 0, 0).
    pub fn plain(
        init: &mut Init,
        cin: usize,
        cout: usize,
        p: usize,
        std: bool,
    ) -> Result<PatchEmbed> {
        if std {
            PatchEmbed::with_conv(init, cin, cout, [3, p, p], [1, p, p], [1, 0, 0])
        } else {
            PatchEmbed::with_conv(init, cin, cout, [1, p, p], [1, p, p], [0, 0, 0])
        }
    }

    fn with_conv(
        init: &mut Init,
        cin: usize,
        cout: usize,
        k: [usize; 3],
        stride: [usize; 3],
        padding: [usize; 3],
    ) -> Result<PatchEmbed> {
        Ok(PatchEmbed {
            proj: Conv::new(init, cout, cin, k)?,
            norm: LayerNorm::torch(init, cout, 1e-5)?,
            stride,
            padding,
        })
    }

    /// (B, CIN, T, H, W) -> (B, COUT, T', H', W')
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        layer_norm_channels(&self.proj.dense(x, self.stride, self.padding)?, &self.norm)
    }

    /// Parameters under `prefix` (`patch_embed{1..4}` in the model), official names.
    pub fn params(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        self.proj.params(&format!("{prefix}.proj"), out);
        self.norm.params(&format!("{prefix}.norm"), out);
    }
}

/// CBlock (paper §3.2, local MHRA): on x (B, C, T, H, W),
///   x = x + DPE(x)                                  (depthwise 3³, the dynamic position embedding)
///   x = x + conv2(attn(conv1(BN(x))))               (1×1×1, depthwise 5³ "affinity", 1×1×1)
///   x = x + fc2(GELU(fc1(BN(x))))                   (CMlp: 1×1×1 convs C → 4C → C)
#[derive(Clone)]
pub struct CBlock {
    pub pos_embed: Conv,
    pub norm1: BatchNorm,
    pub conv1: Conv,
    pub attn: Conv,
    pub conv2: Conv,
    pub norm2: BatchNorm,
    pub fc1: Conv,
    pub fc2: Conv,
    pub drop_path: f32,
}

impl CBlock {
    /// `CBlock(dim = c, mlp_ratio)`: the CMlp has int(c·mlp_ratio) hidden channels.
    pub fn new(init: &mut Init, c: usize, mlp_ratio: f64, drop_path: f32) -> Result<CBlock> {
        let m = mlp_hidden(c, mlp_ratio);
        Ok(CBlock {
            pos_embed: Conv::new(init, c, 1, [3, 3, 3])?,
            norm1: BatchNorm::new(init, c)?,
            conv1: Conv::new(init, c, c, [1, 1, 1])?,
            conv2: Conv::new(init, c, c, [1, 1, 1])?,
            attn: Conv::new(init, c, 1, [5, 5, 5])?,
            norm2: BatchNorm::new(init, c)?,
            fc1: Conv::new(init, m, c, [1, 1, 1])?,
            fc2: Conv::new(init, c, m, [1, 1, 1])?,
            drop_path,
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (one, zero) = ([1, 1, 1], [0, 0, 0]);
        let x = x.try_add(&self.pos_embed.depthwise(x, 1)?)?;
        let a = self
            .conv1
            .dense(&self.norm1.forward(&x, train)?, one, zero)?;
        let a = self.conv2.dense(&self.attn.depthwise(&a, 2)?, one, zero)?;
        let x = residual(&x, &a, self.drop_path, train)?;
        let h = self
            .fc1
            .dense(&self.norm2.forward(&x, train)?, one, zero)?
            .try_gelu()?;
        residual(&x, &self.fc2.dense(&h, one, zero)?, self.drop_path, train)
    }

    pub fn params(&self, p: &str, out: &mut Vec<(String, Tensor)>) {
        self.pos_embed.params(&format!("{p}.pos_embed"), out);
        self.norm1.params(&format!("{p}.norm1"), out);
        self.conv1.params(&format!("{p}.conv1"), out);
        self.conv2.params(&format!("{p}.conv2"), out);
        self.attn.params(&format!("{p}.attn"), out);
        self.norm2.params(&format!("{p}.norm2"), out);
        self.fc1.params(&format!("{p}.mlp.fc1"), out);
        self.fc2.params(&format!("{p}.mlp.fc2"), out);
    }

    pub fn buffers(&self, p: &str, out: &mut Vec<(String, Tensor)>) {
        self.norm1.buffers(&format!("{p}.norm1"), out);
        self.norm2.buffers(&format!("{p}.norm2"), out);
    }
}

/// SABlock (paper §3.2, global MHRA): x = x + DPE(x); then over the N = T·H·W tokens
///   x = x + proj(MHSA(LN(x))),  x = x + fc2(GELU(fc1(LN(x))))   (LN eps 1e-6)
#[derive(Clone)]
pub struct SABlock {
    pub pos_embed: Conv,
    pub norm1: LayerNorm,
    pub qkv: Linear,
    pub proj: Linear,
    pub norm2: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
    pub heads: usize,
    pub drop_path: f32,
    /// `qk_scale`; `None` is head_dim^−0.5.
    pub qk_scale: Option<f32>,
}

impl SABlock {
    /// `norm_eps`: the LayerNorms' eps (the block's own default `nn.LayerNorm` is 1e-5; the
    /// `Uniformer` model passes `partial(nn.LayerNorm, eps=1e-6)`).
    /// `qkv_bias`, `qk_scale` as the official `Attention`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        init: &mut Init,
        c: usize,
        heads: usize,
        mlp_ratio: f64,
        qkv_bias: bool,
        qk_scale: Option<f32>,
        drop_path: f32,
        norm_eps: f32,
    ) -> Result<SABlock> {
        let m = mlp_hidden(c, mlp_ratio);
        Ok(SABlock {
            pos_embed: Conv::new(init, c, 1, [3, 3, 3])?,
            norm1: LayerNorm::torch(init, c, norm_eps)?,
            qkv: Linear::new(init, c, 3 * c, qkv_bias)?,
            proj: Linear::new(init, c, c, true)?,
            norm2: LayerNorm::torch(init, c, norm_eps)?,
            fc1: Linear::new(init, c, m, true)?,
            fc2: Linear::new(init, m, c, true)?,
            heads,
            drop_path,
            qk_scale,
        })
    }

    /// (B, C, T, H, W) -> (B, C, T, H, W)
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let s = x.shape().to_vec();
        let (b, c) = (s[0], s[1]);
        let x = x.try_add(&self.pos_embed.depthwise(x, 1)?)?;
        let x = x
            .try_reshape(&[b, c, s[2] * s[3] * s[4]])?
            .try_transpose(1, 2)?; // (B, N, C)
                                   // qkv (B, N, 3C) ordered [3][heads][d], as the official reshape(B, N, 3, heads, d) reads it
        let qkv = self.qkv.forward(&self.norm1.forward(&x)?)?;
        let scale = self
            .qk_scale
            .unwrap_or(1.0 / ((c / self.heads) as f32).sqrt()); // qk_scale or head_dim^-0.5, on q·kᵀ
        let a = self
            .proj
            .forward(&crate::blocks::attention(&qkv, self.heads, scale)?)?;
        let x = residual(&x, &a, self.drop_path, train)?;
        let h = self.fc1.forward(&self.norm2.forward(&x)?)?.try_gelu()?;
        let x = residual(&x, &self.fc2.forward(&h)?, self.drop_path, train)?;
        x.try_transpose(1, 2)?.try_reshape(&s) // (B, C, T, H, W)
    }

    pub fn params(&self, p: &str, out: &mut Vec<(String, Tensor)>) {
        self.pos_embed.params(&format!("{p}.pos_embed"), out);
        self.norm1.params(&format!("{p}.norm1"), out);
        self.qkv.params(&format!("{p}.attn.qkv"), out);
        self.proj.params(&format!("{p}.attn.proj"), out);
        self.norm2.params(&format!("{p}.norm2"), out);
        self.fc1.params(&format!("{p}.mlp.fc1"), out);
        self.fc2.params(&format!("{p}.mlp.fc2"), out);
    }
}

/// UniFormer video classifier.
pub struct UniFormer {
    pub config: Config,
    /// `patch_embed1` .. `patch_embed4`.
    pub patch_embed: [PatchEmbed; 4],
    pub blocks1: Vec<CBlock>,
    pub blocks2: Vec<CBlock>,
    pub blocks3: Vec<SABlock>,
    pub blocks4: Vec<SABlock>,
    /// Final BatchNorm3d (not a LayerNorm).
    pub norm: BatchNorm,
    pub head: Linear,
}

impl UniFormer {
    pub fn new(config: Config, seed: u64) -> Result<UniFormer> {
        config.validate()?;
        let mut init = Init::new(seed);
        let e = config.embed_dim;
        let patch_embed = [
            PatchEmbed::special(&mut init, 3, e[0], 4)?,
            PatchEmbed::plain(&mut init, e[0], e[1], 2, false)?,
            PatchEmbed::plain(&mut init, e[1], e[2], 2, false)?,
            PatchEmbed::plain(&mut init, e[2], e[3], 2, false)?,
        ];
        // Stochastic depth decay rule: linspace(0, rate, Σ depth) over all blocks in order.
        let total: usize = config.depth.iter().sum();
        let dpr = |i: usize| {
            if total > 1 {
                config.drop_path_rate * i as f32 / (total - 1) as f32
            } else {
                0.0
            }
        };
        let off = [
            0,
            config.depth[0],
            config.depth[0] + config.depth[1],
            config.depth[0] + config.depth[1] + config.depth[2],
        ];
        let heads = e.map(|c| c / config.head_dim);
        let m = config.mlp_ratio;
        let cblocks = |init: &mut Init, s: usize| -> Result<Vec<CBlock>> {
            (0..config.depth[s])
                .map(|i| CBlock::new(init, e[s], m, dpr(off[s] + i)))
                .collect()
        };
        let blocks1 = cblocks(&mut init, 0)?;
        let blocks2 = cblocks(&mut init, 1)?;
        let sablocks = |init: &mut Init, s: usize| -> Result<Vec<SABlock>> {
            (0..config.depth[s])
                .map(|i| {
                    SABlock::new(
                        init,
                        e[s],
                        heads[s],
                        m,
                        config.qkv_bias,
                        config.qk_scale,
                        dpr(off[s] + i),
                        1e-6,
                    )
                })
                .collect()
        };
        let blocks3 = sablocks(&mut init, 2)?;
        let blocks4 = sablocks(&mut init, 3)?;
        let norm = BatchNorm::new(&mut init, e[3])?;
        let head = Linear::new(&mut init, e[3], config.num_classes, true)?;
        Ok(UniFormer {
            config,
            patch_embed,
            blocks1,
            blocks2,
            blocks3,
            blocks4,
            norm,
            head,
        })
    }

    /// x (B, 3, T, H, W) -> features (B, C4, T', H/32, W/32) after the final BatchNorm3d.
    pub fn forward_features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = self.patch_embed[0].forward(x)?; // (B, C1, T/2, H/4, W/4); pos_drop p = 0
        x = crate::blocks::stage(&x, &self.blocks1, move |blk, _, x| blk.forward(x, train))?; // checkpoint segments
        x = self.patch_embed[1].forward(&x)?; // (B, C2, T/2, H/8, W/8)
        x = crate::blocks::stage(&x, &self.blocks2, move |blk, _, x| blk.forward(x, train))?; // checkpoint segments
        x = self.patch_embed[2].forward(&x)?; // (B, C3, T/2, H/16, W/16)
        x = crate::blocks::stage(&x, &self.blocks3, move |blk, _, x| blk.forward(x, train))?; // checkpoint segments
        x = self.patch_embed[3].forward(&x)?; // (B, C4, T/2, H/32, W/32)
        x = crate::blocks::stage(&x, &self.blocks4, move |blk, _, x| blk.forward(x, train))?; // checkpoint segments
        self.norm.forward(&x, train)
    }

    /// x (B, 3, T, H, W) -> logits (B, classes): `flatten(2).mean(-1)`, then the head.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = &self.config;
        if x.rank() != 5 || x.shape()[1..] != [3, c.frames, c.height, c.width] || x.dim(0) == 0 {
            return Err(Error::Shape(format!(
                "UniFormer: input of shape {:?}, expected (B, 3, {}, {}, {}) with B ≥ 1",
                x.shape(),
                c.frames,
                c.height,
                c.width
            )));
        }
        let f = self.forward_features(x, train)?;
        self.head.forward(&f.try_mean(&[2, 3, 4], false)?) // (B, C4) -> (B, classes)
    }

    pub fn named_params(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (k, pe) in self.patch_embed.iter().enumerate() {
            pe.params(&format!("patch_embed{}", k + 1), &mut out);
        }
        for (j, b) in self.blocks1.iter().enumerate() {
            b.params(&format!("blocks1.{j}"), &mut out);
        }
        for (j, b) in self.blocks2.iter().enumerate() {
            b.params(&format!("blocks2.{j}"), &mut out);
        }
        for (j, b) in self.blocks3.iter().enumerate() {
            b.params(&format!("blocks3.{j}"), &mut out);
        }
        for (j, b) in self.blocks4.iter().enumerate() {
            b.params(&format!("blocks4.{j}"), &mut out);
        }
        self.norm.params("norm", &mut out);
        self.head.params("head", &mut out);
        out
    }

    pub fn named_buffers(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (j, b) in self.blocks1.iter().enumerate() {
            b.buffers(&format!("blocks1.{j}"), &mut out);
        }
        for (j, b) in self.blocks2.iter().enumerate() {
            b.buffers(&format!("blocks2.{j}"), &mut out);
        }
        self.norm.buffers("norm", &mut out);
        out
    }
}

impl VideoModel for UniFormer {
    fn clip(&self) -> [usize; 3] {
        [self.config.frames, self.config.height, self.config.width]
    }

    fn num_classes(&self) -> usize {
        self.config.num_classes
    }

    fn input_layout(&self) -> InputLayout {
        InputLayout::Bcthw
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        UniFormer::forward(self, x, train)
    }

    fn named_params(&self) -> Vec<(String, Tensor)> {
        UniFormer::named_params(self)
    }

    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        UniFormer::named_buffers(self)
    }

    fn rng_counters(&self) -> Vec<(String, u64)> {
        vec![("drop_path_calls".into(), crate::blocks::drop_path_calls())]
    }

    fn set_rng_counters(&self, counters: &[(String, u64)]) -> Result<()> {
        crate::set_counters(
            "UniFormer",
            counters,
            &[("drop_path_calls", &crate::blocks::set_drop_path_calls)],
        )
    }
}

/// A preset's config at the options' class count, clip and drop-path rate (checked by the
/// model's own `Config::validate` when built).
fn configure(mut c: Config, o: &BuildOptions) -> Result<Config> {
    c.num_classes = o.classes(c.num_classes)?;
    let [t, h, w] = o.clip_or([c.frames, c.height, c.width])?;
    (c.frames, c.height, c.width) = (t, h, w);
    if let Some(r) = o.drop_path {
        c.drop_path_rate = r;
    }
    Ok(c)
}

fn preset(
    name: &'static str,
    description: &'static str,
    config: Config,
    tiny: bool,
    build: fn(&BuildOptions) -> Result<Box<dyn VideoModel>>,
) -> Preset {
    Preset {
        name,
        description,
        params: config.num_params(),
        gmacs: config.macs() / 1e9,
        clip: [config.frames, config.height, config.width],
        tiny,
        num_classes: config.num_classes,
        build,
    }
}

/// UniFormer presets.
pub fn presets() -> Vec<Preset> {
    vec![
        preset(
            "uniformer-s",
            "UniFormer-S 16x224, K400 (UNI exp/uniformer_s16x4_k400)",
            Config::uniformer_s(),
            false,
            |o| {
                Ok(Box::new(UniFormer::new(
                    configure(Config::uniformer_s(), o)?,
                    o.seed,
                )?))
            },
        ),
        preset(
            "uniformer-b",
            "UniFormer-B 16x224, K400 (UNI exp/uniformer_b16x4_k400)",
            Config::uniformer_b(),
            false,
            |o| {
                Ok(Box::new(UniFormer::new(
                    configure(Config::uniformer_b(), o)?,
                    o.seed,
                )?))
            },
        ),
        preset(
            "uniformer-tiny",
            "UniFormer, tiny: 8x32x32, channels 16/32/48/64, one block per stage",
            Config::tiny(NUM_CLASSES),
            true,
            |o| {
                Ok(Box::new(UniFormer::new(
                    configure(Config::tiny(NUM_CLASSES), o)?,
                    o.seed,
                )?))
            },
        ),
    ]
}
