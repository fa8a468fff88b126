//! `index_select`: rows of a table (V, ...) picked by integer indices along axis 0 → (L, ...)
//! (token embeddings, position tables, frame sampling).
//! y[l, c] = x[idx[l], c];   dx[v, c] = Σ_{l : idx[l] = v} dy[l, c]   (scatter-add).
//! Kernels: shaders/gather_forward.wgsl, shaders/gather_backward.wgsl.
//!
//! The scatter-add uses no float atomics and is deterministic: when a gradient will be needed,
//! the forward builds from the indices' host copy (never a GPU readback) the CSR lists of the
//! positions that read each table row, sorted by row, and uploads them; one invocation per
//! (row, column) then sums its positions' dy in list order. A row read more than `chunk` times is
//! split into segments summed separately and added up by a second pass over the same kernel, so
//! no invocation loops more than `chunk` times (Mesa 22's llvmpipe stops loops at 65,535 trips).

use std::sync::Arc;

use crate::autograd::{apply, is_grad_enabled};
use crate::error::{Error, Result};
use crate::gpu::{gpu, grid};
use crate::kernel;
use crate::ops::Op;
use crate::reference::CpuTensor;
use crate::shape::numel;
use crate::tensor::{Indices, Tensor};

/// Most positions one backward invocation sums (well below lavapipe's 65,535-trip loop limit).
pub const CHUNK: usize = 32_768;

#[derive(Clone)]
pub struct Gather {
    /// The gathered table rows, host copy: the reference and the scatter lists read it.
    host: Arc<Vec<u32>>,
    /// The same on the GPU: the caller's `Indices`, or uploaded at the first forward (tests).
    index: Option<Indices>,
    /// The backward's lists, built by a forward that will need a gradient.
    scatter: Option<Scatter>,
    /// Positions per backward segment (`CHUNK`; tests lower it to exercise the second pass).
    chunk: usize,
}

/// CSR lists for the scatter-add (see gather_backward.wgsl).
#[derive(Clone)]
struct Scatter {
    /// Pass 1: segment s sums dy at `positions[seg_offsets[s]..seg_offsets[s + 1]]`.
    seg_offsets: Indices,
    positions: Indices,
    segments: usize,
    /// Pass 2, only when a row was split: row v sums partial segments
    /// `row_offsets[v]..row_offsets[v + 1]`, read through the identity list `0..segments`.
    merge: Option<(Indices, Indices)>,
}

impl std::fmt::Debug for Gather {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Gather {{ {} indices, chunk {} }}",
            self.host.len(),
            self.chunk
        )
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    d: u32,
}

/// Host-side scatter lists for `index` into a table of `rows` rows:
/// (segment offsets, positions sorted by row, per-row segment offsets when some row is split).
fn scatter_lists(
    index: &[u32],
    rows: usize,
    chunk: usize,
) -> (Vec<u32>, Vec<u32>, Option<Vec<u32>>) {
    // Counting sort by row: stable, so each row's positions stay in increasing order.
    let mut row_start = vec![0u32; rows + 1];
    for &v in index {
        row_start[v as usize + 1] += 1;
    }
    for v in 0..rows {
        row_start[v + 1] += row_start[v];
    }
    let mut fill = row_start.clone();
    let mut positions = vec![0u32; index.len()];
    for (l, &v) in index.iter().enumerate() {
        positions[fill[v as usize] as usize] = l as u32;
        fill[v as usize] += 1;
    }
    let max_count = (0..rows)
        .map(|v| row_start[v + 1] - row_start[v])
        .max()
        .unwrap_or(0);
    if max_count as usize <= chunk {
        return (row_start, positions, None); // segments are rows
    }
    // Split every row into segments of at most `chunk` positions.
    let mut seg_offsets = vec![0u32];
    let mut row_offsets = vec![0u32];
    for v in 0..rows {
        let mut s = row_start[v];
        while s < row_start[v + 1] {
            s = (s + chunk as u32).min(row_start[v + 1]);
            seg_offsets.push(s);
        }
        row_offsets.push(seg_offsets.len() as u32 - 1);
    }
    (seg_offsets, positions, Some(row_offsets))
}

impl Gather {
    /// The op for `indices` (GPU copy and host copy).
    pub fn new(indices: &Indices) -> Gather {
        Gather {
            host: Arc::new(indices.host().to_vec()),
            index: Some(indices.clone()),
            scatter: None,
            chunk: CHUNK,
        }
    }

    /// The op from host values only; they are uploaded by the first forward.
    pub fn from_host(indices: Vec<u32>, chunk: usize) -> Gather {
        Gather {
            host: Arc::new(indices),
            index: None,
            scatter: None,
            chunk: chunk.max(1),
        }
    }

    fn check(&self, shape: &[usize]) -> Result<()> {
        if shape.is_empty() {
            crate::bail!(
                Shape,
                "index_select: the table must have rank ≥ 1, got shape {shape:?}"
            );
        }
        if let Some((l, &v)) = self
            .host
            .iter()
            .enumerate()
            .find(|&(_, &v)| v as usize >= shape[0])
        {
            crate::bail!(
                Shape,
                "index_select: index {v} at position {l} is out of range for a table \
                of {} rows (shape {shape:?})",
                shape[0]
            );
        }
        Ok(())
    }

    fn build_scatter(&self, rows: usize) -> Result<Scatter> {
        let (seg_offsets, positions, row_offsets) = scatter_lists(&self.host, rows, self.chunk);
        let segments = seg_offsets.len() - 1;
        let merge = match row_offsets {
            Some(r) => Some((
                Indices::from_slice(&r)?,
                Indices::from_slice(&(0..segments as u32).collect::<Vec<_>>())?,
            )),
            None => None,
        };
        Ok(Scatter {
            seg_offsets: Indices::from_slice(&seg_offsets)?,
            positions: Indices::from_slice(&positions)?,
            segments,
            merge,
        })
    }
}

/// One launch of the CSR sum: out (R, D) with out[r] = Σ over list r of src rows.
fn csr_sum(
    src: &Tensor,
    offsets: &Indices,
    pos: &Indices,
    rows: usize,
    d: usize,
    out_shape: &[usize],
) -> Result<Tensor> {
    let out = Tensor::empty(out_shape)?;
    let n = rows * d;
    // (·, D) summed by lists -> (R, D)
    gpu().dispatch(
        kernel!(gather_backward),
        &[],
        &[src.buffer(), offsets.buffer(), pos.buffer(), out.buffer()],
        &Params {
            n: n as u32,
            d: d as u32,
        },
        grid(n, 256),
    )?;
    Ok(out)
}

impl Op for Gather {
    fn name(&self) -> &'static str {
        "gather"
    }

    fn reference(&self, x: &[&CpuTensor]) -> CpuTensor {
        let d = numel(&x[0].shape[1..]);
        let mut shape = x[0].shape.clone();
        shape[0] = self.host.len();
        let mut y = CpuTensor::zeros(&shape);
        for (l, &v) in self.host.iter().enumerate() {
            for c in 0..d {
                y.data[l * d + c] = x[0].data[v as usize * d + c];
            }
        }
        y
    }

    fn reference_backward(&self, x: &[&CpuTensor], dy: &CpuTensor) -> Vec<Option<CpuTensor>> {
        let d = numel(&x[0].shape[1..]);
        let mut dx = CpuTensor::zeros(&x[0].shape);
        for (l, &v) in self.host.iter().enumerate() {
            for c in 0..d {
                dx.data[v as usize * d + c] += dy.data[l * d + c];
            }
        }
        vec![Some(dx)]
    }

    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        let table = x[0];
        self.check(table.shape())?;
        if self.index.is_none() {
            self.index = Some(Indices::from_slice(&self.host)?);
        }
        if is_grad_enabled() && table.requires_grad() && self.scatter.is_none() {
            self.scatter = Some(self.build_scatter(table.shape()[0])?);
        }
        let mut shape = table.shape().to_vec();
        shape[0] = self.host.len();
        let y = Tensor::empty(&shape)?;
        let (n, d) = (y.numel(), numel(&shape[1..]));
        let idx = self.index.as_ref().expect("uploaded above");
        // (V, D) rows picked by idx[L] -> (L, D)
        gpu().dispatch(
            kernel!(gather_forward),
            &[],
            &[table.buffer(), idx.buffer(), y.buffer()],
            &Params {
                n: n as u32,
                d: d as u32,
            },
            grid(n, 256),
        )?;
        Ok(y)
    }

    // dx[v] = Σ_{l : idx[l] = v} dy[l]: a sum over each row's position list (no atomics).
    fn backward(&self, x: &[&Tensor], _y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let s = self.scatter.as_ref().ok_or_else(|| {
            Error::Autograd(
                "gather: backward without scatter lists (forward ran without a gradient)".into(),
            )
        })?;
        let shape = x[0].shape();
        let (rows, d) = (shape[0], numel(&shape[1..]));
        let dx = match &s.merge {
            None => csr_sum(dy, &s.seg_offsets, &s.positions, rows, d, shape)?,
            Some((row_offsets, identity)) => {
                // (S, D) partial sums of ≤ chunk positions each, then (V, D) sums of segments
                let partial = csr_sum(
                    dy,
                    &s.seg_offsets,
                    &s.positions,
                    s.segments,
                    d,
                    &[s.segments, d],
                )?;
                csr_sum(&partial, row_offsets, identity, rows, d, shape)?
            }
        };
        Ok(vec![Some(dx)])
    }
}

impl Tensor {
    /// Rows `indices` of this table along axis 0: (V, ...) → (len, ...).
    pub fn try_index_select(&self, indices: &Indices) -> Result<Tensor> {
        apply(Gather::new(indices), &[self])
    }

    /// Rows `indices` of this table along axis 0: (V, ...) → (len, ...) (PyTorch
    /// `index_select(0, idx)`). The gradient is a deterministic scatter-add.
    ///
    /// ```no_run
    /// # use tubelet::{Indices, Tensor};
    /// let table = Tensor::zeros(&[400, 768]);           // (V, D)
    /// let ids = Indices::from_slice(&[3, 3, 17]).unwrap();
    /// assert_eq!(table.index_select(&ids).shape(), &[3, 768]);
    /// ```
    pub fn index_select(&self, indices: &Indices) -> Tensor {
        self.try_index_select(indices).unwrap_or_else(|e| {
            panic!(
                "index_select{:?} with {} indices: {e}",
                self.shape(),
                indices.len()
            )
        })
    }
}

#[cfg(feature = "testing")]
pub fn test_spec() -> crate::testing::TestSpec<Gather> {
    use crate::testing::{dim_strategy, shape_strategy, Case, TestSpec, Tol};
    use proptest::prelude::*;
    // mode 0: uniform rows; 1: one hot row; 2: a few distinct rows; 3: one row 70,000 times
    // (past lavapipe's loop limit, so the default chunking must split it).
    fn case(
        mut table: Vec<usize>,
        len: usize,
        mode: u8,
        chunk: usize,
        max: usize,
        seed: u64,
    ) -> Case<Gather> {
        let mut rng = crate::Rng::new(seed);
        let len = if mode == 3 {
            table.truncate(1);
            table.push(1 + rng.below(4));
            70_000
        } else {
            len.min((max / numel(&table[1..])).max(1))
        };
        let v = table[0];
        let hot = rng.below(v) as u32;
        let few: Vec<u32> = (0..3).map(|_| rng.below(v) as u32).collect();
        let index: Vec<u32> = (0..len)
            .map(|_| match mode {
                0 => rng.below(v) as u32,
                2 => few[rng.below(3)],
                _ => hot,
            })
            .collect();
        let x = CpuTensor::uniform(&table, -2.0, 2.0, &mut rng);
        let label = format!("{len} indices, mode {mode}, chunk {chunk}");
        Case::new(Gather::from_host(index, chunk), vec![x], label)
    }
    let chunks = prop::sample::select(vec![CHUNK, CHUNK, 1, 2, 3, 7]);
    TestSpec {
        cases: (
            shape_strategy(1..=4, 100_000),
            dim_strategy(),
            0u8..4,
            chunks.clone(),
            any::<u64>(),
        )
            .prop_map(|(t, l, m, c, seed)| case(t, l, m, c, 200_000, seed))
            .boxed(),
        small_cases: (
            shape_strategy(1..=3, 24),
            1usize..=12,
            0u8..3,
            chunks,
            any::<u64>(),
        )
            .prop_map(|(t, l, m, c, seed)| case(t, l, m, c, 48, seed))
            .boxed(),
        forward_tol: Tol::new(0.0, 0.0, "a copy"),
        // 70,000 random-signed |dy| ≤ 1 summed in order: partial sums ~√n ≈ 265, so rounding
        // walks ~√n · ½ulp(265) ≈ 2e-3; a missing or doubled term is off by ~0.5.
        backward_tol: Tol::new(1e-2, 1e-5, "f32 sequential sums of up to 7e4 terms"),
    }
}
