// scheduler.cuh -- the OS block's scheduler warp (core's `runtime::Scheduler`): hands the
// ready prefixes of the task log's two parts to processors with a free mailbox slot,
// round-robin, ready combines before GEMM tasks (a combine becomes ready long after the GEMM1
// tasks queued ahead of it: docs/dev/combine-overlap.md), and once the subscribers' bound of
// tasks has completed, gives every processor the stop word. With paired GEMM0 tasks
// (FDM_PAIRS) a round hands out by `handout_paired`: GEMM0 tasks two at a time to the two
// processors of one 2-CTA cluster (a pair, or two solo tasks side by side), so each cluster
// stays in step (docs/dev/paired-tasks.md).
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

/// Hands out ready entries first .. first + count - 1 of a round (entry j's task `entry(j)`),
/// one a processor: processors with nothing outstanding first, then those with one, round
/// robin from `cursor`, up to 32 a ballot (every lane passes the same arguments). `given(q)`
/// runs in the lane that gives processor q an entry. Returns how many went (a prefix of them);
/// s.given_q[j] holds entry j's processor.
template <class Entry, class Given>
__device__ __forceinline__ unsigned place_solo(const Rank& r, OsShared& s, unsigned nproc, unsigned cursor,
                                               unsigned first, unsigned count, unsigned lane, Entry entry,
                                               Given given) {
  unsigned placed = 0;
  for (unsigned pass = 0; pass < 2 && placed < count; ++pass) {
    for (unsigned base = 0; base < nproc && placed < count; base += 32) {
      const unsigned q = (cursor + base + lane) % nproc;
      const bool wants = base + lane < nproc && s.busy[q] <= pass;
      const unsigned wmask = __ballot_sync(0xFFFFFFFFu, wants);
      const unsigned rank_in = __popc(wmask & ((1u << lane) - 1u));
      if (wants && placed + rank_in < count) {
        const unsigned j = first + placed + rank_in;
        mailbox_stage(r, q, s.assigned[q], entry(j));
        s.assigned[q] += 1;
        s.busy[q] += 1;
        given(q);
        s.given_q[j] = q;
      }
      placed = min(count, placed + __popc(wmask));
      __syncwarp();  // this chunk's shared-memory updates before the next chunk reads them
    }
  }
  return placed;
}

#if FDM_PAIRS
/// Whether GEMM log slot `task` is marked in `bits` (OsShared::pair_head or gemm0, marked
/// before the slot's ready flag was released; read after the round's fence).
__device__ __forceinline__ bool marked(const unsigned* bits, unsigned task, unsigned gbase) {
  const unsigned i = task - gbase;
  return i < kPairSlots && ((bits[i / 32] >> (i % 32)) & 1u);
}

/// One round's handout in a layer with paired GEMM0 tasks (kPairs; docs/dev/paired-tasks.md,
/// core's runtime::Scheduler::hand_out_paired): the ready prefix (ncready combines, then GEMM
/// tasks, nready in all) in order, clusters kept in step by construction while they run GEMM0
/// tasks (perf-notes v43).
///
/// GEMM0 tasks go out in units of two entries: a pair (a marked head and its second, both
/// mailbox words kPairBit: the halves align at align_for_pair and read their column tile's
/// weights once), or two solo GEMM0 tasks side by side ("twins": adjacent tiles of one packet,
/// which run about as long), or one where neither fits (a GEMM0 task before a pair's head or
/// before a GEMM1 task). A cluster u (processors 2u + 1 and 2u + 2: blocks 2c, 2c + 1;
/// processor 0's peer is the OS block) takes a unit only when both its processors have room
/// (both idle in the first pass, both at most one outstanding in the second), so its two
/// processors start each unit within a round of each other and a pair's halves seldom wait;
/// the unpaired processors (0, and the last of an even count) take a unit when idle, both
/// entries in their two slots (a pair as two solo tasks). Each cluster's two mailboxes thus
/// hold its pairs in one order (what keeps align_for_pair's waits from deadlocking). Units in
/// log order, up to 32 a ballot, places round robin from `ucursor`.
///
/// Every other entry (combines, GEMM1 tasks) goes out as the unpaired handout does
/// (place_solo from `cursor`). A run that does not go out whole ends the round: the log is
/// handed out in order. Runs 151-153: pairs given to any cluster with room waited behind
/// unrelated tasks (DeepSeek-V3 -1.8%), pairs only to clusters both idle or in step never ran
/// (0 of 7232); run 154: every entry in units of two cost Qwen3's GEMM1 tasks 3x their gaps
/// (+12.8%). Returns the entries handed out (s.given_q holds their processors).
__device__ unsigned handout_paired(const Rank& r, OsShared& s, unsigned nproc, unsigned chead, unsigned head,
                                   unsigned gbase, unsigned ncready, unsigned nready, unsigned& cursor,
                                   unsigned& ucursor, unsigned lane) {
  const unsigned nclusters = (nproc - 1) / 2;
  const unsigned nplaces = nclusters + 1 + ((nproc - 1) & 1u);  // clusters, processor 0, an even count's last
  const auto entry = [&](unsigned j) { return j < ncready ? chead + j : head + (j - ncready); };
  const auto heads = [&](unsigned j) { return j >= ncready && nclusters > 0 && marked(s.pair_head, entry(j), gbase); };
  const auto twinned = [&](unsigned j) { return j >= ncready && nclusters > 0 && marked(s.gemm0, entry(j), gbase); };
  unsigned given = 0;
  while (given < nready) {
    // The next 64 entries' marks (ballots), then the run from `given`.
    const unsigned n = min(64u, nready - given);
    const unsigned long long hm = (unsigned long long)__ballot_sync(0xFFFFFFFFu, 32 + lane < n && heads(given + 32 + lane)) << 32 |
                                  __ballot_sync(0xFFFFFFFFu, lane < n && heads(given + lane));
    const unsigned long long tm = (unsigned long long)__ballot_sync(0xFFFFFFFFu, 32 + lane < n && twinned(given + 32 + lane)) << 32 |
                                  __ballot_sync(0xFFFFFFFFu, lane < n && twinned(given + lane));
    if (!(tm & 1ull)) {
      // Solo entries up to the next twinned one.
      const unsigned len = tm ? min(n, (unsigned)__ffsll((long long)tm) - 1u) : n;
      const unsigned placed = place_solo(r, s, nproc, cursor, given, len, lane, entry, [](unsigned) {});
      cursor = (cursor + placed) % nproc;
      given += placed;
      if (placed < len) break;
      continue;
    }
    // Units over the twinned entries from `given` (the same walk in every lane; lane k keeps
    // unit k's first entry, size and kind).
    unsigned units = 0, pos = 0, my_start = 0, my_size = 0;
    bool my_pair = false;
    while (units < 32 && pos < n && ((tm >> pos) & 1ull)) {
      const bool pair = (hm >> pos) & 1ull;
      if (pair && pos + 1 >= n) break;  // its second is not in the prefix yet
      const bool twin = pos + 1 < n && ((tm >> (pos + 1)) & 1ull) && !((hm >> (pos + 1)) & 1ull);
      const unsigned size = pair || twin ? 2u : 1u;
      if (lane == units) {
        my_start = pos;
        my_size = size;
        my_pair = pair;
      }
      pos += size;
      ++units;
    }
    if (units == 0) break;
    unsigned placed = 0;
    for (unsigned pass = 0; pass < 2 && placed < units; ++pass) {
      for (unsigned base = 0; base < nplaces && placed < units; base += 32) {
        const unsigned u = (ucursor + base + lane) % nplaces;
        const bool cluster = u < nclusters;
        const unsigned q0 = cluster ? 2 * u + 1 : u == nclusters ? 0u : nproc - 1, q1 = cluster ? q0 + 1 : q0;
        const bool wants = base + lane < nplaces && (cluster ? max(s.busy[q0], s.busy[q1]) <= pass : s.busy[q0] == 0);
        const unsigned wmask = __ballot_sync(0xFFFFFFFFu, wants);
        const unsigned k = placed + __popc(wmask & ((1u << lane) - 1u));
        const unsigned start = __shfl_sync(0xFFFFFFFFu, my_start, k % 32);
        const unsigned size = __shfl_sync(0xFFFFFFFFu, my_size, k % 32);
        const bool pair = __shfl_sync(0xFFFFFFFFu, my_pair, k % 32) && cluster;
        if (wants && k < units) {
          for (unsigned h = 0; h < size; ++h) {
            // Twins and a pair one entry a processor; one entry to the less busy; a solo place both.
            const unsigned q = size == 1 ? (s.busy[q1] < s.busy[q0] ? q1 : q0) : h ? q1 : q0;
            const unsigned j = given + start + h;
            mailbox_stage(r, q, s.assigned[q], entry(j) | (pair ? kPairBit : 0u));
            s.assigned[q] += 1;
            s.busy[q] += 1;
            s.given_q[j] = q;
          }
        }
        placed = min(units, placed + __popc(wmask));
        __syncwarp();
      }
    }
    ucursor = (ucursor + placed) % nplaces;
    given += placed == units ? pos : __shfl_sync(0xFFFFFFFFu, my_start, placed % 32);
    if (placed < units) break;
  }
  return given;
}
#endif

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
  // processor q's task number 0, for q < first_wave; the second (post_gemm1_early), GEMM log
  // task gbase + first_wave + q as its task number 1, for q < second_wave.
  const unsigned second_wave = s.second_wave;
  const unsigned first_wave = s.first_wave;
  // The third (post_combines): processor q < third_wave posts combine log slot q as its own
  // task number 2; the combine log is theirs.
  const unsigned third_wave = s.third_wave;
  for (unsigned q = lane; q < nproc; q += 32)
    s.assigned[q] = (q < first_wave ? 1u : 0u) + (q < second_wave ? 1u : 0u) + (q < third_wave ? 1u : 0u);
  __syncwarp();
  // The combine log is [0, ncomb) this forward; the GEMM log starts at gbase and ends at the
  // bound less the combines, once the dispatch subscriber knows it.
  const unsigned ncomb = combine_count(r);
  const unsigned gbase = (unsigned)fdm_gemm_log_base(&r.p->layout);
  unsigned chead = third_wave, head = gbase + first_wave + second_wave;
  // While the bound is unknown the window may reach past the log: never past the flags'
  // array (its padding up to the next array is zero from allocation: never an epoch).
  const unsigned flags_end = (unsigned)((r.p->scratch_layout.trace - r.p->scratch_layout.task_ready) / 4);
  // Processors are scanned round-robin from `cursor` so load spreads evenly (with paired
  // tasks, clusters and the unpaired processors from `ucursor`).
  unsigned cursor = first_wave % nproc;
  unsigned ucursor = 0;
  (void)ucursor;
  Deadline deadline(r.p->timeout_ns + r.p->timeout_ns / 4);
  bool handed = false;  // a round has handed out tasks (kFirstHandoutNs marked)
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
    // task each, second pass fills second slots (with paired tasks: handout_paired).
    unsigned given = 0;
#if FDM_PAIRS
    given = handout_paired(r, s, nproc, chead, head, gbase, ncready, nready, cursor, ucursor, lane);
#else
    given = place_solo(
        r, s, nproc, cursor, 0, nready, lane,
        [&](unsigned j) { return j < ncready ? chead + j : head + (j - ncready); }, [](unsigned) {});
#endif
    if (given) {
      mailbox_publish(r, [&](unsigned j) { return s.given_q[j]; }, s.assigned, given, lane);
      if (lane == 0 && !handed) mark_latest(r, kFirstHandoutNs);
      handed = true;
      const unsigned from_combine = min(given, ncready);
      if (lane == 0 && from_combine != 0) mark_latest(r, kCombinesHandedNs);
      chead += from_combine;
      head += given - from_combine;
      if (!kPairs) cursor = (cursor + given) % nproc;
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
