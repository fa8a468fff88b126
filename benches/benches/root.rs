//! tubelet's criterion benches: one binary, one module per kernel family. To add a family, add
//! its `mod` line and its group to `criterion_main!` below.

use criterion::{criterion_group, criterion_main};

mod attention;
mod conv;

criterion_group!(conv_benches, conv::bench);
criterion_main!(attention::benches, conv_benches);
