// grid_attention_forward_cls — the cls row of y: for a shared cls token (TimeSformer's spatial
// attention, seed-models.md §2.1/§2.3) the mean over the G groups of its per-group outputs,
//   y[b, 0, (o0 + h)·HD + c] = (1/G) · Σ_g cls_o[b, g, h, c];
// for an excluded cls token (TimeSformer's temporal attention) zero: it takes no part.
// Reference: engine/src/ops/grid_attention.rs::reference.  Backward: grid_attention_backward_cls.
// Layout: as grid_attention_forward; cls_o f32[B, G, nh, HD]; y f32[B, n_tok, C_out].
// Dispatch: gpu::grid(B·nh·HD, WG), one invocation per output element (a loop of G trips;
//   the host bounds G by the loop budget).
// #include "lib/grid.wgsl"
// #include "lib/index.wgsl"

override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> cls_o: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = linear_index(wg, nwg, lid, WG);
    if (e >= p.b * p.nh * p.hd) { return; }
    let c = e % p.hd;
    let h = (e / p.hd) % p.nh;
    let b = e / (p.hd * p.nh);
    var acc = 0.0;
    if (p.cls == 2u) {
        for (var g = 0u; g < p.n_grp; g++) {
            acc += cls_o[((b * p.n_grp + g) * p.nh + h) * p.hd + c];
        }
        acc = acc / f32(p.n_grp);
    }
    y[out_row(b, 0u, h) + c] = acc;
}
