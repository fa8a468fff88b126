//! `tubelet bench allreduce` (run it under `mpirun -np N`, built with `--features mpi`): the
//! all-reduce bandwidth of the data-parallel path for buffers of 1–256 MiB, and one training
//! step of a tiny preset split into compute and communication (tubelet-train's dist.rs).
//!
//! Bandwidth as nccl-tests reports it: algbw = bytes / time, busbw = algbw · 2(N − 1)/N (what
//! each rank's link carries in a ring all-reduce; 0 for one rank, whose all-reduce is a copy).
//! Times are rank 0's median over `--iters` runs, each started together (a barrier first),
//! through the same path training uses (the communication thread; the send copy included).
//!
//! The step split: `waited` is the time the training thread spent blocked on collectives (the
//! communication not hidden behind the backward, plus waiting for a slower rank), `in
//! collectives` the communication thread's time inside them, `compute` the step minus `waited`.

use crate::outln;
use crate::output::Output;
use std::sync::Arc;
use std::time::Instant;

use tubelet::{Error, Result};
use tubelet_data::synthetic::Split;
use tubelet_models::BuildOptions;
use tubelet_train::dist::{CommStats, Dist};
use tubelet_train::metrics::ViewAverage;
use tubelet_train::optim::{OptimizerKind, ParamPolicy};
use tubelet_train::schedule::LrSchedule;
use tubelet_train::source::{Shard, Synthetic};
use tubelet_train::trainer::{Event, Observer, TrainOptions, Trainer, WeightsSaver};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Buffer sizes in MiB.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,2,4,8,16,32,64,128,256"
    )]
    pub sizes: Vec<usize>,
    /// Timed all-reduces per size (after one untimed).
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    /// The preset whose training step is split (tiny presets: the synthetic set).
    #[arg(long, default_value = "vivit-tiny")]
    pub model: String,
    /// Global batch of the step (split over the ranks).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Timed training steps (after two untimed ones: the first compiles the pipelines).
    #[arg(long, default_value_t = 6)]
    pub steps: usize,
    /// Gradient bucket size in MiB.
    #[arg(long, default_value_t = 25.0)]
    pub bucket_mib: f64,
}

pub fn run(args: Args) -> Result<()> {
    // Closed-pipe safe (output.rs): `tubelet bench … | head` stops printing, not panicking.
    let out = &mut Output::stdout();
    let Some(d) = tubelet_train::dist::current() else {
        return Err(Error::Config(if cfg!(feature = "mpi") {
            "bench allreduce measures MPI: run it under a launcher, e.g. `mpirun -np 2 tubelet bench \
             allreduce` (and `mpirun -np 1` for one rank)"
                .into()
        } else {
            "bench allreduce measures MPI: build tubelet with `--features mpi` and run it under \
             `mpirun -np N`"
                .into()
        }));
    };
    let lead = d.is_lead();
    let gpu = tubelet::Gpu::global()?;
    if lead {
        outln!(
            out,
            "all-reduce (f32 sum) over {} rank(s), {}; adapter {} ({:?})",
            d.world(),
            d.library(),
            gpu.info.name,
            gpu.info.backend
        )?;
        outln!(
            out,
            "{:>8} {:>11} {:>11} {:>11}",
            "MiB",
            "ms",
            "algbw GB/s",
            "busbw GB/s"
        )?;
    }
    let n = d.world() as f64;
    for &mib in &args.sizes {
        let len = (mib << 20) / 4;
        let mut buf = vec![1.0f32; len];
        let mut times = Vec::new();
        for i in 0..=args.iters.max(1) {
            d.any("the bench barrier", false)?;
            let t0 = Instant::now();
            buf = d.run("the bench all-reduce", move |c| {
                c.all_reduce_f32(&mut buf);
                buf
            })?;
            if i > 0 {
                times.push(t0.elapsed().as_secs_f64());
            }
        }
        times.sort_by(f64::total_cmp);
        let t = times[times.len() / 2];
        let algbw = (len * 4) as f64 / t / 1e9;
        if lead {
            outln!(
                out,
                "{mib:>8} {:>11.2} {:>11.2} {:>11.2}",
                t * 1e3,
                algbw,
                algbw * 2.0 * (n - 1.0) / n
            )?;
        }
    }
    step_split(&d, &args)
}

/// Per-step time and the communication stats taken at each step's end.
struct StepSplit {
    dist: Arc<Dist>,
    rows: Vec<(f64, CommStats)>,
}

impl Observer for StepSplit {
    fn event(&mut self, e: Event<'_>) {
        if let Event::Step(s) = e {
            self.rows
                .push((s.data_seconds + s.step_seconds, self.dist.take_stats()));
        }
    }
}

fn step_split(d: &Arc<Dist>, args: &Args) -> Result<()> {
    // Closed-pipe safe (output.rs): `tubelet bench … | head` stops printing, not panicking.
    let out = &mut Output::stdout();
    let preset = tubelet_models::preset(&args.model)?;
    if !preset.tiny {
        return Err(Error::Config(format!(
            "--model {}: the step split trains on the synthetic set; give a tiny preset",
            preset.name
        )));
    }
    let world = d.world();
    if !args.batch.is_multiple_of(world) || args.batch == 0 {
        return Err(Error::Config(format!(
            "--batch {} does not split over {world} ranks",
            args.batch
        )));
    }
    d.set_bucket_bytes((args.bucket_mib * (1 << 20) as f64) as usize)?;
    let model = (preset.build)(&BuildOptions {
        seed: 0,
        num_classes: None,
        clip: None,
        drop_path: None,
    })?;
    let steps = args.steps + 2;
    let data = Synthetic {
        seed: 0,
        clip: model.clip(),
        split: Split::Train,
        batch: args.batch / world,
        clips: steps * args.batch,
        shard: Shard {
            rank: d.rank(),
            world,
        },
    };
    let o = TrainOptions {
        epochs: 1,
        max_steps_per_epoch: Some(steps),
        schedule: LrSchedule::Synthetic {
            peak: 1e-3,
            warmup_steps: 1,
            total_steps: steps as u32,
        },
        optimizer: OptimizerKind::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        weight_decay: 0.05,
        policy: ParamPolicy::Tubelet,
        label_smoothing: 0.0,
        grad_clip: Some(1.0),
        view_average: ViewAverage::Score,
        max_val_batches: None,
        run_dir: None,
        config: serde_json::json!({}),
        log_every: 1,
        plot_every: 0,
        accumulate: 1,
        mixup: None,
        seed: 0,
        save_every: None,
        stop: None,
    };
    let mut t = Trainer::new(model.as_ref(), &o)?;
    t.set_dist(Some(d.clone()));
    let tensors: Vec<tubelet::Tensor> = tubelet_train::trainer::model_state(model.as_ref())
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    d.broadcast_tensors("the bench's weight broadcast", &tensors)?;
    d.take_stats();
    let mut obs = StepSplit {
        dist: d.clone(),
        rows: Vec::new(),
    };
    let dir = std::env::temp_dir().join(format!("tubelet-bench-allreduce-{}", std::process::id()));
    let mut saver = WeightsSaver { dir: dir.clone() };
    std::fs::create_dir_all(&dir).map_err(|e| Error::Io(format!("{}: {e}", dir.display())))?;
    t.run(&data, None, &o, &mut saver, &mut obs)?;
    let _ = std::fs::remove_dir_all(&dir);
    let timed = &obs.rows[2.min(obs.rows.len())..];
    let k = timed.len().max(1) as f64;
    let step = timed.iter().map(|r| r.0).sum::<f64>() / k;
    let waited = timed.iter().map(|r| r.1.wait_seconds).sum::<f64>() / k;
    let busy = timed.iter().map(|r| r.1.busy_seconds).sum::<f64>() / k;
    let bytes = timed.iter().map(|r| r.1.bytes).sum::<u64>() as f64 / k;
    let calls = timed.iter().map(|r| r.1.collectives).sum::<u64>() as f64 / k;
    // Rank 0 reports the slowest rank's numbers: the step waits for it.
    let all = d.sum("the bench's step report", vec![step, waited, busy])?;
    if d.is_lead() {
        let n = world as f64;
        outln!(
            out,
            "\ntraining step: {} (global batch {} = {world} × {}), gradient buckets ≤ {} MiB; mean of {} \
             steps after 2 untimed, averaged over the ranks",
            preset.name,
            args.batch,
            args.batch / world,
            args.bucket_mib,
            timed.len()
        )?;
        outln!(
            out,
            "{:>6} {:>9} {:>11} {:>11} {:>15} {:>13} {:>12}",
            "ranks",
            "step ms",
            "compute ms",
            "waited ms",
            "in coll. ms",
            "KiB reduced",
            "collectives"
        )?;
        outln!(
            out,
            "{world:>6} {:>9.1} {:>11.1} {:>11.1} {:>15.1} {:>13.1} {:>12.0}",
            all[0] / n * 1e3,
            (all[0] - all[1]) / n * 1e3,
            all[1] / n * 1e3,
            all[2] / n * 1e3,
            bytes / 1024.0,
            calls
        )?;
    }
    Ok(())
}
