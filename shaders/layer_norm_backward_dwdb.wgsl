// layer_norm_backward_dwdb — partial column sums for the parameter gradients:
//   dw_part[k, c] = Σ_{r in chunk k} dy[r, c] · x̂[r, c],   db_part[k, c] = Σ_{r in chunk k} dy[r, c]
// with x̂ = (x − mean_r)·rstd_r. Rows are split into chunks of p.chunk (layer_norm.rs::ROW_CHUNK)
// so that every invocation loops p.chunk times at most, however many rows there are (video
// models have B·T·H·W rows, often > 65,535: one loop over all of them would stop silently on
// Mesa 22's llvmpipe). The caller sums the K = ceil(ROWS / chunk) partials with `reduce`.
// No atomics: the result is deterministic.
// Reference: engine/src/ops/layer_norm.rs::reference_backward.
// Layout: x, dy contiguous f32[ROWS, C]; mean, rstd f32[ROWS]; dw_part, db_part f32[K, C].
// Dispatch: gpu::grid(K · C, WG), invocation i → chunk k = i / C, column c = i % C: neighbouring
// lanes read neighbouring columns of the same row.
// #include "lib/index.wgsl"

struct Params { rows: u32, c: u32, chunk: u32, n_chunks: u32 }
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> mean: array<f32>;
@group(0) @binding(2) var<storage, read> rstd: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dw_part: array<f32>;
@group(0) @binding(5) var<storage, read_write> db_part: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.n_chunks * p.c) { return; }
    let k = i / p.c;
    let col = i - k * p.c;
    let start = k * p.chunk;
    let end = min(start + p.chunk, p.rows);
    var sw = 0.0;
    var sb = 0.0;
    for (var r = start; r < end; r++) {
        let g = dy[r * p.c + col];
        sw += g * (x[r * p.c + col] - mean[r]) * rstd[r];
        sb += g;
    }
    dw_part[i] = sw;
    db_part[i] = sb;
}
