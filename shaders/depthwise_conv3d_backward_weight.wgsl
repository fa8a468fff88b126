// depthwise_conv3d_backward_weight — pass 1 of the weight gradient:
//   part[c, k, g] = Σ_{outputs o in chunk g} dy[n,c,o] · x[n,c, o·s − pad + k]
// The caller reduces the chunk axis (reduce::reduce_raw) into dw[c, k]: two deterministic passes,
// no float atomics, no host loop over channels.
// v3: all taps at once. A lane owns the same R × V output block as the forward (v3), loads its
//     dy block once into registers, walks the input rows the block reads (each row's values
//     loaded once) and adds every product into its AT·KH·KW per-tap register accumulators, so
//     each x value serves up to KT·KH·KW taps (v2 ran one workgroup per tap and reloaded x and dy
//     27 times). The workgroup then sums its lanes' accumulators through workgroup memory (lane k
//     sums tap k over the WG lanes, a fixed order) and writes one partial per tap. A chunk is
//     one workgroup: WG blocks of one (n, c). Loops have override trip counts and unroll
//     (`// #bounded-loops`, gpu.rs); AT < KT splits the t-taps over workgroups when
//     KT·KH·KW > 125 (the accumulator array).
// Reference: engine/src/ops/depthwise_conv3d.rs::reference_backward.
// Layout: x f32[B, C, T, H, W]; dy f32[B, C, TO, HO, WO]; part f32[C, KT·KH·KW, N_CHUNKS],
//         N_CHUNKS = B·GPC.
// Dispatch: gpu::grid_rows(p.n = B·C·AG·GPC), AG = ceil(KT / AT) tap groups, GPC workgroups per
//           (n, c) as in the forward (depthwise_conv3d.rs::tiles). Loop trip counts: products
//           of override constants and WG, far below Mesa 22's silent 65,535 cut.
// #include "lib/index.wgsl"
// #bounded-loops

struct Params {
    t: u32, h: u32, w: u32, c: u32,
    to: u32, ho: u32, wo: u32, gpc: u32,
    lw: u32, hb: u32, blocks: u32, n: u32,
    st: u32, pt: i32, ph: i32, pw: i32,
    ag: u32, n_chunks: u32, _p0: u32, _p1: u32, // tap groups; chunks per channel
}
override KT: u32 = 3u;
override KH: u32 = 3u;
override KW: u32 = 3u;
override SH: u32 = 1u;
override SW: u32 = 1u;
override V: u32 = 7u;
override R: u32 = 8u;
override WG: u32 = 64u;
override AT: u32 = 3u;     // t-taps per workgroup: AT·KH·KW ≤ 125

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> part: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> red: array<f32, AT * KH * KW * WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = linear_group(wg, nwg);
    let gvalid = g < p.n;                     // spare workgroups still reach the barrier
    let q = g / p.gpc;                        // uniform: q = nc·AG + ag
    let gi = g - q * p.gpc;
    let nc = q / p.ag;
    let ag = q - nc * p.ag;
    let c = nc % p.c;
    let blk = gi * WG + lid.x;
    let per_t = p.hb * p.lw;
    let to = blk / per_t;
    let rem = blk - to * per_t;
    let bh = rem / p.lw;
    let bw = rem - bh * p.lw;
    let ho0 = bh * R;
    let wo0 = bw * V;
    let a0 = ag * AT;
    let t0 = i32(to * p.st + a0) - p.pt;
    let h0 = i32(ho0 * SH) - p.ph;
    let w0 = i32(wo0 * SW) - p.pw;
    let xbase = i32(nc * p.t * p.h * p.w);
    let ntap = AT * KH * KW;
    var acc: array<f32, 125>;
    for (var k = 0u; k < ntap; k++) { acc[k] = 0.0; }
    if (gvalid && blk < p.blocks) {
        var dys: array<f32, 64>;
        let ybase = ((nc * p.to + to) * p.ho + ho0) * p.wo + wo0;
        for (var r = 0u; r < R; r++) {
            for (var v = 0u; v < V; v++) {
                let ok = ho0 + r < p.ho && wo0 + v < p.wo;
                dys[r * V + v] = select(0.0, dy[select(0u, ybase + r * p.wo + v, ok)], ok);
            }
        }
        var xs: array<f32, 64>;
        for (var a = 0u; a < AT; a++) {
            let ti = t0 + i32(a);
            let tok = ti >= 0 && ti < i32(p.t) && a0 + a < KT;
            let xplane = xbase + ti * i32(p.h * p.w);
            for (var ih = 0u; ih < (R - 1u) * SH + KH; ih++) {
                if (SH >= KH && ih % SH >= KH) { continue; }   // a row no output reads
                let hi = h0 + i32(ih);
                let rok = tok && hi >= 0 && hi < i32(p.h);
                let xrow = xplane + hi * i32(p.w);
                for (var j = 0u; j < (V - 1u) * SW + KW; j++) {
                    if (SW >= KW && j % SW >= KW) { continue; }
                    let wi = w0 + i32(j);
                    let ok = rok && wi >= 0 && wi < i32(p.w);
                    xs[j] = select(0.0, x[u32(select(0, xrow + wi, ok))], ok);
                }
                for (var r = 0u; r < R; r++) {
                    if (ih < r * SH || ih - r * SH >= KH) { continue; }
                    let i = ih - r * SH;
                    for (var e = 0u; e < KW; e++) {
                        var s = acc[(a * KH + i) * KW + e];
                        for (var v = 0u; v < V; v++) {
                            s += dys[r * V + v] * xs[v * SW + e];
                        }
                        acc[(a * KH + i) * KW + e] = s;
                    }
                }
            }
        }
    }
    for (var k = 0u; k < ntap; k++) { red[k * WG + lid.x] = acc[k]; }
    workgroupBarrier();
    let chunk = (nc / p.c) * p.gpc + gi;
    let taps = KT * KH * KW;
    for (var k = lid.x; k < ntap; k += WG) {
        var s = 0.0;
        for (var l = 0u; l < WG; l++) { s += red[k * WG + l]; }
        let tap = a0 * KH * KW + k;
        if (gvalid && tap < taps) {
            part[(c * taps + tap) * p.n_chunks + chunk] = s;
        }
    }
}
