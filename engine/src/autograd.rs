//! Reverse-mode autograd.
//!
//! Every tensor made by an op while gradients are enabled, from at least one input that requires
//! a gradient, carries a [`Node`]: the op (which keeps whatever its backward needs) and its
//! inputs. The nodes form the tape; [`Tensor::backward`] walks it in reverse topological order,
//! micrograd style.
//!
//! CONTRACT for every [`Op::backward`] (the trait is defined below, the ops in ops/):
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
use crate::reference::CpuTensor;
use crate::tensor::Tensor;

/// A differentiable kernel op. The backward contract is the CONTRACT above;
/// every op lives in `ops/<name>.rs` and is listed in `ops::for_each_op!`.
pub trait Op: Send + Sync + 'static {
    /// The op's name, as in `ops/<name>.rs` (with its variant where it has one).
    fn name(&self) -> &'static str;
    /// CPU reference in f64: the definition every kernel is tested against. Never optimised.
    fn reference(&self, x: &[&CpuTensor]) -> CpuTensor;
    /// CPU vector-Jacobian product in f64 (checked against finite differences of `reference`).
    fn reference_backward(&self, x: &[&CpuTensor], dy: &CpuTensor) -> Vec<Option<CpuTensor>>;
    /// GPU forward; may stash what backward needs in `self` (it is kept on the tape).
    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor>;
    /// GPU vector-Jacobian product: one entry per input, consuming `dy`.
    fn backward(&self, x: &[&Tensor], y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>>;
}

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

/// Gradient recording on until dropped: activation checkpointing's recompute runs inside the
/// backward (which records nothing) and must record the segment again.
pub(crate) struct EnableGradGuard(bool);

impl EnableGradGuard {
    pub(crate) fn new() -> EnableGradGuard {
        EnableGradGuard(GRAD_ENABLED.with(|g| g.replace(true)))
    }
}

impl Drop for EnableGradGuard {
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
    let y = op
        .forward(inputs)
        .map_err(|e| in_op(e, op.name(), "forward"))?;
    if is_grad_enabled() && inputs.iter().any(|t| t.requires_grad()) {
        let node = Node {
            op: Box::new(op),
            inputs: inputs.iter().map(|&t| t.clone()).collect(),
        };
        Ok(y.with_node(node))
    } else {
        Ok(y)
    }
}

/// A device-limit error names the op and pass that hit it (the allocation itself only knows the
/// tensor's shape); other errors already name their op.
fn in_op(e: Error, op: &str, pass: &str) -> Error {
    match e {
        Error::DeviceLimit(m) if !m.starts_with("in ") => {
            Error::DeviceLimit(format!("in {op} {pass}: {m}"))
        }
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

    /// Sets the gradient of `t` (data-parallel training writes the ranks' average back).
    pub fn insert(&mut self, t: &Tensor, g: Tensor) {
        self.map.insert(t.id(), g);
    }

    /// Gradient accumulation: adds `other`'s gradients into these, tensor by tensor (a
    /// parameter only one of the two reached keeps the gradient it has). With a mean-reduced
    /// loss scaled by 1/K on each of K micro-batches of B clips (`loss.try_mul_scalar(1/K)`, or
    /// [`Grads::scale`] afterwards), the sum is the gradient of one batch of K·B clips, up to
    /// f32 rounding: the engine's mean is a sum times 1/(K·B) in one case and a sum of K
    /// partial means in the other. Not equal for BatchNorm models: their statistics are per
    /// micro-batch, as in PyTorch (and drop path/dropout draw their masks per micro-batch).
    ///
    /// ```no_run
    /// # use tubelet::{Grads, Tensor};
    /// # fn micro_loss(k: usize) -> Tensor { unimplemented!() }
    /// let k = 4;
    /// let mut acc = Grads::default();
    /// for i in 0..k {
    ///     let loss = micro_loss(i).try_mul_scalar(1.0 / k as f32).unwrap();
    ///     acc.accumulate(loss.backward().unwrap()).unwrap(); // micro-batch i's graph is freed here
    /// }
    /// // optimiser.step(&acc)
    /// ```
    pub fn accumulate(&mut self, other: Grads) -> Result<()> {
        let _guard = NoGradGuard::new();
        for (id, g) in other.map {
            let sum = match self.map.remove(&id) {
                Some(prev) => {
                    if prev.shape() != g.shape() {
                        return Err(Error::Autograd(format!(
                            "accumulate: gradients of shapes {:?} and {:?} for one tensor",
                            prev.shape(),
                            g.shape()
                        )));
                    }
                    prev.try_add(&g)?
                }
                None => g,
            };
            self.map.insert(id, sum);
        }
        Ok(())
    }

    /// Multiplies every gradient by `s` (e.g. 1/K after accumulating K micro-batches of an
    /// unscaled mean loss).
    pub fn scale(&mut self, s: f32) -> Result<()> {
        let _guard = NoGradGuard::new();
        for g in self.map.values_mut() {
            *g = g.try_mul_scalar(s)?;
        }
        Ok(())
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
        let map = backprop(self.clone(), dy, &|_| false, &mut |_, _| Ok(()))?;
        Ok(Grads { map })
    }

    /// [`Tensor::backward`], calling `on_final(leaf, grad)` as soon as a leaf's gradient is
    /// final: the walk is in reverse topological order, so when a leaf comes up every consumer
    /// has already added its share. Data-parallel training starts a bucket's all-reduce from
    /// here while the rest of the backward runs (train/src/dist.rs). The order of the calls is
    /// a function of the graph alone, so it is the same on every rank.
    pub fn backward_each(
        &self,
        on_final: &mut dyn FnMut(&Tensor, &Tensor) -> Result<()>,
    ) -> Result<Grads> {
        if self.numel() != 1 {
            return Err(Error::Autograd(format!(
                "backward needs a scalar (one element), got shape {:?}",
                self.shape()
            )));
        }
        let _guard = NoGradGuard::new();
        let seed = Tensor::try_full(self.shape(), 1.0)?;
        let map = backprop(self.clone(), seed, &|_| false, on_final)?;
        Ok(Grads { map })
    }
}

/// Back-propagates `dy` from `root` and returns the gradients of the tensors where the walk
/// stops: leaves that require a gradient, and tensors for which `boundary` is true (their nodes
/// are not entered; activation checkpointing stops at a segment's inputs this way). Runs with
/// gradients disabled (the caller holds the guard). `on_leaf(leaf, grad)` is called as each
/// leaf's gradient becomes final ([`Tensor::backward_each`]).
///
/// Memory: each tensor's handle is dropped once its node's backward has run; its consumers'
/// came first, so when the caller holds no other handle to `root` (a checkpointed segment's
/// recompute) every activation is freed as soon as the walk has passed it, as PyTorch frees
/// saved tensors. The processing order is unchanged (reverse topological).
pub(crate) fn backprop(
    root: Tensor,
    dy: Tensor,
    boundary: &dyn Fn(&Tensor) -> bool,
    on_leaf: &mut dyn FnMut(&Tensor, &Tensor) -> Result<()>,
) -> Result<HashMap<usize, Tensor>> {
    let mut order = topo_order(&root, boundary);
    let mut grads: HashMap<usize, Tensor> = HashMap::new();
    grads.insert(root.id(), dy);
    drop(root);
    let mut leaves = HashMap::new();
    while let Some(t) = order.pop() {
        let t = &t;
        let Some(g) = grads.remove(&t.id()) else {
            continue;
        };
        let node = match &t.0.node {
            Some(node) if !boundary(t) => node,
            _ => {
                if t.requires_grad() {
                    on_leaf(t, &g)?;
                    leaves.insert(t.id(), g);
                }
                continue;
            }
        };
        let inputs: Vec<&Tensor> = node.inputs.iter().collect();
        let dxs = node
            .op
            .backward(&inputs, t, &g)
            .map_err(|e| in_op(e, node.op.name(), "backward"))?;
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

/// Tensors reachable from `root` through nodes, inputs before the tensors made from them.
/// Iterative DFS: video models have deep graphs.
/// Nodes of `boundary` tensors are not entered.
fn topo_order(root: &Tensor, boundary: &dyn Fn(&Tensor) -> bool) -> Vec<Tensor> {
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
        if let Some(node) = t.0.node.as_ref().filter(|_| !boundary(&t)) {
            for x in &node.inputs {
                if x.requires_grad() && !seen.contains(&x.id()) {
                    stack.push((x.clone(), false));
                }
            }
        }
    }
    order
}
