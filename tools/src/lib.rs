//! The logic behind the `tubelet` subcommands that the test suite drives directly: training and
//! inference on any preset of the model registry, and the parity tool. `main.rs` only parses
//! arguments and prints errors.

pub mod clips;
pub mod eval;
pub mod parity;
pub mod run;
pub mod train;
