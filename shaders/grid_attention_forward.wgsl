// grid_attention_forward — axis-factorised / grouped attention on a (T, H, W) token grid, fused:
// for every group of one (batch, head) (lib/grid.wgsl: whole axes, blocks, strided sets, and an
// optional shared cls member) and every member query i,
//   o_i = Σ_j softmax_j(scale · q_i·k_j) · v_j,   lse_i = log Σ_j exp(scale · q_i·k_j)
// over the members j of its group, with the online softmax of FlashAttention-2 (Dao 2023,
// arXiv:2307.08691, Algorithm 1). q, k, v are read from the packed qkv where they lie and o is
// written where its token lies: no permuted or gathered copy is made.
// Reference: engine/src/ops/grid_attention.rs::reference.  Backward: grid_attention_backward_*.
// Layout: B batch, n_tok tokens a row, G groups a batch element, nh heads of this part, HD head
//   dim, L = lmax members a group at most.  qkv f32[B, n_tok, 3, heads, HD];
//   y f32[B, n_tok, C_out] (this part's heads at o0); cls_o f32[B, G, nh, HD] (the shared cls
//   query's output in each group; grid_attention_forward_cls averages it); lse f32[B, G, nh, L].
// Dispatch: (ceil(L / BQ), fold of B·G·nh over y and z) workgroups; one invocation per member.
// NOTE: every loop of an invocation counts against Mesa 22 llvmpipe's 65,535-iteration limit;
//   the host refuses groups with L·(2·HD/4 + 2) above its budget.
// #include "lib/grid.wgsl"

override BQ: u32 = 32u;     // query members per workgroup = workgroup size
override TILE: u32 = 480u;  // vec4 slots per K (and per V) tile: 15 KiB for both
const DMAX4: u32 = 32u;     // head dim ≤ 128, one row kept in registers
// D4 = ceil(HD / 4), fixed per pipeline (as in attention_forward.wgsl): constant-trip row loops
// that llvmpipe unrolls, keeping the row arrays in registers. Never above DMAX4.
override D4: u32 = 32u;

@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> cls_o: array<f32>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

var<workgroup> ks: array<vec4<f32>, TILE>;
var<workgroup> vs: array<vec4<f32>, TILE>;

// Components 4c..4c+3 of the row at `base`, zero past HD.
fn ld4(base: u32, c: u32) -> vec4<f32> {
    let e = 4u * c;
    var v = vec4<f32>(0.0);
    if (e < p.hd) { v.x = qkv[base + e]; }
    if (e + 1u < p.hd) { v.y = qkv[base + e + 1u]; }
    if (e + 2u < p.hd) { v.z = qkv[base + e + 2u]; }
    if (e + 3u < p.hd) { v.w = qkv[base + e + 3u]; }
    return v;
}

@compute @workgroup_size(BQ)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let inst = instance(wg, nwg);   // (b·G + g)·nh + h
    if (inst >= p.n_inst) { return; }
    let h = inst % p.nh;
    let g = (inst / p.nh) % p.n_grp;
    let b = inst / (p.nh * p.n_grp);
    let gr = group_of(g);
    if (wg.x * BQ >= gr.n) { return; }   // a whole workgroup past a short group
    let i = wg.x * BQ + lid.x;
    let live = i < gr.n;   // dead rows still load tiles and meet the barriers
    let ic = min(i, gr.n - 1u);
    let tq = member_token(gr, ic);

    var q: array<vec4<f32>, DMAX4>;
    var acc: array<vec4<f32>, DMAX4>;
    let qrow = qkv_row(b, tq, 0u, h);
    for (var c = 0u; c < D4; c++) {
        q[c] = ld4(qrow, c) * p.scale;
        acc[c] = vec4<f32>(0.0);
    }
    var m = -3.0e38;   // finite "−∞": exp(m_old − m_new) stays 0, never NaN
    var l = 0.0;
    for (var t0 = 0u; t0 < gr.n; t0 += p.bk) {
        let nk = min(p.bk, gr.n - t0);
        // (nk, D4) tiles of the group's K and V
        for (var e = lid.x; e < nk * D4; e += BQ) {
            let tk = member_token(gr, t0 + e / D4);
            ks[e] = ld4(qkv_row(b, tk, 1u, h), e % D4);
            vs[e] = ld4(qkv_row(b, tk, 2u, h), e % D4);
        }
        workgroupBarrier();
        for (var j = 0u; j < nk; j++) {
            var sc = 0.0;
            for (var c = 0u; c < D4; c++) {
                sc += dot(q[c], ks[j * D4 + c]);
            }
            let m_new = max(m, sc);
            let corr = exp(m - m_new);
            let pj = exp(sc - m_new);
            l = l * corr + pj;
            for (var c = 0u; c < D4; c++) {
                acc[c] = acc[c] * corr + pj * vs[j * D4 + c];
            }
            m = m_new;
        }
        workgroupBarrier();
    }
    if (!live) { return; }
    lse[inst * p.lmax + i] = m + log(l);
    let inv = 1.0 / l;
    var obase = out_row(b, tq, h);
    if (is_cls(i)) { obase = inst * p.hd; }
    for (var c = 0u; c < D4; c++) {
        let o = acc[c] * inv;
        for (var k = 0u; k < 4u; k++) {
            if (4u * c + k < p.hd) {
                if (is_cls(i)) { cls_o[obase + 4u * c + k] = o[k]; } else { y[obase + 4u * c + k] = o[k]; }
            }
        }
    }
}
