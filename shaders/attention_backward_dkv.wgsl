// attention_backward_dkv — dK and dV of FlashAttention-2 (arXiv:2307.08691, Algorithm 2), one
// key row per invocation, looping over the query tiles of one split:
//   P_ij = exp(scale · q_i·k_j − lse_i),  dv_j = Σ_i P_ij · dO_i,
//   dS_ij = P_ij · (dO_i·v_j − Delta_i),   dk_j = scale · Σ_i dS_ij · q_i
// Reference: engine/src/ops/attention.rs::reference_backward.  Forward: attention_forward.
// Layout: B, N, H, D, S query splits.  qkv f32[B, N, 3, H, D]; dy f32[B, N, H, D];
//   lse, delta f32[B, H, N]; dqkv f32[S, B, N, 3, H, D]: this kernel writes the k (1) and v (2)
//   slots of split s (S = 1: the final gradient; else attention_backward_combine sums splits).
// Dispatch: (ceil(N / BQ), S, B·H) workgroups of BQ invocations.
// NOTE: every loop of an invocation counts against llvmpipe's 65,535-iteration limit; the host
//   picks split so that split · (4·D4 + 2) stays far below it.
// #include "lib/index.wgsl"

struct Params {
    b: u32,
    n: u32,
    h: u32,
    d: u32,
    d4: u32,      // ceil(D / 4): vec4 slots per row
    bk: u32,      // rows per workgroup-memory tile (bk · d4 ≤ TILE)
    split: u32,   // rows of the looped-over side per split (a multiple of bk)
    n_split: u32,
    scale: f32,
    total: u32,
    _pad0: u32,
    _pad1: u32,
}
override BQ: u32 = 32u;     // key rows per workgroup = workgroup size
override TILE: u32 = 480u;  // vec4 slots per Q (and per dO) tile: 15 KiB for both
const DMAX4: u32 = 32u;     // head dim ≤ 128
// D4 = ceil(D / 4), fixed per pipeline (set by the host): the row loops get constant trip
// counts, so llvmpipe unrolls them and keeps the row arrays in registers instead of indexing
// private memory lane by lane (3x faster on lavapipe at D = 16). Never above DMAX4.
override D4: u32 = 32u;
const MAX_BK: u32 = 64u;    // rows per tile never exceed this (see ops/attention.rs)

@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> lse: array<f32>;
@group(0) @binding(3) var<storage, read> delta: array<f32>;
@group(0) @binding(4) var<storage, read_write> dqkv: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

var<workgroup> qs: array<vec4<f32>, TILE>;
var<workgroup> gs: array<vec4<f32>, TILE>;   // dO rows
var<workgroup> lse_t: array<f32, MAX_BK>;
var<workgroup> delta_t: array<f32, MAX_BK>;

fn row(b: u32, tok: u32, t: u32, h: u32) -> u32 {
    return ((b * p.n + tok) * 3u + t) * p.h * p.d + h * p.d;
}

fn ld4(base: u32, c: u32) -> vec4<f32> {
    let e = 4u * c;
    var v = vec4<f32>(0.0);
    if (e < p.d) { v.x = qkv[base + e]; }
    if (e + 1u < p.d) { v.y = qkv[base + e + 1u]; }
    if (e + 2u < p.d) { v.z = qkv[base + e + 2u]; }
    if (e + 3u < p.d) { v.w = qkv[base + e + 3u]; }
    return v;
}

fn ld4_dy(base: u32, c: u32) -> vec4<f32> {
    let e = 4u * c;
    var v = vec4<f32>(0.0);
    if (e < p.d) { v.x = dy[base + e]; }
    if (e + 1u < p.d) { v.y = dy[base + e + 1u]; }
    if (e + 2u < p.d) { v.z = dy[base + e + 2u]; }
    if (e + 3u < p.d) { v.w = dy[base + e + 3u]; }
    return v;
}

@compute @workgroup_size(BQ)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wg.z / p.h;
    let h = wg.z % p.h;
    let s = wg.y;
    let j = wg.x * BQ + lid.x;
    let live = j < p.n;
    let jc = min(j, p.n - 1u);
    let q_lo = s * p.split;
    let q_hi = min(p.n, q_lo + p.split);

    var k: array<vec4<f32>, DMAX4>;
    var v: array<vec4<f32>, DMAX4>;
    var dk: array<vec4<f32>, DMAX4>;
    var dv: array<vec4<f32>, DMAX4>;
    for (var c = 0u; c < D4; c++) {
        k[c] = ld4(row(b, jc, 1u, h), c) * p.scale;
        v[c] = ld4(row(b, jc, 2u, h), c);
        dk[c] = vec4<f32>(0.0);
        dv[c] = vec4<f32>(0.0);
    }
    for (var t0 = q_lo; t0 < q_hi; t0 += p.bk) {
        let nq = min(p.bk, q_hi - t0);
        // (nq, D4) tiles of Q and dO, and their rows' lse and Delta
        for (var e = lid.x; e < nq * D4; e += BQ) {
            let i = t0 + e / D4;
            qs[e] = ld4(row(b, i, 0u, h), e % D4);
            gs[e] = ld4_dy((b * p.n + i) * p.h * p.d + h * p.d, e % D4);
        }
        for (var e = lid.x; e < nq; e += BQ) {
            lse_t[e] = lse[(b * p.h + h) * p.n + t0 + e];
            delta_t[e] = delta[(b * p.h + h) * p.n + t0 + e];
        }
        workgroupBarrier();
        for (var i = 0u; i < nq; i++) {
            var sc = 0.0;
            var dp = 0.0;
            for (var c = 0u; c < D4; c++) {
                sc += dot(qs[i * D4 + c], k[c]);
                dp += dot(gs[i * D4 + c], v[c]);
            }
            let pij = exp(sc - lse_t[i]);
            let ds = pij * (dp - delta_t[i]);
            for (var c = 0u; c < D4; c++) {
                dv[c] += pij * gs[i * D4 + c];
                dk[c] += ds * qs[i * D4 + c];
            }
        }
        workgroupBarrier();
    }
    if (!live) { return; }
    let kbase = ((s * p.b + b) * p.n + j) * 3u * p.h * p.d + p.h * p.d + h * p.d;
    let vbase = kbase + p.h * p.d;
    for (var c = 0u; c < D4; c++) {
        let gk = dk[c] * p.scale;
        let gv = dv[c];
        for (var e = 0u; e < 4u; e++) {
            if (4u * c + e < p.d) {
                dqkv[kbase + 4u * c + e] = gk[e];
                dqkv[vbase + 4u * c + e] = gv[e];
            }
        }
    }
}
