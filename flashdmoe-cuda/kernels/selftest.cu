// selftest.cu -- device self-test of the host side of the backend (flashdmoe_cuda::selftest).
//
// Exercises on the GPU everything the host sets up for the persistent kernel:
//   * the JIT: this file includes the generated protocol header, whose static_asserts pin
//     every struct size and field offset to the Rust definitions;
//   * module loading and the dynamic shared-memory opt-in (the host asks for more than the
//     48 KiB default);
//   * the launch convention: one by-value parameter block mirroring a Rust #[repr(C)] struct;
//   * the cooperative launch's co-residency guarantee: every block waits for every other
//     block to arrive, which only completes if the whole grid is resident at once. The wait
//     has a deadline, so a broken launch reports a short count instead of hanging.
//
// Result, per block b (checked by the host):
//   out[2b]     = fdm_signal(fdm_epoch_next(epoch), number of blocks that had arrived)
//   out[2b + 1] = sum over i < smem_words of (i ^ b), read back from dynamic shared memory
#include "fdm_proto.h"

#ifndef FDM_SELFTEST_THREADS
#error "FDM_SELFTEST_THREADS (threads per block) must be defined by the host"
#endif
static_assert(FDM_SELFTEST_THREADS % 32 == 0, "the self-test block must be whole warps");

// Mirrors flashdmoe_cuda::selftest::SelftestParams.
struct fdm_selftest_params {
    unsigned long long out;         // device address of u64[2 * gridDim.x]
    unsigned long long arrivals;    // device address of one u32, zeroed by the host
    unsigned long long timeout_ns;  // how long a block waits for the others
    unsigned int smem_words;        // u32 words of dynamic shared memory each block checks
    unsigned int epoch;             // the host's epoch; blocks stamp the next one
    unsigned long long fill;        // device address of u64[fill_words] the grid writes last (or 0)
    unsigned long long fill_words;  // (launch_cost: does the end of a launch wait on its stores?)
    unsigned long long span;        // device address of u64[2]: the earliest block start and the
                                    // latest block end (%globaltimer; atomicMin/Max), or 0
};
static_assert(sizeof(fdm_selftest_params) == 56, "fdm_selftest_params size drifted from Rust");
FDM_ASSERT_OFFSET(fdm_selftest_params, timeout_ns, 16);
FDM_ASSERT_OFFSET(fdm_selftest_params, smem_words, 24);
FDM_ASSERT_OFFSET(fdm_selftest_params, epoch, 28);
FDM_ASSERT_OFFSET(fdm_selftest_params, fill, 32);
FDM_ASSERT_OFFSET(fdm_selftest_params, fill_words, 40);
FDM_ASSERT_OFFSET(fdm_selftest_params, span, 48);

__device__ __forceinline__ unsigned long long fdm_selftest_now() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

extern "C" __global__ void __launch_bounds__(FDM_SELFTEST_THREADS)
fdm_selftest(const fdm_selftest_params p) {
    extern __shared__ unsigned int words[];
    __shared__ unsigned long long block_sum;
    unsigned long long* out = reinterpret_cast<unsigned long long*>(p.out);
    unsigned int* arrivals = reinterpret_cast<unsigned int*>(p.arrivals);
    unsigned long long* span = reinterpret_cast<unsigned long long*>(p.span);
    if (span != nullptr && threadIdx.x == 0) atomicMin(&span[0], fdm_selftest_now());

    if (threadIdx.x == 0) block_sum = 0;
    for (unsigned int i = threadIdx.x; i < p.smem_words; i += blockDim.x) words[i] = i ^ blockIdx.x;
    __syncthreads();
    // Read back mirrored, so most words are read by another thread than the one that wrote them.
    unsigned long long partial = 0;
    for (unsigned int i = threadIdx.x; i < p.smem_words; i += blockDim.x) {
        partial += words[p.smem_words - 1u - i];
    }
    atomicAdd(&block_sum, partial);
    __syncthreads();

    if (threadIdx.x == 0) {
        out[2u * blockIdx.x + 1u] = block_sum;
        atomicAdd(arrivals, 1u);
        const unsigned long long deadline = fdm_selftest_now() + p.timeout_ns;
        unsigned int seen = atomicAdd(arrivals, 0u);
        while (seen < gridDim.x && fdm_selftest_now() < deadline) {
            __nanosleep(256);
            seen = atomicAdd(arrivals, 0u);
        }
        out[2u * blockIdx.x] = fdm_signal(fdm_epoch_next(p.epoch), seen);
    }
    // The grid's last act: fill_words stores, coalesced over all threads.
    unsigned long long* fill = reinterpret_cast<unsigned long long*>(p.fill);
    const unsigned long long gthreads = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < p.fill_words; i += gthreads) {
        fill[i] = i;
    }
    if (span != nullptr) {
        __syncthreads();
        if (threadIdx.x == 0) atomicMax(&span[1], fdm_selftest_now());
    }
}
