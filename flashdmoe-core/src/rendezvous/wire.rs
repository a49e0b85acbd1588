//! The store's wire format: length-prefixed frames with a magic and a version.
//!
//! A frame is a 12-byte header, `"FDMS"`, version (`u16` LE), kind (`u8`), a zero byte,
//! payload length (`u32` LE, at most [`MAX_PAYLOAD`]), then the payload. Integers in payloads
//! are `u32` LE; a blob is its `u32` length then its bytes.
//!
//! Invariant: decoding never panics; any bytes give a [`Msg`] or a [`ReadError`].

use std::io::{self, Read, Write};

use super::error::Op;

/// The first bytes of every frame.
pub(super) const MAGIC: [u8; 4] = *b"FDMS";
/// The protocol version; a peer speaking another is refused.
pub(super) const VERSION: u16 = 1;
/// The largest payload accepted (blobs are small: ids, addresses, hashes).
pub(super) const MAX_PAYLOAD: u32 = 16 << 20;
const HEADER: usize = 12;

/// One message of the store (and the mesh's hello).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Msg {
    /// A rank joins: its rank and world size.
    Hello { rank: u32, world: u32 },
    /// Rank 0: every rank has joined.
    Welcome { world: u32 },
    /// A rank's part of collective number `seq` (`op` is an [`Op`] code).
    Request { seq: u32, op: u8, blob: Vec<u8> },
    /// Rank 0's answer to collective `seq`: all blobs, or the broadcast one.
    Reply { seq: u32, op: u8, blobs: Vec<Vec<u8>> },
    /// The rendezvous failed: `code` says how (see `store.rs`), `ranks` whom.
    Abort { op: u8, code: u8, ranks: Vec<u32>, reason: String },
}

impl Msg {
    fn kind(&self) -> u8 {
        match self {
            Msg::Hello { .. } => 1,
            Msg::Welcome { .. } => 2,
            Msg::Request { .. } => 3,
            Msg::Reply { .. } => 4,
            Msg::Abort { .. } => 5,
        }
    }

    /// The message as one frame.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + 16);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&[self.kind(), 0, 0, 0, 0, 0]);
        let u32s = |out: &mut Vec<u8>, values: &[u32]| {
            values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()))
        };
        let blob = |out: &mut Vec<u8>, bytes: &[u8]| {
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        };
        match self {
            Msg::Hello { rank, world } => u32s(&mut out, &[*rank, *world]),
            Msg::Welcome { world } => u32s(&mut out, &[*world]),
            Msg::Request { seq, op, blob: bytes } => {
                u32s(&mut out, &[*seq, u32::from(*op)]);
                blob(&mut out, bytes);
            }
            Msg::Reply { seq, op, blobs } => {
                u32s(&mut out, &[*seq, u32::from(*op), blobs.len() as u32]);
                blobs.iter().for_each(|b| blob(&mut out, b));
            }
            Msg::Abort { op, code, ranks, reason } => {
                u32s(&mut out, &[u32::from(*op), u32::from(*code), ranks.len() as u32]);
                u32s(&mut out, ranks);
                blob(&mut out, reason.as_bytes());
            }
        }
        let len = (out.len() - HEADER) as u32;
        out[8..HEADER].copy_from_slice(&len.to_le_bytes());
        out
    }

    fn decode(kind: u8, payload: &[u8]) -> Result<Msg, String> {
        let mut d = Dec(payload);
        let msg = match kind {
            1 => Msg::Hello { rank: d.u32()?, world: d.u32()? },
            2 => Msg::Welcome { world: d.u32()? },
            3 => Msg::Request { seq: d.u32()?, op: d.u8()?, blob: d.blob()? },
            4 => {
                let (seq, op, count) = (d.u32()?, d.u8()?, d.u32()?);
                let blobs = (0..count).map(|_| d.blob()).collect::<Result<_, _>>()?;
                Msg::Reply { seq, op, blobs }
            }
            5 => {
                let (op, code, count) = (d.u8()?, d.u8()?, d.u32()?);
                let ranks = (0..count).map(|_| d.u32()).collect::<Result<_, _>>()?;
                let reason = String::from_utf8_lossy(&d.blob()?).into_owned();
                Msg::Abort { op, code, ranks, reason }
            }
            other => return Err(format!("unknown message kind {other}")),
        };
        if !d.0.is_empty() {
            return Err(format!("{} bytes after a {}", d.0.len(), msg.describe()));
        }
        Ok(msg)
    }

    /// The message in words, for out-of-step errors.
    pub(super) fn describe(&self) -> String {
        let op = |op: &u8| Op::from_code(*op).map_or(format!("op {op}"), |o| o.to_string());
        match self {
            Msg::Hello { rank, .. } => format!("hello from rank {rank}"),
            Msg::Welcome { .. } => "welcome".into(),
            Msg::Request { seq, op: o, .. } => format!("{} #{seq}", op(o)),
            Msg::Reply { seq, op: o, .. } => format!("reply to {} #{seq}", op(o)),
            Msg::Abort { .. } => "abort".into(),
        }
    }
}

/// Why no message was read.
#[derive(Debug)]
pub(super) enum ReadError {
    /// The connection closed or was reset.
    Closed,
    /// The read timeout passed.
    TimedOut,
    /// The bytes are not this protocol (wrong magic): another program.
    Foreign,
    /// This protocol, another version.
    Version(u16),
    /// A frame of this protocol and version that does not decode.
    Malformed(String),
    /// Another socket error.
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        use io::ErrorKind::*;
        match e.kind() {
            UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe => ReadError::Closed,
            WouldBlock | TimedOut => ReadError::TimedOut,
            _ => ReadError::Io(e),
        }
    }
}

/// Writes one message.
pub(super) fn send(w: &mut impl Write, msg: &Msg) -> io::Result<()> {
    w.write_all(&msg.encode())
}

/// Reads one message (blocking, under the reader's own timeout).
pub(super) fn recv(r: &mut impl Read) -> Result<Msg, ReadError> {
    let mut header = [0u8; HEADER];
    r.read_exact(&mut header)?;
    if header[..4] != MAGIC {
        return Err(ReadError::Foreign);
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != VERSION {
        return Err(ReadError::Version(version));
    }
    let len = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if len > MAX_PAYLOAD {
        return Err(ReadError::Malformed(format!("a {len}-byte payload (at most {MAX_PAYLOAD})")));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    Msg::decode(header[6], &payload).map_err(ReadError::Malformed)
}

/// A payload cursor; every read checks the length left.
struct Dec<'a>(&'a [u8]);

impl Dec<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err(format!("payload truncated: {n} bytes wanted, {} left", self.0.len()));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u8(&mut self) -> Result<u8, String> {
        u8::try_from(self.u32()?).map_err(|_| "a byte field out of range".to_string())
    }

    fn blob(&mut self) -> Result<Vec<u8>, String> {
        let len = self.u32()? as usize;
        Ok(self.take(len)?.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Msg> {
        vec![
            Msg::Hello { rank: 3, world: 4 },
            Msg::Welcome { world: 4 },
            Msg::Request { seq: 7, op: 2, blob: b"abc".to_vec() },
            Msg::Reply { seq: 7, op: 2, blobs: vec![vec![], vec![1, 2], b"x".to_vec()] },
            Msg::Abort { op: 1, code: 1, ranks: vec![2, 3], reason: "late".into() },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for msg in all() {
            let bytes = msg.encode();
            assert_eq!(&bytes[..4], b"FDMS");
            assert_eq!(recv(&mut bytes.as_slice()).unwrap(), msg);
        }
    }

    #[test]
    fn foreign_bytes_versions_and_truncation_are_errors_not_panics() {
        let hello = Msg::Hello { rank: 1, world: 2 }.encode();
        let mut other = hello.clone();
        other[..4].copy_from_slice(b"\x00\x01\x02\x03");
        assert!(matches!(recv(&mut other.as_slice()), Err(ReadError::Foreign)));
        let mut v2 = hello.clone();
        v2[4] = 2;
        assert!(matches!(recv(&mut v2.as_slice()), Err(ReadError::Version(2))));
        let mut huge = hello.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(recv(&mut huge.as_slice()), Err(ReadError::Malformed(_))));
        for msg in all() {
            let bytes = msg.encode();
            for cut in 0..bytes.len() {
                assert!(matches!(recv(&mut &bytes[..cut]), Err(ReadError::Closed)), "{msg:?}");
            }
            // A payload that claims one byte more than it holds, or one byte less.
            for delta in [1i64, -1] {
                let mut bad = bytes.clone();
                let len = (bytes.len() - HEADER) as i64 + delta;
                bad[8..12].copy_from_slice(&(len as u32).to_le_bytes());
                bad.push(0);
                assert!(
                    matches!(recv(&mut bad.as_slice()), Err(ReadError::Malformed(_))),
                    "{msg:?}"
                );
            }
        }
        let mut unknown = hello;
        unknown[6] = 99;
        assert!(matches!(recv(&mut unknown.as_slice()), Err(ReadError::Malformed(_))));
    }
}
