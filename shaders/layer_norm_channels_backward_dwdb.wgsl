// layer_norm_channels_backward_dwdb — partial sums for the parameter gradients over chunks of
// the B·S columns m = b·S + s:
//   dw_part[c, k] = Σ_{m in chunk k} dy[b, c, s] · x̂[b, c, s],   db_part[c, k] = Σ_{m in chunk k} dy[b, c, s]
// with x̂ = (x − mean_m)·rstd_m. A chunk is p.chunk = 64·WG columns, so each lane loops ≤ 64
// times however large B·T·H·W is (Mesa 22's llvmpipe silently stops loops after 65,535 trips);
// the caller sums the K = ceil(B·S / chunk) partials with `reduce`. No atomics: deterministic.
// Reference: engine/src/ops/layer_norm_channels.rs::reference_backward.
// Layout: x, dy contiguous f32[B, C, S]; mean, rstd f32[B·S]; dw_part, db_part f32[C, K].
// Dispatch: gpu::grid_rows(C · K), one workgroup per (c, k); lanes read neighbouring s of one
// channel (contiguous), then a workgroup tree sums the lanes.
// #include "lib/index.wgsl"

struct Params { cols: u32, c: u32, s: u32, chunk: u32, n_chunks: u32 }
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> mean: array<f32>;
@group(0) @binding(2) var<storage, read> rstd: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dw_part: array<f32>;
@group(0) @binding(5) var<storage, read_write> db_part: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

var<workgroup> acc_w: array<f32, WG>;
var<workgroup> acc_b: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = linear_group(wg, nwg);
    let valid = g < p.c * p.n_chunks;
    let c = g / p.n_chunks;
    let k = g - c * p.n_chunks;
    let start = k * p.chunk;
    let end = select(start, min(start + p.chunk, p.cols), valid); // spare groups reach the barriers
    var sw = 0.0;
    var sb = 0.0;
    for (var m = start + lid.x; m < end; m += WG) {
        let bi = m / p.s;
        let e = (bi * p.c + c) * p.s + (m - bi * p.s);
        let d = dy[e];
        sw += d * (x[e] - mean[m]) * rstd[m];
        sb += d;
    }
    acc_w[lid.x] = sw;
    acc_b[lid.x] = sb;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid.x < s) {
            acc_w[lid.x] += acc_w[lid.x + s];
            acc_b[lid.x] += acc_b[lid.x + s];
        }
        workgroupBarrier();
    }
    if (valid && lid.x == 0u) {
        dw_part[g] = acc_w[0];
        db_part[g] = acc_b[0];
    }
}
