//! The fused Video Swin window attention against its unfused composition of basic ops
//! (`window_attention_unfused`): forward and every gradient (qkv, qkv bias, bias table) agree,
//! over grids that are not multiples of the window, windows larger than the grid (clamped, the
//! shift dropped on that axis), with and without shift. Both run in f32 on the GPU; the op's own
//! property tests compare the fused kernels with the f64 reference.

use tubelet::ops::window_attention::{video_swin_window, window_attention_unfused, SwinWindow};
use tubelet::testing::{assert_close, Tol};
use tubelet::{gpu_or_skip, CpuTensor, Rng, Tensor};

/// f32 on both sides, different summation orders: dots of ≤ 32 terms, softmax over ≤ 64 keys,
/// and d table / d bias sums over every window and pair (≤ ~10⁴ terms of |·| ≲ 1).
const FWD: Tol = Tol::new(2e-5, 1e-4, "f32 both sides, different summation orders");
const BWD: Tol = Tol::new(
    2e-4,
    1e-3,
    "f32 sums of dS over all windows and pairs (d table, d bias)",
);

struct Shape {
    b: usize,
    heads: usize,
    hd: usize,
    grid: [usize; 3],
    window: [usize; 3],
    shift: [usize; 3],
}

fn check(s: &Shape, seed: u64) {
    let win: SwinWindow = video_swin_window(s.grid, s.window, s.shift);
    let o = s.window;
    let (c3, t) = (
        3 * s.heads * s.hd,
        (2 * o[0] - 1) * (2 * o[1] - 1) * (2 * o[2] - 1),
    );
    let mut rng = Rng::new(seed);
    let [d, h, w] = s.grid;
    let qkv = CpuTensor::uniform(&[s.b, d, h, w, c3], -1.5, 1.5, &mut rng);
    let bias = CpuTensor::uniform(&[c3], -1.0, 1.0, &mut rng);
    let table = CpuTensor::uniform(&[t, s.heads], -1.0, 1.0, &mut rng);
    let dy = CpuTensor::uniform(&[s.b, d, h, w, c3 / 3], -1.0, 1.0, &mut rng);
    let up = |x: &CpuTensor| Tensor::from_cpu(x).unwrap().param();
    let (qkv, bias, table) = (up(&qkv), up(&bias), up(&table));
    let scale = (s.hd as f32).powf(-0.5);
    let label = format!(
        "B {} heads {} hd {} grid {:?} {win:?}",
        s.b, s.heads, s.hd, s.grid
    );

    let fused = qkv.window_attention(&bias, &table, s.heads, scale, win);
    let unfused = window_attention_unfused(&qkv, &bias, &table, s.heads, scale, win).unwrap();
    let want = unfused.to_cpu().unwrap();
    assert_close(&format!("forward, {label}"), &fused, &want, FWD);

    let gf = fused.backward_with(Tensor::from_cpu(&dy).unwrap()).unwrap();
    let gu = unfused
        .backward_with(Tensor::from_cpu(&dy).unwrap())
        .unwrap();
    for (name, x) in [("d qkv", &qkv), ("d qkv_bias", &bias), ("d table", &table)] {
        // Without padding the qkv bias never reaches the unfused graph: its gradient is zero.
        let want = gu
            .get(x)
            .map_or_else(|| CpuTensor::zeros(x.shape()), |g| g.to_cpu().unwrap());
        let got = gf
            .get(x)
            .unwrap_or_else(|| panic!("{name}: fused gave none, {label}"));
        assert_close(&format!("{name}, {label}"), got, &want, BWD);
    }
}

#[test]
fn window_attention_fused_matches_unfused_forward_and_gradients() {
    let Some(_) = gpu_or_skip() else { return };
    let shapes = [
        // grid not a multiple of the window: padding tokens, with and without shift
        Shape {
            b: 2,
            heads: 2,
            hd: 3,
            grid: [3, 5, 4],
            window: [2, 3, 3],
            shift: [1, 1, 1],
        },
        Shape {
            b: 2,
            heads: 2,
            hd: 3,
            grid: [3, 5, 4],
            window: [2, 3, 3],
            shift: [0, 0, 0],
        },
        // windows larger than the grid on every axis: one window, shift dropped, bias [:N, :N]
        Shape {
            b: 1,
            heads: 3,
            hd: 2,
            grid: [2, 2, 3],
            window: [3, 4, 4],
            shift: [1, 2, 2],
        },
        // clamped on H only (the official quirky bias slice), shifted on D and W
        Shape {
            b: 1,
            heads: 1,
            hd: 5,
            grid: [5, 2, 6],
            window: [2, 3, 4],
            shift: [1, 1, 2],
        },
        // exact multiples, head dim 32 (Swin's), shifted on one axis only
        Shape {
            b: 1,
            heads: 2,
            hd: 32,
            grid: [2, 4, 4],
            window: [2, 2, 2],
            shift: [0, 1, 0],
        },
        // a single token
        Shape {
            b: 1,
            heads: 1,
            hd: 1,
            grid: [1, 1, 1],
            window: [2, 2, 2],
            shift: [1, 1, 1],
        },
        // Swin's window width 7 (the v3 dq pass's query rows are Ow wide), W padded 9 -> 14
        Shape {
            b: 1,
            heads: 2,
            hd: 4,
            grid: [2, 3, 9],
            window: [2, 2, 7],
            shift: [1, 1, 3],
        },
        // Ow 8, the widest the v3 backward takes, clamped on D (rows of the original window)
        Shape {
            b: 1,
            heads: 1,
            hd: 8,
            grid: [1, 3, 8],
            window: [2, 2, 8],
            shift: [1, 1, 4],
        },
        // Ow 9: the backward takes the portable kernels after a v3 forward
        Shape {
            b: 1,
            heads: 1,
            hd: 4,
            grid: [1, 2, 10],
            window: [1, 2, 9],
            shift: [0, 1, 4],
        },
    ];
    for (i, s) in shapes.iter().enumerate() {
        check(s, 100 + i as u64);
    }
}

#[test]
fn window_attention_unfused_rejects_what_the_fused_op_rejects() {
    let Some(_) = gpu_or_skip() else { return };
    let win = video_swin_window([2, 2, 2], [2, 2, 2], [1, 1, 1]);
    let qkv = Tensor::zeros(&[1, 2, 2, 2, 12]);
    let err = window_attention_unfused(
        &qkv,
        &Tensor::zeros(&[11]),
        &Tensor::zeros(&[27, 2]),
        2,
        1.0,
        win,
    )
    .expect_err("bias of the wrong length")
    .to_string();
    assert!(err.contains("qkv_bias") && err.contains("[11]"), "{err}");
}
