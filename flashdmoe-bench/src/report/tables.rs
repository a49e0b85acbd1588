//! The report's markdown tables: GPU measurements (ours with their baselines), the untimed
//! checks, simulator measurements (protocol figures), and baselines run on the CPU.

use std::fmt::Write;

use crate::check::CheckRecord;
use crate::results::Sourced;

use super::select::{Measured, pairs};

fn yes(v: bool) -> &'static str {
    if v { "yes" } else { "**no**" }
}

/// GPU measurements: per layer ours then its baselines (with the speedup), then baselines with
/// no result of ours.
pub fn gpu(gpu: &[&Measured]) -> String {
    let mut md = String::from(
        "| layer | P | impl | median ms | p10 | p90 | floor ms | % of floor | speedup | verified | source |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|---|---|\n",
    );
    let row = |md: &mut String, m: &Measured, label: &str, speedup: Option<f64>| {
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} | {} |",
            m.world,
            m.implementation,
            m.median_ms,
            m.p10_ms,
            m.p90_ms,
            m.floor_ms.map_or("-".into(), |f| format!("{f:.3}")),
            m.percent_of_floor().map_or("-".into(), |p| format!("{p:.0}%")),
            speedup.map_or("-".into(), |s| format!("{s:.2}x")),
            yes(m.verified),
            m.source
        );
    };
    let pairs = pairs(gpu);
    for (o, baselines) in &pairs {
        row(&mut md, o, &o.config.label(), None);
        for b in baselines {
            row(&mut md, b, "", Some(b.median_ms / o.median_ms));
        }
    }
    let paired = |b: &Measured| pairs.iter().any(|(_, bs)| bs.iter().any(|x| std::ptr::eq(*x, b)));
    for b in gpu.iter().filter(|b| !b.is_ours() && !paired(b)) {
        row(&mut md, b, &b.config.label(), None);
    }
    md
}

/// The untimed checks: verdict and the first clause of what each found.
pub fn checks(checks: &[&Sourced<CheckRecord>]) -> String {
    let mut md = String::from(
        "| check | P | impl | layer | passed | found | source |\n|---|---:|---|---|---|---|---|\n",
    );
    for c in checks {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            c.name,
            c.world,
            c.implementation,
            c.config,
            yes(c.passed),
            c.summary().replace('|', "/"),
            c.source
        );
    }
    md
}

/// The simulator's measurements: CPU time and protocol figures.
pub fn sim(sim: &[&Measured]) -> String {
    let mut md = String::from(
        "| case | layer | P | median ms (CPU) | GEMM0 / GEMM1 / combine tasks | rows sent | bytes sent / padded | dropped | utilisation | verified |\n\
         |---|---|---:|---:|---|---:|---:|---:|---:|---|\n",
    );
    for m in sim {
        let p = m.protocol.clone().unwrap_or_default();
        let ratio = if p.padded_bytes == 0 {
            0.0
        } else {
            100.0 * p.bytes_sent as f64 / p.padded_bytes as f64
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.3} | {} / {} / {} | {} | {} / {} ({ratio:.1}%) | {} | {} | {} |",
            m.name.as_deref().unwrap_or("-"),
            m.config,
            m.world,
            m.median_ms,
            p.gemm0_tasks,
            p.gemm1_tasks,
            p.combine_tasks,
            p.rows_sent,
            p.bytes_sent,
            p.padded_bytes,
            p.dropped,
            p.utilisation.map_or("-".into(), |u| format!("{:.0}%", 100.0 * u)),
            yes(m.verified)
        );
    }
    md
}

/// Baselines run on the CPU: functional checks, never compared.
pub fn cpu(cpu: &[&Measured]) -> String {
    let mut md =
        String::from("| layer | P | impl | median ms | verified |\n|---|---:|---|---:|---|\n");
    for m in cpu {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.3} | {} |",
            m.config,
            m.world,
            m.implementation,
            m.median_ms,
            yes(m.verified)
        );
    }
    md
}
