//! Result records: one JSON object per line (JSONL), schema `flashdmoe-bench/1`.
//!
//! The schema is the PyTorch baselines' (`bench/baselines/common.py`, `RECORD_FIELDS`):
//!
//! `schema, impl, backend, device, world, config {tokens_per_rank, hidden, inter, experts,
//! top_k, activation, dtype, capacity (a factor or "dropless"), bias}, iterations, median_ms,
//! p10_ms, p90_ms, min_ms, max_ms, verified, max_rel_err (null if not finite), flops, tflops,
//! timestamp, seed, floor_ms, notes`
//!
//! Ours add two optional fields after them: `name` (the case name) and `protocol`
//! ([`ProtocolStats`]: tasks, rows, bytes and utilisation of the forward, the simulator's
//! figures of merit). Our `impl` is `flashdmoe-cuda` or `flashdmoe-sim`, `backend` `cuda` or
//! `sim`; a simulator record has `floor_ms: null` (a floor is a GPU's). Readers ignore fields
//! they do not know.
//!
//! Invariants (checked by [`Record::check`] on every record read or written): times are
//! milliseconds, finite, `min <= p10 <= median <= p90 <= max`; `flops` are per rank per
//! forward and `tflops = flops / median / 1e9` (units: FLOP, ms, TFLOP/s); `iterations >= 1`.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use flashdmoe_core::{Activation, CapacityPolicy, DType, MoeConfig};

/// The schema tag of every record.
pub const SCHEMA: &str = "flashdmoe-bench/1";

/// Our implementation names, by backend.
pub const IMPL_CUDA: &str = "flashdmoe-cuda";
/// See [`IMPL_CUDA`].
pub const IMPL_SIM: &str = "flashdmoe-sim";
/// Ours on the GPU with several ranks per GPU (virtual ranks): never compared with a
/// baseline, whose ranks each have a GPU of their own.
pub const IMPL_CUDA_VIRTUAL: &str = "flashdmoe-cuda-virtual";
/// The practical ceiling `torch_single.py --variants dense` records: the layer's GEMM FLOPs as
/// one dense cuBLAS pair. Not an MoE layer (it reads one weight set, not E), so it has no
/// percent of the layer's floor; its time is compared as a ceiling.
pub const IMPL_DENSE_CEILING: &str = "cublas-dense";

/// The `config` object of a record: the layer shape and policies a comparison must agree on.
/// The world size is the record's `world`; renormalisation and placement are not part of the
/// schema (the baselines always renormalise and place contiguously).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawLayer", into = "RawLayer")]
pub struct LayerKey {
    /// Tokens per rank T.
    pub tokens_per_rank: u32,
    /// Hidden size H.
    pub hidden: u32,
    /// Expert intermediate size I.
    pub inter: u32,
    /// Experts E.
    pub experts: u32,
    /// Experts per token k.
    pub top_k: u32,
    /// Expert activation.
    pub activation: Activation,
    /// Element type.
    pub dtype: DType,
    /// Capacity policy.
    pub capacity: CapacityPolicy,
    /// Biases on the expert projections.
    pub bias: bool,
}

impl LayerKey {
    /// The key of `config`.
    pub fn of(config: &MoeConfig) -> LayerKey {
        LayerKey {
            tokens_per_rank: config.tokens_per_rank,
            hidden: config.hidden,
            inter: config.inter,
            experts: config.experts,
            top_k: config.top_k,
            activation: config.activation,
            dtype: config.dtype,
            capacity: config.capacity,
            bias: config.bias,
        }
    }

    /// The layer on `world` ranks with core's defaults for what the key does not hold
    /// (renormalised weights, contiguous placement).
    pub fn config(&self, world: u32) -> MoeConfig {
        MoeConfig {
            world,
            tokens_per_rank: self.tokens_per_rank,
            hidden: self.hidden,
            inter: self.inter,
            experts: self.experts,
            top_k: self.top_k,
            activation: self.activation,
            bias: self.bias,
            dtype: self.dtype,
            capacity: self.capacity,
            ..MoeConfig::default()
        }
    }

    /// `T16384 H2048 I2048 E8 k2 relu bf16 cf1`: the baselines' label of the same layer, so the
    /// label identifies a layer in joins and tables.
    pub fn label(&self) -> String {
        let cap = match self.capacity {
            CapacityPolicy::Dropless => "dropless".to_owned(),
            CapacityPolicy::Factor(f) => format!("cf{f}"),
        };
        format!(
            "T{} H{} I{} E{} k{} {}{} {} {cap}",
            self.tokens_per_rank,
            self.hidden,
            self.inter,
            self.experts,
            self.top_k,
            self.activation,
            if self.bias { "+bias" } else { "" },
            self.dtype
        )
    }
}

impl fmt::Display for LayerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// The JSON form of [`LayerKey`] (names for the enums, `"dropless"` or a number for the
/// capacity).
#[derive(Serialize, Deserialize)]
struct RawLayer {
    tokens_per_rank: u32,
    hidden: u32,
    inter: u32,
    experts: u32,
    top_k: u32,
    activation: String,
    dtype: String,
    capacity: RawCapacity,
    bias: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawCapacity {
    Factor(f64),
    Name(String),
}

impl TryFrom<RawLayer> for LayerKey {
    type Error = String;

    fn try_from(r: RawLayer) -> Result<LayerKey, String> {
        let capacity = match r.capacity {
            RawCapacity::Factor(f) if f.is_finite() && f > 0.0 => CapacityPolicy::Factor(f),
            RawCapacity::Factor(f) => return Err(format!("capacity {f} must be > 0")),
            RawCapacity::Name(n) if n == "dropless" => CapacityPolicy::Dropless,
            RawCapacity::Name(n) => {
                return Err(format!("capacity {n:?} is neither a factor nor \"dropless\""));
            }
        };
        Ok(LayerKey {
            tokens_per_rank: r.tokens_per_rank,
            hidden: r.hidden,
            inter: r.inter,
            experts: r.experts,
            top_k: r.top_k,
            activation: r.activation.parse().map_err(|e| format!("{e}"))?,
            dtype: r.dtype.parse().map_err(|e| format!("{e}"))?,
            capacity,
            bias: r.bias,
        })
    }
}

impl From<LayerKey> for RawLayer {
    fn from(k: LayerKey) -> RawLayer {
        RawLayer {
            tokens_per_rank: k.tokens_per_rank,
            hidden: k.hidden,
            inter: k.inter,
            experts: k.experts,
            top_k: k.top_k,
            activation: k.activation.name().to_owned(),
            dtype: k.dtype.name().to_owned(),
            capacity: match k.capacity {
                CapacityPolicy::Dropless => RawCapacity::Name("dropless".into()),
                CapacityPolicy::Factor(f) => RawCapacity::Factor(f),
            },
            bias: k.bias,
        }
    }
}

/// What one forward did, summed over the ranks (ours only): the protocol's figures, which
/// the simulator reproduces exactly, so they catch protocol regressions there.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProtocolStats {
    /// GEMM0 tasks executed.
    pub gemm0_tasks: u64,
    /// GEMM1 tasks executed.
    pub gemm1_tasks: u64,
    /// Combine tasks executed.
    pub combine_tasks: u64,
    /// Token rows dispatched.
    pub rows_sent: u64,
    /// Bytes put into peers' heaps (dispatched and returned rows).
    pub bytes_sent: u64,
    /// Bytes a capacity-padded protocol would have sent.
    pub padded_bytes: u64,
    /// `(token, slot)` pairs dropped for capacity.
    pub dropped: u64,
    /// Processors' busy time over the traced forward's task phase (0..1), when traced.
    pub utilisation: Option<f64>,
}

/// One result (module doc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// Implementation, e.g. `flashdmoe-cuda`, `torch-grouped-graph`.
    #[serde(rename = "impl")]
    pub implementation: String,
    /// `cuda`, `sim` (ours) or `torch` (baselines).
    pub backend: String,
    /// GPU name, or `cpu`.
    pub device: String,
    /// Ranks P.
    pub world: u32,
    /// The layer.
    pub config: LayerKey,
    /// Timed iterations.
    pub iterations: u32,
    /// Median time of one forward (ms).
    pub median_ms: f64,
    /// 10th percentile (ms).
    pub p10_ms: f64,
    /// 90th percentile (ms).
    pub p90_ms: f64,
    /// Fastest (ms).
    pub min_ms: f64,
    /// Slowest (ms).
    pub max_ms: f64,
    /// Whether the output was verified in the same run.
    pub verified: bool,
    /// Largest relative error found by the verification (`null` if not finite).
    pub max_rel_err: Option<f64>,
    /// Nominal FLOPs of one forward per rank.
    pub flops: f64,
    /// `flops / median` in TFLOP/s.
    pub tflops: f64,
    /// When the result was measured, ISO 8601 UTC (`2026-11-28T10:24:41+00:00`).
    pub timestamp: String,
    /// Seed of the generated weights and inputs.
    pub seed: u64,
    /// The floor of docs/performance.md (ms); `null` for the simulator.
    pub floor_ms: Option<f64>,
    /// Why a result is not verified, or anything else a reader must know.
    pub notes: String,
    /// The case name (ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the forward did (ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<ProtocolStats>,
}

impl Record {
    /// Whether this is one of ours (as opposed to a baseline's).
    pub fn is_ours(&self) -> bool {
        [IMPL_CUDA, IMPL_SIM, IMPL_CUDA_VIRTUAL].contains(&self.implementation.as_str())
    }

    /// Whether the time was measured on a GPU (not the simulator, not a CPU baseline): only
    /// such records are compared with each other or with a floor.
    pub fn on_gpu(&self) -> bool {
        self.backend != "sim" && self.device != "cpu"
    }

    /// Whether this is the dense-pair ceiling ([`IMPL_DENSE_CEILING`]), not a layer.
    pub fn is_ceiling(&self) -> bool {
        self.implementation == IMPL_DENSE_CEILING
    }

    /// `floor / median` as a percentage, for GPU records of a layer with a floor (not the
    /// ceiling: its work is not the layer's).
    pub fn percent_of_floor(&self) -> Option<f64> {
        self.floor_ms
            .filter(|_| self.on_gpu() && !self.is_ceiling())
            .map(|f| 100.0 * f / self.median_ms)
    }

    /// Checks the module's invariants.
    pub fn check(&self) -> Result<(), String> {
        if self.schema != SCHEMA {
            return Err(format!("schema {:?}, expected {SCHEMA:?}", self.schema));
        }
        if self.implementation.is_empty() || self.backend.is_empty() {
            return Err("impl and backend must not be empty".into());
        }
        if self.iterations == 0 || self.world == 0 {
            return Err("iterations and world must be >= 1".into());
        }
        let times = [self.min_ms, self.p10_ms, self.median_ms, self.p90_ms, self.max_ms];
        if times.iter().any(|t| !(t.is_finite() && *t > 0.0)) {
            return Err(format!("times must be finite and > 0 ms: {times:?}"));
        }
        if times.windows(2).any(|w| w[0] > w[1]) {
            return Err(format!("expected min <= p10 <= median <= p90 <= max: {times:?}"));
        }
        if !(self.flops.is_finite() && self.flops > 0.0) {
            return Err(format!("flops {} must be finite and > 0", self.flops));
        }
        let tflops = self.flops / self.median_ms / 1e9;
        if (self.tflops - tflops).abs() > 1e-6 * tflops {
            return Err(format!(
                "tflops {} is not flops / median ({tflops}): are the times in ms?",
                self.tflops
            ));
        }
        if let Some(f) = self.floor_ms
            && !(f.is_finite() && f > 0.0)
        {
            return Err(format!("floor_ms {f} must be finite and > 0"));
        }
        Ok(())
    }

    /// The record as one line of JSON (no newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self)
            .expect("a record always serialises (no maps with non-string keys)")
    }
}

/// `flops / median_ms` in TFLOP/s.
pub fn tflops(flops: f64, median_ms: f64) -> f64 {
    flops / median_ms / 1e9
}

/// The non-blank lines of JSONL text, with their 1-based line numbers.
pub fn jsonl_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(|(i, l)| (i + 1, l))
}

/// One JSON line as a [`Record::check`]ed record.
pub fn parse_record(line: &str) -> Result<Record, String> {
    let record: Record = serde_json::from_str(line).map_err(|e| e.to_string())?;
    record.check()?;
    Ok(record)
}

/// Parses JSONL text (blank lines skipped); each record is [`Record::check`]ed. `source`
/// names the text in errors.
pub fn parse_jsonl(text: &str, source: &str) -> Result<Vec<Record>, BenchError> {
    jsonl_lines(text)
        .map(|(line, json)| {
            parse_record(json).map_err(|message| BenchError::Record {
                source_name: source.to_owned(),
                line,
                message,
            })
        })
        .collect()
}

/// `records` as JSONL text, one line each, newline-terminated.
pub fn to_jsonl(records: &[Record]) -> String {
    records.iter().map(|r| r.to_json_line() + "\n").collect()
}

/// `time` as ISO 8601 UTC with second precision and a `+00:00` offset (the baselines'
/// format); times before 1970 are clamped to the epoch.
pub fn timestamp(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+00:00", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The proleptic Gregorian `(year, month, day)` of `days` since 1970-01-01 (H. Hinnant's
/// `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use flashdmoe_core::config::presets;

    /// A baseline record exactly as `common.py` wrote it in the recorded run 5
    /// (`docs/dev/gpu-runs/2026-11-28-run5-torch-single.jsonl`, T16384 E8 graph).
    pub(crate) const TORCH_LINE: &str = r#"{"schema": "flashdmoe-bench/1", "impl": "torch-grouped-graph", "backend": "torch", "device": "NVIDIA H200", "world": 1, "config": {"tokens_per_rank": 16384, "hidden": 2048, "inter": 2048, "experts": 8, "top_k": 2, "activation": "relu", "dtype": "bf16", "capacity": 1.0, "bias": false}, "iterations": 20, "median_ms": 1.475167989730835, "p10_ms": 1.4731199741363525, "p90_ms": 1.4785824060440063, "min_ms": 1.472000002861023, "max_ms": 1.486624002456665, "verified": true, "max_rel_err": 0.008982035928143712, "flops": 550292684800.0, "tflops": 373.0373005859547, "timestamp": "2026-11-28T10:24:41+00:00", "seed": 0, "floor_ms": 0.6965730187341772, "notes": ""}"#;

    /// A record of ours for tests: `median_ms` on the paper T16384 E8 layer.
    pub(crate) fn ours(median_ms: f64, backend: &str) -> Record {
        let config = presets::paper(16384, 8);
        let flops = flashdmoe_core::perf::layer_flops(&config);
        Record {
            schema: SCHEMA.into(),
            implementation: if backend == "sim" { IMPL_SIM } else { IMPL_CUDA }.into(),
            backend: backend.into(),
            device: if backend == "sim" { "cpu" } else { "NVIDIA H200" }.into(),
            world: 1,
            config: LayerKey::of(&config),
            iterations: 10,
            median_ms,
            p10_ms: median_ms * 0.99,
            p90_ms: median_ms * 1.01,
            min_ms: median_ms * 0.98,
            max_ms: median_ms * 1.02,
            verified: true,
            max_rel_err: Some(6e-3),
            flops,
            tflops: tflops(flops, median_ms),
            timestamp: "2026-11-28T10:00:00+00:00".into(),
            seed: 0,
            floor_ms: (backend != "sim").then(|| flashdmoe_core::perf::floor_ms(&config, 8)),
            notes: String::new(),
            name: Some("paper-t16384-e8-cf1".into()),
            protocol: Some(ProtocolStats { gemm0_tasks: 4, ..ProtocolStats::default() }),
        }
    }

    #[test]
    fn reads_the_baselines_records() {
        let r = &parse_jsonl(TORCH_LINE, "run5").unwrap()[0];
        assert_eq!(r.implementation, "torch-grouped-graph");
        assert!(!r.is_ours() && r.on_gpu());
        assert_eq!(r.config, LayerKey::of(&presets::paper(16384, 8)));
        assert_eq!(r.config.label(), "T16384 H2048 I2048 E8 k2 relu bf16 cf1");
        // The floor the baseline recorded is core's.
        let floor = flashdmoe_core::perf::floor_ms(&r.config.config(1), 8);
        assert!((r.floor_ms.unwrap() - floor).abs() < 1e-12);
        assert!((r.percent_of_floor().unwrap() - 47.22).abs() < 0.01);
        assert_eq!(r.name, None);
    }

    #[test]
    fn our_records_round_trip_in_the_baselines_field_order() {
        let r = ours(1.954, "cuda");
        r.check().unwrap();
        let line = r.to_json_line();
        assert!(!line.contains('\n'));
        let fields: Vec<&str> = [
            "schema",
            "impl",
            "backend",
            "device",
            "world",
            "config",
            "iterations",
            "median_ms",
            "p10_ms",
            "p90_ms",
            "min_ms",
            "max_ms",
            "verified",
            "max_rel_err",
            "flops",
            "tflops",
            "timestamp",
            "seed",
            "floor_ms",
            "notes",
            "name",
            "protocol",
        ]
        .into();
        let positions: Vec<usize> =
            fields.iter().map(|f| line.find(&format!("\"{f}\":")).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{line}");
        assert!(line.contains(r#""capacity":1.0"#) && line.contains(r#""activation":"relu""#));
        assert_eq!(parse_jsonl(&to_jsonl(&[r.clone(), r.clone()]), "x").unwrap(), [r.clone(), r]);
        let mut dropless = ours(2.0, "sim");
        dropless.config.capacity = CapacityPolicy::Dropless;
        dropless.config.activation = Activation::SiluGated;
        let line = dropless.to_json_line();
        assert!(line.contains(r#""capacity":"dropless""#) && line.contains(r#""floor_ms":null"#));
        assert!(line.contains(r#""activation":"swiglu""#));
        assert_eq!(parse_jsonl(&line, "x").unwrap()[0], dropless);
        assert_eq!(dropless.percent_of_floor(), None);
    }

    #[test]
    fn units_and_order_are_checked() {
        let good = ours(2.0, "cuda");
        let mut seconds = good.clone();
        // Times in seconds while flops/tflops assume ms: the units check catches it.
        for t in [
            &mut seconds.median_ms,
            &mut seconds.p10_ms,
            &mut seconds.p90_ms,
            &mut seconds.min_ms,
            &mut seconds.max_ms,
        ] {
            *t /= 1e3;
        }
        assert!(seconds.check().unwrap_err().contains("ms"));
        let mut unordered = good.clone();
        unordered.p10_ms = unordered.p90_ms * 2.0;
        assert!(unordered.check().is_err());
        let mut nan = good.clone();
        nan.max_ms = f64::NAN;
        assert!(nan.check().is_err());
        let mut schema = good.clone();
        schema.schema = "flashdmoe-bench/0".into();
        assert!(schema.check().unwrap_err().contains("schema"));
        let mut zero = good.clone();
        zero.iterations = 0;
        assert!(zero.check().is_err());
        let mut floor = good;
        floor.floor_ms = Some(-1.0);
        assert!(floor.check().is_err());
    }

    #[test]
    fn bad_lines_name_their_source_and_line() {
        let bad_capacity = TORCH_LINE.replace(r#""capacity": 1.0"#, r#""capacity": "none""#);
        let bad_dtype = TORCH_LINE.replace(r#""dtype": "bf16""#, r#""dtype": "int8""#);
        let missing = TORCH_LINE.replace(r#""median_ms": 1.475167989730835, "#, "");
        for (line, needle) in [
            (bad_capacity.as_str(), "capacity"),
            (bad_dtype.as_str(), "int8"),
            (missing.as_str(), "median_ms"),
            ("{", "EOF"),
        ] {
            let text = format!("{TORCH_LINE}\n\n{line}\n");
            match parse_jsonl(&text, "f.jsonl") {
                Err(BenchError::Record { source_name, line, message }) => {
                    assert_eq!((source_name.as_str(), line), ("f.jsonl", 3));
                    assert!(message.contains(needle), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn timestamps_are_utc_iso_8601() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00+00:00");
        // 2026-11-28T10:24:41Z, the recorded run's, and a leap day.
        let t = UNIX_EPOCH + Duration::from_secs(1_795_861_481);
        assert_eq!(timestamp(t), "2026-11-28T10:24:41+00:00");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00+00:00");
    }

    #[test]
    fn the_dense_ceiling_has_no_percent_of_the_layer_floor() {
        let mut r = parse_jsonl(TORCH_LINE, "run5").unwrap().remove(0);
        assert!(r.percent_of_floor().is_some());
        r.implementation = IMPL_DENSE_CEILING.into();
        assert!(r.is_ceiling());
        assert_eq!(r.percent_of_floor(), None);
    }
}
