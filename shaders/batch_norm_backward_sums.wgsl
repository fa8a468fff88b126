// batch_norm_backward_sums — per-channel partial sums for the parameter gradients (and for the
// training-mode dx, which goes through the batch statistics):
//   db_part[c, k] = Σ_{m ∈ chunk k} dy[n, c, s]
//   dw_part[c, k] = Σ_{m ∈ chunk k} dy[n, c, s] · x̂[n, c, s],   x̂ = (x − mean[c]) · rsqrt(var[c] + eps)
// Chunks of p.chunk elements of a channel, one workgroup each (loops ≤ chunk / WG trips, below
// Mesa 22's 65,535 limit); the caller sums the K partials with `reduce`. No atomics.
// Reference: engine/src/ops/batch_norm.rs::reference_backward.
// Layout: x, dy contiguous f32[N, C, S]; mean, var f32[C]; db_part, dw_part f32[C, K].
// Dispatch: gpu::grid_rows(C · K), workgroup g → channel c = g / K, chunk k = g % K.
// #include "lib/index.wgsl"

struct Params { c: u32, s: u32, m: u32, chunk: u32, n_chunks: u32, eps: f32 }
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> mean: array<f32>;
@group(0) @binding(3) var<storage, read> var_: array<f32>;
@group(0) @binding(4) var<storage, read_write> db_part: array<f32>;
@group(0) @binding(5) var<storage, read_write> dw_part: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

var<workgroup> acc_b: array<f32, WG>;
var<workgroup> acc_w: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = linear_group(wg, nwg);
    let valid = g < p.c * p.n_chunks;   // spare workgroups still reach the barriers
    let ch = min(g / p.n_chunks, p.c - 1u);
    let k = g % p.n_chunks;
    let start = k * p.chunk;
    let end = select(start, min(start + p.chunk, p.m), valid);
    let mu = mean[ch];
    let rs = inverseSqrt(var_[ch] + p.eps);
    var sb = 0.0;
    var sw = 0.0;
    for (var m = start + lid.x; m < end; m += WG) {
        let n = m / p.s;
        let i = (n * p.c + ch) * p.s + (m - n * p.s);
        let g_ = dy[i];
        sb += g_;
        sw += g_ * (x[i] - mu) * rs;
    }
    acc_b[lid.x] = sb;
    acc_w[lid.x] = sw;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid.x < s) {
            acc_b[lid.x] += acc_b[lid.x + s];
            acc_w[lid.x] += acc_w[lid.x + s];
        }
        workgroupBarrier();
    }
    if (valid && lid.x == 0u) {
        db_part[g] = acc_b[0];
        dw_part[g] = acc_w[0];
    }
}
