//! Runs one case of a sweep on one of our backends and turns it into a [`Record`].
//!
//! The protocol of [`run_case`], in order:
//!
//! 1. generate the seeded weights and inputs (the generator the baselines share) and build the
//!    layer;
//! 2. one forward, verified against core's oracle: every row of a small layer, else a fresh
//!    sample of `verify_rows` rows per rank ([`Sample::sized_for`]);
//! 3. `warmup` untimed forwards, then `iterations` timed ones through the host path (host f32
//!    in and out); the time of a forward is the slowest rank's: device time (CUDA events around
//!    the launch) on the GPU, the rank's wall time in the simulator;
//! 4. the last timed output verified again (a fresh sample) and compared bitwise with the first
//!    (outputs are deterministic);
//! 5. on a GPU, `warmup` and then `iterations` device-resident forwards (inputs and outputs in
//!    device memory: what a model's calls cost, like the baselines' CUDA-graph replays) queued
//!    back to back, each timed between consecutive events on its GPU's stream, the slowest
//!    GPU's per forward; their last output must be bitwise the verified first one's. These are
//!    the record's times; the host path's median stays in `host_path_median_ms` (its events
//!    include the GPU's idle wait for each call's uploads: docs/dev/perf-notes.md v10);
//! 6. one traced forward (untimed) for the protocol statistics: tasks, rows, bytes against a
//!    capacity-padded protocol, drops, and processor utilisation.
//!
//! A mismatch is a result (`verified: false` with the reason in `notes`), not an error; an
//! error means the case could not be measured (the backend failed).

use std::time::{Duration, SystemTime};

use crate::error::BenchError;
use crate::grid::Case;
use crate::record::{
    IMPL_CUDA, IMPL_CUDA_VIRTUAL, IMPL_SIM, LayerKey, ProtocolStats, Record, SCHEMA,
};
use flashdmoe_core::conformance;
use flashdmoe_core::oracle::{self, Sample, VerifyOptions, VerifyReport};
use flashdmoe_core::perf::{self, TimeSummary};
use flashdmoe_core::trace::{self, TraceEvent};
use flashdmoe_core::{
    Backend, BackendError, ForwardOptions, ForwardOutput, Layer, LayerWeights, MoeConfig,
    generate_input,
};
use flashdmoe_cuda::{CudaBackend, CudaLayer};
use flashdmoe_sim::{SimBackend, SimLayer};

/// How a case is run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOptions {
    /// Timed forwards (>= 1).
    pub iterations: u32,
    /// Untimed forwards before them.
    pub warmup: u32,
    /// Seed of the weights and inputs.
    pub seed: u64,
    /// Deadline of every wait inside a forward.
    pub timeout: Duration,
    /// Rows per rank the oracle checks when it samples.
    pub verify_rows: u32,
}

/// What [`run_case`] reports as it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Generating weights and inputs.
    Build,
    /// Weights and inputs generated; building the layer (a GPU backend compiles or loads its
    /// kernel and uploads the weights).
    Layer,
    /// The first forward and its verification.
    Verify,
    /// One more forward done (warm-up or timed).
    Forward,
    /// The last verification and the traced forward.
    Finish,
}

/// What the harness needs from a backend beyond [`Backend`].
pub trait BenchBackend: Backend {
    /// The `impl` of our records from `layer` of this backend.
    fn implementation(layer: &Self::Layer) -> &'static str;
    /// Whether its times are GPU device times (so floors apply and baselines compare).
    const ON_GPU: bool;
    /// The `device` of the records: the GPU's name, or `cpu`.
    fn device(&self) -> String;
    /// Processors per rank of `layer`, for the utilisation figure.
    fn processors_per_rank(layer: &Self::Layer) -> u32;
    /// `Ok` if this backend computes `config`'s layer, else its refusal
    /// ([`BackendError::NotSupported`] naming the fields): checked by [`run_case`] before
    /// generating any weights (a whole DeepSeek-V3 layer's are gigabytes).
    fn check_layer(&self, _config: &MoeConfig) -> Result<(), BackendError> {
        Ok(())
    }
    /// Step 5 of the module doc: the per-forward times (ms) of `options.iterations`
    /// device-resident forwards of `layer` queued back to back after `options.warmup` untimed
    /// ones (the slowest GPU's each), and whether the last output is bitwise `host`'s; `None`
    /// where the backend has no device-resident path (the simulator).
    fn resident_times(
        _layer: &Self::Layer,
        _config: &MoeConfig,
        _inputs: &[Vec<f32>],
        _host: &ForwardOutput,
        _options: &RunOptions,
    ) -> Result<Option<(Vec<f64>, bool)>, BenchError> {
        Ok(None)
    }
}

impl BenchBackend for SimBackend {
    fn implementation(_: &SimLayer) -> &'static str {
        IMPL_SIM
    }
    const ON_GPU: bool = false;

    fn device(&self) -> String {
        "cpu".into()
    }

    fn processors_per_rank(layer: &SimLayer) -> u32 {
        layer.processors_per_rank()
    }
}

impl BenchBackend for CudaBackend {
    /// Virtual ranks (several per GPU) are labelled apart: they share a GPU's SMs.
    fn implementation(layer: &CudaLayer) -> &'static str {
        if layer.ranks_per_gpu() > 1 { IMPL_CUDA_VIRTUAL } else { IMPL_CUDA }
    }
    const ON_GPU: bool = true;

    /// The first GPU's name (the layer's ranks start on it).
    fn device(&self) -> String {
        flashdmoe_cuda::gpus()
            .ok()
            .and_then(|g| g.into_iter().next())
            .map_or_else(|| "unknown GPU".into(), |g| g.name)
    }

    /// Every block of a rank's partition but its OS block (scheduler and subscribers).
    fn processors_per_rank(layer: &CudaLayer) -> u32 {
        layer.blocks_per_rank().saturating_sub(1)
    }

    /// The layers the kernel computes (`spec::check_computed`: e.g. shared experts with a
    /// capacity factor are refused).
    fn check_layer(&self, config: &MoeConfig) -> Result<(), BackendError> {
        flashdmoe_cuda::spec::check_computed(config)
    }

    fn resident_times(
        layer: &CudaLayer,
        config: &MoeConfig,
        inputs: &[Vec<f32>],
        host: &ForwardOutput,
        options: &RunOptions,
    ) -> Result<Option<(Vec<f64>, bool)>, BenchError> {
        let b2b = crate::resident::back_to_back_all(
            layer,
            config,
            inputs,
            &host.ranks,
            crate::resident::BackToBackOptions {
                calls: options.iterations as usize,
                warmup: options.warmup as usize,
                timeout: options.timeout,
            },
            &mut || Ok(()),
        )
        .map_err(|e| BenchError::Backend(BackendError::Device(e)))?;
        Ok(Some((b2b.slowest_per_forward(), b2b.same)))
    }
}

/// Runs `case` on `backend` (module doc); `progress` hears about each step.
pub fn run_case<B: BenchBackend>(
    backend: &B,
    case: &Case,
    options: &RunOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Record, BenchError> {
    let config = &case.config;
    if options.iterations == 0 {
        return Err(BenchError::Options("iterations must be >= 1".into()));
    }
    backend.check_layer(config)?;
    progress(Progress::Build);
    let weights = LayerWeights::generate(config, options.seed)?;
    let inputs = (0..config.world)
        .map(|rank| generate_input(config, rank, options.seed))
        .collect::<Result<Vec<_>, _>>()?;
    progress(Progress::Layer);
    let layer = backend.build(config, &weights)?;
    let forward = ForwardOptions { trace: false, timeout: options.timeout };

    progress(Progress::Verify);
    let first = layer.forward(&inputs, &forward)?;
    let verify = |out: &ForwardOutput| -> Result<VerifyReport, BenchError> {
        Ok(oracle::verify(config, &weights, &inputs, &out.ranks, &verify_options(config, options))?)
    };
    let first_check = verify(&first)?;

    for _ in 0..options.warmup {
        layer.forward(&inputs, &forward)?;
        progress(Progress::Forward);
    }
    let mut times = Vec::with_capacity(options.iterations as usize);
    let mut last = None;
    for _ in 0..options.iterations {
        let out = layer.forward(&inputs, &forward)?;
        times.push(slowest_rank_ms(&out));
        last = Some(out);
        progress(Progress::Forward);
    }
    let invalid =
        || BenchError::Options(format!("{}: the backend reported invalid times", case.name));
    let host_summary = TimeSummary::of(&times).ok_or_else(invalid)?;

    progress(Progress::Finish);
    let mut notes = Vec::new();
    if !first_check.passed() {
        notes.push(format!("first forward: {}", first_line(&first_check)));
    }
    let mut max_rel = first_check.max_rel;
    if let Some(last) = &last {
        let last_check = verify(last)?;
        max_rel = max_rel.max(last_check.max_rel);
        if !last_check.passed() {
            notes.push(format!("after timing: {}", first_line(&last_check)));
        }
        if let Some(rank) = differing_rank(&first, last) {
            notes.push(format!("rank {rank}'s output changed between forwards"));
        }
    }
    let (summary, host_path_median_ms) =
        match B::resident_times(&layer, config, &inputs, &first, options)? {
            Some((resident, same)) => {
                if !same {
                    notes.push(
                        "the device-resident forwards' output differs from the host path's".into(),
                    );
                }
                (TimeSummary::of(&resident).ok_or_else(invalid)?, Some(host_summary.median_ms))
            }
            None => (host_summary, None),
        };
    let traced = layer.forward(&inputs, &ForwardOptions { trace: true, ..forward })?;
    let events = conformance::check_forward(&layer, &traced).unwrap_or_else(|e| {
        notes.push(format!("the trace does not conform to the task graph: {e}"));
        Vec::new()
    });
    let protocol = protocol_stats(config, &traced, &events, B::processors_per_rank(&layer));
    let floor_ms = if B::ON_GPU {
        Some(perf::floor_ms(
            config,
            perf::experts_touched(config, first.ranks.iter().map(|r| &r.routing))?,
        ))
    } else {
        None
    };
    let flops = perf::layer_flops(config);
    Ok(Record {
        schema: SCHEMA.into(),
        implementation: B::implementation(&layer).into(),
        backend: backend.name().into(),
        device: backend.device(),
        world: config.world,
        config: LayerKey::of(config),
        iterations: options.iterations,
        median_ms: summary.median_ms,
        p10_ms: summary.p10_ms,
        p90_ms: summary.p90_ms,
        min_ms: summary.min_ms,
        max_ms: summary.max_ms,
        verified: notes.is_empty(),
        max_rel_err: max_rel.is_finite().then_some(max_rel),
        flops,
        tflops: crate::record::tflops(flops, summary.median_ms),
        timestamp: crate::record::timestamp(SystemTime::now()),
        seed: options.seed,
        floor_ms,
        notes: notes.join("; "),
        name: Some(case.name.clone()),
        protocol: Some(protocol),
        processes: None,
        ranks_per_process: None,
        kernel: layer.describe(),
        host_path_median_ms,
    })
}

/// Every row of a small layer, else a fresh sample per rank ([`Sample::sized_for`]).
fn verify_options(config: &MoeConfig, options: &RunOptions) -> VerifyOptions {
    VerifyOptions { sample: Sample::sized_for(config, options.verify_rows), tolerance: None }
}

/// The forward's time: its slowest rank's, in milliseconds.
fn slowest_rank_ms(out: &ForwardOutput) -> f64 {
    out.ranks.iter().map(|r| r.stats.elapsed.as_secs_f64() * 1e3).fold(0.0, f64::max)
}

/// A verification report's summary line (failures follow on further lines).
fn first_line(report: &VerifyReport) -> String {
    let text = report.to_string();
    let mut lines = text.lines();
    let head = lines.next().unwrap_or_default().to_owned();
    match lines.next() {
        Some(failure) => format!("{head}; {}", failure.trim()),
        None => head,
    }
}

/// The first rank whose output differs bitwise between two forwards of the same inputs.
fn differing_rank(a: &ForwardOutput, b: &ForwardOutput) -> Option<usize> {
    a.ranks.iter().zip(&b.ranks).position(|(x, y)| {
        x.output.len() != y.output.len()
            || x.output.iter().zip(&y.output).any(|(p, q)| p.to_bits() != q.to_bits())
    })
}

/// The protocol statistics of a forward, summed over its ranks; utilisation from its checked,
/// clock-aligned trace `events` (none when the trace did not conform).
pub fn protocol_stats(
    config: &MoeConfig,
    out: &ForwardOutput,
    events: &[TraceEvent],
    processors: u32,
) -> ProtocolStats {
    let mut s = ProtocolStats::default();
    for r in &out.ranks {
        s.gemm0_tasks += r.stats.tasks.gemm0;
        s.gemm1_tasks += r.stats.tasks.gemm1;
        s.combine_tasks += r.stats.tasks.combine;
        s.rows_sent += r.stats.rows_sent;
        s.bytes_sent += r.stats.bytes_sent;
        s.padded_bytes += r.stats.padded_bytes;
        s.dropped += r.stats.dropped;
    }
    if !events.is_empty() {
        s.utilisation = Some(trace::utilisation(events, config.world, processors).overall);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashdmoe_core::{CapacityPolicy, MoeConfig};
    use flashdmoe_sim::SimOptions;

    fn tiny(world: u32) -> Case {
        let config = MoeConfig {
            world,
            tokens_per_rank: 32,
            hidden: 64,
            inter: 128,
            experts: 4,
            capacity: CapacityPolicy::Dropless,
            ..MoeConfig::default()
        };
        Case { name: format!("tiny-p{world}"), config }
    }

    fn options(iterations: u32) -> RunOptions {
        RunOptions {
            iterations,
            warmup: 2,
            seed: 3,
            timeout: Duration::from_secs(30),
            verify_rows: 8,
        }
    }

    #[test]
    fn a_sim_case_is_timed_verified_and_labelled_simulation() {
        let backend = SimBackend::new(SimOptions::default());
        let mut events = Vec::new();
        let r = run_case(&backend, &tiny(2), &options(5), &mut |p| events.push(p)).unwrap();
        r.check().unwrap();
        assert_eq!((r.implementation.as_str(), r.backend.as_str()), ("flashdmoe-sim", "sim"));
        assert_eq!((r.device.as_str(), r.world, r.iterations), ("cpu", 2, 5));
        assert!(r.verified, "{}", r.notes);
        assert_eq!(r.floor_ms, None);
        assert!(!r.on_gpu() && r.percent_of_floor().is_none());
        // The simulator has no device-resident path: its times are the host path's own.
        assert_eq!(r.host_path_median_ms, None);
        assert_eq!(r.name.as_deref(), Some("tiny-p2"));
        // Dropless: every (token, slot) pair travels, nothing dropped; tasks from the graph.
        let p = r.protocol.unwrap();
        assert_eq!((p.rows_sent, p.dropped), (2 * 32 * 2, 0));
        assert!(p.gemm0_tasks > 0 && p.gemm1_tasks > 0 && p.combine_tasks > 0);
        assert!(p.bytes_sent <= p.padded_bytes);
        assert!(p.utilisation.is_some_and(|u| u > 0.0 && u <= 1.0));
        let forwards = events.iter().filter(|&&e| e == Progress::Forward).count();
        assert_eq!(forwards, 2 + 5);
        assert_eq!(events[..3], [Progress::Build, Progress::Layer, Progress::Verify]);
        assert_eq!(events.last(), Some(&Progress::Finish));
    }

    #[test]
    fn protocol_statistics_do_not_depend_on_timing() {
        let backend = SimBackend::new(SimOptions::default());
        let a = run_case(&backend, &tiny(1), &options(1), &mut |_| {}).unwrap();
        let b = run_case(&backend, &tiny(1), &options(3), &mut |_| {}).unwrap();
        let strip = |p: ProtocolStats| ProtocolStats { utilisation: None, ..p };
        assert_eq!(strip(a.protocol.unwrap()), strip(b.protocol.unwrap()));
    }

    #[test]
    fn an_invalid_case_is_an_error() {
        let backend = SimBackend::new(SimOptions::default());
        let mut case = tiny(1);
        case.config.hidden = 65;
        let err = run_case(&backend, &case, &options(1), &mut |_| {}).unwrap_err();
        assert!(matches!(err, BenchError::Config(_)), "{err}");
    }

    #[test]
    fn a_real_models_layer_runs_on_the_sim_and_its_record_describes_it() {
        let backend = SimBackend::new(SimOptions::default());
        let (_, config) =
            flashdmoe_core::config::presets::small_model_kinds(flashdmoe_core::DType::Bf16)
                .into_iter()
                .find(|(kind, _)| *kind == "deepseek-v3")
                .unwrap();
        let case = Case { name: "small-deepseek-v3".into(), config: config.clone() };
        let r = run_case(&backend, &case, &options(1), &mut |_| {}).unwrap();
        assert!(r.verified, "{}", r.notes);
        assert_eq!(r.config.config(1), config);
        let back = crate::record::parse_record(&r.to_json_line()).unwrap();
        assert_eq!(back, r);
        assert!(r.config.label().ends_with("sigmoid+sb g4/2t2 x2.5 shared1x64"));
    }

    #[test]
    fn the_cuda_backend_refuses_a_layer_it_does_not_compute_before_any_work() {
        // No GPU needed: the refusal comes before weights are generated or a device is used.
        // Shared experts run as routed experts every token visits: a capacity would drop them.
        let backend = CudaBackend::new(flashdmoe_cuda::CudaOptions::default());
        let config = MoeConfig {
            capacity: flashdmoe_core::CapacityPolicy::Factor(1.25),
            ..flashdmoe_core::config::presets::preset("deepseek-v3").unwrap()
        };
        let case = Case { name: "deepseek-v3-cf1.25".into(), config };
        let mut events = Vec::new();
        let err = run_case(&backend, &case, &options(1), &mut |p| events.push(p)).unwrap_err();
        assert!(
            matches!(err, BenchError::Backend(BackendError::InvalidInput { what: "capacity", .. })),
            "{err}"
        );
        assert!(err.to_string().contains("shared experts"), "{err}");
        assert!(events.is_empty());
    }

    #[test]
    fn sampling_starts_above_the_full_check_size() {
        let o = options(1);
        let mut c = tiny(1).config;
        c.tokens_per_rank = 8192;
        assert_eq!(verify_options(&c, &o).sample, Sample::All);
        c.world = 2;
        assert_eq!(verify_options(&c, &o).sample, Sample::Rows { per_rank: 8, seed: None });
    }
}
