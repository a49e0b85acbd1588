//! [`Placer`]: the streamed placement -- a rank's routed rows placed in their packets chunk by
//! chunk, each row tile's GEMM0 tasks queued the moment its last row is in (the plan and the
//! kernel's form: docs/dev/streamed-placement.md).
//!
//! In the other forms a rank places every routed row before any task exists: [`super::dispatch`]
//! here, the kernel's A3 behind a grid barrier. On one GPU that keeps every processor idle
//! until the last token is routed (the first task at 42 µs of T16384 E8's 861, 86 of E128's
//! 1092: perf-notes v52). Placement is a prefix sum over the tokens, so it streams:
//!
//! 1. A placer claims the next chunk of `chunk_tokens` tokens (a ticket, so chunks are claimed
//!    in order) and counts its routed slots a packet. It publishes each count at once as the
//!    chunk's *aggregate* in the [`Placement`] board (chunk 0 publishes it as its *inclusive
//!    prefix*), which never waits.
//! 2. For each packet it looks back over the earlier chunks' words, adding aggregates until it
//!    meets an inclusive prefix (CUB's decoupled look-back): the sum is the packet's rows
//!    before this chunk, and the chunk publishes its own inclusive prefix. A word not yet
//!    published is a wait ([`Poll::Idle`]); every chunk it can wait for was claimed earlier and
//!    publishes its aggregate without waiting, so the look-back always ends.
//! 3. It puts the chunk's rows (and routing weights) at their positions in token order: the
//!    positions [`RankRouting::from_choices`](crate::RankRouting::from_choices) gives, capacity
//!    drops included (a position at or past the capacity is dropped: the lowest token wins).
//!    Then it adds the rows it put into each row tile to that tile's *placed* counter.
//! 4. The placer whose addition brings a row tile's counter to `bm` queues the tile's GEMM0
//!    tasks. The packet's last row tile is usually partial: the placer of the last chunk,
//!    which learns every packet's row count `n` from its look-back, publishes `n` (the
//!    scheduler's task bound) and pads that tile's counter by the rows it will never get, with
//!    [`PADDED`] set so the tile's completer knows to read `n` for its valid rows. In a paired
//!    layer ([`RankState::with_pairs`]) a counter covers a pair's two row tiles (`2 bm` rows),
//!    and its completer queues the pair adjacent, head first, as the whole-packet forms do (a
//!    packet's odd last row tile alone).
//!
//! The positions, and so the heap's bytes and the layer's output, are exactly those of
//! [`super::dispatch`]: only when each row tile becomes ready changes.
//!
//! What this models of the kernel and what not: the kernel's A1 and A2 (the router GEMM and
//! top-k of a chunk) come before step 1 on the same block and are pure functions of the
//! chunk's tokens (here the caller's [`Slots`]); its rows read in place are token indices
//! written where this puts the rows. A world of one rank only (a packet for another rank
//! would need a dispatch signal a row tile: docs/dev/row-tile-dispatch.md).
//!
//! ## Invariants
//!
//! * Memory ordering: a chunk's rows are put before its additions to the placed counters,
//!   which are acquire-release; the completing addition therefore sees every row of the tile,
//!   and the tasks it queues (a release push) carry that to the processor. The last chunk
//!   stores `n` before its padding addition, so a completer that sees [`PADDED`] sees `n`.
//!   The look-back words are relaxed: what they carry is their own value (a count), and no
//!   data is read on the strength of one (checked with loom, which also catches relaxed
//!   placed counters).
//! * Exactly once: a counter reaches its span once (additions are positive and sum to it), so
//!   each row tile (or pair) is queued once; each chunk is claimed once.

use flashdmoe_proto::graph::gemm0_row_tile_tasks;
use flashdmoe_proto::{HeapLayout, ProtoError, Stage, div_ceil};

use super::{Awaiting, Poll, Queued, RankContext, RankState, Role, RuntimeError, SymmetricHeap};
use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Set in a placed counter by the last chunk's padding: the protocol's
/// [`PLACED_PADDED`](flashdmoe_proto::graph::PLACED_PADDED), which the kernel shares.
pub const PADDED: u32 = flashdmoe_proto::graph::PLACED_PADDED;
/// The placed counter's row count (below [`PADDED`]).
const PLACED_ROWS: u32 = PADDED - 1;

/// A look-back word's flag: the chunk's own count of a packet's slots.
const AGGREGATE: u64 = 1 << 62;
/// A look-back word's flag: the packet's slots in this chunk and every earlier one.
const INCLUSIVE: u64 = 2 << 62;
const FLAGS: u64 = 3 << 62;

/// One forward's placement board of a rank ([`RankState::stream_placement`]): the chunk
/// tickets, a look-back word a (chunk, packet) and a placed counter a (packet, row tile).
/// Fresh for every forward, as the [`RankState`] holding it.
#[derive(Debug)]
pub struct Placement {
    chunk_tokens: u32,
    chunks: u32,
    packets: u32,
    /// Row tiles a placed counter covers: 1, or 2 in a paired layer (a pair's two row tiles).
    unit: u32,
    /// Placed counters a packet.
    units: u32,
    next: AtomicU32,
    lookback: Box<[AtomicU64]>,
    placed: Box<[AtomicU32]>,
    /// The placed counters' additions: `AcqRel` unless a loom model weakens them.
    placed_order: Ordering,
}

impl Placement {
    /// Tokens a chunk (the last may hold fewer).
    pub fn chunk_tokens(&self) -> u32 {
        self.chunk_tokens
    }

    /// Chunks of the rank's tokens.
    pub fn chunks(&self) -> u32 {
        self.chunks
    }

    /// A loom model's weakened placed counters.
    #[cfg(all(test, flashdmoe_loom))]
    pub(crate) fn weaken_placed(&mut self, order: Ordering) {
        self.placed_order = order;
    }

    fn word(&self, chunk: u32, packet: u32) -> &AtomicU64 {
        &self.lookback[chunk as usize * self.packets as usize + packet as usize]
    }

    /// Row tiles a placed counter covers: 1, or 2 in a paired layer.
    pub fn unit(&self) -> u32 {
        self.unit
    }

    fn placed(&self, packet: u32, unit: u32) -> &AtomicU32 {
        &self.placed[packet as usize * self.units as usize + unit as usize]
    }
}

impl RankState {
    /// Before any role runs, on a world of one rank: the rank's rows will be placed by
    /// [`Placer`]s in chunks of `chunk_tokens` tokens, each row tile's GEMM0 tasks queued when
    /// its rows are in (module docs). The subscribers then watch no dispatch signal, and the
    /// task bound is known once the last chunk is placed; a paired state
    /// ([`RankState::with_pairs`], set first) queues pairs of row tiles. Errors for a larger
    /// world, no tokens a chunk, or a state that already has tasks or waves.
    pub fn stream_placement(
        &mut self,
        layout: &HeapLayout,
        chunk_tokens: u32,
    ) -> Result<(), RuntimeError> {
        let g = layout.geometry();
        let refuse = |field, reason| Err(ProtoError::InvalidGeometry { field, reason }.into());
        if g.world != 1 {
            return refuse("world", "the streamed placement runs on a world of one rank only");
        }
        if chunk_tokens == 0 {
            return refuse("chunk_tokens", "must be > 0");
        }
        let unit = if self.paired { 2 } else { 1 };
        if g.tile.bm as u64 * unit as u64 > PLACED_ROWS as u64 {
            return refuse("tile.bm", "a placed counter's rows must stay below 65536");
        }
        if self.tasks_queued() != 0 || self.in_place {
            return Err(ProtoError::Inconsistent {
                field: "streamed placement: tasks queued before it",
                expected: 0,
                found: self.tasks_queued() as u64,
            }
            .into());
        }
        let chunks = div_ceil(g.tokens, chunk_tokens);
        let packets = g.local_experts;
        let units = div_ceil(g.capacity, g.tile.bm * unit);
        let words = chunks as usize * packets as usize;
        let counters = packets as usize * units as usize;
        self.placement = Some(Placement {
            chunk_tokens,
            chunks,
            packets,
            unit,
            units,
            next: AtomicU32::new(0),
            lookback: (0..words).map(|_| AtomicU64::new(0)).collect(),
            placed: (0..counters).map(|_| AtomicU32::new(0)).collect(),
            placed_order: Ordering::AcqRel,
        });
        if chunks == 0 {
            // No token, no chunk: every packet is empty, and the bound is known now.
            self.received_rows.iter().for_each(|r| r.store(0, Ordering::Relaxed));
            self.packets_seen.store(packets, Ordering::Relaxed);
        }
        self.in_place = true;
        Ok(())
    }

    /// The placement board ([`RankState::stream_placement`]; `None` otherwise).
    pub fn placement(&self) -> Option<&Placement> {
        self.placement.as_ref()
    }

    /// A loom model's access to weaken the board's orderings ([`Placement::weaken`]).
    #[cfg(all(test, flashdmoe_loom))]
    pub(crate) fn placement_mut(&mut self) -> Option<&mut Placement> {
        self.placement.as_mut()
    }
}

/// The routed slots a rank's [`Placer`]s place, and the rows they carry.
#[derive(Clone, Copy, Debug)]
pub struct Slots<'a> {
    /// Slots a token k.
    pub top_k: u32,
    /// `[tokens][top_k]`: the packet (local expert) of each slot, in slot order.
    pub packets: &'a [u32],
    /// `[tokens][top_k]`: each slot's routing weight.
    pub weights: &'a [f32],
    /// `[tokens][hidden]` elements in the heap's element format, as [`super::dispatch`]'s
    /// input.
    pub input: &'a [u8],
}

/// Where a placer is in its chunk.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Claim the next chunk.
    Claim,
    /// Looking back for `packet`'s prefix: the words of chunks below `back` not read yet,
    /// their aggregates so far in `sum`.
    LookBack { chunk: u32, packet: u32, back: u32, sum: u32, seen: u64 },
    /// No chunk left.
    Done,
}

/// One of a rank's placers for one forward (on the GPU: a processor block before its first
/// task). Done once no chunk is left to claim.
#[derive(Debug)]
pub struct Placer<'a, H> {
    ctx: RankContext<'a, H>,
    index: u32,
    slots: Slots<'a>,
    step: Step,
    /// This chunk's slots a packet.
    counts: Vec<u32>,
    /// The packet's slots before this chunk.
    prefix: Vec<u32>,
    rows_placed: u64,
}

impl<'a, H: SymmetricHeap> Placer<'a, H> {
    /// Placer `index` of the rank in `ctx`, whose state streams its placement
    /// ([`RankState::stream_placement`]), placing `slots`. Errors if the state does not stream
    /// or the slots do not fit the layout.
    pub fn new(
        ctx: RankContext<'a, H>,
        index: u32,
        slots: Slots<'a>,
    ) -> Result<Self, RuntimeError> {
        let g = ctx.layout.geometry();
        let Some(board) = ctx.state.placement() else {
            return Err(ProtoError::Inconsistent {
                field: "placer: the rank's state does not stream its placement",
                expected: 1,
                found: 0,
            }
            .into());
        };
        let pairs = g.tokens as usize * slots.top_k as usize;
        let row_bytes = g.hidden as usize * g.elem_bytes as usize;
        let lengths = [
            ("placer slots: packets", pairs, slots.packets.len()),
            ("placer slots: weights", pairs, slots.weights.len()),
            ("placer slots: input", g.tokens as usize * row_bytes, slots.input.len()),
        ];
        if let Some(&(what, expected, actual)) = lengths.iter().find(|(_, e, a)| e != a) {
            return Err(ProtoError::BadLength { what, expected, actual }.into());
        }
        if let Some(&p) = slots.packets.iter().find(|&&p| p >= board.packets) {
            let limit = board.packets as u64;
            return Err(ProtoError::OutOfRange {
                what: "placer slot's packet",
                value: p as u64,
                limit,
            }
            .into());
        }
        let packets = board.packets as usize;
        Ok(Placer {
            ctx,
            index,
            slots,
            step: Step::Claim,
            counts: vec![0; packets],
            prefix: vec![0; packets],
            rows_placed: 0,
        })
    }

    /// Rows this placer put into the rank's packets.
    pub fn rows_placed(&self) -> u64 {
        self.rows_placed
    }

    fn board(&self) -> &'a Placement {
        self.ctx.state.placement().expect("checked in Placer::new")
    }

    /// The tokens of `chunk`.
    fn tokens(&self, chunk: u32) -> std::ops::Range<u32> {
        let (b, t) = (self.board(), self.ctx.layout.geometry().tokens);
        chunk * b.chunk_tokens..((chunk + 1) * b.chunk_tokens).min(t)
    }

    /// Claims a chunk, counts its slots a packet and publishes the counts.
    fn claim(&mut self) -> Step {
        let board = self.board();
        let chunk = board.next.fetch_add(1, Ordering::Relaxed);
        if chunk >= board.chunks {
            return Step::Done;
        }
        self.counts.iter_mut().for_each(|c| *c = 0);
        let k = self.slots.top_k as usize;
        for t in self.tokens(chunk) {
            for &p in &self.slots.packets[t as usize * k..(t as usize + 1) * k] {
                self.counts[p as usize] += 1;
            }
        }
        let flag = if chunk == 0 { INCLUSIVE } else { AGGREGATE };
        for (p, &n) in (0u32..).zip(&self.counts) {
            board.word(chunk, p).store(flag | n as u64, Ordering::Relaxed);
        }
        Step::LookBack { chunk, packet: 0, back: chunk, sum: 0, seen: 0 }
    }

    /// Looks back for the prefixes from `packet` on: the step to resume at ([`Step::Claim`]
    /// once every packet's prefix is known), and whether it read a word.
    fn look_back(
        &mut self,
        chunk: u32,
        mut packet: u32,
        mut back: u32,
        mut sum: u32,
    ) -> (Step, bool) {
        let board = self.board();
        let mut read = false;
        while packet < board.packets {
            while back > 0 {
                let word = board.word(back - 1, packet).load(Ordering::Relaxed);
                match word & FLAGS {
                    0 => return (Step::LookBack { chunk, packet, back, sum, seen: word }, read),
                    AGGREGATE => {
                        sum += word as u32;
                        back -= 1;
                    }
                    _ => {
                        sum += word as u32;
                        break;
                    }
                }
                read = true;
            }
            self.prefix[packet as usize] = sum;
            if chunk > 0 {
                let inclusive = (sum + self.counts[packet as usize]) as u64;
                board.word(chunk, packet).store(INCLUSIVE | inclusive, Ordering::Relaxed);
            }
            (packet, back, sum, read) = (packet + 1, chunk, 0, true);
        }
        (Step::Claim, true)
    }

    /// Puts `chunk`'s rows at their positions, then counts them into their row tiles (the
    /// last chunk also publishing the row counts and padding the last row tiles), queueing
    /// every row tile it completes.
    fn place(&mut self, chunk: u32) -> Result<(), RuntimeError> {
        let (layout, heap, state) = (self.ctx.layout, self.ctx.heap, self.ctx.state);
        let g = layout.geometry();
        let (k, bm, cap) = (self.slots.top_k as usize, g.tile.bm, g.capacity);
        let row_bytes = g.hidden as usize * g.elem_bytes as usize;
        let mut next = self.prefix.clone();
        for t in self.tokens(chunk) {
            for j in 0..k {
                let slot = t as usize * k + j;
                let p = self.slots.packets[slot];
                let pos = next[p as usize];
                next[p as usize] += 1;
                if pos >= cap {
                    continue;
                }
                let row = &self.slots.input[t as usize * row_bytes..][..row_bytes];
                let weight = self.slots.weights[slot].to_le_bytes();
                let at = layout.row(Stage::Dispatch, 0, p, pos, 0)?;
                let w = layout.dispatch_weight(0, p, pos)?;
                // SAFETY: each position of a packet belongs to exactly one (token, slot), so
                // one placer writes it; its readers (the row tile's GEMM0 and GEMM1 tasks) are
                // queued only after the counter addition below, which follows these puts.
                unsafe {
                    heap.put(0, at, row);
                    heap.put(0, w, &weight);
                }
                self.rows_placed += 1;
            }
        }
        let board = self.board();
        let last = chunk + 1 == board.chunks;
        if last {
            for (p, &end) in (0u32..).zip(&next) {
                state.received_rows[p as usize].store(end.min(cap), Ordering::Relaxed);
            }
        }
        // A placed counter covers `span` rows: one row tile, or a pair's two.
        let span = bm * board.unit;
        for p in 0..board.packets {
            let (start, end) = (self.prefix[p as usize].min(cap), next[p as usize].min(cap));
            let n = end; // the packet's rows, where this is the last chunk
            let pad_unit = (last && n % span != 0).then_some(n / span);
            let units = if start < end { start / span..div_ceil(end, span) } else { 0..0 };
            let touched = units.clone().chain(pad_unit.filter(|u| !units.contains(u)));
            for u in touched {
                let (lo, hi) = ((u * span).max(start), ((u + 1) * span).min(end));
                let mut add = hi.saturating_sub(lo);
                if pad_unit == Some(u) {
                    add += PADDED | ((u + 1) * span - n);
                }
                let now = board.placed(p, u).fetch_add(add, board.placed_order) + add;
                if now & PLACED_ROWS == span {
                    let rows = if now & PADDED != 0 {
                        state.received_rows[p as usize].load(Ordering::Relaxed) - u * span
                    } else {
                        span
                    };
                    self.queue(p, u * board.unit, rows)?;
                }
            }
        }
        if last {
            state.packets_seen.store(board.packets, Ordering::Release);
        }
        Ok(())
    }
}

impl<H: SymmetricHeap> Placer<'_, H> {
    /// Queues the GEMM0 tasks of packet `p`'s `rows` rows from row tile `first` on (one row
    /// tile, or a pair's two): a pair in the paired order of
    /// [`gemm0_tile_paired`](flashdmoe_proto::graph::gemm0_tile_paired) -- column by column,
    /// row tile `first` marked as the head, `first + 1` behind it -- and a lone row tile (a
    /// paired packet's odd last one included) column by column.
    fn queue(&self, p: u32, first: u32, rows: u32) -> Result<(), RuntimeError> {
        let (layout, state, epoch) = (self.ctx.layout, self.ctx.state, self.ctx.epoch);
        let bm = layout.geometry().tile.bm;
        if rows <= bm {
            for task in gemm0_row_tile_tasks(layout, epoch, 0, 0, p, first, rows) {
                state.push_task(task?)?;
            }
            return Ok(());
        }
        let heads = gemm0_row_tile_tasks(layout, epoch, 0, 0, p, first, bm);
        let seconds = gemm0_row_tile_tasks(layout, epoch, 0, 0, p, first + 1, rows - bm);
        let mut pairs = Vec::with_capacity(2 * layout.geometry().col_tiles_inter() as usize);
        for (head, second) in heads.zip(seconds) {
            pairs.push(Queued { task: head?, pair_head: true });
            pairs.push(Queued { task: second?, pair_head: false });
        }
        state.push_tasks(&pairs)
    }
}

impl<H: SymmetricHeap> Role for Placer<'_, H> {
    fn name(&self) -> String {
        format!("placer {}", self.index)
    }

    fn poll(&mut self) -> Result<Poll, RuntimeError> {
        if self.ctx.state.aborted() {
            return Err(RuntimeError::Aborted);
        }
        let progressed;
        (self.step, progressed) = match self.step {
            Step::Done => return Ok(Poll::Done),
            Step::Claim => (self.claim(), true),
            Step::LookBack { chunk, packet, back, sum, .. } => {
                match self.look_back(chunk, packet, back, sum) {
                    (Step::Claim, _) => {
                        self.place(chunk)?;
                        (Step::Claim, true)
                    }
                    other => other,
                }
            }
        };
        Ok(match self.step {
            Step::Done => Poll::Done,
            _ if progressed => Poll::Progress,
            _ => Poll::Idle,
        })
    }

    fn awaiting(&self) -> Awaiting {
        let epoch = self.ctx.epoch.get();
        match self.step {
            Step::LookBack { chunk, packet, back, seen, .. } => Awaiting {
                awaited: format!(
                    "the count of packet {packet} in chunk {} (placing chunk {chunk})",
                    back.saturating_sub(1)
                ),
                expected_epoch: epoch,
                seen,
            },
            Step::Claim | Step::Done => Awaiting {
                awaited: "nothing (between chunks)".into(),
                expected_epoch: epoch,
                seen: 0,
            },
        }
    }
}

#[cfg(all(test, not(flashdmoe_loom)))]
mod tests;
