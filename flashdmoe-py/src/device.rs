//! The CUDA half of the [`Engine`](crate::engine::Engine): a CUDA tensor runs the
//! device-resident forward of `flashdmoe-cuda` (`CudaLayer::forward_device`) on the caller's
//! current stream, reading `x` and writing `out` in place: no copy, no host synchronisation.
//!
//! The layer is built on the input's GPU for the module's `max_tokens` on first use (and again
//! after the weights change); a call may carry any `1..=max_tokens` tokens. A timeout inside a
//! forward is only known once the stream has finished: `Engine.status()` reports it then.
//! A routing given by the caller (`topk_ids` as int32, `topk_weights` as float32, both
//! `[tokens, top_k]` on the same GPU; the op converts them) skips the kernel's router; an
//! expert out of range or chosen twice fails that forward, reported by `Engine.status()`.

use std::time::Duration;

use flashdmoe_core::{Backend, BackendError, LayerWeights, MoeConfig};
use flashdmoe_cuda::{
    CudaBackend, CudaLayer, CudaOptions, DeviceIo, DeviceRouting, PairChoice, ProcessGroup,
};

use crate::tensor::{BindError, TensorView, TorchDType, check_tokens};

/// Deadline of every wait inside a CUDA forward.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A layer built on one GPU, for the weights it was built from.
#[derive(Debug)]
pub struct DeviceLayer {
    /// The GPU (`cuda:N`).
    pub gpu: u32,
    layer: CudaLayer,
}

impl DeviceLayer {
    /// Builds the layer of `config` (its `tokens_per_rank` = the module's `max_tokens`) on GPU
    /// `gpu`, paired as `pairs` says: compiles or loads the kernel and uploads the weights.
    pub fn build(
        config: &MoeConfig,
        weights: &LayerWeights,
        gpu: u32,
        pairs: PairChoice,
    ) -> Result<DeviceLayer, BackendError> {
        let options =
            CudaOptions { ranks_per_gpu: Some(1), first_gpu: gpu, pairs, ..Default::default() };
        let layer = CudaBackend::new(options).build(config, weights)?;
        Ok(DeviceLayer { gpu, layer })
    }

    /// Builds this process's part of the layer of `config` over `group` (collective: every
    /// process of the group calls it with the same config and weights): rank `group.rank()` of
    /// a world of `group.world()` ranks, one per process, on the group's GPU, holding only its
    /// own experts (`weights` is the whole layer; the upload takes this rank's expert slots).
    pub fn build_process(
        config: &MoeConfig,
        weights: &LayerWeights,
        group: &ProcessGroup,
        pairs: PairChoice,
    ) -> Result<DeviceLayer, BackendError> {
        let config = MoeConfig { world: group.world() as u32, ..config.clone() };
        let options = CudaOptions { ranks_per_gpu: Some(1), pairs, ..Default::default() };
        let layer = CudaBackend::new(options).build_process(&config, weights, group)?;
        Ok(DeviceLayer { gpu: group.device() as u32, layer })
    }

    /// Queues the forward of `tokens` rows of `x` into `out` on `stream`.
    ///
    /// # Safety
    ///
    /// `x` and `out` passed [`check_io`] (and a routing [`check_routing`]) for this layer's GPU
    /// and `tokens` rows, their memory
    /// stays allocated until the forward has run in `stream`'s order (PyTorch's caching
    /// allocator keeps a tensor's memory for its stream), and `stream` is a live stream of the
    /// GPU (PyTorch's current stream of that device).
    pub unsafe fn forward(
        &self,
        tokens: u32,
        x: &TensorView,
        out: &TensorView,
        routing: Option<(&TensorView, &TensorView)>,
        stream: usize,
    ) -> Result<(), BackendError> {
        let routing = routing
            .map(|(ids, w)| DeviceRouting { experts: ids.ptr as u64, weights: w.ptr as u64 });
        let io = DeviceIo { x: x.ptr as u64, y: out.ptr as u64, stream: stream as _, routing };
        // SAFETY: the caller's contract covers the addresses, sizes and stream.
        unsafe { self.layer.forward_device(tokens, &[io], TIMEOUT) }
    }

    /// The typed timeout of the last forward, once its stream has finished.
    pub fn status(&self) -> Result<(), BackendError> {
        self.layer.device_status()
    }
}

/// Checks a CUDA call's `x` and `out` against a layer of `dtype`, `hidden` and `max` tokens:
/// both on one GPU, contiguous, the layer's dtype, `[tokens, hidden]` with the same shape.
/// Returns the GPU and the tokens.
pub fn check_io(
    x: &TensorView,
    out: &TensorView,
    dtype: &TorchDType,
    hidden: usize,
    max: u32,
) -> Result<(u32, u32), BindError> {
    let gpu = x.cuda_index()?;
    for t in [x, out] {
        on_gpu(t, gpu, dtype)?;
    }
    let tokens = x.check_rows(hidden, "[tokens, hidden]")?;
    out.check_shape(&x.shape, "x's shape")?;
    Ok((gpu, check_tokens(tokens, max)?))
}

/// Checks a CUDA call's given routing: `topk_ids` int32 and `topk_weights` float32, both
/// `[tokens, top_k]`, contiguous, on GPU `gpu`.
pub fn check_routing(
    ids: &TensorView,
    weights: &TensorView,
    gpu: u32,
    tokens: usize,
    top_k: usize,
) -> Result<(), BindError> {
    for (t, dtype) in [(ids, TorchDType::I32), (weights, TorchDType::F32)] {
        on_gpu(t, gpu, &dtype)?;
        t.check_shape(&[tokens, top_k], "[tokens, top_k]")?;
    }
    Ok(())
}

/// Checks that `t` is a contiguous tensor of `dtype` on GPU `gpu` (x's).
fn on_gpu(t: &TensorView, gpu: u32, dtype: &TorchDType) -> Result<(), BindError> {
    if t.cuda_index().ok() != Some(gpu) {
        return Err(BindError::Device {
            what: t.what.clone(),
            found: t.device.clone(),
            expected: format!("cuda:{gpu} (x's device)"),
        });
    }
    if !t.contiguous {
        return Err(BindError::NotContiguous { what: t.what.clone() });
    }
    t.check_dtype(std::slice::from_ref(dtype))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(
        what: &str,
        device: &str,
        dtype: TorchDType,
        shape: &[usize],
        contiguous: bool,
    ) -> TensorView {
        TensorView {
            what: what.into(),
            device: device.into(),
            dtype,
            shape: shape.to_vec(),
            contiguous,
            ptr: 0x1000,
        }
    }

    #[test]
    fn cuda_io_is_checked_naming_the_argument() {
        let bf = TorchDType::BF16;
        let x = t("x", "cuda:1", bf.clone(), &[7, 64], true);
        let out = t("out", "cuda:1", bf.clone(), &[7, 64], true);
        assert_eq!(check_io(&x, &out, &bf, 64, 16), Ok((1, 7)));
        // Another GPU, not contiguous, the wrong dtype, shape or too many tokens.
        let other = t("out", "cuda:0", bf.clone(), &[7, 64], true);
        assert!(
            matches!(check_io(&x, &other, &bf, 64, 16), Err(BindError::Device { what, .. }) if what == "out")
        );
        let strided = t("out", "cuda:1", bf.clone(), &[7, 64], false);
        assert!(
            matches!(check_io(&x, &strided, &bf, 64, 16), Err(BindError::NotContiguous { what }) if what == "out")
        );
        let half = t("x", "cuda:1", TorchDType::F16, &[7, 64], true);
        assert!(
            matches!(check_io(&half, &out, &bf, 64, 16), Err(BindError::DType { what, .. }) if what == "x")
        );
        assert!(matches!(check_io(&x, &out, &bf, 32, 16), Err(BindError::Shape { .. })));
        let short = t("out", "cuda:1", bf.clone(), &[6, 64], true);
        assert!(
            matches!(check_io(&x, &short, &bf, 64, 16), Err(BindError::Shape { what, .. }) if what == "out")
        );
        assert_eq!(
            check_io(&x, &out, &bf, 64, 6),
            Err(BindError::TooManyTokens { tokens: 7, max: 6 })
        );
        // A given routing: int32 ids and float32 weights on x's GPU, [tokens, top_k].
        let ids = t("topk_ids", "cuda:1", TorchDType::I32, &[7, 2], true);
        let w = t("topk_weights", "cuda:1", TorchDType::F32, &[7, 2], true);
        assert_eq!(check_routing(&ids, &w, 1, 7, 2), Ok(()));
        let long = t("topk_ids", "cuda:1", TorchDType::I64, &[7, 2], true);
        assert!(
            matches!(check_routing(&long, &w, 1, 7, 2), Err(BindError::DType { what, .. }) if what == "topk_ids")
        );
        let host = t("topk_weights", "cpu", TorchDType::F32, &[7, 2], true);
        assert!(
            matches!(check_routing(&ids, &host, 1, 7, 2), Err(BindError::Device { what, .. }) if what == "topk_weights")
        );
        assert!(matches!(check_routing(&ids, &w, 1, 7, 3), Err(BindError::Shape { .. })));
        // A CPU tensor is no CUDA tensor.
        let cpu = t("x", "cpu", bf.clone(), &[7, 64], true);
        assert!(
            matches!(check_io(&cpu, &out, &bf, 64, 16), Err(BindError::Device { what, .. }) if what == "x")
        );
    }
}
