//! tubelet's criterion benches: one binary, one module per kernel family. To add a family, add
//! its `mod` line and one `<module>::bench,` line to the group below.

use criterion::{criterion_group, criterion_main};

mod conv;

criterion_group!(
    benches,
    conv::bench,
);
criterion_main!(benches);
