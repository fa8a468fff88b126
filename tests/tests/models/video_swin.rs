//! Video Swin Transformer (models/src/video_swin.rs): analytic counts of every preset against
//! seed-models.md §0.1, the built tiny model against its count, drop path, and shapes at small
//! sizes that need padding and a window clamp (`zoo.rs` trains the tiny preset and checks every
//! gradient).

use tubelet::{gpu_or_skip, Tensor};
use tubelet_data::synthetic::NUM_CLASSES;
use tubelet_models::video_swin::{Config, VideoSwin};

/// (preset, config, parameters, GMACs at 32×224²): seed-models.md §0.1, (D) columns.
fn paper_rows() -> Vec<(&'static str, Config, usize, f64)> {
    vec![
        ("swin-t", Config::swin_t(), 28_158_070, 87.8),
        ("swin-s", Config::swin_s(), 49_816_678, 165.7),
        ("swin-b", Config::swin_b(), 88_048_984, 281.3),
        ("swin-b-ssv2", Config::swin_b_ssv2(), 88_834_038, 320.4),
        ("swin-l", Config::swin_l(), 196_953_916, 603.3),
    ]
}

#[test]
fn video_swin_counts_match_the_reference() {
    let presets = tubelet_models::presets();
    for (name, cfg, params, gmacs) in paper_rows() {
        cfg.validate().unwrap();
        assert_eq!(cfg.num_params(), params, "{name} parameters");
        let g = cfg.macs() / 1e9;
        assert!(
            (g - gmacs).abs() / gmacs < 0.01,
            "{name}: {g} GMACs, reference {gmacs}"
        );
        let p = presets
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("preset {name} not registered"));
        assert_eq!(
            (p.params, p.clip, p.tiny),
            (params, [32, 224, 224], false),
            "{name}"
        );
    }
    // At 16 frames Swin-T is torchvision's swin3d_t: 43.88 GMACs (TV `_ops`).
    let g16 = Config {
        frames: 16,
        ..Config::swin_t()
    }
    .macs()
        / 1e9;
    assert!((g16 - 43.88).abs() < 0.01, "{g16}");
    let tiny = presets
        .iter()
        .find(|p| p.name == "swin-tiny")
        .expect("swin-tiny preset");
    assert!(tiny.tiny && tiny.clip == [8, 32, 32]);
    assert_eq!(tiny.params, Config::tiny(NUM_CLASSES).num_params());
}

#[test]
fn video_swin_drop_path_rates_are_the_official_linspace() {
    let r = Config::swin_t().drop_path_rates(); // torch.linspace(0, 0.1, 12)
    assert_eq!(r.len(), 12);
    assert_eq!((r[0], r[11]), (0.0, 0.1));
    assert!((r[1] - 0.1 / 11.0).abs() < 1e-7);
    let err = Config {
        drop_path_rate: 1.0,
        ..Config::tiny(8)
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(err.contains("drop_path_rate 1"), "{err}");
    let err = Config {
        num_heads: vec![3, 2],
        ..Config::tiny(8)
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("32 channels are not divisible by 3 heads"),
        "{err}"
    );
}

#[test]
fn video_swin_tiny_parameter_count_matches_the_built_model() {
    let Some(_) = gpu_or_skip() else { return };
    let cfg = Config::tiny(NUM_CLASSES);
    let model = VideoSwin::new(cfg.clone(), 0).unwrap();
    let params = model.named_params();
    let n: usize = params.iter().map(|(_, t)| t.numel()).sum();
    assert_eq!(n, cfg.num_params());
    // Official key names and shapes (seed-models.md §3.4), table (3·7·7 = 147, heads) for window 2×4×4.
    let shape = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .unwrap_or_else(|| panic!("no key {k}"))
            .1
            .shape()
            .to_vec()
    };
    assert_eq!(shape("backbone.patch_embed.proj.weight"), [32, 3, 2, 4, 4]);
    assert_eq!(
        shape("backbone.layers.1.blocks.1.attn.relative_position_bias_table"),
        [147, 2]
    );
    assert_eq!(
        shape("backbone.layers.0.blocks.0.attn.qkv.weight"),
        [96, 32]
    );
    assert_eq!(
        shape("backbone.layers.0.downsample.reduction.weight"),
        [64, 128]
    );
    assert_eq!(shape("backbone.layers.0.downsample.norm.bias"), [128]);
    assert_eq!(shape("backbone.norm.weight"), [64]);
    assert_eq!(shape("cls_head.fc_cls.weight"), [NUM_CLASSES, 64]);
    assert!(!params
        .iter()
        .any(|(k, _)| k.contains("layers.1.downsample") || k.contains("relative_position_index")));
    let mut names: Vec<_> = params.iter().map(|(k, _)| k.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), params.len(), "duplicate keys");
}

#[test]
fn video_swin_pads_clamps_and_keeps_samples_apart() {
    let Some(_) = gpu_or_skip() else { return };
    // Clip 5×20×12, patch 2×4×4 -> grid 3×5×3 (D padded 5 → 6 frames). Stage 1, window 2×4×4:
    // D and H pad to window multiples (4, 8), W = 3 ≤ 4 is clamped (window 3, shift 0).
    // Merging pads H 5 → 6: grid 3×3×2, where H and W are both clamped.
    let cfg = Config {
        frames: 5,
        height: 20,
        width: 12,
        ..Config::tiny(3)
    };
    let model = VideoSwin::new(cfg, 3).unwrap();
    let x = Tensor::randn(&[2, 3, 5, 20, 12], 0.0, 1.0, 7).unwrap();
    let y = model.forward(&x, false).unwrap();
    assert_eq!(y.shape(), [2, 3]);
    let both = y.to_vec().unwrap();
    assert!(both.iter().all(|v| v.is_finite()), "{both:?}");
    // Windows are batch-major: sample 1 alone gives the same logits as in the batch.
    let x1 = x.narrow(0, 1, 1);
    let one = model.forward(&x1, false).unwrap().to_vec().unwrap();
    for (a, b) in one.iter().zip(&both[3..]) {
        assert!(
            (a - b).abs() <= 1e-5 + 1e-4 * b.abs(),
            "alone {one:?}, in the batch {both:?}"
        );
    }
    // Eval is deterministic; a single frame (D = 1 after padding) works too.
    assert_eq!(model.forward(&x, false).unwrap().to_vec().unwrap(), both);
    let y = model
        .forward(
            &Tensor::randn(&[1, 3, 1, 8, 8], 0.0, 1.0, 8).unwrap(),
            false,
        )
        .unwrap();
    assert_eq!(y.shape(), [1, 3]);
}

#[test]
fn video_swin_rejects_bad_inputs_and_applies_drop_path_in_training() {
    let Some(_) = gpu_or_skip() else { return };
    let model = VideoSwin::new(Config::tiny(NUM_CLASSES), 0).unwrap();
    let err = model
        .forward(&Tensor::zeros(&[1, 8, 32, 32, 3]), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[1, 8, 32, 32, 3]"), "{err}");
    // drop path rate > 0: trains (finite), and eval ignores it (same logits as rate 0).
    let model = VideoSwin::new(
        Config {
            drop_path_rate: 0.5,
            ..Config::tiny(NUM_CLASSES)
        },
        0,
    )
    .unwrap();
    let plain = VideoSwin::new(Config::tiny(NUM_CLASSES), 0).unwrap();
    let x = Tensor::randn(&[2, 3, 8, 32, 32], 0.0, 1.0, 3).unwrap();
    let y = model.forward(&x, true).unwrap().to_vec().unwrap();
    assert!(y.iter().all(|v| v.is_finite()));
    assert_eq!(
        model.forward(&x, false).unwrap().to_vec().unwrap(),
        plain.forward(&x, false).unwrap().to_vec().unwrap()
    );
}
