//! The embedded synthetic video dataset: "moving shapes", rendered on the fly (moved here from
//! the zoo: models do not depend on a dataset).
//!
//! Each clip shows one shape (bar, triangle or square) of a random colour, size, position and
//! orientation over a noisy background. Its class is the *motion*, so no single frame tells it:
//!
//! | class | motion                  |
//! |-------|-------------------------|
//! | 0 / 1 | moves right / left      |
//! | 2 / 3 | moves down / up         |
//! | 4 / 5 | rotates clockwise / counter-clockwise |
//! | 6 / 7 | grows / shrinks         |
//!
//! Clips are a pure function of (seed, split, index): the same clip on every machine, nothing
//! to download, and the held-out split never overlaps the training split.
//! Layout: channels-last (B, T, H, W, 3), values roughly in [−1, 1].
//!
//! [`SyntheticDataset`] serves the set through the [`Dataset`] trait: item `i` is exactly
//! [`render`]`(seed, clip, split, i, 1)`, already normalised, whatever the loader's seed and
//! epoch (a clip is a function of the data seed, the split and the index alone).

use tubelet::Rng;

use crate::dataset::Dataset;
use crate::Result;

pub const CLASS_NAMES: [&str; 8] = [
    "right",
    "left",
    "down",
    "up",
    "rotate-cw",
    "rotate-ccw",
    "grow",
    "shrink",
];
pub const NUM_CLASSES: usize = CLASS_NAMES.len();

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

#[derive(Clone, Debug)]
pub struct MovingShapes {
    pub frames: usize,
    pub size: usize,
    pub seed: u64,
    /// Pixel noise standard deviation.
    pub noise: f32,
}

impl MovingShapes {
    pub fn new(frames: usize, size: usize, seed: u64) -> MovingShapes {
        MovingShapes {
            frames,
            size,
            seed,
            noise: 0.08,
        }
    }

    fn clip_rng(&self, split: Split, index: u64) -> Rng {
        let tag = match split {
            Split::Train => 0x5452_4149_4e00_0000u64,
            Split::Test => 0x5445_5354_0000_0000u64,
        };
        let mut mix = Rng::new(self.seed ^ tag);
        let base = mix.next_u64();
        Rng::new(base ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// Renders clip `index` of `split`: (T·H·W·3 values, label).
    pub fn clip(&self, split: Split, index: u64) -> (Vec<f32>, u32) {
        let mut rng = self.clip_rng(split, index);
        let label = rng.below(NUM_CLASSES) as u32;
        let (t_n, s) = (self.frames, self.size as f64);
        let shape = rng.below(3);
        let color = [
            0.4 + 0.6 * rng.uniform(),
            0.4 + 0.6 * rng.uniform(),
            0.4 + 0.6 * rng.uniform(),
        ];
        let mut radius = s * (0.14 + 0.08 * rng.uniform());
        let mut angle = std::f64::consts::TAU * rng.uniform();
        let span = (t_n.max(2) - 1) as f64;
        // Total travel / turn / scale over the clip, then per frame.
        let travel = s * (0.25 + 0.15 * rng.uniform()) / span;
        let turn = (0.5 + 0.4 * rng.uniform()) / span; // 0.5–0.9 rad over the clip
        let scale = (1.7 + 0.5 * rng.uniform()).powf(1.0 / span);
        let (mut dx, mut dy, mut dr, mut ds) = (0.0, 0.0, 0.0, 1.0);
        match label {
            0 => dx = travel,
            1 => dx = -travel,
            2 => dy = travel,
            3 => dy = -travel,
            4 => dr = turn,
            5 => dr = -turn,
            6 => ds = scale,
            _ => ds = 1.0 / scale,
        }
        if label == 6 {
            radius /= scale.powf(span / 2.0);
        }
        // Start so that the whole path stays inside the frame.
        let margin = radius * ds.max(1.0).powf(span) + 1.0;
        let lo_x = margin - dx.min(0.0) * span;
        let hi_x = s - margin - dx.max(0.0) * span;
        let lo_y = margin - dy.min(0.0) * span;
        let hi_y = s - margin - dy.max(0.0) * span;
        let mut cx = lo_x + (hi_x - lo_x).max(0.0) * rng.uniform();
        let mut cy = lo_y + (hi_y - lo_y).max(0.0) * rng.uniform();

        let n = self.size;
        let mut out = Vec::with_capacity(t_n * n * n * 3);
        for _t in 0..t_n {
            let (sin, cos) = angle.sin_cos();
            for y in 0..n {
                for x in 0..n {
                    // Pixel centre in the shape's frame.
                    let (px, py) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
                    let (u, v) = (
                        (px * cos + py * sin) / radius,
                        (-px * sin + py * cos) / radius,
                    );
                    let inside = match shape {
                        0 => u.abs() <= 1.0 && v.abs() <= 0.35, // bar
                        1 => v >= -0.5 && v <= 1.0 - 1.5 * u.abs() && u.abs() <= 1.0, // triangle
                        _ => u.abs() <= 0.75 && v.abs() <= 0.75, // square
                    };
                    for c in color {
                        let base = if inside { c } else { 0.1 };
                        let noise = self.noise as f64 * rng.normal();
                        out.push((2.0 * (base + noise) - 1.0) as f32);
                    }
                }
            }
            cx += dx;
            cy += dy;
            angle += dr;
            radius *= ds;
        }
        (out, label)
    }

    /// A batch of clips `first..first + batch` of `split`: ((B, T, H, W, 3) values, labels).
    pub fn batch(&self, split: Split, first: u64, batch: usize) -> (Vec<f32>, Vec<u32>) {
        let mut data = Vec::with_capacity(batch * self.frames * self.size * self.size * 3);
        let mut labels = Vec::with_capacity(batch);
        for i in 0..batch as u64 {
            let (clip, label) = self.clip(split, first + i);
            data.extend_from_slice(&clip);
            labels.push(label);
        }
        (data, labels)
    }

    /// The shape of one batch: (B, T, H, W, 3).
    pub fn batch_shape(&self, batch: usize) -> [usize; 5] {
        [batch, self.frames, self.size, self.size, 3]
    }
}

/// Renders clips `first..first + batch` of `split` at `[frames, height, width]`, channels-last:
/// ((B, T, H, W, 3) values, labels). The set renders square frames; for H ≠ W it renders at
/// max(H, W) and keeps the centred H×W window (the shape stays in view: its path keeps a
/// margin from every edge). `tubelet train` and `run` render through this.
pub fn render(
    data_seed: u64,
    [t, h, w]: [usize; 3],
    split: Split,
    first: u64,
    batch: usize,
) -> (Vec<f32>, Vec<u32>) {
    let s = h.max(w);
    let set = MovingShapes::new(t, s, data_seed);
    let (full, labels) = set.batch(split, first, batch);
    if h == w {
        return (full, labels);
    }
    let (y0, x0) = ((s - h) / 2, (s - w) / 2);
    let mut out = Vec::with_capacity(batch * t * h * w * 3);
    for frame in full.chunks_exact(s * s * 3) {
        for y in y0..y0 + h {
            let row = (y * s + x0) * 3;
            out.extend_from_slice(&frame[row..row + w * 3]);
        }
    }
    (out, labels)
}

/// The synthetic set as a [`Dataset`]: `len` clips of `split` at `clip` = [T, H, W], one view
/// each (also in testing), rendered from `seed` by [`render`].
#[derive(Clone, Debug)]
pub struct SyntheticDataset {
    pub seed: u64,
    pub clip: [usize; 3],
    pub split: Split,
    pub len: usize,
}

impl SyntheticDataset {
    pub fn new(seed: u64, clip: [usize; 3], split: Split, len: usize) -> SyntheticDataset {
        SyntheticDataset {
            seed,
            clip,
            split,
            len,
        }
    }
}

impl Dataset for SyntheticDataset {
    fn len(&self) -> usize {
        self.len
    }

    fn num_classes(&self) -> usize {
        NUM_CLASSES
    }

    fn class_names(&self) -> Option<Vec<String>> {
        Some(CLASS_NAMES.iter().map(|s| s.to_string()).collect())
    }

    fn label(&self, index: usize) -> u32 {
        // The label is the clip generator's first draw; rendering the clip to get it would
        // cost a whole clip, so draw it alone.
        let mut rng = MovingShapes::new(1, 1, self.seed).clip_rng(self.split, index as u64);
        rng.below(NUM_CLASSES) as u32
    }

    fn describe(&self, index: usize) -> String {
        let split = match self.split {
            Split::Train => "train",
            Split::Test => "test",
        };
        format!("synthetic {split} #{index}")
    }

    fn clip(&self) -> [usize; 3] {
        self.clip
    }

    fn views(&self) -> usize {
        1
    }

    fn load(&self, index: usize, _seed: u64, _epoch: u64) -> Result<Vec<Vec<f32>>> {
        Ok(vec![
            render(self.seed, self.clip, self.split, index as u64, 1).0,
        ])
    }
}
