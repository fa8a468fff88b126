//! Issue 16: every subcommand panicked on a closed pipe (`tubelet models | head -1`: `println!`
//! panics on EPIPE). The subcommands print through `tubelet_cli::output::Output`, which stops
//! printing instead and lets the command finish its work; `models`, `data synth`, `data check`,
//! `run` and `eval` are checked here whole. (`train` prints through the same `Output`, its
//! progress lines too: tools/src/train.rs.)

use std::io::ErrorKind;
use std::path::PathBuf;

use clap::Parser;
use tubelet::gpu_or_skip;
use tubelet_cli::output::Output;
use tubelet_cli::{data, eval, run};
use tubelet_data::synth::Format;
use tubelet_models::BuildOptions;

use crate::cli::output::Reader;

#[test]
fn models_piped_into_head_stops_printing_without_a_panic() {
    let mut out = Output::new(Reader {
        lines: 1,
        kind: ErrorKind::BrokenPipe,
        got: Vec::new(),
    });
    tubelet_cli::models::print(&mut out).unwrap();
    assert!(out.is_closed(), "the table has more than one line");
    let got = String::from_utf8(out.into_inner().got).unwrap();
    assert!(
        got.starts_with("model ") && got.lines().count() == 1,
        "{got}"
    );
}

fn head_1() -> Output<Reader> {
    Output::new(Reader {
        lines: 1,
        kind: ErrorKind::BrokenPipe,
        got: Vec::new(),
    })
}

/// What a closed `out` let through: exactly its first line.
fn first_line_only(out: Output<Reader>) -> String {
    assert!(out.is_closed(), "the command printed one line only");
    let got = String::from_utf8(out.into_inner().got).unwrap();
    assert_eq!(got.lines().count(), 1, "{got}");
    got
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join(format!("tubelet-closed-pipe-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn data_synth_and_check_piped_into_head_finish_their_work() {
    // JPEG frames: no FFmpeg needed. Two clips of 4 frames of 16² (the smallest set).
    let dir = tmp("data");
    let synth = data::SynthArgs {
        out: dir.clone(),
        format: Format::Rawframes,
        clips: 2,
        val_clips: Some(1),
        frames: 4,
        size: 16,
        seed: 0,
    };
    let mut out = head_1();
    data::synth(&synth, &mut out).unwrap();
    assert!(first_line_only(out).starts_with("wrote 2 train"));
    let list = dir.join("train_list.txt");
    assert!(list.is_file(), "the set was written whole");
    let check = data::CheckArgs {
        data: list,
        data_root: None,
        template: "img_{:05}.jpg".into(),
        start_index: 1,
        full: false,
        threads: Some(1),
        verbose: true,
    };
    let mut out = head_1();
    data::check(&check, &mut out).unwrap();
    assert!(first_line_only(out).contains("2 items"));
}

#[test]
fn run_and_eval_piped_into_head_stop_printing_without_a_panic() {
    let Some(_) = gpu_or_skip() else { return };
    let mut out = head_1();
    let args = run::Args::try_parse_from(["run", "--model", "vivit-tiny"]).unwrap();
    run::report(&args, &mut out).unwrap();
    assert!(first_line_only(out).starts_with("tubelet run: vivit-tiny"));

    // eval writes its per-class CSV after the first line: it must still be written.
    let dir = tmp("eval");
    let weights = dir.join("w.safetensors");
    let model = tubelet_models::build("vivit-tiny", &BuildOptions::seed(0)).unwrap();
    let mut state = model.named_params();
    state.extend(model.named_buffers());
    tubelet::io::save(&weights, &state, None).unwrap();
    let w = weights.to_str().unwrap();
    let args = eval::Args::try_parse_from([
        "eval",
        "--model",
        "vivit-tiny",
        "--weights",
        w,
        "--clips",
        "2",
        "--batch",
        "2",
    ])
    .unwrap();
    let mut out = head_1();
    let report = eval::evaluate_views_to(&args, &mut out).unwrap();
    assert_eq!(report.tally.count, 2);
    assert!(first_line_only(out).starts_with("vivit-tiny: top-1"));
    assert!(dir.join("w.safetensors.per_class.csv").is_file());
}
