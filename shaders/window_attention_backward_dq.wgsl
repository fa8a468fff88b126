// window_attention_backward_dq — dQ of the fused window attention (FlashAttention-2 Algorithm 2),
// one query token per invocation, looping over the window's key tiles:
//   s_ij = scale·q_i·k_j + table[index[i,j], h] + mask_ij,  P_ij = exp(s_ij − lse_i),
//   dS_ij = P_ij·(dO_i·v_j − Delta_i),  dq_i = scale·Σ_j dS_ij k_j
// Reference: engine/src/ops/window_attention.rs::reference_backward.
// Layout: as window_attention_forward; dy f32[B, D, H, W, C]; lse, delta f32[B·nW, heads, N];
//   dqkv f32[B, D, H, W, 3C] (q slot written for real tokens);
//   dpad f32[B, NPAD, 3C] (q slot of padding tokens, summed into d(qkv_bias) by a reduction).
// Dispatch: (ceil(N / BQ), B·nW, heads) workgroups of BQ invocations.
// #include "lib/window.wgsl"

override BQ: u32 = 32u;
override TILE: u32 = 480u;  // vec4 slots per K (and per V) tile: 15 KiB for both
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

var<workgroup> ks: array<vec4<f32>, TILE>;
var<workgroup> vs: array<vec4<f32>, TILE>;
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
    let i = wg.x * BQ + lid.x;
    let live = i < p.n;
    let ic = min(i, p.n - 1u);
    let tq = win_token(g, ic);

    var q: array<vec4<f32>, DMAX4>;
    var go: array<vec4<f32>, DMAX4>;   // dO_i
    var dq: array<vec4<f32>, DMAX4>;
    for (var c = 0u; c < D4; c++) {
        q[c] = tok_ld4(tq, 0u, h, c) * p.scale;
        go[c] = dy_ld4(tq, h, c);
        dq[c] = vec4<f32>(0.0);
    }
    let li = (g * p.heads + h) * p.n + ic;
    let lse_i = lse[li];
    let delta_i = delta[li];
    for (var t0 = 0u; t0 < p.n; t0 += p.bk) {
        let nk = min(p.bk, p.n - t0);
        for (var e = lid.x; e < nk * D4; e += BQ) {
            let tk = win_token(g, t0 + e / D4);
            ks[e] = tok_ld4(tk, 1u, h, e % D4);
            vs[e] = tok_ld4(tk, 2u, h, e % D4);
        }
        for (var e = lid.x; e < nk; e += BQ) {
            labels[e] = win_token(g, t0 + e).label;
        }
        workgroupBarrier();
        for (var j = 0u; j < nk; j++) {
            var sc = table[rel_index(ic, t0 + j) * p.heads + h] + mask_of(tq.label, labels[j]);
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
    var base = tq.row * 3u * p.c + h * p.hd;
    if (!tq.real) { base = (tq.b * p.n_pad + tq.pad) * 3u * p.c + h * p.hd; }
    for (var c = 0u; c < D4; c++) {
        let v = dq[c] * p.scale;
        for (var k = 0u; k < 4u; k++) {
            if (4u * c + k < p.hd) {
                if (tq.real) { dqkv[base + 4u * c + k] = v[k]; } else { dpad[base + 4u * c + k] = v[k]; }
            }
        }
    }
}
