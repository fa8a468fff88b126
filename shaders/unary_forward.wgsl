// unary_forward — y = f(x) for the elementwise functions of ops/unary.rs, chosen by OP.
// Reference: engine/src/ops/unary.rs::reference.  Backward: unary_backward.wgsl
// Layout: x, y contiguous f32[N].  Dispatch: gpu::grid(N, WG).
// NOTE: one file for all of them, departing from one-kernel-per-op on purpose: each function is
// one line, OP is an override constant, so naga folds the switch and every pipeline is as tight
// as a dedicated kernel, without fifteen copies of the same indexing boilerplate.
// #include "lib/index.wgsl"
// #include "lib/math.wgsl"

struct Params { n: u32, a: f32 }   // a: the scalar of add_scalar / mul_scalar / pow_scalar
override WG: u32 = 256u;
override OP: u32 = 0u;             // ops/unary.rs::Unary::code

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const INV_SQRT_2: f32 = 0.7071067811865476;

fn f(v: f32) -> f32 {
    switch OP {
        case 0u: { return -v; }                                   // neg
        case 1u: { return exp(v); }                               // exp
        case 2u: { return log(v); }                               // log
        case 3u: { return sqrt(v); }                              // sqrt
        case 4u: { return inverseSqrt(v); }                       // rsqrt
        case 5u: { return safe_tanh(v); }                         // tanh
        case 6u: { return max(v, 0.0); }                          // relu
        case 7u: { return 1.0 / (1.0 + exp(-v)); }                // sigmoid
        case 8u: { return 0.5 * v * (1.0 + erf(v * INV_SQRT_2)); } // gelu (erf)
        case 9u: { return 0.5 * v * (1.0 + safe_tanh(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v))); } // gelu (tanh)
        case 10u: { return v + p.a; }                             // add_scalar
        case 11u: { return v * p.a; }                             // mul_scalar
        case 12u: { return pow(v, p.a); }                         // pow_scalar (v > 0)
        case 13u: { return v * v; }                               // square
        default: { return v; }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wg, nwg, lid, WG);
    if (i >= p.n) { return; }
    y[i] = f(x[i]);
}
