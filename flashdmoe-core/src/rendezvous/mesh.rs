//! Building the liveness mesh: one TCP connection between every pair of processes.
//!
//! Every rank listens on an ephemeral port of the address it reaches the store from (so the
//! address is routable by the others), the addresses are all-gathered through the store, then
//! rank `j` connects to every rank `i < j` and says hello, and accepts one hello from every
//! rank above it. Connecting first and accepting second cannot deadlock: a connection
//! completes in the listener's backlog before it is accepted.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use super::error::{Op, RendezvousError};
use super::net::{Deadline, accept_by, recv_by, send_by};
use super::store::Store;
use super::wire::Msg;

/// Connects this rank to every other through `store`; returns `(peer rank, stream)` for each,
/// ascending, within `timeout` (after the address all-gather).
pub(super) fn build(
    store: &mut Store,
    timeout: Duration,
) -> Result<Vec<(usize, TcpStream)>, RendezvousError> {
    let (rank, world) = (store.rank(), store.world());
    if world == 1 {
        return Ok(Vec::new());
    }
    let io = |what: &str, e: std::io::Error| RendezvousError::Io {
        what: what.into(),
        message: e.to_string(),
    };
    let ip = store.local_ip().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let listener = TcpListener::bind((ip, 0)).map_err(|e| io("liveness listen", e))?;
    let own = listener.local_addr().map_err(|e| io("liveness listen", e))?;
    let addrs = store.all_gather(own.to_string().as_bytes())?;
    let addr_of = |peer: usize| -> Result<SocketAddr, RendezvousError> {
        let text = String::from_utf8_lossy(&addrs[peer]).into_owned();
        text.parse().map_err(|_| RendezvousError::Protocol {
            peer: format!("rank {peer}"),
            problem: format!("{text:?} is not a socket address"),
        })
    };
    let deadline = Deadline::after(timeout);
    let mut links = Vec::with_capacity(world - 1);
    let hello = Msg::Hello { rank: rank as u32, world: world as u32 };
    for peer in 0..rank {
        // The peer's listener was bound before the all-gather: a refusal means it is gone.
        let gone = |_| RendezvousError::Disconnected { op: Op::Mesh, rank: peer };
        let wait = deadline.remaining().max(Duration::from_millis(1));
        let mut stream = TcpStream::connect_timeout(&addr_of(peer)?, wait).map_err(gone)?;
        send_by(&mut stream, &hello, &deadline).map_err(gone)?;
        links.push((peer, stream));
    }
    let mut pending: Vec<usize> = (rank + 1..world).collect();
    while !pending.is_empty() {
        let Some((mut stream, addr)) =
            accept_by(&listener, &deadline).map_err(|e| io("liveness accept", e))?
        else {
            return Err(RendezvousError::Timeout {
                op: Op::Mesh,
                missing: pending,
                waited: deadline.waited(),
            });
        };
        match recv_by(&mut stream, &deadline) {
            Ok(Msg::Hello { rank: peer, world: w }) if w as usize == world => {
                let peer = peer as usize;
                if let Some(i) = pending.iter().position(|&p| p == peer) {
                    pending.remove(i);
                    links.push((peer, stream));
                } else {
                    return Err(RendezvousError::DuplicateRank {
                        rank: peer,
                        addr: addr.to_string(),
                    });
                }
            }
            Ok(Msg::Hello { rank: peer, world: w }) => {
                let (rank, found) = (peer as usize, w as usize);
                return Err(RendezvousError::WorldMismatch { rank, expected: world, found });
            }
            // Not a rank (or one that died before its hello: it stays pending).
            _ => continue,
        }
    }
    links.sort_by_key(|(peer, _)| *peer);
    for (_, stream) in &links {
        stream.set_nodelay(true).map_err(|e| io("liveness set-up", e))?;
        stream.set_nonblocking(true).map_err(|e| io("liveness set-up", e))?;
    }
    Ok(links)
}
