//! Parity modules of UniFormer (Sense-X/UniFormer, `video_classification/slowfast/models/
//! uniformer.py`): `uniformer.CBlock` and `uniformer.SABlock` on x (B, dim, T, H, W), keys as
//! the blocks' own state_dict (`pos_embed.weight`, `norm1.running_mean`, `attn.qkv.weight`, …).
//!
//! Both read the constructor's `dim`, `num_heads` (required; unused by CBlock), `mlp_ratio`
//! (4.0; hidden int(dim·mlp_ratio)), `qkv_bias` (False), `qk_scale` (None), `drop`, `attn_drop`,
//! `drop_path` (0). SABlock also reads `norm_layer`: "nn.LayerNorm" (the default, eps 1e-5) or
//! "partial(nn.LayerNorm, eps=1e-6)" (what the `Uniformer` model passes). CBlock in eval uses
//! the BatchNorm running statistics from the file; `train: true` uses the batch's (and updates
//! the buffers, as PyTorch does). Random rates are refused with `train: true` unless 0.
//!
//! `uniformer.SpeicalPatchEmbed` and `uniformer.PatchEmbed` (the official names, spelling
//! included) read `img_size` (224; unused by the forward), `patch_size` (16, an integer or a
//! pair of which the official conv uses the first), `in_chans` (3), `embed_dim` (768), and for
//! PatchEmbed `std` (False); x (B, in_chans, T, H, W).
//!
//! `uniformer.Uniformer` is the whole model, (B, 3, T, H, W) -> logits (B, classes); the
//! official forward takes a SlowFast list and uses `x[0]`, here the clip itself. Its
//! constructor takes a yacs cfg; the config is that cfg's groups with their key names, and a
//! missing key takes the value of the repository's `slowfast/config/defaults.py`:
//! `UNIFORMER.DEPTH` ([3,4,8,3]) → depth, `UNIFORMER.EMBED_DIM` ([64,128,320,512]) →
//! embed_dim, `UNIFORMER.HEAD_DIM` (64; heads = dim / head_dim), `UNIFORMER.MLP_RATIO` (4),
//! `UNIFORMER.QKV_BIAS` (True), `UNIFORMER.QKV_SCALE` (None), `UNIFORMER.REPRESENTATION_SIZE`
//! (None), `UNIFORMER.DROPOUT_RATE` (0), `UNIFORMER.ATTENTION_DROPOUT_RATE` (0),
//! `UNIFORMER.DROP_DEPTH_RATE` (0.1), `UNIFORMER.SPLIT` (False), `UNIFORMER.STD` (False),
//! `MODEL.NUM_CLASSES` (400), `MODEL.USE_CHECKPOINT` (False) and `MODEL.CHECKPOINT_NUM`
//! (memory only), `DATA.INPUT_CHANNEL_NUM` ([3,3]; the first must be 3),
//! `DATA.TRAIN_CROP_SIZE` (224; the patch embeddings' nominal img_size, which the official
//! forward does not use: the clip size comes from the input, whose H and W must be multiples
//! of 32 here). `UNIFORMER.PRETRAIN_NAME` is accepted (loading happens outside the
//! constructor). Ported: SPLIT, STD False, any QKV_SCALE, REPRESENTATION_SIZE None or 0 (the official
//! constructor fails on any other), any
//! MLP_RATIO (hidden int(C·ratio) ≥ 1); the dropout rates are not applied (0 in every released config): with `train:
//! true` they and DROP_DEPTH_RATE must be 0.

use tubelet::nn::Init;
use tubelet::{Error, Result, Tensor};
use tubelet_models::uniformer::{mlp_hidden, CBlock, Config, PatchEmbed, SABlock, UniFormer};

use super::{Block, ConfigReader, Module, Part, Whole};

pub fn modules() -> Vec<Module> {
    vec![
        Module {
            name: "uniformer.SpeicalPatchEmbed",
            summary: "UniFormer stage-1 patch embedding (official spelling): Conv3d k (3, p, p), s (2, p, p), pad (1, 0, 0), LayerNorm over channels, (B, in_chans, T, H, W) -> (B, embed_dim, T', H', W')",
            train_default: Some(false),
            build: build_special_patch_embed,
        },
        Module {
            name: "uniformer.PatchEmbed",
            summary: "UniFormer stage 2-4 patch embedding: Conv3d k = s = (1, p, p) (std: k (3, p, p), s (1, p, p), pad (1, 0, 0)), LayerNorm over channels, (B, in_chans, T, H, W) -> (B, embed_dim, T', H', W')",
            train_default: Some(false),
            build: build_patch_embed,
        },
        Module {
            name: "uniformer.CBlock",
            summary: "UniFormer local MHRA block (DPE, BatchNorm, 1x1x1 / depthwise 5^3 / 1x1x1 convs, conv MLP) on (B, C, T, H, W)",
            train_default: Some(false),
            build: build_cblock,
        },
        Module {
            name: "uniformer.SABlock",
            summary: "UniFormer global MHRA block (DPE, LayerNorm, multi-head self-attention, MLP) on (B, C, T, H, W); any qkv_bias, qk_scale",
            train_default: Some(false),
            build: build_sablock,
        },
        Module {
            name: "uniformer.Uniformer",
            summary: "the video UniFormer (SlowFast codebase), cfg fields UNIFORMER.*, MODEL.*, DATA.*, (B, 3, T, H, W) -> (B, classes); ported: SPLIT, STD False",
            train_default: Some(false),
            build: build_uniformer,
        },
    ]
}

struct Common {
    dim: usize,
    heads: usize,
    mlp_ratio: f64,
    qkv_bias: bool,
    qk_scale: Option<f32>,
    drop_path: f32,
}

fn common(c: &mut ConfigReader, module: &str, input: &[usize], train: bool) -> Result<Common> {
    let dim = c.usize("dim", None)?;
    let heads = c.usize("num_heads", None)?;
    let mlp_ratio = c.f64("mlp_ratio", Some(4.0))?;
    let qkv_bias = c.bool("qkv_bias", Some(false))?;
    let qk_scale = c.qk_scale("qk_scale")?;
    let drop = c.f64("drop", Some(0.0))?;
    let attn_drop = c.f64("attn_drop", Some(0.0))?;
    let drop_path = c.f64("drop_path", Some(0.0))?;
    let unsupported = |what: String| {
        Error::Config(format!(
            "{module}: {what} is not implemented in tubelet's port"
        ))
    };
    // The MLP has int(dim · mlp_ratio) hidden units; a width of 0 is not ported.
    if !mlp_ratio.is_finite() || mlp_hidden(dim, mlp_ratio) == 0 {
        return Err(unsupported(format!(
            "mlp_ratio {mlp_ratio}: an MLP of width int({dim} × {mlp_ratio}) = 0 (implemented: width ≥ 1)"
        )));
    }
    if train && (drop != 0.0 || attn_drop != 0.0 || drop_path != 0.0) {
        return Err(unsupported(format!(
            "train: true with drop {drop}, attn_drop {attn_drop}, drop_path {drop_path} (random; set them to 0 or use train: false)"
        )));
    }
    if !(0.0..1.0).contains(&drop_path) {
        return Err(Error::Config(format!(
            "{module} config: drop_path {drop_path} must be in [0, 1)"
        )));
    }
    if input.len() != 5 || input[1] != dim || input.contains(&0) {
        return Err(Error::Shape(format!(
            "{module} takes x (B, dim = {dim}, T, H, W); input has shape {input:?}"
        )));
    }
    Ok(Common {
        dim,
        heads,
        mlp_ratio,
        qkv_bias,
        qk_scale,
        drop_path: drop_path as f32,
    })
}

struct C(CBlock);

impl Block for C {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.0.forward(x, train)
    }
    fn named_params(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.0.params("", &mut out);
        out.into_iter()
            .map(|(k, t)| (k.trim_start_matches('.').to_string(), t))
            .collect()
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.0.buffers("", &mut out);
        out.into_iter()
            .map(|(k, t)| (k.trim_start_matches('.').to_string(), t))
            .collect()
    }
}

fn build_cblock(c: &mut ConfigReader, input: &[usize], train: bool) -> Result<Box<dyn Block>> {
    let k = common(c, "uniformer.CBlock", input, train)?;
    Ok(Box::new(C(CBlock::new(
        &mut Init::new(0),
        k.dim,
        k.mlp_ratio,
        k.drop_path,
    )?)))
}

struct Sa(SABlock);

impl Block for Sa {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.0.forward(x, train)
    }
    fn named_params(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.0.params("", &mut out);
        out.into_iter()
            .map(|(k, t)| (k.trim_start_matches('.').to_string(), t))
            .collect()
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

fn build_sablock(c: &mut ConfigReader, input: &[usize], train: bool) -> Result<Box<dyn Block>> {
    const M: &str = "uniformer.SABlock";
    let eps = c.layer_norm_eps("norm_layer", 1e-5)?;
    let k = common(c, M, input, train)?;
    if k.heads == 0 || k.dim % k.heads != 0 {
        return Err(Error::Config(format!(
            "{M} config: dim {} is not divisible by num_heads {}",
            k.dim, k.heads
        )));
    }
    Ok(Box::new(Sa(SABlock::new(
        &mut Init::new(0),
        k.dim,
        k.heads,
        k.mlp_ratio,
        k.qkv_bias,
        k.qk_scale,
        k.drop_path,
        eps,
    )?)))
}

/// A list of exactly 4 non-negative integers at `key`, or `default`.
fn four(c: &mut ConfigReader, key: &str, default: [usize; 4]) -> Result<[usize; 4]> {
    if !c.has(key) {
        return Ok(default);
    }
    let v = c.usizes(key, Some(4))?;
    Ok([v[0], v[1], v[2], v[3]])
}

fn build_uniformer(c: &mut ConfigReader, input: &[usize], train: bool) -> Result<Box<dyn Block>> {
    const M: &str = "uniformer.Uniformer";
    let unsupported =
        |what: String| Error::Config(format!("{M}: {what} is not implemented in tubelet's port"));
    let depth = four(c, "UNIFORMER.DEPTH", [3, 4, 8, 3])?;
    let embed_dim = four(c, "UNIFORMER.EMBED_DIM", [64, 128, 320, 512])?;
    let head_dim = c.usize("UNIFORMER.HEAD_DIM", Some(64))?;
    let mlp_ratio = c.f64("UNIFORMER.MLP_RATIO", Some(4.0))?;
    let qkv_bias = c.bool("UNIFORMER.QKV_BIAS", Some(true))?;
    let qk_scale = c.qk_scale("UNIFORMER.QKV_SCALE")?;
    let representation = c.opt_usize("UNIFORMER.REPRESENTATION_SIZE")?;
    let drop = c.f64("UNIFORMER.DROPOUT_RATE", Some(0.0))?;
    let attn_drop = c.f64("UNIFORMER.ATTENTION_DROPOUT_RATE", Some(0.0))?;
    let drop_path = c.f64("UNIFORMER.DROP_DEPTH_RATE", Some(0.1))?;
    let split = c.bool("UNIFORMER.SPLIT", Some(false))?;
    let std = c.bool("UNIFORMER.STD", Some(false))?;
    c.ignore("UNIFORMER.PRETRAIN_NAME");
    let num_classes = c.usize("MODEL.NUM_CLASSES", Some(400))?;
    c.bool("MODEL.USE_CHECKPOINT", Some(false))?; // memory only
    c.ignore("MODEL.CHECKPOINT_NUM");
    let in_chans = if c.has("DATA.INPUT_CHANNEL_NUM") {
        c.usizes("DATA.INPUT_CHANNEL_NUM", None)?
    } else {
        vec![3, 3]
    };
    c.usize("DATA.TRAIN_CROP_SIZE", Some(224))?; // nominal img_size, unused by the forward
    if !mlp_ratio.is_finite() || mlp_hidden(embed_dim[0], mlp_ratio) == 0 {
        return Err(unsupported(format!(
            "UNIFORMER.MLP_RATIO {mlp_ratio}: stage 1's MLP of width int({} × {mlp_ratio}) = 0 (implemented: width ≥ 1)",
            embed_dim[0]
        )));
    }
    if let Some(r) = representation.filter(|&r| r > 0) {
        // Uniformer.__init__ builds nn.Linear(embed_dim, r) with embed_dim the list of the four
        // stages' widths, which PyTorch refuses; and its head would not take r features either.
        return Err(Error::Config(format!(
            "{M} config: UNIFORMER.REPRESENTATION_SIZE {r}: the official constructor fails on it (its pre_logits \
             nn.Linear gets the list UNIFORMER.EMBED_DIM as in_features); use null or 0"
        )));
    }
    if split || std {
        return Err(unsupported(format!("UNIFORMER.SPLIT {split}, UNIFORMER.STD {std} (implemented: false, as every released config)")));
    }
    if in_chans.first() != Some(&3) {
        return Err(unsupported(format!(
            "DATA.INPUT_CHANNEL_NUM {in_chans:?} (implemented: 3 input channels)"
        )));
    }
    if num_classes == 0 {
        return Err(unsupported(
            "MODEL.NUM_CLASSES 0 (the official head is then the identity)".to_string(),
        ));
    }
    if train && (drop != 0.0 || attn_drop != 0.0 || drop_path != 0.0) {
        return Err(unsupported(format!(
            "train: true with DROPOUT_RATE {drop}, ATTENTION_DROPOUT_RATE {attn_drop}, DROP_DEPTH_RATE {drop_path} (random; set them to 0 or use train: false)"
        )));
    }
    if input.len() != 5 || input[1] != 3 {
        return Err(Error::Shape(format!(
            "{M} takes a clip batch (B, 3, T, H, W); input has shape {input:?}"
        )));
    }
    let config = Config {
        frames: input[2],
        height: input[3],
        width: input[4],
        embed_dim,
        depth,
        head_dim,
        mlp_ratio,
        qkv_bias,
        qk_scale,
        drop_path_rate: drop_path as f32,
        num_classes,
    };
    Ok(Box::new(Whole(Box::new(UniFormer::new(config, 0)?))))
}

/// The patch-embedding arguments: (patch, in_chans, embed_dim); `img_size` is accepted (the
/// official forward's size check is commented out).
fn patch_args(
    c: &mut ConfigReader,
    module: &str,
    input: &[usize],
) -> Result<(usize, usize, usize)> {
    c.ignore("img_size");
    // to_2tuple(patch_size), then conv_*xnxn(kernel_size=patch_size[0], stride=patch_size[0]).
    let patch = match c.json("patch_size") {
        None => 16,
        Some(v) if v.is_u64() => c.usize("patch_size", None)?,
        Some(_) => c.usizes("patch_size", Some(2))?[0],
    };
    let in_chans = c.usize("in_chans", Some(3))?;
    let embed_dim = c.usize("embed_dim", Some(768))?;
    if patch == 0 || embed_dim == 0 {
        return Err(Error::Config(format!(
            "{module} config: patch_size {patch} and embed_dim {embed_dim} must be positive"
        )));
    }
    if input.len() != 5 || input[1] != in_chans || input.contains(&0) {
        return Err(Error::Shape(format!(
            "{module} takes x (B, in_chans = {in_chans}, T, H, W); input has shape {input:?}"
        )));
    }
    Ok((patch, in_chans, embed_dim))
}

fn build_special_patch_embed(
    c: &mut ConfigReader,
    input: &[usize],
    _train: bool,
) -> Result<Box<dyn Block>> {
    let (p, cin, cout) = patch_args(c, "uniformer.SpeicalPatchEmbed", input)?;
    let part = PatchEmbed::special(&mut Init::new(0), cin, cout, p)?;
    Ok(Box::new(Part {
        part,
        forward: |m, x| m.forward(x),
        params: |m, prefix, out| m.params(prefix, out),
    }))
}

fn build_patch_embed(
    c: &mut ConfigReader,
    input: &[usize],
    _train: bool,
) -> Result<Box<dyn Block>> {
    let (p, cin, cout) = patch_args(c, "uniformer.PatchEmbed", input)?;
    let std = c.bool("std", Some(false))?;
    let part = PatchEmbed::plain(&mut Init::new(0), cin, cout, p, std)?;
    Ok(Box::new(Part {
        part,
        forward: |m, x| m.forward(x),
        params: |m, prefix, out| m.params(prefix, out),
    }))
}
