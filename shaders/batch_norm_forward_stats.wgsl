// batch_norm_forward_stats — per-channel partial sums for the batch statistics of BatchNorm:
//   part[c, k] = Σ_{m ∈ chunk k} (x[n, c, s] − center[c])^POW,   m = n·S + s,  POW = 1 + p.square
// Pass 1 (square 0, center = 0) gives Σx, hence the mean; pass 2 (square 1, center = mean) gives
// Σ(x − mean)², the two-pass variance (E[x²] − mean² cancels for data far from 0).
// The M = N·S elements of a channel are cut into chunks of p.chunk (batch_norm.rs::CHUNK), one
// workgroup each, so every lane loops ≤ chunk / WG times (Mesa 22's llvmpipe silently stops loops
// at 65,535 trips); the caller sums the K = ceil(M / chunk) partials with `reduce`. No atomics.
// Reference: engine/src/ops/batch_norm.rs::reference.
// Layout: x contiguous f32[N, C, S] (S = T·H·W, or H·W, or 1); center f32[C]; part f32[C, K].
// Dispatch: gpu::grid_rows(C · K), workgroup g → channel c = g / K, chunk k = g % K.
// #include "lib/index.wgsl"

struct Params { c: u32, s: u32, m: u32, chunk: u32, n_chunks: u32, square: u32 }
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> center: array<f32>;
@group(0) @binding(2) var<storage, read_write> part: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> acc: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = linear_group(wg, nwg);
    let valid = g < p.c * p.n_chunks;   // spare workgroups still reach the barriers
    let ch = g / p.n_chunks;
    let k = g % p.n_chunks;
    let start = k * p.chunk;
    let end = select(start, min(start + p.chunk, p.m), valid);
    let mu = select(0.0, center[min(ch, p.c - 1u)], valid);
    var v = 0.0;
    for (var m = start + lid.x; m < end; m += WG) {
        let n = m / p.s;
        let d = x[(n * p.c + ch) * p.s + (m - n * p.s)] - mu;
        v += select(d, d * d, p.square == 1u);
    }
    acc[lid.x] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid.x < s) { acc[lid.x] += acc[lid.x + s]; }
        workgroupBarrier();
    }
    if (valid && lid.x == 0u) {
        part[g] = acc[0];
    }
}
