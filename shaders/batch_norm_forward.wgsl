// batch_norm_forward — normalise each channel with its statistics (batch ones in training mode,
// the running ones in eval mode; batch_norm.rs chooses), then scale and shift:
//   y[n, c, s] = (x[n, c, s] − mean[c]) · rsqrt(var[c] + eps) · w[c] + b[c]
// Reference: engine/src/ops/batch_norm.rs::reference.
// Backward: batch_norm_backward_sums.wgsl (dw, db), batch_norm_backward.wgsl (dx).
// Layout: x, y contiguous f32[N, C, S]; mean, var, w, b f32[C].
// Dispatch: gpu::grid(N·C·S, WG), one element per invocation.
// #include "lib/index.wgsl"

struct Params { n: u32, c: u32, s: u32, eps: f32 }
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> mean: array<f32>;
@group(0) @binding(2) var<storage, read> var_: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read> b: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.n) { return; }
    let c = (i / p.s) % p.c;
    y[i] = (x[i] - mean[c]) * inverseSqrt(var_[c] + p.eps) * w[c] + b[c];
}
