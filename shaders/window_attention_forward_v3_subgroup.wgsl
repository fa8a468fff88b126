// window_attention_forward_v3_subgroup — the fused Video Swin window attention forward of
// window_attention_forward.wgsl (same formula, bindings, outputs and lse), for subgroups of ≥ 8
// lanes: a workgroup is one subgroup of 8 lanes and owns R·8 query tokens of one (window, head).
// v3: no workgroup memory. llvmpipe turns every load (workgroup memory included) into a loop over
//     the lanes, so keys are streamed 8 at a time: lane l loads key j0 + l (its K and V rows, bias
//     share and shift label) and subgroupBroadcast hands each key to all lanes, every lane scoring
//     it against its R queries (register blocking). Per block of 8 keys the R·8 logits stay in
//     registers: one max, one rescale, one exp per key (FlashAttention-2). The relative-position
//     index is rel_off(i) + rel_key(j) (lib/window.wgsl): no div/mod per pair.
// Reference: engine/src/ops/window_attention.rs::reference.  Backward: window_attention_backward_*.
// Layout: as window_attention_forward.wgsl.
// Dispatch: (ceil(N / (8·R)), B·nW, heads) workgroups of 8 invocations (window_attention.rs checks
//   SUBGROUP with subgroups of ≥ 8 lanes first).
// v3.1: the window geometry comes from window_attention_tokens.wgsl's per-token descriptors
//     (one load per token instead of a dozen div/mods), and with HD_EXACT (head dim a multiple
//     of 4, every seed model) the vec4 loads skip their per-component bounds tests.
// #include "lib/window.wgsl"
// #include "lib/window_v3.wgsl"
// #bounded-loops

const DMAX4: u32 = 32u;     // head dim ≤ 128
// ceil(HD / 4), set by the host: constant loop bounds unroll the head-dim loops.
override D4: u32 = 8u;
const R: u32 = 4u;          // query tokens per lane (spelled out below: init(0..3), ...)
const NEG: f32 = -3.0e38;   // finite "−∞": exp(NEG − m) is 0, never NaN

@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read> qkv_bias: array<f32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read> toks: array<vec2<u32>>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

// This lane's R queries (pre-scaled) and output accumulators: index r·DMAX4 + c.
var<private> q: array<vec4<f32>, 128>;
var<private> acc: array<vec4<f32>, 128>;
var<private> qrel: array<u32, R>;   // rel_off(i)·heads + h: the query's share of the table row
var<private> qlab: array<u32, R>;
var<private> m: array<f32, R>;
var<private> l: array<f32, R>;
// The block's logits: s[r·8 + u] = query r of this lane against key j0 + u.
var<private> s: array<f32, 32>;
// This lane's key of the block (j0 + lane) and, broadcast, the key being scored.
var<private> kk: array<vec4<f32>, DMAX4>;
var<private> vv: array<vec4<f32>, DMAX4>;
var<private> kb: array<vec4<f32>, DMAX4>;

// Logits of key u of the block (its K row broadcast into kb) against query r of this lane.
// NOTE: every loop over r is spelled out as R calls with a literal r (see main): after inlining
// the private arrays then have constant indices only and live in registers; a loop over r that
// the compiler does not unroll leaves them in memory, indexed per lane (3× slower on llvmpipe).
fn score(r: u32, u: u32, krel: u32, klab: u32, ok: bool) {
    var sc = table[qrel[r] + krel] + mask_pair(qlab[r], klab);
    for (var c = 0u; c < D4; c++) {
        sc += dot(q[r * DMAX4 + c], kb[c]);
    }
    s[r * 8u + u] = select(NEG, sc, ok);
}

fn score4(u: u32, krel: u32, klab: u32, ok: bool) {
    score(0u, u, krel, klab, ok);
    score(1u, u, krel, klab, ok);
    score(2u, u, krel, klab, ok);
    score(3u, u, krel, klab, ok);
}

// One max and one rescale per block of 8 keys for query r.
fn rescale(r: u32) {
    var mt = m[r];
    for (var u = 0u; u < 8u; u++) {
        mt = max(mt, s[r * 8u + u]);
    }
    let corr = exp(m[r] - mt);
    l[r] *= corr;
    for (var c = 0u; c < D4; c++) {
        acc[r * DMAX4 + c] *= corr;
    }
    m[r] = mt;
}

// P·V of key u of the block (its V row broadcast into kb) for query r (m is the block's max).
fn accumulate(r: u32, u: u32) {
    let pj = exp(s[r * 8u + u] - m[r]);
    l[r] += pj;
    for (var c = 0u; c < D4; c++) {
        acc[r * DMAX4 + c] += pj * kb[c];
    }
}

fn accumulate4(u: u32) {
    accumulate(0u, u);
    accumulate(1u, u);
    accumulate(2u, u);
    accumulate(3u, u);
}

// Query r of this lane: load q, clear the accumulators.
fn init(r: u32, g: u32, h: u32, i: u32) {
    let tq = wtok(toks[g * p.n + min(i, p.n - 1u)]);
    qrel[r] = tq.rel * p.heads + h;
    qlab[r] = tq.label;
    for (var c = 0u; c < D4; c++) {
        q[r * DMAX4 + c] = tok_ld4(tq, 0u, h, c) * p.scale;
        acc[r * DMAX4 + c] = vec4<f32>(0.0);
    }
    m[r] = NEG;
    l[r] = 0.0;
}

// Query r of this lane (token i): lse and, for real tokens, the output row.
fn finish(r: u32, g: u32, h: u32, i: u32) {
    if (i >= p.n) { return; }
    lse[(g * p.heads + h) * p.n + i] = m[r] + log(l[r]);
    let tq = wtok(toks[g * p.n + i]);
    if (!tq.real) { return; }   // cropped: padding tokens have no output
    let inv = 1.0 / l[r];
    let obase = tq.row * p.c + h * p.hd;
    for (var c = 0u; c < D4; c++) {
        let o = acc[r * DMAX4 + c] * inv;
        if (4u * c < p.hd) { y[obase + 4u * c] = o.x; }
        if (4u * c + 1u < p.hd) { y[obase + 4u * c + 1u] = o.y; }
        if (4u * c + 2u < p.hd) { y[obase + 4u * c + 2u] = o.z; }
        if (4u * c + 3u < p.hd) { y[obase + 4u * c + 3u] = o.w; }
    }
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let g = wg.y;
    let h = wg.z;
    let i0 = wg.x * 8u * R + lane;
    let rel_max = rel_off(p.od * p.oh * p.ow - 1u);
    init(0u, g, h, i0);
    init(1u, g, h, i0 + 8u);
    init(2u, g, h, i0 + 16u);
    init(3u, g, h, i0 + 24u);
    // Every lane runs every block (keys past N are loaded as zeros and scored NEG): the
    // broadcasts need all 8.
    for (var j0 = 0u; j0 < p.n; j0 += 8u) {
        let j = min(j0 + lane, p.n - 1u);
        let ok = j0 + lane < p.n;
        let tk = wtok(toks[g * p.n + j]);
        for (var c = 0u; c < D4; c++) {
            kk[c] = select(vec4<f32>(0.0), tok_ld4(tk, 1u, h, c), ok);
            vv[c] = select(vec4<f32>(0.0), tok_ld4(tk, 2u, h, c), ok);
        }
        let krel = (rel_max - tk.rel) * p.heads;
        let klab = tk.label;
        // subgroupBroadcast takes a constant lane: the 8 keys are spelled out.
        for (var c = 0u; c < D4; c++) { kb[c] = subgroupBroadcast(kk[c], 0u); }
        score4(0u, subgroupBroadcast(krel, 0u), subgroupBroadcast(klab, 0u), j0 + 0u < p.n);
        for (var c = 0u; c < D4; c++) { kb[c] = subgroupBroadcast(kk[c], 1u); }
        score4(1u, subgroupBroadcast(krel, 1u), subgroupBroadcast(klab, 1u), j0 + 1u < p.n);
        for (var c = 0u; c < D4; c++) { kb[c] = subgroupBroadcast(kk[c], 2u); }
        score4(2u, subgroupBroadcast(krel, 2u), subgroupBroadcast(klab, 2u), j0 + 2u < p.n);
        for (var c = 0u; c < D4; c++) { kb[c] = subgroupBroadcast(kk[c], 3u); }
        score4(3u, subgroupBroadcast(krel, 3u), subgroupBroadcast(klab, 3u), j0 + 3u < p.n);
        for (var c = 0u; c < D4; c++) { kb[c] = subgroupBroadcast(kk[c], 4u); }
        score4(4u, subgroupBroadcast(krel, 4u), subgroupBroadcast(klab, 4u), j0 + 4u < p.n);
        for (var c = 0u; c < D4; c++) { kb[c] = subgroupBroadcast(kk[c], 5u); }
        score4(5u, subgroupBroadcast(krel, 5u), subgroupBroadcast(klab, 5u), j0 + 5u < p.n);
        for (var c = 0u; c < D4; c++) { kb[c] = subgroupBroadcast(kk[c], 6u); }
        score4(6u, subgroupBroadcast(krel, 6u), subgroupBroadcast(klab, 6u), j0 + 6u < p.n);
        for (var c = 0u; c < D4; c++) { kb[c] = subgroupBroadcast(kk[c], 7u); }
        score4(7u, subgroupBroadcast(krel, 7u), subgroupBroadcast(klab, 7u), j0 + 7u < p.n);
        // One max and one rescale per block of 8 keys (key j0 is always real: m stays finite).
        rescale(0u);
        rescale(1u);
        rescale(2u);
        rescale(3u);
        for (var c = 0u; c < D4; c++) { kb[c] = subgroupBroadcast(vv[c], 0u); }
        accumulate4(0u);
        for (var c = 0u; c < D4; c++) { kb[c] = subgroupBroadcast(vv[c], 1u); }
        accumulate4(1u);
        for (var c = 0u; c < D4; c++) { kb[c] = subgroupBroadcast(vv[c], 2u); }
        accumulate4(2u);
        for (var c = 0u; c < D4; c++) { kb[c] = subgroupBroadcast(vv[c], 3u); }
        accumulate4(3u);
        for (var c = 0u; c < D4; c++) { kb[c] = subgroupBroadcast(vv[c], 4u); }
        accumulate4(4u);
        for (var c = 0u; c < D4; c++) { kb[c] = subgroupBroadcast(vv[c], 5u); }
        accumulate4(5u);
        for (var c = 0u; c < D4; c++) { kb[c] = subgroupBroadcast(vv[c], 6u); }
        accumulate4(6u);
        for (var c = 0u; c < D4; c++) { kb[c] = subgroupBroadcast(vv[c], 7u); }
        accumulate4(7u);
    }
    finish(0u, g, h, i0);
    finish(1u, g, h, i0 + 8u);
    finish(2u, g, h, i0 + 16u);
    finish(3u, g, h, i0 + 24u);
}
