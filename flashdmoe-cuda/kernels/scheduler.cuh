// scheduler.cuh -- the OS block's scheduler warp (core's `runtime::Scheduler`): hands the
// ready prefix of the task log to processors with a free mailbox slot, round-robin, and once
// the subscribers' bound of tasks has completed, gives every processor the stop word.
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
  unsigned head = 0;
  // Processors are scanned round-robin from `cursor` so load spreads evenly.
  unsigned cursor = 0;
  Deadline deadline(r.p->timeout_ns + r.p->timeout_ns / 4);
  for (;;) {
    const unsigned bound = *reinterpret_cast<volatile unsigned*>(&s.bound);
    if (head == bound) break;
    // Ready tasks are a prefix of the queue from `head` (published in order of their flags).
    const unsigned idx = head + lane;
    const bool ok = idx < bound && ld_acquire_gpu(&ready[idx]) == epoch;
    const unsigned okmask = __ballot_sync(0xFFFFFFFFu, ok);
    const unsigned nready = okmask == 0xFFFFFFFFu ? 32u : __ffs(~okmask) - 1u;
    if (nready == 0) {
      if (aborted(r.p)) return;
      if (deadline.expired()) {
        if (lane == 0) report_timeout(r, FDM_ROLE_SCHEDULER, FDM_WAIT_TASK_READY, head, ld_acquire_gpu(&ready[head]));
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
          const unsigned task = head + given + rank_in;
          mailbox_give(r, q, s.assigned[q], task);
          s.assigned[q] += 1;
        }
        given = min(nready, given + __popc(wmask));
      }
    }
    __syncwarp();
    if (given) {
      head += given;
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
