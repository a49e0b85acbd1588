//! `flashdmoe run --backend cuda` as one process of a world of processes (one GPU each): what
//! each child of `flashdmoe launch`, or of torchrun, runs when `RANK` is set. The process
//! joins the group ([`ProcessGroup`]), builds its part of the layer, runs its ranks' forwards
//! in step with the others and verifies its own rows against the oracle.

use std::time::{Duration, Instant};

use flashdmoe::core::oracle::{self, VerifyOptions};
use flashdmoe::core::rendezvous::RANK;
use flashdmoe::core::{BackendError, ForwardOptions, LayerWeights, MoeConfig, generate_input};
use flashdmoe::cuda::{CudaBackend, GroupOptions, ProcessGroup};

use super::phases::Phases;
use super::{CliError, RunArgs, run, run_summary};

/// Whether this process was started as one rank of a world of processes (`RANK` is set).
pub(super) fn is_process_rank() -> bool {
    std::env::var_os(RANK).is_some()
}

/// Runs `args` as this process's ranks; `Err` carries the exit status.
pub(super) fn run(
    config: &MoeConfig,
    options: &ForwardOptions,
    args: &RunArgs,
    phases: &mut Phases,
) -> Result<(), CliError> {
    let group = phases.run(c"join", |_| ProcessGroup::from_env(&GroupOptions::default()))?;
    println!(
        "backend: cuda, one process per GPU: process rank {} of {} on GPU {}",
        group.rank(),
        group.world(),
        group.device()
    );
    let weights = phases.run(c"weights", |_| LayerWeights::generate(config, args.seed))?;
    let cuda = args.cuda_options();
    let layer =
        phases.run(c"build", |_| CudaBackend::new(cuda).build_process(config, &weights, &group))?;
    let ranks = layer.local_ranks();
    println!("ranks {ranks:?} of {} in this process", config.world);
    for (gpu, weights, used) in layer.memory_per_gpu()? {
        println!(
            "memory: GPU {gpu}: weights {} ({weights} B); device memory in use {} (every process \
             on this GPU)",
            run_summary::bytes(weights),
            run_summary::bytes(used)
        );
    }
    let inputs = phases.run(c"inputs", |_| {
        ranks.clone().map(|r| generate_input(config, r, args.seed)).collect::<Result<Vec<_>, _>>()
    })?;
    let (mut rank_times, mut calls) = (Vec::new(), Vec::new());
    let mut first: Option<Vec<flashdmoe::core::RankOutput>> = None;
    let mut last = None;
    for i in 0..args.iterations {
        let start = Instant::now();
        let result = phases.run(c"forwards", |_| layer.forward_local(&inputs, options));
        let outs = match result {
            Ok(outs) => outs,
            Err(e) => {
                return Err(failed(e, i + 1, start.elapsed(), &layer, &inputs, options, args));
            }
        };
        calls.push(start.elapsed());
        rank_times.push(run_summary::slowest_rank(&outs));
        match &first {
            None => first = Some(outs.clone()),
            Some(f) => {
                for (r, (a, b)) in f.iter().zip(&outs).enumerate() {
                    let same = a.output.len() == b.output.len()
                        && a.output.iter().zip(&b.output).all(|(x, y)| x.to_bits() == y.to_bits());
                    if !same {
                        return Err(CliError::Mismatch(format!(
                            "forward {i} of rank {} differs bitwise from forward 0",
                            ranks.start + r as u32
                        )));
                    }
                }
            }
        }
        last = Some(outs);
    }
    let outs = last.expect("iterations >= 1 (clap enforces it)");
    // Across processes the host path's events include each kernel's wait for the other
    // processes' kernels, whose host calls start milliseconds apart (run 28).
    println!(
        "{}; this process's ranks, host path (each kernel's events include its wait for the \
         other processes' kernels: --back-to-back K times what a model sees)",
        run_summary::time(&rank_times, &calls)
    );
    let verdict = phases.run(c"verify", |_| {
        oracle::verify_ranks(
            config,
            &weights,
            ranks.start,
            &inputs,
            &outs,
            &VerifyOptions { sample: run::sample(config), tolerance: None },
        )
    })?;
    println!("verify: ranks {ranks:?}: {verdict}");
    if !verdict.passed() {
        return Err(CliError::Mismatch(format!(
            "{} failures against the oracle",
            verdict.failure_count
        )));
    }
    match args.back_to_back {
        // Only verified work is timed back to back (its last output is compared with these).
        Some(k) => {
            super::back_to_back::process(&layer, &group, config, &inputs, &outs, k, options.timeout)
        }
        None => Ok(()),
    }
}

/// A failed forward `n` (counted from 1): says how long it took; after a dead peer, times the
/// next call too (it must fail at once, before any GPU work).
fn failed(
    e: BackendError,
    n: u32,
    took: Duration,
    layer: &flashdmoe::cuda::CudaLayer,
    inputs: &[Vec<f32>],
    options: &ForwardOptions,
    args: &RunArgs,
) -> CliError {
    println!("forward {n} failed after {:.3} ms: {e}", took.as_secs_f64() * 1e3);
    if let BackendError::PeerGone { .. } = e {
        let start = Instant::now();
        let again = layer.forward_local(inputs, options);
        let us = start.elapsed().as_secs_f64() * 1e6;
        match again {
            Err(again @ BackendError::PeerGone { .. }) => {
                println!("the next forward failed fast in {us:.1} us: {again}");
            }
            Err(other) => {
                println!("the next forward failed in {us:.1} us, not as PeerGone: {other}")
            }
            Ok(_) => println!("the next forward unexpectedly succeeded ({us:.1} us)"),
        }
    }
    run::timeout_named(e, "cuda", args.timeout)
}
