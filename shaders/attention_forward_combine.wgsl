// attention_forward_combine — merges S key splits of attention_forward (FlashDecoding style):
//   lse = log Σ_s exp(lse_s),   o = Σ_s exp(lse_s − lse) · o_s
// Reference: engine/src/ops/attention.rs::reference.  Backward: attention_backward_{delta,dq,dkv}.
// Layout: B, N, H, D as in attention_forward, S splits.
//   y_part f32[S, B, N, H, D], lse_part f32[S, B, H, N]  →  y f32[B, N, H, D], lse f32[B, H, N].
// Dispatch: gpu::grid(B·N·H·D, WG), one invocation per output element (loops of S trips).
// #include "lib/index.wgsl"

struct Params {
    b: u32,
    n: u32,
    h: u32,
    d: u32,
    d4: u32,
    bk: u32,
    split: u32,
    n_split: u32,
    scale: f32,
    total: u32,   // B·N·H·D
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
    let c = e % p.d;
    let h = (e / p.d) % p.h;
    let i = (e / (p.d * p.h)) % p.n;
    let b = e / (p.d * p.h * p.n);
    let per_split = p.b * p.h * p.n;   // lse entries per split
    let li = (b * p.h + h) * p.n + i;
    var mx = -3.0e38;
    for (var s = 0u; s < p.n_split; s++) {
        mx = max(mx, lse_part[s * per_split + li]);
    }
    var sum = 0.0;
    var o = 0.0;
    for (var s = 0u; s < p.n_split; s++) {
        let w = exp(lse_part[s * per_split + li] - mx);
        sum += w;
        o += w * y_part[s * p.total + e];
    }
    y[e] = o / sum;
    if (c == 0u) {
        lse[li] = mx + log(sum);
    }
}
