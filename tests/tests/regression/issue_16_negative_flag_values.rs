//! `tubelet train --lr -1` got clap's bare "unexpected argument '-1'": a negative number looked
//! like a flag. The numeric flags now take negative values, and the range check names the flag
//! and the value; out-of-range values of the flags that had no check (label smoothing, drop
//! path, momentum, gradient clipping) are refused too instead of being used or silently ignored.

use clap::Parser;
use tubelet_cli::train::{resolve_recipe, Args};

fn error(argv: &[&str]) -> String {
    let args = Args::try_parse_from(std::iter::once("train").chain(argv.iter().copied()))
        .unwrap_or_else(|e| panic!("{argv:?} was not parsed: {e}"));
    resolve_recipe(&args).expect_err("accepted").to_string()
}

#[test]
fn negative_and_out_of_range_values_name_the_flag_and_the_value() {
    for (argv, want) in [
        (
            &["--lr", "-1"][..],
            "--lr must be a positive number, got -1",
        ),
        (
            &["--weight-decay", "-0.5"],
            "--weight-decay must be in [0, 1), got -0.5",
        ),
        (
            &["--label-smoothing", "1.5"],
            "--label-smoothing must be in [0, 1), got 1.5",
        ),
        (
            &["--drop-path", "-0.1"],
            "--drop-path must be in [0, 1), got -0.1",
        ),
        (&["--grad-clip", "-2"], "--grad-clip must be ≥ 0"),
        (
            &["--optimizer", "sgd", "--momentum", "-0.9"],
            "--momentum must be in [0, 1), got -0.9",
        ),
    ] {
        let e = error(argv);
        assert!(e.contains(want), "{argv:?}: {e}");
    }
}
