//! The CUDA backend: a [`flashdmoe_core::Backend`] whose layer runs every forward as one
//! cooperative launch of the persistent MoE kernel per GPU.
//!
//! ## How ranks map onto GPUs
//!
//! A world of `P` ranks runs on `D` GPUs with `R = P / D` ranks per GPU (*virtual ranks*
//! when `R > 1`): the GPU's cooperative grid is split into `R` partitions of
//! `blocks_per_rank` blocks (one OS block + processors), each rank has its own heap and
//! scratch in that GPU's memory, and peers' heaps are reached through the same peer table
//! whether they live on this GPU or another. The protocol is identical either way, so the
//! whole multi-rank path runs and is tested on one GPU.
//!
//! ## Invariants
//!
//! * One forward = one kernel launch per GPU; nothing else runs on the device in between
//!   except the input upload before and the result download after.
//! * Every rank's epoch advances once per forward; signals are never cleared, diagnostics
//!   and local counters are reset at the start of every forward, so a forward after a failed
//!   one starts clean.
//! * Weights are uploaded once at build time; a GPU holds the router and the experts of its
//!   own ranks only (`weight_slots`), so per-GPU expert memory is the layer's / GPUs (plus
//!   empty slots where a placement table gives ranks unequal expert counts).
//! * A kernel timeout is reported as [`BackendError::Timeout`] with who waited for what.
//! * The kernel computes every router of core's `routing` (softmax, sigmoid and top-k softmax
//!   scores, router and selection biases, grouped top-k, routed scaling), relu / gelu /
//!   SwiGLU / gpt-oss's clamped SwiGLU experts and shared experts with Qwen's sigmoid gate
//!   ([`spec::COMPUTED_FEATURES`]); a layer it does not compute is refused at build
//!   ([`spec::check_computed`]), naming each field, before any device is touched.
//! * Shared experts run as `m` virtual experts a rank (core's `virtual_experts`): the heap
//!   layout, expert tables, weight slots, scratch and statistics are the protocol config's
//!   (`E'` experts, `k + m` slots; `Plan::protocol`); the routing a forward reports, and what
//!   the oracle checks, is the router's (`k` slots over `E`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use flashdmoe_core::backend::{RankStats, check_rank_input};
use flashdmoe_core::config::ExpertMap;
use flashdmoe_core::conformance;
use flashdmoe_core::routing::{DROPPED, RankRouting};
use flashdmoe_core::trace::Clocks;
use flashdmoe_core::virtual_experts::VirtualExperts;
use flashdmoe_core::{
    Backend, BackendError, ForwardOptions, ForwardOutput, Layer, LayerWeights, MoeConfig,
    RankOutput, RoutingError, TimeoutReport, TraceEvent,
};
use flashdmoe_proto::{Epoch, HeapLayout, SourcePlan, TaskCounts, div_ceil, signal};

use crate::arch::Arch;
use crate::device::{Device, enable_peer_access, gpus};
use crate::error::CudaError;
use crate::jit::Jit;
use crate::launch::{Kernel, LaunchShape};
use crate::params::{
    Diag, INTER_MAPS, KernelParams, MAX_RANKS, ROLES, ScratchLayout, TraceRecord, WAITS, control,
};
use crate::spec::{
    self, CombineForm, EngineChoice, MoeSpec, PairChoice, ROUTING_CHUNK, TileChoice,
};
use crate::tma::TensorMap;

mod process;
mod resident;
mod upload;
pub use process::{DEVICE_VAR, GroupOptions, ProcessGroup, TEST_DIE, parse_die};
use process::{Heaps, PeerHeaps};
pub use resident::{DeviceIo, DeviceRouting};
use upload::upload;

/// Options of the CUDA backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CudaOptions {
    /// Ranks per GPU; `None` spreads the world over as many GPUs as divide it evenly.
    pub ranks_per_gpu: Option<u32>,
    /// The tile engines the layer may use (default: the Hopper engine where it runs).
    pub engine: EngineChoice,
    /// The layer's first GPU (its GPUs are `first_gpu..first_gpu + world / ranks_per_gpu`):
    /// a process driving one GPU of several (PyTorch's `cuda:N`) builds on GPU `N`.
    pub first_gpu: u32,
    /// Processor blocks per rank that copy only the rows bound for other GPUs when a layer
    /// spans GPUs (dispatch, phase A4; `kernels/dispatch.cuh` `copy_group`), 1 up to the
    /// rank's processors; `None`: a quarter of them. The others start computing on the rows
    /// that stay on their GPU at once. A tuning knob for NVLink egress (issue 13 item 4).
    pub remote_copiers: Option<u32>,
    /// A tile to run instead of the one the backend would choose (Hopper engine only;
    /// [`MoeSpec::with_tile`] says what it may be): for measuring a layer in several tiles.
    /// A tile the engine cannot run, or that spills, fails the build naming `tile`.
    pub tile: Option<TileChoice>,
    /// How combine tasks read the returned rows ([`CombineForm`]; `Streamed` applies where
    /// [`MoeSpec::with_combine`] says, the registers' form elsewhere).
    pub combine: CombineForm,
    /// Paired GEMM0 tasks ([`MoeSpec::with_pairs`], docs/dev/paired-tasks.md): two processors
    /// of a 2-CTA cluster compute an expert's row tiles 2p and 2p + 1 of one column tile
    /// together and read its weights once. [`PairChoice::Auto`] (the default) pairs the layers
    /// where that pays and builds unpaired where the launch cannot pair; `On` pairs or fails the
    /// build naming `pairs` (the mma.sync engine, an odd number of blocks per rank); `Off`
    /// never pairs.
    pub pairs: PairChoice,
}

/// The CUDA backend.
#[derive(Clone, Debug, Default)]
pub struct CudaBackend {
    options: CudaOptions,
}

impl CudaBackend {
    /// A backend with these options.
    pub fn new(options: CudaOptions) -> CudaBackend {
        CudaBackend { options }
    }
}

impl From<CudaError> for BackendError {
    fn from(e: CudaError) -> BackendError {
        match e {
            CudaError::DriverMissing
            | CudaError::NoDevice { .. }
            | CudaError::NvrtcMissing
            | CudaError::NvrtcTooOld { .. }
            | CudaError::CudaHeadersMissing { .. } => BackendError::Unavailable(e.to_string()),
            other => BackendError::Device(other.to_string()),
        }
    }
}

fn invalid(what: &'static str, reason: String) -> BackendError {
    BackendError::InvalidInput { what, reason }
}

/// Every candidate that `with` turns into the form the option `what` asks for, or, where none
/// can take it, an error naming the option with why the first cannot.
fn every_with(
    candidates: &[MoeSpec],
    what: &'static str,
    with: impl Fn(MoeSpec) -> Result<MoeSpec, String>,
) -> Result<Vec<MoeSpec>, BackendError> {
    let taken: Vec<MoeSpec> = candidates.iter().filter_map(|&c| with(c).ok()).collect();
    if taken.is_empty() {
        let why = candidates.first().and_then(|&c| with(c).err());
        return Err(invalid(what, why.unwrap_or_else(|| "no specialisation to build".into())));
    }
    Ok(taken)
}

/// The 64-bit value of control words `i` (low) and `i + 1` (high) (`kernels/heap.cuh`).
fn word_pair(control: &[u32], i: usize) -> u64 {
    control[i] as u64 | (control[i + 1] as u64) << 32
}

fn u32s(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// Host-side plan shared by every GPU of a layer.
#[derive(Debug)]
struct Plan {
    /// The layer as built (the router's `E` experts and `k` slots, shared experts).
    config: MoeConfig,
    /// The layer the protocol runs: `config` itself, or with shared experts its
    /// [`VirtualExperts::protocol_config`] (`E'` experts, `k + m` slots), which the layout,
    /// `map`, the scratch and the statistics follow.
    protocol: MoeConfig,
    /// The shared experts as virtual experts, if the layer has them.
    virtual_experts: Option<VirtualExperts>,
    spec: MoeSpec,
    layout: HeapLayout,
    map: ExpertMap,
    scratch: ScratchLayout,
    scratch_bytes: u64,
    ranks_per_gpu: u32,
    blocks_per_rank: u32,
    /// [`CudaOptions::remote_copiers`], validated, or its default (a quarter of the processors).
    remote_copiers: u32,
    /// Specialisations preferred to `spec` that spilled (`spec::Chosen::skipped`'s labels).
    skipped: Vec<String>,
    /// What `spec`'s spill fallback changed, when its own defines spilled and the fallback was
    /// compiled ([`KernelVariant::fallback_changes`](crate::KernelVariant::fallback_changes);
    /// empty otherwise).
    fallback: Vec<String>,
}

impl Plan {
    /// The kernel specialisation and any it fell back from ([`Layer::describe`]).
    fn describe(&self) -> String {
        let mut line = format!(
            "kernel: {} ({} processor blocks a rank)",
            self.spec.label(),
            self.blocks_per_rank.saturating_sub(1)
        );
        if !self.fallback.is_empty() {
            line += &format!(
                "; compiled through its spill fallback ({}: correct, perhaps slower)",
                self.fallback.join(", ")
            );
        }
        if !self.skipped.is_empty() {
            line += &format!(
                "; fell back from {} (register spills: correct, slower)",
                self.skipped.join(", ")
            );
        }
        line
    }
}

/// Lays the per-rank scratch arrays out back to back, 256-byte aligned, with checked
/// arithmetic like the heap layout's: a size that overflows is an error naming the array.
/// `config` is the protocol's (its experts `E'` size the packet arrays, its `top_k` the
/// slots a token), the router scores `router_experts` of them (the logits).
fn scratch_layout(
    config: &MoeConfig,
    router_experts: u32,
    capacity: u32,
    max_tasks: u32,
    processors: u32,
    router_split: u32,
) -> Result<(ScratchLayout, u64), BackendError> {
    let (t, e, k) = (config.tokens_per_rank as u64, config.experts as u64, config.top_k as u64);
    let router_e = router_experts as u64;
    let chunks = div_ceil(config.tokens_per_rank, ROUTING_CHUNK) as u64;
    let (tasks, processors) = (max_tasks as u64, processors as u64);
    let mut cursor = 0u64;
    // Each array starts where the previous one ends, rounded up to 256 bytes.
    let mut next = |what: &'static str, dims: &[u64]| -> Result<u64, BackendError> {
        let overflow =
            || invalid("config", format!("the scratch array {what} overflows 64-bit offsets"));
        let bytes =
            dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).ok_or_else(overflow)?;
        let at = cursor;
        cursor = cursor
            .checked_add(bytes)
            .and_then(|end| end.checked_next_multiple_of(256))
            .ok_or_else(overflow)?;
        Ok(at)
    };
    let trace_bytes = std::mem::size_of::<TraceRecord>() as u64;
    let layout = ScratchLayout {
        // One array of partial logits per K part of the router jobs (MoeSpec::router_split).
        logits: next("logits", &[router_split as u64, t, router_e, 4])?,
        topk_expert: next("topk_expert", &[t, k, 4])?,
        topk_weight: next("topk_weight", &[t, k, 4])?,
        slot_row: next("slot_row", &[t, k, 4])?,
        chunk_counts: next("chunk_counts", &[chunks, e, 4])?,
        expert_tokens: next("expert_tokens", &[e, capacity as u64, 4])?,
        expert_weights: next("expert_weights", &[e, capacity as u64, 4])?,
        packet_rows: next("packet_rows", &[e, 4])?,
        packet_copied: next("packet_copied", &[e, 4])?,
        tasks: next("tasks", &[tasks, 64])?,
        task_ready: next("task_ready", &[tasks, 4])?,
        trace: next("trace", &[tasks, trace_bytes])?,
        mailbox: next("mailbox", &[processors, 2, 4])?,
        assigned: next("assigned", &[processors, 4])?,
        completed: next("completed", &[processors, 4])?,
        control: next("control", &[crate::params::CONTROL_WORDS, 4])?,
    };
    Ok((layout, cursor.max(256)))
}

/// Where one rank's forward spent its time, in nanoseconds since its GPU's kernel started:
/// marks the kernel records as it goes (`kernels/heap.cuh`, `Control`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhaseTimes {
    /// Router GEMM done (A1, after the grid barrier).
    pub routed_ns: u32,
    /// Every token's slots chosen: A2's first half, a warp a token, after its grid barrier; or,
    /// where a thread routes a token (small routers at large T: topk.cuh `lanes_route`), the
    /// latest block to route its chunk (no barrier follows; its chunk counts follow in the same
    /// block).
    pub tokens_ns: u32,
    /// Top-k and within-chunk positions done (A2).
    pub chosen_ns: u32,
    /// Placement and capacity drops done (A3).
    pub placed_ns: u32,
    /// The last of this rank's dispatch signals raised (A4 done for this rank's packets; on the
    /// Hopper engine the OS block raises the signals of the packets read in place after it
    /// enqueued the rank's own: then this mark follows the first wave's tasks).
    pub dispatched_ns: u32,
    /// The scheduler's first round that handed out tasks (0 if none did: every task was in
    /// the first wave). After the first wave, the earliest a processor's second task reached
    /// its mailbox.
    pub first_handout_ns: u32,
    /// Every task of the rank completed: the scheduler hands out the stop words.
    pub stopped_ns: u32,
    /// The last warp of the rank's blocks ended (what the kernel ran on after its tasks:
    /// `exited_ns - stopped_ns`; the rest of a launch's time is the launch itself).
    pub exited_ns: u32,
    /// The last block of the launch started (nanoseconds after block 0 did; rank 0's word,
    /// the same for every rank of the GPU).
    pub last_block_ns: u64,
    /// The last block done with its share of the counter reset (the same way).
    pub reset_ns: u64,
    /// The last block done with its router GEMM jobs, before A1's grid barrier (the same way).
    pub router_jobs_ns: u64,
    /// Whether A2 routed a token a thread (small routers at large T: topk.cuh `lanes_route`)
    /// rather than a warp a token.
    pub tokens_by_threads: bool,
    /// The first wave: GEMM0 tasks of the packets read in place that the OS block posted in
    /// processors' mailboxes itself, one each, before the scheduler's first round
    /// (subscriber.cuh `enqueue_in_place`; 0 where no packet is read in place: the mma.sync
    /// engine, or a rank with no such rows).
    pub first_wave: u32,
    /// When the first wave was in the processors' mailboxes (the latest warp done posting its
    /// share; 0 with no first wave).
    pub wave_posted_ns: u32,
    /// The second wave: GEMM1 tasks the OS block posted as task number 1 of the first wave's
    /// processors, where every GEMM0 task of a one-GPU layer was in the first wave
    /// (subscriber.cuh `post_gemm1_early`; 0 otherwise).
    pub second_wave: u32,
    /// The third wave: combine tasks the OS block wrote with the second wave, processor q
    /// below their count taking combine q as its task number 2 once its first task is done,
    /// where every combine has such a processor (subscriber.cuh `post_combines`; 0 otherwise).
    pub third_wave: u32,
    /// A return subscriber's last publication of combine tasks (0 with no combine).
    pub combines_queued_ns: u32,
    /// The scheduler's last round that handed combine tasks out (0 with no combine).
    pub combines_handed_ns: u32,
    /// Tasks run as halves of a 2-CTA cluster's pair (`CudaOptions::pairs`; twice the pairs
    /// run: the scheduler gives a pair no cluster can take as two solo tasks); 0 unpaired.
    pub paired_tasks: u32,
}

/// Device buffers and the loaded kernel of one GPU.
#[derive(Debug)]
struct Gpu {
    device: Device,
    kernel: Kernel,
    shape: LaunchShape,
    first_rank: u32,
    heaps: Heaps,
    scratch: CudaSlice<u8>,
    x: CudaSlice<u8>,
    y: CudaSlice<u8>,
    diag: CudaSlice<u8>,
    weights: Vec<Option<CudaSlice<u8>>>,
    tables: [CudaSlice<u32>; 4],
    /// TMA maps of the up, gate and down projections (Hopper engine; zero otherwise).
    tmaps: [TensorMap; 3],
    /// TMA maps of the local ranks' intermediate rows (GEMM1's A) and how many are valid
    /// (`upload::row_maps`).
    inter_maps: ([TensorMap; INTER_MAPS], u32),
    /// TMA maps of the local ranks' return rows (the experiment `FDM_TMA_STORE_GEMM1`) and how
    /// many are valid (`upload::row_maps`).
    return_maps: ([TensorMap; INTER_MAPS], u32),
    /// `u32`: the epoch of this GPU's last forward, advanced by the kernel (params.rs).
    epoch_word: CudaSlice<u32>,
    /// A given routing of the host path (`forward_rank_routed`): `u32 [ranks][T][k]` experts
    /// then `f32 [ranks][T][k]` weights.
    given: CudaSlice<u8>,
    /// The kernel parameters no call changes (`CudaLayer::fixed_params`).
    params: KernelParams,
}

/// A layer built by [`CudaBackend`].
#[derive(Debug)]
pub struct CudaLayer {
    plan: Plan,
    // Dropped before `peers`: a GPU's symmetric heap waits for its kernel before unmapping.
    gpus: Vec<Mutex<Gpu>>,
    heap_table: [u64; MAX_RANKS],
    peers: PeerHeaps,
    /// Each rank's in-task marks of its last traced forward ([`CudaLayer::task_marks`]).
    marks: Mutex<Vec<Vec<TaskMarks>>>,
}

/// Where the time of one task of a traced forward went, from the kernel's trace record
/// ([`CudaLayer::task_marks`]; Hopper engine only: the mma.sync engine and combines in
/// registers mark nothing). Two marks after the task's start, in order, whose meaning is the
/// task's kind (`key.0`):
/// * a GEMM task: `mark1_ns` its main loop's end as consumer warpgroup 0 saw it, `mark2_ns`
///   its results stored, before their fences and publication;
/// * a streamed combine: `mark1_ns` its slot table looked up and handed to the producer,
///   `mark2_ns` its first fill of returned rows landed in shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskMarks {
    /// The executing rank.
    pub rank: u32,
    /// The task ([`TraceEvent::key`]).
    pub key: flashdmoe_proto::TaskKey,
    /// Its start to its end (ns): its trace event's duration.
    pub duration_ns: u64,
    /// Its start to its first mark (ns).
    pub mark1_ns: u32,
    /// Its start to its second mark (ns).
    pub mark2_ns: u32,
}

fn device_ptr<T>(slice: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    let (ptr, _sync) = slice.device_ptr(stream);
    ptr
}

impl Backend for CudaBackend {
    type Layer = CudaLayer;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn build(&self, config: &MoeConfig, weights: &LayerWeights) -> Result<CudaLayer, BackendError> {
        self.build_with(config, weights, None)
    }
}

impl CudaBackend {
    /// Builds this process's part of a layer of a world of processes, one GPU each
    /// (`group`): ranks `group.rank() * R .. + R` of the config's world (`R` = world /
    /// processes), on GPU `group.device()`, holding their experts only; the peers' heaps are
    /// reached through NCCL windows. Every process of the group must call it with the same
    /// config and weights (checked by fingerprint). Run it with [`CudaLayer::forward_local`]
    /// (or [`Layer::forward_rank`] at one rank per GPU).
    pub fn build_process(
        &self,
        config: &MoeConfig,
        weights: &LayerWeights,
        group: &ProcessGroup,
    ) -> Result<CudaLayer, BackendError> {
        self.build_with(config, weights, Some(group))
    }

    /// [`Self::build_once`] with the options' pairing; where [`PairChoice::Auto`] chose paired
    /// images and the launch's blocks cannot form clusters within each rank (a grid smaller
    /// than the SM count, an odd number of blocks per rank), the layer is built unpaired: the
    /// default never fails where pairs were only an optimisation.
    fn build_with(
        &self,
        config: &MoeConfig,
        weights: &LayerWeights,
        group: Option<&ProcessGroup>,
    ) -> Result<CudaLayer, BackendError> {
        match self.build_once(config, weights, group, self.options.pairs) {
            Err(BackendError::InvalidInput { what: "pairs", .. })
                if self.options.pairs == PairChoice::Auto =>
            {
                self.build_once(config, weights, group, PairChoice::Off)
            }
            built => built,
        }
    }

    fn build_once(
        &self,
        config: &MoeConfig,
        weights: &LayerWeights,
        group: Option<&ProcessGroup>,
        pairs: PairChoice,
    ) -> Result<CudaLayer, BackendError> {
        let _range = nvtx::LocalRange::new(c"flashdmoe::cuda::build");
        config.validate()?;
        // What the kernel does not compute is refused, never run as another layer.
        spec::check_computed(config)?;
        weights.check(config).map_err(|e| invalid("weights", e.to_string()))?;
        let virtual_experts = VirtualExperts::of(config)?;
        let protocol = match virtual_experts {
            Some(v) => v.protocol_config(config)?,
            None => config.clone(),
        };
        // The shared experts split into the routed experts' shape, uploaded as experts.
        let shared_parts = weights.shared_parts(config)?;
        let world = config.world;
        if world as usize > MAX_RANKS {
            return Err(invalid(
                "config",
                format!("world {world} exceeds the {MAX_RANKS} ranks the CUDA backend supports"),
            ));
        }
        let available = gpus()?;
        let ranks_per_gpu = match (group, self.options.ranks_per_gpu) {
            // One GPU per process: the world is spread evenly over the processes.
            (Some(g), r) => {
                let per = world as usize / g.world().max(1);
                if per == 0
                    || per * g.world() != world as usize
                    || r.is_some_and(|r| r as usize != per)
                {
                    return Err(invalid(
                        "ranks_per_gpu",
                        format!(
                            "a world of {world} ranks over {} processes (one GPU each) needs \
                             {world} to be a multiple of {} (ranks per GPU asked: {r:?})",
                            g.world(),
                            g.world()
                        ),
                    ));
                }
                per as u32
            }
            (None, r) => match r {
                Some(r) if r == 0 || !world.is_multiple_of(r) => {
                    return Err(invalid(
                        "ranks_per_gpu",
                        format!("{r} must be > 0 and divide the world size {world}"),
                    ));
                }
                Some(r) => r,
                // As many GPUs as divide the world evenly.
                None => (1..=world)
                    .find(|&r| world.is_multiple_of(r) && (world / r) as usize <= available.len())
                    .unwrap_or(world),
            },
        };
        let (ngpus, first) = match group {
            Some(g) => (1, g.device()),
            None => ((world / ranks_per_gpu) as usize, self.options.first_gpu as usize),
        };
        if first + ngpus > available.len() {
            return Err(BackendError::TooFewDevices {
                ranks: world,
                per_device: ranks_per_gpu,
                needed: (first + ngpus) as u32,
                found: available.len() as u32,
            });
        }
        let jit = Jit::from_env()?;
        let mut devices =
            (first..first + ngpus).map(Device::open).collect::<Result<Vec<_>, _>>()?;
        // One block per SM (the tile configs' shared memory); one OS block per rank.
        let sms = devices.iter().map(|d| d.gpu().sm_count).min().unwrap_or(0);
        let processors = (sms / ranks_per_gpu).saturating_sub(1).max(1);
        // The first specialisation that compiles without spills, on the first GPU's
        // architecture; the others compile that one (all GPUs of a node are normally alike).
        let arch0 = Arch::for_device(devices[0].gpu().cc);
        let spec::Chosen { spec, compiled: compiled0, skipped } = {
            let candidates = match self.options.tile {
                Some(_) if self.options.engine == EngineChoice::MmaSync => {
                    return Err(invalid(
                        "tile",
                        "a chosen tile runs on the Hopper engine, and the mma.sync engine was asked for"
                            .into(),
                    ));
                }
                Some(tile) => vec![
                    MoeSpec::with_tile(config, processors, arch0, tile)
                        .map_err(|why| invalid("tile", why))?,
                ],
                None => self.options.engine.filter(MoeSpec::candidates(config, processors, arch0)),
            };
            let candidates = spec::combine_candidates(candidates, self.options.combine);
            let candidates = match pairs {
                PairChoice::On => every_with(&candidates, "pairs", MoeSpec::with_pairs)?,
                // Only where the blocks of each rank can form clusters (one block an SM).
                PairChoice::Auto if sms % ranks_per_gpu == 0 && (sms / ranks_per_gpu) % 2 == 0 => {
                    candidates.into_iter().map(PairChoice::auto).collect()
                }
                PairChoice::Auto | PairChoice::Off => candidates,
            };
            if candidates.is_empty() {
                return Err(invalid(
                    "engine",
                    format!(
                        "the Hopper (wgmma) engine cannot run a {} layer on {arch0}: it needs an \
                         sm_90 GPU and bf16, f16 or f32 (tf32 tensor cores)",
                        config.dtype.name()
                    ),
                ));
            }
            spec::compile_first(&jit, arch0, &candidates)?
        };
        let layout = HeapLayout::new(protocol.geometry(spec.tile)?)?;
        let map = protocol.expert_map()?;
        if ngpus > 1 && group.is_none() {
            enable_peer_access(&devices)?;
        }
        let mut kernels = Vec::with_capacity(ngpus);
        for device in &devices {
            let arch = Arch::for_device(device.gpu().cc);
            // The first architecture's image is already here (a spilling candidate is not
            // compiled again); another architecture compiles the chosen spec.
            let compiled = if arch == arch0 {
                compiled0.clone()
            } else {
                jit.compile_variant(&spec.variant(), spec.arch_for(arch))?
            };
            let kernel = Kernel::load(device, &compiled.cubin, spec.smem_bytes())?;
            let shape = kernel.cooperative_shape(spec.block_threads())?;
            kernels.push((kernel, shape));
        }
        let grid = kernels.iter().map(|(_, s)| s.grid).min().unwrap_or(0);
        let blocks_per_rank = grid / ranks_per_gpu;
        if !(2..=1024).contains(&blocks_per_rank) {
            return Err(invalid(
                "ranks_per_gpu",
                format!(
                    "{ranks_per_gpu} ranks on a {grid}-block grid leave {blocks_per_rank} blocks per rank (need 2..=1024)"
                ),
            ));
        }
        if spec.pairs && (blocks_per_rank % 2 != 0 || grid % 2 != 0) {
            return Err(invalid(
                "pairs",
                format!(
                    "paired tasks run in 2-CTA clusters that must not straddle ranks: {ranks_per_gpu} \
                     ranks on a {grid}-block grid leave {blocks_per_rank} blocks per rank (need an \
                     even number; PairChoice::Off, the CLI's --no-pairs, runs unpaired)"
                ),
            ));
        }
        let processors = blocks_per_rank - 1;
        let remote_copiers = match self.options.remote_copiers {
            None => (processors / 4).max(1),
            Some(n) if (1..=processors).contains(&n) => n,
            Some(n) => {
                return Err(invalid(
                    "remote_copiers",
                    format!(
                        "{n} copying blocks of a rank's {processors} processors (1..={processors})"
                    ),
                ));
            }
        };
        let g = layout.geometry();
        let max_tasks = max_tasks(&protocol, &layout)?;
        let (scratch, scratch_bytes) = scratch_layout(
            &protocol,
            config.experts,
            g.capacity,
            max_tasks,
            blocks_per_rank - 1,
            spec.router_split,
        )?;
        let plan = Plan {
            config: config.clone(),
            protocol,
            virtual_experts,
            spec,
            layout,
            map,
            scratch,
            scratch_bytes,
            ranks_per_gpu,
            blocks_per_rank,
            remote_copiers,
            skipped: skipped.into_iter().map(|(label, _)| label).collect(),
            fallback: if compiled0.fallback {
                spec.variant().fallback_changes()
            } else {
                Vec::new()
            },
        };

        let mut built = Vec::with_capacity(ngpus);
        let mut heap_table = [0u64; MAX_RANKS];
        let kernel_heap_bytes = ranks_per_gpu as u64 * plan.layout.total_bytes();
        let (first_rank, nccl_heap, peers) = match group {
            Some(g) => {
                // Every process must have chosen the same kernel and layout.
                g.agree(&process::fingerprint(&plan, g.world()))?;
                let ctx = devices[0].context().clone();
                let heap = g.heap(&ctx, kernel_heap_bytes)?;
                for (p, &base) in heap.peers().iter().enumerate() {
                    for r in 0..ranks_per_gpu {
                        heap_table[p * ranks_per_gpu as usize + r as usize] =
                            base + r as u64 * plan.layout.total_bytes();
                    }
                }
                (g.rank() as u32 * ranks_per_gpu, Some(heap), PeerHeaps::Nccl(g.link(&ctx)?))
            }
            None => (0, None, PeerHeaps::Local),
        };
        let mut nccl_heap = nccl_heap;
        for (d, (device, (kernel, shape))) in devices.drain(..).zip(kernels).enumerate() {
            let first_rank = first_rank + d as u32 * ranks_per_gpu;
            let gpu = upload(
                &plan,
                device,
                (kernel, shape),
                first_rank,
                (weights, shared_parts.as_ref()),
                nccl_heap.take(),
            )?;
            let stream = gpu.device.stream().clone();
            // The uploads are done before `build` returns: a device-resident forward runs on
            // the caller's stream, which is not ordered after this one.
            stream.synchronize().map_err(|e| BackendError::Device(e.to_string()))?;
            for r in 0..ranks_per_gpu {
                heap_table[(gpu.first_rank + r) as usize] =
                    gpu.heaps.rank_ptr(&stream, plan.layout.total_bytes(), r);
            }
            built.push(Mutex::new(gpu));
        }
        let marks = Mutex::new(vec![Vec::new(); plan.config.world as usize]);
        let layer = CudaLayer { plan, gpus: built, heap_table, peers, marks };
        for gpu in &layer.gpus {
            let mut gpu = gpu.lock().unwrap_or_else(PoisonError::into_inner);
            gpu.params = layer.fixed_params(&gpu);
        }
        if let Some(g) = group {
            // Every process's heap is zeroed, stamped and mapped before any kernel runs.
            g.barrier()?;
        }
        Ok(layer)
    }
}

/// The most tasks one rank of a layer whose protocol runs `protocol` over `layout` can run in
/// a forward (the task queue's size): every source sends a rank at most `T * k` rows (`k` the
/// protocol's slots: with shared experts the router's plus their parts, whose `T` rows a rank
/// sends itself), each packet's last row tile possibly partial.
fn max_tasks(protocol: &MoeConfig, layout: &HeapLayout) -> Result<u32, BackendError> {
    let g = layout.geometry();
    let rows = g.world as u64 * protocol.tokens_per_rank as u64 * protocol.top_k as u64;
    let row_tiles = rows.div_ceil(g.tile.bm as u64) + g.world as u64 * g.local_experts as u64;
    let max_tasks = TaskCounts::bound(layout, row_tiles, g.tokens);
    u32::try_from(max_tasks).map_err(|_| {
        invalid("config", format!("{max_tasks} tasks per rank exceed the u32 task index"))
    })
}

/// What one GPU's launch left behind, before it is read back.
struct Launched {
    start: cudarc::driver::CudaEvent,
    end: cudarc::driver::CudaEvent,
}

impl CudaLayer {
    /// Ranks per GPU of this layer.
    pub fn ranks_per_gpu(&self) -> u32 {
        self.plan.ranks_per_gpu
    }

    /// Blocks per rank partition (1 OS block + processors).
    pub fn blocks_per_rank(&self) -> u32 {
        self.plan.blocks_per_rank
    }

    /// The task tile the kernel was specialised for.
    pub fn spec(&self) -> &MoeSpec {
        &self.plan.spec
    }

    /// What the spec's spill fallback changed when its own defines spilled and the fallback
    /// was compiled (e.g. `FDM_FRESH_TID`); empty when the spec compiled as it is.
    pub fn spill_fallback(&self) -> &[String] {
        &self.plan.fallback
    }

    /// Trace conformance: replays a traced forward's GPU task trace against core's model of
    /// the task graph for the routing that forward computed (every task exactly once, on the
    /// right rank, after its prerequisites ended; across GPUs, whose clocks differ, under one
    /// consistent offset per GPU). Returns the events on one time base.
    pub fn check_trace(&self, out: &ForwardOutput) -> Result<Vec<TraceEvent>, BackendError> {
        conformance::check_forward(self, out).map_err(|e| {
            BackendError::Device(format!("GPU trace does not conform to the task graph: {e}"))
        })
    }

    /// Uploads the inputs of GPU `gpu`'s ranks and readies its next forward (diagnostics
    /// cleared; the kernel advances the epoch): all the host work, so that [`Self::launch`] only launches.
    /// Every GPU of a forward is staged before any is launched: the kernels meet through
    /// their signals, so one GPU's staging must not delay another's start.
    fn stage(&self, gpu: &mut Gpu, inputs: &[&[f32]]) -> Result<(), BackendError> {
        let _range = nvtx::LocalRange::new(c"flashdmoe::cuda::stage");
        let stream = gpu.device.stream().clone();
        let d = |e: cudarc::driver::DriverError| BackendError::Device(e.to_string());
        let mut host = Vec::new();
        for x in inputs {
            self.plan.config.dtype.encode_into(x, &mut host);
        }
        stream.memcpy_htod(&host, &mut gpu.x.slice_mut(..host.len())).map_err(d)?;
        stream.memset_zeros(&mut gpu.diag).map_err(d)?;
        Ok(())
    }

    /// One rank's forward on its own GPU (`entry` names the caller's entry point in the
    /// error of a layer of virtual ranks), routed by the kernel or by a given routing.
    fn forward_one_rank(
        &self,
        entry: &str,
        rank: u32,
        input: &[f32],
        given: Option<&RankRouting>,
        options: &ForwardOptions,
    ) -> Result<RankOutput, BackendError> {
        if self.plan.ranks_per_gpu != 1 {
            return Err(invalid(
                "rank",
                format!(
                    "{entry} needs one rank per GPU; this layer runs {} ranks per GPU (use forward)",
                    self.plan.ranks_per_gpu
                ),
            ));
        }
        check_rank_input(&self.plan.config, rank, input)?;
        if let Some(routing) = given {
            routing.check(&self.plan.config)?;
        }
        self.check_peers()?;
        // By index, not by locking every GPU: the other ranks' threads hold theirs.
        let gpu = self.local_ranks().contains(&rank).then(|| &self.gpus[self.gpu_index(rank)]);
        let Some(gpu) = gpu else {
            return Err(invalid("rank", format!("rank {rank} does not run in this process")));
        };
        let mut gpu = gpu.lock().unwrap_or_else(PoisonError::into_inner);
        self.stage(&mut gpu, &[input])?;
        if let Some(routing) = given {
            self.stage_routing(&mut gpu, routing)?;
        }
        let launched = self.launch(&gpu, options, given.is_some())?;
        self.launched();
        self.collect(&gpu, launched, options)
            .map(|mut outs| outs.remove(0))
            .map_err(|e| self.explain(e))
    }

    /// Uploads a checked given routing of GPU `gpu`'s one rank (`forward_rank_routed`).
    fn stage_routing(&self, gpu: &mut Gpu, routing: &RankRouting) -> Result<(), BackendError> {
        let stream = gpu.device.stream().clone();
        let d = |e: cudarc::driver::DriverError| BackendError::Device(e.to_string());
        let mut bytes = Vec::with_capacity(gpu.given.len());
        bytes.extend(routing.experts.iter().flat_map(|e| e.to_le_bytes()));
        bytes.extend(routing.weights.iter().flat_map(|w| w.to_le_bytes()));
        if bytes.len() != gpu.given.len() {
            return Err(invalid(
                "routing",
                format!("{} bytes of routing for a {}-byte buffer", bytes.len(), gpu.given.len()),
            ));
        }
        stream.memcpy_htod(&bytes, &mut gpu.given).map_err(d)
    }

    /// The kernel's parameters for a forward of GPU `gpu` on `tokens` tokens a rank (at most
    /// the layer's), reading `x` and writing `y` (`[ranks_per_gpu][tokens][hidden]` elements):
    /// the GPU's fixed parameters ([`Self::fixed_params`], computed once at build: no device
    /// pointer lookups per call) with this call's fields.
    fn params(&self, gpu: &Gpu, io: (u64, u64), tokens: u32, timeout: Duration) -> KernelParams {
        KernelParams {
            x: io.0,
            y: io.1,
            timeout_ns: timeout.as_nanos().min(u64::MAX as u128) as u64,
            tokens,
            capacity: self.plan.config.capacity_rows_for(tokens),
            ..gpu.params
        }
    }

    /// Everything of GPU `gpu`'s kernel parameters that no call changes: its buffers, tables,
    /// tensor maps, layouts and the peer table (complete once every GPU is built); `x` and `y`
    /// are the layer's own input and output buffers (the host path's).
    fn fixed_params(&self, gpu: &Gpu) -> KernelParams {
        let plan = &self.plan;
        let stream = gpu.device.stream().clone();
        let w = |i: usize| gpu.weights[i].as_ref().map_or(0, |s| device_ptr(s, &stream));
        KernelParams {
            tmap_up: gpu.tmaps[0],
            tmap_gate: gpu.tmaps[1],
            tmap_down: gpu.tmaps[2],
            tmap_inter: gpu.inter_maps.0,
            tmap_return: gpu.return_maps.0,
            layout: plan.layout.params(),
            scratch_layout: plan.scratch,
            heaps: self.heap_table,
            x: device_ptr(&gpu.x, &stream),
            y: device_ptr(&gpu.y, &stream),
            router: w(0),
            w_up: w(1),
            w_gate: w(2),
            w_down: w(3),
            b_up: w(4),
            b_gate: w(5),
            b_down: w(6),
            router_bias: w(7),
            selection_bias: w(8),
            shared_gate: w(9),
            expert_owner: device_ptr(&gpu.tables[0], &stream),
            expert_local: device_ptr(&gpu.tables[1], &stream),
            local_to_global: device_ptr(&gpu.tables[2], &stream),
            local_experts_of: device_ptr(&gpu.tables[3], &stream),
            scratch: device_ptr(&gpu.scratch, &stream),
            scratch_bytes: plan.scratch_bytes,
            diag: device_ptr(&gpu.diag, &stream),
            epoch_word: device_ptr(&gpu.epoch_word, &stream),
            given_experts: 0,
            given_weights: 0,
            timeout_ns: 0,
            tokens: plan.config.tokens_per_rank,
            first_rank: gpu.first_rank,
            local_ranks: plan.ranks_per_gpu,
            blocks_per_rank: plan.blocks_per_rank,
            trace: 0,
            capacity: plan.layout.geometry().capacity,
            remote_copiers: plan.remote_copiers,
            inter_maps: gpu.inter_maps.1,
            return_maps: gpu.return_maps.1,
            tail: [0; 9],
        }
    }

    /// The launch shape of every forward of this layer.
    fn shape(&self) -> LaunchShape {
        LaunchShape {
            grid: self.plan.blocks_per_rank * self.plan.ranks_per_gpu,
            block: self.plan.spec.block_threads(),
        }
    }

    /// Stages every GPU of `guards` with its ranks' `inputs` (`ranks_per_gpu` of them each, in
    /// GPU order), then launches every GPU before waiting on any: their kernels meet through
    /// signals, so they should start together.
    fn stage_and_launch(
        &self,
        guards: &mut [std::sync::MutexGuard<'_, Gpu>],
        inputs: &[Vec<f32>],
        options: &ForwardOptions,
    ) -> Result<Vec<Launched>, BackendError> {
        let r = self.plan.ranks_per_gpu as usize;
        for (d, gpu) in guards.iter_mut().enumerate() {
            let mine: Vec<&[f32]> = inputs[d * r..(d + 1) * r].iter().map(Vec::as_slice).collect();
            self.stage(gpu, &mine)?;
        }
        guards.iter().map(|gpu| self.launch(gpu, options, false)).collect()
    }

    /// Launches GPU `gpu`'s kernel for the forward [`Self::stage`] readied.
    /// With `given`, the kernel skips its router and takes the routing [`Self::stage_routing`]
    /// uploaded.
    fn launch(
        &self,
        gpu: &Gpu,
        options: &ForwardOptions,
        given: bool,
    ) -> Result<Launched, BackendError> {
        let _range = nvtx::LocalRange::new(c"flashdmoe::cuda::launch");
        let stream = gpu.device.stream().clone();
        let d = |e: cudarc::driver::DriverError| BackendError::Device(e.to_string());
        let io = (gpu.params.x, gpu.params.y);
        let mut params = KernelParams {
            trace: u32::from(options.trace),
            ..self.params(gpu, io, self.plan.config.tokens_per_rank, options.timeout)
        };
        if given {
            let base = device_ptr(&gpu.given, &stream);
            params.given_experts = base;
            params.given_weights = base + gpu.given.len() as u64 / 2;
        }
        let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = stream.record_event(flags).map_err(d)?;
        let shape = self.shape();
        debug_assert!(shape.grid <= gpu.shape.grid);
        // SAFETY: every address in `params` names a live allocation of this layer on this
        // GPU or, for `heaps`, a rank's heap of `layout.total_bytes()` bytes on this or a
        // peer-enabled GPU; the scratch/heap layouts were computed for exactly these sizes,
        // and the kernel was compiled for this config's shapes (MoeSpec::defines).
        unsafe { gpu.kernel.launch_cooperative(&stream, shape, &params)? };
        let end = stream.record_event(flags).map_err(d)?;
        Ok(Launched { start, end })
    }

    /// GPU `gpu`'s last forward's diagnostics record: `Err(BackendError::Timeout)` with the
    /// kernel's report if a wait gave up (read once that forward has finished).
    fn diag_status(&self, gpu: &Gpu) -> Result<(), BackendError> {
        let bytes = gpu
            .device
            .stream()
            .clone_dtoh(&gpu.diag)
            .map_err(|e| BackendError::Device(e.to_string()))?;
        let diag = bytemuck_diag(&bytes);
        if diag.status != 0 {
            return Err(BackendError::Timeout(timeout_report(&diag, &self.plan)));
        }
        Ok(())
    }

    /// The epoch of GPU `gpu`'s last forward, from the device (the kernel advances it).
    fn device_epoch(&self, gpu: &Gpu) -> Result<Epoch, BackendError> {
        let stream = gpu.device.stream().clone();
        let word =
            stream.clone_dtoh(&gpu.epoch_word).map_err(|e| BackendError::Device(e.to_string()))?;
        Epoch::new(word[0]).ok_or_else(|| {
            BackendError::Device("the kernel did not take an epoch (its epoch word is 0)".into())
        })
    }

    /// Waits for GPU `gpu`'s forward and reads its ranks' results.
    fn collect(
        &self,
        gpu: &Gpu,
        launched: Launched,
        options: &ForwardOptions,
    ) -> Result<Vec<RankOutput>, BackendError> {
        let _range = nvtx::LocalRange::new(c"flashdmoe::cuda::collect");
        let plan = &self.plan;
        let (cfg, g) = (&plan.config, plan.layout.geometry());
        let stream = gpu.device.stream().clone();
        let d = |e: cudarc::driver::DriverError| BackendError::Device(e.to_string());
        self.wait(gpu, &launched)?;
        let elapsed = Duration::from_secs_f64(
            launched.start.elapsed_ms(&launched.end).map_err(d)? as f64 / 1e3,
        );
        self.diag_status(gpu)?;
        let epoch = self.device_epoch(gpu)?;
        let t = cfg.tokens_per_rank as usize;
        let eb = cfg.dtype.elem_bytes() as u64;
        let row_bytes = cfg.hidden as u64 * eb;
        let mut outs = Vec::with_capacity(plan.ranks_per_gpu as usize);
        for local in 0..plan.ranks_per_gpu {
            let rank = gpu.first_rank + local;
            let read =
                |slice: &CudaSlice<u8>, offset: u64, len: u64| -> Result<Vec<u8>, BackendError> {
                    let view = slice.slice(offset as usize..(offset + len) as usize);
                    stream.clone_dtoh(&view).map_err(d)
                };
            let y = read(&gpu.y, local as u64 * t as u64 * row_bytes, t as u64 * row_bytes)?;
            // The protocol's routing (with shared experts: their parts' slots and packets too)
            // for the statistics; the router's for the caller and the oracle.
            let protocol_routing = self.protocol_routing_of(gpu, local, cfg.tokens_per_rank)?;
            let routing = self.router_routing(&protocol_routing);
            // Rows received, from this rank's own dispatch signals (what its bound came from).
            let h0 = local as u64 * plan.layout.total_bytes();
            let nle = plan.map.experts_of(rank).len() as u32;
            let signals = gpu.heaps.read(
                &stream,
                h0 + plan.layout.dispatch_signal(0, 0)?,
                g.world as u64 * g.local_experts as u64 * 8,
            )?;
            let mut received = Vec::new();
            for src in 0..g.world {
                for le in 0..nle {
                    let i = (src * g.local_experts + le) as usize * 8;
                    let word = u64::from_le_bytes(signals[i..i + 8].try_into().expect("8 bytes"));
                    match signal::decode_dispatch(word, epoch, g.capacity)? {
                        signal::SignalState::Ready(n) => received.push(n),
                        signal::SignalState::Pending { seen_epoch } => {
                            return Err(BackendError::Device(format!(
                                "rank {rank}: dispatch signal from rank {src} for local expert {le} still at epoch {seen_epoch} after a successful forward"
                            )));
                        }
                    }
                }
            }
            let dropped = routing.rows.iter().filter(|&&r| r == DROPPED).count() as u64;
            let sent: Vec<u32> =
                protocol_routing.expert_tokens.iter().map(|t| t.len() as u32).collect();
            let stats = RankStats {
                elapsed,
                ..RankStats::from_packets(
                    &plan.protocol,
                    &plan.layout,
                    rank,
                    sent,
                    received,
                    dropped,
                )?
            };
            let trace = if options.trace {
                Some(self.read_trace(gpu, &stream, local, stats.tasks)?)
            } else {
                None
            };
            let mut output = Vec::with_capacity(t * cfg.hidden as usize);
            cfg.dtype.decode_into(&y, &mut output);
            outs.push(RankOutput { output, routing, stats, trace });
        }
        Ok(outs)
    }

    /// The router's routing local rank `local` of GPU `gpu` computed in its last forward, of
    /// `tokens` tokens (that forward's), from the kernel's scratch.
    fn routing_of(&self, gpu: &Gpu, local: u32, tokens: u32) -> Result<RankRouting, BackendError> {
        Ok(self.router_routing(&self.protocol_routing_of(gpu, local, tokens)?))
    }

    /// The router's routing in a protocol routing ([`VirtualExperts::router_routing`]; the
    /// routing itself without shared experts).
    fn router_routing(&self, protocol: &RankRouting) -> RankRouting {
        match &self.plan.virtual_experts {
            Some(v) => v.router_routing(protocol),
            None => protocol.clone(),
        }
    }

    /// The protocol's routing ([`Plan::protocol`]: with shared experts every token's `k + m`
    /// slots and the `E'` experts' token lists) local rank `local` of GPU `gpu` computed in its
    /// last forward, of `tokens` tokens (that forward's), from the kernel's scratch.
    fn protocol_routing_of(
        &self,
        gpu: &Gpu,
        local: u32,
        tokens: u32,
    ) -> Result<RankRouting, BackendError> {
        let plan = &self.plan;
        let (cfg, g) = (&plan.protocol, plan.layout.geometry());
        let stream = gpu.device.stream().clone();
        let d = |e: cudarc::driver::DriverError| BackendError::Device(e.to_string());
        let (t, k, e) = (tokens as usize, cfg.top_k as usize, cfg.experts as usize);
        let read = |offset: u64, len: u64| -> Result<Vec<u32>, BackendError> {
            let at = local as u64 * plan.scratch_bytes + offset;
            let view = gpu.scratch.slice(at as usize..(at + len) as usize);
            Ok(u32s(&stream.clone_dtoh(&view).map_err(d)?))
        };
        let sl = &plan.scratch;
        let experts = read(sl.topk_expert, (t * k * 4) as u64)?;
        let weights =
            read(sl.topk_weight, (t * k * 4) as u64)?.into_iter().map(f32::from_bits).collect();
        let rows = read(sl.slot_row, (t * k * 4) as u64)?;
        let packet_rows = read(sl.packet_rows, (e * 4) as u64)?;
        let tokens = read(sl.expert_tokens, (e as u64) * g.capacity as u64 * 4)?;
        let expert_tokens = packet_rows
            .iter()
            .enumerate()
            .map(|(ex, &n)| tokens[ex * g.capacity as usize..][..n as usize].to_vec())
            .collect();
        Ok(RankRouting { top_k: cfg.top_k, experts, weights, rows, expert_tokens })
    }

    /// Control words of local rank `local` of GPU `gpu` after its last forward.
    fn control(&self, gpu: &Gpu, local: u32) -> Result<Vec<u32>, BackendError> {
        let stream = gpu.device.stream().clone();
        let at = (local as u64 * self.plan.scratch_bytes + self.plan.scratch.control) as usize;
        let bytes = stream
            .clone_dtoh(&gpu.scratch.slice(at..at + 4 * crate::params::CONTROL_WORDS as usize))
            .map_err(|e| BackendError::Device(e.to_string()))?;
        Ok(u32s(&bytes))
    }

    /// `%globaltimer` at the launch of GPU `gpu`'s last forward.
    fn kernel_start(&self, gpu: &Gpu) -> Result<u64, BackendError> {
        Ok(word_pair(&self.control(gpu, 0)?, control::KERNEL_START))
    }

    /// Where the last forward's phase A time went, per rank (see [`PhaseTimes`]).
    pub fn phase_times(&self) -> Result<Vec<PhaseTimes>, BackendError> {
        let mut out = Vec::with_capacity(self.plan.config.world as usize);
        for gpu in &self.gpus {
            let gpu = gpu.lock().unwrap_or_else(PoisonError::into_inner);
            // Rank 0's words hold the GPU's kernel start and the raw-timer maxima.
            let first = self.control(&gpu, 0)?;
            let since_start = |w: usize| {
                word_pair(&first, w).saturating_sub(word_pair(&first, control::KERNEL_START))
            };
            let (last_block, reset, router_jobs) = (
                since_start(control::LAST_BLOCK_START),
                since_start(control::LAST_RESET_DONE),
                since_start(control::LAST_ROUTER_DONE),
            );
            for local in 0..self.plan.ranks_per_gpu {
                let c = self.control(&gpu, local)?;
                out.push(PhaseTimes {
                    routed_ns: c[control::ROUTED_NS],
                    tokens_ns: c[control::TOKENS_NS],
                    chosen_ns: c[control::CHOSEN_NS],
                    placed_ns: c[control::PLACED_NS],
                    dispatched_ns: c[control::DISPATCHED_NS],
                    first_handout_ns: c[control::FIRST_HANDOUT_NS],
                    stopped_ns: c[control::STOPPED_NS],
                    exited_ns: c[control::EXIT_NS],
                    last_block_ns: last_block,
                    reset_ns: reset,
                    router_jobs_ns: router_jobs,
                    tokens_by_threads: c[control::ROUTE_THREADS] != 0,
                    first_wave: c[control::FIRST_WAVE],
                    wave_posted_ns: c[control::WAVE_POSTED_NS],
                    second_wave: c[control::SECOND_WAVE],
                    third_wave: c[control::THIRD_WAVE],
                    combines_queued_ns: c[control::COMBINES_QUEUED_NS],
                    combines_handed_ns: c[control::COMBINES_HANDED_NS],
                    paired_tasks: c[control::PAIRED_TASKS],
                });
            }
        }
        Ok(out)
    }

    fn read_trace(
        &self,
        gpu: &Gpu,
        stream: &Arc<CudaStream>,
        local: u32,
        counts: TaskCounts,
    ) -> Result<Vec<TraceEvent>, BackendError> {
        let plan = &self.plan;
        let d = |e: cudarc::driver::DriverError| BackendError::Device(e.to_string());
        let s0 = local as u64 * plan.scratch_bytes;
        let read = |offset: u64, len: u64| -> Result<Vec<u8>, BackendError> {
            stream
                .clone_dtoh(
                    &gpu.scratch.slice((s0 + offset) as usize..(s0 + offset + len) as usize),
                )
                .map_err(d)
        };
        // Times count from the launch of this GPU's kernel on this GPU's `%globaltimer`, a
        // clock of its own (`trace_clocks`): conformance aligns the GPUs' clocks.
        let origin = self.kernel_start(gpu)?;
        // The task log's two parts (`kernels/queue.cuh`): this forward's combines from slot 0,
        // its GEMM tasks from the combine log's end.
        let record_bytes = std::mem::size_of::<TraceRecord>() as u64;
        let gemm_base = flashdmoe_proto::graph::combine_log_slots(&plan.layout);
        let gemms = counts.gemm0 + counts.gemm1;
        let mut tasks = read(plan.scratch.tasks, counts.combine * 64)?;
        tasks.extend(read(plan.scratch.tasks + gemm_base * 64, gemms * 64)?);
        let mut records = read(plan.scratch.trace, counts.combine * record_bytes)?;
        records.extend(read(plan.scratch.trace + gemm_base * record_bytes, gemms * record_bytes)?);
        let rank = gpu.first_rank + local;
        let count = counts.total();
        let mut events = Vec::with_capacity(count as usize);
        let mut marks = Vec::new();
        for i in 0..count as usize {
            let t = flashdmoe_proto::TaskDescriptor::decode(&tasks[i * 64..][..64], &plan.layout)?;
            let rec = &records[i * record_bytes as usize..][..record_bytes as usize];
            let word = |o: usize| u64::from_le_bytes(rec[o..o + 8].try_into().expect("8 bytes"));
            let half = |o: usize| u32::from_le_bytes(rec[o..o + 4].try_into().expect("4 bytes"));
            let processor = half(16);
            let event = TraceEvent {
                rank,
                processor,
                kind: t.task_kind()?,
                source: t.source_rank,
                owner: t.owner_rank,
                local_expert: t.local_expert,
                row_tile: t.row_tile,
                col_tile: t.col_tile,
                start_ns: word(0).saturating_sub(origin),
                end_ns: word(8).saturating_sub(origin),
            };
            let (mark1_ns, mark2_ns) = (half(24), half(28));
            if mark2_ns != 0 {
                marks.push(TaskMarks {
                    rank,
                    key: event.key(),
                    duration_ns: event.end_ns.saturating_sub(event.start_ns),
                    mark1_ns,
                    mark2_ns,
                });
            }
            events.push(event);
        }
        let mut all = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = all.get_mut(rank as usize) {
            *slot = marks;
        }
        Ok(events)
    }

    /// The in-task marks of every GEMM task and streamed combine of each rank's last traced
    /// forward (Hopper engine; empty before any traced forward, or on the mma.sync engine).
    pub fn task_marks(&self) -> Vec<TaskMarks> {
        self.marks.lock().unwrap_or_else(PoisonError::into_inner).concat()
    }
}

fn bytemuck_diag(bytes: &[u8]) -> Diag {
    let w = |i: usize| u32::from_le_bytes(bytes[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
    Diag {
        status: w(0),
        abort: w(1),
        rank: w(2),
        role: w(3),
        what: w(4),
        index: w(5),
        expected_epoch: w(6),
        pad: w(7),
        seen: u64::from_le_bytes(bytes[32..40].try_into().expect("8 bytes")),
    }
}

fn timeout_report(diag: &Diag, plan: &Plan) -> TimeoutReport {
    let role = ROLES.get(diag.role as usize).map_or("unknown role", |r| r.1);
    let what = WAITS.get(diag.what as usize).map_or("unknown condition", |w| w.1);
    let g = plan.layout.geometry();
    let detail = match diag.what {
        0 => format!(
            "{what} from rank {} for local expert {}",
            diag.index / g.local_experts.max(1),
            diag.index % g.local_experts.max(1)
        ),
        _ => format!("{what} #{}", diag.index),
    };
    TimeoutReport {
        rank: diag.rank,
        role: role.to_owned(),
        awaited: detail,
        expected_epoch: diag.expected_epoch,
        seen: diag.seen,
    }
}

impl Layer for CudaLayer {
    fn config(&self) -> &MoeConfig {
        &self.plan.config
    }

    fn describe(&self) -> Option<String> {
        Some(self.plan.describe())
    }

    fn layout(&self) -> &HeapLayout {
        &self.plan.layout
    }

    /// With shared experts, the routed packets plus the rank's parts of the shared experts
    /// (every token: [`VirtualExperts::source_plan`]).
    fn source_plan(&self, rank: u32, routing: &RankRouting) -> Result<SourcePlan, RoutingError> {
        match &self.plan.virtual_experts {
            Some(v) => v.source_plan(&self.plan.config, rank, routing, &self.plan.layout),
            None => routing.source_plan(&self.plan.config, &self.plan.layout),
        }
    }

    /// Each GPU's `%globaltimer` is its own clock (measured 0.7 ms apart on two H200s of one
    /// node): the ranks of one GPU share it.
    fn trace_clocks(&self) -> Clocks {
        Clocks::per_rank((0..self.plan.config.world).map(|r| r / self.plan.ranks_per_gpu).collect())
    }

    /// The per-rank entry point: with one rank per GPU, rank `r`'s caller launches GPU `r`'s
    /// kernel and waits for it; the GPUs meet through their signals. With virtual ranks the
    /// ranks of a GPU share one launch, so use [`Layer::forward`].
    fn forward_rank(
        &self,
        rank: u32,
        input: &[f32],
        options: &ForwardOptions,
    ) -> Result<RankOutput, BackendError> {
        self.forward_one_rank("forward_rank", rank, input, None, options)
    }

    /// The forward of one rank routed by the caller (the kernel skips its router): one rank
    /// per GPU, like [`Layer::forward_rank`]; the routing is checked on the host first.
    fn forward_rank_routed(
        &self,
        rank: u32,
        input: &[f32],
        routing: &RankRouting,
        options: &ForwardOptions,
    ) -> Result<RankOutput, BackendError> {
        self.forward_one_rank("forward_rank_routed", rank, input, Some(routing), options)
    }

    fn forward(
        &self,
        inputs: &[Vec<f32>],
        options: &ForwardOptions,
    ) -> Result<ForwardOutput, BackendError> {
        let _range = nvtx::LocalRange::new(c"flashdmoe::cuda::forward");
        if let PeerHeaps::Nccl(_) = self.peers {
            return Err(invalid(
                "inputs",
                "this layer is one process's part of a world of processes: run its own ranks \
                 with CudaLayer::forward_local"
                    .into(),
            ));
        }
        let world = self.plan.config.world as usize;
        if inputs.len() != world {
            return Err(invalid(
                "inputs",
                format!("expected one input per rank ({world}), got {}", inputs.len()),
            ));
        }
        for (rank, input) in inputs.iter().enumerate() {
            check_rank_input(&self.plan.config, rank as u32, input)?;
        }
        let start = std::time::Instant::now();
        let mut guards: Vec<_> =
            self.gpus.iter().map(|g| g.lock().unwrap_or_else(PoisonError::into_inner)).collect();
        let launched = self.stage_and_launch(&mut guards, inputs, options)?;
        let mut ranks = Vec::with_capacity(world);
        // Each GPU's trace times count from its own launch on its own clock
        // (`trace_clocks`): conformance aligns them.
        for (gpu, l) in guards.iter().zip(launched) {
            ranks.extend(self.collect(gpu, l, options)?);
        }
        Ok(ForwardOutput { ranks, elapsed: start.elapsed() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An option every candidate refuses fails the build naming the option and why; one some
    /// take keeps those, in order (`pairs`: DeepSeek-V3's mma.sync candidates cannot pair).
    #[test]
    fn an_option_no_candidate_takes_is_an_error_naming_it() {
        use flashdmoe_core::config::presets;
        let config = presets::preset("deepseek-v3").unwrap();
        let all = MoeSpec::candidates(&config, spec::H200_PROCESSORS, Arch::SM90A);
        let mma: Vec<MoeSpec> =
            all.iter().copied().filter(|s| s.engine == spec::TileEngine::MmaSync).collect();
        assert!(!mma.is_empty());
        let err = every_with(&mma, "pairs", MoeSpec::with_pairs).unwrap_err();
        assert!(
            matches!(&err, BackendError::InvalidInput { what: "pairs", reason } if reason.contains("mma.sync")),
            "{err:?}"
        );
        // The Hopper candidates with a cooperative tile of bn a multiple of 16, every one paired.
        let can_pair: Vec<MoeSpec> = all
            .iter()
            .filter(
                |s| matches!(s.engine, spec::TileEngine::Wgmma(t) if !t.pingpong && t.bn % 16 == 0),
            )
            .map(|&s| MoeSpec { pairs: true, ..s })
            .collect();
        assert!(!can_pair.is_empty() && can_pair.len() < all.len());
        assert_eq!(every_with(&all, "pairs", MoeSpec::with_pairs).unwrap(), can_pair);
        assert!(every_with(&[], "pairs", MoeSpec::with_pairs).is_err());
    }

    #[test]
    fn the_task_queue_holds_every_task_of_the_shared_experts_parts_too() {
        use flashdmoe_core::config::{Activation, SharedExperts, SharedGate};
        use flashdmoe_proto::TileShape;
        // The worst routing: every token of every rank to rank 0's experts, plus the rank's
        // own parts of the shared experts (m = 4), on a tile whose packets end in partial tiles.
        let c = MoeConfig {
            world: 3,
            tokens_per_rank: 1000,
            hidden: 64,
            inter: 64,
            experts: 6,
            top_k: 2,
            activation: Activation::SiluGated,
            capacity: flashdmoe_core::CapacityPolicy::Dropless,
            shared: Some(SharedExperts { count: 1, inter: 256, gate: SharedGate::Sigmoid }),
            ..MoeConfig::default()
        };
        let v = VirtualExperts::of(&c).unwrap().unwrap();
        let protocol = v.protocol_config(&c).unwrap();
        let layout =
            HeapLayout::new(protocol.geometry(TileShape::new(64, 64, 64)).unwrap()).unwrap();
        let g = layout.geometry();
        // Rank 0 receives 1000 rows for each of its 2 routed experts from every rank, and its
        // own 4 parts' 1000 rows each.
        let mut received = vec![0u32; (g.world * g.local_experts) as usize];
        for src in 0..3 {
            for le in 0..2 {
                received[(src * g.local_experts + le) as usize] = 1000;
            }
        }
        for le in 2..6 {
            received[le as usize] = 1000;
        }
        let exact = TaskCounts::for_rank(&layout, received.iter().copied()).total();
        let bound = max_tasks(&protocol, &layout).unwrap() as u64;
        assert!(exact <= bound, "{exact} tasks, queue of {bound}");
        // Without the parts' rows the queue would be too small for this forward.
        let routed_only = MoeConfig { top_k: 2, ..protocol.clone() };
        assert!(exact > max_tasks(&routed_only, &layout).unwrap() as u64);
    }

    #[test]
    fn shared_experts_the_kernel_cannot_run_are_refused_naming_the_field_before_any_device() {
        use flashdmoe_core::config::presets::preset;
        let qwen = MoeConfig { tokens_per_rank: 8, ..preset("qwen1.5-moe-a2.7b").unwrap() };
        // No GPU is needed: the refusal comes first.
        for (what, c) in [
            ("shared", MoeConfig { inter: 1472, ..qwen.clone() }),
            ("shared", MoeConfig { activation: flashdmoe_core::Activation::Gelu, ..qwen.clone() }),
            (
                "capacity",
                MoeConfig { capacity: flashdmoe_core::CapacityPolicy::Factor(2.0), ..qwen.clone() },
            ),
        ] {
            // The weights do not matter (nor fit): the config is refused first.
            let w = LayerWeights::generate(&MoeConfig::default(), 1).unwrap();
            let err = CudaBackend::new(CudaOptions::default()).build(&c, &w).unwrap_err();
            assert!(
                matches!(&err, BackendError::InvalidInput { what: w, .. } if *w == what),
                "{what}: {err}"
            );
            assert!(err.to_string().contains("--backend sim computes this layer"), "{err}");
        }
        // The routers, experts and shared experts the kernel computes are not refused.
        for name in ["gpt-oss-20b", "gpt-oss-120b", "deepseek-v3", "kimi-k2", "qwen2-57b-a14b"] {
            let c = MoeConfig { tokens_per_rank: 8, ..preset(name).unwrap() };
            assert!(spec::check_computed(&c).is_ok(), "{name}");
        }
    }

    #[test]
    fn scratch_sizes_that_overflow_are_errors_naming_the_array() {
        let config = MoeConfig {
            tokens_per_rank: u32::MAX,
            experts: u32::MAX,
            top_k: 3,
            ..MoeConfig::default()
        };
        let err = scratch_layout(&config, config.experts, 300, 1000, 131, 1).unwrap_err();
        assert!(err.to_string().contains("logits"), "{err}");
    }

    #[test]
    fn scratch_arrays_are_aligned_disjoint_and_in_order() {
        let config =
            MoeConfig { tokens_per_rank: 300, experts: 10, top_k: 3, ..MoeConfig::default() };
        let (l, total) = scratch_layout(&config, config.experts, 300, 1000, 131, 1).unwrap();
        let starts = [
            l.logits,
            l.topk_expert,
            l.topk_weight,
            l.slot_row,
            l.chunk_counts,
            l.expert_tokens,
            l.packet_rows,
            l.packet_copied,
            l.tasks,
            l.task_ready,
            l.trace,
            l.mailbox,
            l.assigned,
            l.completed,
            l.control,
        ];
        assert_eq!(l.logits, 0);
        assert!(starts.iter().all(|s| s % 256 == 0));
        // logits [300][10] f32 = 12000 B -> next array at 12032; tasks hold 64 B each.
        assert_eq!(l.topk_expert, 12_032);
        assert_eq!(l.task_ready - l.tasks, 64_000);
        assert!(starts.windows(2).all(|w| w[0] <= w[1]));
        assert!(total >= l.control + 4 * crate::params::CONTROL_WORDS && total % 256 == 0);
    }

    #[test]
    fn the_logits_hold_one_array_per_router_k_part() {
        // The kernel's A1 writes part `s` at `s * tokens_per_rank * E` floats (route.cuh), so
        // the scratch must hold `router_split` whole arrays before the next one starts.
        let config =
            MoeConfig { tokens_per_rank: 300, experts: 10, top_k: 3, ..MoeConfig::default() };
        for split in [1u32, 2, 8] {
            let (l, _) = scratch_layout(&config, config.experts, 300, 1000, 131, split).unwrap();
            assert!(l.topk_expert - l.logits >= u64::from(split) * 300 * 10 * 4, "split {split}");
        }
        let (one, total_one) = scratch_layout(&config, config.experts, 300, 1000, 131, 1).unwrap();
        let (eight, total_eight) =
            scratch_layout(&config, config.experts, 300, 1000, 131, 8).unwrap();
        assert_eq!(eight.topk_expert - one.topk_expert, total_eight - total_one);
    }

    /// A two-rank paper layer's plan at 64 blocks a rank, no GPU needed.
    fn test_plan() -> Plan {
        let config = MoeConfig { world: 2, experts: 8, ..MoeConfig::default() };
        let spec = MoeSpec::for_config(&config, 64);
        let layout = HeapLayout::new(config.geometry(spec.tile).unwrap()).unwrap();
        let (scratch, scratch_bytes) =
            scratch_layout(&config, config.experts, 64, 1024, 63, 1).unwrap();
        Plan {
            map: config.expert_map().unwrap(),
            protocol: config.clone(),
            virtual_experts: None,
            config,
            spec,
            layout,
            scratch,
            scratch_bytes,
            ranks_per_gpu: 1,
            blocks_per_rank: 64,
            remote_copiers: 15,
            skipped: Vec::new(),
            fallback: Vec::new(),
        }
    }

    #[test]
    fn the_description_names_the_kernel_and_any_fallback() {
        let plan = test_plan();
        let label = plan.spec.label();
        assert_eq!(plan.describe(), format!("kernel: {label} (63 processor blocks a rank)"));
        let plan = Plan { skipped: vec!["hopper-image".into()], ..test_plan() };
        let line = plan.describe();
        assert!(line.starts_with(&format!("kernel: {label} ")), "{line}");
        assert!(line.contains("fell back from hopper-image (register spills"), "{line}");
        let plan = Plan { fallback: vec!["FDM_FRESH_TID".into()], ..test_plan() };
        let line = plan.describe();
        assert!(line.contains("compiled through its spill fallback (FDM_FRESH_TID"), "{line}");
    }

    #[test]
    fn timeout_reports_name_the_role_and_what_it_waited_for() {
        let plan = test_plan();
        let diag = |role, what, index, seen| Diag {
            status: 1,
            abort: 1,
            rank: 1,
            role,
            what,
            index,
            expected_epoch: 7,
            pad: 0,
            seen,
        };
        // A given routing's bad expert: the router role, the token, the expert seen.
        assert_eq!(
            timeout_report(&diag(4, 7, 3, 9), &plan).to_string(),
            "rank 1 router timed out waiting for a valid given routing (an expert out of range \
             or chosen twice) in token #3 (expected epoch 7, last seen 0x9)"
        );
        // A dispatch signal names its source rank and local expert (4 local experts a rank).
        assert_eq!(
            timeout_report(&diag(1, 0, 6, 0), &plan).awaited,
            "dispatch signal from rank 1 for local expert 2"
        );
        // Every role and wait the kernel can name has a name here.
        assert_eq!(ROLES[4].0, "FDM_ROLE_ROUTER");
        assert_eq!(WAITS[7].0, "FDM_WAIT_INVALID_ROUTING");
        assert_eq!(timeout_report(&diag(9, 9, 0, 0), &plan).role, "unknown role");
    }
}
