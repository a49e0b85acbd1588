//! The thin unsafe bottom: every raw CUDA driver and NVRTC call of the crate that cudarc's safe
//! layer does not cover.
//!
//! Each function here is a direct, one-call wrapper that turns raw status codes into `Result`s;
//! none holds policy (validation lives in [`crate::device`], [`crate::jit`] and
//! [`crate::launch`]).
//!
//! ## Invariants
//!
//! * cudarc resolves symbols lazily and **panics** when the library is absent. No function here
//!   (and no cudarc call elsewhere in the crate) may run before the library was found: the
//!   zero-sized proofs [`DriverApi`] and [`NvrtcApi`] can only be obtained from
//!   [`DriverApi::load`] / [`NvrtcApi::load`], which check presence first, and every wrapper of
//!   the respective library takes one.
//! * Every `unsafe` block states why its call is sound in a `// SAFETY:` comment.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::sync::OnceLock;

use cudarc::driver::{DriverError, sys as cu};
use cudarc::nvrtc::sys as nv;

/// Proof that the CUDA driver library was found (cudarc's driver bindings will not panic).
#[derive(Clone, Copy, Debug)]
pub(crate) struct DriverApi(());

impl DriverApi {
    /// The proof, or `None` when no CUDA driver library can be loaded. Probed once per process.
    pub(crate) fn load() -> Option<DriverApi> {
        static PRESENT: OnceLock<bool> = OnceLock::new();
        // SAFETY: `is_culib_present` only dlopens and closes candidate library names; loading
        // the NVIDIA driver library runs its initialisers, which have no preconditions.
        let present = *PRESENT.get_or_init(|| unsafe { cu::is_culib_present() });
        present.then_some(DriverApi(()))
    }

    /// `cuDeviceCanAccessPeer`.
    pub(crate) fn can_access_peer(
        self,
        dev: cu::CUdevice,
        peer: cu::CUdevice,
    ) -> Result<bool, DriverError> {
        let mut can: c_int = 0;
        // SAFETY: the library is loaded (`self`); `can` is a valid out-pointer; invalid device
        // handles are reported as an error code, not undefined behaviour.
        unsafe { cu::cuDeviceCanAccessPeer(&mut can, dev, peer) }.result()?;
        Ok(can != 0)
    }

    /// `cuCtxEnablePeerAccess(peer_ctx, 0)` for the context current on this thread. An
    /// already-enabled pair is not an error.
    ///
    /// # Safety
    ///
    /// A live context is current on this thread and `peer_ctx` is a live context.
    pub(crate) unsafe fn enable_peer_access(
        self,
        peer_ctx: cu::CUcontext,
    ) -> Result<(), DriverError> {
        // SAFETY: the library is loaded (`self`); the caller guarantees both contexts are
        // live; flags must be 0.
        match unsafe { cu::cuCtxEnablePeerAccess(peer_ctx, 0) } {
            cu::CUresult::CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED => Ok(()),
            status => status.result(),
        }
    }

    /// Grants device `peer` read/write access to every allocation of `dev`'s default memory
    /// pool (`cuDeviceGetDefaultMemPool` + `cuMemPoolSetAccess`). cudarc allocates from that
    /// pool (stream-ordered `cuMemAllocAsync`), and peer access enabled between contexts does
    /// not cover pool memory: without this, a peer's loads and stores fault.
    pub(crate) fn grant_pool_access(
        self,
        dev: cu::CUdevice,
        peer: cu::CUdevice,
    ) -> Result<(), DriverError> {
        let mut pool = std::mem::MaybeUninit::<cu::CUmemoryPool>::uninit();
        // SAFETY: the library is loaded (`self`); `pool` is a valid out-pointer; an invalid
        // device handle is reported as an error code.
        unsafe { cu::cuDeviceGetDefaultMemPool(pool.as_mut_ptr(), dev) }.result()?;
        // SAFETY: the call above succeeded, so it initialised `pool`.
        let pool = unsafe { pool.assume_init() };
        let desc = cu::CUmemAccessDesc {
            location: cu::CUmemLocation {
                type_: cu::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE,
                id: peer,
            },
            flags: cu::CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
        };
        // SAFETY: `pool` is a live default pool, `desc` points to one valid descriptor.
        unsafe { cu::cuMemPoolSetAccess(pool, &desc, 1) }.result()
    }

    /// `cuDriverGetVersion`: the CUDA version the driver supports, as `1000 * major + 10 * minor`.
    pub(crate) fn driver_version(self) -> Result<u32, DriverError> {
        let mut version: c_int = 0;
        // SAFETY: the library is loaded (`self`); `version` is a valid out-pointer.
        unsafe { cu::cuDriverGetVersion(&mut version) }.result()?;
        Ok(version.max(0) as u32)
    }

    /// `cuFuncGetParamInfo`: the size in bytes of parameter `index` of `func`; an error for an
    /// index past the last parameter (requires a CUDA 12.4+ driver).
    ///
    /// # Safety
    ///
    /// `func` is a function of a module that is still loaded.
    pub(crate) unsafe fn param_size(
        self,
        func: cu::CUfunction,
        index: usize,
    ) -> Result<usize, DriverError> {
        let (mut offset, mut size) = (0usize, 0usize);
        // SAFETY: the library is loaded (`self`); the caller guarantees `func` is live; both
        // are valid out-pointers; an index past the last parameter is an error code.
        unsafe { cu::cuFuncGetParamInfo(func, index, &mut offset, &mut size) }.result()?;
        Ok(size)
    }

    /// `cuTensorMapEncodeTiled` for a 2-D tensor: `dims` = (inner, outer) elements,
    /// `row_stride` bytes between outer indices, `boxes` = (inner, outer) box elements, no
    /// interleave, the 128-byte swizzle (or none: `swizzle` false), 256-byte L2 promotion,
    /// out-of-bounds elements read as 0.
    ///
    /// # Safety
    ///
    /// `map` points to a writable, 64-byte aligned 128-byte tensor map.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn encode_tiled_2d(
        self,
        map: *mut cu::CUtensorMap,
        data_type: cu::CUtensorMapDataType,
        address: u64,
        dims: [u64; 2],
        row_stride: u64,
        boxes: [u32; 2],
        swizzle: bool,
    ) -> Result<(), DriverError> {
        let strides = [row_stride];
        let element_strides = [1u32, 1u32];
        // SAFETY: the library is loaded (`self`); the caller guarantees `map`; every array
        // argument has the rank (2) or rank - 1 (strides) entries the call reads; the driver
        // validates the values and reports bad ones as an error code.
        unsafe {
            cu::cuTensorMapEncodeTiled(
                map,
                data_type,
                2,
                address as *mut c_void,
                dims.as_ptr(),
                strides.as_ptr(),
                boxes.as_ptr(),
                element_strides.as_ptr(),
                cu::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
                if swizzle {
                    cu::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B
                } else {
                    cu::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_NONE
                },
                cu::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                cu::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
            )
        }
        .result()
    }

    /// The context of `stream` (`cuStreamGetCtx`): a caller's stream is checked against the
    /// kernel's device before a launch on it.
    ///
    /// # Safety
    ///
    /// `stream` is a live stream handle (or null: the current context's legacy stream).
    pub(crate) unsafe fn stream_context(
        self,
        stream: cu::CUstream,
    ) -> Result<cu::CUcontext, DriverError> {
        let mut ctx = std::ptr::null_mut();
        // SAFETY: `stream` is live (the caller's contract); `ctx` is a valid out-pointer.
        unsafe { cu::cuStreamGetCtx(stream, &mut ctx) }.result()?;
        Ok(ctx)
    }

    /// `cuMemsetD8Async`: `bytes` zero bytes at `dst`, in `stream`'s order (captured into a
    /// CUDA graph as a memset node while the stream captures).
    ///
    /// # Safety
    ///
    /// `dst .. dst + bytes` is device memory of `stream`'s context, not in use by other work
    /// until the memset is ordered before it; `stream` is live and its context current.
    pub(crate) unsafe fn memset_zero_async(
        self,
        dst: cu::CUdeviceptr,
        bytes: usize,
        stream: cu::CUstream,
    ) -> Result<(), DriverError> {
        // SAFETY: the caller upholds the contract above.
        unsafe { cu::cuMemsetD8Async(dst, 0, bytes, stream) }.result()
    }

    /// `cuLaunchCooperativeKernel` (`cooperative`: the grid is co-resident, the driver refuses
    /// one that cannot be) or `cuLaunchKernel` (a plain launch, no such promise) of a 1-D grid.
    ///
    /// # Safety
    ///
    /// `func` is a live function of a loaded module whose context is current; `stream` belongs
    /// to that context; the kernel takes exactly one parameter whose type has the size and
    /// layout of `*param`, and everything that parameter points to is valid for the kernel's
    /// whole run; a plain launch's kernel does not wait on other blocks.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn launch(
        self,
        cooperative: bool,
        func: cu::CUfunction,
        grid: u32,
        block: u32,
        dynamic_smem: u32,
        stream: cu::CUstream,
        param: *const c_void,
    ) -> Result<(), DriverError> {
        let mut params = [param.cast_mut()];
        let args = params.as_mut_ptr();
        // SAFETY: the caller upholds this function's contract; `params` holds one pointer to
        // the parameter value, which the driver copies before returning.
        unsafe {
            if cooperative {
                cu::cuLaunchCooperativeKernel(
                    func,
                    grid,
                    1,
                    1,
                    block,
                    1,
                    1,
                    dynamic_smem,
                    stream,
                    args,
                )
            } else {
                let extra = std::ptr::null_mut();
                cu::cuLaunchKernel(func, grid, 1, 1, block, 1, 1, dynamic_smem, stream, args, extra)
            }
        }
        .result()
    }
}

/// Proof that the NVRTC library was found (cudarc's NVRTC bindings will not panic).
#[derive(Clone, Copy, Debug)]
pub(crate) struct NvrtcApi(());

impl NvrtcApi {
    /// The proof, or `None` when no NVRTC library can be loaded. Probed once per process.
    pub(crate) fn load() -> Option<NvrtcApi> {
        static PRESENT: OnceLock<bool> = OnceLock::new();
        // SAFETY: `is_culib_present` only dlopens and closes candidate library names; NVRTC's
        // initialisers have no preconditions.
        let present = *PRESENT.get_or_init(|| unsafe { nv::is_culib_present() });
        present.then_some(NvrtcApi(()))
    }

    /// `nvrtcVersion`: `(major, minor)`.
    pub(crate) fn version(self) -> Result<(u32, u32), NvrtcStatus> {
        let (mut major, mut minor): (c_int, c_int) = (0, 0);
        // SAFETY: the library is loaded (`self`); both are valid out-pointers.
        NvrtcStatus::check(unsafe { nv::nvrtcVersion(&mut major, &mut minor) })?;
        Ok((major.max(0) as u32, minor.max(0) as u32))
    }
}

/// A failed NVRTC status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NvrtcStatus(pub(crate) nv::nvrtcResult);

impl NvrtcStatus {
    fn check(status: nv::nvrtcResult) -> Result<(), NvrtcStatus> {
        match status {
            nv::nvrtcResult::NVRTC_SUCCESS => Ok(()),
            failed => Err(NvrtcStatus(failed)),
        }
    }

    /// NVRTC's own description of the code.
    pub(crate) fn describe(self, _api: NvrtcApi) -> String {
        // SAFETY: the library is loaded (`_api`); `nvrtcGetErrorString` returns a pointer to a
        // static NUL-terminated string (or null, handled below) for any code.
        let text = unsafe { nv::nvrtcGetErrorString(self.0) };
        if text.is_null() {
            return format!("{:?}", self.0);
        }
        // SAFETY: non-null, NUL-terminated and static, per the NVRTC documentation.
        unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned()
    }
}

/// An NVRTC program; destroyed on drop.
///
/// Owns the C strings it was created from, since NVRTC may keep pointers into them until the
/// program is destroyed.
#[derive(Debug)]
pub(crate) struct Program {
    raw: nv::nvrtcProgram,
    _source: CString,
    _name: CString,
    _headers: Vec<(CString, CString)>,
}

impl Program {
    /// `nvrtcCreateProgram` with named headers `(include name, contents)`.
    pub(crate) fn create(
        _api: NvrtcApi,
        source: CString,
        name: CString,
        headers: Vec<(CString, CString)>,
    ) -> Result<Program, NvrtcStatus> {
        let contents: Vec<*const c_char> = headers.iter().map(|(_, text)| text.as_ptr()).collect();
        let names: Vec<*const c_char> = headers.iter().map(|(name, _)| name.as_ptr()).collect();
        let count = c_int::try_from(headers.len())
            .map_err(|_| NvrtcStatus(nv::nvrtcResult::NVRTC_ERROR_INVALID_INPUT))?;
        let mut raw: nv::nvrtcProgram = std::ptr::null_mut();
        // SAFETY: the library is loaded (`_api`); `raw` is a valid out-pointer; every string is
        // NUL-terminated and outlives the program (owned by it below); `contents` and `names`
        // both hold `count` pointers.
        NvrtcStatus::check(unsafe {
            nv::nvrtcCreateProgram(
                &mut raw,
                source.as_ptr(),
                name.as_ptr(),
                count,
                contents.as_ptr(),
                names.as_ptr(),
            )
        })?;
        Ok(Program { raw, _source: source, _name: name, _headers: headers })
    }

    /// `nvrtcCompileProgram`. The log is available afterwards whatever the outcome.
    pub(crate) fn compile(&self, options: &[CString]) -> Result<(), NvrtcStatus> {
        let pointers: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();
        let count = c_int::try_from(pointers.len())
            .map_err(|_| NvrtcStatus(nv::nvrtcResult::NVRTC_ERROR_INVALID_INPUT))?;
        // SAFETY: `self.raw` is a live program; `pointers` holds `count` NUL-terminated
        // strings that outlive the call.
        NvrtcStatus::check(unsafe { nv::nvrtcCompileProgram(self.raw, count, pointers.as_ptr()) })
    }

    /// `nvrtcGetProgramLog`, lossily decoded (NVRTC logs are ASCII in practice).
    pub(crate) fn log(&self) -> Result<String, NvrtcStatus> {
        let mut size = 0usize;
        // SAFETY: `self.raw` is a live program; `size` is a valid out-pointer.
        NvrtcStatus::check(unsafe { nv::nvrtcGetProgramLogSize(self.raw, &mut size) })?;
        let mut buffer = vec![0u8; size.max(1)];
        // SAFETY: `buffer` has room for the `size` bytes (NUL included) NVRTC writes.
        NvrtcStatus::check(unsafe {
            nv::nvrtcGetProgramLog(self.raw, buffer.as_mut_ptr().cast())
        })?;
        let text = buffer.split(|&b| b == 0).next().unwrap_or_default();
        Ok(String::from_utf8_lossy(text).into_owned())
    }

    /// `nvrtcGetCUBIN` (only after a successful compile for a real `sm_XX` architecture).
    pub(crate) fn cubin(&self) -> Result<Vec<u8>, NvrtcStatus> {
        let mut size = 0usize;
        // SAFETY: `self.raw` is a live program; `size` is a valid out-pointer.
        NvrtcStatus::check(unsafe { nv::nvrtcGetCUBINSize(self.raw, &mut size) })?;
        let mut image = vec![0u8; size];
        if size > 0 {
            // SAFETY: `image` has room for exactly the `size` bytes NVRTC writes.
            NvrtcStatus::check(unsafe { nv::nvrtcGetCUBIN(self.raw, image.as_mut_ptr().cast()) })?;
        }
        Ok(image)
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: `self.raw` is a live program, destroyed exactly once here; the status is
        // irrelevant (there is nothing left to release on failure).
        unsafe { nv::nvrtcDestroyProgram(&mut self.raw) };
    }
}
