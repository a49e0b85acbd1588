//! One process per GPU, host side: the launcher's environment (`docs/dev/process-model.md`).

mod env;

pub use env::{
    Env, EnvError, FLASHDMOE_MASTER_PORT, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT,
    RANK, TORCHELASTIC_USE_AGENT_STORE, VARS, WORLD_SIZE,
};

/// The most processes a world may have: the CUDA backend's rank limit (`MAX_RANKS`), and the
/// width of the liveness bitmask.
pub const MAX_PROCESSES: usize = 64;
