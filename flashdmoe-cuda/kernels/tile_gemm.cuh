// tile_gemm.cuh — block-level tensor-core tile GEMM + fused epilogues for FlashDMoE.
//
// Header-only device code. Compiles under NVRTC 13.0 (no host/system headers) and nvcc.
// Interface and design notes: docs/dev/tile-gemm.md.
//
// ─────────────────────────────────────────────────────────────────────────────────────
// CONTRACT (one call, executed cooperatively by ALL kThreads threads of a block)
//
//   acc[BM x BN] (f32, registers)  =  A[valid_rows x K] * B[valid_cols x K]^T
//
//   A : row-major, leading dimension lda (elements). Tile rows >= valid_rows are NOT read
//       (cp.async with src-size 0 -> zero-filled in shared memory); they are never stored.
//   B : row-major [N][K] (nn.Linear weight layout [out, in]), leading dimension ldb.
//       Tile rows (= output columns) >= valid_cols are not read either (zero-filled).
//   K : runtime, must be a multiple of BK (64 for bf16/f16, 32 for f32 modes). K == 0 -> 0.
//   lda, ldb: multiples of 8 elements (16-bit) / 4 elements (f32), i.e. 16-byte rows;
//   A and B pointers 16-byte aligned. valid_rows in 0..=BM, valid_cols in 0..=BN.
//   Accumulators are always f32. `acc` is overwritten (not accumulated into).
//
//   Threads: the block must have exactly kThreads (= 256 for every shipped config)
//   threads in a 1-D layout (threadIdx.x); callers use __launch_bounds__(256, 1).
//   Shared memory: the caller passes `char* smem` (>= kSmemBytes bytes, 128-byte aligned),
//   usually its dynamic shared memory; it sets the launch's dynamic smem from kSmemBytes.
//
//   Re-entrancy: gemm()/gemm_dual() start with a block barrier (sync(): __syncthreads(), or
//   the named barrier FDM_TILE_BARRIER_ID of kThreads threads) and end with all cp.async
//   groups drained + sync(); store() also syncs before and after touching smem.
//   So a persistent block may call gemm -> epilogue -> store -> gemm ... back to back on the
//   same smem for different tiles. All threads of the block must make the same calls
//   (they contain sync()).
//
// Compile-time knobs: Mode (BF16 | F16 | TF32 | F32Exact), BM, BN, BK, STAGES, WARPS_M,
// WARPS_N, NB (1 = plain, 2 = dual-B for SwiGLU), FRAG_PIPE (register-pipelined fragments;
// default on for bf16/f16). Ready-made configs at the bottom
// (TileLarge / TileMedium / TileSmall / TileTiny / TileDual / TileDualSmall).
//
// Epilogue: register helpers on Accum (add_bias, scale_rows, relu, gelu, swiglu, gated, for_each)
// and store<OutT>(acc, C, ldc, valid_rows, valid_cols, smem[, row_index[, op]]) which writes
// bf16/f16/f32 with 16-byte stores and applies op(row, col, v) (e.g. EpilogueOp: bias,
// activation, row scale) on the way out.
//
// Check registers/spills without a GPU:
//   python3 scripts/nvrtc_check.py flashdmoe-cuda/kernels/tile_gemm.cuh -DFLASHDMOE_TILE_GEMM_SELFTEST
// ─────────────────────────────────────────────────────────────────────────────────────
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "activation_math.h"

namespace flashdmoe {
namespace tile {

// ═════════════════════════════════════════════════════════════════════════════════════
// Element modes
// ═════════════════════════════════════════════════════════════════════════════════════

enum class Mode : int {
  BF16 = 0,      // bf16 inputs, mma.sync m16n8k16 (f32 accumulate)
  F16 = 1,       // f16 inputs, mma.sync m16n8k16 (f32 accumulate)
  TF32 = 2,      // f32 inputs rounded to tf32 (cvt.rna), mma.sync m16n8k8
  F32Exact = 3,  // f32 inputs, plain FFMA on CUDA cores (verification path, slow)
};

template <Mode M> struct ModeTraits;
template <> struct ModeTraits<Mode::BF16> {
  using Elem = __nv_bfloat16;
  static constexpr int kBK = 64;  // 64 x 2 B = 128-byte smem rows
};
template <> struct ModeTraits<Mode::F16> {
  using Elem = __half;
  static constexpr int kBK = 64;
};
template <> struct ModeTraits<Mode::TF32> {
  using Elem = float;
  static constexpr int kBK = 32;  // 32 x 4 B = 128-byte smem rows
};
template <> struct ModeTraits<Mode::F32Exact> {
  using Elem = float;
  static constexpr int kBK = 32;
};

// Scalar conversions used by the epilogue (bias loads, stores).
__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }

// Activations (also usable directly inside custom epilogue ops).
enum class Act : int { None = 0, Relu = 1, Gelu = 2 };

__device__ __forceinline__ float relu_f(float x) { return fmaxf(x, 0.f); }
/// Exact (erf) GELU, matching the CPU oracle: 0.5 x (1 + erf(x / sqrt 2)).
__device__ __forceinline__ float gelu_f(float x) { return 0.5f * x * (1.f + erff(x * 0.70710678118654752440f)); }
/// SiLU x * sigmoid(x) = x / (1 + exp(-x)) (activation_math.h's, which the MoE kernel's
/// epilogues and their host test use).
__device__ __forceinline__ float silu_f(float x) { return ::flashdmoe::act::silu(x); }

template <Act ACT> __device__ __forceinline__ float activate(float x) {
  if constexpr (ACT == Act::Relu) return relu_f(x);
  else if constexpr (ACT == Act::Gelu) return gelu_f(x);
  else return x;
}

// ═════════════════════════════════════════════════════════════════════════════════════
// PTX wrappers (sm_80+)
// ═════════════════════════════════════════════════════════════════════════════════════
namespace ptx {

// threadIdx.x, opaque to loop-invariant code motion (see TileGemm::tid()).
__device__ __forceinline__ int tid_x() {
  int r;
  asm volatile("mov.u32 %0, %%tid.x;\n" : "=r"(r));
  return r;
}

__device__ __forceinline__ unsigned int smem_addr(const void* p) {
  return static_cast<unsigned int>(__cvta_generic_to_shared(p));
}

// 16-byte async global->shared copy, L2 only (.cg). src_bytes == 0 reads nothing from
// global memory and zero-fills the 16 destination bytes (used for masked rows).
__device__ __forceinline__ void cp_async_16(unsigned int dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8x8 b16 matrices; lane i supplies the row address for matrix i/8, row i%8.
__device__ __forceinline__ void ldmatrix_x4(unsigned int (&r)[4], unsigned int addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const unsigned int (&a)[4], unsigned int b0,
                                               unsigned int b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_f16_16816(float (&d)[4], const unsigned int (&a)[4], unsigned int b0,
                                              unsigned int b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_tf32_1688(float (&d)[4], const unsigned int (&a)[4], unsigned int b0,
                                              unsigned int b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// Round-to-nearest (ties away) f32 -> tf32; the result is an f32 bit pattern with the low
// 13 mantissa bits cleared, as mma .tf32 expects.
__device__ __forceinline__ unsigned int f32_to_tf32(unsigned int x) {
  unsigned int r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(__uint_as_float(x)));
  return r;
}

}  // namespace ptx

// ═════════════════════════════════════════════════════════════════════════════════════
// The tile GEMM
// ═════════════════════════════════════════════════════════════════════════════════════
//
// Work split: WARPS_M x WARPS_N warps; warp (wm, wn) owns the WTM x WTN sub-tile at
// rows wm*WTM, cols wn*WTN, made of MI x NI mma tiles of 16 x 8.
//
// Accumulator fragment layout (same for m16n8k16 and m16n8k8; used by all modes,
// including F32Exact, so every epilogue works on every mode). With lane = g*4 + t
// (g = lane/4 in 0..7, t = lane%4):
//     acc.v[mi][ni][e]  is C element  (row, col) =
//         (wm*WTM + mi*16 + g + 8*(e/2),  wn*WTN + ni*8 + 2*t + (e%2))
//
// Shared-memory layout, one pipeline stage (STAGES of them back to back):
//     [ A tile: BM rows ][ B0 tile: BN rows ][ B1 tile: BN rows, dual only ]
// Every tile row holds BK elements of K = RB = 128 bytes (BK*sizeof(Elem) == 128), i.e.
// 8 chunks of 16 bytes. Chunk c of row r is stored at physical chunk (c ^ (r & 7)) — an
// XOR swizzle: the 8 rows read by one 8x8 ldmatrix (same logical chunk, consecutive rows)
// land in 8 different 16-byte bank groups => conflict-free ldmatrix and cp.async stores,
// without padding.
//
// Pipeline (classic sm_80 multistage): STAGES-1 k-tiles are prefetched with cp.async
// (one commit group per k-tile, empty groups keep the counting uniform). Iteration kt:
//     wait until k-tile kt has landed (cp.async.wait_group STAGES-2), __syncthreads()
//     issue the copy of k-tile kt+STAGES-1 into the slot consumed at iteration kt-1
//     run the tensor-core math on slot kt % STAGES
// so one barrier per k-tile covers both RAW (data landed) and WAR (slot free) hazards.
//
// Fragment loads from smem (16-bit modes; K step of one mma = 16 elements = 2 chunks):
//   A, m16n8k16 "row": ldmatrix.x4 — lane i addresses row (i%16), chunk 2*ks + i/16.
//       Matrices 0..3 = (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15),
//       (rows 8-15, k 8-15) = a0..a3 of the PTX fragment (a0: row g, k 2t..2t+1 etc.).
//   B, m16n8k16 "col" (= B stored [n][k], k contiguous): ldmatrix.x4 (no .trans) covers
//       two n8 tiles — lane i addresses n-row (i%8) + 8*(i/16), chunk 2*ks + (i/8)%2:
//       matrices = (n 0-7, k 0-7) = b0, (n 0-7, k 8-15) = b1 of ni, then the same for ni+1.
// TF32: an 8x8 b16 matrix of f32 data is 8 rows x 4 floats and thread (g, t) receives
// float (g, t) — exactly the m16n8k8 tf32 A/B fragment element. So the *same* chunk
// addressing serves TF32 with one mma K step = 8 floats = 2 chunks; each loaded register
// then goes through cvt.rna.tf32.f32.
template <Mode MODE, int BM_, int BN_, int BK_, int STAGES_, int WARPS_M_, int WARPS_N_, int NB_ = 1,
          bool FRAG_PIPE_ = (MODE == Mode::BF16 || MODE == Mode::F16)>
struct TileGemm {
  using Elem = typename ModeTraits<MODE>::Elem;

  static constexpr Mode kMode = MODE;
  static constexpr int BM = BM_, BN = BN_, BK = BK_, STAGES = STAGES_;
  static constexpr int WARPS_M = WARPS_M_, WARPS_N = WARPS_N_, NB = NB_;
  /// true: register double-buffered fragments across k-steps and k-tiles (default for
  /// bf16/f16; faster); false: the simple loop (a k-step's fragments loaded, then its mma).
  /// TF32 defaults to false: its cvt'd fragments make the pipelined 128x256 / dual tiles
  /// spill. Ignored by F32Exact.
  static constexpr bool FRAG_PIPE = FRAG_PIPE_;
  static constexpr int kThreads = WARPS_M * WARPS_N * 32;
  static constexpr int WTM = BM / WARPS_M;  // warp tile rows
  static constexpr int WTN = BN / WARPS_N;  // warp tile cols
  static constexpr int MI = WTM / 16;       // mma tiles per warp along M
  static constexpr int NI = WTN / 8;        // mma tiles per warp along N
  static constexpr int kElemBytes = (int)sizeof(Elem);
  static constexpr int RB = BK * kElemBytes;  // bytes per smem tile row
  static constexpr int CPR = RB / 16;         // 16-byte chunks per smem tile row
  static constexpr int KSTEPS = CPR / 2;      // mma K steps per k-tile (2 chunks each)
  static constexpr int kATileBytes = BM * RB;
  static constexpr int kBTileBytes = BN * RB;
  static constexpr int kStageBytes = kATileBytes + NB * kBTileBytes;
  static constexpr int kPipeBytes = STAGES * kStageBytes;
  // store() stages the f32 tile through smem, rows padded by 8 floats (see store()).
  static constexpr int kStagingBytes = BM * (BN + 8) * 4;
  /// Dynamic shared memory the caller must provide (covers mainloop and store()).
  static constexpr int kSmemBytes = kPipeBytes > kStagingBytes ? kPipeBytes : kStagingBytes;

  static_assert(RB % 128 == 0, "BK * sizeof(Elem) must be a multiple of 128 bytes (swizzle)");
  static_assert(BK == ModeTraits<MODE>::kBK, "use ModeTraits<MODE>::kBK as BK");
  static_assert(BM % (16 * WARPS_M) == 0, "warp tile rows must be a multiple of 16");
  static_assert(BN % (16 * WARPS_N) == 0, "warp tile cols must be a multiple of 16 (ldmatrix.x4 on B)");
  static_assert(STAGES >= 2, "need at least double buffering");
  static_assert(NB == 1 || NB == 2, "NB is 1 (plain) or 2 (dual-B SwiGLU)");
  static_assert(kThreads % CPR == 0, "loader assumes whole rows per thread sweep");
  static_assert((BM * CPR) % kThreads == 0 && (BN * CPR) % kThreads == 0,
                "tile chunk count must be a multiple of the thread count");
  static_assert(((kThreads / CPR) & 7) == 0, "loader row step must keep (row & 7) (swizzle)");

  /// Per-thread accumulators: this thread's MI x NI x 4 elements of the BM x BN tile.
  struct Accum {
    float v[MI][NI][4];
  };

  // ─── small helpers ────────────────────────────────────────────────────────────────
  // The thread index is read through ptx::tid() (a volatile asm), so the compiler cannot
  // hoist the many per-thread addresses derived from it out of the caller's persistent
  // tile loop, where they would stay live across the register-hungry main loop.
  static __device__ __forceinline__ int tid() { return ptx::tid_x(); }
  /// The tile's barrier: __syncthreads(), or with FDM_TILE_BARRIER_ID defined the named
  /// barrier of that id over the tile's kThreads threads, so a block with more threads (the
  /// Hopper kernel's 384) can run a tile on its first kThreads while the others do not take
  /// part.
  static __device__ __forceinline__ void sync() {
#ifdef FDM_TILE_BARRIER_ID
    asm volatile("bar.sync %0, %1;" ::"n"(FDM_TILE_BARRIER_ID), "n"(kThreads) : "memory");
#else
    __syncthreads();
#endif
  }
  static __device__ __forceinline__ int lane_id() { return tid() & 31; }
  static __device__ __forceinline__ int warp_m() { return (tid() >> 5) / WARPS_N; }
  static __device__ __forceinline__ int warp_n() { return (tid() >> 5) % WARPS_N; }

  /// Tile-local row of acc.v[mi][*][e] for this thread.
  static __device__ __forceinline__ int frag_row(int mi, int e) {
    return warp_m() * WTM + mi * 16 + (lane_id() >> 2) + 8 * (e >> 1);
  }
  /// Tile-local column of acc.v[*][ni][e] for this thread.
  static __device__ __forceinline__ int frag_col(int ni, int e) {
    return warp_n() * WTN + ni * 8 + 2 * (lane_id() & 3) + (e & 1);
  }

  static __device__ __forceinline__ void zero(Accum& acc) {
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int ni = 0; ni < NI; ++ni)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc.v[mi][ni][e] = 0.f;
  }

  // ─── global -> shared loader ──────────────────────────────────────────────────────
  // Thread `tid` copies chunk (tid % CPR) of rows tid/CPR + i*ROWS_PER_SWEEP, i < ITERS.
  // ROWS_PER_SWEEP is a multiple of 8, so (row & 7) — hence the swizzle — is the same for
  // all i and the smem offset advances by a constant.
  static constexpr int ROWS_PER_SWEEP = kThreads / CPR;

  template <int ROWS>
  static __device__ __forceinline__ void load_tile(int tid, unsigned int s_tile, const Elem* g, long long ld,
                                                   int valid, int k0) {
    constexpr int ITERS = ROWS * CPR / kThreads;
    const int chunk = tid % CPR;
    const int row0 = tid / CPR;
    const unsigned int s0 = s_tile + (unsigned int)(row0 * RB + ((chunk ^ (row0 & 7)) << 4));
    const char* gbase = reinterpret_cast<const char*>(g + k0);  // row 0 of the tile at k0
    const char* g0 = gbase + (long long)row0 * ld * kElemBytes + chunk * 16;
    const long long step = (long long)ROWS_PER_SWEEP * ld * kElemBytes;
#pragma unroll
    for (int i = 0; i < ITERS; ++i) {
      const bool ok = row0 + i * ROWS_PER_SWEEP < valid;
      // Masked rows: src-size 0 => nothing is read, 16 zero bytes are written. The address
      // is pointed at row 0 anyway so it never leaves the caller's allocation.
      const char* src = ok ? g0 + i * step : gbase;
      ptx::cp_async_16(s0 + (unsigned int)(i * ROWS_PER_SWEEP * RB), src, ok ? 16 : 0);
    }
  }

  // ─── fragments of one k-step (tensor-core modes) ──────────────────────────────────
  struct Frags {
    unsigned int a[MI][4];
    unsigned int b[NB][NI][2];
  };

  // ldmatrix the A and B fragments of k-step ks from the stage at smem address s.
  template <int NBU>
  static __device__ __forceinline__ void load_frags(int tid, Frags& f, unsigned int s, int ks) {
    const int lane = tid & 31, wm = (tid >> 5) / WARPS_N, wn = (tid >> 5) % WARPS_N;
    const unsigned int a_off = (unsigned int)((wm * WTM + (lane & 15)) * RB) +
                               (unsigned int)(((2 * ks) ^ ((lane >> 4) ^ (lane & 7))) << 4);
    const unsigned int b_off = (unsigned int)((wn * WTN + (lane & 7) + ((lane >> 4) << 3)) * RB) +
                               (unsigned int)(((2 * ks) ^ (((lane >> 3) & 1) ^ (lane & 7))) << 4);
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
      ptx::ldmatrix_x4(f.a[mi], s + a_off + mi * 16 * RB);
      if constexpr (MODE == Mode::TF32) {
#pragma unroll
        for (int j = 0; j < 4; ++j) f.a[mi][j] = ptx::f32_to_tf32(f.a[mi][j]);
      }
    }
#pragma unroll
    for (int nb = 0; nb < NBU; ++nb)
#pragma unroll
      for (int np = 0; np < NI / 2; ++np) {
        unsigned int r[4];
        ptx::ldmatrix_x4(r, s + kATileBytes + nb * kBTileBytes + b_off + np * 16 * RB);
        if constexpr (MODE == Mode::TF32) {
#pragma unroll
          for (int j = 0; j < 4; ++j) r[j] = ptx::f32_to_tf32(r[j]);
        }
        f.b[nb][2 * np][0] = r[0];
        f.b[nb][2 * np][1] = r[1];
        f.b[nb][2 * np + 1][0] = r[2];
        f.b[nb][2 * np + 1][1] = r[3];
      }
  }

  template <int NBU>
  static __device__ __forceinline__ void mma_frags(const Frags& f, Accum& acc0, Accum& acc1) {
#pragma unroll
    for (int nb = 0; nb < NBU; ++nb) {
      Accum& acc = nb == 0 ? acc0 : acc1;
#pragma unroll
      for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) {
          const int n = (mi & 1) ? (NI - 1 - ni) : ni;  // serpentine: reuse B regs across mi
          if constexpr (MODE == Mode::BF16)
            ptx::mma_bf16_16816(acc.v[mi][n], f.a[mi], f.b[nb][n][0], f.b[nb][n][1]);
          else if constexpr (MODE == Mode::F16)
            ptx::mma_f16_16816(acc.v[mi][n], f.a[mi], f.b[nb][n][0], f.b[nb][n][1]);
          else
            ptx::mma_tf32_1688(acc.v[mi][n], f.a[mi], f.b[nb][n][0], f.b[nb][n][1]);
        }
    }
  }

  // ─── math on one smem stage ───────────────────────────────────────────────────────
  template <int NBU>
  static __device__ __forceinline__ void mma_stage(int tid, Accum& acc0, Accum& acc1, unsigned int sA,
                                                   unsigned int sB0, unsigned int sB1) {
    const int lane = tid & 31, wm = (tid >> 5) / WARPS_N, wn = (tid >> 5) % WARPS_N;
    // Per-lane ldmatrix row offsets and chunk XOR terms (see the layout comment above).
    const unsigned int a_row = (unsigned int)((wm * WTM + (lane & 15)) * RB);
    const int a_x = (lane >> 4) ^ (lane & 7);
    const unsigned int b_row = (unsigned int)((wn * WTN + (lane & 7) + ((lane >> 4) << 3)) * RB);
    const int b_x = ((lane >> 3) & 1) ^ (lane & 7);

#pragma unroll
    for (int ks = 0; ks < KSTEPS; ++ks) {
      // (2*ks + hi) ^ (r & 7) == (2*ks) ^ (hi ^ (r & 7)) because hi is 0/1 and 2*ks is even.
      const unsigned int a_off = a_row + (unsigned int)(((2 * ks) ^ a_x) << 4);
      const unsigned int b_off = b_row + (unsigned int)(((2 * ks) ^ b_x) << 4);

      unsigned int af[MI][4];
#pragma unroll
      for (int mi = 0; mi < MI; ++mi) {
        ptx::ldmatrix_x4(af[mi], sA + a_off + mi * 16 * RB);
        if constexpr (MODE == Mode::TF32) {
#pragma unroll
          for (int j = 0; j < 4; ++j) af[mi][j] = ptx::f32_to_tf32(af[mi][j]);
        }
      }
#pragma unroll
      for (int nb = 0; nb < NBU; ++nb) {
        const unsigned int sB = nb == 0 ? sB0 : sB1;
        Accum& acc = nb == 0 ? acc0 : acc1;
        unsigned int bf[NI][2];
#pragma unroll
        for (int np = 0; np < NI / 2; ++np) {
          unsigned int r[4];
          ptx::ldmatrix_x4(r, sB + b_off + np * 16 * RB);
          if constexpr (MODE == Mode::TF32) {
#pragma unroll
            for (int j = 0; j < 4; ++j) r[j] = ptx::f32_to_tf32(r[j]);
          }
          bf[2 * np][0] = r[0];
          bf[2 * np][1] = r[1];
          bf[2 * np + 1][0] = r[2];
          bf[2 * np + 1][1] = r[3];
        }
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
          for (int ni = 0; ni < NI; ++ni) {
            // Serpentine order over ni keeps one B fragment live across mi transitions.
            const int n = (mi & 1) ? (NI - 1 - ni) : ni;
            if constexpr (MODE == Mode::BF16)
              ptx::mma_bf16_16816(acc.v[mi][n], af[mi], bf[n][0], bf[n][1]);
            else if constexpr (MODE == Mode::F16)
              ptx::mma_f16_16816(acc.v[mi][n], af[mi], bf[n][0], bf[n][1]);
            else
              ptx::mma_tf32_1688(acc.v[mi][n], af[mi], bf[n][0], bf[n][1]);
          }
      }
    }
  }

  // F32Exact: the same accumulator layout computed with FFMA. For each 16-byte chunk
  // (4 consecutive k) the thread reads float4s of its 2*MI A rows and 2*NI B rows.
  template <int NBU>
  static __device__ __forceinline__ void ffma_stage(int tid, Accum& acc0, Accum& acc1, const char* sA,
                                                    const char* sB0, const char* sB1) {
    const int lane = tid & 31, wm = (tid >> 5) / WARPS_N, wn = (tid >> 5) % WARPS_N;
    const int g = lane >> 2, t = lane & 3;
#pragma unroll 1
    for (int c = 0; c < CPR; ++c) {
      float4 a[MI][2];
#pragma unroll
      for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int r = wm * WTM + mi * 16 + g + 8 * h;
          a[mi][h] = *reinterpret_cast<const float4*>(sA + r * RB + ((c ^ (r & 7)) << 4));
        }
#pragma unroll
      for (int nb = 0; nb < NBU; ++nb) {
        const char* sB = nb == 0 ? sB0 : sB1;
        Accum& acc = nb == 0 ? acc0 : acc1;
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            const int n = wn * WTN + ni * 8 + 2 * t + j;
            const float4 b = *reinterpret_cast<const float4*>(sB + n * RB + ((c ^ (n & 7)) << 4));
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
#pragma unroll
              for (int h = 0; h < 2; ++h) {
                float& d = acc.v[mi][ni][2 * h + j];
                d = fmaf(a[mi][h].x, b.x, d);
                d = fmaf(a[mi][h].y, b.y, d);
                d = fmaf(a[mi][h].z, b.z, d);
                d = fmaf(a[mi][h].w, b.w, d);
              }
          }
      }
    }
  }

  // ─── the pipelined main loop ──────────────────────────────────────────────────────
  template <int NBU>
  static __device__ __forceinline__ void mainloop(Accum& acc0, Accum& acc1, const Elem* A, long long lda,
                                                  int valid_rows, const Elem* B0, const Elem* B1, long long ldb,
                                                  int valid_cols, int K, char* smem) {
    static_assert(NBU <= NB, "dual-B needs a config with NB == 2 (smem for two B tiles)");
    valid_rows = valid_rows < BM ? valid_rows : BM;
    valid_cols = valid_cols < BN ? valid_cols : BN;

    sync();  // entry: smem may still be in use by the previous tile's epilogue
    zero(acc0);
    if constexpr (NBU == 2) zero(acc1);

    const int tid = TileGemm::tid();  // once per call; see tid()
    const unsigned int s_base = ptx::smem_addr(smem);
    const int KT = K / BK;

    auto load_stage = [&](int slot, int kt) {
      const unsigned int s = s_base + (unsigned int)(slot * kStageBytes);
      const int k0 = kt * BK;
      load_tile<BM>(tid, s, A, lda, valid_rows, k0);
      load_tile<BN>(tid, s + kATileBytes, B0, ldb, valid_cols, k0);
      if constexpr (NBU == 2) load_tile<BN>(tid, s + kATileBytes + kBTileBytes, B1, ldb, valid_cols, k0);
    };

    // Prologue: prefetch k-tiles 0 .. STAGES-2 (always STAGES-1 commit groups).
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
      if (s < KT) load_stage(s, s);
      ptx::cp_async_commit();
    }

    int read_slot = 0;             // slot holding k-tile kt
    int write_slot = STAGES - 1;   // slot that receives k-tile kt + STAGES - 1

    if constexpr (MODE != Mode::F32Exact && FRAG_PIPE) {
      // Fragment-pipelined loop (the default for tensor-core modes). The fragments of
      // k-step ks+1 are ldmatrix'ed into the other register buffer before the mma of k-step
      // ks are issued, and the barrier that opens k-tile kt+1 sits *before* the mma of the
      // last k-step of kt, so k-tile kt+1's first fragments also load under tensor-core work.
      // Hazards: RAW — wait_group(STAGES-2) + barrier before any read of a new k-tile;
      // WAR — k-tile kt+STAGES-1 goes into the slot of k-tile kt-1, whose last ldmatrix
      // happened before the barrier that ended k-tile kt-1 (all later reads are kt's).
      static_assert(KSTEPS % 2 == 0, "buffer parity must repeat every k-tile");
      ptx::cp_async_wait<STAGES - 2>();
      sync();
      Frags fr[2];
      load_frags<NBU>(tid, fr[0], s_base, 0);
#pragma unroll 1
      for (int kt = 0; kt < KT; ++kt) {
        if (kt + STAGES - 1 < KT) load_stage(write_slot, kt + STAGES - 1);
        ptx::cp_async_commit();
        unsigned int s_rd = s_base + (unsigned int)(read_slot * kStageBytes);
#pragma unroll
        for (int ks = 0; ks < KSTEPS; ++ks) {
          if (ks == KSTEPS - 1) {
            ptx::cp_async_wait<STAGES - 2>();  // k-tile kt+1 has landed ...
            sync();                   // ... for everyone; kt's smem reads are done
            read_slot = read_slot + 1 == STAGES ? 0 : read_slot + 1;
            write_slot = write_slot + 1 == STAGES ? 0 : write_slot + 1;
            s_rd = s_base + (unsigned int)(read_slot * kStageBytes);
          }
          if (ks < KSTEPS - 1 || kt + 1 < KT) load_frags<NBU>(tid, fr[(ks + 1) & 1], s_rd, (ks + 1) % KSTEPS);
          mma_frags<NBU>(fr[ks & 1], acc0, acc1);
        }
      }
    } else {
      // Simple loop (TF32 by default, F32Exact always): one barrier per k-tile, then the
      // whole k-tile's math.
#pragma unroll 1
      for (int kt = 0; kt < KT; ++kt) {
        ptx::cp_async_wait<STAGES - 2>();  // k-tile kt has landed (this thread's copies)
        sync();                   // ... everyone's copies; slot kt-1 fully consumed

        if (kt + STAGES - 1 < KT) load_stage(write_slot, kt + STAGES - 1);
        ptx::cp_async_commit();

        const unsigned int s = s_base + (unsigned int)(read_slot * kStageBytes);
        if constexpr (MODE == Mode::F32Exact) {
          const char* p = smem + read_slot * kStageBytes;
          ffma_stage<NBU>(tid, acc0, acc1, p, p + kATileBytes, p + kATileBytes + kBTileBytes);
        } else {
          mma_stage<NBU>(tid, acc0, acc1, s, s + kATileBytes, s + kATileBytes + kBTileBytes);
        }

        read_slot = read_slot + 1 == STAGES ? 0 : read_slot + 1;
        write_slot = write_slot + 1 == STAGES ? 0 : write_slot + 1;
      }
    }

    ptx::cp_async_wait<0>();  // exit: no copy may still be in flight into smem
    sync();          // everyone is done reading smem
  }

  // ═══════════════════════════════════════════════════════════════════════════════════
  // Public API
  // ═══════════════════════════════════════════════════════════════════════════════════

  /// acc = A[valid_rows x K] * B[valid_cols x K]^T  (A, B point at the tile's row 0, k 0).
  static __device__ __forceinline__ void gemm(Accum& acc, const Elem* A, long long lda, int valid_rows,
                                              const Elem* B, long long ldb, int valid_cols, int K, char* smem) {
    mainloop<1>(acc, acc, A, lda, valid_rows, B, B, ldb, valid_cols, K, smem);
  }

  /// SwiGLU's two projections sharing the A tile loads:
  ///   acc_gate = A * B_gate^T, acc_up = A * B_up^T  (same ldb, valid_cols). Needs NB == 2.
  static __device__ __forceinline__ void gemm_dual(Accum& acc_gate, Accum& acc_up, const Elem* A, long long lda,
                                                   int valid_rows, const Elem* B_gate, const Elem* B_up,
                                                   long long ldb, int valid_cols, int K, char* smem) {
    mainloop<2>(acc_gate, acc_up, A, lda, valid_rows, B_gate, B_up, ldb, valid_cols, K, smem);
  }

  // ─── epilogue helpers (registers only, no synchronisation) ───────────────────────

  /// f(row, col, v&) for every accumulator element this thread owns (tile-local coords).
  /// Elements of masked rows/cols are visited too (they hold 0 + whatever f does).
  template <class F>
  static __device__ __forceinline__ void for_each(Accum& acc, F&& f) {
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int ni = 0; ni < NI; ++ni)
#pragma unroll
        for (int e = 0; e < 4; ++e) f(frag_row(mi, e), frag_col(ni, e), acc.v[mi][ni][e]);
  }

  /// acc[r][c] += bias[c] for c < valid_cols. `bias` points at the tile's column 0
  /// (bf16, f16 or f32).
  template <typename BiasT>
  static __device__ __forceinline__ void add_bias(Accum& acc, const BiasT* bias, int valid_cols) {
#pragma unroll
    for (int ni = 0; ni < NI; ++ni)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int c = frag_col(ni, j);
        const float b = c < valid_cols ? to_f32(bias[c]) : 0.f;
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) {
          acc.v[mi][ni][j] += b;
          acc.v[mi][ni][j + 2] += b;
        }
      }
  }

  /// acc[r][c] *= scale[r] for r < valid_rows (e.g. the router's combine weight).
  /// `scale` points at the tile's row 0.
  static __device__ __forceinline__ void scale_rows(Accum& acc, const float* scale, int valid_rows) {
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = frag_row(mi, 2 * h);
        const float s = r < valid_rows ? scale[r] : 0.f;
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) {
          acc.v[mi][ni][2 * h] *= s;
          acc.v[mi][ni][2 * h + 1] *= s;
        }
      }
  }

  static __device__ __forceinline__ void relu(Accum& acc) {
    for_each(acc, [](int, int, float& v) { v = relu_f(v); });
  }
  static __device__ __forceinline__ void gelu(Accum& acc) {
    for_each(acc, [](int, int, float& v) { v = gelu_f(v); });
  }
  /// gate = silu(gate) * up  (result in `gate`).
  static __device__ __forceinline__ void swiglu(Accum& gate, const Accum& up) {
    gated(gate, up, [](float g, float u) { return silu_f(g) * u; });
  }
  /// gate = f(gate, up) element by element (result in `gate`): a gated activation.
  template <class F>
  static __device__ __forceinline__ void gated(Accum& gate, const Accum& up, F f) {
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int ni = 0; ni < NI; ++ni)
#pragma unroll
        for (int e = 0; e < 4; ++e) gate.v[mi][ni][e] = f(gate.v[mi][ni][e], up.v[mi][ni][e]);
  }

  // ─── store (uses smem; contains __syncthreads) ────────────────────────────────────

  /// Writes C[r][c] = op(r, c, acc[r][c]) for r < valid_rows, c < valid_cols as OutT
  /// (bf16, f16 or f32). C is row-major with leading dimension ldc and points at the
  /// tile's (row 0, col 0); r, c are tile-local. `op` is any callable
  /// float(int row, int col, float v) — e.g. EpilogueOp below (bias, activation, row
  /// scale) or a lambda; it is called only for valid (r, c), so it may read bias[c] /
  /// scale[r] unguarded. If row_index != nullptr, tile row r goes to C row row_index[r]
  /// (scatter, e.g. back to token order); it is read only for valid rows.
  ///
  /// Two phases through smem: (1) each thread writes its f32 fragments to a staging tile
  /// (f32 rows padded by 8 floats, so the 8 lane groups of a warp hit distinct banks);
  /// (2) each thread takes 16 output bytes of one row (8 bf16/f16 or 4 f32 values), applies
  /// `op`, converts, and does one 16-byte global store (8 consecutive threads = 128
  /// contiguous bytes). Chunks straddling valid_cols, or a C/ldc that is not 16-byte
  /// aligned, fall back to element stores. Applying `op` in phase 2, when the accumulators
  /// are dead, keeps the register peak low even for erff-based GELU on the 128x256 tile.
  template <typename OutT, class Op>
  static __device__ __forceinline__ void store(const Accum& acc, OutT* C, long long ldc, int valid_rows,
                                               int valid_cols, char* smem, const int* row_index, Op&& op) {
    constexpr int OB = (int)sizeof(OutT);
    constexpr int SROW = (BN + 8) * 4;  // f32 staging row stride in bytes
    constexpr int EPC = 16 / OB;        // output elements per 16-byte chunk
    constexpr int CPRO = BN / EPC;      // chunks per output row
    constexpr int TOTAL = BM * CPRO;
    static_assert(kStagingBytes <= kSmemBytes, "staging must fit in kSmemBytes");
    static_assert(TOTAL % kThreads == 0, "output chunk count must be a multiple of the thread count");
    valid_rows = valid_rows < BM ? valid_rows : BM;
    valid_cols = valid_cols < BN ? valid_cols : BN;

    sync();  // smem may still be in use by other warps (caller's own use)
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int ni = 0; ni < NI; ++ni)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int r = frag_row(mi, 2 * h), c = frag_col(ni, 0);
          *reinterpret_cast<float2*>(smem + r * SROW + c * 4) =
              make_float2(acc.v[mi][ni][2 * h], acc.v[mi][ni][2 * h + 1]);
        }
    sync();

    const bool vec_ok = ((ldc * OB) & 15) == 0 && (reinterpret_cast<unsigned long long>(C) & 15) == 0;
#pragma unroll 2
    for (int i = 0; i < TOTAL / kThreads; ++i) {
      const int idx = tid() + i * kThreads;
      const int r = idx / CPRO, ch = idx % CPRO;
      const int c0 = ch * EPC;
      if (r < valid_rows && c0 < valid_cols) {
        const float* src = reinterpret_cast<const float*>(smem + r * SROW) + c0;
        float f[EPC];
#pragma unroll
        for (int j = 0; j < EPC; j += 4) {
          const float4 q = *reinterpret_cast<const float4*>(src + j);
          f[j] = q.x, f[j + 1] = q.y, f[j + 2] = q.z, f[j + 3] = q.w;
        }
        const long long gr = row_index ? (long long)row_index[r] : (long long)r;
        OutT* dst = C + gr * ldc + c0;
        if (vec_ok && c0 + EPC <= valid_cols) {
          union {
            uint4 u;
            OutT e[EPC];
          } o;  // 16-byte aligned pack of the converted outputs
#pragma unroll
          for (int j = 0; j < EPC; ++j) o.e[j] = from_f32<OutT>(op(r, c0 + j, f[j]));
          *reinterpret_cast<uint4*>(dst) = o.u;
        } else {
#pragma unroll
          for (int j = 0; j < EPC; ++j)
            if (c0 + j < valid_cols) dst[j] = from_f32<OutT>(op(r, c0 + j, f[j]));
        }
      }
    }
    sync();  // staging smem is free again (re-entrancy)
  }

  /// Plain store: C[r][c] = acc[r][c].
  template <typename OutT>
  static __device__ __forceinline__ void store(const Accum& acc, OutT* C, long long ldc, int valid_rows,
                                               int valid_cols, char* smem, const int* row_index = nullptr) {
    store(acc, C, ldc, valid_rows, valid_cols, smem, row_index, [](int, int, float v) { return v; });
  }
};

// ═════════════════════════════════════════════════════════════════════════════════════
// Canned element-wise epilogue for TileGemm::store(): v -> act(v + bias[col]) * scale[row]
// ═════════════════════════════════════════════════════════════════════════════════════
/// bias: per-column (tile col 0 based), may be nullptr; row_scale: per-row f32 (tile row 0
/// based), may be nullptr. Order: bias, then activation, then row scale.
template <Act ACT, typename BiasT = float>
struct EpilogueOp {
  const BiasT* bias;
  const float* row_scale;
  __device__ __forceinline__ float operator()(int r, int c, float v) const {
    if (bias) v += to_f32(bias[c]);
    v = activate<ACT>(v);
    if (row_scale) v *= row_scale[r];
    return v;
  }
};

// ═════════════════════════════════════════════════════════════════════════════════════
// Shipped configurations (256 threads = 8 warps each; use __launch_bounds__(256, 1))
// BK is fixed per mode so that a smem row is 128 bytes: 64 (bf16/f16), 32 (tf32/f32).
// Every config of a given shape has the same smem size in every mode.
// ═════════════════════════════════════════════════════════════════════════════════════

/// 128 x 256, warp tile 64 x 64, 4 stages (192 KiB smem): large-M GEMMs, best throughput.
template <Mode M> using TileLarge = TileGemm<M, 128, 256, ModeTraits<M>::kBK, 4, 2, 4, 1>;
/// 128 x 128, warp tile 64 x 32, 4 stages (128 KiB).
template <Mode M> using TileMedium = TileGemm<M, 128, 128, ModeTraits<M>::kBK, 4, 2, 4, 1>;
/// 64 x 128, warp tile 32 x 32, 4 stages (96 KiB): small batches / few rows per expert.
template <Mode M> using TileSmall = TileGemm<M, 64, 128, ModeTraits<M>::kBK, 4, 2, 4, 1>;
/// 64 x 64, warp tile 32 x 16, 4 stages (64 KiB): router GEMM (N = #experts), tiny N.
template <Mode M> using TileTiny = TileGemm<M, 64, 64, ModeTraits<M>::kBK, 4, 2, 4, 1>;
/// Dual-B (SwiGLU gate+up) 128 x 128 per B, warp tile 64 x 32 x 2, 4 stages (192 KiB).
template <Mode M> using TileDual = TileGemm<M, 128, 128, ModeTraits<M>::kBK, 4, 2, 4, 2>;
/// Dual-B 64 x 128 per B, warp tile 32 x 32 x 2, 4 stages (160 KiB).
template <Mode M> using TileDualSmall = TileGemm<M, 64, 128, ModeTraits<M>::kBK, 4, 2, 4, 2>;

}  // namespace tile
}  // namespace flashdmoe

// ═════════════════════════════════════════════════════════════════════════════════════
// NVRTC compile check: `scripts/nvrtc_check.py flashdmoe-cuda/kernels/tile_gemm.cuh
// -DFLASHDMOE_TILE_GEMM_SELFTEST` instantiates every shipped config in every mode inside a
// persistent-style kernel at __launch_bounds__(256, 1) with a full epilogue, so ptxas
// reports registers / spills / stack per variant. Not compiled otherwise.
// ═════════════════════════════════════════════════════════════════════════════════════
#ifdef FLASHDMOE_TILE_GEMM_SELFTEST
namespace flashdmoe {
namespace tile {
namespace selftest {

struct Args {
  const void* A;
  const void* B0;
  const void* B1;
  const float* bias;
  const float* scale;
  void* C;
  int M, N, K;
};

// Plain GEMM + bias + GELU + row scale + store as Elem (the MoE GEMM0/GEMM1 shape).
template <class T>
__device__ __forceinline__ void plain(const Args& p) {
  extern __shared__ __align__(128) char smem[];
  using E = typename T::Elem;
  const int tm = (p.M + T::BM - 1) / T::BM, tn = (p.N + T::BN - 1) / T::BN;
  for (int t = blockIdx.x; t < tm * tn; t += gridDim.x) {
    const int m0 = (t / tn) * T::BM, n0 = (t % tn) * T::BN;
    typename T::Accum acc;
    T::gemm(acc, (const E*)p.A + (long long)m0 * p.K, p.K, p.M - m0, (const E*)p.B0 + (long long)n0 * p.K, p.K,
            p.N - n0, p.K, smem);
    T::store(acc, (E*)p.C + (long long)m0 * p.N + n0, p.N, p.M - m0, p.N - n0, smem, nullptr,
             EpilogueOp<Act::Gelu, float>{p.bias + n0, p.scale + m0});
  }
}

// Same with the register-level helpers (bias, GELU, row scale on the fragments).
template <class T>
__device__ __forceinline__ void plain_reg(const Args& p) {
  extern __shared__ __align__(128) char smem[];
  using E = typename T::Elem;
  const int tm = (p.M + T::BM - 1) / T::BM, tn = (p.N + T::BN - 1) / T::BN;
  for (int t = blockIdx.x; t < tm * tn; t += gridDim.x) {
    const int m0 = (t / tn) * T::BM, n0 = (t % tn) * T::BN;
    typename T::Accum acc;
    T::gemm(acc, (const E*)p.A + (long long)m0 * p.K, p.K, p.M - m0, (const E*)p.B0 + (long long)n0 * p.K, p.K,
            p.N - n0, p.K, smem);
    T::add_bias(acc, p.bias + n0, p.N - n0);
    T::gelu(acc);
    T::scale_rows(acc, p.scale + m0, p.M - m0);
    T::store(acc, (E*)p.C + (long long)m0 * p.N + n0, p.N, p.M - m0, p.N - n0, smem);
  }
}

// Dual-B + SwiGLU + store as Elem.
template <class T>
__device__ __forceinline__ void dual(const Args& p) {
  extern __shared__ __align__(128) char smem[];
  using E = typename T::Elem;
  const int tm = (p.M + T::BM - 1) / T::BM, tn = (p.N + T::BN - 1) / T::BN;
  for (int t = blockIdx.x; t < tm * tn; t += gridDim.x) {
    const int m0 = (t / tn) * T::BM, n0 = (t % tn) * T::BN;
    typename T::Accum g, u;
    T::gemm_dual(g, u, (const E*)p.A + (long long)m0 * p.K, p.K, p.M - m0, (const E*)p.B0 + (long long)n0 * p.K,
                 (const E*)p.B1 + (long long)n0 * p.K, p.K, p.N - n0, p.K, smem);
    T::swiglu(g, u);
    T::store(g, (E*)p.C + (long long)m0 * p.N + n0, p.N, p.M - m0, p.N - n0, smem);
  }
}

// Router: logits stored as f32.
template <class T>
__device__ __forceinline__ void router(const Args& p) {
  extern __shared__ __align__(128) char smem[];
  using E = typename T::Elem;
  const int tm = (p.M + T::BM - 1) / T::BM, tn = (p.N + T::BN - 1) / T::BN;
  for (int t = blockIdx.x; t < tm * tn; t += gridDim.x) {
    const int m0 = (t / tn) * T::BM, n0 = (t % tn) * T::BN;
    typename T::Accum acc;
    T::gemm(acc, (const E*)p.A + (long long)m0 * p.K, p.K, p.M - m0, (const E*)p.B0 + (long long)n0 * p.K, p.K,
            p.N - n0, p.K, smem);
    T::store(acc, (float*)p.C + (long long)m0 * p.N + n0, p.N, p.M - m0, p.N - n0, smem);
  }
}

#define FLASHDMOE_SELFTEST_KERNEL(name, fn, cfg)                                        \
  extern "C" __global__ void __launch_bounds__(256, 1) name(Args p) { fn<cfg>(p); }

#define FLASHDMOE_SELFTEST_MODE(tag, mode)                                              \
  FLASHDMOE_SELFTEST_KERNEL(large_##tag, plain, TileLarge<mode>)                        \
  FLASHDMOE_SELFTEST_KERNEL(large_reg_##tag, plain_reg, TileLarge<mode>)                \
  FLASHDMOE_SELFTEST_KERNEL(medium_##tag, plain, TileMedium<mode>)                      \
  FLASHDMOE_SELFTEST_KERNEL(medium_reg_##tag, plain_reg, TileMedium<mode>)              \
  FLASHDMOE_SELFTEST_KERNEL(small_##tag, plain, TileSmall<mode>)                        \
  FLASHDMOE_SELFTEST_KERNEL(small_reg_##tag, plain_reg, TileSmall<mode>)                \
  FLASHDMOE_SELFTEST_KERNEL(tiny_##tag, plain, TileTiny<mode>)                          \
  FLASHDMOE_SELFTEST_KERNEL(router_##tag, router, TileTiny<mode>)                       \
  FLASHDMOE_SELFTEST_KERNEL(dual_##tag, dual, TileDual<mode>)                           \
  FLASHDMOE_SELFTEST_KERNEL(dualsmall_##tag, dual, TileDualSmall<mode>)

FLASHDMOE_SELFTEST_MODE(bf16, Mode::BF16)
FLASHDMOE_SELFTEST_MODE(f16, Mode::F16)
FLASHDMOE_SELFTEST_MODE(tf32, Mode::TF32)
FLASHDMOE_SELFTEST_MODE(f32exact, Mode::F32Exact)

#undef FLASHDMOE_SELFTEST_MODE
#undef FLASHDMOE_SELFTEST_KERNEL

}  // namespace selftest
}  // namespace tile
}  // namespace flashdmoe
#endif  // FLASHDMOE_TILE_GEMM_SELFTEST
