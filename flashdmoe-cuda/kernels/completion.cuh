// completion.cuh -- what a processor publishes when a task ends, shared by both engines
// (core's `runtime::Processor` after `TileExecutor::run`): the row-tile counter whose last
// GEMM0 unlocks the row tile's GEMM1 tasks, the return signal of a GEMM1 tile, and the trace
// record.
#pragma once

#include "queue.cuh"

/// After a GEMM0's intermediate rows are stored and fenced, by one thread: counts the tile on
/// its row-tile counter; the GEMM0 completing the row tile claims the log slots of the row
/// tile's GEMM1 tasks and returns the first (kStop otherwise, and always where the OS block
/// posted the GEMM1 tasks itself: their producers wait on the count, row_tile_counted).
__device__ unsigned complete_row_tile(const Rank& r, const fdm_task& t) {
  const fdm_layout& l = r.p->layout;
  unsigned* counter = reinterpret_cast<unsigned*>(r.heap + t.counter_offset);
  const bool last = atomicAdd(counter, 1u) + 1u == fdm_col_tiles_inter(&l);
  if (gemm1_posted_early(r)) return kStop;  // its GEMM1s wait on the count
  if (!last) return kStop;
  __threadfence();  // every GEMM0 of the row tile counted before its GEMM1s are published
  return claim(r, fdm_col_tiles_hidden(&l));
}

/// Publishes the GEMM1 tasks of GEMM0 task t's row tile at log slots base.. (from
/// complete_row_tile), by `lanes` threads.
__device__ void publish_gemm1(const Rank& r, const fdm_task& t, unsigned base, unsigned lane, unsigned lanes) {
  publish(r, base, fdm_col_tiles_hidden(&r.p->layout), lane, lanes, [&](unsigned c) {
    return make_task(r, FDM_TASK_GEMM1, t.source_rank, t.owner_rank, t.local_expert, t.row_tile, c, t.valid_rows);
  });
}

/// A processor's thread waiting on another role's word: producer thread 0 before it hands a
/// task posted ahead of its inputs to its consumers, consumer 0 before it publishes a first task
/// it derived (waves.cuh). Spins on `word` (acquire) until `ok(seen)`. False on an abort or a timeout
/// (reported as the processor's wait for `what` number `index`): the caller then stops, as on
/// its mailbox's.
template <class Ok>
__device__ bool producer_await(const Rank& r, const unsigned* word, Ok ok, unsigned what, unsigned index,
                               Deadline& deadline) {
  for (;;) {
    const unsigned seen = ld_acquire_gpu(word);
    if (ok(seen)) {
      deadline.progress();
      return true;
    }
    if (aborted(r.p)) return false;
    if (deadline.expired()) {
      report_timeout(r, FDM_ROLE_PROCESSOR, what, index, seen);
      return false;
    }
  }
}

/// Producer thread 0 of processor `pid`, for a GEMM1 task posted before its row tile's GEMM0s
/// (subscriber.cuh post_gemm1_early): waits until every GEMM0 of task t's row tile is counted
/// (acquire: their intermediate rows are visible from here on).
__device__ bool row_tile_counted(const Rank& r, unsigned pid, const fdm_task& t, Deadline& deadline) {
  const unsigned* counter = reinterpret_cast<const unsigned*>(
      r.heap + fdm_row_tile_counter(&r.p->layout, t.source_rank, t.local_expert, t.row_tile));
  const unsigned want = fdm_col_tiles_inter(&r.p->layout);
  return producer_await(r, counter, [&](unsigned seen) { return seen >= want; }, FDM_WAIT_ROW_TILE, pid, deadline);
}

/// Producer thread 0, for combine log task `index` posted before it was ready (the third
/// wave, subscriber.cuh post_combines): waits for its ready flag (acquire: the descriptor and
/// every GEMM1 tile the combine sums are visible from here on).
__device__ bool combine_flagged(const Rank& r, unsigned index, Deadline& deadline) {
  return producer_await(r, &r.task_ready()[index], [&](unsigned seen) { return seen == r.epoch; },
                        FDM_WAIT_TASK_READY, index, deadline);
}

/// After a GEMM1 tile's rows are stored: the epoch-stamped return signal in the source's heap.
__device__ void raise_return_signal(const Rank& r, const fdm_task& t) {
  signal_to(r.p, t.source_rank, reinterpret_cast<unsigned long long*>(r.heap_of(t.source_rank) + t.signal_offset),
            fdm_signal(t.epoch, fdm_return_tile_id(&r.p->layout, t.row_tile, t.col_tile)));
}

/// The task's trace record (when the forward is traced), by one thread; on the Hopper engine a
/// task also carries two in-task marks, ns after `start` (layer.rs `TaskMarks`: a GEMM's main
/// loop end and results stored, a streamed combine's table handover and first fill).
__device__ __forceinline__ void record_trace(const Rank& r, unsigned pid, unsigned ti, unsigned long long start,
                                             unsigned long long end, unsigned mark1_ns = 0, unsigned mark2_ns = 0) {
  if (!r.p->trace) return;
  fdm_trace_record rec;
  rec.start_ns = start;
  rec.end_ns = end;
  rec.processor = pid;
  rec.task = ti;
  rec.mark1_ns = mark1_ns;
  rec.mark2_ns = mark2_ns;
  r.trace()[ti] = rec;
}
