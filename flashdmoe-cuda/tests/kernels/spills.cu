// spills.cu -- test input: a kernel ptxas must spill (the JIT has to reject it).
//
// __launch_bounds__(1024, 2) caps the kernel at 32 registers per thread, while 64 running
// sums stay live across the loop, so ptxas has to spill some of them to local memory.
extern "C" __global__ void __launch_bounds__(1024, 2) fdm_test_spills(float* data, int n) {
    float acc[64];
#pragma unroll
    for (int j = 0; j < 64; ++j) acc[j] = data[j * blockDim.x + threadIdx.x];
    for (int i = 0; i < n; ++i) {
#pragma unroll
        for (int j = 0; j < 64; ++j) acc[j] = acc[j] * acc[(j + 1) & 63] + data[i];
    }
#pragma unroll
    for (int j = 0; j < 64; ++j) data[j * blockDim.x + threadIdx.x] = acc[j];
}
