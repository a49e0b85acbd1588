//! One-line summaries of a forward's trace and marks for a check's detail: the GEMM tasks by
//! row fill, phase A's marks, the roles' spans.

use flashdmoe_cuda::CudaLayer;

/// The GEMM tasks' mean times by how full their row tile was (`trace::fill_times`): what an
/// expert's last, part-empty row tile costs against a full one (perf-notes lever 6c).
pub(super) fn fill_summary(
    layer: &CudaLayer,
    out: &flashdmoe_core::ForwardOutput,
    events: &[flashdmoe_core::trace::TraceEvent],
) -> String {
    let rows = match flashdmoe_core::conformance::task_rows(layer, out) {
        Ok(rows) => rows,
        Err(e) => return format!("; row fill: {e}"),
    };
    let bm = layer.spec().tile.bm;
    let bucket = |name: &str, (n, mean): (usize, f64)| {
        if n == 0 {
            format!("{name} n=0")
        } else {
            format!("{name} n={n} mean {:.1}us", mean / 1e3)
        }
    };
    let kinds: Vec<String> = flashdmoe_core::trace::fill_times(events, &rows, bm)
        .iter()
        .map(|f| {
            format!(
                "{} {}, {}, {}",
                f.kind.name(),
                bucket("full", f.full),
                bucket(">half", f.over_half),
                bucket("<=half", f.at_most_half)
            )
        })
        .collect();
    let marks = layer.task_marks();
    let mut text = format!("; row fill (bm {bm}): {}", kinds.join("; "));
    if !marks.is_empty() {
        text.push_str(&marks_summary(&marks, &rows, bm));
    }
    text
}

/// The in-task marks (`CudaLayer::task_marks`): the GEMM tasks' as mean µs of the main loop,
/// the epilogue (to the results stored) and the rest (fences, publication), for full and at
/// most half full row tiles; the streamed combines' as the slot table's lookup, the wait for
/// the first fill, and the rest (the sums and stores of every fill).
fn marks_summary(
    marks: &[flashdmoe_cuda::TaskMarks],
    rows: &std::collections::HashMap<flashdmoe_proto::TaskKey, u32>,
    bm: u32,
) -> String {
    use flashdmoe_core::trace::FillBucket;
    use flashdmoe_proto::TaskKind;
    let mut parts = Vec::new();
    for kind in [TaskKind::Gemm0, TaskKind::Gemm1] {
        for (bucket, name) in [(FillBucket::Full, "full"), (FillBucket::AtMostHalf, "<=half")] {
            let of: Vec<_> = marks
                .iter()
                .filter(|m| m.key.0 == kind)
                .filter(|m| rows.get(&m.key).is_some_and(|&r| FillBucket::of(r, bm) == bucket))
                .collect();
            if of.is_empty() {
                continue;
            }
            parts.push(format!("{} {name} {}", kind.name(), mark_means(&of)));
        }
    }
    let mut text =
        format!("; in-task µs (main loop/epilogue/fences+publication): {}", parts.join(", "));
    let combines: Vec<_> = marks.iter().filter(|m| m.key.0 == TaskKind::Combine).collect();
    if !combines.is_empty() {
        text.push_str(&format!(
            "; streamed combine µs (slot table/first fill/the rest): {}",
            mark_means(&combines)
        ));
    }
    text
}

/// Mean µs of tasks' three parts, start → mark 1 → mark 2 → end, as `a/b/c` (`marks` not
/// empty).
fn mark_means(marks: &[&flashdmoe_cuda::TaskMarks]) -> String {
    let mean = |f: &dyn Fn(&flashdmoe_cuda::TaskMarks) -> u64| {
        marks.iter().map(|m| f(m)).sum::<u64>() as f64 / marks.len() as f64 / 1e3
    };
    format!(
        "{:.1}/{:.1}/{:.1}",
        mean(&|m| u64::from(m.mark1_ns)),
        mean(&|m| u64::from(m.mark2_ns.saturating_sub(m.mark1_ns))),
        mean(&|m| m.duration_ns.saturating_sub(u64::from(m.mark2_ns)))
    )
}

/// Where a traced forward's time went: routing/dispatch before the first task, the task
/// phase by kind, and processor utilisation over the whole launch (rank 0 in detail, then the
/// utilisation of every rank).
pub(super) fn trace_summary(out: &flashdmoe_core::ForwardOutput, processors: u32) -> String {
    let mut text = String::new();
    let mut busy_by_rank = Vec::new();
    for r in &out.ranks {
        let Some(events) = &r.trace else { continue };
        let kernel_ns = r.stats.elapsed.as_nanos() as f64;
        let busy: u64 = events.iter().map(|e| e.end_ns - e.start_ns).sum();
        let busy_pct = busy as f64 / (kernel_ns * processors as f64) * 100.0;
        busy_by_rank.push(format!("{busy_pct:.0}%"));
        if busy_by_rank.len() > 1 {
            continue;
        }
        let first = events.iter().map(|e| e.start_ns).min().unwrap_or(0);
        let last = events.iter().map(|e| e.end_ns).max().unwrap_or(0);
        let kinds: Vec<String> = flashdmoe_core::trace::kind_times(events)
            .iter()
            .map(|k| {
                format!(
                    "{} n={} mean {:.1}us span {:.0}-{:.0}us",
                    k.kind.name(),
                    k.tasks,
                    k.mean_ns / 1e3,
                    k.span_ns.0 as f64 / 1e3,
                    k.span_ns.1 as f64 / 1e3
                )
            })
            .collect();
        // Idle processor time before each kind, as µs of the forward (the sum over processors).
        let gaps: Vec<String> = flashdmoe_core::trace::gap_times(events)
            .iter()
            .map(|g| g.describe(processors))
            .collect();
        text.push_str(&format!(
            "; rank {}: kernel {:.0}us, first task at {:.0}us, last end {:.0}us, busy {busy_pct:.0}% of launch x {processors} processors; {}; gaps before {}",
            events.first().map_or(0, |e| e.rank),
            kernel_ns / 1e3,
            first as f64 / 1e3,
            last as f64 / 1e3,
            kinds.join(", "),
            gaps.join(", ")
        ));
    }
    if busy_by_rank.len() > 1 {
        text.push_str(&format!("; busy by rank [{}]", busy_by_rank.join(", ")));
    }
    text
}
