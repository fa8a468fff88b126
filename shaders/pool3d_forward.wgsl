// pool3d_forward — average (OP 0) or max (OP 1) over each window x[n,c, o·s − pad + (a,i,j)]:
//   avg: y = Σ_window x / (KT·KH·KW)   (PyTorch count_include_pad=True: padding counts as 0)
//   max: y = max over the window's elements inside x (padding never wins, as PyTorch's −inf)
// Reference: engine/src/ops/pool3d.rs::reference.  Backward: pool3d_backward.wgsl.
// Layout: x f32[B, C, T, H, W]; y f32[B, C, TO, HO, WO].
// Dispatch: gpu::grid(B·C·TO·HO·WO, WG), one output per invocation; ≤ KT·KH·KW loop trips.
// #include "lib/index.wgsl"

struct Params {
    bc: u32, t: u32, h: u32, w: u32,
    to: u32, ho: u32, wo: u32, n: u32,    // n = invocations of this dispatch
    kt: u32, kh: u32, kw: u32, _p0: u32,
    st: u32, sh: u32, sw: u32, _p1: u32,
    pt: u32, ph: u32, pw: u32, _p2: u32,
}
override WG: u32 = 256u;
override OP: u32 = 0u;   // ops/pool3d.rs::PoolKind: 0 avg, 1 max

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.n) { return; }
    // i = ((nc·TO + to)·HO + ho)·WO + wo
    let wo = i % p.wo;
    var r = i / p.wo;
    let ho = r % p.ho;
    r = r / p.ho;
    let to = r % p.to;
    let nc = r / p.to;
    let x0 = nc * p.t * p.h * p.w;
    let t0 = i32(to * p.st) - i32(p.pt);
    let h0 = i32(ho * p.sh) - i32(p.ph);
    let w0 = i32(wo * p.sw) - i32(p.pw);
    var sum = 0.0;
    var best = bitcast<f32>(0xff800000u); // −inf
    for (var a = 0u; a < p.kt; a++) {
        let ti = t0 + i32(a);
        if (ti < 0 || ti >= i32(p.t)) { continue; }
        for (var bi = 0u; bi < p.kh; bi++) {
            let hi = h0 + i32(bi);
            if (hi < 0 || hi >= i32(p.h)) { continue; }
            let xrow = x0 + (u32(ti) * p.h + u32(hi)) * p.w;
            for (var e = 0u; e < p.kw; e++) {
                let wi = w0 + i32(e);
                if (wi < 0 || wi >= i32(p.w)) { continue; }
                let v = x[xrow + u32(wi)];
                sum += v;
                best = max(best, v);
            }
        }
    }
    y[i] = select(sum / f32(p.kt * p.kh * p.kw), best, OP == 1u);
}
