// reduce_forward — sum (OP 0) or max (OP 1) over a set of axes, one workgroup per
// (output element, chunk of the reduced elements); a tree reduction in workgroup memory.
// Reference: engine/src/ops/reduce.rs::reference.  Backward: expand (sum), reduce_max_backward.
// Layout: x contiguous; the kept dims (K, ≤ 8) and reduced dims (R, ≤ 8) are read through x's
//         strides, so no permuted copy is made. y is f32[N_OUT · N_CHUNKS], chunk-minor.
// Dispatch: gpu::grid_rows(N_OUT · N_CHUNKS). Chunks keep every invocation's loop short
//         (≤ CHUNK / WG trips; Mesa 22's llvmpipe silently stops loops at 65,535) and give a
//         full reduction more than one workgroup; the caller reduces the partials again.
// #include "lib/index.wgsl"

struct Params {
    n_out: u32,
    n_red: u32,
    chunk: u32,
    n_chunks: u32,
    nk: u32,
    nr: u32,
    k_shape: array<vec4<u32>, 2>,
    k_stride: array<vec4<u32>, 2>,
    r_shape: array<vec4<u32>, 2>,
    r_stride: array<vec4<u32>, 2>,
}
override WG: u32 = 256u;
override OP: u32 = 0u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

var<workgroup> acc: array<f32, WG>;

fn offset(j: u32, shape: array<vec4<u32>, 2>, stride: array<vec4<u32>, 2>, rank: u32) -> u32 {
    var rem = j;
    var off = 0u;
    for (var d = i32(rank) - 1; d >= 0; d--) {
        let size = dim8(shape, u32(d));
        off += (rem % size) * dim8(stride, u32(d));
        rem = rem / size;
    }
    return off;
}

fn combine(u: f32, v: f32) -> f32 {
    if (OP == 0u) { return u + v; }
    return max(u, v);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = linear_group(wg, nwg);
    let valid = g < p.n_out * p.n_chunks;
    let o = g / p.n_chunks;
    let c = g % p.n_chunks;
    let base = offset(o, p.k_shape, p.k_stride, p.nk);
    let start = c * p.chunk;
    let end = min(start + p.chunk, p.n_red);
    var v = select(-3.4028235e38, 0.0, OP == 0u);
    if (valid) {
        for (var j = start + lid.x; j < end; j += WG) {
            v = combine(v, x[base + offset(j, p.r_shape, p.r_stride, p.nr)]);
        }
    }
    acc[lid.x] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid.x < s) {
            acc[lid.x] = combine(acc[lid.x], acc[lid.x + s]);
        }
        workgroupBarrier();
    }
    if (valid && lid.x == 0u) {
        y[g] = acc[0];
    }
}
