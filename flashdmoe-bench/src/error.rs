//! [`BenchError`]: everything the harness can fail with, each naming what was wrong.

use flashdmoe_core::oracle::OracleError;
use flashdmoe_core::{BackendError, ConfigError};

/// Everything the harness can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A layer config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A grid name, preset or grid file is wrong.
    #[error("grid: {0}")]
    Grid(String),
    /// A run option is out of range.
    #[error("{0}")]
    Options(String),
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A line of a results file is not a valid record.
    #[error("{source_name}:{line}: {message}")]
    Record {
        /// The file (or stream) the line came from.
        source_name: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The backend failed (build or forward).
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The oracle could not check an output (malformed shapes: a bug, not a mismatch).
    #[error("cannot verify: {0}")]
    Oracle(#[from] OracleError),
    /// A baseline could not be run, or gave no usable result.
    #[error("baseline {name}: {message}")]
    Baseline {
        /// The baseline (`torch-single`, `torch-ep`).
        name: &'static str,
        /// What went wrong.
        message: String,
    },
    /// A chart could not be drawn (a bug: the report draws only what its scales can show).
    #[error("plot {file}: {message}")]
    Plot {
        /// The chart's file name.
        file: &'static str,
        /// What went wrong.
        message: String,
    },
}

impl BenchError {
    /// An I/O error on `path`.
    pub fn io(path: &std::path::Path, e: impl std::fmt::Display) -> BenchError {
        BenchError::Io { path: path.display().to_string(), message: e.to_string() }
    }
}
