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
        entries.extend(
            manifest
                .as_array()
                .unwrap_or_else(|| panic!("{}: not a JSON array", path.display()))
                .iter()
                .cloned(),
        );
    }
    entries
}

/// Runs a fixture's module on its `.in` file and checks every tensor of its `.want` file. A
/// fixture is named by its `case` (when a module has several) or else by its `module`.
fn check(name: &str) {
    let Some(_) = gpu_or_skip() else { return };
    let entries = manifest_entries();
    let entry = entries
        .iter()
        .find(|e| e.get("case").unwrap_or(&e["module"]) == name)
        .unwrap_or_else(|| panic!("no parity*.json manifest has a fixture for {name}"));
    let module = entry["module"].as_str().unwrap();
    let input = io::read(&fixtures().join(entry["input"].as_str().unwrap())).unwrap();
    let want: BTreeMap<String, HostTensor> =
        io::read(&fixtures().join(entry["want"].as_str().unwrap())).unwrap();
    let got = parity::run_tensors(module, &entry["config"], &input).unwrap();
    let got: BTreeMap<&str, (&Vec<usize>, &Vec<f32>)> =
        got.iter().map(|(k, s, v)| (k.as_str(), (s, v))).collect();
    let mut worst = Vec::new();
    for (key, w) in &want {
        let (shape, g) = got
            .get(key.as_str())
            .unwrap_or_else(|| panic!("{module}: tubelet wrote no {key}"));
        assert_eq!(*shape, &w.shape, "{module}: {key} shape");
        let err = relative_error(g, &w.data);
        let tol = if key == "output" {
            FORWARD_TOL
        } else {
            GRADIENT_TOL
        };
        worst.push((key.clone(), err, tol));
    }
    assert_eq!(
        got.len(),
        want.len(),
        "{module}: tubelet wrote {:?}, want has {:?}",
        got.keys(),
        want.keys()
    );
    let fails: Vec<String> = worst
        .iter()
        .filter(|(_, e, t)| e.is_nan() || e > t)
        .map(|(k, e, t)| format!("{k}: {e:.2e} > {t:.0e}"))
        .collect();
    let max_fwd = worst
        .iter()
        .filter(|w| w.0 == "output")
        .map(|w| w.1)
        .fold(0f32, f32::max);
    let max_grad = worst
        .iter()
        .filter(|w| w.0 != "output")
        .map(|w| w.1)
        .fold(0f32, f32::max);
    eprintln!("{name}: relative error output {max_fwd:.2e}, worst gradient {max_grad:.2e}");
    assert!(
        fails.is_empty(),
        "{name} ({module}) differs from the official code:\n  {}",
        fails.join("\n  ")
    );
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
fn parity_timesformer_block_divided() {
    check("timesformer.Block.divided");
}

#[test]
fn parity_timesformer_block_space_only() {
    check("timesformer.Block.space_only");
}

#[test]
fn parity_timesformer_block_joint() {
    check("timesformer.Block.joint");
}

#[test]
fn parity_timesformer_model_divided() {
    check("timesformer.VisionTransformer.divided");
}

#[test]
fn parity_timesformer_model_space_only() {
    check("timesformer.VisionTransformer.space_only");
}

#[test]
fn parity_mvit_attention_v1() {
    check("mvit.MultiScaleAttention.v1");
}

#[test]
fn parity_mvit_attention_v2() {
    check("mvit.MultiScaleAttention.v2");
}

#[test]
fn parity_mvit_attention_avg() {
    check("mvit.MultiScaleAttention.avg");
}

#[test]
fn parity_mvit_block_v1() {
    check("mvit.MultiScaleBlock.v1");
}

#[test]
fn parity_mvit_block_v2() {
    check("mvit.MultiScaleBlock.v2");
}

#[test]
fn parity_mvit_block_max() {
    check("mvit.MultiScaleBlock.max");
}

/// The TimeSformer and MViT modules' config errors name the field and the offending values.
#[test]
fn parity_timesformer_mvit_errors_name_the_problem() {
    let Some(_) = gpu_or_skip() else { return };
    let entries = manifest_entries();
    let run = |case: &str, edit: &dyn Fn(&mut serde_json::Map<String, Value>)| -> String {
        let entry = entries
            .iter()
            .find(|e| e.get("case").is_some_and(|c| c == case))
            .unwrap();
        let input = io::read(&fixtures().join(entry["input"].as_str().unwrap())).unwrap();
        let mut config = entry["config"].clone();
        edit(config.as_object_mut().unwrap());
        let module = entry["module"].as_str().unwrap();
        parity::run_tensors(module, &config, &input)
            .err()
            .unwrap_or_else(|| panic!("{case}: no error"))
            .to_string()
    };
    let set = |k: &'static str, v: Value| {
        move |c: &mut serde_json::Map<String, Value>| {
            c.insert(k.into(), v.clone());
        }
    };
    let err = run("timesformer.Block.divided", &set("T", 4.into()));
    assert!(
        err.contains("B 2, T 4, W 3") && err.contains("[2, 19, 8]"),
        "{err}"
    );
    let err = run(
        "timesformer.Block.divided",
        &set("attention_type", "axial".into()),
    );
    assert!(err.contains("attention_type \"axial\""), "{err}");
    let err = run("timesformer.Block.divided", &|c| {
        c.remove("W");
    });
    assert!(err.contains("missing required field \"W\""), "{err}");
    let err = run(
        "timesformer.VisionTransformer.divided",
        &set("num_frames", 4.into()),
    );
    assert!(
        err.contains("num_frames × img_size = 4 × 8 × 12") && err.contains("resizes"),
        "{err}"
    );
    let err = run(
        "timesformer.VisionTransformer.divided",
        &set("train", true.into()),
    );
    assert!(err.contains("drop_path_rate 0.1"), "{err}");
    let err = run(
        "mvit.MultiScaleAttention.v1",
        &set("has_cls_embed", false.into()),
    );
    assert!(
        err.contains("has_cls_embed false") && err.contains("not implemented"),
        "{err}"
    );
    let err = run(
        "mvit.MultiScaleAttention.v2",
        &set("rel_pos_temporal", false.into()),
    );
    assert!(
        err.contains("rel_pos_spatial true with rel_pos_temporal false"),
        "{err}"
    );
    let err = run(
        "mvit.MultiScaleBlock.v1",
        &set("thw_shape", serde_json::json!([3, 5, 4])),
    );
    assert!(
        err.contains("thw_shape [3, 5, 4]") && err.contains("[2, 76, 8]"),
        "{err}"
    );
    let err = run(
        "mvit.MultiScaleBlock.v1",
        &set("kernel_q", serde_json::json!([3, 3])),
    );
    assert!(err.contains("kernel_q [3, 3]"), "{err}");
}

#[test]
fn parity_tsm_tsn() {
    check("tsm.TSN");
}

#[test]
fn parity_tsm_tsn_train() {
    check("tsm.TSN.train");
}

#[test]
fn parity_uniformer_whole() {
    check("uniformer.Uniformer");
}

#[test]
fn parity_uniformer_whole_train() {
    check("uniformer.Uniformer.train");
}

#[test]
fn parity_mvit_v1_whole() {
    check("mvit.MViT");
}

#[test]
fn parity_mvit_v2_whole() {
    check("mvit.MViT.v2");
}

/// The whole-model modules' config errors name the field and the offending value.
#[test]
fn parity_whole_model_configs_name_the_problem() {
    let Some(_) = gpu_or_skip() else { return };
    let entries = manifest_entries();
    let run = |case: &str, edit: &dyn Fn(&mut Value)| -> String {
        let entry = entries
            .iter()
            .find(|e| e.get("case").unwrap_or(&e["module"]) == case)
            .unwrap();
        let input = io::read(&fixtures().join(entry["input"].as_str().unwrap())).unwrap();
        let mut config = entry["config"].clone();
        edit(&mut config);
        let module = entry["module"].as_str().unwrap();
        parity::run_tensors(module, &config, &input)
            .expect_err("an error")
            .to_string()
    };
    let set =
        |ptr: &'static str, v: Value| move |c: &mut Value| *c.pointer_mut(ptr).unwrap() = v.clone();

    let err = run("tsm.TSN.train", &|c| {
        c.as_object_mut().unwrap().remove("partial_bn");
    });
    assert!(
        err.contains("partial_bn true") && err.contains("not implemented"),
        "{err}"
    );
    let err = run(
        "tsm.TSN",
        &set("/base_model", serde_json::json!("resnet18")),
    );
    assert!(
        err.contains("base_model \"resnet18\"") && err.contains("resnet50"),
        "{err}"
    );
    let err = run("tsm.TSN", &set("/modality", serde_json::json!("Flow")));
    assert!(err.contains("modality \"Flow\""), "{err}");

    let err = run("uniformer.Uniformer", &|c| {
        c["UNIFORMER"]["SPLIT"] = Value::Bool(true);
    });
    assert!(
        err.contains("UNIFORMER.SPLIT true") && err.contains("not implemented"),
        "{err}"
    );
    let err = run("uniformer.Uniformer", &|c| {
        c["UNIFORMER"]["DEPTHS"] = serde_json::json!([1, 1, 1, 1]);
    });
    assert!(
        err.contains("unknown field(s) \"UNIFORMER.DEPTHS\"") && err.contains("UNIFORMER.DEPTH"),
        "{err}"
    );
    let err = run("uniformer.Uniformer.train", &|c| {
        c["UNIFORMER"]
            .as_object_mut()
            .unwrap()
            .remove("DROP_DEPTH_RATE");
    });
    assert!(err.contains("DROP_DEPTH_RATE 0.1"), "{err}");

    let err = run("mvit.MViT", &set("/MVIT/SEP_POS_EMBED", Value::Bool(false)));
    assert!(
        err.contains("SEP_POS_EMBED false") && err.contains("MViTv2"),
        "{err}"
    );
    let err = run("mvit.MViT", &|c| {
        c["DATA"].as_object_mut().unwrap().remove("TEST_CROP_SIZE");
    });
    assert!(
        err.contains("DATA.TRAIN_CROP_SIZE 20 differs from DATA.TEST_CROP_SIZE 256"),
        "{err}"
    );
    let err = run("mvit.MViT", &set("/MVIT/DIM_MUL", serde_json::json!([[1]])));
    assert!(
        err.contains("\"MVIT.DIM_MUL\" must be a list of [block, 1 number(s)] lists"),
        "{err}"
    );
    let err = run(
        "mvit.MViT.v2",
        &set("/DATA/NUM_FRAMES", serde_json::json!(8)),
    );
    assert!(
        err.contains("DATA.NUM_FRAMES = 8") && err.contains("[2, 3, 4, 20, 20]"),
        "{err}"
    );
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
