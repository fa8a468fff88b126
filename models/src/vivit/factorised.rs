//! ViViT Models 2, 3 and 4 (Arnab et al. 2021, §3.3, Fig. 4-6): the factorised variants.
//! Reference: google-research/scenic, `scenic/projects/vivit/model.py` (`SpaceTimeViViT`,
//! `EncoderFactorizedSelfAttentionBlock`, `Encoder`) and `model_utils.py`
//! (`factorized_dot_product_attention`, `reshape_to_1d_factorized`). Semantics as in Model 1
//! (vivit.rs): tanh GELU, LayerNorm eps 1e-6, channels-last input, Flax key paths.
//!
//! * Model 2 ([`FactorisedEncoder`]): the tubelets of each frame index t' go through a spatial
//!   ViT (`SpatialTransformer`, its own `cls_SpatialTransformer` and posemb over ns + 1 tokens,
//!   weights shared over frames: scenic `jax.vmap` over time), whose cls outputs (B, nt, D) go
//!   through a temporal ViT (`TemporalTransformer`, `cls_TemporalTransformer`, posemb over
//!   nt + 1 tokens, its own `encoder_norm`); the head reads the temporal cls.
//! * Model 3 ([`FactorisedViViT`] with [`FactorisedSelfAttentionBlock`]s): in every block,
//!   attention over time (each spatial position's nt tokens), then over space (each frame's ns
//!   tokens), or the other way round (`attention_order` 'space_time'), each with its own LN
//!   and residual, then the MLP. No cls token: `gap` classifier.
//! * Model 4 ([`FactorisedViViT`] with [`EncoderBlock`]s): a Model-1 block whose attention
//!   gives heads [0, H/2) the time axis and heads [H/2, H) the space axis, one shared `out`
//!   projection. `gap` classifier.

use tubelet::nn::{Dense, Init, LayerNorm};
use tubelet::{Error, Result, Tensor};

use super::{
    classify, head_params, new_embedding, new_head, tubelet_embed, AttentionOrder, Config,
    EncoderBlock, MlpBlock,
};
use super::{Classifier, Model, MultiHeadDotProductAttention, Output};
use crate::grid_attention::{group_attention, head_split_attention, Groups};
use crate::{InputLayout, VideoModel};

/// scenic `Encoder` with `classifier='token'` (Model 2's spatial and temporal encoders): cls
/// token in front, learned posemb, blocks, `encoder_norm`, output = the cls row.
pub struct Transformer {
    /// The encoder's name in the parameter tree: `SpatialTransformer`, `TemporalTransformer`.
    pub name: &'static str,
    /// `cls_{name}` (1, 1, D), zero-initialised; with the 'token' classifier only.
    pub cls: Option<Tensor>,
    /// `{name}/posembed_input/pos_embedding` (1, L + 1, D) (L without a cls token).
    pub pos_embedding: Tensor,
    pub blocks: Vec<EncoderBlock>,
    pub encoder_norm: LayerNorm,
    pub classifier: Classifier,
}

impl Transformer {
    /// `layers` blocks of `heads` heads and MLP width `mlp_dim` over `len` tokens (+ cls).
    fn new(
        init: &mut Init,
        name: &'static str,
        c: &Config,
        len: usize,
        layers: usize,
        heads: usize,
        mlp_dim: usize,
    ) -> Result<Transformer> {
        let d = c.hidden;
        let k = c.classifier.cls_tokens();
        Ok(Transformer {
            name,
            cls: if k == 1 {
                Some(init.constant(&[1, 1, d], 0.0)?)
            } else {
                None
            },
            pos_embedding: init.normal(&[1, len + k, d], 0.02)?,
            blocks: (0..layers)
                .map(|_| EncoderBlock::new(init, d, heads, mlp_dim))
                .collect::<Result<_>>()?,
            encoder_norm: LayerNorm::flax(init, d)?,
            classifier: c.classifier,
        })
    }

    /// x (B', L, D) -> the classifier's vector (B', D): the cls token's encoding, or the pool.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, d) = (x.dim(0), x.dim(2));
        let x = match &self.cls {
            Some(cls) => Tensor::try_cat(&[&cls.try_broadcast_to(&[b, 1, d])?, x], 1)?, // (B', L + 1, D)
            None => x.clone(),
        };
        let mut h = x.try_add(&self.pos_embedding)?;
        h = crate::blocks::layers(&h, &self.blocks, |blk, _, h| blk.forward(h))?; // checkpoint segments
        match self.classifier {
            // LN is per token: only the first row is read.
            Classifier::Token | Classifier::First => {
                self.encoder_norm.forward(&h.try_select(1, 0)?)
            }
            pooled => pooled.pool(&self.encoder_norm.forward(&h)?),
        }
    }

    fn params(&self, out: &mut Vec<(String, Tensor)>) {
        let n = self.name;
        if let Some(cls) = &self.cls {
            out.push((format!("cls_{n}"), cls.clone()));
        }
        out.push((
            format!("{n}/posembed_input/pos_embedding"),
            self.pos_embedding.clone(),
        ));
        for (i, blk) in self.blocks.iter().enumerate() {
            blk.params(&format!("{n}/encoderblock_{i}"), out);
        }
        self.encoder_norm.params(&format!("{n}/encoder_norm"), out);
    }
}

/// Model 2: factorised encoder (scenic `SpaceTimeViViT`, `classifier='token'`).
pub struct FactorisedEncoder {
    pub config: Config,
    /// `embedding/kernel` (ft, fh, fw, 3, D), `embedding/bias` (D).
    pub embedding: (Tensor, Tensor),
    pub spatial: Transformer,
    /// `None` for the spatial-only baseline (a mean over the frames instead).
    pub temporal: Option<Transformer>,
    /// `pre_logits` Dense(D → R), when `representation_size` is set (then tanh).
    pub pre_logits: Option<Dense>,
    /// `output_projection`, zero-initialised as in scenic (`None` unless [`Output::Logits`]).
    pub output_projection: Option<Dense>,
}

impl FactorisedEncoder {
    pub fn new(config: Config, seed: u64) -> Result<FactorisedEncoder> {
        config.validate()?;
        let Model::FactorisedEncoder { temporal_layers } = config.model else {
            return Err(Error::Config(format!(
                "FactorisedEncoder builds Model 2, not {:?}",
                config.model
            )));
        };
        let mut init = Init::new(seed);
        let g = config.grid();
        let embedding = new_embedding(&mut init, &config)?;
        let (c, (th, tm)) = (
            &config,
            (
                config.temporal_heads.unwrap_or(config.heads),
                config.temporal_mlp_dim.unwrap_or(config.mlp_dim),
            ),
        );
        let spatial = Transformer::new(
            &mut init,
            "SpatialTransformer",
            c,
            g.h * g.w,
            c.layers,
            c.heads,
            c.mlp_dim,
        )?;
        let temporal = if c.spatial_only_baseline {
            None
        } else {
            Some(Transformer::new(
                &mut init,
                "TemporalTransformer",
                c,
                g.t,
                temporal_layers,
                th,
                tm,
            )?)
        };
        let (pre_logits, output_projection) = new_head(&mut init, &config)?;
        Ok(FactorisedEncoder {
            config,
            embedding,
            spatial,
            temporal,
            pre_logits,
            output_projection,
        })
    }

    /// x (B, T, H, W, 3) channels-last -> logits (B, classes) (or the pre-logits, [`Output`]).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (c, g) = (&self.config, self.config.grid());
        // NOTE: tubelet_embed checks the shape; index x's dimensions only after it.
        let tokens = tubelet_embed(c, &self.embedding, x)?; // (B, nt·ns, D), t-major
        let b = x.dim(0);
        let frames = tokens.try_reshape(&[b * g.t, g.h * g.w, c.hidden])?; // (B·nt, ns, D)
        let frames = self
            .spatial
            .forward(&frames)?
            .try_reshape(&[b, g.t, c.hidden])?; // (B, nt, D)
        let video = match &self.temporal {
            Some(temporal) => temporal.forward(&frames)?, // (B, D)
            // spatial_only_baseline: `jnp.mean(x, axis=1)` over the frames.
            None => frames.try_mean(&[1], false)?, // (B, D)
        };
        classify(&self.pre_logits, &self.output_projection, &video) // (B, classes), or pre-logits
    }

    /// Every parameter under its scenic checkpoint key.
    pub fn named_params(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![
            ("embedding/kernel".to_string(), self.embedding.0.clone()),
            ("embedding/bias".to_string(), self.embedding.1.clone()),
        ];
        self.spatial.params(&mut out);
        if let Some(temporal) = &self.temporal {
            temporal.params(&mut out);
        }
        head_params(&self.pre_logits, &self.output_projection, &mut out);
        out
    }
}

/// Model 3's block (scenic `EncoderFactorizedSelfAttentionBlock`): with `attention_order`
/// 'time_space', x + MHSA_time(LN_time(x)) over each position's time line, then the same over
/// each frame's space ('space_time': space first); then x + MLP(LN_mlp(x)). No MLP between the
/// two attentions; the parameters keep their axis names whatever the order.
#[derive(Clone)]
pub struct FactorisedSelfAttentionBlock {
    pub layer_norm_time: LayerNorm,
    pub attention_time: MultiHeadDotProductAttention,
    pub layer_norm_space: LayerNorm,
    pub attention_space: MultiHeadDotProductAttention,
    pub layer_norm_mlp: LayerNorm,
    pub mlp: MlpBlock,
}

impl FactorisedSelfAttentionBlock {
    fn new(init: &mut Init, d: usize, heads: usize, mlp_dim: usize) -> Result<Self> {
        Ok(FactorisedSelfAttentionBlock {
            layer_norm_time: LayerNorm::flax(init, d)?,
            attention_time: MultiHeadDotProductAttention::new(init, d, heads)?,
            layer_norm_space: LayerNorm::flax(init, d)?,
            attention_space: MultiHeadDotProductAttention::new(init, d, heads)?,
            layer_norm_mlp: LayerNorm::flax(init, d)?,
            mlp: MlpBlock {
                dense_0: Dense::new(init, d, mlp_dim)?,
                dense_1: Dense::new(init, mlp_dim, d)?,
            },
        })
    }

    /// x (B, N, D), tokens t-major -> (B, N, D).
    pub fn forward(&self, x: &Tensor, c: &Config) -> Result<Tensor> {
        let mut x = x.clone();
        let time = (&self.layer_norm_time, &self.attention_time, Groups::Time); // [B·ns, nt, D]
        let space = (&self.layer_norm_space, &self.attention_space, Groups::Space); // [B·nt, ns, D]
        let sublayers = match c.attention_order {
            AttentionOrder::TimeSpace => [time, space],
            AttentionOrder::SpaceTime => [space, time],
        };
        for (ln, attn, groups) in sublayers {
            let qkv = attn.qkv(&ln.forward(&x)?)?; // (B, N, 3D)
            let o = group_attention(&qkv, c.grid(), groups, c.heads, attn.scale(c.hidden))?; // (B, N, D)
            x = x.try_add(&attn.project(&o)?)?;
        }
        x.try_add(&self.mlp.forward(&self.layer_norm_mlp.forward(&x)?)?)
    }

    fn params(&self, p: &str, out: &mut Vec<(String, Tensor)>) {
        self.layer_norm_time
            .params(&format!("{p}/LayerNorm_time"), out);
        self.attention_time
            .params(&format!("{p}/MultiHeadDotProductAttention_time"), out);
        self.layer_norm_space
            .params(&format!("{p}/LayerNorm_space"), out);
        self.attention_space
            .params(&format!("{p}/MultiHeadDotProductAttention_space"), out);
        self.layer_norm_mlp
            .params(&format!("{p}/LayerNorm_mlp"), out);
        self.mlp
            .dense_0
            .params(&format!("{p}/MlpBlock/Dense_0"), out);
        self.mlp
            .dense_1
            .params(&format!("{p}/MlpBlock/Dense_1"), out);
    }
}

/// The blocks of Model 3 or Model 4.
pub enum FactorisedBlocks {
    SelfAttention(Vec<FactorisedSelfAttentionBlock>),
    DotProduct(Vec<EncoderBlock>),
}

/// Models 3 and 4 (scenic `ViViT` with `classifier='gap'`): tubelets + posemb (no cls),
/// factorised blocks, `encoder_norm`, mean over all tokens, `output_projection`.
pub struct FactorisedViViT {
    pub config: Config,
    pub embedding: (Tensor, Tensor),
    /// `Transformer/posembed_input/pos_embedding` (1, N, D).
    pub pos_embedding: Tensor,
    pub blocks: FactorisedBlocks,
    pub encoder_norm: LayerNorm,
    /// `pre_logits` Dense(D → R), when `representation_size` is set (then tanh).
    pub pre_logits: Option<Dense>,
    pub output_projection: Option<Dense>,
}

impl FactorisedViViT {
    pub fn new(config: Config, seed: u64) -> Result<FactorisedViViT> {
        config.validate()?;
        let mut init = Init::new(seed);
        let (d, h, m) = (config.hidden, config.heads, config.mlp_dim);
        let embedding = new_embedding(&mut init, &config)?;
        let pos_embedding = init.normal(&[1, config.num_patches(), d], 0.02)?;
        let blocks = match config.model {
            Model::FactorisedSelfAttention => FactorisedBlocks::SelfAttention(
                (0..config.layers)
                    .map(|_| FactorisedSelfAttentionBlock::new(&mut init, d, h, m))
                    .collect::<Result<_>>()?,
            ),
            Model::FactorisedDotProduct => FactorisedBlocks::DotProduct(
                (0..config.layers)
                    .map(|_| EncoderBlock::new(&mut init, d, h, m))
                    .collect::<Result<_>>()?,
            ),
            other => {
                return Err(Error::Config(format!(
                    "FactorisedViViT builds Models 3 and 4, not {other:?}"
                )))
            }
        };
        let encoder_norm = LayerNorm::flax(&mut init, d)?;
        let (pre_logits, output_projection) = new_head(&mut init, &config)?;
        Ok(FactorisedViViT {
            config,
            embedding,
            pos_embedding,
            blocks,
            encoder_norm,
            pre_logits,
            output_projection,
        })
    }

    /// x (B, T, H, W, 3) channels-last -> logits (B, classes) (or what [`Config::output`] says).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let mut h = tubelet_embed(c, &self.embedding, x)?.try_add(&self.pos_embedding)?; // (B, N, D)
        match &self.blocks {
            FactorisedBlocks::SelfAttention(blocks) => {
                let c = c.clone();
                h = crate::blocks::layers(&h, blocks, move |blk, _, h| blk.forward(h, &c))?;
                // checkpoint segments
            }
            FactorisedBlocks::DotProduct(blocks) => {
                // scenic applies the block to x viewed as [B, nt, ns, D]; (B, N, D) holds the same.
                let (g, heads, scale) = (
                    c.grid(),
                    c.heads,
                    1.0 / ((c.hidden / c.heads) as f32).sqrt(),
                );
                let core = move |qkv: &Tensor| head_split_attention(qkv, g, heads, scale);
                h = crate::blocks::layers(&h, blocks, move |blk, _, h| blk.forward_with(h, core))?;
                // checkpoint segments
            }
        }
        let h = self.encoder_norm.forward(&h)?; // (B, N, D)
        if c.output == Output::PreClassifier {
            return Ok(h); // return_preclassifier
        }
        let pooled = c.classifier.pool(&h)?; // 'gap', 'gmp' or 'gsp': (B, D)
        classify(&self.pre_logits, &self.output_projection, &pooled)
    }

    /// Every parameter under its scenic checkpoint key.
    pub fn named_params(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![
            ("embedding/kernel".to_string(), self.embedding.0.clone()),
            ("embedding/bias".to_string(), self.embedding.1.clone()),
            (
                "Transformer/posembed_input/pos_embedding".to_string(),
                self.pos_embedding.clone(),
            ),
        ];
        match &self.blocks {
            FactorisedBlocks::SelfAttention(blocks) => {
                for (i, blk) in blocks.iter().enumerate() {
                    blk.params(&format!("Transformer/encoderblock_{i}"), &mut out);
                }
            }
            FactorisedBlocks::DotProduct(blocks) => {
                for (i, blk) in blocks.iter().enumerate() {
                    blk.params(&format!("Transformer/encoderblock_{i}"), &mut out);
                }
            }
        }
        self.encoder_norm
            .params("Transformer/encoder_norm", &mut out);
        head_params(&self.pre_logits, &self.output_projection, &mut out);
        out
    }
}

/// Dropout and stochastic depth are 0 in the released configs: train and eval agree.
macro_rules! video_model {
    ($t:ty) => {
        impl VideoModel for $t {
            fn clip(&self) -> [usize; 3] {
                [self.config.frames, self.config.height, self.config.width]
            }

            fn num_classes(&self) -> usize {
                self.config.num_classes
            }

            fn input_layout(&self) -> InputLayout {
                InputLayout::Bthwc
            }

            fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
                <$t>::forward(self, x)
            }

            fn named_params(&self) -> Vec<(String, Tensor)> {
                <$t>::named_params(self)
            }

            fn named_buffers(&self) -> Vec<(String, Tensor)> {
                Vec::new()
            }

            fn rng_counters(&self) -> Vec<(String, u64)> {
                Vec::new()
            }

            fn set_rng_counters(&self, counters: &[(String, u64)]) -> Result<()> {
                crate::set_counters("ViViT", counters, &[])
            }
        }
    };
}

video_model!(FactorisedEncoder);
video_model!(FactorisedViViT);
