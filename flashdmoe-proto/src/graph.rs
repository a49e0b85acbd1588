//! The tile task graph, as data plus pure functions.
//!
//! For a packet of `n` rows sent by source `s` to local expert `e` of owner `o`:
//!
//! * it has `ceil(n / bm)` row tiles; each row tile yields `inter / bn` **GEMM0** tasks;
//! * when all GEMM0 tasks of a row tile are done (its row-tile counter reaches `inter / bn`),
//!   the row tile's `hidden / bn` **GEMM1** tasks become ready;
//! * each GEMM1 task writes its output tile into `s`'s return region and raises one return
//!   signal there;
//! * on `s`, each `(token tile, column tile)` of the output is one **Combine** task. The
//!   combine counts arrivals per **column tile**: column `c` is complete when all returned tiles
//!   of column `c` have arrived, i.e. [`SourcePlan::combine_expected`] = the total row tiles `s`
//!   sent; then every token tile's combine task of column `c` is ready.
//!
//! Why per column and not per `(token tile, column)`: with any realistic routing, a returned
//! row tile holds tokens of most token tiles (a 128-row tile of an expert picks tokens from all
//! over the batch), so exact per-token-tile readiness would cost one counter update per
//! (returned tile, distinct token tile) -- hundreds of thousands of atomics per forward -- to
//! release combines only marginally earlier. Per-column readiness costs one update per
//! returned tile, and still lets column tiles finish and combine independently.
//!
//! The exact number of tasks a rank executes ([`TaskCounts::for_rank`]) follows from the row
//! counts carried by the dispatch signals it receives plus its own token count, so a rank knows
//! when it is done without any global agreement.

use alloc::vec::Vec;

use crate::epoch::Epoch;
use crate::error::{ProtoError, Result, check_range};
use crate::layout::{HeapLayout, div_ceil};
use crate::task::{TaskDescriptor, TaskKind};

/// Valid rows of row tile `row_tile` of a packet holding `rows` rows (0 past the end).
pub fn tile_rows(rows: u32, row_tile: u32, bm: u32) -> u32 {
    rows.saturating_sub(row_tile.saturating_mul(bm)).min(bm)
}

/// The routing of one source rank as the protocol sees it: for each destination slot
/// `(owner rank, local expert)`, the source's token indices routed there in ascending order.
/// Row `i` of a packet carries its `i`-th token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcePlan {
    tokens: u32,
    local_experts: u32,
    packets: Vec<Vec<u32>>,
}

impl SourcePlan {
    /// Validates and wraps `packets[owner * local_experts + local_expert]` for a source rank
    /// with `layout.geometry().tokens` tokens: the shape must match the layout, each list must
    /// be strictly ascending, below the token count, and within the packet capacity.
    pub fn new(layout: &HeapLayout, packets: Vec<Vec<u32>>) -> Result<SourcePlan> {
        let g = layout.geometry();
        if packets.len() as u64 != g.world as u64 * g.local_experts as u64 {
            return Err(ProtoError::BadPlan {
                reason: "packet count is not world * local_experts",
            });
        }
        for list in &packets {
            if list.len() as u64 > g.capacity as u64 {
                return Err(ProtoError::BadPlan { reason: "packet exceeds capacity" });
            }
            if list.windows(2).any(|w| w[0] >= w[1]) {
                return Err(ProtoError::BadPlan { reason: "token list not strictly ascending" });
            }
            if list.last().is_some_and(|&t| t >= g.tokens) {
                return Err(ProtoError::BadPlan { reason: "token index out of range" });
            }
        }
        Ok(SourcePlan { tokens: g.tokens, local_experts: g.local_experts, packets })
    }

    /// Tokens of the packet for `(owner, local_expert)`, ascending.
    ///
    /// Panics if `owner` or `local_expert` is outside the layout the plan was built for (an
    /// index, like a slice's).
    pub fn packet(&self, owner: u32, local_expert: u32) -> &[u32] {
        assert!(local_expert < self.local_experts, "local expert out of range");
        &self.packets[owner as usize * self.local_experts as usize + local_expert as usize]
    }

    /// Rows sent to `(owner, local_expert)` (panics like [`SourcePlan::packet`]).
    pub fn rows(&self, owner: u32, local_expert: u32) -> u32 {
        self.packet(owner, local_expert).len() as u32
    }

    /// Returned tiles each column tile of this source's output waits for: the row tiles of all
    /// its packets, `sum(ceil(rows / bm))`. Once a column's combine counter reaches this, the
    /// combine tasks of every token tile in that column are ready (immediately when it is 0).
    /// `bm` is the layout's `tile.bm` (never 0 in a valid layout).
    pub fn combine_expected(&self, bm: u32) -> u32 {
        self.packets.iter().map(|p| div_ceil(p.len() as u32, bm)).sum()
    }
}

/// The routing of every rank: `sources[s]` is rank `s`'s plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingPlan {
    sources: Vec<SourcePlan>,
}

impl RoutingPlan {
    /// Wraps one plan per rank; their number must equal the layout's world size, and each
    /// must have been built for `layout`'s geometry.
    pub fn new(layout: &HeapLayout, sources: Vec<SourcePlan>) -> Result<RoutingPlan> {
        if sources.len() as u64 != layout.geometry().world as u64 {
            return Err(ProtoError::BadPlan { reason: "one source plan per rank is required" });
        }
        let plan = RoutingPlan { sources };
        plan.check_layout(layout)?;
        Ok(plan)
    }

    /// Errors unless this plan has the shape of `layout` (one source plan per rank, each with
    /// the layout's token count and `world * local_experts` packets).
    fn check_layout(&self, layout: &HeapLayout) -> Result<()> {
        let g = layout.geometry();
        let packets = g.world as usize * g.local_experts as usize;
        let fits = self.sources.len() == g.world as usize
            && self.sources.iter().all(|s| {
                s.tokens == g.tokens
                    && s.local_experts == g.local_experts
                    && s.packets.len() == packets
            });
        if fits {
            Ok(())
        } else {
            Err(ProtoError::BadPlan { reason: "plan was built for a different layout" })
        }
    }

    /// Rank `source`'s plan (panics if `source` is not a rank, like a slice index).
    pub fn source(&self, source: u32) -> &SourcePlan {
        &self.sources[source as usize]
    }

    /// All source plans, indexed by rank.
    pub fn sources(&self) -> &[SourcePlan] {
        &self.sources
    }

    /// Rows `owner` receives, as `[source][local expert]` flattened: what its dispatch signals
    /// carry (panics if `owner` is not a rank).
    pub fn received_rows(&self, owner: u32) -> Vec<u32> {
        self.sources
            .iter()
            .flat_map(|s| (0..s.local_experts).map(move |e| s.rows(owner, e)))
            .collect()
    }
}

/// Number of tasks of each kind one rank executes in one forward.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TaskCounts {
    /// GEMM0 tasks.
    pub gemm0: u64,
    /// GEMM1 tasks.
    pub gemm1: u64,
    /// Combine tasks.
    pub combine: u64,
}

impl TaskCounts {
    /// Total tasks: the termination bound.
    pub fn total(&self) -> u64 {
        self.gemm0 + self.gemm1 + self.combine
    }

    /// The exact tasks of one rank, from the row counts it received (`[source][local expert]`,
    /// as carried by its dispatch signals; any order) and its own token count (the layout's).
    pub fn for_rank(
        layout: &HeapLayout,
        received_rows: impl IntoIterator<Item = u32>,
    ) -> TaskCounts {
        let g = layout.geometry();
        let row_tiles: u64 = received_rows.into_iter().map(|n| div_ceil(n, g.tile.bm) as u64).sum();
        TaskCounts {
            gemm0: row_tiles * g.col_tiles_inter() as u64,
            gemm1: row_tiles * g.col_tiles_hidden() as u64,
            combine: g.token_tiles() as u64 * g.col_tiles_hidden() as u64,
        }
    }

    /// The tasks of a rank that received `row_tiles` row tiles in all and holds `tokens`
    /// tokens this forward: every row tile's GEMM0 and GEMM1 tasks plus the rank's combine
    /// tasks, `ceil(tokens / bm)` token tiles per output column (`fdm_task_bound` in the C
    /// header). A forward may carry fewer tokens than the layout's [`Geometry::tokens`] (its
    /// rows keep the layout's strides), so the combine count is the forward's, not the
    /// layout's. With [`Self::for_rank`]'s row tiles and the layout's tokens it is the exact
    /// termination bound; with upper bounds, the size of a task queue that cannot overflow.
    pub fn bound(layout: &HeapLayout, row_tiles: u64, tokens: u32) -> u64 {
        let g = layout.geometry();
        row_tiles * (g.col_tiles_inter() as u64 + g.col_tiles_hidden() as u64)
            + div_ceil(tokens, g.tile.bm) as u64 * g.col_tiles_hidden() as u64
    }

    /// Adds one task of `kind`.
    pub fn add(&mut self, kind: TaskKind) {
        match kind {
            TaskKind::Gemm0 => self.gemm0 += 1,
            TaskKind::Gemm1 => self.gemm1 += 1,
            TaskKind::Combine => self.combine += 1,
        }
    }
}

/// The GEMM0 tasks a packet of `rows` rows creates on its owner when its dispatch signal
/// arrives (none for a zero-row packet).
pub fn gemm0_tasks(
    layout: &HeapLayout,
    epoch: Epoch,
    source: u32,
    owner: u32,
    local_expert: u32,
    rows: u32,
) -> impl Iterator<Item = Result<TaskDescriptor>> + '_ {
    let g = layout.geometry();
    let (bm, cols) = (g.tile.bm, g.col_tiles_inter());
    (0..div_ceil(rows, bm)).flat_map(move |rt| {
        (0..cols).map(move |c| {
            let valid = tile_rows(rows, rt, bm);
            TaskDescriptor::new(
                layout,
                TaskKind::Gemm0,
                epoch,
                source,
                owner,
                local_expert,
                rt,
                c,
                valid,
            )
        })
    })
}

/// The GEMM1 tasks of one row tile, ready once its row-tile counter reaches
/// [`gemm0_per_row_tile`].
pub fn gemm1_tasks(
    layout: &HeapLayout,
    epoch: Epoch,
    source: u32,
    owner: u32,
    local_expert: u32,
    row_tile: u32,
    valid_rows: u32,
) -> impl Iterator<Item = Result<TaskDescriptor>> + '_ {
    (0..layout.geometry().col_tiles_hidden()).map(move |c| {
        TaskDescriptor::new(
            layout,
            TaskKind::Gemm1,
            epoch,
            source,
            owner,
            local_expert,
            row_tile,
            c,
            valid_rows,
        )
    })
}

/// GEMM0 completions a row tile needs before its GEMM1 tasks are ready.
pub fn gemm0_per_row_tile(layout: &HeapLayout) -> u32 {
    layout.geometry().col_tiles_inter()
}

/// The combine task of `(token_tile, col_tile)` on `rank`.
pub fn combine_task(
    layout: &HeapLayout,
    epoch: Epoch,
    rank: u32,
    token_tile: u32,
    col_tile: u32,
) -> Result<TaskDescriptor> {
    let g = layout.geometry();
    check_range("token tile", token_tile, layout.token_tiles())?;
    let valid = tile_rows(g.tokens, token_tile, g.tile.bm);
    TaskDescriptor::new(
        layout,
        TaskKind::Combine,
        epoch,
        rank,
        rank,
        0,
        token_tile,
        col_tile,
        valid,
    )
}

/// Identity of a task, independent of epoch and offsets: `(kind, source, owner, local expert,
/// row tile, column tile)`. Sorting by it sorts by kind first, a topological order of the graph.
pub type TaskKey = (TaskKind, u32, u32, u32, u32, u32);

impl TaskDescriptor {
    /// This task's identity. Errors only for an invalid kind tag.
    pub fn key(&self) -> Result<TaskKey> {
        Ok((
            self.task_kind()?,
            self.source_rank,
            self.owner_rank,
            self.local_expert,
            self.row_tile,
            self.col_tile,
        ))
    }
}

/// The tasks that must finish before `task` can start (GEMM0 tasks wait only for their
/// packet's dispatch signal, so they have none).
pub fn prerequisites(
    layout: &HeapLayout,
    plan: &RoutingPlan,
    task: &TaskDescriptor,
) -> Result<Vec<TaskKey>> {
    let g = layout.geometry();
    plan.check_layout(layout)?;
    let (s, o, e, rt, c) =
        (task.source_rank, task.owner_rank, task.local_expert, task.row_tile, task.col_tile);
    check_range("source rank", s, g.world)?;
    Ok(match task.task_kind()? {
        TaskKind::Gemm0 => Vec::new(),
        TaskKind::Gemm1 => {
            (0..g.col_tiles_inter()).map(|c0| (TaskKind::Gemm0, s, o, e, rt, c0)).collect()
        }
        TaskKind::Combine => {
            let src = plan.source(s);
            let mut keys = Vec::new();
            for owner in 0..g.world {
                for le in 0..g.local_experts {
                    for prt in 0..div_ceil(src.rows(owner, le), g.tile.bm) {
                        keys.push((TaskKind::Gemm1, s, owner, le, prt, c));
                    }
                }
            }
            keys
        }
    })
}

/// Every task of a forward, all ranks: per owner, per source, per local expert its GEMM0 then
/// GEMM1 tasks; then per rank its combine tasks. This order is a topological order of the
/// graph. A plan built for another layout yields a single error.
pub fn graph_tasks<'a>(
    layout: &'a HeapLayout,
    plan: &'a RoutingPlan,
    epoch: Epoch,
) -> impl Iterator<Item = Result<TaskDescriptor>> + 'a {
    let g = *layout.geometry();
    let shape = plan.check_layout(layout);
    let world = if shape.is_ok() { g.world } else { 0 };
    let gemms = (0..world).flat_map(move |owner| {
        (0..world).flat_map(move |source| {
            (0..g.local_experts).flat_map(move |le| {
                let rows = plan.source(source).rows(owner, le);
                let g1 = (0..div_ceil(rows, g.tile.bm)).flat_map(move |rt| {
                    gemm1_tasks(
                        layout,
                        epoch,
                        source,
                        owner,
                        le,
                        rt,
                        tile_rows(rows, rt, g.tile.bm),
                    )
                });
                gemm0_tasks(layout, epoch, source, owner, le, rows).chain(g1)
            })
        })
    });
    let combines = (0..world).flat_map(move |rank| {
        (0..layout.token_tiles()).flat_map(move |tt| {
            (0..g.col_tiles_hidden()).map(move |c| combine_task(layout, epoch, rank, tt, c))
        })
    });
    shape.err().map(Err).into_iter().chain(gemms).chain(combines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Geometry, TileShape};
    use alloc::vec;

    fn layout() -> HeapLayout {
        HeapLayout::new(Geometry {
            world: 2,
            local_experts: 1,
            tokens: 6,
            capacity: 6,
            hidden: 8,
            inter: 16,
            elem_bytes: 2,
            tile: TileShape { bm: 4, bn: 8, bk: 8 },
        })
        .unwrap()
    }

    #[test]
    fn hand_computed_graph() {
        let l = layout();
        // Rank 0 sends tokens 0,1,2,5 to expert (0,0) and 1,3 to (1,0); rank 1 sends nothing to
        // rank 0 and 0..=5 to (1,0).
        let p0 = SourcePlan::new(&l, vec![vec![0, 1, 2, 5], vec![1, 3]]).unwrap();
        let p1 = SourcePlan::new(&l, vec![vec![], vec![0, 1, 2, 3, 4, 5]]).unwrap();
        // Rank 0 sent one row tile to (0,0) and one to (1,0): each column waits for 2 tiles.
        assert_eq!(p0.combine_expected(4), 2);
        // Rank 1 sent two row tiles to (1,0).
        assert_eq!(p1.combine_expected(4), 2);

        let plan = RoutingPlan::new(&l, vec![p0, p1]).unwrap();
        assert_eq!(plan.received_rows(0), vec![4, 0]);
        assert_eq!(plan.received_rows(1), vec![2, 6]);
        // Rank 0: 1 row tile * (2 gemm0 + 1 gemm1) + 2 token tiles * 1 col = 5.
        let c0 = TaskCounts::for_rank(&l, plan.received_rows(0));
        assert_eq!((c0.gemm0, c0.gemm1, c0.combine), (2, 1, 2));
        // Rank 1: (1 + 2) row tiles * 3 + 2 = 11.
        assert_eq!(TaskCounts::for_rank(&l, plan.received_rows(1)).total(), 11);
        assert_eq!(TaskCounts::bound(&l, 3, l.geometry().tokens), 11);
        assert_eq!(TaskCounts::bound(&l, 1, l.geometry().tokens), c0.total());
        // A forward of 4 of the layout's 6 tokens: one token tile of combine per column.
        assert_eq!(TaskCounts::bound(&l, 1, 4), c0.total() - 1);
        assert_eq!(TaskCounts::bound(&l, 0, 0), 0);

        let tasks: Vec<_> = graph_tasks(&l, &plan, Epoch::FIRST).collect::<Result<_>>().unwrap();
        assert_eq!(tasks.len(), 16);
        let gemm1_last =
            tasks.iter().find(|t| t.kind == TaskKind::Gemm1 as u32 && t.row_tile == 1).unwrap();
        assert_eq!(
            (gemm1_last.source_rank, gemm1_last.owner_rank, gemm1_last.valid_rows),
            (1, 1, 2)
        );
        let combine = tasks
            .iter()
            .find(|t| t.kind == TaskKind::Combine as u32 && t.source_rank == 0)
            .unwrap();
        assert_eq!(
            prerequisites(&l, &plan, combine).unwrap(),
            vec![(TaskKind::Gemm1, 0, 0, 0, 0, 0), (TaskKind::Gemm1, 0, 1, 0, 0, 0)]
        );
    }

    #[test]
    fn malformed_plans_are_rejected() {
        let l = layout();
        assert!(SourcePlan::new(&l, vec![vec![]]).is_err());
        assert!(SourcePlan::new(&l, vec![vec![2, 1], vec![]]).is_err());
        assert!(SourcePlan::new(&l, vec![vec![1, 1], vec![]]).is_err());
        assert!(SourcePlan::new(&l, vec![vec![6], vec![]]).is_err());
        assert!(SourcePlan::new(&l, vec![vec![0, 1, 2, 3, 4, 5, 6], vec![]]).is_err());
    }
}
