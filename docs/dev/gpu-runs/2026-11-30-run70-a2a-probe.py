# All-to-all egress probe (issue 13 item 4; run 70, nvidia-h200-x4): every GPU at once stores
# 16 MiB into each of its 3 peers (48 MiB out, 48 MiB in per GPU: the paper layer's dispatch at
# T8192/GPU E32, P = 4), by an SM kernel of 16-byte stores with 32 / 66 / 132 blocks of 512
# threads, and by one-thread-a-block cp.async.bulk (32 KiB chunks through shared memory), every
# GPU walking its peers in rank order (all start on the lowest other rank). Run 71 adds two
# orders for the stores: staggered (rank i starts with rank i + 1) and interleaved (4 KiB rows
# to the three peers in turn). Per-GPU egress = 48 MiB / the slowest GPU's kernel time (events).
# Every result is checked.
import cupy as cp, numpy as np
rt = cp.cuda.runtime
P = 4; SEG = 16 << 20
for i in range(P):
    with cp.cuda.Device(i):
        for j in range(P):
            if i != j: rt.deviceEnablePeerAccess(j)
src, dst = [], []
for i in range(P):
    with cp.cuda.Device(i):
        src.append(cp.random.randint(0, 255, SEG * (P - 1), dtype=cp.uint8))
        dst.append(cp.zeros(SEG * (P - 1), dtype=cp.uint8))  # slot k: from the k-th other rank
code = r'''
extern "C" __global__ void st16(const uint4* __restrict__ s, uint4* d0, uint4* d1, uint4* d2, unsigned long long n, int interleave) {
  for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < 3 * n; i += (unsigned long long)gridDim.x * blockDim.x) {
    unsigned long long p = i / n, o = i % n;
    if (interleave) { const unsigned long long row = i / 256; p = row % 3; o = row / 3 * 256 + i % 256; }
    uint4* d = p == 0 ? d0 : p == 1 ? d1 : d2;
    d[o] = s[i];
  }
}
extern "C" __global__ void bulk(const char* s, char* d0, char* d1, char* d2, unsigned long long n) {
  extern __shared__ __align__(128) char buf[];
  __shared__ __align__(8) unsigned long long bar;
  const unsigned chunk = 32768;
  unsigned sb = (unsigned)__cvta_generic_to_shared(buf), bb = (unsigned)__cvta_generic_to_shared(&bar);
  if (threadIdx.x == 0) { asm volatile("mbarrier.init.shared.b64 [%0], 1;" :: "r"(bb)); asm volatile("fence.mbarrier_init.release.cluster;"); }
  __syncthreads();
  unsigned phase = 0;
  for (unsigned long long off = (unsigned long long)blockIdx.x * chunk; off < 3 * n; off += (unsigned long long)gridDim.x * chunk) {
    const unsigned long long p = off / n, o = off % n;
    char* d = p == 0 ? d0 : p == 1 ? d1 : d2;
    if (threadIdx.x == 0) {
      asm volatile("mbarrier.arrive.expect_tx.shared.b64 _, [%0], %1;" :: "r"(bb), "r"(chunk));
      asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" :: "r"(sb), "l"(s + off), "r"(chunk), "r"(bb) : "memory");
      asm volatile("{ .reg .pred p; W: mbarrier.try_wait.parity.shared.b64 p, [%0], %1; @!p bra W; }" :: "r"(bb), "r"(phase));
      asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;" :: "l"(d + o), "r"(sb), "r"(chunk) : "memory");
      asm volatile("cp.async.bulk.commit_group;");
      asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
      phase ^= 1;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
}
'''
fns = []
for i in range(P):
    with cp.cuda.Device(i):
        m = cp.RawModule(code=code, options=("-arch=sm_90a", "-std=c++17"))
        fns.append((m.get_function("st16"), m.get_function("bulk")))
def peers(i):  # destination views: rank i's data lands in slot (index of i among j's others)
    out = []
    for j in range(P):
        if j == i: continue
        slot = i if i < j else i - 1
        out.append(dst[j][slot * SEG:(slot + 1) * SEG])
    return out
def rotated(i, d, order):  # d: views for the others in rank order
    if order != "staggered": return d
    others = [j for j in range(P) if j != i]
    start = others.index((i + 1) % P)
    return d[start:] + d[:start]
def run(kind, blocks, reps=10, order="rank"):
    ev = []
    for i in range(P):
        with cp.cuda.Device(i):
            s, e = cp.cuda.Event(), cp.cuda.Event(); ev.append((s, e))
    for rep in range(reps + 1):
        for i in range(P):
            with cp.cuda.Device(i):
                d = rotated(i, peers(i), order)
                if rep == 1: ev[i][0].record()
                if kind == "st16":
                    fns[i][0]((blocks,), (512,), (src[i], d[0], d[1], d[2], cp.uint64(SEG // 16), cp.int32(order == "interleaved")))
                else:
                    fns[i][1]((blocks,), (32,), (src[i], d[0], d[1], d[2], cp.uint64(SEG)), shared_mem=32768)
        if rep == 0:
            for i in range(P): cp.cuda.Device(i).synchronize()
    for i in range(P):
        with cp.cuda.Device(i): ev[i][1].record()
    for i in range(P): cp.cuda.Device(i).synchronize()
    t = max(cp.cuda.get_elapsed_time(s, e) for s, e in ev) / reps / 1e3
    if order == "interleaved":
        ok = all(np.array_equal(src[i].get().reshape(-1, 3, 4096)[:, k].ravel(), rotated(i, peers(i), order)[k].get()) for i in range(P) for k in range(P - 1))
    else:
        ok = all(np.array_equal(src[i][k * SEG:(k + 1) * SEG].get(), rotated(i, peers(i), order)[k].get()) for i in range(P) for k in range(P - 1))
    print(f"{kind:5s} {order:11s} {blocks:4d} blocks: {SEG * 3 / t / 1e9:7.1f} GB/s egress per GPU ({t * 1e6:.0f} us)  {'ok' if ok else 'MISMATCH'}", flush=True)
    for j in range(P):
        with cp.cuda.Device(j): dst[j].fill(0)
import sys
if len(sys.argv) > 1 and sys.argv[1] == "orders":
    for order in ("rank", "staggered", "interleaved"):
        for b in (32, 66, 132): run("st16", b, order=order)
else:
    for b in (32, 66, 132, 264): run("st16", b)
    for b in (32, 66, 132): run("bulk", b)
