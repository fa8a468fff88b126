//! The trainer's view of data: batches of host clips, epoch after epoch. A thin seam so the loop
//! does not depend on how clips are made: the embedded synthetic set implements it here, and
//! tubelet-data's `Loader` (annotation lists, videos, frames, worker threads) plugs in through
//! the same trait.
//! Layout: a batch is channels-last (B·V, T, H, W, 3), the V views of item b in rows b·V..b·V+V.

use std::time::{Duration, Instant};

use tubelet::Result;
use tubelet_data::synthetic::{Split, CLASS_NAMES, NUM_CLASSES};

/// One batch of clips on the host.
#[derive(Clone, Debug, Default)]
pub struct HostBatch {
    /// (B·V, T, H, W, 3) values.
    pub data: Vec<f32>,
    /// [B·V, T, H, W, 3].
    pub shape: [usize; 5],
    /// Views per item (1 in training).
    pub views: usize,
    /// One label per item (B).
    pub labels: Vec<u32>,
    /// How long the consumer waited for it.
    pub wait: Duration,
    /// (file, reason) of the items left out of this batch because their file is bad (the
    /// loader warned once per file); the epoch record counts them.
    pub skipped: Vec<(String, String)>,
}

/// Batches over a split, epoch after epoch.
pub trait BatchSource {
    /// Batches in one epoch.
    fn batches_per_epoch(&self) -> usize;
    /// Items in one epoch.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn num_classes(&self) -> usize;
    fn class_names(&self) -> Option<Vec<String>>;
    /// [T, H, W] of every clip.
    fn clip(&self) -> [usize; 3];
    /// The batches of `epoch`, from batch `start` on (a resumed epoch starts mid-way).
    fn epoch<'a>(
        &'a self,
        epoch: u64,
        start: usize,
    ) -> Result<Box<dyn Iterator<Item = Result<HostBatch>> + 'a>>;
}

/// Renders synthetic clips at `[frames, height, width]` (tubelet-data's, centre-cropped where
/// H ≠ W).
pub use tubelet_data::synthetic::render;

/// The embedded synthetic set as a batch source: `clips` clips of `split` per epoch. Training
/// epochs continue the clip sequence (epoch e, batch i renders clips from (e·batches + i)·B on),
/// so every step sees new clips; the test split is the same clips every epoch.
#[derive(Clone, Debug)]
pub struct Synthetic {
    pub seed: u64,
    pub clip: [usize; 3],
    pub split: Split,
    pub batch: usize,
    pub clips: usize,
}

impl BatchSource for Synthetic {
    fn batches_per_epoch(&self) -> usize {
        self.clips.div_ceil(self.batch.max(1))
    }

    fn len(&self) -> usize {
        self.clips
    }

    fn num_classes(&self) -> usize {
        NUM_CLASSES
    }

    fn class_names(&self) -> Option<Vec<String>> {
        Some(CLASS_NAMES.iter().map(|s| s.to_string()).collect())
    }

    fn clip(&self) -> [usize; 3] {
        self.clip
    }

    fn epoch<'a>(
        &'a self,
        epoch: u64,
        start: usize,
    ) -> Result<Box<dyn Iterator<Item = Result<HostBatch>> + 'a>> {
        let n = self.batches_per_epoch();
        let base = match self.split {
            Split::Train => epoch * self.clips as u64,
            Split::Test => 0,
        };
        Ok(Box::new((start..n).map(move |i| {
            let t0 = Instant::now();
            let first = i * self.batch;
            let b = self.batch.min(self.clips - first);
            let (data, labels) = render(self.seed, self.clip, self.split, base + first as u64, b);
            let [t, h, w] = self.clip;
            Ok(HostBatch {
                data,
                shape: [b, t, h, w, 3],
                views: 1,
                labels,
                wait: t0.elapsed(),
                skipped: Vec::new(),
            })
        })))
    }
}
