// binary_backward — the gradient of one side at y's (broadcast) shape:
//   SIDE 0: g = dy · ∂(a∘b)/∂a,   SIDE 1: g = dy · ∂(a∘b)/∂b
// The caller sums g down to the input's shape over broadcast dims (reduce.rs::sum_to).
// Reference: engine/src/ops/binary.rs::reference_backward.
// Layout: as binary_forward; dy, g contiguous f32[N].  Dispatch: gpu::grid(N, WG).
// #include "lib/index.wgsl"

struct Params {
    n: u32,
    rank: u32,
    shape: array<vec4<u32>, 2>,
    a_stride: array<vec4<u32>, 2>,
    b_stride: array<vec4<u32>, 2>,
}
override WG: u32 = 256u;
// RANK = p.rank, fixed per pipeline: the index loop unrolls and dim8 indexes by constants
// (a runtime-trip loop over dynamically indexed uniforms is several times slower on llvmpipe).
override RANK: u32 = 8u;
override OP: u32 = 0u;
override SIDE: u32 = 0u;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> g: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

// ∂(u∘v)/∂u and ∂(u∘v)/∂v. max/min send the gradient to the first argument on ties (PyTorch
// splits ties evenly; ties between independent floats are measure-zero in training).
fn partial(u: f32, v: f32) -> f32 {
    let first = SIDE == 0u;
    switch OP {
        case 0u: { return 1.0; }
        case 1u: { return select(-1.0, 1.0, first); }
        case 2u: { return select(u, v, first); }
        case 3u: { return select(-u / (v * v), 1.0 / v, first); }
        case 4u: { return select(select(1.0, 0.0, u >= v), select(0.0, 1.0, u >= v), first); }
        default: { return select(select(1.0, 0.0, u <= v), select(0.0, 1.0, u <= v), first); }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.n) { return; }
    var rem = i;
    var ia = 0u;
    var ib = 0u;
    for (var d = i32(RANK) - 1; d >= 0; d--) {
        let size = dim8(p.shape, u32(d));
        let c = rem % size;
        rem = rem / size;
        ia += c * dim8(p.a_stride, u32(d));
        ib += c * dim8(p.b_stride, u32(d));
    }
    g[i] = dy[i] * partial(a[ia], b[ib]);
}
