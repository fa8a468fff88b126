//! Fixed seed-model geometries for the conv/pool/shift ops, run on every test run (the generated
//! property tests in ops.rs draw them only by chance): strides and paddings of UniFormer, MViT,
//! TSM and the stems, T = 1, and a weight gradient reducing over more than 65,535 positions.

use tubelet::testing::{forward_case, gpu_backward_case};
use tubelet::{gpu_or_skip, Tensor};

/// Forward and GPU backward of every case against the reference, with the op's own tolerances.
macro_rules! seed_shapes {
    ($name:ident, $op:ident) => {
        #[test]
        fn $name() {
            let Some(_) = gpu_or_skip() else { return };
            let spec = tubelet::ops::$op::test_spec();
            for case in tubelet::ops::$op::seed_cases() {
                forward_case(&case, spec.forward_tol).unwrap_or_else(|e| panic!("{e}"));
                gpu_backward_case(&case, spec.backward_tol).unwrap_or_else(|e| panic!("{e}"));
            }
        }
    };
}

seed_shapes!(depthwise_conv3d_seed_shapes, depthwise_conv3d);
seed_shapes!(conv3d_seed_shapes, conv3d);
seed_shapes!(pool3d_seed_shapes, pool3d);
seed_shapes!(temporal_shift_seed_shapes, temporal_shift);
seed_shapes!(temporal_shift_online_seed_shapes, temporal_shift_online);
seed_shapes!(layer_norm_channels_seed_shapes, layer_norm_channels);

#[test]
fn depthwise_conv3d_errors_name_shapes_and_parameters() {
    let Some(_) = gpu_or_skip() else { return };
    let x = Tensor::zeros(&[1, 4, 2, 5, 5]);
    let w = Tensor::zeros(&[3, 1, 3, 3, 3]);
    let err = x
        .try_depthwise_conv3d(&w, None, [1, 1, 1], [1, 1, 1])
        .expect_err("error")
        .to_string();
    assert!(
        err.contains("depthwise_conv3d")
            && err.contains("[1, 4, 2, 5, 5]")
            && err.contains("[3, 1, 3, 3, 3]"),
        "{err}"
    );
    let w = Tensor::zeros(&[4, 1, 3, 3, 3]);
    let err = x
        .try_depthwise_conv3d(&w, None, [1, 1, 1], [0, 0, 0])
        .expect_err("error")
        .to_string();
    assert!(
        err.contains("kernel 3") && err.contains("padding [0, 0, 0]"),
        "{err}"
    );
    let err = x
        .try_depthwise_conv3d(&w, None, [0, 1, 1], [1, 1, 1])
        .expect_err("error")
        .to_string();
    assert!(err.contains("stride [0, 1, 1]"), "{err}");
    let b = Tensor::zeros(&[5]);
    let err = x
        .try_depthwise_conv3d(&w, Some(&b), [1, 1, 1], [1, 1, 1])
        .expect_err("error")
        .to_string();
    assert!(err.contains("bias Some([5])"), "{err}");
    // the kernels' per-lane register blocks bound KH·KW and SH·SW
    let w = Tensor::zeros(&[4, 1, 1, 13, 13]);
    let err = x
        .try_depthwise_conv3d(&w, None, [1, 1, 1], [0, 6, 6])
        .expect_err("error")
        .to_string();
    assert!(
        err.contains("KH·KW = 125") && err.contains("[4, 1, 1, 13, 13]"),
        "{err}"
    );
    let w = Tensor::zeros(&[4, 1, 1, 1, 1]);
    let err = x
        .try_depthwise_conv3d(&w, None, [1, 16, 8], [0, 0, 0])
        .expect_err("error")
        .to_string();
    assert!(
        err.contains("SH·SW = 64") && err.contains("stride [1, 16, 8]"),
        "{err}"
    );
}

#[test]
fn conv3d_errors_name_shapes_and_parameters() {
    let Some(_) = gpu_or_skip() else { return };
    let x = Tensor::zeros(&[1, 6, 2, 5, 5]);
    let w = Tensor::zeros(&[4, 3, 1, 3, 3]);
    let err = x
        .try_conv3d(&w, None, [1, 1, 1], [0, 1, 1], 4)
        .expect_err("error")
        .to_string();
    assert!(
        err.contains("conv3d") && err.contains("groups 4") && err.contains("[4, 3, 1, 3, 3]"),
        "{err}"
    );
    let err = x
        .try_conv3d(&w, None, [1, 1, 1], [0, 1, 1], 1)
        .expect_err("error")
        .to_string();
    assert!(err.contains("CIN/groups = 6"), "{err}");
    let err = x
        .try_conv3d(&w, None, [1, 9, 1], [0, 0, 0], 2)
        .map(|y| y.shape().to_vec());
    assert_eq!(err.unwrap(), vec![1, 4, 2, 1, 3]);
    let x2 = Tensor::zeros(&[1, 3, 4, 4]);
    let w2 = Tensor::zeros(&[2, 3, 7, 7]);
    let err = x2
        .try_conv2d(&w2, None, [2, 2], [1, 1], 1)
        .expect_err("error")
        .to_string();
    assert!(
        err.contains("conv2d") && err.contains("kernel 7") && err.contains("padding [1, 1]"),
        "{err}"
    );
}

#[test]
fn pool3d_errors_name_shapes_and_parameters() {
    let Some(_) = gpu_or_skip() else { return };
    let x = Tensor::zeros(&[1, 2, 3, 5, 5]);
    let err = x
        .try_max_pool3d([1, 3, 3], [1, 2, 2], [0, 2, 1])
        .expect_err("error")
        .to_string();
    assert!(
        err.contains("max_pool3d")
            && err.contains("[1, 2, 3, 5, 5]")
            && err.contains("padding [0, 2, 1]"),
        "{err}"
    );
    let err = x
        .try_avg_pool3d([5, 1, 1], [1, 1, 1], [0, 0, 0])
        .expect_err("error")
        .to_string();
    assert!(
        err.contains("avg_pool3d") && err.contains("kernel 5"),
        "{err}"
    );
    let err = x
        .try_max_pool2d([3, 3], [2, 2], [1, 1])
        .expect_err("error")
        .to_string();
    assert!(
        err.contains("max_pool2d") && err.contains("rank 4"),
        "{err}"
    );
}

#[test]
fn max_pool_gradient_goes_to_the_first_maximum() {
    let Some(_) = gpu_or_skip() else { return };
    // One window holding a tie: PyTorch routes the whole gradient to the first maximum.
    let x = Tensor::from_slice(&[1.0, 3.0, 3.0, 2.0], &[1, 1, 1, 2, 2])
        .unwrap()
        .param();
    let y = x.max_pool3d([1, 2, 2], [1, 2, 2], [0, 0, 0]);
    let g = y
        .backward_with(Tensor::full(&[1, 1, 1, 1, 1], 5.0))
        .unwrap();
    assert_eq!(
        g.get(&x).unwrap().to_vec().unwrap(),
        vec![0.0, 5.0, 0.0, 0.0]
    );
}

#[test]
fn temporal_shift_matches_the_official_slices() {
    let Some(_) = gpu_or_skip() else { return };
    // 1 video, T = 3, C = 8, fold_div 4 (fold 2), H = W = 1: x[t, c] = 10·t + c.
    let x: Vec<f32> = (0..3)
        .flat_map(|t| (0..8).map(move |c| (10 * t + c) as f32))
        .collect();
    let y = Tensor::from_slice(&x, &[3, 8, 1, 1])
        .unwrap()
        .temporal_shift(3, 4)
        .to_vec()
        .unwrap();
    #[rustfmt::skip]
    let want = [
        10.0, 11.0, 0.0, 0.0, 4.0, 5.0, 6.0, 7.0,     // t = 0: [0,2) from t+1, [2,4) zero
        20.0, 21.0, 2.0, 3.0, 14.0, 15.0, 16.0, 17.0, // t = 1
        0.0, 0.0, 12.0, 13.0, 24.0, 25.0, 26.0, 27.0, // t = 2: [0,2) zero
    ];
    assert_eq!(y, want);
    let err = Tensor::zeros(&[5, 8, 1, 1])
        .try_temporal_shift(2, 8)
        .expect_err("error")
        .to_string();
    assert!(
        err.contains("temporal_shift")
            && err.contains("[5, 8, 1, 1]")
            && err.contains("n_segment 2"),
        "{err}"
    );
}

/// Mean over `axes` of x and its gradient dx = dy / count, both in f64 (the oracle of the
/// global-average-pool tests below).
fn mean_reference(
    x: &tubelet::CpuTensor,
    axes: &[usize],
    dy_keep: &tubelet::CpuTensor,
) -> (tubelet::CpuTensor, tubelet::CpuTensor) {
    let keep: Vec<usize> = (0..x.shape.len())
        .map(|d| if axes.contains(&d) { 1 } else { x.shape[d] })
        .collect();
    let count: usize = axes.iter().map(|&a| x.shape[a]).product();
    let y = x.sum_to(&keep).map(|v| v / count as f64);
    let dx = tubelet::CpuTensor::from_fn(&x.shape, |i| dy_keep.at_broadcast(i) / count as f64);
    (y, dx)
}

/// `mean(axes, keepdim)` forward and backward at the seed heads' shapes (reduced channels).
fn check_global_average_pool(shape: &[usize], axes: &[isize], keepdim: bool, seed: u64) {
    use tubelet::testing::{assert_close, Tol};
    let mut rng = tubelet::Rng::new(seed);
    let x = tubelet::CpuTensor::uniform(shape, -2.0, 2.0, &mut rng).map(|v| v as f32 as f64);
    let ax: Vec<usize> = axes.iter().map(|&a| a as usize).collect();
    let keep: Vec<usize> = (0..shape.len())
        .map(|d| if ax.contains(&d) { 1 } else { shape[d] })
        .collect();
    let dy_keep = tubelet::CpuTensor::uniform(&keep, -1.0, 1.0, &mut rng).map(|v| v as f32 as f64);
    let (y_ref, dx_ref) = mean_reference(&x, &ax, &dy_keep);
    let xt = Tensor::from_cpu(&x).unwrap().param();
    let y = xt.mean(axes, keepdim);
    let out: Vec<usize> = if keepdim {
        keep.clone()
    } else {
        (0..shape.len())
            .filter(|d| !ax.contains(d))
            .map(|d| shape[d])
            .collect()
    };
    assert_eq!(
        y.shape(),
        out.as_slice(),
        "mean{shape:?} over {axes:?} keepdim {keepdim}"
    );
    let grads = y
        .backward_with(Tensor::from_cpu(&dy_keep.reshape(&out)).unwrap())
        .unwrap();
    // f32 sums of up to 7e4 terms |x| ≤ 2 (chunked tree), divided by the count.
    let tol = Tol::new(1e-5, 1e-5, "f32 chunked sums of ≤ 7e4 terms, / count");
    assert_close(
        &format!("mean{shape:?} over {axes:?}"),
        &y,
        &y_ref.reshape(&out),
        tol,
    );
    assert_close(
        &format!("d mean{shape:?} over {axes:?}"),
        grads.get(&xt).unwrap(),
        &dx_ref,
        Tol::new(0.0, 1e-6, "dy / count, one rounding"),
    );
}

#[test]
fn global_average_pool_at_the_seed_heads_matches_reference() {
    let Some(_) = gpu_or_skip() else { return };
    // Video Swin I3DHead: AdaptiveAvgPool3d(1) on (B, 8C, T/2, H/32, W/32) = (B, 768, 16, 7, 7).
    check_global_average_pool(&[2, 24, 16, 7, 7], &[2, 3, 4], true, 1);
    // UniFormer head: norm, then x.flatten(2).mean(-1) on (B, 512, 8, 7, 7) → (B, 512).
    check_global_average_pool(&[2, 32, 8, 7, 7], &[2, 3, 4], false, 2);
    // TSM-R50: AdaptiveAvgPool2d(1) on (B·T, 2048, 7, 7), then the segment consensus mean over T.
    check_global_average_pool(&[16, 40, 7, 7], &[2, 3], true, 3);
    check_global_average_pool(&[2, 8, 40], &[1], false, 4);
    // Odd T and H·W, and 4·130·131 = 68,120 > 65,535 positions per channel (chunked sums).
    check_global_average_pool(&[1, 3, 4, 130, 131], &[2, 3, 4], true, 5);
    check_global_average_pool(&[3, 5, 3, 5, 7], &[2, 3, 4], false, 6);
}

#[test]
fn drop_path_drops_whole_samples_with_probability_p() {
    let Some(_) = gpu_or_skip() else { return };
    let (b, p) = (2000, 0.3f32);
    let x = Tensor::rand_uniform(&[b, 3, 5], 0.5, 1.5, 7).unwrap();
    let xv = x.to_vec().unwrap();
    let y = x.drop_path(p, 1234).to_vec().unwrap();
    let scale = 1.0 / (1.0 - p);
    let mut kept = 0;
    for s in 0..b {
        let row = &y[s * 15..(s + 1) * 15];
        if row.iter().all(|&v| v == 0.0) {
            continue;
        }
        kept += 1;
        for (j, &v) in row.iter().enumerate() {
            assert!(
                (v - xv[s * 15 + j] * scale).abs() <= 1e-6 * v.abs(),
                "sample {s}: a kept sample is x/(1 − p)"
            );
        }
    }
    // Binomial(2000, 0.7): mean 1400, sd 20.5; ±5 sd.
    assert!(
        (1297..=1503).contains(&kept),
        "kept {kept} of {b} samples at p = {p}"
    );
    // Deterministic in the seed; another seed gives another mask.
    assert_eq!(x.drop_path(p, 1234).to_vec().unwrap(), y);
    assert_ne!(x.drop_path(p, 1235).to_vec().unwrap(), y);
    // p = 0 and eval are the identity (the same tensor, no kernel).
    assert!(x.drop_path(0.0, 1).same_storage(&x));
    assert!(x.drop_path_if(false, 0.5, 1).same_storage(&x));
    let err = x.try_drop_path(1.0, 1).expect_err("error").to_string();
    assert!(
        err.contains("drop_path") && err.contains("p = 1") && err.contains("[2000, 3, 5]"),
        "{err}"
    );
}

#[test]
fn temporal_shift_online_matches_the_online_demo_frame_by_frame() {
    let Some(_) = gpu_or_skip() else { return };
    // 3 frames of (N, C, H, W) = (1, 16, 2, 1), fold_div 8 (fold 2): frame t has x[c, s] = 100·t + 10·c + s.
    let frame = |t: usize| -> Vec<f32> {
        (0..16)
            .flat_map(|c| (0..2).map(move |s| (100 * t + 10 * c + s) as f32))
            .collect()
    };
    let mut cache: Option<Tensor> = None;
    for t in 0..3 {
        let x = Tensor::from_slice(&frame(t), &[1, 16, 2, 1]).unwrap();
        let (y, next) = x.temporal_shift_online(cache.as_ref(), 8);
        let y = y.to_vec().unwrap();
        let mut want = frame(t);
        for e in 0..4 {
            // channels 0..2 (4 elements) from the previous frame, zeros at t = 0
            want[e] = if t == 0 { 0.0 } else { frame(t - 1)[e] };
        }
        assert_eq!(y, want, "frame {t}");
        assert_eq!(
            next.to_vec().unwrap(),
            frame(t)[..4].to_vec(),
            "cache after frame {t}"
        );
        cache = Some(next);
    }
    // Gradients: loss = Σ y·r1 + Σ new_cache·r2 → dx = r1 on channels ≥ fold, r2 on channels < fold;
    // dcache = r1 on channels < fold.
    let x = Tensor::rand_uniform(&[2, 16, 3, 3], -1.0, 1.0, 1)
        .unwrap()
        .param();
    let c0 = Tensor::rand_uniform(&[2, 2, 3, 3], -1.0, 1.0, 2)
        .unwrap()
        .param();
    let r1 = Tensor::rand_uniform(&[2, 16, 3, 3], -1.0, 1.0, 3).unwrap();
    let r2 = Tensor::rand_uniform(&[2, 2, 3, 3], -1.0, 1.0, 4).unwrap();
    let (y, next) = x.temporal_shift_online(Some(&c0), 8);
    let loss = y.mul(&r1).sum_all().add(&next.mul(&r2).sum_all());
    let g = loss.backward().unwrap();
    let (r1v, r2v) = (r1.to_vec().unwrap(), r2.to_vec().unwrap());
    let dx = g.get(&x).unwrap().to_vec().unwrap();
    let dc = g.get(&c0).unwrap().to_vec().unwrap();
    for i in 0..dx.len() {
        let (n, c, s) = (i / 144, i / 9 % 16, i % 9);
        let want = if c < 2 {
            r2v[(n * 2 + c) * 9 + s]
        } else {
            r1v[i]
        };
        assert!((dx[i] - want).abs() < 1e-6, "dx at {i}");
        if c < 2 {
            assert!(
                (dc[(n * 2 + c) * 9 + s] - r1v[i]).abs() < 1e-6,
                "dcache at {i}"
            );
        }
    }
    let err = x
        .try_temporal_shift_online(Some(&Tensor::zeros(&[2, 3, 3, 3])), 8)
        .expect_err("error")
        .to_string();
    assert!(
        err.contains("temporal_shift_online")
            && err.contains("[2, 3, 3, 3]")
            && err.contains("fold_div 8"),
        "{err}"
    );
}

#[test]
fn layer_norm_channels_equals_permute_layer_norm_permute() {
    use tubelet::testing::{assert_close, Tol};
    let Some(_) = gpu_or_skip() else { return };
    // UniFormer's patch embed: norm(x.flatten(2).transpose(1, 2)), reshaped back to (B, C, T, H, W).
    let x = Tensor::rand_uniform(&[2, 12, 3, 5, 7], -2.0, 2.0, 1).unwrap();
    let w = Tensor::rand_uniform(&[12], -1.5, 1.5, 2).unwrap();
    let b = Tensor::rand_uniform(&[12], -1.0, 1.0, 3).unwrap();
    let dy = Tensor::rand_uniform(&[2, 12, 3, 5, 7], -1.0, 1.0, 4).unwrap();
    let run = |fused: bool| {
        let (xp, wp, bp) = (x.param(), w.param(), b.param());
        let y = if fused {
            xp.layer_norm_channels(&wp, &bp, 1e-5)
        } else {
            xp.permute(&[0, 2, 3, 4, 1])
                .layer_norm(&wp, &bp, 1e-5)
                .permute(&[0, 4, 1, 2, 3])
        };
        let g = y.backward_with(dy.clone()).unwrap();
        let out = [
            &y,
            g.get(&xp).unwrap(),
            g.get(&wp).unwrap(),
            g.get(&bp).unwrap(),
        ]
        .map(|t| t.to_cpu().unwrap());
        out
    };
    let (fused, composite) = (run(true), run(false));
    // Two f32 implementations of the same formulas (different summation orders).
    let tol = Tol::new(
        1e-4,
        1e-4,
        "two f32 orders of the same sums over 12 channels / 210 columns",
    );
    for (k, name) in ["y", "dx", "dweight", "dbias"].iter().enumerate() {
        let got = Tensor::from_cpu(&fused[k]).unwrap();
        assert_close(
            &format!("layer_norm_channels {name}"),
            &got,
            &composite[k],
            tol,
        );
    }
    let err = x
        .try_layer_norm_channels(&Tensor::ones(&[5]), &b, 1e-5)
        .expect_err("error")
        .to_string();
    assert!(
        err.contains("layer_norm_channels")
            && err.contains("[5]")
            && err.contains("[2, 12, 3, 5, 7]"),
        "{err}"
    );
}
