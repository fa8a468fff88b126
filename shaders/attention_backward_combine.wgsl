// attention_backward_combine — dqkv = Σ_s dqkv_part[s]: sums the S split partials written by
// attention_backward_dq (over key splits) and attention_backward_dkv (over query splits).
// A deterministic sum in a fixed order, no atomics.
// Reference: engine/src/ops/attention.rs::reference_backward.
// Layout: part f32[S, B, N, 3, H, D]  →  dqkv f32[B, N, 3, H, D] (TOTAL elements).
// Dispatch: gpu::grid(TOTAL, WG), one invocation per element (a loop of S trips).
// #include "lib/index.wgsl"

struct Params {
    b: u32,
    n: u32,
    h: u32,
    d: u32,
    d4: u32,      // ceil(D / 4): vec4 slots per row
    bk: u32,      // rows per workgroup-memory tile (bk · d4 ≤ TILE)
    split: u32,   // rows of the looped-over side per split (a multiple of bk)
    n_split: u32,
    scale: f32,
    total: u32,
    _pad0: u32,
    _pad1: u32,
}
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> part: array<f32>;
@group(0) @binding(1) var<storage, read_write> dqkv: array<f32>;
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
    dqkv[e] = acc;
}
