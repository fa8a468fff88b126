//! Reverse-mode autograd.
//!
//! Every tensor made by an op while gradients are enabled, from at least one input that requires
//! a gradient, carries a [`Node`]: the op (which keeps whatever its backward needs) and its
//! inputs. The nodes form the tape; [`Tensor::backward`] walks it in reverse topological order,
//! micrograd style.
//!
//! CONTRACT for every `Op::backward` (see ops/mod.rs):
//! 1. it returns the vector-Jacobian product: it MUST consume `dy` (a backward that ignores `dy`
//!    passes an all-ones test; our tests use a random upstream gradient for this reason);
//! 2. it returns one entry per input, `None` where the input is not differentiable
//!    (integer labels, indices), each of exactly that input's shape (checked here);
//! 3. it runs as GPU kernels: no readback to the host inside a training step.
//!
//! Accumulation is `+=`: a tensor used twice receives the sum of both gradients.
//! Backward runs with gradients disabled, so no second-order tape is built.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::ops::Op;
use crate::tensor::Tensor;

/// How a tensor was made: the op and its inputs.
pub(crate) struct Node {
    pub(crate) op: Box<dyn Op>,
    pub(crate) inputs: Vec<Tensor>,
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops record nodes on this thread.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(Cell::get)
}

/// Disables gradient recording until dropped (inference, optimiser steps, backward itself).
pub struct NoGradGuard(bool);

impl NoGradGuard {
    pub fn new() -> NoGradGuard {
        NoGradGuard(GRAD_ENABLED.with(|g| g.replace(false)))
    }
}

impl Default for NoGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.0));
    }
}

/// Runs `f` with gradient recording off.
pub fn no_grad<T>(f: impl FnOnce() -> T) -> T {
    let _g = NoGradGuard::new();
    f()
}

/// Runs `op` on `inputs` and records it on the tape when a gradient will be needed.
pub fn apply(mut op: impl Op, inputs: &[&Tensor]) -> Result<Tensor> {
    let y = op.forward(inputs).map_err(|e| in_op(e, op.name(), "forward"))?;
    if is_grad_enabled() && inputs.iter().any(|t| t.requires_grad()) {
        let node = Node { op: Box::new(op), inputs: inputs.iter().map(|&t| t.clone()).collect() };
        Ok(y.with_node(node))
    } else {
        Ok(y)
    }
}

/// A device-limit error names the op and pass that hit it (the allocation itself only knows the
/// tensor's shape); other errors already name their op.
fn in_op(e: Error, op: &str, pass: &str) -> Error {
    match e {
        Error::DeviceLimit(m) if !m.starts_with("in ") => Error::DeviceLimit(format!("in {op} {pass}: {m}")),
        e => e,
    }
}

/// Gradients by tensor, returned by [`Tensor::backward`].
#[derive(Default)]
pub struct Grads {
    map: HashMap<usize, Tensor>,
}

impl Grads {
    /// The gradient of `t` (a leaf that requires a gradient), if it got one.
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.map.get(&t.id())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn remove(&mut self, t: &Tensor) -> Option<Tensor> {
        self.map.remove(&t.id())
    }
}

impl Tensor {
    /// Back-propagates from this one-element tensor; returns the gradients of every leaf that
    /// requires one (parameters) and was reached.
    pub fn backward(&self) -> Result<Grads> {
        if self.numel() != 1 {
            return Err(Error::Autograd(format!(
                "backward needs a scalar (one element), got shape {:?}",
                self.shape()
            )));
        }
        let seed = Tensor::try_full(self.shape(), 1.0)?;
        self.backward_with(seed)
    }

    /// Back-propagates an upstream gradient `dy` of this tensor's shape.
    pub fn backward_with(&self, dy: Tensor) -> Result<Grads> {
        if dy.shape() != self.shape() {
            return Err(Error::Autograd(format!(
                "backward_with: upstream gradient {:?} for a tensor of shape {:?}",
                dy.shape(),
                self.shape()
            )));
        }
        let _guard = NoGradGuard::new();
        let order = topo_order(self);
        let mut grads: HashMap<usize, Tensor> = HashMap::new();
        grads.insert(self.id(), dy);
        let mut leaves = Grads::default();
        for t in order.iter().rev() {
            let Some(g) = grads.remove(&t.id()) else { continue };
            let Some(node) = &t.0.node else {
                if t.requires_grad() {
                    leaves.map.insert(t.id(), g);
                }
                continue;
            };
            let inputs: Vec<&Tensor> = node.inputs.iter().collect();
            let dxs = node.op.backward(&inputs, t, &g).map_err(|e| in_op(e, node.op.name(), "backward"))?;
            if dxs.len() != inputs.len() {
                return Err(Error::Autograd(format!(
                    "{}: backward returned {} gradients for {} inputs",
                    node.op.name(),
                    dxs.len(),
                    inputs.len()
                )));
            }
            for (x, dx) in inputs.iter().zip(dxs) {
                let Some(dx) = dx else { continue };
                if !x.requires_grad() {
                    continue;
                }
                if dx.shape() != x.shape() {
                    return Err(Error::Autograd(format!(
                        "{}: gradient of shape {:?} for an input of shape {:?}",
                        node.op.name(),
                        dx.shape(),
                        x.shape()
                    )));
                }
                let acc = match grads.remove(&x.id()) {
                    Some(prev) => prev.try_add(&dx)?,
                    None => dx,
                };
                grads.insert(x.id(), acc);
            }
        }
        Ok(leaves)
    }
}

/// Tensors reachable from `root` through nodes, inputs before the tensors made from them.
/// Iterative DFS: video models have deep graphs.
fn topo_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    let mut stack: Vec<(Tensor, bool)> = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !seen.insert(t.id()) {
            continue;
        }
        stack.push((t.clone(), true));
        if let Some(node) = &t.0.node {
            for x in &node.inputs {
                if x.requires_grad() && !seen.contains(&x.id()) {
                    stack.push((x.clone(), false));
                }
            }
        }
    }
    order
}
