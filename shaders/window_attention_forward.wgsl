// window_attention_forward — Video Swin 3D (shifted) window attention, fused (Liu et al. 2022,
// "Video Swin Transformer", arXiv:2106.13230; official WindowAttention3D + SwinTransformerBlock3D):
// pad → roll(−shift) → window partition → softmax(scale·q·kᵀ + table[index[i,j], h] + mask) v →
// window reverse → roll(+shift) → crop, all by index arithmetic (lib/window.wgsl), with the
// FlashAttention-2 online softmax over key tiles; the row log-sum-exp is saved for the backward.
// Reference: engine/src/ops/window_attention.rs::reference.  Backward: window_attention_backward_*.
// Layout: B, (D, H, W) grid, nW windows per batch element, N tokens a window, heads, HD head dim,
//   C = heads·HD.  qkv f32[B, D, H, W, 3, heads, HD]; qkv_bias f32[3C]; table f32[T, heads];
//   y f32[B, D, H, W, C]; lse f32[B·nW, heads, N] (window order, padding tokens included).
// Dispatch: (ceil(N / BQ), B·nW, heads) workgroups; one invocation per query token of a window.
// NOTE: every loop of an invocation counts against Mesa 22 llvmpipe's 65,535-iteration limit;
//   the host refuses windows with N·(2·HD/4 + 2) above its budget.
// #include "lib/window.wgsl"

override BQ: u32 = 32u;     // query tokens per workgroup = workgroup size
override TILE: u32 = 480u;  // vec4 slots per K (and per V) tile: 15 KiB for both
const DMAX4: u32 = 32u;     // head dim ≤ 128
// ceil(HD / 4), set by the host (v2): constant loop bounds let the compiler unroll the head-dim
// loops and keep the per-lane q / dO / accumulator arrays in registers.
override D4: u32 = 8u;
const MAX_BK: u32 = 64u;

@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read> qkv_bias: array<f32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

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

@compute @workgroup_size(BQ)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = wg.y;
    let h = wg.z;
    let i = wg.x * BQ + lid.x;
    let live = i < p.n;   // dead rows still load tiles and meet the barriers
    let ic = min(i, p.n - 1u);
    let tq = win_token(g, ic);

    var q: array<vec4<f32>, DMAX4>;
    var acc: array<vec4<f32>, DMAX4>;
    for (var c = 0u; c < D4; c++) {
        q[c] = tok_ld4(tq, 0u, h, c) * p.scale;
        acc[c] = vec4<f32>(0.0);
    }
    var m = -3.0e38;   // finite "−∞": exp(m_old − m_new) stays 0, never NaN
    var l = 0.0;
    for (var t0 = 0u; t0 < p.n; t0 += p.bk) {
        let nk = min(p.bk, p.n - t0);
        // (nk, D4) tiles of K and V, and the keys' shift-region labels
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
    lse[(g * p.heads + h) * p.n + i] = m + log(l);
    if (!tq.real) { return; }   // cropped: padding tokens have no output
    let inv = 1.0 / l;
    let obase = tq.row * p.c + h * p.hd;
    for (var c = 0u; c < D4; c++) {
        let o = acc[c] * inv;
        if (4u * c < p.hd) { y[obase + 4u * c] = o.x; }
        if (4u * c + 1u < p.hd) { y[obase + 4u * c + 1u] = o.y; }
        if (4u * c + 2u < p.hd) { y[obase + 4u * c + 2u] = o.z; }
        if (4u * c + 3u < p.hd) { y[obase + 4u * c + 3u] = o.w; }
    }
}
