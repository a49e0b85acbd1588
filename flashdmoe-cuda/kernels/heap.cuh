// heap.cuh -- one rank's view of its memory (core's `runtime::SymmetricHeap` plus the
// backend's scratch): its heap and its peers' through the peer table, its scratch arrays
// (routing, task queue, mailboxes, trace) at the offsets the host laid out
// (fdm_scratch_layout), its input and output rows, the control words, and the first-failure
// diagnostics record.
#pragma once

#include "sync.cuh"

// Control words in scratch (reset at the start of every forward).
// Phase marks are nanoseconds since the kernel start (CudaLayer::phase_times reads them):
// A1 (router) done, A2 (top-k) done (kTokensNs: every token's slots chosen), A3
// (placement) done, last dispatch signal raised, every task completed (the scheduler saw the
// bound), the last warp of the rank's blocks ended. The indices are mirrored in params.rs
// (`control`), whose test holds the two together.
enum Control : unsigned {
  kTaskTail = 0,
  kKernelStartLo = 1,
  kKernelStartHi = 2,
  kRoutedNs = 3,
  kChosenNs = 4,
  kPlacedNs = 5,
  kDispatchedNs = 6,
  kEpoch = 7,  // this forward's epoch, from block 0 at the kernel start (moe.cu)
  kStoppedNs = 8,
  kExitNs = 9,
  // Words 10-11: the raw %globaltimer of the latest block start of the launch (a 64-bit
  // atomicMax; never reset: a later launch's starts are later). Against kKernelStart it says
  // how long the grid took to start (phase A's first barrier waits for the last block).
  kLastBlockStart = 10,
  // Words 12-13 and 14-15, the same way: the latest block done with its share of the counter
  // reset, and with its router GEMM jobs (A1 before its grid barrier).
  kLastResetDone = 12,
  kLastRouterDone = 14,
  kCombineTail = 16,  // the combine log's tail (queue.cuh); kTaskTail is the GEMM log's
  kTokensNs = 17,
  kRouteThreads = 18,  // 1 where this forward's A2 routed a token a thread (topk.cuh lanes_route)
  // The first wave: the OS block posted GEMM log tasks base .. base + n - 1 to processors
  // 0 .. n - 1 itself (subscriber.cuh enqueue_in_place); for the host only.
  kFirstWave = 19,
  // Tasks run as halves of a cluster's pair this forward (FDM_PAIRS: processor_wgmma.cuh
  // align_for_pair, one count a task); for the host only.
  kPairedTasks = 20,
  // The scheduler's first round that handed out tasks (ns since the kernel start; scheduler.cuh):
  // after the first wave, how late the processors' second tasks could reach their mailboxes.
  kFirstHandoutNs = 21,
  // When the OS block's first wave was in the processors' mailboxes (ns since the kernel
  // start: the latest warp done publishing its share; subscriber.cuh enqueue_in_place).
  kWavePostedNs = 22,
  // The second wave: GEMM1 tasks the OS block posted as processors 0 .. n - 1's task number 1
  // (subscriber.cuh post_gemm1_early); for the host only.
  kSecondWave = 23,
  // This forward's epoch where the OS block posted every GEMM1 task of the forward itself
  // (queue.cuh gemm1_posted_early; an older epoch otherwise: never reset).
  kGemm1Early = 24,
  // The combines' hand-off (ns since the kernel start; the latest wins): a return subscriber's
  // last publication of combine tasks (subscriber.cuh return_subscriber), and the scheduler's
  // last round that handed combines out (scheduler.cuh). With the trace's last GEMM1 end and
  // last combine start they split the GEMM1 -> combine hand-off by role.
  kCombinesQueuedNs = 25,
  kCombinesHandedNs = 26,
  // The third wave: this forward's epoch where the OS block wrote every combine task at a
  // fixed slot and processor q < ncomb posts combine q as its own task number 2 (queue.cuh
  // combines_posted; an older epoch otherwise: never reset), and how many combines it posted
  // so (subscriber.cuh post_combines; for the host only).
  kCombinesPosted = 27,
  kThirdWave = 28,
  // The streamed placement (experiment FDM_STREAM, placer.cuh): the next routing chunk to
  // claim, the chunks placed so far, and when the first row tile's GEMM0 tasks were queued (ns
  // since the kernel start: the first queue writes it over its reset 0); all reset every
  // forward, so one that does not stream reads 0 chunks placed.
  kChunkTicket = 29,
  kChunksPlaced = 30,
  kFirstTileNs = 31,
  kControlEnd,
};
static_assert(kControlEnd <= FDM_CONTROL_WORDS, "params.rs: CONTROL_WORDS");

/// Raises the 64-bit raw %globaltimer word pair at `word` of rank r's control words to now
/// (atomicMax: the latest caller wins; no reset needed, a later launch's times are later).
__device__ __forceinline__ void mark_raw_latest(char* control, unsigned word) {
  atomicMax(reinterpret_cast<unsigned long long*>(control) + word / 2, now_ns());
}

/// Everything one rank's code needs, derived from the launch parameters.
struct Rank {
  const fdm_params* p;
  unsigned local;   // index among this device's ranks
  unsigned global;  // global rank
  char* heap;       // this rank's heap
  char* scratch;    // this rank's scratch
  unsigned nproc;   // processors of this rank
  unsigned epoch;   // this forward's (Control::kEpoch): valid after phase A's first grid barrier

  __device__ char* heap_of(unsigned rank) const { return reinterpret_cast<char*>(p->heaps[rank]); }
  /// Whether the host mapped this rank's intermediate rows for the TMA (`tmap_inter`): its
  /// GEMM1s then load their A as boxes, and its GEMM0s' stores are fenced for that proxy.
  __device__ bool maps_intermediate() const { return local < p->inter_maps; }
  template <class T> __device__ T* at(unsigned long long offset) const {
    return reinterpret_cast<T*>(scratch + offset);
  }
  __device__ float* logits() const { return at<float>(p->scratch_layout.logits); }
  __device__ unsigned* topk_expert() const { return at<unsigned>(p->scratch_layout.topk_expert); }
  __device__ float* topk_weight() const { return at<float>(p->scratch_layout.topk_weight); }
  __device__ unsigned* slot_row() const { return at<unsigned>(p->scratch_layout.slot_row); }
  __device__ unsigned* chunk_counts() const { return at<unsigned>(p->scratch_layout.chunk_counts); }
  __device__ unsigned* expert_tokens() const { return at<unsigned>(p->scratch_layout.expert_tokens); }
  __device__ float* expert_weights() const { return at<float>(p->scratch_layout.expert_weights); }
  __device__ unsigned* packet_rows() const { return at<unsigned>(p->scratch_layout.packet_rows); }
  __device__ unsigned* packet_copied() const { return at<unsigned>(p->scratch_layout.packet_copied); }
  __device__ fdm_task* tasks() const { return at<fdm_task>(p->scratch_layout.tasks); }
  __device__ unsigned* task_ready() const { return at<unsigned>(p->scratch_layout.task_ready); }
  __device__ fdm_trace_record* trace() const { return at<fdm_trace_record>(p->scratch_layout.trace); }
  __device__ unsigned* mailbox() const { return at<unsigned>(p->scratch_layout.mailbox); }
  __device__ unsigned* assigned() const { return at<unsigned>(p->scratch_layout.assigned); }
  __device__ unsigned* completed() const { return at<unsigned>(p->scratch_layout.completed); }
  __device__ unsigned* control() const { return at<unsigned>(p->scratch_layout.control); }
  __device__ unsigned* chunk_ready() const { return at<unsigned>(p->scratch_layout.chunk_ready); }
  __device__ unsigned* placed() const { return at<unsigned>(p->scratch_layout.placed); }
  __device__ const Elem* x() const {
    return reinterpret_cast<const Elem*>(p->x) + (unsigned long long)local * p->tokens * kH;
  }
  __device__ Elem* y() const {
    return reinterpret_cast<Elem*>(p->y) + (unsigned long long)local * p->tokens * kH;
  }
  /// Global expert of this rank's local expert `le` of owner `owner`.
  __device__ unsigned expert_of(unsigned owner, unsigned le) const {
    return p->local_to_global[owner * p->layout.local_experts + le];
  }
  /// Slot of owner `owner`'s local expert `le` in this GPU's weight arrays, which hold only
  /// the experts of this GPU's ranks, rank-major, `local_experts` slots a rank (layer.rs,
  /// `weight_slots`): `owner` is one of this GPU's ranks (tasks run where their expert lives).
  __device__ unsigned weight_slot(unsigned owner, unsigned le) const {
    return (owner - p->first_rank) * p->layout.local_experts + le;
  }
};

__device__ __forceinline__ Rank make_rank(const fdm_params* p, unsigned local) {
  Rank r;
  r.p = p;
  r.local = local;
  r.global = p->first_rank + local;
  r.heap = reinterpret_cast<char*>(p->heaps[r.global]);
  r.scratch = reinterpret_cast<char*>(p->scratch) + (unsigned long long)local * p->scratch_bytes;
  r.nproc = p->blocks_per_rank - 1;
  r.epoch = ld_volatile(reinterpret_cast<const unsigned*>(r.scratch + p->scratch_layout.control) + kEpoch);
  return r;
}

__device__ __forceinline__ unsigned long long kernel_start(const Rank& r) {
  return (unsigned long long)r.control()[kKernelStartLo] | (unsigned long long)r.control()[kKernelStartHi] << 32;
}

/// Control word `word` of every local rank = now (ns since the kernel start), by block 0's
/// thread 0: the phase marks right after a grid barrier (one writer).
__device__ __forceinline__ void mark_phase(const fdm_params* p, Control word) {
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    const unsigned ns = (unsigned)min(now_ns() - kernel_start(make_rank(p, 0)), 0xFFFFFFFFull);
    for (unsigned local = 0; local < p->local_ranks; ++local) make_rank(p, local).control()[word] = ns;
  }
}

/// Raises control word `word` of rank r to now (ns since the kernel start): the phase marks
/// that several threads may reach (the latest wins).
__device__ __forceinline__ void mark_latest(const Rank& r, Control word) {
  atomicMax(&r.control()[word], (unsigned)min(now_ns() - kernel_start(r), 0xFFFFFFFFull));
}

// ─── diagnostics ──────────────────────────────────────────────────────────────────────
__device__ __forceinline__ bool aborted(const fdm_params* p) {
  return ld_volatile(&p->diag->abort) != 0u;
}

/// Records the first timeout of the launch (later ones only see the abort flag).
__device__ void report_timeout(const Rank& r, unsigned role, unsigned what, unsigned index,
                               unsigned long long seen) {
  fdm_diag* d = r.p->diag;
  if (atomicCAS(&d->status, 0u, 1u) == 0u) {
    d->rank = r.global;
    d->role = role;
    d->what = what;
    d->index = index;
    d->expected_epoch = r.epoch;
    d->seen = seen;
    __threadfence_system();
  }
  atomicExch(&d->abort, 1u);
}
