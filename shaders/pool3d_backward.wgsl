// pool3d_backward — dx[n,c,q] = Σ over the windows o that contain q of
//   avg: dy[n,c,o] / (KT·KH·KW)
//   max: dy[n,c,o] if q is the window's argmax (the FIRST maximum in (a, i, j) scan order, as
//        PyTorch), else 0. The argmax is recomputed here rather than saved by the forward.
// A gather per input element: no two invocations write one element, so no atomics.
// Reference: engine/src/ops/pool3d.rs::reference_backward.
// Layout: x f32[B, C, T, H, W]; dy f32[B, C, TO, HO, WO]; dx f32[B, C, T, H, W].
// Dispatch: gpu::grid(B·C·T·H·W, WG); ≤ K (avg) or K² (max) loop trips, K = KT·KH·KW ≤ 255
//           for max (checked in pool3d.rs: Mesa 22's llvmpipe stops loops at 65,535 trips).
// #include "lib/index.wgsl"

struct Params {
    bc: u32, t: u32, h: u32, w: u32,
    to: u32, ho: u32, wo: u32, n: u32,
    kt: u32, kh: u32, kw: u32, _p0: u32,
    st: u32, sh: u32, sw: u32, _p1: u32,
    pt: u32, ph: u32, pw: u32, _p2: u32,
}
override WG: u32 = 256u;
override OP: u32 = 0u;   // 0 avg, 1 max

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

// The output coordinate whose window reads input q through tap k, or -1 when there is none.
fn out_coord(q: u32, k: u32, pad: u32, s: u32, n_out: u32) -> i32 {
    let num = i32(q + pad) - i32(k);
    if (num < 0 || u32(num) % s != 0u) { return -1; }
    let o = u32(num) / s;
    return select(-1, i32(o), o < n_out);
}

// Offset (within one (n, c) volume) of the first maximum of the window of output (to, ho, wo).
fn argmax(x0: u32, to: u32, ho: u32, wo: u32) -> u32 {
    let t0 = i32(to * p.st) - i32(p.pt);
    let h0 = i32(ho * p.sh) - i32(p.ph);
    let w0 = i32(wo * p.sw) - i32(p.pw);
    var best = 0.0;
    var arg = 0xffffffffu;
    for (var a = 0u; a < p.kt; a++) {
        let ti = t0 + i32(a);
        if (ti < 0 || ti >= i32(p.t)) { continue; }
        for (var bi = 0u; bi < p.kh; bi++) {
            let hi = h0 + i32(bi);
            if (hi < 0 || hi >= i32(p.h)) { continue; }
            for (var e = 0u; e < p.kw; e++) {
                let wi = w0 + i32(e);
                if (wi < 0 || wi >= i32(p.w)) { continue; }
                let off = (u32(ti) * p.h + u32(hi)) * p.w + u32(wi);
                let v = x[x0 + off];
                // NOTE: strict `>` keeps the first maximum on ties (PyTorch's max_pool3d).
                if (arg == 0xffffffffu || v > best) {
                    best = v;
                    arg = off;
                }
            }
        }
    }
    return arg;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.n) { return; }
    let vol = p.t * p.h * p.w;
    let nc = i / vol;
    let off = i % vol;
    let wq = off % p.w;
    let hq = (off / p.w) % p.h;
    let tq = off / (p.w * p.h);
    let y0 = nc * p.to * p.ho * p.wo;
    let inv_k = 1.0 / f32(p.kt * p.kh * p.kw);
    var acc = 0.0;
    for (var a = 0u; a < p.kt; a++) {
        let to = out_coord(tq, a, p.pt, p.st, p.to);
        if (to < 0) { continue; }
        for (var bi = 0u; bi < p.kh; bi++) {
            let ho = out_coord(hq, bi, p.ph, p.sh, p.ho);
            if (ho < 0) { continue; }
            for (var e = 0u; e < p.kw; e++) {
                let wo = out_coord(wq, e, p.pw, p.sw, p.wo);
                if (wo < 0) { continue; }
                let g = dy[y0 + (u32(to) * p.ho + u32(ho)) * p.wo + u32(wo)];
                if (OP == 0u) {
                    acc += g * inv_k;
                } else if (argmax(nc * vol, u32(to), u32(ho), u32(wo)) == off) {
                    acc += g;
                }
            }
        }
    }
    dx[i] = acc;
}
