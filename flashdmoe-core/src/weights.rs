//! Layer weights and inputs: seeded generators, shape checks and safetensors I/O (tensor names
//! documented in `weights/checkpoint.rs`: stacked `router.weight`, `experts.{up,gate,down}.weight`
//! and `.bias`, `router.bias`, `router.selection_bias`, `shared.{up,gate,down}.weight`,
//! `shared.gate_row.weight`; Mixtral, Hugging Face, DeepSeek and Qwen per-expert names accepted
//! on load), and the same loader over tensors held in memory (`weights/memory.rs`: a PyTorch
//! state dict).
//!
//! A [`ShardWeights`] (`weights/shard.rs`) is one rank's share of a layer when experts are
//! sharded over ranks: the router (with its biases) and the shared experts in full, the routed
//! experts' tensors of only the experts it lists. It is sliced from a [`LayerWeights`],
//! generated directly (the same numbers, without the rest of the layer), or loaded from a
//! checkpoint reading only its experts' bytes.
//!
//! Invariant: a [`LayerWeights`] accepted by [`LayerWeights::check`] for a config has exactly
//! the tensors that config needs (gate only for gated experts, biases only with `bias`, router
//! biases only when the routing reads them, shared experts only with `shared`), each of the
//! documented shape, holding finite values exactly representable in the config's dtype.
//!
//! The generators follow the team's seeded scheme (see [`crate::rng`]), so the PyTorch
//! baselines regenerate the same numbers: tensor ids [`ids`], scales `1/sqrt(H)` for the router,
//! the up/gate projections (routed and shared) and the shared-expert gate row, `1/sqrt(I)` for
//! the down projection (`1/sqrt(S)` for the shared one, `S` the shared intermediate size),
//! `0.1` for biases (the router's and the selection bias included), `1` for inputs.

use thiserror::Error;

use crate::config::{ConfigError, MoeConfig, SharedGate};
use crate::rng;

mod checkpoint;
mod memory;
mod shard;
mod shared_parts;

pub use memory::{TensorBytes, WeightTensor};
pub use shard::ShardWeights;
pub use shared_parts::{SharedParts, parts as shared_parts_of};

/// Tensor ids of the seeded generator.
pub mod ids {
    /// Router `[E][H]`.
    pub const ROUTER: u64 = 1;
    /// Up projection `[E][I][H]`.
    pub const UP: u64 = 2;
    /// Gate projection `[E][I][H]`.
    pub const GATE: u64 = 3;
    /// Down projection `[E][H][I]`.
    pub const DOWN: u64 = 4;
    /// Up bias `[E][I]`.
    pub const UP_BIAS: u64 = 5;
    /// Gate bias `[E][I]`.
    pub const GATE_BIAS: u64 = 6;
    /// Down bias `[E][H]`.
    pub const DOWN_BIAS: u64 = 7;
    /// Router bias `[E]`.
    pub const ROUTER_BIAS: u64 = 8;
    /// Selection bias `[E]`.
    pub const SELECTION_BIAS: u64 = 9;
    /// Shared experts' up projection `[S][H]`.
    pub const SHARED_UP: u64 = 10;
    /// Shared experts' gate projection `[S][H]`.
    pub const SHARED_GATE: u64 = 11;
    /// Shared experts' down projection `[H][S]`.
    pub const SHARED_DOWN: u64 = 12;
    /// The shared experts' sigmoid gate row `[H]`.
    pub const SHARED_GATE_ROW: u64 = 13;
    /// Input of rank `r` is `INPUT + r`.
    pub const INPUT: u64 = 1000;
}

/// Scale of generated biases.
pub const BIAS_SCALE: f32 = 0.1;

/// All weights of one MoE layer, host `f32` values exactly representable in the config dtype.
/// Matrices are row-major in PyTorch `nn.Linear` layout (`[out_features][in_features]`).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerWeights {
    /// Router `[experts][hidden]`.
    pub router: Vec<f32>,
    /// Up projection `[experts][inter][hidden]` (the only one for relu/gelu experts).
    pub up: Vec<f32>,
    /// Gate projection `[experts][inter][hidden]`, for SwiGLU experts only.
    pub gate: Option<Vec<f32>>,
    /// Down projection `[experts][hidden][inter]`.
    pub down: Vec<f32>,
    /// Up bias `[experts][inter]`, when the config has biases.
    pub up_bias: Option<Vec<f32>>,
    /// Gate bias `[experts][inter]`, SwiGLU with biases only.
    pub gate_bias: Option<Vec<f32>>,
    /// Down bias `[experts][hidden]`, when the config has biases.
    pub down_bias: Option<Vec<f32>>,
    /// Router bias `[experts]`, added to the logits ([`crate::Routing::router_bias`]).
    pub router_bias: Option<Vec<f32>>,
    /// Selection bias `[experts]` ([`crate::Routing::selection_bias`]).
    pub selection_bias: Option<Vec<f32>>,
    /// The shared experts' up projection `[S][hidden]`, `S` =
    /// [`crate::config::SharedExperts::total_inter`]
    /// (the shared experts side by side).
    pub shared_up: Option<Vec<f32>>,
    /// The shared experts' gate projection `[S][hidden]`.
    pub shared_gate: Option<Vec<f32>>,
    /// The shared experts' down projection `[hidden][S]`.
    pub shared_down: Option<Vec<f32>>,
    /// The gate row `[hidden]` of [`SharedGate::Sigmoid`] (Qwen's `shared_expert_gate`).
    pub shared_gate_row: Option<Vec<f32>>,
}

/// Why weights do not fit a config, or could not be read or written.
#[derive(Clone, Debug, PartialEq, Error)]
#[non_exhaustive]
pub enum WeightsError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A tensor the config needs is absent.
    #[error("missing tensor {tensor}")]
    Missing {
        /// The tensor's name.
        tensor: String,
    },
    /// A tensor is present that the config does not use.
    #[error("unexpected tensor {tensor}: {reason}")]
    Unexpected {
        /// The tensor's name.
        tensor: String,
        /// Why it does not belong.
        reason: String,
    },
    /// A tensor name is listed twice: in one file's header (where a reader would silently
    /// take one of them) or in two shards of one checkpoint.
    #[error("{file}: tensor {tensor} is listed twice")]
    Duplicate {
        /// The tensor's name.
        tensor: String,
        /// The file, or the two shards.
        file: String,
    },
    /// The checkpoint is in a layout flashdmoe recognises but cannot load yet.
    #[error("tensor {tensor}: the {layout} checkpoint layout is not supported yet (issue 16)")]
    Layout {
        /// A tensor of that layout.
        tensor: String,
        /// The layout, in words.
        layout: &'static str,
    },
    /// The layer asked for is a dense MLP layer, not an MoE layer.
    #[error(
        "layer {prefix} is a dense MLP layer ({tensor}, no router), not an MoE layer: it has no \
         experts to load (the model's config makes it dense, e.g. by first_k_dense_replace or \
         mlp_only_layers)"
    )]
    DenseLayer {
        /// The layer prefix asked for.
        prefix: String,
        /// Its dense MLP tensor.
        tensor: String,
    },
    /// A tensor has the wrong shape.
    #[error("tensor {tensor} has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The tensor's name.
        tensor: String,
        /// The shape the config dictates.
        expected: Vec<usize>,
        /// The shape found.
        found: Vec<usize>,
    },
    /// A value is not finite or not representable in the config's dtype.
    #[error("tensor {tensor}[{index}] = {value} is not a finite {dtype} value")]
    Value {
        /// The tensor's name.
        tensor: String,
        /// Flat element index.
        index: usize,
        /// The offending value.
        value: f32,
        /// The config's dtype name.
        dtype: &'static str,
    },
    /// A checkpoint tensor has an element type other than BF16, F16 or F32.
    #[error("tensor {tensor} has unsupported element type {dtype} (expected BF16, F16 or F32)")]
    DType {
        /// The tensor's name.
        tensor: String,
        /// The element type found.
        dtype: String,
    },
    /// Several layers of a checkpoint qualify; a layer prefix must choose one.
    #[error("the checkpoint holds several MoE layers; choose one by prefix: {}",
        candidates.join(", "))]
    Ambiguous {
        /// The layer prefixes found.
        candidates: Vec<String>,
    },
    /// A file is not a valid safetensors file.
    #[error("{file}: not a valid safetensors file: {message}")]
    Format {
        /// The file (or `<memory>`).
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The expert list of a [`ShardWeights`] is not strictly ascending ids of the config's
    /// experts.
    #[error("shard experts[{index}] = {expert}: {reason}")]
    Experts {
        /// The position in the list.
        index: usize,
        /// The expert id there.
        expert: u32,
        /// What is wrong with it.
        reason: String,
    },
    /// A file cannot be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        message: String,
    },
}

/// One tensor a config needs: name (as in [`LayerWeights`]), generator id, shape, scale.
struct Spec {
    name: &'static str,
    id: u64,
    shape: Vec<usize>,
    scale: f32,
}

/// The tensors `config` needs, in field order of [`LayerWeights`].
fn specs(config: &MoeConfig) -> Vec<Spec> {
    let (h, i, e) = (config.hidden as usize, config.inter as usize, config.experts as usize);
    let (sh, si) = (1.0 / (h as f32).sqrt(), 1.0 / (i as f32).sqrt());
    let (gated, bias) = (config.activation.is_gated(), config.bias);
    let spec = |name, id, shape, scale| Spec { name, id, shape, scale };
    let mut out =
        vec![spec("router", ids::ROUTER, vec![e, h], sh), spec("up", ids::UP, vec![e, i, h], sh)];
    if gated {
        out.push(spec("gate", ids::GATE, vec![e, i, h], sh));
    }
    out.push(spec("down", ids::DOWN, vec![e, h, i], si));
    if bias {
        out.push(spec("up_bias", ids::UP_BIAS, vec![e, i], BIAS_SCALE));
        if gated {
            out.push(spec("gate_bias", ids::GATE_BIAS, vec![e, i], BIAS_SCALE));
        }
        out.push(spec("down_bias", ids::DOWN_BIAS, vec![e, h], BIAS_SCALE));
    }
    let r = &config.routing;
    if r.router_bias {
        out.push(spec("router_bias", ids::ROUTER_BIAS, vec![e], BIAS_SCALE));
    }
    if r.selection_bias {
        out.push(spec("selection_bias", ids::SELECTION_BIAS, vec![e], BIAS_SCALE));
    }
    if let Some(shared) = config.shared {
        let s = shared.total_inter() as usize;
        let ss = 1.0 / (s as f32).sqrt();
        out.push(spec("shared_up", ids::SHARED_UP, vec![s, h], sh));
        out.push(spec("shared_gate", ids::SHARED_GATE, vec![s, h], sh));
        out.push(spec("shared_down", ids::SHARED_DOWN, vec![h, s], ss));
        if shared.gate == SharedGate::Sigmoid {
            out.push(spec("shared_gate_row", ids::SHARED_GATE_ROW, vec![h], sh));
        }
    }
    out
}

/// Whether tensor `name` (a [`specs`] name) is stacked over the routed experts, first
/// dimension `[experts]`: what a [`ShardWeights`] holds of its own experts only. The router's
/// `[experts]` rows and biases are not: every rank holds the whole router.
fn is_routed(name: &str) -> bool {
    matches!(name, "up" | "gate" | "down" | "up_bias" | "gate_bias" | "down_bias")
}

/// [`specs`] of a shard of `experts` routed experts: the routed tensors' first dimension is
/// `experts`, the other tensors are whole.
fn shard_specs(config: &MoeConfig, experts: usize) -> Vec<Spec> {
    let mut out = specs(config);
    for s in out.iter_mut().filter(|s| is_routed(s.name)) {
        s.shape[0] = experts;
    }
    out
}

/// Every [`LayerWeights`] tensor that is optional, and why a config may not have it.
fn why_absent(name: &str, config: &MoeConfig) -> String {
    match name {
        "gate" => format!("the {:?} activation has no gate projection", config.activation),
        "gate_bias" if config.bias => "only gated experts have a gate bias".to_owned(),
        "up_bias" | "gate_bias" | "down_bias" => "the config has no biases".to_owned(),
        "router_bias" => "the config's router has no bias (routing.router_bias)".to_owned(),
        "selection_bias" => {
            "the config's router has no selection bias (routing.selection_bias)".to_owned()
        }
        "shared_gate_row" if config.shared.is_some() => {
            "the config's shared experts have no sigmoid gate".to_owned()
        }
        _ => "the config has no shared experts".to_owned(),
    }
}

/// The optional tensors of [`LayerWeights`].
const OPTIONAL: [&str; 10] = [
    "gate",
    "up_bias",
    "gate_bias",
    "down_bias",
    "router_bias",
    "selection_bias",
    "shared_up",
    "shared_gate",
    "shared_down",
    "shared_gate_row",
];

impl LayerWeights {
    /// The seeded weights of `config` under `seed` (module doc; shared with the baselines).
    ///
    /// Every tensor is allocated before any is filled, each fallibly: a layer too large for
    /// this host is a [`ConfigError::HostMemory`] naming the tensor and its size, at once,
    /// never an aborted process.
    pub fn generate(config: &MoeConfig, seed: u64) -> Result<LayerWeights, ConfigError> {
        config.validate()?;
        filled(specs(config), |s, values| rng::fill(values, seed, s.id, s.scale, config.dtype))
    }

    /// Every tensor `config` needs, all zeros (tests build layers by hand from it).
    #[cfg(test)]
    pub(crate) fn zeros(config: &MoeConfig) -> LayerWeights {
        let mut w = LayerWeights::empty();
        for s in specs(config) {
            w.set(s.name, vec![0.0; s.shape.iter().product()]);
        }
        w
    }

    /// No tensors (to be filled by [`LayerWeights::set`]).
    pub(crate) fn empty() -> LayerWeights {
        LayerWeights {
            router: Vec::new(),
            up: Vec::new(),
            gate: None,
            down: Vec::new(),
            up_bias: None,
            gate_bias: None,
            down_bias: None,
            router_bias: None,
            selection_bias: None,
            shared_up: None,
            shared_gate: None,
            shared_down: None,
            shared_gate_row: None,
        }
    }

    /// The tensor named `name` (a [`LayerWeights`] field name), if present.
    pub fn tensor(&self, name: &str) -> Option<&[f32]> {
        match name {
            "router" => Some(&self.router),
            "up" => Some(&self.up),
            "gate" => self.gate.as_deref(),
            "down" => Some(&self.down),
            "up_bias" => self.up_bias.as_deref(),
            "gate_bias" => self.gate_bias.as_deref(),
            "down_bias" => self.down_bias.as_deref(),
            "router_bias" => self.router_bias.as_deref(),
            "selection_bias" => self.selection_bias.as_deref(),
            "shared_up" => self.shared_up.as_deref(),
            "shared_gate" => self.shared_gate.as_deref(),
            "shared_down" => self.shared_down.as_deref(),
            "shared_gate_row" => self.shared_gate_row.as_deref(),
            _ => None,
        }
    }

    /// Stores `values` as the tensor `name` (one of [`specs`]' names).
    fn set(&mut self, name: &str, values: Vec<f32>) {
        match name {
            "router" => self.router = values,
            "up" => self.up = values,
            "gate" => self.gate = Some(values),
            "down" => self.down = values,
            "up_bias" => self.up_bias = Some(values),
            "gate_bias" => self.gate_bias = Some(values),
            "down_bias" => self.down_bias = Some(values),
            "router_bias" => self.router_bias = Some(values),
            "selection_bias" => self.selection_bias = Some(values),
            "shared_up" => self.shared_up = Some(values),
            "shared_gate" => self.shared_gate = Some(values),
            "shared_down" => self.shared_down = Some(values),
            "shared_gate_row" => self.shared_gate_row = Some(values),
            _ => unreachable!("specs() only names LayerWeights fields"),
        }
    }

    /// Checks that these weights fit `config` (module invariant): the right tensors, shapes,
    /// and finite values representable in the dtype.
    pub fn check(&self, config: &MoeConfig) -> Result<(), WeightsError> {
        self.check_shapes(config)?;
        for s in specs(config) {
            let values = self.tensor(s.name).unwrap_or_default();
            check_values(s.name, values, config)?;
        }
        Ok(())
    }

    /// The cheap part of [`LayerWeights::check`]: the right tensors with the right shapes
    /// (values not inspected).
    pub fn check_shapes(&self, config: &MoeConfig) -> Result<(), WeightsError> {
        config.validate()?;
        self.check_tensors(config, specs(config))
    }

    /// The tensors of `needed` are present with their shapes, and no other optional one.
    fn check_tensors(&self, config: &MoeConfig, needed: Vec<Spec>) -> Result<(), WeightsError> {
        for name in OPTIONAL {
            if self.tensor(name).is_some() && !needed.iter().any(|s| s.name == name) {
                let reason = why_absent(name, config);
                return Err(WeightsError::Unexpected { tensor: name.to_owned(), reason });
            }
        }
        for s in needed {
            let values = self
                .tensor(s.name)
                .ok_or_else(|| WeightsError::Missing { tensor: s.name.to_owned() })?;
            if values.len() != s.shape.iter().product::<usize>() {
                return Err(WeightsError::Shape {
                    tensor: s.name.to_owned(),
                    expected: s.shape,
                    found: vec![values.len()],
                });
            }
        }
        Ok(())
    }
}

/// Every value of tensor `name` is finite and representable in the config's dtype.
fn check_values(name: &str, values: &[f32], config: &MoeConfig) -> Result<(), WeightsError> {
    let dtype = config.dtype;
    match values.iter().position(|&v| !(v.is_finite() && dtype.is_representable(v))) {
        None => Ok(()),
        Some(index) => Err(WeightsError::Value {
            tensor: name.to_owned(),
            index,
            value: values[index],
            dtype: dtype.name(),
        }),
    }
}

/// A zeroed `f32` buffer of `len` elements, or [`ConfigError::HostMemory`] naming `what` and
/// the size when the allocator refuses it.
/// The tensors of `specs`, each allocated (fallibly, all before any is filled) and then filled
/// by `fill`: what the seeded generators of a layer and of a shard share.
fn filled(
    specs: Vec<Spec>,
    mut fill: impl FnMut(&Spec, &mut [f32]),
) -> Result<LayerWeights, ConfigError> {
    let buffers = specs
        .iter()
        .map(|s| try_zeroed(s.shape.iter().product(), describe(s.name)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut w = LayerWeights::empty();
    for (s, mut values) in specs.into_iter().zip(buffers) {
        fill(&s, &mut values);
        w.set(s.name, values);
    }
    Ok(w)
}

/// `len` zeros, or [`ConfigError::HostMemory`] when the allocation fails. The zeros come from
/// the allocator's zeroed pages (no pass over the memory on this thread: a DeepSeek-V3 layer's
/// 45 GB took 25 s to zero that way), so the generators' parallel fills touch them first.
fn try_zeroed(len: usize, what: &'static str) -> Result<Vec<f32>, ConfigError> {
    let bytes = (len as u64).saturating_mul(4);
    let failed = || ConfigError::HostMemory { what, bytes };
    if len == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<f32>(len).map_err(|_| failed())?;
    // SAFETY: `layout` has a non-zero size (len > 0).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<f32>();
    if ptr.is_null() {
        return Err(failed());
    }
    // SAFETY: `ptr` comes from the global allocator with the layout of `[f32; len]` (the
    // layout `Vec<f32>` uses for capacity `len`), and all-zero bytes are a valid f32 (0.0), so
    // all `len` elements are initialised.
    Ok(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

/// A [`specs`] name in words.
fn describe(name: &str) -> &'static str {
    match name {
        "router" => "router weights",
        "up" => "up projection weights",
        "gate" => "gate projection weights",
        "down" => "down projection weights",
        "up_bias" => "up projection biases",
        "gate_bias" => "gate projection biases",
        "down_bias" => "down projection biases",
        "router_bias" => "router bias",
        "selection_bias" => "router selection bias",
        "shared_up" => "shared experts' up projection",
        "shared_gate" => "shared experts' gate projection",
        "shared_down" => "shared experts' down projection",
        _ => "shared experts' gate row",
    }
}

/// The seeded input of `rank` (`[tokens_per_rank][hidden]`, scale 1) under `seed`.
pub fn generate_input(config: &MoeConfig, rank: u32, seed: u64) -> Result<Vec<f32>, ConfigError> {
    config.validate()?;
    if rank >= config.world {
        return Err(ConfigError::Invalid {
            field: "world",
            reason: format!("rank {rank} does not exist in a world of {}", config.world),
        });
    }
    let len = config.tokens_per_rank as usize * config.hidden as usize;
    let mut x = try_zeroed(len, "input rows")?;
    rng::fill(&mut x, seed, ids::INPUT + rank as u64, 1.0, config.dtype);
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Activation;
    use crate::dtype::DType;
    use crate::rng::SplitMix64;

    /// A small bf16 SwiGLU layer with biases (also the in-memory loader's tests' layer).
    pub(super) fn swiglu_bias() -> MoeConfig {
        MoeConfig {
            hidden: 64,
            inter: 128,
            experts: 3,
            activation: Activation::SiluGated,
            bias: true,
            ..MoeConfig::default()
        }
    }

    #[test]
    fn generated_tensors_follow_the_shared_scheme() {
        let c = swiglu_bias();
        let w = LayerWeights::generate(&c, 9).unwrap();
        assert_eq!(w.check(&c), Ok(()));
        // The first down weight: seed 9, id 4, scale 1/sqrt(128), rounded to bf16.
        let mut r = SplitMix64::for_tensor(9, ids::DOWN);
        let expect = DType::Bf16.round((2.0 * r.next_unit() - 1.0) / 128f32.sqrt());
        assert_eq!(w.down[0], expect);
        assert_eq!(w.gate.as_ref().unwrap().len(), 3 * 128 * 64);
        assert_eq!(w.gate_bias.as_ref().unwrap().len(), 3 * 128);
        assert_eq!(w.down_bias.as_ref().unwrap().len(), 3 * 64);
        // |v| < 0.1 before rounding; rounding is monotone, so at most bf16(0.1) = 0.10009765625.
        let bound = DType::Bf16.round(BIAS_SCALE);
        assert!(w.up_bias.as_ref().unwrap().iter().all(|v| v.abs() <= bound));
        // Inputs: id 1000 + rank.
        let x = generate_input(&c, 1, 9).unwrap();
        let mut r = SplitMix64::for_tensor(9, 1001);
        assert_eq!(x[0], DType::Bf16.round(2.0 * r.next_unit() - 1.0));
        assert_eq!(x.len(), 64 * 64);
        assert!(generate_input(&c, 2, 9).is_err());
        // Relu without biases has only router, up and down.
        let plain = MoeConfig { activation: Activation::Relu, bias: false, ..c };
        let w = LayerWeights::generate(&plain, 9).unwrap();
        assert!(w.gate.is_none() && w.up_bias.is_none() && w.down_bias.is_none());
    }

    #[test]
    fn generated_tensors_equal_the_generator_and_a_refused_allocation_is_typed() {
        let c = swiglu_bias();
        let w = LayerWeights::generate(&c, 3).unwrap();
        let len = w.up.len();
        assert_eq!(w.up, rng::tensor(3, ids::UP, len, 1.0 / 64f32.sqrt(), c.dtype));
        // No allocator grants isize::MAX bytes: the size is named, nothing aborts.
        let err = try_zeroed(usize::MAX / 4, describe("up")).unwrap_err();
        assert!(matches!(err, ConfigError::HostMemory { what: "up projection weights", .. }));
        let msg = err.to_string();
        assert!(
            msg.starts_with("cannot allocate ")
                && msg.contains(" GiB of host memory for the up projection weights"),
            "{msg}"
        );
    }

    #[test]
    fn check_rejects_what_does_not_fit() {
        let c = swiglu_bias();
        let good = LayerWeights::generate(&c, 1).unwrap();
        let relu = MoeConfig { activation: Activation::Relu, ..c.clone() };
        assert!(matches!(good.check(&relu), Err(WeightsError::Unexpected { tensor, .. })
                if tensor == "gate"));
        let no_bias = MoeConfig { bias: false, ..c.clone() };
        assert!(matches!(good.check(&no_bias), Err(WeightsError::Unexpected { tensor, .. })
                if tensor == "up_bias"));

        let mut w = good.clone();
        w.gate = None;
        assert_eq!(w.check(&c), Err(WeightsError::Missing { tensor: "gate".into() }));
        let mut w = good.clone();
        w.down.pop();
        assert!(matches!(w.check(&c), Err(WeightsError::Shape { tensor, .. }) if tensor == "down"));
        let mut w = good.clone();
        w.router[5] = 0.1; // not a bf16 value
        assert!(matches!(w.check(&c), Err(WeightsError::Value { index: 5, .. })));
        let mut w = good;
        w.up[0] = f32::NAN;
        assert!(matches!(w.check(&c), Err(WeightsError::Value { index: 0, .. })));
    }
}
