//! The per-rank runtime: dispatch, scheduler, subscribers and processors, written once.
//!
//! A rank's forward, in the order every backend follows (the simulator runs it on CPU threads,
//! the CUDA kernel mirrors it with the same `flashdmoe-proto` constants):
//!
//! 1. [`dispatch()`]: reset this rank's counters, then for every `(owner, local expert)` copy the
//!    routed rows (only those) into the owner's dispatch region and release-store the
//!    epoch-stamped dispatch signal, also for zero-row packets.
//! 2. The roles run until the rank's exact task bound is met:
//!    * [`Subscriber`]s watch this rank's dispatch signals and turn each arrived packet into its
//!      GEMM0 tasks (reporting the row count for the bound), and watch the return signals of
//!      every tile this rank is owed, counting arrivals per output column tile and emitting that
//!      column's Combine tasks when it is complete;
//!    * the [`Scheduler`] posts queued tasks' indices to processors with room in their two-slot
//!      [`Mailbox`]es (idle ones first), counts completions, and once completions reach the
//!      bound ([`TaskCounts::for_rank`], known when every dispatch signal has arrived) posts a
//!      [`STOP`] to every mailbox;
//!    * [`Processor`]s take one task at a time from their mailbox and run it through a
//!      [`TileExecutor`]; a GEMM0 bumps its row
//!      tile's counter and the one completing the row tile queues its GEMM1 tasks; a GEMM1's
//!      output is followed by a release-store of its return signal in the source's heap.
//!
//! ## The waves
//!
//! On a world of one rank, the rank may queue its packets' GEMM0 tasks before the roles run
//! and post up to three waves of tasks into the mailboxes itself ([`RankState::post_waves`],
//! [`Waves`]; the kernel's OS block): processors then take tasks whose inputs are not ready
//! yet and wait for them (a row-tile counter, a combine's ready flag) before reading them.
//!
//! ## The streamed placement
//!
//! On a world of one rank the rank may instead place its rows as the forward runs
//! ([`RankState::stream_placement`], [`Placer`]; docs/dev/streamed-placement.md): placers take
//! chunks of tokens in order, find their rows' positions by looking back over the earlier
//! chunks' counts, put the rows, and the placer that completes a row tile queues its GEMM0
//! tasks; the last chunk publishes the packets' row counts (the task bound). The positions
//! are [`dispatch()`]'s, so the output is bitwise the same; only when the first tasks can
//! start changes.
//!
//! ## Paired GEMM0 tasks
//!
//! A rank's state may run its layer *paired* ([`RankState::with_pairs`]; the kernel's
//! `FDM_PAIRS`, docs/dev/paired-tasks.md): processors `2k + 1` and `2k + 2` form cluster `k`
//! ([`pair_clusters`]; processor 0, whose 2-CTA partner is the OS block, and the last processor
//! of an even count take solo tasks only). A packet's GEMM0 tasks are then queued adjacent, in
//! [`gemm0_tile_paired`](flashdmoe_proto::graph::gemm0_tile_paired)'s order, each column
//! tile's row tiles `2p` and `2p + 1` side by side as a *pair*; the [`Scheduler`] posts a pair
//! to both processors of one cluster in one poll (or stops its handout there), and each
//! [`Processor`] meets its cluster peer before running its half. Everything else is as above.
//!
//! Roles are non-blocking state machines ([`Role::poll`]); [`drive`] runs one or several of
//! them on the calling thread with backoff and a deadline. The simulator gives each role its
//! own thread; the loom tests fold several roles onto one thread to stay within loom's thread
//! limit. Every wait has a deadline: once nobody sharing the rank's [`Heartbeat`] (every rank
//! of the world, in the simulator) has made progress for the forward's timeout, the waiting
//! role stops with a [`TimeoutReport`] naming the rank, the role, what it waited for and what
//! it saw, and the rank's other roles stop at once with theirs.
//!
//! ## Invariants
//!
//! * Memory ordering: data is written before the signal announcing it is release-stored, and
//!   read only after that signal is acquire-loaded; row-tile and combine counters are
//!   `AcqRel` read-modify-writes, so the role that completes a counter sees every write the
//!   other contributors made. Queue pushes are release, pops acquire; a mailbox post is a
//!   release store of `assigned` taken with an acquire load, a completion a release store of
//!   `completed` the scheduler acquires before reusing the slot. The chain "GEMM0 writes ->
//!   counter -> task queue -> mailbox -> GEMM1 reads" is therefore ordered, and so is "GEMM1
//!   put -> return signal -> subscriber -> combine counter -> queue -> mailbox -> Combine
//!   reads" (checked with loom).
//! * Signals are never cleared: a signal counts only when its epoch is the current one.
//!   Counters are local and reset by [`dispatch()`] before this rank publishes anything, i.e.
//!   before any task of the new epoch can touch them.
//! * Exactly-once: each task is created once (a packet's GEMM0s when its signal is first seen,
//!   a row tile's GEMM1s by the single GEMM0 completing its counter, a column's Combines by the
//!   single arrival completing its counter), queued once and posted to one processor once.
//! * The runtime knows nothing of how bytes move or how tiles are computed: that is the
//!   [`SymmetricHeap`] and the [`TileExecutor`] of the backend.

use std::fmt;
use std::time::Duration;

use flashdmoe_proto::{Epoch, HeapLayout, NO_OFFSET, ProtoError, TaskCounts, TaskDescriptor};

use crate::backend::{BackendError, TimeoutReport};
use crate::sync::{AtomicU32, Backoff, Deadline, Heartbeat, Ordering};

mod dispatch;
mod heap;
#[cfg(all(test, flashdmoe_loom))]
mod loom_tests;
mod mailbox;
mod pairs;
mod placer;
mod processor;
mod queue;
mod scheduler;
mod subscriber;
mod waves;

pub use dispatch::{DispatchStats, dispatch};
pub use heap::SymmetricHeap;
pub use mailbox::{Mail, Mailbox, PAIR_BIT, STOP};
pub use pairs::{cluster_processors, pair_cluster, pair_clusters, pair_peer};
pub use placer::{PADDED, Placement, Placer, Slots};
pub use processor::{Processor, TileExecutor};
pub use queue::Log;
pub use scheduler::Scheduler;
pub use subscriber::Subscriber;
pub use waves::Waves;

/// Why a role (and so the rank's forward) stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A role made no progress for the forward's timeout.
    Timeout(TimeoutReport),
    /// A protocol computation or decode failed (e.g. a signal announcing more rows than the
    /// packet capacity).
    Proto(ProtoError),
    /// More entries were pushed into a queue than the protocol bound allows (a corrupt signal or
    /// a bug; never a legal forward).
    QueueFull {
        /// Which queue.
        queue: &'static str,
        /// Its capacity.
        capacity: usize,
    },
    /// The tile executor failed.
    Executor(String),
    /// Another role of this rank failed first, so this one stopped.
    Aborted,
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(report) => write!(f, "timeout: {report}"),
            Self::Proto(e) => write!(f, "protocol: {e}"),
            Self::QueueFull { queue, capacity } => {
                write!(f, "{queue} overflowed its capacity of {capacity} entries")
            }
            Self::Executor(e) => write!(f, "tile executor: {e}"),
            Self::Aborted => write!(f, "aborted after another role of the rank failed"),
        }
    }
}

impl std::error::Error for RuntimeError {}

impl From<ProtoError> for RuntimeError {
    fn from(e: ProtoError) -> Self {
        RuntimeError::Proto(e)
    }
}

impl From<RuntimeError> for BackendError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::Timeout(report) => BackendError::Timeout(report),
            RuntimeError::Proto(e) => BackendError::Proto(e),
            other => BackendError::Device(other.to_string()),
        }
    }
}

/// What one [`Role::poll`] achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    /// Something changed; poll again soon.
    Progress,
    /// Nothing to do yet (waiting on a signal, a task or a mailbox).
    Idle,
    /// The role has finished this forward.
    Done,
}

/// What an idle role is waiting for, for the [`TimeoutReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Awaiting {
    /// The signal or condition (e.g. `"dispatch signal from rank 1 for local expert 0"`).
    pub awaited: String,
    /// The epoch the awaited signal must carry.
    pub expected_epoch: u32,
    /// The value last seen (a raw signal word, or a count; documented by each role).
    pub seen: u64,
}

/// A runtime role: a non-blocking state machine polled by [`drive`].
pub trait Role {
    /// Name for diagnostics (`"scheduler"`, `"subscriber 0"`, `"processor 3"`).
    fn name(&self) -> String;
    /// Does whatever can be done now without waiting.
    fn poll(&mut self) -> Result<Poll, RuntimeError>;
    /// What the role is waiting for (meaningful while it is not done).
    fn awaiting(&self) -> Awaiting;
}

/// A placeholder descriptor for task-queue slots that hold no task yet (never handed out).
pub(crate) const NO_TASK: TaskDescriptor = TaskDescriptor {
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

/// An entry of the rank's task queue: the task, and whether it heads a pair (paired layers
/// only: the entry after it is the pair's second half; the kernel's `OsShared::pair_head`
/// bit, published here with the entry itself).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Queued {
    pub(crate) task: TaskDescriptor,
    pub(crate) pair_head: bool,
}

/// Per-rank, per-forward shared state of the roles: the task queue, the processors' mailboxes,
/// the row counts learned from dispatch signals, the pair rendezvous counts and the abort flag.
/// Created fresh for every forward (nothing in it carries over).
#[derive(Debug)]
pub struct RankState {
    tasks: Log<Queued>,
    mailboxes: Box<[Mailbox]>,
    /// Whether the layer runs paired GEMM0 tasks ([`RankState::with_pairs`]).
    paired: bool,
    /// Per processor: the pairs it has reached (its half taken from the mailbox; the
    /// rendezvous of [`Processor`] with its cluster peer).
    pairs_reached: Box<[AtomicU32]>,
    received_rows: Box<[AtomicU32]>,
    packets_seen: AtomicU32,
    /// The waves posted before the roles ran ([`RankState::post_waves`]).
    waves: Waves,
    /// Whether every packet was queued before the roles ran ([`RankState::post_waves`]), or
    /// is placed by the rank's [`Placer`]s ([`RankState::stream_placement`]).
    in_place: bool,
    /// The streamed placement's board ([`RankState::stream_placement`]).
    placement: Option<Placement>,
    /// [`RUNNING`], [`ABORTED`] or [`EXPIRED`]: whether the rank's roles must stop.
    stop: AtomicU32,
    heartbeat: std::sync::Arc<Heartbeat>,
}

/// [`RankState`]'s stop word: the roles run.
const RUNNING: u32 = 0;
/// A role failed; the others stop with [`RuntimeError::Aborted`].
const ABORTED: u32 = 1;
/// A role timed out; the others stop with their own timeout reports.
const EXPIRED: u32 = 2;

impl RankState {
    /// State for a rank with `processors` processors (at least 1) under `layout`, with a
    /// heartbeat of its own (see [`RankState::with_heartbeat`]). The task queue is sized to the
    /// most tasks any forward can give one rank (full packets from every source), so a legal
    /// forward never overflows it; its indices, which the mailboxes carry, must fit below
    /// [`PAIR_BIT`]. The layer runs unpaired ([`RankState::with_pairs`]).
    pub fn new(layout: &HeapLayout, processors: u32) -> Result<RankState, RuntimeError> {
        if processors == 0 {
            return Err(RuntimeError::Proto(ProtoError::InvalidGeometry {
                field: "processors",
                reason: "must be > 0",
            }));
        }
        let g = layout.geometry();
        let packets = g.world as u64 * g.local_experts as u64;
        let full = TaskCounts::for_rank(layout, (0..packets).map(|_| g.capacity)).total();
        let tasks = u32::try_from(full)
            .ok()
            .filter(|&n| n <= PAIR_BIT)
            .ok_or(ProtoError::Overflow { what: "task queue capacity" })?;
        Ok(RankState {
            tasks: Log::with_capacity(tasks as usize, Queued { task: NO_TASK, pair_head: false }),
            mailboxes: (0..processors).map(|_| Mailbox::new()).collect(),
            paired: false,
            pairs_reached: (0..processors).map(|_| AtomicU32::new(0)).collect(),
            received_rows: (0..packets).map(|_| AtomicU32::new(0)).collect(),
            packets_seen: AtomicU32::new(0),
            waves: Waves::default(),
            in_place: false,
            placement: None,
            stop: AtomicU32::new(RUNNING),
            heartbeat: std::sync::Arc::new(Heartbeat::new()),
        })
    }

    /// The same state beating `heartbeat`, which the backend shares between all the ranks of a
    /// world: a role then times out only when no role of any rank has made progress for the
    /// timeout (a rank waiting for a peer that is busy computing is not stuck).
    pub fn with_heartbeat(mut self, heartbeat: std::sync::Arc<Heartbeat>) -> RankState {
        self.heartbeat = heartbeat;
        self
    }

    /// The same state running the layer with paired GEMM0 tasks when `paired` (the kernel's
    /// `FDM_PAIRS`, `MoeSpec::pairs`; docs/dev/paired-tasks.md): the subscribers queue each
    /// packet's GEMM0 tasks adjacent in
    /// [`gemm0_tile_paired`](flashdmoe_proto::graph::gemm0_tile_paired)'s order with its pairs
    /// marked, the scheduler posts a pair to both processors of one cluster ([`pair_clusters`])
    /// in one poll, and each processor meets its peer before its half. With fewer than 3
    /// processors there is no cluster and pairs run as two solo tasks. Off by default.
    pub fn with_pairs(mut self, paired: bool) -> RankState {
        self.paired = paired;
        self
    }

    /// Whether the layer runs paired GEMM0 tasks ([`RankState::with_pairs`]).
    pub fn paired(&self) -> bool {
        self.paired
    }

    /// Number of processors.
    pub fn processors(&self) -> u32 {
        self.mailboxes.len() as u32
    }

    /// Tasks queued so far in this forward.
    pub fn tasks_queued(&self) -> usize {
        self.tasks.len()
    }

    /// Tells every role of the rank to stop (another role failed).
    pub fn abort(&self) {
        self.stop.store(ABORTED, Ordering::Relaxed);
    }

    /// Whether [`RankState::abort`] was called.
    pub fn aborted(&self) -> bool {
        self.stop.load(Ordering::Relaxed) == ABORTED
    }

    /// Tells every role of the rank to stop with its own timeout report (a role timed out),
    /// unless the rank was aborted.
    fn expire(&self) {
        let _ = self.stop.compare_exchange(RUNNING, EXPIRED, Ordering::Relaxed, Ordering::Relaxed);
    }

    pub(crate) fn push_task(&self, task: TaskDescriptor) -> Result<(), RuntimeError> {
        self.tasks
            .push(Queued { task, pair_head: false })
            .map_err(|capacity| RuntimeError::QueueFull { queue: "task queue", capacity })
    }

    /// Queues `tasks` at adjacent indices (a packet's GEMM0 tasks in a paired layer, so that
    /// each pair's halves sit side by side; the kernel's `claim` and `publish`).
    pub(crate) fn push_tasks(&self, tasks: &[Queued]) -> Result<(), RuntimeError> {
        self.tasks
            .push_all(tasks)
            .map(|_| ())
            .map_err(|capacity| RuntimeError::QueueFull { queue: "task queue", capacity })
    }
}

/// The references every role of one rank shares during one forward.
#[derive(Debug)]
pub struct RankContext<'a, H> {
    /// This rank.
    pub rank: u32,
    /// This forward's epoch.
    pub epoch: Epoch,
    /// The heap layout (identical on every rank).
    pub layout: &'a HeapLayout,
    /// The world's symmetric heap as this rank sees it.
    pub heap: &'a H,
    /// This forward's shared role state.
    pub state: &'a RankState,
}

impl<H> Clone for RankContext<'_, H> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<H> Copy for RankContext<'_, H> {}

/// Polls `roles` (all of one rank) on the calling thread until every one is done, backing off
/// while none makes progress.
///
/// Progress of any of them beats the rank's [`Heartbeat`]; the deadline restarts whenever the
/// heartbeat moved (this thread's roles or anyone else sharing it made progress). Returns the
/// first error of any role (after raising the rank's abort flag so the rank's other threads
/// stop too), [`RuntimeError::Aborted`] if another thread aborted the rank, or a
/// [`RuntimeError::Timeout`] naming the first unfinished role once the heartbeat has not moved
/// for `timeout`. A timeout does not abort the rank, it expires it: the rank's other roles stop
/// at their next idle poll with their own timeout reports, and the caller picks the most
/// telling one (subscribers, which wait on other ranks, name the missing signal).
pub fn drive(
    rank: u32,
    state: &RankState,
    timeout: Duration,
    roles: &mut [&mut dyn Role],
) -> Result<(), RuntimeError> {
    let mut done = vec![false; roles.len()];
    let mut backoff = Backoff::new();
    let heartbeat = &*state.heartbeat;
    let mut beats = heartbeat.count();
    let mut deadline = Deadline::after(timeout);
    loop {
        let mut progress = false;
        for (role, done) in roles.iter_mut().zip(done.iter_mut()).filter(|(_, d)| !**d) {
            match role.poll() {
                Ok(Poll::Progress) => progress = true,
                Ok(Poll::Idle) => {}
                Ok(Poll::Done) => {
                    *done = true;
                    progress = true;
                }
                Err(e) => {
                    state.abort();
                    return Err(e);
                }
            }
        }
        if done.iter().all(|&d| d) {
            return Ok(());
        }
        if progress {
            heartbeat.beat();
            beats = heartbeat.count();
            backoff.reset();
            deadline = Deadline::after(timeout);
            continue;
        }
        match state.stop.load(Ordering::Relaxed) {
            ABORTED => return Err(RuntimeError::Aborted),
            EXPIRED => return Err(timeout_report(rank, roles, &done)),
            _ => {}
        }
        let now = heartbeat.count();
        if now != beats {
            beats = now;
            deadline = Deadline::after(timeout);
        } else if deadline.expired() {
            state.expire();
            return Err(timeout_report(rank, roles, &done));
        }
        backoff.snooze();
    }
}

/// The timeout report of the first unfinished role of `roles`.
fn timeout_report(rank: u32, roles: &[&mut dyn Role], done: &[bool]) -> RuntimeError {
    let waiting = roles.iter().zip(done).find(|(_, d)| !**d).map(|(r, _)| r);
    let role = waiting.expect("an unfinished role exists");
    let Awaiting { awaited, expected_epoch, seen } = role.awaiting();
    RuntimeError::Timeout(TimeoutReport { rank, role: role.name(), awaited, expected_epoch, seen })
}

#[cfg(all(test, not(flashdmoe_loom)))]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use flashdmoe_proto::{Geometry, TileShape};

    use super::*;

    /// A role that makes progress (about a millisecond of "work" per poll) until `busy_until`,
    /// then waits forever.
    struct Scripted {
        name: &'static str,
        busy_until: Instant,
    }

    impl Role for Scripted {
        fn name(&self) -> String {
            self.name.into()
        }

        fn poll(&mut self) -> Result<Poll, RuntimeError> {
            if Instant::now() < self.busy_until {
                std::thread::sleep(Duration::from_millis(1));
                return Ok(Poll::Progress);
            }
            Ok(Poll::Idle)
        }

        fn awaiting(&self) -> Awaiting {
            Awaiting {
                awaited: format!("what {} waits for", self.name),
                expected_epoch: 1,
                seen: 0,
            }
        }
    }

    fn state() -> RankState {
        let layout = HeapLayout::new(Geometry {
            world: 1,
            local_experts: 1,
            tokens: 1,
            capacity: 1,
            hidden: 8,
            inter: 8,
            elem_bytes: 4,
            tile: TileShape::new(2, 8, 8),
        })
        .unwrap();
        RankState::new(&layout, 1).unwrap()
    }

    /// Drives `role` on its own thread; returns its result and when it ended.
    fn spawn<'a>(
        s: &'a std::thread::Scope<'a, '_>,
        state: &'a RankState,
        timeout: Duration,
        mut role: Scripted,
    ) -> std::thread::ScopedJoinHandle<'a, (Result<(), RuntimeError>, Instant)> {
        s.spawn(move || (drive(0, state, timeout, &mut [&mut role]), Instant::now()))
    }

    fn timed_out_role(result: &Result<(), RuntimeError>) -> &str {
        match result {
            Err(RuntimeError::Timeout(report)) => &report.role,
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    #[test]
    fn a_wait_does_not_time_out_while_a_rank_sharing_the_heartbeat_progresses() {
        let heartbeat = Arc::new(Heartbeat::new());
        let (a, b) = (state().with_heartbeat(heartbeat.clone()), state().with_heartbeat(heartbeat));
        let start = Instant::now();
        let busy_until = start + Duration::from_millis(400);
        let timeout = Duration::from_millis(100);
        let ((waited, waiter_end), (_, worker_end)) = std::thread::scope(|s| {
            let waiter = spawn(s, &a, timeout, Scripted { name: "waiter", busy_until: start });
            let worker = spawn(s, &b, timeout, Scripted { name: "worker", busy_until });
            (waiter.join().unwrap(), worker.join().unwrap())
        });
        assert_eq!(timed_out_role(&waited), "waiter");
        // Not before the other rank stopped making progress, and then about `timeout` later.
        assert!(waiter_end >= busy_until, "timed out {:?} early", busy_until - waiter_end);
        assert!(waiter_end < worker_end + Duration::from_secs(2));
    }

    #[test]
    fn without_a_shared_heartbeat_ranks_time_out_on_their_own() {
        let (a, b) = (state(), state());
        let start = Instant::now();
        let busy_until = start + Duration::from_millis(1500);
        let timeout = Duration::from_millis(50);
        let (waited, waiter_end) = std::thread::scope(|s| {
            let waiter = spawn(s, &a, timeout, Scripted { name: "waiter", busy_until: start });
            let _worker = spawn(s, &b, timeout, Scripted { name: "worker", busy_until });
            waiter.join().unwrap()
        });
        assert_eq!(timed_out_role(&waited), "waiter");
        assert!(waiter_end < busy_until, "the waiter waited for another rank's progress");
    }

    #[test]
    fn a_timeout_stops_the_ranks_other_roles_at_once_with_their_own_reports() {
        // The patient role would wait 60 s on its own; the impatient one's timeout expires the
        // rank, and the patient one stops at its next poll, reporting what it waited for.
        let state = state();
        let start = Instant::now();
        let (impatient, patient) = std::thread::scope(|s| {
            let patient = spawn(
                s,
                &state,
                Duration::from_secs(60),
                Scripted { name: "patient", busy_until: start },
            );
            let impatient = spawn(
                s,
                &state,
                Duration::from_millis(50),
                Scripted { name: "impatient", busy_until: start },
            );
            (impatient.join().unwrap(), patient.join().unwrap())
        });
        assert_eq!(timed_out_role(&impatient.0), "impatient");
        assert_eq!(timed_out_role(&patient.0), "patient");
        assert!(patient.1 - start < Duration::from_secs(5), "took {:?}", patient.1 - start);
        assert!(!state.aborted(), "a timeout is not an abort");
    }

    #[test]
    fn an_abort_wins_over_an_expiry() {
        let state = state();
        state.abort();
        state.expire();
        let mut role = Scripted { name: "r", busy_until: Instant::now() };
        let r = drive(0, &state, Duration::from_secs(60), &mut [&mut role]);
        assert!(matches!(r, Err(RuntimeError::Aborted)), "{r:?}");
    }
}
