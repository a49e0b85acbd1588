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

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use flashdmoe_bench::gpu_check::{Outcome, Timing, output_digest};
use flashdmoe_bench::record::{IMPL_CUDA, IMPL_CUDA_VIRTUAL, timestamp};
use flashdmoe_bench::resident::BackToBackOptions;
use flashdmoe_bench::results::to_jsonl;
use flashdmoe_bench::runner::protocol_stats;
use flashdmoe_core::config::{Placement, Routing, presets};
use flashdmoe_core::oracle::{Sample, VerifyOptions, verify};
use flashdmoe_core::perf::{self, TimeSummary};
use flashdmoe_core::weights::generate_input;
use flashdmoe_core::{
    Activation, Backend, BackendError, CapacityPolicy, DType, ForwardOptions, Layer, LayerWeights,
    MoeConfig,
};
use flashdmoe_cuda::{
    CombineForm, CudaBackend, CudaLayer, CudaOptions, EngineChoice, PairChoice, TileChoice,
    cuda_available,
};

/// What `--help` prints (the module's usage line and options, in short).
const USAGE: &str = "\
usage: gpu-check [--quick] [--list] [--json PATH] [--only PATTERN[,PATTERN...]]
                 [--iters N] [--sustain N] [--engine auto|mma-sync|wgmma]
                 [--combine registers|stream] [--pairs | --no-pairs] [--tile BMxBN[sS]]
  --quick        the short list (about 3 minutes on an H200)
  --list         print the checks' names and exit (no GPU needed)
  --json PATH    one results line per check (flashdmoe-bench/1, flashdmoe-check/1)
  --only P,...   checks whose names contain a pattern, or equal one written =NAME
  --iters N      host-path and device-resident forwards a timed case (default 20)
  --sustain N    N device-resident forwards back to back instead (the power cap's rate)
  --engine E     the tile engine: auto (default), mma-sync or wgmma
  --combine F    combine tasks read into registers, or streamed (default where it applies)
  --pairs        paired GEMM0 tasks in 2-CTA clusters (docs/dev/paired-tasks.md): every
                 case's layer with them, or its build fails naming `pairs`
  --no-pairs     no layer paired (default: paired where the GEMM0 weights go in column
                 groups, PairChoice::Auto)
  --tile T       every case's layer in this Hopper tile (e.g. 64x128s5) instead of the one
                 the backend or the case chooses; a case the tile cannot run fails naming it
Exits non-zero if any check failed; GPU checks need a CUDA GPU and NVRTC.";

struct Args {
    help: bool,
    quick: bool,
    list: bool,
    json: Option<String>,
    only: Option<String>,
    iters: usize,
    /// Device-resident forwards timed back to back (`--sustain`; `iters` when not given).
    sustain: Option<usize>,
    engine: EngineChoice,
    combine: CombineForm,
    /// `--pairs` (On), `--no-pairs` (Off), else Auto (`CudaOptions::pairs`).
    pairs: PairChoice,
    /// `--tile`: every case's tile (`CudaOptions::tile`), over the case's own.
    tile: Option<TileChoice>,
}

fn parse_args() -> Result<Args, String> {
    parse_args_from(std::env::args().skip(1))
}

fn parse_args_from(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        help: false,
        quick: false,
        list: false,
        json: None,
        only: None,
        iters: 20,
        sustain: None,
        engine: EngineChoice::Auto,
        combine: CombineForm::default(),
        pairs: PairChoice::Auto,
        tile: None,
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--help" | "-h" => args.help = true,
            "--quick" => args.quick = true,
            "--list" => args.list = true,
            "--json" => args.json = Some(it.next().ok_or("--json needs a path")?),
            "--only" => args.only = Some(it.next().ok_or("--only needs a pattern")?),
            "--iters" => {
                args.iters =
                    it.next().and_then(|v| v.parse().ok()).ok_or("--iters needs a number")?
            }
            "--sustain" => {
                let n = it.next().and_then(|v| v.parse::<usize>().ok()).filter(|&n| n > 0);
                args.sustain = Some(n.ok_or("--sustain needs a positive number of forwards")?);
            }
            "--engine" => {
                let v = it.next().ok_or("--engine needs auto, mma-sync or wgmma")?;
                args.engine = EngineChoice::parse(&v)
                    .ok_or(format!("--engine {v:?}: expected auto, mma-sync or wgmma"))?;
            }
            "--combine" => {
                let v = it.next().ok_or("--combine needs registers or stream")?;
                args.combine = CombineForm::parse(&v)
                    .ok_or(format!("--combine {v:?}: expected registers or stream"))?;
            }
            "--pairs" | "--no-pairs" if args.pairs != PairChoice::Auto => {
                return Err("--pairs and --no-pairs: give one of them".into());
            }
            "--tile" => {
                let v = it.next().ok_or("--tile needs a tile, e.g. 64x128s5")?;
                args.tile = Some(v.parse().map_err(|e| format!("--tile {v:?}: {e}"))?);
            }
            "--pairs" => args.pairs = PairChoice::On,
            "--no-pairs" => args.pairs = PairChoice::Off,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// Whether `--only`'s comma-separated patterns keep the check `name`: a pattern keeps the names
/// that contain it, or with a leading `=` only the name equal to the rest.
fn only_matches(only: &str, name: &str) -> bool {
    only.split(',').any(|p| p.strip_prefix('=').map_or(name.contains(p), |exact| name == exact))
}

fn small(dtype: DType, activation: Activation, bias: bool) -> MoeConfig {
    flashdmoe_cuda::spec::check_layer(dtype, activation, bias)
}

/// A gated layer whose experts' GEMM0 weights (2 x 4096 x 2048 bf16, 32 MiB) pass
/// `spec::GEMM0_GROUP_BYTES`, so its GEMM0 tasks go in column groups; 4 experts over `world`
/// ranks of 512 x `world` tokens, so every packet has 2 or more row tiles (one kernel image
/// for every `world`).
fn column_groups(world: u32) -> MoeConfig {
    MoeConfig {
        world,
        tokens_per_rank: 512 * world,
        hidden: 2048,
        inter: 4096,
        experts: 4,
        ..small(DType::Bf16, Activation::SiluGated, false)
    }
}

struct Case {
    name: String,
    config: MoeConfig,
    ranks_per_gpu: Option<u32>,
    /// Rows checked per rank (None = all).
    sample: Option<u32>,
    skew: bool,
    timed: bool,
    /// A forced-timeout check instead of a forward check.
    timeout: bool,
    /// The device-resident forward's check (`flashdmoe_bench::resident`) instead.
    resident: bool,
    /// A tile instead of the backend's choice (`CudaOptions::tile`).
    tile: Option<TileChoice>,
    /// A combine form instead of `--combine`'s (`CudaOptions::combine`).
    combine: Option<CombineForm>,
}

/// Every rank's generated input.
fn inputs(c: &MoeConfig, seed: u64) -> Result<Vec<Vec<f32>>, String> {
    (0..c.world)
        .map(|r| generate_input(c, r, seed))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())
}

/// The `--engine` flag, set once by `main` (every case's layer uses it).
static ENGINE: std::sync::OnceLock<EngineChoice> = std::sync::OnceLock::new();
/// The `--combine` flag, the same way.
static COMBINE: std::sync::OnceLock<CombineForm> = std::sync::OnceLock::new();
/// The `--pairs` flag, the same way.
static PAIRS: std::sync::OnceLock<PairChoice> = std::sync::OnceLock::new();
/// The `--tile` flag, the same way (unset: each case's own tile, or the backend's choice).
static TILE: std::sync::OnceLock<TileChoice> = std::sync::OnceLock::new();
/// The `--sustain` flag, the same way (unset: as many as `--iters`).
static SUSTAIN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// What a check of `case` found: `passed`, `detail`, and nothing measured yet; `seed` is the
/// weights' (the inputs are drawn from seed 11, or 1 in the timeout checks).
fn outcome(case: &Case, device: &str, seed: u64, passed: bool, detail: String) -> Outcome {
    let virtual_ranks = case.ranks_per_gpu.is_some_and(|r| r > 1);
    Outcome {
        name: case.name.clone(),
        config: case.config.clone(),
        implementation: if virtual_ranks { IMPL_CUDA_VIRTUAL } else { IMPL_CUDA },
        device: device.to_owned(),
        passed,
        detail,
        max_rel_err: None,
        protocol: None,
        timing: None,
        seed,
        timestamp: timestamp(SystemTime::now()),
    }
}

/// What `case` checks that only the Hopper engine has, where `engine` rules that engine out:
/// its own tile (the Hopper engine's shapes) or the streamed combine (its stages). Such a case
/// would otherwise fail to build or fail its fallback check for want of the engine, not of a
/// fault in the path it checks.
fn needs_the_hopper_engine(case: &Case, engine: EngineChoice) -> Option<&'static str> {
    if engine != EngineChoice::MmaSync {
        None
    } else if case.tile.is_some() {
        Some("a Hopper engine tile")
    } else if case.combine == Some(CombineForm::Streamed) {
        Some("the streamed combine")
    } else {
        None
    }
}

/// The case's layer on the CUDA backend.
fn build(case: &Case, weights: &LayerWeights) -> Result<CudaLayer, String> {
    let engine = ENGINE.get().copied().unwrap_or_default();
    CudaBackend::new(CudaOptions {
        ranks_per_gpu: case.ranks_per_gpu,
        engine,
        tile: TILE.get().copied().or(case.tile),
        combine: case.combine.or(COMBINE.get().copied()).unwrap_or_default(),
        pairs: PAIRS.get().copied().unwrap_or_default(),
        ..Default::default()
    })
    .build(&case.config, weights)
    .map_err(|e| format!("build: {e}"))
}

/// Where a check's host time goes, step by step (device time is the scarce resource, and a large
/// preset's check takes ~75 s of it, most of it on the host).
struct Laps {
    last: std::time::Instant,
    laps: Vec<(&'static str, f64)>,
}

impl Laps {
    fn start() -> Laps {
        Laps { last: std::time::Instant::now(), laps: Vec::new() }
    }

    /// Ends the step `name` now.
    fn lap(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.laps.push((name, (now - self.last).as_secs_f64()));
        self.last = now;
    }

    /// `; host seconds: name 1.2, ...`
    fn describe(&self) -> String {
        let parts: Vec<String> = self.laps.iter().map(|(n, t)| format!("{n} {t:.1}")).collect();
        format!("; host seconds: {}", parts.join(", "))
    }
}

fn run_case(case: &Case, iters: usize, device: &str) -> Result<Outcome, String> {
    let c = &case.config;
    let mut laps = Laps::start();
    let mut weights = LayerWeights::generate(c, 7).map_err(|e| e.to_string())?;
    if case.skew {
        // Identical router rows: every token ties, so every token picks experts 0..k-1
        // (ties go to the lower index): the hottest routing there is.
        let h = c.hidden as usize;
        let first = weights.router[..h].to_vec();
        for row in weights.router.chunks_mut(h) {
            row.copy_from_slice(&first);
        }
    }
    let inputs = inputs(c, 11)?;
    laps.lap("weights and inputs");
    let layer = build(case, &weights)?;
    laps.lap("build (JIT, upload)");
    let options = ForwardOptions { trace: false, timeout: Duration::from_secs(5) };
    let first = layer.forward(&inputs, &options).map_err(|e| format!("forward: {e}"))?;
    laps.lap("first forward");
    let verify_options = VerifyOptions {
        sample: match case.sample {
            None => Sample::All,
            Some(per_rank) => Sample::Rows { per_rank, seed: None },
        },
        tolerance: None,
    };
    let report = verify(c, &weights, &inputs, &first.ranks, &verify_options)
        .map_err(|e| format!("verify: {e}"))?;
    laps.lap("oracle");
    let digest = output_digest(first.ranks.iter().map(|r| r.output.as_slice()));
    let mut detail = format!("[{}] {report}; output digest {digest:016x}", layer.spec().label());
    if !layer.spill_fallback().is_empty() {
        detail.push_str(&format!("; spill fallback {}", layer.spill_fallback().join(",")));
    }
    let mut ok = report.passed();
    if case.combine == Some(CombineForm::Streamed) && layer.spec().combine != CombineForm::Streamed
    {
        ok = false;
        detail.push_str("; NOT the streamed combine this case checks (the build fell back)");
    }
    let mut max_rel = report.max_rel;
    // Determinism: a second forward (next epoch, no clearing) must be bitwise identical.
    let second = layer.forward(&inputs, &options).map_err(|e| format!("second forward: {e}"))?;
    let same = first
        .ranks
        .iter()
        .zip(&second.ranks)
        .all(|(a, b)| a.output.iter().zip(&b.output).all(|(x, y)| x.to_bits() == y.to_bits()));
    if !same {
        ok = false;
        detail.push_str("; NOT DETERMINISTIC across forwards");
    }
    let dropped: u64 = first.ranks.iter().map(|r| r.stats.dropped).sum();
    let sent: u64 = first.ranks.iter().map(|r| r.stats.bytes_sent).sum();
    let padded: u64 = first.ranks.iter().map(|r| r.stats.padded_bytes).sum();
    detail.push_str(&format!(
        "; bytes sent {:.1} MiB vs padded {:.1} MiB; dropped {dropped}; tasks {}",
        sent as f64 / 1048576.0,
        padded as f64 / 1048576.0,
        first.ranks[0].stats.tasks.total()
    ));
    // One traced forward: conformance of the GPU task trace against core's model, and
    // where the time goes.
    let traced_opts = ForwardOptions { trace: true, ..options.clone() };
    let traced =
        layer.forward(&inputs, &traced_opts).map_err(|e| format!("traced forward: {e}"))?;
    let events = match layer.check_trace(&traced) {
        Ok(events) => {
            detail.push_str("; trace conforms");
            events
        }
        Err(e) => {
            ok = false;
            detail.push_str(&format!("; {e}"));
            Vec::new()
        }
    };
    // On the Hopper engine every GEMM task of a traced forward marks its main loop's end and
    // its results' store, and every streamed combine its slot table's handover and its first
    // fill, in that order, within the task (`CudaLayer::task_marks`).
    if matches!(layer.spec().engine, flashdmoe_cuda::spec::TileEngine::Wgmma(_)) {
        let marks = layer.task_marks();
        let tasks = |f: fn(&flashdmoe_proto::TaskCounts) -> u64| {
            traced.ranks.iter().map(|r| f(&r.stats.tasks)).sum::<u64>()
        };
        let streamed = layer.spec().combine == flashdmoe_cuda::spec::CombineForm::Streamed;
        let expected =
            tasks(|t| t.gemm0 + t.gemm1) + if streamed { tasks(|t| t.combine) } else { 0 };
        let bad = marks.iter().find(|m| {
            let gemm = m.key.0 != flashdmoe_proto::TaskKind::Combine;
            (gemm && m.mark1_ns == 0)
                || m.mark1_ns > m.mark2_ns
                || u64::from(m.mark2_ns) > m.duration_ns
        });
        if marks.len() as u64 != expected || bad.is_some() {
            ok = false;
            detail.push_str(&format!(
                "; in-task marks: {} for {expected} marked tasks (GEMMs{}), first out of order: {bad:?}",
                marks.len(),
                if streamed { " and streamed combines" } else { "" }
            ));
        }
    }
    let protocol = protocol_stats(c, &traced, &events, layer.blocks_per_rank() - 1);
    laps.lap("second and traced forwards");
    let phases = layer.phase_times().map_err(|e| format!("phase times: {e}"))?;
    match waves_against_core(c, &layer, &traced, &phases) {
        None => {}
        Some(Ok(w)) => detail.push_str(&format!("; waves {w} as core's model")),
        Some(Err(e)) => {
            ok = false;
            detail.push_str(&format!("; waves NOT core's model: {e}"));
        }
    }
    if case.timed {
        detail.push_str(&trace_summary(&traced, layer.blocks_per_rank() - 1));
        detail.push_str(&fill_summary(&layer, &traced, &events));
        let us = |ns: u32| ns as f64 / 1e3;
        for (rank, t) in phases.iter().enumerate() {
            detail.push_str(&format!(
                "; rank {rank} phase A: last block started {:.0}us, reset {:.0}us, router jobs {:.0}us, routed {:.0}us, tokens {:.0}us ({}), top-k {:.0}us, placed {:.0}us, dispatched {:.0}us, first wave {} tasks (posted {:.0}us), second wave {}, third wave {}, {} paired, first handout {}, last combines queued {:.0}us and handed out {:.0}us; \
                 all tasks done {:.0}us, last warp ended {:.0}us",
                t.last_block_ns as f64 / 1e3,
                t.reset_ns as f64 / 1e3,
                t.router_jobs_ns as f64 / 1e3,
                us(t.routed_ns),
                us(t.tokens_ns),
                if t.tokens_by_threads { "a thread a token" } else { "a warp a token" },
                us(t.chosen_ns),
                us(t.placed_ns),
                us(t.dispatched_ns),
                t.first_wave,
                us(t.wave_posted_ns),
                t.second_wave,
                t.third_wave,
                t.paired_tasks,
                match t.first_handout_ns {
                    0 => "none (every task in the first wave)".to_string(),
                    ns => format!("{:.0}us", us(ns)),
                },
                us(t.combines_queued_ns),
                us(t.combines_handed_ns),
                us(t.stopped_ns),
                us(t.exited_ns)
            ));
        }
    }
    let mut timing = None;
    if case.timed && ok {
        let mut times = Vec::with_capacity(iters);
        for _ in 0..3 {
            layer.forward(&inputs, &options).map_err(|e| format!("warm-up: {e}"))?;
        }
        for _ in 0..iters {
            let out =
                layer.forward(&inputs, &options).map_err(|e| format!("timed forward: {e}"))?;
            // Device time of the slowest rank's launch.
            let ms =
                out.ranks.iter().map(|r| r.stats.elapsed.as_secs_f64() * 1e3).fold(0.0, f64::max);
            times.push(ms);
        }
        // The timed forwards must still be right (epochs advanced many times).
        let last = layer.forward(&inputs, &options).map_err(|e| format!("final forward: {e}"))?;
        let again = verify(c, &weights, &inputs, &last.ranks, &verify_options)
            .map_err(|e| format!("verify: {e}"))?;
        max_rel = max_rel.max(again.max_rel);
        if !again.passed() {
            ok = false;
            detail.push_str(&format!("; after timing: {again}"));
        }
        // The same layer's forwards queued back to back on the device, as a model runs them
        // (and as the baselines' graph replays): the times reported, each forward's between
        // consecutive events; the host path's median beside them.
        let host = TimeSummary::of(&times).ok_or("no valid timed forwards")?;
        let calls = SUSTAIN.get().copied().unwrap_or(iters);
        let b2b = flashdmoe_bench::resident::back_to_back_all(
            &layer,
            c,
            &inputs,
            &last.ranks,
            BackToBackOptions { calls, warmup: 3, timeout: options.timeout },
            &mut || Ok(()),
        )?;
        let slowest_gpu_ms: f64 = b2b.per_gpu_ms.iter().copied().fold(0.0, f64::max);
        // A sustained run names its count (the default 20 reads as before).
        let over = if SUSTAIN.get().is_some() { format!(" over {calls}") } else { String::new() };
        detail.push_str(&format!(
            "; device-resident back to back {slowest_gpu_ms:.3} ms a forward{over} ({}), host path median {:.3} ms",
            if b2b.same {
                "output bitwise = host path"
            } else {
                "output DIFFERS from the host path"
            },
            host.median_ms
        ));
        ok &= b2b.same;
        // Median and spread as the benchmark harness and the baselines compute them; the
        // floor from the experts this forward touched (docs/performance.md, core's `perf`).
        let summary =
            TimeSummary::of(&b2b.slowest_per_forward()).ok_or("no valid timed forwards")?;
        let touched = perf::experts_touched(c, first.ranks.iter().map(|r| &r.routing))
            .map_err(|e| e.to_string())?;
        timing = Some(Timing {
            iterations: u32::try_from(calls).map_err(|_| "--sustain or --iters is too large")?,
            times: summary,
            floor_ms: perf::floor_ms(c, touched),
            host_path_median_ms: Some(host.median_ms),
        });
        laps.lap("timed forwards and their check");
    }
    detail.push_str(&laps.describe());
    Ok(Outcome {
        max_rel_err: Some(max_rel),
        protocol: Some(protocol),
        timing,
        ..outcome(case, device, 7, ok, detail)
    })
}

/// A forced timeout (1 ns deadline) must come back as a typed report naming who waited for
/// what, never a hang; and the layer recovers: the next forward with a sane deadline is right
/// and its trace conforms.
fn timeout_case(case: &Case, _iters: usize, device: &str) -> Result<Outcome, String> {
    let c = &case.config;
    let weights = LayerWeights::generate(c, 1).map_err(|e| e.to_string())?;
    let inputs = inputs(c, 1)?;
    let layer = build(case, &weights)?;
    let forced = ForwardOptions { trace: false, timeout: Duration::from_nanos(1) };
    let report = match layer.forward(&inputs, &forced) {
        Err(BackendError::Timeout(report)) => report,
        other => {
            return Err(format!("expected a timeout, got {:?}", other.map(|_| "success")));
        }
    };
    let sane = ForwardOptions { trace: true, timeout: Duration::from_secs(5) };
    let out = layer
        .forward(&inputs, &sane)
        .map_err(|e| format!("timeout report: {report}; recovery FAILED: {e}"))?;
    let v = verify(c, &weights, &inputs, &out.ranks, &VerifyOptions::default())
        .map_err(|e| format!("verify: {e}"))?;
    let conforms = layer.check_trace(&out);
    let events: usize = out.ranks.iter().map(|r| r.trace.as_ref().map_or(0, Vec::len)).sum();
    let passed = v.passed() && conforms.is_ok();
    let detail = format!(
        "timeout report: {report}; recovery: {v}; trace events {events}, {}",
        conforms.map_or_else(|e| e.to_string(), |_| "conforms".into())
    );
    Ok(Outcome { max_rel_err: Some(v.max_rel), ..outcome(case, device, 1, passed, detail) })
}

/// The waves the kernel's OS block posted in the traced forward (its control words) against
/// core's model of them (`flashdmoe_core::runtime::Waves::choose`, which the simulator runs),
/// where core models the layer: one rank, the Hopper engine, no shared experts, at most 384
/// packets (the OS block's one chunk). `None` elsewhere; else the counts "(first, second,
/// third)", or both sides where they differ.
fn waves_against_core(
    c: &MoeConfig,
    layer: &CudaLayer,
    traced: &flashdmoe_core::ForwardOutput,
    phases: &[flashdmoe_cuda::PhaseTimes],
) -> Option<Result<String, String>> {
    let layout = layer.layout();
    let hopper = matches!(layer.spec().engine, flashdmoe_cuda::spec::TileEngine::Wgmma(_));
    let experts = layout.geometry().local_experts;
    if c.world != 1 || !hopper || c.shared.is_some() || experts > 384 || phases.len() != 1 {
        return None;
    }
    let plan = match traced.ranks[0].routing.source_plan(c, layout) {
        Ok(plan) => plan,
        Err(e) => return Some(Err(format!("the routing plan: {e}"))),
    };
    let rows: Vec<u32> = (0..experts).map(|e| plan.rows(0, e)).collect();
    let processors = layer.blocks_per_rank() - 1;
    let w = flashdmoe_core::runtime::Waves::choose(layout, processors, layer.spec().pairs, &rows);
    let t = &phases[0];
    let kernel = (t.first_wave, t.second_wave, t.third_wave);
    let core = (w.first, w.second, w.third);
    Some(if kernel == core {
        Ok(format!("{core:?}"))
    } else {
        Err(format!("the kernel posted {kernel:?}, core's model {core:?}"))
    })
}

/// The device-resident forward's checks (`flashdmoe_bench::resident`).
fn resident_case(case: &Case, _iters: usize, device: &str) -> Result<Outcome, String> {
    let c = &case.config;
    let weights = LayerWeights::generate(c, 7).map_err(|e| e.to_string())?;
    let layer = build(case, &weights)?;
    let report = flashdmoe_bench::resident::check(&layer, c, &weights, 10)?;
    // The form A2 took in the last forward (a "thread router" case exists to check that form).
    let phases = layer.phase_times().map_err(|e| format!("phase times: {e}"))?;
    let threads = phases.iter().all(|t| t.tokens_by_threads);
    let form_ok = threads || !case.name.contains("thread router");
    // On the Hopper engine every rank's packets from this GPU are read in place, so the OS block
    // hands each rank's first wave out itself (subscriber.cuh `enqueue_in_place`): one task a
    // processor, or every task where there are fewer (with paired tasks too: the first wave
    // runs solo).
    let waves: Vec<u32> = phases.iter().map(|t| t.first_wave).collect();
    let hopper = matches!(layer.spec().engine, flashdmoe_cuda::spec::TileEngine::Wgmma(_));
    let wave_ok = !hopper || waves.iter().all(|&n| n > 0);
    let detail = format!(
        "[{}] {}; A2 {}{}; first wave {waves:?}{}",
        layer.spec().label(),
        report.detail,
        if threads { "a thread a token" } else { "a warp a token" },
        if form_ok { "" } else { " (NOT the form this case checks)" },
        if wave_ok { "" } else { " (NONE on the Hopper engine)" }
    );
    Ok(outcome(case, device, 7, report.passed && form_ok && wave_ok, detail))
}

/// The GEMM tasks' mean times by how full their row tile was (`trace::fill_times`): what an
/// expert's last, part-empty row tile costs against a full one (perf-notes lever 6c).
fn fill_summary(
    layer: &CudaLayer,
    out: &flashdmoe_core::ForwardOutput,
    events: &[flashdmoe_core::trace::TraceEvent],
) -> String {
    let rows = match flashdmoe_core::conformance::task_rows(layer, out) {
        Ok(rows) => rows,
        Err(e) => return format!("; row fill: {e}"),
    };
    let bm = layer.spec().tile.bm;
    let bucket = |name: &str, (n, mean): (usize, f64)| {
        if n == 0 {
            format!("{name} n=0")
        } else {
            format!("{name} n={n} mean {:.1}us", mean / 1e3)
        }
    };
    let kinds: Vec<String> = flashdmoe_core::trace::fill_times(events, &rows, bm)
        .iter()
        .map(|f| {
            format!(
                "{} {}, {}, {}",
                f.kind.name(),
                bucket("full", f.full),
                bucket(">half", f.over_half),
                bucket("<=half", f.at_most_half)
            )
        })
        .collect();
    let marks = layer.task_marks();
    let mut text = format!("; row fill (bm {bm}): {}", kinds.join("; "));
    if !marks.is_empty() {
        text.push_str(&marks_summary(&marks, &rows, bm));
    }
    text
}

/// The in-task marks (`CudaLayer::task_marks`): the GEMM tasks' as mean µs of the main loop,
/// the epilogue (to the results stored) and the rest (fences, publication), for full and at
/// most half full row tiles; the streamed combines' as the slot table's lookup, the wait for
/// the first fill, and the rest (the sums and stores of every fill).
fn marks_summary(
    marks: &[flashdmoe_cuda::TaskMarks],
    rows: &std::collections::HashMap<flashdmoe_proto::TaskKey, u32>,
    bm: u32,
) -> String {
    use flashdmoe_core::trace::FillBucket;
    use flashdmoe_proto::TaskKind;
    let mut parts = Vec::new();
    for kind in [TaskKind::Gemm0, TaskKind::Gemm1] {
        for (bucket, name) in [(FillBucket::Full, "full"), (FillBucket::AtMostHalf, "<=half")] {
            let of: Vec<_> = marks
                .iter()
                .filter(|m| m.key.0 == kind)
                .filter(|m| rows.get(&m.key).is_some_and(|&r| FillBucket::of(r, bm) == bucket))
                .collect();
            if of.is_empty() {
                continue;
            }
            parts.push(format!("{} {name} {}", kind.name(), mark_means(&of)));
        }
    }
    let mut text =
        format!("; in-task µs (main loop/epilogue/fences+publication): {}", parts.join(", "));
    let combines: Vec<_> = marks.iter().filter(|m| m.key.0 == TaskKind::Combine).collect();
    if !combines.is_empty() {
        text.push_str(&format!(
            "; streamed combine µs (slot table/first fill/the rest): {}",
            mark_means(&combines)
        ));
    }
    text
}

/// Mean µs of tasks' three parts, start → mark 1 → mark 2 → end, as `a/b/c` (`marks` not
/// empty).
fn mark_means(marks: &[&flashdmoe_cuda::TaskMarks]) -> String {
    let mean = |f: &dyn Fn(&flashdmoe_cuda::TaskMarks) -> u64| {
        marks.iter().map(|m| f(m)).sum::<u64>() as f64 / marks.len() as f64 / 1e3
    };
    format!(
        "{:.1}/{:.1}/{:.1}",
        mean(&|m| u64::from(m.mark1_ns)),
        mean(&|m| u64::from(m.mark2_ns.saturating_sub(m.mark1_ns))),
        mean(&|m| m.duration_ns.saturating_sub(u64::from(m.mark2_ns)))
    )
}

/// Where a traced forward's time went: routing/dispatch before the first task, the task
/// phase by kind, and processor utilisation over the whole launch (rank 0 in detail, then the
/// utilisation of every rank).
fn trace_summary(out: &flashdmoe_core::ForwardOutput, processors: u32) -> String {
    let mut text = String::new();
    let mut busy_by_rank = Vec::new();
    for r in &out.ranks {
        let Some(events) = &r.trace else { continue };
        let kernel_ns = r.stats.elapsed.as_nanos() as f64;
        let busy: u64 = events.iter().map(|e| e.end_ns - e.start_ns).sum();
        let busy_pct = busy as f64 / (kernel_ns * processors as f64) * 100.0;
        busy_by_rank.push(format!("{busy_pct:.0}%"));
        if busy_by_rank.len() > 1 {
            continue;
        }
        let first = events.iter().map(|e| e.start_ns).min().unwrap_or(0);
        let last = events.iter().map(|e| e.end_ns).max().unwrap_or(0);
        let kinds: Vec<String> = flashdmoe_core::trace::kind_times(events)
            .iter()
            .map(|k| {
                format!(
                    "{} n={} mean {:.1}us span {:.0}-{:.0}us",
                    k.kind.name(),
                    k.tasks,
                    k.mean_ns / 1e3,
                    k.span_ns.0 as f64 / 1e3,
                    k.span_ns.1 as f64 / 1e3
                )
            })
            .collect();
        // Idle processor time before each kind, as µs of the forward (the sum over processors).
        let gaps: Vec<String> = flashdmoe_core::trace::gap_times(events)
            .iter()
            .map(|g| g.describe(processors))
            .collect();
        text.push_str(&format!(
            "; rank {}: kernel {:.0}us, first task at {:.0}us, last end {:.0}us, busy {busy_pct:.0}% of launch x {processors} processors; {}; gaps before {}",
            events.first().map_or(0, |e| e.rank),
            kernel_ns / 1e3,
            first as f64 / 1e3,
            last as f64 / 1e3,
            kinds.join(", "),
            gaps.join(", ")
        ));
    }
    if busy_by_rank.len() > 1 {
        text.push_str(&format!("; busy by rank [{}]", busy_by_rank.join(", ")));
    }
    text
}

fn cases(quick: bool) -> Vec<Case> {
    let mut out = Vec::new();
    let case = |name: String, config: MoeConfig| Case {
        name,
        config,
        ranks_per_gpu: None,
        sample: None,
        skew: false,
        timed: false,
        timeout: false,
        resident: false,
        tile: None,
        combine: None,
    };
    // Every dtype x activation, biases on the gated ones.
    for dtype in [DType::Bf16, DType::F16, DType::F32, DType::F32Exact] {
        for act in [Activation::Relu, Activation::Gelu, Activation::SiluGated] {
            let bias = act == Activation::SiluGated;
            out.push(case(
                format!("small {dtype:?} {act:?}{}", if bias { " bias" } else { "" }),
                small(dtype, act, bias),
            ));
        }
    }
    // A one-GPU layer whose GEMM0 tasks fit the processors (the second wave) with H = 8 I: eight
    // times as many GEMM1 tasks as GEMM0 tasks, most of them left to the scheduler, so no third
    // wave (a gated combine could wait for a GEMM1 posted behind it: perf-notes v50 (e)); the
    // waves are compared with core's model.
    out.push(case(
        "waves with GEMM1 tasks left to the scheduler".into(),
        MoeConfig {
            world: 1,
            tokens_per_rank: 64,
            hidden: 2048,
            inter: 256,
            experts: 8,
            top_k: 1,
            dtype: DType::Bf16,
            activation: Activation::Relu,
            capacity: CapacityPolicy::Dropless,
            ..MoeConfig::default()
        },
    ));
    // Every real model's router and experts the kernel computes (core's small model kinds
    // without their shared experts: DeepSeek-V2's grouped softmax with scaling, DeepSeek-V3's
    // grouped sigmoid with a selection bias, gpt-oss's biased top-k softmax and clamped
    // SwiGLU) at the small shape, on one rank and on four virtual ranks.
    for (kind, model) in presets::small_model_kinds(DType::Bf16) {
        if model.routing == Routing::SOFTMAX
            && !matches!(model.activation, Activation::SwigluOss(_))
        {
            continue; // the paper's router: covered above
        }
        let c = MoeConfig {
            activation: model.activation,
            bias: model.bias,
            renormalize: model.renormalize,
            routing: model.routing,
            ..small(DType::Bf16, model.activation, model.bias)
        };
        out.push(case(format!("small {kind} router and experts"), c.clone()));
        let multi = MoeConfig { world: 4, experts: 16, ..c };
        out.push(Case {
            ranks_per_gpu: Some(4),
            ..case(format!("virtual P=4 {kind} router and experts"), multi)
        });
    }
    // Shared experts in the kernel (as m virtual experts a rank: core's `virtual_experts`):
    // DeepSeek-V2's kind (m = 2, grouped softmax router) and Qwen2-MoE's (m = 4, sigmoid
    // gate), on one rank and on four virtual ranks, against the oracle.
    for (kind, c) in flashdmoe_cuda::spec::shared_kinds(1) {
        out.push(case(format!("small {kind} shared experts"), c));
    }
    for (kind, c) in flashdmoe_cuda::spec::shared_kinds(4) {
        out.push(Case {
            ranks_per_gpu: Some(4),
            ..case(format!("virtual P=4 {kind} shared experts"), c)
        });
    }
    // Capacity mode with drops, and the hottest routing in both modes.
    let mut cap = small(DType::Bf16, Activation::Relu, false);
    cap.capacity = CapacityPolicy::Factor(1.0);
    out.push(case("small capacity-1.0".into(), cap.clone()));
    out.push(Case { skew: true, ..case("skewed capacity-1.0 (drops)".into(), cap.clone()) });
    out.push(Case {
        skew: true,
        ..case("skewed dropless".into(), small(DType::Bf16, Activation::Relu, false))
    });
    // GEMM0 tasks in column groups (`spec::gemm0_group`: an expert's gate and up weights past
    // `GEMM0_GROUP_BYTES`, 32 MiB here): 32 column tiles in groups of 12, 2 or more row tiles
    // a packet; on one rank and on two virtual ranks.
    out.push(Case { sample: Some(64), ..case("small column groups".into(), column_groups(1)) });
    out.push(Case {
        ranks_per_gpu: Some(2),
        sample: Some(64),
        ..case("virtual P=2 column groups".into(), column_groups(2))
    });
    // The multi-rank protocol: virtual ranks on one GPU (P up to 8), and one rank per GPU
    // where the machine has the GPUs (skipped otherwise). Skewed routing sends every token to
    // rank 0's experts, so the other ranks' experts are empty.
    let multi: [(u32, u32, &str); 6] = [
        (2, 2, "virtual"),
        (4, 4, "virtual"),
        (8, 8, "virtual"),
        (2, 1, "multi-GPU"),
        (4, 1, "multi-GPU"),
        (8, 1, "multi-GPU"),
    ];
    for (world, ranks_per_gpu, label) in multi {
        for skew in [false, true] {
            let mut c = small(DType::Bf16, Activation::SiluGated, false);
            c.world = world;
            c.experts = 16;
            out.push(Case {
                ranks_per_gpu: Some(ranks_per_gpu),
                skew,
                ..case(format!("{label} P={world}{}", if skew { " skewed" } else { "" }), c)
            });
        }
        let mut c = cap.clone();
        c.world = world;
        c.experts = 16;
        out.push(Case {
            ranks_per_gpu: Some(ranks_per_gpu),
            ..case(format!("{label} P={world} capacity-1.0"), c)
        });
    }
    // A placement table that scatters the experts unevenly over four virtual ranks (3, 5, 2
    // and 6 experts): each GPU's weight slots (layer.rs `weight_slots`) then differ from the
    // global expert order, and some slots are empty.
    let scattered: Vec<u32> =
        (0..16u32).map(|e| [0, 1, 1, 3, 2, 3, 1, 0, 3, 1, 3, 0, 2, 3, 1, 3][e as usize]).collect();
    let mut c = small(DType::Bf16, Activation::SiluGated, true);
    c.world = 4;
    c.experts = 16;
    c.placement = Placement::Table(scattered);
    out.push(Case { ranks_per_gpu: Some(4), ..case("virtual P=4 scattered placement".into(), c) });
    // Forced timeouts: one rank, then every multi-rank arrangement above.
    let timeouts = std::iter::once((1, 1, "single")).chain(multi);
    for (world, ranks_per_gpu, label) in timeouts {
        let mut c = small(DType::Bf16, Activation::Relu, false);
        c.world = world;
        c.experts = 16;
        out.push(Case {
            ranks_per_gpu: Some(ranks_per_gpu),
            timeout: true,
            ..case(format!("forced timeout + recovery {label} P={world}"), c)
        });
    }
    // The device-resident forward (caller stream, fewer tokens, a CUDA graph replayed 10
    // times, host time a call), on one rank and on two virtual ranks.
    for (world, label) in [(1, "single P=1"), (2, "virtual P=2")] {
        let mut c = small(DType::Bf16, Activation::SiluGated, true);
        c.world = world;
        c.experts = 16;
        c.capacity = CapacityPolicy::Factor(1.25);
        out.push(Case {
            ranks_per_gpu: Some(world),
            resident: true,
            ..case(format!("device-resident {label}"), c)
        });
    }
    // The same at 4096 tokens of 8 experts a GPU: enough that A2 routes a token a thread
    // (topk.cuh `lanes_route`), so its routing given, its bad routing refused and its graph
    // replays are checked in that form too (the cases above route a warp a token).
    for (world, label) in [(1, "single P=1"), (2, "virtual P=2")] {
        let mut c = small(DType::Bf16, Activation::SiluGated, true);
        c.world = world;
        c.tokens_per_rank = 4096 / world;
        out.push(Case {
            ranks_per_gpu: Some(world),
            resident: true,
            ..case(format!("device-resident {label} thread router"), c)
        });
    }
    // The device-resident forward of the shared kinds (fewer tokens, a graph replayed, a
    // routing given: the parts follow every token's given slots) on one rank.
    for (kind, c) in flashdmoe_cuda::spec::shared_kinds(1) {
        out.push(Case {
            ranks_per_gpu: Some(1),
            resident: true,
            ..case(format!("device-resident single P=1 {kind} shared experts"), c)
        });
    }
    // 256-row tiles (`--tile`; docs/dev/whole-expert-tiles.md): two 64-row slabs a consumer
    // warpgroup, an empty slab skipped, GEMM1's routing weights for four rows a thread. 1536
    // tokens, dropless: ~384 rows an expert, so packets of one full and one partial row tile.
    for (name, tile, c) in flashdmoe_cuda::spec::chosen_tile_kinds() {
        out.push(Case {
            tile: Some(tile),
            ranks_per_gpu: (c.world > 1).then_some(c.world),
            ..case(format!("tile {name}"), c)
        });
    }
    // Combine tasks streamed through the Hopper engine's stages (`CombineForm::Streamed`,
    // kernels/combine_stream.cuh: 4+ slots a token): a top-8 layer (a stage holds 4 of its
    // tokens at H 512), the shared kinds (6 and 4 slots: a dropped slot's zeros, Qwen's gate),
    // on one rank and two virtual ranks; their labels end in `-cs` (else the build fell back).
    let mut top8 = small(DType::Bf16, Activation::SiluGated, false);
    top8.top_k = 8;
    // The registers' form where the default streams (`--combine registers` everywhere).
    let registers = Case {
        combine: Some(CombineForm::Registers),
        ..case("combine registers small top-8".to_owned(), top8.clone())
    };
    let streamed = [
        ("small top-8", 1, top8.clone()),
        ("virtual P=2 top-8", 2, MoeConfig { world: 2, experts: 16, ..top8 }),
    ]
    .into_iter()
    .map(|(name, world, c)| (name.to_owned(), world, c))
    .chain(
        flashdmoe_cuda::spec::shared_kinds(1)
            .into_iter()
            .map(|(kind, c)| (format!("small {kind}"), 1, c)),
    );
    for (name, world, c) in streamed {
        out.push(Case {
            combine: Some(CombineForm::Streamed),
            ranks_per_gpu: (world > 1).then_some(world),
            ..case(format!("combine stream {name}"), c)
        });
    }
    out.push(registers);
    if quick {
        return out;
    }
    // Model presets at their preset token counts, sampled rows (those the kernel computes:
    // main reports the others' refusal), the shared experts of Qwen's and DeepSeek's included.
    for model in kernel_presets() {
        let name = model.name;
        out.push(Case {
            sample: Some(32),
            timed: true,
            ..case(format!("preset {name}"), model.config())
        });
    }
    // The routed parts of the presets with shared experts whose routers are not the paper's
    // (DeepSeek-V3's and Kimi-K2's grouped sigmoid routers) at full size: `models-t4096`'s
    // `-routed` layers, timed beside the whole layers above.
    for model in presets::MODELS.iter().filter(|m| m.shared.is_some()) {
        let c = MoeConfig { shared: None, ..model.config() };
        if flashdmoe_cuda::spec::computes(&c) && c.routing != Routing::SOFTMAX {
            let name = format!("preset {} routed part", model.name);
            out.push(Case { sample: Some(32), timed: true, ..case(name, c) });
        }
    }
    // Paper grid (bf16 relu, capacity 1.0), timed; and dropless at T=16384.
    for (name, c) in presets::paper_grid() {
        if (c.experts == 16 || c.experts == 64) && c.tokens_per_rank > 128 {
            // Keep the run inside the device budget: E in {8, 32, 128}, and every E at T128
            // (a second each; the tile rule's width differs there by E: spec/tile.rs hopper_bn).
            continue;
        }
        out.push(Case { sample: Some(64), timed: true, ..case(name, c) });
    }
    for e in [8, 32] {
        let mut c = presets::paper(16384, e);
        c.capacity = CapacityPolicy::Dropless;
        out.push(Case {
            sample: Some(64),
            timed: true,
            ..case(format!("paper-t16384-e{e} dropless"), c)
        });
    }
    // Every dtype and activation at a paper shape too (sampled rows, not timed).
    for dtype in [DType::F16, DType::F32, DType::F32Exact] {
        let mut c = presets::paper(4096, 32);
        c.dtype = dtype;
        out.push(Case { sample: Some(64), ..case(format!("paper-t4096-e32 {dtype:?}"), c) });
    }
    for act in [Activation::Gelu, Activation::SiluGated] {
        let mut c = presets::paper(4096, 8);
        c.activation = act;
        out.push(Case { sample: Some(64), ..case(format!("paper-t4096-e8 {act:?}"), c) });
    }
    // TF32 (the reference paper's precision).
    let mut c = presets::paper(16384, 32);
    c.dtype = DType::F32;
    out.push(Case { sample: Some(64), timed: true, ..case("paper-t16384-e32 tf32".into(), c) });
    // Weak scaling at T = 8192 per rank, E = 32: one rank per GPU over 1, 2 and 4 GPUs (as
    // many as the machine has), and two virtual ranks on one GPU.
    for (world, ranks_per_gpu, label) in [
        (1, 1, "weak P=1"),
        (2, 1, "weak P=2"),
        (4, 1, "weak P=4"),
        (8, 1, "weak P=8"),
        (2, 2, "weak P=2 virtual"),
    ] {
        let mut c = presets::paper(8192, 32);
        c.world = world;
        out.push(Case {
            ranks_per_gpu: Some(ranks_per_gpu),
            sample: Some(64),
            timed: true,
            ..case(format!("{label} t8192-e32"), c)
        });
    }
    // The paper grid on two and on eight GPUs (the PyTorch expert-parallel baseline runs the
    // same; skipped on smaller machines), then the model presets on eight (sampled rows) and
    // TF32 at the reference paper's token counts (docs/performance.md, target 8).
    for (world, sample) in [(2, 64), (8, 32)] {
        for (t, e) in [(128, 8), (4096, 8), (4096, 32), (16384, 8), (16384, 32)] {
            let mut c = presets::paper(t, e);
            c.world = world;
            out.push(Case {
                ranks_per_gpu: Some(1),
                sample: Some(sample),
                timed: true,
                ..case(format!("multi-GPU P={world} paper-t{t}-e{e}-cf1"), c)
            });
        }
    }
    for model in kernel_presets() {
        let mut c = model.config();
        c.world = 8;
        out.push(Case {
            ranks_per_gpu: Some(1),
            sample: Some(16),
            timed: true,
            ..case(format!("multi-GPU P=8 preset {}", model.name), c)
        });
    }
    for world in [2, 8] {
        for t in [4096, 8192, 16384] {
            let mut c = presets::paper(t, 32);
            c.world = world;
            c.dtype = DType::F32;
            out.push(Case {
                ranks_per_gpu: Some(1),
                sample: Some(64),
                timed: true,
                ..case(format!("multi-GPU P={world} paper-t{t}-e32-cf1 tf32"), c)
            });
        }
    }
    out
}

/// The model presets the kernel computes (all of them today: shared experts included); any
/// other is refused by the backend before any device work.
fn kernel_presets() -> impl Iterator<Item = &'static presets::ModelShape> {
    presets::MODELS.iter().filter(|m| flashdmoe_cuda::spec::computes(&m.config()))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        parse_args_from(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn sustain_takes_a_positive_count_and_leaves_iters_alone() {
        let a = parse(&["--sustain", "2000"]).unwrap();
        assert_eq!((a.sustain, a.iters), (Some(2000), 20));
        assert_eq!(parse(&[]).unwrap().sustain, None);
        for bad in [&["--sustain"][..], &["--sustain", "0"], &["--sustain", "many"]] {
            let err = parse(bad).err().unwrap();
            assert!(err.contains("--sustain"), "{err}");
        }
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["--help"]).unwrap().help && parse(&["-h"]).unwrap().help);
    }

    #[test]
    fn pairs_are_auto_by_default_on_or_off_by_flag_and_in_the_usage() {
        assert_eq!(parse(&[]).unwrap().pairs, PairChoice::Auto);
        assert_eq!(parse(&["--pairs", "--quick"]).unwrap().pairs, PairChoice::On);
        assert_eq!(parse(&["--no-pairs"]).unwrap().pairs, PairChoice::Off);
        assert!(parse(&["--pairs", "--no-pairs"]).is_err());
        assert!(USAGE.contains("--pairs") && USAGE.contains("--no-pairs"));
    }

    #[test]
    fn tile_parses_a_hopper_tile_and_names_itself_on_bad_input() {
        assert_eq!(parse(&[]).unwrap().tile, None);
        let t = parse(&["--tile", "64x128s5"]).unwrap().tile.unwrap();
        assert_eq!(t.to_string(), "64x128s5");
        for bad in [&["--tile"][..], &["--tile", "64by128"]] {
            let err = parse(bad).err().unwrap();
            assert!(err.contains("--tile"), "{err}");
        }
        assert!(USAGE.contains("--tile"));
    }

    #[test]
    fn laps_name_each_step_in_order() {
        let mut laps = Laps::start();
        laps.lap("one");
        laps.lap("two");
        let d = laps.describe();
        assert!(d.starts_with("; host seconds: one "), "{d}");
        assert!(d.find("one").unwrap() < d.find(", two ").unwrap(), "{d}");
    }

    #[test]
    fn only_keeps_substrings_or_exact_names() {
        assert!(only_matches("kimi", "preset kimi-k2 routed part"));
        assert!(only_matches("=preset kimi-k2", "preset kimi-k2"));
        assert!(!only_matches("=preset kimi-k2", "preset kimi-k2 routed part"));
        assert!(only_matches("x,=preset kimi-k2", "preset kimi-k2"));
        assert!(!only_matches("x,y", "preset kimi-k2"));
    }

    /// What the GPU machine will run is checked here first: every case is a valid layer the
    /// kernel computes (a bad placement table or router would otherwise surface only there),
    /// and names are unique (results are keyed by them).
    #[test]
    fn every_case_is_a_valid_layer_the_kernel_computes() {
        for quick in [true, false] {
            let cases = cases(quick);
            let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
            for case in &cases {
                case.config.validate().unwrap_or_else(|e| panic!("{}: {e}", case.name));
                assert!(flashdmoe_cuda::spec::computes(&case.config), "{}", case.name);
            }
            names.sort_unstable();
            let n = names.len();
            names.dedup();
            assert_eq!(names.len(), n, "case names repeat");
        }
        let quick: Vec<String> = cases(true).into_iter().map(|c| c.name).collect();
        for needle in [
            "deepseek-v3 router and experts",
            "gpt-oss router and experts",
            "scattered",
            "small deepseek-v2 m2 shared experts",
            "small qwen2-moe m4 gated shared experts",
            "virtual P=4 deepseek-v2 m2 shared experts",
            "virtual P=4 qwen2-moe m4 gated shared experts",
            "tile 256x64 swiglu virtual P=2",
            "combine stream small top-8",
            "combine stream virtual P=2 top-8",
            "combine registers small top-8",
        ] {
            assert!(quick.iter().any(|n| n.contains(needle)), "{needle} not in the quick check");
        }
        // The whole presets with shared experts are checked (and timed) in the full run.
        let full: Vec<String> = cases(false).into_iter().map(|c| c.name).collect();
        for preset in ["deepseek-v3", "qwen1.5-moe-a2.7b", "qwen2-57b-a14b", "deepseek-v2-lite"] {
            assert!(full.contains(&format!("preset {preset}")), "preset {preset}");
        }
    }

    #[test]
    fn the_hopper_only_cases_are_skipped_on_the_mma_sync_engine_only() {
        let quick = cases(true);
        let skipped: Vec<&str> = quick
            .iter()
            .filter(|c| needs_the_hopper_engine(c, EngineChoice::MmaSync).is_some())
            .map(|c| c.name.as_str())
            .collect();
        assert!(skipped.contains(&"tile 256x64 swiglu virtual P=2"), "{skipped:?}");
        assert!(skipped.contains(&"combine stream virtual P=2 top-8"), "{skipped:?}");
        assert!(!skipped.contains(&"combine registers small top-8"), "{skipped:?}");
        for engine in [EngineChoice::Auto, EngineChoice::Wgmma] {
            assert!(quick.iter().all(|c| needs_the_hopper_engine(c, engine).is_none()));
        }
    }

    #[test]
    fn the_tile_cases_ask_for_tiles_the_engine_has() {
        let tiled: Vec<Case> = cases(true).into_iter().filter(|c| c.tile.is_some()).collect();
        assert_eq!(tiled.len(), 4);
        for case in &tiled {
            let tile = case.tile.unwrap();
            assert!(case.name.contains(&tile.to_string()), "{}", case.name);
            let spec = flashdmoe_cuda::spec::MoeSpec::with_tile(
                &case.config,
                131,
                flashdmoe_cuda::Arch::SM90,
                tile,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(spec.tile.bm, 256, "{}", case.name);
        }
    }

    #[test]
    fn the_column_groups_cases_have_groups() {
        for world in [1, 2] {
            let config = column_groups(world);
            let spec =
                flashdmoe_cuda::spec::MoeSpec::candidates(&config, 131, flashdmoe_cuda::Arch::SM90)
                    [0];
            assert!(spec.tile.gemm0_group > 0, "{}", spec.label());
            assert!(spec.tile.gemm0_group < config.inter / spec.tile.bn, "{}", spec.label());
        }
        assert!(cases(true).iter().any(|c| c.name == "small column groups"));
    }
}
