// pooled_attention_backward_dq — dQ and d_rel of the pooled attention (FlashAttention-2,
// arXiv:2307.08691, Algorithm 2), one query row per invocation over the key tiles of one split:
//   Delta_i = dO_i·O_i,  P_ij = exp(s_ij − lse_i),  dS_ij = P_ij·(dO_i·v_j − Delta_i),
//   dq_i = scale·Σ_j dS_ij k_j,   d_rel[i, a] = Σ_{j ≥ cls on coordinate a} dS_ij  (i ≥ cls)
// (s_ij as in pooled_attention_forward). d_rel is a per-query reduction over keys: the query's
// own invocation accumulates its row, so no two invocations touch one element (no atomics).
// It also writes Delta (split 0) for pooled_attention_backward_dkv.
// Reference: engine/src/ops/pooled_attention.rs::reference_backward.
// Layout: BH, Nq, Nk, D, R, S key splits as in pooled_attention_forward.  q f32[BH, Nq, D];
//   k, v f32[BH, Nk, D]; rel f32[BH, Nq − cls, R]; y, dy f32[BH, Nq, D]; lse f32[BH, Nq];
//   dq f32[S, BH, Nq, D]; drel f32[S, BH, Nq − cls, R] (written only when REL); delta f32[BH, Nq].
// Dispatch: (ceil(Nq / BQ), S, BH) workgroups of BQ invocations.
// NOTE: every loop of an invocation counts against llvmpipe's 65,535-iteration limit (Mesa 22);
//   the host picks split so that split · (2·D4 + 4) stays far below it (R ≤ split is assumed
//   for the d_rel zeroing loop: R = kt + kh + kw ≤ Nk).

struct Params {
    bh: u32,
    nq: u32,
    nk: u32,
    d: u32,
    cls: u32,
    kt: u32,
    kh: u32,
    kw: u32,
    r: u32,
    bk: u32,
    split: u32,
    n_split: u32,
    scale: f32,
    total: u32,
    _pad0: u32,
    _pad1: u32,
}
override BQ: u32 = 32u;     // query rows per workgroup = workgroup size
override TILE: u32 = 896u;  // vec4 slots per K (and per V) tile: 28 KiB for both
const DMAX4: u32 = 32u;     // head dim ≤ 128
override D4: u32 = 32u;     // ceil(D / 4), fixed per pipeline (constant-trip row loops)
override REL: bool = false; // a rel input is bound
const KB: u32 = 8u;         // keys per inner step (tiles are padded to KB with zero rows)
const MAX_BK: u32 = 64u;

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> rel: array<f32>;
@group(0) @binding(4) var<storage, read> y: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read> lse: array<f32>;
@group(0) @binding(7) var<storage, read_write> dq: array<f32>;
@group(0) @binding(8) var<storage, read_write> drel: array<f32>;
@group(0) @binding(9) var<storage, read_write> delta: array<f32>;
@group(0) @binding(10) var<uniform> p: Params;

var<workgroup> ks: array<vec4<f32>, TILE>;
var<workgroup> vs: array<vec4<f32>, TILE>;
var<workgroup> koff: array<vec4<u32>, MAX_BK>;   // rel columns of each key (see the forward)

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

fn ld_y(base: u32, c: u32) -> vec4<f32> {
    let e = 4u * c;
    var r = vec4<f32>(0.0);
    if (e < p.d) { r.x = y[base + e]; }
    if (e + 1u < p.d) { r.y = y[base + e + 1u]; }
    if (e + 2u < p.d) { r.z = y[base + e + 2u]; }
    if (e + 3u < p.d) { r.w = y[base + e + 3u]; }
    return r;
}

fn ld_dy(base: u32, c: u32) -> vec4<f32> {
    let e = 4u * c;
    var r = vec4<f32>(0.0);
    if (e < p.d) { r.x = dy[base + e]; }
    if (e + 1u < p.d) { r.y = dy[base + e + 1u]; }
    if (e + 2u < p.d) { r.z = dy[base + e + 2u]; }
    if (e + 3u < p.d) { r.w = dy[base + e + 3u]; }
    return r;
}

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
    let live = i < p.nq;
    let ic = min(i, p.nq - 1u);   // dead rows compute on a valid row and write nothing
    let k_lo = s * p.split;
    let k_hi = min(p.nk, k_lo + p.split);

    var qr: array<vec4<f32>, DMAX4>;
    var g: array<vec4<f32>, DMAX4>;    // dO_i
    var acc: array<vec4<f32>, DMAX4>;  // Σ_j dS_ij k_j
    let row = (bh * p.nq + ic) * p.d;
    var delta_i = 0.0;
    for (var c = 0u; c < D4; c++) {
        qr[c] = ld_q(row, c) * p.scale;
        g[c] = ld_dy(row, c);
        delta_i += dot(g[c], ld_y(row, c));
        acc[c] = vec4<f32>(0.0);
    }
    if (live && s == 0u) {
        delta[bh * p.nq + i] = delta_i;
    }
    let lse_i = lse[bh * p.nq + ic];
    // This query's rel row and its d_rel partial row (grid queries only; never for dead rows,
    // which would race with the live owner of row Nq − 1).
    let rel_row = REL && ic >= p.cls;
    let own_rel = rel_row && live;
    let ri = ic - min(ic, p.cls);
    let rb = (bh * (p.nq - p.cls) + ri) * p.r;
    let db = ((s * p.bh + bh) * (p.nq - p.cls) + ri) * p.r;
    if (own_rel) {
        for (var a = 0u; a < p.r; a++) {
            drel[db + a] = 0.0;
        }
    }
    for (var t0 = k_lo; t0 < k_hi; t0 += p.bk) {
        let nk = min(p.bk, k_hi - t0);
        let nkp = (nk + KB - 1u) / KB * KB;
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
            // s and dO·v of KB keys: head-dim slots outer, keys inner (each q, dO slot read
            // once per KB keys).
            var sc: array<f32, KB>;
            var dp: array<f32, KB>;
            for (var jj = 0u; jj < KB; jj++) { sc[jj] = 0.0; dp[jj] = 0.0; }
            for (var c = 0u; c < D4; c++) {
                let qc = qr[c];
                let gc = g[c];
                for (var jj = 0u; jj < KB; jj++) {
                    sc[jj] += dot(qc, ks[(j0 + jj) * D4 + c]);
                    dp[jj] += dot(gc, vs[(j0 + jj) * D4 + c]);
                }
            }
            for (var jj = 0u; jj < KB; jj++) {
                let j = j0 + jj;
                var sj = sc[jj];
                var o = vec4<u32>(0u);
                if (REL) {
                    o = koff[j];
                    if (rel_row && o.w == 1u) {
                        sj += rel[rb + o.x] + rel[rb + o.y] + rel[rb + o.z];
                    }
                }
                let ds = select(0.0, exp(sj - lse_i) * (dp[jj] - delta_i), j < nk);
                sc[jj] = ds;
                if (REL) {
                    if (own_rel && o.w == 1u) {
                        drel[db + o.x] += ds;
                        drel[db + o.y] += ds;
                        drel[db + o.z] += ds;
                    }
                }
            }
            for (var c = 0u; c < D4; c++) {
                var a = acc[c];
                for (var jj = 0u; jj < KB; jj++) {
                    a += sc[jj] * ks[(j0 + jj) * D4 + c];
                }
                acc[c] = a;
            }
        }
        workgroupBarrier();
    }
    if (!live) { return; }
    let obase = ((s * p.bh + bh) * p.nq + i) * p.d;
    for (var c = 0u; c < D4; c++) {
        let o = acc[c] * p.scale;
        if (4u * c < p.d) { dq[obase + 4u * c] = o.x; }
        if (4u * c + 1u < p.d) { dq[obase + 4u * c + 1u] = o.y; }
        if (4u * c + 2u < p.d) { dq[obase + 4u * c + 2u] = o.z; }
        if (4u * c + 3u < p.d) { dq[obase + 4u * c + 3u] = o.w; }
    }
}
