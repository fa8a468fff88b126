//! Ops: the generated property checks of every kernel op (`property.rs`), then per-op tests
//! beyond them, one file per op or family.

mod attention;
mod batch_norm;
mod conv;
mod grid_attention;
mod layer_norm;
mod linear;
mod matmul;
mod pooled_attention;
mod property;
mod softmax;
mod window_attention;
