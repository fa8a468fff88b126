// attention_backward_delta — Delta_i = Σ_c dO_ic · O_ic = rowsum(dO ∘ O), per (batch, head, row):
// the softmax backward's correction term (FlashAttention-2, arXiv:2307.08691, Algorithm 2 line 4).
// Reference: engine/src/ops/attention.rs::reference_backward.
// Layout: B, N, H, D.  y, dy f32[B, N, H, D] (the forward output and its gradient);
//   delta f32[B, H, N].
// Dispatch: gpu::grid(B·H·N, WG), one invocation per row (a loop of D trips).
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

@group(0) @binding(0) var<storage, read> y: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> delta: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = linear_index(wg, nwg, lid, WG);
    if (r >= p.b * p.h * p.n) { return; }
    let i = r % p.n;
    let h = (r / p.n) % p.h;
    let b = r / (p.n * p.h);
    let base = (b * p.n + i) * p.h * p.d + h * p.d;
    var acc = 0.0;
    for (var c = 0u; c < p.d; c++) {
        acc += y[base + c] * dy[base + c];
    }
    delta[r] = acc;
}
