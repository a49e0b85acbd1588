//! [`kernel_variants`]: every kernel variant the crate can compile, gathered from the module
//! of each kernel family (the self-test, the MoE kernel's specialisations, the tile bench).
//!
//! It sits above those modules so that the registry of sources ([`crate::kernels`]) stays a
//! leaf. The CI compile check (`tests/nvrtc_compile.rs`) compiles each variant for every
//! architecture it targets ([`KernelVariant::archs`]), so a variant that fails to compile or
//! spills cannot land; a new kernel family joins by extending this list.

use crate::kernels::KernelVariant;
use crate::{selftest, spec, tile_bench};

/// Every kernel variant the crate exposes, with unique labels.
pub fn kernel_variants() -> Vec<KernelVariant> {
    let mut variants = vec![selftest::variant()];
    variants.extend(spec::variants());
    variants.extend(tile_bench::suite().iter().map(|c| c.variant()));
    variants
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_labels_are_unique() {
        let variants = kernel_variants();
        assert!(!variants.is_empty());
        let mut labels: Vec<&str> = variants.iter().map(|v| v.label.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), variants.len(), "variant labels must be unique");
    }
}
