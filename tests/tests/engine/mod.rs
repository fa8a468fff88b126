//! The engine beneath the ops: the autograd tape and device plumbing, the optimiser, checkpoint
//! files, activation checkpointing and gradient accumulation (`memory.rs`), and the WGSL sources
//! (validated without a GPU).

mod autograd;
mod io;
mod memory;
mod optim;
mod profile;
mod shaders;
