//! `Layer::forward_rank_routed`: the simulator with the routing given instead of its router.

mod common;

use common::data;
use flashdmoe_core::oracle::reference_rank;
use flashdmoe_core::routing::RankRouting;
use flashdmoe_core::{
    Activation, Backend, BackendError, CapacityPolicy, DType, ForwardOptions, Layer, MoeConfig,
};
use flashdmoe_sim::SimBackend;

fn small(world: u32, capacity: CapacityPolicy) -> MoeConfig {
    MoeConfig {
        world,
        tokens_per_rank: 20,
        hidden: 64,
        inter: 128,
        experts: 5,
        top_k: 2,
        capacity,
        activation: Activation::SiluGated,
        bias: true,
        dtype: DType::F32Exact,
        ..MoeConfig::default()
    }
}

/// A routing no router would make: token t goes to experts (t % E, (t + 2) % E) with weights
/// that do not sum to one, so the given weights visibly reach the combine.
fn skewed(config: &MoeConfig, shift: u32) -> RankRouting {
    let (e, t) = (config.experts, config.tokens_per_rank);
    let experts = (0..t).flat_map(|t| [(t + shift) % e, (t + shift + 2) % e]).collect();
    let weights = (0..t).flat_map(|t| [0.25 + t as f32 / 64.0, -0.5]).collect();
    RankRouting::from_choices(config, experts, weights).unwrap()
}

#[test]
fn the_router_s_own_routing_given_back_is_bitwise_the_same_forward() {
    let config = small(1, CapacityPolicy::Factor(1.0));
    let (weights, inputs) = data(&config, 4);
    let layer = SimBackend::default().build(&config, &weights).unwrap();
    let options = ForwardOptions::default();
    let routed = layer.forward_rank(0, &inputs[0], &options).unwrap();
    let given = layer.forward_rank_routed(0, &inputs[0], &routed.routing, &options).unwrap();
    assert_eq!(given.routing, routed.routing);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&given.output), bits(&routed.output));
}

#[test]
fn a_given_routing_matches_the_oracle_on_every_rank() {
    for capacity in [CapacityPolicy::Dropless, CapacityPolicy::Factor(0.5)] {
        let config = small(2, capacity);
        let (weights, inputs) = data(&config, 9);
        let layer = SimBackend::default().build(&config, &weights).unwrap();
        let routings: Vec<RankRouting> = (0..2).map(|r| skewed(&config, r)).collect();
        if capacity != CapacityPolicy::Dropless {
            assert!(routings[0].dropped() > 0, "the test should exercise capacity drops");
        }
        let outputs: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|r| {
                    let (layer, input, routing) = (&layer, &inputs[r], &routings[r]);
                    s.spawn(move || {
                        layer.forward_rank_routed(r as u32, input, routing, &Default::default())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
        });
        for (r, out) in outputs.iter().enumerate() {
            assert_eq!(out.routing, routings[r]);
            let reference = reference_rank(&config, &weights, &inputs[r], &routings[r]).unwrap();
            let worst = out
                .output
                .iter()
                .zip(&reference)
                .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
                .fold(0.0f32, f32::max);
            assert!(worst as f64 <= DType::F32Exact.tolerance(), "rank {r}: {worst}");
        }
    }
}

#[test]
fn an_inconsistent_routing_is_refused_before_anything_runs() {
    let config = small(1, CapacityPolicy::Factor(0.5));
    let (weights, inputs) = data(&config, 2);
    let layer = SimBackend::default().build(&config, &weights).unwrap();
    let mut routing = skewed(&config, 0);
    routing.rows[1] += 1;
    let err = layer.forward_rank_routed(0, &inputs[0], &routing, &Default::default()).unwrap_err();
    assert!(
        matches!(&err, BackendError::InvalidInput { what: "routing", reason }
            if reason.contains("routing.rows")),
        "{err}"
    );
    // The layer still works afterwards.
    layer.forward_rank(0, &inputs[0], &Default::default()).unwrap();
}
