//! NCCL, loaded at run time: the engine one process per GPU will build its symmetric heap on
//! (issue 14 item 5; `docs/dev/process-model.md`, section 2, "Loading NCCL"). This module finds
//! the library and checks its version; [`comm`] is the communicator (nonblocking, deadlines,
//! abort), [`heap`] the symmetric heap (window, peer bases, stamps), [`env`](mod@env) the NCCL variables
//! refused up front.
//!
//! cudarc loads NCCL by the names `libnccl.so`, `libnccl.so.<N>`, ... but not `libnccl.so.2`,
//! the only name the `nvidia-nccl-cu13` wheel (and so PyTorch) ships: `scripts/install-nccl.sh`
//! links it as `libnccl.so` in a directory of its own and prints the `LD_LIBRARY_PATH` export
//! (the loader reads that variable once, at process start).
//!
//! ## Invariants
//!
//! * Nothing here panics for a missing library: cudarc's symbol loaders panic when the library
//!   is absent, so every entry point first proves it present ([`NcclApi::load`]).
//! * A version below [`MIN_NCCL`] is refused: symmetric memory windows, which expose the peers'
//!   heap addresses, arrived in 2.28.

pub mod comm;
pub mod env;
pub mod heap;

use std::fmt;
use std::sync::OnceLock;

use cudarc::nccl::sys;

use crate::error::{CudaError, Result};

pub use comm::{Comm, UniqueId};
pub use heap::{SymmetricHeap, WindowRecord};

/// An NCCL release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NcclVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

/// The oldest NCCL this crate uses: 2.28 (`ncclCommWindowRegister` with peer pointers).
pub const MIN_NCCL: NcclVersion = NcclVersion { major: 2, minor: 28, patch: 0 };

impl NcclVersion {
    /// The release `ncclGetVersion` reports as `code`: `major * 10000 + minor * 100 + patch`
    /// from 2.9 on, `major * 1000 + minor * 100 + patch` before (nccl.h's `NCCL_VERSION`).
    pub fn from_code(code: u32) -> NcclVersion {
        if code >= 20_900 {
            NcclVersion { major: code / 10_000, minor: code / 100 % 100, patch: code % 100 }
        } else {
            NcclVersion { major: code / 1000, minor: code / 100 % 10, patch: code % 100 }
        }
    }
}

impl fmt::Display for NcclVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Proof that the NCCL library was found (cudarc's NCCL bindings will not panic), with its
/// version, at least [`MIN_NCCL`].
#[derive(Clone, Copy, Debug)]
pub struct NcclApi {
    version: NcclVersion,
}

impl NcclApi {
    /// Loads NCCL once per process: [`CudaError::NcclMissing`] without the library,
    /// [`CudaError::NcclTooOld`] below [`MIN_NCCL`].
    pub fn load() -> Result<NcclApi> {
        /// What loading found, once per process.
        enum Loaded {
            Missing,
            Failed(String),
            Found(NcclVersion),
        }
        static LOADED: OnceLock<Loaded> = OnceLock::new();
        let loaded = LOADED.get_or_init(|| {
            // SAFETY: `is_culib_present` only dlopens and closes candidate library names.
            if !unsafe { sys::is_culib_present() } {
                return Loaded::Missing;
            }
            let mut code: std::ffi::c_int = 0;
            // SAFETY: the library is present (checked), and every NCCL release exports
            // `ncclGetVersion`, which writes one int.
            let status = unsafe { sys::ncclGetVersion(&mut code) };
            if status != sys::ncclResult_t::ncclSuccess {
                return Loaded::Failed(format!("{status:?}"));
            }
            Loaded::Found(NcclVersion::from_code(u32::try_from(code).unwrap_or(0)))
        });
        match loaded {
            Loaded::Missing => Err(CudaError::NcclMissing),
            Loaded::Failed(message) => {
                Err(CudaError::Nccl { op: "ncclGetVersion", message: message.clone() })
            }
            Loaded::Found(version) if *version < MIN_NCCL => {
                Err(CudaError::NcclTooOld { found: version.to_string() })
            }
            Loaded::Found(version) => Ok(NcclApi { version: *version }),
        }
    }

    /// The loaded release.
    pub fn version(&self) -> NcclVersion {
        self.version
    }
}

/// The loaded NCCL's release, or why there is none usable.
pub fn nccl_version() -> Result<NcclVersion> {
    NcclApi::load().map(|api| api.version())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_codes_decode_both_encodings() {
        assert_eq!(NcclVersion::from_code(22_809), NcclVersion { major: 2, minor: 28, patch: 9 });
        assert_eq!(NcclVersion::from_code(21_903), NcclVersion { major: 2, minor: 19, patch: 3 });
        // Before 2.9: major * 1000 + minor * 100 + patch.
        assert_eq!(NcclVersion::from_code(2804), NcclVersion { major: 2, minor: 8, patch: 4 });
        assert_eq!(NcclVersion::from_code(22_809).to_string(), "2.28.9");
    }

    #[test]
    fn releases_order_and_the_minimum_is_2_28() {
        assert!(NcclVersion::from_code(22_700) < MIN_NCCL);
        assert!(NcclVersion::from_code(22_800) >= MIN_NCCL);
        assert!(NcclVersion::from_code(30_000) > MIN_NCCL);
    }

    #[test]
    fn loading_says_what_is_missing_or_which_version_loaded() {
        match nccl_version() {
            Ok(version) => println!("NCCL {version}"),
            Err(CudaError::NcclMissing) => {
                let message = CudaError::NcclMissing.to_string();
                assert!(message.contains("scripts/install-nccl.sh"), "{message}");
                println!("skipped: NCCL not found (scripts/install-nccl.sh)");
            }
            Err(e @ CudaError::NcclTooOld { .. }) => {
                assert!(e.to_string().contains("2.28 or newer"), "{e}");
                println!("NCCL present but refused: {e}");
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
}
