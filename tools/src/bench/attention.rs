//! `tubelet bench attention`: every fused attention pattern against its unfused composition of
//! basic ops, forward and forward+backward, at the seed models' real shapes, in one run.
//!
//! Patterns (one [`Pattern`] each; add new ones to [`shapes`]):
//! - Video Swin 3D shifted-window attention: `Tensor::window_attention` (fused kernels) against
//!   `ops::window_attention::window_attention_unfused` (pad, roll, partition, gather the bias
//!   table, add the −100 mask, matmul, softmax, ...). Swin-T stage 1 at 8×56×56 tokens (one
//!   16-frame clip's half: D = 8), C 96, 3 heads, window 8×7×7, shifted (4,3,3) and not.
//! - Joint space-time attention (TimeSformer "joint", ViViT model 1): `Tensor::attention`
//!   (FlashAttention-2 style) against `tubelet_models::blocks::attention_unfused`, at 8 frames ×
//!   196 patches + 1 cls token, 12 heads, d 64.
//! - Divided space-time attention (TimeSformer "divided") and the axis-factorised patterns: to be
//!   added as `Pattern` variants with their fused op (see the NOTE in `shapes`).
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
use tubelet::ops::window_attention::{video_swin_window, window_attention_unfused};
use tubelet::{no_grad, Error, Gpu, Result, Tensor};
use tubelet_models::blocks::attention_unfused;

use super::{print_table, time_ms, Row};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Shapes to run (repeat or comma-separate): swin-small, swin-t-stage1, joint-small,
    /// timesformer-joint; default all.
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
enum Pattern {
    /// Video Swin window attention on a (B, D, H, W) token grid.
    Window { b: usize, grid: [usize; 3], c: usize, heads: usize, window: [usize; 3], shift: [usize; 3] },
    /// Joint attention over all N tokens (space-time, with the cls token).
    Joint { b: usize, n: usize, heads: usize, hd: usize },
}

struct Shape {
    name: &'static str,
    small: bool,
    pattern: Pattern,
}

fn swin(grid: [usize; 3], shift: [usize; 3]) -> Pattern {
    // Swin-T stage 1: C 96, 3 heads (head dim 32), window (8, 7, 7).
    Pattern::Window { b: 1, grid, c: 96, heads: 3, window: [8, 7, 7], shift }
}

/// Every shape the bench knows, in the order it runs them.
fn shapes() -> Vec<Shape> {
    let joint = |frames: usize| Pattern::Joint { b: 1, n: frames * 196 + 1, heads: 12, hd: 64 };
    vec![
        Shape { name: "swin-small", small: true, pattern: swin([8, 14, 14], [4, 3, 3]) },
        Shape { name: "swin-t-stage1", small: false, pattern: swin([8, 56, 56], [0, 0, 0]) },
        Shape { name: "swin-t-stage1", small: false, pattern: swin([8, 56, 56], [4, 3, 3]) },
        // TimeSformer-B, joint space-time attention: 2 frames (small) and its 8 frames.
        Shape { name: "joint-small", small: true, pattern: joint(2) },
        Shape { name: "timesformer-joint", small: false, pattern: joint(8) },
        // NOTE: divided space-time attention (TimeSformer-B: temporal over 8 frames for each of
        // the 196 patches, then spatial over 196 + 1 per frame) goes here as a `Pattern` variant
        // once its fused op lands, with the composition of two `attention_unfused` as baseline.
    ]
}

impl Pattern {
    fn label(&self) -> String {
        match self {
            Pattern::Window { b, grid, c, heads, window, shift } => format!(
                "B{b} {}×{}×{} C{c} h{heads} win {}×{}×{} shift {}",
                grid[0], grid[1], grid[2], window[0], window[1], window[2],
                if shift.iter().any(|&s| s > 0) { format!("{}·{}·{}", shift[0], shift[1], shift[2]) } else { "0".into() }
            ),
            Pattern::Joint { b, n, heads, hd } => format!("B{b} N{n} h{heads} d{hd}"),
        }
    }

    fn tokens(&self) -> usize {
        match self {
            Pattern::Window { b, grid, .. } => b * grid.iter().product::<usize>(),
            Pattern::Joint { b, n, .. } => b * n,
        }
    }

    /// Forward FLOPs of the two attention matmuls (see the file header).
    fn flops(&self) -> f64 {
        match self {
            Pattern::Window { b, grid, c, heads, window, shift } => {
                let w = video_swin_window(*grid, *window, *shift).window;
                let n = w.iter().product::<usize>() as f64;
                let windows: usize = (0..3).map(|a| grid[a].div_ceil(w[a])).product();
                4.0 * n * n * (c / heads) as f64 * (*heads * b * windows) as f64
            }
            Pattern::Joint { b, n, heads, hd } => 4.0 * (n * n * hd * heads * b) as f64,
        }
    }

    /// Random inputs (as parameters, so the backward reaches them) and an upstream gradient.
    fn inputs(&self, seed: u64) -> Result<(Vec<Tensor>, Tensor)> {
        match self {
            Pattern::Window { b, grid, c, heads, window, .. } => {
                let [d, h, w] = *grid;
                let t = (2 * window[0] - 1) * (2 * window[1] - 1) * (2 * window[2] - 1);
                let qkv = Tensor::randn(&[*b, d, h, w, 3 * c], 0.0, 1.0, seed)?.param();
                let bias = Tensor::randn(&[3 * c], 0.0, 0.1, seed + 1)?.param();
                let table = Tensor::trunc_normal(&[t, *heads], 0.02, seed + 2)?.param();
                Ok((vec![qkv, bias, table], Tensor::randn(&[*b, d, h, w, *c], 0.0, 1.0, seed + 3)?))
            }
            Pattern::Joint { b, n, heads, hd } => {
                let qkv = Tensor::randn(&[*b, *n, 3 * heads * hd], 0.0, 1.0, seed)?.param();
                Ok((vec![qkv], Tensor::randn(&[*b, *n, heads * hd], 0.0, 1.0, seed + 3)?))
            }
        }
    }

    /// The pattern's forward, fused kernels or unfused composition.
    fn forward(&self, x: &[Tensor], fused: bool) -> Result<Tensor> {
        match self {
            Pattern::Window { grid, c, heads, window, shift, .. } => {
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
        }
    }

    fn kernel(&self, fused: bool) -> &'static str {
        match (self, fused) {
            (Pattern::Window { .. }, true) => "window_attention fused",
            (Pattern::Window { .. }, false) => "window_attention unfused",
            (Pattern::Joint { .. }, true) => "attention (joint) fused",
            (Pattern::Joint { .. }, false) => "attention (joint) unfused",
        }
    }
}

/// Forward + backward with the upstream gradient `dy`; the gradients are dropped at the end.
fn train_step(p: &Pattern, x: &[Tensor], dy: &Tensor, fused: bool) -> Result<()> {
    let y = p.forward(x, fused)?;
    let grads = y.backward_with(dy.clone())?;
    if grads.get(&x[0]).is_none() {
        return Err(Error::Autograd(format!("bench attention: {} gave no gradient", p.kernel(fused))));
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

/// Largest |a − b| over two tensors of one shape.
fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    let (a, b) = (a.to_vec()?, b.to_vec()?);
    Ok(a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max))
}

pub fn run(args: Args) -> Result<()> {
    let gpu = Gpu::global()?;
    let known = shapes();
    for s in &args.shape {
        if !known.iter().any(|k| k.name == s) {
            let names: Vec<&str> = known.iter().map(|k| k.name).collect();
            return Err(Error::Config(format!("bench attention: unknown --shape {s:?} (known: {})", names.join(", "))));
        }
    }
    let run_all = args.shape.is_empty();
    let selected: Vec<Shape> = known
        .into_iter()
        .filter(|k| if run_all { !args.quick || k.small } else { args.shape.iter().any(|s| s == k.name) })
        .collect();
    let iters = if args.quick { 1 } else { args.iters.max(1) };
    println!("{iters} timed run(s) per row (median), after one warm-up run at the small shapes \
        (pipelines compile there); FLOPs: the attention matmuls only (forward 4·N²·d per head \
        and window, forward+backward 3.5×)");
    let mut rows = Vec::new();
    let mut mem = Vec::new();
    for s in &selected {
        let p = &s.pattern;
        // The big shapes reuse the small shapes' compiled pipelines: a warm-up would double their
        // run time for a few ms of shader compilation.
        let warmup = usize::from(s.small);
        let label = format!("{} {}", s.name, p.label());
        let (x, dy) = p.inputs(7)?;
        // Validate before timing: the fused output must match the unfused composition.
        let diff = no_grad(|| -> Result<f32> { max_abs_diff(&p.forward(&x, true)?, &p.forward(&x, false)?) })?;
        if diff.is_nan() || diff > 1e-3 {
            return Err(Error::Config(format!("bench attention: {label}: fused and unfused differ by {diff}")));
        }
        eprintln!("{label}: fused and unfused agree (max |Δ| {diff:.1e}); timing ...");
        let mut ms = [[0.0; 2]; 2]; // [fused?][forward, forward+backward]
        for (fi, fused) in [false, true].into_iter().enumerate() {
            ms[fi][0] = time_ms(warmup, iters, || no_grad(|| p.forward(&x, fused).map(drop)))?.0;
            let bytes = workspace_bytes(gpu, || {
                ms[fi][1] = time_ms(warmup, iters, || train_step(p, &x, &dy, fused))?.0;
                Ok(())
            })?;
            mem.push((p.kernel(fused), label.clone(), p.tokens(), bytes));
        }
        for (fi, fused) in [false, true].into_iter().enumerate() {
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
        gpu.trim_pool();
    }
    println!();
    print_table(&rows);
    println!();
    print_memory(&mem);
    Ok(())
}

/// Peak workspace per variant: fused should grow linearly with the tokens, unfused joint
/// attention quadratically (compare the small and full shapes).
fn print_memory(mem: &[(&str, String, usize, u64)]) {
    let kw = mem.iter().map(|m| m.0.len()).max().unwrap_or(6).max(6);
    let sw = mem.iter().map(|m| m.1.chars().count()).max().unwrap_or(5).max(5);
    println!("{:<kw$}  {:<sw$}  {:>8}  {:>16}  {:>12}", "kernel", "shape", "tokens", "peak fwd+bwd MiB", "bytes/token");
    for (k, s, t, b) in mem {
        let pad = sw - s.chars().count();
        println!("{k:<kw$}  {s}{}  {t:>8}  {:>16.1}  {:>12.0}", " ".repeat(pad), *b as f64 / (1 << 20) as f64, *b as f64 / *t as f64);
    }
}
