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
//!   ([`crate::spec::COMPUTED_FEATURES`]); a layer it does not compute is refused at build
//!   ([`crate::spec::check_computed`]), naming each field, before any device is touched.
//! * Shared experts run as `m` virtual experts a rank (core's `virtual_experts`): the heap
//!   layout, expert tables, weight slots, scratch and statistics are the protocol config's
//!   (`E'` experts, `k + m` slots; `Plan::protocol`); the routing a forward reports, and what
//!   the oracle checks, is the router's (`k` slots over `E`).
//!
//! ## The parts
//!
//! Here: the options, the plan, a GPU's buffers, and the forward (stage, launch, collect).
//! `build` chooses and compiles the specialisation and sets up every GPU; `upload` a GPU's
//! buffers, weight slots, tables and tensor maps; `readback` what a forward leaves behind
//! (phase marks, trace, diagnostics); `process` one process per GPU; `resident` the
//! device-resident forward.

use std::sync::{Mutex, PoisonError};
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
    RankOutput, RoutingError, TraceEvent,
};
use flashdmoe_proto::{Epoch, HeapLayout, SourcePlan, div_ceil, signal};

use crate::device::Device;
use crate::error::CudaError;
use crate::launch::{Kernel, LaunchShape};
use crate::params::{INTER_MAPS, KernelParams, MAX_RANKS, ScratchLayout, TraceRecord};
use crate::spec::{CombineForm, EngineChoice, MoeSpec, PairChoice, ROUTING_CHUNK, TileChoice};
use crate::tma::TensorMap;

mod build;
mod process;
mod readback;
mod resident;
mod upload;
pub use process::{DEVICE_VAR, GroupOptions, ProcessGroup, TEST_DIE, parse_die};
use process::{Heaps, PeerHeaps};
pub use readback::{PhaseTimes, TaskMarks};
use readback::{bytemuck_diag, timeout_report};
pub use resident::{DeviceIo, DeviceRouting};

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
        chunk_ready: next("chunk_ready", &[chunks, 4])?,
        placed: next("placed", &[e, capacity as u64, 4])?,
        control: next("control", &[crate::params::CONTROL_WORDS, 4])?,
    };
    Ok((layout, cursor.max(256)))
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
            tail: [0; 5],
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
mod tests;
