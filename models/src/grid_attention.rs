//! Factorised self-attention over a grid of video tokens: every attention of TimeSformer's
//! divided / sparse local-global / axial blocks and of ViViT Models 3 and 4 goes through the
//! three functions of this file, so a fused kernel can replace their bodies in one place.
//!
//! * [`group_attention`]: the tokens (B, N = T·H·W, ·) are partitioned into groups ([`Groups`]:
//!   one frame, one time line, one row, one column, a local window, a strided lattice) and each
//!   group attends within itself.
//! * [`group_attention_with_cls`]: the same with a cls token in row 0 that joins every group as
//!   its first token; the cls query's outputs of the G groups are averaged (TimeSformer's spatial
//!   attention: the cls token is repeated per frame and its T outputs are meaned).
//! * [`head_split_attention`]: ViViT Model 4's factorised dot product: the first half of the heads
//!   attends over time, the second half over space, results concatenated on the head axis.
//!
//! All three take a packed qkv (B, ·, 3·heads·d) in the [3][heads][d] order of a qkv Linear and
//! return (B, ·, heads·d) in the token order of the input, ready for the output projection.
//!
//! Each call runs the engine's fused grid attention (engine/src/ops/grid_attention.rs), which
//! indexes the groups where they lie: no grouped or permuted copies (house-style principle 1).
//! Groups longer than its kernels take (`max_group_len`: e.g. TimeSformer-HR's 785-token
//! frames) fall back to the composition below, of existing ops (reshape, permute, narrow,
//! concat, mean and the fused joint attention `blocks::attention`), which is also the readable
//! definition the tests compare against.

use tubelet::ops::grid_attention::{max_group_len, Cls, Part, Pattern, TokenGrid};
use tubelet::{Error, Result, Tensor};

/// The order the tokens of a (T, H, W) grid are stored in along the sequence axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// t-major, then h, then w: ViViT's tubelet order `b (t h w) d`.
    Thw,
    /// h-major, then w, then t: TimeSformer's `b (h w t) m` (time is the fastest axis).
    Hwt,
}

/// A grid of T × H × W tokens stored in `order`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    pub t: usize,
    pub h: usize,
    pub w: usize,
    pub order: Order,
}

impl Grid {
    pub fn len(&self) -> usize {
        self.t * self.h * self.w
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which tokens attend to each other: a partition of the grid into equal groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Groups {
    /// One group per spatial position: the T tokens of a time line (temporal attention).
    Time,
    /// One group per frame: its H·W tokens (spatial attention).
    Space,
    /// One group per (t, h): the W tokens of a row (axial width attention).
    Width,
    /// One group per (t, w): the H tokens of a column (axial height attention).
    Height,
    /// Four groups: the T × H/2 × W/2 quadrants of the clip (TimeSformer's local attention).
    LocalWindows,
    /// Eight groups: the tokens with equal (t mod 2, h mod 2, w mod 2), a stride-2 lattice over
    /// the whole clip (TimeSformer's sparse global attention).
    StridedGlobal,
}

/// Where each grid axis goes: split into (outer, middle, inner) factors, each a group or a
/// member factor. Returns the non-trivial factors in memory order as (size, is_member).
fn factors(grid: Grid, groups: Groups) -> Result<Vec<(usize, bool)>> {
    let even = |n: usize, axis: &str| {
        if n.is_multiple_of(2) {
            Ok(n / 2)
        } else {
            Err(Error::Shape(format!(
                "{groups:?} attention: grid axis {axis} = {n} is odd (grid {grid:?})"
            )))
        }
    };
    // Per axis: [(size, is_member)] outer to inner.
    let axis = |name: &str, n: usize| -> Result<Vec<(usize, bool)>> {
        Ok(match (groups, name) {
            (Groups::Time, "t") | (Groups::Width, "w") | (Groups::Height, "h") => vec![(n, true)],
            (Groups::Space, "h") | (Groups::Space, "w") => vec![(n, true)],
            (Groups::Time | Groups::Space | Groups::Width | Groups::Height, _) => vec![(n, false)],
            (Groups::LocalWindows, "t") => vec![(n, true)],
            (Groups::LocalWindows, _) => vec![(2, false), (even(n, name)?, true)], // quadrant, offset
            (Groups::StridedGlobal, _) => vec![(even(n, name)?, true), (2, false)], // index, phase
        })
    };
    let (t, h, w) = (axis("t", grid.t)?, axis("h", grid.h)?, axis("w", grid.w)?);
    let all = match grid.order {
        Order::Thw => [t, h, w].concat(),
        Order::Hwt => [h, w, t].concat(),
    };
    Ok(all.into_iter().filter(|&(n, _)| n != 1).collect())
}

/// The permutation that moves the group factors ahead of the member factors (both in memory
/// order), for a tensor (B, factors…, C); and the group count G and group size M.
fn grouping(f: &[(usize, bool)]) -> (Vec<usize>, usize, usize) {
    let idx = |member: bool| {
        (0..f.len())
            .filter(move |&i| f[i].1 == member)
            .map(|i| i + 1)
    };
    let mut perm = vec![0];
    perm.extend(idx(false));
    perm.extend(idx(true));
    perm.push(f.len() + 1);
    let g = f.iter().filter(|x| !x.1).map(|x| x.0).product();
    let m = f.iter().filter(|x| x.1).map(|x| x.0).product();
    (perm, g, m)
}

fn is_identity(perm: &[usize]) -> bool {
    perm.iter().enumerate().all(|(i, &p)| i == p)
}

/// (B, N, C) in grid order -> (B·G, M, C), one row of the batch per group.
fn to_groups(x: &Tensor, f: &[(usize, bool)]) -> Result<Tensor> {
    let (b, c) = (x.dim(0), x.dim(-1));
    let (perm, g, m) = grouping(f);
    let mut shape = vec![b];
    shape.extend(f.iter().map(|x| x.0));
    shape.push(c);
    let x = x.try_reshape(&shape)?; // (B, factors…, C)
    let x = if is_identity(&perm) {
        x
    } else {
        x.try_permute(&perm)?
    }; // (B, groups…, members…, C)
    x.try_reshape(&[b * g, m, c])
}

/// (B·G, M, C) -> (B, N, C) in grid order: the inverse of [`to_groups`].
fn from_groups(y: &Tensor, f: &[(usize, bool)], b: usize) -> Result<Tensor> {
    let c = y.dim(-1);
    let (perm, _, _) = grouping(f);
    let mut shape = vec![b];
    shape.extend(perm[1..perm.len() - 1].iter().map(|&i| f[i - 1].0));
    shape.push(c);
    let y = y.try_reshape(&shape)?; // (B, groups…, members…, C)
    let mut inv = vec![0; perm.len()];
    for (d, &a) in perm.iter().enumerate() {
        inv[a] = d;
    }
    let y = if is_identity(&inv) {
        y
    } else {
        y.try_permute(&inv)?
    }; // (B, factors…, C)
    y.try_reshape(&[b, f.iter().map(|x| x.0).product(), c])
}

fn check(qkv: &Tensor, grid: Grid, cls: usize, what: &str) -> Result<()> {
    if qkv.rank() != 3 || qkv.dim(1) != grid.len() + cls {
        return Err(Error::Shape(format!(
            "{what}: qkv {:?} does not hold {cls} + {} tokens of grid {grid:?} as (B, N, 3·heads·d)",
            qkv.shape(),
            grid.len()
        )));
    }
    Ok(())
}

impl Grid {
    /// The engine's description of where these tokens lie.
    fn tokens(&self, cls: Cls) -> TokenGrid {
        match self.order {
            Order::Thw => TokenGrid::t_major([self.t, self.h, self.w], cls),
            Order::Hwt => TokenGrid::space_major([self.t, self.h, self.w], cls),
        }
    }
}

impl Groups {
    /// The engine's pattern for these groups, and the length of one group.
    fn pattern(self, grid: Grid) -> (Pattern, usize) {
        let (t, h, w) = (grid.t, grid.h, grid.w);
        match self {
            Groups::Time => (Pattern::time(), t),
            Groups::Space => (Pattern::space(), h * w),
            Groups::Width => (Pattern::width(), w),
            Groups::Height => (Pattern::height(), h),
            Groups::LocalWindows => (
                Pattern::timesformer_local([t, h, w]),
                t * h.div_ceil(2) * w.div_ceil(2),
            ),
            Groups::StridedGlobal => (
                Pattern::timesformer_global(),
                t.div_ceil(2) * h.div_ceil(2) * w.div_ceil(2),
            ),
        }
    }
}

/// Whether the fused kernels take groups of `len` tokens for this qkv.
fn fused_fits(qkv: &Tensor, heads: usize, len: usize) -> bool {
    heads > 0 && len <= max_group_len(qkv.dim(-1) / 3 / heads)
}

/// Self-attention within each group of the grid. qkv (B, N, 3·heads·d) -> (B, N, heads·d).
/// softmax(scale·q·kᵀ)·v per head, keys restricted to the query's group.
pub fn group_attention(
    qkv: &Tensor,
    grid: Grid,
    groups: Groups,
    heads: usize,
    scale: f32,
) -> Result<Tensor> {
    check(qkv, grid, 0, "group_attention")?;
    let (pattern, len) = groups.pattern(grid);
    if fused_fits(qkv, heads, len) {
        factors(grid, groups)?; // the same shape rules (even axes) as the composed path
        return qkv.try_grid_attention(heads, scale, grid.tokens(Cls::None), pattern);
    }
    let f = factors(grid, groups)?;
    let q = to_groups(qkv, &f)?; // (B·G, M, 3·heads·d)
    let o = crate::blocks::attention(&q, heads, scale)?; // (B·G, M, heads·d)
    from_groups(&o, &f, qkv.dim(0)) // (B, N, heads·d)
}

/// Self-attention within each group, with a cls token (row 0 of qkv) prepended to every group;
/// the cls output is the mean of its G per-group outputs (TimeSformer `Block.forward`, "taking
/// care of CLS token"). qkv (B, 1 + N, 3·heads·d) -> (B, 1 + N, heads·d).
///
/// NOTE: the mean is taken before the output projection, the official code takes it after;
/// the projection is affine and the weights sum to one, so the two are equal.
pub fn group_attention_with_cls(
    qkv: &Tensor,
    grid: Grid,
    groups: Groups,
    heads: usize,
    scale: f32,
) -> Result<Tensor> {
    check(qkv, grid, 1, "group_attention_with_cls")?;
    let (pattern, len) = groups.pattern(grid);
    if fused_fits(qkv, heads, len + 1) {
        factors(grid, groups)?;
        return qkv.try_grid_attention(heads, scale, grid.tokens(Cls::Shared), pattern);
    }
    let (b, c) = (qkv.dim(0), qkv.dim(2));
    let f = factors(grid, groups)?;
    let (_, g, m) = grouping(&f);
    let cls = qkv.try_narrow(1, 0, 1)?; // (B, 1, C)
    let patches = to_groups(&qkv.try_narrow(1, 1, grid.len())?, &f)?; // (B·G, M, C)
    let cls = cls
        .try_reshape(&[b, 1, 1, c])?
        .try_broadcast_to(&[b, g, 1, c])?
        .try_reshape(&[b * g, 1, c])?;
    let o = crate::blocks::attention(&Tensor::try_cat(&[&cls, &patches], 1)?, heads, scale)?; // (B·G, 1+M, D)
    let d = o.dim(2);
    let o_cls = o
        .try_narrow(1, 0, 1)?
        .try_reshape(&[b, g, d])?
        .try_mean(&[1], true)?; // (B, 1, D)
    let o_patches = from_groups(&o.try_narrow(1, 1, m)?, &f, b)?; // (B, N, D)
    Tensor::try_cat(&[&o_cls, &o_patches], 1)
}

/// ViViT Model 4 (scenic `model_utils.factorized_dot_product_attention`): heads [0, heads/2)
/// attend over time (keys: the T tokens at the query's position), heads [heads/2, heads) over
/// space (keys: the H·W tokens of the query's frame); the two halves are concatenated back on
/// the head axis. qkv (B, N, 3·heads·d) -> (B, N, heads·d).
pub fn head_split_attention(qkv: &Tensor, grid: Grid, heads: usize, scale: f32) -> Result<Tensor> {
    check(qkv, grid, 0, "head_split_attention")?;
    if heads == 0 || !heads.is_multiple_of(2) || !qkv.dim(2).is_multiple_of(3 * heads) {
        return Err(Error::Shape(format!(
            "head_split_attention: heads = {heads} must be even and divide the last dim of qkv {:?} by 3·heads",
            qkv.shape()
        )));
    }
    if fused_fits(qkv, heads, grid.t.max(grid.h * grid.w)) {
        let parts = [
            Part {
                heads: 0..heads / 2,
                pattern: Pattern::time(),
            },
            Part {
                heads: heads / 2..heads,
                pattern: Pattern::space(),
            },
        ];
        return qkv.try_grid_attention_parts(heads, scale, grid.tokens(Cls::None), &parts);
    }
    let (b, n, c) = (qkv.dim(0), qkv.dim(1), qkv.dim(2));
    let half = qkv.try_reshape(&[b, n, 3, 2, c / 6])?; // (B, N, 3, 2 halves, heads/2·d)
    let take = |i: usize| half.try_narrow(3, i, 1)?.try_reshape(&[b, n, c / 2]); // [3][heads/2][d]
    let time = group_attention(&take(0)?, grid, Groups::Time, heads / 2, scale)?; // (B, N, D/2)
    let space = group_attention(&take(1)?, grid, Groups::Space, heads / 2, scale)?; // (B, N, D/2)
    Tensor::try_cat(&[&time, &space], 2) // (B, N, D): heads in their original order
}
