//! tubelet-data's tests, one binary: sampling against mmaction2-derived fixtures, transforms,
//! datasets and bad data (rawframes sets written by the tests), the loader's determinism.

mod common;
mod datasets;
mod loader;
mod sampling;
mod transforms;
