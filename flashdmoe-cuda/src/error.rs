//! The one error type of the CUDA backend.
//!
//! Every fallible operation of this crate returns a [`CudaError`]; nothing in the crate panics
//! on bad input, a missing library or a missing device. Messages name the failing operation
//! and, where one exists, the fix (which library, which environment variable).

use std::path::PathBuf;

use cudarc::driver::DriverError;

use crate::arch::Arch;

/// Everything that can go wrong in device discovery, JIT compilation, module loading and
/// kernel launch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CudaError {
    /// The CUDA driver library could not be loaded.
    #[error(
        "the CUDA driver library (libcuda.so.1) was not found: this machine has no NVIDIA \
         driver, or its directory is not on the loader path (add it to LD_LIBRARY_PATH)"
    )]
    DriverMissing,

    /// The driver is installed but reports no usable device.
    #[error("the CUDA driver is installed but reports no GPU ({detail})")]
    NoDevice {
        /// What the driver said (e.g. the error of `cuInit`, or "0 devices").
        detail: String,
    },

    /// The NVRTC library could not be loaded.
    #[error(
        "NVRTC (libnvrtc.so.13) was not found: add the directory holding it to LD_LIBRARY_PATH \
         (CUDA toolkit: /usr/local/cuda/lib64; pinned wheels: scripts/install-nvrtc.sh, then \
         LD_LIBRARY_PATH=$FLASHDMOE_NVRTC_DIR/nvidia/cu13/lib)"
    )]
    NvrtcMissing,

    /// The loaded NVRTC is older than the oldest release this crate supports.
    #[error("NVRTC {major}.{minor} is too old: NVRTC 12.0 or newer is required (13.0 is pinned)")]
    NvrtcTooOld {
        /// NVRTC major version.
        major: u32,
        /// NVRTC minor version.
        minor: u32,
    },

    /// No NCCL library could be loaded (one process per GPU needs it; one process does not).
    #[error(
        "NCCL (libnccl.so) was not found: the loader looks for libnccl.so, while the pip wheel \
         ships only libnccl.so.2; run `eval \"$(scripts/install-nccl.sh)\"`, which links it into \
         a directory and puts that on LD_LIBRARY_PATH"
    )]
    NcclMissing,

    /// The loaded NCCL is older than the first release whose windows give peer pointers.
    #[error(
        "NCCL {found} is too old: NCCL 2.28 or newer is required (its symmetric memory windows; \
         2.28.9 is what the GPU machines' PyTorch ships)"
    )]
    NcclTooOld {
        /// The loaded version, `major.minor.patch`.
        found: String,
    },

    /// An NCCL call failed.
    #[error("NCCL call {op} failed: {message}")]
    Nccl {
        /// The NCCL operation (e.g. `"ncclGetVersion"`).
        op: &'static str,
        /// NCCL's result code.
        message: String,
    },

    /// An environment variable would make NCCL hand out windows without peer pointers (or
    /// none at all): refused before NCCL is touched.
    #[error("{var}={value} is set: {reason}; unset it to run one process per GPU")]
    NcclEnv {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What it would break.
        reason: &'static str,
    },

    /// Building the symmetric heap across processes failed at `step` (communicator, window,
    /// peer pointers, stamp check): nothing is guessed, the layer is not built.
    #[error("one-process-per-GPU bootstrap failed at {step}: {reason}")]
    Bootstrap {
        /// The step (e.g. `"ncclCommInitRankConfig"`, `"peer stamp"`).
        step: &'static str,
        /// What went wrong, naming the rank where one is to blame.
        reason: String,
    },

    /// The CUDA headers NVRTC needs (`cuda_fp16.h`, `cuda_bf16.h`, ...) were not found.
    #[error(
        "CUDA headers not found: {path} is not a directory; set FLASHDMOE_CUDA_HOME to a \
         directory holding include/ (and include/cccl), e.g. /usr/local/cuda or \
         $FLASHDMOE_NVRTC_DIR/nvidia/cu13"
    )]
    CudaHeadersMissing {
        /// The include directory that was looked for.
        path: PathBuf,
    },

    /// A CUDA driver call failed.
    #[error("CUDA driver call {op} failed: {code}")]
    Driver {
        /// The driver operation (e.g. `"cuModuleLoadData"`).
        op: &'static str,
        /// The driver's error code.
        #[source]
        code: DriverError,
    },

    /// An NVRTC call other than the compilation itself failed.
    #[error("NVRTC call {op} failed: {message}")]
    Nvrtc {
        /// The NVRTC operation (e.g. `"nvrtcGetCUBIN"`).
        op: &'static str,
        /// NVRTC's description of the error code, plus a hint where one helps.
        message: String,
    },

    /// The kernel source does not compile.
    #[error("{kernel} does not compile for {arch}:\n{log}")]
    Compile {
        /// Kernel file name.
        kernel: String,
        /// Target architecture.
        arch: Arch,
        /// The full NVRTC log (compiler diagnostics).
        log: String,
    },

    /// The kernel compiled but ptxas spilled registers to local memory.
    #[error("{kernel} spills registers on {arch} ({summary}); zero spills are required:\n{log}")]
    Spills {
        /// Kernel file name.
        kernel: String,
        /// Target architecture.
        arch: Arch,
        /// `function: N bytes stores, M bytes loads` for each spilling function.
        summary: String,
        /// The full NVRTC log (ptxas report).
        log: String,
    },

    /// The compiled image does not contain the kernel's entry point.
    #[error(
        "{kernel} has no entry function `{entry}` in its ptxas report (is it `extern \"C\" \
         __global__`?)"
    )]
    EntryMissing {
        /// Kernel file name.
        kernel: String,
        /// The expected `extern "C"` entry point.
        entry: String,
    },

    /// A kernel source, name or entry point is not acceptable to NVRTC.
    #[error("invalid kernel source {kernel}: {reason}")]
    InvalidSource {
        /// Kernel file name.
        kernel: String,
        /// What is wrong.
        reason: &'static str,
    },

    /// A preprocessor define is malformed.
    #[error("invalid define `{name}`: {reason}")]
    InvalidDefine {
        /// The define's name as given.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },

    /// The on-disk JIT cache could not be created or written.
    #[error(
        "JIT cache: cannot {op} {path}: {source} (set FLASHDMOE_CACHE_DIR to a writable directory)"
    )]
    Cache {
        /// What was attempted (e.g. `"create directory"`).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// A device ordinal beyond the number of devices.
    #[error("device {ordinal} does not exist ({count} devices)")]
    DeviceOutOfRange {
        /// The requested ordinal.
        ordinal: usize,
        /// Number of devices the driver reports.
        count: usize,
    },

    /// The device cannot run the FlashDMoE kernel.
    #[error("device {ordinal} ({name}, sm_{major}{minor}) is not supported: {reason}")]
    UnsupportedDevice {
        /// Device ordinal.
        ordinal: usize,
        /// Device name.
        name: String,
        /// Compute capability major.
        major: u32,
        /// Compute capability minor.
        minor: u32,
        /// Why it is rejected.
        reason: &'static str,
    },

    /// A cubin was compiled for an architecture the device cannot run.
    #[error("a cubin for {arch} cannot run on device {ordinal} (sm_{major}{minor})")]
    ArchMismatch {
        /// The cubin's architecture.
        arch: Arch,
        /// Device ordinal.
        ordinal: usize,
        /// Device compute capability major.
        major: u32,
        /// Device compute capability minor.
        minor: u32,
    },

    /// The cubin came from an NVRTC newer than the installed driver supports.
    #[error(
        "the kernel was compiled by NVRTC {nvrtc_major}.{nvrtc_minor} but the driver supports \
         CUDA {driver_major}.{driver_minor}; use an NVRTC no newer than the driver (the pinned \
         13.0 wheels: scripts/install-nvrtc.sh)"
    )]
    NvrtcNewerThanDriver {
        /// NVRTC major version.
        nvrtc_major: u32,
        /// NVRTC minor version.
        nvrtc_minor: u32,
        /// Driver CUDA major version.
        driver_major: u32,
        /// Driver CUDA minor version.
        driver_minor: u32,
    },

    /// The installed driver is older than the crate needs.
    #[error(
        "the NVIDIA driver supports CUDA {major}.{minor}; CUDA 12.4 or newer is required \
         (driver 550+)"
    )]
    DriverTooOld {
        /// Driver CUDA major version.
        major: u32,
        /// Driver CUDA minor version.
        minor: u32,
    },

    /// Two devices cannot access each other's memory.
    #[error("device {from} cannot access device {to}'s memory (no peer access between them)")]
    PeerAccessUnsupported {
        /// The accessing device.
        from: usize,
        /// The device whose memory would be accessed.
        to: usize,
    },

    /// A launch configuration is invalid for this kernel on this device.
    #[error("invalid launch of {entry}: {reason}")]
    InvalidLaunch {
        /// The kernel's entry point.
        entry: String,
        /// What is wrong, with the numbers involved.
        reason: String,
    },

    /// The device self-test ran but produced wrong results.
    #[error("device self-test failed on device {ordinal}: {reason}")]
    SelftestFailed {
        /// Device ordinal.
        ordinal: usize,
        /// The first mismatch found.
        reason: String,
    },
}

/// Shorthand used throughout the crate.
pub type Result<T, E = CudaError> = std::result::Result<T, E>;

/// Turns a driver error of operation `op` into a [`CudaError::Driver`].
pub(crate) fn driver(op: &'static str) -> impl FnOnce(DriverError) -> CudaError {
    move |code| CudaError::Driver { op, code }
}
