//! Parity modules of TimeSformer (facebookresearch/TimeSformer, `timesformer/models/vit.py`).
//! Keys are the modules' own state_dict keys (`VisionTransformer`: the checkpoint's without
//! `model.`).
//!
//! `timesformer.Block` reads the constructor's `dim`, `num_heads` (required), `mlp_ratio` (4.0;
//! hidden int(dim·ratio)), `qkv_bias` (False), `qk_scale` (None), `drop`, `attn_drop` (0),
//! `drop_path` (0.1), `act_layer` ("nn.GELU"), `norm_layer` ("nn.LayerNorm", eps 1e-5, or
//! "partial(nn.LayerNorm, eps=…)", by name; 1e-6 is what the TimeSformer model passes), `attention_type`
//! ("divided_space_time", "space_only" or "joint_space_time", as the official assert), and the
//! forward's runtime `B`, `T`, `W` (required). x is (B, 1 + H·W·T, dim), tokens `(h w t)`, for
//! divided and joint attention, (B·T, 1 + H·W, dim) for space-only; the output has its shape.
//!
//! `timesformer.VisionTransformer` reads `img_size` (224, or [H, W]), `patch_size` (16),
//! `in_chans` (3, any), `num_classes` (1000), `embed_dim` (768), `depth` (12), `num_heads` (12),
//! `mlp_ratio` (4.0), `qkv_bias` (False), `qk_scale` (None), `drop_rate`, `attn_drop_rate` (0),
//! `drop_path_rate` (0.1), `norm_layer` (as Block), `num_frames` (8), `attention_type`
//! ("divided_space_time"); `hybrid_backbone` and `dropout` are accepted and ignored, as the
//! official forward never uses them. Input (B, in_chans, T, H, W), output the logits (B, classes) (the features (B, embed_dim) for
//! num_classes 0).
//!
//! `qkv_bias` and `qk_scale` (a number, or None / 0 for head_dim^−0.5, as timm's `qk_scale or
//! head_dim ** -0.5`) are the model's own config fields.
//!
//! `timesformer.PatchEmbed` reads `img_size` (224; unused by the forward), `patch_size` (16, an
//! integer or a square pair), `in_chans` (3), `embed_dim` (768); x (B, in_chans, T, H, W) with H,
//! W multiples of the patch, output the (B·T, n, embed_dim) of the official (x, T, W).
//!
//! Ported: any in_chans, any num_classes (0: the official identity head, output the
//! normalised cls features (B, embed_dim)), a clip of exactly img_size ×
//! num_frames (the official forward resizes pos_embed / time_embed, nearest, for other clips;
//! tubelet's model does not, see `models/src/timesformer.rs`). Dropout and drop path are random
//! and refused with `train: true` unless 0 (eval ignores them, as PyTorch does).

use tubelet::nn::{Init, LayerNorm, Linear};
use tubelet::{Error, Result, Tensor};
use tubelet_models::grid_attention::Groups;
use tubelet_models::timesformer::{
    Attention, Attn, Block as TsfBlock, Branch, Config, TimeSformer,
};

use super::{Block, ConfigReader, Module, Part, Whole};

pub fn modules() -> Vec<Module> {
    vec![
        Module {
            name: "timesformer.PatchEmbed",
            summary: "TimeSformer PatchEmbed: per-frame Conv2d(in_chans -> embed_dim, k = s = patch_size), (B, in_chans, T, H, W) -> (B·T, H/P·W/P, embed_dim) (the official tuple's tensor)",
            train_default: Some(false),
            build: build_patch_embed,
        },
        Module {
            name: "timesformer.Block",
            summary: "one TimeSformer block (divided space-time, space-only or joint attention, then MLP) on (B, 1 + H·W·T, D) / (B·T, 1 + H·W, D); runtime B, T, W; any qkv_bias, qk_scale",
            train_default: Some(false),
            build: build_block,
        },
        Module {
            name: "timesformer.VisionTransformer",
            summary: "the TimeSformer classifier, (B, in_chans, T, H, W) -> logits (B, classes); ported: any in_chans, clip = img_size × num_frames (no embedding resize)",
            train_default: Some(false),
            build: build_model,
        },
    ]
}

fn unsupported(module: &str, what: String) -> Error {
    Error::Config(format!(
        "{module}: {what} is not implemented in tubelet's port"
    ))
}

fn attention_type(c: &mut ConfigReader, module: &str) -> Result<Attention> {
    match c.string("attention_type", Some("divided_space_time"))?.as_str() {
        "divided_space_time" => Ok(Attention::DividedSpaceTime),
        "space_only" => Ok(Attention::SpaceOnly),
        "joint_space_time" => Ok(Attention::JointSpaceTime),
        other => Err(Error::Config(format!(
            "{module} config: attention_type {other:?}; the official code accepts \"divided_space_time\", \"space_only\", \"joint_space_time\""
        ))),
    }
}

/// `norm_layer`'s eps (by name: `nn.LayerNorm`, `partial(nn.LayerNorm, eps=…)`).
fn norm_eps(c: &mut ConfigReader, _module: &str) -> Result<f32> {
    c.layer_norm_eps("norm_layer", 1e-5)
}

/// The hidden width int(dim · mlp_ratio), as the official `Block`.
fn mlp_hidden(module: &str, dim: usize, mlp_ratio: f64) -> Result<usize> {
    let hidden = (dim as f64 * mlp_ratio) as usize;
    if !(mlp_ratio > 0.0) || hidden == 0 {
        return Err(Error::Config(format!(
            "{module} config: mlp_ratio {mlp_ratio} gives an MLP of width {hidden}"
        )));
    }
    Ok(hidden)
}

/// qk_scale (None: head_dim^−0.5) and the random rates (must be 0 when training).
fn common(
    c: &mut ConfigReader,
    module: &str,
    train: bool,
    rates: &[(&str, f64)],
) -> Result<Option<f32>> {
    let qk_scale = c.qk_scale("qk_scale")?;
    if let Some((k, v)) = rates.iter().find(|(_, v)| !(0.0..1.0).contains(v)) {
        return Err(Error::Config(format!(
            "{module} config: {k} {v} must be in [0, 1)"
        )));
    }
    if train {
        if let Some((k, v)) = rates.iter().find(|(_, v)| *v != 0.0) {
            return Err(unsupported(
                module,
                format!("train: true with {k} {v} (random; set it to 0 or use train: false)"),
            ));
        }
    }
    Ok(qk_scale)
}

struct BlockPort {
    block: TsfBlock,
    config: Config,
    batch: usize,
}

impl Block for BlockPort {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        // Training is refused above unless every rate is 0: drop path is then the identity.
        let c = &self.config;
        if c.attention == Attention::DividedSpaceTime {
            let n = c.frames * c.height * c.width;
            if x.dim(0) != self.batch || x.dim(1) != 1 + n {
                return Err(Error::Shape(format!(
                    "timesformer.Block: divided attention with B {}, T {}, W {} takes x (B, 1 + H·W·T, dim); got {:?}",
                    self.batch,
                    c.frames,
                    c.width,
                    x.shape()
                )));
            }
        }
        self.block.forward(x, c, None)
    }
    fn named_params(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.block.params("", &mut out);
        out.into_iter()
            .map(|(k, t)| (k.trim_start_matches('.').to_string(), t))
            .collect()
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

fn build_block(c: &mut ConfigReader, input: &[usize], train: bool) -> Result<Box<dyn Block>> {
    const M: &str = "timesformer.Block";
    let dim = c.usize("dim", None)?;
    let heads = c.usize("num_heads", None)?;
    let mlp_ratio = c.f64("mlp_ratio", Some(4.0))?;
    let qkv_bias = c.bool("qkv_bias", Some(false))?;
    let drop = c.f64("drop", Some(0.0))?;
    let attn_drop = c.f64("attn_drop", Some(0.0))?;
    let drop_path = c.f64("drop_path", Some(0.1))?;
    let act = c.string("act_layer", Some("nn.GELU"))?;
    let eps = norm_eps(c, M)?;
    let attention = attention_type(c, M)?;
    let (b, t, w) = (
        c.usize("B", None)?,
        c.usize("T", None)?,
        c.usize("W", None)?,
    );
    let qk_scale = common(
        c,
        M,
        train,
        &[
            ("drop", drop),
            ("attn_drop", attn_drop),
            ("drop_path", drop_path),
        ],
    )?;
    if act != "nn.GELU" {
        return Err(unsupported(
            M,
            format!("act_layer {act:?} (implemented: \"nn.GELU\")"),
        ));
    }
    if heads == 0 || dim % heads != 0 {
        return Err(Error::Config(format!(
            "{M} config: dim {dim} is not divisible by num_heads {heads}"
        )));
    }
    if input.len() != 3 || input[2] != dim || input.contains(&0) {
        return Err(Error::Shape(format!(
            "{M} takes x (B, tokens, dim = {dim}); input has shape {input:?}"
        )));
    }
    if t == 0 || w == 0 {
        return Err(Error::Config(format!(
            "{M} config: T {t} and W {w} must be positive"
        )));
    }
    // The official forward: H = ((tokens − 1) // T) // W; only divided attention uses the grid.
    let h = (input[1] - 1) / t / w;
    if attention == Attention::DividedSpaceTime
        && (h == 0 || input[0] != b || input[1] != 1 + h * w * t)
    {
        return Err(Error::Shape(format!(
            "{M}: divided attention with B {b}, T {t}, W {w} takes x (B, 1 + H·W·T, dim); input has shape {input:?}"
        )));
    }
    let hidden = mlp_hidden(M, dim, mlp_ratio)?;
    let config = Config {
        frames: t,
        height: h.max(1),
        width: w,
        patch: 1,
        embed_dim: dim,
        depth: 1,
        num_heads: heads,
        mlp_dim: hidden,
        num_classes: 1,
        attention,
        drop_path: drop_path as f32,
        qkv_bias,
        qk_scale,
        norm_eps: eps,
        in_chans: 3, // unused: the block takes tokens
    };
    let mut init = Init::new(0);
    let ln = |init: &mut Init| LayerNorm::torch(init, dim, eps);
    let attn = |init: &mut Init| Attn::new(init, dim, qkv_bias);
    let mut branches = Vec::new();
    if attention == Attention::DividedSpaceTime {
        branches.push(Branch {
            name: "temporal",
            groups: Groups::Time,
            norm: ln(&mut init)?,
            attn: attn(&mut init)?,
            fc: Linear::new(&mut init, dim, dim, true)?,
        });
    }
    let block = TsfBlock {
        branches,
        norm1: ln(&mut init)?,
        attn: attn(&mut init)?,
        norm2: ln(&mut init)?,
        fc1: Linear::new(&mut init, dim, hidden, true)?,
        fc2: Linear::new(&mut init, hidden, dim, true)?,
        drop_path: drop_path as f32,
    };
    Ok(Box::new(BlockPort {
        block,
        config,
        batch: b,
    }))
}

/// `img_size`: an integer or [H, W] (the official `to_2tuple`).
fn pair(c: &mut ConfigReader, key: &str, default: usize) -> Result<[usize; 2]> {
    if !c.has(key) {
        return Ok([default, default]);
    }
    if let Ok(n) = c.usize(key, None) {
        return Ok([n, n]);
    }
    let v = c.usizes(key, Some(2))?;
    Ok([v[0], v[1]])
}

fn build_model(c: &mut ConfigReader, input: &[usize], train: bool) -> Result<Box<dyn Block>> {
    const M: &str = "timesformer.VisionTransformer";
    let [img_h, img_w] = pair(c, "img_size", 224)?;
    let patch = pair(c, "patch_size", 16)?;
    let in_chans = c.usize("in_chans", Some(3))?;
    let num_classes = c.usize("num_classes", Some(1000))?;
    let embed_dim = c.usize("embed_dim", Some(768))?;
    let depth = c.usize("depth", Some(12))?;
    let num_heads = c.usize("num_heads", Some(12))?;
    let mlp_ratio = c.f64("mlp_ratio", Some(4.0))?;
    let qkv_bias = c.bool("qkv_bias", Some(false))?;
    let drop_rate = c.f64("drop_rate", Some(0.0))?;
    let attn_drop_rate = c.f64("attn_drop_rate", Some(0.0))?;
    let drop_path_rate = c.f64("drop_path_rate", Some(0.1))?;
    let eps = norm_eps(c, M)?;
    let num_frames = c.usize("num_frames", Some(8))?;
    let attention = attention_type(c, M)?;
    c.ignore("hybrid_backbone"); // stored by nobody: the official constructor never reads it
    c.ignore("dropout"); // an nn.Dropout the official forward never applies
    let rates = [
        ("drop_rate", drop_rate),
        ("attn_drop_rate", attn_drop_rate),
        ("drop_path_rate", drop_path_rate),
    ];
    let qk_scale = common(c, M, train, &rates)?;
    if patch[0] != patch[1] {
        return Err(unsupported(
            M,
            format!("patch_size {patch:?} (implemented: square patches)"),
        ));
    }
    if input.len() != 5 || input[1] != in_chans {
        return Err(Error::Shape(format!(
            "{M} takes a clip batch (B, in_chans = {in_chans}, T, H, W); input has shape {input:?}"
        )));
    }
    if input[2] != num_frames || input[3] != img_h || input[4] != img_w {
        return Err(unsupported(
            M,
            format!(
                "a clip {:?} other than num_frames × img_size = {num_frames} × {img_h} × {img_w} (the official forward resizes pos_embed and time_embed)",
                &input[2..]
            ),
        ));
    }
    let config = Config {
        frames: num_frames,
        height: img_h,
        width: img_w,
        patch: patch[0],
        embed_dim,
        depth,
        num_heads,
        mlp_dim: mlp_hidden(M, embed_dim, mlp_ratio)?,
        num_classes,
        attention,
        drop_path: drop_path_rate as f32,
        qkv_bias,
        qk_scale,
        norm_eps: eps,
        in_chans,
    };
    Ok(Box::new(Whole(Box::new(TimeSformer::new(config, 0)?))))
}

/// `proj.weight` (D, C, P, P), `proj.bias` (D) and P.
struct Stem {
    proj: (Tensor, Tensor),
    patch: usize,
}

fn build_patch_embed(
    c: &mut ConfigReader,
    input: &[usize],
    _train: bool,
) -> Result<Box<dyn Block>> {
    const M: &str = "timesformer.PatchEmbed";
    pair(c, "img_size", 224)?; // num_patches only; the forward does not check it
    let patch = pair(c, "patch_size", 16)?;
    let in_chans = c.usize("in_chans", Some(3))?;
    let embed_dim = c.usize("embed_dim", Some(768))?;
    if patch[0] != patch[1] {
        return Err(unsupported(
            M,
            format!("patch_size {patch:?} (implemented: square patches)"),
        ));
    }
    let p = patch[0];
    if p == 0 || embed_dim == 0 {
        return Err(Error::Config(format!(
            "{M} config: patch_size {p} and embed_dim {embed_dim} must be positive"
        )));
    }
    if input.len() != 5
        || input[1] != in_chans
        || input.contains(&0)
        || !input[3].is_multiple_of(p)
        || !input[4].is_multiple_of(p)
    {
        return Err(Error::Shape(format!(
            "{M} takes x (B, in_chans = {in_chans}, T, H, W), H and W multiples of patch_size {p}; input has shape {input:?}"
        )));
    }
    let mut init = Init::new(0);
    let proj = (
        init.trunc_normal(&[embed_dim, in_chans, p, p], 0.02)?,
        init.constant(&[embed_dim], 0.0)?,
    );
    Ok(Box::new(Part {
        part: Stem { proj, patch: p },
        forward: |s, x| tubelet_models::timesformer::patch_embed(&s.proj, s.patch, x),
        params: |s, prefix, out| {
            out.push((format!("{prefix}.proj.weight"), s.proj.0.clone()));
            out.push((format!("{prefix}.proj.bias"), s.proj.1.clone()));
        },
    }))
}
