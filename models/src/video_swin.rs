//! Video Swin Transformer — Liu, Ning, Cao, Wei, Zhang, Lin, Hu (CVPR 2022), arXiv:2106.13230.
//!
//! Implemented: Swin-T, -S, -B (K400 and the SSv2 window 16×7×7) and -L (paper §3.2, Table 1–3
//! variants), plus a tiny preset for the synthetic set. The method section, top to bottom:
//! 3D patch partition + linear embedding (PatchEmbed3D, §3.1) → stages of Video Swin blocks
//! with 3D (shifted) window multi-head self-attention and a 3D relative position bias (§3.2,
//! eqs. 1–2) → patch merging (2× spatial downsampling, no temporal) → final LayerNorm →
//! I3D head (global average pool → Linear).
//! Reference implementation: SwinTransformer/Video-Swin-Transformer @db018fb,
//! `mmaction/models/backbones/swin_transformer.py` and `mmaction/models/heads/i3d_head.py`
//! (seed-models.md §3, tag VST). Its semantics are kept: input (B, in_chans = 3, T, H, W); zero
//! padding at the end of W, H, D to patch multiples; LayerNorm eps 1e-5 by default; exact (erf) GELU; window clamp
//! with `<=` and zero shift on a clamped axis; −100 masks; the bias table sliced `[:N, :N]` on a
//! clamped window; PatchMerging pads an odd H or W and never merges time.
//!
//! Parameters carry the official checkpoint keys (`backbone.…`, `cls_head.fc_cls.…`). The
//! per-block `attn.relative_position_index` is an int64 buffer recomputed from the window (the
//! fused kernel computes it in place), not a parameter: `named_params` and `named_buffers` leave
//! it out, so loading an official checkpoint uses the loader's non-strict mode, which ignores it.
//!
//! Engine ops: `conv3d` (patch embedding), `window_attention` (pad, cyclic shift, partition,
//! bias, mask, reverse and crop fused in one op), `patch_merging` (the 2×2 gather), `linear`,
//! `layer_norm`, `gelu`, `mean`, `dropout`.
//!
//! Options of the official constructors in [`Config`]: `qkv_bias` and `qk_scale`
//! ([`AttnOptions`]; `BasicLayer` defaults to qkv_bias False), `patch_norm`, `in_chans`, a
//! fractional `mlp_ratio` (hidden int(C·ratio)) and `norm_layer`'s eps ([`Config::norm_eps`]);
//! [`BasicLayer::new`] takes one drop-path rate per block, as the official list.
//!
//! Deviations: none in the computation. Drop path (stochastic depth, `drop_path_rate`) follows
//! the official per-block linspace (see [`residual`]); the tiny preset uses 0.

use std::cell::Cell;

use tubelet::checkpoint::{segment, Segment};
use tubelet::nn::{Init, LayerNorm, Linear};
use tubelet::ops::window_attention::{video_swin_window, SwinWindow};
use tubelet::{Error, Result, Tensor};

use crate::TINY_CLASSES as NUM_CLASSES;
use crate::{BuildOptions, InputLayout, Preset, VideoModel};

/// LayerNorm eps: plain `nn.LayerNorm`, the official `norm_layer` default and every config's.
pub const LN_EPS: f32 = 1e-5;

/// A Video Swin configuration, in the official constructor's names (`SwinTransformer3D`).
#[derive(Clone, Debug)]
pub struct Config {
    /// Default input clip: frames, height, width (the model accepts any size; it pads).
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    /// `patch_size` (pt, ph, pw): kernel = stride of the Conv3d embedding.
    pub patch_size: [usize; 3],
    /// `embed_dim` C of stage 1; stage i has C·2^i channels.
    pub embed_dim: usize,
    pub depths: Vec<usize>,
    pub num_heads: Vec<usize>,
    /// `window_size` (Wd, Wh, Ww); the shifted blocks shift by ⌊window/2⌋.
    pub window_size: [usize; 3],
    /// `mlp_ratio`: each block's MLP has int(C·mlp_ratio) hidden units (4 in every config).
    pub mlp_ratio: f64,
    /// Stochastic depth, spread linearly from 0 over all blocks (training only).
    pub drop_path_rate: f32,
    /// I3DHead `dropout_ratio` before fc_cls (training only).
    pub head_dropout: f32,
    pub num_classes: usize,
    /// `qkv_bias` (True in the backbone's signature and every config; `BasicLayer` and
    /// `WindowAttention3D` default to False) and `qk_scale` (None: head_dim^−0.5).
    pub attn: AttnOptions,
    /// `patch_norm`: a LayerNorm after the patch embedding (True in every released config; the
    /// constructor's default is False).
    pub patch_norm: bool,
    /// `in_chans`: channels of the input clip (3).
    pub in_chans: usize,
    /// The eps of every LayerNorm (`norm_layer`: `nn.LayerNorm`, eps 1e-5 = [`LN_EPS`], in
    /// every config; `partial(nn.LayerNorm, eps=…)` sets another).
    pub norm_eps: f32,
}

/// `int(dim * mlp_ratio)`: the official MLP width (Python's int truncates).
pub fn mlp_hidden(dim: usize, mlp_ratio: f64) -> usize {
    (dim as f64 * mlp_ratio) as usize
}

/// The attention options every Swin block takes (`qkv_bias`, `qk_scale`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnOptions {
    /// The qkv Linear has a bias.
    pub qkv_bias: bool,
    /// The logits' scale; `None` is head_dim^−0.5 (`qk_scale or head_dim ** -0.5`).
    pub qk_scale: Option<f32>,
}

impl AttnOptions {
    /// The released configurations' choice: qkv bias, head_dim^−0.5.
    pub const RELEASED: AttnOptions = AttnOptions {
        qkv_bias: true,
        qk_scale: None,
    };
}

impl Config {
    fn base(
        embed_dim: usize,
        depths: &[usize],
        num_heads: &[usize],
        drop_path_rate: f32,
    ) -> Config {
        Config {
            frames: 32,
            height: 224,
            width: 224,
            patch_size: [2, 4, 4],
            embed_dim,
            depths: depths.to_vec(),
            num_heads: num_heads.to_vec(),
            window_size: [8, 7, 7],
            mlp_ratio: 4.0,
            drop_path_rate,
            head_dropout: 0.5,
            num_classes: 400,
            attn: AttnOptions::RELEASED,
            patch_norm: true,
            in_chans: 3,
            norm_eps: LN_EPS,
        }
    }

    /// Swin-T, K400 (VST `configs/recognition/swin/swin_tiny_patch244_window877_kinetics400_1k.py`
    /// over `configs/_base_/models/swin/swin_tiny.py`): C 96, depths 2,2,6,2, heads 3,6,12,24.
    pub fn swin_t() -> Config {
        Config::base(96, &[2, 2, 6, 2], &[3, 6, 12, 24], 0.1)
    }

    /// Swin-S, K400 (VST `swin_small_patch244_window877_kinetics400_1k.py`): depths 2,2,18,2.
    pub fn swin_s() -> Config {
        Config::base(96, &[2, 2, 18, 2], &[3, 6, 12, 24], 0.1)
    }

    /// Swin-B, K400 (VST `swin_base_patch244_window877_kinetics400_1k.py`): C 128, heads 4..32.
    pub fn swin_b() -> Config {
        Config::base(128, &[2, 2, 18, 2], &[4, 8, 16, 32], 0.3)
    }

    /// Swin-B, Something-Something v2 (VST `swin_base_patch244_window1677_sthv2.py`): window
    /// 16×7×7 (no temporal shift at 32 frames: D = 16 is clamped), 174 classes.
    pub fn swin_b_ssv2() -> Config {
        Config {
            window_size: [16, 7, 7],
            num_classes: 174,
            ..Config::base(128, &[2, 2, 18, 2], &[4, 8, 16, 32], 0.4)
        }
    }

    /// Swin-L (VST `configs/_base_/models/swin/swin_large.py`: C 192, heads 6..48) with the
    /// recognition recipe's patch 2×4×4 and 400 classes. No recognition config is released for
    /// L; drop path 0.2 is the base files' default.
    pub fn swin_l() -> Config {
        Config::base(192, &[2, 2, 18, 2], &[6, 12, 24, 48], 0.2)
    }

    /// A tiny Video Swin for the synthetic moving-shapes set (8 frames of 32², 8 classes): C 32,
    /// depths 2,2, heads 1,2 (head dim 32), window 2×4×4. Stage 1 runs on a 4×8×8 grid with
    /// shift (1,2,2); patch merging gives 4×4×4, where H = W = 4 ≤ 4 clamp the spatial shift to
    /// 0 (shift (1,0,0)), as stage 4 of Swin-T at 224². No head dropout and no drop path, like
    /// every tiny preset of the zoo: on a 8-class, 4-clip batch a 0.5 head dropout makes the loss
    /// of single steps too noisy to show learning in a few steps.
    pub fn tiny(num_classes: usize) -> Config {
        Config {
            frames: 8,
            height: 32,
            width: 32,
            patch_size: [2, 4, 4],
            embed_dim: 32,
            depths: vec![2, 2],
            num_heads: vec![1, 2],
            window_size: [2, 4, 4],
            mlp_ratio: 4.0,
            drop_path_rate: 0.0,
            head_dropout: 0.0,
            num_classes,
            attn: AttnOptions::RELEASED,
            patch_norm: true,
            in_chans: 3,
            norm_eps: LN_EPS,
        }
    }

    /// Channels of stage i: C·2^i.
    pub fn dim(&self, stage: usize) -> usize {
        self.embed_dim << stage
    }

    /// Channels after the last stage (the head's input).
    pub fn num_features(&self) -> usize {
        self.dim(self.depths.len() - 1)
    }

    /// `dpr = torch.linspace(0, drop_path_rate, sum(depths))`: the rate of every block, in order.
    pub fn drop_path_rates(&self) -> Vec<f32> {
        let n: usize = self.depths.iter().sum();
        (0..n)
            .map(|i| {
                if n > 1 {
                    self.drop_path_rate * i as f32 / (n - 1) as f32
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Token grid (D, H, W) after the patch embedding of a clip [T, H, W] (padded up).
    pub fn grid(&self, [t, h, w]: [usize; 3]) -> [usize; 3] {
        let p = self.patch_size;
        [t.div_ceil(p[0]), h.div_ceil(p[1]), w.div_ceil(p[2])]
    }

    /// Parameters, counted from the config (seed-models.md §8): the official model's, with the
    /// head, without the `relative_position_index` buffers.
    pub fn num_params(&self) -> usize {
        let ln = |d: usize| 2 * d;
        let lin = |i: usize, o: usize| i * o + o;
        let [pt, ph, pw] = self.patch_size;
        let [wd, wh, ww] = self.window_size;
        let table = (2 * wd - 1) * (2 * wh - 1) * (2 * ww - 1);
        let c0 = self.embed_dim;
        let mut n =
            c0 * self.in_chans * pt * ph * pw + c0 + if self.patch_norm { ln(c0) } else { 0 }; // patch_embed.proj + .norm
        for (i, (&depth, &heads)) in self.depths.iter().zip(&self.num_heads).enumerate() {
            let (c, m) = (self.dim(i), mlp_hidden(self.dim(i), self.mlp_ratio));
            let qkv = lin(c, 3 * c) - if self.attn.qkv_bias { 0 } else { 3 * c };
            n += depth * (2 * ln(c) + qkv + lin(c, c) + table * heads + lin(c, m) + lin(m, c));
            if i + 1 < self.depths.len() {
                n += ln(4 * c) + 4 * c * 2 * c; // downsample: norm(4C) + reduction (no bias)
            }
        }
        let f = self.num_features();
        n + ln(f) + lin(f, self.num_classes)
    }

    /// Multiply-accumulates of one clip of the default size (conv, linear and the two attention
    /// matmuls; seed-models.md §8): per block Np·4C² (qkv, proj on the padded windows) +
    /// 2·Np·Nwin·C (q·kᵀ, attn·v) + N·8C² (MLP); merging (N/4)·8C²; embedding N0·C·3·∏patch.
    pub fn macs(&self) -> f64 {
        let [d, mut h, mut w] = self.grid([self.frames, self.height, self.width]);
        let p = self.patch_size;
        let mut macs = (d * h * w * self.embed_dim * self.in_chans * p[0] * p[1] * p[2]) as f64;
        for (i, &depth) in self.depths.iter().enumerate() {
            let c = self.dim(i) as f64;
            let win = video_swin_window([d, h, w], self.window_size, [0; 3]).window;
            let padded: usize = [d, h, w]
                .iter()
                .zip(win)
                .map(|(&g, w)| g.div_ceil(w) * w)
                .product();
            let (np, n, nwin) = (
                padded as f64,
                (d * h * w) as f64,
                (win[0] * win[1] * win[2]) as f64,
            );
            let m = mlp_hidden(self.dim(i), self.mlp_ratio) as f64;
            macs += depth as f64 * (np * 4.0 * c * c + 2.0 * np * nwin * c + n * 2.0 * m * c);
            if i + 1 < self.depths.len() {
                (h, w) = (h.div_ceil(2), w.div_ceil(2));
                macs += (d * h * w) as f64 * 4.0 * c * 2.0 * c;
            }
        }
        macs + (self.num_features() * self.num_classes) as f64
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Config(format!("Video Swin config: {what}")));
        if self.patch_size.contains(&0) || self.window_size.contains(&0) {
            return bad(format!(
                "patch {:?} and window {:?} must be positive",
                self.patch_size, self.window_size
            ));
        }
        if [self.frames, self.height, self.width].contains(&0) {
            return bad(format!(
                "clip {}×{}×{} must be non-empty",
                self.frames, self.height, self.width
            ));
        }
        if self.depths.is_empty()
            || self.depths.len() != self.num_heads.len()
            || self.depths.contains(&0)
        {
            return bad(format!(
                "depths {:?} and num_heads {:?} must be non-empty, of equal length, depths ≥ 1",
                self.depths, self.num_heads
            ));
        }
        for (i, &heads) in self.num_heads.iter().enumerate() {
            if heads == 0 || !self.dim(i).is_multiple_of(heads) {
                return bad(format!(
                    "stage {i}: {} channels are not divisible by {heads} heads",
                    self.dim(i)
                ));
            }
        }
        if self.embed_dim == 0 || self.num_classes == 0 || self.in_chans == 0 {
            return bad(format!(
                "embed_dim {}, classes {}, in_chans {} must be positive",
                self.embed_dim, self.num_classes, self.in_chans
            ));
        }
        // Every stage's MLP needs a hidden unit: int(C·mlp_ratio) ≥ 1 from the first stage on.
        if !self.mlp_ratio.is_finite() || mlp_hidden(self.embed_dim, self.mlp_ratio) == 0 {
            return bad(format!(
                "mlp_ratio {} gives stage 0 ({} channels) an MLP of width int({} × {}) = 0",
                self.mlp_ratio, self.embed_dim, self.embed_dim, self.mlp_ratio
            ));
        }
        if !(self.norm_eps > 0.0 && self.norm_eps.is_finite()) {
            return bad(format!("norm eps {} must be positive", self.norm_eps));
        }
        if !(0.0..1.0).contains(&self.drop_path_rate) || !(0.0..1.0).contains(&self.head_dropout) {
            return bad(format!(
                "drop_path_rate {} and head dropout {} must be in [0, 1)",
                self.drop_path_rate, self.head_dropout
            ));
        }
        Ok(())
    }
}

/// Zero padding at the end of `axis` by `amount` (official `F.pad`), as a concat with zeros.
fn pad_end(x: &Tensor, axis: usize, amount: usize) -> Result<Tensor> {
    if amount == 0 {
        return Ok(x.clone());
    }
    let mut shape = x.shape().to_vec();
    shape[axis] = amount;
    Tensor::try_cat(&[x, &Tensor::try_full(&shape, 0.0)?], axis)
}

/// `x + DropPath(branch)`: every residual of the model goes through here. Stochastic depth
/// (Huang et al. 2016; timm `DropPath`) zeroes a sample's whole branch with probability p and
/// scales the kept ones by 1/(1 − p), in training only.
fn residual(x: &Tensor, branch: &Tensor, p: f32, train: bool, seed: u64) -> Result<Tensor> {
    x.try_add(&branch.try_drop_path_if(train, p, seed)?) // engine/src/ops/drop_path.rs
}

/// PyTorch's default Conv3d init, U(±1/√fan_in) for weight and bias (the official init_weights
/// touches only Linear and LayerNorm). Glorot's bound √(6/(fan_in + fan_out)) equals 1/√fan_in
/// for fan_out = 5·fan_in.
fn conv_default(init: &mut Init, shape: &[usize], fan_in: usize) -> Result<Tensor> {
    init.xavier_uniform(shape, fan_in, 5 * fan_in)
}

/// PatchEmbed3D (§3.1): pad to patch multiples, Conv3d(3 → C, k = s = patch), then
/// LayerNorm(C) when `patch_norm` (the official `norm_layer`, None by default).
pub struct PatchEmbed3D {
    /// `proj.weight` (C, 3, pt, ph, pw), `proj.bias` (C).
    pub proj: (Tensor, Tensor),
    pub norm: Option<LayerNorm>,
    pub patch_size: [usize; 3],
}

impl PatchEmbed3D {
    /// `PatchEmbed3D(patch_size, in_chans, embed_dim = c, norm_layer)`; `norm_eps`: the norm
    /// layer's eps, `None` for no norm (`norm_layer=None`, the class's default).
    pub fn new(
        init: &mut Init,
        in_chans: usize,
        c: usize,
        patch_size: [usize; 3],
        norm_eps: Option<f32>,
    ) -> Result<Self> {
        let [pt, ph, pw] = patch_size;
        let fan_in = in_chans * pt * ph * pw;
        let proj = (
            conv_default(init, &[c, in_chans, pt, ph, pw], fan_in)?,
            conv_default(init, &[c], fan_in)?,
        );
        let norm = norm_eps
            .map(|eps| LayerNorm::torch(init, c, eps))
            .transpose()?;
        Ok(PatchEmbed3D {
            proj,
            norm,
            patch_size,
        })
    }

    /// x (B, in_chans, T, H, W) -> tokens (B, D, H', W', C), channels-last.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let p = self.patch_size;
        // Official order: W, then H, then D, each padded at the end to a patch multiple.
        let mut x = x.clone();
        for (axis, k) in [(4, p[2]), (3, p[1]), (2, p[0])] {
            let len = x.dim(axis as isize);
            x = pad_end(&x, axis, (k - len % k) % k)?;
        }
        let y = x.try_conv3d(&self.proj.0, Some(&self.proj.1), p, [0; 3], 1)?; // (B, C, D, H', W')
        let y = y.try_permute(&[0, 2, 3, 4, 1])?; // (B, D, H', W', C)
        match &self.norm {
            Some(norm) => norm.forward(&y),
            None => Ok(y),
        }
    }

    /// Parameters under `prefix` (`patch_embed` in the backbone), official names.
    pub fn params(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        out.push((format!("{prefix}.proj.weight"), self.proj.0.clone()));
        out.push((format!("{prefix}.proj.bias"), self.proj.1.clone()));
        if let Some(norm) = &self.norm {
            norm.params(&format!("{prefix}.norm"), out);
        }
    }
}

/// WindowAttention3D (§3.2, eq. 2): Attention(Q, K, V) = SoftMax(QKᵀ/√d + B)V within 3D
/// windows, B from the ((2P−1)(2M−1)(2M−1), heads) relative position bias table.
#[derive(Clone)]
pub struct WindowAttention3D {
    /// `relative_position_bias_table` ((2Wd−1)(2Wh−1)(2Ww−1), heads), trunc_normal(0.02).
    pub relative_position_bias_table: Tensor,
    pub qkv: Linear,
    pub proj: Linear,
    pub num_heads: usize,
    /// `qk_scale`; `None` is head_dim^−0.5.
    pub qk_scale: Option<f32>,
}

impl WindowAttention3D {
    /// x (B, D, H, W, C), already normalised -> (B, D, H, W, C). Padding to window multiples
    /// (pad tokens are zeros before qkv, so their q, k, v are the qkv bias), the cyclic shift,
    /// window partition, bias, shift mask, window reverse and crop are inside the fused op.
    pub fn forward(&self, x: &Tensor, win: SwinWindow) -> Result<Tensor> {
        let c = x.dim(-1);
        let scale = self
            .qk_scale
            .unwrap_or(((c / self.num_heads) as f32).powf(-0.5)); // qk_scale or head_dim^−0.5
        let qkv = self.qkv.forward(x)?; // (B, D, H, W, 3C), last dim [3][heads][hd]
                                        // The op gives pad tokens the qkv of a zero row, i.e. the bias: zeros without one.
        let zero;
        let bias = match self.qkv.bias.as_ref() {
            Some(b) => b,
            None => {
                zero = Tensor::try_full(&[3 * c], 0.0)?;
                &zero
            }
        };
        let y = qkv.try_window_attention(
            bias,
            &self.relative_position_bias_table,
            self.num_heads,
            scale,
            win,
        )?;
        self.proj.forward(&y) // (B, D, H, W, C)
    }
}

/// Mlp: fc1 (C → int(C·mlp_ratio)), exact GELU, fc2 (back to C).
#[derive(Clone)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

impl Mlp {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.try_gelu()?)
    }
}

/// SwinTransformerBlock3D (§3.2, eq. 3, Fig. 3): W-MSA in even blocks, SW-MSA (shift ⌊w/2⌋)
/// in odd ones:  ẑ = z + 3DW-MSA(LN(z));  z' = ẑ + FFN(LN(ẑ)).
#[derive(Clone)]
pub struct SwinTransformerBlock3D {
    pub norm1: LayerNorm,
    pub attn: WindowAttention3D,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
    /// Shift by ⌊window/2⌋ (odd block index) or not.
    pub shifted: bool,
    pub drop_path: f32,
}

impl SwinTransformerBlock3D {
    #[allow(clippy::too_many_arguments)]
    fn new(
        init: &mut Init,
        c: usize,
        heads: usize,
        table: usize,
        mlp_ratio: f64,
        shifted: bool,
        drop_path: f32,
        attn: AttnOptions,
        eps: f32,
    ) -> Result<Self> {
        let m = mlp_hidden(c, mlp_ratio);
        Ok(SwinTransformerBlock3D {
            norm1: LayerNorm::torch(init, c, eps)?,
            attn: WindowAttention3D {
                relative_position_bias_table: init.trunc_normal(&[table, heads], 0.02)?,
                qkv: Linear::new(init, c, 3 * c, attn.qkv_bias)?,
                proj: Linear::new(init, c, c, true)?,
                num_heads: heads,
                qk_scale: attn.qk_scale,
            },
            norm2: LayerNorm::torch(init, c, eps)?,
            mlp: Mlp {
                fc1: Linear::new(init, c, m, true)?,
                fc2: Linear::new(init, m, c, true)?,
            },
            shifted,
            drop_path,
        })
    }

    /// x (B, D, H, W, C) -> (B, D, H, W, C). `window` is the configured window.
    pub fn forward(
        &self,
        x: &Tensor,
        window: [usize; 3],
        train: bool,
        seed: u64,
    ) -> Result<Tensor> {
        let dims = [x.dim(1), x.dim(2), x.dim(3)];
        let shift = if self.shifted {
            window.map(|w| w / 2)
        } else {
            [0; 3]
        };
        // Official get_window_size: an axis with size ≤ window takes the size and shift 0.
        let win = video_swin_window(dims, window, shift);
        let a = self.attn.forward(&self.norm1.forward(x)?, win)?;
        let x = residual(x, &a, self.drop_path, train, seed)?; // ẑ = z + 3DW-MSA(LN(z))
        let m = self.mlp.forward(&self.norm2.forward(&x)?)?;
        residual(&x, &m, self.drop_path, train, seed ^ 0x9e37_79b9) // z' = ẑ + FFN(LN(ẑ))
    }

    fn params(&self, p: &str, out: &mut Vec<(String, Tensor)>) {
        self.norm1.params(&format!("{p}.norm1"), out);
        out.push((
            format!("{p}.attn.relative_position_bias_table"),
            self.attn.relative_position_bias_table.clone(),
        ));
        self.attn.qkv.params(&format!("{p}.attn.qkv"), out);
        self.attn.proj.params(&format!("{p}.attn.proj"), out);
        self.norm2.params(&format!("{p}.norm2"), out);
        self.mlp.fc1.params(&format!("{p}.mlp.fc1"), out);
        self.mlp.fc2.params(&format!("{p}.mlp.fc2"), out);
    }
}

/// PatchMerging (§3.1): concatenate each 2×2 spatial neighbourhood (time is not merged),
/// LayerNorm(4C), Linear(4C → 2C, no bias).
#[derive(Clone)]
pub struct PatchMerging {
    pub reduction: Linear,
    pub norm: LayerNorm,
}

impl PatchMerging {
    /// `PatchMerging(dim, norm_layer)`: reduction Linear(4·dim → 2·dim, no bias), norm
    /// LayerNorm(4·dim) of eps `eps` ([`LN_EPS`] for the default `nn.LayerNorm`).
    pub fn new(init: &mut Init, dim: usize, eps: f32) -> Result<PatchMerging> {
        Ok(PatchMerging {
            reduction: Linear::new(init, 4 * dim, 2 * dim, false)?,
            norm: LayerNorm::torch(init, 4 * dim, eps)?,
        })
    }

    /// Parameters under `prefix` (`layers.{i}.downsample` in the backbone), official names.
    pub fn params(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        self.reduction.params(&format!("{prefix}.reduction"), out);
        self.norm.params(&format!("{prefix}.norm"), out);
    }

    /// x (B, D, H, W, C) -> (B, D, ⌈H/2⌉, ⌈W/2⌉, 2C).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.try_patch_merging()?; // (B, D, ⌈H/2⌉, ⌈W/2⌉, 4C), odd H, W zero-padded
        self.reduction.forward(&self.norm.forward(&x)?)
    }
}

/// BasicLayer: one stage of blocks, then PatchMerging except after the last stage. The shift
/// mask is built per stage in the official code; the fused op derives it from coordinates.
#[derive(Clone)]
pub struct BasicLayer {
    pub blocks: Vec<SwinTransformerBlock3D>,
    pub downsample: Option<PatchMerging>,
    pub window_size: [usize; 3],
}

impl BasicLayer {
    /// A stage of `depth` blocks of `dim` channels (odd blocks shifted), with drop-path rates
    /// `drop_path` (one per block: the official list, or a number repeated), followed by
    /// PatchMerging when `downsample`; `attn` is the blocks' `qkv_bias` and `qk_scale`,
    /// `norm_eps` the eps of `norm_layer` (blocks and merging; [`LN_EPS`] by default).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        init: &mut Init,
        dim: usize,
        depth: usize,
        num_heads: usize,
        window_size: [usize; 3],
        mlp_ratio: f64,
        drop_path: &[f32],
        downsample: bool,
        attn: AttnOptions,
        norm_eps: f32,
    ) -> Result<BasicLayer> {
        if drop_path.len() != depth {
            return Err(Error::Config(format!(
                "Video Swin BasicLayer: {} drop-path rates for {depth} blocks",
                drop_path.len()
            )));
        }
        let [wd, wh, ww] = window_size;
        let table = (2 * wd - 1) * (2 * wh - 1) * (2 * ww - 1);
        let blocks = (0..depth)
            .map(|j| {
                SwinTransformerBlock3D::new(
                    init,
                    dim,
                    num_heads,
                    table,
                    mlp_ratio,
                    j % 2 == 1,
                    drop_path[j],
                    attn,
                    norm_eps,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let downsample = if downsample {
            Some(PatchMerging::new(init, dim, norm_eps)?)
        } else {
            None
        };
        Ok(BasicLayer {
            blocks,
            downsample,
            window_size,
        })
    }

    /// Parameters under `prefix` (`layers.{i}` in the backbone), official names.
    pub fn params(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        for (j, blk) in self.blocks.iter().enumerate() {
            blk.params(&format!("{prefix}.blocks.{j}"), out);
        }
        if let Some(m) = &self.downsample {
            m.params(&format!("{prefix}.downsample"), out);
        }
    }

    pub fn forward(&self, x: &Tensor, train: bool, seed: u64) -> Result<Tensor> {
        let window = self.window_size;
        let blocks = move |blk: &SwinTransformerBlock3D, j: usize, x: &Tensor| {
            blk.forward(x, window, train, seed.wrapping_add(j as u64 * 2))
        };
        let x = crate::blocks::blocks(x, &self.blocks, blocks)?; // checkpoint segments
        match &self.downsample {
            // Its 4C concatenation and norm are not kept either under `--checkpoint blocks`.
            Some(m) => {
                let m = m.clone();
                segment(Segment::Block, &x, move |x| m.forward(x))
            }
            None => Ok(x),
        }
    }
}

/// I3DHead (mmaction `heads/i3d_head.py`): AdaptiveAvgPool3d(1) → Dropout → Linear (`fc_cls`,
/// normal(0.01) init, bias 0).
pub struct I3DHead {
    pub fc_cls: Linear,
    pub dropout: f32,
}

impl I3DHead {
    /// x (B, D, H, W, C) -> logits (B, classes).
    pub fn forward(&self, x: &Tensor, train: bool, seed: u64) -> Result<Tensor> {
        let mut pooled = x.try_mean(&[1, 2, 3], false)?; // (B, C)
        if train {
            pooled = pooled.try_dropout(self.dropout, seed)?;
        }
        self.fc_cls.forward(&pooled)
    }
}

/// The Video Swin classifier: `SwinTransformer3D` backbone + `I3DHead`.
pub struct VideoSwin {
    pub config: Config,
    pub patch_embed: PatchEmbed3D,
    pub layers: Vec<BasicLayer>,
    pub norm: LayerNorm,
    pub cls_head: I3DHead,
    /// Training forwards so far: each draws fresh dropout seeds.
    steps: Cell<u64>,
    seed: u64,
}

impl VideoSwin {
    pub fn new(config: Config, seed: u64) -> Result<VideoSwin> {
        config.validate()?;
        let mut init = Init::new(seed);
        let patch_embed = PatchEmbed3D::new(
            &mut init,
            config.in_chans,
            config.embed_dim,
            config.patch_size,
            config.patch_norm.then_some(config.norm_eps),
        )?;
        let rates = config.drop_path_rates();
        let n = config.depths.len();
        let mut layers = Vec::with_capacity(n);
        let mut first = 0;
        for (i, (&depth, &heads)) in config.depths.iter().zip(&config.num_heads).enumerate() {
            let layer_rates = &rates[first..first + depth];
            first += depth;
            layers.push(BasicLayer::new(
                &mut init,
                config.dim(i),
                depth,
                heads,
                config.window_size,
                config.mlp_ratio,
                layer_rates,
                i + 1 < n,
                config.attn,
                config.norm_eps,
            )?);
        }
        let f = config.num_features();
        let norm = LayerNorm::torch(&mut init, f, config.norm_eps)?;
        let fc_cls = Linear {
            weight: init.normal(&[config.num_classes, f], 0.01)?,
            bias: Some(init.constant(&[config.num_classes], 0.0)?),
        };
        let cls_head = I3DHead {
            fc_cls,
            dropout: config.head_dropout,
        };
        Ok(VideoSwin {
            config,
            patch_embed,
            layers,
            norm,
            cls_head,
            steps: Cell::new(0),
            seed,
        })
    }

    /// A non-empty (B, in_chans, T, H, W) clip batch, or an error naming the shape.
    fn check_input(&self, x: &Tensor) -> Result<()> {
        let c = self.config.in_chans;
        if x.rank() != 5 || x.dim(1) != c || x.shape().contains(&0) {
            return Err(Error::Shape(format!(
                "Video Swin: input of shape {:?}, expected a non-empty (B, {c}, T, H, W) clip batch (in_chans {c})",
                x.shape()
            )));
        }
        Ok(())
    }

    /// x (B, in_chans, T, H, W) -> logits (B, classes). Any T, H, W ≥ 1: the embedding and the
    /// windows pad as the official code does.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.check_input(x)?;
        // A fresh seed per training forward (and per block inside), reproducible from the model's.
        let step = self.steps.get();
        if train {
            self.steps.set(step + 1);
        }
        let seed = self.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (step << 20);
        let h = self.forward_features_seeded(x, train, seed)?;
        self.cls_head.forward(&h, train, seed ^ 0x5851_f42d)
    }

    /// The `SwinTransformer3D` backbone alone: x (B, in_chans, T, H, W) -> normalised features
    /// (B, D, H', W', C·2^(stages−1)), channels-last (the official backbone returns them
    /// permuted to (B, C, D, H', W')). Drop path uses the model's seed of forward 0.
    pub fn forward_features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.check_input(x)?;
        self.forward_features_seeded(x, train, self.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn forward_features_seeded(&self, x: &Tensor, train: bool, seed: u64) -> Result<Tensor> {
        let mut h = self.patch_embed.forward(x)?; // (B, D, H/4, W/4, C); pos_drop is p = 0
        let mut block_seed = seed;
        for layer in &self.layers {
            let (l, s) = (layer.clone(), block_seed); // a checkpoint segment (engine/src/checkpoint.rs)
            h = segment(Segment::Stage, &h, move |h| l.forward(h, train, s))?; // stage i: (B, D, H/2^(i+2), W/2^(i+2), C·2^i)
            block_seed = block_seed.wrapping_add(2 * layer.blocks.len() as u64);
        }
        self.norm.forward(&h) // (B, D, H', W', 8C), channels-last as the official rearrange
    }

    /// Every parameter under its official checkpoint key (`backbone.…`, `cls_head.…`).
    pub fn named_params(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.patch_embed.params("backbone.patch_embed", &mut out);
        for (i, layer) in self.layers.iter().enumerate() {
            layer.params(&format!("backbone.layers.{i}"), &mut out);
        }
        self.norm.params("backbone.norm", &mut out);
        self.cls_head.fc_cls.params("cls_head.fc_cls", &mut out);
        out
    }
}

impl VideoModel for VideoSwin {
    fn clip(&self) -> [usize; 3] {
        [self.config.frames, self.config.height, self.config.width]
    }

    fn num_classes(&self) -> usize {
        self.config.num_classes
    }

    fn input_layout(&self) -> InputLayout {
        InputLayout::Bcthw
    }

    /// `train` applies the head dropout (and drop path, see [`residual`]).
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        VideoSwin::forward(self, x, train)
    }

    fn named_params(&self) -> Vec<(String, Tensor)> {
        VideoSwin::named_params(self)
    }

    /// None: the official checkpoint's only buffers are the int64 `relative_position_index`
    /// tables, which the fused kernel recomputes; the non-strict loader ignores them.
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    fn rng_counters(&self) -> Vec<(String, u64)> {
        vec![("steps".into(), self.steps.get())]
    }

    fn set_rng_counters(&self, counters: &[(String, u64)]) -> Result<()> {
        crate::set_counters("Video Swin", counters, &[("steps", &|v| self.steps.set(v))])
    }
}

/// A preset's config at the options' class count, clip and drop-path rate (checked by the
/// model's own `Config::validate` when built).
fn configure(mut c: Config, o: &BuildOptions) -> Result<Config> {
    c.num_classes = o.classes(c.num_classes)?;
    let [t, h, w] = o.clip_or([c.frames, c.height, c.width])?;
    (c.frames, c.height, c.width) = (t, h, w);
    if let Some(r) = o.drop_path {
        c.drop_path_rate = r;
    }
    Ok(c)
}

fn preset(
    name: &'static str,
    description: &'static str,
    config: fn() -> Config,
    tiny: bool,
    build: fn(&BuildOptions) -> Result<Box<dyn VideoModel>>,
) -> Preset {
    let c = config();
    Preset {
        name,
        description,
        params: c.num_params(),
        gmacs: c.macs() / 1e9,
        clip: [c.frames, c.height, c.width],
        tiny,
        num_classes: c.num_classes,
        build,
    }
}

fn tiny_config() -> Config {
    Config::tiny(NUM_CLASSES)
}

/// Video Swin presets: the paper's variants at 32×224², and the tiny synthetic-set model.
pub fn presets() -> Vec<Preset> {
    vec![
        preset("swin-t", "Video Swin-T, K400, 32x224, patch 2x4x4, window 8x7x7 (VST swin_tiny_patch244_window877_kinetics400_1k)",
            Config::swin_t, false, |o| Ok(Box::new(VideoSwin::new(configure(Config::swin_t(), o)?, o.seed)?))),
        preset("swin-s", "Video Swin-S, K400, 32x224 (VST swin_small_patch244_window877_kinetics400_1k)",
            Config::swin_s, false, |o| Ok(Box::new(VideoSwin::new(configure(Config::swin_s(), o)?, o.seed)?))),
        preset("swin-b", "Video Swin-B, K400, 32x224 (VST swin_base_patch244_window877_kinetics400_1k)",
            Config::swin_b, false, |o| Ok(Box::new(VideoSwin::new(configure(Config::swin_b(), o)?, o.seed)?))),
        preset("swin-b-ssv2", "Video Swin-B, SSv2, 32x224, window 16x7x7, 174 classes (VST swin_base_patch244_window1677_sthv2)",
            Config::swin_b_ssv2, false, |o| Ok(Box::new(VideoSwin::new(configure(Config::swin_b_ssv2(), o)?, o.seed)?))),
        preset("swin-l", "Video Swin-L, 32x224, patch 2x4x4, 400 classes (VST _base_/models/swin/swin_large; no released recognition config)",
            Config::swin_l, false, |o| Ok(Box::new(VideoSwin::new(configure(Config::swin_l(), o)?, o.seed)?))),
        preset("swin-tiny", "Video Swin, tiny: 8x32x32, patch 2x4x4, window 2x4x4, C 32, depths 2,2, heads 1,2",
            tiny_config, true, |o| Ok(Box::new(VideoSwin::new(configure(tiny_config(), o)?, o.seed)?))),
    ]
}
