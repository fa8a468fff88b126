// concat_forward — copies one input into its slab of the concatenation along an axis:
//   y[o, offset + l, i] = x[o, l, i]   for l < L (one dispatch per input).
// Reference: engine/src/ops/concat.rs::reference.  Backward: narrow_forward.wgsl (dy's slabs).
// Layout: x contiguous (O, L, I): O = product of the dims before the axis, L = this input's size
//         along it, I = product of the dims after it; y contiguous (O, S, I), S = Σ L over the
//         inputs. N = O·L·I.
// Dispatch: gpu::grid(N, WG), one invocation per element of x.
// #include "lib/index.wgsl"

struct Params {
    n: u32,       // N = O·L·I
    inner: u32,   // I
    len: u32,     // L
    total: u32,   // S
    offset: u32,  // where this input starts along the axis of y
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
    let slab = p.len * p.inner;          // one outer index's worth of x
    let o = i / slab;
    let r = i % slab;
    y[o * p.total * p.inner + p.offset * p.inner + r] = x[i];
}
