//! [`Scheduler`]: hands queued tasks to idle processors and decides when the rank is done.

use std::collections::VecDeque;

use flashdmoe_proto::{HeapLayout, ProtoError, TaskCounts, TaskKind};

use super::{Awaiting, Poll, RankState, Role, RuntimeError};
use crate::sync::Ordering;

/// The scheduler of one rank for one forward (one per rank; a warp on the GPU).
///
/// Each poll: learns the task bound once every dispatch signal has been seen
/// ([`TaskCounts::for_rank`] over the reported row counts), takes "ready" reports from the
/// ready queue (each one after the first from a processor completes that processor's task),
/// stops when completions reach the bound (ringing every doorbell with a stop), and otherwise
/// rings idle processors' doorbells with queued tasks, in queue order.
#[derive(Debug)]
pub struct Scheduler<'a> {
    layout: &'a HeapLayout,
    state: &'a RankState,
    epoch: u32,
    bound: Option<u64>,
    completed: TaskCounts,
    next_task: usize,
    next_ready: usize,
    idle: VecDeque<u32>,
    busy: Vec<Option<TaskKind>>,
}

impl<'a> Scheduler<'a> {
    /// The scheduler of a rank whose forward runs at `epoch` (raw value, for reports).
    pub fn new(layout: &'a HeapLayout, state: &'a RankState, epoch: u32) -> Self {
        Scheduler {
            layout,
            state,
            epoch,
            bound: None,
            completed: TaskCounts::default(),
            next_task: 0,
            next_ready: 0,
            idle: VecDeque::new(),
            busy: vec![None; state.processors() as usize],
        }
    }

    /// Tasks completed so far, per kind (the rank's task counts once done).
    pub fn completed(&self) -> TaskCounts {
        self.completed
    }

    fn learn_bound(&mut self) {
        let packets = self.state.received_rows.len() as u32;
        if self.bound.is_none() && self.state.packets_seen.load(Ordering::Acquire) == packets {
            let rows = self.state.received_rows.iter().map(|r| r.load(Ordering::Relaxed));
            self.bound = Some(TaskCounts::for_rank(self.layout, rows).total());
        }
    }
}

impl Role for Scheduler<'_> {
    fn name(&self) -> String {
        "scheduler".into()
    }

    fn poll(&mut self) -> Result<Poll, RuntimeError> {
        let mut progress = false;
        self.learn_bound();
        while let Some(processor) = self.state.ready.get(self.next_ready) {
            self.next_ready += 1;
            let busy = self.busy.get_mut(processor as usize).ok_or(ProtoError::OutOfRange {
                what: "ready processor",
                value: processor as u64,
                limit: self.state.processors() as u64,
            })?;
            if let Some(kind) = busy.take() {
                self.completed.add(kind);
            }
            self.idle.push_back(processor);
            progress = true;
        }
        if self.bound == Some(self.completed.total()) {
            // Every task is complete, so every processor is idle: none is reading its slot.
            let queued = self.state.tasks_queued() as u64;
            if queued != self.completed.total() {
                return Err(ProtoError::Inconsistent {
                    field: "tasks queued at termination",
                    expected: self.completed.total(),
                    found: queued,
                }
                .into());
            }
            self.state.doorbells.iter().for_each(|d| d.stop());
            return Ok(Poll::Done);
        }
        while let Some(&processor) = self.idle.front() {
            let Some(task) = self.state.tasks.get(self.next_task) else { break };
            self.next_task += 1;
            self.idle.pop_front();
            self.busy[processor as usize] = Some(task.task_kind()?);
            // SAFETY: `processor` came from the ready queue (acquired above or in an earlier
            // poll) and has not been rung since, so it is idle.
            unsafe { self.state.doorbells[processor as usize].ring(task) };
            progress = true;
        }
        Ok(if progress { Poll::Progress } else { Poll::Idle })
    }

    /// While the bound is unknown: the dispatch signals, `seen` = packets seen so far. Then:
    /// the task completions, `seen` = tasks completed so far.
    fn awaiting(&self) -> Awaiting {
        match self.bound {
            None => Awaiting {
                awaited: format!(
                    "all {} dispatch signals (packets seen so far in `seen`)",
                    self.state.received_rows.len()
                ),
                expected_epoch: self.epoch,
                seen: self.state.packets_seen.load(Ordering::Relaxed) as u64,
            },
            Some(bound) => Awaiting {
                awaited: format!("{bound} task completions (completed so far in `seen`)"),
                expected_epoch: self.epoch,
                seen: self.completed.total(),
            },
        }
    }
}
