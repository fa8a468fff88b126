//! Parity modules of ViViT (scenic, `scenic/projects/vivit/model.py`). scenic's keys are the
//! flattened Flax parameter paths joined by '/', its arrays keep Flax layouts, and its inputs
//! are channels-last (B, T, H, W, C). The clip size comes from the input.
//!
//! `vivit.ViViT` (Models 1, 3, 4) reads the constructor's fields: `num_classes`, `mlp_dim`,
//! `num_layers`, `num_heads`, `hidden_size`, `patches.size` = (fh, fw, ft),
//! `temporal_encoding_config.method`, `attention_config.type` (required: scenic's `Encoder` reads
//! it without a default) and, for Model 3, `attention_config.attention_order` (required there),
//! `representation_size` (None), `dropout_rate` (0.1), `attention_dropout_rate` (0.1),
//! `stochastic_droplayer_rate` (0), `classifier` ('gap'), `return_prelogits` (False),
//! `return_preclassifier` (False), `dtype` (float32); and the call's `train` (required) and
//! `debug` (False).
//!
//! `vivit.SpaceTimeViViT` (Model 2, the factorised encoder) reads `spatial_mlp_dim`,
//! `spatial_num_layers`, `spatial_num_heads`, `temporal_mlp_dim`, `temporal_num_layers`,
//! `temporal_num_heads` (the fields that `ViViTClassificationModel` fills from the config's
//! `model.spatial_transformer` / `model.temporal_transformer`), `attention_config.type` (the
//! encoders' blocks: 'spacetime' or 'factorized_encoder') and
//! `attention_config.spatial_only_baseline` (False), and the fields above that it shares with
//! `ViViT` (no `return_preclassifier`).
//!
//! Ported: both `temporal_encoding_config.method`s, `3d_conv` (tubelets; `patches.size` (fh,
//! fw, ft)) and `temporal_sampling` (uniform frame sampling of `n_sampled_frames` frames, 2-D
//! patches; `patches.size` (fh, fw)); `kernel_init_method` only initialises the kernel and is
//! accepted and unused. The pre-logits layer (`representation_size`: Dense + tanh, or null)
//! `return_prelogits` (the pooled pre-logits out, no `output_projection`) and, for `vivit.ViViT`,
//! `return_preclassifier` (the encoder's normalised tokens out, no head; it wins over
//! `return_prelogits`, as scenic returns first);
//! and every `classifier` ('token', '0', 'gap', 'gmp', 'gsp'; the factorised attentions without
//! 'token' and '0', as scenic asserts) throughout; Model 1 ('spacetime', or
//! 'factorized_encoder', which scenic's `ViViT` runs as 'spacetime'); Model 3
//! ('factorized_self_attention_block', attention_order 'time_space' or 'space_time'); Model 4
//! ('factorized_dot_product_attention'); Model 2 (its encoders' own heads and MLP sizes, and
//! `spatial_only_baseline`: the frames averaged instead of the temporal encoder, whose
//! `temporal_*` fields are then read but unused, as in scenic). Other settings are
//! errors that say so; dropout and stochastic depth are refused only with `train: true` (they
//! are inert in eval).

use tubelet::{Error, Result};
use tubelet_models::vivit::{
    build, AttentionOrder, Classifier, Config, Model, Output, TemporalEncoding,
};

use super::{Block, ConfigReader, Module, Whole};

pub fn modules() -> Vec<Module> {
    vec![
        Module {
            name: "vivit.ViViT",
            summary: "scenic ViViT; ported: Model 1 (spacetime), Model 3 \
                      (factorized_self_attention_block, time_space or space_time), Model 4 \
                      (factorized_dot_product_attention); every classifier scenic allows; 3d_conv \
                      tubelets or temporal_sampling; representation_size; return_prelogits, return_preclassifier",
            train_default: None,
            build: build_vivit,
        },
        Module {
            name: "vivit.SpaceTimeViViT",
            summary: "scenic SpaceTimeViViT (Model 2, factorised encoder); ported: every classifier, 3d_conv \
                      tubelets or temporal_sampling, representation_size, any heads and MLP sizes, spatial_only_baseline, return_prelogits",
            train_default: None,
            build: build_space_time_vivit,
        },
    ]
}

fn unsupported(module: &str, what: String) -> Error {
    Error::Config(format!(
        "{module}: {what} is not implemented in tubelet's port"
    ))
}

/// The fields that `ViViT` and `SpaceTimeViViT` share, read and checked.
struct Common {
    num_classes: usize,
    hidden_size: usize,
    /// (ft, fh, fw), from scenic's `patches.size` = (fh, fw, ft) (3d_conv) or (fh, fw)
    /// (temporal_sampling; ft is then 1).
    tubelet: [usize; 3],
    temporal_encoding: TemporalEncoding,
    representation_size: Option<usize>,
    classifier: String,
    /// Logits, or the pre-logits with `return_prelogits`.
    output: Output,
}

fn read_common(module: &str, c: &mut ConfigReader, input: &[usize], train: bool) -> Result<Common> {
    let num_classes = c.usize("num_classes", None)?;
    let hidden_size = c.usize("hidden_size", None)?;
    c.require_object("temporal_encoding_config")?;
    let method = c.string("temporal_encoding_config.method", None)?;
    let (tubelet, temporal_encoding) = match method.as_str() {
        "3d_conv" => {
            // scenic embed_3d_patch: `fh, fw, ft = patches.size`, kernel (ft, fh, fw).
            let size = c.usizes("patches.size", Some(3))?;
            // Initialisation only (central / average frame initialisers of the kernel).
            c.ignore("temporal_encoding_config.kernel_init_method");
            c.ignore("temporal_encoding_config.n_sampled_frames"); // read by 'temporal_sampling' only
            ([size[2], size[0], size[1]], TemporalEncoding::TubeletEmbedding)
        }
        "temporal_sampling" => {
            // scenic embed_2d_patch: `fh, fw = patches.size`, a Conv2d over the stacked frames.
            let size = c.usizes("patches.size", Some(2))?;
            let n_sampled_frames = c.usize("temporal_encoding_config.n_sampled_frames", None)?;
            c.ignore("temporal_encoding_config.kernel_init_method"); // read by '3d_conv' only
            ([1, size[0], size[1]], TemporalEncoding::UniformFrameSampling { n_sampled_frames })
        }
        other => {
            return Err(Error::Config(format!(
                "{module} config: temporal_encoding_config.method {other:?}; scenic's temporal_encode accepts \"3d_conv\" and \"temporal_sampling\""
            )))
        }
    };
    let representation_size = c.opt_usize("representation_size")?;
    let dropout_rate = c.f64("dropout_rate", Some(0.1))?;
    let attention_dropout_rate = c.f64("attention_dropout_rate", Some(0.1))?;
    let droplayer = c.f64("stochastic_droplayer_rate", Some(0.0))?;
    let classifier = c.string("classifier", Some("gap"))?;
    let return_prelogits = c.bool("return_prelogits", Some(false))?;
    let dtype = c.string("dtype", Some("float32"))?;
    c.bool("debug", Some(false))?;

    if Classifier::parse(&classifier).is_none() {
        return Err(Error::Config(format!(
            "{module} config: classifier {classifier:?} is not one of scenic's \"token\", \"0\", \"gap\", \"gmp\", \"gsp\""
        )));
    }
    if representation_size == Some(0) {
        return Err(unsupported(
            module,
            "representation_size 0 (a pre_logits Dense of width 0)".to_string(),
        ));
    }
    if dtype != "float32" {
        return Err(unsupported(
            module,
            format!("dtype {dtype:?} (implemented: \"float32\")"),
        ));
    }
    if train && (dropout_rate != 0.0 || attention_dropout_rate != 0.0 || droplayer != 0.0) {
        return Err(unsupported(
            module,
            format!(
                "train: true with dropout_rate {dropout_rate}, attention_dropout_rate {attention_dropout_rate}, \
                 stochastic_droplayer_rate {droplayer} (random; set them to 0, as the released configs do, or \
                 use train: false)"
            ),
        ));
    }
    if input.len() != 5 || input[4] != 3 {
        return Err(Error::Shape(format!(
            "{module} takes a channels-last clip (B, T, H, W, 3); input has shape {input:?}"
        )));
    }
    Ok(Common {
        num_classes,
        hidden_size,
        tubelet,
        temporal_encoding,
        representation_size,
        classifier,
        output: if return_prelogits {
            Output::PreLogits
        } else {
            Output::Logits
        },
    })
}

/// The port's config for a clip of `input`'s size.
fn port_config(
    common: &Common,
    input: &[usize],
    layers: usize,
    heads: usize,
    mlp_dim: usize,
    model: Model,
) -> Config {
    Config {
        frames: input[1],
        height: input[2],
        width: input[3],
        tubelet: common.tubelet,
        hidden: common.hidden_size,
        layers,
        heads,
        mlp_dim,
        num_classes: common.num_classes,
        model,
        temporal_encoding: common.temporal_encoding,
        representation_size: common.representation_size,
        attention_order: AttentionOrder::TimeSpace,
        classifier: Classifier::parse(&common.classifier).expect("checked in read_common"),
        temporal_heads: None,
        temporal_mlp_dim: None,
        spatial_only_baseline: false,
        output: common.output,
    }
}

fn build_vivit(c: &mut ConfigReader, input: &[usize], train: bool) -> Result<Box<dyn Block>> {
    const M: &str = "vivit.ViViT";
    let mlp_dim = c.usize("mlp_dim", None)?;
    let num_layers = c.usize("num_layers", None)?;
    let num_heads = c.usize("num_heads", None)?;
    c.require_object("attention_config")?;
    let attention = c.string("attention_config.type", None)?;
    c.ignore("attention_config.attention_kernel_init_method"); // initialisation only
    let return_preclassifier = c.bool("return_preclassifier", Some(false))?;
    let common = read_common(M, c, input, train)?;
    let classifier = common.classifier.as_str();
    let token = classifier == "token" || classifier == "0";
    let mut order_of = AttentionOrder::TimeSpace;
    let model = match attention.as_str() {
        // scenic's Encoder runs 'factorized_encoder' with the plain EncoderBlock too.
        "spacetime" | "factorized_encoder" => {
            c.ignore("attention_config.attention_order"); // read by Model 3 only
            Model::SpatioTemporal
        }
        "factorized_self_attention_block" | "factorized_dot_product_attention" => {
            if token {
                return Err(Error::Config(format!(
                    "{M} config: classifier {classifier:?} with attention_config.type {attention:?}: scenic asserts that \
                     the factorised attentions have no token classifier; use \"gap\", \"gmp\" or \"gsp\""
                )));
            }
            if attention == "factorized_self_attention_block" {
                let order = c.string("attention_config.attention_order", None)?;
                order_of = match order.as_str() {
                    "time_space" => AttentionOrder::TimeSpace,
                    "space_time" => AttentionOrder::SpaceTime,
                    // EncoderFactorizedSelfAttentionBlock raises ValueError('Invalid attention order').
                    other => {
                        return Err(Error::Config(format!(
                            "{M} config: attention_config.attention_order {other:?}; scenic accepts \"time_space\" and \"space_time\""
                        )))
                    }
                };
                Model::FactorisedSelfAttention
            } else {
                c.ignore("attention_config.attention_order"); // read by Model 3 only
                if num_heads % 2 != 0 {
                    return Err(Error::Config(format!(
                        "{M} config: factorized_dot_product_attention splits the heads between time and space: \
                         num_heads {num_heads} must be even"
                    )));
                }
                Model::FactorisedDotProduct
            }
        }
        other => {
            return Err(unsupported(
                M,
                format!(
                    "attention_config.type {other:?} (implemented: \"spacetime\", \"factorized_self_attention_block\", \
                     \"factorized_dot_product_attention\"; Model 2 is vivit.SpaceTimeViViT)"
                ),
            ))
        }
    };
    let config = Config {
        attention_order: order_of,
        // scenic returns before the classifier first: return_preclassifier wins.
        output: if return_preclassifier {
            Output::PreClassifier
        } else {
            common.output
        },
        ..port_config(&common, input, num_layers, num_heads, mlp_dim, model)
    };
    Ok(Box::new(Whole(build(config, 0)?)))
}

fn build_space_time_vivit(
    c: &mut ConfigReader,
    input: &[usize],
    train: bool,
) -> Result<Box<dyn Block>> {
    const M: &str = "vivit.SpaceTimeViViT";
    let spatial_mlp_dim = c.usize("spatial_mlp_dim", None)?;
    let spatial_num_layers = c.usize("spatial_num_layers", None)?;
    let spatial_num_heads = c.usize("spatial_num_heads", None)?;
    let temporal_mlp_dim = c.usize("temporal_mlp_dim", None)?;
    let temporal_num_layers = c.usize("temporal_num_layers", None)?;
    let temporal_num_heads = c.usize("temporal_num_heads", None)?;
    c.require_object("attention_config")?;
    let attention = c.string("attention_config.type", None)?;
    c.ignore("attention_config.attention_kernel_init_method"); // initialisation only
    let spatial_only = c.bool("attention_config.spatial_only_baseline", Some(false))?;
    let common = read_common(M, c, input, train)?;
    if attention != "spacetime" && attention != "factorized_encoder" {
        return Err(unsupported(
            M,
            format!("attention_config.type {attention:?} in the encoders (implemented: \"factorized_encoder\", \"spacetime\")"),
        ));
    }
    let model = Model::FactorisedEncoder {
        temporal_layers: temporal_num_layers,
    };
    let config = Config {
        temporal_heads: Some(temporal_num_heads),
        temporal_mlp_dim: Some(temporal_mlp_dim),
        spatial_only_baseline: spatial_only,
        ..port_config(
            &common,
            input,
            spatial_num_layers,
            spatial_num_heads,
            spatial_mlp_dim,
            model,
        )
    };
    Ok(Box::new(Whole(build(config, 0)?)))
}
