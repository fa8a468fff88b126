//! Layers built from ops: [`Linear`] (PyTorch layout), [`Dense`] (Flax layout), [`LayerNorm`].
//!
//! Each layer knows its checkpoint key names, so a model's `named_params()` yields exactly the
//! official state-dict keys (PyTorch joins with '.', Flax/scenic with '/').

use crate::error::Result;
use crate::tensor::Tensor;
use crate::Rng;

/// Seeded parameter initialisation: every layer draws its own seed from one generator, so a
/// model built from the same seed is the same everywhere.
pub struct Init(Rng);

impl Init {
    pub fn new(seed: u64) -> Init {
        Init(Rng::new(seed))
    }

    fn seed(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// timm's `trunc_normal_(std)` on [−2σ, 2σ].
    pub fn trunc_normal(&mut self, shape: &[usize], std: f32) -> Result<Tensor> {
        Ok(Tensor::trunc_normal(shape, std, self.seed())?.param())
    }

    /// Glorot/Xavier uniform for a (fan_in, fan_out) matrix.
    pub fn xavier_uniform(
        &mut self,
        shape: &[usize],
        fan_in: usize,
        fan_out: usize,
    ) -> Result<Tensor> {
        let a = (6.0 / (fan_in + fan_out) as f32).sqrt();
        Ok(Tensor::rand_uniform(shape, -a, a, self.seed())?.param())
    }

    pub fn normal(&mut self, shape: &[usize], std: f32) -> Result<Tensor> {
        Ok(Tensor::randn(shape, 0.0, std, self.seed())?.param())
    }

    pub fn constant(&mut self, shape: &[usize], v: f32) -> Result<Tensor> {
        Ok(Tensor::try_full(shape, v)?.param())
    }
}

/// y = x·Wᵀ + b, PyTorch `nn.Linear` layout: weight (out, in), bias (out).
#[derive(Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// timm ViT init: weight trunc_normal(0.02), bias 0.
    pub fn new(init: &mut Init, d_in: usize, d_out: usize, bias: bool) -> Result<Linear> {
        Ok(Linear {
            weight: init.trunc_normal(&[d_out, d_in], 0.02)?,
            bias: if bias {
                Some(init.constant(&[d_out], 0.0)?)
            } else {
                None
            },
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.try_linear(&self.weight, self.bias.as_ref())
    }

    pub fn params(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        out.push((format!("{prefix}.weight"), self.weight.clone()));
        if let Some(b) = &self.bias {
            out.push((format!("{prefix}.bias"), b.clone()));
        }
    }
}

/// y = x·K + b, Flax `nn.Dense` layout: kernel (in, out), bias (out).
#[derive(Clone)]
pub struct Dense {
    pub kernel: Tensor,
    pub bias: Tensor,
}

impl Dense {
    /// Flax defaults used by scenic's MlpBlock: kernel Xavier-uniform, bias N(0, 1e-6).
    pub fn new(init: &mut Init, d_in: usize, d_out: usize) -> Result<Dense> {
        Ok(Dense {
            kernel: init.xavier_uniform(&[d_in, d_out], d_in, d_out)?,
            bias: init.normal(&[d_out], 1e-6)?,
        })
    }

    /// All zeros (scenic's `output_projection`).
    pub fn zeros(init: &mut Init, d_in: usize, d_out: usize) -> Result<Dense> {
        Ok(Dense {
            kernel: init.constant(&[d_in, d_out], 0.0)?,
            bias: init.constant(&[d_out], 0.0)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.try_matmul(&self.kernel)?.try_add(&self.bias)
    }

    pub fn params(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        out.push((format!("{prefix}/kernel"), self.kernel.clone()));
        out.push((format!("{prefix}/bias"), self.bias.clone()));
    }
}

/// LayerNorm over the last axis; `flax` picks the key names (`scale`/`bias` vs `weight`/`bias`).
#[derive(Clone)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f32,
    pub flax: bool,
}

impl LayerNorm {
    /// PyTorch: eps 1e-5, keys `weight`/`bias`.
    pub fn torch(init: &mut Init, c: usize, eps: f32) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: init.constant(&[c], 1.0)?,
            bias: init.constant(&[c], 0.0)?,
            eps,
            flax: false,
        })
    }

    /// Flax: eps 1e-6, keys `scale`/`bias`.
    pub fn flax(init: &mut Init, c: usize) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: init.constant(&[c], 1.0)?,
            bias: init.constant(&[c], 0.0)?,
            eps: 1e-6,
            flax: true,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.try_layer_norm(&self.weight, &self.bias, self.eps)
    }

    pub fn params(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        if self.flax {
            out.push((format!("{prefix}/scale"), self.weight.clone()));
            out.push((format!("{prefix}/bias"), self.bias.clone()));
        } else {
            out.push((format!("{prefix}.weight"), self.weight.clone()));
            out.push((format!("{prefix}.bias"), self.bias.clone()));
        }
    }
}
