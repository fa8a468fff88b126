// lib/window_v3.wgsl — the qkv loads of the v3 (subgroup) window attention kernels, shared by
// window_attention_{forward,backward_dq,backward_dkv}_v3_subgroup.wgsl (no entry points).
// NOTE: reads the including kernel's `qkv` and `qkv_bias` bindings and its `p: Params`
//   (lib/window.wgsl, included first).

// hd % 4 == 0, set by the host: whole vec4s, no per-component tests.
override HD_EXACT: bool = false;

// Components 4c..4c+3 of slot t ∈ {q, k, v}, head h, of a window token: its qkv row, or the qkv
// Linear's bias for a padding token (zero-padding happens before the Linear in Video Swin).
fn tok_ld4(tk: WTok, t: u32, h: u32, c: u32) -> vec4<f32> {
    let off = t * p.c + h * p.hd;
    let e = 4u * c;
    var v = vec4<f32>(0.0);
    if (tk.real) {
        let base = tk.row * 3u * p.c + off + e;
        if (HD_EXACT) { return vec4<f32>(qkv[base], qkv[base + 1u], qkv[base + 2u], qkv[base + 3u]); }
        if (e < p.hd) { v.x = qkv[base]; }
        if (e + 1u < p.hd) { v.y = qkv[base + 1u]; }
        if (e + 2u < p.hd) { v.z = qkv[base + 2u]; }
        if (e + 3u < p.hd) { v.w = qkv[base + 3u]; }
    } else {
        let base = off + e;
        if (HD_EXACT) { return vec4<f32>(qkv_bias[base], qkv_bias[base + 1u], qkv_bias[base + 2u], qkv_bias[base + 3u]); }
        if (e < p.hd) { v.x = qkv_bias[base]; }
        if (e + 1u < p.hd) { v.y = qkv_bias[base + 1u]; }
        if (e + 2u < p.hd) { v.z = qkv_bias[base + 2u]; }
        if (e + 3u < p.hd) { v.w = qkv_bias[base + 3u]; }
    }
    return v;
}
