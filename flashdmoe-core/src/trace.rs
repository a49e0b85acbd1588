//! Task traces: per-task start/end events, Chrome/Perfetto JSON, utilisation.

use flashdmoe_proto::TaskKind;

/// One executed task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// Executing rank.
    pub rank: u32,
    /// Processor (worker thread / thread block) index within the rank.
    pub processor: u32,
    /// Task kind.
    pub kind: TaskKind,
    /// Source rank of the tokens.
    pub source: u32,
    /// Owner rank of the expert.
    pub owner: u32,
    /// Local expert index.
    pub local_expert: u32,
    /// Row tile (token tile for combine).
    pub row_tile: u32,
    /// Column tile.
    pub col_tile: u32,
    /// Start, nanoseconds from the rank's forward start.
    pub start_ns: u64,
    /// End, nanoseconds from the rank's forward start.
    pub end_ns: u64,
}
