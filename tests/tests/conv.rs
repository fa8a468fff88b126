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

#[test]
fn depthwise_conv3d_errors_name_shapes_and_parameters() {
    let Some(_) = gpu_or_skip() else { return };
    let x = Tensor::zeros(&[1, 4, 2, 5, 5]);
    let w = Tensor::zeros(&[3, 1, 3, 3, 3]);
    let err = x.try_depthwise_conv3d(&w, None, [1, 1, 1], [1, 1, 1]).err().expect("error").to_string();
    assert!(err.contains("depthwise_conv3d") && err.contains("[1, 4, 2, 5, 5]") && err.contains("[3, 1, 3, 3, 3]"), "{err}");
    let w = Tensor::zeros(&[4, 1, 3, 3, 3]);
    let err = x.try_depthwise_conv3d(&w, None, [1, 1, 1], [0, 0, 0]).err().expect("error").to_string();
    assert!(err.contains("kernel 3") && err.contains("padding [0, 0, 0]"), "{err}");
    let err = x.try_depthwise_conv3d(&w, None, [0, 1, 1], [1, 1, 1]).err().expect("error").to_string();
    assert!(err.contains("stride [0, 1, 1]"), "{err}");
    let b = Tensor::zeros(&[5]);
    let err = x.try_depthwise_conv3d(&w, Some(&b), [1, 1, 1], [1, 1, 1]).err().expect("error").to_string();
    assert!(err.contains("bias Some([5])"), "{err}");
}

#[test]
fn conv3d_errors_name_shapes_and_parameters() {
    let Some(_) = gpu_or_skip() else { return };
    let x = Tensor::zeros(&[1, 6, 2, 5, 5]);
    let w = Tensor::zeros(&[4, 3, 1, 3, 3]);
    let err = x.try_conv3d(&w, None, [1, 1, 1], [0, 1, 1], 4).err().expect("error").to_string();
    assert!(err.contains("conv3d") && err.contains("groups 4") && err.contains("[4, 3, 1, 3, 3]"), "{err}");
    let err = x.try_conv3d(&w, None, [1, 1, 1], [0, 1, 1], 1).err().expect("error").to_string();
    assert!(err.contains("CIN/groups = 6"), "{err}");
    let err = x.try_conv3d(&w, None, [1, 9, 1], [0, 0, 0], 2).map(|y| y.shape().to_vec());
    assert_eq!(err.unwrap(), vec![1, 4, 2, 1, 3]);
    let x2 = Tensor::zeros(&[1, 3, 4, 4]);
    let w2 = Tensor::zeros(&[2, 3, 7, 7]);
    let err = x2.try_conv2d(&w2, None, [2, 2], [1, 1], 1).err().expect("error").to_string();
    assert!(err.contains("conv2d") && err.contains("kernel 7") && err.contains("padding [1, 1]"), "{err}");
}

#[test]
fn pool3d_errors_name_shapes_and_parameters() {
    let Some(_) = gpu_or_skip() else { return };
    let x = Tensor::zeros(&[1, 2, 3, 5, 5]);
    let err = x.try_max_pool3d([1, 3, 3], [1, 2, 2], [0, 2, 1]).err().expect("error").to_string();
    assert!(err.contains("max_pool3d") && err.contains("[1, 2, 3, 5, 5]") && err.contains("padding [0, 2, 1]"), "{err}");
    let err = x.try_avg_pool3d([5, 1, 1], [1, 1, 1], [0, 0, 0]).err().expect("error").to_string();
    assert!(err.contains("avg_pool3d") && err.contains("kernel 5"), "{err}");
    let err = x.try_max_pool2d([3, 3], [2, 2], [1, 1]).err().expect("error").to_string();
    assert!(err.contains("max_pool2d") && err.contains("rank 4"), "{err}");
}

#[test]
fn max_pool_gradient_goes_to_the_first_maximum() {
    let Some(_) = gpu_or_skip() else { return };
    // One window holding a tie: PyTorch routes the whole gradient to the first maximum.
    let x = Tensor::from_slice(&[1.0, 3.0, 3.0, 2.0], &[1, 1, 1, 2, 2]).unwrap().param();
    let y = x.max_pool3d([1, 2, 2], [1, 2, 2], [0, 0, 0]);
    let g = y.backward_with(Tensor::full(&[1, 1, 1, 1, 1], 5.0)).unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec().unwrap(), vec![0.0, 5.0, 0.0, 0.0]);
}

#[test]
fn temporal_shift_matches_the_official_slices() {
    let Some(_) = gpu_or_skip() else { return };
    // 1 video, T = 3, C = 8, fold_div 4 (fold 2), H = W = 1: x[t, c] = 10·t + c.
    let x: Vec<f32> = (0..3).flat_map(|t| (0..8).map(move |c| (10 * t + c) as f32)).collect();
    let y = Tensor::from_slice(&x, &[3, 8, 1, 1]).unwrap().temporal_shift(3, 4).to_vec().unwrap();
    #[rustfmt::skip]
    let want = [
        10.0, 11.0, 0.0, 0.0, 4.0, 5.0, 6.0, 7.0,     // t = 0: [0,2) from t+1, [2,4) zero
        20.0, 21.0, 2.0, 3.0, 14.0, 15.0, 16.0, 17.0, // t = 1
        0.0, 0.0, 12.0, 13.0, 24.0, 25.0, 26.0, 27.0, // t = 2: [0,2) zero
    ];
    assert_eq!(y, want);
    let err = Tensor::zeros(&[5, 8, 1, 1]).try_temporal_shift(2, 8).err().expect("error").to_string();
    assert!(err.contains("temporal_shift") && err.contains("[5, 8, 1, 1]") && err.contains("n_segment 2"), "{err}");
}
