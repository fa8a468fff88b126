// grid_attention_backward_cls — d qkv of a shared cls token: it is a query, key and value member
// of every group, so its gradient is the fixed-order sum over the G groups of the partials that
// grid_attention_backward_dq and _dkv wrote,
//   dqkv[b, 0, t, h0 + h, c] = Σ_g dcls[b, g, h, t, c]   (t ∈ {q, k, v}).
// Reference: engine/src/ops/grid_attention.rs::reference_backward.
// Layout: dcls f32[B, G, nh, 3, HD]; dqkv f32[B, n_tok, 3, heads, HD].
// Dispatch: gpu::grid(B·nh·3·HD, WG), one invocation per element (a loop of G trips).
// #include "lib/grid.wgsl"
// #include "lib/index.wgsl"

override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> dcls: array<f32>;
@group(0) @binding(1) var<storage, read_write> dqkv: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = linear_index(wg, nwg, lid, WG);
    if (e >= p.b * p.nh * 3u * p.hd) { return; }
    let c = e % p.hd;
    let t = (e / p.hd) % 3u;
    let h = (e / (3u * p.hd)) % p.nh;
    let b = e / (3u * p.hd * p.nh);
    var acc = 0.0;
    for (var g = 0u; g < p.n_grp; g++) {
        acc += dcls[(((b * p.n_grp + g) * p.nh + h) * 3u + t) * p.hd + c];
    }
    dqkv[qkv_row(b, 0u, t, h) + c] = acc;
}
