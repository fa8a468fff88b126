// depthwise_conv3d_forward — y[n,c,o] = b[c] + Σ_{a,i,j} w[c,a,i,j] · x[n,c, o·s − pad + (a,i,j)]
// (groups = C, one filter per channel; taps outside x read zero padding). With FLIP = 1 the
// kernel is read reversed, which makes the same pass the stride-1 input gradient:
// dx = dy ⊛ flip(w) with padding K − 1 − pad (depthwise_conv3d.rs::backward).
// v3: register blocks. A lane owns R output rows × V output columns of one (n, c, to) and walks
//     the KT·((R−1)·SH + KH) input rows they read, loading each row's (V−1)·SW + KW values once
//     and adding them into every output of the block that uses them (a sliding window in H and
//     W): 4.8 loads per output at k3, R8, V7, where v2 loaded all 27 taps per output (llvmpipe
//     runs every per-lane load as a scalar loop, so loads set the speed). Kernel size, strides and
//     block are override constants, so every loop has a constant trip count, unrolls, and the
//     blocks stay in registers; `// #bounded-loops` lets Mesa see those trip counts (gpu.rs).
//     The block index is decoded once per lane; padding is a select on the load, no branches.
//     A workgroup is WG consecutive blocks of one (n, c): each t-tap's KH·KW weights are uniform
//     loads into registers (read per product, the flipped indices cost the FLIP pass 2.4×).
// Reference: engine/src/ops/depthwise_conv3d.rs::reference.
// Backward: this kernel (FLIP = 1, stride 1), depthwise_conv3d_backward_input.wgsl (strided),
//           depthwise_conv3d_backward_weight.wgsl.
// Layout: x f32[B, C, T, H, W]; w f32[C, 1, KT, KH, KW]; b f32[C] (w again when there is no
//         bias: the binding must exist, HAS_BIAS = 0 never reads it); y f32[B, C, TO, HO, WO].
// Dispatch: gpu::grid_rows(p.n = B·C·GPC), GPC = ceil(TO·HB·LW / WG) workgroups per (n, c),
//           HB = ceil(HO / R), LW = ceil(WO / V) (depthwise_conv3d.rs::tiles); every loop's trip
//           count is a product of override constants (≤ a few hundred).
// #include "lib/index.wgsl"
// #bounded-loops

struct Params {
    t: u32, h: u32, w: u32, c: u32,         // the input's T, H, W and C
    to: u32, ho: u32, wo: u32, gpc: u32,    // output T, H, W; workgroups per (n, c)
    lw: u32, hb: u32, blocks: u32, n: u32,  // blocks along WO and HO, per (n, c); workgroups
    st: u32, pt: i32, ph: i32, pw: i32,     // T stride; padding (negative: cropping)
    ag: u32, n_chunks: u32, _p0: u32, _p1: u32,
}
override KT: u32 = 3u;
override KH: u32 = 3u;
override KW: u32 = 3u;
override SH: u32 = 1u;
override SW: u32 = 1u;
override V: u32 = 7u;      // output columns per lane, (V − 1)·SW + KW ≤ 64
override R: u32 = 8u;      // output rows per lane, R·V ≤ 64
override WG: u32 = 64u;
override HAS_BIAS: u32 = 0u;
override FLIP: u32 = 0u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = linear_group(wg, nwg);
    if (g >= p.n) { return; }
    let nc = g / p.gpc;                       // uniform
    let blk = (g - nc * p.gpc) * WG + lid.x;  // this lane's block in the (n, c) volume
    if (blk >= p.blocks) { return; }
    let c = nc % p.c;
    let per_t = p.hb * p.lw;
    let to = blk / per_t;
    let rem = blk - to * per_t;
    let bh = rem / p.lw;
    let bw = rem - bh * p.lw;
    let ho0 = bh * R;
    let wo0 = bw * V;
    let t0 = i32(to * p.st) - p.pt;
    let h0 = i32(ho0 * SH) - p.ph;
    let w0 = i32(wo0 * SW) - p.pw;
    let xbase = i32(nc * p.t * p.h * p.w);
    let taps = KT * KH * KW;
    let wbase = c * taps;
    var acc: array<f32, 64>;
    for (var k = 0u; k < R * V; k++) { acc[k] = 0.0; }
    var xs: array<f32, 64>;
    var wr: array<f32, 125>;
    for (var a = 0u; a < KT; a++) {
        // the KH·KW weights of this t-tap, in registers (uniform loads)
        for (var k = 0u; k < KH * KW; k++) {
            let kk = a * KH * KW + k;
            wr[k] = w[wbase + select(kk, taps - 1u - kk, FLIP == 1u)];
        }
        let ti = t0 + i32(a);
        let tok = ti >= 0 && ti < i32(p.t);
        let xplane = xbase + ti * i32(p.h * p.w);
        for (var ih = 0u; ih < (R - 1u) * SH + KH; ih++) {
            if (SH >= KH && ih % SH >= KH) { continue; }   // a row no output reads
            let hi = h0 + i32(ih);
            let rok = tok && hi >= 0 && hi < i32(p.h);
            let xrow = xplane + hi * i32(p.w);
            for (var j = 0u; j < (V - 1u) * SW + KW; j++) {
                if (SW >= KW && j % SW >= KW) { continue; }   // a column no output reads
                let wi = w0 + i32(j);
                let ok = rok && wi >= 0 && wi < i32(p.w);
                xs[j] = select(0.0, x[u32(select(0, xrow + wi, ok))], ok);
            }
            for (var r = 0u; r < R; r++) {
                if (ih < r * SH || ih - r * SH >= KH) { continue; }
                let i = ih - r * SH;
                for (var e = 0u; e < KW; e++) {
                    let wv = wr[i * KW + e];
                    for (var v = 0u; v < V; v++) {
                        acc[r * V + v] += wv * xs[v * SW + e];
                    }
                }
            }
        }
    }
    var bias = 0.0;
    if (HAS_BIAS == 1u) { bias = b[c]; }
    let ybase = ((nc * p.to + to) * p.ho + ho0) * p.wo + wo0;
    for (var r = 0u; r < R; r++) {
        for (var v = 0u; v < V; v++) {
            if (ho0 + r < p.ho && wo0 + v < p.wo) {
                y[ybase + r * p.wo + v] = acc[r * V + v] + bias;
            }
        }
    }
}
