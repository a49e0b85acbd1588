//! `CudaOptions::remote_copiers`: an out-of-range count is a typed error naming the option,
//! and a layer over two GPUs is right whatever share of its processors copies the rows bound
//! for the other GPU (the dispatch's copy split, `kernels/dispatch.cuh` `copy_group`).
//!
//! Needs a GPU (two for the copying itself): without one it passes with a `skipped: no GPU`
//! line; with one the range check runs and a layer of two virtual ranks (whose rows never
//! leave the GPU, so the option changes nothing) is checked against the oracle.

use std::time::Duration;

use flashdmoe::core::oracle::{VerifyOptions, verify};
use flashdmoe::core::{
    Activation, Backend, BackendError, DType, ForwardOptions, Layer, LayerWeights, MoeConfig,
    generate_input,
};
use flashdmoe::cuda::{CudaBackend, CudaOptions, cuda_available, gpus};

fn config() -> MoeConfig {
    MoeConfig {
        world: 2,
        tokens_per_rank: 512,
        hidden: 512,
        inter: 1024,
        experts: 8,
        top_k: 2,
        activation: Activation::Relu,
        dtype: DType::Bf16,
        ..MoeConfig::default()
    }
}

#[test]
fn remote_copiers_are_range_checked_and_any_split_is_right() {
    if let Err(e) = cuda_available() {
        println!("skipped: no GPU ({e})");
        return;
    }
    let config = config();
    let weights = LayerWeights::generate(&config, 11).expect("weights");
    let inputs: Vec<Vec<f32>> =
        (0..config.world).map(|r| generate_input(&config, r, 11).expect("input")).collect();
    let ranks_per_gpu = if gpus().map_or(0, |g| g.len()) >= 2 { 1 } else { 2 };
    let backend = |n| {
        CudaBackend::new(CudaOptions {
            ranks_per_gpu: Some(ranks_per_gpu),
            remote_copiers: Some(n),
            ..CudaOptions::default()
        })
    };
    match backend(100_000).build(&config, &weights) {
        Err(BackendError::InvalidInput { what: "remote_copiers", reason }) => {
            assert!(reason.contains("100000 copying blocks"), "{reason}")
        }
        Err(e) => panic!("expected an invalid remote_copiers, got {e}"),
        Ok(_) => panic!("100000 remote copiers were accepted"),
    }
    let options = ForwardOptions { trace: false, timeout: Duration::from_secs(30) };
    let mut first: Option<Vec<Vec<f32>>> = None;
    // One copying block, half of a H200's 131 processors, and every processor.
    for n in [1, 65, 131] {
        let layer = match backend(n).build(&config, &weights) {
            Ok(layer) => layer,
            // A smaller GPU has fewer processors: the count is out of its range.
            Err(BackendError::InvalidInput { what: "remote_copiers", .. }) => continue,
            Err(e) => panic!("build with {n} remote copiers: {e}"),
        };
        let out = layer.forward(&inputs, &options).expect("forward");
        let report = verify(&config, &weights, &inputs, &out.ranks, &VerifyOptions::default())
            .expect("verify");
        assert!(report.passed(), "{n} remote copiers: {report}");
        let outputs: Vec<Vec<f32>> = out.ranks.iter().map(|r| r.output.clone()).collect();
        // The copy split moves rows, never changes them: every split gives the same bits.
        match &first {
            None => first = Some(outputs),
            Some(f) => assert!(
                f.iter()
                    .zip(&outputs)
                    .all(|(a, b)| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())),
                "{n} remote copiers changed the output"
            ),
        }
        println!("{n} remote copiers on {ranks_per_gpu} rank(s) a GPU: {}", report);
    }
}
