//! Trace conformance: did a forward execute exactly the protocol's task graph, in a legal order?
//!
//! [`check`] works from [`TraceEvent`]s alone, so it judges any backend: the simulator's traces
//! and the CUDA kernel's recorded `%globaltimer` traces alike. It checks that
//!
//! * every task of [`graph_tasks`] ran exactly once, on its executor rank, and nothing else ran;
//! * every task started no earlier than each of its [`prerequisites`] ended.
//!
//! ## Clocks
//!
//! Ranks may read their times from different clocks ([`Clocks`]): the GPUs of a node each have
//! their own `%globaltimer`, offset from the others by an unknown amount (measured: about
//! 0.7 ms between two H200s of one node). Dependencies between ranks of one clock are checked
//! directly. Dependencies across clocks are checked the only way unsynchronised clocks allow:
//! there must be one offset per clock that orders every one of them (a system of difference
//! constraints, solved exactly; with traffic both ways between two clocks this bounds the
//! offset from both sides, so a task that started before its cross-clock prerequisite ended
//! shows up as a cycle no offset can satisfy). [`check`] returns such offsets
//! ([`ClockAlignment`]) so a trace can be put on one time base for display.

use std::collections::HashMap;
use std::fmt;

use flashdmoe_proto::graph::{graph_tasks, prerequisites};
use flashdmoe_proto::{Epoch, HeapLayout, ProtoError, RoutingPlan, TaskKey};
use thiserror::Error;

use crate::backend::{ForwardOutput, Layer};
use crate::routing::RoutingError;
use crate::trace::{Clocks, TraceEvent};

/// A task identity in errors, printed readably.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Task(pub TaskKey);

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, source, owner, le, row_tile, col_tile) = self.0;
        write!(
            f,
            "{} (source {source}, owner {owner}, local expert {le}, row tile {row_tile}, \
             column tile {col_tile})",
            kind.name()
        )
    }
}

/// How a trace departs from the task graph.
#[derive(Clone, Debug, PartialEq, Error)]
#[non_exhaustive]
pub enum ConformanceError {
    /// The graph could not be computed (layout and plan disagree).
    #[error("protocol: {0}")]
    Proto(#[from] ProtoError),
    /// A rank's routing does not give a plan for the layout.
    #[error("routing: {0}")]
    Routing(#[from] RoutingError),
    /// A rank of the forward carries no trace (the forward ran without `trace`).
    #[error("rank {rank} has no trace: run the forward with trace on")]
    NoTrace {
        /// The rank.
        rank: u32,
    },
    /// A task of the graph never ran.
    #[error("{0} never ran")]
    Missing(Task),
    /// A task ran more than once.
    #[error("{task} ran {count} times")]
    Repeated {
        /// The task.
        task: Task,
        /// How many times it ran.
        count: usize,
    },
    /// A task that is not in the graph ran.
    #[error("{0} ran but is not in the task graph")]
    Unexpected(Task),
    /// A task ran on the wrong rank.
    #[error("{task} ran on rank {found}, but its executor is rank {expected}")]
    WrongRank {
        /// The task.
        task: Task,
        /// Its executor.
        expected: u32,
        /// Where it ran.
        found: u32,
    },
    /// A task ends before it starts.
    #[error("{task} ends at {end_ns} ns before it starts at {start_ns} ns")]
    BadInterval {
        /// The task.
        task: Task,
        /// Its start.
        start_ns: u64,
        /// Its end.
        end_ns: u64,
    },
    /// `clocks` does not name a clock for every rank of the plan.
    #[error("clocks: {clocks} ranks named, but the plan has {world} ranks")]
    Clocks {
        /// Ranks `clocks` names.
        clocks: usize,
        /// Ranks of the plan.
        world: u32,
    },
    /// Dependencies across clocks that no choice of clock offsets orders: a cycle of them whose
    /// slacks sum to less than zero, so at least one task started before its prerequisite
    /// ended, whatever the clocks' offsets.
    #[error("no offsets between the ranks' clocks order these cross-clock dependencies: {}",
        cycle.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Acausal {
        /// The cycle, each dependency with its times on its own clocks.
        cycle: Vec<CrossClock>,
    },
    /// A task started before one of its prerequisites ended.
    #[error(
        "{task} started at {start_ns} ns, before its prerequisite {prerequisite} ended at {end_ns} ns"
    )]
    EarlyStart {
        /// The task.
        task: Task,
        /// Its start.
        start_ns: u64,
        /// The prerequisite.
        prerequisite: Task,
        /// The prerequisite's end.
        end_ns: u64,
    },
}

/// A dependency between tasks of ranks on different clocks, with each time on its own clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrossClock {
    /// The dependent task and its start on clock `task_clock`.
    pub task: Task,
    /// Its start.
    pub start_ns: u64,
    /// Its rank's clock.
    pub task_clock: u32,
    /// The prerequisite and its end on clock `prerequisite_clock`.
    pub prerequisite: Task,
    /// The prerequisite's end.
    pub end_ns: u64,
    /// The prerequisite's rank's clock.
    pub prerequisite_clock: u32,
}

impl fmt::Display for CrossClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} started at {} ns on clock {} after {} ended at {} ns on clock {}",
            self.task,
            self.start_ns,
            self.task_clock,
            self.prerequisite,
            self.end_ns,
            self.prerequisite_clock
        )
    }
}

/// Offsets that put every rank's times on one time base, consistent with every dependency:
/// what [`check`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClockAlignment {
    /// Nanoseconds to add to rank `r`'s times (0 for every rank when all share one clock).
    pub offset_ns: Vec<i64>,
}

impl ClockAlignment {
    /// Shifts each event by its rank's offset, then all of them so the earliest starts at 0.
    pub fn apply(&self, events: &mut [TraceEvent]) {
        let shifted = |e: &TraceEvent, t: u64| {
            t as i128 + self.offset_ns.get(e.rank as usize).copied().unwrap_or(0) as i128
        };
        let origin = events.iter().map(|e| shifted(e, e.start_ns)).min().unwrap_or(0);
        for e in events {
            e.start_ns = (shifted(e, e.start_ns) - origin) as u64;
            e.end_ns = (shifted(e, e.end_ns) - origin) as u64;
        }
    }
}

/// Checks a traced forward of `layer`: the task graph comes from the routing each rank
/// reported (as [`Layer::source_plan`] turns it into packets), the clocks from [`Layer::trace_clocks`]. Returns every rank's events on one time
/// base (aligned with the offsets [`check`] found, the earliest start at 0), ready for
/// [`crate::trace::chrome_json`] and [`crate::trace::utilisation`].
pub fn check_forward<L: Layer + ?Sized>(
    layer: &L,
    out: &ForwardOutput,
) -> Result<Vec<TraceEvent>, ConformanceError> {
    let mut events = Vec::new();
    for (rank, r) in out.ranks.iter().enumerate() {
        let trace = r.trace.as_ref().ok_or(ConformanceError::NoTrace { rank: rank as u32 })?;
        events.extend_from_slice(trace);
    }
    let plan = forward_plan(layer, out)?;
    check(layer.layout(), &plan, &events, &layer.trace_clocks())?.apply(&mut events);
    Ok(events)
}

/// The valid rows of every task of the forward `out` of `layer` (the task graph of the
/// routing each rank reported), by task identity: for [`crate::trace::fill_times`].
pub fn task_rows<L: Layer + ?Sized>(
    layer: &L,
    out: &ForwardOutput,
) -> Result<HashMap<TaskKey, u32>, ConformanceError> {
    let plan = forward_plan(layer, out)?;
    let mut rows = HashMap::new();
    for task in graph_tasks(layer.layout(), &plan, Epoch::FIRST) {
        let task = task?;
        rows.insert(task.key()?, task.valid_rows);
    }
    Ok(rows)
}

/// The routing plan of the forward `out`: each rank's reported routing as packets.
fn forward_plan<L: Layer + ?Sized>(
    layer: &L,
    out: &ForwardOutput,
) -> Result<RoutingPlan, ConformanceError> {
    let sources = (0..out.ranks.len())
        .map(|rank| layer.source_plan(rank as u32, &out.ranks[rank].routing))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RoutingPlan::new(layer.layout(), sources)?)
}

/// Checks that `events` (all ranks' trace of one forward, each rank's times on its clock in
/// `clocks`) executed exactly the task graph of `plan` under `layout`, respecting every
/// dependency. Reports the first departure found; on success returns clock offsets under
/// which every dependency holds.
pub fn check(
    layout: &HeapLayout,
    plan: &RoutingPlan,
    events: &[TraceEvent],
    clocks: &Clocks,
) -> Result<ClockAlignment, ConformanceError> {
    let world = layout.geometry().world;
    let clocks = clocks.of_rank();
    if clocks.len() != world as usize {
        return Err(ConformanceError::Clocks { clocks: clocks.len(), world });
    }
    let mut ran: HashMap<TaskKey, (usize, &TraceEvent)> = HashMap::with_capacity(events.len());
    for e in events {
        if e.end_ns < e.start_ns {
            return Err(ConformanceError::BadInterval {
                task: Task(e.key()),
                start_ns: e.start_ns,
                end_ns: e.end_ns,
            });
        }
        ran.entry(e.key()).or_insert((0, e)).0 += 1;
    }
    for e in events {
        let count = ran[&e.key()].0;
        if count > 1 {
            return Err(ConformanceError::Repeated { task: Task(e.key()), count });
        }
    }
    let tasks = graph_tasks(layout, plan, Epoch::FIRST).collect::<Result<Vec<_>, _>>()?;
    for task in &tasks {
        let k = task.key()?;
        let (_, event) = ran.get(&k).ok_or(ConformanceError::Missing(Task(k)))?;
        if event.rank != task.executor() {
            return Err(ConformanceError::WrongRank {
                task: Task(k),
                expected: task.executor(),
                found: event.rank,
            });
        }
    }
    if ran.len() != tasks.len() {
        let graph: std::collections::HashSet<TaskKey> =
            tasks.iter().map(|t| t.key()).collect::<Result<_, _>>()?;
        let extra = events.iter().map(TraceEvent::key).find(|k| !graph.contains(k));
        return Err(ConformanceError::Unexpected(Task(extra.expect("an event outside the graph"))));
    }
    let mut cross = CrossConstraints::new(clocks);
    for task in &tasks {
        let k = task.key()?;
        let event = ran[&k].1;
        for p in prerequisites(layout, plan, task)? {
            let before = ran[&p].1;
            let (clock, pre_clock) = (clocks[event.rank as usize], clocks[before.rank as usize]);
            if clock != pre_clock {
                cross.add(CrossClock {
                    task: Task(k),
                    start_ns: event.start_ns,
                    task_clock: clock,
                    prerequisite: Task(p),
                    end_ns: before.end_ns,
                    prerequisite_clock: pre_clock,
                });
            } else if event.start_ns < before.end_ns {
                return Err(ConformanceError::EarlyStart {
                    task: Task(k),
                    start_ns: event.start_ns,
                    prerequisite: Task(p),
                    end_ns: before.end_ns,
                });
            }
        }
    }
    let offsets = cross.solve()?;
    Ok(ClockAlignment { offset_ns: clocks.iter().map(|c| offsets[cross.index(*c)]).collect() })
}

/// Cross-clock dependencies as difference constraints on the clocks' offsets `x`: a task on
/// clock `b` that depends on a task on clock `a` needs `start + x_b >= end + x_a`, that is
/// `x_a - x_b <= start - end`. Only the tightest constraint per ordered pair of clocks matters.
struct CrossConstraints {
    /// Distinct clocks, in first-seen order; `x` is indexed like this.
    clocks: Vec<u32>,
    /// `tightest[a][b]`: the smallest `start - end` of a dependency from clock `a` to `b`.
    tightest: Vec<Vec<Option<(i128, CrossClock)>>>,
}

impl CrossConstraints {
    fn new(of_rank: &[u32]) -> CrossConstraints {
        let mut clocks: Vec<u32> = Vec::new();
        for &c in of_rank {
            if !clocks.contains(&c) {
                clocks.push(c);
            }
        }
        let n = clocks.len();
        CrossConstraints { clocks, tightest: vec![vec![None; n]; n] }
    }

    fn index(&self, clock: u32) -> usize {
        self.clocks.iter().position(|&c| c == clock).expect("a clock of some rank")
    }

    fn add(&mut self, dep: CrossClock) {
        let (a, b) = (self.index(dep.prerequisite_clock), self.index(dep.task_clock));
        let slack = dep.start_ns as i128 - dep.end_ns as i128;
        let slot = &mut self.tightest[a][b];
        if slot.as_ref().is_none_or(|(s, _)| slack < *s) {
            *slot = Some((slack, dep));
        }
    }

    /// Offsets satisfying every constraint (each clock centred in the interval the
    /// constraints allow relative to the first clock, when that is consistent), or the
    /// negative cycle that proves none exist. Floyd-Warshall over the clocks: `dist[u][v]`
    /// bounds `x_v - x_u` from above.
    fn solve(&self) -> Result<Vec<i64>, ConformanceError> {
        let n = self.clocks.len();
        let mut dist = vec![vec![None::<i128>; n]; n];
        let mut next = vec![vec![usize::MAX; n]; n];
        for (u, row) in dist.iter_mut().enumerate() {
            row[u] = Some(0);
            next[u][u] = u;
        }
        // x_a - x_b <= w is an edge b -> a of weight w.
        for (a, row) in self.tightest.iter().enumerate() {
            for (b, c) in row.iter().enumerate() {
                if let Some((w, _)) = c {
                    dist[b][a] = Some(dist[b][a].map_or(*w, |d| d.min(*w)));
                    next[b][a] = a;
                }
            }
        }
        for k in 0..n {
            for u in 0..n {
                for v in 0..n {
                    if let (Some(uk), Some(kv)) = (dist[u][k], dist[k][v])
                        && dist[u][v].is_none_or(|d| uk + kv < d)
                    {
                        dist[u][v] = Some(uk + kv);
                        next[u][v] = next[u][k];
                    }
                }
            }
        }
        if let Some(start) = (0..n).find(|&u| dist[u][u].is_some_and(|d| d < 0)) {
            return Err(ConformanceError::Acausal { cycle: self.cycle(start, &next) });
        }
        // Centre each clock relative to clock 0 where both bounds exist; keep the centred
        // choice only if it satisfies every constraint jointly, else take the shortest-path
        // solution x_v = dist[0][v] (always feasible once clock 0 reaches v) filled in with 0.
        let centred: Vec<i128> = (0..n)
            .map(|v| match (dist[0][v], dist[v][0]) {
                (Some(hi), Some(lo)) => (hi - lo) / 2,
                (Some(hi), None) => hi.min(0),
                (None, Some(lo)) => (-lo).max(0),
                (None, None) => 0,
            })
            .collect();
        let feasible = |x: &[i128]| {
            self.tightest.iter().enumerate().all(|(a, row)| {
                row.iter()
                    .enumerate()
                    .all(|(b, c)| c.as_ref().is_none_or(|(w, _)| x[a] - x[b] <= *w))
            })
        };
        let x = if feasible(&centred) {
            centred
        } else {
            // A virtual source with 0-weight edges to every clock: x_v = min_u dist[u][v].
            (0..n).map(|v| (0..n).filter_map(|u| dist[u][v]).min().unwrap_or(0).min(0)).collect()
        };
        Ok(x.into_iter().map(|v| v.clamp(i64::MIN as i128, i64::MAX as i128) as i64).collect())
    }

    /// The dependencies on a negative cycle through clock `start` (following `next` hops).
    fn cycle(&self, start: usize, next: &[Vec<usize>]) -> Vec<CrossClock> {
        let n = self.clocks.len();
        // Walk the successor chain from `start` until a clock repeats: the repeat closes a
        // cycle of edges u -> v, each the constraint x_v - x_u <= w of a dependency v -> u.
        let mut path = vec![start];
        let mut u = start;
        for _ in 0..=n {
            let v = next[u][start];
            if v == usize::MAX {
                break;
            }
            if let Some(i) = path.iter().position(|&p| p == v) {
                path.push(v);
                path.drain(..i);
                break;
            }
            path.push(v);
            u = v;
        }
        path.windows(2)
            .filter_map(|w| self.tightest[w[1]][w[0]].as_ref().map(|(_, dep)| *dep))
            .collect()
    }
}

#[cfg(all(test, not(flashdmoe_loom)))]
mod tests {
    use flashdmoe_proto::{Geometry, SourcePlan, TaskKind, TileShape};

    use super::*;

    fn setup() -> (HeapLayout, RoutingPlan) {
        let layout = HeapLayout::new(Geometry {
            world: 2,
            local_experts: 1,
            tokens: 2,
            capacity: 2,
            hidden: 8,
            inter: 8,
            elem_bytes: 4,
            tile: TileShape::new(2, 8, 8),
        })
        .unwrap();
        // Rank 0 sends tokens 0, 1 to rank 1; rank 1 sends nothing.
        let p0 = SourcePlan::new(&layout, vec![vec![], vec![0, 1]]).unwrap();
        let p1 = SourcePlan::new(&layout, vec![vec![], vec![]]).unwrap();
        let plan = RoutingPlan::new(&layout, vec![p0, p1]).unwrap();
        (layout, plan)
    }

    fn ev(rank: u32, kind: TaskKind, source: u32, owner: u32, t: (u64, u64)) -> TraceEvent {
        TraceEvent {
            rank,
            processor: 0,
            kind,
            source,
            owner,
            local_expert: 0,
            row_tile: 0,
            col_tile: 0,
            start_ns: t.0,
            end_ns: t.1,
        }
    }

    /// The graph: GEMM0 and GEMM1 of (0 -> 1) on rank 1, then rank 0's combine; rank 1's combine
    /// has no prerequisite.
    fn good() -> Vec<TraceEvent> {
        vec![
            ev(1, TaskKind::Gemm0, 0, 1, (0, 10)),
            ev(1, TaskKind::Gemm1, 0, 1, (10, 20)),
            ev(0, TaskKind::Combine, 0, 0, (25, 30)),
            ev(1, TaskKind::Combine, 1, 1, (0, 1)),
        ]
    }

    fn shared() -> Clocks {
        Clocks::shared(2)
    }

    #[test]
    fn accepts_a_legal_trace() {
        let (layout, plan) = setup();
        assert_eq!(
            check(&layout, &plan, &good(), &shared()),
            Ok(ClockAlignment { offset_ns: vec![0, 0] })
        );
    }

    #[test]
    fn rejects_each_departure() {
        let (layout, plan) = setup();
        let mut t = good();
        t.pop();
        assert!(matches!(check(&layout, &plan, &t, &shared()), Err(ConformanceError::Missing(_))));
        let mut t = good();
        t.push(t[0]);
        assert!(matches!(
            check(&layout, &plan, &t, &shared()),
            Err(ConformanceError::Repeated { count: 2, .. })
        ));
        let mut t = good();
        t.push(ev(0, TaskKind::Gemm0, 1, 0, (0, 1)));
        assert!(matches!(
            check(&layout, &plan, &t, &shared()),
            Err(ConformanceError::Unexpected(_))
        ));
        let mut t = good();
        t[0].rank = 0;
        assert!(matches!(
            check(&layout, &plan, &t, &shared()),
            Err(ConformanceError::WrongRank { expected: 1, found: 0, .. })
        ));
        let mut t = good();
        t[2].start_ns = 19;
        let err = check(&layout, &plan, &t, &shared()).unwrap_err();
        assert!(matches!(err, ConformanceError::EarlyStart { start_ns: 19, end_ns: 20, .. }));
        assert!(err.to_string().contains("gemm1 (source 0, owner 1"), "{err}");
        let mut t = good();
        t[1].end_ns = 5;
        assert!(matches!(
            check(&layout, &plan, &t, &shared()),
            Err(ConformanceError::BadInterval { .. })
        ));
    }

    /// Both ranks send one row tile to the other: each combine waits for the other rank's
    /// GEMM1, so dependencies cross the two clocks in both directions.
    fn exchange() -> (HeapLayout, RoutingPlan) {
        let (layout, _) = setup();
        let p0 = SourcePlan::new(&layout, vec![vec![], vec![0]]).unwrap();
        let p1 = SourcePlan::new(&layout, vec![vec![1], vec![]]).unwrap();
        let plan = RoutingPlan::new(&layout, vec![p0, p1]).unwrap();
        (layout, plan)
    }

    /// The exchange on one true time line (rank 0 -> 1 tile done at 20, 1 -> 0 at 40), then
    /// each rank's times read on its own clock: rank `r`'s clock is `skew[r]` ahead.
    fn exchange_trace(skew: [u64; 2], combines_at: [u64; 2]) -> Vec<TraceEvent> {
        let mut t = vec![
            ev(1, TaskKind::Gemm0, 0, 1, (0, 10)),
            ev(1, TaskKind::Gemm1, 0, 1, (10, 20)),
            ev(0, TaskKind::Gemm0, 1, 0, (20, 30)),
            ev(0, TaskKind::Gemm1, 1, 0, (30, 40)),
            ev(0, TaskKind::Combine, 0, 0, (combines_at[0], combines_at[0] + 5)),
            ev(1, TaskKind::Combine, 1, 1, (combines_at[1], combines_at[1] + 5)),
        ];
        for e in &mut t {
            e.start_ns += skew[e.rank as usize];
            e.end_ns += skew[e.rank as usize];
        }
        t
    }

    #[test]
    fn cross_clock_dependencies_need_one_consistent_offset() {
        let (layout, plan) = exchange();
        let two = Clocks::per_rank(vec![0, 1]);
        // Rank 1's clock reads 700 us ahead: directly compared, rank 0's combine would look
        // early, but an offset orders everything and the alignment recovers it (within the
        // slack the dependencies leave: combine 0 at 25 >= 20, combine 1 at 45 >= 40).
        let t = exchange_trace([0, 700_000], [25, 45]);
        assert!(matches!(
            check(&layout, &plan, &t, &shared()),
            Err(ConformanceError::EarlyStart { .. })
        ));
        let align = check(&layout, &plan, &t, &two).unwrap();
        let x = align.offset_ns[1] - align.offset_ns[0];
        assert!((-700_005..=-699_995).contains(&x), "offset {x}");
        let mut aligned = t.clone();
        align.apply(&mut aligned);
        assert_eq!(check(&layout, &plan, &aligned, &shared()).map(|_| ()), Ok(()));
        assert_eq!(aligned.iter().map(|e| e.start_ns).min(), Some(0));
        // Ranks on one clock are compared directly, whatever the other clocks do.
        let one = Clocks::per_rank(vec![5, 5]);
        assert!(matches!(
            check(&layout, &plan, &t, &one),
            Err(ConformanceError::EarlyStart { .. })
        ));
        // A combine that starts 10 ns before the other rank's GEMM1 ended, while the other
        // combine waited only 5 ns: the two slacks sum below zero, so no offset orders both.
        let t = exchange_trace([0, 700_000], [10, 45]);
        match check(&layout, &plan, &t, &two) {
            Err(e @ ConformanceError::Acausal { .. }) => {
                let ConformanceError::Acausal { cycle } = &e else { unreachable!() };
                assert_eq!(cycle.len(), 2, "{e}");
                assert!(e.to_string().contains("on clock 1"), "{e}");
            }
            other => panic!("expected an acausal cycle, got {other:?}"),
        }
        // Clocks for the wrong number of ranks are an error, not a panic.
        assert!(matches!(
            check(&layout, &plan, &t, &Clocks::shared(3)),
            Err(ConformanceError::Clocks { clocks: 3, world: 2 })
        ));
    }

    #[test]
    fn one_way_dependencies_always_find_an_offset() {
        // Only rank 0 -> rank 1 traffic: any reading of rank 1's clock is explainable.
        let (layout, plan) = setup();
        let mut t = good();
        t[2].start_ns = 0;
        t[2].end_ns = 1;
        let align = check(&layout, &plan, &t, &Clocks::per_rank(vec![0, 1])).unwrap();
        align.apply(&mut t);
        assert_eq!(check(&layout, &plan, &t, &shared()).map(|_| ()), Ok(()));
    }

    /// Three ranks on three clocks, each sending one row tile to the next (0 -> 1 -> 2 -> 0):
    /// each combine depends on the previous rank's GEMM1, so the dependencies form one cycle
    /// through all three clocks. `wait[r]` is how long rank r's combine waits after its
    /// prerequisite ends (negative: it starts early), on one true time line.
    fn ring(wait: [i64; 3]) -> (HeapLayout, RoutingPlan, Vec<TraceEvent>) {
        let layout = HeapLayout::new(Geometry {
            world: 3,
            local_experts: 1,
            tokens: 1,
            capacity: 1,
            hidden: 8,
            inter: 8,
            elem_bytes: 4,
            tile: TileShape::new(2, 8, 8),
        })
        .unwrap();
        let to = |next: usize| {
            let mut packets = vec![vec![]; 3];
            packets[next] = vec![0];
            SourcePlan::new(&layout, packets).unwrap()
        };
        let plan = RoutingPlan::new(&layout, vec![to(1), to(2), to(0)]).unwrap();
        let mut t = Vec::new();
        for src in 0..3u32 {
            let owner = (src + 1) % 3;
            let base = 100 * src as u64;
            t.push(ev(owner, TaskKind::Gemm0, src, owner, (base, base + 10)));
            t.push(ev(owner, TaskKind::Gemm1, src, owner, (base + 10, base + 20)));
            let start = (base as i64 + 20 + wait[src as usize]) as u64;
            t.push(ev(src, TaskKind::Combine, src, src, (start, start + 5)));
        }
        // Rank r's clock reads r milliseconds ahead.
        for e in &mut t {
            e.start_ns += e.rank as u64 * 1_000_000;
            e.end_ns += e.rank as u64 * 1_000_000;
        }
        (layout, plan, t)
    }

    #[test]
    fn a_cycle_through_three_clocks_is_found_whole() {
        let clocks = Clocks::per_rank(vec![0, 1, 2]);
        // Causal: every combine waits; the alignment puts the trace on one time base.
        let (layout, plan, t) = ring([5, 0, 7]);
        let align = check(&layout, &plan, &t, &clocks).unwrap();
        let mut aligned = t.clone();
        align.apply(&mut aligned);
        assert!(check(&layout, &plan, &aligned, &Clocks::shared(3)).is_ok());
        // One combine starts 9 ns early while the others wait 5 and 3: the slacks around the
        // cycle sum to -1, and the error names the whole cycle, one dependency per clock pair.
        let (layout, plan, t) = ring([5, -9, 3]);
        match check(&layout, &plan, &t, &clocks) {
            Err(ConformanceError::Acausal { cycle }) => {
                assert_eq!(cycle.len(), 3, "{cycle:?}");
                let mut pairs: Vec<_> =
                    cycle.iter().map(|d| (d.prerequisite_clock, d.task_clock)).collect();
                pairs.sort();
                assert_eq!(pairs, [(0, 2), (1, 0), (2, 1)]);
            }
            other => panic!("expected an acausal cycle, got {other:?}"),
        }
    }

    proptest::proptest! {
        /// Any causal exchange read on clocks with arbitrary offsets conforms, and aligning it
        /// gives a trace that conforms on one clock; moving a combine before its cross-clock
        /// prerequisite (by more than the other direction's slack) is caught.
        #[test]
        fn offsets_are_found_exactly_when_causal(
            skew in proptest::array::uniform2(0u64..1 << 40),
            gap in proptest::array::uniform2(0u64..1000),
            early in 1u64..20,
        ) {
            let (layout, plan) = exchange();
            let two = Clocks::per_rank(vec![0, 1]);
            let t = exchange_trace(skew, [20 + gap[0], 40 + gap[1]]);
            let align = check(&layout, &plan, &t, &two).unwrap();
            let mut aligned = t.clone();
            align.apply(&mut aligned);
            proptest::prop_assert!(check(&layout, &plan, &aligned, &shared()).is_ok());
            // Rank 1's combine `early` ns before rank 0's GEMM1 ended while rank 0's combine
            // waits the least it can: no offset explains both.
            let t = exchange_trace(skew, [20, 40 - early]);
            let acausal = matches!(
                check(&layout, &plan, &t, &two),
                Err(ConformanceError::Acausal { .. })
            );
            proptest::prop_assert!(acausal);
        }
    }
}
