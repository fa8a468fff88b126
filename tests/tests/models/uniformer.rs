//! UniFormer (models/src/uniformer.rs): counts, BatchNorm modes, drop path and errors (`zoo.rs` trains
//! the tiny preset and checks every gradient).

use tubelet::{gpu_or_skip, Indices, Tensor};
use tubelet_data::synthetic::{MovingShapes, Split, NUM_CLASSES};
use tubelet_models::uniformer::{Config, UniFormer};
use tubelet_models::VideoModel;

/// A fixed batch of `b` synthetic clips in the model's layout, with labels.
fn batch(model: &UniFormer, b: usize, index: u64) -> (Tensor, Indices) {
    let c = &model.config;
    let data = MovingShapes::new(c.frames, c.height, 0);
    let (x, y) = data.batch(Split::Train, index, b);
    let x = Tensor::from_slice(&x, &data.batch_shape(b)).unwrap();
    (
        model.input_layout().from_channels_last(&x).unwrap(),
        Indices::from_slice(&y).unwrap(),
    )
}

#[test]
fn uniformer_counts_match_the_reference() {
    // seed-models.md §0.1 (D): S 21,400,400 / 41.66 GMACs, B 49,813,200 / 96.55 at 16×224².
    let s = Config::uniformer_s();
    assert_eq!(s.num_params(), 21_400_400);
    let g = s.macs() / 1e9;
    assert!((g - 41.66).abs() / 41.66 < 0.01, "UniFormer-S {g} GMACs");
    let b = Config::uniformer_b();
    assert_eq!(b.num_params(), 49_813_200);
    let g = b.macs() / 1e9;
    assert!((g - 96.55).abs() / 96.55 < 0.01, "UniFormer-B {g} GMACs");
    // 8 frames: 17.57 GMACs (S), 40.13 (B).
    let g = Config {
        frames: 8,
        ..Config::uniformer_s()
    }
    .macs()
        / 1e9;
    assert!((g - 17.57).abs() / 17.57 < 0.01, "UniFormer-S 8f {g} GMACs");
    let presets = tubelet_models::presets();
    for (name, params) in [
        ("uniformer-s", 21_400_400),
        ("uniformer-b", 49_813_200),
        ("uniformer-tiny", Config::tiny(NUM_CLASSES).num_params()),
    ] {
        let p = presets
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("{name} not registered"));
        assert_eq!(p.params, params, "{name}");
    }
}

#[test]
fn uniformer_tiny_built_count_and_keys_match() {
    let Some(_) = gpu_or_skip() else { return };
    let model = UniFormer::new(Config::tiny(NUM_CLASSES), 0).unwrap();
    let params = model.named_params();
    let n: usize = params.iter().map(|(_, t)| t.numel()).sum();
    assert_eq!(n, model.config.num_params());
    let keys: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
    for k in [
        "patch_embed1.proj.weight",
        "patch_embed1.norm.weight",
        "patch_embed4.proj.bias",
        "blocks1.0.pos_embed.weight",
        "blocks1.0.norm1.weight",
        "blocks1.0.attn.weight",
        "blocks2.0.mlp.fc2.bias",
        "blocks3.0.attn.qkv.bias",
        "blocks4.0.attn.proj.weight",
        "blocks4.0.norm2.bias",
        "norm.weight",
        "head.weight",
    ] {
        assert!(keys.contains(&k), "missing {k}");
    }
    assert_eq!(model.patch_embed[0].proj.weight.shape(), [16, 3, 3, 4, 4]);
    assert_eq!(model.blocks1[0].attn.weight.shape(), [16, 1, 5, 5, 5]);
    // (2 CBlocks × 2 + final) BatchNorms × 3 buffers
    let buffers = model.named_buffers();
    assert_eq!(buffers.len(), 15);
    assert!(buffers
        .iter()
        .any(|(k, _)| k == "blocks2.0.norm2.num_batches_tracked"));
}

#[test]
fn uniformer_eval_uses_running_stats() {
    let Some(_) = gpu_or_skip() else { return };
    let model = UniFormer::new(Config::tiny(NUM_CLASSES), 2).unwrap();
    let (x, _) = batch(&model, 2, 3);
    let eval0 = model.forward(&x, false).unwrap().to_vec().unwrap();
    // Eval is deterministic and leaves the buffers alone.
    assert_eq!(eval0, model.forward(&x, false).unwrap().to_vec().unwrap());
    let nbt = &model.norm.num_batches_tracked;
    assert_eq!(nbt.item().unwrap(), 0.0);
    assert_eq!(model.norm.running_mean.to_vec().unwrap(), vec![0.0; 64]);
    // A training forward updates the running statistics, and eval then uses them.
    let train = model.forward(&x, true).unwrap().to_vec().unwrap();
    assert_eq!(nbt.item().unwrap(), 1.0);
    assert!(model
        .norm
        .running_mean
        .to_vec()
        .unwrap()
        .iter()
        .any(|&v| v != 0.0));
    let eval1 = model.forward(&x, false).unwrap().to_vec().unwrap();
    assert_ne!(
        eval0, eval1,
        "eval output did not change with the running statistics"
    );
    assert_ne!(train, eval1, "eval used batch statistics");
}

#[test]
fn uniformer_rejects_bad_inputs_and_applies_drop_path_in_training() {
    let Some(_) = gpu_or_skip() else { return };
    let model = UniFormer::new(Config::tiny(NUM_CLASSES), 0).unwrap();
    let err = model
        .forward(&Tensor::zeros(&[1, 8, 32, 32, 3]), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[1, 8, 32, 32, 3]"), "{err}");
    let err = UniFormer::new(
        Config {
            height: 40,
            ..Config::tiny(8)
        },
        0,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("32×40×32") || err.contains("8×40×32"), "{err}");
    // Drop path: active in training (the output differs from the same weights without it; all
    // 2 samples × every residual kept has probability 0.5^(2·residuals)), the identity in eval.
    let plain = UniFormer::new(Config::tiny(NUM_CLASSES), 0).unwrap();
    let model = UniFormer::new(
        Config {
            drop_path_rate: 0.5,
            ..Config::tiny(NUM_CLASSES)
        },
        0,
    )
    .unwrap();
    let (x, _) = batch(&model, 2, 0);
    // Eval first: a training forward updates the BatchNorm running stats, which drop path changes.
    let eval = model.forward(&x, false).unwrap().to_vec().unwrap();
    assert_eq!(
        eval,
        plain.forward(&x, false).unwrap().to_vec().unwrap(),
        "drop path acted in eval"
    );
    let with = model.forward(&x, true).unwrap().to_vec().unwrap();
    let without = plain.forward(&x, true).unwrap().to_vec().unwrap();
    assert!(with.iter().all(|v| v.is_finite()));
    assert_ne!(with, without, "drop path changed nothing in training");
}
