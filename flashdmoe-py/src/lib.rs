//! # flashdmoe-py: the `flashdmoe._native` extension module
//!
//! The Rust half of the `flashdmoe` Python package (`python/flashdmoe`, documented in
//! `docs/python.md`). The Python half is a `torch.nn.Module` and a `torch.library` custom op;
//! this half checks the tensors it is handed, reads and writes their memory in place, and runs
//! core's layer on them.
//!
//! Modules, each depending only on those above it:
//!
//! * [`tensor`]: what a torch tensor is from here (device, dtype, shape, layout, data pointer),
//!   the checks that name the offending argument, and the reads and writes of host memory;
//! * [`spec`]: the `flashdmoe.MoE` arguments as core's `MoeConfig`;
//! * [`errors`]: Rust errors as Python exceptions;
//! * [`device`]: the CUDA layer of an engine: the device-resident forward on the caller's
//!   stream, and the checks of CUDA tensors;
//! * [`group`]: the bootstrap of a group of processes, one GPU each (`group=`), through the
//!   caller's `torch.distributed` group;
//! * [`engine`]: the `Engine` class: weights, and the forward on the backend the input's
//!   device selects (CPU: the simulator; CUDA: [`device`]).

pub mod device;
pub mod engine;
pub mod errors;
pub mod group;
pub mod spec;
pub mod tensor;

/// The extension module.
#[pyo3::pymodule]
mod _native {
    #[pymodule_export]
    use super::engine::Engine;
    #[pymodule_export]
    use super::group::{Group, StoreHost, probe};

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))
    }
}
