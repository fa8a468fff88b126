// matmul_forward_v4_broadcast — Y[z] = A[z] · B[z] over K range [k0, k1), a 32×32 tile of Y per
// subgroup of 8 lanes, both operands loaded once per tile and shared with subgroupBroadcast.
// v4: lane l loads rows 4l..4l+3 of the A tile and cols 4l..4l+3 of the B tile (4 + 4 loads per
//     k), then takes every lane's B values by broadcast, so each lane updates its 4 rows × all 32
//     cols: 128 FMAs per 8 loads (v3: 64 per 9). llvmpipe turns every storage load into a
//     per-lane scalar loop, while a broadcast from a constant lane is one extract + splat and the
//     128 accumulators are plain registers or stack: loads set the speed (engine-notes.md), and
//     the square tile halves them per FMA (2.2× v3 in CPU time on lavapipe at 1024³).
// NOTE: written out by hand on purpose: 32 named accumulators and a k block of 4 unrolled in
//     the source. The same code with private arrays indexed in loops ran no faster than v3
//     (Mesa kept the arrays in memory); a k block of 8 was slower than 4 (more live values).
// Needs the SUBGROUP feature and subgroups of at least 8 lanes (as v3; matmul.rs checks).
// Reference: engine/src/ops/matmul.rs::reference.  Backward: the same kernels, flags flipped.
// Dims: Z output matrices (batch), M rows, N cols, K inner.
// Layout: as v1: A(m, k) = a[oa + m·a_sm + k·a_sk], B(k, n) = b[ob + k·b_sk + n·b_sn] (any
//         strides: transposed operands are read in place); y contiguous f32[Z, M, N];
//         accumulate = 1 adds to y.
// Dispatch: gpu::grid_rows(Z · tiles_m · tiles_n), tiles of 32×32, workgroup size 8; the tile
//     index runs along M first, so consecutive workgroups share one 32-col strip of B in cache.
// Loops: the k loop runs (k1 − k0) / 4 ≤ K_CHUNK / 4 trips (#bounded-loops: no wgpu loop guard).
// #bounded-loops
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

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
    let g = linear_group(wg, nwg);
    let tiles = p.tiles_m * p.tiles_n;
    if (g >= tiles * p.batch) { return; }
    let z = g / tiles;
    let t = g % tiles;
    let row0 = (t % p.tiles_m) * 32u;
    let col0 = (t / p.tiles_m) * 32u;
    let off = batch_offsets(z, p.nb, p.shape, p.a_bstride, p.b_bstride);
    let rl = min(vec4<u32>(row0 + 4u * lane) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.m - 1u));
    let ra = vec4<u32>(off.x) + rl * p.a_sm;
    let cl = min(vec4<u32>(col0 + 4u * lane) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.n - 1u));
    let cb = vec4<u32>(off.y) + cl * p.b_sn;
    let last = p.k1 - 1u;
    // acc{c}: rows 4·lane..+3 of tile col c (x: row 0). Edge rows and cols are clamped, not
    // skipped (every lane must take part in the broadcasts); the store drops them.
    var acc0 = vec4<f32>(0.0); var acc1 = vec4<f32>(0.0); var acc2 = vec4<f32>(0.0); var acc3 = vec4<f32>(0.0);
    var acc4 = vec4<f32>(0.0); var acc5 = vec4<f32>(0.0); var acc6 = vec4<f32>(0.0); var acc7 = vec4<f32>(0.0);
    var acc8 = vec4<f32>(0.0); var acc9 = vec4<f32>(0.0); var acc10 = vec4<f32>(0.0); var acc11 = vec4<f32>(0.0);
    var acc12 = vec4<f32>(0.0); var acc13 = vec4<f32>(0.0); var acc14 = vec4<f32>(0.0); var acc15 = vec4<f32>(0.0);
    var acc16 = vec4<f32>(0.0); var acc17 = vec4<f32>(0.0); var acc18 = vec4<f32>(0.0); var acc19 = vec4<f32>(0.0);
    var acc20 = vec4<f32>(0.0); var acc21 = vec4<f32>(0.0); var acc22 = vec4<f32>(0.0); var acc23 = vec4<f32>(0.0);
    var acc24 = vec4<f32>(0.0); var acc25 = vec4<f32>(0.0); var acc26 = vec4<f32>(0.0); var acc27 = vec4<f32>(0.0);
    var acc28 = vec4<f32>(0.0); var acc29 = vec4<f32>(0.0); var acc30 = vec4<f32>(0.0); var acc31 = vec4<f32>(0.0);
    for (var k0 = p.k0; k0 < p.k1; k0 += 4u) {
        // This lane's A rows and B cols at k0..k0+3 (k clamped; A past k1 is zero, so the
        // clamped B row adds nothing).
        let kc0 = min(k0 + 0u, last); let ka0 = kc0 * p.a_sk; let kb0 = kc0 * p.b_sk;
        let av0 = select(vec4<f32>(0.0), vec4<f32>(a[ra.x + ka0], a[ra.y + ka0], a[ra.z + ka0], a[ra.w + ka0]), k0 + 0u < p.k1);
        let bv0 = vec4<f32>(b[cb.x + kb0], b[cb.y + kb0], b[cb.z + kb0], b[cb.w + kb0]);
        let kc1 = min(k0 + 1u, last); let ka1 = kc1 * p.a_sk; let kb1 = kc1 * p.b_sk;
        let av1 = select(vec4<f32>(0.0), vec4<f32>(a[ra.x + ka1], a[ra.y + ka1], a[ra.z + ka1], a[ra.w + ka1]), k0 + 1u < p.k1);
        let bv1 = vec4<f32>(b[cb.x + kb1], b[cb.y + kb1], b[cb.z + kb1], b[cb.w + kb1]);
        let kc2 = min(k0 + 2u, last); let ka2 = kc2 * p.a_sk; let kb2 = kc2 * p.b_sk;
        let av2 = select(vec4<f32>(0.0), vec4<f32>(a[ra.x + ka2], a[ra.y + ka2], a[ra.z + ka2], a[ra.w + ka2]), k0 + 2u < p.k1);
        let bv2 = vec4<f32>(b[cb.x + kb2], b[cb.y + kb2], b[cb.z + kb2], b[cb.w + kb2]);
        let kc3 = min(k0 + 3u, last); let ka3 = kc3 * p.a_sk; let kb3 = kc3 * p.b_sk;
        let av3 = select(vec4<f32>(0.0), vec4<f32>(a[ra.x + ka3], a[ra.y + ka3], a[ra.z + ka3], a[ra.w + ka3]), k0 + 3u < p.k1);
        let bv3 = vec4<f32>(b[cb.x + kb3], b[cb.y + kb3], b[cb.z + kb3], b[cb.w + kb3]);
        // Lane s's 4 B cols (tile cols 4s..4s+3) at each k, times this lane's A rows.
        { let w = subgroupBroadcast(bv0, 0u); acc0 += av0 * w.x; acc1 += av0 * w.y; acc2 += av0 * w.z; acc3 += av0 * w.w; }
        { let w = subgroupBroadcast(bv1, 0u); acc0 += av1 * w.x; acc1 += av1 * w.y; acc2 += av1 * w.z; acc3 += av1 * w.w; }
        { let w = subgroupBroadcast(bv2, 0u); acc0 += av2 * w.x; acc1 += av2 * w.y; acc2 += av2 * w.z; acc3 += av2 * w.w; }
        { let w = subgroupBroadcast(bv3, 0u); acc0 += av3 * w.x; acc1 += av3 * w.y; acc2 += av3 * w.z; acc3 += av3 * w.w; }
        { let w = subgroupBroadcast(bv0, 1u); acc4 += av0 * w.x; acc5 += av0 * w.y; acc6 += av0 * w.z; acc7 += av0 * w.w; }
        { let w = subgroupBroadcast(bv1, 1u); acc4 += av1 * w.x; acc5 += av1 * w.y; acc6 += av1 * w.z; acc7 += av1 * w.w; }
        { let w = subgroupBroadcast(bv2, 1u); acc4 += av2 * w.x; acc5 += av2 * w.y; acc6 += av2 * w.z; acc7 += av2 * w.w; }
        { let w = subgroupBroadcast(bv3, 1u); acc4 += av3 * w.x; acc5 += av3 * w.y; acc6 += av3 * w.z; acc7 += av3 * w.w; }
        { let w = subgroupBroadcast(bv0, 2u); acc8 += av0 * w.x; acc9 += av0 * w.y; acc10 += av0 * w.z; acc11 += av0 * w.w; }
        { let w = subgroupBroadcast(bv1, 2u); acc8 += av1 * w.x; acc9 += av1 * w.y; acc10 += av1 * w.z; acc11 += av1 * w.w; }
        { let w = subgroupBroadcast(bv2, 2u); acc8 += av2 * w.x; acc9 += av2 * w.y; acc10 += av2 * w.z; acc11 += av2 * w.w; }
        { let w = subgroupBroadcast(bv3, 2u); acc8 += av3 * w.x; acc9 += av3 * w.y; acc10 += av3 * w.z; acc11 += av3 * w.w; }
        { let w = subgroupBroadcast(bv0, 3u); acc12 += av0 * w.x; acc13 += av0 * w.y; acc14 += av0 * w.z; acc15 += av0 * w.w; }
        { let w = subgroupBroadcast(bv1, 3u); acc12 += av1 * w.x; acc13 += av1 * w.y; acc14 += av1 * w.z; acc15 += av1 * w.w; }
        { let w = subgroupBroadcast(bv2, 3u); acc12 += av2 * w.x; acc13 += av2 * w.y; acc14 += av2 * w.z; acc15 += av2 * w.w; }
        { let w = subgroupBroadcast(bv3, 3u); acc12 += av3 * w.x; acc13 += av3 * w.y; acc14 += av3 * w.z; acc15 += av3 * w.w; }
        { let w = subgroupBroadcast(bv0, 4u); acc16 += av0 * w.x; acc17 += av0 * w.y; acc18 += av0 * w.z; acc19 += av0 * w.w; }
        { let w = subgroupBroadcast(bv1, 4u); acc16 += av1 * w.x; acc17 += av1 * w.y; acc18 += av1 * w.z; acc19 += av1 * w.w; }
        { let w = subgroupBroadcast(bv2, 4u); acc16 += av2 * w.x; acc17 += av2 * w.y; acc18 += av2 * w.z; acc19 += av2 * w.w; }
        { let w = subgroupBroadcast(bv3, 4u); acc16 += av3 * w.x; acc17 += av3 * w.y; acc18 += av3 * w.z; acc19 += av3 * w.w; }
        { let w = subgroupBroadcast(bv0, 5u); acc20 += av0 * w.x; acc21 += av0 * w.y; acc22 += av0 * w.z; acc23 += av0 * w.w; }
        { let w = subgroupBroadcast(bv1, 5u); acc20 += av1 * w.x; acc21 += av1 * w.y; acc22 += av1 * w.z; acc23 += av1 * w.w; }
        { let w = subgroupBroadcast(bv2, 5u); acc20 += av2 * w.x; acc21 += av2 * w.y; acc22 += av2 * w.z; acc23 += av2 * w.w; }
        { let w = subgroupBroadcast(bv3, 5u); acc20 += av3 * w.x; acc21 += av3 * w.y; acc22 += av3 * w.z; acc23 += av3 * w.w; }
        { let w = subgroupBroadcast(bv0, 6u); acc24 += av0 * w.x; acc25 += av0 * w.y; acc26 += av0 * w.z; acc27 += av0 * w.w; }
        { let w = subgroupBroadcast(bv1, 6u); acc24 += av1 * w.x; acc25 += av1 * w.y; acc26 += av1 * w.z; acc27 += av1 * w.w; }
        { let w = subgroupBroadcast(bv2, 6u); acc24 += av2 * w.x; acc25 += av2 * w.y; acc26 += av2 * w.z; acc27 += av2 * w.w; }
        { let w = subgroupBroadcast(bv3, 6u); acc24 += av3 * w.x; acc25 += av3 * w.y; acc26 += av3 * w.z; acc27 += av3 * w.w; }
        { let w = subgroupBroadcast(bv0, 7u); acc28 += av0 * w.x; acc29 += av0 * w.y; acc30 += av0 * w.z; acc31 += av0 * w.w; }
        { let w = subgroupBroadcast(bv1, 7u); acc28 += av1 * w.x; acc29 += av1 * w.y; acc30 += av1 * w.z; acc31 += av1 * w.w; }
        { let w = subgroupBroadcast(bv2, 7u); acc28 += av2 * w.x; acc29 += av2 * w.y; acc30 += av2 * w.z; acc31 += av2 * w.w; }
        { let w = subgroupBroadcast(bv3, 7u); acc28 += av3 * w.x; acc29 += av3 * w.y; acc30 += av3 * w.z; acc31 += av3 * w.w; }
    }
    let base = z * p.m * p.n;
    let acc = array<vec4<f32>, 32>(
        acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7, acc8, acc9, acc10, acc11, acc12, acc13, acc14, acc15, acc16, acc17, acc18, acc19, acc20, acc21, acc22, acc23, acc24, acc25, acc26, acc27, acc28, acc29, acc30, acc31);
    for (var c = 0u; c < 32u; c++) {
        let col = col0 + c;
        for (var i = 0u; i < 4u; i++) {
            let r = row0 + 4u * lane + i;
            if (r < p.m && col < p.n) {
                let o = base + r * p.n + col;
                var v = acc[c][i];
                if (p.accumulate != 0u) { v += y[o]; }
                y[o] = v;
            }
        }
    }
}

