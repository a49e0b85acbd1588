//! Task traces: per-task start/end events, Chrome/Perfetto JSON, utilisation.
//!
//! Every backend records the same [`TraceEvent`]s (the simulator from its processor threads, the
//! CUDA kernel from `%globaltimer`), so the JSON writer ([`chrome_json`]), the utilisation
//! summary ([`utilisation`]) and trace conformance ([`crate::conformance`]) serve all.
//!
//! ## Invariants
//!
//! * Times of ranks on one clock ([`crate::Layer::trace_clocks`]) share one origin, so their
//!   order means something. Ranks on different clocks (GPUs) are offset by an unknown amount
//!   until `conformance::check_forward` aligns them; writers take aligned events and
//!   shift them so the earliest event starts at 0.
//! * The JSON is the Chrome trace-event format (`"X"` complete events, microseconds), which
//!   both `chrome://tracing` and Perfetto open: one process per rank, one thread per processor.

use std::collections::HashMap;

use flashdmoe_proto::{TaskKey, TaskKind};
use serde_json::{Value, json};

/// Which clock each rank's trace times come from. Ranks of one clock share a time base; the
/// offsets between clocks are unknown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clocks(Vec<u32>);

impl Clocks {
    /// Every one of `world` ranks reads one clock (the simulator; virtual ranks of one GPU).
    pub fn shared(world: u32) -> Clocks {
        Clocks(vec![0; world as usize])
    }

    /// Rank `r` reads clock `of_rank[r]` (e.g. its GPU's ordinal).
    pub fn per_rank(of_rank: Vec<u32>) -> Clocks {
        Clocks(of_rank)
    }

    /// The clock of every rank, indexed by rank.
    pub fn of_rank(&self) -> &[u32] {
        &self.0
    }
}

/// One executed task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// Executing rank.
    pub rank: u32,
    /// Processor (worker thread / thread block) index within the rank.
    pub processor: u32,
    /// Task kind.
    pub kind: TaskKind,
    /// Source rank of the tokens.
    pub source: u32,
    /// Owner rank of the expert.
    pub owner: u32,
    /// Local expert index.
    pub local_expert: u32,
    /// Row tile (token tile for combine).
    pub row_tile: u32,
    /// Column tile.
    pub col_tile: u32,
    /// Start, nanoseconds from the trace origin of this rank's clock (shared by every rank
    /// on that clock).
    pub start_ns: u64,
    /// End, nanoseconds from the same origin.
    pub end_ns: u64,
}

impl TraceEvent {
    /// The task's identity in the protocol's task graph (`flashdmoe_proto::graph`).
    pub fn key(&self) -> TaskKey {
        (self.kind, self.source, self.owner, self.local_expert, self.row_tile, self.col_tile)
    }
}

/// The events as a Chrome/Perfetto trace (JSON text): a `"X"` event per task named after its
/// kind and tile, on process `rank` and thread `processor`, with metadata naming them
/// `"rank R"` and `"processor P"`. Times are shifted so the earliest start is 0.
pub fn chrome_json(events: &[TraceEvent]) -> String {
    let origin = events.iter().map(|e| e.start_ns).min().unwrap_or(0);
    let us = |ns: u64| ns as f64 / 1000.0;
    let mut out: Vec<Value> = Vec::with_capacity(events.len() + 8);
    let mut ranks: Vec<u32> = events.iter().map(|e| e.rank).collect();
    ranks.sort_unstable();
    ranks.dedup();
    for &rank in &ranks {
        out.push(json!({"name": "process_name", "ph": "M", "pid": rank, "tid": 0,
                        "args": {"name": format!("rank {rank}")}}));
        out.push(json!({"name": "process_sort_index", "ph": "M", "pid": rank, "tid": 0,
                        "args": {"sort_index": rank}}));
    }
    let mut threads: Vec<(u32, u32)> = events.iter().map(|e| (e.rank, e.processor)).collect();
    threads.sort_unstable();
    threads.dedup();
    for (rank, processor) in threads {
        out.push(json!({"name": "thread_name", "ph": "M", "pid": rank, "tid": processor,
                        "args": {"name": format!("processor {processor}")}}));
    }
    for e in events {
        out.push(json!({
            "name": format!("{} r{} c{}", e.kind.name(), e.row_tile, e.col_tile),
            "cat": e.kind.name(),
            "ph": "X",
            "pid": e.rank,
            "tid": e.processor,
            "ts": us(e.start_ns - origin),
            "dur": us(e.end_ns.saturating_sub(e.start_ns)),
            "args": {"source": e.source, "owner": e.owner, "local_expert": e.local_expert,
                     "row_tile": e.row_tile, "col_tile": e.col_tile},
        }));
    }
    json!({"traceEvents": out, "displayTimeUnit": "ns"}).to_string()
}

/// Busy time of one processor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcessorBusy {
    /// Rank.
    pub rank: u32,
    /// Processor within the rank.
    pub processor: u32,
    /// Sum of its task durations.
    pub busy_ns: u64,
    /// Tasks it ran.
    pub tasks: u64,
    /// `busy_ns / wall_ns` of the trace (0 for an empty trace).
    pub utilisation: f64,
}

/// Utilisation of a trace: how much of the wall time processors spent in tasks.
#[derive(Clone, Debug, PartialEq)]
pub struct Utilisation {
    /// From the earliest start to the latest end of any event.
    pub wall_ns: u64,
    /// One entry per processor of every rank, `[rank][processor]` order; processors that ran
    /// nothing are included with 0.
    pub processors: Vec<ProcessorBusy>,
    /// Total busy time over `processors.len() * wall_ns` (0 for an empty trace).
    pub overall: f64,
}

/// Utilisation of `events` for a world of `world` ranks with `processors_per_rank` processors
/// each (events outside that grid enlarge it, so nothing is lost).
pub fn utilisation(events: &[TraceEvent], world: u32, processors_per_rank: u32) -> Utilisation {
    let start = events.iter().map(|e| e.start_ns).min().unwrap_or(0);
    let end = events.iter().map(|e| e.end_ns).max().unwrap_or(0);
    let wall_ns = end.saturating_sub(start);
    let world = events.iter().map(|e| e.rank + 1).max().unwrap_or(0).max(world);
    let per_rank =
        events.iter().map(|e| e.processor + 1).max().unwrap_or(0).max(processors_per_rank);
    let ratio = |busy: u64, slots: u64| {
        if wall_ns == 0 || slots == 0 { 0.0 } else { busy as f64 / (wall_ns as f64 * slots as f64) }
    };
    let mut processors: Vec<ProcessorBusy> = (0..world)
        .flat_map(|rank| {
            (0..per_rank).map(move |processor| ProcessorBusy {
                rank,
                processor,
                busy_ns: 0,
                tasks: 0,
                utilisation: 0.0,
            })
        })
        .collect();
    for e in events {
        let p = &mut processors[(e.rank * per_rank + e.processor) as usize];
        p.busy_ns += e.end_ns.saturating_sub(e.start_ns);
        p.tasks += 1;
    }
    for p in &mut processors {
        p.utilisation = ratio(p.busy_ns, 1);
    }
    let total: u64 = processors.iter().map(|p| p.busy_ns).sum();
    let overall = ratio(total, processors.len() as u64);
    Utilisation { wall_ns, processors, overall }
}

/// How long the tasks of one kind took in a trace.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KindTimes {
    /// The kind.
    pub kind: TaskKind,
    /// Tasks of that kind.
    pub tasks: usize,
    /// Mean duration (ns).
    pub mean_ns: f64,
    /// Median duration (ns): the middle task's, the upper one of an even count.
    pub median_ns: u64,
    /// 90th percentile duration (ns).
    pub p90_ns: u64,
    /// The earliest start and the latest end of a task of that kind (ns, the events' clock).
    pub span_ns: (u64, u64),
}

/// The duration statistics of each task kind in `events` (GEMM0, GEMM1, combine), leaving out
/// kinds with no task.
pub fn kind_times(events: &[TraceEvent]) -> Vec<KindTimes> {
    [TaskKind::Gemm0, TaskKind::Gemm1, TaskKind::Combine]
        .into_iter()
        .filter_map(|kind| {
            let of_kind: Vec<&TraceEvent> = events.iter().filter(|e| e.kind == kind).collect();
            let mut durations: Vec<u64> =
                of_kind.iter().map(|e| e.end_ns.saturating_sub(e.start_ns)).collect();
            durations.sort_unstable();
            let n = durations.len();
            let (median_ns, p90_ns) = median_p90(&durations)?;
            Some(KindTimes {
                kind,
                tasks: n,
                mean_ns: durations.iter().sum::<u64>() as f64 / n as f64,
                median_ns,
                p90_ns,
                span_ns: (
                    of_kind.iter().map(|e| e.start_ns).min().unwrap_or(0),
                    of_kind.iter().map(|e| e.end_ns).max().unwrap_or(0),
                ),
            })
        })
        .collect()
}

/// How long the GEMM tasks of one kind took by how full their row tile was: `full` row tiles
/// (all `bm` rows), `over_half` (more than `bm / 2`, fewer than `bm`) and `at_most_half`
/// (1 to `bm / 2` rows: on the Hopper engine one consumer warpgroup's wgmmas, the other idle).
/// Each bucket is `(tasks, mean ns)`, `(0, 0.0)` when empty.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FillTimes {
    /// GEMM0 or GEMM1.
    pub kind: TaskKind,
    /// Tasks of full row tiles.
    pub full: (usize, f64),
    /// Tasks of row tiles more than half full.
    pub over_half: (usize, f64),
    /// Tasks of row tiles at most half full.
    pub at_most_half: (usize, f64),
}

/// How full a row tile is: the buckets of [`FillTimes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FillBucket {
    /// All `bm` rows.
    Full,
    /// More than `bm / 2` rows, fewer than `bm`.
    OverHalf,
    /// 1 to `bm / 2` rows.
    AtMostHalf,
}

impl FillBucket {
    /// The bucket of a row tile of `rows` of `bm` rows.
    pub fn of(rows: u32, bm: u32) -> FillBucket {
        if rows >= bm {
            FillBucket::Full
        } else if 2 * rows > bm {
            FillBucket::OverHalf
        } else {
            FillBucket::AtMostHalf
        }
    }
}

/// [`FillTimes`] of the GEMM kinds in `events`, each task's valid rows looked up in `rows` (by
/// [`TraceEvent::key`]; tasks missing there are left out), row tiles of `bm` rows.
pub fn fill_times(events: &[TraceEvent], rows: &HashMap<TaskKey, u32>, bm: u32) -> Vec<FillTimes> {
    [TaskKind::Gemm0, TaskKind::Gemm1]
        .into_iter()
        .filter_map(|kind| {
            let mut buckets = [(0usize, 0u64); 3];
            for e in events.iter().filter(|e| e.kind == kind) {
                let Some(&r) = rows.get(&e.key()) else { continue };
                let b = FillBucket::of(r, bm) as usize;
                buckets[b].0 += 1;
                buckets[b].1 += e.end_ns.saturating_sub(e.start_ns);
            }
            let mean =
                |(n, sum): (usize, u64)| (n, if n == 0 { 0.0 } else { sum as f64 / n as f64 });
            (buckets.iter().any(|b| b.0 > 0)).then(|| FillTimes {
                kind,
                full: mean(buckets[0]),
                over_half: mean(buckets[1]),
                at_most_half: mean(buckets[2]),
            })
        })
        .collect()
}

/// The median and the 90th percentile of `sorted` (the upper one of an even count); `None`
/// when it is empty.
fn median_p90(sorted: &[u64]) -> Option<(u64, u64)> {
    let n = sorted.len();
    (n > 0).then(|| (sorted[n / 2], sorted[(n * 9 / 10).min(n - 1)]))
}

/// Every idle time between one task's end and the next task's start on the same processor
/// (ns), over every processor of every rank, with the kind of the task after it.
fn processor_gaps(events: &[TraceEvent]) -> Vec<(TaskKind, u64)> {
    let mut by_processor: Vec<&TraceEvent> = events.iter().collect();
    by_processor.sort_unstable_by_key(|e| (e.rank, e.processor, e.start_ns));
    by_processor
        .windows(2)
        .filter(|w| (w[0].rank, w[0].processor) == (w[1].rank, w[1].processor))
        .map(|w| (w[1].kind, w[1].start_ns.saturating_sub(w[0].end_ns)))
        .collect()
}

/// The median idle time between one task's end and the next task's start on the same processor
/// (ns; the upper one of an even count), over every processor of every rank; `None` when no
/// processor ran two tasks.
pub fn median_gap_ns(events: &[TraceEvent]) -> Option<u64> {
    let mut gaps: Vec<u64> = processor_gaps(events).into_iter().map(|(_, gap)| gap).collect();
    gaps.sort_unstable();
    median_p90(&gaps).map(|(median, _)| median)
}

/// The idle time on a processor before tasks of one kind: every gap between one task's end
/// and the next task's start on the same processor, counted against the kind of the task
/// after it. A per-task cost (the handover, the scheduler's round trip) shows as a median
/// close to the mean; waiting for ready work (the GEMM0 -> GEMM1 turn, combines waiting for
/// the last expert) as a mean well above the median.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GapTimes {
    /// The kind of the task after the gaps.
    pub kind: TaskKind,
    /// Gaps counted.
    pub gaps: usize,
    /// Their sum (ns): idle processor time.
    pub total_ns: u64,
    /// Median gap (ns; the upper one of an even count).
    pub median_ns: u64,
    /// 90th percentile gap (ns).
    pub p90_ns: u64,
}

impl GapTimes {
    /// One line for a report, e.g. `gemm1 n=2536 median 2.1us p90 3.3us sum 42us/processor`:
    /// the sum spread over `processors` (the idle time it adds to a forward if every
    /// processor waited alike).
    pub fn describe(&self, processors: u32) -> String {
        format!(
            "{} n={} median {:.1}us p90 {:.1}us sum {:.0}us/processor",
            self.kind.name(),
            self.gaps,
            self.median_ns as f64 / 1e3,
            self.p90_ns as f64 / 1e3,
            self.total_ns as f64 / 1e3 / f64::from(processors.max(1))
        )
    }
}

/// [`GapTimes`] by the kind of the task after the gap (GEMM0, GEMM1, combine), leaving out
/// kinds that never follow another task on a processor.
pub fn gap_times(events: &[TraceEvent]) -> Vec<GapTimes> {
    let pairs = processor_gaps(events);
    [TaskKind::Gemm0, TaskKind::Gemm1, TaskKind::Combine]
        .into_iter()
        .filter_map(|kind| {
            let mut gaps: Vec<u64> =
                pairs.iter().filter(|(k, _)| *k == kind).map(|&(_, g)| g).collect();
            gaps.sort_unstable();
            let (median_ns, p90_ns) = median_p90(&gaps)?;
            Some(GapTimes {
                kind,
                gaps: gaps.len(),
                total_ns: gaps.iter().sum(),
                median_ns,
                p90_ns,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(rank: u32, processor: u32, start_ns: u64, end_ns: u64) -> TraceEvent {
        TraceEvent {
            rank,
            processor,
            kind: TaskKind::Gemm1,
            source: 1,
            owner: rank,
            local_expert: 0,
            row_tile: 2,
            col_tile: 3,
            start_ns,
            end_ns,
        }
    }

    #[test]
    fn gap_times_by_hand() {
        // Processor 0: GEMM1 0..100, gap 20, GEMM1 120..200, gap 300, combine 500..600.
        // Processor 1: one task (no gap); rank 1 processor 0: GEMM1 0..10, gap 40, GEMM1.
        let mut events = vec![ev(0, 0, 120, 200), ev(0, 0, 0, 100), ev(0, 1, 0, 50)];
        events.push(TraceEvent { kind: TaskKind::Combine, ..ev(0, 0, 500, 600) });
        events.extend([ev(1, 0, 0, 10), ev(1, 0, 50, 60)]);
        let gaps = gap_times(&events);
        assert_eq!(gaps.len(), 2);
        assert_eq!(
            gaps[0],
            GapTimes { kind: TaskKind::Gemm1, gaps: 2, total_ns: 60, median_ns: 40, p90_ns: 40 }
        );
        assert_eq!(
            gaps[1],
            GapTimes {
                kind: TaskKind::Combine,
                gaps: 1,
                total_ns: 300,
                median_ns: 300,
                p90_ns: 300
            }
        );
        let line =
            GapTimes { total_ns: 6_000, median_ns: 2_050, p90_ns: 3_300, ..gaps[0] }.describe(2);
        assert_eq!(line, "gemm1 n=2 median 2.0us p90 3.3us sum 3us/processor");
    }

    #[test]
    fn utilisation_by_hand() {
        // Wall 1000..2000; rank 0 proc 0 busy 500, rank 1 proc 1 busy 1000, two idle processors.
        let events = [ev(0, 0, 1000, 1500), ev(1, 1, 1000, 2000)];
        let u = utilisation(&events, 2, 2);
        assert_eq!(u.wall_ns, 1000);
        assert_eq!(u.processors.len(), 4);
        assert_eq!((u.processors[0].busy_ns, u.processors[0].utilisation), (500, 0.5));
        assert_eq!((u.processors[3].busy_ns, u.processors[3].tasks), (1000, 1));
        assert_eq!(u.processors[1].utilisation, 0.0);
        assert_eq!(u.overall, 1500.0 / 4000.0);
        assert_eq!(utilisation(&[], 1, 1).overall, 0.0);
    }

    #[test]
    fn kind_times_and_gaps_by_hand() {
        let mut combine = ev(0, 1, 4000, 4500);
        combine.kind = TaskKind::Combine;
        // Processor 0: GEMM1s of 1000, 3000 and 2000 ns with gaps of 500 and 1500; processor 1
        // one combine (no gap).
        let events = [ev(0, 0, 0, 1000), ev(0, 0, 1500, 4500), ev(0, 0, 6000, 8000), combine];
        let times = kind_times(&events);
        assert_eq!(times.len(), 2, "no GEMM0 task: left out");
        let g1 = times[0];
        assert_eq!((g1.kind, g1.tasks, g1.median_ns, g1.p90_ns), (TaskKind::Gemm1, 3, 2000, 3000));
        assert_eq!((g1.mean_ns, g1.span_ns), (2000.0, (0, 8000)));
        assert_eq!((times[1].kind, times[1].median_ns), (TaskKind::Combine, 500));
        assert_eq!(median_gap_ns(&events), Some(1500));
        assert_eq!(median_gap_ns(&events[3..]), None);
        assert!(kind_times(&[]).is_empty());
    }

    #[test]
    fn fill_times_by_hand() {
        // GEMM1 row tiles 0, 1, 2 of 128, 100 and 64 rows (bm 128); a GEMM0 task of 1 row; a
        // task missing from the table is left out; a combine is never counted.
        let tile =
            |row_tile, start_ns, end_ns| TraceEvent { row_tile, ..ev(0, 0, start_ns, end_ns) };
        let mut g0 = tile(0, 0, 700);
        g0.kind = TaskKind::Gemm0;
        let mut combine = tile(0, 0, 9000);
        combine.kind = TaskKind::Combine;
        let events = [
            tile(0, 0, 1000),
            tile(0, 2000, 4000),
            tile(1, 0, 900),
            tile(2, 0, 600),
            tile(3, 0, 5),
            g0,
            combine,
        ];
        let mut rows = HashMap::new();
        for (row_tile, r) in [(0, 128), (1, 100), (2, 64)] {
            rows.insert(tile(row_tile, 0, 0).key(), r);
        }
        rows.insert(g0.key(), 1);
        rows.insert(combine.key(), 128);
        let times = fill_times(&events, &rows, 128);
        assert_eq!(times.len(), 2);
        assert_eq!(
            (times[0].kind, times[0].full, times[0].at_most_half),
            (TaskKind::Gemm0, (0, 0.0), (1, 700.0))
        );
        let g1 = times[1];
        assert_eq!(g1.kind, TaskKind::Gemm1);
        assert_eq!((g1.full, g1.over_half, g1.at_most_half), ((2, 1500.0), (1, 900.0), (1, 600.0)));
        assert!(fill_times(&events, &HashMap::new(), 128).is_empty());
    }

    #[test]
    fn chrome_json_shape() {
        let text = chrome_json(&[ev(1, 0, 5000, 7500)]);
        let v: Value = serde_json::from_str(&text).unwrap();
        let events = v["traceEvents"].as_array().unwrap();
        let x = events.iter().find(|e| e["ph"] == "X").unwrap();
        assert_eq!(x["name"], "gemm1 r2 c3");
        assert_eq!((x["pid"].as_u64(), x["tid"].as_u64()), (Some(1), Some(0)));
        assert_eq!((x["ts"].as_f64(), x["dur"].as_f64()), (Some(0.0), Some(2.5)));
        assert!(
            events.iter().any(|e| e["name"] == "process_name" && e["args"]["name"] == "rank 1")
        );
        assert!(
            events.iter().any(|e| e["name"] == "thread_name" && e["args"]["name"] == "processor 0")
        );
    }
}
