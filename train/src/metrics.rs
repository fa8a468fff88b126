//! Classification metrics as the papers report them, on host scores: top-k accuracy, mean class
//! accuracy (mmaction2 `mean_class_accuracy`: the mean over classes that occur in the labels of
//! each class's recall), a confusion matrix, and the averaging of several test views' scores of
//! one video (mmaction2 `average_clips`: 'prob' averages softmax probabilities, 'score' the raw
//! scores; SlowFast sums the views' head outputs, which rank the same as their mean).
//! Tests: train/tests/metrics.rs, on hand-made scores.

use tubelet::{Error, Result};

/// How a video's views are combined into one score vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewAverage {
    /// Mean of the views' softmax probabilities (mmaction2 `average_clips='prob'`).
    Prob,
    /// Mean of the raw scores (`average_clips='score'`; TSM's `test_models.py` without --softmax).
    Score,
}

impl ViewAverage {
    pub fn name(self) -> &'static str {
        match self {
            ViewAverage::Prob => "prob",
            ViewAverage::Score => "score",
        }
    }
}

/// Softmax of one row, in f64 for the sum.
pub fn softmax(row: &[f32]) -> Vec<f32> {
    let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = row.iter().map(|&v| ((v - m) as f64).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| (v / s) as f32).collect()
}

/// Scores (B·V, C), the V views of video b in rows b·V..b·V+V, averaged into (B, C).
pub fn average_views(
    scores: &[f32],
    classes: usize,
    views: usize,
    how: ViewAverage,
) -> Result<Vec<f32>> {
    if classes == 0 || views == 0 || !scores.len().is_multiple_of(classes * views) {
        return Err(Error::Shape(format!(
            "average_views: {} scores are not a whole number of videos of {views} views × {classes} classes",
            scores.len()
        )));
    }
    let mut out = Vec::with_capacity(scores.len() / views);
    for video in scores.chunks(classes * views) {
        let mut acc = vec![0.0f64; classes];
        for row in video.chunks(classes) {
            let r = match how {
                ViewAverage::Prob => softmax(row),
                ViewAverage::Score => row.to_vec(),
            };
            for (a, v) in acc.iter_mut().zip(r) {
                *a += v as f64;
            }
        }
        out.extend(acc.iter().map(|a| (a / views as f64) as f32));
    }
    Ok(out)
}

/// Classes of one row from best to worst (ties: lower index first, as a stable sort).
fn ranking(row: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| {
        row[b]
            .partial_cmp(&row[a])
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    idx
}

/// Running counts over an evaluation: top-1/top-5 hits, a confusion matrix (label × prediction).
#[derive(Clone, Debug, PartialEq)]
pub struct Tally {
    pub classes: usize,
    pub count: u64,
    pub top1: u64,
    pub top5: u64,
    /// `confusion[label * classes + prediction]`.
    pub confusion: Vec<u64>,
    /// Σ of the loss over the counted videos, where the caller reports one.
    pub loss_sum: f64,
}

impl Tally {
    pub fn new(classes: usize) -> Tally {
        Tally {
            classes,
            count: 0,
            top1: 0,
            top5: 0,
            confusion: vec![0; classes * classes],
            loss_sum: 0.0,
        }
    }

    /// Adds videos: scores (B, C) and their labels.
    pub fn add(&mut self, scores: &[f32], labels: &[u32]) -> Result<()> {
        let c = self.classes;
        if scores.len() != labels.len() * c {
            return Err(Error::Shape(format!(
                "tally: {} scores for {} labels of {c} classes",
                scores.len(),
                labels.len()
            )));
        }
        for (row, &y) in scores.chunks(c).zip(labels) {
            let y = y as usize;
            if y >= c {
                return Err(Error::Config(format!(
                    "label {y} is out of range for {c} classes"
                )));
            }
            let rank = ranking(row);
            self.count += 1;
            self.top1 += u64::from(rank[0] == y);
            self.top5 += u64::from(rank.iter().take(5).any(|&k| k == y));
            self.confusion[y * c + rank[0]] += 1;
        }
        Ok(())
    }

    pub fn top1(&self) -> f64 {
        self.top1 as f64 / self.count.max(1) as f64
    }

    pub fn top5(&self) -> f64 {
        self.top5 as f64 / self.count.max(1) as f64
    }

    /// (videos, correct) per class.
    pub fn per_class(&self) -> Vec<(u64, u64)> {
        let c = self.classes;
        (0..c)
            .map(|k| {
                (
                    self.confusion[k * c..(k + 1) * c].iter().sum(),
                    self.confusion[k * c + k],
                )
            })
            .collect()
    }

    /// Mean over the classes present of each class's accuracy.
    pub fn mean_class_accuracy(&self) -> f64 {
        let present: Vec<f64> = self
            .per_class()
            .into_iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, k)| k as f64 / n as f64)
            .collect();
        if present.is_empty() {
            0.0
        } else {
            present.iter().sum::<f64>() / present.len() as f64
        }
    }

    /// Per-class accuracy as CSV: `class,name,videos,correct,accuracy`.
    pub fn per_class_csv(&self, names: Option<&[String]>) -> String {
        let mut s = String::from("class,name,videos,correct,accuracy\n");
        for (k, (n, hit)) in self.per_class().into_iter().enumerate() {
            let name = names
                .and_then(|v| v.get(k))
                .map(|s| s.replace([',', '"', '\n'], " "))
                .unwrap_or_default();
            let acc = if n > 0 {
                format!("{:.6}", hit as f64 / n as f64)
            } else {
                String::new()
            };
            s.push_str(&format!("{k},{name},{n},{hit},{acc}\n"));
        }
        s
    }
}
