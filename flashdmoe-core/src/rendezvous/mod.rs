//! One process per GPU, host side: rendezvous from the launcher's environment
//! (`docs/dev/process-model.md`, section 2). This layer knows nothing of GPUs; the NCCL heap is
//! built on top of it.
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
//!
//! ## Invariants
//!
//! * Nothing waits without a deadline: every store operation ends by its timeout with
//!   [`RendezvousError::Timeout`] naming the ranks that never arrived (rank 0 sends its verdict
//!   to the others, so every rank reports the same missing ranks).
//! * A world has at most [`MAX_PROCESSES`] processes.
//! * Module layering, bottom up: `env`; `error`; `wire`; `net`; `store`.

mod env;
mod error;
mod net;
mod store;
mod wire;

#[cfg(test)]
mod tests;

pub use env::{
    Env, EnvError, FLASHDMOE_MASTER_PORT, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT,
    RANK, TORCHELASTIC_USE_AGENT_STORE, VARS, WORLD_SIZE,
};
pub use error::{Op, RendezvousError};
pub use store::{Store, StoreOptions};

/// The most processes a world may have: the CUDA backend's rank limit (`MAX_RANKS`), and the
/// width of the liveness bitmask.
pub const MAX_PROCESSES: usize = 64;
