// grid_attention_backward_dq — dQ of the fused grid attention (FlashAttention-2 Algorithm 2),
// one query member per invocation, looping over the key tiles of its group:
//   P_ij = exp(scale · q_i·k_j − lse_i),  dS_ij = P_ij · (dO_i·v_j − Delta_i),
//   dq_i = scale · Σ_j dS_ij · k_j
// A grid member's dq goes to its q slot of dqkv; the shared cls member's (one per group) to
// dcls, summed over the groups by grid_attention_backward_cls.
// Reference: engine/src/ops/grid_attention.rs::reference_backward.  Forward: grid_attention_forward.
// Layout: as grid_attention_forward; dy f32[B, n_tok, C_out]; lse, delta f32[B, G, nh, L];
//   dqkv f32[B, n_tok, 3, heads, HD]; dcls f32[B, G, nh, 3, HD].
// Dispatch: (ceil(L / BQ), fold of B·G·nh over y and z) workgroups of BQ invocations.
// #include "lib/grid.wgsl"

override BQ: u32 = 32u;
override TILE: u32 = 480u;  // vec4 slots per K (and per V) tile: 15 KiB for both
const DMAX4: u32 = 32u;
// D4 = ceil(HD / 4), fixed per pipeline (as in attention_forward.wgsl): constant-trip row loops
// that llvmpipe unrolls, keeping the row arrays in registers. Never above DMAX4.
override D4: u32 = 32u;

@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> lse: array<f32>;
@group(0) @binding(3) var<storage, read> delta: array<f32>;
@group(0) @binding(4) var<storage, read_write> dqkv: array<f32>;
@group(0) @binding(5) var<storage, read_write> dcls: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

var<workgroup> ks: array<vec4<f32>, TILE>;
var<workgroup> vs: array<vec4<f32>, TILE>;

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
    let i = wg.x * BQ + lid.x;
    let live = i < gr.n;
    let ic = min(i, gr.n - 1u);   // dead rows compute on a valid row and write nothing
    let tq = member_token(gr, ic);

    var q: array<vec4<f32>, DMAX4>;
    var go: array<vec4<f32>, DMAX4>;   // dO_i
    var dq: array<vec4<f32>, DMAX4>;
    let qrow = qkv_row(b, tq, 0u, h);
    for (var c = 0u; c < D4; c++) {
        q[c] = ld4(qrow, c) * p.scale;
        go[c] = ld4_dy(b, tq, h, ic, c);
        dq[c] = vec4<f32>(0.0);
    }
    let lse_i = lse[inst * p.lmax + ic];
    let delta_i = delta[inst * p.lmax + ic];
    for (var t0 = 0u; t0 < gr.n; t0 += p.bk) {
        let nk = min(p.bk, gr.n - t0);
        for (var e = lid.x; e < nk * D4; e += BQ) {
            let tk = member_token(gr, t0 + e / D4);
            ks[e] = ld4(qkv_row(b, tk, 1u, h), e % D4);
            vs[e] = ld4(qkv_row(b, tk, 2u, h), e % D4);
        }
        workgroupBarrier();
        for (var j = 0u; j < nk; j++) {
            var sc = 0.0;
            var dp = 0.0;
            for (var c = 0u; c < D4; c++) {
                sc += dot(q[c], ks[j * D4 + c]);
                dp += dot(go[c], vs[j * D4 + c]);
            }
            let ds = exp(sc - lse_i) * (dp - delta_i);
            for (var c = 0u; c < D4; c++) {
                dq[c] += ds * ks[j * D4 + c];
            }
        }
        workgroupBarrier();
    }
    if (!live) { return; }
    var base = qrow;   // the q slot of dqkv has the layout of qkv
    if (is_cls(i)) { base = inst * 3u * p.hd; }
    for (var c = 0u; c < D4; c++) {
        let v = dq[c] * p.scale;
        for (var k = 0u; k < 4u; k++) {
            if (4u * c + k < p.hd) {
                if (is_cls(i)) { dcls[base + 4u * c + k] = v[k]; } else { dqkv[base + 4u * c + k] = v[k]; }
            }
        }
    }
}
