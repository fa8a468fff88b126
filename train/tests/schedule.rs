//! Schedule values against the official closed forms (see train/src/schedule.rs), at chosen points.

use tubelet_train::recipe;
use tubelet_train::schedule::{synthetic_lr, Decay, LrSchedule, Schedule, Warmup};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 + 1e-9 * b.abs()
}

#[test]
fn mmengine_linear_warmup_times_epoch_cosine() {
    // Video Swin: LinearLR(0.1, end 2.5 epochs, per iteration) × CosineAnnealingLR(T_max 30, by epoch).
    let s = Schedule {
        base_lr: 1e-3,
        warmup: Warmup::Factor {
            epochs: 2.5,
            start_factor: 0.1,
        },
        decay: Decay::Cosine {
            end_lr: 0.0,
            by_epoch: true,
            after_warmup: false,
        },
        total_epochs: 30.0,
    };
    let cos = |e: f64| 0.5 * (1.0 + (std::f64::consts::PI * e / 30.0).cos());
    assert!(close(s.lr(0.0), 1e-4));
    // Mid-epoch 1.5: factor 0.1 + 0.9·0.6, cosine at epoch 1.
    assert!(close(s.lr(1.5), 1e-3 * (0.1 + 0.9 * 0.6) * cos(1.0)));
    assert!(close(s.lr(2.5), 1e-3 * cos(2.0)));
    assert!(close(s.lr(15.7), 1e-3 * cos(15.0)));
    assert!(close(s.lr(30.0), 0.0));
    // Per step: 100 iterations per epoch, step 150 = epoch 1.5.
    assert!(close(s.lr_at_step(150, 100), s.lr(1.5)));
}

#[test]
fn slowfast_warmup_from_start_lr_then_cosine_after_warmup() {
    // MViT / UniFormer: WARMUP_START_LR 1e-6 → BASE_LR 1e-4 over 30 epochs, cosine to 1e-6 at 200.
    let s = Schedule {
        base_lr: 1e-4,
        warmup: Warmup::FromLr {
            epochs: 30.0,
            start_lr: 1e-6,
        },
        decay: Decay::Cosine {
            end_lr: 1e-6,
            by_epoch: false,
            after_warmup: true,
        },
        total_epochs: 200.0,
    };
    assert!(close(s.lr(0.0), 1e-6));
    assert!(close(s.lr(15.0), 1e-6 + (1e-4 - 1e-6) * 0.5));
    assert!(close(s.lr(30.0), 1e-4));
    let t = (115.0 - 30.0) / 170.0;
    assert!(close(
        s.lr(115.0),
        1e-6 + (1e-4 - 1e-6) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    ));
    assert!(close(s.lr(200.0), 1e-6));
}

#[test]
fn relative_steps_and_tsm_steps() {
    // TimeSformer: STEPS [0, 11, 14], LRS [1, 0.1, 0.01].
    let r = recipe::for_model("timesformer-base").unwrap();
    let LrSchedule::Paper(s) = &r.schedule else {
        panic!("paper schedule")
    };
    assert!(close(s.lr(0.0), 5e-3));
    assert!(close(s.lr(10.99), 5e-3));
    assert!(close(s.lr(11.0), 5e-4));
    assert!(close(s.lr(14.5), 5e-5));
    // TSM fine-tuning: ×0.1 at epochs 10 and 20, per epoch.
    let r = recipe::for_model("tsm-r50").unwrap();
    let LrSchedule::Paper(s) = &r.schedule else {
        panic!("paper schedule")
    };
    assert!(close(s.lr(9.9), 1e-3));
    assert!(close(s.lr(10.0), 1e-4));
    assert!(close(s.lr(20.3), 1e-5));
}

#[test]
fn scenic_linear_warmup_from_zero_times_cosine_over_all_steps() {
    let r = recipe::for_model("vivit-b-16x2").unwrap();
    let LrSchedule::Paper(s) = &r.schedule else {
        panic!("paper schedule")
    };
    assert!(close(s.lr(0.0), 0.0));
    let cos = |e: f64| 0.5 * (1.0 + (std::f64::consts::PI * e / 30.0).cos());
    assert!(close(s.lr(1.25), 0.1 * 0.5 * cos(1.25)));
    assert!(close(s.lr(10.0), 0.1 * cos(10.0)));
}

#[test]
fn synthetic_schedule_is_the_old_f32_formula() {
    // What `tubelet train` always computed.
    let old = |step: u32, steps: u32, warmup: u32, peak: f32| -> f32 {
        if step < warmup {
            return peak * (step + 1) as f32 / warmup as f32;
        }
        let t = (step - warmup) as f32 / (steps - warmup).max(1) as f32;
        peak * 0.5 * (1.0 + (std::f32::consts::PI * t).cos())
    };
    let s = LrSchedule::Synthetic {
        peak: 1e-3,
        warmup_steps: 40,
        total_steps: 400,
    };
    for step in [0u32, 1, 39, 40, 41, 200, 399] {
        assert_eq!(synthetic_lr(step, 400, 40, 1e-3), old(step, 400, 40, 1e-3));
        assert_eq!(
            s.lr_at_step(step as u64, 400) as f32,
            old(step, 400, 40, 1e-3)
        );
    }
    // Warm-up longer than the run is clamped to the run, as before.
    let s = LrSchedule::Synthetic {
        peak: 1e-3,
        warmup_steps: 40,
        total_steps: 2,
    };
    assert_eq!(s.lr_at_step(1, 2) as f32, old(1, 2, 2, 1e-3));
}

#[test]
fn every_preset_has_a_recipe_with_a_source() {
    for p in tubelet_models::presets() {
        let r = recipe::for_model(p.name).unwrap_or_else(|| panic!("{} has no recipe", p.name));
        assert!(
            !r.source.is_empty() && r.epochs > 0 && r.batch > 0 && r.lr > 0.0,
            "{}",
            p.name
        );
        assert!(r.describe().contains(&r.source));
        assert!(r.to_json()["lr"].as_f64().is_some());
    }
    assert!(recipe::for_model("nope").is_none());
}
