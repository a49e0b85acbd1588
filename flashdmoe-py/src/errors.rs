//! Rust errors as Python exceptions: core's typed errors keep their text, and their kind picks
//! the exception class.
//!
//! | error | exception |
//! |---|---|
//! | [`BindError`]: not a tensor, wrong dtype | `TypeError` |
//! | [`BindError`]: wrong device (a CUDA tensor where host memory is needed too), shape, layout, too many tokens, bad values | `ValueError` |
//! | [`ConfigError`], [`WeightsError`] (but I/O), [`BackendError::InvalidInput`] | `ValueError` |
//! | [`WeightsError::Io`] | `OSError` |
//! | [`BackendError::Timeout`] | `TimeoutError` |
//! | any other [`BackendError`] | `RuntimeError` |

use flashdmoe_core::{BackendError, ConfigError, WeightsError};
use pyo3::PyErr;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTimeoutError, PyTypeError, PyValueError};

use crate::tensor::BindError;

impl From<BindError> for PyErr {
    fn from(e: BindError) -> PyErr {
        let text = e.to_string();
        match e {
            BindError::NotATensor { .. } | BindError::DType { .. } => PyTypeError::new_err(text),
            BindError::Device { .. }
            | BindError::NotOnHost { .. }
            | BindError::Shape { .. }
            | BindError::NotContiguous { .. }
            | BindError::TooManyTokens { .. }
            | BindError::Value { .. } => PyValueError::new_err(text),
        }
    }
}

/// A configuration error (`ValueError`, naming the field).
pub fn config(e: ConfigError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// A weights error: `OSError` for a file that cannot be read, else `ValueError`.
pub fn weights(e: WeightsError) -> PyErr {
    match e {
        WeightsError::Io { .. } => PyOSError::new_err(e.to_string()),
        _ => PyValueError::new_err(e.to_string()),
    }
}

/// A backend error (see the module table).
pub fn backend(e: BackendError) -> PyErr {
    match e {
        BackendError::Config(_) | BackendError::InvalidInput { .. } => {
            PyValueError::new_err(e.to_string())
        }
        BackendError::Timeout(_) => PyTimeoutError::new_err(e.to_string()),
        _ => PyRuntimeError::new_err(e.to_string()),
    }
}
