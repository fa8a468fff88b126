// drop_path_forward — stochastic depth (Huang et al. 2016), one mask bit per sample:
//   y[b, r] = x[b, r] · scale   if pcg(pcg(b) ^ key) ≥ threshold,   else 0,
//   b = i / per_sample (the first axis), r the rest; key, threshold, scale = 1/(1 − p) from the
//   host, exactly as dropout_forward.wgsl computes them for flat index b (drop_path.rs reuses
//   `Dropout::keep`, so the reference reproduces the mask bit for bit).
// Reference: engine/src/ops/drop_path.rs::reference.  Backward: this kernel on dy (same mask).
// Layout: x, y contiguous f32[B, per_sample].  Dispatch: gpu::grid(B·per_sample, WG).
// #include "lib/index.wgsl"

struct Params {
    n: u32,
    key: u32,
    threshold: u32,
    scale: f32,
    per_sample: u32,
}
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

// The PCG hash of dropout_forward.wgsl (Jarzynski & Olano, JCGT 9(3) 2020); u32 wraps.
fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.n) { return; }
    let keep = pcg(pcg(i / p.per_sample) ^ p.key) >= p.threshold;
    y[i] = select(0.0, x[i] * p.scale, keep);
}
