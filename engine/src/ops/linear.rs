//! Linear layer, PyTorch layout: y = x·wᵀ + b, x (..., in), w (out, in), b (out) -> (..., out).
//!
//! A composite (house-style §2): `matmul_nt` (the batch folds into M, w is read transposed in
//! place) plus a broadcast `add`; gradients fall out of those ops. No shader of its own.

use crate::error::{Error, Result};
use crate::tensor::Tensor;

impl Tensor {
    /// x·wᵀ + b with x (..., in), w (out, in), b (out); x needs rank ≥ 2.
    ///
    /// ```no_run
    /// use tubelet::Tensor;
    /// let x = Tensor::randn(&[2, 8, 768], 0.0, 1.0, 1).unwrap(); // (B, N, C)
    /// let w = Tensor::randn(&[3072, 768], 0.0, 0.02, 2).unwrap().param();
    /// let b = Tensor::zeros(&[3072]).param();
    /// let y = x.linear(&w, Some(&b)); // (B, N, 4C)
    /// ```
    pub fn try_linear(&self, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        let what = || {
            format!(
                "linear: x {:?}, w {:?}, b {:?}",
                self.shape(),
                w.shape(),
                b.map(|b| b.shape().to_vec())
            )
        };
        if self.rank() < 2 || w.rank() != 2 || self.shape()[self.rank() - 1] != w.shape()[1] {
            return Err(Error::Shape(format!(
                "{}: expected x (..., in) of rank ≥ 2 and w (out, in) with the same `in`",
                what()
            )));
        }
        if let Some(b) = b {
            if b.shape() != [w.shape()[0]] {
                return Err(Error::Shape(format!(
                    "{}: expected b (out) = [{}]",
                    what(),
                    w.shape()[0]
                )));
            }
        }
        let y = self.try_matmul_nt(w)?; // (..., in) · (out, in)ᵀ -> (..., out)
        match b {
            Some(b) => y.try_add(b), // + (out), broadcast over (...)
            None => Ok(y),
        }
    }

    /// x·wᵀ + b with x (..., in), w (out, in), b (out); panics with the shapes on a mismatch.
    pub fn linear(&self, w: &Tensor, b: Option<&Tensor>) -> Tensor {
        self.try_linear(w, b).unwrap_or_else(|e| panic!("{e}"))
    }
}
