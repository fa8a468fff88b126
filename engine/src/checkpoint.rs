//! Activation checkpointing (Chen et al., "Training Deep Nets with Sublinear Memory Cost",
//! arXiv:1604.06174; PyTorch's `torch.utils.checkpoint`, which Video Swin's `use_checkpoint`
//! calls): a checkpointed segment of the tape (a block, a stage) keeps only its inputs and its
//! output through the forward, and runs again inside the backward to rebuild its activations.
//!
//! One tape node, op [`Checkpoint`], stands for the whole segment. Its inputs are the segment's
//! inputs plus every tensor from outside the segment that its graph reached and that needs a
//! gradient (the block's parameters, found by walking the segment's graph once in the forward:
//! a tensor made before the segment began has a smaller id, see `tensor::next_id`). Its
//! backward re-runs the segment with gradients on from fresh leaves that share the inputs'
//! storage, back-propagates the upstream gradient through that graph only (`autograd::backprop`
//! stops at the segment's boundary), and returns the inputs' and the captured tensors'
//! gradients; the rebuilt graph is dropped before the walk goes on.
//!
//! Exactness (the test: tests/tests/memory.rs): the recompute runs the same kernels on the same
//! values, so the gradients are bit-identical to the uncheckpointed run's. Three things would
//! otherwise differ, and are handled here:
//! - dropout and drop path masks: the seeds the segment's forward drew are recorded in order
//!   and replayed in the recompute ([`replay_seed`], called by ops/dropout.rs and
//!   ops/drop_path.rs), whatever the model derives them from (a counter would give new ones);
//! - BatchNorm's running statistics: not updated twice ([`is_recomputing`], ops/batch_norm.rs);
//! - counters that models advance per forward (models/src/blocks.rs's drop-path seed counter)
//!   can ask [`is_recomputing`] and leave themselves alone.
//!
//! Segments are marked by the models ([`segment`]); which are checkpointed is a thread-wide
//! mode ([`set_checkpointing`], `tubelet train --checkpoint blocks|stages|none`). Segments do
//! not nest: inside a checkpointed segment (its forward or its recompute) an inner segment is
//! an ordinary part of the outer one.
//!
//! Memory: the forward records the segment's graph with gradients on and drops it at the
//! segment's end, so the forward's peak holds one segment's activations on top of the kept
//! inputs (PyTorch runs the segment under no_grad and frees them as it goes; the backward's peak,
//! which dominates, is the same in both: one segment's activations plus the kept inputs).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::autograd::{backprop, is_grad_enabled, EnableGradGuard, Node};
use crate::error::{Error, Result};
use crate::ops::Op;
use crate::reference::CpuTensor;
use crate::tensor::{next_id, Tensor};

/// Which marked segments are checkpointed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Checkpointing {
    /// None: every activation is kept for the backward.
    #[default]
    None,
    /// Every transformer (or residual) block.
    Blocks,
    /// Every stage of the hierarchical models (Video Swin, UniFormer, MViT); models without
    /// stages (ViViT, TimeSformer) checkpoint their blocks.
    Stages,
}

impl std::str::FromStr for Checkpointing {
    type Err = Error;
    fn from_str(s: &str) -> Result<Checkpointing> {
        match s {
            "none" => Ok(Checkpointing::None),
            "blocks" => Ok(Checkpointing::Blocks),
            "stages" => Ok(Checkpointing::Stages),
            other => Err(Error::Config(format!(
                "checkpointing {other:?} is not one of none, blocks, stages"
            ))),
        }
    }
}

impl std::fmt::Display for Checkpointing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Checkpointing::None => "none",
            Checkpointing::Blocks => "blocks",
            Checkpointing::Stages => "stages",
        })
    }
}

/// What a model marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A block inside a stage: checkpointed under [`Checkpointing::Blocks`].
    Block,
    /// A stage (its blocks, with or without its downsampling): under [`Checkpointing::Stages`].
    Stage,
    /// A block of a model that has no stages: under both.
    Layer,
}

enum SeedTape {
    Record(Vec<u64>),
    Replay(std::vec::IntoIter<u64>),
}

thread_local! {
    static MODE: Cell<Checkpointing> = const { Cell::new(Checkpointing::None) };
    /// Set while a checkpointed segment's forward or recompute runs (segments do not nest).
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    static RECOMPUTING: Cell<bool> = const { Cell::new(false) };
    static SEEDS: RefCell<Option<SeedTape>> = const { RefCell::new(None) };
}

/// Sets which marked segments the forwards on this thread checkpoint; returns the previous mode.
pub fn set_checkpointing(mode: Checkpointing) -> Checkpointing {
    MODE.with(|m| m.replace(mode))
}

/// The mode set by [`set_checkpointing`] (none by default).
pub fn checkpointing() -> Checkpointing {
    MODE.with(Cell::get)
}

/// Whether a segment is being recomputed inside the backward: side effects that must happen
/// once per training forward (running statistics, seed counters) are skipped then.
pub fn is_recomputing() -> bool {
    RECOMPUTING.with(Cell::get)
}

/// The seed a dropout or drop-path op of a checkpointed segment uses: `seed` itself in the
/// forward (recorded), the forward's seed at the same position in the recompute. Outside a
/// segment, `seed`.
pub(crate) fn replay_seed(seed: u64) -> Result<u64> {
    SEEDS.with(|s| match s.borrow_mut().as_mut() {
        None => Ok(seed),
        Some(SeedTape::Record(v)) => {
            v.push(seed);
            Ok(seed)
        }
        Some(SeedTape::Replay(it)) => it.next().ok_or_else(|| {
            Error::Autograd(
                "checkpoint: the recompute of a segment drew more dropout/drop-path masks than its \
                 forward (the segment's code must be deterministic)"
                    .into(),
            )
        }),
    })
}

/// Restores the thread's segment state when a forward or recompute ends, errors included.
struct Scope {
    recomputing: bool,
    seeds: Option<SeedTape>,
    finished: bool,
}

impl Scope {
    fn enter(recomputing: bool, seeds: SeedTape) -> Scope {
        ACTIVE.with(|a| a.set(true));
        Scope {
            recomputing: RECOMPUTING.with(|r| r.replace(recomputing)),
            seeds: SEEDS.with(|s| s.replace(Some(seeds))),
            finished: false,
        }
    }

    /// Ends the scope and hands back the seed tape it used.
    fn finish(mut self) -> Option<SeedTape> {
        self.finished = true;
        let prev = self.seeds.take();
        SEEDS.with(|s| s.replace(prev))
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        ACTIVE.with(|a| a.set(false));
        RECOMPUTING.with(|r| r.set(self.recomputing));
        if !self.finished {
            let prev = self.seeds.take();
            SEEDS.with(|s| s.replace(prev));
        }
    }
}

type SegmentFn = dyn Fn(&[Tensor]) -> Result<Tensor> + Send + Sync;

/// `f(x)`, checkpointed when the mode set by [`set_checkpointing`] covers `kind` and a gradient
/// is being recorded; otherwise `f(x)` as it is. `f` must own what it uses (clone the block:
/// its tensors are handles, so the clone shares the parameters) and compute the same thing
/// when called again; its dropout/drop-path masks are replayed.
pub fn segment<F>(kind: Segment, x: &Tensor, f: F) -> Result<Tensor>
where
    F: Fn(&Tensor) -> Result<Tensor> + Send + Sync + 'static,
{
    let on = match (checkpointing(), kind) {
        (Checkpointing::None, _) => false,
        (Checkpointing::Blocks, k) => k != Segment::Stage,
        (Checkpointing::Stages, k) => k != Segment::Block,
    };
    if !on {
        return f(x);
    }
    checkpoint(&[x], move |xs: &[Tensor]| f(&xs[0]))
}

/// `f(xs)` as one checkpointed tape node (whatever the mode): only `xs`, the output and the
/// captured parameters are kept; `f` runs again in the backward. Runs `f` plainly when no
/// gradient is recorded, and inside another checkpointed segment.
pub fn checkpoint<F>(xs: &[&Tensor], f: F) -> Result<Tensor>
where
    F: Fn(&[Tensor]) -> Result<Tensor> + Send + Sync + 'static,
{
    if !is_grad_enabled() || ACTIVE.with(Cell::get) {
        let owned: Vec<Tensor> = xs.iter().map(|&x| x.clone()).collect();
        return f(&owned);
    }
    let start = next_id();
    let leaves: Vec<Tensor> = xs.iter().map(|x| x.boundary_leaf()).collect();
    let scope = Scope::enter(false, SeedTape::Record(Vec::new()));
    let out = f(&leaves)?;
    let seeds = match scope.finish() {
        Some(SeedTape::Record(v)) => v,
        _ => Vec::new(),
    };
    if !out.requires_grad() {
        return Ok(out); // nothing will back-propagate through it: nothing to recompute
    }
    let leaf_ids: HashSet<usize> = leaves.iter().map(Tensor::id).collect();
    let captured = captured_inputs(&out, start, &leaf_ids);
    let y = out.detach();
    drop(out); // the segment's graph and activations go here
    let mut inputs: Vec<Tensor> = xs.iter().map(|&x| x.clone()).collect();
    inputs.extend(captured);
    let op = Checkpoint {
        f: Arc::new(f),
        n_inputs: xs.len(),
        seeds,
        out_shape: y.shape().to_vec(),
    };
    Ok(y.with_node(Node {
        op: Box::new(op),
        inputs,
    }))
}

/// Tensors from outside the segment (made before `start`, other than its input leaves) that its
/// graph reached and that need a gradient, in a fixed order (first reached first).
fn captured_inputs(out: &Tensor, start: usize, leaf_ids: &HashSet<usize>) -> Vec<Tensor> {
    let mut seen = HashSet::new();
    let mut found = Vec::new();
    let mut stack = vec![out.clone()];
    while let Some(t) = stack.pop() {
        if !seen.insert(t.id()) || leaf_ids.contains(&t.id()) {
            continue;
        }
        if t.id() < start {
            if t.requires_grad() {
                found.push(t);
            }
            continue;
        }
        if let Some(node) = &t.0.node {
            for x in node.inputs.iter().rev() {
                if x.requires_grad() {
                    stack.push(x.clone());
                }
            }
        }
    }
    found
}

/// The tape node of a checkpointed segment. Inputs: the segment's inputs, then the captured
/// tensors. No kernel of its own: [`Op::reference`] is not meaningful for it and says so.
struct Checkpoint {
    f: Arc<SegmentFn>,
    n_inputs: usize,
    /// Dropout/drop-path seeds the forward drew, in order.
    seeds: Vec<u64>,
    out_shape: Vec<usize>,
}

impl Op for Checkpoint {
    fn name(&self) -> &'static str {
        "checkpoint"
    }

    // The segment's own ops carry the references; a checkpoint node is only ever made by
    // `checkpoint`, never run through the op registry.
    fn reference(&self, _x: &[&CpuTensor]) -> CpuTensor {
        unreachable!("checkpoint has no CPU reference: its segment's ops have theirs")
    }

    fn reference_backward(&self, _x: &[&CpuTensor], _dy: &CpuTensor) -> Vec<Option<CpuTensor>> {
        unreachable!("checkpoint has no CPU reference: its segment's ops have theirs")
    }

    fn forward(&mut self, _x: &[&Tensor]) -> Result<Tensor> {
        Err(Error::Autograd(
            "checkpoint: made by tubelet::checkpoint::checkpoint, not by apply".into(),
        ))
    }

    fn backward(&self, x: &[&Tensor], _y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let _grad = EnableGradGuard::new();
        let start = next_id();
        let leaves: Vec<Tensor> = x[..self.n_inputs]
            .iter()
            .map(|t| t.boundary_leaf())
            .collect();
        let scope = Scope::enter(true, SeedTape::Replay(self.seeds.clone().into_iter()));
        let out = (self.f)(&leaves)?;
        let left = match scope.finish() {
            Some(SeedTape::Replay(it)) => it.len(),
            _ => 0,
        };
        if left != 0 || out.shape() != self.out_shape.as_slice() {
            return Err(Error::Autograd(format!(
                "checkpoint: the recompute of a segment differs from its forward (output {:?} against {:?}, \
                 {left} of {} dropout/drop-path seeds unused): the segment's code must be deterministic",
                out.shape(),
                self.out_shape,
                self.seeds.len()
            )));
        }
        let leaf_ids: HashSet<usize> = leaves.iter().map(Tensor::id).collect();
        let mut grads: HashMap<usize, Tensor> = if out.requires_grad() {
            let _off = crate::autograd::NoGradGuard::new(); // the backward records nothing
                                                            // `out` moves in: the recomputed activations are freed as the walk passes them.
            backprop(
                out,
                dy.clone(),
                &|t: &Tensor| t.id() < start || leaf_ids.contains(&t.id()),
                &mut |_, _| Ok(()),
            )?
        } else {
            HashMap::new()
        };
        let mut dxs: Vec<Option<Tensor>> = leaves.iter().map(|l| grads.remove(&l.id())).collect();
        dxs.extend(x[self.n_inputs..].iter().map(|t| grads.remove(&t.id())));
        Ok(dxs)
    }
}
