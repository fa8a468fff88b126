//! Fused attention beyond the generated op tests: user errors, and a sequence long enough that an
//! unsplit kernel would pass Mesa 22 llvmpipe's 65,535-loop-iteration limit.

use tubelet::{gpu_or_skip, Rng, Tensor};

#[test]
fn attention_errors_name_the_shapes() {
    let Some(_) = gpu_or_skip() else { return };
    let err = Tensor::zeros(&[4, 24])
        .try_attention(2, 1.0)
        .expect_err("rank 2")
        .to_string();
    assert!(
        err.contains("attention") && err.contains("[4, 24]"),
        "{err}"
    );
    let err = Tensor::zeros(&[1, 4, 20])
        .try_attention(2, 1.0)
        .expect_err("20 % 6")
        .to_string();
    assert!(
        err.contains("[1, 4, 20]") && err.contains("3·heads"),
        "{err}"
    );
    let err = Tensor::zeros(&[1, 4, 3 * 129])
        .try_attention(1, 1.0)
        .expect_err("D 129")
        .to_string();
    assert!(err.contains("129"), "{err}");
    let err = Tensor::zeros(&[1, 4, 6])
        .try_attention(0, 1.0)
        .expect_err("0 heads")
        .to_string();
    assert!(err.contains("heads"), "{err}");
}

/// N = 1100, D = 128: one invocation looping over every key would run 1100 · 65 ≈ 71k loop
/// iterations and be cut short silently on Mesa 22 (Mesa 25 has no such limit, so there this
/// only checks the split path); the automatic split keeps each under the limit.
/// Checked on a few rows against a plain f64 computation (the full reference is too slow here).
#[test]
fn attention_long_sequence_matches_reference_on_sampled_rows() {
    let Some(_) = gpu_or_skip() else { return };
    let (n, d) = (1100usize, 128usize);
    let scale = (d as f64).powf(-0.5);
    let mut rng = Rng::new(11);
    let qkv: Vec<f32> = (0..n * 3 * d)
        .map(|_| (2.0 * rng.uniform() - 1.0) as f32)
        .collect();
    let dy: Vec<f32> = (0..n * d)
        .map(|_| (2.0 * rng.uniform() - 1.0) as f32)
        .collect();
    let x = Tensor::from_slice(&qkv, &[1, n, 3 * d]).unwrap().param();
    let y = x.attention(1, scale as f32);
    let grads = y
        .backward_with(Tensor::from_slice(&dy, &[1, n, d]).unwrap())
        .unwrap();
    let (y, dx) = (
        y.to_vec().unwrap(),
        grads.get(&x).unwrap().to_vec().unwrap(),
    );

    let at = |i: usize, t: usize, c: usize| qkv[i * 3 * d + t * d + c] as f64;
    // P row i in f64.
    let prow = |i: usize| -> Vec<f64> {
        let s: Vec<f64> = (0..n)
            .map(|j| scale * (0..d).map(|c| at(i, 0, c) * at(j, 1, c)).sum::<f64>())
            .collect();
        let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = s.iter().map(|v| (v - mx).exp()).sum();
        s.iter().map(|v| (v - mx).exp() / z).collect()
    };
    let p: Vec<Vec<f64>> = (0..n).map(prow).collect();
    let o = |i: usize, c: usize| (0..n).map(|j| p[i][j] * at(j, 2, c)).sum::<f64>();
    let dp = |i: usize, j: usize| {
        (0..d)
            .map(|c| dy[i * d + c] as f64 * at(j, 2, c))
            .sum::<f64>()
    };
    let delta: Vec<f64> = (0..n)
        .map(|i| (0..d).map(|c| dy[i * d + c] as f64 * o(i, c)).sum())
        .collect();
    let close = |what: &str, got: f32, want: f64, tol: f64| {
        assert!(
            (got as f64 - want).abs() <= tol * (1.0 + want.abs()),
            "{what}: got {got}, want {want}"
        );
    };
    for &i in &[0usize, 1, 517, 1098, 1099] {
        for c in [0usize, 63, 127] {
            close(&format!("y[{i}, {c}]"), y[i * d + c], o(i, c), 1e-4);
            let dq: f64 = (0..n)
                .map(|j| scale * p[i][j] * (dp(i, j) - delta[i]) * at(j, 1, c))
                .sum();
            let dk: f64 = (0..n)
                .map(|r| scale * p[r][i] * (dp(r, i) - delta[r]) * at(r, 0, c))
                .sum();
            let dv: f64 = (0..n).map(|r| p[r][i] * dy[r * d + c] as f64).sum();
            close(&format!("dq[{i}, {c}]"), dx[i * 3 * d + c], dq, 1e-3);
            close(&format!("dk[{i}, {c}]"), dx[i * 3 * d + d + c], dk, 1e-3);
            close(
                &format!("dv[{i}, {c}]"),
                dx[i * 3 * d + 2 * d + c],
                dv,
                1e-3,
            );
        }
    }
}
