//! TimeSformer: "Is Space-Time Attention All You Need for Video Understanding?" — Bertasius,
//! Wang, Torresani (ICML 2021), arXiv:2102.05095.
//!
//! A ViT-B/16 applied to every frame (Conv2d 16×16/16 patch embedding), a learned space
//! (`pos_embed`) and time (`time_embed`) embedding, and blocks whose self-attention is one of the
//! paper's five schemes (§3, Fig. 2 and 3; [`Attention`]); the head reads the cls token.
//! Reference: facebookresearch/TimeSformer @a5ef29a, `timesformer/models/vit.py`
//! (`VisionTransformer`, `Block`). Its semantics are kept: exact-erf GELU, LayerNorm eps 1e-6,
//! qkv with bias, input (B, 3, T, H, W), tokens in `(h w t)` order (time fastest), the cls token
//! kept out of temporal attention, repeated per frame in spatial attention and its T outputs
//! averaged, `temporal_fc` after the temporal branch, zero-initialised in every block, and the
//! parameter keys of the official checkpoint without its `model.` prefix (the official loader
//! strips it).
//!
//! Implemented: divided space-time (T+S), joint space-time (ST) and space-only (S) as in the
//! official code; sparse local-global (L+G) and axial (T+W+H), which are NOT in the official code
//! (its `Block` asserts the three above), reconstructed from the paper as described on
//! [`Attention`]. Presets: TimeSformer (8×224²), -HR (16×448²), -L (96×224²) with divided
//! attention (TSF README), the joint and space-only baselines, L+G and T+W+H at base size, and a
//! tiny model for the synthetic set.
//!
//! `qkv_bias`, `qk_scale` and the norm layer's eps of the official constructors are [`Config`]
//! fields (the `TimeSformer` class passes qkv_bias True and eps 1e-6).
//!
//! Deviations: the position and time embeddings are not resized at run time (the official
//! forward interpolates them, nearest, when the input's grid differs): the model takes the clip
//! it was built for and errors otherwise. Attention and MLP dropout are 0 in the official configs
//! and not applied. Drop path (stochastic depth, linspace 0 → `drop_path` over the blocks, 0.1 in
//! the official configs) is applied when training, one draw per clip and residual; the official
//! code draws per row of the rearranged tensor (per (b, h, w) in the temporal branch, per (b, t)
//! in the spatial one).

use std::cell::Cell;

use tubelet::nn::{Init, LayerNorm, Linear};
use tubelet::{Error, Result, Tensor};

use crate::grid_attention::{group_attention, group_attention_with_cls, Grid, Groups, Order};
use crate::TINY_CLASSES as NUM_CLASSES;
use crate::{BuildOptions, InputLayout, Preset, VideoModel};

/// The self-attention scheme of every block (paper §3, Fig. 2, Table 1; TSF `attention_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attention {
    /// "S": each frame attends within itself (a ViT per frame), the frames' sequences are
    /// averaged after the last block. TSF `space_only`; no `time_embed`.
    SpaceOnly,
    /// "ST": one attention over all T·N + 1 tokens. TSF `joint_space_time`.
    JointSpaceTime,
    /// "T+S": temporal attention (each patch with the same patch in the other frames), then
    /// spatial attention (within each frame, cls included). TSF `divided_space_time`, eq. 6-8.
    DividedSpaceTime,
    /// "L+G" (not in the official code): local attention within each T × H/2 × W/2 quadrant of
    /// the clip, then sparse global attention among the tokens of each stride-2 lattice
    /// (equal t, h, w parities: 8 groups of T/2 × H/2 × W/2), Sparse-Transformer style.
    /// Inferred: the paper's "neighbouring F × H/2 × W/2 patches" are taken as non-overlapping
    /// quadrants; the layout mirrors T+S (Table 1: same 121.4M parameters): the local branch is
    /// `local_norm1`/`local_attn`/`local_fc` without the cls token, the global one is
    /// `norm1`/`attn` with the cls token repeated per group and averaged.
    SparseLocalGlobal,
    /// "T+W+H" (not in the official code): attention over time, then width (each row), then
    /// height (each column). Inferred layout, mirroring T+S: `temporal_*` and `width_*` branches
    /// (LN, MSA, fc; patches only), then height as `norm1`/`attn` with the cls token (repeated
    /// per column, averaged). This gives 156.8M parameters at 174 classes (paper Table 1:
    /// 156.3M); an fc after the height attention too would give 163.9M.
    Axial,
}

impl Attention {
    /// The patch-only branches before the final attention: (key prefix, groups).
    fn branches(self) -> &'static [(&'static str, Groups)] {
        match self {
            Attention::SpaceOnly | Attention::JointSpaceTime => &[],
            Attention::DividedSpaceTime => &[("temporal", Groups::Time)],
            Attention::SparseLocalGlobal => &[("local", Groups::LocalWindows)],
            Attention::Axial => &[("temporal", Groups::Time), ("width", Groups::Width)],
        }
    }

    /// The groups of the final attention, which the cls token joins.
    fn final_groups(self) -> Option<Groups> {
        match self {
            Attention::SpaceOnly | Attention::JointSpaceTime => None,
            Attention::DividedSpaceTime => Some(Groups::Space),
            Attention::SparseLocalGlobal => Some(Groups::StridedGlobal),
            Attention::Axial => Some(Groups::Height),
        }
    }
}

/// TimeSformer configuration (TSF `VisionTransformer` arguments).
#[derive(Clone, Debug)]
pub struct Config {
    /// Input clip: frames F, height, width.
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    /// Patch size P of the per-frame Conv2d embedding.
    pub patch: usize,
    /// Embedding dim D, depth L, heads, MLP hidden dim (4·D in the official model).
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub mlp_dim: usize,
    /// `num_classes`: the head's outputs; 0 is the official identity head (the forward returns
    /// the normalised cls features (B, D)).
    pub num_classes: usize,
    pub attention: Attention,
    /// Stochastic depth rate of the last block (linspace from 0), applied in training.
    pub drop_path: f32,
    /// `qkv_bias`: the qkv Linear has a bias (the `TimeSformer` class passes True; the
    /// `VisionTransformer` and `Block` constructors default to False).
    pub qkv_bias: bool,
    /// `qk_scale`: the attention logits' scale; `None` is head_dim^−0.5 (timm's `qk_scale or
    /// head_dim ** -0.5`, so an explicit 0 also means the default: see the parity reader).
    pub qk_scale: Option<f32>,
    /// `norm_layer`'s eps: `partial(nn.LayerNorm, eps=1e-6)` in the `TimeSformer` class, 1e-5
    /// for the constructors' default `nn.LayerNorm`.
    pub norm_eps: f32,
    /// `in_chans`: channels of the input clip (3).
    pub in_chans: usize,
}

impl Config {
    /// ViT-B/16 at `frames` × `size`² (TSF `TimeSformer` class: D 768, depth 12, 12 heads, MLP
    /// ratio 4, qkv bias, drop path 0.1), 400 classes (K400).
    pub fn vit_base(frames: usize, size: usize, attention: Attention) -> Config {
        Config {
            frames,
            height: size,
            width: size,
            patch: 16,
            embed_dim: 768,
            depth: 12,
            num_heads: 12,
            mlp_dim: 3072,
            num_classes: 400,
            attention,
            drop_path: 0.1,
            qkv_bias: true,
            qk_scale: None,
            norm_eps: 1e-6,
            in_chans: 3,
        }
    }

    /// TimeSformer, K400: 8 frames × 224², divided space-time (TSF README,
    /// `configs/Kinetics/TimeSformer_divST_8x32_224.yaml`).
    pub fn timesformer_base_8x224() -> Config {
        Config::vit_base(8, 224, Attention::DividedSpaceTime)
    }

    /// TimeSformer-HR, K400: 16 frames × 448² (`TimeSformer_divST_16x16_448.yaml`).
    pub fn timesformer_hr_16x448() -> Config {
        Config::vit_base(16, 448, Attention::DividedSpaceTime)
    }

    /// TimeSformer-L, K400: 96 frames × 224² (`TimeSformer_divST_96x4_224.yaml`).
    pub fn timesformer_l_96x224() -> Config {
        Config::vit_base(96, 224, Attention::DividedSpaceTime)
    }

    /// A tiny divided-attention TimeSformer for the synthetic set: 8 frames of 32², patch 8
    /// (16 patches per frame), D 64, 4 blocks, 4 heads, MLP 128.
    pub fn tiny(num_classes: usize) -> Config {
        Config {
            frames: 8,
            height: 32,
            width: 32,
            patch: 8,
            embed_dim: 64,
            depth: 4,
            num_heads: 4,
            mlp_dim: 128,
            num_classes,
            attention: Attention::DividedSpaceTime,
            drop_path: 0.1,
            qkv_bias: true,
            qk_scale: None,
            norm_eps: 1e-6,
            in_chans: 3,
        }
    }

    /// The patch grid: (T, H/P, W/P), tokens stored `(h w t)`.
    pub fn grid(&self) -> Grid {
        Grid {
            t: self.frames,
            h: self.height / self.patch,
            w: self.width / self.patch,
            order: Order::Hwt,
        }
    }

    /// Patches per frame, n = (H/P)·(W/P).
    pub fn num_patches(&self) -> usize {
        (self.height / self.patch) * (self.width / self.patch)
    }

    /// Parameters, counted from the config (the official model's, with the head).
    pub fn num_params(&self) -> usize {
        let (d, m, p) = (self.embed_dim, self.mlp_dim, self.patch);
        let lin = |i: usize, o: usize| i * o + o;
        let attn = lin(d, 3 * d) - if self.qkv_bias { 0 } else { 3 * d } + lin(d, d);
        let embed = self.in_chans * p * p * d + d + d + (self.num_patches() + 1) * d; // proj, cls, pos_embed
        let time = if self.attention == Attention::SpaceOnly {
            0
        } else {
            self.frames * d
        };
        let branch = 2 * d + attn + lin(d, d); // LN, attention, fc
        let block =
            2 * d + attn + 2 * d + lin(d, m) + lin(m, d) + self.attention.branches().len() * branch;
        embed + time + self.depth * block + 2 * d + lin(d, self.num_classes)
    }

    /// Multiply-accumulates of one clip (conv, linear, and the two attention matmuls), counted
    /// as the official code computes: the cls token's qkv and projection once per group it joins.
    pub fn macs(&self) -> f64 {
        let g = self.grid();
        let (t, n) = (self.frames as f64, self.num_patches() as f64);
        let (d, m) = (self.embed_dim as f64, self.mlp_dim as f64);
        let nn = t * n; // patch tokens
        let embed = nn * (self.in_chans * self.patch * self.patch) as f64 * d;
        // One attention layer over `groups` groups of `len` tokens (qkv, scores, AV, proj).
        let attn =
            |groups: f64, len: f64| groups * len * 4.0 * d * d + 2.0 * groups * len * len * d;
        let block = match self.attention {
            Attention::SpaceOnly => t * (attn(1.0, n + 1.0) + (n + 1.0) * 2.0 * d * m),
            Attention::JointSpaceTime => attn(1.0, nn + 1.0) + (nn + 1.0) * 2.0 * d * m,
            a => {
                let size = |gr: Groups| group_size(g, gr) as f64;
                let branches: f64 = a
                    .branches()
                    .iter()
                    .map(|&(_, gr)| attn(nn / size(gr), size(gr)) + nn * d * d)
                    .sum();
                let last = a.final_groups().expect("factorised attention");
                branches + attn(nn / size(last), size(last) + 1.0) + (nn + 1.0) * 2.0 * d * m
            }
        };
        embed + self.depth as f64 * block + d * self.num_classes as f64
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Config(format!("TimeSformer config: {what}")));
        let p = self.patch;
        if p == 0
            || !self.height.is_multiple_of(p)
            || !self.width.is_multiple_of(p)
            || self.height == 0
            || self.width == 0
        {
            return bad(format!(
                "frame {}×{} is not a positive multiple of the patch {p}",
                self.height, self.width
            ));
        }
        // num_classes 0 is the official identity head (features out).
        if self.frames == 0 || self.depth == 0 || self.mlp_dim == 0 || self.in_chans == 0 {
            return bad(format!(
                "frames {}, depth {}, mlp_dim {}, in_chans {} must be positive",
                self.frames, self.depth, self.mlp_dim, self.in_chans
            ));
        }
        if self.num_heads == 0 || !self.embed_dim.is_multiple_of(self.num_heads) {
            return bad(format!(
                "embed_dim {} is not divisible by num_heads {}",
                self.embed_dim, self.num_heads
            ));
        }
        if !(0.0..1.0).contains(&self.drop_path) {
            return bad(format!("drop_path {} is not in [0, 1)", self.drop_path));
        }
        let g = self.grid();
        if self.attention == Attention::SparseLocalGlobal
            && (!g.t.is_multiple_of(2) || !g.h.is_multiple_of(2) || !g.w.is_multiple_of(2))
        {
            return bad(format!(
                "sparse local-global attention needs an even patch grid, got {}×{}×{}",
                g.t, g.h, g.w
            ));
        }
        Ok(())
    }
}

/// Tokens per group when `grid` is partitioned into `groups`.
fn group_size(g: Grid, groups: Groups) -> usize {
    match groups {
        Groups::Time => g.t,
        Groups::Space => g.h * g.w,
        Groups::Width => g.w,
        Groups::Height => g.h,
        Groups::LocalWindows => g.len() / 4,
        Groups::StridedGlobal => g.len() / 8,
    }
}

/// timm `Attention` as TimeSformer uses it: `qkv` Linear(D, 3D) with bias, `proj` Linear(D, D).
#[derive(Clone)]
pub struct Attn {
    pub qkv: Linear,
    pub proj: Linear,
}

impl Attn {
    /// `qkv` with a bias when `qkv_bias`; `proj` always has one.
    pub fn new(init: &mut Init, d: usize, qkv_bias: bool) -> Result<Attn> {
        Ok(Attn {
            qkv: Linear::new(init, d, 3 * d, qkv_bias)?,
            proj: Linear::new(init, d, d, true)?,
        })
    }

    fn params(&self, p: &str, out: &mut Vec<(String, Tensor)>) {
        self.qkv.params(&format!("{p}.qkv"), out);
        self.proj.params(&format!("{p}.proj"), out);
    }
}

/// A patch-only attention branch of a factorised block: x + fc(proj(attn(LN(x)))) over groups
/// (the temporal branch of T+S: `temporal_norm1`, `temporal_attn`, `temporal_fc`).
#[derive(Clone)]
pub struct Branch {
    pub name: &'static str,
    pub groups: Groups,
    pub norm: LayerNorm,
    pub attn: Attn,
    pub fc: Linear,
}

/// A TimeSformer `Block`.
#[derive(Clone)]
pub struct Block {
    pub branches: Vec<Branch>,
    pub norm1: LayerNorm,
    pub attn: Attn,
    pub norm2: LayerNorm,
    /// `mlp.fc1` (D → M), exact GELU, `mlp.fc2` (M → D).
    pub fc1: Linear,
    pub fc2: Linear,
    /// Stochastic depth rate of this block.
    pub drop_path: f32,
}

/// Per-sample drop path (timm `DropPath`): x (B, …) scaled by 0 or 1/(1 − p) per sample
/// (engine/src/ops/drop_path.rs).
fn drop_path(x: &Tensor, p: f32, seed: Option<u64>) -> Result<Tensor> {
    match seed {
        Some(seed) if p > 0.0 => x.try_drop_path(p, seed),
        _ => Ok(x.clone()),
    }
}

impl Block {
    /// x (B', L, D) -> (B', L, D). For factorised attention x is (B, 1 + N, D), cls first, then
    /// the patches in `(h w t)` order. `seed`: Some in training (drop path).
    pub fn forward(&self, x: &Tensor, c: &Config, seed: Option<u64>) -> Result<Tensor> {
        let heads = c.num_heads;
        // timm Attention: self.scale = qk_scale or head_dim ** -0.5.
        let scale = c
            .qk_scale
            .unwrap_or(1.0 / ((c.embed_dim / heads) as f32).sqrt());
        let dp = |x: &Tensor, k: u64| {
            drop_path(
                x,
                self.drop_path,
                seed.map(|s| s.wrapping_mul(4).wrapping_add(k)),
            )
        };
        let x = match c.attention.final_groups() {
            // Joint and space-only: a plain ViT block, x + attn(norm1(x)).
            None => {
                let qkv = self.attn.qkv.forward(&self.norm1.forward(x)?)?; // (B', L, 3D)
                let o = crate::blocks::attention(&qkv, heads, scale)?; // (B', L, D)
                x.try_add(&dp(&self.attn.proj.forward(&o)?, 0)?)?
            }
            Some(last) => {
                let (grid, n) = (c.grid(), c.grid().len());
                let cls = x.try_narrow(1, 0, 1)?; // (B, 1, D): takes no part in the branches
                let mut xt = x.try_narrow(1, 1, n)?; // (B, N, D)
                for (k, br) in self.branches.iter().enumerate() {
                    // Temporal (eq. 6): xt = xt + temporal_fc(drop_path(proj(attn(LN(xt)))))
                    let qkv = br.attn.qkv.forward(&br.norm.forward(&xt)?)?; // (B, N, 3D)
                    let o = group_attention(&qkv, grid, br.groups, heads, scale)?; // (B, N, D)
                    let res = br
                        .fc
                        .forward(&dp(&br.attn.proj.forward(&o)?, 1 + k as u64)?)?;
                    xt = xt.try_add(&res)?;
                }
                // Spatial (eq. 7), cls included: cat(cls, xt) + drop_path(proj(attn(norm1(·)))),
                // the cls row of the attention being the mean over the groups (frames).
                let xs = Tensor::try_cat(&[&cls, &xt], 1)?; // (B, 1 + N, D)
                let qkv = self.attn.qkv.forward(&self.norm1.forward(&xs)?)?; // (B, 1 + N, 3D)
                let o = group_attention_with_cls(&qkv, grid, last, heads, scale)?; // (B, 1 + N, D)
                xs.try_add(&dp(&self.attn.proj.forward(&o)?, 0)?)?
            }
        };
        // MLP (eq. 8): x + drop_path(fc2(gelu(fc1(norm2(x)))))
        let h = self.fc1.forward(&self.norm2.forward(&x)?)?.try_gelu()?;
        x.try_add(&dp(&self.fc2.forward(&h)?, 3)?)
    }

    pub fn params(&self, p: &str, out: &mut Vec<(String, Tensor)>) {
        self.norm1.params(&format!("{p}.norm1"), out);
        self.attn.params(&format!("{p}.attn"), out);
        for br in &self.branches {
            br.norm.params(&format!("{p}.{}_norm1", br.name), out);
            br.attn.params(&format!("{p}.{}_attn", br.name), out);
            br.fc.params(&format!("{p}.{}_fc", br.name), out);
        }
        self.norm2.params(&format!("{p}.norm2"), out);
        self.fc1.params(&format!("{p}.mlp.fc1"), out);
        self.fc2.params(&format!("{p}.mlp.fc2"), out);
    }
}

/// The TimeSformer classifier (TSF `VisionTransformer`).
pub struct TimeSformer {
    pub config: Config,
    /// `patch_embed.proj`: Conv2d(in_chans, D, P, stride P) weight (D, in_chans, P, P) and bias (D).
    pub patch_embed: (Tensor, Tensor),
    /// `cls_token` (1, 1, D), `pos_embed` (1, n + 1, D), `time_embed` (1, T, D) (not space-only).
    pub cls_token: Tensor,
    pub pos_embed: Tensor,
    pub time_embed: Option<Tensor>,
    pub blocks: Vec<Block>,
    pub norm: LayerNorm,
    /// `head`: Linear(D → classes), or `None` for `num_classes` 0 (the official `nn.Identity()`:
    /// the forward returns the normalised cls features (B, D)).
    pub head: Option<Linear>,
    /// Forward passes in training so far: seeds drop path.
    steps: Cell<u64>,
}

impl TimeSformer {
    /// Builds the model with the official initialisation: Linear trunc_normal(0.02) and zero
    /// bias, LayerNorm (1, 0), cls and pos_embed trunc_normal(0.02), time_embed 0, and every
    /// branch fc (`temporal_fc`, …) zero, so each block starts as the image ViT's.
    pub fn new(config: Config, seed: u64) -> Result<TimeSformer> {
        config.validate()?;
        let mut init = Init::new(seed);
        let (d, p) = (config.embed_dim, config.patch);
        let patch_embed = (
            init.trunc_normal(&[d, config.in_chans, p, p], 0.02)?,
            init.constant(&[d], 0.0)?,
        );
        let cls_token = init.trunc_normal(&[1, 1, d], 0.02)?;
        let pos_embed = init.trunc_normal(&[1, config.num_patches() + 1, d], 0.02)?;
        let time_embed = match config.attention {
            Attention::SpaceOnly => None,
            _ => Some(init.constant(&[1, config.frames, d], 0.0)?),
        };
        let ln = |init: &mut Init| LayerNorm::torch(init, d, config.norm_eps);
        let mut blocks = Vec::with_capacity(config.depth);
        for i in 0..config.depth {
            let mut branches = Vec::new();
            for &(name, groups) in config.attention.branches() {
                let (norm, attn) = (ln(&mut init)?, Attn::new(&mut init, d, config.qkv_bias)?);
                let fc = Linear {
                    weight: init.constant(&[d, d], 0.0)?,
                    bias: Some(init.constant(&[d], 0.0)?),
                };
                branches.push(Branch {
                    name,
                    groups,
                    norm,
                    attn,
                    fc,
                });
            }
            let rate = if config.depth > 1 {
                config.drop_path * i as f32 / (config.depth - 1) as f32
            } else {
                0.0
            };
            blocks.push(Block {
                branches,
                norm1: ln(&mut init)?,
                attn: Attn::new(&mut init, d, config.qkv_bias)?,
                norm2: ln(&mut init)?,
                fc1: Linear::new(&mut init, d, config.mlp_dim, true)?,
                fc2: Linear::new(&mut init, config.mlp_dim, d, true)?,
                drop_path: rate,
            });
        }
        let norm = ln(&mut init)?;
        let head = (config.num_classes > 0)
            .then(|| Linear::new(&mut init, d, config.num_classes, true))
            .transpose()?;
        Ok(TimeSformer {
            config,
            patch_embed,
            cls_token,
            pos_embed,
            time_embed,
            blocks,
            norm,
            head,
            steps: Cell::new(0),
        })
    }

    /// PatchEmbed: (B, in_chans, T, H, W) -> (B·T, n, D), patches h-major within a frame. The Conv2d
    /// with kernel = stride is a patchify (one permute) and one Linear.
    pub fn patch_embed(&self, x: &Tensor) -> Result<Tensor> {
        patch_embed(&self.patch_embed, self.config.patch, x)
    }

    /// x (B, in_chans, T, H, W) -> logits (B, classes). `train` applies drop path.
    pub fn forward_train(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = &self.config;
        let want = [c.in_chans, c.frames, c.height, c.width];
        if x.rank() != 5 || x.shape()[1..] != want || x.dim(0) == 0 {
            return Err(Error::Shape(format!(
                "TimeSformer: input of shape {:?}, expected (B, {}, {}, {}, {}) with B ≥ 1",
                x.shape(),
                c.in_chans,
                c.frames,
                c.height,
                c.width
            )));
        }
        let (b, t, n, d) = (x.dim(0), c.frames, c.num_patches(), c.embed_dim);
        let seed = train.then(|| {
            self.steps.set(self.steps.get() + 1);
            self.steps.get().wrapping_mul(0x9E37_79B9_7F4A_7C15)
        });
        let tokens = self
            .patch_embed(x)?
            .try_add(&self.pos_embed.try_narrow(1, 1, n)?)?; // (B·T, n, D)
        let cls = self
            .cls_token
            .try_add(&self.pos_embed.try_narrow(1, 0, 1)?)?; // (1, 1, D)
        fn block_seed(seed: Option<u64>, i: usize) -> Option<u64> {
            seed.map(|s| {
                s.wrapping_add(1 + i as u64)
                    .wrapping_mul(0x2545_F491_4F6C_DD1D)
            })
        }
        let cls_out = match &self.time_embed {
            None => {
                // Space-only: each frame is a ViT sequence; mean over T after the last block.
                let cls = cls.try_broadcast_to(&[b * t, 1, d])?;
                let mut h = Tensor::try_cat(&[&cls, &tokens], 1)?; // (B·T, 1 + n, D)
                let (cfg, s) = (c.clone(), seed);
                h = crate::blocks::layers(&h, &self.blocks, move |blk, i, h| {
                    blk.forward(h, &cfg, block_seed(s, i))
                })?; // checkpoint segments
                h.try_narrow(1, 0, 1)?
                    .try_reshape(&[b, t, d])?
                    .try_mean(&[1], false)? // (B, D)
            }
            Some(time_embed) => {
                // Time embedding: (b t) n m -> b n t m, + time_embed, -> b (n t) m, cls first.
                let tokens = tokens
                    .try_reshape(&[b, t, n, d])?
                    .try_permute(&[0, 2, 1, 3])?; // (B, n, T, D)
                let tokens = tokens.try_add(time_embed)?.try_reshape(&[b, n * t, d])?; // (B, n·T, D)
                let cls = cls.try_broadcast_to(&[b, 1, d])?;
                let mut h = Tensor::try_cat(&[&cls, &tokens], 1)?; // (B, 1 + n·T, D)
                let (cfg, s) = (c.clone(), seed);
                h = crate::blocks::layers(&h, &self.blocks, move |blk, i, h| {
                    blk.forward(h, &cfg, block_seed(s, i))
                })?; // checkpoint segments
                h.try_select(1, 0)? // (B, D)
            }
        };
        // norm is per token: normalising only the cls row equals the official norm-then-select.
        let features = self.norm.forward(&cls_out)?; // (B, D)
        match &self.head {
            Some(head) => head.forward(&features), // (B, classes)
            None => Ok(features),                  // num_classes 0: nn.Identity()
        }
    }

    /// Every parameter under its official key (TSF checkpoint keys without `model.`).
    pub fn named_params(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![
            ("cls_token".to_string(), self.cls_token.clone()),
            ("pos_embed".to_string(), self.pos_embed.clone()),
        ];
        if let Some(t) = &self.time_embed {
            out.push(("time_embed".to_string(), t.clone()));
        }
        out.push((
            "patch_embed.proj.weight".to_string(),
            self.patch_embed.0.clone(),
        ));
        out.push((
            "patch_embed.proj.bias".to_string(),
            self.patch_embed.1.clone(),
        ));
        for (i, blk) in self.blocks.iter().enumerate() {
            blk.params(&format!("blocks.{i}"), &mut out);
        }
        self.norm.params("norm", &mut out);
        if let Some(head) = &self.head {
            head.params("head", &mut out);
        }
        out
    }
}

impl VideoModel for TimeSformer {
    fn clip(&self) -> [usize; 3] {
        [self.config.frames, self.config.height, self.config.width]
    }

    fn num_classes(&self) -> usize {
        self.config.num_classes
    }

    fn input_layout(&self) -> InputLayout {
        InputLayout::Bcthw
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_train(x, train)
    }

    fn named_params(&self) -> Vec<(String, Tensor)> {
        TimeSformer::named_params(self)
    }

    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    fn rng_counters(&self) -> Vec<(String, u64)> {
        vec![("steps".into(), self.steps.get())]
    }

    fn set_rng_counters(&self, counters: &[(String, u64)]) -> Result<()> {
        crate::set_counters(
            "TimeSformer",
            counters,
            &[("steps", &|v| self.steps.set(v))],
        )
    }
}

/// A preset's config at the options' class count, clip and drop-path rate (checked by the
/// model's own `Config::validate` when built).
fn configure(mut c: Config, o: &BuildOptions) -> Result<Config> {
    c.num_classes = o.classes(c.num_classes)?;
    let [t, h, w] = o.clip_or([c.frames, c.height, c.width])?;
    (c.frames, c.height, c.width) = (t, h, w);
    if let Some(r) = o.drop_path {
        c.drop_path = r;
    }
    Ok(c)
}

fn preset(
    name: &'static str,
    description: &'static str,
    config: Config,
    build: fn(&BuildOptions) -> Result<Box<dyn VideoModel>>,
) -> Preset {
    Preset {
        name,
        description,
        params: config.num_params(),
        gmacs: config.macs() / 1e9,
        clip: [config.frames, config.height, config.width],
        tiny: config.embed_dim < 128,
        num_classes: config.num_classes,
        build,
    }
}

/// TimeSformer presets: the paper's rows (TSF README and paper Table 1) and a tiny model.
pub fn presets() -> Vec<Preset> {
    use Attention::*;
    vec![
        preset(
            "timesformer-base",
            "TimeSformer, divided space-time, 8x224, K400 (TSF TimeSformer_divST_8x32_224)",
            Config::timesformer_base_8x224(),
            |o| {
                Ok(Box::new(TimeSformer::new(
                    configure(Config::timesformer_base_8x224(), o)?,
                    o.seed,
                )?))
            },
        ),
        preset(
            "timesformer-hr",
            "TimeSformer-HR, divided space-time, 16x448, K400 (TSF TimeSformer_divST_16x16_448)",
            Config::timesformer_hr_16x448(),
            |o| {
                Ok(Box::new(TimeSformer::new(
                    configure(Config::timesformer_hr_16x448(), o)?,
                    o.seed,
                )?))
            },
        ),
        preset(
            "timesformer-l",
            "TimeSformer-L, divided space-time, 96x224, K400 (TSF TimeSformer_divST_96x4_224)",
            Config::timesformer_l_96x224(),
            |o| {
                Ok(Box::new(TimeSformer::new(
                    configure(Config::timesformer_l_96x224(), o)?,
                    o.seed,
                )?))
            },
        ),
        preset(
            "timesformer-joint",
            "TimeSformer joint space-time (ST), 8x224 (paper Table 1; TSF joint_space_time)",
            Config::vit_base(8, 224, JointSpaceTime),
            |o| {
                Ok(Box::new(TimeSformer::new(
                    configure(Config::vit_base(8, 224, JointSpaceTime), o)?,
                    o.seed,
                )?))
            },
        ),
        preset(
            "timesformer-space-only",
            "TimeSformer space-only (S), 8x224 (paper Table 1; TSF space_only)",
            Config::vit_base(8, 224, SpaceOnly),
            |o| {
                Ok(Box::new(TimeSformer::new(
                    configure(Config::vit_base(8, 224, SpaceOnly), o)?,
                    o.seed,
                )?))
            },
        ),
        preset(
            "timesformer-lg",
            "TimeSformer sparse local-global (L+G), 8x224 (paper Table 1; not in the TSF code)",
            Config::vit_base(8, 224, SparseLocalGlobal),
            |o| {
                Ok(Box::new(TimeSformer::new(
                    configure(Config::vit_base(8, 224, SparseLocalGlobal), o)?,
                    o.seed,
                )?))
            },
        ),
        preset(
            "timesformer-axial",
            "TimeSformer axial (T+W+H), 8x224 (paper Table 1; not in the TSF code)",
            Config::vit_base(8, 224, Axial),
            |o| {
                Ok(Box::new(TimeSformer::new(
                    configure(Config::vit_base(8, 224, Axial), o)?,
                    o.seed,
                )?))
            },
        ),
        preset(
            "timesformer-tiny",
            "TimeSformer divided space-time, tiny: 8x32x32, patch 8, D 64, 4 blocks",
            Config::tiny(NUM_CLASSES),
            |o| {
                Ok(Box::new(TimeSformer::new(
                    configure(Config::tiny(NUM_CLASSES), o)?,
                    o.seed,
                )?))
            },
        ),
    ]
}

/// TimeSformer `PatchEmbed`: `rearrange('b c t h w -> (b t) c h w')`, Conv2d(kernel = stride =
/// P), `flatten(2).transpose(1, 2)`: x (B, C, T, H, W) -> (B·T, n, D), patches h-major. The
/// convolution is a patchify (one permute) and one Linear with `proj.weight` (D, C, P, P);
/// H and W must be multiples of P (the official VALID conv would drop the remainder).
pub fn patch_embed(proj: &(Tensor, Tensor), p: usize, x: &Tensor) -> Result<Tensor> {
    let s = x.shape();
    let d = proj.0.dim(0);
    if x.rank() != 5
        || p == 0
        || !s[3].is_multiple_of(p)
        || !s[4].is_multiple_of(p)
        || proj.0.shape() != [d, s[1], p, p]
    {
        return Err(Error::Shape(format!(
            "TimeSformer PatchEmbed: x {s:?} must be (B, C, T, H, W) with H, W multiples of the patch {p}, for proj.weight {:?}",
            proj.0.shape()
        )));
    }
    let (b, ch, t, nh, nw) = (s[0], s[1], s[2], s[3] / p, s[4] / p);
    let patches = x
        .try_reshape(&[b, ch, t, nh, p, nw, p])? // (B, C, T, H', P, W', P)
        .try_permute(&[0, 2, 3, 5, 1, 4, 6])? //    (B, T, H', W', C, P, P)
        .try_reshape(&[b * t, nh * nw, ch * p * p])?; // (B·T, n, C·P·P)
    let w = proj.0.try_reshape(&[d, ch * p * p])?; // (D, C·P·P)
    patches.try_linear(&w, Some(&proj.1)) // (B·T, n, D)
}
