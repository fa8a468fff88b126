//! The model zoo through its registry: every preset's counts, every tiny preset trains, the CLI's
//! train / run / parity logic (as library calls), and their errors.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;
use serde_json::json;
use tubelet::io::{self, HostTensor};
use tubelet::optim::{AdamW, AdamWConfig};
use tubelet::{gpu_or_skip, Indices, Rng, Tensor};
use tubelet_cli::clips::{model_input, render};
use tubelet_cli::{parity, run, train};
use tubelet_data::synthetic::{Split, NUM_CLASSES};
use tubelet_models::vivit::{Config, ViViT};
use tubelet_models::BuildOptions;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tubelet-zoo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn every_preset_has_counts_and_tiny_ones_match_the_built_model() {
    let presets = tubelet_models::presets();
    assert!(
        presets.iter().any(|p| p.tiny),
        "no preset trains on the synthetic set"
    );
    let mut names: Vec<&str> = presets.iter().map(|p| p.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), presets.len(), "duplicate preset names");
    for p in &presets {
        // Paper-size models are not built here (too slow and large on lavapipe).
        assert!(
            p.params > 0 && p.gmacs > 0.0,
            "{}: params {}, GMACs {}",
            p.name,
            p.params,
            p.gmacs
        );
        assert!(
            p.clip.iter().all(|&d| d > 0),
            "{}: clip {:?}",
            p.name,
            p.clip
        );
    }
    let Some(_) = gpu_or_skip() else { return };
    for p in presets.iter().filter(|p| p.tiny) {
        let model = (p.build)(&BuildOptions::seed(0)).unwrap();
        let n: usize = model.named_params().iter().map(|(_, t)| t.numel()).sum();
        assert_eq!(
            n, p.params,
            "{}: built model has {n} parameters, the preset says {}",
            p.name, p.params
        );
        assert_eq!(model.clip(), p.clip, "{}", p.name);
        assert_eq!(
            model.num_classes(),
            NUM_CLASSES,
            "{}: a tiny preset must fit the synthetic set",
            p.name
        );
    }
}

#[test]
fn every_tiny_preset_learns_a_fixed_batch_and_every_parameter_gets_a_gradient() {
    let Some(_) = gpu_or_skip() else { return };
    const STEPS: usize = 10;
    for p in tubelet_models::presets().into_iter().filter(|p| p.tiny) {
        let model = (p.build)(&BuildOptions::seed(1)).unwrap();
        let params = model.named_params();
        let mut opt = AdamW::new(
            params.clone(),
            AdamWConfig {
                lr: 2e-3,
                ..Default::default()
            },
        )
        .unwrap();
        // The same batch every step: the loss must fall (memorisation, a plumbing check).
        let (x, y) = render(0, model.clip(), Split::Train, 0, 4);
        let x = model_input(model.as_ref(), &x, 4).unwrap();
        let labels = Indices::from_slice(&y).unwrap();
        let mut losses = Vec::new();
        for step in 0..STEPS {
            let loss = model.forward(&x, true).unwrap().cross_entropy(&labels);
            let grads = loss.backward().unwrap();
            losses.push(loss.item().unwrap());
            // Checked after a few updates: zero-initialised heads (scenic) pass no gradient
            // behind them before their first update.
            if step == STEPS - 1 {
                let dead = model.params_unreachable_from_the_loss();
                for (name, t) in &params {
                    let g = grads
                        .get(t)
                        .unwrap_or_else(|| panic!("{}: {name} got no gradient", p.name));
                    let v = g.to_vec().unwrap();
                    assert!(
                        v.iter().all(|x| x.is_finite()),
                        "{}: {name} has a non-finite gradient",
                        p.name
                    );
                    if dead.contains(name) {
                        // The architecture itself cuts these off from the loss (the model says why).
                        assert!(
                            v.iter().all(|&x| x == 0.0),
                            "{}: {name} should be unreachable",
                            p.name
                        );
                    } else {
                        assert!(
                            v.iter().any(|&x| x != 0.0),
                            "{}: {name} has an all-zero gradient",
                            p.name
                        );
                    }
                }
            }
            opt.step(&grads).unwrap();
        }
        assert!(
            losses.iter().all(|l| l.is_finite()),
            "{}: {losses:?}",
            p.name
        );
        assert!(
            losses[STEPS - 1] < 0.8 * losses[0],
            "{}: loss did not fall: {losses:?}",
            p.name
        );
    }
}

fn train_args(extra: &[&str]) -> train::Args {
    // The run directory (logs, plots) goes to the test's temporary folder, not the crate's.
    let run_dir = tmp("runs").to_str().unwrap().to_string();
    let mut argv = vec![
        "train".to_string(),
        "--quiet".into(),
        "--run-dir".into(),
        run_dir,
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    train::Args::try_parse_from(argv).unwrap()
}

#[test]
fn train_saves_a_checkpoint_that_run_loads() {
    let Some(_) = gpu_or_skip() else { return };
    let path = tmp("vivit-tiny.safetensors");
    let save = path.to_str().unwrap();
    train::run(train_args(&[
        "--steps",
        "2",
        "--batch",
        "2",
        "--eval-clips",
        "2",
        "--save",
        save,
    ]))
    .unwrap();
    let file = io::read(&path).unwrap();
    let model = tubelet_models::build("vivit-tiny", &BuildOptions::seed(0)).unwrap();
    let keys: Vec<String> = model
        .named_params()
        .into_iter()
        .chain(model.named_buffers())
        .map(|(k, _)| k)
        .collect();
    assert_eq!(file.keys().cloned().collect::<Vec<_>>(), {
        let mut k = keys.clone();
        k.sort();
        k
    });

    let args =
        run::Args::try_parse_from(["run", "--weights", save, "--topk", "3", "--clip-index", "4"])
            .unwrap();
    let pred = run::predict(&args).unwrap();
    assert_eq!(pred.top.len(), 3);
    assert!(
        pred.top.windows(2).all(|w| w[0].1 >= w[1].1),
        "{:?}",
        pred.top
    );
    assert!(pred.top.iter().map(|t| t.1).sum::<f64>() <= 1.0 + 1e-9);
    assert!(pred.label < NUM_CLASSES && pred.num_classes == NUM_CLASSES);
    // Trained weights, not the seeded initialisation (whose zero head gives uniform output).
    assert!(
        pred.top[0].1 > 1.0 / NUM_CLASSES as f64 + 1e-6,
        "{:?}",
        pred.top
    );
}

#[test]
fn a_diverging_run_overwrites_neither_its_weights_nor_its_save_file() {
    let Some(_) = gpu_or_skip() else { return };
    // train --weights good --save good --lr 1e30: the good file must survive byte for byte.
    let good = tmp("good.safetensors");
    let g = good.to_str().unwrap();
    train::run(train_args(&[
        "--steps",
        "1",
        "--batch",
        "2",
        "--eval-clips",
        "2",
        "--save",
        g,
    ]))
    .unwrap();
    let before = std::fs::read(&good).unwrap();
    let err = train::run(train_args(&[
        "--steps",
        "4",
        "--batch",
        "2",
        "--eval-clips",
        "2",
        "--warmup",
        "1",
        "--lr",
        "1e30",
        "--weights",
        g,
        "--save",
        g,
    ]))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("diverged") && err.contains("overwrote nothing"),
        "{err}"
    );
    assert_eq!(std::fs::read(&good).unwrap(), before);
}

#[test]
fn train_and_run_refuse_unknown_and_oversized_models_and_unfit_weights() {
    let err = train::run(train_args(&["--model", "vivit-huge"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown model \"vivit-huge\"") && err.contains("vivit-tiny"),
        "{err}"
    );
    let err = train::run(train_args(&["--model", "vivit-b-16x2"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("too large for the synthetic set") && err.contains("vivit-tiny"),
        "{err}"
    );
    let err = train::run(train_args(&["--save", "/nonexistent-folder/x.safetensors"]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
    let err = run::predict(&run::Args::try_parse_from(["run", "--model", "nope"]).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown model \"nope\""), "{err}");
    assert!(run::Args::try_parse_from(["run", "--topk", "0"]).is_err());

    let Some(_) = gpu_or_skip() else { return };
    let garbage = tmp("garbage.safetensors");
    std::fs::write(&garbage, b"not weights").unwrap();
    let args = run::Args::try_parse_from(["run", "--weights", garbage.to_str().unwrap()]).unwrap();
    let err = run::predict(&args).unwrap_err().to_string();
    assert!(err.contains("not a valid safetensors file"), "{err}");

    // A checkpoint of the right model with one key dropped and one of the wrong shape.
    let model = tubelet_models::build("vivit-tiny", &BuildOptions::seed(0)).unwrap();
    let mut host: Vec<(String, Vec<usize>, Vec<f32>)> = model
        .named_params()
        .iter()
        .filter(|(k, _)| k != "cls")
        .map(|(k, t)| (k.clone(), t.shape().to_vec(), vec![0.0; t.numel()]))
        .collect();
    let i = host
        .iter()
        .position(|(k, _, _)| k == "embedding/bias")
        .unwrap();
    host[i] = ("embedding/bias".into(), vec![3], vec![0.0; 3]);
    let unfit = tmp("unfit.safetensors");
    io::save_host(&unfit, &host, None).unwrap();
    let args = run::Args::try_parse_from(["run", "--weights", unfit.to_str().unwrap()]).unwrap();
    let err = run::predict(&args).unwrap_err().to_string();
    assert!(err.contains("missing keys (1): cls"), "{err}");
    assert!(
        err.contains("embedding/bias: file [3], model [64]"),
        "{err}"
    );
}

/// A tiny `vivit.ViViT` in scenic's terms, with a non-square clip and tubelet so that a swapped
/// axis shows up as a shape error: patches.size = (fh, fw, ft) = (4, 8, 2).
fn vivit_config() -> serde_json::Value {
    json!({
        "num_classes": 5, "mlp_dim": 24, "num_layers": 2, "num_heads": 2, "hidden_size": 16,
        "patches": {"size": [4, 8, 2]},
        "temporal_encoding_config": {"method": "3d_conv", "kernel_init_method": "central_frame_initializer"},
        "attention_config": {"type": "spacetime"},
        "classifier": "token", "dropout_rate": 0.0, "attention_dropout_rate": 0.0,
        "train": true
    })
}

fn host(rng: &mut Rng, shape: &[usize]) -> HostTensor {
    let n = shape.iter().product();
    HostTensor {
        shape: shape.to_vec(),
        data: (0..n).map(|_| (0.5 * rng.normal()) as f32).collect(),
    }
}

/// The parity input for [`vivit_config`], and the model it describes (ours, built directly).
fn vivit_vector() -> (BTreeMap<String, HostTensor>, ViViT) {
    #[allow(clippy::needless_update)] // other ViViT models may add fields to Config
    let model = ViViT::new(
        Config {
            frames: 4,
            height: 8,
            width: 16,
            tubelet: [2, 4, 8],
            hidden: 16,
            layers: 2,
            heads: 2,
            mlp_dim: 24,
            num_classes: 5,
            ..Config::tiny(5)
        },
        3,
    )
    .unwrap();
    let mut rng = Rng::new(42);
    let mut file = BTreeMap::new();
    file.insert("input".to_string(), host(&mut rng, &[2, 4, 8, 16, 3]));
    file.insert("cotangent".to_string(), host(&mut rng, &[2, 5]));
    for (k, t) in model.named_params() {
        // Random values everywhere (the scenic init has zero heads and cls tokens).
        let h = host(&mut rng, t.shape());
        t.write(&h.data).unwrap();
        file.insert(format!("param.{k}"), h);
    }
    (file, model)
}

fn write_input(name: &str, file: &BTreeMap<String, HostTensor>) -> PathBuf {
    let path = tmp(name);
    let t: Vec<_> = file
        .iter()
        .map(|(k, h)| (k.clone(), h.shape.clone(), h.data.clone()))
        .collect();
    io::save_host(&path, &t, None).unwrap();
    path
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        // Same kernels on both sides; only the order of a few reductions may differ.
        assert!(
            (g - w).abs() <= 1e-5 + 1e-4 * w.abs(),
            "{what}[{i}]: parity {g}, direct {w}"
        );
    }
}

#[test]
fn parity_vivit_matches_the_model_run_directly() {
    let Some(_) = gpu_or_skip() else { return };
    let (file, model) = vivit_vector();
    let input = write_input("parity-in.safetensors", &file);
    let output = tmp("parity-out.safetensors");
    let config = vivit_config().to_string();
    let w = parity::run_files("vivit.ViViT", &config, &input, &output).unwrap();
    assert_eq!(w.output_shape, vec![2, 5]);
    let out = io::read(&output).unwrap();

    let x = Tensor::from_slice(&file["input"].data, &file["input"].shape)
        .unwrap()
        .param();
    let y = model.forward(&x).unwrap();
    let grads = y
        .backward_with(Tensor::from_slice(&file["cotangent"].data, &[2, 5]).unwrap())
        .unwrap();
    assert_close("output", &out["output"].data, &y.to_vec().unwrap());
    assert_close(
        "grad.input",
        &out["grad.input"].data,
        &grads.get(&x).unwrap().to_vec().unwrap(),
    );
    let params = model.named_params();
    assert_eq!(
        out.len(),
        2 + params.len(),
        "{:?}",
        out.keys().collect::<Vec<_>>()
    );
    for (k, t) in &params {
        let g = &out[&format!("grad.{k}")];
        assert_eq!(g.shape, t.shape(), "grad.{k}");
        assert_close(
            &format!("grad.{k}"),
            &g.data,
            &grads.get(t).unwrap().to_vec().unwrap(),
        );
    }

    // Without a cotangent: the output alone; in eval, scenic's default dropout rates are inert.
    let mut plain = file.clone();
    plain.remove("cotangent");
    let mut cfg = vivit_config();
    let obj = cfg.as_object_mut().unwrap();
    obj.remove("dropout_rate");
    obj.remove("attention_dropout_rate");
    obj.insert("train".into(), json!(false));
    let out = parity::run_tensors("vivit.ViViT", &cfg, &plain).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "output");
    assert_close("output (no cotangent)", &out[0].2, &y.to_vec().unwrap());
}

/// Runs the parity core on `file` with `config` and returns its error message.
fn parity_err(config: &serde_json::Value, file: &BTreeMap<String, HostTensor>) -> String {
    parity::run_tensors("vivit.ViViT", config, file)
        .unwrap_err()
        .to_string()
}

#[test]
fn parity_errors_name_the_problem() {
    let Some(_) = gpu_or_skip() else { return };
    let (file, _) = vivit_vector();
    let cfg = vivit_config();

    let err = parity::run_tensors("vivit.Nope", &cfg, &file)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("unknown parity module \"vivit.Nope\"") && err.contains("vivit.ViViT"),
        "{err}"
    );

    // Parameters: missing, wrongly shaped, unexpected — all in one message.
    let mut bad = file.clone();
    bad.remove("param.cls");
    bad.insert(
        "param.embedding/bias".into(),
        HostTensor {
            shape: vec![15],
            data: vec![0.0; 15],
        },
    );
    bad.insert(
        "param.Transformer/extra".into(),
        HostTensor {
            shape: vec![1],
            data: vec![0.0],
        },
    );
    let err = parity_err(&cfg, &bad);
    assert!(err.contains("missing keys (1): cls"), "{err}");
    assert!(
        err.contains("embedding/bias: file [15], model [16]"),
        "{err}"
    );
    assert!(
        err.contains("unexpected keys (1): Transformer/extra"),
        "{err}"
    );

    let mut bad = file.clone();
    bad.insert(
        "cotangent".into(),
        HostTensor {
            shape: vec![2, 4],
            data: vec![0.0; 8],
        },
    );
    let err = parity_err(&cfg, &bad);
    assert!(
        err.contains("cotangent has shape [2, 4]") && err.contains("[2, 5]"),
        "{err}"
    );
    let mut bad = file.clone();
    bad.remove("input");
    assert!(parity_err(&cfg, &bad).contains("no tensor named \"input\""));
    let mut bad = file.clone();
    bad.insert(
        "weights".into(),
        HostTensor {
            shape: vec![1],
            data: vec![0.0],
        },
    );
    assert!(parity_err(&cfg, &bad).contains("neither input, cotangent nor param.<key>: weights"));

    // Config: a missing required field, an unknown one, a wrong type, an unported setting.
    let edit = |f: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let mut c = vivit_config();
        f(c.as_object_mut().unwrap());
        parity_err(&c, &file)
    };
    let err = edit(&|c| {
        c.remove("hidden_size");
    });
    assert!(
        err.contains("missing required field \"hidden_size\""),
        "{err}"
    );
    let err = edit(&|c| {
        c.remove("train");
    });
    assert!(err.contains("missing required field \"train\""), "{err}");
    let err = edit(&|c| {
        c.insert("hidden_dim".into(), json!(16));
    });
    assert!(
        err.contains("unknown field(s) \"hidden_dim\"") && err.contains("hidden_size"),
        "{err}"
    );
    let err = edit(&|c| {
        c.insert("num_heads".into(), json!("2"));
    });
    assert!(
        err.contains("\"num_heads\" must be a non-negative integer"),
        "{err}"
    );
    let err = edit(&|c| {
        c.insert("classifier".into(), json!("max"));
    });
    assert!(
        err.contains("classifier \"max\" is not one of scenic's"),
        "{err}"
    );
    let err = edit(&|c| {
        c.remove("dropout_rate");
    });
    assert!(err.contains("dropout_rate 0.1"), "{err}");
    // Dotted keys work like nested ones; a wrong patch order shows as misshaped parameters.
    let err = edit(&|c| {
        c.remove("patches");
        c.insert("patches.size".into(), json!([8, 4, 2]));
    });
    assert!(
        err.contains("wrongly shaped keys") && err.contains("embedding/kernel"),
        "{err}"
    );

    // Files: a config that is neither JSON nor a file, and an input that is not safetensors.
    let err = parity::run_files("vivit.ViViT", "no-such-config.json", &tmp("x"), &tmp("y"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("neither a JSON object nor a readable file"),
        "{err}"
    );
    let err = parity::run_files("vivit.ViViT", "{\"a\": ", &tmp("x"), &tmp("y"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid JSON"), "{err}");
}

/// The parity tool's ViViT settings beyond Model 1 (scenic's assertions, the port's limits): each
/// refused with a message that names the field. Config errors come before any GPU work.
#[test]
fn parity_vivit_factorised_settings_are_checked() {
    let file = BTreeMap::from([(
        "input".to_string(),
        HostTensor {
            shape: vec![1, 4, 8, 16, 3],
            data: vec![0.0; 1536],
        },
    )]);
    let vivit = |f: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let mut c = vivit_config();
        f(c.as_object_mut().unwrap());
        parity::run_tensors("vivit.ViViT", &c, &file)
            .unwrap_err()
            .to_string()
    };
    let m3 = json!({"type": "factorized_self_attention_block", "attention_order": "time_space"});
    let err = vivit(&|c| {
        c.insert("attention_config".into(), m3.clone());
    });
    assert!(err.contains("no token classifier"), "{err}");
    let err = vivit(&|c| {
        c.insert(
            "attention_config".into(),
            json!({"type": "factorized_self_attention_block"}),
        );
        c.insert("classifier".into(), json!("gap"));
    });
    assert!(
        err.contains("missing required field \"attention_config.attention_order\""),
        "{err}"
    );
    let err = vivit(&|c| {
        c.insert(
            "attention_config".into(),
            json!({"type": "factorized_self_attention_block", "attention_order": "spacetime"}),
        );
        c.insert("classifier".into(), json!("gap"));
    });
    assert!(
        err.contains("attention_order \"spacetime\"") && err.contains("scenic accepts"),
        "{err}"
    );
    let err = vivit(&|c| {
        c.insert(
            "attention_config".into(),
            json!({"type": "factorized_dot_product_attention"}),
        );
        c.insert("classifier".into(), json!("gap"));
        c.insert("num_heads".into(), json!(1));
    });
    assert!(err.contains("num_heads 1 must be even"), "{err}");
    let err = vivit(&|c| {
        c.insert("attention_config".into(), json!({}));
    });
    assert!(
        err.contains("missing required field \"attention_config.type\""),
        "{err}"
    );

    let fe = |f: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let mut c = json!({
            "num_classes": 5, "hidden_size": 16, "patches": {"size": [4, 8, 2]},
            "spatial_mlp_dim": 24, "spatial_num_layers": 2, "spatial_num_heads": 2,
            "temporal_mlp_dim": 24, "temporal_num_layers": 1, "temporal_num_heads": 2,
            "temporal_encoding_config": {"method": "3d_conv"}, "attention_config": {"type": "factorized_encoder"},
            "classifier": "token", "train": false
        });
        f(c.as_object_mut().unwrap());
        parity::run_tensors("vivit.SpaceTimeViViT", &c, &file)
            .unwrap_err()
            .to_string()
    };
    let err = fe(&|c| {
        c.insert("temporal_num_heads".into(), json!(3));
    });
    assert!(
        err.contains("hidden 16 is not divisible by heads 3"),
        "{err}"
    );
    let err = fe(&|c| {
        c.insert("classifier".into(), json!("cls"));
    });
    assert!(
        err.contains("classifier \"cls\" is not one of scenic's"),
        "{err}"
    );
    // spatial_only_baseline is implemented (fixture vivit.SpaceTimeViViT.spatial_only_baseline
    // in parity_options.rs); a value that is not a boolean is an error naming it.
    let err = fe(&|c| {
        c.insert(
            "attention_config".into(),
            json!({"type": "factorized_encoder", "spatial_only_baseline": "yes"}),
        );
    });
    assert!(
        err.contains("\"attention_config.spatial_only_baseline\" must be true or false"),
        "{err}"
    );
    let err = fe(&|c| {
        c.remove("spatial_num_layers");
    });
    assert!(
        err.contains("missing required field \"spatial_num_layers\""),
        "{err}"
    );
}
