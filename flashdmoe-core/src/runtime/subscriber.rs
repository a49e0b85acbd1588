//! [`Subscriber`]: turns arrived signals into tasks.

use flashdmoe_proto::graph::{combine_task, gemm0_tasks, gemm0_tasks_in};
use flashdmoe_proto::signal::{self, SignalState};
use flashdmoe_proto::{CombineReadiness, Epoch, HeapLayout, ProtoError, SourcePlan, div_ceil};

use super::{Awaiting, Poll, Queued, RankContext, Role, RuntimeError, SymmetricHeap};
use crate::sync::Ordering;

#[derive(Clone, Copy, Debug)]
struct DispatchWatch {
    source: u32,
    local_expert: u32,
    offset: u64,
    seen: u64,
}

#[derive(Clone, Copy, Debug)]
struct ReturnWatch {
    owner: u32,
    local_expert: u32,
    row_tile: u32,
    col_tile: u32,
    tile_id: u32,
    /// The combine readiness groups this tile counts for (first, last).
    groups: (u32, u32),
    offset: u64,
    seen: u64,
}

/// The GEMM0 tasks a packet of `rows` rows creates on its owner in a paired layer, in
/// [`gemm0_tile_paired`](flashdmoe_proto::graph::gemm0_tile_paired)'s order (docs/dev/paired-tasks.md): the same tasks as
/// [`gemm0_tasks`], each column tile's row tiles `2p` and `2p + 1` side by side, the first
/// marked as the head of the pair the two form; an odd last row tile is solo.
pub(crate) fn paired_gemm0_tasks(
    layout: &HeapLayout,
    epoch: Epoch,
    source: u32,
    owner: u32,
    local_expert: u32,
    rows: u32,
) -> impl Iterator<Item = Result<Queued, ProtoError>> + '_ {
    gemm0_tasks_in(layout, epoch, source, owner, local_expert, rows, true)
        .map(|t| t.map(|(task, pair_head)| Queued { task, pair_head }))
}

/// One of a rank's subscribers for one forward (a warp on the GPU).
///
/// The rank's signals are dealt round-robin over its `count` subscribers (this is number
/// `index`): the dispatch signal of packet `i = source * local_experts + local_expert` and the
/// `j`-th return signal the rank is owed (in `(owner, local expert, row tile, column tile)`
/// order) belong to subscriber `i % count` and `j % count`.
///
/// * A dispatch signal of the current epoch announcing `n` rows: queue the packet's GEMM0 tasks,
///   then report `n` to the scheduler (row count, then a release increment of the packets seen).
///   In a paired layer ([`RankState::with_pairs`](super::RankState::with_pairs)) the packet's
///   GEMM0 tasks are queued adjacent, in [`gemm0_tile_paired`](flashdmoe_proto::graph::gemm0_tile_paired)'s order with their pair heads
///   marked (the kernel's `gemm0_task_at` and `mark_pair_head` in `subscriber.cuh`).
/// * A return signal of the current epoch for column tile `c` of a row tile: increment the
///   combine counter `(group, c)` of every readiness group the row tile spans
///   ([`CombineReadiness`]); the arrival that brings one to [`CombineReadiness::expected`]
///   queues the Combine tasks of the group's token tiles in column `c`. Groups expecting no
///   arrival at all are queued at the first poll by the subscriber `group * col_tiles + c`
///   deals them to.
///
/// Done once every watched signal has arrived.
#[derive(Debug)]
pub struct Subscriber<'a, H> {
    ctx: RankContext<'a, H>,
    index: u32,
    count: u32,
    dispatches: Vec<DispatchWatch>,
    returns: Vec<ReturnWatch>,
    readiness: CombineReadiness,
    started: bool,
}

impl<'a, H: SymmetricHeap> Subscriber<'a, H> {
    /// Subscriber `index` of `count` (`index < count`) of the rank in `ctx`, whose own routing
    /// (what it is owed) is `plan`, built for `ctx.layout`.
    pub fn new(
        ctx: RankContext<'a, H>,
        plan: &SourcePlan,
        index: u32,
        count: u32,
    ) -> Result<Self, RuntimeError> {
        if index >= count {
            return Err(ProtoError::OutOfRange {
                what: "subscriber",
                value: index as u64,
                limit: count as u64,
            }
            .into());
        }
        let layout = ctx.layout;
        let g = layout.geometry();
        let mine = |i: usize| i % count as usize == index as usize;
        let mut dispatches = Vec::new();
        // Packets queued before the roles ran (the waves) are not watched.
        let sources = if ctx.state.in_place() { 0 } else { g.world };
        for source in 0..sources {
            for local_expert in 0..g.local_experts {
                if mine(source as usize * g.local_experts as usize + local_expert as usize) {
                    let offset = layout.dispatch_signal(source, local_expert)?;
                    dispatches.push(DispatchWatch { source, local_expert, offset, seen: 0 });
                }
            }
        }
        let readiness = plan.combine_readiness(g.tile.bm);
        let mut returns = Vec::new();
        let mut j = 0usize;
        for owner in 0..g.world {
            for local_expert in 0..g.local_experts {
                for row_tile in 0..div_ceil(plan.rows(owner, local_expert), g.tile.bm) {
                    for col_tile in 0..g.col_tiles_hidden() {
                        if mine(j) {
                            let groups = readiness.row_tile_groups(
                                plan,
                                owner,
                                local_expert,
                                row_tile,
                                g.tile.bm,
                            );
                            returns.push(ReturnWatch {
                                owner,
                                local_expert,
                                row_tile,
                                col_tile,
                                tile_id: layout.return_tile_id(row_tile, col_tile)?,
                                groups: (*groups.start(), *groups.end()),
                                offset: layout.return_signal(
                                    owner,
                                    local_expert,
                                    row_tile,
                                    col_tile,
                                )?,
                                seen: 0,
                            });
                        }
                        j += 1;
                    }
                }
            }
        }
        Ok(Subscriber { ctx, index, count, dispatches, returns, readiness, started: false })
    }

    /// Queues the combine tasks of readiness group `group`, column `col_tile`; under the third
    /// wave ([`Waves`](super::Waves)), raises their ready flags instead (entry `combine_base +
    /// token tile x column tiles + column`, written before the roles ran).
    fn queue_combines(&self, group: u32, col_tile: u32) -> Result<(), RuntimeError> {
        let ctx = &self.ctx;
        let waves = ctx.state.waves();
        if waves.third > 0 {
            let cth = ctx.layout.geometry().col_tiles_hidden();
            for token_tile in self.readiness.token_tiles_of(group) {
                let j = token_tile * cth + col_tile;
                if j >= waves.third {
                    return Err(ProtoError::OutOfRange {
                        what: "third-wave combine",
                        value: j as u64,
                        limit: waves.third as u64,
                    }
                    .into());
                }
                let index = (waves.combine_base + j) as usize;
                // SAFETY: the third wave's combine entries, `combine_base..combine_base +
                // third`, were written by `reserve_unpublished` (RankState::post_waves), none by
                // a push.
                unsafe { ctx.state.tasks.publish(index) }.map_err(|claimed| {
                    ProtoError::OutOfRange {
                        what: "third-wave combine entry",
                        value: index as u64,
                        limit: claimed as u64,
                    }
                })?;
            }
            return Ok(());
        }
        for token_tile in self.readiness.token_tiles_of(group) {
            ctx.state
                .push_task(combine_task(ctx.layout, ctx.epoch, ctx.rank, token_tile, col_tile)?)?;
        }
        Ok(())
    }

    fn poll_dispatches(&mut self) -> Result<bool, RuntimeError> {
        let ctx = self.ctx;
        let g = ctx.layout.geometry();
        let mut progress = false;
        let mut kept = 0;
        for i in 0..self.dispatches.len() {
            let mut w = self.dispatches[i];
            w.seen = ctx.heap.load_signal(ctx.rank, w.offset);
            match signal::decode_dispatch(w.seen, ctx.epoch, g.capacity)? {
                SignalState::Pending { .. } => {
                    self.dispatches[kept] = w;
                    kept += 1;
                }
                SignalState::Ready(rows) => {
                    let (source, le) = (w.source, w.local_expert);
                    if ctx.state.paired() {
                        let tasks =
                            paired_gemm0_tasks(ctx.layout, ctx.epoch, source, ctx.rank, le, rows)
                                .collect::<Result<Vec<_>, _>>()?;
                        ctx.state.push_tasks(&tasks)?;
                    } else {
                        for task in gemm0_tasks(ctx.layout, ctx.epoch, source, ctx.rank, le, rows) {
                            ctx.state.push_task(task?)?;
                        }
                    }
                    let packet = source as usize * g.local_experts as usize + le as usize;
                    ctx.state.received_rows[packet].store(rows, Ordering::Relaxed);
                    ctx.state.packets_seen.fetch_add(1, Ordering::Release);
                    progress = true;
                }
            }
        }
        self.dispatches.truncate(kept);
        Ok(progress)
    }

    fn poll_returns(&mut self) -> Result<bool, RuntimeError> {
        let ctx = self.ctx;
        let mut progress = false;
        let mut kept = 0;
        for i in 0..self.returns.len() {
            let mut w = self.returns[i];
            w.seen = ctx.heap.load_signal(ctx.rank, w.offset);
            match signal::decode_return(w.seen, ctx.epoch, w.tile_id)? {
                SignalState::Pending { .. } => {
                    self.returns[kept] = w;
                    kept += 1;
                }
                SignalState::Ready(_) => {
                    let col_tile = w.col_tile;
                    for group in w.groups.0..=w.groups.1 {
                        let counter = ctx.layout.combine_counter(group, col_tile)?;
                        let arrived = ctx.heap.add_counter(ctx.rank, counter);
                        let expected = self.readiness.expected(group);
                        if arrived == expected {
                            self.queue_combines(group, col_tile)?;
                        } else if arrived > expected {
                            return Err(ProtoError::Inconsistent {
                                field: "combine counter",
                                expected: expected as u64,
                                found: arrived as u64,
                            }
                            .into());
                        }
                    }
                    progress = true;
                }
            }
        }
        self.returns.truncate(kept);
        Ok(progress)
    }
}

impl<H: SymmetricHeap> Role for Subscriber<'_, H> {
    fn name(&self) -> String {
        format!("subscriber {}", self.index)
    }

    fn poll(&mut self) -> Result<Poll, RuntimeError> {
        let mut progress = false;
        if !self.started {
            self.started = true;
            progress = true;
            let columns = self.ctx.layout.geometry().col_tiles_hidden();
            for group in 0..self.readiness.groups() {
                if self.readiness.expected(group) != 0 {
                    continue;
                }
                for col_tile in 0..columns {
                    if (group * columns + col_tile) % self.count == self.index {
                        self.queue_combines(group, col_tile)?;
                    }
                }
            }
        }
        progress |= self.poll_dispatches()?;
        progress |= self.poll_returns()?;
        Ok(if self.dispatches.is_empty() && self.returns.is_empty() {
            Poll::Done
        } else if progress {
            Poll::Progress
        } else {
            Poll::Idle
        })
    }

    /// The first signal still missing; `seen` is the raw word last read from it (its epoch in
    /// the high 32 bits: 0 if never written, the previous epoch if stale).
    fn awaiting(&self) -> Awaiting {
        let expected_epoch = self.ctx.epoch.get();
        if let Some(w) = self.dispatches.first() {
            return Awaiting {
                awaited: format!(
                    "dispatch signal from rank {} for local expert {}",
                    w.source, w.local_expert
                ),
                expected_epoch,
                seen: w.seen,
            };
        }
        match self.returns.first() {
            Some(w) => Awaiting {
                awaited: format!(
                    "return signal from rank {} for local expert {}, row tile {}, column tile {}",
                    w.owner, w.local_expert, w.row_tile, w.col_tile
                ),
                expected_epoch,
                seen: w.seen,
            },
            None => Awaiting { awaited: "nothing".into(), expected_epoch, seen: 0 },
        }
    }
}
