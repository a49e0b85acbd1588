// sync.cuh -- the memory-model vocabulary of the kernel (flashdmoe-core's `sync` facade on
// the GPU): acquire loads, release stores, the fences that order data before a signal, the
// clock and per-wait deadlines.
//
// Memory-ordering contract (docs/protocol.md; core's runtime follows the same):
//   * data stores, then a fence, then a release store of the signal, both at system scope
//     when the receiver is on another GPU and at GPU scope when it is on this one
//     (fence_for, signal_to); receivers ld.acquire.sys the signal before reading data;
//   * task descriptors: written, then the task's ready flag st.release.gpu = epoch;
//   * mailboxes: the scheduler writes the slots of a round, fences (fence.acq_rel.gpu) and
//     stores the assigned counts relaxed (a release pattern); processors ld.acquire.gpu them;
//     processors release their completion counts (a relaxed store after the task's own
//     publication fence, else st.release.gpu: mailbox_complete), which the scheduler loads
//     relaxed, a round's loads at once, then fences (an acquire pattern);
//   * row-tile and combine counters: __threadfence() then atomicAdd; the thread that
//     completes a counter fences again before publishing the follow-up tasks.
#pragma once

#include "config.cuh"

__device__ __forceinline__ unsigned long long ld_acquire_sys(const unsigned long long* p) {
  unsigned long long v;
  asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ unsigned ld_acquire_gpu(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void st_release_gpu(unsigned* p, unsigned v) {
  asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
/// Relaxed loads and stores, for a batch ordered by one fence (fence_acq_rel_gpu) instead of
/// one acquire or release each: loads issued back to back overlap their latencies.
__device__ __forceinline__ unsigned ld_relaxed_gpu(const unsigned* p) {
  unsigned v;
  asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void st_relaxed_gpu(unsigned* p, unsigned v) {
  asm volatile("st.relaxed.gpu.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
/// After relaxed loads: they acquire (later accesses see what their writers released); before
/// relaxed stores: they release (earlier accesses are visible to whoever sees them).
__device__ __forceinline__ void fence_acq_rel_gpu() { asm volatile("fence.acq_rel.gpu;" ::: "memory"); }
/// Release-only fences (PTX 8.6, sm_90): what st.release lowers to (MEMBAR, no L1
/// invalidation: fence.acq_rel adds a CCTL.IVALL for its acquire half); fence.acq_rel before
/// sm_90.
__device__ __forceinline__ void fence_release_gpu() {
#if __CUDA_ARCH__ >= 900
  asm volatile("fence.release.gpu;" ::: "memory");
#else
  fence_acq_rel_gpu();
#endif
}
__device__ __forceinline__ void fence_release_sys() {
#if __CUDA_ARCH__ >= 900
  asm volatile("fence.release.sys;" ::: "memory");
#else
  asm volatile("fence.acq_rel.sys;" ::: "memory");
#endif
}
__device__ __forceinline__ void st_relaxed_gpu(unsigned long long* p, unsigned long long v) {
  asm volatile("st.relaxed.gpu.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}
__device__ __forceinline__ void st_relaxed_sys(unsigned long long* p, unsigned long long v) {
  asm volatile("st.relaxed.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}
__device__ __forceinline__ unsigned ld_volatile(const unsigned* p) {
  return *reinterpret_cast<const volatile unsigned*>(p);
}

/// Whether global rank `rank` lives on this GPU (the launch's ranks are consecutive).
__device__ __forceinline__ bool on_this_gpu(const fdm_params* p, unsigned rank) {
  return rank >= p->first_rank && rank < p->first_rank + p->local_ranks;
}
/// Orders this thread's earlier stores before its later ones for an observer on rank `rank`'s
/// GPU: a GPU-scope fence when that is this GPU (a system-scope fence costs more, and more
/// still while NVLink traffic is in flight), else a system-scope one.
/// (`fence.acq_rel.gpu` instead of `__threadfence()`'s `fence.sc.gpu`: level in run 127,
/// perf-notes v38 (a).)
__device__ __forceinline__ void fence_for(const fdm_params* p, unsigned rank) {
  if (on_this_gpu(p, rank)) {
    __threadfence();
  } else {
    __threadfence_system();
  }
}
/// Publishes signal word `v` at `sig` in rank `rank`'s heap with release semantics at the
/// narrowest scope that includes its readers (see fence_for): a release fence, then a relaxed
/// store, the release pattern that `st.release` names (the same SASS). Written as a
/// fence because it is one: every later relaxed store of this thread is released by it too,
/// which mailbox_complete's relaxed form relies on (a GEMM1 tile's completion count after
/// its return signal).
__device__ __forceinline__ void signal_to(const fdm_params* p, unsigned rank, unsigned long long* sig,
                                          unsigned long long v) {
  if (on_this_gpu(p, rank)) {
    fence_release_gpu();
    st_relaxed_gpu(sig, v);
  } else {
    fence_release_sys();
    st_relaxed_sys(sig, v);
  }
}

__device__ __forceinline__ unsigned long long now_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

/// A per-wait deadline: expires when no progress was made for `timeout` ns.
struct Deadline {
  unsigned long long limit;
  unsigned long long last;
  __device__ explicit Deadline(unsigned long long timeout) : limit(timeout), last(now_ns()) {}
  __device__ void progress() { last = now_ns(); }
  __device__ bool expired() const { return now_ns() - last > limit; }
};

/// Whether any lane of the whole, converged warp has `cond`. A warp role (scheduler,
/// subscribers) decides to leave on a timeout or an abort with this, never lane by lane: a
/// lane's own clock, deadline or load of the abort flag can differ from its neighbours', and
/// lanes left behind would wait forever in the full-mask collectives that follow.
__device__ __forceinline__ bool warp_any(bool cond) { return __any_sync(0xFFFFFFFFu, cond); }

/// Asks the 128-byte line holding `p` into L2 (a hint: nothing waits for it).
__device__ __forceinline__ void prefetch_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}
