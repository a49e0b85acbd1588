//! The gated experts' activation the kernel's GEMM0 epilogues run (`kernels/activation_math.h`)
//! compiled with the host C++ compiler under a layer's `FDM_*` defines (`MoeSpec::defines`):
//! SwiGLU and gpt-oss's clamped SwiGLU (gpt-oss's alpha and clamp, and a config's own), over
//! gate and up values inside and beyond the clamp, held to core's f64 `Activation::eval`. No
//! GPU needed; passes with a `skipped:` line without a C++ compiler.

use flashdmoe_core::config::{SwigluOss, presets};
use flashdmoe_core::{Activation, MoeConfig};
use flashdmoe_cuda::kernels::ACTIVATION_MATH_HEADER;
use flashdmoe_cuda::spec::{H200_PROCESSORS, MoeSpec};

mod support;
use support::host_cxx;

/// Gate and up values: around zero, around gpt-oss's limit of 7 on both sides, and far out.
fn values() -> Vec<f32> {
    let mut v: Vec<f32> = (-40..=40).map(|i| i as f32 * 0.25).collect();
    v.extend([-1e3, -7.0001, -6.9999, 6.9999, 7.0001, 1e3, 1e-6, -1e-6]);
    v
}

#[test]
fn the_kernels_gated_activations_match_core() {
    let Some(cc) = host_cxx::cxx() else {
        println!("skipped: no C++ compiler");
        return;
    };
    let oss = presets::preset("gpt-oss-20b").unwrap();
    let swiglu = MoeConfig { activation: Activation::SiluGated, ..presets::paper(128, 8) };
    let vs = values();
    let list = vs.iter().map(|v| format!("{v:e}f")).collect::<Vec<_>>().join(",");
    let program = format!(
        "#include \"activation_math.h\"\n#include <cstdio>\n\
         static const float kValues[] = {{{list}}};\n\
         int main() {{\n\
           const int n = sizeof kValues / sizeof kValues[0];\n\
           for (int i = 0; i < n; ++i)\n\
             for (int j = 0; j < n; ++j)\n\
               std::printf(\"%.9e\\n\", (double)gated_act(kValues[i], kValues[j]));\n\
           return 0;\n\
         }}\n"
    );
    // A clamp and slope of a config's own (`[activation] swiglu_limit`, alpha): the values
    // above cross its limit of 0.5 and its alpha is not gpt-oss's.
    let own = MoeConfig {
        activation: Activation::SwigluOss(SwigluOss { alpha: 1.25, limit: 0.5 }),
        ..oss.clone()
    };
    for (name, config) in [("gpt-oss", oss), ("swiglu", swiglu), ("swiglu-oss 1.25/0.5", own)] {
        let spec = MoeSpec::for_config(&config, H200_PROCESSORS);
        let printed = host_cxx::run(cc, name, &ACTIVATION_MATH_HEADER, &spec, &program);
        let got: Vec<f64> = printed.lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(got.len(), vs.len() * vs.len(), "{name}");
        let mut worst = 0.0f64;
        for (i, &gate) in vs.iter().enumerate() {
            for (j, &up) in vs.iter().enumerate() {
                let want = config.activation.eval(up as f64, gate as f64);
                let g = got[i * vs.len() + j];
                // f32 evaluation of the same formula: a few ulps of the larger of the result
                // and its factors.
                let err = (g - want).abs() / want.abs().max(1e-3);
                worst = worst.max(err);
                assert!(err < 2e-6, "{name}: gate {gate}, up {up}: {g} vs core's {want}");
            }
        }
        println!("ok  {name}: {} points, worst relative error {worst:.1e}", vs.len() * vs.len());
    }
}
