//! The one error type of the protocol crate.

use core::fmt;

/// Everything that can go wrong when computing a layout or decoding protocol data.
///
/// Every decoder in this crate returns one of these instead of panicking, whatever the input.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtoError {
    /// A geometry parameter is out of its allowed range.
    InvalidGeometry {
        /// Which parameter (e.g. `"tile.bn"`).
        field: &'static str,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// Layout arithmetic would overflow `u64` byte offsets.
    Overflow {
        /// The quantity whose computation overflowed.
        what: &'static str,
    },
    /// An index (rank, expert, row, tile, ...) is outside its range.
    OutOfRange {
        /// Which index.
        what: &'static str,
        /// The offending value.
        value: u64,
        /// The exclusive upper bound it violates.
        limit: u64,
    },
    /// A byte buffer has the wrong length for the structure being decoded.
    BadLength {
        /// The structure being decoded.
        what: &'static str,
        /// Expected length in bytes.
        expected: usize,
        /// Actual length in bytes.
        actual: usize,
    },
    /// A task descriptor carries an unknown kind tag.
    UnknownTaskKind(u32),
    /// A field of a decoded structure disagrees with the value the layout dictates.
    Inconsistent {
        /// The field that disagrees.
        field: &'static str,
        /// The value the layout dictates.
        expected: u64,
        /// The value found.
        found: u64,
    },
    /// A routing plan is malformed (unsorted or duplicate tokens, wrong shape, over capacity).
    BadPlan {
        /// What is wrong.
        reason: &'static str,
    },
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidGeometry { field, reason } => {
                write!(f, "invalid geometry: {field} {reason}")
            }
            Self::Overflow { what } => write!(f, "arithmetic overflow computing {what}"),
            Self::OutOfRange { what, value, limit } => {
                write!(f, "{what} = {value} is out of range (must be < {limit})")
            }
            Self::BadLength { what, expected, actual } => {
                write!(f, "{what}: expected {expected} bytes, got {actual}")
            }
            Self::UnknownTaskKind(k) => write!(f, "unknown task kind tag {k}"),
            Self::Inconsistent { field, expected, found } => {
                write!(f, "{field} is {found} but the layout dictates {expected}")
            }
            Self::BadPlan { reason } => write!(f, "malformed routing plan: {reason}"),
        }
    }
}

impl core::error::Error for ProtoError {}

/// Shorthand used throughout the crate.
pub type Result<T> = core::result::Result<T, ProtoError>;

/// `value < limit`, else [`ProtoError::OutOfRange`].
pub(crate) fn check_range(
    what: &'static str,
    value: impl Into<u64>,
    limit: impl Into<u64>,
) -> Result<()> {
    let (value, limit) = (value.into(), limit.into());
    if value < limit { Ok(()) } else { Err(ProtoError::OutOfRange { what, value, limit }) }
}
