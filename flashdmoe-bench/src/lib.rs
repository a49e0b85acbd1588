//! The benchmark harness behind `flashdmoe bench` and `flashdmoe report`, and the GPU check
//! (`src/bin/gpu-check/main.rs`): one way to measure a layer and one way to record and report it.
//!
//! Entry points: [`runner::run_case`] (one case on a backend -> a [`record::Record`]),
//! [`baseline::Baseline::run`] (a PyTorch baseline on the same layer), [`table::render`] (the
//! comparison printed by `flashdmoe bench`), [`results::Results`] (reading results files) and
//! [`report::render`] (figures and page of `flashdmoe report`); the `gpu-check` binary turns
//! each of its checks into a results line through [`gpu_check::Outcome::into_line`].
//!
//! Modules, each importing only modules listed before it:
//!
//! * [`error`], with [`BenchError`].
//! * [`record`]: one measurement as a line of JSONL in the schema `flashdmoe-bench/1`, the one
//!   the PyTorch baselines (`bench/baselines/common.py`) write.
//! * [`chart`]: line and bar charts as SVG, drawn with `plotters` (knows nothing of records).
//! * [`check`]: the outcome of an untimed check, schema `flashdmoe-check/1`.
//! * [`csv`]: records as CSV. [`table`]: our records joined with the baselines' of the same
//!   layer, as the printed comparison (floor, % of floor, speedup).
//! * [`grid`]: what to run: the paper grid, a small simulator grid, presets (with `-cf<F>` /
//!   `-dropless` suffixes, the PyTorch baselines' names) or a grid file (cases in the config
//!   file schema, times a sweep).
//! * [`baseline`]: the PyTorch baselines as subprocesses over the same configs.
//! * [`results`]: results files, whose lines are measurement or check records, told apart by
//!   their schema tag.
//! * [`runner`]: runs one case on a backend: build, a first forward verified against core's
//!   oracle, warm-up, timed forwards, the last output verified again and compared bitwise with
//!   the first, one traced forward for the protocol statistics.
//! * [`gpu_check`]: what a check of the GPU check found, as a results line.
//! * [`report`]: the SVG figures and the markdown page of recorded results.
//! * [`resident`]: the GPU check of the device-resident forward (caller stream, fewer
//!   tokens, CUDA graph replays, host time a call).
//!
//! Invariants:
//!
//! * Every time is in milliseconds (`_ms`); FLOPs and floors come from core's
//!   [`perf`](flashdmoe_core::perf), the formulas the baselines use too.
//! * Simulator times are never compared with GPU times: simulator results are labelled
//!   `backend: "sim"`, carry no floor (the floor is a GPU's), and get no speedup, no % of floor
//!   and no figure of their times (their figures are protocol figures). Baselines run on the
//!   CPU (`device: "cpu"`) are functional checks and are never compared either.
//! * One measurement path: `flashdmoe bench` and the GPU check time with the same summary
//!   (core's `TimeSummary`) and write the same records; the report reads records by their
//!   schema, never by a check's name.
//! * Nothing here decides what the right output is: verification is core's oracle, in the
//!   same run as the timing.

pub mod baseline;
pub mod chart;
pub mod check;
pub mod csv;
pub mod error;
pub mod gpu_check;
pub mod grid;
pub mod record;
pub mod report;
pub mod resident;
pub mod results;
pub mod runner;
pub mod table;

pub use error::BenchError;
