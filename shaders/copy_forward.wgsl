// copy_forward — y[i] = x[i]  (in-place assignment for the optimiser and weight loading)
// Reference: engine/src/gpu.rs (Gpu::copy).  No backward (not recorded by autograd).
// Layout: x, y contiguous f32[N].  Dispatch: gpu::grid(N, WG).
// #include "lib/index.wgsl"

struct Params { n: u32 }
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.n) { return; }
    y[i] = x[i];
}
