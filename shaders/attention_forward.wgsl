// attention_forward — FlashAttention-2 forward over all N tokens of one (batch, head), reading
// q, k, v straight out of the packed qkv and never writing the N×N scores:
//   o_i = Σ_j softmax_j(scale · q_i·k_j) · v_j,   lse_i = log Σ_j exp(scale · q_i·k_j)
// with the online softmax (running max m, running sum l, rescaled accumulator) of
// Dao 2023, "FlashAttention-2", arXiv:2307.08691, Algorithm 1.
// Reference: engine/src/ops/attention.rs::reference.  Backward: attention_backward_{delta,dq,dkv}.
// Layout: B batch, N tokens, H heads, D head dim (≤ 4·DMAX4), S key splits.
//   qkv f32[B, N, 3, H, D] (a ViT qkv Linear's output, `reshape(B, N, 3, H, D)` order);
//   y   f32[S, B, N, H, D]  (normalised output of each key split; S = 1: the final output);
//   lse f32[S, B, H, N]     (log-sum-exp of the split's scaled logits).
// Dispatch: (ceil(N / BQ), S, B·H) workgroups; one invocation per query row. Split s sees the
//   keys [s·split, min(N, (s+1)·split)); attention_forward_combine merges S > 1 splits.
// NOTE: Mesa 22's llvmpipe stops a shader after 65,535 loop iterations in total (one limiter
//   shared by every loop of an invocation): `split` is chosen on the host so that
//   split · (2·D4 + 1) plus the tile loads stays far below it, whatever N is.
// #include "lib/index.wgsl"

struct Params {
    b: u32,
    n: u32,
    h: u32,
    d: u32,
    d4: u32,      // ceil(D / 4): vec4 slots per row
    bk: u32,      // keys per workgroup-memory tile (bk · d4 ≤ TILE)
    split: u32,   // keys per split (a multiple of bk)
    n_split: u32,
    scale: f32,
    total: u32,
    _pad0: u32,
    _pad1: u32,
}
override BQ: u32 = 32u;     // query rows per workgroup = workgroup size
override TILE: u32 = 480u;  // vec4 slots per K (and per V) tile: 2 · 480 · 16 B = 15 KiB
const DMAX4: u32 = 32u;     // head dim ≤ 128, one row kept in registers
// D4 = ceil(D / 4), fixed per pipeline (set by the host): the row loops get constant trip
// counts, so llvmpipe unrolls them and keeps the row arrays in registers instead of indexing
// private memory lane by lane (3x faster on lavapipe at D = 16). Never above DMAX4.
override D4: u32 = 32u;

@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> lse: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> ks: array<vec4<f32>, TILE>;
var<workgroup> vs: array<vec4<f32>, TILE>;

// Offset of row (b, token, t ∈ {q, k, v}, head) in qkv.
fn row(b: u32, tok: u32, t: u32, h: u32) -> u32 {
    return ((b * p.n + tok) * 3u + t) * p.h * p.d + h * p.d;
}

// Components 4c..4c+3 of the row at `base`, zero past D (D need not be a multiple of 4).
fn ld4(base: u32, c: u32) -> vec4<f32> {
    let e = 4u * c;
    var v = vec4<f32>(0.0);
    if (e < p.d) { v.x = qkv[base + e]; }
    if (e + 1u < p.d) { v.y = qkv[base + e + 1u]; }
    if (e + 2u < p.d) { v.z = qkv[base + e + 2u]; }
    if (e + 3u < p.d) { v.w = qkv[base + e + 3u]; }
    return v;
}

@compute @workgroup_size(BQ)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wg.z / p.h;
    let h = wg.z % p.h;
    let s = wg.y;
    let i = wg.x * BQ + lid.x;
    let live = i < p.n;   // dead rows still load tiles and meet the barriers
    let k_lo = s * p.split;
    let k_hi = min(p.n, k_lo + p.split);

    var q: array<vec4<f32>, DMAX4>;
    var acc: array<vec4<f32>, DMAX4>;
    let qrow = row(b, min(i, p.n - 1u), 0u, h);
    for (var c = 0u; c < D4; c++) {
        q[c] = ld4(qrow, c) * p.scale;
        acc[c] = vec4<f32>(0.0);
    }
    // A finite "−∞" keeps exp(m_old − m_new) at 0 instead of NaN (−∞ − −∞).
    var m = -3.0e38;
    var l = 0.0;
    for (var t0 = k_lo; t0 < k_hi; t0 += p.bk) {
        let nk = min(p.bk, k_hi - t0);
        // (nk, D4) tiles of K and V into workgroup memory
        for (var e = lid.x; e < nk * D4; e += BQ) {
            let j = t0 + e / D4;
            ks[e] = ld4(row(b, j, 1u, h), e % D4);
            vs[e] = ld4(row(b, j, 2u, h), e % D4);
        }
        workgroupBarrier();
        for (var j = 0u; j < nk; j++) {
            var sc = 0.0;
            for (var c = 0u; c < D4; c++) {
                sc += dot(q[c], ks[j * D4 + c]);
            }
            let m_new = max(m, sc);
            let corr = exp(m - m_new);
            let pj = exp(sc - m_new);
            l = l * corr + pj;
            for (var c = 0u; c < D4; c++) {
                acc[c] = acc[c] * corr + pj * vs[j * D4 + c];
            }
            m = m_new;
        }
        workgroupBarrier();
    }
    if (!live) { return; }
    let inv = 1.0 / l;
    let obase = ((s * p.b + b) * p.n + i) * p.h * p.d + h * p.d;
    for (var c = 0u; c < D4; c++) {
        let o = acc[c] * inv;
        for (var k = 0u; k < 4u; k++) {
            if (4u * c + k < p.d) { y[obase + 4u * c + k] = o[k]; }
        }
    }
    lse[((s * p.b + b) * p.h + h) * p.n + i] = m + log(l);
}
