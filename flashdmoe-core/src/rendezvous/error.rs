//! The rendezvous error, and what a liveness check reports.

use std::fmt;
use std::time::Duration;

use thiserror::Error;

use super::env::EnvError;

/// The collective operation an error happened in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// Joining the store (every rank says hello to rank 0).
    Connect,
    /// An all-gather (also fingerprints and barriers).
    AllGather,
    /// Rank 0's broadcast.
    Broadcast,
    /// Building the liveness mesh.
    Mesh,
}

impl Op {
    pub(super) fn code(self) -> u8 {
        match self {
            Op::Connect => 1,
            Op::AllGather => 2,
            Op::Broadcast => 3,
            Op::Mesh => 4,
        }
    }

    pub(super) fn from_code(code: u8) -> Option<Op> {
        [Op::Connect, Op::AllGather, Op::Broadcast, Op::Mesh]
            .into_iter()
            .find(|op| op.code() == code)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Connect => "connect",
            Op::AllGather => "all-gather",
            Op::Broadcast => "broadcast",
            Op::Mesh => "liveness mesh",
        })
    }
}

/// Why a rendezvous (store or mesh set-up) failed. After one, the store refuses further
/// operations with the same error.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RendezvousError {
    /// The launcher environment is unusable.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// Ranks did not arrive before the deadline.
    #[error("rendezvous {op} timed out after {:.1} s; missing rank(s): {}{}",
        waited.as_secs_f64(), ranks(missing), connect_hint(*op, missing))]
    Timeout {
        /// The operation.
        op: Op,
        /// The ranks that never arrived, ascending (`[0]`: rank 0 never answered).
        missing: Vec<usize>,
        /// How long this rank waited.
        waited: Duration,
    },
    /// A rank's connection closed during an operation.
    #[error("rendezvous {op}: rank {rank} disconnected")]
    Disconnected {
        /// The operation.
        op: Op,
        /// The rank that went away.
        rank: usize,
    },
    /// A rank's fingerprint (the layer config hash) differs from rank 0's.
    #[error(
        "rank {rank}'s fingerprint {found} differs from rank 0's {expected}: every process \
             must build the same layer"
    )]
    FingerprintMismatch {
        /// The lowest rank whose fingerprint differs.
        rank: usize,
        /// Rank 0's fingerprint, in hex.
        expected: String,
        /// That rank's, in hex.
        found: String,
    },
    /// Two processes claim the same rank.
    #[error("two processes claim rank {rank} (the second from {addr})")]
    DuplicateRank {
        /// The rank.
        rank: usize,
        /// The second claimant's address.
        addr: String,
    },
    /// A rank was started with another world size, or a rank outside it.
    #[error("rank {rank} says the world has {found} processes; rank 0 says {expected}")]
    WorldMismatch {
        /// The rank.
        rank: usize,
        /// Rank 0's world size.
        expected: usize,
        /// The other rank's.
        found: usize,
    },
    /// A rank called a different operation than the others.
    #[error("rank {rank} is out of step: expected {expected}, got {found}")]
    OutOfStep {
        /// The rank.
        rank: usize,
        /// What this rank expected.
        expected: String,
        /// What arrived.
        found: String,
    },
    /// Bytes that break the protocol: another version of it, or another program.
    #[error("rendezvous protocol error with {peer}: {problem}")]
    Protocol {
        /// The peer, by rank or address.
        peer: String,
        /// What is wrong.
        problem: String,
    },
    /// Rank 0 cannot listen at the store address.
    #[error("rank 0 cannot listen at {addr}: {message}{hint}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        message: String,
        /// What to do, when known (may be empty).
        hint: String,
    },
    /// A socket operation failed.
    #[error("rendezvous {what}: {message}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        message: String,
    },
    /// A rank gave up ([`Store::abort`](super::Store::abort)), or rank 0 failed for a reason
    /// it sent along in words.
    #[error("rank {rank} aborted the rendezvous: {reason}")]
    Aborted {
        /// The rank that gave up.
        rank: usize,
        /// The reason, in words.
        reason: String,
    },
}

/// A peer process that is gone: what [`Liveness::check`](super::Liveness::check) returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("peer rank {rank} is gone: {how}")]
pub struct PeerGone {
    /// The lowest rank that is gone.
    pub rank: usize,
    /// How it was noticed.
    pub how: Gone,
}

/// How a peer's death was noticed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Gone {
    /// Its connection closed without a goodbye (a killed process: the kernel closes sockets).
    Closed,
    /// Its connection failed (reset, or a write failed).
    Reset,
    /// Nothing arrived from it for the heartbeat timeout (a hung or unreachable host).
    Silent,
    /// It sent bytes the liveness protocol does not know.
    Garbled,
}

impl Gone {
    pub(super) const ALL: [Gone; 4] = [Gone::Closed, Gone::Reset, Gone::Silent, Gone::Garbled];
}

impl fmt::Display for Gone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Gone::Closed => "its connection closed without a goodbye",
            Gone::Reset => "its connection failed",
            Gone::Silent => "it missed its heartbeats",
            Gone::Garbled => "it sent bytes outside the liveness protocol",
        })
    }
}

/// `1, 3, 4`.
fn ranks(ranks: &[usize]) -> String {
    ranks.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
}

fn connect_hint(op: Op, missing: &[usize]) -> &'static str {
    if op == Op::Connect && missing == [0] {
        " (is rank 0 running, and listening at MASTER_ADDR:MASTER_PORT? Under torchrun the \
         agent's store holds MASTER_PORT unless TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1; or set \
         FLASHDMOE_MASTER_PORT)"
    } else {
        ""
    }
}

/// A fingerprint in hex, cut after 16 bytes.
pub(super) fn hex(bytes: &[u8]) -> String {
    let mut out: String = bytes.iter().take(16).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > 16 {
        out.push_str(&format!("...({} bytes)", bytes.len()));
    }
    if bytes.is_empty() {
        out.push_str("(empty)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_ranks_and_give_hints() {
        let err = RendezvousError::Timeout {
            op: Op::AllGather,
            missing: vec![2, 3],
            waited: Duration::from_millis(1500),
        };
        assert_eq!(
            err.to_string(),
            "rendezvous all-gather timed out after 1.5 s; missing rank(s): 2, 3"
        );
        let err =
            RendezvousError::Timeout { op: Op::Connect, missing: vec![0], waited: Duration::ZERO };
        assert!(err.to_string().contains("FLASHDMOE_MASTER_PORT"), "{err}");
        let gone = PeerGone { rank: 2, how: Gone::Closed };
        assert_eq!(
            gone.to_string(),
            "peer rank 2 is gone: its connection closed without a goodbye"
        );
        assert_eq!(hex(&[0xab, 1]), "ab01");
        assert_eq!(hex(&[7; 17]), "07070707070707070707070707070707...(17 bytes)");
        for op in [Op::Connect, Op::AllGather, Op::Broadcast, Op::Mesh] {
            assert_eq!(Op::from_code(op.code()), Some(op));
        }
    }
}
