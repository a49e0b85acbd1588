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
//!   combine counts arrivals per **(readiness group, column tile)**: a group is a run of
//!   consecutive token tiles ([`CombineReadiness`]). A packet lists its tokens in ascending
//!   order, so packet row tile `prt` holds tokens from `packet[prt * bm]` to its last row's, and
//!   spans the groups of those two tokens' tiles and every group between. The combine tasks of
//!   group `g`, column `c` are ready once every returned tile of column `c` whose row tile spans
//!   `g` has arrived ([`CombineReadiness::expected`]); a group no row tile spans is ready at
//!   once. So the first token tiles combine while later row tiles are still in GEMM1.
//!
//! Why groups and not single token tiles: a row tile of one of `E` experts spans about `E / k`
//! token tiles, so per-token-tile counting would cost that many counter updates per returned
//! tile (over 10^5 atomics a forward at E = 128). A group is sized to that span
//! ([`combine_group_tiles`]), so a returned tile updates one or two counters, and no readiness
//! is lost: a token tile cannot be complete before the row tiles spanning it, which span its
//! neighbours too.
//!
//! The exact number of tasks a rank executes ([`TaskCounts::for_rank`]) follows from the row
//! counts carried by the dispatch signals it receives plus its own token count, so a rank knows
//! when it is done without any global agreement.

use alloc::vec::Vec;

use crate::epoch::Epoch;
use crate::error::{ProtoError, Result, check_range};
use crate::layout::{HeapLayout, MAX_COMBINE_GROUPS, div_ceil};
use crate::task::{TaskDescriptor, TaskKind};
use core::ops::{Range, RangeInclusive};

/// Valid rows of row tile `row_tile` of a packet holding `rows` rows (0 past the end).
pub fn tile_rows(rows: u32, row_tile: u32, bm: u32) -> u32 {
    rows.saturating_sub(row_tile.saturating_mul(bm)).min(bm)
}

/// The routing of one source rank as the protocol sees it: for each destination slot
/// `(owner rank, local expert)`, the source's token indices routed there in ascending order,
/// and each row's routing weight. Row `i` of a packet carries its `i`-th token; the owner's
/// GEMM1 scales the row's output by its weight, so the source's combine is a plain sum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcePlan {
    tokens: u32,
    local_experts: u32,
    packets: Vec<Vec<u32>>,
    /// `f32` bits, the packets' shape (bits keep the plan `Eq`).
    weights: Vec<Vec<u32>>,
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
        let weights = packets.iter().map(|p| alloc::vec![1.0f32.to_bits(); p.len()]).collect();
        Ok(SourcePlan { tokens: g.tokens, local_experts: g.local_experts, packets, weights })
    }

    /// The plan with each row's routing weight (`weights` shaped like the packets; every
    /// weight finite). [`SourcePlan::new`] gives every row weight 1.
    pub fn with_weights(mut self, weights: Vec<Vec<f32>>) -> Result<SourcePlan> {
        if weights.len() != self.packets.len()
            || weights.iter().zip(&self.packets).any(|(w, p)| w.len() != p.len())
        {
            return Err(ProtoError::BadPlan { reason: "weights not shaped like the packets" });
        }
        if weights.iter().flatten().any(|w| !w.is_finite()) {
            return Err(ProtoError::BadPlan { reason: "a routing weight is not finite" });
        }
        self.weights = weights.iter().map(|w| w.iter().map(|x| x.to_bits()).collect()).collect();
        Ok(self)
    }

    /// Routing weights of the packet for `(owner, local_expert)`'s rows, in row order (panics
    /// like [`SourcePlan::packet`]).
    pub fn weights(&self, owner: u32, local_expert: u32) -> impl Iterator<Item = f32> + '_ {
        assert!(local_expert < self.local_experts, "local expert out of range");
        self.weights[owner as usize * self.local_experts as usize + local_expert as usize]
            .iter()
            .map(|&b| f32::from_bits(b))
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

    /// Token tiles of this source's output: `ceil(tokens / bm)`.
    pub fn token_tiles(&self, bm: u32) -> u32 {
        div_ceil(self.tokens, bm)
    }

    /// The token tiles row tile `row_tile` of packet `(owner, local_expert)` holds tokens of,
    /// from its first row's to its last row's (`None` past the packet's end; panics like
    /// [`SourcePlan::packet`]).
    pub fn row_tile_token_tiles(
        &self,
        owner: u32,
        local_expert: u32,
        row_tile: u32,
        bm: u32,
    ) -> Option<RangeInclusive<u32>> {
        let packet = self.packet(owner, local_expert);
        let rows = tile_rows(packet.len() as u32, row_tile, bm);
        if rows == 0 {
            return None;
        }
        let first = (row_tile * bm) as usize;
        Some(packet[first] / bm..=packet[first + rows as usize - 1] / bm)
    }

    /// When this source's combine tasks are ready: its readiness groups and the returned tiles
    /// each group waits for, per column (`bm` is the layout's `tile.bm`, never 0).
    pub fn combine_readiness(&self, bm: u32) -> CombineReadiness {
        let token_tiles = self.token_tiles(bm);
        let nonempty = self.packets.iter().filter(|p| !p.is_empty()).count() as u32;
        let row_tiles: u64 = self.packets.iter().map(|p| div_ceil(p.len() as u32, bm) as u64).sum();
        let group_tiles = combine_group_tiles(token_tiles, nonempty, row_tiles);
        let mut readiness = CombineReadiness {
            group_tiles,
            token_tiles,
            expected: alloc::vec![0; div_ceil(token_tiles, group_tiles) as usize],
        };
        for (i, p) in self.packets.iter().enumerate() {
            let (owner, le) =
                ((i / self.local_experts as usize) as u32, i as u32 % self.local_experts);
            for prt in 0..div_ceil(p.len() as u32, bm) {
                for group in readiness.row_tile_groups(self, owner, le, prt, bm) {
                    readiness.expected[group as usize] += 1;
                }
            }
        }
        readiness
    }
}

/// Token tiles per combine readiness group, for a source holding `token_tiles` token tiles that
/// sent `row_tiles` row tiles over `packets` non-empty packets (`fdm_combine_group_tiles` in the
/// C header: the kernel's subscribers compute the same from the same counts).
///
/// A row tile of a packet spans about `packets * token_tiles / row_tiles` token tiles (every
/// packet's row tiles together span the whole batch); the group is that span rounded down to a
/// power of two (at least 1), then doubled until at most [`MAX_COMBINE_GROUPS`] groups remain.
pub fn combine_group_tiles(token_tiles: u32, packets: u32, row_tiles: u64) -> u32 {
    let span = (packets as u64 * token_tiles as u64).checked_div(row_tiles).unwrap_or(1).max(1);
    let mut group = 1u32;
    while group < 1 << 31 && group as u64 * 2 <= span {
        group *= 2;
    }
    while div_ceil(token_tiles, group) > MAX_COMBINE_GROUPS {
        group *= 2;
    }
    group
}

/// A source's combine readiness ([`SourcePlan::combine_readiness`]): its token tiles counted in
/// groups of [`CombineReadiness::group_tiles`] consecutive tiles, and per group the returned
/// tiles of each column it waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CombineReadiness {
    group_tiles: u32,
    token_tiles: u32,
    expected: Vec<u32>,
}

impl CombineReadiness {
    /// Consecutive token tiles per group (a power of two).
    pub fn group_tiles(&self) -> u32 {
        self.group_tiles
    }

    /// Number of groups: `ceil(token_tiles / group_tiles)`, at most [`MAX_COMBINE_GROUPS`].
    pub fn groups(&self) -> u32 {
        self.expected.len() as u32
    }

    /// Returned tiles of one column that group `group` waits for (0: ready at once). Panics if
    /// `group` is not a group, like a slice index.
    pub fn expected(&self, group: u32) -> u32 {
        self.expected[group as usize]
    }

    /// The group of token tile `token_tile`.
    pub fn group_of(&self, token_tile: u32) -> u32 {
        token_tile / self.group_tiles
    }

    /// The token tiles of group `group`.
    pub fn token_tiles_of(&self, group: u32) -> Range<u32> {
        let start = group.saturating_mul(self.group_tiles).min(self.token_tiles);
        start..start.saturating_add(self.group_tiles).min(self.token_tiles)
    }

    /// The groups whose combines wait for row tile `row_tile` of `plan`'s packet
    /// `(owner, local_expert)` (empty past the packet's end; panics like
    /// [`SourcePlan::packet`]).
    pub fn row_tile_groups(
        &self,
        plan: &SourcePlan,
        owner: u32,
        local_expert: u32,
        row_tile: u32,
        bm: u32,
    ) -> RangeInclusive<u32> {
        match plan.row_tile_token_tiles(owner, local_expert, row_tile, bm) {
            Some(tiles) => self.group_of(*tiles.start())..=self.group_of(*tiles.end()),
            #[allow(clippy::reversed_empty_ranges)]
            None => 1..=0,
        }
    }
}

/// Slots of the task log kept for combine tasks: the combine log is slots `[0, this)`, the
/// GEMM tasks' log starts here (`fdm_gemm_log_base` in the C header). The scheduler hands out
/// ready combines before queued GEMM tasks, so a combine never waits behind GEMM1 tasks
/// published long before it was ready.
pub fn combine_log_slots(layout: &HeapLayout) -> u64 {
    layout.token_tiles() as u64 * layout.geometry().col_tiles_hidden() as u64
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

/// Task `i` of a packet's `row_tiles x col_tiles` GEMM0 tasks in publication order: (row
/// tile, column tile). The columns go in groups of `group` column tiles (0, or `group >=
/// col_tiles`: one group), and each group row tile by row tile, so the tasks of a group read
/// its column tiles' weights as many times as the packet has row tiles while those weights
/// are still in the GPU's cache (the order of [`gemm0_tasks`]; `fdm_gemm0_tile` in the
/// generated header). `i < row_tiles * col_tiles`.
pub fn gemm0_tile(i: u32, row_tiles: u32, col_tiles: u32, group: u32) -> (u32, u32) {
    let group = if group == 0 || group > col_tiles { col_tiles } else { group };
    let per_group = row_tiles as u64 * group as u64;
    let first = (i as u64 / per_group) as u32 * group;
    let width = group.min(col_tiles - first);
    let j = (i as u64 % per_group) as u32;
    (j / width, first + j % width)
}

/// Task `i` of a packet's GEMM0 tasks in the order of a layer run in 2-CTA cluster pairs
/// (docs/dev/paired-tasks.md): the column groups of [`gemm0_tile`], and inside a group its row
/// tiles two at a time, each column tile's two row tiles (2p, 2p + 1) side by side, then an odd
/// last row tile alone. Returns (row tile, column tile, whether task `i` heads a pair: task
/// `i + 1` is the same column tile's row tile 2p + 1, and the two run together on the two
/// processors of one cluster, reading the column tile's weights once). `fdm_gemm0_paired` in
/// the generated header. `i < row_tiles * col_tiles`.
pub fn gemm0_tile_paired(i: u32, row_tiles: u32, col_tiles: u32, group: u32) -> (u32, u32, bool) {
    let group = if group == 0 || group > col_tiles { col_tiles } else { group };
    let per_group = row_tiles as u64 * group as u64;
    let first = (i as u64 / per_group) as u32 * group;
    let width = group.min(col_tiles - first) as u64;
    let j = i as u64 % per_group;
    let paired = (row_tiles & !1) as u64 * width;
    if j < paired {
        let (p, r) = (j / (2 * width), j % (2 * width));
        ((2 * p + r % 2) as u32, first + (r / 2) as u32, r % 2 == 0)
    } else {
        (row_tiles - 1, first + (j - paired) as u32, false)
    }
}

/// The GEMM0 tasks a packet of `rows` rows creates on its owner when its dispatch signal
/// arrives (none for a zero-row packet), in [`gemm0_tile`]'s order.
pub fn gemm0_tasks(
    layout: &HeapLayout,
    epoch: Epoch,
    source: u32,
    owner: u32,
    local_expert: u32,
    rows: u32,
) -> impl Iterator<Item = Result<TaskDescriptor>> + '_ {
    gemm0_tasks_in(layout, epoch, source, owner, local_expert, rows, false)
        .map(|t| t.map(|(t, _)| t))
}

/// The same tasks as [`gemm0_tasks`], in [`gemm0_tile_paired`]'s order where `paired` (a layer
/// run in 2-CTA cluster pairs), each with whether it heads a pair (always false unpaired).
pub fn gemm0_tasks_in(
    layout: &HeapLayout,
    epoch: Epoch,
    source: u32,
    owner: u32,
    local_expert: u32,
    rows: u32,
    paired: bool,
) -> impl Iterator<Item = Result<(TaskDescriptor, bool)>> + '_ {
    let g = layout.geometry();
    let (bm, cols, group) = (g.tile.bm, g.col_tiles_inter(), g.tile.gemm0_group);
    let row_tiles = div_ceil(rows, bm);
    (0..row_tiles * cols).map(move |i| {
        let (rt, c, head) = if paired {
            gemm0_tile_paired(i, row_tiles, cols, group)
        } else {
            let (rt, c) = gemm0_tile(i, row_tiles, cols, group);
            (rt, c, false)
        };
        let task = TaskDescriptor::new(
            layout,
            TaskKind::Gemm0,
            epoch,
            source,
            owner,
            local_expert,
            rt,
            c,
            tile_rows(rows, rt, bm),
        )?;
        Ok((task, head))
    })
}

/// Set in a streamed placement's placed counter by the last chunk's padding
/// (`flashdmoe-core`'s `runtime::Placer`, the kernel's `placer.cuh`): the counter's row tile
/// (or pair) is its packet's partial last one, whose valid rows are the packet's row count
/// less the rows before it. The counter's rows stay below it (`FDM_PLACED_PADDED`).
pub const PLACED_PADDED: u32 = 1 << 16;

/// The GEMM0 tasks of one row tile of a packet (its `valid_rows` rows), column tile by column
/// tile: the tasks of [`gemm0_tasks`] with that row tile, for a packet whose rows arrive row
/// tile by row tile (the streamed placement, `flashdmoe-core`'s `runtime::Placer`), where the
/// packet's row count is not known when its first row tiles are complete.
pub fn gemm0_row_tile_tasks(
    layout: &HeapLayout,
    epoch: Epoch,
    source: u32,
    owner: u32,
    local_expert: u32,
    row_tile: u32,
    valid_rows: u32,
) -> impl Iterator<Item = Result<TaskDescriptor>> + '_ {
    let cols = layout.geometry().col_tiles_inter();
    row_tile_tasks(
        layout,
        TaskKind::Gemm0,
        cols,
        epoch,
        source,
        owner,
        local_expert,
        row_tile,
        valid_rows,
    )
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
    let cols = layout.geometry().col_tiles_hidden();
    row_tile_tasks(
        layout,
        TaskKind::Gemm1,
        cols,
        epoch,
        source,
        owner,
        local_expert,
        row_tile,
        valid_rows,
    )
}

/// The `kind` tasks of one row tile, column tile 0 to `cols - 1`.
#[allow(clippy::too_many_arguments)]
fn row_tile_tasks(
    layout: &HeapLayout,
    kind: TaskKind,
    cols: u32,
    epoch: Epoch,
    source: u32,
    owner: u32,
    local_expert: u32,
    row_tile: u32,
    valid_rows: u32,
) -> impl Iterator<Item = Result<TaskDescriptor>> + '_ {
    (0..cols).map(move |c| {
        TaskDescriptor::new(
            layout,
            kind,
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
            let bm = g.tile.bm;
            let readiness = src.combine_readiness(bm);
            let group = readiness.group_of(rt);
            let mut keys = Vec::new();
            for owner in 0..g.world {
                for le in 0..g.local_experts {
                    for prt in 0..div_ceil(src.rows(owner, le), bm) {
                        if readiness.row_tile_groups(src, owner, le, prt, bm).contains(&group) {
                            keys.push((TaskKind::Gemm1, s, owner, le, prt, c));
                        }
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

    #[test]
    fn gemm0_order_visits_every_tile_once_in_column_groups() {
        for (rts, cts) in [(1u32, 1u32), (8, 112), (3, 7), (32, 8), (1, 16), (5, 4)] {
            for group in [0u32, 1, 2, 3, 6, cts, cts + 5] {
                let order: Vec<(u32, u32)> =
                    (0..rts * cts).map(|i| gemm0_tile(i, rts, cts, group)).collect();
                let mut seen = order.clone();
                seen.sort_unstable();
                seen.dedup();
                assert_eq!(seen.len() as u32, rts * cts, "{rts}x{cts} group {group}: a tile twice");
                assert!(order.iter().all(|&(rt, c)| rt < rts && c < cts));
                // Groups in order, and inside a group row tile by row tile.
                let g = if group == 0 || group > cts { cts } else { group };
                for w in order.windows(2) {
                    let ((r0, c0), (r1, c1)) = (w[0], w[1]);
                    if c0 / g == c1 / g {
                        assert!((r1, c1) > (r0, c0), "{rts}x{cts} group {group}: {w:?}");
                    } else {
                        assert_eq!(c1 / g, c0 / g + 1, "{rts}x{cts} group {group}: {w:?}");
                    }
                }
            }
        }
        // No group: row tile by row tile; groups of one: column tile by column tile.
        assert_eq!(gemm0_tile(5, 2, 4, 0), (1, 1));
        assert_eq!(gemm0_tile(5, 2, 4, 1), (1, 2));
        // Mixtral's packets (8 row tiles of 112 columns) in groups of 6: the 49th task starts
        // the second group; the last group is 4 columns wide.
        assert_eq!(gemm0_tile(48, 8, 112, 6), (0, 6));
        assert_eq!(gemm0_tile(8 * 108, 8, 112, 6), (0, 108));
        assert_eq!(gemm0_tile(8 * 112 - 1, 8, 112, 6), (7, 111));
    }

    #[test]
    fn a_packets_row_tiles_hold_its_gemm0_tasks() {
        for (rows, bm, bn, group) in
            [(1u32, 4u32, 8u32, 0u32), (9, 4, 8, 0), (12, 4, 4, 1), (0, 4, 8, 0)]
        {
            let layout = crate::HeapLayout::new(Geometry {
                world: 1,
                local_experts: 2,
                tokens: 16,
                capacity: 16,
                hidden: 8,
                inter: 16,
                elem_bytes: 2,
                tile: TileShape::new(bm, bn, 8).with_gemm0_group(group),
            })
            .unwrap();
            let e = Epoch::FIRST;
            let mut all: Vec<_> =
                gemm0_tasks(&layout, e, 0, 0, 1, rows).map(|t| t.unwrap().key().unwrap()).collect();
            let mut by_tile: Vec<_> = (0..div_ceil(rows, bm))
                .flat_map(|rt| {
                    let valid = tile_rows(rows, rt, bm);
                    gemm0_row_tile_tasks(&layout, e, 0, 0, 1, rt, valid)
                        .map(|t| t.unwrap().key().unwrap())
                        .collect::<Vec<_>>()
                })
                .collect();
            assert_eq!(by_tile.len(), all.len(), "{rows} rows in {bm}-row tiles");
            all.sort_unstable();
            by_tile.sort_unstable();
            assert_eq!(by_tile, all);
            // And the descriptors themselves, valid rows included.
            for t in gemm0_tasks(&layout, e, 0, 0, 1, rows).map(|t| t.unwrap()) {
                let valid = tile_rows(rows, t.row_tile, bm);
                let mut tile = gemm0_row_tile_tasks(&layout, e, 0, 0, 1, t.row_tile, valid);
                let found = tile.find(|u| u.as_ref().is_ok_and(|u| u.col_tile == t.col_tile));
                assert_eq!(found.unwrap().unwrap(), t);
            }
        }
    }

    #[test]
    fn paired_gemm0_order_visits_every_tile_once_with_pairs_side_by_side() {
        for (rts, cts) in [(1u32, 1u32), (2, 1), (8, 112), (3, 7), (5, 4), (1, 16), (7, 16)] {
            for group in [0u32, 1, 2, 3, 6, cts, cts + 5] {
                let order: Vec<(u32, u32, bool)> =
                    (0..rts * cts).map(|i| gemm0_tile_paired(i, rts, cts, group)).collect();
                let mut seen: Vec<(u32, u32)> = order.iter().map(|&(r, c, _)| (r, c)).collect();
                seen.sort_unstable();
                seen.dedup();
                assert_eq!(seen.len() as u32, rts * cts, "{rts}x{cts} group {group}: a tile twice");
                // The same column groups as the unpaired order, in the same order.
                let g = if group == 0 || group > cts { cts } else { group };
                for (i, &(rt, c, head)) in order.iter().enumerate() {
                    assert!(rt < rts && c < cts);
                    assert_eq!(c / g, gemm0_tile(i as u32, rts, cts, group).1 / g);
                    // A head is row tile 2p, followed by row tile 2p + 1 of its column tile;
                    // every row tile but an odd last one is in a pair.
                    if head {
                        assert_eq!(rt % 2, 0);
                        assert_eq!(order[i + 1], (rt + 1, c, false));
                    } else if rt % 2 == 0 {
                        assert_eq!(rt, rts - 1, "{rts}x{cts} group {group}: {i} alone");
                    } else {
                        assert_eq!(order[i - 1], (rt - 1, c, true));
                    }
                }
            }
        }
        // Two row tiles, groups of two columns: (0,0) (1,0) (0,1) (1,1), then the next group.
        assert_eq!(gemm0_tile_paired(1, 2, 4, 2), (1, 0, false));
        assert_eq!(gemm0_tile_paired(2, 2, 4, 2), (0, 1, true));
        assert_eq!(gemm0_tile_paired(4, 2, 4, 2), (0, 2, true));
        // Three row tiles in one group of 3: pairs over row tiles 0-1, then row tile 2 alone.
        assert_eq!(gemm0_tile_paired(6, 3, 3, 0), (2, 0, false));
    }

    fn layout() -> HeapLayout {
        HeapLayout::new(Geometry {
            world: 2,
            local_experts: 1,
            tokens: 6,
            capacity: 6,
            hidden: 8,
            inter: 16,
            elem_bytes: 2,
            tile: TileShape::new(4, 8, 8),
        })
        .unwrap()
    }

    #[test]
    fn plan_weights_default_to_one_and_must_match_the_packets() {
        let plan =
            SourcePlan::new(&layout(), alloc::vec![alloc::vec![0, 3], alloc::vec![1]]).unwrap();
        assert!(plan.weights(0, 0).eq([1.0, 1.0]) && plan.weights(1, 0).eq([1.0]));
        let weighted =
            |a: f32| plan.clone().with_weights(alloc::vec![alloc::vec![0.25, a], alloc::vec![0.5]]);
        let ok = weighted(0.75).unwrap();
        assert!(ok.weights(0, 0).eq([0.25, 0.75]) && ok.weights(1, 0).eq([0.5]));
        assert!(weighted(f32::NAN).is_err());
        assert!(
            plan.clone().with_weights(alloc::vec![alloc::vec![1.0], alloc::vec![0.5]]).is_err()
        );
    }

    #[test]
    fn hand_computed_graph() {
        let l = layout();
        // Rank 0 sends tokens 0,1,2,5 to expert (0,0) and 1,3 to (1,0); rank 1 sends nothing to
        // rank 0 and 0..=5 to (1,0).
        let p0 = SourcePlan::new(&l, vec![vec![0, 1, 2, 5], vec![1, 3]]).unwrap();
        let p1 = SourcePlan::new(&l, vec![vec![], vec![0, 1, 2, 3, 4, 5]]).unwrap();
        // Rank 0 sent one row tile to (0,0) (tokens 0..=5: token tiles 0..=1) and one to (1,0)
        // (tokens 1, 3: tile 0). Two token tiles, span 2 * 2 / 2 = 2: one group of both tiles,
        // waiting for both row tiles.
        let r0 = p0.combine_readiness(4);
        assert_eq!((r0.group_tiles(), r0.groups(), r0.expected(0)), (2, 1, 2));
        assert_eq!(r0.token_tiles_of(0), 0..2);
        assert_eq!(p0.row_tile_token_tiles(1, 0, 0, 4), Some(0..=0));
        assert_eq!(p0.row_tile_token_tiles(1, 0, 1, 4), None);
        // Rank 1 sent two row tiles to (1,0): tokens 0..=3 (tile 0) and 4..=5 (tile 1); span
        // 1 * 2 / 2 = 1: a group per token tile, each waiting for one row tile.
        let r1 = p1.combine_readiness(4);
        assert_eq!((r1.group_tiles(), r1.groups(), r1.expected(0), r1.expected(1)), (1, 2, 1, 1));

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
    fn group_tiles_follow_the_span_and_the_group_limit() {
        // No row tiles: one tile a group.
        assert_eq!(combine_group_tiles(128, 0, 0), 1);
        // T16384 E8 k2 at bm 128: 128 token tiles, ~264 row tiles over 8 packets: span 3 -> 2.
        assert_eq!(combine_group_tiles(128, 8, 264), 2);
        // E128: span 128 * 128 / 384 = 42 -> 32.
        assert_eq!(combine_group_tiles(128, 128, 384), 32);
        // Never more than MAX_COMBINE_GROUPS groups, never past 2^31.
        assert_eq!(combine_group_tiles(4096, 1, 4096), 4);
        assert_eq!(combine_group_tiles(u32::MAX, 1, u64::MAX), 1 << 22);
        assert_eq!(combine_group_tiles(u32::MAX, u32::MAX, 1), 1 << 31);
        for (tiles, packets, rows) in [(1u32, 1u32, 1u64), (7, 3, 5), (1000, 64, 1), (9999, 2, 7)] {
            let g = combine_group_tiles(tiles, packets, rows);
            assert!(g.is_power_of_two() && div_ceil(tiles, g) <= MAX_COMBINE_GROUPS);
        }
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
