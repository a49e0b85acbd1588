// dispatch.cuh -- phase A4 (core's `runtime::dispatch`): the kept rows of every packet go to
// their owner's heap dispatch region (proto offsets), and the epoch-stamped dispatch signal
// announces each packet once its rows are there. Zero-row packets are signalled by the OS
// block (subscriber.cuh), and so are the packets for experts on this same GPU when the
// engine reads rows in place (kReadsInPlace): those rows never move.
#pragma once

#include "heap.cuh"

/// Raises a dispatch signal: the packet's rows are in the owner's heap (the caller fenced
/// them), stamped with this forward's epoch; and marks the time of the latest one raised.
__device__ void raise_dispatch_signal(const Rank& r, unsigned e, unsigned rows) {
  const fdm_layout& l = r.p->layout;
  const unsigned owner = r.p->expert_owner[e], le = r.p->expert_local[e];
  unsigned long long* sig =
      reinterpret_cast<unsigned long long*>(r.heap_of(owner) + fdm_dispatch_signal(&l, r.global, le));
  fence_for(r.p, owner);
  signal_to(r.p, owner, sig, fdm_signal(r.epoch, rows));
  mark_latest(r, kDispatchedNs);
}

/// Rows one warp copies before it publishes them (one fence, one counter update).
constexpr unsigned kDispatchRows = 8;

/// Which copies a block makes in A4. Rows bound for another GPU cross NVLink at a fraction
/// of local bandwidth, so when there are such rows (`split`) `p->remote_copiers` of each
/// rank's processors (the host's choice, a quarter by default; the highest roles, which the
/// scheduler reaches last) copy only those, while the other processors and the leftover
/// blocks copy the rows that stay on this GPU and then start computing on them (every
/// processor copying leaves no one to split with: then all copy both). OS blocks copy
/// nothing. `index` numbers the block within its group of `count` blocks; `count` 0 means the
/// block copies nothing.
struct CopyGroup {
  bool split, remote;
  unsigned index, count;
};

/// The processors of each rank that copy only rows bound for other GPUs in A4 (its highest
/// roles: processors nproc - remote .. nproc - 1), 0 when the copies are not split.
__device__ __forceinline__ unsigned remote_copiers(const fdm_params* p) {
  const unsigned bpr = p->blocks_per_rank, ranks = p->local_ranks;
  const unsigned leftover = gridDim.x - bpr * ranks;
  unsigned remote = p->layout.world > ranks ? p->remote_copiers : 0u;  // 1..=bpr - 1 (host-checked)
  if (remote != 0 && bpr - 1 - remote == 0 && leftover == 0) remote = 0;  // too few blocks to split
  return remote;
}

__device__ CopyGroup copy_group(const fdm_params* p) {
  const unsigned bpr = p->blocks_per_rank, ranks = p->local_ranks;
  const unsigned used = bpr * ranks, leftover = gridDim.x - used;
  const unsigned remote = remote_copiers(p);
  const bool split = remote != 0;
  const unsigned local_per_rank = bpr - 1 - remote, local_count = ranks * local_per_rank + leftover;
  if (blockIdx.x >= used) return {split, false, ranks * local_per_rank + blockIdx.x - used, local_count};
  const unsigned rank = blockIdx.x / bpr, role = blockIdx.x % bpr;
  if (role == 0) return {split, false, 0, 0};
  if (role > local_per_rank) return {split, true, rank * remote + role - 1 - local_per_rank, ranks * remote};
  return {split, false, rank * local_per_rank + role - 1, local_count};
}

/// One row of kH elements from `src` to `dst` by a warp: each lane loads up to kRowChunk of
/// its 16-byte vectors into registers, then stores them. (A `dst[v] = src[v]` loop keeps one
/// load in flight a lane: the compiler cannot move a load above a store that may alias it, so
/// every vector waited a full memory round trip; under the GEMMs' traffic that was ~9.5 us a
/// 4 KiB row and held A4's copies to the peer at ~150 GB/s, run 63.)
constexpr unsigned kRowChunk = 8;
__device__ __forceinline__ void copy_row(const uint4* __restrict__ src, uint4* __restrict__ dst, unsigned lane) {
  constexpr unsigned kVecs = kH * sizeof(Elem) / 16;
  constexpr unsigned kPerLane = (kVecs + 31) / 32;
#pragma unroll 1
  for (unsigned c0 = 0; c0 < kPerLane; c0 += kRowChunk) {
    uint4 buf[kRowChunk];
#pragma unroll
    for (unsigned j = 0; j < kRowChunk; ++j) {
      const unsigned v = lane + 32 * (c0 + j);
      if (v < kVecs) buf[j] = __ldg(src + v);
    }
#pragma unroll
    for (unsigned j = 0; j < kRowChunk; ++j) {
      const unsigned v = lane + 32 * (c0 + j);
      if (v < kVecs) dst[v] = buf[j];
    }
  }
}

#ifdef FDM_BULK_DISPATCH
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
/// Experiment FDM_BULK_DISPATCH (perf-notes v49 (e)): A4's rows moved by bulk copies through
/// shared memory, lane 0 of a warp issuing a row's load (global -> shared, completing on an
/// mbarrier) and its store (shared -> the owner's heap, a peer GPU's or this one's) while up to
/// kBufs rows a warp are in flight, where the register copies keep 4 KiB a warp in flight and
/// need a warp's 32 lanes for it (run 184: 32 of 131 processors copy half the rows at P = 2).
/// The smem is the block's dynamic shared memory, free between placement's grid barrier and the
/// roles (the processors' pipelines initialise it afresh). Where a row is not a multiple of 16
/// bytes or no buffer fits, the register copies stay.
namespace bulk_dispatch {
constexpr unsigned kRowBytes = kH * sizeof(Elem);
constexpr unsigned kSlotBytes = (kRowBytes + 127) / 128 * 128;
constexpr unsigned kWarpBytes = (unsigned)FDM_SMEM_BYTES / kWarps / 128 * 128;
constexpr unsigned kFit = kWarpBytes > 128 ? (kWarpBytes - 128) / kSlotBytes : 0u;
constexpr unsigned kBufs = kFit < 4u ? kFit : 4u;
constexpr bool kOn = kRowBytes % 16 == 0 && kBufs >= 1;

using namespace flashdmoe::hopper;

/// This warp's share: kBufs row buffers, then kBufs mbarriers.
__device__ __forceinline__ char* warp_share(char* smem) { return smem + (threadIdx.x / 32) * kWarpBytes; }
__device__ __forceinline__ unsigned buf(char* share, unsigned b) { return smem_u32(share + b * kSlotBytes); }
__device__ __forceinline__ unsigned bar(char* share, unsigned b) { return smem_u32(share + kBufs * kSlotBytes + 8 * b); }

/// Lane 0: the warp's mbarriers, one arrival each, visible to the async proxy.
__device__ void init(char* share) {
  for (unsigned b = 0; b < kBufs; ++b) mbar_init(bar(share, b), 1);
  mbar_fence_init();
}
/// Lane 0, when the warp is done: the barriers' memory back to plain shared memory.
__device__ void inval(char* share) {
  for (unsigned b = 0; b < kBufs; ++b) mbar_inval(bar(share, b));
}
/// Lane 0: row `src` into buffer b, completing the barrier's current phase.
__device__ __forceinline__ void load(char* share, unsigned b, const void* src) {
  mbar_arrive_expect_tx(bar(share, b), kRowBytes);
  bulk_load(buf(share, b), src, kRowBytes, bar(share, b));
}

/// Lane 0: rows 0 .. n - 1 (n <= kDispatchRows) from src(i) to dst(i), kBufs in flight; returns
/// once every store is complete and ordered before the caller's generic-proxy fence and count.
/// `parity`: the warp's barriers' phase bits (bit b: buffer b's next phase), kept by the caller.
template <class Src, class Dst>
__device__ void copy_rows(char* share, unsigned n, Src src, Dst dst, unsigned& parity) {
  for (unsigned i = 0; i < n && i < kBufs; ++i) load(share, i, src(i));
  for (unsigned i = 0; i < n; ++i) {
    const unsigned b = i % kBufs;
    mbar_wait(bar(share, b), (parity >> b) & 1u);
    parity ^= 1u << b;
    bulk_store(dst(i), buf(share, b), kRowBytes);
    if (i + kBufs < n) {
      bulk_wait_read();  // the store just issued has read buffer b before its next row lands
      load(share, b, src(i + kBufs));
    }
  }
  bulk_wait_written();         // every store written
  fence_proxy_async_global();  // ... and ordered with the generic proxy
}
}  // namespace bulk_dispatch
#define FDM_BULK_COPY 1
#endif
#endif

/// The expert of the j-th packet (j < world x local_experts) a source rank's copiers take:
/// owners in turn, starting with the rank after the source, an owner's local experts in order.
/// So every GPU receives from every source at once; in expert order every source fed rank 0's
/// experts first, then rank 1's, and a GPU's ingress was shared by all the others while the
/// rest idled (run 70: an all-to-all of plain stores reaches ~220-240 GB/s a GPU at P = 4).
/// kE for an (owner, local expert) pair that does not exist (owners with fewer experts).
__device__ __forceinline__ unsigned dispatch_packet_expert(const fdm_params* p, unsigned source, unsigned j) {
  const unsigned world = p->layout.world;
  const unsigned owner = (source + 1 + j % world) % world, le = j / world;
  if (le >= p->local_experts_of[owner]) return kE;
  return p->local_to_global[owner * p->layout.local_experts + le];
}

/// A4: copy only the kept rows, each straight into its owner's heap dispatch region (proto
/// offsets), in items of kDispatchRows rows of one packet, packets in the order of
/// dispatch_packet_expert; the warp completing a packet raises its signal, so owners start
/// on early packets while later ones are still in flight (no grid barrier follows). Zero-row
/// packets are signalled by the OS block.
__device__ void dispatch_packets(const fdm_params* p, char* smem) {
  const fdm_layout& l = p->layout;
  if (kReadsInPlace && p->layout.world == p->local_ranks) return;  // every packet stays on this GPU
  const CopyGroup g = copy_group(p);
  if (g.count == 0) return;
  const unsigned lane = threadIdx.x % 32;
#ifdef FDM_BULK_COPY
  char* share = bulk_dispatch::warp_share(smem);
  unsigned parity = 0;  // lane 0's: each buffer's next mbarrier phase
  if (bulk_dispatch::kOn && lane == 0) bulk_dispatch::init(share);
  __syncwarp();
#else
  (void)smem;
#endif
  const unsigned items_per_packet = fdm_div_ceil(p->capacity, kDispatchRows);
  const unsigned packets = l.world * l.local_experts;  // a source's, some of them empty slots
  const unsigned long long items = (unsigned long long)p->local_ranks * packets * items_per_packet;
  for (unsigned long long w = (unsigned long long)g.index * kWarps + threadIdx.x / 32; w < items;
       w += (unsigned long long)g.count * kWarps) {
    const unsigned local = (unsigned)(w / ((unsigned long long)packets * items_per_packet));
    const Rank r = make_rank(p, local);
    const unsigned e = dispatch_packet_expert(p, r.global, (unsigned)(w / items_per_packet % packets));
    if (e == kE) continue;
    const unsigned first = (unsigned)(w % items_per_packet) * kDispatchRows;
    const unsigned rows = r.packet_rows()[e];
    if (first >= rows) continue;
    const unsigned owner = p->expert_owner[e], le = p->expert_local[e];
    const bool remote = !on_this_gpu(p, owner);
    if (kReadsInPlace && !remote) continue;  // read in place; the OS block signals it
    if (g.split && remote != g.remote) continue;
    const unsigned n = min(kDispatchRows, rows - first);
    // The item's token indices and routing weights, lane i < n loading row i's: one round trip
    // for the item instead of one a row.
    const unsigned long long list = (unsigned long long)e * l.capacity + first;
    const unsigned my_token = lane < n ? r.expert_tokens()[list + lane] : 0u;
    if (lane < n) {
      // The row's routing weight, for the owner's GEMM1 epilogue (the same fence and signal).
      *reinterpret_cast<float*>(r.heap_of(owner) + fdm_dispatch_weight(&l, r.global, le, first + lane)) =
          r.expert_weights()[list + lane];
    }
    const auto src = [&](unsigned token) { return r.x() + (unsigned long long)token * kH; };
    const auto dst = [&](unsigned i) { return r.heap_of(owner) + fdm_row(&l, FDM_STAGE_DISPATCH, r.global, le, first + i, 0); };
#ifdef FDM_BULK_COPY
    if (bulk_dispatch::kOn) {
      unsigned tokens[kDispatchRows];
#pragma unroll
      for (unsigned i = 0; i < kDispatchRows; ++i) tokens[i] = __shfl_sync(0xFFFFFFFFu, my_token, i);
      if (lane == 0) {
        bulk_dispatch::copy_rows(
            share, n, [&](unsigned i) { return (const void*)src(tokens[i]); }, [&](unsigned i) { return (void*)dst(i); },
            parity);
      }
    } else
#endif
      for (unsigned i = 0; i < n; ++i) {
        const unsigned token = __shfl_sync(0xFFFFFFFFu, my_token, i);
        copy_row(reinterpret_cast<const uint4*>(src(token)), reinterpret_cast<uint4*>(dst(i)), lane);
      }
    fence_for(p, owner);  // this lane's stores of the item, before the count
    __syncwarp();
    if (lane == 0 && atomicAdd(&r.packet_copied()[e], n) + n == rows) raise_dispatch_signal(r, e, rows);
  }
#ifdef FDM_BULK_COPY
  if (bulk_dispatch::kOn && lane == 0) bulk_dispatch::inval(share);
  __syncwarp();
#endif
}
