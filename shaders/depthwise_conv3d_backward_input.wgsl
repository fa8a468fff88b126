// depthwise_conv3d_backward_input — dx[n,c,q] = Σ_{a,i,j} w[c,a,i,j] · dy[n,c,o]
// over the taps (a,i,j) whose output o = (q + pad − (a,i,j)) / s is whole and inside dy.
// v2: one workgroup per input row (n·c, tq, hq) and tile of WG elements along W, lanes are the
//     wq: the row's divisions (and the T/H tap tests, divisions by the stride included) are
//     uniform, once per workgroup; per lane only the W tap test, which divides only when the
//     W stride is > 1 (llvmpipe scalarises per-lane integer division; v1 divided per tap).
// Reference: engine/src/ops/depthwise_conv3d.rs::reference_backward.
// Layout: dy f32[B, C, TO, HO, WO]; w f32[C, 1, KT, KH, KW]; dx f32[B, C, T, H, W].
// Dispatch: gpu::grid_rows(ROWS · TILES), ROWS = p.n = B·C·T·H, TILES = ceil(W / WG); a gather:
//           no two invocations write the same element, so no atomics; ≤ KT·KH·KW loop trips.
// #include "lib/index.wgsl"

struct Params {
    bc: u32, t: u32, h: u32, w: u32,
    to: u32, ho: u32, wo: u32, c: u32,
    kt: u32, kh: u32, kw: u32, n: u32,
    st: u32, sh: u32, sw: u32, chunk: u32,
    pt: u32, ph: u32, pw: u32, n_chunks: u32,
    tiles: u32, _p0: u32, _p1: u32, _p2: u32,
}
override WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

// The output coordinate that reads input q through tap k, or -1 when there is none.
fn out_coord(q: u32, k: u32, pad: u32, s: u32, n_out: u32) -> i32 {
    let num = i32(q + pad) - i32(k);
    if (num < 0 || u32(num) % s != 0u) { return -1; }
    let o = u32(num) / s;
    return select(-1, i32(o), o < n_out);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = linear_group(wg, nwg);
    let row = g / p.tiles;                 // uniform: row = (nc·T + tq)·H + hq
    if (row >= p.n) { return; }
    let wq = (g - row * p.tiles) * WG + lid.x;
    if (wq >= p.w) { return; }
    let hq = row % p.h;
    let r = row / p.h;
    let tq = r % p.t;
    let nc = r / p.t;
    let c = nc % p.c;
    let y0 = nc * p.to * p.ho * p.wo;
    var acc = 0.0;
    for (var a = 0u; a < p.kt; a++) {
        let to = out_coord(tq, a, p.pt, p.st, p.to);   // uniform
        if (to < 0) { continue; }
        for (var bi = 0u; bi < p.kh; bi++) {
            let ho = out_coord(hq, bi, p.ph, p.sh, p.ho);
            if (ho < 0) { continue; }
            let yrow = y0 + (u32(to) * p.ho + u32(ho)) * p.wo;
            let wrow = ((c * p.kt + a) * p.kh + bi) * p.kw;
            for (var e = 0u; e < p.kw; e++) {
                var wo = i32(wq + p.pw) - i32(e);
                if (p.sw == 1u) {
                    if (wo < 0 || wo >= i32(p.wo)) { continue; }
                } else {
                    wo = out_coord(wq, e, p.pw, p.sw, p.wo);
                    if (wo < 0) { continue; }
                }
                acc += dy[yrow + u32(wo)] * w[wrow + e];
            }
        }
    }
    dx[row * p.w + wq] = acc;
}
