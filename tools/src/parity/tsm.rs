//! Parity modules of TSM (mit-han-lab/temporal-shift-module, `ops/temporal_shift.py`,
//! `ops/models.py`).
//!
//! `tsm.TemporalShift` is the shift alone (`net` = identity): the constructor's `n_segment`
//! (default 3) and `n_div` (default 8) on x (N·T, C, H, W); `inplace` (default False) must be
//! False (the official in-place path raises NotImplementedError). No parameters.
//!
//! `tsm.TSN` is the whole model: `TSN(num_class, num_segments, modality, base_model=
//! 'resnet101', new_length=None, consensus_type='avg', before_softmax=True, dropout=0.8,
//! img_feature_dim=256, crop_num=1, partial_bn=True, print_spec=True, pretrain='imagenet',
//! is_shift=False, shift_div=8, shift_place='blockres', fc_lr5=False, temporal_pool=False,
//! non_local=False)` on x (B, T·3, H, W) (or (B·T, 3, H, W): the official forward views either
//! as frames), output (B, num_class). Keys are TSN's state_dict keys: `base_model.*` and
//! `new_fc.*` when dropout > 0; with dropout 0 TSN puts the classifier in `base_model.fc.*`.
//! `base_model` is a torchvision name, "resnet50", "resnet101" or "resnet152" (the Bottleneck
//! ResNets), or — for test vectors, not an official value — a narrow torchvision ResNet
//! `{"inplanes": stem width, "planes": [4 stage widths], "layers": [4 block counts]}`
//! (`gen_parity_models.py` says how it is built). The port covers modality "RGB",
//! shift_place "blockres" (with `is_shift` either way), the 'avg' consensus before softmax, no
//! temporal pool or non-local blocks. `train: true` uses BatchNorm batch statistics; it needs
//! `partial_bn` false (the official TSN freezes every BatchNorm but the first in training
//! otherwise; the TSM recipe trains with `--npb`) and dropout 0 (random).
//! `img_feature_dim`, `crop_num`, `print_spec`, `pretrain` and `fc_lr5` don't change the
//! computation and are accepted as given.

use tubelet::{Error, Result, Tensor};
use tubelet_models::tsm::{Config, Tsm};

use super::{Block, ConfigReader, Module};

pub fn modules() -> Vec<Module> {
    vec![
        Module {
            name: "tsm.TemporalShift",
            summary: "TSM TemporalShift with net = identity: the bidirectional temporal shift on (N·T, C, H, W)",
            train_default: Some(false),
            build: build_temporal_shift,
        },
        Module {
            name: "tsm.TSN",
            summary: "TSM's TSN with a shifted Bottleneck ResNet (blockres), (B, T·3, H, W) -> (B, classes); ported: RGB, avg consensus",
            train_default: Some(false),
            build: build_tsn,
        },
    ]
}

struct TemporalShift {
    n_segment: usize,
    fold_div: usize,
}

impl Block for TemporalShift {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        x.try_temporal_shift(self.n_segment, self.fold_div)
    }
    fn named_params(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

fn build_temporal_shift(
    c: &mut ConfigReader,
    input: &[usize],
    _train: bool,
) -> Result<Box<dyn Block>> {
    let n_segment = c.usize("n_segment", Some(3))?;
    let fold_div = c.usize("n_div", Some(8))?;
    if c.bool("inplace", Some(false))? {
        return Err(Error::Config(
            "tsm.TemporalShift: inplace true raises NotImplementedError in the official code; use false".to_string(),
        ));
    }
    if input.len() != 4 || n_segment == 0 || !input[0].is_multiple_of(n_segment) {
        return Err(Error::Shape(format!(
            "tsm.TemporalShift takes x (N·n_segment, C, H, W); input has shape {input:?}, n_segment {n_segment}"
        )));
    }
    Ok(Box::new(TemporalShift {
        n_segment,
        fold_div,
    }))
}

struct Tsn {
    model: Tsm,
    /// dropout 0: the classifier is `base_model.fc` (TSN replaces the ResNet's fc), else `new_fc`.
    fc_in_base_model: bool,
}

impl Block for Tsn {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let s = x.shape();
        // TSN.forward: input.view((-1, 3) + input.size()[-2:]).
        self.model
            .forward(&x.try_reshape(&[s[0] * s[1] / 3, 3, s[2], s[3]])?, train)
    }
    fn named_params(&self) -> Vec<(String, Tensor)> {
        let rename = |k: String| match k.strip_prefix("new_fc.") {
            Some(rest) if self.fc_in_base_model => format!("base_model.fc.{rest}"),
            _ => k,
        };
        self.model
            .named_params()
            .into_iter()
            .map(|(k, t)| (rename(k), t))
            .collect()
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        self.model.named_buffers()
    }
}

fn build_tsn(c: &mut ConfigReader, input: &[usize], train: bool) -> Result<Box<dyn Block>> {
    const M: &str = "tsm.TSN";
    let unsupported =
        |what: String| Error::Config(format!("{M}: {what} is not implemented in tubelet's port"));
    let num_class = c.usize("num_class", None)?;
    let num_segments = c.usize("num_segments", None)?;
    let modality = c.string("modality", None)?;
    let (stem, widths, blocks) = if c.has("base_model.layers")
        || c.has("base_model.planes")
        || c.has("base_model.inplanes")
    {
        let stem = c.usize("base_model.inplanes", None)?;
        let p = c.usizes("base_model.planes", Some(4))?;
        let l = c.usizes("base_model.layers", Some(4))?;
        (stem, [p[0], p[1], p[2], p[3]], [l[0], l[1], l[2], l[3]])
    } else {
        let name = c.string("base_model", Some("resnet101"))?;
        let layers = match name.as_str() {
            "resnet50" => [3, 4, 6, 3],
            "resnet101" => [3, 4, 23, 3],
            "resnet152" => [3, 8, 36, 3],
            other => {
                return Err(unsupported(format!(
                    "base_model {other:?} (implemented: \"resnet50\", \"resnet101\", \"resnet152\", or a narrow ResNet {{\"inplanes\", \"planes\", \"layers\"}})"
                )))
            }
        };
        (64, [64, 128, 256, 512], layers)
    };
    let new_length = c.opt_usize("new_length")?;
    let consensus = c.string("consensus_type", Some("avg"))?;
    let before_softmax = c.bool("before_softmax", Some(true))?;
    let dropout = c.f64("dropout", Some(0.8))?;
    let partial_bn = c.bool("partial_bn", Some(true))?;
    let is_shift = c.bool("is_shift", Some(false))?;
    let shift_div = c.usize("shift_div", Some(8))?;
    let shift_place = c.string("shift_place", Some("blockres"))?;
    let temporal_pool = c.bool("temporal_pool", Some(false))?;
    let non_local = c.bool("non_local", Some(false))?;
    for k in [
        "img_feature_dim",
        "crop_num",
        "print_spec",
        "pretrain",
        "fc_lr5",
    ] {
        c.ignore(k);
    }
    if modality != "RGB" {
        return Err(unsupported(format!(
            "modality {modality:?} (implemented: \"RGB\")"
        )));
    }
    if new_length.is_some_and(|n| n != 1) {
        return Err(unsupported(format!(
            "new_length {new_length:?} (implemented: null or 1 with RGB)"
        )));
    }
    if consensus != "avg" || !before_softmax {
        return Err(unsupported(format!(
            "consensus_type {consensus:?}, before_softmax {before_softmax} (implemented: \"avg\", true)"
        )));
    }
    if is_shift && shift_place != "blockres" {
        return Err(unsupported(format!(
            "shift_place {shift_place:?} (implemented: \"blockres\")"
        )));
    }
    if temporal_pool || non_local {
        return Err(unsupported(format!(
            "temporal_pool {temporal_pool}, non_local {non_local} (implemented: false)"
        )));
    }
    if !(0.0..1.0).contains(&dropout) {
        return Err(Error::Config(format!(
            "{M} config: dropout {dropout} must be in [0, 1)"
        )));
    }
    if train && partial_bn {
        return Err(unsupported(
            "train: true with partial_bn true (the official TSN then keeps every BatchNorm but the first in eval mode; use partial_bn false, as the TSM recipe's --npb)".to_string(),
        ));
    }
    if train && dropout > 0.0 {
        return Err(unsupported(format!(
            "train: true with dropout {dropout} (random; set it to 0 or use train: false)"
        )));
    }
    if input.len() != 4
        || input[1] == 0
        || !input[1].is_multiple_of(3)
        || num_segments == 0
        || !(input[0] * input[1] / 3).is_multiple_of(num_segments)
    {
        return Err(Error::Shape(format!(
            "{M} takes x (B, num_segments·3, H, W) with num_segments {num_segments}; input has shape {input:?}"
        )));
    }
    let config = Config {
        n_segment: num_segments,
        height: input[2],
        width: input[3],
        stem,
        widths,
        blocks,
        expansion: 4,
        fold_div: shift_div,
        dropout: 0.0, // train with dropout > 0 is refused above; eval ignores it
        num_classes: num_class,
    };
    let mut model = Tsm::new(config, 0)?;
    if !is_shift {
        for blk in model.layers.iter_mut().flatten() {
            blk.shifted = false;
        }
    }
    Ok(Box::new(Tsn {
        model,
        fc_in_base_model: dropout == 0.0,
    }))
}
