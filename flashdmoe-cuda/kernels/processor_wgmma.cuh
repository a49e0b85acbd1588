// processor_wgmma.cuh -- a processor block on the Hopper tile engine (sm_90a; core's
// `runtime::Processor`; kernels/tile_wgmma.cuh has the engine's contract). The block's 384
// threads split by role once, after phase A:
//   producer warpgroup (128 threads): its thread 0 takes the next task from the mailbox and
//     hands it on through the engine's task ring; all 128 then load the task's A rows (cp.async,
//     gathered by pointer: rows of a packet from this GPU come straight from the source's input
//     through its token list, never copied) while thread 0 streams the weights' B tiles (TMA);
//   consumer warpgroups (256 threads): run the task's wgmmas, the fused epilogue (bias,
//     activation, SwiGLU) and the stores, then publish what the task unlocks (a completed row
//     tile's GEMM1 tasks, a return signal) and report completion; combine tasks run here too.
// The producer is one task ahead: it loads task n+1 while the consumers finish task n.
#pragma once

#include "combine.cuh"
#include "combine_stream.cuh"
#include "completion.cuh"
#include "dispatch.cuh"
#include "mailbox.cuh"
#include "waves.cuh"

#if FDM_ENGINE == 1
namespace hw = flashdmoe::hopper;

constexpr int kNB0 = kGated ? 2 : 1;      // B operands of GEMM0: (gate, up) or (up)
constexpr int kNB1 = kWideGemm1 ? 2 : 1;  // of GEMM1: the down weights' two kBN-row halves, or one
/// Experiment FDM_TMA_STORE_GEMM1 (with FDM_TMA_STORE): GEMM1's tiles for sources on this GPU
/// leave by tensor stores too (gemm_consume).
#ifdef FDM_TMA_STORE_GEMM1
constexpr bool kTmaStoreGemm1 = Engine::kTmaStore;
#else
constexpr bool kTmaStoreGemm1 = false;
#endif

/// The A rows of GEMM task t (expert e) for producer thread pt: a GEMM0 packet from this GPU
/// is read in place from the source's own input through its token list (kReadsInPlace:
/// dispatch.cuh never copied it); any other packet from its dispatched rows; a GEMM1's from
/// the intermediate rows.
__device__ __forceinline__ Engine::ARows task_rows(const Rank& r, const Engine::Smem& s, const fdm_task& t, unsigned e,
                                                  unsigned pt) {
  const bool gemm0 = t.kind == FDM_TASK_GEMM0;
  if (gemm0 && kReadsInPlace && on_this_gpu(r.p, t.source_rank)) {
    const Rank src = make_rank(r.p, t.source_rank - r.p->first_rank);
    const unsigned* tokens = src.expert_tokens() + (unsigned long long)e * r.p->layout.capacity + t.row_tile * kBM;
    const unsigned valid = t.valid_rows;
    return Engine::a_rows(s, pt, reinterpret_cast<const char*>(src.x()), kH * sizeof(Elem),
                          [&](unsigned i) { return i < valid ? tokens[i] : Engine::kNoRow; });
  }
  const unsigned valid = t.valid_rows;
  return Engine::a_rows(s, pt, r.heap + t.input_offset, (gemm0 ? kH : kI) * sizeof(Elem),
                        [&](unsigned i) { return i < valid ? i : Engine::kNoRow; });
}

/// The routing weight of row `i` of GEMM1 task t's row tile (0 past its valid rows: never
/// stored), which GEMM1's epilogue applies so that the combine is a plain sum: every row's is
/// in this rank's dispatch weights, sent with the row (dispatch.cuh) or, for a row GEMM0 read
/// in place, written there by placement (route.cuh). Its address is arithmetic on the layout,
/// so the load hides under the main loop.
__device__ __forceinline__ float row_weight(const Rank& r, const fdm_task& t, unsigned i) {
  if (i >= t.valid_rows) return 0.f;
  const unsigned row = t.row_tile * kBM + i;
  return *reinterpret_cast<const float*>(r.heap + fdm_dispatch_weight(&r.p->layout, t.source_rank, t.local_expert, row));
}

/// Whether a combine task stages its slots (combine.cuh): 2-byte elements only (with 4-byte
/// elements the TF32 64x256 images spill).
constexpr bool kStagedCombine = sizeof(Elem) == 2;

/// Where the consumers stage a combine task's slots: the epilogue's staging buffer (free
/// during a combine) when they fit, else the region config.cuh reserves after the engine's.
__device__ __forceinline__ CombineSlot* combine_slots(const Engine::Smem& s) {
  if constexpr (kCombineSlotBytes <= kBM * Engine::kStagingStride) {
    return reinterpret_cast<CombineSlot*>(s.staging());
  } else {
    return reinterpret_cast<CombineSlot*>(s.ptr + Engine::kUsedBytes);
  }
}

/// What the producer hands the consumers for each task: the descriptor and its log index
/// (kStop: stop). Consumers read the fields from shared memory when they need them, so
/// nothing of the task lives in registers across the main loop (the accumulators need them).
struct RingTask {
  fdm_task t;
  unsigned index;
  unsigned paired;  // kPairs: the task is its cluster's pair (both pipelines restart at 0)
};


/// `blockIdx.x` read by a volatile `mov`, which the compiler cannot merge with the kernel's
/// own reads or hoist out of a loop: what the roles derive from it is computed again where it
/// is used, so no register holds it across their loops.
__device__ __forceinline__ unsigned fresh_block_index() {
  unsigned block;
  asm volatile("mov.u32 %0, %%ctaid.x;" : "=r"(block));
  return block;
}

/// This block's processor index within its rank (fresh_block_index): held across the roles'
/// loops, it and `nproc` spilled 20 bytes once the OS block's first wave was added (perf-notes
/// v35).
__device__ __forceinline__ unsigned processor_index(const fdm_params* p) {
  return fresh_block_index() % p->blocks_per_rank - 1u;
}

/// This block's rank index on this GPU (`Rank::local`; fresh_block_index): the producer's
/// `&p->tmap_inter[r.local]`, computed once before its loop and held there as a 64-bit pointer,
/// spilled 8 bytes in the 88-register producer of every streamed gated image (each compiled
/// through FDM_FRESH_TID instead; perf-notes v37 (d)).
__device__ __forceinline__ unsigned local_rank_index(const fdm_params* p) {
  return fresh_block_index() / p->blocks_per_rank;
}

#if FDM_PAIRS
/// Producer thread 0, before handing on a paired task (its mailbox word had kPairBit): brings
/// this CTA's pipeline and its cluster peer's to one position, since the pair's multicasts
/// write the same stages of both (docs/dev/paired-tasks.md, "The pipeline"; the tile bench's
/// `align_for_pair`). Waits until every stage of this CTA is empty (its consumers are then past
/// their last main loop, and the peer's releases of an earlier pair's stages are in), then
/// re-initialises the stages' barriers, tells the peer on its `ready` barrier and waits for the
/// peer's word on its own (both at cluster scope): no multicast or remote release reaches a
/// barrier before its re-initialisation, since the peer issues either only after this word.
/// Both peers meet their pairs in one order (the scheduler posts a pair to both mailboxes in
/// one round), so `pairs` (this CTA's pairs so far) gives both the same phase. False when the
/// launch aborted or the peer did not come in time (a timeout recorded: FDM_WAIT_PAIR_PEER).
__device__ bool align_for_pair(const Rank& r, const Engine::Smem& s, const hw::Ring<FDM_STAGES>& pipe, unsigned ready,
                               unsigned& pairs, Deadline& deadline) {
  const auto gave_up = [&]() {
    if (aborted(r.p)) return true;
    if (!deadline.expired()) return false;
    report_timeout(r, FDM_ROLE_PROCESSOR, FDM_WAIT_PAIR_PEER, processor_index(r.p), pairs);
    return true;
  };
  hw::Ring<FDM_STAGES> q = pipe;
  for (unsigned i = 0; i < FDM_STAGES; ++i) {
    while (!hw::mbar_try_wait(s.empty(q.slot), q.phase ^ 1u)) {
      if (gave_up()) return false;
    }
    q.advance();
  }
  Engine::init_pipeline(s);
  hw::mbar_signal_cluster(ready, hw::cluster_ctarank() ^ 1u);
  while (!hw::mbar_try_wait_cluster(ready, pairs & 1u)) {
    if (gave_up()) return false;
  }
  ++pairs;
  deadline.progress();
  atomicAdd(&r.control()[kPairedTasks], 1u);  // for the host (PhaseTimes::paired_tasks)
  return true;
}
#endif

/// Experiment FDM_SELF_WAVE, by the block's first warp before the roles split (the full
/// register budget: inside the producer's reduced one the derivation spilled the SwiGLU
/// 128x128 images): processor q's first-wave task, derived from the placement
/// (waves.cuh own_first_task), goes into the task ring at once. True in lane 0 where it did:
/// the producer's thread 0 then starts at its mailbox's task number 1; its consumers check
/// the OS block's post of task number 0 before they publish it (wgmma_consumer).
__device__ bool hand_own_first_task(const Rank& r, const Engine::Smem& s, hw::Ring<2>& ring) {
  RingTask own;
  own.index = own_first_task(r, processor_index(r.p), threadIdx.x, own.t);
  own.paired = 0;
  if (threadIdx.x != 0 || own.index == kStop) return false;
  Engine::ring_put(s, ring, own);
  return true;
}

__device__ void wgmma_producer(const Rank& r, const Engine::Smem& s, hw::Ring<2>& ring,
                               hw::Ring<FDM_STAGES>& pipe, unsigned pair_ready, bool handed) {
  const unsigned pt = threadIdx.x;
  const fdm_params* p = r.p;
  unsigned taken = 0;
  unsigned pairs = 0;  // thread 0: paired tasks begun (align_for_pair)
  Deadline deadline(p->timeout_ns + p->timeout_ns / 2);
  for (;;) {
    // Thread 0 waits for the mailbox (a timeout or abort yields kStop, which ends every role)
    // and hands the task on.
    // `handed`: thread 0 put task number 0 in the ring already (hand_own_first_task).
    if (pt == 0 && !handed) {
      RingTask next;
      next.index = mailbox_wait(r, processor_index(p), taken, deadline);
      next.paired = 0;
#if FDM_PAIRS
      if (next.index != kStop && (next.index & kPairBit)) {
        next.index &= ~kPairBit;
        next.paired = 1;
        if (!align_for_pair(r, s, pipe, pair_ready, pairs, deadline)) next.index = kStop;
      }
#else
      (void)pair_ready;
      (void)pairs;
#endif
      // A combine posted before it was ready (subscriber.cuh post_combines): its flag first,
      // then its descriptor (written before the flag's release by the OS block).
      if (next.index != kStop && next.index < (unsigned)fdm_gemm_log_base(&r.p->layout) && combines_posted(r) &&
          !combine_flagged(r, next.index, deadline))
        next.index = kStop;
      if (next.index != kStop) next.t = r.tasks()[next.index];
      // A GEMM1 task posted before its row tile's GEMM0s (subscriber.cuh post_gemm1_early)
      // reaches the consumers only once they are counted: the trace's start then follows them.
      if (next.index != kStop && next.t.kind == FDM_TASK_GEMM1 && gemm1_posted_early(r) &&
          !row_tile_counted(r, processor_index(p), next.t, deadline))
        next.index = kStop;
      Engine::ring_put(s, ring, next);
    }
    handed = false;
    const RingTask* task = Engine::ring_wait<RingTask>(s, ring);
    ring.advance();
    if (task->index == kStop) return;
    ++taken;
    const bool paired = kPairs && task->paired;
    if (paired) pipe = hw::Ring<FDM_STAGES>{};  // both CTAs' pipelines re-initialised
    const fdm_task& t = task->t;  // read in place (shared memory), not copied to registers
    if (t.kind == FDM_TASK_COMBINE) {
      // Streamed: the slots' row segments through the stages (combine_stream.cuh).
      if constexpr (combine_stream::kEnabled) combine_stream::produce(r, s, pipe, pt, t, combine_slots(s));
      continue;
    }
    // One produce() site for both GEMMs: their differences are data (two inlined copies of
    // the engine's loop make ptxas spill).
    const bool gemm0 = t.kind == FDM_TASK_GEMM0;
    const unsigned e = r.expert_of(t.owner_rank, t.local_expert);
    const void* b0 = !gemm0 ? &p->tmap_down : kGated ? &p->tmap_gate : &p->tmap_up;
    const void* b1 = gemm0 ? &p->tmap_up : &p->tmap_down;
    const unsigned slot = r.weight_slot(t.owner_rank, t.local_expert);  // weights of this GPU
    const int b_row = (int)(slot * (gemm0 ? kI : kH) + t.col_tile * (gemm0 ? kBN : kBNH));
    // A GEMM1's A rows are one row tile of this rank's intermediate rows: one TMA box a
    // k-tile where the host could map them (`tmap_inter`; upload.rs `intermediate_maps`).
    const bool tma_a = !gemm0 && r.maps_intermediate();
    if (tma_a && pt == 0) hw::fence_proxy_async_global();  // the GEMM0 rows the mailbox acquired
    const Engine::ARows rows =
        tma_a ? Engine::tma_rows(&p->tmap_inter[local_rank_index(p)],
                                 (unsigned)((t.input_offset - p->layout.intermediate_rows) / (kI * sizeof(Elem))))
              : task_rows(r, s, t, e, pt);
    Engine::produce(s, pipe, pt, rows, (gemm0 ? kH : kI) / Engine::kBK, b0, b1, b_row, gemm0 ? kNB0 : kNB1,
                    gemm0 ? b_row : b_row + kBN, paired);
  }
}

/// v plus element i of a bias vector, or v itself in a layer without biases (`v + 0.f` is not
/// v for v = -0, so the compiler keeps an add an element: 128 copies of the accumulators that
/// made ptxas spill the SwiGLU epilogue).
__device__ __forceinline__ float plus_bias(float v, const void* bias, unsigned long long i) {
  if constexpr (kBias) {
    return v + to_f32(reinterpret_cast<const Elem*>(bias)[i]);
  } else {
    return v;
  }
}

/// A GEMM1 tile stored into a peer's return rows whose system-scope fence and return signal
/// wait until the consumers' next pause: the fence waits for every 16-byte store to be
/// acknowledged across NVLink (runs 64 and 67: a remote GEMM1 task took 34-46 us against 25
/// for a local one), and after the next task's main loop those stores have long drained. The
/// pause comes at the latest when no task is waiting in the ring, so the signal is late by at
/// most one task and never waits on work that waits on it. `held` is the same in every
/// consumer thread (their control flow is uniform); the task is kept in shared memory
/// (`task`) by consumer 0, which raises the signal.
struct PendingReturn {
  fdm_task& task;  // shared memory; consumer 0's copy of the held tile's task
  bool held = false;
  /// Consumer thread c, after storing remote GEMM1 task t's tile: holds it.
  __device__ void hold(const fdm_task& t, unsigned c) {
    if (c == 0) task = t;
    held = true;
  }
  /// Consumer thread c, at a pause: fences its stores of the held tile at system scope; once
  /// every consumer has, consumer 0 raises the tile's return signal.
  __device__ void publish(const Rank& r, unsigned c) {
    if (!held) return;
    __threadfence_system();
    hw::consumer_sync();
    if (c == 0) raise_return_signal(r, task);
    held = false;
  }
};

/// The consumers' part of a GEMM task: the main loop, then the epilogue into the
/// intermediate rows (GEMM0: bias, activation or SwiGLU) or the source's return rows (GEMM1:
/// bias), stored and fenced for their observers. Returns the end time for the trace. One
/// consume() and one store() site for both kinds, like the producer's.
__device__ __forceinline__ unsigned long long gemm_consume(const Rank& r, const Engine::Smem& s,
                                                           hw::Ring<FDM_STAGES>& pipe, const fdm_task& t,
                                                           unsigned c, PendingReturn& pending,
                                                           unsigned long long* marks, bool paired) {
  const unsigned cw = c / 128, ct = c % 128;
  const bool gemm0 = t.kind == FDM_TASK_GEMM0;
  const fdm_params* p = r.p;
  const unsigned e = r.weight_slot(t.owner_rank, t.local_expert);  // weights of this GPU
  // GEMM1: the routing weights of this thread's accumulator rows (r_lo, r_lo + 8, and with two
  // slabs r_lo + 64, r_lo + 72), loaded before the main loop so their latency hides under it.
  const unsigned r_lo = Engine::warp_row0(cw, ct) + (ct % 32) / 4;
  const float w_lo = gemm0 ? 1.f : row_weight(r, t, r_lo), w_hi = gemm0 ? 1.f : row_weight(r, t, r_lo + 8);
  float w2_lo = 1.f, w2_hi = 1.f;
  if constexpr (Engine::kSlabs == 2) {
    if (!gemm0) {
      w2_lo = row_weight(r, t, r_lo + 64);
      w2_hi = row_weight(r, t, r_lo + 72);
    }
  }
  Engine::Accum acc;
  Engine::consume(s, pipe, acc, cw, (gemm0 ? kH : kI) / Engine::kBK, gemm0 ? kNB0 : kNB1, t.valid_rows, paired);
  // The trace's in-task marks (consumer 0, straight into shared memory: no register held
  // across the epilogue): its warpgroup's main loop done, then its stores done.
  if (c == 0 && p->trace) marks[0] = now_ns();
  pending.publish(r, c);  // the previous task's remote tile has drained under the main loop
  const unsigned long long b0 = (unsigned long long)e * (gemm0 ? kI : kH) + t.col_tile * (gemm0 ? kBN : kBNH);
  Elem* out = reinterpret_cast<Elem*>((gemm0 ? r.heap : r.heap_of(t.source_rank)) + t.output_offset);
  // A wide GEMM1 tile leaves as two kBN-column halves, one accumulator each, through one store
  // site (a second inlined copy of the epilogue would cost registers).
  const unsigned halves = gemm0 ? 1u : (unsigned)kNB1;
  // Columns of the tile to store: fewer in a ragged last column tile (proto's tile_cols), whose
  // weight rows past the expert's edge were read (the next expert's, or TMA's zeros past the
  // tensor) and whose results are never stored; their biases are read from the next expert's or
  // the tile of zeroed slack the host puts after every tensor (layer/upload.rs).
  const unsigned cols = gemm0 ? fdm_tile_cols(kI, kBN, t.col_tile) : fdm_tile_cols(kH, kBNH, t.col_tile);
  // Experiment FDM_TMA_STORE: a GEMM0 tile leaves by tensor stores through the map of this
  // rank's intermediate rows (GEMM1's A map, whose box is a staged chunk), where its whole row
  // tile lies inside the packet's rows (the box writes every row; the rows past the valid ones
  // are the packet's own unused rows, which nothing reads as data). With FDM_TMA_STORE_GEMM1 a
  // GEMM1 tile for a source on this GPU leaves the same way through the map of the source's
  // return rows.
  Engine::TmaOut tma_out{};
  if constexpr (Engine::kTmaStore) {
    const bool whole = (t.row_tile + 1u) * (unsigned)kBM <= p->layout.capacity;
    if (gemm0 && r.maps_intermediate() && whole) {
      tma_out = Engine::TmaOut::at_byte(&p->tmap_inter[r.local], t.output_offset - p->layout.intermediate_rows, kI);
    }
    if constexpr (kTmaStoreGemm1) {
      const unsigned src = t.source_rank - p->first_rank;  // past local_ranks: a peer GPU's
      if (!gemm0 && src < p->return_maps && whole) {
        tma_out = Engine::TmaOut::at_byte(&p->tmap_return[src], t.output_offset - p->layout.return_rows, kH);
      }
    }
  }
#pragma unroll 1
  for (unsigned half = 0; half < halves; ++half) {
    const unsigned half_cols = cols > half * kBN ? min(cols - half * kBN, (unsigned)kBN) : 0u;
    // The kind is chosen once a chunk (store_either), not once an element inside one op.
    const auto gemm0_op = [&](unsigned, unsigned col, float v0, float v1) {
      if constexpr (kGated) {
        return gated_act<kFastAct>(plus_bias(v0, p->b_gate, b0 + col), plus_bias(v1, p->b_up, b0 + col));
      } else {
        constexpr Act act = FDM_ACT == 1 ? Act::Gelu : Act::Relu;
        return activate<act>(plus_bias(v0, p->b_up, b0 + col));
      }
    };
    const auto gemm1_op = [&](unsigned row, unsigned col, float v0, float v1) {
      float w = row == r_lo ? w_lo : w_hi;
      if constexpr (Engine::kSlabs == 2) {
        const unsigned d = row - r_lo;  // 0 or 8 (slab 0), 64 or 72 (slab 1)
        if (d >= 64) w = d == 64 ? w2_lo : w2_hi;
      }
      return plus_bias(half == 0 ? v0 : v1, p->b_down, b0 + half * kBN + col) * w;
    };
    Engine::TmaOut half_out = tma_out;
    half_out.col += (int)(half * kBN);
    Engine::store_either(s, acc, cw, ct, c, t.valid_rows, out + half * kBN, gemm0 ? kI : kH, gemm0, gemm0_op,
                         gemm1_op, half_cols, half_out);
  }
  if (c == 0 && p->trace) marks[1] = now_ns();
  // Results before what announces them; a tile in a peer's return rows is fenced later
  // (PendingReturn), under the next task's main loop.
  // A GEMM0 tile's rows are read by the TMA (the async proxy) of a GEMM1 that loads its A
  // through `tmap_inter`. (A GEMM1 tile's rows, read by a streamed combine's bulk copies, are
  // fenced on the reading side only: combine_stream.cuh; a fence here made gpt-oss's streamed
  // images spill 8 bytes.)
  if (gemm0 && r.maps_intermediate()) hw::fence_proxy_async_global();
  // No fence a thread: after the barrier below consumer 0 alone orders the whole tile before
  // what announces it (a fence before the row-tile count, or the return signal's release
  // store), the semaphore pattern of CUTLASS and cooperative groups' grid sync (the barrier
  // orders every consumer's stores before consumer 0's fence, which is cumulative). Run 127:
  // a GEMM task's fences 1.0-1.4 -> 0.1 µs, Qwen3 -0.7%, T128 E8 -3% (perf-notes v38 (a)).
  hw::consumer_sync();
  return now_ns();
}

/// Consumer warp 0, after gemm_consume stored GEMM task t's tile on this GPU: publishes it
/// while the other seven warps start the next task (run 128: the gaps before a GEMM task were
/// a median 1.4-2.5 µs, this chain run while all 256 consumers waited). A GEMM0 tile: lane 0
/// fences (gemm_consume's closing barrier ordered every consumer's stores before it: fences are
/// cumulative, CUTLASS's semaphore pattern) and counts the row tile; the GEMM0 that completes
/// it publishes the row tile's GEMM1 tasks over the warp. A GEMM1 tile: lane 0 raises the
/// return signal (signal_to: a fence, then the store). Either way lane 0 has fenced, so its
/// completion count may be relaxed (report_task's `fenced`). Warp 0's lag reaches the next
/// task's barriers (its epilogue at the latest), which only wait for it: nothing it does waits
/// on the others.
__device__ __forceinline__ void publish_local_tile(const Rank& r, const fdm_task& t, unsigned lane) {
  if (t.kind == FDM_TASK_GEMM0) {
    unsigned base = kStop;
    if (lane == 0) {
      fence_for(r.p, r.global);  // the whole tile's stores (gemm_consume's note)
      base = complete_row_tile(r, t);
    }
    base = __shfl_sync(0xFFFFFFFFu, base, 0);
    __syncwarp();  // lane 0's count and fence before every lane's release stores
    if (base != kStop) publish_gemm1(r, t, base, lane, 32);
  } else if (lane == 0) {
    raise_return_signal(r, t);
  }
  __syncwarp();  // every lane's stores before lane 0 reports the task
}

/// Consumer 0, once task `index` is published: its trace record (with the in-task `marks`
/// where the task kind sets them: `marked`) and the processor's completion count (`fenced`:
/// consumer 0 fenced while publishing the task, mailbox_complete).
__device__ __forceinline__ void report_task(const Rank& r, unsigned index, unsigned long long start,
                                            unsigned long long end, const unsigned long long* marks, bool marked,
                                            unsigned done, bool fenced) {
  const unsigned pid = processor_index(r.p);
  record_trace(r, pid, index, start, end, marked ? (unsigned)(marks[0] - start) : 0u,
               marked ? (unsigned)(marks[1] - start) : 0u);
  mailbox_complete(r, pid, done, fenced);
  // The third wave: task number 0 done, its mailbox slot is free (the producer read
  // it long ago): combine log slot pid becomes this processor's task number 2 (queue.cuh
  // combines_posted; the scheduler counts it assigned from the start).
  if (done == 1 && combines_posted(r) && pid < combine_count(r)) {
    mailbox_stage(r, pid, 2u, pid);
    st_release_gpu(&r.assigned()[pid], 3u);
  }
}

__device__ void wgmma_consumer(const Rank& r, const Engine::Smem& s, hw::Ring<2>& ring,
                               hw::Ring<FDM_STAGES>& pipe) {
  __shared__ unsigned s_ready;
  __shared__ fdm_task s_held;
  __shared__ unsigned long long s_marks[2];  // a task's in-task marks (gemm_consume, combine_stream)
  const unsigned c = threadIdx.x - hw::kProducerThreads;  // 0..255
  unsigned done = 0;
  PendingReturn pending{s_held};
  for (;;) {
    if (pending.held) {
      // Publish the held tile now unless the next task is already waiting (consumer 0
      // decides for all: the slot may become ready between two threads' looks).
      if (c == 0) s_ready = Engine::ring_ready(s, ring);
      hw::consumer_sync();
      if (!s_ready) pending.publish(r, c);
    }
    // The task stays in its ring slot (read in place) until the consumers release it at the
    // end of the task.
    const RingTask* task = Engine::ring_wait<RingTask>(s, ring);
    const unsigned index = task->index;
    if (index == kStop) {
      pending.publish(r, c);
      return;
    }
    const unsigned long long start = now_ns();
    // The trace's end time is taken once the tile's results are stored (and, but for a tile
    // held in `pending`, fenced) but before anything that depends on them is published
    // (trace conformance).
    unsigned long long end;
    if (task->t.kind == FDM_TASK_COMBINE) {
      pending.publish(r, c);  // a combine's wait must never hold back a signal
      if constexpr (combine_stream::kEnabled) {
        combine_stream::consume(r, s, pipe, c, task->t, combine_slots(s), s_marks);
      } else {
        run_combine<hw::kConsumerThreads, kStagedCombine>(r, task->t, c, combine_slots(s),
                                                          [] { hw::consumer_sync(); });
      }
      hw::consumer_sync();
      end = now_ns();
    } else {
      const bool paired = kPairs && task->paired;
      if (paired) pipe = hw::Ring<FDM_STAGES>{};  // the producer re-initialised the stages
      end = gemm_consume(r, s, pipe, task->t, c, pending, s_marks, paired);
      // A tile stored on this GPU: consumer warp 0 alone publishes it and reports the task;
      // the other seven warps go on to the next task at once (run 129: Qwen3 and OLMoE -1.2%,
      // T16384 E8 -0.6%; perf-notes v38 (c)).
      if (task->t.kind == FDM_TASK_GEMM0 || on_this_gpu(r.p, task->t.source_rank)) {
        // Warp 0's test as a value every lane takes from lane 0: a branch ptxas can prove
        // warp-uniform. Tested per thread (`c < 32`), the branch may diverge for all ptxas
        // knows, and its reconvergence made the paper layers' images at E >= 64 spill 24
        // bytes through their fallbacks (perf-notes v38 (d)).
        if (__shfl_sync(0xFFFFFFFFu, c, 0) < 32) {
          // Experiment FDM_SELF_WAVE: task number 0 may have been derived, not posted: the OS
          // block's post first (the words its wave's fence released), checked to be this task.
          // A failure raised the abort flag, which ends every role at its next wait; the task
          // is published all the same, as any task is once its wait has given up.
          if constexpr (kSelfWave) {
            if (c == 0 && done == 0) {
              Deadline first_post(r.p->timeout_ns);
              (void)first_task_posted(r, processor_index(r.p), index, first_post);
            }
          }
          if constexpr (Engine::kTmaStore) {
            // Experiment FDM_TMA_STORE: the tile's tensor stores (consumer 0 issued them) written
            // and ordered before the generic release that announces the rows (a no-op where the
            // threads stored the tile: no bulk group is outstanding).
            if (c == 0 && (task->t.kind == FDM_TASK_GEMM0 || kTmaStoreGemm1)) {
              hw::bulk_wait_written();
              hw::fence_proxy_async_global();
            }
          }
          publish_local_tile(r, task->t, c);
          // Lane 0 fenced in publish_local_tile (before the row-tile count, or signal_to's).
          if (c == 0) report_task(r, index, start, end, s_marks, true, ++done, true);
        }
        Engine::ring_release(s, ring);
        ring.advance();
        continue;
      }
      pending.hold(task->t, c);  // a peer's return rows: fenced and signalled at a pause
    }
    hw::consumer_sync();
    // In-task marks: every GEMM task's, a streamed combine's (combine_stream::consume).
    const bool marked = task->t.kind != FDM_TASK_COMBINE || combine_stream::kEnabled;
    if (c == 0) report_task(r, index, start, end, s_marks, marked, ++done, false);
    Engine::ring_release(s, ring);
    ring.advance();
  }
}

/// Whether this processor block has a cluster peer that is a processor too (FDM_PAIRS: blocks
/// 2c and 2c + 1 form cluster c, and a rank's blocks per rank are even, so its processor 0's
/// peer is the OS block; fresh_block_index).
__device__ __forceinline__ bool in_pair_cluster(const fdm_params* p) {
  return kPairs && fresh_block_index() % p->blocks_per_rank >= 2u;
}

/// Engine set-up of a processor block, by all its threads, before they split by role; with
/// paired tasks also the `pair_ready` barrier (align_for_pair), set up in both CTAs of a
/// cluster before either can signal the other's.
__device__ Engine::Smem processor_init(const Rank& r, char* smem, unsigned pair_ready) {
  const Engine::Smem s = Engine::carve(smem);
  if (threadIdx.x == 0) {
    Engine::init(s);
    if (kPairs) hw::mbar_init(pair_ready, 1);
    hw::prefetch_tensormap(&r.p->tmap_up);
    hw::prefetch_tensormap(&r.p->tmap_down);
    if (r.maps_intermediate()) hw::prefetch_tensormap(&r.p->tmap_inter[r.local]);
    if (kGated) hw::prefetch_tensormap(&r.p->tmap_gate);
  }
  __syncthreads();
  if constexpr (kPairs) {
    if (in_pair_cluster(r.p)) hw::cluster_sync();
  }
  return s;
}

/// Processor `pid` of rank r: initialises the engine, splits into producer and consumers
/// (each warpgroup's role one branch of a single if/else, which setmaxnreg needs), and runs
/// the tasks its mailbox gives it until the stop word. The roles derive `pid` again where
/// they use it (processor_index), so nothing holds it across their loops.
__device__ void processor(const Rank& r, unsigned pid, char* smem) {
  // The peers' hand-off before each paired task (align_for_pair): one arrival, the peer's, a
  // phase.
  __shared__ __align__(8) unsigned long long pair_ready_bar;
  const unsigned pair_ready = hw::smem_u32(&pair_ready_bar);
  const Engine::Smem s = processor_init(r, smem, pair_ready);
  hw::Ring<2> ring;
  hw::Ring<FDM_STAGES> pipe;
  const bool handed = kSelfWave && threadIdx.x < 32 && hand_own_first_task(r, s, ring);
  if (threadIdx.x < hw::kProducerThreads) {
    hw::regs_decrease<hw::kProducerRegs>();
    wgmma_producer(r, s, ring, pipe, pair_ready, handed);
  } else {
    hw::regs_increase<hw::kConsumerRegs>();
    wgmma_consumer(r, s, ring, pipe);
  }
  // No CTA leaves while its peer may still multicast into it or arrive on its barriers.
  if constexpr (kPairs) {
    if (in_pair_cluster(r.p)) hw::cluster_sync();
  }
}
#endif  // FDM_ENGINE == 1
