//! What to load and how: a [`DataSpec`] says *which* data (an mmaction2 annotation list of
//! videos or of frame folders, a folder per class, or the embedded synthetic set), a
//! [`Pipeline`] says how a clip is made from one item (sampling, resize, crop, flip, mean/std,
//! clip size, test views). The trainer fills a `Pipeline` from each model's recipe; [`open`]
//! builds the [`Dataset`] of one split from the two.
//!
//! The pipeline mirrors mmaction2's configs, e.g. Video Swin's (mmaction2
//! `configs/recognition/swin/swin-tiny-...kinetics400-rgb.py`):
//! train `SampleFrames(32, 2, 1)` → `Resize(-1, 256)` → `RandomResizedCrop` → `Resize(224, 224)`
//! → `Flip(0.5)`; test `SampleFrames(32, 2, 4, test_mode)` → `Resize(-1, 224)` → `ThreeCrop(224)`.
//! Counterparts: sampling.rs (index lists), transform.rs (boxes, resampling), dataset.rs.

use std::path::PathBuf;
use std::sync::Arc;

use crate::dataset::{Dataset, FileDataset};
use crate::synthetic::SyntheticDataset;
use crate::{DataError, Result};

/// Training (random sampling and crops, one view) or testing (evenly spaced clips, fixed crops,
/// every test view).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    Train,
    Test,
}

/// Where the items of a split come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// mmaction2 `VideoDataset` list: lines `relative/path.ext label`.
    VideoList(PathBuf),
    /// mmaction2 `RawframeDataset` list: lines `frame_dir total_frames label`.
    RawframesList(PathBuf),
    /// `root/<class>/<video file or frame folder>`, classes in sorted (byte) order.
    FolderPerClass(PathBuf),
    /// The embedded moving-shapes set: `len` clips of the split that [`Mode`] selects
    /// (Train → `Split::Train`, Test → `Split::Test`), rendered from `seed`.
    Synthetic { seed: u64, len: usize },
}

impl Source {
    /// The source a `--data PATH` names: a folder is a folder per class; a file is an
    /// annotation list, rawframes when its first entry has 3 fields, videos when it has 2.
    pub fn detect(path: &std::path::Path) -> Result<Source> {
        if path.is_dir() {
            return Ok(Source::FolderPerClass(path.to_path_buf()));
        }
        let text = std::fs::read_to_string(path).map_err(|e| DataError::Io {
            path: path.to_path_buf(),
            msg: format!("cannot read annotation list: {e}"),
        })?;
        let first = text.lines().enumerate().find(|(_, l)| !l.trim().is_empty());
        match first.map(|(n, l)| (n, l.split_whitespace().count())) {
            Some((_, 3)) => Ok(Source::RawframesList(path.to_path_buf())),
            Some((_, 2)) => Ok(Source::VideoList(path.to_path_buf())),
            Some((n, k)) => Err(DataError::Annotation {
                path: path.to_path_buf(),
                line: n + 1,
                msg: format!("expected `path label` (videos) or `frame_dir total_frames label` (rawframes), got {k} fields"),
            }),
            None => Err(DataError::Io { path: path.to_path_buf(), msg: "annotation list has no entries".into() }),
        }
    }
}

/// Which dataset: a source plus where its relative paths live and how frames are named.
#[derive(Clone, Debug, PartialEq)]
pub struct DataSpec {
    pub source: Source,
    /// Prefix of the relative paths in a list (mmaction2's `data_prefix`). `None`: the folder
    /// that holds the list file.
    pub root: Option<PathBuf>,
    /// Frame file names of a rawframes folder, Python style: `img_{:05}.jpg` (mmaction2's
    /// `filename_tmpl`); `{}`, `{:d}`, `{:0Nd}` and `{:0N}` are understood.
    pub template: String,
    /// Number of the first frame file (mmaction2's `start_index`: 1 for rawframes).
    pub start_index: usize,
    /// Class count when the list does not tell (a validation list may lack the top label);
    /// `None`: the largest label + 1 (lists) or the number of class folders.
    pub num_classes: Option<usize>,
}

impl DataSpec {
    /// A spec for `source` with mmaction2's defaults (`img_{:05}.jpg`, frames numbered from 1).
    pub fn new(source: Source) -> DataSpec {
        DataSpec {
            source,
            root: None,
            template: "img_{:05}.jpg".into(),
            start_index: 1,
            num_classes: None,
        }
    }

    /// The synthetic set's spec: `len` clips rendered from `seed`.
    pub fn synthetic(seed: u64, len: usize) -> DataSpec {
        DataSpec::new(Source::Synthetic { seed, len })
    }
}

/// Temporal sampling (mmaction2 `SampleFrames` / segments / `UniformSample`); each view is one
/// list of T frame indices. See sampling.rs for the formulas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampling {
    /// `SampleFrames(clip_len, frame_interval, num_clips)`: `train_clips` random clips in
    /// training, `test_clips` evenly spaced ones in testing, each a view of T = `clip_len`.
    Clips {
        clip_len: usize,
        frame_interval: usize,
        train_clips: usize,
        test_clips: usize,
    },
    /// TSN/TSM: one frame per segment (`SampleFrames(1, 1, segments)`): T = `segments`, a
    /// random frame of each segment in training, its centre in testing; one view.
    Segments { segments: usize },
    /// `UniformSample(clip_len, num_clips)` (SSv2 style): T = `clip_len`, one random frame per
    /// segment in training; `test_clips` evenly shifted views in testing.
    Uniform { clip_len: usize, test_clips: usize },
}

impl Sampling {
    /// Frames per clip (T).
    pub fn clip_len(&self) -> usize {
        match *self {
            Sampling::Clips { clip_len, .. } | Sampling::Uniform { clip_len, .. } => clip_len,
            Sampling::Segments { segments } => segments,
        }
    }

    /// Temporal views per item in `mode`.
    pub fn temporal_views(&self, mode: Mode) -> usize {
        match (*self, mode) {
            (Sampling::Clips { train_clips, .. }, Mode::Train) => train_clips,
            (Sampling::Clips { test_clips, .. }, Mode::Test) => test_clips,
            (Sampling::Segments { .. }, _) | (Sampling::Uniform { .. }, Mode::Train) => 1,
            (Sampling::Uniform { test_clips, .. }, Mode::Test) => test_clips,
        }
    }
}

/// The training crop, taken after the training short-side resize.
#[derive(Clone, Debug, PartialEq)]
pub enum TrainCrop {
    /// mmaction2 `RandomResizedCrop(area_range, aspect_ratio_range)` (defaults 0.08–1, 3/4–4/3).
    RandomResized { area: [f64; 2], aspect: [f64; 2] },
    /// mmaction2 `MultiScaleCrop(size, scales, max_wh_scale_gap, random_crop=False,
    /// num_fixed_crops)`, `fixed_crops` 5 or 13 (TSM: scales 1, .875, .75, .66, gap 1, 13).
    MultiScale {
        scales: Vec<f64>,
        max_gap: usize,
        fixed_crops: usize,
    },
    /// `CenterCrop(size)`: no spatial augmentation.
    Center,
}

/// The test crops, taken after the test short-side resize: each is a view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestCrop {
    /// `CenterCrop(size)`: one view.
    Center,
    /// `ThreeCrop(size)`: three views along the long side (left/top, right/bottom, middle).
    Three,
}

impl TestCrop {
    pub fn count(self) -> usize {
        match self {
            TestCrop::Center => 1,
            TestCrop::Three => 3,
        }
    }
}

/// The scale pixel values are in when mean and std apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelScale {
    /// 0–255 (mmaction2's `ActionDataPreprocessor`, e.g. mean 123.675, std 58.395).
    Byte,
    /// 0–1 (pytorchvideo / SlowFast / TimeSformer style, e.g. mean 0.45, std 0.225).
    Unit,
}

/// Per-channel normalisation, RGB order: `(x·scale − mean) / std`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub scale: PixelScale,
}

impl Normalize {
    /// ImageNet mean/std in 0–255, as mmaction2's Kinetics configs (Video Swin, TSM, MViT there).
    pub const IMAGENET_255: Normalize = Normalize {
        mean: [123.675, 116.28, 103.53],
        std: [58.395, 57.12, 57.375],
        scale: PixelScale::Byte,
    };
    /// SlowFast / TimeSformer / pytorchvideo Kinetics mean/std in 0–1.
    pub const KINETICS_UNIT: Normalize = Normalize {
        mean: [0.45, 0.45, 0.45],
        std: [0.225, 0.225, 0.225],
        scale: PixelScale::Unit,
    };
    /// Maps 0–255 to [−1, 1] (scenic ViViT's and the synthetic set's range).
    pub const SYMMETRIC_UNIT: Normalize = Normalize {
        mean: [0.5, 0.5, 0.5],
        std: [0.5, 0.5, 0.5],
        scale: PixelScale::Unit,
    };

    /// `(a, b)` per channel with `normalised = byte·a + b`.
    pub fn affine(&self) -> [(f32, f32); 3] {
        let s = match self.scale {
            PixelScale::Byte => 1.0,
            PixelScale::Unit => 1.0 / 255.0,
        };
        std::array::from_fn(|c| (s / self.std[c], -self.mean[c] / self.std[c]))
    }
}

/// How one item becomes clips: sampling, resize, crop, flip, normalisation, size.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    pub sampling: Sampling,
    /// Output frame size [H, W] (the crop is resized to it).
    pub size: [usize; 2],
    /// Short side of the resize before the training crop (`Resize(-1, S)`); `None`: none.
    pub train_short_side: Option<usize>,
    /// Short side of the resize before the test crops; `None`: none.
    pub test_short_side: Option<usize>,
    pub train_crop: TrainCrop,
    pub test_crop: TestCrop,
    /// Random horizontal flip (p = 0.5) in training. Off by default: classes such as "moves
    /// left" (the synthetic set, SSv2) change meaning when mirrored.
    pub flip: bool,
    pub norm: Normalize,
}

impl Pipeline {
    /// A plain pipeline: `clip_len` consecutive frames (interval `interval`), short side to
    /// max(H, W) then a centre crop in both modes, no flip, [−1, 1] normalisation.
    pub fn simple(clip_len: usize, interval: usize, size: [usize; 2]) -> Pipeline {
        let short = size[0].max(size[1]);
        Pipeline {
            sampling: Sampling::Clips {
                clip_len,
                frame_interval: interval,
                train_clips: 1,
                test_clips: 1,
            },
            size,
            train_short_side: Some(short),
            test_short_side: Some(short),
            train_crop: TrainCrop::Center,
            test_crop: TestCrop::Center,
            flip: false,
            norm: Normalize::SYMMETRIC_UNIT,
        }
    }

    /// Video Swin (Liu et al. 2022) as mmaction2's
    /// `swin-tiny-p244-w877_in1k-pre_8xb8-amp-32x2x1-30e_kinetics400-rgb.py`: 32×2×1 clips,
    /// short side 256 + RandomResizedCrop + flip in training; 4 clips × 3 crops at short side
    /// 224 in testing. `size` scales both short sides (224 is the paper's).
    pub fn video_swin_32x2(size: usize) -> Pipeline {
        Pipeline {
            sampling: Sampling::Clips {
                clip_len: 32,
                frame_interval: 2,
                train_clips: 1,
                test_clips: 4,
            },
            size: [size, size],
            train_short_side: Some(256 * size / 224),
            test_short_side: Some(size),
            train_crop: TrainCrop::RandomResized {
                area: [0.08, 1.0],
                aspect: [3.0 / 4.0, 4.0 / 3.0],
            },
            test_crop: TestCrop::Three,
            flip: true,
            norm: Normalize::IMAGENET_255,
        }
    }

    /// TSM (Lin et al. 2019) as mmaction2's
    /// `tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb.py`: 8 segments, short
    /// side 256 + MultiScaleCrop(1, .875, .75, .66; 13 fixed crops) + flip in training; its
    /// validation protocol (short side 256, centre crop) in testing (its TenCrop test is not
    /// implemented).
    pub fn tsm_8(size: usize) -> Pipeline {
        Pipeline {
            sampling: Sampling::Segments { segments: 8 },
            size: [size, size],
            train_short_side: Some(256 * size / 224),
            test_short_side: Some(256 * size / 224),
            train_crop: TrainCrop::MultiScale {
                scales: vec![1.0, 0.875, 0.75, 0.66],
                max_gap: 1,
                fixed_crops: 13,
            },
            test_crop: TestCrop::Center,
            flip: true,
            norm: Normalize::IMAGENET_255,
        }
    }

    /// MViTv2-S 16×4 (Li et al. 2022) as mmaction2's
    /// `mvit-small-p244_32xb16-16x4x1-200e_kinetics400-rgb.py`: 16×4×1 clips, short side 256,
    /// RandomResizedCrop and flip in training (its RandAugment and RandomErasing are not
    /// implemented); 5 clips × centre crop at short side 224 in testing; mean 114.75, std
    /// 57.375 (0–255).
    pub fn mvit_16x4(size: usize) -> Pipeline {
        Pipeline {
            sampling: Sampling::Clips {
                clip_len: 16,
                frame_interval: 4,
                train_clips: 1,
                test_clips: 5,
            },
            size: [size, size],
            train_short_side: Some(256 * size / 224),
            test_short_side: Some(size),
            train_crop: TrainCrop::RandomResized {
                area: [0.08, 1.0],
                aspect: [3.0 / 4.0, 4.0 / 3.0],
            },
            test_crop: TestCrop::Center,
            flip: true,
            norm: Normalize {
                mean: [114.75; 3],
                std: [57.375; 3],
                scale: PixelScale::Byte,
            },
        }
    }

    /// Frames per clip (T).
    pub fn clip_len(&self) -> usize {
        self.sampling.clip_len()
    }

    /// Clip shape [T, H, W].
    pub fn clip(&self) -> [usize; 3] {
        [self.clip_len(), self.size[0], self.size[1]]
    }

    /// Views per item: 1 crop × the temporal views in training; crops × temporal views in
    /// testing (crop-major, as mmaction2's ThreeCrop orders them).
    pub fn views(&self, mode: Mode) -> usize {
        let crops = match mode {
            Mode::Train => 1,
            Mode::Test => self.test_crop.count(),
        };
        crops * self.sampling.temporal_views(mode)
    }

    /// Checks the values a user can set; the message names the field and the value.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(DataError::Config(m));
        let ok = match self.sampling {
            Sampling::Clips {
                clip_len,
                frame_interval,
                train_clips,
                test_clips,
            } => clip_len > 0 && frame_interval > 0 && train_clips > 0 && test_clips > 0,
            Sampling::Segments { segments } => segments > 0,
            Sampling::Uniform {
                clip_len,
                test_clips,
            } => clip_len > 0 && test_clips > 0,
        };
        if !ok {
            return bad(format!(
                "sampling {:?}: every count must be at least 1",
                self.sampling
            ));
        }
        if self.size[0] == 0 || self.size[1] == 0 {
            return bad(format!("clip size {:?} must be at least 1×1", self.size));
        }
        if self.train_short_side == Some(0) || self.test_short_side == Some(0) {
            return bad("short-side resize must be at least 1".into());
        }
        if let TrainCrop::RandomResized { area, aspect } = &self.train_crop {
            if !(0.0 < area[0] && area[0] <= area[1] && area[1] <= 1.0) {
                return bad(format!(
                    "RandomResizedCrop area range {area:?} must satisfy 0 < lo ≤ hi ≤ 1"
                ));
            }
            if !(0.0 < aspect[0] && aspect[0] <= aspect[1]) {
                return bad(format!(
                    "RandomResizedCrop aspect range {aspect:?} must satisfy 0 < lo ≤ hi"
                ));
            }
        }
        if let TrainCrop::MultiScale { fixed_crops, .. } = &self.train_crop {
            if ![5, 13].contains(fixed_crops) {
                return bad(format!(
                    "MultiScaleCrop fixed_crops {fixed_crops} must be 5 or 13"
                ));
            }
        }
        if let TrainCrop::MultiScale { scales, .. } = &self.train_crop {
            if scales.is_empty() || scales.iter().any(|s| !(*s > 0.0 && *s <= 1.0)) {
                return bad(format!(
                    "MultiScaleCrop scales {scales:?} must be in (0, 1] and not empty"
                ));
            }
        }
        if self.norm.std.iter().any(|s| !(s.is_finite() && *s != 0.0)) {
            return bad(format!(
                "normalisation std {:?} must be finite and non-zero",
                self.norm.std
            ));
        }
        Ok(())
    }
}

/// Builds the dataset of one split: parses its annotation list (a malformed line is an error
/// with file and line number) or scans its class folders, or sets up the synthetic set.
pub fn open(spec: &DataSpec, pipeline: &Pipeline, mode: Mode) -> Result<Arc<dyn Dataset>> {
    pipeline.validate()?;
    Ok(match &spec.source {
        Source::Synthetic { seed, len } => {
            let split = match mode {
                Mode::Train => crate::synthetic::Split::Train,
                Mode::Test => crate::synthetic::Split::Test,
            };
            Arc::new(SyntheticDataset::new(*seed, pipeline.clip(), split, *len))
        }
        _ => Arc::new(FileDataset::open(spec, pipeline.clone(), mode)?),
    })
}
