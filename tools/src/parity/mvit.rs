//! Parity modules of MViT v1/v2 building blocks (facebookresearch/SlowFast,
//! `slowfast/models/attention.py`): `mvit.MultiScaleAttention` and `mvit.MultiScaleBlock` on
//! x (B, 1 + T·H·W, dim), cls token first, keys as their own state_dict (`qkv.weight`,
//! `pool_q.weight`, `norm_q.weight`, `rel_pos_h`, `norm1.weight`, `attn.qkv.weight`, …). The
//! output is the x of the official (x, thw_shape); the pooled grid follows from the config.
//!
//! Both read the constructor's `dim`, `dim_out`, `input_size` ([T, H, W]), `num_heads`
//! (required for the block; 8 for the attention), `qkv_bias` (False), `drop_rate` (0),
//! `kernel_q`, `kernel_kv`, `stride_q`, `stride_kv` ((1,1,1); [] as SF's model passes when a
//! block does not pool), `norm_layer` ("nn.LayerNorm", eps 1e-5, or
//! "partial(nn.LayerNorm, eps=1e-6)", what SF's MViT passes), `has_cls_embed` (True), `mode`
//! ("conv", "avg", "max"), `pool_first` (False), `rel_pos_spatial`, `rel_pos_temporal`
//! (False), `rel_pos_zero_init` (initialisation only), `residual_pooling` (False),
//! `separate_qkv` (False), and the forward's runtime `thw_shape` ([T, H, W], required). The
//! block also reads `mlp_ratio` (4.0), `qk_scale` (unused by SF), `drop_path` (0),
//! `layer_scale_init_value` (0), `act_layer` ("nn.GELU"), `up_rate` (None) and
//! `dim_mul_in_att` (False).
//!
//! Ported (every released MViT / MViTv2 video config): has_cls_embed True, pool_first False,
//! separate_qkv False, mode conv/avg/max (not conv_unshared), rel_pos_spatial and
//! rel_pos_temporal both or neither (on square grids), layer_scale_init_value 0, up_rate None
//! or 1; other settings are errors that say so. Dropout and drop path are random and refused
//! with `train: true` unless 0.

//!
//! `mvit.PatchEmbed` (SlowFast `stem_helper.PatchEmbed`, MViT's stem) reads `dim_in` (3),
//! `dim_out` (768), `kernel` ((1,16,16)), `stride` ((1,4,4)), `padding` ((1,7,7)), `conv_2d`
//! (False; True is not ported) and the forward's `keep_spatial` (False); x (B, dim_in, T, H, W)
//! -> (B, T'·H'·W', dim_out). `mvit.TransformerBasicHead` (`head_helper`) reads `dim_in`,
//! `num_classes` (required), `dropout_rate` (0), `act_func` ("softmax"; applied in eval only, as
//! SlowFast does) and the cfg keys it reads, `CONTRASTIVE.NUM_MLP_LAYERS` (1) and
//! `MODEL.DETACH_FINAL_FC` (False); x (B, dim_in).
use tubelet::nn::Init;
use tubelet::{Error, Result, Tensor};
use tubelet_models::mvit::{
    AttentionSpec, BlockSpec, MultiScaleAttention, MultiScaleBlock, Pool, PoolMode, Version,
};

use super::{Block, ConfigReader, Module, Part};

pub fn modules() -> Vec<Module> {
    vec![
        Module {
            name: "mvit.TransformerBasicHead",
            summary: "SlowFast TransformerBasicHead (MViT's head): dropout, projection Linear, then in eval softmax / sigmoid / none (act_func), (B, dim_in) -> (B, num_classes); ported: CONTRASTIVE.NUM_MLP_LAYERS 1, MODEL.DETACH_FINAL_FC False",
            train_default: Some(false),
            build: build_head,
        },
        Module {
            name: "mvit.PatchEmbed",
            summary: "SlowFast PatchEmbed (MViT's stem): Conv3d(dim_in -> dim_out, kernel, stride, padding), flattened, (B, dim_in, T, H, W) -> (B, T'·H'·W', dim_out); ported: conv_2d False",
            train_default: Some(false),
            build: build_patch_embed,
        },
        Module {
            name: "mvit.MultiScaleAttention",
            summary: "MViT pooling attention (conv/avg/max pooling of q, k, v; v2 rel pos and residual pooling) on (B, 1 + T·H·W, dim); runtime thw_shape; ported: cls on, pool_first False",
            train_default: Some(false),
            build: build_attention,
        },
        Module {
            name: "mvit.MultiScaleBlock",
            summary: "one MViT block (norm, pooling attention, skip max-pool, MLP, v1/v2 dim change) on (B, 1 + T·H·W, dim); runtime thw_shape; ported: cls on, pool_first False",
            train_default: Some(false),
            build: build_block,
        },
    ]
}

fn unsupported(module: &str, what: String) -> Error {
    Error::Config(format!(
        "{module}: {what} is not implemented in tubelet's port"
    ))
}

fn triple(c: &mut ConfigReader, key: &str) -> Result<[usize; 3]> {
    let v = c.usizes(key, Some(3))?;
    Ok([v[0], v[1], v[2]])
}

/// A kernel or stride: 3 integers, or [] (SF's "no pooling"); absent is (1, 1, 1).
fn window(c: &mut ConfigReader, module: &str, key: &str) -> Result<Vec<usize>> {
    if !c.has(key) {
        return Ok(vec![1, 1, 1]);
    }
    let v = c.usizes(key, None)?;
    if !(v.is_empty() || v.len() == 3) || v.contains(&0) {
        return Err(Error::Config(format!(
            "{module} config: {key} {v:?} must be 3 positive integers or []"
        )));
    }
    Ok(v)
}

/// SF's pooling of q or of k, v: skipped when prod(kernel) = prod(stride) = 1.
fn pool(module: &str, which: &str, kernel: &[usize], stride: &[usize]) -> Result<Option<Pool>> {
    let prod = |v: &[usize]| v.iter().product::<usize>();
    if prod(kernel) == 1 && prod(stride) == 1 {
        return Ok(None);
    }
    if kernel.len() != 3 || stride.len() != 3 {
        return Err(Error::Config(format!(
            "{module} config: kernel_{which} {kernel:?} and stride_{which} {stride:?} must both have 3 entries to pool"
        )));
    }
    Ok(Some(Pool {
        kernel: [kernel[0], kernel[1], kernel[2]],
        stride: [stride[0], stride[1], stride[2]],
    }))
}

/// What both modules read: the attention spec (`att_dim` wide, on the runtime grid), the
/// LayerNorm eps, stride_q (for the block's skip pool) and the dropout rate.
struct Common {
    spec: AttentionSpec,
    eps: f32,
    stride_q: Vec<usize>,
    drop_rate: f64,
}

fn common(
    c: &mut ConfigReader,
    module: &str,
    input: &[usize],
    att_dim: usize,
    heads: usize,
) -> Result<Common> {
    let dim = c.usize("dim", None)?;
    let input_size = triple(c, "input_size")?;
    let qkv_bias = c.bool("qkv_bias", Some(false))?;
    let drop_rate = c.f64("drop_rate", Some(0.0))?;
    let kernel_q = window(c, module, "kernel_q")?;
    let kernel_kv = window(c, module, "kernel_kv")?;
    let stride_q = window(c, module, "stride_q")?;
    let stride_kv = window(c, module, "stride_kv")?;
    let eps = c.layer_norm_eps("norm_layer", 1e-5)?;
    let has_cls = c.bool("has_cls_embed", Some(true))?;
    let mode = c.string("mode", Some("conv"))?;
    let pool_first = c.bool("pool_first", Some(false))?;
    let rel_sp = c.bool("rel_pos_spatial", Some(false))?;
    let rel_t = c.bool("rel_pos_temporal", Some(false))?;
    c.bool("rel_pos_zero_init", Some(false))?; // initialisation only
    let residual_pooling = c.bool("residual_pooling", Some(false))?;
    let separate_qkv = c.bool("separate_qkv", Some(false))?;
    let thw = triple(c, "thw_shape")?;
    let mode = match mode.as_str() {
        "conv" => PoolMode::Conv,
        "avg" => PoolMode::Avg,
        "max" => PoolMode::Max,
        "conv_unshared" => return Err(unsupported(module, "mode \"conv_unshared\"".to_string())),
        other => {
            return Err(Error::Config(format!(
                "{module} config: mode {other:?}; SF accepts conv, conv_unshared, avg, max"
            )))
        }
    };
    for (flag, name) in [
        (!has_cls, "has_cls_embed false"),
        (pool_first, "pool_first true"),
        (separate_qkv, "separate_qkv true"),
    ] {
        if flag {
            return Err(unsupported(module, format!("{name} (implemented: the released configs' has_cls_embed true, pool_first false, separate_qkv false)")));
        }
    }
    if rel_sp != rel_t {
        return Err(unsupported(module, format!("rel_pos_spatial {rel_sp} with rel_pos_temporal {rel_t} (implemented: both or neither)")));
    }
    if heads == 0 || !att_dim.is_multiple_of(heads) {
        return Err(Error::Config(format!(
            "{module} config: width {att_dim} is not divisible by num_heads {heads}"
        )));
    }
    if thw.contains(&0)
        || input.len() != 3
        || input[1] != 1 + thw.iter().product::<usize>()
        || input[2] != dim
        || input[0] == 0
    {
        return Err(Error::Shape(format!(
            "{module} takes x (B, 1 + T·H·W, dim) with thw_shape {thw:?}, dim {dim}; input has shape {input:?}"
        )));
    }
    let rel_pos = if rel_sp {
        // SF sizes the tables from input_size (H = W asserted), then resizes them to the grid.
        if input_size[1] != input_size[2] {
            return Err(Error::Config(format!(
                "{module} config: rel_pos_spatial needs input_size H = W, got {input_size:?}"
            )));
        }
        let size = input_size[1];
        let q_size = if stride_q.is_empty() {
            size
        } else {
            size / stride_q[1]
        };
        let kv_size = if stride_kv.is_empty() {
            size
        } else {
            size / stride_kv[1]
        };
        if q_size.max(kv_size) == 0 || input_size[0] == 0 {
            return Err(Error::Config(format!(
                "{module} config: input_size {input_size:?} gives empty rel pos tables"
            )));
        }
        Some([2 * q_size.max(kv_size) - 1, 2 * input_size[0] - 1])
    } else {
        None
    };
    let spec = AttentionSpec {
        dim,
        dim_out: att_dim,
        heads,
        thw,
        pool_q: pool(module, "q", &kernel_q, &stride_q)?,
        pool_kv: pool(module, "kv", &kernel_kv, &stride_kv)?,
        mode,
        qkv_bias,
        rel_pos,
        residual_pooling,
    };
    spec.grids()?;
    Ok(Common {
        spec,
        eps,
        stride_q,
        drop_rate,
    })
}

fn set_eps(attn: &mut MultiScaleAttention, eps: f32) {
    for p in [&mut attn.pool_q, &mut attn.pool_k, &mut attn.pool_v]
        .into_iter()
        .flatten()
    {
        if let Some(n) = &mut p.norm {
            n.eps = eps;
        }
    }
}

fn strip(out: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    out.into_iter()
        .map(|(k, t)| (k.trim_start_matches('.').to_string(), t))
        .collect()
}

fn refuse_random(module: &str, train: bool, rates: &[(&str, f64)]) -> Result<()> {
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
    Ok(())
}

struct Attn(MultiScaleAttention);

impl Block for Attn {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        self.0.forward(x)
    }
    fn named_params(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.0.params("", &mut out);
        strip(out)
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

fn build_attention(c: &mut ConfigReader, input: &[usize], train: bool) -> Result<Box<dyn Block>> {
    const M: &str = "mvit.MultiScaleAttention";
    let dim_out = c.usize("dim_out", None)?;
    let heads = c.usize("num_heads", Some(8))?;
    let k = common(c, M, input, dim_out, heads)?;
    refuse_random(M, train, &[("drop_rate", k.drop_rate)])?;
    let mut attn = MultiScaleAttention::new(&mut Init::new(0), k.spec)?;
    set_eps(&mut attn, k.eps);
    Ok(Box::new(Attn(attn)))
}

struct Blk(MultiScaleBlock);

impl Block for Blk {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.0.forward(x, train)
    }
    fn named_params(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.0.params("", &mut out);
        strip(out)
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

fn build_block(c: &mut ConfigReader, input: &[usize], train: bool) -> Result<Box<dyn Block>> {
    const M: &str = "mvit.MultiScaleBlock";
    let dim = c.usize("dim", None)?;
    let dim_out = c.usize("dim_out", None)?;
    let heads = c.usize("num_heads", None)?;
    let mlp_ratio = c.f64("mlp_ratio", Some(4.0))?;
    c.ignore("qk_scale"); // stored by nobody: SF's block never reads it
    let drop_path = c.f64("drop_path", Some(0.0))?;
    let layer_scale = c.f64("layer_scale_init_value", Some(0.0))?;
    let act = c.string("act_layer", Some("nn.GELU"))?;
    let up_rate = c.opt_f64("up_rate")?;
    let dim_mul_in_att = c.bool("dim_mul_in_att", Some(false))?;
    let att_dim = if dim_mul_in_att { dim_out } else { dim };
    let k = common(c, M, input, att_dim, heads)?;
    refuse_random(
        M,
        train,
        &[("drop_rate", k.drop_rate), ("drop_path", drop_path)],
    )?;
    if layer_scale > 0.0 {
        return Err(unsupported(
            M,
            format!("layer_scale_init_value {layer_scale} (implemented: 0, no gamma)"),
        ));
    }
    if up_rate.is_some_and(|r| r > 1.0) {
        return Err(unsupported(
            M,
            format!("up_rate {up_rate:?} (implemented: None or ≤ 1)"),
        ));
    }
    if act != "nn.GELU" {
        return Err(unsupported(
            M,
            format!("act_layer {act:?} (implemented: \"nn.GELU\")"),
        ));
    }
    let mlp_hidden = (att_dim as f64 * mlp_ratio) as usize;
    if !(mlp_ratio > 0.0) || mlp_hidden == 0 || dim_out == 0 {
        return Err(Error::Config(format!("{M} config: dim_out {dim_out}, mlp_ratio {mlp_ratio} (hidden {mlp_hidden}) must be positive")));
    }
    // SF's skip pool: MaxPool3d(s + 1 where s > 1, stride s) when prod(stride_q) > 1.
    let skip = (k.stride_q.len() == 3 && k.stride_q.iter().product::<usize>() > 1).then(|| {
        let s = [k.stride_q[0], k.stride_q[1], k.stride_q[2]];
        Pool {
            kernel: s.map(|s| if s > 1 { s + 1 } else { s }),
            stride: s,
        }
    });
    if let Some(s) = &skip {
        // The residual must land on the attention's query grid.
        let (q, _) = k.spec.grids()?;
        let r = s.out(k.spec.thw)?;
        if q != r {
            return Err(Error::Config(format!(
                "{M} config: the skip pool makes a {r:?} grid but the pooled queries a {q:?} one"
            )));
        }
    }
    let spec = BlockSpec {
        attn: k.spec,
        dim,
        dim_out,
        mlp_hidden,
        skip,
        drop_path: drop_path as f32,
    };
    let version = if dim_mul_in_att {
        Version::V2
    } else {
        Version::V1
    };
    let mut block = MultiScaleBlock::new(&mut Init::new(0), spec, version)?;
    block.norm1.eps = k.eps;
    block.norm2.eps = k.eps;
    set_eps(&mut block.attn, k.eps);
    Ok(Box::new(Blk(block)))
}

/// A 3-tuple of `key`, or `default` when absent.
fn triple_or(c: &mut ConfigReader, key: &str, default: [usize; 3]) -> Result<[usize; 3]> {
    if !c.has(key) {
        return Ok(default);
    }
    let v = c.usizes(key, Some(3))?;
    Ok([v[0], v[1], v[2]])
}

/// The SF stem's weights and geometry.
struct Stem {
    proj: (Tensor, Tensor),
    stride: [usize; 3],
    padding: [usize; 3],
}

fn build_patch_embed(
    c: &mut ConfigReader,
    input: &[usize],
    _train: bool,
) -> Result<Box<dyn Block>> {
    const M: &str = "mvit.PatchEmbed";
    let dim_in = c.usize("dim_in", Some(3))?;
    let dim_out = c.usize("dim_out", Some(768))?;
    let kernel = triple_or(c, "kernel", [1, 16, 16])?;
    let stride = triple_or(c, "stride", [1, 4, 4])?;
    let padding = triple_or(c, "padding", [1, 7, 7])?;
    let conv_2d = c.bool("conv_2d", Some(false))?;
    c.bool("keep_spatial", Some(false))?; // the forward's flag: the tensor is the same, unflattened
    if conv_2d {
        return Err(unsupported(
            M,
            "conv_2d true (a Conv2d stem on (B, C, H, W))".to_string(),
        ));
    }
    if kernel.contains(&0) || stride.contains(&0) || dim_out == 0 {
        return Err(Error::Config(format!("{M} config: kernel {kernel:?}, stride {stride:?} and dim_out {dim_out} must be positive")));
    }
    if input.len() != 5 || input[1] != dim_in || input.contains(&0) {
        return Err(Error::Shape(format!(
            "{M} takes x (B, dim_in = {dim_in}, T, H, W); input has shape {input:?}"
        )));
    }
    let mut init = Init::new(0);
    let [kt, kh, kw] = kernel;
    let proj = (
        init.trunc_normal(&[dim_out, dim_in, kt, kh, kw], 0.02)?,
        init.constant(&[dim_out], 0.0)?,
    );
    Ok(Box::new(Part {
        part: Stem {
            proj,
            stride,
            padding,
        },
        forward: |s, x| tubelet_models::mvit::patch_embed(&s.proj, s.stride, s.padding, x),
        params: |s, p, out| {
            out.push((format!("{p}.proj.weight"), s.proj.0.clone()));
            out.push((format!("{p}.proj.bias"), s.proj.1.clone()));
        },
    }))
}

/// SF's head: `projection`, and the eval activation.
struct Head {
    projection: tubelet::nn::Linear,
    act: String,
}

impl Block for Head {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.projection.forward(x)?; // (B, classes)
        if train {
            return Ok(y); // the activation is for evaluation and testing only
        }
        match self.act.as_str() {
            "softmax" => y.try_softmax(), // nn.Softmax(dim=1) on (B, classes): the last axis
            "sigmoid" => y.try_sigmoid(),
            _ => Ok(y),
        }
    }
    fn named_params(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.projection.params("projection", &mut out);
        out
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

fn build_head(c: &mut ConfigReader, input: &[usize], train: bool) -> Result<Box<dyn Block>> {
    const M: &str = "mvit.TransformerBasicHead";
    let dim_in = c.usize("dim_in", None)?;
    let num_classes = c.usize("num_classes", None)?;
    let dropout_rate = c.f64("dropout_rate", Some(0.0))?;
    let act = c.string("act_func", Some("softmax"))?;
    // The constructor reads cfg.CONTRASTIVE.NUM_MLP_LAYERS and cfg.MODEL.DETACH_FINAL_FC
    // (SF defaults.py: 1, False), given here as cfg groups as the mvit.MViT module reads them.
    let mlp_layers = c.usize("CONTRASTIVE.NUM_MLP_LAYERS", Some(1))?;
    let detach = c.bool("MODEL.DETACH_FINAL_FC", Some(false))?;
    if !["softmax", "sigmoid", "none"].contains(&act.as_str()) {
        // SF: raise NotImplementedError("… is not supported as an activation function").
        return Err(Error::Config(format!(
            "{M} config: act_func {act:?}; SlowFast accepts \"softmax\", \"sigmoid\", \"none\""
        )));
    }
    if mlp_layers != 1 {
        return Err(unsupported(
            M,
            format!(
                "CONTRASTIVE.NUM_MLP_LAYERS {mlp_layers} (an MLPHead; implemented: 1, a Linear)"
            ),
        ));
    }
    if detach {
        return Err(unsupported(M, "MODEL.DETACH_FINAL_FC true".to_string()));
    }
    if train && dropout_rate != 0.0 {
        return Err(unsupported(M, format!("train: true with dropout_rate {dropout_rate} (random; set it to 0 or use train: false)")));
    }
    if input.len() != 2 || input[1] != dim_in || input[0] == 0 {
        return Err(Error::Shape(format!(
            "{M} takes x (B, dim_in = {dim_in}) (as MViT calls it); input has shape {input:?}"
        )));
    }
    let projection = tubelet::nn::Linear::new(&mut Init::new(0), dim_in, num_classes, true)?;
    Ok(Box::new(Head { projection, act }))
}
