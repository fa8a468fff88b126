// gather_backward — scatter-add as a gather over precomputed lists, no float atomics:
//   dx[r, c] = Σ_{k ∈ [offsets[r], offsets[r+1])} dy[pos[k], c]
// Pass 1: r = a segment (≤ CHUNK positions of one table row), pos = the gathered positions sorted
//         by row. When no row was split, segments are rows and this writes dx (V, D) directly.
// Pass 2 (only when a row appears more than CHUNK times): r = a table row, dy = pass 1's partial
//         sums (S, D), pos = 0..S: each row adds up its segments' partials.
// Summation order is fixed by the lists, so the result is deterministic; rows that never appear
// have an empty range and get 0. Loops stay ≤ CHUNK trips (Mesa 22's llvmpipe stops at 65,535).
// Reference: engine/src/ops/gather.rs::reference_backward.
// Layout: dy contiguous (·, D); offsets u32[R + 1]; pos u32[·]; dx contiguous (R, D), N = R·D.
// Dispatch: gpu::grid(N, WG), one invocation per (r, c): neighbours read neighbouring columns.
// #include "lib/index.wgsl"

struct Params {
    n: u32,   // N = R·D
    d: u32,   // D
}
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> offsets: array<u32>;
@group(0) @binding(2) var<storage, read> pos: array<u32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.n) { return; }
    let r = i / p.d;
    let c = i % p.d;
    var acc = 0.0;
    for (var k = offsets[r]; k < offsets[r + 1u]; k++) {
        acc += dy[pos[k] * p.d + c];
    }
    dx[i] = acc;
}
