//! `tubelet data`: `check` scans a dataset without training (per-file problems, frame counts,
//! resolutions, codecs, class counts); `synth` writes the synthetic moving-shapes set as real
//! files (mp4, webm or JPEG rawframes) plus mmaction2 annotation lists.
//! The work is in tubelet-data (`check::scan`, `synth::write_set`); this only parses and prints.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use tubelet::{Error, Result};
use tubelet_data::check::scan;
use tubelet_data::synth::{write_set, Format, SynthOptions};
use tubelet_data::{DataSpec, Source};

use crate::outln;
use crate::output::Output;

#[derive(Subcommand, Debug)]
pub enum Data {
    /// Scan a dataset (annotation list or folder per class) and report every problem file,
    /// frame counts, resolutions, codecs and items per class.
    Check(CheckArgs),
    /// Write the synthetic moving-shapes set as video files or JPEG frames plus train/val
    /// annotation lists, to try the real-data path with nothing downloaded.
    Synth(SynthArgs),
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Annotation list (`path label` or `frame_dir total_frames label`) or a folder per class.
    #[arg(long)]
    pub data: PathBuf,
    /// Folder the list's paths are relative to (default: the list's folder).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// Frame file names of rawframes folders.
    #[arg(long, default_value = "img_{:05}.jpg")]
    pub template: String,
    /// Number of the first frame file.
    #[arg(long, default_value_t = 1)]
    pub start_index: usize,
    /// Decode every frame (slower; also finds a corrupt frame in the middle of a file).
    #[arg(long)]
    pub full: bool,
    /// Threads (default: the machine's cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print a line for every file, not only the problems.
    #[arg(long)]
    pub verbose: bool,
}

#[derive(clap::Args, Debug)]
pub struct SynthArgs {
    /// Folder to write into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// mp4 (H.264), webm (VP9) or rawframes (JPEG frames, img_00001.jpg …).
    #[arg(long, default_value = "mp4")]
    pub format: Format,
    /// Training clips.
    #[arg(long, default_value_t = 512)]
    pub clips: usize,
    /// Validation clips (the synthetic held-out split); default a quarter of --clips.
    #[arg(long)]
    pub val_clips: Option<usize>,
    /// Frames per clip.
    #[arg(long, default_value_t = 32)]
    pub frames: usize,
    /// Frame height and width.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Seed of the rendered set.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(cmd: Data) -> Result<()> {
    let out = &mut Output::stdout();
    match cmd {
        Data::Check(a) => check(&a, out),
        Data::Synth(a) => synth(&a, out),
    }
}

/// `tubelet data check`, printing to `out`.
pub fn check<W: Write>(a: &CheckArgs, out: &mut Output<W>) -> Result<()> {
    let source = Source::detect(&a.data)?;
    let kind = match &source {
        Source::VideoList(_) => "video list",
        Source::RawframesList(_) => "rawframes list",
        Source::FolderPerClass(_) => "folder per class",
        Source::Synthetic { .. } => "synthetic",
    };
    let spec = DataSpec {
        root: a.data_root.clone(),
        template: a.template.clone(),
        start_index: a.start_index,
        ..DataSpec::new(source)
    };
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let t0 = std::time::Instant::now();
    let report = scan(&spec, threads, a.full)?;
    outln!(
        out,
        "{} ({kind}): {} items, {} classes; scanned in {:.1} s",
        a.data.display(),
        report.files.len(),
        report.num_classes,
        t0.elapsed().as_secs_f64()
    )?;
    for f in &report.files {
        match &f.problem {
            Some(p) => outln!(out, "BAD  {p}")?,
            None if a.verbose => {
                let size = f.size.map_or("?".into(), |[h, w]| format!("{w}×{h}"));
                outln!(
                    out,
                    "ok   {}  label {}  {} frames  {size}  {}",
                    f.path.display(),
                    f.label,
                    f.frames.map_or("?".into(), |n| n.to_string()),
                    f.codec.as_deref().unwrap_or("?")
                )?;
            }
            None => {}
        }
    }
    let good: Vec<_> = report
        .files
        .iter()
        .filter(|f| f.problem.is_none())
        .collect();
    let mut frames: Vec<usize> = good.iter().filter_map(|f| f.frames).collect();
    frames.sort_unstable();
    if let (Some(lo), Some(hi)) = (frames.first(), frames.last()) {
        outln!(
            out,
            "frames per file: min {lo}, median {}, max {hi}",
            frames[frames.len() / 2]
        )?;
    }
    let count = |key: &dyn Fn(&tubelet_data::check::FileReport) -> Option<String>| {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for f in &good {
            if let Some(k) = key(f) {
                *m.entry(k).or_insert(0) += 1;
            }
        }
        let mut v: Vec<(String, usize)> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.iter()
            .take(8)
            .map(|(k, n)| format!("{k} ({n})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    outln!(
        out,
        "resolutions (w×h): {}",
        count(&|f| f.size.map(|[h, w]| format!("{w}×{h}")))
    )?;
    outln!(out, "codecs: {}", count(&|f| f.codec.clone()))?;
    let names = report.class_names.clone();
    let classes: Vec<String> = report
        .class_counts
        .iter()
        .map(
            |(l, n)| match names.as_ref().and_then(|c| c.get(*l as usize)) {
                Some(name) => format!("{l} {name}: {n}"),
                None => format!("{l}: {n}"),
            },
        )
        .collect();
    outln!(out, "items per class: {}", classes.join(", "))?;
    let missing: Vec<String> = (0..report.num_classes as u32)
        .filter(|l| !report.class_counts.contains_key(l))
        .map(|l| l.to_string())
        .collect();
    if !missing.is_empty() {
        outln!(out, "classes with no items: {}", missing.join(", "))?;
    }
    let bad = report.bad().count();
    if bad > 0 {
        return Err(Error::Io(format!(
            "{bad} of {} files have problems (listed above with BAD)",
            report.files.len()
        )));
    }
    outln!(out, "all {} files ok", report.files.len())?;
    Ok(())
}

/// `tubelet data synth`, printing to `out`.
pub fn synth<W: Write>(a: &SynthArgs, out: &mut Output<W>) -> Result<()> {
    if a.clips == 0 || a.frames == 0 || a.size == 0 {
        return Err(Error::Config(format!(
            "--clips {}, --frames {} and --size {} must be at least 1",
            a.clips, a.frames, a.size
        )));
    }
    let opt = SynthOptions {
        format: a.format,
        train_clips: a.clips,
        val_clips: a.val_clips.unwrap_or((a.clips / 4).max(1)),
        clip: [a.frames, a.size, a.size],
        seed: a.seed,
        fps: 25,
    };
    let t0 = std::time::Instant::now();
    let w = write_set(&a.out, &opt)?;
    outln!(
        out,
        "wrote {} train and {} val clips ({:?}, {}×{}×{}) to {} in {:.1} s",
        opt.train_clips,
        opt.val_clips,
        a.format,
        a.frames,
        a.size,
        a.size,
        a.out.display(),
        t0.elapsed().as_secs_f64()
    )?;
    outln!(
        out,
        "lists: {} and {}; classes: {}",
        w.train_list.display(),
        w.val_list.display(),
        w.classes.display()
    )?;
    Ok(())
}
