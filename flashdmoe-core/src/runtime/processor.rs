//! [`Processor`]: runs one task at a time, and the [`TileExecutor`] that does the math.

use std::time::Instant;

use flashdmoe_proto::graph::{gemm0_per_row_tile, gemm1_tasks};
use flashdmoe_proto::{ProtoError, TaskDescriptor, TaskKind, signal};

use super::{Awaiting, Mail, Poll, RankContext, Role, RuntimeError, SymmetricHeap};
use crate::trace::TraceEvent;

/// The math of one tile task, provided by the backend.
///
/// * GEMM0: read the tile's input rows (`input_offset`, this rank's heap), write the activated
///   `valid_rows x bn` tile at `output_offset` (this rank's intermediate rows), rounded to the
///   element type.
/// * GEMM1: read the row tile's intermediate rows, put the `valid_rows x bn` output tile at
///   `output_offset` of the **source's** heap (its return region), rounded. The processor
///   raises the return signal afterwards; the executor must not.
/// * Combine: for each of the tile's tokens, sum `weight * returned row` over its kept slots in
///   slot order, round, and write the `valid_rows x bn` tile at `output_offset` of the rank's
///   output.
///
/// Reads and writes are ordered by the runtime: when `execute` is called, everything the task
/// reads has been published to this thread.
pub trait TileExecutor: Sync {
    /// Computes `task`'s tile.
    fn execute(&self, task: &TaskDescriptor) -> Result<(), RuntimeError>;
}

/// One processor of a rank for one forward (a thread block on the GPU).
///
/// Loops: wait for the next word in its [`Mailbox`](super::Mailbox); on a task index, read the
/// task from the rank's queue and execute it, then for GEMM0 increment the row tile's counter
/// and, if this completed the row tile ([`gemm0_per_row_tile`]), queue the row tile's GEMM1
/// tasks; for GEMM1 release-store the return signal into the source's heap; then report the
/// task complete. Done at the [`STOP`](super::STOP) word.
#[derive(Debug)]
pub struct Processor<'a, H, E> {
    ctx: RankContext<'a, H>,
    index: u32,
    executor: &'a E,
    taken: u32,
    clock: Option<Instant>,
    trace: Vec<TraceEvent>,
}

impl<'a, H: SymmetricHeap, E: TileExecutor> Processor<'a, H, E> {
    /// Processor `index` (< the rank state's processor count) of the rank in `ctx`.
    ///
    /// With `trace_origin`, records a [`TraceEvent`] per task, timed in nanoseconds since that
    /// instant (share it between all ranks of a forward so their events compare). A task's end
    /// is taken before its completion is published (counter increment or return signal), so a
    /// dependent task always starts after its prerequisites end.
    pub fn new(
        ctx: RankContext<'a, H>,
        index: u32,
        executor: &'a E,
        trace_origin: Option<Instant>,
    ) -> Result<Self, RuntimeError> {
        if index >= ctx.state.processors() {
            return Err(ProtoError::OutOfRange {
                what: "processor",
                value: index as u64,
                limit: ctx.state.processors() as u64,
            }
            .into());
        }
        Ok(Processor { ctx, index, executor, taken: 0, clock: trace_origin, trace: Vec::new() })
    }

    /// The trace events recorded (empty without a clock).
    pub fn into_trace(self) -> Vec<TraceEvent> {
        self.trace
    }

    fn run(&mut self, task: &TaskDescriptor) -> Result<(), RuntimeError> {
        let ctx = self.ctx;
        let kind = task.task_kind()?;
        let start = self.clock.map(|origin| origin.elapsed());
        self.executor.execute(task)?;
        let end = self.clock.map(|origin| origin.elapsed());
        match kind {
            TaskKind::Gemm0 => {
                let done = ctx.heap.add_counter(ctx.rank, task.counter_offset);
                let needed = gemm0_per_row_tile(ctx.layout);
                if done == needed {
                    for next in gemm1_tasks(
                        ctx.layout,
                        ctx.epoch,
                        task.source_rank,
                        ctx.rank,
                        task.local_expert,
                        task.row_tile,
                        task.valid_rows,
                    ) {
                        ctx.state.push_task(next?)?;
                    }
                } else if done > needed {
                    return Err(ProtoError::Inconsistent {
                        field: "row-tile counter",
                        expected: needed as u64,
                        found: done as u64,
                    }
                    .into());
                }
            }
            TaskKind::Gemm1 => {
                let tile = ctx.layout.return_tile_id(task.row_tile, task.col_tile)?;
                let word = signal::encode_return(ctx.epoch, tile);
                ctx.heap.store_signal(task.source_rank, task.signal_offset, word);
            }
            TaskKind::Combine => {}
        }
        if let (Some(start), Some(end)) = (start, end) {
            self.trace.push(TraceEvent {
                rank: ctx.rank,
                processor: self.index,
                kind,
                source: task.source_rank,
                owner: task.owner_rank,
                local_expert: task.local_expert,
                row_tile: task.row_tile,
                col_tile: task.col_tile,
                start_ns: start.as_nanos() as u64,
                end_ns: end.as_nanos() as u64,
            });
        }
        Ok(())
    }
}

impl<H: SymmetricHeap, E: TileExecutor> Role for Processor<'_, H, E> {
    fn name(&self) -> String {
        format!("processor {}", self.index)
    }

    fn poll(&mut self) -> Result<Poll, RuntimeError> {
        let state = self.ctx.state;
        let mailbox = &state.mailboxes[self.index as usize];
        match mailbox.take(self.taken) {
            None => Ok(Poll::Idle),
            Some(Mail::Stop) => Ok(Poll::Done),
            Some(Mail::Task(index)) => {
                // SAFETY: the scheduler acquired the task's publication before posting its index,
                // and `take` acquired the post.
                let task = unsafe { state.tasks.read_handed(index as usize) }.ok_or(
                    ProtoError::OutOfRange {
                        what: "posted task index",
                        value: index as u64,
                        limit: state.tasks.capacity() as u64,
                    },
                )?;
                self.run(&task)?;
                self.taken += 1;
                // SAFETY: this is the mailbox's processor, and it is done with the word.
                unsafe { mailbox.complete(self.taken) };
                Ok(Poll::Progress)
            }
        }
    }

    /// The mailbox; `seen` is the number of words taken from it so far.
    fn awaiting(&self) -> Awaiting {
        Awaiting {
            awaited: "a task or the stop in its mailbox".into(),
            expected_epoch: self.ctx.epoch.get(),
            seen: self.taken as u64,
        }
    }
}
