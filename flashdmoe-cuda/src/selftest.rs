//! The device self-test: compiles `kernels/selftest.cu` for a device, launches it
//! cooperatively over the whole GPU and checks every block's result.
//!
//! It proves, on real hardware, the host plumbing the persistent MoE kernel depends on: JIT
//! for the device's own architecture (including the generated protocol header), module
//! loading, the dynamic shared-memory opt-in above 48 KiB, the by-value parameter block, the
//! occupancy-sized cooperative grid being co-resident, and the header's signal helpers
//! agreeing with [`flashdmoe_proto::signal`] (the host passes the last epoch before the wrap,
//! so the kernel's `fdm_epoch_next` must wrap exactly like [`Epoch::next`]).

use bytemuck::{Pod, Zeroable};
use cudarc::driver::DevicePtrMut;
use flashdmoe_proto::Epoch;
use flashdmoe_proto::signal;

use crate::arch::Arch;
use crate::device::Device;
use crate::error::{CudaError, Result, driver};
use crate::jit::{Jit, Origin};
use crate::kernels::{Defines, KernelVariant, SELFTEST, Targets};
use crate::launch::{Kernel, LaunchShape};

/// Threads per self-test block (compiled in as `FDM_SELFTEST_THREADS`).
pub const SELFTEST_THREADS: u32 = 256;

/// Dynamic shared memory per self-test block: above the 48 KiB default, so the opt-in path
/// is exercised, and within every supported GPU's per-block limit (99 KiB on sm_86/sm_89).
pub const SELFTEST_SMEM_BYTES: u32 = 64 * 1024;

/// How long each block waits for the rest of the grid before giving up.
const TIMEOUT_NS: u64 = 2_000_000_000;

/// The epoch passed to the kernel: the last one before the wrap.
const HOST_EPOCH: Epoch = Epoch::FIRST.prev();

/// The self-test's compile variant.
pub(crate) fn variant() -> KernelVariant {
    variant_with_threads(SELFTEST_THREADS)
}

/// The self-test kernel compiled for blocks of `threads` threads (`launch_cost` times it at
/// the MoE kernel's block size).
pub(crate) fn variant_with_threads(threads: u32) -> KernelVariant {
    let label = if threads == SELFTEST_THREADS {
        "selftest".to_string()
    } else {
        format!("selftest-{threads}")
    };
    KernelVariant {
        fallback: None,
        targets: Targets::Portable,
        label,
        source: SELFTEST,
        defines: Defines::new().set("FDM_SELFTEST_THREADS", threads),
    }
}

/// Mirrors `fdm_selftest_params` in `kernels/selftest.cu` (whose static_asserts pin the
/// same size and offsets).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub(crate) struct SelftestParams {
    out: u64,
    arrivals: u64,
    timeout_ns: u64,
    smem_words: u32,
    epoch: u32,
    fill: u64,
    fill_words: u64,
    span: u64,
}

impl SelftestParams {
    /// A launch with nothing to do: no shared memory filled and a zero timeout, so each
    /// block's thread 0 counts its arrival, looks once, and ends (no block waits for another).
    pub(crate) fn idle(out: u64, arrivals: u64) -> SelftestParams {
        SelftestParams {
            out,
            arrivals,
            timeout_ns: 0,
            smem_words: 0,
            epoch: HOST_EPOCH.get(),
            fill: 0,
            fill_words: 0,
            span: 0,
        }
    }

    /// The same, writing `words` u64 words at `fill` as its last act, and recording its first
    /// block start and last block end at `span` (two u64: set to u64::MAX and 0 before).
    pub(crate) fn storing(self, fill: u64, words: u64, span: u64) -> SelftestParams {
        SelftestParams { fill, fill_words: words, span, ..self }
    }
}

const _: () = assert!(size_of::<SelftestParams>() == 56);

/// What a passing self-test ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelftestReport {
    /// Device ordinal.
    pub ordinal: usize,
    /// The architecture compiled for.
    pub arch: Arch,
    /// Where the cubin came from.
    pub origin: Origin,
    /// Registers per thread of the self-test kernel.
    pub registers: Option<u32>,
    /// Resident blocks per SM at [`SELFTEST_THREADS`] threads and [`SELFTEST_SMEM_BYTES`].
    pub blocks_per_sm: u32,
    /// The cooperative grid launched (every SM filled to occupancy).
    pub shape: LaunchShape,
}

/// Runs the self-test on `device`; [`CudaError::SelftestFailed`] names the first wrong block.
pub fn run_selftest(jit: &Jit, device: &Device) -> Result<SelftestReport> {
    let _range = nvtx::LocalRange::new(c"flashdmoe::selftest");
    let arch = Arch::for_device(device.gpu().cc);
    let compiled = jit.compile_variant(&variant(), arch)?;
    let kernel = Kernel::load(device, &compiled.cubin, SELFTEST_SMEM_BYTES)?;
    let shape = kernel.cooperative_shape(SELFTEST_THREADS)?;
    let blocks = shape.grid as usize;

    let stream = device.stream();
    let mut out = stream.alloc_zeros::<u64>(2 * blocks).map_err(driver("cuMemAllocAsync"))?;
    let mut arrivals = stream.alloc_zeros::<u32>(1).map_err(driver("cuMemAllocAsync"))?;
    {
        let (out_ptr, _out_guard) = out.device_ptr_mut(stream);
        let (arrivals_ptr, _arrivals_guard) = arrivals.device_ptr_mut(stream);
        let params = SelftestParams {
            out: out_ptr,
            arrivals: arrivals_ptr,
            timeout_ns: TIMEOUT_NS,
            smem_words: SELFTEST_SMEM_BYTES / 4,
            epoch: HOST_EPOCH.get(),
            fill: 0,
            fill_words: 0,
            span: 0,
        };
        // SAFETY: `SelftestParams` mirrors `fdm_selftest_params` (pinned by static_asserts on
        // both sides); `out` holds the 2 * grid words and `arrivals` the one counter the kernel
        // touches, both zeroed on `stream` before this launch on `stream`, and both outlive the
        // kernel (we synchronise below before they drop).
        unsafe { kernel.launch_cooperative(stream, shape, &params) }?;
    }
    device.synchronize()?;
    let words = stream.clone_dtoh(&out).map_err(driver("cuMemcpyDtoHAsync"))?;

    let ordinal = device.ordinal();
    let arrived = signal::encode(HOST_EPOCH.next(), shape.grid);
    for (block, pair) in words.chunks_exact(2).enumerate() {
        let checksum: u64 = (0..SELFTEST_SMEM_BYTES / 4).map(|i| u64::from(i ^ block as u32)).sum();
        if pair[0] != arrived {
            return Err(CudaError::SelftestFailed {
                ordinal,
                reason: format!(
                    "block {block} saw epoch {} with {} of {} blocks arrived; expected epoch {} \
                     with all (grid not co-resident, or the header's signal helpers drifted)",
                    signal::epoch_bits(pair[0]),
                    signal::payload_bits(pair[0]),
                    shape.grid,
                    HOST_EPOCH.next(),
                ),
            });
        }
        if pair[1] != checksum {
            return Err(CudaError::SelftestFailed {
                ordinal,
                reason: format!(
                    "block {block} read back shared-memory checksum {:#x}, expected {checksum:#x}",
                    pair[1]
                ),
            });
        }
    }
    Ok(SelftestReport {
        ordinal,
        arch,
        origin: compiled.origin,
        registers: compiled.cubin.report().entry(SELFTEST.entry).and_then(|f| f.registers),
        blocks_per_sm: shape.grid / device.gpu().sm_count,
        shape,
    })
}
