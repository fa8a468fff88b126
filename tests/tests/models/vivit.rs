//! ViViT (models/src/vivit.rs, models/src/vivit/): counts against the paper and seed-models.md,
//! config checks, key names and input errors (`zoo.rs` trains every tiny ViViT preset).

use tubelet::{gpu_or_skip, Tensor};
use tubelet_data::synthetic::NUM_CLASSES;
use tubelet_models::vivit::{Config, ViViT};

#[test]
fn vivit_rejects_a_wrong_input_shape() {
    let Some(_) = gpu_or_skip() else { return };
    let model = ViViT::new(
        Config {
            layers: 1,
            ..Config::tiny(NUM_CLASSES)
        },
        0,
    )
    .unwrap();
    let err = model
        .forward(&Tensor::zeros(&[1, 3, 8, 32, 32]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("[1, 3, 8, 32, 32]"), "{err}");
    let err = ViViT::new(
        Config {
            hidden: 30,
            heads: 4,
            ..Config::tiny(8)
        },
        0,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("hidden 30"), "{err}");
}

#[test]
fn vivit_b_16x2_counts_match_the_paper() {
    // seed-models.md §0.1: ViViT-B/16×2 Model 1, 88,954,000 parameters, 451.5 GMACs (paper 455.2).
    let c = Config::vivit_b_16x2();
    assert_eq!(c.num_params(), 88_954_000);
    let g = c.macs() / 1e9;
    assert!((g - 451.5).abs() / 451.5 < 0.01, "{g} GMACs");
}

#[test]
fn vivit_tiny_parameter_count_matches_the_built_model() {
    let Some(_) = gpu_or_skip() else { return };
    let cfg = Config::tiny(NUM_CLASSES);
    let model = ViViT::new(cfg.clone(), 0).unwrap();
    let n: usize = model.named_params().iter().map(|(_, t)| t.numel()).sum();
    assert_eq!(n, cfg.num_params());
}

// ViViT Models 2-4 (models/src/vivit/factorised.rs).

use tubelet_models::vivit::{build, Model};

fn factorised_models() -> [Model; 3] {
    [
        Model::FactorisedEncoder { temporal_layers: 1 },
        Model::FactorisedSelfAttention,
        Model::FactorisedDotProduct,
    ]
}

#[test]
fn vivit_factorised_counts_match_seed_models() {
    // seed-models.md §0.1 / §1.2 (D) counts, 400 classes; GMACs within 1%.
    let check = |c: Config, params: usize, gmacs: f64| {
        assert_eq!(c.num_params(), params, "{:?}", c.model);
        let g = c.macs() / 1e9;
        assert!(
            (g - gmacs).abs() / gmacs < 0.01,
            "{:?}: {g} GMACs, expected {gmacs}",
            c.model
        );
    };
    check(Config::vivit_b_16x2_fe(), 115_062_928, 283.3);
    check(Config::vivit_b_16x2_fsa(), 117_319_312, 371.1);
    check(Config::vivit_b_16x2_fdp(), 88_952_464, 276.2);
    // L FE as the K400 config says (Lt = 24): 606.8M; with the paper's Lt = 4: 354.9M.
    assert_eq!(Config::vivit_l_16x2_fe().num_params(), 606_827_920);
    let paper = Config {
        model: Model::FactorisedEncoder { temporal_layers: 4 },
        ..Config::vivit_l_16x2_fe()
    };
    assert_eq!(paper.num_params(), 354_903_440);
    let presets = tubelet_models::presets();
    let fe = presets
        .iter()
        .find(|p| p.name == "vivit-b-16x2-fe")
        .unwrap();
    assert_eq!(fe.params, 115_062_928);
}

#[test]
fn vivit_factorised_configs_are_checked() {
    let fdp = Config {
        heads: 3,
        hidden: 48,
        model: Model::FactorisedDotProduct,
        ..Config::tiny(8)
    };
    let err = build(fdp, 0).err().unwrap().to_string();
    assert!(err.contains("heads 3"), "{err}");
    let fe = Config {
        model: Model::FactorisedEncoder { temporal_layers: 0 },
        ..Config::tiny(8)
    };
    assert!(build(fe, 0).is_err());
    let err = ViViT::new(Config::tiny_model(Model::FactorisedSelfAttention, 8), 0)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("vivit::build"), "{err}");
}

#[test]
fn vivit_factorised_tiny_parameter_counts_and_keys() {
    let Some(_) = gpu_or_skip() else { return };
    for model in factorised_models() {
        let cfg = Config {
            layers: 2,
            ..Config::tiny_model(model, NUM_CLASSES)
        };
        let m = build(cfg.clone(), 0).unwrap();
        let params = m.named_params();
        let n: usize = params.iter().map(|(_, t)| t.numel()).sum();
        assert_eq!(n, cfg.num_params(), "{model:?}");
        let keys: Vec<_> = params.iter().map(|(k, _)| k.as_str()).collect();
        let want: &[&str] = match model {
            Model::FactorisedEncoder { .. } => &[
                "cls_SpatialTransformer",
                "cls_TemporalTransformer",
                "SpatialTransformer/posembed_input/pos_embedding",
                "TemporalTransformer/encoder_norm/scale",
                "TemporalTransformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel",
                "SpatialTransformer/encoderblock_1/MlpBlock_0/Dense_1/bias",
                "embedding/kernel",
                "output_projection/kernel",
            ],
            Model::FactorisedSelfAttention => &[
                "Transformer/encoderblock_0/LayerNorm_time/scale",
                "Transformer/encoderblock_0/MultiHeadDotProductAttention_time/out/kernel",
                "Transformer/encoderblock_1/MultiHeadDotProductAttention_space/value/bias",
                "Transformer/encoderblock_0/LayerNorm_mlp/bias",
                "Transformer/encoderblock_0/MlpBlock/Dense_0/kernel",
                "Transformer/posembed_input/pos_embedding",
                "Transformer/encoder_norm/scale",
            ],
            _ => &[
                "Transformer/encoderblock_1/MultiHeadDotProductAttention_0/key/kernel",
                "Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel",
                "Transformer/posembed_input/pos_embedding",
            ],
        };
        for k in want {
            assert!(keys.contains(k), "{model:?}: missing {k} in {keys:?}");
        }
        assert!(
            !keys.contains(&"cls") || matches!(model, Model::SpatioTemporal),
            "{model:?} has no cls token"
        );
    }
}
