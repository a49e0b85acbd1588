//! Sockets under deadlines: connect with retry and backoff, accept, send and receive.
//!
//! Invariant: nothing here blocks past its [`Deadline`] (plus one short poll or write
//! timeout): std has no accept or connect-retry with a timeout, so listeners are polled
//! non-blocking with a bounded backoff, and every blocking read or write gets the time left.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::thread;
use std::time::{Duration, Instant};

use super::wire::{self, Msg, ReadError};

/// The least read or write timeout (std refuses zero): what a read gets once the deadline has
/// passed, so data already buffered is still taken.
const MIN_WAIT: Duration = Duration::from_millis(1);
/// A write gets at least this long, so a best-effort abort still reaches a live peer.
const MIN_WRITE: Duration = Duration::from_millis(200);

/// A point in time to give up at, and when the wait began.
#[derive(Clone, Copy, Debug)]
pub(super) struct Deadline {
    start: Instant,
    at: Instant,
}

impl Deadline {
    /// `timeout` from now (clamped to a year).
    pub(super) fn after(timeout: Duration) -> Deadline {
        let start = Instant::now();
        Deadline { start, at: start + timeout.min(Duration::from_secs(365 * 86_400)) }
    }

    /// The same start, `more` later.
    pub(super) fn extended(self, more: Duration) -> Deadline {
        Deadline { at: self.at + more, ..self }
    }

    pub(super) fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    pub(super) fn expired(&self) -> bool {
        Instant::now() >= self.at
    }

    /// Time since the wait began.
    pub(super) fn waited(&self) -> Duration {
        self.start.elapsed()
    }
}

/// Sleeps that double from `first` to `max`, never past the deadline.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { next: first, max }
    }

    fn sleep(&mut self, deadline: &Deadline) {
        thread::sleep(self.next.min(deadline.remaining()));
        self.next = (self.next * 2).min(self.max);
    }
}

/// Connects to `host:port`, retrying refused or unreachable attempts (the listener may not
/// be up yet) until the deadline; `None` if it never succeeded.
pub(super) fn connect_retrying(host: &str, port: u16, deadline: &Deadline) -> Option<TcpStream> {
    let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(200));
    loop {
        // Resolved again on every attempt: a name may appear in DNS after its host starts.
        let addrs: Vec<SocketAddr> =
            (host, port).to_socket_addrs().map(Iterator::collect).unwrap_or_default();
        for addr in addrs {
            let wait = deadline.remaining().clamp(MIN_WAIT, Duration::from_secs(2));
            if let Ok(stream) = TcpStream::connect_timeout(&addr, wait) {
                return Some(stream);
            }
        }
        if deadline.expired() {
            return None;
        }
        backoff.sleep(deadline);
    }
}

/// Accepts one connection, polling the (non-blocking) listener; `None` at the deadline.
pub(super) fn accept_by(
    listener: &TcpListener,
    deadline: &Deadline,
) -> io::Result<Option<(TcpStream, SocketAddr)>> {
    listener.set_nonblocking(true)?;
    let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(20));
    loop {
        match listener.accept() {
            Ok((stream, addr)) => {
                stream.set_nonblocking(false)?;
                stream.set_nodelay(true)?;
                return Ok(Some((stream, addr)));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A connection reset before it was accepted is the peer's problem, not ours.
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
            Err(e) => return Err(e),
        }
        if deadline.expired() {
            return Ok(None);
        }
        backoff.sleep(deadline);
    }
}

/// Receives one message, waiting at most until the deadline.
pub(super) fn recv_by(stream: &mut TcpStream, deadline: &Deadline) -> Result<Msg, ReadError> {
    stream.set_read_timeout(Some(deadline.remaining().max(MIN_WAIT)))?;
    wire::recv(stream)
}

/// Sends one message, waiting at most until the deadline (or [`MIN_WRITE`]).
pub(super) fn send_by(stream: &mut TcpStream, msg: &Msg, deadline: &Deadline) -> io::Result<()> {
    stream.set_write_timeout(Some(deadline.remaining().max(MIN_WRITE)))?;
    wire::send(stream, msg)
}
