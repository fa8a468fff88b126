//! What `train` and `run` share: rendering synthetic clips at a preset's clip size, and loading
//! weights into a model by official key names. Presets are found with `tubelet_models::preset`.

use std::path::Path;

use tubelet::{Result, Tensor};
use tubelet_models::VideoModel;

/// Renders synthetic clips at a preset's clip size (tubelet-train's, shared with the loop).
pub use tubelet_train::source::render;

/// A rendered batch as the model's input: (B, T, H, W, 3) converted to its layout.
pub fn model_input(model: &dyn VideoModel, data: &[f32], batch: usize) -> Result<Tensor> {
    let [t, h, w] = model.clip();
    let x = Tensor::from_slice(data, &[batch, t, h, w, 3])?;
    model.input_layout().from_channels_last(&x)
}

/// Everything a checkpoint holds for `model`: parameters, then buffers, by official key.
pub fn state(model: &dyn VideoModel) -> Vec<(String, Tensor)> {
    let mut all = model.named_params();
    all.extend(model.named_buffers());
    all
}

/// Loads a weights file into the model's parameters and buffers by official key names, for
/// inference: safetensors or an official checkpoint (`.pth`, `.pyth`; prefixes such as
/// `module.` or `backbone.` and each family's head matched, see `tubelet_train::weights`).
/// Every tensor of the model must come from the file; the error lists every missing and
/// wrongly shaped key. The report lists what the file held besides.
pub fn load_weights(
    model: &dyn VideoModel,
    path: &Path,
) -> Result<tubelet_train::weights::LoadReport> {
    tubelet_train::weights::load_exact(model, path)
}

/// Index of the largest value of each row of `classes` values.
pub fn argmax_rows(logits: &[f32], classes: usize) -> Vec<usize> {
    logits
        .chunks(classes)
        .map(|r| {
            r.iter()
                .enumerate()
                .fold(0, |best, (i, &v)| if v > r[best] { i } else { best })
        })
        .collect()
}
