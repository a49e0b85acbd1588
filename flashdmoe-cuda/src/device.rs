//! Device discovery, contexts and streams, and peer access.
//!
//! * [`cuda_available`] / [`nvrtc_version`]: can this process run (resp. compile) kernels? Each
//!   missing piece is a distinct [`CudaError`]: [`CudaError::DriverMissing`] (no libcuda),
//!   [`CudaError::NoDevice`] (driver but no GPU), [`CudaError::NvrtcMissing`] (no libnvrtc).
//! * [`gpus`]: a typed description ([`Gpu`]) of every device, without creating contexts.
//! * [`Device`]: an opened device (primary context + one stream) that can run the kernel.
//! * [`enable_peer_access`]: all-pairs peer access between opened devices.
//!
//! ## Invariants
//!
//! * Nothing here panics when a library or device is missing: every path into cudarc first
//!   obtains the library proof of the private `ffi` module, and its absence is a typed error.
//! * A [`Device`] exists only for a supported GPU ([`Gpu::check_supported`]): compute
//!   capability 8.0 or newer, with cooperative launch.
//! * Peer access is all-or-nothing: [`enable_peer_access`] checks every pair before enabling any.

use std::ffi::c_int;
use std::fmt;
use std::sync::Arc;

use cudarc::driver::result as cu_result;
use cudarc::driver::sys::{CUdevice, CUdevice_attribute, CUresult};
use cudarc::driver::{CudaContext, CudaStream};

use crate::arch::ComputeCapability;
use crate::error::{CudaError, Result, driver};
use crate::ffi::{DriverApi, NvrtcApi};

/// A CUDA release number, e.g. 13.0: the version of NVRTC, or the newest CUDA a driver supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CudaVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl fmt::Display for CudaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The oldest compute capability the kernel supports (mma.sync bf16 tiles, cp.async).
pub const MIN_COMPUTE_CAPABILITY: ComputeCapability = ComputeCapability { major: 8, minor: 0 };

/// What the driver reports about one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpu {
    /// Device ordinal (as numbered by the driver, i.e. after `CUDA_VISIBLE_DEVICES`).
    pub ordinal: usize,
    /// Marketing name, e.g. "NVIDIA H200".
    pub name: String,
    /// Compute capability.
    pub cc: ComputeCapability,
    /// Number of streaming multiprocessors.
    pub sm_count: u32,
    /// Largest shared memory one block may opt in to, in bytes (227 KiB on H100/H200).
    pub smem_per_block_optin: u32,
    /// Shared memory per multiprocessor, in bytes.
    pub smem_per_sm: u32,
    /// L2 cache size in bytes.
    pub l2_bytes: u32,
    /// Maximum threads per block.
    pub max_threads_per_block: u32,
    /// Whether `cuLaunchCooperativeKernel` is supported.
    pub cooperative_launch: bool,
    /// Device memory in bytes.
    pub total_memory: u64,
}

impl Gpu {
    /// `Ok` if the FlashDMoE kernel can run on this device, else
    /// [`CudaError::UnsupportedDevice`] saying why.
    pub fn check_supported(&self) -> Result<()> {
        let reason = if self.cc < MIN_COMPUTE_CAPABILITY {
            "compute capability 8.0 (sm_80) or newer is required"
        } else if !self.cooperative_launch {
            "cooperative launch is not supported"
        } else {
            return Ok(());
        };
        Err(CudaError::UnsupportedDevice {
            ordinal: self.ordinal,
            name: self.name.clone(),
            major: self.cc.major,
            minor: self.cc.minor,
            reason,
        })
    }
}

/// The driver proof after a successful `cuInit`; `NoDevice` when the driver has no GPU.
pub(crate) fn driver_api() -> Result<DriverApi> {
    let api = DriverApi::load().ok_or(CudaError::DriverMissing)?;
    match cu_result::init() {
        Ok(()) => Ok(api),
        Err(code) if code.0 == CUresult::CUDA_ERROR_NO_DEVICE => {
            Err(CudaError::NoDevice { detail: format!("cuInit: {code}") })
        }
        Err(code) => Err(CudaError::Driver { op: "cuInit", code }),
    }
}

/// Number of devices; [`CudaError::NoDevice`] if there are none.
fn device_count(_api: DriverApi) -> Result<usize> {
    let count = cu_result::device::get_count().map_err(driver("cuDeviceGetCount"))?;
    match usize::try_from(count) {
        Ok(count) if count > 0 => Ok(count),
        _ => Err(CudaError::NoDevice { detail: "the driver reports 0 devices".into() }),
    }
}

/// The NVRTC proof, with its version checked to be supported.
pub(crate) fn nvrtc_api() -> Result<(NvrtcApi, CudaVersion)> {
    let api = NvrtcApi::load().ok_or(CudaError::NvrtcMissing)?;
    let (major, minor) = api
        .version()
        .map_err(|status| CudaError::Nvrtc { op: "nvrtcVersion", message: status.describe(api) })?;
    if major < 12 {
        return Err(CudaError::NvrtcTooOld { major, minor });
    }
    Ok((api, CudaVersion { major, minor }))
}

/// Whether this process can run kernels: `Ok` when the CUDA driver library loads, it reports at
/// least one device, and NVRTC loads. Never panics; each missing piece is its own error
/// ([`CudaError::DriverMissing`], [`CudaError::NoDevice`], [`CudaError::NvrtcMissing`]).
pub fn cuda_available() -> Result<()> {
    let api = driver_api()?;
    device_count(api)?;
    nvrtc_api()?;
    Ok(())
}

/// Whether this process can compile kernels (no GPU needed): the loaded NVRTC's version, or
/// [`CudaError::NvrtcMissing`] / [`CudaError::NvrtcTooOld`].
pub fn nvrtc_version() -> Result<CudaVersion> {
    nvrtc_api().map(|(_, version)| version)
}

/// The newest CUDA version the installed driver supports (e.g. 13.0 for driver 580).
pub fn driver_version() -> Result<CudaVersion> {
    driver_version_of(driver_api()?)
}

pub(crate) fn driver_version_of(api: DriverApi) -> Result<CudaVersion> {
    let version = api.driver_version().map_err(driver("cuDriverGetVersion"))?;
    Ok(CudaVersion { major: version / 1000, minor: version % 1000 / 10 })
}

/// Every device the driver reports, described without creating contexts.
pub fn gpus() -> Result<Vec<Gpu>> {
    let api = driver_api()?;
    (0..device_count(api)?).map(|ordinal| query(api, ordinal)).collect()
}

/// The driver handle of `ordinal`, which callers check to be below the device count (itself a
/// `c_int`, so the conversion is lossless).
fn handle(_api: DriverApi, ordinal: usize) -> Result<CUdevice> {
    cu_result::device::get(ordinal as c_int).map_err(driver("cuDeviceGet"))
}

fn query(api: DriverApi, ordinal: usize) -> Result<Gpu> {
    let dev = handle(api, ordinal)?;
    let attr = |attribute: CUdevice_attribute| -> Result<u32> {
        // SAFETY: `dev` was returned by `cuDeviceGet` (the driver is loaded and initialised).
        let value = unsafe { cu_result::device::get_attribute(dev, attribute) }
            .map_err(driver("cuDeviceGetAttribute"))?;
        Ok(value.max(0) as u32)
    };
    use CUdevice_attribute::*;
    Ok(Gpu {
        ordinal,
        name: cu_result::device::get_name(dev).map_err(driver("cuDeviceGetName"))?,
        cc: ComputeCapability {
            major: attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
            minor: attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
        },
        sm_count: attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
        smem_per_block_optin: attr(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?,
        smem_per_sm: attr(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR)?,
        l2_bytes: attr(CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)?,
        max_threads_per_block: attr(CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?,
        cooperative_launch: attr(CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH)? != 0,
        // SAFETY: as above, `dev` came from `cuDeviceGet`.
        total_memory: unsafe { cu_result::device::total_mem(dev) }
            .map_err(driver("cuDeviceTotalMem"))? as u64,
    })
}

/// An opened, supported device: its primary context and one non-blocking stream.
///
/// Several `Device`s may be opened on one ordinal (virtual ranks); they share the primary
/// context and each has its own stream.
#[derive(Debug)]
pub struct Device {
    gpu: Gpu,
    api: DriverApi,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
}

impl Device {
    /// Opens device `ordinal`: [`CudaError::DeviceOutOfRange`] past the device count,
    /// [`CudaError::UnsupportedDevice`] if [`Gpu::check_supported`] rejects it.
    pub fn open(ordinal: usize) -> Result<Device> {
        let _range = nvtx::LocalRange::new(c"flashdmoe::Device::open");
        let api = driver_api()?;
        let count = device_count(api)?;
        if ordinal >= count {
            return Err(CudaError::DeviceOutOfRange { ordinal, count });
        }
        let gpu = query(api, ordinal)?;
        gpu.check_supported()?;
        let ctx = CudaContext::new(ordinal).map_err(driver("cuDevicePrimaryCtxRetain"))?;
        let stream = ctx.new_stream().map_err(driver("cuStreamCreate"))?;
        Ok(Device { gpu, api, ctx, stream })
    }

    /// Opens every device the driver reports (all must be supported).
    pub fn open_all() -> Result<Vec<Device>> {
        let count = device_count(driver_api()?)?;
        (0..count).map(Device::open).collect()
    }

    /// What the driver reports about this device.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Device ordinal.
    pub fn ordinal(&self) -> usize {
        self.gpu.ordinal
    }

    /// The device's primary context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// This device's stream: the one its kernels run on and its copies are ordered by.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Blocks until all work on [`Device::stream`] has finished; a kernel fault surfaces here.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(driver("cuStreamSynchronize"))
    }

    pub(crate) fn api(&self) -> DriverApi {
        self.api
    }
}

/// Enables peer access between every ordered pair of distinct devices in `devices`, so a kernel
/// on one may load and store to memory allocated on any other.
///
/// Devices sharing an ordinal (virtual ranks) need nothing. Every pair is checked with
/// `cuDeviceCanAccessPeer` first: if any cannot, [`CudaError::PeerAccessUnsupported`] names it
/// and nothing is enabled. Enabling an already enabled pair is not an error.
pub fn enable_peer_access(devices: &[Device]) -> Result<()> {
    let _range = nvtx::LocalRange::new(c"flashdmoe::enable_peer_access");
    let pairs: Vec<(&Device, &Device)> = devices
        .iter()
        .flat_map(|a| devices.iter().map(move |b| (a, b)))
        .filter(|(a, b)| a.ordinal() != b.ordinal())
        .collect();
    for &(from, to) in &pairs {
        let api = from.api();
        if !api
            .can_access_peer(from.ctx.cu_device(), to.ctx.cu_device())
            .map_err(driver("cuDeviceCanAccessPeer"))?
        {
            return Err(CudaError::PeerAccessUnsupported {
                from: from.ordinal(),
                to: to.ordinal(),
            });
        }
    }
    for (from, to) in pairs {
        from.ctx.bind_to_thread().map_err(driver("cuCtxSetCurrent"))?;
        // SAFETY: `from`'s context was just made current and both contexts are kept alive by
        // the borrowed `Device`s.
        unsafe { from.api().enable_peer_access(to.ctx.cu_ctx()) }
            .map_err(driver("cuCtxEnablePeerAccess"))?;
        // And `from` may touch `to`'s pool allocations (all of cudarc's device memory).
        from.api()
            .grant_pool_access(to.ctx.cu_device(), from.ctx.cu_device())
            .map_err(driver("cuMemPoolSetAccess"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(major: u32, minor: u32, cooperative_launch: bool) -> Gpu {
        Gpu {
            ordinal: 3,
            name: "test".into(),
            cc: ComputeCapability { major, minor },
            sm_count: 132,
            smem_per_block_optin: 232_448,
            smem_per_sm: 233_472,
            l2_bytes: 60 << 20,
            max_threads_per_block: 1024,
            cooperative_launch,
            total_memory: 141 << 30,
        }
    }

    #[test]
    fn supported_devices_are_sm80_plus_with_cooperative_launch() {
        assert!(gpu(9, 0, true).check_supported().is_ok());
        assert!(gpu(8, 0, true).check_supported().is_ok());
        assert!(gpu(12, 0, true).check_supported().is_ok());
        for (major, minor, coop) in [(7, 5, true), (8, 0, false)] {
            match gpu(major, minor, coop).check_supported() {
                Err(CudaError::UnsupportedDevice { ordinal: 3, major: m, minor: n, .. }) => {
                    assert_eq!((m, n), (major, minor))
                }
                other => panic!("expected UnsupportedDevice, got {other:?}"),
            }
        }
    }

    #[test]
    fn compute_capability_orders_by_major_then_minor() {
        let cc = |major, minor| ComputeCapability { major, minor };
        assert!(cc(8, 6) < cc(9, 0));
        assert!(cc(8, 0) < cc(8, 6));
        assert_eq!(cc(9, 0).to_string(), "9.0");
    }

    /// Whatever this machine has, discovery answers with a value or one of the documented
    /// absence errors, never a panic, and the two entry points agree.
    #[test]
    fn discovery_never_panics_and_is_consistent() {
        match (cuda_available(), gpus()) {
            (Ok(()), Ok(list)) => assert!(!list.is_empty()),
            (Err(CudaError::DriverMissing), Err(CudaError::DriverMissing)) => {}
            (Err(CudaError::NoDevice { .. }), Err(CudaError::NoDevice { .. })) => {}
            (Err(CudaError::NvrtcMissing | CudaError::NvrtcTooOld { .. }), Ok(list)) => {
                assert!(!list.is_empty())
            }
            other => panic!("inconsistent discovery: {other:?}"),
        }
    }
}
