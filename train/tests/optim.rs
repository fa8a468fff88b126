//! The optimiser pieces on the GPU against f64 references: SGD (momentum, Nesterov, dampening,
//! decay), label-smoothed cross-entropy (value and gradient), gradient clipping by global norm;
//! mixup and cutmix (mix.rs): the soft-target cross-entropy against its f64 reference, Beta
//! draws, and blended clips and targets as λ says.

use tubelet::optim::{sgd_reference, Sgd, SgdConfig};
use tubelet::{gpu_or_skip, Indices, Rng, Tensor};
use tubelet_train::mix::{self, soft_cross_entropy, soft_cross_entropy_reference, Blend};
use tubelet_train::optim::{
    clip_grads, grad_sq_norm, smoothed_cross_entropy, smoothed_cross_entropy_reference,
};
use tubelet_train::recipe::Mixup;

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

#[test]
fn soft_cross_entropy_matches_the_reference_value_and_gradient() {
    // Rows of mixed, smoothed targets (mass 1) and one of mass 0.7: the general form.
    let (b, c) = (5usize, 7usize);
    let x = values(b * c, 11, 3.0);
    let mut r = Rng::new(12);
    let mut targets: Vec<f32> = (0..b * c).map(|_| r.uniform() as f32).collect();
    for (i, row) in targets.chunks_mut(c).enumerate() {
        let s: f32 = row.iter().sum();
        let mass = if i == 2 { 0.7 } else { 1.0 };
        row.iter_mut().for_each(|v| *v *= mass / s);
    }
    let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let td: Vec<f64> = targets.iter().map(|&v| v as f64).collect();
    let (want, want_grad) = soft_cross_entropy_reference(&xd, &td, c);
    // The reference gradient against central differences of the reference loss.
    for i in 0..b * c {
        let h = 1e-5;
        let (mut up, mut down) = (xd.clone(), xd.clone());
        up[i] += h;
        down[i] -= h;
        let fd = (soft_cross_entropy_reference(&up, &td, c).0
            - soft_cross_entropy_reference(&down, &td, c).0)
            / (2.0 * h);
        assert!(
            (fd - want_grad[i]).abs() < 1e-7,
            "reference grad [{i}]: {fd} vs {}",
            want_grad[i]
        );
    }
    let Some(_) = gpu_or_skip() else { return };
    let t = Tensor::from_slice(&x, &[b, c]).unwrap().param();
    let tt = Tensor::from_slice(&targets, &[b, c]).unwrap();
    let loss = soft_cross_entropy(&t, &tt).unwrap();
    let got = loss.to_vec().unwrap()[0] as f64;
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    let g = loss.backward().unwrap().get(&t).unwrap().to_vec().unwrap();
    for (i, (&g, &w)) in g.iter().zip(&want_grad).enumerate() {
        assert!((g as f64 - w).abs() < 1e-5, "grad [{i}]: {g} vs {w}");
    }
    // Smoothed one-hot targets: the label-smoothed cross-entropy.
    let labels = [0u32, 3, 6, 2, 1];
    let eps = 0.1f32;
    let onehot: Vec<f32> = (0..b * c)
        .map(|i| (1.0 - eps) * f32::from(i % c == labels[i / c] as usize) + eps / c as f32)
        .collect();
    let soft = soft_cross_entropy(&t, &Tensor::from_slice(&onehot, &[b, c]).unwrap()).unwrap();
    let hard = smoothed_cross_entropy(&t, &Indices::from_slice(&labels).unwrap(), eps).unwrap();
    let (s, h) = (soft.to_vec().unwrap()[0], hard.to_vec().unwrap()[0]);
    assert!((s - h).abs() < 1e-5, "soft {s} vs smoothed {h}");
}

#[test]
fn beta_draws_have_the_beta_mean_and_variance() {
    // Beta(α, α): mean ½, variance 1/(4(2α + 1)).
    for alpha in [0.8f64, 1.0, 2.0] {
        let mut r = Rng::new(3);
        let n = 20_000;
        let v: Vec<f64> = (0..n).map(|_| mix::beta(alpha, &mut r)).collect();
        assert!(v.iter().all(|l| (0.0..=1.0).contains(l)));
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / n as f64;
        let want = 1.0 / (4.0 * (2.0 * alpha + 1.0));
        assert!((mean - 0.5).abs() < 0.01, "α {alpha}: mean {mean}");
        assert!(
            (var - want).abs() < 0.006,
            "α {alpha}: variance {var} vs {want}"
        );
    }
}

#[test]
fn mixup_and_cutmix_blend_clips_and_targets_as_lambda_says() {
    // 4 clips of 2×6×5×3 whose every value names its clip and position.
    let shape = [4usize, 2, 6, 5, 3];
    let n: usize = shape.iter().product();
    let per = n / 4;
    let orig: Vec<f32> = (0..n).map(|i| (i / per * 1000 + i % per) as f32).collect();
    let labels = [0u32, 2, 1, 2];
    let (classes, eps) = (3usize, 0.1f32);
    let run = |m: &Mixup, seed: u64| {
        let mut data = orig.clone();
        let (t, b) = mix::blend(
            &mut data,
            shape,
            &labels,
            classes,
            m,
            eps,
            &mut Rng::new(seed),
        )
        .unwrap();
        (data, t, b)
    };
    // The target a clip made of λ of clip i and 1 − λ of clip j must have.
    let target = |i: usize, j: usize, l: f64| -> Vec<f64> {
        (0..classes)
            .map(|k| {
                let v = l * f64::from(k == labels[i] as usize)
                    + (1.0 - l) * f64::from(k == labels[j] as usize);
                (1.0 - eps as f64) * v + eps as f64 / classes as f64
            })
            .collect()
    };
    let close = |a: &[f32], b: &[f64]| a.iter().zip(b).all(|(x, y)| (*x as f64 - y).abs() < 1e-6);
    let mixup = Mixup {
        mixup_alpha: 0.8,
        cutmix_alpha: 0.0,
        prob: 1.0,
        switch_prob: 0.5,
    };
    let cutmix = Mixup {
        mixup_alpha: 0.0,
        cutmix_alpha: 1.0,
        ..mixup
    };
    let mut partners = Vec::new();
    for seed in 0..4 {
        // Deterministic for a seed.
        assert!(run(&mixup, seed) == run(&mixup, seed));
        let (data, t, blend) = run(&mixup, seed);
        let Blend::Mixup { lambda } = blend else {
            panic!("{blend:?}")
        };
        let l = lambda as f32;
        for i in 0..4 {
            let clip = &data[i * per..(i + 1) * per];
            // The partner j: the clip whose mix reproduces this one.
            let j = (0..4)
                .find(|&j| {
                    clip.iter().enumerate().all(|(p, &v)| {
                        let want = l * orig[i * per + p] + (1.0 - l) * orig[j * per + p];
                        (v - want).abs() <= 1e-5 * want.abs().max(1.0)
                    })
                })
                .unwrap_or_else(|| panic!("seed {seed}: clip {i} is no mix of λ {lambda}"));
            assert!(close(
                &t[i * classes..(i + 1) * classes],
                &target(i, j, lambda)
            ));
            partners.push(j);
        }
        let (data, t, blend) = run(&cutmix, seed);
        let Blend::Cutmix { lambda, rows, cols } = blend else {
            panic!("{blend:?}")
        };
        let area = (rows.1 - rows.0) * (cols.1 - cols.0);
        assert!((lambda - (1.0 - area as f64 / 30.0)).abs() < 1e-12);
        for i in 0..4 {
            let clip = &data[i * per..(i + 1) * per];
            // Inside the box (every frame) the partner's pixels, outside the clip's own.
            let inside = |p: usize| {
                let (y, x) = (p / 15 % 6, p / 3 % 5);
                (rows.0..rows.1).contains(&y) && (cols.0..cols.1).contains(&x)
            };
            let from = |p: usize| clip[p] as usize / 1000;
            assert!((0..per)
                .filter(|&p| !inside(p))
                .all(|p| clip[p] == orig[i * per + p]));
            let j = if area == 0 {
                i
            } else {
                from((0..per).find(|&p| inside(p)).unwrap())
            };
            assert!((0..per)
                .filter(|&p| inside(p))
                .all(|p| clip[p] == orig[j * per + p]));
            assert!(close(
                &t[i * classes..(i + 1) * classes],
                &target(i, j, lambda)
            ));
        }
    }
    // Random partners, not a fixed pairing.
    assert!(
        partners
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 1
    );
    // prob 0: untouched clips, smoothed one-hot targets.
    let (data, t, blend) = run(&Mixup { prob: 0.0, ..mixup }, 0);
    assert_eq!((blend, data == orig), (Blend::None, true));
    for i in 0..4 {
        assert!(close(
            &t[i * classes..(i + 1) * classes],
            &target(i, i, 1.0)
        ));
    }
}
