//! The comparison table: each of our results with the baseline results of the same layer.
//!
//! A baseline record matches one of ours when both have the same world size and the same
//! [`LayerKey`](crate::record::LayerKey) label. The speedup is `baseline median / our median`
//! (above 1: ours is faster), and exists only when both were timed on a GPU
//! ([`Record::on_gpu`]): a simulator time or a CPU baseline's is never compared.

use crate::record::{IMPL_CUDA_VIRTUAL, Record};

/// One of our results and the baseline results of its layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison<'a> {
    /// Ours.
    pub ours: &'a Record,
    /// Baselines of the same world and layer, in input order.
    pub baselines: Vec<&'a Record>,
}

/// The join key of a record.
fn key(r: &Record) -> (u32, String) {
    (r.world, r.config.label())
}

/// Our records (in order) each with its matching baselines, and the baseline records that
/// match none of ours.
pub fn join(records: &[Record]) -> (Vec<Comparison<'_>>, Vec<&Record>) {
    let (ours, baselines): (Vec<&Record>, Vec<&Record>) = records.iter().partition(|r| r.is_ours());
    let comparisons: Vec<Comparison<'_>> = ours
        .iter()
        .map(|&o| Comparison {
            ours: o,
            baselines: baselines.iter().copied().filter(|b| key(b) == key(o)).collect(),
        })
        .collect();
    let unmatched =
        baselines.into_iter().filter(|b| !ours.iter().any(|o| key(o) == key(b))).collect();
    (comparisons, unmatched)
}

/// `baseline median / our median` when both were timed on a GPU, ours one rank per GPU.
pub fn speedup(ours: &Record, baseline: &Record) -> Option<f64> {
    (ours.on_gpu() && baseline.on_gpu() && ours.implementation != IMPL_CUDA_VIRTUAL)
        .then(|| baseline.median_ms / ours.median_ms)
}

/// The table as text: per case our line, then one line per matching baseline; notes of
/// unverified results below their line; a simulation banner when any of ours ran on the
/// simulator; unmatched baseline results last.
pub fn render(records: &[Record]) -> String {
    let (comparisons, unmatched) = join(records);
    let name = |r: &Record| r.name.clone().unwrap_or_else(|| r.config.label());
    let width = records.iter().map(|r| name(r).len()).max().unwrap_or(0).max(6);
    let mut out = String::new();
    if comparisons.iter().any(|c| !c.ours.on_gpu()) {
        out += "SIMULATION: flashdmoe-sim times are the CPU simulator's; they have no floor and are \
                never compared with GPU times.\n";
    }
    let header = format!(
        "{:<width$} {:>2}  {:<22} {:>9} {:>9} {:>9} {:>9} {:>6} {:>8} {:>3}",
        "config", "P", "impl", "median ms", "p10", "p90", "floor ms", "%floor", "speedup", "ok"
    );
    out += &format!("{header}\n{}\n", "-".repeat(header.len()));
    let line = |label: &str, r: &Record, speedup: Option<f64>| -> String {
        let floor = r.floor_ms.filter(|_| r.on_gpu()).map_or("-".into(), |f| format!("{f:.3}"));
        let percent = r.percent_of_floor().map_or("-".into(), |p| format!("{p:.0}%"));
        let speedup = speedup.map_or("-".into(), |s| format!("{s:.2}x"));
        let mut out = format!(
            "{label:<width$} {:>2}  {:<22} {:>9.3} {:>9.3} {:>9.3} {floor:>9} {percent:>6} \
             {speedup:>8} {:>3}\n",
            r.world,
            r.implementation,
            r.median_ms,
            r.p10_ms,
            r.p90_ms,
            if r.verified { "yes" } else { "NO" },
        );
        if !r.notes.is_empty() {
            out += &format!("{:width$}     note: {}\n", "", r.notes);
        }
        out
    };
    for c in &comparisons {
        out += &line(&name(c.ours), c.ours, None);
        for b in &c.baselines {
            out += &line("", b, speedup(c.ours, b));
        }
    }
    if !unmatched.is_empty() {
        out += "baseline results without a matching case of ours:\n";
        for b in unmatched {
            out += &line(&name(b), b, None);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::parse_jsonl;
    use crate::record::tests::{TORCH_LINE, ours};

    fn torch() -> Record {
        parse_jsonl(TORCH_LINE, "run5").unwrap().remove(0)
    }

    #[test]
    fn baselines_join_ours_by_world_and_layer() {
        let mut other_world = torch();
        other_world.world = 2;
        let mut other_layer = torch();
        other_layer.config.experts = 32;
        let records = [ours(1.954, "cuda"), torch(), other_world, other_layer];
        let (comparisons, unmatched) = join(&records);
        assert_eq!(comparisons.len(), 1);
        assert_eq!(comparisons[0].baselines, [&records[1]]);
        assert_eq!(unmatched, [&records[2], &records[3]]);
    }

    #[test]
    fn speedups_only_between_gpu_times() {
        let (cuda, sim, t) = (ours(1.954, "cuda"), ours(1.954, "sim"), torch());
        let s = speedup(&cuda, &t).unwrap();
        assert!((s - 1.475167989730835 / 1.954).abs() < 1e-12);
        assert_eq!(speedup(&sim, &t), None);
        let mut cpu = torch();
        cpu.device = "cpu".into();
        assert_eq!(speedup(&cuda, &cpu), None);
        // Virtual ranks share one GPU: never compared with a baseline's own GPUs.
        let mut virtual_ranks = ours(1.954, "cuda");
        virtual_ranks.implementation = IMPL_CUDA_VIRTUAL.into();
        assert!(virtual_ranks.is_ours());
        assert_eq!(speedup(&virtual_ranks, &t), None);
    }

    #[test]
    fn the_table_has_floor_percent_speedup_and_verification() {
        let mut unverified = torch();
        unverified.verified = false;
        unverified.notes = "routing differs".into();
        let text = render(&[ours(1.954, "cuda"), unverified]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("config") && lines[0].ends_with(" ok"), "{text}");
        let mine = lines[2];
        assert!(mine.starts_with("paper-t16384-e8-cf1"), "{text}");
        for part in ["flashdmoe-cuda", "1.954", "0.697", "36%", "yes"] {
            assert!(mine.contains(part), "{part}: {mine}");
        }
        let base = lines[3];
        for part in ["torch-grouped-graph", "1.475", "47%", "0.75x", "NO"] {
            assert!(base.contains(part), "{part}: {base}");
        }
        assert!(lines[4].contains("note: routing differs"));
        assert!(!text.contains("SIMULATION"));
    }

    #[test]
    fn simulation_is_labelled_and_never_compared() {
        let text = render(&[ours(12.5, "sim"), torch()]);
        assert!(text.starts_with("SIMULATION"), "{text}");
        let sim_line = text.lines().find(|l| l.starts_with("paper-t16384-e8-cf1")).unwrap();
        assert!(sim_line.contains("12.500") && !sim_line.contains('%'), "{sim_line}");
        let torch_line = text.lines().find(|l| l.contains("torch-grouped-graph")).unwrap();
        assert!(torch_line.trim_end().ends_with(" - yes"), "{torch_line}");
    }
}
