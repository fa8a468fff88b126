//! Fused attention kernels against their unfused compositions of basic ops (criterion), at the
//! shapes of `tubelet bench attention`: the one list, `tubelet_cli::bench::attention::shapes`
//! (tools/src/bench/attention.rs), whose header gives each pattern, shape and FLOP count.
//!
//! Groups `attention_forward` and `attention_forward_backward`; ids `<kernel>/<shape>`, e.g.
//! `window_attention fused/swin-t-stage1 B1 8×56×56 …`; select with criterion's filter
//! (`cargo bench -p tubelet-benches -- small`). Before a shape is timed, its fused output is
//! checked against the unfused composition at that shape (house style §8: a wrong variant can
//! never win). Throughput is the attention matmuls' FLOPs (criterion prints them as elem/s),
//! forward+backward 3.5× the forward. Timing is wall time around recording + `Gpu::sync`
//! (`iter_custom`), as `tubelet bench` times it.

use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use tubelet::{gpu, no_grad};
use tubelet_cli::bench::attention::{shapes, train_step, validate};

fn attention_benches(c: &mut Criterion) {
    let g = gpu();
    eprintln!("adapter: {} ({:?})", g.info.name, g.info.backend);
    let all = shapes();
    for (pass, factor) in [("forward", 1.0), ("forward_backward", 3.5)] {
        let mut group = c.benchmark_group(format!("attention_{pass}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5));
        for s in &all {
            let p = &s.pattern;
            let label = format!("{} {}", s.name, p.label());
            let inp = p.inputs(7).unwrap();
            let diff = validate(p, &inp, &label).unwrap_or_else(|e| panic!("{e}"));
            eprintln!(
                "{label}: fused and unfused agree (max |Δ| {diff:.1e}). Starting benchmarks."
            );
            group.throughput(Throughput::Elements((p.flops() * factor) as u64));
            for fused in [true, false] {
                let id = BenchmarkId::new(p.kernel(fused), &label);
                group.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        let t = Instant::now();
                        for _ in 0..iters {
                            if pass == "forward" {
                                no_grad(|| p.forward(&inp, fused)).unwrap();
                            } else {
                                train_step(p, &inp, fused).unwrap();
                            }
                            g.sync().unwrap();
                        }
                        t.elapsed()
                    })
                });
            }
            g.trim_pool();
        }
        group.finish();
    }
}

criterion_group!(benches, attention_benches);
