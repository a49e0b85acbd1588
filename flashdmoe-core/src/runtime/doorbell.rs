//! [`Doorbell`]: how the scheduler hands one task to one idle processor.
//!
//! A doorbell is a task slot plus a 64-bit word `rings * 2 + stop`. The scheduler (its only
//! writer) fills the slot and release-stores the word incremented by 2, or by 2 with the stop
//! bit set to end the forward; the processor acquire-loads the word and, when it differs from
//! the last value it saw, copies the task out.
//!
//! ## Invariants
//!
//! * The scheduler rings a processor's doorbell only while that processor is idle, i.e. after
//!   taking the processor's "ready" entry from the ready queue, which the processor pushes
//!   (release) only after copying its previous task. So the slot is never written while read.
//! * After a stop nothing is rung again.

use flashdmoe_proto::{NO_OFFSET, TaskDescriptor};

use crate::sync::{AtomicU64, Ordering, UnsafeCell};

/// What a processor finds at its doorbell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bell {
    /// Run this task.
    Task(TaskDescriptor),
    /// The forward is complete: stop.
    Stop,
}

/// One processor's doorbell.
#[derive(Debug)]
pub struct Doorbell {
    word: AtomicU64,
    task: UnsafeCell<TaskDescriptor>,
}

// SAFETY: the task slot is written only by the scheduler while the processor is idle and read
// by the processor only after acquiring the word the scheduler release-stored after the write
// (see the module invariants; the callers of `ring` promise the idle condition).
unsafe impl Sync for Doorbell {}

const STOP: u64 = 1;

/// A placeholder descriptor for slots that hold no task yet (never handed out).
pub(crate) const EMPTY: TaskDescriptor = TaskDescriptor {
    kind: 0,
    source_rank: 0,
    owner_rank: 0,
    local_expert: 0,
    row_tile: 0,
    col_tile: 0,
    valid_rows: 0,
    epoch: 0,
    input_offset: NO_OFFSET,
    output_offset: NO_OFFSET,
    signal_offset: NO_OFFSET,
    counter_offset: NO_OFFSET,
};

impl Default for Doorbell {
    fn default() -> Self {
        Self::new()
    }
}

impl Doorbell {
    /// A doorbell that was never rung.
    pub fn new() -> Self {
        Doorbell { word: AtomicU64::new(0), task: UnsafeCell::new(EMPTY) }
    }

    /// Hands `task` to the processor.
    ///
    /// # Safety
    ///
    /// Only the scheduler calls this, and only while the processor is idle: it has reported
    /// ready (release) after its last [`Doorbell::poll`] that returned a task, and the caller
    /// has acquired that report.
    pub unsafe fn ring(&self, task: TaskDescriptor) {
        let word = self.word.load(Ordering::Relaxed);
        debug_assert!(word & STOP == 0, "doorbell rung after stop");
        // SAFETY: the processor is idle (caller's contract), so it does not read the slot now,
        // and it reads it again only after acquiring the store below.
        self.task.with_mut(|p| unsafe { p.write(task) });
        self.word.store(word + 2, Ordering::Release);
    }

    /// Tells the processor to stop. Only the scheduler calls this, once, at the end.
    pub fn stop(&self) {
        let word = self.word.load(Ordering::Relaxed);
        self.word.store((word + 2) | STOP, Ordering::Release);
    }

    /// The bell rung since `seen` (the word the processor last saw; start at 0), if any.
    pub fn poll(&self, seen: &mut u64) -> Option<Bell> {
        let word = self.word.load(Ordering::Acquire);
        if word == *seen {
            return None;
        }
        *seen = word;
        if word & STOP != 0 {
            return Some(Bell::Stop);
        }
        // SAFETY: the acquire load saw the release store made after the slot's last write, and
        // the scheduler does not write the slot again before this processor reports ready.
        Some(Bell::Task(self.task.with(|p| unsafe { *p })))
    }
}

#[cfg(all(test, flashdmoe_loom))]
mod loom_tests {
    use super::*;
    use crate::runtime::Log;
    use crate::sync::{Arc, thread};

    fn task(n: u32) -> TaskDescriptor {
        TaskDescriptor { row_tile: n, ..EMPTY }
    }

    /// The scheduler rings two tasks and a stop, each time after the processor reports ready
    /// through a [`Log`]; the processor sees each task exactly once and fully written.
    #[test]
    fn loom_doorbell_handoff() {
        loom::model(|| {
            let bell = Arc::new(Doorbell::new());
            let ready = Arc::new(Log::<u32>::with_capacity(3, 0));
            let processor = {
                let (bell, ready) = (bell.clone(), ready.clone());
                thread::spawn(move || {
                    let mut seen = 0;
                    let mut got = Vec::new();
                    ready.push(0).unwrap();
                    loop {
                        match bell.poll(&mut seen) {
                            Some(Bell::Task(t)) => {
                                got.push(t.row_tile);
                                ready.push(0).unwrap();
                            }
                            Some(Bell::Stop) => return got,
                            None => thread::yield_now(),
                        }
                    }
                })
            };
            for (i, n) in [10, 20, 0].into_iter().enumerate() {
                while ready.get(i).is_none() {
                    thread::yield_now();
                }
                if n == 0 {
                    bell.stop();
                } else {
                    // SAFETY: the processor's ready entry `i` was acquired just above.
                    unsafe { bell.ring(task(n)) };
                }
            }
            assert_eq!(processor.join().unwrap(), [10, 20]);
        });
    }
}
