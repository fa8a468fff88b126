//! `tubelet bench matmul`: the matmul kernel variants side by side (house style §8): v1 naive,
//! v2 4×4 register blocks, v3 8×8 blocks with subgroup broadcasts, v4 32×32 tiles per subgroup
//! with broadcasts (shipped where subgroups of ≥ 8 lanes exist), at square sizes and at the seed
//! models' linear-layer shapes, including the transposed products of a linear layer's forward
//! (x·Wᵀ) and weight gradient (dYᵀ·X), read in place. Each variant is first checked against the
//! f64 CPU reference at a small odd shape, so a wrong variant can never win; the speedup column
//! is against the first variant timed (`--variants`, default every one the adapter runs).

use clap::Args as ClapArgs;
use tubelet::ops::matmul::{matmul_variant, shipped_variant};
use tubelet::{no_grad, CpuTensor, Error, Gpu, Result, Tensor};

use super::{print_table, time_ms, Row};
use crate::outln;
use crate::output::Output;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Square sizes M = N = K to time (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = [256usize, 512, 1024])]
    pub sizes: Vec<usize>,
    /// Timed runs per variant and size (the median is reported).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub iters: u32,
    /// Skip the seed models' linear-layer shapes.
    #[arg(long)]
    pub no_models: bool,
    /// Variants to time, in this order (the first is the speedup baseline); default: all.
    #[arg(long, value_delimiter = ',')]
    pub variants: Vec<u32>,
}

/// Checks one variant against the reference at a small shape that is no tile multiple.
fn validate(variant: u32) -> Result<()> {
    let mut rng = tubelet::Rng::new(7);
    let a = CpuTensor::uniform(&[3, 37, 29], -1.0, 1.0, &mut rng).map(|v| v as f32 as f64);
    let b = CpuTensor::uniform(&[29, 45], -1.0, 1.0, &mut rng).map(|v| v as f32 as f64);
    let want = tubelet::ops::matmul::Matmul::new(false, false);
    let want = tubelet::ops::Op::reference(&want, &[&a, &b]);
    let got = no_grad(|| {
        matmul_variant(
            &Tensor::from_cpu(&a)?,
            &Tensor::from_cpu(&b)?,
            false,
            false,
            variant,
        )
    })?;
    let got = got.to_cpu()?;
    // f32 sums of 29 products of values in [-1, 1].
    tubelet::testing::compare(
        &format!("matmul v{variant}"),
        &got.data,
        &want,
        tubelet::testing::Tol::new(1e-5, 1e-5, "f32 dot of 29 terms"),
    )
    .map_err(Error::Gpu)
}

pub fn run(args: Args) -> Result<()> {
    let mut out = Output::stdout();
    let gpu = Gpu::global()?;
    let shipped = shipped_variant(gpu);
    let runnable: Vec<u32> = if shipped == 4 {
        vec![1, 2, 3, 4]
    } else {
        vec![1, 2]
    };
    let variants = if args.variants.is_empty() {
        runnable
    } else if let Some(v) = args.variants.iter().find(|v| !runnable.contains(v)) {
        return Err(Error::Config(format!(
            "--variants: v{v} does not run on {} (variants here: {runnable:?})",
            gpu.info.name
        )));
    } else {
        args.variants.clone()
    };
    for &v in &variants {
        validate(v)?;
    }
    outln!(out, "all variants match the reference; shipped: v{shipped}")?;
    if args.sizes.iter().any(|&s| s == 0 || s > 8192) {
        return Err(Error::Config(format!(
            "--sizes must be in 1..=8192, got {:?}",
            args.sizes
        )));
    }
    // (label, M, K, N, a transposed, b transposed): square sizes, then linear layers of the seeds
    // at their token counts (M = tokens of a batch); `x·Wᵀ` is a PyTorch linear's forward (W
    // stored (N, K)), `dW = dYᵀ·X` its weight gradient (dY stored (tokens, N) read transposed).
    let mut shapes: Vec<(String, usize, usize, usize, bool, bool)> = args
        .sizes
        .iter()
        .map(|&s| (format!("{s}×{s}×{s}"), s, s, s, false, false))
        .collect();
    if !args.no_models {
        let mut add = |label: &str, m, k, n, ta, tb| shapes.push((label.into(), m, k, n, ta, tb));
        // ViViT tiny (the default `tubelet train`): batch 32 × 65 tokens, D 64, MLP 256.
        add("ViViT-tiny qkv (2080·64→192)", 2080, 64, 192, false, false);
        add("ViViT-tiny fc2 (2080·256→64)", 2080, 256, 64, false, false);
        add("32·8·16 tokens, 64→64, x·Wᵀ", 4096, 64, 64, false, true);
        add("Swin-T st.1 qkv (6272·96→288)", 6272, 96, 288, false, false);
        add("ViT-B fc1 (1569·768→3072)", 1569, 768, 3072, false, false);
        add("ViT-B fc1 x·Wᵀ", 1569, 768, 3072, false, true);
        add(
            "ViT-B fc1 dW = dYᵀ·X (3072←1569→768)",
            3072,
            1569,
            768,
            true,
            false,
        );
        add("ViT-B fc2 (1569·3072→768)", 1569, 3072, 768, false, false);
        add(
            "UniFormer-S st.3 qkv (1568·320→960)",
            1568,
            320,
            960,
            false,
            false,
        );
    }
    let mut rows = Vec::new();
    for (label, m, k, n, ta, tb) in shapes {
        let a = Tensor::randn(&if ta { [k, m] } else { [m, k] }, 0.0, 1.0, 1)?;
        let b = Tensor::randn(&if tb { [n, k] } else { [k, n] }, 0.0, 1.0, 2)?;
        let flops = 2.0 * (m * k * n) as f64;
        let mut base = None;
        for &v in &variants {
            // v1 at the largest sizes takes seconds a run on a CPU adapter: fewer iterations.
            let iters = if v == 1 && flops > 2e9 {
                1
            } else {
                args.iters as usize
            };
            let (ms, _) = time_ms(1, iters, || {
                no_grad(|| matmul_variant(&a, &b, ta, tb, v)).map(drop)
            })?;
            base.get_or_insert(ms);
            let tag = if v == shipped { " (shipped)" } else { "" };
            rows.push(Row {
                kernel: format!("matmul v{v}{tag}"),
                shape: label.clone(),
                ms,
                flops,
                baseline_ms: base,
            });
        }
    }
    print_table(&rows)?;
    Ok(())
}
