// placer.cuh -- the streamed placement (experiment FDM_STREAM; core's `runtime::placer`,
// docs/dev/streamed-placement.md): on one GPU holding a world of one rank, phase A shrinks to
// the counter reset and one grid barrier, and the first FDM_STREAM processor blocks place the
// routed rows chunk by chunk before they take tasks. For each chunk a placer runs A1 (the
// router's tiles of its rows), A2 (its tokens' slots, their within-chunk positions and
// counts), publishes the counts, waits for every earlier chunk's, runs A3 for the chunk (the
// same positions and writes as place_chunks) and adds the rows it placed into each row tile's
// placed counter; the addition that completes a row tile queues its GEMM0 tasks, so the other
// processors start while the rest of the tokens are still being routed. The last chunk pads
// each packet's partial last row tile (FDM_PLACED_PADDED) after storing the packet sizes.
//
// What differs from core's model: a chunk's prefix is the sum of every earlier chunk's counts
// (place_chunk's loads, as A3 sums them today) once their flags are up, instead of a
// decoupled look-back over inclusive prefixes; both wait only on chunks claimed earlier,
// which publish their counts without waiting. The placers are fixed (processors below
// FDM_STREAM): the scheduler sees them as full (their completion count held at kPlacing)
// until they are done, so it hands them no task while they place.
#pragma once

#include "queue.cuh"
#include "route.cuh"
#include "subscriber.cuh"

#ifdef FDM_STREAM
constexpr unsigned kStreamPlacers = FDM_STREAM;
static_assert(FDM_STREAM > 0, "FDM_STREAM: the processor blocks that place, at least one");
// A streamed forward has no placement before the roles for FDM_SELF_WAVE's processors to
// derive their first tasks from.
static_assert(!kSelfWave, "FDM_STREAM and FDM_SELF_WAVE exclude each other");
#else
constexpr unsigned kStreamPlacers = 0;
#endif

/// A placer's completion count while it places: the scheduler's `assigned - completed` reads
/// 2, a full mailbox, so it posts the processor nothing until the placer stores 0.
constexpr unsigned kPlacing = 0xFFFFFFFEu;

/// Whether this forward streams its placement: the experiment built in, the Hopper engine
/// (GEMM0 reads rows in place), unpaired, one rank on this GPU in a world of one, and more
/// than one routing chunk (one chunk has nothing to stream: today's path with its waves).
__device__ __forceinline__ bool streams(const fdm_params* p) {
  return kStreamPlacers > 0 && kHopper && !kPairs && p->local_ranks == 1 && p->layout.world == 1 &&
         p->tokens > (unsigned)kChunk;
}

/// The processor blocks of a rank that place (the first ones; at most all of them).
__device__ __forceinline__ unsigned stream_placers(const fdm_params* p) {
  return min(kStreamPlacers, p->blocks_per_rank - 1);
}

/// The streamed placement's share of the counter reset (moe.cu, right after reset_counters and
/// before phase A's grid barrier, by every thread of the grid): the placed counters of every
/// row tile, the placement's mark, and the placers' completion counts at kPlacing (each by
/// the thread that reset_counters had zero it: the same index over the same threads, so the
/// two stores are ordered). reset_counters resets the chunk ticket and count.
__device__ void reset_stream(const Rank& r) {
  const unsigned long long gtid = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
  const unsigned long long gthreads = (unsigned long long)gridDim.x * blockDim.x;
  for (unsigned long long q = gtid; q < r.nproc; q += gthreads) {
    if (q < stream_placers(r.p)) r.completed()[q] = kPlacing;
  }
  const fdm_layout& l = r.p->layout;
  const unsigned rts = fdm_div_ceil(l.capacity, kBM);
  for (unsigned long long i = gtid; i < (unsigned long long)kE * rts; i += gthreads) {
    r.placed()[(i / rts) * l.capacity + i % rts] = 0u;
  }
  if (gtid == 0) {
    r.control()[kPlacedNs] = 0u;  // the placer of the last chunk placed raises it
    r.control()[kRouteThreads] = kLaneRouter;  // the form stream_route takes (the host's phase line)
  }
}

/// Waits, by the calling thread, until chunk c's counts are published (its flag holds this
/// forward's epoch). False on an abort or a timeout (recorded: FDM_WAIT_CHUNK_COUNTS).
__device__ bool await_chunk(const Rank& r, unsigned c, Deadline& deadline) {
  for (;;) {
    const unsigned seen = ld_relaxed_gpu(&r.chunk_ready()[c]);
    if (seen == r.epoch) return true;
    if (aborted(r.p)) return false;
    if (deadline.expired()) {
      report_timeout(r, FDM_ROLE_PROCESSOR, FDM_WAIT_CHUNK_COUNTS, c, seen);
      return false;
    }
  }
}

/// Queues the GEMM0 tasks of row tile `rt` of expert e's packet (`valid` rows), column tile
/// by column tile, by the calling thread (one claim, the descriptors, one fence, their flags);
/// the first such queue of the forward marks kFirstTileNs.
__device__ void queue_row_tile(const Rank& r, unsigned e, unsigned rt, unsigned valid) {
  const unsigned cti = fdm_col_tiles_inter(&r.p->layout);
  const unsigned le = r.p->expert_local[e];
  const unsigned base = claim(r, cti);
  publish_own(r, base, cti,
              [&](unsigned c) { return make_task(r, FDM_TASK_GEMM0, r.global, r.global, le, rt, c, valid); });
  const unsigned ns = (unsigned)min(now_ns() - kernel_start(r), 0xFFFFFFFFull);
  atomicCAS(&r.control()[kFirstTileNs], 0u, ns == 0u ? 1u : ns);
}

/// After place_chunk for `chunk` (`s_offset[e]`: expert e's rows before it), by the whole
/// block: the rows the chunk placed counted into their row tiles' placed counters (the last
/// chunk padding each packet's partial last row tile), each completed row tile queued. The
/// block's writes of the chunk are fenced before any addition, and a completing addition is
/// fenced before the tile's tasks (core's acquire-release counters).
__device__ void count_placed(const Rank& r, unsigned chunk, const unsigned* s_offset) {
  const fdm_layout& l = r.p->layout;
  const unsigned cap = r.p->capacity;
  const bool last = chunk + 1 == fdm_div_ceil(r.p->tokens, kChunk);
  fence_acq_rel_gpu();  // the block's writes (place_chunk, before its barrier) before the additions
  for (unsigned e = threadIdx.x; e < (unsigned)kE; e += kThreads) {
    const unsigned start = min(s_offset[e], cap);
    const unsigned end = min(s_offset[e] + r.chunk_counts()[chunk * kE + e], cap);
    // The packet's rows (the last chunk's end) and its partial last row tile, if any.
    const bool pad = last && end % kBM != 0u;
    const unsigned pad_tile = end / kBM;
    unsigned* counters = r.placed() + (unsigned long long)e * l.capacity;
    const unsigned first = start / kBM, stop = start < end ? fdm_div_ceil(end, kBM) : first;
    for (unsigned rt = first; rt < stop || (pad && rt == pad_tile); ++rt) {
      const unsigned lo = max(rt * kBM, start), hi = min((rt + 1) * kBM, end);
      unsigned add = hi > lo ? hi - lo : 0u;
      if (pad && rt == pad_tile) add += FDM_PLACED_PADDED | ((rt + 1) * kBM - end);
      if (add == 0u) continue;
      const unsigned now = atomicAdd(&counters[rt], add) + add;
      if ((now & (FDM_PLACED_PADDED - 1u)) == (unsigned)kBM) {
        fence_acq_rel_gpu();  // every other placer's rows of the tile, and the packet size
        const unsigned valid = (now & FDM_PLACED_PADDED) ? ld_relaxed_gpu(&r.packet_rows()[e]) - rt * kBM : kBM;
        queue_row_tile(r, e, rt, valid);
      }
    }
  }
}

/// A1 for `chunk` of rank r: its router tiles, every K part (the jobs router_gemm deals out
/// over the grid), by the block's first Router::kThreads threads. Not inlined: inlined, the
/// 128-row router tile's registers made paper T16384 E128's image spill (8 bytes).
__device__ __forceinline__ void stream_router(const Rank& r, unsigned chunk, char* smem) {
  if (threadIdx.x >= (unsigned)Router::kThreads) return;
  const unsigned T = r.p->tokens;
  const unsigned n = min((unsigned)kChunk, T - chunk * kChunk);
  const unsigned col_tiles = fdm_div_ceil(kRouterE, Router::BN);
  const unsigned rt0 = chunk * kChunk / Router::BM, rts = fdm_div_ceil(n, Router::BM);
  for (unsigned job = 0; job < rts * col_tiles * kRouterSplit; ++job) {
    const unsigned part = job % kRouterSplit, tile = job / kRouterSplit;
    router_job(r, rt0 + tile / col_tiles, tile % col_tiles, part, T, smem);
  }
}

/// A2 for `chunk` of rank r by the whole block: its tokens' slots (a thread a token where the
/// router allows it), then their within-chunk positions and the chunk's counts (count_chunk,
/// which ends in a barrier). Not inlined, as stream_router: inlined, the layers with shared
/// experts lost their streamed-combine images to spills.
__device__ __forceinline__ void stream_route(const Rank& r, unsigned chunk, char* smem) {
  const unsigned n = min((unsigned)kChunk, r.p->tokens - chunk * kChunk);
  const bool given = r.p->given_experts != 0ull;
  const RouteSmem sm(smem);
  if constexpr (kLaneRouter) {
    route_chunk_by_threads(r, chunk, n, sm, reinterpret_cast<float*>(smem + RouteSmem::kBytes), given);
  } else {
    route_chunk_by_warps(r, chunk, n, sm, smem, given);
  }
  __syncthreads();
  count_chunk(r, chunk, n, sm);
}

/// The streamed placement by processor q < stream_placers (every thread of its block, before
/// the processor's roles split: its shared memory is free): claims chunks in order and places
/// each (file comment); then the processor's completion count goes back to 0 and the
/// scheduler may post it tasks. Inlined (not inlined, NVRTC 13 crashed compiling it), with A1
/// and A2 in functions of their own that are not (stream_router, stream_route): their
/// registers stay apart from the processor's, as route()'s do.
__device__ __noinline__ void place_streamed(const fdm_params* p, unsigned q, char* smem) {
  const Rank r = make_rank(p, 0);
  const unsigned T = r.p->tokens;
  const unsigned chunks = fdm_div_ceil(T, kChunk);
  const bool given = r.p->given_experts != 0ull;
  static_assert(kStreamPlacers == 0 || kChunk % Router::BM == 0, "a chunk holds whole router row tiles");
  // The block's two words (the chunk it claimed, whether a wait failed) at the top of its
  // dynamic shared memory, which A1-A3 leave alone.
  constexpr int kA2Bytes = kLaneRouter ? RouteSmem::kBytes + kChunk * kLogitStride * 4
                                       : cmax(RouteSmem::kBytes, kWarps * (kRouterE + kTopK) * 4);
  // (FDM_ROUTER_WGMMA's tile aligns its stages up to 1024 bytes past the start.)
  constexpr int kA1Bytes = Router::kSmemBytes + (FDM_ROUTER_WGMMA_ON ? 1024 : 0);
  static_assert(kStreamPlacers == 0 || cmax(kA1Bytes, cmax(kA2Bytes, kE * 4)) + 16 <= kSmemBytes,
                "the placer's words clear of A1-A3's shared memory");
  volatile unsigned& s_chunk = *reinterpret_cast<volatile unsigned*>(smem + kSmemBytes - 16);
  volatile unsigned& s_failed = *reinterpret_cast<volatile unsigned*>(smem + kSmemBytes - 12);
  Deadline deadline(r.p->timeout_ns);
  for (;;) {
    if (threadIdx.x == 0) {
      s_chunk = atomicAdd(&r.control()[kChunkTicket], 1u);
      s_failed = 0u;
    }
    __syncthreads();
    const unsigned chunk = s_chunk;
    if (chunk >= chunks) break;
    // A1: the chunk's router tiles, every K part (the same jobs router_gemm deals out).
    if (!given) stream_router(r, chunk, smem);
    __syncthreads();  // the chunk's logits (this block's stores) before A2 reads them
    stream_route(r, chunk, smem);  // A2 (ends in a barrier)
    if (threadIdx.x == 0) {
      fence_acq_rel_gpu();  // the block's counts (before count_chunk's barrier) before the flag
      st_relaxed_gpu(&r.chunk_ready()[chunk], r.epoch);
    }
    // Every earlier chunk's counts: each thread waits for its share of their flags, then
    // fences (the acquire) before the barrier after which place_chunk reads them.
    bool ok = true;
    for (unsigned c = threadIdx.x; c < chunk && ok; c += kThreads) ok = await_chunk(r, c, deadline);
    fence_acq_rel_gpu();
    if (!ok) s_failed = 1u;
    __syncthreads();
    if (s_failed != 0u) return;  // aborted or timed out (recorded); the roles see the abort
    deadline.progress();
    // A3 for the chunk, then its rows into the placed counters.
    unsigned* s_offset = reinterpret_cast<unsigned*>(smem);
    place_chunk(r, chunk, s_offset);  // ends in a barrier
    count_placed(r, chunk, s_offset);
    __syncthreads();
    if (threadIdx.x == 0) {
      fence_acq_rel_gpu();  // the chunk's every write before it counts as placed
      // The last chunk to be placed (not the last chunk's placer) marks the placement.
      if (atomicAdd(&r.control()[kChunksPlaced], 1u) + 1u == chunks) mark_latest(r, kPlacedNs);
    }
  }
  // Done placing: the scheduler may post this processor tasks from now on.
  if (threadIdx.x == 0) st_release_gpu(&r.completed()[q], 0u);
  __syncthreads();
}

/// The OS block's state for a streamed forward, by all its threads before the roles split
/// (enqueue_in_place's set-up without its tasks: the placers queue them).
__device__ void stream_os_init(const Rank& r, OsShared& s) {
  for (unsigned w = threadIdx.x; w < (FDM_MAX_RANKS * kE + 31) / 32; w += kThreads) s.handled[w] = 0u;
  if (threadIdx.x == 0) {
    s.bound = kStop;
    s.in_place_slots = 0;
    s.in_place_row_tiles = 0;
    s.first_wave = 0;
    s.second_wave = 0;
    s.third_wave = 0;
  }
  __syncthreads();
}

/// The OS block's warps but the scheduler's (`count` threads, thread `tid` of them): wait
/// until every chunk is placed, then take the packets as enqueue_in_place would have (every
/// slot handled, their row tiles for the bound), and meet at named barrier 3. False on an
/// abort or a timeout (recorded: FDM_WAIT_PLACEMENT) in every calling thread.
__device__ bool await_placement(const Rank& r, OsShared& s, unsigned tid, unsigned count) {
  __shared__ int s_placed;
  if (tid == 0) {
    const unsigned chunks = fdm_div_ceil(r.p->tokens, kChunk);
    Deadline deadline(r.p->timeout_ns);
    s_placed = 0;
    unsigned last = 0;
    for (;;) {
      const unsigned seen = ld_acquire_gpu(&r.control()[kChunksPlaced]);
      if (seen == chunks) {
        s_placed = 1;
        break;
      }
      if (seen != last) {  // chunks are still being placed: no timeout
        last = seen;
        deadline.progress();
      }
      if (aborted(r.p)) break;
      if (deadline.expired()) {
        report_timeout(r, FDM_ROLE_DISPATCH_SUBSCRIBER, FDM_WAIT_PLACEMENT, chunks, seen);
        break;
      }
    }
    if (s_placed) {
      const unsigned nle = r.p->local_experts_of[r.global];
      unsigned long long tiles = 0;
      for (unsigned k = 0; k < nle; ++k) {
        const unsigned slot = r.p->first_rank * nle + k;
        s.handled[slot / 32] |= 1u << (slot % 32);
        tiles += fdm_div_ceil(in_place_rows(r, k, nle), kBM);
      }
      s.in_place_slots = nle;
      s.in_place_row_tiles = (unsigned)tiles;
    }
  }
  asm volatile("bar.sync 3, %0;" ::"r"(count) : "memory");
  return s_placed != 0;
}
