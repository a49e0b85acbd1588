//! What the kernels are compiled for: a device's [`ComputeCapability`] and the [`Arch`] NVRTC
//! targets (`sm_XX`, or the architecture-specific `sm_XXa`).
//!
//! A leaf: every other module may name these types, and this one names none of theirs.
//!
//! ## Invariants
//!
//! * [`Arch::can_run_on`] is SASS compatibility: same major and no newer minor, exactly equal
//!   for an `a` variant (whose instructions exist on that architecture only).

use std::fmt;

/// A CUDA compute capability, e.g. 9.0 for Hopper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ComputeCapability {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl fmt::Display for ComputeCapability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A real GPU architecture to compile for (`sm_XX`), optionally its architecture-specific
/// `sm_XXa` variant (needed for wgmma/TMA; such code runs only on exactly that architecture).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Arch {
    /// Compute capability major.
    pub major: u32,
    /// Compute capability minor.
    pub minor: u32,
    /// The `a` (architecture-specific features) variant.
    pub accelerated: bool,
}

impl Arch {
    /// Ampere A100 (the oldest supported; mma.sync path).
    pub const SM80: Arch = Arch::new(8, 0);
    /// Hopper H100/H200 (mma.sync path).
    pub const SM90: Arch = Arch::new(9, 0);
    /// Hopper with architecture-specific instructions (wgmma, TMA).
    pub const SM90A: Arch = Arch::new(9, 0).accelerated();
    /// The architectures CI compile-checks every kernel variant for.
    pub const SUPPORTED: [Arch; 2] = [Arch::SM90, Arch::SM80];

    /// `sm_{major}{minor}`.
    pub const fn new(major: u32, minor: u32) -> Arch {
        Arch { major, minor, accelerated: false }
    }

    /// The `sm_XXa` variant of this architecture.
    pub const fn accelerated(self) -> Arch {
        Arch { accelerated: true, ..self }
    }

    /// The architecture of a device's own compute capability (the portable variant).
    pub const fn for_device(cc: ComputeCapability) -> Arch {
        Arch::new(cc.major, cc.minor)
    }

    /// Whether a cubin for this architecture runs on a device of capability `cc`: same major
    /// and no newer minor (SASS compatibility), exactly equal for an `a` variant.
    pub fn can_run_on(self, cc: ComputeCapability) -> bool {
        self.major == cc.major
            && if self.accelerated { self.minor == cc.minor } else { self.minor <= cc.minor }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let suffix = if self.accelerated { "a" } else { "" };
        write!(f, "sm_{}{}{suffix}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(major: u32, minor: u32) -> ComputeCapability {
        ComputeCapability { major, minor }
    }

    #[test]
    fn arch_names_and_compatibility() {
        assert_eq!(Arch::SM90.to_string(), "sm_90");
        assert_eq!(Arch::SM90A.to_string(), "sm_90a");
        assert_eq!(Arch::for_device(cc(8, 6)).to_string(), "sm_86");
        assert!(Arch::SM90.can_run_on(cc(9, 0)));
        assert!(Arch::SM80.can_run_on(cc(8, 9)));
        assert!(!Arch::SM80.can_run_on(cc(9, 0)), "SASS does not cross majors");
        assert!(!Arch::new(8, 6).can_run_on(cc(8, 0)), "no newer minor");
        assert!(Arch::SM90A.can_run_on(cc(9, 0)));
        assert!(!Arch::new(10, 0).accelerated().can_run_on(cc(10, 3)), "`a` needs exact match");
    }
}
