//! `tubelet train --resume`: a run stopped after a saved state (a kill -9 anywhere between two
//! save points loses only what came after the last one) and resumed from it ends with exactly
//! the weights of the uninterrupted run; a state of another run, weights given to --resume and a
//! state given to --weights are errors that say which flag to use. With drop path (masks seeded
//! from the model's forward counter, kept in the state) and gradient accumulation (states only
//! between updates) too.

use std::path::PathBuf;

use clap::Parser;
use tubelet::gpu_or_skip;
use tubelet_cli::train;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tubelet-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn args(run: &str, extra: &[&str]) -> train::Args {
    let run_dir = tmp(run);
    let save = tmp(&format!("{run}.safetensors"));
    let mut argv: Vec<String> = [
        "train",
        "--quiet",
        "--steps",
        "6",
        "--batch",
        "3",
        "--eval-clips",
        "3",
        "--save-every",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.extend([
        "--run-dir".into(),
        run_dir.display().to_string(),
        "--save".into(),
        save.display().to_string(),
    ]);
    argv.extend(extra.iter().map(|s| s.to_string()));
    train::Args::try_parse_from(argv).unwrap()
}

#[test]
fn resuming_from_a_saved_state_gives_the_uninterrupted_weights_bit_for_bit() {
    let Some(_) = gpu_or_skip() else { return };
    // The uninterrupted run: 6 AdamW steps, a whole state every 2.
    train::run(args("whole", &[])).unwrap();
    let states = tmp("whole").join("checkpoints");
    let step2 = states.join("step-000000002.safetensors");
    assert!(step2.is_file() && states.join("step-000000004.safetensors").is_file());
    // The "killed" run: everything after step 2 is lost; resume from that state elsewhere.
    let from = step2.display().to_string();
    train::run(args("resumed", &["--resume", &from])).unwrap();
    let a = std::fs::read(tmp("whole.safetensors")).unwrap();
    let b = std::fs::read(tmp("resumed.safetensors")).unwrap();
    assert!(
        a == b,
        "the resumed run's weights differ from the uninterrupted run's"
    );
    // A run directory resolves to its latest state (step 6: nothing left to train).
    let dir = tmp("whole").display().to_string();
    train::run(args("again", &["--resume", &dir])).unwrap();
    assert!(std::fs::read(tmp("again.safetensors")).unwrap() == a);

    // Another seed is another run.
    let err = train::run(args("other", &["--resume", &from, "--seed", "5"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("another run") && err.contains("seed: state 0, now 5"),
        "{err}"
    );
    // Weights only given to --resume, and a whole state given to --weights.
    let weights = tmp("whole.safetensors").display().to_string();
    let err = train::run(args("w", &["--resume", &weights]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("weights only") && err.contains("--weights"),
        "{err}"
    );
    let err = train::run(args("s", &["--weights", &from]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("whole state") && err.contains("--resume"),
        "{err}"
    );
}

#[test]
fn resuming_a_drop_path_run_with_accumulation_gives_the_uninterrupted_weights_bit_for_bit() {
    let Some(_) = gpu_or_skip() else { return };
    // timesformer-tiny draws its drop-path masks from a count of its training forwards: a
    // resume that starts it at 0 again drops other samples than the uninterrupted run.
    let extra = [
        "--model",
        "timesformer-tiny",
        "--drop-path",
        "0.3",
        "--accumulate",
        "2",
    ];
    train::run(args("dp-whole", &extra)).unwrap();
    let step2 = tmp("dp-whole")
        .join("checkpoints")
        .join("step-000000002.safetensors");
    let progress = tubelet_train::checkpoint::load(&step2).unwrap().progress;
    // 2 steps × 2 micro-batches: 4 training forwards.
    assert_eq!(
        progress.rng.get("model.steps"),
        Some(&4),
        "{:?}",
        progress.rng
    );
    let from = step2.display().to_string();
    let mut resumed = extra.to_vec();
    resumed.extend(["--resume", &from]);
    train::run(args("dp-resumed", &resumed)).unwrap();
    let a = std::fs::read(tmp("dp-whole.safetensors")).unwrap();
    let b = std::fs::read(tmp("dp-resumed.safetensors")).unwrap();
    assert!(
        a == b,
        "the resumed drop-path run's weights differ from the uninterrupted run's"
    );
}
