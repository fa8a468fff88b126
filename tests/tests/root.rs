//! tubelet's test suite: one binary (faster to link on 2 cores than one per file).
//! GPU tests call `gpu_or_skip()`: with `TUBELET_REQUIRE_GPU=1` (CI) a missing adapter fails.

mod attention;
mod autograd;
mod io;
mod models;
mod mvit;
mod mvit_attention;
mod optim;
mod linear;
mod matmul;
mod memory;
mod layer_norm;
mod conv;
mod grid_attention;
mod ops;
mod shaders;
mod softmax;
mod batch_norm;
mod tsm;
mod uniformer;
mod video_swin;
mod timesformer;
mod window_attention;
mod zoo;
mod parity;
