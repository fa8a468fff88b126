//! ViViT: A Video Vision Transformer — Arnab, Dehghani, Heigold, Sun, Lučić, Schmid (ICCV 2021),
//! arXiv:2103.15691.
//!
//! Implemented, all four models of §3.3 (Fig. 2-5), each with scenic's parameter tree:
//! * Model 1, spatio-temporal attention ("joint space-time"): tubelet embedding, a cls token, a
//!   learned position embedding and one ViT encoder over all tokens ([`ViViT`], this file).
//! * Model 2, factorised encoder: a spatial ViT per frame, then a temporal ViT over the frames'
//!   cls outputs (scenic `SpaceTimeViViT`); Model 3, factorised self-attention (time, then space,
//!   in every block); Model 4, factorised dot-product attention (half the heads over time, half
//!   over space). These three are in `vivit/factorised.rs` ([`FactorisedEncoder`],
//!   [`FactorisedViViT`]); their attentions go through `crate::grid_attention`.
//!
//! Reference implementation: google-research/scenic, `scenic/projects/vivit/model.py` (Flax).
//! Its semantics are kept: tanh-approximate GELU (`flax.linen.gelu`), LayerNorm eps 1e-6,
//! channels-last input (B, T, H, W, 3), and the parameter tree with Flax's names and layouts
//! (Dense kernels (in, out); `query/kernel` (D, heads, d_head)), joined by '/'.
//!
//! Options of scenic's constructors (all in [`Config`]): the two tokenisations of §3.2,
//! tubelet embedding (`3d_conv`, every released config) and uniform frame sampling
//! (`temporal_sampling`: `n_sampled_frames` frames picked as scenic's `sample_frames_uniformly`,
//! 2-D patches); the pre-logits layer (`representation_size`: Dense + tanh before the
//! classifier); Model 3's `attention_order` ('time_space' or 'space_time').
//!
//! Deviations: none in the computation. Dropout and stochastic depth are 0 in the released
//! configs and are not applied here.
//!
//! Presets: ViViT-B/16×2 of every model (K400 configs; Models 3 and 4 have no released config,
//! they take the paper's ViViT-B/16×2 setting with `gap`), ViViT-L/16×2 FE, and tiny models.
//! NOTE: ViViT-L/16×2 FE takes the released K400 config's 24 temporal layers
//! (`configs/kinetics400/vivit_large_factorised_encoder.py`: 606.8M parameters); the paper
//! describes Lt = 4 (354.9M), as do the SSv2 and Epic-Kitchens configs.

mod factorised;
pub use factorised::{
    FactorisedEncoder, FactorisedSelfAttentionBlock, FactorisedViViT, Transformer,
};

use tubelet::nn::{Dense, Init, LayerNorm};
use tubelet::{Error, Result, Tensor};

use crate::TINY_CLASSES as NUM_CLASSES;
use crate::{BuildOptions, InputLayout, Preset, VideoModel};

/// The four ViViT models (paper §3.3; scenic `attention_config.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Model {
    /// Model 1, `spacetime`: joint attention over all tokens, cls token classifier.
    SpatioTemporal,
    /// Model 2, `factorized_encoder`: `layers` spatial blocks per frame, then `temporal_layers`
    /// temporal blocks over the frame embeddings (same heads and MLP size), cls tokens.
    FactorisedEncoder { temporal_layers: usize },
    /// Model 3, `factorized_self_attention_block`: time then space attention in each block,
    /// `gap` classifier (no cls token).
    FactorisedSelfAttention,
    /// Model 4, `factorized_dot_product_attention`: half the heads over time, half over space,
    /// `gap` classifier (no cls token).
    FactorisedDotProduct,
}

/// How the clip becomes tokens (paper §3.2; scenic `temporal_encoding_config.method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemporalEncoding {
    /// `3d_conv`, tubelet embedding (Fig. 3): a Conv3d with kernel = stride (ft, fh, fw).
    TubeletEmbedding,
    /// `temporal_sampling`, uniform frame sampling (Fig. 2): `n_sampled_frames` frames picked
    /// uniformly (scenic `video_utils.sample_frames_uniformly`), each cut into 2-D (fh, fw)
    /// patches by a Conv2d (`embedding/kernel` (fh, fw, 3, D)); the tubelet's ft is unused.
    UniformFrameSampling { n_sampled_frames: usize },
}

/// How the encoded tokens become one vector (scenic `classifier`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classifier {
    /// `token`: a learned cls token in front of the patches; its row is read.
    Token,
    /// `0`: the first row is read, without a cls token (scenic adds one for 'token' only).
    First,
    /// `gap`, `gmp`, `gsp`: mean, max or sum over the tokens.
    Gap,
    Gmp,
    Gsp,
}

impl Classifier {
    /// scenic's spelling: 'token', '0', 'gap', 'gmp', 'gsp'.
    pub fn parse(name: &str) -> Option<Classifier> {
        Some(match name {
            "token" => Classifier::Token,
            "0" => Classifier::First,
            "gap" => Classifier::Gap,
            "gmp" => Classifier::Gmp,
            "gsp" => Classifier::Gsp,
            _ => return None,
        })
    }

    /// x (B, L, D), after encoder_norm -> (B, D).
    pub fn pool(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Classifier::Token | Classifier::First => x.try_select(1, 0),
            Classifier::Gap => x.try_mean(&[1], false),
            Classifier::Gmp => x.try_max(&[1], false),
            Classifier::Gsp => x.try_sum(&[1], false),
        }
    }

    /// 1 with a cls token, else 0.
    pub fn cls_tokens(self) -> usize {
        usize::from(self == Classifier::Token)
    }
}

/// What the model returns (scenic's `return_prelogits` and `return_preclassifier` flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The logits (B, classes): both flags False, scenic's default.
    Logits,
    /// `return_prelogits`: the pooled features after `pre_logits` (Dense + tanh, or its
    /// identity), (B, R or D). `output_projection` is never called, so Flax never makes it:
    /// the model has no such parameters.
    PreLogits,
    /// `return_preclassifier` (scenic's `ViViT`, Models 1, 3 and 4; `SpaceTimeViViT` has no
    /// such field): the encoder's normalised tokens (B, N (+1 with a cls token), D), before the
    /// classifier's pooling; neither `pre_logits` nor `output_projection` is made.
    PreClassifier,
}

/// The order of Model 3's two attentions in every block (scenic `attention_order`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionOrder {
    /// `time_space`: over time first, then over space (scenic's default).
    TimeSpace,
    /// `space_time`: over space first, then over time.
    SpaceTime,
}

/// ViViT configuration (paper Table 1 notation: tubelet t×h×w, hidden D, L layers).
#[derive(Clone, Debug)]
pub struct Config {
    /// Input clip: frames, height, width.
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    /// Tubelet (ft, fh, fw): kernel = stride of the 3D-conv embedding (scenic `patches.size`
    /// is (fh, fw, ft)); with uniform frame sampling only (fh, fw) is used.
    pub tubelet: [usize; 3],
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub mlp_dim: usize,
    pub num_classes: usize,
    pub model: Model,
    /// `temporal_encoding_config.method` (every released config: `3d_conv`).
    pub temporal_encoding: TemporalEncoding,
    /// `representation_size`: a `pre_logits` Dense(D → R) and tanh before the classifier
    /// (scenic's default None: none, as in every released config).
    pub representation_size: Option<usize>,
    /// `attention_config.attention_order` of Model 3 (unused by the others).
    pub attention_order: AttentionOrder,
    /// `classifier`: 'token' for Models 1 and 2 in the released configs; Models 3 and 4 take
    /// 'gap', 'gmp' or 'gsp' (scenic asserts they have no token classifier).
    pub classifier: Classifier,
    /// Model 2's temporal encoder: heads and MLP width (scenic `temporal_num_heads`,
    /// `temporal_mlp_dim`); `None` is the spatial encoder's (`heads`, `mlp_dim`), as in every
    /// released config.
    pub temporal_heads: Option<usize>,
    pub temporal_mlp_dim: Option<usize>,
    /// Model 2's `attention_config.spatial_only_baseline` (scenic's default False): the frames'
    /// spatial encodings are averaged instead of going through the temporal encoder, which is
    /// not built (its `temporal_layers`, heads and MLP width are then unused, as in scenic).
    /// Only Model 2 has it.
    pub spatial_only_baseline: bool,
    /// What the forward returns: [`Output::Logits`] in every config.
    pub output: Output,
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
            model: Model::SpatioTemporal,
            temporal_encoding: TemporalEncoding::TubeletEmbedding,
            representation_size: None,
            attention_order: AttentionOrder::TimeSpace,
            classifier: Classifier::Token,
            temporal_heads: None,
            temporal_mlp_dim: None,
            spatial_only_baseline: false,
            output: Output::Logits,
        }
    }

    /// ViViT-B/16×2 FE, K400 (scenic `configs/kinetics400/vivit_base_factorised_encoder.py`):
    /// 12 spatial + 4 temporal layers.
    pub fn vivit_b_16x2_fe() -> Config {
        Config {
            model: Model::FactorisedEncoder { temporal_layers: 4 },
            ..Config::vivit_b_16x2()
        }
    }

    /// ViViT-L/16×2 FE, K400 (scenic `configs/kinetics400/vivit_large_factorised_encoder.py`):
    /// D 1024, 16 heads, MLP 4096, 24 spatial + 24 temporal layers as the config says (the
    /// paper's Lt is 4; see the module notes).
    pub fn vivit_l_16x2_fe() -> Config {
        Config {
            hidden: 1024,
            layers: 24,
            heads: 16,
            mlp_dim: 4096,
            model: Model::FactorisedEncoder {
                temporal_layers: 24,
            },
            ..Config::vivit_b_16x2()
        }
    }

    /// ViViT-B/16×2 Model 3 (paper Table 2 setting; no released config), `gap` classifier.
    pub fn vivit_b_16x2_fsa() -> Config {
        Config {
            model: Model::FactorisedSelfAttention,
            classifier: Classifier::Gap,
            ..Config::vivit_b_16x2()
        }
    }

    /// ViViT-B/16×2 Model 4 (paper Table 2 setting; no released config), `gap` classifier.
    pub fn vivit_b_16x2_fdp() -> Config {
        Config {
            model: Model::FactorisedDotProduct,
            classifier: Classifier::Gap,
            ..Config::vivit_b_16x2()
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
            model: Model::SpatioTemporal,
            temporal_encoding: TemporalEncoding::TubeletEmbedding,
            representation_size: None,
            attention_order: AttentionOrder::TimeSpace,
            classifier: Classifier::Token,
            temporal_heads: None,
            temporal_mlp_dim: None,
            spatial_only_baseline: false,
            output: Output::Logits,
        }
    }

    /// Tiny `model` for the synthetic set, as [`Config::tiny`]; Model 2 gets 4 spatial and 2
    /// temporal layers.
    pub fn tiny_model(model: Model, num_classes: usize) -> Config {
        let classifier = match model {
            Model::SpatioTemporal | Model::FactorisedEncoder { .. } => Classifier::Token,
            Model::FactorisedSelfAttention | Model::FactorisedDotProduct => Classifier::Gap,
        };
        Config {
            model,
            classifier,
            ..Config::tiny(num_classes)
        }
    }

    /// The embedding's kernel (ft, fh, fw): the tubelet, or (1, fh, fw) for uniform frame
    /// sampling (a 2-D patch is a tubelet one frame long).
    pub fn patch(&self) -> [usize; 3] {
        let [ft, fh, fw] = self.tubelet;
        match self.temporal_encoding {
            TemporalEncoding::TubeletEmbedding => [ft, fh, fw],
            TemporalEncoding::UniformFrameSampling { .. } => [1, fh, fw],
        }
    }

    /// The frames uniform frame sampling keeps (`None` for tubelets), as scenic's
    /// `sample_frames_uniformly`: with n < T, round(arange(T/(n+1), T, T/(n+1))) clamped to
    /// T − 1; otherwise every frame.
    /// NOTE: `arange` over floats has ceil((T − s)/s) elements, which can be n + 1 when
    /// T/(n+1) rounds down (computed here in f64, as numpy and jax with x64 do).
    pub fn sampled_frames(&self) -> Option<Vec<usize>> {
        let TemporalEncoding::UniformFrameSampling {
            n_sampled_frames: n,
        } = self.temporal_encoding
        else {
            return None;
        };
        let t = self.frames;
        if n >= t {
            return Some((0..t).collect());
        }
        let step = t as f64 / (n + 1) as f64;
        let len = ((t as f64 - step) / step).ceil() as usize;
        Some(
            (0..len)
                .map(|i| ((step + i as f64 * step).round_ties_even() as usize).min(t - 1))
                .collect(),
        )
    }

    /// Tokens per clip without the cls token.
    pub fn num_patches(&self) -> usize {
        let g = self.grid();
        g.t * g.h * g.w
    }

    /// The token grid (T/ft, H/fh, W/fw), t-major; T is the sampled frames' count with uniform
    /// frame sampling.
    pub fn grid(&self) -> crate::grid_attention::Grid {
        let [ft, fh, fw] = self.patch();
        let t = self.sampled_frames().map_or(self.frames / ft, |f| f.len());
        crate::grid_attention::Grid {
            t,
            h: self.height / fh,
            w: self.width / fw,
            order: crate::grid_attention::Order::Thw,
        }
    }

    /// The classifier's input width: `representation_size`, or D.
    pub fn head_dim(&self) -> usize {
        self.representation_size.unwrap_or(self.hidden)
    }

    /// Parameters, counted from the config (the official model's, with the head).
    pub fn num_params(&self) -> usize {
        let [ft, fh, fw] = self.patch();
        let d = self.hidden;
        let g = self.grid();
        let (nt, ns) = (g.t, g.h * g.w);
        let embed = ft * fh * fw * 3 * d + d;
        let block_of = |m: usize| 2 * 2 * d + 4 * (d * d + d) + (d * m + m) + (m * d + d);
        let block = block_of(self.mlp_dim);
        // encoder_norm (the last encoder's: none after the spatial-only mean), pre_logits,
        // output_projection
        let pre_logits = match self.output {
            Output::PreClassifier => 0,
            _ => self.representation_size.map_or(0, |r| d * r + r),
        };
        let output_projection = match self.output {
            Output::Logits => self.head_dim() * self.num_classes + self.num_classes,
            _ => 0,
        };
        let last_norm = if self.spatial_only_baseline { 0 } else { 2 * d };
        let head = last_norm + pre_logits + output_projection;
        let k = self.classifier.cls_tokens(); // 1 with a cls token (and its posemb row)
        embed
            + head
            + match self.model {
                // cls + posemb (N + 1) + blocks.
                Model::SpatioTemporal => k * d + (self.num_patches() + k) * d + self.layers * block,
                // No cls token (`gap`): posemb (N) + blocks.
                Model::FactorisedDotProduct => self.num_patches() * d + self.layers * block,
                // cls + posemb (ns + 1) + blocks + norm, spatial; the same, temporal (norm in
                // `head`), unless the spatial-only baseline averages the frames instead.
                Model::FactorisedEncoder { temporal_layers } => {
                    let temporal_block = block_of(self.temporal_mlp_dim.unwrap_or(self.mlp_dim));
                    let temporal = if self.spatial_only_baseline {
                        0
                    } else {
                        k * d + (nt + k) * d + temporal_layers * temporal_block
                    };
                    k * d + (ns + k) * d + self.layers * block + 2 * d + temporal
                }
                // A second LN and attention per block (time and space).
                Model::FactorisedSelfAttention => {
                    self.num_patches() * d + self.layers * (block + 2 * d + 4 * (d * d + d))
                }
            }
    }

    /// Multiply-accumulates of one clip (conv, linear and the two attention matmuls: the
    /// papers' "FLOPs" convention).
    pub fn macs(&self) -> f64 {
        let [ft, fh, fw] = self.patch();
        let (n, d, m) = (
            self.num_patches() as f64,
            self.hidden as f64,
            self.mlp_dim as f64,
        );
        let g = self.grid();
        let (nt, ns) = (g.t as f64, (g.h * g.w) as f64);
        let embed = n * (ft * fh * fw * 3) as f64 * d;
        // A ViT block over `len` tokens; the attention matmuls over `keys` keys per query.
        let block_of = |len: f64, keys: f64, m: f64| {
            len * d * 3.0 * d + 2.0 * len * keys * d + len * d * d + 2.0 * len * d * m
        };
        let block = |len: f64, keys: f64| block_of(len, keys, m);
        let layers = self.layers as f64;
        let k = self.classifier.cls_tokens() as f64;
        let body = match self.model {
            Model::SpatioTemporal => layers * block(n + k, n + k),
            Model::FactorisedEncoder { temporal_layers } => {
                let mt = self.temporal_mlp_dim.unwrap_or(self.mlp_dim) as f64;
                let temporal = if self.spatial_only_baseline {
                    0.0
                } else {
                    temporal_layers as f64 * block_of(nt + k, nt + k, mt)
                };
                nt * layers * block(ns + k, ns + k) + temporal
            }
            // Time and space attention (4D² each for q, k, v, out), then the MLP.
            Model::FactorisedSelfAttention => {
                layers * (2.0 * n * 4.0 * d * d + 2.0 * n * (nt + ns) * d + 2.0 * n * d * m)
            }
            // Half the heads (D/2 channels) over nt keys, half over ns.
            Model::FactorisedDotProduct => layers * (block(n, 0.0) + n * (nt + ns) * d),
        };
        let pre_logits = match self.output {
            Output::PreClassifier => 0.0,
            _ => self.representation_size.map_or(0.0, |r| d * r as f64),
        };
        let output_projection = match self.output {
            Output::Logits => self.head_dim() as f64 * self.num_classes as f64,
            _ => 0.0,
        };
        embed + body + pre_logits + output_projection
    }

    pub fn validate(&self) -> Result<()> {
        let [ft, fh, fw] = self.patch();
        let bad = |what: String| Err(Error::Config(format!("ViViT config: {what}")));
        if self.temporal_encoding
            == (TemporalEncoding::UniformFrameSampling {
                n_sampled_frames: 0,
            })
        {
            return bad("uniform frame sampling needs n_sampled_frames ≥ 1".into());
        }
        if self.representation_size == Some(0) {
            return bad(
                "representation_size 0 (a pre_logits layer of width 0); use None for none".into(),
            );
        }
        if ft == 0
            || fh == 0
            || fw == 0
            || !self.frames.is_multiple_of(ft)
            || !self.height.is_multiple_of(fh)
            || !self.width.is_multiple_of(fw)
        {
            return bad(format!(
                "clip {}×{}×{} is not a multiple of the tubelet {ft}×{fh}×{fw}",
                self.frames, self.height, self.width
            ));
        }
        if self.heads == 0 || !self.hidden.is_multiple_of(self.heads) {
            return bad(format!(
                "hidden {} is not divisible by heads {}",
                self.hidden, self.heads
            ));
        }
        if self.layers == 0 || self.mlp_dim == 0 || self.num_classes == 0 {
            return bad(format!(
                "layers {}, mlp_dim {}, classes {} must be positive",
                self.layers, self.mlp_dim, self.num_classes
            ));
        }
        let (th, tm) = (
            self.temporal_heads.unwrap_or(self.heads),
            self.temporal_mlp_dim.unwrap_or(self.mlp_dim),
        );
        if th == 0 || !self.hidden.is_multiple_of(th) || tm == 0 {
            return bad(format!(
                "temporal encoder: hidden {} is not divisible by heads {th}, or mlp_dim {tm} is 0",
                self.hidden
            ));
        }
        if self.output == Output::PreClassifier
            && matches!(self.model, Model::FactorisedEncoder { .. })
        {
            // SpaceTimeViViT has no return_preclassifier field (a TypeError in scenic).
            return bad("Output::PreClassifier (return_preclassifier) is not Model 2's".into());
        }
        if self.spatial_only_baseline && !matches!(self.model, Model::FactorisedEncoder { .. }) {
            // scenic reads attention_config.spatial_only_baseline in SpaceTimeViViT only.
            return bad(format!(
                "spatial_only_baseline is Model 2's (the factorised encoder's); model {:?}",
                self.model
            ));
        }
        match self.model {
            Model::FactorisedEncoder { temporal_layers: 0 } if !self.spatial_only_baseline => {
                return bad("Model 2 needs temporal_layers > 0".into())
            }
            Model::FactorisedDotProduct if !self.heads.is_multiple_of(2) => {
                return bad(format!(
                    "Model 4 splits the heads in two halves: heads {} must be even",
                    self.heads
                ))
            }
            _ => {}
        }
        let factorised = matches!(
            self.model,
            Model::FactorisedSelfAttention | Model::FactorisedDotProduct
        );
        if factorised && matches!(self.classifier, Classifier::Token | Classifier::First) {
            // scenic ViViT: assert self.classifier not in ['token', '0'] for these attentions.
            // NOTE: `Config { model: Model 3 or 4, ..Config::tiny(n) }` keeps tiny's 'token':
            // set `classifier` too, or use `Config::tiny_model`.
            return bad(format!(
                "{:?} has no token classifier (scenic asserts it): classifier {:?}; use Gap, Gmp or Gsp",
                self.model, self.classifier
            ));
        }
        Ok(())
    }
}

/// scenic `MultiHeadDotProductAttention` (flax.linen), q/k/v/out as DenseGeneral.
#[derive(Clone)]
pub struct MultiHeadDotProductAttention {
    pub query: (Tensor, Tensor), // kernel (D, H, d), bias (H, d)
    pub key: (Tensor, Tensor),
    pub value: (Tensor, Tensor),
    pub out: (Tensor, Tensor), // kernel (H, d, D), bias (D)
    pub heads: usize,
}

impl MultiHeadDotProductAttention {
    pub fn new(init: &mut Init, d: usize, heads: usize) -> Result<Self> {
        let hd = d / heads;
        let mut qkv = || -> Result<(Tensor, Tensor)> {
            Ok((
                init.xavier_uniform(&[d, heads, hd], d, d)?,
                init.constant(&[heads, hd], 0.0)?,
            ))
        };
        let (query, key, value) = (qkv()?, qkv()?, qkv()?);
        let out = (
            init.xavier_uniform(&[heads, hd, d], d, d)?,
            init.constant(&[d], 0.0)?,
        );
        Ok(Self {
            query,
            key,
            value,
            out,
            heads,
        })
    }

    /// x (B, N, D) -> (B, N, D)
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let qkv = self.qkv(x)?; // (B, N, 3D)
                                // Flax scales the query by 1/√d before the dot product.
        self.project(&crate::blocks::attention(
            &qkv,
            self.heads,
            self.scale(x.dim(-1)),
        )?) // (B, N, D)
    }

    /// 1/√d_head, Flax's query scaling.
    pub fn scale(&self, d: usize) -> f32 {
        1.0 / ((d / self.heads) as f32).sqrt()
    }

    /// The packed projections: x (…, D) -> (…, 3D), ordered [q, k, v][heads][d_head].
    pub fn qkv(&self, x: &Tensor) -> Result<Tensor> {
        let d = x.dim(-1);
        // One matmul for q, k and v: kernels (D, D) side by side -> (D, 3D), packed [3][H][d].
        let w = Tensor::try_cat(
            &[
                &self.query.0.try_reshape(&[d, d])?,
                &self.key.0.try_reshape(&[d, d])?,
                &self.value.0.try_reshape(&[d, d])?,
            ],
            1,
        )?;
        let b = Tensor::try_cat(
            &[
                &self.query.1.try_reshape(&[d])?,
                &self.key.1.try_reshape(&[d])?,
                &self.value.1.try_reshape(&[d])?,
            ],
            0,
        )?;
        x.try_matmul(&w)?.try_add(&b) // (…, 3D)
    }

    /// The `out` DenseGeneral: the heads' outputs (…, heads·d_head) -> (…, D).
    pub fn project(&self, o: &Tensor) -> Result<Tensor> {
        let d = self.out.1.dim(0);
        o.try_matmul(&self.out.0.try_reshape(&[d, d])?)?
            .try_add(&self.out.1)
    }

    pub fn params(&self, p: &str, out: &mut Vec<(String, Tensor)>) {
        for (name, (k, b)) in [
            ("query", &self.query),
            ("key", &self.key),
            ("value", &self.value),
            ("out", &self.out),
        ] {
            out.push((format!("{p}/{name}/kernel"), k.clone()));
            out.push((format!("{p}/{name}/bias"), b.clone()));
        }
    }
}

/// scenic `MlpBlock`: Dense(D→M), GELU (tanh), Dense(M→D).
#[derive(Clone)]
pub struct MlpBlock {
    pub dense_0: Dense,
    pub dense_1: Dense,
}

impl MlpBlock {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.dense_1
            .forward(&self.dense_0.forward(x)?.try_gelu_tanh()?)
    }
}

/// scenic `Encoder1DBlock`: x + MHDPA(LN(x)); x + MLP(LN(x)).
#[derive(Clone)]
pub struct EncoderBlock {
    pub layer_norm_0: LayerNorm,
    pub attention: MultiHeadDotProductAttention,
    pub layer_norm_1: LayerNorm,
    pub mlp: MlpBlock,
}

impl EncoderBlock {
    pub fn new(init: &mut Init, d: usize, heads: usize, mlp_dim: usize) -> Result<EncoderBlock> {
        Ok(EncoderBlock {
            layer_norm_0: LayerNorm::flax(init, d)?,
            attention: MultiHeadDotProductAttention::new(init, d, heads)?,
            layer_norm_1: LayerNorm::flax(init, d)?,
            mlp: MlpBlock {
                dense_0: Dense::new(init, d, mlp_dim)?,
                dense_1: Dense::new(init, mlp_dim, d)?,
            },
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.try_add(&self.attention.forward(&self.layer_norm_0.forward(x)?)?)?;
        x.try_add(&self.mlp.forward(&self.layer_norm_1.forward(&x)?)?)
    }

    /// The block with another attention function (scenic's `attention_fn`): `core` maps the
    /// packed qkv (B, N, 3D) to the heads' outputs (B, N, D), before the `out` projection.
    pub fn forward_with(
        &self,
        x: &Tensor,
        core: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let o = core(&self.attention.qkv(&self.layer_norm_0.forward(x)?)?)?;
        let x = x.try_add(&self.attention.project(&o)?)?;
        x.try_add(&self.mlp.forward(&self.layer_norm_1.forward(&x)?)?)
    }

    /// Keys `{p}/LayerNorm_0`, `{p}/MultiHeadDotProductAttention_0`, `{p}/LayerNorm_1`,
    /// `{p}/MlpBlock_0/Dense_{0,1}`.
    pub fn params(&self, p: &str, out: &mut Vec<(String, Tensor)>) {
        self.layer_norm_0.params(&format!("{p}/LayerNorm_0"), out);
        self.attention
            .params(&format!("{p}/MultiHeadDotProductAttention_0"), out);
        self.layer_norm_1.params(&format!("{p}/LayerNorm_1"), out);
        self.mlp
            .dense_0
            .params(&format!("{p}/MlpBlock_0/Dense_0"), out);
        self.mlp
            .dense_1
            .params(&format!("{p}/MlpBlock_0/Dense_1"), out);
    }
}

/// Tubelet embedding (scenic `embed_3d_patch`, a VALID Conv3d with kernel = stride):
/// x (B, T, H, W, 3) -> (B, N, D), tokens t-major, then h, then w. The convolution is a
/// patchify (one permute) and one matmul with the kernel (ft, fh, fw, 3, D).
/// With uniform frame sampling (scenic `temporal_encode`, method `temporal_sampling`) the kept
/// frames are gathered first and patchified with ft = 1 by the Conv2d kernel (fh, fw, 3, D):
/// scenic stacks the frames as one (B, T'·H, W, 3) image, whose patches are the frames' own
/// since fh divides H (`validate`).
pub fn tubelet_embed(c: &Config, embedding: &(Tensor, Tensor), x: &Tensor) -> Result<Tensor> {
    let [ft, fh, fw] = c.patch();
    let want = [c.frames, c.height, c.width, 3];
    if x.rank() != 5 || x.shape()[1..] != want || x.dim(0) == 0 {
        return Err(Error::Shape(format!(
            "ViViT: input of shape {:?}, expected (B, {}, {}, {}, 3) channels-last with B ≥ 1",
            x.shape(),
            c.frames,
            c.height,
            c.width
        )));
    }
    let b = x.dim(0);
    let x = match c.sampled_frames() {
        // (B, T', H, W, 3): the kept frames, in order (a frame may repeat only when T' = T).
        Some(frames) => {
            let picked = frames
                .iter()
                .map(|&f| x.try_narrow(1, f, 1))
                .collect::<Result<Vec<_>>>()?;
            Tensor::try_cat(&picked.iter().collect::<Vec<_>>(), 1)?
        }
        None => x.clone(),
    };
    let g = c.grid();
    let (nt, nh, nw) = (g.t, g.h, g.w);
    let p = x
        .try_reshape(&[b, nt, ft, nh, fh, nw, fw, 3])? // (B, T', ft, H', fh, W', fw, C)
        .try_permute(&[0, 1, 3, 5, 2, 4, 6, 7])? //       (B, T', H', W', ft, fh, fw, C)
        .try_reshape(&[b, nt * nh * nw, ft * fh * fw * 3])?; // (B, N, ft·fh·fw·C)
    let kernel = embedding.0.try_reshape(&[ft * fh * fw * 3, c.hidden])?; // (ft·fh·fw·C, D)
    p.try_matmul(&kernel)?.try_add(&embedding.1)
}

/// `embedding/kernel` (ft, fh, fw, 3, D) (Conv3d) or (fh, fw, 3, D) (Conv2d, uniform frame
/// sampling), Xavier-uniform, and `embedding/bias` (D), zero.
fn new_embedding(init: &mut Init, c: &Config) -> Result<(Tensor, Tensor)> {
    let [ft, fh, fw] = c.patch();
    let fan_in = ft * fh * fw * 3;
    let shape = match c.temporal_encoding {
        TemporalEncoding::TubeletEmbedding => vec![ft, fh, fw, 3, c.hidden],
        TemporalEncoding::UniformFrameSampling { .. } => vec![fh, fw, 3, c.hidden],
    };
    Ok((
        init.xavier_uniform(&shape, fan_in, c.hidden)?,
        init.constant(&[c.hidden], 0.0)?,
    ))
}

/// scenic's `pre_logits`: a Dense(D → R) followed by tanh when `representation_size` is set
/// (an IdentityLayer, no parameters, otherwise); the zero-initialised `output_projection`
/// (R or D → classes) follows it. Flax makes a module only when it is called: none of them
/// with [`Output::PreClassifier`], no `output_projection` with [`Output::PreLogits`].
fn new_head(init: &mut Init, c: &Config) -> Result<(Option<Dense>, Option<Dense>)> {
    let pre_logits = c
        .representation_size
        .filter(|_| c.output != Output::PreClassifier)
        .map(|r| Dense::new(init, c.hidden, r))
        .transpose()?;
    let output_projection = (c.output == Output::Logits)
        .then(|| Dense::zeros(init, c.head_dim(), c.num_classes))
        .transpose()?;
    Ok((pre_logits, output_projection))
}

/// pooled (B, D) -> logits (B, classes): output_projection(tanh(pre_logits(x))) or
/// output_projection(x); without `output_projection` (`return_prelogits`) the pre-logits
/// (B, R or D).
fn classify(
    pre_logits: &Option<Dense>,
    output_projection: &Option<Dense>,
    x: &Tensor,
) -> Result<Tensor> {
    let x = match pre_logits {
        Some(dense) => dense.forward(x)?.try_tanh()?, // (B, R)
        None => x.clone(),
    };
    match output_projection {
        Some(dense) => dense.forward(&x), // (B, classes)
        None => Ok(x),
    }
}

/// Keys `pre_logits/{kernel,bias}` and `output_projection/{kernel,bias}`, those that exist.
fn head_params(
    pre_logits: &Option<Dense>,
    output_projection: &Option<Dense>,
    out: &mut Vec<(String, Tensor)>,
) {
    if let Some(dense) = pre_logits {
        dense.params("pre_logits", out);
    }
    if let Some(dense) = output_projection {
        dense.params("output_projection", out);
    }
}

/// Builds any of the four models from its config.
pub fn build(config: Config, seed: u64) -> Result<Box<dyn VideoModel>> {
    Ok(match config.model {
        Model::SpatioTemporal => Box::new(ViViT::new(config, seed)?),
        Model::FactorisedEncoder { .. } => Box::new(FactorisedEncoder::new(config, seed)?),
        Model::FactorisedSelfAttention | Model::FactorisedDotProduct => {
            Box::new(FactorisedViViT::new(config, seed)?)
        }
    })
}

/// ViViT Model 1 classifier.
pub struct ViViT {
    pub config: Config,
    /// `embedding/kernel` (ft, fh, fw, 3, D) and `embedding/bias` (D): the tubelet Conv3d.
    pub embedding: (Tensor, Tensor),
    /// `cls` (1, 1, D), zero-initialised; with the 'token' classifier only.
    pub cls: Option<Tensor>,
    /// `Transformer/posembed_input/pos_embedding` (1, N + 1, D) (N without a cls token).
    pub pos_embedding: Tensor,
    pub blocks: Vec<EncoderBlock>,
    pub encoder_norm: LayerNorm,
    /// `pre_logits` Dense(D → R), when `representation_size` is set (then tanh).
    pub pre_logits: Option<Dense>,
    /// `output_projection`, zero-initialised as in scenic (`None` unless [`Output::Logits`]).
    pub output_projection: Option<Dense>,
}

impl ViViT {
    pub fn new(config: Config, seed: u64) -> Result<ViViT> {
        config.validate()?;
        if config.model != Model::SpatioTemporal {
            return Err(Error::Config(format!(
                "ViViT::new builds Model 1; {:?} is built by vivit::build",
                config.model
            )));
        }
        let mut init = Init::new(seed);
        let d = config.hidden;
        let embedding = new_embedding(&mut init, &config)?;
        let k = config.classifier.cls_tokens();
        let cls = if k == 1 {
            Some(init.constant(&[1, 1, d], 0.0)?)
        } else {
            None
        };
        let pos_embedding = init.normal(&[1, config.num_patches() + k, d], 0.02)?;
        let blocks = (0..config.layers)
            .map(|_| EncoderBlock::new(&mut init, d, config.heads, config.mlp_dim))
            .collect::<Result<Vec<_>>>()?;
        let encoder_norm = LayerNorm::flax(&mut init, d)?;
        let (pre_logits, output_projection) = new_head(&mut init, &config)?;
        Ok(ViViT {
            config,
            embedding,
            cls,
            pos_embedding,
            blocks,
            encoder_norm,
            pre_logits,
            output_projection,
        })
    }

    /// Tubelet embedding: (B, T, H, W, 3) -> (B, N, D), tokens t-major, then h, then w.
    pub fn tubelet_embed(&self, x: &Tensor) -> Result<Tensor> {
        tubelet_embed(&self.config, &self.embedding, x)
    }

    /// x (B, T, H, W, 3) channels-last -> logits (B, classes) (or what [`Config::output`] says).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        // NOTE: tubelet_embed checks the shape; index x's dimensions only after it.
        let tokens = self.tubelet_embed(x)?; // (B, N, D)
        let b = x.dim(0);
        let tokens = match &self.cls {
            Some(cls) => Tensor::try_cat(&[&cls.try_broadcast_to(&[b, 1, c.hidden])?, &tokens], 1)?, // (B, N+1, D)
            None => tokens,
        };
        let mut h = tokens.try_add(&self.pos_embedding)?; // (B, N(+1), D)
        h = crate::blocks::layers(&h, &self.blocks, |blk, _, h| blk.forward(h))?; // checkpoint segments
        let h = self.encoder_norm.forward(&h)?;
        if c.output == Output::PreClassifier {
            return Ok(h); // return_preclassifier: (B, N(+1), D)
        }
        let pooled = c.classifier.pool(&h)?; // (B, D)
        classify(&self.pre_logits, &self.output_projection, &pooled)
    }

    /// Every parameter under its scenic checkpoint key.
    pub fn named_params(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![
            ("embedding/kernel".to_string(), self.embedding.0.clone()),
            ("embedding/bias".to_string(), self.embedding.1.clone()),
        ];
        if let Some(cls) = &self.cls {
            out.push(("cls".to_string(), cls.clone()));
        }
        out.push((
            "Transformer/posembed_input/pos_embedding".to_string(),
            self.pos_embedding.clone(),
        ));
        for (i, blk) in self.blocks.iter().enumerate() {
            blk.params(&format!("Transformer/encoderblock_{i}"), &mut out);
        }
        self.encoder_norm
            .params("Transformer/encoder_norm", &mut out);
        head_params(&self.pre_logits, &self.output_projection, &mut out);
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

    fn rng_counters(&self) -> Vec<(String, u64)> {
        Vec::new()
    }

    fn set_rng_counters(&self, counters: &[(String, u64)]) -> Result<()> {
        crate::set_counters("ViViT", counters, &[])
    }
}

/// A preset's config at the options' class count, clip and drop-path rate (checked by the
/// model's own `Config::validate` when built).
fn configure(mut c: Config, o: &BuildOptions) -> Result<Config> {
    c.num_classes = o.classes(c.num_classes)?;
    let [t, h, w] = o.clip_or([c.frames, c.height, c.width])?;
    (c.frames, c.height, c.width) = (t, h, w);
    o.no_drop_path("ViViT")?;
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

/// ViViT presets (Models 1-4).
pub fn presets() -> Vec<Preset> {
    let fe_tiny = Model::FactorisedEncoder { temporal_layers: 2 };
    vec![
        preset("vivit-b-16x2", "ViViT-B/16x2 Model 1, K400 (scenic vivit_base_k400)", Config::vivit_b_16x2(), false,
            |o| Ok(Box::new(ViViT::new(configure(Config::vivit_b_16x2(), o)?, o.seed)?))),
        preset("vivit-tiny", "ViViT Model 1, tiny: 8x32x32, tubelet 2x8x8, D 64, 4 layers", Config::tiny(NUM_CLASSES), true,
            |o| Ok(Box::new(ViViT::new(configure(Config::tiny(NUM_CLASSES), o)?, o.seed)?))),
        preset("vivit-b-16x2-fe", "ViViT-B/16x2 Model 2 (factorised encoder, Lt 4), K400 (scenic vivit_base_factorised_encoder)",
            Config::vivit_b_16x2_fe(), false, |o| build(configure(Config::vivit_b_16x2_fe(), o)?, o.seed)),
        preset("vivit-l-16x2-fe", "ViViT-L/16x2 Model 2, K400 config as released: Lt 24 (paper: 4) (scenic vivit_large_factorised_encoder)",
            Config::vivit_l_16x2_fe(), false, |o| build(configure(Config::vivit_l_16x2_fe(), o)?, o.seed)),
        preset("vivit-b-16x2-fsa", "ViViT-B/16x2 Model 3 (factorised self-attention), gap (paper Table 2)",
            Config::vivit_b_16x2_fsa(), false, |o| build(configure(Config::vivit_b_16x2_fsa(), o)?, o.seed)),
        preset("vivit-b-16x2-fdp", "ViViT-B/16x2 Model 4 (factorised dot-product attention), gap (paper Table 2)",
            Config::vivit_b_16x2_fdp(), false, |o| build(configure(Config::vivit_b_16x2_fdp(), o)?, o.seed)),
        preset("vivit-fe-tiny", "ViViT Model 2, tiny: 8x32x32, tubelet 2x8x8, D 64, 4 spatial + 2 temporal layers",
            Config::tiny_model(fe_tiny, NUM_CLASSES), true,
            |o| build(configure(Config::tiny_model(Model::FactorisedEncoder { temporal_layers: 2 }, NUM_CLASSES), o)?, o.seed)),
        preset("vivit-fsa-tiny", "ViViT Model 3, tiny: 8x32x32, tubelet 2x8x8, D 64, 4 layers",
            Config::tiny_model(Model::FactorisedSelfAttention, NUM_CLASSES), true,
            |o| build(configure(Config::tiny_model(Model::FactorisedSelfAttention, NUM_CLASSES), o)?, o.seed)),
        preset("vivit-fdp-tiny", "ViViT Model 4, tiny: 8x32x32, tubelet 2x8x8, D 64, 4 layers",
            Config::tiny_model(Model::FactorisedDotProduct, NUM_CLASSES), true,
            |o| build(configure(Config::tiny_model(Model::FactorisedDotProduct, NUM_CLASSES), o)?, o.seed)),
    ]
}
