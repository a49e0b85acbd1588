//! Records as CSV (RFC 4180): one header line, one row per record, the record's fields
//! flattened (`config` into its keys, `protocol` into `protocol_*` columns, empty for the
//! baselines), numbers as Rust prints them (shortest round-trip form), units in the column
//! names as in the records.

use crate::record::Record;

/// The header, in column order.
pub const COLUMNS: [&str; 38] = [
    "schema",
    "impl",
    "backend",
    "device",
    "world",
    "name",
    "tokens_per_rank",
    "hidden",
    "inter",
    "experts",
    "top_k",
    "activation",
    "dtype",
    "capacity",
    "bias",
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
    "floor_ms",
    "percent_of_floor",
    "timestamp",
    "seed",
    "notes",
    "protocol_gemm0_tasks",
    "protocol_gemm1_tasks",
    "protocol_combine_tasks",
    "protocol_rows_sent",
    "protocol_bytes_sent",
    "protocol_padded_bytes",
    "protocol_dropped",
    "protocol_utilisation",
];

/// `records` as CSV text (header first, `\n` line ends).
pub fn to_csv(records: &[Record]) -> String {
    let mut out = COLUMNS.join(",") + "\n";
    for r in records {
        let c = &r.config;
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
        let p = r.protocol.as_ref();
        let stat = |f: fn(&crate::record::ProtocolStats) -> u64| {
            p.map_or(String::new(), |p| f(p).to_string())
        };
        let fields = [
            r.schema.clone(),
            r.implementation.clone(),
            r.backend.clone(),
            r.device.clone(),
            r.world.to_string(),
            r.name.clone().unwrap_or_default(),
            c.tokens_per_rank.to_string(),
            c.hidden.to_string(),
            c.inter.to_string(),
            c.experts.to_string(),
            c.top_k.to_string(),
            c.activation.to_string(),
            c.dtype.to_string(),
            c.capacity.to_string(),
            c.bias.to_string(),
            r.iterations.to_string(),
            r.median_ms.to_string(),
            r.p10_ms.to_string(),
            r.p90_ms.to_string(),
            r.min_ms.to_string(),
            r.max_ms.to_string(),
            r.verified.to_string(),
            opt(r.max_rel_err),
            r.flops.to_string(),
            r.tflops.to_string(),
            opt(r.floor_ms),
            opt(r.percent_of_floor()),
            r.timestamp.clone(),
            r.seed.to_string(),
            r.notes.clone(),
            stat(|p| p.gemm0_tasks),
            stat(|p| p.gemm1_tasks),
            stat(|p| p.combine_tasks),
            stat(|p| p.rows_sent),
            stat(|p| p.bytes_sent),
            stat(|p| p.padded_bytes),
            stat(|p| p.dropped),
            opt(p.and_then(|p| p.utilisation)),
        ];
        let row: Vec<String> = fields.iter().map(|f| escape(f)).collect();
        out += &row.join(",");
        out.push('\n');
    }
    out
}

/// A field quoted when it holds a comma, a quote or a line break (quotes doubled).
fn escape(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::parse_jsonl;
    use crate::record::tests::{TORCH_LINE, ours};

    /// Splits one CSV line (no embedded line breaks) into fields, undoing [`escape`].
    fn split(line: &str) -> Vec<String> {
        let (mut fields, mut cur, mut quoted, mut chars) =
            (Vec::new(), String::new(), false, line.chars().peekable());
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    cur.push('"');
                    chars.next();
                }
                ('"', _) => quoted = !quoted,
                (',', false) => fields.push(std::mem::take(&mut cur)),
                (c, _) => cur.push(c),
            }
        }
        fields.push(cur);
        fields
    }

    #[test]
    fn one_row_per_record_with_every_column() {
        let mut mine = ours(1.954, "cuda");
        mine.notes = "a note, with \"quotes\"".into();
        let torch = parse_jsonl(TORCH_LINE, "run5").unwrap().remove(0);
        let text = to_csv(&[mine.clone(), torch]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(split(lines[0]), COLUMNS);
        let row = split(lines[1]);
        assert_eq!(row.len(), COLUMNS.len());
        let col = |name: &str| COLUMNS.iter().position(|c| *c == name).unwrap();
        assert_eq!(row[col("impl")], "flashdmoe-cuda");
        assert_eq!(row[col("median_ms")], "1.954");
        assert_eq!(row[col("capacity")], "1");
        assert_eq!(row[col("notes")], mine.notes);
        assert_eq!(row[col("protocol_gemm0_tasks")], "4");
        let pct: f64 = row[col("percent_of_floor")].parse().unwrap();
        assert!((pct - 100.0 * mine.floor_ms.unwrap() / 1.954).abs() < 1e-9);
        let torch = split(lines[2]);
        assert_eq!(torch.len(), COLUMNS.len());
        assert_eq!(torch[col("impl")], "torch-grouped-graph");
        assert_eq!(torch[col("protocol_gemm0_tasks")], "");
        assert_eq!(torch[col("name")], "");
    }

    #[test]
    fn simulator_rows_have_no_floor() {
        let text = to_csv(&[ours(3.0, "sim")]);
        let row = split(text.lines().nth(1).unwrap());
        let col = |name: &str| COLUMNS.iter().position(|c| *c == name).unwrap();
        assert_eq!(
            (row[col("floor_ms")].as_str(), row[col("percent_of_floor")].as_str()),
            ("", "")
        );
        assert_eq!(row[col("backend")], "sim");
    }
}
