// combine.cuh -- the combine task (core's `TaskKind::Combine` in the tile executor): a token
// tile's output columns as the weighted sum of its returned rows, in slot order
// (deterministic: no float atomics).
#pragma once

#include "heap.cuh"

/// out[t][cols] = sum over the token's kept slots, in slot order, of weight * returned row.
/// Run by `kLanes` threads (lane = 0..kLanes-1). Memory-bound: each thread owns 16 bytes of a row and keeps kIlp rows x k slots of loads in
/// flight before accumulating.
template <int kLanes> __device__ void run_combine(const Rank& r, const fdm_task& t, unsigned lane) {
  const fdm_layout& l = r.p->layout;
  constexpr int kVec = 16 / sizeof(Elem);
  constexpr int kThreadsPerRow = kBN / kVec;
  constexpr int kRowsPerPass = kLanes / kThreadsPerRow;
  constexpr int kIlp = kTopK >= 8 ? 1 : 8 / kTopK;  // rows per thread in flight
  static_assert(kLanes % kThreadsPerRow == 0, "combine thread mapping");
  const unsigned col = t.col_tile * kBN + (lane % kThreadsPerRow) * kVec;
  for (unsigned row0 = lane / kThreadsPerRow; row0 < t.valid_rows; row0 += kIlp * kRowsPerPass) {
    uint4 raw[kIlp][kTopK];
    float w[kIlp][kTopK];
#pragma unroll
    for (int q = 0; q < kIlp; ++q) {
      const unsigned row = row0 + q * kRowsPerPass;
#pragma unroll
      for (int j = 0; j < kTopK; ++j) {
        w[q][j] = 0.f;
        raw[q][j] = make_uint4(0u, 0u, 0u, 0u);
        if (row >= t.valid_rows) continue;
        const unsigned slot = (t.row_tile * kBM + row) * kTopK + j;
        const unsigned pos = r.slot_row()[slot];
        if (pos == kDropped) continue;
        const unsigned e = r.topk_expert()[slot];
        w[q][j] = r.topk_weight()[slot];
        raw[q][j] = *reinterpret_cast<const uint4*>(
            r.heap + fdm_row(&l, FDM_STAGE_RETURN, r.p->expert_owner[e], r.p->expert_local[e], pos, col));
      }
    }
#pragma unroll
    for (int q = 0; q < kIlp; ++q) {
      const unsigned row = row0 + q * kRowsPerPass;
      if (row >= t.valid_rows) continue;
      float acc[kVec];
#pragma unroll
      for (int v = 0; v < kVec; ++v) acc[v] = 0.f;
#pragma unroll
      for (int j = 0; j < kTopK; ++j) {  // slot order: deterministic
        const Elem* vals = reinterpret_cast<const Elem*>(&raw[q][j]);
#pragma unroll
        for (int v = 0; v < kVec; ++v) acc[v] += w[q][j] * to_f32(vals[v]);
      }
      uint4 packed;
      Elem* out = reinterpret_cast<Elem*>(&packed);
#pragma unroll
      for (int v = 0; v < kVec; ++v) out[v] = from_f32<Elem>(acc[v]);
      *reinterpret_cast<uint4*>(r.y() + (unsigned long long)(t.row_tile * kBM + row) * kH + col) = packed;
    }
  }
}
