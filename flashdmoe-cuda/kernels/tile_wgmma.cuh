// tile_wgmma.cuh -- the Hopper (sm_90a) tile engine: warp-specialised wgmma tiles fed by the
// tensor memory accelerator, for the persistent processors of the MoE kernel (and the
// standalone bench, kernels/tile_bench.cu).
//
// ─────────────────────────────────────────────────────────────────────────────────────────
// CONTRACT
//
//   acc[BM x BN] (f32) = A[rows of the task x K] * B[BN rows x K]^T   (NB = 2: two B's)
//
//   A rows are loaded with cp.async by the PRODUCER warpgroup, one row pointer per row, so
//   they may be gathered from anywhere (dispatched rows, or a rank's own tokens through its
//   token list: no self-copy); rows past the task's valid rows are not loaded (their
//   accumulator rows hold garbage and are never stored: output row i depends on A row i
//   only). B is a 2-D tensor (rows = output columns, K innermost: nn.Linear's [out][in]) read
//   by TMA, box {BK, BN} with the 128-byte swizzle.
//
//   Block = 384 threads: warpgroup 0 = producer (128 threads, setmaxnreg.dec to kProducerRegs),
//   warpgroups 1-2 = consumers (256 threads, setmaxnreg.inc to kConsumerRegs). The kernel must
//   be compiled with __launch_bounds__(384, 1) (a register cap at entry, which setmaxnreg needs).
//   Consumer warpgroup cw owns kSlabs 64-row slabs x kN columns of the tile: rows
//   ((cw % kWgM) * kSlabs + slab) * 64, columns (cw / kWgM) * kN, where kSlabs = 2 for 256-row
//   tiles (1 otherwise), kWgM = BM / (64 kSlabs) and kN = BN * kWgM / 2.
//
// PIPELINE (STAGES deep; one stage = one BK slice of A and of every B)
//   full[s]  expected arrivals: 128 producer threads (cp.async .noinc) + 1 (TMA expect_tx)
//            and the B bytes of the stage: complete when the stage's data has landed.
//   empty[s] expected arrivals: 8 (lane 0 of every consumer warp, after its wgmmas on the
//            stage retired; 4 with ping-pong, one warpgroup's): complete when the stage may
//            be overwritten.
//   The producer waits empty[s] with the opposite parity first (a fresh barrier counts as
//   released), so the first STAGES loads never wait. Both sides advance one PipeState per
//   k-tile, over every task in the same order, so they agree on stage and parity forever.
//   Shared memory written by cp.async or TMA and read by wgmma needs no proxy fence: the
//   mbarrier completion orders it (the arrangement CUTLASS and DeepGEMM ship).
//
// TASK RING (two slots of a 128-byte payload): the producer's thread 0 writes a slot and
//   arrives on ring_full[slot] (count 1); every thread of both sides waits on it and reads
//   the payload; consumer warps release it on ring_empty[slot] (count 8). So the producer is
//   one task ahead: it loads task n+1 while the consumers finish task n's epilogue.
//
// PING-PONG (FDM_PINGPONG=1; the tile bench only, so far: docs/dev/pingpong-gemm1.md): each
//   consumer warpgroup owns whole tiles (BM = 128: both 64-row slabs, all BN columns), the
//   two taking the producer's tiles in turn: warpgroup w reads ring slot w only and consumes
//   the stages of its own tiles, skipping the other's (empty[s] and ring_empty count the 4
//   warps of one warpgroup). The stages are filled in tile order, so one warpgroup's main
//   loop starts as the other's ends, and each epilogue (its own staging buffer and named
//   barrier) runs under the other warpgroup's main loop.
//
// CLUSTERS (FDM_CLUSTER=2; the tile bench, and the MoE kernel's paired GEMM0 tasks, FDM_PAIRS;
//   docs/dev/tile-bytes-per-flop.md, docs/dev/paired-tasks.md): the two CTAs
//   of a cluster compute two row tiles of the same B columns, their stages in step. Each
//   producer loads half of every B tile (BN / 2 rows, the host's B maps in boxes of BN / 2)
//   and multicasts it to both CTAs; a stage's full barrier expects the whole tile's bytes (A
//   and both halves), its empty barrier 16 arrivals (every consumer warp of both CTAs, each
//   releasing to both). The kernel syncs the cluster after the barriers' set-up and before
//   it exits, and gives both CTAs the same tiles' columns in the same order. A tile of one
//   CTA alone among the pairs (`paired` false, the default of every call; the tile bench's
//   FDM_CLUSTER_MIXED, every task but a pair in the MoE kernel) loads both halves of B itself
//   and counts each release twice on its own barrier, so the same barriers serve both kinds;
//   the pipelines are re-aligned before each pair (docs/dev/paired-tasks.md).
//
// EPILOGUE: store() converts the accumulators through an op, column chunk by column chunk,
//   into a staging buffer in shared memory (stmatrix for 16-bit elements; 16-byte chunks
//   swizzled: conflict-free) and copies the valid rows out with 16-byte stores by all 256
//   consumers. store_either() takes two ops and a uniform choice between them (the MoE
//   kernel's GEMM0 and GEMM1 share one site): chosen a chunk, not an element, so ptxas
//   interleaves the elements' activation chains instead of branching around each.
// ─────────────────────────────────────────────────────────────────────────────────────────
#pragma once

#include "fdm_wgmma_ops.h"
#include "hopper.cuh"
#include "tile_gemm.cuh"

#if FDM_HOPPER
namespace flashdmoe {
namespace hopper {

using tile::Mode;

/// One wgmma of the mode's element type: d[64 x N] (+)= A * B^T.
template <Mode M, int N>
__device__ __forceinline__ void wgmma(float (&d)[N / 2], unsigned long long da, unsigned long long db, int acc) {
#define FDM_WGMMA_CASE(TYPE)                                            \
  if constexpr (N == 32) fdm_wgmma_##TYPE##_n32(d, da, db, acc);        \
  else if constexpr (N == 64) fdm_wgmma_##TYPE##_n64(d, da, db, acc);   \
  else if constexpr (N == 128) fdm_wgmma_##TYPE##_n128(d, da, db, acc); \
  else if constexpr (N == 192) fdm_wgmma_##TYPE##_n192(d, da, db, acc); \
  else fdm_wgmma_##TYPE##_n256(d, da, db, acc);
  static_assert(N == 32 || N == 64 || N == 128 || N == 192 || N == 256, "generated wgmma shapes");
  if constexpr (M == Mode::BF16) {
    FDM_WGMMA_CASE(bf16)
  } else if constexpr (M == Mode::F16) {
    FDM_WGMMA_CASE(f16)
  } else {
    static_assert(M == Mode::TF32, "the wgmma engine runs bf16, f16 and tf32");
    FDM_WGMMA_CASE(tf32)
  }
#undef FDM_WGMMA_CASE
}

/// A compile-time slab count (Engine::consume's wgmma sequences).
template <int N> struct SlabCount {
  static constexpr int value = N;
};

/// A position in a ring of `Slots` barrier-guarded slots: slot index and its phase parity.
template <unsigned Slots> struct Ring {
  unsigned slot = 0, phase = 0;
  __device__ void advance() {
    if (++slot == Slots) {
      slot = 0;
      phase ^= 1u;
    }
  }
};

constexpr int kProducerThreads = 128;
constexpr int kConsumerThreads = 256;
constexpr int kEngineThreads = kProducerThreads + kConsumerThreads;
constexpr int kConsumerWarps = kConsumerThreads / 32;
/// Registers after reallocation: 128 x 88 + 256 x 208 = 64512 = 384 x 168, the entry budget
/// of a __launch_bounds__(384, 1) kernel. The MoE kernel's producer (task rows, mailbox) needs
/// more than a plain GEMM's 56, and 216 leave the consumers' 128 accumulators room: with
/// 56/224 (and 72/216 once H != I) ptxas spilled in the producer region.
/// A kernel whose producer needs fewer (the tile bench with 256-row tiles, whose 192
/// accumulators a consumer thread need 232) or more (a streamed combine's at 64 accumulators:
/// 96 / 200, spec.rs `MoeSpec::defines`) sets FDM_PRODUCER_REGS / FDM_CONSUMER_REGS; their
/// sum over the block must stay 64512.
#ifndef FDM_PRODUCER_REGS
#define FDM_PRODUCER_REGS 88
#endif
#ifndef FDM_CONSUMER_REGS
#define FDM_CONSUMER_REGS 208
#endif
constexpr int kProducerRegs = FDM_PRODUCER_REGS;
constexpr int kConsumerRegs = FDM_CONSUMER_REGS;
static_assert(kProducerThreads * kProducerRegs + kConsumerThreads * kConsumerRegs <= 65536, "the block's registers");
/// Named barrier of the 256 consumer threads (0 is __syncthreads).
constexpr unsigned kConsumerBarrier = 1;

__device__ __forceinline__ void consumer_sync() { named_sync(kConsumerBarrier, kConsumerThreads); }

constexpr int round_up(int x, int a) { return (x + a - 1) / a * a; }

template <Mode M, int BM, int BN, int NB, int STAGES> struct Engine {
  using Elem = typename tile::ModeTraits<M>::Elem;
  static constexpr int kElemBytes = sizeof(Elem);
  static constexpr int kBK = 128 / kElemBytes;          // K elements per stage: one 128-byte row
  static constexpr int kInstK = M == Mode::TF32 ? 8 : 16;  // K per wgmma
#ifndef FDM_PINGPONG
#define FDM_PINGPONG 0
#endif
  /// Each consumer warpgroup owns whole tiles, the two in turn (PING-PONG above).
  static constexpr bool kPingPong = FDM_PINGPONG != 0;
  static_assert(!kPingPong || BM == 128, "a ping-pong warpgroup owns both 64-row slabs of a 128-row tile");
  static constexpr int kSlabs = BM == 256 || kPingPong ? 2 : 1;  // 64-row slabs a consumer warpgroup owns
  static constexpr int kWgM = BM / (64 * kSlabs);        // consumer warpgroups along M (of a tile)
  static constexpr int kN = kPingPong ? BN : BN * kWgM / 2;  // columns per consumer warpgroup
  /// CTAs of a cluster that share every B tile (FDM_CLUSTER, the tile bench only: 1, or 2 for
  /// a 2-CTA cluster whose CTAs compute two row tiles of the same columns; CLUSTERS above).
#ifndef FDM_CLUSTER
#define FDM_CLUSTER 1
#endif
  static constexpr unsigned kCluster = FDM_CLUSTER;
  static_assert(kCluster == 1 || (kCluster == 2 && !kPingPong && BN % 16 == 0),
                "FDM_CLUSTER: 1, or 2 with cooperative consumers and B tiles of whole 8-row atoms a half");
  /// Consumer warps that share a tile: its stages' and ring slots' releases.
  static constexpr unsigned kTileWarps = kPingPong ? kConsumerWarps / 2 : kConsumerWarps;
  static constexpr int kAcc = kN / 2;                    // f32 registers per thread per B and slab
  static_assert(BM == 64 || BM == 128 || BM == 256, "one or two 64-row slabs a warpgroup");
  static_assert(NB == 1 || NB == 2, "plain or dual-B (SwiGLU)");
  static_assert(STAGES >= 2, "at least double buffering");

  // Shared memory, from a 1024-byte-aligned base (the 128-byte swizzle repeats every 1024).
  static constexpr int kABytes = BM * 128;
  static constexpr int kBBytes = BN * 128;
  static constexpr int kStageBytes = kABytes + NB * kBBytes;
  /// Columns the epilogue stages at a time (a 128-byte row of Elem at most): a small staging
  /// buffer leaves room for a fourth pipeline stage.
#ifndef FDM_STAGE_COLS
#define FDM_STAGE_COLS 128
#endif
  static constexpr int kChunkCols = BN < FDM_STAGE_COLS / kElemBytes ? BN : FDM_STAGE_COLS / kElemBytes;
  static_assert(BN % kChunkCols == 0 && kChunkCols % 8 == 0, "FDM_STAGE_COLS: bytes of a staged chunk row");
  /// Staging rows are unpadded and 16-byte chunk c of row r sits at chunk c ^ (r % 8): the
  /// fragment writes (8 rows per warp) and the 16-byte row reads are both conflict-free.
  static constexpr int kStagingStride = kChunkCols * kElemBytes;
  static_assert(kStagingStride % 128 == 0, "whole 128-byte swizzle segments per staged row");
  static constexpr int kStagingOffset = STAGES * kStageBytes;
  /// One staging buffer, or one a warpgroup (ping-pong).
  static constexpr int kStagingBytes = BM * kStagingStride;
  static constexpr int kBarrierOffset = round_up(kStagingOffset + (kPingPong ? 2 : 1) * kStagingBytes, 16);
  static constexpr int kBarriers = 2 * STAGES + 4;  // full, empty, ring_full[2], ring_empty[2]
  static constexpr int kRingOffset = round_up(kBarrierOffset + 8 * kBarriers, 64);
  static constexpr int kRingPayload = 128;
  /// Bytes the engine uses from its aligned base; a kernel may put its own data there.
  /// A tile of more than 128 rows keeps its producer threads' row indices in shared memory
  /// (16 a thread for 256 rows: too many for a 40-register producer), one private column of
  /// kRowsPerThread words a thread (`Smem::row_index`), so no producer thread reads another's.
  static constexpr bool kRowsInSmem = BM > 128;
  static constexpr int kRowTableOffset = kRingOffset + 2 * kRingPayload;
  static constexpr int kRowTableBytes = kRowsInSmem ? (BM / 16) * 128 * 4 : 0;
  static constexpr int kUsedBytes = kRowTableOffset + kRowTableBytes;
  /// Dynamic shared memory a block needs (1024 bytes of slack for the alignment).
  static constexpr int kSmemBytes = kUsedBytes + 1024;

  struct Accum {
    float v[NB][kSlabs][kAcc];
  };

  struct Smem {
    unsigned base;  // shared address of stage 0 (1024-aligned)
    char* ptr;      // the same, generic
    __device__ unsigned a(unsigned s) const { return base + s * kStageBytes; }
    __device__ unsigned b(unsigned s, int which) const { return base + s * kStageBytes + kABytes + which * kBBytes; }
    __device__ char* staging() const { return ptr + kStagingOffset; }
    __device__ unsigned full(unsigned s) const { return base + kBarrierOffset + 8 * s; }
    __device__ unsigned empty(unsigned s) const { return base + kBarrierOffset + 8 * (STAGES + s); }
    __device__ unsigned ring_full(unsigned i) const { return base + kBarrierOffset + 8 * (2 * STAGES + i); }
    __device__ unsigned ring_empty(unsigned i) const { return base + kBarrierOffset + 8 * (2 * STAGES + 2 + i); }
    /// Row index i of producer thread pt (kRowsInSmem).
    __device__ unsigned* row_index(unsigned i, unsigned pt) const {
      return reinterpret_cast<unsigned*>(ptr + kRowTableOffset) + i * 128 + pt;
    }
    template <class T> __device__ T* ring_payload(unsigned i) const {
      static_assert(sizeof(T) <= kRingPayload, "ring payload");
      return reinterpret_cast<T*>(ptr + kRingOffset + i * kRingPayload);
    }
  };

  __device__ static Smem carve(char* smem) {
    const unsigned raw = smem_u32(smem);
    const unsigned aligned = (raw + 1023u) & ~1023u;
    return Smem{aligned, smem + (aligned - raw)};
  }

  /// One thread initialises every barrier; the block syncs before anyone uses them.
  __device__ static void init(const Smem& s) {
    init_stages(s);
    for (unsigned i = 0; i < 2; ++i) {
      mbar_init(s.ring_full(i), 1);
      mbar_init(s.ring_empty(i), kTileWarps);
    }
    mbar_fence_init();
  }
  /// One thread re-initialises the pipeline's barriers while no thread uses them (in a 2-CTA
  /// cluster before a pair: tile_bench.cu `align_for_pair`).
  __device__ static void init_pipeline(const Smem& s) {
    init_stages(s);
    mbar_fence_init();
  }
  __device__ static void init_stages(const Smem& s) {
    for (unsigned i = 0; i < STAGES; ++i) {
      mbar_init(s.full(i), kProducerThreads + 1);
      mbar_init(s.empty(i), kTileWarps * kCluster);  // both CTAs' consumers (clusters)
    }
  }

  /// wgmma groups (k-tiles) a consumer keeps in flight while issuing the next (0 or 1).
#ifndef FDM_WGMMA_IN_FLIGHT
#define FDM_WGMMA_IN_FLIGHT 1
#endif
  static constexpr int kInFlight = FDM_WGMMA_IN_FLIGHT;
  static_assert(kInFlight == 0 || kInFlight == 1, "FDM_WGMMA_IN_FLIGHT is 0 or 1");

  __device__ static void fence_accum(Accum& acc) {
#pragma unroll
    for (int b = 0; b < NB; ++b) {
#pragma unroll
      for (int m = 0; m < kSlabs; ++m) {
#pragma unroll
        for (int i = 0; i < kAcc; ++i) fence_operand(acc.v[b][m][i]);
      }
    }
  }
  /// Lane 0 of each consumer warp releases stage `slot` to the producer (in a 2-CTA cluster
  /// to both CTAs' producers: either one's multicast refills the stage in both). `paired`
  /// (2-CTA clusters only): the tile is the cluster's pair; a tile of this CTA alone
  /// (FDM_CLUSTER_MIXED) counts its release twice on this CTA's barrier, for the peer's too.
  __device__ static void release(const Smem& s, unsigned slot, bool paired = false) {
    __syncwarp();
    if (threadIdx.x % 32 == 0) {
      if constexpr (kCluster == 2) {
        if (paired) {
          mbar_arrive(s.empty(slot));
          mbar_arrive_cluster(s.empty(slot), cluster_ctarank() ^ 1u);
        } else {
          mbar_arrive_count(s.empty(slot), 2u);
        }
      } else {
        mbar_arrive(s.empty(slot));
      }
    }
  }
  /// Whether an image may take B as tiles (`kTiledB`, below): the tile bench's FDM_B_TILED (its
  /// `bt` and `btm` forms, BLayout in tile_bench.rs). Other images compile no such path.
#if defined(FDM_B_TILED)
  static constexpr bool kTiledB = true;
#else
  static constexpr bool kTiledB = false;
#endif
  /// Whether B stored as tiles comes through a tensor map instead (FDM_TILED_MAP: the tile
  /// bench's `btm` form, BLayout::TilesMap): `map` describes the tiles as a tensor of 128-byte
  /// rows without swizzle (the bytes already are; tma.rs `TensorMap::tiles`) and `b_row` is
  /// the row of the column tile's first tile, so k-tile c's rows start BN rows further per
  /// k-tile. The loads are then the row-major path's boxes (paired: each CTA's half multicast)
  /// over contiguous rows. Run 171: a paired task's multicast bulk copy made DeepSeek-V3's
  /// paired GEMM0 main loop 8% slower while the unpaired bulk copies won 3-4%.
#if defined(FDM_TILED_MAP) && FDM_TILED_MAP
  static constexpr bool kTiledMap = true;
#else
  static constexpr bool kTiledMap = false;
#endif
  /// `b_row` of a B stored as tiles: `map` is then the address of the column tile's first
  /// tile, each k-tile's BN rows x 128 bytes contiguous and already in the 128-byte swizzle's
  /// order (flashdmoe_cuda::tma::swizzled_tiles), the column tile's k-tiles one after another.
  static constexpr int kTiledRows = -1;
  /// Producer thread 0: B operand `which`'s tile at k-tile column `c0`, rows [b_row, b_row +
  /// BN), into stage `slot`. In a 2-CTA cluster this CTA loads its half of the rows and
  /// multicasts it to both CTAs (the peer loads the other half): each stage's full barrier
  /// expects the whole tile's bytes either way; a tile of this CTA alone (`paired` false,
  /// FDM_CLUSTER_MIXED) loads both halves itself, through the same half-tile boxes. With
  /// `b_row` kTiledRows the tile (or this CTA's half: the half's rows are whole 8-row swizzle
  /// atoms, so its bytes are the half of the tile's) comes by one bulk copy (run 170: 4%
  /// faster than the boxes at K 7168, where each box row is 128 bytes of another weight row).
  __device__ static void load_b(const Smem& s, unsigned slot, int which, const void* map, int c0, int b_row,
                                bool paired = false) {
    if constexpr (kTiledMap) {
      b_row += (c0 / kBK) * BN;  // k-tile c0 / kBK's rows (TensorMap::tiles)
      c0 = 0;
    } else if constexpr (kTiledB) {
      if (b_row == kTiledRows) {
        const char* tile = static_cast<const char*>(map) + (unsigned long long)(c0 / kBK) * kBBytes;
        if constexpr (kCluster == 2) {
          if (paired) {
            const unsigned half = cluster_ctarank() * (kBBytes / 2);
            bulk_load_multicast(s.b(slot, which) + half, tile + half, kBBytes / 2, s.full(slot), (unsigned short)0x3);
            return;
          }
        }
        bulk_load(s.b(slot, which), tile, kBBytes, s.full(slot));
        return;
      }
    }
    if constexpr (kCluster == 2) {
      if (paired) {
        const unsigned half = cluster_ctarank();
        tma_load_2d_multicast(s.b(slot, which) + half * (kBBytes / 2), map, c0, b_row + (int)half * (BN / 2),
                              s.full(slot), (unsigned short)0x3);
      } else {
        tma_load_2d(s.b(slot, which), map, c0, b_row, s.full(slot));
        tma_load_2d(s.b(slot, which) + kBBytes / 2, map, c0, b_row + BN / 2, s.full(slot));
      }
    } else {
      tma_load_2d(s.b(slot, which), map, c0, b_row, s.full(slot));
    }
  }

  // ─── task ring ────────────────────────────────────────────────────────────────────────
  /// Producer thread 0: publishes `payload` in the next slot (waits until it is free).
  template <class T> __device__ static void ring_put(const Smem& s, Ring<2>& r, const T& payload) {
    mbar_wait(s.ring_empty(r.slot), r.phase ^ 1u);
    *s.template ring_payload<T>(r.slot) = payload;
    mbar_arrive(s.ring_full(r.slot));
  }
  /// Any thread: the payload of the next slot, once published.
  template <class T> __device__ static T ring_get(const Smem& s, const Ring<2>& r) {
    return *ring_wait<T>(s, r);
  }
  /// Any thread: the next slot's payload in place, once published (valid until the slot is
  /// released: fields can be read when needed instead of living in registers).
  template <class T> __device__ static const T* ring_wait(const Smem& s, const Ring<2>& r) {
    mbar_wait(s.ring_full(r.slot), r.phase);
    return s.template ring_payload<T>(r.slot);
  }
  /// Any thread: whether the next slot's payload is already published (never waits).
  __device__ static bool ring_ready(const Smem& s, const Ring<2>& r) { return mbar_try_wait(s.ring_full(r.slot), r.phase); }
  /// Consumer threads, after ring_get: lane 0 of each warp releases the slot.
  __device__ static void ring_release(const Smem& s, const Ring<2>& r) {
    __syncwarp();
    if (threadIdx.x % 32 == 0) mbar_arrive(s.ring_empty(r.slot));
  }

  // ─── producer ─────────────────────────────────────────────────────────────────────────
  /// A rows a producer thread loads: thread pt copies 16-byte chunk pt % 8 of rows
  /// pt / 8 + 16 i (i < kRowsPerThread), so 8 consecutive lanes read one row's 128 contiguous
  /// bytes of each k-tile (whole L2 sectors; a thread-per-row mapping reads every sector
  /// twice, and the engine is L2-bandwidth bound). Row r of the task is at base + index(r) *
  /// stride bytes (K contiguous, 16-byte aligned): rows may be gathered (a token list) or
  /// consecutive. Indices, not pointers, keep the producer inside its few registers.
  static constexpr int kRowsPerThread = BM / 16;
  static constexpr unsigned kNoRow = 0xFFFFFFFFu;
  /// idx[0] of the rows a TMA box loads (`tma_rows`): base is the tensor map, stride the box's
  /// first row. The fields are reused so that the producer's live values are the same in
  /// both modes (a separate map pointer and row spilled 20 bytes of the 88-register producer).
  static constexpr unsigned kTmaRows = 0xFFFFFFFEu;
  struct ARows {
    const char* base;
    unsigned stride;  // bytes between index steps
    // kNoRow: not loaded (past the task's valid rows). In shared memory when kRowsInSmem
    // (idx[0] is then 0, or kTmaRows).
    unsigned idx[kRowsInSmem ? 1 : kRowsPerThread];
  };
  /// Rows [row, row + BM) of the 2-D tensor map `map`, loaded as one TMA box a k-tile.
  __device__ static ARows tma_rows(const void* map, unsigned row) {
    ARows rows;
    rows.base = reinterpret_cast<const char*>(map);
    rows.stride = row;
    rows.idx[0] = kTmaRows;
    return rows;
  }
  /// The rows of producer thread `pt`: index(r) (or kNoRow) for each of its tile rows r (in
  /// registers, or in the thread's own column of shared memory: the thread reads them back in
  /// produce(), in program order, so no barrier is needed).
  template <class Index>
  __device__ static ARows a_rows(const Smem& s, unsigned pt, const char* base, unsigned stride, Index index) {
    ARows rows;
    rows.base = base;
    rows.stride = stride;
    if constexpr (kRowsInSmem) rows.idx[0] = 0u;
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
      const unsigned v = index(pt / 8 + 16 * i);
      if constexpr (kRowsInSmem) {
        *s.row_index(i, pt) = v;
      } else {
        rows.idx[i] = v;
      }
    }
    return rows;
  }

  /// Producer thread `pt` (0..127) loads `ktiles` k-tiles of one task: its A chunks (`rows`,
  /// from a_rows) with cp.async, and thread 0 the B tiles with TMA: rows [b_row, b_row + BN)
  /// of the tensor map `b0` (and rows [b1_row, b1_row + BN) of `b1` when the task uses nbu == 2
  /// of the layout's NB B operands: a gated layer's gate and up at the same rows, or two
  /// halves of one weight for a tile twice as wide). The task's shape is run-time data, so a
  /// kernel calls this from one site for every kind of task (two inlined copies of the
  /// engine's loops make ptxas spill).
  ///
  /// With rows from `tma_rows` the task's A rows are contiguous: thread 0 loads each k-tile's
  /// A as one TMA box (rows [row, row + BM) of the map, whose 128-byte swizzle is the layout
  /// the `cp.async` path writes; rows past the tensor read as zeros); every producer thread
  /// still arrives on the stage (the barrier's count is the same). The MoE kernel's GEMM1
  /// takes it (its A is a row tile of the intermediate rows; run 105: one warp's `cp.async`
  /// of a 128-row A made a 128x256 GEMM1 28 -> 47 us, and run 106: TMA against 128 threads'
  /// copies 24.0 -> 23.0 us), as does the tile bench (perf-notes v30 (a): a 256-row stage's
  /// 4096 `cp.async` bound the 256x64 tile). A run-time choice: one call site, both GEMMs.
  __device__ static void produce(const Smem& s, Ring<STAGES>& ps, unsigned pt, const ARows& rows, int ktiles,
                                 const void* b0, const void* b1, int b_row, int nbu, int b1_row,
                                 bool paired = false) {
    const unsigned chunk = pt % 8;
    const unsigned swizzled = (chunk ^ ((pt / 8) & 7u)) * 16;  // rows pt/8 + 16i share r % 8
    if (rows.idx[0] == kTmaRows) {
      // A loop of its own: a branch inside the cp.async loop below cost the producer five
      // registers (spills at 88).
      for (int kt = 0; kt < ktiles; ++kt) {
        mbar_wait(s.empty(ps.slot), ps.phase ^ 1u);
        if (pt == 0) {
          mbar_arrive_expect_tx(s.full(ps.slot), nbu * kBBytes + kABytes);
          tma_load_2d(s.a(ps.slot), rows.base, kt * kBK, (int)rows.stride, s.full(ps.slot));
          load_b(s, ps.slot, 0, b0, kt * kBK, b_row, paired);
          if (NB == 2 && nbu == 2) load_b(s, ps.slot, 1, b1, kt * kBK, b1_row, paired);
        }
        cp_async_arrive_noinc(s.full(ps.slot));
        ps.advance();
      }
      return;
    }
    for (int kt = 0; kt < ktiles; ++kt) {
      mbar_wait(s.empty(ps.slot), ps.phase ^ 1u);
      if (pt == 0) {
        mbar_arrive_expect_tx(s.full(ps.slot), nbu * kBBytes);
        load_b(s, ps.slot, 0, b0, kt * kBK, b_row, paired);
        if (NB == 2 && nbu == 2) load_b(s, ps.slot, 1, b1, kt * kBK, b1_row, paired);
      }
      const unsigned a = s.a(ps.slot);
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
        unsigned idx;
        if constexpr (kRowsInSmem) {
          idx = *s.row_index(i, pt);
        } else {
          idx = rows.idx[i];
        }
        if (idx != kNoRow) {
          const unsigned r = pt / 8 + 16 * i;
          const char* src = rows.base + (unsigned long long)idx * rows.stride + kt * 128 + chunk * 16;
          cp_async_16(a + r * 128 + swizzled, src);
        }
      }
      cp_async_arrive_noinc(s.full(ps.slot));
      ps.advance();
    }
  }

  // ─── consumers ────────────────────────────────────────────────────────────────────────
  /// Which part of a tile consumer warpgroup `cw` computes: its own (cw), or the whole tile
  /// (0) when each warpgroup owns whole tiles (ping-pong).
  __device__ static unsigned tile_part(unsigned cw) { return kPingPong ? 0u : cw; }
  /// The barrier of the consumers that share a tile's epilogue: both warpgroups, or warpgroup
  /// `cw` alone (ping-pong: named barrier 4 + cw).
  __device__ static void epilogue_sync(unsigned cw) {
    if constexpr (kPingPong) {
      named_sync(4 + cw, kConsumerThreads / 2);
    } else {
      consumer_sync();
    }
  }
  /// Consumer warpgroup `cw` (0 or 1) accumulates `ktiles` k-tiles (ktiles >= 1) of the task
  /// the producer is loading, into acc.v[0] (and acc.v[1] when the task uses nbu == 2 B
  /// operands). One k-tile's wgmmas stay in flight while the next k-tile's are issued
  /// (kInFlight = 1); a stage is released as soon as the wgmmas reading it retired. Like
  /// produce(), meant to be called from one site for every kind of task.
  ///
  /// A warpgroup whose rows all lie at or past `valid_rows` (the second 64 rows of a 128-row
  /// tile holding at most 64 rows: an expert's last row tile) issues no wgmma: it releases each
  /// stage as soon as it is full, and its accumulators hold nothing the epilogue stores (it
  /// stores rows below valid_rows only). The other warpgroup then has the tensor cores alone.
  /// Likewise a warpgroup's second slab (256-row tiles) when its rows are all past valid_rows.
  __device__ static void consume(const Smem& s, Ring<STAGES>& ps, Accum& acc, unsigned cw, int ktiles,
                                 int nbu = NB, unsigned valid_rows = BM, bool paired = false) {
    const unsigned part = tile_part(cw);
    const unsigned a_off = (part % kWgM) * kSlabs * 64 * 128;
    const unsigned b_off = (part / kWgM) * kN * 128;
    const int slabs = kSlabs == 1 || ((part % kWgM) * kSlabs + 1) * 64 < valid_rows ? kSlabs : 1;
    if ((part % kWgM) * kSlabs * 64 >= valid_rows) {
      for (int kt = 0; kt < ktiles; ++kt) {
        mbar_wait(s.full(ps.slot), ps.phase);
        release(s, ps.slot, paired);
        ps.advance();
      }
      return;
    }
    // The main loop for `n` slabs, its wgmmas straight-line: a run-time test anywhere among
    // them (`if (m < slabs)` before each, or one branch a k-tile around two sequences) makes
    // ptxas serialise every wgmma of the image (a `WARPGROUP.DEPBAR.LE gsb0, 0x0` after each
    // HGMMA). The two-slab images (256-row tiles, ping-pong) were built that way until session
    // 25 and ran at ~40% of the tensor pipe (perf-notes v39 (b)). So the slab count is chosen
    // once, around two whole loops (one when kSlabs is 1).
    unsigned pending = 0;  // the stage whose wgmmas may still be running
    const auto main_loop = [&](auto n) {
      for (int kt = 0; kt < ktiles; ++kt) {
        mbar_wait(s.full(ps.slot), ps.phase);
        fence_accum(acc);
        wgmma_fence();
        const unsigned long long da = smem_desc(s.a(ps.slot) + a_off);
#pragma unroll
        for (int k = 0; k < kBK / kInstK; ++k) {
          // One instruction's K slice is 32 bytes further along the swizzled row: +2 in the
          // descriptor's address field (the hardware applies the swizzle to the address); the
          // next 64-row slab 8 KiB further: +512.
#pragma unroll
          for (int b = 0; b < NB; ++b) {
            if (b > 0 && nbu < 2) break;
            const unsigned long long db = smem_desc(s.b(ps.slot, b) + b_off);
#pragma unroll
            for (int m = 0; m < decltype(n)::value; ++m) {
              wgmma<M, kN>(acc.v[b][m], da + 512 * m + 2 * k, db + 2 * k, (kt | k) != 0);
            }
          }
        }
        wgmma_commit();
        fence_accum(acc);
        if (kInFlight == 0 || kt > 0) {
          wgmma_wait<kInFlight>();  // the previous k-tile's group (this one's with kInFlight 0)
          release(s, kInFlight == 0 ? ps.slot : pending, paired);
        }
        pending = ps.slot;
        ps.advance();
      }
    };
    if constexpr (kSlabs == 1) {
      main_loop(SlabCount<1>{});
    } else if (slabs == kSlabs) {
      main_loop(SlabCount<kSlabs>{});
    } else {
      main_loop(SlabCount<1>{});
    }
    if (kInFlight != 0) {
      wgmma_wait<0>();
      fence_accum(acc);
      release(s, pending, paired);
    }
  }

  // ─── epilogue ─────────────────────────────────────────────────────────────────────────
  /// The first of the 16 tile rows that consumer thread `ct`'s warp owns in slab `m` of
  /// warpgroup `cw`'s part of the tile, and the part's first column (the fragment layout below).
  __device__ static unsigned warp_row0(unsigned cw, unsigned ct, int m = 0) {
    return ((tile_part(cw) % kWgM) * kSlabs + m) * 64 + 16 * (ct / 32);
  }
  __device__ static unsigned group_col0(unsigned cw) { return (tile_part(cw) / kWgM) * kN; }

  /// Calls f(m, i, row, col) for the accumulator pair (i, i + 1) of slab m of consumer thread
  /// `ct` (0..127) of warpgroup `cw` whose columns lie in [col_lo, col_lo + kChunkCols):
  /// registers i and i + 1 of the slab hold (row, col) and (row, col + 1) of the tile. Fragment layout of
  /// wgmma m64nN: warp w of the group owns rows 16w..16w+15; lane l = 4g + t holds, for each
  /// 8-column block j, columns 8j + 2t (+1) of rows g and g + 8 (registers 4j, 4j+1 and
  /// 4j+2, 4j+3).
  template <class F> __device__ static void for_each_pair(unsigned cw, unsigned ct, unsigned col_lo, F f) {
    const unsigned lane = ct % 32;
    const unsigned group_col = group_col0(cw);
#pragma unroll
    for (int m = 0; m < kSlabs; ++m) {
      const unsigned row0 = warp_row0(cw, ct, m) + lane / 4;
#pragma unroll
      for (int j = 0; j < kN / 8; ++j) {
        const unsigned col = group_col + 8 * j + 2 * (lane % 4);
        if (col < col_lo || col >= col_lo + kChunkCols) continue;  // resolved at compile time per chunk
#pragma unroll
        for (int h = 0; h < 2; ++h) f(m, 4 * j + 2 * h, row0 + 8 * h, col);
      }
    }
  }

  /// Byte offset of byte `offset` of staged row `row` (16-byte chunks XOR-swizzled by row).
  /// With kTmaStore a chunk's 128-byte segments lie one after another, each BM rows of 128
  /// bytes: a segment is then a TMA box with the 128-byte swizzle (the same banks either way).
  __device__ static unsigned staged(unsigned row, unsigned offset) {
    if constexpr (kTmaStore) {
      return offset / 128 * (BM * 128) + row * 128 + (((offset % 128 / 16) ^ (row & 7u)) * 16) + offset % 16;
    } else {
      return row * kStagingStride + (((offset / 16) ^ (row & 7u)) * 16) + offset % 16;
    }
  }

  /// op's value for accumulator pair (i, i + 1) of slab m at (row, col) and (row, col + 1), as
  /// two Elem.
  template <class Op>
  __device__ static void pair_of(const Accum& acc, int m, int i, unsigned row, unsigned col, Op& op,
                                 Elem (&v)[2]) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const float v1 = NB == 2 ? acc.v[NB - 1][m][i + e] : 0.f;
      v[e] = tile::from_f32<Elem>(op(row, col + e, acc.v[0][m][i + e], v1));
    }
  }

  /// Consumer thread `ct` of warpgroup `cw`: op of its accumulators in the kChunkCols columns
  /// from `col_lo`, as Elem, into one chunk of staging (swizzled rows). 16-bit elements leave
  /// by stmatrix, two 8-column blocks (16 bytes a lane) an instruction; 4-byte ones in pairs.
  template <class Op>
  __device__ static void stage_chunk(char* staging, const Accum& acc, unsigned cw, unsigned ct, unsigned col_lo,
                                     Op& op) {
    struct alignas(2 * sizeof(Elem)) Pair {
      Elem x, y;
    };
    if constexpr (kElemBytes == 2) {
      static_assert(kN % 16 == 0 && kChunkCols % 16 == 0, "8-column blocks in pairs, never split by a chunk");
      const unsigned lane = ct % 32;
      const unsigned group_col = group_col0(cw);
      const unsigned base = smem_u32(staging);
#pragma unroll
      for (int slab = 0; slab < kSlabs; ++slab) {
        const unsigned row0 = warp_row0(cw, ct, slab);  // the warp's 16 rows of the slab
        // The row this lane addresses: row lane % 8 of matrix lane / 8, where matrix q holds
        // rows 8 (q % 2) .. of block j + q / 2 (the accumulator's registers 4 (j + q / 2) +
        // 2 (q % 2) ..).
        const unsigned q = lane / 8, addr_row = row0 + 8 * (q % 2) + lane % 8;
#pragma unroll
        for (int j = 0; j < kN / 8; j += 2) {
          const unsigned col_j = group_col + 8 * j;
          if (col_j < col_lo || col_j >= col_lo + kChunkCols) continue;  // resolved at compile time per chunk
          unsigned packed[4];
#pragma unroll
          for (int m = 0; m < 4; ++m) {
            Elem v[2];
            pair_of(acc, slab, 4 * (j + m / 2) + 2 * (m % 2), row0 + lane / 4 + 8 * (m % 2),
                    col_j + 8 * (m / 2) + 2 * (lane % 4), op, v);
            const Pair pr{v[0], v[1]};
            packed[m] = *reinterpret_cast<const unsigned*>(&pr);
          }
          stmatrix_x4(base + staged(addr_row, (col_j + 8 * (q / 2) - col_lo) * kElemBytes), packed);
        }
      }
    } else {
      for_each_pair(cw, ct, col_lo, [&](int slab, int i, unsigned row, unsigned col) {
        Elem v[2];
        pair_of(acc, slab, i, row, col, op, v);
        // One 2-element store (col is even, rows are 16-byte aligned).
        *reinterpret_cast<Pair*>(staging + staged(row, (col - col_lo) * kElemBytes)) = Pair{v[0], v[1]};
      });
    }
  }

  /// Experiment FDM_TMA_STORE: a tile's staged chunks leave by tensor stores (one thread, the
  /// TMA) instead of the threads' 16-byte copies, a store for each 128-byte segment of a
  /// chunk's rows (`staged` lays the segments out as boxes of a 2-D map with the 128-byte
  /// swizzle); both warpgroups on the tile.
#ifdef FDM_TMA_STORE
  static constexpr bool kTmaStore = kChunkCols * kElemBytes % 128 == 0 && !kPingPong;
#else
  static constexpr bool kTmaStore = false;
#endif
  /// Where store_either sends a tile by tensor stores (kTmaStore): `map` (nullptr: the threads
  /// copy it out, as without the experiment), whose box is BM rows of 128 bytes, and the tile's
  /// column 0 and row 0 in it. The caller waits for the stores (thread 0: bulk_wait_written)
  /// before announcing the rows.
  struct TmaOut {
    const void* map = nullptr;
    int col = 0, row = 0;
    /// The tile at byte `at` of `map`'s tensor, whose rows are `row_elems` elements.
    __device__ static TmaOut at_byte(const void* map, unsigned long long at, unsigned row_elems) {
      const unsigned long long row_bytes = (unsigned long long)row_elems * sizeof(Elem);
      return {map, (int)(at % row_bytes / sizeof(Elem)), (int)(at / row_bytes)};
    }
  };

  /// The epilogue of a task, by all 256 consumer threads (`cw`, `ct` as in consume; `c` =
  /// 0..255): out[r][col] = op(r, col, acc0, acc1 (NB == 2) or 0) as Elem for rows r < valid_rows
  /// and columns col < valid_cols (fewer than BN in a ragged last column tile, a multiple of 16
  /// bytes; op still sees every column), row r at out + r * ldo elements. Column chunks of kChunkCols go through the staging
  /// buffer (swizzled: conflict-free) and leave it in 16-byte stores,
  /// whole rows of a chunk by consecutive threads. Starts and ends with a consumer barrier,
  /// so back-to-back tasks never race on the staging buffer.
  template <class Op>
  __device__ static void store(const Smem& s, const Accum& acc, unsigned cw, unsigned ct, unsigned c,
                               unsigned valid_rows, Elem* out, unsigned long long ldo, Op op,
                               unsigned valid_cols = BN) {
    store_either(s, acc, cw, ct, c, valid_rows, out, ldo, true, op, op, valid_cols);
  }

  /// store() through `first ? op_a : op_b`, `first` the same in every consumer thread: one
  /// store site for two kinds of task (the MoE kernel's GEMM0 and GEMM1) whose choice is one
  /// uniform branch a chunk around the staging, not one an element inside the op. Chosen
  /// inside the op, ptxas put a branch around every element's activation, which serialised
  /// the elements' dependent chains (exp, reciprocal): the SwiGLU layers' epilogues took twice
  /// the plain layer's (perf-notes v37).
  template <class OpA, class OpB>
  __device__ static void store_either(const Smem& s, const Accum& acc, unsigned cw, unsigned ct, unsigned c,
                                      unsigned valid_rows, Elem* out, unsigned long long ldo, bool first,
                                      OpA op_a, OpB op_b, unsigned valid_cols = BN, TmaOut tma = {}) {
    // Ping-pong: warpgroup cw's own staging buffer, barrier and 128 threads.
    char* staging = s.staging() + (kPingPong ? cw * kStagingBytes : 0);
    const unsigned first_thread = kPingPong ? ct : c;
    constexpr unsigned kThreads = kPingPong ? kConsumerThreads / 2 : kConsumerThreads;
    constexpr unsigned kVecs = kChunkCols * kElemBytes / 16;  // 16-byte vectors per chunk row
#pragma unroll
    for (int chunk = 0; chunk < BN / kChunkCols; ++chunk) {
      const unsigned col_lo = chunk * kChunkCols;
      if (col_lo >= valid_cols) break;  // the same in every thread: a ragged tile's last chunks
      // Vectors of the chunk's rows to store (kVecs but in a ragged tile's last chunk).
      const unsigned vecs = min(kVecs, (valid_cols - col_lo) * kElemBytes / 16);
      epilogue_sync(cw);  // the previous chunk (or task) has left the staging buffer
      if (first) {
        stage_chunk(staging, acc, cw, ct, col_lo, op_a);
      } else {
        stage_chunk(staging, acc, cw, ct, col_lo, op_b);
      }
      if constexpr (kTmaStore) {
        if (tma.map != nullptr) {  // the same in every thread
          // Each 128-byte segment of the staged chunk is a box of the map (the TMA clips a
          // ragged tile's columns at the tensor's edge); thread 0 sends them once every
          // thread's writes are visible to the async proxy, and waits for their reads before
          // any thread stages the next chunk.
          constexpr unsigned kSegCols = 128 / kElemBytes;
          fence_proxy_async_shared();
          epilogue_sync(cw);
          if (first_thread == 0) {
#pragma unroll
            for (unsigned seg = 0; seg < kChunkCols / kSegCols; ++seg) {
              if (col_lo + seg * kSegCols < valid_cols) {
                tma_store_2d(tma.map, smem_u32(staging + seg * BM * 128), tma.col + (int)(col_lo + seg * kSegCols),
                             tma.row);
              }
            }
            bulk_wait_read();
          }
          continue;
        }
      }
      epilogue_sync(cw);
      for (unsigned v = first_thread; v < valid_rows * kVecs; v += kThreads) {
        const unsigned r = v / kVecs, q = v % kVecs;
        if (q >= vecs) continue;
        const uint4 val = *reinterpret_cast<const uint4*>(staging + staged(r, q * 16));
        *reinterpret_cast<uint4*>(reinterpret_cast<char*>(out + r * ldo + col_lo) + q * 16) = val;
      }
    }
  }
};

}  // namespace hopper
}  // namespace flashdmoe
#endif  // FDM_HOPPER
