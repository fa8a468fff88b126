// matmul_forward_v3_subgroup — Y[z] = A[z] · B[z] over K range [k0, k1), 8×8 register blocks
// per lane, B loads shared across the 8 lanes of a subgroup with subgroupBroadcast.
// v3: a workgroup is one subgroup of 8 lanes and owns a 64×8 tile of Y: lane l computes rows
//     8l..8l+7 × all 8 cols. Per 8 steps of k, lane l loads row k0+l of the B tile (8 values)
//     and the lanes broadcast those rows to each other, so the whole B tile costs each lane
//     8 loads instead of 64; A is loaded per lane (64). 72 loads per 512 FMAs (v2: 512 per
//     512). llvmpipe turns every load into a per-lane loop, so loads set its speed
//     (engine-notes.md: 33 GFLOP/s at 512³ against 8 for shared-memory tiles).
// Needs the SUBGROUP feature and subgroups of at least 8 lanes: 8 invocations then form one
// subgroup, lanes 0..7 (matmul.rs checks this before choosing v3).
// Reference: engine/src/ops/matmul.rs::reference.  Backward: the same kernels, flags flipped.
// Dims: Z output matrices (batch), M rows, N cols, K inner.
// Layout: as v1: A(m, k) = a[oa + m·a_sm + k·a_sk], B(k, n) = b[ob + k·b_sk + n·b_sn];
//         y contiguous f32[Z, M, N]; accumulate = 1 adds to y.
// Dispatch: gpu::grid_rows(Z · tiles_m · tiles_n), tiles of 64×8, workgroup size 8.
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
override WG: u32 = 8u; // NOTE: must stay 8: the broadcasts below read lanes 0..7

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

// This lane's 8×8 block of Y: acc[2r] = cols 0..3 of row r, acc[2r + 1] = cols 4..7.
var<private> acc: array<vec4<f32>, 16>;
// Offsets in a of this lane's 8 rows (clamped to the last row at the edge).
var<private> ra: array<u32, 8>;

// Rank-1 update with column k of this lane's A rows and row k of the B tile (lo: cols 0..3).
// Constant indices only, so the accumulators stay in registers.
fn rank1(k: u32, lo: vec4<f32>, hi: vec4<f32>) {
    let ka = k * p.a_sk;
    let x = vec4<f32>(a[ra[0] + ka], a[ra[1] + ka], a[ra[2] + ka], a[ra[3] + ka]);
    let w = vec4<f32>(a[ra[4] + ka], a[ra[5] + ka], a[ra[6] + ka], a[ra[7] + ka]);
    acc[0] += x.x * lo;  acc[1] += x.x * hi;
    acc[2] += x.y * lo;  acc[3] += x.y * hi;
    acc[4] += x.z * lo;  acc[5] += x.z * hi;
    acc[6] += x.w * lo;  acc[7] += x.w * hi;
    acc[8] += w.x * lo;  acc[9] += w.x * hi;
    acc[10] += w.y * lo; acc[11] += w.y * hi;
    acc[12] += w.z * lo; acc[13] += w.z * hi;
    acc[14] += w.w * lo; acc[15] += w.w * hi;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
    let g = linear_group(wg, nwg);
    let tiles = p.tiles_m * p.tiles_n;
    if (g >= tiles * p.batch) { return; } // the whole workgroup leaves together
    let z = g / tiles;
    let row0 = ((g % tiles) / p.tiles_n) * 64u + lane * 8u;
    let col0 = (g % p.tiles_n) * 8u;
    let off = batch_offsets(z, p.nb, p.shape, p.a_bstride, p.b_bstride);
    for (var i = 0u; i < 8u; i++) {
        ra[i] = off.x + min(row0 + i, p.m - 1u) * p.a_sm;
        acc[2u * i] = vec4<f32>(0.0);
        acc[2u * i + 1u] = vec4<f32>(0.0);
    }
    let cb = off.y + min(vec4<u32>(col0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.n - 1u)) * p.b_sn;
    let ch = off.y + min(vec4<u32>(col0) + vec4<u32>(4u, 5u, 6u, 7u), vec4<u32>(p.n - 1u)) * p.b_sn;
    let last = p.k1 - 1u;
    // NOTE: at most K_CHUNK / 8 trips (llvmpipe silently ends loops at 65,535). Every lane runs
    // every trip (edge rows and cols are clamped, not skipped): the broadcasts need all 8.
    for (var kb = p.k0; kb < p.k1; kb += 8u) {
        // This lane's row of the B tile; rows past k1 are zero, so the clamped A loads of the
        // last block add nothing.
        let kl = kb + lane;
        let kr = min(kl, last) * p.b_sk;
        let keep = kl < p.k1;
        let lo = select(vec4<f32>(0.0), vec4<f32>(b[cb.x + kr], b[cb.y + kr], b[cb.z + kr], b[cb.w + kr]), keep);
        let hi = select(vec4<f32>(0.0), vec4<f32>(b[ch.x + kr], b[ch.y + kr], b[ch.z + kr], b[ch.w + kr]), keep);
        rank1(min(kb, last), subgroupBroadcast(lo, 0u), subgroupBroadcast(hi, 0u));
        rank1(min(kb + 1u, last), subgroupBroadcast(lo, 1u), subgroupBroadcast(hi, 1u));
        rank1(min(kb + 2u, last), subgroupBroadcast(lo, 2u), subgroupBroadcast(hi, 2u));
        rank1(min(kb + 3u, last), subgroupBroadcast(lo, 3u), subgroupBroadcast(hi, 3u));
        rank1(min(kb + 4u, last), subgroupBroadcast(lo, 4u), subgroupBroadcast(hi, 4u));
        rank1(min(kb + 5u, last), subgroupBroadcast(lo, 5u), subgroupBroadcast(hi, 5u));
        rank1(min(kb + 6u, last), subgroupBroadcast(lo, 6u), subgroupBroadcast(hi, 6u));
        rank1(min(kb + 7u, last), subgroupBroadcast(lo, 7u), subgroupBroadcast(hi, 7u));
    }
    let base = z * p.m * p.n;
    for (var i = 0u; i < 8u; i++) {
        let r = row0 + i;
        for (var j = 0u; j < 8u; j++) {
            let c = col0 + j;
            if (r < p.m && c < p.n) {
                let o = base + r * p.n + c;
                var v = acc[2u * i + j / 4u][j % 4u];
                if (p.accumulate != 0u) { v += y[o]; }
                y[o] = v;
            }
        }
    }
}
