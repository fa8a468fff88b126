//! Parity modules of UniFormer (Sense-X/UniFormer, `video_classification/slowfast/models/
//! uniformer.py`): `uniformer.CBlock` and `uniformer.SABlock` on x (B, dim, T, H, W), keys as
//! the blocks' own state_dict (`pos_embed.weight`, `norm1.running_mean`, `attn.qkv.weight`, …).
//!
//! Both read the constructor's `dim`, `num_heads` (required; unused by CBlock), `mlp_ratio`
//! (4.0, an integer here), `qkv_bias` (False), `qk_scale` (None), `drop`, `attn_drop`,
//! `drop_path` (0). SABlock also reads `norm_layer`: "nn.LayerNorm" (the default, eps 1e-5) or
//! "partial(nn.LayerNorm, eps=1e-6)" (what the `Uniformer` model passes). CBlock in eval uses
//! the BatchNorm running statistics from the file; `train: true` uses the batch's (and updates
//! the buffers, as PyTorch does). Random rates are refused with `train: true` unless 0.

use tubelet::nn::Init;
use tubelet::{Error, Result, Tensor};
use tubelet_models::uniformer::{CBlock, SABlock};

use super::{Block, ConfigReader, Module};

pub fn modules() -> Vec<Module> {
    vec![
        Module {
            name: "uniformer.CBlock",
            summary: "UniFormer local MHRA block (DPE, BatchNorm, 1x1x1 / depthwise 5^3 / 1x1x1 convs, conv MLP) on (B, C, T, H, W)",
            train_default: Some(false),
            build: build_cblock,
        },
        Module {
            name: "uniformer.SABlock",
            summary: "UniFormer global MHRA block (DPE, LayerNorm, multi-head self-attention, MLP) on (B, C, T, H, W); ported: qk_scale None",
            train_default: Some(false),
            build: build_sablock,
        },
    ]
}

struct Common {
    dim: usize,
    heads: usize,
    mlp_ratio: usize,
    qkv_bias: bool,
    drop_path: f32,
}

fn common(c: &mut ConfigReader, module: &str, input: &[usize], train: bool) -> Result<Common> {
    let dim = c.usize("dim", None)?;
    let heads = c.usize("num_heads", None)?;
    let mlp_ratio = c.f64("mlp_ratio", Some(4.0))?;
    let qkv_bias = c.bool("qkv_bias", Some(false))?;
    let qk_scale = c.opt_f64("qk_scale")?;
    let drop = c.f64("drop", Some(0.0))?;
    let attn_drop = c.f64("attn_drop", Some(0.0))?;
    let drop_path = c.f64("drop_path", Some(0.0))?;
    let unsupported = |what: String| Error::Config(format!("{module}: {what} is not implemented in tubelet's port"));
    if mlp_ratio.fract() != 0.0 || mlp_ratio < 1.0 {
        return Err(unsupported(format!("mlp_ratio {mlp_ratio} (implemented: a positive integer)")));
    }
    if let Some(s) = qk_scale {
        return Err(unsupported(format!("qk_scale {s} (implemented: null, head_dim^-0.5)")));
    }
    if train && (drop != 0.0 || attn_drop != 0.0 || drop_path != 0.0) {
        return Err(unsupported(format!(
            "train: true with drop {drop}, attn_drop {attn_drop}, drop_path {drop_path} (random; set them to 0 or use train: false)"
        )));
    }
    if !(0.0..1.0).contains(&drop_path) {
        return Err(Error::Config(format!("{module} config: drop_path {drop_path} must be in [0, 1)")));
    }
    if input.len() != 5 || input[1] != dim || input.contains(&0) {
        return Err(Error::Shape(format!("{module} takes x (B, dim = {dim}, T, H, W); input has shape {input:?}")));
    }
    Ok(Common { dim, heads, mlp_ratio: mlp_ratio as usize, qkv_bias, drop_path: drop_path as f32 })
}

struct C(CBlock);

impl Block for C {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.0.forward(x, train)
    }
    fn named_params(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.0.params("", &mut out);
        out.into_iter().map(|(k, t)| (k.trim_start_matches('.').to_string(), t)).collect()
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.0.buffers("", &mut out);
        out.into_iter().map(|(k, t)| (k.trim_start_matches('.').to_string(), t)).collect()
    }
}

fn build_cblock(c: &mut ConfigReader, input: &[usize], train: bool) -> Result<Box<dyn Block>> {
    let k = common(c, "uniformer.CBlock", input, train)?;
    Ok(Box::new(C(CBlock::new(&mut Init::new(0), k.dim, k.mlp_ratio, k.drop_path)?)))
}

struct Sa(SABlock);

impl Block for Sa {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.0.forward(x, train)
    }
    fn named_params(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.0.params("", &mut out);
        out.into_iter().map(|(k, t)| (k.trim_start_matches('.').to_string(), t)).collect()
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

fn build_sablock(c: &mut ConfigReader, input: &[usize], train: bool) -> Result<Box<dyn Block>> {
    const M: &str = "uniformer.SABlock";
    let norm = c.string("norm_layer", Some("nn.LayerNorm"))?;
    let eps = match norm.as_str() {
        "nn.LayerNorm" => 1e-5,
        "partial(nn.LayerNorm, eps=1e-6)" => 1e-6,
        other => {
            return Err(Error::Config(format!(
                "{M} config: norm_layer {other:?}; accepted: \"nn.LayerNorm\", \"partial(nn.LayerNorm, eps=1e-6)\""
            )))
        }
    };
    let k = common(c, M, input, train)?;
    if k.heads == 0 || k.dim % k.heads != 0 {
        return Err(Error::Config(format!("{M} config: dim {} is not divisible by num_heads {}", k.dim, k.heads)));
    }
    Ok(Box::new(Sa(SABlock::new(&mut Init::new(0), k.dim, k.heads, k.mlp_ratio, k.qkv_bias, k.drop_path, eps)?)))
}
