// moe.cu -- the FlashDMoE persistent kernel: one cooperative launch runs a whole MoE layer
// forward (gate, routing, dispatch, GEMM0 + activation, GEMM1, combine) for every rank that
// lives on this device, scheduling its own tile tasks.
//
// Specialised per shape by NVRTC defines (set by flashdmoe-cuda/src/moe.rs, MoeSpec::defines):
//   FDM_MODE   0 bf16 | 1 f16 | 2 f32 on TF32 tensor cores | 3 f32 exact (FFMA)
//   FDM_ACT    0 relu | 1 gelu | 2 SwiGLU (silu-gated, two up matrices)
//   FDM_BIAS   0 | 1
//   FDM_H, FDM_I, FDM_E, FDM_TOPK   hidden, intermediate, experts, experts per token
//   FDM_BM, FDM_BN                  task tile (rows x output columns); BK is the mode's
//   FDM_RENORM 0 | 1                renormalise the combine weights over the chosen k
//   FDM_SMEM_BYTES                  dynamic shared memory the host gives every block
//   FDM_CHUNK                       tokens per routing chunk
//   FDM_FRAG_PIPE   0 | 1 (default)   register-pipelined GEMM0 fragments (0: the spill fallback)
//
// Structure (docs/kernel.md has the full story):
//   Phase A (all blocks of the device, three grid-wide barriers; nothing here waits on
//   another device, so the barriers are local):
//     A1  reset this forward's local counters; router GEMM on tensor cores -> f32 logits.
//     A2  per chunk of FDM_CHUNK tokens: softmax + top-k per token; per expert, the within-chunk
//         position of each routed (token, slot) in token order (deterministic counting).
//     A3  per chunk: global position = prefix over earlier chunks + within-chunk position;
//         kept iff position < capacity (lowest token index wins); the last chunk's block
//         records the packet sizes.
//     A4  (no barrier after it) processor warps copy only the kept rows into the owners'
//         heap dispatch regions, packet by packet; the warp that completes a packet fences
//         and raises its epoch-stamped signal. Rows for other GPUs are copied by a quarter
//         of the processors, so the rest start computing on local packets meanwhile.
//   Phase B (per rank: a partition of blocks_per_rank blocks):
//     block 0 = the OS block. It first raises this rank's zero-row dispatch signals, then:
//     warp 0 = scheduler, warp 1 = dispatch subscriber, warps 2.. = return subscribers.
//     blocks 1.. = processors: take tasks from a two-slot doorbell, run one tile, report.
//
// Memory-ordering contract (mirrors flashdmoe-core's runtime and the proto docs):
//   * data stores, then a fence, then a release store of the signal, both at system scope
//     when the receiver is on another GPU and at GPU scope when it is on this one
//     (fence_for, signal_to); receivers ld.acquire.sys the signal before reading data;
//   * task descriptors: written, then the task's ready flag st.release.gpu = epoch;
//   * doorbells: the scheduler writes the mailbox slot then st.release.gpu the assigned
//     count; processors ld.acquire.gpu it; completion counts likewise in the other direction;
//   * row-tile and combine counters: __threadfence() then atomicAdd; the thread that
//     completes a counter fences again before publishing the follow-up tasks.
// Every spin-wait has a deadline (globaltimer) and an abort flag; the first role to time out
// records who waited for what in the diagnostics record and raises the abort flag.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cooperative_groups.h>

#include "fdm_proto.h"
#include "fdm_params.h"
#include "tile_gemm.cuh"

namespace cg = cooperative_groups;
using namespace flashdmoe::tile;

#ifndef FDM_MODE
#error "FDM_MODE must be defined by the JIT"
#endif

constexpr Mode kMode = static_cast<Mode>(FDM_MODE);
using Elem = typename ModeTraits<kMode>::Elem;
constexpr int kH = FDM_H, kI = FDM_I, kE = FDM_E, kTopK = FDM_TOPK;
constexpr int kBM = FDM_BM, kBN = FDM_BN;
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr bool kGated = FDM_ACT == 2;
constexpr bool kBias = FDM_BIAS != 0;
constexpr int kChunk = FDM_CHUNK;  // tokens per routing chunk (one token per thread in A2)
static_assert(kChunk <= kThreads, "one thread per token of a chunk");
constexpr unsigned kStop = 0xFFFFFFFFu;
constexpr unsigned kDropped = 0xFFFFFFFFu;

// FDM_FRAG_PIPE=0 (the JIT's fallback when the default spills): GEMM0 without
// register-pipelined fragments, which frees the registers the SwiGLU dual-B tile needs.
#ifndef FDM_FRAG_PIPE
#define FDM_FRAG_PIPE 1
#endif
using Gemm0 = TileGemm<kMode, kBM, kBN, ModeTraits<kMode>::kBK, 4, 2, 4, kGated ? 2 : 1,
                       FDM_FRAG_PIPE != 0 && (kMode == Mode::BF16 || kMode == Mode::F16)>;
using Gemm1 = TileGemm<kMode, kBM, kBN, ModeTraits<kMode>::kBK, 4, 2, 4, 1>;
// The router runs in exact f32 when the experts run on TF32: routing decisions and combine
// weights must not depend on TF32's 10-bit mantissa (its FLOPs are a small share).
constexpr Mode kRouterMode = kMode == Mode::TF32 ? Mode::F32Exact : kMode;
using Router = TileGemm<kRouterMode, 64, 64, ModeTraits<kRouterMode>::kBK, 4, 2, 4, 1>;
static_assert(Gemm0::kThreads == kThreads && Gemm1::kThreads == kThreads && Router::kThreads == kThreads,
              "every tile config must use the block's 256 threads");
static_assert(kH % kBN == 0 && kI % kBN == 0, "the JIT only specialises shapes the tiles cover");
static_assert(kTopK >= 1 && kTopK <= kE, "1 <= top_k <= experts");

constexpr int cmax(int a, int b) { return a > b ? a : b; }
/// Dynamic shared memory every block gets (the largest tile config's need).
constexpr int kSmemBytes = cmax(cmax(Gemm0::kSmemBytes, Gemm1::kSmemBytes), Router::kSmemBytes);

static_assert(kSmemBytes <= FDM_SMEM_BYTES, "the host's MoeSpec::smem_bytes must cover every tile config");

// ─── memory-model helpers ─────────────────────────────────────────────────────────────
__device__ __forceinline__ unsigned long long ld_acquire_sys(const unsigned long long* p) {
  unsigned long long v;
  asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void st_release_sys(unsigned long long* p, unsigned long long v) {
  asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}
__device__ __forceinline__ void st_release_gpu(unsigned long long* p, unsigned long long v) {
  asm volatile("st.release.gpu.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}
__device__ __forceinline__ unsigned ld_acquire_gpu(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void st_release_gpu(unsigned* p, unsigned v) {
  asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
/// Whether global rank `rank` lives on this GPU (the launch's ranks are consecutive).
__device__ __forceinline__ bool on_this_gpu(const fdm_params* p, unsigned rank) {
  return rank >= p->first_rank && rank < p->first_rank + p->local_ranks;
}
/// Orders this thread's earlier stores before its later ones for an observer on rank `rank`'s
/// GPU: a GPU-scope fence when that is this GPU (a system-scope fence costs more, and more
/// still while NVLink traffic is in flight), else a system-scope one.
__device__ __forceinline__ void fence_for(const fdm_params* p, unsigned rank) {
  if (on_this_gpu(p, rank)) __threadfence();
  else __threadfence_system();
}
/// Publishes signal word `v` at `sig` in rank `rank`'s heap with release semantics at the
/// narrowest scope that includes its readers (see fence_for).
__device__ __forceinline__ void signal_to(const fdm_params* p, unsigned rank, unsigned long long* sig,
                                          unsigned long long v) {
  if (on_this_gpu(p, rank)) st_release_gpu(sig, v);
  else st_release_sys(sig, v);
}
__device__ __forceinline__ unsigned ld_volatile(const unsigned* p) {
  return *reinterpret_cast<const volatile unsigned*>(p);
}
__device__ __forceinline__ unsigned long long now_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// ─── per-rank views ───────────────────────────────────────────────────────────────────
/// Everything one rank's code needs, derived from the launch parameters.
struct Rank {
  const fdm_params* p;
  unsigned local;   // index among this device's ranks
  unsigned global;  // global rank
  char* heap;       // this rank's heap
  char* scratch;    // this rank's scratch
  unsigned nproc;   // processors of this rank

  __device__ char* heap_of(unsigned rank) const { return reinterpret_cast<char*>(p->heaps[rank]); }
  template <class T> __device__ T* at(unsigned long long offset) const {
    return reinterpret_cast<T*>(scratch + offset);
  }
  __device__ float* logits() const { return at<float>(p->scratch_layout.logits); }
  __device__ unsigned* topk_expert() const { return at<unsigned>(p->scratch_layout.topk_expert); }
  __device__ float* topk_weight() const { return at<float>(p->scratch_layout.topk_weight); }
  __device__ unsigned* slot_row() const { return at<unsigned>(p->scratch_layout.slot_row); }
  __device__ unsigned* chunk_counts() const { return at<unsigned>(p->scratch_layout.chunk_counts); }
  __device__ unsigned* expert_tokens() const { return at<unsigned>(p->scratch_layout.expert_tokens); }
  __device__ unsigned* packet_rows() const { return at<unsigned>(p->scratch_layout.packet_rows); }
  __device__ unsigned* packet_copied() const { return at<unsigned>(p->scratch_layout.packet_copied); }
  __device__ fdm_task* tasks() const { return at<fdm_task>(p->scratch_layout.tasks); }
  __device__ unsigned* task_ready() const { return at<unsigned>(p->scratch_layout.task_ready); }
  __device__ fdm_trace_record* trace() const { return at<fdm_trace_record>(p->scratch_layout.trace); }
  __device__ unsigned* mailbox() const { return at<unsigned>(p->scratch_layout.mailbox); }
  __device__ unsigned* assigned() const { return at<unsigned>(p->scratch_layout.assigned); }
  __device__ unsigned* completed() const { return at<unsigned>(p->scratch_layout.completed); }
  __device__ unsigned* control() const { return at<unsigned>(p->scratch_layout.control); }
  __device__ const Elem* x() const {
    return reinterpret_cast<const Elem*>(p->x) + (unsigned long long)local * p->layout.tokens * kH;
  }
  __device__ Elem* y() const {
    return reinterpret_cast<Elem*>(p->y) + (unsigned long long)local * p->layout.tokens * kH;
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
  return r;
}

// Control words in scratch (reset at the start of every forward).
// Phase marks are nanoseconds since the kernel start (CudaLayer::phase_times reads them):
// A1 (router) done, A2 (top-k) done, A3 (placement) done, last dispatch signal raised.
enum Control : unsigned {
  kTaskTail = 0,
  kKernelStartLo = 1,
  kKernelStartHi = 2,
  kRoutedNs = 3,
  kChosenNs = 4,
  kPlacedNs = 5,
  kDispatchedNs = 6,
};

// ─── deadlines and diagnostics ────────────────────────────────────────────────────────
struct Deadline {
  unsigned long long limit;
  unsigned long long last;
  __device__ explicit Deadline(unsigned long long timeout) : limit(timeout), last(now_ns()) {}
  __device__ void progress() { last = now_ns(); }
  __device__ bool expired() const { return now_ns() - last > limit; }
};

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
    d->expected_epoch = r.p->epoch;
    d->seen = seen;
    __threadfence_system();
  }
  atomicExch(&d->abort, 1u);
}

// ─── task construction (mirrors flashdmoe_proto::TaskDescriptor::new) ─────────────────
__device__ __forceinline__ unsigned col_tiles_h() { return kH / kBN; }
__device__ __forceinline__ unsigned col_tiles_i() { return kI / kBN; }

__device__ fdm_task make_task(const fdm_layout* l, unsigned kind, unsigned epoch, unsigned source,
                              unsigned owner, unsigned le, unsigned row_tile, unsigned col_tile,
                              unsigned valid_rows) {
  fdm_task t;
  t.kind = kind;
  t.source_rank = source;
  t.owner_rank = owner;
  t.local_expert = le;
  t.row_tile = row_tile;
  t.col_tile = col_tile;
  t.valid_rows = valid_rows;
  t.epoch = epoch;
  const unsigned row = row_tile * kBM;
  if (kind == FDM_TASK_GEMM0) {
    t.input_offset = fdm_row(l, FDM_STAGE_DISPATCH, source, le, row, 0);
    t.output_offset = fdm_intermediate_row(l, source, le, row, col_tile * kBN);
    t.signal_offset = FDM_NO_OFFSET;
    t.counter_offset = fdm_row_tile_counter(l, source, le, row_tile);
  } else if (kind == FDM_TASK_GEMM1) {
    t.input_offset = fdm_intermediate_row(l, source, le, row, 0);
    t.output_offset = fdm_row(l, FDM_STAGE_RETURN, owner, le, row, col_tile * kBN);
    t.signal_offset = fdm_return_signal(l, owner, le, row_tile, col_tile);
    t.counter_offset = FDM_NO_OFFSET;
  } else {
    t.input_offset = FDM_NO_OFFSET;
    t.output_offset = ((unsigned long long)row * kH + col_tile * kBN) * l->elem_bytes;
    t.signal_offset = FDM_NO_OFFSET;
    t.counter_offset = FDM_NO_OFFSET;
  }
  return t;
}

/// Appends `count` tasks, task i = make(i), cooperatively by the `lanes` threads calling it
/// (lane = 0..lanes-1; all of them must call with the same arguments). Each descriptor is
/// published by a release store of its ready flag = epoch.
template <class Make>
__device__ void enqueue(const Rank& r, unsigned count, unsigned lane, unsigned lanes, unsigned* base_slot,
                        Make make) {
  if (count == 0) return;
  // base_slot is a location all `lanes` threads can read after the leader wrote it
  // (shared memory for a block or warp); the caller syncs between the two halves.
  fdm_task* tasks = r.tasks();
  unsigned* ready = r.task_ready();
  const unsigned base = *base_slot;
  for (unsigned i = lane; i < count; i += lanes) {
    tasks[base + i] = make(i);
    st_release_gpu(&ready[base + i], r.p->epoch);
  }
}

// ═════════════════════════════════════════════════════════════════════════════════════
// Phase A: routing and dispatch
// ═════════════════════════════════════════════════════════════════════════════════════
__device__ void reset_counters(const fdm_params* p) {
  // Row-tile and combine counters of every local rank (signals are never cleared), the
  // scheduler's doorbells and the task tail.
  const unsigned long long gtid = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
  const unsigned long long gthreads = (unsigned long long)gridDim.x * blockDim.x;
  const fdm_layout& l = p->layout;
  for (unsigned local = 0; local < p->local_ranks; ++local) {
    Rank r = make_rank(p, local);
    unsigned* counters = reinterpret_cast<unsigned*>(r.heap + l.row_tile_counters);
    const unsigned long long ncounters = (l.dispatch_rows - l.row_tile_counters) / 4;
    for (unsigned long long i = gtid; i < ncounters; i += gthreads) counters[i] = 0u;
    for (unsigned long long i = gtid; i < r.nproc; i += gthreads) {
      r.assigned()[i] = 0u;
      r.completed()[i] = 0u;
    }
    for (unsigned long long i = gtid; i < (unsigned long long)kE; i += gthreads) r.packet_copied()[i] = 0u;
    if (gtid == 0) {
      r.control()[kTaskTail] = 0u;
      r.control()[kDispatchedNs] = 0u;
    }
  }
}

/// A1: logits[t][e] = x[t] . router[e] in f32, on tensor cores.
__device__ void router_gemm(const fdm_params* p, char* smem) {
  const unsigned T = p->layout.tokens;
  const unsigned row_tiles = fdm_div_ceil(T, Router::BM);
  const unsigned col_tiles = fdm_div_ceil(kE, Router::BN);
  const unsigned per_rank = row_tiles * col_tiles;
  const Elem* router = reinterpret_cast<const Elem*>(p->router);
  for (unsigned job = blockIdx.x; job < per_rank * p->local_ranks; job += gridDim.x) {
    Rank r = make_rank(p, job / per_rank);
    const unsigned rt = (job % per_rank) / col_tiles, ct = job % col_tiles;
    const int rows = (int)fdm_tile_rows(T, rt, Router::BM);
    const int cols = (int)min((unsigned)Router::BN, kE - ct * Router::BN);
    typename Router::Accum acc;
    Router::gemm(acc, r.x() + (unsigned long long)rt * Router::BM * kH, kH, rows,
                 router + (unsigned long long)ct * Router::BN * kH, kH, cols, kH, smem);
    Router::store<float>(acc, r.logits() + (unsigned long long)rt * Router::BM * kE + ct * Router::BN, kE, rows,
                         cols, smem);
  }
}

/// A2: top-k per token and within-chunk positions per expert.
__device__ void route_chunks(const fdm_params* p, unsigned* s_topk) {
  const unsigned T = p->layout.tokens;
  const unsigned chunks = fdm_div_ceil(T, kChunk);
  for (unsigned job = blockIdx.x; job < chunks * p->local_ranks; job += gridDim.x) {
    Rank r = make_rank(p, job / chunks);
    const unsigned chunk = job % chunks;
    const unsigned t = chunk * kChunk + threadIdx.x;
    if (threadIdx.x < (unsigned)kChunk && t < T) {
      const float* lg = r.logits() + (unsigned long long)t * kE;
      float m = -__int_as_float(0x7f800000);  // -inf
      for (int e = 0; e < kE; ++e) m = fmaxf(m, lg[e]);
      float sum = 0.f;
      for (int e = 0; e < kE; ++e) sum += expf(lg[e] - m);
      // The k best in (logit descending, expert ascending) order, each pick the best expert
      // strictly after the previous one in that order: O(1) registers whatever k is (arrays
      // of k picks made the whole kernel spill at k = 6).
      unsigned prev_e = 0;
      float prev_v = 0.f, chosen_sum = 0.f;
#pragma unroll 1
      for (int j = 0; j < kTopK; ++j) {
        int best = -1;
        float best_v = 0.f;
        for (int e = 0; e < kE; ++e) {
          const float v = lg[e];
          const bool after = j == 0 || v < prev_v || (v == prev_v && (unsigned)e > prev_e);
          // Strict '>' keeps the lower expert index on ties (experts visited in order).
          if (after && (best < 0 || v > best_v)) {
            best = e;
            best_v = v;
          }
        }
        prev_e = (unsigned)best;
        prev_v = best_v;
        const float prob = expf(best_v - m) / sum;
        chosen_sum += prob;
        r.topk_expert()[t * kTopK + j] = prev_e;
        r.topk_weight()[t * kTopK + j] = prob;
        s_topk[threadIdx.x * kTopK + j] = prev_e;
      }
      if (FDM_RENORM) {
#pragma unroll 1
        for (int j = 0; j < kTopK; ++j) r.topk_weight()[t * kTopK + j] /= chosen_sum;
      }
    }
    __syncthreads();
    // One thread per expert walks the chunk's (token, slot) pairs in token order.
    const unsigned n = min((unsigned)kChunk, T - chunk * kChunk);
    for (unsigned e = threadIdx.x; e < (unsigned)kE; e += kThreads) {
      unsigned count = 0;
      for (unsigned i = 0; i < n * kTopK; ++i) {
        if (s_topk[i] == e) r.slot_row()[(chunk * kChunk) * kTopK + i] = count++;
      }
      r.chunk_counts()[chunk * kE + e] = count;
    }
    __syncthreads();
  }
}

/// A3: global positions (prefix over earlier chunks + within-chunk position) and capacity
/// drops (kept iff position < capacity: the lowest token indices win).
__device__ void place_chunks(const fdm_params* p, unsigned* s_offset) {
  const fdm_layout& l = p->layout;
  const unsigned T = l.tokens;
  const unsigned chunks = fdm_div_ceil(T, kChunk);
  for (unsigned job = blockIdx.x; job < chunks * p->local_ranks; job += gridDim.x) {
    Rank r = make_rank(p, job / chunks);
    const unsigned chunk = job % chunks;
    for (unsigned e = threadIdx.x; e < (unsigned)kE; e += kThreads) {
      unsigned off = 0;
      for (unsigned c = 0; c < chunk; ++c) off += r.chunk_counts()[c * kE + e];
      s_offset[e] = off;
    }
    __syncthreads();
    const unsigned n = min((unsigned)kChunk, T - chunk * kChunk);
    for (unsigned i = threadIdx.x; i < n * kTopK; i += kThreads) {
      const unsigned slot = chunk * kChunk * kTopK + i;
      const unsigned e = r.topk_expert()[slot];
      const unsigned pos = s_offset[e] + r.slot_row()[slot];
      const bool kept = pos < l.capacity;
      r.slot_row()[slot] = kept ? pos : kDropped;
      if (kept) r.expert_tokens()[(unsigned long long)e * l.capacity + pos] = slot / kTopK;
    }
    // The last chunk's block knows every expert's total: the packet sizes A4 and the OS
    // block work from.
    if (chunk + 1 == chunks) {
      for (unsigned e = threadIdx.x; e < (unsigned)kE; e += kThreads) {
        r.packet_rows()[e] = min(s_offset[e] + r.chunk_counts()[chunk * kE + e], l.capacity);
      }
    }
    __syncthreads();
  }
}

/// Raises a dispatch signal: the packet's rows are in the owner's heap (the caller fenced
/// them), stamped with this forward's epoch; and marks the time of the latest one raised.
__device__ void raise_dispatch_signal(const Rank& r, unsigned e, unsigned rows) {
  const fdm_layout& l = r.p->layout;
  const unsigned owner = r.p->expert_owner[e], le = r.p->expert_local[e];
  unsigned long long* sig =
      reinterpret_cast<unsigned long long*>(r.heap_of(owner) + fdm_dispatch_signal(&l, r.global, le));
  fence_for(r.p, owner);
  signal_to(r.p, owner, sig, fdm_signal(r.p->epoch, rows));
  const unsigned long long t0 =
      (unsigned long long)r.control()[kKernelStartLo] | (unsigned long long)r.control()[kKernelStartHi] << 32;
  atomicMax(&r.control()[kDispatchedNs], (unsigned)min(now_ns() - t0, 0xFFFFFFFFull));
}

/// Rows one warp copies before it publishes them (one fence, one counter update).
constexpr unsigned kDispatchRows = 8;

/// Which copies a block makes in A4. Rows bound for another GPU cross NVLink at a fraction
/// of local bandwidth, so when there are such rows (`split`) a quarter of each rank's
/// processors (the highest roles, which the scheduler reaches last) copies only those, while
/// the other processors and the leftover blocks copy the rows that stay on this GPU and then
/// start computing on them. OS blocks copy nothing. `index` numbers the block within its
/// group of `count` blocks; `count` 0 means the block copies nothing.
struct CopyGroup {
  bool split, remote;
  unsigned index, count;
};

__device__ CopyGroup copy_group(const fdm_params* p) {
  const unsigned bpr = p->blocks_per_rank, ranks = p->local_ranks;
  const unsigned used = bpr * ranks, leftover = gridDim.x - used;
  unsigned remote = p->layout.world > ranks ? max(1u, (bpr - 1) / 4) : 0u;
  if (remote != 0 && bpr - 1 - remote == 0 && leftover == 0) remote = 0;  // too few blocks to split
  const bool split = remote != 0;
  const unsigned local_per_rank = bpr - 1 - remote, local_count = ranks * local_per_rank + leftover;
  if (blockIdx.x >= used) return {split, false, ranks * local_per_rank + blockIdx.x - used, local_count};
  const unsigned rank = blockIdx.x / bpr, role = blockIdx.x % bpr;
  if (role == 0) return {split, false, 0, 0};
  if (role > local_per_rank) return {split, true, rank * remote + role - 1 - local_per_rank, ranks * remote};
  return {split, false, rank * local_per_rank + role - 1, local_count};
}

/// A4: copy only the kept rows, each straight into its owner's heap dispatch region (proto
/// offsets), in items of kDispatchRows rows of one packet taken in packet order; the warp
/// completing a packet raises its signal, so owners start on early packets while later
/// ones are still in flight (no grid barrier follows). Zero-row packets are signalled by
/// the OS block.
__device__ void dispatch_packets(const fdm_params* p) {
  const fdm_layout& l = p->layout;
  const CopyGroup g = copy_group(p);
  if (g.count == 0) return;
  const unsigned lane = threadIdx.x % 32;
  const unsigned items_per_packet = fdm_div_ceil(l.capacity, kDispatchRows);
  const unsigned long long items = (unsigned long long)p->local_ranks * kE * items_per_packet;
  constexpr unsigned kVecs = kH * sizeof(Elem) / 16;
  for (unsigned long long w = (unsigned long long)g.index * kWarps + threadIdx.x / 32; w < items;
       w += (unsigned long long)g.count * kWarps) {
    const unsigned local = (unsigned)(w / ((unsigned long long)kE * items_per_packet));
    const unsigned e = (unsigned)(w / items_per_packet % kE);
    const unsigned first = (unsigned)(w % items_per_packet) * kDispatchRows;
    const Rank r = make_rank(p, local);
    const unsigned rows = r.packet_rows()[e];
    if (first >= rows) continue;
    const unsigned owner = p->expert_owner[e], le = p->expert_local[e];
    const bool remote = owner < p->first_rank || owner >= p->first_rank + p->local_ranks;
    if (g.split && remote != g.remote) continue;
    const unsigned n = min(kDispatchRows, rows - first);
    for (unsigned pos = first; pos < first + n; ++pos) {
      const unsigned token = r.expert_tokens()[(unsigned long long)e * l.capacity + pos];
      const uint4* src = reinterpret_cast<const uint4*>(r.x() + (unsigned long long)token * kH);
      uint4* dst = reinterpret_cast<uint4*>(r.heap_of(owner) + fdm_row(&l, FDM_STAGE_DISPATCH, r.global, le, pos, 0));
#pragma unroll 4
      for (unsigned v = lane; v < kVecs; v += 32) dst[v] = src[v];
    }
    fence_for(p, owner);  // this lane's stores of the item, before the count
    __syncwarp();
    if (lane == 0 && atomicAdd(&r.packet_copied()[e], n) + n == rows) raise_dispatch_signal(r, e, rows);
  }
}

// ═════════════════════════════════════════════════════════════════════════════════════
// Phase B: the OS block (scheduler + subscribers)
// ═════════════════════════════════════════════════════════════════════════════════════
struct OsShared {
  unsigned packet_rows[kE];      // rows this rank sent to each expert
  unsigned bound;                // tasks this rank runs; kStop until known
  unsigned enqueue_base[kWarps]; // per-warp scratch for enqueue()
  unsigned assigned[1024];       // scheduler's doorbell counts per processor
  unsigned handled[(FDM_MAX_RANKS * kE + 31) / 32];  // dispatch slots already turned into tasks
};
static_assert(sizeof(OsShared) <= FDM_SMEM_BYTES, "the OS block's state lives in dynamic shared memory");

/// The OS block's first act: raise this rank's zero-row dispatch signals (A4's copiers raise
/// the others as their packets complete) and remember the packet sizes.
__device__ void raise_dispatch_signals(const Rank& r, OsShared& s) {
  for (unsigned e = threadIdx.x; e < (unsigned)kE; e += kThreads) {
    const unsigned rows = r.packet_rows()[e];
    s.packet_rows[e] = rows;
    if (rows == 0) raise_dispatch_signal(r, e, 0);
  }
  for (unsigned w = threadIdx.x; w < (FDM_MAX_RANKS * kE + 31) / 32; w += kThreads) s.handled[w] = 0u;
  if (threadIdx.x == 0) s.bound = kStop;
  __syncthreads();
}

/// Warp 1: watch every (source, local expert) dispatch signal of this rank; enqueue each
/// arrived packet's GEMM0 tasks; publish the exact task bound once all have arrived.
__device__ void dispatch_subscriber(const Rank& r, OsShared& s) {
  const fdm_layout& l = r.p->layout;
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const unsigned nle = r.p->local_experts_of[r.global];
  const unsigned slots = l.world * nle;
  const unsigned epoch = r.p->epoch;
  unsigned long long row_tiles = 0;
  unsigned remaining = slots;
  Deadline deadline(r.p->timeout_ns);
  // Arrival bitmap: bit i of done[i / 32] marks slot i (the warp sweeps 32 slots a step).
  for (unsigned base = 0; remaining > 0; base = base + 32 >= slots ? 0 : base + 32) {
    const unsigned slot = base + lane;
    unsigned rows = 0;
    bool arrived = false;
    unsigned long long seen = 0;
    if (slot < slots) {
      const unsigned source = slot / nle, le = slot % nle;
      const unsigned long long* sig =
          reinterpret_cast<const unsigned long long*>(r.heap + fdm_dispatch_signal(&l, source, le));
      seen = ld_acquire_sys(sig);
      arrived = fdm_signal_epoch(seen) == epoch;
      rows = fdm_signal_payload(seen);
    }
    // Slots already turned into tasks (one bit each; this warp is the only writer).
    unsigned* handled = &s.handled[base / 32];
    const unsigned already = *reinterpret_cast<volatile unsigned*>(handled);
    const bool fresh = arrived && !((already >> lane) & 1u);
    unsigned mask = __ballot_sync(0xFFFFFFFFu, fresh);
    if (mask == 0) {
      if (deadline.expired() || aborted(r.p)) {
        if (!aborted(r.p)) {
          // Name the first slot still pending in this sweep (or the sweep start).
          const unsigned pend = __ballot_sync(0xFFFFFFFFu, slot < slots && !arrived);
          const unsigned who = pend ? base + __ffs(pend) - 1 : base;
          const unsigned long long who_seen = __shfl_sync(0xFFFFFFFFu, seen, pend ? __ffs(pend) - 1 : 0);
          if (lane == 0) report_timeout(r, FDM_ROLE_DISPATCH_SUBSCRIBER, FDM_WAIT_DISPATCH_SIGNAL, who, who_seen);
        }
        return;
      }
      continue;
    }
    deadline.progress();
    if (lane == 0) *handled = already | mask;
    while (mask) {
      const unsigned src_lane = __ffs(mask) - 1;
      mask &= mask - 1;
      const unsigned pslot = base + src_lane;
      const unsigned prows = __shfl_sync(0xFFFFFFFFu, rows, src_lane);
      if (prows > l.capacity) {  // corrupt signal: typed error, never an out-of-bounds task
        if (lane == 0) report_timeout(r, FDM_ROLE_DISPATCH_SUBSCRIBER, FDM_WAIT_CORRUPT_SIGNAL, pslot, prows);
        return;
      }
      const unsigned source = pslot / nle, le = pslot % nle;
      const unsigned rts = fdm_div_ceil(prows, kBM);
      row_tiles += rts;
      const unsigned count = rts * col_tiles_i();
      if (lane == 0 && count) s.enqueue_base[warp] = atomicAdd(&r.control()[kTaskTail], count);
      __syncwarp();
      enqueue(r, count, lane, 32, &s.enqueue_base[warp], [&](unsigned i) {
        const unsigned rt = i / col_tiles_i(), c = i % col_tiles_i();
        return make_task(&l, FDM_TASK_GEMM0, epoch, source, r.global, le, rt, c, fdm_tile_rows(prows, rt, kBM));
      });
      __syncwarp();
      --remaining;
    }
  }
  if (lane == 0) {
    const unsigned long long combines = (unsigned long long)l.token_tiles * col_tiles_h();
    *reinterpret_cast<volatile unsigned*>(&s.bound) =
        (unsigned)(row_tiles * (col_tiles_i() + col_tiles_h()) + combines);
  }
}

/// Warps 2..: watch the return signals of every tile this rank is owed; count them per
/// output column; when a column is complete, enqueue the combine tasks of all token tiles of
/// that column.
__device__ void return_subscriber(const Rank& r, OsShared& s, unsigned sub, unsigned nsub) {
  const fdm_layout& l = r.p->layout;
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const unsigned epoch = r.p->epoch;
  const unsigned cth = col_tiles_h();
  // Flattened enumeration of owed tiles: (expert e ascending, row tile, column).
  unsigned long long expected = 0;
  for (int e = 0; e < kE; ++e) expected += fdm_div_ceil(s.packet_rows[e], kBM);
  const unsigned long long total = expected * cth;
  auto enqueue_column = [&](unsigned c) {
    if (lane == 0) s.enqueue_base[warp] = atomicAdd(&r.control()[kTaskTail], l.token_tiles);
    __syncwarp();
    enqueue(r, l.token_tiles, lane, 32, &s.enqueue_base[warp], [&](unsigned tt) {
      return make_task(&l, FDM_TASK_COMBINE, epoch, r.global, r.global, 0, tt, c, fdm_tile_rows(l.tokens, tt, kBM));
    });
    __syncwarp();
  };
  if (expected == 0) {  // nothing owed: every column is complete at once
    for (unsigned c = sub; c < cth; c += nsub) enqueue_column(c);
    return;
  }
  Deadline deadline(r.p->timeout_ns);
  // Lane-private cursor over its share of tiles (i = sub*32 + lane, stepping nsub*32),
  // processed in order: a lane polls only its next owed tile.
  unsigned long long i = (unsigned long long)sub * 32 + lane;
  unsigned e = 0, e_first = 0;  // expert of tile i and the flattened index of its first tile
  auto locate = [&](unsigned long long idx) {
    while (e < (unsigned)kE && idx >= (e_first + (unsigned long long)fdm_div_ceil(s.packet_rows[e], kBM) * cth)) {
      e_first += fdm_div_ceil(s.packet_rows[e], kBM) * cth;
      ++e;
    }
  };
  const unsigned long long step = (unsigned long long)nsub * 32;
  for (;;) {
    bool mine = i < total;
    bool complete_col = false;
    unsigned col = 0;
    unsigned long long seen = 0;
    if (mine) {
      locate(i);
      const unsigned within = (unsigned)(i - e_first);
      const unsigned rt = within / cth;
      col = within % cth;
      const unsigned owner = r.p->expert_owner[e], le = r.p->expert_local[e];
      const unsigned long long* sig =
          reinterpret_cast<const unsigned long long*>(r.heap + fdm_return_signal(&l, owner, le, rt, col));
      seen = ld_acquire_sys(sig);
      if (fdm_signal_epoch(seen) == epoch) {
        if (fdm_signal_payload(seen) != fdm_return_tile_id(&l, rt, col)) {
          report_timeout(r, FDM_ROLE_RETURN_SUBSCRIBER, FDM_WAIT_CORRUPT_SIGNAL, (unsigned)i, seen);
        }
        __threadfence();
        unsigned* counter = reinterpret_cast<unsigned*>(r.heap + fdm_combine_counter(&l, col));
        complete_col = atomicAdd(counter, 1u) + 1u == expected;
        if (complete_col) __threadfence();  // every counted arrival before the combine tasks
        i += step;
        deadline.progress();
      }
    }
    const unsigned any_left = __ballot_sync(0xFFFFFFFFu, i < total);
    unsigned done_cols = __ballot_sync(0xFFFFFFFFu, complete_col);
    while (done_cols) {
      const unsigned src_lane = __ffs(done_cols) - 1;
      done_cols &= done_cols - 1;
      enqueue_column(__shfl_sync(0xFFFFFFFFu, col, src_lane));
    }
    if (!any_left) return;
    if (aborted(r.p)) return;
    if (deadline.expired()) {
      const unsigned pend = __ballot_sync(0xFFFFFFFFu, i < total);
      const unsigned who_lane = __ffs(pend) - 1;
      const unsigned long long who = __shfl_sync(0xFFFFFFFFu, i, who_lane);
      const unsigned long long who_seen = __shfl_sync(0xFFFFFFFFu, seen, who_lane);
      if (lane == 0) report_timeout(r, FDM_ROLE_RETURN_SUBSCRIBER, FDM_WAIT_RETURN_SIGNAL, (unsigned)who, who_seen);
      return;
    }
  }
}

/// Warp 0: hand ready tasks to processors with a free doorbell slot (two slots each, so a
/// processor finds its next task the moment it finishes one); stop everyone at the bound.
__device__ void scheduler(const Rank& r, OsShared& s) {
  const unsigned lane = threadIdx.x % 32;
  const unsigned epoch = r.p->epoch;
  const unsigned nproc = r.nproc;
  unsigned* mailbox = r.mailbox();
  unsigned* assigned_g = r.assigned();
  const unsigned* completed = r.completed();
  const unsigned* ready = r.task_ready();
  for (unsigned q = lane; q < nproc; q += 32) s.assigned[q] = 0;
  __syncwarp();
  unsigned head = 0;
  // Processors are scanned round-robin from `cursor` so load spreads evenly.
  unsigned cursor = 0;
  Deadline deadline(r.p->timeout_ns + r.p->timeout_ns / 4);
  for (;;) {
    const unsigned bound = *reinterpret_cast<volatile unsigned*>(&s.bound);
    if (head == bound) break;
    // Ready tasks are a prefix of the queue from `head` (published in order of their flags).
    const unsigned idx = head + lane;
    const bool ok = idx < bound && ld_acquire_gpu(&ready[idx]) == epoch;
    const unsigned okmask = __ballot_sync(0xFFFFFFFFu, ok);
    const unsigned nready = okmask == 0xFFFFFFFFu ? 32u : __ffs(~okmask) - 1u;
    if (nready == 0) {
      if (aborted(r.p)) return;
      if (deadline.expired()) {
        if (lane == 0) report_timeout(r, FDM_ROLE_SCHEDULER, FDM_WAIT_TASK_READY, head, ld_acquire_gpu(&ready[head]));
        return;
      }
      continue;
    }
    // Hand out up to nready tasks: first pass gives idle processors (0 outstanding) one
    // task each, second pass fills second slots.
    unsigned given = 0;
    for (unsigned pass = 0; pass < 2 && given < nready; ++pass) {
      for (unsigned base = 0; base < nproc && given < nready; base += 32) {
        const unsigned q = (cursor + base + lane) % nproc;
        const bool valid = base + lane < nproc;
        unsigned outstanding = 2;
        if (valid) outstanding = s.assigned[q] - ld_acquire_gpu(&completed[q]);
        const bool wants = valid && outstanding <= pass;
        const unsigned wmask = __ballot_sync(0xFFFFFFFFu, wants);
        const unsigned rank_in = __popc(wmask & ((1u << lane) - 1u));
        if (wants && given + rank_in < nready) {
          const unsigned task = head + given + rank_in;
          const unsigned a = s.assigned[q];
          mailbox[2 * q + (a & 1u)] = task;
          s.assigned[q] = a + 1;
          st_release_gpu(&assigned_g[q], a + 1);
        }
        given = min(nready, given + __popc(wmask));
      }
    }
    __syncwarp();
    if (given) {
      head += given;
      cursor = (cursor + given) % nproc;
      deadline.progress();
    } else if (deadline.expired()) {
      if (lane == 0) report_timeout(r, FDM_ROLE_SCHEDULER, FDM_WAIT_PROCESSOR, head, 0);
      return;
    } else if (aborted(r.p)) {
      return;
    }
  }
  // All tasks handed out: wait for their completion, then ring every doorbell with a stop.
  const unsigned bound = s.bound;
  for (;;) {
    unsigned done = 0;
    for (unsigned q = lane; q < nproc; q += 32) done += ld_acquire_gpu(&completed[q]);
    for (int o = 16; o > 0; o /= 2) done += __shfl_xor_sync(0xFFFFFFFFu, done, o);
    if (done == bound) break;
    if (aborted(r.p)) return;
    if (deadline.expired()) {
      if (lane == 0) report_timeout(r, FDM_ROLE_SCHEDULER, FDM_WAIT_COMPLETION, bound, done);
      return;
    }
  }
  for (unsigned q = lane; q < nproc; q += 32) {
    const unsigned a = s.assigned[q];
    mailbox[2 * q + (a & 1u)] = kStop;
    st_release_gpu(&assigned_g[q], a + 1);
  }
}

// ═════════════════════════════════════════════════════════════════════════════════════
// Phase B: processors
// ═════════════════════════════════════════════════════════════════════════════════════
// A template so that only the branch of the configured activation is instantiated.
template <bool kGatedT>
__device__ void run_gemm0(const Rank& r, const fdm_task& t, char* smem) {
  using Gemm0 = TileGemm<kMode, kBM, kBN, ModeTraits<kMode>::kBK, 4, 2, 4, kGatedT ? 2 : 1>;
  const unsigned e = r.p->local_to_global[t.owner_rank * r.p->layout.local_experts + t.local_expert];
  const Elem* A = reinterpret_cast<const Elem*>(r.heap + t.input_offset);
  const unsigned long long col0 = (unsigned long long)t.col_tile * kBN;
  const Elem* up = reinterpret_cast<const Elem*>(r.p->w_up) + ((unsigned long long)e * kI + col0) * kH;
  Elem* out = reinterpret_cast<Elem*>(r.heap + t.output_offset);
  typename Gemm0::Accum acc;
  if constexpr (kGatedT) {
    const Elem* gate = reinterpret_cast<const Elem*>(r.p->w_gate) + ((unsigned long long)e * kI + col0) * kH;
    typename Gemm0::Accum acc_up;
    Gemm0::gemm_dual(acc, acc_up, A, kH, (int)t.valid_rows, gate, up, kH, kBN, kH, smem);
    if constexpr (kBias) {
      Gemm0::add_bias(acc, reinterpret_cast<const Elem*>(r.p->b_gate) + (unsigned long long)e * kI + col0, kBN);
      Gemm0::add_bias(acc_up, reinterpret_cast<const Elem*>(r.p->b_up) + (unsigned long long)e * kI + col0, kBN);
    }
    Gemm0::swiglu(acc, acc_up);
    Gemm0::template store<Elem>(acc, out, kI, (int)t.valid_rows, kBN, smem);
  } else {
    Gemm0::gemm(acc, A, kH, (int)t.valid_rows, up, kH, kBN, kH, smem);
    const Elem* bias = kBias ? reinterpret_cast<const Elem*>(r.p->b_up) + (unsigned long long)e * kI + col0 : nullptr;
    constexpr Act act = FDM_ACT == 0 ? Act::Relu : Act::Gelu;
    Gemm0::template store<Elem>(acc, out, kI, (int)t.valid_rows, kBN, smem, nullptr, EpilogueOp<act, Elem>{bias, nullptr});
  }
}

__device__ void run_gemm1(const Rank& r, const fdm_task& t, char* smem) {
  const unsigned e = r.p->local_to_global[t.owner_rank * r.p->layout.local_experts + t.local_expert];
  const Elem* A = reinterpret_cast<const Elem*>(r.heap + t.input_offset);
  const unsigned long long col0 = (unsigned long long)t.col_tile * kBN;
  const Elem* down = reinterpret_cast<const Elem*>(r.p->w_down) + ((unsigned long long)e * kH + col0) * kI;
  char* dest = r.heap_of(t.source_rank);
  Elem* out = reinterpret_cast<Elem*>(dest + t.output_offset);
  typename Gemm1::Accum acc;
  Gemm1::gemm(acc, A, kI, (int)t.valid_rows, down, kI, kBN, kI, smem);
  const Elem* bias = kBias ? reinterpret_cast<const Elem*>(r.p->b_down) + (unsigned long long)e * kH + col0 : nullptr;
  Gemm1::store<Elem>(acc, out, kH, (int)t.valid_rows, kBN, smem, nullptr, EpilogueOp<Act::None, Elem>{bias, nullptr});
}

/// After a GEMM1 tile's rows are stored: the epoch-stamped return signal in the source's heap.
__device__ void raise_return_signal(const Rank& r, const fdm_task& t) {
  signal_to(r.p, t.source_rank, reinterpret_cast<unsigned long long*>(r.heap_of(t.source_rank) + t.signal_offset),
            fdm_signal(t.epoch, fdm_return_tile_id(&r.p->layout, t.row_tile, t.col_tile)));
}

/// out[t][cols] = sum over the token's kept slots, in slot order, of weight * returned row.
/// Memory-bound: each thread owns 16 bytes of a row and keeps kIlp rows x k slots of loads in
/// flight before accumulating.
__device__ void run_combine(const Rank& r, const fdm_task& t) {
  const fdm_layout& l = r.p->layout;
  constexpr int kVec = 16 / sizeof(Elem);
  constexpr int kThreadsPerRow = kBN / kVec;
  constexpr int kRowsPerPass = kThreads / kThreadsPerRow;
  constexpr int kIlp = kTopK >= 8 ? 1 : 8 / kTopK;  // rows per thread in flight
  static_assert(kThreads % kThreadsPerRow == 0, "combine thread mapping");
  const unsigned col = t.col_tile * kBN + (threadIdx.x % kThreadsPerRow) * kVec;
  for (unsigned row0 = threadIdx.x / kThreadsPerRow; row0 < t.valid_rows; row0 += kIlp * kRowsPerPass) {
    uint4 raw[kIlp][kTopK];
    float w[kIlp][kTopK];
#pragma unroll
    for (int q = 0; q < kIlp; ++q) {
      const unsigned row = row0 + q * kRowsPerPass;
#pragma unroll
      for (int j = 0; j < kTopK; ++j) {
        w[q][j] = 0.f;
        raw[q][j] = make_uint4(0u, 0u, 0u, 0u);
        if (row >= t.valid_rows) continue;
        const unsigned slot = (t.row_tile * kBM + row) * kTopK + j;
        const unsigned pos = r.slot_row()[slot];
        if (pos == kDropped) continue;
        const unsigned e = r.topk_expert()[slot];
        w[q][j] = r.topk_weight()[slot];
        raw[q][j] = *reinterpret_cast<const uint4*>(
            r.heap + fdm_row(&l, FDM_STAGE_RETURN, r.p->expert_owner[e], r.p->expert_local[e], pos, col));
      }
    }
#pragma unroll
    for (int q = 0; q < kIlp; ++q) {
      const unsigned row = row0 + q * kRowsPerPass;
      if (row >= t.valid_rows) continue;
      float acc[kVec];
#pragma unroll
      for (int v = 0; v < kVec; ++v) acc[v] = 0.f;
#pragma unroll
      for (int j = 0; j < kTopK; ++j) {  // slot order: deterministic
        const Elem* vals = reinterpret_cast<const Elem*>(&raw[q][j]);
#pragma unroll
        for (int v = 0; v < kVec; ++v) acc[v] += w[q][j] * to_f32(vals[v]);
      }
      uint4 packed;
      Elem* out = reinterpret_cast<Elem*>(&packed);
#pragma unroll
      for (int v = 0; v < kVec; ++v) out[v] = from_f32<Elem>(acc[v]);
      *reinterpret_cast<uint4*>(r.y() + (unsigned long long)(t.row_tile * kBM + row) * kH + col) = packed;
    }
  }
}

__device__ void processor(const Rank& r, unsigned pid, char* smem) {
  __shared__ unsigned s_task;
  __shared__ unsigned s_base;
  const fdm_layout& l = r.p->layout;
  const unsigned* assigned = r.assigned();
  unsigned consumed = 0;
  Deadline deadline(r.p->timeout_ns + r.p->timeout_ns / 2);
  for (;;) {
    if (threadIdx.x == 0) {
      unsigned task = kStop;
      for (;;) {
        if (ld_acquire_gpu(&assigned[pid]) > consumed) {
          task = r.mailbox()[2 * pid + (consumed & 1u)];
          break;
        }
        if (aborted(r.p)) break;
        if (deadline.expired()) {
          report_timeout(r, FDM_ROLE_PROCESSOR, FDM_WAIT_DOORBELL, pid, consumed);
          break;
        }
      }
      s_task = task;
    }
    __syncthreads();
    const unsigned ti = s_task;
    if (ti == kStop) return;
    const fdm_task t = r.tasks()[ti];
    const unsigned long long start = now_ns();
    // The trace's end time is taken once the tile's results are stored and fenced but before
    // anything that depends on them is published, so a dependent task never appears to start
    // before its prerequisite ended (trace conformance).
    unsigned long long end = 0;
    if (t.kind == FDM_TASK_GEMM0) {
      run_gemm0<kGated>(r, t, smem);
      // Row-tile counter: the processor completing it publishes the row tile's GEMM1 tasks.
      __threadfence();
      __syncthreads();
      end = now_ns();
      if (threadIdx.x == 0) {
        unsigned* counter = reinterpret_cast<unsigned*>(r.heap + t.counter_offset);
        const bool last = atomicAdd(counter, 1u) + 1u == col_tiles_i();
        s_base = last ? atomicAdd(&r.control()[kTaskTail], col_tiles_h()) : kStop;
        if (last) __threadfence();
      }
      __syncthreads();
      if (s_base != kStop) {
        enqueue(r, col_tiles_h(), threadIdx.x, kThreads, &s_base, [&](unsigned c) {
          return make_task(&l, FDM_TASK_GEMM1, t.epoch, t.source_rank, t.owner_rank, t.local_expert, t.row_tile, c,
                           t.valid_rows);
        });
      }
    } else if (t.kind == FDM_TASK_GEMM1) {
      run_gemm1(r, t, smem);
      fence_for(r.p, t.source_rank);  // returned rows before the signal
      __syncthreads();
      end = now_ns();
      if (threadIdx.x == 0) raise_return_signal(r, t);
    } else {
      run_combine(r, t);
      __syncthreads();
      end = now_ns();
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      if (r.p->trace) {
        fdm_trace_record rec;
        rec.start_ns = start;
        rec.end_ns = end;
        rec.processor = pid;
        rec.task = ti;
        r.trace()[ti] = rec;
      }
      ++consumed;
      st_release_gpu(&r.completed()[pid], consumed);
      deadline.progress();
    }
  }
}

// ═════════════════════════════════════════════════════════════════════════════════════
// The kernel
// ═════════════════════════════════════════════════════════════════════════════════════
extern "C" __global__ void __launch_bounds__(kThreads, 1) fdm_moe_forward(const __grid_constant__ fdm_params params) {
  extern __shared__ __align__(128) char smem[];
  const fdm_params* p = &params;
  cg::grid_group grid = cg::this_grid();

  if (blockIdx.x == 0 && threadIdx.x == 0) {
    const unsigned long long t0 = now_ns();
    for (unsigned local = 0; local < p->local_ranks; ++local) {
      Rank r = make_rank(p, local);
      r.control()[kKernelStartLo] = (unsigned)t0;
      r.control()[kKernelStartHi] = (unsigned)(t0 >> 32);
    }
  }
  // Block 0 marks the phases for CudaLayer::phase_times (ns since the kernel start).
  const auto mark = [&](Control word) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
      const Rank r0 = make_rank(p, 0);
      const unsigned long long t0 = (unsigned long long)r0.control()[kKernelStartLo] |
                                    (unsigned long long)r0.control()[kKernelStartHi] << 32;
      const unsigned ns = (unsigned)min(now_ns() - t0, 0xFFFFFFFFull);
      for (unsigned local = 0; local < p->local_ranks; ++local) make_rank(p, local).control()[word] = ns;
    }
  };
  reset_counters(p);
  router_gemm(p, smem);
  grid.sync();
  mark(kRoutedNs);
  route_chunks(p, reinterpret_cast<unsigned*>(smem));
  grid.sync();
  mark(kChosenNs);
  place_chunks(p, reinterpret_cast<unsigned*>(smem));
  grid.sync();
  mark(kPlacedNs);
  dispatch_packets(p);

  const unsigned local = blockIdx.x / p->blocks_per_rank;
  if (local >= p->local_ranks) return;  // leftover blocks of an uneven partition
  const Rank r = make_rank(p, local);
  const unsigned role = blockIdx.x % p->blocks_per_rank;
  if (role == 0) {
    OsShared& s = *reinterpret_cast<OsShared*>(smem);
    raise_dispatch_signals(r, s);
    const unsigned warp = threadIdx.x / 32;
    if (warp == 0) scheduler(r, s);
    else if (warp == 1) dispatch_subscriber(r, s);
    else return_subscriber(r, s, warp - 2, kWarps - 2);
  } else {
    processor(r, role - 1, smem);
  }
}
