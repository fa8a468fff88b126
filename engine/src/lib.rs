//! tubelet: tensors on wgpu, reverse-mode autograd, and fused WGSL kernels for video
//! transformers, with a plain f64 CPU reference for every op.
//!
//! Read top-down: [`tensor`] → [`autograd`] → [`ops`] → [`gpu`]; [`shape`] is the arithmetic of
//! shapes and strides under all of them, and [`reference`] is the definition every kernel is
//! tested against.
//!
//! ```no_run
//! use tubelet::Tensor;
//! let x = Tensor::randn(&[2, 3], 0.0, 1.0, 7).unwrap().param();
//! let loss = x.gelu().sum_all();
//! let grads = loss.backward().unwrap();
//! println!("{:?}", grads.get(&x).unwrap().to_vec().unwrap());
//! ```

pub mod autograd;
pub mod checkpoint;
pub mod error;
pub mod gpu;
pub mod io;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod pipeline_cache;
pub mod profile;
pub mod reference;
mod rng;
pub mod shape;
pub mod tensor;
#[cfg(feature = "testing")]
pub mod testing;

pub use autograd::{no_grad, Grads, NoGradGuard};
pub use checkpoint::Checkpointing;
pub use error::{Error, Result};
pub use gpu::{gpu, gpu_or_skip, Gpu};
pub use reference::CpuTensor;
pub use rng::Rng;
pub use shape::Shape;
pub use tensor::{Indices, Tensor};
