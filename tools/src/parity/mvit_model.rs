//! Parity module of the whole MViT (facebookresearch/SlowFast,
//! `slowfast/models/video_model_builder.py::MViT`): `mvit.MViT`, (B, 3, T, H, W) -> (B, classes),
//! keys as its state_dict (`patch_embed.proj.weight`, `blocks.1.attn.pool_q.weight`,
//! `head.projection.weight`, …). The official forward takes a SlowFast list and uses `x[0]`;
//! here the clip itself.
//!
//! The constructor takes a yacs cfg; the config is that cfg's groups with their key names, and
//! a missing key takes SlowFast's `slowfast/config/defaults.py` value:
//! - `DATA.NUM_FRAMES` (8), `DATA.TRAIN_CROP_SIZE` (224) and `DATA.TEST_CROP_SIZE` (256; the
//!   official constructor asserts they are equal), `DATA.INPUT_CHANNEL_NUM` ([3, 3]; 3 here).
//!   The input must be (B, 3, NUM_FRAMES, crop, crop).
//! - `MVIT.PATCH_KERNEL` ([3,7,7]), `PATCH_STRIDE` ([2,4,4]), `PATCH_PADDING` ([2,4,4]),
//!   `EMBED_DIM` (96), `NUM_HEADS` (1), `MLP_RATIO` (4.0), `QKV_BIAS` (True), `DEPTH` (16),
//!   `DIM_MUL`, `HEAD_MUL` ([[block, multiplier], …]; []), `POOL_Q_STRIDE` ([[block, st, sh,
//!   sw], …]; []), `POOL_KVQ_KERNEL` (None), `POOL_KV_STRIDE_ADAPTIVE` (None), `POOL_KV_STRIDE`
//!   ([]; only empty without ADAPTIVE), `MODE` ("conv"; "avg", "max"), `DROPPATH_RATE` (0.1),
//!   `DROPOUT_RATE` (0.0), and the version switches below.
//! - `MODEL.NUM_CLASSES` (400), `MODEL.DROPOUT_RATE` (0.5, the head's), `MODEL.HEAD_ACT`
//!   ("softmax"; "none"): the official head applies it when not training, and so does this
//!   module, so the output is what the official module returns (the zoo model itself always
//!   returns logits).
//!
//! Ported (every released MViT): v1 = `USE_ABS_POS` True, `SEP_POS_EMBED` True, no relative
//! positions, no residual pooling, `DIM_MUL_IN_ATT` False; v2 = `USE_ABS_POS` False,
//! `REL_POS_SPATIAL`, `REL_POS_TEMPORAL`, `RESIDUAL_POOLING`, `DIM_MUL_IN_ATT` True; with
//! `CLS_EMBED_ON` True, `USE_MEAN_POOLING`, `POOL_FIRST`, `SEPARATE_QKV`, `NORM_STEM`,
//! `PATCH_2D`, `USE_FIXED_SINCOS_POS`, `REV.ENABLE`, `DETECTION.ENABLE`,
//! `MODEL.DETACH_FINAL_FC` False, `NORM` "layernorm", `CONTRASTIVE.NUM_MLP_LAYERS` 1. Other
//! settings are errors that say so. Initialisation-only settings (`LAYER_SCALE_INIT_VALUE`,
//! which the official constructor reads but does not pass on, `HEAD_INIT_SCALE`,
//! `REL_POS_ZERO_INIT`, `ZERO_DECAY_POS_CLS`) and `MODEL.ACT_CHECKPOINT` (memory only) are
//! accepted. Dropout and drop path are refused with `train: true` unless 0.

use serde_json::Value;
use tubelet::{Error, Result, Tensor};
use tubelet_models::mvit::{Config, MViT, PoolMode, Version};
use tubelet_models::VideoModel;

use super::{Block, ConfigReader, Module};

const M: &str = "mvit.MViT";

pub fn modules() -> Vec<Module> {
    vec![Module {
        name: M,
        summary: "SlowFast MViT v1/v2 classifier, cfg fields MVIT.*, MODEL.*, DATA.*, (B, 3, T, H, W) -> (B, classes) (softmax in eval, as the official head); ported: cls token, v1 sep pos / v2 rel pos",
        train_default: Some(false),
        build: build_mvit,
    }]
}

fn unsupported(what: String) -> Error {
    Error::Config(format!("{M}: {what} is not implemented in tubelet's port"))
}

fn bad(key: &str, want: &str, got: &Value) -> Error {
    Error::Config(format!(
        "{M} config: field {key:?} must be {want}, got {got}"
    ))
}

fn triple(c: &mut ConfigReader, key: &str, default: [usize; 3]) -> Result<[usize; 3]> {
    if !c.has(key) {
        return Ok(default);
    }
    let v = c.usizes(key, Some(3))?;
    Ok([v[0], v[1], v[2]])
}

/// A list of lists `[[i, x1, …, xk], …]` whose first element is a block index.
fn indexed(c: &mut ConfigReader, key: &str, k: usize) -> Result<Vec<(usize, Vec<f64>)>> {
    let Some(v) = c.json(key) else {
        return Ok(Vec::new());
    };
    let want = format!("a list of [block, {k} number(s)] lists");
    let rows = v.as_array().ok_or_else(|| bad(key, &want, &v))?;
    rows.iter()
        .map(|row| {
            let r = row
                .as_array()
                .filter(|r| r.len() == k + 1)
                .ok_or_else(|| bad(key, &want, &v))?;
            let i = r[0].as_u64().ok_or_else(|| bad(key, &want, &v))? as usize;
            let rest: Option<Vec<f64>> = r[1..].iter().map(Value::as_f64).collect();
            Ok((i, rest.ok_or_else(|| bad(key, &want, &v))?))
        })
        .collect()
}

/// The strides of a `[[block, st, sh, sw], …]` list as integers.
fn strides(key: &str, rows: Vec<(usize, Vec<f64>)>) -> Result<Vec<(usize, [usize; 3])>> {
    rows.into_iter()
        .map(|(i, s)| {
            if s.iter().any(|v| v.fract() != 0.0 || *v < 1.0) {
                return Err(Error::Config(format!("{M} config: {key} entry for block {i} has strides {s:?}; they must be positive integers")));
            }
            Ok((i, [s[0] as usize, s[1] as usize, s[2] as usize]))
        })
        .collect()
}

struct Wrapped {
    model: MViT,
    /// MODEL.HEAD_ACT softmax, applied when not training as the official head does.
    softmax: bool,
}

impl Block for Wrapped {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.model.forward(x, train)?;
        if self.softmax && !train {
            return y.try_softmax();
        }
        Ok(y)
    }
    fn named_params(&self) -> Vec<(String, Tensor)> {
        self.model.named_params()
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        self.model.named_buffers()
    }
}

fn build_mvit(c: &mut ConfigReader, input: &[usize], train: bool) -> Result<Box<dyn Block>> {
    // DATA
    let frames = c.usize("DATA.NUM_FRAMES", Some(8))?;
    let crop = c.usize("DATA.TRAIN_CROP_SIZE", Some(224))?;
    let test_crop = c.usize("DATA.TEST_CROP_SIZE", Some(256))?;
    let in_chans = if c.has("DATA.INPUT_CHANNEL_NUM") {
        c.usizes("DATA.INPUT_CHANNEL_NUM", None)?
    } else {
        vec![3, 3]
    };
    // MODEL
    let num_classes = c.usize("MODEL.NUM_CLASSES", Some(400))?;
    let head_dropout = c.f64("MODEL.DROPOUT_RATE", Some(0.5))?;
    let head_act = c.string("MODEL.HEAD_ACT", Some("softmax"))?;
    let detach_final_fc = c.bool("MODEL.DETACH_FINAL_FC", Some(false))?;
    c.ignore("MODEL.ACT_CHECKPOINT");
    let detection = c.bool("DETECTION.ENABLE", Some(false))?;
    let mlp_layers = c.usize("CONTRASTIVE.NUM_MLP_LAYERS", Some(1))?;
    // MVIT
    let mode = c.string("MVIT.MODE", Some("conv"))?;
    let pool_first = c.bool("MVIT.POOL_FIRST", Some(false))?;
    let cls_embed_on = c.bool("MVIT.CLS_EMBED_ON", Some(true))?;
    let patch_kernel = triple(c, "MVIT.PATCH_KERNEL", [3, 7, 7])?;
    let patch_stride = triple(c, "MVIT.PATCH_STRIDE", [2, 4, 4])?;
    let patch_padding = triple(c, "MVIT.PATCH_PADDING", [2, 4, 4])?;
    let patch_2d = c.bool("MVIT.PATCH_2D", Some(false))?;
    let embed_dim = c.usize("MVIT.EMBED_DIM", Some(96))?;
    let num_heads = c.usize("MVIT.NUM_HEADS", Some(1))?;
    let mlp_ratio = c.f64("MVIT.MLP_RATIO", Some(4.0))?;
    let qkv_bias = c.bool("MVIT.QKV_BIAS", Some(true))?;
    let drop_path_rate = c.f64("MVIT.DROPPATH_RATE", Some(0.1))?;
    let depth = c.usize("MVIT.DEPTH", Some(16))?;
    let norm = c.string("MVIT.NORM", Some("layernorm"))?;
    let dim_mul: Vec<(usize, f64)> = indexed(c, "MVIT.DIM_MUL", 1)?
        .into_iter()
        .map(|(i, m)| (i, m[0]))
        .collect();
    let head_mul: Vec<(usize, f64)> = indexed(c, "MVIT.HEAD_MUL", 1)?
        .into_iter()
        .map(|(i, m)| (i, m[0]))
        .collect();
    let pool_kv_stride = indexed(c, "MVIT.POOL_KV_STRIDE", 3)?;
    let adaptive = if c.has_opt("MVIT.POOL_KV_STRIDE_ADAPTIVE") {
        Some(triple(c, "MVIT.POOL_KV_STRIDE_ADAPTIVE", [1, 1, 1])?)
    } else {
        None
    };
    let pool_q_stride = strides("MVIT.POOL_Q_STRIDE", indexed(c, "MVIT.POOL_Q_STRIDE", 3)?)?;
    let pool_kvq_kernel = if c.has_opt("MVIT.POOL_KVQ_KERNEL") {
        Some(triple(c, "MVIT.POOL_KVQ_KERNEL", [1, 1, 1])?)
    } else {
        None
    };
    let norm_stem = c.bool("MVIT.NORM_STEM", Some(false))?;
    let sep_pos_embed = c.bool("MVIT.SEP_POS_EMBED", Some(false))?;
    let dropout_rate = c.f64("MVIT.DROPOUT_RATE", Some(0.0))?;
    let use_abs_pos = c.bool("MVIT.USE_ABS_POS", Some(true))?;
    let rel_pos_spatial = c.bool("MVIT.REL_POS_SPATIAL", Some(false))?;
    let rel_pos_temporal = c.bool("MVIT.REL_POS_TEMPORAL", Some(false))?;
    let residual_pooling = c.bool("MVIT.RESIDUAL_POOLING", Some(false))?;
    let dim_mul_in_att = c.bool("MVIT.DIM_MUL_IN_ATT", Some(false))?;
    let separate_qkv = c.bool("MVIT.SEPARATE_QKV", Some(false))?;
    let use_mean_pooling = c.bool("MVIT.USE_MEAN_POOLING", Some(false))?;
    let fixed_sincos = c.bool("MVIT.USE_FIXED_SINCOS_POS", Some(false))?;
    let rev = c.bool("MVIT.REV.ENABLE", Some(false))?;
    for k in [
        "MVIT.LAYER_SCALE_INIT_VALUE",
        "MVIT.HEAD_INIT_SCALE",
        "MVIT.REL_POS_ZERO_INIT",
        "MVIT.ZERO_DECAY_POS_CLS",
    ] {
        c.ignore(k); // initialisation and optimiser settings
    }
    if rev {
        return Err(unsupported(
            "MVIT.REV.ENABLE true (the reversible MViT)".to_string(),
        ));
    }

    if crop != test_crop {
        return Err(Error::Config(format!(
            "{M} config: DATA.TRAIN_CROP_SIZE {crop} differs from DATA.TEST_CROP_SIZE {test_crop} (the official constructor asserts they are equal)"
        )));
    }
    if in_chans.first() != Some(&3) {
        return Err(unsupported(format!(
            "DATA.INPUT_CHANNEL_NUM {in_chans:?} (implemented: 3 input channels)"
        )));
    }
    let flags = [
        ("DETECTION.ENABLE", detection, false),
        ("MODEL.DETACH_FINAL_FC", detach_final_fc, false),
        ("MVIT.POOL_FIRST", pool_first, false),
        ("MVIT.CLS_EMBED_ON", cls_embed_on, true),
        ("MVIT.PATCH_2D", patch_2d, false),
        ("MVIT.NORM_STEM", norm_stem, false),
        ("MVIT.SEPARATE_QKV", separate_qkv, false),
        ("MVIT.USE_MEAN_POOLING", use_mean_pooling, false),
        ("MVIT.USE_FIXED_SINCOS_POS", fixed_sincos, false),
    ];
    if let Some((k, v, want)) = flags.iter().find(|(_, v, want)| v != want) {
        return Err(unsupported(format!("{k} {v} (implemented: {want})")));
    }
    if mlp_layers != 1 {
        return Err(unsupported(format!(
            "CONTRASTIVE.NUM_MLP_LAYERS {mlp_layers} (implemented: 1, a linear head)"
        )));
    }
    if norm != "layernorm" {
        return Err(Error::Config(format!(
            "{M} config: MVIT.NORM {norm:?}; the official code supports only \"layernorm\""
        )));
    }
    let softmax = match head_act.as_str() {
        "softmax" => true,
        "none" => false,
        other => {
            return Err(unsupported(format!(
                "MODEL.HEAD_ACT {other:?} (implemented: \"softmax\", \"none\")"
            )))
        }
    };
    let mode = match mode.as_str() {
        "conv" => PoolMode::Conv,
        "avg" => PoolMode::Avg,
        "max" => PoolMode::Max,
        other => {
            return Err(unsupported(format!(
                "MVIT.MODE {other:?} (implemented: \"conv\", \"avg\", \"max\")"
            )))
        }
    };
    let v1 = use_abs_pos
        && sep_pos_embed
        && !rel_pos_spatial
        && !rel_pos_temporal
        && !residual_pooling
        && !dim_mul_in_att;
    let v2 =
        !use_abs_pos && rel_pos_spatial && rel_pos_temporal && residual_pooling && dim_mul_in_att;
    let version = match (v1, v2) {
        (true, _) => Version::V1,
        (_, true) => Version::V2,
        _ => {
            return Err(unsupported(format!(
                "USE_ABS_POS {use_abs_pos}, SEP_POS_EMBED {sep_pos_embed}, REL_POS_SPATIAL {rel_pos_spatial}, REL_POS_TEMPORAL {rel_pos_temporal}, RESIDUAL_POOLING {residual_pooling}, DIM_MUL_IN_ATT {dim_mul_in_att} (implemented: MViT v1 = true, true, false, false, false, false; MViTv2 = false, any, true, true, true, true)"
            )))
        }
    };
    // Without POOL_KV_STRIDE_ADAPTIVE the official code pools k and v only where
    // POOL_KV_STRIDE says; the port derives the kv schedule from the adaptive stride alone.
    let pool_kv_stride_adaptive = match adaptive {
        Some(a) => a,
        None if pool_kv_stride.is_empty() && pool_kvq_kernel.is_none() => [1, 1, 1], // no kv pooling
        None => {
            return Err(unsupported(
                "MVIT.POOL_KV_STRIDE_ADAPTIVE null with POOL_KV_STRIDE or POOL_KVQ_KERNEL set (implemented: the adaptive kv schedule, as every released config)".to_string(),
            ))
        }
    };
    if train {
        let rates = [
            ("MVIT.DROPPATH_RATE", drop_path_rate),
            ("MVIT.DROPOUT_RATE", dropout_rate),
            ("MODEL.DROPOUT_RATE", head_dropout),
        ];
        if let Some((k, v)) = rates.iter().find(|(_, v)| *v != 0.0) {
            return Err(unsupported(format!(
                "train: true with {k} {v} (random; set it to 0 or use train: false)"
            )));
        }
    }
    if !(0.0..1.0).contains(&drop_path_rate) || !(0.0..1.0).contains(&head_dropout) {
        return Err(Error::Config(format!(
            "{M} config: MVIT.DROPPATH_RATE {drop_path_rate} and MODEL.DROPOUT_RATE {head_dropout} must be in [0, 1)"
        )));
    }
    if !(mlp_ratio > 0.0) {
        return Err(Error::Config(format!(
            "{M} config: MVIT.MLP_RATIO {mlp_ratio} must be positive"
        )));
    }
    if input.len() != 5 || input[0] == 0 || input[1..] != [3, frames, crop, crop] {
        return Err(Error::Shape(format!(
            "{M} takes a clip batch (B, 3, DATA.NUM_FRAMES = {frames}, DATA.TRAIN_CROP_SIZE = {crop}, {crop}); input has shape {input:?}"
        )));
    }
    let config = Config {
        version,
        frames,
        crop,
        patch_kernel,
        patch_stride,
        patch_padding,
        embed_dim,
        num_heads,
        depth,
        mlp_ratio,
        qkv_bias,
        dim_mul,
        head_mul,
        pool_q_stride,
        pool_kvq_kernel,
        pool_kv_stride_adaptive,
        mode,
        drop_path_rate: drop_path_rate as f32,
        dropout_rate: head_dropout as f32,
        num_classes,
    };
    Ok(Box::new(Wrapped {
        model: MViT::new(config, 0)?,
        softmax,
    }))
}
