// window_attention_tokens — the per-token descriptors the v3 (subgroup) window attention kernels
// read instead of recomputing the window geometry: one vec2<u32> per (window instance g, token t),
// made once per forward from lib/window.wgsl's win_token (the same index arithmetic, run once per
// token instead of once per token and key block in every kernel: on llvmpipe each of its dozen
// div/mods is a scalar loop over the SIMD lanes, and they were a quarter of the v3 inner loops).
//   x: the token's row in (B, D, H, W, ·) tensors when real, else b·NPAD + pad_index (its row of
//      the padding gradient), bit 31 set;
//   y: rel_off(t) | mask_label << 24 (the shift-region label, 0 when unmasked; < 27).
// Decoded by lib/window.wgsl::wtok. Linear in tokens (8 bytes each): window_attention.rs keeps it
// with lse for the backward.
// Reference: engine/src/ops/window_attention.rs::RefGeom (window_coord, mask), rel_index.
// Layout: toks u32[B·nW, N, 2].
// Dispatch: gpu::grid(B·nW·N, WG), one invocation per token.
// #include "lib/index.wgsl"
// #include "lib/window.wgsl"

override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read_write> toks: array<vec2<u32>>;
@group(0) @binding(1) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = linear_index(wg, nwg, lid, WG);
    if (r >= p.n_inst * p.n) { return; }
    let t = r % p.n;
    let g = r / p.n;
    let tk = win_token(g, t);
    var row = tk.row;
    if (!tk.real) { row = 0x80000000u | (tk.b * p.n_pad + tk.pad); }
    toks[r] = vec2<u32>(row, rel_off(t) | (mask_label(tk) << 24u));
}
