//! The optimiser pieces on the GPU against f64 references: SGD (momentum, Nesterov, dampening,
//! decay), label-smoothed cross-entropy (value and gradient), gradient clipping by global norm.

use tubelet::optim::{sgd_reference, Sgd, SgdConfig};
use tubelet::{gpu_or_skip, Indices, Rng, Tensor};
use tubelet_train::optim::{
    clip_grads, grad_sq_norm, smoothed_cross_entropy, smoothed_cross_entropy_reference,
};

fn values(n: usize, seed: u64, scale: f64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| (scale * r.normal()) as f32).collect()
}

#[test]
fn sgd_matches_the_f64_reference_over_several_steps() {
    let Some(_) = gpu_or_skip() else { return };
    let configs = [
        SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            dampening: 0.0,
            weight_decay: 1e-2,
            nesterov: false,
        },
        SgdConfig {
            lr: 0.05,
            momentum: 0.9,
            dampening: 0.0,
            weight_decay: 1e-4,
            nesterov: true,
        },
        SgdConfig {
            lr: 0.2,
            momentum: 0.5,
            dampening: 0.3,
            weight_decay: 0.0,
            nesterov: false,
        },
        SgdConfig {
            lr: 0.1,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 1e-3,
            nesterov: false,
        },
    ];
    let n = 1000;
    for (ci, c) in configs.into_iter().enumerate() {
        for decay in [true, false] {
            let p0 = values(n, 1 + ci as u64, 1.0);
            let w = Tensor::from_slice(&p0, &[10, 100]).unwrap().param();
            let mut opt = Sgd::new(vec![("w".into(), w.clone(), decay)], c).unwrap();
            let (mut p, mut b): (Vec<f64>, Vec<f64>) =
                (p0.iter().map(|&v| v as f64).collect(), vec![0.0; n]);
            for step in 0..3u64 {
                let g = values(n, 100 + step, 0.5);
                // A gradient of w: d/dw Σ w·g = g.
                let gt = Tensor::from_slice(&g, &[10, 100]).unwrap();
                let loss = w.mul(&gt).sum_all();
                let grads = loss.backward().unwrap();
                opt.step(&grads).unwrap();
                for i in 0..n {
                    let (pi, bi) = sgd_reference(p[i], g[i] as f64, b[i], step == 0, c, decay);
                    p[i] = pi;
                    b[i] = bi;
                }
            }
            let got = w.to_vec().unwrap();
            let err = got
                .iter()
                .zip(&p)
                .map(|(a, b)| (*a as f64 - b).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-5, "config {ci} decay {decay}: max error {err}");
        }
    }
    assert!(Sgd::new(
        vec![],
        SgdConfig {
            nesterov: true,
            momentum: 0.0,
            ..SgdConfig::default()
        }
    )
    .is_err());
}

#[test]
fn label_smoothing_matches_the_reference_value_and_gradient() {
    let Some(_) = gpu_or_skip() else { return };
    let (b, c) = (4usize, 7usize);
    let x = values(b * c, 7, 3.0);
    let labels = [0u32, 3, 6, 2];
    for eps in [0.0f32, 0.1, 0.5] {
        let t = Tensor::from_slice(&x, &[b, c]).unwrap().param();
        let loss = smoothed_cross_entropy(&t, &Indices::from_slice(&labels).unwrap(), eps).unwrap();
        let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let want = smoothed_cross_entropy_reference(&xd, c, &labels, eps as f64);
        let got = loss.to_vec().unwrap()[0] as f64;
        assert!((got - want).abs() < 1e-5, "eps {eps}: {got} vs {want}");
        // Gradient: (softmax − target) / B, target = (1 − ε)·onehot + ε/C.
        let g = loss.backward().unwrap().get(&t).unwrap().to_vec().unwrap();
        for (r, row) in xd.chunks(c).enumerate() {
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = row.iter().map(|v| (v - m).exp()).sum();
            for k in 0..c {
                let p = (row[k] - m).exp() / z;
                let target =
                    (1.0 - eps as f64) * f64::from(k == labels[r] as usize) + eps as f64 / c as f64;
                let want = (p - target) / b as f64;
                assert!(
                    (g[r * c + k] as f64 - want).abs() < 1e-5,
                    "eps {eps} grad [{r}, {k}]"
                );
            }
        }
    }
}

#[test]
fn clipping_scales_all_gradients_by_the_global_norm() {
    let Some(_) = gpu_or_skip() else { return };
    let a = Tensor::from_slice(&[1.0, 2.0, 3.0], &[3]).unwrap().param();
    let w = Tensor::from_slice(&[1.0, 1.0, 1.0, 1.0], &[2, 2])
        .unwrap()
        .param();
    let ga = Tensor::from_slice(&[3.0, 0.0, 4.0], &[3]).unwrap();
    let gw = Tensor::from_slice(&[0.0, 12.0, 0.0, 0.0], &[2, 2]).unwrap();
    // loss = Σ a·ga + Σ w·gw: gradients ga, gw; global norm √(9 + 16 + 144) = 13.
    let loss = a.mul(&ga).sum_all().add(&w.mul(&gw).sum_all());
    let grads = loss.backward().unwrap();
    let params = vec![("a".to_string(), a.clone()), ("w".to_string(), w.clone())];
    let sq = grad_sq_norm(&params, &grads).unwrap().to_vec().unwrap()[0];
    assert!((sq - 169.0).abs() < 1e-3);
    let coef = clip_grads(&params, &grads, sq.sqrt(), 6.5).unwrap();
    assert!((coef - 6.5 / (13.0 + 1e-6)).abs() < 1e-6);
    let g = grads.get(&w).unwrap().to_vec().unwrap();
    assert!((g[1] - 12.0 * coef).abs() < 1e-5, "{g:?}");
    // Below the limit: untouched.
    assert_eq!(clip_grads(&params, &grads, 1.0, 6.5).unwrap(), 1.0);
}
