//! What the subcommands print on stdout, through one helper: [`Output`] and the [`outln!`]
//! macro. A closed pipe (`tubelet models | head -1`) means the reader has seen enough: printing
//! stops without a panic (`println!` panics on EPIPE, Rust ignores SIGPIPE) and the command
//! still finishes its work, so `train … | head -1` still saves its weights. Any other write
//! failure (a full disk behind a redirect) is an error that names stdout.

use std::fmt;
use std::io::{self, ErrorKind, Write};

use tubelet::{Error, Result};

/// A line printer that treats a closed pipe as "stop printing".
pub struct Output<W: Write> {
    w: W,
    closed: bool,
}

impl Output<io::Stdout> {
    /// The process's stdout (line-buffered, so each line reaches a pipe as it is printed).
    pub fn stdout() -> Output<io::Stdout> {
        Output::new(io::stdout())
    }
}

impl<W: Write> Output<W> {
    pub fn new(w: W) -> Output<W> {
        Output { w, closed: false }
    }

    /// Writes `args` and a newline, unless the reader has gone. Use [`outln!`].
    pub fn line(&mut self, args: fmt::Arguments) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        match self
            .w
            .write_fmt(args)
            .and_then(|()| self.w.write_all(b"\n"))
            .and_then(|()| self.w.flush())
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(Error::Io(format!("cannot write to stdout: {e}"))),
        }
    }

    /// Whether the reader has closed the pipe (later lines are dropped).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The writer (tests read back what was printed).
    pub fn into_inner(self) -> W {
        self.w
    }
}

/// `outln!(out, "format {}", args)`: one line through [`Output::line`], a `tubelet::Result<()>`.
#[macro_export]
macro_rules! outln {
    ($out:expr) => {
        $out.line(format_args!(""))
    };
    ($out:expr, $($arg:tt)*) => {
        $out.line(format_args!($($arg)*))
    };
}
