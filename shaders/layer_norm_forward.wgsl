// layer_norm_forward — over the last axis C of each row r:
//   mean_r = Σ_c x[r, c] / C,  var_r = Σ_c (x[r, c] − mean_r)² / C  (biased, PyTorch/Flax),
//   rstd_r = 1 / √(var_r + eps),  y[r, c] = (x[r, c] − mean_r) · rstd_r · w[c] + b[c]
// mean and rstd are saved for the backward kernels.
// Reference: engine/src/ops/layer_norm.rs::reference.
// Backward: layer_norm_backward.wgsl (dx), layer_norm_backward_dwdb.wgsl (dweight, dbias).
// Layout: x, y contiguous f32[ROWS, C]; w, b f32[C]; mean, rstd f32[ROWS].
// Dispatch: gpu::grid_rows(ROWS), one workgroup of WG lanes (a power of two) per row. Three passes
// of ceil(C / WG) trips per lane (softmax.rs::MAX_ROW keeps loops under lavapipe's limit); the
// variance takes its own pass over (x − mean) rather than E[x²] − mean², which cancels.
// #include "lib/index.wgsl"

struct Params { rows: u32, c: u32, eps: f32 }
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> mean: array<f32>;
@group(0) @binding(5) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

var<workgroup> acc: array<f32, WG>;

// Σ of every lane's v (all lanes get it); ends with a barrier so acc can be reused.
fn workgroup_sum(v: f32, lane: u32) -> f32 {
    acc[lane] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lane < s) { acc[lane] += acc[lane + s]; }
        workgroupBarrier();
    }
    let total = acc[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = linear_group(wg, nwg);
    let valid = r < p.rows;
    let n = select(0u, p.c, valid);   // spare workgroups still reach the barriers
    let base = r * p.c;
    let inv_c = 1.0 / f32(p.c);

    // 1. mean
    var s = 0.0;
    for (var j = lid.x; j < n; j += WG) {
        s += x[base + j];
    }
    let mu = workgroup_sum(s, lid.x) * inv_c;

    // 2. biased variance, two-pass
    var q = 0.0;
    for (var j = lid.x; j < n; j += WG) {
        let d = x[base + j] - mu;
        q += d * d;
    }
    let rs = inverseSqrt(workgroup_sum(q, lid.x) * inv_c + p.eps);

    // 3. normalise, scale, shift
    for (var j = lid.x; j < n; j += WG) {
        y[base + j] = (x[base + j] - mu) * rs * w[j] + b[j];
    }
    if (valid && lid.x == 0u) {
        mean[r] = mu;
        rstd[r] = rs;
    }
}
