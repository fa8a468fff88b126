//! Parity modules of Video Swin (SwinTransformer/Video-Swin-Transformer,
//! `mmaction/models/backbones/swin_transformer.py`). Keys are the modules' own state_dict keys
//! (no `backbone.` prefix); inputs and outputs are (B, C, D, H, W) as in the official code.
//!
//! `video_swin.SwinTransformer3D` (the backbone alone, output (B, 8C, D', H', W') after the
//! final norm) reads `patch_size` ((4,4,4)), `in_chans` (3), `embed_dim` (96), `depths`
//! ([2,2,6,2]), `num_heads` ([3,6,12,24]), `window_size` ((2,7,7)), `mlp_ratio` (4.0),
//! `qkv_bias` (True), `qk_scale` (None), `drop_rate` (0), `attn_drop_rate` (0),
//! `drop_path_rate` (0.2), `patch_norm` (False), `frozen_stages` (-1), `use_checkpoint`
//! (False), `pretrained` (None), `pretrained2d` (True).
//!
//! `video_swin.BasicLayer` reads `dim`, `depth`, `num_heads` (required), `window_size`
//! ((1,7,7)), `mlp_ratio` (4.0), `qkv_bias` (False), `qk_scale` (None), `drop`, `attn_drop`,
//! `drop_path` (a number, or a list of one rate per block, as the official `drop_path[i] if
//! isinstance(drop_path, list)`; 0), `norm_layer` ("nn.LayerNorm", by name), `downsample` (a class
//! by name: "PatchMerging" or null, the default; true / false are accepted for them),
//! `use_checkpoint` (False).
//!
//! `video_swin.PatchEmbed3D` reads `patch_size` ((2,4,4)), `in_chans` (3), `embed_dim` (96),
//! `norm_layer` (a class by name, or null: the default None); x (B, in_chans, D, H, W) -> (B,
//! embed_dim, D', H', W'). `video_swin.PatchMerging` reads `dim` (required) and `norm_layer`
//! ("nn.LayerNorm"); x (B, D, H, W, dim) channels-last -> (B, D, ⌈H/2⌉, ⌈W/2⌉, 2·dim).
//!
//! `video_swin.I3DHead` (mmaction `heads/i3d_head.py`) reads `num_classes`, `in_channels`
//! (required), `spatial_type` ('avg'; anything else: no pooling, the input flattened),
//! `dropout_ratio` (0.5; random, refused with `train: true` unless 0), and accepts `loss_cls`,
//! `multi_class`, `label_smooth_eps` and `init_std` (loss and initialisation only); x (B,
//! in_channels, D, H, W).
//!
//! Buffers: each block's int64 `attn.relative_position_index` (carried as f32) is read from the
//! file and checked against the index the fused kernel computes; a different one is an error.
//!
//! `norm_layer` is `nn.LayerNorm` or `partial(nn.LayerNorm, eps=…)` by name, everywhere it is
//! taken. `qkv_bias`, `qk_scale` (None or 0: head_dim^−0.5, as the official `qk_scale or
//! head_dim ** -0.5`), `patch_norm`, `in_chans`, `mlp_ratio` (hidden int(C·ratio)) and the norm's
//! eps are the model's own config fields. Not ported: an `mlp_ratio` that makes an MLP of width
//! 0 (an error that says so). Dropout and stochastic depth are random and refused with
//! `train: true` unless 0.

use serde_json::Value;
use tubelet::nn::Init;
use tubelet::nn::Linear;
use tubelet::{Error, Result, Tensor};
use tubelet_models::video_swin::{
    mlp_hidden, AttnOptions, BasicLayer, Config, I3DHead, PatchEmbed3D, PatchMerging, VideoSwin,
};

use super::{Block, ConfigReader, Module, Part};

pub fn modules() -> Vec<Module> {
    vec![
        Module {
            name: "video_swin.I3DHead",
            summary: "mmaction's I3DHead as Video Swin uses it: AdaptiveAvgPool3d(1) (spatial_type 'avg'; else none), dropout, fc_cls, (B, in_channels, D, H, W) -> (B, num_classes)",
            train_default: Some(false),
            build: build_i3d_head,
        },
        Module {
            name: "video_swin.PatchEmbed3D",
            summary: "Video Swin patch embedding (pad to patch multiples, Conv3d k = s = patch_size, optional LayerNorm), (B, in_chans, D, H, W) -> (B, embed_dim, D', H', W')",
            train_default: Some(false),
            build: build_patch_embed,
        },
        Module {
            name: "video_swin.PatchMerging",
            summary: "Video Swin patch merging (2x2 spatial neighbours concatenated, LayerNorm(4C), Linear 4C -> 2C), (B, D, H, W, C) -> (B, D, H/2, W/2, 2C)",
            train_default: Some(false),
            build: build_patch_merging,
        },
        Module {
            name: "video_swin.SwinTransformer3D",
            summary: "Video Swin backbone (patch embedding, stages, final norm), (B, in_chans, T, H, W) -> (B, C, D, H, W); any in_chans, patch_norm, qkv_bias, qk_scale, mlp_ratio, norm eps",
            train_default: Some(false),
            build: build_backbone,
        },
        Module {
            name: "video_swin.BasicLayer",
            summary: "one Video Swin stage (blocks, shifted in odd ones, + optional PatchMerging), (B, C, D, H, W) -> (B, C', D, H', W'); any qkv_bias, qk_scale",
            train_default: Some(false),
            build: build_layer,
        },
    ]
}

fn unsupported(module: &str, what: String) -> Error {
    Error::Config(format!(
        "{module}: {what} is not implemented in tubelet's port"
    ))
}

/// A 3-tuple field (a JSON list of 3 integers), or its default when absent.
fn triple(c: &mut ConfigReader, key: &str, default: [usize; 3]) -> Result<[usize; 3]> {
    if !c.has(key) {
        return Ok(default);
    }
    let v = c.usizes(key, Some(3))?;
    Ok([v[0], v[1], v[2]])
}

/// The arguments every Swin stage takes.
struct Common {
    mlp_ratio: f64,
    attn: AttnOptions,
    /// `norm_layer`'s eps.
    eps: f32,
}

/// Shared arguments: mlp_ratio (hidden int(`dim`·ratio) must be ≥ 1), qkv_bias, qk_scale,
/// norm_layer (by name), and the random rates.
fn common(
    c: &mut ConfigReader,
    module: &str,
    dim: usize,
    qkv_default: bool,
    train: bool,
    rates: &[(&str, f64)],
) -> Result<Common> {
    let mlp_ratio = c.f64("mlp_ratio", Some(4.0))?;
    let qkv_bias = c.bool("qkv_bias", Some(qkv_default))?;
    let qk_scale = c.qk_scale("qk_scale")?;
    c.bool("use_checkpoint", Some(false))?; // memory only
    let eps = c.layer_norm_eps("norm_layer", 1e-5)?;
    if !mlp_ratio.is_finite() || mlp_hidden(dim, mlp_ratio) == 0 {
        return Err(unsupported(
            module,
            format!(
                "mlp_ratio {mlp_ratio}: an MLP of width int({dim} × {mlp_ratio}) = 0 (implemented: width ≥ 1)"
            ),
        ));
    }
    if train {
        if let Some((k, v)) = rates.iter().find(|(_, v)| *v != 0.0) {
            return Err(unsupported(
                module,
                format!("train: true with {k} {v} (random; set it to 0 or use train: false)"),
            ));
        }
    }
    Ok(Common {
        mlp_ratio,
        attn: AttnOptions { qkv_bias, qk_scale },
        eps,
    })
}

/// The official `relative_position_index` ((N, N), N = Wd·Wh·Ww) of a window: for tokens i, j
/// at (d, h, w), ((Δd + Wd−1)·(2Wh−1) + Δh + Wh−1)·(2Ww−1) + Δw + Ww−1, Δ = coords_i − coords_j.
/// The fused kernel computes it in place; the files carry it as a buffer, which is checked
/// against this on every forward.
fn relative_position_index(window: [usize; 3]) -> Vec<f32> {
    let [wd, wh, ww] = window.map(|w| w as i64);
    let n = (wd * wh * ww) as usize;
    let coord = |i: usize| {
        let i = i as i64;
        [i / (wh * ww), i / ww % wh, i % ww]
    };
    let mut out = Vec::with_capacity(n * n);
    for i in 0..n {
        for j in 0..n {
            let (a, b) = (coord(i), coord(j));
            let idx = ((a[0] - b[0] + wd - 1) * (2 * wh - 1) + a[1] - b[1] + wh - 1) * (2 * ww - 1)
                + a[2]
                - b[2]
                + ww
                - 1;
            out.push(idx as f32);
        }
    }
    out
}

/// One `relative_position_index` buffer per block under `prefix.blocks.{j}.attn.`.
fn index_buffers(prefix: &str, depth: usize, window: [usize; 3]) -> Result<Vec<(String, Tensor)>> {
    // The index is N × N for N = the window's tokens: check its size before building it on the
    // host (a window of 50³ asked for 62 GB there and aborted the process).
    let limit = tubelet::Gpu::global()?
        .limits
        .max_storage_buffer_binding_size;
    let n = window
        .iter()
        .try_fold(1u64, |a, &w| a.checked_mul(w as u64));
    let bytes = n
        .and_then(|n| n.checked_mul(n))
        .and_then(|e| e.checked_mul(4));
    if bytes.is_none_or(|b| b > limit) {
        return Err(Error::Config(format!(
            "window_size {window:?}: its relative_position_index ({} tokens squared) needs {} bytes in one \
             buffer, above this adapter's max_storage_buffer_binding_size of {limit} bytes",
            n.map_or("too many".into(), |n| n.to_string()),
            bytes.map_or("more than 2^64".into(), |b| b.to_string())
        )));
    }
    let n = window.iter().product::<usize>();
    let index = relative_position_index(window);
    (0..depth)
        .map(|j| {
            Ok((
                format!("{prefix}blocks.{j}.attn.relative_position_index"),
                Tensor::from_slice(&index, &[n, n])?,
            ))
        })
        .collect()
}

/// Fails when a loaded `relative_position_index` differs from the one the kernel computes.
fn check_buffers(module: &str, buffers: &[(String, Tensor)], window: [usize; 3]) -> Result<()> {
    let want = relative_position_index(window);
    for (key, t) in buffers {
        if t.to_vec()? != want {
            return Err(Error::Config(format!(
                "{module}: {key} differs from the official relative position index of window {window:?}, which tubelet's window_attention kernel computes"
            )));
        }
    }
    Ok(())
}

struct Backbone {
    model: VideoSwin,
    buffers: Vec<(String, Tensor)>,
}

impl Block for Backbone {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        check_buffers(
            "video_swin.SwinTransformer3D",
            &self.buffers,
            self.model.config.window_size,
        )?;
        self.model
            .forward_features(x, train)?
            .try_permute(&[0, 4, 1, 2, 3])
    }
    fn named_params(&self) -> Vec<(String, Tensor)> {
        self.model
            .named_params()
            .into_iter()
            .filter_map(|(k, t)| k.strip_prefix("backbone.").map(|k| (k.to_string(), t)))
            .collect()
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        self.buffers.clone()
    }
}

fn build_backbone(c: &mut ConfigReader, input: &[usize], train: bool) -> Result<Box<dyn Block>> {
    const M: &str = "video_swin.SwinTransformer3D";
    let patch_size = triple(c, "patch_size", [4, 4, 4])?;
    let in_chans = c.usize("in_chans", Some(3))?;
    let embed_dim = c.usize("embed_dim", Some(96))?;
    let depths = if c.has("depths") {
        c.usizes("depths", None)?
    } else {
        vec![2, 2, 6, 2]
    };
    let num_heads = if c.has("num_heads") {
        c.usizes("num_heads", None)?
    } else {
        vec![3, 6, 12, 24]
    };
    let window_size = triple(c, "window_size", [2, 7, 7])?;
    let drop_rate = c.f64("drop_rate", Some(0.0))?;
    let attn_drop_rate = c.f64("attn_drop_rate", Some(0.0))?;
    let drop_path_rate = c.f64("drop_path_rate", Some(0.2))?;
    let patch_norm = c.bool("patch_norm", Some(false))?;
    c.ignore("frozen_stages"); // requires_grad only
    c.ignore("pretrained"); // loading only
    c.ignore("pretrained2d");
    let rates = [
        ("drop_rate", drop_rate),
        ("attn_drop_rate", attn_drop_rate),
        ("drop_path_rate", drop_path_rate),
    ];
    let Common {
        mlp_ratio,
        attn,
        eps,
    } = common(c, M, embed_dim, true, train, &rates)?;
    if input.len() != 5 || input[1] != in_chans {
        return Err(Error::Shape(format!(
            "{M} takes a clip batch (B, in_chans = {in_chans}, T, H, W); input has shape {input:?}"
        )));
    }
    let config = Config {
        frames: input[2],
        height: input[3],
        width: input[4],
        patch_size,
        embed_dim,
        depths,
        num_heads,
        window_size,
        mlp_ratio,
        drop_path_rate: drop_path_rate as f32,
        head_dropout: 0.0,
        num_classes: 1,
        attn,
        patch_norm,
        in_chans,
        norm_eps: eps,
    };
    let mut buffers = Vec::new();
    for (i, &depth) in config.depths.iter().enumerate() {
        buffers.extend(index_buffers(&format!("layers.{i}."), depth, window_size)?);
    }
    Ok(Box::new(Backbone {
        model: VideoSwin::new(config, 0)?,
        buffers,
    }))
}

struct Layer {
    layer: BasicLayer,
    buffers: Vec<(String, Tensor)>,
}

impl Block for Layer {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        check_buffers(
            "video_swin.BasicLayer",
            &self.buffers,
            self.layer.window_size,
        )?;
        let y = self
            .layer
            .forward(&x.try_permute(&[0, 2, 3, 4, 1])?, train, 0)?;
        y.try_permute(&[0, 4, 1, 2, 3])
    }
    fn named_params(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.layer.params("", &mut out);
        out.into_iter()
            .map(|(k, t)| (k.trim_start_matches('.').to_string(), t))
            .collect()
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        self.buffers.clone()
    }
}

fn build_layer(c: &mut ConfigReader, input: &[usize], train: bool) -> Result<Box<dyn Block>> {
    const M: &str = "video_swin.BasicLayer";
    let dim = c.usize("dim", None)?;
    let depth = c.usize("depth", None)?;
    let num_heads = c.usize("num_heads", None)?;
    let window_size = triple(c, "window_size", [1, 7, 7])?;
    let drop = c.f64("drop", Some(0.0))?;
    let attn_drop = c.f64("attn_drop", Some(0.0))?;
    // A number, or one rate per block: the official `drop_path[i] if isinstance(drop_path, list)`.
    let drop_path: Vec<f64> = match c.json("drop_path") {
        None => vec![0.0; depth],
        Some(Value::Array(list)) => {
            let rates: Option<Vec<f64>> = list.iter().map(Value::as_f64).collect();
            let rates = rates.ok_or_else(|| {
                Error::Config(format!(
                    "{M} config: drop_path {} must be a number or a list of numbers",
                    Value::Array(list.clone())
                ))
            })?;
            // Block i reads drop_path[i]: a shorter list is the official IndexError; extra
            // rates are never read.
            if rates.len() < depth {
                return Err(Error::Config(format!(
                    "{M} config: drop_path {rates:?} has {} rates for depth {depth} (the official block i reads drop_path[i])",
                    rates.len()
                )));
            }
            rates[..depth].to_vec()
        }
        Some(v) => match v.as_f64() {
            Some(r) => vec![r; depth],
            None => {
                return Err(Error::Config(format!(
                    "{M} config: drop_path {v} must be a number or a list of numbers"
                )))
            }
        },
    };
    // A class or None (default None); true / false stand for PatchMerging / None.
    let downsample = match c.class("downsample", None, Some("PatchMerging"))? {
        None => false,
        Some(name) if name == "PatchMerging" => true,
        Some(other) => {
            return Err(Error::Config(format!(
                "{M} config: downsample {other:?} is not a class of the official module; accepted: \"PatchMerging\", null (or true / false)"
            )))
        }
    };
    let worst_drop_path = drop_path.iter().fold(0.0, |m: f64, r| m.max(r.abs()));
    let rates = [
        ("drop", drop),
        ("attn_drop", attn_drop),
        ("drop_path", worst_drop_path),
    ];
    let Common {
        mlp_ratio,
        attn,
        eps,
    } = common(c, M, dim, false, train, &rates)?;
    if input.len() != 5 || input[1] != dim || input.contains(&0) {
        return Err(Error::Shape(format!(
            "{M} takes x (B, dim = {dim}, D, H, W); input has shape {input:?}"
        )));
    }
    if depth == 0 || num_heads == 0 || dim % num_heads != 0 || window_size.contains(&0) {
        return Err(Error::Config(format!(
            "{M} config: depth {depth} ≥ 1, dim {dim} divisible by num_heads {num_heads}, window {window_size:?} positive"
        )));
    }
    if let Some(r) = drop_path.iter().find(|r| !(0.0..1.0).contains(*r)) {
        return Err(Error::Config(format!(
            "{M} config: drop_path {r} must be in [0, 1)"
        )));
    }
    let mut init = Init::new(0);
    let rates: Vec<f32> = drop_path.iter().map(|&r| r as f32).collect();
    let layer = BasicLayer::new(
        &mut init,
        dim,
        depth,
        num_heads,
        window_size,
        mlp_ratio,
        &rates,
        downsample,
        attn,
        eps,
    )?;
    Ok(Box::new(Layer {
        layer,
        buffers: index_buffers("", depth, window_size)?,
    }))
}

fn build_patch_embed(
    c: &mut ConfigReader,
    input: &[usize],
    _train: bool,
) -> Result<Box<dyn Block>> {
    const M: &str = "video_swin.PatchEmbed3D";
    let patch_size = triple(c, "patch_size", [2, 4, 4])?;
    let in_chans = c.usize("in_chans", Some(3))?;
    let embed_dim = c.usize("embed_dim", Some(96))?;
    // norm_layer=None by default: no norm; a LayerNorm class by name otherwise.
    let norm = match c.class("norm_layer", None, None)? {
        None => None,
        Some(_) => Some(c.layer_norm_eps("norm_layer", 1e-5)?),
    };
    if patch_size.contains(&0) || embed_dim == 0 {
        return Err(Error::Config(format!(
            "{M} config: patch_size {patch_size:?} and embed_dim {embed_dim} must be positive"
        )));
    }
    if input.len() != 5 || input[1] != in_chans || input.contains(&0) {
        return Err(Error::Shape(format!(
            "{M} takes x (B, in_chans = {in_chans}, D, H, W); input has shape {input:?}"
        )));
    }
    let part = PatchEmbed3D::new(&mut Init::new(0), in_chans, embed_dim, patch_size, norm)?;
    Ok(Box::new(Part {
        part,
        // (B, D', H', W', C) channels-last -> the official (B, C, D', H', W').
        forward: |p, x| p.forward(x)?.try_permute(&[0, 4, 1, 2, 3]),
        params: |p, prefix, out| p.params(prefix, out),
    }))
}

fn build_patch_merging(
    c: &mut ConfigReader,
    input: &[usize],
    _train: bool,
) -> Result<Box<dyn Block>> {
    const M: &str = "video_swin.PatchMerging";
    let dim = c.usize("dim", None)?;
    let eps = c.layer_norm_eps("norm_layer", 1e-5)?;
    if input.len() != 5 || input[4] != dim || input.contains(&0) {
        return Err(Error::Shape(format!(
            "{M} takes x (B, D, H, W, dim = {dim}) channels-last; input has shape {input:?}"
        )));
    }
    let part = PatchMerging::new(&mut Init::new(0), dim, eps)?;
    Ok(Box::new(Part {
        part,
        forward: |p, x| p.forward(x),
        params: |p, prefix, out| p.params(prefix, out),
    }))
}

/// mmaction I3DHead: pooled (or flattened) features through `fc_cls`.
struct Head {
    head: I3DHead,
    pool: bool,
}

impl Block for Head {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if self.pool {
            // (B, C, D, H, W) -> channels-last (B, D, H, W, C), as the port's head reads it.
            return self
                .head
                .forward(&x.try_permute(&[0, 2, 3, 4, 1])?, train, 0);
        }
        // No pooling: x.view(N, -1), then fc_cls (dropout is refused in training above).
        let b = x.dim(0);
        self.head
            .fc_cls
            .forward(&x.try_reshape(&[b, x.numel() / b])?)
    }
    fn named_params(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.head.fc_cls.params("fc_cls", &mut out);
        out
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

fn build_i3d_head(c: &mut ConfigReader, input: &[usize], train: bool) -> Result<Box<dyn Block>> {
    const M: &str = "video_swin.I3DHead";
    let num_classes = c.usize("num_classes", None)?;
    let in_channels = c.usize("in_channels", None)?;
    // 'avg' (the default) pools; None or any other string leaves the features as they are.
    let pool = c.class("spatial_type", Some("avg"), None)?.as_deref() == Some("avg");
    let dropout = c.f64("dropout_ratio", Some(0.5))?;
    c.ignore("loss_cls"); // the training loss, not the forward
    c.ignore("init_std"); // initialisation only
    c.ignore("multi_class"); // BaseHead: the loss's, not the forward's
    c.ignore("label_smooth_eps");
    if !(0.0..1.0).contains(&dropout) {
        return Err(Error::Config(format!(
            "{M} config: dropout_ratio {dropout} must be in [0, 1)"
        )));
    }
    if train && dropout != 0.0 {
        return Err(unsupported(M, format!("train: true with dropout_ratio {dropout} (random; set it to 0 or use train: false)")));
    }
    let flat = input.iter().skip(1).product::<usize>();
    let ok = if pool {
        input.len() == 5 && input[1] == in_channels
    } else {
        !input.is_empty() && flat == in_channels
    };
    if !ok || input.contains(&0) {
        return Err(Error::Shape(format!(
            "{M} takes x (B, in_channels = {in_channels}, D, H, W){}; input has shape {input:?}",
            if pool {
                ""
            } else {
                " whose B-th slices hold in_channels values (no pooling)"
            }
        )));
    }
    let mut init = Init::new(0);
    let fc_cls = Linear::new(&mut init, in_channels, num_classes, true)?;
    Ok(Box::new(Head {
        head: I3DHead {
            fc_cls,
            dropout: dropout as f32,
        },
        pool,
    }))
}
