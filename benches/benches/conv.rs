//! Criterion benches of the convolution, pooling, normalisation and shift kernels at the seed
//! models' shapes (UniFormer-S stage 1, MViT-B stage 1 pooling, ResNet-50 layer 1, TSM), forward
//! and forward+backward. `tubelet bench conv` prints the same kernels next to their unfused
//! compositions; this file is the criterion view (statistics, history, regressions).
//!
//! Each kernel is validated against the f64 reference on its seed cases before any timing (llm.c's
//! "All results match"). Wall time covers recording + submit + wait (`Gpu::sync`), as in
//! candle's `iter_custom` + `device.sync()`; criterion reports GB/s of the tensors read and written.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use tubelet::testing::{forward_case, gpu_backward_case};
use tubelet::{gpu, no_grad, Result, Tensor};

type Fun = Box<dyn Fn(&[Tensor]) -> Result<Tensor>>;

fn validate() {
    use tubelet::ops::{
        conv3d, depthwise_conv3d as dw, layer_norm_channels as lnc, temporal_shift as ts,
    };
    macro_rules! all {
        ($m:ident) => {
            let spec = $m::test_spec();
            for c in $m::seed_cases() {
                forward_case(&c, spec.forward_tol).unwrap_or_else(|e| panic!("{e}"));
                gpu_backward_case(&c, spec.backward_tol).unwrap_or_else(|e| panic!("{e}"));
            }
        };
    }
    all!(dw);
    all!(conv3d);
    all!(ts);
    all!(lnc);
    println!(
        "All results match. Starting benchmarks (adapter: {}).",
        gpu().info.name
    );
}

/// Seconds of `iters` runs of f (forward only, or forward + backward from `dy`), synced.
fn run(f: &Fun, inputs: &[Tensor], dy: &Tensor, grad: bool, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        if grad {
            let params: Vec<Tensor> = inputs.iter().map(Tensor::param).collect();
            f(&params).unwrap().backward_with(dy.clone()).unwrap();
        } else {
            no_grad(|| f(inputs)).unwrap();
        }
    }
    gpu().sync().unwrap();
    start.elapsed()
}

pub fn bench(c: &mut Criterion) {
    validate();
    let r = |s: &[usize], seed| Tensor::rand_uniform(s, -1.0, 1.0, seed).unwrap();
    let cases: Vec<(&str, String, Vec<Tensor>, Fun)> = vec![
        (
            "depthwise_conv3d",
            "k3_s1/1x96x8x56x56".into(),
            vec![r(&[1, 96, 8, 56, 56], 1), r(&[96, 1, 3, 3, 3], 2)],
            Box::new(|t| t[0].try_depthwise_conv3d(&t[1], None, [1, 1, 1], [1, 1, 1])),
        ),
        (
            "depthwise_conv3d",
            "k5_s1/1x64x8x56x56".into(),
            vec![r(&[1, 64, 8, 56, 56], 1), r(&[64, 1, 5, 5, 5], 2)],
            Box::new(|t| t[0].try_depthwise_conv3d(&t[1], None, [1, 1, 1], [2, 2, 2])),
        ),
        (
            "depthwise_conv3d",
            "k3_s1x4x4/1x96x8x56x56".into(),
            vec![r(&[1, 96, 8, 56, 56], 1), r(&[96, 1, 3, 3, 3], 2)],
            Box::new(|t| t[0].try_depthwise_conv3d(&t[1], None, [1, 4, 4], [1, 1, 1])),
        ),
        (
            "conv2d",
            "3x3/1x64x56x56".into(),
            vec![r(&[1, 64, 56, 56], 3), r(&[64, 64, 3, 3], 4)],
            Box::new(|t| t[0].try_conv2d(&t[1], None, [1, 1], [1, 1], 1)),
        ),
        (
            "temporal_shift",
            "8seg/8x64x56x56".into(),
            vec![r(&[8, 64, 56, 56], 5)],
            Box::new(|t| t[0].try_temporal_shift(8, 8)),
        ),
        (
            "layer_norm_channels",
            "1x64x8x56x56".into(),
            vec![r(&[1, 64, 8, 56, 56], 6), r(&[64], 7), r(&[64], 8)],
            Box::new(|t| t[0].try_layer_norm_channels(&t[1], &t[2], 1e-5)),
        ),
    ];
    for (op, id, inputs, f) in &cases {
        let y = no_grad(|| f(inputs)).unwrap();
        let dy = r(y.shape(), 9);
        let bytes = 4 * (inputs.iter().map(Tensor::numel).sum::<usize>() + y.numel()) as u64;
        for grad in [false, true] {
            let mut g = c.benchmark_group(format!(
                "{op}_{}",
                if grad { "forward_backward" } else { "forward" }
            ));
            g.sample_size(10)
                .warm_up_time(Duration::from_millis(500))
                .measurement_time(Duration::from_secs(3));
            g.throughput(Throughput::Bytes(if grad { 3 * bytes } else { bytes }));
            g.bench_function(BenchmarkId::from_parameter(id), |b| {
                b.iter_custom(|n| run(f, inputs, &dy, grad, n))
            });
            g.finish();
        }
    }
}
