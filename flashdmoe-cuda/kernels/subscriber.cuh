// subscriber.cuh -- the OS block's subscribers (core's `runtime::Subscriber`): before the roles
// split, the whole OS block turns the packets read in place into their GEMM0 tasks and posts
// the first wave (enqueue_in_place); then warp 1 watches the rank's other dispatch signals,
// turns each arrived packet into its GEMM0 tasks and publishes the exact task bound (in core
// the scheduler computes it from the same counts: docs/kernel.md, "core name -> kernel
// name"); warps 2.. watch the return signals of the tiles
// the rank is owed and turn each complete (readiness group, output column) into its combine
// tasks (flashdmoe_proto::graph, "CombineReadiness"; docs/dev/combine-overlap.md).
//
// A packet's row tiles complete in token order, so the first token tiles of the last expert
// combine while its later row tiles are still in GEMM1. (Publishing every packet's row tile 0,
// then every row tile 1, ... would complete all token tiles in order, but it spreads a wave of
// tasks over every expert's weights, which then no longer stay in L2: every GEMM task ran
// 20-50% slower, run 27, docs/dev/perf-notes.md v12.)
#pragma once

#include "dispatch.cuh"
#include "mailbox.cuh"
#include "queue.cuh"
#include "waves.cuh"

struct OsShared {
  unsigned packet_rows[kE];      // rows this rank sent to each expert
  unsigned bound;                // tasks this rank runs; kStop until known
  unsigned enqueue_base[kWarps]; // per-warp base of the log slots claim() took
  unsigned assigned[1024];       // scheduler's copy of each processor's mailbox `assigned` count
  unsigned char busy[1024];      // scheduler: tasks outstanding at each processor (this round)
  unsigned given_q[256];         // scheduler: the processors of this round's handouts, in order
  unsigned handled[(FDM_MAX_RANKS * kE + 31) / 32];  // dispatch slots already turned into tasks
  // The packets read in place, enqueued by the whole OS block at once (enqueue_in_place): how
  // many dispatch slots and row tiles they hold, and the first wave: GEMM log tasks
  // base .. base + first_wave - 1, posted to processors 0 .. first_wave - 1 by the OS block.
  unsigned in_place_slots;
  unsigned in_place_row_tiles;
  unsigned first_wave;
  // The second wave: GEMM log tasks base + first_wave .. + second_wave - 1, GEMM1 tasks posted
  // to processors 0 .. second_wave - 1 as their task number 1 (post_gemm1_early); 0 otherwise.
  unsigned second_wave;
  // The third wave: the combine tasks written at fixed slots with the second wave
  // (post_combines), processors 0 .. third_wave - 1's task number 2; 0 otherwise.
  unsigned third_wave;
  unsigned slot_end[kThreads];   // enqueue_in_place: inclusive prefix of a chunk's task counts
  unsigned slot_rows[kThreads];  // enqueue_in_place: a chunk's packet rows
  // The combine readiness (return subscribers): token tiles per group, and the returned tiles
  // of one column each group waits for.
  unsigned group_tiles;
  unsigned group_expected[FDM_MAX_COMBINE_GROUPS];
  // Paired GEMM0 tasks (kPairs): bit i of pair_head marks GEMM log slot base + i as the head of
  // a pair, bit i of gemm0 as a GEMM0 task (mark_slot), both set before the slot's ready flag
  // is released; the scheduler reads them after the round's fence (scheduler.cuh
  // handout_paired).
  unsigned pair_head[kPairSlots / 32];
  unsigned gemm0[kPairSlots / 32];
};
static_assert(sizeof(OsShared) <= FDM_SMEM_BYTES, "the OS block's state lives in dynamic shared memory");

/// The OS block's second act (after enqueue_in_place): raise this rank's dispatch signals for
/// the packets nobody copies (zero-row packets, and with kReadsInPlace every packet for an
/// expert on this GPU: its rows are the rank's input, complete since A3's grid barrier; A4's
/// copiers raise the others as their packets complete) and remember the packet sizes. The
/// owners of packets read in place enqueued them already and never wait for these signals;
/// they are raised all the same, so every packet of a forward is signalled.
/// By `count` threads of the block (thread `tid` of them takes every count-th expert; whole
/// warps: every warp but the scheduler's), which then meet at named barrier 2; the scheduler
/// warp reads no packet_rows and goes on.
__device__ void raise_dispatch_signals_by(const Rank& r, OsShared& s, unsigned tid, unsigned count) {
  for (unsigned e = tid; e < (unsigned)kE; e += count) {
    const unsigned rows = r.packet_rows()[e];
    s.packet_rows[e] = rows;
    if (rows == 0 || (kReadsInPlace && on_this_gpu(r.p, r.p->expert_owner[e]))) raise_dispatch_signal(r, e, rows);
  }
  asm volatile("bar.sync 2, %0;" ::"r"(count) : "memory");
}

/// Marks GEMM log slot `slot` in `bits` (OsShared::pair_head or gemm0; kPairs; before its
/// ready flag's release). A slot past the marks' reach stays unmarked: a pair there runs as two
/// solo tasks, a GEMM0 task goes out as a GEMM1 task does.
__device__ __forceinline__ void mark_slot(const Rank& r, unsigned* bits, unsigned slot) {
  const unsigned i = slot - (unsigned)fdm_gemm_log_base(&r.p->layout);
  if (i < kPairSlots) atomicOr(&bits[i / 32], 1u << (i % 32));
}

/// Task i of a packet's GEMM0 tasks (gemm0_task) for GEMM log slot `slot`, its marks set.
__device__ __forceinline__ fdm_task gemm0_task_at(const Rank& r, OsShared& s, unsigned slot, unsigned source,
                                                  unsigned le, unsigned rows, unsigned i) {
  bool head;
  const fdm_task t = gemm0_task(r, source, le, rows, i, head);
  if (kPairs) {
    mark_slot(r, s.gemm0, slot);
    if (head) mark_slot(r, s.pair_head, slot);
  }
  return t;
}

/// The block's inclusive prefix sum of every thread's `v` (in thread order), and in `total`
/// their sum: a warp scan, the warps' totals through `warp_sums` (kWarps words of shared
/// memory), one block barrier. Every thread of the block calls it; `warp_sums` is free again
/// only after the caller's next block barrier.
__device__ __forceinline__ unsigned block_prefix(unsigned v, unsigned* warp_sums, unsigned& total) {
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (unsigned o = 1; o < 32; o *= 2) {
    const unsigned u = __shfl_up_sync(0xFFFFFFFFu, v, o);
    if (lane >= o) v += u;
  }
  if (lane == 31) warp_sums[warp] = v;
  __syncthreads();
  total = 0;
  for (unsigned w = 0; w < (unsigned)kWarps; ++w) {
    if (w < warp) v += warp_sums[w];
    total += warp_sums[w];
  }
  return v;
}

/// The slot holding entry `j` of a chunk whose slots end at the inclusive prefix `ends`
/// (kThreads entries, block_prefix's): the first slot whose prefix passes j (a binary search).
__device__ __forceinline__ unsigned slot_of(const unsigned* ends, unsigned j) {
  unsigned lo = 0, hi = kThreads - 1;
  while (lo < hi) {
    const unsigned mid = (lo + hi) / 2;
    if (ends[mid] > j) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/// GEMM1 task (row tile `tile` of the layer, column c) of enqueue_in_place's one chunk, whose
/// in-place slots hold the layer's row tiles in slot order (`s.slot_end`: the inclusive prefix
/// of their GEMM0 task counts, a slot's being its row tiles x cti; `s.slot_rows`: their rows).
__device__ __forceinline__ fdm_task in_place_gemm1(const Rank& r, const OsShared& s, unsigned nle, unsigned cti,
                                                   unsigned tile, unsigned c) {
  const unsigned lo = slot_of(s.slot_end, tile * cti);
  const unsigned rt = tile - (lo == 0 ? 0u : s.slot_end[lo - 1] / cti);
  return make_task(r, FDM_TASK_GEMM1, r.p->first_rank + lo / nle, r.global, lo % nle, rt, c,
                   fdm_tile_rows(s.slot_rows[lo], rt, kBM));
}

/// The second wave (perf-notes v47 (e), v48 (b); run 182: T128 E8 -3%, E16 -4%), after
/// enqueue_in_place's one chunk put every GEMM0 task of the layer into the first wave
/// (`s.slot_rows[k]`: in-place slot k's rows; `s.slot_end`: the chunk's inclusive prefix of
/// their GEMM0 task counts; `wave`: those tasks, processor q's task number 0 being GEMM log task
/// base0 + q): the GEMM1 tasks of all their row tiles go into the GEMM log
/// now, right behind them, in (slot, row tile, column) order (the forward marked by queue.cuh
/// gemm1_posted_early, stored before the first wave), and the first `wave` of them are posted
/// as task number 1 of the same processors: processor q gets GEMM1 task q, of its own GEMM0's
/// row tile where both GEMMs have as many column tiles. A producer hands such a task on to its
/// consumers the moment the row tile's last GEMM0 is counted (completion.cuh
/// row_tile_counted), where the completing processor's claim, its descriptors' release, a
/// scheduler round and the mailbox took 5-7 µs (run 177, T128 E8). Left to the scheduler (run
/// 181), its first round gave some processors two of them and others none: GEMM1's span
/// widened (E16 62-98 -> 57-104 µs). No deadlock: every GEMM0 such a task waits for is some
/// processor's task number 0, and a producer takes its next task only once it has issued its
/// current task's loads. All of the block's threads.
__device__ void post_gemm1_early(const Rank& r, OsShared& s, unsigned nle, unsigned wave) {
  const fdm_layout& l = r.p->layout;
  const unsigned cti = fdm_col_tiles_inter(&l), cth = fdm_col_tiles_hidden(&l);
  // A slot's GEMM0 tasks are its row tiles x cti, so the chunk's prefix of them (s.slot_end)
  // is the row tiles' prefix x cti, and the GEMM1 tasks are the row tiles x cth.
  const unsigned n = wave / cti * cth;
  __shared__ unsigned s_base1;
  if (threadIdx.x == 0) s_base1 = claim(r, n);
  __syncthreads();
  const unsigned base = s_base1;
  for (unsigned j = threadIdx.x; j < n; j += kThreads) {
    r.tasks()[base + j] = in_place_gemm1(r, s, nle, cti, j / cth, j % cth);
    if (j < wave) mailbox_stage(r, j, 1u, base + j);
  }
  fence_acq_rel_gpu();
  for (unsigned j = threadIdx.x; j < n; j += kThreads) {
    st_relaxed_gpu(&r.task_ready()[base + j], r.epoch);
    if (j < wave) mailbox_publish_own(r, j, 2u);
  }
  if (threadIdx.x == 0) {
    s.second_wave = min(n, wave);
    r.control()[kSecondWave] = s.second_wave;  // for the host (PhaseTimes::second_wave)
  }
  __syncthreads();
}

/// The third wave (perf-notes v48 (d), v49 (a); run 184: T128 E8 and E16 -4%), after
/// post_gemm1_early where enqueue_in_place marked the forward (queue.cuh combines_posted):
/// every combine task of the forward, (token tile tt, column c) at combine log slot
/// tt * cth + c, without its ready flag (the return subscriber completing its (group, column)
/// raises it). Processor q < ncomb posts slot q as its own task number 2 (processor_wgmma.cuh
/// report_task): every such processor holds a first- and a second-wave task, so its mailbox
/// has room for exactly that one. The combines' claim, descriptors, scheduler round and
/// mailbox hop (run 184: 8 µs from the last GEMM1 to the last combine's start at E8) become
/// a flag the producer polls (4 µs). All of the block's threads.
__device__ void post_combines(const Rank& r, OsShared& s) {
  const unsigned cth = fdm_col_tiles_hidden(&r.p->layout), ncomb = combine_count(r);
  for (unsigned j = threadIdx.x; j < ncomb; j += kThreads) {
    const unsigned tt = j / cth;
    r.tasks()[j] = make_task(r, FDM_TASK_COMBINE, r.global, r.global, 0, tt, j % cth, fdm_tile_rows(r.p->tokens, tt, kBM));
  }
  if (threadIdx.x == 0) {
    s.third_wave = ncomb;
    r.control()[kThirdWave] = ncomb;  // for the host (PhaseTimes::third_wave)
  }
}

/// The OS block's first act, by all its threads, before the roles split: the GEMM0 tasks of
/// every packet read in place (sources on this GPU; their sizes in the sources' packet_rows
/// since A3's grid barrier) go into the GEMM log at once, in (source, local expert) order, and
/// the first of them, one a processor, are posted in the processors' mailboxes as their task
/// number 0 by the same threads (the first wave: processor q < first_wave runs GEMM log task
/// base + q; the scheduler starts past them; A4's remote copiers get none). The dispatch subscriber's hop for these packets
/// (a signal, a claim and a release a packet) and the scheduler's first round took 7-10 µs
/// between placement and the first task (docs/dev/perf-notes.md v35). Under the experiment
/// FDM_SELF_WAVE the wave's processors derive their tasks from the placement themselves and do
/// not wait for this post; they check it before publishing (waves.cuh).
__device__ void enqueue_in_place(const Rank& r, OsShared& s) {
  const fdm_layout& l = r.p->layout;
  for (unsigned w = threadIdx.x; w < (FDM_MAX_RANKS * kE + 31) / 32; w += kThreads) s.handled[w] = 0u;
  if (kPairs) {
    for (unsigned w = threadIdx.x; w < kPairSlots / 32; w += kThreads) s.pair_head[w] = s.gemm0[w] = 0u;
  }
  if (threadIdx.x == 0) {
    s.bound = kStop;
    s.in_place_row_tiles = 0;
  }
  __syncthreads();
  const unsigned nle = r.p->local_experts_of[r.global];
  // Packets from this GPU's sources are complete at A3's grid barrier where the engine reads
  // them in place (config.cuh kReadsInPlace); otherwise A4 copies them and they are signalled.
  const unsigned nslots = kReadsInPlace ? r.p->local_ranks * nle : 0u;
  const unsigned cti = fdm_col_tiles_inter(&l);
  const unsigned lane = threadIdx.x % 32;
  __shared__ unsigned warp_sums[kWarps];
  __shared__ unsigned s_base;
  // Processors that take a first-wave task: not the ones copying rows to other GPUs in A4
  // (dispatch.cuh remote_copiers), which come to their mailbox late; the scheduler feeds them.
  // With paired tasks the first wave runs solo (a pair's mark is an optimisation: a pair's
  // halves in the first wave run as two solo tasks; the scheduler's first entry may then be a
  // pair's second half, which it sees as solo; run 151: no first wave cost T4096 E128 16 µs).
  const unsigned wave_procs = r.nproc - remote_copiers(r.p);
  unsigned total = 0;  // tasks enqueued so far (the same in every thread)
  bool early = false;  // every in-place GEMM0 task in the first wave: the second wave follows
  bool third = false;  // and a combine task for each of the first ncomb processors: the third
  for (unsigned c0 = 0; c0 < nslots; c0 += kThreads) {
    // In-place slot k: source first_rank + k / nle (the local rank k / nle), local expert k % nle.
    const unsigned k = c0 + threadIdx.x;
    unsigned rows = 0;
    if (k < nslots) {
      rows = in_place_rows(r, k, nle);
      const unsigned slot = (r.p->first_rank + k / nle) * nle + k % nle;  // the subscriber's index
      atomicOr(&s.handled[slot / 32], 1u << (slot % 32));
    }
    const unsigned rts = fdm_div_ceil(rows, kBM);
    unsigned tiles = rts;
    for (int o = 16; o > 0; o /= 2) tiles += __shfl_xor_sync(0xFFFFFFFFu, tiles, o);
    if (lane == 0) atomicAdd(&s.in_place_row_tiles, tiles);
    // Block-wide inclusive prefix of the slots' task counts.
    unsigned chunk;
    s.slot_end[threadIdx.x] = block_prefix(rts * cti, warp_sums, chunk);
    s.slot_rows[threadIdx.x] = rows;
    // `whole`: one chunk holds every packet of the layer (all sources on this GPU); `early`:
    // and all its GEMM0 tasks are in the first wave, so nothing a GEMM1 task waits for sits
    // behind it in any mailbox (post_gemm1_early). Marked before the barrier, so before every
    // thread's fence and the wave's release.
    const bool whole = kHopper && !kPairs && nslots <= (unsigned)kThreads && l.world == r.p->local_ranks && chunk != 0;
    early = whole && chunk <= wave_procs;
    if (threadIdx.x == 0 && early) st_relaxed_gpu(&r.control()[kGemm1Early], r.epoch);
    // Every GEMM1 task in the second wave (row tiles x cth <= the first wave's chunk), so the
    // scheduler hands out nothing a gated combine waits for: it could otherwise post such a
    // GEMM1 behind the combine in the same mailbox (a deadlock found by core's model of the
    // waves: the simulator's proptest at H > I, perf-notes v50 (e)). And every processor that
    // takes a combine holds a first- and a second-wave task: ncomb at most the GEMM1 tasks.
    const unsigned gemm1 = chunk / cti * fdm_col_tiles_hidden(&l);
    third = early && gemm1 <= chunk && combine_count(r) <= gemm1;
    if (threadIdx.x == 0 && third) st_relaxed_gpu(&r.control()[kCombinesPosted], r.epoch);
    if (threadIdx.x == 0 && chunk != 0) s_base = claim(r, chunk);
    __syncthreads();
    // Task j of the chunk belongs to the first slot whose prefix passes j (a binary search
    // over the chunk's prefix); every thread writes a share. The first wave first (the
    // forward's in-place tasks g < wave_procs, processor g's task number 0): its descriptors and
    // mailbox slots, one fence, its ready flags and `assigned` counts (the mailbox's release
    // pattern, mailbox.cuh); then the rest, one fence and their flags. Descriptors take ~1-2
    // µs a thread each (their offsets' arithmetic): run 113 wrote all 2048 of T16384 E8's
    // before the first wave and its first task came 10 µs later than the subscriber's.
    const unsigned base = s_base;
    auto write = [&](unsigned j) {
      const unsigned lo = slot_of(s.slot_end, j);
      const unsigned kk = c0 + lo, first = lo == 0 ? 0u : s.slot_end[lo - 1];
      r.tasks()[base + j] = gemm0_task_at(r, s, base + j, r.p->first_rank + kk / nle, kk % nle, s.slot_rows[lo], j - first);
    };
    const unsigned wave = total < wave_procs ? min(chunk, wave_procs - total) : 0u;
    for (unsigned j = threadIdx.x; j < wave; j += kThreads) {
      write(j);
      mailbox_stage(r, total + j, 0u, base + j);
    }
    fence_acq_rel_gpu();
    for (unsigned j = threadIdx.x; j < wave; j += kThreads) {
      st_relaxed_gpu(&r.task_ready()[base + j], r.epoch);
      mailbox_publish_own(r, total + j, 1u);
    }
    if (threadIdx.x % 32 == 0 && threadIdx.x < wave) mark_latest(r, kWavePostedNs);  // a warp's first
    for (unsigned j = wave + threadIdx.x; j < chunk; j += kThreads) write(j);
    fence_acq_rel_gpu();
    for (unsigned j = wave + threadIdx.x; j < chunk; j += kThreads) st_relaxed_gpu(&r.task_ready()[base + j], r.epoch);
    total += chunk;
    __syncthreads();  // slot_end, slot_rows, warp_sums and s_base are the next chunk's
  }
  if (threadIdx.x == 0) s.second_wave = 0u;
  if (early) post_gemm1_early(r, s, nle, total);  // one chunk: total is its wave
  if (threadIdx.x == 0) s.third_wave = 0u;
  if (third) post_combines(r, s);
  if (threadIdx.x == 0) {
    s.in_place_slots = nslots;
    s.first_wave = min(total, wave_procs);
    r.control()[kFirstWave] = s.first_wave;  // for the host (PhaseTimes::first_wave)
  }
  __syncthreads();
}

/// Warp 1: watch every (source, local expert) dispatch signal of this rank; enqueue each
/// arrived packet's GEMM0 tasks; publish the exact task bound once all have arrived.
// Rank by value: a reference would put it on the stack when the call is not inlined.
FDM_OS_ROLE void dispatch_subscriber(const Rank r, OsShared& s) {
  const fdm_layout& l = r.p->layout;
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const unsigned nle = r.p->local_experts_of[r.global];
  const unsigned slots = l.world * nle;
  const unsigned epoch = r.epoch;
  // The packets read in place are enqueued already (enqueue_in_place; marked handled).
  unsigned long long row_tiles = s.in_place_row_tiles;
  unsigned remaining = slots - s.in_place_slots;
  Deadline deadline(r.p->timeout_ns);
  // Arrival bitmap: bit i of done[i / 32] marks slot i (the warp sweeps 32 slots a step).
  for (unsigned base = 0; remaining > 0; base = base + 32 >= slots ? 0 : base + 32) {
    const unsigned slot = base + lane;
    unsigned rows = 0;
    bool arrived = false;
    unsigned long long seen = 0;
    if (slot < slots) {
      const unsigned source = slot / nle, le = slot % nle;
      const unsigned long long* sig =
          reinterpret_cast<const unsigned long long*>(r.heap + fdm_dispatch_signal(&l, source, le));
      seen = ld_acquire_sys(sig);
      arrived = fdm_signal_epoch(seen) == epoch;
      rows = fdm_signal_payload(seen);
    }
    // Slots already turned into tasks (one bit each; this warp is the only writer).
    unsigned* handled = &s.handled[base / 32];
    const unsigned already = *reinterpret_cast<volatile unsigned*>(handled);
    const bool fresh = arrived && !((already >> lane) & 1u);
    unsigned mask = __ballot_sync(0xFFFFFFFFu, fresh);
    if (mask == 0) {
      const bool stop = warp_any(aborted(r.p));
      if (stop || warp_any(deadline.expired())) {
        if (!stop) {
          // Name the first slot still pending in this sweep (or the sweep start).
          const unsigned pend = __ballot_sync(0xFFFFFFFFu, slot < slots && !arrived);
          const unsigned who = pend ? base + __ffs(pend) - 1 : base;
          const unsigned long long who_seen = __shfl_sync(0xFFFFFFFFu, seen, pend ? __ffs(pend) - 1 : 0);
          if (lane == 0) report_timeout(r, FDM_ROLE_DISPATCH_SUBSCRIBER, FDM_WAIT_DISPATCH_SIGNAL, who, who_seen);
        }
        return;
      }
      continue;
    }
    deadline.progress();
    if (lane == 0) *handled = already | mask;
    while (mask) {
      const unsigned src_lane = __ffs(mask) - 1;
      mask &= mask - 1;
      const unsigned pslot = base + src_lane;
      const unsigned prows = __shfl_sync(0xFFFFFFFFu, rows, src_lane);
      // Corrupt signal: typed error, never an out-of-bounds task (the layout's capacity: a peer
      // GPU of more tokens this forward may send more rows than this GPU's p->capacity).
      if (prows > l.capacity) {
        if (lane == 0) report_timeout(r, FDM_ROLE_DISPATCH_SUBSCRIBER, FDM_WAIT_CORRUPT_SIGNAL, pslot, prows);
        return;
      }
      const unsigned source = pslot / nle, le = pslot % nle;
      const unsigned rts = fdm_div_ceil(prows, kBM);
      row_tiles += rts;
      const unsigned count = rts * fdm_col_tiles_inter(&l);
      if (lane == 0 && count) s.enqueue_base[warp] = claim(r, count);
      __syncwarp();
      if (count) {
        const unsigned first = s.enqueue_base[warp];
        publish(r, first, count, lane, 32,
                [&](unsigned i) { return gemm0_task_at(r, s, first + i, source, le, prows, i); });
      }
      __syncwarp();
      --remaining;
    }
  }
  if (lane == 0) *reinterpret_cast<volatile unsigned*>(&s.bound) = (unsigned)fdm_task_bound(&l, row_tiles, r.p->tokens);
}

/// The tiles a rank is owed, flattened in the order GEMM1 completes them on one GPU: expert by
/// expert (the dispatch subscriber publishes a packet's GEMM0 tasks row tile by row tile, or in
/// column groups, which complete its row tiles about together),
/// `width` entries per row tile (the output columns, or 1). A cursor moves forward only
/// (`seek` with increasing indices).
struct OwedCursor {
  unsigned expert;          // the expert of the current entries
  unsigned long long base;  // flattened index of its first entry

  __device__ OwedCursor() : expert(0), base(0) {}
  /// Moves to the expert holding entry `i`; false past the last entry.
  __device__ bool seek(const OsShared& s, unsigned long long i, unsigned width) {
    while (expert < (unsigned)kE &&
           i >= base + (unsigned long long)fdm_div_ceil(s.packet_rows[expert], kBM) * width) {
      base += (unsigned long long)fdm_div_ceil(s.packet_rows[expert], kBM) * width;
      ++expert;
    }
    return expert < (unsigned)kE;
  }
  /// Entry `i`'s row tile (after a successful seek; its column is `(i - base) % width`).
  __device__ unsigned row_tile(unsigned long long i, unsigned width) const { return (unsigned)((i - base) / width); }
};

/// Named barrier 1 among the return subscribers' `count` threads (the OS block's other warps
/// never wait on it).
__device__ __forceinline__ void return_subscribers_sync(unsigned count) {
  asm volatile("bar.sync 1, %0;" ::"r"(count) : "memory");
}

/// The return subscribers' set-up (all their threads, `tid` of `count`): the group size, and
/// per group the returned tiles of one column it waits for: SourcePlan::combine_readiness over
/// this forward's routing.
__device__ void owed_readiness(const Rank& r, OsShared& s, unsigned tid, unsigned count, unsigned token_tiles) {
  const fdm_layout& l = r.p->layout;
  for (unsigned g = tid; g < fdm_combine_groups_max(&l); g += count) s.group_expected[g] = 0u;
  if (tid < 32) {
    unsigned packets = 0;
    unsigned long long row_tiles = 0;
    for (unsigned e = tid; e < (unsigned)kE; e += 32) {
      packets += s.packet_rows[e] != 0u;
      row_tiles += fdm_div_ceil(s.packet_rows[e], kBM);
    }
    for (int o = 16; o > 0; o /= 2) {
      packets += __shfl_xor_sync(0xFFFFFFFFu, packets, o);
      row_tiles += __shfl_xor_sync(0xFFFFFFFFu, row_tiles, o);
    }
    if (tid == 0) s.group_tiles = fdm_combine_group_tiles(token_tiles, packets, row_tiles);
  }
  return_subscribers_sync(count);
  // Each owed row tile counts once in every group from its first token's to its last's.
  const unsigned gt = s.group_tiles;
  OwedCursor cur;
  for (unsigned long long i = tid; cur.seek(s, i, 1); i += count) {
    const unsigned e = cur.expert, rt = cur.row_tile(i, 1);
    const unsigned row0 = rt * kBM;
    const unsigned rows = fdm_tile_rows(s.packet_rows[e], rt, kBM);
    const unsigned* tokens = r.expert_tokens() + (unsigned long long)e * l.capacity;
    const unsigned g0 = tokens[row0] / kBM / gt, g1 = tokens[row0 + rows - 1] / kBM / gt;
    for (unsigned g = g0; g <= g1; ++g) atomicAdd(&s.group_expected[g], 1u);
  }
  return_subscribers_sync(count);
}

/// Warps 2..: watch the return signals of every tile this rank is owed; count each arrival
/// in the (group, column) counters of the groups its row tile spans; when one is complete,
/// enqueue the combine tasks of the group's token tiles in that column (the combine log).
FDM_OS_ROLE void return_subscriber(const Rank r, OsShared& s, unsigned sub, unsigned nsub) {
  const fdm_layout& l = r.p->layout;
  const unsigned lane = threadIdx.x % 32;
  const unsigned epoch = r.epoch;
  const unsigned cth = fdm_col_tiles_hidden(&l);
  const unsigned token_tiles = fdm_div_ceil(r.p->tokens, kBM);  // this forward's
  // Groups follow the layout's token tiles (as SourcePlan::combine_readiness does), so a
  // forward of fewer tokens groups like a full one; its missing tiles have no tasks.
  owed_readiness(r, s, sub * 32 + lane, nsub * 32, l.token_tiles);
  const unsigned gt = s.group_tiles;
  const unsigned groups = fdm_div_ceil(token_tiles, gt);
  // Enqueues, by the whole warp, the combine tasks of every (group g, column c) a lane has
  // completed (`complete`): one claim for all of them (their slots in lane order, as one group
  // at a time would take them), then each completing lane writes its group's tasks and raises
  // their flags after one fence. One group at a time cost a claim's and a release's round trip
  // each: the warp that completes every column at once (the last expert's) started T128 E8's 64
  // combines over 25 µs (run 81, docs/dev/perf-notes.md v28).
  auto enqueue_completed = [&](bool complete, unsigned g, unsigned c) {
    const unsigned first = g * gt;
    const unsigned n = complete ? min(gt, token_tiles - first) : 0u;  // first < token_tiles
    unsigned end = n;  // inclusive prefix sum over the lanes
#pragma unroll
    for (unsigned o = 1; o < 32; o *= 2) {
      const unsigned v = __shfl_up_sync(0xFFFFFFFFu, end, o);
      if (lane >= o) end += v;
    }
    const unsigned total = __shfl_sync(0xFFFFFFFFu, end, 31);
    if (total == 0) return;
    if (s.third_wave != 0u) {
      // The tasks are written (post_combines) and posted: their flags alone, each a release
      // (a completing lane fenced after its counted arrivals).
      for (unsigned i = 0; i < n; ++i) st_release_gpu(&r.task_ready()[(first + i) * cth + c], r.epoch);
      if (lane == 0) mark_latest(r, kCombinesQueuedNs);
      return;
    }
    unsigned base = 0;
    if (lane == 0) base = claim_combine(r, total);
    base = __shfl_sync(0xFFFFFFFFu, base, 0) + (end - n);
    publish_own(r, base, n, [&](unsigned i) {
      const unsigned tt = first + i;
      return make_task(r, FDM_TASK_COMBINE, r.global, r.global, 0, tt, c, fdm_tile_rows(r.p->tokens, tt, kBM));
    });
    if (lane == 0) mark_latest(r, kCombinesQueuedNs);
  };
  // Groups no row tile spans (every token of theirs dropped): ready at once.
  for (unsigned i0 = sub * 32; i0 < groups * cth; i0 += nsub * 32) {
    const unsigned i = i0 + lane;
    enqueue_completed(i < groups * cth && s.group_expected[i / cth] == 0u, i / cth, i % cth);
  }
  Deadline deadline(r.p->timeout_ns);
  // Lane-private cursor over its share of owed tiles (i = sub*32 + lane, stepping nsub*32),
  // processed in order: a lane polls only its next owed tile.
  OwedCursor cur;
  unsigned long long i = (unsigned long long)sub * 32 + lane;
  const unsigned long long step = (unsigned long long)nsub * 32;
  for (;;) {
    const bool mine = cur.seek(s, i, cth);
    unsigned g = 0, g_end = 0, col = 0;
    unsigned long long seen = 0;
    bool arrived = false;
    if (mine) {
      const unsigned e = cur.expert, rt = cur.row_tile(i, cth);
      col = (unsigned)((i - cur.base) % cth);
      const unsigned owner = r.p->expert_owner[e], le = r.p->expert_local[e];
      const unsigned long long* sig =
          reinterpret_cast<const unsigned long long*>(r.heap + fdm_return_signal(&l, owner, le, rt, col));
      seen = ld_acquire_sys(sig);
      if (fdm_signal_epoch(seen) == epoch) {
        if (fdm_signal_payload(seen) != fdm_return_tile_id(&l, rt, col)) {
          report_timeout(r, FDM_ROLE_RETURN_SUBSCRIBER, FDM_WAIT_CORRUPT_SIGNAL, (unsigned)i, seen);
        }
        __threadfence();
        const unsigned* tokens = r.expert_tokens() + (unsigned long long)e * l.capacity;
        const unsigned row0 = rt * kBM, rows = fdm_tile_rows(s.packet_rows[e], rt, kBM);
        g = tokens[row0] / kBM / gt;
        g_end = tokens[row0 + rows - 1] / kBM / gt + 1;
        i += step;
        arrived = true;
      }
    }
    // One deadline for the warp: it expires once no lane has seen an arrival for the timeout.
    if (warp_any(arrived)) deadline.progress();
    // Count the arrival in each group it spans; the warp enqueues every group it completed.
    while (__any_sync(0xFFFFFFFFu, g < g_end)) {
      bool complete = false;
      if (g < g_end) {
        unsigned* counter = reinterpret_cast<unsigned*>(r.heap + fdm_combine_counter(&l, g, col));
        complete = atomicAdd(counter, 1u) + 1u == s.group_expected[g];
        if (complete) __threadfence();  // every counted arrival before the combine tasks
      }
      enqueue_completed(complete, g, col);
      if (g < g_end) ++g;
    }
    const unsigned any_left = __ballot_sync(0xFFFFFFFFu, cur.seek(s, i, cth));
    if (!any_left) return;
    if (warp_any(aborted(r.p))) return;
    if (warp_any(deadline.expired())) {
      const unsigned pend = any_left;
      const unsigned who_lane = __ffs(pend) - 1;
      const unsigned long long who = __shfl_sync(0xFFFFFFFFu, i, who_lane);
      const unsigned long long who_seen = __shfl_sync(0xFFFFFFFFu, seen, who_lane);
      if (lane == 0) report_timeout(r, FDM_ROLE_RETURN_SUBSCRIBER, FDM_WAIT_RETURN_SIGNAL, (unsigned)who, who_seen);
      return;
    }
  }
}
