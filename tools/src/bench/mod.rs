//! `tubelet bench`: fused kernels against their unfused compositions and the CPU reference, at
//! the seed models' real shapes, side by side in one run (house style §8). Prints one table:
//! kernel, shape, ms, GFLOP/s, speedup against the unfused path.
//!
//! Timing: wall time around recording + `Gpu::sync` (submit and wait), after warm-up runs that
//! also compile the pipelines; the median of the timed runs is reported. Speed is measured here,
//! never asserted in a test.

use std::time::Instant;

use clap::Subcommand;
use tubelet::{Gpu, Result};

use crate::outln;
use crate::output::Output;

pub mod allreduce;
pub mod attention;
pub mod conv;
pub mod data;
pub mod matmul;
pub mod memory;
pub mod train;

#[derive(Subcommand, Debug)]
pub enum Bench {
    /// Fused attention patterns (joint, window, ...) against the unfused compositions.
    Attention(attention::Args),
    /// Convolution, pooling, normalisation and shift kernels against im2col + matmul.
    Conv(conv::Args),
    /// The matmul kernel variants (naive, blocked, subgroup) side by side.
    Matmul(matmul::Args),
    /// The data pipeline (decode, sample, augment) in clips/s with 1, 2 and all threads,
    /// beside decord and PyAV decoding the same frames.
    Data(data::Args),
    /// Peak memory of a training step per paper preset, with and without checkpointing.
    Memory(memory::Args),
    /// Whole training steps of every tiny preset (ms per phase, clips/s, memory, dispatches),
    /// beside PyTorch on the CPU training the same models.
    Train(train::Args),
    /// MPI all-reduce bandwidth (1–256 MiB) and a training step's compute and communication
    /// time; run under `mpirun -np N` (feature `mpi`).
    Allreduce(allreduce::Args),
}

pub fn run(bench: Bench) -> Result<()> {
    if let Bench::Data(args) = bench {
        // CPU only: no adapter needed.
        return data::run(args);
    }
    if let Bench::Allreduce(args) = bench {
        // Prints from rank 0 only.
        return allreduce::run(args);
    }
    let gpu = Gpu::global()?;
    let mut out = Output::stdout();
    outln!(out, "adapter: {} ({:?})", gpu.info.name, gpu.info.backend)?;
    match bench {
        Bench::Attention(args) => attention::run(args),
        Bench::Conv(args) => conv::run(args),
        Bench::Matmul(args) => matmul::run(args),
        Bench::Data(_) | Bench::Allreduce(_) => unreachable!("handled above"),
        Bench::Memory(args) => memory::run(args),
        Bench::Train(args) => train::run(args),
    }
}

/// Median and minimum wall time of `f` in milliseconds: `warmup` untimed runs, then `iters`
/// timed ones, each ended by a GPU sync so the time covers the kernels, not just recording.
pub fn time_ms(
    warmup: usize,
    iters: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<(f64, f64)> {
    let gpu = Gpu::global()?;
    for _ in 0..warmup {
        f()?;
        gpu.sync()?;
    }
    let mut times = Vec::with_capacity(iters.max(1));
    for _ in 0..iters.max(1) {
        let t = Instant::now();
        f()?;
        gpu.sync()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok((times[times.len() / 2], times[0]))
}

/// One row of the results table.
pub struct Row {
    pub kernel: String,
    pub shape: String,
    pub ms: f64,
    /// Floating-point operations of one run (2 per multiply-add), for GFLOP/s.
    pub flops: f64,
    /// Time of the baseline this row is compared against (the unfused path), if any.
    pub baseline_ms: Option<f64>,
}

/// Prints `rows` as one aligned table.
pub fn print_table(rows: &[Row]) -> Result<()> {
    let mut out = Output::stdout();
    let kw = rows
        .iter()
        .map(|r| r.kernel.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let sw = rows
        .iter()
        .map(|r| r.shape.chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    outln!(
        out,
        "{:<kw$}  {:<sw$}  {:>10}  {:>9}  {:>8}",
        "kernel",
        "shape",
        "ms",
        "GFLOP/s",
        "speedup"
    )?;
    for r in rows {
        let gflops = if r.flops > 0.0 {
            format!("{:.2}", r.flops / (r.ms * 1e6))
        } else {
            "-".into()
        };
        let speedup = r
            .baseline_ms
            .map_or("-".into(), |b| format!("{:.2}×", b / r.ms));
        let pad = sw - r.shape.chars().count();
        outln!(
            out,
            "{:<kw$}  {}{}  {:>10.2}  {:>9}  {:>8}",
            r.kernel,
            r.shape,
            " ".repeat(pad),
            r.ms,
            gflops,
            speedup
        )?;
    }
    Ok(())
}
