//! Parity of the official constructors' options (issue 17): defaults left out, `qkv_bias` false,
//! `qk_scale` set, `null` where the official code takes None, class-valued arguments by name,
//! and scenic ViViT's pre-logits layer, both factorised attention orders, uniform frame
//! sampling and every classifier. The test vectors were made by the official code:
//! `models/tests/fixtures/gen_parity_options.py` (Video Swin, TimeSformer, UniFormer; manifest
//! `parity_options.json`) and `gen_parity_vivit_options.py` (scenic; `parity_vivit_options.json`),
//! which record the official commits. The building blocks each paper describes (Swin
//! `PatchEmbed3D`, `PatchMerging`, TimeSformer `PatchEmbed`, UniFormer `SpeicalPatchEmbed` and
//! `PatchEmbed`, SlowFast `PatchEmbed`; the heads, mmaction `I3DHead` and SlowFast
//! `TransformerBasicHead`) are checked as parity modules of their own. Each fixture's config leaves out the defaults it tests, so
//! passing means `tubelet parity` gives the official result with them left out.
//!
//! Bounds as the other parity tests: relative error max|got − want| / max|want| ≤ 1e-4 for
//! `output`, ≤ 1e-3 for every `grad.*`. Options the official code rejects are errors that name
//! them (checked before any GPU work).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};
use tubelet::gpu_or_skip;
use tubelet::io::{self, HostTensor};
use tubelet_cli::parity;

const FORWARD_TOL: f32 = 1e-4;
const GRADIENT_TOL: f32 = 1e-3;
const MANIFESTS: [&str; 2] = ["parity_options.json", "parity_vivit_options.json"];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures")
}

/// The fixture called `case` in this file's manifests.
fn entry(case: &str) -> Value {
    for name in MANIFESTS {
        let path = fixtures().join(name);
        let manifest: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // A fixture is named by its `case`, or by its `module` when it is the module's only one.
        if let Some(e) = manifest
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e.get("case").unwrap_or(&e["module"]) == case)
        {
            return e.clone();
        }
    }
    panic!("no fixture {case} in {MANIFESTS:?}")
}

/// max|got − want| / max|want| (the plain difference where want is all zero).
fn relative_error(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

/// Runs the fixture's module with its config and checks every tensor of its `.want` file.
fn check(case: &str) {
    let Some(_) = gpu_or_skip() else { return };
    let e = entry(case);
    let module = e["module"].as_str().unwrap();
    let input = io::read(&fixtures().join(e["input"].as_str().unwrap())).unwrap();
    let want: BTreeMap<String, HostTensor> =
        io::read(&fixtures().join(e["want"].as_str().unwrap())).unwrap();
    let got = parity::run_tensors(module, &e["config"], &input)
        .unwrap_or_else(|err| panic!("{case}: {err}"));
    let got: BTreeMap<&str, (&Vec<usize>, &Vec<f32>)> =
        got.iter().map(|(k, s, v)| (k.as_str(), (s, v))).collect();
    assert_eq!(
        got.len(),
        want.len(),
        "{case}: tubelet wrote {:?}, want has {:?}",
        got.keys(),
        want.keys()
    );
    let mut fails = Vec::new();
    let (mut max_fwd, mut max_grad) = (0f32, 0f32);
    for (key, w) in &want {
        let (shape, g) = got
            .get(key.as_str())
            .unwrap_or_else(|| panic!("{case}: tubelet wrote no {key}"));
        assert_eq!(*shape, &w.shape, "{case}: {key} shape");
        let err = relative_error(g, &w.data);
        let tol = if key == "output" {
            FORWARD_TOL
        } else {
            GRADIENT_TOL
        };
        if key == "output" {
            max_fwd = err
        } else {
            max_grad = max_grad.max(err)
        }
        if err.is_nan() || err > tol {
            fails.push(format!("{key}: {err:.2e} > {tol:.0e}"));
        }
    }
    eprintln!("{case}: relative error output {max_fwd:.2e}, worst gradient {max_grad:.2e}");
    assert!(
        fails.is_empty(),
        "{case} ({module}) differs from the official code:\n  {}",
        fails.join("\n  ")
    );
}

#[test]
fn parity_options_video_swin_basic_layer_defaults() {
    check("video_swin.BasicLayer.defaults");
}

#[test]
fn parity_options_video_swin_basic_layer_no_downsample() {
    check("video_swin.BasicLayer.no_downsample");
}

#[test]
fn parity_options_video_swin_backbone_defaults() {
    check("video_swin.SwinTransformer3D.defaults");
}

/// A drop_path list (one rate per block), mlp_ratio 1.5 and norm eps 1e-6 (blocks and merging).
#[test]
fn parity_options_video_swin_basic_layer_options() {
    check("video_swin.BasicLayer.options");
}

/// in_chans 2, norm eps 1e-6 everywhere, mlp_ratio 2.5, drop_path_rate left out (0.2).
#[test]
fn parity_options_video_swin_backbone_options() {
    check("video_swin.SwinTransformer3D.options");
}

/// UniFormer's blocks with a fractional mlp_ratio (int(dim · mlp_ratio) hidden units).
#[test]
fn parity_options_uniformer_sablock_mlp_ratio() {
    check("uniformer.SABlock.mlp_ratio");
}

#[test]
fn parity_options_uniformer_cblock_mlp_ratio() {
    check("uniformer.CBlock.mlp_ratio");
}

/// num_classes 0: the official nn.Identity() head, the cls features out.
#[test]
fn parity_options_timesformer_model_no_head() {
    check("timesformer.VisionTransformer.no_head");
}

#[test]
fn parity_options_timesformer_model_in_chans() {
    check("timesformer.VisionTransformer.in_chans");
}

#[test]
fn parity_options_vivit_factorised_encoder_spatial_only_baseline() {
    check("vivit.SpaceTimeViViT.spatial_only_baseline");
}

/// What scenic's ViViT returns: the pre-logits (no output_projection), the encoder's tokens
/// (no head at all), and Model 2's pre-logits.
#[test]
fn parity_options_vivit_return_prelogits() {
    check("vivit.ViViT.return_prelogits");
}

#[test]
fn parity_options_vivit_return_preclassifier() {
    check("vivit.ViViT.return_preclassifier");
}

#[test]
fn parity_options_vivit_factorised_encoder_return_prelogits() {
    check("vivit.SpaceTimeViViT.return_prelogits");
}

#[test]
fn parity_options_timesformer_block_defaults() {
    check("timesformer.Block.defaults");
}

#[test]
fn parity_options_timesformer_model_defaults() {
    check("timesformer.VisionTransformer.defaults");
}

#[test]
fn parity_options_uniformer_sablock_qk_scale() {
    check("uniformer.SABlock.qk_scale");
}

#[test]
fn parity_options_vivit_representation_size() {
    check("vivit.ViViT.representation_size");
}

#[test]
fn parity_options_vivit_space_time_order() {
    check("vivit.ViViT.space_time");
}

#[test]
fn parity_options_vivit_temporal_sampling() {
    check("vivit.ViViT.temporal_sampling");
}

#[test]
fn parity_options_vivit_temporal_sampling_fdp() {
    check("vivit.ViViT.temporal_sampling_fdp");
}

#[test]
fn parity_options_vivit_factorised_encoder_temporal_sampling() {
    check("vivit.SpaceTimeViViT.temporal_sampling");
}

#[test]
fn parity_options_vivit_classifier_gap_default() {
    check("vivit.ViViT.gap");
}

#[test]
fn parity_options_vivit_classifier_first_token() {
    check("vivit.ViViT.first_token");
}

#[test]
fn parity_options_vivit_classifier_gmp() {
    check("vivit.ViViT.gmp");
}

#[test]
fn parity_options_vivit_factorised_encoder_classifier_gsp() {
    check("vivit.SpaceTimeViViT.gsp");
}

#[test]
fn parity_options_vivit_factorised_encoder_temporal_sizes() {
    check("vivit.SpaceTimeViViT.temporal_sizes");
}

#[test]
fn parity_options_block_video_swin_patch_embed_3d() {
    check("video_swin.PatchEmbed3D");
}

#[test]
fn parity_options_block_video_swin_patch_embed_3d_norm() {
    check("video_swin.PatchEmbed3D.norm");
}

#[test]
fn parity_options_block_video_swin_patch_merging() {
    check("video_swin.PatchMerging");
}

#[test]
fn parity_options_block_timesformer_patch_embed() {
    check("timesformer.PatchEmbed");
}

#[test]
fn parity_options_block_uniformer_speical_patch_embed() {
    check("uniformer.SpeicalPatchEmbed");
}

#[test]
fn parity_options_block_uniformer_patch_embed() {
    check("uniformer.PatchEmbed");
}

#[test]
fn parity_options_block_uniformer_patch_embed_std() {
    check("uniformer.PatchEmbed.std");
}

#[test]
fn parity_options_block_mvit_patch_embed() {
    check("mvit.PatchEmbed");
}

#[test]
fn parity_options_head_video_swin_i3d_head() {
    check("video_swin.I3DHead");
}

#[test]
fn parity_options_head_video_swin_i3d_head_no_pool() {
    check("video_swin.I3DHead.no_pool");
}

#[test]
fn parity_options_head_mvit_transformer_basic_head() {
    check("mvit.TransformerBasicHead");
}

#[test]
fn parity_options_head_mvit_transformer_basic_head_sigmoid() {
    check("mvit.TransformerBasicHead.sigmoid");
}

/// The error `module` gives for the config of fixture `case` edited by `edit`. (A null left
/// unread is found after the module is built, which makes tensors: the test needs an adapter.)
fn config_error(case: &str, edit: &dyn Fn(&mut serde_json::Map<String, Value>)) -> String {
    let e = entry(case);
    let mut config = e["config"].clone();
    edit(config.as_object_mut().unwrap());
    let shape: Vec<usize> = io::read(&fixtures().join(e["input"].as_str().unwrap())).unwrap()
        ["input"]
        .shape
        .clone();
    let file = BTreeMap::from([(
        "input".to_string(),
        HostTensor {
            data: vec![0.0; shape.iter().product()],
            shape,
        },
    )]);
    parity::run_tensors(e["module"].as_str().unwrap(), &config, &file)
        .expect_err("an error")
        .to_string()
}

/// What the official code rejects (a class it does not have, an attention order or temporal
/// encoding it raises on, a patch size of the wrong length, None where it calls the argument)
/// is an error naming the field and the value.
#[test]
fn parity_options_official_rejections_name_the_field() {
    let Some(_) = gpu_or_skip() else { return };
    let err = config_error("video_swin.BasicLayer.defaults", &|c| {
        c.insert("downsample".into(), json!("PatchMerging3D"));
    });
    assert!(
        err.contains("downsample \"PatchMerging3D\"") && err.contains("\"PatchMerging\", null"),
        "{err}"
    );
    let err = config_error("video_swin.BasicLayer.defaults", &|c| {
        c.insert("norm_layer".into(), json!("nn.BatchNorm3d"));
    });
    assert!(
        err.contains("norm_layer")
            && err.contains("nn.BatchNorm3d")
            && err.contains("not a LayerNorm"),
        "{err}"
    );
    let err = config_error("video_swin.BasicLayer.no_downsample", &|c| {
        c.insert("norm_layer".into(), Value::Null);
    });
    assert!(err.contains("\"norm_layer\" is null"), "{err}");
    // None where the official default is not None (window_size) is refused, naming it.
    let err = config_error("video_swin.BasicLayer.defaults", &|c| {
        c.insert("window_size".into(), Value::Null);
    });
    assert!(err.contains("\"window_size\" is null"), "{err}");
    let err = config_error("timesformer.Block.defaults", &|c| {
        c.insert("qkv_bias".into(), Value::Null);
    });
    assert!(err.contains("\"qkv_bias\" is null"), "{err}");

    let err = config_error("vivit.ViViT.space_time", &|c| {
        c.insert(
            "attention_config".into(),
            json!({"type": "factorized_self_attention_block", "attention_order": "time"}),
        );
    });
    assert!(
        err.contains("attention_order \"time\"") && err.contains("\"space_time\""),
        "{err}"
    );
    let err = config_error("vivit.ViViT.temporal_sampling", &|c| {
        c.insert(
            "temporal_encoding_config".into(),
            json!({"method": "2d_conv"}),
        );
    });
    assert!(
        err.contains("method \"2d_conv\"") && err.contains("\"temporal_sampling\""),
        "{err}"
    );
    // 2-D patches for temporal sampling (scenic's `fh, fw = patches.size`).
    let err = config_error("vivit.ViViT.temporal_sampling", &|c| {
        c.insert("patches".into(), json!({"size": [3, 2, 2]}));
    });
    assert!(
        err.contains("\"patches.size\" must be a list of 2"),
        "{err}"
    );
    let err = config_error("vivit.ViViT.temporal_sampling", &|c| {
        c.insert(
            "temporal_encoding_config".into(),
            json!({"method": "temporal_sampling"}),
        );
    });
    assert!(
        err.contains("missing required field \"temporal_encoding_config.n_sampled_frames\""),
        "{err}"
    );

    // Swin BasicLayer: block i reads drop_path[i], so a list shorter than depth is the
    // official IndexError; an MLP of width int(dim · mlp_ratio) = 0 is not ported.
    let err = config_error("video_swin.BasicLayer.options", &|c| {
        c.insert("drop_path".into(), json!([0.1]));
    });
    assert!(
        err.contains("drop_path [0.1]") && err.contains("depth 2"),
        "{err}"
    );
    let err = config_error("video_swin.BasicLayer.options", &|c| {
        c.insert("mlp_ratio".into(), json!(0.1));
    });
    assert!(
        err.contains("mlp_ratio 0.1") && err.contains("= 0"),
        "{err}"
    );

    // SpaceTimeViViT has no return_preclassifier field (scenic: a TypeError).
    let err = config_error("vivit.SpaceTimeViViT.return_prelogits", &|c| {
        c.insert("return_preclassifier".into(), json!(true));
    });
    assert!(
        err.contains("unknown field(s) \"return_preclassifier\""),
        "{err}"
    );

    // UniFormer's constructor fails on a representation size (nn.Linear(list of widths, r)).
    let file = BTreeMap::from([(
        "input".to_string(),
        HostTensor {
            shape: vec![1, 3, 2, 32, 32],
            data: vec![0.0; 6144],
        },
    )]);
    let config = json!({"UNIFORMER": {"REPRESENTATION_SIZE": 6}});
    let err = parity::run_tensors("uniformer.Uniformer", &config, &file)
        .expect_err("an error")
        .to_string();
    assert!(
        err.contains("REPRESENTATION_SIZE 6") && err.contains("official constructor fails"),
        "{err}"
    );
}

/// The options are fields of the zoo's configs, so presets can use them: a model built with
/// each has the parameters its config counts, and runs.
#[test]
fn parity_options_are_config_fields_of_the_zoo() {
    use tubelet_models::{timesformer, video_swin, vivit};
    let Some(_) = gpu_or_skip() else { return };
    let count = |m: &dyn tubelet_models::VideoModel| {
        m.named_params()
            .iter()
            .map(|(_, t)| t.numel())
            .sum::<usize>()
    };

    let base = vivit::Config {
        frames: 5,
        height: 8,
        width: 8,
        tubelet: [1, 4, 4],
        hidden: 8,
        layers: 1,
        heads: 2,
        mlp_dim: 8,
        ..vivit::Config::tiny(3)
    };
    let gap = vivit::Classifier::Gap;
    let sampling = vivit::TemporalEncoding::UniformFrameSampling {
        n_sampled_frames: 2,
    };
    for config in [
        vivit::Config {
            representation_size: Some(6),
            ..base.clone()
        },
        vivit::Config {
            temporal_encoding: sampling,
            ..base.clone()
        },
        vivit::Config {
            temporal_encoding: sampling,
            representation_size: Some(4),
            model: vivit::Model::FactorisedSelfAttention,
            attention_order: vivit::AttentionOrder::SpaceTime,
            classifier: gap,
            ..base.clone()
        },
        vivit::Config {
            classifier: vivit::Classifier::First,
            ..base.clone()
        },
        vivit::Config {
            classifier: vivit::Classifier::Gmp,
            model: vivit::Model::FactorisedEncoder { temporal_layers: 1 },
            ..base.clone()
        },
        vivit::Config {
            temporal_heads: Some(4),
            temporal_mlp_dim: Some(20),
            model: vivit::Model::FactorisedEncoder { temporal_layers: 2 },
            ..base.clone()
        },
        vivit::Config {
            temporal_encoding: sampling,
            model: vivit::Model::FactorisedEncoder { temporal_layers: 1 },
            ..base.clone()
        },
    ] {
        // 5 frames: T/(n+1) = 5/3, frames round(1.67), round(3.33) = 2, 3 (as scenic, checked with jax).
        if config.temporal_encoding == sampling {
            assert_eq!(config.sampled_frames(), Some(vec![2, 3]));
        }
        let model = vivit::build(config.clone(), 0).unwrap();
        assert_eq!(count(model.as_ref()), config.num_params(), "{config:?}");
        let x = tubelet::Tensor::zeros(&[1, 5, 8, 8, 3]);
        assert_eq!(model.forward(&x, false).unwrap().shape(), [1, 3]);
    }

    let attn = video_swin::AttnOptions {
        qkv_bias: false,
        qk_scale: Some(0.3),
    };
    let config = video_swin::Config {
        attn,
        patch_norm: false,
        ..video_swin::Config::tiny(3)
    };
    let model = video_swin::VideoSwin::new(config.clone(), 0).unwrap();
    assert_eq!(count(&model), config.num_params());
    assert!(!model
        .named_params()
        .iter()
        .any(|(k, _)| k.contains("patch_embed.norm") || k.ends_with("qkv.bias")));

    // in_chans, a fractional mlp_ratio and the norm eps: counted, and a 2-channel clip runs.
    let config = video_swin::Config {
        in_chans: 2,
        mlp_ratio: 1.5,
        norm_eps: 1e-6,
        frames: 4,
        height: 16,
        width: 16,
        ..video_swin::Config::tiny(3)
    };
    let model = video_swin::VideoSwin::new(config.clone(), 0).unwrap();
    assert_eq!(count(&model), config.num_params());
    let x = tubelet::Tensor::zeros(&[1, 2, 4, 16, 16]);
    assert_eq!(model.forward(&x, false).unwrap().shape(), [1, 3]);
    let err = model
        .forward(&tubelet::Tensor::zeros(&[1, 3, 4, 16, 16]), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("in_chans 2"), "{err}");

    let config = timesformer::Config {
        qkv_bias: false,
        qk_scale: Some(0.2),
        norm_eps: 1e-5,
        ..timesformer::Config::tiny(3)
    };
    let model = timesformer::TimeSformer::new(config.clone(), 0).unwrap();
    assert_eq!(count(&model), config.num_params());
    let config = timesformer::Config {
        in_chans: 1,
        frames: 2,
        height: 16,
        width: 16,
        depth: 1,
        ..timesformer::Config::tiny(3)
    };
    let model = timesformer::TimeSformer::new(config.clone(), 0).unwrap();
    assert_eq!(count(&model), config.num_params());
    let x = tubelet::Tensor::zeros(&[1, 1, 2, 16, 16]);
    let y = tubelet_models::VideoModel::forward(&model, &x, false).unwrap();
    assert_eq!(y.shape(), [1, 3]);
    // num_classes 0: no head, the normalised cls features (B, D) out.
    let config = timesformer::Config {
        num_classes: 0,
        ..config
    };
    let model = timesformer::TimeSformer::new(config.clone(), 0).unwrap();
    assert_eq!(count(&model), config.num_params());
    assert!(!model
        .named_params()
        .iter()
        .any(|(k, _)| k.starts_with("head")));
    let y = tubelet_models::VideoModel::forward(&model, &x, false).unwrap();
    assert_eq!(y.shape(), [1, config.embed_dim]);

    // UniFormer with a fractional mlp_ratio: counted, and it runs.
    let config = tubelet_models::uniformer::Config {
        mlp_ratio: 1.5,
        ..tubelet_models::uniformer::Config::tiny(3)
    };
    let model = tubelet_models::uniformer::UniFormer::new(config.clone(), 0).unwrap();
    assert_eq!(count(&model), config.num_params());
    let [t, h, w] = tubelet_models::VideoModel::clip(&model);
    let x = tubelet::Tensor::zeros(&[1, 3, t, h, w]);
    let y = tubelet_models::VideoModel::forward(&model, &x, false).unwrap();
    assert_eq!(y.shape(), [1, 3]);

    // ViViT's outputs: the pre-logits (B, R) and the encoder's tokens (B, N(+1), D), without
    // the parameters scenic never makes; Model 2 has no pre-classifier output.
    for (output, shape, model) in [
        (
            vivit::Output::PreLogits,
            vec![1, 6],
            vivit::Model::SpatioTemporal,
        ),
        (
            vivit::Output::PreClassifier,
            vec![1, 21, 8],
            vivit::Model::SpatioTemporal,
        ),
        (
            vivit::Output::PreLogits,
            vec![1, 6],
            vivit::Model::FactorisedEncoder { temporal_layers: 1 },
        ),
    ] {
        let config = vivit::Config {
            output,
            representation_size: Some(6),
            model,
            ..base.clone()
        };
        let model = vivit::build(config.clone(), 0).unwrap();
        assert_eq!(count(model.as_ref()), config.num_params(), "{config:?}");
        let keys: Vec<String> = model.named_params().into_iter().map(|(k, _)| k).collect();
        assert!(!keys.iter().any(|k| k.starts_with("output_projection")));
        assert_eq!(
            keys.iter().any(|k| k.starts_with("pre_logits")),
            output == vivit::Output::PreLogits
        );
        let x = tubelet::Tensor::zeros(&[1, 5, 8, 8, 3]);
        assert_eq!(model.forward(&x, false).unwrap().shape(), shape);
    }
    let err = vivit::build(
        vivit::Config {
            output: vivit::Output::PreClassifier,
            model: vivit::Model::FactorisedEncoder { temporal_layers: 1 },
            ..base.clone()
        },
        0,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("PreClassifier"), "{err}");

    // ViViT Model 2's spatial-only baseline: no temporal encoder, in the count and the keys;
    // the baseline belongs to Model 2 only.
    let config = vivit::Config {
        spatial_only_baseline: true,
        model: vivit::Model::FactorisedEncoder { temporal_layers: 2 },
        ..base.clone()
    };
    let model = vivit::build(config.clone(), 0).unwrap();
    assert_eq!(count(model.as_ref()), config.num_params());
    assert!(!model
        .named_params()
        .iter()
        .any(|(k, _)| k.contains("TemporalTransformer")));
    let x = tubelet::Tensor::zeros(&[1, 5, 8, 8, 3]);
    assert_eq!(model.forward(&x, false).unwrap().shape(), [1, 3]);
    let err = vivit::build(
        vivit::Config {
            spatial_only_baseline: true,
            ..base.clone()
        },
        0,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("spatial_only_baseline"), "{err}");
}
