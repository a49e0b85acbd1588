//! The CI kernel compile check: every variant of [`kernel_variants`] compiled for every
//! architecture in [`Arch::SUPPORTED`] through the real JIT (NVRTC needs no GPU), failing on
//! any compile error or register spill. Passes with a `skipped:` line when NVRTC is absent.
//!
//! Run with the pinned NVRTC on the loader path, e.g.
//! `LD_LIBRARY_PATH=$DIR/nvidia/cu13/lib FLASHDMOE_CUDA_HOME=$DIR/nvidia/cu13 cargo test -p
//! flashdmoe-cuda --test nvrtc_compile -- --nocapture`.

use flashdmoe_cuda::jit::CacheMode;
use flashdmoe_cuda::{Arch, CudaError, Jit, JitConfig, kernel_variants, nvrtc_version};

/// A JIT without disk cache (CI must really compile), or `None` when NVRTC is not installed.
fn jit() -> Option<Jit> {
    match nvrtc_version() {
        Err(CudaError::NvrtcMissing) => {
            println!("skipped: NVRTC not found (see scripts/install-nvrtc.sh)");
            None
        }
        Err(e) => panic!("{e}"),
        Ok(version) => {
            println!("NVRTC {version}");
            let config = JitConfig { cache: CacheMode::MemoryOnly, ..JitConfig::from_env() };
            Some(Jit::new(config).unwrap_or_else(|e| panic!("{e}")))
        }
    }
}

#[test]
fn every_kernel_variant_compiles_without_spills() {
    let Some(jit) = jit() else { return };
    let mut failures = Vec::new();
    let mut compiled = 0;
    for arch in Arch::SUPPORTED {
        for variant in kernel_variants() {
            match jit.compile_variant(&variant, arch) {
                Ok(result) => {
                    compiled += 1;
                    let report = result.cubin.report();
                    let entry = report.entry(variant.source.entry).expect("checked by the JIT");
                    println!(
                        "ok  {arch} {:<40} {:>3} registers, {:>6} B smem, {:>4} B stack",
                        variant.label,
                        entry.registers.unwrap_or(0),
                        entry.smem_bytes,
                        entry.stack_frame_bytes,
                    );
                }
                Err(e) => failures.push(format!("{arch} {}: {e}", variant.label)),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} variant(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert_eq!(compiled, kernel_variants().len() * Arch::SUPPORTED.len());
}
