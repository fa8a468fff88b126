//! `tubelet run`: builds any preset of the model registry (tiny or paper size), renders one
//! held-out synthetic clip at the preset's clip size, runs inference (no tape, eval mode) and
//! prints the top-k classes with their probabilities, the clip's true class, and the time of a
//! first run (which includes compiling the pipelines) and of a second one.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use tubelet::{no_grad, Error, Result};
use tubelet_data::synthetic::{Split, CLASS_NAMES, NUM_CLASSES};

use crate::clips::{load_weights, model_input, render};
use crate::outln;
use crate::output::Output;

#[derive(clap::Parser, Debug)]
#[command(name = "run")]
pub struct Args {
    /// Model to run (see `tubelet models`).
    #[arg(long, default_value = "vivit-tiny")]
    pub model: String,
    /// Weights: safetensors (e.g. from `tubelet train`) or an official checkpoint (.pth,
    /// .pyth); default: a seeded random initialisation.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Which held-out synthetic clip to classify.
    #[arg(long, default_value_t = 0)]
    pub clip_index: u64,
    /// How many classes to print.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub topk: u32,
    /// Seed of the synthetic set (the one `train` used) and of the initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// What one `tubelet run` found.
#[derive(Debug)]
pub struct Prediction {
    /// (class index, probability), most probable first.
    pub top: Vec<(usize, f64)>,
    /// The synthetic clip's class.
    pub label: usize,
    pub num_classes: usize,
    pub first_ms: f64,
    pub second_ms: f64,
    /// What loading `--weights` did (unused keys of the file, how tensors were stored).
    pub weights: Option<tubelet_train::weights::LoadReport>,
}

/// A class as printed: the synthetic name when the model has the synthetic set's classes.
pub fn class_name(class: usize, num_classes: usize) -> String {
    if num_classes == NUM_CLASSES {
        format!("{class} {}", CLASS_NAMES[class])
    } else {
        format!("class {class}")
    }
}

/// Builds the model, loads the weights and classifies the clip.
pub fn predict(args: &Args) -> Result<Prediction> {
    let preset = tubelet_models::preset(&args.model)?;
    let model = (preset.build)(&tubelet_models::BuildOptions::seed(args.seed))?;
    let report = match &args.weights {
        Some(w) => Some(load_weights(model.as_ref(), w)?),
        None => None,
    };
    let (x, labels) = render(args.seed, model.clip(), Split::Test, args.clip_index, 1);
    let x = model_input(model.as_ref(), &x, 1)?;
    let mut times = [0.0; 2];
    let mut logits = Vec::new();
    for t in &mut times {
        let start = Instant::now();
        logits = no_grad(|| model.forward(&x, false))?.to_vec()?; // (1, classes); reading back waits for the GPU
        *t = start.elapsed().as_secs_f64() * 1e3;
    }
    let classes = model.num_classes();
    if logits.len() != classes || logits.iter().any(|v| !v.is_finite()) {
        return Err(Error::Shape(format!(
            "{}: expected {classes} finite logits, got {} values ({} not finite)",
            preset.name,
            logits.len(),
            logits.iter().filter(|v| !v.is_finite()).count()
        )));
    }
    // softmax in f64
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let exp: Vec<f64> = logits.iter().map(|&v| (v as f64 - max).exp()).collect();
    let total: f64 = exp.iter().sum();
    let mut top: Vec<(usize, f64)> = exp.iter().map(|e| e / total).enumerate().collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(args.topk as usize);
    Ok(Prediction {
        top,
        label: labels[0] as usize,
        num_classes: classes,
        first_ms: times[0],
        second_ms: times[1],
        weights: report,
    })
}

pub fn run(args: Args) -> Result<()> {
    report(&args, &mut Output::stdout())
}

/// `tubelet run`, printing to `out`.
pub fn report<W: Write>(args: &Args, out: &mut Output<W>) -> Result<()> {
    let gpu = tubelet::Gpu::global()?;
    let preset = tubelet_models::preset(&args.model)?;
    let [t, h, w] = preset.clip;
    outln!(
        out,
        "tubelet run: {} ({} parameters, {t}×{h}×{w} clip) on {} ({:?})",
        preset.name,
        preset.params,
        gpu.info.name,
        gpu.info.backend
    )?;
    if args.weights.is_none() {
        outln!(
            out,
            "weights: random initialisation (seed {}); pass --weights FILE for trained ones",
            args.seed
        )?;
    }
    let p = predict(args)?;
    if let Some(r) = &p.weights {
        outln!(out, "{}", r.summary())?;
    }
    let truth = if p.num_classes == NUM_CLASSES {
        class_name(p.label, p.num_classes)
    } else {
        format!(
            "{} (synthetic; the model's {} classes are not the synthetic set's)",
            CLASS_NAMES[p.label], p.num_classes
        )
    };
    outln!(
        out,
        "clip: held-out synthetic clip {} (seed {}), true class: {truth}",
        args.clip_index,
        args.seed
    )?;
    outln!(out, "top-{}:", p.top.len())?;
    for (rank, (c, prob)) in p.top.iter().enumerate() {
        outln!(
            out,
            "  {:>2}. {:<16} {:>6.2}%",
            rank + 1,
            class_name(*c, p.num_classes),
            100.0 * prob
        )?;
    }
    outln!(
        out,
        "time: first run {:.1} ms (includes compiling the pipelines), second run {:.1} ms",
        p.first_ms,
        p.second_ms
    )?;
    Ok(())
}
