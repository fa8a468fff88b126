//! Temporal sampling with mmaction2's semantics: which frame indices (0-based) make each clip.
//!
//! Transcribed from mmaction2 `mmaction/datasets/transforms/loading.py` (commit
//! 4d6c934, classes `SampleFrames` and `UniformSample`); `data/tests/fixtures/gen_sampling.py`
//! runs that code and `data/tests/sampling.rs` checks these functions against its output.
//!
//! Randomness goes through [`Draw`], so the tests replay the same draws the fixture script fed
//! to numpy; training uses `tubelet::Rng`.
//!
//! NOTE: numpy's `np.round` / `np.around` round halves to even (2.5 → 2); Rust's `f64::round`
//! does not. `round_ties_even` is used wherever mmaction2 calls them.

use tubelet::Rng;

use crate::spec::{Mode, Sampling};

/// The random draws of sampling and crops: numpy's `randint(low, high)` (uniform integer in
/// `[low, high)`) and `uniform()` in [0, 1).
pub trait Draw {
    fn randint(&mut self, low: usize, high: usize) -> usize;
    fn uniform(&mut self) -> f64;
}

impl Draw for Rng {
    fn randint(&mut self, low: usize, high: usize) -> usize {
        low + self.below(high.saturating_sub(low).max(1))
    }

    fn uniform(&mut self) -> f64 {
        Rng::uniform(self)
    }
}

/// `SampleFrames._get_train_clips` (keep_tail_frames = False): the start offset of each of
/// `num_clips` clips spanning `ori_clip_len` = clip_len·interval frames.
pub fn train_clip_offsets(
    total: usize,
    ori_clip_len: usize,
    num_clips: usize,
    rng: &mut impl Draw,
) -> Vec<usize> {
    // avg_interval = (num_frames − ori_clip_len + 1) // num_clips, in signed arithmetic.
    let room = total as i64 - ori_clip_len as i64 + 1;
    let avg = room.div_euclid(num_clips as i64);
    if avg > 0 {
        let avg = avg as usize;
        (0..num_clips)
            .map(|k| k * avg + rng.randint(0, avg))
            .collect()
    } else if total > num_clips.max(ori_clip_len) {
        let mut v: Vec<usize> = (0..num_clips)
            .map(|_| rng.randint(0, room as usize))
            .collect();
        v.sort_unstable();
        v
    } else if avg == 0 {
        let ratio = (room as f64) / num_clips as f64;
        (0..num_clips)
            .map(|k| (k as f64 * ratio).round_ties_even() as usize)
            .collect()
    } else {
        vec![0; num_clips]
    }
}

/// `SampleFrames._get_test_clips` (twice_sample = False, target_fps = None), 3D recognisers
/// (clip_len > 1): `num_clips` offsets evenly spread over `max(total − ori_clip_len, 0)`,
/// where in test mode ori_clip_len = (clip_len − 1)·interval + 1 (PySlowFast's alignment).
pub fn test_clip_offsets(total: usize, ori_clip_len: usize, num_clips: usize) -> Vec<usize> {
    let max_offset = total.saturating_sub(ori_clip_len);
    if num_clips > 1 {
        let between = max_offset as f64 / (num_clips - 1) as f64;
        (0..num_clips)
            .map(|k| (k as f64 * between).round_ties_even() as usize)
            .collect()
    } else {
        vec![max_offset / 2]
    }
}

/// `SampleFrames(clip_len, frame_interval, num_clips)` with `out_of_bound_opt='loop'`:
/// (num_clips, clip_len) frame indices in [0, total), clips in order.
pub fn sample_frames(
    total: usize,
    clip_len: usize,
    interval: usize,
    num_clips: usize,
    mode: Mode,
    rng: &mut impl Draw,
) -> Vec<Vec<usize>> {
    assert!(
        total > 0 && clip_len > 0 && interval > 0 && num_clips > 0,
        "sample_frames: zero argument"
    );
    if mode == Mode::Test && clip_len == 1 {
        // The 2D-recogniser branch: centres of `num_clips` equal segments, in floats, then
        // `% total` and truncation (numpy: mod on the float array, astype(int32) at the end).
        let avg = total as f64 / num_clips as f64;
        return (0..num_clips)
            .map(|k| vec![((k as f64 * avg + avg / 2.0) % total as f64) as usize])
            .collect();
    }
    let offsets = match mode {
        Mode::Train => train_clip_offsets(total, clip_len * interval, num_clips, rng),
        Mode::Test => test_clip_offsets(total, (clip_len - 1) * interval + 1, num_clips),
    };
    offsets
        .iter()
        .map(|&o| (0..clip_len).map(|i| (o + i * interval) % total).collect())
        .collect()
}

/// TSN/TSM segment sampling (`SampleFrames(1, 1, segments)`): one frame per segment, random
/// within it in training, its centre in testing; a single clip of T = `segments` frames.
pub fn segment_frames(
    total: usize,
    segments: usize,
    mode: Mode,
    rng: &mut impl Draw,
) -> Vec<usize> {
    sample_frames(total, 1, 1, segments, mode, rng)
        .into_iter()
        .flatten()
        .collect()
}

/// `UniformSample(clip_len, num_clips)`: `clip_len` equal segments of [0, total − 1]; training
/// draws one frame from each (one clip); testing takes `num_clips` clips, clip k shifted by
/// (k + 1)/(num_clips + 1) of a segment. No looping: a short video repeats frames.
pub fn uniform_sample(
    total: usize,
    clip_len: usize,
    num_clips: usize,
    mode: Mode,
    rng: &mut impl Draw,
) -> Vec<Vec<usize>> {
    assert!(
        total > 0 && clip_len > 0 && num_clips > 0,
        "uniform_sample: zero argument"
    );
    let seg = (total - 1) as f64 / clip_len as f64;
    let start = |i: usize| (seg * i as f64).round_ties_even() as usize;
    match mode {
        Mode::Train => {
            vec![(0..clip_len)
                .map(|i| rng.randint(start(i), start(i + 1) + 1))
                .collect()]
        }
        Mode::Test => {
            let duration = seg / (num_clips + 1) as f64;
            (0..num_clips)
                .map(|k| {
                    (0..clip_len)
                        .map(|i| start(i) + (duration * (k + 1) as f64) as usize)
                        .collect()
                })
                .collect()
        }
    }
}

/// The temporal views of one item under `sampling`: (views, T) frame indices in [0, total).
pub fn sample(
    sampling: &Sampling,
    total: usize,
    mode: Mode,
    rng: &mut impl Draw,
) -> Vec<Vec<usize>> {
    match *sampling {
        Sampling::Clips {
            clip_len,
            frame_interval,
            train_clips,
            test_clips,
        } => {
            let n = if mode == Mode::Train {
                train_clips
            } else {
                test_clips
            };
            sample_frames(total, clip_len, frame_interval, n, mode, rng)
        }
        Sampling::Segments { segments } => vec![segment_frames(total, segments, mode, rng)],
        Sampling::Uniform {
            clip_len,
            test_clips,
        } => uniform_sample(total, clip_len, test_clips, mode, rng),
    }
}
