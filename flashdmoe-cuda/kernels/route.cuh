// route.cuh -- phase A1-A3 of a forward (core's `routing`, run on the GPU by every block of
// the device, separated by grid barriers in moe.cu): the per-forward counter reset, A1 the
// router GEMM, A2 scores + top-k per token and the within-chunk positions (topk.cuh), and A3
// the deterministic placement of each routed (token, slot) in its expert's packet with
// capacity drops (lowest token index wins). With shared experts (FDM_SHARED = m > 0,
// config.cuh) every token takes m more slots after the router's k: its rank's m parts of the
// shared experts (SpecShared, router_math.h), placed like any slot (they never drop: dropless
// only). The router scores kRouterE experts; packets, counts and placement cover all kE.
#pragma once

#include "heap.cuh"
#include "router_wgmma.cuh"
#include "topk.cuh"

/// Resets this forward's local counters: the row-tile and combine counters of every local
/// rank (signals are never cleared: epochs tell forwards apart), the mailboxes' counters, the
/// packet copy counts and the task tail.
__device__ void reset_counters(const fdm_params* p) {
  const unsigned long long gtid = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
  const unsigned long long gthreads = (unsigned long long)gridDim.x * blockDim.x;
  const fdm_layout& l = p->layout;
  for (unsigned local = 0; local < p->local_ranks; ++local) {
    Rank r = make_rank(p, local);
    unsigned* counters = reinterpret_cast<unsigned*>(r.heap + fdm_counters_start(&l));
    const unsigned long long ncounters = fdm_counters_bytes(&l) / FDM_COUNTER_BYTES;
    for (unsigned long long i = gtid; i < ncounters; i += gthreads) counters[i] = 0u;
    for (unsigned long long i = gtid; i < r.nproc; i += gthreads) {
      r.assigned()[i] = 0u;
      r.completed()[i] = 0u;
    }
    for (unsigned long long i = gtid; i < (unsigned long long)kE; i += gthreads) r.packet_copied()[i] = 0u;
    if (gtid == 0) {
      r.control()[kTaskTail] = 0u;
      r.control()[kCombineTail] = 0u;
      r.control()[kDispatchedNs] = 0u;
      r.control()[kStoppedNs] = 0u;
      r.control()[kExitNs] = 0u;
      r.control()[kTokensNs] = 0u;  // route_chunks_by_threads raises it (the latest block)
      r.control()[kFirstWave] = 0u;  // the OS block writes it (enqueue_in_place)
      r.control()[kSecondWave] = 0u;  // the OS block writes it (post_gemm1_early)
      r.control()[kThirdWave] = 0u;  // the OS block writes it (post_combines)
      r.control()[kFirstHandoutNs] = 0u;  // the scheduler's first handout raises it
      r.control()[kWavePostedNs] = 0u;  // the OS block raises it (enqueue_in_place)
      r.control()[kCombinesQueuedNs] = 0u;  // the return subscribers raise it
      r.control()[kCombinesHandedNs] = 0u;  // the scheduler raises it
      // The streamed placement's (experiment FDM_STREAM, placer.cuh), reset in every forward
      // so one that does not stream reads 0 chunks placed.
      r.control()[kChunkTicket] = 0u;
      r.control()[kChunksPlaced] = 0u;
      r.control()[kFirstTileNs] = 0u;
      // The processors count their paired tasks (never written without them: zero from the
      // scratch's allocation).
      if (kPairs) r.control()[kPairedTasks] = 0u;
    }
  }
}

/// A1's job (row tile rt of Router::BM tokens, column tile ct of Router::BN experts, K part
/// `part`) of rank r's `T` tokens: its partial logits over the part into logits array `part`,
/// by the block's first Router::kThreads threads (the tile's barrier is named when the block
/// is larger: config.cuh).
__device__ __forceinline__ void router_job(const Rank& r, unsigned rt, unsigned ct, unsigned part, unsigned T,
                                           char* smem) {
  constexpr int kPartK = kH / kRouterSplit;
  const unsigned long long part_stride = (unsigned long long)r.p->layout.tokens * kRouterE;
  const Elem* router = reinterpret_cast<const Elem*>(r.p->router);
  const int rows = (int)fdm_tile_rows(T, rt, Router::BM);
  const int cols = (int)min((unsigned)Router::BN, kRouterE - ct * Router::BN);
  const Elem* a = r.x() + (unsigned long long)rt * Router::BM * kH + part * kPartK;
  const Elem* b = router + (unsigned long long)ct * Router::BN * kH + part * kPartK;
  float* out = r.logits() + part * part_stride + (unsigned long long)rt * Router::BM * kRouterE + ct * Router::BN;
#if FDM_ROUTER_WGMMA_ON
  // Experiment FDM_ROUTER_WGMMA: the same tile on the warpgroups' wgmmas (router_wgmma.cuh).
  router_wgmma::Accum acc;
  router_wgmma::gemm(acc, a, kH, rows, b, kH, cols, kPartK, smem);
  router_wgmma::store(acc, out, kRouterE, rows, cols);
#else
  typename Router::Accum acc;
  Router::gemm(acc, a, kH, rows, b, kH, cols, kPartK, smem);
  Router::store<float>(acc, out, kRouterE, rows, cols, smem);
#endif
}

/// A1: logits[t][e] = x[t] . router[e] in f32 (e < kRouterE), on tensor cores: with kRouterSplit > 1,
/// job (row tile, column tile, part) writes partial logits over its K part into array `part`
/// (A2 sums the parts in order, so the result does not depend on which job ran when).
__device__ void router_gemm(const fdm_params* p, char* smem) {
  if (p->given_experts != 0ull) return;  // routing given: no logits
  if (threadIdx.x >= (unsigned)Router::kThreads) return;
  const unsigned T = p->tokens;  // this forward's (<= the layout's, the row stride)
  const unsigned row_tiles = fdm_div_ceil(T, Router::BM);
  const unsigned col_tiles = fdm_div_ceil(kRouterE, Router::BN);
  const unsigned per_rank = row_tiles * col_tiles * kRouterSplit;
  for (unsigned job = blockIdx.x; job < per_rank * p->local_ranks; job += gridDim.x) {
    Rank r = make_rank(p, job / per_rank);
    const unsigned within = job % per_rank, part = within % kRouterSplit, tile = within / kRouterSplit;
    router_job(r, tile / col_tiles, tile % col_tiles, part, T, smem);
  }
}

#ifdef FDM_A3_DEEP
/// Experiment FDM_A3_DEEP: the earlier chunks' counts a thread of place_chunks loads at once.
constexpr unsigned kA3Depth = 16;
#endif

/// A3 for chunk `chunk` of rank r, by the whole block (`s_offset`: kE words of shared
/// memory): its slots' global positions (the earlier chunks' counts, which the caller made
/// visible, plus the within-chunk positions) and capacity drops (kept iff position < capacity:
/// the lowest token indices win); the last chunk's block stores every expert's total. On
/// return `s_offset[e]` holds expert e's rows before the chunk.
__device__ void place_chunk(const Rank& r, unsigned chunk, unsigned* s_offset) {
  const fdm_params* p = r.p;
  const fdm_layout& l = p->layout;
  const unsigned T = p->tokens;
  const unsigned chunks = fdm_div_ceil(T, kChunk);
  // The earlier chunks' counts are summed by every thread of the block: thread i adds expert
  // i % kE's counts of chunks i / kE, + kParts, ... and the parts meet in shared memory
  // (integers: exact in any order). A thread an expert left all but E threads idle and the last
  // of T16384's 128 chunks at E 8 waiting on 16 rounds of 8 loads (perf-notes v31 (g)).
  constexpr unsigned kParts = kThreads >= kE ? (unsigned)(kThreads / kE) : 1u;
  // Pairs a thread loads before it stores any (its stores may alias the next pairs' loads as
  // far as the compiler knows, so the batch is explicit).
  constexpr unsigned kBatch = 4;
  for (unsigned e = threadIdx.x; e < (unsigned)kE; e += kThreads) s_offset[e] = 0u;
  __syncthreads();
  for (unsigned i = threadIdx.x; i < kParts * kE; i += kThreads) {
    const unsigned e = i % kE;
    unsigned off = 0;
#ifdef FDM_A3_DEEP
    // Experiment FDM_A3_DEEP: kA3Depth predicated loads in flight a thread, then their sum
    // (an unrolled loop over a run-time count issues 8 at a time and the remainder one by
    // one: the last chunk of T16384 E128, 42 counts a thread, waited ~7 round trips).
    for (unsigned c0 = i / kE; c0 < chunk; c0 += kA3Depth * kParts) {
      unsigned v[kA3Depth];
#pragma unroll
      for (unsigned j = 0; j < kA3Depth; ++j) {
        const unsigned c = c0 + j * kParts;
        v[j] = c < chunk ? r.chunk_counts()[c * kE + e] : 0u;
      }
#pragma unroll
      for (unsigned j = 0; j < kA3Depth; ++j) off += v[j];
    }
#else
#pragma unroll 8
    for (unsigned c = i / kE; c < chunk; c += kParts) off += r.chunk_counts()[c * kE + e];
#endif
    if (off != 0u) atomicAdd(&s_offset[e], off);
  }
  __syncthreads();
  const unsigned n = min((unsigned)kChunk, T - chunk * kChunk);
  const unsigned first = chunk * kChunk * kSlots;
  for (unsigned i0 = threadIdx.x; i0 < n * kSlots; i0 += kBatch * kThreads) {
    unsigned expert[kBatch], within[kBatch];
    float weight[kBatch];
#pragma unroll
    for (unsigned b = 0; b < kBatch; ++b) {
      const unsigned i = i0 + b * kThreads;
      if (i >= n * kSlots) continue;
      expert[b] = r.topk_expert()[first + i];
      within[b] = r.slot_row()[first + i];
      weight[b] = r.topk_weight()[first + i];
    }
#pragma unroll
    for (unsigned b = 0; b < kBatch; ++b) {
      const unsigned i = i0 + b * kThreads;
      if (i >= n * kSlots) continue;
      const unsigned slot = first + i, e = expert[b];
      const unsigned pos = s_offset[e] + within[b];
      const bool kept = pos < p->capacity;  // this forward's; l.capacity is the stride
      r.slot_row()[slot] = kept ? pos : kDropped;
      if (kept) {
        r.expert_tokens()[(unsigned long long)e * l.capacity + pos] = slot / kSlots;
        r.expert_weights()[(unsigned long long)e * l.capacity + pos] = weight[b];  // travels with the row (A4)
        // A row GEMM0 reads in place never travels, but its weight goes where GEMM1 looks for
        // every row's: the owner's dispatch weights (published with expert_tokens, which GEMM0
        // already depends on).
        const unsigned owner = p->expert_owner[e];
        if (kReadsInPlace && on_this_gpu(p, owner)) {
          *reinterpret_cast<float*>(r.heap_of(owner) + fdm_dispatch_weight(&l, r.global, p->expert_local[e], pos)) =
              weight[b];
        }
      }
    }
  }
  // The last chunk's block knows every expert's total: the packet sizes A4 and the OS
  // block work from.
  if (chunk + 1 == chunks) {
    for (unsigned e = threadIdx.x; e < (unsigned)kE; e += kThreads) {
      r.packet_rows()[e] = min(s_offset[e] + r.chunk_counts()[chunk * kE + e], p->capacity);
    }
  }
  __syncthreads();
}

/// A3 for every chunk of every local rank, a block a chunk, after A2's grid barrier.
__device__ void place_chunks(const fdm_params* p, unsigned* s_offset) {
  const unsigned chunks = fdm_div_ceil(p->tokens, kChunk);
  for (unsigned job = blockIdx.x; job < chunks * p->local_ranks; job += gridDim.x) {
    place_chunk(make_rank(p, job / chunks), job % chunks, s_offset);
  }
}
