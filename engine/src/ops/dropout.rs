//! Inverted dropout (Srivastava et al., JMLR 2014; PyTorch's scaling at train time):
//! y = x · m / (1 − p),  m_i = 1 with probability 1 − p;   dx = dy · m / (1 − p).
//! The mask is a stateless hash of (seed, flat element index), so nothing is stored: the backward
//! regenerates it from the seed, and the reference reproduces it bit for bit with the same u32
//! arithmetic (see `pcg_hash`, `Dropout::keep` and the header of the kernel).
//! Kernel: shaders/dropout_forward.wgsl, also the backward (run on dy).

use crate::autograd::apply;
use crate::error::Result;
use crate::gpu::{gpu, grid};
use crate::kernel;
use crate::ops::Op;
use crate::reference::CpuTensor;
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug)]
pub struct Dropout {
    /// Drop probability, in [0, 1).
    pub p: f32,
    pub seed: u64,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    key: u32,
    threshold: u32,
    scale: f32,
}

/// The PCG hash (Jarzynski & Olano, "Hash Functions for GPU Rendering", JCGT 9(3) 2020): one
/// step of a 32-bit PCG generator with its RXS-M-XS output permutation; a bijection on u32.
pub fn pcg_hash(v: u32) -> u32 {
    let state = v.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

impl Dropout {
    /// The 32-bit key both halves of the seed are folded into.
    pub(crate) fn key(&self) -> u32 {
        pcg_hash(self.seed as u32 ^ pcg_hash((self.seed >> 32) as u32))
    }

    /// Hash values below this are dropped: ⌊p · 2³²⌋ (< 2³² since p < 1).
    pub(crate) fn threshold(&self) -> u32 {
        (self.p as f64 * 4_294_967_296.0) as u32
    }

    /// Whether element `i` is kept: pcg(pcg(i) ^ key) ≥ threshold (as in the kernel).
    pub fn keep(&self, i: usize) -> bool {
        pcg_hash(pcg_hash(i as u32) ^ self.key()) >= self.threshold()
    }

    fn params(&self, n: usize) -> Params {
        Params {
            n: n as u32,
            key: self.key(),
            threshold: self.threshold(),
            scale: (1.0 / (1.0 - self.p as f64)) as f32,
        }
    }

    /// y = dropout(x) with this mask, without autograd (the forward, and the backward on dy).
    fn launch(&self, x: &Tensor) -> Result<Tensor> {
        let y = Tensor::empty(x.shape())?;
        let n = x.numel();
        // (N) -> (N)
        gpu().dispatch(
            kernel!(dropout_forward),
            &[],
            &[x.buffer(), y.buffer()],
            &self.params(n),
            grid(n, 256),
        )?;
        Ok(y)
    }

    fn apply_mask(&self, x: &CpuTensor) -> CpuTensor {
        let scale = 1.0 / (1.0 - self.p as f64);
        let mut y = CpuTensor::zeros(&x.shape);
        for i in 0..x.numel() {
            if self.keep(i) {
                y.data[i] = x.data[i] * scale;
            }
        }
        y
    }
}

impl Op for Dropout {
    fn name(&self) -> &'static str {
        "dropout"
    }

    fn reference(&self, x: &[&CpuTensor]) -> CpuTensor {
        self.apply_mask(x[0])
    }

    fn reference_backward(&self, _x: &[&CpuTensor], dy: &CpuTensor) -> Vec<Option<CpuTensor>> {
        vec![Some(self.apply_mask(dy))]
    }

    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        self.launch(x[0])
    }

    // dx = dy · m / (1 − p): the same mask, regenerated from the seed.
    fn backward(&self, _x: &[&Tensor], _y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(self.launch(dy)?)])
    }
}

impl Tensor {
    /// Inverted dropout with drop probability `p` ∈ [0, 1) and mask seed `seed`.
    pub fn try_dropout(&self, p: f32, seed: u64) -> Result<Tensor> {
        if !(0.0..1.0).contains(&p) {
            crate::bail!(
                Config,
                "dropout: p = {p} is not in [0, 1) (tensor of shape {:?})",
                self.shape()
            );
        }
        if p == 0.0 {
            return Ok(self.clone());
        }
        // Inside a checkpointed segment's recompute, the forward's seed (engine/src/checkpoint.rs).
        let seed = crate::checkpoint::replay_seed(seed)?;
        apply(Dropout { p, seed }, &[self])
    }

    /// Inverted dropout: each element zeroed with probability `p`, the rest scaled by 1/(1 − p).
    /// The mask depends only on (seed, element index); `p = 0` returns the input unchanged.
    ///
    /// ```no_run
    /// # use tubelet::Tensor;
    /// let x = Tensor::ones(&[4, 8]);
    /// let y = x.dropout(0.5, 42); // values 0 or 2
    /// ```
    pub fn dropout(&self, p: f32, seed: u64) -> Tensor {
        self.try_dropout(p, seed)
            .unwrap_or_else(|e| panic!("dropout{:?}: {e}", self.shape()))
    }
}

#[cfg(feature = "testing")]
pub fn test_spec() -> crate::testing::TestSpec<Dropout> {
    use crate::testing::{shape_strategy, Case, TestSpec, Tol};
    use proptest::prelude::*;
    // |x| ∈ [0.25, 2]: an element whose mask bit differs from the reference's is off by ≥ 0.25,
    // far outside the tolerance, so the masks are compared exactly.
    fn case(shape: Vec<usize>, p: f32, seed: u64) -> Case<Dropout> {
        let mut rng = crate::Rng::new(seed);
        let x =
            CpuTensor::uniform(&shape, 0.25, 2.0, &mut rng)
                .map(|v| if rng_bit(v) { v } else { -v });
        Case::new(Dropout { p, seed }, vec![x], format!("p {p} seed {seed}"))
    }
    fn rng_bit(v: f64) -> bool {
        (v * 1e6) as i64 % 2 == 0
    }
    let ps = prop_oneof![Just(0.0f32), Just(0.1), Just(0.5), Just(0.9), 0.0f32..0.99];
    TestSpec {
        cases: (shape_strategy(1..=4, 300_000), ps.clone(), any::<u64>())
            .prop_map(|(s, p, seed)| case(s, p, seed))
            .boxed(),
        small_cases: (shape_strategy(1..=3, 48), ps, any::<u64>())
            .prop_map(|(s, p, seed)| case(s, p, seed))
            .boxed(),
        // scale = 1/(1 − p) rounded to f32, then one f32 product: two roundings of 2⁻²⁴.
        forward_tol: Tol::new(0.0, 2.5e-7, "f32 scale and one f32 product"),
        backward_tol: Tol::new(0.0, 2.5e-7, "f32 scale and one f32 product"),
    }
}
