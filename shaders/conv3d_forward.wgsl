// conv3d_forward — y[n,co,o] = b[co] + Σ_{ci in group(co), k} w[co,ci,k] · x[n, g·CIG + ci, o·s − pad + k]
// (grouped convolution; taps outside x read zero padding). The reduction r = ci·K + k (length
// CIG·KT·KH·KW) is cut into N_SPLIT slices of ≤ SPLIT terms; slice s writes y[s, ·] and the
// caller sums the slices (reduce::reduce_raw) when N_SPLIT > 1.
// Reference: engine/src/ops/conv3d.rs::reference.
// Backward: conv3d_backward_input.wgsl, conv3d_backward_weight.wgsl.
// Layout: x f32[B, CIN, T, H, W]; w f32[COUT, CIG, KT, KH, KW] (CIG = CIN/G, COG = COUT/G);
//         b f32[COUT] (w again without bias, never read); y f32[N_SPLIT, B, COUT, TO, HO, WO].
// Dispatch: gpu::grid(N_SPLIT · B·COUT·TO·HO·WO, WG); ≤ SPLIT loop trips an invocation
//           (Mesa 22's llvmpipe silently stops loops after 65,535 trips).
// #include "lib/index.wgsl"

struct Params {
    b: u32, cin: u32, cout: u32, groups: u32,
    t: u32, h: u32, w: u32, to: u32,
    ho: u32, wo: u32, kt: u32, kh: u32,
    kw: u32, st: u32, sh: u32, sw: u32,
    pt: u32, ph: u32, pw: u32, n: u32,    // n = elements of one slice of the output
    red: u32, split: u32, n_split: u32, _pad: u32,
}
override WG: u32 = 256u;
override HAS_BIAS: u32 = 0u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.n * p.n_split) { return; }
    let s = i / p.n;
    // i % n = (((n·COUT + co)·TO + to)·HO + ho)·WO + wo
    var r = i % p.n;
    let wo = r % p.wo;
    r = r / p.wo;
    let ho = r % p.ho;
    r = r / p.ho;
    let to = r % p.to;
    r = r / p.to;
    let co = r % p.cout;
    let nb = r / p.cout;
    let cig = p.cin / p.groups;
    let ci0 = (co / (p.cout / p.groups)) * cig;
    let taps = p.kt * p.kh * p.kw;
    let r0 = s * p.split;
    let r1 = min(r0 + p.split, p.red);
    var acc = 0.0;
    for (var q = r0; q < r1; q++) {
        let k = q % taps;
        let ci = ci0 + q / taps;
        let j = k % p.kw;
        let ii = (k / p.kw) % p.kh;
        let a = k / (p.kw * p.kh);
        let ti = i32(to * p.st + a) - i32(p.pt);
        let hi = i32(ho * p.sh + ii) - i32(p.ph);
        let wi = i32(wo * p.sw + j) - i32(p.pw);
        if (ti < 0 || ti >= i32(p.t) || hi < 0 || hi >= i32(p.h) || wi < 0 || wi >= i32(p.w)) { continue; }
        acc += x[(((nb * p.cin + ci) * p.t + u32(ti)) * p.h + u32(hi)) * p.w + u32(wi)] * w[co * p.red + q];
    }
    if (HAS_BIAS == 1u && s == 0u) { acc += b[co]; }
    y[i] = acc;
}
