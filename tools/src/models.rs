//! `tubelet models`: every preset of the model registry with its input, parameters and GFLOPs
//! (multiply-adds of conv, linear and the two attention matmuls, the papers' convention) at its
//! default input, and whether `tubelet train` accepts it (small enough for the synthetic set);
//! `--recipe NAME` prints a preset's official training recipe (tubelet-train's `recipe`).

use std::io::Write;

use tubelet::{Error, Result};

#[derive(clap::Parser, Debug)]
#[command(name = "models")]
pub struct Args {
    /// Print this preset's (or recipe family's) official training recipe, with its source.
    #[arg(long)]
    pub recipe: Option<String>,
    /// With --recipe: as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `tubelet models --recipe NAME`: the recipe `train` starts from (flags override any field).
fn print_recipe(name: &str, json: bool) -> Result<()> {
    let r = tubelet_train::recipe::for_model(name).ok_or_else(|| {
        let names: Vec<&str> = tubelet_models::presets().iter().map(|p| p.name).collect();
        Error::Config(format!(
            "no recipe for {name:?}; presets: {}",
            names.join(", ")
        ))
    })?;
    if json {
        outln!(
            Output::stdout(),
            "{}",
            serde_json::to_string_pretty(&r.to_json()).unwrap_or_default()
        )?;
    } else {
        outln!(Output::stdout(), "{}", r.describe())?;
    }
    Ok(())
}

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

pub fn run(args: Args) -> Result<()> {
    if let Some(name) = &args.recipe {
        return print_recipe(name, args.json);
    }
    print(&mut Output::stdout())
}

/// The table, printed to `out` (tests pass a pipe that closes).
pub fn print<W: Write>(out: &mut Output<W>) -> Result<()> {
    let presets = tubelet_models::presets();
    let nw = presets
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    outln!(
        out,
        "{:<nw$}  {:<11}  {:>12}  {:>9}  {:<5}  description",
        "model",
        "input T×H×W",
        "parameters",
        "GFLOPs",
        "train"
    )?;
    for p in &presets {
        let [t, h, w] = p.clip;
        let input = format!("{t}×{h}×{w}");
        let pad = 11usize.saturating_sub(input.chars().count());
        let train = if p.tiny { "yes" } else { "-" };
        outln!(
            out,
            "{:<nw$}  {input}{}  {:>12}  {:>9}  {:<5}  {}",
            p.name,
            " ".repeat(pad),
            p.params,
            gflops(p.gmacs),
            train,
            p.description
        )?;
    }
    outln!(out, "train = yes: small enough for `tubelet train` on the synthetic set; every model works with `tubelet run`, and trains on your videos with its recipe (`tubelet models --recipe NAME`)")?;
    Ok(())
}
