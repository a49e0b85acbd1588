//! The GPU check: correctness of the CUDA backend against the CPU oracle over dtypes,
//! activations, capacity modes, skewed routing, virtual ranks and the model presets, then
//! timings of the paper grid, all in one process (run by `scripts/gpu-check.sh` on the GPU
//! machine). Every timed configuration is verified in the same run.
//!
//! Usage: [`USAGE`] (`gpu-check --help` prints it); the options in more detail below.
//!
//! Prints one line per check and a summary table last; exits non-zero if any check failed.
//! A forward check's line carries its output digest (`output digest 0123...`,
//! [`flashdmoe_bench::gpu_check::output_digest`]): inputs and weights come from fixed seeds, so
//! two builds that print the same digest for a case wrote the same bits.
//! `--combine registers` builds every layer with combine tasks read into registers instead of
//! streamed through the Hopper engine's stages (`CombineForm`, default `stream` where that
//! applies; a streamed image's label ends in `-cs`); the output digests then say whether the two
//! forms wrote the same bits.
//! `--iters N` (20) times N host-path forwards and N device-resident forwards back to back a
//! timed case; `--sustain N` times N of the latter instead (the host path keeps `--iters`):
//! about two seconds of them (N 2000 at T16384) run the GPU into its power cap, where the
//! default 20 run partly unthrottled (perf-notes v40 (d)).
//! `--only` keeps the checks whose names contain one of its comma-separated patterns, or equal
//! one written `=NAME` (e.g. `=preset kimi-k2` without `preset kimi-k2 routed part`).
//! `--list` prints the names of the checks it would run (with `--quick` and `--only`) and
//! exits, without a GPU.
//! `--json PATH` writes one results line per check, as the harness writes them
//! ([`flashdmoe_bench::gpu_check`]): a `flashdmoe-bench/1` measurement record per timed check,
//! a `flashdmoe-check/1` check record per other check; `flashdmoe report` reads the file.

mod args;
mod cases;
mod run;
mod summaries;

use std::io::Write;
use std::process::ExitCode;

use flashdmoe_bench::results::to_jsonl;
use flashdmoe_core::config::presets;
use flashdmoe_core::{Backend, BackendError, LayerWeights, MoeConfig};
use flashdmoe_cuda::{CudaBackend, CudaOptions, cuda_available};

use self::args::{USAGE, only_matches, parse_args};
use self::cases::cases;
use self::run::{
    COMBINE, ENGINE, PAIRS, SUSTAIN, TILE, needs_the_hopper_engine, outcome, resident_case,
    run_case, timeout_case,
};

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gpu-check: {e}");
            return ExitCode::from(2);
        }
    };
    if args.help {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if args.list {
        for case in cases(args.quick) {
            if args.only.as_ref().is_none_or(|s| only_matches(s, &case.name)) {
                println!("{}", case.name);
            }
        }
        return ExitCode::SUCCESS;
    }
    if let Err(e) = cuda_available() {
        println!("skipped: no GPU ({e})");
        return ExitCode::SUCCESS;
    }
    let _ = ENGINE.set(args.engine);
    let _ = COMBINE.set(args.combine);
    let _ = PAIRS.set(args.pairs);
    if let Some(t) = args.tile {
        let _ = TILE.set(t);
    }
    if let Some(n) = args.sustain {
        let _ = SUSTAIN.set(n);
    }
    // A kernel experiment run through FLASHDMOE_EXTRA_DEFINES says so in its log.
    let extra = flashdmoe_cuda::jit::JitConfig::from_env().extra_defines;
    if !extra.is_empty() {
        let list: Vec<String> = extra.items().collect();
        println!("extra kernel defines (FLASHDMOE_EXTRA_DEFINES): {}", list.join(","));
    }
    let (available, device) = match flashdmoe_cuda::gpus() {
        Ok(g) => {
            (g.len() as u32, g.first().map_or_else(|| "unknown GPU".into(), |g| g.name.clone()))
        }
        Err(e) => {
            eprintln!("gpu-check: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut rows = Vec::new();
    for model in presets::MODELS.iter().filter(|m| !flashdmoe_cuda::spec::computes(&m.config())) {
        if args.quick || args.only.as_ref().is_some_and(|s| !only_matches(s, model.name)) {
            continue;
        }
        let build = CudaBackend::new(CudaOptions::default()).build(
            &model.config(),
            &LayerWeights::generate(&MoeConfig::default(), 1).expect("the default layer"),
        );
        match build {
            Err(e @ BackendError::NotSupported { .. }) => {
                println!("[skip] preset {}: refused as it should be: {e}", model.name)
            }
            other => {
                eprintln!(
                    "gpu-check: preset {} has features the kernel lacks and was not refused: {:?}",
                    model.name,
                    other.map(|_| ())
                );
                return ExitCode::FAILURE;
            }
        }
    }
    for case in cases(args.quick) {
        if args.only.as_ref().is_some_and(|s| !only_matches(s, &case.name)) {
            continue;
        }
        let needed = case.config.world / case.ranks_per_gpu.unwrap_or(case.config.world);
        if needed > available {
            println!("[skip] {}: skipped: needs {needed} GPUs, {available} found", case.name);
            continue;
        }
        let engine = ENGINE.get().copied().unwrap_or_default();
        if let Some(why) = needs_the_hopper_engine(&case, engine) {
            println!("[skip] {}: skipped: checks {why}, which --engine mma-sync lacks", case.name);
            continue;
        }
        let t0 = std::time::Instant::now();
        let run = if case.timeout {
            timeout_case
        } else if case.resident {
            resident_case
        } else {
            run_case
        };
        let row = run(&case, args.iters, &device)
            .unwrap_or_else(|e| outcome(&case, &device, 7, false, e));
        println!(
            "[{}] {} ({:.1}s): {}",
            if row.passed { "ok" } else { "FAIL" },
            row.name,
            t0.elapsed().as_secs_f64(),
            row.detail
        );
        let _ = std::io::stdout().flush();
        rows.push(row);
    }
    // Every check as a results line; one the schema cannot hold fails the check.
    let mut lines = Vec::with_capacity(rows.len());
    for r in &mut rows {
        match r.clone().into_line() {
            Ok(line) => lines.push(line),
            Err(e) => {
                eprintln!("gpu-check: cannot record {e}");
                r.passed = false;
            }
        }
    }
    println!(
        "\n{:<40} {:>6} {:>10} {:>10} {:>10} {:>9} {:>7}",
        "check", "result", "median ms", "p10", "p90", "floor ms", "%floor"
    );
    let fmt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
    for r in &rows {
        let t = r.timing.map(|t| t.times);
        let pct = match r.timing {
            Some(t) => format!("{:.0}%", t.floor_ms / t.times.median_ms * 100.0),
            None => "-".into(),
        };
        println!(
            "{:<40} {:>6} {:>10} {:>10} {:>10} {:>9} {:>7}",
            r.name,
            if r.passed { "ok" } else { "FAIL" },
            fmt(t.map(|t| t.median_ms)),
            fmt(t.map(|t| t.p10_ms)),
            fmt(t.map(|t| t.p90_ms)),
            fmt(r.timing.map(|t| t.floor_ms)),
            pct
        );
    }
    if let Some(path) = &args.json
        && let Err(e) = std::fs::write(path, to_jsonl(&lines))
    {
        eprintln!("gpu-check: cannot write {path}: {e}");
    }
    let failed = rows.iter().filter(|r| !r.passed).count();
    println!("{} passed, {} failed", rows.len() - failed, failed);
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
