//! The model zoo: the registry-wide tests (`zoo.rs`, `inputs.rs`), what is specific to each
//! model (one file per paper), and parity with the official code's test vectors.

mod inputs;
mod mvit;
mod parity;
mod parity_options;
mod synthetic;
mod timesformer;
mod tsm;
mod uniformer;
mod video_swin;
mod vivit;
mod zoo;
