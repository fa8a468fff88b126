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
// Keys scored per step (v3): KB logits in registers, one max and one rescale per step, one exp
// per key. The host's tile rows p.bk are a multiple of KB.
const KB: u32 = 8u;

@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read> qkv_bias: array<f32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

var<workgroup> ks: array<vec4<f32>, TILE>;
var<workgroup> vs: array<vec4<f32>, TILE>;
var<workgroup> krel: array<u32, MAX_BK>;   // rel_key(j)·heads + h: the key's share of the table row
var<workgroup> klab: array<u32, MAX_BK>;   // mask_label of the key

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
    let qrel = rel_off(ic) * p.heads;   // table[qrel + krel[j]] = table[index[i, j], h]
    let qlab = mask_label(tq);

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
        let nkp = (nk + KB - 1u) / KB * KB;
        // (nk, D4) tiles of K and V, one key per lane (its geometry once), zero rows up to a
        // multiple of KB so the scoring steps read no stale slot
        for (var e = lid.x; e < nkp; e += BQ) {
            let tk = win_token(g, t0 + min(e, nk - 1u));
            for (var c = 0u; c < D4; c++) {
                var kc = vec4<f32>(0.0);
                var vc = vec4<f32>(0.0);
                if (e < nk) {
                    kc = tok_ld4(tk, 1u, h, c);
                    vc = tok_ld4(tk, 2u, h, c);
                }
                ks[e * D4 + c] = kc;
                vs[e * D4 + c] = vc;
            }
            krel[e] = rel_key(t0 + min(e, nk - 1u)) * p.heads + h;
            klab[e] = mask_label(tk);
        }
        workgroupBarrier();
        for (var j0 = 0u; j0 < nk; j0 += KB) {
            var s: array<f32, KB>;
            var mt = m;
            for (var u = 0u; u < KB; u++) {
                let j = j0 + u;
                var sc = table[qrel + krel[j]] + mask_pair(qlab, klab[j]);
                for (var c = 0u; c < D4; c++) {
                    sc += dot(q[c], ks[j * D4 + c]);
                }
                s[u] = select(-3.0e38, sc, j < nk);
                mt = max(mt, s[u]);
            }
            let corr = exp(m - mt);
            l *= corr;
            for (var c = 0u; c < D4; c++) {
                acc[c] *= corr;
            }
            for (var u = 0u; u < KB; u++) {
                let pj = exp(s[u] - mt);
                l += pj;
                for (var c = 0u; c < D4; c++) {
                    acc[c] += pj * vs[(j0 + u) * D4 + c];
                }
            }
            m = mt;
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
