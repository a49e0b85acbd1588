# P2P egress probe (issue 13 item 4): GPU 0 -> GPU 1 bytes per second by (a) the copy engine
# (cudaMemcpyPeerAsync), (b) an SM kernel of 16-byte stores into the peer's memory with 32..264
# blocks, (c) the same kernel with each warp storing 512 contiguous bytes a step (what the
# dispatch copiers do) and (d) a one-thread-a-block cp.async.bulk (TMA bulk copy shared ->
# peer global) of 32 KiB chunks. Each result is checked (the peer buffer compared with the source).
import cupy as cp, numpy as np, time, sys
rt = cp.cuda.runtime
N = 256 << 20  # bytes
with cp.cuda.Device(0):
    rt.deviceEnablePeerAccess(1)
    src = cp.random.randint(0, 255, N, dtype=cp.uint8)
with cp.cuda.Device(1):
    rt.deviceEnablePeerAccess(0)
    dst = cp.zeros(N, dtype=cp.uint8)
def timed(fn, reps=10):
    with cp.cuda.Device(0):
        fn(); cp.cuda.Device(0).synchronize()
        s, e = cp.cuda.Event(), cp.cuda.Event()
        s.record()
        for _ in range(reps): fn()
        e.record(); e.synchronize()
        return cp.cuda.get_elapsed_time(s, e) / reps / 1e3
def check(name, t):
    a = src.get(); b = dst.get()
    print(f"{name:40s} {N / t / 1e9:7.1f} GB/s  {'ok' if np.array_equal(a, b) else 'MISMATCH'}", flush=True)
    with cp.cuda.Device(1): dst.fill(0)
t = timed(lambda: rt.memcpyPeerAsync(dst.data.ptr, 1, src.data.ptr, 0, N, cp.cuda.get_current_stream().ptr))
check("copy engine (memcpyPeer)", t)
code = r'''
extern "C" __global__ void st16(const uint4* __restrict__ s, uint4* d, unsigned long long n) {
  for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n; i += (unsigned long long)gridDim.x * blockDim.x) d[i] = s[i];
}
extern "C" __global__ void bulk(const char* s, char* d, unsigned long long n) {
  extern __shared__ __align__(128) char buf[];
  __shared__ __align__(8) unsigned long long bar;
  const unsigned chunk = 32768;
  unsigned sb = (unsigned)__cvta_generic_to_shared(buf), bb = (unsigned)__cvta_generic_to_shared(&bar);
  if (threadIdx.x == 0) { asm volatile("mbarrier.init.shared.b64 [%0], 1;" :: "r"(bb)); asm volatile("fence.mbarrier_init.release.cluster;"); }
  __syncthreads();
  unsigned phase = 0;
  for (unsigned long long off = (unsigned long long)blockIdx.x * chunk; off < n; off += (unsigned long long)gridDim.x * chunk) {
    if (threadIdx.x == 0) {
      asm volatile("mbarrier.arrive.expect_tx.shared.b64 _, [%0], %1;" :: "r"(bb), "r"(chunk));
      asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" :: "r"(sb), "l"(s + off), "r"(chunk), "r"(bb) : "memory");
      asm volatile("{ .reg .pred p; W: mbarrier.try_wait.parity.shared.b64 p, [%0], %1; @!p bra W; }" :: "r"(bb), "r"(phase));
      asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;" :: "l"(d + off), "r"(sb), "r"(chunk) : "memory");
      asm volatile("cp.async.bulk.commit_group;");
      asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
      phase ^= 1;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
}
'''
mod = cp.RawModule(code=code, options=("-arch=sm_90a", "-std=c++17"))
with cp.cuda.Device(0):
    st16 = mod.get_function("st16"); bulk = mod.get_function("bulk")
    n16 = N // 16
    for blocks in (32, 66, 132, 264):
        t = timed(lambda: st16((blocks,), (512,), (src, dst, cp.uint64(n16))))
        check(f"SM 16-byte stores, {blocks} blocks x 512", t)
    for blocks in (32, 66, 132):
        t = timed(lambda: bulk((blocks,), (32,), (src, dst, cp.uint64(N)), shared_mem=32768))
        check(f"cp.async.bulk 32 KiB, {blocks} blocks", t)
