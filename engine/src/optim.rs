//! Optimisers. AdamW (Loshchilov & Hutter, arXiv:1711.05101) with PyTorch's semantics
//! (decoupled weight decay applied before the moment update), fused into one kernel per
//! parameter tensor: shaders/adamw_step.wgsl. Parameters are updated in place, so the tensors a
//! model holds stay valid; no value is read back to the host.

use crate::autograd::Grads;
use crate::error::{Error, Result};
use crate::gpu::{gpu, grid};
use crate::kernel;
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug)]
pub struct AdamWConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    /// PyTorch's defaults.
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

struct Slot {
    name: String,
    param: Tensor,
    m: Tensor,
    v: Tensor,
    decay: bool,
}

pub struct AdamW {
    pub config: AdamWConfig,
    slots: Vec<Slot>,
    step: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    wd: f32,
    c1: f32,
    c2: f32,
}

impl AdamW {
    /// `params` as (name, tensor). As in timm/mmaction2 recipes, tensors of rank < 2 (biases,
    /// norm scales) and embeddings named `pos`/`cls`/`table` get no weight decay.
    pub fn new(params: Vec<(String, Tensor)>, config: AdamWConfig) -> Result<AdamW> {
        if !(config.lr >= 0.0)
            || !(0.0..1.0).contains(&config.beta1)
            || !(0.0..1.0).contains(&config.beta2)
        {
            return Err(Error::Config(format!("AdamW: invalid config {config:?}")));
        }
        let slots = params
            .into_iter()
            .map(|(name, param)| {
                let lname = name.to_lowercase();
                let decay =
                    param.rank() >= 2 && !["pos", "cls", "table"].iter().any(|k| lname.contains(k));
                Ok(Slot {
                    m: Tensor::try_full(param.shape(), 0.0)?,
                    v: Tensor::try_full(param.shape(), 0.0)?,
                    name,
                    param,
                    decay,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW {
            config,
            slots,
            step: 0,
        })
    }

    pub fn steps_taken(&self) -> u32 {
        self.step
    }

    /// One update of every parameter that has a gradient in `grads`.
    pub fn step(&mut self, grads: &Grads) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        for s in &self.slots {
            let Some(g) = grads.get(&s.param) else {
                continue;
            };
            let n = s.param.numel();
            let p = Params {
                n: n as u32,
                lr: c.lr,
                beta1: c.beta1,
                beta2: c.beta2,
                eps: c.eps,
                wd: if s.decay { c.weight_decay } else { 0.0 },
                c1: 1.0 - c.beta1.powi(t),
                c2: 1.0 - c.beta2.powi(t),
            };
            // (N) grad -> (N) param, m, v in place
            gpu().dispatch(
                kernel!(adamw_step),
                &[],
                &[g.buffer(), s.param.buffer(), s.m.buffer(), s.v.buffer()],
                &p,
                grid(n, 256),
            )?;
        }
        Ok(())
    }

    /// Names of the parameters that receive weight decay (for logs and tests).
    pub fn decayed(&self) -> Vec<&str> {
        self.slots
            .iter()
            .filter(|s| s.decay)
            .map(|s| s.name.as_str())
            .collect()
    }

    // Checkpointing (train/src/checkpoint.rs): the moments under PyTorch's state names, and
    // the step count, which sets the bias corrections c1, c2 of the next update.

    /// The moments, as (`exp_avg.<param>` m, `exp_avg_sq.<param>` v), in parameter order.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.slots.len());
        for s in &self.slots {
            out.push((format!("exp_avg.{}", s.name), s.m.clone()));
            out.push((format!("exp_avg_sq.{}", s.name), s.v.clone()));
        }
        out
    }

    /// Restores what [`AdamW::state`] gave (`get` looks a name up, giving (shape, values)) and
    /// the step count. Every moment must be there with its parameter's shape; nothing is
    /// written unless all are.
    pub fn load_state<'a>(
        &mut self,
        get: impl Fn(&str) -> Option<(&'a [usize], &'a [f32])>,
        step: u32,
    ) -> Result<()> {
        let mut found = Vec::with_capacity(2 * self.slots.len());
        let mut problems = Vec::new();
        for s in &self.slots {
            for (key, t) in [
                (format!("exp_avg.{}", s.name), &s.m),
                (format!("exp_avg_sq.{}", s.name), &s.v),
            ] {
                match get(&key) {
                    None => problems.push(format!("{key} missing")),
                    Some((shape, _)) if shape != t.shape() => {
                        problems.push(format!("{key}: saved {shape:?}, parameter {:?}", t.shape()))
                    }
                    Some((_, data)) => found.push((t, data)),
                }
            }
        }
        if !problems.is_empty() {
            return Err(Error::Io(format!(
                "AdamW state does not fit the parameters ({}): {}",
                problems.len(),
                problems.join("; ")
            )));
        }
        for (t, data) in found {
            t.write(data)?;
        }
        self.step = step;
        Ok(())
    }
}

/// The update in f64, for the optimiser's test: returns (p, m, v) after one step t.
#[allow(clippy::too_many_arguments)]
pub fn adamw_reference(
    p: f64,
    g: f64,
    m: f64,
    v: f64,
    t: i32,
    c: AdamWConfig,
    decay: bool,
) -> (f64, f64, f64) {
    let (b1, b2) = (c.beta1 as f64, c.beta2 as f64);
    let lr = c.lr as f64;
    let wd = if decay { c.weight_decay as f64 } else { 0.0 };
    let w = p * (1.0 - lr * wd);
    let m = b1 * m + (1.0 - b1) * g;
    let v = b2 * v + (1.0 - b2) * g * g;
    let mhat = m / (1.0 - b1.powi(t));
    let vhat = v / (1.0 - b2.powi(t));
    (w - lr * mhat / (vhat.sqrt() + c.eps as f64), m, v)
}

// ---------------------------------------------------------------------------------------------
// Decay chosen by the caller (a recipe's parameter-wise policy), and SGD with momentum.

impl AdamW {
    /// `params` as (name, tensor, decay): the caller decides which parameters get weight decay
    /// (the official configs' parameter-wise rules), instead of [`AdamW::new`]'s rank/name rule.
    pub fn with_decay(params: Vec<(String, Tensor, bool)>, config: AdamWConfig) -> Result<AdamW> {
        let flags: Vec<bool> = params.iter().map(|p| p.2).collect();
        let mut opt = AdamW::new(params.into_iter().map(|(n, t, _)| (n, t)).collect(), config)?;
        for (s, d) in opt.slots.iter_mut().zip(flags) {
            s.decay = d;
        }
        Ok(opt)
    }
}

/// torch.optim.SGD's options. PyTorch's defaults: no momentum, no dampening, no decay, no
/// Nesterov.
#[derive(Clone, Copy, Debug)]
pub struct SgdConfig {
    pub lr: f32,
    pub momentum: f32,
    pub dampening: f32,
    /// L2 penalty added to the gradient (coupled, as PyTorch's SGD), where a slot decays.
    pub weight_decay: f32,
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
}

struct SgdSlot {
    name: String,
    param: Tensor,
    buf: Tensor,
    decay: bool,
    /// Whether the momentum buffer holds a value yet (PyTorch's first step clones the gradient).
    started: bool,
}

/// SGD with momentum and Nesterov's variant, as torch.optim.SGD; one fused kernel per parameter
/// tensor (shaders/sgd_step.wgsl), parameters updated in place.
pub struct Sgd {
    pub config: SgdConfig,
    slots: Vec<SgdSlot>,
    step: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SgdParams {
    n: u32,
    lr: f32,
    momentum: f32,
    dampening: f32,
    wd: f32,
    nesterov: u32,
    first: u32,
    _pad: u32,
}

impl Sgd {
    /// `params` as (name, tensor, decay). Nesterov needs momentum > 0 and no dampening, as in
    /// PyTorch.
    pub fn new(params: Vec<(String, Tensor, bool)>, config: SgdConfig) -> Result<Sgd> {
        let c = config;
        if !(c.lr >= 0.0)
            || !(c.momentum >= 0.0)
            || !(c.weight_decay >= 0.0)
            || !(0.0..=1.0).contains(&c.dampening)
        {
            return Err(Error::Config(format!("SGD: invalid config {c:?}")));
        }
        if c.nesterov && (c.momentum <= 0.0 || c.dampening != 0.0) {
            return Err(Error::Config(format!(
                "SGD: Nesterov momentum needs momentum > 0 and dampening 0, got momentum {} dampening {}",
                c.momentum, c.dampening
            )));
        }
        let slots = params
            .into_iter()
            .map(|(name, param, decay)| {
                Ok(SgdSlot {
                    buf: Tensor::try_full(param.shape(), 0.0)?,
                    name,
                    param,
                    decay,
                    started: false,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Sgd {
            config,
            slots,
            step: 0,
        })
    }

    pub fn steps_taken(&self) -> u32 {
        self.step
    }

    /// One update of every parameter that has a gradient in `grads`.
    pub fn step(&mut self, grads: &Grads) -> Result<()> {
        self.step += 1;
        let c = self.config;
        for s in &mut self.slots {
            let Some(g) = grads.get(&s.param) else {
                continue;
            };
            let n = s.param.numel();
            let p = SgdParams {
                n: n as u32,
                lr: c.lr,
                momentum: c.momentum,
                dampening: c.dampening,
                wd: if s.decay { c.weight_decay } else { 0.0 },
                nesterov: c.nesterov as u32,
                first: (!s.started) as u32,
                _pad: 0,
            };
            // (N) grad -> (N) param, momentum buffer in place
            gpu().dispatch(
                kernel!(sgd_step),
                &[],
                &[g.buffer(), s.param.buffer(), s.buf.buffer()],
                &p,
                grid(n, 256),
            )?;
            s.started = true;
        }
        Ok(())
    }

    /// Names of the parameters that receive weight decay.
    pub fn decayed(&self) -> Vec<&str> {
        self.slots
            .iter()
            .filter(|s| s.decay)
            .map(|s| s.name.as_str())
            .collect()
    }

    /// (name, momentum buffer, started) of every slot, for checkpoints.
    pub fn state(&self) -> Vec<(&str, &Tensor, bool)> {
        self.slots
            .iter()
            .map(|s| (s.name.as_str(), &s.buf, s.started))
            .collect()
    }

    /// Restores a momentum buffer saved by [`Sgd::state`] and the step count.
    pub fn restore(&mut self, name: &str, buf: &[f32], started: bool, step: u32) -> Result<()> {
        let s = self
            .slots
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                Error::Config(format!(
                    "SGD state: no parameter named {name:?} in this optimiser"
                ))
            })?;
        s.buf.write(buf)?;
        s.started = started;
        self.step = step;
        Ok(())
    }
}

/// The SGD update in f64, for the optimiser's test: returns (p, buf) after one step
/// (`first`: the buffer is empty and takes the gradient).
pub fn sgd_reference(
    p: f64,
    g: f64,
    buf: f64,
    first: bool,
    c: SgdConfig,
    decay: bool,
) -> (f64, f64) {
    let (lr, mu, damp) = (c.lr as f64, c.momentum as f64, c.dampening as f64);
    let wd = if decay { c.weight_decay as f64 } else { 0.0 };
    let g = g + wd * p;
    if mu == 0.0 {
        return (p - lr * g, g);
    }
    let b = if first {
        g
    } else {
        mu * buf + (1.0 - damp) * g
    };
    let d = if c.nesterov { g + mu * b } else { b };
    (p - lr * d, b)
}
