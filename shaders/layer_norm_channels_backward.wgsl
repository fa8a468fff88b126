// layer_norm_channels_backward — the input gradient, per column (b, s), with g = dy ⊙ w and
// x̂ = (x − mean)·rstd over the channels c:
//   dx[b, c, s] = rstd · (g[c] − mean_c'(g) − x̂[c] · mean_c'(g ⊙ x̂))
// Reference: engine/src/ops/layer_norm_channels.rs::reference_backward.
// Forward: layer_norm_channels_forward.wgsl.
// Layout: x, dy, dx contiguous f32[B, C, S]; w f32[C]; mean, rstd f32[B·S] saved by the forward.
// Dispatch: gpu::grid(B·S, WG), one column per invocation; 2 × C loop trips per lane.
// #include "lib/index.wgsl"

struct Params { cols: u32, c: u32, s: u32, eps: f32 }
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> mean: array<f32>;
@group(0) @binding(3) var<storage, read> rstd: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.cols) { return; }
    let bi = i / p.s;
    let base = bi * p.c * p.s + (i - bi * p.s);
    let mu = mean[i];
    let rs = rstd[i];

    // 1. Σ g and Σ g·x̂ over the channels
    var sg = 0.0;
    var sgx = 0.0;
    for (var c = 0u; c < p.c; c++) {
        let k = base + c * p.s;
        let g = dy[k] * w[c];
        sg += g;
        sgx += g * (x[k] - mu) * rs;
    }
    let inv_c = 1.0 / f32(p.c);
    let mean_g = sg * inv_c;
    let mean_gx = sgx * inv_c;

    // 2. dx
    for (var c = 0u; c < p.c; c++) {
        let k = base + c * p.s;
        dx[k] = rs * (dy[k] * w[c] - mean_g - (x[k] - mu) * rs * mean_gx);
    }
}
