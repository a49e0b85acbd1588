//! Epochs: the sequence number of a forward call, stamped into every signal.
//!
//! Signals are never cleared between forwards. A receiver treats a signal as arrived only when
//! its epoch equals the current one; every forward rewrites every signal it uses (a zero-row
//! packet still sends its signal), so the value left in a signal word is always the current
//! epoch, the previous one, or 0 (never written: the heap starts zeroed). Epoch 0 is therefore
//! reserved and never issued, and the sequence wraps from `u32::MAX` back to 1, so consecutive
//! epochs always differ and an old signal is never mistaken for a new one.

use core::fmt;
use core::num::NonZeroU32;

/// The epoch of one forward call. Never 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct Epoch(NonZeroU32);

impl Epoch {
    /// The epoch of the first forward after the heap was zeroed.
    pub const FIRST: Epoch = Epoch(NonZeroU32::MIN);

    /// The epoch with this raw value, or `None` for 0 (the "never written" value).
    pub const fn new(raw: u32) -> Option<Epoch> {
        match NonZeroU32::new(raw) {
            Some(v) => Some(Epoch(v)),
            None => None,
        }
    }

    /// The raw value as stamped into signal words.
    pub const fn get(self) -> u32 {
        self.0.get()
    }

    /// The epoch of the next forward: `+1`, wrapping from `u32::MAX` to 1 (skipping 0).
    pub const fn next(self) -> Epoch {
        match self.0.checked_add(1) {
            Some(v) => Epoch(v),
            None => Epoch::FIRST,
        }
    }

    /// The epoch of the previous forward (inverse of [`Epoch::next`]).
    pub const fn prev(self) -> Epoch {
        match NonZeroU32::new(self.0.get() - 1) {
            Some(v) => Epoch(v),
            None => Epoch(NonZeroU32::MAX),
        }
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_skipping_zero() {
        let last = Epoch::new(u32::MAX).unwrap();
        assert_eq!(last.next(), Epoch::FIRST);
        assert_eq!(Epoch::FIRST.prev(), last);
        assert_eq!(Epoch::FIRST.next().get(), 2);
        assert_eq!(Epoch::new(0), None);
    }

    #[test]
    fn next_and_prev_are_inverse_and_distinct() {
        for raw in [1, 2, 77, u32::MAX - 1, u32::MAX] {
            let e = Epoch::new(raw).unwrap();
            assert_eq!(e.next().prev(), e);
            assert_eq!(e.prev().next(), e);
            assert_ne!(e.next(), e);
        }
    }
}
