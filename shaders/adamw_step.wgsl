// adamw_step — one AdamW update (Loshchilov & Hutter, arXiv:1711.05101; PyTorch AdamW):
//   p ← p − lr·wd·p
//   m ← β1·m + (1 − β1)·g          v ← β2·v + (1 − β2)·g²
//   p ← p − lr · (m / c1) / (√(v / c2) + eps),   c1 = 1 − β1ᵗ, c2 = 1 − β2ᵗ
// Reference: engine/src/optim.rs::adamw_reference.  Not differentiated (an optimiser step).
// Layout: g, p, m, v contiguous f32[N], updated in place.  Dispatch: gpu::grid(N, WG).
// #include "lib/index.wgsl"

struct Params { n: u32, lr: f32, beta1: f32, beta2: f32, eps: f32, wd: f32, c1: f32, c2: f32 }
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> g: array<f32>;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.n) { return; }
    let gi = g[i];
    var w = param[i] * (1.0 - p.lr * p.wd);
    let mi = p.beta1 * m[i] + (1.0 - p.beta1) * gi;
    let vi = p.beta2 * v[i] + (1.0 - p.beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    param[i] = w - p.lr * (mi / p.c1) / (sqrt(vi / p.c2) + p.eps);
}
