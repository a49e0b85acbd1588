// router_wgmma.cuh -- experiment FDM_ROUTER_WGMMA (docs/dev/router-wgmma.md): A1's router tile
// (route.cuh router_gemm) computed by the Hopper block's first two warpgroups' wgmmas instead
// of the mma.sync tile library's, from the same shared memory. The loads stay the mma.sync
// tile's (`Router::load_tile`: cp.async by the 256 router threads, each k-tile's rows of 128
// bytes with chunk c of row r at c ^ (r & 7)), which is the 128-byte swizzle of a K-major wgmma
// operand once the tile's base is 1024-byte aligned; only the math and the store change.
// Warpgroup w takes 64 rows (128-row jobs) or half the columns (64-row jobs) of the job's
// BM x BN logits. Routers of 64 or 128 columns in bf16 / f16 only (E >= 33: the loads, not the
// math, bound the 32-column router); elsewhere FDM_ROUTER_WGMMA_ON is 0 and route.cuh keeps
// the mma.sync tile.
#pragma once

#include "config.cuh"

// On, where the experiment is defined, for the Hopper images' routers of 64 or 128 columns in
// bf16 or f16 (FDM_MODE 0 or 1: TF32 layers route in exact f32); decided by the preprocessor,
// since a wgmma of another shape or type must not even be compiled.
#ifdef FDM_ROUTER_WGMMA
#if FDM_ENGINE == 1 && FDM_HOPPER && FDM_ROUTER_COLS >= 64 && FDM_MODE <= 1
#define FDM_ROUTER_WGMMA_ON 1
#endif
#endif
#ifndef FDM_ROUTER_WGMMA_ON
#define FDM_ROUTER_WGMMA_ON 0
#endif

namespace router_wgmma {

#if FDM_ROUTER_WGMMA_ON
namespace hw = flashdmoe::hopper;
static_assert(Router::kThreads == 256, "two warpgroups of router threads");
/// Warpgroups a column of the job's rows takes (128 rows: two; 64: one, the two split the
/// columns) and the columns of one warpgroup's wgmma.
constexpr int kWgRows = Router::BM / 64;
constexpr int kN = Router::BN * kWgRows / 2;
static_assert(Router::BM == 64 || Router::BM == 128, "router jobs of 64 or 128 rows");
static_assert(kN == 32 || kN == 64 || kN == 128, "a generated wgmma shape");
static_assert(Router::BK * (int)sizeof(typename Router::Elem) == 128, "128-byte k-tile rows (the swizzle)");
/// Dynamic shared memory the tile takes: the mma.sync tile's stages from a 1024-byte-aligned
/// base (the swizzle's atom), hence up to 1 KiB of slack.
constexpr int kTileSmemBytes = Router::kPipeBytes + 1024;
static_assert(kTileSmemBytes <= ::kSmemBytes, "the block's shared memory holds the aligned stages");

/// One warpgroup's accumulators: rows 16w + g (+8) of its 64, columns 8j + 2t (+1) of its kN
/// (tile_wgmma.cuh's fragment layout).
struct Accum {
  float v[kN / 2];
};

__device__ __forceinline__ void fence_accum(Accum& acc) {
#pragma unroll
  for (int i = 0; i < kN / 2; ++i) hw::fence_operand(acc.v[i]);
}

/// The warpgroup's first row and column in the job's tile.
__device__ __forceinline__ int wg_row0(int wg) { return (wg % kWgRows) * 64; }
__device__ __forceinline__ int wg_col0(int wg) { return (wg / kWgRows) * kN; }

/// acc = A[valid_rows x K] * B[valid_cols x K]^T for this thread's warpgroup's part, by the
/// block's first 256 threads (Router::kThreads); `smem` the block's dynamic shared memory.
__device__ void gemm(Accum& acc, const Elem* A, long long lda, int valid_rows, const Elem* B, long long ldb,
                     int valid_cols, int K, char* smem) {
  constexpr int STAGES = Router::STAGES;
  valid_rows = min(valid_rows, Router::BM);
  valid_cols = min(valid_cols, Router::BN);
  Router::sync();  // the previous job's store may still read the staging
  // The thread index is read afresh where it is used (ptx::tid_x, a volatile read): held
  // across the loop with the 64 accumulators of a 128-column job, it and what derives from it
  // made the paper T16384 E128 image spill 32 bytes.
  const unsigned base = (ptx::smem_addr(smem) + 1023u) & ~1023u;
  const int KT = K / Router::BK;
  const auto stage = [&](int slot) { return base + (unsigned)(slot * Router::kStageBytes); };
  const auto load_stage = [&](int slot, int kt) {
    const int k0 = kt * Router::BK;
    Router::load_tile<Router::BM>((int)ptx::tid_x(), stage(slot), A, lda, valid_rows, k0);
    Router::load_tile<Router::BN>((int)ptx::tid_x(), stage(slot) + Router::kATileBytes, B, ldb, valid_cols, k0);
  };
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < KT) load_stage(s, s);
    ptx::cp_async_commit();
  }
  int read_slot = 0, write_slot = STAGES - 1;
#pragma unroll 1
  for (int kt = 0; kt < KT; ++kt) {
    ptx::cp_async_wait<STAGES - 2>();  // this thread's copies of k-tile kt have landed
    hw::fence_proxy_async_shared();    // ... and are visible to the wgmmas' (async) reads
    Router::sync();                    // everyone's; k-tile kt - 1's wgmmas are done (below)
    if (kt + STAGES - 1 < KT) load_stage(write_slot, kt + STAGES - 1);
    ptx::cp_async_commit();
    fence_accum(acc);
    hw::wgmma_fence();
    const int wg = (int)ptx::tid_x() / 128;
    const unsigned long long da = hw::smem_desc(stage(read_slot) + (unsigned)(wg_row0(wg) * 128));
    const unsigned long long db =
        hw::smem_desc(stage(read_slot) + Router::kATileBytes + (unsigned)(wg_col0(wg) * 128));
#pragma unroll
    for (int k = 0; k < Router::BK / 16; ++k) {
      // One instruction's K slice is 32 bytes further along the swizzled rows: +2 in the
      // descriptors' address field (as tile_wgmma.cuh's main loop).
      hw::wgmma<kRouterMode, kN>(acc.v, da + 2 * k, db + 2 * k, (kt | k) != 0);
    }
    hw::wgmma_commit();
    hw::wgmma_wait<0>();  // before the next barrier, after which the slot may be refilled
    fence_accum(acc);
    read_slot = read_slot + 1 == STAGES ? 0 : read_slot + 1;
    write_slot = write_slot + 1 == STAGES ? 0 : write_slot + 1;
  }
  if (KT == 0) {
#pragma unroll
    for (int i = 0; i < kN / 2; ++i) acc.v[i] = 0.f;
  }
  ptx::cp_async_wait<0>();
  Router::sync();
}

/// The warpgroup's part of the job's logits into `out` (row 0 of the job, row stride `ld`
/// floats), rows < `rows` and columns < `cols` only.
__device__ void store(const Accum& acc, float* out, long long ld, int rows, int cols) {
  const int tid = (int)ptx::tid_x(), wg = tid / 128, t = tid % 128;
  const int row = wg_row0(wg) + 16 * (t / 32) + (t % 32) / 4;
  const int col0 = wg_col0(wg) + 2 * (t % 4);
#pragma unroll
  for (int j = 0; j < kN / 8; ++j) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = row + 8 * h;
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int c = col0 + 8 * j + e;
        if (r < rows && c < cols) out[(long long)r * ld + c] = acc.v[4 * j + 2 * h + e];
      }
    }
  }
}
#endif

}  // namespace router_wgmma
