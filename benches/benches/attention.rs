//! Fused attention kernels against their unfused compositions of basic ops (criterion).
//!
//! Groups `window_attention_forward`, `window_attention_forward_backward` (Video Swin 3D
//! shifted-window attention) and `attention_forward`, `attention_forward_backward` (joint
//! space-time attention); ids `fused/<shape>` and `unfused/<shape>`, at a small shape and at
//! Swin-T stage 1 (8×56×56 tokens, C 96, 3 heads, window 8×7×7, shift 4·3·3) or TimeSformer-B's
//! joint attention (8·196 + 1 tokens, 12 heads, d 64).
//!
//! Before anything is timed, each variant is validated at a small shape against the op's f64 CPU
//! reference (house style §8: a wrong variant can never win). Throughput is counted in FLOPs of
//! the two attention matmuls (criterion prints them as elem/s), forward 4·N²·d per head and
//! window, forward+backward 3.5× (FlashAttention-2's convention; see tools/src/bench/attention.rs).
//! Timing is wall time around recording + `Gpu::sync` (`iter_custom`).

use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use tubelet::ops::attention::Attention;
use tubelet::ops::window_attention::{
    video_swin_window, window_attention_unfused, SwinWindow, WindowAttention,
};
use tubelet::ops::Op;
use tubelet::testing::{compare, Tol};
use tubelet::{gpu, no_grad, CpuTensor, Rng, Tensor};
use tubelet_models::blocks::attention_unfused;

/// f32 on the GPU against f64: as the ops' own forward tolerances.
const TOL: Tol = Tol::new(2e-5, 1e-4, "f32 dots and softmax sums against f64");

#[derive(Clone, Copy)]
enum Case {
    Window {
        grid: [usize; 3],
        c: usize,
        heads: usize,
        window: [usize; 3],
        shift: [usize; 3],
    },
    Joint {
        n: usize,
        heads: usize,
        hd: usize,
    },
}

impl Case {
    fn win(grid: [usize; 3], window: [usize; 3], shift: [usize; 3]) -> SwinWindow {
        video_swin_window(grid, window, shift)
    }

    /// Forward FLOPs of the two attention matmuls, batch 1.
    fn flops(&self) -> u64 {
        match *self {
            Case::Window {
                grid,
                c,
                window,
                shift,
                ..
            } => {
                let w = Case::win(grid, window, shift).window;
                let n = w.iter().product::<usize>();
                let windows: usize = (0..3).map(|a| grid[a].div_ceil(w[a])).product();
                (4 * n * n * c * windows) as u64 // c = heads · d
            }
            Case::Joint { n, heads, hd } => (4 * n * n * hd * heads) as u64,
        }
    }

    /// Host inputs (qkv, and for windows the qkv bias and the bias table), batch 1.
    fn host_inputs(&self, seed: u64) -> Vec<CpuTensor> {
        let mut rng = Rng::new(seed);
        let mut u = |shape: &[usize], a: f64| {
            CpuTensor::uniform(shape, -a, a, &mut rng).map(|v| v as f32 as f64)
        };
        match *self {
            Case::Window {
                grid: [d, h, w],
                c,
                heads,
                window: o,
                ..
            } => {
                let t = (2 * o[0] - 1) * (2 * o[1] - 1) * (2 * o[2] - 1);
                vec![
                    u(&[1, d, h, w, 3 * c], 1.5),
                    u(&[3 * c], 0.5),
                    u(&[t, heads], 0.5),
                ]
            }
            Case::Joint { n, heads, hd } => vec![u(&[1, n, 3 * heads * hd], 1.5)],
        }
    }

    fn forward(&self, x: &[Tensor], fused: bool) -> Tensor {
        match *self {
            Case::Window {
                grid,
                c,
                heads,
                window,
                shift,
            } => {
                let (win, scale) = (
                    Case::win(grid, window, shift),
                    ((c / heads) as f32).powf(-0.5),
                );
                if fused {
                    x[0].window_attention(&x[1], &x[2], heads, scale, win)
                } else {
                    window_attention_unfused(&x[0], &x[1], &x[2], heads, scale, win).unwrap()
                }
            }
            Case::Joint { heads, hd, .. } => {
                let scale = (hd as f32).powf(-0.5);
                if fused {
                    x[0].attention(heads, scale)
                } else {
                    attention_unfused(&x[0], heads, scale).unwrap()
                }
            }
        }
    }

    /// The op's f64 CPU reference output.
    fn reference(&self, x: &[CpuTensor]) -> CpuTensor {
        let refs: Vec<&CpuTensor> = x.iter().collect();
        match *self {
            Case::Window {
                grid,
                c,
                heads,
                window,
                shift,
            } => {
                let scale = ((c / heads) as f32).powf(-0.5);
                WindowAttention::new(heads, scale, Case::win(grid, window, shift)).reference(&refs)
            }
            Case::Joint { heads, hd, .. } => {
                Attention::new(heads, (hd as f32).powf(-0.5)).reference(&refs)
            }
        }
    }
}

/// Both variants against the CPU reference; panics on a mismatch.
fn validate(case: Case, what: &str) {
    let host = case.host_inputs(3);
    let want = case.reference(&host);
    let x: Vec<Tensor> = host.iter().map(|t| Tensor::from_cpu(t).unwrap()).collect();
    for fused in [true, false] {
        let got = no_grad(|| case.forward(&x, fused)).to_cpu().unwrap();
        let name = format!("{what} {}", if fused { "fused" } else { "unfused" });
        compare(&name, &got.data, &want, TOL).unwrap_or_else(|e| panic!("{e}"));
    }
    eprintln!("{what}: fused and unfused match the CPU reference. Starting benchmarks.");
}

/// Median-friendly timing of `iters` runs of `f`, each ended by a GPU sync.
fn timed(iters: u64, mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        f();
        gpu().sync().unwrap();
    }
    t.elapsed()
}

fn bench_pattern(c: &mut Criterion, op: &str, shapes: &[(&str, Case)]) {
    for (pass, factor) in [("forward", 2u64), ("forward_backward", 7)] {
        let mut g = c.benchmark_group(format!("{op}_{pass}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5));
        for &(name, case) in shapes {
            let host = case.host_inputs(5);
            let x: Vec<Tensor> = host
                .iter()
                .map(|t| Tensor::from_cpu(t).unwrap().param())
                .collect();
            let mut dy_shape = x[0].shape().to_vec();
            *dy_shape.last_mut().unwrap() /= 3;
            let dy = Tensor::randn(&dy_shape, 0.0, 1.0, 9).unwrap();
            g.throughput(Throughput::Elements(case.flops() * factor / 2)); // 1× or 3.5×
            for fused in [true, false] {
                let id = BenchmarkId::new(if fused { "fused" } else { "unfused" }, name);
                g.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        timed(iters, || {
                            if pass == "forward" {
                                drop(no_grad(|| case.forward(&x, fused)));
                            } else {
                                let grads =
                                    case.forward(&x, fused).backward_with(dy.clone()).unwrap();
                                assert!(grads.get(&x[0]).is_some(), "{op} gave no qkv gradient");
                            }
                        })
                    })
                });
            }
        }
        g.finish();
    }
}

fn attention_benches(c: &mut Criterion) {
    let g = gpu();
    eprintln!("adapter: {} ({:?})", g.info.name, g.info.backend);
    let swin = |grid, shift| Case::Window {
        grid,
        c: 96,
        heads: 3,
        window: [8, 7, 7],
        shift,
    };
    // Validation shapes: padding, clamped windows and the shift mask, small enough for f64.
    validate(
        Case::Window {
            grid: [3, 5, 6],
            c: 8,
            heads: 2,
            window: [2, 3, 4],
            shift: [1, 1, 2],
        },
        "window_attention",
    );
    validate(
        Case::Joint {
            n: 37,
            heads: 2,
            hd: 8,
        },
        "attention",
    );
    bench_pattern(
        c,
        "window_attention",
        &[
            ("small_8x14x14", swin([8, 14, 14], [4, 3, 3])),
            (
                "swin_t_stage1_8x56x56_shifted",
                swin([8, 56, 56], [4, 3, 3]),
            ),
        ],
    );
    bench_pattern(
        c,
        "attention",
        &[
            (
                "small_2x196+1",
                Case::Joint {
                    n: 2 * 196 + 1,
                    heads: 12,
                    hd: 64,
                },
            ),
            (
                "timesformer_joint_8x196+1",
                Case::Joint {
                    n: 8 * 196 + 1,
                    heads: 12,
                    hd: 64,
                },
            ),
        ],
    );
}

criterion_group!(benches, attention_benches);
