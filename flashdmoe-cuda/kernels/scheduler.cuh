// scheduler.cuh -- the OS block's scheduler warp (core's `runtime::Scheduler`): hands the
// ready prefixes of the task log's two parts to processors with a free mailbox slot,
// round-robin, ready combines before GEMM tasks (a combine becomes ready long after the GEMM1
// tasks queued ahead of it: docs/dev/combine-overlap.md), and once the subscribers' bound of
// tasks has completed, gives every processor the stop word.
#pragma once

#include "mailbox.cuh"
#include "subscriber.cuh"

/// The scheduler's view of every processor at the start of a round: tasks outstanding at q in
/// s.busy[q]. The completion counts are loaded relaxed, kBatch a lane at once so their
/// latencies overlap, and one fence makes them acquire (a round used to wait for ~12 acquire
/// loads one after another: ~10 µs, longer than a short task; perf-notes v16).
__device__ void load_outstanding(const Rank& r, OsShared& s, unsigned nproc, unsigned lane) {
  constexpr unsigned kBatch = 8;
  const unsigned* completed = r.completed();
  for (unsigned q0 = 0; q0 < nproc; q0 += 32 * kBatch) {
    unsigned v[kBatch];
#pragma unroll
    for (unsigned j = 0; j < kBatch; ++j) {
      const unsigned q = q0 + 32 * j + lane;
      v[j] = q < nproc ? ld_relaxed_gpu(&completed[q]) : 0u;
    }
#pragma unroll
    for (unsigned j = 0; j < kBatch; ++j) {
      const unsigned q = q0 + 32 * j + lane;
      if (q < nproc) s.busy[q] = (unsigned char)(s.assigned[q] - v[j]);
    }
  }
  fence_acq_rel_gpu();
  __syncwarp();
}

/// Ready flags a scheduler round reads past each log's head.
constexpr unsigned kWindow = 128;
static_assert(kWindow % 32 == 0 && 2 * kWindow <= sizeof(OsShared::given_q) / sizeof(unsigned), "one slot a handout");

/// The length of the ready prefix from `head` (window entry 32 j + lane holds flag[j] of
/// slot head + 32 j + lane; slots at or past `end` are never ready).
__device__ __forceinline__ unsigned ready_prefix(const unsigned (&flag)[kWindow / 32], unsigned head, unsigned end,
                                                 unsigned epoch, unsigned lane) {
  unsigned n = 0;
#pragma unroll
  for (unsigned j = 0; j < kWindow / 32; ++j) {
    const bool ok = head + 32 * j + lane < end && flag[j] == epoch;
    const unsigned mask = __ballot_sync(0xFFFFFFFFu, ok);
    if (n == 32 * j) n += mask == 0xFFFFFFFFu ? 32u : __ffs(~mask) - 1u;
  }
  return n;
}

/// Warp 0: hands ready tasks to processors with a free mailbox slot (two slots each, so a
/// processor finds its next task the moment it finishes one); stops everyone at the bound.
/// A round: one batch of loads (ready flags, completion counts) and one fence, the handout in
/// shared memory, the round's slots, one fence and the assigned counts.
__device__ void scheduler(const Rank& r, OsShared& s) {
  const unsigned lane = threadIdx.x % 32;
  const unsigned epoch = r.epoch;
  const unsigned nproc = r.nproc;
  const unsigned* ready = r.task_ready();
  // The first wave (enqueue_in_place): the OS block posted GEMM log task gbase + q as
  // processor q's task number 0, for q < first_wave.
  const unsigned first_wave = s.first_wave;
  for (unsigned q = lane; q < nproc; q += 32) s.assigned[q] = q < first_wave ? 1u : 0u;
  __syncwarp();
  // The combine log is [0, ncomb) this forward; the GEMM log starts at gbase and ends at the
  // bound less the combines, once the dispatch subscriber knows it.
  const unsigned ncomb = fdm_div_ceil(r.p->tokens, kBM) * fdm_col_tiles_hidden(&r.p->layout);
  const unsigned gbase = (unsigned)fdm_gemm_log_base(&r.p->layout);
  unsigned chead = 0, head = gbase + first_wave;
  // While the bound is unknown the window may reach past the log: never past the flags'
  // array (its padding up to the next array is zero from allocation: never an epoch).
  const unsigned flags_end = (unsigned)((r.p->scratch_layout.trace - r.p->scratch_layout.task_ready) / 4);
  // Processors are scanned round-robin from `cursor` so load spreads evenly.
  unsigned cursor = first_wave % nproc;
  Deadline deadline(r.p->timeout_ns + r.p->timeout_ns / 4);
  for (;;) {
    const unsigned bound = *reinterpret_cast<volatile unsigned*>(&s.bound);
    const unsigned gend = bound == kStop ? kStop : gbase + (bound - ncomb);
    if (head == gend && chead == ncomb) break;
    // Ready tasks are a prefix of each log from its head (claimed in order; flags raised soon
    // after): up to kWindow combines, then up to kWindow GEMM tasks (a row tile's GEMM1s
    // arrive 8-32 at once, and short tasks need ~10 handouts a µs). Their flags load with the
    // completion counts, under load_outstanding's fence.
    unsigned cflag[kWindow / 32], flag[kWindow / 32];
#pragma unroll
    for (unsigned j = 0; j < kWindow / 32; ++j) {
      const unsigned cidx = chead + 32 * j + lane, idx = head + 32 * j + lane;
      cflag[j] = cidx < ncomb ? ld_relaxed_gpu(&ready[cidx]) : 0u;
      flag[j] = idx < min(gend, flags_end) ? ld_relaxed_gpu(&ready[idx]) : 0u;
    }
    load_outstanding(r, s, nproc, lane);
    const unsigned ncready = ready_prefix(cflag, chead, ncomb, epoch, lane);
    const unsigned nready = ncready + ready_prefix(flag, head, gend, epoch, lane);
    if (nready == 0) {
      if (warp_any(aborted(r.p))) return;
      if (warp_any(deadline.expired())) {
        const unsigned at = head < gend ? head : chead;  // the GEMM log first, else the combines
        if (lane == 0) {
          unsigned long long seen = ld_acquire_gpu(&ready[at]);
#ifdef FDM_DEBUG_COMBINE_TIMEOUT
          // A diagnostic (the mma.sync engine's open combine timeout, docs/dev/gpu-queue.md): a
          // combine never published. `seen` then names the first (group, column) combine
          // counter that differs from its expected count: bits 63..48 g * cth + col,
          // 47..32 the counter, 31..16 the group's expected count (return subscribers' shared
          // state), 15..0 the flag's low bits.
          if (at == chead && head == gend) {
            const fdm_layout& l = r.p->layout;
            const unsigned cth = fdm_col_tiles_hidden(&l), gt = s.group_tiles;
            const unsigned groups = fdm_div_ceil(fdm_div_ceil(r.p->tokens, kBM), gt);
            for (unsigned i = 0; i < groups * cth; ++i) {
              const unsigned c = ld_acquire_gpu(reinterpret_cast<const unsigned*>(
                  r.heap + fdm_combine_counter(&l, i / cth, i % cth)));
              const unsigned want = s.group_expected[i / cth];
              if (c != want) {
                seen = (unsigned long long)(i & 0xFFFFu) << 48 | (unsigned long long)(c & 0xFFFFu) << 32 |
                       (unsigned long long)(want & 0xFFFFu) << 16 | (seen & 0xFFFFu);
                break;
              }
            }
          }
#endif
          report_timeout(r, FDM_ROLE_SCHEDULER, FDM_WAIT_TASK_READY, at, seen);
        }
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
        const bool wants = base + lane < nproc && s.busy[q] <= pass;
        const unsigned wmask = __ballot_sync(0xFFFFFFFFu, wants);
        const unsigned rank_in = __popc(wmask & ((1u << lane) - 1u));
        if (wants && given + rank_in < nready) {
          const unsigned j = given + rank_in;
          const unsigned task = j < ncready ? chead + j : head + (j - ncready);
          mailbox_stage(r, q, s.assigned[q], task);
          s.assigned[q] += 1;
          s.busy[q] += 1;
          s.given_q[j] = q;
        }
        given = min(nready, given + __popc(wmask));
        __syncwarp();  // this chunk's shared-memory updates before the next chunk reads them
      }
    }
    if (given) {
      mailbox_publish(r, [&](unsigned j) { return s.given_q[j]; }, s.assigned, given, lane);
      const unsigned from_combine = min(given, ncready);
      chead += from_combine;
      head += given - from_combine;
      cursor = (cursor + given) % nproc;
      deadline.progress();
    } else if (warp_any(deadline.expired())) {
      if (lane == 0) report_timeout(r, FDM_ROLE_SCHEDULER, FDM_WAIT_PROCESSOR, head, 0);
      return;
    } else if (warp_any(aborted(r.p))) {
      return;
    }
  }
  // All tasks handed out: wait for their completion, then give every processor the stop word
  // (every slot first, then one fence and the counts, as in a round).
  const unsigned bound = s.bound;
  for (;;) {
    load_outstanding(r, s, nproc, lane);
    bool busy = false;
    for (unsigned q = lane; q < nproc; q += 32) busy |= s.busy[q] != 0;
    if (!__any_sync(0xFFFFFFFFu, busy)) break;
    if (warp_any(aborted(r.p))) return;
    if (warp_any(deadline.expired())) {
      unsigned done = 0;
      for (unsigned q = lane; q < nproc; q += 32) done += s.assigned[q] - s.busy[q];
      for (int o = 16; o > 0; o /= 2) done += __shfl_xor_sync(0xFFFFFFFFu, done, o);
      if (lane == 0) report_timeout(r, FDM_ROLE_SCHEDULER, FDM_WAIT_COMPLETION, bound, done);
      return;
    }
  }
  if (lane == 0) mark_latest(r, kStoppedNs);
  for (unsigned q = lane; q < nproc; q += 32) mailbox_stage(r, q, s.assigned[q]++, kStop);
  mailbox_publish(r, [](unsigned q) { return q; }, s.assigned, nproc, lane);
}
