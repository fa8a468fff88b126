//! The logic behind the `tubelet` subcommands, which the test suite drives directly: training and
//! inference on any preset of the model registry, the parity tool, the op checks, the benches
//! and the listings. `main.rs` only parses arguments and prints errors. Subcommands print
//! through [`output::Output`] (`outln!`), which stops printing on a closed pipe instead of
//! panicking.

pub mod bench;
pub mod check;
pub mod clips;
pub mod convert;
pub mod data;
pub mod eval;
pub mod info;
pub mod models;
pub mod output;
pub mod parity;
pub mod profile;
pub mod run;
pub mod train;
