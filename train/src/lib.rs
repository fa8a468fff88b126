//! tubelet-train: fine-tuning and training of the zoo's models on tubelet-data's datasets: the
//! loop, the papers' recipes, schedules, evaluation as the papers report it, checkpoints that
//! hold the whole state (and resume exactly), official checkpoint files, metrics and plots.
//! The `tubelet` binary only parses arguments and prints.

pub mod checkpoint;
pub mod data;
pub mod dist;
pub mod eval;
pub mod metrics;
pub mod mix;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod optim;
pub mod plot;
pub mod recipe;
pub mod resume;
pub mod runlog;
pub mod schedule;
pub mod source;
pub mod trainer;
pub mod weights;
