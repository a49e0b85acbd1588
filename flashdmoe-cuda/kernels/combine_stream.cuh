// combine_stream.cuh -- the combine task streamed through the Hopper engine's pipeline (core's
// `TaskKind::Combine`; the plain form is combine.cuh's run_combine). Where a token has many
// slots (FDM_COMBINE_STREAM, 2-byte elements, 4+ slots) a combine task reads ~0.5 MiB of
// returned rows, and the consumers' registers hold 32 KiB of them in flight: ~19 GB/s an SM,
// Qwen3's combine tail ~70 µs (perf-notes "Next levers" 1). Here the producer copies the
// slots' row segments into the pipeline's stages with `cp.async.bulk` (one issue a segment,
// 3-4 stages of ~48 KiB in flight) while the consumers sum the previous stage from shared
// memory, in slot order: run_combine's sum, the same bits.
//
// The handover, per combine task (the producer and the consumers each meet it in task order):
//   consumers: look every slot of the tile up (combine_slot) into the slot table
//     (combine_slots: the staging buffer or the region after the engine's), then named barrier
//     kCombineBarrier with the producer (384 threads): the table is written;
//   producer: after that barrier, fill by fill (kFillRows token rows, all their slots, a
//     stage): waits for the stage to be empty, each thread bulk-copies its segments (kNoSlot:
//     none) with one arrive.expect_tx of their bytes (no copy: a plain arrival), thread 0 one
//     more arrival (the stage barrier counts 129, as for a GEMM k-tile);
//   consumers: fill by fill, wait for the stage, sum each (row, 16-byte chunk) over its slots
//     from the stage, store the output, release the stage.
// The pipeline's ring advances once a fill on both sides, as for a GEMM k-tile, so the tasks
// around a combine keep their stages in order. The producer reads the table only before its
// arrivals on the stages the consumers wait for, so the consumers' next writes of the table
// (the next combine) or of the staging buffer (the next GEMM's epilogue) come after its reads.
#pragma once

#include "combine.cuh"

#if FDM_ENGINE == 1
#ifndef FDM_COMBINE_STREAM
#define FDM_COMBINE_STREAM 0
#endif

namespace combine_stream {
namespace hw = flashdmoe::hopper;

/// Bytes of one slot's returned row segment in a combine tile (a ragged last column tile copies
/// fewer; its segments keep this stride in the stage).
constexpr unsigned kSegBytes = kBNH * sizeof(Elem);
/// Token rows of a tile one stage holds, every slot of each.
constexpr unsigned kFillRows = Engine::kStageBytes / (kSlots * kSegBytes);
/// Whether combine tasks stream (spec/choice.rs `CombineForm::Streamed` sets FDM_COMBINE_STREAM only
/// where the conditions below hold: the static_assert keeps the two in step).
constexpr bool kEnabled = FDM_COMBINE_STREAM != 0;
static_assert(!kEnabled || (sizeof(Elem) == 2 && kSlots >= 4 && kFillRows >= 1),
              "spec/choice.rs CombineForm::Streamed: 2-byte elements, 4+ slots a token, a token's segments in a stage");
static_assert(kSegBytes % 16 == 0, "bulk copies move whole 16-byte units");
/// Named barrier of the table's handover (1: the consumers' own; 2: the router tile's).
constexpr unsigned kCombineBarrier = 3;

/// Producer thread pt (0..127), at combine task t: streams the tile's slot segments into the
/// stages (see the file comment), after the consumers wrote the slot table `slots`.
__device__ void produce(const Rank& r, const Engine::Smem& s, hw::Ring<FDM_STAGES>& pipe, unsigned pt,
                        const fdm_task& t, const CombineSlot* slots) {
  hw::named_sync(kCombineBarrier, hw::kEngineThreads);
  // The returned rows were stored by GEMM1 consumers (the generic proxy) and acquired through
  // the return signals, the combine's enqueue and the mailbox (thread 0's acquire, then the
  // ring and this barrier); the bulk copies read them through the async proxy: each copying
  // thread's proxy fence orders what it acquired before its copies (the reading side's half of
  // the GEMM0 -> GEMM1 TMA pattern in processor_wgmma.cuh).
  hw::fence_proxy_async_global();
  const unsigned rows = t.valid_rows;
  const unsigned long long col_bytes = (unsigned long long)t.col_tile * kSegBytes;
  const unsigned seg = fdm_tile_cols(kH, kBNH, t.col_tile) * sizeof(Elem);
  for (unsigned row0 = 0; row0 < rows; row0 += kFillRows) {
    const unsigned n = min(kFillRows, rows - row0) * kSlots;  // the fill's segments
    const CombineSlot* fill = slots + row0 * kSlots;
    hw::mbar_wait(s.empty(pipe.slot), pipe.phase ^ 1u);
    const unsigned full = s.full(pipe.slot), stage = s.a(pipe.slot);
    unsigned copies = 0;
    for (unsigned i = pt; i < n; i += hw::kProducerThreads) copies += fill[i].offset != kNoSlot;
    if (copies != 0) {
      hw::mbar_arrive_expect_tx(full, copies * seg);
    } else {
      hw::mbar_arrive(full);
    }
    for (unsigned i = pt; i < n; i += hw::kProducerThreads) {
      const unsigned long long offset = fill[i].offset;
      if (offset != kNoSlot) hw::bulk_load(stage + i * kSegBytes, r.heap + offset + col_bytes, seg, full);
    }
    if (pt == 0) hw::mbar_arrive(full);
    pipe.advance();
  }
}

/// Consumer thread c (0..255), at combine task t: writes the slot table, hands it to the
/// producer, then sums the stages it fills into the tile's output rows. In a traced forward
/// consumer 0 marks the table's handover and the first fill's arrival (`marks`, shared memory;
/// the trace record's mark1_ns / mark2_ns).
__device__ void consume(const Rank& r, const Engine::Smem& s, hw::Ring<FDM_STAGES>& pipe, unsigned c,
                        const fdm_task& t, CombineSlot* slots, unsigned long long* marks) {
  constexpr unsigned kVec = 16 / sizeof(Elem);
  constexpr unsigned kThreadsPerRow = kBNH / kVec;
  constexpr unsigned kRowsAtOnce = hw::kConsumerThreads / kThreadsPerRow;
  static_assert(hw::kConsumerThreads % kThreadsPerRow == 0, "whole rows a pass");
  const unsigned rows = t.valid_rows;
  // Every lookup's two loads issued before any table write: one round trip a thread, where a
  // loop of `combine_slot` waits for each lookup in turn (the compiler cannot move a global
  // load above a shared store through generic pointers). Run 127: the table 3.3 -> 1.0 µs.
  constexpr unsigned kLookups = (kBM * kSlots + hw::kConsumerThreads - 1) / hw::kConsumerThreads;
  SlotRoute routes[kLookups];
#pragma unroll
  for (unsigned k = 0; k < kLookups; ++k) {
    const unsigned i = c + k * hw::kConsumerThreads;
    if (i < rows * kSlots) routes[k] = slot_route(r, t, i);
  }
#pragma unroll
  for (unsigned k = 0; k < kLookups; ++k) {
    const unsigned i = c + k * hw::kConsumerThreads;
    if (i < rows * kSlots) slots[i] = combine_slot_of(r, routes[k]);
  }
  hw::named_sync(kCombineBarrier, hw::kEngineThreads);
  if (c == 0 && r.p->trace) marks[0] = marks[1] = now_ns();  // mark 2 again at the first fill
  const unsigned chunk = c % kThreadsPerRow;
  const unsigned col = t.col_tile * kBNH + chunk * kVec;
  // Lanes whose columns lie past H (a ragged last column tile) take no rows.
  const bool cols = kH % kBNH == 0 || col < kH;
  for (unsigned row0 = 0; row0 < rows; row0 += kFillRows) {
    const unsigned n = min(kFillRows, rows - row0);
    hw::mbar_wait(s.full(pipe.slot), pipe.phase);
    if (c == 0 && r.p->trace && row0 == 0) marks[1] = now_ns();
    const char* stage = s.ptr + (s.a(pipe.slot) - s.base);
    for (unsigned q = c / kThreadsPerRow; cols && q < n; q += kRowsAtOnce) {
      float acc[kVec];
#pragma unroll
      for (unsigned v = 0; v < kVec; ++v) acc[v] = 0.f;
      // Every slot's table entry and 16 bytes read from shared memory first, then added in slot
      // order (the same sum, the same bits), not two dependent reads a slot in turn.
      float w[kSlots];
      uint4 raw[kSlots];
#pragma unroll
      for (unsigned j = 0; j < (unsigned)kSlots; ++j) {
        const unsigned i = q * kSlots + j;
        const CombineSlot sl = slots[row0 * kSlots + i];
        w[j] = 0.f;  // as run_combine: a dropped slot adds 0 x 0
        raw[j] = make_uint4(0u, 0u, 0u, 0u);
        if (sl.offset != kNoSlot) {
          w[j] = sl.weight;
          raw[j] = *reinterpret_cast<const uint4*>(stage + i * kSegBytes + chunk * 16);
        }
      }
#pragma unroll
      for (unsigned j = 0; j < (unsigned)kSlots; ++j) {  // slot order: deterministic
        const Elem* vals = reinterpret_cast<const Elem*>(&raw[j]);
#pragma unroll
        for (unsigned v = 0; v < kVec; ++v) acc[v] += w[j] * to_f32(vals[v]);
      }
      store_combined(r, t, row0 + q, col, acc);
    }
    Engine::release(s, pipe.slot);
    pipe.advance();
  }
}

}  // namespace combine_stream
#endif  // FDM_ENGINE == 1
