//! The loop on the synthetic set with a tiny model: two short epochs that write metrics, epoch
//! records and plots; the NaN guard (a huge learning rate stops the run, nothing good is
//! overwritten); a stop request saves and returns.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tubelet::gpu_or_skip;
use tubelet_data::synthetic::Split;
use tubelet_models::BuildOptions;
use tubelet_train::metrics::ViewAverage;
use tubelet_train::optim::{OptimizerKind, ParamPolicy};
use tubelet_train::schedule::LrSchedule;
use tubelet_train::source::Synthetic;
use tubelet_train::trainer::{Event, Observer, Outcome, TrainOptions, Trainer, WeightsSaver};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join(format!("tubelet-train-loop-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn options(run_dir: Option<PathBuf>, peak: f32) -> TrainOptions {
    TrainOptions {
        epochs: 2,
        max_steps_per_epoch: None,
        schedule: LrSchedule::Synthetic {
            peak,
            warmup_steps: 1,
            total_steps: 4,
        },
        optimizer: OptimizerKind::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        weight_decay: 0.05,
        policy: ParamPolicy::Tubelet,
        label_smoothing: 0.1,
        grad_clip: Some(1.0),
        accumulate: 1,
        mixup: None,
        seed: 0,
        view_average: ViewAverage::Prob,
        max_val_batches: None,
        run_dir,
        config: serde_json::json!({"test": true}),
        log_every: 1,
        plot_every: 1,
        save_every: None,
        stop: None,
    }
}

#[derive(Default)]
struct Count {
    steps: usize,
    epochs: usize,
    first: usize,
}
impl Observer for Count {
    fn event(&mut self, e: Event<'_>) {
        match e {
            Event::Step(_) => self.steps += 1,
            Event::Epoch(_) => self.epochs += 1,
            Event::FirstStep { .. } => self.first += 1,
            _ => {}
        }
    }
}

fn sources(model_clip: [usize; 3]) -> (Synthetic, Synthetic) {
    (
        Synthetic {
            seed: 0,
            clip: model_clip,
            split: Split::Train,
            batch: 2,
            clips: 4,
            shard: tubelet_train::source::Shard::WHOLE,
        },
        Synthetic {
            seed: 0,
            clip: model_clip,
            split: Split::Test,
            batch: 2,
            clips: 4,
            shard: tubelet_train::source::Shard::WHOLE,
        },
    )
}

#[test]
fn two_epochs_write_metrics_epochs_plots_and_weights() {
    let Some(_) = gpu_or_skip() else { return };
    let dir = tmp("run");
    let model = tubelet_models::build("vivit-tiny", &BuildOptions::seed(0)).unwrap();
    let (train, val) = sources(model.clip());
    let o = options(Some(dir.clone()), 1e-3);
    let mut t = Trainer::new(model.as_ref(), &o).unwrap();
    let mut obs = Count::default();
    let s = t
        .run(
            &train,
            Some(&val),
            &o,
            &mut WeightsSaver { dir: dir.clone() },
            &mut obs,
        )
        .unwrap();
    assert_eq!(s.outcome, Outcome::Finished);
    assert_eq!(
        (
            s.position.step,
            s.position.epoch,
            obs.steps,
            obs.epochs,
            obs.first
        ),
        (4, 2, 4, 2, 1)
    );
    assert_eq!(s.epochs.len(), 2);
    let v = s.epochs[1].val.as_ref().unwrap();
    assert_eq!(v.tally.count, 4);
    assert!(v.loss.unwrap().is_finite());
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 4);
    let line: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    for k in [
        "step",
        "loss",
        "lr",
        "data_time",
        "step_time",
        "clips_per_s",
        "grad_norm",
    ] {
        assert!(line.get(k).is_some(), "metrics.jsonl lacks {k}: {line}");
    }
    let epochs = std::fs::read_to_string(dir.join("epochs.jsonl")).unwrap();
    assert_eq!(epochs.lines().count(), 2);
    assert!(epochs.contains("val_mean_class_accuracy"));
    for f in [
        "config.json",
        "loss_lr.png",
        "accuracy.png",
        "confusion.png",
        "per_class.csv",
        "last.safetensors",
        "best.safetensors",
    ] {
        let m = std::fs::metadata(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(m.len() > 0, "{f} is empty");
    }
    let png = std::fs::read(dir.join("accuracy.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    // No temporary files left behind.
    assert!(std::fs::read_dir(&dir).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));
}

#[test]
fn a_huge_learning_rate_stops_the_run_and_overwrites_nothing() {
    let Some(_) = gpu_or_skip() else { return };
    let dir = tmp("nan");
    // A good checkpoint from before: it must stay byte for byte.
    let good = dir.join("last.safetensors");
    std::fs::write(&good, b"the good weights").unwrap();
    let model = tubelet_models::build("vivit-tiny", &BuildOptions::seed(0)).unwrap();
    let (train, val) = sources(model.clip());
    let mut o = options(Some(dir.clone()), 1e30);
    o.grad_clip = None;
    let mut t = Trainer::new(model.as_ref(), &o).unwrap();
    let s = t
        .run(
            &train,
            Some(&val),
            &o,
            &mut WeightsSaver { dir: dir.clone() },
            &mut Count::default(),
        )
        .unwrap();
    let Outcome::Diverged {
        step,
        what,
        last_finite,
    } = &s.outcome
    else {
        panic!("expected divergence: {:?}", s.outcome)
    };
    assert!(*step >= 1 && *step < 4, "diverged at step {step}: {what}");
    assert!(s.epochs.is_empty(), "no epoch finished, so none was saved");
    assert_eq!(std::fs::read(&good).unwrap(), b"the good weights");
    assert!(!dir.join("best.safetensors").exists());
    if let Some(p) = last_finite {
        // What it kept is finite.
        let file = tubelet::io::read(p).unwrap();
        assert!(file.values().all(|t| t.data.iter().all(|v| v.is_finite())));
    }
}

#[test]
fn a_stop_request_saves_and_returns() {
    let Some(_) = gpu_or_skip() else { return };
    let dir = tmp("stop");
    let model = tubelet_models::build("vivit-tiny", &BuildOptions::seed(0)).unwrap();
    let (train, _) = sources(model.clip());
    let mut o = options(None, 1e-3);
    o.stop = Some(Arc::new(AtomicBool::new(true)));
    let mut t = Trainer::new(model.as_ref(), &o).unwrap();
    let s = t
        .run(
            &train,
            None,
            &o,
            &mut WeightsSaver { dir: dir.clone() },
            &mut Count::default(),
        )
        .unwrap();
    assert_eq!(s.outcome, Outcome::Interrupted { step: 0 });
    assert!(dir.join("last.safetensors").exists());
}
