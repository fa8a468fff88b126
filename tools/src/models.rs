//! `tubelet models`: every preset of the model registry with its input, parameters and GFLOPs
//! (multiply-adds of conv, linear and the two attention matmuls, the papers' convention) at its
//! default input, and whether `tubelet train` accepts it (small enough for the synthetic set).

use std::io::Write;

use tubelet::Result;

use crate::outln;
use crate::output::Output;

/// Four significant digits at most, so tiny presets do not print as 0.00.
fn gflops(g: f64) -> String {
    if g >= 100.0 {
        format!("{g:.1}")
    } else if g >= 1.0 {
        format!("{g:.2}")
    } else {
        format!("{g:.4}")
    }
}

pub fn run() -> Result<()> {
    print(&mut Output::stdout())
}

/// The table, printed to `out` (tests pass a pipe that closes).
pub fn print<W: Write>(out: &mut Output<W>) -> Result<()> {
    let presets = tubelet_models::presets();
    let nw = presets.iter().map(|p| p.name.len()).max().unwrap_or(5).max(5);
    outln!(out, "{:<nw$}  {:<11}  {:>12}  {:>9}  {:<5}  description", "model", "input T×H×W", "parameters", "GFLOPs", "train")?;
    for p in &presets {
        let [t, h, w] = p.clip;
        let input = format!("{t}×{h}×{w}");
        let pad = 11usize.saturating_sub(input.chars().count());
        let train = if p.tiny { "yes" } else { "-" };
        outln!(out, 
            "{:<nw$}  {input}{}  {:>12}  {:>9}  {:<5}  {}",
            p.name,
            " ".repeat(pad),
            p.params,
            gflops(p.gmacs),
            train,
            p.description
        )?;
    }
    outln!(out, "train = yes: small enough for `tubelet train` on the synthetic set; every model works with `tubelet run`")?;
    Ok(())
}
