//! Check records: the outcome of a check that ran forwards and judged them but timed none (a
//! correctness check of the GPU check, a forced timeout), one JSON object per line, schema
//! `flashdmoe-check/1`.
//!
//! A check with timings is a measurement and is written as a [`Record`](crate::record::Record)
//! (`flashdmoe-bench/1`, with `verified` its outcome); this schema is for the rest, so that a
//! results file says what every check found without inventing a time for it:
//!
//! `schema, impl, backend, device, world, config (as in flashdmoe-bench/1), name, passed,
//! max_rel_err (null if not verified against the oracle or not finite), timestamp, seed, notes,
//! protocol (optional, as in flashdmoe-bench/1)`
//!
//! Invariants (checked by [`CheckRecord::check`] on every record read or written): the schema
//! tag, a non-empty `impl`, `backend` and `name`, `world >= 1`, and a `max_rel_err` that is
//! finite and `>= 0` when present.

use serde::{Deserialize, Serialize};

use crate::record::{LayerKey, ProtocolStats};

/// The schema tag of every check record.
pub const CHECK_SCHEMA: &str = "flashdmoe-check/1";

/// One check's outcome (module doc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckRecord {
    /// Always [`CHECK_SCHEMA`].
    pub schema: String,
    /// Implementation, e.g. `flashdmoe-cuda`.
    #[serde(rename = "impl")]
    pub implementation: String,
    /// `cuda` or `sim`.
    pub backend: String,
    /// GPU name, or `cpu`.
    pub device: String,
    /// Ranks P.
    pub world: u32,
    /// The layer.
    pub config: LayerKey,
    /// The check's name.
    pub name: String,
    /// Whether the check passed.
    pub passed: bool,
    /// Largest relative error the oracle found, when it verified an output.
    pub max_rel_err: Option<f64>,
    /// When the check ran, ISO 8601 UTC.
    pub timestamp: String,
    /// Seed of the generated weights.
    pub seed: u64,
    /// What the check found, in words (why it failed, when it did).
    pub notes: String,
    /// What its forward did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<ProtocolStats>,
}

impl CheckRecord {
    /// Checks the module's invariants.
    pub fn check(&self) -> Result<(), String> {
        if self.schema != CHECK_SCHEMA {
            return Err(format!("schema {:?}, expected {CHECK_SCHEMA:?}", self.schema));
        }
        if self.implementation.is_empty() || self.backend.is_empty() || self.name.is_empty() {
            return Err("impl, backend and name must not be empty".into());
        }
        if self.world == 0 {
            return Err("world must be >= 1".into());
        }
        if let Some(e) = self.max_rel_err
            && !(e.is_finite() && e >= 0.0)
        {
            return Err(format!("max_rel_err {e} must be finite and >= 0"));
        }
        Ok(())
    }

    /// The record as one line of JSON (no newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self)
            .expect("a check record always serialises (no maps with non-string keys)")
    }

    /// The first clause of the notes (up to the first `;`): the verdict without the details.
    pub fn summary(&self) -> &str {
        self.notes.split(';').next().unwrap_or_default().trim()
    }
}

/// One JSON line as a [`CheckRecord::check`]ed record.
pub fn parse_check(line: &str) -> Result<CheckRecord, String> {
    let record: CheckRecord = serde_json::from_str(line).map_err(|e| e.to_string())?;
    record.check()?;
    Ok(record)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::IMPL_CUDA;
    use flashdmoe_core::config::presets;

    /// A passed correctness check at the paper T128 E8 layer.
    pub(crate) fn passed(name: &str) -> CheckRecord {
        CheckRecord {
            schema: CHECK_SCHEMA.into(),
            implementation: IMPL_CUDA.into(),
            backend: "cuda".into(),
            device: "NVIDIA H200".into(),
            world: 1,
            config: LayerKey::of(&presets::paper(128, 8)),
            name: name.into(),
            passed: true,
            max_rel_err: Some(6.3e-3),
            timestamp: "2026-11-28T10:00:00+00:00".into(),
            seed: 7,
            notes: "PASS: 128/128 rows checked; trace conforms".into(),
            protocol: None,
        }
    }

    #[test]
    fn check_records_round_trip_and_are_checked() {
        let r = passed("small Bf16 Relu");
        let line = r.to_json_line();
        assert!(line.starts_with(r#"{"schema":"flashdmoe-check/1","impl":"flashdmoe-cuda""#));
        assert!(!line.contains("protocol") && !line.contains("median_ms"), "{line}");
        assert_eq!(parse_check(&line).unwrap(), r);
        assert_eq!(r.summary(), "PASS: 128/128 rows checked");
        let bad = [
            line.replace("flashdmoe-check/1", "flashdmoe-bench/1"),
            line.replace(r#""world":1"#, r#""world":0"#),
            line.replace(r#""name":"small Bf16 Relu""#, r#""name":"""#),
            line.replace("0.0063", "-1.0"),
            line.replace(r#""passed":true,"#, ""),
        ];
        for b in bad {
            assert!(parse_check(&b).is_err(), "{b}");
        }
    }
}
