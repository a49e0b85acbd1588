//! Trace conformance: did a forward execute exactly the protocol's task graph, in a legal order?
//!
//! [`check`] works from [`TraceEvent`]s alone, so it judges any backend: the simulator's traces
//! and the CUDA kernel's recorded `%globaltimer` traces alike. It checks that
//!
//! * every task of [`graph_tasks`] ran exactly once, on its executor rank, and nothing else ran;
//! * every task started no earlier than each of its [`prerequisites`] ended.
//!
//! Timestamps of all ranks must share one clock origin (see [`TraceEvent`]).

use std::collections::HashMap;
use std::fmt;

use flashdmoe_proto::graph::{graph_tasks, prerequisites};
use flashdmoe_proto::{Epoch, HeapLayout, ProtoError, RoutingPlan, TaskKey};
use thiserror::Error;

use crate::trace::TraceEvent;

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
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConformanceError {
    /// The graph could not be computed (layout and plan disagree).
    #[error("protocol: {0}")]
    Proto(#[from] ProtoError),
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

fn key(e: &TraceEvent) -> TaskKey {
    (e.kind, e.source, e.owner, e.local_expert, e.row_tile, e.col_tile)
}

/// Checks that `events` (all ranks' trace of one forward) executed exactly the task graph of
/// `plan` under `layout`, respecting every dependency. Reports the first departure found.
pub fn check(
    layout: &HeapLayout,
    plan: &RoutingPlan,
    events: &[TraceEvent],
) -> Result<(), ConformanceError> {
    let mut ran: HashMap<TaskKey, (usize, &TraceEvent)> = HashMap::with_capacity(events.len());
    for e in events {
        if e.end_ns < e.start_ns {
            return Err(ConformanceError::BadInterval {
                task: Task(key(e)),
                start_ns: e.start_ns,
                end_ns: e.end_ns,
            });
        }
        ran.entry(key(e)).or_insert((0, e)).0 += 1;
    }
    for e in events {
        let count = ran[&key(e)].0;
        if count > 1 {
            return Err(ConformanceError::Repeated { task: Task(key(e)), count });
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
        let extra = events.iter().map(key).find(|k| !graph.contains(k));
        return Err(ConformanceError::Unexpected(Task(extra.expect("an event outside the graph"))));
    }
    for task in &tasks {
        let k = task.key()?;
        let event = ran[&k].1;
        for p in prerequisites(layout, plan, task)? {
            let before = ran[&p].1;
            if event.start_ns < before.end_ns {
                return Err(ConformanceError::EarlyStart {
                    task: Task(k),
                    start_ns: event.start_ns,
                    prerequisite: Task(p),
                    end_ns: before.end_ns,
                });
            }
        }
    }
    Ok(())
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
            tile: TileShape { bm: 2, bn: 8, bk: 8 },
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

    #[test]
    fn accepts_a_legal_trace() {
        let (layout, plan) = setup();
        assert_eq!(check(&layout, &plan, &good()), Ok(()));
    }

    #[test]
    fn rejects_each_departure() {
        let (layout, plan) = setup();
        let mut t = good();
        t.pop();
        assert!(matches!(check(&layout, &plan, &t), Err(ConformanceError::Missing(_))));
        let mut t = good();
        t.push(t[0]);
        assert!(matches!(
            check(&layout, &plan, &t),
            Err(ConformanceError::Repeated { count: 2, .. })
        ));
        let mut t = good();
        t.push(ev(0, TaskKind::Gemm0, 1, 0, (0, 1)));
        assert!(matches!(check(&layout, &plan, &t), Err(ConformanceError::Unexpected(_))));
        let mut t = good();
        t[0].rank = 0;
        assert!(matches!(
            check(&layout, &plan, &t),
            Err(ConformanceError::WrongRank { expected: 1, found: 0, .. })
        ));
        let mut t = good();
        t[2].start_ns = 19;
        let err = check(&layout, &plan, &t).unwrap_err();
        assert!(matches!(err, ConformanceError::EarlyStart { start_ns: 19, end_ns: 20, .. }));
        assert!(err.to_string().contains("gemm1 (source 0, owner 1"), "{err}");
        let mut t = good();
        t[1].end_ns = 5;
        assert!(matches!(check(&layout, &plan, &t), Err(ConformanceError::BadInterval { .. })));
    }
}
