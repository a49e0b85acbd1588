//! Fault injection: delayed, reordered, duplicated, lost and stale signal deliveries.
//!
//! Faults act on signal words only. Data puts always land immediately (like NVLink stores), and
//! a delayed signal is still stored after its data, so delays, reordering and duplicates are
//! legal behaviours of a real interconnect that the protocol must absorb (the output stays
//! correct), while a lost signal or a stale epoch must end in a typed timeout naming the rank,
//! the role and the signal awaited.
//!
//! Delayed and duplicated signals travel through a [`Courier`]: a crossbeam channel into one
//! thread per rank and forward ([`Deliveries::run`]) that keeps the words in a due-time heap and
//! stores each when its (pseudo-random, seeded) delay has passed. The courier is drained before
//! the rank's forward returns, so no signal of one epoch can land after the next epoch's signal
//! in the same word.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, Sender};
use flashdmoe_core::rng::mix;
use flashdmoe_proto::{Epoch, HeapLayout, signal};

/// One signal word of one forward, by what it announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignalId {
    /// The dispatch signal `source` raises in `owner`'s heap for `local_expert`.
    Dispatch {
        /// Sending rank.
        source: u32,
        /// Receiving rank (owner of the expert).
        owner: u32,
        /// Local expert index on the owner.
        local_expert: u32,
    },
    /// The return signal `owner` raises in `source`'s heap for one returned tile.
    Return {
        /// Sending rank (owner of the expert).
        owner: u32,
        /// Receiving rank (source of the tokens).
        source: u32,
        /// Local expert index on the owner.
        local_expert: u32,
        /// Row tile of the packet.
        row_tile: u32,
        /// Output column tile.
        col_tile: u32,
    },
}

impl SignalId {
    /// The signal at `offset` of `target`'s heap under `layout`, or `None` if `offset` is not a
    /// signal word.
    pub(crate) fn locate(layout: &HeapLayout, target: u32, offset: u64) -> Option<Self> {
        let p = layout.params();
        let word = |start: u64, end: u64| {
            (offset >= start && offset < end && (offset - start).is_multiple_of(8))
                .then(|| (offset - start) / 8)
        };
        let le = p.local_experts as u64;
        if let Some(i) = word(p.dispatch_signals, p.dispatch_signals + p.world as u64 * le * 8) {
            return Some(SignalId::Dispatch {
                source: (i / le) as u32,
                owner: target,
                local_expert: (i % le) as u32,
            });
        }
        let cols = layout.geometry().col_tiles_hidden() as u64;
        let per_packet = p.row_tiles as u64 * cols;
        let end = p.return_signals + p.world as u64 * le * per_packet * 8;
        let i = word(p.return_signals, end)?;
        let (packet, tile) = (i / per_packet, i % per_packet);
        Some(SignalId::Return {
            owner: (packet / le) as u32,
            source: target,
            local_expert: (packet % le) as u32,
            row_tile: (tile / cols) as u32,
            col_tile: (tile % cols) as u32,
        })
    }
}

/// Which faults the simulator injects, in every forward of a layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// Seed of the pseudo-random delays.
    pub seed: u64,
    /// Every signal is delivered after a delay drawn uniformly from `[0, max_delay]` (seeded per
    /// signal), so deliveries are also reordered. Zero: immediate delivery.
    pub max_delay: Duration,
    /// Every signal is delivered twice (the copy up to `max_delay` later).
    pub duplicate: bool,
    /// Signals never delivered (the receiver must time out naming them).
    pub lost: Vec<SignalId>,
    /// Signals delivered with the previous epoch (the receiver must time out naming them).
    pub stale: Vec<SignalId>,
}

impl FaultPlan {
    /// No faults.
    pub fn none() -> Self {
        FaultPlan::default()
    }

    /// Whether any fault is planned.
    pub fn is_none(&self) -> bool {
        *self == FaultPlan { seed: self.seed, ..FaultPlan::default() }
    }

    /// Whether deliveries need a courier thread (delays or duplicates).
    pub(crate) fn needs_courier(&self) -> bool {
        !self.max_delay.is_zero() || self.duplicate
    }

    /// What becomes of `word` stored as the signal `id()` names: `None` if lost, else the word
    /// to deliver.
    pub(crate) fn rewrite(&self, word: u64, id: impl FnOnce() -> Option<SignalId>) -> Option<u64> {
        if self.lost.is_empty() && self.stale.is_empty() {
            return Some(word);
        }
        let Some(id) = id() else { return Some(word) };
        if self.lost.contains(&id) {
            return None;
        }
        if self.stale.contains(&id) {
            let payload = signal::payload_bits(word);
            let stale =
                Epoch::new(signal::epoch_bits(word)).map(|e| signal::encode(e.prev(), payload));
            return Some(stale.unwrap_or(word));
        }
        Some(word)
    }

    /// The `copy`-th delivery delay of `word` into `(target, offset)`.
    fn delay(&self, target: u32, offset: u64, word: u64, copy: u64) -> Duration {
        let max = self.max_delay.as_nanos() as u64;
        if max == 0 {
            return Duration::ZERO;
        }
        let h = mix(self.seed ^ mix(offset ^ ((target as u64) << 48) ^ mix(word ^ copy)));
        Duration::from_nanos(h % (max + 1))
    }
}

/// A signal store waiting for its delivery time.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Delivery {
    due: Instant,
    pub(crate) target: u32,
    pub(crate) offset: u64,
    pub(crate) word: u64,
}

/// The sending side of a courier: schedules deliveries.
#[derive(Debug)]
pub(crate) struct Courier {
    tx: Sender<Delivery>,
}

/// The receiving side of a courier: the delivery loop.
#[derive(Debug)]
pub(crate) struct Deliveries {
    rx: Receiver<Delivery>,
}

impl Courier {
    /// A courier and its delivery loop (run [`Deliveries::run`] on its own thread).
    pub(crate) fn new() -> (Courier, Deliveries) {
        let (tx, rx) = channel::unbounded();
        (Courier { tx }, Deliveries { rx })
    }

    /// Schedules `word` (and its duplicate, if planned) for `(target, offset)`.
    pub(crate) fn send(&self, plan: &FaultPlan, target: u32, offset: u64, word: u64) {
        let now = Instant::now();
        let copies = if plan.duplicate { 2 } else { 1 };
        for copy in 0..copies {
            let mut due = now + plan.delay(target, offset, word, copy);
            if copy > 0 {
                due += plan.delay(target, offset, word, 0);
            }
            // The delivery loop outlives every courier (it ends when the courier is dropped).
            let _ = self.tx.send(Delivery { due, target, offset, word });
        }
    }
}

impl Deliveries {
    /// Delivers every scheduled word with `deliver` once its time has come, in due order, until
    /// the courier is dropped and everything is delivered.
    pub(crate) fn run(self, deliver: impl Fn(&Delivery)) {
        let mut pending: BinaryHeap<Reverse<Delivery>> = BinaryHeap::new();
        // While the courier lives: wait for a new delivery or the next one's due time.
        loop {
            let now = Instant::now();
            while pending.peek().is_some_and(|d| d.0.due <= now) {
                if let Some(Reverse(d)) = pending.pop() {
                    deliver(&d);
                }
            }
            let next_due = pending.peek().map_or_else(channel::never, |d| channel::at(d.0.due));
            crossbeam::select! {
                recv(self.rx) -> d => match d {
                    Ok(d) => pending.push(Reverse(d)),
                    Err(_) => break,
                },
                recv(next_due) -> _ => {}
            }
        }
        // The courier is gone: deliver the rest on time.
        while let Some(Reverse(d)) = pending.pop() {
            std::thread::sleep(d.due.saturating_duration_since(Instant::now()));
            deliver(&d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashdmoe_proto::{Geometry, TileShape};

    #[test]
    fn locate_signals() {
        let layout = HeapLayout::new(Geometry {
            world: 2,
            local_experts: 2,
            tokens: 8,
            capacity: 8,
            hidden: 64,
            inter: 64,
            elem_bytes: 2,
            tile: TileShape::new(4, 32, 32),
        })
        .unwrap();
        let off = layout.dispatch_signal(1, 1).unwrap();
        assert_eq!(
            SignalId::locate(&layout, 0, off),
            Some(SignalId::Dispatch { source: 1, owner: 0, local_expert: 1 })
        );
        let off = layout.return_signal(0, 1, 1, 1).unwrap();
        let id =
            SignalId::Return { owner: 0, source: 1, local_expert: 1, row_tile: 1, col_tile: 1 };
        assert_eq!(SignalId::locate(&layout, 1, off), Some(id));
        assert_eq!(SignalId::locate(&layout, 1, layout.row_tile_counter(0, 0, 0).unwrap()), None);
    }

    #[test]
    fn rewrite_lost_and_stale() {
        let id = SignalId::Dispatch { source: 0, owner: 1, local_expert: 0 };
        let word = signal::encode_dispatch(Epoch::new(5).unwrap(), 3);
        let plan = FaultPlan { lost: vec![id], ..FaultPlan::none() };
        assert_eq!(plan.rewrite(word, || Some(id)), None);
        let plan = FaultPlan { stale: vec![id], ..FaultPlan::none() };
        assert_eq!(
            plan.rewrite(word, || Some(id)),
            Some(signal::encode_dispatch(Epoch::new(4).unwrap(), 3))
        );
        assert_eq!(FaultPlan::none().rewrite(word, || Some(id)), Some(word));
        assert!(FaultPlan::none().is_none() && !plan.is_none());
    }

    #[test]
    fn courier_delivers_everything_in_due_order() {
        let plan =
            FaultPlan { max_delay: Duration::from_millis(2), duplicate: true, ..FaultPlan::none() };
        let (courier, deliveries) = Courier::new();
        let delivered = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            s.spawn(|| {
                deliveries.run(|d: &Delivery| delivered.lock().unwrap().push((d.offset, d.word)))
            });
            for i in 0..20 {
                courier.send(&plan, 0, i * 8, i);
            }
            drop(courier);
        });
        let mut got = delivered.into_inner().unwrap();
        assert_eq!(got.len(), 40);
        got.sort_unstable();
        got.dedup();
        assert_eq!(got, (0..20).map(|i| (i * 8, i)).collect::<Vec<_>>());
    }
}
