//! `tubelet info`: which adapter tubelet uses and what it offers.

use tubelet::gpu::{list_adapters, Gpu};
use tubelet::Result;

use crate::outln;
use crate::output::Output;

pub fn run() -> Result<()> {
    let mut out = Output::stdout();
    let adapters = list_adapters()?;
    outln!(
        out,
        "adapters (best first; pick one with TUBELET_ADAPTER=<index or name>):"
    )?;
    for (i, a) in adapters.iter().enumerate() {
        outln!(
            out,
            "  [{i}] {} ({:?}, {:?}) {} {}",
            a.name,
            a.device_type,
            a.backend,
            a.driver,
            a.driver_info
        )?;
    }
    let gpu = Gpu::global()?;
    let i = &gpu.info;
    outln!(out, "using: {}", i.name)?;
    outln!(
        out,
        "  backend: {:?}   type: {:?}",
        i.backend,
        i.device_type
    )?;
    outln!(out, "  driver: {} {}", i.driver, i.driver_info)?;
    let f = gpu.features;
    let has = |x: wgpu::Features| if f.contains(x) { "yes" } else { "no" };
    outln!(
        out,
        "  features: f16 {}  subgroups {}  timestamps {}  f32 atomics {}  i64 {}",
        has(wgpu::Features::SHADER_F16),
        has(wgpu::Features::SUBGROUP),
        has(wgpu::Features::TIMESTAMP_QUERY),
        has(wgpu::Features::SHADER_FLOAT32_ATOMIC),
        has(wgpu::Features::SHADER_INT64)
    )?;
    let l = &gpu.limits;
    outln!(out, "  limits:")?;
    outln!(
        out,
        "    max_storage_buffer_binding_size     {} MiB",
        l.max_storage_buffer_binding_size >> 20
    )?;
    outln!(
        out,
        "    max_buffer_size                     {} MiB",
        l.max_buffer_size >> 20
    )?;
    outln!(
        out,
        "    max_compute_workgroup_storage_size  {} KiB",
        l.max_compute_workgroup_storage_size >> 10
    )?;
    outln!(
        out,
        "    max_compute_invocations_per_workgroup {}",
        l.max_compute_invocations_per_workgroup
    )?;
    outln!(
        out,
        "    max_compute_workgroups_per_dimension {}",
        l.max_compute_workgroups_per_dimension
    )?;
    outln!(
        out,
        "    max_storage_buffers_per_shader_stage {}",
        l.max_storage_buffers_per_shader_stage
    )?;
    outln!(
        out,
        "    subgroup size                       {}..{}",
        i.subgroup_min_size,
        i.subgroup_max_size
    )?;
    Ok(())
}
