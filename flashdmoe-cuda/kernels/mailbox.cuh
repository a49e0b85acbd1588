// mailbox.cuh -- the scheduler -> processor handoff (core's `runtime::Mailbox`): per processor
// q, two task slots mailbox[2q], mailbox[2q + 1] and two counters, assigned[q] (written by the
// scheduler) and completed[q] (written by the processor). Task number a of a processor goes in
// slot a % 2, so a processor finds its next task the moment it finishes one; the scheduler
// writes a slot only while the processor has at most one task outstanding (assigned -
// completed <= 1), so an unread slot is never overwritten. The stop word kStop, written the
// same way once every task of the rank completed, ends the processor's loop.
//
// Ordering: the scheduler works in rounds: every slot store of a round, one fence, then
// relaxed stores of the assigned counts (a release pattern); the processor's ld.acquire.gpu of
// assigned > taken makes the slot visible. Completion: a release of completed after the
// task's results are published (mailbox_complete: a relaxed store after the task's own fence,
// else st.release.gpu); the scheduler reads a round's completion counts relaxed, all
// at once, then fences. loom checks this protocol in flashdmoe-core (runtime/mailbox.rs).
#pragma once

#include "heap.cuh"

/// Scheduler side, one round: writes `task` in processor q's next slot without publishing it;
/// mailbox_publish publishes the round's slots.
__device__ __forceinline__ void mailbox_stage(const Rank& r, unsigned q, unsigned assigned, unsigned task) {
  r.mailbox()[2 * q + (assigned & 1u)] = task;
}

/// Scheduler side, after a round's mailbox_stage calls by any lanes of the warp (all lanes
/// call this): the warp barrier orders every lane's slots before each lane's fence, which
/// orders them before its relaxed stores of the assigned counts (count[q_of(j)] for processor
/// q_of(j), j < n; a processor listed twice gets the same count twice).
template <class QOf>
__device__ __forceinline__ void mailbox_publish(const Rank& r, QOf q_of, const unsigned* count, unsigned n,
                                                unsigned lane) {
  __syncwarp();
  fence_acq_rel_gpu();
  for (unsigned j = lane; j < n; j += 32) st_relaxed_gpu(&r.assigned()[q_of(j)], count[q_of(j)]);
}

/// One thread's half of the same pattern (the OS block's first wave, subscriber.cuh): after
/// its mailbox_stage of processor q's slot and a fence of its own, the relaxed store of q's
/// assigned count.
__device__ __forceinline__ void mailbox_publish_own(const Rank& r, unsigned q, unsigned count) {
  st_relaxed_gpu(&r.assigned()[q], count);
}

/// Processor side: whether task number `taken` (0-based) has been given to processor q.
__device__ __forceinline__ bool mailbox_ready(const Rank& r, unsigned q, unsigned taken) {
  return ld_acquire_gpu(&r.assigned()[q]) > taken;
}

/// Processor side: task number `taken` of processor q (after mailbox_ready).
__device__ __forceinline__ unsigned mailbox_take(const Rank& r, unsigned q, unsigned taken) {
  return r.mailbox()[2 * q + (taken & 1u)];
}

/// Processor side: `done` tasks of processor q have completed (their results published).
/// The store releases the processor's read of the task's mailbox slot, which the scheduler
/// overwrites once it sees the count (core's `Mailbox::complete`; the results themselves are
/// published by their own releases: a signal, a ready flag or a counter). `fenced`: the calling
/// thread ran a fence at GPU scope or wider after it took the task (acquired its ring slot, which
/// the producer filled after reading the mailbox slot) -- fence_for before a row-tile count, or
/// signal_to's fence. The count is then a relaxed store: with that fence it is a release
/// pattern, and it does not wait on a second MEMBAR for the atomic or signal just issued
/// (run 130: Qwen3, OLMoE and T16384 E8 -0.8%, perf-notes v39 (a)). Otherwise st.release.gpu.
/// core's loom model checks both forms (runtime/mailbox.rs `loom_fenced_relaxed_completion`).
__device__ __forceinline__ void mailbox_complete(const Rank& r, unsigned q, unsigned done, bool fenced) {
  if (fenced) {
    st_relaxed_gpu(&r.completed()[q], done);
  } else {
    st_release_gpu(&r.completed()[q], done);
  }
}

/// Processor side: waits for task number `taken` of processor q: its task index, or kStop
/// when the scheduler stopped it, the launch aborted, or the wait timed out (recorded).
__device__ unsigned mailbox_wait(const Rank& r, unsigned q, unsigned taken, Deadline& deadline) {
  for (;;) {
    if (mailbox_ready(r, q, taken)) {
      deadline.progress();
      return mailbox_take(r, q, taken);
    }
    if (aborted(r.p)) return kStop;
    if (deadline.expired()) {
      report_timeout(r, FDM_ROLE_PROCESSOR, FDM_WAIT_MAILBOX, q, taken);
      return kStop;
    }
  }
}
