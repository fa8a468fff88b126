//! Tape behaviour: accumulation, no-grad, errors, and the launch-grid and pool plumbing.

use tubelet::testing::{assert_close, Tol};
use tubelet::{gpu_or_skip, no_grad, CpuTensor, Tensor};

const EXACT: Tol = Tol::new(1e-6, 1e-6, "small exact sums");

#[test]
fn tensor_used_twice_accumulates() {
    let Some(_) = gpu_or_skip() else { return };
    // y = x·x + 3x  =>  dy/dx = 2x + 3
    let x = Tensor::from_slice(&[1.0, -2.0, 0.5], &[3]).unwrap().param();
    let y = x.mul(&x).add(&x.mul_scalar(3.0)).sum_all();
    let g = y.backward().unwrap();
    assert_close(
        "d(x²+3x)/dx",
        g.get(&x).unwrap(),
        &CpuTensor::new(vec![3], vec![5.0, -1.0, 4.0]),
        EXACT,
    );
}

#[test]
fn no_grad_records_nothing() {
    let Some(_) = gpu_or_skip() else { return };
    let x = Tensor::ones(&[4]).param();
    let y = no_grad(|| x.exp().sum_all());
    assert!(!y.requires_grad());
    assert!(y.backward().unwrap().is_empty());
}

#[test]
fn backward_needs_a_scalar() {
    let Some(_) = gpu_or_skip() else { return };
    let x = Tensor::ones(&[2, 2]).param();
    let err = x.exp().backward().err().expect("error").to_string();
    assert!(err.contains("[2, 2]"), "{err}");
}

#[test]
fn shape_errors_name_the_shapes() {
    let Some(_) = gpu_or_skip() else { return };
    let a = Tensor::zeros(&[2, 3]);
    let b = Tensor::zeros(&[4, 3]);
    let err = a.try_add(&b).expect_err("error").to_string();
    assert!(err.contains("[2, 3]") && err.contains("[4, 3]"), "{err}");
    let err = Tensor::from_slice(&[1.0; 5], &[2, 3])
        .expect_err("error")
        .to_string();
    assert!(err.contains("[2, 3]"), "{err}");
}

#[test]
fn launches_above_65535_workgroups_fold_into_2d_grids() {
    let Some(_) = gpu_or_skip() else { return };
    // 256 · 65,535 = 16.8M elements per 1-D grid; go past it.
    let n = 256 * 65_535 + 1_000;
    let x = Tensor::full(&[n], 2.0);
    let y = x.add_scalar(1.0).sum_all().item().unwrap();
    assert_eq!(y, 3.0 * n as f32);
}

#[test]
fn pool_reuses_buffers() {
    let Some(gpu) = gpu_or_skip() else { return };
    let before = gpu.memory_in_use();
    {
        let _t = Tensor::zeros(&[1 << 16]);
        assert!(gpu.memory_in_use() >= before + 4 * (1 << 16));
    }
    let t = Tensor::zeros(&[1 << 16]);
    assert!(gpu.memory_pooled() < u64::MAX);
    drop(t);
}

#[test]
fn too_large_tensors_are_an_error_not_a_panic() {
    let Some(gpu) = gpu_or_skip() else { return };
    let limit = gpu.limits.max_storage_buffer_binding_size as usize;
    let err = Tensor::empty(&[limit / 4 + 1])
        .expect_err("error")
        .to_string();
    assert!(err.contains("max_storage_buffer_binding_size"), "{err}");
}

#[test]
fn many_dispatches_are_batched_into_few_submits() {
    let Some(gpu) = gpu_or_skip() else { return };
    let x = Tensor::ones(&[64]);
    let (d0, s0) = gpu.counters();
    let mut y = x.clone();
    for _ in 0..100 {
        y = y.add_scalar(1.0);
    }
    assert_eq!(y.to_vec().unwrap()[0], 101.0);
    let (d1, s1) = gpu.counters();
    assert!(d1 - d0 >= 100);
    // Other tests run concurrently and submit too; this thread alone needs one or two.
    assert!(s1 - s0 < 50, "{} submits for 100 dispatches", s1 - s0);
}
