//! The symmetric-heap layout: where every region, signal and counter lives.
//!
//! Every rank allocates one heap of [`HeapLayout::total_bytes`] bytes with exactly this layout,
//! so a byte offset means the same place in every rank's heap (and in the simulator and on the
//! GPU). Regions are addressed by `(peer rank, local expert, stage, row)`: for the
//! [`Stage::Dispatch`] stage the peer is the *source* rank whose tokens arrive, for
//! [`Stage::Return`] it is the *owner* rank whose expert computed the rows. Rows are sized by
//! the packet capacity, but only routed rows are ever written or sent.
//!
//! Sections, in order, each starting on a [`ALIGN`]-byte boundary:
//!
//! | section | shape | element | written by |
//! |---|---|---|---|
//! | dispatch signals | `[world][local_experts]` | `u64` | source ranks (remote) |
//! | return signals | `[world][local_experts][row_tiles][col_tiles_h]` | `u64` | owner ranks (remote) |
//! | row-tile counters | `[world][local_experts][row_tiles]` | `u32` | this rank |
//! | combine counters | `[combine_groups][col_tiles_h]` | `u32` | this rank |
//! | dispatch rows | `[world][local_experts][capacity][hidden]` | element | source ranks (remote) |
//! | return rows | `[world][local_experts][capacity][hidden]` | element | owner ranks (remote) |
//! | intermediate rows | `[world][local_experts][capacity][inter]` | element | this rank |
//! | dispatch weights | `[world][local_experts][capacity]` (+ `bm` of slack) | `f32` | source ranks (remote) |
//!
//! A dispatched row's weight (the router's combine weight of that token for that expert)
//! travels with it; the owner's GEMM1 scales the row's output by it, so a source's combine is
//! a plain ordered sum of its returned rows.

use crate::error::{ProtoError, Result, check_range};

/// Alignment of every section, and the granularity of the total size, in bytes.
pub const ALIGN: u64 = 256;
/// Bytes of one signal word.
pub const SIGNAL_BYTES: u64 = 8;
/// Bytes of one counter word.
pub const COUNTER_BYTES: u64 = 4;
/// Bytes of one dispatch weight (`f32`).
pub const WEIGHT_BYTES: u64 = 4;
/// The most readiness groups a rank's combine has: its token tiles are counted in at most this
/// many groups of consecutive tiles ([`crate::graph::combine_group_tiles`]), which bounds the
/// combine counters and the kernel's per-group state in shared memory.
pub const MAX_COMBINE_GROUPS: u32 = 1024;

/// The GEMM tile shape: `bm` rows (tokens) by `bn` output columns, stepping `bk` along K.
///
/// Row tiles of packets and token tiles of the combine both use `bm` rows; output column tiles
/// of GEMM0 use `bn` columns, those of the hidden-wide outputs (GEMM1 and the combine)
/// `bn_hidden`, a multiple of `bn` (`bn` itself unless a backend asks for wider GEMM1 tiles:
/// a gated GEMM0 tile of `bn` columns reads two weight tiles, so a GEMM1 tile twice as wide
/// costs the same shared memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct TileShape {
    /// Rows per tile.
    pub bm: u32,
    /// Output columns per GEMM0 tile.
    pub bn: u32,
    /// K step of the GEMM main loop.
    pub bk: u32,
    /// Output columns per GEMM1 and combine tile.
    pub bn_hidden: u32,
    /// GEMM0 tasks of a packet are published in groups of this many column tiles, each group
    /// row tile by row tile ([`crate::graph::gemm0_tile`]); 0: one group of every column
    /// (row tile by row tile). A policy for the GPU's cache (an expert's weights read once a
    /// group instead of once a row tile); the task set and the results do not depend on it.
    pub gemm0_group: u32,
}

impl TileShape {
    /// `bm` x `bn` tiles stepping `bk`, hidden-wide outputs in tiles of `bn` columns too,
    /// GEMM0 tasks row tile by row tile.
    pub const fn new(bm: u32, bn: u32, bk: u32) -> TileShape {
        TileShape { bm, bn, bk, bn_hidden: bn, gemm0_group: 0 }
    }

    /// The same tiles with hidden-wide outputs (GEMM1, the combine) in tiles of `bn_hidden`
    /// columns.
    pub const fn with_bn_hidden(self, bn_hidden: u32) -> TileShape {
        TileShape { bn_hidden, ..self }
    }

    /// The same tiles with GEMM0 tasks published in groups of `columns` column tiles
    /// ([`TileShape::gemm0_group`]).
    pub const fn with_gemm0_group(self, columns: u32) -> TileShape {
        TileShape { gemm0_group: columns, ..self }
    }
}

/// The stage of a data region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Stage {
    /// Token rows sent by a source rank to the owner of a local expert.
    Dispatch = 0,
    /// Expert output rows sent back by the owner to the source rank.
    Return = 1,
}

/// Everything the layout depends on. All values are per rank and identical on every rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Number of ranks P.
    pub world: u32,
    /// Expert slots per rank (the largest number of experts any rank owns).
    pub local_experts: u32,
    /// Tokens per rank T (sizes the combine token tiles).
    pub tokens: u32,
    /// Row capacity of one `(source, local expert)` packet.
    pub capacity: u32,
    /// Hidden size H (columns of dispatched and returned rows).
    pub hidden: u32,
    /// Intermediate size I (columns of the GEMM0 output; for gated experts the activated width).
    pub inter: u32,
    /// Bytes per activation element (2 for bf16/f16, 4 for f32).
    pub elem_bytes: u32,
    /// Tile shape of the task graph.
    pub tile: TileShape,
}

/// The layout as a plain `#[repr(C)]` record, passed by value to the GPU kernel and mirrored
/// by `fdm_layout` in the generated C header, whose helper functions compute the same offsets
/// as the methods of [`HeapLayout`] (checked by this crate's tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct LayoutParams {
    /// [`Geometry::world`].
    pub world: u32,
    /// [`Geometry::local_experts`].
    pub local_experts: u32,
    /// [`Geometry::tokens`].
    pub tokens: u32,
    /// [`Geometry::capacity`].
    pub capacity: u32,
    /// [`Geometry::hidden`].
    pub hidden: u32,
    /// [`Geometry::inter`].
    pub inter: u32,
    /// [`Geometry::elem_bytes`].
    pub elem_bytes: u32,
    /// [`TileShape::bm`].
    pub bm: u32,
    /// [`TileShape::bn`].
    pub bn: u32,
    /// [`TileShape::bk`].
    pub bk: u32,
    /// [`HeapLayout::max_row_tiles`].
    pub row_tiles: u32,
    /// [`HeapLayout::token_tiles`].
    pub token_tiles: u32,
    /// [`TileShape::bn_hidden`].
    pub bn_hidden: u32,
    /// [`TileShape::gemm0_group`].
    pub gemm0_group: u32,
    /// Start of the dispatch signals.
    pub dispatch_signals: u64,
    /// Start of the return signals.
    pub return_signals: u64,
    /// Start of the row-tile counters.
    pub row_tile_counters: u64,
    /// Start of the combine counters.
    pub combine_counters: u64,
    /// Start of the dispatch rows.
    pub dispatch_rows: u64,
    /// Start of the return rows.
    pub return_rows: u64,
    /// Start of the intermediate rows.
    pub intermediate_rows: u64,
    /// Start of the dispatch weights.
    pub dispatch_weights: u64,
    /// Total heap bytes.
    pub total: u64,
}

const _: () = assert!(core::mem::size_of::<LayoutParams>() == 128);
const _: () = assert!(core::mem::align_of::<LayoutParams>() == 8);

/// Byte offsets of every section of the heap, computed once from a [`Geometry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HeapLayout {
    geometry: Geometry,
    row_tiles: u32,
    token_tiles: u32,
    dispatch_signals: u64,
    return_signals: u64,
    row_tile_counters: u64,
    combine_counters: u64,
    dispatch_rows: u64,
    return_rows: u64,
    intermediate_rows: u64,
    dispatch_weights: u64,
    total: u64,
}

fn mul(what: &'static str, factors: &[u64]) -> Result<u64> {
    factors.iter().try_fold(1u64, |acc, &f| acc.checked_mul(f)).ok_or(ProtoError::Overflow { what })
}

fn add(what: &'static str, a: u64, b: u64) -> Result<u64> {
    a.checked_add(b).ok_or(ProtoError::Overflow { what })
}

fn align_up(what: &'static str, v: u64) -> Result<u64> {
    Ok(add(what, v, ALIGN - 1)? / ALIGN * ALIGN)
}

fn invalid(field: &'static str, reason: &'static str) -> ProtoError {
    ProtoError::InvalidGeometry { field, reason }
}

/// `ceil(n / d)` for `d > 0`.
pub const fn div_ceil(n: u32, d: u32) -> u32 {
    n.div_ceil(d)
}

/// Columns of column tile `col_tile` of an output `n` columns wide in tiles of `bn`: `bn`,
/// what is left in a ragged last tile, 0 past it (the generated header's `fdm_tile_cols`).
pub const fn tile_cols(n: u32, bn: u32, col_tile: u32) -> u32 {
    let start = col_tile as u64 * bn as u64;
    if start >= n as u64 {
        0
    } else if n as u64 - start < bn as u64 {
        (n as u64 - start) as u32
    } else {
        bn
    }
}

impl Geometry {
    /// Checks the ranges the layout relies on.
    pub fn validate(&self) -> Result<()> {
        let t = &self.tile;
        let nonzero: [(&'static str, u32); 9] = [
            ("world", self.world),
            ("local_experts", self.local_experts),
            ("hidden", self.hidden),
            ("inter", self.inter),
            ("elem_bytes", self.elem_bytes),
            ("tile.bm", t.bm),
            ("tile.bn", t.bn),
            ("tile.bk", t.bk),
            ("tile.bn_hidden", t.bn_hidden),
        ];
        for (field, v) in nonzero {
            if v == 0 {
                return Err(invalid(field, "must be > 0"));
            }
        }
        if !matches!(self.elem_bytes, 2 | 4) {
            return Err(invalid("elem_bytes", "must be 2 or 4"));
        }
        if self.world > u16::MAX as u32 {
            return Err(invalid("world", "must be at most 65535"));
        }
        // Column tiles need not divide their output: the last one is ragged (`inter_cols`,
        // `hidden_cols`), and a backend masks its columns past the edge.
        if !t.bn_hidden.is_multiple_of(t.bn) {
            return Err(invalid("tile.bn_hidden", "must be a multiple of tile.bn"));
        }
        if !self.hidden.is_multiple_of(t.bk) || !self.inter.is_multiple_of(t.bk) {
            return Err(invalid("tile.bk", "must divide hidden and inter"));
        }
        // A return signal's payload is the tile id within its packet, a `u32`.
        if self.max_row_tiles() as u64 * self.col_tiles_hidden() as u64 > u32::MAX as u64 {
            return Err(invalid(
                "capacity",
                "return tiles per packet (row tiles x hidden column tiles) must fit in 32 bits",
            ));
        }
        if !(self.hidden as u64 * self.elem_bytes as u64).is_multiple_of(16)
            || !(self.inter as u64 * self.elem_bytes as u64).is_multiple_of(16)
        {
            return Err(invalid(
                "hidden",
                "rows of hidden and inter must be multiples of 16 bytes",
            ));
        }
        Ok(())
    }

    /// Row tiles of a full packet: `ceil(capacity / bm)`.
    pub fn max_row_tiles(&self) -> u32 {
        div_ceil(self.capacity, self.tile.bm)
    }

    /// Column tiles of a hidden-wide output (GEMM1, combine): `ceil(hidden / bn_hidden)`.
    pub fn col_tiles_hidden(&self) -> u32 {
        div_ceil(self.hidden, self.tile.bn_hidden)
    }

    /// Column tiles of an intermediate-wide output (GEMM0): `ceil(inter / bn)`.
    pub fn col_tiles_inter(&self) -> u32 {
        div_ceil(self.inter, self.tile.bn)
    }

    /// Columns of hidden-wide column tile `col_tile` (`bn_hidden`, fewer in a ragged last
    /// tile; 0 past the last).
    pub fn hidden_cols(&self, col_tile: u32) -> u32 {
        tile_cols(self.hidden, self.tile.bn_hidden, col_tile)
    }

    /// Columns of intermediate-wide column tile `col_tile` (`bn`, fewer in a ragged last tile;
    /// 0 past the last).
    pub fn inter_cols(&self, col_tile: u32) -> u32 {
        tile_cols(self.inter, self.tile.bn, col_tile)
    }

    /// Token tiles of the combine: `ceil(tokens / bm)`.
    pub fn token_tiles(&self) -> u32 {
        div_ceil(self.tokens, self.tile.bm)
    }

    /// Readiness groups of the combine a forward can have: `min(token_tiles,
    /// MAX_COMBINE_GROUPS)` (one group per token tile at the finest grouping).
    pub fn combine_groups(&self) -> u32 {
        self.token_tiles().min(MAX_COMBINE_GROUPS)
    }
}

impl HeapLayout {
    /// Computes the layout, or an error if the geometry is invalid or any offset overflows.
    pub fn new(geometry: Geometry) -> Result<HeapLayout> {
        geometry.validate()?;
        let g = &geometry;
        let (p, le) = (g.world as u64, g.local_experts as u64);
        let row_tiles = g.max_row_tiles();
        let token_tiles = g.token_tiles();
        let (rt, cth) = (row_tiles as u64, g.col_tiles_hidden() as u64);
        let groups = g.combine_groups() as u64;
        let eb = g.elem_bytes as u64;
        let sizes: [(&'static str, u64); 8] = [
            ("dispatch signals", mul("dispatch signals", &[p, le, SIGNAL_BYTES])?),
            ("return signals", mul("return signals", &[p, le, rt, cth, SIGNAL_BYTES])?),
            ("row-tile counters", mul("row-tile counters", &[p, le, rt, COUNTER_BYTES])?),
            ("combine counters", mul("combine counters", &[groups, cth, COUNTER_BYTES])?),
            (
                "dispatch rows",
                mul("dispatch rows", &[p, le, g.capacity as u64, g.hidden as u64, eb])?,
            ),
            ("return rows", mul("return rows", &[p, le, g.capacity as u64, g.hidden as u64, eb])?),
            (
                "intermediate rows",
                mul("intermediate rows", &[p, le, g.capacity as u64, g.inter as u64, eb])?,
            ),
            (
                "dispatch weights",
                // One row tile of slack: a tile's epilogue may read a whole tile's weights.
                mul(
                    "dispatch weights",
                    &[p * le * g.capacity as u64 + g.tile.bm as u64, WEIGHT_BYTES],
                )?,
            ),
        ];
        // Combine tasks address the `[tokens][hidden]` output tensor by byte offset.
        mul("output tensor", &[g.tokens as u64, g.hidden as u64, eb])?;
        let mut starts = [0u64; 8];
        let mut cursor = 0u64;
        for (i, (what, size)) in sizes.iter().enumerate() {
            starts[i] = cursor;
            cursor = align_up(what, add(what, cursor, *size)?)?;
        }
        Ok(HeapLayout {
            geometry,
            row_tiles,
            token_tiles,
            dispatch_signals: starts[0],
            return_signals: starts[1],
            row_tile_counters: starts[2],
            combine_counters: starts[3],
            dispatch_rows: starts[4],
            return_rows: starts[5],
            intermediate_rows: starts[6],
            dispatch_weights: starts[7],
            total: cursor,
        })
    }

    /// The geometry this layout was computed from.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Total heap bytes per rank (a multiple of [`ALIGN`]).
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// Row tiles of a full packet.
    pub fn max_row_tiles(&self) -> u32 {
        self.row_tiles
    }

    /// Token tiles of the combine.
    pub fn token_tiles(&self) -> u32 {
        self.token_tiles
    }

    /// Start and length in bytes of the signal and counter sections (everything a forward
    /// resets or stamps), i.e. the bytes before the first data section.
    pub fn control_bytes(&self) -> u64 {
        self.dispatch_rows
    }

    /// The counters a forward resets: the row-tile counters and the combine counters, as
    /// `(start, bytes)` (one contiguous run of `u32`s; `fdm_counters` in the C header).
    pub fn counters(&self) -> (u64, u64) {
        let g = &self.geometry;
        let end = self.combine_counters
            + g.combine_groups() as u64 * g.col_tiles_hidden() as u64 * COUNTER_BYTES;
        (self.row_tile_counters, end - self.row_tile_counters)
    }

    fn check_peer_expert(&self, peer: u32, local_expert: u32) -> Result<()> {
        check_range("peer rank", peer, self.geometry.world)?;
        check_range("local expert", local_expert, self.geometry.local_experts)
    }

    fn packet_index(&self, peer: u32, local_expert: u32) -> u64 {
        peer as u64 * self.geometry.local_experts as u64 + local_expert as u64
    }

    /// Offset of the dispatch signal written by `source` for `local_expert` of this rank.
    pub fn dispatch_signal(&self, source: u32, local_expert: u32) -> Result<u64> {
        self.check_peer_expert(source, local_expert)?;
        Ok(self.dispatch_signals + self.packet_index(source, local_expert) * SIGNAL_BYTES)
    }

    /// Index of a return tile within its packet: `row_tile * col_tiles_hidden + col_tile`.
    pub fn return_tile_id(&self, row_tile: u32, col_tile: u32) -> Result<u32> {
        check_range("row tile", row_tile, self.row_tiles)?;
        check_range("column tile", col_tile, self.geometry.col_tiles_hidden())?;
        Ok(row_tile * self.geometry.col_tiles_hidden() + col_tile)
    }

    /// Offset of the signal raised in the source's heap when `owner` returns one output tile.
    pub fn return_signal(
        &self,
        owner: u32,
        local_expert: u32,
        row_tile: u32,
        col_tile: u32,
    ) -> Result<u64> {
        self.check_peer_expert(owner, local_expert)?;
        let tile = self.return_tile_id(row_tile, col_tile)? as u64;
        let per_packet = self.row_tiles as u64 * self.geometry.col_tiles_hidden() as u64;
        Ok(self.return_signals
            + (self.packet_index(owner, local_expert) * per_packet + tile) * SIGNAL_BYTES)
    }

    /// Offset of the GEMM0-completion counter of one row tile of a received packet.
    pub fn row_tile_counter(&self, source: u32, local_expert: u32, row_tile: u32) -> Result<u64> {
        self.check_peer_expert(source, local_expert)?;
        check_range("row tile", row_tile, self.row_tiles)?;
        let idx = self.packet_index(source, local_expert) * self.row_tiles as u64 + row_tile as u64;
        Ok(self.row_tile_counters + idx * COUNTER_BYTES)
    }

    /// Offset of the arrival counter of readiness group `group`, output column tile `col_tile`
    /// (counts the returned tiles of that column whose rows fall in the group's token tiles;
    /// see [`crate::graph::CombineReadiness`]).
    pub fn combine_counter(&self, group: u32, col_tile: u32) -> Result<u64> {
        check_range("combine group", group, self.geometry.combine_groups())?;
        let cth = self.geometry.col_tiles_hidden();
        check_range("column tile", col_tile, cth)?;
        Ok(self.combine_counters + (group as u64 * cth as u64 + col_tile as u64) * COUNTER_BYTES)
    }

    /// Offset of element `col` of row `row` of the `stage` region of `(peer, local_expert)`.
    pub fn row(
        &self,
        stage: Stage,
        peer: u32,
        local_expert: u32,
        row: u32,
        col: u32,
    ) -> Result<u64> {
        self.check_peer_expert(peer, local_expert)?;
        check_range("row", row, self.geometry.capacity)?;
        check_range("column", col, self.geometry.hidden)?;
        let base = match stage {
            Stage::Dispatch => self.dispatch_rows,
            Stage::Return => self.return_rows,
        };
        Ok(base + self.element_index(peer, local_expert, row, col, self.geometry.hidden))
    }

    /// Offset of element `col` of row `row` of the GEMM0 output of packet `(source, local_expert)`.
    pub fn intermediate_row(
        &self,
        source: u32,
        local_expert: u32,
        row: u32,
        col: u32,
    ) -> Result<u64> {
        self.check_peer_expert(source, local_expert)?;
        check_range("row", row, self.geometry.capacity)?;
        check_range("column", col, self.geometry.inter)?;
        Ok(self.intermediate_rows
            + self.element_index(source, local_expert, row, col, self.geometry.inter))
    }

    /// Offset of the routing weight (`f32`) of row `row` of the packet `(source, local_expert)`
    /// dispatched to this rank.
    pub fn dispatch_weight(&self, source: u32, local_expert: u32, row: u32) -> Result<u64> {
        self.check_peer_expert(source, local_expert)?;
        check_range("row", row, self.geometry.capacity)?;
        let index =
            self.packet_index(source, local_expert) * self.geometry.capacity as u64 + row as u64;
        Ok(self.dispatch_weights + index * WEIGHT_BYTES)
    }

    /// Byte offset of an element within a `[world][local_experts][capacity][width]` section.
    /// Callers have range-checked every index, so this cannot overflow (`new` bounded the
    /// section's size).
    fn element_index(&self, peer: u32, local_expert: u32, row: u32, col: u32, width: u32) -> u64 {
        let g = &self.geometry;
        let row_index = self.packet_index(peer, local_expert) * g.capacity as u64 + row as u64;
        (row_index * width as u64 + col as u64) * g.elem_bytes as u64
    }

    /// The layout as a `#[repr(C)]` record for the kernel.
    pub fn params(&self) -> LayoutParams {
        let g = &self.geometry;
        LayoutParams {
            world: g.world,
            local_experts: g.local_experts,
            tokens: g.tokens,
            capacity: g.capacity,
            hidden: g.hidden,
            inter: g.inter,
            elem_bytes: g.elem_bytes,
            bm: g.tile.bm,
            bn: g.tile.bn,
            bk: g.tile.bk,
            row_tiles: self.row_tiles,
            token_tiles: self.token_tiles,
            bn_hidden: g.tile.bn_hidden,
            gemm0_group: g.tile.gemm0_group,
            dispatch_signals: self.dispatch_signals,
            return_signals: self.return_signals,
            row_tile_counters: self.row_tile_counters,
            combine_counters: self.combine_counters,
            dispatch_rows: self.dispatch_rows,
            return_rows: self.return_rows,
            intermediate_rows: self.intermediate_rows,
            dispatch_weights: self.dispatch_weights,
            total: self.total,
        }
    }

    /// Named sections as `(name, start, length)`, in heap order: for docs, tests and headers.
    pub fn sections(&self) -> [(&'static str, u64, u64); 8] {
        let g = &self.geometry;
        let (p, le) = (g.world as u64, g.local_experts as u64);
        let rows = p * le * g.capacity as u64;
        let eb = g.elem_bytes as u64;
        let cth = g.col_tiles_hidden() as u64;
        [
            ("dispatch_signals", self.dispatch_signals, p * le * SIGNAL_BYTES),
            (
                "return_signals",
                self.return_signals,
                p * le * self.row_tiles as u64 * cth * SIGNAL_BYTES,
            ),
            (
                "row_tile_counters",
                self.row_tile_counters,
                p * le * self.row_tiles as u64 * COUNTER_BYTES,
            ),
            (
                "combine_counters",
                self.combine_counters,
                g.combine_groups() as u64 * cth * COUNTER_BYTES,
            ),
            ("dispatch_rows", self.dispatch_rows, rows * g.hidden as u64 * eb),
            ("return_rows", self.return_rows, rows * g.hidden as u64 * eb),
            ("intermediate_rows", self.intermediate_rows, rows * g.inter as u64 * eb),
            ("dispatch_weights", self.dispatch_weights, (rows + g.tile.bm as u64) * WEIGHT_BYTES),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn small() -> Geometry {
        Geometry {
            world: 2,
            local_experts: 3,
            tokens: 10,
            capacity: 5,
            hidden: 16,
            inter: 32,
            elem_bytes: 2,
            tile: TileShape::new(4, 8, 8),
        }
    }

    #[test]
    fn hand_computed_small_layout() {
        let l = HeapLayout::new(small()).unwrap();
        // row tiles = ceil(5/4) = 2; col tiles hidden = 2; token tiles = ceil(10/4) = 3.
        assert_eq!(l.max_row_tiles(), 2);
        assert_eq!(l.token_tiles(), 3);
        // dispatch signals: 2*3*8 = 48 B at 0.
        assert_eq!(l.dispatch_signal(0, 0).unwrap(), 0);
        assert_eq!(l.dispatch_signal(1, 2).unwrap(), 40);
        // return signals: 2*3*2*2*8 = 192 B at 256.
        assert_eq!(l.return_signal(0, 0, 0, 0).unwrap(), 256);
        assert_eq!(l.return_signal(0, 0, 1, 1).unwrap(), 256 + 3 * 8);
        assert_eq!(l.return_signal(1, 2, 1, 1).unwrap(), 256 + 192 - 8);
        // row-tile counters: 2*3*2*4 = 48 B at 512.
        assert_eq!(l.row_tile_counter(1, 0, 1).unwrap(), 512 + (3 * 2 + 1) * 4);
        // combine counters: 3 groups (one per token tile) * 2 columns * 4 = 24 B at 768.
        assert_eq!(l.geometry().combine_groups(), 3);
        assert_eq!(l.combine_counter(0, 1).unwrap(), 768 + 4);
        assert_eq!(l.combine_counter(2, 1).unwrap(), 768 + (2 * 2 + 1) * 4);
        // dispatch rows: 2*3*5*16*2 = 960 B at 1024; return rows at 1024 + 1024 = 2048.
        assert_eq!(l.row(Stage::Dispatch, 0, 0, 0, 0).unwrap(), 1024);
        assert_eq!(l.row(Stage::Dispatch, 1, 1, 2, 3).unwrap(), 1024 + ((4 * 5 + 2) * 16 + 3) * 2);
        assert_eq!(l.row(Stage::Return, 0, 0, 0, 0).unwrap(), 2048);
        // intermediate: at 2048 + 1024 = 3072, 2*3*5*32*2 = 1920 B, up to 3072 + 2048 = 5120.
        assert_eq!(l.intermediate_row(0, 1, 1, 31).unwrap(), 3072 + ((5 + 1) * 32 + 31) * 2);
        // dispatch weights: (2*3*5 + 4)*4 = 136 B at 5120 -> total 5376.
        assert_eq!(l.dispatch_weight(0, 0, 0).unwrap(), 5120);
        assert_eq!(l.dispatch_weight(1, 2, 4).unwrap(), 5120 + (5 * 5 + 4) * 4);
        assert_eq!(l.total_bytes(), 5376);
        assert_eq!(l.control_bytes(), 1024);
        let (start, bytes) = l.counters();
        assert_eq!(start, l.params().row_tile_counters);
        assert_eq!(
            start + bytes,
            l.params().combine_counters + 4 * 3 * l.geometry().col_tiles_hidden() as u64
        );
    }

    #[test]
    fn out_of_range_indices_are_errors() {
        let l = HeapLayout::new(small()).unwrap();
        assert!(matches!(
            l.dispatch_signal(2, 0),
            Err(ProtoError::OutOfRange { what: "peer rank", .. })
        ));
        assert!(l.return_signal(0, 3, 0, 0).is_err());
        assert!(l.return_signal(0, 0, 2, 0).is_err());
        assert!(l.row(Stage::Return, 0, 0, 5, 0).is_err());
        assert!(l.row(Stage::Return, 0, 0, 0, 16).is_err());
        assert!(l.combine_counter(0, 2).is_err());
        assert!(l.combine_counter(3, 0).is_err());
        assert!(l.dispatch_weight(0, 0, 5).is_err());
        assert!(l.dispatch_weight(2, 0, 0).is_err());
    }

    #[test]
    fn ragged_column_tiles_cover_their_output_once() {
        let mut g = small();
        g.tile.bn = 12;
        g.tile.bn_hidden = 12;
        let l = HeapLayout::new(g).unwrap();
        let g = l.geometry();
        let (h, i) = (g.hidden, g.inter);
        assert_eq!(g.col_tiles_hidden(), h.div_ceil(12));
        assert_eq!(g.col_tiles_inter(), i.div_ceil(12));
        let sum = |n: u32, cols: &dyn Fn(u32) -> u32| (0..n).map(cols).sum::<u32>();
        assert_eq!(sum(g.col_tiles_hidden(), &|c| g.hidden_cols(c)), h);
        assert_eq!(sum(g.col_tiles_inter(), &|c| g.inter_cols(c)), i);
        assert_eq!(g.hidden_cols(g.col_tiles_hidden()), 0);
        assert_eq!((tile_cols(2880, 128, 21), tile_cols(2880, 128, 22)), (128, 64));
        assert_eq!(tile_cols(2880, 128, 23), 0);
        assert_eq!(tile_cols(u32::MAX, u32::MAX, u32::MAX), 0);
    }

    #[test]
    fn invalid_geometries_name_the_field() {
        let mut g = small();
        g.tile.bn_hidden = g.tile.bn + 1;
        assert_eq!(
            HeapLayout::new(g),
            Err(invalid("tile.bn_hidden", "must be a multiple of tile.bn"))
        );
        let mut g = small();
        g.world = 0;
        assert!(matches!(
            HeapLayout::new(g),
            Err(ProtoError::InvalidGeometry { field: "world", .. })
        ));
        let mut g = small();
        g.elem_bytes = 3;
        assert!(matches!(
            HeapLayout::new(g),
            Err(ProtoError::InvalidGeometry { field: "elem_bytes", .. })
        ));
    }

    #[test]
    fn overflow_is_an_error() {
        let mut g = small();
        g.world = 65535;
        g.local_experts = u32::MAX;
        g.capacity = u32::MAX;
        assert!(matches!(HeapLayout::new(g), Err(ProtoError::Overflow { .. })));
    }
}
