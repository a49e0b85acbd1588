//! The device-resident forward (issue 14): input and output in device memory in the layer's
//! dtype, on the caller's stream, asynchronous; no host copy, no host synchronisation and no
//! allocation per call. A forward may carry fewer tokens than the layer was built for (its
//! capacity is that of the smaller batch, `MoeConfig::capacity_rows_for`); the kernel takes
//! and stores its own epoch (params.rs, `epoch_word`), so a captured CUDA graph replays
//! correctly. The host-`f32` `Backend::forward` stays the convenience on top of the same kernel.
//!
//! What the host does per call: checks, then per GPU one memset of the diagnostics record and
//! one cooperative launch on the caller's stream. A timeout is read after the caller's stream
//! has finished, with [`CudaLayer::device_status`].
//!
//! ```no_run
//! use std::time::Duration;
//! use cudarc::driver::{CudaContext, DevicePtr};
//! use flashdmoe_core::{Backend, LayerWeights, MoeConfig};
//! use flashdmoe_cuda::{CudaBackend, CudaOptions, DeviceIo};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = MoeConfig { tokens_per_rank: 4096, ..MoeConfig::default() }; // one GPU
//! let weights = LayerWeights::generate(&config, 0)?;
//! let layer = CudaBackend::new(CudaOptions::default()).build(&config, &weights)?;
//! // The caller's stream and buffers ([tokens][hidden] bf16), e.g. a model's activations.
//! let stream = CudaContext::new(0)?.new_stream()?;
//! let bytes = 1000 * config.hidden as usize * 2;
//! let (x, y) = (stream.alloc_zeros::<u8>(bytes)?, stream.alloc_zeros::<u8>(bytes)?);
//! let io = DeviceIo { x: x.device_ptr(&stream).0, y: y.device_ptr(&stream).0, stream: stream.cu_stream(), routing: None };
//! // SAFETY: x and y hold 1000 rows of GPU 0 and are used in `stream`'s order only.
//! unsafe { layer.forward_device(1000, &[io], Duration::from_secs(5))? };
//! stream.synchronize()?;
//! layer.device_status()?; // a typed timeout report if a wait gave up
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use cudarc::driver::sys::CUstream;
use flashdmoe_core::{BackendError, RankRouting};

use super::{CudaLayer, invalid};
use crate::params::Diag;

/// One GPU's part of a device-resident forward.
#[derive(Clone, Copy, Debug)]
pub struct DeviceIo {
    /// Device address of the input on this GPU: `[ranks_per_gpu][tokens][hidden]` contiguous
    /// elements of the layer's dtype (bf16/f16 as their 16 bits, f32 as itself).
    pub x: u64,
    /// Device address of the output on this GPU, the input's shape; written by the forward.
    pub y: u64,
    /// The stream the forward runs on, of this GPU's primary context (a PyTorch stream, a
    /// stream capturing a graph), or null for that context's legacy default stream. To
    /// capture, take `x`'s and `y`'s addresses before `begin_capture`: cudarc's
    /// `device_ptr` waits on the buffer's last write event, and waiting on an event recorded
    /// outside a capture invalidates it (`CUDA_ERROR_STREAM_CAPTURE_INVALIDATED`).
    pub stream: CUstream,
    /// The routing chosen by the caller (the kernel skips its router), or `None`: the layer's
    /// router chooses.
    pub routing: Option<DeviceRouting>,
}

/// A routing given in device memory on the GPU of its [`DeviceIo`]: each token's `top_k`
/// experts and combine weights, slot order, as the router would have written them (weights
/// are used as they are: no renormalisation or scaling). An expert out of range or chosen
/// twice by a token fails the forward, naming the token ([`CudaLayer::device_status`]).
#[derive(Clone, Copy, Debug)]
pub struct DeviceRouting {
    /// `u32 [ranks_per_gpu][tokens][top_k]` chosen experts.
    pub experts: u64,
    /// `f32 [ranks_per_gpu][tokens][top_k]` their combine weights.
    pub weights: u64,
}

impl CudaLayer {
    /// Queues one forward of `tokens` tokens a rank (`1..=tokens_per_rank`) on each GPU's
    /// stream and returns without waiting: `io[d]` is GPU `d`'s (in the order the layer's
    /// ranks are placed on GPUs). Every wait inside the forward gives up after `timeout`
    /// without progress; whether one did is [`Self::device_status`]'s answer once the streams
    /// have finished. Work on the same layer must not overlap: call again only on the same
    /// streams (stream order serialises the forwards) or after they finished.
    ///
    /// Errors before anything is queued: `io` not one entry per GPU, `tokens` outside
    /// `1..=tokens_per_rank`, a null `x`, `y` or routing address, a stream of another device.
    ///
    /// # Safety
    ///
    /// For every GPU `d`: `io[d].x` and `io[d].y` point to device memory of GPU `d` of at
    /// least `ranks_per_gpu * tokens * hidden * elem_bytes` bytes each, not overlapping (and
    /// a given routing's arrays `ranks_per_gpu * tokens * top_k * 4` bytes each); the inputs
    /// are written before this forward in `io[d].stream`'s order and the output not touched
    /// by other work until the forward has finished in that order; `io[d].stream` is a live
    /// stream of GPU `d`'s primary context (or null).
    pub unsafe fn forward_device(
        &self,
        tokens: u32,
        io: &[DeviceIo],
        timeout: Duration,
    ) -> Result<(), BackendError> {
        // Across processes: a dead peer fails the call at once (the asynchronous path has no
        // host wait to raise the kernel's abort from; the kernel's deadline bounds it).
        self.check_peers()?;
        let max = self.plan.config.tokens_per_rank;
        if io.len() != self.gpus.len() {
            return Err(invalid(
                "io",
                format!("expected one entry per GPU ({}), got {}", self.gpus.len(), io.len()),
            ));
        }
        if tokens == 0 || tokens > max {
            return Err(invalid(
                "tokens",
                format!(
                    "{tokens} tokens; this layer runs 1..={max} tokens a rank (tokens_per_rank)"
                ),
            ));
        }
        if let Some(d) = io.iter().position(|io| io.x == 0 || io.y == 0) {
            return Err(invalid("io", format!("GPU {d}: a null input or output address")));
        }
        let null_routing =
            |r: &Option<DeviceRouting>| r.is_some_and(|r| r.experts == 0 || r.weights == 0);
        if let Some(d) = io.iter().position(|io| null_routing(&io.routing)) {
            return Err(invalid("io", format!("GPU {d}: a null routing address")));
        }
        let shape = self.shape();
        for (gpu, io) in self.gpus.iter().zip(io) {
            let gpu = gpu.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut params = self.params(&gpu, (io.x, io.y), tokens, timeout);
            if let Some(r) = io.routing {
                params.given_experts = r.experts;
                params.given_weights = r.weights;
            }
            // SAFETY: the diagnostics record is this layer's allocation on this GPU, of
            // `size_of::<Diag>()` bytes; the launch after it on the same stream is its only
            // other user. The kernel launch: every address in `params` names a live allocation
            // of this layer on this GPU (or a peer-enabled heap), but `x`/`y`, which the
            // caller's contract covers for `tokens` tokens a rank; the kernel was compiled for
            // this config, whose layout strides hold `tokens <= tokens_per_rank` (checked).
            unsafe {
                gpu.kernel.memset_zero_raw(params.diag, size_of::<Diag>(), io.stream)?;
                gpu.kernel.launch_cooperative_raw(io.stream, shape, &params)?;
            }
        }
        Ok(())
    }

    /// Whether the last forward of every GPU finished: `Err(BackendError::Timeout)` with the
    /// kernel's report (who waited for what) if a wait gave up. Call it after the streams of
    /// a [`Self::forward_device`] have finished (it reads device memory without waiting on
    /// them); the next forward clears the record.
    pub fn device_status(&self) -> Result<(), BackendError> {
        for gpu in &self.gpus {
            self.diag_status(&gpu.lock().unwrap_or_else(std::sync::PoisonError::into_inner))?;
        }
        Ok(())
    }

    /// The routing every rank computed in the last forward, which carried `tokens` tokens a
    /// rank: what the oracle checks a device-resident forward's output against (read after
    /// the forward's streams have finished).
    pub fn last_routing(&self, tokens: u32) -> Result<Vec<RankRouting>, BackendError> {
        let max = self.plan.config.tokens_per_rank;
        if tokens > max {
            return Err(invalid("tokens", format!("{tokens} tokens; at most {max}")));
        }
        let mut out = Vec::with_capacity(self.plan.config.world as usize);
        for gpu in &self.gpus {
            let gpu = gpu.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for local in 0..self.plan.ranks_per_gpu {
                out.push(self.routing_of(&gpu, local, tokens)?);
            }
        }
        Ok(out)
    }
}
