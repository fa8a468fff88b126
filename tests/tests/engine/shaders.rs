//! Shader checks without a GPU: every kernel parses, has one entry point `main`, and every
//! shader file is in the generated registry.

#[test]
fn every_kernel_has_one_entry_point_named_main() {
    for k in tubelet::gpu::registry::ALL {
        let module = naga::front::wgsl::parse_str(k.source)
            .unwrap_or_else(|e| panic!("{}: {}", k.name, e.emit_to_string(k.source)));
        assert_eq!(module.entry_points.len(), 1, "{}", k.name);
        assert_eq!(module.entry_points[0].name, "main", "{}", k.name);
    }
}

#[test]
fn every_shader_file_is_registered() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shaders");
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "wgsl") {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            assert!(
                tubelet::gpu::registry::ALL.iter().any(|k| k.name == stem),
                "{stem}.wgsl is not in the registry"
            );
        }
    }
}

#[test]
fn every_bound_param_block_is_the_last_binding() {
    // House order: inputs (read), outputs (read_write), then one uniform Params.
    for k in tubelet::gpu::registry::ALL {
        let module = naga::front::wgsl::parse_str(k.source).unwrap();
        let mut bindings: Vec<(u32, naga::AddressSpace)> = module
            .global_variables
            .iter()
            .filter_map(|(_, v)| v.binding.as_ref().map(|b| (b.binding, v.space)))
            .collect();
        bindings.sort_by_key(|b| b.0);
        let n = bindings.len();
        for (i, (b, space)) in bindings.iter().enumerate() {
            assert_eq!(
                *b as usize, i,
                "{}: bindings must be 0..{n} without gaps",
                k.name
            );
            let is_uniform = matches!(space, naga::AddressSpace::Uniform);
            assert_eq!(
                is_uniform,
                i == n - 1,
                "{}: the uniform Params is the last binding",
                k.name
            );
        }
    }
}
