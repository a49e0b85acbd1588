// tiny.cu -- test input: the smallest kernel following the crate's launch convention (one
// by-value parameter block), used by the JIT cache and launch-validation tests.
#ifndef FDM_TINY_SCALE
#define FDM_TINY_SCALE 1
#endif

struct fdm_tiny_params {
    unsigned long long out;  // device address of u32[gridDim.x * blockDim.x]
    unsigned int base;
    unsigned int pad;
};

extern "C" __global__ void fdm_tiny(const fdm_tiny_params p) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    reinterpret_cast<unsigned int*>(p.out)[i] = (p.base + i) * FDM_TINY_SCALE;
}
