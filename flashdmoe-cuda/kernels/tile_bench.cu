// tile_bench.cu -- the Hopper tile engine on its own (flashdmoe_cuda::tile_bench): a
// persistent grouped GEMM  C[M x N] = epilogue(A[index[m]] * B^T)  built exactly the way the
// MoE kernel's processors use the engine: one block per SM, a producer warpgroup that claims
// tiles (a global counter) and hands them to the consumer warpgroups through the task ring,
// gathered A rows (an optional row index), B through TMA, fused epilogue, staged stores.
//
// Defines (set by the host): FDM_MODE (0 bf16, 1 f16, 2 tf32), FDM_BM, FDM_BN, FDM_NB (2 =
// SwiGLU dual-B), FDM_STAGES, FDM_EPILOGUE (the epilogue below, as params.epilogue), FDM_TMA_A
// (1: A's rows contiguous, each k-tile one TMA box of params.a_map; else gathered by cp.async),
// FDM_PINGPONG (1: each consumer warpgroup owns whole tiles, the two in turn; tile_wgmma.cuh),
// FDM_CLUSTER (2: 2-CTA clusters sharing every B tile, tile_wgmma.cuh "CLUSTERS"; the tiles
// then go by a static schedule of row-tile pairs, not the counter), FDM_CLUSTER_MIXED (1:
// with it, tiles of one CTA alone among the pairs, the pipelines re-aligned before each pair:
// docs/dev/paired-tasks.md, step 1).
//
// Epilogues (params.epilogue): 0 plain; 1 relu(acc + bias[col]); 2 silu(acc0) * acc1 (NB = 2).
#include "fdm_proto.h"
#include "fdm_params.h"
#include "tile_wgmma.cuh"

#if !FDM_HOPPER
#error "tile_bench.cu is the sm_90a engine's bench: compile it for sm_90a"
#endif

using namespace flashdmoe;
using flashdmoe::tile::Mode;

constexpr Mode kMode = static_cast<Mode>(FDM_MODE);
using Engine = hopper::Engine<kMode, FDM_BM, FDM_BN, FDM_NB, FDM_STAGES>;
using Elem = Engine::Elem;
constexpr unsigned kStop = 0xFFFFFFFFu;

// Mirrors flashdmoe_cuda::tile_bench::BenchParams (sizes and offsets asserted on both sides).
struct fdm_tile_bench_params {
  fdm_tensor_map b0;
  fdm_tensor_map b1;
  fdm_tensor_map a_map;  // FDM_TMA_A: A [m, k], boxes of FDM_BM rows
  const void* a;
  const unsigned* a_index;
  void* c;
  const void* bias;
  unsigned long long lda;
  unsigned long long ldc;
  unsigned* tile_counter;
  unsigned m, n, k;
  unsigned epilogue;
  unsigned group_m;
  unsigned pad0;
  const void* b_tiled0;  // FDM_B_TILED: B (and the gated layer's second B) as tiles
  const void* b_tiled1;
  unsigned pad[8];
};
static_assert(sizeof(fdm_tile_bench_params) == 512, "BenchParams size");
FDM_ASSERT_OFFSET(fdm_tile_bench_params, a, 384);
FDM_ASSERT_OFFSET(fdm_tile_bench_params, tile_counter, 432);
FDM_ASSERT_OFFSET(fdm_tile_bench_params, group_m, 456);
FDM_ASSERT_OFFSET(fdm_tile_bench_params, b_tiled0, 464);
FDM_ASSERT_OFFSET(fdm_tile_bench_params, b_tiled1, 472);
#ifndef FDM_TMA_A
#define FDM_TMA_A 0
#endif

/// Tile t of a grid walked in groups of `group_m` row tiles (all column tiles of a group
/// before the next group), so the tiles in flight share their A rows and B columns in L2.
__device__ void raster(unsigned t, unsigned tiles_m, unsigned tiles_n, unsigned group_m, unsigned& mt, unsigned& nt) {
  const unsigned per_group = group_m * tiles_n;
  const unsigned g = t / per_group, first = g * group_m;
  const unsigned size = min(tiles_m - first, group_m);
  const unsigned r = t % per_group;
  mt = first + r % size;
  nt = r / size;
}

#if FDM_CLUSTER == 2
#define FDM_CLUSTER_DIMS __cluster_dims__(2, 1, 1)
#else
#define FDM_CLUSTER_DIMS
#endif

#ifndef FDM_CLUSTER_MIXED
#define FDM_CLUSTER_MIXED 0
#endif
static_assert(!FDM_CLUSTER_MIXED || FDM_CLUSTER == 2, "FDM_CLUSTER_MIXED: 2-CTA clusters");

/// What the task ring carries: the tile as nt * tiles_m + mt (kStop past the last) and flags.
struct BenchTile {
  unsigned tile;
  unsigned flags;
};
/// The tile is the cluster's pair (B multicast to both CTAs); else this CTA's alone.
constexpr unsigned kPaired = 1u;
/// Whether every pair starts on re-initialised pipelines (`align_for_pair`), each thread's
/// position back at 0: where solo tiles mix among the pairs.
constexpr bool kRealign = FDM_CLUSTER_MIXED;
/// Whether tile `bt` restarts the pipelines.
__device__ __forceinline__ bool realigns(const BenchTile& bt) { return kRealign && (bt.flags & kPaired); }

/// The next tile of this block (producer thread 0 only; the ring carries it to every thread).
/// Without clusters: the grid-wide counter's next, walked in rasters of group_m row tiles. In
/// a 2-CTA cluster: the cluster's item-th pair of row tiles (2 pm, 2 pm + 1) of one column tile,
/// walked in rasters of group_m / 2 pairs (tiles_m is even: the host checks), the row tile of
/// the pair this CTA's rank. FDM_CLUSTER_MIXED makes every fourth item of a cluster a split
/// one: rank 1 computes both row tiles alone, one after the other (`sub` 0 and 1), and rank 0
/// none, so the two CTAs' pipelines reach the next pair at different positions.
__device__ BenchTile next_tile(const fdm_tile_bench_params& p, unsigned tiles_m, unsigned tiles_n, unsigned& item,
                               unsigned& sub) {
  const unsigned tiles = tiles_m * tiles_n;
  unsigned mt, nt;
  if constexpr (Engine::kCluster == 2) {
    const unsigned rank = hopper::cluster_ctarank();
    for (;;) {
      const unsigned pair = hopper::cluster_index() + item * hopper::cluster_count();
      if (pair >= tiles / 2) return BenchTile{kStop, 0u};
      raster(pair, tiles_m / 2, tiles_n, max(p.group_m / 2, 1u), mt, nt);
      const bool split = FDM_CLUSTER_MIXED && item % 4 == 3;
      if (!split) {
        ++item;
        return BenchTile{nt * tiles_m + 2 * mt + rank, kPaired};
      }
      if (rank == 0) {
        ++item;
        continue;
      }
      const unsigned row = 2 * mt + sub;
      if (++sub == 2) {
        sub = 0;
        ++item;
      }
      return BenchTile{nt * tiles_m + row, 0u};
    }
  } else {
    const unsigned t = atomicAdd(p.tile_counter, 1u);
    if (t >= tiles) return BenchTile{kStop, 0u};
    raster(t, tiles_m, tiles_n, p.group_m, mt, nt);
    return BenchTile{nt * tiles_m + mt, 0u};
  }
}

/// Producer thread 0, before handing out a pair (FDM_CLUSTER_MIXED): the two CTAs' pipelines
/// brought to one position, since the pair's multicasts write the same stages of both. Waits
/// until every stage of this CTA is empty (its consumers are then past their last main loop
/// and wait on the task ring, not on the pipeline's barriers), re-initialises the pipeline's
/// barriers, then tells the peer and waits for the peer's word on `ready` (both at cluster
/// scope): no multicast or remote release reaches a barrier before its re-initialisation,
/// since the peer issues either only after this word. Every thread then restarts its
/// pipeline position at 0 (`realigns`). docs/dev/paired-tasks.md.
__device__ void align_for_pair(const Engine::Smem& s, const hopper::Ring<FDM_STAGES>& pipe, unsigned ready,
                               unsigned& pairs) {
  hopper::Ring<FDM_STAGES> q = pipe;
  for (unsigned i = 0; i < FDM_STAGES; ++i) {
    hopper::mbar_wait(s.empty(q.slot), q.phase ^ 1u);
    q.advance();
  }
  Engine::init_pipeline(s);
  hopper::mbar_signal_cluster(ready, hopper::cluster_ctarank() ^ 1u);
  hopper::mbar_wait_cluster(ready, pairs & 1u);
  ++pairs;
}

extern "C" __global__ void FDM_CLUSTER_DIMS __launch_bounds__(hopper::kEngineThreads, 1)
    fdm_tile_bench(const __grid_constant__ fdm_tile_bench_params p) {
  extern __shared__ __align__(1024) char smem[];
  // The peers' hand-off before each pair (FDM_CLUSTER_MIXED, align_for_pair): one arrival, the
  // peer's, a phase.
  __shared__ __align__(8) unsigned long long ready_bar;
  const unsigned ready = hopper::smem_u32(&ready_bar);
  const Engine::Smem s = Engine::carve(smem);
  if (threadIdx.x == 0) {
    Engine::init(s);
    if (kRealign) hopper::mbar_init(ready, 1);
    hopper::prefetch_tensormap(&p.b0);
    if (FDM_NB == 2) hopper::prefetch_tensormap(&p.b1);
    if (FDM_TMA_A) hopper::prefetch_tensormap(&p.a_map);
  }
  __syncthreads();
  if constexpr (Engine::kCluster == 2) hopper::cluster_sync();  // the peer's barriers are set up
  const unsigned tiles_m = fdm_div_ceil(p.m, FDM_BM), tiles_n = p.n / FDM_BN;
  const int ktiles = (int)(p.k / Engine::kBK);
  hopper::Ring<2> ring;
  hopper::Ring<FDM_STAGES> pipe;
  if (threadIdx.x < hopper::kProducerThreads) {
    hopper::regs_decrease<hopper::kProducerRegs>();
    const unsigned pt = threadIdx.x;
    unsigned item = 0, sub = 0, pairs = 0;  // producer thread 0's schedule (next_tile)
    for (;;) {
      if (pt == 0) {
        const BenchTile next = next_tile(p, tiles_m, tiles_n, item, sub);
        if (realigns(next)) align_for_pair(s, pipe, ready, pairs);
        Engine::ring_put(s, ring, next);
      }
      const BenchTile bt = Engine::ring_get<BenchTile>(s, ring);
      ring.advance();
      const unsigned t = bt.tile;
      if (t == kStop) {
        // Ping-pong: each warpgroup reads its own ring slot, so each needs a stop word.
        if (Engine::kPingPong && pt == 0) Engine::ring_put(s, ring, BenchTile{kStop, 0u});
        break;
      }
      if (realigns(bt)) pipe = hopper::Ring<FDM_STAGES>{};
      const bool paired = (bt.flags & kPaired) != 0;
      const unsigned mt = t % tiles_m, nt = t / tiles_m;  // next_tile's index
#if defined(FDM_TILED_MAP) && FDM_TILED_MAP
      // Column tile nt's tiles through the maps of 128-byte rows (kTiledMap): its first row.
      const void* b0 = &p.b0;
      const void* b1 = &p.b1;
      const int b_row = (int)(nt * ktiles * FDM_BN);
#elif defined(FDM_B_TILED)
      // Column tile nt's tiles (FDM_B_TILED in tile_wgmma.cuh load_b).
      const unsigned long long b_at = (unsigned long long)nt * ktiles * Engine::kBBytes;
      const void* b0 = static_cast<const char*>(p.b_tiled0) + b_at;
      const void* b1 = FDM_NB == 2 ? static_cast<const char*>(p.b_tiled1) + b_at : nullptr;
      const int b_row = Engine::kTiledRows;
#else
      const void* b0 = &p.b0;
      const void* b1 = &p.b1;
      const int b_row = (int)(nt * FDM_BN);
#endif
      if constexpr (FDM_TMA_A) {
        Engine::produce(s, pipe, pt, Engine::tma_rows(&p.a_map, mt * FDM_BM), ktiles, b0, b1, b_row, FDM_NB, b_row,
                        paired);
        continue;
      }
      const Engine::ARows rows = Engine::a_rows(s, pt, reinterpret_cast<const char*>(p.a),
                                                (unsigned)(p.lda * sizeof(Elem)), [&](unsigned r) {
                                                  const unsigned row = mt * FDM_BM + r;
                                                  if (row >= p.m) return Engine::kNoRow;
                                                  return p.a_index ? p.a_index[row] : row;
                                                });
      Engine::produce(s, pipe, pt, rows, ktiles, b0, b1, b_row, FDM_NB, b_row, paired);
    }
  } else {
    hopper::regs_increase<hopper::kConsumerRegs>();
    const unsigned c = threadIdx.x - hopper::kProducerThreads;  // 0..255
    const unsigned cw = c / 128, ct = c % 128;
    // Ping-pong: warpgroup cw takes this block's tiles cw, cw + 2, ...: ring slot cw, and the
    // pipeline's stages of its own tiles (the other warpgroup's ktiles stages skipped).
    const auto skip_stages = [&](unsigned n) {
      for (unsigned i = 0; i < n; ++i) pipe.advance();
    };
    if (Engine::kPingPong && cw == 1) {
      ring.advance();
      skip_stages((unsigned)ktiles);
    }
    for (;;) {
      const BenchTile bt = Engine::ring_get<BenchTile>(s, ring);
      Engine::ring_release(s, ring);
      ring.advance();
      if (Engine::kPingPong) ring.advance();
      const unsigned t = bt.tile;
      if (t == kStop) break;
      if (realigns(bt)) pipe = hopper::Ring<FDM_STAGES>{};
      const unsigned mt = t % tiles_m, nt = t / tiles_m;  // next_tile's index
      Engine::Accum acc;
      const unsigned rows = min((unsigned)FDM_BM, p.m - mt * FDM_BM);
      Engine::consume(s, pipe, acc, cw, ktiles, FDM_NB, rows, (bt.flags & kPaired) != 0);
      if (Engine::kPingPong) skip_stages((unsigned)ktiles);
      const Elem* bias = reinterpret_cast<const Elem*>(p.bias);
      const unsigned col0 = nt * FDM_BN;
      Elem* out = reinterpret_cast<Elem*>(p.c) + (unsigned long long)mt * FDM_BM * p.ldc + col0;
      Engine::store(s, acc, cw, ct, c, rows, out, p.ldc, [&](unsigned, unsigned col, float v0, float v1) {
        // The variant's own epilogue only (FDM_EPILOGUE, = params.epilogue): a run-time choice
        // kept all three ops' values live at once, which spilled the 256x192 images.
        if constexpr (FDM_EPILOGUE == 1) return tile::relu_f(v0 + tile::to_f32(bias[col0 + col]));
        else if constexpr (FDM_EPILOGUE == 2) return ::flashdmoe::act::silu<sizeof(Elem) == 2>(v0) * v1;  // as the MoE kernel's kFastAct
        else return v0;
      });
    }
  }
  // No CTA leaves while its peer may still multicast into it or arrive on its barriers.
  if constexpr (Engine::kCluster == 2) hopper::cluster_sync();
}
