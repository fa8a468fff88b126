// batch_norm_forward_update — training mode: from Σ(x − mean)² per channel, the biased variance
// used for normalising, and PyTorch's in-place running-statistics update (momentum μ = 0.1):
//   var[c] = ss[c] / M
//   running_mean[c] ← (1 − μ)·running_mean[c] + μ·mean[c]
//   running_var[c]  ← (1 − μ)·running_var[c]  + μ·ss[c] / (M − 1)   (unbiased, M > 1)
// The running statistics are written in place: a side effect outside autograd, like the
// optimiser's (`Tensor::assign`).
// Reference: engine/src/ops/batch_norm.rs::reference_running_update.
// Layout: ss, mean, var, running_mean, running_var f32[C].
// Dispatch: gpu::grid(C, WG), one channel per invocation.
// #include "lib/index.wgsl"

struct Params { c: u32, m: f32, momentum: f32 }
override WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> ss: array<f32>;
@group(0) @binding(1) var<storage, read> mean: array<f32>;
@group(0) @binding(2) var<storage, read_write> var_: array<f32>;
@group(0) @binding(3) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = linear_index(wg, nwg, lid, WG);
    if (c >= p.c) { return; }
    let mu = p.momentum;
    var_[c] = ss[c] / p.m;
    running_mean[c] = (1.0 - mu) * running_mean[c] + mu * mean[c];
    running_var[c] = (1.0 - mu) * running_var[c] + mu * ss[c] / (p.m - 1.0);
}
