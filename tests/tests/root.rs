//! tubelet's test suite: one binary (faster to link on 2 cores than one per file).
//! GPU tests call `gpu_or_skip()`: with `TUBELET_REQUIRE_GPU=1` (CI) a missing adapter fails.

mod autograd;
mod conv;
mod ops;
mod shaders;
