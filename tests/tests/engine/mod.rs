//! The engine beneath the ops: the autograd tape and device plumbing, the optimiser, checkpoint
//! files, and the WGSL sources (validated without a GPU).

mod autograd;
mod io;
mod optim;
mod shaders;
