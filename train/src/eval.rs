//! Evaluation as the papers report it: every view of every video through the model (no tape,
//! eval behaviour), the views' scores combined per video as the recipe's code base does
//! (metrics::average_views), then top-1, top-5, mean class accuracy, the confusion matrix and
//! the per-class accuracy. Used after each epoch on `--val` and by `tubelet eval`.

use std::time::Instant;

use tubelet::{no_grad, Error, Result, Tensor};
use tubelet_models::VideoModel;

use crate::metrics::{average_views, Tally, ViewAverage};
use crate::source::{BatchSource, HostBatch};

/// What one evaluation measured.
#[derive(Clone, Debug)]
pub struct EvalReport {
    pub tally: Tally,
    /// Mean over videos of −ln p(label) of the averaged probabilities (None for score averaging).
    pub loss: Option<f64>,
    pub views: usize,
    pub seconds: f64,
}

impl EvalReport {
    pub fn top1(&self) -> f64 {
        self.tally.top1()
    }
    pub fn top5(&self) -> f64 {
        self.tally.top5()
    }
    pub fn mean_class_accuracy(&self) -> f64 {
        self.tally.mean_class_accuracy()
    }
}

/// A host batch as the model's input: (B·V, T, H, W, 3) → the model's layout.
pub fn model_input(model: &dyn VideoModel, batch: &HostBatch) -> Result<Tensor> {
    let [n, t, h, w, c] = batch.shape;
    if [t, h, w] != model.clip() || c != 3 {
        return Err(Error::Shape(format!(
            "the data gives clips of {t}×{h}×{w}×{c}; the model is built for {:?}×3 (build it with the data's clip size)",
            model.clip()
        )));
    }
    let x = Tensor::from_slice(&batch.data, &[n, t, h, w, 3])?;
    model.input_layout().from_channels_last(&x)
}

/// Evaluates `model` on one epoch of `data` (epoch 0: test sources ignore the epoch), at most
/// `max_batches` batches when given. `on_batch(done, total)` reports progress.
pub fn evaluate(
    model: &dyn VideoModel,
    data: &dyn BatchSource,
    how: ViewAverage,
    max_batches: Option<usize>,
    on_batch: &mut dyn FnMut(usize, usize),
) -> Result<EvalReport> {
    let start = Instant::now();
    let classes = model.num_classes();
    if data.num_classes() > classes {
        return Err(Error::Config(format!(
            "the data has {} classes, the model's head {classes}: build the model with --num-classes {}",
            data.num_classes(),
            data.num_classes()
        )));
    }
    let mut tally = Tally::new(classes);
    let (mut nll, mut views) = (0.0f64, 1usize);
    let total = max_batches.map_or(data.batches_per_epoch(), |m| {
        m.min(data.batches_per_epoch())
    });
    for (i, batch) in data.epoch(0, 0)?.take(total).enumerate() {
        let batch = batch?;
        views = batch.views.max(1);
        let x = model_input(model, &batch)?;
        let logits = no_grad(|| model.forward(&x, false))?; // (B·V, classes)
        let scores = average_views(&logits.to_vec()?, classes, views, how)?; // (B, classes)
        if how == ViewAverage::Prob {
            for (row, &y) in scores.chunks(classes).zip(&batch.labels) {
                nll -= (row[y as usize].max(1e-12) as f64).ln();
            }
        }
        tally.add(&scores, &batch.labels)?;
        on_batch(i + 1, total);
    }
    let loss = (how == ViewAverage::Prob && tally.count > 0).then(|| nll / tally.count as f64);
    Ok(EvalReport {
        tally,
        loss,
        views,
        seconds: start.elapsed().as_secs_f64(),
    })
}
