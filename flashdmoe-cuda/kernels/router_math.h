// router_math.h -- the router's math for one token beyond the logits' GEMM (core's `routing`
// module doc, steps 1-5): router bias, scores, choice scores with the selection bias and the
// expert-group mask, top-k, combine weights. Plain C++17 for the host and the GPU alike: the
// kernel's A2 (topk.cuh, through NVRTC) runs it, and flashdmoe-cuda/tests/router_math.rs
// compiles it with the host C++ compiler under the same FDM_* defines (MoeSpec::defines) and
// holds its output to core's oracle, so the code the GPU runs is checked without a GPU.
//
// Everything is O(1) registers per token whatever E and k are (arrays of k picks made the
// whole kernel spill at k = 6): each pick is the best candidate strictly after the previous one
// in (score descending, index ascending) order, and scores are re-read, not kept. This serial
// form is the specification. The kernel runs it a thread a token where the router is small
// (topk.cuh `kLaneRouter`: its loops over E unroll, so a token's scores stay in registers), and
// otherwise a warp a token (`route_token_warp`), which must give the same bits (its steps are
// exact in any order but the softmax sum, whose order is a warp's: `lane_sum`, core's
// `tree_sum`); `finish` (step 5) is shared by both.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define FDM_HD __host__ __device__ __forceinline__
#define FDM_NO_UNROLL _Pragma("unroll 1")
#define FDM_UNROLL _Pragma("unroll")
#else
#include <math.h>
#define FDM_HD inline
#define FDM_NO_UNROLL
#define FDM_UNROLL
#endif

namespace flashdmoe {
namespace router {

/// core's `routing::Scoring`.
enum class Scoring : int { Softmax = 0, Sigmoid = 1, TopKSoftmax = 2 };

/// One specialisation of the router: E experts, top-K, the scoring, the biases, grouped top-k
/// (`Groups` = 0: none; else `Keep` of them kept, ranked by their best score or, with `Top2`,
/// their two best added), renormalisation and whether a routed scaling factor applies.
template <int E, int K, Scoring S, bool RouterBias, bool SelBias, int Groups, int Keep, bool Top2,
          bool Renorm, bool Scaled>
struct Router {
  static_assert(K >= 1 && K <= E, "1 <= top_k <= experts");
  static_assert(Groups == 0 || (Groups <= 64 && E % Groups == 0 && Keep >= 1 && Keep <= Groups),
                "grouped top-k: at most 64 groups dividing the experts, 1 <= keep <= groups");
  static constexpr int kPerGroup = Groups > 0 ? E / Groups : E;
  // The parameters, for the kernel's warp form of route() (topk.cuh `route_token_warp`).
  static constexpr int kExperts = E, kTopK = K, kGroups = Groups, kKeep = Keep;
  static constexpr Scoring kScoring = S;
  static constexpr bool kRouterBias = RouterBias, kSelBias = SelBias, kTop2 = Top2;
  static_assert(!Top2 || Groups == 0 || kPerGroup >= 2, "a top-2 group score needs 2 experts a group");

  /// The softmax's sum of a token's exponentials `z` in the specification's order (core's
  /// `routing::tree_sum`, what a warp's lanes add): lane X's value once the lanes have halved
  /// down to O, i.e. its own `z_X + z_{X+32} + ...` in order at O = 32, and below that its value
  /// at 2O plus lane X + O's where that lane holds an expert (a lane without one adds +0.0,
  /// which changes no bit of a non-negative sum). Unrolled at compile time: a few registers,
  /// whatever E is.
  template <int X, int O>
  static FDM_HD float lane_sum(const float* z) {
    if constexpr (O == 32) {
      float s = 0.f;
      FDM_UNROLL
      for (int e = X; e < E; e += 32) s += z[e];
      return s;
    } else if constexpr (X + O < (E < 32 ? E : 32)) {
      return lane_sum<X, 2 * O>(z) + lane_sum<X + O, 2 * O>(z);
    } else {
      return lane_sum<X, 2 * O>(z);
    }
  }

  /// Steps 1-2 in place on one token's logits: + router bias, then the scores (softmax
  /// probabilities, sigmoids, or the biased logits themselves for top-k softmax).
  template <class Bias>
  static FDM_HD void score(float* row, Bias router_bias) {
    if constexpr (RouterBias) {
      FDM_UNROLL
      for (int e = 0; e < E; ++e) row[e] += router_bias(e);
    }
    if constexpr (S == Scoring::Softmax) {
      float m = row[0];
      FDM_UNROLL
      for (int e = 1; e < E; ++e) m = fmaxf(m, row[e]);
      FDM_UNROLL
      for (int e = 0; e < E; ++e) row[e] = expf(row[e] - m);
      const float sum = lane_sum<0, 1>(row);
      FDM_UNROLL
      for (int e = 0; e < E; ++e) row[e] = row[e] / sum;
    } else if constexpr (S == Scoring::Sigmoid) {
      FDM_UNROLL
      for (int e = 0; e < E; ++e) row[e] = 1.f / (1.f + expf(-row[e]));
    }
  }

  /// Choice score of expert e before the group mask: its score (+ the selection bias).
  template <class Bias>
  static FDM_HD float biased(const float* row, Bias sel_bias, int e) {
    if constexpr (SelBias) return row[e] + sel_bias(e);
    else return row[e];
  }

  /// Group g's score: its best biased score, or its two best added (the best found first, ties
  /// to the lower expert, then the best of the others).
  template <class Bias>
  static FDM_HD float group_score(const float* row, Bias sel_bias, int g) {
    int best = -1;
    float b1 = 0.f;
    for (int e = g * kPerGroup; e < (g + 1) * kPerGroup; ++e) {
      const float c = biased(row, sel_bias, e);
      if (best < 0 || c > b1) {
        best = e;
        b1 = c;
      }
    }
    if constexpr (!Top2) return b1;
    bool have = false;
    float b2 = 0.f;
    for (int e = g * kPerGroup; e < (g + 1) * kPerGroup; ++e) {
      const float c = biased(row, sel_bias, e);
      if (e != best && (!have || c > b2)) {
        have = true;
        b2 = c;
      }
    }
    return b1 + b2;
  }

  /// The kept groups as a bit mask (all ones without groups): the Keep best group scores,
  /// ties to the lower group.
  template <class Bias>
  static FDM_HD unsigned long long kept_groups(const float* row, Bias sel_bias) {
    if constexpr (Groups == 0) {
      return ~0ull;
    } else {
      unsigned long long kept = 0ull;
      int prev_g = -1;
      float prev_v = 0.f;
      FDM_NO_UNROLL
      for (int j = 0; j < Keep; ++j) {
        int best = -1;
        float best_v = 0.f;
        FDM_NO_UNROLL
        for (int g = 0; g < Groups; ++g) {
          const float v = group_score(row, sel_bias, g);
          const bool after = j == 0 || v < prev_v || (v == prev_v && g > prev_g);
          if (after && (best < 0 || v > best_v)) {
            best = g;
            best_v = v;
          }
        }
        kept |= 1ull << best;
        prev_g = best;
        prev_v = best_v;
      }
      return kept;
    }
  }

  /// Choice score of expert e (step 3): biased, and 0.0 outside the kept groups (zero, not
  /// minus infinity, as the references mask them).
  template <class Bias>
  static FDM_HD float choice(const float* row, Bias sel_bias, unsigned long long kept, int e) {
    if constexpr (Groups > 0) {
      if (!((kept >> (e / kPerGroup)) & 1ull)) return 0.f;
    }
    return biased(row, sel_bias, e);
  }

  /// Steps 1-5 for one token: `row` (its E logits) becomes its scores; `experts[j]` and
  /// `weights[j]` receive slot j's expert (descending choice score, ties to the lower expert)
  /// and combine weight (the unbiased score; softmax over the chosen for top-k softmax, else
  /// renormalised over the chosen (+1e-20 for sigmoid scores) when Renorm; times `scale` when
  /// Scaled; sums in slot order).
  template <class RouterBiasT, class SelBiasT>
  static FDM_HD void route(float* row, RouterBiasT router_bias, SelBiasT sel_bias, float scale,
                           unsigned* experts, float* weights) {
    score(row, router_bias);
    const unsigned long long kept = kept_groups(row, sel_bias);
    unsigned prev_e = 0;
    float prev_v = 0.f, chosen_sum = 0.f, chosen_max = 0.f;
    FDM_NO_UNROLL
    for (int j = 0; j < K; ++j) {
      int best = -1;
      // The pick's unbiased score taken as it is found: no read of row at a run-time index,
      // which would put a thread's row in local memory.
      float best_v = 0.f, p = 0.f;
      FDM_UNROLL
      for (int e = 0; e < E; ++e) {
        const float v = choice(row, sel_bias, kept, e);
        const bool after = j == 0 || v < prev_v || (v == prev_v && (unsigned)e > prev_e);
        if (after && (best < 0 || v > best_v)) {
          best = e;
          best_v = v;
          p = row[e];
        }
      }
      prev_e = (unsigned)best;
      prev_v = best_v;
      chosen_sum += p;
      chosen_max = j == 0 ? p : fmaxf(chosen_max, p);
      experts[j] = prev_e;
      weights[j] = p;
    }
    finish(weights, chosen_sum, chosen_max, scale);
  }

  /// Step 5 on the K picks: `weights[j]` holds slot j's unbiased score on entry and its combine
  /// weight on return; `chosen_sum` and `chosen_max` are those scores' sum (in slot order) and
  /// maximum.
  static FDM_HD void finish(float* weights, float chosen_sum, float chosen_max, float scale) {
    if constexpr (S == Scoring::TopKSoftmax) {
      float sum = 0.f;
      FDM_NO_UNROLL
      for (int j = 0; j < K; ++j) sum += expf(weights[j] - chosen_max);
      FDM_NO_UNROLL
      for (int j = 0; j < K; ++j) {
        const float w = expf(weights[j] - chosen_max) / sum;
        weights[j] = Scaled ? w * scale : w;
      }
    } else {
      if constexpr (S == Scoring::Sigmoid) chosen_sum += 1e-20f;
      FDM_NO_UNROLL
      for (int j = 0; j < K; ++j) {
        const float w = Renorm ? weights[j] / chosen_sum : weights[j];
        weights[j] = Scaled ? w * scale : w;
      }
    }
  }
};

/// core's `virtual_experts`: the shared experts as M virtual experts of each rank, the parts of
/// their intermediate rows. A token of global rank `rank` takes, after the router's K slots, one
/// slot per part j: expert E + rank * M + j (E: the router's experts) with the weight gs, which
/// is 1 or, with Qwen's sigmoid gate, `gate` of the token's dot product with the gate row.
template <int E, int M>
struct SharedSlots {
  /// Part j of rank `rank`.
  static FDM_HD unsigned expert(unsigned rank, int j) { return (unsigned)E + rank * (unsigned)M + (unsigned)j; }

  /// The M slots after the router's: `experts[j]`, `weights[j]` of part j.
  static FDM_HD void append(unsigned rank, float gs, unsigned* experts, float* weights) {
    FDM_NO_UNROLL
    for (int j = 0; j < M; ++j) {
      experts[j] = expert(rank, j);
      weights[j] = gs;
    }
  }

  /// gs of a token whose row's dot product with the gate row is `dot` (core's
  /// `oracle::shared_scale`: the sigmoid in f32).
  static FDM_HD float gate(float dot) { return 1.f / (1.f + expf(-dot)); }
};

}  // namespace router
}  // namespace flashdmoe

#ifdef FDM_E
// The specialisation the FDM_* defines select (flashdmoe-cuda/src/spec.rs, MoeSpec::defines;
// the defaults are the paper's router, scoring all FDM_E experts, without shared experts).
#ifndef FDM_ROUTER_E
#define FDM_ROUTER_E FDM_E
#endif
#ifndef FDM_SHARED
#define FDM_SHARED 0
#endif
#ifndef FDM_SCORING
#define FDM_SCORING 0
#endif
#ifndef FDM_ROUTER_BIAS
#define FDM_ROUTER_BIAS 0
#endif
#ifndef FDM_SEL_BIAS
#define FDM_SEL_BIAS 0
#endif
#ifndef FDM_GROUPS
#define FDM_GROUPS 0
#endif
#ifndef FDM_GROUP_KEEP
#define FDM_GROUP_KEEP 0
#endif
#ifndef FDM_GROUP_SCORE
#define FDM_GROUP_SCORE 0
#endif
#ifndef FDM_SCALING_BITS
#define FDM_SCALING_BITS 0x3f800000u
#endif
static_assert(FDM_SCORING >= 0 && FDM_SCORING <= 2, "FDM_SCORING: 0 softmax, 1 sigmoid, 2 top-k softmax");
using SpecShared = flashdmoe::router::SharedSlots<FDM_ROUTER_E, FDM_SHARED>;
using SpecRouter = flashdmoe::router::Router<FDM_ROUTER_E, FDM_TOPK, static_cast<flashdmoe::router::Scoring>(FDM_SCORING),
                                             FDM_ROUTER_BIAS != 0, FDM_SEL_BIAS != 0, FDM_GROUPS, FDM_GROUP_KEEP,
                                             FDM_GROUP_SCORE == 1, FDM_RENORM != 0, FDM_SCALING_BITS != 0x3f800000u>;
#endif
