// lib/grid.wgsl — attention groups on a (T, H, W) token grid by index arithmetic, shared by the
// grid_attention_* kernels (no entry points). Mirrors engine/src/ops/grid_attention.rs.
// NOTE: defines `struct Params` for those kernels; each declares `var<uniform> p: Params` as its
//   last binding, and the helpers below read it.
//
// Axis a (0 = T, 1 = H, 2 = W) of size n = dims[a] is cut into groups by a window w = win[a] and
// a dilation s = dil[a]: group index ga = bi·s + r (block bi, residue r) holds the positions
//   x = bi·w·s + k·s + r,  k ∈ [0, len),  len = min(w, ceil((n − base)/s)),  base = bi·w·s + r.
// (w = 1, s = 1: each position alone, the axis is batched; w = n: the whole axis; s = 1: blocks
// of w; w = ceil(n/s): every s-th position.) The host guarantees base < n, so no group is empty.
// A group is the product of its three axis groups, its members ordered (kt, kh, kw) row-major;
// grid position (t, h, w) is token cls_off + t·strides.x + h·strides.y + w·strides.z of its batch
// row, so any token order (t-major, TimeSformer's space-major (h w t), …) is read where it lies.
// With cls = 2 (shared) the cls token (token 0) is member 0 of every group, before the grid
// members; with cls = 1 (excluded) it sits at token 0 but belongs to no group.

struct Params {
    b: u32, n_tok: u32, c3: u32, c_out: u32,       // batch, tokens a batch row (cls included),
                                                   // qkv row width 3·heads·HD, y row width
    hd: u32, d4: u32, bk: u32, cls: u32,           // head dim, ceil(HD/4), tile rows; cls 0/1/2
    heads: u32, h0: u32, o0: u32, nh: u32,         // qkv heads, the part's first qkv head, its
                                                   // first output head, and its head count
    n_grp: u32, lmax: u32, n_inst: u32, scale: f32, // groups a batch element, most members a
                                                   // group, instances B·G·nh
    dims: vec4<u32>,
    strides: vec4<u32>,
    win: vec4<u32>,
    dil: vec4<u32>,
    ngrp: vec4<u32>,                               // groups per axis
}

struct Group {
    base: vec3<u32>,  // first position per axis
    len: vec3<u32>,   // positions per axis
    n: u32,           // members, the shared cls included
}

fn group_of(g: u32) -> Group {
    let ga = vec3<u32>(g / (p.ngrp.y * p.ngrp.z), (g / p.ngrp.z) % p.ngrp.y, g % p.ngrp.z);
    var gr: Group;
    for (var a = 0u; a < 3u; a++) {
        let s = p.dil[a];
        let base = (ga[a] / s) * p.win[a] * s + ga[a] % s;
        gr.base[a] = base;
        gr.len[a] = min(p.win[a], (p.dims[a] - base + s - 1u) / s);
    }
    gr.n = gr.len.x * gr.len.y * gr.len.z + select(0u, 1u, p.cls == 2u);
    return gr;
}

// True when member m of a group is the shared cls token.
fn is_cls(m: u32) -> bool {
    return p.cls == 2u && m == 0u;
}

// Token index (within its batch row) of member m of group gr.
fn member_token(gr: Group, m: u32) -> u32 {
    if (is_cls(m)) { return 0u; }
    let k = m - select(0u, 1u, p.cls == 2u);
    let kw = k % gr.len.z;
    let kh = (k / gr.len.z) % gr.len.y;
    let kt = k / (gr.len.z * gr.len.y);
    let x = gr.base + vec3<u32>(kt, kh, kw) * p.dil.xyz;
    return select(0u, 1u, p.cls != 0u) + dot(x, p.strides.xyz);
}

// Offset of slot t ∈ {q, k, v}, part head h, of token tok in batch row b of qkv (B, n_tok, 3, heads, HD).
fn qkv_row(b: u32, tok: u32, t: u32, h: u32) -> u32 {
    return (b * p.n_tok + tok) * p.c3 + (t * p.heads + p.h0 + h) * p.hd;
}

// Offset of part head h of token tok in batch row b of y (or dy): (B, n_tok, C_out).
fn out_row(b: u32, tok: u32, h: u32) -> u32 {
    return (b * p.n_tok + tok) * p.c_out + (p.o0 + h) * p.hd;
}

// Instance index of a launch folded over (y, z) by the host (B·G·nh may pass 65,535).
fn instance(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.y + wg.z * nwg.y;
}
