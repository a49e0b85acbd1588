//! `flashdmoe run`: generate a layer, run forwards on a backend, report, verify.

use std::time::Duration;

use flashdmoe::core::conformance;
use flashdmoe::core::oracle::{self, Sample, VerifyOptions};
use flashdmoe::core::{
    Backend, ForwardOptions, ForwardOutput, Layer, LayerWeights, MoeConfig, generate_input, trace,
};
use flashdmoe::cuda::{CudaBackend, CudaOptions};
use flashdmoe::sim::SimBackend;

use super::{BackendArg, CliError, RunArgs, config, run_summary};

/// Above this many output rows (all ranks), `run` checks a fresh random sample of
/// [`SAMPLED_ROWS_PER_RANK`] rows per rank against the oracle instead of every row.
const FULL_CHECK_ROWS: u64 = 8192;
/// Rows per rank checked when sampling.
const SAMPLED_ROWS_PER_RANK: u32 = 64;

/// Runs the command; `Err` carries the exit status.
pub(super) fn run(args: &RunArgs) -> Result<(), CliError> {
    let config = config::build(&args.config)?;
    println!("{}", run_summary::config(&config));
    if args.dry_run {
        return Ok(());
    }
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return Err(CliError::Usage(format!("--timeout {} must be > 0 seconds", args.timeout)));
    }
    let options = ForwardOptions {
        trace: false,
        timeout: Duration::try_from_secs_f64(args.timeout)
            .map_err(|e| CliError::Usage(format!("--timeout {}: {e}", args.timeout)))?,
    };

    let (weights, inputs) = {
        let _range = nvtx::LocalRange::new(c"flashdmoe: generate weights and inputs");
        let weights = LayerWeights::generate(&config, args.seed)?;
        let inputs = (0..config.world)
            .map(|rank| generate_input(&config, rank, args.seed))
            .collect::<Result<Vec<_>, _>>()?;
        (weights, inputs)
    };

    match args.backend {
        BackendArg::Sim => {
            let sim = args.sim.sim_options(args.ranks_per_gpu)?;
            println!(
                "backend: sim ({} processor and {} subscriber threads per rank)",
                sim.processors_per_rank, sim.subscribers_per_rank
            );
            run_on(&SimBackend::new(sim), &config, &weights, &inputs, &options, args)
        }
        BackendArg::Cuda => {
            args.sim.reject_for_cuda()?;
            let cuda = CudaOptions { ranks_per_gpu: args.ranks_per_gpu, ..CudaOptions::default() };
            match cuda.ranks_per_gpu {
                Some(r) => println!("backend: cuda ({r} ranks per GPU)"),
                None => println!("backend: cuda (ranks spread over the GPUs)"),
            }
            run_on(&CudaBackend::new(cuda), &config, &weights, &inputs, &options, args)
        }
    }
}

/// Builds the layer on `backend`, runs `args.iterations` forwards (and a traced one with
/// `--trace`), prints the report of the last one and verifies every one.
fn run_on<B: Backend>(
    backend: &B,
    config: &MoeConfig,
    weights: &LayerWeights,
    inputs: &[Vec<f32>],
    options: &ForwardOptions,
    args: &RunArgs,
) -> Result<(), CliError> {
    let iterations = args.iterations;
    let layer = {
        let _range = nvtx::LocalRange::new(c"flashdmoe: build layer");
        backend.build(config, weights)?
    };
    let (mut rank_times, mut calls) = (Vec::new(), Vec::new());
    let mut first: Option<ForwardOutput> = None;
    let mut last = None;
    for i in 0..iterations {
        let out = {
            let _range = nvtx::LocalRange::new(c"flashdmoe: forward");
            layer.forward(inputs, options)?
        };
        rank_times.push(run_summary::slowest_rank(&out.ranks));
        calls.push(out.elapsed);
        match &first {
            None => first = Some(out.clone()),
            Some(f) => check_identical(f, &out, i)?,
        }
        last = Some(out);
    }
    let out = last.expect("iterations >= 1 (clap enforces it)");
    if let (Some(path), Some(first)) = (&args.trace, &first) {
        let traced = {
            let _range = nvtx::LocalRange::new(c"flashdmoe: traced forward");
            layer.forward(inputs, &ForwardOptions { trace: true, ..options.clone() })?
        };
        check_identical(first, &traced, iterations)?;
        println!("{}", write_trace(config, &layer, &traced, path)?);
    }
    println!("{}", run_summary::routing_histogram(config, &out.ranks));
    println!("{}", run_summary::tasks(&out.ranks));
    println!("{}", run_summary::traffic(&out.ranks));
    println!("{}", run_summary::time(&rank_times, &calls));

    let rows = config.world as u64 * config.tokens_per_rank as u64;
    let sample = if rows <= FULL_CHECK_ROWS {
        Sample::All
    } else {
        Sample::Rows { per_rank: SAMPLED_ROWS_PER_RANK, seed: None }
    };
    let verdict = {
        let _range = nvtx::LocalRange::new(c"flashdmoe: verify");
        oracle::verify(
            config,
            weights,
            inputs,
            &out.ranks,
            &VerifyOptions { sample, tolerance: None },
        )?
    };
    println!("verify: {verdict}");
    if verdict.passed() {
        Ok(())
    } else {
        Err(CliError::Mismatch(format!("{} failures against the oracle", verdict.failure_count)))
    }
}

/// Checks a traced forward against the task graph (trace conformance), writes it to `path` as
/// Chrome/Perfetto JSON (every rank on one time base) and returns the report line (events,
/// utilisation).
fn write_trace<L: Layer>(
    config: &MoeConfig,
    layer: &L,
    out: &ForwardOutput,
    path: &std::path::Path,
) -> Result<String, CliError> {
    let events = conformance::check_forward(layer, out)
        .map_err(|e| CliError::Mismatch(format!("the trace does not conform: {e}")))?;
    std::fs::write(path, trace::chrome_json(&events))
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?;
    // Processors that ran at least one task; the wall is the task phase (first start to last end).
    let u = trace::utilisation(&events, config.world, 0);
    Ok(format!(
        "trace: {} task events written to {} (conforms to the task graph); {} processors busy {:.1}% of the {:.3} ms task phase",
        events.len(),
        path.display(),
        u.processors.len(),
        u.overall * 100.0,
        u.wall_ns as f64 / 1e6
    ))
}

/// Every forward of the same inputs must give bitwise the same output.
fn check_identical(first: &ForwardOutput, out: &ForwardOutput, i: u32) -> Result<(), CliError> {
    for (rank, (a, b)) in first.ranks.iter().zip(&out.ranks).enumerate() {
        let same = a.output.len() == b.output.len()
            && a.output.iter().zip(&b.output).all(|(x, y)| x.to_bits() == y.to_bits());
        if !same {
            return Err(CliError::Mismatch(format!(
                "forward {i} of rank {rank} differs bitwise from forward 0 (non-deterministic)"
            )));
        }
    }
    Ok(())
}
