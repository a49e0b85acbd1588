//! Running one check: the layer built with the command line's choices, forwards verified
//! against the oracle, timed where the case says so.

use std::time::{Duration, SystemTime};

use flashdmoe_bench::gpu_check::{Outcome, Timing, output_digest};
use flashdmoe_bench::record::{IMPL_CUDA, IMPL_CUDA_VIRTUAL, timestamp};
use flashdmoe_bench::resident::BackToBackOptions;
use flashdmoe_bench::runner::protocol_stats;
use flashdmoe_core::oracle::{Sample, VerifyOptions, verify};
use flashdmoe_core::perf::{self, TimeSummary};
use flashdmoe_core::weights::generate_input;
use flashdmoe_core::{Backend, BackendError, ForwardOptions, Layer, LayerWeights, MoeConfig};
use flashdmoe_cuda::{
    CombineForm, CudaBackend, CudaLayer, CudaOptions, EngineChoice, PairChoice, TileChoice,
};

use super::cases::Case;
use super::summaries::{fill_summary, trace_summary};

/// Every rank's generated input.
pub(super) fn inputs(c: &MoeConfig, seed: u64) -> Result<Vec<Vec<f32>>, String> {
    (0..c.world)
        .map(|r| generate_input(c, r, seed))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())
}

/// The `--engine` flag, set once by `main` (every case's layer uses it).
pub(super) static ENGINE: std::sync::OnceLock<EngineChoice> = std::sync::OnceLock::new();
/// The `--combine` flag, the same way.
pub(super) static COMBINE: std::sync::OnceLock<CombineForm> = std::sync::OnceLock::new();
/// The `--pairs` flag, the same way.
pub(super) static PAIRS: std::sync::OnceLock<PairChoice> = std::sync::OnceLock::new();
/// The `--tile` flag, the same way (unset: each case's own tile, or the backend's choice).
pub(super) static TILE: std::sync::OnceLock<TileChoice> = std::sync::OnceLock::new();
/// The `--sustain` flag, the same way (unset: as many as `--iters`).
pub(super) static SUSTAIN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// What a check of `case` found: `passed`, `detail`, and nothing measured yet; `seed` is the
/// weights' (the inputs are drawn from seed 11, or 1 in the timeout checks).
pub(super) fn outcome(
    case: &Case,
    device: &str,
    seed: u64,
    passed: bool,
    detail: String,
) -> Outcome {
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
pub(super) fn needs_the_hopper_engine(case: &Case, engine: EngineChoice) -> Option<&'static str> {
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
pub(super) fn build(case: &Case, weights: &LayerWeights) -> Result<CudaLayer, String> {
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

pub(super) fn run_case(case: &Case, iters: usize, device: &str) -> Result<Outcome, String> {
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
                "; rank {rank} phase A: last block started {:.0}us, reset {:.0}us, router jobs {:.0}us, routed {:.0}us, tokens {:.0}us ({}), top-k {:.0}us, placed {:.0}us, dispatched {:.0}us, first wave {} tasks (posted {:.0}us), second wave {}, third wave {}, {} paired, first handout {}, last combines queued {:.0}us and handed out {:.0}us{}; \
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
                match t.chunks_placed {
                    0 => String::new(),
                    n => format!(
                        ", streamed {n} chunks (first row tile queued {:.0}us)",
                        us(t.first_tile_ns)
                    ),
                },
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
pub(super) fn timeout_case(case: &Case, _iters: usize, device: &str) -> Result<Outcome, String> {
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
    // The streamed placement (experiment FDM_STREAM) posts no wave: core's
    // `RankState::stream_placement` neither.
    if t.chunks_placed > 0 {
        return Some(if kernel == (0, 0, 0) {
            Ok(format!("(streamed: {} chunks, no wave)", t.chunks_placed))
        } else {
            Err(format!("the kernel streamed {} chunks and posted {kernel:?}", t.chunks_placed))
        });
    }
    let core = (w.first, w.second, w.third);
    Some(if kernel == core {
        Ok(format!("{core:?}"))
    } else {
        Err(format!("the kernel posted {kernel:?}, core's model {core:?}"))
    })
}

/// The device-resident forward's checks (`flashdmoe_bench::resident`).
pub(super) fn resident_case(case: &Case, _iters: usize, device: &str) -> Result<Outcome, String> {
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
    // The streamed placement (experiment FDM_STREAM) queues its row tiles instead.
    let waves: Vec<u32> = phases.iter().map(|t| t.first_wave).collect();
    let hopper = matches!(layer.spec().engine, flashdmoe_cuda::spec::TileEngine::Wgmma(_));
    let streamed = phases.iter().all(|t| t.chunks_placed > 0);
    let wave_ok = !hopper || streamed || waves.iter().all(|&n| n > 0);
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

#[cfg(test)]
mod tests {
    use super::super::cases::cases;
    use super::*;

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
}
