//! `tubelet check`: runs every op's property checks on *this* machine's GPU: the GPU forward and
//! the GPU backward against the f64 CPU reference, and the reference backward against finite
//! differences, over random shapes. A new driver or GPU is trusted only after this passes.
//! The checks are the test suite's (engine/src/testing.rs, tests/tests/ops/property.rs), which
//! runs 24 forward, 16 GPU backward and 48 finite-difference cases per op; `--cases 1000` is a
//! long sweep (NATTEN's size), an hour or more on a CPU adapter.

use std::io::Write;
use std::time::Instant;

use tubelet::testing::{try_check_forward, try_check_gpu_backward, try_check_reference_backward};
use tubelet::{Error, Result};

use crate::outln;
use crate::output::Output;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Random cases per op and check (forward, backward, finite differences).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub cases: u32,
    /// Only ops whose name contains this (see the list an unknown name prints).
    #[arg(long)]
    pub op: Option<String>,
}

/// Every kernel op's name, in registry order (`tubelet::for_each_op!`).
pub fn op_names() -> Vec<&'static str> {
    let mut names = Vec::new();
    macro_rules! name {
        ($op:ident) => {
            names.push(stringify!($op));
        };
    }
    tubelet::for_each_op!(name);
    names
}

/// The ops `--op` selects, or an error that lists every op (checked before the GPU is opened).
pub fn select(filter: Option<&str>) -> Result<Vec<&'static str>> {
    let all = op_names();
    let chosen: Vec<_> = all
        .iter()
        .copied()
        .filter(|n| filter.is_none_or(|f| n.contains(f)))
        .collect();
    if chosen.is_empty() {
        return Err(Error::Config(format!(
            "no op matches --op {:?}; the ops are: {}",
            filter.unwrap_or_default(),
            all.join(", ")
        )));
    }
    Ok(chosen)
}

pub fn run(args: Args) -> Result<()> {
    check(&args, &mut Output::stdout())
}

/// [`run`], printing to `out`.
pub fn check<W: Write>(args: &Args, out: &mut Output<W>) -> Result<()> {
    let chosen = select(args.op.as_deref())?;
    let gpu = tubelet::Gpu::global()?;
    let n = args.cases;
    outln!(
        out,
        "checking {} ops on {} ({:?}), {n} cases per op and check",
        chosen.len(),
        gpu.info.name,
        gpu.info.backend
    )?;
    outln!(
        out,
        "{:<22} {:>9} {:>9} {:>9} {:>9}",
        "op",
        "forward",
        "backward",
        "numeric",
        "seconds"
    )?;
    let mut failures = Vec::new();
    let mut checks = 0u64;
    macro_rules! check {
        ($op:ident) => {
            let name = stringify!($op);
            if chosen.contains(&name) {
                let t = Instant::now();
                let fwd = try_check_forward(tubelet::ops::$op::test_spec(), n);
                let bwd = try_check_gpu_backward(tubelet::ops::$op::test_spec(), n);
                let num = try_check_reference_backward(tubelet::ops::$op::test_spec(), n);
                let mark =
                    |r: &std::result::Result<(), String>| if r.is_ok() { "ok" } else { "FAILED" };
                outln!(
                    out,
                    "{:<22} {:>9} {:>9} {:>9} {:>9.1}",
                    name,
                    mark(&fwd),
                    mark(&bwd),
                    mark(&num),
                    t.elapsed().as_secs_f64()
                )?;
                checks += 3;
                failures.extend(
                    [fwd, bwd, num]
                        .into_iter()
                        .filter_map(|r| r.err())
                        .map(|e| format!("{name}: {e}")),
                );
            }
        };
    }
    tubelet::for_each_op!(check);
    // A failing check stops at its first mismatch (then shrinks it), so a pass ran all n cases.
    let cases = (checks - failures.len() as u64) * n as u64;
    if failures.is_empty() {
        outln!(
            out,
            "all {} ops match the CPU reference: {cases} cases, 0 mismatches",
            chosen.len()
        )?;
        Ok(())
    } else {
        for f in &failures {
            eprintln!("{f}\n");
        }
        Err(Error::Gpu(format!(
            "{} of {checks} checks failed on {} (the first mismatch of each is above); {cases} cases passed",
            failures.len(),
            gpu.info.name
        )))
    }
}
