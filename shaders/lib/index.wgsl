// lib/index.wgsl — index helpers shared by kernels (no entry points).

// Linear invocation index of a 1-D launch folded into a 2-D grid by gpu::grid: launches past
// 65,535 workgroups use y, so every kernel recovers its flat index the same way.
fn linear_index(wg: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>, wg_size: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * wg_size + lid.x;
}

// Linear workgroup index of a launch of one workgroup per row (gpu::grid_rows).
fn linear_group(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.y * nwg.x;
}

// Reads component d (0..8) of a rank-8 index vector packed as two vec4s (uniform arrays of
// scalars would need 16-byte strides; vec4 packing keeps Params small).
fn dim8(v: array<vec4<u32>, 2>, d: u32) -> u32 {
    return v[d / 4u][d % 4u];
}
