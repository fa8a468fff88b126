//! The `tubelet` subcommands' logic, as library calls (`tubelet_cli`): the stdout helper and
//! `check`, and loading official checkpoint files through `run`, `parity` and `convert`
//! (`weights.rs`); issues 11 and 12's acceptance: real videos, training, fine-tuning from a
//! checkpoint with a new class count, evaluation views, bad files (`finetune.rs`). `models/zoo.rs` drives `train`, `run` and `parity` on the zoo's models.

mod accumulate;
mod check;
mod finetune;
mod mixing;
pub mod output;
mod resume;
mod weights;
