// depthwise_conv3d_forward — y[n,c,o] = b[c] + Σ_{a,i,j} w[c,a,i,j] · x[n,c, o·s − pad + (a,i,j)]
// (groups = C, one filter per channel; taps outside x read zero padding).
// v2: one workgroup per output row (n·c, to, ho) and tile of WG outputs along WO; lanes are the
//     wo. The row's indices come from the workgroup id, so the u32 divisions are done once per
//     workgroup (llvmpipe scalarises per-lane integer division: v1 spent more time in its 7
//     per-output div/mods than in the 27 taps), and the T and H bounds checks are uniform.
// Reference: engine/src/ops/depthwise_conv3d.rs::reference.
// Backward: depthwise_conv3d_backward_input.wgsl, depthwise_conv3d_backward_weight.wgsl.
// Layout: x f32[B, C, T, H, W]; w f32[C, 1, KT, KH, KW]; b f32[C] (w again when there is no
//         bias: the binding must exist, HAS_BIAS = 0 never reads it); y f32[B, C, TO, HO, WO].
// Dispatch: gpu::grid_rows(ROWS · TILES), ROWS = p.n = B·C·TO·HO, TILES = ceil(WO / WG);
//           ≤ KT·KH·KW loop trips per lane.
// #include "lib/index.wgsl"

struct Params {
    bc: u32, t: u32, h: u32, w: u32,      // B·C and the input's T, H, W
    to: u32, ho: u32, wo: u32, c: u32,    // output T, H, W and C
    kt: u32, kh: u32, kw: u32, n: u32,    // kernel; n = rows of this dispatch
    st: u32, sh: u32, sw: u32, chunk: u32,
    pt: u32, ph: u32, pw: u32, n_chunks: u32,
    tiles: u32, _p0: u32, _p1: u32, _p2: u32, // tiles of WG lanes along the row
}
override WG: u32 = 64u;
override HAS_BIAS: u32 = 0u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = linear_group(wg, nwg);
    let row = g / p.tiles;                 // uniform: row = (nc·TO + to)·HO + ho
    if (row >= p.n) { return; }
    let wo = (g - row * p.tiles) * WG + lid.x;
    if (wo >= p.wo) { return; }
    let ho = row % p.ho;
    let r = row / p.ho;
    let to = r % p.to;
    let nc = r / p.to;
    let c = nc % p.c;
    let x0 = nc * p.t * p.h * p.w;
    let t0 = i32(to * p.st) - i32(p.pt);
    let h0 = i32(ho * p.sh) - i32(p.ph);
    let w0 = i32(wo * p.sw) - i32(p.pw);
    var acc = 0.0;
    for (var a = 0u; a < p.kt; a++) {
        let ti = t0 + i32(a);
        if (ti < 0 || ti >= i32(p.t)) { continue; }
        for (var bi = 0u; bi < p.kh; bi++) {
            let hi = h0 + i32(bi);
            if (hi < 0 || hi >= i32(p.h)) { continue; }
            let xrow = x0 + (u32(ti) * p.h + u32(hi)) * p.w;
            let wrow = ((c * p.kt + a) * p.kh + bi) * p.kw;
            for (var e = 0u; e < p.kw; e++) {
                let wi = w0 + i32(e);
                if (wi < 0 || wi >= i32(p.w)) { continue; }
                acc += x[xrow + u32(wi)] * w[wrow + e];
            }
        }
    }
    if (HAS_BIAS == 1u) { acc += b[c]; }
    y[row * p.wo + wo] = acc;
}
