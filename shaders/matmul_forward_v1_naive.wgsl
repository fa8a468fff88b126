// matmul_forward_v1_naive — Y[z] = A[z] · B[z] over K range [k0, k1), one output per invocation.
// v1: the readable baseline; 2 loads per FMA (~1 GFLOP/s on lavapipe, engine-notes.md).
// Reference: engine/src/ops/matmul.rs::reference.  Backward: the same kernels, flags flipped.
// Dims: Z output matrices (batch), M rows, N cols, K inner.
// Layout: A(m, k) = a[oa + m·a_sm + k·a_sk], B(k, n) = b[ob + k·b_sk + n·b_sn]: transposes are
//         strides, never copies; (oa, ob) from lib/matmul.wgsl. y contiguous f32[Z, M, N].
//         accumulate = 1 adds to y (K split into chunks, see matmul.rs K_CHUNK).
// Dispatch: gpu::grid(Z·M·N, WG).
// #include "lib/index.wgsl"
// #include "lib/matmul.wgsl"

struct Params {
    m: u32, n: u32, k: u32, batch: u32,
    a_sm: u32, a_sk: u32, b_sk: u32, b_sn: u32,
    k0: u32, k1: u32, accumulate: u32, nb: u32,
    tiles_m: u32, tiles_n: u32, pad0: u32, pad1: u32,
    shape: array<vec4<u32>, 2>,     // output batch dims
    a_bstride: array<vec4<u32>, 2>, // element strides of a's matrices along them (0 = broadcast)
    b_bstride: array<vec4<u32>, 2>,
}
override WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    let mn = p.m * p.n;
    if (i >= mn * p.batch) { return; }
    let z = i / mn;
    let row = (i % mn) / p.n;
    let col = i % p.n;
    let off = batch_offsets(z, p.nb, p.shape, p.a_bstride, p.b_bstride);
    let ia = off.x + row * p.a_sm;
    let ib = off.y + col * p.b_sn;
    var acc = 0.0;
    // NOTE: at most K_CHUNK trips: Mesa 22's llvmpipe silently ends loops at 65,535.
    for (var kk = p.k0; kk < p.k1; kk++) {
        acc += a[ia + kk * p.a_sk] * b[ib + kk * p.b_sk];
    }
    if (p.accumulate != 0u) { acc += y[i]; }
    y[i] = acc;
}
