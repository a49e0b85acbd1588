//! [`Scheduler`]: hands queued tasks to processors and decides when the rank is done.

use flashdmoe_proto::{HeapLayout, ProtoError, TaskCounts, TaskKind};

use super::{
    Awaiting, Mailbox, PAIR_BIT, Poll, RankState, Role, RuntimeError, STOP, cluster_processors,
    pair_clusters,
};
use crate::sync::Ordering;

/// What the scheduler remembers of one processor: the completions it has counted, the kind
/// of each outstanding task by its word number modulo 2 (its mailbox slot), and whether the
/// last word it was given is a pair's half (`in_step`: the kernel's `OsShared::in_step`).
#[derive(Clone, Copy, Debug, Default)]
struct Track {
    completed: u32,
    kinds: [Option<TaskKind>; 2],
    in_step: bool,
}

/// The scheduler of one rank for one forward (one per rank; a warp on the GPU).
///
/// Each poll: learns the task bound once every dispatch signal has been seen
/// ([`TaskCounts::for_rank`] over the reported row counts); counts the completions each
/// processor reported in its [`Mailbox`]; stops when completions reach the bound (posting
/// [`STOP`] to every mailbox); and otherwise posts queued tasks, in queue order, to processors
/// with room -- the kernel's two passes: first processors with nothing outstanding, then those
/// with one task outstanding, each pass round-robin from where the last poll's handing-out
/// ended.
///
/// ## Paired layers
///
/// In a layer with paired GEMM0 tasks ([`RankState::with_pairs`]) the handout is the kernel's
/// `handout_paired` (`scheduler.cuh`; docs/dev/paired-tasks.md): the queue, in order, a unit
/// at a time, where a unit is a solo task or a *pair* (an entry marked as a pair's head and the
/// entry after it, row tiles `2p` and `2p + 1` of one packet's column tile).
/// * A solo task goes to the processor with the fewest words outstanding (at most one: room in
///   its mailbox), nearest the cursor, which then moves past it: idle processors first, round
///   robin, as the two passes do.
/// * A pair goes out only once both its entries are queued, and to the two processors of one
///   cluster ([`pair_clusters`]; never processor 0) in the same poll: the head to processor
///   `2k + 1`, the second half to `2k + 2`, each word marked with [`PAIR_BIT`]. A cluster takes
///   a pair when both its processors have nothing outstanding (first, round robin from a
///   cursor of their own), or when each has one word outstanding and the last word each was
///   given is a pair's half (`in_step`: both then run their halves of one pair and end
///   together; a pair posted beside two unrelated tasks would wait for the slower of them at
///   the rendezvous, perf-notes v42 (e)).
/// * A pair no cluster can take now goes out as two solo tasks, the head now and the second
///   half as the next unit (a pair's mark is an optimisation: either way each task runs once).
/// * A unit that cannot go (no room, or a pair whose second half is not queued yet) ends the
///   poll's handout: nothing queued after it is posted before it, so the queue is handed out
///   in order. Since a pair reaches both mailboxes in one poll and each mailbox is FIFO, a
///   cluster's two processors meet its pairs in the same order (their rendezvous in
///   [`Processor`](super::Processor) cannot deadlock).
/// * With no cluster (fewer than 3 processors) pairs are handed out as two solo tasks.
#[derive(Debug)]
pub struct Scheduler<'a> {
    layout: &'a HeapLayout,
    state: &'a RankState,
    epoch: u32,
    bound: Option<u64>,
    completed: TaskCounts,
    next_task: usize,
    cursor: usize,
    /// Paired layers: where the next search for a cluster starts.
    cluster_cursor: usize,
    tracks: Vec<Track>,
}

impl<'a> Scheduler<'a> {
    /// The scheduler of a rank whose forward runs at `epoch` (raw value, for reports).
    pub fn new(layout: &'a HeapLayout, state: &'a RankState, epoch: u32) -> Self {
        Scheduler {
            layout,
            state,
            epoch,
            bound: None,
            completed: TaskCounts::default(),
            next_task: 0,
            cursor: 0,
            cluster_cursor: 0,
            tracks: vec![Track::default(); state.processors() as usize],
        }
    }

    /// Tasks completed so far, per kind (the rank's task counts once done).
    pub fn completed(&self) -> TaskCounts {
        self.completed
    }

    fn learn_bound(&mut self) {
        let packets = self.state.received_rows.len() as u32;
        if self.bound.is_none() && self.state.packets_seen.load(Ordering::Acquire) == packets {
            let rows = self.state.received_rows.iter().map(|r| r.load(Ordering::Relaxed));
            self.bound = Some(TaskCounts::for_rank(self.layout, rows).total());
        }
    }

    /// Counts the completions reported since the last poll; whether there were any.
    fn count_completions(&mut self) -> Result<bool, RuntimeError> {
        let mut any = false;
        for (mailbox, track) in self.state.mailboxes.iter().zip(&mut self.tracks) {
            let done = mailbox.completed();
            while track.completed != done {
                let slot = (track.completed % 2) as usize;
                let kind = track.kinds[slot].take().ok_or(ProtoError::Inconsistent {
                    field: "mailbox completions",
                    expected: mailbox.assigned() as u64,
                    found: done as u64,
                })?;
                self.completed.add(kind);
                track.completed += 1;
                any = true;
            }
        }
        Ok(any)
    }

    /// Posts queued tasks to processors with room; whether any was posted.
    fn hand_out(&mut self) -> Result<bool, RuntimeError> {
        if self.state.paired() {
            return self.hand_out_paired();
        }
        let processors = self.tracks.len();
        let mut given = 0;
        'passes: for pass in 0..Mailbox::DEPTH {
            for i in 0..processors {
                let q = (self.cursor + i) % processors;
                let mailbox = &self.state.mailboxes[q];
                let track = &mut self.tracks[q];
                if mailbox.assigned() - track.completed > pass {
                    continue;
                }
                let Some(entry) = self.state.tasks.get(self.next_task) else { break 'passes };
                let kind = entry.task.task_kind()?;
                let word = mailbox.assigned();
                // SAFETY: this scheduler is the rank's only one, so the only poster.
                if !unsafe { mailbox.post(self.next_task as u32) } {
                    // Only counted completions make room, so a mailbox with room has room.
                    return Err(ProtoError::Inconsistent {
                        field: "mailbox room",
                        expected: pass as u64,
                        found: (word - mailbox.completed()) as u64,
                    }
                    .into());
                }
                track.kinds[(word % 2) as usize] = Some(kind);
                self.next_task += 1;
                given += 1;
            }
        }
        self.cursor = (self.cursor + given) % processors;
        Ok(given > 0)
    }
}

impl Scheduler<'_> {
    /// Words outstanding in processor `q`'s mailbox, as far as this scheduler has counted.
    fn outstanding(&self, q: usize) -> u32 {
        self.state.mailboxes[q].assigned() - self.tracks[q].completed
    }

    /// Of `0..n`, scanned from `from`: the candidate whose `busy` is lowest and below
    /// [`Mailbox::DEPTH`] (room), the nearest to `from` among equals.
    fn least_busy(n: usize, from: usize, busy: impl Fn(usize) -> u32) -> Option<usize> {
        (0..n)
            .map(|i| (from + i) % n)
            .filter(|&u| busy(u) < Mailbox::DEPTH)
            .min_by_key(|&u| (busy(u), (u + n - from) % n))
    }

    /// Posts `word` (a task index, maybe with [`PAIR_BIT`]) for a task of `kind` to processor
    /// `q`, which has room.
    fn post(&mut self, q: usize, word: u32, kind: TaskKind) -> Result<(), RuntimeError> {
        let mailbox = &self.state.mailboxes[q];
        let track = &mut self.tracks[q];
        let a = mailbox.assigned();
        // SAFETY: this scheduler is the rank's only one, so the only poster.
        if !unsafe { mailbox.post(word) } {
            // Only counted completions make room, so a mailbox with room has room.
            return Err(ProtoError::Inconsistent {
                field: "mailbox room",
                expected: (a - track.completed) as u64,
                found: (a - mailbox.completed()) as u64,
            }
            .into());
        }
        track.kinds[(a % 2) as usize] = Some(kind);
        track.in_step = word & PAIR_BIT != 0;
        Ok(())
    }

    /// The handout of a paired layer (see [`Scheduler`]'s "Paired layers"); whether anything
    /// was posted.
    fn hand_out_paired(&mut self) -> Result<bool, RuntimeError> {
        let processors = self.tracks.len();
        let clusters = pair_clusters(processors as u32) as usize;
        let mut given = false;
        while let Some(entry) = self.state.tasks.get(self.next_task) {
            let index = self.next_task as u32;
            let kind = entry.task.task_kind()?;
            if entry.pair_head && clusters > 0 {
                let Some(second) = self.state.tasks.get(self.next_task + 1) else { break };
                let (head, second) = (entry.task, second.task);
                let same = |a: u32, b: u32| if a == b { Ok(()) } else { Err((a, b)) };
                same(kind as u32, second.kind)
                    .and(same(TaskKind::Gemm0 as u32, kind as u32))
                    .and(same(head.row_tile % 2, 0))
                    .and(same(head.row_tile + 1, second.row_tile))
                    .and(same(head.col_tile, second.col_tile))
                    .and(same(head.source_rank, second.source_rank))
                    .and(same(head.local_expert, second.local_expert))
                    .map_err(|(expected, found)| ProtoError::Inconsistent {
                        field: "the two halves of a pair",
                        expected: expected as u64,
                        found: found as u64,
                    })?;
                // Both idle (0), or both one word of one pair in step (1); else no room (DEPTH).
                let room = |k: usize| {
                    let (a, b) = cluster_processors(k as u32);
                    let (a, b) = (a as usize, b as usize);
                    match (self.outstanding(a), self.outstanding(b)) {
                        (0, 0) => 0,
                        (1, 1) if self.tracks[a].in_step && self.tracks[b].in_step => 1,
                        _ => Mailbox::DEPTH,
                    }
                };
                if let Some(k) = Self::least_busy(clusters, self.cluster_cursor, room) {
                    let (a, b) = cluster_processors(k as u32);
                    self.post(a as usize, index | PAIR_BIT, kind)?;
                    self.post(b as usize, (index + 1) | PAIR_BIT, kind)?;
                    self.next_task += 2;
                    self.cluster_cursor = (k + 1) % clusters;
                    given = true;
                    continue;
                }
                // No cluster can take it: its head goes solo below, its second half next.
            }
            let Some(q) = Self::least_busy(processors, self.cursor, |q| self.outstanding(q)) else {
                break;
            };
            self.post(q, index, kind)?;
            self.next_task += 1;
            self.cursor = (q + 1) % processors;
            given = true;
        }
        Ok(given)
    }
}

impl Role for Scheduler<'_> {
    fn name(&self) -> String {
        "scheduler".into()
    }

    fn poll(&mut self) -> Result<Poll, RuntimeError> {
        self.learn_bound();
        let progress = self.count_completions()?;
        if self.bound == Some(self.completed.total()) {
            let queued = self.state.tasks_queued() as u64;
            if queued != self.completed.total() {
                return Err(ProtoError::Inconsistent {
                    field: "tasks queued at termination",
                    expected: self.completed.total(),
                    found: queued,
                }
                .into());
            }
            // Every task is complete, so every mailbox has room for the stop.
            for mailbox in self.state.mailboxes.iter() {
                // SAFETY: this scheduler is the rank's only poster.
                if !unsafe { mailbox.post(STOP) } {
                    return Err(ProtoError::Inconsistent {
                        field: "mailbox words outstanding at the stop",
                        expected: 0,
                        found: (mailbox.assigned() - mailbox.completed()) as u64,
                    }
                    .into());
                }
            }
            return Ok(Poll::Done);
        }
        let posted = self.hand_out()?;
        Ok(if progress || posted { Poll::Progress } else { Poll::Idle })
    }

    /// While the bound is unknown: the dispatch signals, `seen` = packets seen so far. Then:
    /// the task completions, `seen` = tasks completed so far.
    fn awaiting(&self) -> Awaiting {
        match self.bound {
            None => Awaiting {
                awaited: format!(
                    "all {} dispatch signals (packets seen so far in `seen`)",
                    self.state.received_rows.len()
                ),
                expected_epoch: self.epoch,
                seen: self.state.packets_seen.load(Ordering::Relaxed) as u64,
            },
            Some(bound) => Awaiting {
                awaited: format!("{bound} task completions (completed so far in `seen`)"),
                expected_epoch: self.epoch,
                seen: self.completed.total(),
            },
        }
    }
}

#[cfg(all(test, not(flashdmoe_loom)))]
mod tests {
    use flashdmoe_proto::{Geometry, TaskDescriptor, TileShape};

    use super::*;
    use crate::runtime::{Mail, NO_TASK, Queued, pair_cluster};

    fn layout() -> HeapLayout {
        HeapLayout::new(Geometry {
            world: 1,
            local_experts: 1,
            tokens: 64,
            capacity: 64,
            hidden: 8,
            inter: 8,
            elem_bytes: 4,
            tile: TileShape::new(1, 8, 8),
        })
        .unwrap()
    }

    fn gemm0(row_tile: u32, col_tile: u32, pair_head: bool) -> Queued {
        let task = TaskDescriptor { kind: TaskKind::Gemm0 as u32, row_tile, col_tile, ..NO_TASK };
        Queued { task, pair_head }
    }

    fn solo(row_tile: u32) -> Queued {
        Queued {
            task: TaskDescriptor { kind: TaskKind::Gemm1 as u32, row_tile, ..NO_TASK },
            pair_head: false,
        }
    }

    /// Queues a pair: row tiles `2p` and `2p + 1` of column tile `c`, adjacent.
    fn push_pair(state: &RankState, p: u32, c: u32) {
        state.push_tasks(&[gemm0(2 * p, c, true), gemm0(2 * p + 1, c, false)]).unwrap();
    }

    fn push_solo(state: &RankState, n: u32) {
        for i in 0..n {
            state.push_tasks(&[solo(i)]).unwrap();
        }
    }

    /// The words posted to processor `q` so far that it has not taken (`taken` words taken).
    fn words(state: &RankState, q: usize, taken: u32) -> Vec<Mail> {
        let mailbox = &state.mailboxes[q];
        (taken..mailbox.assigned()).map(|w| mailbox.take(w).unwrap()).collect()
    }

    fn outstanding(state: &RankState) -> Vec<u32> {
        state.mailboxes.iter().map(|m| m.assigned() - m.completed()).collect()
    }

    #[test]
    fn a_pair_goes_to_one_clusters_two_processors_in_one_poll() {
        let layout = layout();
        let state = RankState::new(&layout, 5).unwrap().with_pairs(true);
        let mut scheduler = Scheduler::new(&layout, &state, 1);
        push_pair(&state, 0, 0);
        assert!(scheduler.hand_out().unwrap());
        assert_eq!(outstanding(&state), [0, 1, 1, 0, 0]);
        assert_eq!(words(&state, 1, 0), [Mail::Pair(0)]);
        assert_eq!(words(&state, 2, 0), [Mail::Pair(1)]);
        // Three more pairs: the idle cluster 1 first, then clusters 0 and 1 again (one
        // outstanding each), round robin; the heads always to processor 2k + 1.
        for p in 1..4 {
            push_pair(&state, p, 0);
        }
        assert!(scheduler.hand_out().unwrap());
        assert_eq!(outstanding(&state), [0, 2, 2, 2, 2]);
        assert_eq!(words(&state, 1, 0), [Mail::Pair(0), Mail::Pair(4)]);
        assert_eq!(words(&state, 2, 0), [Mail::Pair(1), Mail::Pair(5)]);
        assert_eq!(words(&state, 3, 0), [Mail::Pair(2), Mail::Pair(6)]);
        assert_eq!(words(&state, 4, 0), [Mail::Pair(3), Mail::Pair(7)]);
    }

    #[test]
    fn a_pair_no_cluster_can_take_goes_out_as_two_solo_tasks_in_order() {
        let layout = layout();
        let state = RankState::new(&layout, 3).unwrap().with_pairs(true);
        let mut scheduler = Scheduler::new(&layout, &state, 1);
        // Five solo tasks: idle processors first, round robin, then second slots.
        push_solo(&state, 5);
        push_pair(&state, 0, 0);
        push_solo(&state, 1);
        assert!(scheduler.hand_out().unwrap());
        // Cluster 0 (processors 1, 2) runs unrelated tasks: the pair's head goes solo to the
        // processor with room; its second half finds none, and the handout stops there.
        assert_eq!(outstanding(&state), [2, 2, 2]);
        assert_eq!(words(&state, 2, 0).last(), Some(&Mail::Task(5)));
        assert_eq!(scheduler.next_task, 6);
        // Processor 0 finishing makes room: the second half, solo, then the task after it
        // waits for the next room.
        // SAFETY: the test plays processor 0, done with its first word.
        unsafe { state.mailboxes[0].complete(1) };
        scheduler.count_completions().unwrap();
        assert!(scheduler.hand_out().unwrap());
        assert_eq!(outstanding(&state), [2, 2, 2]);
        assert_eq!(words(&state, 0, 1).last(), Some(&Mail::Task(6)));
        assert_eq!(scheduler.next_task, 7);
    }

    #[test]
    fn a_cluster_in_step_takes_the_next_pair_and_one_running_a_solo_task_does_not() {
        let layout = layout();
        let state = RankState::new(&layout, 5).unwrap().with_pairs(true);
        let mut scheduler = Scheduler::new(&layout, &state, 1);
        // A pair to idle cluster 0 (processors 1, 2), then a solo task to processor 0 and one
        // to processor 3 (cluster 1's first).
        push_pair(&state, 0, 0);
        assert!(scheduler.hand_out().unwrap());
        push_solo(&state, 2);
        assert!(scheduler.hand_out().unwrap());
        assert_eq!(outstanding(&state), [1, 1, 1, 1, 0]);
        // The next pair: cluster 0 is in step (each runs its half of the first pair); cluster 1
        // is not (processor 3 runs a solo task), so cluster 0 takes it.
        push_pair(&state, 1, 0);
        assert!(scheduler.hand_out().unwrap());
        assert_eq!(words(&state, 1, 0), [Mail::Pair(0), Mail::Pair(4)]);
        assert_eq!(words(&state, 2, 0), [Mail::Pair(1), Mail::Pair(5)]);
        // A third pair: cluster 0 is full and cluster 1 not in step, so it goes as two solo
        // tasks to processors with room, never marked.
        push_pair(&state, 2, 0);
        assert!(scheduler.hand_out().unwrap());
        let solo: Vec<Mail> = [0, 3, 4].iter().flat_map(|&q| words(&state, q, 0)).collect();
        assert!(solo.contains(&Mail::Task(6)) && solo.contains(&Mail::Task(7)), "{solo:?}");
        assert_eq!(scheduler.next_task, 8);
    }

    #[test]
    fn a_pair_waits_until_its_second_half_is_queued() {
        let layout = layout();
        let state = RankState::new(&layout, 3).unwrap().with_pairs(true);
        let mut scheduler = Scheduler::new(&layout, &state, 1);
        state.push_tasks(&[gemm0(0, 0, true)]).unwrap();
        assert!(!scheduler.hand_out().unwrap());
        assert_eq!(outstanding(&state), [0, 0, 0]);
        state.push_tasks(&[gemm0(1, 0, false)]).unwrap();
        assert!(scheduler.hand_out().unwrap());
        assert_eq!(outstanding(&state), [0, 1, 1]);
    }

    #[test]
    fn a_pair_whose_halves_disagree_is_an_error() {
        let layout = layout();
        let state = RankState::new(&layout, 3).unwrap().with_pairs(true);
        let mut scheduler = Scheduler::new(&layout, &state, 1);
        state.push_tasks(&[gemm0(0, 0, true), gemm0(1, 1, false)]).unwrap();
        assert!(matches!(scheduler.hand_out(), Err(RuntimeError::Proto(_))));
    }

    #[test]
    fn without_a_cluster_pairs_run_as_solo_tasks() {
        let layout = layout();
        for processors in [1, 2] {
            let state = RankState::new(&layout, processors).unwrap().with_pairs(true);
            let mut scheduler = Scheduler::new(&layout, &state, 1);
            push_pair(&state, 0, 0);
            assert!(scheduler.hand_out().unwrap());
            let all: Vec<Mail> =
                (0..processors as usize).flat_map(|q| words(&state, q, 0)).collect();
            assert_eq!(all, [Mail::Task(0), Mail::Task(1)]);
        }
    }

    /// With every processor idle and only pairs queued, one poll hands out two pairs per
    /// cluster (the second once each is in step): `(n - 1) / 2` clusters for `n` processors,
    /// odd or even; the pairs after them go out as solo tasks to the processors with room.
    #[test]
    fn odd_and_even_processor_counts_give_their_cluster_counts() {
        let layout = layout();
        for (processors, clusters) in [(3, 1), (4, 1), (5, 2), (6, 2), (7, 3), (8, 3)] {
            let state = RankState::new(&layout, processors).unwrap().with_pairs(true);
            let mut scheduler = Scheduler::new(&layout, &state, 1);
            for p in 0..8 {
                push_pair(&state, p, 0);
            }
            scheduler.hand_out().unwrap();
            let mails: Vec<Vec<Mail>> =
                (0..processors as usize).map(|q| words(&state, q, 0)).collect();
            let paired = |q: usize| mails[q].iter().all(|m| matches!(m, Mail::Pair(_)));
            let solo = |q: usize| mails[q].iter().all(|m| matches!(m, Mail::Task(_)));
            assert!((1..=2 * clusters).all(|q| mails[q].len() == 2 && paired(q)));
            assert!(solo(0), "processor 0 never takes a pair: {:?}", mails[0]);
            if processors % 2 == 0 {
                assert!(solo(processors as usize - 1), "the last of an even count");
            }
            // Every processor full: the clusters' two pairs each, the solo halves elsewhere.
            let rest = 2 * (processors as usize - 2 * clusters);
            assert_eq!(scheduler.next_task, 4 * clusters + rest, "{processors} processors");
        }
    }

    /// Random mixes of pairs and solo tasks, random completions, 3 to 8 processors: every task
    /// is posted once; a pair's halves go to one cluster's processors `2k + 1` and `2k + 2` in
    /// one poll (head first); processor 0, and the last of an even count, get solo tasks only;
    /// each cluster's two mailboxes hold its pairs in one order.
    #[test]
    fn pairs_go_whole_to_one_cluster_and_processor_0_never_gets_one() {
        let layout = layout();
        for processors in 3u32..=8 {
            for seed in 0..20u64 {
                let mut rng = seed ^ (processors as u64) << 32;
                let mut next = || {
                    rng = crate::rng::mix(rng);
                    rng
                };
                let state = RankState::new(&layout, processors).unwrap().with_pairs(true);
                let mut scheduler = Scheduler::new(&layout, &state, 1);
                let mut queued = 0u32;
                let mut taken = vec![0u32; processors as usize];
                let mut posted = vec![0u32; 64];
                let mut pairs_of: Vec<Vec<u32>> = vec![Vec::new(); processors as usize];
                for _ in 0..200 {
                    // Queue a few units.
                    while queued < 60 && next() % 3 != 0 {
                        if next() % 2 == 0 {
                            push_pair(&state, queued / 2, 0);
                            queued += 2;
                        } else {
                            push_solo(&state, 1);
                            queued += 1;
                        }
                    }
                    let before: Vec<u32> = state.mailboxes.iter().map(|m| m.assigned()).collect();
                    scheduler.hand_out().unwrap();
                    // This poll's words, per processor.
                    let new: Vec<Vec<Mail>> =
                        (0..processors as usize).map(|q| words(&state, q, before[q])).collect();
                    for (q, mails) in new.iter().enumerate() {
                        for &mail in mails {
                            let (index, pair) = match mail {
                                Mail::Task(i) => (i, false),
                                Mail::Pair(i) => (i, true),
                                Mail::Stop => unreachable!(),
                            };
                            posted[index as usize] += 1;
                            let entry = state.tasks.get(index as usize).unwrap();
                            if !pair {
                                // A pair no cluster could take runs as two solo tasks.
                                continue;
                            }
                            let cluster = pair_cluster(q as u32, processors)
                                .expect("a pair half to a processor outside every cluster");
                            let (first, second) = cluster_processors(cluster);
                            let (mine, other) = if entry.pair_head {
                                assert_eq!(q as u32, first, "the head to processor 2k + 1");
                                (index, index + 1)
                            } else {
                                assert_eq!(q as u32, second, "the second half to 2k + 2");
                                (index, index - 1)
                            };
                            let peer = if q as u32 == first { second } else { first };
                            assert!(
                                new[peer as usize].contains(&Mail::Pair(other)),
                                "pair {mine}/{other}: both halves in one poll"
                            );
                            pairs_of[q].push(mine.min(other));
                        }
                    }
                    // Random completions.
                    for (mailbox, taken) in state.mailboxes.iter().zip(&mut taken) {
                        if *taken < mailbox.assigned() && next() % 2 == 0 {
                            *taken += 1;
                            // SAFETY: the test plays the processor, done with the word.
                            unsafe { mailbox.complete(*taken) };
                        }
                    }
                    scheduler.count_completions().unwrap();
                }
                assert!(posted[..queued as usize].iter().all(|&n| n <= 1), "posted twice");
                assert!(posted[queued as usize..].iter().all(|&n| n == 0));
                for k in 0..pair_clusters(processors) {
                    let (a, b) = cluster_processors(k);
                    assert_eq!(pairs_of[a as usize], pairs_of[b as usize], "cluster {k}'s order");
                }
                assert!(pairs_of[0].is_empty());
            }
        }
    }
}
