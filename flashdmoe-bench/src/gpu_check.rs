//! What the GPU check (`src/bin/gpu-check/main.rs`) finds, and the results line it writes for it.
//!
//! The GPU check runs its cases on the CUDA backend and describes each by an [`Outcome`];
//! [`Outcome::into_line`] turns it into one line of a results file: a timed check becomes a
//! measurement record (`flashdmoe-bench/1`, the harness's own, with `verified` the check's
//! verdict), any other check a check record (`flashdmoe-check/1`). So `flashdmoe report` reads
//! the GPU check's results like any other, by their schema, never by their names.

use flashdmoe_core::MoeConfig;
use flashdmoe_core::perf::{self, TimeSummary};

use crate::check::{CHECK_SCHEMA, CheckRecord};
use crate::record::{LayerKey, ProtocolStats, Record, SCHEMA, tflops};
use crate::results::Line;

/// A digest of a forward's outputs (every rank's, in rank order): FNV-1a over each element's
/// f32 bits. The check's inputs and weights come from fixed seeds, so two builds of the kernel
/// that print the same digest for a case wrote the same output bits, to the last bit (the
/// oracle's tolerance cannot say that: perf-notes v32 compares builds this way).
pub fn output_digest<'a>(outputs: impl IntoIterator<Item = &'a [f32]>) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for out in outputs {
        for x in out {
            for byte in x.to_bits().to_le_bytes() {
                h = (h ^ u64::from(byte)).wrapping_mul(PRIME);
            }
        }
    }
    h
}

/// What one check found.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The check's name, e.g. `paper-t16384-e8`.
    pub name: String,
    /// The layer it ran.
    pub config: MoeConfig,
    /// `flashdmoe-cuda`, or `flashdmoe-cuda-virtual` with several ranks per GPU.
    pub implementation: &'static str,
    /// The GPU's name.
    pub device: String,
    /// The verdict.
    pub passed: bool,
    /// What it found, in words (the line the check prints).
    pub detail: String,
    /// Largest relative error the oracle found, when it verified an output.
    pub max_rel_err: Option<f64>,
    /// What its forward did, when one ran.
    pub protocol: Option<ProtocolStats>,
    /// Its timings, when it was timed.
    pub timing: Option<Timing>,
    /// Seed of the generated weights.
    pub seed: u64,
    /// When it ran, ISO 8601 UTC ([`crate::record::timestamp`]).
    pub timestamp: String,
}

/// The timings of a timed check.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// Timed forwards.
    pub iterations: u32,
    /// Their summary (ms).
    pub times: TimeSummary,
    /// The floor of the experts the forward touched (ms, core's `perf`).
    pub floor_ms: f64,
    /// The host path's median (ms) when `times` are of device-resident forwards
    /// ([`Record::host_path_median_ms`]).
    pub host_path_median_ms: Option<f64>,
}

impl Outcome {
    /// The results line of this outcome (module doc), checked like any line read back; an
    /// error says which field is wrong.
    pub fn into_line(self) -> Result<Line, String> {
        let world = self.config.world;
        let config = LayerKey::of(&self.config);
        let line = match self.timing {
            Some(timing) => {
                let flops = perf::layer_flops(&self.config);
                let t = timing.times;
                let record = Record {
                    schema: SCHEMA.into(),
                    implementation: self.implementation.into(),
                    backend: "cuda".into(),
                    device: self.device,
                    world,
                    config,
                    iterations: timing.iterations,
                    median_ms: t.median_ms,
                    p10_ms: t.p10_ms,
                    p90_ms: t.p90_ms,
                    min_ms: t.min_ms,
                    max_ms: t.max_ms,
                    verified: self.passed,
                    max_rel_err: self.max_rel_err.filter(|e| e.is_finite()),
                    flops,
                    tflops: tflops(flops, t.median_ms),
                    timestamp: self.timestamp,
                    seed: self.seed,
                    floor_ms: Some(timing.floor_ms),
                    notes: self.detail,
                    name: Some(self.name),
                    protocol: self.protocol,
                    processes: None,
                    ranks_per_process: None,
                    kernel: None,
                    host_path_median_ms: timing.host_path_median_ms,
                };
                record.check().map_err(|e| format!("{}: {e}", record_name(&record)))?;
                Line::Measurement(record)
            }
            None => {
                let record = CheckRecord {
                    schema: CHECK_SCHEMA.into(),
                    implementation: self.implementation.into(),
                    backend: "cuda".into(),
                    device: self.device,
                    world,
                    config,
                    name: self.name,
                    passed: self.passed,
                    max_rel_err: self.max_rel_err.filter(|e| e.is_finite()),
                    timestamp: self.timestamp,
                    seed: self.seed,
                    notes: self.detail,
                    protocol: self.protocol,
                };
                record.check().map_err(|e| format!("{}: {e}", record.name))?;
                Line::Check(record)
            }
        };
        Ok(line)
    }
}

fn record_name(r: &Record) -> &str {
    r.name.as_deref().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{IMPL_CUDA, IMPL_CUDA_VIRTUAL};
    use crate::results::{Results, to_jsonl};
    use flashdmoe_core::config::presets;

    fn outcome(name: &str, timing: Option<Timing>) -> Outcome {
        Outcome {
            name: name.into(),
            config: presets::paper(16384, 8),
            implementation: IMPL_CUDA,
            device: "NVIDIA H200".into(),
            passed: true,
            detail: "PASS: 64/16384 rows checked; trace conforms".into(),
            max_rel_err: Some(6.1e-3),
            protocol: Some(ProtocolStats { gemm0_tasks: 2048, ..ProtocolStats::default() }),
            timing,
            seed: 7,
            timestamp: "2026-11-28T10:24:41+00:00".into(),
        }
    }

    /// Run 5's paper-t16384-e8 timings (`docs/dev/gpu-runs/2026-11-28-run5-gpu-check.jsonl`).
    fn run5_timing() -> Timing {
        let times = TimeSummary {
            median_ms: 1.954368,
            p10_ms: 1.949824,
            p90_ms: 1.96128,
            min_ms: 1.948,
            max_ms: 1.97,
        };
        Timing { iterations: 15, times, floor_ms: 0.6965730187341772, host_path_median_ms: None }
    }

    #[test]
    fn a_timed_check_is_a_measurement_record_of_the_harness() {
        let Line::Measurement(r) =
            outcome("paper-t16384-e8", Some(run5_timing())).into_line().unwrap()
        else {
            panic!("a timed check is a measurement");
        };
        assert_eq!(
            (r.implementation.as_str(), r.backend.as_str(), r.world),
            (IMPL_CUDA, "cuda", 1)
        );
        assert_eq!(r.config.label(), "T16384 H2048 I2048 E8 k2 relu bf16 cf1");
        assert_eq!((r.iterations, r.median_ms, r.min_ms), (15, 1.954368, 1.948));
        assert!(r.verified && r.on_gpu() && r.is_ours());
        // The floor and the FLOPs are core's, as the harness's runner records them.
        assert_eq!(r.flops, perf::layer_flops(&presets::paper(16384, 8)));
        assert!((r.percent_of_floor().unwrap() - 35.64).abs() < 0.01);
        assert_eq!(r.name.as_deref(), Some("paper-t16384-e8"));
        assert_eq!(r.protocol.as_ref().map(|p| p.gemm0_tasks), Some(2048));
        assert!(r.notes.starts_with("PASS"));
    }

    #[test]
    fn an_untimed_or_failed_check_is_a_check_record() {
        let mut failed = outcome("multi-GPU P=2 skewed", None);
        failed.config.world = 2;
        failed.implementation = IMPL_CUDA_VIRTUAL;
        failed.passed = false;
        failed.detail = "forward: device error".into();
        failed.max_rel_err = Some(f64::NAN);
        failed.protocol = None;
        let Line::Check(c) = failed.into_line().unwrap() else {
            panic!("an untimed check is a check record");
        };
        assert_eq!((c.name.as_str(), c.world, c.passed), ("multi-GPU P=2 skewed", 2, false));
        assert_eq!((c.implementation.as_str(), c.max_rel_err), (IMPL_CUDA_VIRTUAL, None));
        assert_eq!(c.summary(), "forward: device error");
    }

    #[test]
    fn lines_read_back_as_they_were_written() {
        let lines: Vec<Line> = [outcome("small", None), outcome("timed", Some(run5_timing()))]
            .into_iter()
            .map(|o| o.into_line().unwrap())
            .collect();
        let mut results = Results::default();
        results.parse(&to_jsonl(&lines), "gpu-check.jsonl").unwrap();
        assert_eq!((results.checks.len(), results.measurements.len()), (1, 1));
        assert_eq!(Line::Check(results.checks[0].value.clone()), lines[0]);
        assert_eq!(Line::Measurement(results.measurements[0].value.clone()), lines[1]);
    }

    #[test]
    fn a_time_the_schema_cannot_hold_is_an_error_naming_the_field() {
        let mut timing = run5_timing();
        timing.times.min_ms = 0.0;
        let err = outcome("zero", Some(timing)).into_line().unwrap_err();
        assert!(err.starts_with("zero: times must be finite and > 0 ms"), "{err}");
        let mut timing = run5_timing();
        timing.floor_ms = f64::INFINITY;
        let err = outcome("floor", Some(timing)).into_line().unwrap_err();
        assert!(err.contains("floor_ms"), "{err}");
    }

    #[test]
    fn the_output_digest_tells_one_bit_apart_and_is_stable() {
        let a = [1.0f32, -0.0, 3.5];
        let b = [1.0f32, 0.0, 3.5]; // -0 and +0: equal values, other bits
        assert_ne!(output_digest([&a[..]]), output_digest([&b[..]]));
        assert_eq!(output_digest([&a[..]]), output_digest([&a[..]]));
        // The ranks' order counts, and the digest is FNV-1a's (pinned: a later build must
        // print the same digest for the same bits).
        assert_ne!(output_digest([&a[..], &b[..]]), output_digest([&b[..], &a[..]]));
        assert_eq!(output_digest(std::iter::empty::<&[f32]>()), 0xcbf2_9ce4_8422_2325);
        assert_eq!(output_digest([&[0.0f32][..]]), 0x4d25_767f_9dce_13f5);
    }
}
