//! loom model checks of a whole tiny forward: 2 ranks of one token, one or two experts, one row
//! tile per packet, one column tile; each rank's dispatch and roles (subscriber, scheduler,
//! processor) folded onto one loom thread. Run with
//! `RUSTFLAGS="--cfg flashdmoe_loom" cargo test -p flashdmoe-sim --release --test loom`.
#![cfg(flashdmoe_loom)]

use flashdmoe_core::oracle::{VerifyOptions, verify};
use flashdmoe_core::sync::{Arc, thread};
use flashdmoe_core::{
    Backend, CapacityPolicy, DType, ForwardOptions, Layer, LayerWeights, MoeConfig, generate_input,
};
use flashdmoe_proto::TileShape;
use flashdmoe_sim::{SimBackend, SimOptions};

fn tiny() -> MoeConfig {
    MoeConfig {
        world: 2,
        tokens_per_rank: 1,
        hidden: 64,
        inter: 64,
        experts: 1,
        top_k: 1,
        dtype: DType::F32Exact,
        capacity: CapacityPolicy::Dropless,
        ..MoeConfig::default()
    }
}

/// Explores every interleaving of both ranks' forwards (up to `preemptions` preemptions) and
/// checks each run's output against the oracle; loom itself reports any unordered access to
/// heap data. Returns the number of executions explored.
fn explore(backend: SimBackend, config: MoeConfig, preemptions: usize) -> usize {
    let weights = LayerWeights::generate(&config, 3).unwrap();
    let inputs: Vec<Vec<f32>> = (0..2).map(|r| generate_input(&config, r, 3).unwrap()).collect();
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(preemptions);
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    model.check(move || {
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let layer = Arc::new(backend.build(&config, &weights).unwrap());
        let options = ForwardOptions::default();
        let peer = {
            let (layer, input, options) = (layer.clone(), inputs[1].clone(), options.clone());
            thread::spawn(move || layer.forward_rank(1, &input, &options).unwrap())
        };
        let rank0 = layer.forward_rank(0, &inputs[0], &options).unwrap();
        let outputs = [rank0, peer.join().unwrap()];
        let report =
            verify(&config, &weights, &inputs, &outputs, &VerifyOptions::default()).unwrap();
        assert!(report.passed(), "{report}");
    });
    RUNS.load(std::sync::atomic::Ordering::Relaxed)
}

fn backend() -> SimBackend {
    let options =
        SimOptions { processors_per_rank: 1, subscribers_per_rank: 1, ..SimOptions::default() };
    SimBackend::new(options).with_tile(TileShape::new(1, 64, 64))
}

/// One expert on rank 0: rank 0 computes both packets, rank 1 only combines.
#[test]
fn loom_whole_forward_one_expert() {
    let runs = explore(backend(), tiny(), 3);
    assert!(runs > 1000, "only {runs} executions explored");
}

/// An expert per rank and top-2: both ranks compute, return tiles and combine two arrivals.
#[test]
fn loom_whole_forward_expert_per_rank() {
    let runs = explore(backend(), MoeConfig { experts: 2, top_k: 2, ..tiny() }, 2);
    assert!(runs > 1000, "only {runs} executions explored");
}

/// The model bites: with `Relaxed` instead of `Release` signal stores, some interleaving reads
/// dispatched rows without a happens-before edge to their write, and loom reports it.
#[test]
#[should_panic(expected = "Causality violation")]
fn loom_whole_forward_catches_a_relaxed_signal_store() {
    explore(backend().weaken_signal_stores(), tiny(), 2);
}
