//! The simulator against the oracle on small layers of each real-model kind (issue 16): shared
//! experts with and without Qwen's sigmoid gate, DeepSeek-V2's grouped softmax router,
//! DeepSeek-V3's sigmoid router with its selection bias, groups and scaling, gpt-oss's router
//! and clamped SwiGLU; every dtype, several ranks, capacity drops, the presets themselves
//! shrunk; and a layer without its shared experts or selection bias is caught.

mod common;

use common::{check, data, run, traced};
use flashdmoe_core::config::presets::{preset, small_model_kinds};
use flashdmoe_core::oracle::{VerifyOptions, verify};
use flashdmoe_core::{Backend, CapacityPolicy, DType, Layer, MoeConfig, Routing, SharedExperts};
use flashdmoe_sim::{SimBackend, SimOptions};

/// core's small layers of each kind (the Mixtral one aside) on 3 ranks of 20 tokens, and
/// Kimi-K2's router (one group, x2.827).
fn kinds() -> Vec<(&'static str, MoeConfig)> {
    let mut kinds: Vec<_> = small_model_kinds(DType::Bf16).into_iter().skip(1).collect();
    let v3 = kinds.iter().find(|(n, _)| *n == "deepseek-v3").unwrap().1.clone();
    kinds.push(("kimi-k2", MoeConfig { routing: Routing::deepseek_v3(None, 2.827), ..v3 }));
    kinds
        .into_iter()
        .map(|(name, c)| (name, MoeConfig { world: 3, tokens_per_rank: 20, ..c }))
        .collect()
}

#[test]
fn every_model_kind_and_dtype_matches_the_oracle() {
    for (i, dtype) in DType::ALL.into_iter().enumerate() {
        for (j, (name, c)) in kinds().into_iter().enumerate() {
            // Capacity drops on some: a token with every slot dropped keeps its shared term.
            let capacity = if (i + j) % 2 == 0 {
                CapacityPolicy::Dropless
            } else {
                CapacityPolicy::Factor(0.5)
            };
            let config = MoeConfig { dtype, capacity, ..c };
            let r = run(&config, SimOptions::default(), (10 * i + j) as u64);
            check(&r.layer, &r.weights, &r.inputs, &r.out);
            assert!(r.out.ranks.iter().any(|o| o.output.iter().any(|&v| v != 0.0)), "{name}");
        }
    }
}

#[test]
fn shared_experts_are_bitwise_deterministic_across_thread_counts() {
    let config = kinds().swap_remove(1).1; // qwen2-moe
    let (weights, inputs) = data(&config, 4);
    let mut outputs = Vec::new();
    for (processors, subscribers) in [(1, 1), (3, 2), (1, 1)] {
        let options = SimOptions {
            processors_per_rank: processors,
            subscribers_per_rank: subscribers,
            ..SimOptions::default()
        };
        let layer = SimBackend::new(options).build(&config, &weights).unwrap();
        let out = layer.forward(&inputs, &traced()).unwrap();
        let bits: Vec<u32> =
            out.ranks.iter().flat_map(|r| r.output.iter().map(|v| v.to_bits())).collect();
        outputs.push(bits);
    }
    assert!(outputs.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn the_model_presets_run_shrunk() {
    // The presets' routing, shared experts and activation at small sizes: H 64, I 64, shared
    // experts of 64, 8 tokens on 2 ranks (E, k and the groups as the model has them).
    for name in [
        "qwen1.5-moe-a2.7b",
        "qwen2-57b-a14b",
        "deepseek-v2-lite",
        "deepseek-v3",
        "kimi-k2",
        "gpt-oss-20b",
        "gpt-oss-120b",
    ] {
        let p = preset(name).unwrap();
        let config = MoeConfig {
            world: 2,
            tokens_per_rank: 8,
            hidden: 64,
            inter: 64,
            shared: p.shared.map(|s| SharedExperts { inter: 64, ..s }),
            ..p
        };
        let r = run(&config, SimOptions::default(), 3);
        check(&r.layer, &r.weights, &r.inputs, &r.out);
    }
}

#[test]
fn a_forward_that_drops_the_shared_experts_or_the_selection_bias_fails_verification() {
    for (name, config) in kinds().into_iter().filter(|(n, _)| *n != "gpt-oss" && *n != "qwen3-moe")
    {
        let r = run(&config, SimOptions::default(), 8);
        // The same weights without what the model adds: another layer, caught.
        let mut plain = config.clone();
        let mut w = r.weights.clone();
        if name == "deepseek-v3" || name == "kimi-k2" {
            plain.routing = Routing { selection_bias: false, ..config.routing };
            w.selection_bias = None;
        } else {
            plain.shared = None;
            (w.shared_up, w.shared_gate, w.shared_down, w.shared_gate_row) =
                (None, None, None, None);
        }
        let layer = SimBackend::default().build(&plain, &w).unwrap();
        let out = layer.forward(&r.inputs, &traced()).unwrap();
        let report =
            verify(&config, &r.weights, &r.inputs, &out.ranks, &VerifyOptions::default()).unwrap();
        assert!(!report.passed(), "{name}: {report}");
    }
}
