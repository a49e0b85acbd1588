//! The simulated symmetric heap: one [`RankHeap`] per rank, and the [`HeapView`] through which
//! one rank's runtime and executor reach every heap.
//!
//! A rank heap mirrors the proto layout: its signal sections are `u64` atomics, its counter
//! sections `u32` atomics, and its data sections plain bytes ([`SharedBytes`]) in the element
//! format of the config's dtype. Offsets are proto offsets; a word at offset `o` of the signal
//! sections is atomic `o / 8`, a counter at `o` of the counter sections is atomic
//! `(o - counters) / 4`, and data byte `o` is byte `o - data` of the data sections.
//!
//! ## Invariants
//!
//! * Signal stores are release, signal loads acquire, counter increments acquire-release (the
//!   [`SymmetricHeap`] contract); only a loom-only test switch weakens the signal store, to
//!   prove the loom model catches it.
//! * Faults rewrite, delay, duplicate or drop signal words only, never data.

use flashdmoe_core::runtime::SymmetricHeap;
use flashdmoe_core::sync::{AtomicU32, AtomicU64, Ordering, SharedBytes};
use flashdmoe_proto::HeapLayout;

use crate::fault::{Courier, FaultPlan, SignalId};

/// One rank's heap.
pub(crate) struct RankHeap {
    signals: Box<[AtomicU64]>,
    counters: Box<[AtomicU32]>,
    data: SharedBytes,
}

/// Every rank's heap under one layout.
pub(crate) struct World {
    layout: HeapLayout,
    heaps: Box<[RankHeap]>,
    counters_start: u64,
    data_start: u64,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("ranks", &self.heaps.len())
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl World {
    /// Zeroed heaps for every rank of `layout`; the caller checked that they fit in memory.
    pub(crate) fn new(layout: HeapLayout) -> World {
        let p = layout.params();
        let g = layout.geometry();
        // Loom tracks data in chunks; a column tile of a row is the unit concurrent tasks
        // write, a dispatch weight (4 bytes) the unit sources write side by side, and every
        // section starts on an `ALIGN` boundary, so use their common divisor.
        let unit = gcd(g.tile.bn as u64 * g.elem_bytes as u64, flashdmoe_proto::WEIGHT_BYTES);
        let chunk = gcd(unit, flashdmoe_proto::ALIGN) as usize;
        let heaps = (0..g.world)
            .map(|_| RankHeap {
                signals: (0..p.row_tile_counters / 8).map(|_| AtomicU64::new(0)).collect(),
                counters: (0..(p.dispatch_rows - p.row_tile_counters) / 4)
                    .map(|_| AtomicU32::new(0))
                    .collect(),
                data: SharedBytes::zeroed((p.total - p.dispatch_rows) as usize, chunk),
            })
            .collect();
        World { layout, heaps, counters_start: p.row_tile_counters, data_start: p.dispatch_rows }
    }

    /// The layout.
    pub(crate) fn layout(&self) -> &HeapLayout {
        &self.layout
    }

    fn signal(&self, rank: u32, offset: u64) -> &AtomicU64 {
        assert!(
            offset < self.counters_start && offset.is_multiple_of(8),
            "bad signal offset {offset}"
        );
        &self.heaps[rank as usize].signals[(offset / 8) as usize]
    }

    fn counter(&self, rank: u32, offset: u64) -> &AtomicU32 {
        assert!(
            (self.counters_start..self.data_start).contains(&offset) && offset.is_multiple_of(4),
            "bad counter offset {offset}"
        );
        &self.heaps[rank as usize].counters[((offset - self.counters_start) / 4) as usize]
    }

    fn data(&self, rank: u32, offset: u64) -> (&SharedBytes, usize) {
        assert!(offset >= self.data_start, "bad data offset {offset}");
        (&self.heaps[rank as usize].data, (offset - self.data_start) as usize)
    }

    /// Stores a signal word as delivered (no faults).
    pub(crate) fn deliver(&self, rank: u32, offset: u64, word: u64, order: Ordering) {
        self.signal(rank, offset).store(word, order);
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The world's heap as one rank's roles see it, with that rank's outgoing faults.
#[derive(Debug)]
pub(crate) struct HeapView<'a> {
    pub(crate) world: &'a World,
    pub(crate) faults: &'a FaultPlan,
    pub(crate) courier: Option<&'a Courier>,
    /// `Release`, except under the loom-only weakening switch.
    pub(crate) signal_order: Ordering,
}

impl SymmetricHeap for HeapView<'_> {
    fn load_signal(&self, rank: u32, offset: u64) -> u64 {
        self.world.signal(rank, offset).load(Ordering::Acquire)
    }

    fn store_signal(&self, rank: u32, offset: u64, word: u64) {
        let layout = &self.world.layout;
        let Some(word) = self.faults.rewrite(word, || SignalId::locate(layout, rank, offset))
        else {
            return;
        };
        match self.courier {
            Some(courier) => courier.send(self.faults, rank, offset, word),
            None => self.world.deliver(rank, offset, word, self.signal_order),
        }
    }

    fn add_counter(&self, rank: u32, offset: u64) -> u32 {
        self.world.counter(rank, offset).fetch_add(1, Ordering::AcqRel) + 1
    }

    fn load_counter(&self, rank: u32, offset: u64) -> u32 {
        self.world.counter(rank, offset).load(Ordering::Acquire)
    }

    fn reset_counters(&self, rank: u32) {
        self.world.heaps[rank as usize].counters.iter().for_each(|c| c.store(0, Ordering::Relaxed));
    }

    unsafe fn put(&self, rank: u32, offset: u64, bytes: &[u8]) {
        let (data, at) = self.world.data(rank, offset);
        // SAFETY: forwarded from the caller (no concurrent access to these bytes).
        unsafe { data.write(at, bytes) }
    }

    unsafe fn get(&self, rank: u32, offset: u64, out: &mut [u8]) {
        let (data, at) = self.world.data(rank, offset);
        // SAFETY: forwarded from the caller (no concurrent writer of these bytes).
        unsafe { data.read(at, out) }
    }
}
