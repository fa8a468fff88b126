//! Spatial transforms with mmaction2's geometry, applied in one pass.
//!
//! The box functions transcribe mmaction2 `mmaction/datasets/transforms/processing.py` (commit
//! 4d6c934): `Resize(-1, S)` through mmcv's `rescale_size`, `RandomResizedCrop.get_crop_bbox`,
//! `MultiScaleCrop` (5 or 13 fixed crops), `CenterCrop`, `ThreeCrop`. Boxes are
//! `[left, top, right, bottom]` in pixels of the short-side-resized frame, as there.
//!
//! [`resample_clip`] then does crop + resize to the output size + optional horizontal flip +
//! normalisation in one bilinear pass per output pixel (OpenCV's half-pixel-centre convention,
//! `cv2.resize(INTER_LINEAR)`, edge pixels clamped), writing channels-last f32.

use crate::sampling::Draw;
use crate::spec::{Normalize, TestCrop, TrainCrop};
use crate::Frames;

/// A crop in pixel coordinates of some frame: x, y of the top-left corner, width, height.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CropBox {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl CropBox {
    /// From mmaction2's `[left, top, right, bottom]`.
    pub fn ltrb([l, t, r, b]: [i64; 4]) -> CropBox {
        CropBox {
            x: l as f64,
            y: t as f64,
            w: (r - l) as f64,
            h: (b - t) as f64,
        }
    }

    /// The same region in a frame scaled by `sy` vertically and `sx` horizontally.
    pub fn scaled(self, sy: f64, sx: f64) -> CropBox {
        CropBox {
            x: self.x * sx,
            y: self.y * sy,
            w: self.w * sx,
            h: self.h * sy,
        }
    }
}

/// mmaction2 `Resize(scale=(-1, short))` with keep_ratio (mmcv `rescale_size`): the factor is
/// short / min(h, w) and each side is `int(side·factor + 0.5)`. Returns (h, w).
pub fn short_side_size(h: usize, w: usize, short: usize) -> (usize, usize) {
    let f = short as f64 / h.min(w) as f64;
    ((h as f64 * f + 0.5) as usize, (w as f64 * f + 0.5) as usize)
}

/// `RandomResizedCrop.get_crop_bbox(img_shape, area_range, aspect_ratio_range, 10)`: up to 10
/// candidates (log-uniform aspect, uniform area), the first that fits, at a uniform offset;
/// else the centred square of the short side.
pub fn random_resized_crop(
    h: usize,
    w: usize,
    area: [f64; 2],
    aspect: [f64; 2],
    rng: &mut impl Draw,
) -> [i64; 4] {
    const ATTEMPTS: usize = 10;
    let (hi, wi) = (h as i64, w as i64);
    let full = (h * w) as f64;
    // numpy draws all aspect ratios first, then all areas.
    let (la, lb) = (aspect[0].ln(), aspect[1].ln());
    let ratios: Vec<f64> = (0..ATTEMPTS)
        .map(|_| (la + (lb - la) * rng.uniform()).exp())
        .collect();
    let areas: Vec<f64> = (0..ATTEMPTS)
        .map(|_| (area[0] + (area[1] - area[0]) * rng.uniform()) * full)
        .collect();
    for (r, a) in ratios.into_iter().zip(areas) {
        let cw = (a * r).sqrt().round_ties_even() as i64;
        let ch = (a / r).sqrt().round_ties_even() as i64;
        if ch <= hi && cw <= wi {
            // Python's random.randint(a, b) includes b.
            let x = rng.randint(0, (wi - cw + 1) as usize) as i64;
            let y = rng.randint(0, (hi - ch + 1) as usize) as i64;
            return [x, y, x + cw, y + ch];
        }
    }
    let s = hi.min(wi);
    let (x, y) = ((wi - s) / 2, (hi - s) / 2);
    [x, y, x + s, y + s]
}

/// `MultiScaleCrop(input_size, scales, max_wh_scale_gap, random_crop=False,
/// num_fixed_crops)` (5 or 13): a (w, h) pair of scaled short sides whose scale levels
/// differ by at most `max_gap` (a side within 2 px of the input size snaps to it), at one of the fixed
/// offsets (in steps of a quarter of the slack).
pub fn multi_scale_crop(
    h: usize,
    w: usize,
    input: [usize; 2],
    scales: &[f64],
    max_gap: usize,
    fixed_crops: usize,
    rng: &mut impl Draw,
) -> [i64; 4] {
    let base = h.min(w) as f64;
    let sizes: Vec<i64> = scales.iter().map(|s| (base * s) as i64).collect();
    let mut candidates = Vec::new();
    for (i, &ch) in sizes.iter().enumerate() {
        for (j, &cw) in sizes.iter().enumerate() {
            if i.abs_diff(j) <= max_gap {
                candidates.push([cw, ch]);
            }
        }
    }
    let mut crop = candidates[rng.randint(0, candidates.len())];
    // input_size is (w, h) in mmaction2.
    let input_wh = [input[1] as i64, input[0] as i64];
    for k in 0..2 {
        if (crop[k] - input_wh[k]).abs() < 3 {
            crop[k] = input_wh[k];
        }
    }
    let [cw, ch] = crop;
    let (ws, hs) = ((w as i64 - cw).div_euclid(4), (h as i64 - ch).div_euclid(4));
    // Corners and centre; 13 adds the edge centres and the quarter points.
    let offsets = [
        (0, 0),
        (4 * ws, 0),
        (0, 4 * hs),
        (4 * ws, 4 * hs),
        (2 * ws, 2 * hs),
        (0, 2 * hs),
        (4 * ws, 2 * hs),
        (2 * ws, 4 * hs),
        (2 * ws, 0),
        (ws, hs),
        (3 * ws, hs),
        (ws, 3 * hs),
        (3 * ws, 3 * hs),
    ];
    let n = if fixed_crops == 13 { 13 } else { 5 };
    let (x, y) = offsets[rng.randint(0, n)];
    [x, y, x + cw, y + ch]
}

/// `CenterCrop(size)`: size = [h, w]. A crop larger than the frame extends past its edges
/// (where edge pixels are repeated; mmaction2 would return a smaller clip instead).
pub fn center_crop(h: usize, w: usize, size: [usize; 2]) -> [i64; 4] {
    let (ch, cw) = (size[0] as i64, size[1] as i64);
    let (l, t) = ((w as i64 - cw).div_euclid(2), (h as i64 - ch).div_euclid(2));
    [l, t, l + cw, t + ch]
}

/// `ThreeCrop(size)`: three crops along the long side, in mmaction2's order (left/top,
/// right/bottom, middle). One side of the crop must equal the frame's.
pub fn three_crop(h: usize, w: usize, size: [usize; 2]) -> Result<[[i64; 4]; 3], String> {
    let (ch, cw) = (size[0] as i64, size[1] as i64);
    let (hi, wi) = (h as i64, w as i64);
    let offsets = if ch == hi {
        let s = (wi - cw).div_euclid(2);
        [(0, 0), (2 * s, 0), (s, 0)]
    } else if cw == wi {
        let s = (hi - ch).div_euclid(2);
        [(0, 0), (0, 2 * s), (0, s)]
    } else {
        return Err(format!(
            "ThreeCrop of {cw}×{ch} needs a frame with that height or width, got {wi}×{hi} (set the test \
             short side to the crop size)"
        ));
    };
    Ok(offsets.map(|(x, y)| [x, y, x + cw, y + ch]))
}

/// The training crop box in an h×w (resized) frame.
pub fn train_box(
    crop: &TrainCrop,
    h: usize,
    w: usize,
    size: [usize; 2],
    rng: &mut impl Draw,
) -> CropBox {
    CropBox::ltrb(match crop {
        TrainCrop::RandomResized { area, aspect } => random_resized_crop(h, w, *area, *aspect, rng),
        TrainCrop::MultiScale {
            scales,
            max_gap,
            fixed_crops,
        } => multi_scale_crop(h, w, size, scales, *max_gap, *fixed_crops, rng),
        TrainCrop::Center => center_crop(h, w, size),
    })
}

/// The test crop boxes (one view each) in an h×w (resized) frame.
pub fn test_boxes(
    crop: TestCrop,
    h: usize,
    w: usize,
    size: [usize; 2],
) -> Result<Vec<CropBox>, String> {
    Ok(match crop {
        TestCrop::Center => vec![CropBox::ltrb(center_crop(h, w, size))],
        TestCrop::Three => three_crop(h, w, size)?
            .into_iter()
            .map(CropBox::ltrb)
            .collect(),
    })
}

/// One axis of a bilinear resample: for each output position, the two source positions and
/// the weight of the second, OpenCV style (`src = (dst + 0.5)·scale − 0.5`, clamped).
fn taps(start: f64, len: f64, out: usize, limit: usize) -> Vec<(usize, usize, f32)> {
    let scale = len / out as f64;
    let last = limit.saturating_sub(1) as f64;
    (0..out)
        .map(|d| {
            let s = (start + (d as f64 + 0.5) * scale - 0.5).clamp(0.0, last);
            let i0 = s.floor();
            let i1 = (i0 + 1.0).min(last);
            (i0 as usize, i1 as usize, (s - i0) as f32)
        })
        .collect()
}

/// Crops `bbox` out of frames `ts` of `frames`, resizes it to `size` [h, w] (bilinear),
/// mirrors it when `flip`, and normalises: a (T, H, W, 3) f32 clip, channels-last.
pub fn resample_clip(
    frames: &Frames,
    ts: &[usize],
    bbox: CropBox,
    size: [usize; 2],
    flip: bool,
    norm: &Normalize,
) -> Vec<f32> {
    let [_, fh, fw] = frames.shape;
    let [oh, ow] = size;
    let ys = taps(bbox.y, bbox.h, oh, fh);
    let mut xs = taps(bbox.x, bbox.w, ow, fw);
    if flip {
        xs.reverse();
    }
    let aff = norm.affine();
    // Columns the taps touch: each output row blends two source rows over this span once
    // (vertical pass), then every output pixel blends two of those (horizontal pass).
    let lo = xs.iter().map(|t| t.0).min().unwrap_or(0);
    let hi = xs.iter().map(|t| t.1).max().unwrap_or(0);
    let xs: Vec<(usize, usize, f32)> = xs
        .into_iter()
        .map(|(x0, x1, wx)| ((x0 - lo) * 3, (x1 - lo) * 3, wx))
        .collect();
    let mut row = vec![0f32; (hi - lo + 1) * 3];
    let mut out = Vec::with_capacity(ts.len() * oh * ow * 3); // (T, H, W, 3)
    for &t in ts {
        let f = frames.frame(t);
        for &(y0, y1, wy) in &ys {
            let r0 = &f[(y0 * fw + lo) * 3..(y0 * fw + hi + 1) * 3];
            let r1 = &f[(y1 * fw + lo) * 3..(y1 * fw + hi + 1) * 3];
            for ((d, &a), &b) in row.iter_mut().zip(r0).zip(r1) {
                let a = a as f32;
                *d = a + (b as f32 - a) * wy;
            }
            for &(i0, i1, wx) in &xs {
                let (p0, p1) = (&row[i0..i0 + 3], &row[i1..i1 + 3]);
                for c in 0..3 {
                    let v = p0[c] + (p1[c] - p0[c]) * wx;
                    out.push(v * aff[c].0 + aff[c].1);
                }
            }
        }
    }
    out
}
