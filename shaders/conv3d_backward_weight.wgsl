// conv3d_backward_weight — dw[co,cil,k] = Σ_{n,o} dy[n,co,o] · x[n, g·CIG + cil, o·s − pad + k]
// One invocation per (slice, weight element): the reduction r = (n, o) over B·TO·HO·WO is cut
// into N_SPLIT slices of ≤ SPLIT positions and the caller sums the slices (reduce::reduce_raw):
// deterministic, no float atomics, no host loop over channels or groups.
// Reference: engine/src/ops/conv3d.rs::reference_backward.
// Layout: x f32[B, CIN, T, H, W]; dy f32[B, COUT, TO, HO, WO]; dw f32[N_SPLIT, COUT, CIG, KT, KH, KW].
// Dispatch: gpu::grid(N_SPLIT · COUT·CIG·KT·KH·KW, WG); ≤ SPLIT loop trips an invocation.
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

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> dw: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.n * p.n_split) { return; }
    let s = i / p.n;
    // i % n = ((co·CIG + cil)·KT + a)·KH + ii)·KW + j
    let e = i % p.n;
    let taps = p.kt * p.kh * p.kw;
    let k = e % taps;
    let cig = p.cin / p.groups;
    let cil = (e / taps) % cig;
    let co = e / (taps * cig);
    let ci = (co / (p.cout / p.groups)) * cig + cil;
    let j = k % p.kw;
    let ii = (k / p.kw) % p.kh;
    let a = k / (p.kw * p.kh);
    let r0 = s * p.split;
    let r1 = min(r0 + p.split, p.red);
    var acc = 0.0;
    for (var q = r0; q < r1; q++) {
        // q = ((n·TO + to)·HO + ho)·WO + wo
        let wo = q % p.wo;
        var r = q / p.wo;
        let ho = r % p.ho;
        r = r / p.ho;
        let to = r % p.to;
        let nb = r / p.to;
        let ti = i32(to * p.st + a) - i32(p.pt);
        let hi = i32(ho * p.sh + ii) - i32(p.ph);
        let wi = i32(wo * p.sw + j) - i32(p.pw);
        if (ti < 0 || ti >= i32(p.t) || hi < 0 || hi >= i32(p.h) || wi < 0 || wi >= i32(p.w)) { continue; }
        let xi = (((nb * p.cin + ci) * p.t + u32(ti)) * p.h + u32(hi)) * p.w + u32(wi);
        let yi = (((nb * p.cout + co) * p.to + to) * p.ho + ho) * p.wo + wo;
        acc += dy[yi] * x[xi];
    }
    dw[i] = acc;
}
