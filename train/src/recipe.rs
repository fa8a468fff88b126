//! The papers' official training recipes, one per architecture family, with where each value
//! comes from; `tubelet models --recipe NAME` prints them and `tubelet train` starts from them
//! (its flags override any field).
//!
//! Sources (read from the official repositories; paths relative to each):
//! - Video Swin: open-mmlab/mmaction2 `configs/recognition/swin/swin-{tiny,small,base}_p244-w877-
//!   in1k-pre_8xb8-amp-32x2x1-30e_kinetics400-rgb.py` (the mmaction2 port of the Video Swin
//!   repository's configs) and `_base_/models/swin/swin_*.py`.
//! - TSM: mit-han-lab/temporal-shift-module `scripts/train_tsm_kinetics_rgb_8f.sh` (K400 from
//!   ImageNet) and `scripts/finetune_tsm_ucf101_rgb_8f.sh` (fine-tuning from K400), `main.py`.
//! - MViT / MViTv2: facebookresearch/SlowFast `configs/Kinetics/MVIT_B_16x4_CONV.yaml`,
//!   `MVITv2_S_16x4.yaml` (trained from scratch on K400; no fine-tuning config is published).
//! - TimeSformer: facebookresearch/TimeSformer `configs/Kinetics/TimeSformer_divST_8x32_224.yaml`
//!   (SlowFast defaults: `SOLVER.NESTEROV = True`, `DAMPENING = 0`).
//! - UniFormer: Sense-X/UniFormer `video_classification/exp/uniformer_s16x4_k400/config.yaml`;
//!   test views from its README (K400: 4 clips × 1 crop).
//! - ViViT: google-research/scenic `scenic/projects/vivit/configs/kinetics400/vivit_base_k400.py`.
//! - Tiny presets: tubelet's own synthetic-set recipe (what `tubelet train` always used).
//!
//! Batch sizes are the official totals over all GPUs; on one GPU the same total with a
//! proportionally smaller per-step batch changes the recipe (scale the lr linearly, or keep the
//! batch). Augmentations (RandAugment, random erasing, mixup/cutmix) are listed as the configs
//! have them; this trainer applies label smoothing and mixup/cutmix (mix.rs), not RandAugment
//! or random erasing (reported, not applied).

use serde_json::{json, Value};

use crate::metrics::ViewAverage;
use crate::optim::{OptimizerKind, ParamPolicy};
use crate::schedule::{Decay, LrSchedule, Schedule, Warmup};

/// Mixup / CutMix as timm's `Mixup` (SlowFast `MIXUP.*`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mixup {
    pub mixup_alpha: f32,
    pub cutmix_alpha: f32,
    pub prob: f32,
    pub switch_prob: f32,
}

/// How clips are drawn, as the config says (mmaction2 `SampleFrames(clip_len, frame_interval,
/// num_clips)` written `clip_len×interval×clips`, or TSN segments), and the test views.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingSpec {
    /// e.g. "32x2x1" (frames × interval × clips) or "8 segments".
    pub train: String,
    pub clip_len: usize,
    /// Frame interval; 0 for segment sampling (one frame per segment).
    pub frame_interval: usize,
    pub test_clips: usize,
    pub test_crops: usize,
    /// Side of the test crop and of the short-side resize before it.
    pub crop: usize,
    pub test_resize: usize,
}

/// Everything a recipe fixes.
#[derive(Clone, Debug, PartialEq)]
pub struct Recipe {
    /// Recipe name (`swin-t`, `tsm`, ...).
    pub name: String,
    /// Where the values come from (repository and file).
    pub source: String,
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub weight_decay: f64,
    pub policy: ParamPolicy,
    pub schedule: LrSchedule,
    pub epochs: usize,
    pub batch: usize,
    /// Stochastic depth rate of the backbone; None: the preset's own (its config file's value, or
    /// none where the model has no drop path).
    pub drop_path: Option<f32>,
    /// Dropout before the classifier.
    pub head_dropout: f32,
    pub label_smoothing: f32,
    pub mixup: Option<Mixup>,
    /// Max global L2 norm of the gradients; None: no clipping.
    pub grad_clip: Option<f32>,
    pub sampling: SamplingSpec,
    pub view_average: ViewAverage,
    /// Per-channel mean and std of pixels in [0, 255] (RGB).
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// What else the config does that this trainer does not (augmentations), and caveats.
    pub notes: String,
}

const IMAGENET_MEAN: [f32; 3] = [123.675, 116.28, 103.53];
const IMAGENET_STD: [f32; 3] = [58.395, 57.12, 57.375];
const SLOWFAST_MEAN: [f32; 3] = [114.75, 114.75, 114.75]; // DATA.MEAN 0.45 × 255
const SLOWFAST_STD: [f32; 3] = [57.375, 57.375, 57.375]; // DATA.STD 0.225 × 255

fn swin(name: &str, file: &str, wd: f64) -> Recipe {
    Recipe {
        name: name.into(),
        source: format!("open-mmlab/mmaction2 configs/recognition/swin/{file}"),
        optimizer: OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8 },
        lr: 1e-3,
        weight_decay: wd,
        policy: ParamPolicy::Keys(vec![
            ("absolute_pos_embed".into(), 1.0, 0.0),
            ("relative_position_bias_table".into(), 1.0, 0.0),
            ("norm".into(), 1.0, 0.0),
            ("backbone".into(), 0.1, 1.0),
        ]),
        schedule: LrSchedule::Paper(Schedule {
            base_lr: 1e-3,
            warmup: Warmup::Factor { epochs: 2.5, start_factor: 0.1 },
            decay: Decay::Cosine { end_lr: 0.0, by_epoch: true, after_warmup: false },
            total_epochs: 30.0,
        }),
        epochs: 30,
        batch: 64,
        drop_path: None,
        head_dropout: 0.5,
        label_smoothing: 0.0,
        mixup: None,
        grad_clip: None,
        sampling: SamplingSpec {
            train: "32x2x1".into(),
            clip_len: 32,
            frame_interval: 2,
            test_clips: 4,
            test_crops: 3,
            crop: 224,
            test_resize: 224,
        },
        view_average: ViewAverage::Prob,
        mean: IMAGENET_MEAN,
        std: IMAGENET_STD,
        notes: "train: Resize(-1, 256), RandomResizedCrop, Resize(224, 224), Flip 0.5; val: 1 clip, \
                CenterCrop 224 after Resize(-1, 256); test: 4 clips x ThreeCrop 224 after Resize(-1, 224); \
                8 GPUs x 8 clips, AMP; the backbone lr x0.1 assumes an ImageNet- or K400-pretrained backbone"
            .into(),
    }
}

fn slowfast_adamw(
    name: &str,
    source: &str,
    frames: usize,
    interval: usize,
    drop_path: f32,
    test_clips: usize,
    skip: Vec<String>,
    notes: &str,
) -> Recipe {
    Recipe {
        name: name.into(),
        source: source.into(),
        optimizer: OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8 },
        lr: 1e-4,
        weight_decay: 0.05,
        policy: ParamPolicy::ZeroWd1d { skip },
        schedule: LrSchedule::Paper(Schedule {
            base_lr: 1e-4,
            warmup: Warmup::FromLr { epochs: 30.0, start_lr: 1e-6 },
            decay: Decay::Cosine { end_lr: 1e-6, by_epoch: false, after_warmup: true },
            total_epochs: 200.0,
        }),
        epochs: 200,
        batch: if name.starts_with("uniformer") { 8 } else { 16 },
        drop_path: Some(drop_path),
        head_dropout: 0.5,
        label_smoothing: 0.1,
        mixup: Some(Mixup { mixup_alpha: 0.8, cutmix_alpha: 1.0, prob: 1.0, switch_prob: 0.5 }),
        grad_clip: if name.starts_with("uniformer") { None } else { Some(1.0) },
        sampling: SamplingSpec {
            train: format!("{frames}x{interval}x1"),
            clip_len: frames,
            frame_interval: interval,
            test_clips,
            test_crops: 1,
            crop: 224,
            test_resize: if name.starts_with("uniformer") { 256 } else { 224 },
        },
        view_average: ViewAverage::Prob,
        mean: SLOWFAST_MEAN,
        std: SLOWFAST_STD,
        notes: format!(
            "SOLVER.BASE_LR_SCALE_NUM_SHARDS; TRAIN.BATCH_SIZE is the total over 8 GPUs; RandAugment \
             rand-m7-n4-mstd0.5-inc1, random erasing 0.25, 2 repeated samples (AUG.NUM_SAMPLE), \
             random resized crop (0.08-1, aspect 3/4-4/3) (these not applied by this trainer); \
             mixup 0.8 / cutmix 1.0 (applied, train/src/mix.rs); {notes}"
        ),
    }
}

/// The recipe of preset `model` (a `tubelet models` name), or None for names it does not know.
pub fn for_model(model: &str) -> Option<Recipe> {
    let tiny = model.ends_with("-tiny");
    if tiny {
        return Some(synthetic(model));
    }
    let r = match model {
        "swin-t" => swin(model, "swin-tiny_p244-w877-in1k-pre_8xb8-amp-32x2x1-30e_kinetics400-rgb.py", 0.02),
        "swin-s" => swin(model, "swin-small_p244-w877-in1k-pre_8xb8-amp-32x2x1-30e_kinetics400-rgb.py", 0.02),
        "swin-b" => swin(model, "swin-base_p244-w877-in1k-pre_8xb8-amp-32x2x1-30e_kinetics400-rgb.py", 0.05),
        "swin-b-ssv2" | "swin-l" => {
            let mut r = swin(model, "swin-base_p244-w877-in1k-pre_8xb8-amp-32x2x1-30e_kinetics400-rgb.py", 0.05);
            r.notes = format!(
                "the Swin-B K400 recipe: this preset's own training config was not read; {}",
                r.notes
            );
            r
        }
        "tsm-r50" => Recipe {
            name: model.into(),
            source: "mit-han-lab/temporal-shift-module scripts/finetune_tsm_ucf101_rgb_8f.sh (fine-tuning from \
                     the K400 checkpoint; K400 from ImageNet: scripts/train_tsm_kinetics_rgb_8f.sh, lr 0.02, \
                     steps 20 40, 50 epochs, batch 128, wd 1e-4, dropout 0.5)"
                .into(),
            optimizer: OptimizerKind::Sgd { momentum: 0.9, nesterov: false, dampening: 0.0 },
            lr: 1e-3,
            weight_decay: 5e-4,
            policy: ParamPolicy::Tsm,
            schedule: LrSchedule::Paper(Schedule {
                base_lr: 1e-3,
                warmup: Warmup::None,
                decay: Decay::Steps { epochs: vec![10.0, 20.0], factors: vec![0.1, 0.01], by_epoch: true },
                total_epochs: 25.0,
            }),
            epochs: 25,
            batch: 64,
            drop_path: None,
            head_dropout: 0.8,
            label_smoothing: 0.0,
            mixup: None,
            grad_clip: Some(20.0),
            sampling: SamplingSpec {
                train: "8 segments".into(),
                clip_len: 8,
                frame_interval: 0,
                test_clips: 1,
                test_crops: 1,
                crop: 224,
                test_resize: 256,
            },
            view_average: ViewAverage::Score,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            notes: "main.py: --gd 20 (clip_grad_norm), momentum 0.9, weight decay 5e-4 (default); train: \
                    GroupMultiScaleCrop(224, [1, .875, .75, .66]) + flip; test (test_models.py): 8 segments, \
                    1 centre crop, scores averaged without softmax"
                .into(),
        },
        "timesformer-base" | "timesformer-hr" | "timesformer-l" | "timesformer-joint" | "timesformer-space-only"
        | "timesformer-lg" | "timesformer-axial" => Recipe {
            name: model.into(),
            source: "facebookresearch/TimeSformer configs/Kinetics/TimeSformer_divST_8x32_224.yaml".into(),
            optimizer: OptimizerKind::Sgd { momentum: 0.9, nesterov: true, dampening: 0.0 },
            lr: 5e-3,
            weight_decay: 1e-4,
            policy: ParamPolicy::All,
            schedule: LrSchedule::Paper(Schedule {
                base_lr: 5e-3,
                warmup: Warmup::None,
                decay: Decay::Steps { epochs: vec![0.0, 11.0, 14.0], factors: vec![1.0, 0.1, 0.01], by_epoch: false },
                total_epochs: 15.0,
            }),
            epochs: 15,
            batch: 8,
            drop_path: None,
            head_dropout: 0.5,
            label_smoothing: 0.0,
            mixup: None,
            grad_clip: None,
            sampling: SamplingSpec {
                train: "8x32x1".into(),
                clip_len: 8,
                frame_interval: 32,
                test_clips: 1,
                test_crops: 3,
                crop: 224,
                test_resize: 224,
            },
            view_average: ViewAverage::Prob,
            mean: SLOWFAST_MEAN,
            std: SLOWFAST_STD,
            notes: "steps_with_relative_lrs STEPS [0, 11, 14] LRS [1, 0.1, 0.01]; TRAIN.BATCH_SIZE 8 in all \
                    over 8 GPUs; the HR (16x16 448) and L (96x4) configs differ in sampling and crop; the \
                    head dropout is the config's MODEL.DROPOUT_RATE"
                .into(),
        },
        "mvit-b-16x4" | "mvit-b-32x3" => slowfast_adamw(
            model,
            "facebookresearch/SlowFast configs/Kinetics/MVIT_B_16x4_CONV.yaml",
            16,
            4,
            0.2,
            10,
            vec![],
            "test: TEST.NUM_ENSEMBLE_VIEWS 10 (SlowFast default) x 1 crop; MViT-B 32x3 uses the same solver",
        ),
        "mvitv2-s-16x4" | "mvitv2-b-32x3" | "mvitv2-l-40x3" => slowfast_adamw(
            model,
            "facebookresearch/SlowFast configs/Kinetics/MVITv2_S_16x4.yaml",
            16,
            4,
            0.2,
            5,
            vec![],
            "test: 5 clips x 1 crop; the B and L configs raise drop path (0.3, 0.75 in theirs)",
        ),
        "uniformer-s" | "uniformer-b" => slowfast_adamw(
            model,
            "Sense-X/UniFormer video_classification/exp/uniformer_s16x4_k400/config.yaml",
            16,
            4,
            0.1,
            4,
            vec!["pos_embed".into(), "cls_token".into()],
            "ImageNet-pretrained (PRETRAIN_NAME uniformer_small_in1k); test 4 clips x 1 crop at 256 (README)",
        ),
        "vivit-b-16x2" | "vivit-b-16x2-fe" | "vivit-l-16x2-fe" | "vivit-b-16x2-fsa" | "vivit-b-16x2-fdp" => Recipe {
            name: model.into(),
            source: "google-research/scenic scenic/projects/vivit/configs/kinetics400/vivit_base_k400.py".into(),
            optimizer: OptimizerKind::Sgd { momentum: 0.9, nesterov: false, dampening: 0.0 },
            lr: 0.1,
            weight_decay: 0.0,
            policy: ParamPolicy::All,
            schedule: LrSchedule::Paper(Schedule {
                base_lr: 0.1,
                warmup: Warmup::Factor { epochs: 2.5, start_factor: 0.0 },
                decay: Decay::Cosine { end_lr: 0.0, by_epoch: false, after_warmup: false },
                total_epochs: 30.0,
            }),
            epochs: 30,
            batch: 64,
            drop_path: None,
            head_dropout: 0.0,
            label_smoothing: 0.0,
            mixup: None,
            grad_clip: Some(1.0),
            sampling: SamplingSpec {
                train: "32x2x1".into(),
                clip_len: 32,
                frame_interval: 2,
                test_clips: 4,
                test_crops: 3,
                crop: 224,
                test_resize: 256,
            },
            view_average: ViewAverage::Prob,
            mean: [127.5, 127.5, 127.5],
            std: [127.5, 127.5, 127.5],
            notes: "optimizer 'momentum' (flax: v = 0.9 v + g, as PyTorch SGD without dampening); \
                    l2_decay_factor 0; ImageNet-21k-initialised; scale jitter 0.9-1.33, colour augment \
                    0.8; zero_centering (x/127.5 - 1); the FE/FSA/FDP and L configs share the solver"
                .into(),
        },
        _ => return None,
    };
    Some(r)
}

/// tubelet's recipe for the tiny presets on the synthetic set (what `tubelet train` always did):
/// AdamW 1e-3, weight decay 0.05 with the rank/name rule, 40 warm-up steps then cosine, 400
/// steps of 32 clips (one "epoch" of the endless synthetic set).
pub fn synthetic(model: &str) -> Recipe {
    Recipe {
        name: model.into(),
        source: "tubelet (the synthetic moving-shapes set; no paper)".into(),
        optimizer: OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8 },
        lr: 1e-3,
        weight_decay: 0.05,
        policy: ParamPolicy::Tubelet,
        schedule: LrSchedule::Synthetic { peak: 1e-3, warmup_steps: 40, total_steps: 400 },
        epochs: 1,
        batch: 32,
        drop_path: None,
        head_dropout: 0.0,
        label_smoothing: 0.0,
        mixup: None,
        grad_clip: None,
        sampling: SamplingSpec {
            train: "8 frames, rendered".into(),
            clip_len: 8,
            frame_interval: 1,
            test_clips: 1,
            test_crops: 1,
            crop: 32,
            test_resize: 32,
        },
        view_average: ViewAverage::Prob,
        mean: [127.5, 127.5, 127.5],
        std: [127.5, 127.5, 127.5],
        notes: "the no-argument `tubelet train` run: 400 steps x 32 clips, warm-up (s+1)/40 then cosine \
                to 0 (computed in f32); clips are values in about [-1, 1]"
            .into(),
    }
}

impl Recipe {
    /// The recipe as JSON (the run directory's config, `tubelet models --recipe NAME --json`).
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "source": self.source,
            "optimizer": self.optimizer.describe(),
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "param_policy": self.policy.describe(),
            "schedule": self.schedule.describe(),
            "epochs": self.epochs,
            "batch": self.batch,
            "drop_path": self.drop_path,
            "head_dropout": self.head_dropout,
            "label_smoothing": self.label_smoothing,
            "mixup": self.mixup.map(|m| json!({"mixup_alpha": m.mixup_alpha, "cutmix_alpha": m.cutmix_alpha,
                "prob": m.prob, "switch_prob": m.switch_prob})),
            "grad_clip": self.grad_clip,
            "sampling": {"train": self.sampling.train, "clip_len": self.sampling.clip_len,
                "frame_interval": self.sampling.frame_interval, "test_clips": self.sampling.test_clips,
                "test_crops": self.sampling.test_crops, "crop": self.sampling.crop,
                "test_resize": self.sampling.test_resize},
            "view_average": self.view_average.name(),
            "mean": self.mean,
            "std": self.std,
            "notes": self.notes,
        })
    }

    /// Human-readable lines for `tubelet models --recipe NAME`.
    pub fn describe(&self) -> String {
        let s = &self.sampling;
        let opt_or = |v: Option<f32>, none: &str| v.map_or(none.to_string(), |x| x.to_string());
        let mix = self.mixup.map_or("none".to_string(), |m| {
            format!(
                "mixup {} / cutmix {} (prob {}, switch {}), per batch as mmaction2's blendings",
                m.mixup_alpha, m.cutmix_alpha, m.prob, m.switch_prob
            )
        });
        [
            format!("recipe {}", self.name),
            format!("  source         {}", self.source),
            format!("  optimizer      {}", self.optimizer.describe()),
            format!("  lr             {:e}", self.lr),
            format!("  weight decay   {} ({})", self.weight_decay, self.policy.describe()),
            format!("  schedule       {}", self.schedule.describe()),
            format!("  epochs         {}", self.epochs),
            format!("  batch          {} (total)", self.batch),
            format!("  drop path      {}", opt_or(self.drop_path, "the preset's own")),
            format!("  head dropout   {}", self.head_dropout),
            format!("  label smooth   {}", self.label_smoothing),
            format!("  mixup/cutmix   {mix}"),
            format!("  grad clip      {}", opt_or(self.grad_clip, "none")),
            format!("  sampling       train {}; test {} clips x {} crops of {} (resize {}), views averaged by {}",
                s.train, s.test_clips, s.test_crops, s.crop, s.test_resize, self.view_average.name()),
            format!("  mean / std     {:?} / {:?} (0-255 RGB)", self.mean, self.std),
            format!("  notes          {}", self.notes),
        ]
        .join("\n")
    }
}
