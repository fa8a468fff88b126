//! The engine beneath the ops: the autograd tape and device plumbing, the optimiser, checkpoint
//! files, activation checkpointing and gradient accumulation (`memory.rs`), the WGSL sources
//! (validated without a GPU), and the ignored 1000-step soak (`soak.rs`, memory kept flat).

mod autograd;
mod io;
mod memory;
mod optim;
mod profile;
mod shaders;
mod soak;
