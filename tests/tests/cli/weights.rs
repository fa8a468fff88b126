//! The CLI over train/src/weights.rs: `tubelet convert` (official files and training states to
//! safetensors), and `train --save` then `run --weights` for Video Swin, whose own files did
//! not load before (the loader stripped `backbone.` from the file's keys only).

use std::path::{Path, PathBuf};

use clap::Parser;
use tubelet::{gpu_or_skip, io};
use tubelet_cli::{convert, run, train};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tubelet-weights-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../train/tests/fixtures")
        .join(name)
}

#[test]
fn swin_tiny_runs_with_the_weights_train_wrote() {
    let Some(_) = gpu_or_skip() else { return };
    let save = tmp("swin-tiny.safetensors");
    let s = save.to_str().unwrap();
    // Its own run directory: the default (runs/<model>-<time>/) would land in the source tree.
    let run_dir = tmp("swin-tiny-run");
    let args = [
        "train",
        "--quiet",
        "--model",
        "swin-tiny",
        "--steps",
        "1",
        "--batch",
        "2",
        "--eval-clips",
        "2",
        "--save",
        s,
        "--run-dir",
        run_dir.to_str().unwrap(),
    ];
    train::run(train::Args::try_parse_from(args).unwrap()).unwrap();
    let p = run::predict(
        &run::Args::try_parse_from(["run", "--model", "swin-tiny", "--weights", s]).unwrap(),
    )
    .unwrap();
    let r = p.weights.unwrap();
    assert!(
        r.missing.is_empty() && r.mismatched.is_empty() && r.unused.is_empty(),
        "{r:?}"
    );
    assert_eq!(
        r.loaded.len(),
        tubelet_models::build("swin-tiny", &tubelet_models::BuildOptions::seed(0))
            .unwrap()
            .named_params()
            .len()
    );
}

#[test]
fn convert_writes_official_files_and_training_states_as_safetensors() {
    // A half-precision mmaction2 file, keys kept, values widened.
    let out = tmp("swin_f16.safetensors");
    let args = convert::Args::try_parse_from([
        "convert",
        fixture("swin_mmaction2_f16.pth").to_str().unwrap(),
        out.to_str().unwrap(),
    ])
    .unwrap();
    let c = convert::convert(&args).unwrap();
    assert!(
        c.source.contains("state dict under 'state_dict'"),
        "{}",
        c.source
    );
    assert_eq!(c.stored.get("f16"), Some(&63));
    assert_eq!(c.stored.get("i64"), Some(&4));
    let back = io::read(&out).unwrap();
    let orig = tubelet_train::weights::read_weights(&fixture("swin_mmaction2_f16.pth")).unwrap();
    assert_eq!(back.len(), orig.tensors.len());
    for (k, t) in &orig.tensors {
        assert_eq!(back[k].data, t.data, "{k}");
    }
    // Not a checkpoint: a clear error, and nothing written.
    let bad = tmp("bad.safetensors");
    let args = convert::Args::try_parse_from([
        "convert",
        fixture("evil.pth").to_str().unwrap(),
        bad.to_str().unwrap(),
    ])
    .unwrap();
    let err = convert::convert(&args).unwrap_err().to_string();
    assert!(err.contains("never runs pickled code"), "{err}");
    assert!(!bad.exists());
}

#[test]
fn convert_with_a_model_uses_its_keys() {
    let Some(_) = gpu_or_skip() else { return };
    // TSM's DataParallel file under tsm-tiny's keys: module. dropped; shapes kept as in the file.
    let out = tmp("tsm.safetensors");
    let args = convert::Args::try_parse_from([
        "convert",
        fixture("tsm_tsn.pth").to_str().unwrap(),
        out.to_str().unwrap(),
        "--model",
        "tsm-tiny",
    ])
    .unwrap();
    let c = convert::convert(&args).unwrap();
    let back = io::read(&out).unwrap();
    assert!(
        back.contains_key("new_fc.weight") && back.contains_key("base_model.conv1.weight"),
        "{:?}",
        back.keys()
    );
    assert!(back.keys().all(|k| !k.starts_with("module.")));
    assert_eq!(c.tensors, back.len());
}

/// The parity manifest entry called `case` (models/tests/fixtures/parity*.json).
fn parity_entry(case: &str) -> serde_json::Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures");
    for f in [
        "parity.json",
        "parity_models.json",
        "parity_timesformer_mvit.json",
    ] {
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap();
        let list = m
            .as_array()
            .cloned()
            .unwrap_or_else(|| m["entries"].as_array().cloned().unwrap_or_default());
        if let Some(e) = list
            .into_iter()
            .find(|e| e.get("case").unwrap_or(&e["module"]) == case)
        {
            return e;
        }
    }
    panic!("no parity entry {case}");
}

#[test]
fn parity_with_official_checkpoint_files_matches_the_official_outputs() {
    let Some(_) = gpu_or_skip() else { return };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures");
    // Each project's own container and prefixes (train/tests/fixtures/gen_checkpoints.py wrote
    // them from the parity vectors' parameters); the outputs are the official code's.
    for (case, file, unused) in [
        ("video_swin.SwinTransformer3D", "swin_mmaction2.pth", 2), // cls_head.fc_cls.*: not in the backbone
        (
            "video_swin.SwinTransformer3D",
            "swin_mmaction2_f16.pth",
            usize::MAX,
        ),
        ("tsm.TSN", "tsm_tsn.pth", 0),
        ("mvit.MViT", "mvit.pyth", 0),
        (
            "timesformer.VisionTransformer.divided",
            "timesformer.pyth",
            0,
        ),
        ("uniformer.Uniformer", "uniformer_legacy.pth", 0),
    ] {
        let e = parity_entry(case);
        let module = e["module"].as_str().unwrap();
        let full = io::read(&dir.join(e["input"].as_str().unwrap())).unwrap();
        let input: std::collections::BTreeMap<String, io::HostTensor> =
            full.into_iter().filter(|(k, _)| k == "input").collect();
        let want = &io::read(&dir.join(e["want"].as_str().unwrap())).unwrap()["output"];
        let (out, report) = tubelet_cli::parity::run_tensors_with(
            module,
            &e["config"],
            &input,
            Some(&fixture(file)),
        )
        .unwrap_or_else(|err| panic!("{case} from {file}: {err}"));
        let report = report.unwrap();
        if unused != usize::MAX {
            assert_eq!(
                report.unused.len(),
                unused,
                "{case} from {file}: {:?}",
                report.unused
            );
        }
        let got = &out[0].2;
        let scale = want.data.iter().fold(1f32, |m, v| m.max(v.abs()));
        let worst = got
            .iter()
            .zip(&want.data)
            .map(|(g, w)| (g - w).abs())
            .fold(0f32, f32::max)
            / scale;
        // f32 files: the official output within 1e-4; the f16 file: its rounding (2^-11 relative
        // on every weight) moved this output by 1e-3.
        let tol = if file.contains("f16") { 5e-3 } else { 1e-4 };
        eprintln!("{case} from {file}: max |diff| / max(1, max |want|) = {worst:.2e}");
        assert!(worst <= tol, "{case} from {file}: {worst:.2e} > {tol:.0e}");
    }
}
