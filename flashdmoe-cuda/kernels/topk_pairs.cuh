// topk_pairs.cuh -- an experiment (FDM_A2_PAIRS, kernels::EXPERIMENTS): A2's first half routes
// two tokens a warp at once where a warp routes a token (routers without grouped top-k), so
// the two tokens' dependent chains -- lane 0's serial softmax sum, the K picks' warp
// reductions and lane 0's bookkeeping -- overlap instead of following one another. Each token
// gets the bits route_token_warp gives it: the same steps in the same order a token (its
// softmax sum by lane n, n = the token's place in the pair, in expert order). Included by
// topk.cuh after route_token_warp; perf-notes v41 (i).
#pragma once

/// Whether A2 routes tokens in pairs: the experiment is on and the router has no grouped
/// top-k (whose group scores keep route_token_warp's one-token form).
constexpr bool kPairRouter = SpecRouter::kGroups == 0;

/// Steps 1-5 of route_token_warp for tokens t[0] of rank r[0] and t[1] of rank r[1] by one
/// warp. `rows` holds two of route_token_warp's per-warp areas (kRouterE scores, then kTopK
/// picks) one after the other.
__device__ void route_token_pair_warp(const Rank (&r)[2], const unsigned (&t)[2], const TokenLogits (&logits)[2],
                                      float* rows, unsigned lane) {
  using R = SpecRouter;
  constexpr int E = R::kExperts;
  constexpr int kPer = (E + 31) / 32;
  constexpr int kArea = kRouterE + kTopK;
  // No group mask here: route_tokens calls this only where kPairRouter (compiled for every
  // router, so the condition cannot be a static_assert).
  static_assert(E == kRouterE && R::kTopK == kTopK, "SpecRouter is config.cuh's router");
  const Elem* rb = reinterpret_cast<const Elem*>(r[0].p->router_bias);
  const Elem* sb = reinterpret_cast<const Elem*>(r[0].p->selection_bias);
  float* row[2] = {rows, rows + kArea};
  // Step 1: the logits + the router bias.
  float v[2][kPer];
#pragma unroll
  for (int n = 0; n < 2; ++n) {
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int e = (int)lane + 32 * i;
      v[n][i] = logits[n].logit(i);
      if constexpr (R::kRouterBias) {
        if (e < E) v[n][i] += to_f32(rb[e]);
      }
    }
  }
  // Step 2: the scores.
  if constexpr (R::kScoring == flashdmoe::router::Scoring::Softmax) {
#pragma unroll
    for (int n = 0; n < 2; ++n) {
      unsigned mk = 0u;
#pragma unroll
      for (int i = 0; i < kPer; ++i) {
        if ((int)lane + 32 * i < E) mk = max(mk, order_key(v[n][i]));
      }
      const float m = key_value(__reduce_max_sync(0xFFFFFFFFu, mk));
#pragma unroll
      for (int i = 0; i < kPer; ++i) {
        const int e = (int)lane + 32 * i;
        if (e < E) row[n][e] = expf(v[n][i] - m);
      }
    }
    __syncwarp();
    // Lane n adds token n's terms in expert order (route_token_warp's lane 0, for each).
    float own = 0.f;
    if (lane < 2) {
      const float* mine = rows + lane * kArea;
#pragma unroll 8
      for (int e = 0; e < E; ++e) own += mine[e];
    }
    const float sum[2] = {__shfl_sync(0xFFFFFFFFu, own, 0), __shfl_sync(0xFFFFFFFFu, own, 1)};
#pragma unroll
    for (int n = 0; n < 2; ++n) {
#pragma unroll
      for (int i = 0; i < kPer; ++i) {
        const int e = (int)lane + 32 * i;
        if (e < E) v[n][i] = row[n][e] / sum[n];
      }
    }
    __syncwarp();  // lanes 0 and 1's reads of the rows before any lane overwrites them below
  } else if constexpr (R::kScoring == flashdmoe::router::Scoring::Sigmoid) {
#pragma unroll
    for (int n = 0; n < 2; ++n) {
#pragma unroll
      for (int i = 0; i < kPer; ++i) v[n][i] = 1.f / (1.f + expf(-v[n][i]));
    }
  }
  // The unbiased scores, for lane 0 to read back; step 3's choice scores.
  float c[2][kPer];
#pragma unroll
  for (int n = 0; n < 2; ++n) {
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int e = (int)lane + 32 * i;
      if (e < E) row[n][e] = v[n][i];
      c[n][i] = v[n][i];
      if constexpr (R::kSelBias) {
        if (e < E) c[n][i] += to_f32(sb[e]);
      }
    }
  }
  // Step 4: each token's K picks, best first, the two tokens' reductions side by side.
  __syncwarp();  // the scores in the rows before lane 0 reads them
  unsigned taken[2] = {0u, 0u};
  float chosen_sum[2] = {0.f, 0.f}, chosen_max[2] = {0.f, 0.f};
#pragma unroll 1
  for (int j = 0; j < kTopK; ++j) {
#pragma unroll
    for (int n = 0; n < 2; ++n) {
      float bv;
      const unsigned tk = taken[n];
      const int be = warp_best_expert<E>(c[n], lane, [&](int i, int) { return !((tk >> i) & 1u); }, bv);
      if ((int)lane == be % 32) taken[n] |= 1u << (be / 32);
      if (lane == 0) {
        const float pk = row[n][be];
        chosen_sum[n] += pk;
        chosen_max[n] = j == 0 ? pk : fmaxf(chosen_max[n], pk);
        r[n].topk_expert()[(unsigned long long)t[n] * kSlots + j] = (unsigned)be;
        row[n][kRouterE + j] = pk;
      }
    }
  }
  // Step 5, then the weights out.
  if (lane == 0) {
#pragma unroll
    for (int n = 0; n < 2; ++n)
      R::finish(row[n] + kRouterE, chosen_sum[n], chosen_max[n], __uint_as_float(FDM_SCALING_BITS));
  }
  __syncwarp();
#pragma unroll
  for (int n = 0; n < 2; ++n) {
    float* weights = r[n].topk_weight() + (unsigned long long)t[n] * kSlots;
    for (unsigned j = lane; j < (unsigned)kTopK; j += 32) weights[j] = row[n][kRouterE + j];
  }
  __syncwarp();  // every lane's read of the picks before the warp's next tokens overwrite them
}

/// route_tokens' loop for routed (not given) tokens in pairs: the warp's jobs job, job +
/// stride, ... taken two at a time, the next pair's logits in flight while it routes this one;
/// a last job alone goes through route_token_warp. Each token's shared-expert slots follow, as
/// in route_tokens.
__device__ void route_token_pairs(const fdm_params* p, float* rows, unsigned job, unsigned jobs, unsigned stride,
                                  unsigned lane) {
  const unsigned T = p->tokens;
  TokenLogits next[2];
  const auto load = [&](unsigned j, TokenLogits& into) {
    if (j < jobs) into.load(make_rank(p, j / T), j % T, lane);
  };
  load(job, next[0]);
  load(job + stride, next[1]);
  for (; job < jobs; job += 2 * stride) {
    const unsigned j1 = job + stride;
    const TokenLogits cur[2] = {next[0], next[1]};
    load(job + 2 * stride, next[0]);
    load(job + 3 * stride, next[1]);
    const Rank rk[2] = {make_rank(p, job / T), make_rank(p, min(j1, jobs - 1) / T)};
    const unsigned t[2] = {job % T, j1 % T};
    if (j1 < jobs) {
      route_token_pair_warp(rk, t, cur, rows, lane);
    } else {
      route_token_warp(rk[0], t[0], cur[0], rows, rows + kRouterE, lane);
    }
#pragma unroll
    for (int n = 0; n < 2; ++n) {
      if (n == 1 && j1 >= jobs) break;
      const float dot = kSharedGate ? shared_gate_dot(rk[n], t[n], lane) : 0.f;
      if (lane == 0) shared_slots(rk[n], t[n], dot);
    }
  }
}
