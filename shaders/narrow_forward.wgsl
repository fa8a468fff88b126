// narrow_forward — y = x[..., start : start + L, ...] along one axis (PyTorch narrow).
// Reference: engine/src/ops/narrow.rs::reference.  Backward: narrow_backward.wgsl
// Layout: x contiguous, viewed as (O, A, I): O = product of the dims before the axis, A = the
//         axis (size p.full), I = product of the dims after it. y contiguous (O, L, I), N = O·L·I.
//         Also the backward of concat (each input's slab of dy).
// Dispatch: gpu::grid(N, WG), one invocation per output element.
// #include "lib/index.wgsl"

struct Params {
    n: u32,       // N = O·L·I
    inner: u32,   // I
    len: u32,     // L
    full: u32,    // A
    start: u32,
}
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.n) { return; }
    let slab = p.len * p.inner;          // one outer index's worth of y
    let o = i / slab;
    let r = i % slab;                    // (l, inner) within the slab
    y[i] = x[o * p.full * p.inner + p.start * p.inner + r];
}
