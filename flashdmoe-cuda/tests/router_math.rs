//! The kernel's router math (`kernels/router_math.h`, what topk.cuh runs in A2) compiled with
//! the host C++ compiler under each layer's `FDM_*` defines (`MoeSpec::defines`) and run on the
//! same f32 logits the router GEMM would give, for every real model's router and for
//! combinations of the router's features no model has (each scoring with each grouping, every
//! flag both ways); its expert choice and combine weights are held to core's oracle: the
//! routing check a GPU forward must pass (`oracle::check_routing`), and stricter, no near tie
//! at all and weights within 1e-6 of the CPU router's. The shared
//! experts' slots after the router's (`SharedSlots`: experts and the sigmoid gate) are held to
//! core's `virtual_experts` and `oracle::shared_scale` the same way. No GPU needed; passes with
//! a `skipped:` line without a C++ compiler.

use std::fmt::Write as _;

use flashdmoe_core::config::{GroupScore, Groups, Routing, Scoring, presets};
use flashdmoe_core::oracle::{check_routing, shared_scale};
use flashdmoe_core::routing::{RankRouting, route, tree_sum};
use flashdmoe_core::virtual_experts::VirtualExperts;
use flashdmoe_core::weights::generate_input;
use flashdmoe_core::{DType, LayerWeights, MoeConfig};
use flashdmoe_cuda::kernels::ROUTER_MATH_HEADER;
use flashdmoe_cuda::spec::{H200_PROCESSORS, MoeSpec, computes, shared_kinds};

mod support;
use support::host_cxx;

/// Every router kind of the real models, at a small shape with enough tokens to exercise the
/// groups: core's small model kinds, a Kimi-K2-like sigmoid router without groups, and a wider
/// grouped one (E 64 in 8 groups, 3 kept, top-6).
fn cases() -> Vec<(String, MoeConfig)> {
    let mut out: Vec<(String, MoeConfig)> = presets::small_model_kinds(DType::Bf16)
        .into_iter()
        .map(|(name, c)| (name.to_owned(), MoeConfig { tokens_per_rank: 96, ..c }))
        .collect();
    let base = out[0].1.clone();
    out.push((
        "kimi-k2-like".into(),
        MoeConfig { routing: Routing::deepseek_v3(None, 2.827), ..base.clone() },
    ));
    let groups = Groups { count: 8, keep: 3, score: GroupScore::Top2Sum };
    out.push((
        "wide grouped".into(),
        MoeConfig {
            experts: 64,
            top_k: 6,
            routing: Routing { groups: Some(groups), ..Routing::deepseek_v3(None, 1.5) },
            ..base
        },
    ));

    // Combinations no model has but a config may ask for: each scoring with each grouping,
    // and for each pair two opposite patterns of the router bias, the selection bias, the
    // scaling and the renormalisation (every flag both ways), E 16, top-4.
    let groupings = [
        None,
        Some(Groups { count: 2, keep: 1, score: GroupScore::Max }),
        Some(Groups { count: 4, keep: 2, score: GroupScore::Top2Sum }),
    ];
    for (s, scoring) in
        [Scoring::Softmax, Scoring::Sigmoid, Scoring::TopKSoftmax].into_iter().enumerate()
    {
        for (g, groups) in groupings.into_iter().enumerate() {
            let first = flashdmoe_core::rng::mix((3 * s + g) as u64) as u32 & 15;
            for flags in [first, !first & 15] {
                let routing = Routing {
                    scoring,
                    router_bias: flags & 1 != 0,
                    selection_bias: flags & 2 != 0,
                    groups,
                    scaling: if flags & 4 != 0 { 2.5 } else { 1.0 },
                };
                let config = MoeConfig {
                    experts: 16,
                    top_k: 4,
                    routing,
                    renormalize: flags & 8 != 0 || scoring == Scoring::TopKSoftmax,
                    ..out[0].1.clone()
                };
                if config.validate().is_ok() && computes(&config) {
                    out.push((format!("{} groups {g} flags {flags:04b}", scoring.name()), config));
                }
            }
        }
    }
    out
}

/// Oracle step 1 without the router bias (the kernel adds it in f32 after the GEMM): the f32
/// logits of every token.
fn logits(config: &MoeConfig, weights: &LayerWeights, input: &[f32]) -> Vec<f32> {
    let h = config.hidden as usize;
    input
        .chunks_exact(h)
        .flat_map(|x| {
            weights
                .router
                .chunks_exact(h)
                .map(|w| x.iter().zip(w).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() as f32)
        })
        .collect()
}

fn bits(values: &[f32]) -> String {
    let mut s = String::new();
    for v in values {
        let _ = write!(s, "0x{:08x}u,", v.to_bits());
    }
    if s.is_empty() { "0u".into() } else { s }
}

/// Compiles and runs the router on `logits` under `config`'s defines: `(experts, weights)`.
fn run_router(
    cc: &str,
    name: &str,
    config: &MoeConfig,
    weights: &LayerWeights,
    logits: &[f32],
) -> (Vec<u32>, Vec<f32>) {
    let spec = MoeSpec::for_config(config, H200_PROCESSORS);
    let program = format!(
        "#include \"router_math.h\"\n#include <cstdio>\n#include <cstring>\n\
         static const unsigned kLogits[] = {{{}}};\n\
         static const unsigned kRouterBias[] = {{{}}};\n\
         static const unsigned kSelBias[] = {{{}}};\n\
         static float f(unsigned b) {{ float x; std::memcpy(&x, &b, 4); return x; }}\n\
         static unsigned u(float x) {{ unsigned b; std::memcpy(&b, &x, 4); return b; }}\n\
         int main() {{\n\
           for (int t = 0; t < {tokens}; ++t) {{\n\
             float row[FDM_ROUTER_E];\n\
             for (int e = 0; e < FDM_ROUTER_E; ++e) row[e] = f(kLogits[t * FDM_ROUTER_E + e]);\n\
             unsigned ex[FDM_TOPK];\n\
             float w[FDM_TOPK];\n\
             SpecRouter::route(row, [](int e) {{ return f(kRouterBias[e]); }},\n\
                               [](int e) {{ return f(kSelBias[e]); }}, f(FDM_SCALING_BITS), ex, w);\n\
             for (int j = 0; j < FDM_TOPK; ++j) std::printf(\"%u %08x\\n\", ex[j], u(w[j]));\n\
           }}\n\
           return 0;\n\
         }}\n",
        bits(logits),
        bits(weights.router_bias.as_deref().unwrap_or_default()),
        bits(weights.selection_bias.as_deref().unwrap_or_default()),
        tokens = config.tokens_per_rank,
    );
    let text = host_cxx::run(cc, name, &ROUTER_MATH_HEADER, &spec, &program);
    text.lines()
        .map(|l| {
            let (e, w) = l.split_once(' ').expect("two fields");
            (e.parse::<u32>().unwrap(), f32::from_bits(u32::from_str_radix(w, 16).unwrap()))
        })
        .unzip()
}

#[test]
fn the_kernels_router_math_matches_the_oracle_for_every_router() {
    let Some(cc) = host_cxx::cxx() else {
        println!("skipped: no C++ compiler");
        return;
    };
    for (name, config) in cases() {
        let weights = LayerWeights::generate(&config, 5).unwrap();
        let input = generate_input(&config, 0, 5).unwrap();
        let (experts, got) =
            run_router(cc, &name, &config, &weights, &logits(&config, &weights, &input));
        let routing = RankRouting::from_choices(&config, experts, got.clone())
            .unwrap_or_else(|e| panic!("{name}: the router's choice is malformed: {e}"));
        let checked = check_routing(&config, &weights, &input, &routing)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(checked.near_ties, 0, "{name}: no near tie expected on these data");
        let cpu = route(&config, &input, &weights).unwrap();
        assert_eq!(routing.experts, cpu.experts, "{name}");
        for (i, (g, c)) in got.iter().zip(&cpu.weights).enumerate() {
            assert!(
                (g - c).abs() <= 1e-6 * c.abs().max(1.0),
                "{name} slot {i}: weight {g} vs the CPU's {c}"
            );
        }
        println!(
            "ok  {name}: {} tokens x top-{} as the oracle",
            config.tokens_per_rank, config.top_k
        );
    }
}

#[test]
fn the_kernels_softmax_sum_is_core_s_tree_bit_for_bit() {
    let Some(cc) = host_cxx::cxx() else {
        println!("skipped: no C++ compiler");
        return;
    };
    // Every router width of the cases (8 to 64 experts), the paper's 32 and 128 and
    // DeepSeek-V3's 256: the sum of values of an exp's range (zeros from underflow among them)
    // in SpecRouter's order.
    let mut configs: Vec<MoeConfig> = cases().into_iter().map(|(_, c)| c).collect();
    configs.push(presets::preset("deepseek-v3").unwrap());
    configs.extend([32, 128].map(|e| presets::paper(128, e)));
    configs.sort_by_key(|c| c.experts);
    configs.dedup_by_key(|c| c.experts);
    for config in configs {
        let spec = MoeSpec::for_config(&config, H200_PROCESSORS);
        let e = spec.router_experts as usize;
        let rows: Vec<Vec<f32>> = (0..16u64)
            .map(|t| {
                let mut rng = flashdmoe_core::rng::SplitMix64::new(t * 1000 + e as u64);
                (0..e)
                    .map(|_| {
                        let u = rng.next_unit();
                        if u < 0.05 { 0.0 } else { (-30.0 * u).exp() }
                    })
                    .collect()
            })
            .collect();
        let all: Vec<f32> = rows.concat();
        let program = format!(
            "#include \"router_math.h\"\n#include <cstdio>\n#include <cstring>\n\
             static const unsigned kZ[] = {{{}}};\n\
             int main() {{\n\
               for (int t = 0; t < 16; ++t) {{\n\
                 float z[FDM_ROUTER_E];\n\
                 for (int e = 0; e < FDM_ROUTER_E; ++e) std::memcpy(&z[e], &kZ[t * FDM_ROUTER_E + e], 4);\n\
                 const float s = SpecRouter::lane_sum<0, 1>(z);\n\
                 unsigned b;\n\
                 std::memcpy(&b, &s, 4);\n\
                 std::printf(\"%08x\\n\", b);\n\
               }}\n\
               return 0;\n\
             }}\n",
            bits(&all),
        );
        let name = format!("tree-sum-{e}");
        let text = host_cxx::run(cc, &name, &ROUTER_MATH_HEADER, &spec, &program);
        for (t, (line, row)) in text.lines().zip(&rows).enumerate() {
            let got = u32::from_str_radix(line, 16).unwrap();
            assert_eq!(got, tree_sum(row).to_bits(), "E {e} token {t}");
        }
        println!("ok  E {e}: lane_sum is tree_sum's bits on 16 tokens");
    }
}

/// Token `t`'s dot product with the shared gate row as the oracle takes it (f64, then f32).
fn gate_dot(config: &MoeConfig, weights: &LayerWeights, input: &[f32], t: usize) -> f32 {
    let h = config.hidden as usize;
    let row = weights.shared_gate_row.as_deref().unwrap_or_default();
    input[t * h..][..h].iter().zip(row).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() as f32
}

#[test]
fn the_kernels_shared_slots_are_core_s_virtual_experts() {
    let Some(cc) = host_cxx::cxx() else {
        println!("skipped: no C++ compiler");
        return;
    };
    // DeepSeek-V2's kind (m = 2, no gate) and Qwen2-MoE's (m = 4, sigmoid gate), on 4 ranks.
    for (_, config) in shared_kinds(4) {
        let v = VirtualExperts::of(&config).unwrap().unwrap();
        let weights = LayerWeights::generate(&config, 5).unwrap();
        let spec = MoeSpec::for_config(&config, H200_PROCESSORS);
        let name = spec.label();
        let h = config.hidden as usize;
        for rank in 0..config.world {
            let input = generate_input(&config, rank, 5).unwrap();
            let tokens = 8;
            let dots: Vec<f32> =
                (0..tokens).map(|t| gate_dot(&config, &weights, &input, t)).collect();
            let program = format!(
                "#include \"router_math.h\"\n#include <cstdio>\n#include <cstring>\n\
                 static const unsigned kDots[] = {{{}}};\n\
                 static float f(unsigned b) {{ float x; std::memcpy(&x, &b, 4); return x; }}\n\
                 static unsigned u(float x) {{ unsigned b; std::memcpy(&b, &x, 4); return b; }}\n\
                 int main() {{\n\
                   for (int t = 0; t < {tokens}; ++t) {{\n\
                     unsigned ex[FDM_SLOTS];\n\
                     float w[FDM_SLOTS];\n\
                     const float gs = FDM_SHARED_GATE ? SpecShared::gate(f(kDots[t])) : 1.f;\n\
                     SpecShared::append({rank}u, gs, ex + FDM_TOPK, w + FDM_TOPK);\n\
                     for (int j = FDM_TOPK; j < FDM_SLOTS; ++j)\n\
                       std::printf(\"%u %08x\\n\", ex[j], u(w[j]));\n\
                   }}\n\
                   return 0;\n\
                 }}\n",
                bits(&dots),
            );
            let text = host_cxx::run(cc, &name, &ROUTER_MATH_HEADER, &spec, &program);
            let got: Vec<(u32, f32)> = text
                .lines()
                .map(|l| {
                    let (e, w) = l.split_once(' ').expect("two fields");
                    (e.parse().unwrap(), f32::from_bits(u32::from_str_radix(w, 16).unwrap()))
                })
                .collect();
            assert_eq!(got.len(), tokens * v.parts as usize, "{name}");
            for (i, &(expert, weight)) in got.iter().enumerate() {
                let (t, j) = (i / v.parts as usize, i as u32 % v.parts);
                assert_eq!(expert, v.expert(rank, j), "{name} rank {rank} token {t} part {j}");
                let want = shared_scale(&weights, &input[t * h..][..h]);
                assert!(
                    (weight - want).abs() <= 1e-6 * want,
                    "{name} rank {rank} token {t}: gs {weight} vs the oracle's {want}"
                );
            }
        }
        println!("ok  {name}: the {} parts of every rank's shared experts as core's", v.parts);
    }
}
