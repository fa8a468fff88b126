//! tubelet-data's datasets as the loop's [`BatchSource`]: a user's annotation list or folder per
//! class through the parallel loader, with the pipeline (sampling, crops, normalisation) of the
//! preset's recipe at the model's clip size.
//! Training uses the recipe's training pipeline; the per-epoch validation uses one centre view
//! (mmaction2's `val_pipeline`); `tubelet eval` uses the recipe's full test views.

use std::path::Path;
use std::sync::Arc;

use tubelet::{Error, Result};
use tubelet_data::spec::{
    DataSpec, Mode, Normalize, Pipeline, PixelScale, Sampling, Source, TestCrop,
};
use tubelet_data::{Loader, LoaderConfig};

use crate::recipe::Recipe;
use crate::source::{BatchSource, HostBatch};

/// Which views a pipeline gives in test mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Views {
    /// One clip, centre crop (per-epoch validation).
    Single,
    /// The recipe's test views (clips × crops).
    Recipe,
}

/// The pipeline of preset `model` with `recipe`, producing clips of `clip` = [T, H, W].
pub fn pipeline_for(model: &str, recipe: &Recipe, [t, h, w]: [usize; 3], views: Views) -> Pipeline {
    let s = &recipe.sampling;
    let mut p = if model.ends_with("-tiny") {
        Pipeline::simple(t, s.frame_interval.max(1), [h, w])
    } else if model.starts_with("swin") {
        Pipeline::video_swin_32x2(h)
    } else if model.starts_with("tsm") {
        Pipeline::tsm_8(h)
    } else if model.starts_with("mvit") {
        Pipeline::mvit_16x4(h)
    } else {
        // The recipe's sampling with the Video Swin crops (random resized crop + flip, short side
        // 256/224 scaled), normalised with the recipe's mean and std (0–255).
        let mut p = Pipeline::video_swin_32x2(h);
        p.sampling = Sampling::Clips {
            clip_len: t,
            frame_interval: s.frame_interval.max(1),
            train_clips: 1,
            test_clips: s.test_clips.max(1),
        };
        p.test_crop = if s.test_crops >= 3 {
            TestCrop::Three
        } else {
            TestCrop::Center
        };
        p.norm = Normalize {
            mean: recipe.mean,
            std: recipe.std,
            scale: PixelScale::Byte,
        };
        p
    };
    p.size = [h, w];
    p.sampling = match p.sampling {
        Sampling::Clips {
            frame_interval,
            train_clips,
            test_clips,
            ..
        } => Sampling::Clips {
            clip_len: t,
            frame_interval,
            train_clips,
            test_clips,
        },
        Sampling::Segments { .. } => Sampling::Segments { segments: t },
        Sampling::Uniform { test_clips, .. } => Sampling::Uniform {
            clip_len: t,
            test_clips,
        },
    };
    if views == Views::Single {
        p.test_crop = TestCrop::Center;
        p.sampling = match p.sampling {
            Sampling::Clips {
                clip_len,
                frame_interval,
                train_clips,
                ..
            } => Sampling::Clips {
                clip_len,
                frame_interval,
                train_clips,
                test_clips: 1,
            },
            Sampling::Uniform { clip_len, .. } => Sampling::Uniform {
                clip_len,
                test_clips: 1,
            },
            other => other,
        };
    }
    p
}

/// A split of a user's dataset through the parallel loader.
pub struct LoaderSource {
    pub loader: Loader,
}

impl LoaderSource {
    /// Opens `list` (an annotation list or a folder per class; paths relative to `root`).
    pub fn open(
        list: &Path,
        root: Option<&Path>,
        num_classes: Option<usize>,
        pipeline: &Pipeline,
        mode: Mode,
        cfg: LoaderConfig,
    ) -> Result<LoaderSource> {
        let mut spec = DataSpec::new(Source::detect(list)?);
        spec.root = root.map(Path::to_path_buf);
        spec.num_classes = num_classes;
        let dataset = tubelet_data::spec::open(&spec, pipeline, mode)?;
        let loader = Loader::new(dataset, cfg)?;
        Ok(LoaderSource { loader })
    }

    pub fn dataset(&self) -> &Arc<dyn tubelet_data::Dataset> {
        self.loader.dataset()
    }
}

impl BatchSource for LoaderSource {
    fn batches_per_epoch(&self) -> usize {
        self.loader.batches_per_epoch()
    }

    fn len(&self) -> usize {
        self.loader.dataset().len()
    }

    fn num_classes(&self) -> usize {
        self.loader.dataset().num_classes()
    }

    fn class_names(&self) -> Option<Vec<String>> {
        self.loader.dataset().class_names()
    }

    fn clip(&self) -> [usize; 3] {
        self.loader.dataset().clip()
    }

    fn epoch<'a>(
        &'a self,
        epoch: u64,
        start: usize,
    ) -> Result<Box<dyn Iterator<Item = Result<HostBatch>> + 'a>> {
        let it = self.loader.epoch(epoch, start);
        Ok(Box::new(it.map(|b| {
            let b = b.map_err(Error::from)?;
            Ok(HostBatch {
                data: b.data,
                shape: b.shape,
                views: b.views,
                labels: b.labels,
                wait: b.wait,
                skipped: b.skipped,
            })
        })))
    }
}
