//! The loader: the synthetic set through the Dataset trait is exactly what `render` gives;
//! order and crops depend on (seed, epoch) only, never on worker count; resume mid-epoch;
//! DistributedSampler-style sharding; a rawframes set made in the test loads end to end.

use std::sync::Arc;

use tubelet_data::spec::{DataSpec, Mode, Pipeline, Source, TrainCrop};
use tubelet_data::synthetic::{render, MovingShapes, Split};
use tubelet_data::{open, Batch, Dataset, Loader, LoaderConfig};

use crate::common::{rawframes_set, Scratch};

fn all(loader: &Loader, epoch: u64, start: usize) -> Vec<Batch> {
    loader
        .epoch(epoch, start)
        .map(|b| b.expect("batch"))
        .collect()
}

#[test]
fn synthetic_dataset_is_the_rendered_set() {
    let ds = open(
        &DataSpec::synthetic(7, 10),
        &Pipeline::simple(4, 1, [16, 16]),
        Mode::Train,
    )
    .unwrap();
    assert_eq!(
        (ds.len(), ds.num_classes(), ds.views(), ds.clip()),
        (10, 8, 1, [4, 16, 16])
    );
    assert_eq!(ds.describe(3), "synthetic train #3");
    let cfg = LoaderConfig {
        batch: 4,
        workers: 2,
        shuffle: false,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(ds.clone(), cfg).unwrap();
    let batches = all(&loader, 0, 0);
    assert_eq!(batches.len(), 3);
    let set = MovingShapes::new(4, 16, 7);
    for (k, b) in batches.iter().enumerate() {
        let n = b.labels.len();
        let (data, labels) = set.batch(Split::Train, 4 * k as u64, n);
        assert_eq!(b.data, data, "batch {k}");
        assert_eq!(b.labels, labels);
        assert_eq!(b.shape, [n, 4, 16, 16, 3]);
        for (j, &i) in b.indices.iter().enumerate() {
            assert_eq!(
                ds.label(i),
                labels[j],
                "label of item {i} without rendering"
            );
        }
    }
    // H ≠ W keeps render's centred window; the test split is the held-out one.
    let ds = open(
        &DataSpec::synthetic(7, 3),
        &Pipeline::simple(4, 1, [12, 16]),
        Mode::Test,
    )
    .unwrap();
    assert_eq!(
        ds.load(2, 0, 0).unwrap()[0],
        render(7, [4, 12, 16], Split::Test, 2, 1).0
    );
}

#[test]
fn order_and_crops_do_not_depend_on_workers_and_resume_mid_epoch() {
    let dir = Scratch::new("loader-det");
    let w = rawframes_set(dir.path(), 10, [6, 20, 28]);
    let mut p = Pipeline::simple(4, 2, [12, 12]);
    p.train_short_side = Some(16);
    p.train_crop = TrainCrop::RandomResized {
        area: [0.3, 1.0],
        aspect: [0.75, 4.0 / 3.0],
    };
    p.flip = true;
    let ds = open(
        &DataSpec::new(Source::RawframesList(w.train_list)),
        &p,
        Mode::Train,
    )
    .unwrap();
    let cfg = |workers| LoaderConfig {
        batch: 3,
        workers,
        seed: 11,
        ..LoaderConfig::default()
    };
    let one = all(&Loader::new(ds.clone(), cfg(1)).unwrap(), 1, 0);
    let three = Loader::new(
        ds.clone(),
        LoaderConfig {
            prefetch: 1,
            ..cfg(3)
        },
    )
    .unwrap();
    let many = all(&three, 1, 0);
    assert_eq!(one.len(), 4);
    for (a, b) in one.iter().zip(&many) {
        assert_eq!(
            (&a.indices, &a.labels, a.index, a.shape),
            (&b.indices, &b.labels, b.index, b.shape)
        );
        assert!(
            a.data == b.data,
            "batch {} differs between 1 and 3 workers",
            a.index
        );
    }
    // Another epoch shuffles differently; resuming at batch 2 gives batches 2 and 3.
    let other = all(&three, 2, 0);
    assert_ne!(
        one.iter()
            .flat_map(|b| b.indices.clone())
            .collect::<Vec<_>>(),
        other
            .iter()
            .flat_map(|b| b.indices.clone())
            .collect::<Vec<_>>()
    );
    let resumed = all(&three, 1, 2);
    assert_eq!(resumed.len(), 2);
    assert_eq!(resumed[0].index, 2);
    assert!(resumed[0].data == one[2].data && resumed[1].data == one[3].data);
    // Every item once per epoch.
    let mut seen: Vec<usize> = one.iter().flat_map(|b| b.indices.clone()).collect();
    seen.sort();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
}

#[test]
fn sharding_pads_like_distributed_sampler() {
    let ds: Arc<dyn Dataset> = open(
        &DataSpec::synthetic(0, 10),
        &Pipeline::simple(1, 1, [2, 2]),
        Mode::Train,
    )
    .unwrap();
    let cfg = |rank| LoaderConfig {
        batch: 2,
        rank,
        world: 4,
        seed: 5,
        ..LoaderConfig::default()
    };
    let orders: Vec<Vec<usize>> = (0..4)
        .map(|r| Loader::new(ds.clone(), cfg(r)).unwrap().order(3))
        .collect();
    // ceil(10 / 4) = 3 each; the padded order of 12 repeats the first 2 of the shuffled 10.
    assert!(orders.iter().all(|o| o.len() == 3));
    let mut flat: Vec<usize> = (0..3)
        .flat_map(|k| orders.iter().map(move |o| o[k]))
        .collect();
    assert_eq!(flat[10..], flat[..2]);
    flat.truncate(10);
    flat.sort();
    assert_eq!(flat, (0..10).collect::<Vec<_>>());
    let l = Loader::new(
        ds.clone(),
        LoaderConfig {
            drop_last: true,
            ..cfg(1)
        },
    )
    .unwrap();
    assert_eq!(l.batches_per_epoch(), 1);
    assert!(Loader::new(ds, LoaderConfig { rank: 4, ..cfg(0) }).is_err());
}

#[test]
fn shards_of_a_step_together_are_the_single_process_batch() {
    // Data-parallel training (tubelet-train's dist.rs): with a per-rank batch of B/world, the
    // ranks' batch k together must be exactly one process's batch k of B, every epoch, from any
    // resume point, or the averaged gradient is another batch's.
    let ds: Arc<dyn Dataset> = open(
        &DataSpec::synthetic(0, 24),
        &Pipeline::simple(1, 1, [2, 2]),
        Mode::Train,
    )
    .unwrap();
    let cfg = |batch, rank, world| LoaderConfig {
        batch,
        rank,
        world,
        seed: 9,
        workers: 1,
        ..LoaderConfig::default()
    };
    let one = Loader::new(ds.clone(), cfg(6, 0, 1)).unwrap();
    let ranks: Vec<Loader> = (0..3)
        .map(|r| Loader::new(ds.clone(), cfg(2, r, 3)).unwrap())
        .collect();
    for epoch in [0, 1] {
        let whole = all(&one, epoch, 1);
        let shards: Vec<Vec<Batch>> = ranks.iter().map(|l| all(l, epoch, 1)).collect();
        assert!(shards.iter().all(|s| s.len() == whole.len()));
        for (k, w) in whole.iter().enumerate() {
            let mut together: Vec<usize> =
                shards.iter().flat_map(|s| s[k].indices.clone()).collect();
            let mut want = w.indices.clone();
            together.sort();
            want.sort();
            assert_eq!(together, want, "epoch {epoch} batch {}", k + 1);
        }
    }
}

#[test]
fn test_mode_gives_every_view() {
    let dir = Scratch::new("loader-views");
    let w = rawframes_set(dir.path(), 2, [9, 16, 24]);
    let mut p = Pipeline::video_swin_32x2(16);
    p.sampling = tubelet_data::Sampling::Clips {
        clip_len: 3,
        frame_interval: 2,
        train_clips: 1,
        test_clips: 2,
    };
    let ds = open(
        &DataSpec::new(Source::RawframesList(w.val_list)),
        &p,
        Mode::Test,
    )
    .unwrap();
    assert_eq!(ds.views(), 6);
    let loader = Loader::new(
        ds,
        LoaderConfig {
            batch: 4,
            shuffle: false,
            ..LoaderConfig::default()
        },
    )
    .unwrap();
    let b = all(&loader, 0, 0);
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].shape, [24, 3, 16, 16, 3]);
    assert_eq!(b[0].views, 6);
    assert!(b[0].data.iter().all(|v| v.is_finite()));
}

/// A dataset whose item 5 panics: the epoch ends with an error, not a hang.
struct Panics;

impl Dataset for Panics {
    fn len(&self) -> usize {
        8
    }
    fn num_classes(&self) -> usize {
        2
    }
    fn class_names(&self) -> Option<Vec<String>> {
        None
    }
    fn label(&self, _: usize) -> u32 {
        0
    }
    fn describe(&self, i: usize) -> String {
        format!("item {i}")
    }
    fn clip(&self) -> [usize; 3] {
        [1, 1, 1]
    }
    fn views(&self) -> usize {
        1
    }
    fn load(&self, i: usize, _: u64, _: u64) -> tubelet_data::Result<Vec<Vec<f32>>> {
        assert!(i != 5, "item five is broken");
        Ok(vec![vec![0.0; 3]])
    }
}

#[test]
fn a_panicking_dataset_ends_the_epoch_with_an_error() {
    let cfg = LoaderConfig {
        batch: 2,
        workers: 2,
        shuffle: false,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(Arc::new(Panics), cfg).unwrap();
    let results: Vec<_> = loader.epoch(0, 0).collect();
    assert_eq!(
        results.len(),
        3,
        "batches 0 and 1, then the error of batch 2"
    );
    let e = results[2].as_ref().unwrap_err().to_string();
    assert!(
        e.contains("batch 2") && e.contains("item five is broken"),
        "{e}"
    );
}
