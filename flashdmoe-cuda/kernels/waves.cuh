// waves.cuh -- what the OS block's first wave and the processors share (core's
// `runtime::Waves`): the packets read in place, in slot order, and the first wave's task of a
// processor derived from them. The OS block posts the waves (subscriber.cuh enqueue_in_place);
// under the experiment FDM_SELF_WAVE a processor of the first wave does not wait for that post:
// it derives its task number 0 from the placement, which every block sees after A3's grid
// barrier, and checks it against the post before it publishes anything (perf-notes v53 (a)).
//
// In core the waves are posted before any role runs (`RankState::post_waves`), so a processor
// finds word 0 at once there; the experiment brings the kernel to that model. The post took
// ~7 µs after placement on every one-GPU layer (run 202: T16384 E8 placed 34 µs, first wave
// posted 41, first task 42): the block's prefix of the packets' task counts, a claim's round
// trip, the wave's descriptors, a fence and the mailbox stores, while every processor waited.
#pragma once

#include "completion.cuh"
#include "dispatch.cuh"
#include "mailbox.cuh"
#include "queue.cuh"

/// Rows of the packet in in-place slot k (source rank first_rank + k / nle, local expert
/// k % nle), in the source's packet_rows since A3's grid barrier.
__device__ __forceinline__ unsigned in_place_rows(const Rank& r, unsigned k, unsigned nle) {
  return make_rank(r.p, k / nle).packet_rows()[r.expert_of(r.global, k % nle)];
}

#ifdef FDM_SELF_WAVE
constexpr bool kSelfWave = kHopper && kReadsInPlace;
#else
constexpr bool kSelfWave = false;
#endif

/// Experiment FDM_SELF_WAVE, by the 32 lanes of one warp of processor q (every lane returns
/// the same): processor q's first-wave task as enqueue_in_place posts it -- the q-th GEMM0 task
/// of the in-place packets in slot order, at GEMM log slot base + q (the OS block's claim for
/// them is the log's first) -- its descriptor in `t` (lane 0's is the one to use). kStop
/// where the processor takes no first-wave task (q past the packets' tasks or a remote copier)
/// or the OS block posts the wave in more than one chunk of its threads (other claims may fall
/// between its chunks): its mailbox gives it then.
__device__ unsigned own_first_task(const Rank& r, unsigned q, unsigned lane, fdm_task& t) {
  if constexpr (!kSelfWave) {
    return kStop;
  } else {
    const unsigned nle = r.p->local_experts_of[r.global];
    const unsigned nslots = r.p->local_ranks * nle;
    if (nslots > (unsigned)kThreads || q >= r.nproc - remote_copiers(r.p)) return kStop;
    const unsigned cti = fdm_col_tiles_inter(&r.p->layout);
    unsigned before = 0;  // the tasks of the slots before this group of 32
    for (unsigned k0 = 0; k0 < nslots; k0 += 32) {
      const unsigned k = k0 + lane;
      const unsigned rows = k < nslots ? in_place_rows(r, k, nle) : 0u;
      const unsigned own = fdm_div_ceil(rows, kBM) * cti;
      unsigned end = own;  // inclusive prefix of slot k's task counts within the group
#pragma unroll
      for (unsigned o = 1; o < 32; o *= 2) {
        const unsigned u = __shfl_up_sync(0xFFFFFFFFu, end, o);
        if (lane >= o) end += u;
      }
      end += before;
      const unsigned passed = __ballot_sync(0xFFFFFFFFu, end > q);
      if (passed != 0u) {
        const unsigned lo = (unsigned)__ffs(passed) - 1u;  // the first slot whose prefix passes q
        const unsigned first = __shfl_sync(0xFFFFFFFFu, end - own, lo);
        const unsigned slot_rows = __shfl_sync(0xFFFFFFFFu, rows, lo);
        const unsigned kk = k0 + lo;
        bool head;
        t = gemm0_task(r, r.p->first_rank + kk / nle, kk % nle, slot_rows, q - first, head);
        return (unsigned)fdm_gemm_log_base(&r.p->layout) + q;
      }
      before = __shfl_sync(0xFFFFFFFFu, end, 31);
    }
    return kStop;
  }
}

/// Experiment FDM_SELF_WAVE, by the thread that publishes processor q's first task (log slot
/// `index`) before anything it publishes: waits for the OS block's post of that task (acquire:
/// the words the OS block stored before the wave's fence -- kGemm1Early, kCombinesPosted, the
/// claim of the wave's slots -- are visible from here on, as they are to a processor that took
/// the task from its mailbox) and checks that the post is the task the processor derived.
/// False on an abort, a timeout or a mismatch (the last two recorded: FDM_WAIT_FIRST_WAVE, `seen`
/// the posted task on a mismatch, the mailbox's count on a timeout).
__device__ bool first_task_posted(const Rank& r, unsigned q, unsigned index, Deadline& deadline) {
  const auto posted_any = [](unsigned assigned) { return assigned > 0u; };
  if (!producer_await(r, &r.assigned()[q], posted_any, FDM_WAIT_FIRST_WAVE, q, deadline)) return false;
  const unsigned posted = mailbox_take(r, q, 0u);
  if (posted == index) return true;
  report_timeout(r, FDM_ROLE_PROCESSOR, FDM_WAIT_FIRST_WAVE, q, posted);
  return false;
}
