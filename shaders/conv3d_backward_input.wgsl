// conv3d_backward_input — dx[n,ci,q] = Σ_{co in group(ci), k: o = (q + pad − k)/s whole, inside}
//                                      w[co, ci − g·CIG, k] · dy[n,co,o]
// A gather per input element (no atomics). The reduction r = col·K + k (co = g·COG + col, length
// COG·KT·KH·KW) is cut into N_SPLIT slices of ≤ SPLIT terms, summed by the caller.
// Reference: engine/src/ops/conv3d.rs::reference_backward.
// Layout: dy f32[B, COUT, TO, HO, WO]; w f32[COUT, CIG, KT, KH, KW]; dx f32[N_SPLIT, B, CIN, T, H, W].
// Dispatch: gpu::grid(N_SPLIT · B·CIN·T·H·W, WG); ≤ SPLIT loop trips an invocation.
// #include "lib/index.wgsl"

struct Params {
    b: u32, cin: u32, cout: u32, groups: u32,
    t: u32, h: u32, w: u32, to: u32,
    ho: u32, wo: u32, kt: u32, kh: u32,
    kw: u32, st: u32, sh: u32, sw: u32,
    pt: u32, ph: u32, pw: u32, n: u32,
    red: u32, split: u32, n_split: u32, _pad: u32,
}
override WG: u32 = 256u;

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
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.n * p.n_split) { return; }
    let s = i / p.n;
    // i % n = (((n·CIN + ci)·T + t)·H + h)·W + w
    var r = i % p.n;
    let wq = r % p.w;
    r = r / p.w;
    let hq = r % p.h;
    r = r / p.h;
    let tq = r % p.t;
    r = r / p.t;
    let ci = r % p.cin;
    let nb = r / p.cin;
    let cig = p.cin / p.groups;
    let cog = p.cout / p.groups;
    let co0 = (ci / cig) * cog;
    let cil = ci % cig;
    let taps = p.kt * p.kh * p.kw;
    let r0 = s * p.split;
    let r1 = min(r0 + p.split, p.red);
    var acc = 0.0;
    for (var q = r0; q < r1; q++) {
        let k = q % taps;
        let co = co0 + q / taps;
        let j = k % p.kw;
        let ii = (k / p.kw) % p.kh;
        let a = k / (p.kw * p.kh);
        let to = out_coord(tq, a, p.pt, p.st, p.to);
        let ho = out_coord(hq, ii, p.ph, p.sh, p.ho);
        let wo = out_coord(wq, j, p.pw, p.sw, p.wo);
        if (to < 0 || ho < 0 || wo < 0) { continue; }
        let yi = (((nb * p.cout + co) * p.to + u32(to)) * p.ho + u32(ho)) * p.wo + u32(wo);
        acc += dy[yi] * w[(co * cig + cil) * taps + k];
    }
    dx[i] = acc;
}
