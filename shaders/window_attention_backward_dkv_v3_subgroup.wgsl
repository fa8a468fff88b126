// window_attention_backward_dkv_v3_subgroup — dK and dV of the fused window attention
// (FlashAttention-2 Algorithm 2), for subgroups of ≥ 8 lanes:
//   P_ij = exp(scale·q_i·k_j + table[index[i,j], h] + mask_ij − lse_i),  dv_j = Σ_i P_ij dO_i,
//   dS_ij = P_ij·(dO_i·v_j − Delta_i),  dk_j = scale·Σ_i dS_ij q_i
// v3: a workgroup is one subgroup of 8 lanes and owns R·8 keys of one (window, head); queries
//     stream 8 at a time: lane l loads query j0 + l (q, dO, lse, Delta, bias share, label) and
//     subgroupBroadcast hands it to every lane (no workgroup memory: llvmpipe scalarises every
//     load per lane). As window_attention_forward_v3_subgroup.wgsl.
// Reference: engine/src/ops/window_attention.rs::reference_backward.
// Layout: as window_attention_backward_dkv.wgsl (k and v slots of dqkv, or of dpad for padding).
// Dispatch: (ceil(N / (8·R)), B·nW, heads) workgroups of 8 invocations.
// v3.1: the window geometry comes from window_attention_tokens.wgsl's per-token descriptors,
//     and HD_EXACT (head dim a multiple of 4) drops the per-component load tests; as the forward.
// #include "lib/window.wgsl"
// #include "lib/window_v3.wgsl"
// #bounded-loops

const DMAX4: u32 = 32u;     // head dim ≤ 128
override D4: u32 = 8u;      // ceil(HD / 4), set by the host
const R: u32 = 4u;          // key tokens per lane

@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read> qkv_bias: array<f32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;
@group(0) @binding(5) var<storage, read> delta: array<f32>;
@group(0) @binding(6) var<storage, read> toks: array<vec2<u32>>;
@group(0) @binding(7) var<storage, read_write> dqkv: array<f32>;
@group(0) @binding(8) var<storage, read_write> dpad: array<f32>;
@group(0) @binding(9) var<uniform> p: Params;

// This lane's R keys (k pre-scaled, v) and their gradients: index r·DMAX4 + c.
var<private> k: array<vec4<f32>, 128>;
var<private> v: array<vec4<f32>, 128>;
var<private> dk: array<vec4<f32>, 128>;
var<private> dv: array<vec4<f32>, 128>;
var<private> krel: array<u32, R>;    // rel_key(j): the key's share of the table entry
var<private> klab: array<u32, R>;
// This lane's query of the block (j0 + lane) and, broadcast, the query of the step.
var<private> qq: array<vec4<f32>, DMAX4>;
var<private> gg: array<vec4<f32>, DMAX4>;
var<private> qb: array<vec4<f32>, DMAX4>;
var<private> gb: array<vec4<f32>, DMAX4>;

// dO of a window token, head h (0 for padding tokens: their outputs are cropped away).
fn dy_ld4(tk: WTok, h: u32, c: u32) -> vec4<f32> {
    let e = 4u * c;
    var x = vec4<f32>(0.0);
    if (tk.real) {
        let base = tk.row * p.c + h * p.hd + e;
        if (HD_EXACT) { return vec4<f32>(dy[base], dy[base + 1u], dy[base + 2u], dy[base + 3u]); }
        if (e < p.hd) { x.x = dy[base]; }
        if (e + 1u < p.hd) { x.y = dy[base + 1u]; }
        if (e + 2u < p.hd) { x.z = dy[base + 2u]; }
        if (e + 3u < p.hd) { x.w = dy[base + 3u]; }
    }
    return x;
}

// One query (broadcast into qb, gb) against key r of this lane; ok = the query exists.
// NOTE: loops over r are spelled out as R calls with a literal r, so the private arrays keep
// constant indices (registers); see window_attention_forward_v3_subgroup.wgsl.
fn pair(r: u32, h: u32, qrel: u32, qlab: u32, lse_i: f32, delta_i: f32, ok: bool) {
    var sc = table[(qrel + krel[r]) * p.heads + h] + mask_pair(qlab, klab[r]);
    var dp = 0.0;
    for (var c = 0u; c < D4; c++) {
        sc += dot(qb[c], k[r * DMAX4 + c]);
        dp += dot(gb[c], v[r * DMAX4 + c]);
    }
    let pij = select(0.0, exp(sc - lse_i), ok);
    let d = pij * (dp - delta_i);
    for (var c = 0u; c < D4; c++) {
        dv[r * DMAX4 + c] += pij * gb[c];
        dk[r * DMAX4 + c] += d * qb[c];
    }
}

fn step(h: u32, qrel: u32, qlab: u32, lse_i: f32, delta_i: f32, ok: bool) {
    pair(0u, h, qrel, qlab, lse_i, delta_i, ok);
    pair(1u, h, qrel, qlab, lse_i, delta_i, ok);
    pair(2u, h, qrel, qlab, lse_i, delta_i, ok);
    pair(3u, h, qrel, qlab, lse_i, delta_i, ok);
}

// Key r of this lane (token j) of window instance g: load k, v; clear dk, dv.
fn init(r: u32, g: u32, h: u32, j: u32) {
    let jc = min(j, p.n - 1u);
    let tk = wtok(toks[g * p.n + jc]);
    krel[r] = rel_key_of(tk.rel);
    klab[r] = tk.label;
    for (var c = 0u; c < D4; c++) {
        k[r * DMAX4 + c] = tok_ld4(tk, 1u, h, c) * p.scale;
        v[r * DMAX4 + c] = tok_ld4(tk, 2u, h, c);
        dk[r * DMAX4 + c] = vec4<f32>(0.0);
        dv[r * DMAX4 + c] = vec4<f32>(0.0);
    }
}

// Key r of this lane (token j): its dk, dv rows (dqkv for real tokens, dpad for padding).
fn finish(r: u32, g: u32, h: u32, j: u32) {
    if (j >= p.n) { return; }
    let tk = wtok(toks[g * p.n + j]);
    let base = tk.row * 3u * p.c + h * p.hd;   // a dqkv row, or a dpad row for padding
    for (var c = 0u; c < D4; c++) {
        let gk = dk[r * DMAX4 + c] * p.scale;
        let gv = dv[r * DMAX4 + c];
        for (var e = 0u; e < 4u; e++) {
            let o = base + 4u * c + e;
            if (4u * c + e < p.hd) {
                if (tk.real) {
                    dqkv[o + p.c] = gk[e];
                    dqkv[o + 2u * p.c] = gv[e];
                } else {
                    dpad[o + p.c] = gk[e];
                    dpad[o + 2u * p.c] = gv[e];
                }
            }
        }
    }
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let g = wg.y;
    let h = wg.z;
    let j0 = wg.x * 8u * R + lane;
    init(0u, g, h, j0);
    init(1u, g, h, j0 + 8u);
    init(2u, g, h, j0 + 16u);
    init(3u, g, h, j0 + 24u);
    // Every lane runs every block (queries past N are loaded clamped and weigh 0).
    for (var i0 = 0u; i0 < p.n; i0 += 8u) {
        let i = min(i0 + lane, p.n - 1u);
        let tq = wtok(toks[g * p.n + i]);
        for (var c = 0u; c < D4; c++) {
            qq[c] = tok_ld4(tq, 0u, h, c);
            gg[c] = dy_ld4(tq, h, c);
        }
        let li = (g * p.heads + h) * p.n + i;
        let ls = lse[li];
        let dl = delta[li];
        let qrel = tq.rel;
        let qlab = tq.label;
        // subgroupBroadcast takes a constant lane: the 8 queries are spelled out.
        for (var c = 0u; c < D4; c++) { qb[c] = subgroupBroadcast(qq[c], 0u); gb[c] = subgroupBroadcast(gg[c], 0u); }
        step(h, subgroupBroadcast(qrel, 0u), subgroupBroadcast(qlab, 0u), subgroupBroadcast(ls, 0u), subgroupBroadcast(dl, 0u), i0 + 0u < p.n);
        for (var c = 0u; c < D4; c++) { qb[c] = subgroupBroadcast(qq[c], 1u); gb[c] = subgroupBroadcast(gg[c], 1u); }
        step(h, subgroupBroadcast(qrel, 1u), subgroupBroadcast(qlab, 1u), subgroupBroadcast(ls, 1u), subgroupBroadcast(dl, 1u), i0 + 1u < p.n);
        for (var c = 0u; c < D4; c++) { qb[c] = subgroupBroadcast(qq[c], 2u); gb[c] = subgroupBroadcast(gg[c], 2u); }
        step(h, subgroupBroadcast(qrel, 2u), subgroupBroadcast(qlab, 2u), subgroupBroadcast(ls, 2u), subgroupBroadcast(dl, 2u), i0 + 2u < p.n);
        for (var c = 0u; c < D4; c++) { qb[c] = subgroupBroadcast(qq[c], 3u); gb[c] = subgroupBroadcast(gg[c], 3u); }
        step(h, subgroupBroadcast(qrel, 3u), subgroupBroadcast(qlab, 3u), subgroupBroadcast(ls, 3u), subgroupBroadcast(dl, 3u), i0 + 3u < p.n);
        for (var c = 0u; c < D4; c++) { qb[c] = subgroupBroadcast(qq[c], 4u); gb[c] = subgroupBroadcast(gg[c], 4u); }
        step(h, subgroupBroadcast(qrel, 4u), subgroupBroadcast(qlab, 4u), subgroupBroadcast(ls, 4u), subgroupBroadcast(dl, 4u), i0 + 4u < p.n);
        for (var c = 0u; c < D4; c++) { qb[c] = subgroupBroadcast(qq[c], 5u); gb[c] = subgroupBroadcast(gg[c], 5u); }
        step(h, subgroupBroadcast(qrel, 5u), subgroupBroadcast(qlab, 5u), subgroupBroadcast(ls, 5u), subgroupBroadcast(dl, 5u), i0 + 5u < p.n);
        for (var c = 0u; c < D4; c++) { qb[c] = subgroupBroadcast(qq[c], 6u); gb[c] = subgroupBroadcast(gg[c], 6u); }
        step(h, subgroupBroadcast(qrel, 6u), subgroupBroadcast(qlab, 6u), subgroupBroadcast(ls, 6u), subgroupBroadcast(dl, 6u), i0 + 6u < p.n);
        for (var c = 0u; c < D4; c++) { qb[c] = subgroupBroadcast(qq[c], 7u); gb[c] = subgroupBroadcast(gg[c], 7u); }
        step(h, subgroupBroadcast(qrel, 7u), subgroupBroadcast(qlab, 7u), subgroupBroadcast(ls, 7u), subgroupBroadcast(dl, 7u), i0 + 7u < p.n);
    }
    finish(0u, g, h, j0);
    finish(1u, g, h, j0 + 8u);
    finish(2u, g, h, j0 + 16u);
    finish(3u, g, h, j0 + 24u);
}
