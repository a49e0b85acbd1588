// activation_math.h -- the gated experts' activation of one element (core's
// `Activation::eval`): SwiGLU `silu(gate) * up`, or gpt-oss's clamped SwiGLU. Plain C++17 for
// the host and the GPU alike: both engines' GEMM0 epilogues call `gated_act` (config.cuh
// includes this), and flashdmoe-cuda/tests/activation_math.rs compiles it with the host C++
// compiler under a layer's FDM_* defines and holds it to core's f64 reference.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define FDM_ACT_HD __host__ __device__ __forceinline__
#else
#include <math.h>
#include <string.h>
#define FDM_ACT_HD inline
#endif

namespace flashdmoe {
namespace act {

/// The f32 whose bits are `bits` (how the host passes f32 constants as defines).
FDM_ACT_HD float from_bits(unsigned bits) {
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
  return __uint_as_float(bits);
#else
  float x;
  memcpy(&x, &bits, sizeof x);
  return x;
#endif
}

/// a / (1 + exp(-x)), the sigmoid's quotient both SwiGLUs share. `Fast` on the GPU: the
/// hardware's approximations, `ex2.approx` of -x log2(e) and `rcp.approx` of the sum (two MUFU
/// instructions and three others an element), for epilogues whose result is rounded to a
/// 16-bit element (2^-9 relative, far above their ~2^-22). The exact form (`expf`, a rounded
/// division) cost ~14 instructions an element: perf-notes v30 (d) found the SwiGLU epilogue
/// at 12% of the Qwen3-30B-A3B kernel's warp samples, v37 measured its replacement. At x below
/// ~-88 the sum overflows to +inf and the quotient is 0 (exact: a value below 2^-126 |a|).
/// On the host, and without `Fast`, the exact form.
template <bool Fast>
FDM_ACT_HD float over_one_plus_exp_neg(float a, float x) {
#if defined(__CUDA_ARCH__)
  if constexpr (Fast) {
    // One volatile block an element: the compiler keeps the elements in program order
    // (ptxas still interleaves neighbours). With the product and the sum outside it, the
    // compiler hoisted all 64 products -x log2(e) of a tile's gates ahead of the first
    // exponential and spilled (72 bytes in the Qwen3 image).
    float q;
    asm volatile(
        "{\n\t.reg .f32 t;\n\t"
        "mul.ftz.f32 t, %1, 0fBFB8AA3B;\n\t"  // -log2(e) x
        "ex2.approx.ftz.f32 t, t;\n\t"
        "add.ftz.f32 t, t, 0f3F800000;\n\t"  // + 1
        "rcp.approx.ftz.f32 t, t;\n\t"
        "mul.f32 %0, %2, t;\n\t}"
        : "=f"(q)
        : "f"(x), "f"(a));
    return q;
  } else {
    return a / (1.f + expf(-x));
  }
#else
  return a / (1.f + expf(-x));
#endif
}

/// SiLU x * sigmoid(x) = x / (1 + exp(-x)).
template <bool Fast = false>
FDM_ACT_HD float silu(float x) {
  return over_one_plus_exp_neg<Fast>(x, x);
}

/// gpt-oss's SwiGLU: (clamp(up, -limit, limit) + 1) * g * sigmoid(alpha g), g = min(gate,
/// limit) (the gate is clamped from above only).
template <bool Fast = false>
FDM_ACT_HD float swiglu_oss(float gate, float up, float alpha, float limit) {
  const float g = fminf(gate, limit), u = fminf(fmaxf(up, -limit), limit);
  return over_one_plus_exp_neg<Fast>((u + 1.f) * g, alpha * g);
}

}  // namespace act
}  // namespace flashdmoe

#ifdef FDM_ACT
#ifndef FDM_OSS_ALPHA_BITS
#define FDM_OSS_ALPHA_BITS 0u
#endif
#ifndef FDM_OSS_LIMIT_BITS
#define FDM_OSS_LIMIT_BITS 0u
#endif
/// The layer's gated activation of one element from its gate and up projections (biases
/// included), as FDM_ACT selects: 3 gpt-oss's (FDM_OSS_ALPHA_BITS, FDM_OSS_LIMIT_BITS: f32 bit
/// patterns), else SwiGLU (only gated layers, FDM_ACT 2 and 3, call it). `Fast`: see div_.
template <bool Fast = false>
FDM_ACT_HD float gated_act(float gate, float up) {
  if constexpr (FDM_ACT == 3) {
    return flashdmoe::act::swiglu_oss<Fast>(gate, up, flashdmoe::act::from_bits(FDM_OSS_ALPHA_BITS),
                                            flashdmoe::act::from_bits(FDM_OSS_LIMIT_BITS));
  } else {
    return flashdmoe::act::silu<Fast>(gate) * up;
  }
}
#endif
