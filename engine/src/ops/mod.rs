//! Ops: one file per op, each holding its API, GPU forward and backward, and CPU reference.
//!
//! An op is either a *kernel op* (a struct implementing [`Op`], with shaders in `shaders/`) or a
//! *composite* (a function built from other ops; gradients fall out, no shader, no backward).
//! [`Op`] has no default methods: a missing backward is a compile error, and an op without a
//! meaningful gradient says so by returning `None` for that input.
//!
//! Registry: [`for_each_op!`] lists every kernel-op module; the test crate expands it into three
//! tests per op (forward vs reference, reference backward vs finite differences, GPU backward vs
//! reference backward), so an op cannot exist untested.

/// The trait every kernel op implements; it lives beside the tape that records it and the
/// backward contract (autograd.rs), so the tape does not import the ops.
pub use crate::autograd::Op;

pub mod attention;
pub mod batch_norm;
pub mod binary;
pub mod concat;
pub mod conv3d;
pub mod cross_entropy;
pub mod depthwise_conv3d;
pub mod drop_path;
pub mod dropout;
pub mod expand;
pub mod gather;
pub mod grid_attention;
pub mod layer_norm;
pub mod layer_norm_channels;
pub mod linear;
pub mod matmul;
pub mod narrow;
pub mod patch_merging;
pub mod permute;
pub mod pool3d;
pub mod pooled_attention;
pub mod reduce;
pub mod reshape;
pub mod softmax;
pub mod temporal_shift;
pub mod temporal_shift_online;
pub mod unary;
pub mod window_attention;

/// Calls `$m!(module)` for every kernel-op module (each has `test_spec()` under "testing").
#[macro_export]
macro_rules! for_each_op {
    ($m:ident) => {
        $m!(unary);
        $m!(binary);
        $m!(reduce);
        $m!(expand);
        $m!(matmul);
        $m!(softmax);
        $m!(cross_entropy);
        $m!(layer_norm);
        $m!(reshape);
        $m!(permute);
        $m!(concat);
        $m!(narrow);
        $m!(gather);
        $m!(dropout);
        $m!(attention);
        $m!(window_attention);
        $m!(grid_attention);
        $m!(depthwise_conv3d);
        $m!(conv3d);
        $m!(pool3d);
        $m!(temporal_shift);
        $m!(batch_norm);
        $m!(drop_path);
        $m!(temporal_shift_online);
        $m!(layer_norm_channels);
        $m!(patch_merging);
        $m!(pooled_attention);
    };
}
