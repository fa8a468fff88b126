// lib/window.wgsl — Video Swin 3D (shifted) window geometry by index arithmetic, shared by the
// window_attention_* kernels (no entry points). Mirrors engine/src/ops/window_attention.rs.
// NOTE: defines `struct Params` for those kernels; each declares `var<uniform> p: Params` as its
//   last binding, and the helpers below read it.
//
// Token t ∈ [0, N) of window instance g ∈ [0, B·nW) (batch-major: g = ((b·nWd + wd)·nWh + wh)·nWw
// + ww, tokens d-major inside a window) sits in the rolled, padded frame at
//   xs = wd·Wd + t / (Wh·Ww),  ys = wh·Wh + (t / Ww) % Wh,  zs = ww·Ww + t % Ww,
// which is the padded grid's position (xs + sd) mod Dp (torch.roll by −shift), and so on per axis.
// Positions past (D, H, W) are zero-padding tokens: their q, k, v are the qkv Linear's bias.

struct Params {
    b: u32, gd: u32, gh: u32, gw: u32,           // batch and token grid (D, H, W)
    wd: u32, wh: u32, ww: u32, n: u32,           // clamped window, N = Wd·Wh·Ww
    sd: u32, sh: u32, sw: u32, masked: u32,      // clamped shift; masked = any shift > 0
    pd: u32, ph: u32, pw: u32, n_win: u32,       // padded grid, windows per batch element
    od: u32, oh: u32, ow: u32, heads: u32,       // the window the bias table was built for
    hd: u32, d4: u32, bk: u32, c: u32,           // head dim, ceil(hd/4), tile rows, C = heads·hd
    scale: f32, n_pad: u32, chunk: u32, n_inst: u32, // n_pad: pad tokens per batch element
}

struct Tok {
    b: u32,
    row: u32,     // offset of the token's row in a (B, D, H, W, ·) tensor, in rows
    real: bool,   // false: a padding token
    pad: u32,     // its index among the batch element's pad tokens (pad_index) when !real
    label: u32,   // shifted-window region id (compute_mask's counter)
}

// compute_mask's region of one axis: slices (−w), (−w, −s), (−s, None) get 0, 1, 2 and later
// slices overwrite earlier ones, so with s = 0 the third slice (0:) covers the whole axis.
fn region(xs: u32, size: u32, w: u32, s: u32) -> u32 {
    if (s == 0u) { return 2u; }
    if (xs < size - w) { return 0u; }
    if (xs < size - s) { return 1u; }
    return 2u;
}

// Index of padded position (x, y, z) among the pad tokens of one batch element: the slab
// x ≥ D first, then y ≥ H (x < D), then z ≥ W (x < D, y < H).
fn pad_index(x: u32, y: u32, z: u32) -> u32 {
    let s1 = (p.pd - p.gd) * p.ph * p.pw;
    let s2 = p.gd * (p.ph - p.gh) * p.pw;
    if (x >= p.gd) { return ((x - p.gd) * p.ph + y) * p.pw + z; }
    if (y >= p.gh) { return s1 + (x * (p.ph - p.gh) + (y - p.gh)) * p.pw + z; }
    return s1 + s2 + (x * p.gh + y) * (p.pw - p.gw) + (z - p.gw);
}

fn win_token(g: u32, t: u32) -> Tok {
    let nwh = p.ph / p.wh;
    let nww = p.pw / p.ww;
    let b = g / p.n_win;
    let w = g % p.n_win;
    let xs = (w / (nwh * nww)) * p.wd + t / (p.wh * p.ww);
    let ys = ((w / nww) % nwh) * p.wh + (t / p.ww) % p.wh;
    let zs = (w % nww) * p.ww + t % p.ww;
    let x = (xs + p.sd) % p.pd;
    let y = (ys + p.sh) % p.ph;
    let z = (zs + p.sw) % p.pw;
    var tk: Tok;
    tk.b = b;
    tk.real = x < p.gd && y < p.gh && z < p.gw;
    tk.row = ((b * p.gd + min(x, p.gd - 1u)) * p.gh + min(y, p.gh - 1u)) * p.gw + min(z, p.gw - 1u);
    tk.pad = 0u;
    if (!tk.real) { tk.pad = pad_index(x, y, z); }
    tk.label = 9u * region(xs, p.pd, p.wd, p.sd) + 3u * region(ys, p.ph, p.wh, p.sh)
        + region(zs, p.pw, p.ww, p.sw);
    return tk;
}

// relative_position_index[i, j] of the ORIGINAL window (Od, Oh, Ow) at flat i, j < N: the
// official code slices index[:N, :N] when the window is clamped, so i and j are decomposed with
// the original window's dims even then. The index is linear in the coordinates:
//   index[i, j] = rel_off(i) + (rel_off(N0 − 1) − rel_off(j)),  N0 = Od·Oh·Ow,
// with rel_off(d, h, w) = (d·(2Oh − 1) + h)·(2Ow − 1) + w, so kernels compute rel_off once per
// query and rel_key once per key (div/mod are scalarised per SIMD lane on llvmpipe: never per pair).
fn rel_off(t: u32) -> u32 {
    let d = t / (p.oh * p.ow);
    let h = (t / p.ow) % p.oh;
    let w = t % p.ow;
    return (d * (2u * p.oh - 1u) + h) * (2u * p.ow - 1u) + w;
}

// The key's share of index[i, j]: rel_off(N0 − 1) − rel_off(j) (≥ 0: rel_off grows with t).
fn rel_key(j: u32) -> u32 {
    return rel_off(p.od * p.oh * p.ow - 1u) - rel_off(j);
}

fn rel_index(i: u32, j: u32) -> u32 {
    return rel_off(i) + rel_key(j);
}

// Shift-region label of a token as the kernels compare it: 0 for every token when no shift is
// applied, so `mask_pair` needs no test of p.masked per pair.
fn mask_label(tk: Tok) -> u32 {
    return select(0u, tk.label, p.masked != 0u);
}

// −100 between tokens of different shift regions (official compute_mask: −100, not −∞), given
// mask_label of both.
fn mask_pair(li: u32, lj: u32) -> f32 {
    return select(0.0, -100.0, li != lj);
}

// The additive logit terms of pair (i, j) in head h: the bias-table entry, and −100 between
// tokens of different shift regions (official compute_mask: −100, not −∞).
fn mask_of(li: u32, lj: u32) -> f32 {
    return select(0.0, -100.0, p.masked != 0u && li != lj);
}

// A token as the v3 kernels read it from window_attention_tokens.wgsl's descriptors.
struct WTok {
    real: bool,
    row: u32,     // real: its row in (B, D, H, W, ·) tensors; padding: b·NPAD + pad_index
    rel: u32,     // rel_off(t)
    label: u32,   // mask_label
}

fn wtok(d: vec2<u32>) -> WTok {
    var tk: WTok;
    tk.real = (d.x & 0x80000000u) == 0u;
    tk.row = d.x & 0x7fffffffu;
    tk.rel = d.y & 0xffffffu;
    tk.label = d.y >> 24u;
    return tk;
}

// rel_key of a token from its rel_off (see rel_key).
fn rel_key_of(rel: u32) -> u32 {
    return rel_off(p.od * p.oh * p.ow - 1u) - rel;
}
