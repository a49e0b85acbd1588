//! [`Engine`]: one rank's MoE layer behind a `flashdmoe.MoE` module.
//!
//! The module owns the weights as torch tensors; the engine keeps core's copy of them
//! ([`Engine::set_weights`], called again whenever the module's tensors change) and runs the
//! forward on the backend the input's device selects: a CPU tensor runs on the simulator
//! (`flashdmoe-sim`) through core's [`Layer`] API, a CUDA tensor runs the CUDA kernel's
//! device-resident forward on the caller's current stream ([`crate::device`]).
//!
//! Simulator layers are built per token count (their symmetric heaps are sized by it), on first
//! use, and the last [`LAYER_CACHE`] are kept; each holds its own copy of the weights.

use std::sync::{Mutex, PoisonError};

use flashdmoe_core::routing::RankRouting;
use flashdmoe_core::weights::TensorBytes;
use flashdmoe_core::{Backend, BackendError, ForwardOptions, Layer, LayerWeights};
use flashdmoe_cuda::PairChoice;
use flashdmoe_sim::{SimBackend, SimLayer, SimOptions};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::device::{self, DeviceLayer};
use crate::errors;
use crate::spec::{LayerSpec, SpecArgs};
use crate::tensor::{BindError, HostTensor, TorchDType};

/// Simulator layers kept built (one per recent token count).
pub const LAYER_CACHE: usize = 4;

/// One rank's layer: its spec, core's copy of its weights, and the built backend layers.
#[pyclass(frozen, module = "flashdmoe._native")]
#[derive(Debug)]
pub struct Engine {
    spec: LayerSpec,
    /// Paired GEMM0 tasks (`pairs=`: None Auto, True On, False Off; CUDA's
    /// `CudaOptions::pairs`; the simulator runs the paired schedule under On).
    pairs: PairChoice,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    weights: Option<LayerWeights>,
    /// Most recently used last.
    layers: Vec<SimLayer>,
    /// The CUDA layer (one GPU, built for `max_tokens`), once a CUDA tensor was seen.
    device: Option<DeviceLayer>,
    /// The process group of a module with `group=` of several ranks ([`crate::group`]):
    /// the CUDA layer is then this process's part of the group's layer.
    group: Option<std::sync::Arc<flashdmoe_cuda::ProcessGroup>>,
}

impl State {
    /// The simulator layer for `tokens`, built on first use.
    fn layer(
        &mut self,
        spec: &LayerSpec,
        pairs: PairChoice,
        tokens: u32,
    ) -> Result<&SimLayer, BackendError> {
        let cached = self.layers.iter().position(|l| l.config().tokens_per_rank == tokens);
        let layer = match cached {
            Some(i) => self.layers.remove(i),
            None => {
                let weights = self.weights.as_ref().ok_or_else(|| {
                    BackendError::Unavailable("the layer has no weights (set_weights)".into())
                })?;
                if self.layers.len() == LAYER_CACHE {
                    self.layers.remove(0);
                }
                // Paired: three processor threads, so one cluster of two takes the pairs.
                let options = match pairs {
                    PairChoice::On => {
                        SimOptions { pairs: true, processors_per_rank: 3, ..SimOptions::default() }
                    }
                    PairChoice::Auto | PairChoice::Off => SimOptions::default(),
                };
                SimBackend::new(options).build(&spec.config(tokens), weights)?
            }
        };
        self.layers.push(layer);
        Ok(&self.layers[self.layers.len() - 1])
    }
}

/// A routing given by the caller: `[tokens][top_k]` experts and combine weights.
type Given = (Vec<u32>, Vec<f32>);

impl Engine {
    fn torch_dtype(&self) -> TorchDType {
        TorchDType::of_layer(self.spec.base().dtype)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic cannot leave the state half-updated (it is replaced whole), so a poisoned
        // lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The forward of `tokens` checked input rows on the simulator.
    fn run(
        &self,
        tokens: u32,
        input: &[f32],
        given: Option<Given>,
    ) -> Result<Vec<f32>, BackendError> {
        if tokens == 0 {
            return Ok(Vec::new());
        }
        let config = self.spec.config(tokens);
        let mut state = self.state();
        let layer = state.layer(&self.spec, self.pairs, tokens)?;
        let options = ForwardOptions::default();
        let out = match given {
            None => layer.forward_rank(0, input, &options)?,
            Some((experts, weights)) => {
                let routing = RankRouting::from_choices(&config, experts, weights)?;
                layer.forward_rank_routed(0, input, &routing, &options)?
            }
        };
        Ok(out.output)
    }

    /// The given routing of a call with `tokens` tokens, checked.
    fn given(
        &self,
        tokens: usize,
        ids: Option<&Bound<'_, PyAny>>,
        weights: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<Given>> {
        let (ids, weights) = match (ids, weights) {
            (None, None) => return Ok(None),
            (Some(i), Some(w)) => (i, w),
            _ => {
                let reason = "give both topk_ids and topk_weights, or neither".to_owned();
                return Err(BindError::Value { what: "routing".into(), reason }.into());
            }
        };
        let c = self.spec.base();
        let shape = [tokens, c.top_k as usize];
        let ids = HostTensor::new("topk_ids", ids)?;
        ids.view().check_dtype(&[TorchDType::I64, TorchDType::I32])?;
        ids.view().check_shape(&shape, "[tokens, top_k]")?;
        let weights = HostTensor::new("topk_weights", weights)?;
        let mut accepted = vec![TorchDType::F32];
        if self.torch_dtype() != TorchDType::F32 {
            accepted.push(self.torch_dtype());
        }
        weights.view().check_dtype(&accepted)?;
        weights.view().check_shape(&shape, "[tokens, top_k]")?;
        Ok(Some((ids.to_indices(c.experts)?, weights.to_f32()?)))
    }

    /// The CUDA forward ([`crate::device`]): checks, the layer built on x's GPU on first use,
    /// one launch on `stream`, routed by the layer's router or by `routing` (ids, weights). `x` and `out` are held by the caller's Python frame for the
    /// call; PyTorch's allocator keeps their memory for the stream's pending work.
    fn forward_cuda(
        &self,
        py: Python<'_>,
        x: &crate::tensor::TensorView,
        out: &crate::tensor::TensorView,
        routing: Option<&(crate::tensor::TensorView, crate::tensor::TensorView)>,
        stream: usize,
    ) -> PyResult<()> {
        let c = self.spec.base();
        let (gpu, tokens) = device::check_io(
            x,
            out,
            &self.torch_dtype(),
            c.hidden as usize,
            self.spec.max_tokens(),
        )?;
        if let Some((ids, w)) = routing {
            device::check_routing(ids, w, gpu, tokens as usize, c.top_k as usize)?;
        }
        if tokens == 0 {
            return Ok(());
        }
        let mut state = self.state();
        if let Some(g) = &state.group
            && g.device() as u32 != gpu
        {
            return Err(PyValueError::new_err(format!(
                "x is on cuda:{gpu} but this rank joined its group on cuda:{} (a group's layer \
                 stays on the GPU it joined on)",
                g.device()
            )));
        }
        if state.device.as_ref().is_some_and(|d| d.gpu != gpu) {
            state.device = None; // the module moved to another GPU
        }
        if state.device.is_none() {
            let weights = state
                .weights
                .as_ref()
                .ok_or_else(|| PyRuntimeError::new_err("the layer has no weights (set_weights)"))?;
            let config = self.spec.config(self.spec.max_tokens());
            let built = match &state.group {
                Some(g) => {
                    py.detach(|| DeviceLayer::build_process(&config, weights, g, self.pairs))
                }
                None => py.detach(|| DeviceLayer::build(&config, weights, gpu, self.pairs)),
            }
            .map_err(errors::backend)?;
            state.device = Some(built);
        }
        let layer = state.device.as_ref().expect("built above");
        let routing = routing.map(|(i, w)| (i, w));
        // SAFETY: x and out passed check_io (a routing check_routing) for this GPU and
        // `tokens` rows, the caller holds the tensors for the call and PyTorch keeps their
        // memory for `stream`'s pending work, and `stream` is PyTorch's current stream of that
        // GPU (the op passes it).
        unsafe { layer.forward(tokens, x, out, routing, stream) }.map_err(errors::backend)
    }

    /// Writes `w` into `out` (stacked name -> CPU tensor of the layer's dtype and shape).
    fn write_weights(&self, w: &LayerWeights, out: &Bound<'_, PyDict>) -> PyResult<()> {
        for t in LayerWeights::tensor_names(self.spec.base()).map_err(errors::config)? {
            let target = out.get_item(t.name)?.ok_or_else(|| {
                PyValueError::new_err(format!(
                    "out has no tensor {} for the loaded weights",
                    t.name
                ))
            })?;
            let target = HostTensor::new(t.name, &target)?;
            target.view().check_dtype(&[self.torch_dtype()])?;
            target.view().check_shape(&t.shape, "the layer's")?;
            target.write_f32(w.tensor(t.field).unwrap_or_default())?;
        }
        Ok(())
    }

    /// Loads the layer from `tensors` (name -> tensor) through core's checkpoint loader.
    /// `module_tensors`: the module's own tensors, which must be exactly the layer's dtype;
    /// otherwise any BF16/F16/F32 tensor is accepted (and rounded), int32/int64/float64 ones
    /// are an error only if the layer needs them, tensors of other types and non-tensors are
    /// skipped, and tensors off the CPU or not contiguous are copied to it first.
    fn load(
        &self,
        tensors: &Bound<'_, PyDict>,
        prefix: Option<&str>,
        module_tensors: bool,
    ) -> PyResult<LayerWeights> {
        let mut held = Vec::new();
        for (key, value) in tensors.iter() {
            let name: String = key.extract()?;
            let tensor = if module_tensors {
                value
            } else if !crate::tensor::is_tensor(&value)? {
                continue; // a state dict's non-tensor entry (e.g. `_extra_state`)
            } else if crate::tensor::view(&name, &value)?.dtype.safetensors_name().is_none() {
                continue; // bool, int8, complex, ...: never a weight core reads
            } else {
                // Core reads host bytes: a CPU, contiguous tensor is borrowed as it is (both
                // calls return it unchanged), any other is copied to the CPU first.
                value
                    .call_method0("detach")?
                    .call_method1("to", ("cpu",))?
                    .call_method0("contiguous")?
            };
            let host = HostTensor::new(&name, &tensor)?;
            if module_tensors {
                host.view().check_dtype(&[self.torch_dtype()])?;
            }
            held.push((name, host));
        }
        let bytes: Vec<TensorBytes<'_>> = held
            .iter()
            .map(|(name, t)| TensorBytes {
                name,
                dtype: t.view().dtype.safetensors_name().unwrap_or_default(),
                shape: t.view().shape.clone(),
                data: t.bytes(),
            })
            .collect();
        LayerWeights::from_tensors(self.spec.base(), &bytes, prefix).map_err(errors::weights)
    }
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (hidden, inter, experts, top_k, activation="relu", dtype="bf16",
        capacity_factor=None, renormalize=true, bias=false, max_tokens=4096, pairs=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        hidden: u32,
        inter: u32,
        experts: u32,
        top_k: u32,
        activation: &str,
        dtype: &str,
        capacity_factor: Option<f64>,
        renormalize: bool,
        bias: bool,
        max_tokens: u32,
        pairs: Option<bool>,
    ) -> PyResult<Engine> {
        let args = SpecArgs {
            hidden,
            inter,
            experts,
            top_k,
            activation,
            dtype,
            capacity_factor,
            renormalize,
            bias,
            max_tokens,
        };
        let spec = LayerSpec::new(&args).map_err(errors::config)?;
        Ok(Engine { spec, pairs: PairChoice::forced(pairs), state: Mutex::new(State::default()) })
    }

    /// Core's dtype name (`bf16`, `f16`, `f32`, `f32-exact`).
    #[getter]
    fn dtype(&self) -> &'static str {
        self.spec.base().dtype.name()
    }

    /// The `torch` attribute of the dtype the layer's tensors have (`bfloat16`, ...).
    #[getter]
    fn torch_dtype_name(&self) -> String {
        self.torch_dtype().torch_name().to_owned()
    }

    /// Core's verification tolerance for the dtype (relative to a row's largest value).
    #[getter]
    fn tolerance(&self) -> f64 {
        self.spec.base().dtype.tolerance()
    }

    #[getter]
    fn max_tokens(&self) -> u32 {
        self.spec.max_tokens()
    }

    fn __repr__(&self) -> String {
        let c = self.spec.base();
        format!(
            "Engine(hidden={}, inter={}, experts={}, top_k={}, activation={}, dtype={}, \
             capacity={}, renormalize={}, bias={}, max_tokens={}, pairs={})",
            c.hidden,
            c.inter,
            c.experts,
            c.top_k,
            c.activation,
            c.dtype,
            c.capacity,
            c.renormalize,
            c.bias,
            c.tokens_per_rank,
            match self.pairs() {
                None => "None",
                Some(true) => "True",
                Some(false) => "False",
            }
        )
    }

    /// `pairs=` as given: None (paired where it pays, on CUDA), True or False.
    #[getter]
    fn pairs(&self) -> Option<bool> {
        self.pairs.as_forced()
    }

    /// The layer's tensors: `(field, stacked name, shape)` in field order.
    fn tensor_names(&self) -> PyResult<Vec<(&'static str, &'static str, Vec<usize>)>> {
        let names = LayerWeights::tensor_names(self.spec.base()).map_err(errors::config)?;
        Ok(names.into_iter().map(|t| (t.field, t.name, t.shape)).collect())
    }

    /// Sets core's copy of the weights from the module's tensors (stacked name -> CPU tensor
    /// of the layer's dtype); drops the layers built with the previous weights.
    fn set_weights(&self, tensors: &Bound<'_, PyDict>) -> PyResult<()> {
        let weights = self.load(tensors, None, true)?;
        let mut state = self.state();
        state.layers.clear();
        state.device = None;
        state.weights = Some(weights);
        Ok(())
    }

    /// Makes this engine one process's part of `group`'s layer ([`crate::group`]): its CUDA
    /// layer is then rebuilt over the group, holding this rank's experts only, and CPU tensors
    /// are refused.
    fn set_group(&self, group: &crate::group::Group) -> PyResult<()> {
        let world = group.inner.world() as u32;
        let config = flashdmoe_core::MoeConfig { world, ..self.spec.base().clone() };
        config.validate().map_err(errors::config)?;
        let mut state = self.state();
        state.device = None;
        state.group = Some(std::sync::Arc::clone(&group.inner));
        Ok(())
    }

    /// The group's (rank, world, GPU), or `None` for a module of one rank.
    fn group_info(&self) -> Option<(usize, usize, usize)> {
        self.state().group.as_ref().map(|g| (g.rank(), g.world(), g.device()))
    }

    /// Core's seeded weights for `seed`, written into `out` (stacked name -> tensor).
    fn generate_weights(&self, seed: u64, out: &Bound<'_, PyDict>) -> PyResult<()> {
        let w = LayerWeights::generate(self.spec.base(), seed).map_err(errors::config)?;
        self.write_weights(&w, out)
    }

    /// Loads the layer from a state dict (stacked, Mixtral or Hugging Face names, optional
    /// layer `prefix`) into `out`.
    #[pyo3(signature = (state_dict, out, prefix=None))]
    fn load_state_dict(
        &self,
        state_dict: &Bound<'_, PyDict>,
        out: &Bound<'_, PyDict>,
        prefix: Option<&str>,
    ) -> PyResult<()> {
        let w = self.load(state_dict, prefix, false)?;
        self.write_weights(&w, out)
    }

    /// Loads the layer from safetensors files (the shards of one checkpoint) into `out`.
    #[pyo3(signature = (paths, out, prefix=None))]
    fn load_safetensors(
        &self,
        paths: Vec<std::path::PathBuf>,
        out: &Bound<'_, PyDict>,
        prefix: Option<&str>,
    ) -> PyResult<()> {
        let w = LayerWeights::load_safetensors(self.spec.base(), &paths, prefix)
            .map_err(errors::weights)?;
        self.write_weights(&w, out)
    }

    /// Raises the typed timeout of the last CUDA forward, if a wait inside it gave up; call it
    /// once the stream has finished (e.g. after `torch.cuda.synchronize()`).
    fn status(&self) -> PyResult<()> {
        match &self.state().device {
            Some(d) => d.status().map_err(errors::backend),
            None => Ok(()),
        }
    }

    /// Saves core's copy of the weights as a safetensors file with the stacked names.
    fn save_safetensors(&self, path: std::path::PathBuf) -> PyResult<()> {
        let state = self.state();
        let w = state.weights.as_ref().ok_or_else(|| {
            PyRuntimeError::new_err("the layer has no weights (set_weights) to save")
        })?;
        w.save_safetensors(self.spec.base(), &path).map_err(errors::weights)
    }

    /// The forward of `x` (`[tokens, hidden]`) into `out` (the same shape and dtype), routed
    /// by the layer's router or by `topk_ids` / `topk_weights` (`[tokens, top_k]`). CUDA
    /// tensors run on `stream` (the raw `cudaStream_t` of PyTorch's current stream, as an
    /// integer; 0 for the legacy default stream).
    #[pyo3(signature = (x, out, topk_ids=None, topk_weights=None, stream=0))]
    fn forward(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
        topk_ids: Option<&Bound<'_, PyAny>>,
        topk_weights: Option<&Bound<'_, PyAny>>,
        stream: usize,
    ) -> PyResult<()> {
        let xv = crate::tensor::view("x", x)?;
        if xv.device.split(':').next() == Some("cuda") {
            let outv = crate::tensor::view("out", out)?;
            let routing = match (topk_ids, topk_weights) {
                (None, None) => None,
                (Some(i), Some(w)) => Some((
                    crate::tensor::view("topk_ids", i)?,
                    crate::tensor::view("topk_weights", w)?,
                )),
                _ => {
                    let reason = "give both topk_ids and topk_weights, or neither".to_owned();
                    return Err(BindError::Value { what: "routing".into(), reason }.into());
                }
            };
            return self.forward_cuda(py, &xv, &outv, routing.as_ref(), stream);
        }
        if let Some(g) = &self.state().group {
            return Err(PyValueError::new_err(format!(
                "x is on {}: a flashdmoe.MoE with a group of {} ranks runs on CUDA only (one \
                 GPU per process); move the module and x to this rank's GPU, or use group=None \
                 for the CPU simulator",
                xv.device,
                g.world()
            )));
        }
        let hidden = self.spec.base().hidden as usize;
        let x = HostTensor::new("x", x)?;
        x.view().check_dtype(&[self.torch_dtype()])?;
        let tokens = x.view().check_rows(hidden, "[tokens, hidden]")?;
        let max = self.spec.max_tokens();
        let tokens = crate::tensor::check_tokens(tokens, max)?;
        let out = HostTensor::new("out", out)?;
        out.view().check_dtype(&[self.torch_dtype()])?;
        out.view().check_shape(&x.view().shape, "x's shape")?;
        let given = self.given(tokens as usize, topk_ids, topk_weights)?;
        let input = x.to_f32()?;
        let output = py.detach(|| self.run(tokens, &input, given)).map_err(errors::backend)?;
        out.write_f32(&output)?;
        Ok(())
    }
}
