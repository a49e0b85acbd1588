// topk.cuh -- phase A2 of a forward (core's `routing`, steps 1-5, and its chunk counts): every
// token's slots from its router logits (the paper's softmax, or sigmoid / top-k softmax scores
// with router and selection biases, grouped top-k and routed scaling, as config.cuh's FDM_*
// select; then its shared experts' parts), a warp a token or, for small routers at large T, a
// thread a token (`lanes_route`); then each 128-token chunk's within-chunk positions and
// per-expert counts, which A3 (route.cuh) turns into placements. Every form gives the serial
// specification's bits (router_math.h `Router::route`).
#pragma once

#include <cooperative_groups.h>

#include "heap.cuh"

/// Step 1's reads for one token: lane l's experts' logits (expert l + 32 i in `part[i]`), each
/// as the router jobs' K parts, every load issued before any is used. A warp issues its next
/// token's loads before it works on the current one (route_tokens), so the L2 round trip of
/// the logits, which the router jobs stored just before A2's grid barrier, overlaps a token's
/// reductions instead of starting each.
struct TokenLogits {
  static constexpr int kPer = (kRouterE + 31) / 32;
  float part[kPer][kRouterSplit];

  __device__ void load(const Rank& r, unsigned t, unsigned lane) {
    const unsigned long long part_stride = (unsigned long long)r.p->layout.tokens * kRouterE;
    const float* row = r.logits() + (unsigned long long)t * kRouterE;
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int e = (int)lane + 32 * i;
#pragma unroll
      for (int k = 0; k < kRouterSplit; ++k) part[i][k] = e < kRouterE ? row[k * part_stride + e] : 0.f;
    }
  }

  /// Expert lane + 32 i's logit: the parts summed in order (one part: as stored).
  __device__ float logit(int i) const {
    float v = part[i][0];
#pragma unroll
    for (int k = 1; k < kRouterSplit; ++k) v += part[i][k];
    return v;
  }
};

/// The order key of a float for the warp's integer reductions: a larger value has a larger key
/// and equal values (+0 and -0 included) equal keys, for every value but NaN (which gets some
/// key: one answer for the warp still).
__device__ __forceinline__ unsigned order_key(float f) {
  const unsigned u = f == 0.f ? 0u : __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/// The value of an order key (a zero comes back as +0).
__device__ __forceinline__ float key_value(unsigned key) {
  return __uint_as_float((key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key);
}

/// A warp's best candidate: (value, index) with the larger value, equal values to the lower
/// index (the serial router's order: descending score, ascending index); index -1 is no
/// candidate, and the indices of the lanes' candidates differ. Every lane ends with the
/// winner's value (its bits, -0 included) and index, or lane 0's value and -1 where no lane
/// has one: one answer for the warp whatever the values, NaN included. Two `redux.sync`
/// (the best key, then the lowest index holding it), a ballot and a shuffle: a fixed path of
/// ~5 warp instructions where a butterfly took 5 dependent rounds of two shuffles each.
__device__ __forceinline__ void warp_best(float& v, int& idx) {
  const bool has = idx >= 0;
  const unsigned key = has ? order_key(v) : 0u;
  const unsigned best_key = __reduce_max_sync(0xFFFFFFFFu, key);
  const int best = __reduce_min_sync(0xFFFFFFFFu, has && key == best_key ? idx : 0x7FFFFFFF);
  const unsigned from = __ballot_sync(0xFFFFFFFFu, has && idx == best);
  v = __shfl_sync(0xFFFFFFFFu, v, from ? __ffs(from) - 1 : 0);
  idx = from ? best : -1;
}

/// The warp's best of the experts its lanes hold (lane l: expert e = l + 32 i, i < kPer, e < E)
/// that `admit(i, e)` lets in, by value `c[i]` in warp_best's order: its index (-1: none), and
/// its value in `v`.
template <int E, int kPer, class Admit>
__device__ __forceinline__ int warp_best_expert(const float (&c)[kPer], unsigned lane, Admit admit, float& v) {
  v = 0.f;
  int best = -1;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int e = (int)lane + 32 * i;
    if (e < E && admit(i, e) && (best < 0 || c[i] > v)) {
      v = c[i];
      best = e;
    }
  }
  warp_best(v, best);
  return best;
}

/// A2, steps 1-5 of the router for token t of rank r by one warp (lane = 0..31): the same
/// results, bit for bit, as SpecRouter::route (router_math.h, which its host test holds to
/// core's oracle) for finite logits. Lane l holds experts l, l + 32, ... in registers; the
/// maxima and the picks are warp reductions, exact in any order with the serial form's tie
/// rule (`warp_best`); the softmax sum is the one order-dependent step, and its order is a
/// warp's lanes' (router_math.h `lane_sum`), which this form adds as such. `row` (kRouterE
/// floats of the warp's shared memory) holds the scores for lane 0 to read back. One thread a
/// token took ~30 / ~50 / ~150 µs at E 128 k 2 / E 128 k 8 / DeepSeek-V3's E 256 (its chain of
/// ~E (k + 3) dependent reads; run 93's phase marks, perf-notes v30 (e)). Writes the token's first kTopK slots (topk_expert, topk_weight); `picks`
/// (kTopK floats of the warp's shared memory) holds the weights while step 5 works on them, so
/// it reads shared memory and not the global stores it just made (an L2 round trip each).
__device__ void route_token_warp(const Rank& r, unsigned t, const TokenLogits& logits, float* row, float* picks,
                                 unsigned lane) {
  using R = SpecRouter;
  constexpr int E = R::kExperts;
  constexpr int kPer = (E + 31) / 32;
  static_assert(E == kRouterE && R::kTopK == kTopK, "SpecRouter is config.cuh's router");
  const Elem* rb = reinterpret_cast<const Elem*>(r.p->router_bias);
  const Elem* sb = reinterpret_cast<const Elem*>(r.p->selection_bias);
  static_assert(kPer == TokenLogits::kPer, "a lane's experts");
  // Step 1: the logits (the router jobs' parts summed in order) + the router bias.
  float v[kPer];
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int e = (int)lane + 32 * i;
    v[i] = logits.logit(i);
    if constexpr (R::kRouterBias) {
      if (e < E) v[i] += to_f32(rb[e]);
    }
  }
  // Step 2: the scores.
  if constexpr (R::kScoring == flashdmoe::router::Scoring::Softmax) {
    // The maximum by its order key (key 0: a lane past E, E < 32, holds no expert): the value
    // the serial form's fmaxf finds, but for the sign of a zero maximum, which no v - m sees.
    unsigned mk = 0u;
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      if ((int)lane + 32 * i < E) mk = max(mk, order_key(v[i]));
    }
    const float m = key_value(__reduce_max_sync(0xFFFFFFFFu, mk));
    // The exps' sum in the specification's order (router_math.h `lane_sum`, core's
    // `tree_sum`): a lane's own in order, then a butterfly over the lanes, every lane getting
    // the same bits (float addition commutes; a lane past E adds its +0.0, which changes no
    // bit): ~E / 32 + 5 dependent adds where a serial sum took E (perf-notes v53 (c)).
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int e = (int)lane + 32 * i;
      if (e < E) {
        v[i] = expf(v[i] - m);
        sum += v[i];
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, o);
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int e = (int)lane + 32 * i;
      if (e < E) v[i] = v[i] / sum;
    }
  } else if constexpr (R::kScoring == flashdmoe::router::Scoring::Sigmoid) {
#pragma unroll
    for (int i = 0; i < kPer; ++i) v[i] = 1.f / (1.f + expf(-v[i]));
  }
  // The unbiased scores, which the picks' weights are, for lane 0 to read back.
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int e = (int)lane + 32 * i;
    if (e < E) row[e] = v[i];
  }
  // Step 3: choice scores (+ the selection bias), then the group mask.
  float c[kPer];
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int e = (int)lane + 32 * i;
    c[i] = v[i];
    if constexpr (R::kSelBias) {
      if (e < E) c[i] += to_f32(sb[e]);
    }
  }
  if constexpr (R::kGroups > 0) {
    constexpr int kPerGroup = R::kPerGroup;
    // Group g's score on lane g % 32 (g < 32: gs_lo, else gs_hi; at most 64 groups).
    float gs_lo = 0.f, gs_hi = 0.f;
#pragma unroll 1
    for (int g = 0; g < R::kGroups; ++g) {
      float b1;
      const int best = warp_best_expert<E>(c, lane, [&](int, int e) { return e / kPerGroup == g; }, b1);
      float score = b1;
      if constexpr (R::kTop2) {
        float b2;
        warp_best_expert<E>(c, lane, [&](int, int e) { return e / kPerGroup == g && e != best; }, b2);
        score = b1 + b2;
      }
      if ((int)lane == g % 32) (g < 32 ? gs_lo : gs_hi) = score;
    }
    unsigned long long kept = 0ull;
#pragma unroll 1
    for (int j = 0; j < R::kKeep; ++j) {
      float bv = 0.f;
      int bg = -1;
      const int g_lo = (int)lane, g_hi = (int)lane + 32;
      if (g_lo < R::kGroups && !((kept >> g_lo) & 1ull)) {
        bv = gs_lo;
        bg = g_lo;
      }
      if (g_hi < R::kGroups && !((kept >> g_hi) & 1ull) && (bg < 0 || gs_hi > bv)) {
        bv = gs_hi;
        bg = g_hi;
      }
      warp_best(bv, bg);
      kept |= 1ull << bg;
    }
    // Outside the kept groups an expert's choice score is 0 (the references' mask).
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int e = (int)lane + 32 * i;
      if (e < E && !((kept >> (e / kPerGroup)) & 1ull)) c[i] = 0.f;
    }
  }
  // Step 4: the K picks, best first; a pick leaves the candidates (bit i of `taken`: expert
  // lane + 32 i).
  __syncwarp();  // the scores in row before lane 0 reads them
  unsigned taken = 0u;
  unsigned* experts = r.topk_expert() + (unsigned long long)t * kSlots;
  float* weights = r.topk_weight() + (unsigned long long)t * kSlots;
  float chosen_sum = 0.f, chosen_max = 0.f;
#pragma unroll 1
  for (int j = 0; j < kTopK; ++j) {
    float bv;
    const int be = warp_best_expert<E>(c, lane, [&](int i, int) { return !((taken >> i) & 1u); }, bv);
    if ((int)lane == be % 32) taken |= 1u << (be / 32);
    if (lane == 0) {
      const float p = row[be];
      chosen_sum += p;
      chosen_max = j == 0 ? p : fmaxf(chosen_max, p);
      experts[j] = (unsigned)be;
      picks[j] = p;
    }
  }
  // Step 5, then the weights out.
  if (lane == 0) R::finish(picks, chosen_sum, chosen_max, __uint_as_float(FDM_SCALING_BITS));
  __syncwarp();
  for (unsigned j = lane; j < (unsigned)kTopK; j += 32) weights[j] = picks[j];
  __syncwarp();  // every lane's read of picks before the warp's next token overwrites them
}

/// Steps 1-5 replaced by the caller's choice (routing given): token t's experts and weights
/// copied from the given arrays (`[local ranks][tokens][k]`) into its first kTopK slots
/// (`experts`, `weights`: the token's slots in scratch, or a thread's registers). An
/// expert out of range or chosen twice is reported (the forward fails with the token named);
/// its slot then names expert 0 with weight 0, so nothing indexes out of bounds before every
/// role has seen the abort.
__device__ __forceinline__ void given_token(const Rank& r, unsigned t, unsigned* experts, float* weights) {
  const unsigned long long base = ((unsigned long long)r.local * r.p->tokens + t) * kTopK;
  const unsigned* ids = r.p->given_experts + base;
  const float* ws = r.p->given_weights + base;
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
  }
}

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
#pragma unroll 4  // four vectors of each row in flight a lane, not one L2 round trip a step
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
/// each with the weight gs (1, or the sigmoid of `gate_dot`).
__device__ void shared_slots(const Rank& r, unsigned t, float gate_dot) {
  if constexpr (kShared > 0) {
    const float gs = kSharedGate ? SpecShared::gate(gate_dot) : 1.f;
    SpecShared::append(r.global, gs, r.topk_expert() + (unsigned long long)t * kSlots + kTopK,
                       r.topk_weight() + (unsigned long long)t * kSlots + kTopK);
  }
}

/// A2, first half: every token's kSlots slots (its router's picks, or the given ones, then its
/// shared experts'), a warp a token, the tokens of every local rank dealt over all the
/// device's warps. Each warp's kRouterE + kTopK floats of shared memory (`smem`) hold its
/// token's scores and picks.
__device__ void route_tokens(const fdm_params* p, char* smem) {
  constexpr int kWarpFloats = kRouterE + kTopK;
  static_assert(kWarps * kWarpFloats * 4 <= kSmemBytes, "A2's score rows fit the block");
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float* row = reinterpret_cast<float*>(smem) + warp * kWarpFloats;
  const unsigned T = p->tokens;  // this forward's (<= the layout's, the row stride)
  const bool given = p->given_experts != 0ull;
  const unsigned jobs = T * p->local_ranks, stride = gridDim.x * kWarps;
  unsigned job = blockIdx.x * kWarps + warp;
  TokenLogits next;  // the logits of the warp's next token, in flight while it routes this one
  if (!given && job < jobs) next.load(make_rank(p, job / T), job % T, lane);
  for (; job < jobs; job += stride) {
    const Rank r = make_rank(p, job / T);
    const unsigned t = job % T;
    if (given) {
      if (lane == 0) {
        given_token(r, t, r.topk_expert() + (unsigned long long)t * kSlots,
                    r.topk_weight() + (unsigned long long)t * kSlots);
      }
    } else {
      const TokenLogits logits = next;
      if (job + stride < jobs) next.load(make_rank(p, (job + stride) / T), (job + stride) % T, lane);
      route_token_warp(r, t, logits, row, row + kRouterE, lane);
    }
    const float dot = kSharedGate ? shared_gate_dot(r, t, lane) : 0.f;
    if (lane == 0) shared_slots(r, t, dot);
  }
}

/// A2's shared memory for a chunk: its slots' experts, each warp's running count per expert
/// and the chunk's totals.
struct RouteSmem {
  static constexpr int kSlotsBytes = kChunk * kSlots * 4;
  static constexpr int kCountsBytes = (kE * 4 + 15) / 16 * 16;
  static constexpr int kBytes = kSlotsBytes + kCountsBytes + kWarps * kE * 4;  // a multiple of 4
  unsigned* slots;   // [kChunk][kSlots]: each (token, slot)'s expert
  unsigned* counts;  // [kE]: the chunk's pairs per expert
  unsigned* warp_counts;  // [kWarps][kE]: a warp's segment's pairs per expert, then its prefix
  __device__ explicit RouteSmem(char* smem)
      : slots(reinterpret_cast<unsigned*>(smem)),
        counts(reinterpret_cast<unsigned*>(smem + kSlotsBytes)),
        warp_counts(reinterpret_cast<unsigned*>(smem + kSlotsBytes + kCountsBytes)) {}
};
static_assert(RouteSmem::kBytes <= kSmemBytes, "A2's slots and counts fit the block");

/// One warp's pass over its segment [first, end) of the chunk's pairs, 32 at a time: lanes
/// naming the same expert rank among themselves (match.any) on top of the warp's running count
/// `count[e]`, which the group's last lane advances. With `slot_row` the positions are stored.
__device__ void count_segment(const RouteSmem& sm, unsigned* count, unsigned first, unsigned end, unsigned* slot_row) {
  const unsigned lane = threadIdx.x % 32;
  for (unsigned base = first; base < end; base += 32) {
    const unsigned i = base + lane;
    const bool valid = i < end;
    const unsigned e = valid ? sm.slots[i] : 0xFFFFFFFFu;
    const unsigned peers = __match_any_sync(0xFFFFFFFFu, e);
    const unsigned before = __popc(peers & ((1u << lane) - 1u));
    const unsigned c = valid ? count[e] : 0u;
    __syncwarp();  // every lane read its expert's count before the leaders advance them
    if (valid) {
      if (slot_row) slot_row[i] = c + before;
      if (lane == 31u - __clz(peers)) count[e] = c + __popc(peers);
    }
    __syncwarp();
  }
}

/// Within-chunk positions, by every warp of the block: position = how many earlier pairs of
/// the chunk chose the same expert, as core's `routing` counts. Warp w takes a segment of the
/// `pairs` in order; it counts its segment's pairs per expert, the warps' counts become
/// exclusive prefixes (a thread an expert, warps in order: the chunk's totals in `counts`),
/// and each warp walks its segment again from its prefix. The same positions as one warp
/// walking all pairs (warp 0 alone took pairs / 32 steps: 32 at k 8).
__device__ void chunk_positions(const Rank& r, unsigned chunk, unsigned pairs, const RouteSmem& sm) {
  const unsigned warp = threadIdx.x / 32;
  const unsigned segment = fdm_div_ceil(fdm_div_ceil(pairs, kWarps), 32u) * 32u;
  const unsigned first = min(pairs, warp * segment), end = min(pairs, first + segment);
  unsigned* mine = sm.warp_counts + warp * kE;
  for (unsigned e = threadIdx.x % 32; e < (unsigned)kE; e += 32) mine[e] = 0u;
  __syncwarp();
  count_segment(sm, mine, first, end, nullptr);
  __syncthreads();
  for (unsigned e = threadIdx.x; e < (unsigned)kE; e += kThreads) {
    unsigned running = 0u;
    for (int w = 0; w < kWarps; ++w) {
      const unsigned c = sm.warp_counts[w * kE + e];
      sm.warp_counts[w * kE + e] = running;
      running += c;
    }
    sm.counts[e] = running;
  }
  __syncthreads();
  count_segment(sm, mine, first, end, r.slot_row() + (unsigned long long)chunk * kChunk * kSlots);
}

/// A2, second half (after a grid barrier): each chunk's within-chunk positions per expert and
/// its per-expert counts (for A3), a block a chunk.
/// A chunk's within-chunk positions and per-expert counts (for A3), by the whole block, once the
/// experts of its n tokens' slots are in `sm.slots` (and a __syncthreads made them visible).
__device__ void count_chunk(const Rank& r, unsigned chunk, unsigned n, const RouteSmem& sm) {
  chunk_positions(r, chunk, n * kSlots, sm);
  __syncthreads();
  for (unsigned e = threadIdx.x; e < (unsigned)kE; e += kThreads) r.chunk_counts()[chunk * kE + e] = sm.counts[e];
  __syncthreads();
}

__device__ void route_chunks(const fdm_params* p, char* smem) {
  const RouteSmem sm(smem);
  const unsigned T = p->tokens;
  const unsigned chunks = fdm_div_ceil(T, kChunk);
  for (unsigned job = blockIdx.x; job < chunks * p->local_ranks; job += gridDim.x) {
    Rank r = make_rank(p, job / chunks);
    const unsigned chunk = job % chunks;
    const unsigned n = min((unsigned)kChunk, T - chunk * kChunk);
    const unsigned* experts = r.topk_expert() + (unsigned long long)chunk * kChunk * kSlots;
    for (unsigned i = threadIdx.x; i < n * kSlots; i += kThreads) sm.slots[i] = experts[i];
    __syncthreads();
    count_chunk(r, chunk, n, sm);
  }
}

/// Whether A2 may route a token a thread, in the block that then counts the token's chunk
/// (`route_chunks_by_threads`): routers of at most 32 experts without expert groups or a shared
/// gate, whose serial form (router_math.h `Router::route`, the specification itself) keeps a
/// token's scores in registers. `lanes_route` says when it does.
constexpr bool kLaneRouter = kRouterE <= 32 && SpecRouter::kGroups == 0 && !kSharedGate;

/// Whether this forward routes a token a thread (kLaneRouter): when a warp a token would leave
/// each warp at least E / 4 tokens to route one after another. A warp routes a token in ~1.5
/// µs, so its form costs ~1.5 µs a token a warp and a grid barrier; a thread's serial form
/// costs ~0.3-0.4 µs an expert whatever T is (run 110, a thread a token against a warp a
/// token: T16384 E8 16 -> 3 µs, T4096 E8 6 -> 5, T128 E8 5 -> 5; T16384 E32 16 -> 12, but
/// T4096 E32 8 -> 12 and T128 E32 5 -> 15).
__device__ __forceinline__ bool lanes_route(const fdm_params* p) {
  if constexpr (!kLaneRouter) {
    return false;
  } else {
    const unsigned warps = gridDim.x * kWarps;
    const unsigned per_warp = fdm_div_ceil(p->tokens * p->local_ranks, warps);
    return 4u * per_warp >= (unsigned)kRouterE;
  }
}

/// Floats a row of the chunk's logits takes in shared memory (route_chunks_by_threads): one
/// more than E, so the threads reading their tokens' rows at once hit distinct banks.
constexpr int kLogitStride = kRouterE + 1;

/// The chunk's logits into shared memory `rows` ([n][kLogitStride]), by every thread of the
/// block: the router jobs' K parts summed in order (as TokenLogits sums them), in order of the
/// chunk's contiguous floats, so a warp's loads are 128 contiguous bytes. (Each thread loading
/// its own token's row touched a sector a lane and a load: 29 µs for T128 E32's one chunk, run
/// 109.)
__device__ __forceinline__ void stage_chunk_logits(const Rank& r, unsigned first_token, unsigned n, float* rows) {
  const unsigned long long part_stride = (unsigned long long)r.p->layout.tokens * kRouterE;
  const float* src = r.logits() + (unsigned long long)first_token * kRouterE;
  constexpr int kBatch = 4;  // floats a thread loads (each with every part) before it stores any
  for (unsigned i0 = threadIdx.x; i0 < n * kRouterE; i0 += kBatch * kThreads) {
    float v[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const unsigned i = i0 + b * kThreads;
      v[b] = i < n * kRouterE ? src[i] : 0.f;
#pragma unroll
      for (int k = 1; k < kRouterSplit; ++k) {
        if (i < n * kRouterE) v[b] += src[k * part_stride + i];
      }
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const unsigned i = i0 + b * kThreads;
      if (i < n * kRouterE) rows[(i / kRouterE) * kLogitStride + i % kRouterE] = v[b];
    }
  }
}

/// A token routed by one thread from its logits `logits` (kRouterE floats of shared memory):
/// the router's kTopK slots in `experts`, `weights` (the caller appends the shared experts').
__device__ __forceinline__ void route_token_thread(const Rank& r, const float* logits, unsigned (&experts)[kSlots],
                                                   float (&weights)[kSlots]) {
  using R = SpecRouter;
  float row[kRouterE];
#pragma unroll
  for (int e = 0; e < kRouterE; ++e) row[e] = logits[e];
  const Elem* rb = reinterpret_cast<const Elem*>(r.p->router_bias);
  const Elem* sb = reinterpret_cast<const Elem*>(r.p->selection_bias);
  R::route(
      row, [&](int e) { return to_f32(rb[e]); }, [&](int e) { return to_f32(sb[e]); },
      __uint_as_float(FDM_SCALING_BITS), experts, weights);
}

/// Chunk `chunk` (its n tokens) of rank r routed a thread a token (kLaneRouter), by the whole
/// block: the block stages the chunk's logits in shared memory (`logits`), thread i routes the
/// chunk's token i (or copies its given routing), stores its slots and puts their experts in
/// `sm.slots`; the caller's next __syncthreads makes them visible.
__device__ __forceinline__ void route_chunk_by_threads(const Rank& r, unsigned chunk, unsigned n, const RouteSmem& sm,
                                                       float* logits, bool given) {
  if (!given) {
    stage_chunk_logits(r, chunk * kChunk, n, logits);
    __syncthreads();
  }
  if (threadIdx.x < n) {
    const unsigned t = chunk * kChunk + threadIdx.x;
    unsigned experts[kSlots];
    float weights[kSlots];
    if (given) {
      given_token(r, t, experts, weights);
    } else {
      route_token_thread(r, logits + threadIdx.x * kLogitStride, experts, weights);
    }
    // The shared experts' slots (this form has no shared gate: weight 1), as shared_slots.
    if constexpr (kShared > 0) SpecShared::append(r.global, 1.f, experts + kTopK, weights + kTopK);
    unsigned* out_e = r.topk_expert() + (unsigned long long)t * kSlots;
    float* out_w = r.topk_weight() + (unsigned long long)t * kSlots;
#pragma unroll
    for (int j = 0; j < kSlots; ++j) {
      out_e[j] = experts[j];
      out_w[j] = weights[j];
      sm.slots[threadIdx.x * kSlots + j] = experts[j];
    }
  }
}

/// A2 with kLaneRouter, a block a chunk (route_chunk_by_threads), then the block counts the
/// chunk's within-chunk positions and per-expert counts as route_chunks does. The latest block
/// done routing marks kTokensNs.
__device__ void route_chunks_by_threads(const fdm_params* p, char* smem) {
  static_assert(kChunk <= kThreads, "a thread a token of the chunk");
  const RouteSmem sm(smem);
  float* logits = reinterpret_cast<float*>(smem + RouteSmem::kBytes);
  static_assert(!kLaneRouter || RouteSmem::kBytes + kChunk * kLogitStride * 4 <= kSmemBytes,
                "A2's logits fit the block");
  const unsigned T = p->tokens;
  const unsigned chunks = fdm_div_ceil(T, kChunk);
  const bool given = p->given_experts != 0ull;
  for (unsigned job = blockIdx.x; job < chunks * p->local_ranks; job += gridDim.x) {
    Rank r = make_rank(p, job / chunks);
    const unsigned chunk = job % chunks;
    const unsigned n = min((unsigned)kChunk, T - chunk * kChunk);
    route_chunk_by_threads(r, chunk, n, sm, logits, given);
    __syncthreads();
    if (threadIdx.x == 0) mark_latest(r, kTokensNs);
    count_chunk(r, chunk, n, sm);
  }
}

/// Chunk `chunk` (its n tokens) of rank r routed a warp a token by the whole block (route_tokens'
/// form over one chunk: warp w takes tokens w, w + kWarps, ..., each warp's kRouterE + kTopK
/// floats of `smem` its scores and picks), then the chunk's experts staged in `sm.slots` (over
/// the warps' rows, after a barrier); the caller's next __syncthreads makes them visible.
__device__ __forceinline__ void route_chunk_by_warps(const Rank& r, unsigned chunk, unsigned n, const RouteSmem& sm,
                                                     char* smem, bool given) {
  constexpr int kWarpFloats = kRouterE + kTopK;
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float* row = reinterpret_cast<float*>(smem) + warp * kWarpFloats;
  const unsigned first = chunk * kChunk;
  TokenLogits next;
  if (!given && warp < n) next.load(r, first + warp, lane);
  for (unsigned i = warp; i < n; i += kWarps) {
    const unsigned t = first + i;
    if (given) {
      if (lane == 0) {
        given_token(r, t, r.topk_expert() + (unsigned long long)t * kSlots,
                    r.topk_weight() + (unsigned long long)t * kSlots);
      }
    } else {
      const TokenLogits logits = next;
      if (i + kWarps < n) next.load(r, t + kWarps, lane);
      route_token_warp(r, t, logits, row, row + kRouterE, lane);
    }
    const float dot = kSharedGate ? shared_gate_dot(r, t, lane) : 0.f;
    if (lane == 0) shared_slots(r, t, dot);
  }
  __syncthreads();  // every token's slots stored; the warps' rows free for sm.slots
  const unsigned* experts = r.topk_expert() + (unsigned long long)first * kSlots;
  for (unsigned i = threadIdx.x; i < n * kSlots; i += kThreads) sm.slots[i] = experts[i];
}

/// A2: a block a chunk, a thread a token (route_chunks_by_threads) where `lanes_route`;
/// otherwise both halves, a grid barrier between. Not inlined: its register allocation then
/// stays apart from the processors' (inlined, the SwiGLU 128x128 images spilled 20 bytes; two
/// calls, one a half, made ptxas serialise the processors' wgmmas).
__device__ __noinline__ void route(const fdm_params* p, char* smem) {
  const bool threads = lanes_route(p);
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    for (unsigned local = 0; local < p->local_ranks; ++local) make_rank(p, local).control()[kRouteThreads] = threads;
  }
  if (threads) {
    route_chunks_by_threads(p, smem);
  } else {
    route_tokens(p, smem);
    cooperative_groups::this_grid().sync();
    mark_phase(p, kTokensNs);
    route_chunks(p, smem);
  }
}
