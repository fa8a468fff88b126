//! `tubelet train --accumulate K`: K micro-batches of B clips per optimiser step give the weights
//! of steps of one K·B batch (vivit-tiny has no BatchNorm: equal up to f32 rounding), and the
//! whole states are written at update boundaries only (a resumed run never loses a micro-batch).
//! SGD, not AdamW: AdamW's update is nearly blind to the gradient's scale, so a wrong 1/K would
//! pass unseen.

use std::path::PathBuf;

use clap::Parser;
use tubelet::gpu_or_skip;
use tubelet_cli::train;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tubelet-accumulate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn run(name: &str, batch: &str, accumulate: &str) -> PathBuf {
    let save = tmp(&format!("{name}.safetensors"));
    let dir = tmp(name);
    let argv = [
        "train",
        "--quiet",
        "--steps",
        "3",
        "--batch",
        batch,
        "--accumulate",
        accumulate,
        "--eval-clips",
        "2",
        "--optimizer",
        "sgd",
        "--lr",
        "0.2",
        "--warmup",
        "1",
        "--save-every",
        "1",
        "--run-dir",
        dir.to_str().unwrap(),
        "--save",
        save.to_str().unwrap(),
    ];
    train::run(train::Args::try_parse_from(argv).unwrap()).unwrap();
    save
}

#[test]
fn accumulating_micro_batches_gives_the_large_batch_weights() {
    let Some(_) = gpu_or_skip() else { return };
    let large = tubelet::io::read(&run("large", "6", "1")).unwrap();
    let accumulated = tubelet::io::read(&run("accumulated", "3", "2")).unwrap();
    let init = tubelet_models::build("vivit-tiny", &tubelet_models::BuildOptions::seed(0)).unwrap();
    let mut moved = 0.0f32;
    for (name, t) in init.named_params() {
        let (a, b) = (&large[&name].data, &accumulated[&name].data);
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(
            d <= 1e-6,
            "{name}: accumulated weights off the large batch's by {d:e}"
        );
        let t = t.to_vec().unwrap();
        moved = a
            .iter()
            .zip(&t)
            .map(|(x, y)| (x - y).abs())
            .fold(moved, f32::max);
    }
    assert!(
        moved > 1e-3,
        "training barely moved the weights ({moved:e})"
    );
    // States at update boundaries: step N has consumed 2N micro-batches.
    for step in 1..=2u64 {
        let state = tmp("accumulated")
            .join("checkpoints")
            .join(format!("step-{step:09}.safetensors"));
        let p = tubelet_train::checkpoint::load(&state).unwrap().progress;
        assert_eq!(
            (p.step, p.batch_in_epoch),
            (step, 2 * step),
            "{}",
            state.display()
        );
    }
}
