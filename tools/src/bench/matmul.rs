//! `tubelet bench matmul`: the matmul kernel variants side by side (house style §8): v1 naive,
//! v2 4×4 register blocks, v3 8×8 blocks with subgroup broadcasts (shipped where subgroups of ≥ 8
//! lanes exist), at square sizes and at the seed models' linear-layer shapes. Each variant is
//! first checked against the f64 CPU reference at a small odd shape, so a wrong variant can never
//! win; the speedup column is against v1.

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
    let variants: Vec<u32> = if gpu.has_subgroups() {
        vec![1, 2, 3]
    } else {
        vec![1, 2]
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
    // (label, batch·M, K, N): square sizes, then linear layers of the seeds at their token counts.
    let mut shapes: Vec<(String, usize, usize, usize)> = args
        .sizes
        .iter()
        .map(|&s| (format!("{s}×{s}×{s}"), s, s, s))
        .collect();
    if !args.no_models {
        shapes.push(("Swin-T st.1 qkv (6272·96→288)".into(), 6272, 96, 288));
        shapes.push(("ViT-B fc1 (1569·768→3072)".into(), 1569, 768, 3072));
        shapes.push(("UniFormer-S st.3 qkv (1568·320→960)".into(), 1568, 320, 960));
    }
    let mut rows = Vec::new();
    for (label, m, k, n) in shapes {
        let a = Tensor::randn(&[m, k], 0.0, 1.0, 1)?;
        let b = Tensor::randn(&[k, n], 0.0, 1.0, 2)?;
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
                no_grad(|| matmul_variant(&a, &b, false, false, v)).map(drop)
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
