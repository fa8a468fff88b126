// layer_norm_backward — the input gradient, per row r, with g = dy ⊙ w and x̂ = (x − mean_r)·rstd_r:
//   dx[r, c] = rstd_r · (g[c] − mean_c'(g) − x̂[c] · mean_c'(g ⊙ x̂))
// Reference: engine/src/ops/layer_norm.rs::reference_backward.  Forward: layer_norm_forward.wgsl
// Layout: x, dy, dx contiguous f32[ROWS, C]; w f32[C]; mean, rstd f32[ROWS] saved by the forward.
// Dispatch: gpu::grid_rows(ROWS), one workgroup of WG lanes (a power of two) per row; two passes
// of ceil(C / WG) trips per lane (the two row means share one pass and one tree).
// #include "lib/index.wgsl"

struct Params { rows: u32, c: u32, eps: f32 }
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> mean: array<f32>;
@group(0) @binding(3) var<storage, read> rstd: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

var<workgroup> acc_g: array<f32, WG>;
var<workgroup> acc_gx: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = linear_group(wg, nwg);
    let valid = r < p.rows;
    let n = select(0u, p.c, valid);   // spare workgroups still reach the barriers
    let rr = min(r, p.rows - 1u);     // keeps the row-stat loads in bounds for spare workgroups
    let base = r * p.c;
    let mu = mean[rr];
    let rs = rstd[rr];

    // 1. Σ g and Σ g·x̂ over the row
    var sg = 0.0;
    var sgx = 0.0;
    for (var j = lid.x; j < n; j += WG) {
        let g = dy[base + j] * w[j];
        sg += g;
        sgx += g * (x[base + j] - mu) * rs;
    }
    acc_g[lid.x] = sg;
    acc_gx[lid.x] = sgx;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid.x < s) {
            acc_g[lid.x] += acc_g[lid.x + s];
            acc_gx[lid.x] += acc_gx[lid.x + s];
        }
        workgroupBarrier();
    }
    let inv_c = 1.0 / f32(p.c);
    let mean_g = acc_g[0] * inv_c;
    let mean_gx = acc_gx[0] * inv_c;

    // 2. dx
    for (var j = lid.x; j < n; j += WG) {
        let xhat = (x[base + j] - mu) * rs;
        dx[base + j] = rs * (dy[base + j] * w[j] - mean_g - xhat * mean_gx);
    }
}
