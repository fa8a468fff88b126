// window_attention_backward_table — gradient of the relative-position bias table, gathered per
// table entry (no float atomics, deterministic):
//   dtable[e, h] = Σ_windows Σ_{(i,j): index[i,j] = e} dS_ij,
//   dS_ij = P_ij·(dO_i·v_j − Delta_i),  P_ij = exp(scale·q_i·k_j + table[e, h] + mask_ij − lse_i)
// recomputing each pair's logit and dP from q, k, v, dO (as the dq/dkv passes do).
// One invocation per (chunk of CHUNK window instances, entry e, head h); the pairs of entry e are
// enumerated directly from its offset (rd, rh, rw), so an invocation loops over
// CHUNK·(pairs of e)·(HD/4 + 1) ≤ the host's loop budget. The chunk partials are then summed by
// reduce_forward (a fixed-order tree).
// Reference: engine/src/ops/window_attention.rs::reference_backward.
// Layout: as window_attention_backward_dq; part f32[NCHUNK, T, heads], T = (2Od−1)(2Oh−1)(2Ow−1).
// Dispatch: gpu::grid(NCHUNK·T·heads, WG).
// #include "lib/index.wgsl"
// #include "lib/window.wgsl"

override WG: u32 = 64u;
override D4: u32 = 8u;   // ceil(HD / 4), set by the host: a constant loop bound (v2)

@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read> qkv_bias: array<f32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;
@group(0) @binding(5) var<storage, read> delta: array<f32>;
@group(0) @binding(6) var<storage, read_write> part: array<f32>;
@group(0) @binding(7) var<uniform> p: Params;

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

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = linear_index(wg, nwg, lid, WG);
    let t2h = 2u * p.oh - 1u;
    let t2w = 2u * p.ow - 1u;
    let n_entries = (2u * p.od - 1u) * t2h * t2w;
    let n_chunks = (p.n_inst + p.chunk - 1u) / p.chunk;
    if (r >= n_chunks * n_entries * p.heads) { return; }
    let h = r % p.heads;
    let e = (r / p.heads) % n_entries;
    let ch = r / (p.heads * n_entries);
    // Offset of entry e, shifted by (O − 1): i − j = (ed, eh, ew) − (O − 1) per axis.
    let ed = e / (t2h * t2w);
    let eh = (e / t2w) % t2h;
    let ew = e % t2w;
    let bias = table[e * p.heads + h];
    var acc = 0.0;
    let g_hi = min(p.n_inst, (ch + 1u) * p.chunk);
    for (var g = ch * p.chunk; g < g_hi; g++) {
        // i's coordinates range where j = i − offset stays inside the original window
        for (var di = max(ed, p.od - 1u) - (p.od - 1u); di < min(p.od, ed + 1u); di++) {
            for (var hi = max(eh, p.oh - 1u) - (p.oh - 1u); hi < min(p.oh, eh + 1u); hi++) {
                for (var wi = max(ew, p.ow - 1u) - (p.ow - 1u); wi < min(p.ow, ew + 1u); wi++) {
                    let i = (di * p.oh + hi) * p.ow + wi;
                    let j = ((di + p.od - 1u - ed) * p.oh + (hi + p.oh - 1u - eh)) * p.ow
                        + (wi + p.ow - 1u - ew);
                    if (i >= p.n || j >= p.n) { continue; }
                    let tq = win_token(g, i);
                    if (!tq.real) { continue; }   // padding queries: dO = 0, so dS = 0
                    let tk = win_token(g, j);
                    var sc = 0.0;
                    var dp = 0.0;
                    for (var c = 0u; c < D4; c++) {
                        sc += dot(tok_ld4(tq, 0u, h, c), tok_ld4(tk, 1u, h, c));
                        dp += dot(dy_ld4(tq, h, c), tok_ld4(tk, 2u, h, c));
                    }
                    let li = (g * p.heads + h) * p.n + i;
                    let s = p.scale * sc + bias + mask_of(tq.label, tk.label);
                    acc += exp(s - lse[li]) * (dp - delta[li]);
                }
            }
        }
    }
    part[r] = acc;
}
