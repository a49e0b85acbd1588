//! `flashdmoe run`: generate a layer, run forwards on a backend, report, verify.

use std::time::Duration;

use flashdmoe::core::conformance;
use flashdmoe::core::oracle::{self, Sample, VerifyOptions};
use flashdmoe::core::{
    Backend, BackendError, ForwardOptions, ForwardOutput, Layer, LayerWeights, MoeConfig,
    RankOutput, generate_input, trace,
};
use flashdmoe::cuda::{CudaBackend, CudaLayer};
use flashdmoe::sim::SimBackend;

use super::estimate::{self, Estimate};
use super::phases::Phases;
use super::{BackendArg, CliError, RunArgs, config, run_summary};

/// Rows per rank checked when a layer is too large to check whole ([`Sample::sized_for`]).
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
    let mut phases = Phases::start();
    let result = match args.backend {
        BackendArg::Sim => {
            let sim = args.sim.sim_options(
                &[
                    ("--ranks-per-gpu", args.ranks_per_gpu.is_some()),
                    ("--remote-copiers", args.remote_copiers.is_some()),
                    ("--tile", args.tile.is_some()),
                    ("--combine", args.combine.is_some()),
                ],
                args.pairs,
            )?;
            println!(
                "backend: sim ({} processor and {} subscriber threads per rank{}{})",
                sim.processors_per_rank,
                sim.subscribers_per_rank,
                super::SimThreads::pairs_note(&sim),
                super::SimThreads::waves_note(&sim, config.world)
            );
            if super::process::is_process_rank() {
                println!(
                    "note: RANK is set, but the simulator runs the whole world in this process \
                     (--backend cuda runs one process per GPU)"
                );
            }
            if args.back_to_back.is_some() {
                return Err(CliError::Usage(
                    "--back-to-back applies to --backend cuda only".into(),
                ));
            }
            let backend = SimBackend::new(sim);
            check_estimate(&config, &backend, args)?;
            run_on(&backend, &config, &options, args, &mut phases, &|_, _, _| Ok(()))
        }
        BackendArg::Cuda => {
            args.sim.reject_for_cuda()?;
            if args.max_sim_seconds.is_some() || args.allow_slow {
                return Err(CliError::Usage(
                    "--max-sim-seconds and --allow-slow apply to --backend sim only".into(),
                ));
            }
            // Before generating anything: a layer the kernel does not compute yet, or no GPU,
            // leaves nothing to run, and the host must hold what is generated and checked there.
            flashdmoe::cuda::spec::check_computed(&config).map_err(CliError::kernel_refusal)?;
            flashdmoe::cuda::cuda_available()
                .map_err(|e| CliError::Backend(BackendError::Unavailable(e.to_string())))?;
            estimate::check_gpu_host(&config, estimate::available_memory())?;
            if super::process::is_process_rank() {
                // One rank of a world of processes (`flashdmoe launch`, torchrun).
                let result = super::process::run(&config, &options, args, &mut phases);
                println!("{}", phases.line());
                return result;
            }
            let cuda = args.cuda_options();
            match cuda.ranks_per_gpu {
                Some(r) => println!("backend: cuda ({r} ranks per GPU)"),
                None => println!("backend: cuda (ranks spread over the GPUs)"),
            }
            let back_to_back =
                |layer: &CudaLayer, inputs: &[Vec<f32>], host: &[RankOutput]| match args
                    .back_to_back
                {
                    Some(k) => super::back_to_back::single(
                        layer,
                        &config,
                        inputs,
                        host,
                        k,
                        options.timeout,
                    ),
                    None => Ok(()),
                };
            run_on(&CudaBackend::new(cuda), &config, &options, args, &mut phases, &back_to_back)
        }
    };
    println!("{}", phases.line());
    result
}

/// Generates the weights and inputs, builds the layer on `backend`, runs `args.iterations`
/// forwards (and a traced one with `--trace`), prints the report of the last one and verifies
/// every one, each step a phase of `phases`.
/// What runs after a verified run: the layer, every rank's inputs and the verified outputs
/// (`--back-to-back`).
type After<'a, L> = dyn Fn(&L, &[Vec<f32>], &[RankOutput]) -> Result<(), CliError> + 'a;

fn run_on<B: Backend>(
    backend: &B,
    config: &MoeConfig,
    options: &ForwardOptions,
    args: &RunArgs,
    phases: &mut Phases,
    after: &After<'_, B::Layer>,
) -> Result<(), CliError> {
    let iterations = args.iterations;
    let weights = phases.run(c"weights", |_| LayerWeights::generate(config, args.seed))?;
    let inputs = phases.run(c"inputs", |_| {
        (0..config.world)
            .map(|rank| generate_input(config, rank, args.seed))
            .collect::<Result<Vec<_>, _>>()
    })?;
    let layer = phases.run(c"build", |_| backend.build(config, &weights))?;
    if let Some(line) = layer.describe() {
        println!("{line}");
    }
    let forward = |options: &ForwardOptions| {
        layer.forward(&inputs, options).map_err(|e| timeout_named(e, backend.name(), args.timeout))
    };
    let (mut rank_times, mut calls) = (Vec::new(), Vec::new());
    let mut first: Option<ForwardOutput> = None;
    let mut last = None;
    for i in 0..iterations {
        let out = phases.run(c"forwards", |bar| {
            if iterations > 1 {
                bar.set_message(format!("forward {}/{iterations}", i + 1));
            }
            forward(options)
        })?;
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
        let traced = phases.run(c"traced forward", |_| {
            forward(&ForwardOptions { trace: true, ..options.clone() })
        })?;
        check_identical(first, &traced, iterations)?;
        println!("{}", write_trace(config, &layer, &traced, path)?);
    }
    println!("{}", run_summary::routing_histogram(config, &out.ranks));
    println!("{}", run_summary::tasks(&out.ranks));
    println!("{}", run_summary::traffic(&out.ranks));
    println!("{}", run_summary::time(&rank_times, &calls));

    let verdict = phases.run(c"verify", |_| {
        let sample = sample(config);
        oracle::verify(
            config,
            &weights,
            &inputs,
            &out.ranks,
            &VerifyOptions { sample, tolerance: None },
        )
    })?;
    println!("verify: {verdict}");
    if verdict.passed() {
        // Only verified work is timed back to back (its last output is compared with these).
        after(&layer, &inputs, &out.ranks)
    } else {
        Err(CliError::Mismatch(format!("{} failures against the oracle", verdict.failure_count)))
    }
}

/// Prints the simulator's estimate for this run and refuses it above `--max-sim-seconds` or
/// the host memory available, unless `--allow-slow`.
fn check_estimate(
    config: &MoeConfig,
    backend: &SimBackend,
    args: &RunArgs,
) -> Result<(), CliError> {
    let max_seconds = args.max_sim_seconds.unwrap_or(estimate::DEFAULT_MAX_SECONDS);
    if max_seconds.is_nan() || max_seconds <= 0.0 {
        return Err(CliError::Usage(format!("--max-sim-seconds {max_seconds} must be > 0")));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let forwards = args.iterations.saturating_add(u32::from(args.trace.is_some()));
    let estimate = Estimate::new(config, backend, forwards, &sample(config), cores)?;
    println!("{estimate}");
    if !args.allow_slow {
        estimate.check(max_seconds, estimate::available_memory())?;
    }
    Ok(())
}

/// The rows `run` checks against the oracle: all of a small layer's, else a fresh sample of
/// [`SAMPLED_ROWS_PER_RANK`] per rank ([`Sample::sized_for`]).
pub(super) fn sample(config: &MoeConfig) -> Sample {
    Sample::sized_for(config, SAMPLED_ROWS_PER_RANK)
}

/// A backend timeout as the CLI reports it: whose deadline it was and the flag that sets it.
pub(super) fn timeout_named(e: BackendError, backend: &str, timeout: f64) -> CliError {
    match e {
        BackendError::Timeout(report) => {
            CliError::Timeout { backend: backend.to_string(), timeout, report }
        }
        e => CliError::Backend(e),
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
        "trace: {} task events written to {} (conforms to the task graph); {} processors busy {:.1}% of the {:.3} ms task phase\n{}",
        events.len(),
        path.display(),
        u.processors.len(),
        u.overall * 100.0,
        u.wall_ns as f64 / 1e6,
        task_times_line(&events)
    ))
}

/// One line of how long each kind of task took and when it ran (from the task phase's start),
/// and the median idle time between a processor's tasks: where a forward's time goes.
fn task_times_line(events: &[trace::TraceEvent]) -> String {
    let origin = events.iter().map(|e| e.start_ns).min().unwrap_or(0);
    let ms = |ns: u64| ns.saturating_sub(origin) as f64 / 1e6;
    let kinds: Vec<String> = trace::kind_times(events)
        .iter()
        .map(|k| {
            format!(
                "{} {} x median {:.1} us (p90 {:.1}) from {:.3} to {:.3} ms",
                k.kind.name(),
                k.tasks,
                k.median_ns as f64 / 1e3,
                k.p90_ns as f64 / 1e3,
                ms(k.span_ns.0),
                ms(k.span_ns.1)
            )
        })
        .collect();
    let gap = trace::median_gap_ns(events).map_or_else(
        || "no processor ran two tasks".into(),
        |g| format!("{:.2} us", g as f64 / 1e3),
    );
    // The gaps by the kind of task after them, over the processors that ran a task.
    let processors = events
        .iter()
        .map(|e| (e.rank, e.processor))
        .collect::<std::collections::HashSet<_>>()
        .len() as u32;
    let by_kind: Vec<String> =
        trace::gap_times(events).iter().map(|g| g.describe(processors)).collect();
    let by_kind = if by_kind.is_empty() {
        String::new()
    } else {
        format!(" (before {})", by_kind.join(", "))
    };
    format!(
        "task times: {}; median gap between a processor's tasks: {gap}{by_kind}",
        kinds.join("; ")
    )
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
