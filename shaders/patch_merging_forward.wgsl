// patch_merging_forward — Video Swin PatchMerging's gather (Liu et al. 2022, official VST
// swin_transformer.py PatchMerging.forward, before its norm and reduction):
//   y[b,d,i,j, q·C + c] = x[b, d, 2i + (q & 1), 2j + (q >> 1), c]   (0 where that row/col is the
//   end padding of an odd H or W), quadrant order q = (h0,w0), (h1,w0), (h0,w1), (h1,w1).
// Reference: engine/src/ops/patch_merging.rs::reference.  Backward: patch_merging_backward.wgsl
// Layout: x contiguous f32[B, D, H, W, C]; y contiguous f32[B, D, HO, WO, 4C], HO = ⌈H/2⌉,
// WO = ⌈W/2⌉ (B and D folded into one leading axis BD).
// Dispatch: gpu::grid(BD·HO·WO·4C, WG), one output element per invocation.
// #include "lib/index.wgsl"

struct Params { n: u32, h: u32, w: u32, c: u32, ho: u32, wo: u32 }
override WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.n) { return; }
    // i = ((bd·HO + oi)·WO + oj)·4C + q·C + c
    let c4 = 4u * p.c;
    let k = i % c4;
    let q = k / p.c;
    let c = k % p.c;
    let oj = (i / c4) % p.wo;
    let oi = (i / (c4 * p.wo)) % p.ho;
    let bd = i / (c4 * p.wo * p.ho);
    let h = 2u * oi + (q & 1u);
    let w = 2u * oj + (q >> 1u);
    if (h >= p.h || w >= p.w) {
        y[i] = 0.0; // the zero padding of an odd H or W
        return;
    }
    y[i] = x[((bd * p.h + h) * p.w + w) * p.c + c];
}
