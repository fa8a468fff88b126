// reduce_max_backward — dx = dy[o] / count_o on every element equal to the max y[o] of its
// output o, 0 elsewhere (torch.amax semantics: ties share the gradient evenly).
// Reference: engine/src/ops/reduce.rs::reference_backward.
// Layout: x, dx contiguous, same kept/reduced view as reduce_forward; y, dy f32[N_OUT].
// Dispatch: gpu::grid_rows(N_OUT), one workgroup per output: count the ties, then write.
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

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

var<workgroup> cnt: array<u32, WG>;

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

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = linear_group(wg, nwg);
    let valid = o < p.n_out;
    let oo = min(o, p.n_out - 1u);
    let base = offset(oo, p.k_shape, p.k_stride, p.nk);
    let m = y[oo];
    var c = 0u;
    if (valid) {
        for (var j = lid.x; j < p.n_red; j += WG) {
            c += select(0u, 1u, x[base + offset(j, p.r_shape, p.r_stride, p.nr)] == m);
        }
    }
    cnt[lid.x] = c;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid.x < s) { cnt[lid.x] += cnt[lid.x + s]; }
        workgroupBarrier();
    }
    let share = dy[oo] / f32(max(cnt[0], 1u));
    if (valid) {
        for (var j = lid.x; j < p.n_red; j += WG) {
            let k = base + offset(j, p.r_shape, p.r_stride, p.nr);
            dx[k] = select(0.0, share, x[k] == m);
        }
    }
}
