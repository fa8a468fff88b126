// patch_merging_backward — the scatter that inverts patch_merging_forward's gather: every input
// element was copied to exactly one output element, so each dx element reads its one dy element
// (no atomics, no accumulation):
//   dx[b,d,h,w,c] = dy[b, d, h/2, w/2, q·C + c],  q = (h & 1) + 2·(w & 1).
// Reference: engine/src/ops/patch_merging.rs::reference_backward.
// Layout: dy contiguous f32[B, D, HO, WO, 4C]; dx contiguous f32[B, D, H, W, C] (BD folded).
// Dispatch: gpu::grid(BD·H·W·C, WG), one input element per invocation.
// #include "lib/index.wgsl"

struct Params { n: u32, h: u32, w: u32, c: u32, ho: u32, wo: u32 }
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.n) { return; }
    // i = ((bd·H + h)·W + w)·C + c
    let c = i % p.c;
    let w = (i / p.c) % p.w;
    let h = (i / (p.c * p.w)) % p.h;
    let bd = i / (p.c * p.w * p.h);
    let q = (h & 1u) + 2u * (w & 1u);
    dx[i] = dy[((bd * p.ho + h / 2u) * p.wo + w / 2u) * 4u * p.c + q * p.c + c];
}
