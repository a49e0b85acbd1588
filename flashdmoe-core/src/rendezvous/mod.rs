//! One process per GPU, host side: rendezvous from the launcher's environment, and a liveness
//! mesh so that a rank that dies never hangs the others (`docs/dev/process-model.md`, sections
//! 2 and 3). This layer knows nothing of GPUs; the NCCL heap is built on top of it.
//!
//! A process's bootstrap, in order:
//!
//! 1. [`Env::from_env`]: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`,
//!    `MASTER_PORT` as torchrun sets them (`FLASHDMOE_MASTER_PORT` overrides the port, which
//!    torchrun's agent store may hold).
//! 2. [`Store::connect`]: rank 0 listens, the others connect (retrying until rank 0 is up);
//!    then collectives through rank 0: [`Store::exchange_fingerprints`] (every rank must build
//!    the same layer), [`Store::broadcast`] (the NCCL unique id, later), [`Store::all_gather`]
//!    (small blobs such as addresses), [`Store::barrier`].
//! 3. [`Liveness::start`]: a connection between every pair of processes and a watcher thread;
//!    [`Liveness::check`] then says in one atomic load whether a peer is gone.
//!
//! ```no_run
//! use flashdmoe_core::rendezvous::{Env, Liveness, LivenessOptions, Store, StoreOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let env = Env::from_env()?;
//! let mut store = Store::connect(&env, &StoreOptions::default())?;
//! store.exchange_fingerprints(b"hash of the layer config")?;
//! let id = store.broadcast(if env.rank == 0 { b"unique id" } else { &[] })?;
//! let mesh = Liveness::start(&mut store, &LivenessOptions::default())?;
//! store.barrier()?;
//! drop(store);
//! for _step in 0..3 {
//!     mesh.check()?; // "peer rank N is gone: ..." in microseconds once one died
//!     // ... work with `id` ...
//! }
//! mesh.close(); // a goodbye: the peers do not take this exit for a death
//! # let _ = id;
//! # Ok(())
//! # }
//! ```
//!
//! ## Invariants
//!
//! * Nothing waits without a deadline: every store operation and the mesh set-up end by their
//!   timeout with [`RendezvousError::Timeout`] naming the ranks that never arrived (rank 0
//!   sends its verdict to the others, so every rank reports the same missing ranks).
//! * A world has at most [`MAX_PROCESSES`] processes, so a set of ranks is one `u64`
//!   ([`RankSet`]); the liveness bitmask is one `AtomicU64`.
//! * Dead is not left: a peer that closed its [`Liveness`] (or dropped it, not panicking) said
//!   goodbye first and is never reported dead; a killed, crashed or panicking one is.
//! * Module layering, bottom up: `env`; `error`; `wire`; `net`; `store`; `mesh`; `liveness`.

mod env;
mod error;
mod liveness;
mod mesh;
mod net;
mod store;
mod wire;

#[cfg(test)]
mod mesh_tests;
#[cfg(test)]
mod processes;
#[cfg(test)]
mod tests;

pub use env::{
    Env, EnvError, FLASHDMOE_MASTER_PORT, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT,
    RANK, TORCHELASTIC_USE_AGENT_STORE, VARS, WORLD_SIZE,
};
pub use error::{Gone, Op, PeerGone, RendezvousError};
pub use liveness::{Liveness, LivenessOptions, RankSet, Watch};
pub use store::{Store, StoreOptions};

/// The most processes a world may have: the CUDA backend's rank limit (`MAX_RANKS`), and the
/// width of the liveness bitmask.
pub const MAX_PROCESSES: usize = 64;
