// moe.cu -- the FlashDMoE persistent kernel's entry point: one cooperative launch runs a
// whole MoE layer forward (gate, routing, dispatch, GEMM0 + activation, GEMM1, combine) for
// every rank that lives on this device, scheduling its own tile tasks. docs/kernel.md tells
// the story; each role lives in the header named after its flashdmoe-core counterpart:
//
//   config.cuh      the specialisation (FDM_* defines) and the tile engine it selects
//   sync.cuh        acquire/release, fences, clock, deadlines          (core: sync)
//   heap.cuh        a rank's heap, scratch, control words, diagnostics  (core: runtime::heap)
//   route.cuh       A1, A3: router GEMM, placement; topk.cuh A2: top-k (core: routing)
//   placer.cuh      experiment FDM_STREAM: A1-A3 chunk by chunk by the first processors,
//                   each completed row tile's GEMM0 tasks queued at once (core: runtime::placer)
//   dispatch.cuh    A4: rows to their owners, dispatch signals         (core: runtime::dispatch)
//   queue.cuh       the task log                                       (core: runtime::queue)
//   mailbox.cuh     scheduler -> processor handoff                     (core: runtime::mailbox)
//   subscriber.cuh  dispatch and return subscribers                    (core: runtime::subscriber)
//   scheduler.cuh   the scheduler warp                                 (core: runtime::scheduler)
//   processor.cuh / processor_wgmma.cuh   processors on the mma.sync / Hopper engine
//                                                                      (core: runtime::processor)
//   combine.cuh, completion.cuh   the combine task; what a finished task publishes
//
// Structure:
//   Phase A (all blocks of the device, three or four grid-wide barriers; nothing here waits on
//   another device, so the barriers are local): reset counters + A1 router GEMM; A2 top-k (a
//   warp a token, then a barrier and within-chunk positions, a block a chunk; for small routers
//   at large T a block a chunk, a thread a token, no barrier between); A3 global
//   positions and capacity drops; A4 (no barrier after it)
//   copies of the kept rows and per-packet dispatch signals.
//   Phase B (per rank: a partition of blocks_per_rank blocks): block 0 = the OS block (it
//   first enqueues the GEMM0 tasks of the packets read in place and hands the first wave of
//   them to the processors itself, raises the signals nobody copies for, then warp 0 =
//   scheduler, warp 1 = dispatch subscriber, warps 2.. = return subscribers); blocks 1.. =
//   processors.
// Every spin-wait has a deadline (globaltimer) and an abort flag; the first role to time out
// records who waited for what in the diagnostics record and raises the abort flag.
#include <cooperative_groups.h>

#include "config.cuh"
#include "placer.cuh"
#include "route.cuh"
#include "scheduler.cuh"
#if FDM_ENGINE == 1
#include "processor_wgmma.cuh"
#else
#include "processor.cuh"
#endif

namespace cg = cooperative_groups;

// With paired GEMM0 tasks (FDM_PAIRS) the grid runs in 2-CTA clusters, blocks 2c and 2c + 1
// (a rank's blocks per rank are even: MoeSpec::pairs), launched cooperatively as before (run
// 145: co-resident at this footprint). Phase A and the OS block ignore the clusters.
#if FDM_PAIRS
#define FDM_MOE_CLUSTER_DIMS __cluster_dims__(2, 1, 1)
#else
#define FDM_MOE_CLUSTER_DIMS
#endif

extern "C" __global__ void FDM_MOE_CLUSTER_DIMS __launch_bounds__(kThreads, 1)
    fdm_moe_forward(const __grid_constant__ fdm_params params) {
  extern __shared__ __align__(128) char smem[];
  const fdm_params* p = &params;
  cg::grid_group grid = cg::this_grid();

  // Block 0 takes this forward's epoch, the one after the device's last (params.rs,
  // epoch_word), stores it back for the next launch (stream order makes it visible there; no
  // host step, so a replayed CUDA graph advances too) and hands it to every block through the
  // control word that make_rank reads: valid from the first grid barrier on, which every use
  // of Rank::epoch follows.
  char* control0 = reinterpret_cast<char*>(make_rank(p, 0).control());
  if (threadIdx.x == 0) mark_raw_latest(control0, kLastBlockStart);
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    const unsigned long long t0 = now_ns();
    const unsigned epoch = fdm_epoch_next(ld_volatile(p->epoch_word));
    *p->epoch_word = epoch;
    for (unsigned local = 0; local < p->local_ranks; ++local) {
      Rank r = make_rank(p, local);
      r.control()[kKernelStartLo] = (unsigned)t0;
      r.control()[kKernelStartHi] = (unsigned)(t0 >> 32);
      r.control()[kEpoch] = epoch;
    }
  }
  // Block 0 marks the phases for CudaLayer::phase_times (ns since the kernel start).
  reset_counters(p);
  // Experiment FDM_STREAM (placer.cuh): one GPU, a world of one rank, more than one chunk.
  // Phase A is the reset and its barrier; the placers route and place after it.
  const bool stream = streams(p);
  if (stream) reset_stream(make_rank(p, 0));
  if (threadIdx.x == 0) mark_raw_latest(control0, kLastResetDone);
  if (!stream) router_gemm(p, smem);
  if (threadIdx.x == 0) mark_raw_latest(control0, kLastRouterDone);
  grid.sync();
  mark_phase(p, kRoutedNs);
  if (stream) {
    mark_phase(p, kChosenNs);  // the placers mark kPlacedNs (the last chunk's)
  } else {
    route(p, smem);
    // Where each rank's tokens are one routing chunk (T <= kChunk), the block that counted
    // rank j's chunk (route's job j, as place_chunks' job j: both deal jobs by block index)
    // places it at once, from what it wrote itself and A2's first half (before route's inner
    // barrier): one grid barrier and A3's own round trips fewer (run 180, T128 E8: 0.095 ->
    // 0.093 ms; perf-notes v48 (a)). kChosenNs then marks placement too.
    const bool one_chunk = p->tokens <= (unsigned)kChunk;
    if (one_chunk) place_chunks(p, reinterpret_cast<unsigned*>(smem));
    grid.sync();
    mark_phase(p, kChosenNs);
    if (!one_chunk) {
      place_chunks(p, reinterpret_cast<unsigned*>(smem));
      grid.sync();
    }
    mark_phase(p, kPlacedNs);
    dispatch_packets(p);
  }

  const unsigned local = blockIdx.x / p->blocks_per_rank;
  if (local >= p->local_ranks) return;  // leftover blocks of an uneven partition
  const unsigned role = blockIdx.x % p->blocks_per_rank;
  // Streamed, the first processors place the chunks before they take tasks (placer.cuh),
  // before the rank is derived: nothing of it stays live across the placer's call (kept
  // live, the 128-row-router images spilled 8 bytes).
  if (stream && role != 0 && role - 1 < stream_placers(p)) place_streamed(p, role - 1, smem);
  const Rank r = make_rank(p, local);
  if (role == 0) {
    OsShared& s = *reinterpret_cast<OsShared*>(smem);
    // Streamed (placer.cuh): the placers queue the GEMM0 tasks; the OS block only sets up.
    if (stream) stream_os_init(r, s);
    else enqueue_in_place(r, s);
    const unsigned warp = threadIdx.x / 32;
    // The scheduler warp starts its rounds at once; the other warps raise the in-place
    // dispatch signals, then take their roles (run 175, perf-notes v47 (a): T128 E8's
    // second-wave GEMM0 tasks had waited 5.1 µs for the first round behind those signals,
    // 2.7 µs since; the forward -3%). Streamed, they first wait for every chunk placed (the
    // packet sizes and token lists they work from), while the scheduler hands out the row
    // tiles the placers queue.
    if (warp == 0) {
      scheduler(r, s);
    } else if (!stream || await_placement(r, s, threadIdx.x - 32, kThreads - 32)) {
      raise_dispatch_signals_by(r, s, threadIdx.x - 32, kThreads - 32);
      if (warp == 1) dispatch_subscriber(r, s);
      else return_subscriber(r, s, warp - 2, kWarps - 2);
    }
  } else {
    processor(r, role - 1, smem);
  }
  // Each warp's end: the last one tells how long the kernel ran on after its last task. The
  // rank is derived again from the block index: keeping `r` (or `local`) live across the
  // processor's main loop made the mma.sync 128x256 images spill.
  if (threadIdx.x % 32 == 0) mark_latest(make_rank(p, blockIdx.x / p->blocks_per_rank), kExitNs);
}
