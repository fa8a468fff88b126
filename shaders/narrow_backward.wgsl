// narrow_backward — dx = dy inside the narrowed range, 0 elsewhere:
//   dx[o, a, i] = dy[o, a − start, i] if start ≤ a < start + L, else 0.
// Writes every element of dx, so no separate zero fill is needed.
// Reference: engine/src/ops/narrow.rs::reference_backward.
// Layout: dy contiguous (O, L, I); dx contiguous (O, A, I), N = O·A·I (see narrow_forward).
// Dispatch: gpu::grid(N, WG), one invocation per element of dx.
// #include "lib/index.wgsl"

struct Params {
    n: u32,       // N = O·A·I
    inner: u32,   // I
    len: u32,     // L
    full: u32,    // A
    start: u32,
}
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.n) { return; }
    let o = i / (p.full * p.inner);
    let a = (i / p.inner) % p.full;
    let r = i % p.inner;
    // NOTE: `a - p.start` wraps for a < start; the select keeps that index from being read.
    let inside = a >= p.start && a < p.start + p.len;
    let j = select(0u, (o * p.len + (a - p.start)) * p.inner + r, inside);
    dx[i] = select(0.0, dy[j], inside);
}
