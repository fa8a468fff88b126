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

use tubelet::Rng;

pub const CLASS_NAMES: [&str; 8] =
    ["right", "left", "down", "up", "rotate-cw", "rotate-ccw", "grow", "shrink"];
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
        MovingShapes { frames, size, seed, noise: 0.08 }
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
        let color = [0.4 + 0.6 * rng.uniform(), 0.4 + 0.6 * rng.uniform(), 0.4 + 0.6 * rng.uniform()];
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
                    let (u, v) = ((px * cos + py * sin) / radius, (-px * sin + py * cos) / radius);
                    let inside = match shape {
                        0 => u.abs() <= 1.0 && v.abs() <= 0.35,            // bar
                        1 => v >= -0.5 && v <= 1.0 - 1.5 * u.abs() && u.abs() <= 1.0, // triangle
                        _ => u.abs() <= 0.75 && v.abs() <= 0.75,           // square
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
