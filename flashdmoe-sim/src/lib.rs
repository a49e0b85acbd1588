//! # flashdmoe-sim: the CPU simulator backend
//!
//! Every rank is a set of threads running `flashdmoe-core`'s runtime unchanged -- one
//! scheduler, [`SimOptions::subscribers_per_rank`] subscribers and
//! [`SimOptions::processors_per_rank`] processors -- over a simulated symmetric heap: one byte
//! buffer per rank in the exact `flashdmoe-proto` layout, with atomics for signals and
//! counters. It is how the protocol is developed and proven without GPUs, and the default
//! backend of the `flashdmoe` command.
//!
//! ```no_run
//! use flashdmoe_core::{Backend, ForwardOptions, Layer, LayerWeights, MoeConfig, generate_input};
//! use flashdmoe_sim::{SimBackend, SimOptions};
//!
//! let config = MoeConfig::default();
//! let weights = LayerWeights::generate(&config, 7)?;
//! let inputs: Vec<Vec<f32>> =
//!     (0..config.world).map(|r| generate_input(&config, r, 7)).collect::<Result<_, _>>()?;
//! let layer = SimBackend::new(SimOptions::default()).build(&config, &weights)?;
//! let out = layer.forward(&inputs, &ForwardOptions::default())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Invariants
//!
//! * Architecture invariant: the simulator adds no protocol logic of its own. Dispatch, the
//!   roles and their memory orderings are core's; the simulator provides the heap
//!   ([`flashdmoe_core::runtime::SymmetricHeap`]), the tile math
//!   ([`flashdmoe_core::runtime::TileExecutor`]) and threads.
//! * Outputs are bitwise deterministic across runs and processor/subscriber counts: each output
//!   element is computed by one task in a fixed order (see the `exec` module), whatever
//!   thread runs it, whenever.
//! * Numerics follow the agreed rounding points: `f32` accumulation; the intermediate rows,
//!   the returned rows and the output rounded to the dtype when stored.
//! * Faults ([`FaultPlan`]) touch signal words only; delays, reordering and duplicates leave the
//!   output unchanged, a lost or stale signal ends in a typed timeout.
//! * Every layer core's oracle computes runs: the router's scoring, selection bias, groups and
//!   scaling come from core's router; gpt-oss's SwiGLU from core's activation; shared experts
//!   are local work of each rank on its own tokens (no dispatch, no extra task), added in the
//!   combine (`exec`'s shared experts).
//!
//! ## Statistics
//!
//! [`RankStats`](flashdmoe_core::RankStats) of a simulated rank are measured: `rows_sent` counts
//! the routed rows its dispatch put (its own experts included), `bytes_sent` the bytes of the
//! rows it put into heaps (dispatched rows plus the rows its GEMM1 tasks returned, its own heap
//! included), `tasks` the completions its scheduler counted. `padded_bytes` is
//! [`RankStats::padded_bytes`](flashdmoe_core::RankStats::padded_bytes). The tests check that
//! every figure equals [`RankStats::from_packets`](flashdmoe_core::RankStats::from_packets) of
//! the forward's routing, the definition the CUDA backend reports.

mod cost;
mod exec;
mod fault;
mod heap;
mod layer;

use std::time::Instant;

use flashdmoe_core::sync::{Mutex, Ordering};
use flashdmoe_core::{Backend, BackendError, LayerWeights, MoeConfig};
use flashdmoe_proto::{HeapLayout, TileShape};

pub use cost::SimCost;
pub use fault::{FaultPlan, SignalId};
pub use layer::SimLayer;

use heap::World;

/// Options of the simulator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimOptions {
    /// Processor threads per rank (1 to [`SimOptions::MAX_THREADS`]).
    pub processors_per_rank: usize,
    /// Subscriber threads per rank (1 to [`SimOptions::MAX_THREADS`]).
    pub subscribers_per_rank: usize,
    /// Faults to inject into signal deliveries.
    pub faults: FaultPlan,
    /// Run the layer with paired GEMM0 tasks, as the CUDA kernel does in 2-CTA clusters
    /// (`MoeSpec::pairs`; docs/dev/paired-tasks.md): each rank's state is
    /// [`RankState::with_pairs`](flashdmoe_core::runtime::RankState::with_pairs), so the GEMM0
    /// tasks are queued in pairs, a pair goes to both processors of one cluster (processors
    /// `2k + 1`, `2k + 2`) and they meet before running it. The outputs are bitwise those of
    /// the unpaired layer. Off by default.
    pub pairs: bool,
    /// On a world of one rank, post the waves as the CUDA kernel's OS block does on one GPU
    /// ([`RankState::post_waves`](flashdmoe_core::runtime::RankState::post_waves),
    /// [`Waves`](flashdmoe_core::runtime::Waves)): every GEMM0 task queued before the roles
    /// run, the first wave (and where the layer is small enough the second and third)
    /// posted into the mailboxes, their tasks gated on the row-tile counters and the
    /// combines' ready flags. No effect on a larger world. On by default; the outputs are
    /// bitwise those without.
    pub waves: bool,
    /// On a world of one rank, place the routed rows in chunks of this many tokens as the
    /// forward runs ([`RankState::stream_placement`](flashdmoe_core::runtime::RankState::stream_placement),
    /// [`Placer`](flashdmoe_core::runtime::Placer); docs/dev/streamed-placement.md): placer
    /// threads look back over the earlier chunks' counts for their rows' positions, and each
    /// row tile's GEMM0 tasks are queued once its rows are in, instead of every row placed
    /// before any task (with [`SimOptions::pairs`], pairs of row tiles). Replaces the waves
    /// (which need every packet's rows first); no effect on a larger world. `None` (the
    /// default): off. The outputs are bitwise those without. A chunk of 0 tokens is refused
    /// when the layer is built.
    pub streamed: Option<u32>,
}

impl SimOptions {
    /// Most processor or subscriber threads per rank.
    pub const MAX_THREADS: usize = 256;
}

impl Default for SimOptions {
    /// 2 processors and 1 subscriber per rank, no faults, unpaired, the waves posted.
    fn default() -> Self {
        SimOptions {
            processors_per_rank: 2,
            subscribers_per_rank: 1,
            faults: FaultPlan::none(),
            pairs: false,
            waves: true,
            streamed: None,
        }
    }
}

/// Largest total size of the simulated heaps of one layer.
pub const MEMORY_LIMIT: u64 = 16 << 30;

/// The simulator backend: builds [`SimLayer`]s.
#[derive(Clone, Debug)]
pub struct SimBackend {
    options: SimOptions,
    tile: TileShape,
    #[cfg(flashdmoe_loom)]
    weak_signal_stores: bool,
}

impl SimBackend {
    /// The default tile: small, so even small shapes give many tasks (`bn`, `bk` divide every
    /// valid hidden and intermediate size, which are multiples of 64).
    pub const DEFAULT_TILE: TileShape = TileShape::new(16, 32, 32);

    /// A simulator with `options` and [`SimBackend::DEFAULT_TILE`].
    pub fn new(options: SimOptions) -> Self {
        SimBackend {
            options,
            tile: Self::DEFAULT_TILE,
            #[cfg(flashdmoe_loom)]
            weak_signal_stores: false,
        }
    }

    /// The same simulator with another tile shape (validated against each config at build).
    pub fn with_tile(mut self, tile: TileShape) -> Self {
        self.tile = tile;
        self
    }

    /// The options.
    pub fn options(&self) -> &SimOptions {
        &self.options
    }

    /// The tile shape.
    pub fn tile(&self) -> TileShape {
        self.tile
    }

    /// Test switch, loom builds only: signal stores become `Relaxed` instead of `Release`, a
    /// protocol bug the loom model must catch.
    #[cfg(flashdmoe_loom)]
    pub fn weaken_signal_stores(mut self) -> Self {
        self.weak_signal_stores = true;
        self
    }

    fn signal_order(&self) -> Ordering {
        #[cfg(flashdmoe_loom)]
        if self.weak_signal_stores {
            return Ordering::Relaxed;
        }
        Ordering::Release
    }

    fn check_options(&self) -> Result<(u32, u32), BackendError> {
        let o = &self.options;
        let count = |what, n: usize| {
            if (1..=SimOptions::MAX_THREADS).contains(&n) {
                Ok(n as u32)
            } else {
                Err(BackendError::InvalidInput {
                    what,
                    reason: format!("must be 1 to {}, got {n}", SimOptions::MAX_THREADS),
                })
            }
        };
        let counts = (
            count("SimOptions::processors_per_rank", o.processors_per_rank)?,
            count("SimOptions::subscribers_per_rank", o.subscribers_per_rank)?,
        );
        let refuse = |reason: &str| {
            Err(BackendError::InvalidInput { what: "SimOptions::streamed", reason: reason.into() })
        };
        if o.streamed == Some(0) {
            return refuse("a chunk must hold at least 1 token, got 0");
        }
        #[cfg(flashdmoe_loom)]
        if o.faults.needs_courier() {
            return Err(BackendError::Unavailable(
                "delayed or duplicated deliveries are not modelled under loom".into(),
            ));
        }
        Ok(counts)
    }
}

impl Default for SimBackend {
    fn default() -> Self {
        Self::new(SimOptions::default())
    }
}

impl Backend for SimBackend {
    type Layer = SimLayer;

    fn name(&self) -> &'static str {
        "sim"
    }

    fn build(&self, config: &MoeConfig, weights: &LayerWeights) -> Result<SimLayer, BackendError> {
        let (processors, subscribers) = self.check_options()?;
        weights.check(config)?;
        let layout = HeapLayout::new(config.geometry(self.tile)?)?;
        let heaps = layout.total_bytes().saturating_mul(config.world as u64);
        if heaps > MEMORY_LIMIT {
            return Err(BackendError::Unavailable(format!(
                "the simulated heaps would need {:.1} GiB, over the simulator's limit of {} GiB",
                heaps as f64 / (1u64 << 30) as f64,
                MEMORY_LIMIT >> 30
            )));
        }
        // Each rank gets its own share of the weights: it can read no other expert's.
        let map = config.expert_map()?;
        let shards = (0..config.world)
            .map(|r| weights.shard(config, map.experts_of(r)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SimLayer {
            config: config.clone(),
            shards,
            map,
            world: World::new(layout),
            processors,
            subscribers,
            pairs: self.options.pairs,
            waves: self.options.waves && config.world == 1,
            streamed: self.options.streamed.filter(|_| config.world == 1),
            faults: self.options.faults.clone(),
            epochs: (0..config.world).map(|_| Mutex::new(None)).collect(),
            origin: Instant::now(),
            heartbeat: std::sync::Arc::new(flashdmoe_core::sync::Heartbeat::new()),
            signal_order: self.signal_order(),
        })
    }
}
