//! `tubelet bench memory`: the engine's peak memory (`Gpu::memory_peak`, engine/src/gpu.rs) for
//! one training step (forward, cross-entropy, backward, AdamW) of every paper preset at its
//! paper clip size, at batch 1 and 2, with and without activation checkpointing
//! (engine/src/checkpoint.rs), and the largest batch that fits a budget.
//!
//! Extrapolation: the peak is affine in the batch, peak(b) = fixed + b·per_clip (the weights,
//! gradients and AdamW moments are the fixed part; activations scale with the clips), so
//! per_clip = peak(2) − peak(1) and the largest batch is ⌊(budget − fixed) / per_clip⌋.
//!
//! Speed: a paper-size step takes minutes on lavapipe, so the steps run in the engine's
//! accounting-only mode (`Gpu::set_accounting_only`): every buffer is allocated and released as
//! in a real step, no kernel runs. Shapes never depend on values, so the peak is the real one;
//! before the table the bench checks that on the tiny presets (a real step and an accounting
//! step give the same peak, with and without checkpointing) and checks the engine's byte
//! counters against the allocator's own report (wgpu's `generate_allocator_report`: live plus
//! pooled tensor bytes equal the allocator's allocated bytes less the engine's fixed buffers,
//! after the forward, the backward and the update). `--real` runs the kernels too.
//!
//! Measured (accounting only, exact against real steps by the checks): Swin-T at 32×224²,
//! batch 1, 5.31 GiB without checkpointing, 2.02 GiB (38%) with `blocks`, 2.65 GiB (50%) with
//! `stages`. Batch 2 of the paper presets often needs one buffer above lavapipe's 128 MiB
//! binding limit; then the fixed part is estimated as 4 × the weights' bytes (marked ~).
//!
//! ```text
//! tubelet bench memory                                  # every paper preset, 8 GiB budget
//! tubelet bench memory --model swin-t --checkpoint none,blocks
//! tubelet bench memory --model swin-t --real            # the kernels too (minutes on lavapipe)
//! ```

use clap::Args as ClapArgs;
use tubelet::checkpoint::{set_checkpointing, Checkpointing};
use tubelet::optim::{AdamW, AdamWConfig};
use tubelet::{Error, Gpu, Indices, Result, Tensor};
use tubelet_models::{Preset, VideoModel};

use crate::outln;
use crate::output::Output;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Presets to measure (comma-separated names, see `tubelet models`); default every paper preset.
    #[arg(long, value_delimiter = ',')]
    model: Vec<String>,
    /// Checkpointing modes to compare (comma-separated: none, blocks, stages).
    #[arg(long, value_delimiter = ',', default_value = "none,blocks,stages")]
    checkpoint: Vec<Checkpointing>,
    /// Memory budget for the largest batch, e.g. 8GiB, 512MiB, 24GB.
    #[arg(long, default_value = "8GiB", value_parser = parse_bytes)]
    budget: u64,
    /// Run the kernels too (slow on lavapipe) instead of accounting only.
    #[arg(long)]
    real: bool,
    /// Skip the checks of the accounting mode and of the byte counters against the allocator.
    #[arg(long)]
    no_verify: bool,
}

/// "8GiB", "512MiB", "24GB", "1000000": bytes.
pub fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 8GiB, 512MiB or 24GB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kib" | "k" => 1024.0,
        "mib" | "m" => 1024.0 * 1024.0,
        "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (use B, KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    Ok((v * mult) as u64)
}

fn gib(b: u64) -> String {
    format!("{:.2}", b as f64 / (1u64 << 30) as f64)
}

/// Sets the thread's checkpointing mode and the accounting mode until dropped.
struct Modes {
    checkpointing: Checkpointing,
    accounting: bool,
}

impl Modes {
    fn set(mode: Checkpointing, accounting: bool) -> Modes {
        Gpu::global()
            .expect("adapter")
            .set_accounting_only(accounting);
        Modes {
            checkpointing: set_checkpointing(mode),
            accounting: false,
        }
    }
}

impl Drop for Modes {
    fn drop(&mut self) {
        set_checkpointing(self.checkpointing);
        if let Ok(g) = Gpu::global() {
            g.set_accounting_only(self.accounting);
        }
    }
}

/// Engine byte counters at one point of a step, against the allocator's report.
struct Probe {
    at: &'static str,
    /// `memory_in_use + memory_pooled`: every tensor buffer the engine holds.
    engine: u64,
    allocator: Option<Report>,
}

/// The allocator's report (Vulkan, DX12, Metal through wgpu's `generate_allocator_report`),
/// after letting the device free what was dropped, for the engine's tensor buffers (created
/// without a label; wgpu's own and the engine's other buffers carry one).
struct Report {
    buffers: usize,
    /// Each allocation's size rounded down to a power of two: the pool's size class it was
    /// asked for. The driver pads each buffer by a few bytes (lavapipe: up to 56), less than
    /// its class, so this recovers the request exactly.
    requested: u64,
    /// What the driver added beyond the requests.
    padding: u64,
}

fn allocator_report(gpu: &Gpu) -> Option<Report> {
    let _ = gpu.device.poll(wgpu::PollType::wait_indefinitely());
    let r = gpu.device.generate_allocator_report()?;
    let sizes: Vec<u64> = r
        .allocations
        .iter()
        .filter(|a| a.name == "Unlabeled buffer")
        .map(|a| a.size)
        .collect();
    let requested: u64 = sizes
        .iter()
        .map(|&s| {
            if s == 0 {
                0
            } else {
                1u64 << (63 - s.leading_zeros())
            }
        })
        .sum();
    Some(Report {
        buffers: sizes.len(),
        requested,
        padding: sizes.iter().sum::<u64>() - requested,
    })
}

/// One training step of `model` at batch `b` from a fresh optimiser; returns the peak of
/// `memory_in_use` during it (weights, AdamW state, input and labels included) and, when
/// `probe`, the counters against the allocator after the forward, backward and update.
fn step(model: &dyn VideoModel, b: usize, probe: bool) -> Result<(u64, Vec<Probe>)> {
    let gpu = Gpu::global()?;
    let mut opt = AdamW::new(model.named_params(), AdamWConfig::default())?;
    let x = Tensor::try_full(&model.input_layout().shape(b, model.clip()), 0.0)?;
    let labels = Indices::from_slice(&vec![0u32; b])?;
    gpu.sync()?;
    gpu.reset_memory_peak();
    let mut probes = Vec::new();
    let mut look = |at: &'static str| {
        if probe {
            let allocator = allocator_report(gpu);
            probes.push(Probe {
                at,
                engine: gpu.memory_in_use() + gpu.memory_pooled(),
                allocator,
            });
        }
    };
    {
        let loss = model.forward(&x, true)?.try_cross_entropy(&labels)?;
        gpu.sync()?;
        look("after the forward");
        let grads = loss.backward()?;
        gpu.sync()?;
        look("after the backward");
        opt.step(&grads)?;
        gpu.sync()?;
        look("after the update");
    }
    let peak = gpu.memory_peak();
    drop(opt);
    gpu.trim_pool();
    Ok((peak, probes))
}

/// Peak of one step of a freshly built `preset` at batch `b` under `mode`, and the bytes that
/// do not scale with the batch (weights, their gradients, AdamW's two moments: 4 per weight,
/// each tensor rounded up to the pool's size class).
fn measure(p: &Preset, b: usize, mode: Checkpointing, accounting: bool) -> Result<(u64, u64)> {
    let _m = Modes::set(mode, accounting);
    let model = (p.build)(&tubelet_models::BuildOptions::seed(0))?;
    let fixed = model
        .named_params()
        .iter()
        .map(|(_, t)| 4 * (4 * t.numel() as u64).max(256).next_power_of_two())
        .sum();
    let (peak, _) = step(model.as_ref(), b, false)?;
    drop(model);
    Gpu::global()?.trim_pool();
    Ok((peak, fixed))
}

/// The checks the table relies on (see the header).
fn verify() -> Result<()> {
    let out = &mut Output::stdout();
    let gpu = Gpu::global()?;
    outln!(out, "checks (tiny presets, batch 2):")?;
    // 1. The engine's counters against the allocator: every tensor buffer, live or pooled.
    if allocator_report(gpu).is_none() {
        outln!(
            out,
            "  this backend gives no allocator report: counters not cross-checked"
        )?;
        return verify_accounting();
    }
    let model = tubelet_models::build("swin-tiny", &tubelet_models::BuildOptions::seed(0))?;
    let (peak, probes) = step(model.as_ref(), 2, true)?;
    for pr in &probes {
        let Some(r) = &pr.allocator else { continue };
        let ok = r.requested == pr.engine;
        outln!(out,
            "  {:<20} engine live + pooled {:>10} B; allocator: {} tensor buffers of {:>10} B as requested {} (+ {} B driver padding)",
            pr.at,
            pr.engine,
            r.buffers,
            r.requested,
            if ok { "(equal)" } else { "(DIFFERENT)" },
            r.padding
        )?;
        if !ok {
            return Err(Error::Gpu(format!(
                "bench memory: the engine counts {} B of tensor buffers {} but the allocator holds {} B",
                pr.engine, pr.at, r.requested
            )));
        }
    }
    // The pool keeps every buffer the peak held (nothing is freed within a step), so the peak
    // is at most what the allocator holds for tensors after the step.
    let after = probes.last().map_or(0, |p| p.engine);
    outln!(
        out,
        "  step peak {peak} B {} live + pooled after the step {after} B",
        if peak <= after { "≤" } else { "> (WRONG)" }
    )?;
    if peak > after {
        return Err(Error::Gpu(format!(
            "bench memory: peak {peak} B above the {after} B the allocator holds"
        )));
    }
    drop(model);
    verify_accounting()
}

/// 2. Accounting-only steps give the real steps' peaks.
fn verify_accounting() -> Result<()> {
    let out = &mut Output::stdout();
    for name in ["swin-tiny", "uniformer-tiny"] {
        let Some(p) = tubelet_models::presets()
            .into_iter()
            .find(|p| p.name == name)
        else {
            continue;
        };
        for mode in [Checkpointing::None, Checkpointing::Blocks] {
            let real = measure(&p, 2, mode, false)?.0;
            let acc = measure(&p, 2, mode, true)?.0;
            outln!(out, "  {name:<15} --checkpoint {mode:<6}: real step peak {real} B, accounting-only {acc} B {}", if real == acc { "(equal)" } else { "(DIFFERENT)" })?;
            if real != acc {
                return Err(Error::Gpu(format!("bench memory: {name} accounting-only peak {acc} B differs from the real {real} B")));
            }
        }
    }
    Ok(())
}

pub fn run(args: Args) -> Result<()> {
    let out = &mut Output::stdout();
    let all = tubelet_models::presets();
    let presets: Vec<&Preset> = if args.model.is_empty() {
        all.iter().filter(|p| !p.tiny).collect()
    } else {
        args.model
            .iter()
            .map(|n| {
                all.iter().find(|p| p.name == n).ok_or_else(|| {
                    let names: Vec<_> = all.iter().map(|p| p.name).collect();
                    Error::Config(format!(
                        "bench memory: unknown model {n:?}; available: {}",
                        names.join(", ")
                    ))
                })
            })
            .collect::<Result<_>>()?
    };
    if !args.no_verify {
        verify()?;
    }
    outln!(
        out,
        "peak memory of one training step (forward, backward, AdamW), GiB; {}; budget {} GiB",
        if args.real {
            "kernels run"
        } else {
            "accounting only (see the checks)"
        },
        gib(args.budget)
    )?;
    outln!(
        out,
        "{:<16} {:<12} {:<10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>8}",
        "model",
        "clip",
        "checkpoint",
        "batch 1",
        "batch 2",
        "per clip",
        "fixed",
        "max batch",
        "vs none"
    )?;
    for p in presets {
        let mut none_peak = None;
        for &mode in &args.checkpoint {
            let clip = format!("{}×{}×{}", p.clip[0], p.clip[1], p.clip[2]);
            let (b1, fixed_est) = match measure(p, 1, mode, !args.real) {
                Ok(r) => r,
                Err(e) => {
                    outln!(
                        out,
                        "{:<16} {:<12} {:<10} {e}",
                        p.name,
                        clip,
                        mode.to_string()
                    )?;
                    continue;
                }
            };
            // Batch 2 can exceed an adapter's largest buffer (lavapipe: 128 MiB) where batch 1
            // does not: then the fixed part is the weights' share (marked ~).
            let (b2, per, fixed, mark) = match measure(p, 2, mode, !args.real) {
                Ok((b2, _)) => {
                    let per = b2.saturating_sub(b1);
                    (gib(b2), per, b1.saturating_sub(per), "")
                }
                Err(e) => {
                    eprintln!("{} {clip} --checkpoint {mode} batch 2: {e}", p.name);
                    (
                        "too big".to_string(),
                        b1.saturating_sub(fixed_est),
                        fixed_est,
                        "~",
                    )
                }
            };
            let max = args
                .budget
                .saturating_sub(fixed)
                .checked_div(per)
                .map_or("-".to_string(), |m| format!("{mark}{m}"));
            if mode == Checkpointing::None {
                none_peak = Some(b1);
            }
            let ratio = none_peak.map_or("-".to_string(), |n| {
                format!("{:.0}%", 100.0 * b1 as f64 / n as f64)
            });
            outln!(
                out,
                "{:<16} {:<12} {:<10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>8}",
                p.name,
                clip,
                mode.to_string(),
                gib(b1),
                b2,
                format!("{mark}{}", gib(per)),
                format!("{mark}{}", gib(fixed)),
                max,
                ratio
            )?;
        }
    }
    Ok(())
}
