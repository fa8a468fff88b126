//! tubelet's test suite: one binary (faster to link on 2 cores than one per file), grouped by
//! what the tests test:
//! - `ops/`: every kernel op's generated property checks (`ops::property::<op>::…`), and per-op
//!   tests beyond them (user errors, seed shapes, fused against unfused compositions);
//! - `engine/`: the tape, the optimiser, checkpoints and the WGSL sources themselves;
//! - `models/`: the zoo through its registry (`zoo.rs` trains every tiny preset and checks every
//!   gradient), what is specific to each model (counts, running statistics, drop path, errors),
//!   inputs of the wrong shape for every preset, and parity with the official code;
//! - `cli/`: the `tubelet` subcommands' logic as library calls;
//! - `regression/`: one test per fixed bug, named after its issue (`issue_<n>_<what>.rs`).
//!
//! GPU tests call `gpu_or_skip()`: with `TUBELET_REQUIRE_GPU=1` (CI) a missing adapter fails.

mod cli;
mod engine;
mod models;
mod ops;
mod regression;
