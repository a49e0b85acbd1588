//! [`Log`]: the append-only, multi-producer queue behind the rank's task queue.
//!
//! A forward pushes a bounded number of tasks into the rank's task queue (at most the bound of
//! full packets from every source), so the queue is a log sized for the whole forward: a producer
//! claims index `i` with one `fetch_add` on the tail, writes slot `i`, then release-stores the
//! slot's ready flag; the consumer reads indices in order, each once its flag is acquire-loaded.
//! No slot is reused within a forward, so there is no wrap-around, no ABA and no
//! compare-and-swap loop -- on a GPU this is one `atomicAdd` and one flag per entry.
//!
//! ## Invariants
//!
//! * Slot `i` is written exactly once, by the producer that claimed `i`, before its flag is
//!   raised; it is read only after the flag is seen, by the reader or by a thread that handed
//!   the index on with a release/acquire pair ([`Log::read_handed`]), so reads never race
//!   writes (checked by loom).
//! * A push beyond the capacity fails with the capacity and leaves every slot untouched.
//! * [`Log::push_all`] claims its entries' indices with one `fetch_add`, so they are adjacent
//!   in the log whatever other producers push meanwhile (a packet's GEMM0 tasks in a paired
//!   layer, whose pairs must sit side by side: the kernel's `claim` of a packet's count).
//! * [`Log::reserve_unpublished`] writes entries before the log is shared (it takes `&mut`),
//!   without their flags; [`Log::publish`] raises a flag later, from any thread (the third
//!   wave's combines: written by the OS block at the start, flagged by the return subscriber
//!   once ready; [`super::Waves`]). The write happens-before every thread that shares the log,
//!   so the flag's release-acquire pair orders only what the publisher did before it.

use crate::sync::{AtomicBool, AtomicUsize, Ordering, UnsafeCell};

struct Slot<T> {
    value: UnsafeCell<T>,
    ready: AtomicBool,
}

/// An append-only log of `Copy` values with many producers and an in-order reader.
pub struct Log<T> {
    slots: Box<[Slot<T>]>,
    tail: AtomicUsize,
    /// The store of [`Log::publish`]: `Release`, weakened only by a loom model that shows it
    /// matters (`loom_relaxed_third_wave_flag_is_caught`).
    publish_order: Ordering,
}

impl<T> std::fmt::Debug for Log<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("capacity", &self.slots.len())
            .field("tail", &self.tail)
            .finish_non_exhaustive()
    }
}

// SAFETY: a slot's value is written once, by the one producer that claimed its index, before the
// slot's flag is release-stored, and read only after the flag is acquire-loaded; values are
// `Copy + Send` data moved between threads.
unsafe impl<T: Copy + Send> Sync for Log<T> {}

impl<T: Copy> Log<T> {
    /// An empty log with room for `capacity` pushes; `placeholder` fills the unpublished slots
    /// (it is never returned).
    pub fn with_capacity(capacity: usize, placeholder: T) -> Self {
        Log {
            slots: (0..capacity)
                .map(|_| Slot {
                    value: UnsafeCell::new(placeholder),
                    ready: AtomicBool::new(false),
                })
                .collect(),
            tail: AtomicUsize::new(0),
            publish_order: Ordering::Release,
        }
    }

    /// A loom model's weakened [`Log::publish`].
    #[cfg(all(test, flashdmoe_loom))]
    pub(crate) fn weaken_publish(&mut self, order: Ordering) {
        self.publish_order = order;
    }

    /// Capacity in entries.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Entries claimed so far (some may still be being written).
    pub fn len(&self) -> usize {
        self.tail.load(Ordering::Relaxed).min(self.slots.len())
    }

    /// Whether nothing was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `value`; `Err(capacity)` if the log is full.
    pub fn push(&self, value: T) -> Result<(), usize> {
        let index = self.tail.fetch_add(1, Ordering::Relaxed);
        let slot = self.slots.get(index).ok_or(self.slots.len())?;
        // SAFETY: `index` was claimed by this call alone (atomic fetch_add), and nobody reads the
        // slot before its flag is raised below.
        slot.value.with_mut(|p| unsafe { p.write(value) });
        slot.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Appends `values` at adjacent indices (one claim for all of them), publishing each in
    /// order; the index of the first, or `Err(capacity)` (and nothing written) if they do not
    /// all fit.
    pub fn push_all(&self, values: &[T]) -> Result<usize, usize> {
        let first = self.tail.fetch_add(values.len(), Ordering::Relaxed);
        let slots = first
            .checked_add(values.len())
            .and_then(|end| self.slots.get(first..end))
            .ok_or(self.slots.len())?;
        for (slot, &value) in slots.iter().zip(values) {
            // SAFETY: the indices `first..first + values.len()` were claimed by this call alone
            // (one atomic fetch_add), and nobody reads a slot before its flag is raised.
            slot.value.with_mut(|p| unsafe { p.write(value) });
            slot.ready.store(true, Ordering::Release);
        }
        Ok(first)
    }

    /// Writes `values` at adjacent indices without raising their flags, before the log is
    /// shared: [`Log::publish`] raises them later. The index of the first, or `Err(capacity)`
    /// (and nothing written) if they do not all fit.
    pub fn reserve_unpublished(&mut self, values: &[T]) -> Result<usize, usize> {
        let first = self.tail.fetch_add(values.len(), Ordering::Relaxed);
        let Some(slots) =
            first.checked_add(values.len()).and_then(|end| self.slots.get(first..end))
        else {
            self.tail.fetch_sub(values.len(), Ordering::Relaxed);
            return Err(self.slots.len());
        };
        for (slot, &value) in slots.iter().zip(values) {
            // SAFETY: `&mut self`: no other thread can reach the log, so nothing reads or
            // writes the slot meanwhile.
            slot.value.with_mut(|p| unsafe { p.write(value) });
        }
        Ok(first)
    }

    /// Raises the flag of entry `index`, written by [`Log::reserve_unpublished`]: readers that
    /// acquire it ([`Log::get`]) see the entry and whatever this thread did before.
    /// `Err(claimed)` if `index` was never claimed.
    ///
    /// # Safety
    ///
    /// Entry `index` was written by [`Log::reserve_unpublished`] (not claimed by a
    /// [`Log::push`] that may still be writing it).
    pub unsafe fn publish(&self, index: usize) -> Result<(), usize> {
        let claimed = self.len();
        if index >= claimed {
            return Err(claimed);
        }
        self.slots[index].ready.store(true, self.publish_order);
        Ok(())
    }

    /// Entry `index`, once it has been published.
    pub fn get(&self, index: usize) -> Option<T> {
        let slot = self.slots.get(index)?;
        if !slot.ready.load(Ordering::Acquire) {
            return None;
        }
        // SAFETY: the flag was set after the slot's only write (acquire pairs with its release),
        // and the slot is never written again.
        Some(slot.value.with(|p| unsafe { *p }))
    }

    /// Entry `index` without looking at its flag, for a reader to whom the entry was handed
    /// on: the processor reading the task whose index the scheduler posted in its mailbox, as
    /// the kernel reads `tasks[index]`. `None` if `index` is beyond the capacity.
    ///
    /// # Safety
    ///
    /// Entry `index` was published, and its publication happens-before this call: some thread
    /// acquired its flag ([`Log::get`]) and then release-stored something this thread acquired
    /// (the mailbox's `assigned`), or this thread acquired the flag itself.
    pub unsafe fn read_handed(&self, index: usize) -> Option<T> {
        let slot = self.slots.get(index)?;
        // SAFETY: the slot's only write happens-before this read (the caller's contract), and
        // it is never written again.
        Some(slot.value.with(|p| unsafe { *p }))
    }
}

#[cfg(all(test, not(flashdmoe_loom)))]
mod tests {
    use super::*;

    #[test]
    fn push_get_in_order_and_full() {
        let log = Log::<u32>::with_capacity(2, 0);
        assert_eq!(log.get(0), None);
        log.push(7).unwrap();
        log.push(8).unwrap();
        assert_eq!(log.push(9), Err(2));
        assert_eq!((log.get(0), log.get(1), log.get(2)), (Some(7), Some(8), None));
        assert_eq!(log.len(), 2);
    }

    #[test]
    fn reserved_entries_are_read_only_once_published() {
        let mut log = Log::with_capacity(4, 0u32);
        log.push(1).unwrap();
        assert_eq!(log.reserve_unpublished(&[7, 8]), Ok(1));
        assert_eq!(log.reserve_unpublished(&[9, 9]), Err(4), "two more do not fit");
        assert_eq!(log.len(), 3, "a refused reservation claims nothing");
        assert_eq!((log.get(1), log.get(2)), (None, None));
        log.push(2).unwrap();
        assert_eq!(log.get(3), Some(2), "pushes after the reservation are published at once");
        // SAFETY: entries 1 and 2 were reserved.
        unsafe {
            assert_eq!(log.publish(2), Ok(()));
            assert_eq!(log.publish(4), Err(4));
        }
        assert_eq!((log.get(1), log.get(2)), (None, Some(8)));
    }

    #[test]
    fn push_all_claims_adjacent_entries_or_nothing() {
        let log = Log::<u32>::with_capacity(5, 0);
        log.push(1).unwrap();
        assert_eq!(log.push_all(&[2, 3]), Ok(1));
        assert_eq!(log.push_all(&[4, 5, 6]), Err(5));
        assert_eq!(
            (0..5).map(|i| log.get(i)).collect::<Vec<_>>(),
            [Some(1), Some(2), Some(3), None, None]
        );
    }

    #[test]
    fn concurrent_run_producers_keep_their_runs_adjacent() {
        let log = Log::<u32>::with_capacity(4000, 0);
        std::thread::scope(|s| {
            for t in 0..4 {
                let log = &log;
                s.spawn(move || {
                    (0..500).for_each(|i| {
                        let v = t * 1000 + 2 * i;
                        log.push_all(&[v, v + 1]).unwrap();
                    })
                });
            }
        });
        for i in (0..4000).step_by(2) {
            let (a, b) = (log.get(i).unwrap(), log.get(i + 1).unwrap());
            assert_eq!((a % 2, b), (0, a + 1), "entries {i} and {}", i + 1);
        }
    }

    #[test]
    fn concurrent_producers_each_entry_once() {
        let log = Log::<u32>::with_capacity(4000, 0);
        std::thread::scope(|s| {
            for t in 0..4 {
                let log = &log;
                s.spawn(move || (0..1000).for_each(|i| log.push(t * 1000 + i).unwrap()));
            }
        });
        let mut all: Vec<u32> = (0..4000).map(|i| log.get(i).unwrap()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..4000).collect::<Vec<_>>());
    }
}

#[cfg(all(test, flashdmoe_loom))]
mod loom_tests {
    use super::*;
    use crate::sync::{Arc, thread};

    /// Two producers and a reader: the reader sees each entry exactly once, fully written.
    #[test]
    fn loom_log_two_producers() {
        loom::model(|| {
            let log = Arc::new(Log::<u64>::with_capacity(2, 0));
            let producers: Vec<_> = [1u64, 2]
                .into_iter()
                .map(|v| {
                    let log = log.clone();
                    thread::spawn(move || log.push(v).unwrap())
                })
                .collect();
            let mut seen = Vec::new();
            let mut next = 0;
            while seen.len() < 2 {
                match log.get(next) {
                    Some(v) => {
                        seen.push(v);
                        next += 1;
                    }
                    None => thread::yield_now(),
                }
            }
            producers.into_iter().for_each(|p| p.join().unwrap());
            seen.sort_unstable();
            assert_eq!(seen, [1, 2]);
            assert_eq!(log.push(3), Err(2));
        });
    }
}
