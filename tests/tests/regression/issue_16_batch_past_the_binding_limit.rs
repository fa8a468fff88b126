//! Issue 16: `tubelet train --batch 4096` failed on the 128 MiB binding limit without saying to
//! lower the batch. The device-limit error names the tensor, its size, the limit and how much
//! smaller a batch fits; from an op, it names the op and pass too. A size whose element count
//! overflows is an error, not a wrap-around or a panic.

use tubelet::{gpu_or_skip, Tensor};

#[test]
fn a_clip_batch_past_the_binding_limit_says_how_much_smaller_a_batch_fits() {
    let Some(gpu) = gpu_or_skip() else { return };
    let limit = gpu.limits.max_storage_buffer_binding_size as usize;
    // A batch of 8×32×32 RGB clips (the synthetic set's) three times the limit.
    let clip = 8 * 32 * 32 * 3;
    let b = 3 * limit / (4 * clip);
    let shape = [b, 8, 32, 32, 3];
    let err = Tensor::randn(&shape, 0.0, 1.0, 0).unwrap_err().to_string();
    assert!(err.contains(&format!("{shape:?}")), "{err}");
    assert!(
        err.contains("max_storage_buffer_binding_size")
            && err.contains("a batch at least 3.00× smaller fits"),
        "{err}"
    );
}

#[test]
fn an_op_output_past_the_limit_names_the_op() {
    let Some(gpu) = gpu_or_skip() else { return };
    let limit = gpu.limits.max_storage_buffer_binding_size as usize;
    // (n, 1) broadcast against (1, n): an (n, n) output far past the limit from small inputs.
    let n = ((limit / 4) as f64).sqrt() as usize * 2;
    let a = Tensor::zeros(&[n, 1]);
    let b = Tensor::zeros(&[1, n]);
    let err = a.try_add(&b).unwrap_err().to_string();
    assert!(
        err.starts_with("in binary forward: ") && err.contains(&format!("[{n}, {n}]")),
        "{err}"
    );
}

#[test]
fn an_element_count_that_overflows_is_an_error() {
    let Some(_) = gpu_or_skip() else { return };
    let shape = [usize::MAX / 2, 3];
    let err = Tensor::rand_uniform(&shape, 0.0, 1.0, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("{shape:?}")), "{err}");
    assert!(Tensor::empty(&shape).is_err());
}
