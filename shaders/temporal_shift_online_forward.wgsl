// temporal_shift_online_forward — TSM's uni-directional shift for online (frame-by-frame)
// inference (official online_demo/mobilenet_v2_tsm.py), on the current frame x (N, C, H·W) and
// the cached first fold channels of the previous frame, fold = C / fold_div:
//   MODE 0 (forward):      y[n, c] = cache[n, c] for c < fold,  x[n, c] otherwise
//   MODE 1 (dx backward):  dx[n, c] = 0 for c < fold,           dy[n, c] otherwise
//   (the cache's gradient is dy[:, :fold], narrow_forward.wgsl; MODE 1 binds dy as both inputs
//   and never reads the second).
// Reference: engine/src/ops/temporal_shift_online.rs::reference.
// Layout: x, y contiguous f32[N, C, H·W]; cache f32[N, fold, H·W].
// Dispatch: gpu::grid(N·C·H·W, WG), one element per invocation.
// #include "lib/index.wgsl"

struct Params { n: u32, c: u32, hw: u32, fold: u32 }
override WG: u32 = 256u;
override MODE: u32 = 0u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> cache: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.n) { return; }
    // i = (n·C + c)·HW + s
    let s = i % p.hw;
    let c = (i / p.hw) % p.c;
    let n = i / (p.hw * p.c);
    if (c >= p.fold) {
        y[i] = x[i];
    } else if (MODE == 0u) {
        y[i] = cache[(n * p.fold + c) * p.hw + s];
    } else {
        y[i] = 0.0;
    }
}
