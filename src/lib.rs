//! # flashdmoe: a distributed Mixture-of-Experts layer as one persistent GPU kernel
//!
//! The facade of the workspace: it re-exports the crates under short names, so one dependency
//! gives the whole API, and builds the `flashdmoe` command-line tool (`src/main.rs`).
//!
//! * [`proto`]: the wire protocol (symmetric-heap layout, signal words, epochs, task
//!   descriptors, tile task graph, C header); `no_std`, usable on its own.
//! * [`core`](mod@core): what a layer is and what the right answer is (config, routing, seeded
//!   weights, the CPU oracle, the `Backend` trait and the runtime roles shared by the backends).
//!   Named `core` after its crate; inside this crate the standard library's `core` is reached as
//!   `::core`.
//! * [`sim`]: the CPU simulator backend, which runs everywhere.
//! * [`cuda`]: the GPU backend.
//! * [`bench`](mod@bench): the benchmark harness (`flashdmoe-bench`) behind `flashdmoe bench`
//!   and `flashdmoe report`: grids, oracle-verified timing, result records shared with the
//!   PyTorch baselines and the GPU check, comparison table, SVG figures.
//!
//! Architecture invariant: the facade holds no MoE logic of its own; everything it exports is
//! defined in the crates below it.
//!
//! ```
//! use flashdmoe::core::MoeConfig;
//!
//! let config = MoeConfig::default();
//! config.validate().unwrap();
//! let geometry = config.geometry(flashdmoe::core::config::NOMINAL_TILE).unwrap();
//! let layout = flashdmoe::proto::HeapLayout::new(geometry).unwrap();
//! assert!(layout.total_bytes() > 0);
//! ```

pub use flashdmoe_bench as bench;

/// The README's Rust blocks, compiled as doctests (the device-resident example).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use flashdmoe_core as core;
pub use flashdmoe_cuda as cuda;
pub use flashdmoe_proto as proto;
pub use flashdmoe_sim as sim;
