// combine.cuh -- the combine task (core's `TaskKind::Combine` in the tile executor): a token
// tile's output columns as the weighted sum of its returned rows, in slot order
// (deterministic: no float atomics). A token's kSlots slots are the router's kTopK, then its
// shared experts' parts (topk.cuh): the output is the routed sum plus the shared experts'.
#pragma once

#include "heap.cuh"

/// Where a slot's returned row is: its byte offset in the rank's heap (kNoSlot: dropped) and
/// its combine weight.
struct CombineSlot {
  unsigned long long offset;
  float weight;
  unsigned pad;
};
constexpr unsigned long long kNoSlot = ~0ull;

/// The rank's slot index of slot `i` of token tile t (row i / kSlots, slot i % kSlots of the
/// tile).
__device__ __forceinline__ unsigned tile_slot(const fdm_task& t, unsigned i) {
  return t.row_tile * kBM * kSlots + i;
}

/// Where slot `i` of token tile t went in the rank's routing: its packet row (kDropped:
/// dropped) and its expert, two loads.
struct SlotRoute {
  unsigned pos, expert;
};
__device__ __forceinline__ SlotRoute slot_route(const Rank& r, const fdm_task& t, unsigned i) {
  const unsigned slot = tile_slot(t, i);
  return SlotRoute{r.slot_row()[slot], r.topk_expert()[slot]};
}

/// The combine slot of a looked-up route: its returned row's offset (the expert's owner from
/// the parameters) and weight.
__device__ __forceinline__ CombineSlot combine_slot_of(const Rank& r, SlotRoute route) {
  if (route.pos == kDropped) return CombineSlot{kNoSlot, 0.f, 0u};
  const unsigned e = route.expert;
  const unsigned long long offset =
      fdm_row(&r.p->layout, FDM_STAGE_RETURN, r.p->expert_owner[e], r.p->expert_local[e], route.pos, 0);
  // Weight 1: the owner's GEMM1 scaled the returned row by the routing weight.
  return CombineSlot{offset, 1.f, 0u};
}

/// Slot `i` of token tile t, looked up in the rank's routing: three dependent loads (the
/// slot's packet row, its expert, the expert's owner).
__device__ __forceinline__ CombineSlot combine_slot(const Rank& r, const fdm_task& t, unsigned i) {
  const unsigned slot = tile_slot(t, i);
  const unsigned pos = r.slot_row()[slot];
  if (pos == kDropped) return CombineSlot{kNoSlot, 0.f, 0u};
  return combine_slot_of(r, SlotRoute{pos, r.topk_expert()[slot]});
}

static_assert(sizeof(CombineSlot) * kBM * kSlots == kCombineSlotBytes, "config.cuh's kCombineSlotBytes");

/// Most slots a token may have for its row's loads to go in one round: Qwen2-57B's 8 routed + 8
/// shared would hold 16 vectors of 16 bytes in registers and spill, so more slots than this go
/// in rounds of kSlotsInFlight. 12, not 8: DeepSeek-V3's and Kimi-K2's 8 + 1 load in one round
/// instead of two dependent ones (their combine tasks took ~36 µs, a ~0.28 ms tail: perf-notes
/// v29 (d), (g)).
constexpr int kOneRoundSlots = 12;
/// Slots loaded at once in each round of a row with more than kOneRoundSlots.
constexpr int kSlotsInFlight = 8;

/// Stores token row `row` of task t's output columns from `col`: `acc` rounded to the dtype.
__device__ __forceinline__ void store_combined(const Rank& r, const fdm_task& t, unsigned row, unsigned col,
                                              const float* acc) {
  constexpr int kVec = 16 / sizeof(Elem);
  uint4 packed;
  Elem* out = reinterpret_cast<Elem*>(&packed);
#pragma unroll
  for (int v = 0; v < kVec; ++v) out[v] = from_f32<Elem>(acc[v]);
  *reinterpret_cast<uint4*>(r.y() + (unsigned long long)(t.row_tile * kBM + row) * kH + col) = packed;
}

/// out[t][cols] = sum over the token's kept slots, in slot order, of weight * returned row.
/// Run by `kLanes` threads (lane = 0..kLanes-1) that `sync()` synchronises. Memory-bound:
/// each thread owns 16 bytes of a row and keeps kIlp rows x k slots of loads in flight before
/// accumulating. With kStaged, every slot of the tile is first looked up once (a thread per
/// slot) into shared memory `slots` (kCombineSlotBytes, free for the task's duration), so the
/// row loads depend on one shared-memory read instead of a chain of global ones (the caller
/// syncs again before reusing `slots`); without it each thread looks its slots up itself and
/// `slots`/`sync` are unused. Only the Hopper engine stages, and only 2-byte elements: on the
/// mma.sync engine the staged form timed out intermittently on an H200 (docs/dev/perf-notes.md,
/// 2026-11-29), cause not yet found, and the TF32 64x256 Hopper images spill with it; those keep
/// the form they were verified with.
template <int kLanes, bool kStaged, class Sync>
__device__ void run_combine(const Rank& r, const fdm_task& t, unsigned lane, CombineSlot* slots, Sync sync) {
  constexpr int kVec = 16 / sizeof(Elem);
  constexpr int kThreadsPerRow = kBNH / kVec;
  constexpr int kRowsPerPass = kLanes / kThreadsPerRow;
  constexpr int kIlp = kSlots >= 8 ? 1 : 8 / kSlots;  // rows per thread in flight
  static_assert(kLanes % kThreadsPerRow == 0, "combine thread mapping");
  if constexpr (kStaged) {
    for (unsigned i = lane; i < t.valid_rows * kSlots; i += kLanes) slots[i] = combine_slot(r, t, i);
    sync();
    // Every returned row segment of the tile asked into L2 at once (no registers held): the
    // loads below then wait on L2, not HBM. A register-held load keeps kIlp x k 16-byte
    // vectors a thread in flight, ~32 KiB an SM, and a combine task took 6.6 us at T 16384
    // (docs/dev/perf-notes.md, v10).
    constexpr unsigned kLines = kBNH * sizeof(Elem) / 128;  // 128-byte lines of a row segment
    static_assert(kBNH * sizeof(Elem) % 128 == 0, "whole lines a row segment");
    const unsigned long long segment = (unsigned long long)t.col_tile * kBNH * sizeof(Elem);
    // A ragged last column tile (kH % kBNH != 0) has fewer lines.
    const unsigned lines = fdm_div_ceil(fdm_tile_cols(kH, kBNH, t.col_tile) * sizeof(Elem), 128u);
    for (unsigned i = lane; i < t.valid_rows * kSlots * kLines; i += kLanes) {
      const CombineSlot s = slots[i / kLines];
      if (s.offset != kNoSlot && i % kLines < lines) prefetch_l2(r.heap + s.offset + segment + (i % kLines) * 128);
    }
  }
  const unsigned col = t.col_tile * kBNH + (lane % kThreadsPerRow) * kVec;
  const unsigned long long col_bytes = (unsigned long long)col * sizeof(Elem);
  // Lanes whose columns lie past H (a ragged last column tile) take no rows.
  const unsigned first_row = kH % kBNH == 0 || col < kH ? lane / kThreadsPerRow : t.valid_rows;
  if constexpr (kSlots > kOneRoundSlots) {
    // Many slots: a row at a time, its slots loaded kSlotsInFlight at a time and added in slot
    // order into one sum (the same sum as below).
    for (unsigned row = first_row; row < t.valid_rows; row += kRowsPerPass) {
      float acc[kVec];
#pragma unroll
      for (int v = 0; v < kVec; ++v) acc[v] = 0.f;
#pragma unroll 1
      for (int j0 = 0; j0 < kSlots; j0 += kSlotsInFlight) {
        uint4 raw[kSlotsInFlight];
        float w[kSlotsInFlight];
#pragma unroll
        for (int i = 0; i < kSlotsInFlight; ++i) {
          const int j = j0 + i;
          w[i] = 0.f;
          raw[i] = make_uint4(0u, 0u, 0u, 0u);
          if (j >= kSlots) continue;
          const CombineSlot s = kStaged ? slots[row * kSlots + j] : combine_slot(r, t, row * kSlots + j);
          if (s.offset == kNoSlot) continue;
          w[i] = s.weight;
          raw[i] = *reinterpret_cast<const uint4*>(r.heap + s.offset + col_bytes);
        }
#pragma unroll
        for (int i = 0; i < kSlotsInFlight; ++i) {  // slot order: deterministic
          const Elem* vals = reinterpret_cast<const Elem*>(&raw[i]);
#pragma unroll
          for (int v = 0; v < kVec; ++v) acc[v] += w[i] * to_f32(vals[v]);
        }
      }
      store_combined(r, t, row, col, acc);
    }
  } else {
    for (unsigned row0 = first_row; row0 < t.valid_rows; row0 += kIlp * kRowsPerPass) {
      uint4 raw[kIlp][kSlots];
      float w[kIlp][kSlots];
#pragma unroll
      for (int q = 0; q < kIlp; ++q) {
        const unsigned row = row0 + q * kRowsPerPass;
#pragma unroll
        for (int j = 0; j < kSlots; ++j) {
          w[q][j] = 0.f;
          raw[q][j] = make_uint4(0u, 0u, 0u, 0u);
          if (row >= t.valid_rows) continue;
          const CombineSlot s = kStaged ? slots[row * kSlots + j] : combine_slot(r, t, row * kSlots + j);
          if (s.offset == kNoSlot) continue;
          w[q][j] = s.weight;
          raw[q][j] = *reinterpret_cast<const uint4*>(r.heap + s.offset + col_bytes);
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
        for (int j = 0; j < kSlots; ++j) {  // slot order: deterministic
          const Elem* vals = reinterpret_cast<const Elem*>(&raw[q][j]);
#pragma unroll
          for (int v = 0; v < kVec; ++v) acc[v] += w[q][j] * to_f32(vals[v]);
        }
        store_combined(r, t, row, col, acc);
      }
    }
  }
}
