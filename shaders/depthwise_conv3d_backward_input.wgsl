// depthwise_conv3d_backward_input — dx[n,c,q] = Σ_{a,i,j} w[c,a,i,j] · dy[n,c,o]
// over the taps (a,i,j) whose output o = (q + pad − (a,i,j)) / s is whole and inside dy.
// v3: register blocks, as the forward (v3). A lane owns R rows × V columns of dx in one
//     (n, c, tq), with R a multiple of SH and V of SW, so every block starts on a stride phase:
//     which taps reach which element, and which dy elements the block reads, are then compile-
//     time facts of the override constants (kernel, H/W strides and paddings). The lane walks
//     the dy rows its block reads, loads each row's dy values once and adds them, times the tap
//     that links them, into every element of the block they reach. v2 was one lane per element
//     testing all KT·KH·KW taps with per-lane divisions (MViT's 1×2×2 input gradient: 480 ms).
//     The T taps are tested per lane (p.st, p.pt are runtime: one division per t-tap).
//     Used for strided convolutions; stride 1 runs the forward kernel with the kernel flipped.
// Reference: engine/src/ops/depthwise_conv3d.rs::reference_backward.
// Layout: dy f32[B, C, TO, HO, WO]; w f32[C, 1, KT, KH, KW]; dx f32[B, C, T, H, W].
// Dispatch: gpu::grid_rows(p.n = B·C·GPC), GPC = ceil(T·HB·LW / WG) workgroups per (n, c) with
//           HB = ceil(H / R), LW = ceil(W / V) (depthwise_conv3d.rs::tiles); a gather: no two
//           invocations write the same element. Loop trip counts are override products.
// #include "lib/index.wgsl"
// #bounded-loops

struct Params {
    t: u32, h: u32, w: u32, c: u32,         // dy's TO, HO, WO and C
    to: u32, ho: u32, wo: u32, gpc: u32,    // dx's T, H, W; workgroups per (n, c)
    lw: u32, hb: u32, blocks: u32, n: u32,
    st: u32, pt: i32, ph: i32, pw: i32,     // T stride and padding (ph, pw: the overrides)
    ag: u32, n_chunks: u32, _p0: u32, _p1: u32,
}
override KT: u32 = 3u;
override KH: u32 = 3u;
override KW: u32 = 3u;
override SH: u32 = 2u;
override SW: u32 = 2u;
override PH: u32 = 1u;
override PW: u32 = 1u;
override V: u32 = 6u;      // a multiple of SW
override R: u32 = 8u;      // a multiple of SH
override WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

// floor(n / s) for a possibly negative n (compile-time when n and s are).
fn floor_div(n: i32, s: i32) -> i32 {
    return select(n / s, -((-n + s - 1) / s), n < 0);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = linear_group(wg, nwg);
    if (g >= p.n) { return; }
    let nc = g / p.gpc;                       // uniform
    let blk = (g - nc * p.gpc) * WG + lid.x;
    if (blk >= p.blocks) { return; }
    let c = nc % p.c;
    let per_t = p.hb * p.lw;
    let tq = blk / per_t;
    let rem = blk - tq * per_t;
    let bh = rem / p.lw;
    let bw = rem - bh * p.lw;
    let hq0 = bh * R;
    let wq0 = bw * V;
    // dy rows hq0/SH + d and columns wq0/SW + f, d in [D0, D0 + DH), f in [F0, F0 + FW)
    let sh = i32(SH);
    let sw = i32(SW);
    let d0 = floor_div(i32(PH) - i32(KH) + 1, sh);
    let dh = floor_div(i32(R) - 1 + i32(PH), sh) - d0 + 1;
    let f0 = floor_div(i32(PW) - i32(KW) + 1, sw);
    let fw = floor_div(i32(V) - 1 + i32(PW), sw) - f0 + 1;
    let oh0 = i32(hq0 / SH) + d0;
    let ow0 = i32(wq0 / SW) + f0;
    let ybase = i32(nc * p.t * p.h * p.w);
    let taps = KT * KH * KW;
    let wbase = c * taps;
    var acc: array<f32, 64>;
    for (var k = 0u; k < R * V; k++) { acc[k] = 0.0; }
    var ys: array<f32, 64>;
    var wr: array<f32, 125>;
    for (var a = 0u; a < KT; a++) {
        for (var k = 0u; k < KH * KW; k++) { wr[k] = w[wbase + a * KH * KW + k]; }
        let num = i32(tq) + p.pt - i32(a);
        let ot = num / i32(p.st);
        let tok = num >= 0 && ot * i32(p.st) == num && ot < i32(p.t);
        let yplane = ybase + ot * i32(p.h * p.w);
        for (var dd = 0; dd < dh; dd++) {
            let oh = oh0 + dd;
            let rok = tok && oh >= 0 && oh < i32(p.h);
            let yrow = yplane + oh * i32(p.w);
            for (var f = 0; f < fw; f++) {
                let ow = ow0 + f;
                let ok = rok && ow >= 0 && ow < i32(p.w);
                ys[f] = select(0.0, dy[u32(select(0, yrow + ow, ok))], ok);
            }
            for (var r = 0; r < i32(R); r++) {
                let i = r + i32(PH) - sh * (dd + d0);   // the tap linking dy row dd to row r
                if (i < 0 || i >= i32(KH)) { continue; }
                for (var v = 0; v < i32(V); v++) {
                    for (var f = 0; f < fw; f++) {
                        let e = v + i32(PW) - sw * (f + f0);
                        if (e < 0 || e >= i32(KW)) { continue; }
                        acc[u32(r) * V + u32(v)] += wr[u32(i) * KW + u32(e)] * ys[f];
                    }
                }
            }
        }
    }
    let xbase = ((nc * p.to + tq) * p.ho + hq0) * p.wo + wq0;
    for (var r = 0u; r < R; r++) {
        for (var v = 0u; v < V; v++) {
            if (hq0 + r < p.ho && wq0 + v < p.wo) {
                dx[xbase + r * p.wo + v] = acc[r * V + v];
            }
        }
    }
}
