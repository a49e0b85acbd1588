//! Signal words: 64-bit flags raised with a release store after the data they announce.
//!
//! Bit layout (both kinds): `epoch` in bits 63..32, a payload in bits 31..0.
//!
//! * Dispatch signal, one per `(source rank, local expert)` in the owner's heap: payload = the
//!   number of routed rows the source wrote into that packet (0 is a valid packet: it closes
//!   the receiver's task bound).
//! * Return signal, one per returned output tile in the source's heap: payload = the tile id
//!   within its packet ([`crate::HeapLayout::return_tile_id`]), so a misplaced store is caught.
//!
//! A word whose epoch differs from the receiver's current epoch has not arrived yet (it is
//! left over from an earlier forward, or the heap is fresh); see [`crate::Epoch`].

use crate::epoch::Epoch;
use crate::error::{ProtoError, Result};

/// What a receiver learns from reading one signal word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalState {
    /// Not raised in the current epoch; `seen_epoch` is the raw epoch found (0 = never written).
    Pending {
        /// Raw epoch bits found in the word.
        seen_epoch: u32,
    },
    /// Raised in the current epoch with this payload (already validated).
    Ready(u32),
}

/// Packs an epoch and a payload into a signal word.
pub const fn encode(epoch: Epoch, payload: u32) -> u64 {
    ((epoch.get() as u64) << 32) | payload as u64
}

/// The raw epoch bits of a word.
pub const fn epoch_bits(word: u64) -> u32 {
    (word >> 32) as u32
}

/// The payload bits of a word.
pub const fn payload_bits(word: u64) -> u32 {
    word as u32
}

/// Encodes a dispatch signal announcing `rows` routed rows.
pub const fn encode_dispatch(epoch: Epoch, rows: u32) -> u64 {
    encode(epoch, rows)
}

/// Decodes a dispatch signal for the receiver at epoch `current` whose packets hold at most
/// `capacity` rows. A row count above capacity is corruption and an error.
pub fn decode_dispatch(word: u64, current: Epoch, capacity: u32) -> Result<SignalState> {
    match state(word, current) {
        SignalState::Ready(rows) if rows > capacity => Err(ProtoError::OutOfRange {
            what: "dispatch signal row count",
            value: rows as u64,
            limit: capacity as u64 + 1,
        }),
        s => Ok(s),
    }
}

/// Encodes a return signal for tile `tile_id` of its packet.
pub const fn encode_return(epoch: Epoch, tile_id: u32) -> u64 {
    encode(epoch, tile_id)
}

/// Decodes a return signal read from the slot of tile `expected_tile` at epoch `current`.
pub fn decode_return(word: u64, current: Epoch, expected_tile: u32) -> Result<SignalState> {
    match state(word, current) {
        SignalState::Ready(tile) if tile != expected_tile => Err(ProtoError::Inconsistent {
            field: "return signal tile id",
            expected: expected_tile as u64,
            found: tile as u64,
        }),
        s => Ok(s),
    }
}

fn state(word: u64, current: Epoch) -> SignalState {
    let seen_epoch = epoch_bits(word);
    if seen_epoch == current.get() {
        SignalState::Ready(payload_bits(word))
    } else {
        SignalState::Pending { seen_epoch }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_encoded_words() {
        let e = Epoch::new(3).unwrap();
        assert_eq!(encode_dispatch(e, 5), 0x0000_0003_0000_0005);
        assert_eq!(decode_dispatch(0x0000_0003_0000_0005, e, 8), Ok(SignalState::Ready(5)));
        assert_eq!(decode_dispatch(0, e, 8), Ok(SignalState::Pending { seen_epoch: 0 }));
        assert_eq!(
            decode_dispatch(encode_dispatch(e.prev(), 5), e, 8),
            Ok(SignalState::Pending { seen_epoch: 2 })
        );
        assert!(decode_dispatch(encode_dispatch(e, 9), e, 8).is_err());
        assert_eq!(decode_dispatch(encode_dispatch(e, 0), e, 0), Ok(SignalState::Ready(0)));
    }

    #[test]
    fn return_tile_mismatch_is_an_error() {
        let e = Epoch::FIRST;
        assert_eq!(decode_return(encode_return(e, 7), e, 7), Ok(SignalState::Ready(7)));
        assert!(matches!(
            decode_return(encode_return(e, 6), e, 7),
            Err(ProtoError::Inconsistent { .. })
        ));
    }
}
