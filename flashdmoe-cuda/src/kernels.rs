//! The CUDA sources of the crate, embedded from `flashdmoe-cuda/kernels/`, and the list of
//! kernel variants CI compile-checks.
//!
//! ## Invariants
//!
//! * No CUDA text lives in Rust: every source and header is `include_str!`-ed from
//!   `kernels/`, so the files there are exactly what NVRTC compiles.
//! * Every compilation sees every project header ([`HEADERS`]) under its file name, so a
//!   kernel includes them as `#include "fdm_proto.h"`; the cache key covers all of them.
//! * `fdm_proto.h` is generated: it equals [`flashdmoe_proto::c_header`] byte for byte
//!   (tested; regenerate with `cargo run -p flashdmoe-cuda --example gen-header`).
//! * [`kernel_variants`] lists every variant the crate can compile; the CI compile check
//!   (`tests/nvrtc_compile.rs`) compiles each for every supported architecture, so a variant
//!   that fails to compile or spills cannot land.

use crate::jit::{Arch, Defines};

/// A `.cu` translation unit with one `extern "C" __global__` entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelSource {
    /// File name under `kernels/` (also NVRTC's program name, shown in diagnostics).
    pub file: &'static str,
    /// The source text.
    pub text: &'static str,
    /// The unmangled name of the entry point.
    pub entry: &'static str,
}

/// A project header, visible to every kernel under `name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The include name (`#include "<name>"`).
    pub name: &'static str,
    /// The header text.
    pub text: &'static str,
}

/// The generated protocol header (structs, constants, layout functions).
pub const PROTO_HEADER: Header =
    Header { name: "fdm_proto.h", text: include_str!("../kernels/fdm_proto.h") };

/// The generated launch-parameter header of the MoE kernel (see [`crate::params`]).
pub const PARAMS_HEADER: Header =
    Header { name: "fdm_params.h", text: include_str!("../kernels/fdm_params.h") };

/// The generated wgmma instruction wrappers of the Hopper engine (see [`crate::wgmma`]).
pub const WGMMA_OPS_HEADER: Header =
    Header { name: "fdm_wgmma_ops.h", text: include_str!("../kernels/fdm_wgmma_ops.h") };

/// Every project header, in the order given to NVRTC.
pub const HEADERS: &[Header] = &[
    PROTO_HEADER,
    Header { name: "tile_gemm.cuh", text: include_str!("../kernels/tile_gemm.cuh") },
    PARAMS_HEADER,
    Header { name: "hopper.cuh", text: include_str!("../kernels/hopper.cuh") },
    WGMMA_OPS_HEADER,
    Header { name: "tile_wgmma.cuh", text: include_str!("../kernels/tile_wgmma.cuh") },
    // The MoE kernel's roles (kernels/moe.cu lists them).
    Header { name: "config.cuh", text: include_str!("../kernels/config.cuh") },
    Header { name: "sync.cuh", text: include_str!("../kernels/sync.cuh") },
    Header { name: "heap.cuh", text: include_str!("../kernels/heap.cuh") },
    Header { name: "route.cuh", text: include_str!("../kernels/route.cuh") },
    Header { name: "dispatch.cuh", text: include_str!("../kernels/dispatch.cuh") },
    Header { name: "queue.cuh", text: include_str!("../kernels/queue.cuh") },
    Header { name: "mailbox.cuh", text: include_str!("../kernels/mailbox.cuh") },
    Header { name: "subscriber.cuh", text: include_str!("../kernels/subscriber.cuh") },
    Header { name: "scheduler.cuh", text: include_str!("../kernels/scheduler.cuh") },
    Header { name: "combine.cuh", text: include_str!("../kernels/combine.cuh") },
    Header { name: "completion.cuh", text: include_str!("../kernels/completion.cuh") },
    Header { name: "processor.cuh", text: include_str!("../kernels/processor.cuh") },
    Header { name: "processor_wgmma.cuh", text: include_str!("../kernels/processor_wgmma.cuh") },
];

/// The device self-test: cooperative grid arrival, dynamic shared memory, a by-value
/// parameter block and the protocol header's signal helpers (see [`crate::selftest`]).
pub const SELFTEST: KernelSource = KernelSource {
    file: "selftest.cu",
    text: include_str!("../kernels/selftest.cu"),
    entry: "fdm_selftest",
};

/// One compilable specialisation: a source plus its `-D` defines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelVariant {
    /// Short human-readable name (shown by the compile check).
    pub label: String,
    /// The translation unit.
    pub source: KernelSource,
    /// The specialisation.
    pub defines: Defines,
    /// A more conservative specialisation to compile instead when `defines` makes ptxas
    /// spill registers (its heuristics sit at the 255-register edge for the widest tiles and
    /// flip with unrelated code changes): [`crate::Jit::compile_variant`] falls back to it.
    pub fallback: Option<Defines>,
    /// The architectures it is meant for.
    pub targets: Targets,
}

/// Which architectures a variant compiles for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Targets {
    /// Every architecture of [`Arch::SUPPORTED`] (portable code: mma.sync, cp.async).
    Portable,
    /// Hopper's architecture-specific `sm_90a` only (wgmma, TMA, setmaxnreg).
    Hopper,
}

impl KernelVariant {
    /// The architectures the CI compile check compiles this variant for.
    pub fn archs(&self) -> &'static [Arch] {
        match self.targets {
            Targets::Portable => &Arch::SUPPORTED,
            Targets::Hopper => &[Arch::SM90A],
        }
    }
}

/// Every kernel variant the crate exposes. The CI compile check compiles each of them for
/// every architecture in [`crate::jit::Arch::SUPPORTED`]; a new kernel family joins by
/// extending this list.
pub fn kernel_variants() -> Vec<KernelVariant> {
    let mut variants = vec![crate::selftest::variant()];
    variants.extend(crate::spec::variants());
    variants.extend(crate::tile_bench::suite().iter().map(|c| c.variant()));
    variants
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_header_is_current() {
        assert!(
            PROTO_HEADER.text == flashdmoe_proto::c_header(),
            "flashdmoe-cuda/kernels/fdm_proto.h is stale: regenerate it with \
             `cargo run -p flashdmoe-cuda --example gen-header` and commit the result"
        );
    }

    #[test]
    fn wgmma_ops_header_is_current() {
        assert!(
            WGMMA_OPS_HEADER.text == crate::wgmma::ops_header(),
            "flashdmoe-cuda/kernels/fdm_wgmma_ops.h is stale: regenerate it with \
             `cargo run -p flashdmoe-cuda --example gen-header` and commit the result"
        );
    }

    #[test]
    fn params_header_is_current() {
        assert!(
            PARAMS_HEADER.text == crate::params::params_header(),
            "flashdmoe-cuda/kernels/fdm_params.h is stale: regenerate it with \
             `cargo run -p flashdmoe-cuda --example gen-header` and commit the result"
        );
    }

    #[test]
    fn variant_labels_are_unique() {
        let variants = kernel_variants();
        assert!(!variants.is_empty());
        let mut labels: Vec<&str> = variants.iter().map(|v| v.label.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), variants.len(), "variant labels must be unique");
    }

    #[test]
    fn header_names_are_unique() {
        for (i, a) in HEADERS.iter().enumerate() {
            assert!(HEADERS[i + 1..].iter().all(|b| b.name != a.name), "{} twice", a.name);
        }
    }
}
