//! Results files: JSONL whose lines are measurement records (`flashdmoe-bench/1`, from
//! `flashdmoe bench`, the PyTorch baselines and the GPU check's timed checks) or check records
//! (`flashdmoe-check/1`, the GPU check's untimed checks), told apart by their `schema` tag.
//!
//! Every line is checked on reading ([`Record::check`], [`CheckRecord::check`]); a line with
//! another schema, or none, is an error naming the file and the line.

use std::ops::Deref;
use std::path::Path;

use serde_json::Value;

use crate::check::{CHECK_SCHEMA, CheckRecord, parse_check};
use crate::error::BenchError;
use crate::record::{Record, SCHEMA, jsonl_lines, parse_record};

/// One line of a results file.
#[derive(Clone, Debug, PartialEq)]
pub enum Line {
    /// A timed result.
    Measurement(Record),
    /// An untimed check's outcome.
    Check(CheckRecord),
}

impl Line {
    /// The line as JSON (no newline).
    pub fn to_json_line(&self) -> String {
        match self {
            Line::Measurement(r) => r.to_json_line(),
            Line::Check(c) => c.to_json_line(),
        }
    }
}

/// `lines` as JSONL text, one line each, newline-terminated.
pub fn to_jsonl(lines: &[Line]) -> String {
    lines.iter().map(|l| l.to_json_line() + "\n").collect()
}

/// A value and the file it was read from.
#[derive(Clone, Debug, PartialEq)]
pub struct Sourced<T> {
    /// The file's name (no directory).
    pub source: String,
    /// What was read.
    pub value: T,
}

impl<T> Deref for Sourced<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

/// What some results files hold, in file and line order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Results {
    /// Timed results.
    pub measurements: Vec<Sourced<Record>>,
    /// Untimed checks.
    pub checks: Vec<Sourced<CheckRecord>>,
}

impl Results {
    /// Reads one file (module doc); its name (without the directory) becomes the source.
    pub fn load(&mut self, path: &Path) -> Result<(), BenchError> {
        let text = std::fs::read_to_string(path).map_err(|e| BenchError::io(path, e))?;
        let source = path
            .file_name()
            .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        self.parse(&text, &source)
    }

    /// Parses one file's text; `source` names it in the results and in errors.
    pub fn parse(&mut self, text: &str, source: &str) -> Result<(), BenchError> {
        for (line, json) in jsonl_lines(text) {
            match parse_line(json) {
                Ok(Line::Measurement(value)) => {
                    self.measurements.push(Sourced { source: source.to_owned(), value })
                }
                Ok(Line::Check(value)) => {
                    self.checks.push(Sourced { source: source.to_owned(), value })
                }
                Err(message) => {
                    return Err(BenchError::Record {
                        source_name: source.to_owned(),
                        line,
                        message,
                    });
                }
            }
        }
        Ok(())
    }
}

/// One JSON line as a checked record of the schema its `schema` tag names.
pub fn parse_line(json: &str) -> Result<Line, String> {
    let value: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    match value.get("schema").and_then(Value::as_str) {
        Some(SCHEMA) => parse_record(json).map(Line::Measurement),
        Some(CHECK_SCHEMA) => parse_check(json).map(Line::Check),
        Some(other) => Err(format!(
            "schema {other:?} is neither {SCHEMA:?} (a measurement) nor {CHECK_SCHEMA:?} (a check)"
        )),
        None => Err(format!("no \"schema\" field: not a {SCHEMA} or {CHECK_SCHEMA} record")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::tests::passed;
    use crate::record::tests::{TORCH_LINE, ours};

    #[test]
    fn both_schemas_mix_in_one_file_and_keep_their_order_and_source() {
        let lines = [
            Line::Check(passed("small Bf16 Relu")),
            Line::Measurement(ours(1.954, "cuda")),
            Line::Check(passed("forced timeout")),
        ];
        let text = to_jsonl(&lines) + "\n" + TORCH_LINE + "\n";
        let mut results = Results::default();
        results.parse(&text, "gpu-check.jsonl").unwrap();
        let names: Vec<&str> = results.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["small Bf16 Relu", "forced timeout"]);
        let impls: Vec<&str> =
            results.measurements.iter().map(|m| m.implementation.as_str()).collect();
        assert_eq!(impls, ["flashdmoe-cuda", "torch-grouped-graph"]);
        assert!(results.measurements.iter().all(|m| m.source == "gpu-check.jsonl"));
        assert_eq!(results.measurements[0].value, ours(1.954, "cuda"));
    }

    #[test]
    fn other_lines_are_errors_naming_file_and_line() {
        // The GPU check's rows before it wrote records: no schema, so no guessing.
        let old = r#"{"check":"paper-t128-e8","ok":true,"median_ms":0.137,"p10_ms":0.13,"p90_ms":0.14,"floor_ms":0.031,"detail":"PASS"}"#;
        let unknown = TORCH_LINE.replace("flashdmoe-bench/1", "flashdmoe-bench/9");
        let bad_record = TORCH_LINE.replace(r#""median_ms": 1.475167989730835, "#, "");
        let bad_check = passed("x").to_json_line().replace(r#""world":1"#, r#""world":0"#);
        for (line, needle) in [
            (old, "no \"schema\""),
            (unknown.as_str(), "flashdmoe-bench/9"),
            (bad_record.as_str(), "median_ms"),
            (bad_check.as_str(), "world"),
            ("[", "EOF"),
        ] {
            let text = format!("{TORCH_LINE}\n{line}\n");
            match Results::default().parse(&text, "f.jsonl") {
                Err(BenchError::Record { source_name, line, message }) => {
                    assert_eq!((source_name.as_str(), line), ("f.jsonl", 2));
                    assert!(message.contains(needle), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// Every results file committed to the repository (baselines', ours, the recorded GPU runs)
    /// still reads, and each record's `config` writes back as it was read (the model fields
    /// added since are written only for real models' layers, which none of them is).
    #[test]
    fn every_committed_results_file_still_reads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = Vec::new();
        for dir in
            ["bench/baselines/results", "bench/results", "docs/dev/gpu-runs", "tests/data/bench"]
        {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "jsonl") {
                    files.push(path);
                }
            }
        }
        assert!(files.len() >= 20, "{files:?}");
        let mut measurements = 0;
        for path in &files {
            // Some recorded runs' files also hold other tools' lines (no schema tag): skipped.
            let text = std::fs::read_to_string(path).unwrap();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let Ok(value) = serde_json::from_str::<Value>(line) else { continue };
                if value.get("schema").is_none() {
                    continue;
                }
                let parsed = parse_line(line);
                let parsed = parsed.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                if let Line::Measurement(r) = parsed {
                    let written = serde_json::to_value(&r.config).unwrap();
                    assert_eq!(written, value["config"], "{}", path.display());
                    measurements += 1;
                }
            }
        }
        assert!(measurements > 0);
    }
}
