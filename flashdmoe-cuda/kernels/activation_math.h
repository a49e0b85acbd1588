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

/// a / b. `Fast` on the GPU: `__fdividef` (a reciprocal approximation and a product, 2 ulp)
/// instead of IEEE division (~15 instructions and a slow-path branch an element), which with
/// `expf` made the SwiGLU epilogue ~12% of the Qwen3-30B-A3B kernel's warp samples
/// (docs/dev/perf-notes.md v30 (d)). The engines ask for it only where the result is rounded to
/// a 16-bit element (2^-9 relative, far above 2 ulp). `expf` stays exact: `__expf` as well made
/// ptxas interleave more elements of the epilogue and spill (596 bytes in the Qwen3 image).
/// On the host, and without `Fast`, the exact form.
template <bool Fast>
FDM_ACT_HD float div_(float a, float b) {
#if defined(__CUDA_ARCH__)
  if constexpr (Fast) {
    return __fdividef(a, b);
  } else {
    return a / b;
  }
#else
  return a / b;
#endif
}

/// SiLU x * sigmoid(x) = x / (1 + exp(-x)).
template <bool Fast = false>
FDM_ACT_HD float silu(float x) {
  return div_<Fast>(x, 1.f + expf(-x));
}

/// gpt-oss's SwiGLU: (clamp(up, -limit, limit) + 1) * g * sigmoid(alpha g), g = min(gate,
/// limit) (the gate is clamped from above only).
template <bool Fast = false>
FDM_ACT_HD float swiglu_oss(float gate, float up, float alpha, float limit) {
  const float g = fminf(gate, limit), u = fminf(fmaxf(up, -limit), limit);
  return div_<Fast>((u + 1.f) * g, 1.f + expf(-alpha * g));
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
