//! The benchmark harness behind `flashdmoe bench` and `flashdmoe report`, as a library.
//!
//! Layers, from the bottom:
//!
//! * [`grid`]: what to run: the paper grid, a small simulator grid, presets (with `-cf<F>` /
//!   `-dropless` suffixes, the PyTorch baselines' names) or a grid file (cases in the config
//!   file schema, times a sweep).
//! * [`record`]: one result as a line of JSONL in the schema `flashdmoe-bench/1`, the one the
//!   PyTorch baselines (`bench/baselines/common.py`) write; [`csv`] writes the same records as
//!   CSV.
//! * [`runner`]: runs one case on a backend: build, a first forward verified against core's
//!   oracle, warm-up, timed forwards, the last output verified again and compared bitwise with
//!   the first, one traced forward for the protocol statistics. Produces a [`record::Record`].
//! * [`baseline`]: the PyTorch baselines as subprocesses over the same configs.
//! * [`table`]: joins our records with baseline records of the same layer and prints the
//!   comparison (floor, % of floor, speedup).
//! * [`report`] over [`plot`] over [`svg`]: the SVG plots and the markdown page of recorded
//!   results; [`report::import`] also reads the JSONL the GPU check (`gpu-check`) wrote.
//!
//! Invariants:
//!
//! * Every time is in milliseconds (`_ms`); FLOPs and floors come from core's
//!   [`perf`](flashdmoe_core::perf), the formulas the baselines use too.
//! * Simulator results are labelled `backend: "sim"`, carry no floor (the floor is a GPU's),
//!   and are never put side by side with a GPU time: no speedup, no % of floor, no plot shared
//!   with GPU results. Baselines run on the CPU (`device: "cpu"`) are functional checks and are
//!   never compared either.
//! * Nothing here decides what the right output is: verification is core's oracle, in the
//!   same run as the timing.

pub mod baseline;
pub mod csv;
pub mod grid;
pub mod plot;
pub mod record;
pub mod report;
pub mod runner;
pub mod svg;
pub mod table;

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
}

impl BenchError {
    /// An I/O error on `path`.
    pub fn io(path: &std::path::Path, e: impl std::fmt::Display) -> BenchError {
        BenchError::Io { path: path.display().to_string(), message: e.to_string() }
    }
}
