// subscriber.cuh -- the OS block's subscribers (core's `runtime::Subscriber`): warp 1 watches
// every dispatch signal of its rank and turns each arrived packet into its GEMM0 tasks, then
// publishes the exact task bound (in core the scheduler computes it from the same counts:
// docs/kernel.md, "core name -> kernel name"); warps 2.. watch the return signals of the tiles
// the rank is owed and turn each completed output column into its combine tasks.
#pragma once

#include "dispatch.cuh"
#include "queue.cuh"

struct OsShared {
  unsigned packet_rows[kE];      // rows this rank sent to each expert
  unsigned bound;                // tasks this rank runs; kStop until known
  unsigned enqueue_base[kWarps]; // per-warp base of the log slots claim() took
  unsigned assigned[1024];       // scheduler's copy of each processor's mailbox `assigned` count
  unsigned handled[(FDM_MAX_RANKS * kE + 31) / 32];  // dispatch slots already turned into tasks
};
static_assert(sizeof(OsShared) <= FDM_SMEM_BYTES, "the OS block's state lives in dynamic shared memory");

/// The OS block's first act: raise this rank's dispatch signals for the packets nobody
/// copies (zero-row packets, and with kReadsInPlace every packet for an expert on this GPU: its
/// rows are the rank's input, complete since A3's grid barrier; A4's copiers raise the others as
/// their packets complete) and remember the packet sizes.
__device__ void raise_dispatch_signals(const Rank& r, OsShared& s) {
  for (unsigned e = threadIdx.x; e < (unsigned)kE; e += kThreads) {
    const unsigned rows = r.packet_rows()[e];
    s.packet_rows[e] = rows;
    if (rows == 0 || (kReadsInPlace && on_this_gpu(r.p, r.p->expert_owner[e]))) raise_dispatch_signal(r, e, rows);
  }
  for (unsigned w = threadIdx.x; w < (FDM_MAX_RANKS * kE + 31) / 32; w += kThreads) s.handled[w] = 0u;
  if (threadIdx.x == 0) s.bound = kStop;
  __syncthreads();
}

/// Warp 1: watch every (source, local expert) dispatch signal of this rank; enqueue each
/// arrived packet's GEMM0 tasks; publish the exact task bound once all have arrived.
__device__ void dispatch_subscriber(const Rank& r, OsShared& s) {
  const fdm_layout& l = r.p->layout;
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const unsigned nle = r.p->local_experts_of[r.global];
  const unsigned slots = l.world * nle;
  const unsigned epoch = r.epoch;
  unsigned long long row_tiles = 0;
  unsigned remaining = slots;
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
      if (deadline.expired() || aborted(r.p)) {
        if (!aborted(r.p)) {
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
      const unsigned cti = fdm_col_tiles_inter(&l);
      const unsigned count = rts * cti;
      if (lane == 0 && count) s.enqueue_base[warp] = claim(r, count);
      __syncwarp();
      if (count) {
        publish(r, s.enqueue_base[warp], count, lane, 32, [&](unsigned i) {
          const unsigned rt = i / cti, c = i % cti;
          return make_task(r, FDM_TASK_GEMM0, source, r.global, le, rt, c, fdm_tile_rows(prows, rt, kBM));
        });
      }
      __syncwarp();
      --remaining;
    }
  }
  if (lane == 0) *reinterpret_cast<volatile unsigned*>(&s.bound) = (unsigned)fdm_task_bound(&l, row_tiles, r.p->tokens);
}

/// Warps 2..: watch the return signals of every tile this rank is owed; count them per
/// output column; when a column is complete, enqueue the combine tasks of all token tiles of
/// that column.
__device__ void return_subscriber(const Rank& r, OsShared& s, unsigned sub, unsigned nsub) {
  const fdm_layout& l = r.p->layout;
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const unsigned epoch = r.epoch;
  const unsigned cth = fdm_col_tiles_hidden(&l);
  const unsigned token_tiles = fdm_div_ceil(r.p->tokens, kBM);  // this forward's
  // Flattened enumeration of owed tiles: (expert e ascending, row tile, column).
  unsigned long long expected = 0;
  for (int e = 0; e < kE; ++e) expected += fdm_div_ceil(s.packet_rows[e], kBM);
  const unsigned long long total = expected * cth;
  auto enqueue_column = [&](unsigned c) {
    if (lane == 0) s.enqueue_base[warp] = claim(r, token_tiles);
    __syncwarp();
    publish(r, s.enqueue_base[warp], token_tiles, lane, 32, [&](unsigned tt) {
      return make_task(r, FDM_TASK_COMBINE, r.global, r.global, 0, tt, c, fdm_tile_rows(r.p->tokens, tt, kBM));
    });
    __syncwarp();
  };
  if (expected == 0) {  // nothing owed: every column is complete at once
    for (unsigned c = sub; c < cth; c += nsub) enqueue_column(c);
    return;
  }
  Deadline deadline(r.p->timeout_ns);
  // Lane-private cursor over its share of tiles (i = sub*32 + lane, stepping nsub*32),
  // processed in order: a lane polls only its next owed tile.
  unsigned long long i = (unsigned long long)sub * 32 + lane;
  unsigned e = 0, e_first = 0;  // expert of tile i and the flattened index of its first tile
  auto locate = [&](unsigned long long idx) {
    while (e < (unsigned)kE && idx >= (e_first + (unsigned long long)fdm_div_ceil(s.packet_rows[e], kBM) * cth)) {
      e_first += fdm_div_ceil(s.packet_rows[e], kBM) * cth;
      ++e;
    }
  };
  const unsigned long long step = (unsigned long long)nsub * 32;
  for (;;) {
    bool mine = i < total;
    bool complete_col = false;
    unsigned col = 0;
    unsigned long long seen = 0;
    if (mine) {
      locate(i);
      const unsigned within = (unsigned)(i - e_first);
      const unsigned rt = within / cth;
      col = within % cth;
      const unsigned owner = r.p->expert_owner[e], le = r.p->expert_local[e];
      const unsigned long long* sig =
          reinterpret_cast<const unsigned long long*>(r.heap + fdm_return_signal(&l, owner, le, rt, col));
      seen = ld_acquire_sys(sig);
      if (fdm_signal_epoch(seen) == epoch) {
        if (fdm_signal_payload(seen) != fdm_return_tile_id(&l, rt, col)) {
          report_timeout(r, FDM_ROLE_RETURN_SUBSCRIBER, FDM_WAIT_CORRUPT_SIGNAL, (unsigned)i, seen);
        }
        __threadfence();
        unsigned* counter = reinterpret_cast<unsigned*>(r.heap + fdm_combine_counter(&l, col));
        complete_col = atomicAdd(counter, 1u) + 1u == expected;
        if (complete_col) __threadfence();  // every counted arrival before the combine tasks
        i += step;
        deadline.progress();
      }
    }
    const unsigned any_left = __ballot_sync(0xFFFFFFFFu, i < total);
    unsigned done_cols = __ballot_sync(0xFFFFFFFFu, complete_col);
    while (done_cols) {
      const unsigned src_lane = __ffs(done_cols) - 1;
      done_cols &= done_cols - 1;
      enqueue_column(__shfl_sync(0xFFFFFFFFu, col, src_lane));
    }
    if (!any_left) return;
    if (aborted(r.p)) return;
    if (deadline.expired()) {
      const unsigned pend = __ballot_sync(0xFFFFFFFFu, i < total);
      const unsigned who_lane = __ffs(pend) - 1;
      const unsigned long long who = __shfl_sync(0xFFFFFFFFu, i, who_lane);
      const unsigned long long who_seen = __shfl_sync(0xFFFFFFFFu, seen, who_lane);
      if (lane == 0) report_timeout(r, FDM_ROLE_RETURN_SUBSCRIBER, FDM_WAIT_RETURN_SIGNAL, (unsigned)who, who_seen);
      return;
    }
  }
}
