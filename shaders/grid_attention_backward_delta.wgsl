// grid_attention_backward_delta — Delta_i = Σ_c dO_ic · O_ic = rowsum(dO ∘ O) per (instance,
// member): the softmax backward's correction term (FlashAttention-2, arXiv:2307.08691,
// Algorithm 2 line 4). A grid member's O and dO are its rows of y and dy; the shared cls member
// of group g has O = cls_o[g] and dO = dy_cls / G (y_cls is the mean over the G groups).
// Reference: engine/src/ops/grid_attention.rs::reference_backward.
// Layout: as grid_attention_forward; y, dy f32[B, n_tok, C_out]; cls_o f32[B, G, nh, HD];
//   delta f32[B, G, nh, L] (0 past a group's members).
// Dispatch: gpu::grid(B·G·nh·L, WG), one invocation per row (a loop of HD trips).
// #include "lib/grid.wgsl"
// #include "lib/index.wgsl"

override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> y: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> cls_o: array<f32>;
@group(0) @binding(3) var<storage, read_write> delta: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = linear_index(wg, nwg, lid, WG);
    if (r >= p.n_inst * p.lmax) { return; }
    let i = r % p.lmax;
    let inst = r / p.lmax;
    let h = inst % p.nh;
    let g = (inst / p.nh) % p.n_grp;
    let b = inst / (p.nh * p.n_grp);
    let gr = group_of(g);
    var acc = 0.0;
    if (i < gr.n) {
        if (is_cls(i)) {
            let gbase = out_row(b, 0u, h);
            for (var c = 0u; c < p.hd; c++) {
                acc += cls_o[inst * p.hd + c] * dy[gbase + c];
            }
            acc = acc / f32(p.n_grp);
        } else {
            let base = out_row(b, member_token(gr, i), h);
            for (var c = 0u; c < p.hd; c++) {
                acc += y[base + c] * dy[base + c];
            }
        }
    }
    delta[r] = acc;
}
