// softmax_backward — dx[r, c] = y[r, c] · (dy[r, c] − Σ_c' dy[r, c']·y[r, c'])
// Reference: engine/src/ops/softmax.rs::reference_backward.  Forward: softmax_forward.wgsl
// Layout: y (the forward output), dy, dx contiguous f32[ROWS, C].
// Dispatch: gpu::grid_rows(ROWS), one workgroup of WG lanes (a power of two) per row; two passes
// of ceil(C / WG) trips per lane (see softmax.rs::MAX_ROW for the loop limit).
// #include "lib/index.wgsl"

struct Params { rows: u32, c: u32 }
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> y: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> acc: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = linear_group(wg, nwg);
    let n = select(0u, p.c, r < p.rows);   // spare workgroups still reach the barriers
    let base = r * p.c;

    // 1. Σ dy·y over the row
    var dot = 0.0;
    for (var j = lid.x; j < n; j += WG) {
        dot += dy[base + j] * y[base + j];
    }
    acc[lid.x] = dot;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid.x < s) { acc[lid.x] += acc[lid.x + s]; }
        workgroupBarrier();
    }
    dot = acc[0];

    // 2. dx = y·(dy − dot)
    for (var j = lid.x; j < n; j += WG) {
        dx[base + j] = y[base + j] * (dy[base + j] - dot);
    }
}
