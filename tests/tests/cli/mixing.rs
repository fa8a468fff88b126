//! `tubelet train --mixup A --cutmix A` (train/src/mix.rs): the blending is applied (the weights
//! differ from an unmixed run's), the same for a seed (bit for bit), recorded in config.json,
//! and a negative alpha is refused naming the flag. The blending itself and the soft-target
//! cross-entropy are checked against references in train/tests/optim.rs.

use std::path::PathBuf;

use clap::Parser;
use tubelet::gpu_or_skip;
use tubelet_cli::train;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tubelet-mixing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn run(name: &str, extra: &[&str]) -> tubelet::Result<Vec<u8>> {
    let save = tmp(&format!("{name}.safetensors"));
    let dir = tmp(name);
    let mut argv = vec![
        "train",
        "--quiet",
        "--steps",
        "2",
        "--batch",
        "4",
        "--eval-clips",
        "2",
        "--warmup",
        "1",
        "--run-dir",
        dir.to_str().unwrap(),
        "--save",
        save.to_str().unwrap(),
    ];
    argv.extend(extra);
    train::run(train::Args::try_parse_from(argv).unwrap())?;
    Ok(std::fs::read(save).unwrap())
}

#[test]
fn mixup_and_cutmix_are_applied_the_same_for_a_seed() {
    let err = run("bad", &["--mixup", "-1"]).unwrap_err().to_string();
    assert!(err.contains("--mixup must be ≥ 0"), "{err}");
    let Some(_) = gpu_or_skip() else { return };
    let mixed = ["--mixup", "0.8", "--cutmix", "1.0"];
    let a = run("mixed-a", &mixed).unwrap();
    let b = run("mixed-b", &mixed).unwrap();
    assert!(a == b, "two mixed runs of one seed differ");
    let plain = run("plain", &[]).unwrap();
    assert!(
        a != plain,
        "--mixup/--cutmix left the weights of an unmixed run"
    );
    let config = std::fs::read_to_string(tmp("mixed-a").join("config.json")).unwrap();
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    let m = &config["recipe"]["mixup"];
    assert_eq!(
        (m["mixup_alpha"].as_f64(), m["cutmix_alpha"].as_f64()),
        (Some(0.8f32 as f64), Some(1.0)),
        "{m}"
    );
}
