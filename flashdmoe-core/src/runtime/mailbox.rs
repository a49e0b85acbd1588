//! [`Mailbox`]: how the scheduler hands tasks to one processor -- the CUDA kernel's protocol
//! (`mailbox`, `assigned`, `completed` in `flashdmoe-cuda/kernels`), written once.
//!
//! A processor's mailbox is two word slots and two counts: `assigned`, the words the scheduler
//! posted (it is the only writer), and `completed`, the tasks the processor finished (it is the
//! only writer). Word number `a` (0, 1, 2, ...) goes into slot `a % 2`. A word is the index of
//! a task in the rank's task queue, or [`STOP`]; in a layer with paired GEMM0 tasks, a task
//! index may carry [`PAIR_BIT`]: the task is one half of a pair (the kernel's `kPairBit`;
//! docs/dev/paired-tasks.md).
//!
//! * Scheduler, [`Mailbox::post`]: only while fewer than [`Mailbox::DEPTH`] (2) words are
//!   outstanding, `assigned - completed < 2` with `completed` acquire-loaded: write slot
//!   `assigned % 2`, then release-store `assigned + 1`. Two slots let a processor find its next
//!   task the moment it finishes one.
//! * Processor, [`Mailbox::take`]: once `assigned` (acquire-loaded) exceeds the words it took,
//!   `c`, read slot `c % 2`; after running the task, [`Mailbox::complete`] release-stores
//!   `completed = c + 1` -- or, where the processor fenced after taking the task,
//!   [`Mailbox::complete_after_fence`] stores it relaxed: with the fence, a release pattern
//!   (the kernel's GEMM tasks: their publication fence is the one; `mailbox_complete`).
//! * The end: once every task of the rank's bound is complete, the scheduler posts [`STOP`] to
//!   every mailbox, like a task; a processor that takes it is done.
//!
//! ## The waves: two more writers of `assigned`
//!
//! On a layer that posts waves ([`super::Waves`]; the kernel's OS block) `assigned` has three
//! writers, in an order the protocol fixes:
//! * [`Mailbox::prepost`], before any role runs (it takes `&mut`): the first and second waves'
//!   words 0 and 1;
//! * the processor's self-post, [`Mailbox::post_own`]: word 2 (the third wave's combine) once it
//!   has completed word 0. Its slot, 0, is free: word 0 was read before it ran. It stores
//!   `assigned = 3` before it completes word 1;
//! * the scheduler, which counts the waves' words as posted from the start
//!   ([`super::Scheduler`] keeps its own count and never reads `assigned` back) and posts word
//!   3 only after acquiring `completed >= 2`, which the processor release-stored after its
//!   self-post. So the three writes are totally ordered, and a slot is still never overwritten
//!   while unread.
//!
//! ## Invariants
//!
//! * A slot is never overwritten while unread: slot `a % 2` last held word `a - 2`, and the
//!   scheduler writes it only after acquiring `completed >= a - 1`, which the processor
//!   release-stored after it had read word `a - 2`.
//! * Every word is read after it was written and before it is overwritten, so the processor
//!   takes every posted word exactly once, in posting order; and since the scheduler acquired
//!   each task's publication in the queue before posting its index, the processor may read the
//!   task by index without acquiring it again ([`Log::read_handed`](super::Log::read_handed)).
//! * [`STOP`] is posted only after every completion was acquired, so everything the tasks wrote
//!   happens-before the stop, and nothing is posted after it.
//!
//! All of this is model-checked with loom below, and each ordering (and the depth) is shown to
//! matter by a weakened variant that loom must catch.

use crate::sync::{AtomicU32, Ordering, UnsafeCell, fence};

/// The word that tells a processor to stop (the kernel's `kStop`).
pub const STOP: u32 = u32::MAX;

/// Marks a mailbox word as one half of a paired GEMM0 task (the kernel's `kPairBit` in
/// `config.cuh`; docs/dev/paired-tasks.md): the processor meets its cluster peer before running
/// it. Task indices stay below it ([`RankState::new`](super::RankState::new) checks the queue's
/// capacity); [`STOP`] has it too and is tested first.
pub const PAIR_BIT: u32 = 0x8000_0000;

/// What a processor finds in its mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mail {
    /// Run the task at this index of the rank's task queue.
    Task(u32),
    /// Run the task at this index of the rank's task queue, one half of a pair: only once the
    /// processor's cluster peer has reached the same pair (the word carried [`PAIR_BIT`]).
    Pair(u32),
    /// The rank's forward is complete: stop.
    Stop,
}

/// The memory orderings and depth the protocol runs with: always [`KERNEL`] outside the loom
/// tests, which weaken one at a time to show each matters.
#[derive(Clone, Copy, Debug)]
struct Rules {
    /// Words outstanding at most.
    depth: u32,
    /// The store of `assigned` that publishes a slot.
    post: Ordering,
    /// The store of `completed` that releases a slot (and publishes the task's results).
    complete: Ordering,
}

const KERNEL: Rules =
    Rules { depth: Mailbox::DEPTH, post: Ordering::Release, complete: Ordering::Release };

/// One processor's mailbox (the kernel's `mailbox[2q..2q+2]`, `assigned[q]`, `completed[q]`).
#[derive(Debug)]
pub struct Mailbox {
    slots: [UnsafeCell<u32>; 2],
    assigned: AtomicU32,
    completed: AtomicU32,
    rules: Rules,
}

// SAFETY: a slot is written only by the scheduler (`post`'s contract) while the processor does
// not read it -- its previous word was completed, and the completion acquired -- and read by the
// processor only after acquiring the `assigned` store that follows the write (`complete`'s
// contract keeps the processor's side honest). The counts are atomics.
unsafe impl Sync for Mailbox {}

impl Default for Mailbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Mailbox {
    /// Words a mailbox holds: the scheduler may be at most this far ahead of the processor.
    pub const DEPTH: u32 = 2;

    /// An empty mailbox (`assigned = completed = 0`).
    pub fn new() -> Self {
        Self::with_rules(KERNEL)
    }

    fn with_rules(rules: Rules) -> Self {
        Mailbox {
            slots: [UnsafeCell::new(STOP), UnsafeCell::new(STOP)],
            assigned: AtomicU32::new(0),
            completed: AtomicU32::new(0),
            rules,
        }
    }

    /// Before any role runs: posts `word` as the next word, if fewer than [`Mailbox::DEPTH`]
    /// are outstanding (`false`, nothing written, otherwise). The first and second waves.
    pub fn prepost(&mut self, word: u32) -> bool {
        // SAFETY: `&mut self`: no other thread reaches the mailbox.
        unsafe { self.put(self.completed.load(Ordering::Relaxed), word) }
    }

    /// Processor: posts `word` to its own mailbox (the third wave: its combine as word 2, once
    /// word 0 is complete), if fewer than [`Mailbox::DEPTH`] words are outstanding; `false`
    /// (nothing written) otherwise.
    ///
    /// # Safety
    ///
    /// Only the mailbox's processor calls this, after it completed every word but the last
    /// posted, and the scheduler counts this word as posted from the start, so it does not post
    /// before the processor completes the next word (after this call, in program order).
    pub unsafe fn post_own(&self, word: u32) -> bool {
        // SAFETY: the completions are this thread's own stores; the slot, which last held a
        // word this processor read and completed, has no other writer (this function's
        // contract).
        unsafe { self.put(self.completed.load(Ordering::Relaxed), word) }
    }

    /// Scheduler: words posted so far.
    pub fn assigned(&self) -> u32 {
        // Relaxed: the scheduler is the only writer, so it reads its own last store.
        self.assigned.load(Ordering::Relaxed)
    }

    /// Scheduler: tasks the processor has completed; everything it did for them (its reads of
    /// their slots, the tasks' writes) happens-before this load's caller continues.
    pub fn completed(&self) -> u32 {
        self.completed.load(Ordering::Acquire)
    }

    /// Scheduler: posts `word` (a task index, or [`STOP`]) if fewer than [`Mailbox::DEPTH`]
    /// words are outstanding; `false` (and nothing written) otherwise.
    ///
    /// # Safety
    ///
    /// Only one thread, the rank's scheduler, posts to a mailbox after the waves; on a layer
    /// with a self-post ([`Mailbox::post_own`]), only once it has acquired the completion of
    /// the word before the self-posted one (the scheduler's own count says so).
    pub unsafe fn post(&self, word: u32) -> bool {
        // The completions first: one that makes room was stored after any self-post.
        // SAFETY: the slot `put` writes last held a word the processor read before completing
        // it (`complete`'s contract), and that completion was acquired here; no other thread
        // posts (this function's contract).
        unsafe { self.put(self.completed.load(Ordering::Acquire), word) }
    }

    /// Posts `word` as word number `assigned` if fewer than the depth are outstanding against
    /// `done` completions (`false`, nothing written, otherwise): writes its slot, then stores
    /// `assigned + 1` with the post ordering.
    ///
    /// # Safety
    ///
    /// No other thread writes `assigned` or the slot meanwhile, and the slot's last word was
    /// read by the processor before the completion `done` counts, which the caller has seen.
    unsafe fn put(&self, done: u32, word: u32) -> bool {
        let a = self.assigned.load(Ordering::Relaxed);
        if a.wrapping_sub(done) >= self.rules.depth {
            return false;
        }
        // SAFETY: the caller's contract: the slot's last word was read, and nobody else
        // writes it; the processor reads it again only after acquiring the store below.
        self.slots[(a % 2) as usize].with_mut(|slot| unsafe { slot.write(word) });
        self.assigned.store(a + 1, self.rules.post);
        true
    }

    /// Processor: word number `taken` (the words it took before this one), once posted.
    pub fn take(&self, taken: u32) -> Option<Mail> {
        if self.assigned.load(Ordering::Acquire) <= taken {
            return None;
        }
        // SAFETY: the acquire load saw the release store that followed the slot's write, and the
        // scheduler does not write the slot again before this processor completes word `taken`.
        let word = self.slots[(taken % 2) as usize].with(|slot| unsafe { *slot });
        Some(if word == STOP {
            Mail::Stop
        } else if word & PAIR_BIT != 0 {
            Mail::Pair(word & !PAIR_BIT)
        } else {
            Mail::Task(word)
        })
    }

    /// Processor: reports the tasks of the first `taken` words complete.
    ///
    /// # Safety
    ///
    /// Only the mailbox's processor calls this, after it finished reading word `taken - 1` (and
    /// every earlier one): the scheduler may overwrite its slot as soon as it sees this store.
    pub unsafe fn complete(&self, taken: u32) {
        self.completed.store(taken, self.rules.complete);
    }

    /// Processor: [`Mailbox::complete`] for a processor that publishes the task's results
    /// behind a fence of its own: the fence (here a `Release` fence, standing for the kernel's
    /// `fence_for` or `signal_to`, issued after the word was read) and a relaxed store of
    /// `completed` form a release pattern, so the store itself need not be a release (on the
    /// GPU: no second MEMBAR waiting for the publication just issued; run 130, -0.8%).
    ///
    /// # Safety
    ///
    /// As [`Mailbox::complete`].
    pub unsafe fn complete_after_fence(&self, taken: u32) {
        fence(Ordering::Release);
        self.completed.store(taken, Ordering::Relaxed);
    }
}

#[cfg(all(test, not(flashdmoe_loom)))]
mod tests {
    use super::*;

    #[test]
    fn two_words_outstanding_at_most_each_taken_once_in_order() {
        let mailbox = Mailbox::new();
        assert_eq!(mailbox.take(0), None);
        // SAFETY: one thread plays both roles in turn (every `post` and `complete` here).
        unsafe {
            assert!(mailbox.post(7));
            assert!(mailbox.post(8));
            assert!(!mailbox.post(9), "a third word must wait for a completion");
            assert_eq!((mailbox.assigned(), mailbox.completed()), (2, 0));
            assert_eq!(
                (mailbox.take(0), mailbox.take(1), mailbox.take(2)),
                (Some(Mail::Task(7)), Some(Mail::Task(8)), None)
            );
            mailbox.complete(1);
            assert!(mailbox.post(9), "slot 0 is free once word 0 is complete");
            assert!(!mailbox.post(10));
            assert_eq!(mailbox.take(2), Some(Mail::Task(9)));
            mailbox.complete(3);
            assert!(mailbox.post(STOP));
            assert_eq!(mailbox.take(3), Some(Mail::Stop));
        }
    }

    #[test]
    fn the_waves_prepost_two_words_and_the_processor_posts_the_third_itself() {
        let mut mailbox = Mailbox::new();
        assert!(mailbox.prepost(0));
        assert!(mailbox.prepost(5));
        assert!(!mailbox.prepost(9), "two words outstanding at most");
        assert_eq!(mailbox.take(0), Some(Mail::Task(0)));
        // SAFETY: one thread plays both roles in turn.
        unsafe {
            assert!(!mailbox.post_own(7), "no room before word 0 is complete");
            mailbox.complete(1);
            assert!(mailbox.post_own(7));
            assert_eq!(
                (mailbox.take(1), mailbox.take(2)),
                (Some(Mail::Task(5)), Some(Mail::Task(7)))
            );
            mailbox.complete(2);
            assert!(mailbox.post(8), "the scheduler's word 3 once word 1 is complete");
            assert_eq!(mailbox.take(3), Some(Mail::Task(8)));
        }
    }

    #[test]
    fn a_pair_word_is_taken_as_a_pair_half_and_the_stop_stays_the_stop() {
        let mailbox = Mailbox::new();
        // SAFETY: one thread plays both roles in turn.
        unsafe {
            assert!(mailbox.post(5 | PAIR_BIT));
            assert!(mailbox.post(6));
            assert_eq!(
                (mailbox.take(0), mailbox.take(1)),
                (Some(Mail::Pair(5)), Some(Mail::Task(6)))
            );
            mailbox.complete(2);
            assert!(mailbox.post(STOP));
            assert_eq!(mailbox.take(2), Some(Mail::Stop));
        }
    }

    /// A scheduler thread and a processor thread pass 10 000 words through one mailbox: every
    /// word arrives once, in order.
    #[test]
    fn threads_pass_every_word_once_in_order() {
        const WORDS: u32 = 10_000;
        let mailbox = Mailbox::new();
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut taken = 0;
                loop {
                    match mailbox.take(taken) {
                        None => std::hint::spin_loop(),
                        Some(Mail::Stop) => break,
                        Some(Mail::Pair(word)) => panic!("word {word} came as a pair half"),
                        Some(Mail::Task(word)) => {
                            assert_eq!(word, taken, "word {taken} out of order");
                            taken += 1;
                            // SAFETY: this thread is the processor, done with the word.
                            unsafe { mailbox.complete(taken) };
                        }
                    }
                }
                assert_eq!(taken, WORDS);
            });
            for word in (0..WORDS).chain([STOP]) {
                // SAFETY: this thread is the only scheduler.
                while !unsafe { mailbox.post(word) } {
                    std::hint::spin_loop();
                }
            }
        });
        assert_eq!((mailbox.assigned(), mailbox.completed()), (WORDS + 1, WORDS));
    }
}

#[cfg(all(test, flashdmoe_loom))]
mod loom_tests {
    use flashdmoe_proto::TaskDescriptor;

    use super::*;
    use crate::runtime::{Log, NO_TASK};
    use crate::sync::{Arc, SharedBytes, thread};

    const TASKS: u32 = 3;

    /// The kernel's handoff, three tasks then the stop (so both slots are reused): the
    /// scheduler (this thread) publishes each task in a [`Log`], acquires it, posts its index;
    /// the processor takes the index, reads the task by index without acquiring it, "runs" it
    /// (writes its result), completes it. The scheduler posts the stop once it has acquired all
    /// completions, and then reads every result. Explored exhaustively (no preemption bound:
    /// about 35 s on two cores; the weakened variants fail within a second).
    fn handoff(rules: Rules) {
        handoff_with(rules, false)
    }

    /// [`handoff`], the processor completing each task with [`Mailbox::complete_after_fence`]
    /// when `fenced` (the kernel's GEMM tasks).
    fn handoff_with(rules: Rules, fenced: bool) {
        loom::model(move || {
            let mailbox = Arc::new(Mailbox::with_rules(rules));
            let tasks = Arc::new(Log::with_capacity(TASKS as usize, NO_TASK));
            let results = Arc::new(SharedBytes::zeroed(TASKS as usize, 1));
            let processor = {
                let (mailbox, tasks, results) = (mailbox.clone(), tasks.clone(), results.clone());
                thread::spawn(move || {
                    let mut ran = Vec::new();
                    let mut taken = 0;
                    loop {
                        match mailbox.take(taken) {
                            None => thread::yield_now(),
                            Some(Mail::Stop) => return ran,
                            Some(Mail::Pair(index)) => panic!("task {index} came as a pair half"),
                            Some(Mail::Task(index)) => {
                                // SAFETY: the scheduler acquired the task's publication before
                                // posting its index, and this thread acquired the post.
                                let task = unsafe { tasks.read_handed(index as usize) }.unwrap();
                                ran.push(task.row_tile);
                                // SAFETY: one task writes each result byte; the scheduler reads
                                // them after acquiring every completion (loom checks it).
                                unsafe { results.write(index as usize, &[task.row_tile as u8]) };
                                taken += 1;
                                // SAFETY: this is the mailbox's processor, done with the word.
                                unsafe {
                                    if fenced {
                                        mailbox.complete_after_fence(taken)
                                    } else {
                                        mailbox.complete(taken)
                                    }
                                };
                            }
                        }
                    }
                })
            };
            for index in 0..TASKS {
                tasks.push(TaskDescriptor { row_tile: 10 + index, ..NO_TASK }).unwrap();
                assert!(tasks.get(index as usize).is_some(), "published by this thread");
                // SAFETY: this thread is the only scheduler.
                while !unsafe { mailbox.post(index) } {
                    thread::yield_now();
                }
            }
            while mailbox.completed() != TASKS {
                thread::yield_now();
            }
            let mut out = [0u8; TASKS as usize];
            // SAFETY: every completion was acquired just above (loom checks it).
            unsafe { results.read(0, &mut out) };
            assert_eq!(out, [10, 11, 12], "every task's result is in before the stop");
            // SAFETY: as above; with nothing outstanding the stop always fits.
            assert!(unsafe { mailbox.post(STOP) }, "the stop fits once all tasks are complete");
            let ran = processor.join().unwrap();
            assert_eq!(ran, [10, 11, 12], "each task delivered exactly once, in order");
        });
    }

    #[test]
    fn loom_mailbox_handoff() {
        handoff(KERNEL);
    }

    /// The waves' three writers of `assigned` (module docs, "The waves"): words 0 and 1
    /// preposted, word 2 posted by the processor itself once word 0 is complete, word 3 by the
    /// scheduler (this thread) once it has acquired `completed >= room_after` -- 2 in the
    /// protocol, which counts the self-posted word from the start. The processor must take
    /// 0, 1, 2, 3 in order, then the stop.
    fn self_post(room_after: u32) {
        loom::model(move || {
            let mut mailbox = Mailbox::new();
            assert!(mailbox.prepost(0) && mailbox.prepost(1));
            let mailbox = Arc::new(mailbox);
            let processor = {
                let mailbox = mailbox.clone();
                thread::spawn(move || {
                    let mut words = Vec::new();
                    loop {
                        match mailbox.take(words.len() as u32) {
                            None => thread::yield_now(),
                            Some(Mail::Stop) => return words,
                            Some(Mail::Pair(w)) => panic!("word {w} came as a pair half"),
                            Some(Mail::Task(w)) => {
                                words.push(w);
                                // SAFETY: this is the mailbox's processor, done with the word;
                                // the self-post follows word 0's completion and precedes word
                                // 1's, and the scheduler counts it from the start.
                                unsafe {
                                    mailbox.complete(words.len() as u32);
                                    if words.len() == 1 {
                                        assert!(mailbox.post_own(2), "slot 0 is free");
                                    }
                                }
                            }
                        }
                    }
                })
            };
            while mailbox.completed() < room_after {
                thread::yield_now();
            }
            // SAFETY: this thread is the only scheduler, and it posts where its count of the
            // words (four, the waves' three among them) leaves room -- in the protocol.
            while !unsafe { mailbox.post(3) } {
                thread::yield_now();
            }
            while mailbox.completed() != 4 {
                thread::yield_now();
            }
            // SAFETY: as above.
            assert!(unsafe { mailbox.post(STOP) });
            assert_eq!(processor.join().unwrap(), [0, 1, 2, 3], "each word once, in order");
        });
    }

    #[test]
    fn loom_waves_self_post() {
        self_post(2);
    }

    /// The model bites: a scheduler that does not count the self-posted word (it posts once
    /// word 0 is complete) races the processor for slot 0.
    #[test]
    #[should_panic(expected = "Causality violation")]
    fn loom_uncounted_self_post_is_caught() {
        self_post(1);
    }

    /// A relaxed completion count after a release fence of the processor's (the kernel's GEMM
    /// tasks, whose publication fence it is) keeps every guarantee of the release store.
    #[test]
    fn loom_fenced_relaxed_completion() {
        handoff_with(KERNEL, true);
    }

    /// The model bites: with a `Relaxed` store of `assigned`, the processor's read of the slot
    /// (and of the task behind the index) is not ordered after the scheduler's write.
    #[test]
    #[should_panic(expected = "Causality violation")]
    fn loom_relaxed_assigned_is_caught() {
        handoff(Rules { post: Ordering::Relaxed, ..KERNEL });
    }

    /// The model bites: with a `Relaxed` store of `completed`, the scheduler's reuse of a slot
    /// is not ordered after the processor's read of it, nor its read of the results after the
    /// tasks' writes.
    #[test]
    #[should_panic(expected = "Causality violation")]
    fn loom_relaxed_completed_is_caught() {
        handoff(Rules { complete: Ordering::Relaxed, ..KERNEL });
    }

    /// The model bites: with three words outstanding in two slots, the third overwrites the
    /// first before it is read -- loom sees the write race the read, or the processor runs the
    /// third task in place of the first.
    #[test]
    fn loom_three_outstanding_is_caught() {
        let caught = std::panic::catch_unwind(|| handoff(Rules { depth: 3, ..KERNEL }))
            .expect_err("loom must catch a slot overwritten while unread");
        let message = caught
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| caught.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        assert!(
            ["Causality violation", "exactly once, in order", "before the stop"]
                .iter()
                .any(|m| message.contains(m)),
            "unexpected failure: {message}"
        );
    }
}
