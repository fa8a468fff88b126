//! Elementwise functions of one tensor: neg, exp, log, sqrt, rsqrt, tanh, relu, sigmoid, GELU in
//! both forms, square, and the scalar ops x + a, x · a, x^a.
//!
//! GELU (Hendrycks & Gimpel, arXiv:1606.08415), both forms are used by the seeds:
//!   erf form   y = ½·x·(1 + erf(x/√2))                      (PyTorch nn.GELU: Swin, MViT, ...)
//!   tanh form  y = ½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))   (Flax nn.gelu: ViViT)
//! Kernels: shaders/unary_forward.wgsl, shaders/unary_backward.wgsl (the function is the
//! override constant OP = `Unary::code`).

use crate::autograd::apply;
use crate::error::Result;
use crate::gpu::{gpu, grid};
use crate::kernel;
use crate::ops::Op;
use crate::reference::CpuTensor;
use crate::tensor::Tensor;

const K: f64 = 0.797_884_560_802_865_4; // √(2/π)

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    Neg,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Tanh,
    Relu,
    Sigmoid,
    GeluErf,
    GeluTanh,
    AddScalar(f32),
    MulScalar(f32),
    /// x^a, defined for x > 0.
    PowScalar(f32),
    Square,
}

impl Unary {
    /// The kernels' OP override constant.
    fn code(self) -> u32 {
        match self {
            Unary::Neg => 0,
            Unary::Exp => 1,
            Unary::Log => 2,
            Unary::Sqrt => 3,
            Unary::Rsqrt => 4,
            Unary::Tanh => 5,
            Unary::Relu => 6,
            Unary::Sigmoid => 7,
            Unary::GeluErf => 8,
            Unary::GeluTanh => 9,
            Unary::AddScalar(_) => 10,
            Unary::MulScalar(_) => 11,
            Unary::PowScalar(_) => 12,
            Unary::Square => 13,
        }
    }

    fn scalar(self) -> f32 {
        match self {
            Unary::AddScalar(a) | Unary::MulScalar(a) | Unary::PowScalar(a) => a,
            _ => 0.0,
        }
    }

    /// f(x) in f64.
    pub fn eval(self, x: f64) -> f64 {
        let a = self.scalar() as f64;
        match self {
            Unary::Neg => -x,
            Unary::Exp => x.exp(),
            Unary::Log => x.ln(),
            Unary::Sqrt => x.sqrt(),
            Unary::Rsqrt => 1.0 / x.sqrt(),
            Unary::Tanh => x.tanh(),
            Unary::Relu => x.max(0.0),
            Unary::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Unary::GeluErf => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
            Unary::GeluTanh => 0.5 * x * (1.0 + (K * (x + 0.044715 * x.powi(3))).tanh()),
            Unary::AddScalar(_) => x + a,
            Unary::MulScalar(_) => x * a,
            Unary::PowScalar(_) => x.powf(a),
            Unary::Square => x * x,
        }
    }

    /// f'(x) in f64.
    pub fn derivative(self, x: f64) -> f64 {
        let a = self.scalar() as f64;
        match self {
            Unary::Neg => -1.0,
            Unary::Exp => x.exp(),
            Unary::Log => 1.0 / x,
            Unary::Sqrt => 0.5 / x.sqrt(),
            Unary::Rsqrt => -0.5 * x.powf(-1.5),
            Unary::Tanh => 1.0 - x.tanh().powi(2),
            // NOTE: the kink at 0 takes derivative 0, as PyTorch does.
            Unary::Relu => f64::from(x > 0.0),
            Unary::Sigmoid => {
                let s = 1.0 / (1.0 + (-x).exp());
                s * (1.0 - s)
            }
            // d/dx ½x(1 + erf(x/√2)) = Φ(x) + x·φ(x)
            Unary::GeluErf => {
                0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
                    + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
            }
            // d/dx = ½(1 + t) + ½·x·(1 − t²)·K·(1 + 3·0.044715·x²),  t = tanh(K·(x + 0.044715·x³))
            Unary::GeluTanh => {
                let t = (K * (x + 0.044715 * x.powi(3))).tanh();
                0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * K * (1.0 + 3.0 * 0.044715 * x * x)
            }
            Unary::AddScalar(_) => 1.0,
            Unary::MulScalar(_) => a,
            Unary::PowScalar(_) => a * x.powf(a - 1.0),
            Unary::Square => 2.0 * x,
        }
    }
}

/// erf in f64 for the reference: the series for |x| < 3, the continued fraction beyond
/// (both to ~1e-15; plain and slow on purpose).
pub fn erf(x: f64) -> f64 {
    if x.abs() < 3.0 {
        // erf x = 2/√π Σ (−1)^n x^(2n+1) / (n! (2n+1))
        let mut sum: f64 = 0.0;
        let mut term = x;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs().max(1e-300) || n < 3.0 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
            if n > 200.0 {
                break;
            }
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // erfc x = e^(−x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...))))
        let z = x.abs();
        let mut f = z;
        for k in (1..60).rev() {
            f = z + (k as f64 / 2.0) / f;
        }
        let erfc = (-z * z).exp() / std::f64::consts::PI.sqrt() / f;
        (1.0 - erfc) * x.signum()
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    a: f32,
}

impl Op for Unary {
    fn name(&self) -> &'static str {
        "unary"
    }

    fn reference(&self, x: &[&CpuTensor]) -> CpuTensor {
        x[0].map(|v| self.eval(v))
    }

    fn reference_backward(&self, x: &[&CpuTensor], dy: &CpuTensor) -> Vec<Option<CpuTensor>> {
        vec![Some(x[0].zip(dy, |v, g| g * self.derivative(v)))]
    }

    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        let n = x[0].numel();
        let y = Tensor::empty(x[0].shape())?;
        let p = Params {
            n: n as u32,
            a: self.scalar(),
        };
        // (N) -> (N)
        gpu().dispatch(
            kernel!(unary_forward),
            &[("OP", self.code() as f64)],
            &[x[0].buffer(), y.buffer()],
            &p,
            grid(n, 256),
        )?;
        Ok(y)
    }

    // dx = dy · f'(x); the kernel lists each f' (see `derivative`).
    fn backward(&self, x: &[&Tensor], y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let n = x[0].numel();
        let dx = Tensor::empty(x[0].shape())?;
        let p = Params {
            n: n as u32,
            a: self.scalar(),
        };
        gpu().dispatch(
            kernel!(unary_backward),
            &[("OP", self.code() as f64)],
            &[x[0].buffer(), y.buffer(), dy.buffer(), dx.buffer()],
            &p,
            grid(n, 256),
        )?;
        Ok(vec![Some(dx)])
    }
}

macro_rules! unary_methods {
    ($($name:ident, $try_name:ident, $kind:expr, $doc:literal;)*) => {
        impl Tensor {
            $(
                #[doc = $doc]
                pub fn $try_name(&self) -> Result<Tensor> {
                    apply($kind, &[self])
                }
                #[doc = $doc]
                pub fn $name(&self) -> Tensor {
                    self.$try_name().unwrap_or_else(|e| panic!(concat!(stringify!($name), "{:?}: {}"), self.shape(), e))
                }
            )*
        }
    };
}

unary_methods! {
    neg, try_neg, Unary::Neg, "−x";
    exp, try_exp, Unary::Exp, "eˣ";
    log, try_log, Unary::Log, "ln x";
    sqrt, try_sqrt, Unary::Sqrt, "√x";
    rsqrt, try_rsqrt, Unary::Rsqrt, "1/√x";
    tanh, try_tanh, Unary::Tanh, "tanh x";
    relu, try_relu, Unary::Relu, "max(x, 0)";
    sigmoid, try_sigmoid, Unary::Sigmoid, "1/(1 + e⁻ˣ)";
    gelu, try_gelu, Unary::GeluErf, "GELU, exact erf form (PyTorch `nn.GELU()`)";
    gelu_tanh, try_gelu_tanh, Unary::GeluTanh, "GELU, tanh approximation (Flax `nn.gelu`, PyTorch `approximate='tanh'`)";
    square, try_square, Unary::Square, "x²";
}

macro_rules! scalar_methods {
    ($($name:ident, $try_name:ident, $kind:ident, $doc:literal;)*) => {
        impl Tensor {
            $(
                #[doc = $doc]
                pub fn $try_name(&self, a: f32) -> Result<Tensor> {
                    apply(Unary::$kind(a), &[self])
                }
                #[doc = $doc]
                pub fn $name(&self, a: f32) -> Tensor {
                    self.$try_name(a).unwrap_or_else(|e| panic!(concat!(stringify!($name), "{:?}: {}"), self.shape(), e))
                }
            )*
        }
    };
}

scalar_methods! {
    add_scalar, try_add_scalar, AddScalar, "x + a";
    mul_scalar, try_mul_scalar, MulScalar, "x · a";
    pow_scalar, try_pow_scalar, PowScalar, "x^a (x > 0)";
}

#[cfg(feature = "testing")]
pub fn test_spec() -> crate::testing::TestSpec<Unary> {
    use crate::testing::{shape_strategy, Case, TestSpec, Tol};
    use proptest::prelude::*;
    let kinds = prop_oneof![
        Just(Unary::Neg),
        Just(Unary::Exp),
        Just(Unary::Log),
        Just(Unary::Sqrt),
        Just(Unary::Rsqrt),
        Just(Unary::Tanh),
        Just(Unary::Relu),
        Just(Unary::Sigmoid),
        Just(Unary::GeluErf),
        Just(Unary::GeluTanh),
        Just(Unary::Square),
        (-3.0f32..3.0).prop_map(Unary::AddScalar),
        (-3.0f32..3.0).prop_map(Unary::MulScalar),
        (-2.0f32..2.0).prop_map(Unary::PowScalar),
    ];
    // Domain per function: positive where the function needs it, away from relu's kink.
    fn case(kind: Unary, shape: Vec<usize>, seed: u64) -> Case<Unary> {
        let mut rng = crate::Rng::new(seed);
        let x = match kind {
            Unary::Log | Unary::Sqrt | Unary::Rsqrt | Unary::PowScalar(_) => {
                CpuTensor::uniform(&shape, 0.2, 4.0, &mut rng)
            }
            Unary::Exp => CpuTensor::uniform(&shape, -6.0, 6.0, &mut rng),
            Unary::Relu => CpuTensor::uniform(&shape, -4.0, 4.0, &mut rng).map(|v| {
                if v.abs() < 1e-3 {
                    0.5
                } else {
                    v
                }
            }),
            _ => CpuTensor::uniform(&shape, -8.0, 8.0, &mut rng),
        };
        Case::new(kind, vec![x], format!("{kind:?}"))
    }
    TestSpec {
        cases: (kinds.clone(), shape_strategy(1..=4, 300_000), any::<u64>())
            .prop_map(|(k, s, seed)| case(k, s, seed))
            .boxed(),
        small_cases: (kinds, shape_strategy(1..=3, 48), any::<u64>())
            .prop_map(|(k, s, seed)| case(k, s, seed))
            .boxed(),
        // f32 transcendental functions vs f64: a few ulps relative; exp reaches e^6 ≈ 400.
        forward_tol: Tol::new(1e-5, 2e-5, "f32 exp/log/tanh/erf, a few ulps of |y|"),
        backward_tol: Tol::new(1e-5, 5e-5, "f32 derivative formulas, a few ulps of |dy·f'|"),
    }
}
