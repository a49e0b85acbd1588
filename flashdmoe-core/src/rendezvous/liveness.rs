//! The liveness mesh at run time: a watcher thread per process that notices a peer's death.
//!
//! After the store's rendezvous each process holds one connection to every other (a full
//! mesh, built by `mesh.rs`): no relay, so the death of any rank, rank 0 included, is seen
//! directly by every survivor. On each link the only bytes are single-byte tokens, a
//! heartbeat or a goodbye (one byte cannot be written in part). The watcher thread wakes
//! every `tick`, reads every link (non-blocking) and sends heartbeats every
//! `heartbeat_interval`.
//!
//! Invariants:
//! * A peer is *dead* when its link ends (end of file, reset, or any error) without a goodbye,
//!   when it sends a byte that is not a token, or when nothing came from it for
//!   `heartbeat_timeout`. A peer that said goodbye has *left*, and is never reported dead.
//! * The dead set only grows, and only the watcher thread writes it: the cause is stored
//!   before the bit is release-set, so [`Liveness::check`], one acquire load, sees both.
//! * Closing says goodbye to every peer, half-closes, then reads until each peer has closed
//!   its end (bounded by `linger`), so no unread byte turns our close into a reset that could
//!   race the goodbye. A process dropping its [`Liveness`] while panicking does not say
//!   goodbye: a panic is a failure, and its peers see it as a death.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::MAX_PROCESSES;
use super::error::{Gone, PeerGone, RendezvousError};
use super::mesh;
use super::store::Store;

/// The token a link carries every heartbeat interval.
const BEAT: u8 = 0xB7;
/// The token a link carries once, before a clean close.
const BYE: u8 = 0xB1;

const RUN: u8 = 0;
const CLOSE: u8 = 1;
const ABANDON: u8 = 2;

/// How the liveness mesh is built and watched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LivenessOptions {
    /// How long building the mesh may take (after the address all-gather). Default 60 s.
    pub setup_timeout: Duration,
    /// How often the watcher reads the links: the detection latency of a closed link.
    /// Default 5 ms.
    pub tick: Duration,
    /// How often a heartbeat is sent. Default 250 ms.
    pub heartbeat_interval: Duration,
    /// Silence after which a peer is dead (a host gone without closing its sockets). Default
    /// 5 s: generous, since a loaded host may not schedule a peer's watcher for a while.
    pub heartbeat_timeout: Duration,
    /// How long a clean close waits for peers to acknowledge the goodbye. Default 1 s.
    pub linger: Duration,
}

impl Default for LivenessOptions {
    fn default() -> Self {
        LivenessOptions {
            setup_timeout: Duration::from_secs(60),
            tick: Duration::from_millis(5),
            heartbeat_interval: Duration::from_millis(250),
            heartbeat_timeout: Duration::from_secs(5),
            linger: Duration::from_secs(1),
        }
    }
}

/// A set of ranks (below [`MAX_PROCESSES`]), as a bitmask.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RankSet(u64);

impl RankSet {
    /// The set of the mask's bits.
    pub fn from_bits(bits: u64) -> RankSet {
        RankSet(bits)
    }

    /// The mask: bit `r` for rank `r`.
    pub fn bits(self) -> u64 {
        self.0
    }

    /// Whether `rank` is in the set.
    pub fn contains(self, rank: usize) -> bool {
        rank < MAX_PROCESSES && self.0 & (1 << rank) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The ranks, ascending.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..MAX_PROCESSES).filter(move |&r| self.contains(r))
    }
}

impl FromIterator<usize> for RankSet {
    /// Ranks at or above [`MAX_PROCESSES`] are ignored.
    fn from_iter<I: IntoIterator<Item = usize>>(ranks: I) -> Self {
        RankSet(ranks.into_iter().filter(|&r| r < MAX_PROCESSES).fold(0, |m, r| m | 1 << r))
    }
}

impl fmt::Debug for RankSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// What the watcher thread publishes.
#[derive(Debug)]
struct Shared {
    dead: AtomicU64,
    left: AtomicU64,
    /// Index into [`Gone::ALL`] of each dead rank's cause, written before its dead bit.
    how: [AtomicU8; MAX_PROCESSES],
    stop: AtomicU8,
}

/// A cloneable, thread-safe view of a [`Liveness`]: checks without owning the mesh. Once the
/// mesh is closed it keeps the last state.
#[derive(Clone, Debug)]
pub struct Watch {
    shared: Arc<Shared>,
}

impl Watch {
    /// `Err` naming the lowest dead rank once any peer is dead; one atomic load.
    pub fn check(&self) -> Result<(), PeerGone> {
        let dead = self.shared.dead.load(Ordering::Acquire);
        if dead == 0 {
            return Ok(());
        }
        let rank = dead.trailing_zeros() as usize;
        let how = Gone::ALL[usize::from(self.shared.how[rank].load(Ordering::Relaxed))];
        Err(PeerGone { rank, how })
    }

    /// The peers found dead so far.
    pub fn dead(&self) -> RankSet {
        RankSet(self.shared.dead.load(Ordering::Acquire))
    }

    /// The peers that said goodbye so far.
    pub fn left(&self) -> RankSet {
        RankSet(self.shared.left.load(Ordering::Acquire))
    }
}

/// This process's liveness mesh: a connection to every other process and the thread that
/// watches them. Dropping it closes it cleanly (goodbyes), except while panicking.
#[derive(Debug)]
pub struct Liveness {
    watch: Watch,
    thread: Option<JoinHandle<()>>,
}

impl Liveness {
    /// Builds the mesh through `store` (a collective: every rank calls it) and starts the
    /// watcher thread. In a world of one there is nothing to watch and no thread.
    pub fn start(store: &mut Store, opts: &LivenessOptions) -> Result<Liveness, RendezvousError> {
        let links = mesh::build(store, opts.setup_timeout)?;
        Liveness::watch_links(links, opts)
    }

    /// Starts watching established links (`(peer rank, non-blocking stream)`).
    pub(super) fn watch_links(
        links: Vec<(usize, TcpStream)>,
        opts: &LivenessOptions,
    ) -> Result<Liveness, RendezvousError> {
        let shared = Arc::new(Shared {
            dead: AtomicU64::new(0),
            left: AtomicU64::new(0),
            how: std::array::from_fn(|_| AtomicU8::new(0)),
            stop: AtomicU8::new(RUN),
        });
        let watch = Watch { shared: Arc::clone(&shared) };
        if links.is_empty() {
            return Ok(Liveness { watch, thread: None });
        }
        let now = Instant::now();
        let links =
            links.into_iter().map(|(rank, stream)| Link { rank, stream, heard: now }).collect();
        let opts = opts.clone();
        let thread = thread::Builder::new()
            .name("flashdmoe-liveness".into())
            .spawn(move || Watcher { links, shared, opts }.run())
            .map_err(|e| RendezvousError::Io {
                what: "liveness thread".into(),
                message: e.to_string(),
            })?;
        Ok(Liveness { watch, thread: Some(thread) })
    }

    /// `Err(PeerGone)` naming the lowest dead rank once any peer is dead: one atomic load, so
    /// cheap enough before every forward. Peers that left cleanly are not errors.
    pub fn check(&self) -> Result<(), PeerGone> {
        self.watch.check()
    }

    /// The peers found dead so far.
    pub fn dead(&self) -> RankSet {
        self.watch.dead()
    }

    /// The peers that said goodbye so far.
    pub fn left(&self) -> RankSet {
        self.watch.left()
    }

    /// A view for other threads or owners.
    pub fn watch(&self) -> Watch {
        self.watch.clone()
    }

    /// Says goodbye to every peer and stops the watcher (at most `linger` plus a tick).
    pub fn close(mut self) {
        self.stop(CLOSE);
    }

    /// Stops without goodbyes, as a crash would (peers report this process dead).
    #[cfg(test)]
    pub(super) fn abandon(mut self) {
        self.stop(ABANDON);
    }

    fn stop(&mut self, how: u8) {
        if let Some(thread) = self.thread.take() {
            self.watch.shared.stop.store(how, Ordering::Release);
            thread.thread().unpark();
            // The watcher does not panic; if it did, there is nothing left to stop.
            let _ = thread.join();
        }
    }
}

impl Drop for Liveness {
    fn drop(&mut self) {
        self.stop(if thread::panicking() { ABANDON } else { CLOSE });
    }
}

#[derive(Debug)]
struct Link {
    rank: usize,
    stream: TcpStream,
    /// When a byte last came from the peer.
    heard: Instant,
}

/// What became of a link after a read.
enum Outcome {
    Open,
    Left,
    Dead(Gone),
}

struct Watcher {
    links: Vec<Link>,
    shared: Arc<Shared>,
    opts: LivenessOptions,
}

impl Watcher {
    fn run(mut self) {
        let mut beat_at = Instant::now();
        loop {
            match self.shared.stop.load(Ordering::Acquire) {
                RUN => {}
                CLOSE => return self.goodbye(),
                _ => return, // ABANDON: the streams drop here, without goodbyes.
            }
            let now = Instant::now();
            let (shared, timeout) = (&self.shared, self.opts.heartbeat_timeout);
            self.links.retain_mut(|link| {
                let outcome = match read_tokens(link, now) {
                    Outcome::Open if now.duration_since(link.heard) > timeout => {
                        Outcome::Dead(Gone::Silent)
                    }
                    outcome => outcome,
                };
                match outcome {
                    Outcome::Open => return true,
                    Outcome::Left => shared.left.fetch_or(1 << link.rank, Ordering::Release),
                    Outcome::Dead(how) => {
                        let code = Gone::ALL.iter().position(|g| *g == how).unwrap_or(0);
                        shared.how[link.rank].store(code as u8, Ordering::Relaxed);
                        shared.dead.fetch_or(1 << link.rank, Ordering::Release)
                    }
                };
                false
            });
            if now >= beat_at {
                // A full send buffer (WouldBlock) skips a beat; a failed write shows up as a
                // failed read on the next tick, after any goodbye already received.
                self.links.iter_mut().for_each(|link| drop(link.stream.write(&[BEAT])));
                beat_at = now + self.opts.heartbeat_interval;
            }
            thread::park_timeout(self.opts.tick);
        }
    }

    /// Goodbye, half-close, then drain until every peer closed its end or `linger` passed.
    fn goodbye(mut self) {
        for link in &mut self.links {
            let _ = link.stream.write(&[BYE]);
            let _ = link.stream.shutdown(Shutdown::Write);
        }
        let deadline = Instant::now() + self.opts.linger;
        let mut buf = [0u8; 256];
        while !self.links.is_empty() && Instant::now() < deadline {
            self.links.retain_mut(|link| {
                loop {
                    match link.stream.read(&mut buf) {
                        Ok(0) => return false,
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => return false,
                    }
                }
            });
            thread::sleep(self.opts.tick);
        }
    }
}

/// Reads every byte the link has; a goodbye ends it (the peer sends nothing after one).
fn read_tokens(link: &mut Link, now: Instant) -> Outcome {
    let mut buf = [0u8; 256];
    loop {
        match link.stream.read(&mut buf) {
            Ok(0) => return Outcome::Dead(Gone::Closed),
            Ok(n) => {
                link.heard = now;
                for &byte in &buf[..n] {
                    match byte {
                        BEAT => {}
                        BYE => return Outcome::Left,
                        _ => return Outcome::Dead(Gone::Garbled),
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Open,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Outcome::Dead(Gone::Reset),
        }
    }
}
