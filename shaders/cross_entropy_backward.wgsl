// cross_entropy_backward — dx[r, c] = (exp(x[r, c] − lse[r]) − [c == labels[r]]) · dloss / N
// (softmax minus the one-hot label, scaled by the upstream gradient of the mean loss).
// Reference: engine/src/ops/cross_entropy.rs::reference_backward.  Forward: cross_entropy_forward.wgsl
// Layout: x, dx contiguous f32[N, C]; lse f32[N] saved by the forward; labels u32[N];
//         dy f32[1] (the scalar loss's upstream gradient, read on the GPU: no readback).
// Dispatch: gpu::grid(N · C, WG), one invocation per logit.
// #include "lib/index.wgsl"

struct Params { n: u32, c: u32, inv_n: f32 }   // n = N · C elements
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> lse: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.n) { return; }
    let r = i / p.c;
    let onehot = select(0.0, 1.0, i - r * p.c == labels[r]);
    dx[i] = (exp(x[i] - lse[r]) - onehot) * (dy[0] * p.inv_n);
}
