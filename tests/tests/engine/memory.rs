//! Memory features (issue 13): activation checkpointing (engine/src/checkpoint.rs, the segments
//! the models mark through models/src/blocks.rs) gives bit-identical gradients, replays dropout
//! and drop-path masks and leaves BatchNorm's running statistics as one forward would; gradient
//! accumulation (`Grads::accumulate`, engine/src/autograd.rs) gives a K× larger batch's update.
//! The memory the features save is measured by `tubelet bench memory` (tools/src/bench/memory.rs),
//! not asserted here: the tests of one binary share the GPU's byte counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tubelet::checkpoint::{self, checkpoint, set_checkpointing, Checkpointing};
use tubelet::optim::{AdamW, AdamWConfig};
use tubelet::{gpu_or_skip, Grads, Indices, Tensor};
use tubelet_cli::clips::{model_input, render};
use tubelet_data::synthetic::Split;
use tubelet_models::VideoModel;

/// Restores the thread's checkpointing mode (none) even when an assertion fails.
struct Mode(Checkpointing);

impl Mode {
    fn set(mode: Checkpointing) -> Mode {
        Mode(set_checkpointing(mode))
    }
}

impl Drop for Mode {
    fn drop(&mut self) {
        set_checkpointing(self.0);
    }
}

/// Parameter gradients (by official key) and buffers after one training forward and backward
/// of `model` on a fixed batch of `b` clips, under `mode`.
type Named = Vec<(String, Vec<f32>)>;

fn step(model: &dyn VideoModel, b: usize, mode: Checkpointing) -> (Named, Named) {
    let _m = Mode::set(mode);
    let (x, y) = render(0, model.clip(), Split::Train, 0, b);
    let x = model_input(model, &x, b).unwrap();
    let labels = Indices::from_slice(&y).unwrap();
    let grads = model
        .forward(&x, true)
        .unwrap()
        .cross_entropy(&labels)
        .backward()
        .unwrap();
    let g = model
        .named_params()
        .into_iter()
        .map(|(k, t)| {
            let v = grads
                .get(&t)
                .map(|g| g.to_vec().unwrap())
                .unwrap_or_default();
            (k, v)
        })
        .collect();
    let bufs = model
        .named_buffers()
        .into_iter()
        .map(|(k, t)| (k, t.to_vec().unwrap()))
        .collect();
    (g, bufs)
}

/// Asserts bit equality, naming the first differing tensor and its largest difference.
fn assert_bits(what: &str, got: &[(String, Vec<f32>)], want: &[(String, Vec<f32>)]) {
    assert_eq!(got.len(), want.len(), "{what}: tensor count");
    for ((k, g), (k2, w)) in got.iter().zip(want) {
        assert_eq!(k, k2);
        assert_eq!(g.len(), w.len(), "{what}: {k}: one run has no gradient");
        if g.iter().zip(w).any(|(a, b)| a.to_bits() != b.to_bits()) {
            let d = g
                .iter()
                .zip(w)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            panic!("{what}: {k} differs from the uncheckpointed run (max |Δ| {d:e})");
        }
    }
}

#[test]
fn checkpointed_gradients_are_bit_identical_for_every_tiny_preset() {
    let Some(_) = gpu_or_skip() else { return };
    for p in tubelet_models::presets().into_iter().filter(|p| p.tiny) {
        // A fresh model per run: the models draw their dropout/drop-path seeds from a per-model
        // step counter, so each run's forward uses the same masks.
        let (want_g, want_b) = step(
            (p.build)(&tubelet_models::BuildOptions::seed(3))
                .unwrap()
                .as_ref(),
            2,
            Checkpointing::None,
        );
        assert!(
            want_g.iter().any(|(_, g)| g.iter().any(|&v| v != 0.0)),
            "{}: no gradient at all",
            p.name
        );
        for mode in [Checkpointing::Blocks, Checkpointing::Stages] {
            let (g, b) = step(
                (p.build)(&tubelet_models::BuildOptions::seed(3))
                    .unwrap()
                    .as_ref(),
                2,
                mode,
            );
            assert_bits(&format!("{} --checkpoint {mode}", p.name), &g, &want_g);
            // BatchNorm models: running statistics updated once, not again by the recompute.
            assert_bits(
                &format!("{} --checkpoint {mode} buffers", p.name),
                &b,
                &want_b,
            );
        }
    }
}

#[test]
fn swin_with_drop_path_and_head_dropout_replays_the_same_masks() {
    let Some(_) = gpu_or_skip() else { return };
    use tubelet_models::video_swin::{Config, VideoSwin};
    let config = Config {
        drop_path_rate: 0.5,
        head_dropout: 0.5,
        ..Config::tiny(8)
    };
    let build = || VideoSwin::new(config.clone(), 5).unwrap();
    // Batch 4: with p = 0.5 some samples' branches are dropped and some kept.
    let (want, _) = step(&build(), 4, Checkpointing::None);
    for mode in [Checkpointing::Blocks, Checkpointing::Stages] {
        let (got, _) = step(&build(), 4, mode);
        assert_bits(
            &format!("swin-tiny drop path 0.5 --checkpoint {mode}"),
            &got,
            &want,
        );
    }
    // The masks matter: another step's seeds give other gradients.
    let m = build();
    let _ = step(&m, 4, Checkpointing::None);
    let (other, _) = step(&m, 4, Checkpointing::None);
    assert!(
        other.iter().zip(&want).any(|((_, a), (_, b))| a != b),
        "drop path had no effect"
    );
}

#[test]
fn a_segment_that_draws_seeds_from_a_counter_replays_its_forward_masks() {
    let Some(_) = gpu_or_skip() else { return };
    // The segment asks a counter for a new seed each call, as models/src/blocks.rs's residual
    // does: the recompute would draw other masks, unless the checkpoint replays the forward's.
    let counter = Arc::new(AtomicU64::new(11));
    let w = Tensor::randn(&[16, 16], 0.0, 0.3, 1).unwrap().param();
    let segment = {
        let (counter, w) = (counter.clone(), w.clone());
        move |xs: &[Tensor]| {
            let s = counter.fetch_add(1, Ordering::Relaxed);
            let h = xs[0].try_matmul(&w)?.try_gelu()?.try_dropout(0.4, s)?;
            xs[0].try_add(&h.try_drop_path(0.5, s ^ 0xabc)?)
        }
    };
    let x = Tensor::randn(&[8, 16], 0.0, 1.0, 2).unwrap().param();
    let cot = Tensor::randn(&[8, 16], 0.0, 1.0, 3).unwrap();
    let run = |checkpointed: bool| {
        counter.store(11, Ordering::Relaxed);
        let y = if checkpointed {
            checkpoint(&[&x], segment.clone()).unwrap()
        } else {
            segment(std::slice::from_ref(&x)).unwrap()
        };
        let g = y.try_mul(&cot).unwrap().sum_all().backward().unwrap();
        (
            y.to_vec().unwrap(),
            g.get(&x).unwrap().to_vec().unwrap(),
            g.get(&w).unwrap().to_vec().unwrap(),
        )
    };
    let plain = run(false);
    let ckpt = run(true);
    assert_eq!(
        counter.load(Ordering::Relaxed),
        13,
        "the checkpointed segment ran twice (forward, recompute)"
    );
    assert_eq!(ckpt, plain, "output, dx and dw must be bit-identical");
    // The seed the recompute would have drawn (12) gives other masks: the replay is what made
    // the gradients equal.
    counter.store(12, Ordering::Relaxed);
    let other = segment(std::slice::from_ref(&x)).unwrap().to_vec().unwrap();
    assert_ne!(
        other, plain.0,
        "the masks do not depend on the seed: the test would not see a replay"
    );
}

#[test]
fn checkpointing_outside_a_tape_runs_the_segment_plainly_and_modes_parse() {
    let Some(_) = gpu_or_skip() else { return };
    let x = Tensor::randn(&[4, 8], 0.0, 1.0, 4).unwrap();
    // No input needs a gradient: no node, the plain result.
    let y = checkpoint(&[&x], |xs: &[Tensor]| xs[0].try_gelu()).unwrap();
    assert!(!y.requires_grad());
    assert_eq!(y.to_vec().unwrap(), x.gelu().to_vec().unwrap());
    assert_eq!(
        "blocks".parse::<Checkpointing>().unwrap(),
        Checkpointing::Blocks
    );
    assert_eq!(
        "stages".parse::<Checkpointing>().unwrap(),
        Checkpointing::Stages
    );
    assert_eq!(
        "none".parse::<Checkpointing>().unwrap(),
        Checkpointing::None
    );
    let err = "layers".parse::<Checkpointing>().unwrap_err().to_string();
    assert!(
        err.contains("\"layers\"") && err.contains("blocks"),
        "{err}"
    );
    assert!(!checkpoint::is_recomputing());
}

/// Gradients of `model` on clips `first..first + b` with the mean loss scaled by `scale`.
fn grads_of(model: &dyn VideoModel, first: u64, b: usize, scale: f32) -> Grads {
    let (x, y) = render(0, model.clip(), Split::Train, first, b);
    let x = model_input(model, &x, b).unwrap();
    let labels = Indices::from_slice(&y).unwrap();
    model
        .forward(&x, true)
        .unwrap()
        .cross_entropy(&labels)
        .try_mul_scalar(scale)
        .unwrap()
        .backward()
        .unwrap()
}

#[test]
fn accumulating_k_micro_batches_gives_the_update_of_one_k_times_larger_batch() {
    let Some(_) = gpu_or_skip() else { return };
    // ViViT: no BatchNorm, no dropout or drop path, so K micro-batches of B clips and one batch
    // of K·B see the same function. (BatchNorm models normalise per micro-batch, as in PyTorch.)
    // The gradients differ by f32 rounding only (sums in another order). AdamW divides each
    // element by its running RMS, so an element whose gradient nearly cancels over the batch
    // turns that rounding into up to lr × its relative error: at lr 1e-3 the second update
    // differed by 2.4e-6 on `embedding/kernel`, at lr 1e-4 (a fine-tuning rate) the updates stay
    // within 1e-6 (the first update, ±lr per element, stays within 1e-6 at any rate).
    const K: usize = 3;
    const B: usize = 2;
    let config = AdamWConfig {
        lr: 1e-4,
        ..Default::default()
    };
    let large =
        tubelet_models::build("vivit-tiny", &tubelet_models::BuildOptions::seed(9)).unwrap();
    let small =
        tubelet_models::build("vivit-tiny", &tubelet_models::BuildOptions::seed(9)).unwrap();
    let mut opt_large = AdamW::new(large.named_params(), config).unwrap();
    let mut opt_small = AdamW::new(small.named_params(), config).unwrap();
    for step in 0..3u64 {
        let first = step * (K * B) as u64;
        let g_large = grads_of(large.as_ref(), first, K * B, 1.0);
        let mut acc = Grads::default();
        for k in 0..K {
            acc.accumulate(grads_of(
                small.as_ref(),
                first + (k * B) as u64,
                B,
                1.0 / K as f32,
            ))
            .unwrap();
        }
        assert_eq!(acc.len(), g_large.len());
        for ((name, a), (_, b)) in small.named_params().iter().zip(large.named_params().iter()) {
            let (ga, gb) = (
                acc.get(a).unwrap().to_vec().unwrap(),
                g_large.get(b).unwrap().to_vec().unwrap(),
            );
            let d = ga
                .iter()
                .zip(&gb)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            let m = gb.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
            assert!(
                d <= 1e-5 * m.max(1e-3),
                "step {step}: {name}: accumulated gradient off by {d:e} (max |g| {m:e})"
            );
        }
        opt_large.step(&g_large).unwrap();
        opt_small.step(&acc).unwrap();
        for ((name, a), (_, b)) in small.named_params().iter().zip(large.named_params().iter()) {
            let (wa, wb) = (a.to_vec().unwrap(), b.to_vec().unwrap());
            let d = wa
                .iter()
                .zip(&wb)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(
                d <= 1e-6,
                "step {step}: {name}: weights differ by {d:e} after the update"
            );
        }
    }
}

#[test]
fn grads_scale_and_accumulate_add_tensor_by_tensor() {
    let Some(_) = gpu_or_skip() else { return };
    let a = Tensor::from_slice(&[1.0, 2.0], &[2]).unwrap().param();
    let b = Tensor::from_slice(&[3.0], &[1]).unwrap().param();
    let mut acc = a.try_mul_scalar(2.0).unwrap().sum_all().backward().unwrap(); // da = 2
    acc.accumulate(
        a.try_add(&b.try_broadcast_to(&[2]).unwrap())
            .unwrap()
            .sum_all()
            .backward()
            .unwrap(),
    )
    .unwrap(); // da += 1, db = 2
    acc.scale(0.5).unwrap();
    assert_eq!(acc.get(&a).unwrap().to_vec().unwrap(), vec![1.5, 1.5]);
    assert_eq!(acc.get(&b).unwrap().to_vec().unwrap(), vec![1.0]);
}
