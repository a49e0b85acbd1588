//! # flashdmoe-proto: the FlashDMoE wire protocol
//!
//! Pure data and pure functions shared by every FlashDMoE backend (the CPU simulator, the CUDA
//! kernel) and reusable on its own:
//!
//! * [`HeapLayout`]: the symmetric heap every rank allocates, with the byte offset of every
//!   data region, signal and counter;
//! * [`signal`]: the 64-bit signal words (epoch + payload) and their validating decoders;
//! * [`Epoch`]: the per-forward sequence number that makes flag clearing unnecessary;
//! * [`TaskDescriptor`]: the 64-byte `#[repr(C)]` tile task;
//! * [`graph`]: the tile task graph (tasks per packet, GEMM0 -> GEMM1 row-tile dependencies,
//!   combine arrivals, the exact per-rank termination bound);
//! * [`c_header`]: the C header the CUDA kernel includes, generated from these definitions.
//!
//! ## Invariants
//!
//! * No threads, no I/O, no CUDA, no global state: `no_std` + `alloc` without the `std`
//!   feature, and no dependencies.
//! * Offsets, never pointers: a descriptor or offset means the same place on every rank, in the
//!   simulator and on the GPU.
//! * Decoders never panic: any bytes or words give a value or a [`ProtoError`] (property-tested).
//! * Layout arithmetic is checked: a geometry whose offsets would overflow `u64` is an error.
//!
//! The protocol is described in full in `docs/protocol.md`.
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
pub use graph::{RoutingPlan, SourcePlan, TaskCounts, TaskKey};
pub use header::{CField, c_header, c_struct};
pub use layout::{
    ALIGN, COUNTER_BYTES, Geometry, HeapLayout, LayoutParams, SIGNAL_BYTES, Stage, TileShape,
    div_ceil,
};
pub use task::{NO_OFFSET, TASK_BYTES, TaskDescriptor, TaskKind};
