// depthwise_conv3d_backward_weight — pass 1 of the weight gradient:
//   part[c, k, g] = Σ_{m in chunk g} dy[n,c,o] · x[n,c, o·s − pad + k],  m = (n, o) over B·TO·HO·WO
// The caller reduces the chunk axis (reduce::reduce_raw) into dw[c, k]: two deterministic passes,
// no float atomics, no host loop over channels.
// Reference: engine/src/ops/depthwise_conv3d.rs::reference_backward.
// Layout: x f32[B, C, T, H, W]; dy f32[B, C, TO, HO, WO]; part f32[C, KT·KH·KW, N_CHUNKS].
// Dispatch: gpu::grid_rows(C · KT·KH·KW · N_CHUNKS), one workgroup per (c, k, chunk).
// NOTE: a chunk is at most CHUNK = 64·WG positions, so each lane loops ≤ 64 times: Mesa 22's
//       llvmpipe silently stops a loop after 65,535 trips, and B·TO·HO·WO easily exceeds that.
// #include "lib/index.wgsl"

struct Params {
    bc: u32, t: u32, h: u32, w: u32,
    to: u32, ho: u32, wo: u32, c: u32,
    kt: u32, kh: u32, kw: u32, n: u32,    // n = C · KT·KH·KW · N_CHUNKS rows
    st: u32, sh: u32, sw: u32, chunk: u32,
    pt: u32, ph: u32, pw: u32, n_chunks: u32,
}
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> part: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> acc: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = linear_group(wg, nwg);
    let valid = g < p.n;
    let chunk = g % p.n_chunks;
    let ck = g / p.n_chunks;
    let taps = p.kt * p.kh * p.kw;
    let k = ck % taps;
    let c = ck / taps;
    let e = k % p.kw;
    let bi = (k / p.kw) % p.kh;
    let a = k / (p.kw * p.kh);
    let sp_out = p.to * p.ho * p.wo;
    let m_total = (p.bc / p.c) * sp_out;
    let start = chunk * p.chunk;
    let end = min(start + p.chunk, m_total);
    var v = 0.0;
    if (valid) {
        for (var m = start + lid.x; m < end; m += WG) {
            // m = ((n·TO + to)·HO + ho)·WO + wo
            let wo = m % p.wo;
            var r = m / p.wo;
            let ho = r % p.ho;
            r = r / p.ho;
            let to = r % p.to;
            let n = r / p.to;
            let ti = i32(to * p.st + a) - i32(p.pt);
            let hi = i32(ho * p.sh + bi) - i32(p.ph);
            let wi = i32(wo * p.sw + e) - i32(p.pw);
            let inside = ti >= 0 && ti < i32(p.t) && hi >= 0 && hi < i32(p.h) && wi >= 0 && wi < i32(p.w);
            if (inside) {
                let nc = n * p.c + c;
                let xi = ((nc * p.t + u32(ti)) * p.h + u32(hi)) * p.w + u32(wi);
                let yi = ((nc * p.to + to) * p.ho + ho) * p.wo + wo;
                v += dy[yi] * x[xi];
            }
        }
    }
    acc[lid.x] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid.x < s) { acc[lid.x] += acc[lid.x + s]; }
        workgroupBarrier();
    }
    if (valid && lid.x == 0u) { part[g] = acc[0]; }
}
