// tile_gemm_test.cu — standalone correctness + speed test for kernels/tile_gemm.cuh.
//
// Build and run (on a GPU machine; scripts/gpu-tile-gemm.sh does exactly this):
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90,code=sm_90 -Xptxas -v \
//        -I flashdmoe-cuda/kernels flashdmoe-cuda/kernels/nvcc_tests/tile_gemm_test.cu -o tile_gemm_test
//   ./tile_gemm_test            # all correctness checks, then timings, then a summary table
//   ./tile_gemm_test --no-perf  # correctness only
//
// Every full GEMM is built the way the persistent FlashDMoE kernel uses the tile library:
// grid = #SMs blocks of 256 threads, each block strides over output tiles (blockIdx.x,
// += gridDim.x) and calls gemm()/gemm_dual() + an epilogue + store() on the same smem.
// Correctness: random data (never zeros), double-precision host reference, relative
// Frobenius error ||out - ref|| / ||ref|| against a per-mode threshold; the output buffer is
// poisoned (0xFF bytes = NaN in every element type) first, and the test checks that every
// valid element was written and every masked element (padding columns up to ldc, rows past
// M) still holds the poison. A's and B's K-padding (lda, ldb > K) holds NaN, so reading
// past K would show up as NaN outputs.
// Exit status: 0 if every check passed, 1 otherwise.

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "tile_gemm.cuh"

using namespace flashdmoe::tile;

#define CK(x)                                                                                    \
  do {                                                                                           \
    cudaError_t e_ = (x);                                                                        \
    if (e_ != cudaSuccess) {                                                                     \
      std::fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorName(e_), __FILE__, __LINE__, \
                   cudaGetErrorString(e_));                                                      \
      std::exit(2);                                                                              \
    }                                                                                            \
  } while (0)

// ───────────────────────────────────────────────────────────────────────────────────────
// Device side
// ───────────────────────────────────────────────────────────────────────────────────────

enum Epi : int {
  EPI_NONE = 0,        // store(acc)
  EPI_BIAS_RELU,       // store op: relu(acc + bias[c])
  EPI_BIAS_GELU_SCALE, // store op: gelu(acc + bias[c]) * scale[r]     (EpilogueOp, fused)
  EPI_SCALE,           // store op: acc * scale[r]
  EPI_REG,             // register helpers: add_bias, gelu, scale_rows, then plain store
  EPI_ROWMAP,          // plain store scattered through row_index
  EPI_SWIGLU,          // gemm_dual + swiglu (register helper) + plain store
};

struct Params {
  const void* A;
  const void* B0;
  const void* B1;
  const float* bias;
  const float* scale;
  const int* row_index;
  void* C;
  long long lda, ldb, ldc;
  int M, N, K;
  int group_m;  // tile raster: group_m M-tiles walk all N-tiles together (L2 reuse)
};

__device__ __forceinline__ void raster(int t, int tm, int tn, int group_m, int& mt, int& nt) {
  const int per_group = group_m * tn;
  const int g = t / per_group, first_m = g * group_m;
  const int gsz = min(tm - first_m, group_m);
  const int r = t % per_group;
  mt = first_m + r % gsz;
  nt = r / gsz;
}

template <class T, int EPI, typename OutT>
__global__ void __launch_bounds__(256, 1) tile_kernel(Params p) {
  extern __shared__ __align__(128) char smem[];
  using E = typename T::Elem;
  const int tm = (p.M + T::BM - 1) / T::BM, tn = (p.N + T::BN - 1) / T::BN;
  for (int t = blockIdx.x; t < tm * tn; t += gridDim.x) {
    int mt, nt;
    raster(t, tm, tn, p.group_m, mt, nt);
    const int m0 = mt * T::BM, n0 = nt * T::BN;
    const int vr = p.M - m0, vc = p.N - n0;
    const E* A = static_cast<const E*>(p.A) + (long long)m0 * p.lda;
    const E* B0 = static_cast<const E*>(p.B0) + (long long)n0 * p.ldb;
    OutT* C = static_cast<OutT*>(p.C) + (EPI == EPI_ROWMAP ? 0 : (long long)m0 * p.ldc) + n0;
    const float* bias = p.bias + n0;
    const float* scale = p.scale + m0;

    typename T::Accum acc;
    if constexpr (EPI == EPI_SWIGLU) {
      typename T::Accum up;
      const E* B1 = static_cast<const E*>(p.B1) + (long long)n0 * p.ldb;
      T::gemm_dual(acc, up, A, p.lda, vr, B0, B1, p.ldb, vc, p.K, smem);
      T::swiglu(acc, up);
      T::store(acc, C, p.ldc, vr, vc, smem);
    } else {
      T::gemm(acc, A, p.lda, vr, B0, p.ldb, vc, p.K, smem);
      if constexpr (EPI == EPI_NONE) {
        T::store(acc, C, p.ldc, vr, vc, smem);
      } else if constexpr (EPI == EPI_BIAS_RELU) {
        T::store(acc, C, p.ldc, vr, vc, smem, nullptr, EpilogueOp<Act::Relu, float>{bias, nullptr});
      } else if constexpr (EPI == EPI_BIAS_GELU_SCALE) {
        T::store(acc, C, p.ldc, vr, vc, smem, nullptr, EpilogueOp<Act::Gelu, float>{bias, scale});
      } else if constexpr (EPI == EPI_SCALE) {
        T::store(acc, C, p.ldc, vr, vc, smem, nullptr, EpilogueOp<Act::None, float>{nullptr, scale});
      } else if constexpr (EPI == EPI_REG) {
        T::add_bias(acc, bias, vc);
        T::gelu(acc);
        T::scale_rows(acc, scale, vr);
        T::store(acc, C, p.ldc, vr, vc, smem);
      } else if constexpr (EPI == EPI_ROWMAP) {
        T::store(acc, C, p.ldc, vr, vc, smem, p.row_index + m0);
      }
    }
  }
}

// Deterministic hash -> uniform value in [lo, hi); columns in [cols, ld) get `pad`.
__device__ __host__ inline float hash_uniform(unsigned long long i, unsigned seed, float lo, float hi) {
  unsigned long long x = i * 0x9E3779B97F4A7C15ull + seed * 0xD1B54A32D192ED03ull + 0x632BE59BD9B4E019ull;
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 32;
  const float u = (float)(x & 0xFFFFFF) / 16777216.0f;
  return lo + (hi - lo) * u;
}

template <typename E>
__global__ void init_kernel(E* p, long long rows, long long cols, long long ld, unsigned seed, float lo, float hi,
                            float pad) {
  const long long n = rows * ld;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const long long c = i % ld;
    p[i] = from_f32<E>(c < cols ? hash_uniform((unsigned long long)i, seed, lo, hi) : pad);
  }
}

// ───────────────────────────────────────────────────────────────────────────────────────
// Host helpers
// ───────────────────────────────────────────────────────────────────────────────────────

template <typename E> float host_to_f32(E x);
template <> float host_to_f32<float>(float x) { return x; }
template <> float host_to_f32<__nv_bfloat16>(__nv_bfloat16 x) {
  uint16_t b;
  std::memcpy(&b, &x, 2);
  uint32_t u = (uint32_t)b << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
template <> float host_to_f32<__half>(__half x) { return __half2float(x); }

template <typename E> const char* type_name();
template <> const char* type_name<float>() { return "f32"; }
template <> const char* type_name<__nv_bfloat16>() { return "bf16"; }
template <> const char* type_name<__half>() { return "f16"; }

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::BF16: return "bf16";
    case Mode::F16: return "f16";
    case Mode::TF32: return "tf32";
    case Mode::F32Exact: return "f32-exact";
  }
  return "?";
}
double mode_tol(Mode m) {
  switch (m) {
    case Mode::BF16: return 1e-2;
    case Mode::F16: return 2e-3;
    case Mode::TF32: return 1e-3;
    case Mode::F32Exact: return 1e-5;
  }
  return 0;
}
const char* epi_name(int e) {
  switch (e) {
    case EPI_NONE: return "plain";
    case EPI_BIAS_RELU: return "bias+relu";
    case EPI_BIAS_GELU_SCALE: return "bias+gelu+scale(op)";
    case EPI_SCALE: return "rowscale";
    case EPI_REG: return "bias+gelu+scale(reg)";
    case EPI_ROWMAP: return "rowmap-scatter";
    case EPI_SWIGLU: return "dual swiglu";
  }
  return "?";
}

template <typename E>
std::vector<float> to_host_f32(const E* d, size_t n) {
  std::vector<E> h(n);
  CK(cudaMemcpy(h.data(), d, n * sizeof(E), cudaMemcpyDeviceToHost));
  std::vector<float> f(n);
  for (size_t i = 0; i < n; ++i) f[i] = host_to_f32<E>(h[i]);
  return f;
}

template <class F>
void parallel_for(int n, F f) {
  const int nt = std::max(1u, std::min(64u, std::thread::hardware_concurrency()));
  std::vector<std::thread> th;
  for (int t = 0; t < nt; ++t)
    th.emplace_back([&, t] {
      for (int i = t; i < n; i += nt) f(i);
    });
  for (auto& x : th) x.join();
}

// Full reference: R[m][n] = sum_k A[m][k] * B[n][k] in double.
std::vector<double> ref_gemm(const std::vector<float>& A, long long lda, const std::vector<float>& B, long long ldb,
                             int M, int N, int K) {
  std::vector<double> R((size_t)M * N);
  parallel_for(M, [&](int m) {
    for (int n = 0; n < N; ++n) {
      double s = 0;
      const float* a = &A[(size_t)m * lda];
      const float* b = &B[(size_t)n * ldb];
      for (int k = 0; k < K; ++k) s += (double)a[k] * (double)b[k];
      R[(size_t)m * N + n] = s;
    }
  });
  return R;
}

double gelu_d(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
double silu_d(double x) { return x / (1.0 + std::exp(-x)); }

struct Dev {
  int sms = 0;
};

template <class T, int EPI, typename OutT>
void launch(const Params& p, int sms, cudaStream_t s = 0) {
  auto k = tile_kernel<T, EPI, OutT>;
  static bool configured = false;
  if (!configured) {
    CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, T::kSmemBytes));
    configured = true;
  }
  const int tiles = ((p.M + T::BM - 1) / T::BM) * ((p.N + T::BN - 1) / T::BN);
  const int grid = std::max(1, std::min(sms, tiles));
  k<<<grid, T::kThreads, T::kSmemBytes, s>>>(p);
  CK(cudaGetLastError());
}

template <class T, int EPI, typename OutT>
std::string kernel_regs() {
  cudaFuncAttributes a;
  CK(cudaFuncGetAttributes(&a, tile_kernel<T, EPI, OutT>));
  char buf[96];
  std::snprintf(buf, sizeof buf, "%d regs, %zu B local, %d B smem", a.numRegs, (size_t)a.localSizeBytes,
                T::kSmemBytes);
  return buf;
}

// ───────────────────────────────────────────────────────────────────────────────────────
// Correctness
// ───────────────────────────────────────────────────────────────────────────────────────

struct CheckRow {
  std::string name;
  double rel;
  double tol;
  long long unwritten, clobbered;
  bool ok;
};
std::vector<CheckRow> g_checks;

// One correctness case: config T, epilogue EPI, output type OutT, shape M x N x K.
template <class T, int EPI, typename OutT = typename T::Elem>
void check_case(const char* cfg_name, int M, int N, int K, int sms, long long ldc_extra = 24) {
  using E = typename T::Elem;
  const long long lda = K + 8, ldb = K + 8;  // K-padding holds NaN (must never be read)
  const long long ldc = N + ldc_extra;
  const int pad_rows = T::BM;                // poisoned rows below M (must stay untouched)
  const float nan = std::nanf("");

  E *dA, *dB0, *dB1 = nullptr;
  float *dbias, *dscale;
  int* drow = nullptr;
  OutT* dC;
  CK(cudaMalloc(&dA, (size_t)M * lda * sizeof(E)));
  CK(cudaMalloc(&dB0, (size_t)N * ldb * sizeof(E)));
  CK(cudaMalloc(&dB1, (size_t)N * ldb * sizeof(E)));
  CK(cudaMalloc(&dbias, (size_t)N * sizeof(float)));
  CK(cudaMalloc(&dscale, (size_t)M * sizeof(float)));
  CK(cudaMalloc(&drow, (size_t)M * sizeof(int)));
  CK(cudaMalloc(&dC, (size_t)(M + pad_rows) * ldc * sizeof(OutT)));
  init_kernel<E><<<256, 256>>>(dA, M, K, lda, 11u, -1.f, 1.f, nan);
  init_kernel<E><<<256, 256>>>(dB0, N, K, ldb, 22u, -1.f, 1.f, nan);
  init_kernel<E><<<256, 256>>>(dB1, N, K, ldb, 33u, -1.f, 1.f, nan);
  init_kernel<float><<<64, 256>>>(dbias, 1, N, N, 44u, -1.f, 1.f, 0.f);
  init_kernel<float><<<64, 256>>>(dscale, 1, M, M, 55u, 0.1f, 1.f, 0.f);
  std::vector<int> rowmap(M);
  for (int i = 0; i < M; ++i) rowmap[i] = (int)(((long long)i * 7919 + 13) % M);  // 7919 prime, M not a multiple
  {
    std::vector<char> seen(M, 0);
    for (int r : rowmap) seen[r] = 1;
    for (int i = 0; i < M; ++i)
      if (!seen[i]) { std::fprintf(stderr, "rowmap is not a permutation\n"); std::exit(2); }
  }
  CK(cudaMemcpy(drow, rowmap.data(), M * sizeof(int), cudaMemcpyHostToDevice));
  CK(cudaMemset(dC, 0xFF, (size_t)(M + pad_rows) * ldc * sizeof(OutT)));
  CK(cudaDeviceSynchronize());

  Params p{dA, dB0, dB1, dbias, dscale, drow, dC, lda, ldb, ldc, M, N, K, 8};
  launch<T, EPI, OutT>(p, sms);
  CK(cudaDeviceSynchronize());

  const auto A = to_host_f32(dA, (size_t)M * lda);
  const auto B0 = to_host_f32(dB0, (size_t)N * ldb);
  const auto bias = to_host_f32(dbias, (size_t)N);
  const auto scale = to_host_f32(dscale, (size_t)M);
  std::vector<OutT> Ch((size_t)(M + pad_rows) * ldc);
  CK(cudaMemcpy(Ch.data(), dC, Ch.size() * sizeof(OutT), cudaMemcpyDeviceToHost));

  const auto R0 = ref_gemm(A, lda, B0, ldb, M, N, K);
  std::vector<double> R1;
  if (EPI == EPI_SWIGLU) R1 = ref_gemm(A, lda, to_host_f32(dB1, (size_t)N * ldb), ldb, M, N, K);

  double num = 0, den = 0;
  long long unwritten = 0, clobbered = 0;
  std::vector<char> is_valid((size_t)(M + pad_rows) * ldc, 0);
  for (int m = 0; m < M; ++m) {
    const int orow = EPI == EPI_ROWMAP ? rowmap[m] : m;
    for (int n = 0; n < N; ++n) {
      const double x = R0[(size_t)m * N + n];
      double ref;
      switch (EPI) {
        case EPI_BIAS_RELU: ref = std::max(0.0, x + bias[n]); break;
        case EPI_BIAS_GELU_SCALE:
        case EPI_REG: ref = gelu_d(x + bias[n]) * scale[m]; break;
        case EPI_SCALE: ref = x * scale[m]; break;
        case EPI_SWIGLU: ref = silu_d(x) * R1[(size_t)m * N + n]; break;
        default: ref = x;
      }
      const size_t idx = (size_t)orow * ldc + n;
      is_valid[idx] = 1;
      const double out = host_to_f32<OutT>(Ch[idx]);
      if (std::isnan(out)) {
        ++unwritten;
        continue;
      }
      num += (out - ref) * (out - ref);
      den += ref * ref;
    }
  }
  for (size_t i = 0; i < is_valid.size(); ++i) {
    if (is_valid[i]) continue;
    const unsigned char* b = reinterpret_cast<const unsigned char*>(&Ch[i]);
    for (size_t j = 0; j < sizeof(OutT); ++j)
      if (b[j] != 0xFF) {
        ++clobbered;
        break;
      }
  }
  const double rel = std::sqrt(num / std::max(den, 1e-300));
  const double tol = mode_tol(T::kMode);
  const bool ok = unwritten == 0 && clobbered == 0 && rel <= tol && den > 0;
  char name[256];
  std::snprintf(name, sizeof name, "%-9s %-10s %-21s out=%-4s M=%d N=%d K=%d ldc=%lld", mode_name(T::kMode),
                cfg_name, epi_name(EPI), type_name<OutT>(), M, N, K, ldc);
  std::printf("[%s] %s  rel=%.3e (tol %.0e)  unwritten=%lld clobbered=%lld  [%s]\n", ok ? " OK " : "FAIL", name,
              rel, tol, unwritten, clobbered, kernel_regs<T, EPI, OutT>().c_str());
  std::fflush(stdout);
  g_checks.push_back({name, rel, tol, unwritten, clobbered, ok});
  cudaFree(dA), cudaFree(dB0), cudaFree(dB1), cudaFree(dbias), cudaFree(dscale), cudaFree(drow), cudaFree(dC);
}

template <Mode MODE>
void check_mode(int sms) {
  using E = typename ModeTraits<MODE>::Elem;
  // Main shape: M, N not multiples of any tile (masked rows and cols), K = 8 k-tiles.
  const int M = 777, N = 300, K = 512;
  check_case<TileMedium<MODE>, EPI_NONE>("128x128", M, N, K, sms);
  check_case<TileMedium<MODE>, EPI_BIAS_RELU>("128x128", M, N, K, sms);
  check_case<TileMedium<MODE>, EPI_BIAS_GELU_SCALE>("128x128", M, N, K, sms);
  check_case<TileMedium<MODE>, EPI_SCALE>("128x128", M, N, K, sms);
  check_case<TileMedium<MODE>, EPI_REG>("128x128", M, N, K, sms);
  check_case<TileMedium<MODE>, EPI_ROWMAP>("128x128", M, N, K, sms);
  check_case<TileLarge<MODE>, EPI_NONE>("128x256", M, N, K, sms);
  check_case<TileLarge<MODE>, EPI_BIAS_GELU_SCALE>("128x256", M, N, K, sms);
  check_case<TileLarge<MODE>, EPI_REG>("128x256", M, N, K, sms);
  check_case<TileSmall<MODE>, EPI_NONE>("64x128", M, N, K, sms);
  check_case<TileSmall<MODE>, EPI_BIAS_GELU_SCALE>("64x128", M, N, K, sms);
  // Few rows (small batch): a single, mostly masked M tile.
  check_case<TileSmall<MODE>, EPI_NONE>("64x128", 37, N, K, sms);
  // Router: N = number of experts, f32 logits; ldc 64 (16-byte rows) and 61 (scalar path).
  check_case<TileTiny<MODE>, EPI_NONE, float>("64x64", 517, 60, K, sms, 4);
  check_case<TileTiny<MODE>, EPI_NONE, float>("64x64", 517, 60, K, sms, 1);
  // Router with 128 experts on the 64x128 tile.
  check_case<TileSmall<MODE>, EPI_NONE, float>("64x128", 517, 128, K, sms, 0);
  // SwiGLU dual-B.
  check_case<TileDual<MODE>, EPI_SWIGLU>("dual128", 333, 200, 256, sms);
  check_case<TileDualSmall<MODE>, EPI_SWIGLU>("dual64", 333, 200, 256, sms);
  (void)sizeof(E);
}

// ───────────────────────────────────────────────────────────────────────────────────────
// Performance
// ───────────────────────────────────────────────────────────────────────────────────────

struct PerfRow {
  std::string name;
  double med_ms, min_ms, max_ms, tflops, rel;
  bool ok;
  std::string regs;
};
std::vector<PerfRow> g_perf;

template <class T, int EPI, typename OutT = typename T::Elem>
void perf_case(const char* cfg_name, int M, int N, int K, int sms, int iters = 30, int group_m = 8) {
  using E = typename T::Elem;
  const long long lda = K, ldb = K, ldc = N;
  E *dA, *dB0, *dB1 = nullptr;
  float *dbias, *dscale;
  OutT* dC;
  CK(cudaMalloc(&dA, (size_t)M * lda * sizeof(E)));
  CK(cudaMalloc(&dB0, (size_t)N * ldb * sizeof(E)));
  if (EPI == EPI_SWIGLU) CK(cudaMalloc(&dB1, (size_t)N * ldb * sizeof(E)));
  CK(cudaMalloc(&dbias, (size_t)N * sizeof(float)));
  CK(cudaMalloc(&dscale, (size_t)M * sizeof(float)));
  CK(cudaMalloc(&dC, (size_t)M * ldc * sizeof(OutT)));
  init_kernel<E><<<1024, 256>>>(dA, M, K, lda, 101u, -1.f, 1.f, 0.f);
  init_kernel<E><<<1024, 256>>>(dB0, N, K, ldb, 202u, -1.f, 1.f, 0.f);
  if (dB1) init_kernel<E><<<1024, 256>>>(dB1, N, K, ldb, 303u, -1.f, 1.f, 0.f);
  init_kernel<float><<<64, 256>>>(dbias, 1, N, N, 404u, -1.f, 1.f, 0.f);
  init_kernel<float><<<64, 256>>>(dscale, 1, M, M, 505u, 0.1f, 1.f, 0.f);
  CK(cudaMemset(dC, 0xFF, (size_t)M * ldc * sizeof(OutT)));
  CK(cudaDeviceSynchronize());

  Params p{dA, dB0, dB1, dbias, dscale, nullptr, dC, lda, ldb, ldc, M, N, K, group_m};
  for (int i = 0; i < 5; ++i) launch<T, EPI, OutT>(p, sms);  // warm-up
  CK(cudaDeviceSynchronize());
  std::vector<cudaEvent_t> ev(2 * iters);
  for (auto& e : ev) CK(cudaEventCreate(&e));
  for (int i = 0; i < iters; ++i) {
    CK(cudaEventRecord(ev[2 * i]));
    launch<T, EPI, OutT>(p, sms);
    CK(cudaEventRecord(ev[2 * i + 1]));
  }
  CK(cudaDeviceSynchronize());
  std::vector<double> ms(iters);
  for (int i = 0; i < iters; ++i) {
    float t;
    CK(cudaEventElapsedTime(&t, ev[2 * i], ev[2 * i + 1]));
    ms[i] = t;
  }
  for (auto& e : ev) cudaEventDestroy(e);
  std::sort(ms.begin(), ms.end());
  const double med = ms[iters / 2];
  const double flops = (EPI == EPI_SWIGLU ? 4.0 : 2.0) * M * N * (double)K;

  // Sampled verification (512 random elements) in double on the host.
  const auto A = to_host_f32(dA, (size_t)M * lda);
  const auto B0 = to_host_f32(dB0, (size_t)N * ldb);
  std::vector<float> B1;
  if (dB1) B1 = to_host_f32(dB1, (size_t)N * ldb);
  const auto bias = to_host_f32(dbias, (size_t)N);
  const auto scale = to_host_f32(dscale, (size_t)M);
  std::vector<OutT> Ch((size_t)M * ldc);
  CK(cudaMemcpy(Ch.data(), dC, Ch.size() * sizeof(OutT), cudaMemcpyDeviceToHost));
  double num = 0, den = 0;
  bool nan_seen = false;
  for (int s = 0; s < 512; ++s) {
    const int m = (int)(hash_uniform(s, 7u, 0.f, 1.f) * M) % M;
    const int n = (int)(hash_uniform(s, 8u, 0.f, 1.f) * N) % N;
    double x = 0, y = 0;
    for (int k = 0; k < K; ++k) x += (double)A[(size_t)m * lda + k] * B0[(size_t)n * ldb + k];
    if (dB1)
      for (int k = 0; k < K; ++k) y += (double)A[(size_t)m * lda + k] * B1[(size_t)n * ldb + k];
    double ref = x;
    if (EPI == EPI_SWIGLU) ref = silu_d(x) * y;
    if (EPI == EPI_BIAS_GELU_SCALE) ref = gelu_d(x + bias[n]) * scale[m];
    if (EPI == EPI_BIAS_RELU) ref = std::max(0.0, x + bias[n]);
    const double out = host_to_f32<OutT>(Ch[(size_t)m * ldc + n]);
    if (std::isnan(out)) nan_seen = true;
    num += (out - ref) * (out - ref);
    den += ref * ref;
  }
  const double rel = std::sqrt(num / den);
  const bool ok = !nan_seen && rel <= mode_tol(T::kMode);

  char name[200];
  std::snprintf(name, sizeof name, "%s %s %s %dx%dx%d%s", mode_name(T::kMode), cfg_name, epi_name(EPI), M, N, K,
                group_m == 8 ? "" : " g16");
  PerfRow row{name, med, ms.front(), ms.back(), flops / (med * 1e-3) / 1e12, rel, ok, kernel_regs<T, EPI, OutT>()};
  std::printf("[perf] %-52s median %.3f ms (min %.3f, max %.3f) %7.1f TFLOP/s  sample rel=%.2e %s  [%s]\n",
              name, med, row.min_ms, row.max_ms, row.tflops, rel, ok ? "ok" : "FAIL", row.regs.c_str());
  std::fflush(stdout);
  g_perf.push_back(row);
  cudaFree(dA), cudaFree(dB0), cudaFree(dB1), cudaFree(dbias), cudaFree(dscale), cudaFree(dC);
}

// Extra configs only for the timing comparison.
using LargeNoPipe = TileGemm<Mode::BF16, 128, 256, 64, 4, 2, 4, 1, false>;  // simple k-step loop
using Large3 = TileGemm<Mode::BF16, 128, 256, 64, 3, 2, 4, 1>;               // 3 stages (144 KiB)
using Tall = TileGemm<Mode::BF16, 256, 128, 64, 4, 4, 2, 1>;                 // 256x128, warps 4x2
using MediumNoPipe = TileGemm<Mode::BF16, 128, 128, 64, 4, 2, 4, 1, false>;
using Tf32MediumPipe = TileGemm<Mode::TF32, 128, 128, 32, 4, 2, 4, 1, true>;

int main(int argc, char** argv) {
  bool perf = true, check = true;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--no-perf")) perf = false;
    if (!std::strcmp(argv[i], "--no-check")) check = false;
  }
  int dev = 0;
  CK(cudaSetDevice(dev));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, dev));
  const int sms = prop.multiProcessorCount;
  std::printf("device: %s, %d SMs, sm_%d%d, smem/block opt-in %zu B\n", prop.name, sms, prop.major, prop.minor,
              (size_t)prop.sharedMemPerBlockOptin);

  if (check) {
    check_mode<Mode::BF16>(sms);
    check_mode<Mode::F16>(sms);
    check_mode<Mode::TF32>(sms);
    check_mode<Mode::F32Exact>(sms);
  }

  if (perf) {
    const int S = 8192, T = 32768, H = 2048;
    perf_case<TileLarge<Mode::BF16>, EPI_NONE>("128x256x64/4st", S, S, S, sms);
    perf_case<LargeNoPipe, EPI_NONE>("128x256x64/4st-nopipe", S, S, S, sms);
    perf_case<Large3, EPI_NONE>("128x256x64/3st", S, S, S, sms);
    perf_case<Tall, EPI_NONE>("256x128x64/4st", S, S, S, sms);
    perf_case<TileLarge<Mode::BF16>, EPI_NONE>("128x256x64/4st", S, S, S, sms, 30, 16);
    perf_case<TileMedium<Mode::BF16>, EPI_NONE>("128x128x64/4st", S, S, S, sms);
    perf_case<MediumNoPipe, EPI_NONE>("128x128x64/4st-nopipe", S, S, S, sms);
    perf_case<TileLarge<Mode::F16>, EPI_NONE>("128x256x64/4st", S, S, S, sms);
    perf_case<TileLarge<Mode::BF16>, EPI_NONE>("128x256x64/4st", T, H, H, sms);
    perf_case<LargeNoPipe, EPI_NONE>("128x256x64/4st-nopipe", T, H, H, sms);
    perf_case<Large3, EPI_NONE>("128x256x64/3st", T, H, H, sms);
    perf_case<Tall, EPI_NONE>("256x128x64/4st", T, H, H, sms);
    perf_case<TileMedium<Mode::BF16>, EPI_NONE>("128x128x64/4st", T, H, H, sms);
    perf_case<TileLarge<Mode::BF16>, EPI_BIAS_RELU>("128x256x64/4st", T, H, H, sms);
    perf_case<TileLarge<Mode::BF16>, EPI_BIAS_GELU_SCALE>("128x256x64/4st", T, H, H, sms);
    perf_case<TileDual<Mode::BF16>, EPI_SWIGLU>("dual128x128x64/4st", T, H, H, sms);
    perf_case<TileSmall<Mode::BF16>, EPI_NONE>("64x128x64/4st", T, H, H, sms);
    perf_case<TileLarge<Mode::TF32>, EPI_NONE>("128x256x32/4st", S, S, S, sms, 20);
    perf_case<TileMedium<Mode::TF32>, EPI_NONE>("128x128x32/4st", S, S, S, sms, 20);
    perf_case<Tf32MediumPipe, EPI_NONE>("128x128x32/4st-pipe", S, S, S, sms, 20);
  }

  int fails = 0;
  for (auto& c : g_checks) fails += !c.ok;
  for (auto& r : g_perf) fails += !r.ok;
  std::printf("\n==== tile_gemm summary (%s, %d SMs) ====\n", prop.name, sms);
  std::printf("correctness: %zu checks, %d failed\n", g_checks.size(), (int)std::count_if(g_checks.begin(), g_checks.end(), [](const CheckRow& c) { return !c.ok; }));
  for (auto& c : g_checks)
    if (!c.ok) std::printf("  FAILED: %s rel=%.3e unwritten=%lld clobbered=%lld\n", c.name.c_str(), c.rel, c.unwritten, c.clobbered);
  if (!g_perf.empty()) {
    std::printf("%-54s %10s %10s %9s %9s %s\n", "perf case (median of timed runs)", "median ms", "min ms", "TFLOP/s",
                "rel", "regs");
    for (auto& r : g_perf)
      std::printf("%-54s %10.3f %10.3f %9.1f %9.1e %s%s\n", r.name.c_str(), r.med_ms, r.min_ms, r.tflops, r.rel,
                  r.regs.c_str(), r.ok ? "" : "  FAIL");
  }
  std::printf("%d passed, %d failed\n", (int)(g_checks.size() + g_perf.size()) - fails, fails);
  return fails ? 1 : 0;
}
