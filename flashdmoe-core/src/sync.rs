//! The synchronisation facade: `std` types normally, `loom` types under `--cfg flashdmoe_loom`.
//!
//! Every atomic, cell, thread primitive, spin-wait and deadline the runtime ([`crate::runtime`])
//! and the simulator use comes from here, so the same code runs on real threads and under the
//! loom model checker (the tokio/crossbeam pattern). Build the loom variant with
//! `RUSTFLAGS="--cfg flashdmoe_loom" cargo test -p flashdmoe-core --release loom`.
//!
//! ## Invariants
//!
//! * [`UnsafeCell`] exposes only the closure API (`with` / `with_mut`), which loom tracks: a
//!   data race that the protocol fails to prevent panics under loom instead of passing silently.
//! * [`SharedBytes`] is the only byte storage shared between threads without a lock. Callers
//!   promise (and loom checks) that conflicting accesses are ordered by the protocol's
//!   release/acquire edges.
//! * Under loom there is no time: a [`Deadline`] never expires (loom itself reports a model that
//!   spins forever), a [`Heartbeat`] is inert, and [`Backoff::snooze`] is a plain `yield_now`,
//!   which loom needs to schedule another thread.

#[cfg(not(flashdmoe_loom))]
pub use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(not(flashdmoe_loom))]
pub use std::sync::{Arc, Mutex, MutexGuard};
#[cfg(not(flashdmoe_loom))]
pub use std::thread;

#[cfg(flashdmoe_loom)]
pub use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(flashdmoe_loom)]
pub use loom::sync::{Arc, Mutex, MutexGuard};
#[cfg(flashdmoe_loom)]
pub use loom::thread;

use std::time::Duration;

/// An interior-mutable cell with loom's closure API.
#[derive(Debug)]
pub struct UnsafeCell<T> {
    #[cfg(not(flashdmoe_loom))]
    inner: std::cell::UnsafeCell<T>,
    #[cfg(flashdmoe_loom)]
    inner: loom::cell::UnsafeCell<T>,
}

impl<T> UnsafeCell<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        #[cfg(not(flashdmoe_loom))]
        let inner = std::cell::UnsafeCell::new(value);
        #[cfg(flashdmoe_loom)]
        let inner = loom::cell::UnsafeCell::new(value);
        UnsafeCell { inner }
    }

    /// Calls `f` with a shared pointer to the value. Dereferencing it is sound only while no
    /// other thread writes the cell; loom checks this.
    pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        #[cfg(not(flashdmoe_loom))]
        return f(self.inner.get());
        #[cfg(flashdmoe_loom)]
        return self.inner.with(f);
    }

    /// Calls `f` with a mutable pointer to the value. Dereferencing it is sound only while no
    /// other thread accesses the cell; loom checks this.
    pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        #[cfg(not(flashdmoe_loom))]
        return f(self.inner.get());
        #[cfg(flashdmoe_loom)]
        return self.inner.with_mut(f);
    }
}

/// A fixed-size byte buffer that several threads read and write without a lock, in disjoint
/// pieces ordered by the protocol (the simulated heap's data sections, a rank's output).
///
/// Under loom the buffer is split into `chunk`-byte cells, each tracked separately, so two
/// threads touching different chunks never conflict while unordered accesses to the same chunk
/// are reported. Accesses should therefore be aligned to `chunk` where they may run
/// concurrently.
pub struct SharedBytes {
    len: usize,
    #[cfg(not(flashdmoe_loom))]
    bytes: Box<[std::cell::UnsafeCell<u8>]>,
    #[cfg(flashdmoe_loom)]
    chunk: usize,
    #[cfg(flashdmoe_loom)]
    chunks: Box<[UnsafeCell<Box<[u8]>>]>,
}

impl std::fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBytes").field("len", &self.len).finish_non_exhaustive()
    }
}

// SAFETY: all access goes through `read`/`write`, whose callers guarantee that conflicting
// accesses from different threads are ordered (the struct is a shared memory region, like a
// GPU heap); the bytes themselves are plain data.
unsafe impl Sync for SharedBytes {}

impl SharedBytes {
    /// `len` zeroed bytes; `chunk` (> 0) is the tracking granularity under loom.
    pub fn zeroed(len: usize, chunk: usize) -> Self {
        assert!(chunk > 0, "SharedBytes chunk must be > 0");
        #[cfg(not(flashdmoe_loom))]
        {
            let _ = chunk;
            SharedBytes { len, bytes: (0..len).map(|_| std::cell::UnsafeCell::new(0)).collect() }
        }
        #[cfg(flashdmoe_loom)]
        {
            let chunks = (0..len.div_ceil(chunk))
                .map(|i| UnsafeCell::new(vec![0u8; chunk.min(len - i * chunk)].into_boxed_slice()))
                .collect();
            SharedBytes { len, chunk, chunks }
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `src` into the buffer at `offset`.
    ///
    /// Panics if the range is out of bounds.
    ///
    /// # Safety
    ///
    /// No other thread may read or write any of these bytes concurrently: every other access
    /// must happen-before or happen-after this one.
    pub unsafe fn write(&self, offset: usize, src: &[u8]) {
        self.check(offset, src.len());
        #[cfg(not(flashdmoe_loom))]
        {
            let base = std::cell::UnsafeCell::raw_get(self.bytes.as_ptr());
            // SAFETY: the range is in bounds (checked above), `base` carries the provenance of
            // the whole slice of `UnsafeCell<u8>` (same layout as `u8`), and the caller
            // guarantees no concurrent access to these bytes.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), base.add(offset), src.len()) };
        }
        #[cfg(flashdmoe_loom)]
        self.for_chunks(offset, src.len(), |cell, within, at| {
            // SAFETY: loom checks that no other thread accesses this chunk concurrently.
            cell.with_mut(|p| unsafe { (&mut (*p))[within].copy_from_slice(&src[at]) })
        });
    }

    /// Copies bytes at `offset` into `dst`.
    ///
    /// Panics if the range is out of bounds.
    ///
    /// # Safety
    ///
    /// No other thread may write any of these bytes concurrently.
    pub unsafe fn read(&self, offset: usize, dst: &mut [u8]) {
        self.check(offset, dst.len());
        #[cfg(not(flashdmoe_loom))]
        {
            let base = std::cell::UnsafeCell::raw_get(self.bytes.as_ptr());
            // SAFETY: in bounds (checked above); the caller guarantees no concurrent writer.
            unsafe { std::ptr::copy_nonoverlapping(base.add(offset), dst.as_mut_ptr(), dst.len()) };
        }
        #[cfg(flashdmoe_loom)]
        self.for_chunks(offset, dst.len(), |cell, within, at| {
            // SAFETY: loom checks that no other thread writes this chunk concurrently.
            cell.with(|p| dst[at].copy_from_slice(unsafe { &(&(*p))[within] }))
        });
    }

    fn check(&self, offset: usize, len: usize) {
        let end = offset.checked_add(len);
        assert!(
            end.is_some_and(|end| end <= self.len),
            "SharedBytes access {offset}+{len} out of bounds ({})",
            self.len
        );
    }

    /// Calls `f(cell, range within the chunk, range within the caller's slice)` for every chunk
    /// overlapping `offset..offset + len`.
    #[cfg(flashdmoe_loom)]
    fn for_chunks(
        &self,
        offset: usize,
        len: usize,
        mut f: impl FnMut(&UnsafeCell<Box<[u8]>>, std::ops::Range<usize>, std::ops::Range<usize>),
    ) {
        let mut at = 0;
        while at < len {
            let pos = offset + at;
            let (index, within) = (pos / self.chunk, pos % self.chunk);
            let n = (self.chunk - within).min(len - at);
            f(&self.chunks[index], within..within + n, at..at + n);
            at += n;
        }
    }
}

/// A deadline for a wait; never expires under loom.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    #[cfg(not(flashdmoe_loom))]
    at: Option<std::time::Instant>,
}

impl Deadline {
    /// `timeout` from now (a timeout too large to represent never expires).
    pub fn after(timeout: Duration) -> Self {
        #[cfg(not(flashdmoe_loom))]
        return Deadline { at: std::time::Instant::now().checked_add(timeout) };
        #[cfg(flashdmoe_loom)]
        {
            let _ = timeout;
            Deadline {}
        }
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        #[cfg(not(flashdmoe_loom))]
        return self.at.is_some_and(|at| std::time::Instant::now() >= at);
        #[cfg(flashdmoe_loom)]
        false
    }
}

/// A liveness count for deadlines: roles [`beat`](Heartbeat::beat) it when they make progress,
/// and a waiting role restarts its [`Deadline`] whenever the count moved, so "no progress for
/// the timeout" means no progress by anyone sharing the heartbeat (every rank of a world), not
/// just by the waiting role: a subscriber waiting for a return signal while processors grind
/// through long tiles is not stuck.
///
/// It orders nothing (relaxed, a hint for deadlines only) and is inert under loom, where
/// deadlines never expire.
#[derive(Debug, Default)]
pub struct Heartbeat {
    #[cfg(not(flashdmoe_loom))]
    beats: std::sync::atomic::AtomicU64,
}

impl Heartbeat {
    /// A heartbeat that has not beaten.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records progress.
    pub fn beat(&self) {
        #[cfg(not(flashdmoe_loom))]
        self.beats.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Beats so far (only its changes mean anything).
    pub fn count(&self) -> u64 {
        #[cfg(not(flashdmoe_loom))]
        return self.beats.load(std::sync::atomic::Ordering::Relaxed);
        #[cfg(flashdmoe_loom)]
        0
    }
}

/// Backoff for spin-waits: crossbeam's [`Backoff`](crossbeam_utils::Backoff) (spin `2^step`
/// times, then yield to the OS scheduler) until it reports completion, then sleeps starting at
/// [`Backoff::MIN_SLEEP`] and doubling up to [`Backoff::MAX_SLEEP`], so many simulated ranks on
/// a few cores still make progress. Under loom every snooze is a `yield_now` (the hint loom
/// needs to schedule another thread).
#[derive(Debug)]
pub struct Backoff {
    #[cfg(not(flashdmoe_loom))]
    spin: crossbeam_utils::Backoff,
    /// The next sleep, once `spin` has completed.
    #[cfg(not(flashdmoe_loom))]
    sleep: Duration,
}

impl Backoff {
    /// Shortest sleep.
    pub const MIN_SLEEP: Duration = Duration::from_micros(10);
    /// Longest sleep between two polls.
    pub const MAX_SLEEP: Duration = Duration::from_micros(500);

    /// A fresh backoff (spins first).
    pub fn new() -> Self {
        Backoff {
            #[cfg(not(flashdmoe_loom))]
            spin: crossbeam_utils::Backoff::new(),
            #[cfg(not(flashdmoe_loom))]
            sleep: Self::MIN_SLEEP,
        }
    }

    /// Back to spinning: call after progress.
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Waits a little, longer each call.
    pub fn snooze(&mut self) {
        #[cfg(not(flashdmoe_loom))]
        if self.spin.is_completed() {
            std::thread::sleep(self.sleep);
            self.sleep = (self.sleep * 2).min(Self::MAX_SLEEP);
        } else {
            self.spin.snooze();
        }
        #[cfg(flashdmoe_loom)]
        loom::thread::yield_now();
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(flashdmoe_loom)))]
mod tests {
    use super::*;

    #[test]
    fn shared_bytes_round_trip_and_bounds() {
        let b = SharedBytes::zeroed(32, 16);
        // SAFETY: single-threaded test.
        unsafe { b.write(10, &[1, 2, 3, 4, 5, 6, 7, 8]) };
        let mut out = [0u8; 10];
        // SAFETY: single-threaded test.
        unsafe { b.read(9, &mut out) };
        assert_eq!(out, [0, 1, 2, 3, 4, 5, 6, 7, 8, 0]);
        let oob = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut out = [0u8; 2];
            // SAFETY: single-threaded test.
            unsafe { b.read(31, &mut out) }
        }));
        assert!(oob.is_err());
    }

    #[test]
    fn backoff_spins_then_sleeps_doubling_to_the_cap() {
        let mut b = Backoff::new();
        for spins in 0.. {
            if b.spin.is_completed() {
                break;
            }
            assert!(spins < 64, "crossbeam's backoff never completed");
            b.snooze();
        }
        assert_eq!(b.sleep, Backoff::MIN_SLEEP);
        b.snooze();
        assert_eq!(b.sleep, Backoff::MIN_SLEEP * 2);
        (0..8).for_each(|_| b.snooze());
        assert_eq!(b.sleep, Backoff::MAX_SLEEP);
        b.reset();
        assert!(!b.spin.is_completed());
        assert_eq!(b.sleep, Backoff::MIN_SLEEP);
    }

    #[test]
    fn heartbeat_counts_beats() {
        let h = Heartbeat::new();
        let before = h.count();
        h.beat();
        h.beat();
        assert_eq!(h.count(), before + 2);
    }

    #[test]
    fn deadline_expires() {
        assert!(Deadline::after(Duration::ZERO).expired());
        assert!(!Deadline::after(Duration::from_secs(3600)).expired());
        assert!(!Deadline::after(Duration::MAX).expired());
    }
}

#[cfg(all(test, flashdmoe_loom))]
mod loom_tests {
    use super::*;

    /// Chunks are tracked separately: writes to different chunks from two threads are fine.
    #[test]
    fn loom_shared_bytes_disjoint_chunks() {
        loom::model(|| {
            let b = Arc::new(SharedBytes::zeroed(8, 4));
            let b2 = b.clone();
            // SAFETY: bytes 4..8 are only touched by this thread until it is joined.
            let t = thread::spawn(move || unsafe { b2.write(4, &[9; 4]) });
            // SAFETY: bytes 0..4 are only touched by this thread.
            unsafe { b.write(0, &[1; 4]) };
            t.join().unwrap();
            let mut out = [0u8; 8];
            // SAFETY: the writer was joined.
            unsafe { b.read(0, &mut out) };
            assert_eq!(out, [1, 1, 1, 1, 9, 9, 9, 9]);
        });
    }

    /// The model bites: an unordered write and read of one chunk is reported.
    #[test]
    #[should_panic(expected = "Causality violation")]
    fn loom_shared_bytes_race_is_caught() {
        loom::model(|| {
            let b = Arc::new(SharedBytes::zeroed(4, 4));
            let b2 = b.clone();
            // SAFETY: deliberately violated to check that loom catches it.
            let t = thread::spawn(move || unsafe { b2.write(0, &[1; 4]) });
            let mut out = [0u8; 4];
            // SAFETY: deliberately violated (no ordering with the writer).
            unsafe { b.read(0, &mut out) };
            t.join().unwrap();
        });
    }
}
