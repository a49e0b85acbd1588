//! Reading result files for the report: JSONL of `flashdmoe-bench/1` records, and the JSONL
//! the GPU check writes (`flashdmoe-cuda/examples/gpu-check.rs --json`), detected per line.
//!
//! A GPU-check row (`{"check", "ok", "median_ms", "p10_ms", "p90_ms", "floor_ms", "detail"}`)
//! names its layer only by the check's name; this module maps the timed names to layers:
//!
//! * `paper-t<T>-e<E>` (capacity factor 1), with ` dropless` and/or ` tf32` (dtype `f32`);
//! * `preset <NAME>`: core's preset (model presets run 4096 tokens);
//! * `weak P=<P> t<T>-e<E>` (world P, the paper layer) and `weak P=<P> virtual t<T>-e<E>`
//!   (world P as virtual ranks on one GPU: impl `flashdmoe-cuda-virtual`).
//!
//! Rows without a time (the correctness checks) and timed rows with another name are
//! skipped, and the skip is reported. The mapping is checked against the floor the row
//! recorded: it must lie between the layer's compute floor and its floor with every expert
//! touched, so a misread layer (say, half the tokens) is an error, not a wrong plot. Such rows
//! carry no device, timestamp or iteration count (the GPU check did not record them).

use std::path::Path;

use serde_json::Value;

use crate::BenchError;
use crate::record::{
    IMPL_CUDA, IMPL_CUDA_VIRTUAL, LayerKey, ProtocolStats, Record, jsonl_lines, parse_record,
};
use flashdmoe_core::config::presets;
use flashdmoe_core::perf;
use flashdmoe_core::{CapacityPolicy, DType, MoeConfig};

/// One timed result, from either format: what the report draws.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    /// File name the result came from.
    pub source: String,
    /// Implementation (`flashdmoe-cuda`, `torch-grouped-graph`, ...).
    pub implementation: String,
    /// `cuda`, `sim` or `torch`.
    pub backend: String,
    /// GPU name or `cpu`; `None` when the file did not record it.
    pub device: Option<String>,
    /// Ranks.
    pub world: u32,
    /// The layer.
    pub layer: LayerKey,
    /// Median (ms).
    pub median_ms: f64,
    /// 10th percentile (ms).
    pub p10_ms: f64,
    /// 90th percentile (ms).
    pub p90_ms: f64,
    /// The PERF.md floor (ms), when recorded.
    pub floor_ms: Option<f64>,
    /// Verified in the run that timed it.
    pub verified: bool,
    /// When, if recorded.
    pub timestamp: Option<String>,
    /// Case name, if any.
    pub name: Option<String>,
    /// Protocol statistics (ours, from `flashdmoe bench`).
    pub protocol: Option<ProtocolStats>,
}

impl Measurement {
    /// Ours (as opposed to a baseline's).
    pub fn is_ours(&self) -> bool {
        self.implementation.starts_with("flashdmoe-")
    }

    /// Timed on a GPU (see [`Record::on_gpu`]).
    pub fn on_gpu(&self) -> bool {
        self.backend != "sim" && self.device.as_deref() != Some("cpu")
    }

    /// `floor / median` in percent, for GPU results with a floor.
    pub fn percent_of_floor(&self) -> Option<f64> {
        self.floor_ms.filter(|_| self.on_gpu()).map(|f| 100.0 * f / self.median_ms)
    }

    fn of_record(r: Record, source: &str) -> Measurement {
        Measurement {
            source: source.to_owned(),
            implementation: r.implementation,
            backend: r.backend,
            device: Some(r.device),
            world: r.world,
            layer: r.config,
            median_ms: r.median_ms,
            p10_ms: r.p10_ms,
            p90_ms: r.p90_ms,
            floor_ms: r.floor_ms,
            verified: r.verified,
            timestamp: Some(r.timestamp),
            name: r.name,
            protocol: r.protocol,
        }
    }
}

/// The results of some files, and what was skipped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Loaded {
    /// Timed results, in file and line order.
    pub measurements: Vec<Measurement>,
    /// `file:line: why` for each skipped GPU-check row.
    pub skipped: Vec<String>,
}

/// Reads one file (module doc).
pub fn load(path: &Path, into: &mut Loaded) -> Result<(), BenchError> {
    let text = std::fs::read_to_string(path).map_err(|e| BenchError::io(path, e))?;
    let source = path
        .file_name()
        .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    parse(&text, &source, into)
}

/// Parses one file's text; `source` names it.
pub fn parse(text: &str, source: &str, into: &mut Loaded) -> Result<(), BenchError> {
    for (line, json) in jsonl_lines(text) {
        let error =
            |message: String| BenchError::Record { source_name: source.to_owned(), line, message };
        let value: Value = serde_json::from_str(json).map_err(|e| error(e.to_string()))?;
        if value.get("schema").is_some() {
            let record = parse_record(json).map_err(error)?;
            into.measurements.push(Measurement::of_record(record, source));
        } else if value.get("check").is_some() {
            match gpu_check_row(&value, source).map_err(error)? {
                Ok(m) => into.measurements.push(m),
                Err(why) => into.skipped.push(format!("{source}:{line}: {why}")),
            }
        } else {
            return Err(error("neither a flashdmoe-bench record nor a gpu-check row".into()));
        }
    }
    Ok(())
}

/// A GPU-check row as a measurement (`Ok(Ok)`), a row to skip (`Ok(Err(why))`), or a
/// malformed row (`Err`).
fn gpu_check_row(v: &Value, source: &str) -> Result<Result<Measurement, String>, String> {
    let check = v["check"].as_str().ok_or("`check` is not a string")?;
    let number = |key: &str| -> Result<Option<f64>, String> {
        match &v[key] {
            Value::Null => Ok(None),
            x => x
                .as_f64()
                .filter(|t| t.is_finite() && *t > 0.0)
                .map(Some)
                .ok_or_else(|| format!("{key} {x} is not a positive number")),
        }
    };
    let detail = v["detail"].as_str().unwrap_or_default();
    let Some(median) = number("median_ms")? else {
        return Ok(Err(match v["ok"].as_bool() {
            Some(false) => {
                let brief: String = detail.chars().take(120).collect();
                format!("{check:?}: failed in that run ({brief})")
            }
            _ => format!("{check:?}: not timed"),
        }));
    };
    let (p10, p90, floor) = match (number("p10_ms")?, number("p90_ms")?, number("floor_ms")?) {
        (Some(a), Some(b), Some(f)) if a <= median && median <= b => (a, b, f),
        _ => return Err(format!("{check:?}: expected p10 <= median <= p90 and a floor")),
    };
    let Some((world, config, implementation)) = layer_of_check(check) else {
        return Ok(Err(format!("{check:?}: not a layer this reader knows")));
    };
    let compute = perf::floor_ms(&config, 0);
    let widest = perf::floor_ms(&config, config.experts);
    if !(compute * (1.0 - 1e-6) <= floor && floor <= widest * (1.0 + 1e-6)) {
        return Err(format!(
            "{check:?}: recorded floor {floor} ms is not this layer's ({compute}..{widest} ms): \
             the name does not mean {}",
            LayerKey::of(&config)
        ));
    }
    let ok = v["ok"].as_bool().ok_or("`ok` is not a bool")?;
    Ok(Ok(Measurement {
        source: source.to_owned(),
        implementation: implementation.to_owned(),
        backend: "cuda".into(),
        device: None,
        world,
        layer: LayerKey::of(&config),
        median_ms: median,
        p10_ms: p10,
        p90_ms: p90,
        floor_ms: Some(floor),
        verified: ok && detail.starts_with("PASS"),
        timestamp: None,
        name: Some(check.to_owned()),
        protocol: None,
    }))
}

/// The world, layer and implementation a GPU-check name stands for (module doc).
fn layer_of_check(check: &str) -> Option<(u32, MoeConfig, &'static str)> {
    if let Some(name) = check.strip_prefix("preset ") {
        return presets::preset(name).ok().map(|c| (1, c, IMPL_CUDA));
    }
    if let Some(rest) = check.strip_prefix("weak P=") {
        let (p, rest) = rest.split_once(' ')?;
        let (virtual_ranks, shape) = match rest.strip_prefix("virtual ") {
            Some(shape) => (true, shape),
            None => (false, rest),
        };
        let (t, e) = paper_shape(shape)?;
        let world: u32 = p.parse().ok().filter(|&p| p > 0)?;
        let config = MoeConfig { world, ..presets::paper(t, e) };
        let implementation = if virtual_ranks { IMPL_CUDA_VIRTUAL } else { IMPL_CUDA };
        return Some((world, config, implementation));
    }
    let mut words = check.split(' ');
    let (t, e) = paper_shape(words.next()?.strip_prefix("paper-")?)?;
    let mut config = presets::paper(t, e);
    for modifier in words {
        match modifier {
            "dropless" => config.capacity = CapacityPolicy::Dropless,
            "tf32" => config.dtype = DType::F32,
            _ => return None,
        }
    }
    Some((1, config, IMPL_CUDA))
}

/// `t<T>-e<E>`.
fn paper_shape(s: &str) -> Option<(u32, u32)> {
    let (t, e) = s.strip_prefix('t')?.split_once("-e")?;
    Some((t.parse().ok()?, e.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::TORCH_LINE;

    /// Rows exactly as the GPU check wrote them in the recorded run 5
    /// (`docs/dev/gpu-runs/2026-11-28-run5-gpu-check.jsonl`; details shortened).
    const RUN5: &str = r#"{"check":"small Bf16 Relu","ok":true,"median_ms":null,"p10_ms":null,"p90_ms":null,"floor_ms":null,"detail":"PASS: 384/384 rows checked"}
{"check":"preset mixtral-8x7b","ok":true,"median_ms":8.438528000000002,"p10_ms":8.415776,"p90_ms":8.454624,"floor_ms":3.6537803270481013,"detail":"PASS: 32/4096 rows checked (sample seed 9237423811029379753)"}
{"check":"paper-t16384-e8","ok":true,"median_ms":1.954368,"p10_ms":1.949824,"p90_ms":1.9612800000000001,"floor_ms":0.6965730187341772,"detail":"PASS: 64/16384 rows checked (sample seed 4490116030228452529)"}
{"check":"paper-t16384-e32 tf32","ok":true,"median_ms":4.884,"p10_ms":4.875488,"p90_ms":4.888255999999999,"floor_ms":1.3972235380658227,"detail":"PASS: 64/16384 rows checked (sample seed 4166364011001098139)"}
{"check":"weak P=1 t8192-e32","ok":true,"median_ms":1.038656,"p10_ms":1.034368,"p90_ms":1.0425280000000001,"floor_ms":0.34930588451645567,"detail":"PASS: 64/8192 rows checked (sample seed 8247782633183833395)"}
{"check":"weak P=2 t8192-e32","ok":false,"median_ms":null,"p10_ms":null,"p90_ms":null,"floor_ms":null,"detail":"forward"}"#;

    #[test]
    fn gpu_check_rows_map_to_their_layers() {
        let mut loaded = Loaded::default();
        parse(RUN5, "run5.jsonl", &mut loaded).unwrap();
        let m = &loaded.measurements;
        assert_eq!(m.len(), 4);
        assert_eq!(loaded.skipped.len(), 2);
        assert!(loaded.skipped[0].starts_with("run5.jsonl:1: \"small Bf16 Relu\": not timed"));
        assert!(loaded.skipped[1].contains("\"weak P=2 t8192-e32\": failed in that run (forward)"));
        // Model presets run 4096 tokens: the Mixtral row is T4096, not the baselines' T8192.
        assert_eq!(m[0].layer.label(), "T4096 H4096 I14336 E8 k2 swiglu bf16 dropless");
        assert_eq!(m[1].layer.label(), "T16384 H2048 I2048 E8 k2 relu bf16 cf1");
        assert_eq!(m[2].layer.label(), "T16384 H2048 I2048 E32 k2 relu f32 cf1");
        assert_eq!((m[3].world, m[3].layer.tokens_per_rank), (1, 8192));
        assert!(m.iter().all(|m| m.is_ours() && m.on_gpu() && m.verified && m.device.is_none()));
        assert!((m[1].percent_of_floor().unwrap() - 35.64).abs() < 0.01);
    }

    #[test]
    fn a_floor_that_does_not_fit_the_name_is_an_error() {
        // The Mixtral row's floor is T4096's; read as T8192 it would not fit.
        let row = r#"{"check":"paper-t8192-e8","ok":true,"median_ms":1.9,"p10_ms":1.8,"p90_ms":2.0,"floor_ms":0.6965730187341772,"detail":"PASS"}"#;
        let err = parse(row, "x", &mut Loaded::default()).unwrap_err().to_string();
        assert!(err.contains("not this layer's"), "{err}");
    }

    #[test]
    fn both_formats_mix_and_bad_lines_are_errors() {
        let mut loaded = Loaded::default();
        parse(&format!("{TORCH_LINE}\n"), "torch.jsonl", &mut loaded).unwrap();
        let t = &loaded.measurements[0];
        assert_eq!(
            (t.implementation.as_str(), t.device.as_deref()),
            ("torch-grouped-graph", Some("NVIDIA H200"))
        );
        assert!(!t.is_ours() && t.on_gpu());
        for bad in [
            r#"{"foo": 1}"#,
            r#"{"check": 3}"#,
            r#"{"check":"paper-t128-e8","ok":true,"median_ms":-1,"p10_ms":1,"p90_ms":1,"floor_ms":1}"#,
            r#"{"check":"paper-t128-e8","ok":true,"median_ms":1,"p10_ms":2,"p90_ms":3,"floor_ms":1}"#,
            r#"{"schema": "flashdmoe-bench/1"}"#,
            "[",
        ] {
            let err = parse(bad, "f", &mut Loaded::default()).unwrap_err();
            assert!(matches!(err, BenchError::Record { line: 1, .. }), "{bad}: {err}");
        }
        let unknown = r#"{"check":"paper-t128-e8 fp8","ok":true,"median_ms":1,"p10_ms":1,"p90_ms":1,"floor_ms":1}"#;
        let mut loaded = Loaded::default();
        parse(unknown, "f", &mut loaded).unwrap();
        assert!(loaded.measurements.is_empty() && loaded.skipped[0].contains("not a layer"));
    }

    #[test]
    fn check_names() {
        let (w, c, i) = layer_of_check("weak P=2 virtual t8192-e32").unwrap();
        assert_eq!(
            (w, c.world, c.tokens_per_rank, c.experts, i),
            (2, 2, 8192, 32, "flashdmoe-cuda-virtual")
        );
        let (_, c, _) = layer_of_check("paper-t16384-e32 dropless").unwrap();
        assert_eq!(c.capacity, CapacityPolicy::Dropless);
        for bad in
            ["paper-t16384", "preset llama", "weak P=0 t8192-e32", "weak P=2", "small F16 Gelu"]
        {
            assert!(layer_of_check(bad).is_none(), "{bad}");
        }
    }
}
