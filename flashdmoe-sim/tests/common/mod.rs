//! Helpers shared by the simulator's integration tests.
#![allow(dead_code)]

use std::time::Duration;

use flashdmoe_core::conformance;
use flashdmoe_core::oracle::{VerifyOptions, verify};
use flashdmoe_core::{
    Backend, ForwardOptions, ForwardOutput, Layer, LayerWeights, MoeConfig, RankStats,
    generate_input,
};
use flashdmoe_proto::TaskCounts;
use flashdmoe_sim::{SimBackend, SimLayer, SimOptions};

/// Everything a test needs about one forward.
pub struct Run {
    pub layer: SimLayer,
    pub weights: LayerWeights,
    pub inputs: Vec<Vec<f32>>,
    pub out: ForwardOutput,
}

/// Seeded weights and inputs for `config`.
pub fn data(config: &MoeConfig, seed: u64) -> (LayerWeights, Vec<Vec<f32>>) {
    let weights = LayerWeights::generate(config, seed).expect("weights");
    let inputs =
        (0..config.world).map(|r| generate_input(config, r, seed).expect("input")).collect();
    (weights, inputs)
}

/// Builds the layer and runs one traced forward.
pub fn run(config: &MoeConfig, options: SimOptions, seed: u64) -> Run {
    let (weights, inputs) = data(config, seed);
    let layer = SimBackend::new(options).build(config, &weights).expect("build");
    let out = layer.forward(&inputs, &traced()).expect("forward");
    Run { layer, weights, inputs, out }
}

/// Forward options with the trace on and a deadline that fails a hung test quickly.
pub fn traced() -> ForwardOptions {
    ForwardOptions { trace: true, timeout: std::time::Duration::from_secs(20) }
}

/// Asserts the forward is correct: oracle within tolerance, every task exactly once in a legal
/// order (when traced), each rank's task count equal to the protocol bound, and each rank's
/// measured statistics equal to `RankStats::from_packets` of the routing (what the CUDA
/// backend reports for the same routing).
pub fn check(layer: &SimLayer, weights: &LayerWeights, inputs: &[Vec<f32>], out: &ForwardOutput) {
    let config = layer.config();
    let report =
        verify(config, weights, inputs, &out.ranks, &VerifyOptions::default()).expect("verify");
    assert!(report.passed(), "{config:?}\n{report}");
    let plan = layer.routing_plan(&out.ranks).expect("plan");
    let g = layer.layout().geometry();
    for (rank, r) in out.ranks.iter().enumerate() {
        let rank = rank as u32;
        let bound = TaskCounts::for_rank(layer.layout(), plan.received_rows(rank));
        assert_eq!(r.stats.tasks, bound, "rank {rank} task counts vs bound");
        let source = plan.source(rank);
        let sent = (0..g.world).flat_map(|o| (0..g.local_experts).map(move |le| (o, le)));
        let expected = RankStats::from_packets(
            config,
            layer.layout(),
            rank,
            sent.map(|(owner, le)| source.rows(owner, le)),
            plan.received_rows(rank),
            r.routing.dropped(),
        )
        .expect("statistics");
        let measured = RankStats { elapsed: Duration::ZERO, ..r.stats.clone() };
        assert_eq!(measured, expected, "rank {rank} statistics\n{config:?}");
    }
    if out.ranks.iter().all(|r| r.trace.is_some()) {
        conformance::check_forward(layer, out).expect("trace conformance");
    }
}
