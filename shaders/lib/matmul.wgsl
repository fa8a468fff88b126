// lib/matmul.wgsl — batch addressing shared by the matmul kernels (no entry points).
// Needs lib/index.wgsl (dim8).

// Element offsets (of a, of b) of output matrix z, whose index over the output batch dims
// (rank nb, sizes `shape`) is unravelled and dotted with each input's batch strides (0 on a
// broadcast dim, so a shared matrix is read in place, never copied).
fn batch_offsets(z: u32, nb: u32, shape: array<vec4<u32>, 2>, sa: array<vec4<u32>, 2>,
                 sb: array<vec4<u32>, 2>) -> vec2<u32> {
    var rem = z;
    var off = vec2<u32>(0u, 0u);
    for (var d = i32(nb) - 1; d >= 0; d--) {
        let size = dim8(shape, u32(d));
        let c = rem % size;
        rem = rem / size;
        off += c * vec2<u32>(dim8(sa, u32(d)), dim8(sb, u32(d)));
    }
    return off;
}
