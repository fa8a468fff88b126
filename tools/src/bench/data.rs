//! `tubelet bench data`: clips per second through the whole data pipeline (open, sample,
//! decode, short-side resize, crop, flip, normalise, batch) for Video Swin's 32×2 clips and
//! TSM's 8 segments at 224², with 1, 2 and all threads; and, in the same run, decord and PyAV
//! decoding the *same frames of the same files* (benches/data_peer.py, given `--python`).
//!
//! Without `--data` it writes the synthetic set as 320p H.264 files first (needs video
//! support). The peers only decode (and resize in the decoder); tubelet's numbers include the
//! augmentation too, so a tie favours the peers. Speed is measured here, never asserted in a
//! test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use tubelet::{Error, Result};
use tubelet_data::dataset::item_rng;
use tubelet_data::sampling::sample;
use tubelet_data::synth::{write_set, Format, SynthOptions};
use tubelet_data::transform::short_side_size;
use tubelet_data::video::VideoReader;
use tubelet_data::{open, DataSpec, Dataset, Loader, LoaderConfig, Mode, Pipeline, Source};

use crate::outln;
use crate::output::Output;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Annotation list or folder per class to read (default: synthetic 320p H.264 files
    /// written to a temporary folder).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Folder the list's paths are relative to.
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Clips timed per configuration and thread count.
    #[arg(long, default_value_t = 64)]
    clips: usize,
    /// Thread counts (0 = all cores).
    #[arg(long, value_delimiter = ',', default_value = "1,2,0")]
    threads: Vec<usize>,
    /// Synthetic files to write when no --data is given.
    #[arg(long, default_value_t = 8)]
    files: usize,
    /// Python with decord and PyAV installed: runs benches/data_peer.py on the same frames.
    #[arg(long)]
    python: Option<PathBuf>,
}

/// One row of the table.
struct Row {
    config: &'static str,
    reader: String,
    threads: usize,
    clips_s: Option<f64>,
    note: String,
}

pub fn run(args: Args) -> Result<()> {
    let out = &mut Output::stdout();
    let scratch = std::env::temp_dir().join(format!("tubelet-bench-data-{}", std::process::id()));
    let list = match &args.data {
        Some(p) => p.clone(),
        None => {
            let opt = SynthOptions {
                format: Format::Mp4,
                train_clips: args.files.max(1),
                val_clips: 1,
                clip: [96, 320, 426],
                seed: 0,
                fps: 30,
            };
            outln!(
                out,
                "writing {} synthetic 426×320 H.264 files of 96 frames to {}",
                opt.train_clips,
                scratch.display()
            )?;
            write_set(&scratch, &opt)?.train_list
        }
    };
    let result = bench(&args, &list);
    if args.data.is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    result
}

fn bench(args: &Args, list: &Path) -> Result<()> {
    let spec = DataSpec {
        root: args.data_root.clone(),
        ..DataSpec::new(Source::detect(list)?)
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let configs: [(&'static str, Pipeline); 2] = [
        ("swin-t 32×2 224²", Pipeline::video_swin_32x2(224)),
        ("tsm 8×1 224²", Pipeline::tsm_8(224)),
    ];
    let mut rows = Vec::new();
    for (name, pipeline) in configs {
        let ds = open(&spec, &pipeline, Mode::Train)?;
        for &t in &args.threads {
            let threads = if t == 0 { cores } else { t };
            let (clips_s, skipped) = time_loader(ds.clone(), threads, args.clips)?;
            let note = if skipped > 0 {
                format!("{skipped} items skipped (bad files)")
            } else {
                String::new()
            };
            rows.push(Row {
                config: name,
                reader: "tubelet (full pipeline)".into(),
                threads,
                clips_s: Some(clips_s),
                note,
            });
        }
        if let Some(py) = &args.python {
            let plan = std::env::temp_dir()
                .join(format!("tubelet-bench-plan-{}.json", std::process::id()));
            write_plan(ds.as_ref(), &pipeline, args.clips, &plan)?;
            rows.extend(run_peer(py, &plan, name, &args.threads, cores));
            let _ = std::fs::remove_file(&plan);
        }
    }
    print_rows(&rows)?;
    Ok(())
}

/// Clips per second of a loader with `threads` workers over at least `clips` clips (whole
/// epochs; batches of 4), and how many items were skipped.
fn time_loader(ds: Arc<dyn Dataset>, threads: usize, clips: usize) -> Result<(f64, usize)> {
    let cfg = LoaderConfig {
        batch: 4,
        workers: threads,
        seed: 1,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(ds, cfg)?;
    let (mut done, mut skipped, mut epoch) = (0usize, 0usize, 0u64);
    let t0 = Instant::now();
    while done < clips {
        for b in loader.epoch(epoch, 0) {
            let b = b?;
            done += b.labels.len();
            skipped += b.skipped.len();
        }
        epoch += 1;
    }
    Ok((done as f64 / t0.elapsed().as_secs_f64(), skipped))
}

/// The frames tubelet decodes for `clips` clips, as JSON for the peer script: file, frame
/// indices, decoded size. Same (item, epoch) pairs and seeds as [`time_loader`] (whole
/// epochs), so the same frames: an item's draws depend on (seed, epoch, index), not on order.
fn write_plan(ds: &dyn Dataset, pipeline: &Pipeline, clips: usize, path: &Path) -> Result<()> {
    let mut entries = Vec::new();
    for k in 0..clips.div_ceil(ds.len()) * ds.len() {
        let i = k % ds.len();
        let file = ds.describe(i);
        let reader = VideoReader::open(Path::new(&file));
        let Ok(reader) = reader else { continue };
        let info = reader.info();
        let mut rng = item_rng(1, (k / ds.len()) as u64, i);
        let inds: Vec<usize> = sample(
            &pipeline.sampling,
            info.frames.max(1),
            Mode::Train,
            &mut rng,
        )
        .concat();
        let (h, w) = pipeline
            .train_short_side
            .map_or((info.height, info.width), |s| {
                short_side_size(info.height, info.width, s)
            });
        entries.push(serde_json::json!({ "file": file, "indices": inds, "height": h, "width": w }));
    }
    let text = serde_json::to_string(&serde_json::json!({ "clips": entries })).expect("json");
    std::fs::write(path, text).map_err(|e| Error::Io(format!("{}: {e}", path.display())))
}

/// Runs benches/data_peer.py: one JSON object per line, {"reader", "threads", "clips_per_s"}
/// or {"reader", "error"}.
fn run_peer(
    py: &Path,
    plan: &Path,
    config: &'static str,
    threads: &[usize],
    cores: usize,
) -> Vec<Row> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/data_peer.py");
    let threads: Vec<String> = threads
        .iter()
        .map(|&t| if t == 0 { cores } else { t }.to_string())
        .collect();
    let out = Command::new(py)
        .arg(&script)
        .arg("--plan")
        .arg(plan)
        .arg("--threads")
        .arg(threads.join(","))
        .output();
    let row = |reader: String, threads, clips_s, note: String| Row {
        config,
        reader,
        threads,
        clips_s,
        note,
    };
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            return vec![row(
                "python peer".into(),
                0,
                None,
                String::from_utf8_lossy(&o.stderr).trim().to_string(),
            )]
        }
        Err(e) => {
            return vec![row(
                "python peer".into(),
                0,
                None,
                format!("cannot run {}: {e}", py.display()),
            )]
        }
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            let reader = format!("{} (decode only)", v["reader"].as_str().unwrap_or("?"));
            let t = v["threads"].as_u64().unwrap_or(0) as usize;
            row(
                reader,
                t,
                v["clips_per_s"].as_f64(),
                v["error"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn print_rows(rows: &[Row]) -> Result<()> {
    let out = &mut Output::stdout();
    outln!(
        out,
        "{:<18} {:<26} {:>7} {:>9}  note",
        "config",
        "reader",
        "threads",
        "clips/s"
    )?;
    for r in rows {
        let c = r.clips_s.map_or("-".into(), |c| format!("{c:.1}"));
        outln!(
            out,
            "{:<18} {:<26} {:>7} {:>9}  {}",
            r.config,
            r.reader,
            r.threads,
            c,
            r.note
        )?;
    }
    Ok(())
}
