//! MoE layer configuration.

use thiserror::Error;

/// Element type of activations and weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// bfloat16 storage, f32 accumulation (bf16 tensor cores on GPU).
    Bf16,
    /// IEEE half storage, f32 accumulation (f16 tensor cores on GPU).
    F16,
    /// f32 storage; TF32 tensor cores on GPU.
    F32,
    /// f32 storage and arithmetic without tensor cores (for verification).
    F32Exact,
}

/// Expert activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// Exact (erf) GELU.
    Gelu,
    /// SwiGLU: `silu(x W_gate^T) * (x W_up^T)` (two up-projection matrices).
    SiluGated,
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
    /// Renormalise the combine weights over the chosen k (Mixtral style).
    pub renormalize: bool,
    /// Expert placement.
    pub placement: Placement,
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
}
