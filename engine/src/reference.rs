//! The CPU reference: `CpuTensor` (`Vec<f64>` + shape) and plain helpers.
//!
//! Deliberately dumb, in the style of llm.c's `train_gpt2.c`: loops over indices, never optimised,
//! never vectorised. Each op's `reference` built from these is the executable definition that its
//! kernels are tested against.

use crate::shape::{contiguous_strides, numel};

#[derive(Clone, Debug, PartialEq)]
pub struct CpuTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl CpuTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f64>) -> CpuTensor {
        assert_eq!(
            numel(&shape),
            data.len(),
            "CpuTensor: {} values for shape {shape:?}",
            data.len()
        );
        CpuTensor { shape, data }
    }

    pub fn zeros(shape: &[usize]) -> CpuTensor {
        CpuTensor::new(shape.to_vec(), vec![0.0; numel(shape)])
    }

    pub fn full(shape: &[usize], v: f64) -> CpuTensor {
        CpuTensor::new(shape.to_vec(), vec![v; numel(shape)])
    }

    /// Element at multi-index `idx[i]` = f(idx).
    pub fn from_fn(shape: &[usize], mut f: impl FnMut(&[usize]) -> f64) -> CpuTensor {
        let n = numel(shape);
        let mut data = Vec::with_capacity(n);
        for i in 0..n {
            data.push(f(&unravel(i, shape)));
        }
        CpuTensor::new(shape.to_vec(), data)
    }

    /// Uniform in [lo, hi) from a seeded generator.
    pub fn uniform(shape: &[usize], lo: f64, hi: f64, rng: &mut crate::Rng) -> CpuTensor {
        let data = (0..numel(shape))
            .map(|_| lo + (hi - lo) * rng.uniform())
            .collect();
        CpuTensor::new(shape.to_vec(), data)
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn strides(&self) -> Vec<usize> {
        contiguous_strides(&self.shape).to_vec()
    }

    pub fn at(&self, idx: &[usize]) -> f64 {
        self.data[ravel(idx, &self.shape)]
    }

    pub fn at_mut(&mut self, idx: &[usize]) -> &mut f64 {
        let i = ravel(idx, &self.shape);
        &mut self.data[i]
    }

    pub fn map(&self, f: impl Fn(f64) -> f64) -> CpuTensor {
        CpuTensor::new(
            self.shape.clone(),
            self.data.iter().map(|&x| f(x)).collect(),
        )
    }

    /// Elementwise on two tensors of the same shape.
    pub fn zip(&self, o: &CpuTensor, f: impl Fn(f64, f64) -> f64) -> CpuTensor {
        assert_eq!(self.shape, o.shape, "zip: shapes differ");
        CpuTensor::new(
            self.shape.clone(),
            self.data
                .iter()
                .zip(&o.data)
                .map(|(&a, &b)| f(a, b))
                .collect(),
        )
    }

    pub fn reshape(&self, shape: &[usize]) -> CpuTensor {
        CpuTensor::new(shape.to_vec(), self.data.clone())
    }

    /// Sum over every element.
    pub fn sum(&self) -> f64 {
        self.data.iter().sum()
    }

    /// Σ self·other (the loss used by gradient checks: a random upstream gradient).
    pub fn dot(&self, o: &CpuTensor) -> f64 {
        assert_eq!(self.shape, o.shape, "dot: shapes differ");
        self.data.iter().zip(&o.data).map(|(a, b)| a * b).sum()
    }

    /// Sums this (broadcast) tensor down to `shape` (the gradient of a broadcast).
    pub fn sum_to(&self, shape: &[usize]) -> CpuTensor {
        let mut out = CpuTensor::zeros(shape);
        let off = self.shape.len() - shape.len();
        for i in 0..self.numel() {
            let idx = unravel(i, &self.shape);
            let j: Vec<usize> = shape
                .iter()
                .enumerate()
                .map(|(d, &s)| if s == 1 { 0 } else { idx[d + off] })
                .collect();
            *out.at_mut(&j) += self.data[i];
        }
        out
    }

    /// Reads the value at `idx` of the broadcast of this tensor to a shape of rank `idx.len()`.
    pub fn at_broadcast(&self, idx: &[usize]) -> f64 {
        let off = idx.len() - self.shape.len();
        let j: Vec<usize> = self
            .shape
            .iter()
            .enumerate()
            .map(|(d, &s)| if s == 1 { 0 } else { idx[d + off] })
            .collect();
        self.at(&j)
    }
}

/// Flat row-major offset of a multi-index.
pub fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    debug_assert_eq!(idx.len(), shape.len());
    idx.iter().zip(shape).fold(0, |acc, (&i, &s)| {
        debug_assert!(i < s, "index {idx:?} out of shape {shape:?}");
        acc * s + i
    })
}

/// Multi-index of a flat row-major offset.
pub fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d].max(1);
        i /= shape[d].max(1);
    }
    idx
}
