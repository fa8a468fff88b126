// batch_norm_backward — dx of BatchNorm, with x̂ = (x − mean[c])·rstd[c], rstd = rsqrt(var + eps)
// and the per-channel sums db = Σ dy, dw = Σ dy·x̂ over the M = N·S elements of channel c:
//   training (batch statistics):  dx = w[c]·rstd[c]·(dy − db[c]/M − x̂·dw[c]/M)
//   eval (running statistics, constants): dx = w[c]·rstd[c]·dy
// Reference: engine/src/ops/batch_norm.rs::reference_backward.
// Layout: x, dy, dx contiguous f32[N, C, S]; mean, var, w, db, dw f32[C].
// Dispatch: gpu::grid(N·C·S, WG), one element per invocation. `train` is a uniform, not an
// override, so every binding stays in use in both modes.
// #include "lib/index.wgsl"

struct Params { n: u32, c: u32, s: u32, train: u32, m: f32, eps: f32 }
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> mean: array<f32>;
@group(0) @binding(3) var<storage, read> var_: array<f32>;
@group(0) @binding(4) var<storage, read> w: array<f32>;
@group(0) @binding(5) var<storage, read> db: array<f32>;
@group(0) @binding(6) var<storage, read> dw: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx: array<f32>;
@group(0) @binding(8) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.n) { return; }
    let c = (i / p.s) % p.c;
    let rs = inverseSqrt(var_[c] + p.eps);
    var g = dy[i];
    if (p.train == 1u) {
        let xhat = (x[i] - mean[c]) * rs;
        g = g - db[c] / p.m - xhat * dw[c] / p.m;
    }
    dx[i] = w[c] * rs * g;
}
