//! BatchNorm's running statistics (the op's generated tests cover y and the gradients in both
//! modes): the in-place update against the f64 reference, and the argument errors.

use tubelet::ops::batch_norm::reference_running_update;
use tubelet::testing::{assert_close, Tol};
use tubelet::{gpu_or_skip, CpuTensor, Rng, Tensor};

const TOL: Tol = Tol::new(
    1e-5,
    1e-5,
    "f32 channel mean and variance over ≤ 1e5 elements",
);

#[test]
fn batch_norm_running_stats_update_matches_reference() {
    let Some(_) = gpu_or_skip() else { return };
    let mut rng = Rng::new(3);
    // BatchNorm2d (N, C, H, W) then BatchNorm3d (N, C, T, H, W) with > 65,535 values per channel.
    for shape in [vec![3, 5, 4, 7], vec![2, 3, 5, 100, 101]] {
        let c = shape[1];
        let w = Tensor::ones(&[c]).param();
        let b = Tensor::zeros(&[c]).param();
        let mut rm_ref = CpuTensor::uniform(&[c], -1.0, 1.0, &mut rng).map(|v| v as f32 as f64);
        let mut rv_ref = CpuTensor::uniform(&[c], 0.5, 2.0, &mut rng).map(|v| v as f32 as f64);
        let rm = Tensor::from_cpu(&rm_ref).unwrap();
        let rv = Tensor::from_cpu(&rv_ref).unwrap();
        // Two training steps: the momentum compounds.
        for step in 0..2 {
            let x_cpu = CpuTensor::uniform(&shape, -1.0, 3.0, &mut rng).map(|v| v as f32 as f64);
            let x = Tensor::from_cpu(&x_cpu).unwrap();
            let _ = x.batch_norm(&w, &b, &rm, &rv, true, 1e-5);
            (rm_ref, rv_ref) = reference_running_update(&x_cpu, &rm_ref, &rv_ref, 0.1);
            assert_close(
                &format!("running_mean {shape:?} step {step}"),
                &rm,
                &rm_ref,
                TOL,
            );
            assert_close(
                &format!("running_var {shape:?} step {step}"),
                &rv,
                &rv_ref,
                TOL,
            );
        }
        // Eval mode leaves them alone.
        let x = Tensor::randn(&shape, 0.0, 1.0, 9).unwrap();
        let _ = x.batch_norm(&w, &b, &rm, &rv, false, 1e-5);
        assert_close("running_mean after eval", &rm, &rm_ref, TOL);
        assert_close("running_var after eval", &rv, &rv_ref, TOL);
    }
}

#[test]
fn batch_norm_rejects_bad_arguments() {
    let Some(_) = gpu_or_skip() else { return };
    let (w, b, rm, rv) = (
        Tensor::ones(&[4]),
        Tensor::zeros(&[4]),
        Tensor::zeros(&[4]),
        Tensor::ones(&[4]),
    );
    // One value per channel cannot give batch statistics (PyTorch raises too).
    let err = Tensor::zeros(&[1, 4, 1, 1])
        .try_batch_norm(&w, &b, &rm, &rv, true, 1e-5)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("more than 1 value per channel") && err.contains("[1, 4, 1, 1]"),
        "{err}"
    );
    // ... but eval mode can.
    Tensor::zeros(&[1, 4, 1, 1])
        .try_batch_norm(&w, &b, &rm, &rv, false, 1e-5)
        .unwrap();
    let err = Tensor::zeros(&[2, 5, 3])
        .try_batch_norm(&w, &b, &rm, &rv, true, 1e-5)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("weight [4]") && err.contains("[2, 5, 3]"),
        "{err}"
    );
    let err = Tensor::zeros(&[7])
        .try_batch_norm(&w, &b, &rm, &rv, true, 1e-5)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rank ≥ 2"), "{err}");
}
