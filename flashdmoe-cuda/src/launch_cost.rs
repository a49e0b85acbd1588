//! What a launch costs by itself, apart from any work: the self-test kernel
//! (`kernels/selftest.cu`) with nothing to do (no shared memory touched, no wait for the
//! grid), launched over the whole GPU with the MoE kernel's block size and dynamic shared
//! memory, cooperatively and plainly, timed by CUDA events.
//!
//! Why: the events around a forward's cooperative launch read 24-42 µs more than the
//! kernel's own timeline (its first block's start to its last warp's end;
//! docs/dev/perf-notes.md, v10). This says how much of that any launch of that shape pays.

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut};

use crate::arch::Arch;
use crate::device::Device;
use crate::error::{CudaError, Result, driver};
use crate::jit::Jit;
use crate::launch::{Kernel, LaunchShape};
use crate::selftest::{SelftestParams, variant_with_threads};

/// Median event-timed cost of one launch, per launch kind.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LaunchCost {
    /// The grid launched (every SM filled to occupancy).
    pub shape: LaunchShape,
    /// Dynamic shared memory per block.
    pub smem: u32,
    /// Cooperative launch: events around each launch, median over `launches` (µs).
    pub cooperative_us: f64,
    /// Cooperative launches back to back: device time per launch (µs).
    pub cooperative_back_to_back_us: f64,
    /// Plain launch of the same grid: events around each launch, median (µs).
    pub plain_us: f64,
    /// Plain launches back to back: device time per launch (µs).
    pub plain_back_to_back_us: f64,
}

/// Times `launches` empty launches of `block` threads and `smem` bytes of dynamic shared
/// memory a block, each kind, on `device`.
///
/// Errors: `block` or `smem` the device cannot launch ([`CudaError::InvalidLaunch`]),
/// `launches` 0, JIT and driver errors.
pub fn launch_cost(
    jit: &Jit,
    device: &Device,
    block: u32,
    smem: u32,
    launches: usize,
) -> Result<LaunchCost> {
    check_launches(launches)?;
    let (kernel, shape) = load(jit, device, block, smem)?;
    let stream = device.stream();
    let mut out =
        stream.alloc_zeros::<u64>(2 * shape.grid as usize).map_err(driver("cuMemAllocAsync"))?;
    let mut arrivals = stream.alloc_zeros::<u32>(1).map_err(driver("cuMemAllocAsync"))?;
    let (out_ptr, _out) = out.device_ptr_mut(stream);
    let (arrivals_ptr, _arrivals) = arrivals.device_ptr_mut(stream);
    // No shared memory to fill and a zero timeout: each block's thread 0 counts its arrival,
    // looks once, and ends.
    let params = SelftestParams::idle(out_ptr, arrivals_ptr);
    let time = |cooperative: bool| -> Result<(f64, f64)> {
        // SAFETY: `params` mirrors the kernel's parameter; `out` holds the 2 * grid words and
        // `arrivals` the counter the kernel writes, both live until the stream is synchronised
        // below; with a zero timeout no block waits on another, so a plain launch is sound.
        let launch = |stream: &CudaStream| unsafe {
            if cooperative {
                kernel.launch_cooperative(stream, shape, &params)
            } else {
                kernel.launch_plain(stream, shape, &params)
            }
        };
        let timing = Some(CUevent_flags::CU_EVENT_DEFAULT);
        for _ in 0..3 {
            launch(stream)?;
        }
        let mut each = Vec::with_capacity(launches);
        for _ in 0..launches {
            let start = stream.record_event(timing).map_err(driver("cuEventRecord"))?;
            launch(stream)?;
            let end = stream.record_event(timing).map_err(driver("cuEventRecord"))?;
            end.synchronize().map_err(driver("cuEventSynchronize"))?;
            each.push(f64::from(start.elapsed_ms(&end).map_err(driver("cuEventElapsedTime"))?));
        }
        each.sort_by(f64::total_cmp);
        let start = stream.record_event(timing).map_err(driver("cuEventRecord"))?;
        for _ in 0..launches {
            launch(stream)?;
        }
        let end = stream.record_event(timing).map_err(driver("cuEventRecord"))?;
        end.synchronize().map_err(driver("cuEventSynchronize"))?;
        let total = f64::from(start.elapsed_ms(&end).map_err(driver("cuEventElapsedTime"))?);
        Ok((each[launches / 2] * 1e3, total * 1e3 / launches as f64))
    };
    let (cooperative_us, cooperative_back_to_back_us) = time(true)?;
    let (plain_us, plain_back_to_back_us) = time(false)?;
    Ok(LaunchCost {
        shape,
        smem,
        cooperative_us,
        cooperative_back_to_back_us,
        plain_us,
        plain_back_to_back_us,
    })
}

/// What the end of a launch costs when its grid's last act is `mib` MiB of stores: the events
/// around the launch against the grid's own span (first block start to last block end, after
/// its stores were issued), medians over the launches.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StoreDrain {
    /// MiB the grid stores last.
    pub mib: u64,
    /// Events around one cooperative launch (µs).
    pub event_us: f64,
    /// First block start to last block end, `%globaltimer` (µs).
    pub span_us: f64,
}

/// Times `launches` cooperative launches of the empty kernel (as [`launch_cost`]) that end by
/// storing each of `mib` MiB, against the grid's own span: whether the time between a grid's
/// last instruction and the end of its launch grows with the stores it leaves in flight.
pub fn store_drain(
    jit: &Jit,
    device: &Device,
    block: u32,
    smem: u32,
    mib: &[u64],
    launches: usize,
) -> Result<Vec<StoreDrain>> {
    check_launches(launches)?;
    let (kernel, shape) = load(jit, device, block, smem)?;
    let stream = device.stream();
    let largest = mib.iter().copied().max().unwrap_or(0) << 17; // u64 words
    let mut fill =
        stream.alloc_zeros::<u64>(largest.max(1) as usize).map_err(driver("cuMemAllocAsync"))?;
    let mut out =
        stream.alloc_zeros::<u64>(2 * shape.grid as usize).map_err(driver("cuMemAllocAsync"))?;
    let mut arrivals = stream.alloc_zeros::<u32>(1).map_err(driver("cuMemAllocAsync"))?;
    let mut span = stream.alloc_zeros::<u64>(2).map_err(driver("cuMemAllocAsync"))?;
    let timing = Some(CUevent_flags::CU_EVENT_DEFAULT);
    let mut rows = Vec::with_capacity(mib.len());
    for &m in mib {
        let (mut events, mut spans) = (Vec::with_capacity(launches), Vec::with_capacity(launches));
        for i in 0..launches + 3 {
            stream.memcpy_htod(&[u64::MAX, 0], &mut span).map_err(driver("cuMemcpyHtoDAsync"))?;
            let start = stream.record_event(timing).map_err(driver("cuEventRecord"))?;
            {
                let (out_ptr, _o) = out.device_ptr_mut(stream);
                let (arrivals_ptr, _a) = arrivals.device_ptr_mut(stream);
                let (fill_ptr, _f) = fill.device_ptr_mut(stream);
                let (span_ptr, _s) = span.device_ptr(stream);
                let params = SelftestParams::idle(out_ptr, arrivals_ptr).storing(
                    fill_ptr,
                    m << 17,
                    span_ptr,
                );
                // SAFETY: as in `launch_cost`; `fill` holds at least `m << 17` words and `span`
                // two, all live until the synchronisation below.
                unsafe { kernel.launch_cooperative(stream, shape, &params) }?;
            }
            let end = stream.record_event(timing).map_err(driver("cuEventRecord"))?;
            end.synchronize().map_err(driver("cuEventSynchronize"))?;
            let s = stream.clone_dtoh(&span).map_err(driver("cuMemcpyDtoHAsync"))?;
            if i >= 3 {
                events.push(
                    f64::from(start.elapsed_ms(&end).map_err(driver("cuEventElapsedTime"))?) * 1e3,
                );
                spans.push(s[1].saturating_sub(s[0]) as f64 / 1e3);
            }
        }
        events.sort_by(f64::total_cmp);
        spans.sort_by(f64::total_cmp);
        rows.push(StoreDrain {
            mib: m,
            event_us: events[launches / 2],
            span_us: spans[launches / 2],
        });
    }
    Ok(rows)
}

fn check_launches(launches: usize) -> Result<()> {
    if launches == 0 {
        return Err(CudaError::InvalidLaunch {
            entry: "fdm_selftest".into(),
            reason: "launches: at least one launch to time".into(),
        });
    }
    Ok(())
}

/// The self-test kernel for `block` threads, loaded with `smem` bytes of dynamic shared memory,
/// and its whole-GPU cooperative grid.
fn load(jit: &Jit, device: &Device, block: u32, smem: u32) -> Result<(Kernel, LaunchShape)> {
    let arch = Arch::for_device(device.gpu().cc);
    let compiled = jit.compile_variant(&variant_with_threads(block), arch)?;
    let kernel = Kernel::load(device, &compiled.cubin, smem)?;
    let shape = kernel.cooperative_shape(block)?;
    Ok((kernel, shape))
}
