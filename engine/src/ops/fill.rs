//! Creation and assignment kernels: `fill` (y = value) and `copy` (y = x, in place).
//! Not differentiable and never recorded on the tape: they make leaves and update parameters.
//! Kernels: shaders/fill_forward.wgsl, shaders/copy_forward.wgsl

use crate::error::Result;
use crate::gpu::{gpu, grid};
use crate::kernel;
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct FillParams {
    n: u32,
    value: f32,
}

/// Writes `value` into every element of `y`.
pub fn fill(y: &Tensor, value: f32) -> Result<()> {
    let n = y.numel();
    // (N) -> (N)
    gpu().dispatch(
        kernel!(fill_forward),
        &[],
        &[y.buffer()],
        &FillParams { n: n as u32, value },
        grid(n, 256),
    )
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CopyParams {
    n: u32,
}

/// Copies `x` into `y` (same number of elements), in place.
pub fn copy(x: &Tensor, y: &Tensor) -> Result<()> {
    let n = x.numel();
    debug_assert_eq!(n, y.numel());
    gpu().dispatch(
        kernel!(copy_forward),
        &[],
        &[x.buffer(), y.buffer()],
        &CopyParams { n: n as u32 },
        grid(n, 256),
    )
}
