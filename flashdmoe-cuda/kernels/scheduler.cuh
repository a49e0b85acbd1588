// scheduler.cuh -- the OS block's scheduler warp (core's `runtime::Scheduler`): hands the
// ready prefixes of the task log's two parts to processors with a free mailbox slot,
// round-robin, ready combines before GEMM tasks (a combine becomes ready long after the GEMM1
// tasks queued ahead of it: docs/dev/combine-overlap.md), and once the subscribers' bound of
// tasks has completed, gives every processor the stop word.
#pragma once

#include "mailbox.cuh"
#include "subscriber.cuh"

/// Warp 0: hands ready tasks to processors with a free mailbox slot (two slots each, so a
/// processor finds its next task the moment it finishes one); stops everyone at the bound.
__device__ void scheduler(const Rank& r, OsShared& s) {
  const unsigned lane = threadIdx.x % 32;
  const unsigned epoch = r.epoch;
  const unsigned nproc = r.nproc;
  const unsigned* completed = r.completed();
  const unsigned* ready = r.task_ready();
  for (unsigned q = lane; q < nproc; q += 32) s.assigned[q] = 0;
  __syncwarp();
  // The combine log is [0, ncomb) this forward; the GEMM log starts at gbase and ends at the
  // bound less the combines, once the dispatch subscriber knows it.
  const unsigned ncomb = fdm_div_ceil(r.p->tokens, kBM) * fdm_col_tiles_hidden(&r.p->layout);
  const unsigned gbase = (unsigned)fdm_gemm_log_base(&r.p->layout);
  unsigned chead = 0, head = gbase;
  // Processors are scanned round-robin from `cursor` so load spreads evenly.
  unsigned cursor = 0;
  Deadline deadline(r.p->timeout_ns + r.p->timeout_ns / 4);
  for (;;) {
    const unsigned bound = *reinterpret_cast<volatile unsigned*>(&s.bound);
    const unsigned gend = bound == kStop ? kStop : gbase + (bound - ncomb);
    if (head == gend && chead == ncomb) break;
    // Ready tasks are a prefix of each log from its head (claimed in order; flags raised soon
    // after): up to 32 combines, then up to 32 GEMM tasks.
    const unsigned cidx = chead + lane, idx = head + lane;
    const bool cok = cidx < ncomb && ld_acquire_gpu(&ready[cidx]) == epoch;
    const bool ok = idx < gend && ld_acquire_gpu(&ready[idx]) == epoch;
    const unsigned cmask = __ballot_sync(0xFFFFFFFFu, cok), okmask = __ballot_sync(0xFFFFFFFFu, ok);
    const unsigned ncready = cmask == 0xFFFFFFFFu ? 32u : __ffs(~cmask) - 1u;
    const unsigned nready = ncready + (okmask == 0xFFFFFFFFu ? 32u : __ffs(~okmask) - 1u);
    if (nready == 0) {
      if (aborted(r.p)) return;
      if (deadline.expired()) {
        const unsigned at = head < gend ? head : chead;  // the GEMM log first, else the combines
        if (lane == 0) report_timeout(r, FDM_ROLE_SCHEDULER, FDM_WAIT_TASK_READY, at, ld_acquire_gpu(&ready[at]));
        return;
      }
      continue;
    }
    // Hand out up to nready tasks: first pass gives idle processors (0 outstanding) one
    // task each, second pass fills second slots.
    unsigned given = 0;
    for (unsigned pass = 0; pass < 2 && given < nready; ++pass) {
      for (unsigned base = 0; base < nproc && given < nready; base += 32) {
        const unsigned q = (cursor + base + lane) % nproc;
        const bool valid = base + lane < nproc;
        unsigned outstanding = 2;
        if (valid) outstanding = mailbox_outstanding(r, q, s.assigned[q]);
        const bool wants = valid && outstanding <= pass;
        const unsigned wmask = __ballot_sync(0xFFFFFFFFu, wants);
        const unsigned rank_in = __popc(wmask & ((1u << lane) - 1u));
        if (wants && given + rank_in < nready) {
          const unsigned j = given + rank_in;
          const unsigned task = j < ncready ? chead + j : head + (j - ncready);
          mailbox_give(r, q, s.assigned[q], task);
          s.assigned[q] += 1;
        }
        given = min(nready, given + __popc(wmask));
      }
    }
    __syncwarp();
    if (given) {
      const unsigned from_combine = min(given, ncready);
      chead += from_combine;
      head += given - from_combine;
      cursor = (cursor + given) % nproc;
      deadline.progress();
    } else if (deadline.expired()) {
      if (lane == 0) report_timeout(r, FDM_ROLE_SCHEDULER, FDM_WAIT_PROCESSOR, head, 0);
      return;
    } else if (aborted(r.p)) {
      return;
    }
  }
  // All tasks handed out: wait for their completion, then give every processor the stop word.
  const unsigned bound = s.bound;
  for (;;) {
    unsigned done = 0;
    for (unsigned q = lane; q < nproc; q += 32) done += ld_acquire_gpu(&completed[q]);
    for (int o = 16; o > 0; o /= 2) done += __shfl_xor_sync(0xFFFFFFFFu, done, o);
    if (done == bound) break;
    if (aborted(r.p)) return;
    if (deadline.expired()) {
      if (lane == 0) report_timeout(r, FDM_ROLE_SCHEDULER, FDM_WAIT_COMPLETION, bound, done);
      return;
    }
  }
  if (lane == 0) mark_latest(r, kStoppedNs);
  for (unsigned q = lane; q < nproc; q += 32) mailbox_give(r, q, s.assigned[q], kStop);
}
