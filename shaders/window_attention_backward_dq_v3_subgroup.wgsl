// window_attention_backward_dq_v3_subgroup — dQ and the bias-table gradient of the fused window
// attention (FlashAttention-2 Algorithm 2), for subgroups of ≥ 8 lanes:
//   s_ij = scale·q_i·k_j + table[index[i,j], h] + mask_ij,  P_ij = exp(s_ij − lse_i),
//   dS_ij = P_ij·(dO_i·v_j − Delta_i),  dq_i = scale·Σ_j dS_ij k_j,
//   part[slot, e, h] = Σ over this workgroup's windows and pairs with index[i,j] = e of dS_ij.
// v3: a workgroup is one subgroup of 8 lanes and owns 8 query rows of one head in a chunk of
//     p.chunk window instances; a row is Ow consecutive tokens (the ORIGINAL window's width: the
//     tokens whose rel_off differ in w only) and lane l owns RW = k·Ow queries (k whole rows:
//     rows 4 and 8 wide take one, narrower rows several, so that few RW values are compiled).
//     Keys stream a row at a time: lane l < Ow loads key l of the row and subgroupBroadcast hands
//     it to every lane (llvmpipe scalarises every memory load per lane, so each key row is loaded
//     once per workgroup, not once per lane). dS is used where it is made: the table gradient of
//     the workgroup's pairs is summed in workgroup memory (one head's table, ≤ TMAX floats).
//     Race-free with ONE barrier per key row, not per key: pair (i, j) hits entry
//     rel_off(i) − rel_off(j) + const, and rel_off is a mixed-radix code of (d, h, w) with digits
//     small enough that equal differences mean equal (Δd, Δh, Δw). Two lanes' queries lie in
//     different rows (Δd, Δh) ≠ 0, while the keys of one row differ in w only (Δd = Δh = 0): no two
//     lanes hit one entry between barriers. (A barrier per key cost a third of the backward on
//     llvmpipe, where it suspends the invocation's coroutine.)
//     Each workgroup writes its partial table once; reduce_forward sums the slots (no atomics,
//     a fixed order: deterministic).
// Reference: engine/src/ops/window_attention.rs::reference_backward.
// Layout: as window_attention_backward_dq.wgsl; part f32[NSLOT, T, heads], slot = chunk·QT + qt
//   (QT = ceil(N / (8·RW)) query tiles).
// Dispatch: (QT, NCHUNK, heads) workgroups of 8 invocations.
// v3.1: the window geometry comes from window_attention_tokens.wgsl's per-token descriptors,
//     and HD_EXACT (head dim a multiple of 4) drops the per-component load tests; as the forward.
// #include "lib/window.wgsl"
// #include "lib/window_v3.wgsl"
// #bounded-loops

const DMAX4: u32 = 32u;     // head dim ≤ 128
override D4: u32 = 8u;      // ceil(HD / 4), set by the host
// Room for one head's table, (2Od−1)(2Oh−1)(2Ow−1) ≤ TMAX entries (16 KiB, WebGPU's default
// workgroup storage; Swin's 8×7×7 window needs 2535). A constant, not an override: one pipeline
// for every window (compiling this kernel takes about a second on llvmpipe).
const TMAX: u32 = 4096u;
// Queries per lane and keys per step block: the original window's width Ow (≤ RMAX), set by the
// host. The loops over r and u are spelled out to RMAX with `RW > r` tests, which fold at pipeline
// creation: the private arrays then keep constant indices (registers, see the forward's NOTE).
override RW: u32 = 7u;   // k·Ow (whole rows), ≤ RMAX
const RMAX: u32 = 8u;

@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read> qkv_bias: array<f32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;
@group(0) @binding(5) var<storage, read> delta: array<f32>;
@group(0) @binding(6) var<storage, read> toks: array<vec2<u32>>;
@group(0) @binding(7) var<storage, read_write> dqkv: array<f32>;
@group(0) @binding(8) var<storage, read_write> dpad: array<f32>;
@group(0) @binding(9) var<storage, read_write> part: array<f32>;
@group(0) @binding(10) var<uniform> p: Params;

var<workgroup> dtab: array<f32, TMAX>;

// This lane's RW queries (q pre-scaled, dO, dq accumulators): index r·DMAX4 + c.
var<private> q: array<vec4<f32>, 256>;
var<private> go: array<vec4<f32>, 256>;
var<private> dq: array<vec4<f32>, 256>;
var<private> qrel: array<u32, RMAX>;    // rel_off(i): the query's share of the table entry
var<private> qlab: array<u32, RMAX>;
var<private> lse_q: array<f32, RMAX>;
var<private> delta_q: array<f32, RMAX>;
var<private> live: array<f32, RMAX>;    // 0 for the clamped copies past N
// This lane's key of the block (j0 + lane) and, broadcast, the key of the step.
var<private> kk: array<vec4<f32>, DMAX4>;
var<private> vv: array<vec4<f32>, DMAX4>;
var<private> kb: array<vec4<f32>, DMAX4>;
var<private> vb: array<vec4<f32>, DMAX4>;

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

// One key (broadcast into kb, vb) against query r of this lane; ok = the key exists.
// NOTE: loops over r are spelled out as RMAX calls with a literal r, so the private arrays keep
// constant indices (registers); see window_attention_forward_v3_subgroup.wgsl.
fn pair(r: u32, h: u32, krel: u32, klab: u32, ok: bool) {
    var sc = table[(qrel[r] + krel) * p.heads + h] + mask_pair(qlab[r], klab);
    var dp = 0.0;
    for (var c = 0u; c < D4; c++) {
        sc += dot(q[r * DMAX4 + c], kb[c]);
        dp += dot(go[r * DMAX4 + c], vb[c]);
    }
    let d = select(0.0, live[r] * exp(sc - lse_q[r]) * (dp - delta_q[r]), ok);
    for (var c = 0u; c < D4; c++) {
        dq[r * DMAX4 + c] += d * kb[c];
    }
    // See the header: no two lanes hit one entry between barriers. (The clamped copies past N
    // would hit a live query's entry: they skip the write, as do keys past N.)
    if (live[r] != 0.0 && ok) {
        dtab[qrel[r] + krel] += d;
    }
}

// Key u of the row (broadcast into kb, vb) against this lane's RW queries.
fn step(h: u32, krel: u32, klab: u32, ok: bool) {
    if (RW > 0u) { pair(0u, h, krel, klab, ok); }
    if (RW > 1u) { pair(1u, h, krel, klab, ok); }
    if (RW > 2u) { pair(2u, h, krel, klab, ok); }
    if (RW > 3u) { pair(3u, h, krel, klab, ok); }
    if (RW > 4u) { pair(4u, h, krel, klab, ok); }
    if (RW > 5u) { pair(5u, h, krel, klab, ok); }
    if (RW > 6u) { pair(6u, h, krel, klab, ok); }
    if (RW > 7u) { pair(7u, h, krel, klab, ok); }
}

// Query r of this lane (token i) of window instance g: load q, dO, lse, Delta; clear dq.
fn init(r: u32, g: u32, h: u32, i: u32) {
    let ic = min(i, p.n - 1u);
    let tq = wtok(toks[g * p.n + ic]);
    qrel[r] = tq.rel;
    qlab[r] = tq.label;
    let li = (g * p.heads + h) * p.n + ic;
    lse_q[r] = lse[li];
    delta_q[r] = delta[li];
    live[r] = select(0.0, 1.0, i < p.n);
    for (var c = 0u; c < D4; c++) {
        q[r * DMAX4 + c] = tok_ld4(tq, 0u, h, c) * p.scale;
        go[r * DMAX4 + c] = dy_ld4(tq, h, c);
        dq[r * DMAX4 + c] = vec4<f32>(0.0);
    }
}

// Query r of this lane (token i): its dq row (dqkv for real tokens, dpad for padding).
fn finish(r: u32, g: u32, h: u32, i: u32) {
    if (i >= p.n) { return; }
    let tq = wtok(toks[g * p.n + i]);
    let base = tq.row * 3u * p.c + h * p.hd;   // a dqkv row, or a dpad row for padding
    for (var c = 0u; c < D4; c++) {
        let v = dq[r * DMAX4 + c] * p.scale;
        for (var k = 0u; k < 4u; k++) {
            if (4u * c + k < p.hd) {
                if (tq.real) { dqkv[base + 4u * c + k] = v[k]; } else { dpad[base + 4u * c + k] = v[k]; }
            }
        }
    }
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let h = wg.z;
    let n_tab = (2u * p.od - 1u) * (2u * p.oh - 1u) * (2u * p.ow - 1u);
    for (var e = lane; e < n_tab; e += 8u) {
        dtab[e] = 0.0;
    }
    workgroupBarrier();
    let rel_max = rel_off(p.od * p.oh * p.ow - 1u);
    let g_hi = min(p.n_inst, (wg.y + 1u) * p.chunk);
    let i0 = (wg.x * 8u + lane) * RW;   // this lane's query rows (RW is a multiple of Ow)
    for (var g = wg.y * p.chunk; g < g_hi; g++) {
        if (RW > 0u) { init(0u, g, h, i0); }
        if (RW > 1u) { init(1u, g, h, i0 + 1u); }
        if (RW > 2u) { init(2u, g, h, i0 + 2u); }
        if (RW > 3u) { init(3u, g, h, i0 + 3u); }
        if (RW > 4u) { init(4u, g, h, i0 + 4u); }
        if (RW > 5u) { init(5u, g, h, i0 + 5u); }
        if (RW > 6u) { init(6u, g, h, i0 + 6u); }
        if (RW > 7u) { init(7u, g, h, i0 + 7u); }
        for (var j0 = 0u; j0 < p.n; j0 += p.ow) {
            // Lane l < Ow loads key j0 + l of the row (lanes past Ow load a clamped copy, unused).
            let j = min(j0 + min(lane, p.ow - 1u), p.n - 1u);
            let tk = wtok(toks[g * p.n + j]);
            for (var c = 0u; c < D4; c++) {
                kk[c] = tok_ld4(tk, 1u, h, c);
                vv[c] = tok_ld4(tk, 2u, h, c);
            }
            let krel = rel_max - tk.rel;
            let klab = tk.label;
            // subgroupBroadcast takes a constant lane: the Ow ≤ RW keys are spelled out.
            if (RW > 0u && p.ow > 0u) {
                for (var c = 0u; c < D4; c++) { kb[c] = subgroupBroadcast(kk[c], 0u); vb[c] = subgroupBroadcast(vv[c], 0u); }
                step(h, subgroupBroadcast(krel, 0u), subgroupBroadcast(klab, 0u), j0 + 0u < p.n);
            }
            if (RW > 1u && p.ow > 1u) {
                for (var c = 0u; c < D4; c++) { kb[c] = subgroupBroadcast(kk[c], 1u); vb[c] = subgroupBroadcast(vv[c], 1u); }
                step(h, subgroupBroadcast(krel, 1u), subgroupBroadcast(klab, 1u), j0 + 1u < p.n);
            }
            if (RW > 2u && p.ow > 2u) {
                for (var c = 0u; c < D4; c++) { kb[c] = subgroupBroadcast(kk[c], 2u); vb[c] = subgroupBroadcast(vv[c], 2u); }
                step(h, subgroupBroadcast(krel, 2u), subgroupBroadcast(klab, 2u), j0 + 2u < p.n);
            }
            if (RW > 3u && p.ow > 3u) {
                for (var c = 0u; c < D4; c++) { kb[c] = subgroupBroadcast(kk[c], 3u); vb[c] = subgroupBroadcast(vv[c], 3u); }
                step(h, subgroupBroadcast(krel, 3u), subgroupBroadcast(klab, 3u), j0 + 3u < p.n);
            }
            if (RW > 4u && p.ow > 4u) {
                for (var c = 0u; c < D4; c++) { kb[c] = subgroupBroadcast(kk[c], 4u); vb[c] = subgroupBroadcast(vv[c], 4u); }
                step(h, subgroupBroadcast(krel, 4u), subgroupBroadcast(klab, 4u), j0 + 4u < p.n);
            }
            if (RW > 5u && p.ow > 5u) {
                for (var c = 0u; c < D4; c++) { kb[c] = subgroupBroadcast(kk[c], 5u); vb[c] = subgroupBroadcast(vv[c], 5u); }
                step(h, subgroupBroadcast(krel, 5u), subgroupBroadcast(klab, 5u), j0 + 5u < p.n);
            }
            if (RW > 6u && p.ow > 6u) {
                for (var c = 0u; c < D4; c++) { kb[c] = subgroupBroadcast(kk[c], 6u); vb[c] = subgroupBroadcast(vv[c], 6u); }
                step(h, subgroupBroadcast(krel, 6u), subgroupBroadcast(klab, 6u), j0 + 6u < p.n);
            }
            if (RW > 7u && p.ow > 7u) {
                for (var c = 0u; c < D4; c++) { kb[c] = subgroupBroadcast(kk[c], 7u); vb[c] = subgroupBroadcast(vv[c], 7u); }
                step(h, subgroupBroadcast(krel, 7u), subgroupBroadcast(klab, 7u), j0 + 7u < p.n);
            }
            // The next key row may hit this row's entries from other lanes.
            workgroupBarrier();
        }
        if (RW > 0u) { finish(0u, g, h, i0); }
        if (RW > 1u) { finish(1u, g, h, i0 + 1u); }
        if (RW > 2u) { finish(2u, g, h, i0 + 2u); }
        if (RW > 3u) { finish(3u, g, h, i0 + 3u); }
        if (RW > 4u) { finish(4u, g, h, i0 + 4u); }
        if (RW > 5u) { finish(5u, g, h, i0 + 5u); }
        if (RW > 6u) { finish(6u, g, h, i0 + 6u); }
        if (RW > 7u) { finish(7u, g, h, i0 + 7u); }
    }
    // This workgroup's partial table: part[slot, e, h].
    let slot = wg.y * (((p.n + RW - 1u) / RW + 7u) / 8u) + wg.x;
    for (var e = lane; e < n_tab; e += 8u) {
        part[(slot * n_tab + e) * p.heads + h] = dtab[e];
    }
}
