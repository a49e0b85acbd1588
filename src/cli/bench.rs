//! `flashdmoe bench`: sweep a grid on a backend (and optionally the PyTorch baselines), write
//! `results.jsonl` and `results.csv`, print the comparison table. `flashdmoe report`: plots
//! and a markdown page from recorded results. The logic lives in [`flashdmoe::bench`]; this
//! module parses, drives the progress bar, and writes files.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use flashdmoe::bench::baseline::{Baseline, BaselineOptions};
use flashdmoe::bench::grid::{self, Case};
use flashdmoe::bench::record::{Record, to_jsonl};
use flashdmoe::bench::report;
use flashdmoe::bench::results::Results;
use flashdmoe::bench::runner::{self, BenchBackend, Progress, RunOptions};
use flashdmoe::bench::{BenchError, csv, table};
use flashdmoe::core::{BackendError, MoeConfig};
use flashdmoe::cuda::{CombineForm, CudaBackend, CudaOptions, TileChoice};
use flashdmoe::sim::SimBackend;
use indicatif::{ProgressBar, ProgressStyle};

use super::{BackendArg, CliError, SimThreads, estimate};

mod process;

/// Arguments of `flashdmoe bench`.
#[derive(Debug, Args)]
pub(super) struct BenchArgs {
    /// A built-in grid: `paper` (docs/performance.md's 40 configs: T x E x {cf1, dropless}; the default
    /// with --backend cuda) or `small` (layers the simulator runs in milliseconds; the default
    /// with --backend sim).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["preset", "config"])]
    grid: Option<String>,
    /// Presets to run instead (see `flashdmoe info`); a name may end in `-dropless` or
    /// `-cf<F>` to set the capacity, e.g. `paper-t16384-e8-dropless`.
    #[arg(long, value_name = "NAME", num_args = 1.., conflicts_with = "config")]
    preset: Vec<String>,
    /// A grid file instead: TOML or JSON, `[[case]]` tables in the config file schema plus an
    /// optional `[sweep]` table of lists.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Backend. Simulator results are labelled simulation and never compared with GPU times.
    #[arg(long, value_enum, default_value = "sim")]
    backend: BackendArg,
    /// Timed forwards per case.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    iters: u32,
    /// Untimed forwards before them.
    #[arg(long, default_value_t = 10)]
    warmup: u32,
    /// Seed of the generated weights and inputs (the baselines get the same).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Rows per rank checked against the oracle when an output has more than 8192 rows.
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..))]
    verify_rows: u32,
    /// Seconds any wait inside a forward may take before the case fails with a timeout.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    timeout: f64,
    /// PyTorch baselines to run on the same cases, comma-separated: torch-single, torch-ep.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    baselines: Vec<String>,
    /// Python interpreter of the baselines (needs PyTorch).
    #[arg(long, value_name = "PATH", default_value = "python3")]
    python: PathBuf,
    /// Directory of the baseline scripts.
    #[arg(long, value_name = "DIR", default_value = "bench/baselines")]
    baseline_dir: PathBuf,
    /// Device the baselines run on (default: cuda with --backend cuda, cpu with sim; CPU
    /// times are functional checks, never compared).
    #[arg(long, value_enum)]
    baseline_device: Option<DeviceArg>,
    /// Directory for results.jsonl and results.csv (created if needed).
    #[arg(long, value_name = "DIR", default_value = "bench-out")]
    out: PathBuf,
    #[command(flatten)]
    sim: SimThreads,
    /// CUDA: ranks per GPU (default 1: a case of more ranks than GPUs is skipped with a
    /// line). Above 1 the ranks are virtual, sharing a GPU, and are recorded as
    /// `flashdmoe-cuda-virtual`, never compared with a baseline.
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(u32).range(1..))]
    ranks_per_gpu: Option<u32>,
    /// CUDA, a layer over several GPUs: processor blocks per rank that copy only the rows
    /// bound for other GPUs before computing (1 up to the rank's processors; default a
    /// quarter). A tuning knob for NVLink egress.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    remote_copiers: Option<u32>,
    /// CUDA: run every case in this tile (`BMxBN`, or `BMxBNsS` with S pipeline stages) on the Hopper engine instead of the one the
    /// backend chooses (the record's `kernel` names it); a case the engine cannot run in it
    /// fails naming why.
    #[arg(long, value_name = "BMxBN[sS]", value_parser = str::parse::<TileChoice>)]
    tile: Option<TileChoice>,
    /// CUDA: how combine tasks read the returned rows, `stream` (the default, where it applies)
    /// or `registers` (as `flashdmoe run --combine`).
    #[arg(long, value_name = "FORM", value_parser = super::parse_combine)]
    combine: Option<CombineForm>,
    /// Paired GEMM0 tasks in 2-CTA clusters, on the simulator or CUDA (as `flashdmoe run
    /// --pairs`; CUDA's default pairs where the GEMM0 weights go in column groups).
    #[arg(long, conflicts_with = "no_pairs")]
    pairs: bool,
    /// CUDA: never pair GEMM0 tasks.
    #[arg(long)]
    no_pairs: bool,
}

/// Where the baselines run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DeviceArg {
    Cuda,
    Cpu,
}

/// Arguments of `flashdmoe report`.
#[derive(Debug, Args)]
pub(super) struct ReportArgs {
    /// Results files (JSONL: `flashdmoe bench`'s results.jsonl, the PyTorch baselines'
    /// records, `gpu-check --json` output) or directories (their `*.jsonl` files, by name).
    /// When a result appears twice the later one counts.
    #[arg(required = true, value_name = "FILE_OR_DIR")]
    inputs: Vec<PathBuf>,
    /// Directory for the SVG figures and report.md (created if needed).
    #[arg(long, value_name = "DIR", default_value = "bench-report")]
    out: PathBuf,
}

impl From<BenchError> for CliError {
    fn from(e: BenchError) -> CliError {
        match e {
            BenchError::Config(e) => CliError::Config(e),
            BenchError::Backend(e) => CliError::Backend(e),
            BenchError::Oracle(e) => CliError::Oracle(e),
            e @ (BenchError::Grid(_) | BenchError::Options(_) | BenchError::Record { .. }) => {
                CliError::Usage(e.to_string())
            }
            e => CliError::Failed(e.to_string()),
        }
    }
}

/// Runs `flashdmoe bench`.
pub(super) fn bench(args: &BenchArgs) -> Result<(), CliError> {
    if super::process::is_process_rank() {
        // One process per GPU (`flashdmoe launch --nproc N bench ...`): one case (process.rs).
        return process::bench(args);
    }
    let cases = cases(args)?;
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return Err(CliError::Usage(format!("--timeout {} must be > 0 seconds", args.timeout)));
    }
    let baselines =
        args.baselines.iter().map(|b| Baseline::parse(b)).collect::<Result<Vec<_>, _>>()?;
    let options = RunOptions {
        iterations: args.iters,
        warmup: args.warmup,
        seed: args.seed,
        timeout: Duration::try_from_secs_f64(args.timeout)
            .map_err(|e| CliError::Usage(format!("--timeout {}: {e}", args.timeout)))?,
        verify_rows: args.verify_rows,
    };
    let device = match (args.baseline_device, args.backend) {
        (Some(DeviceArg::Cuda), _) | (None, BackendArg::Cuda) => "cuda",
        (Some(DeviceArg::Cpu), _) | (None, BackendArg::Sim) => "cpu",
    };
    let baseline_options = BaselineOptions {
        python: args.python.clone(),
        dir: args.baseline_dir.clone(),
        device: device.into(),
        iterations: args.iters,
        warmup: args.warmup,
        seed: args.seed,
        verify_rows: args.verify_rows,
    };
    std::fs::create_dir_all(&args.out).map_err(|e| BenchError::io(&args.out, e))?;
    let sweep = Sweep { cases: &cases, options: &options, baselines: &baselines, baseline_options };
    let summary = match args.backend {
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
                "backend: sim (SIMULATION: the CPU simulator, {} processor and {} subscriber \
                 threads per rank{}; times are CPU times, never GPU times)",
                sim.processors_per_rank,
                sim.subscribers_per_rank,
                super::SimThreads::pairs_note(&sim)
            );
            let sim = SimBackend::new(sim);
            let forwards = args.warmup.saturating_add(args.iters);
            sweep.run(&sim, &args.out, &|c| estimate::bench_case_fits(c, Some((&sim, forwards))))?
        }
        BackendArg::Cuda => {
            args.sim.reject_for_cuda()?;
            // Fail before generating any weights when there is no GPU to run on.
            flashdmoe::cuda::cuda_available()
                .map_err(|e| CliError::Backend(BackendError::Unavailable(e.to_string())))?;
            // One rank per GPU unless asked otherwise: a layer of more ranks than GPUs is
            // skipped rather than silently run as virtual ranks.
            let ranks_per_gpu = Some(args.ranks_per_gpu.unwrap_or(1));
            let cuda = CudaBackend::new(CudaOptions {
                ranks_per_gpu,
                remote_copiers: args.remote_copiers,
                tile: args.tile,
                combine: args.combine.unwrap_or_default(),
                pairs: super::pair_choice(args.pairs, args.no_pairs),
                ..CudaOptions::default()
            });
            println!("backend: cuda on {} (device-event times)", cuda.device());
            sweep.run(&cuda, &args.out, &|c| estimate::bench_case_fits(c, None))?
        }
    };
    summary.status()
}

/// The cases the flags ask for (an unreadable grid file is a usage error, like a bad one).
fn cases(args: &BenchArgs) -> Result<Vec<Case>, CliError> {
    let cases = if let Some(path) = &args.config {
        grid::from_file(path)
    } else if !args.preset.is_empty() {
        grid::presets(&args.preset)
    } else {
        let default = match args.backend {
            BackendArg::Cuda => "paper",
            BackendArg::Sim => "small",
        };
        grid::builtin(args.grid.as_deref().unwrap_or(default))
    };
    cases.map_err(|e| match e {
        BenchError::Io { path, message } => CliError::Usage(format!("{path}: {message}")),
        e => e.into(),
    })
}

/// One sweep's inputs.
struct Sweep<'a> {
    cases: &'a [Case],
    options: &'a RunOptions,
    baselines: &'a [Baseline],
    baseline_options: BaselineOptions,
}

/// How a sweep went.
#[derive(Debug, Default)]
struct Summary {
    /// Results recorded (ours and baselines).
    ran: usize,
    /// Cases or baseline runs that produced no result.
    failed: Vec<String>,
    /// Results that did not verify.
    unverified: Vec<String>,
    /// Cases this machine has too few GPUs or too little host memory for.
    skipped: Vec<String>,
    /// Cases whose layer the backend does not compute (the CUDA kernel and shared experts),
    /// refused before any work; their baselines still ran.
    unsupported: Vec<String>,
}

impl Summary {
    /// Exit status: nothing run because every case was refused by the backend -> 2 (usage),
    /// any failure, or nothing run because every case was skipped -> 1, else any unverified
    /// result -> 3, else success (skipped or refused cases alone do not fail a sweep).
    fn status(self) -> Result<(), CliError> {
        if self.ran == 0 && self.failed.is_empty() && !self.unsupported.is_empty() {
            Err(CliError::Usage(format!(
                "no case could run: this backend does not compute {} (--backend sim does)",
                self.unsupported.join(", ")
            )))
        } else if self.ran == 0 && self.failed.is_empty() && !self.skipped.is_empty() {
            Err(CliError::Failed(format!(
                "no case could run on this machine (too few GPUs or too little host memory): {}",
                self.skipped.join(", ")
            )))
        } else if !self.failed.is_empty() {
            Err(CliError::Failed(format!(
                "{} run(s) failed: {}",
                self.failed.len(),
                self.failed.join("; ")
            )))
        } else if !self.unverified.is_empty() {
            Err(CliError::Mismatch(format!("not verified: {}", self.unverified.join(", "))))
        } else {
            Ok(())
        }
    }
}

impl Sweep<'_> {
    /// Runs every case (ours, then each applicable baseline), writes the results into `out`
    /// and prints the table. A case whose host memory does not fit this machine (`fits`) is
    /// skipped with its baselines, said on its line, before anything is generated; otherwise
    /// the estimate `fits` gives (the simulator's) is printed first.
    fn run<B: BenchBackend>(
        &self,
        backend: &B,
        out: &Path,
        fits: &dyn Fn(&MoeConfig) -> Result<Option<String>, String>,
    ) -> Result<Summary, CliError> {
        let per_case = (self.options.warmup + self.options.iterations) as u64;
        let bar = ProgressBar::new(per_case * self.cases.len() as u64).with_style(
            ProgressStyle::with_template("{spinner} [{bar:32}] {pos}/{len} forwards  {msg}")
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        let mut records: Vec<Record> = Vec::new();
        let mut summary = Summary::default();
        let scratch = out.join(".baseline.jsonl");
        for (i, case) in self.cases.iter().enumerate() {
            let tag = format!("[{}/{}] {}", i + 1, self.cases.len(), case.name);
            match fits(&case.config) {
                Ok(estimate) => {
                    if let Some(line) = estimate {
                        bar.suspend(|| println!("{tag}: {line}"));
                    }
                }
                Err(why) => {
                    bar.suspend(|| println!("{tag}: skipped: {why}"));
                    summary.skipped.push(case.name.clone());
                    continue;
                }
            }
            let started = Instant::now();
            let result = runner::run_case(backend, case, self.options, &mut |p| match p {
                Progress::Forward => bar.inc(1),
                Progress::Build => step(&bar, format!("{tag}: generate weights and inputs")),
                Progress::Layer => {
                    step(&bar, format!("{tag}: build the layer ({:.1}s)", secs(started)))
                }
                Progress::Verify => step(
                    &bar,
                    format!("{tag}: first forward and its check ({:.1}s)", secs(started)),
                ),
                Progress::Finish => {
                    step(&bar, format!("{tag}: check again, trace ({:.1}s)", secs(started)))
                }
            });
            bar.set_position(per_case * (i as u64 + 1));
            match result {
                Ok(r) => {
                    bar.suspend(|| println!("{tag}: {}", one_line(&r)));
                    note(&mut summary, &r);
                    records.push(r);
                }
                Err(BenchError::Backend(e @ BackendError::TooFewDevices { .. })) => {
                    // Not a failure of the case: this machine is too small for it (and for its
                    // baselines, which need as many GPUs).
                    bar.suspend(|| println!("{tag}: skipped: {e}"));
                    summary.skipped.push(case.name.clone());
                    continue;
                }
                Err(BenchError::Backend(e @ BackendError::NotSupported { .. })) => {
                    // Refused before any work: not a failure of the sweep (a grid may hold a
                    // layer for the simulator and the baselines), said on its line and at the
                    // end; the baselines still run it.
                    bar.suspend(|| println!("{tag}: not run on this backend: {e}"));
                    summary.unsupported.push(case.name.clone());
                }
                Err(e) => {
                    bar.suspend(|| println!("{tag}: FAILED: {e}"));
                    summary.failed.push(format!("{}: {e}", case.name));
                }
            }
            for &b in self.baselines {
                if let Err(why) = b.applies_to(&case.config) {
                    bar.suspend(|| println!("{tag}: {} skipped: {why}", b.name()));
                    continue;
                }
                step(&bar, format!("{tag}: {}", b.name()));
                match b.run(&case.config, &self.baseline_options, &scratch) {
                    Ok(rs) => {
                        for r in rs {
                            bar.suspend(|| println!("{tag}: {}", one_line(&r)));
                            note(&mut summary, &r);
                            records.push(r);
                        }
                    }
                    Err(e) => {
                        bar.suspend(|| println!("{tag}: FAILED: {e}"));
                        summary.failed.push(format!("{}: {e}", case.name));
                    }
                }
            }
        }
        bar.finish_and_clear();
        let jsonl = out.join("results.jsonl");
        let csv_path = out.join("results.csv");
        write(&jsonl, &to_jsonl(&records))?;
        write(&csv_path, &csv::to_csv(&records))?;
        println!("\n{}", table::render(&records));
        println!("wrote {} and {}", jsonl.display(), csv_path.display());
        if !summary.skipped.is_empty() {
            println!(
                "skipped (too few GPUs or too little host memory on this machine): {}",
                summary.skipped.join(", ")
            );
        }
        if !summary.unsupported.is_empty() {
            println!(
                "not run (this backend does not compute their layer; --backend sim does): {}",
                summary.unsupported.join(", ")
            );
        }
        summary.ran = records.len();
        Ok(summary)
    }
}

/// Records an unverified result.
fn note(summary: &mut Summary, r: &Record) {
    if !r.verified {
        let name = r.name.clone().unwrap_or_else(|| r.config.label());
        summary.unverified.push(format!("{name} {}", r.implementation));
    }
}

/// `impl: median X ms (p10 .. p90), verified`.
fn one_line(r: &Record) -> String {
    format!(
        "{} median {:.3} ms (p10 {:.3}, p90 {:.3}), {}",
        r.implementation,
        r.median_ms,
        r.p10_ms,
        r.p90_ms,
        if r.verified { "verified".to_owned() } else { format!("NOT VERIFIED: {}", r.notes) }
    )
}

fn write(path: &Path, text: &str) -> Result<(), CliError> {
    std::fs::write(path, text).map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))
}

/// Runs `flashdmoe report`.
pub(super) fn report(args: &ReportArgs) -> Result<(), CliError> {
    let mut files = Vec::new();
    for input in &args.inputs {
        if input.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(input)
                .map_err(|e| BenchError::io(input, e))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
                .collect();
            inside.sort();
            if inside.is_empty() {
                return Err(CliError::Usage(format!("{}: no *.jsonl files", input.display())));
            }
            files.extend(inside);
        } else {
            files.push(input.clone());
        }
    }
    let mut results = Results::default();
    for f in &files {
        results.load(f).map_err(|e| match e {
            BenchError::Io { path, message } => CliError::Usage(format!("{path}: {message}")),
            e => e.into(),
        })?;
    }
    let sources: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let report = report::render(&results, &sources)?;
    std::fs::create_dir_all(&args.out).map_err(|e| BenchError::io(&args.out, e))?;
    for (name, text) in report.files() {
        write(&args.out.join(name), &text)?;
    }
    for f in &report.figures {
        match &f.svg {
            Ok(_) => println!("wrote {}: {}", args.out.join(f.file).display(), f.title),
            Err(why) => println!("not drawn: {}: {why}", f.title),
        }
    }
    if let Some(why) = report.nothing_drawn() {
        println!("no figure drawn: {why}");
    }
    println!("wrote {}", args.out.join("report.md").display());
    let c = report.counts;
    println!(
        "from {} file(s): {} GPU and {} simulator measurement(s), {} CPU baseline result(s), {} \
         untimed check(s); {} repeated result(s) replaced by later ones",
        files.len(),
        c.gpu,
        c.sim,
        c.cpu,
        c.checks,
        c.replaced
    );
    Ok(())
}

/// A step of a case: the bar's message on a terminal, else a line (a log shows where a long
/// case spends its time).
fn step(bar: &ProgressBar, message: String) {
    if bar.is_hidden() {
        println!("{message}");
    } else {
        bar.set_message(message);
    }
}

/// Seconds since `start`.
fn secs(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_cases_alone_do_not_fail_a_sweep_unless_nothing_ran() {
        let skipped = |ran| Summary { ran, skipped: vec!["weak P8".into()], ..Summary::default() };
        assert!(skipped(3).status().is_ok());
        let err = skipped(0).status().unwrap_err();
        assert!(matches!(err, CliError::Failed(ref m) if m.contains("too few GPUs")), "{err:?}");
        let failed = Summary { ran: 3, failed: vec!["x: boom".into()], ..Summary::default() };
        assert!(matches!(failed.status(), Err(CliError::Failed(_))));
    }

    #[test]
    fn cases_the_backend_refuses_fail_a_sweep_only_when_nothing_ran() {
        let refused =
            |ran| Summary { ran, unsupported: vec!["deepseek-v3".into()], ..Summary::default() };
        // The grid's other cases, or the refused case's baselines, ran.
        assert!(refused(7).status().is_ok());
        let err = refused(0).status().unwrap_err();
        assert!(
            matches!(err, CliError::Usage(ref m) if m.contains("deepseek-v3") && m.contains("sim")),
            "{err:?}"
        );
    }
}
