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

/// One rank's share of every epoch (data-parallel training, dist.rs): `rank` of `world`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub world: usize,
}

impl Shard {
    /// The whole epoch (one process).
    pub const WHOLE: Shard = Shard { rank: 0, world: 1 };
}

/// The embedded synthetic set as a batch source: `clips` clips of `split` per epoch. Training
/// epochs continue the clip sequence (epoch e, batch i renders clips from (e·batches + i)·B on),
/// so every step sees new clips; the test split is the same clips every epoch.
///
/// Sharded (`shard.world` > 1), rank r takes positions r, r + world, … of the epoch's clips,
/// padded by repeating the first ones to a multiple of `world` (PyTorch's
/// `DistributedSampler`, as tubelet-data's loader), in batches of `batch` (the per-rank batch):
/// its batch i holds clips i·B + j·world + r (B = batch·world), so the ranks' batches i
/// together are exactly the single process's batch i of B clips.
#[derive(Clone, Debug)]
pub struct Synthetic {
    pub seed: u64,
    pub clip: [usize; 3],
    pub split: Split,
    pub batch: usize,
    pub clips: usize,
    pub shard: Shard,
}

impl Synthetic {
    /// The epoch positions (0..clips) this rank takes, in order.
    pub fn positions(&self) -> Vec<usize> {
        let Shard { rank, world } = self.shard;
        let world = world.max(1);
        let total = self.clips.div_ceil(world) * world;
        (rank..total)
            .step_by(world)
            .map(|p| p % self.clips.max(1))
            .collect()
    }
}

impl BatchSource for Synthetic {
    fn batches_per_epoch(&self) -> usize {
        self.clips
            .div_ceil(self.shard.world.max(1))
            .div_ceil(self.batch.max(1))
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
        let positions = (self.shard != Shard::WHOLE).then(|| self.positions());
        Ok(Box::new((start..n).map(move |i| {
            let t0 = Instant::now();
            let first = i * self.batch;
            let (data, labels, b) = match &positions {
                None => {
                    let b = self.batch.min(self.clips - first);
                    let (d, l) = render(self.seed, self.clip, self.split, base + first as u64, b);
                    (d, l, b)
                }
                Some(p) => {
                    let mine = &p[first..(first + self.batch).min(p.len())];
                    let (mut d, mut l) = (Vec::new(), Vec::new());
                    for &k in mine {
                        let (c, y) = render(self.seed, self.clip, self.split, base + k as u64, 1);
                        d.extend_from_slice(&c);
                        l.extend(y);
                    }
                    (d, l, mine.len())
                }
            };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn source(batch: usize, clips: usize, shard: Shard) -> Synthetic {
        Synthetic {
            seed: 3,
            clip: [2, 8, 8],
            split: Split::Train,
            batch,
            clips,
            shard,
        }
    }

    #[test]
    fn shards_cover_every_clip_once_and_make_up_the_single_batch() {
        // Every clip once per epoch across the ranks, the padding repeating the first ones
        // (DistributedSampler): 10 clips over 4 ranks is 3 each, clips 0 and 1 twice.
        let pos: Vec<Vec<usize>> = (0..4)
            .map(|rank| source(1, 10, Shard { rank, world: 4 }).positions())
            .collect();
        let mut flat: Vec<usize> = (0..3).flat_map(|k| pos.iter().map(move |p| p[k])).collect();
        assert_eq!(flat[10..], [0, 1]);
        flat.truncate(10);
        flat.sort();
        assert_eq!(flat, (0..10).collect::<Vec<_>>());
        // Two ranks of 2 clips: rank r's batch i is clips 4i + 2j + r of the single batch of 4,
        // in every epoch and from a resumed batch.
        let whole = source(4, 12, Shard::WHOLE);
        let ranks: Vec<Synthetic> = (0..2)
            .map(|rank| source(2, 12, Shard { rank, world: 2 }))
            .collect();
        let clip = 2 * 8 * 8 * 3;
        for epoch in [0, 1] {
            let w: Vec<HostBatch> = whole.epoch(epoch, 1).unwrap().map(|b| b.unwrap()).collect();
            let r: Vec<Vec<HostBatch>> = ranks
                .iter()
                .map(|s| s.epoch(epoch, 1).unwrap().map(|b| b.unwrap()).collect())
                .collect();
            assert_eq!((w.len(), r[0].len(), r[1].len()), (2, 2, 2));
            for (i, wb) in w.iter().enumerate() {
                for (rank, rb) in r.iter().enumerate() {
                    for j in 0..2 {
                        let k = 2 * j + rank;
                        assert_eq!(rb[i].labels[j], wb.labels[k]);
                        assert_eq!(
                            rb[i].data[j * clip..(j + 1) * clip],
                            wb.data[k * clip..(k + 1) * clip]
                        );
                    }
                }
            }
        }
    }
}
