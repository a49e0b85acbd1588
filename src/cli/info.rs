//! `flashdmoe info`: presets and their weight memory, backends, and what this machine can run;
//! with layer flags, that layer's memory.

use flashdmoe::core::config::presets;

use super::{CliError, ConfigArgs, config, run_summary};

/// Prints the presets (each with its weight memory per rank and of the whole layer over its
/// world), the backends' availability, and, when `args` describe a layer, its config and
/// memory. Fails only for a layer that the flags describe wrongly: an unavailable backend is
/// information, not an error.
pub(super) fn info(args: &ConfigArgs) -> Result<(), CliError> {
    // A layer described wrongly is reported before anything is printed.
    let layer = config::given(args).then(|| config::build(args)).transpose()?;
    println!("flashdmoe {}", env!("CARGO_PKG_VERSION"));
    println!(
        "\npresets (flashdmoe run --preset NAME; experts sharded over the world: each rank holds \
         the router and its own experts):"
    );
    for name in presets::names() {
        if let Ok(c) = presets::preset(&name) {
            println!("  {name:<24} {}", run_summary::shape(&c));
            if let Ok(w) = run_summary::weights(&c) {
                println!("  {:<24} {w}", "");
            }
        }
    }
    println!(
        "\n(shared experts run on both backends; the cuda kernel runs them as routed experts, \
         so it needs their size to be a multiple of the routed experts' and no capacity factor)"
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
    // One process per GPU (`flashdmoe launch`, torchrun) builds its heap through NCCL.
    let nccl = match flashdmoe::cuda::nccl::nccl_version() {
        Ok(v) => {
            format!("NCCL {v} found (one process per GPU: flashdmoe launch --nproc N run ...)")
        }
        Err(e) => format!("NCCL not usable (only one process per GPU needs it): {e}"),
    };
    println!("        {nccl}");
    if let Some(c) = layer {
        println!("\nlayer (from the flags):");
        println!("{}", run_summary::config(&c));
        println!("{}", run_summary::weights(&c)?);
        println!("{}", run_summary::host_memory(&c)?);
        println!("{}", kernel_line(&c));
    }
    Ok(())
}

/// The specialisation the CUDA backend would try first for one rank of `c` on an H200 (sm_90,
/// 131 processor blocks, one rank a GPU: paired where `PairChoice::Auto` pairs), or why the
/// kernel does not compute the layer: what `flashdmoe run --backend cuda` compiles there (its
/// `kernel:` line), and what `--tile` and `--no-pairs` replace.
fn kernel_line(c: &flashdmoe::core::MoeConfig) -> String {
    use flashdmoe::cuda::PairChoice;
    use flashdmoe::cuda::spec::{self, H200_PROCESSORS, MoeSpec};
    match spec::check_computed(c) {
        Err(e) => format!("kernel: the CUDA kernel does not compute this layer: {e}"),
        Ok(()) => {
            match MoeSpec::candidates(c, H200_PROCESSORS, flashdmoe::cuda::Arch::SM90).first() {
                Some(&s) => {
                    let s = PairChoice::auto(s);
                    let pairs = if s.pairs {
                        "; paired GEMM0 tasks: an expert's GEMM0 weights stream from HBM, --no-pairs runs unpaired"
                    } else {
                        ""
                    };
                    format!(
                        "kernel on an H200: {} (tried first: one that spills gives way to the next; --tile BMxBN[sS] runs another{pairs})",
                        s.label()
                    )
                }
                None => "kernel: no specialisation for this layer".into(),
            }
        }
    }
}
