//! The `flashdmoe` command line: argument definitions, dispatch, errors and exit codes.
//!
//! * `run`: build a layer config (defaults, a preset or a file, then flag overrides), run one or
//!   more forwards on a backend and verify the output against the CPU oracle ([`run`]).
//! * `info`: presets and their weight memory, backends, CUDA/NVRTC availability, and the memory
//!   of a layer given by the `run` config flags ([`info`]).
//! * `bench` and `report`: the benchmark harness and its plots ([`bench`](mod@bench)).
//!
//! Exit codes are part of the interface (see [`ExitStatus`]). Every error is a [`CliError`]
//! printed as one `error: ...` line; nothing here panics on bad input.

mod back_to_back;
mod bench;
mod config;
mod estimate;
mod info;
mod launch;
mod phases;
mod process;
mod run;
mod run_summary;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use flashdmoe::core::oracle::OracleError;
use flashdmoe::core::{BackendError, ConfigError, TimeoutReport};
use flashdmoe::cuda::{CombineForm, CudaOptions, PairChoice, TileChoice};
use flashdmoe::sim::SimOptions;

/// Distributed Mixture-of-Experts forward as one persistent kernel per GPU, with a CPU
/// simulator of the same protocol.
#[derive(Debug, Parser)]
#[command(name = "flashdmoe", version, propagate_version = true)]
#[command(after_help = "Exit codes: 0 success (and verified), 1 the forward failed, \
    2 bad command line or configuration (including a model feature not implemented yet, or not \
    in the chosen backend, and a layer too large for this machine's memory, refused before \
    anything runs), 3 the output \
    does not match the oracle, 4 the backend is unavailable here (no GPU, driver or NVRTC; too \
    few GPUs).")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run forwards of one MoE layer on a backend and verify them against the CPU oracle.
    ///
    /// The layer config starts from the built-in default (2 ranks x 64 tokens, H 256, I 512,
    /// 8 experts, top-2, ReLU, bf16), a --preset or a --config file, and any shape or policy
    /// flag then overrides it. Weights and inputs are generated from --seed (the same
    /// generator the PyTorch baselines use).
    Run(Box<RunArgs>),
    /// Show presets (with their weight memory per rank and of the whole layer), backends, and
    /// whether CUDA and NVRTC are usable on this machine.
    ///
    /// Experts are sharded: each rank (GPU) holds the router and the shared experts whole and
    /// its own experts only. Given a layer (--preset, --config and the shape flags of `run`),
    /// also shows that layer's weight memory per rank and of the whole layer, and its host
    /// memory.
    Info(InfoArgs),
    /// Benchmark a grid of layers on a backend, verified in the same run, optionally with the
    /// PyTorch baselines; writes results.jsonl and results.csv and prints the comparison.
    ///
    /// Each case: one forward checked against the CPU oracle (sampled rows for large outputs),
    /// warm-up forwards, timed forwards (median, p10, p90; device-event time on GPUs), the last
    /// output checked again, one traced forward for tasks, bytes and utilisation. Simulator
    /// times are labelled simulation and never compared with GPU times.
    Bench(Box<bench::BenchArgs>),
    /// Draw SVG figures and a markdown page from recorded results (JSONL).
    ///
    /// GPU measurements: latency vs tokens per GPU and vs experts (the paper layer on one GPU,
    /// with its floor), speedup over each baseline on the same layer, percent of the floor, and
    /// weak scaling over GPUs; each is drawn when the results have the data for a line or a
    /// bar, and otherwise named with the reason. Simulator measurements: its protocol figures
    /// (tile tasks per kind, bytes sent vs a capacity-padded exchange, processor utilisation),
    /// never its times. The GPU check's untimed checks and CPU baselines are tabled, not
    /// plotted. Prints each figure written or why it was not drawn.
    Report(bench::ReportArgs),
    /// Run `run ...` or `bench ...` as one process per GPU on this machine.
    ///
    /// Starts N processes of this program with the variables torchrun sets (RANK, WORLD_SIZE,
    /// LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT; NCCL_NVLS_ENABLE=0); each owns
    /// GPU LOCAL_RANK and builds its part of the layer's symmetric heap over NCCL (NCCL 2.28+
    /// on LD_LIBRARY_PATH: `eval "$(scripts/install-nccl.sh)"`). Output lines carry their rank.
    /// If one process fails the others get --grace seconds, then are killed; the exit status
    /// is the failing rank's. Under torchrun, run `flashdmoe run ...` directly (RANK set).
    Launch(launch::LaunchArgs),
}

/// Arguments of `flashdmoe info`.
#[derive(Debug, Args)]
struct InfoArgs {
    #[command(flatten)]
    config: ConfigArgs,
}

/// Where the layer config comes from, and what to override.
#[derive(Debug, Args)]
struct ConfigArgs {
    /// Start from a named preset (see `flashdmoe info`).
    #[arg(long, value_name = "NAME", conflicts_with = "config")]
    preset: Option<String>,
    /// Start from a config file: TOML or JSON in flashdmoe's schema, or a Hugging Face
    /// `config.json` (detected by its field names).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Number of ranks P.
    #[arg(long, value_name = "P")]
    world: Option<u32>,
    /// Tokens per rank T.
    #[arg(long, value_name = "T")]
    tokens: Option<u32>,
    /// Hidden size H (a multiple of 64).
    #[arg(long, value_name = "H")]
    hidden: Option<u32>,
    /// Expert intermediate size I (a multiple of 64).
    #[arg(long, value_name = "I")]
    inter: Option<u32>,
    /// Number of experts E.
    #[arg(long, value_name = "E")]
    experts: Option<u32>,
    /// Experts per token k.
    #[arg(long, value_name = "K")]
    top_k: Option<u32>,
    /// Expert activation.
    #[arg(long, value_enum)]
    activation: Option<ActivationArg>,
    /// Give the expert projections biases.
    #[arg(long, overrides_with = "no_bias")]
    bias: bool,
    /// No biases.
    #[arg(long)]
    no_bias: bool,
    /// Element type of weights and activations.
    #[arg(long, value_enum)]
    dtype: Option<DTypeArg>,
    /// Capacity factor f: each (rank, expert) packet holds ceil(f * T * k / E) rows, later
    /// tokens are dropped (lowest token index kept).
    #[arg(long, value_name = "F", conflicts_with = "dropless")]
    capacity_factor: Option<f64>,
    /// Never drop a token (capacity = T).
    #[arg(long)]
    dropless: bool,
    /// Use the raw router probabilities as combine weights instead of renormalising them over
    /// the chosen k.
    #[arg(long)]
    no_renormalize: bool,
    /// Expert placement: `contiguous`, or a comma-separated table giving each expert's rank
    /// (e.g. `0,1,0,1`).
    #[arg(long, value_name = "contiguous|R,R,...")]
    placement: Option<String>,
}

/// Which backend runs the forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    /// The CPU simulator (runs everywhere).
    Sim,
    /// The GPU backend (NVIDIA GPUs of compute capability 8.0 or newer, driver for CUDA 13).
    Cuda,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ActivationArg {
    Relu,
    Gelu,
    /// SwiGLU (silu-gated; two up projections).
    #[value(alias = "silu-gated")]
    Swiglu,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DTypeArg {
    Bf16,
    F16,
    /// f32 storage (TF32 tensor cores on GPU).
    F32,
    /// f32 without tensor cores.
    F32Exact,
}

/// Arguments of `flashdmoe run`.
#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Backend.
    #[arg(long, value_enum, default_value = "sim")]
    backend: BackendArg,
    /// Seed of the generated weights and inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Forwards to run; every one is verified, and all outputs must be bitwise identical.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    iterations: u32,
    /// Run one more forward with a per-task trace: write it to PATH as Chrome/Perfetto JSON
    /// (open it in ui.perfetto.dev or chrome://tracing), print the processors' utilisation,
    /// each task kind's count, median and p90 duration and span, the median gap between a
    /// processor's tasks and the gaps by the kind of task after them, and check the trace
    /// against the task graph (every task exactly once,
    /// after its prerequisites).
    #[arg(long, value_name = "PATH")]
    trace: Option<std::path::PathBuf>,
    /// Seconds a forward may go without progress (no task finished and no signal arrived on
    /// any rank; on GPUs: any wait inside the kernel) before it fails with a timeout report
    /// naming who waited for what, instead of hanging.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    timeout: f64,
    #[command(flatten)]
    sim: SimThreads,
    /// Simulator: refuse a layer whose estimated run time (printed before anything runs; it
    /// errs on the slow side) exceeds this many seconds [default: 300].
    #[arg(long, value_name = "SECONDS")]
    max_sim_seconds: Option<f64>,
    /// Simulator: run even when the estimate exceeds --max-sim-seconds or the host memory
    /// available.
    #[arg(long)]
    allow_slow: bool,
    /// CUDA: ranks per GPU (several are "virtual ranks" sharing one GPU); by default the
    /// world is spread over as many GPUs as divide it evenly.
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(u32).range(1..))]
    ranks_per_gpu: Option<u32>,
    /// CUDA, a layer over several GPUs: processor blocks per rank that copy only the rows
    /// bound for other GPUs before computing (1 up to the rank's processors; default a
    /// quarter). A tuning knob for NVLink egress.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    remote_copiers: Option<u32>,
    /// CUDA: run this tile (`BMxBN`: rows 64, 128 or 256 by columns 64, 128 or 256 a weight
    /// operand; `BMxBNsS` also sets the pipeline depth, 2-8 stages) on the Hopper engine
    /// instead of the one the backend chooses, e.g. to measure a layer in several tiles; a
    /// tile the engine cannot run for the layer is an error naming why. The 256-row tiles run
    /// slower than the chosen ones (DeepSeek-V3 1.47x in session 26: the producer's row copies
    /// of a 256-row stage; docs/dev/perf-notes.md v40 (a)).
    #[arg(long, value_name = "BMxBN[sS]", value_parser = str::parse::<TileChoice>)]
    tile: Option<TileChoice>,
    /// CUDA: how combine tasks read the returned rows: `stream` (the default) copies them
    /// through the Hopper engine's pipeline stages with bulk copies where that applies (4+
    /// slots a token, bf16 or f16; the kernel label ends in `-cs`), `registers` loads them into
    /// the threads' registers. The same output bits either way; `stream` measured 1.3-1.8% faster
    /// on Qwen3 and OLMoE (docs/dev/perf-notes.md v36).
    #[arg(long, value_name = "FORM", value_parser = parse_combine)]
    combine: Option<CombineForm>,
    /// Paired GEMM0 tasks: two processors of a 2-CTA cluster compute an expert's row tiles 2p
    /// and 2p + 1 of one column tile together and read its weights once (CUDA: the kernel
    /// label ends in `-pairs`, a layer that cannot pair is an error naming `pairs`; the
    /// simulator runs the same schedule on its threads, with bitwise the same outputs;
    /// docs/dev/paired-tasks.md). CUDA's default pairs the layers whose GEMM0 weights go in
    /// column groups (they do not fit in L2: Mixtral, DeepSeek-V3, Kimi-K2, gpt-oss); the
    /// simulator's is off.
    #[arg(long, conflicts_with = "no_pairs")]
    pairs: bool,
    /// CUDA: never pair GEMM0 tasks (see `--pairs`).
    #[arg(long)]
    no_pairs: bool,
    /// CUDA: after the verified forwards, time K device-resident forwards queued back to back
    /// on each GPU's stream after a group barrier (what a model sees; the same measurement in
    /// one process and in one process per GPU) and print the slowest GPU's time a forward;
    /// the last output must be bitwise the host path's.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    back_to_back: Option<u32>,
    /// Print the layer config and exit without running.
    #[arg(long)]
    dry_run: bool,
}

/// The simulator's thread counts (`run` and `bench`).
#[derive(Debug, Args)]
struct SimThreads {
    /// Simulator: processor threads per rank.
    #[arg(long, value_name = "N")]
    processors: Option<usize>,
    /// Simulator: subscriber threads per rank.
    #[arg(long, value_name = "N")]
    subscribers: Option<usize>,
    /// Simulator: do not post the waves on a world of one rank. By default the simulator does
    /// what the kernel's OS block does on one GPU: every GEMM0 task queued before the roles
    /// run, and up to three waves of tasks posted into the processors' mailboxes, gated on
    /// their inputs (docs/dev/waves-in-core.md). The outputs are bitwise the same either way.
    #[arg(long)]
    no_waves: bool,
}

/// CUDA's pairing from `--pairs` and `--no-pairs` (clap keeps them apart).
fn pair_choice(pairs: bool, no_pairs: bool) -> PairChoice {
    PairChoice::forced((pairs || no_pairs).then_some(pairs))
}

/// `--combine`'s value.
fn parse_combine(s: &str) -> Result<CombineForm, String> {
    CombineForm::parse(s).ok_or_else(|| format!("{s:?}: expected registers or stream"))
}

impl RunArgs {
    /// The CUDA backend's options these flags ask for.
    fn cuda_options(&self) -> CudaOptions {
        CudaOptions {
            ranks_per_gpu: self.ranks_per_gpu,
            remote_copiers: self.remote_copiers,
            tile: self.tile,
            combine: self.combine.unwrap_or_default(),
            pairs: pair_choice(self.pairs, self.no_pairs),
            ..CudaOptions::default()
        }
    }
}

impl SimThreads {
    /// The simulator's options with these counts and `pairs` (`--pairs`), after checking that
    /// none of the CUDA-only flags (`--ranks-per-gpu`, `--remote-copiers`, `--tile`: name and
    /// whether given) was.
    fn sim_options(&self, cuda_only: &[(&str, bool)], pairs: bool) -> Result<SimOptions, CliError> {
        for &(flag, given) in cuda_only {
            if given {
                return Err(CliError::Usage(format!("{flag} applies to --backend cuda only")));
            }
        }
        let mut sim = SimOptions::default();
        sim.processors_per_rank = self.processors.unwrap_or(sim.processors_per_rank);
        sim.subscribers_per_rank = self.subscribers.unwrap_or(sim.subscribers_per_rank);
        sim.pairs = pairs;
        sim.waves = !self.no_waves;
        Ok(sim)
    }

    /// What the waves mean on the simulator for a world of `world` ranks, for the backend
    /// line: posted on a world of one rank unless `--no-waves`; nothing on a larger world.
    fn waves_note(sim: &SimOptions, world: u32) -> &'static str {
        match (world, sim.waves) {
            (1, true) => "; the kernel's waves posted (one rank; --no-waves to leave them out)",
            (1, false) => "; no waves (--no-waves)",
            _ => "",
        }
    }

    /// What `--pairs` means on the simulator with `sim`'s processors, for the backend line:
    /// nothing without it; the clusters with it, or why there are none (fewer than three
    /// processor threads: processor 0 never pairs).
    fn pairs_note(sim: &SimOptions) -> String {
        if !sim.pairs {
            return String::new();
        }
        match flashdmoe::core::runtime::pair_clusters(sim.processors_per_rank as u32) {
            0 => format!(
                "; --pairs: no cluster with {} processor threads (processors 2k+1 and 2k+2 pair; \
                 --processors 3 or more), so every pair runs as two solo tasks",
                sim.processors_per_rank
            ),
            n => format!("; paired GEMM0 tasks on {n} clusters of 2 processors"),
        }
    }

    /// A usage error when any count was given for the CUDA backend.
    fn reject_for_cuda(&self) -> Result<(), CliError> {
        if self.processors.is_some() || self.subscribers.is_some() || self.no_waves {
            return Err(CliError::Usage(
                "--processors, --subscribers and --no-waves apply to --backend sim only".into(),
            ));
        }
        Ok(())
    }
}

/// Process exit status of the CLI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// Everything ran, and every output matched the oracle.
    Success = 0,
    /// The forward failed (backend error, timeout).
    Failed = 1,
    /// Bad command line or configuration (clap uses 2 for usage errors too).
    Usage = 2,
    /// The forward ran, but its output does not match the oracle.
    Mismatch = 3,
    /// The backend cannot run here: no GPU, driver or NVRTC, or fewer GPUs than the layer
    /// needs. Nothing ran; another machine (or `--backend sim`) may run the same command.
    Unavailable = 4,
}

/// Everything the CLI can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A flag, preset or config file is wrong.
    #[error("{0}")]
    Usage(String),
    /// The resulting config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The backend failed, or cannot run here.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The simulator's estimate for the layer is over a limit.
    #[error(transparent)]
    Refused(#[from] estimate::Refusal),
    /// A forward made no progress for `--timeout` seconds.
    #[error(
        "timeout: the {}'s deadline expired (--timeout {timeout} s without progress): {report}; \
         raise --timeout if the layer is merely slow on this machine",
        deadline_owner(backend)
    )]
    Timeout {
        /// The backend's name (`sim`, `cuda`).
        backend: String,
        /// The `--timeout` in seconds.
        timeout: f64,
        /// Who waited for what.
        report: TimeoutReport,
    },
    /// The oracle could not check the output (malformed shapes: a bug, not a mismatch).
    #[error("cannot verify: {0}")]
    Oracle(#[from] OracleError),
    /// The output does not match the oracle, or differs between iterations.
    #[error("verification failed: {0}")]
    Mismatch(String),
    /// Something other than a backend failed (a baseline, writing results).
    #[error("{0}")]
    Failed(String),
    /// A process of `flashdmoe launch` failed; the others were stopped.
    #[error("rank {rank} failed ({how}); the other ranks were let finish or stopped")]
    RankFailed {
        /// The first process rank that failed.
        rank: u32,
        /// How it ended.
        how: String,
        /// Its exit code (the CLI's statuses), if it exited.
        code: Option<u8>,
    },
}

impl CliError {
    /// The CUDA kernel's refusal of a layer before anything runs
    /// (`flashdmoe::cuda::spec::check_computed`): exit status 2, like a bad config, whether it
    /// lacks a feature (`NotSupported`) or cannot run the layer's shared experts (a field).
    pub fn kernel_refusal(e: BackendError) -> CliError {
        match e {
            e @ BackendError::NotSupported { .. } => CliError::Backend(e),
            other => CliError::Usage(format!("cuda: {other}")),
        }
    }

    /// The exit status this error maps to.
    pub fn status(&self) -> ExitStatus {
        match self {
            CliError::Usage(_)
            | CliError::Config(_)
            | CliError::Refused(_)
            | CliError::Backend(BackendError::NotSupported { .. }) => ExitStatus::Usage,
            CliError::Backend(
                BackendError::Unavailable(_) | BackendError::TooFewDevices { .. },
            ) => ExitStatus::Unavailable,
            CliError::Backend(_)
            | CliError::Timeout { .. }
            | CliError::Oracle(_)
            | CliError::Failed(_) => ExitStatus::Failed,
            CliError::Mismatch(_) => ExitStatus::Mismatch,
            CliError::RankFailed { code, .. } => match code {
                Some(2) => ExitStatus::Usage,
                Some(3) => ExitStatus::Mismatch,
                Some(4) => ExitStatus::Unavailable,
                _ => ExitStatus::Failed,
            },
        }
    }
}

/// Whose deadline a backend's timeout is, in words.
fn deadline_owner(backend: &str) -> &str {
    match backend {
        "sim" => "simulator",
        "cuda" => "GPU kernel",
        other => other,
    }
}

/// Parses the command line, runs the command, prints any error, and returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(&args),
        Command::Info(args) => info::info(&args.config),
        Command::Bench(args) => bench::bench(&args),
        Command::Report(args) => bench::report(&args),
        Command::Launch(args) => launch::launch(&args),
    };
    match result {
        Ok(()) => ExitCode::from(ExitStatus::Success as u8),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.status() as u8)
        }
    }
}
