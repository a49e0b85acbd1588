//! [`Scheduler`]: hands queued tasks to processors and decides when the rank is done.

use std::collections::VecDeque;
use std::ops::Range;

use flashdmoe_proto::{HeapLayout, ProtoError, TaskCounts, TaskKind};

use super::{
    Awaiting, Mailbox, PAIR_BIT, Poll, RankState, Role, RuntimeError, STOP, cluster_processors,
    pair_clusters,
};
use crate::sync::Ordering;

/// What the scheduler remembers of one processor: the words posted to it (by the waves too:
/// the scheduler never reads `assigned` back, which the processor's self-post also writes),
/// the completions it has counted, and the kind of each outstanding word, oldest first.
#[derive(Clone, Debug, Default)]
struct Track {
    assigned: u32,
    completed: u32,
    kinds: VecDeque<TaskKind>,
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
/// `handout_paired` (`scheduler.cuh`; docs/dev/paired-tasks.md), which keeps each cluster's
/// two processors in step while they run GEMM0 tasks. The queue goes out in order:
/// * A GEMM0 task goes out in a *unit* of two entries where it can: a *pair* (an entry marked
///   as a pair's head and the entry after it, row tiles `2p` and `2p + 1` of one packet's
///   column tile; both words marked with [`PAIR_BIT`]), or *twins* (it and the next queued
///   entry, a GEMM0 task that heads no pair: in practice the next tile of the same packet,
///   about as long). Otherwise (the next entry not queued yet, a GEMM1 task, or a pair's
///   head) it is a unit of one. A pair waits until its second half is queued.
/// * A unit goes to a *place*: a cluster ([`pair_clusters`]: processors `2k + 1` and
///   `2k + 2`), or an unpaired processor (0, and the last of an even count). A cluster has
///   room when both its processors do, and counts as busy as the busier of the two; an
///   unpaired processor takes a unit only when it has nothing outstanding (both entries then
///   fit in its two slots). The least busy place with room, nearest a cursor of its own, takes
///   the unit: the head (or first twin) to `2k + 1`, the second to `2k + 2`; a unit of one to
///   the less busy of the two; both entries of a unit to an unpaired processor, a pair there
///   as two solo tasks. So a cluster's processors start each unit together, and a pair's
///   halves seldom wait for each other at the rendezvous (perf-notes v43).
/// * Every other task (GEMM1, Combine) goes out as in an unpaired layer: to the processor
///   with the fewest words outstanding (at most one), nearest the cursor.
/// * A unit that cannot go ends the poll's handout: nothing queued after it is posted before
///   it, so the queue is handed out in order. Since a pair reaches both mailboxes in one poll
///   and each mailbox is FIFO, a cluster's two processors meet its pairs in the same order
///   (their rendezvous in [`Processor`](super::Processor) cannot deadlock).
/// * With no cluster (fewer than 3 processors) every task goes out as in an unpaired layer,
///   pairs as two solo tasks.
///
/// The kernel walks the ready entries 64 at a time, so a unit may split at a window's end
/// where this model would pair or twin it: a difference of speed, never of correctness.
#[derive(Debug)]
pub struct Scheduler<'a> {
    layout: &'a HeapLayout,
    state: &'a RankState,
    epoch: u32,
    bound: Option<u64>,
    completed: TaskCounts,
    next_task: usize,
    cursor: usize,
    /// Paired layers: where the next search for a place (a cluster or an unpaired
    /// processor) starts.
    place_cursor: usize,
    tracks: Vec<Track>,
    /// The queue entries the waves posted ([`Waves`](super::Waves)): never handed out.
    preposted: [Range<usize>; 3],
}

impl<'a> Scheduler<'a> {
    /// The scheduler of a rank whose forward runs at `epoch` (raw value, for reports). It
    /// starts with the waves' words counted as posted ([`RankState::post_waves`]): processor
    /// `q`'s GEMM0, GEMM1 and combine where `q` is below each wave's count.
    pub fn new(layout: &'a HeapLayout, state: &'a RankState, epoch: u32) -> Self {
        let waves = state.waves();
        let tracks = (0..state.processors())
            .map(|q| {
                let kinds: VecDeque<TaskKind> = [
                    (waves.first, TaskKind::Gemm0),
                    (waves.second, TaskKind::Gemm1),
                    (waves.third, TaskKind::Combine),
                ]
                .into_iter()
                .filter(|&(n, _)| q < n)
                .map(|(_, kind)| kind)
                .collect();
                Track { assigned: kinds.len() as u32, completed: 0, kinds }
            })
            .collect();
        Scheduler {
            layout,
            state,
            epoch,
            bound: None,
            completed: TaskCounts::default(),
            next_task: 0,
            cursor: 0,
            place_cursor: 0,
            tracks,
            preposted: waves.preposted(),
        }
    }

    /// The next queue entry to hand out, past the waves' entries.
    fn skip_preposted(&mut self) {
        for r in &self.preposted {
            if r.contains(&self.next_task) {
                self.next_task = r.end;
            }
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
                let kind = track.kinds.pop_front().ok_or(ProtoError::Inconsistent {
                    field: "mailbox completions",
                    expected: track.assigned as u64,
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
                if self.outstanding(q) > pass {
                    continue;
                }
                self.skip_preposted();
                let Some(entry) = self.state.tasks.get(self.next_task) else { break 'passes };
                let kind = entry.task.task_kind()?;
                self.post(q, self.next_task as u32, kind)?;
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
        self.tracks[q].assigned - self.tracks[q].completed
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
        // SAFETY: this scheduler is the rank's only poster but for the waves, whose words
        // (a processor's self-post among them) it counted from the start: it posts only where
        // its own count, built on acquired completions, leaves room.
        if !unsafe { mailbox.post(word) } {
            // Only counted completions make room, so a mailbox with room has room.
            return Err(ProtoError::Inconsistent {
                field: "mailbox room",
                expected: (track.assigned - track.completed) as u64,
                found: (mailbox.assigned() - mailbox.completed()) as u64,
            }
            .into());
        }
        track.assigned += 1;
        track.kinds.push_back(kind);
        Ok(())
    }

    /// The handout of a paired layer (see [`Scheduler`]'s "Paired layers"); whether anything
    /// was posted.
    fn hand_out_paired(&mut self) -> Result<bool, RuntimeError> {
        let processors = self.tracks.len();
        let clusters = pair_clusters(processors as u32) as usize;
        // Places: the clusters, processor 0, and the last of an even count.
        let places = clusters + 1 + (processors - 1) % 2;
        let place = |u: usize| -> (usize, usize) {
            match u {
                u if u < clusters => {
                    let (a, b) = cluster_processors(u as u32);
                    (a as usize, b as usize)
                }
                u if u == clusters => (0, 0),
                _ => (processors - 1, processors - 1),
            }
        };
        let mut given = false;
        loop {
            self.skip_preposted();
            let Some(entry) = self.state.tasks.get(self.next_task) else { break };
            let index = self.next_task as u32;
            let kind = entry.task.task_kind()?;
            if clusters == 0 || kind != TaskKind::Gemm0 {
                let Some(q) = Self::least_busy(processors, self.cursor, |q| self.outstanding(q))
                else {
                    break;
                };
                self.post(q, index, kind)?;
                self.next_task += 1;
                self.cursor = (q + 1) % processors;
                given = true;
                continue;
            }
            let next = self.state.tasks.get(self.next_task + 1);
            let (size, pair) = if entry.pair_head {
                let Some(second) = next else { break };
                check_pair(entry.task, second.task, kind)?;
                (2, true)
            } else {
                let twin = match next {
                    Some(n) => !n.pair_head && n.task.task_kind()? == TaskKind::Gemm0,
                    None => false,
                };
                (if twin { 2 } else { 1 }, false)
            };
            // A cluster as busy as its busier processor; an unpaired processor only when idle.
            let busy = |u: usize| {
                let (a, b) = place(u);
                match (u < clusters, self.outstanding(a).max(self.outstanding(b))) {
                    (true, n) => n,
                    (false, 0) => 0,
                    (false, _) => Mailbox::DEPTH,
                }
            };
            let Some(u) = Self::least_busy(places, self.place_cursor, busy) else { break };
            let (a, b) = place(u);
            let mark = if pair && a != b { PAIR_BIT } else { 0 };
            if size == 1 {
                let q = if self.outstanding(b) < self.outstanding(a) { b } else { a };
                self.post(q, index, kind)?;
            } else {
                self.post(a, index | mark, kind)?;
                self.post(b, (index + 1) | mark, kind)?;
            }
            self.next_task += size;
            self.place_cursor = (u + 1) % places;
            given = true;
        }
        Ok(given)
    }
}

/// A pair's two halves: both GEMM0 tasks of one packet's column tile, row tiles `2p` and
/// `2p + 1`; else the disagreeing field as an error.
fn check_pair(
    head: flashdmoe_proto::TaskDescriptor,
    second: flashdmoe_proto::TaskDescriptor,
    kind: TaskKind,
) -> Result<(), RuntimeError> {
    let same = |a: u32, b: u32| if a == b { Ok(()) } else { Err((a, b)) };
    same(kind as u32, second.kind)
        .and(same(TaskKind::Gemm0 as u32, kind as u32))
        .and(same(head.row_tile % 2, 0))
        .and(same(head.row_tile + 1, second.row_tile))
        .and(same(head.col_tile, second.col_tile))
        .and(same(head.source_rank, second.source_rank))
        .and(same(head.local_expert, second.local_expert))
        .map_err(|(expected, found)| {
            ProtoError::Inconsistent {
                field: "the two halves of a pair",
                expected: expected as u64,
                found: found as u64,
            }
            .into()
        })
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
        // Three more pairs: the idle cluster 1 first, then idle processor 0 (unpaired: the pair
        // as two solo tasks in its two slots), then cluster 0 again (one outstanding each).
        for p in 1..4 {
            push_pair(&state, p, 0);
        }
        assert!(scheduler.hand_out().unwrap());
        assert_eq!(outstanding(&state), [2, 2, 2, 1, 1]);
        assert_eq!(words(&state, 0, 0), [Mail::Task(4), Mail::Task(5)]);
        assert_eq!(words(&state, 1, 0), [Mail::Pair(0), Mail::Pair(6)]);
        assert_eq!(words(&state, 2, 0), [Mail::Pair(1), Mail::Pair(7)]);
        assert_eq!(words(&state, 3, 0), [Mail::Pair(2)]);
        assert_eq!(words(&state, 4, 0), [Mail::Pair(3)]);
    }

    #[test]
    fn gemm0_tasks_go_to_clusters_two_at_a_time_and_gemm1_tasks_one_at_a_time() {
        let layout = layout();
        let state = RankState::new(&layout, 5).unwrap().with_pairs(true);
        let mut scheduler = Scheduler::new(&layout, &state, 1);
        // Four GEMM0 tasks that head no pair: twins to cluster 0, twins to cluster 1.
        state.push_tasks(&(0..4).map(|c| gemm0(0, c, false)).collect::<Vec<_>>()).unwrap();
        assert!(scheduler.hand_out().unwrap());
        assert_eq!(outstanding(&state), [0, 1, 1, 1, 1]);
        assert_eq!(words(&state, 1, 0), [Mail::Task(0)]);
        assert_eq!(words(&state, 2, 0), [Mail::Task(1)]);
        assert_eq!(words(&state, 3, 0), [Mail::Task(2)]);
        assert_eq!(words(&state, 4, 0), [Mail::Task(3)]);
        // Three GEMM1 tasks: one at a time, the idle processor 0 first.
        push_solo(&state, 3);
        assert!(scheduler.hand_out().unwrap());
        assert_eq!(words(&state, 0, 0), [Mail::Task(4)]);
        assert_eq!(outstanding(&state).iter().sum::<u32>(), 7);
        assert_eq!(scheduler.next_task, 7);
    }

    #[test]
    fn a_cluster_takes_a_unit_only_when_both_its_processors_have_room() {
        let layout = layout();
        let state = RankState::new(&layout, 3).unwrap().with_pairs(true);
        let mut scheduler = Scheduler::new(&layout, &state, 1);
        // Five GEMM1 tasks fill processors 0 and 1 and half of 2.
        push_solo(&state, 5);
        assert!(scheduler.hand_out().unwrap());
        assert_eq!(outstanding(&state), [2, 2, 1]);
        // GEMM0 twins: cluster 0 (processors 1, 2) is as busy as processor 1, full; processor 0
        // is not idle. Nothing goes, though processor 2 has room.
        state.push_tasks(&[gemm0(0, 0, false), gemm0(0, 1, false)]).unwrap();
        assert!(!scheduler.hand_out().unwrap());
        // Processor 1 finishes a task: both have room, and the twins go out together.
        // SAFETY: the test plays processor 1, done with its first word.
        unsafe { state.mailboxes[1].complete(1) };
        scheduler.count_completions().unwrap();
        assert!(scheduler.hand_out().unwrap());
        assert_eq!(outstanding(&state), [2, 2, 2]);
        assert_eq!(words(&state, 1, 1).last(), Some(&Mail::Task(5)));
        assert_eq!(words(&state, 2, 0).last(), Some(&Mail::Task(6)));
    }

    #[test]
    fn a_gemm0_task_before_a_gemm1_task_goes_alone_to_the_less_busy_of_a_cluster() {
        let layout = layout();
        let state = RankState::new(&layout, 3).unwrap().with_pairs(true);
        let mut scheduler = Scheduler::new(&layout, &state, 1);
        // Processor 1 busy, then a GEMM0 task followed by a GEMM1 task: a unit of one.
        push_solo(&state, 2);
        assert!(scheduler.hand_out().unwrap());
        assert_eq!(outstanding(&state), [1, 1, 0]);
        state.push_tasks(&[gemm0(0, 0, false), solo(9)]).unwrap();
        assert!(scheduler.hand_out().unwrap());
        assert_eq!(words(&state, 2, 0).first(), Some(&Mail::Task(2)));
        assert_eq!(scheduler.next_task, 4);
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
    /// cluster: `(n - 1) / 2` clusters for `n` processors, odd or even; processor 0 (and the
    /// last of an even count) takes one pair as two solo tasks while idle.
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
            // Every processor full: the clusters' two pairs each, a pair's solo halves elsewhere.
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
                    // Queue a few units: pairs, GEMM1 tasks, GEMM0 tasks heading no pair.
                    while queued < 60 && next() % 3 != 0 {
                        match next() % 3 {
                            0 => {
                                push_pair(&state, queued / 2, 0);
                                queued += 2;
                            }
                            1 => {
                                push_solo(&state, 1);
                                queued += 1;
                            }
                            _ => {
                                state.push_tasks(&[gemm0(0, queued, false)]).unwrap();
                                queued += 1;
                            }
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
                                // Solo: GEMM1 and unpaired GEMM0 tasks, and a pair given to an
                                // unpaired processor.
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
