// pooled_attention_forward_combine — merges the S key splits of pooled_attention_forward
// (FlashDecoding style):  lse = log Σ_s exp(lse_s),   y = Σ_s exp(lse_s − lse) · y_s
// Reference: engine/src/ops/pooled_attention.rs::reference.
// Layout: BH = B·heads, Nq queries, D head dim, S splits.
//   y_part f32[S, BH, Nq, D], lse_part f32[S, BH, Nq]  →  y f32[BH, Nq, D], lse f32[BH, Nq].
// Dispatch: gpu::grid(BH·Nq·D, WG), one invocation per output element (loops of S trips).
// #include "lib/index.wgsl"

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
    total: u32,   // BH·Nq·D
    _pad0: u32,
    _pad1: u32,
}
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> y_part: array<f32>;
@group(0) @binding(1) var<storage, read> lse_part: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = linear_index(wg, nwg, lid, WG);
    if (e >= p.total) { return; }
    let row = e / p.d;                 // (bh, i)
    let per_split = p.bh * p.nq;       // lse entries per split
    var mx = -3.0e38;
    for (var s = 0u; s < p.n_split; s++) {
        mx = max(mx, lse_part[s * per_split + row]);
    }
    var sum = 0.0;
    var o = 0.0;
    for (var s = 0u; s < p.n_split; s++) {
        let w = exp(lse_part[s * per_split + row] - mx);
        sum += w;
        o += w * y_part[s * p.total + e];
    }
    y[e] = o / sum;
    if (e % p.d == 0u) {
        lse[row] = mx + log(sum);
    }
}
