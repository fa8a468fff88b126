// cross_entropy_forward — per row r of logits x (N, C) with class labels[r]:
//   lse[r]  = m_r + log Σ_c exp(x[r, c] − m_r),   m_r = max_c x[r, c]   (saved for backward)
//   loss[r] = ((m_r − x[r, labels[r]]) + log Σ_c exp(x[r, c] − m_r)) / N
// The caller sums loss over N into the mean. Writing loss from (m − x_label) rather than
// (lse − x_label) avoids cancelling two large numbers when the logits are large.
// Reference: engine/src/ops/cross_entropy.rs::reference.  Backward: cross_entropy_backward.wgsl
// Layout: x contiguous f32[N, C]; labels u32[N] (< C, checked on the host); lse, loss f32[N].
// Dispatch: gpu::grid_rows(N), one workgroup of WG lanes (a power of two) per row; two passes of
// ceil(C / WG) trips per lane (softmax.rs::MAX_ROW keeps loops under lavapipe's limit).
// #include "lib/index.wgsl"

struct Params { rows: u32, c: u32, inv_n: f32 }
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read_write> lse: array<f32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

var<workgroup> acc: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = linear_group(wg, nwg);
    let valid = r < p.rows;
    let n = select(0u, p.c, valid);   // spare workgroups still reach the barriers
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

    // 2. Σ exp(x − m)
    var sum = 0.0;
    for (var j = lid.x; j < n; j += WG) {
        sum += exp(x[base + j] - m);
    }
    acc[lid.x] = sum;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid.x < s) { acc[lid.x] += acc[lid.x + s]; }
        workgroupBarrier();
    }
    if (valid && lid.x == 0u) {
        let log_s = log(acc[0]);
        lse[r] = m + log_s;
        loss[r] = ((m - x[base + labels[r]]) + log_s) * p.inv_n;
    }
}
