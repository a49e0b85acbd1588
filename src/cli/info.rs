//! `flashdmoe info`: presets, backends, and what this machine can run.

use flashdmoe::core::config::presets;

use super::{CliError, run_summary};

/// Prints the presets and the backends' availability. Never fails: an unavailable backend is
/// information, not an error.
pub(super) fn info() -> Result<(), CliError> {
    println!("flashdmoe {}", env!("CARGO_PKG_VERSION"));
    println!("\npresets (flashdmoe run --preset NAME):");
    for name in presets::names() {
        if let Ok(c) = presets::preset(&name) {
            println!("  {name:<24} {}", run_summary::shape(&c));
        }
    }
    println!(
        "\n(shared experts run on the sim backend; the cuda backend refuses them until its \
         kernel has them, issue 16)"
    );
    println!("\nbackends (flashdmoe run --backend NAME):");
    println!("  sim   available: the CPU simulator (default)");
    let cuda = match flashdmoe::cuda::cuda_available() {
        Ok(()) => match flashdmoe::cuda::gpus() {
            Ok(gpus) => format!(
                "available: {} GPU(s): {}",
                gpus.len(),
                gpus.iter().map(|g| g.name.clone()).collect::<Vec<_>>().join(", ")
            ),
            Err(e) => format!("unavailable: {e}"),
        },
        Err(e) => format!("unavailable: {e}"),
    };
    println!("  cuda  {cuda}");
    let nvrtc = match flashdmoe::cuda::nvrtc_version() {
        Ok(v) => format!("NVRTC {v} found (kernels can be compiled)"),
        Err(e) => format!("NVRTC not usable: {e}"),
    };
    println!("        {nvrtc}");
    Ok(())
}
