// attention_backward_dq — dQ of FlashAttention-2 (arXiv:2307.08691, Algorithm 2), one query row
// per invocation, looping over the key tiles of one split:
//   P_ij = exp(scale · q_i·k_j − lse_i),  dP_ij = dO_i·v_j,  dS_ij = P_ij · (dP_ij − Delta_i),
//   dq_i = scale · Σ_j dS_ij · k_j
// Reference: engine/src/ops/attention.rs::reference_backward.  Forward: attention_forward.
// Layout: B, N, H, D, S key splits.  qkv f32[B, N, 3, H, D]; dy f32[B, N, H, D];
//   lse, delta f32[B, H, N]; dqkv f32[S, B, N, 3, H, D]: this kernel writes the q slot (0) of
//   split s (S = 1: the final gradient; otherwise attention_backward_combine sums the splits).
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
override BQ: u32 = 32u;     // query rows per workgroup = workgroup size
override TILE: u32 = 480u;  // vec4 slots per K (and per V) tile: 15 KiB for both
const DMAX4: u32 = 32u;     // head dim ≤ 128
// D4 = ceil(D / 4), fixed per pipeline (set by the host): the row loops get constant trip
// counts, so llvmpipe unrolls them and keeps the row arrays in registers instead of indexing
// private memory lane by lane (3x faster on lavapipe at D = 16). Never above DMAX4.
override D4: u32 = 32u;

@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> lse: array<f32>;
@group(0) @binding(3) var<storage, read> delta: array<f32>;
@group(0) @binding(4) var<storage, read_write> dqkv: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

var<workgroup> ks: array<vec4<f32>, TILE>;
var<workgroup> vs: array<vec4<f32>, TILE>;

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

// Components 4c..4c+3 of the upstream gradient row at `base` (layout (B, N, H, D)).
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
    let i = wg.x * BQ + lid.x;
    let live = i < p.n;
    let ic = min(i, p.n - 1u);   // dead rows compute on a valid row and write nothing
    let k_lo = s * p.split;
    let k_hi = min(p.n, k_lo + p.split);

    var q: array<vec4<f32>, DMAX4>;
    var g: array<vec4<f32>, DMAX4>;    // dO_i
    var dq: array<vec4<f32>, DMAX4>;
    let qrow = row(b, ic, 0u, h);
    let grow = (b * p.n + ic) * p.h * p.d + h * p.d;
    for (var c = 0u; c < D4; c++) {
        q[c] = ld4(qrow, c) * p.scale;
        g[c] = ld4_dy(grow, c);
        dq[c] = vec4<f32>(0.0);
    }
    let li = (b * p.h + h) * p.n + ic;
    let lse_i = lse[li];
    let delta_i = delta[li];
    for (var t0 = k_lo; t0 < k_hi; t0 += p.bk) {
        let nk = min(p.bk, k_hi - t0);
        for (var e = lid.x; e < nk * D4; e += BQ) {
            let j = t0 + e / D4;
            ks[e] = ld4(row(b, j, 1u, h), e % D4);
            vs[e] = ld4(row(b, j, 2u, h), e % D4);
        }
        workgroupBarrier();
        for (var j = 0u; j < nk; j++) {
            var sc = 0.0;
            var dp = 0.0;
            for (var c = 0u; c < D4; c++) {
                sc += dot(q[c], ks[j * D4 + c]);
                dp += dot(g[c], vs[j * D4 + c]);
            }
            let ds = exp(sc - lse_i) * (dp - delta_i);
            for (var c = 0u; c < D4; c++) {
                dq[c] += ds * ks[j * D4 + c];
            }
        }
        workgroupBarrier();
    }
    if (!live) { return; }
    // q slot of split s: ((s·B + b)·N + i)·3·H·D + h·D
    let obase = ((s * p.b + b) * p.n + i) * 3u * p.h * p.d + h * p.d;
    for (var c = 0u; c < D4; c++) {
        let v = dq[c] * p.scale;
        for (var k = 0u; k < 4u; k++) {
            if (4u * c + k < p.d) { dqkv[obase + 4u * c + k] = v[k]; }
        }
    }
}
