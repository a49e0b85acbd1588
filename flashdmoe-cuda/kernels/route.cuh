// route.cuh -- phase A1-A3 of a forward (core's `routing`, run on the GPU by every block of
// the device, separated by grid barriers in moe.cu): the router GEMM, scores + top-k per
// token (the paper's softmax, or sigmoid / top-k softmax scores with router and selection
// biases, grouped top-k and routed scaling, as config.cuh's FDM_* select), and the
// deterministic placement of each routed (token, slot) in its expert's packet with capacity
// drops (lowest token index wins). The per-forward counter reset runs first.
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
      r.control()[kDispatchedNs] = 0u;
    }
  }
}

/// A1: logits[t][e] = x[t] . router[e] in f32, on tensor cores.
__device__ void router_gemm(const fdm_params* p, char* smem) {
  if (p->given_experts != 0ull) return;  // routing given: no logits
  // The tile runs on the block's first Router::kThreads threads (its barrier is named when
  // the block is larger: config.cuh).
  if (threadIdx.x >= (unsigned)Router::kThreads) return;
  const unsigned T = p->tokens;  // this forward's (<= the layout's, the row stride)
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

/// Steps 1-5 of the router for token t of rank r (one thread; router_math.h): its logits
/// become its scores, topk_expert / topk_weight and the chunk's shared list (s_topk_row) its
/// slots.
__device__ void route_token(const Rank& r, unsigned t, unsigned* s_topk_row) {
  const Elem* rb = reinterpret_cast<const Elem*>(r.p->router_bias);
  const Elem* sb = reinterpret_cast<const Elem*>(r.p->selection_bias);
  unsigned* experts = r.topk_expert() + (unsigned long long)t * kTopK;
  SpecRouter::route(r.logits() + (unsigned long long)t * kE, [rb](int e) { return to_f32(rb[e]); },
                    [sb](int e) { return to_f32(sb[e]); }, __uint_as_float(FDM_SCALING_BITS), experts,
                    r.topk_weight() + (unsigned long long)t * kTopK);
#pragma unroll 1
  for (int j = 0; j < kTopK; ++j) s_topk_row[j] = experts[j];
}

/// Steps 1-5 replaced by the caller's choice (routing given): token t's experts and weights
/// copied from the given arrays (`[local ranks][tokens][k]`). An expert out of range or chosen
/// twice is reported (the forward fails with the token named); its slot then names expert 0
/// with weight 0, so nothing indexes out of bounds before every role has seen the abort.
__device__ void given_token(const Rank& r, unsigned t, unsigned* s_topk_row) {
  const unsigned long long base = ((unsigned long long)r.local * r.p->tokens + t) * kTopK;
  const unsigned* ids = r.p->given_experts + base;
  const float* ws = r.p->given_weights + base;
  unsigned* experts = r.topk_expert() + (unsigned long long)t * kTopK;
  float* weights = r.topk_weight() + (unsigned long long)t * kTopK;
#pragma unroll 1
  for (int j = 0; j < kTopK; ++j) {
    unsigned e = ids[j];
    bool bad = e >= (unsigned)kE;
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

/// A2: top-k per token and within-chunk positions per expert.
__device__ void route_chunks(const fdm_params* p, unsigned* s_topk) {
  const unsigned T = p->tokens;  // this forward's (<= the layout's, the row stride)
  const unsigned chunks = fdm_div_ceil(T, kChunk);
  for (unsigned job = blockIdx.x; job < chunks * p->local_ranks; job += gridDim.x) {
    Rank r = make_rank(p, job / chunks);
    const unsigned chunk = job % chunks;
    const unsigned t = chunk * kChunk + threadIdx.x;
    if (threadIdx.x < (unsigned)kChunk && t < T) {
      if (p->given_experts != 0ull) given_token(r, t, s_topk + threadIdx.x * kTopK);
      else route_token(r, t, s_topk + threadIdx.x * kTopK);
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
  const unsigned T = p->tokens;
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
      const bool kept = pos < p->capacity;  // this forward's; l.capacity is the stride
      r.slot_row()[slot] = kept ? pos : kDropped;
      if (kept) r.expert_tokens()[(unsigned long long)e * l.capacity + pos] = slot / kTopK;
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
