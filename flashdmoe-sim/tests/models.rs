//! The simulator against the oracle on small layers of each real-model kind (issue 16): shared
//! experts with and without Qwen's sigmoid gate, DeepSeek-V2's grouped softmax router,
//! DeepSeek-V3's sigmoid router with its selection bias, groups and scaling, gpt-oss's router
//! and clamped SwiGLU; every dtype, several ranks, capacity drops, the presets themselves
//! shrunk; and a layer without its shared experts or selection bias is caught. The shared
//! experts as the CUDA kernel runs them (core's `virtual_experts`: m parts a rank routed like
//! experts) run through the simulator's protocol too and match the oracle.

mod common;

use common::{check, data, run, traced};
use flashdmoe_core::config::presets::{preset, small_model_kinds};
use flashdmoe_core::oracle::{VerifyOptions, shared_scale, verify};
use flashdmoe_core::routing::route;
use flashdmoe_core::virtual_experts::VirtualExperts;
use flashdmoe_core::{
    Backend, CapacityPolicy, DType, Layer, MoeConfig, RankOutput, RankStats, Routing,
    SharedExperts, conformance,
};
use flashdmoe_proto::TaskCounts;
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

#[test]
fn shared_experts_as_virtual_experts_run_through_the_protocol_as_the_oracle_says() {
    // The CUDA kernel's way (core's `virtual_experts`), on the simulator: the protocol's layer
    // (E + P m experts, k + m slots, the parts of the shared experts as experts) run with each
    // rank's router routing plus its parts, against the oracle of the layer with shared
    // experts. Qwen2-MoE's kind (m = 2, gated), DeepSeek-V2's (m = 2), DeepSeek-V3's (m = 1)
    // and a Qwen of m = 4, each in bf16 (the parts' outputs rounded apart) and f32.
    let mut cases: Vec<(&str, MoeConfig)> =
        kinds().into_iter().filter(|(_, c)| c.shared.is_some()).collect();
    let qwen = cases[0].1.clone();
    let shared = qwen.shared.map(|s| SharedExperts { inter: 4 * qwen.inter, ..s });
    cases.push(("qwen m = 4", MoeConfig { shared, ..qwen }));
    for (name, c) in cases {
        for dtype in [DType::Bf16, DType::F32] {
            let config = MoeConfig { dtype, capacity: CapacityPolicy::Dropless, ..c.clone() };
            let v = VirtualExperts::of(&config).unwrap().unwrap();
            let (weights, inputs) = data(&config, 12);
            let protocol = v.protocol_config(&config).unwrap();
            let layer = SimBackend::default()
                .build(&protocol, &v.protocol_weights(&config, &weights).unwrap())
                .unwrap();
            let h = config.hidden as usize;
            let routings: Vec<_> = (0..config.world)
                .map(|r| {
                    let x = &inputs[r as usize];
                    let routing = route(&config, x, &weights).unwrap();
                    let gs = |t: u32| shared_scale(&weights, &x[t as usize * h..][..h]);
                    v.protocol_routing(&protocol, r, &routing, gs).unwrap()
                })
                .collect();
            let ranks: Vec<RankOutput> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..config.world as usize)
                    .map(|r| {
                        let (layer, input, routing) = (&layer, &inputs[r], &routings[r]);
                        s.spawn(move || {
                            layer.forward_rank_routed(r as u32, input, routing, &traced())
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
            });
            let out = flashdmoe_core::ForwardOutput { ranks, elapsed: Default::default() };
            conformance::check_forward(&layer, &out).expect("trace conformance");
            let plan = layer.routing_plan(&out.ranks).unwrap();
            let g = layer.layout().geometry();
            let mut reported = Vec::new();
            for (rank, r) in out.ranks.iter().enumerate() {
                let rank = rank as u32;
                // The statistics the CUDA backend computes for the layer with shared experts.
                let source = plan.source(rank);
                let sent = (0..g.world).flat_map(|o| (0..g.local_experts).map(move |le| (o, le)));
                let expected = RankStats::from_packets(
                    &protocol,
                    layer.layout(),
                    rank,
                    sent.map(|(owner, le)| source.rows(owner, le)),
                    plan.received_rows(rank),
                    0,
                )
                .unwrap();
                assert_eq!(RankStats { elapsed: Default::default(), ..r.stats.clone() }, expected);
                let routed = TaskCounts::for_rank(layer.layout(), plan.received_rows(rank));
                assert_eq!(r.stats.tasks, routed);
                // What a backend reports: the router's routing.
                reported.push(RankOutput { routing: v.router_routing(&r.routing), ..r.clone() });
            }
            let report =
                verify(&config, &weights, &inputs, &reported, &VerifyOptions::default()).unwrap();
            assert!(report.passed(), "{name} {dtype}: {report}");
            println!("{name} {dtype}: {report}");
        }
    }
}
