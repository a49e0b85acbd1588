//! Task descriptors: one tile of work, 64 bytes, identical in the simulator and on the GPU.
//!
//! A descriptor names its tile by indices *and* carries the heap offsets the executor needs, so
//! a processor never recomputes the layout. Offsets are always derived from the indices by
//! [`TaskDescriptor::new`]; [`TaskDescriptor::decode`] recomputes them and rejects any
//! descriptor that disagrees, so corrupt or hand-made descriptors cannot point anywhere else.

use crate::epoch::Epoch;
use crate::error::{ProtoError, Result, check_range};
use crate::layout::{HeapLayout, Stage};

/// Offset value meaning "no such location" (no signal to raise, no counter to bump).
pub const NO_OFFSET: u64 = u64::MAX;

/// Size of an encoded descriptor in bytes.
pub const TASK_BYTES: usize = 64;

/// What a task computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum TaskKind {
    /// One `bm x bn` tile of `act(x W_up^T [+ b])` (gated: `silu(x W_gate^T) * (x W_up^T)`),
    /// run by the expert's owner on a received packet; writes the intermediate rows and bumps
    /// the row tile's counter.
    Gemm0 = 0,
    /// One `bm x bn` tile of `h W_down^T [+ b]` for a row tile whose GEMM0 tiles are all done;
    /// written straight into the source rank's return region, then its return signal raised.
    Gemm1 = 1,
    /// One `bm x bn` tile of the output: for each token, the sum over its k slots in slot order
    /// of `weight * returned row`; run by the source rank once the tile's arrivals are complete.
    Combine = 2,
}

impl TaskKind {
    /// All kinds, in tag order.
    pub const ALL: [TaskKind; 3] = [TaskKind::Gemm0, TaskKind::Gemm1, TaskKind::Combine];

    /// The kind with this tag.
    pub fn from_tag(tag: u32) -> Result<TaskKind> {
        Self::ALL.get(tag as usize).copied().ok_or(ProtoError::UnknownTaskKind(tag))
    }

    /// Lower-case name, as used in traces.
    pub const fn name(self) -> &'static str {
        match self {
            TaskKind::Gemm0 => "gemm0",
            TaskKind::Gemm1 => "gemm1",
            TaskKind::Combine => "combine",
        }
    }
}

/// One tile task. `#[repr(C)]`, 64 bytes, 8-byte aligned; mirrored field for field by the
/// generated C header (`fdm_task`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct TaskDescriptor {
    /// [`TaskKind`] tag.
    pub kind: u32,
    /// Rank whose tokens these are (also the executor of `Combine`).
    pub source_rank: u32,
    /// Rank owning the expert (executor of `Gemm0`/`Gemm1`); equals `source_rank` for `Combine`.
    pub owner_rank: u32,
    /// Expert index local to `owner_rank` (0 for `Combine`).
    pub local_expert: u32,
    /// Row tile of the packet (`Combine`: token tile).
    pub row_tile: u32,
    /// Output column tile.
    pub col_tile: u32,
    /// Valid rows in this tile, `1..=bm`.
    pub valid_rows: u32,
    /// Epoch of the forward this task belongs to.
    pub epoch: u32,
    /// Executor's heap offset of the tile's first input row (`Combine`: [`NO_OFFSET`]).
    pub input_offset: u64,
    /// Offset of the tile's first output element: executor's heap for `Gemm0`, the source's
    /// heap for `Gemm1`, the source's output tensor `[tokens][hidden]` for `Combine`.
    pub output_offset: u64,
    /// Source-heap offset of the return signal `Gemm1` raises; else [`NO_OFFSET`].
    pub signal_offset: u64,
    /// Executor-heap offset of the row-tile counter `Gemm0` bumps; else [`NO_OFFSET`].
    pub counter_offset: u64,
}

const _: () = assert!(core::mem::size_of::<TaskDescriptor>() == TASK_BYTES);
const _: () = assert!(core::mem::align_of::<TaskDescriptor>() == 8);

impl TaskDescriptor {
    /// Builds the descriptor of one task, deriving every offset from the layout.
    ///
    /// For `Combine`, pass `owner == source`, `local_expert == 0` and the token tile as
    /// `row_tile`. Errors if any index is out of range or `valid_rows` is not `1..=bm` (and
    /// not more than the packet capacity or token count allows for that tile).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        layout: &HeapLayout,
        kind: TaskKind,
        epoch: Epoch,
        source: u32,
        owner: u32,
        local_expert: u32,
        row_tile: u32,
        col_tile: u32,
        valid_rows: u32,
    ) -> Result<TaskDescriptor> {
        let g = layout.geometry();
        let bm = g.tile.bm;
        check_range("source rank", source, g.world)?;
        check_range("owner rank", owner, g.world)?;
        let row_limit = match kind {
            TaskKind::Combine => g.tokens,
            TaskKind::Gemm0 | TaskKind::Gemm1 => g.capacity,
        };
        // Rows this tile may hold at most (the last tile may be partial).
        let room = row_limit.saturating_sub(row_tile.saturating_mul(bm)).min(bm);
        if valid_rows == 0 || valid_rows > room {
            return Err(ProtoError::OutOfRange {
                what: "valid rows",
                value: valid_rows as u64,
                limit: room as u64 + 1,
            });
        }
        let first_row = row_tile * bm;
        let (input_offset, output_offset, signal_offset, counter_offset) = match kind {
            TaskKind::Gemm0 => {
                check_range("column tile", col_tile, g.col_tiles_inter())?;
                (
                    layout.row(Stage::Dispatch, source, local_expert, first_row, 0)?,
                    layout.intermediate_row(
                        source,
                        local_expert,
                        first_row,
                        col_tile * g.tile.bn,
                    )?,
                    NO_OFFSET,
                    layout.row_tile_counter(source, local_expert, row_tile)?,
                )
            }
            TaskKind::Gemm1 => {
                check_range("column tile", col_tile, g.col_tiles_hidden())?;
                (
                    layout.intermediate_row(source, local_expert, first_row, 0)?,
                    layout.row(
                        Stage::Return,
                        owner,
                        local_expert,
                        first_row,
                        col_tile * g.tile.bn_hidden,
                    )?,
                    layout.return_signal(owner, local_expert, row_tile, col_tile)?,
                    NO_OFFSET,
                )
            }
            TaskKind::Combine => {
                if owner != source || local_expert != 0 {
                    return Err(ProtoError::Inconsistent {
                        field: "combine owner/local expert",
                        expected: source as u64,
                        found: owner as u64,
                    });
                }
                check_range("token tile", row_tile, layout.token_tiles())?;
                check_range("column tile", col_tile, g.col_tiles_hidden())?;
                let elem =
                    first_row as u64 * g.hidden as u64 + (col_tile * g.tile.bn_hidden) as u64;
                (NO_OFFSET, elem * g.elem_bytes as u64, NO_OFFSET, NO_OFFSET)
            }
        };
        Ok(TaskDescriptor {
            kind: kind as u32,
            source_rank: source,
            owner_rank: owner,
            local_expert,
            row_tile,
            col_tile,
            valid_rows,
            epoch: epoch.get(),
            input_offset,
            output_offset,
            signal_offset,
            counter_offset,
        })
    }

    /// The task's kind (descriptors built by [`TaskDescriptor::new`] or decoded always have a
    /// valid tag).
    pub fn task_kind(&self) -> Result<TaskKind> {
        TaskKind::from_tag(self.kind)
    }

    /// The rank that executes this task.
    pub fn executor(&self) -> u32 {
        if self.kind == TaskKind::Combine as u32 { self.source_rank } else { self.owner_rank }
    }

    /// Little-endian encoding, field by field in declaration order.
    pub fn encode(&self) -> [u8; TASK_BYTES] {
        let mut out = [0u8; TASK_BYTES];
        let words32 = [
            self.kind,
            self.source_rank,
            self.owner_rank,
            self.local_expert,
            self.row_tile,
            self.col_tile,
            self.valid_rows,
            self.epoch,
        ];
        for (chunk, w) in out[..32].chunks_exact_mut(4).zip(words32) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        let words64 =
            [self.input_offset, self.output_offset, self.signal_offset, self.counter_offset];
        for (chunk, w) in out[32..].chunks_exact_mut(8).zip(words64) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// Decodes and fully validates a descriptor against `layout`: any byte string either yields
    /// a descriptor identical to the one [`TaskDescriptor::new`] builds from its indices, or an
    /// error.
    pub fn decode(bytes: &[u8], layout: &HeapLayout) -> Result<TaskDescriptor> {
        if bytes.len() != TASK_BYTES {
            return Err(ProtoError::BadLength {
                what: "task descriptor",
                expected: TASK_BYTES,
                actual: bytes.len(),
            });
        }
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let epoch = Epoch::new(u32_at(28)).ok_or(ProtoError::OutOfRange {
            what: "task epoch (0 is reserved)",
            value: 0,
            limit: 1,
        })?;
        let expected = TaskDescriptor::new(
            layout,
            TaskKind::from_tag(u32_at(0))?,
            epoch,
            u32_at(4),
            u32_at(8),
            u32_at(12),
            u32_at(16),
            u32_at(20),
            u32_at(24),
        )?;
        let found = [u64_at(32), u64_at(40), u64_at(48), u64_at(56)];
        let want = [
            ("input_offset", expected.input_offset),
            ("output_offset", expected.output_offset),
            ("signal_offset", expected.signal_offset),
            ("counter_offset", expected.counter_offset),
        ];
        for ((field, expected), found) in want.into_iter().zip(found) {
            if expected != found {
                return Err(ProtoError::Inconsistent { field, expected, found });
            }
        }
        Ok(expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Geometry, TileShape};

    fn layout() -> HeapLayout {
        HeapLayout::new(Geometry {
            world: 2,
            local_experts: 3,
            tokens: 10,
            capacity: 5,
            hidden: 16,
            inter: 32,
            elem_bytes: 2,
            tile: TileShape::new(4, 8, 8),
        })
        .unwrap()
    }

    #[test]
    fn hand_computed_offsets() {
        let l = layout();
        let e = Epoch::FIRST;
        // GEMM0 of source 1, expert 2, row tile 1 (rows 4..5: 1 valid row), column tile 3.
        let t = TaskDescriptor::new(&l, TaskKind::Gemm0, e, 1, 0, 2, 1, 3, 1).unwrap();
        assert_eq!(t.input_offset, 1024 + ((5 * 5 + 4) * 16) * 2);
        assert_eq!(t.output_offset, 3072 + ((5 * 5 + 4) * 32 + 24) * 2);
        assert_eq!(t.counter_offset, 512 + (5 * 2 + 1) * 4);
        assert_eq!(t.signal_offset, NO_OFFSET);
        // GEMM1 on owner 0 for source 1: output into source's return region, slot (owner 0, le 2).
        let t = TaskDescriptor::new(&l, TaskKind::Gemm1, e, 1, 0, 2, 0, 1, 4).unwrap();
        assert_eq!(t.output_offset, 2048 + ((2 * 5) * 16 + 8) * 2);
        assert_eq!(t.signal_offset, 256 + (2 * 4 + 1) * 8);
        assert_eq!(t.executor(), 0);
        // Combine of token tile 2 (tokens 8..10), column tile 1 of rank 1.
        let t = TaskDescriptor::new(&l, TaskKind::Combine, e, 1, 1, 0, 2, 1, 2).unwrap();
        assert_eq!(t.output_offset, (8 * 16 + 8) * 2);
        assert_eq!(t.executor(), 1);
    }

    #[test]
    fn valid_rows_are_bounded_by_the_tile() {
        let l = layout();
        let e = Epoch::FIRST;
        assert!(TaskDescriptor::new(&l, TaskKind::Gemm0, e, 0, 0, 0, 0, 0, 0).is_err());
        assert!(TaskDescriptor::new(&l, TaskKind::Gemm0, e, 0, 0, 0, 0, 0, 5).is_err());
        assert!(TaskDescriptor::new(&l, TaskKind::Gemm0, e, 0, 0, 0, 1, 0, 2).is_err());
        assert!(TaskDescriptor::new(&l, TaskKind::Combine, e, 0, 0, 0, 2, 0, 3).is_err());
    }

    #[test]
    fn round_trip_and_tamper_detection() {
        let l = layout();
        let t = TaskDescriptor::new(&l, TaskKind::Gemm1, Epoch::FIRST, 1, 0, 2, 1, 1, 1).unwrap();
        let bytes = t.encode();
        assert_eq!(TaskDescriptor::decode(&bytes, &l), Ok(t));
        let mut bad = bytes;
        bad[40] ^= 1;
        assert!(matches!(TaskDescriptor::decode(&bad, &l), Err(ProtoError::Inconsistent { .. })));
        let mut bad = bytes;
        bad[0] = 9;
        assert_eq!(TaskDescriptor::decode(&bad, &l), Err(ProtoError::UnknownTaskKind(9)));
        assert!(TaskDescriptor::decode(&bytes[..63], &l).is_err());
    }
}
