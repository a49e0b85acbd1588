//! The [`Backend`] trait: what every backend (the CPU simulator, the CUDA kernel) provides.
//!
//! A backend [`Backend::build`]s a [`Layer`] for a whole world of ranks from a config and the
//! layer's weights. A layer runs forwards two ways:
//!
//! * [`Layer::forward_rank`] is the per-rank entry point that a one-process-(or thread)-per-GPU
//!   deployment uses: every rank calls it concurrently with its own tokens, and each call
//!   returns once that rank's output is complete. Ranks keep their own epoch.
//! * [`Layer::forward`] runs all ranks from one caller (one scoped thread per rank by default;
//!   a backend may override it, e.g. to launch all devices from one thread).
//!
//! Outputs are host `f32` values (exactly representable in the config's dtype), together with
//! the routing the backend computed (so the oracle can check it), statistics and an optional
//! trace.

use std::time::Duration;

use flashdmoe_proto::{HeapLayout, ProtoError, SourcePlan, TaskCounts};
use thiserror::Error;

use crate::config::{ConfigError, Feature, MoeConfig, Unsupported};
use crate::routing::{RankRouting, RoutingError};
use crate::trace::{Clocks, TraceEvent};
use crate::weights::{LayerWeights, WeightsError};

/// A backend: builds layers.
pub trait Backend {
    /// The layer type this backend builds.
    type Layer: Layer;

    /// Short name for reports (`"sim"`, `"cuda"`).
    fn name(&self) -> &'static str;

    /// Validates `config` and builds the layer for all its ranks.
    fn build(
        &self,
        config: &MoeConfig,
        weights: &LayerWeights,
    ) -> Result<Self::Layer, BackendError>;
}

/// Options of one forward call.
#[derive(Clone, Debug, PartialEq)]
pub struct ForwardOptions {
    /// Record per-task trace events.
    pub trace: bool,
    /// Deadline for every wait inside the forward; on expiry the forward fails with
    /// [`BackendError::Timeout`] instead of hanging.
    pub timeout: Duration,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        ForwardOptions { trace: false, timeout: Duration::from_secs(10) }
    }
}

/// A built layer for a world of ranks.
pub trait Layer: Send + Sync {
    /// The configuration the layer was built for.
    fn config(&self) -> &MoeConfig;

    /// What the backend chose to run this layer with, for reports (the CUDA kernel's
    /// specialisation, and any it fell back from); `None` when there is nothing to say.
    fn describe(&self) -> Option<String> {
        None
    }

    /// The symmetric-heap layout (and so the task tile) every rank of this layer uses: what a
    /// trace of it is checked against (`conformance`).
    fn layout(&self) -> &HeapLayout;

    /// Rank `rank`'s packets as this layer's protocol ran them, from the routing its forward
    /// reported: what its trace is checked against (`conformance`). By default the routing's
    /// own ([`RankRouting::source_plan`]); a backend that runs more than the routed experts
    /// through the protocol adds those packets (the CUDA kernel: the shared experts as virtual
    /// experts, `virtual_experts`).
    fn source_plan(&self, rank: u32, routing: &RankRouting) -> Result<SourcePlan, RoutingError> {
        let _ = rank;
        routing.source_plan(self.config(), self.layout())
    }

    /// Which clock each rank's trace times come from (see `conformance`): by
    /// default one clock for every rank; a backend whose ranks time themselves on different
    /// devices names a clock per device.
    fn trace_clocks(&self) -> Clocks {
        Clocks::shared(self.config().world)
    }

    /// Per-rank entry point: rank `rank`'s forward on its `input` (`[tokens_per_rank][hidden]`,
    /// row-major). Every rank of the world must call this concurrently for the same forward.
    fn forward_rank(
        &self,
        rank: u32,
        input: &[f32],
        options: &ForwardOptions,
    ) -> Result<RankOutput, BackendError>;

    /// Per-rank entry point with the routing given: like [`Layer::forward_rank`], but the
    /// router is skipped and `routing` (built by [`RankRouting::from_choices`] from each
    /// token's top-k experts and combine weights, which are used as given) decides where the
    /// tokens go. Engines that route outside the MoE block call this. A backend checks the
    /// routing with [`RankRouting::check`] first.
    ///
    /// The default is [`BackendError::Unavailable`]: a backend that cannot skip its router
    /// says so rather than silently routing itself.
    fn forward_rank_routed(
        &self,
        rank: u32,
        input: &[f32],
        routing: &RankRouting,
        options: &ForwardOptions,
    ) -> Result<RankOutput, BackendError> {
        let _ = (rank, input, routing, options);
        Err(BackendError::Unavailable(
            "this backend does not take a given routing yet (issue 14, routing given)".into(),
        ))
    }

    /// All ranks' forward from one caller: `inputs[rank]` is that rank's input.
    fn forward(
        &self,
        inputs: &[Vec<f32>],
        options: &ForwardOptions,
    ) -> Result<ForwardOutput, BackendError> {
        let world = self.config().world as usize;
        if inputs.len() != world {
            return Err(BackendError::InvalidInput {
                what: "inputs",
                reason: format!("expected one input per rank ({world}), got {}", inputs.len()),
            });
        }
        let start = std::time::Instant::now();
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = inputs
                .iter()
                .enumerate()
                .map(|(rank, input)| {
                    s.spawn(move || self.forward_rank(rank as u32, input, options))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Err(BackendError::RankPanicked)))
                .collect()
        });
        let ranks = results.into_iter().collect::<Result<Vec<_>, _>>()?;
        Ok(ForwardOutput { ranks, elapsed: start.elapsed() })
    }
}

/// Checks one rank's input for `config`: the rank exists, the input holds
/// `[tokens_per_rank][hidden]` values, and each is finite and exactly representable in the
/// config's dtype. Every backend's [`Layer::forward_rank`] starts with it.
pub fn check_rank_input(config: &MoeConfig, rank: u32, input: &[f32]) -> Result<(), BackendError> {
    let c = config;
    if rank >= c.world {
        return Err(BackendError::InvalidInput {
            what: "rank",
            reason: format!("rank {rank} does not exist in a world of {}", c.world),
        });
    }
    let expected = c.tokens_per_rank as usize * c.hidden as usize;
    if input.len() != expected {
        return Err(BackendError::InvalidInput {
            what: "input",
            reason: format!(
                "expected {expected} values ([{}][{}]), got {}",
                c.tokens_per_rank,
                c.hidden,
                input.len()
            ),
        });
    }
    let bad = |v: f32| !(v.is_finite() && c.dtype.is_representable(v));
    if let Some((i, v)) = input.iter().enumerate().find(|(_, v)| bad(**v)) {
        return Err(BackendError::InvalidInput {
            what: "input",
            reason: format!(
                "value {v} at index {i} is not a finite value exactly representable in {}",
                c.dtype
            ),
        });
    }
    Ok(())
}

/// One rank's result of a forward.
#[derive(Clone, Debug)]
pub struct RankOutput {
    /// `[tokens_per_rank][hidden]` output rows.
    pub output: Vec<f32>,
    /// The routing this rank computed for its tokens.
    pub routing: RankRouting,
    /// Statistics.
    pub stats: RankStats,
    /// Trace events, when requested.
    pub trace: Option<Vec<TraceEvent>>,
}

/// All ranks' results of one forward.
#[derive(Clone, Debug)]
pub struct ForwardOutput {
    /// Indexed by rank.
    pub ranks: Vec<RankOutput>,
    /// Wall time of the whole forward as seen by the caller.
    pub elapsed: Duration,
}

/// Per-rank statistics of one forward.
///
/// Every backend reports the same numbers for the same routing: [`RankStats::from_packets`]
/// defines them (the CUDA backend computes its statistics with it; the simulator measures its
/// own, and its tests check they equal it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RankStats {
    /// Time of this rank's forward (device time on GPU).
    pub elapsed: Duration,
    /// Tasks this rank executed, per kind.
    pub tasks: TaskCounts,
    /// Token rows this rank dispatched (to itself and peers).
    pub rows_sent: u64,
    /// Bytes of the rows this rank put into heaps, its own included: the rows it dispatched and
    /// the rows its experts returned. Signal words are not counted.
    pub bytes_sent: u64,
    /// Bytes a capacity-padded protocol would have sent for the same forward, counted the same
    /// way ([`RankStats::padded_bytes`]).
    pub padded_bytes: u64,
    /// `(token, slot)` pairs this rank dropped for capacity.
    pub dropped: u64,
}

impl RankStats {
    /// The statistics of rank `rank`'s forward (with `elapsed` zero), from the row counts of the
    /// packets it sent (its routing: one count per expert, or per `(owner, local expert)` slot;
    /// only the sum matters), the row counts of the packets it received (one per dispatch
    /// signal; they fix its tasks, [`TaskCounts::for_rank`]) and the pairs it dropped:
    ///
    /// * `rows_sent` = rows sent;
    /// * `bytes_sent` = (rows sent + rows received, which its GEMM1 tasks return) × `H` ×
    ///   element bytes;
    /// * `padded_bytes` = [`RankStats::padded_bytes`].
    pub fn from_packets(
        config: &MoeConfig,
        layout: &HeapLayout,
        rank: u32,
        sent: impl IntoIterator<Item = u32>,
        received: impl IntoIterator<Item = u32>,
        dropped: u64,
    ) -> Result<RankStats, ConfigError> {
        let received: Vec<u32> = received.into_iter().collect();
        let rows_sent: u64 = sent.into_iter().map(u64::from).sum();
        let rows_returned: u64 = received.iter().copied().map(u64::from).sum();
        Ok(RankStats {
            elapsed: Duration::ZERO,
            tasks: TaskCounts::for_rank(layout, received),
            rows_sent,
            bytes_sent: rows_sent.saturating_add(rows_returned).saturating_mul(row_bytes(config)),
            padded_bytes: RankStats::padded_bytes(config, rank)?,
            dropped,
        })
    }

    /// Bytes a capacity-padded protocol -- the classic all-to-all of fixed
    /// `[E][capacity][H]` buffers -- moves for rank `rank` in one forward, whatever the routing:
    /// every `(source, expert)` packet at full `capacity` rows, in both directions. Rank `r`
    /// dispatches one full packet to each of the `E` experts and returns one full packet to
    /// each of the `P` sources for each of the `E_r` experts it owns:
    ///
    /// `padded_bytes(r) = (E + P × E_r) × capacity × H × element bytes`.
    ///
    /// Like [`RankStats::bytes_sent`], packets between a rank and itself are counted (so the
    /// two compare like for like) and signal words are not. `E_r` is what the rank owns, not
    /// the layout's `local_experts` (the most any rank owns): under uneven placement a rank
    /// with fewer experts returns fewer packets. Summed over the ranks, each direction carries
    /// `P × E × capacity` rows.
    pub fn padded_bytes(config: &MoeConfig, rank: u32) -> Result<u64, ConfigError> {
        let owned = config.expert_map()?.experts_of(rank).len() as u64;
        let packets = (config.experts as u64).saturating_add((config.world as u64) * owned);
        Ok(packets.saturating_mul(config.capacity_rows() as u64).saturating_mul(row_bytes(config)))
    }
}

fn row_bytes(config: &MoeConfig) -> u64 {
    config.hidden as u64 * config.dtype.elem_bytes() as u64
}

/// A timeout diagnosis: who waited for what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeoutReport {
    /// Rank that gave up.
    pub rank: u32,
    /// Role that waited (`"scheduler"`, `"subscriber"`, `"processor 3"`, ...).
    pub role: String,
    /// The signal or condition awaited (e.g. `"dispatch signal from rank 1 for local expert 0"`).
    pub awaited: String,
    /// Epoch expected.
    pub expected_epoch: u32,
    /// Epoch (or value) last seen.
    pub seen: u64,
}

impl std::fmt::Display for TimeoutReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rank {} {} timed out waiting for {} (expected epoch {}, last seen {:#x})",
            self.rank, self.role, self.awaited, self.expected_epoch, self.seen
        )
    }
}

/// Everything a backend can fail with.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The configuration is invalid for this backend.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A protocol computation failed (e.g. layout overflow).
    #[error("protocol: {0}")]
    Proto(#[from] ProtoError),
    /// A wait exceeded its deadline.
    #[error("timeout: {0}")]
    Timeout(TimeoutReport),
    /// The backend cannot run here (no GPU, no driver, no NVRTC, ...).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// This layer needs more devices than the machine has (other layers may run).
    #[error("{ranks} ranks at {per_device} per device need {needed} devices, {found} found")]
    TooFewDevices {
        /// Ranks of the layer.
        ranks: u32,
        /// Ranks per device asked for.
        per_device: u32,
        /// Devices needed.
        needed: u32,
        /// Devices present.
        found: u32,
    },
    /// An input has the wrong shape or content.
    #[error("invalid input {what}: {reason}")]
    InvalidInput {
        /// Which input.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A device call failed.
    #[error("device error: {0}")]
    Device(String),
    /// A peer process of a one-process-per-GPU world died (killed, crashed): the forward in
    /// flight was aborted, and every later call fails with this at once, before any GPU work.
    #[error(
        "peer rank {rank} is gone ({how}){}; this layer cannot run again: rebuild it with every \
         rank",
        report.as_ref().map_or(String::new(), |r| format!("; the forward in flight ended: {r}"))
    )]
    PeerGone {
        /// The (lowest) process rank that is gone.
        rank: u32,
        /// How its death was noticed (e.g. "its connection closed without a goodbye").
        how: String,
        /// The kernel's timeout report of the forward in flight, if a wait gave up first.
        report: Option<TimeoutReport>,
    },
    /// Joining a one-process-per-GPU world failed (rendezvous, NCCL communicator, symmetric
    /// heap): the message names the step and, where one is to blame, the rank.
    #[error("process group: {0}")]
    Bootstrap(String),
    /// A rank's worker thread panicked (a bug; reported rather than propagated).
    #[error("a rank's worker thread panicked")]
    RankPanicked,
    /// The layer needs model features this backend does not compute yet (issue 16): the
    /// layer is refused before anything runs, never computed as another layer.
    #[error(
        "{}: {} (issue 16); --backend sim computes this layer",
        backend,
        not_in(engine, unsupported)
    )]
    NotSupported {
        /// The backend (`cuda`).
        backend: &'static str,
        /// What lacks the features, e.g. `the CUDA kernel`.
        engine: &'static str,
        /// Each config field and the feature it needs ([`MoeConfig::features`]).
        unsupported: Vec<Unsupported>,
    },
}

/// `field = value: <feature> not in <engine> yet; ...`.
fn not_in(engine: &str, unsupported: &[Unsupported]) -> String {
    unsupported
        .iter()
        .map(|u| format!("{} = {}: {} not in {engine} yet", u.field, u.value, u.feature.subject()))
        .collect::<Vec<_>>()
        .join("; ")
}

impl BackendError {
    /// [`BackendError::NotSupported`] for every feature of `config` ([`MoeConfig::features`])
    /// that is not in `computed` (what the backend computes), or `Ok` when there is none.
    pub fn check_features(
        config: &MoeConfig,
        backend: &'static str,
        engine: &'static str,
        computed: &[Feature],
    ) -> Result<(), BackendError> {
        let unsupported: Vec<Unsupported> =
            config.features().into_iter().filter(|u| !computed.contains(&u.feature)).collect();
        if unsupported.is_empty() {
            Ok(())
        } else {
            Err(BackendError::NotSupported { backend, engine, unsupported })
        }
    }
}

impl From<RoutingError> for BackendError {
    fn from(e: RoutingError) -> BackendError {
        match e {
            RoutingError::Config(c) => BackendError::Config(c),
            RoutingError::Proto(p) => BackendError::Proto(p),
            other => BackendError::InvalidInput { what: "routing", reason: other.to_string() },
        }
    }
}

impl From<WeightsError> for BackendError {
    fn from(e: WeightsError) -> BackendError {
        match e {
            WeightsError::Config(c) => BackendError::Config(c),
            other => BackendError::InvalidInput { what: "weights", reason: other.to_string() },
        }
    }
}

#[cfg(all(test, not(flashdmoe_loom)))]
mod tests {
    use flashdmoe_proto::TileShape;

    use super::*;
    use crate::config::{DType, Placement};

    /// Three experts on two ranks, two on rank 0 and one on rank 1: the formulas the two
    /// backends used before disagreed here (the simulator's `2 × P × local_experts × capacity`
    /// rows gave 8 packets for each rank; the CUDA backend's gave 7 and 5).
    fn uneven() -> MoeConfig {
        MoeConfig {
            world: 2,
            experts: 3,
            top_k: 1,
            tokens_per_rank: 8,
            hidden: 64,
            inter: 64,
            dtype: DType::Bf16,
            placement: Placement::Table(vec![0, 0, 1]),
            ..MoeConfig::default()
        }
    }

    #[test]
    fn padded_bytes_count_the_packets_each_rank_really_has() {
        let config = uneven();
        config.validate().unwrap();
        let capacity = config.capacity_rows() as u64;
        assert_eq!(capacity, 3, "ceil(1.0 * 8 * 1 / 3)");
        let row = 64 * 2;
        // Rank 0: 3 dispatched packets + 2 sources x 2 experts returned; rank 1: 3 + 2 x 1.
        assert_eq!(RankStats::padded_bytes(&config, 0).unwrap(), 7 * capacity * row);
        assert_eq!(RankStats::padded_bytes(&config, 1).unwrap(), 5 * capacity * row);
        // Both directions of the all-to-all: 2 x P x E x capacity rows in all.
        let total: u64 = (0..2).map(|r| RankStats::padded_bytes(&config, r).unwrap()).sum();
        assert_eq!(total, 2 * 2 * 3 * capacity * row);
        // Even placement: every rank 2 x E x capacity rows.
        let even = MoeConfig { experts: 4, placement: Placement::Contiguous, ..uneven() };
        let capacity = even.capacity_rows() as u64;
        assert_eq!(RankStats::padded_bytes(&even, 1).unwrap(), 8 * capacity * row);
    }

    #[test]
    fn from_packets_by_hand() {
        let config = uneven();
        let layout = HeapLayout::new(config.geometry(TileShape::new(2, 32, 32)).unwrap()).unwrap();
        // Rank 1 sent 3 + 0 + 2 rows and received 1 row from each rank for its one expert (its
        // phantom second slot carries nothing).
        let stats =
            RankStats::from_packets(&config, &layout, 1, [3, 0, 2], [1, 0, 1, 0], 3).unwrap();
        assert_eq!(stats.rows_sent, 5);
        assert_eq!(stats.bytes_sent, (5 + 2) * 128);
        assert_eq!(stats.padded_bytes, 5 * 3 * 128);
        assert_eq!(stats.dropped, 3);
        assert_eq!(stats.elapsed, Duration::ZERO);
        // Two one-row packets: one row tile each, 64/32 = 2 GEMM0 and 2 GEMM1 tasks per row
        // tile; combine: ceil(8/2) token tiles x 2 columns.
        let (g0, g1, c) = (stats.tasks.gemm0, stats.tasks.gemm1, stats.tasks.combine);
        assert_eq!((g0, g1, c), (4, 4, 8));
    }
}
