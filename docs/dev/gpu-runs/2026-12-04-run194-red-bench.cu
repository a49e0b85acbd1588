// run 194 (session 38): can GEMM1's epilogue return its rows by reductions into the output
// instead of stores into returned-row buffers plus a combine pass? A write-path microbench at
// T16384's shape (32768 routed rows x 2048 columns bf16, 2 rows a token, tokens in random
// order as an expert's row tiles hold them): each CTA writes a 128-row x 256-column tile whose
// values it makes in registers (no reads: the GEMM's accumulators), by
//   S:  16-byte stores into the returned-row buffer, then a combine kernel y = r0 + r1
//       (f32 sum, one rounding), the kernel's split today;
//   R:  y zeroed (cudaMemsetAsync), then red.global.add.noftz.v4.bf16x2 into y[token];
//   B:  y zeroed, then the tile staged in shared memory and each row's 512 bytes sent by
//       cp.reduce.async.bulk .add.noftz.bf16 (one thread a row);
//   W:  16-byte stores straight into y[token] (a ceiling: the same scattered pattern, no add).
// R and B must equal S bit for bit (a + b rounded once either way; 0 + a exact).
// nvcc -O3 -arch=sm_90a -o red-bench 2026-12-04-run194-red-bench.cu && ./red-bench
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <vector>
#include <algorithm>
#include <random>
#include <cuda_bf16.h>
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("CUDA %s at %d\n", cudaGetErrorString(e), __LINE__); exit(1);} } while (0)
constexpr int H = 2048, ROWS = 32768, TOK = ROWS / 2, TR = 128, TC = 256;
__device__ __forceinline__ uint32_t val(uint32_t r, uint32_t c) {
  uint32_t h = r * 0x9E3779B1u ^ (c * 0x85EBCA77u); h ^= h >> 15; h *= 0x2C1B3C6Du; h ^= h >> 12;
  __nv_bfloat162 v = __floats2bfloat162_rn(((h & 0xffff) / 65536.f - 0.5f), ((h >> 16) / 65536.f - 0.5f));
  return *reinterpret_cast<uint32_t*>(&v);
}
// 256 threads: thread t handles row (t / 2) .. of the tile, 16-byte chunks over the columns.
__global__ void k_store(uint4* ret, const int* tok) {
  int tile_r = blockIdx.x / (H / TC), tile_c = blockIdx.x % (H / TC);
  for (int i = threadIdx.x; i < TR * TC / 8; i += blockDim.x) {
    int r = tile_r * TR + i / (TC / 8), c = tile_c * TC + (i % (TC / 8)) * 8;
    uint4 v{val(r, c), val(r, c + 2), val(r, c + 4), val(r, c + 6)};
    ret[(size_t(r) * H + c) / 8] = v;
  }
}
__global__ void k_store_y(uint4* y, const int* tok) {
  int tile_r = blockIdx.x / (H / TC), tile_c = blockIdx.x % (H / TC);
  for (int i = threadIdx.x; i < TR * TC / 8; i += blockDim.x) {
    int r = tile_r * TR + i / (TC / 8), c = tile_c * TC + (i % (TC / 8)) * 8;
    uint4 v{val(r, c), val(r, c + 2), val(r, c + 4), val(r, c + 6)};
    y[(size_t(tok[r]) * H + c) / 8] = v;
  }
}
__global__ void k_red(__nv_bfloat16* y, const int* tok) {
  int tile_r = blockIdx.x / (H / TC), tile_c = blockIdx.x % (H / TC);
  for (int i = threadIdx.x; i < TR * TC / 8; i += blockDim.x) {
    int r = tile_r * TR + i / (TC / 8), c = tile_c * TC + (i % (TC / 8)) * 8;
    __nv_bfloat16* p = y + size_t(tok[r]) * H + c;
    asm volatile("red.global.add.noftz.v4.bf16x2 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(val(r, c)),
                 "r"(val(r, c + 2)), "r"(val(r, c + 4)), "r"(val(r, c + 6)) : "memory");
  }
}
__global__ void k_bulk(__nv_bfloat16* y, const int* tok) {
  extern __shared__ __align__(128) uint4 s[];  // TR x TC bf16 = 64 KiB
  int tile_r = blockIdx.x / (H / TC), tile_c = blockIdx.x % (H / TC);
  for (int i = threadIdx.x; i < TR * TC / 8; i += blockDim.x) {
    int r = tile_r * TR + i / (TC / 8), c = tile_c * TC + (i % (TC / 8)) * 8;
    s[i] = uint4{val(r, c), val(r, c + 2), val(r, c + 4), val(r, c + 6)};
  }
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
  __syncthreads();
  if (threadIdx.x < TR) {
    int r = tile_r * TR + threadIdx.x;
    __nv_bfloat16* p = y + size_t(tok[r]) * H + tile_c * TC;
    uint32_t src = uint32_t(__cvta_generic_to_shared(s + threadIdx.x * (TC / 8)));
    asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.noftz.bf16 [%0], [%1], %2;"
                 ::"l"(p), "r"(src), "r"(TC * 2) : "memory");
    asm volatile("cp.async.bulk.commit_group;" ::: "memory");
    asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
  }
  __syncthreads();
}
// y[t] = r[a] + r[b]: one warp a token, in f32, rounded once.
__global__ void k_combine(uint4* y, const uint4* ret, const int* rows_of) {
  int t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (t >= TOK) return;
  int a = rows_of[2 * t], b = rows_of[2 * t + 1];
  for (int c8 = lane; c8 < H / 8; c8 += 32) {
    uint4 x = ret[(size_t(a) * H) / 8 + c8], z = ret[(size_t(b) * H) / 8 + c8], o;
    uint32_t* xs = &x.x; uint32_t* zs = &z.x; uint32_t* os = &o.x;
    for (int j = 0; j < 4; j++) {
      float2 f = __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&xs[j]));
      float2 g = __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&zs[j]));
      __nv_bfloat162 h = __floats2bfloat162_rn(f.x + g.x, f.y + g.y);
      os[j] = *reinterpret_cast<uint32_t*>(&h);
    }
    y[(size_t(t) * H) / 8 + c8] = o;
  }
}
int main() {
  std::vector<int> tok(ROWS), rows_of(ROWS);
  for (int r = 0; r < ROWS; r++) tok[r] = r / 2;
  std::mt19937 g(7); std::shuffle(tok.begin(), tok.end(), g);
  std::vector<int> fill(TOK, 0);
  for (int r = 0; r < ROWS; r++) rows_of[2 * tok[r] + fill[tok[r]]++] = r;
  int *dtok, *drows; uint4 *ret, *y; size_t ybytes = size_t(TOK) * H * 2;
  CK(cudaMalloc(&dtok, ROWS * 4)); CK(cudaMalloc(&drows, ROWS * 4));
  CK(cudaMalloc(&ret, size_t(ROWS) * H * 2)); CK(cudaMalloc(&y, ybytes));
  uint4* yref; CK(cudaMalloc(&yref, ybytes));
  CK(cudaMemcpy(dtok, tok.data(), ROWS * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(drows, rows_of.data(), ROWS * 4, cudaMemcpyHostToDevice));
  CK(cudaFuncSetAttribute(k_bulk, cudaFuncAttributeMaxDynamicSharedMemorySize, 65536));
  int tiles = (ROWS / TR) * (H / TC);
  cudaEvent_t e0, e1, e2; CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1)); CK(cudaEventCreate(&e2));
  auto run = [&](int v) {
    if (v == 0) { k_store<<<tiles, 256>>>(ret, dtok); k_combine<<<TOK / 8, 256>>>(y, ret, drows); }
    if (v == 1) { CK(cudaMemsetAsync(y, 0, ybytes)); k_red<<<tiles, 256>>>((__nv_bfloat16*)y, dtok); }
    if (v == 2) { CK(cudaMemsetAsync(y, 0, ybytes)); k_bulk<<<tiles, 256, 65536>>>((__nv_bfloat16*)y, dtok); }
    if (v == 3) { k_store_y<<<tiles, 256>>>(y, dtok); }
  };
  const char* name[] = {"S store+combine", "R memset+red.v4", "B memset+bulk reduce", "W scattered store (ceiling)"};
  // Split timings: the first kernel and the second (memset / combine) apart.
  for (int v = 0; v < 4; v++) {
    for (int i = 0; i < 5; i++) run(v);
    CK(cudaDeviceSynchronize());
    std::vector<float> ts;
    for (int i = 0; i < 30; i++) { CK(cudaEventRecord(e0)); run(v); CK(cudaEventRecord(e1)); CK(cudaEventSynchronize(e1)); float ms; CK(cudaEventElapsedTime(&ms, e0, e1)); ts.push_back(ms); }
    CK(cudaGetLastError());
    std::sort(ts.begin(), ts.end());
    bool same = true;
    if (v == 0) CK(cudaMemcpy(yref, y, ybytes, cudaMemcpyDeviceToDevice));
    if (v == 1 || v == 2) {
      std::vector<uint16_t> a(ybytes / 2), b(ybytes / 2);
      CK(cudaMemcpy(a.data(), y, ybytes, cudaMemcpyDeviceToHost)); CK(cudaMemcpy(b.data(), yref, ybytes, cudaMemcpyDeviceToHost));
      size_t diff = 0; for (size_t i = 0; i < a.size(); i++) diff += a[i] != b[i];
      same = diff == 0; if (diff) printf("  %zu of %zu elements differ from S\n", diff, a.size());
    }
    printf("%-30s median %.4f ms  min %.4f  %s\n", name[v], ts[15], ts[0], v == 1 || v == 2 ? (same ? "bitwise = S" : "DIFFERS") : "");
  }
  // The parts alone.
  auto part = [&](const char* n, auto f) { for (int i = 0; i < 5; i++) f(); CK(cudaDeviceSynchronize()); std::vector<float> ts;
    for (int i = 0; i < 30; i++) { CK(cudaEventRecord(e0)); f(); CK(cudaEventRecord(e1)); CK(cudaEventSynchronize(e1)); float ms; CK(cudaEventElapsedTime(&ms, e0, e1)); ts.push_back(ms); }
    std::sort(ts.begin(), ts.end()); printf("  part %-26s median %.4f ms\n", n, ts[15]); };
  part("store tiles (128 MiB)", [&] { k_store<<<tiles, 256>>>(ret, dtok); });
  part("combine (128 MiB in, 64 out)", [&] { k_combine<<<TOK / 8, 256>>>(y, ret, drows); });
  part("memset y (64 MiB)", [&] { CK(cudaMemsetAsync(y, 0, ybytes)); });
  part("red.v4 alone", [&] { k_red<<<tiles, 256>>>((__nv_bfloat16*)y, dtok); });
  part("bulk reduce alone", [&] { k_bulk<<<tiles, 256, 65536>>>((__nv_bfloat16*)y, dtok); });
  CK(cudaGetLastError());
  return 0;
}
