// binary_forward — y = a ∘ b with NumPy broadcasting, ∘ ∈ {+, −, ×, ÷, max, min} chosen by OP;
//   OP 6 is y = b broadcast (expand.rs).
// Reference: engine/src/ops/binary.rs::reference.  Backward: binary_backward.wgsl (+ reduce to shape)
// Layout: y contiguous f32[N] of the broadcast shape (rank R ≤ 8); a and b are read through
//         strides aligned to y's dims, stride 0 on broadcast dims (no expanded copies).
// Dispatch: gpu::grid(N, WG).
// #include "lib/index.wgsl"

struct Params {
    n: u32,
    rank: u32,
    shape: array<vec4<u32>, 2>,     // y's dims
    a_stride: array<vec4<u32>, 2>,  // element strides of a along y's dims (0 = broadcast)
    b_stride: array<vec4<u32>, 2>,
}
override WG: u32 = 256u;
// RANK = p.rank, fixed per pipeline: the index loop unrolls and dim8 indexes by constants
// (a runtime-trip loop over dynamically indexed uniforms is several times slower on llvmpipe).
override RANK: u32 = 8u;
override OP: u32 = 0u;   // ops/binary.rs::Binary::code

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

fn f(u: f32, v: f32) -> f32 {
    switch OP {
        case 0u: { return u + v; }
        case 1u: { return u - v; }
        case 2u: { return u * v; }
        case 3u: { return u / v; }
        case 4u: { return max(u, v); }
        case 5u: { return min(u, v); }
        // 6: broadcast b alone (expand.rs binds a = b; the load of a keeps its binding alive)
        default: { return v; }
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
    y[i] = f(a[ia], b[ib]);
}
