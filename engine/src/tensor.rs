//! `Tensor`: a contiguous f32 GPU buffer, a shape, and (when it was made by an op under autograd)
//! the node that made it. Cloning a tensor clones a handle, never the data.
//!
//! Creation: [`Tensor::zeros`], [`Tensor::ones`], [`Tensor::full`], [`Tensor::from_slice`],
//! seeded [`Tensor::rand_uniform`] / [`Tensor::randn`]. Readback: [`Tensor::to_vec`].
//! Every op has an infallible method (`x.exp()`, panics with a shape-annotated message) and a
//! `try_` twin returning [`Result`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::autograd::Node;
use crate::error::{Error, Result};
use crate::gpu::{gpu, Gpu};
use crate::reference::CpuTensor;
use crate::shape::{checked_numel, numel, Shape};

/// Owns one pooled GPU buffer; returns it to the pool when the last handle goes.
pub(crate) struct Storage {
    buf: Option<wgpu::Buffer>,
}

impl Storage {
    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        self.buf.as_ref().expect("live storage")
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let (Some(buf), Ok(gpu)) = (self.buf.take(), Gpu::global()) {
            gpu.release(buf);
        }
    }
}

pub(crate) struct TensorInner {
    pub(crate) id: usize,
    pub(crate) storage: Arc<Storage>,
    pub(crate) shape: Shape,
    pub(crate) requires_grad: bool,
    pub(crate) node: Option<Node>,
}

/// A handle to an f32 tensor on the GPU.
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<TensorInner>);

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// The id the next tensor will get: every tensor made before this call has a smaller one
/// (activation checkpointing tells a segment's own tensors from those it captured this way).
pub(crate) fn next_id() -> usize {
    NEXT_ID.load(Ordering::Relaxed)
}

/// The element count of a tensor about to be filled on the host, checked against the device's
/// largest buffer first: the host Vec must not be allocated (or abort the process) for a tensor
/// the device would refuse anyway.
fn host_len(shape: &[usize]) -> Result<usize> {
    let n = checked_numel(shape)?;
    Gpu::global()?.check_size(4 * n as u64, &format!("a tensor of shape {shape:?}"))?;
    Ok(n)
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor{:?}", self.shape())?;
        if let Some(n) = &self.0.node {
            write!(f, " <- {}", n.op.name())?;
        }
        Ok(())
    }
}

impl Tensor {
    /// An uninitialised tensor for a kernel to write into.
    pub fn empty(shape: &[usize]) -> Result<Tensor> {
        let gpu = Gpu::global()?;
        let n = checked_numel(shape)?;
        let buf = gpu.alloc(4 * n as u64, &format!("a tensor of shape {shape:?}"))?;
        Ok(Tensor::from_storage(
            Arc::new(Storage { buf: Some(buf) }),
            shape.into(),
        ))
    }

    pub(crate) fn from_storage(storage: Arc<Storage>, shape: Shape) -> Tensor {
        Tensor(Arc::new(TensorInner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            storage,
            shape,
            requires_grad: false,
            node: None,
        }))
    }

    pub fn try_full(shape: &[usize], value: f32) -> Result<Tensor> {
        let y = Tensor::empty(shape)?;
        Gpu::global()?.fill(y.buffer(), y.numel(), value)?;
        Ok(y)
    }

    pub fn full(shape: &[usize], value: f32) -> Tensor {
        Tensor::try_full(shape, value).unwrap_or_else(|e| panic!("full{shape:?}: {e}"))
    }

    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    pub fn ones(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 1.0)
    }

    /// A tensor holding `data` (row-major) with `shape`.
    pub fn from_slice(data: &[f32], shape: &[usize]) -> Result<Tensor> {
        let n = checked_numel(shape)?;
        if data.len() != n {
            crate::bail!(
                Shape,
                "from_slice: {} values do not fill shape {shape:?} ({n} elements)",
                data.len()
            );
        }
        let y = Tensor::empty(shape)?;
        if !data.is_empty() {
            gpu().upload(y.buffer(), bytemuck::cast_slice(data));
        }
        Ok(y)
    }

    /// Uniform in `[lo, hi)`, from a seeded generator (same values on every device).
    pub fn rand_uniform(shape: &[usize], lo: f32, hi: f32, seed: u64) -> Result<Tensor> {
        let mut rng = crate::Rng::new(seed);
        let data: Vec<f32> = (0..host_len(shape)?)
            .map(|_| lo + (hi - lo) * rng.uniform() as f32)
            .collect();
        Tensor::from_slice(&data, shape)
    }

    /// Normal with `mean` and `std`, from a seeded generator.
    pub fn randn(shape: &[usize], mean: f32, std: f32, seed: u64) -> Result<Tensor> {
        let mut rng = crate::Rng::new(seed);
        let data: Vec<f32> = (0..host_len(shape)?)
            .map(|_| mean + std * rng.normal() as f32)
            .collect();
        Tensor::from_slice(&data, shape)
    }

    /// Truncated normal on [mean − 2·std, mean + 2·std] (timm's `trunc_normal_(std=.02)`).
    pub fn trunc_normal(shape: &[usize], std: f32, seed: u64) -> Result<Tensor> {
        let mut rng = crate::Rng::new(seed);
        let data: Vec<f32> = (0..host_len(shape)?)
            .map(|_| loop {
                let z = rng.normal();
                if z.abs() <= 2.0 {
                    break std * z as f32;
                }
            })
            .collect();
        Tensor::from_slice(&data, shape)
    }

    pub fn from_cpu(t: &CpuTensor) -> Result<Tensor> {
        let data: Vec<f32> = t.data.iter().map(|&v| v as f32).collect();
        Tensor::from_slice(&data, &t.shape)
    }

    /// Copies the values back to the host.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        if self.numel() == 0 {
            // NOTE: an empty byte Vec is not f32-aligned, and bytemuck's cast panics on it.
            return Ok(Vec::new());
        }
        let bytes = gpu().download(self.buffer(), 4 * self.numel() as u64)?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }

    pub fn to_cpu(&self) -> Result<CpuTensor> {
        let v = self.to_vec()?;
        Ok(CpuTensor::new(
            self.shape().to_vec(),
            v.into_iter().map(f64::from).collect(),
        ))
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            crate::bail!(
                Shape,
                "item: tensor of shape {:?} has {} elements, not 1",
                self.shape(),
                self.numel()
            );
        }
        Ok(self.to_vec()?[0])
    }

    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    pub fn rank(&self) -> usize {
        self.0.shape.len()
    }

    /// Size of dimension `d`; negative counts from the end.
    pub fn dim(&self, d: isize) -> usize {
        self.0.shape[self.axis(d).unwrap_or_else(|e| panic!("{e}"))]
    }

    /// Resolves a possibly negative axis against this tensor's rank.
    pub fn axis(&self, d: isize) -> Result<usize> {
        let r = self.rank() as isize;
        let a = if d < 0 { d + r } else { d };
        if a < 0 || a >= r {
            return Err(Error::Shape(format!(
                "axis {d} is out of range for shape {:?}",
                self.shape()
            )));
        }
        Ok(a as usize)
    }

    pub fn numel(&self) -> usize {
        numel(&self.0.shape)
    }

    pub fn id(&self) -> usize {
        self.0.id
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        self.0.storage.buffer()
    }

    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }

    /// The same storage, marked as a leaf that receives a gradient (a trainable parameter).
    pub fn param(&self) -> Tensor {
        Tensor(Arc::new(TensorInner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            storage: self.0.storage.clone(),
            shape: self.0.shape.clone(),
            requires_grad: true,
            node: None,
        }))
    }

    /// The same storage, cut from the graph, a leaf that receives a gradient when this tensor
    /// would (activation checkpointing's segment inputs: the recompute starts from them).
    pub(crate) fn boundary_leaf(&self) -> Tensor {
        Tensor(Arc::new(TensorInner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            storage: self.0.storage.clone(),
            shape: self.0.shape.clone(),
            requires_grad: self.0.requires_grad,
            node: None,
        }))
    }

    /// The same storage, cut from the graph.
    pub fn detach(&self) -> Tensor {
        Tensor::from_storage(self.0.storage.clone(), self.0.shape.clone())
    }

    /// Whether two handles share one buffer (reshape views do).
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    /// A view of the same storage with another shape (the reshape op's forward).
    pub(crate) fn view(&self, shape: &[usize]) -> Tensor {
        Tensor::from_storage(self.0.storage.clone(), shape.into())
    }

    pub(crate) fn with_node(self, node: Node) -> Tensor {
        // Always a new identity: an op may return its input's storage (identity reshapes,
        // broadcasts to the same shape), and the tape keys gradients by id.
        Tensor(Arc::new(TensorInner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            storage: self.0.storage.clone(),
            shape: self.0.shape.clone(),
            requires_grad: true,
            node: Some(node),
        }))
    }

    /// Copies `src`'s values into this tensor's storage in place (same shape): used by the
    /// optimiser and weight loading. Not recorded by autograd.
    pub fn assign(&self, src: &Tensor) -> Result<()> {
        if self.shape() != src.shape() {
            crate::bail!(
                Shape,
                "assign: shape {:?} into {:?}",
                src.shape(),
                self.shape()
            );
        }
        gpu().copy(src.buffer(), src.shape(), self.buffer(), self.shape())
    }

    /// Overwrites this tensor's storage with `data` (same number of elements).
    pub fn write(&self, data: &[f32]) -> Result<()> {
        if data.len() != self.numel() {
            crate::bail!(
                Shape,
                "write: {} values into shape {:?}",
                data.len(),
                self.shape()
            );
        }
        gpu().upload(self.buffer(), bytemuck::cast_slice(data));
        Ok(())
    }
}

/// Integer indices on the GPU (class labels, gather positions), u32, with their host copy:
/// ops that need index structure (e.g. scatter lists for a gather's backward) build it from the
/// host copy at creation, never by reading the GPU back.
#[derive(Clone)]
pub struct Indices {
    storage: Arc<Storage>,
    host: Arc<Vec<u32>>,
}

impl Indices {
    pub fn from_slice(data: &[u32]) -> Result<Indices> {
        let gpu = Gpu::global()?;
        let buf = gpu.alloc(
            4 * data.len().max(1) as u64,
            &format!("{} indices", data.len()),
        )?;
        if !data.is_empty() {
            gpu.upload(&buf, bytemuck::cast_slice(data));
        }
        Ok(Indices {
            storage: Arc::new(Storage { buf: Some(buf) }),
            host: Arc::new(data.to_vec()),
        })
    }

    pub fn len(&self) -> usize {
        self.host.len()
    }

    pub fn is_empty(&self) -> bool {
        self.host.is_empty()
    }

    /// The values, as uploaded.
    pub fn host(&self) -> &[u32] {
        &self.host
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        self.storage.buffer()
    }
}

impl std::fmt::Debug for Indices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Indices[{}]", self.len())
    }
}
