//! Official checkpoint files (fixtures/gen_checkpoints.py wrote them with torch.save): each
//! project's container and prefixes, the legacy format, half and bfloat16 storages, integer
//! buffers, a hostile pickle; loading them into the zoo's models, with logits equal to the
//! official code's; fine-tuning loads; and a save-load round trip for every tiny preset.
//!
//! The fixtures hold the parameters of the parity vectors (models/tests/fixtures/*.in), which
//! the official code ran: loading a fixture into a model built with the parity configuration
//! and comparing with the parity vector's `want` output checks the whole path from `.pth` to
//! logits against the official code (Video Swin's backbone and UniFormer below); for the other
//! families the loaded tensors are checked bit for bit against those parity parameters, whose
//! logits `tests/tests/parity.rs` compares with the official code's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tubelet::io::{self, HostTensor};
use tubelet::{gpu_or_skip, no_grad, Tensor};
use tubelet_models::{uniformer, video_swin, VideoModel};
use tubelet_train::weights::{load_exact, load_finetune, read_weights, FileFormat};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn parity(module: &str, part: &str) -> BTreeMap<String, HostTensor> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../models/tests/fixtures/{module}.{part}.safetensors"
    ));
    io::read(&p).unwrap()
}

fn params_of(module: &str) -> BTreeMap<String, HostTensor> {
    parity(module, "in")
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix("param.").map(|k| (k.to_string(), v)))
        .collect()
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tubelet-train-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Every parity parameter is in the file under `prefix + key`, bit for bit.
fn assert_holds(
    file: &BTreeMap<String, HostTensor>,
    want: &BTreeMap<String, HostTensor>,
    prefix: &str,
) {
    for (k, w) in want {
        let got = file
            .get(&format!("{prefix}{k}"))
            .unwrap_or_else(|| panic!("{prefix}{k} not in the file"));
        assert_eq!(got.shape, w.shape, "{k}");
        assert_eq!(got.data, w.data, "{k}");
    }
}

#[test]
fn each_projects_container_and_prefixes_are_read() {
    // mmaction2 recogniser: state_dict beside meta and optimizer, backbone./cls_head. keys, and
    // the int64 relative_position_index buffers.
    let f = read_weights(&fixture("swin_mmaction2.pth")).unwrap();
    assert_eq!(
        (f.format, f.container.as_deref()),
        (FileFormat::TorchZip, Some("state_dict"))
    );
    let swin = params_of("video_swin.SwinTransformer3D");
    assert_holds(&f.tensors, &swin, "backbone.");
    assert_eq!(
        f.tensors.len(),
        swin.len() + 2,
        "the backbone with its 4 index buffers, the head"
    );
    let idx = &f.tensors["backbone.layers.0.blocks.1.attn.relative_position_index"];
    assert_eq!(
        (
            idx.shape.as_slice(),
            f.dtypes["backbone.layers.0.blocks.1.attn.relative_position_index"].as_str()
        ),
        (&[32, 32][..], "i64")
    );
    // index = (dd + 1)·7·7 + (dh + 3)·7 + (dw + 3) for window (2, 4, 4): 73 on the diagonal.
    assert_eq!((idx.data[0], idx.data[1], idx.data[32]), (73.0, 72.0, 74.0));
    assert_eq!(f.tensors["cls_head.fc_cls.weight"].shape, vec![5, 16]);

    // TSM: DataParallel's module. in front of TSN's base_model./new_fc.
    let f = read_weights(&fixture("tsm_tsn.pth")).unwrap();
    assert_eq!(f.container.as_deref(), Some("state_dict"));
    assert_holds(&f.tensors, &params_of("tsm.TSN"), "module.");

    // SlowFast/MViT .pyth: model_state, no prefix, the optimiser state and cfg beside it.
    let f = read_weights(&fixture("mvit.pyth")).unwrap();
    assert_eq!(f.container.as_deref(), Some("model_state"));
    let mvit = params_of("mvit.MViT");
    assert_holds(&f.tensors, &mvit, "");
    assert_eq!(
        f.tensors.len(),
        mvit.len(),
        "only the model state, not the optimiser's tensors"
    );

    // TimeSformer .pyth: model_state with the wrapper's model. prefix.
    let f = read_weights(&fixture("timesformer.pyth")).unwrap();
    assert_eq!(f.container.as_deref(), Some("model_state"));
    assert_holds(
        &f.tensors,
        &params_of("timesformer.VisionTransformer.divided"),
        "model.",
    );

    // UniFormer: a flat state dict with int64 num_batches_tracked; and the same in the legacy
    // (pre-1.6) format.
    let uni = params_of("uniformer.Uniformer");
    for (name, format) in [
        ("uniformer_flat.pth", FileFormat::TorchZip),
        ("uniformer_legacy.pth", FileFormat::TorchLegacy),
    ] {
        let f = read_weights(&fixture(name)).unwrap();
        assert_eq!((f.format, f.container.as_deref()), (format, None), "{name}");
        assert_holds(&f.tensors, &uni, "");
        assert_eq!(f.tensors.len(), uni.len(), "{name}");
        assert_eq!(f.dtypes["norm.num_batches_tracked"], "i64", "{name}");
    }
}

#[test]
fn half_and_bfloat16_storages_are_widened() {
    let swin = params_of("video_swin.SwinTransformer3D");
    for (name, dtype, rel) in [
        ("swin_mmaction2_f16.pth", "f16", 2f32.powi(-11)),
        ("swin_mmaction2_bf16.pth", "bf16", 2f32.powi(-8)),
    ] {
        let f = read_weights(&fixture(name)).unwrap();
        let mut rounded = 0;
        for (k, w) in swin
            .iter()
            .filter(|(k, _)| !k.ends_with("relative_position_index"))
        {
            let key = format!("backbone.{k}");
            assert_eq!(f.dtypes[&key], dtype, "{name} {key}");
            let got = &f.tensors[&key];
            assert_eq!(got.shape, w.shape);
            for (g, w) in got.data.iter().zip(&w.data) {
                // Round to nearest: within half an ulp, plus f16's subnormal step.
                assert!(
                    (g - w).abs() <= rel * w.abs() + 6e-8,
                    "{name} {key}: {g} vs {w}"
                );
                rounded += (g != w) as usize;
            }
        }
        assert!(
            rounded > 1000,
            "{name}: only {rounded} values differ from f32; the storage was not {dtype}"
        );
        assert_eq!(
            f.dtypes["backbone.layers.1.blocks.0.attn.relative_position_index"],
            "i64"
        );
    }
}

#[test]
fn a_pickle_asking_for_os_system_is_refused_and_nothing_runs() {
    let _ = std::fs::remove_file("/tmp/tubelet-pwned");
    let err = read_weights(&fixture("evil.pth")).unwrap_err().to_string();
    assert!(
        err.contains("system")
            && err.contains("never runs pickled code")
            && err.contains("evil.pth"),
        "{err}"
    );
    assert!(
        err.contains("at hook"),
        "the message says where the object sits: {err}"
    );
    assert!(
        !Path::new("/tmp/tubelet-pwned").exists(),
        "the pickled shell command ran"
    );
}

#[test]
fn files_that_are_not_checkpoints_are_clear_errors() {
    let err = read_weights(&fixture("no_state_dict.pth"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no state dict found") && err.contains("epoch, lr, note"),
        "{err}"
    );
    let garbage = tmp("garbage.pth");
    std::fs::write(&garbage, b"this is not a checkpoint at all, just text").unwrap();
    let err = read_weights(&garbage).unwrap_err().to_string();
    assert!(
        err.contains("not a checkpoint") && err.contains("garbage.pth"),
        "{err}"
    );
    let err = read_weights(&tmp("missing.pth")).unwrap_err().to_string();
    assert!(
        err.contains("missing.pth") && err.contains("cannot open"),
        "{err}"
    );
}

#[test]
fn nan_or_inf_in_a_weights_file_names_the_tensor() {
    let path = tmp("nan.safetensors");
    // Written past save_host's own refusal, as another tool would.
    let data = [1.0f32, f32::NAN, f32::INFINITY];
    let (bad, good) = (bytemuck_bytes(&data), bytemuck_bytes(&[0.5]));
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![3], &bad).unwrap();
    let ok = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &good).unwrap();
    std::fs::write(
        &path,
        safetensors::tensor::serialize([("a.ok", ok), ("blocks.0.attn.qkv.weight", view)], None)
            .unwrap(),
    )
    .unwrap();
    let err = read_weights(&path).unwrap_err().to_string();
    assert!(
        err.contains("blocks.0.attn.qkv.weight (2 non-finite values, the first, NaN, at index 1)"),
        "{err}"
    );
}

fn bytemuck_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn swin_parity_model(num_classes: usize) -> video_swin::VideoSwin {
    // The parity vector's config: patch 2x4x4, C 8, depths 2/2, heads 1/2, window 2x4x4;
    // input (1, 3, 5, 18, 20).
    let c = video_swin::Config {
        frames: 5,
        height: 18,
        width: 20,
        patch_size: [2, 4, 4],
        embed_dim: 8,
        depths: vec![2, 2],
        num_heads: vec![1, 2],
        window_size: [2, 4, 4],
        mlp_ratio: 4.0,
        drop_path_rate: 0.0,
        head_dropout: 0.0,
        num_classes,
        attn: video_swin::AttnOptions::RELEASED,
        patch_norm: true,
        in_chans: 3,
        norm_eps: video_swin::LN_EPS,
    };
    video_swin::VideoSwin::new(c, 9).unwrap()
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}");
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0f32, f32::max);
    assert!(worst <= tol, "{what}: max |diff| {worst} > {tol}");
}

#[test]
fn an_mmaction2_swin_file_gives_the_official_backbone_output() {
    let Some(_) = gpu_or_skip() else { return };
    let model = swin_parity_model(5);
    let r = load_exact(&model, &fixture("swin_mmaction2.pth")).unwrap();
    assert_eq!(r.loaded.len(), model.named_params().len());
    assert_eq!(
        r.unused.len(),
        4,
        "the index buffers, which the kernel recomputes: {:?}",
        r.unused
    );
    assert!(r
        .unused
        .iter()
        .all(|k| k.ends_with("relative_position_index")));
    let input = &parity("video_swin.SwinTransformer3D", "in")["input"];
    let want = &parity("video_swin.SwinTransformer3D", "want")["output"];
    let x = Tensor::from_slice(&input.data, &input.shape).unwrap();
    let y = no_grad(|| model.forward_features(&x, false))
        .unwrap()
        .try_permute(&[0, 4, 1, 2, 3])
        .unwrap(); // (B, C, D, H, W)
    assert_eq!(y.shape(), want.shape.as_slice());
    // The official code's output within 1e-4 (f32 on both sides; the order of reductions differs).
    assert_close(
        "SwinTransformer3D from swin_mmaction2.pth",
        &y.to_vec().unwrap(),
        &want.data,
        1e-4,
    );
}

#[test]
fn a_flat_uniformer_file_gives_the_official_logits_and_so_does_the_legacy_one() {
    let Some(_) = gpu_or_skip() else { return };
    let input = &parity("uniformer.Uniformer", "in")["input"];
    let want = &parity("uniformer.Uniformer", "want")["output"];
    for name in ["uniformer_flat.pth", "uniformer_legacy.pth"] {
        let c = uniformer::Config {
            frames: input.shape[2],
            height: input.shape[3],
            width: input.shape[4],
            embed_dim: [8, 16, 16, 16],
            depth: [1, 2, 1, 1],
            head_dim: 8,
            mlp_ratio: 4.0,
            qkv_bias: true,
            qk_scale: None,
            drop_path_rate: 0.0,
            num_classes: 5,
        };
        let model = uniformer::UniFormer::new(c, 3).unwrap();
        let r = load_exact(&model, &fixture(name)).unwrap();
        assert!(
            r.unused.is_empty() && r.stored.get("i64").is_some_and(|n| *n > 0),
            "{name}: {r:?}"
        );
        let x = Tensor::from_slice(&input.data, &input.shape).unwrap();
        let y = no_grad(|| VideoModel::forward(&model, &x, false)).unwrap();
        assert_close(
            &format!("UniFormer logits from {name}"),
            &y.to_vec().unwrap(),
            &want.data,
            1e-4,
        );
    }
}

#[test]
fn fine_tuning_reinitialises_a_head_of_another_class_count() {
    let Some(_) = gpu_or_skip() else { return };
    let model = swin_parity_model(7);
    let head_before = model
        .named_params()
        .into_iter()
        .find(|(k, _)| k == "cls_head.fc_cls.weight")
        .unwrap()
        .1
        .to_vec()
        .unwrap();
    let r = load_finetune(&model, &fixture("swin_mmaction2.pth")).unwrap();
    assert_eq!(
        r.reinitialised,
        vec![
            "cls_head.fc_cls.weight".to_string(),
            "cls_head.fc_cls.bias".to_string()
        ]
    );
    assert_eq!(r.loaded.len(), model.named_params().len() - 2);
    assert!(r.mismatched.is_empty() && r.missing.is_empty(), "{r:?}");
    assert_eq!(r.unused.len(), 4);
    let head_after = model
        .named_params()
        .into_iter()
        .find(|(k, _)| k == "cls_head.fc_cls.weight")
        .unwrap()
        .1
        .to_vec()
        .unwrap();
    assert_eq!(
        head_before, head_after,
        "the fresh head stays as initialised"
    );
    let s = r.summary();
    assert!(
        s.contains("re-initialised")
            && s.contains("cls_head.fc_cls.weight")
            && s.contains("unused"),
        "{s}"
    );
    // load_exact refuses the same file: the head does not fit.
    let err = load_exact(&swin_parity_model(7), &fixture("swin_mmaction2.pth"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cls_head.fc_cls.weight: file [5, 16], model [7, 16]"),
        "{err}"
    );
    // A file for another model loads nothing, and says so.
    let err = load_finetune(&model, &fixture("uniformer_flat.pth"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("only 2 of 61 tensors") && err.contains("another model"),
        "{err}"
    );
}

#[test]
fn an_mmaction2_head_maps_onto_a_family_head() {
    let Some(_) = gpu_or_skip() else { return };
    // UniFormer as mmaction2 would wrap it: backbone. keys and cls_head.fc_cls for `head`.
    let host: Vec<(String, Vec<usize>, Vec<f32>)> = params_of("uniformer.Uniformer")
        .into_iter()
        .map(|(k, v)| {
            let k = match k.strip_prefix("head.") {
                Some(leaf) => format!("cls_head.fc_cls.{leaf}"),
                None => format!("backbone.{k}"),
            };
            (k, v.shape, v.data)
        })
        .collect();
    let path = tmp("uniformer_mmaction2.safetensors");
    io::save_host(&path, &host, None).unwrap();
    let c = uniformer::Config {
        frames: 3,
        height: 32,
        width: 32,
        embed_dim: [8, 16, 16, 16],
        depth: [1, 2, 1, 1],
        head_dim: 8,
        mlp_ratio: 4.0,
        qkv_bias: true,
        qk_scale: None,
        drop_path_rate: 0.0,
        num_classes: 5,
    };
    let model = uniformer::UniFormer::new(c, 3).unwrap();
    let r = load_exact(&model, &path).unwrap();
    assert!(r.unused.is_empty() && r.reinitialised.is_empty(), "{r:?}");
    let head = model
        .named_params()
        .into_iter()
        .find(|(k, _)| k == "head.weight")
        .unwrap()
        .1
        .to_vec()
        .unwrap();
    assert_eq!(head, params_of("uniformer.Uniformer")["head.weight"].data);
}

#[test]
fn every_tiny_preset_loads_the_file_it_saved() {
    let Some(_) = gpu_or_skip() else { return };
    for p in tubelet_models::presets().into_iter().filter(|p| p.tiny) {
        let a = (p.build)(&tubelet_models::BuildOptions::seed(1)).unwrap();
        let path = tmp(&format!("{}.safetensors", p.name));
        io::save(
            &path,
            &tubelet_train::weights::model_state(a.as_ref()),
            None,
        )
        .unwrap();
        for load in [0, 1, 2] {
            let b = (p.build)(&tubelet_models::BuildOptions::seed(2)).unwrap();
            match load {
                0 => drop(
                    load_exact(b.as_ref(), &path).unwrap_or_else(|e| panic!("{}: {e}", p.name)),
                ),
                1 => drop(
                    load_finetune(b.as_ref(), &path).unwrap_or_else(|e| panic!("{}: {e}", p.name)),
                ),
                // What `train --weights` and `run --weights` used before (the Swin defect).
                _ => io::load_into(
                    &path,
                    &tubelet_train::weights::model_state(b.as_ref()),
                    true,
                )
                .unwrap_or_else(|e| panic!("{}: {e}", p.name)),
            }
            for ((ka, ta), (kb, tb)) in tubelet_train::weights::model_state(a.as_ref())
                .iter()
                .zip(tubelet_train::weights::model_state(b.as_ref()).iter())
            {
                assert_eq!(ka, kb);
                assert_eq!(
                    ta.to_vec().unwrap(),
                    tb.to_vec().unwrap(),
                    "{}: {ka} after load {load}",
                    p.name
                );
            }
        }
    }
}

#[test]
fn a_whole_training_state_handed_to_weights_says_to_use_resume() {
    let Some(_) = gpu_or_skip() else { return };
    let model = tubelet_models::build("swin-tiny", &tubelet_models::BuildOptions::seed(0)).unwrap();
    let params = model.named_params();
    let progress = tubelet_train::checkpoint::Progress {
        step: 3,
        ..Default::default()
    };
    let config = serde_json::json!({"model": "swin-tiny"});
    let state = tubelet_train::checkpoint::State {
        params: &params,
        buffers: &[],
        optimizer: &[],
        optimizer_info: tubelet_train::checkpoint::OptimizerInfo {
            kind: "adamw".into(),
            step: 3,
        },
        progress: &progress,
        config: &config,
    };
    let path = tmp("whole.safetensors");
    tubelet_train::checkpoint::save(&path, &state).unwrap();
    let err = load_finetune(model.as_ref(), &path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("whole state of a training run")
            && err.contains("--resume")
            && err.contains("tubelet convert"),
        "{err}"
    );
}
