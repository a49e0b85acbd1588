// hopper.cuh -- PTX wrappers for the Hopper (sm_90a) tile engine: mbarriers, the tensor
// memory accelerator (TMA), cp.async completing on an mbarrier, wgmma fences and
// descriptors, register reallocation and named barriers.
//
// Compiled for sm_90a (`__CUDA_ARCH_FEAT_SM90_ALL`), the mbarrier and bulk-copy wrappers for
// any sm_90 image; kernels/tile_wgmma.cuh builds the engine on these, and kernels/fdm_wgmma_ops.h (generated) holds the wgmma instructions.
// Every wrapper is one instruction; the ordering rules they rely on are written next to the
// users in tile_wgmma.cuh.
#pragma once

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FDM_HOPPER 1
#else
#define FDM_HOPPER 0
#endif

// The mbarrier and bulk-copy wrappers need sm_90 only, not its `a` features: the mma.sync
// engine's sm_90 image may use them too (the bulk dispatch did, an experiment removed after
// run 193: its patch beside that run's script).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define FDM_SM90 1
#else
#define FDM_SM90 0
#endif

#if FDM_SM90
namespace flashdmoe {
namespace hopper {

__device__ __forceinline__ unsigned smem_u32(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// ─── mbarriers (64-bit shared-memory barriers with a phase bit and a transaction count) ───
__device__ __forceinline__ void mbar_init(unsigned bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
/// Makes initialised barriers visible to the async proxy (TMA) before anyone uses them.
__device__ __forceinline__ void mbar_fence_init() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}
__device__ __forceinline__ void mbar_arrive(unsigned bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
/// Arrives `count` times at once (a 2-CTA cluster's tile of this CTA alone: its consumers
/// stand in for the peer's, FDM_CLUSTER_MIXED).
__device__ __forceinline__ void mbar_arrive_count(unsigned bar, unsigned count) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
/// Arrives and announces `bytes` more bytes the async proxy will deliver to this phase.
__device__ __forceinline__ void mbar_arrive_expect_tx(unsigned bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
/// Whether the phase of parity `parity` has completed (acquire at CTA scope).
__device__ __forceinline__ bool mbar_try_wait(unsigned bar, unsigned parity) {
  unsigned ok;
  asm volatile(
      "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}"
      : "=r"(ok)
      : "r"(bar), "r"(parity)
      : "memory");
  return ok != 0;
}
/// Waits for the phase of parity `parity`. Never needs a deadline: every phase it waits for
/// completes by construction (a load or a consumer release that is already on its way).
__device__ __forceinline__ void mbar_wait(unsigned bar, unsigned parity) {
  while (!mbar_try_wait(bar, parity)) {
  }
}

/// Returns a barrier's memory to plain shared memory (every phase it was used for complete).
__device__ __forceinline__ void mbar_inval(unsigned bar) {
  asm volatile("mbarrier.inval.shared::cta.b64 [%0];" ::"r"(bar) : "memory");
}

// ─── bulk copies ─────────────────────────────────────────────────────────────────────────
/// Orders this thread's generic-proxy accesses of global memory with its async-proxy ones
/// (TMA) on either side: a GEMM0 tile's rows, stored by the consumers, are read by a later
/// GEMM1's TMA loads (the writers fence after their stores, the loading thread before it
/// issues the loads, with the usual release / acquire chain between them).
__device__ __forceinline__ void fence_proxy_async_global() { asm volatile("fence.proxy.async.global;" ::: "memory"); }
/// Copies `bytes` (a multiple of 16; `dst` and `src` 16-byte aligned) from global memory to
/// shared memory at `dst` as one bulk copy; its bytes complete the current phase of `bar`.
__device__ __forceinline__ void bulk_load(unsigned dst, const void* src, unsigned bytes, unsigned bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(dst),
               "l"(src), "r"(bytes), "r"(bar)
               : "memory");
}

/// Copies `bytes` (a multiple of 16; both 16-byte aligned) from shared memory at `src` to
/// global memory at `dst` (this GPU's or a peer's) as one bulk copy, committed as its own bulk
/// group.
__device__ __forceinline__ void bulk_store(void* dst, unsigned src, unsigned bytes) {
  asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;" ::"l"(dst), "r"(src), "r"(bytes)
               : "memory");
  asm volatile("cp.async.bulk.commit_group;" ::: "memory");
}
/// Waits until this thread's bulk stores have read their shared memory (it may be reused).
__device__ __forceinline__ void bulk_wait_read() { asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory"); }
/// Waits until this thread's bulk stores are written (visible to this thread; a proxy fence
/// then orders them with its generic-proxy accesses).
__device__ __forceinline__ void bulk_wait_written() { asm volatile("cp.async.bulk.wait_group 0;" ::: "memory"); }

}  // namespace hopper
}  // namespace flashdmoe
#endif  // FDM_SM90

#if FDM_HOPPER
namespace flashdmoe {
namespace hopper {

// ─── cp.async (16 bytes, L2 only) completing on an mbarrier ──────────────────────────────
__device__ __forceinline__ void cp_async_16(unsigned dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
}
/// The barrier's pending count drops by one once every earlier cp.async of this thread has
/// landed (`.noinc`: the arrival is one of the barrier's expected arrivals).
__device__ __forceinline__ void cp_async_arrive_noinc(unsigned bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(bar) : "memory");
}

// ─── TMA ─────────────────────────────────────────────────────────────────────────────────
__device__ __forceinline__ void prefetch_tensormap(const void* map) {
  asm volatile("prefetch.tensormap [%0];" ::"l"(map) : "memory");
}
/// Loads the box at (c0 innermost, c1) of the 2-D tensor `map` into shared memory at `dst`;
/// its bytes complete the current phase of `bar`.
__device__ __forceinline__ void tma_load_2d(unsigned dst, const void* map, int c0, int c1, unsigned bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];" ::"r"(
          dst),
      "l"(map), "r"(bar), "r"(c0), "r"(c1)
      : "memory");
}

/// Stores shared memory at `src` (laid out as the map's swizzle puts a box) as the box at (c0
/// innermost, c1) of the 2-D tensor `map`, clipped at the tensor's edges, committed as its own
/// bulk group (bulk_wait_read before `src` is written again, bulk_wait_written before the rows
/// are announced).
__device__ __forceinline__ void tma_store_2d(const void* map, unsigned src, int c0, int c1) {
  asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%2, %3}], [%1];" ::"l"(map), "r"(src),
               "r"(c0), "r"(c1)
               : "memory");
  asm volatile("cp.async.bulk.commit_group;" ::: "memory");
}
/// Orders this thread's generic-proxy writes of shared memory before the async proxy's reads
/// of it (a bulk or tensor store of a buffer the thread just wrote).
__device__ __forceinline__ void fence_proxy_async_shared() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

/// bulk_load into the shared memory at `dst` of every CTA of the cluster in `mask`, each CTA's
/// `bar` completing with the bytes it receives.
__device__ __forceinline__ void bulk_load_multicast(unsigned dst, const void* src, unsigned bytes, unsigned bar,
                                                    unsigned short mask) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1], %2, [%3], "
      "%4;" ::"r"(dst),
      "l"(src), "r"(bytes), "r"(bar), "h"(mask)
      : "memory");
}

// ─── 2-CTA clusters (the tile bench's FDM_CLUSTER, the MoE kernel's FDM_PAIRS) ──────────────
/// This CTA's rank in its cluster, the cluster's index in the grid, and the grid's clusters.
__device__ __forceinline__ unsigned cluster_ctarank() {
  unsigned r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}
__device__ __forceinline__ unsigned cluster_index() {
  unsigned r;
  asm volatile("mov.u32 %0, %%clusterid.x;" : "=r"(r));
  return r;
}
__device__ __forceinline__ unsigned cluster_count() {
  unsigned r;
  asm volatile("mov.u32 %0, %%nclusterid.x;" : "=r"(r));
  return r;
}
/// Arrives on the barrier at shared address `bar` of cluster CTA `rank` (the same offset as
/// this CTA's `bar`). The default semantics (release at CTA scope), as CUTLASS's
/// ClusterBarrier::arrive(cta_id): what it orders is this warp's wgmma reads of its own
/// stage, complete at wgmma.wait_group, before the peer producer's multicast overwrites it.
/// `.release.cluster` compiled to MEMBAR.ALL.GPU before every arrive and cost the 2-CTA
/// tile 16% (run 139).
__device__ __forceinline__ void mbar_arrive_cluster(unsigned bar, unsigned rank) {
  asm volatile(
      "{\n.reg .b32 remote;\nmapa.shared::cluster.u32 remote, %0, %1;\n"
      "mbarrier.arrive.shared::cluster.b64 _, [remote];\n}" ::"r"(bar),
      "r"(rank)
      : "memory");
}
/// Arrives on the barrier `bar` of cluster CTA `rank` releasing at cluster scope: what this
/// thread did before (a barrier re-initialisation, FDM_CLUSTER_MIXED) is visible to the peer
/// once it has waited on that barrier with `mbar_wait_cluster`. One fence: for hand-offs, not
/// a pipeline's every stage (mbar_arrive_cluster).
__device__ __forceinline__ void mbar_signal_cluster(unsigned bar, unsigned rank) {
  asm volatile(
      "{\n.reg .b32 remote;\nmapa.shared::cluster.u32 remote, %0, %1;\n"
      "mbarrier.arrive.release.cluster.shared::cluster.b64 _, [remote];\n}" ::"r"(bar),
      "r"(rank)
      : "memory");
}
/// Whether phase `parity` of this CTA's barrier `bar` has completed, acquiring at cluster
/// scope what the peer released with `mbar_signal_cluster` (one try: for waits with a deadline).
__device__ __forceinline__ bool mbar_try_wait_cluster(unsigned bar, unsigned parity) {
  unsigned ok;
  asm volatile(
      "{\n.reg .pred p;\nmbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;\n"
      "selp.u32 %0, 1, 0, p;\n}"
      : "=r"(ok)
      : "r"(bar), "r"(parity)
      : "memory");
  return ok != 0;
}
/// Waits for phase `parity` of this CTA's barrier `bar` (mbar_try_wait_cluster until it has).
__device__ __forceinline__ void mbar_wait_cluster(unsigned bar, unsigned parity) {
  while (!mbar_try_wait_cluster(bar, parity)) {
  }
}
/// Every thread of both CTAs of the cluster (aligned: whole warps): what each did before is
/// visible to the other after (barrier initialisation; the end, so that no CTA exits while its
/// peer may still write into its shared memory or arrive on its barriers).
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}
/// tma_load_2d into shared address `dst` and barrier `bar` of every CTA in `mask` (bit r: rank
/// r of the cluster), at the same offsets in each.
__device__ __forceinline__ void tma_load_2d_multicast(unsigned dst, const void* map, int c0, int c1, unsigned bar,
                                                      unsigned short mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster"
      " [%0], [%1, {%3, %4}], [%2], %5;" ::"r"(dst),
      "l"(map), "r"(bar), "r"(c0), "r"(c1), "h"(mask)
      : "memory");
}

// ─── stmatrix ────────────────────────────────────────────────────────────────────────────
/// Stores four 8x8 matrices of 16-bit elements from the warp's registers: lane l's r[i] holds
/// elements (l / 4, 2 (l % 4) .. +1) of matrix i, and lane l gives the address of row l % 8 of
/// matrix l / 8 (16 bytes, 16-byte aligned). One instruction for what takes four 4-byte stores a
/// lane, in the layout of a wgmma accumulator's 8-column blocks.
__device__ __forceinline__ void stmatrix_x4(unsigned addr, const unsigned (&r)[4]) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};" ::"r"(addr), "r"(r[0]), "r"(r[1]),
               "r"(r[2]), "r"(r[3])
               : "memory");
}

// ─── wgmma ───────────────────────────────────────────────────────────────────────────────
/// Orders this warpgroup's register and shared-memory accesses before the wgmmas that follow.
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N> __device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
/// Keeps the compiler from moving accumulator accesses across a wgmma fence/wait.
__device__ __forceinline__ void fence_operand(float& r) { asm volatile("" : "+f"(r)::"memory"); }

/// Shared-memory matrix descriptor of a K-major operand laid out in 128-byte rows with the
/// 128-byte swizzle (chunk c of row r at chunk c ^ (r % 8), 1024-byte atoms of 8 rows):
/// start address >> 4 (bits 0-13), leading offset unused for this layout (0), stride offset
/// 1024 >> 4 between 8-row atoms (bits 32-45), layout type 1 = 128-byte swizzle (bits 62-63).
__device__ __forceinline__ unsigned long long smem_desc(unsigned addr) {
  return (unsigned long long)((addr & 0x3FFFFu) >> 4) | ((unsigned long long)(1024 >> 4) << 32) | (1ull << 62);
}

// ─── registers and barriers ──────────────────────────────────────────────────────────────
template <int N> __device__ __forceinline__ void regs_increase() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(N));
}
template <int N> __device__ __forceinline__ void regs_decrease() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(N));
}
/// Named barrier `id` (1..15; 0 is __syncthreads) among `count` threads (a multiple of 32).
__device__ __forceinline__ void named_sync(unsigned id, unsigned count) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(count) : "memory");
}

}  // namespace hopper
}  // namespace flashdmoe
#endif  // FDM_HOPPER
