// pooled_attention_forward — MViT pooled attention, FlashAttention-2 forward over the keys of one
// split for one (batch, head), never writing the Nq×Nk scores (Dao 2023, arXiv:2307.08691, Alg. 1):
//   s_ij = scale·q_i·k_j + [i, j ≥ cls]·(rel[i, t(j)] + rel[i, kt + y(j)] + rel[i, kt + kh + x(j)])
//   y_i = Σ_j softmax_j(s_ij)·v_j,   lse_i = log Σ_j exp(s_ij)
// Keys are scored KB at a time into registers, then one max, one rescale and one exp per key.
// Reference: engine/src/ops/pooled_attention.rs::reference.  Backward: pooled_attention_backward_*.
// Layout: BH = B·heads, Nq queries, Nk keys, D head dim, R = kt + kh + kw, S key splits.
//   q f32[BH, Nq, D]; k, v f32[BH, Nk, D]; rel f32[BH, Nq − cls, R] (bound only when REL);
//   y f32[S, BH, Nq, D], lse f32[S, BH, Nq] (S = 1: the final output; else combined afterwards).
// Dispatch: (ceil(Nq / BQ), S, BH) workgroups; one invocation per query row. Split s sees the
//   keys [s·split, min(Nk, (s+1)·split)).
// NOTE: Mesa 22's llvmpipe stops a shader after 65,535 loop iterations in total: the host picks
//   split so that split · (2·D4 + 4) stays far below it, whatever Nk is.

struct Params {
    bh: u32,
    nq: u32,
    nk: u32,
    d: u32,
    cls: u32,     // 1: row 0 of q and k is the cls token
    kt: u32,      // key grid (kt, kh, kw), t-major after the cls row
    kh: u32,
    kw: u32,
    r: u32,       // kt + kh + kw: rel columns
    bk: u32,      // keys per workgroup-memory tile (a multiple of KB, bk · D4 ≤ TILE)
    split: u32,   // keys per split (a multiple of bk)
    n_split: u32,
    scale: f32,
    total: u32,
    _pad0: u32,
    _pad1: u32,
}
override BQ: u32 = 32u;     // query rows per workgroup = workgroup size
override TILE: u32 = 896u;  // vec4 slots per K (and per V) tile: 2 · 896 · 16 B = 28 KiB
const DMAX4: u32 = 32u;     // head dim ≤ 128
// D4 = ceil(D / 4), fixed per pipeline: constant-trip row loops that llvmpipe unrolls, keeping
// the row arrays in registers (as attention_forward.wgsl). Never above DMAX4.
override D4: u32 = 32u;
override REL: bool = false; // a rel input is bound
const KB: u32 = 8u;         // keys scored into registers at a time
const MAX_BK: u32 = 64u;

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> rel: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

var<workgroup> ks: array<vec4<f32>, TILE>;
var<workgroup> vs: array<vec4<f32>, TILE>;
// Per key of the tile: its rel columns (t, kt + y, kt + kh + x) and 1 for a grid key, 0 for cls.
// Decomposed once per key here, so no div/mod runs per (query, key).
var<workgroup> koff: array<vec4<u32>, MAX_BK>;

// Components 4c..4c+3 of a row at `base`, zero past D (D need not be a multiple of 4).
fn ld_q(base: u32, c: u32) -> vec4<f32> {
    let e = 4u * c;
    var r = vec4<f32>(0.0);
    if (e < p.d) { r.x = q[base + e]; }
    if (e + 1u < p.d) { r.y = q[base + e + 1u]; }
    if (e + 2u < p.d) { r.z = q[base + e + 2u]; }
    if (e + 3u < p.d) { r.w = q[base + e + 3u]; }
    return r;
}

fn ld_k(base: u32, c: u32) -> vec4<f32> {
    let e = 4u * c;
    var r = vec4<f32>(0.0);
    if (e < p.d) { r.x = k[base + e]; }
    if (e + 1u < p.d) { r.y = k[base + e + 1u]; }
    if (e + 2u < p.d) { r.z = k[base + e + 2u]; }
    if (e + 3u < p.d) { r.w = k[base + e + 3u]; }
    return r;
}

fn ld_v(base: u32, c: u32) -> vec4<f32> {
    let e = 4u * c;
    var r = vec4<f32>(0.0);
    if (e < p.d) { r.x = v[base + e]; }
    if (e + 1u < p.d) { r.y = v[base + e + 1u]; }
    if (e + 2u < p.d) { r.z = v[base + e + 2u]; }
    if (e + 3u < p.d) { r.w = v[base + e + 3u]; }
    return r;
}

// Rel columns of key j (see koff).
fn key_axes(j: u32) -> vec4<u32> {
    if (j < p.cls) { return vec4<u32>(0u); }
    let g = j - p.cls;
    return vec4<u32>(g / (p.kh * p.kw), p.kt + (g / p.kw) % p.kh, p.kt + p.kh + g % p.kw, 1u);
}

@compute @workgroup_size(BQ)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let bh = wg.z;
    let s = wg.y;
    let i = wg.x * BQ + lid.x;
    let live = i < p.nq;   // dead rows still load tiles and meet the barriers
    let ic = min(i, p.nq - 1u);
    let k_lo = s * p.split;
    let k_hi = min(p.nk, k_lo + p.split);

    var qr: array<vec4<f32>, DMAX4>;
    var acc: array<vec4<f32>, DMAX4>;
    let qbase = (bh * p.nq + ic) * p.d;
    for (var c = 0u; c < D4; c++) {
        qr[c] = ld_q(qbase, c) * p.scale;
        acc[c] = vec4<f32>(0.0);
    }
    // This query's rel row (only a grid query has one).
    let rel_row = REL && ic >= p.cls;
    let rb = (bh * (p.nq - p.cls) + ic - min(ic, p.cls)) * p.r;
    // A finite "−∞" keeps exp(m_old − m_new) at 0 instead of NaN (−∞ − −∞).
    var m = -3.0e38;
    var l = 0.0;
    for (var t0 = k_lo; t0 < k_hi; t0 += p.bk) {
        let nk = min(p.bk, k_hi - t0);
        let nkp = (nk + KB - 1u) / KB * KB;   // padded to whole sub-tiles with zero rows
        for (var e = lid.x; e < nkp * D4; e += BQ) {
            let jj = e / D4;
            let c = e % D4;
            if (jj < nk) {
                let base = (bh * p.nk + t0 + jj) * p.d;
                ks[e] = ld_k(base, c);
                vs[e] = ld_v(base, c);
            } else {
                ks[e] = vec4<f32>(0.0);
                vs[e] = vec4<f32>(0.0);
            }
        }
        if (REL) {
            for (var e = lid.x; e < nkp; e += BQ) {
                koff[e] = select(vec4<u32>(0u), key_axes(t0 + e), e < nk);
            }
        }
        workgroupBarrier();
        for (var j0 = 0u; j0 < nkp; j0 += KB) {
            // Scores of KB keys: head-dim slots outer, keys inner, so each q slot is read once
            // per KB keys (llvmpipe: loads, not FMAs, set the speed).
            var sc: array<f32, KB>;
            for (var jj = 0u; jj < KB; jj++) { sc[jj] = 0.0; }
            for (var c = 0u; c < D4; c++) {
                let qc = qr[c];
                for (var jj = 0u; jj < KB; jj++) {
                    sc[jj] += dot(qc, ks[(j0 + jj) * D4 + c]);
                }
            }
            var mt = m;
            for (var jj = 0u; jj < KB; jj++) {
                var sj = sc[jj];
                if (REL) {
                    let o = koff[j0 + jj];
                    if (rel_row && o.w == 1u) {
                        sj += rel[rb + o.x] + rel[rb + o.y] + rel[rb + o.z];
                    }
                }
                sj = select(-3.0e38, sj, j0 + jj < nk);
                sc[jj] = sj;
                mt = max(mt, sj);
            }
            // One rescale per KB keys, one exp per key.
            let corr = exp(m - mt);
            l = l * corr;
            for (var jj = 0u; jj < KB; jj++) {
                sc[jj] = exp(sc[jj] - mt);   // 0 for the padding rows
                l += sc[jj];
            }
            for (var c = 0u; c < D4; c++) {
                var a = acc[c] * corr;
                for (var jj = 0u; jj < KB; jj++) {
                    a += sc[jj] * vs[(j0 + jj) * D4 + c];
                }
                acc[c] = a;
            }
            m = mt;
        }
        workgroupBarrier();
    }
    if (!live) { return; }
    let inv = 1.0 / l;
    let obase = ((s * p.bh + bh) * p.nq + i) * p.d;
    for (var c = 0u; c < D4; c++) {
        let o = acc[c] * inv;
        if (4u * c < p.d) { y[obase + 4u * c] = o.x; }
        if (4u * c + 1u < p.d) { y[obase + 4u * c + 1u] = o.y; }
        if (4u * c + 2u < p.d) { y[obase + 4u * c + 2u] = o.z; }
        if (4u * c + 3u < p.d) { y[obase + 4u * c + 3u] = o.w; }
    }
    lse[(s * p.bh + bh) * p.nq + i] = m + log(l);
}
