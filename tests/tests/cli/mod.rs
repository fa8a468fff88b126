//! The `tubelet` subcommands' logic, as library calls (`tubelet_cli`): the stdout helper and
//! `check`, and loading official checkpoint files through `run`, `parity` and `convert`
//! (`weights.rs`). `models/zoo.rs` drives `train`, `run` and `parity` on the zoo's models.

mod check;
pub mod output;
mod resume;
mod weights;
