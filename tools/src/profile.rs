//! `tubelet profile`: one training step of a preset broken down by kernel, from the engine's
//! profiler (engine/src/profile.rs; hooks in engine/src/gpu.rs). For each kernel and phase
//! (forward, backward, checks, optimiser): dispatches, time (GPU timestamps where the adapter
//! has them, else wall time per dispatch), its share of the step, bytes bound, and the
//! pipeline's compile time; per phase: dispatches, submits and host transfers. `--json` prints
//! the same for tools.
//!
//! The step is the trainer's (train/src/trainer.rs), phase by phase: forward and the
//! cross-entropy; backward; the checks (‖g‖², the non-finite probe and the step's one
//! read-back); the optimiser (the recipe's AdamW or SGD), then the logits read back for the
//! accuracy. Inputs are random (shapes, hence kernels, never depend on values).
//!
//! Sequence: one warm-up step profiled for its compiles only (its first dispatches hold
//! llvmpipe's JIT), `--steps` plain steps timed by wall clock with a sync at each phase end
//! (the step's real time), then `--steps` profiled steps whose kernel times are averaged.
//! "GPU busy" is the sum of the kernels' times; the rest of the step is host work (recording,
//! bind groups, allocation), submits and waits.
//!
//! ```text
//! tubelet profile                                   # vivit-tiny, batch 32 (the default train)
//! tubelet profile --model swin-tiny --batch 8 --steps 2 --json > swin.json
//! ```

use std::time::Instant;

use clap::Args as ClapArgs;
use serde_json::{json, Value};
use tubelet::profile::{self, Profile, Timing};
use tubelet::{Error, Gpu, Indices, Result, Tensor};
use tubelet_models::VideoModel;
use tubelet_train::optim::{grad_sq_norm, params_nonfinite_probe, Optimiser};

use crate::outln;
use crate::output::Output;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Preset (see `tubelet models`).
    #[arg(long, default_value = "vivit-tiny")]
    pub model: String,
    /// Clips per step.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Steps timed plainly, then as many profiled (after one warm-up step).
    #[arg(long, default_value_t = 2)]
    pub steps: usize,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// How kernels are timed: auto (timestamps when the adapter has them), gpu, wall.
    #[arg(long, default_value = "auto", value_parser = ["auto", "gpu", "wall"])]
    pub timing: String,
    /// Kernel rows printed (all in JSON).
    #[arg(long, default_value_t = 30)]
    pub top: usize,
}

/// The phases of a step, in order.
pub const PHASES: [&str; 4] = ["forward", "backward", "checks", "optimiser"];

/// A model with its optimiser and a fixed random batch: everything one training step needs.
pub struct StepRig {
    pub model: Box<dyn VideoModel>,
    opt: Optimiser,
    params: Vec<(String, Tensor)>,
    x: Tensor,
    labels: Indices,
    pub batch: usize,
}

impl StepRig {
    /// Builds `name` (any preset) with its recipe's optimiser (the synthetic set's AdamW for the
    /// tiny presets, as `tubelet train` uses) and a random batch of `batch` clips.
    pub fn new(name: &str, batch: usize) -> Result<StepRig> {
        if batch == 0 {
            return Err(Error::Config("--batch must be at least 1".into()));
        }
        let preset = tubelet_models::preset(name)?;
        let model = (preset.build)(&tubelet_models::BuildOptions::seed(0))?;
        let recipe = if preset.tiny {
            tubelet_train::recipe::synthetic(name)
        } else {
            tubelet_train::recipe::for_model(name)
                .unwrap_or_else(|| tubelet_train::recipe::synthetic(name))
        };
        let params = model.named_params();
        let opt = Optimiser::new(
            &params,
            recipe.optimizer,
            recipe.weight_decay as f32,
            &recipe.policy,
        )?;
        let shape = model.input_layout().shape(batch, model.clip());
        let x = Tensor::randn(&shape, 0.0, 1.0, 7)?;
        let classes = model.num_classes() as u32;
        let labels: Vec<u32> = (0..batch as u32).map(|i| (i * 5 + 3) % classes).collect();
        let labels = Indices::from_slice(&labels)?;
        Ok(StepRig {
            model,
            opt,
            params,
            x,
            labels,
            batch,
        })
    }

    /// One training step; `mark(phase)` is called as each phase begins (with its name) and once
    /// at the end (with "end").
    pub fn step(&mut self, mark: &mut dyn FnMut(&'static str) -> Result<()>) -> Result<()> {
        mark("forward")?;
        let logits = self.model.forward(&self.x, true)?; // (B, classes)
        let loss = tubelet_train::optim::smoothed_cross_entropy(&logits, &self.labels, 0.0)?;
        mark("backward")?;
        let grads = loss.backward()?;
        mark("checks")?;
        let gsq = grad_sq_norm(&self.params, &grads)?; // (1)
        let probe = params_nonfinite_probe(&self.params)?; // (1)
        let checks = Tensor::try_cat(&[&loss.try_reshape(&[1])?, &gsq, &probe], 0)?.to_vec()?;
        if !checks.iter().all(|v| v.is_finite()) {
            return Err(Error::Gpu(format!(
                "profile: a non-finite loss, gradient or parameter ({checks:?})"
            )));
        }
        mark("optimiser")?;
        self.opt.step(&grads, 1e-4)?;
        let _ = logits.to_vec()?; // the trainer's accuracy read-back
        mark("end")
    }

    /// Wall ms per phase of one step, with a sync at each phase's end.
    pub fn timed_step(&mut self) -> Result<[f64; 4]> {
        let gpu = Gpu::global()?;
        let mut ms = [0.0; 4];
        let mut at: Option<(usize, Instant)> = None;
        self.step(&mut |p| {
            gpu.sync()?;
            if let Some((i, t)) = at {
                ms[i] = t.elapsed().as_secs_f64() * 1e3;
            }
            at = PHASES
                .iter()
                .position(|&q| q == p)
                .map(|i| (i, Instant::now()));
            Ok(())
        })?;
        Ok(ms)
    }

    /// One step with the profiler's phases named.
    pub fn profiled_step(&mut self) -> Result<()> {
        self.step(&mut |p| {
            profile::phase(p);
            Ok(())
        })
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub fn run(args: Args) -> Result<()> {
    let gpu = Gpu::global()?;
    let timing = match args.timing.as_str() {
        "gpu" => match profile::available()?[0] {
            Timing::Wall => {
                return Err(Error::Config(format!(
                    "profile --timing gpu: {} has no timestamp queries (use --timing wall)",
                    gpu.info.name
                )))
            }
            best => Some(best),
        },
        "wall" => Some(Timing::Wall),
        _ => None,
    };
    let steps = args.steps.max(1);
    let mut rig = StepRig::new(&args.model, args.batch)?;
    let [t, h, w] = rig.model.clip();

    // 1. Warm-up: the compiles.
    let t0 = Instant::now();
    let timing = profile::start(timing)?;
    let warm = rig.profiled_step().and_then(|_| profile::stop());
    let warm = match warm {
        Ok(p) => p,
        Err(e) => {
            let _ = profile::stop();
            return Err(e);
        }
    };
    let warm_s = t0.elapsed().as_secs_f64();
    // 2. Plain steps.
    let mut phase_ms: Vec<[f64; 4]> = Vec::new();
    let (d0, s0) = gpu.counters();
    for _ in 0..steps {
        phase_ms.push(rig.timed_step()?);
    }
    let (d1, s1) = gpu.counters();
    let wall: Vec<f64> = (0..4)
        .map(|i| median(phase_ms.iter().map(|m| m[i]).collect()))
        .collect();
    let step_ms: f64 = wall.iter().sum();
    // 3. Profiled steps.
    profile::start(Some(timing))?;
    let run = (0..steps).try_for_each(|_| rig.profiled_step());
    let prof = profile::stop();
    run?;
    let prof = prof?;
    let n = steps as f64;
    let report = Report {
        args: &args,
        clip: [t, h, w],
        timing,
        warm_s,
        wall,
        step_ms,
        plain_dispatches: (d1 - d0) as f64 / n,
        plain_submits: (s1 - s0) as f64 / n,
        prof: &prof,
        warm: &warm,
        steps: n,
    };
    if args.json {
        let mut out = Output::stdout();
        outln!(
            out,
            "{}",
            serde_json::to_string_pretty(&report.json()).unwrap_or_default()
        )?;
        Ok(())
    } else {
        report.print()
    }
}

struct Report<'a> {
    args: &'a Args,
    clip: [usize; 3],
    timing: Timing,
    warm_s: f64,
    /// Plain steps: median wall ms per phase.
    wall: Vec<f64>,
    step_ms: f64,
    plain_dispatches: f64,
    plain_submits: f64,
    prof: &'a Profile,
    warm: &'a Profile,
    steps: f64,
}

impl Report<'_> {
    /// Compile ms (creation + first dispatch) per kernel, summed over its override sets.
    fn compile_ms(&self, kernel: &str) -> (f64, f64, usize) {
        self.warm
            .compiles
            .iter()
            .filter(|c| c.kernel == kernel)
            .fold((0.0, 0.0, 0), |(a, b, n), c| {
                (a + c.create_ms, b + c.first_dispatch_ms, n + 1)
            })
    }

    fn json(&self) -> Value {
        let kernels: Vec<Value> = self
            .prof
            .by_kernel()
            .iter()
            .map(|k| {
                let (create, first, variants) = self.compile_ms(k.kernel);
                json!({
                    "kernel": k.kernel, "phase": k.phase,
                    "dispatches": k.dispatches as f64 / self.steps,
                    "ms": k.ms / self.steps,
                    "share_of_step": k.ms / self.steps / self.step_ms,
                    "bytes_bound": k.bytes_bound as f64 / self.steps,
                    "compile": {"create_ms": create, "first_dispatch_ms": first, "variants": variants},
                })
            })
            .collect();
        let phases: Vec<Value> = PHASES
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let c = self.prof.counters(p);
                json!({
                    "phase": p, "wall_ms": self.wall[i],
                    "kernel_ms": self.prof.phase_ms(p) / self.steps,
                    "dispatches": self.prof.phase_dispatches(p) as f64 / self.steps,
                    "submits": c.submits as f64 / self.steps,
                    "uploads": c.uploads as f64 / self.steps,
                    "upload_bytes": c.upload_bytes as f64 / self.steps,
                    "downloads": c.downloads as f64 / self.steps,
                    "download_bytes": c.download_bytes as f64 / self.steps,
                })
            })
            .collect();
        let compiles: Vec<Value> = self
            .warm
            .compiles
            .iter()
            .map(|c| json!({"kernel": c.kernel, "constants": c.constants, "create_ms": c.create_ms, "first_dispatch_ms": c.first_dispatch_ms}))
            .collect();
        let gpu = Gpu::global().ok();
        json!({
            "model": self.args.model, "batch": self.args.batch, "clip": self.clip,
            "adapter": gpu.map(|g| g.info.name.clone()),
            "timing": self.timing.describe(),
            "pipeline_cache": gpu.map(|g| g.has_pipeline_cache()),
            "warmup_step_s": self.warm_s,
            "step_ms": self.step_ms,
            "clips_per_s": self.args.batch as f64 / self.step_ms * 1e3,
            "kernel_ms": self.prof.dispatches.iter().map(|d| d.ns / 1e6).sum::<f64>() / self.steps,
            "dispatches_per_step": self.plain_dispatches,
            "submits_per_step": self.plain_submits,
            "phases": phases, "kernels": kernels, "compiles": compiles,
        })
    }

    fn print(&self) -> Result<()> {
        let mut out = Output::stdout();
        let gpu = Gpu::global()?;
        let [t, h, w] = self.clip;
        let busy: f64 = self.prof.dispatches.iter().map(|d| d.ns / 1e6).sum::<f64>() / self.steps;
        let compile_s: f64 = self
            .warm
            .compiles
            .iter()
            .map(|c| c.create_ms + c.first_dispatch_ms)
            .sum::<f64>()
            / 1e3;
        outln!(
            out,
            "tubelet profile: {} batch {} ({t}×{h}×{w}) on {} ({:?}); {}",
            self.args.model,
            self.args.batch,
            gpu.info.name,
            gpu.info.backend,
            self.timing.describe()
        )?;
        outln!(
            out,
            "step {:.1} ms ({:.1} clips/s; median of {} plain steps), kernels {busy:.1} ms ({:.0}% of the step), \
             {:.0} dispatches and {:.0} submits a step",
            self.step_ms,
            self.args.batch as f64 / self.step_ms * 1e3,
            self.steps,
            100.0 * busy / self.step_ms,
            self.plain_dispatches,
            self.plain_submits
        )?;
        outln!(
            out,
            "warm-up step {:.1} s: {} pipelines compiled in {compile_s:.1} s (creation + first dispatch; pipeline cache {})",
            self.warm_s,
            self.warm.compiles.len(),
            if gpu.has_pipeline_cache() { "on" } else { "off" }
        )?;
        outln!(out)?;
        outln!(
            out,
            "{:<10} {:>9} {:>10} {:>7} {:>10} {:>8} {:>11} {:>10}",
            "phase",
            "wall ms",
            "kernel ms",
            "busy",
            "dispatches",
            "submits",
            "upload B",
            "download B"
        )?;
        for (i, p) in PHASES.iter().enumerate() {
            let c = self.prof.counters(p);
            let k = self.prof.phase_ms(p) / self.steps;
            outln!(
                out,
                "{:<10} {:>9.1} {:>10.1} {:>6.0}% {:>10.0} {:>8.1} {:>11.0} {:>10.0}",
                p,
                self.wall[i],
                k,
                100.0 * k / self.wall[i].max(1e-9),
                self.prof.phase_dispatches(p) as f64 / self.steps,
                c.submits as f64 / self.steps,
                c.upload_bytes as f64 / self.steps,
                c.download_bytes as f64 / self.steps
            )?;
        }
        outln!(out)?;
        let rows = self.prof.by_kernel();
        let kw = rows
            .iter()
            .map(|r| r.kernel.len())
            .max()
            .unwrap_or(6)
            .max(6);
        outln!(
            out,
            "{:<kw$} {:<9} {:>6} {:>9} {:>8} {:>6} {:>6} {:>9} {:>10}",
            "kernel",
            "phase",
            "calls",
            "ms",
            "µs/call",
            "share",
            "cum",
            "MiB bound",
            "compile ms"
        )?;
        let mut cum = 0.0;
        for r in rows.iter().take(self.args.top) {
            let ms = r.ms / self.steps;
            let calls = r.dispatches as f64 / self.steps;
            cum += ms;
            let (create, first, _) = self.compile_ms(r.kernel);
            outln!(
                out,
                "{:<kw$} {:<9} {:>6.0} {:>9.2} {:>8.0} {:>5.1}% {:>5.1}% {:>9.1} {:>10.0}",
                r.kernel,
                r.phase,
                calls,
                ms,
                1e3 * ms / calls.max(1e-9),
                100.0 * ms / self.step_ms,
                100.0 * cum / self.step_ms,
                r.bytes_bound as f64 / self.steps / (1 << 20) as f64,
                create + first
            )?;
        }
        if rows.len() > self.args.top {
            let rest: f64 = rows[self.args.top..].iter().map(|r| r.ms).sum::<f64>() / self.steps;
            outln!(
                out,
                "… {} more (kernel, phase) rows: {rest:.2} ms ({:.1}%)",
                rows.len() - self.args.top,
                100.0 * rest / self.step_ms
            )?;
        }
        Ok(())
    }
}
