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
__device__ void dispatch_packets(const fdm_params* p) {
  const fdm_layout& l = p->layout;
  if (kReadsInPlace && p->layout.world == p->local_ranks) return;  // every packet stays on this GPU
  const CopyGroup g = copy_group(p);
  if (g.count == 0) return;
  const unsigned lane = threadIdx.x % 32;
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
    for (unsigned i = 0; i < n; ++i) {
      const unsigned token = __shfl_sync(0xFFFFFFFFu, my_token, i);
      copy_row(reinterpret_cast<const uint4*>(src(token)), reinterpret_cast<uint4*>(dst(i)), lane);
    }
    fence_for(p, owner);  // this lane's stores of the item, before the count
    __syncwarp();
    if (lane == 0 && atomicAdd(&r.packet_copied()[e], n) + n == rows) raise_dispatch_signal(r, e, rows);
  }
}
