// subscriber.cuh -- the OS block's subscribers (core's `runtime::Subscriber`): warp 1 watches
// every dispatch signal of its rank and turns each arrived packet into its GEMM0 tasks, then
// publishes the exact task bound (in core the scheduler computes it from the same counts:
// docs/kernel.md, "core name -> kernel name"); warps 2.. watch the return signals of the tiles
// the rank is owed and turn each complete (readiness group, output column) into its combine
// tasks (flashdmoe_proto::graph, "CombineReadiness"; docs/dev/combine-overlap.md).
//
// Both publish in token order, a chunk at a time, so the first token tiles can combine while
// later row tiles are still in GEMM1: the dispatch subscriber publishes the GEMM0 tasks of the
// packets that arrived together a chunk of row tiles at a time (every packet's first chunk,
// then every second chunk, ...: interleave_row_tiles), and the return subscribers' lanes poll
// owed tiles in that same order.
#pragma once

#include "dispatch.cuh"
#include "queue.cuh"

/// Packets the dispatch subscriber gathers before publishing their GEMM0 tasks.
constexpr unsigned kPendingPackets = 256;

struct OsShared {
  unsigned packet_rows[kE];      // rows this rank sent to each expert
  unsigned bound;                // tasks this rank runs; kStop until known
  unsigned enqueue_base[kWarps]; // per-warp base of the log slots claim() took
  unsigned assigned[1024];       // scheduler's copy of each processor's mailbox `assigned` count
  unsigned handled[(FDM_MAX_RANKS * kE + 31) / 32];  // dispatch slots already turned into tasks
  // The dispatch subscriber's arrived packets (slot, rows), published together.
  unsigned pending_slot[kPendingPackets], pending_rows[kPendingPackets];
  // The return subscribers: chunks of what the rank is owed (OwedCursor); the combine
  // readiness: token tiles per group, and the returned tiles of one column each group waits for.
  unsigned owed_chunks;
  unsigned group_tiles;
  unsigned group_expected[FDM_MAX_COMBINE_GROUPS];
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

/// Row tiles per interleave chunk: a packet's GEMM0 tasks are published `chunk` row tiles at a
/// time, every arrived packet's chunk 0, then every chunk 1, ... (and the return subscribers
/// poll in that order). Half a wave of the rank's processors per packet chunk: a wave then
/// spans about two experts' weights, which stay in L2 (one row tile of every expert at a time
/// spread a wave over all of them and made every GEMM task 20-50% slower, run 27), while the
/// token tiles still complete in a few steps across the GEMM phase, so the combines of the
/// first steps run under the later GEMMs.
__device__ __forceinline__ unsigned interleave_row_tiles(const Rank& r) {
  return max(1u, fdm_div_ceil(r.nproc, 2u * fdm_col_tiles_inter(&r.p->layout)));
}

/// Publishes the GEMM0 tasks of the `n` packets in s.pending_* chunk by chunk
/// (interleave_row_tiles), packet by packet within a chunk (one log claim per packet chunk),
/// by the whole warp. Returns the row tiles published.
__device__ unsigned long long publish_pending(const Rank& r, OsShared& s, unsigned n) {
  const fdm_layout& l = r.p->layout;
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const unsigned nle = r.p->local_experts_of[r.global];
  const unsigned cti = fdm_col_tiles_inter(&l);
  const unsigned chunk = interleave_row_tiles(r);
  unsigned levels = 0;
  unsigned long long row_tiles = 0;
  for (unsigned j = lane; j < n; j += 32) {
    const unsigned rts = fdm_div_ceil(s.pending_rows[j], kBM);
    levels = max(levels, rts);
    row_tiles += rts;
  }
  for (int o = 16; o > 0; o /= 2) {
    levels = max(levels, __shfl_xor_sync(0xFFFFFFFFu, levels, o));
    row_tiles += __shfl_xor_sync(0xFFFFFFFFu, row_tiles, o);
  }
  for (unsigned lo = 0; lo < levels; lo += chunk) {
    for (unsigned j = 0; j < n; ++j) {
      const unsigned rows = s.pending_rows[j], slot = s.pending_slot[j];
      const unsigned hi = min(lo + chunk, fdm_div_ceil(rows, kBM));
      if (hi <= lo) continue;
      const unsigned count = (hi - lo) * cti;
      if (lane == 0) s.enqueue_base[warp] = claim(r, count);
      __syncwarp();
      publish(r, s.enqueue_base[warp], count, lane, 32, [&](unsigned i) {
        const unsigned rt = lo + i / cti, c = i % cti;
        return make_task(r, FDM_TASK_GEMM0, slot / nle, r.global, slot % nle, rt, c, fdm_tile_rows(rows, rt, kBM));
      });
      __syncwarp();
    }
  }
  return row_tiles;
}

/// Warp 1: watch every (source, local expert) dispatch signal of this rank; each round over
/// them gathers the packets that arrived and publishes their GEMM0 tasks chunk by chunk
/// (publish_pending); publishes the exact task bound once all have arrived.
// Rank by value: a reference would put it on the stack when the call is not inlined.
FDM_OS_ROLE void dispatch_subscriber(const Rank r, OsShared& s) {
  const fdm_layout& l = r.p->layout;
  const unsigned lane = threadIdx.x % 32;
  const unsigned nle = r.p->local_experts_of[r.global];
  const unsigned slots = l.world * nle;
  const unsigned epoch = r.epoch;
  unsigned long long row_tiles = 0;
  unsigned remaining = slots;
  Deadline deadline(r.p->timeout_ns);
  while (remaining > 0) {
    unsigned pending = 0;      // packets gathered, not yet published (warp-uniform)
    bool fresh_any = false;
    unsigned who = kStop;      // the round's first slot still missing, for a timeout report
    unsigned long long who_seen = 0;
    for (unsigned base = 0; base < slots; base += 32) {
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
      const unsigned miss = __ballot_sync(0xFFFFFFFFu, slot < slots && !arrived);
      if (who == kStop && miss) {
        who = base + __ffs(miss) - 1;
        who_seen = __shfl_sync(0xFFFFFFFFu, seen, __ffs(miss) - 1);
      }
      // Slots already turned into tasks (one bit each; this warp is the only writer).
      unsigned* handled = &s.handled[base / 32];
      const unsigned already = *reinterpret_cast<volatile unsigned*>(handled);
      const bool fresh = arrived && !((already >> lane) & 1u);
      const unsigned mask = __ballot_sync(0xFFFFFFFFu, fresh);
      if (mask == 0) continue;
      // Corrupt signal: typed error, never an out-of-bounds task (the layout's capacity: a
      // peer GPU of more tokens this forward may send more rows than this GPU's p->capacity).
      const unsigned bad = __ballot_sync(0xFFFFFFFFu, fresh && rows > l.capacity);
      if (bad) {
        const unsigned bl = __ffs(bad) - 1;
        const unsigned bad_rows = __shfl_sync(0xFFFFFFFFu, rows, bl);
        if (lane == 0) report_timeout(r, FDM_ROLE_DISPATCH_SUBSCRIBER, FDM_WAIT_CORRUPT_SIGNAL, base + bl, bad_rows);
        return;
      }
      fresh_any = true;
      if (lane == 0) *handled = already | mask;
      if (pending + __popc(mask) > kPendingPackets) {
        row_tiles += publish_pending(r, s, pending);
        remaining -= pending;
        pending = 0;
      }
      if (fresh) {
        const unsigned at = pending + __popc(mask & ((1u << lane) - 1u));
        s.pending_slot[at] = slot;
        s.pending_rows[at] = rows;
      }
      pending += __popc(mask);
      __syncwarp();
    }
    if (pending) {
      row_tiles += publish_pending(r, s, pending);
      remaining -= pending;
    }
    if (fresh_any) {
      deadline.progress();
    } else if (deadline.expired() || aborted(r.p)) {
      if (!aborted(r.p) && lane == 0) {
        report_timeout(r, FDM_ROLE_DISPATCH_SUBSCRIBER, FDM_WAIT_DISPATCH_SIGNAL, who == kStop ? 0u : who, who_seen);
      }
      return;
    }
  }
  if (lane == 0) *reinterpret_cast<volatile unsigned*>(&s.bound) = (unsigned)fdm_task_bound(&l, row_tiles, r.p->tokens);
}

/// The tiles a rank is owed, flattened in the order GEMM1 completes them on one GPU: chunk by
/// chunk of interleave_row_tiles row tiles, expert by expert within a chunk, row tile by row
/// tile within an expert's chunk, `width` entries per row tile (the output columns, or 1). A
/// cursor moves forward only (`seek` with increasing indices); s.owed_chunks bounds it.
struct OwedCursor {
  unsigned chunk_rows;      // row tiles per chunk
  unsigned chunk;           // the chunk of the current entries
  unsigned expert;          // their expert
  unsigned long long base;  // flattened index of the first entry of (chunk, expert)

  __device__ explicit OwedCursor(unsigned rows) : chunk_rows(rows), chunk(0), expert(0), base(0) {}
  /// Row tiles of (chunk, expert).
  __device__ unsigned tiles(const OsShared& s) const {
    const unsigned rts = fdm_div_ceil(s.packet_rows[expert], kBM), lo = chunk * chunk_rows;
    return rts > lo ? min(rts - lo, chunk_rows) : 0u;
  }
  /// Moves to the (chunk, expert) holding entry `i`; false past the last entry.
  __device__ bool seek(const OsShared& s, unsigned long long i, unsigned width) {
    while (chunk < s.owed_chunks && i >= base + (unsigned long long)tiles(s) * width) {
      base += (unsigned long long)tiles(s) * width;
      if (++expert == (unsigned)kE) {
        expert = 0;
        ++chunk;
      }
    }
    return chunk < s.owed_chunks;
  }
  /// Entry `i`'s row tile (after a successful seek; its column is `(i - base) % width`).
  __device__ unsigned row_tile(unsigned long long i, unsigned width) const {
    return chunk * chunk_rows + (unsigned)((i - base) / width);
  }
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
    unsigned packets = 0, most = 0;
    unsigned long long row_tiles = 0;
    for (unsigned e = tid; e < (unsigned)kE; e += 32) {
      packets += s.packet_rows[e] != 0u;
      row_tiles += fdm_div_ceil(s.packet_rows[e], kBM);
      most = max(most, fdm_div_ceil(s.packet_rows[e], kBM));
    }
    for (int o = 16; o > 0; o /= 2) {
      packets += __shfl_xor_sync(0xFFFFFFFFu, packets, o);
      row_tiles += __shfl_xor_sync(0xFFFFFFFFu, row_tiles, o);
      most = max(most, __shfl_xor_sync(0xFFFFFFFFu, most, o));
    }
    if (tid == 0) {
      s.group_tiles = fdm_combine_group_tiles(token_tiles, packets, row_tiles);
      s.owed_chunks = fdm_div_ceil(most, interleave_row_tiles(r));
    }
  }
  return_subscribers_sync(count);
  // Each owed row tile counts once in every group from its first token's to its last's.
  const unsigned gt = s.group_tiles;
  OwedCursor cur(interleave_row_tiles(r));
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
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const unsigned epoch = r.epoch;
  const unsigned cth = fdm_col_tiles_hidden(&l);
  const unsigned token_tiles = fdm_div_ceil(r.p->tokens, kBM);  // this forward's
  // Groups follow the layout's token tiles (as SourcePlan::combine_readiness does), so a
  // forward of fewer tokens groups like a full one; its missing tiles have no tasks.
  owed_readiness(r, s, sub * 32 + lane, nsub * 32, l.token_tiles);
  const unsigned gt = s.group_tiles;
  const unsigned groups = fdm_div_ceil(token_tiles, gt);
  auto enqueue_group = [&](unsigned g, unsigned c) {
    const unsigned first = g * gt, n = min(gt, token_tiles - first);  // first < token_tiles
    if (lane == 0) s.enqueue_base[warp] = claim_combine(r, n);
    __syncwarp();
    publish(r, s.enqueue_base[warp], n, lane, 32, [&](unsigned i) {
      const unsigned tt = first + i;
      return make_task(r, FDM_TASK_COMBINE, r.global, r.global, 0, tt, c, fdm_tile_rows(r.p->tokens, tt, kBM));
    });
    __syncwarp();
  };
  // Groups no row tile spans (every token of theirs dropped): ready at once.
  for (unsigned i = sub; i < groups * cth; i += nsub) {
    if (s.group_expected[i / cth] == 0u) enqueue_group(i / cth, i % cth);
  }
  Deadline deadline(r.p->timeout_ns);
  // Lane-private cursor over its share of owed tiles (i = sub*32 + lane, stepping nsub*32),
  // processed in order: a lane polls only its next owed tile.
  OwedCursor cur(interleave_row_tiles(r));
  unsigned long long i = (unsigned long long)sub * 32 + lane;
  const unsigned long long step = (unsigned long long)nsub * 32;
  for (;;) {
    const bool mine = cur.seek(s, i, cth);
    unsigned g = 0, g_end = 0, col = 0;
    unsigned long long seen = 0;
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
        deadline.progress();
      }
    }
    // Count the arrival in each group it spans; the warp enqueues every group it completed.
    while (__any_sync(0xFFFFFFFFu, g < g_end)) {
      bool complete = false;
      if (g < g_end) {
        unsigned* counter = reinterpret_cast<unsigned*>(r.heap + fdm_combine_counter(&l, g, col));
        complete = atomicAdd(counter, 1u) + 1u == s.group_expected[g];
        if (complete) __threadfence();  // every counted arrival before the combine tasks
      }
      unsigned done = __ballot_sync(0xFFFFFFFFu, complete);
      while (done) {
        const unsigned src_lane = __ffs(done) - 1;
        done &= done - 1;
        enqueue_group(__shfl_sync(0xFFFFFFFFu, g, src_lane), __shfl_sync(0xFFFFFFFFu, col, src_lane));
      }
      if (g < g_end) ++g;
    }
    const unsigned any_left = __ballot_sync(0xFFFFFFFFu, cur.seek(s, i, cth));
    if (!any_left) return;
    if (aborted(r.p)) return;
    if (deadline.expired()) {
      const unsigned pend = any_left;
      const unsigned who_lane = __ffs(pend) - 1;
      const unsigned long long who = __shfl_sync(0xFFFFFFFFu, i, who_lane);
      const unsigned long long who_seen = __shfl_sync(0xFFFFFFFFu, seen, who_lane);
      if (lane == 0) report_timeout(r, FDM_ROLE_RETURN_SUBSCRIBER, FDM_WAIT_RETURN_SIGNAL, (unsigned)who, who_seen);
      return;
    }
  }
}
