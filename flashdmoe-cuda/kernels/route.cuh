// route.cuh -- phase A1-A3 of a forward (core's `routing`, run on the GPU by every block of
// the device, separated by grid barriers in moe.cu): the router GEMM, scores + top-k per
// token (the paper's softmax, or sigmoid / top-k softmax scores with router and selection
// biases, grouped top-k and routed scaling, as config.cuh's FDM_* select), and the
// deterministic placement of each routed (token, slot) in its expert's packet with capacity
// drops (lowest token index wins). With shared experts (FDM_SHARED = m > 0, config.cuh) every
// token takes m more slots after the router's k: its rank's m parts of the shared experts
// (SpecShared, router_math.h), placed like any slot (they never drop: dropless only). The
// router scores kRouterE experts; packets, counts and placement cover all kE. The per-forward
// counter reset runs first.
#pragma once

#include "heap.cuh"

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
    }
  }
}

/// A1: logits[t][e] = x[t] . router[e] in f32 (e < kRouterE), on tensor cores: with kRouterSplit > 1,
/// job (row tile, column tile, part) writes partial logits over its K part into array `part`
/// (A2 sums the parts in order, so the result does not depend on which job ran when).
__device__ void router_gemm(const fdm_params* p, char* smem) {
  if (p->given_experts != 0ull) return;  // routing given: no logits
  // The tile runs on the block's first Router::kThreads threads (its barrier is named when
  // the block is larger: config.cuh).
  if (threadIdx.x >= (unsigned)Router::kThreads) return;
  constexpr int kPartK = kH / kRouterSplit;
  const unsigned T = p->tokens;  // this forward's (<= the layout's, the row stride)
  const unsigned row_tiles = fdm_div_ceil(T, Router::BM);
  const unsigned col_tiles = fdm_div_ceil(kRouterE, Router::BN);
  const unsigned per_rank = row_tiles * col_tiles * kRouterSplit;
  const unsigned long long part_stride = (unsigned long long)p->layout.tokens * kRouterE;
  const Elem* router = reinterpret_cast<const Elem*>(p->router);
  for (unsigned job = blockIdx.x; job < per_rank * p->local_ranks; job += gridDim.x) {
    Rank r = make_rank(p, job / per_rank);
    const unsigned within = job % per_rank, part = within % kRouterSplit, tile = within / kRouterSplit;
    const unsigned rt = tile / col_tiles, ct = tile % col_tiles;
    const int rows = (int)fdm_tile_rows(T, rt, Router::BM);
    const int cols = (int)min((unsigned)Router::BN, kRouterE - ct * Router::BN);
    typename Router::Accum acc;
    Router::gemm(acc, r.x() + (unsigned long long)rt * Router::BM * kH + part * kPartK, kH, rows,
                 router + (unsigned long long)ct * Router::BN * kH + part * kPartK, kH, cols, kPartK, smem);
    Router::store<float>(acc, r.logits() + part * part_stride + (unsigned long long)rt * Router::BM * kRouterE + ct * Router::BN,
                         kRouterE, rows, cols, smem);
  }
}

/// Token t's logit of expert e: the router jobs' K parts summed in order (one part: as stored).
__device__ __forceinline__ float summed_logit(const float* logits, unsigned long long part_stride,
                                              unsigned long long i) {
  // Every part's load issued before the first add (one L2 round trip, not kRouterSplit).
  float parts[kRouterSplit];
#pragma unroll
  for (int part = 0; part < kRouterSplit; ++part) parts[part] = logits[part * part_stride + i];
  float v = parts[0];
#pragma unroll
  for (int part = 1; part < kRouterSplit; ++part) v += parts[part];
  return v;
}

/// Steps 1-5 of the router for token t of rank r (one thread; router_math.h): its logits
/// `row` (staged in shared memory by route_chunks when they fit, else in place in global
/// memory) become its scores, topk_expert / topk_weight and the chunk's shared list
/// (s_topk_row) its first kTopK slots.
__device__ void route_token(const Rank& r, unsigned t, float* row, unsigned* s_topk_row) {
  const Elem* rb = reinterpret_cast<const Elem*>(r.p->router_bias);
  const Elem* sb = reinterpret_cast<const Elem*>(r.p->selection_bias);
  unsigned* experts = r.topk_expert() + (unsigned long long)t * kSlots;
  SpecRouter::route(row, [rb](int e) { return to_f32(rb[e]); }, [sb](int e) { return to_f32(sb[e]); },
                    __uint_as_float(FDM_SCALING_BITS), experts, r.topk_weight() + (unsigned long long)t * kSlots);
#pragma unroll 1
  for (int j = 0; j < kTopK; ++j) s_topk_row[j] = experts[j];
}

/// Steps 1-5 replaced by the caller's choice (routing given): token t's experts and weights
/// copied from the given arrays (`[local ranks][tokens][k]`) into its first kTopK slots. An
/// expert out of range or chosen twice is reported (the forward fails with the token named);
/// its slot then names expert 0 with weight 0, so nothing indexes out of bounds before every
/// role has seen the abort.
__device__ void given_token(const Rank& r, unsigned t, unsigned* s_topk_row) {
  const unsigned long long base = ((unsigned long long)r.local * r.p->tokens + t) * kTopK;
  const unsigned* ids = r.p->given_experts + base;
  const float* ws = r.p->given_weights + base;
  unsigned* experts = r.topk_expert() + (unsigned long long)t * kSlots;
  float* weights = r.topk_weight() + (unsigned long long)t * kSlots;
#pragma unroll 1
  for (int j = 0; j < kTopK; ++j) {
    unsigned e = ids[j];
    bool bad = e >= (unsigned)kRouterE;
    for (int i = 0; i < j; ++i) bad |= ids[i] == e;
    if (bad) {
      report_timeout(r, FDM_ROLE_ROUTER, FDM_WAIT_INVALID_ROUTING, t, e);
      e = 0u;
    }
    experts[j] = e;
    weights[j] = bad ? 0.0f : ws[j];
    s_topk_row[j] = e;
  }
}

/// A2's shared memory: the chunk's slots, a running count per expert, with the shared gate
/// each token's dot product with the gate row, and (when they fit in the block's dynamic
/// shared memory) the chunk's logits. The router math reads each token's row many times (max,
/// sum, k passes over E): from shared memory that costs ~30 cycles a read, from global memory
/// an L2 round trip each (A2 took 16-17 us at every T before).
struct RouteSmem {
  static constexpr int kSlotsBytes = kChunk * kSlots * 4;
  static constexpr int kCountsBytes = (kE * 4 + 15) / 16 * 16;
  static constexpr int kGateBytes = kSharedGate ? kChunk * 4 : 0;
  static constexpr int kFixedBytes = kSlotsBytes + kCountsBytes + kGateBytes;
  // A staged row's stride, odd where it fits: the router math reads token t's row in thread t,
  // so with a stride of E floats (a multiple of 32 from E = 32 up) a warp's 32 reads of one
  // expert all fell in one bank and ran one after another (8-way at E = 8); A2 took ~5 / ~14 /
  // ~44 µs at E = 8 / 32 / 128 (run 57's marks, perf-notes v28 (h)). An odd stride gives the 32
  // lanes 32 banks.
  static constexpr int kPadded = kRouterE | 1;
  static constexpr int kRowStride = kFixedBytes + kChunk * kPadded * 4 <= kSmemBytes ? kPadded : kRouterE;
  static constexpr int kLogitsBytes = kChunk * kRowStride * 4;
  static constexpr bool kStagesLogits = kFixedBytes + kLogitsBytes <= kSmemBytes;
  unsigned* slots;  // [kChunk][kSlots]: each (token, slot)'s expert
  unsigned* counts; // [kE]: pairs of the chunk placed so far per expert
  float* gate;      // [kChunk]: x . gate_row of each token (kSharedGate), else null
  float* logits;    // [kChunk][kRowStride], or null (not staged)
  __device__ explicit RouteSmem(char* smem)
      : slots(reinterpret_cast<unsigned*>(smem)),
        counts(reinterpret_cast<unsigned*>(smem + kSlotsBytes)),
        gate(kSharedGate ? reinterpret_cast<float*>(smem + kSlotsBytes + kCountsBytes) : nullptr),
        logits(kStagesLogits ? reinterpret_cast<float*>(smem + kFixedBytes) : nullptr) {}
};
static_assert(RouteSmem::kFixedBytes <= kSmemBytes, "A2's slots fit the block");

/// Token t's row dotted with the shared experts' gate row (`shared_gate`), by one warp: the
/// row's 16-byte vectors dealt to the lanes in order, each lane's products summed in f32, then
/// a butterfly of the 32 partial sums (every lane gets the same value; the order is fixed, so
/// the result is deterministic).
__device__ float shared_gate_dot(const Rank& r, unsigned t, unsigned lane) {
  constexpr int kVec = 16 / sizeof(Elem);
  constexpr unsigned kVecs = kH / kVec;
  const uint4* x = reinterpret_cast<const uint4*>(r.x() + (unsigned long long)t * kH);
  const uint4* g = reinterpret_cast<const uint4*>(r.p->shared_gate);
  float acc = 0.f;
#pragma unroll 1
  for (unsigned v = lane; v < kVecs; v += 32) {
    const uint4 a = x[v], b = g[v];
    const Elem* ea = reinterpret_cast<const Elem*>(&a);
    const Elem* eb = reinterpret_cast<const Elem*>(&b);
#pragma unroll
    for (int i = 0; i < kVec; ++i) acc += to_f32(ea[i]) * to_f32(eb[i]);
  }
#pragma unroll
  for (int o = 16; o > 0; o /= 2) acc += __shfl_xor_sync(0xFFFFFFFFu, acc, o);
  return acc;
}

/// Token t's shared-expert slots after its router's (SpecShared): its rank's kShared parts,
/// each with the weight gs (1, or the sigmoid of `gate_dot`), into its slot arrays and the
/// chunk's list (`s_topk_row` = the token's kSlots entries).
__device__ void shared_slots(const Rank& r, unsigned t, float gate_dot, unsigned* s_topk_row) {
  if constexpr (kShared > 0) {
    const float gs = kSharedGate ? SpecShared::gate(gate_dot) : 1.f;
    SpecShared::append(r.global, gs, r.topk_expert() + (unsigned long long)t * kSlots + kTopK,
                       r.topk_weight() + (unsigned long long)t * kSlots + kTopK);
#pragma unroll 1
    for (int j = 0; j < kShared; ++j) s_topk_row[kTopK + j] = SpecShared::expert(r.global, j);
  }
}

/// Within-chunk positions, by warp 0: the chunk's `pairs` (token, slot) pairs in order, 32 at a
/// time; lanes naming the same expert rank among themselves (match.any), on top of that
/// expert's running count. Position = how many earlier pairs of the chunk chose the same
/// expert, as core's `routing` counts.
__device__ void chunk_positions(const Rank& r, unsigned chunk, unsigned pairs, const RouteSmem& sm) {
  const unsigned lane = threadIdx.x % 32;
  unsigned* slot_row = r.slot_row() + (unsigned long long)chunk * kChunk * kSlots;
  for (unsigned base = 0; base < pairs; base += 32) {
    const unsigned i = base + lane;
    const bool valid = i < pairs;
    const unsigned e = valid ? sm.slots[i] : 0xFFFFFFFFu;
    const unsigned peers = __match_any_sync(0xFFFFFFFFu, e);
    const unsigned before = __popc(peers & ((1u << lane) - 1u));
    const unsigned count = valid ? sm.counts[e] : 0u;
    __syncwarp();  // every lane read its expert's count before the leaders advance them
    if (valid) {
      slot_row[i] = count + before;
      if (lane == 31u - __clz(peers)) sm.counts[e] = count + __popc(peers);
    }
    __syncwarp();
  }
}

/// A2: top-k per token and within-chunk positions per expert. Not inlined: its register
/// allocation then stays apart from the processors' (inlined, the SwiGLU 128x128 images
/// spilled 20 bytes).
__device__ __noinline__ void route_chunks(const fdm_params* p, char* smem) {
  const RouteSmem sm(smem);
  const unsigned T = p->tokens;  // this forward's (<= the layout's, the row stride)
  const unsigned chunks = fdm_div_ceil(T, kChunk);
  const bool given = p->given_experts != 0ull;
  for (unsigned job = blockIdx.x; job < chunks * p->local_ranks; job += gridDim.x) {
    Rank r = make_rank(p, job / chunks);
    const unsigned chunk = job % chunks;
    const unsigned n = min((unsigned)kChunk, T - chunk * kChunk);
    for (unsigned e = threadIdx.x; e < (unsigned)kE; e += kThreads) sm.counts[e] = 0u;
    float* logits = r.logits() + (unsigned long long)chunk * kChunk * kRouterE;
    const unsigned long long part_stride = (unsigned long long)p->layout.tokens * kRouterE;
    if (!given && (RouteSmem::kStagesLogits || kRouterSplit > 1)) {
      // Staged: the chunk's logits into shared memory (rows kRowStride apart); not staged but
      // split: the parts' sum into part 0 in place, which route_token then reads. Each thread
      // loads kStageBatch elements (every part of each) before it stores any: one element a
      // thread at a time waited an L2 round trip per element, 11-128 of them a thread, most of
      // A2's ~13 / ~32 µs at E 32 / 128 (perf-notes v29 (a)). The same sums, in the same order.
      constexpr unsigned kStageBatch = kRouterSplit >= 4 ? 4 : 8;
      const unsigned total = n * kRouterE;
      for (unsigned i0 = threadIdx.x; i0 < total; i0 += kStageBatch * kThreads) {
        float v[kStageBatch];
        // Past the end a thread re-reads the last element (never stored): no branch between the
        // loads, so they are all issued before the first add waits.
#pragma unroll
        for (unsigned b = 0; b < kStageBatch; ++b) v[b] = summed_logit(logits, part_stride, min(i0 + b * kThreads, total - 1));
#pragma unroll
        for (unsigned b = 0; b < kStageBatch; ++b) {
          const unsigned i = i0 + b * kThreads;
          if (i >= total) break;
          if constexpr (RouteSmem::kStagesLogits) {
            sm.logits[i / kRouterE * RouteSmem::kRowStride + i % kRouterE] = v[b];
          } else {
            logits[i] = v[b];
          }
        }
      }
    }
    if constexpr (kSharedGate) {
      // One warp a token: its row against the shared gate row.
      for (unsigned i = threadIdx.x / 32; i < n; i += kWarps) {
        const float dot = shared_gate_dot(r, chunk * kChunk + i, threadIdx.x % 32);
        if (threadIdx.x % 32 == 0) sm.gate[i] = dot;
      }
    }
    __syncthreads();
    const unsigned t = chunk * kChunk + threadIdx.x;
    if (threadIdx.x < n) {
      unsigned* s_topk_row = sm.slots + threadIdx.x * kSlots;
      if (given) {
        given_token(r, t, s_topk_row);
      } else {
        float* row = RouteSmem::kStagesLogits ? sm.logits + threadIdx.x * RouteSmem::kRowStride
                                              : r.logits() + (unsigned long long)t * kRouterE;
        route_token(r, t, row, s_topk_row);
      }
      shared_slots(r, t, kSharedGate ? sm.gate[threadIdx.x] : 0.f, s_topk_row);
    }
    __syncthreads();
    if (threadIdx.x < 32) chunk_positions(r, chunk, n * kSlots, sm);
    __syncthreads();
    for (unsigned e = threadIdx.x; e < (unsigned)kE; e += kThreads) r.chunk_counts()[chunk * kE + e] = sm.counts[e];
    __syncthreads();
  }
}

/// A3: global positions (prefix over earlier chunks + within-chunk position) and capacity
/// drops (kept iff position < capacity: the lowest token indices win).
__device__ void place_chunks(const fdm_params* p, unsigned* s_offset) {
  const fdm_layout& l = p->layout;
  const unsigned T = p->tokens;
  const unsigned chunks = fdm_div_ceil(T, kChunk);
  for (unsigned job = blockIdx.x; job < chunks * p->local_ranks; job += gridDim.x) {
    Rank r = make_rank(p, job / chunks);
    const unsigned chunk = job % chunks;
    for (unsigned e = threadIdx.x; e < (unsigned)kE; e += kThreads) {
      // The earlier chunks' counts, 8 loads in flight (one at a time, the last of T16384's 43
      // chunks waited 42 L2 round trips).
      unsigned off = 0;
#pragma unroll 8
      for (unsigned c = 0; c < chunk; ++c) off += r.chunk_counts()[c * kE + e];
      s_offset[e] = off;
    }
    __syncthreads();
    const unsigned n = min((unsigned)kChunk, T - chunk * kChunk);
    for (unsigned i = threadIdx.x; i < n * kSlots; i += kThreads) {
      const unsigned slot = chunk * kChunk * kSlots + i;
      const unsigned e = r.topk_expert()[slot];
      const unsigned pos = s_offset[e] + r.slot_row()[slot];
      const bool kept = pos < p->capacity;  // this forward's; l.capacity is the stride
      r.slot_row()[slot] = kept ? pos : kDropped;
      if (kept) {
        r.expert_tokens()[(unsigned long long)e * l.capacity + pos] = slot / kSlots;
        const float w = r.topk_weight()[slot];
        r.expert_weights()[(unsigned long long)e * l.capacity + pos] = w;  // travels with the row (A4)
        // A row GEMM0 reads in place never travels, but its weight goes where GEMM1 looks for
        // every row's: the owner's dispatch weights (published with expert_tokens, which GEMM0
        // already depends on).
        const unsigned owner = p->expert_owner[e];
        if (kReadsInPlace && on_this_gpu(p, owner)) {
          *reinterpret_cast<float*>(r.heap_of(owner) + fdm_dispatch_weight(&l, r.global, p->expert_local[e], pos)) = w;
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
}
