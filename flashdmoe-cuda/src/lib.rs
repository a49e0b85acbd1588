//! # flashdmoe-cuda: the GPU backend
//!
//! Runs the FlashDMoE layer as one persistent CUDA kernel per GPU ([`CudaBackend`], in
//! [`layer`]). The modules, leaves first (each imports only modules earlier in this list;
//! `tests/modules.rs` checks there is no cycle):
//!
//! * [`arch`]: what is compiled for ([`Arch`], [`ComputeCapability`]);
//! * `error` ([`CudaError`]), `ffi` (private raw calls), `cache` (private JIT disk cache),
//!   `ptxas` (the ptxas resource report, [`CompileReport`]);
//! * [`kernels`]: the embedded CUDA sources and headers and the types naming one compilation
//!   ([`KernelSource`], [`Defines`], [`KernelVariant`], [`Targets`]);
//! * [`device`]: typed discovery ([`Gpu`], [`cuda_available`], [`nvrtc_version`]), opened
//!   devices ([`Device`]: context + stream) and all-pairs peer access;
//! * [`jit`]: NVRTC compilation of the kernels for a device's architecture, specialised by
//!   `-D` defines, whose ptxas report must show zero spills, cached in memory and on disk
//!   ([`Jit`]);
//! * [`launch`]: loading a [`Cubin`] on a device, the dynamic shared-memory opt-in, occupancy,
//!   and the cooperative launch of a persistent grid ([`Kernel`]);
//! * [`wgmma`], [`tma`], [`engine`], [`params`]: the generated wgmma wrappers, TMA tensor
//!   maps, the Hopper tile engine's host-side sizes, and the MoE kernel's launch parameters
//!   (with their generated C header);
//! * [`selftest`], [`spec`], [`tile_bench`]: the kernel families: the device self-test, the
//!   MoE kernel's specialisation ([`MoeSpec`]), the tile-engine benchmark;
//! * [`variants`]: [`kernel_variants`], every variant of every family, the list CI
//!   compile-checks;
//! * [`layer`]: the backend.
//!
//! ## Layering
//!
//! * **Thin unsafe bottom** (`ffi`, private): one-call wrappers of the raw driver and NVRTC
//!   functions cudarc's safe layer lacks, plus cudarc itself.
//! * **Validated middle** ([`device`], [`jit`], [`launch`]): every request is checked against
//!   what the host knows (device limits, compatibility, parameter size, co-residency, spills)
//!   and every failure is a typed [`CudaError`].
//! * **Safe top**: the backend (layer execution) built on these; the only `unsafe` left to it
//!   is [`Kernel::launch_cooperative`], whose contract (what the parameter block's device
//!   addresses point to) only the caller can uphold.
//!
//! ## Invariants
//!
//! * No panic on a machine without a GPU, driver or NVRTC: cudarc panics when a library is
//!   missing, so no cudarc call is reachable before the library was found; absence is
//!   [`CudaError::DriverMissing`], [`CudaError::NoDevice`] or [`CudaError::NvrtcMissing`].
//! * Every `unsafe` block carries a `// SAFETY:` comment (workspace lint).
//! * The backend never inlines CUDA text: sources and headers live in `kernels/`, embedded
//!   with `include_str!`; `kernels/fdm_proto.h` is generated from [`flashdmoe_proto`].
//! * A kernel that spills registers is a compile error, in CI and at run time.
//!
//! ## Environment
//!
//! * `LD_LIBRARY_PATH`: must reach `libcuda.so.1` (the driver) and `libnvrtc.so.13` (with its
//!   `libnvrtc-builtins`).
//! * `FLASHDMOE_CUDA_HOME`: directory with `include/` and `include/cccl` (default
//!   `/usr/local/cuda`).
//! * `FLASHDMOE_CACHE_DIR` (else `$XDG_CACHE_HOME/flashdmoe`, else `~/.cache/flashdmoe`): root
//!   of the on-disk JIT cache.
#![warn(missing_docs)]

pub mod arch;
mod cache;
pub mod device;
pub mod engine;
mod error;
mod ffi;
pub mod jit;
pub mod kernels;
pub mod launch;
pub mod launch_cost;
pub mod layer;
pub mod nccl;
pub mod params;
mod ptxas;
pub mod selftest;
pub mod spec;
pub mod tile_bench;
pub mod tma;
pub mod variants;
pub mod wgmma;

pub use arch::{Arch, ComputeCapability};
/// The cudarc this crate is built with: streams and device memory for
/// [`CudaLayer::forward_device`] of the same version.
pub use cudarc;
pub use device::{
    CudaVersion, Device, Gpu, cuda_available, driver_version, enable_peer_access, gpus,
    nvrtc_version,
};
pub use error::{CudaError, Result};
pub use jit::{Compiled, Cubin, Jit, JitConfig, Origin};
pub use kernels::{Defines, KernelSource, KernelVariant, Targets};
pub use launch::{Kernel, LaunchShape};
pub use layer::{
    CudaBackend, CudaLayer, CudaOptions, DeviceIo, DeviceRouting, GroupOptions, PhaseTimes,
    ProcessGroup, TaskMarks,
};
pub use ptxas::{CompileReport, FunctionReport};
pub use selftest::{SelftestReport, run_selftest};
pub use spec::{CombineForm, EngineChoice, MoeSpec, PairChoice, TileChoice, TileEngine};
pub use variants::kernel_variants;
