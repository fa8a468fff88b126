// gather_forward — y[l, c] = x[idx[l], c]: rows of a table picked by integer indices
//   (embedding lookup, position tables; PyTorch index_select along dim 0).
// Reference: engine/src/ops/gather.rs::reference.  Backward: gather_backward.wgsl (scatter-add).
// Layout: x contiguous (V, D) (D = product of the table's trailing dims); idx u32[L], every
//         value < V (checked on the host); y contiguous (L, D), N = L·D.
// Dispatch: gpu::grid(N, WG), one invocation per output element.
// #include "lib/index.wgsl"

struct Params {
    n: u32,   // N = L·D
    d: u32,   // D
}
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> idx: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.n) { return; }
    let l = i / p.d;
    let c = i % p.d;
    y[i] = x[idx[l] * p.d + c];
}
