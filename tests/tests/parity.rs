//! PyTorch parity: each module of `tubelet parity` run on a test vector made by the official
//! code (`models/tests/fixtures/gen_parity.py`, which records the official commits), compared
//! with the official output and gradients of sum(output × cotangent).
//!
//! Relative error of a tensor: max|got − want| / max|want| (over all its elements; a tensor
//! whose want is all zero must be all zero). Bounds: ≤ 1e-4 for `output`, ≤ 1e-3 for every
//! `grad.*`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use tubelet::gpu_or_skip;
use tubelet::io::{self, HostTensor};
use tubelet_cli::parity;

const FORWARD_TOL: f32 = 1e-4;
const GRADIENT_TOL: f32 = 1e-3;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures")
}

/// max|got − want| / max|want|.
fn relative_error(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = got.iter().zip(want).fold(0f32, |m, (g, w)| m.max((g - w).abs()));
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

/// The entries of every manifest in the fixtures folder: `parity.json` and the `parity_<family>.json`
/// files that the other generator scripts (`gen_parity_<family>.py`) write.
fn manifest_entries() -> Vec<Value> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("parity") && n.ends_with(".json")
        })
        .collect();
    names.sort();
    let mut entries = Vec::new();
    for path in names {
        let manifest: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        entries.extend(manifest.as_array().unwrap_or_else(|| panic!("{}: not a JSON array", path.display())).iter().cloned());
    }
    entries
}

/// Runs the fixture's module on its `.in` fixture and checks every tensor of its `.want` fixture.
/// `name` is an entry's `case` where it has one (several fixtures of one module), else its `module`.
fn check(name: &str) {
    let Some(_) = gpu_or_skip() else { return };
    let entries = manifest_entries();
    let entry = entries
        .iter()
        .find(|e| e.get("case").map_or(e["module"] == name, |c| c == name))
        .unwrap_or_else(|| panic!("no parity*.json manifest has a fixture for {name}"));
    let module = entry["module"].as_str().unwrap();
    let input = io::read(&fixtures().join(entry["input"].as_str().unwrap())).unwrap();
    let want: BTreeMap<String, HostTensor> = io::read(&fixtures().join(entry["want"].as_str().unwrap())).unwrap();
    let got = parity::run_tensors(module, &entry["config"], &input).unwrap();
    let got: BTreeMap<&str, (&Vec<usize>, &Vec<f32>)> = got.iter().map(|(k, s, v)| (k.as_str(), (s, v))).collect();
    let mut worst = Vec::new();
    for (key, w) in &want {
        let (shape, g) = got.get(key.as_str()).unwrap_or_else(|| panic!("{module}: tubelet wrote no {key}"));
        assert_eq!(*shape, &w.shape, "{module}: {key} shape");
        let err = relative_error(g, &w.data);
        let tol = if key == "output" { FORWARD_TOL } else { GRADIENT_TOL };
        worst.push((key.clone(), err, tol));
    }
    assert_eq!(got.len(), want.len(), "{module}: tubelet wrote {:?}, want has {:?}", got.keys(), want.keys());
    let fails: Vec<String> =
        worst.iter().filter(|(_, e, t)| e.is_nan() || e > t).map(|(k, e, t)| format!("{k}: {e:.2e} > {t:.0e}")).collect();
    let max_fwd = worst.iter().filter(|w| w.0 == "output").map(|w| w.1).fold(0f32, f32::max);
    let max_grad = worst.iter().filter(|w| w.0 != "output").map(|w| w.1).fold(0f32, f32::max);
    eprintln!("{name}: relative error output {max_fwd:.2e}, worst gradient {max_grad:.2e}");
    assert!(fails.is_empty(), "{name} differs from the official code:\n  {}", fails.join("\n  "));
}

#[test]
fn parity_tsm_temporal_shift() {
    check("tsm.TemporalShift");
}

#[test]
fn parity_video_swin_basic_layer() {
    check("video_swin.BasicLayer");
}

#[test]
fn parity_video_swin_backbone() {
    check("video_swin.SwinTransformer3D");
}

#[test]
fn parity_uniformer_cblock() {
    check("uniformer.CBlock");
}

#[test]
fn parity_uniformer_sablock() {
    check("uniformer.SABlock");
}

#[test]
fn parity_vivit_model1_spacetime() {
    check("vivit.ViViT.spacetime");
}

#[test]
fn parity_vivit_model2_factorised_encoder() {
    check("vivit.SpaceTimeViViT");
}

#[test]
fn parity_vivit_model3_factorised_self_attention() {
    check("vivit.ViViT.factorized_self_attention_block");
}

#[test]
fn parity_vivit_model4_factorised_dot_product() {
    check("vivit.ViViT.factorized_dot_product_attention");
}
