// sgd_step — one SGD update with momentum as PyTorch's torch.optim.SGD (weight_decay, momentum,
// dampening, nesterov):
//   g ← g + wd·p
//   b ← g                                  on the first step (FIRST = 1; PyTorch clones g)
//   b ← μ·b + (1 − dampening)·g            afterwards
//   d ← g + μ·b  (nesterov)   or   d ← b
//   p ← p − lr·d
// With μ = 0 the buffer is unused and d = g (plain SGD). The buffer is written even then, so a
// later change of μ starts from the last gradient, as in PyTorch's first-step clone.
// Reference: engine/src/optim.rs::sgd_reference.  Not differentiated (an optimiser step).
// Layout: g, p, b contiguous f32[N], p and b updated in place.  Dispatch: gpu::grid(N, WG).
// #include "lib/index.wgsl"

struct Params { n: u32, lr: f32, momentum: f32, dampening: f32, wd: f32, nesterov: u32, first: u32, _pad: u32 }
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> g: array<f32>;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read_write> buf: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.n) { return; }
    let w = param[i];
    let gi = g[i] + p.wd * w;
    var b = gi;
    if (p.first == 0u) {
        b = p.momentum * buf[i] + (1.0 - p.dampening) * gi;
    }
    buf[i] = b;
    var d = b;
    if (p.nesterov != 0u) {
        d = gi + p.momentum * b;
    }
    if (p.momentum == 0.0) {
        d = gi;
    }
    param[i] = w - p.lr * d;
}
