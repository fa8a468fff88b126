//! `tubelet eval`: evaluates a model's weights as the papers report it — the recipe's test
//! views (e.g. Video Swin: 4 clips × 3 crops), their scores combined as the recipe's code base
//! does (mmaction2 `average_clips='prob'`: the mean of the views' softmax; TSM: the mean of raw
//! scores), then top-1, top-5, mean class accuracy, and a per-class accuracy CSV.
//! The evaluation itself is tubelet-train's `eval::evaluate`; this file parses and prints.
//! Data: any of tubelet-data's datasets (`--data LIST|FOLDER`, `--data-root`), through its
//! loader with the recipe's test pipeline; without --data, tiny presets are evaluated on the
//! held-out synthetic split (one view).

use std::io::Write;
use std::path::PathBuf;

use tubelet::{Error, Result};
use tubelet_data::spec::{Mode, Sampling, TestCrop};
use tubelet_data::synthetic::{Split, NUM_CLASSES};
use tubelet_data::LoaderConfig;
use tubelet_models::BuildOptions;
use tubelet_train::data::{pipeline_for, LoaderSource, Views};
use tubelet_train::eval::{evaluate, EvalReport};
use tubelet_train::metrics::ViewAverage;
use tubelet_train::plot;
use tubelet_train::recipe;
use tubelet_train::runlog::write_atomic;
use tubelet_train::source::{BatchSource, Synthetic};

use crate::clips::load_weights;
use crate::outln;
use crate::output::Output;

#[derive(clap::Parser, Debug)]
#[command(name = "eval")]
pub struct Args {
    /// Model (see `tubelet models`).
    #[arg(long)]
    pub model: String,
    /// Weights (safetensors, official key names).
    #[arg(long)]
    pub weights: PathBuf,
    /// Test annotation list (mmaction2 format) or folder; default: the held-out synthetic split.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Folder the list's paths are relative to.
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// Classes of the model's head; default: the data's.
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// How views are combined: prob (mean softmax, mmaction2 'prob') or score (mean raw scores);
    /// default: the recipe's.
    #[arg(long)]
    pub average: Option<String>,
    /// Temporal views per video (clips); default: the recipe's.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub test_clips: Option<u32>,
    /// Spatial views per video: 1 (centre crop) or 3 (three crops); default: the recipe's.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3))]
    pub test_crops: Option<u32>,
    /// Synthetic split: clips to evaluate.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub clips: u32,
    /// Clips per forward.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub batch: u32,
    /// Seed of the synthetic set.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Per-class accuracy CSV; default `<weights>.per_class.csv`.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Also draw the confusion matrix here (PNG).
    #[arg(long)]
    pub confusion: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    evaluate_views(&args).map(|_| ())
}

/// What `tubelet eval` does (prints the accuracies, writes the CSV and the confusion matrix),
/// returning the report so callers (and tests) can read the numbers.
pub fn evaluate_views(args: &Args) -> Result<EvalReport> {
    evaluate_views_to(args, &mut Output::stdout())
}

/// [`evaluate_views`], printing to `out`.
pub fn evaluate_views_to<W: Write>(args: &Args, out: &mut Output<W>) -> Result<EvalReport> {
    let preset = tubelet_models::preset(&args.model)?;
    if args.data.is_none() && args.data_root.is_some() {
        return Err(Error::Config(
            "--data-root needs --data (the test list or folder)".into(),
        ));
    }
    if !preset.tiny && args.data.is_none() {
        return Err(Error::Config(format!(
            "model {:?} needs --data (the synthetic set has 8 classes and 32×32 clips)",
            preset.name
        )));
    }
    if args.data.is_none() && args.num_classes.is_some_and(|n| n != NUM_CLASSES) {
        return Err(Error::Config(format!(
            "--num-classes: the synthetic set has {NUM_CLASSES} classes"
        )));
    }
    let r = recipe::for_model(preset.name);
    let how = match args.average.as_deref() {
        None => r.as_ref().map_or(ViewAverage::Prob, |r| r.view_average),
        Some("prob") => ViewAverage::Prob,
        Some("score") => ViewAverage::Score,
        Some(o) => return Err(Error::Config(format!("--average {o:?}: use prob or score"))),
    };
    let rec = r.clone().unwrap_or_else(|| recipe::synthetic(preset.name));
    let files = match &args.data {
        Some(list) => {
            // The recipe's test views (e.g. 4 clips × 3 crops), in order, no shuffling.
            let mut pipeline = pipeline_for(preset.name, &rec, preset.clip, Views::Recipe);
            if let Some(n) = args.test_clips {
                pipeline.sampling = match pipeline.sampling {
                    Sampling::Clips {
                        clip_len,
                        frame_interval,
                        train_clips,
                        ..
                    } => Sampling::Clips {
                        clip_len,
                        frame_interval,
                        train_clips,
                        test_clips: n as usize,
                    },
                    Sampling::Uniform { clip_len, .. } => Sampling::Uniform {
                        clip_len,
                        test_clips: n as usize,
                    },
                    Sampling::Segments { .. } => {
                        return Err(Error::Config(format!(
                            "--test-clips: {} samples segments, one view in time",
                            preset.name
                        )))
                    }
                };
            }
            match args.test_crops {
                Some(1) => pipeline.test_crop = TestCrop::Center,
                Some(3) => pipeline.test_crop = TestCrop::Three,
                Some(n) => return Err(Error::Config(format!("--test-crops {n}: use 1 or 3"))),
                None => {}
            }
            let cfg = LoaderConfig {
                batch: args.batch as usize,
                seed: args.seed,
                shuffle: false,
                ..LoaderConfig::default()
            };
            Some(LoaderSource::open(
                list,
                args.data_root.as_deref(),
                args.num_classes,
                &pipeline,
                Mode::Test,
                cfg,
            )?)
        }
        None => None,
    };
    let classes = match &files {
        Some(f) => args.num_classes.unwrap_or(f.num_classes()),
        None => NUM_CLASSES,
    };
    let model = (preset.build)(&BuildOptions {
        seed: args.seed,
        num_classes: Some(classes),
        ..Default::default()
    })?;
    load_weights(model.as_ref(), &args.weights)?;
    let synthetic = Synthetic {
        seed: args.seed,
        clip: model.clip(),
        split: Split::Test,
        batch: args.batch as usize,
        clips: args.clips as usize,
        shard: tubelet_train::source::Shard::WHOLE,
    };
    let data: &dyn BatchSource = match &files {
        Some(f) => f,
        None => &synthetic,
    };
    let report = evaluate(model.as_ref(), data, how, None, &mut |_, _| {})?;
    outln!(out,
        "{}: top-1 {:.2}%  top-5 {:.2}%  mean class accuracy {:.2}%  ({} videos × {} view(s), averaged by {}; {:.1} s)",
        preset.name,
        100.0 * report.top1(),
        100.0 * report.top5(),
        100.0 * report.mean_class_accuracy(),
        report.tally.count,
        report.views,
        how.name(),
        report.seconds
    )?;
    let names = data.class_names();
    let csv = args.csv.clone().unwrap_or_else(|| {
        let mut p = args.weights.clone().into_os_string();
        p.push(".per_class.csv");
        PathBuf::from(p)
    });
    write_atomic(
        &csv,
        report.tally.per_class_csv(names.as_deref()).as_bytes(),
    )?;
    outln!(out, "per-class accuracy: {}", csv.display())?;
    if let Some(p) = &args.confusion {
        plot::confusion(p, &report.tally, names.as_deref())?;
        outln!(out, "confusion matrix: {}", p.display())?;
    }
    Ok(report)
}
