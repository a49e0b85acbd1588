//! Both backends report the same statistics for the same forward: rows and bytes sent, the
//! capacity-padded bytes, drops and tasks per kind (every field of `RankStats` but the time).
//!
//! Needs a GPU: on a machine without one (or without the driver or NVRTC) it passes with a
//! `skipped: no GPU` line. Where no GPU is needed, the simulator's tests check its statistics
//! against `RankStats::from_packets` (the function the CUDA backend reports) on random
//! configs, and core's unit tests check the padded bytes by hand. With shared experts the
//! CUDA kernel runs their parts as experts (core's `virtual_experts`): its statistics are
//! those of the simulator running the protocol's layer with the same routing.

use std::time::Duration;

use flashdmoe::core::virtual_experts::VirtualExperts;
use flashdmoe::core::{
    Activation, Backend, CapacityPolicy, DType, ForwardOptions, Layer, LayerWeights, MoeConfig,
    Placement, RankOutput, RankStats, SharedExperts, SharedGate, generate_input,
};
use flashdmoe::cuda::{CudaBackend, CudaOptions, cuda_available};
use flashdmoe::sim::SimBackend;

fn config(world: u32, experts: u32, placement: Placement, capacity: CapacityPolicy) -> MoeConfig {
    MoeConfig {
        world,
        tokens_per_rank: 384,
        hidden: 512,
        inter: 1024,
        experts,
        top_k: 2,
        activation: Activation::Relu,
        dtype: DType::Bf16,
        capacity,
        placement,
        ..MoeConfig::default()
    }
}

#[test]
fn sim_and_cuda_report_the_same_statistics() {
    if let Err(e) = cuda_available() {
        println!("skipped: no GPU ({e})");
        return;
    }
    let cases = [
        // Even placement, capacity drops.
        config(2, 8, Placement::Contiguous, CapacityPolicy::Factor(1.0)),
        // Uneven placement (rank 0 owns 4 experts, rank 1 owns 2), where the backends'
        // padded-bytes formulas used to disagree, with drops.
        config(2, 6, Placement::Table(vec![0, 0, 0, 0, 1, 1]), CapacityPolicy::Factor(1.0)),
        // A rank that owns nothing, dropless.
        config(4, 6, Placement::Table(vec![0, 0, 1, 1, 1, 3]), CapacityPolicy::Dropless),
    ];
    let options = ForwardOptions { trace: false, timeout: Duration::from_secs(30) };
    for (case, config) in cases.iter().enumerate() {
        let seed = 7 + case as u64;
        let weights = LayerWeights::generate(config, seed).expect("weights");
        let inputs: Vec<Vec<f32>> =
            (0..config.world).map(|r| generate_input(config, r, seed).expect("input")).collect();
        let cuda = CudaBackend::new(CudaOptions::default()).build(config, &weights).expect("cuda");
        // The simulator on the kernel's tile, so the task counts are comparable.
        let tile = cuda.layout().geometry().tile;
        let sim = SimBackend::default().with_tile(tile).build(config, &weights).expect("sim");
        let on_gpu = cuda.forward(&inputs, &options).expect("cuda forward");
        let on_cpu = sim.forward(&inputs, &options).expect("sim forward");
        for (rank, (g, c)) in on_gpu.ranks.iter().zip(&on_cpu.ranks).enumerate() {
            assert_eq!(
                (&g.routing.experts, &g.routing.rows),
                (&c.routing.experts, &c.routing.rows),
                "case {case} rank {rank}: the backends routed differently (a near tie?)"
            );
            let stats = |s: &RankStats| RankStats { elapsed: Duration::ZERO, ..s.clone() };
            assert_eq!(stats(&g.stats), stats(&c.stats), "case {case} rank {rank}: {config:?}");
            println!("case {case} rank {rank}: {:?}", stats(&g.stats));
        }
    }
}

#[test]
fn cuda_with_shared_experts_reports_the_statistics_of_the_protocol_s_layer_on_the_sim() {
    if let Err(e) = cuda_available() {
        println!("skipped: no GPU ({e})");
        return;
    }
    // Two ranks, 8 experts, top-2, shared experts of 2 x I (m = 2) with Qwen's gate.
    let config = MoeConfig {
        activation: Activation::SiluGated,
        shared: Some(SharedExperts { count: 1, inter: 2048, gate: SharedGate::Sigmoid }),
        ..config(2, 8, Placement::Contiguous, CapacityPolicy::Dropless)
    };
    let options = ForwardOptions { trace: false, timeout: Duration::from_secs(30) };
    let weights = LayerWeights::generate(&config, 5).expect("weights");
    let inputs: Vec<Vec<f32>> =
        (0..config.world).map(|r| generate_input(&config, r, 5).expect("input")).collect();
    let cuda = CudaBackend::new(CudaOptions::default()).build(&config, &weights).expect("cuda");
    let on_gpu = cuda.forward(&inputs, &options).expect("cuda forward");
    // The protocol's layer on the simulator, on the kernel's tile, with the GPU's routing.
    let v = VirtualExperts::of(&config).unwrap().expect("shared experts");
    let protocol = v.protocol_config(&config).unwrap();
    let tile = cuda.layout().geometry().tile;
    let sim = SimBackend::default()
        .with_tile(tile)
        .build(&protocol, &v.protocol_weights(&config, &weights).unwrap())
        .expect("sim");
    let routings: Vec<_> = on_gpu
        .ranks
        .iter()
        .enumerate()
        .map(|(r, o)| v.protocol_routing(&protocol, r as u32, &o.routing, |_| 1.0).unwrap())
        .collect();
    let on_cpu: Vec<RankOutput> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..config.world as usize)
            .map(|r| {
                let (sim, input, routing, options) = (&sim, &inputs[r], &routings[r], &options);
                s.spawn(move || sim.forward_rank_routed(r as u32, input, routing, options))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap().expect("sim forward")).collect()
    });
    for (rank, (g, c)) in on_gpu.ranks.iter().zip(&on_cpu).enumerate() {
        let stats = |s: &RankStats| RankStats { elapsed: Duration::ZERO, ..s.clone() };
        assert_eq!(stats(&g.stats), stats(&c.stats), "rank {rank}");
        println!("shared experts rank {rank}: {:?}", stats(&g.stats));
    }
}
