// softmax_forward — y[r, c] = exp(x[r, c] − m_r) / Σ_c' exp(x[r, c'] − m_r),  m_r = max_c x[r, c]
// (max-subtracted, so exp never overflows).
// Reference: engine/src/ops/softmax.rs::reference.  Backward: softmax_backward.wgsl
// Layout: x, y contiguous f32[ROWS, C]; softmax over the last axis C.
// Dispatch: gpu::grid_rows(ROWS), one workgroup of WG lanes (a power of two) per row.
// Three strided passes over the row (max; exp into y and sum; scale y by 1/sum), each
// ceil(C / WG) trips per lane, plus log2(WG)-step tree reductions: softmax.rs::MAX_ROW keeps the
// total under Mesa 22 llvmpipe's silent 65,535-trip loop limit.
// #include "lib/index.wgsl"

struct Params { rows: u32, c: u32 }
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

var<workgroup> acc: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = linear_group(wg, nwg);
    // NOTE: no early return: every lane must reach the barriers; a spare workgroup of a folded
    // grid loops over an empty row instead.
    let n = select(0u, p.c, r < p.rows);
    let base = r * p.c;

    // 1. row max
    var m = -3.4028235e38;
    for (var j = lid.x; j < n; j += WG) {
        m = max(m, x[base + j]);
    }
    acc[lid.x] = m;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid.x < s) { acc[lid.x] = max(acc[lid.x], acc[lid.x + s]); }
        workgroupBarrier();
    }
    m = acc[0];
    workgroupBarrier();

    // 2. e = exp(x − m) into y, and its sum
    var sum = 0.0;
    for (var j = lid.x; j < n; j += WG) {
        let e = exp(x[base + j] - m);
        y[base + j] = e;
        sum += e;
    }
    acc[lid.x] = sum;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid.x < s) { acc[lid.x] += acc[lid.x + s]; }
        workgroupBarrier();
    }
    let inv = 1.0 / acc[0];

    // 3. normalise (each lane rescales the elements it wrote itself: no barrier needed)
    for (var j = lid.x; j < n; j += WG) {
        y[base + j] *= inv;
    }
}
