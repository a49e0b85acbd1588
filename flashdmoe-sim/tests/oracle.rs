//! The simulator against the oracle: every dtype, activation and capacity mode; bitwise
//! determinism across runs and thread counts; back-to-back forwards; statistics; edge cases and
//! bad input.

mod common;

use common::{check, data, run, traced};
use flashdmoe_core::{
    Activation, Backend, BackendError, CapacityPolicy, DType, ForwardOptions, Layer, MoeConfig,
    Placement,
};
use flashdmoe_sim::{SimBackend, SimOptions};

fn small() -> MoeConfig {
    MoeConfig {
        world: 3,
        tokens_per_rank: 24,
        hidden: 64,
        inter: 128,
        experts: 5,
        top_k: 2,
        ..MoeConfig::default()
    }
}

#[test]
fn every_dtype_activation_and_capacity_matches_the_oracle() {
    let activations = [Activation::Relu, Activation::Gelu, Activation::SiluGated];
    let capacities =
        [CapacityPolicy::Factor(1.0), CapacityPolicy::Factor(0.5), CapacityPolicy::Dropless];
    for (i, dtype) in DType::ALL.into_iter().enumerate() {
        for (j, activation) in activations.into_iter().enumerate() {
            for (c, capacity) in capacities.into_iter().enumerate() {
                let config = MoeConfig {
                    dtype,
                    activation,
                    capacity,
                    bias: (i + j + c) % 2 == 0,
                    renormalize: c != 1,
                    ..small()
                };
                let r = run(&config, SimOptions::default(), (i * 9 + j * 3 + c) as u64);
                check(&r.layer, &r.weights, &r.inputs, &r.out);
            }
        }
    }
}

#[test]
fn wide_hidden_tiles_match_the_oracle() {
    // GEMM1 and the combine in tiles of 2 bn columns (what the Hopper engine runs for gated
    // layers): a different task graph, the same output.
    let tile = SimBackend::DEFAULT_TILE.with_bn_hidden(2 * SimBackend::DEFAULT_TILE.bn);
    for (i, activation) in [Activation::Relu, Activation::SiluGated].into_iter().enumerate() {
        for capacity in [CapacityPolicy::Factor(1.0), CapacityPolicy::Dropless] {
            let config = MoeConfig { activation, capacity, bias: i == 1, ..small() };
            let (weights, inputs) = data(&config, 7 + i as u64);
            let layer =
                SimBackend::default().with_tile(tile).build(&config, &weights).expect("build");
            assert_eq!(layer.layout().geometry().tile.bn_hidden, 2 * tile.bn);
            let out = layer.forward(&inputs, &traced()).expect("forward");
            check(&layer, &weights, &inputs, &out);
        }
    }
}

#[test]
fn ragged_column_tiles_match_the_oracle() {
    // Column tiles that do not divide H (64) or I (128): 48-column GEMM0 tiles (128 = 2 x 48 +
    // 32) and 96-column GEMM1 and combine tiles (64 = 0 x 96 + 64), as the Hopper engine runs
    // gpt-oss's 2880 in 128-column tiles: the last tile of every output is ragged.
    for (i, (bn, bn_hidden)) in [(48, 48), (48, 96), (24, 72)].into_iter().enumerate() {
        let tile = SimBackend::DEFAULT_TILE.with_bn_hidden(bn_hidden);
        let tile = flashdmoe_proto::TileShape { bn, ..tile.with_gemm0_group(i as u32) };
        for activation in [Activation::Relu, Activation::SiluGated] {
            let config = MoeConfig { activation, bias: true, ..small() };
            let (weights, inputs) = data(&config, 31 + i as u64);
            let layer =
                SimBackend::default().with_tile(tile).build(&config, &weights).expect("build");
            let g = layer.layout().geometry();
            assert!(g.inter % bn != 0 || g.hidden % bn_hidden != 0, "{tile:?}");
            let out = layer.forward(&inputs, &traced()).expect("forward");
            check(&layer, &weights, &inputs, &out);
        }
    }
}

#[test]
fn bitwise_deterministic_across_runs_and_thread_counts() {
    let config = MoeConfig { activation: Activation::SiluGated, bias: true, ..small() };
    let (weights, inputs) = data(&config, 11);
    let mut outputs = Vec::new();
    for (processors, subscribers) in [(1, 1), (2, 1), (5, 3), (2, 1)] {
        let options = SimOptions {
            processors_per_rank: processors,
            subscribers_per_rank: subscribers,
            ..SimOptions::default()
        };
        let layer = SimBackend::new(options).build(&config, &weights).unwrap();
        let out = layer.forward(&inputs, &ForwardOptions::default()).unwrap();
        let bits: Vec<Vec<u32>> =
            out.ranks.iter().map(|r| r.output.iter().map(|v| v.to_bits()).collect()).collect();
        outputs.push(bits);
    }
    assert!(outputs.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn back_to_back_forwards_on_one_layer() {
    let config = small();
    let (weights, _) = data(&config, 3);
    let layer = SimBackend::default().build(&config, &weights).unwrap();
    for seed in [5, 6, 5, 7] {
        let (_, inputs) = data(&config, seed);
        let out = layer.forward(&inputs, &traced()).unwrap();
        check(&layer, &weights, &inputs, &out);
    }
}

#[test]
fn statistics_count_routed_rows_only() {
    let config = MoeConfig { capacity: CapacityPolicy::Factor(0.75), ..small() };
    let r = run(&config, SimOptions::default(), 21);
    let g = r.layer.layout().geometry();
    let row_bytes = (config.hidden * config.dtype.elem_bytes()) as u64;
    let plan = r.layer.routing_plan(&r.out.ranks).unwrap();
    let mut dropped = 0;
    for (rank, out) in r.out.ranks.iter().enumerate() {
        let kept = out.routing.rows.iter().filter(|&&row| row != flashdmoe_core::routing::DROPPED);
        let kept = kept.count() as u64;
        let received: u64 = plan.received_rows(rank as u32).iter().map(|&n| n as u64).sum();
        assert_eq!(out.stats.rows_sent, kept);
        assert_eq!(out.stats.bytes_sent, (kept + received) * row_bytes);
        // Every (source, expert) packet full, both ways: E dispatched, P x (experts owned)
        // returned.
        let owned = config.expert_map().unwrap().experts_of(rank as u32).len() as u64;
        let padded = (config.experts as u64 + g.world as u64 * owned) * g.capacity as u64;
        let padded = padded * row_bytes;
        assert_eq!(out.stats.padded_bytes, padded);
        assert_eq!(out.stats.dropped, config.tokens_per_rank as u64 * 2 - kept);
        dropped += out.stats.dropped;
    }
    assert!(dropped > 0, "factor 0.75 should drop some pairs");
}

#[test]
fn edge_cases() {
    // No tokens at all; a single rank; more ranks than experts (empty ranks and zero-row
    // packets everywhere); every token to the same experts (zero router: all ties go to the
    // lowest experts); a placement table; top-k = E.
    let cases = [
        MoeConfig { tokens_per_rank: 0, ..small() },
        MoeConfig { world: 1, ..small() },
        MoeConfig { world: 4, experts: 2, top_k: 1, ..small() },
        MoeConfig { world: 2, experts: 3, top_k: 3, ..small() },
        MoeConfig { placement: Placement::Table(vec![2, 2, 0, 2, 0]), ..small() },
    ];
    for (i, config) in cases.iter().enumerate() {
        let r = run(config, SimOptions::default(), 40 + i as u64);
        check(&r.layer, &r.weights, &r.inputs, &r.out);
    }
    let config = MoeConfig { capacity: CapacityPolicy::Factor(1.0), ..small() };
    let (mut weights, inputs) = data(&config, 50);
    weights.router.iter_mut().for_each(|w| *w = 0.0);
    let layer = SimBackend::default().build(&config, &weights).unwrap();
    let out = layer.forward(&inputs, &traced()).unwrap();
    assert!(out.ranks.iter().all(|r| r.routing.experts.chunks(2).all(|c| c == [0, 1])));
    check(&layer, &weights, &inputs, &out);
}

#[test]
fn bad_input_is_a_typed_error() {
    let config = small();
    let (weights, inputs) = data(&config, 1);
    let layer = SimBackend::default().build(&config, &weights).unwrap();
    let opts = ForwardOptions::default();
    let invalid = |r: Result<_, BackendError>, what: &str| match r {
        Err(BackendError::InvalidInput { what: w, .. }) => assert_eq!(w, what),
        other => panic!("expected invalid {what}, got {other:?}"),
    };
    invalid(layer.forward_rank(3, &inputs[0], &opts).map(|_| ()), "rank");
    invalid(layer.forward_rank(0, &inputs[0][1..], &opts).map(|_| ()), "input");
    let mut odd = inputs[0].clone();
    odd[5] = 1.0 + f32::EPSILON;
    invalid(layer.forward_rank(0, &odd, &opts).map(|_| ()), "input");
    odd[5] = f32::NAN;
    invalid(layer.forward_rank(0, &odd, &opts).map(|_| ()), "input");
    invalid(layer.forward(&inputs[..2], &opts).map(|_| ()), "inputs");
    let bad = SimOptions { processors_per_rank: 0, ..SimOptions::default() };
    invalid(
        SimBackend::new(bad).build(&config, &weights).map(|_| ()),
        "SimOptions::processors_per_rank",
    );
    let bad = SimOptions { streamed: Some(0), ..SimOptions::default() };
    invalid(SimBackend::new(bad).build(&config, &weights).map(|_| ()), "SimOptions::streamed");
    // 4 ranks x 24 GiB of heap: over the simulator's memory limit, a typed error (no
    // allocation is attempted).
    let huge = MoeConfig {
        world: 4,
        experts: 4,
        tokens_per_rank: 1 << 20,
        hidden: 1024,
        inter: 1024,
        capacity: CapacityPolicy::Dropless,
        ..small()
    };
    let (w, _) = data(&MoeConfig { tokens_per_rank: 1, ..huge.clone() }, 1);
    let err = SimBackend::default().build(&huge, &w).map(|_| ()).unwrap_err();
    assert!(matches!(err, BackendError::Unavailable(_)), "{err:?}");
}
