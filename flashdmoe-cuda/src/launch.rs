//! Loaded kernels: module loading, the dynamic shared memory opt-in, occupancy, and the
//! cooperative launch of a persistent kernel.
//!
//! The launch convention of the crate: a kernel takes exactly **one** by-value parameter, a
//! `#[repr(C)]` struct mirrored on the CUDA side (`extern "C" __global__ void k(const P p)`),
//! and runs as a cooperative grid sized by [`Kernel::cooperative_shape`] (SMs x resident
//! blocks per SM), which the driver guarantees to be co-resident.
//!
//! ## Invariants
//!
//! * A [`Kernel`] only exists for a cubin its device can run ([`Arch::can_run_on`]), compiled
//!   by an NVRTC no newer than the driver, with exactly one kernel parameter.
//! * The dynamic shared memory size is fixed when the kernel is loaded: the same value sets the
//!   function's opt-in attribute, feeds every occupancy query and every launch, so the grid an
//!   occupancy query sized is the grid that fits.
//! * [`Kernel::launch_cooperative`] checks everything the host can know before calling the
//!   driver (stream's context, parameter size, block size, grid within co-residency); what it
//!   cannot check (the parameter's meaning, the memory its pointers name) is its safety
//!   contract.
//!
//! [`Arch::can_run_on`]: crate::arch::Arch::can_run_on

use std::ffi::c_void;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaContext, CudaFunction, CudaStream};
use cudarc::nvrtc::Ptx;

use crate::device::{CudaVersion, Device, driver_version_of};
use crate::error::{CudaError, Result, driver};
use crate::ffi::DriverApi;
use crate::jit::Cubin;

/// The oldest driver (as CUDA version) the crate runs on: `cuFuncGetParamInfo` needs 12.4.
const MIN_DRIVER: CudaVersion = CudaVersion { major: 12, minor: 4 };

/// The largest parameter block accepted. The driver allows more on recent GPUs, but large
/// tables belong in device memory.
pub const MAX_PARAM_BYTES: usize = 4096;

/// A 1-D launch: `grid` blocks of `block` threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LaunchShape {
    /// Blocks in the grid.
    pub grid: u32,
    /// Threads per block.
    pub block: u32,
}

/// A kernel loaded on one device, ready to launch.
#[derive(Debug)]
pub struct Kernel {
    function: CudaFunction,
    ctx: Arc<CudaContext>,
    api: DriverApi,
    entry: String,
    ordinal: usize,
    sm_count: u32,
    max_block: u32,
    static_smem: u32,
    dynamic_smem: u32,
    param_bytes: usize,
    /// The last occupancy answer, `block << 32 | blocks per SM` (0: none yet): a launch asks
    /// for the same block size every time, and the driver's occupancy query costs host time.
    occupancy: AtomicU64,
}

impl Kernel {
    /// Loads `cubin` on `device` and fixes its dynamic shared memory per block.
    ///
    /// Errors: [`CudaError::ArchMismatch`], [`CudaError::NvrtcNewerThanDriver`],
    /// [`CudaError::DriverTooOld`], [`CudaError::InvalidLaunch`] if static + dynamic shared
    /// memory exceed the device's per-block opt-in limit or the entry point does not take
    /// exactly one parameter, [`CudaError::Driver`] for load failures.
    pub fn load(device: &Device, cubin: &Cubin, dynamic_smem: u32) -> Result<Kernel> {
        let _range = nvtx::LocalRange::new(c"flashdmoe::Kernel::load");
        let gpu = device.gpu();
        let api = device.api();
        if !cubin.arch().can_run_on(gpu.cc) {
            return Err(CudaError::ArchMismatch {
                arch: cubin.arch(),
                ordinal: gpu.ordinal,
                major: gpu.cc.major,
                minor: gpu.cc.minor,
            });
        }
        let driver_cuda = driver_version_of(api)?;
        if driver_cuda < MIN_DRIVER {
            return Err(CudaError::DriverTooOld {
                major: driver_cuda.major,
                minor: driver_cuda.minor,
            });
        }
        if cubin.nvrtc() > driver_cuda {
            return Err(CudaError::NvrtcNewerThanDriver {
                nvrtc_major: cubin.nvrtc().major,
                nvrtc_minor: cubin.nvrtc().minor,
                driver_major: driver_cuda.major,
                driver_minor: driver_cuda.minor,
            });
        }

        let ctx = Arc::clone(device.context());
        let module = ctx
            .load_module(Ptx::from_binary(cubin.image().to_vec()))
            .map_err(driver("cuModuleLoadData"))?;
        // The entry is a validated C identifier (checked before compilation).
        let function =
            module.load_function(cubin.entry()).map_err(driver("cuModuleGetFunction"))?;
        let attribute = |a| function.get_attribute(a).map_err(driver("cuFuncGetAttribute"));
        let static_smem = attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)?;
        let max_block = attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?;
        let (static_smem, max_block) = (static_smem.max(0) as u32, max_block.max(0) as u32);
        let invalid =
            |reason: String| CudaError::InvalidLaunch { entry: cubin.entry().into(), reason };

        let total_smem = u64::from(static_smem) + u64::from(dynamic_smem);
        if total_smem > u64::from(gpu.smem_per_block_optin) {
            return Err(invalid(format!(
                "{static_smem} bytes of static plus {dynamic_smem} bytes of dynamic shared memory \
                 exceed the device's {} bytes per block",
                gpu.smem_per_block_optin
            )));
        }
        // Lossless: bounded by the per-block opt-in limit (a few hundred KiB) just above.
        let dynamic = dynamic_smem as i32;
        function
            .set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                dynamic,
            )
            .map_err(driver("cuFuncSetAttribute"))?;

        let raw = function.cu_function();
        // SAFETY: `raw` belongs to `module`, which `function` keeps loaded.
        let param_size = |index| unsafe { api.param_size(raw, index) };
        // The driver reports an index past the last parameter as an error (its exact code is
        // not documented), so "exactly one" is: index 0 answers and index 1 does not.
        let param_bytes = match (param_size(0), param_size(1)) {
            (Ok(bytes), Err(_)) => bytes,
            (first, second) => {
                return Err(invalid(format!(
                    "the entry point must take exactly one (by-value struct) parameter \
                     (cuFuncGetParamInfo: parameter 0 {first:?}, parameter 1 {second:?})"
                )));
            }
        };
        Ok(Kernel {
            function,
            ctx,
            api,
            entry: cubin.entry().to_owned(),
            ordinal: gpu.ordinal,
            sm_count: gpu.sm_count,
            max_block,
            static_smem,
            dynamic_smem,
            param_bytes,
            occupancy: AtomicU64::new(0),
        })
    }

    /// The entry point's name.
    pub fn entry(&self) -> &str {
        &self.entry
    }

    /// The device ordinal it is loaded on.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// Dynamic shared memory per block, in bytes, used by every launch.
    pub fn dynamic_smem(&self) -> u32 {
        self.dynamic_smem
    }

    /// Static shared memory per block, in bytes.
    pub fn static_smem(&self) -> u32 {
        self.static_smem
    }

    /// The largest block this function can be launched with (registers, `__launch_bounds__`).
    pub fn max_block(&self) -> u32 {
        self.max_block
    }

    /// Size in bytes of the kernel's single parameter.
    pub fn param_bytes(&self) -> usize {
        self.param_bytes
    }

    fn invalid(&self, reason: String) -> CudaError {
        CudaError::InvalidLaunch { entry: self.entry.clone(), reason }
    }

    /// How many blocks of `block` threads can be resident on one SM at once (with this
    /// kernel's registers and shared memory); 0 if not even one fits.
    pub fn blocks_per_sm(&self, block: u32) -> Result<u32> {
        if block == 0 || block > self.max_block {
            return Err(self.invalid(format!(
                "block of {block} threads; this kernel allows 1..={}",
                self.max_block
            )));
        }
        self.ctx.bind_to_thread().map_err(driver("cuCtxSetCurrent"))?;
        self.function
            .occupancy_max_active_blocks_per_multiprocessor(block, self.dynamic_smem as usize, None)
            .map_err(driver("cuOccupancyMaxActiveBlocksPerMultiprocessor"))
    }

    /// The largest cooperative grid of `block`-thread blocks: every SM filled to occupancy.
    pub fn cooperative_shape(&self, block: u32) -> Result<LaunchShape> {
        let per_sm = self.blocks_per_sm(block)?;
        if per_sm == 0 {
            return Err(self.invalid(format!(
                "not one block of {block} threads fits on an SM ({} bytes of shared memory)",
                self.static_smem + self.dynamic_smem
            )));
        }
        Ok(LaunchShape { grid: self.sm_count * per_sm, block })
    }

    /// Launches the kernel as a cooperative grid on `stream` with `params` as its single
    /// by-value parameter. Returns once the launch is queued; errors during execution surface
    /// at the next synchronisation ([`Device::synchronize`]).
    ///
    /// Errors ([`CudaError::InvalidLaunch`]): `stream` is not of this kernel's device,
    /// `size_of::<P>()` differs from the kernel's parameter or exceeds [`MAX_PARAM_BYTES`],
    /// the block is outside `1..=max_block()`, or the grid is empty or larger than the
    /// co-resident maximum ([`Kernel::cooperative_shape`]).
    ///
    /// # Safety
    ///
    /// `P` has the layout of the kernel's parameter type, and every device address in
    /// `params` is valid for the accesses the kernel makes, until the kernel has finished,
    /// with earlier writes to that memory ordered before this launch (e.g. issued on `stream`).
    pub unsafe fn launch_cooperative<P: bytemuck::Pod>(
        &self,
        stream: &CudaStream,
        shape: LaunchShape,
        params: &P,
    ) -> Result<()> {
        // SAFETY: the caller's contract is this function's.
        unsafe { self.launch_on(true, stream, shape, params) }
    }

    /// [`Kernel::launch_checked`] on a cudarc stream, checked to be of this kernel's device.
    ///
    /// # Safety
    ///
    /// As [`Kernel::launch_checked`].
    unsafe fn launch_on<P: bytemuck::Pod>(
        &self,
        cooperative: bool,
        stream: &CudaStream,
        shape: LaunchShape,
        params: &P,
    ) -> Result<()> {
        if stream.context().cu_ctx() != self.ctx.cu_ctx() {
            return Err(self.invalid(format!(
                "the stream belongs to device {}, the kernel to device {}",
                stream.context().ordinal(),
                self.ordinal
            )));
        }
        // SAFETY: `stream` is a live cudarc stream of this kernel's context (checked); the
        // parameter contract is the caller's.
        unsafe { self.launch_checked(cooperative, stream.cu_stream(), shape, params) }
    }

    /// [`Kernel::launch_cooperative`] on a caller's raw stream handle (a PyTorch stream, a
    /// stream being captured into a CUDA graph), checked to belong to this kernel's context.
    ///
    /// # Safety
    ///
    /// As [`Kernel::launch_cooperative`], and `stream` is a live stream handle.
    pub unsafe fn launch_cooperative_raw<P: bytemuck::Pod>(
        &self,
        stream: cudarc::driver::sys::CUstream,
        shape: LaunchShape,
        params: &P,
    ) -> Result<()> {
        // SAFETY: the caller's contract is this function's.
        unsafe { self.launch_checked(true, stream, shape, params) }
    }

    /// The checks and the driver call of [`Kernel::launch_cooperative_raw`] and
    /// [`Kernel::launch_plain`].
    ///
    /// # Safety
    ///
    /// As [`Kernel::launch_cooperative_raw`]; a plain launch's kernel does not wait on other
    /// blocks.
    unsafe fn launch_checked<P: bytemuck::Pod>(
        &self,
        cooperative: bool,
        stream: cudarc::driver::sys::CUstream,
        shape: LaunchShape,
        params: &P,
    ) -> Result<()> {
        let _range = nvtx::LocalRange::new(c"flashdmoe::Kernel::launch_cooperative");
        self.ctx.bind_to_thread().map_err(driver("cuCtxSetCurrent"))?;
        // SAFETY: `stream` is live (the caller's contract).
        let ctx = unsafe { self.api.stream_context(stream) }.map_err(driver("cuStreamGetCtx"))?;
        if ctx != self.ctx.cu_ctx() {
            return Err(self.invalid(format!(
                "the stream belongs to another context than device {}'s",
                self.ordinal
            )));
        }
        let bytes = size_of::<P>();
        if bytes != self.param_bytes || bytes > MAX_PARAM_BYTES {
            return Err(self.invalid(format!(
                "a {bytes}-byte parameter block; the kernel takes {} bytes (at most {MAX_PARAM_BYTES})",
                self.param_bytes
            )));
        }
        let cached = self.occupancy.load(Ordering::Relaxed);
        let per_sm = if cached != 0 && (cached >> 32) as u32 == shape.block {
            cached as u32
        } else {
            let per_sm = self.blocks_per_sm(shape.block)?;
            self.occupancy
                .store(u64::from(shape.block) << 32 | u64::from(per_sm), Ordering::Relaxed);
            per_sm
        };
        let capacity = self.sm_count * per_sm;
        if shape.grid == 0 || shape.grid > capacity {
            return Err(self.invalid(format!(
                "cooperative grid of {} blocks; 1..={capacity} blocks of {} threads can be \
                 co-resident",
                shape.grid, shape.block
            )));
        }
        // SAFETY: the function is live (its module is held by `self.function`) and its context
        // is current; `stream` belongs to that context (checked); the kernel takes exactly one
        // parameter of `size_of::<P>()` bytes (checked), and `P: Pod` has no padding, so the
        // driver reads initialised bytes; the validity of what `params` points to is the
        // caller's contract.
        unsafe {
            self.api.launch(
                cooperative,
                self.function.cu_function(),
                shape.grid,
                shape.block,
                self.dynamic_smem,
                stream,
                (params as *const P).cast::<c_void>(),
            )
        }
        .map_err(driver(if cooperative {
            "cuLaunchCooperativeKernel"
        } else {
            "cuLaunchKernel"
        }))
    }

    /// A plain (not cooperative) launch of `shape` on `stream`, with the checks of
    /// [`Kernel::launch_cooperative`] (the grid within the co-resident maximum): for [`crate::launch_cost`],
    /// which times what the cooperative launch itself costs, and for the tile bench's 2-CTA
    /// cluster images (a cluster's blocks wait on each other only, scheduled together by the
    /// hardware). Nothing else launches plainly.
    ///
    /// # Safety
    ///
    /// As [`Kernel::launch_cooperative`]; and the kernel must not wait on other blocks (a
    /// plain launch does not promise that the grid is co-resident).
    pub(crate) unsafe fn launch_plain<P: bytemuck::Pod>(
        &self,
        stream: &CudaStream,
        shape: LaunchShape,
        params: &P,
    ) -> Result<()> {
        // SAFETY: the caller's contract is this function's.
        unsafe { self.launch_on(false, stream, shape, params) }
    }

    /// Zeroes `bytes` at `dst` on a caller's raw `stream` (in its order; a memset node when
    /// the stream captures a graph).
    ///
    /// # Safety
    ///
    /// `dst .. dst + bytes` is device memory of this kernel's context that no other work uses
    /// until the memset is ordered before it; `stream` is a live stream of that context.
    pub unsafe fn memset_zero_raw(
        &self,
        dst: u64,
        bytes: usize,
        stream: cudarc::driver::sys::CUstream,
    ) -> Result<()> {
        self.ctx.bind_to_thread().map_err(driver("cuCtxSetCurrent"))?;
        // SAFETY: the caller upholds the contract; the context is current.
        unsafe { self.api.memset_zero_async(dst, bytes, stream) }.map_err(driver("cuMemsetD8Async"))
    }
}
