//! TSM (models/src/tsm.rs): counts, key names, BatchNorm modes, online mode, errors (`zoo.rs`
//! trains the tiny preset and checks every gradient).

use tubelet::{gpu_or_skip, Indices, Tensor};
use tubelet_data::synthetic::{MovingShapes, Split, NUM_CLASSES};
use tubelet_models::tsm::{Config, OnlineState, Tsm};
use tubelet_models::VideoModel;

/// A fixed batch of `b` synthetic clips as (B·T, 3, H, W), with labels.
fn batch(model: &Tsm, b: usize, index: u64) -> (Tensor, Indices) {
    let c = &model.config;
    let data = MovingShapes::new(c.n_segment, c.height, 0);
    let (x, y) = data.batch(Split::Train, index, b);
    let x = Tensor::from_slice(&x, &data.batch_shape(b)).unwrap();
    (
        model.input_layout().from_channels_last(&x).unwrap(),
        Indices::from_slice(&y).unwrap(),
    )
}

#[test]
fn tsm_counts_match_the_reference() {
    // seed-models.md §0.1 (D): torchvision resnet50 without fc + new_fc(2048 → 400).
    let c = Config::tsm_r50();
    assert_eq!(c.num_params(), 24_327_632);
    // torchvision resnet50 (1000 classes): 25,557,032 parameters, 4.09 GFLOPs (MACs).
    assert_eq!(
        Config {
            num_classes: 1000,
            ..Config::tsm_r50()
        }
        .num_params(),
        25_557_032
    );
    let g = c.macs_per_frame() / 1e9;
    assert!((g - 4.09).abs() / 4.09 < 0.01, "{g} GMACs per frame");
    let presets = tubelet_models::presets();
    for (name, params) in [
        ("tsm-r50", 24_327_632),
        ("tsm-tiny", Config::tiny(NUM_CLASSES).num_params()),
    ] {
        let p = presets
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("{name} not registered"));
        assert_eq!(p.params, params, "{name}");
    }
}

#[test]
fn tsm_tiny_built_count_and_keys_match() {
    let Some(_) = gpu_or_skip() else { return };
    let model = Tsm::new(Config::tiny(NUM_CLASSES), 0).unwrap();
    let params = model.named_params();
    let n: usize = params.iter().map(|(_, t)| t.numel()).sum();
    assert_eq!(n, model.config.num_params());
    let keys: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
    for k in [
        "base_model.conv1.weight",
        "base_model.bn1.weight",
        "base_model.layer1.0.conv1.net.weight",
        "base_model.layer1.0.bn1.bias",
        "base_model.layer2.0.conv2.weight",
        "base_model.layer4.0.conv3.weight",
        "base_model.layer3.0.downsample.0.weight",
        "base_model.layer3.0.downsample.1.weight",
        "new_fc.weight",
        "new_fc.bias",
    ] {
        assert!(keys.contains(&k), "missing {k}");
    }
    let buffers = model.named_buffers();
    // stem + 4 blocks × (3 + downsample) BatchNorms, 3 buffers each
    assert_eq!(buffers.len(), 3 * (1 + 4 * 4));
    for k in [
        "base_model.bn1.running_mean",
        "base_model.layer1.0.bn1.running_var",
        "base_model.layer2.0.downsample.1.num_batches_tracked",
    ] {
        assert!(buffers.iter().any(|(b, _)| b == k), "missing buffer {k}");
    }
}

#[test]
fn tsm_eval_uses_running_stats() {
    let Some(_) = gpu_or_skip() else { return };
    let model = Tsm::new(Config::tiny(NUM_CLASSES), 2).unwrap();
    let (x, _) = batch(&model, 2, 3);
    let eval0 = model.forward(&x, false).unwrap().to_vec().unwrap();
    assert_eq!(eval0, model.forward(&x, false).unwrap().to_vec().unwrap());
    assert_eq!(model.bn1.num_batches_tracked.item().unwrap(), 0.0);
    let train = model.forward(&x, true).unwrap().to_vec().unwrap();
    assert_eq!(model.bn1.num_batches_tracked.item().unwrap(), 1.0);
    assert!(model
        .bn1
        .running_var
        .to_vec()
        .unwrap()
        .iter()
        .any(|&v| v != 1.0));
    let eval1 = model.forward(&x, false).unwrap().to_vec().unwrap();
    assert_ne!(
        eval0, eval1,
        "eval output did not change with the running statistics"
    );
    assert_ne!(train, eval1, "eval used batch statistics");
}

#[test]
fn tsm_online_inference_carries_the_cache_between_frames() {
    let Some(_) = gpu_or_skip() else { return };
    let model = Tsm::new(Config::tiny(NUM_CLASSES), 4).unwrap();
    let (x, _) = batch(&model, 1, 0); // (8, 3, 32, 32)
    let mut state = OnlineState::default();
    let logits = model.online_clip(&x, &mut state).unwrap();
    assert_eq!(logits.shape(), [1, 8, NUM_CLASSES]);
    assert!(logits.to_vec().unwrap().iter().all(|v| v.is_finite()));
    assert_eq!(state.caches.len(), 4); // one per shifted Bottleneck
                                       // Frame 1 after frame 0 differs from frame 1 after a different frame 0: only the cache
                                       // can carry that.
    let f0 = x.narrow(0, 0, 1);
    let f1 = x.narrow(0, 1, 1);
    let other = Tensor::randn(&[1, 3, 32, 32], 0.0, 1.0, 7).unwrap();
    let (mut a, mut b) = (OnlineState::default(), OnlineState::default());
    model.online_step(&f0, &mut a).unwrap();
    model.online_step(&other, &mut b).unwrap();
    let ya = model.online_step(&f1, &mut a).unwrap().to_vec().unwrap();
    let yb = model.online_step(&f1, &mut b).unwrap().to_vec().unwrap();
    let diff: f32 = ya.iter().zip(&yb).map(|(p, q)| (p - q).abs()).sum();
    assert!(diff > 0.0, "frame 1's logits do not depend on frame 0");
    // The same history gives the same result.
    let mut c = OnlineState::default();
    model.online_step(&f0, &mut c).unwrap();
    assert_eq!(
        ya,
        model.online_step(&f1, &mut c).unwrap().to_vec().unwrap()
    );
}

#[test]
fn tsm_rejects_bad_inputs() {
    let Some(_) = gpu_or_skip() else { return };
    let model = Tsm::new(Config::tiny(NUM_CLASSES), 0).unwrap();
    let err = model
        .forward(&Tensor::zeros(&[7, 3, 32, 32]), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[7, 3, 32, 32]"), "{err}");
    let err = Tsm::new(
        Config {
            fold_div: 0,
            ..Config::tiny(8)
        },
        0,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("fold_div 0"), "{err}");
}
