//! AdamW against its f64 reference, and weight-decay exclusions.

use tubelet::optim::{adamw_reference, AdamW, AdamWConfig};
use tubelet::{gpu_or_skip, Tensor};

#[test]
fn adamw_matches_reference_over_three_steps() {
    let Some(_) = gpu_or_skip() else { return };
    let cfg = AdamWConfig {
        lr: 0.01,
        weight_decay: 0.1,
        ..AdamWConfig::default()
    };
    let w0 = [0.5f32, -1.0, 2.0, 0.0, 3.0, -0.25];
    let b0 = [0.1f32, -0.2];
    let w = Tensor::from_slice(&w0, &[3, 2]).unwrap().param();
    let b = Tensor::from_slice(&b0, &[2]).unwrap().param();
    let mut opt = AdamW::new(
        vec![
            ("fc.weight".into(), w.clone()),
            ("fc.bias".into(), b.clone()),
        ],
        cfg,
    )
    .unwrap();
    assert_eq!(opt.decayed(), vec!["fc.weight"]);
    let mut state_w: Vec<(f64, f64, f64)> = w0.iter().map(|&p| (p as f64, 0.0, 0.0)).collect();
    let mut state_b: Vec<(f64, f64, f64)> = b0.iter().map(|&p| (p as f64, 0.0, 0.0)).collect();
    for t in 1..=3 {
        // loss = Σ w² · t + Σ b  =>  g_w = 2·t·w, g_b = 1
        let loss = w.square().sum_all().mul_scalar(t as f32).add(&b.sum_all());
        let grads = loss.backward().unwrap();
        opt.step(&grads).unwrap();
        for s in state_w.iter_mut() {
            let g = (2.0 * t as f64 * s.0) as f32 as f64;
            *s = adamw_reference(s.0, g, s.1, s.2, t, cfg, true);
        }
        for s in state_b.iter_mut() {
            *s = adamw_reference(s.0, 1.0, s.1, s.2, t, cfg, false);
        }
    }
    for (got, want) in w.to_vec().unwrap().iter().zip(&state_w) {
        assert!(
            (*got as f64 - want.0).abs() < 1e-5,
            "w: {got} vs {}",
            want.0
        );
    }
    for (got, want) in b.to_vec().unwrap().iter().zip(&state_b) {
        assert!(
            (*got as f64 - want.0).abs() < 1e-5,
            "b: {got} vs {}",
            want.0
        );
    }
}
