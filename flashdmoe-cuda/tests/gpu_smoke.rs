//! GPU smoke tests: device discovery, the device self-test (JIT for the device's own
//! architecture, module load, dynamic shared memory opt-in, cooperative launch over the whole
//! GPU) and the host-side launch validation. Each passes with a `skipped: no GPU` line on a
//! machine without a usable GPU, driver or NVRTC.

use std::sync::Arc;

use cudarc::driver::DevicePtrMut;
use flashdmoe_cuda::jit::CacheMode;
use flashdmoe_cuda::{
    Arch, CudaError, Defines, Device, Jit, JitConfig, Kernel, KernelSource, LaunchShape,
    cuda_available, enable_peer_access, gpus, run_selftest,
};

const TINY: KernelSource =
    KernelSource { file: "tiny.cu", text: include_str!("kernels/tiny.cu"), entry: "fdm_tiny" };

/// Mirrors `fdm_tiny_params` in `tests/kernels/tiny.cu`.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct TinyParams {
    out: u64,
    base: u32,
    pad: u32,
}

/// The JIT and every device, or `None` (after printing why) when there is no usable GPU.
fn setup() -> Option<(Jit, Vec<Device>)> {
    if let Err(e) = cuda_available() {
        println!("skipped: no GPU ({e})");
        return None;
    }
    let jit = Jit::new(JitConfig { cache: CacheMode::MemoryOnly, ..JitConfig::from_env() })
        .unwrap_or_else(|e| panic!("{e}"));
    let devices = Device::open_all().unwrap_or_else(|e| panic!("{e}"));
    Some((jit, devices))
}

#[test]
fn selftest_passes_on_every_gpu() {
    let Some((jit, devices)) = setup() else { return };
    for device in &devices {
        let gpu = device.gpu();
        println!(
            "device {}: {} sm_{}{} {} SMs, {} KiB smem/block, {} MiB L2, coop {}",
            gpu.ordinal,
            gpu.name,
            gpu.cc.major,
            gpu.cc.minor,
            gpu.sm_count,
            gpu.smem_per_block_optin / 1024,
            gpu.l2_bytes >> 20,
            gpu.cooperative_launch
        );
        let report = run_selftest(&jit, device).unwrap_or_else(|e| panic!("{e}"));
        println!("  {report:?}");
        assert!(report.blocks_per_sm >= 1);
        assert_eq!(report.shape.grid, gpu.sm_count * report.blocks_per_sm);
        // The second run is served from the in-memory cache and passes again.
        let again = run_selftest(&jit, device).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.origin, flashdmoe_cuda::Origin::Memory);
    }
}

#[test]
fn discovery_matches_opened_devices() {
    let Some((_, devices)) = setup() else { return };
    let listed = gpus().unwrap();
    assert_eq!(listed.len(), devices.len());
    for (gpu, device) in listed.iter().zip(&devices) {
        assert_eq!(gpu, device.gpu());
        assert!(gpu.check_supported().is_ok());
    }
    match Device::open(listed.len()) {
        Err(CudaError::DeviceOutOfRange { ordinal, count }) => {
            assert_eq!((ordinal, count), (listed.len(), listed.len()))
        }
        other => panic!("expected DeviceOutOfRange, got {other:?}"),
    }
}

#[test]
fn peer_access_between_all_gpus() {
    let Some((_, devices)) = setup() else { return };
    // With one GPU there is no pair; with several every pair must be enabled (twice is fine).
    enable_peer_access(&devices).unwrap_or_else(|e| panic!("{e}"));
    enable_peer_access(&devices).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn launches_are_validated_before_the_driver_sees_them() {
    let Some((jit, devices)) = setup() else { return };
    let device = &devices[0];
    let gpu = device.gpu();
    let arch = Arch::for_device(gpu.cc);
    let cubin = jit.compile(&TINY, arch, &Defines::new().set("FDM_TINY_SCALE", 3)).unwrap().cubin;

    let too_much = gpu.smem_per_block_optin + 1;
    assert!(matches!(Kernel::load(device, &cubin, too_much), Err(CudaError::InvalidLaunch { .. })));
    let other_major = Arch::new(if gpu.cc.major == 8 { 9 } else { 8 }, 0);
    let foreign = jit.compile(&TINY, other_major, &Defines::new()).unwrap().cubin;
    assert!(matches!(Kernel::load(device, &foreign, 0), Err(CudaError::ArchMismatch { .. })));

    let kernel = Kernel::load(device, &cubin, 0).unwrap();
    assert_eq!(kernel.param_bytes(), size_of::<TinyParams>());
    let shape = kernel.cooperative_shape(128).unwrap();
    let stream = Arc::clone(device.stream());
    let threads = (shape.grid * shape.block) as usize;
    let mut out = stream.alloc_zeros::<u32>(threads).unwrap();
    let (ptr, guard) = out.device_ptr_mut(&stream);
    let params = TinyParams { out: ptr, base: 7, pad: 0 };
    let launch = |shape: LaunchShape, params: &TinyParams| {
        // SAFETY: `TinyParams` mirrors `fdm_tiny_params`; `out` holds one u32 per thread of
        // `shape` (the largest grid tried), zeroed on this stream, alive until synchronised.
        unsafe { kernel.launch_cooperative(&stream, shape, params) }
    };
    let bad_shapes = [
        LaunchShape { grid: 0, ..shape },
        LaunchShape { grid: shape.grid + 1, ..shape },
        LaunchShape { block: kernel.max_block() + 1, ..shape },
    ];
    for bad in bad_shapes {
        assert!(matches!(launch(bad, &params), Err(CudaError::InvalidLaunch { .. })), "{bad:?}");
    }
    // SAFETY: never reaches the driver: the 8-byte parameter block is rejected.
    let wrong_size = unsafe { kernel.launch_cooperative(&stream, shape, &0u64) };
    assert!(matches!(wrong_size, Err(CudaError::InvalidLaunch { .. })));

    launch(shape, &params).unwrap();
    drop(guard);
    device.synchronize().unwrap();
    let values = stream.clone_dtoh(&out).unwrap();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(*v, (7 + i as u32) * 3, "thread {i}");
    }
}
