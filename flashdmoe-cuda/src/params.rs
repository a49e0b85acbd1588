//! The persistent kernel's launch parameters, diagnostics and trace records, as `#[repr(C)]`
//! Rust structs, plus the generated C header (`fdm_params.h`) that mirrors them.
//!
//! Invariant: the C side is *generated* from the field tables below and carries a
//! `static_assert` on every size and field offset, so a drift between Rust and CUDA is a JIT
//! compile error, never a silent misread.

use std::fmt::Write;
use std::mem::{align_of, offset_of, size_of};

use flashdmoe_proto::{CField, LayoutParams, c_struct};

use crate::tma::TensorMap;

/// Most ranks a world may have (size of the peer heap table in the parameters).
pub const MAX_RANKS: usize = 64;

/// Local ranks of a launch whose GEMM1 reads its A through a tensor map
/// (`KernelParams::tmap_inter`, and `tmap_return` for the experiment `FDM_TMA_STORE_GEMM1`):
/// two arrays of this many maps keep the parameter block at 3.4 of the 4 KiB it may hold, and
/// one GPU rarely runs more virtual ranks.
pub const INTER_MAPS: usize = 8;

/// Roles named in the kernel's diagnostics (`fdm_diag::role`).
pub const ROLES: [(&str, &str); 5] = [
    ("FDM_ROLE_SCHEDULER", "scheduler"),
    ("FDM_ROLE_DISPATCH_SUBSCRIBER", "dispatch subscriber"),
    ("FDM_ROLE_RETURN_SUBSCRIBER", "return subscriber"),
    ("FDM_ROLE_PROCESSOR", "processor"),
    ("FDM_ROLE_ROUTER", "router"),
];

/// What a role waited for (`fdm_diag::what`).
pub const WAITS: [(&str, &str); 13] = [
    ("FDM_WAIT_DISPATCH_SIGNAL", "dispatch signal"),
    ("FDM_WAIT_RETURN_SIGNAL", "return signal"),
    ("FDM_WAIT_TASK_READY", "task ready flag"),
    ("FDM_WAIT_PROCESSOR", "a free processor"),
    ("FDM_WAIT_COMPLETION", "task completions"),
    ("FDM_WAIT_MAILBOX", "a task or the stop in mailbox"),
    ("FDM_WAIT_CORRUPT_SIGNAL", "a valid signal (corrupt payload seen)"),
    (
        "FDM_WAIT_INVALID_ROUTING",
        "a valid given routing (an expert out of range or chosen twice) in token",
    ),
    ("FDM_WAIT_PAIR_PEER", "its 2-CTA cluster peer at the start of a paired task, processor"),
    (
        "FDM_WAIT_ROW_TILE",
        "the GEMM0 tiles of a GEMM1 task's row tile (the second wave, posted before them), \
         processor",
    ),
    (
        "FDM_WAIT_FIRST_WAVE",
        "the OS block's post of the first-wave task it took from the placement (experiment \
         FDM_SELF_WAVE; seen: the posted task, or the mailbox count on a timeout), processor",
    ),
    (
        "FDM_WAIT_CHUNK_COUNTS",
        "an earlier routing chunk's counts (experiment FDM_STREAM, placer.cuh; seen: that \
         chunk's flag), chunk",
    ),
    (
        "FDM_WAIT_PLACEMENT",
        "every routing chunk placed (experiment FDM_STREAM, placer.cuh; seen: the chunks \
         placed), of chunks",
    ),
];

/// Index of `FDM_WAIT_CORRUPT_SIGNAL` in [`WAITS`].
pub const WAIT_CORRUPT_SIGNAL: u32 = 6;

/// The kernel's first-failure record (`fdm_diag`); all zero when the forward succeeded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Diag {
    /// 0 = ok, 1 = a role gave up.
    pub status: u32,
    /// Raised by the first failure; every spin-wait checks it and exits.
    pub abort: u32,
    /// Global rank of the role that gave up.
    pub rank: u32,
    /// Index into [`ROLES`].
    pub role: u32,
    /// Index into [`WAITS`].
    pub what: u32,
    /// Which signal / task / processor (meaning depends on `what`).
    pub index: u32,
    /// The epoch the role expected.
    pub expected_epoch: u32,
    /// Padding.
    pub pad: u32,
    /// The value last seen.
    pub seen: u64,
}

/// One executed task (`fdm_trace_record`), indexed by task slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct TraceRecord {
    /// `%globaltimer` at task start, ns.
    pub start_ns: u64,
    /// `%globaltimer` at task end, ns.
    pub end_ns: u64,
    /// Processor index within the rank.
    pub processor: u32,
    /// Task slot.
    pub task: u32,
    /// The task's first in-task mark, ns after `start_ns` (0: not marked: the mma.sync engine,
    /// a combine in registers): a GEMM task's main loop end; a streamed combine's slot table
    /// looked up and handed to the producer.
    pub mark1_ns: u32,
    /// The second: a GEMM task's results stored (before their fences and publication); a
    /// streamed combine's first fill of returned rows landed in shared memory (0: not marked).
    pub mark2_ns: u32,
}

/// Byte offsets of the per-rank scratch arrays (`fdm_scratch_layout`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ScratchLayout {
    /// `f32 [T][E]` router logits.
    pub logits: u64,
    /// `u32 [T][k]` chosen experts.
    pub topk_expert: u64,
    /// `f32 [T][k]` combine weights.
    pub topk_weight: u64,
    /// `u32 [T][k]` row of each slot in its packet, or `u32::MAX` if dropped.
    pub slot_row: u64,
    /// `u32 [chunks][E]` routed pairs per 256-token chunk and expert.
    pub chunk_counts: u64,
    /// `u32 [E][capacity]` kept tokens per expert, ascending.
    pub expert_tokens: u64,
    /// `f32 [E][capacity]` the routing weight of each kept row (dispatched with it: the
    /// owner's GEMM1 scales the row's output by it).
    pub expert_weights: u64,
    /// `u32 [E]` rows sent to each expert.
    pub packet_rows: u64,
    /// `u32 [E]` rows of each packet copied so far (reset every forward; the copy that
    /// completes a packet raises its dispatch signal).
    pub packet_copied: u64,
    /// `fdm_task [max_tasks]` the task queue.
    pub tasks: u64,
    /// `u32 [max_tasks]` ready flags (= epoch when published).
    pub task_ready: u64,
    /// `fdm_trace_record [max_tasks]`.
    pub trace: u64,
    /// `u32 [processors][2]` mailbox slots (the two-slot handshake, core's `runtime::Mailbox`).
    pub mailbox: u64,
    /// `u32 [processors]` tasks assigned per processor.
    pub assigned: u64,
    /// `u32 [processors]` tasks completed per processor.
    pub completed: u64,
    /// `u32 [chunks]` a routing chunk's counts are in `chunk_counts` when its flag holds the
    /// epoch (experiment `FDM_STREAM`, placer.cuh; never reset).
    pub chunk_ready: u64,
    /// `u32 [E][capacity]` rows placed into each row tile of each packet, the first
    /// `ceil(capacity / bm)` of each expert's (experiment `FDM_STREAM`: core's
    /// `runtime::Placer` placed counters; reset every forward).
    pub placed: u64,
    /// `u32 [CONTROL_WORDS]` control words (the task log's tails, kernel start time, phase
    /// marks; `Control` in `kernels/heap.cuh`).
    pub control: u64,
}

/// The kernel's single by-value parameter (`fdm_params`), passed as `__grid_constant__`.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(128))]
pub struct KernelParams {
    /// TMA map of the up projections `[E * I][H]` (Hopper engine; zero otherwise).
    pub tmap_up: TensorMap,
    /// TMA map of the gate projections `[E * I][H]` (Hopper engine, SwiGLU; zero otherwise).
    pub tmap_gate: TensorMap,
    /// TMA map of the down projections `[E * H][I]` (Hopper engine; zero otherwise).
    pub tmap_down: TensorMap,
    /// TMA maps of local rank i's intermediate rows `[world * local_experts * capacity][I]`
    /// in boxes of a tile's rows: GEMM1 loads its A through them (Hopper engine; the first
    /// `inter_maps` are valid, the rest zero).
    pub tmap_inter: [TensorMap; INTER_MAPS],
    /// TMA maps of local rank i's return rows `[world * local_experts * capacity][H]` in boxes
    /// of a tile's rows: the experiment `FDM_TMA_STORE_GEMM1` stores a GEMM1 tile for a source
    /// on this GPU through them (Hopper engine; the first `return_maps` are valid, the rest
    /// zero).
    pub tmap_return: [TensorMap; INTER_MAPS],
    /// The symmetric heap layout.
    pub layout: LayoutParams,
    /// Per-rank scratch layout.
    pub scratch_layout: ScratchLayout,
    /// Device address of every rank's heap (peer table), indexed by global rank.
    pub heaps: [u64; MAX_RANKS],
    /// `[local ranks][T][H]` inputs.
    pub x: u64,
    /// `[local ranks][T][H]` outputs.
    pub y: u64,
    /// `[E][H]` router.
    pub router: u64,
    /// `[weight slots][I][H]` up projections: this GPU's ranks' experts, rank-major
    /// (`layer.rs` `weight_slots`), a rank's shared-expert parts after its routed experts.
    pub w_up: u64,
    /// `[E][I][H]` gate projections (SwiGLU) or 0.
    pub w_gate: u64,
    /// `[E][H][I]` down projections.
    pub w_down: u64,
    /// `[E][I]` up bias or 0.
    pub b_up: u64,
    /// `[E][I]` gate bias or 0.
    pub b_gate: u64,
    /// `[E][H]` down bias or 0.
    pub b_down: u64,
    /// `[E]` router bias added to the logits (`FDM_ROUTER_BIAS`) or 0.
    pub router_bias: u64,
    /// `[E]` selection bias added to the scores for the choice only (`FDM_SEL_BIAS`) or 0.
    pub selection_bias: u64,
    /// `[H]` the shared experts' gate row (`FDM_SHARED_GATE`: Qwen's `shared_expert_gate`) or 0.
    pub shared_gate: u64,
    /// `u32 [E]` owner rank of each expert.
    pub expert_owner: u64,
    /// `u32 [E]` local index of each expert on its owner.
    pub expert_local: u64,
    /// `u32 [world][local_experts]` global expert of each slot.
    pub local_to_global: u64,
    /// `u32 [world]` experts owned by each rank.
    pub local_experts_of: u64,
    /// Scratch of local rank 0; rank `i`'s is at `scratch + i * scratch_bytes`.
    pub scratch: u64,
    /// Bytes of one rank's scratch.
    pub scratch_bytes: u64,
    /// `fdm_diag` of this device.
    pub diag: u64,
    /// `u32` on this device: the epoch of its last forward (0 before the first). A launch's
    /// epoch is the next one (`Epoch::next`), which its block 0 stores back at its start, so
    /// forwards advance their epoch on the device without the host: a captured CUDA graph
    /// replays correctly.
    pub epoch_word: u64,
    /// `u32 [local ranks][tokens][k]` experts chosen by the caller (routing given: the
    /// router is skipped), or 0: the layer's router chooses.
    pub given_experts: u64,
    /// `f32 [local ranks][tokens][k]` the caller's combine weights, with `given_experts`.
    pub given_weights: u64,
    /// Deadline of every spin-wait, ns without progress.
    pub timeout_ns: u64,
    /// Tokens of every local rank this forward, at most the layout's `tokens` (whose value
    /// stays the row stride of every per-token array but `x` and `y`).
    pub tokens: u32,
    /// Global rank of this device's first rank.
    pub first_rank: u32,
    /// Ranks on this device (virtual ranks).
    pub local_ranks: u32,
    /// Blocks per rank partition (1 OS block + processors).
    pub blocks_per_rank: u32,
    /// Record per-task trace records.
    pub trace: u32,
    /// Rows an expert keeps from a rank this forward (capacity drops above it), at most the
    /// layout's `capacity` (the row stride of packets).
    pub capacity: u32,
    /// Processors per rank that copy only the rows bound for other GPUs in A4 (1 up to the
    /// rank's processors: `CudaOptions::remote_copiers`, a quarter by default).
    pub remote_copiers: u32,
    /// Local ranks whose GEMM1 loads its A through `tmap_inter` (0 up to [`INTER_MAPS`]; the
    /// others' producers copy the rows with `cp.async`).
    pub inter_maps: u32,
    /// Local ranks whose return rows `tmap_return` maps (0 up to [`INTER_MAPS`]).
    pub return_maps: u32,
    /// Padding to the 128-byte alignment the tensor maps give the struct.
    pub tail: [u32; 5],
}

// SAFETY: every field is a plain integer (or an array / `#[repr(C)]` struct of them), so
// all-zero bytes are a valid value.
unsafe impl bytemuck::Zeroable for KernelParams {}
// SAFETY: `#[repr(C)]`, `Copy`, no references, and no padding: the nineteen 128-byte tensor maps
// come first (each 128-aligned), then every field is 8-byte sized and aligned except the nine
// `u32`s (36 bytes) and the explicit `tail` (20 bytes) that ends the struct
// on its 128-byte alignment; the nested `LayoutParams` (14 u32 then 9 u64) and `ScratchLayout`
// (18 u64) have none either; the size and offset assertions below pin it.
unsafe impl bytemuck::Pod for KernelParams {}

const _: () = assert!(size_of::<KernelParams>() == 3456);
const _: () = assert!(offset_of!(KernelParams, layout) == 2432);
const _: () = assert!(offset_of!(KernelParams, tail) == 2432 + 1004);

macro_rules! fields {
    ($ty:ty: $($field:ident: $cty:expr),* $(,)?) => {
        &[$((stringify!($field), $cty, offset_of!($ty, $field))),*]
    };
}

const DIAG_FIELDS: &[CField] = fields!(Diag:
    status: "unsigned int", abort: "unsigned int", rank: "unsigned int", role: "unsigned int",
    what: "unsigned int", index: "unsigned int", expected_epoch: "unsigned int", pad: "unsigned int",
    seen: "unsigned long long");

const TRACE_FIELDS: &[CField] = fields!(TraceRecord:
    start_ns: "unsigned long long", end_ns: "unsigned long long", processor: "unsigned int",
    task: "unsigned int", mark1_ns: "unsigned int", mark2_ns: "unsigned int");

const SCRATCH_FIELDS: &[CField] = fields!(ScratchLayout:
    logits: "unsigned long long", topk_expert: "unsigned long long", topk_weight: "unsigned long long",
    slot_row: "unsigned long long", chunk_counts: "unsigned long long", expert_tokens: "unsigned long long",
    expert_weights: "unsigned long long",
    packet_rows: "unsigned long long", packet_copied: "unsigned long long", tasks: "unsigned long long", task_ready: "unsigned long long",
    trace: "unsigned long long", mailbox: "unsigned long long", assigned: "unsigned long long",
    completed: "unsigned long long", chunk_ready: "unsigned long long", placed: "unsigned long long",
    control: "unsigned long long");

const PARAM_FIELDS: &[CField] = fields!(KernelParams:
    tmap_up: "fdm_tensor_map", tmap_gate: "fdm_tensor_map", tmap_down: "fdm_tensor_map",
    tmap_inter: "fdm_tensor_map@[FDM_INTER_MAPS]", tmap_return: "fdm_tensor_map@[FDM_INTER_MAPS]", layout: "fdm_layout", scratch_layout: "fdm_scratch_layout", heaps: "unsigned long long@[FDM_MAX_RANKS]",
    x: "const void*", y: "void*", router: "const void*", w_up: "const void*", w_gate: "const void*",
    w_down: "const void*", b_up: "const void*", b_gate: "const void*", b_down: "const void*",
    router_bias: "const void*", selection_bias: "const void*", shared_gate: "const void*", expert_owner: "const unsigned int*", expert_local: "const unsigned int*",
    local_to_global: "const unsigned int*", local_experts_of: "const unsigned int*",
    scratch: "char*", scratch_bytes: "unsigned long long", diag: "fdm_diag*",
    epoch_word: "unsigned int*", given_experts: "const unsigned int*", given_weights: "const float*", timeout_ns: "unsigned long long", tokens: "unsigned int", first_rank: "unsigned int",
    local_ranks: "unsigned int", blocks_per_rank: "unsigned int", trace: "unsigned int",
    capacity: "unsigned int", remote_copiers: "unsigned int", inter_maps: "unsigned int",
    return_maps: "unsigned int", tail: "unsigned int@[5]");

/// Control words of a rank's scratch (`FDM_CONTROL_WORDS`; `Control` in `kernels/heap.cuh`
/// names them).
pub const CONTROL_WORDS: u64 = 32;

/// The control words the host reads, by index: a mirror of `Control` in `kernels/heap.cuh`
/// (the test `control_words_match_the_kernels_enum` holds the two together). The `*_NS` words
/// are phase marks (ns since the kernel start); the others are the low halves of u64 pairs.
pub mod control {
    /// `%globaltimer` at the kernel's start (`kKernelStartLo`, with the next word).
    pub const KERNEL_START: usize = 1;
    /// A1 done (`kRoutedNs`).
    pub const ROUTED_NS: usize = 3;
    /// A2 done (`kChosenNs`).
    pub const CHOSEN_NS: usize = 4;
    /// A3 done (`kPlacedNs`).
    pub const PLACED_NS: usize = 5;
    /// The rank's last dispatch signal raised (`kDispatchedNs`).
    pub const DISPATCHED_NS: usize = 6;
    /// Every task completed (`kStoppedNs`).
    pub const STOPPED_NS: usize = 8;
    /// The rank's last warp ended (`kExitNs`).
    pub const EXIT_NS: usize = 9;
    /// The latest block start of the launch (`kLastBlockStart`, raw timer pair).
    pub const LAST_BLOCK_START: usize = 10;
    /// The latest block done with the counter reset (`kLastResetDone`, raw timer pair).
    pub const LAST_RESET_DONE: usize = 12;
    /// The latest block done with its router jobs (`kLastRouterDone`, raw timer pair).
    pub const LAST_ROUTER_DONE: usize = 14;
    /// Every token's slots chosen (`kTokensNs`: A2's first half, or the latest block of the
    /// thread-a-token form, topk.cuh `lanes_route`).
    pub const TOKENS_NS: usize = 17;
    /// 1 where the forward's A2 routed a token a thread, 0 a warp a token (`kRouteThreads`;
    /// topk.cuh `lanes_route`).
    pub const ROUTE_THREADS: usize = 18;
    /// The first wave: the GEMM0 tasks of the packets read in place that the OS block posted to
    /// processors itself, one each (`kFirstWave`; subscriber.cuh `enqueue_in_place`).
    pub const FIRST_WAVE: usize = 19;
    /// The scheduler's first round that handed out tasks (`kFirstHandoutNs`; scheduler.cuh).
    pub const FIRST_HANDOUT_NS: usize = 21;
    /// When the first wave was in the processors' mailboxes (`kWavePostedNs`).
    pub const WAVE_POSTED_NS: usize = 22;
    /// The second wave: GEMM1 tasks the OS block posted as processors' task number 1
    /// (`kSecondWave`; subscriber.cuh `post_gemm1_early`).
    pub const SECOND_WAVE: usize = 23;
    /// The third wave: combine tasks the OS block wrote at fixed slots, each processor q below
    /// their count posting combine q as its own task number 2 (`kThirdWave`; subscriber.cuh
    /// `post_combines`).
    pub const THIRD_WAVE: usize = 28;
    /// A return subscriber's last publication of combine tasks (`kCombinesQueuedNs`).
    pub const COMBINES_QUEUED_NS: usize = 25;
    /// The scheduler's last round that handed combines out (`kCombinesHandedNs`).
    pub const COMBINES_HANDED_NS: usize = 26;
    /// Tasks run as halves of a cluster's pair (`kPairedTasks`; processor_wgmma.cuh
    /// `align_for_pair`).
    pub const PAIRED_TASKS: usize = 20;
    /// Routing chunks placed by the streamed placement (`kChunksPlaced`; experiment
    /// `FDM_STREAM`, placer.cuh; 0 in a forward that does not stream).
    pub const CHUNKS_PLACED: usize = 30;
    /// The streamed placement's first row tile queued (`kFirstTileNs`).
    pub const FIRST_TILE_NS: usize = 31;
}

/// The text of `fdm_params.h` (needs `fdm_proto.h` included first).
pub fn params_header() -> String {
    let mut out = String::from(
        "// fdm_params.h -- GENERATED by flashdmoe_cuda::params::params_header() at JIT time.\n\
         #pragma once\n\n",
    );
    let _ = writeln!(out, "#define FDM_MAX_RANKS {MAX_RANKS}");
    let _ = writeln!(out, "#define FDM_INTER_MAPS {INTER_MAPS}");
    let _ = writeln!(out, "#define FDM_CONTROL_WORDS {CONTROL_WORDS}u");
    for (i, (name, _)) in ROLES.iter().enumerate() {
        let _ = writeln!(out, "#define {name} {i}u");
    }
    for (i, (name, _)) in WAITS.iter().enumerate() {
        let _ = writeln!(out, "#define {name} {i}u");
    }
    out.push('\n');
    // The TMA descriptor (crate::tma::TensorMap): opaque to the kernel, 128-byte aligned.
    let _ = writeln!(
        out,
        "typedef struct alignas({align}) fdm_tensor_map {{\n    unsigned long long opaque[16];\n}} fdm_tensor_map;\n\
         static_assert(sizeof(fdm_tensor_map) == {size}, \"fdm_tensor_map size drifted from Rust\");\n\
         static_assert(alignof(fdm_tensor_map) == {align}, \"fdm_tensor_map alignment drifted from Rust\");\n",
        size = size_of::<crate::tma::TensorMap>(),
        align = align_of::<crate::tma::TensorMap>(),
    );
    c_struct(&mut out, "fdm_diag", DIAG_FIELDS, size_of::<Diag>(), align_of::<Diag>());
    c_struct(
        &mut out,
        "fdm_trace_record",
        TRACE_FIELDS,
        size_of::<TraceRecord>(),
        align_of::<TraceRecord>(),
    );
    c_struct(
        &mut out,
        "fdm_scratch_layout",
        SCRATCH_FIELDS,
        size_of::<ScratchLayout>(),
        align_of::<ScratchLayout>(),
    );
    c_struct(
        &mut out,
        "fdm_params",
        PARAM_FIELDS,
        size_of::<KernelParams>(),
        align_of::<KernelParams>(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_words_match_the_kernels_enum() {
        let heap = crate::kernels::HEADERS.iter().find(|h| h.name == "heap.cuh").unwrap().text;
        let body = heap.split("enum Control : unsigned {").nth(1).unwrap();
        let body = body.split("};").next().unwrap();
        let value = |name: &str| -> usize {
            let at = body.find(&format!("{name} = ")).unwrap_or_else(|| panic!("{name} missing"));
            let rest = &body[at + name.len() + 3..];
            rest[..rest.find(',').unwrap()].trim().parse().unwrap()
        };
        for (name, index) in [
            ("kKernelStartLo", control::KERNEL_START),
            ("kRoutedNs", control::ROUTED_NS),
            ("kChosenNs", control::CHOSEN_NS),
            ("kPlacedNs", control::PLACED_NS),
            ("kDispatchedNs", control::DISPATCHED_NS),
            ("kStoppedNs", control::STOPPED_NS),
            ("kExitNs", control::EXIT_NS),
            ("kLastBlockStart", control::LAST_BLOCK_START),
            ("kLastResetDone", control::LAST_RESET_DONE),
            ("kLastRouterDone", control::LAST_ROUTER_DONE),
            ("kTokensNs", control::TOKENS_NS),
            ("kRouteThreads", control::ROUTE_THREADS),
            ("kFirstWave", control::FIRST_WAVE),
            ("kPairedTasks", control::PAIRED_TASKS),
            ("kChunksPlaced", control::CHUNKS_PLACED),
            ("kFirstTileNs", control::FIRST_TILE_NS),
            ("kFirstHandoutNs", control::FIRST_HANDOUT_NS),
            ("kWavePostedNs", control::WAVE_POSTED_NS),
            ("kSecondWave", control::SECOND_WAVE),
            ("kThirdWave", control::THIRD_WAVE),
            ("kCombinesQueuedNs", control::COMBINES_QUEUED_NS),
            ("kCombinesHandedNs", control::COMBINES_HANDED_NS),
        ] {
            assert_eq!(value(name), index, "{name}");
            assert!((index as u64) < CONTROL_WORDS, "{name}");
        }
    }

    #[test]
    fn header_declares_every_field_in_order() {
        let h = params_header();
        let params = h.split("typedef struct fdm_params {").nth(1).unwrap();
        let mut last = 0;
        for (field, _, _) in PARAM_FIELDS {
            let pos = params
                .find(&format!(" {field};"))
                .or_else(|| params.find(&format!(" {field}[")))
                .unwrap_or_else(|| panic!("{field} missing"));
            assert!(pos >= last, "{field} out of order");
            last = pos;
        }
        assert!(h.contains("unsigned long long heaps[FDM_MAX_RANKS];"));
        assert_eq!(size_of::<Diag>(), 40);
        assert_eq!(size_of::<TraceRecord>(), 32);
    }
}
