//! # flashdmoe-core: what an MoE layer is, what the right answer is, and how ranks cooperate
//!
//! * [`config`]: [`MoeConfig`] (shapes, dtype, activation, capacity, placement), validation,
//!   presets, file and Hugging Face `config.json` loading.
//! * [`routing`]: the router (gate GEMM; softmax, sigmoid or top-k softmax scores; selection
//!   bias and grouped top-k; renormalisation and scaling) and the per-rank routing plan
//!   (per-expert token lists in token order, capacity drops).
//! * [`oracle`]: the CPU reference forward in f64 accumulation (routed and shared experts),
//!   sampled-row verification and the comparison report.
//! * [`weights`]: seeded input/weight generators and safetensors load/save, of a whole layer
//!   ([`LayerWeights`]) or of one rank's share of its experts ([`ShardWeights`]).
//! * [`dtype`]: element types, rounding to them, verification tolerances.
//! * [`rng`]: the splitmix64 streams behind the seeded generators (shared with the PyTorch
//!   baselines).
//! * [`backend`]: the [`Backend`] trait every backend implements, and its output types.
//! * [`trace`]: per-task trace events, their clocks, Chrome/Perfetto JSON and utilisation.
//! * [`conformance`]: the trace checker: did a forward run exactly the protocol's task graph,
//!   in a legal order, whatever backend ran it.
//! * [`runtime`]: the scheduler / subscriber / processor state machines shared by the
//!   simulator (threads) and mirrored by the CUDA kernel, over the [`sync`] facade.
//! * [`rendezvous`]: one process per GPU, host side: the launcher environment, the rendezvous
//!   store and the liveness mesh that turns a dead peer into an error instead of a hang.
//! * [`perf`]: the floors of `docs/performance.md` (FLOPs, bytes, H200 ceilings) and timing
//!   statistics shared by the benchmark harness and the GPU check.
//!
//! ## Invariants
//!
//! * Architecture invariant: core knows nothing of CUDA, and nothing of how a backend moves
//!   bytes; it sees the symmetric heap only through `flashdmoe-proto` offsets.
//! * Everything is deterministic: routing, tie-breaking (lower expert index), dropping (lower
//!   token index wins), and the combine order (slot order).
//! * Host tensors are `f32` slices whose values are exactly representable in the configured
//!   [`DType`] (generators and loaders round them), so every backend and the oracle see the
//!   same numbers.
#![warn(missing_docs)]

pub mod backend;
pub mod config;
pub mod conformance;
pub mod dtype;
pub mod oracle;
mod parallel;
pub mod perf;
pub mod rendezvous;
pub mod rng;
pub mod routing;
pub mod runtime;
pub mod sync;
pub mod trace;
pub mod virtual_experts;
pub mod weights;

pub use backend::{
    Backend, BackendError, ForwardOptions, ForwardOutput, Layer, RankOutput, RankStats,
    TimeoutReport,
};
pub use config::{
    Activation, CapacityPolicy, ConfigError, DType, ExpertMap, Feature, GroupScore, Groups,
    MemoryEstimate, MoeConfig, MoeConfigBuilder, Placement, Routing, Scoring, SharedExperts,
    SharedGate, SwigluOss, Unsupported, preset,
};
pub use oracle::{VerifyOptions, VerifyReport, verify};
pub use routing::{RankRouting, Router, RoutingError, route};
pub use trace::TraceEvent;
pub use weights::{LayerWeights, ShardWeights, WeightsError, generate_input};
