//! Batched matrix product with NumPy batch broadcasting: Y = A·B, A = a or aᵀ, B = b or bᵀ.
//!
//! a is (..., M, K), or stored (..., K, M) when `trans_a`; b is (..., K, N), or stored
//! (..., N, K) when `trans_b`; Y is (broadcast(...), M, N). Transposes and broadcast batch dims
//! are strides inside the kernels: no transposed or expanded copy is ever made. A 2-D b shared
//! by a batched a (a linear layer) folds the batch into M: one (Z·M, K)·(K, N) product.
//!
//! Kernels, side by side (house-style §8), all with the same bindings and Params:
//! - shaders/matmul_forward_v1_naive.wgsl: one output per invocation, the readable baseline;
//! - shaders/matmul_forward_v2_blocked.wgsl: 4×4 register blocks, no subgroups (shipped without
//!   the SUBGROUP feature);
//! - shaders/matmul_forward_v3_subgroup.wgsl: 8×8 register blocks per lane, B rows shared with
//!   `subgroupBroadcast` (the design engine-notes.md measured fastest on Mesa 22);
//! - shaders/matmul_forward_v4_broadcast.wgsl: a 32×32 tile per subgroup, A and B each loaded
//!   once per tile and B shared by broadcast: half v3's loads per FMA (shipped with SUBGROUP).
//!
//! Backward reuses the same kernels with the transpose flags flipped (see `Matmul::backward`).

use crate::autograd::apply;
use crate::error::{Error, Result};
use crate::gpu::{gpu, grid, grid_rows, Gpu};
use crate::kernel;
use crate::ops::{reduce, Op};
use crate::reference::{unravel, CpuTensor};
use crate::shape::{broadcast_shape, broadcast_strides, numel, pack8};
use crate::tensor::Tensor;

/// K elements one dispatch reduces: every kernel loops at most this many times per invocation
/// (v3: an eighth of it, v4 a quarter), far below the 65,535 trips after which Mesa 22's llvmpipe silently
/// stops a loop. Longer K runs as several dispatches that accumulate into y.
const K_CHUNK: usize = 16_384;

/// Y = A·B with A = a or aᵀ and B = b or bᵀ (stored transposed, read through strides).
#[derive(Clone, Debug, PartialEq)]
pub struct Matmul {
    pub trans_a: bool,
    pub trans_b: bool,
    /// Kernel variant (1, 2, 3, 4); 0 picks the shipped one for this adapter. For benches and the
    /// property tests, which exercise every variant.
    #[doc(hidden)]
    pub variant: u32,
}

impl Matmul {
    pub fn new(trans_a: bool, trans_b: bool) -> Matmul {
        Matmul {
            trans_a,
            trans_b,
            variant: 0,
        }
    }
}

/// The variant `matmul` ships on `gpu`: v4 with subgroups of at least 8 lanes, else v2.
pub fn shipped_variant(gpu: &Gpu) -> u32 {
    if v3_supported(gpu) {
        4
    } else {
        2
    }
}

/// v3 and v4 run a workgroup of 8 invocations as one subgroup and broadcast from lanes 0..7.
fn v3_supported(gpu: &Gpu) -> bool {
    gpu.has_subgroups() && gpu.info.subgroup_min_size >= 8
}

/// Sizes of one product, checked: Y (batch..., M, N) = A (M, K) · B (K, N) per batch index.
#[derive(Clone, Debug)]
struct Dims {
    m: usize,
    n: usize,
    k: usize,
    a_batch: Vec<usize>,
    b_batch: Vec<usize>,
    batch: Vec<usize>,
}

impl Dims {
    fn new(a: &[usize], b: &[usize], trans_a: bool, trans_b: bool) -> Result<Dims> {
        let what = || format!("matmul{}: a {a:?} @ b {b:?}", flags(trans_a, trans_b));
        if a.len() < 2 || b.len() < 2 {
            return Err(Error::Shape(format!(
                "{}: both need rank ≥ 2 (..., rows, cols)",
                what()
            )));
        }
        let (ra, rb) = (a.len(), b.len());
        let (m, ka) = if trans_a {
            (a[ra - 1], a[ra - 2])
        } else {
            (a[ra - 2], a[ra - 1])
        };
        let (kb, n) = if trans_b {
            (b[rb - 1], b[rb - 2])
        } else {
            (b[rb - 2], b[rb - 1])
        };
        if ka != kb {
            return Err(Error::Shape(format!(
                "{}: inner dims differ (K = {ka} vs {kb})",
                what()
            )));
        }
        let (a_batch, b_batch) = (a[..ra - 2].to_vec(), b[..rb - 2].to_vec());
        let batch = broadcast_shape(&a_batch, &b_batch)
            .map_err(|_| {
                Error::Shape(format!(
                    "{}: batch dims {a_batch:?} and {b_batch:?} do not broadcast",
                    what()
                ))
            })?
            .to_vec();
        if batch.len() > 6 {
            return Err(Error::Shape(format!("{}: more than 6 batch dims", what())));
        }
        Ok(Dims {
            m,
            n,
            k: ka,
            a_batch,
            b_batch,
            batch,
        })
    }

    fn out_shape(&self) -> Vec<usize> {
        let mut s = self.batch.clone();
        s.extend([self.m, self.n]);
        s
    }
}

fn flags(trans_a: bool, trans_b: bool) -> &'static str {
    match (trans_a, trans_b) {
        (false, false) => "",
        (false, true) => " (b transposed)",
        (true, false) => " (a transposed)",
        (true, true) => " (a and b transposed)",
    }
}

/// Element strides (along m, along k) of A in a, and (along k, along n) of B in b.
fn matrix_strides(d: &Dims, trans_a: bool, trans_b: bool) -> ([usize; 2], [usize; 2]) {
    let a = if trans_a { [1, d.m] } else { [d.k, 1] };
    let b = if trans_b { [1, d.k] } else { [d.n, 1] };
    (a, b)
}

/// Flat index of the matrix of an input with batch dims `shape` at output batch index `idx`
/// (dims align from the right; a size-1 dim is broadcast).
fn batch_flat(idx: &[usize], shape: &[usize]) -> usize {
    let off = idx.len() - shape.len();
    shape.iter().enumerate().fold(0, |acc, (d, &s)| {
        acc * s + if s == 1 { 0 } else { idx[d + off] }
    })
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    a_sm: u32,
    a_sk: u32,
    b_sk: u32,
    b_sn: u32,
    k0: u32,
    k1: u32,
    accumulate: u32,
    nb: u32,
    tiles_m: u32,
    tiles_n: u32,
    _pad: [u32; 2],
    shape: [u32; 8],
    a_bstride: [u32; 8],
    b_bstride: [u32; 8],
}

/// Y = A·B on the GPU with kernel `variant` (0: shipped), without autograd.
pub(crate) fn matmul_raw(
    a: &Tensor,
    b: &Tensor,
    trans_a: bool,
    trans_b: bool,
    variant: u32,
) -> Result<Tensor> {
    let d = Dims::new(a.shape(), b.shape(), trans_a, trans_b)?;
    let gpu = gpu();
    let variant = if variant == 0 {
        shipped_variant(gpu)
    } else {
        variant
    };
    if (variant == 3 || variant == 4) && !v3_supported(gpu) {
        crate::bail!(
            DeviceLimit,
            "matmul v{variant} needs the SUBGROUP feature with subgroups of ≥ 8 lanes; {} has {} \
             (subgroup sizes {}..{})",
            gpu.info.name,
            if gpu.has_subgroups() {
                "SUBGROUP"
            } else {
                "no SUBGROUP"
            },
            gpu.info.subgroup_min_size,
            gpu.info.subgroup_max_size
        );
    }
    let y = Tensor::empty(&d.out_shape())?;
    if y.numel() == 0 {
        return Ok(y);
    }
    let ([a_sm, a_sk], [b_sk, b_sn]) = matrix_strides(&d, trans_a, trans_b);
    let (mut m, mut batch, mut nb) = (d.m, numel(&d.batch), d.batch.len());
    // Linear layer: b is one matrix, a a contiguous stack of (M, K) rows: fold the batch into M.
    if numel(&d.b_batch) == 1 && !trans_a {
        (m, batch, nb) = (m * batch, 1, 0);
    }
    let scale = |v: [u32; 8], size: usize| v.map(|s| s * size as u32);
    let mut p = Params {
        m: m as u32,
        n: d.n as u32,
        k: d.k as u32,
        batch: batch as u32,
        a_sm: a_sm as u32,
        a_sk: a_sk as u32,
        b_sk: b_sk as u32,
        b_sn: b_sn as u32,
        k0: 0,
        k1: 0,
        accumulate: 0,
        nb: nb as u32,
        tiles_m: 0,
        tiles_n: 0,
        _pad: [0; 2],
        shape: pack8(&d.batch),
        a_bstride: scale(broadcast_strides(&d.a_batch, &d.batch), d.m * d.k),
        b_bstride: scale(broadcast_strides(&d.b_batch, &d.batch), d.k * d.n),
    };
    let (kernel, groups) = match variant {
        1 => (kernel!(matmul_forward_v1_naive), grid(batch * m * d.n, 64)),
        2..=4 => {
            let ((tm, tn), k) = match variant {
                2 => ((32, 32), kernel!(matmul_forward_v2_blocked)),
                3 => ((64, 8), kernel!(matmul_forward_v3_subgroup)),
                _ => ((32, 32), kernel!(matmul_forward_v4_broadcast)),
            };
            p.tiles_m = m.div_ceil(tm) as u32;
            p.tiles_n = d.n.div_ceil(tn) as u32;
            (k, grid_rows(batch * (p.tiles_m * p.tiles_n) as usize))
        }
        v => crate::bail!(
            Config,
            "matmul: no kernel variant {v} (1 naive, 2 blocked, 3 subgroup, 4 broadcast)"
        ),
    };
    // (Z, M, K) · (Z, K, N) -> (Z, M, N), K in chunks accumulating into y (at least one
    // dispatch, so that K = 0 writes zeros).
    let chunks = d.k.div_ceil(K_CHUNK).max(1);
    for c in 0..chunks {
        p.k0 = (c * K_CHUNK) as u32;
        p.k1 = d.k.min((c + 1) * K_CHUNK) as u32;
        p.accumulate = u32::from(c > 0);
        gpu.dispatch(
            kernel,
            &[],
            &[a.buffer(), b.buffer(), y.buffer()],
            &p,
            groups,
        )?;
    }
    Ok(y)
}

impl Op for Matmul {
    fn name(&self) -> &'static str {
        "matmul"
    }

    fn reference(&self, x: &[&CpuTensor]) -> CpuTensor {
        let d =
            Dims::new(&x[0].shape, &x[1].shape, self.trans_a, self.trans_b).expect("matmul shapes");
        let ([a_sm, a_sk], [b_sk, b_sn]) = matrix_strides(&d, self.trans_a, self.trans_b);
        let mut y = CpuTensor::zeros(&d.out_shape());
        for z in 0..numel(&d.batch) {
            let idx = unravel(z, &d.batch);
            let oa = batch_flat(&idx, &d.a_batch) * d.m * d.k;
            let ob = batch_flat(&idx, &d.b_batch) * d.k * d.n;
            for i in 0..d.m {
                for j in 0..d.n {
                    let mut s = 0.0;
                    for k in 0..d.k {
                        s += x[0].data[oa + i * a_sm + k * a_sk]
                            * x[1].data[ob + k * b_sk + j * b_sn];
                    }
                    y.data[(z * d.m + i) * d.n + j] = s;
                }
            }
        }
        y
    }

    // dA(i, k) = Σ_j dY(i, j)·B(k, j),  dB(k, j) = Σ_i A(i, k)·dY(i, j), summed over the
    // output batch indices that read each stored element (broadcast and transposes alike).
    fn reference_backward(&self, x: &[&CpuTensor], dy: &CpuTensor) -> Vec<Option<CpuTensor>> {
        let d =
            Dims::new(&x[0].shape, &x[1].shape, self.trans_a, self.trans_b).expect("matmul shapes");
        let ([a_sm, a_sk], [b_sk, b_sn]) = matrix_strides(&d, self.trans_a, self.trans_b);
        let mut da = CpuTensor::zeros(&x[0].shape);
        let mut db = CpuTensor::zeros(&x[1].shape);
        for z in 0..numel(&d.batch) {
            let idx = unravel(z, &d.batch);
            let oa = batch_flat(&idx, &d.a_batch) * d.m * d.k;
            let ob = batch_flat(&idx, &d.b_batch) * d.k * d.n;
            for i in 0..d.m {
                for j in 0..d.n {
                    let g = dy.data[(z * d.m + i) * d.n + j];
                    for k in 0..d.k {
                        let (ia, ib) = (oa + i * a_sm + k * a_sk, ob + k * b_sk + j * b_sn);
                        da.data[ia] += g * x[1].data[ib];
                        db.data[ib] += g * x[0].data[ia];
                    }
                }
            }
        }
        vec![Some(da), Some(db)]
    }

    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        matmul_raw(x[0], x[1], self.trans_a, self.trans_b, self.variant)
    }

    // Y = A·B  =>  dA = dY·Bᵀ, dB = Aᵀ·dY. In stored layout (a = Aᵀ when trans_a, b = Bᵀ when
    // trans_b) every case is one product of the same kernels with flipped flags:
    //   da = dY·Bᵀ  = matmul(dy, b, -, !tb)     (trans_a: da = B·dYᵀ = matmul(b, dy, tb, T))
    //   db = Aᵀ·dY  = matmul(a, dy, !ta, -)     (trans_b: db = dYᵀ·A = matmul(dy, a, T, ta))
    // Products come out at the broadcast batch shape and are summed to the input's shape; a
    // 2-D b under a batched a (linear layer) instead folds the batch into the reduction dim.
    fn backward(&self, x: &[&Tensor], _y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (x[0], x[1]);
        let (ta, tb, v) = (self.trans_a, self.trans_b, self.variant);
        let d = Dims::new(a.shape(), b.shape(), ta, tb)?;
        let da = if a.requires_grad() {
            let g = if ta {
                matmul_raw(b, dy, tb, true, v)?
            } else {
                matmul_raw(dy, b, false, !tb, v)?
            };
            Some(reduce::sum_to_raw(&g, a.shape())?)
        } else {
            None
        };
        let db = if !b.requires_grad() {
            None
        } else if numel(&d.b_batch) == 1 && !ta && !d.batch.is_empty() {
            // (Z·M, K) and (Z·M, N) views: one product reduces over batch and rows together.
            let rows = numel(&d.batch) * d.m;
            let a2 = a.view(&[rows, d.k]);
            let dy2 = dy.view(&[rows, d.n]);
            let g = if tb {
                matmul_raw(&dy2, &a2, true, false, v)?
            } else {
                matmul_raw(&a2, &dy2, true, false, v)?
            };
            Some(g.view(b.shape()))
        } else {
            let g = if tb {
                matmul_raw(dy, a, true, ta, v)?
            } else {
                matmul_raw(a, dy, !ta, false, v)?
            };
            Some(reduce::sum_to_raw(&g, b.shape())?)
        };
        Ok(vec![da, db])
    }
}

/// Y = A·B with A = a or aᵀ, B = b or bᵀ, batch dims broadcast (NumPy `matmul`).
///
/// ```no_run
/// let a = tubelet::Tensor::randn(&[8, 16, 32], 0.0, 1.0, 1).unwrap(); // (Z, M, K)
/// let w = tubelet::Tensor::randn(&[64, 32], 0.0, 1.0, 2).unwrap(); // (N, K)
/// let y = tubelet::ops::matmul::matmul(&a, &w, false, true).unwrap(); // (8, 16, 64)
/// ```
pub fn matmul(a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
    apply(Matmul::new(trans_a, trans_b), &[a, b])
}

/// [`matmul`] with an explicit kernel variant (1 naive, 2 blocked, 3 subgroup, 4 broadcast), for
/// benches and tests.
pub fn matmul_variant(
    a: &Tensor,
    b: &Tensor,
    trans_a: bool,
    trans_b: bool,
    variant: u32,
) -> Result<Tensor> {
    apply(
        Matmul {
            trans_a,
            trans_b,
            variant,
        },
        &[a, b],
    )
}

impl Tensor {
    /// self @ b: (..., M, K) · (..., K, N) -> (..., M, N), batch dims broadcast.
    pub fn try_matmul(&self, b: &Tensor) -> Result<Tensor> {
        matmul(self, b, false, false)
    }

    /// self @ b: (..., M, K) · (..., K, N) -> (..., M, N), batch dims broadcast.
    pub fn matmul(&self, b: &Tensor) -> Tensor {
        self.try_matmul(b)
            .unwrap_or_else(|e| panic!("matmul{:?} @ {:?}: {e}", self.shape(), b.shape()))
    }

    /// self @ bᵀ: (..., M, K) · (..., N, K)ᵀ -> (..., M, N), without a transposed copy.
    pub fn try_matmul_nt(&self, b: &Tensor) -> Result<Tensor> {
        matmul(self, b, false, true)
    }

    /// self @ bᵀ: (..., M, K) · (..., N, K)ᵀ -> (..., M, N), without a transposed copy.
    pub fn matmul_nt(&self, b: &Tensor) -> Tensor {
        self.try_matmul_nt(b)
            .unwrap_or_else(|e| panic!("matmul_nt{:?} @ {:?}ᵀ: {e}", self.shape(), b.shape()))
    }
}

#[cfg(feature = "testing")]
pub fn test_spec() -> crate::testing::TestSpec<Matmul> {
    use crate::testing::{dim_strategy, Case, TestSpec, Tol};
    use proptest::prelude::*;

    /// Batch layouts: 0 none, 1 equal batch dims, 2 linear (2-D b under a batched a),
    /// 3 both broadcast ((Z1, 1) against (Z2)), 4 2-D a under a batched b.
    fn case(
        variant: u32,
        layout: u8,
        ta: bool,
        tb: bool,
        mnk: [usize; 3],
        z: [usize; 2],
        max_macs: usize,
        seed: u64,
    ) -> Case<Matmul> {
        let [mut m, mut n, mut k] = mnk;
        let (za, zb): (Vec<usize>, Vec<usize>) = match layout {
            0 => (vec![], vec![]),
            1 => (vec![z[0], z[1]], vec![z[0], z[1]]),
            2 => (vec![z[0], z[1]], vec![]),
            3 => (vec![z[0], 1], vec![z[1]]),
            _ => (vec![], vec![z[0]]),
        };
        let batch = numel(&broadcast_shape(&za, &zb).expect("broadcastable batch"));
        while batch * m * n * k > max_macs {
            let big = m.max(n).max(k);
            if m == big {
                m = (m / 2).max(1)
            } else if n == big {
                n = (n / 2).max(1)
            } else {
                k = (k / 2).max(1)
            }
            if m * n * k == 1 {
                break;
            }
        }
        let mut a_shape = za;
        a_shape.extend(if ta { [k, m] } else { [m, k] });
        let mut b_shape = zb;
        b_shape.extend(if tb { [n, k] } else { [k, n] });
        let mut rng = crate::Rng::new(seed);
        let a = CpuTensor::uniform(&a_shape, -1.0, 1.0, &mut rng);
        let b = CpuTensor::uniform(&b_shape, -1.0, 1.0, &mut rng);
        Case::new(
            Matmul {
                trans_a: ta,
                trans_b: tb,
                variant,
            },
            vec![a, b],
            format!("v{variant} layout {layout} ta {ta} tb {tb}"),
        )
    }
    // Every variant this adapter can run (v3 and v4 need subgroups); CPU-only checks ignore it.
    let mut variants = vec![1u32, 2];
    if crate::gpu::Gpu::global().is_ok_and(v3_supported) {
        variants.extend([3, 4]);
    }
    let batch = || prop::sample::select(vec![1usize, 2, 3, 5]);
    TestSpec {
        // M, N, K: 1, primes, non-multiples of the 32×32 (v2, v4) and 64×8 (v3) tiles, up to 300.
        cases: (
            prop::sample::select(variants),
            0u8..5,
            any::<bool>(),
            any::<bool>(),
            [dim_strategy(), dim_strategy(), dim_strategy()],
            [batch(), batch()],
            any::<u64>(),
        )
            .prop_map(|(v, l, ta, tb, mnk, z, seed)| case(v, l, ta, tb, mnk, z, 400_000, seed))
            .boxed(),
        small_cases: (
            0u8..5,
            any::<bool>(),
            any::<bool>(),
            [1usize..=4, 1usize..=4, 1usize..=4],
            [1usize..=2, 1usize..=2],
            any::<u64>(),
        )
            .prop_map(|(l, ta, tb, mnk, z, seed)| case(0, l, ta, tb, mnk, z, 64, seed))
            .boxed(),
        // Dot products of up to 300 terms |a·b| ≤ 1 in f32: error ~ √K·ulp·|partial sums| ≪ 1e-4.
        forward_tol: Tol::new(1e-4, 1e-4, "f32 dot products of up to 300 terms in [-1, 1]"),
        // Gradients reduce over N, M, or batch·M (folded or summed over broadcast batch dims):
        // up to ~7500 products, error ~ √n·ulp·|partial sums| ≈ 1e-4, a few times that at worst.
        backward_tol: Tol::new(1e-3, 1e-4, "f32 sums of up to ~7500 products in [-1, 1]"),
    }
}
