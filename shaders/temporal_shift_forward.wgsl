// temporal_shift_forward — TSM's shift (Lin et al. 2019, official ops/temporal_shift.py) on
// x viewed as (N, T, C, H·W), fold = C / fold_div:
//   DIR 0 (forward):  y[n,t,c] = x[n,t+1,c] for c < fold;  x[n,t−1,c] for fold ≤ c < 2·fold;
//                     x[n,t,c] otherwise; zero where t±1 leaves [0, T) (no leak across videos)
//   DIR 1 (backward): the opposite shifts, dx[n,t,c] = dy[n,t−1,c] for c < fold, dy[n,t+1,c]
//                     for fold ≤ c < 2·fold (InplaceShift.backward), so the same kernel serves both.
// Reference: engine/src/ops/temporal_shift.rs::reference.
// Layout: x, y contiguous f32[N·T, C, H, W] (T frames of a video contiguous).
// Dispatch: gpu::grid(N·T·C·H·W, WG), one element per invocation.
// #include "lib/index.wgsl"

struct Params { n: u32, t: u32, c: u32, hw: u32, fold: u32 }
override WG: u32 = 256u;
override DIR: u32 = 0u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.n) { return; }
    // i = ((nt·C + c)·HW + s), nt = n·T + t
    let c = (i / p.hw) % p.c;
    let t = (i / (p.hw * p.c)) % p.t;
    var dt = 0i;
    if (c < p.fold) { dt = 1; } else if (c < 2u * p.fold) { dt = -1; }
    if (DIR == 1u) { dt = -dt; }
    let src = i32(t) + dt;
    if (src < 0 || src >= i32(p.t)) {
        y[i] = 0.0;
        return;
    }
    y[i] = x[u32(i32(i) + dt * i32(p.c * p.hw))];
}
