//! `tubelet bench attention`: every fused attention pattern against its unfused composition of
//! basic ops, forward and forward+backward, at the seed models' real shapes, in one run.
//!
//! [`shapes`] is the one list of the attention bench shapes: the criterion benches
//! (benches/benches/attention.rs) time the same [`Shape`]s through [`Pattern::forward`] and
//! [`train_step`], after the same check ([`validate`]).
//!
//! Patterns (one [`Pattern`] each; add new ones to [`shapes`]):
//! - Video Swin 3D shifted-window attention: `Tensor::window_attention` (fused kernels) against
//!   `ops::window_attention::window_attention_unfused` (pad, roll, partition, gather the bias
//!   table, add the −100 mask, matmul, softmax, ...). Swin-T stage 1 at 8×56×56 tokens (one
//!   16-frame clip's half: D = 8), C 96, 3 heads, window 8×7×7, shifted (4,3,3) and not.
//! - Joint space-time attention (TimeSformer "joint", ViViT model 1): `Tensor::attention`
//!   (FlashAttention-2 style) against `tubelet_models::blocks::attention_unfused`, at 8 frames ×
//!   196 patches + 1 cls token, 12 heads, d 64.
//! - Divided space-time attention (TimeSformer-B "divided", 8 frames × 14×14 patches, 12 heads,
//!   d 64, tokens `(h w t)` after a cls): `Tensor::grid_attention` (fused) against
//!   `ops::grid_attention::grid_attention_unfused`. Temporal: `Pattern::time()` on the 8·196
//!   patch tokens (`Cls::None`, the model's `x[:, 1:]`), groups of 8; spatial: `Pattern::space()`
//!   with the cls token shared by every frame (`Cls::Shared`), groups of 196 + 1. A "divided
//!   (T+S)" row adds the two (times, FLOPs, and the baselines' times).
//! - TimeSformer L+G (sparse local-global, same op): local blocks of 8×7×7 (+ shared cls) and
//!   the stride-2 global step, and their sum "L+G (L+G)".
//! - MViT pooled attention, one whole `tubelet_models::mvit::MultiScaleAttention` from the
//!   model's own schedule: `forward` (the fused `pooled_attention` kernels) against
//!   `forward_unfused` (materialised Q·Kᵀ, the expanded v2 rel-pos term, softmax, P·V). Both
//!   include the qkv and proj linears and the q/k/v conv pools and norms, which are the same in
//!   the two paths. MViT-B 16×4 block 1 (v1: dim 192, 2 heads of 96, Q pooled 1×2×2 to
//!   8×28×28, K/V pooled 1×4×4 to 8×14×14, 3×3×3 conv kernels, + cls, 8×56×56 tokens) and
//!   MViTv2-S 16×4 block 1 (the same grids and widths, plus the decomposed rel-pos term and
//!   residual pooling). And the op alone (`Tensor::pooled_attention` against
//!   `ops::pooled_attention::pooled_attention_unfused`: Q·Kᵀ, the expanded rel-pos term,
//!   softmax, P·V) at block 1's grids, 2 heads of 96, without and with the rel-pos input.
//!
//! FLOPs (for GFLOP/s), the FlashAttention-2 paper's convention: the attention matmuls only,
//! 2 FLOPs per multiply-add. Forward: Q·Kᵀ and P·V, 4·N²·d per head and window (N = tokens per
//! window, padding tokens included: they are computed). Forward+backward: 3.5× that (the backward
//! is 5 matmuls = 2.5× the forward; the fused kernels' recomputation of Q·Kᵀ is not counted).
//! Softmax, bias, mask, padding and copies are not counted. Both paths get the same count, so
//! GFLOP/s and the speedup tell the same story.
//!
//! Memory: the peak of `Gpu::memory_in_use` (bytes of live tensors, rounded up to the buffer
//! pool's power-of-two size classes) during forward+backward, minus what was live before (the
//! inputs). The fused paths keep O(tokens) workspace (outputs, logsumexp, gradients); the unfused
//! ones keep the (windows, heads, N, N) scores and probabilities, quadratic in N.

use clap::Args as ClapArgs;
use tubelet::nn::Init;
use tubelet::ops::grid_attention::{
    self, grid_attention_unfused, Cls, Part, Pattern as GP, Span, TokenGrid,
};
use tubelet::ops::pooled_attention::pooled_attention_unfused;
use tubelet::ops::window_attention::{video_swin_window, window_attention_unfused};
use tubelet::{no_grad, Error, Gpu, Result, Tensor};
use tubelet_models::blocks::attention_unfused;
use tubelet_models::mvit::{AttentionSpec, Config as MvitConfig, MultiScaleAttention};

use super::{print_table, time_ms, Row};
use crate::outln;
use crate::output::Output;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Shapes to run (repeat or comma-separate): swin-small, swin-t-stage1, joint-small,
    /// timesformer-joint, divided-small, timesformer-divided, lg-small, timesformer-lg,
    /// mvit-small, mvit-b-block1, mvitv2-small, mvitv2-s-block1, mvit-attn-small,
    /// mvit-b-block1-attn; default all.
    #[arg(long, value_delimiter = ',')]
    shape: Vec<String>,
    /// Timed runs per row (the median is reported).
    #[arg(long, default_value_t = 1)]
    iters: usize,
    /// One warm-up and one timed run, small shapes only (a smoke test of the bench).
    #[arg(long)]
    quick: bool,
}

/// One attention pattern at one shape.
#[derive(Clone, Debug)]
pub enum Pattern {
    /// Video Swin window attention on a (B, D, H, W) token grid.
    Window {
        b: usize,
        grid: [usize; 3],
        c: usize,
        heads: usize,
        window: [usize; 3],
        shift: [usize; 3],
    },
    /// Joint attention over all N tokens (space-time, with the cls token).
    Joint {
        b: usize,
        n: usize,
        heads: usize,
        hd: usize,
    },
    /// Attention within the groups of a grid pattern (`grid_attention`), tokens `(h w t)`.
    Grid {
        b: usize,
        dims: [usize; 3],
        cls: Cls,
        heads: usize,
        hd: usize,
        what: &'static str,
        pattern: grid_attention::Pattern,
    },
    /// MViT pooled attention (one `MultiScaleAttention`): fused `forward` or `forward_unfused`.
    Mvit { b: usize, spec: AttentionSpec },
    /// The pooled attention op alone (`Tensor::pooled_attention` against
    /// `pooled_attention_unfused`) on the q and kv grids of an MViT layer, + cls.
    Pooled {
        b: usize,
        heads: usize,
        hd: usize,
        q: [usize; 3],
        kv: [usize; 3],
        rel: bool,
    },
}

/// A named bench shape. A name covers several rows (shifted and not, time and space ...).
pub struct Shape {
    pub name: &'static str,
    /// Small enough for a quick run (and warm-up: the pipelines compile here).
    pub small: bool,
    pub pattern: Pattern,
}

/// Inputs of one shape: tensors (parameters, so the backward reaches them), the upstream
/// gradient, and the module under test where the pattern is a model layer.
pub struct Inputs {
    x: Vec<Tensor>,
    dy: Tensor,
    module: Option<MultiScaleAttention>,
}

/// TimeSformer-B's attention (12 heads, d 64) on `frames` × 14×14 patches, tokens `(h w t)`.
fn tsf(frames: usize, what: &'static str, cls: Cls, pattern: grid_attention::Pattern) -> Pattern {
    Pattern::Grid {
        b: 1,
        dims: [frames, 14, 14],
        cls,
        heads: 12,
        hd: 64,
        what,
        pattern,
    }
}

/// Block 1's attention of an MViT config (from the model's schedule), on a `t`×`hw`×`hw` grid.
fn mvit_block1(cfg: MvitConfig, t: usize, hw: usize) -> Pattern {
    let mut spec = cfg.schedule().expect("MViT schedule")[1].attn.clone();
    spec.thw = [t, hw, hw];
    Pattern::Mvit { b: 1, spec }
}

fn pooled(q: [usize; 3], kv: [usize; 3], rel: bool) -> Pattern {
    Pattern::Pooled {
        b: 1,
        heads: 2,
        hd: 96,
        q,
        kv,
        rel,
    }
}

fn swin(grid: [usize; 3], shift: [usize; 3]) -> Pattern {
    // Swin-T stage 1: C 96, 3 heads (head dim 32), window (8, 7, 7).
    Pattern::Window {
        b: 1,
        grid,
        c: 96,
        heads: 3,
        window: [8, 7, 7],
        shift,
    }
}

/// Every shape the bench knows, in the order it runs them.
pub fn shapes() -> Vec<Shape> {
    let joint = |frames: usize| Pattern::Joint {
        b: 1,
        n: frames * 196 + 1,
        heads: 12,
        hd: 64,
    };
    vec![
        Shape {
            name: "swin-small",
            small: true,
            pattern: swin([8, 14, 14], [4, 3, 3]),
        },
        Shape {
            name: "swin-t-stage1",
            small: false,
            pattern: swin([8, 56, 56], [0, 0, 0]),
        },
        Shape {
            name: "swin-t-stage1",
            small: false,
            pattern: swin([8, 56, 56], [4, 3, 3]),
        },
        // TimeSformer-B, joint space-time attention: 2 frames (small) and its 8 frames.
        Shape {
            name: "joint-small",
            small: true,
            pattern: joint(2),
        },
        Shape {
            name: "timesformer-joint",
            small: false,
            pattern: joint(8),
        },
        // TimeSformer-B divided space-time: temporal (groups of T, cls not taking part: the
        // model runs it on x[:, 1:]) and spatial (groups of 196 + the shared cls).
        Shape {
            name: "divided-small",
            small: true,
            pattern: tsf(2, "time", Cls::None, GP::time()),
        },
        Shape {
            name: "divided-small",
            small: true,
            pattern: tsf(2, "space", Cls::Shared, GP::space()),
        },
        Shape {
            name: "timesformer-divided",
            small: false,
            pattern: tsf(8, "time", Cls::None, GP::time()),
        },
        Shape {
            name: "timesformer-divided",
            small: false,
            pattern: tsf(8, "space", Cls::Shared, GP::space()),
        },
        // TimeSformer L+G: local T×H/2×W/2 blocks, then the stride-2 global step (cls shared).
        Shape {
            name: "lg-small",
            small: true,
            pattern: tsf(2, "local", Cls::Shared, GP::timesformer_local([2, 14, 14])),
        },
        Shape {
            name: "lg-small",
            small: true,
            pattern: tsf(2, "global", Cls::Shared, GP::timesformer_global()),
        },
        Shape {
            name: "timesformer-lg",
            small: false,
            pattern: tsf(8, "local", Cls::Shared, GP::timesformer_local([8, 14, 14])),
        },
        Shape {
            name: "timesformer-lg",
            small: false,
            pattern: tsf(8, "global", Cls::Shared, GP::timesformer_global()),
        },
        // MViT-B 16×4 and MViTv2-S 16×4 block 1 (pooled attention; v2 with rel-pos and
        // residual pooling): a small grid with the same pools and widths, and the real 8×56×56.
        Shape {
            name: "mvit-small",
            small: true,
            pattern: mvit_block1(MvitConfig::mvit_b_16x4(), 2, 14),
        },
        Shape {
            name: "mvit-b-block1",
            small: false,
            pattern: mvit_block1(MvitConfig::mvit_b_16x4(), 8, 56),
        },
        Shape {
            name: "mvitv2-small",
            small: true,
            pattern: mvit_block1(MvitConfig::mvitv2_s_16x4(), 2, 14),
        },
        Shape {
            name: "mvitv2-s-block1",
            small: false,
            pattern: mvit_block1(MvitConfig::mvitv2_s_16x4(), 8, 56),
        },
        // The op alone at MViT-B 16×4 block 1's grids (q 8×28×28, kv 8×14×14, 2 heads of 96),
        // without and with the v2 rel-pos term.
        Shape {
            name: "mvit-attn-small",
            small: true,
            pattern: pooled([2, 7, 7], [2, 4, 4], false),
        },
        Shape {
            name: "mvit-attn-small",
            small: true,
            pattern: pooled([2, 7, 7], [2, 4, 4], true),
        },
        Shape {
            name: "mvit-b-block1-attn",
            small: false,
            pattern: pooled([8, 28, 28], [8, 14, 14], false),
        },
        Shape {
            name: "mvit-b-block1-attn",
            small: false,
            pattern: pooled([8, 28, 28], [8, 14, 14], true),
        },
    ]
}

impl Pattern {
    /// The shape as printed: batch, grid, widths, heads, window ...
    pub fn label(&self) -> String {
        match self {
            Pattern::Window {
                b,
                grid,
                c,
                heads,
                window,
                shift,
            } => format!(
                "B{b} {}×{}×{} C{c} h{heads} win {}×{}×{} shift {}",
                grid[0],
                grid[1],
                grid[2],
                window[0],
                window[1],
                window[2],
                if shift.iter().any(|&s| s > 0) {
                    format!("{}·{}·{}", shift[0], shift[1], shift[2])
                } else {
                    "0".into()
                }
            ),
            Pattern::Joint { b, n, heads, hd } => format!("B{b} N{n} h{heads} d{hd}"),
            Pattern::Pooled {
                b,
                heads,
                hd,
                q,
                kv,
                rel,
            } => format!(
                "B{b} h{heads} d{hd} q {}×{}×{}+cls kv {}×{}×{}+cls{}",
                q[0],
                q[1],
                q[2],
                kv[0],
                kv[1],
                kv[2],
                if *rel { " rel" } else { "" }
            ),
            Pattern::Grid {
                b,
                dims,
                cls,
                heads,
                hd,
                what,
                ..
            } => format!(
                "B{b} {}×{}×{}{} h{heads} d{hd} {what}",
                dims[0],
                dims[1],
                dims[2],
                if *cls == Cls::None { "" } else { "+cls" }
            ),
            Pattern::Mvit { b, spec } => {
                let (q, kv) = spec.grids().unwrap_or_default();
                format!(
                    "B{b} {}×{}×{}+cls C{} h{} d{} q→{}×{}×{} kv→{}×{}×{}{}",
                    spec.thw[0],
                    spec.thw[1],
                    spec.thw[2],
                    spec.dim,
                    spec.heads,
                    spec.head_dim(),
                    q[0],
                    q[1],
                    q[2],
                    kv[0],
                    kv[1],
                    kv[2],
                    if spec.rel_pos.is_some() { " rel" } else { "" }
                )
            }
        }
    }

    fn tokens(&self) -> usize {
        match self {
            Pattern::Window { b, grid, .. } => b * grid.iter().product::<usize>(),
            Pattern::Joint { b, n, .. } => b * n,
            Pattern::Grid { b, dims, cls, .. } => {
                b * TokenGrid::space_major(*dims, *cls).n_tokens()
            }
            Pattern::Mvit { b, spec } => b * (1 + spec.thw.iter().product::<usize>()),
            Pattern::Pooled { b, q, .. } => b * (1 + q.iter().product::<usize>()),
        }
    }

    /// Forward FLOPs of the two attention matmuls (see the file header).
    pub fn flops(&self) -> f64 {
        match self {
            Pattern::Window {
                b,
                grid,
                c,
                heads,
                window,
                shift,
            } => {
                let w = video_swin_window(*grid, *window, *shift).window;
                let n = w.iter().product::<usize>() as f64;
                let windows: usize = (0..3).map(|a| grid[a].div_ceil(w[a])).product();
                4.0 * n * n * (c / heads) as f64 * (*heads * b * windows) as f64
            }
            Pattern::Joint { b, n, heads, hd } => 4.0 * (n * n * hd * heads * b) as f64,
            Pattern::Pooled {
                b,
                heads,
                hd,
                q,
                kv,
                ..
            } => {
                let (nq, nk) = (
                    1 + q.iter().product::<usize>(),
                    1 + kv.iter().product::<usize>(),
                );
                4.0 * (nq * nk * hd * heads * b) as f64
            }
            Pattern::Grid {
                b,
                dims,
                cls,
                heads,
                hd,
                pattern,
                ..
            } => {
                // Σ over groups of L², L = the group's grid tokens (+ the shared cls).
                let sizes: Vec<Vec<usize>> =
                    (0..3).map(|a| group_sizes(pattern.0[a], dims[a])).collect();
                let extra = usize::from(*cls == Cls::Shared);
                let mut sum_sq = 0usize;
                for &x in &sizes[0] {
                    for &y in &sizes[1] {
                        for &z in &sizes[2] {
                            sum_sq += (x * y * z + extra).pow(2);
                        }
                    }
                }
                4.0 * (sum_sq * hd * heads * b) as f64
            }
            Pattern::Mvit { b, spec } => {
                // Q·Kᵀ and P·V on the pooled grids (the cls token included in both).
                let (q, kv) = spec.grids().unwrap_or_default();
                let (nq, nk) = (
                    1 + q.iter().product::<usize>(),
                    1 + kv.iter().product::<usize>(),
                );
                4.0 * (nq * nk * spec.head_dim() * spec.heads * b) as f64
            }
        }
    }

    /// Random inputs (as parameters, so the backward reaches them) and an upstream gradient.
    pub fn inputs(&self, seed: u64) -> Result<Inputs> {
        let plain = |(x, dy): (Vec<Tensor>, Tensor)| Inputs {
            x,
            dy,
            module: None,
        };
        Ok(match self {
            Pattern::Grid {
                b,
                dims,
                cls,
                heads,
                hd,
                ..
            } => {
                let n = TokenGrid::space_major(*dims, *cls).n_tokens();
                let qkv = Tensor::randn(&[*b, n, 3 * heads * hd], 0.0, 1.0, seed)?.param();
                plain((
                    vec![qkv],
                    Tensor::randn(&[*b, n, heads * hd], 0.0, 1.0, seed + 3)?,
                ))
            }
            Pattern::Mvit { b, spec } => {
                let module = MultiScaleAttention::new(&mut Init::new(seed), spec.clone())?;
                let n = 1 + spec.thw.iter().product::<usize>();
                let nq = 1 + spec.grids()?.0.iter().product::<usize>();
                let x = Tensor::randn(&[*b, n, spec.dim], 0.0, 1.0, seed + 1)?.param();
                let dy = Tensor::randn(&[*b, nq, spec.dim_out], 0.0, 1.0, seed + 3)?;
                Inputs {
                    x: vec![x],
                    dy,
                    module: Some(module),
                }
            }
            _ => plain(self.tensor_inputs(seed)?),
        })
    }

    fn tensor_inputs(&self, seed: u64) -> Result<(Vec<Tensor>, Tensor)> {
        match self {
            Pattern::Window {
                b,
                grid,
                c,
                heads,
                window,
                ..
            } => {
                let [d, h, w] = *grid;
                let t = (2 * window[0] - 1) * (2 * window[1] - 1) * (2 * window[2] - 1);
                let qkv = Tensor::randn(&[*b, d, h, w, 3 * c], 0.0, 1.0, seed)?.param();
                let bias = Tensor::randn(&[3 * c], 0.0, 0.1, seed + 1)?.param();
                let table = Tensor::trunc_normal(&[t, *heads], 0.02, seed + 2)?.param();
                Ok((
                    vec![qkv, bias, table],
                    Tensor::randn(&[*b, d, h, w, *c], 0.0, 1.0, seed + 3)?,
                ))
            }
            Pattern::Pooled {
                b,
                heads,
                hd,
                q,
                kv,
                rel,
            } => {
                let (nq, nk) = (
                    1 + q.iter().product::<usize>(),
                    1 + kv.iter().product::<usize>(),
                );
                let t = |n: usize, s: u64| {
                    Tensor::randn(&[*b, *heads, n, *hd], 0.0, 1.0, seed + s).map(|t| t.param())
                };
                let mut x = vec![t(nq, 0)?, t(nk, 1)?, t(nk, 2)?];
                if *rel {
                    x.push(
                        Tensor::randn(&[*b, *heads, nq - 1, kv.iter().sum()], 0.0, 0.5, seed + 4)?
                            .param(),
                    );
                }
                Ok((
                    x,
                    Tensor::randn(&[*b, *heads, nq, *hd], 0.0, 1.0, seed + 3)?,
                ))
            }
            Pattern::Joint { b, n, heads, hd } => {
                let qkv = Tensor::randn(&[*b, *n, 3 * heads * hd], 0.0, 1.0, seed)?.param();
                Ok((
                    vec![qkv],
                    Tensor::randn(&[*b, *n, heads * hd], 0.0, 1.0, seed + 3)?,
                ))
            }
            Pattern::Grid { .. } | Pattern::Mvit { .. } => unreachable!("built by Pattern::inputs"),
        }
    }

    /// The pattern's forward, fused kernels or unfused composition.
    pub fn forward(&self, inp: &Inputs, fused: bool) -> Result<Tensor> {
        let x = &inp.x;
        match self {
            Pattern::Window {
                grid,
                c,
                heads,
                window,
                shift,
                ..
            } => {
                let win = video_swin_window(*grid, *window, *shift);
                let scale = ((c / heads) as f32).powf(-0.5);
                if fused {
                    x[0].try_window_attention(&x[1], &x[2], *heads, scale, win)
                } else {
                    window_attention_unfused(&x[0], &x[1], &x[2], *heads, scale, win)
                }
            }
            Pattern::Joint { heads, hd, .. } => {
                let scale = (*hd as f32).powf(-0.5);
                if fused {
                    x[0].try_attention(*heads, scale)
                } else {
                    attention_unfused(&x[0], *heads, scale)
                }
            }
            Pattern::Grid {
                dims,
                cls,
                heads,
                hd,
                pattern,
                ..
            } => {
                let scale = (*hd as f32).powf(-0.5);
                let grid = TokenGrid::space_major(*dims, *cls);
                if fused {
                    x[0].try_grid_attention(*heads, scale, grid, *pattern)
                } else {
                    grid_attention_unfused(
                        &x[0],
                        *heads,
                        scale,
                        grid,
                        &[Part {
                            heads: 0..*heads,
                            pattern: *pattern,
                        }],
                    )
                }
            }
            Pattern::Pooled { hd, kv, .. } => {
                let scale = (*hd as f32).powf(-0.5);
                if fused {
                    x[0].try_pooled_attention(&x[1], &x[2], x.get(3), scale, true, *kv)
                } else {
                    pooled_attention_unfused(&x[0], &x[1], &x[2], x.get(3), scale, true, *kv)
                }
            }
            Pattern::Mvit { .. } => match &inp.module {
                Some(m) if fused => m.forward(&x[0]),
                Some(m) => m.forward_unfused(&x[0]),
                None => Err(Error::Config(
                    "bench attention: MViT pattern without its module".into(),
                )),
            },
        }
    }

    /// The row's kernel name: the op (or layer), fused or unfused.
    pub fn kernel(&self, fused: bool) -> &'static str {
        match (self, fused) {
            (Pattern::Window { .. }, true) => "window_attention fused",
            (Pattern::Window { .. }, false) => "window_attention unfused",
            (Pattern::Joint { .. }, true) => "attention (joint) fused",
            (Pattern::Joint { .. }, false) => "attention (joint) unfused",
            (Pattern::Grid { .. }, true) => "grid_attention fused",
            (Pattern::Grid { .. }, false) => "grid_attention unfused",
            (Pattern::Pooled { .. }, true) => "pooled_attention fused",
            (Pattern::Pooled { .. }, false) => "pooled_attention unfused",
            (Pattern::Mvit { .. }, true) => "MultiScaleAttention (pooled_attention) fused",
            (Pattern::Mvit { .. }, false) => "MultiScaleAttention (pooled_attention) unfused",
        }
    }
}

/// Group sizes along one axis of `n` positions under `span` (as the op cuts it).
fn group_sizes(span: Span, n: usize) -> Vec<usize> {
    match span {
        Span::One => vec![1; n],
        Span::All => vec![n],
        Span::Block(w) => {
            let w = w.clamp(1, n);
            (0..n.div_ceil(w)).map(|g| w.min(n - g * w)).collect()
        }
        Span::Stride(s) => {
            let s = s.clamp(1, n);
            (0..s).map(|r| (r..n).step_by(s).count()).collect()
        }
    }
}

/// Forward + backward with the upstream gradient `dy`; the gradients are dropped at the end.
pub fn train_step(p: &Pattern, inp: &Inputs, fused: bool) -> Result<()> {
    let y = p.forward(inp, fused)?;
    let grads = y.backward_with(inp.dy.clone())?;
    if grads.get(&inp.x[0]).is_none() {
        return Err(Error::Autograd(format!(
            "bench attention: {} gave no gradient",
            p.kernel(fused)
        )));
    }
    Ok(())
}

/// Bytes of workspace `f` needs at its peak, beyond what is live when it starts.
fn workspace_bytes(gpu: &Gpu, f: impl FnOnce() -> Result<()>) -> Result<u64> {
    gpu.sync()?;
    gpu.reset_memory_peak();
    let before = gpu.memory_in_use();
    f()?;
    gpu.sync()?;
    Ok(gpu.memory_peak() - before)
}

/// Checks before timing (a wrong variant can never win): the fused output must match the unfused
/// composition on `inp` (each is tested against the op's f64 reference in the test suite).
/// Returns the largest difference.
pub fn validate(p: &Pattern, inp: &Inputs, label: &str) -> Result<f32> {
    let diff = no_grad(|| -> Result<f32> {
        max_abs_diff(&p.forward(inp, true)?, &p.forward(inp, false)?)
    })?;
    if diff.is_nan() || diff > 1e-3 {
        return Err(Error::Config(format!(
            "bench attention: {label}: fused and unfused differ by {diff}"
        )));
    }
    Ok(diff)
}

/// Largest |a − b| over two tensors of one shape.
fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    let (a, b) = (a.to_vec()?, b.to_vec()?);
    Ok(a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max))
}

pub fn run(args: Args) -> Result<()> {
    let mut out = Output::stdout();
    let gpu = Gpu::global()?;
    let known = shapes();
    for s in &args.shape {
        if !known.iter().any(|k| k.name == s) {
            // A name covers several rows (shift 0 and shifted, T and S...): list each once.
            let mut names: Vec<&str> = Vec::new();
            for k in &known {
                if !names.contains(&k.name) {
                    names.push(k.name);
                }
            }
            return Err(Error::Config(format!(
                "bench attention: unknown --shape {s:?} (known: {})",
                names.join(", ")
            )));
        }
    }
    let run_all = args.shape.is_empty();
    let selected: Vec<Shape> = known
        .into_iter()
        .filter(|k| {
            if run_all {
                !args.quick || k.small
            } else {
                args.shape.iter().any(|s| s == k.name)
            }
        })
        .collect();
    let iters = if args.quick { 1 } else { args.iters.max(1) };
    outln!(
        out,
        "{iters} timed run(s) per row (median), after one warm-up run at the small shapes \
        (pipelines compile there); FLOPs: the attention matmuls only (forward 4·N²·d per head \
        and window, forward+backward 3.5×)"
    )?;
    let mut rows = Vec::new();
    let mut mem = Vec::new();
    let mut grid_rows: Vec<(&str, &str, usize)> = Vec::new(); // (shape name, step, first row)
    for s in &selected {
        let p = &s.pattern;
        // The big shapes reuse the small shapes' compiled pipelines: a warm-up would double their
        // run time for a few ms of shader compilation.
        let warmup = usize::from(s.small);
        let label = format!("{} {}", s.name, p.label());
        let inp = p.inputs(7)?;
        let diff = validate(p, &inp, &label)?;
        eprintln!("{label}: fused and unfused agree (max |Δ| {diff:.1e}); timing ...");
        let variants = [false, true];
        let mut ms = [[0.0; 2]; 2]; // [fused?][forward, forward+backward]
        for (fi, &fused) in variants.iter().enumerate() {
            ms[fi][0] = time_ms(warmup, iters, || {
                no_grad(|| p.forward(&inp, fused).map(drop))
            })?
            .0;
            let bytes = workspace_bytes(gpu, || {
                ms[fi][1] = time_ms(warmup, iters, || train_step(p, &inp, fused))?.0;
                Ok(())
            })?;
            mem.push((p.kernel(fused), label.clone(), p.tokens(), bytes));
        }
        let first = rows.len();
        for (fi, &fused) in variants.iter().enumerate() {
            for (pi, pass) in ["forward", "forward+backward"].into_iter().enumerate() {
                rows.push(Row {
                    kernel: format!("{} {pass}", p.kernel(fused)),
                    shape: label.clone(),
                    ms: ms[fi][pi],
                    flops: p.flops() * if pi == 0 { 1.0 } else { 3.5 },
                    baseline_ms: fused.then_some(ms[0][pi]),
                });
            }
        }
        if let Pattern::Grid { what, .. } = p {
            grid_rows.push((s.name, *what, first));
        }
        gpu.trim_pool();
    }
    // The factorised patterns' sums: divided (T+S) and L+G, the rows of both steps added.
    for (name, a, b, sum) in [
        ("divided", "time", "space", "T+S"),
        ("lg", "local", "global", "L+G"),
    ] {
        let mut names: Vec<&str> = grid_rows
            .iter()
            .map(|g| g.0)
            .filter(|n| n.contains(name))
            .collect();
        names.dedup();
        for n in names {
            let find = |w: &str| grid_rows.iter().find(|g| g.0 == n && g.1 == w).map(|g| g.2);
            let (Some(ra), Some(rb)) = (find(a), find(b)) else {
                continue;
            };
            let shape = rows[ra]
                .shape
                .replacen(&format!(" {a}"), &format!(" {sum}"), 1);
            for k in 0..4 {
                let (x, y) = (&rows[ra + k], &rows[rb + k]);
                let kernel =
                    x.kernel
                        .replacen("grid_attention", &format!("grid_attention {sum}"), 1);
                let baseline_ms = x.baseline_ms.zip(y.baseline_ms).map(|(p, q)| p + q);
                let row = Row {
                    kernel,
                    shape: shape.clone(),
                    ms: x.ms + y.ms,
                    flops: x.flops + y.flops,
                    baseline_ms,
                };
                rows.push(row);
            }
        }
    }
    outln!(out)?;
    print_table(&rows)?;
    if selected
        .iter()
        .any(|s| matches!(s.pattern, Pattern::Mvit { .. }))
    {
        outln!(out, "MultiScaleAttention rows (MViT pooled attention) time the whole layer in both paths: the \
            qkv and proj linears and the q/k/v conv pools and norms (the same in both) besides the attention; \
            their FLOPs count only Q·Kᵀ and P·V on the pooled grids.")?;
    }
    outln!(out)?;
    print_memory(&mem)?;
    Ok(())
}

/// Peak workspace per variant: fused should grow linearly with the tokens, unfused joint
/// attention quadratically (compare the small and full shapes).
fn print_memory(mem: &[(&str, String, usize, u64)]) -> Result<()> {
    let mut out = Output::stdout();
    let kw = mem.iter().map(|m| m.0.len()).max().unwrap_or(6).max(6);
    let sw = mem
        .iter()
        .map(|m| m.1.chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    outln!(
        out,
        "{:<kw$}  {:<sw$}  {:>8}  {:>16}  {:>12}",
        "kernel",
        "shape",
        "tokens",
        "peak fwd+bwd MiB",
        "bytes/token"
    )?;
    for (k, s, t, b) in mem {
        let pad = sw - s.chars().count();
        outln!(
            out,
            "{k:<kw$}  {s}{}  {t:>8}  {:>16.1}  {:>12.0}",
            " ".repeat(pad),
            *b as f64 / (1 << 20) as f64,
            *b as f64 / *t as f64
        )?;
    }
    Ok(())
}
