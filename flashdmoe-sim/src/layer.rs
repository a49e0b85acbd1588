//! [`SimLayer`]: one MoE layer over a simulated world, and the per-rank forward.

use std::sync::atomic::{AtomicU64 as StatCounter, Ordering as StatOrdering};
use std::time::{Duration, Instant};

use flashdmoe_core::backend::check_rank_input;
use flashdmoe_core::routing::route;
use flashdmoe_core::runtime::{
    DispatchStats, Placer, Processor, RankContext, RankState, Role, Scheduler, Slots, Subscriber,
    SymmetricHeap, dispatch, drive,
};
use flashdmoe_core::sync::{Heartbeat, Mutex, Ordering, SharedBytes};
use flashdmoe_core::{
    BackendError, ExpertMap, ForwardOptions, Layer, MoeConfig, RankOutput, RankRouting, RankStats,
    ShardWeights, TraceEvent,
};
use flashdmoe_proto::{Epoch, HeapLayout, RoutingPlan, TaskCounts};

use crate::exec::{Codec, SharedRows, SimExecutor};
use crate::fault::{Courier, FaultPlan};
use crate::heap::{HeapView, World};

/// A layer built by [`crate::SimBackend`]: the config, each rank's share of the weights, and
/// one simulated heap per rank. Each rank's forward ([`Layer::forward_rank`]) runs its own
/// scheduler, subscribers and processors on threads of its own, reads only its own share of
/// the weights (router, shared experts and its own experts, as a GPU would hold them) and
/// talks to the other ranks only through the heaps.
pub struct SimLayer {
    pub(crate) config: MoeConfig,
    /// Rank `r`'s [`ShardWeights`]: the experts the map places on it, in local order.
    pub(crate) shards: Vec<ShardWeights>,
    pub(crate) map: ExpertMap,
    pub(crate) world: World,
    pub(crate) processors: u32,
    pub(crate) subscribers: u32,
    /// Whether the layer runs paired GEMM0 tasks ([`crate::SimOptions::pairs`]).
    pub(crate) pairs: bool,
    /// Whether each forward posts the waves ([`crate::SimOptions::waves`]; a world of one).
    pub(crate) waves: bool,
    /// Tokens a chunk of the streamed placement ([`crate::SimOptions::streamed`]; a world of
    /// one).
    pub(crate) streamed: Option<u32>,
    pub(crate) faults: FaultPlan,
    /// Per rank: the epoch of its last forward (`None` before the first), locked while the
    /// rank's forward runs.
    pub(crate) epochs: Box<[Mutex<Option<Epoch>>]>,
    /// The trace origin, shared by all ranks.
    pub(crate) origin: Instant,
    /// Beaten by every role of every rank on progress: a wait times out only when the whole
    /// world has made no progress for the forward's timeout.
    pub(crate) heartbeat: std::sync::Arc<Heartbeat>,
    pub(crate) signal_order: Ordering,
}

impl std::fmt::Debug for SimLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimLayer")
            .field("config", &self.config)
            .field("tile", &self.layout().geometry().tile)
            .field("processors", &self.processors)
            .field("subscribers", &self.subscribers)
            .field("pairs", &self.pairs)
            .field("waves", &self.waves)
            .field("streamed", &self.streamed)
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

/// What one rank's roles produced.
struct Outcome {
    tasks: TaskCounts,
    rows_sent: u64,
    bytes_sent: u64,
    trace: Vec<TraceEvent>,
}

impl SimLayer {
    /// Processors per rank.
    pub fn processors_per_rank(&self) -> u32 {
        self.processors
    }

    /// Whether the layer runs paired GEMM0 tasks ([`crate::SimOptions::pairs`]).
    pub fn pairs(&self) -> bool {
        self.pairs
    }

    /// Whether each forward posts the waves ([`crate::SimOptions::waves`]: on, a world of one
    /// rank, and the placement not streamed).
    pub fn waves(&self) -> bool {
        self.waves && self.streamed.is_none()
    }

    /// Tokens a chunk where each forward streams its placement ([`crate::SimOptions::streamed`]:
    /// set, and a world of one rank).
    pub fn streamed(&self) -> Option<u32> {
        self.streamed
    }

    /// The protocol's routing plan of a forward, from every rank's output (`ranks[r]` is rank
    /// `r`'s): what [`flashdmoe_core::conformance::check`] judges a trace against.
    pub fn routing_plan(&self, ranks: &[RankOutput]) -> Result<RoutingPlan, BackendError> {
        let sources = ranks
            .iter()
            .map(|r| r.routing.source_plan(&self.config, self.layout()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RoutingPlan::new(self.layout(), sources)?)
    }

    /// Each routed slot's packet on a world of one rank: its expert's local index.
    fn slot_packets(&self, rank: u32, routing: &RankRouting) -> Result<Vec<u32>, BackendError> {
        let mut local = vec![u32::MAX; self.config.experts as usize];
        for (i, &e) in (0u32..).zip(self.map.experts_of(rank)) {
            local[e as usize] = i;
        }
        routing
            .experts
            .iter()
            .map(|&e| match local.get(e as usize) {
                Some(&l) if l != u32::MAX => Ok(l),
                _ => Err(BackendError::InvalidInput {
                    what: "routing.experts",
                    reason: format!("expert {e} is not placed on rank {rank}"),
                }),
            })
            .collect()
    }

    fn check_input(&self, rank: u32, input: &[f32]) -> Result<(), BackendError> {
        check_rank_input(&self.config, rank, input)
    }

    /// Dispatches, computes the shared experts' rows (local work while the routed rows
    /// travel), then runs the roles of `rank` until its forward is complete.
    #[allow(clippy::too_many_arguments)]
    fn run_rank(
        &self,
        rank: u32,
        epoch: Epoch,
        routing: &RankRouting,
        plan: &flashdmoe_proto::SourcePlan,
        rows: &[f32],
        input: &[u8],
        output: &SharedBytes,
        options: &ForwardOptions,
        courier: Option<&Courier>,
    ) -> Result<Outcome, BackendError> {
        let layout = self.layout();
        let view = HeapView {
            world: &self.world,
            faults: &self.faults,
            courier,
            signal_order: self.signal_order,
        };
        // Everything that can fail is set up before this rank publishes anything.
        let mut state = RankState::new(layout, self.processors)?
            .with_heartbeat(self.heartbeat.clone())
            .with_pairs(self.pairs);
        if let Some(chunk) = self.streamed {
            state.stream_placement(layout, chunk)?;
        } else if self.waves {
            let experts = layout.geometry().local_experts;
            let rows: Vec<u32> = (0..experts).map(|e| plan.rows(rank, e)).collect();
            state.post_waves(layout, epoch, &rows)?;
        }
        let ctx = RankContext { rank, epoch, layout, heap: &view, state: &state };
        let shared = std::sync::OnceLock::new();
        let executor = SimExecutor {
            rank,
            config: &self.config,
            weights: &self.shards[rank as usize],
            map: &self.map,
            layout,
            heap: &view,
            routing,
            output,
            shared: &shared,
            returned_bytes: StatCounter::new(0),
        };
        let mut subscribers = (0..self.subscribers)
            .map(|i| Subscriber::new(ctx, plan, i, self.subscribers))
            .collect::<Result<Vec<_>, _>>()?;
        let mut scheduler = Scheduler::new(layout, &state, epoch.get());
        let origin = options.trace.then_some(self.origin);
        let mut processors = (0..self.processors)
            .map(|i| Processor::new(ctx, i, &executor, origin))
            .collect::<Result<Vec<_>, _>>()?;
        // The streamed placement's slots: each routed slot's packet (its expert's local index).
        let packets = match self.streamed {
            Some(_) => self.slot_packets(rank, routing)?,
            None => Vec::new(),
        };
        let slots =
            Slots { top_k: routing.top_k, packets: &packets, weights: &routing.weights, input };
        let mut placers = match self.streamed {
            Some(chunk) => {
                let chunks = flashdmoe_proto::div_ceil(self.config.tokens_per_rank, chunk);
                (0..self.processors.min(chunks))
                    .map(|i| Placer::new(ctx, i, slots))
                    .collect::<Result<Vec<_>, _>>()?
            }
            None => Vec::new(),
        };
        let sent = if self.streamed.is_some() {
            view.reset_counters(rank);
            DispatchStats::default()
        } else {
            dispatch(&view, layout, epoch, rank, plan, input)?
        };
        let weights = &self.shards[rank as usize];
        if let Some(s) = SharedRows::compute(&self.config, weights, rows, &self.heartbeat) {
            let _ = shared.set(s);
        }
        let mut roles: Vec<&mut (dyn Role + Send)> = Vec::new();
        roles.extend(subscribers.iter_mut().map(|r| r as &mut (dyn Role + Send)));
        roles.push(&mut scheduler);
        roles.extend(processors.iter_mut().map(|r| r as &mut (dyn Role + Send)));
        roles.extend(placers.iter_mut().map(|r| r as &mut (dyn Role + Send)));
        run_roles(rank, &state, options.timeout, roles)?;
        let placed: u64 = placers.iter().map(|p| p.rows_placed()).sum();
        let row_bytes = layout.geometry().hidden as u64 * layout.geometry().elem_bytes as u64;
        let sent =
            DispatchStats { rows: sent.rows + placed, bytes: sent.bytes + placed * row_bytes };
        let mut trace: Vec<TraceEvent> =
            processors.into_iter().flat_map(|p| p.into_trace()).collect();
        trace.sort_unstable_by_key(|e| (e.start_ns, e.processor));
        Ok(Outcome {
            tasks: scheduler.completed(),
            rows_sent: sent.rows,
            bytes_sent: sent.bytes + executor.returned_bytes.load(StatOrdering::Relaxed),
            trace,
        })
    }
}

/// Why a role thread ended without finishing.
#[cfg(not(flashdmoe_loom))]
enum RoleFailure {
    /// The role returned an error.
    Runtime(flashdmoe_core::runtime::RuntimeError),
    /// The role panicked (a bug).
    Panicked,
    /// The thread could not be started.
    Spawn(std::io::Error),
}

/// Runs the roles of one rank: each on its own thread (the simulator).
///
/// Reports the root cause: the first failure in role order (subscribers, scheduler,
/// processors) other than a role that stopped because another one failed.
#[cfg(not(flashdmoe_loom))]
fn run_roles(
    rank: u32,
    state: &RankState,
    timeout: Duration,
    roles: Vec<&mut (dyn Role + Send)>,
) -> Result<(), BackendError> {
    let failures: Vec<RoleFailure> = std::thread::scope(|s| {
        let handles: Vec<_> = roles
            .into_iter()
            .map(|role| {
                let name = format!("rank{rank}-{}", role.name().replace(' ', ""));
                std::thread::Builder::new().name(name).spawn_scoped(s, move || {
                    let run = || drive(rank, state, timeout, &mut [role as &mut dyn Role]);
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run));
                    if result.is_err() {
                        state.abort();
                    }
                    result
                })
            })
            .collect();
        if handles.iter().any(|h| h.is_err()) {
            state.abort();
        }
        handles
            .into_iter()
            .filter_map(|handle| match handle.map(|h| h.join()) {
                Ok(Ok(Ok(Ok(())))) => None,
                Ok(Ok(Ok(Err(e)))) => Some(RoleFailure::Runtime(e)),
                Ok(Ok(Err(_)) | Err(_)) => Some(RoleFailure::Panicked),
                Err(e) => Some(RoleFailure::Spawn(e)),
            })
            .collect()
    });
    let root = failures
        .iter()
        .position(|f| {
            !matches!(f, RoleFailure::Runtime(flashdmoe_core::runtime::RuntimeError::Aborted))
        })
        .unwrap_or(0);
    match failures.into_iter().nth(root) {
        None => Ok(()),
        Some(RoleFailure::Runtime(e)) => Err(e.into()),
        Some(RoleFailure::Panicked) => Err(BackendError::RankPanicked),
        Some(RoleFailure::Spawn(e)) => {
            Err(BackendError::Unavailable(format!("cannot start a role thread: {e}")))
        }
    }
}

/// Runs the roles of one rank folded onto the calling thread (loom: one thread per rank).
#[cfg(flashdmoe_loom)]
fn run_roles(
    rank: u32,
    state: &RankState,
    timeout: Duration,
    roles: Vec<&mut (dyn Role + Send)>,
) -> Result<(), BackendError> {
    let mut roles: Vec<&mut dyn Role> = roles.into_iter().map(|r| r as &mut dyn Role).collect();
    Ok(drive(rank, state, timeout, &mut roles)?)
}

impl Layer for SimLayer {
    fn config(&self) -> &MoeConfig {
        &self.config
    }

    fn layout(&self) -> &HeapLayout {
        self.world.layout()
    }

    fn forward_rank(
        &self,
        rank: u32,
        input: &[f32],
        options: &ForwardOptions,
    ) -> Result<RankOutput, BackendError> {
        self.check_input(rank, input)?;
        self.forward_checked(rank, input, None, options)
    }

    fn forward_rank_routed(
        &self,
        rank: u32,
        input: &[f32],
        routing: &RankRouting,
        options: &ForwardOptions,
    ) -> Result<RankOutput, BackendError> {
        self.check_input(rank, input)?;
        routing.check(&self.config)?;
        self.forward_checked(rank, input, Some(routing), options)
    }
}

impl SimLayer {
    /// Rank `rank`'s forward on a checked `input`, routed by `given` or, without it, by the
    /// CPU router.
    fn forward_checked(
        &self,
        rank: u32,
        input: &[f32],
        given: Option<&RankRouting>,
        options: &ForwardOptions,
    ) -> Result<RankOutput, BackendError> {
        let c = &self.config;
        let mut last =
            self.epochs[rank as usize].try_lock().map_err(|_| BackendError::InvalidInput {
                what: "rank",
                reason: format!("a forward of rank {rank} is already running"),
            })?;
        // The epoch advances even if this forward fails: its signals may already be out.
        let epoch = last.map_or(Epoch::FIRST, Epoch::next);
        *last = Some(epoch);
        let start = Instant::now();
        let routing = match given {
            Some(routing) => routing.clone(),
            None => route(c, input, &self.shards[rank as usize])?,
        };
        let plan = routing.source_plan(c, self.layout())?;
        let codec = Codec(c.dtype);
        let mut input_bytes = Vec::with_capacity(input.len() * codec.width());
        codec.encode(input, &mut input_bytes);
        let output = SharedBytes::zeroed(input_bytes.len(), codec.width());
        let run = |courier: Option<&Courier>| {
            self.run_rank(
                rank,
                epoch,
                &routing,
                &plan,
                input,
                &input_bytes,
                &output,
                options,
                courier,
            )
        };
        let outcome = if self.faults.needs_courier() {
            let (courier, deliveries) = Courier::new();
            std::thread::scope(|s| {
                let (world, order) = (&self.world, self.signal_order);
                s.spawn(move || {
                    deliveries.run(|d| world.deliver(d.target, d.offset, d.word, order))
                });
                // Dropping the courier lets the delivery loop drain and end before the scope
                // (and so this forward) does.
                let outcome = run(Some(&courier));
                drop(courier);
                outcome
            })
        } else {
            run(None)
        }?;
        let mut bytes = vec![0u8; output.len()];
        // SAFETY: every role of this rank has finished; nothing writes the output any more.
        unsafe { output.read(0, &mut bytes) };
        let mut values = Vec::with_capacity(input.len());
        codec.decode(&bytes, &mut values);
        let stats = RankStats {
            elapsed: start.elapsed(),
            tasks: outcome.tasks,
            rows_sent: outcome.rows_sent,
            bytes_sent: outcome.bytes_sent,
            padded_bytes: RankStats::padded_bytes(c, rank)?,
            dropped: routing.dropped(),
        };
        let trace = options.trace.then_some(outcome.trace);
        Ok(RankOutput { output: values, routing, stats, trace })
    }
}

#[cfg(test)]
mod tests {
    use flashdmoe_core::config::presets;
    use flashdmoe_core::{
        Backend, LayerWeights, Placement, SharedExperts, VerifyOptions, generate_input, verify,
    };

    use super::*;
    use crate::SimBackend;

    #[test]
    fn each_rank_holds_and_reads_only_its_own_experts() {
        // Qwen's layer shrunk, on 3 ranks holding 1, 2 and 4 experts (a placement table).
        let qwen = presets::preset("qwen1.5-moe-a2.7b").unwrap();
        let shared = qwen.shared.map(|s| SharedExperts { inter: 64, ..s });
        let c = MoeConfig {
            world: 3,
            tokens_per_rank: 16,
            hidden: 64,
            inter: 64,
            experts: 7,
            top_k: 2,
            shared,
            placement: Placement::Table(vec![2, 1, 2, 0, 1, 2, 2]),
            ..qwen
        };
        let w = LayerWeights::generate(&c, 3).unwrap();
        let layer = SimBackend::default().build(&c, &w).unwrap();
        let held: Vec<&[u32]> = layer.shards.iter().map(ShardWeights::experts).collect();
        assert_eq!(held, [&[3][..], &[1, 4], &[0, 2, 5, 6]]);
        for (r, shard) in layer.shards.iter().enumerate() {
            assert_eq!(shard, &w.rank_shard(&c, r as u32).unwrap());
            assert_eq!(shard.up().len(), held[r].len() * 64 * 64);
        }
        // The forward on the shards is the layer's.
        let inputs: Vec<Vec<f32>> = (0..3).map(|r| generate_input(&c, r, 3).unwrap()).collect();
        let out = layer.forward(&inputs, &ForwardOptions::default()).unwrap();
        let report = verify(&c, &w, &inputs, &out.ranks, &VerifyOptions::default()).unwrap();
        assert!(report.passed(), "{report}");
    }
}
