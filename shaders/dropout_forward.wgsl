// dropout_forward — inverted dropout with a stateless mask:
//   y[i] = x[i] · scale   if pcg(pcg(i) ^ key) ≥ threshold,   else 0,
//   pcg = the PCG hash of Jarzynski & Olano, "Hash Functions for GPU Rendering", JCGT 9(3) 2020;
//   key = pcg(seed_lo ^ pcg(seed_hi)), threshold = ⌊p·2³²⌋, scale = 1/(1 − p) (all from the host).
// Keep probability 1 − threshold/2³² = 1 − p. The same u32 arithmetic is in dropout.rs
// (`pcg_hash`, `Dropout::keep`), so the reference reproduces the mask bit for bit.
// Reference: engine/src/ops/dropout.rs::reference.  Backward: this kernel on dy (same mask).
// Layout: x, y contiguous f32[N]; i is the flat element index.  Dispatch: gpu::grid(N, WG).
// #include "lib/index.wgsl"

struct Params {
    n: u32,
    key: u32,
    threshold: u32,
    scale: f32,
}
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

// A bijection on u32 (every step is invertible); u32 arithmetic wraps in WGSL, as in Rust's
// wrapping_mul / wrapping_add.
fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.n) { return; }
    let keep = pcg(pcg(i) ^ p.key) >= p.threshold;
    y[i] = select(0.0, x[i] * p.scale, keep);
}
