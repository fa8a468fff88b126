// permute_forward — y = x with its dims reordered: y[i_0, …, i_{R−1}] = x[Σ_d i_d · stride[d]],
//   where stride[d] is x's element stride along the input dim that becomes y's dim d.
// Reference: engine/src/ops/permute.rs::reference.  Backward: this kernel, inverse permutation.
// Layout: y contiguous f32[N] of rank R ≤ 8 (after merging dims that stay adjacent and dropping
//         size-1 dims, see permute.rs::plan); x contiguous, read through the permuted strides.
// Dispatch: gpu::grid(N, WG), one invocation per output element (writes coalesced, reads strided).
// #include "lib/index.wgsl"

struct Params {
    n: u32,
    rank: u32,
    shape: array<vec4<u32>, 2>,     // y's dims
    stride: array<vec4<u32>, 2>,    // x's element stride along each of y's dims
}
override WG: u32 = 256u;
// RANK = p.rank, fixed per pipeline: the index loop unrolls and dim8 indexes by constants
// (a runtime-trip loop over dynamically indexed uniforms is several times slower on llvmpipe).
override RANK: u32 = 8u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.n) { return; }
    var rem = i;
    var src = 0u;
    for (var d = i32(RANK) - 1; d >= 0; d--) {
        let size = dim8(p.shape, u32(d));
        src += (rem % size) * dim8(p.stride, u32(d));
        rem = rem / size;
    }
    y[i] = x[src];
}
