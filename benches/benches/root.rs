//! tubelet's criterion benches: one binary; each file contributes one `criterion_group!`.

mod attention;

criterion::criterion_main!(attention::benches);
