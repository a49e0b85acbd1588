//! MoE layer configuration: the shapes and policies of one layer, their validation, expert
//! placement, packet capacity, and the protocol [`Geometry`] they induce.
//!
//! Invariants:
//!
//! * A config that passes [`MoeConfig::validate`] can be run by every backend: every size is
//!   non-zero (except the token count, which may be 0), `1 <= top_k <= experts`, hidden and
//!   intermediate sizes are multiples of [`SIZE_MULTIPLE`] (so every backend's tile divides
//!   them), the placement is well formed, and the per-rank memory estimate is under
//!   [`MoeConfig::memory_limit`].
//! * Every derived quantity (capacity, placement, geometry) is a pure function of the config,
//!   so all ranks and all backends derive the same values.
//!
//! Configs are built with [`MoeConfig::builder`] (or struct syntax over [`MoeConfig::default`]),
//! taken from [`presets`], or loaded from files: our TOML/JSON schema and Hugging Face
//! `config.json` ([`MoeConfig::load`]; the schema is documented in `config/file.rs`).

use flashdmoe_proto::{Geometry, HeapLayout, ProtoError, TileShape};
use thiserror::Error;

pub use crate::dtype::DType;

mod file;
mod hf;
mod model;
pub mod presets;

pub use model::{GroupScore, Groups, Routing, Scoring, SharedExperts, SharedGate, SwigluOss};
pub use presets::preset;

/// Hidden and intermediate sizes must be multiples of this (every backend's `bn` and `bk`
/// divide it).
pub const SIZE_MULTIPLE: u32 = 64;

/// Default [`MoeConfig::memory_limit`]: 120 GiB, what fits on one H200 with headroom.
pub const DEFAULT_MEMORY_LIMIT: u64 = 120 << 30;

/// The tile used by [`MoeConfig::memory_estimate`]: `bm` 128 as on the GPU, `bn` = `bk` = 64,
/// which divides every valid config (and over-counts signals compared to `bn` 128).
pub const NOMINAL_TILE: TileShape = TileShape::new(128, 64, 64);

/// Expert activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// Exact (erf) GELU.
    Gelu,
    /// SwiGLU: `silu(x W_gate^T) * (x W_up^T)` (two up-projection matrices).
    SiluGated,
    /// gpt-oss's clamped SwiGLU ([`SwigluOss`]), gate and up projections like SwiGLU's.
    SwigluOss(SwigluOss),
}

impl Activation {
    /// Whether the experts have a gate projection (SwiGLU, gpt-oss's SwiGLU).
    pub const fn is_gated(self) -> bool {
        matches!(self, Activation::SiluGated | Activation::SwigluOss(_))
    }

    /// The activated value `h` of one intermediate element, in `f64`, from its up-projection
    /// `up` (bias included) and, for SwiGLU, its gate projection `gate` (ignored otherwise):
    /// relu `max(up, 0)`; gelu `up * (1 + erf(up / sqrt 2)) / 2`; SwiGLU
    /// `silu(gate) * up` with `silu(g) = g / (1 + exp(-g))`; gpt-oss's [`SwigluOss::eval`].
    pub fn eval(self, up: f64, gate: f64) -> f64 {
        match self {
            Activation::Relu => up.max(0.0),
            Activation::Gelu => 0.5 * up * (1.0 + libm::erf(up * std::f64::consts::FRAC_1_SQRT_2)),
            Activation::SiluGated => gate / (1.0 + (-gate).exp()) * up,
            Activation::SwigluOss(p) => p.eval(up, gate),
        }
    }
}

/// How many rows a `(source rank, expert)` packet may hold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CapacityPolicy {
    /// `ceil(factor * tokens_per_rank * top_k / experts)` rows; further tokens are dropped,
    /// lowest token index kept first.
    Factor(f64),
    /// No token is ever dropped (capacity = tokens per rank).
    Dropless,
}

/// Which rank owns each expert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Experts split into contiguous blocks of `ceil(E / P)` per rank.
    Contiguous,
    /// `table[expert] = rank`.
    Table(Vec<u32>),
}

/// One MoE layer distributed over `world` ranks.
#[derive(Clone, Debug, PartialEq)]
pub struct MoeConfig {
    /// Number of ranks P.
    pub world: u32,
    /// Tokens per rank T.
    pub tokens_per_rank: u32,
    /// Hidden size H.
    pub hidden: u32,
    /// Expert intermediate size I.
    pub inter: u32,
    /// Number of experts E.
    pub experts: u32,
    /// Experts per token k.
    pub top_k: u32,
    /// Expert activation.
    pub activation: Activation,
    /// Whether the expert projections have biases.
    pub bias: bool,
    /// Element type.
    pub dtype: DType,
    /// Capacity policy.
    pub capacity: CapacityPolicy,
    /// Renormalise the combine weights over the chosen k (Mixtral style; `norm_topk_prob`).
    pub renormalize: bool,
    /// The router's scoring, biases, groups and scaling (the paper's: [`Routing::SOFTMAX`]).
    pub routing: Routing,
    /// Shared experts every token visits, if any.
    pub shared: Option<SharedExperts>,
    /// Expert placement.
    pub placement: Placement,
    /// Largest accepted [`MoeConfig::memory_estimate`] total per rank, in bytes.
    pub memory_limit: u64,
}

impl Default for MoeConfig {
    /// A small layer that runs in well under a second on the CPU simulator: 2 ranks, 64 tokens
    /// each, H 256, I 512, 8 experts, top-2, ReLU, bf16, capacity factor 1, contiguous.
    fn default() -> Self {
        MoeConfig {
            world: 2,
            tokens_per_rank: 64,
            hidden: 256,
            inter: 512,
            experts: 8,
            top_k: 2,
            activation: Activation::Relu,
            bias: false,
            dtype: DType::Bf16,
            capacity: CapacityPolicy::Factor(1.0),
            renormalize: true,
            routing: Routing::SOFTMAX,
            shared: None,
            placement: Placement::Contiguous,
            memory_limit: DEFAULT_MEMORY_LIMIT,
        }
    }
}

/// A configuration problem, naming the offending field.
#[derive(Clone, Debug, PartialEq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field has an invalid value.
    #[error("invalid config: {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// No preset has this name.
    #[error("unknown preset {name:?} (known: {known})")]
    UnknownPreset {
        /// The name asked for.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// A config file is not valid TOML/JSON or does not follow the schema.
    #[error("cannot parse {format} config: {message}")]
    Parse {
        /// `"TOML"` or `"JSON"`.
        format: &'static str,
        /// The parser's message (with line and column where known).
        message: String,
    },
    /// A config file cannot be read.
    #[error("cannot read config {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        message: String,
    },
    /// A Hugging Face `config.json` field is absent, malformed, or contradicts its model
    /// family's reference (the field is named as in the file, nested ones with their parent:
    /// `ffn_config.moe_top_k`).
    #[error("Hugging Face config.json: {field}: {reason}")]
    HfField {
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
    /// The model needs features that change the layer's math and are not implemented yet: a
    /// config or a checkpoint that would otherwise compute a different layer than the model's.
    #[error("{origin}: {} (issue 16){note}", list(unsupported))]
    NotImplemented {
        /// What asked for them: `config.json`, `preset gpt-oss-20b`.
        origin: String,
        /// Each field and the feature it needs.
        unsupported: Vec<Unsupported>,
        /// Appended to the message (empty, or `; ...` pointing to what can run instead).
        note: String,
    },
    /// The layer does not fit in host memory: an allocation of `bytes` was refused.
    #[error(
        "cannot allocate {} of host memory for the {what} (the layer is too large for this \
         machine; shrink it)",
        gib(*bytes)
    )]
    HostMemory {
        /// What was being allocated, e.g. `up projection`.
        what: &'static str,
        /// The size asked for.
        bytes: u64,
    },
}

/// A model feature that changes a MoE layer's math beyond the paper's layer (issue 16). Those
/// flashdmoe does not compute at all (Llama-4's router, other gated activations, p-norms,
/// quantized weights) refuse the configs and checkpoints that need them
/// ([`ConfigError::NotImplemented`]); the others (shared experts, DeepSeek's and gpt-oss's
/// routing, gpt-oss's SwiGLU) are computed by the oracle and the simulator and listed by
/// [`MoeConfig::features`] for a backend that lacks them to refuse (the CUDA kernel:
/// `BackendError::NotSupported`). Never run as a different layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Feature {
    /// Experts every token visits besides its routed ones (`n_shared_experts`,
    /// `shared_expert_intermediate_size`, Llama-4's shared expert).
    SharedExperts,
    /// Qwen2-MoE's sigmoid `shared_expert_gate` scaling the shared expert.
    SharedExpertGate,
    /// Router scores other than a softmax (`scoring_func = sigmoid`).
    RouterScoring,
    /// A bias added to the scores for expert selection only (`e_score_correction_bias`,
    /// `topk_method = noaux_tc`).
    SelectionBias,
    /// Top-k within the best expert groups (`n_group`, `topk_group`).
    GroupedTopK,
    /// Combine weights scaled by `routed_scaling_factor`.
    RoutedScaling,
    /// Top-k weights divided by a p-norm other than p = 1 (DBRX `moe_normalize_expert_weights`).
    TopKNorm,
    /// A bias on the router's logits (gpt-oss).
    RouterBias,
    /// SwiGLU with its inputs clamped to `swiglu_limit` (gpt-oss).
    SwigluClamp,
    /// gpt-oss's SwiGLU variant: `gate * sigmoid(1.702 gate) * (up + 1)`.
    GptOssSwiglu,
    /// Llama-4's router: the sigmoid of the chosen logit scales the expert's input.
    Llama4Router,
    /// Gated experts with an activation other than SiLU.
    GatedActivation,
    /// Quantized expert weights (`quantization_config`: MXFP4, FP8 blocks, ...).
    QuantizedWeights,
}

impl Feature {
    /// The feature as the subject of a sentence, with its verb: `shared experts are`.
    pub const fn subject(self) -> &'static str {
        match self {
            Feature::SharedExperts => "shared experts are",
            Feature::SharedExpertGate => "the sigmoid shared_expert_gate is",
            Feature::RouterScoring => "router scores other than softmax are",
            Feature::SelectionBias => "the selection bias (e_score_correction_bias, noaux_tc) is",
            Feature::GroupedTopK => "grouped top-k (n_group, topk_group) is",
            Feature::RoutedScaling => "combine weights scaled by routed_scaling_factor are",
            Feature::TopKNorm => "normalising the top-k weights by a p-norm other than p = 1 is",
            Feature::RouterBias => "a router bias is",
            Feature::SwigluClamp => "SwiGLU clamped to swiglu_limit is",
            Feature::GptOssSwiglu => {
                "gpt-oss's SwiGLU (gate * sigmoid(1.702 * gate) * (up + 1)) is"
            }
            Feature::Llama4Router => {
                "Llama-4's router (the sigmoid of the chosen logit scales the expert's input) is"
            }
            Feature::GatedActivation => "gated experts with an activation other than silu are",
            Feature::QuantizedWeights => "quantized expert weights are",
        }
    }
}

impl std::fmt::Display for Feature {
    /// `{subject} not implemented yet`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} not implemented yet", self.subject())
    }
}

/// One field of a model that needs a [`Feature`] flashdmoe lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported {
    /// The field, as the model's config names it (`shared_expert_intermediate_size`).
    pub field: String,
    /// Its value (for an absent field, the model family's default, said so).
    pub value: String,
    /// The feature it needs.
    pub feature: Feature,
}

impl Unsupported {
    /// `field = value` needs `feature`.
    pub fn new(field: impl Into<String>, value: impl Into<String>, feature: Feature) -> Self {
        Unsupported { field: field.into(), value: value.into(), feature }
    }
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} = {}: {}", self.field, self.value, self.feature)
    }
}

fn list(unsupported: &[Unsupported]) -> String {
    unsupported.iter().map(Unsupported::to_string).collect::<Vec<_>>().join("; ")
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field, reason: reason.into() }
}

impl From<ProtoError> for ConfigError {
    /// A protocol geometry error for this config (a tile that does not fit, a layout that
    /// overflows), reported under the geometry field it names.
    fn from(e: ProtoError) -> ConfigError {
        match e {
            ProtoError::InvalidGeometry { field, reason } => invalid(field, reason),
            other => invalid("geometry", other.to_string()),
        }
    }
}

/// Which rank owns each expert, and each expert's local index there.
///
/// The local index of an expert is its position among its owner's experts in ascending
/// global order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpertMap {
    owners: Vec<(u32, u32)>,
    by_rank: Vec<Vec<u32>>,
}

impl ExpertMap {
    /// `(owner rank, local index)` of global expert `expert` (`< experts`).
    pub fn owner(&self, expert: u32) -> (u32, u32) {
        self.owners[expert as usize]
    }

    /// The global experts `rank` owns, ascending (empty when it owns none).
    pub fn experts_of(&self, rank: u32) -> &[u32] {
        &self.by_rank[rank as usize]
    }

    /// The global expert at `(rank, local)`, if that rank has that many experts.
    pub fn global(&self, rank: u32, local: u32) -> Option<u32> {
        self.by_rank.get(rank as usize)?.get(local as usize).copied()
    }

    /// Expert slots per rank: the most experts any rank owns.
    pub fn local_experts(&self) -> u32 {
        self.by_rank.iter().map(|e| e.len() as u32).max().unwrap_or(0)
    }
}

/// Memory a config needs, in bytes (see [`MoeConfig::memory_estimate`]): per-rank device
/// memory (`heap`, `weights`, `activations`), the layer's weights on one device for comparison
/// (`layer_weights`), and host memory, of the whole layer in one process (`host`) or of one
/// rank's share in its own process (`host_per_rank`).
///
/// Experts are sharded: each rank holds the router and the shared experts whole
/// (`replicated_weights`) and its own experts only, so `weights` is about `(layer_weights -
/// replicated_weights) / P + replicated_weights` (exactly that when `P` divides the experts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// The symmetric heap at [`NOMINAL_TILE`].
    pub heap: u64,
    /// Device weights per rank, in the dtype: the router (with its biases), the shared experts
    /// and the rank's expert slots (`local_experts` full experts, with biases): a
    /// [`crate::ShardWeights`] of the most loaded rank.
    pub weights: u64,
    /// The part of `weights` every rank holds whole: the router with its biases and the shared
    /// experts, in the dtype.
    pub replicated_weights: u64,
    /// The whole layer's weights in the dtype (router, shared experts and every expert, with
    /// biases): what one device would hold without sharding, and the sum over ranks of their
    /// routed experts plus one copy of `replicated_weights`.
    pub layer_weights: u64,
    /// One rank's input and output rows plus its `[T][E]` f32 router probabilities.
    pub activations: u64,
    /// Host memory, all ranks together in one process (the simulator, the CLI's check): the
    /// layer's weights as [`crate::LayerWeights`] holds them (host `f32`, router, shared
    /// experts and every expert, with biases), every rank's input and one output (`f32`), the
    /// routing of every rank as the oracle computes it (`[T][E]` f32 scores, and choice scores
    /// where they differ, per-expert token lists, the chosen pairs) and every rank's
    /// shared-expert intermediate rows. What a backend or a caller holds besides (a backend's
    /// copy of the weights, more outputs) comes on top.
    pub host: u64,
    /// Host memory of one rank in a process of its own (one process per GPU): the terms of
    /// `host` for that rank alone, with the weights of its share only (a
    /// [`crate::ShardWeights`] in `f32`: router, shared experts and `local_experts` experts).
    pub host_per_rank: u64,
}

impl MemoryEstimate {
    /// The device part: `heap + weights + activations` (one rank).
    pub fn total(&self) -> u64 {
        self.heap.saturating_add(self.weights).saturating_add(self.activations)
    }
}

impl MoeConfig {
    /// Checks every field; the error names the first offending one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let nonzero = [
            ("world", self.world),
            ("hidden", self.hidden),
            ("inter", self.inter),
            ("experts", self.experts),
            ("top_k", self.top_k),
        ];
        for (field, v) in nonzero {
            if v == 0 {
                return Err(invalid(field, "must be > 0"));
            }
        }
        if self.world > u16::MAX as u32 {
            return Err(invalid("world", format!("{} exceeds the 65535 ranks", self.world)));
        }
        if self.top_k > self.experts {
            return Err(invalid(
                "top_k",
                format!("{} exceeds the number of experts ({})", self.top_k, self.experts),
            ));
        }
        for (field, v) in [("hidden", self.hidden), ("inter", self.inter)] {
            if v % SIZE_MULTIPLE != 0 {
                return Err(invalid(field, format!("{v} is not a multiple of {SIZE_MULTIPLE}")));
            }
        }
        match self.capacity {
            CapacityPolicy::Factor(f) if !(f.is_finite() && f > 0.0) => {
                return Err(invalid("capacity", format!("factor {f} must be finite and > 0")));
            }
            CapacityPolicy::Factor(_) | CapacityPolicy::Dropless => {}
        }
        self.validate_model()?;
        self.check_placement()?;
        let memory = self.memory_estimate()?;
        if memory.total() > self.memory_limit {
            return Err(invalid(
                "memory_limit",
                format!(
                    "needs {} per rank (heap {}, weights {}, activations {}), limit is {}",
                    gib(memory.total()),
                    gib(memory.heap),
                    gib(memory.weights),
                    gib(memory.activations),
                    gib(self.memory_limit)
                ),
            ));
        }
        Ok(())
    }

    /// Which rank owns each expert. Errors only for a malformed placement table (checked
    /// again by [`MoeConfig::validate`]).
    pub fn expert_map(&self) -> Result<ExpertMap, ConfigError> {
        self.check_placement()?;
        let per_rank = self.experts.div_ceil(self.world);
        let mut by_rank = vec![Vec::new(); self.world as usize];
        let mut owners = Vec::with_capacity(self.experts as usize);
        for e in 0..self.experts {
            let r = match &self.placement {
                Placement::Contiguous => e / per_rank,
                Placement::Table(table) => table[e as usize],
            };
            let list: &mut Vec<u32> = &mut by_rank[r as usize];
            owners.push((r, list.len() as u32));
            list.push(e);
        }
        Ok(ExpertMap { owners, by_rank })
    }

    /// A non-empty world, and a placement table with one in-range rank per expert.
    fn check_placement(&self) -> Result<(), ConfigError> {
        if self.world == 0 {
            return Err(invalid("world", "must be > 0"));
        }
        let Placement::Table(table) = &self.placement else { return Ok(()) };
        if table.len() != self.experts as usize {
            return Err(invalid(
                "placement",
                format!(
                    "table has {} entries but there are {} experts (one owner per expert)",
                    table.len(),
                    self.experts
                ),
            ));
        }
        match table.iter().enumerate().find(|&(_, &r)| r >= self.world) {
            Some((e, r)) => Err(invalid(
                "placement",
                format!("expert {e} is placed on rank {r}, but world is {}", self.world),
            )),
            None => Ok(()),
        }
    }

    /// Row capacity of one `(source rank, expert)` packet: `Factor(f)` gives
    /// `ceil(f * (T * k) / E)` evaluated in `f64` in that order, clamped to `T`; `Dropless`
    /// gives `T`.
    pub fn capacity_rows(&self) -> u32 {
        self.capacity_rows_for(self.tokens_per_rank)
    }

    /// [`Self::capacity_rows`] of a forward of `t` tokens a rank (a layer built for
    /// `tokens_per_rank` may run fewer: the device-resident forward). Never more than
    /// [`Self::capacity_rows`] for `t <= tokens_per_rank`.
    pub fn capacity_rows_for(&self, t: u32) -> u32 {
        match self.capacity {
            CapacityPolicy::Dropless => t,
            CapacityPolicy::Factor(f) => {
                let rows = (f * (t as f64 * self.top_k as f64) / self.experts as f64).ceil();
                // A float-to-int `as` saturates (NaN -> 0); validate() rejects such factors.
                (rows as u32).min(t)
            }
        }
    }

    /// The protocol geometry of this config for `tile`: validates the config, then checks
    /// that the tile fits it (errors name the tile field, e.g. `tile.bn`).
    pub fn geometry(&self, tile: TileShape) -> Result<Geometry, ConfigError> {
        self.validate()?;
        let g = self.geometry_unchecked(tile)?;
        g.validate()?;
        Ok(g)
    }

    /// [`ExpertMap::local_experts`] without building the map (whose size grows with the
    /// experts: validating a config of 2^32 experts must not allocate for each).
    fn local_experts(&self) -> Result<u32, ConfigError> {
        self.check_placement()?;
        match &self.placement {
            Placement::Contiguous => Ok(self.experts.div_ceil(self.world).min(self.experts)),
            Placement::Table(table) => {
                let mut counts = vec![0u32; self.world as usize];
                for &r in table {
                    counts[r as usize] += 1;
                }
                Ok(counts.into_iter().max().unwrap_or(0))
            }
        }
    }

    fn geometry_unchecked(&self, tile: TileShape) -> Result<Geometry, ConfigError> {
        Ok(Geometry {
            world: self.world,
            local_experts: self.local_experts()?,
            tokens: self.tokens_per_rank,
            capacity: self.capacity_rows(),
            hidden: self.hidden,
            inter: self.inter,
            elem_bytes: self.dtype.elem_bytes(),
            tile,
        })
    }

    /// Per-rank device memory: the heap from the proto layout at [`NOMINAL_TILE`], the router
    /// plus `local_experts` experts' weights, and one rank's activations; the whole layer's
    /// weights; and the host memory of the whole layer ([`MemoryEstimate::host`]) and of one
    /// rank ([`MemoryEstimate::host_per_rank`]). Errors for a config whose shapes or placement
    /// are malformed or whose sizes overflow `u64`.
    pub fn memory_estimate(&self) -> Result<MemoryEstimate, ConfigError> {
        let g = self.geometry_unchecked(NOMINAL_TILE)?;
        const SHRINK: &str = "shrink tokens_per_rank, experts, hidden or inter";
        let heap = HeapLayout::new(g)
            .map_err(|e| match e {
                ProtoError::Overflow { what } => {
                    invalid("memory_limit", format!("the heap's {what} overflow u64: {SHRINK}"))
                }
                other => other.into(),
            })?
            .total_bytes();
        let overflow =
            || invalid("memory_limit", format!("the memory estimate overflows u64: {SHRINK}"));
        let mul =
            |xs: &[u64]| xs.iter().try_fold(1u64, |a, &x| a.checked_mul(x)).ok_or_else(overflow);
        let (h, i, e, t) = (
            self.hidden as u64,
            self.inter as u64,
            self.experts as u64,
            self.tokens_per_rank as u64,
        );
        let eb = self.dtype.elem_bytes() as u64;
        let matrices = if self.activation.is_gated() { 3 } else { 2 };
        let biases = match (self.bias, self.activation.is_gated()) {
            (false, _) => 0,
            (true, false) => i + h,
            (true, true) => 2 * i + h,
        };
        let per_expert = mul(&[matrices, h, i])?.checked_add(biases).ok_or_else(overflow)?;
        let r = &self.routing;
        let router_biases = e * (r.router_bias as u64 + r.selection_bias as u64);
        let router = mul(&[e, h])?.checked_add(router_biases).ok_or_else(overflow)?;
        // Every rank holds the shared experts (a SwiGLU of count * inter, and Qwen's gate row).
        let s = self.shared.map_or(0, |s| s.total_inter() as u64);
        let gate_row = self.shared.map_or(0, |s| h * (s.gate == SharedGate::Sigmoid) as u64);
        let shared = mul(&[3, h, s])?.checked_add(gate_row).ok_or_else(overflow)?;
        let replicated = router.checked_add(shared).ok_or_else(overflow)?;
        let replicated_weights = mul(&[replicated, eb])?;
        let weights = mul(&[g.local_experts as u64, per_expert, eb])?
            .checked_add(replicated_weights)
            .ok_or_else(overflow)?;
        let layer_weights =
            mul(&[e, per_expert, eb])?.checked_add(replicated_weights).ok_or_else(overflow)?;
        let activations =
            mul(&[2, t, h, eb])?.checked_add(mul(&[t, e, 4])?).ok_or_else(overflow)?;
        let (p, k) = (self.world as u64, self.top_k as u64);
        // The router keeps the choice scores apart from the scores when they differ.
        let score_arrays = if r.selection_bias || r.groups.is_some() { 2 } else { 1 };
        // Host memory of `p` ranks holding `experts` experts' weights.
        let host_of = |p: u64, experts: u64| {
            [
                mul(&[experts, per_expert, 4])?,   // experts, f32
                mul(&[router, 4])?,                // router and its biases, f32
                mul(&[shared, 4])?,                // shared experts, f32
                mul(&[2, p, t, h, 4])?,            // inputs and one output, f32
                mul(&[score_arrays, p, t, e, 4])?, // router scores, f32
                mul(&[p, t, s, 4])?,               // shared experts' intermediate rows, f32
                mul(&[p, e, 24])?,                 // per-expert token lists (a Vec each)
                mul(&[p, t, k, 12])?,              // chosen (expert, weight, row) pairs
            ]
            .into_iter()
            .try_fold(0u64, u64::checked_add)
            .ok_or_else(overflow)
        };
        let host = host_of(p, e)?;
        let host_per_rank = host_of(1, g.local_experts as u64)?;
        Ok(MemoryEstimate {
            heap,
            weights,
            replicated_weights,
            layer_weights,
            activations,
            host,
            host_per_rank,
        })
    }
}

/// Builds a [`MoeConfig`] field by field from [`MoeConfig::default`] (or from a preset via
/// [`MoeConfig::into_builder`]); [`MoeConfigBuilder::build`] validates.
#[derive(Clone, Debug, PartialEq)]
pub struct MoeConfigBuilder {
    config: MoeConfig,
}

macro_rules! setters {
    ($($field:ident: $ty:ty),* $(,)?) => {
        $(
            #[doc = concat!("Sets [`MoeConfig::", stringify!($field), "`].")]
            pub fn $field(mut self, value: $ty) -> Self {
                self.config.$field = value;
                self
            }
        )*
    };
}

impl MoeConfigBuilder {
    setters! {
        world: u32,
        tokens_per_rank: u32,
        hidden: u32,
        inter: u32,
        experts: u32,
        top_k: u32,
        activation: Activation,
        bias: bool,
        dtype: DType,
        capacity: CapacityPolicy,
        renormalize: bool,
        routing: Routing,
        shared: Option<SharedExperts>,
        placement: Placement,
        memory_limit: u64,
    }

    /// The config, if valid.
    pub fn build(self) -> Result<MoeConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

impl MoeConfig {
    /// A builder starting from [`MoeConfig::default`].
    pub fn builder() -> MoeConfigBuilder {
        MoeConfig::default().into_builder()
    }

    /// A builder starting from this config (e.g. a preset).
    pub fn into_builder(self) -> MoeConfigBuilder {
        MoeConfigBuilder { config: self }
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
