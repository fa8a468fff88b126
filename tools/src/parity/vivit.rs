//! Parity modules of ViViT (scenic, `scenic/projects/vivit/model.py`). scenic's keys are the
//! flattened Flax parameter paths joined by '/', its arrays keep Flax layouts, and its inputs
//! are channels-last (B, T, H, W, C).
//!
//! `vivit.ViViT` reads the constructor's fields: `num_classes`, `mlp_dim`, `num_layers`,
//! `num_heads`, `hidden_size`, `patches.size` = (fh, fw, ft), `temporal_encoding_config.method`,
//! `attention_config.type` (default 'spacetime', as `ViViT.__call__` reads it),
//! `representation_size` (None), `dropout_rate` (0.1), `attention_dropout_rate` (0.1),
//! `stochastic_droplayer_rate` (0), `classifier` ('gap'), `return_prelogits` (False),
//! `return_preclassifier` (False), `dtype` (float32); and the call's `train` (required) and
//! `debug` (False). The clip size comes from the input.
//!
//! The port covers Model 1 as released: `3d_conv` tubelets, 'spacetime' attention, the 'token'
//! classifier, no pre-logits layer. Other settings are errors that say so; dropout and
//! stochastic depth are refused only with `train: true` (they are inert in eval).

use tubelet::{Error, Result};
use tubelet_models::vivit::{Config, ViViT};

use super::{Block, ConfigReader, Module, Whole};

pub fn modules() -> Vec<Module> {
    vec![Module {
        name: "vivit.ViViT",
        summary: "scenic ViViT; ported: Model 1 (spacetime attention, 3d_conv tubelets, token classifier)",
        train_default: None,
        build: build_vivit,
    }]
}

fn unsupported(what: String) -> Error {
    Error::Config(format!("vivit.ViViT: {what} is not implemented in tubelet's port (it covers ViViT Model 1 as released)"))
}

fn build_vivit(c: &mut ConfigReader, input: &[usize], train: bool) -> Result<Box<dyn Block>> {
    let num_classes = c.usize("num_classes", None)?;
    let mlp_dim = c.usize("mlp_dim", None)?;
    let num_layers = c.usize("num_layers", None)?;
    let num_heads = c.usize("num_heads", None)?;
    let hidden_size = c.usize("hidden_size", None)?;
    // scenic embed_3d_patch: `fh, fw, ft = patches.size`, kernel (ft, fh, fw).
    let size = c.usizes("patches.size", Some(3))?;
    let (fh, fw, ft) = (size[0], size[1], size[2]);
    c.require_object("temporal_encoding_config")?;
    let method = c.string("temporal_encoding_config.method", None)?;
    c.ignore("temporal_encoding_config.kernel_init_method"); // initialisation only
    c.ignore("temporal_encoding_config.n_sampled_frames"); // read by 'temporal_sampling' only
    c.require_object("attention_config")?;
    let attention = c.string("attention_config.type", Some("spacetime"))?;
    c.ignore("attention_config.attention_order"); // read by the factorised types only
    c.ignore("attention_config.attention_kernel_init_method"); // initialisation only
    let representation_size = c.opt_usize("representation_size")?;
    let dropout_rate = c.f64("dropout_rate", Some(0.1))?;
    let attention_dropout_rate = c.f64("attention_dropout_rate", Some(0.1))?;
    let droplayer = c.f64("stochastic_droplayer_rate", Some(0.0))?;
    let classifier = c.string("classifier", Some("gap"))?;
    let return_prelogits = c.bool("return_prelogits", Some(false))?;
    let return_preclassifier = c.bool("return_preclassifier", Some(false))?;
    let dtype = c.string("dtype", Some("float32"))?;
    c.bool("debug", Some(false))?;

    if method != "3d_conv" {
        return Err(unsupported(format!("temporal_encoding_config.method {method:?} (implemented: \"3d_conv\")")));
    }
    if attention != "spacetime" {
        return Err(unsupported(format!("attention_config.type {attention:?} (implemented: \"spacetime\")")));
    }
    if classifier != "token" {
        return Err(unsupported(format!(
            "classifier {classifier:?} (scenic's default is \"gap\"; implemented: \"token\", the released configs' choice)"
        )));
    }
    if let Some(r) = representation_size {
        return Err(unsupported(format!("representation_size {r} (a pre_logits layer; implemented: null)")));
    }
    if return_prelogits || return_preclassifier {
        return Err(unsupported("return_prelogits / return_preclassifier".to_string()));
    }
    if dtype != "float32" {
        return Err(unsupported(format!("dtype {dtype:?} (implemented: \"float32\")")));
    }
    if train && (dropout_rate != 0.0 || attention_dropout_rate != 0.0 || droplayer != 0.0) {
        return Err(unsupported(format!(
            "train: true with dropout_rate {dropout_rate}, attention_dropout_rate {attention_dropout_rate}, \
             stochastic_droplayer_rate {droplayer} (random; set them to 0, as the released configs do, or \
             use train: false)"
        )));
    }
    if input.len() != 5 || input[4] != 3 {
        return Err(Error::Shape(format!(
            "vivit.ViViT takes a channels-last clip (B, T, H, W, 3); input has shape {input:?}"
        )));
    }
    // NOTE: the update keeps this compiling when other ViViT models add fields to Config.
    #[allow(clippy::needless_update)]
    let config = Config {
        frames: input[1],
        height: input[2],
        width: input[3],
        tubelet: [ft, fh, fw],
        hidden: hidden_size,
        layers: num_layers,
        heads: num_heads,
        mlp_dim,
        num_classes,
        ..Config::tiny(num_classes)
    };
    Ok(Box::new(Whole(Box::new(ViViT::new(config, 0)?))))
}
