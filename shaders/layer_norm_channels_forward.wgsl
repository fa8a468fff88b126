// layer_norm_channels_forward — LayerNorm over the channel axis of a channels-first tensor,
// read in place through its stride (no permuted copy). For each column (b, s):
//   mean = Σ_c x[b, c, s] / C,  var = Σ_c (x[b, c, s] − mean)² / C  (biased, nn.LayerNorm),
//   rstd = 1 / √(var + eps),    y[b, c, s] = (x[b, c, s] − mean) · rstd · w[c] + bias[c]
// mean and rstd are saved for the backward kernels.
// Reference: engine/src/ops/layer_norm_channels.rs::reference.
// Backward: layer_norm_channels_backward.wgsl (dx), layer_norm_channels_backward_dwdb.wgsl.
// Layout: x, y contiguous f32[B, C, S] (S = T·H·W or L: channel c of column s at stride S);
//         w, b f32[C]; mean, rstd f32[B·S].
// Dispatch: gpu::grid(B·S, WG), one column per invocation: neighbouring lanes read neighbouring
// s of the same channel (contiguous), and each lane loops 3 × C times (C ≤ MAX_C keeps the
// trip count under lavapipe's 65,535).
// #include "lib/index.wgsl"

struct Params { cols: u32, c: u32, s: u32, eps: f32 }
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> mean: array<f32>;
@group(0) @binding(5) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.cols) { return; }
    // column i = b·S + s; element (b, c, s) at (b·C + c)·S + s
    let bi = i / p.s;
    let base = bi * p.c * p.s + (i - bi * p.s);
    let inv_c = 1.0 / f32(p.c);

    // 1. mean
    var sum = 0.0;
    for (var c = 0u; c < p.c; c++) {
        sum += x[base + c * p.s];
    }
    let mu = sum * inv_c;

    // 2. biased variance, two-pass (E[x²] − mean² cancels)
    var q = 0.0;
    for (var c = 0u; c < p.c; c++) {
        let d = x[base + c * p.s] - mu;
        q += d * d;
    }
    let rs = inverseSqrt(q * inv_c + p.eps);

    // 3. normalise, scale, shift
    for (var c = 0u; c < p.c; c++) {
        let k = base + c * p.s;
        y[k] = (x[k] - mu) * rs * w[c] + b[c];
    }
    mean[i] = mu;
    rstd[i] = rs;
}
