// depthwise_conv3d_backward_weight — pass 1 of the weight gradient:
//   part[c, k, g] = Σ_{rows (n, to, ho) in chunk g} Σ_wo dy[n,c,to,ho,wo] · x[n,c, (to,ho,wo)·s − pad + k]
// The caller reduces the chunk axis (reduce::reduce_raw) into dw[c, k]: two deterministic passes,
// no float atomics, no host loop over channels.
// v2: lanes run along WO and the loop walks the chunk's output rows with incremented (n, to, ho)
//     counters, so the inner loop has no integer division (v1 decoded every position with 7
//     per-lane div/mods, which llvmpipe scalarises) and its T/H padding tests are uniform.
// Reference: engine/src/ops/depthwise_conv3d.rs::reference_backward.
// Layout: x f32[B, C, T, H, W]; dy f32[B, C, TO, HO, WO]; part f32[C, KT·KH·KW, N_CHUNKS].
// Dispatch: gpu::grid_rows(p.n = C · KT·KH·KW · N_CHUNKS), one workgroup per (c, k, chunk).
// NOTE: a chunk is p.chunk rows of ceil(WO / WG) trips each, at most 4,096 trips a lane
//       (depthwise_conv3d.rs::weight_chunk): Mesa 22's llvmpipe silently stops a loop after
//       65,535 trips, and B·TO·HO·WO easily exceeds that.
// #include "lib/index.wgsl"

struct Params {
    bc: u32, t: u32, h: u32, w: u32,
    to: u32, ho: u32, wo: u32, c: u32,
    kt: u32, kh: u32, kw: u32, n: u32,    // n = C · KT·KH·KW · N_CHUNKS workgroups
    st: u32, sh: u32, sw: u32, chunk: u32, // chunk = output rows per workgroup
    pt: u32, ph: u32, pw: u32, n_chunks: u32,
    tiles: u32, _p0: u32, _p1: u32, _p2: u32,
}
override WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> part: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> acc: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = linear_group(wg, nwg);
    let valid = g < p.n;
    let chunk = g % p.n_chunks;
    let ck = g / p.n_chunks;
    let taps = p.kt * p.kh * p.kw;
    let k = ck % taps;
    let c = ck / taps;
    let e = k % p.kw;
    let bi = (k / p.kw) % p.kh;
    let a = k / (p.kw * p.kh);
    let rows = (p.bc / p.c) * p.to * p.ho;
    let r0 = chunk * p.chunk;
    let r1 = select(r0, min(r0 + p.chunk, rows), valid); // spare workgroups reach the barriers
    // (n, to, ho) of row r0, then incremented row by row
    var ho = r0 % p.ho;
    var to = (r0 / p.ho) % p.to;
    var n = r0 / (p.ho * p.to);
    var v = 0.0;
    for (var r = r0; r < r1; r++) {
        let ti = i32(to * p.st + a) - i32(p.pt);
        let hi = i32(ho * p.sh + bi) - i32(p.ph);
        if (ti >= 0 && ti < i32(p.t) && hi >= 0 && hi < i32(p.h)) {
            let nc = n * p.c + c;
            let xrow = ((nc * p.t + u32(ti)) * p.h + u32(hi)) * p.w;
            let yrow = ((nc * p.to + to) * p.ho + ho) * p.wo;
            for (var wo = lid.x; wo < p.wo; wo += WG) {
                let wi = i32(wo * p.sw + e) - i32(p.pw);
                if (wi >= 0 && wi < i32(p.w)) {
                    v += dy[yrow + wo] * x[xrow + u32(wi)];
                }
            }
        }
        ho += 1u;
        if (ho == p.ho) {
            ho = 0u;
            to += 1u;
            if (to == p.to) {
                to = 0u;
                n += 1u;
            }
        }
    }
    acc[lid.x] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid.x < s) { acc[lid.x] += acc[lid.x + s]; }
        workgroupBarrier();
    }
    if (valid && lid.x == 0u) { part[g] = acc[0]; }
}
