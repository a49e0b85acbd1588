//! The rendezvous store: rank 0 listens, every other rank connects; collectives through rank 0.
//!
//! Rank 0 is the root of a star. Joining is itself a collective: rank 0 accepts connections
//! until every rank has said hello (checking world size and duplicates), then welcomes them
//! all. Every later operation is numbered: each other rank sends its request (operation,
//! number, blob), rank 0 reads them in rank order and checks they match its own, then replies
//! to all. A broadcast is the same with empty requests, so it is also a barrier.
//!
//! Invariants:
//! * Every operation ends by its deadline: rank 0 gives up at `timeout` naming the ranks it
//!   did not hear from, and tells the others why (an abort message), so they fail with the
//!   same typed error; the others wait `timeout` plus a grace for that verdict, then blame
//!   rank 0.
//! * After any error the store is poisoned: every later operation returns that error.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::env::{Env, EnvError, MASTER_PORT, RANK};
use super::error::{Op, RendezvousError, hex};
use super::net::{Deadline, accept_by, connect_retrying, recv_by, send_by};
use super::wire::{Msg, ReadError};

/// Abort codes: the error rank 0 sends along.
const ABORT_TIMEOUT: u8 = 1;
const ABORT_DISCONNECTED: u8 = 2;
const ABORT_BY_RANK: u8 = 3;
const ABORT_OTHER: u8 = 4;

/// How long the store waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// Per operation (joining included): how long rank 0 waits for the others. Default 60 s.
    pub timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { timeout: Duration::from_secs(60) }
    }
}

/// One rank's handle on the rendezvous store.
#[derive(Debug)]
pub struct Store {
    rank: usize,
    world: usize,
    timeout: Duration,
    seq: u32,
    links: Links,
    failed: Option<RendezvousError>,
}

#[derive(Debug)]
enum Links {
    /// A world of one: nothing to talk to.
    Single,
    /// Rank 0: the stream of rank `r` at index `r - 1`.
    Root(Vec<TcpStream>),
    /// Another rank: its stream to rank 0.
    Leaf(TcpStream),
}

impl Store {
    /// Joins the store the environment names: rank 0 binds `MASTER_ADDR:port` (the loopback
    /// address when `MASTER_ADDR` is one, else every interface, as torch's store does) and
    /// waits for the others; they connect, retrying until rank 0 is up. A world of one opens
    /// no socket. Returns once every rank has joined.
    pub fn connect(env: &Env, opts: &StoreOptions) -> Result<Store, RendezvousError> {
        if env.world_size == 1 {
            return Ok(Store::new(env, opts, Links::Single));
        }
        if env.rank == 0 {
            return Store::host(bind(env)?, env, opts);
        }
        let deadline = Deadline::after(opts.timeout);
        let timeout = || RendezvousError::Timeout {
            op: Op::Connect,
            missing: vec![0],
            waited: deadline.waited(),
        };
        let mut stream =
            connect_retrying(&env.master_addr, env.master_port, &deadline).ok_or_else(timeout)?;
        let _ = stream.set_nodelay(true);
        let hello = Msg::Hello { rank: env.rank as u32, world: env.world_size as u32 };
        send_by(&mut stream, &hello, &deadline)
            .map_err(|_| RendezvousError::Disconnected { op: Op::Connect, rank: 0 })?;
        let mut store = Store::new(env, opts, Links::Leaf(stream));
        let Links::Leaf(stream) = &mut store.links else { unreachable!() };
        let reply = recv_by(stream, &deadline.extended(grace(opts.timeout)));
        let err = match reply {
            Ok(Msg::Welcome { world }) if world as usize == env.world_size => return Ok(store),
            Ok(Msg::Welcome { world }) => RendezvousError::WorldMismatch {
                rank: env.rank,
                expected: world as usize,
                found: env.world_size,
            },
            other => store.leaf_error(Op::Connect, other, &deadline),
        };
        Err(err)
    }

    /// Rank 0 of `env`, listening on `listener` (already bound, e.g. to port 0): waits until
    /// every other rank has joined.
    pub fn host(
        listener: TcpListener,
        env: &Env,
        opts: &StoreOptions,
    ) -> Result<Store, RendezvousError> {
        if env.rank != 0 {
            let problem = "is not 0: only rank 0 hosts the store".to_string();
            return Err(
                EnvError::Inconsistent { var: RANK, value: env.rank.to_string(), problem }.into()
            );
        }
        let deadline = Deadline::after(opts.timeout);
        let mut joined: Vec<Option<TcpStream>> = (1..env.world_size).map(|_| None).collect();
        let result = accept_all(&listener, &mut joined, env.world_size, &deadline);
        let mut store = Store::new(env, opts, Links::Root(Vec::new()));
        if let Err((err, stranger)) = result {
            let mut peers: Vec<TcpStream> = joined.into_iter().flatten().collect();
            peers.extend(stranger);
            store.links = Links::Root(peers);
            return Err(store.fail(Op::Connect, err));
        }
        let peers: Vec<TcpStream> = joined.into_iter().flatten().collect();
        store.links = Links::Root(peers);
        let Links::Root(peers) = &mut store.links else { unreachable!() };
        let welcome = Msg::Welcome { world: env.world_size as u32 };
        for (i, peer) in peers.iter_mut().enumerate() {
            if send_by(peer, &welcome, &deadline).is_err() {
                let err = RendezvousError::Disconnected { op: Op::Connect, rank: i + 1 };
                return Err(store.fail(Op::Connect, err));
            }
        }
        Ok(store)
    }

    fn new(env: &Env, opts: &StoreOptions, links: Links) -> Store {
        Store {
            rank: env.rank,
            world: env.world_size,
            timeout: opts.timeout,
            seq: 0,
            links,
            failed: None,
        }
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of processes.
    pub fn world(&self) -> usize {
        self.world
    }

    /// Every rank's `blob`, indexed by rank.
    pub fn all_gather(&mut self, blob: &[u8]) -> Result<Vec<Vec<u8>>, RendezvousError> {
        self.collective(Op::AllGather, blob)
    }

    /// Rank 0's `blob` on every rank (the argument is ignored elsewhere, as in MPI). Also a
    /// barrier: rank 0 sends only once every rank has asked.
    pub fn broadcast(&mut self, blob: &[u8]) -> Result<Vec<u8>, RendezvousError> {
        let mut blobs = self.collective(Op::Broadcast, blob)?;
        Ok(blobs.swap_remove(0))
    }

    /// Returns once every rank has called it.
    pub fn barrier(&mut self) -> Result<(), RendezvousError> {
        self.collective(Op::AllGather, &[]).map(drop)
    }

    /// All-gathers `fingerprint` (the layer config hash) and checks every rank's equals rank
    /// 0's; a mismatch names the lowest rank that differs, on every rank.
    pub fn exchange_fingerprints(
        &mut self,
        fingerprint: &[u8],
    ) -> Result<Vec<Vec<u8>>, RendezvousError> {
        let all = self.all_gather(fingerprint)?;
        if let Some(rank) = all.iter().position(|f| *f != all[0]) {
            return Err(RendezvousError::FingerprintMismatch {
                rank,
                expected: hex(&all[0]),
                found: hex(&all[rank]),
            });
        }
        Ok(all)
    }

    /// Gives up: rank 0 tells every rank `reason` (their pending or next operation fails with
    /// [`RendezvousError::Aborted`]); another rank tells rank 0, which passes it on when it
    /// next reads from this rank.
    pub fn abort(mut self, reason: &str) {
        let err = RendezvousError::Aborted { rank: self.rank, reason: reason.to_string() };
        self.fail(Op::Connect, err);
    }

    /// The local address this rank talks to the store from (routable by the other ranks, where
    /// the store is); `None` in a world of one.
    pub(super) fn local_ip(&self) -> Option<IpAddr> {
        match &self.links {
            Links::Single => None,
            Links::Root(peers) => peers.first().and_then(|p| p.local_addr().ok()).map(|a| a.ip()),
            Links::Leaf(stream) => stream.local_addr().ok().map(|a| a.ip()),
        }
    }

    fn collective(&mut self, op: Op, blob: &[u8]) -> Result<Vec<Vec<u8>>, RendezvousError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        self.seq += 1;
        let (seq, code) = (self.seq, op.code());
        let deadline = Deadline::after(self.timeout);
        let expected = if op == Op::Broadcast { 1 } else { self.world };
        match &mut self.links {
            Links::Single => Ok(vec![blob.to_vec()]),
            Links::Leaf(stream) => {
                // A broadcast's argument is ignored here: the request carries nothing.
                let blob = if op == Op::Broadcast { Vec::new() } else { blob.to_vec() };
                let request = Msg::Request { seq, op: code, blob };
                let reply = match send_by(stream, &request, &deadline) {
                    Ok(()) => recv_by(stream, &deadline.extended(grace(self.timeout))),
                    Err(e) => Err(e.into()),
                };
                let err = match reply {
                    Ok(Msg::Reply { seq: s, op: o, blobs })
                        if s == seq && o == code && blobs.len() == expected =>
                    {
                        return Ok(blobs);
                    }
                    other => self.leaf_error(op, other, &deadline),
                };
                self.failed = Some(err.clone());
                Err(err)
            }
            Links::Root(peers) => {
                let mut blobs = vec![blob.to_vec()];
                let mut missing = Vec::new();
                for (i, peer) in peers.iter_mut().enumerate() {
                    let rank = i + 1;
                    let err = match recv_by(peer, &deadline) {
                        Ok(Msg::Request { seq: s, op: o, blob }) if s == seq && o == code => {
                            blobs.push(blob);
                            continue;
                        }
                        Err(ReadError::TimedOut) => {
                            missing.push(rank);
                            continue;
                        }
                        Ok(Msg::Abort { reason, .. }) => RendezvousError::Aborted { rank, reason },
                        Ok(other) => RendezvousError::OutOfStep {
                            rank,
                            expected: format!("{op} #{seq}"),
                            found: other.describe(),
                        },
                        Err(other) => read_error(op, rank, other),
                    };
                    return Err(self.fail(op, err));
                }
                if !missing.is_empty() {
                    let err = RendezvousError::Timeout { op, missing, waited: deadline.waited() };
                    return Err(self.fail(op, err));
                }
                blobs.truncate(expected);
                let reply = Msg::Reply { seq, op: code, blobs };
                for (i, peer) in peers.iter_mut().enumerate() {
                    if send_by(peer, &reply, &deadline).is_err() {
                        let err = RendezvousError::Disconnected { op, rank: i + 1 };
                        return Err(self.fail(op, err));
                    }
                }
                let Msg::Reply { blobs, .. } = reply else { unreachable!() };
                Ok(blobs)
            }
        }
    }

    /// The error a rank other than 0 reports when rank 0's answer is not the expected one.
    fn leaf_error(
        &self,
        op: Op,
        reply: Result<Msg, ReadError>,
        deadline: &Deadline,
    ) -> RendezvousError {
        match reply {
            Ok(Msg::Abort { op: o, code, ranks, reason }) => {
                let op = Op::from_code(o).unwrap_or(op);
                let mut ranks: Vec<usize> = ranks.into_iter().map(|r| r as usize).collect();
                match code {
                    ABORT_TIMEOUT => {
                        RendezvousError::Timeout { op, missing: ranks, waited: deadline.waited() }
                    }
                    ABORT_DISCONNECTED if ranks.len() == 1 => {
                        RendezvousError::Disconnected { op, rank: ranks.remove(0) }
                    }
                    ABORT_BY_RANK if ranks.len() == 1 => {
                        RendezvousError::Aborted { rank: ranks.remove(0), reason }
                    }
                    _ => RendezvousError::Aborted { rank: 0, reason },
                }
            }
            Ok(other) => RendezvousError::OutOfStep {
                rank: 0,
                expected: format!("reply to {op} #{}", self.seq),
                found: other.describe(),
            },
            Err(ReadError::TimedOut) => {
                RendezvousError::Timeout { op, missing: vec![0], waited: deadline.waited() }
            }
            Err(ReadError::Foreign) if op == Op::Connect => RendezvousError::Protocol {
                peer: "rank 0".into(),
                problem: "it answered in another protocol: is MASTER_PORT held by another \
                          program, such as torchrun's agent store? Set \
                          TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 or FLASHDMOE_MASTER_PORT"
                    .into(),
            },
            Err(other) => read_error(op, 0, other),
        }
    }

    /// Poisons the store with `err`; rank 0 tells every other rank (best effort), another rank
    /// tells rank 0 when `err` is its own abort. Returns `err`.
    fn fail(&mut self, op: Op, err: RendezvousError) -> RendezvousError {
        let (code, ranks, reason) = match &err {
            RendezvousError::Timeout { missing, .. } => {
                (ABORT_TIMEOUT, missing.clone(), String::new())
            }
            RendezvousError::Disconnected { rank, .. } => {
                (ABORT_DISCONNECTED, vec![*rank], String::new())
            }
            RendezvousError::Aborted { rank, reason } => {
                (ABORT_BY_RANK, vec![*rank], reason.clone())
            }
            other => (ABORT_OTHER, Vec::new(), other.to_string()),
        };
        let abort = Msg::Abort {
            op: op.code(),
            code,
            ranks: ranks.into_iter().map(|r| r as u32).collect(),
            reason,
        };
        let deadline = Deadline::after(Duration::ZERO);
        match &mut self.links {
            Links::Root(peers) => {
                peers.iter_mut().for_each(|p| drop(send_by(p, &abort, &deadline)))
            }
            Links::Leaf(stream) if matches!(err, RendezvousError::Aborted { rank, .. } if rank == self.rank) =>
            {
                drop(send_by(stream, &abort, &deadline));
            }
            _ => {}
        }
        self.failed = Some(err.clone());
        err
    }
}

/// How much longer than rank 0 the others wait for its verdict.
fn grace(timeout: Duration) -> Duration {
    (timeout / 2).min(Duration::from_secs(5))
}

/// A failed read from `rank`, as an error.
fn read_error(op: Op, rank: usize, err: ReadError) -> RendezvousError {
    let peer = format!("rank {rank}");
    match err {
        ReadError::Closed => RendezvousError::Disconnected { op, rank },
        ReadError::TimedOut => {
            RendezvousError::Timeout { op, missing: vec![rank], waited: Duration::ZERO }
        }
        ReadError::Foreign => {
            RendezvousError::Protocol { peer, problem: "bytes of another protocol".into() }
        }
        ReadError::Version(v) => RendezvousError::Protocol { peer, problem: version_problem(v) },
        ReadError::Malformed(problem) => RendezvousError::Protocol { peer, problem },
        ReadError::Io(e) => {
            RendezvousError::Io { what: format!("{op} with rank {rank}"), message: e.to_string() }
        }
    }
}

fn version_problem(theirs: u16) -> String {
    format!("it speaks protocol version {theirs}, this build {}", super::wire::VERSION)
}

/// Rank 0 accepts until every slot of `joined` is filled. Connections that are not this
/// protocol are dropped (a port scanner is not a rank); on failure, also returns the
/// offending connection so it can be told.
fn accept_all(
    listener: &TcpListener,
    joined: &mut [Option<TcpStream>],
    world: usize,
    deadline: &Deadline,
) -> Result<(), (RendezvousError, Option<TcpStream>)> {
    let io =
        |e: std::io::Error| RendezvousError::Io { what: "accept".into(), message: e.to_string() };
    while joined.iter().any(Option::is_none) {
        let Some((mut stream, addr)) = accept_by(listener, deadline).map_err(|e| (io(e), None))?
        else {
            let missing = (1..world).filter(|r| joined[r - 1].is_none()).collect();
            return Err((
                RendezvousError::Timeout { op: Op::Connect, missing, waited: deadline.waited() },
                None,
            ));
        };
        let err = match recv_by(&mut stream, deadline) {
            Ok(Msg::Hello { rank, world: w }) => {
                let (rank, found) = (rank as usize, w as usize);
                if found != world || rank == 0 || rank >= world {
                    RendezvousError::WorldMismatch { rank, expected: world, found }
                } else if joined[rank - 1].is_some() {
                    RendezvousError::DuplicateRank { rank, addr: addr.to_string() }
                } else {
                    joined[rank - 1] = Some(stream);
                    continue;
                }
            }
            Ok(other) => RendezvousError::Protocol {
                peer: addr.to_string(),
                problem: format!("sent {} before its hello", other.describe()),
            },
            Err(ReadError::Version(v)) => {
                RendezvousError::Protocol { peer: addr.to_string(), problem: version_problem(v) }
            }
            Err(_) => continue,
        };
        return Err((err, Some(stream)));
    }
    Ok(())
}

/// Rank 0's listener at the environment's port.
fn bind(env: &Env) -> Result<TcpListener, RendezvousError> {
    let resolved = (env.master_addr.as_str(), env.master_port).to_socket_addrs();
    let first =
        resolved.ok().and_then(|mut addrs| addrs.next()).ok_or_else(|| RendezvousError::Io {
            what: format!("resolve MASTER_ADDR={}", env.master_addr),
            message: "no address".into(),
        })?;
    let ip = match first.ip() {
        ip if ip.is_loopback() => ip,
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    TcpListener::bind((ip, env.master_port)).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse if env.agent_store && env.port_var == MASTER_PORT => {
                "; torchrun's agent store holds MASTER_PORT (TORCHELASTIC_USE_AGENT_STORE=True): \
                 set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 or FLASHDMOE_MASTER_PORT"
            }
            std::io::ErrorKind::AddrInUse => "; set FLASHDMOE_MASTER_PORT to a free port",
            _ => "",
        };
        RendezvousError::Bind { addr: env.master(), message: e.to_string(), hint: hint.into() }
    })
}
