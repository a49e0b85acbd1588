//! [`dispatch`]: the first step of a rank's forward.

use flashdmoe_proto::{Epoch, HeapLayout, ProtoError, SourcePlan, Stage, signal};

use super::{RuntimeError, SymmetricHeap};

/// What [`dispatch`] sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatchStats {
    /// Token rows put into owners' dispatch regions (this rank's own included).
    pub rows: u64,
    /// Bytes of those rows.
    pub bytes: u64,
}

/// Starts `rank`'s forward at `epoch`: zeroes the rank's counters, then, for every
/// `(owner, local expert)` in order, puts the packet's routed rows (and only those) and their
/// routing weights (`f32`, little-endian) into the owner's dispatch regions and release-stores
/// the epoch-stamped dispatch signal carrying the row count -- zero-row packets included, so
/// every owner can close its task bound.
///
/// `input` holds the rank's tokens as `[tokens][hidden]` elements in the heap's element format
/// (`elem_bytes` each); row `i` of a packet is the plan's `i`-th token of that packet.
///
/// Why the puts cannot race: an owner reads the packet region of `(rank, local expert)` only in
/// GEMM0 tasks of the epoch whose signal it acquired, and every such read of the previous epoch
/// finished before this rank could finish its previous forward (its combines waited for the
/// GEMM1 outputs that depend on those reads).
pub fn dispatch<H: SymmetricHeap>(
    heap: &H,
    layout: &HeapLayout,
    epoch: Epoch,
    rank: u32,
    plan: &SourcePlan,
    input: &[u8],
) -> Result<DispatchStats, RuntimeError> {
    let g = layout.geometry();
    let row_bytes = g.hidden as usize * g.elem_bytes as usize;
    let expected = g.tokens as usize * row_bytes;
    if input.len() != expected {
        return Err(ProtoError::BadLength {
            what: "dispatch input",
            expected,
            actual: input.len(),
        }
        .into());
    }
    heap.reset_counters(rank);
    let mut stats = DispatchStats::default();
    for owner in 0..g.world {
        for le in 0..g.local_experts {
            let packet = plan.packet(owner, le);
            for ((row, &token), weight) in packet.iter().enumerate().zip(plan.weights(owner, le)) {
                let offset = layout.row(Stage::Dispatch, rank, le, row as u32, 0)?;
                let start = token as usize * row_bytes;
                // SAFETY: see the function docs: no reader of this region is active until the
                // owner acquires the signal stored below.
                unsafe { heap.put(owner, offset, &input[start..start + row_bytes]) };
                let at = layout.dispatch_weight(rank, le, row as u32)?;
                // SAFETY: as the row's: the weight is read by the row's GEMM1, after the signal.
                unsafe { heap.put(owner, at, &weight.to_le_bytes()) };
            }
            let word = signal::encode_dispatch(epoch, packet.len() as u32);
            heap.store_signal(owner, layout.dispatch_signal(rank, le)?, word);
            stats.rows += packet.len() as u64;
        }
    }
    stats.bytes = stats.rows * row_bytes as u64;
    Ok(stats)
}
