// queue.cuh -- the rank's task log (core's `runtime::Log` / `queue.rs`): an append-only array
// sized for the whole forward, in two parts: the combine log (slots [0, fdm_gemm_log_base))
// and the GEMM log after it. A producer claims `count` slots of one part with one atomicAdd
// on that part's tail and publishes each descriptor by a release store of its ready flag =
// epoch. The scheduler hands out the ready prefix of each part in order, combines first
// (scheduler.cuh; core's single log hands them out in arrival order: docs/kernel.md).
#pragma once

#include "heap.cuh"

/// The descriptor of a task, from the generated protocol helper (TaskDescriptor::new in
/// Rust): the kernel never computes a task's offsets itself.
__device__ __forceinline__ fdm_task make_task(const Rank& r, unsigned kind, unsigned source, unsigned owner,
                                              unsigned le, unsigned row_tile, unsigned col_tile,
                                              unsigned valid_rows) {
  return fdm_task_init(&r.p->layout, kind, r.epoch, source, owner, le, row_tile, col_tile, valid_rows);
}

/// Task i of the GEMM0 tasks of a packet of `rows` rows from `source` for local expert `le`:
/// column tiles in groups (the layout's gemm0_group), each group row tile by row tile:
/// graph::gemm0_tile, the weights of a group read while they are still in L2. With paired
/// tasks (kPairs) each column tile's row tiles 2p and 2p + 1 side by side
/// (graph::gemm0_tile_paired), `head` telling whether task i heads such a pair.
__device__ __forceinline__ fdm_task gemm0_task(const Rank& r, unsigned source, unsigned le, unsigned rows,
                                               unsigned i, bool& head) {
  const fdm_layout& l = r.p->layout;
  const unsigned rts = fdm_div_ceil(rows, kBM), cti = fdm_col_tiles_inter(&l);
  unsigned rt, c;
  if constexpr (kPairs) {
    const fdm_paired_tile t = fdm_gemm0_paired(i, rts, cti, l.gemm0_group);
    rt = t.row_tile;
    c = t.col_tile;
    head = t.head != 0u;
  } else {
    rt = fdm_gemm0_row_tile(i, rts, cti, l.gemm0_group);
    c = fdm_gemm0_col_tile(i, rts, cti, l.gemm0_group);
    head = false;
  }
  return make_task(r, FDM_TASK_GEMM0, source, r.global, le, rt, c, fdm_tile_rows(rows, rt, kBM));
}

/// True where the OS block posted every GEMM1 task of this forward with the first wave
/// (subscriber.cuh post_gemm1_early; the word holds the epoch of the forward that did, so no
/// reset is needed). Then a GEMM0's completion counts its row tile and claims nothing, and a
/// GEMM1's producer waits for the count before handing it on (processor_wgmma.cuh). The
/// descriptors are the canonical ones all the same (the host's trace decodes them against the
/// layout). Visible to a processor through its task's acquire: the OS block stores it before
/// the first wave's fence.
__device__ __forceinline__ bool gemm1_posted_early(const Rank& r) {
  return ld_relaxed_gpu(&r.control()[kGemm1Early]) == r.epoch;
}

/// The third wave (perf-notes v48 (d), v49 (a)): true where the OS block wrote every combine
/// task of this forward with the second wave, combine (token tile tt, column c) at combine log
/// slot tt * cth + c (subscriber.cuh post_combines), without its ready flag. Then the return
/// subscriber completing a (group, column) raises its tasks' flags (no claim, no
/// descriptors), processor q < ncomb posts combine slot q as its own task number 2 when its
/// task number 0 completes (processor_wgmma.cuh report_task), and a producer taking a combine
/// waits for its flag before reading it. The scheduler starts past them (its `assigned` at 3
/// for those processors, its combine head at ncomb). Stored before the first wave's release,
/// like kGemm1Early.
__device__ __forceinline__ bool combines_posted(const Rank& r) {
  return ld_relaxed_gpu(&r.control()[kCombinesPosted]) == r.epoch;
}

/// This forward's combine tasks: token tiles x output column tiles (the scheduler's ncomb).
__device__ __forceinline__ unsigned combine_count(const Rank& r) {
  return fdm_div_ceil(r.p->tokens, kBM) * fdm_col_tiles_hidden(&r.p->layout);
}

/// Claims `count` slots of the GEMM log (one atomicAdd, by the caller's leader thread).
__device__ __forceinline__ unsigned claim(const Rank& r, unsigned count) {
  return (unsigned)fdm_gemm_log_base(&r.p->layout) + atomicAdd(&r.control()[kTaskTail], count);
}

/// Claims `count` slots of the combine log.
__device__ __forceinline__ unsigned claim_combine(const Rank& r, unsigned count) {
  return atomicAdd(&r.control()[kCombineTail], count);
}

/// Writes and publishes tasks base..base+count, task i = make(i), cooperatively by the
/// `lanes` threads calling it (lane = 0..lanes-1; all must pass the same arguments). `base`
/// comes from claim(), broadcast by the caller.
template <class Make>
__device__ void publish(const Rank& r, unsigned base, unsigned count, unsigned lane, unsigned lanes, Make make) {
  fdm_task* tasks = r.tasks();
  unsigned* ready = r.task_ready();
  for (unsigned i = lane; i < count; i += lanes) {
    tasks[base + i] = make(i);
    st_release_gpu(&ready[base + i], r.epoch);
  }
}

/// Writes and publishes tasks base..base+count, task i = make(i), by the calling thread alone:
/// every descriptor first, then one fence and the ready flags (relaxed stores after the fence:
/// a release pattern). One round trip for all of them, where publish()'s release store a task
/// waits for each in turn.
template <class Make>
__device__ void publish_own(const Rank& r, unsigned base, unsigned count, Make make) {
  if (count == 0) return;
  fdm_task* tasks = r.tasks();
  unsigned* ready = r.task_ready();
  for (unsigned i = 0; i < count; ++i) tasks[base + i] = make(i);
  fence_acq_rel_gpu();
  for (unsigned i = 0; i < count; ++i) st_relaxed_gpu(&ready[base + i], r.epoch);
}
