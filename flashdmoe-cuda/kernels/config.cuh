// config.cuh -- the MoE kernel's specialisation: the FDM_* defines the host sets
// (flashdmoe-cuda/src/spec.rs, MoeSpec::defines) turned into constants, the tile engine they
// select, and the shared-memory budget every role must fit.
//
//   FDM_MODE     0 bf16 | 1 f16 | 2 f32 on TF32 tensor cores | 3 f32 exact (FFMA)
//   FDM_ACT      0 relu | 1 gelu | 2 SwiGLU (silu-gated, two up matrices) | 3 gpt-oss's
//                clamped SwiGLU (FDM_OSS_ALPHA_BITS, FDM_OSS_LIMIT_BITS: f32 bit patterns)
//   FDM_BIAS     0 | 1
//   FDM_H, FDM_I, FDM_E, FDM_TOPK   hidden, intermediate, experts, experts per token
//   FDM_ROUTER_E                    experts the router scores (default FDM_E)
//   FDM_SHARED   0 | m: the shared experts as m virtual experts a rank (core's virtual_experts):
//                FDM_E = FDM_ROUTER_E + world * m (packets, tables, placement), rank r's part j
//                is expert FDM_ROUTER_E + r * m + j, and every token takes FDM_SLOTS =
//                FDM_TOPK + m slots (the router's, then its rank's parts, topk.cuh)
//   FDM_SHARED_GATE  0 | 1          the parts' weight: 1, or Qwen's sigmoid(x . gate_row)
//   FDM_BM, FDM_BN                  task tile (rows x output columns); BK is the mode's
//   FDM_RENORM   0 | 1              renormalise the combine weights over the chosen k
//   FDM_SCORING  0 softmax | 1 sigmoid | 2 top-k softmax (core's routing::Scoring)
//   FDM_ROUTER_BIAS, FDM_SEL_BIAS   0 | 1: a bias on the logits / on the choice scores
//   FDM_GROUPS   0 (none) | n groups of grouped top-k, FDM_GROUP_KEEP of them kept, scored by
//                FDM_GROUP_SCORE 0 max | 1 sum of the top two
//   FDM_SCALING_BITS                f32 bit pattern of the routed scaling factor
//   FDM_SMEM_BYTES                  dynamic shared memory the host gives every block
//   FDM_CHUNK                       tokens per routing chunk
//   FDM_ENGINE   0 mma.sync tiles (sm_80+, 256 threads) | 1 the Hopper wgmma engine (sm_90a,
//                384 threads: a producer warpgroup and two consumer warpgroups)
//   FDM_STAGES                      pipeline stages of the Hopper engine
//   FDM_FRAG_PIPE   0 | 1 (default)   register-pipelined GEMM0 fragments of the mma.sync
//                                     engine (0: the spill fallback)
//   FDM_PAIRS    0 | 1   paired GEMM0 tasks (the Hopper engine with FDM_CLUSTER=2): the kernel
//                runs in 2-CTA clusters and two processors of a cluster compute row tiles 2p
//                and 2p + 1 of one column tile together, each loading half of every B tile
//                and multicasting it (docs/dev/paired-tasks.md; MoeSpec::pairs)
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#ifndef FDM_MODE
#error "FDM_MODE must be defined by the JIT"
#endif
#ifndef FDM_ENGINE
#define FDM_ENGINE 0
#endif
#ifndef FDM_FRAG_PIPE
#define FDM_FRAG_PIPE 1
#endif
#if FDM_ENGINE == 1
// The mma.sync tiles (router) run on the first 256 threads of the 384-thread block.
#define FDM_TILE_BARRIER_ID 2
#endif

#include "fdm_proto.h"
#include "fdm_params.h"

#ifdef FDM_FRESH_TID
// The Hopper images' spill fallback (spec.rs `MoeSpec::variant`): every `threadIdx.x` of the
// kernel's own files reads %tid.x afresh (a volatile asm, which neither the compiler nor ptxas
// merges), so no copy of it stays live from the kernel's start. Where phase A's 128x128 router
// tile leaves ~165 registers live (paper T16384 E128, Kimi-K2's streamed image), ptxas spilled
// exactly that copy (8-16 bytes, reloaded ~20 times). Included before every kernel file; the
// CUDA headers included earlier keep the builtin.
struct FdmFreshTid {
  __device__ __forceinline__ operator unsigned() const {
    unsigned t;
    asm volatile("mov.u32 %0, %%tid.x;" : "=r"(t));
    return t;
  }
};
struct FdmFreshThreadIdx {
  FdmFreshTid x;
};
#define threadIdx (FdmFreshThreadIdx{})
#endif

#include "router_math.h"
#include "activation_math.h"
#include "tile_gemm.cuh"
#include "tile_wgmma.cuh"

using namespace flashdmoe::tile;

constexpr Mode kMode = static_cast<Mode>(FDM_MODE);
using Elem = typename ModeTraits<kMode>::Elem;
/// The gated activation's fast division (activation_math.h `div_`) where the GEMM0
/// result is rounded to a 16-bit element; the f32 modes keep the exact forms.
constexpr bool kFastAct = sizeof(Elem) == 2;
// FDM_ROUTER_E and FDM_SHARED default in router_math.h (included above).
#ifndef FDM_SLOTS
#define FDM_SLOTS FDM_TOPK
#endif
#ifndef FDM_SHARED_GATE
#define FDM_SHARED_GATE 0
#endif
constexpr int kH = FDM_H, kI = FDM_I, kE = FDM_E, kTopK = FDM_TOPK;
// The router's experts, the shared experts' parts a rank, and a token's slots (router's + parts).
constexpr int kRouterE = FDM_ROUTER_E, kShared = FDM_SHARED, kSlots = FDM_SLOTS;
constexpr bool kSharedGate = FDM_SHARED_GATE != 0;
static_assert(kSlots == kTopK + kShared && kRouterE <= kE && (kShared > 0 || kRouterE == kE),
              "spec.rs: FDM_SLOTS = FDM_TOPK + FDM_SHARED, FDM_E = FDM_ROUTER_E + world * FDM_SHARED");
static_assert(!kSharedGate || kShared > 0, "a shared gate needs shared experts");
#ifndef FDM_BNH
#define FDM_BNH FDM_BN
#endif
// GEMM0 tiles are kBM x kBN; GEMM1 and combine tiles kBM x kBNH (TileShape::bn_hidden): kBN,
// or on the Hopper engine for gated layers 2 kBN, a GEMM1 tile that reads its two kBN-row
// halves of the down weights as the dual-B operands a gated GEMM0 reads gate and up.
constexpr int kBM = FDM_BM, kBN = FDM_BN, kBNH = FDM_BNH;
constexpr bool kHopper = FDM_ENGINE == 1;
/// Whether GEMM0 reads the rows of packets from this GPU's own ranks in place (gathered from
/// the source's input through its token list) instead of from a dispatched copy: the Hopper
/// engine's producer loads A rows by pointer, so it can; the mma.sync tiles read a strided
/// matrix and need the copy (dispatch.cuh; their routing weights: route.cuh's placement).
constexpr bool kReadsInPlace = kHopper;
constexpr bool kWideGemm1 = kBNH != kBN;
constexpr int kThreads = kHopper ? 384 : 256;
constexpr int kWarps = kThreads / 32;
constexpr bool kGated = FDM_ACT >= 2;
static_assert(FDM_ACT >= 0 && FDM_ACT <= 3, "FDM_ACT: 0 relu, 1 gelu, 2 SwiGLU, 3 gpt-oss's SwiGLU");
constexpr bool kBias = FDM_BIAS != 0;
constexpr int kChunk = FDM_CHUNK;  // tokens per routing chunk (A2's positions, A3's prefix: a block a chunk)
// The OS block's subscribers (subscriber.cuh) are not inlined on the mma.sync engine
// (inlined, its SwiGLU 128x128 sm_90 images spilled 8 bytes) and inlined on the Hopper engine
// (any call there serialised the consumers' wgmma: ptxas C7512, 2026-11-30).
#if FDM_ENGINE == 1
#define FDM_OS_ROLE __device__ __forceinline__
#else
#define FDM_OS_ROLE __device__ __noinline__
#endif
constexpr unsigned kStop = 0xFFFFFFFFu;
constexpr unsigned kDropped = 0xFFFFFFFFu;
#ifndef FDM_PAIRS
#define FDM_PAIRS 0
#endif
/// Paired GEMM0 tasks (FDM_PAIRS): the scheduler posts a pair's two tasks to the two
/// processors of one 2-CTA cluster at once, each mailbox word marked with kPairBit (task
/// indices stay below it; kStop has it too and is tested first), and the OS block marks the
/// GEMM log slots that head a pair in its shared memory (OsShared::pair_head: kPairSlots slots
/// from the GEMM log's base; the host refuses pairs for a longer log, MoeSpec::pairs).
constexpr bool kPairs = FDM_PAIRS != 0;
constexpr unsigned kPairBit = 0x80000000u;
constexpr unsigned kPairSlots = kPairs ? 131072u : 32u;
#if FDM_PAIRS && (FDM_ENGINE != 1 || !defined(FDM_CLUSTER) || FDM_CLUSTER != 2)
#error "FDM_PAIRS: the Hopper engine in 2-CTA clusters (FDM_ENGINE=1, FDM_CLUSTER=2)"
#endif
// The Hopper engine masks a ragged last column tile (H or I no multiple of the tile: gpt-oss's
// 2880 in 128-column tiles; proto's tile_cols); spec.rs gives the mma.sync tiles dividing ones.
static_assert(kHopper || (kH % kBN == 0 && kI % kBN == 0 && kH % kBNH == 0),
              "the mma.sync engine's tiles cover their outputs exactly");
static_assert(kBN * sizeof(Elem) % 16 == 0, "tiles start on 16-byte columns");
static_assert(!kWideGemm1 || (kBNH == 2 * kBN && kGated && kHopper),
              "spec.rs: FDM_BNH is FDM_BN, or twice it for a gated layer on the Hopper engine");
static_assert(kTopK >= 1 && kTopK <= kRouterE, "1 <= top_k <= experts");

// The router's per-token math (topk.cuh A2, router_math.h, shared with its host test):
// SpecRouter is the specialisation the FDM_SCORING, FDM_ROUTER_BIAS, FDM_SEL_BIAS, FDM_GROUPS,
// FDM_GROUP_KEEP, FDM_GROUP_SCORE, FDM_RENORM and FDM_SCALING_BITS defines select.

// gated_act(gate, up): the gated experts' activation (activation_math.h, shared with its host
// test), called by both engines' GEMM0 epilogues.

#if FDM_ENGINE == 1 && !FDM_HOPPER
#error "FDM_ENGINE=1 (wgmma) needs sm_90a"
#endif

// The router runs in exact f32 when the experts run on TF32: routing decisions and combine
// weights must not depend on TF32's 10-bit mantissa (its FLOPs are a small share).
constexpr Mode kRouterMode = kMode == Mode::TF32 ? Mode::F32Exact : kMode;

constexpr int cmax(int a, int b) { return a > b ? a : b; }

/// Bytes of the slots a combine task stages (combine.cuh: CombineSlot is 16 bytes).
constexpr int kCombineSlotBytes = kBM * kSlots * 16;

#if FDM_ENGINE == 1
using Engine = flashdmoe::hopper::Engine<kMode, kBM, kBN, kGated ? 2 : 1, FDM_STAGES>;
static_assert(kThreads == flashdmoe::hopper::kEngineThreads, "the engine's block");
// The combine stages its slots in the epilogue's staging buffer, or past the engine's shared
// memory when they do not fit there (top-k above staging-row bytes / 16).
constexpr int kTileSmemBytes =
    Engine::kSmemBytes + (kCombineSlotBytes <= kBM * Engine::kStagingStride ? 0 : kCombineSlotBytes);
#else
using Gemm0 = TileGemm<kMode, kBM, kBN, ModeTraits<kMode>::kBK, 4, 2, 4, kGated ? 2 : 1,
                       FDM_FRAG_PIPE != 0 && (kMode == Mode::BF16 || kMode == Mode::F16)>;
using Gemm1 = TileGemm<kMode, kBM, kBN, ModeTraits<kMode>::kBK, 4, 2, 4, 1>;
static_assert(Gemm0::kThreads == kThreads && Gemm1::kThreads == kThreads, "every tile config uses the block's threads");
constexpr int kTileSmemBytes = cmax(Gemm0::kSmemBytes, Gemm1::kSmemBytes);
#endif

// The router tile (A1). On the Hopper engine the router runs without register-pipelined
// fragments: with them, ptxas spills in the processors' register-reallocated regions (their
// allocation interacts). Eight pipeline stages instead of four did not change A1's time (runs
// 18-19, docs/dev/perf-notes.md v10): a 64-row job is not bound by the bytes it keeps in flight.
// Its rows per job: 64, or 128 when 64-row jobs would take two waves (spec/router.rs router_rows).
#ifndef FDM_ROUTER_ROWS
#define FDM_ROUTER_ROWS 64
#endif
// Its columns: 32 up to 32 experts (warps 4 x 2), 64 up to 64 and 128 above (warps 2 x 4):
// spec/router.rs router_cols.
#ifndef FDM_ROUTER_COLS
#define FDM_ROUTER_COLS 64
#endif
static_assert(FDM_ROUTER_COLS == 32 || FDM_ROUTER_COLS == 64 || FDM_ROUTER_COLS == 128,
              "spec/router.rs router_cols: 32, 64 or 128 router columns");
using Router = TileGemm<kRouterMode, FDM_ROUTER_ROWS, FDM_ROUTER_COLS, ModeTraits<kRouterMode>::kBK, 4,
                        FDM_ROUTER_COLS == 32 ? 4 : 2, FDM_ROUTER_COLS == 32 ? 2 : 4, 1,
                        !kHopper && (kRouterMode == Mode::BF16 || kRouterMode == Mode::F16)>;
static_assert(Router::kThreads == 256, "the router tile runs on 256 threads");
static_assert(FDM_ROUTER_ROWS == 64 || FDM_ROUTER_ROWS == 128, "spec/router.rs router_rows: 64 or 128 rows a router job");
// K parts of a router job (MoeSpec::router_split): partial logits, summed in order in A2.
#ifndef FDM_ROUTER_SPLIT
#define FDM_ROUTER_SPLIT 1
#endif
constexpr int kRouterSplit = FDM_ROUTER_SPLIT;
static_assert(kRouterSplit >= 1 && kH % (kRouterSplit * Router::BK) == 0, "whole k-tiles in each router K part");

/// Dynamic shared memory every block gets (the largest tile config's need).
constexpr int kSmemBytes = cmax(kTileSmemBytes, Router::kSmemBytes);
static_assert(kSmemBytes <= FDM_SMEM_BYTES, "the host's MoeSpec::smem_bytes must cover every tile config");
