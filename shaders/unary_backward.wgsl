// unary_backward — dx = dy · f'(x), written with y = f(x) where that is cheaper.
// Reference: engine/src/ops/unary.rs::reference_backward (derivatives listed there).
// Layout: x, y, dy, dx contiguous f32[N].  Dispatch: gpu::grid(N, WG).
// #include "lib/index.wgsl"
// #include "lib/math.wgsl"

struct Params { n: u32, a: f32 }
override WG: u32 = 256u;
override OP: u32 = 0u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const INV_SQRT_2: f32 = 0.7071067811865476;
const INV_SQRT_2PI: f32 = 0.3989422804014327;

fn df(v: f32, out: f32) -> f32 {
    switch OP {
        case 0u: { return -1.0; }
        case 1u: { return out; }                                  // e^x
        case 2u: { return 1.0 / v; }
        case 3u: { return 0.5 / out; }                            // 1 / (2√x)
        case 4u: { return -0.5 * out * out * out; }               // −½ x^(−3/2)
        case 5u: { return 1.0 - out * out; }
        case 6u: { return select(0.0, 1.0, v > 0.0); }
        case 7u: { return out * (1.0 - out); }
        case 8u: { return 0.5 * (1.0 + erf(v * INV_SQRT_2)) + v * INV_SQRT_2PI * exp(-0.5 * v * v); }
        case 9u: {
            let t = safe_tanh(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v));
            return 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * v * v);
        }
        case 10u: { return 1.0; }
        case 11u: { return p.a; }
        case 12u: { return p.a * pow(v, p.a - 1.0); }
        case 13u: { return 2.0 * v; }
        default: { return 1.0; }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.n) { return; }
    dx[i] = dy[i] * df(x[i], y[i]);
}
