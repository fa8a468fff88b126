//! LayerNorm beyond what the generated property tests reach: more than 65,535 rows through the
//! public API with all three gradients, and the argument errors.

use tubelet::ops::layer_norm::LayerNorm;
use tubelet::ops::Op;
use tubelet::testing::{assert_close, Tol};
use tubelet::{gpu_or_skip, CpuTensor, Rng, Tensor};

fn f32_uniform(shape: &[usize], lo: f64, hi: f64, rng: &mut Rng) -> CpuTensor {
    CpuTensor::uniform(shape, lo, hi, rng).map(|v| v as f32 as f64)
}

#[test]
fn layer_norm_over_more_than_65535_rows_matches_reference() {
    let Some(_) = gpu_or_skip() else { return };
    // (B, T·H·W, C) = (2, 33,001, 9): 66,002 rows, so the row grid folds into 2-D and a
    // column reduction looping over every row would pass lavapipe's 65,535-trip loop limit.
    let shape = [2, 33_001, 9];
    let eps = 1e-5;
    let mut rng = Rng::new(2024);
    let x = f32_uniform(&shape, -2.0, 2.0, &mut rng);
    let w = f32_uniform(&[9], -1.5, 1.5, &mut rng);
    let b = f32_uniform(&[9], -1.0, 1.0, &mut rng);
    let r = f32_uniform(&shape, -1.0, 1.0, &mut rng); // random upstream gradient

    let op = LayerNorm::new(eps);
    let y_ref = op.reference(&[&x, &w, &b]);
    let g_ref = op.reference_backward(&[&x, &w, &b], &r);

    let xt = Tensor::from_cpu(&x).unwrap().param();
    let wt = Tensor::from_cpu(&w).unwrap().param();
    let bt = Tensor::from_cpu(&b).unwrap().param();
    let y = xt.layer_norm(&wt, &bt, eps);
    let grads = y.backward_with(Tensor::from_cpu(&r).unwrap()).unwrap();

    let row_tol = Tol::new(
        1e-5,
        1e-5,
        "f32 row statistics of 9 terms, scaled by rstd·|w|",
    );
    assert_close("layer_norm y", &y, &y_ref, row_tol);
    assert_close(
        "layer_norm dx",
        grads.get(&xt).unwrap(),
        g_ref[0].as_ref().unwrap(),
        row_tol,
    );
    // Column sums of 66,002 terms |dy·x̂| ≲ 2 (Σ|·| ≈ 3e4): 64-row chunks in sequence, then a
    // tree over 1,032 partials; f32 error ≈ 1e-7 · 64 · |chunk sum| plus the tree's share.
    let col_tol = Tol::new(2e-3, 1e-5, "f32 column sums of 66,002 terms");
    assert_close(
        "layer_norm dweight",
        grads.get(&wt).unwrap(),
        g_ref[1].as_ref().unwrap(),
        col_tol,
    );
    assert_close(
        "layer_norm dbias",
        grads.get(&bt).unwrap(),
        g_ref[2].as_ref().unwrap(),
        col_tol,
    );
}

#[test]
fn layer_norm_errors_name_the_shapes() {
    let Some(_) = gpu_or_skip() else { return };
    let x = Tensor::zeros(&[2, 3]);
    let err = x
        .try_layer_norm(&Tensor::ones(&[4]), &Tensor::zeros(&[3]), 1e-5)
        .expect_err("error")
        .to_string();
    assert!(
        err.contains("layer_norm") && err.contains("[2, 3]") && err.contains("[4]"),
        "{err}"
    );
    let err = x
        .try_layer_norm(&Tensor::ones(&[3]), &Tensor::zeros(&[1, 3]), 1e-5)
        .expect_err("error")
        .to_string();
    assert!(err.contains("[1, 3]") && err.contains("[2, 3]"), "{err}");
    let err = x
        .try_layer_norm(&Tensor::ones(&[3]), &Tensor::zeros(&[3]), -1.0)
        .expect_err("error")
        .to_string();
    assert!(err.contains("eps") && err.contains("-1"), "{err}");
    let err = Tensor::zeros(&[])
        .try_layer_norm(&Tensor::ones(&[1]), &Tensor::zeros(&[1]), 1e-5)
        .expect_err("error")
        .to_string();
    assert!(err.contains("[]"), "{err}");
}
