//! The figures of simulator measurements: its protocol figures, never its times (CPU times of
//! simulated ranks, not a GPU's). Tasks, rows and bytes are exact (the same on every run and
//! machine); utilisation depends on how the machine schedules the simulator's threads.
//!
//! * `sim-tasks.svg`: tile tasks per forward by kind (GEMM0, GEMM1, Combine), all ranks;
//! * `sim-traffic.svg`: bytes sent (only routed rows travel) against what a capacity-padded
//!   exchange would send, all ranks;
//! * `sim-utilisation.svg`: the processors' busy share over the traced forward's task phase.
//!
//! One bar row per case; a figure whose figures no record carries says so.

use crate::chart::{BarChart, Bars, Rgb};
use crate::error::BenchError;
use crate::record::{ProtocolStats, Record};

use super::figure::Figure;
use super::select::{Measured, short_label};

/// Every simulator figure, in page order.
pub fn figures(sim: &[&Measured]) -> Result<Vec<Figure>, BenchError> {
    let cases: Vec<(String, &ProtocolStats)> =
        sim.iter().filter_map(|m| Some((case_label(m), m.protocol.as_ref()?))).collect();
    Ok(vec![tasks(&cases)?, traffic(&cases)?, utilisation(&cases)?])
}

/// A case's name in the figures: its name, else its layer and world.
fn case_label(r: &Record) -> String {
    r.name.clone().unwrap_or_else(|| short_label(r))
}

const NO_PROTOCOL: &str = "no simulator record carries protocol figures (`protocol`)";

fn tasks(cases: &[(String, &ProtocolStats)]) -> Result<Figure, BenchError> {
    const FILE: &str = "sim-tasks.svg";
    const TITLE: &str = "Simulator: tile tasks per forward";
    if cases.is_empty() {
        return Ok(Figure::not_drawn(FILE, TITLE, NO_PROTOCOL));
    }
    let kind = |name: &str, color: Rgb, count: fn(&ProtocolStats) -> u64| Bars {
        name: name.into(),
        values: cases.iter().map(|(_, p)| Some(count(p) as f64)).collect(),
        color,
    };
    let chart = BarChart {
        title: "Simulator: tile tasks per forward by kind, all ranks".into(),
        value_label: "tasks per forward".into(),
        categories: cases.iter().map(|c| c.0.clone()).collect(),
        bars: vec![
            kind("GEMM0 (up projection)", Rgb(31, 119, 180), |p| p.gemm0_tasks),
            kind("GEMM1 (down projection)", Rgb(255, 127, 14), |p| p.gemm1_tasks),
            kind("Combine", Rgb(44, 160, 44), |p| p.combine_tasks),
        ],
        references: vec![],
        value_text: |v| format!("{v:.0}"),
        full_scale: None,
    };
    Figure::drawn(FILE, TITLE, chart.render())
}

/// The unit that writes `bytes` with a few digits: its size and name.
fn unit(bytes: u64) -> (f64, &'static str) {
    [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]
        .into_iter()
        .find(|&(size, _)| bytes >= 4 * size)
        .map_or((1.0, "bytes"), |(size, name)| (size as f64, name))
}

fn traffic(cases: &[(String, &ProtocolStats)]) -> Result<Figure, BenchError> {
    const FILE: &str = "sim-traffic.svg";
    const TITLE: &str = "Simulator: bytes sent vs capacity-padded";
    if cases.is_empty() {
        return Ok(Figure::not_drawn(FILE, TITLE, NO_PROTOCOL));
    }
    let largest = cases.iter().map(|(_, p)| p.padded_bytes.max(p.bytes_sent)).max().unwrap_or(0);
    let (size, name) = unit(largest);
    let bars = |label: &str, color: Rgb, bytes: fn(&ProtocolStats) -> u64| Bars {
        name: label.into(),
        values: cases.iter().map(|(_, p)| Some(bytes(p) as f64 / size)).collect(),
        color,
    };
    let chart = BarChart {
        title: "Simulator: bytes sent per forward vs a capacity-padded exchange, all ranks".into(),
        value_label: format!("bytes per forward ({name})"),
        categories: cases.iter().map(|c| c.0.clone()).collect(),
        bars: vec![
            bars("sent (routed rows only)", Rgb(31, 119, 180), |p| p.bytes_sent),
            bars("capacity-padded exchange", Rgb(170, 170, 170), |p| p.padded_bytes),
        ],
        references: vec![],
        value_text: |v| {
            if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.1}") }
        },
        full_scale: None,
    };
    Figure::drawn(FILE, TITLE, chart.render())
}

fn utilisation(cases: &[(String, &ProtocolStats)]) -> Result<Figure, BenchError> {
    const FILE: &str = "sim-utilisation.svg";
    const TITLE: &str = "Simulator: processor utilisation";
    if cases.is_empty() {
        return Ok(Figure::not_drawn(FILE, TITLE, NO_PROTOCOL));
    }
    if cases.iter().all(|(_, p)| p.utilisation.is_none()) {
        return Ok(Figure::not_drawn(
            FILE,
            TITLE,
            "no simulator record has a utilisation (none of their traced forwards conformed)",
        ));
    }
    let chart = BarChart {
        title: "Simulator: processors busy during the task phase of a traced forward".into(),
        value_label: "processor utilisation (%)".into(),
        categories: cases.iter().map(|c| c.0.clone()).collect(),
        bars: vec![Bars {
            name: "busy / (processors x task phase)".into(),
            values: cases.iter().map(|(_, p)| p.utilisation.map(|u| 100.0 * u)).collect(),
            color: Rgb(148, 103, 189),
        }],
        references: vec![],
        value_text: |v| format!("{v:.0}%"),
        full_scale: Some(100.0),
    };
    Figure::drawn(FILE, TITLE, chart.render())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::svg_text::parse;
    use crate::record::tests::ours;
    use crate::results::Sourced;

    fn sim(name: &str, protocol: Option<ProtocolStats>) -> Measured {
        let mut r = ours(15.0, "sim");
        r.name = Some(name.into());
        r.protocol = protocol;
        Sourced { source: "results.jsonl".into(), value: r }
    }

    fn stats(utilisation: Option<f64>) -> ProtocolStats {
        ProtocolStats {
            gemm0_tasks: 256,
            gemm1_tasks: 128,
            combine_tasks: 64,
            rows_sent: 228,
            bytes_sent: 228 * 1024,
            padded_bytes: 256 * 1024,
            dropped: 28,
            utilisation,
        }
    }

    #[test]
    fn protocol_figures_are_drawn_per_case() {
        let records =
            [sim("tiny world=1", Some(stats(Some(0.5)))), sim("tiny world=2", Some(stats(None)))];
        let refs: Vec<&Measured> = records.iter().collect();
        let figures = figures(&refs).unwrap();
        let names: Vec<&str> = figures.iter().map(|f| f.file).collect();
        assert_eq!(names, ["sim-tasks.svg", "sim-traffic.svg", "sim-utilisation.svg"]);
        let texts: Vec<Vec<String>> =
            figures.iter().map(|f| parse(f.svg.as_ref().unwrap()).unwrap().0).collect();
        let has = |i: usize, t: &str| texts[i].iter().any(|x| x == t);
        assert!(has(0, "256") && has(0, "128") && has(0, "64") && has(0, "tiny world=2"));
        assert!(
            has(1, "228") && has(1, "256") && has(1, "bytes per forward (KiB)"),
            "{:?}",
            texts[1]
        );
        // One utilisation bar: the second case has none.
        assert!(has(2, "50%"));
        assert_eq!(texts[2].iter().filter(|t| t.ends_with('%') && t.len() <= 4).count(), 1);
        // No time anywhere: the simulator's times are not GPU times.
        assert!(texts.iter().flatten().all(|t| !t.contains(" ms")));
    }

    #[test]
    fn records_without_protocol_figures_say_why_nothing_was_drawn() {
        let records = [sim("a", None)];
        let refs: Vec<&Measured> = records.iter().collect();
        for f in figures(&refs).unwrap() {
            assert!(f.svg.unwrap_err().contains("protocol figures"));
        }
        let records = [sim("a", Some(stats(None)))];
        let refs: Vec<&Measured> = records.iter().collect();
        let f = figures(&refs).unwrap().pop().unwrap();
        assert!(f.svg.unwrap_err().contains("no simulator record has a utilisation"));
        assert_eq!(unit(4096), (1024.0, "KiB"));
        assert_eq!(unit(4095), (1.0, "bytes"));
        assert_eq!(unit(5 << 30), ((1u64 << 30) as f64, "GiB"));
    }
}
