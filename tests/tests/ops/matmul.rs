//! Matmul beyond the generated property tests (which draw every variant too): the shapes that
//! break kernels silently on lavapipe (K past the 65,535-trip loop limit, launches past 65,535
//! workgroups), the shipped-variant rule, the API and its errors.

use tubelet::ops::matmul::{matmul_variant, shipped_variant, Matmul};
use tubelet::ops::Op;
use tubelet::testing::{assert_close, Tol};
use tubelet::{gpu_or_skip, CpuTensor, Gpu, Rng, Tensor};

fn variants(gpu: &Gpu) -> Vec<u32> {
    if shipped_variant(gpu) == 4 {
        vec![1, 2, 3, 4]
    } else {
        vec![1, 2]
    }
}

/// Forward and both gradients of `variant` against the f64 reference.
fn check(a_shape: &[usize], b_shape: &[usize], ta: bool, tb: bool, variant: u32, tol: Tol) {
    let mut rng =
        Rng::new(a_shape.iter().chain(b_shape).product::<usize>() as u64 + variant as u64);
    let round = |t: CpuTensor| t.map(|v| v as f32 as f64);
    let a = round(CpuTensor::uniform(a_shape, -1.0, 1.0, &mut rng));
    let b = round(CpuTensor::uniform(b_shape, -1.0, 1.0, &mut rng));
    let op = Matmul {
        trans_a: ta,
        trans_b: tb,
        variant,
    };
    let want = op.reference(&[&a, &b]);
    let dy = round(CpuTensor::uniform(&want.shape, -1.0, 1.0, &mut rng));
    let grads = op.reference_backward(&[&a, &b], &dy);
    let what = format!("v{variant} a {a_shape:?} (T {ta}) b {b_shape:?} (T {tb})");
    let xa = Tensor::from_cpu(&a).unwrap().param();
    let xb = Tensor::from_cpu(&b).unwrap().param();
    let y = matmul_variant(&xa, &xb, ta, tb, variant).unwrap();
    assert_close(&format!("{what} forward"), &y, &want, tol);
    let g = y.backward_with(Tensor::from_cpu(&dy).unwrap()).unwrap();
    assert_close(
        &format!("{what} da"),
        g.get(&xa).unwrap(),
        grads[0].as_ref().unwrap(),
        tol,
    );
    assert_close(
        &format!("{what} db"),
        g.get(&xb).unwrap(),
        grads[1].as_ref().unwrap(),
        tol,
    );
}

#[test]
fn every_variant_reduces_k_past_the_lavapipe_loop_limit() {
    let Some(gpu) = gpu_or_skip() else { return };
    // K = 70,001 > 65,535: a kernel looping over all of K in one invocation would silently
    // drop ~4,500 terms (an error of ~20 on sums of size ~90); K is split into chunks instead.
    // f32 sums of 70,001 terms in [-1, 1]: rounding ~ √K·ulp·|partial sums| ≈ 1e-3.
    let tol = Tol::new(1e-2, 1e-4, "f32 dot products of 70,001 terms in [-1, 1]");
    for v in variants(gpu) {
        check(&[3, 70_001], &[70_001, 2], false, false, v, tol);
        check(&[70_001, 2], &[5, 70_001], true, true, v, tol);
    }
}

#[test]
fn v4_every_tile_remainder_forward_and_backward() {
    let Some(gpu) = gpu_or_skip() else { return };
    if shipped_variant(gpu) != 4 {
        return; // v4 needs subgroups; the shipped-variant test covers the error
    }
    // v4 tiles Y in 32×32 (lane l: rows 4l..4l+3, cols 4l..4l+3) and K in blocks of 4: M and N
    // at 1, a lane's remainder (3, 5), the tile remainders (31, 33) and past two tiles (65);
    // K at 1..5 and 9 (every remainder of the block of 4); every transpose pair, so that each
    // product of the backward (flags flipped) meets the same remainders.
    // f32 sums of ≤ 65 products in [-1, 1].
    let tol = Tol::new(1e-5, 1e-5, "f32 sums of ≤ 65 products in [-1, 1]");
    let mut seen = 0;
    for (i, &m) in [1usize, 3, 31, 33, 65].iter().enumerate() {
        for (j, &n) in [1usize, 5, 31, 33, 65].iter().enumerate() {
            // One K and one transpose pair per (M, N), cycling, so every K and pair is met
            // at several (M, N) without 5·5·6·4 products.
            let k = [1usize, 2, 3, 4, 5, 9][(i + 2 * j) % 6];
            let (ta, tb) =
                [(false, false), (false, true), (true, false), (true, true)][(i + j) % 4];
            let a = if ta { [k, m] } else { [m, k] };
            let b = if tb { [n, k] } else { [k, n] };
            check(&a, &b, ta, tb, 4, tol);
            seen += 1;
        }
    }
    // A batched, broadcast case: (2, 1, M, K) · (3, K, N) with tile remainders.
    check(&[2, 1, 33, 7], &[3, 7, 31], false, false, 4, tol);
    assert_eq!(seen, 25);
}

#[test]
fn every_variant_folds_launches_past_65535_workgroups() {
    let Some(gpu) = gpu_or_skip() else { return };
    // 66,000 products of (9, 2)·(2, 8): v1 launches 4.75M / 64 = 74,250 workgroups, v2 and v3
    // one per matrix (66,000); all past 65,535 on one axis, so gpu::grid folds them into y.
    let tol = Tol::new(1e-5, 1e-5, "dot products of 2 terms");
    for v in variants(gpu) {
        check(&[66_000, 9, 2], &[66_000, 2, 8], false, false, v, tol);
    }
}

#[test]
fn shipped_variant_is_v4_with_subgroups() {
    let Some(gpu) = gpu_or_skip() else { return };
    let want = if gpu.has_subgroups() && gpu.info.subgroup_min_size >= 8 {
        4
    } else {
        2
    };
    assert_eq!(
        shipped_variant(gpu),
        want,
        "{} (subgroups {})",
        gpu.info.name,
        gpu.has_subgroups()
    );
    if want == 2 {
        let a = Tensor::zeros(&[2, 2]);
        for v in [3, 4] {
            let err = matmul_variant(&a, &a, false, false, v)
                .expect_err("v3 and v4 without subgroups are errors");
            assert!(err.to_string().contains("SUBGROUP"), "{err}");
        }
    }
}

#[test]
fn matmul_and_matmul_nt_on_a_small_example() {
    let Some(_) = gpu_or_skip() else { return };
    let exact = Tol::new(1e-6, 1e-6, "small integer products");
    let a = Tensor::from_slice(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    let b = Tensor::from_slice(&[1.0, 0.0, -1.0, 2.0, 0.5, 1.0], &[3, 2]).unwrap();
    // [[1 2 3] [4 5 6]] · [[1 0] [-1 2] [0.5 1]] = [[0.5 7] [2 16]]
    assert_close(
        "a @ b",
        &a.matmul(&b),
        &CpuTensor::new(vec![2, 2], vec![0.5, 7.0, 2.0, 16.0]),
        exact,
    );
    // a @ aᵀ = [[14 32] [32 77]]
    assert_close(
        "a @ aᵀ",
        &a.matmul_nt(&a),
        &CpuTensor::new(vec![2, 2], vec![14.0, 32.0, 32.0, 77.0]),
        exact,
    );
}

#[test]
fn shape_errors_name_both_shapes() {
    let Some(_) = gpu_or_skip() else { return };
    let err = |a: &[usize], b: &[usize], nt: bool| {
        let (a, b) = (Tensor::zeros(a), Tensor::zeros(b));
        let r = if nt {
            a.try_matmul_nt(&b)
        } else {
            a.try_matmul(&b)
        };
        r.expect_err("error").to_string()
    };
    let e = err(&[2, 3], &[4, 5], false);
    assert!(
        e.contains("[2, 3]") && e.contains("[4, 5]") && e.contains("inner"),
        "{e}"
    );
    let e = err(&[2, 3], &[4, 5], true);
    assert!(
        e.contains("[2, 3]") && e.contains("[4, 5]") && e.contains("transposed"),
        "{e}"
    );
    let e = err(&[2, 4, 3], &[5, 3, 4], false);
    assert!(
        e.contains("[2, 4, 3]") && e.contains("[5, 3, 4]") && e.contains("batch"),
        "{e}"
    );
    let e = err(&[3], &[3, 4], false);
    assert!(
        e.contains("[3]") && e.contains("[3, 4]") && e.contains("rank"),
        "{e}"
    );
    let r = std::panic::catch_unwind(|| Tensor::zeros(&[2, 3]).matmul(&Tensor::zeros(&[4, 5])));
    let msg = r
        .err()
        .and_then(|p| p.downcast::<String>().ok())
        .expect("panic with a message");
    assert!(msg.contains("[2, 3]") && msg.contains("[4, 5]"), "{msg}");
}
