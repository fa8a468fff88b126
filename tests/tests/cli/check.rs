//! `tubelet check`: the op list, and a short run that counts its cases.

use clap::Parser;
use tubelet::gpu_or_skip;
use tubelet_cli::check::{self, op_names, Args};
use tubelet_cli::output::Output;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

fn args(argv: &[&str]) -> Args {
    Cli::try_parse_from(std::iter::once("check").chain(argv.iter().copied()))
        .unwrap()
        .args
}

#[test]
fn check_lists_every_registered_op_once() {
    let names = op_names();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "{names:?}");
    for op in [
        "matmul",
        "attention",
        "window_attention",
        "depthwise_conv3d",
        "pooled_attention",
    ] {
        assert!(names.contains(&op), "{op} missing from {names:?}");
    }
}

#[test]
fn check_cases_runs_every_check_of_the_chosen_ops_and_counts_the_cases() {
    let Some(_) = gpu_or_skip() else { return };
    let mut out = Output::new(Vec::new());
    check::check(&args(&["--op", "softmax", "--cases", "3"]), &mut out).unwrap();
    let text = String::from_utf8(out.into_inner()).unwrap();
    // softmax: 3 checks (forward, GPU backward, finite differences) × 3 cases.
    assert!(text.contains("3 cases per op and check"), "{text}");
    assert!(
        text.contains("all 1 ops match the CPU reference: 9 cases, 0 mismatches"),
        "{text}"
    );
}
