//! [`Scheduler`]: hands queued tasks to processors and decides when the rank is done.

use flashdmoe_proto::{HeapLayout, ProtoError, TaskCounts, TaskKind};

use super::{Awaiting, Mailbox, Poll, RankState, Role, RuntimeError, STOP};
use crate::sync::Ordering;

/// What the scheduler remembers of one processor: the completions it has counted, and the kind
/// of each outstanding task by its word number modulo 2 (its mailbox slot).
#[derive(Clone, Copy, Debug, Default)]
struct Track {
    completed: u32,
    kinds: [Option<TaskKind>; 2],
}

/// The scheduler of one rank for one forward (one per rank; a warp on the GPU).
///
/// Each poll: learns the task bound once every dispatch signal has been seen
/// ([`TaskCounts::for_rank`] over the reported row counts); counts the completions each
/// processor reported in its [`Mailbox`]; stops when completions reach the bound (posting
/// [`STOP`] to every mailbox); and otherwise posts queued tasks, in queue order, to processors
/// with room -- the kernel's two passes: first processors with nothing outstanding, then those
/// with one task outstanding, each pass round-robin from where the last poll's handing-out
/// ended.
#[derive(Debug)]
pub struct Scheduler<'a> {
    layout: &'a HeapLayout,
    state: &'a RankState,
    epoch: u32,
    bound: Option<u64>,
    completed: TaskCounts,
    next_task: usize,
    cursor: usize,
    tracks: Vec<Track>,
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
            cursor: 0,
            tracks: vec![Track::default(); state.processors() as usize],
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

    /// Counts the completions reported since the last poll; whether there were any.
    fn count_completions(&mut self) -> Result<bool, RuntimeError> {
        let mut any = false;
        for (mailbox, track) in self.state.mailboxes.iter().zip(&mut self.tracks) {
            let done = mailbox.completed();
            while track.completed != done {
                let slot = (track.completed % 2) as usize;
                let kind = track.kinds[slot].take().ok_or(ProtoError::Inconsistent {
                    field: "mailbox completions",
                    expected: mailbox.assigned() as u64,
                    found: done as u64,
                })?;
                self.completed.add(kind);
                track.completed += 1;
                any = true;
            }
        }
        Ok(any)
    }

    /// Posts queued tasks to processors with room; whether any was posted.
    fn hand_out(&mut self) -> Result<bool, RuntimeError> {
        let processors = self.tracks.len();
        let mut given = 0;
        'passes: for pass in 0..Mailbox::DEPTH {
            for i in 0..processors {
                let q = (self.cursor + i) % processors;
                let mailbox = &self.state.mailboxes[q];
                let track = &mut self.tracks[q];
                if mailbox.assigned() - track.completed > pass {
                    continue;
                }
                let Some(task) = self.state.tasks.get(self.next_task) else { break 'passes };
                let kind = task.task_kind()?;
                let word = mailbox.assigned();
                // SAFETY: this scheduler is the rank's only one, so the only poster.
                if !unsafe { mailbox.post(self.next_task as u32) } {
                    // Only counted completions make room, so a mailbox with room has room.
                    return Err(ProtoError::Inconsistent {
                        field: "mailbox room",
                        expected: pass as u64,
                        found: (word - mailbox.completed()) as u64,
                    }
                    .into());
                }
                track.kinds[(word % 2) as usize] = Some(kind);
                self.next_task += 1;
                given += 1;
            }
        }
        self.cursor = (self.cursor + given) % processors;
        Ok(given > 0)
    }
}

impl Role for Scheduler<'_> {
    fn name(&self) -> String {
        "scheduler".into()
    }

    fn poll(&mut self) -> Result<Poll, RuntimeError> {
        self.learn_bound();
        let progress = self.count_completions()?;
        if self.bound == Some(self.completed.total()) {
            let queued = self.state.tasks_queued() as u64;
            if queued != self.completed.total() {
                return Err(ProtoError::Inconsistent {
                    field: "tasks queued at termination",
                    expected: self.completed.total(),
                    found: queued,
                }
                .into());
            }
            // Every task is complete, so every mailbox has room for the stop.
            for mailbox in self.state.mailboxes.iter() {
                // SAFETY: this scheduler is the rank's only poster.
                if !unsafe { mailbox.post(STOP) } {
                    return Err(ProtoError::Inconsistent {
                        field: "mailbox words outstanding at the stop",
                        expected: 0,
                        found: (mailbox.assigned() - mailbox.completed()) as u64,
                    }
                    .into());
                }
            }
            return Ok(Poll::Done);
        }
        let posted = self.hand_out()?;
        Ok(if progress || posted { Poll::Progress } else { Poll::Idle })
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
