//! [`Processor`]: runs one task at a time, and the [`TileExecutor`] that does the math.

use std::time::Instant;

use flashdmoe_proto::graph::{gemm0_per_row_tile, gemm1_tasks};
use flashdmoe_proto::{ProtoError, TaskDescriptor, TaskKind, signal};

use super::{Awaiting, Mail, Poll, RankContext, Role, RuntimeError, SymmetricHeap, pair_peer};
use crate::sync::Ordering;
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
///
/// A pair half ([`Mail::Pair`], in a layer with paired GEMM0 tasks; docs/dev/paired-tasks.md)
/// is run only once the processor's cluster peer ([`pair_peer`]) has reached the same pair: the
/// processor counts the pairs it has reached in the rank's state (a release store), and waits,
/// polling, until the peer's count (acquire-loaded) is at least its own. The scheduler posts
/// both halves of a pair in one poll and each mailbox is FIFO, so the two meet their pairs in
/// the same order and the wait ends once the peer has finished what was before the pair in its
/// mailbox (at most one task). This is the rendezvous of the kernel's `align_for_pair`
/// (`processor_wgmma.cuh`), where both CTAs' pipelines restart together; like every wait it is
/// bounded by the forward's timeout (a [`TimeoutReport`](crate::backend::TimeoutReport) naming
/// the peer), never a hang. Each half is then run, counted and published as a solo task.
#[derive(Debug)]
pub struct Processor<'a, H, E> {
    ctx: RankContext<'a, H>,
    index: u32,
    executor: &'a E,
    taken: u32,
    /// Pairs reached so far (the last one maybe still waiting for the peer).
    pairs: u32,
    /// Whether the word now in the mailbox is a pair already counted in `pairs`, waiting for
    /// the peer.
    at_pair: bool,
    clock: Option<Instant>,
    trace: Vec<TraceEvent>,
    /// The gate the word now in the mailbox waits at (the waves), for [`Role::awaiting`].
    gate: Option<Gate>,
}

/// What a task posted by the waves waits for before its inputs are read
/// ([`Waves`](super::Waves)).
#[derive(Clone, Copy, Debug)]
enum Gate {
    /// A second-wave GEMM1: its row tile's counter at `cti` (`seen`: the count last read).
    RowTile { source: u32, local_expert: u32, row_tile: u32, seen: u32 },
    /// A third-wave combine: the ready flag of this queue entry.
    Flag { index: u32 },
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
        Ok(Processor {
            ctx,
            index,
            executor,
            taken: 0,
            pairs: 0,
            at_pair: false,
            clock: trace_origin,
            trace: Vec::new(),
            gate: None,
        })
    }

    /// Pair halves this processor has reached so far (each waited for its peer, or is
    /// waiting).
    pub fn pairs_reached(&self) -> u32 {
        self.pairs
    }

    /// The trace events recorded (empty without a clock).
    pub fn into_trace(self) -> Vec<TraceEvent> {
        self.trace
    }

    /// The task at queue entry `index`, once the gates of the waves let it through (`None`: not
    /// yet, the gate recorded for [`Role::awaiting`]). A third-wave combine: its entry's ready
    /// flag, acquired (it was written before the roles ran); a GEMM1 under the second wave: its
    /// row tile's counter at `cti`, acquired (every GEMM0 of the row tile wrote its rows first).
    /// Any other task was handed on by the scheduler, which acquired its publication.
    fn pass_gates(&mut self, index: u32) -> Result<Option<TaskDescriptor>, RuntimeError> {
        let ctx = self.ctx;
        let waves = ctx.state.waves();
        let task = if (waves.combine_base..waves.combine_base + waves.third).contains(&index) {
            match ctx.state.tasks.get(index as usize) {
                Some(entry) => entry.task,
                None => {
                    self.gate = Some(Gate::Flag { index });
                    return Ok(None);
                }
            }
        } else {
            // SAFETY: the scheduler acquired the task's publication before posting its index,
            // and `take` acquired the post; the waves' entries were written before the roles ran.
            unsafe { ctx.state.tasks.read_handed(index as usize) }
                .ok_or(ProtoError::OutOfRange {
                    what: "posted task index",
                    value: index as u64,
                    limit: ctx.state.tasks.capacity() as u64,
                })?
                .task
        };
        if waves.second > 0 && task.kind == TaskKind::Gemm1 as u32 {
            let (source, local_expert, row_tile) =
                (task.source_rank, task.local_expert, task.row_tile);
            let counter = ctx.layout.row_tile_counter(source, local_expert, row_tile)?;
            let seen = ctx.heap.load_counter(ctx.rank, counter);
            if seen < gemm0_per_row_tile(ctx.layout) {
                self.gate = Some(Gate::RowTile { source, local_expert, row_tile, seen });
                return Ok(None);
            }
        }
        self.gate = None;
        Ok(Some(task))
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
                // Under the second wave the row tile's GEMM1 tasks are queued already.
                if done == needed && ctx.state.waves().second == 0 {
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
        let index = match mailbox.take(self.taken) {
            None => return Ok(Poll::Idle),
            Some(Mail::Stop) => return Ok(Poll::Done),
            Some(Mail::Task(index)) => index,
            Some(Mail::Pair(index)) => {
                let peer =
                    pair_peer(self.index, state.processors()).ok_or(ProtoError::Inconsistent {
                        field: "pairs posted to a processor outside every cluster",
                        expected: 0,
                        found: self.pairs as u64 + 1,
                    })?;
                let mut arrived = false;
                if !self.at_pair {
                    self.at_pair = true;
                    self.pairs += 1;
                    state.pairs_reached[self.index as usize].store(self.pairs, Ordering::Release);
                    arrived = true;
                }
                if state.pairs_reached[peer as usize].load(Ordering::Acquire) < self.pairs {
                    return Ok(if arrived { Poll::Progress } else { Poll::Idle });
                }
                self.at_pair = false;
                index
            }
        };
        let Some(task) = self.pass_gates(index)? else { return Ok(Poll::Idle) };
        self.run(&task)?;
        self.taken += 1;
        // SAFETY: this is the mailbox's processor, and it is done with the word.
        unsafe { mailbox.complete(self.taken) };
        let waves = state.waves();
        if self.taken == 1 && self.index < waves.third {
            // The third wave: word 0 is complete, so slot 0 is free; the scheduler counted
            // this word from the start (Mailbox, "The waves").
            // SAFETY: this is the mailbox's processor, every word but the last is complete,
            // and it completes the next only after this post.
            if !unsafe { mailbox.post_own(waves.combine_base + self.index) } {
                return Err(ProtoError::Inconsistent {
                    field: "mailbox room for the third wave's self-post",
                    expected: 1,
                    found: (mailbox.assigned() - mailbox.completed()) as u64,
                }
                .into());
            }
        }
        Ok(Poll::Progress)
    }

    /// The mailbox; `seen` is the number of words taken from it so far. At a pair, its cluster
    /// peer; `seen` is the number of pairs the peer has reached.
    fn awaiting(&self) -> Awaiting {
        let state = self.ctx.state;
        if let (true, Some(peer)) = (self.at_pair, pair_peer(self.index, state.processors())) {
            return Awaiting {
                awaited: format!(
                    "its cluster peer, processor {peer}, at pair {} (pairs the peer reached in \
                     `seen`)",
                    self.pairs
                ),
                expected_epoch: self.ctx.epoch.get(),
                seen: state.pairs_reached[peer as usize].load(Ordering::Relaxed) as u64,
            };
        }
        match self.gate {
            Some(Gate::RowTile { source, local_expert, row_tile, seen }) => {
                return Awaiting {
                    awaited: format!(
                        "the row-tile counter of source {source}, local expert {local_expert}, \
                         row tile {row_tile} to reach {} (its second-wave GEMM1; the count in \
                         `seen`)",
                        gemm0_per_row_tile(self.ctx.layout)
                    ),
                    expected_epoch: self.ctx.epoch.get(),
                    seen: seen as u64,
                };
            }
            Some(Gate::Flag { index }) => {
                return Awaiting {
                    awaited: format!(
                        "the ready flag of combine task {index} (its third-wave word; words \
                         taken in `seen`)"
                    ),
                    expected_epoch: self.ctx.epoch.get(),
                    seen: self.taken as u64,
                };
            }
            None => {}
        }
        Awaiting {
            awaited: "a task or the stop in its mailbox".into(),
            expected_epoch: self.ctx.epoch.get(),
            seen: self.taken as u64,
        }
    }
}

#[cfg(all(test, not(flashdmoe_loom)))]
mod tests {
    use std::sync::atomic::AtomicU32 as Count;
    use std::time::Duration;

    use flashdmoe_proto::{Epoch, Geometry, HeapLayout, TileShape};

    use super::*;
    use crate::runtime::{NO_TASK, PAIR_BIT, RankState, drive};

    /// A heap no test task touches (combine tasks only).
    struct NoHeap;

    impl SymmetricHeap for NoHeap {
        fn load_signal(&self, _: u32, _: u64) -> u64 {
            unreachable!()
        }
        fn store_signal(&self, _: u32, _: u64, _: u64) {
            unreachable!()
        }
        fn add_counter(&self, _: u32, _: u64) -> u32 {
            unreachable!()
        }
        fn load_counter(&self, _: u32, _: u64) -> u32 {
            unreachable!()
        }
        fn reset_counters(&self, _: u32) {
            unreachable!()
        }
        unsafe fn put(&self, _: u32, _: u64, _: &[u8]) {
            unreachable!()
        }
        unsafe fn get(&self, _: u32, _: u64, _: &mut [u8]) {
            unreachable!()
        }
    }

    /// Counts the tasks it runs.
    struct Counting(Count);

    impl TileExecutor for Counting {
        fn execute(&self, _: &TaskDescriptor) -> Result<(), RuntimeError> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    fn layout() -> HeapLayout {
        HeapLayout::new(Geometry {
            world: 1,
            local_experts: 1,
            tokens: 4,
            capacity: 4,
            hidden: 8,
            inter: 8,
            elem_bytes: 4,
            tile: TileShape::new(1, 8, 8),
        })
        .unwrap()
    }

    /// Rank 0's context at the first epoch, with no heap (the tests' tasks touch none).
    fn context<'a>(layout: &'a HeapLayout, state: &'a RankState) -> RankContext<'a, NoHeap> {
        RankContext { rank: 0, epoch: Epoch::FIRST, layout, heap: &NoHeap, state }
    }

    /// Queues two combine tasks and posts them as a pair to processors 1 and 2 of 3.
    fn posted_pair(layout: &HeapLayout) -> RankState {
        let state = RankState::new(layout, 3).unwrap().with_pairs(true);
        let task = TaskDescriptor { kind: TaskKind::Combine as u32, ..NO_TASK };
        state.push_task(task).unwrap();
        state.push_task(task).unwrap();
        // SAFETY: the test is the only poster.
        unsafe {
            assert!(state.mailboxes[1].post(PAIR_BIT));
            assert!(state.mailboxes[2].post(1 | PAIR_BIT));
        }
        state
    }

    #[test]
    fn a_pair_half_waits_for_its_peer_and_times_out_naming_it() {
        let layout = layout();
        let state = posted_pair(&layout);
        let ctx = context(&layout, &state);
        let executor = Counting(Count::new(0));
        let mut processor = Processor::new(ctx, 1, &executor, None).unwrap();
        let result = drive(0, &state, Duration::from_millis(50), &mut [&mut processor]);
        let Err(RuntimeError::Timeout(report)) = result else { panic!("{result:?}") };
        assert_eq!(report.role, "processor 1");
        assert!(report.awaited.contains("processor 2"), "{}", report.awaited);
        assert_eq!(report.seen, 0, "the peer reached no pair");
        assert_eq!(executor.0.load(Ordering::Relaxed), 0, "nothing ran before the peer came");
        assert_eq!(processor.pairs_reached(), 1);
    }

    #[test]
    fn cluster_peers_run_their_halves_once_both_reached_the_pair() {
        let layout = layout();
        let state = posted_pair(&layout);
        let ctx = context(&layout, &state);
        let executors = [Counting(Count::new(0)), Counting(Count::new(0))];
        let mut first = Processor::new(ctx, 1, &executors[0], None).unwrap();
        let mut second = Processor::new(ctx, 2, &executors[1], None).unwrap();
        // The first arrives and waits; the second arrives and runs its half; then the first.
        assert_eq!(first.poll().unwrap(), Poll::Progress);
        assert_eq!(first.poll().unwrap(), Poll::Idle);
        assert_eq!(executors[0].0.load(Ordering::Relaxed), 0);
        assert_eq!(second.poll().unwrap(), Poll::Progress);
        assert_eq!(executors[1].0.load(Ordering::Relaxed), 1);
        assert_eq!(first.poll().unwrap(), Poll::Progress);
        assert_eq!(executors[0].0.load(Ordering::Relaxed), 1);
        assert_eq!((state.mailboxes[1].completed(), state.mailboxes[2].completed()), (1, 1));
    }

    #[test]
    fn a_pair_half_posted_to_processor_0_is_an_error() {
        let layout = layout();
        let state = RankState::new(&layout, 3).unwrap().with_pairs(true);
        state.push_task(TaskDescriptor { kind: TaskKind::Combine as u32, ..NO_TASK }).unwrap();
        // SAFETY: the test is the only poster.
        unsafe { assert!(state.mailboxes[0].post(PAIR_BIT)) };
        let ctx = context(&layout, &state);
        let executor = Counting(Count::new(0));
        let mut processor = Processor::new(ctx, 0, &executor, None).unwrap();
        assert!(matches!(processor.poll(), Err(RuntimeError::Proto(_))));
    }
}
