//! tubelet's test suite: one binary (faster to link on 2 cores than one per file).
//! GPU tests call `gpu_or_skip()`: with `TUBELET_REQUIRE_GPU=1` (CI) a missing adapter fails.

mod attention;
mod autograd;
mod io;
mod models;
mod optim;
mod linear;
mod matmul;
mod layer_norm;
mod conv;
mod ops;
mod shaders;
mod softmax;
mod zoo;
