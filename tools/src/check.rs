//! `tubelet check`: runs every op's property checks on *this* machine's GPU: the GPU forward
//! and the GPU backward against the f64 CPU reference over random shapes. A new driver or GPU
//! is trusted only after this passes.

use std::time::Instant;

use tubelet::testing::{try_check_forward, try_check_gpu_backward};
use tubelet::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Random cases per op and pass.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub cases: u32,
    /// Only ops whose name contains this.
    #[arg(long)]
    pub op: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let gpu = tubelet::Gpu::global()?;
    println!("checking ops on {} ({:?}), {} cases each", gpu.info.name, gpu.info.backend, args.cases);
    println!("{:<20} {:>9} {:>9} {:>8}", "op", "forward", "backward", "seconds");
    let mut failures = Vec::new();
    let mut ran = 0;
    macro_rules! check {
        ($op:ident) => {
            let name = stringify!($op);
            if args.op.as_deref().is_none_or(|f| name.contains(f)) {
                ran += 1;
                let t = Instant::now();
                let fwd = try_check_forward(tubelet::ops::$op::test_spec(), args.cases);
                let bwd = try_check_gpu_backward(tubelet::ops::$op::test_spec(), args.cases);
                let mark = |r: &std::result::Result<(), String>| if r.is_ok() { "ok" } else { "FAILED" };
                println!("{:<20} {:>9} {:>9} {:>8.2}", name, mark(&fwd), mark(&bwd), t.elapsed().as_secs_f64());
                failures.extend(fwd.err().into_iter().chain(bwd.err()));
            }
        };
    }
    tubelet::for_each_op!(check);
    if ran == 0 {
        return Err(Error::Config(format!("no op matches --op {:?}", args.op.unwrap_or_default())));
    }
    if failures.is_empty() {
        println!("all {ran} ops match the CPU reference");
        Ok(())
    } else {
        for f in &failures {
            eprintln!("{f}\n");
        }
        Err(Error::Gpu(format!("{} check(s) failed on {}", failures.len(), gpu.info.name)))
    }
}
