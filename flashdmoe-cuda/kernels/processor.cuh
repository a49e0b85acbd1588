// processor.cuh -- a processor block on the mma.sync tile engine (sm_80+; core's
// `runtime::Processor`): takes one task at a time from its mailbox, runs it on all 256 threads
// (GEMM0 + activation into the intermediate rows; GEMM1 into the source's return rows; or a
// combine), publishes what it unlocks (a completed row tile's GEMM1 tasks, a return signal)
// and reports completion. The Hopper engine's processor is processor_wgmma.cuh.
#pragma once

#include "combine.cuh"
#include "completion.cuh"
#include "mailbox.cuh"
#include "queue.cuh"

#if FDM_ENGINE == 0
// A template so that only the branch of the configured activation is instantiated.
template <bool kGatedT>
__device__ void run_gemm0(const Rank& r, const fdm_task& t, char* smem) {
  using Gemm0 = TileGemm<kMode, kBM, kBN, ModeTraits<kMode>::kBK, 4, 2, 4, kGatedT ? 2 : 1>;
  const unsigned e = r.weight_slot(t.owner_rank, t.local_expert);  // weights of this GPU
  const Elem* A = reinterpret_cast<const Elem*>(r.heap + t.input_offset);
  const unsigned long long col0 = (unsigned long long)t.col_tile * kBN;
  const Elem* up = reinterpret_cast<const Elem*>(r.p->w_up) + ((unsigned long long)e * kI + col0) * kH;
  Elem* out = reinterpret_cast<Elem*>(r.heap + t.output_offset);
  typename Gemm0::Accum acc;
  if constexpr (kGatedT) {
    const Elem* gate = reinterpret_cast<const Elem*>(r.p->w_gate) + ((unsigned long long)e * kI + col0) * kH;
    typename Gemm0::Accum acc_up;
    Gemm0::gemm_dual(acc, acc_up, A, kH, (int)t.valid_rows, gate, up, kH, kBN, kH, smem);
    if constexpr (kBias) {
      Gemm0::add_bias(acc, reinterpret_cast<const Elem*>(r.p->b_gate) + (unsigned long long)e * kI + col0, kBN);
      Gemm0::add_bias(acc_up, reinterpret_cast<const Elem*>(r.p->b_up) + (unsigned long long)e * kI + col0, kBN);
    }
    Gemm0::gated(acc, acc_up, [](float g, float u) { return gated_act<kFastAct>(g, u); });
    Gemm0::template store<Elem>(acc, out, kI, (int)t.valid_rows, kBN, smem);
  } else {
    Gemm0::gemm(acc, A, kH, (int)t.valid_rows, up, kH, kBN, kH, smem);
    const Elem* bias = kBias ? reinterpret_cast<const Elem*>(r.p->b_up) + (unsigned long long)e * kI + col0 : nullptr;
    constexpr Act act = FDM_ACT == 0 ? Act::Relu : Act::Gelu;
    Gemm0::template store<Elem>(acc, out, kI, (int)t.valid_rows, kBN, smem, nullptr, EpilogueOp<act, Elem>{bias, nullptr});
  }
}

__device__ void run_gemm1(const Rank& r, const fdm_task& t, char* smem) {
  const unsigned e = r.weight_slot(t.owner_rank, t.local_expert);  // weights of this GPU
  const Elem* A = reinterpret_cast<const Elem*>(r.heap + t.input_offset);
  const unsigned long long col0 = (unsigned long long)t.col_tile * kBN;
  const Elem* down = reinterpret_cast<const Elem*>(r.p->w_down) + ((unsigned long long)e * kH + col0) * kI;
  char* dest = r.heap_of(t.source_rank);
  Elem* out = reinterpret_cast<Elem*>(dest + t.output_offset);
  typename Gemm1::Accum acc;
  Gemm1::gemm(acc, A, kI, (int)t.valid_rows, down, kI, kBN, kI, smem);
  const Elem* bias = kBias ? reinterpret_cast<const Elem*>(r.p->b_down) + (unsigned long long)e * kH + col0 : nullptr;
  // The rows' routing weights, dispatched with them (the heap's section has a row tile of
  // slack past its end, so a whole tile's read stays inside): the combine is a plain sum.
  const float* weight = reinterpret_cast<const float*>(
      r.heap + fdm_dispatch_weight(&r.p->layout, t.source_rank, t.local_expert, t.row_tile * kBM));
  Gemm1::store<Elem>(acc, out, kH, (int)t.valid_rows, kBN, smem, nullptr, EpilogueOp<Act::None, Elem>{bias, weight});
}

/// Processor `pid` of rank r: runs the tasks its mailbox gives it until the stop word.
__device__ void processor(const Rank& r, unsigned pid, char* smem) {
  __shared__ unsigned s_task;
  __shared__ unsigned s_base;
  unsigned consumed = 0;
  Deadline deadline(r.p->timeout_ns + r.p->timeout_ns / 2);
  for (;;) {
    if (threadIdx.x == 0) s_task = mailbox_wait(r, pid, consumed, deadline);
    __syncthreads();
    const unsigned ti = s_task;
    if (ti == kStop) return;
    const fdm_task t = r.tasks()[ti];
    const unsigned long long start = now_ns();
    // The trace's end time is taken once the tile's results are stored and fenced but before
    // anything that depends on them is published, so a dependent task never appears to start
    // before its prerequisite ended (trace conformance).
    unsigned long long end = 0;
    if (t.kind == FDM_TASK_GEMM0) {
      run_gemm0<kGated>(r, t, smem);
      // Row-tile counter: the processor completing it publishes the row tile's GEMM1 tasks.
      __threadfence();
      __syncthreads();
      end = now_ns();
      if (threadIdx.x == 0) s_base = complete_row_tile(r, t);
      __syncthreads();
      if (s_base != kStop) publish_gemm1(r, t, s_base, threadIdx.x, kThreads);
    } else if (t.kind == FDM_TASK_GEMM1) {
      run_gemm1(r, t, smem);
      fence_for(r.p, t.source_rank);  // returned rows before the signal
      __syncthreads();
      end = now_ns();
      if (threadIdx.x == 0) raise_return_signal(r, t);
    } else {
      run_combine<kThreads, false>(r, t, threadIdx.x, nullptr, [] {});
      __syncthreads();
      end = now_ns();
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      record_trace(r, pid, ti, start, end);
      // Release: the relaxed form (a GEMM task fenced after taking the task) made this image spill.
      mailbox_complete(r, pid, ++consumed, false);
      deadline.progress();
    }
  }
}
#endif  // FDM_ENGINE == 0
