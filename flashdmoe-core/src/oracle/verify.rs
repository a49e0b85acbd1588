//! [`verify`]: a backend's forward against the oracle, rows sampled or all (module doc of
//! [`super`]).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{OracleError, check_routing, reference_rows};
use crate::backend::RankOutput;
use crate::config::MoeConfig;
use crate::dtype::DType;
use crate::perf;
use crate::rng::{SplitMix64, mix};
use crate::routing::{RoutingError, check_len};
use crate::weights::LayerWeights;

/// Most individual failures a [`VerifyReport`] lists (all are counted).
pub const MAX_LISTED_FAILURES: usize = 16;

/// Which rows [`verify`] checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sample {
    /// Every token of every rank.
    #[default]
    All,
    /// `per_rank` distinct tokens of each rank (all when it has fewer), drawn with `seed`;
    /// without a seed a fresh one is drawn from the clock, so every run checks other rows. The
    /// seed used is in [`VerifyReport::sample_seed`] to reproduce a failure.
    Rows {
        /// Tokens checked per rank.
        per_rank: u32,
        /// Seed of the draw.
        seed: Option<u64>,
    },
}

/// Above this many output rows (all ranks), [`Sample::sized_for`] samples.
pub const FULL_CHECK_ROWS: u64 = 8192;

/// Above this many multiply-adds for checking every row (all ranks), [`Sample::sized_for`]
/// samples: 2^37, about the paper layer at T = 4096 (seconds of f64 on a 16-core host), where
/// a real model's layer at the same T is 10x more (DeepSeek-V3's routed experts: 1.4 x 10^12).
pub const FULL_CHECK_MACS: f64 = (1u64 << 37) as f64;

impl Sample {
    /// Every row when the layer's output is small enough to check whole on a host (at most
    /// [`FULL_CHECK_ROWS`] rows and [`FULL_CHECK_MACS`] multiply-adds), else a fresh sample
    /// of `per_rank` rows per rank. The one rule of every checking harness.
    pub fn sized_for(config: &MoeConfig, per_rank: u32) -> Sample {
        let rows = u64::from(config.world) * u64::from(config.tokens_per_rank);
        let macs = f64::from(config.world) * perf::layer_flops(config) / 2.0;
        if rows <= FULL_CHECK_ROWS && macs <= FULL_CHECK_MACS {
            Sample::All
        } else {
            Sample::Rows { per_rank, seed: None }
        }
    }
}

/// Options of [`verify`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct VerifyOptions {
    /// Which rows to check.
    pub sample: Sample,
    /// Overrides [`DType::tolerance`].
    pub tolerance: Option<f64>,
}

/// One `(rank, token)` output row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowId {
    /// Rank.
    pub rank: u32,
    /// Token within the rank.
    pub token: u32,
}

/// One thing [`verify`] found wrong.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// A rank's output has the wrong number of elements.
    OutputShape {
        /// The rank.
        rank: u32,
        /// Elements expected.
        expected: usize,
        /// Elements found.
        found: usize,
    },
    /// A rank's routing differs from the CPU router beyond a near tie.
    Routing {
        /// The rank.
        rank: u32,
        /// What differs.
        reason: String,
    },
    /// An output row exceeds the tolerance.
    Row {
        /// The row.
        row: RowId,
        /// `max |out - ref|` over the row.
        max_abs: f64,
        /// `max_abs / max |ref|` over the row (infinite for a non-zero row whose reference is
        /// zero or for a non-finite output).
        rel: f64,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::OutputShape { rank, expected, found } => {
                write!(f, "rank {rank}: output has {found} elements, expected {expected}")
            }
            Failure::Routing { rank, reason } => write!(f, "rank {rank}: routing: {reason}"),
            Failure::Row { row, max_abs, rel } => write!(
                f,
                "rank {} token {}: max abs error {max_abs:.3e}, relative {rel:.3e}",
                row.rank, row.token
            ),
        }
    }
}

/// The result of [`verify`].
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyReport {
    /// The dtype checked.
    pub dtype: DType,
    /// The relative tolerance applied.
    pub tolerance: f64,
    /// The sampling seed, when rows were sampled.
    pub sample_seed: Option<u64>,
    /// Output rows compared with the oracle.
    pub rows_checked: u64,
    /// Output rows of the forward (`world * tokens_per_rank`).
    pub rows_total: u64,
    /// Largest `|out - ref|` over the checked rows.
    pub max_abs: f64,
    /// Largest per-row relative error (see [`Failure::Row`]).
    pub max_rel: f64,
    /// The row with the largest relative error.
    pub worst: Option<RowId>,
    /// Tokens whose backend routing differed from the CPU's by accepted near ties.
    pub near_ties: u64,
    /// Number of failures found (rows over tolerance count one each).
    pub failure_count: u64,
    /// The first [`MAX_LISTED_FAILURES`] failures.
    pub failures: Vec<Failure>,
}

impl VerifyReport {
    /// Whether the forward matched the oracle.
    pub fn passed(&self) -> bool {
        self.failure_count == 0
    }

    fn fail(&mut self, failure: Failure) {
        self.failure_count += 1;
        if self.failures.len() < MAX_LISTED_FAILURES {
            self.failures.push(failure);
        }
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}/{} rows checked",
            if self.passed() { "PASS" } else { "FAIL" },
            self.rows_checked,
            self.rows_total
        )?;
        if let Some(seed) = self.sample_seed {
            write!(f, " (sample seed {seed})")?;
        }
        write!(
            f,
            ", max abs {:.3e}, max rel {:.3e} (tolerance {:.3e}, {})",
            self.max_abs, self.max_rel, self.tolerance, self.dtype
        )?;
        if let Some(w) = self.worst {
            write!(f, ", worst rank {} token {}", w.rank, w.token)?;
        }
        if self.near_ties > 0 {
            write!(f, ", {} near-tie routing differences accepted", self.near_ties)?;
        }
        for failure in &self.failures {
            write!(f, "\n  {failure}")?;
        }
        let unlisted = self.failure_count - self.failures.len() as u64;
        if unlisted > 0 {
            write!(f, "\n  ... and {unlisted} more failures")?;
        }
        Ok(())
    }
}

/// Checks a backend's forward (`outputs[rank]` for `inputs[rank]`) against the oracle (module
/// doc). Errors only when the config, weights or inputs are malformed; every mismatch of the
/// outputs is a [`Failure`] in the report.
pub fn verify(
    config: &MoeConfig,
    weights: &LayerWeights,
    inputs: &[Vec<f32>],
    outputs: &[RankOutput],
    options: &VerifyOptions,
) -> Result<VerifyReport, OracleError> {
    let world = config.world as usize;
    for (what, n) in [("inputs", inputs.len()), ("outputs", outputs.len())] {
        if n != world {
            return Err(RoutingError::Shape { what, expected: world, actual: n }.into());
        }
    }
    verify_ranks(config, weights, 0, inputs, outputs, options)
}

/// [`verify`] of the consecutive ranks `first..first + inputs.len()` only (one process of a
/// world of processes holds its own ranks' outputs): `inputs[i]` and `outputs[i]` are rank
/// `first + i`'s. The rows sampled for a rank are those [`verify`] would check.
pub fn verify_ranks(
    config: &MoeConfig,
    weights: &LayerWeights,
    first: u32,
    inputs: &[Vec<f32>],
    outputs: &[RankOutput],
    options: &VerifyOptions,
) -> Result<VerifyReport, OracleError> {
    weights.check_shapes(config)?;
    if inputs.len() != outputs.len() || first as usize + inputs.len() > config.world as usize {
        return Err(RoutingError::Shape {
            what: "outputs",
            expected: inputs.len(),
            actual: outputs.len(),
        }
        .into());
    }
    let (t, h) = (config.tokens_per_rank, config.hidden as usize);
    let sample_seed = match options.sample {
        Sample::All => None,
        Sample::Rows { seed, .. } => Some(seed.unwrap_or_else(fresh_seed)),
    };
    let mut report = VerifyReport {
        dtype: config.dtype,
        tolerance: options.tolerance.unwrap_or(config.dtype.tolerance()),
        sample_seed,
        rows_checked: 0,
        rows_total: inputs.len() as u64 * t as u64,
        max_abs: 0.0,
        max_rel: 0.0,
        worst: None,
        near_ties: 0,
        failure_count: 0,
        failures: Vec::new(),
    };
    for (rank, (input, output)) in inputs.iter().zip(outputs).enumerate() {
        let rank = first + rank as u32;
        check_len("input", input, t as usize * h)?;
        let routing = match check_routing(config, weights, input, &output.routing) {
            Ok(checked) => {
                report.near_ties += checked.near_ties;
                checked.routing
            }
            Err(reason) => {
                report.fail(Failure::Routing { rank, reason });
                continue;
            }
        };
        if output.output.len() != t as usize * h {
            let (expected, found) = (t as usize * h, output.output.len());
            report.fail(Failure::OutputShape { rank, expected, found });
            continue;
        }
        let tokens = match (options.sample, sample_seed) {
            (Sample::Rows { per_rank, .. }, Some(seed)) => sample_tokens(t, per_rank, seed, rank),
            _ => (0..t).collect(),
        };
        let reference = reference_rows(config, weights, input, &routing, &tokens)?;
        for (&token, want) in tokens.iter().zip(reference.chunks_exact(h)) {
            let got = &output.output[token as usize * h..][..h];
            let (max_abs, rel) = row_error(got, want);
            let row = RowId { rank, token };
            report.rows_checked += 1;
            report.max_abs = report.max_abs.max(max_abs);
            if report.worst.is_none() || rel > report.max_rel {
                report.max_rel = rel;
                report.worst = Some(row);
            }
            if rel.is_nan() || rel > report.tolerance {
                report.fail(Failure::Row { row, max_abs, rel });
            }
        }
    }
    Ok(report)
}

/// `(max |got - want|, that / max |want|)` of one row; NaN compares as infinitely wrong.
fn row_error(got: &[f32], want: &[f32]) -> (f64, f64) {
    let scale = want.iter().fold(0.0f64, |m, &v| m.max((v as f64).abs()));
    let max_abs = got.iter().zip(want).fold(0.0f64, |m, (&g, &w)| {
        let d = (g as f64 - w as f64).abs();
        if d.is_nan() { f64::INFINITY } else { m.max(d) }
    });
    let rel = if max_abs == 0.0 { 0.0 } else { max_abs / scale };
    (max_abs, rel)
}

fn fresh_seed() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    mix(nanos ^ u64::from(std::process::id()).rotate_left(32))
}

/// `per_rank` distinct tokens of `0..tokens` (all when fewer), ascending, drawn with the
/// splitmix64 stream of `(seed, rank)` by a partial Fisher-Yates shuffle (modulo bias below
/// `2^-32`, irrelevant here).
pub(super) fn sample_tokens(tokens: u32, per_rank: u32, seed: u64, rank: u32) -> Vec<u32> {
    let mut all: Vec<u32> = (0..tokens).collect();
    let n = per_rank.min(tokens) as usize;
    let mut rng = SplitMix64::for_tensor(seed, rank as u64);
    for i in 0..n {
        let j = i + (rng.next() % (all.len() - i) as u64) as usize;
        all.swap(i, j);
    }
    all.truncate(n);
    all.sort_unstable();
    all
}
