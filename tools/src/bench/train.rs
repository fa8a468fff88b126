//! `tubelet bench train`: whole training steps (forward + cross-entropy, backward, the checks,
//! the optimiser) of every tiny preset at batch `--batch`: ms per phase, clips/s, peak memory
//! and dispatches per step; beside them, in the same run, PyTorch on the CPU training the same
//! architectures at the same shapes (benches/train_peer.py, given `--python`), and the ratio.
//!
//! The step is `tubelet profile`'s (tools/src/profile.rs `StepRig`, the trainer's phases), with
//! a sync at each phase's end; the median of `--steps` steps after one warm-up step (which
//! compiles the pipelines). The peer builds the models from the official modules where they
//! exist (see its header: Video Swin's SwinTransformer3D from a checkout given by
//! `--video-swin`; ViViT is Flax code, so its peer is a plain PyTorch transcription). Speed is
//! measured here, never asserted in a test.
//!
//! Not yet: one block of each paper preset at its real shape (the zoo has no block-level
//! builder to call); the peer covers vivit-tiny and swin-tiny only.
//!
//! ```text
//! tubelet bench train --python /path/to/venv/bin/python --video-swin ~/src/Video-Swin-Transformer
//! tubelet bench train --model vivit-tiny,swin-tiny --steps 3
//! ```

use crate::outln;
use crate::output::Output;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Args as ClapArgs;
use serde_json::{json, Value};
use tubelet::{Error, Gpu, Result};

use crate::profile::StepRig;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Presets (comma-separated); default every tiny preset.
    #[arg(long, value_delimiter = ',')]
    model: Vec<String>,
    /// Clips per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Timed steps per model (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Python with torch: runs benches/train_peer.py on the same models and shapes.
    #[arg(long)]
    python: Option<PathBuf>,
    /// A checkout of SwinTransformer/Video-Swin-Transformer, for the peer's official Swin.
    #[arg(long)]
    video_swin: Option<PathBuf>,
    /// Threads for PyTorch (0: its default, every core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

struct Row {
    model: String,
    clip: [usize; 3],
    phases: [f64; 4],
    peak: u64,
    dispatches: f64,
    submits: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn measure(name: &str, batch: usize, steps: usize) -> Result<Row> {
    let gpu = Gpu::global()?;
    let mut rig = StepRig::new(name, batch)?;
    rig.timed_step()?; // warm-up: compiles
    let mut times = Vec::new();
    let (d0, s0) = gpu.counters();
    gpu.reset_memory_peak();
    for _ in 0..steps.max(1) {
        times.push(rig.timed_step()?);
    }
    let (d1, s1) = gpu.counters();
    let n = steps.max(1) as f64;
    let phases = [0, 1, 2, 3].map(|i| median(times.iter().map(|t| t[i]).collect()));
    Ok(Row {
        model: name.to_string(),
        clip: rig.model.clip(),
        phases,
        peak: gpu.memory_peak(),
        // Submits include the sync that ends each phase (the trainer makes fewer).
        dispatches: (d1 - d0) as f64 / n,
        submits: (s1 - s0) as f64 / n,
    })
}

/// Runs the peer on `rows`' models; (model → its JSON line). None with the reason when it
/// cannot run at all.
fn run_peer(args: &Args, rows: &[Row]) -> std::result::Result<HashMap<String, Value>, String> {
    let Some(py) = &args.python else {
        return Err(
            "no --python given: `--python PY` with torch installed (pip install torch) \
                    runs benches/train_peer.py beside (add --video-swin CHECKOUT for Swin)"
                .into(),
        );
    };
    let plan: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({"model": r.model, "batch": args.batch, "clip": r.clip,
                   "classes": tubelet_models::TINY_CLASSES, "steps": args.steps.max(1)})
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("tubelet-bench-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let plan_path = dir.join("plan.json");
    std::fs::write(&plan_path, Value::Array(plan).to_string())
        .map_err(|e| format!("{}: {e}", plan_path.display()))?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/train_peer.py");
    let mut cmd = Command::new(py);
    cmd.arg(&script)
        .arg("--plan")
        .arg(&plan_path)
        .arg("--threads")
        .arg(args.threads.to_string());
    if let Some(v) = &args.video_swin {
        cmd.arg("--video-swin").arg(v);
    }
    let out = cmd.output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out.map_err(|e| format!("could not run {}: {e}", py.display()))?;
    let mut map = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Ok(v) = serde_json::from_str::<Value>(line) {
            let m = v["model"].as_str().unwrap_or("*").to_string();
            if m == "*" {
                return Err(v["error"].as_str().unwrap_or("the peer failed").to_string());
            }
            map.insert(m, v);
        }
    }
    if map.is_empty() {
        return Err(format!(
            "the peer printed nothing (exit {:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(map)
}

pub fn run(args: Args) -> Result<()> {
    // Closed-pipe safe (output.rs): `tubelet bench … | head` stops printing, not panicking.
    let out = &mut Output::stdout();
    let all = tubelet_models::presets();
    let names: Vec<String> = if args.model.is_empty() {
        all.iter()
            .filter(|p| p.tiny)
            .map(|p| p.name.to_string())
            .collect()
    } else {
        args.model.clone()
    };
    if args.batch == 0 {
        return Err(Error::Config(
            "bench train: --batch must be at least 1".into(),
        ));
    }
    // An unknown --model is an error before anything is timed (a row per model follows).
    for name in &names {
        tubelet_models::preset(name)?;
    }
    outln!(
        out,
        "training step at batch {}: median of {} steps (ms; a sync ends each phase)",
        args.batch,
        args.steps
    )?;
    outln!(
        out,
        "{:<16} {:>9} {:>9} {:>8} {:>8} {:>9} {:>8} {:>9} {:>10} {:>8}",
        "model",
        "forward",
        "backward",
        "checks",
        "optim",
        "step",
        "clips/s",
        "peak MiB",
        "dispatches",
        "submits*"
    )?;
    let mut rows = Vec::new();
    for name in &names {
        match measure(name, args.batch, args.steps) {
            Ok(r) => {
                let step: f64 = r.phases.iter().sum();
                outln!(
            out,
                    "{:<16} {:>9.1} {:>9.1} {:>8.1} {:>8.1} {:>9.1} {:>8.1} {:>9.1} {:>10.0} {:>8.0}",
                    r.model,
                    r.phases[0],
                    r.phases[1],
                    r.phases[2],
                    r.phases[3],
                    step,
                    args.batch as f64 / step * 1e3,
                    r.peak as f64 / (1 << 20) as f64,
                    r.dispatches,
                    r.submits
                )?;
                rows.push(r);
            }
            Err(e) => outln!(out, "{name:<16} {e}")?,
        }
    }
    outln!(
        out,
        "* with the sync that ends each phase here (the trainer's step makes fewer)"
    )?;
    outln!(out)?;
    match run_peer(&args, &rows) {
        Err(why) => outln!(out, "PyTorch peer: {why}")?,
        Ok(peer) => {
            outln!(
                out,
                "{:<16} {:>9} {:>9} {:>8} {:>9} {:>8} {:>12}  source",
                "PyTorch CPU",
                "forward",
                "backward",
                "optim",
                "step",
                "clips/s",
                "tubelet/torch"
            )?;
            for r in &rows {
                let Some(p) = peer.get(&r.model) else {
                    continue;
                };
                if let Some(e) = p["error"].as_str() {
                    outln!(out, "{:<16} {e}", r.model)?;
                    continue;
                }
                let f = |k: &str| p[k].as_f64().unwrap_or(f64::NAN);
                let ours: f64 = r.phases.iter().sum();
                outln!(
                    out,
                    "{:<16} {:>9.1} {:>9.1} {:>8.1} {:>9.1} {:>8.1} {:>11.2}×  {} ({} threads)",
                    r.model,
                    f("fwd_ms"),
                    f("bwd_ms"),
                    f("opt_ms"),
                    f("step_ms"),
                    f("clips_per_s"),
                    ours / f("step_ms"),
                    p["source"].as_str().unwrap_or("?"),
                    p["threads"]
                )?;
            }
        }
    }
    Ok(())
}
