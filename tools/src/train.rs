//! `tubelet train`: trains any preset of the model registry that is small enough for the
//! embedded synthetic moving-shapes dataset (`tiny: true`) with AdamW (linear warm-up, cosine
//! decay), shows loss / accuracy / clips per second, evaluates on the held-out split and writes
//! the parameters and buffers atomically under their official key names.
//!
//! A non-finite loss stops training before the update is applied, so the parameters on the GPU
//! are the last good ones; buffers (BatchNorm running statistics), which the failing forward
//! already updated, are restored from a copy taken before it. That state is written to the
//! checkpoint path and the run fails loudly.
//!
//! Presets that are not tiny (the paper configurations: 224² clips, 400 classes, tens of
//! millions of parameters) are refused: the synthetic set has 8 classes and 32² clips, and a
//! single training step of such a model takes minutes on a software rasteriser. `tubelet run`
//! runs them.

use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use tubelet::optim::{AdamW, AdamWConfig};
use tubelet::{no_grad, Error, Indices, Result, Tensor};
use tubelet_data::synthetic::{Split, NUM_CLASSES};

use crate::clips::{argmax_rows, find_preset, load_weights, model_input, render, state};

#[derive(clap::Parser, Debug)]
#[command(name = "train")]
pub struct Args {
    /// Model to train: a preset marked trainable in `tubelet models`.
    #[arg(long, default_value = "vivit-tiny")]
    pub model: String,
    /// Optimiser steps.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(1..))]
    pub steps: u32,
    /// Clips per step.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub batch: u32,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    /// AdamW weight decay (not applied to biases, norms, position embeddings, cls tokens).
    #[arg(long, default_value_t = 0.05)]
    pub weight_decay: f32,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 40)]
    pub warmup: u32,
    /// Seed for the weights and the dataset.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Held-out clips to evaluate on at the end.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub eval_clips: u32,
    /// Start from these weights (safetensors, official key names; prefixes such as `module.`
    /// are stripped) instead of a fresh initialisation.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Where to write the trained weights (safetensors, written atomically); default
    /// `tubelet-<model>.safetensors`.
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// No progress bar: one line every 50 steps (for logs and CI).
    #[arg(long)]
    pub quiet: bool,
}

/// Learning rate at `step`: linear warm-up to `peak`, then cosine decay to 0.
fn lr_at(step: u32, steps: u32, warmup: u32, peak: f32) -> f32 {
    if step < warmup {
        return peak * (step + 1) as f32 / warmup as f32;
    }
    let t = (step - warmup) as f32 / (steps - warmup).max(1) as f32;
    peak * 0.5 * (1.0 + (std::f32::consts::PI * t).cos())
}

/// Fails now, not after training, when the checkpoint cannot be written where asked: creates
/// (and removes) the uniquely named temporary a save would write.
fn check_writable(save: &std::path::Path) -> Result<()> {
    tubelet::io::check_writable(save).map_err(|e| Error::Config(format!("--save {}: {e}", save.display())))
}

pub fn run(args: Args) -> Result<()> {
    if !(args.lr > 0.0 && args.lr.is_finite()) {
        return Err(Error::Config(format!("--lr must be a positive number, got {}", args.lr)));
    }
    if !(0.0..1.0).contains(&args.weight_decay) {
        return Err(Error::Config(format!("--weight-decay must be in [0, 1), got {}", args.weight_decay)));
    }
    let preset = find_preset(&args.model)?;
    if !preset.tiny {
        let tiny: Vec<String> =
            tubelet_models::presets().iter().filter(|p| p.tiny).map(|p| p.name.to_string()).collect();
        return Err(Error::Config(format!(
            "model {:?} ({} parameters, {}×{}×{} clips) is too large for the synthetic set (8 classes, \
             32×32 clips); train one of: {} (or run it with `tubelet run --model {}`)",
            preset.name, preset.params, preset.clip[0], preset.clip[1], preset.clip[2], tiny.join(", "), preset.name
        )));
    }
    let save = args.save.clone().unwrap_or_else(|| PathBuf::from(format!("tubelet-{}.safetensors", preset.name)));
    check_writable(&save)?;
    let gpu = tubelet::Gpu::global()?;
    let model = (preset.build)(args.seed)?;
    let classes = model.num_classes();
    if classes != NUM_CLASSES {
        return Err(Error::Config(format!(
            "model {:?} has {classes} classes; the synthetic set has {NUM_CLASSES}",
            preset.name
        )));
    }
    if let Some(w) = &args.weights {
        load_weights(model.as_ref(), w)?;
    }
    let clip = model.clip();
    let params = model.named_params();
    let buffers = model.named_buffers();
    let checkpoint = state(model.as_ref());
    // Copies of the buffers taken before each forward: the NaN guard restores them.
    let backups = buffers.iter().map(|(_, t)| Tensor::try_full(t.shape(), 0.0)).collect::<Result<Vec<_>>>()?;
    let n_params: usize = params.iter().map(|(_, t)| t.numel()).sum();
    println!(
        "tubelet train: {} ({} parameters) on {} ({:?}); {} steps × {} clips of {}×{}×{}, {} classes",
        args.model, n_params, gpu.info.name, gpu.info.backend, args.steps, args.batch,
        clip[0], clip[1], clip[2], NUM_CLASSES
    );
    let mut opt = AdamW::new(
        params.clone(),
        AdamWConfig { lr: args.lr, weight_decay: args.weight_decay, ..AdamWConfig::default() },
    )?;

    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.steps as u64).with_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")
                .expect("static template"),
        )
    };
    let b = args.batch as usize;
    let start = Instant::now();
    let (mut ema_loss, mut ema_acc) = (None::<f32>, None::<f32>);
    for step in 0..args.steps {
        let (x, y) = render(args.seed, clip, Split::Train, step as u64 * b as u64, b);
        let x = model_input(model.as_ref(), &x, b)?;
        let labels = Indices::from_slice(&y)?;
        for ((_, buf), copy) in buffers.iter().zip(&backups) {
            copy.assign(buf)?;
        }
        let logits = model.forward(&x, true)?; // (B, classes)
        let loss = logits.try_cross_entropy(&labels)?;
        let grads = loss.backward()?;
        // One sync a step: the loss and logits for the display and the NaN guard.
        let loss_v = loss.item()?;
        if !loss_v.is_finite() {
            bar.abandon();
            for ((_, buf), copy) in buffers.iter().zip(&backups) {
                buf.assign(copy)?;
            }
            // The parameters may have turned non-finite an update before the loss did: the save
            // refuses them rather than overwrite a good file (e.g. the --weights it started from).
            let saved = match tubelet::io::save(&save, &checkpoint, None) {
                Ok(()) => format!("wrote the weights of the last finite step to {}", save.display()),
                Err(e) => format!("wrote nothing ({e})"),
            };
            return Err(Error::Config(format!(
                "loss became {loss_v} at step {step}; stopped before applying that update and {saved}. \
                 Try a lower --lr (now {})",
                args.lr
            )));
        }
        let pred = argmax_rows(&logits.to_vec()?, NUM_CLASSES);
        let acc = pred.iter().zip(&y).filter(|(p, l)| **p == **l as usize).count() as f32 / b as f32;
        opt.config.lr = lr_at(step, args.steps, args.warmup.min(args.steps), args.lr);
        opt.step(&grads)?;

        let smooth = |e: Option<f32>, v: f32| Some(e.map_or(v, |e| 0.9 * e + 0.1 * v));
        ema_loss = smooth(ema_loss, loss_v);
        ema_acc = smooth(ema_acc, acc);
        let clips_s = (step + 1) as f64 * b as f64 / start.elapsed().as_secs_f64();
        let msg = format!(
            "loss {:.3}  acc {:.1}%  {:.0} clips/s",
            ema_loss.unwrap(),
            100.0 * ema_acc.unwrap(),
            clips_s
        );
        bar.set_position(step as u64 + 1);
        bar.set_message(msg.clone());
        if args.quiet && (step % 50 == 0 || step + 1 == args.steps) {
            println!("step {:>5}/{}  {msg}", step + 1, args.steps);
        }
    }
    bar.finish();
    let train_s = start.elapsed().as_secs_f64();

    // Held-out evaluation, no tape.
    let eval_start = Instant::now();
    let mut correct = 0usize;
    let n_eval = args.eval_clips as usize;
    let mut done = 0usize;
    while done < n_eval {
        let nb = b.min(n_eval - done);
        let (x, y) = render(args.seed, clip, Split::Test, done as u64, nb);
        let x = model_input(model.as_ref(), &x, nb)?;
        let logits = no_grad(|| model.forward(&x, false))?;
        let pred = argmax_rows(&logits.to_vec()?, NUM_CLASSES);
        correct += pred.iter().zip(&y).filter(|(p, l)| **p == **l as usize).count();
        done += nb;
    }
    let acc = correct as f64 / n_eval as f64;
    println!(
        "held-out accuracy: {:.1}% ({correct}/{n_eval} clips; chance {:.1}%); trained in {:.0} s \
         ({:.1} clips/s), evaluated in {:.1} s",
        100.0 * acc,
        100.0 / NUM_CLASSES as f64,
        train_s,
        args.steps as f64 * b as f64 / train_s,
        eval_start.elapsed().as_secs_f64()
    );
    tubelet::io::save(&save, &checkpoint, None)?;
    println!(
        "weights: {} ({} parameters and {} buffers, official key names)",
        save.display(),
        params.len(),
        buffers.len()
    );
    Ok(())
}
