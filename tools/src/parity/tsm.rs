//! Parity modules of TSM (mit-han-lab/temporal-shift-module, `ops/temporal_shift.py`).
//!
//! `tsm.TemporalShift` is the shift alone (`net` = identity): the constructor's `n_segment`
//! (default 3) and `n_div` (default 8) on x (N·T, C, H, W); `inplace` (default False) must be
//! False (the official in-place path raises NotImplementedError). No parameters.

use tubelet::{Error, Result, Tensor};

use super::{Block, ConfigReader, Module};

pub fn modules() -> Vec<Module> {
    vec![Module {
        name: "tsm.TemporalShift",
        summary: "TSM TemporalShift with net = identity: the bidirectional temporal shift on (N·T, C, H, W)",
        train_default: Some(false),
        build: build_temporal_shift,
    }]
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

fn build_temporal_shift(c: &mut ConfigReader, input: &[usize], _train: bool) -> Result<Box<dyn Block>> {
    let n_segment = c.usize("n_segment", Some(3))?;
    let fold_div = c.usize("n_div", Some(8))?;
    if c.bool("inplace", Some(false))? {
        return Err(Error::Config(
            "tsm.TemporalShift: inplace true raises NotImplementedError in the official code; use false".to_string(),
        ));
    }
    if input.len() != 4 || n_segment == 0 || input[0] % n_segment != 0 {
        return Err(Error::Shape(format!(
            "tsm.TemporalShift takes x (N·n_segment, C, H, W); input has shape {input:?}, n_segment {n_segment}"
        )));
    }
    Ok(Box::new(TemporalShift { n_segment, fold_div }))
}
