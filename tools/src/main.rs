//! `tubelet`: train, inspect and benchmark video transformers on any GPU.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use tubelet_cli::{bench, check, convert, data, eval, info, models, parity, profile, run, train};

#[derive(Parser)]
#[command(
    name = "tubelet",
    version,
    about = "Train and study video transformers on any GPU (wgpu)"
)]
struct Cli {
    /// GPU adapter by index or name substring (as listed by `tubelet info`); overrides
    /// TUBELET_ADAPTER.
    #[arg(long, global = true)]
    adapter: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model with its paper's recipe (tiny presets: on the embedded synthetic set), with
    /// validation, logs and plots in a run directory.
    Train(Box<train::Args>), // boxed: its many flags make it the largest variant by far
    /// Evaluate weights with the paper's test views: top-1, top-5, mean class accuracy, per-class CSV.
    Eval(eval::Args),
    /// Classify one synthetic clip with any model (tiny or paper size): top-k classes and time.
    Run(run::Args),
    /// Run a module or model on a test vector (safetensors) and write its output and gradients,
    /// to check the port against the official code.
    Parity(parity::Args),
    /// Write an official checkpoint (.pth, .pyth) or a training state as safetensors weights.
    Convert(convert::Args),
    /// Check every op's GPU forward and backward against the CPU reference on this machine.
    Check(check::Args),
    /// Benchmark fused kernels against their unfused compositions at the seed models' shapes.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// One training step broken down by kernel: time, dispatches, submits, bytes, compile time.
    Profile(profile::Args),
    /// List the model presets: input, parameters, GFLOPs, and which train on the synthetic set;
    /// `--recipe NAME` prints a preset's training recipe.
    Models(models::Args),
    /// Datasets: `check` scans one for problems, `synth` writes the synthetic set as files.
    #[command(subcommand)]
    Data(data::Data),
    /// Print the GPU adapters, the chosen one's backend, driver, features and limits.
    Info,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(a) = &cli.adapter {
        // Read once, when the device is first created (before any thread exists).
        std::env::set_var("TUBELET_ADAPTER", a);
    }
    // `train` and `bench allreduce` may be ranks of an MPI job (`mpirun -np N tubelet train`):
    // start it before the device, whose adapter is picked by local rank (tubelet-train's
    // dist.rs). A failing rank stops them all: the others may wait in a collective.
    let dist = match cli.command {
        Command::Train(_) | Command::Bench(bench::Bench::Allreduce(_)) => {
            match tubelet_train::dist::init_from_env() {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => None,
    };
    // Every subcommand but `models`, `info` and the data tools needs the device: open it first, so a machine without an
    // adapter gets the error that says what to install, not a panic from an infallible op.
    let device = match cli.command {
        Command::Models(_)
        | Command::Info
        | Command::Data(_)
        | Command::Bench(bench::Bench::Data(_)) => Ok(()),
        _ => tubelet::Gpu::global().map(drop),
    };
    let result = device.and_then(|()| match cli.command {
        Command::Check(args) => check::run(args),
        Command::Train(args) => train::run(*args),
        Command::Info => info::run(),
        Command::Models(args) => models::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Bench(b) => bench::run(b),
        Command::Run(args) => run::run(args),
        Command::Parity(args) => parity::run(args),
        Command::Data(cmd) => data::run(cmd),
        Command::Convert(args) => convert::run(args),
        Command::Profile(args) => profile::run(args),
    });
    // Pipelines compiled in this run go to the on-disk pipeline cache (engine/src/gpu.rs): a
    // failure to write it costs the next run a compile, so it warns and never fails the command.
    if let Some(Ok(gpu)) = tubelet::Gpu::initialised() {
        if let Err(e) = gpu.save_pipeline_cache() {
            eprintln!("tubelet: warning: pipeline cache not saved: {e}");
        }
    }
    match (result, dist) {
        (Err(e), Some(d)) if d.world() > 1 => d.abort(&e),
        (result, d) => {
            if let Some(d) = d {
                d.finish();
            }
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
