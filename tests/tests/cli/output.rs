//! `tubelet_cli::output::Output`, the subcommands' stdout: a closed pipe stops the printing, any
//! other write failure is an error naming stdout.

use std::io::{self, Write};

use tubelet_cli::outln;
use tubelet_cli::output::Output;

/// A pipe whose reader leaves after `lines` lines (`| head -n lines`), or a disk that fills.
pub struct Reader {
    pub lines: usize,
    pub kind: io::ErrorKind,
    pub got: Vec<u8>,
}

impl Write for Reader {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.got.iter().filter(|&&b| b == b'\n').count() >= self.lines {
            return Err(io::Error::from(self.kind));
        }
        self.got.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_closed_pipe_stops_printing_and_is_not_an_error() {
    let mut out = Output::new(Reader {
        lines: 2,
        kind: io::ErrorKind::BrokenPipe,
        got: Vec::new(),
    });
    for i in 0..5 {
        outln!(out, "line {i}").unwrap();
    }
    assert!(out.is_closed());
    assert_eq!(
        String::from_utf8(out.into_inner().got).unwrap(),
        "line 0\nline 1\n"
    );
}

#[test]
fn other_write_failures_are_errors_naming_stdout() {
    let mut out = Output::new(Reader {
        lines: 0,
        kind: io::ErrorKind::StorageFull,
        got: Vec::new(),
    });
    let err = outln!(out, "x").unwrap_err().to_string();
    assert!(err.contains("stdout"), "{err}");
    assert!(!out.is_closed());
}
