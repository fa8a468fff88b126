// matmul_forward_v2_blocked — Y[z] = A[z] · B[z] over K range [k0, k1), register-blocked.
// v2: each invocation computes a 4×4 block of Y (4 A loads + 4 B loads per 16 FMAs, against
//     2 per FMA in v1); 8×8 invocations make a 32×32 tile per workgroup. No workgroup memory:
//     llvmpipe turns its loads into per-lane loops too (engine-notes.md), so it would not help.
// Reference: engine/src/ops/matmul.rs::reference.  Backward: the same kernels, flags flipped.
// Dims: Z output matrices (batch), M rows, N cols, K inner.
// Layout: as v1: A(m, k) = a[oa + m·a_sm + k·a_sk], B(k, n) = b[ob + k·b_sk + n·b_sn];
//         y contiguous f32[Z, M, N]; accumulate = 1 adds to y.
// Dispatch: gpu::grid_rows(Z · tiles_m · tiles_n), tiles of 32×32, workgroup size 64.
// #include "lib/index.wgsl"
// #include "lib/matmul.wgsl"

struct Params {
    m: u32, n: u32, k: u32, batch: u32,
    a_sm: u32, a_sk: u32, b_sk: u32, b_sn: u32,
    k0: u32, k1: u32, accumulate: u32, nb: u32,
    tiles_m: u32, tiles_n: u32, pad0: u32, pad1: u32,
    shape: array<vec4<u32>, 2>,
    a_bstride: array<vec4<u32>, 2>,
    b_bstride: array<vec4<u32>, 2>,
}
override WG: u32 = 64u; // NOTE: the 8×8 invocation layout below assumes 64

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = linear_group(wg, nwg);
    let tiles = p.tiles_m * p.tiles_n;
    if (g >= tiles * p.batch) { return; }
    let z = g / tiles;
    let row0 = ((g % tiles) / p.tiles_n) * 32u + (lid.x / 8u) * 4u;
    let col0 = (g % p.tiles_n) * 32u + (lid.x % 8u) * 4u;
    let off = batch_offsets(z, p.nb, p.shape, p.a_bstride, p.b_bstride);
    // Rows and cols past the edge are clamped (loads stay in bounds; their results are dropped).
    let ra = off.x + min(vec4<u32>(row0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.m - 1u)) * p.a_sm;
    let cb = off.y + min(vec4<u32>(col0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.n - 1u)) * p.b_sn;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    // NOTE: at most K_CHUNK trips: Mesa 22's llvmpipe silently ends loops at 65,535.
    for (var kk = p.k0; kk < p.k1; kk++) {
        let ka = kk * p.a_sk;
        let kb = kk * p.b_sk;
        let bv = vec4<f32>(b[cb.x + kb], b[cb.y + kb], b[cb.z + kb], b[cb.w + kb]); // B(k, col0..+4)
        acc0 += a[ra.x + ka] * bv;
        acc1 += a[ra.y + ka] * bv;
        acc2 += a[ra.z + ka] * bv;
        acc3 += a[ra.w + ka] * bv;
    }
    let acc = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    let base = z * p.m * p.n;
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            let r = row0 + i;
            let c = col0 + j;
            if (r < p.m && c < p.n) {
                let o = base + r * p.n + c;
                var v = acc[i][j];
                if (p.accumulate != 0u) { v += y[o]; }
                y[o] = v;
            }
        }
    }
}
