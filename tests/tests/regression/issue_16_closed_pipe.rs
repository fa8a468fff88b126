//! Issue 16: every subcommand panicked on a closed pipe (`tubelet models | head -1`: `println!`
//! panics on EPIPE). The subcommands print through `tubelet_cli::output::Output`, which stops
//! printing instead; `models` is checked here whole.

use std::io::ErrorKind;

use tubelet_cli::output::Output;

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
