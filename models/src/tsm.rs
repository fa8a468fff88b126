//! TSM: Temporal Shift Module for Efficient Video Understanding — Lin, Gan, Han (ICCV 2019),
//! arXiv:1811.08383.
//!
//! Implemented: TSM-ResNet50, offline (bi-directional) residual shift (`shift_place='blockres'`,
//! `shift_div=8`, paper §3, Fig. 3b), 8 segments, K400 (seed-models.md §4), and a narrow tiny
//! ResNet for the synthetic set; plus the online (uni-directional) variant of §4 run frame by
//! frame with a per-block cache ([`Tsm::online_step`]).
//! Backbone: torchvision ResNet-50 v1.5 (the stride sits on the 3×3 conv2), BatchNorm eps 1e-5.
//! Every Bottleneck's conv1 sees the shifted input; the shortcut sees the unshifted one.
//! Head: global average pool, `new_fc` on each frame, then the segmental consensus: the mean of
//! the frames' logits (`SegmentConsensus('avg')`, `before_softmax=True`).
//! Reference implementation: mit-han-lab/temporal-shift-module @1f6a834, `ops/models.py` (TSN),
//! `ops/temporal_shift.py`, `online_demo/mobilenet_v2_tsm.py`; parameter and buffer names are its
//! checkpoint keys after stripping `module.` (`base_model.layer1.0.conv1.net.weight`, `new_fc.*`).
//!
//! Deviations: none in the offline computation. Input (B·T, 3, H, W) as the official `TSN` takes
//! it after its view. Dropout before `new_fc` (0.5 in the official recipe) is applied in training
//! with a per-forward seed; the tiny preset uses 0. The online variant has no official ResNet
//! code: the shift rule of the MobileNetV2 demo (channels [0, C/8) from the previous frame's
//! cache, zero for the first frame) is applied inside every Bottleneck's conv1 branch, as the
//! paper describes; offline weights are not drop-in for it (seed-models.md §4.1).

use std::sync::atomic::{AtomicU64, Ordering};

use tubelet::nn::{Init, Linear};
use tubelet::{Error, Result, Tensor};

use crate::blocks::BatchNorm;
use crate::TINY_CLASSES as NUM_CLASSES;
use crate::{BuildOptions, InputLayout, Preset, VideoModel};

/// TSM-ResNet configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Frames per video (`num_segments`), and their size.
    pub n_segment: usize,
    pub height: usize,
    pub width: usize,
    /// Channels of the 7×7 stem.
    pub stem: usize,
    /// Bottleneck widths of layer1..4 (the 3×3 conv's channels); outputs are `expansion`×.
    pub widths: [usize; 4],
    /// Bottlenecks per layer.
    pub blocks: [usize; 4],
    pub expansion: usize,
    /// 1/fold_div of the channels shift each way (`shift_div`).
    pub fold_div: usize,
    /// Dropout before `new_fc` in training.
    pub dropout: f32,
    pub num_classes: usize,
}

impl Config {
    /// TSM-ResNet50, 8 segments, K400 (TSM `scripts/train_tsm_kinetics_rgb_8f.sh`: resnet50,
    /// shift_div 8, blockres, dropout 0.5).
    pub fn tsm_r50() -> Config {
        Config {
            n_segment: 8,
            height: 224,
            width: 224,
            stem: 64,
            widths: [64, 128, 256, 512],
            blocks: [3, 4, 6, 3],
            expansion: 4,
            fold_div: 8,
            dropout: 0.5,
            num_classes: 400,
        }
    }

    /// A narrow ResNet for the synthetic set: 8 segments of 32², stem 8, widths 8/16/32/64, one
    /// Bottleneck per layer, no dropout.
    pub fn tiny(num_classes: usize) -> Config {
        Config {
            n_segment: 8,
            height: 32,
            width: 32,
            stem: 8,
            widths: [8, 16, 32, 64],
            blocks: [1, 1, 1, 1],
            expansion: 4,
            fold_div: 8,
            dropout: 0.0,
            num_classes,
        }
    }

    /// (in, width, stride) of every Bottleneck, layer by layer.
    fn bottlenecks(&self) -> Vec<Vec<(usize, usize, usize)>> {
        let mut cin = self.stem;
        (0..4)
            .map(|l| {
                (0..self.blocks[l])
                    .map(|i| {
                        let stride = if l > 0 && i == 0 { 2 } else { 1 };
                        let b = (cin, self.widths[l], stride);
                        cin = self.widths[l] * self.expansion;
                        b
                    })
                    .collect()
            })
            .collect()
    }

    /// Whether block i of a layer is shifted: all of them, but every other one when layer3 has
    /// ≥ 23 blocks (ResNet-101 and deeper, `n_round = 2` in `make_temporal_shift`).
    fn shifted(&self, i: usize) -> bool {
        let n_round = if self.blocks[2] >= 23 { 2 } else { 1 };
        i.is_multiple_of(n_round)
    }

    /// Features out of layer4.
    pub fn feature_dim(&self) -> usize {
        self.widths[3] * self.expansion
    }

    /// Parameters, counted from the config (ResNet without `fc`, plus `new_fc`).
    pub fn num_params(&self) -> usize {
        let bn = |c: usize| 2 * c;
        let e = self.expansion;
        let mut n = 3 * self.stem * 49 + bn(self.stem);
        for layer in self.bottlenecks() {
            for (cin, w, stride) in layer {
                n += cin * w + bn(w) + w * w * 9 + bn(w) + w * w * e + bn(w * e);
                if stride != 1 || cin != w * e {
                    n += cin * w * e + bn(w * e);
                }
            }
        }
        n + self.feature_dim() * self.num_classes + self.num_classes
    }

    /// Multiply-accumulates of one frame (convs and `new_fc`); a clip costs n_segment times this.
    pub fn macs_per_frame(&self) -> f64 {
        let out = |x: usize, k: usize, s: usize, p: usize| (x + 2 * p - k) / s + 1;
        let (mut h, mut w) = (out(self.height, 7, 2, 3), out(self.width, 7, 2, 3));
        let mut macs = (h * w * self.stem * 3 * 49) as f64;
        (h, w) = (out(h, 3, 2, 1), out(w, 3, 2, 1)); // max pool
        let e = self.expansion;
        for layer in self.bottlenecks() {
            for (cin, c, stride) in layer {
                let (ho, wo) = (out(h, 3, stride, 1), out(w, 3, stride, 1));
                macs += (h * w * cin * c) as f64
                    + (ho * wo * c * c * 9) as f64
                    + (ho * wo * c * c * e) as f64;
                if stride != 1 || cin != c * e {
                    macs += (ho * wo * cin * c * e) as f64;
                }
                (h, w) = (ho, wo);
            }
        }
        macs + (self.feature_dim() * self.num_classes) as f64
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Config(format!("TSM config: {what}")));
        if self.n_segment == 0 || self.height < 32 || self.width < 32 {
            return bad(format!(
                "{} segments of {}×{}: need ≥ 1 segment of at least 32×32 (the ResNet downsamples 32×)",
                self.n_segment, self.height, self.width
            ));
        }
        if self.stem == 0
            || self.widths.contains(&0)
            || self.blocks.contains(&0)
            || self.expansion == 0
        {
            return bad(format!(
                "stem {}, widths {:?}, blocks {:?}, expansion {} must be positive",
                self.stem, self.widths, self.blocks, self.expansion
            ));
        }
        if self.fold_div == 0 || self.num_classes == 0 || !(0.0..1.0).contains(&self.dropout) {
            return bad(format!(
                "fold_div {}, classes {} must be ≥ 1 and dropout {} in [0, 1)",
                self.fold_div, self.num_classes, self.dropout
            ));
        }
        Ok(())
    }
}

/// A bias-free Conv2d weight (COUT, CIN, K, K), torchvision init: Kaiming normal, fan_out, ReLU.
fn conv_weight(init: &mut Init, cout: usize, cin: usize, k: usize) -> Result<Tensor> {
    init.normal(&[cout, cin, k, k], (2.0 / (cout * k * k) as f32).sqrt())
}

/// The online, uni-directional shift of one frame x (B, C, H, W): channels [0, C/fold_div) come
/// from the previous frame (`cache`, (B, C/fold_div, H, W), zeros before the first frame), the
/// rest from this one. Returns (shifted input, the cache for the next frame) — the official
/// demo's `cat((shift_buffer, x[:, C//8:]), 1), x[:, :C//8]`.
pub fn online_shift(x: &Tensor, cache: &Tensor, fold_div: usize) -> Result<(Tensor, Tensor)> {
    let fold = x.dim(1) / fold_div.max(1);
    let want = [x.dim(0), fold, x.dim(2), x.dim(3)];
    if fold > 0 && cache.shape() != want {
        return Err(Error::Shape(format!(
            "online_shift: cache {:?} for a frame {:?}, expected {want:?}",
            cache.shape(),
            x.shape()
        )));
    }
    // engine/src/ops/temporal_shift_online.rs: one kernel, gradients to x and to the cache.
    x.try_temporal_shift_online(if fold > 0 { Some(cache) } else { None }, fold_div)
}

/// torchvision `Bottleneck` (expansion 4, v1.5), with TSM's shift on conv1's input:
///   out = ReLU(bn3(conv3(ReLU(bn2(conv2(ReLU(bn1(conv1(shift(x)))))))) + shortcut(x))
#[derive(Clone)]
pub struct Bottleneck {
    /// `conv1.net.weight` when shifted (TemporalShift wraps the conv as `.net`).
    pub conv1: Tensor,
    pub bn1: BatchNorm,
    pub conv2: Tensor,
    pub bn2: BatchNorm,
    pub conv3: Tensor,
    pub bn3: BatchNorm,
    /// `downsample.0` (1×1 conv, stride) and `downsample.1` (BN).
    pub downsample: Option<(Tensor, BatchNorm)>,
    pub stride: usize,
    pub shifted: bool,
}

impl Bottleneck {
    fn new(
        init: &mut Init,
        cin: usize,
        c: usize,
        expansion: usize,
        stride: usize,
        shifted: bool,
    ) -> Result<Bottleneck> {
        let downsample = if stride != 1 || cin != c * expansion {
            Some((
                conv_weight(init, c * expansion, cin, 1)?,
                BatchNorm::new(init, c * expansion)?,
            ))
        } else {
            None
        };
        Ok(Bottleneck {
            conv1: conv_weight(init, c, cin, 1)?,
            bn1: BatchNorm::new(init, c)?,
            conv2: conv_weight(init, c, c, 3)?,
            bn2: BatchNorm::new(init, c)?,
            conv3: conv_weight(init, c * expansion, c, 1)?,
            bn3: BatchNorm::new(init, c * expansion)?,
            downsample,
            stride,
            shifted,
        })
    }

    /// x (B·T, CIN, H, W) and its shifted copy (the same tensor when the block is not shifted)
    /// -> (B·T, C·4, H/stride, W/stride).
    pub fn forward(&self, x: &Tensor, shifted: &Tensor, train: bool) -> Result<Tensor> {
        let s = self.stride;
        let out = self
            .bn1
            .forward(
                &shifted.try_conv2d(&self.conv1, None, [1, 1], [0, 0], 1)?,
                train,
            )?
            .try_relu()?;
        let out = self
            .bn2
            .forward(
                &out.try_conv2d(&self.conv2, None, [s, s], [1, 1], 1)?,
                train,
            )?
            .try_relu()?;
        let out = self.bn3.forward(
            &out.try_conv2d(&self.conv3, None, [1, 1], [0, 0], 1)?,
            train,
        )?;
        let identity = match &self.downsample {
            Some((w, bn)) => bn.forward(&x.try_conv2d(w, None, [s, s], [0, 0], 1)?, train)?,
            None => x.clone(),
        };
        out.try_add(&identity)?.try_relu()
    }

    fn params(&self, p: &str, out: &mut Vec<(String, Tensor)>) {
        let conv1 = if self.shifted {
            format!("{p}.conv1.net.weight")
        } else {
            format!("{p}.conv1.weight")
        };
        out.push((conv1, self.conv1.clone()));
        self.bn1.params(&format!("{p}.bn1"), out);
        out.push((format!("{p}.conv2.weight"), self.conv2.clone()));
        self.bn2.params(&format!("{p}.bn2"), out);
        out.push((format!("{p}.conv3.weight"), self.conv3.clone()));
        self.bn3.params(&format!("{p}.bn3"), out);
        if let Some((w, bn)) = &self.downsample {
            out.push((format!("{p}.downsample.0.weight"), w.clone()));
            bn.params(&format!("{p}.downsample.1"), out);
        }
    }

    fn buffers(&self, p: &str, out: &mut Vec<(String, Tensor)>) {
        self.bn1.buffers(&format!("{p}.bn1"), out);
        self.bn2.buffers(&format!("{p}.bn2"), out);
        self.bn3.buffers(&format!("{p}.bn3"), out);
        if let Some((_, bn)) = &self.downsample {
            bn.buffers(&format!("{p}.downsample.1"), out);
        }
    }
}

/// Per-block frame caches of the online model: (B, C/fold_div, H, W) for every shifted block,
/// in block order; empty before the first frame (zeros are made on first use).
#[derive(Default)]
pub struct OnlineState {
    pub caches: Vec<Tensor>,
}

/// TSM-ResNet video classifier (`TSN` with `is_shift=True`).
pub struct Tsm {
    pub config: Config,
    /// `base_model.conv1` (7×7/2, p3, no bias) and `base_model.bn1`.
    pub conv1: Tensor,
    pub bn1: BatchNorm,
    /// `base_model.layer1` .. `layer4`.
    pub layers: [Vec<Bottleneck>; 4],
    pub new_fc: Linear,
    /// Counts training forwards: the dropout mask's seed.
    step: AtomicU64,
    seed: u64,
}

impl Tsm {
    pub fn new(config: Config, seed: u64) -> Result<Tsm> {
        config.validate()?;
        let mut init = Init::new(seed);
        let conv1 = conv_weight(&mut init, config.stem, 3, 7)?;
        let bn1 = BatchNorm::new(&mut init, config.stem)?;
        let mut layers: [Vec<Bottleneck>; 4] = Default::default();
        for (l, specs) in config.bottlenecks().into_iter().enumerate() {
            for (i, (cin, c, stride)) in specs.into_iter().enumerate() {
                layers[l].push(Bottleneck::new(
                    &mut init,
                    cin,
                    c,
                    config.expansion,
                    stride,
                    config.shifted(i),
                )?);
            }
        }
        // TSN._prepare_tsn: new_fc weight N(0, 0.001), bias 0.
        let new_fc = Linear {
            weight: init.normal(&[config.num_classes, config.feature_dim()], 0.001)?,
            bias: Some(init.constant(&[config.num_classes], 0.0)?),
        };
        Ok(Tsm {
            config,
            conv1,
            bn1,
            layers,
            new_fc,
            step: AtomicU64::new(0),
            seed,
        })
    }

    /// Stem: conv1 7×7/2 p3 → bn1 → ReLU → max pool 3/2 p1. (N, 3, H, W) -> (N, stem, H/4, W/4)
    fn stem(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self
            .bn1
            .forward(&x.try_conv2d(&self.conv1, None, [2, 2], [3, 3], 1)?, train)?
            .try_relu()?;
        y.try_max_pool2d([3, 3], [2, 2], [1, 1])
    }

    /// Per-frame logits (N, classes) from layer4's features: global average pool, (dropout), new_fc.
    fn head(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut f = x.try_mean(&[2, 3], false)?; // (N, 2048)
        if train && self.config.dropout > 0.0 {
            let step = self.step.fetch_add(1, Ordering::Relaxed);
            f = f.try_dropout(
                self.config.dropout,
                self.seed.wrapping_mul(0x9E37_79B9).wrapping_add(step),
            )?;
        }
        self.new_fc.forward(&f)
    }

    /// x (B·T, 3, H, W), T = n_segment frames per video contiguous -> logits (B, classes), the
    /// mean of the frames' logits.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = &self.config;
        if x.rank() != 4
            || x.shape()[1..] != [3, c.height, c.width]
            || !x.dim(0).is_multiple_of(c.n_segment)
            || x.dim(0) == 0
        {
            return Err(Error::Shape(format!(
                "TSM: input of shape {:?}, expected (B·{}, 3, {}, {}) with B ≥ 1",
                x.shape(),
                c.n_segment,
                c.height,
                c.width
            )));
        }
        let b = x.dim(0) / c.n_segment;
        let mut x = self.stem(x, train)?;
        let (n_segment, fold_div) = (c.n_segment, c.fold_div);
        for layer in &self.layers {
            // Checkpoint segments: a stage is a ResNet layer, a block a Bottleneck.
            x = crate::blocks::stage(&x, layer, move |blk, _, x| {
                // Residual shift: conv1 sees the shifted x, the shortcut the unshifted one.
                let shifted = if blk.shifted {
                    x.try_temporal_shift(n_segment, fold_div)?
                } else {
                    x.clone()
                };
                blk.forward(x, &shifted, train)
            })?;
        }
        let logits = self.head(&x, train)?; // (B·T, classes)
        logits
            .try_reshape(&[b, c.n_segment, c.num_classes])?
            .try_mean(&[1], false) // consensus 'avg'
    }

    /// Online inference (eval mode): one frame (B, 3, H, W) -> that frame's logits (B, classes).
    /// Each shifted block takes channels [0, C/fold_div) of its conv1 input from the previous
    /// frame held in `state`, and leaves this frame's in it.
    pub fn online_step(&self, frame: &Tensor, state: &mut OnlineState) -> Result<Tensor> {
        let c = &self.config;
        if frame.rank() != 4 || frame.shape()[1..] != [3, c.height, c.width] {
            return Err(Error::Shape(format!(
                "TSM online: frame of shape {:?}, expected (B, 3, {}, {})",
                frame.shape(),
                c.height,
                c.width
            )));
        }
        let mut x = self.stem(frame, false)?;
        let mut k = 0;
        for layer in &self.layers {
            for blk in layer {
                let shifted = if blk.shifted {
                    let fold = x.dim(1) / c.fold_div;
                    if state.caches.len() == k {
                        state.caches.push(Tensor::try_full(
                            &[x.dim(0), fold, x.dim(2), x.dim(3)],
                            0.0,
                        )?);
                    }
                    let (shifted, cache) = online_shift(&x, &state.caches[k], c.fold_div)?;
                    state.caches[k] = cache;
                    k += 1;
                    shifted
                } else {
                    x.clone()
                };
                x = blk.forward(&x, &shifted, false)?;
            }
        }
        self.head(&x, false)
    }

    /// Online inference over a clip (B·T, 3, H, W) taken frame by frame: (B, T, classes).
    pub fn online_clip(&self, x: &Tensor, state: &mut OnlineState) -> Result<Tensor> {
        let t = self.config.n_segment;
        if x.rank() != 4 || !x.dim(0).is_multiple_of(t) {
            return Err(Error::Shape(format!(
                "TSM online: clip of shape {:?}, expected (B·{t}, 3, H, W)",
                x.shape()
            )));
        }
        let b = x.dim(0) / t;
        let s = x.shape().to_vec();
        let v = x.try_reshape(&[b, t, s[1], s[2], s[3]])?;
        let mut out = Vec::with_capacity(t);
        for i in 0..t {
            let logits = self.online_step(&v.try_select(1, i)?, state)?; // (B, classes)
            out.push(logits.try_reshape(&[b, 1, self.config.num_classes])?);
        }
        Tensor::try_cat(&out.iter().collect::<Vec<_>>(), 1)
    }

    pub fn named_params(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("base_model.conv1.weight".to_string(), self.conv1.clone())];
        self.bn1.params("base_model.bn1", &mut out);
        for (l, layer) in self.layers.iter().enumerate() {
            for (i, blk) in layer.iter().enumerate() {
                blk.params(&format!("base_model.layer{}.{i}", l + 1), &mut out);
            }
        }
        self.new_fc.params("new_fc", &mut out);
        out
    }

    pub fn named_buffers(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.bn1.buffers("base_model.bn1", &mut out);
        for (l, layer) in self.layers.iter().enumerate() {
            for (i, blk) in layer.iter().enumerate() {
                blk.buffers(&format!("base_model.layer{}.{i}", l + 1), &mut out);
            }
        }
        out
    }
}

impl VideoModel for Tsm {
    fn clip(&self) -> [usize; 3] {
        [self.config.n_segment, self.config.height, self.config.width]
    }

    fn num_classes(&self) -> usize {
        self.config.num_classes
    }

    fn input_layout(&self) -> InputLayout {
        InputLayout::BtChw
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Tsm::forward(self, x, train)
    }

    fn named_params(&self) -> Vec<(String, Tensor)> {
        Tsm::named_params(self)
    }

    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        Tsm::named_buffers(self)
    }

    fn rng_counters(&self) -> Vec<(String, u64)> {
        vec![("step".into(), self.step.load(Ordering::Relaxed))]
    }

    fn set_rng_counters(&self, counters: &[(String, u64)]) -> Result<()> {
        crate::set_counters(
            "TSM",
            counters,
            &[("step", &|v| self.step.store(v, Ordering::Relaxed))],
        )
    }
}

/// A preset's config at the options' class count, clip and drop-path rate (checked by the
/// model's own `Config::validate` when built).
fn configure(mut c: Config, o: &BuildOptions) -> Result<Config> {
    c.num_classes = o.classes(c.num_classes)?;
    let [t, h, w] = o.clip_or([c.n_segment, c.height, c.width])?;
    (c.n_segment, c.height, c.width) = (t, h, w);
    o.no_drop_path("TSM")?;
    Ok(c)
}

fn preset(
    name: &'static str,
    description: &'static str,
    config: Config,
    tiny: bool,
    build: fn(&BuildOptions) -> Result<Box<dyn VideoModel>>,
) -> Preset {
    Preset {
        name,
        description,
        params: config.num_params(),
        gmacs: config.macs_per_frame() * config.n_segment as f64 / 1e9,
        clip: [config.n_segment, config.height, config.width],
        tiny,
        num_classes: config.num_classes,
        build,
    }
}

/// TSM presets.
pub fn presets() -> Vec<Preset> {
    vec![
        preset(
            "tsm-r50",
            "TSM-ResNet50 8 segments, K400 (TSM scripts/train_tsm_kinetics_rgb_8f.sh)",
            Config::tsm_r50(),
            false,
            |o| {
                Ok(Box::new(Tsm::new(
                    configure(Config::tsm_r50(), o)?,
                    o.seed,
                )?))
            },
        ),
        preset(
            "tsm-tiny",
            "TSM, tiny ResNet: 8x32x32, stem 8, widths 8/16/32/64, one block per layer",
            Config::tiny(NUM_CLASSES),
            true,
            |o| {
                Ok(Box::new(Tsm::new(
                    configure(Config::tiny(NUM_CLASSES), o)?,
                    o.seed,
                )?))
            },
        ),
    ]
}
