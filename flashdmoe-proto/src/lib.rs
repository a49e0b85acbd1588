#![doc = include_str!("../README.md")]
//!
//! ## Invariants
//!
//! * No threads, no I/O, no CUDA, no global state: `no_std` + `alloc` without the `std`
//!   feature, and no dependencies.
//! * Offsets, never pointers: a descriptor or offset means the same place on every rank, in the
//!   simulator and on the GPU.
//! * Decoders never panic: any bytes or words give a value or a [`ProtoError`] (property-tested).
//! * Layout arithmetic is checked: a geometry whose offsets would overflow `u64` is an error.
#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

extern crate alloc;

mod epoch;
mod error;
pub mod graph;
mod header;
mod layout;
pub mod signal;
mod task;

pub use epoch::Epoch;
pub use error::{ProtoError, Result};
pub use graph::{CombineReadiness, RoutingPlan, SourcePlan, TaskCounts, TaskKey};
pub use header::{CField, c_header, c_struct};
pub use layout::{
    ALIGN, COUNTER_BYTES, Geometry, HeapLayout, LayoutParams, MAX_COMBINE_GROUPS, SIGNAL_BYTES,
    Stage, TileShape, WEIGHT_BYTES, div_ceil, tile_cols,
};
pub use task::{NO_OFFSET, TASK_BYTES, TaskDescriptor, TaskKind};
