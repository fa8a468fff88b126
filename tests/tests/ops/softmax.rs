//! Softmax and cross-entropy beyond the generated property tests: values known in closed form at
//! logits that overflow f32 without max subtraction, and the argument errors.

use tubelet::ops::softmax::MAX_ROW;
use tubelet::testing::{assert_close, Tol};
use tubelet::{gpu_or_skip, CpuTensor, Indices, Tensor};

const CLOSE: Tol = Tol::new(1e-6, 1e-6, "a few f32 roundings of values ≤ 1");

#[test]
fn softmax_of_huge_logits_is_finite() {
    let Some(_) = gpu_or_skip() else { return };
    // exp(1000) overflows f32; the max-subtracted softmax does not see it.
    let x = Tensor::from_slice(&[1000.0, 1000.0, -1000.0, 0.0, 0.0, 0.0], &[2, 3]).unwrap();
    let third = 1.0 / 3.0;
    let want = CpuTensor::new(vec![2, 3], vec![0.5, 0.5, 0.0, third, third, third]);
    assert_close("softmax", &x.softmax(), &want, CLOSE);
}

#[test]
fn softmax_errors_name_the_shape() {
    let Some(_) = gpu_or_skip() else { return };
    let err = Tensor::zeros(&[])
        .try_softmax()
        .expect_err("error")
        .to_string();
    assert!(err.contains("softmax") && err.contains("[]"), "{err}");
    let err = Tensor::empty(&[1, MAX_ROW + 1])
        .unwrap()
        .try_softmax()
        .expect_err("error")
        .to_string();
    assert!(err.contains(&format!("[1, {}]", MAX_ROW + 1)), "{err}");
}

#[test]
fn cross_entropy_of_known_logits_and_its_gradient() {
    let Some(_) = gpu_or_skip() else { return };
    // Row 0: logit 1000 on its label: loss 0, softmax (1, 0). Row 1: uniform: loss ln 2.
    let x = Tensor::from_slice(&[1000.0, 0.0, 0.0, 0.0], &[2, 2])
        .unwrap()
        .param();
    let labels = Indices::from_slice(&[0, 1]).unwrap();
    let loss = x.cross_entropy(&labels);
    assert_eq!(loss.shape(), &[] as &[usize]);
    let ln2 = std::f64::consts::LN_2;
    assert_close(
        "cross_entropy",
        &loss,
        &CpuTensor::new(vec![], vec![ln2 / 2.0]),
        CLOSE,
    );
    // d/dx = (softmax − onehot) / N = [(0, 0), (0.5, −0.5)] / 2
    let grads = loss.mul_scalar(3.0).backward().unwrap();
    let want = CpuTensor::new(vec![2, 2], vec![0.0, 0.0, 0.75, -0.75]);
    assert_close("d cross_entropy", grads.get(&x).unwrap(), &want, CLOSE);
}

#[test]
fn cross_entropy_errors_name_labels_and_shapes() {
    let Some(_) = gpu_or_skip() else { return };
    let labels = Indices::from_slice(&[0, 4, 7]).unwrap();
    let err = Tensor::zeros(&[3])
        .try_cross_entropy(&labels)
        .expect_err("error")
        .to_string();
    assert!(
        err.contains("cross_entropy") && err.contains("[3]") && err.contains("(N, C)"),
        "{err}"
    );
    let err = Tensor::zeros(&[2, 8])
        .try_cross_entropy(&labels)
        .expect_err("error")
        .to_string();
    assert!(err.contains("3 labels") && err.contains("[2, 8]"), "{err}");
    let err = Tensor::zeros(&[3, 5])
        .try_cross_entropy(&labels)
        .expect_err("error")
        .to_string();
    assert!(
        err.contains("label 7 at position 2") && err.contains("C = 5"),
        "{err}"
    );
}
