// window_attention_backward_dkv — dK and dV of the fused window attention (FlashAttention-2
// Algorithm 2), one key token per invocation, looping over the window's query tiles:
//   P_ij = exp(scale·q_i·k_j + table[index[i,j], h] + mask_ij − lse_i),  dv_j = Σ_i P_ij dO_i,
//   dS_ij = P_ij·(dO_i·v_j − Delta_i),  dk_j = scale·Σ_i dS_ij q_i
// Reference: engine/src/ops/window_attention.rs::reference_backward.
// Layout: as window_attention_backward_dq; writes the k and v slots of dqkv (real tokens) and of
//   dpad (padding tokens).
// Dispatch: (ceil(N / BQ), B·nW, heads) workgroups of BQ invocations.
// #include "lib/window.wgsl"

override BQ: u32 = 32u;
override TILE: u32 = 480u;  // vec4 slots per Q (and per dO) tile: 15 KiB for both
const DMAX4: u32 = 32u;     // head dim ≤ 128
// ceil(HD / 4), set by the host (v2): constant loop bounds let the compiler unroll the head-dim
// loops and keep the per-lane q / dO / accumulator arrays in registers.
override D4: u32 = 8u;
const MAX_BK: u32 = 64u;

@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read> qkv_bias: array<f32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;
@group(0) @binding(5) var<storage, read> delta: array<f32>;
@group(0) @binding(6) var<storage, read_write> dqkv: array<f32>;
@group(0) @binding(7) var<storage, read_write> dpad: array<f32>;
@group(0) @binding(8) var<uniform> p: Params;

var<workgroup> qs: array<vec4<f32>, TILE>;
var<workgroup> gs: array<vec4<f32>, TILE>;   // dO rows
var<workgroup> lse_t: array<f32, MAX_BK>;
var<workgroup> delta_t: array<f32, MAX_BK>;
var<workgroup> labels: array<u32, MAX_BK>;

// Components 4c..4c+3 of slot t ∈ {q, k, v}, head h, of a window token: its qkv row, or the qkv
// Linear's bias for a padding token (zero-padding happens before the Linear in Video Swin).
fn tok_ld4(tk: Tok, t: u32, h: u32, c: u32) -> vec4<f32> {
    let off = t * p.c + h * p.hd;
    let e = 4u * c;
    var v = vec4<f32>(0.0);
    if (tk.real) {
        let base = tk.row * 3u * p.c + off;
        if (e < p.hd) { v.x = qkv[base + e]; }
        if (e + 1u < p.hd) { v.y = qkv[base + e + 1u]; }
        if (e + 2u < p.hd) { v.z = qkv[base + e + 2u]; }
        if (e + 3u < p.hd) { v.w = qkv[base + e + 3u]; }
    } else {
        if (e < p.hd) { v.x = qkv_bias[off + e]; }
        if (e + 1u < p.hd) { v.y = qkv_bias[off + e + 1u]; }
        if (e + 2u < p.hd) { v.z = qkv_bias[off + e + 2u]; }
        if (e + 3u < p.hd) { v.w = qkv_bias[off + e + 3u]; }
    }
    return v;
}

// Components 4c..4c+3 of the upstream gradient of a window token, head h (0 for padding
// tokens: their outputs are cropped away).
fn dy_ld4(tk: Tok, h: u32, c: u32) -> vec4<f32> {
    let e = 4u * c;
    var v = vec4<f32>(0.0);
    if (tk.real) {
        let base = tk.row * p.c + h * p.hd;
        if (e < p.hd) { v.x = dy[base + e]; }
        if (e + 1u < p.hd) { v.y = dy[base + e + 1u]; }
        if (e + 2u < p.hd) { v.z = dy[base + e + 2u]; }
        if (e + 3u < p.hd) { v.w = dy[base + e + 3u]; }
    }
    return v;
}

@compute @workgroup_size(BQ)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = wg.y;
    let h = wg.z;
    let j = wg.x * BQ + lid.x;
    let live = j < p.n;
    let jc = min(j, p.n - 1u);
    let tk = win_token(g, jc);

    var k: array<vec4<f32>, DMAX4>;
    var v: array<vec4<f32>, DMAX4>;
    var dk: array<vec4<f32>, DMAX4>;
    var dv: array<vec4<f32>, DMAX4>;
    for (var c = 0u; c < D4; c++) {
        k[c] = tok_ld4(tk, 1u, h, c) * p.scale;
        v[c] = tok_ld4(tk, 2u, h, c);
        dk[c] = vec4<f32>(0.0);
        dv[c] = vec4<f32>(0.0);
    }
    for (var t0 = 0u; t0 < p.n; t0 += p.bk) {
        let nq = min(p.bk, p.n - t0);
        for (var e = lid.x; e < nq * D4; e += BQ) {
            let tq = win_token(g, t0 + e / D4);
            qs[e] = tok_ld4(tq, 0u, h, e % D4);
            gs[e] = dy_ld4(tq, h, e % D4);
        }
        for (var e = lid.x; e < nq; e += BQ) {
            let li = (g * p.heads + h) * p.n + t0 + e;
            lse_t[e] = lse[li];
            delta_t[e] = delta[li];
            labels[e] = win_token(g, t0 + e).label;
        }
        workgroupBarrier();
        for (var i = 0u; i < nq; i++) {
            var sc = table[rel_index(t0 + i, jc) * p.heads + h] + mask_of(labels[i], tk.label);
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
    var base = tk.row * 3u * p.c + h * p.hd;
    if (!tk.real) { base = (tk.b * p.n_pad + tk.pad) * 3u * p.c + h * p.hd; }
    for (var c = 0u; c < D4; c++) {
        let gk = dk[c] * p.scale;
        let gv = dv[c];
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
