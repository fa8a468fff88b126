//! tubelet-data: the data side of training. A user's videos (mmaction2 annotation lists, or a
//! folder per class), extracted frames, or the embedded synthetic set become batches of host
//! clips: sampled (mmaction2's `SampleFrames` and friends), decoded (FFmpeg for video, pure-Rust
//! JPEG/PNG for frames), augmented and normalised by worker threads ahead of the training step.
//! Uploading a batch to the GPU is the engine's job, not this crate's.
//!
//! Layout of every clip this crate produces: channels-last (T, H, W, 3); a batch is
//! (B, T, H, W, 3), which `tubelet_models::InputLayout::from_channels_last` turns into a model's
//! own layout.

//! Where things are:
//! - [`spec`]: *which* data ([`DataSpec`]) and *how* a clip is made from it ([`Pipeline`]);
//!   [`open`] builds a [`Dataset`] from the two.
//! - [`dataset`]: the [`Dataset`] trait, annotation lists, folder-per-class, rawframes decoding.
//! - [`sampling`]: mmaction2's `SampleFrames`, segment sampling (TSN/TSM), `UniformSample`.
//! - [`transform`]: crop boxes (mmaction2's crops), one-pass crop + resize + flip + normalise.
//! - [`loader`]: worker threads, bounded queue, deterministic order and crops, sharding.
//! - [`synthetic`]: the embedded moving-shapes set; [`synth`] writes it out as files.
//! - [`check`]: scans a dataset for problems without training (`tubelet data check`).
//! - `video` / `encode`: FFmpeg decoding and encoding (cargo feature `video`).

pub mod check;
pub mod dataset;
pub mod encode;
pub mod error;
pub mod loader;
pub mod sampling;
pub mod spec;
pub mod synth;
pub mod synthetic;
pub mod transform;
pub mod video;

pub use dataset::{write_class_list, Dataset, FileDataset};
pub use error::{DataError, Result};
pub use loader::{Batch, Epoch, Loader, LoaderConfig};
pub use spec::{
    open, DataSpec, Mode, Normalize, Pipeline, PixelScale, Sampling, Source, TestCrop, TrainCrop,
};

/// Decoded frames of one clip, RGB, 8 bits per channel, channels-last (T, H, W, 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frames {
    /// `[frames, height, width]`.
    pub shape: [usize; 3],
    /// T·H·W·3 bytes, RGB.
    pub data: Vec<u8>,
}

impl Frames {
    /// An empty clip of `height`×`width` frames, with room for `frames` of them.
    pub fn with_capacity(frames: usize, height: usize, width: usize) -> Frames {
        Frames {
            shape: [0, height, width],
            data: Vec::with_capacity(frames * height * width * 3),
        }
    }

    /// Appends one RGB frame of this clip's height and width.
    pub fn push(&mut self, frame: &[u8]) {
        debug_assert_eq!(frame.len(), self.shape[1] * self.shape[2] * 3);
        self.data.extend_from_slice(frame);
        self.shape[0] += 1;
    }

    /// Frame `t` as H·W·3 bytes.
    pub fn frame(&self, t: usize) -> &[u8] {
        let n = self.shape[1] * self.shape[2] * 3;
        &self.data[t * n..(t + 1) * n]
    }
}
