//! tubelet-models: the video-transformer zoo, composed from tubelet's ops, one file per paper.
//! Configs follow the papers; parameters carry the official checkpoints' key names.
//!
//! Every architecture implements [`VideoModel`] and lists its presets (paper configs and a tiny
//! config that trains on the embedded synthetic set) in [`presets`]; the `tubelet` binary finds
//! models only through this registry (`train --model`, `run --model`, `models`).

use tubelet::{Error, Result, Tensor};

pub mod blocks;
pub mod grid_attention;
pub mod mvit;
pub mod timesformer;
pub mod tsm;
pub mod uniformer;
pub mod video_swin;
pub mod vivit;

/// The layout a model's official forward takes its clip in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputLayout {
    /// (B, T, H, W, 3), channels-last: scenic (ViViT).
    Bthwc,
    /// (B, 3, T, H, W): the PyTorch video models (Video Swin, UniFormer, TimeSformer, MViT).
    Bcthw,
    /// (B·T, 3, H, W): TSM, frames as a batch of images, T contiguous per video.
    BtChw,
}

impl InputLayout {
    /// The shape of a batch of `b` clips of `[frames, height, width]` in this layout.
    pub fn shape(self, b: usize, [t, h, w]: [usize; 3]) -> Vec<usize> {
        match self {
            InputLayout::Bthwc => vec![b, t, h, w, 3],
            InputLayout::Bcthw => vec![b, 3, t, h, w],
            InputLayout::BtChw => vec![b * t, 3, h, w],
        }
    }

    /// Converts a channels-last batch (B, T, H, W, 3), as the synthetic set renders it, into
    /// this layout (one permute, or none).
    pub fn from_channels_last(self, x: &Tensor) -> Result<Tensor> {
        if x.rank() != 5 || x.dim(-1) != 3 {
            return Err(Error::Shape(format!(
                "a clip batch must be (B, T, H, W, 3), got {:?}",
                x.shape()
            )));
        }
        let (b, t, h, w) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3));
        match self {
            InputLayout::Bthwc => Ok(x.clone()),
            InputLayout::Bcthw => x.try_permute(&[0, 4, 1, 2, 3]), // (B, 3, T, H, W)
            InputLayout::BtChw => x
                .try_permute(&[0, 1, 4, 2, 3])?
                .try_reshape(&[b * t, 3, h, w]), // (B·T, 3, H, W)
        }
    }
}

/// A video classifier: what training, inference and weight loading need of every model.
pub trait VideoModel {
    /// `[frames, height, width]` of the clip the model is built for.
    fn clip(&self) -> [usize; 3];
    fn num_classes(&self) -> usize;
    fn input_layout(&self) -> InputLayout;
    /// Logits (B, classes) from a batch in [`VideoModel::input_layout`]. `train` selects the
    /// training behaviour: BatchNorm batch statistics (and running-stat updates), dropout and
    /// drop path where the model has them. Heads that apply softmax in eval in the official code
    /// (MViT) still return logits here; say so in the model file.
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor>;
    /// Every trainable parameter under its official checkpoint key.
    fn named_params(&self) -> Vec<(String, Tensor)>;
    /// Non-trainable state saved with the weights (BatchNorm running stats), official keys.
    fn named_buffers(&self) -> Vec<(String, Tensor)>;
    /// The counters the model's stochastic layers (drop path, dropout) derive their masks'
    /// seeds from, by name. A whole-state checkpoint stores them, so a resumed run draws the
    /// masks the uninterrupted run would have. Empty for models without such layers.
    fn rng_counters(&self) -> Vec<(String, u64)>;
    /// Puts back counters that [`VideoModel::rng_counters`] returned; a name this model does
    /// not count is an error naming it.
    fn set_rng_counters(&self, counters: &[(String, u64)]) -> Result<()>;
    /// Parameters whose gradient is exactly zero by the official architecture itself (e.g.
    /// MViTv2's last-block q pooling, which acts only on tokens the cls head never reads). Tests
    /// assert these get exactly zero and every other parameter a nonzero gradient. Most models
    /// have none.
    fn params_unreachable_from_the_loss(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Classes of the tiny presets when no count is asked for: the embedded synthetic set's 8 motions
/// (`tubelet_data::synthetic`). The zoo does not depend on any dataset; this is only a default.
pub const TINY_CLASSES: usize = 8;

/// What a preset is built with: the seed of its initial weights and, where the caller's data
/// asks for them, another class count, clip size or drop-path rate than the preset's own.
/// A clip the architecture cannot take (not a multiple of its patch, too small for its
/// downsampling, not square for MViT) is an error from the model's config check, naming the field.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BuildOptions {
    pub seed: u64,
    /// None: the preset's own (`Preset::num_classes`).
    pub num_classes: Option<usize>,
    /// `[frames, height, width]`; None: the preset's own (`Preset::clip`). Position embeddings
    /// are sized to this clip, so weights trained at another size do not load into it.
    pub clip: Option<[usize; 3]>,
    /// Stochastic depth rate (the models' `drop_path_rate`); None: the preset's own. Models without
    /// drop path refuse a nonzero rate.
    pub drop_path: Option<f32>,
}

impl BuildOptions {
    /// The preset's own configuration with this seed.
    pub fn seed(seed: u64) -> BuildOptions {
        BuildOptions {
            seed,
            ..BuildOptions::default()
        }
    }

    /// The class count to build: the asked one, else `default`; zero is an error.
    pub fn classes(&self, default: usize) -> Result<usize> {
        match self.num_classes {
            Some(0) => Err(Error::Config(
                "num_classes must be at least 1, got 0".into(),
            )),
            Some(n) => Ok(n),
            None => Ok(default),
        }
    }

    /// The clip to build: the asked one, else `default`; an empty dimension is an error.
    pub fn clip_or(&self, default: [usize; 3]) -> Result<[usize; 3]> {
        match self.clip {
            Some(c) if c.contains(&0) => Err(Error::Config(format!(
                "clip (frames, height, width) must be positive, got {c:?}"
            ))),
            Some(c) => Ok(c),
            None => Ok(default),
        }
    }

    /// The drop-path rate for a model that has none: only an absent or zero rate is accepted.
    pub fn no_drop_path(&self, model: &str) -> Result<()> {
        match self.drop_path {
            Some(r) if r != 0.0 => Err(Error::Config(format!(
                "drop_path {r}: {model} has no stochastic depth; use 0"
            ))),
            _ => Ok(()),
        }
    }
}

/// A named configuration of an architecture.
pub struct Preset {
    /// CLI name, e.g. `swin-t`, `vivit-b-16x2`, `swin-tiny` (lowercase, dashes).
    pub name: &'static str,
    /// Paper name and source, e.g. "Video Swin-T, K400 (VST configs/recognition/swin)".
    pub description: &'static str,
    /// Parameters, counted from the config (equal to the built model's).
    pub params: usize,
    /// G multiply-adds of conv, linear and the two attention matmuls at the default input.
    pub gmacs: f64,
    /// `[frames, height, width]` of the default input.
    pub clip: [usize; 3],
    /// Small enough to train on the synthetic set (8 frames of 32×32, 8 classes) in minutes.
    pub tiny: bool,
    /// Classes of the preset's own head (400 for K400 presets, [`TINY_CLASSES`] for tiny ones).
    pub num_classes: usize,
    /// Builds the model with seeded weights, at the options' class count and clip.
    pub build: fn(&BuildOptions) -> Result<Box<dyn VideoModel>>,
}

/// Every preset of every architecture, in paper order.
pub fn presets() -> Vec<Preset> {
    let mut all = Vec::new();
    all.extend(vivit::presets());
    all.extend(tsm::presets());
    all.extend(uniformer::presets());
    all.extend(video_swin::presets());
    all.extend(timesformer::presets());
    all.extend(mvit::presets());
    all
}

/// The preset called `name`, or an error listing the names that exist.
pub fn preset(name: &str) -> Result<Preset> {
    let all = presets();
    let names: Vec<_> = all.iter().map(|p| p.name).collect();
    let list = names.join(", ");
    all.into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| Error::Config(format!("unknown model {name:?}; available: {list}")))
}

/// Builds the preset called `name`, or says which names exist.
pub fn build(name: &str, options: &BuildOptions) -> Result<Box<dyn VideoModel>> {
    (preset(name)?.build)(options)
}

/// [`VideoModel::set_rng_counters`] for a model whose counters are `known` (name, setter).
pub fn set_counters(
    model: &str,
    counters: &[(String, u64)],
    known: &[(&str, &dyn Fn(u64))],
) -> Result<()> {
    for (name, v) in counters {
        match known.iter().find(|(k, _)| k == name) {
            Some((_, set)) => set(*v),
            None => {
                return Err(Error::Config(format!(
                    "{model} has no random counter {name:?} (it has: {})",
                    known.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
                )))
            }
        }
    }
    Ok(())
}
