// pooled_attention_backward_combine — out = Σ_s part[s]: sums the S split partials of
// pooled_attention_backward_dq (dq and d_rel, over key splits) and pooled_attention_backward_dkv
// (dk and dv, over query splits). A deterministic sum in a fixed order, no atomics.
// Reference: engine/src/ops/pooled_attention.rs::reference_backward.
// Layout: part f32[S, TOTAL]  →  out f32[TOTAL].
// Dispatch: gpu::grid(TOTAL, WG), one invocation per element (a loop of S trips).
// #include "lib/index.wgsl"

struct Params {
    bh: u32,
    nq: u32,
    nk: u32,
    d: u32,
    cls: u32,
    kt: u32,
    kh: u32,
    kw: u32,
    r: u32,
    bk: u32,
    split: u32,
    n_split: u32,
    scale: f32,
    total: u32,   // elements of one partial
    _pad0: u32,
    _pad1: u32,
}
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> part: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = linear_index(wg, nwg, lid, WG);
    if (e >= p.total) { return; }
    var acc = 0.0;
    for (var s = 0u; s < p.n_split; s++) {
        acc += part[s * p.total + e];
    }
    out[e] = acc;
}
