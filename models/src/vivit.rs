//! ViViT: A Video Vision Transformer — Arnab, Dehghani, Heigold, Sun, Lučić, Schmid (ICCV 2021),
//! arXiv:2103.15691.
//!
//! Implemented: Model 1, spatio-temporal attention ("joint space-time"): tubelet embedding, a
//! cls token, a learned position embedding and one ViT encoder over all tokens (§3.3, Fig. 2).
//! Reference implementation: google-research/scenic, `scenic/projects/vivit/model.py` (Flax).
//! Its semantics are kept: tanh-approximate GELU (`flax.linen.gelu`), LayerNorm eps 1e-6,
//! channels-last input (B, T, H, W, 3), and the parameter tree with Flax's names and layouts
//! (Dense kernels (in, out); `query/kernel` (D, heads, d_head)), joined by '/'.
//!
//! Deviations: none in the computation. Dropout and stochastic depth are 0 in the released
//! configs and are not applied here.

use tubelet::nn::{Dense, Init, LayerNorm};
use tubelet::{Error, Result, Tensor};

use crate::synthetic::NUM_CLASSES;
use crate::{InputLayout, Preset, VideoModel};

/// Model 1 configuration (paper Table 1 notation: tubelet t×h×w, hidden D, L layers).
#[derive(Clone, Debug)]
pub struct Config {
    /// Input clip: frames, height, width.
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    /// Tubelet (ft, fh, fw): kernel = stride of the 3D-conv embedding.
    pub tubelet: [usize; 3],
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub mlp_dim: usize,
    pub num_classes: usize,
}

impl Config {
    /// ViViT-B/16×2, Model 1, Kinetics-400 (scenic `configs/kinetics400/vivit_base_k400.py`):
    /// 32 frames at 224², tubelet 2×16×16, D 768, 12 layers, 12 heads, MLP 3072.
    pub fn vivit_b_16x2() -> Config {
        Config {
            frames: 32,
            height: 224,
            width: 224,
            tubelet: [2, 16, 16],
            hidden: 768,
            layers: 12,
            heads: 12,
            mlp_dim: 3072,
            num_classes: 400,
        }
    }

    /// A tiny Model 1 for the synthetic moving-shapes set (trains in minutes on lavapipe):
    /// 8 frames at 32², tubelet 2×8×8 (64 tokens + cls), D 64, 4 layers, 4 heads, MLP 128.
    pub fn tiny(num_classes: usize) -> Config {
        Config {
            frames: 8,
            height: 32,
            width: 32,
            tubelet: [2, 8, 8],
            hidden: 64,
            layers: 4,
            heads: 4,
            mlp_dim: 128,
            num_classes,
        }
    }

    /// Tokens per clip without the cls token.
    pub fn num_patches(&self) -> usize {
        let [ft, fh, fw] = self.tubelet;
        (self.frames / ft) * (self.height / fh) * (self.width / fw)
    }

    /// Parameters, counted from the config (the official model's, with the head).
    pub fn num_params(&self) -> usize {
        let [ft, fh, fw] = self.tubelet;
        let d = self.hidden;
        let embed = ft * fh * fw * 3 * d + d;
        let tokens = (self.num_patches() + 1) * d + d; // pos_embedding + cls
        let block = 2 * 2 * d + 4 * (d * d + d) + (d * self.mlp_dim + self.mlp_dim) + (self.mlp_dim * d + d);
        embed + tokens + self.layers * block + 2 * d + d * self.num_classes + self.num_classes
    }

    /// Multiply-accumulates of one clip (conv, linear and the two attention matmuls: the
    /// papers' "FLOPs" convention).
    pub fn macs(&self) -> f64 {
        let [ft, fh, fw] = self.tubelet;
        let (n, d, m) = (self.num_patches() as f64, self.hidden as f64, self.mlp_dim as f64);
        let n1 = n + 1.0;
        let embed = n * (ft * fh * fw * 3) as f64 * d;
        let block = n1 * d * 3.0 * d + 2.0 * n1 * n1 * d + n1 * d * d + 2.0 * n1 * d * m;
        embed + self.layers as f64 * block + d * self.num_classes as f64
    }

    pub fn validate(&self) -> Result<()> {
        let [ft, fh, fw] = self.tubelet;
        let bad = |what: String| Err(Error::Config(format!("ViViT config: {what}")));
        if ft == 0 || fh == 0 || fw == 0 || self.frames % ft != 0 || self.height % fh != 0 || self.width % fw != 0 {
            return bad(format!(
                "clip {}×{}×{} is not a multiple of the tubelet {ft}×{fh}×{fw}",
                self.frames, self.height, self.width
            ));
        }
        if self.heads == 0 || self.hidden % self.heads != 0 {
            return bad(format!("hidden {} is not divisible by heads {}", self.hidden, self.heads));
        }
        if self.layers == 0 || self.mlp_dim == 0 || self.num_classes == 0 {
            return bad(format!("layers {}, mlp_dim {}, classes {} must be positive", self.layers, self.mlp_dim, self.num_classes));
        }
        Ok(())
    }
}

/// scenic `MultiHeadDotProductAttention` (flax.linen), q/k/v/out as DenseGeneral.
pub struct MultiHeadDotProductAttention {
    pub query: (Tensor, Tensor), // kernel (D, H, d), bias (H, d)
    pub key: (Tensor, Tensor),
    pub value: (Tensor, Tensor),
    pub out: (Tensor, Tensor), // kernel (H, d, D), bias (D)
    pub heads: usize,
}

impl MultiHeadDotProductAttention {
    fn new(init: &mut Init, d: usize, heads: usize) -> Result<Self> {
        let hd = d / heads;
        let mut qkv = || -> Result<(Tensor, Tensor)> {
            Ok((init.xavier_uniform(&[d, heads, hd], d, d)?, init.constant(&[heads, hd], 0.0)?))
        };
        let (query, key, value) = (qkv()?, qkv()?, qkv()?);
        let out = (init.xavier_uniform(&[heads, hd, d], d, d)?, init.constant(&[d], 0.0)?);
        Ok(Self { query, key, value, out, heads })
    }

    /// x (B, N, D) -> (B, N, D)
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let d = x.dim(-1);
        let hd = d / self.heads;
        // One matmul for q, k and v: kernels (D, D) side by side -> (D, 3D), packed [3][H][d].
        let w = Tensor::try_cat(
            &[&self.query.0.try_reshape(&[d, d])?, &self.key.0.try_reshape(&[d, d])?, &self.value.0.try_reshape(&[d, d])?],
            1,
        )?;
        let b = Tensor::try_cat(
            &[&self.query.1.try_reshape(&[d])?, &self.key.1.try_reshape(&[d])?, &self.value.1.try_reshape(&[d])?],
            0,
        )?;
        let qkv = x.try_matmul(&w)?.try_add(&b)?; // (B, N, 3D)
        // Flax scales the query by 1/√d before the dot product.
        let o = crate::blocks::attention(&qkv, self.heads, 1.0 / (hd as f32).sqrt())?; // (B, N, D)
        o.try_matmul(&self.out.0.try_reshape(&[d, d])?)?.try_add(&self.out.1)
    }

    fn params(&self, p: &str, out: &mut Vec<(String, Tensor)>) {
        for (name, (k, b)) in [("query", &self.query), ("key", &self.key), ("value", &self.value), ("out", &self.out)] {
            out.push((format!("{p}/{name}/kernel"), k.clone()));
            out.push((format!("{p}/{name}/bias"), b.clone()));
        }
    }
}

/// scenic `MlpBlock`: Dense(D→M), GELU (tanh), Dense(M→D).
pub struct MlpBlock {
    pub dense_0: Dense,
    pub dense_1: Dense,
}

impl MlpBlock {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.dense_1.forward(&self.dense_0.forward(x)?.try_gelu_tanh()?)
    }
}

/// scenic `Encoder1DBlock`: x + MHDPA(LN(x)); x + MLP(LN(x)).
pub struct EncoderBlock {
    pub layer_norm_0: LayerNorm,
    pub attention: MultiHeadDotProductAttention,
    pub layer_norm_1: LayerNorm,
    pub mlp: MlpBlock,
}

impl EncoderBlock {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.try_add(&self.attention.forward(&self.layer_norm_0.forward(x)?)?)?;
        x.try_add(&self.mlp.forward(&self.layer_norm_1.forward(&x)?)?)
    }
}

/// ViViT Model 1 classifier.
pub struct ViViT {
    pub config: Config,
    /// `embedding/kernel` (ft, fh, fw, 3, D) and `embedding/bias` (D): the tubelet Conv3d.
    pub embedding: (Tensor, Tensor),
    /// `cls` (1, 1, D), zero-initialised.
    pub cls: Tensor,
    /// `Transformer/posembed_input/pos_embedding` (1, N + 1, D).
    pub pos_embedding: Tensor,
    pub blocks: Vec<EncoderBlock>,
    pub encoder_norm: LayerNorm,
    /// `output_projection`, zero-initialised as in scenic.
    pub output_projection: Dense,
}

impl ViViT {
    pub fn new(config: Config, seed: u64) -> Result<ViViT> {
        config.validate()?;
        let mut init = Init::new(seed);
        let d = config.hidden;
        let [ft, fh, fw] = config.tubelet;
        let fan_in = ft * fh * fw * 3;
        let embedding = (init.xavier_uniform(&[ft, fh, fw, 3, d], fan_in, d)?, init.constant(&[d], 0.0)?);
        let cls = init.constant(&[1, 1, d], 0.0)?;
        let pos_embedding = init.normal(&[1, config.num_patches() + 1, d], 0.02)?;
        let blocks = (0..config.layers)
            .map(|_| {
                Ok(EncoderBlock {
                    layer_norm_0: LayerNorm::flax(&mut init, d)?,
                    attention: MultiHeadDotProductAttention::new(&mut init, d, config.heads)?,
                    layer_norm_1: LayerNorm::flax(&mut init, d)?,
                    mlp: MlpBlock { dense_0: Dense::new(&mut init, d, config.mlp_dim)?, dense_1: Dense::new(&mut init, config.mlp_dim, d)? },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let encoder_norm = LayerNorm::flax(&mut init, d)?;
        let output_projection = Dense::zeros(&mut init, d, config.num_classes)?;
        Ok(ViViT { config, embedding, cls, pos_embedding, blocks, encoder_norm, output_projection })
    }

    /// Tubelet embedding: (B, T, H, W, 3) -> (B, N, D), tokens t-major, then h, then w.
    /// The Conv3d with kernel = stride is a patchify (one permute) and one matmul.
    pub fn tubelet_embed(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let [ft, fh, fw] = c.tubelet;
        let b = x.dim(0);
        let (nt, nh, nw) = (c.frames / ft, c.height / fh, c.width / fw);
        let d = c.hidden;
        let p = x
            .try_reshape(&[b, nt, ft, nh, fh, nw, fw, 3])? // (B, T', ft, H', fh, W', fw, C)
            .try_permute(&[0, 1, 3, 5, 2, 4, 6, 7])? //       (B, T', H', W', ft, fh, fw, C)
            .try_reshape(&[b, nt * nh * nw, ft * fh * fw * 3])?; // (B, N, ft·fh·fw·C)
        let kernel = self.embedding.0.try_reshape(&[ft * fh * fw * 3, d])?; // (ft·fh·fw·C, D)
        p.try_matmul(&kernel)?.try_add(&self.embedding.1)
    }

    /// x (B, T, H, W, 3) channels-last -> logits (B, classes).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let want = [c.frames, c.height, c.width, 3];
        if x.rank() != 5 || x.shape()[1..] != want {
            return Err(Error::Shape(format!(
                "ViViT: input of shape {:?}, expected (B, {}, {}, {}, 3) channels-last",
                x.shape(),
                c.frames,
                c.height,
                c.width
            )));
        }
        let b = x.dim(0);
        let tokens = self.tubelet_embed(x)?; // (B, N, D)
        let cls = self.cls.try_broadcast_to(&[b, 1, c.hidden])?; // (B, 1, D)
        let mut h = Tensor::try_cat(&[&cls, &tokens], 1)?.try_add(&self.pos_embedding)?; // (B, N+1, D)
        for block in &self.blocks {
            h = block.forward(&h)?;
        }
        let h = self.encoder_norm.forward(&h)?;
        let pooled = h.try_select(1, 0)?; // classifier = 'token': (B, D)
        self.output_projection.forward(&pooled)
    }

    /// Every parameter under its scenic checkpoint key.
    pub fn named_params(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![
            ("embedding/kernel".to_string(), self.embedding.0.clone()),
            ("embedding/bias".to_string(), self.embedding.1.clone()),
            ("cls".to_string(), self.cls.clone()),
            ("Transformer/posembed_input/pos_embedding".to_string(), self.pos_embedding.clone()),
        ];
        for (i, blk) in self.blocks.iter().enumerate() {
            let p = format!("Transformer/encoderblock_{i}");
            blk.layer_norm_0.params(&format!("{p}/LayerNorm_0"), &mut out);
            blk.attention.params(&format!("{p}/MultiHeadDotProductAttention_0"), &mut out);
            blk.layer_norm_1.params(&format!("{p}/LayerNorm_1"), &mut out);
            blk.mlp.dense_0.params(&format!("{p}/MlpBlock_0/Dense_0"), &mut out);
            blk.mlp.dense_1.params(&format!("{p}/MlpBlock_0/Dense_1"), &mut out);
        }
        self.encoder_norm.params("Transformer/encoder_norm", &mut out);
        self.output_projection.params("output_projection", &mut out);
        out
    }
}

impl VideoModel for ViViT {
    fn clip(&self) -> [usize; 3] {
        [self.config.frames, self.config.height, self.config.width]
    }

    fn num_classes(&self) -> usize {
        self.config.num_classes
    }

    fn input_layout(&self) -> InputLayout {
        InputLayout::Bthwc
    }

    /// Dropout and stochastic depth are 0 in the released configs: train and eval agree.
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        ViViT::forward(self, x)
    }

    fn named_params(&self) -> Vec<(String, Tensor)> {
        ViViT::named_params(self)
    }

    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

fn preset(name: &'static str, description: &'static str, config: Config, tiny: bool, build: fn(u64) -> Result<Box<dyn VideoModel>>) -> Preset {
    Preset {
        name,
        description,
        params: config.num_params(),
        gmacs: config.macs() / 1e9,
        clip: [config.frames, config.height, config.width],
        tiny,
        build,
    }
}

/// ViViT presets (Model 1).
pub fn presets() -> Vec<Preset> {
    vec![
        preset("vivit-b-16x2", "ViViT-B/16x2 Model 1, K400 (scenic vivit_base_k400)", Config::vivit_b_16x2(), false,
            |seed| Ok(Box::new(ViViT::new(Config::vivit_b_16x2(), seed)?))),
        preset("vivit-tiny", "ViViT Model 1, tiny: 8x32x32, tubelet 2x8x8, D 64, 4 layers", Config::tiny(NUM_CLASSES), true,
            |seed| Ok(Box::new(ViViT::new(Config::tiny(NUM_CLASSES), seed)?))),
    ]
}
