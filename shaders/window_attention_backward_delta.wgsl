// window_attention_backward_delta — Delta_i = rowsum(dO ∘ O) per (window instance, head, token),
// 0 for padding tokens (their outputs are cropped, so dO = 0). FlashAttention-2 Algorithm 2 line 4.
// Reference: engine/src/ops/window_attention.rs::reference_backward.
// Layout: as window_attention_forward; y, dy f32[B, D, H, W, C]; delta f32[B·nW, heads, N].
// Dispatch: gpu::grid(B·nW·heads·N, WG), one invocation per row (a loop of HD trips).
// #include "lib/index.wgsl"
// #include "lib/window.wgsl"

override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> y: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> delta: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = linear_index(wg, nwg, lid, WG);
    if (r >= p.n_inst * p.heads * p.n) { return; }
    let i = r % p.n;
    let h = (r / p.n) % p.heads;
    let g = r / (p.n * p.heads);
    let tk = win_token(g, i);
    var acc = 0.0;
    if (tk.real) {
        let base = tk.row * p.c + h * p.hd;
        for (var c = 0u; c < p.hd; c++) {
            acc += y[base + c] * dy[base + c];
        }
    }
    delta[r] = acc;
}
