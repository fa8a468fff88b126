// grid_attention_backward_dkv — dK and dV of the fused grid attention (FlashAttention-2,
// arXiv:2307.08691, Algorithm 2), one key member per invocation, looping over the query tiles
// of its group:
//   P_ij = exp(scale · q_i·k_j − lse_i),  dv_j = Σ_i P_ij · dO_i,
//   dS_ij = P_ij · (dO_i·v_j − Delta_i),   dk_j = scale · Σ_i dS_ij · q_i
// Every grid token is a member of exactly one group, so its k and v slots of dqkv are written
// once; the shared cls member's (one per group) go to dcls, summed by grid_attention_backward_cls.
// Reference: engine/src/ops/grid_attention.rs::reference_backward.  Forward: grid_attention_forward.
// Layout: as grid_attention_backward_dq.
// Dispatch: (ceil(L / BQ), fold of B·G·nh over y and z) workgroups of BQ invocations.
// #include "lib/grid.wgsl"

override BQ: u32 = 32u;     // key members per workgroup = workgroup size
override TILE: u32 = 480u;  // vec4 slots per Q (and per dO) tile: 15 KiB for both
const DMAX4: u32 = 32u;
// D4 = ceil(HD / 4), fixed per pipeline (as in attention_forward.wgsl): constant-trip row loops
// that llvmpipe unrolls, keeping the row arrays in registers. Never above DMAX4.
override D4: u32 = 32u;
const MAX_BK: u32 = 64u;    // rows per tile never exceed this (see ops/grid_attention.rs)

@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> lse: array<f32>;
@group(0) @binding(3) var<storage, read> delta: array<f32>;
@group(0) @binding(4) var<storage, read_write> dqkv: array<f32>;
@group(0) @binding(5) var<storage, read_write> dcls: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

var<workgroup> qs: array<vec4<f32>, TILE>;
var<workgroup> gs: array<vec4<f32>, TILE>;   // dO rows
var<workgroup> lse_t: array<f32, MAX_BK>;
var<workgroup> delta_t: array<f32, MAX_BK>;

fn ld4(base: u32, c: u32) -> vec4<f32> {
    let e = 4u * c;
    var v = vec4<f32>(0.0);
    if (e < p.hd) { v.x = qkv[base + e]; }
    if (e + 1u < p.hd) { v.y = qkv[base + e + 1u]; }
    if (e + 2u < p.hd) { v.z = qkv[base + e + 2u]; }
    if (e + 3u < p.hd) { v.w = qkv[base + e + 3u]; }
    return v;
}

// dO of member m (token tok): its dy row, or dy_cls / G for the shared cls.
fn ld4_dy(b: u32, tok: u32, h: u32, m: u32, c: u32) -> vec4<f32> {
    let base = out_row(b, tok, h);
    let e = 4u * c;
    var v = vec4<f32>(0.0);
    if (e < p.hd) { v.x = dy[base + e]; }
    if (e + 1u < p.hd) { v.y = dy[base + e + 1u]; }
    if (e + 2u < p.hd) { v.z = dy[base + e + 2u]; }
    if (e + 3u < p.hd) { v.w = dy[base + e + 3u]; }
    if (is_cls(m)) { v = v / f32(p.n_grp); }
    return v;
}

@compute @workgroup_size(BQ)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let inst = instance(wg, nwg);
    if (inst >= p.n_inst) { return; }
    let h = inst % p.nh;
    let g = (inst / p.nh) % p.n_grp;
    let b = inst / (p.nh * p.n_grp);
    let gr = group_of(g);
    if (wg.x * BQ >= gr.n) { return; }
    let j = wg.x * BQ + lid.x;
    let live = j < gr.n;
    let jc = min(j, gr.n - 1u);
    let tk = member_token(gr, jc);

    var k: array<vec4<f32>, DMAX4>;
    var v: array<vec4<f32>, DMAX4>;
    var dk: array<vec4<f32>, DMAX4>;
    var dv: array<vec4<f32>, DMAX4>;
    let krow = qkv_row(b, tk, 1u, h);
    let vrow = qkv_row(b, tk, 2u, h);
    for (var c = 0u; c < D4; c++) {
        k[c] = ld4(krow, c) * p.scale;
        v[c] = ld4(vrow, c);
        dk[c] = vec4<f32>(0.0);
        dv[c] = vec4<f32>(0.0);
    }
    for (var t0 = 0u; t0 < gr.n; t0 += p.bk) {
        let nq = min(p.bk, gr.n - t0);
        // (nq, D4) tiles of Q and dO, and their rows' lse and Delta
        for (var e = lid.x; e < nq * D4; e += BQ) {
            let m = t0 + e / D4;
            let tq = member_token(gr, m);
            qs[e] = ld4(qkv_row(b, tq, 0u, h), e % D4);
            gs[e] = ld4_dy(b, tq, h, m, e % D4);
        }
        for (var e = lid.x; e < nq; e += BQ) {
            lse_t[e] = lse[inst * p.lmax + t0 + e];
            delta_t[e] = delta[inst * p.lmax + t0 + e];
        }
        workgroupBarrier();
        for (var i = 0u; i < nq; i++) {
            var sc = 0.0;
            var dp = 0.0;
            for (var c = 0u; c < D4; c++) {
                sc += dot(qs[i * D4 + c], k[c]);
                dp += dot(gs[i * D4 + c], v[c]);
            }
            let pij = exp(sc - lse_t[i]);
            let ds = pij * (dp - delta_t[i]);
            for (var c = 0u; c < D4; c++) {
                dv[c] += pij * gs[i * D4 + c];
                dk[c] += ds * qs[i * D4 + c];
            }
        }
        workgroupBarrier();
    }
    if (!live) { return; }
    var kbase = krow;   // the k and v slots of dqkv have the layout of qkv
    var vbase = vrow;
    if (is_cls(j)) {
        kbase = (inst * 3u + 1u) * p.hd;
        vbase = kbase + p.hd;
    }
    for (var c = 0u; c < D4; c++) {
        let gk = dk[c] * p.scale;
        let gv = dv[c];
        for (var e = 0u; e < 4u; e++) {
            if (4u * c + e < p.hd) {
                if (is_cls(j)) {
                    dcls[kbase + 4u * c + e] = gk[e];
                    dcls[vbase + 4u * c + e] = gv[e];
                } else {
                    dqkv[kbase + 4u * c + e] = gk[e];
                    dqkv[vbase + 4u * c + e] = gv[e];
                }
            }
        }
    }
}
