// broken.cu -- test input: a kernel with a compile error (the JIT must report NVRTC's log).
extern "C" __global__ void fdm_test_broken(int* out) {
    *out = fdm_undeclared_identifier;
}
