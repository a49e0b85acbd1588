//! The CPU reference forward (the oracle) and the verification of a backend's output.
//!
//! The oracle computes one rank's output rows in `f64` accumulation, rounding to the dtype at
//! exactly the agreed points:
//!
//! 1. GEMM0: `u_i = x . up[e][i] (+ ub[e][i])` and, for SwiGLU, `g_i = x . gate[e][i]
//!    (+ gb[e][i])`, accumulated in `f64`; `h_i = act(u_i, g_i)`
//!    ([`crate::config::Activation::eval`]) is rounded to the dtype (the intermediate rows);
//! 2. GEMM1: `y_o = w * (h . down[e][o] (+ db[e][o]))` in `f64`, with `w` the slot's routing
//!    weight (the owner's GEMM1 epilogue applies it: the weight travels with the dispatched
//!    row), rounded to the dtype (the return rows);
//! 3. shared experts (when the config has them): steps 1-2 for the token with the shared
//!    SwiGLU (silu, no biases, intermediate size `S = count * inter`), `ys_o` rounded to the
//!    dtype; its scale `gs` is 1, or with Qwen's gate `gs = sigmoid(x . gate_row)`, the dot in
//!    `f64` rounded to `f32`, the sigmoid in `f32`;
//! 4. combine: `out_o = sum_j y_j,o (+ gs * ys_o)` over the token's kept slots in slot order
//!    (a plain sum: the weights are in the rows), then the shared term, in `f64`, rounded to
//!    the dtype. Dropped slots contribute nothing; a token whose slots are all dropped outputs
//!    its shared term alone (zeros without shared experts).
//!
//! (Rounding from `f64` goes through `f32`, as a stored `f32` accumulator would.)
//!
//! Only a token's own routing matters for its output (capacity is per source rank), so a rank
//! is checked against the oracle on its own, and a sample of its rows can be checked without
//! computing the others.
//!
//! [`verify`] compares a backend's forward with the oracle:
//!
//! * Routing: the backend's expert choice must equal the CPU router's ([`crate::routing`]),
//!   except near ties: slot `j` may hold expert `b` instead of the CPU's `c` when their CPU
//!   choice scores (the probabilities of a softmax router) differ by at most
//!   [`ROUTING_TIE_TOLERANCE`] relative to the larger (for a softmax, about that much difference
//!   in logits; relative to at least 1 where choice scores are logits or biased), which covers
//!   `f32` versus `f64` logit accumulation. With grouped top-k the backend may also have kept
//!   other groups than the CPU when their group scores tie within the same tolerance: its
//!   choice is then compared within the groups it kept. The backend's combine weights must be
//!   within [`WEIGHT_TOLERANCE`] of the weights the CPU computes for the backend's choice, and
//!   its packet rows (capacity drops) must be exactly those that choice implies. The reference output is then computed with the
//!   backend's choice and the CPU's weights for it.
//! * Output: every checked row must satisfy `max_o |out_o - ref_o| <= tol * max_o |ref_o|`,
//!   with `tol` the dtype's [`DType::tolerance`] unless overridden; an all-zero reference row
//!   must be exactly zero.
//!
//! Invariant: the oracle never reads another rank's data and never depends on thread count;
//! the same inputs give bitwise the same reference.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;

use crate::backend::RankOutput;
use crate::config::{Activation, ConfigError, Groups, MoeConfig, Scoring};
use crate::dtype::DType;
use crate::parallel::fill_rows;
use crate::perf;
use crate::rng::{SplitMix64, mix};
use crate::routing::{
    DROPPED, RankRouting, Router, RoutingError, check_len, combine_weights, group_scores,
    router_scores, sigmoid, top_k,
};
use crate::weights::{LayerWeights, WeightsError};

/// Largest accepted relative difference between the CPU probabilities of two experts a backend
/// may swap (a near tie). `f32` logit accumulation over `H` terms is off by well under `1e-5`.
pub const ROUTING_TIE_TOLERANCE: f32 = 1e-4;

/// Largest accepted absolute difference between a backend's combine weight and the CPU's.
pub const WEIGHT_TOLERANCE: f32 = 1e-4;

/// Most individual failures a [`VerifyReport`] lists (all are counted).
pub const MAX_LISTED_FAILURES: usize = 16;

/// Why the oracle could not run (bad shapes); mismatches are reported, not errors.
#[derive(Clone, Debug, PartialEq, Error)]
#[non_exhaustive]
pub enum OracleError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The weights do not fit the config.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The input or routing is malformed.
    #[error(transparent)]
    Routing(#[from] RoutingError),
    /// A requested token does not exist.
    #[error("token {token} out of range: the rank has {tokens} tokens")]
    Token {
        /// The token.
        token: u32,
        /// Tokens per rank.
        tokens: u32,
    },
}

/// The reference output rows of `tokens` (`[tokens.len()][hidden]`) of one rank with `input`
/// (`[tokens_per_rank][hidden]`) routed by `routing`.
pub fn reference_rows(
    config: &MoeConfig,
    weights: &LayerWeights,
    input: &[f32],
    routing: &RankRouting,
    tokens: &[u32],
) -> Result<Vec<f32>, OracleError> {
    weights.check_shapes(config)?;
    let (t, h, i) =
        (config.tokens_per_rank as usize, config.hidden as usize, config.inter as usize);
    check_len("input", input, t * h)?;
    check_routing_shape(config, routing)?;
    if let Some(&token) = tokens.iter().find(|&&tok| tok as usize >= t) {
        return Err(OracleError::Token { token, tokens: config.tokens_per_rank });
    }
    let k = config.top_k as usize;
    let gemms = if config.activation.is_gated() { 3 } else { 2 };
    let shared = shared_mlp(config, weights);
    let shared_cost = shared.as_ref().map_or(0, |m| 3 * h * m.inter);
    let mut out = vec![0.0f32; tokens.len() * h];
    fill_rows(&mut out, h, k * gemms * h * i + shared_cost, |first, block| {
        let mut scratch = ExpertScratch::new(config);
        let mut acc = vec![0.0f64; h];
        for (row, out_row) in block.chunks_exact_mut(h).enumerate() {
            let token = tokens[first + row] as usize;
            let x = &input[token * h..][..h];
            acc.fill(0.0);
            for j in 0..k {
                let slot = token * k + j;
                if routing.rows[slot] == DROPPED {
                    continue;
                }
                let mlp = expert_mlp(config, weights, routing.experts[slot] as usize);
                let y = scratch.forward(config, &mlp, x, routing.weights[slot] as f64);
                acc.iter_mut().zip(y).for_each(|(a, &v)| *a += v as f64);
            }
            if let Some(mlp) = &shared {
                let gs = shared_scale(weights, x) as f64;
                let y = scratch.forward(config, mlp, x, 1.0);
                acc.iter_mut().zip(y).for_each(|(a, &v)| *a += gs * v as f64);
            }
            for (o, &a) in out_row.iter_mut().zip(&acc) {
                *o = config.dtype.round(a as f32);
            }
        }
    });
    Ok(out)
}

/// The reference output of every token of one rank (`[tokens_per_rank][hidden]`).
pub fn reference_rank(
    config: &MoeConfig,
    weights: &LayerWeights,
    input: &[f32],
    routing: &RankRouting,
) -> Result<Vec<f32>, OracleError> {
    let tokens: Vec<u32> = (0..config.tokens_per_rank).collect();
    reference_rows(config, weights, input, routing, &tokens)
}

fn check_routing_shape(config: &MoeConfig, routing: &RankRouting) -> Result<(), RoutingError> {
    let pairs = config.tokens_per_rank as usize * config.top_k as usize;
    let lens = [
        ("routing.experts", routing.experts.len()),
        ("routing.weights", routing.weights.len()),
        ("routing.rows", routing.rows.len()),
    ];
    match lens.iter().find(|&&(_, n)| n != pairs) {
        Some(&(what, actual)) => Err(RoutingError::Shape { what, expected: pairs, actual }),
        None if routing.top_k != config.top_k => Err(RoutingError::Shape {
            what: "routing.top_k",
            expected: config.top_k as usize,
            actual: routing.top_k as usize,
        }),
        None => match routing.experts.iter().position(|&e| e >= config.experts) {
            Some(slot) => Err(RoutingError::BadChoice {
                token: (slot / config.top_k as usize) as u32,
                reason: format!(
                    "expert {} out of range ({} experts)",
                    routing.experts[slot], config.experts
                ),
            }),
            None => Ok(()),
        },
    }
}

/// One SwiGLU/relu/gelu MLP's tensors: a routed expert or the shared experts.
struct Mlp<'a> {
    /// Intermediate size.
    inter: usize,
    activation: Activation,
    /// `[inter][hidden]`.
    up: &'a [f32],
    /// `[inter][hidden]`, gated activations only.
    gate: Option<&'a [f32]>,
    /// `[hidden][inter]`.
    down: &'a [f32],
    up_bias: Option<&'a [f32]>,
    gate_bias: Option<&'a [f32]>,
    down_bias: Option<&'a [f32]>,
}

/// Routed expert `e`'s MLP.
fn expert_mlp<'a>(config: &MoeConfig, w: &'a LayerWeights, e: usize) -> Mlp<'a> {
    let (h, i) = (config.hidden as usize, config.inter as usize);
    let part = |t: &'a Option<Vec<f32>>, len: usize| t.as_deref().map(|t| &t[e * len..][..len]);
    Mlp {
        inter: i,
        activation: config.activation,
        up: &w.up[e * i * h..][..i * h],
        gate: part(&w.gate, i * h),
        down: &w.down[e * h * i..][..h * i],
        up_bias: part(&w.up_bias, i),
        gate_bias: part(&w.gate_bias, i),
        down_bias: part(&w.down_bias, h),
    }
}

/// The shared experts' MLP (a SwiGLU without biases), if the config has them.
fn shared_mlp<'a>(config: &MoeConfig, w: &'a LayerWeights) -> Option<Mlp<'a>> {
    let s = config.shared?;
    Some(Mlp {
        inter: s.total_inter() as usize,
        activation: Activation::SiluGated,
        up: w.shared_up.as_deref()?,
        gate: w.shared_gate.as_deref(),
        down: w.shared_down.as_deref()?,
        up_bias: None,
        gate_bias: None,
        down_bias: None,
    })
}

/// The scale `gs` of the shared experts' output for input row `x`: 1, or
/// `sigmoid(x . gate_row)` with Qwen2-MoE's sigmoid gate (the oracle's step 3).
pub fn shared_scale(weights: &LayerWeights, x: &[f32]) -> f32 {
    match &weights.shared_gate_row {
        Some(row) => {
            sigmoid(x.iter().zip(row).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() as f32)
        }
        None => 1.0,
    }
}

/// Buffers for one MLP's forward on one row.
struct ExpertScratch {
    h: Vec<f32>,
    y: Vec<f32>,
}

impl ExpertScratch {
    fn new(config: &MoeConfig) -> ExpertScratch {
        let shared = config.shared.map_or(0, |s| s.total_inter() as usize);
        ExpertScratch {
            h: vec![0.0; (config.inter as usize).max(shared)],
            y: vec![0.0; config.hidden as usize],
        }
    }

    /// `y` (dtype-rounded, `[hidden]`) of `mlp` on row `x`, scaled by `w` before the rounding:
    /// steps 1-2 of the module doc.
    fn forward(&mut self, config: &MoeConfig, mlp: &Mlp, x: &[f32], w: f64) -> &[f32] {
        let (hd, id) = (config.hidden as usize, mlp.inter);
        let dot = |a: &[f32], b: &[f32]| -> f64 {
            a.iter().zip(b).map(|(&p, &q)| p as f64 * q as f64).sum()
        };
        let bias = |b: Option<&[f32]>, idx: usize| b.map_or(0.0, |b| b[idx] as f64);
        for (i, h) in self.h[..id].iter_mut().enumerate() {
            let u = dot(x, &mlp.up[i * hd..][..hd]) + bias(mlp.up_bias, i);
            let g = match mlp.gate {
                Some(gate) => dot(x, &gate[i * hd..][..hd]) + bias(mlp.gate_bias, i),
                None => 0.0,
            };
            *h = config.dtype.round(mlp.activation.eval(u, g) as f32);
        }
        for (o, y) in self.y.iter_mut().enumerate() {
            let v = dot(&self.h[..id], &mlp.down[o * id..][..id]) + bias(mlp.down_bias, o);
            *y = config.dtype.round((w * v) as f32);
        }
        &self.y
    }
}

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
fn sample_tokens(tokens: u32, per_rank: u32, seed: u64, rank: u32) -> Vec<u32> {
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

/// A backend routing accepted by [`check_routing`].
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedRouting {
    /// The routing to compute the reference with: the backend's expert choice, the CPU's
    /// weights for it, the rows that choice implies.
    pub routing: RankRouting,
    /// Tokens whose choice differs from the CPU's by near ties.
    pub near_ties: u64,
}

/// Compares a backend's routing of one rank's `input` with the CPU router under `router`
/// (module doc). `Err` describes the first disagreement beyond tolerance.
pub fn check_routing<'a>(
    config: &MoeConfig,
    router: impl Into<Router<'a>>,
    input: &[f32],
    backend: &RankRouting,
) -> Result<CheckedRouting, String> {
    let router: Router<'a> = router.into();
    let scores =
        router_scores(config, input, router).map_err(|e| format!("the CPU router failed: {e}"))?;
    check_routing_shape(config, backend).map_err(|e| e.to_string())?;
    let k = config.top_k as usize;
    let r = &config.routing;
    // Probabilities and sigmoids compare relative to the larger; logits and biased scores
    // relative to at least 1.
    let floor = if r.scoring == Scoring::TopKSoftmax || r.selection_bias { 1.0 } else { 0.0 };
    let near =
        |a: f32, b: f32| (a - b).abs() <= ROUTING_TIE_TOLERANCE * a.abs().max(b.abs()).max(floor);
    // Slot by slot, the backend's choice b against the top-k of choice scores p.
    let slots_near = |t: usize, p: &[f32], b: &[u32]| -> Result<(), String> {
        for (j, (&bj, cj)) in b.iter().zip(top_k(p, k)).enumerate() {
            let (pb, pc) = (p[bj as usize], p[cj as usize]);
            if !near(pb, pc) {
                return Err(format!(
                    "token {t} slot {j}: backend chose expert {bj} (score {pb}), the CPU \
                     router expert {cj} (score {pc}); not a near tie (relative tolerance \
                     {ROUTING_TIE_TOLERANCE})"
                ));
            }
        }
        Ok(())
    };
    let mut near_ties = 0;
    let mut weights = Vec::with_capacity(backend.weights.len());
    for (t, b) in backend.experts.chunks_exact(k).enumerate() {
        let p = scores.choice(t);
        if b != top_k(p, k) {
            // With grouped top-k the backend may have kept other groups whose scores tie the
            // CPU's last kept one: its choice is then checked within the groups it kept.
            slots_near(t, p, b).or_else(|e| {
                let regrouped = r.groups.and_then(|g| {
                    let unmasked = unmasked_choice(scores.scores(t), router.selection_bias);
                    regroup(g, &unmasked, b, near)
                });
                regrouped.map_or(Err(e), |p2| slots_near(t, &p2, b))
            })?;
            near_ties += 1;
        }
        let expect = combine_weights(config, scores.scores(t), b);
        let got = &backend.weights[t * k..][..k];
        let off = |j: usize| {
            let d = (got[j] - expect[j]).abs();
            d.is_nan() || d > WEIGHT_TOLERANCE
        };
        if let Some(j) = (0..k).find(|&j| off(j)) {
            return Err(format!(
                "token {t} slot {j} (expert {}): combine weight {} differs from the CPU's {} by \
                 more than {WEIGHT_TOLERANCE}",
                b[j], got[j], expect[j]
            ));
        }
        weights.extend(expect);
    }
    let routing = RankRouting::from_choices(config, backend.experts.clone(), weights)
        .map_err(|e| e.to_string())?;
    if routing.rows != backend.rows || routing.expert_tokens != backend.expert_tokens {
        let slot = (0..routing.rows.len()).find(|&s| routing.rows[s] != backend.rows[s]);
        return Err(match slot {
            Some(s) => format!(
                "token {} slot {}: packet row {} where the capacity rule gives {}",
                s / k,
                s % k,
                show_row(backend.rows[s]),
                show_row(routing.rows[s])
            ),
            None => "per-expert token lists differ from the capacity rule's".to_owned(),
        });
    }
    Ok(CheckedRouting { routing, near_ties })
}

/// One token's choice scores before the group mask: its scores plus the selection bias.
fn unmasked_choice(scores: &[f32], selection_bias: Option<&[f32]>) -> Vec<f32> {
    match selection_bias {
        Some(bias) => scores.iter().zip(bias).map(|(&s, &b)| s + b).collect(),
        None => scores.to_vec(),
    }
}

/// The choice scores masked to the groups a backend's choice `b` implies, when those groups
/// are a top-`keep` set of group scores up to near ties (`near`): the groups `b` draws from,
/// filled up with the best others. `None` when `b` draws from more than `keep` groups or its
/// groups do not tie the CPU's.
fn regroup(
    groups: Groups,
    unmasked: &[f32],
    b: &[u32],
    near: impl Fn(f32, f32) -> bool,
) -> Option<Vec<f32>> {
    let per = unmasked.len() / groups.count as usize;
    let scores = group_scores(groups, unmasked);
    let mut kept: Vec<u32> = b.iter().map(|&e| e / per as u32).collect();
    kept.sort_unstable();
    kept.dedup();
    if kept.len() > groups.keep as usize {
        return None;
    }
    for g in top_k(&scores, scores.len()) {
        if kept.len() == groups.keep as usize {
            break;
        }
        if !kept.contains(&g) {
            kept.push(g);
        }
    }
    let score = |g: &u32| scores[*g as usize];
    let weakest_kept = kept.iter().map(score).fold(f32::INFINITY, f32::min);
    let best_dropped = (0..groups.count)
        .filter(|g| !kept.contains(g))
        .map(|g| scores[g as usize])
        .fold(f32::NEG_INFINITY, f32::max);
    if weakest_kept < best_dropped && !near(weakest_kept, best_dropped) {
        return None;
    }
    let mut p = unmasked.to_vec();
    for (g, chunk) in p.chunks_exact_mut(per).enumerate() {
        if !kept.contains(&(g as u32)) {
            chunk.fill(0.0);
        }
    }
    Some(p)
}

fn show_row(row: u32) -> String {
    if row == DROPPED { "dropped".to_owned() } else { row.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::RankStats;
    use crate::config::{
        Activation, CapacityPolicy, GroupScore, Routing, SharedExperts, SharedGate, SwigluOss,
    };
    use crate::routing::route;
    use crate::weights::generate_input;

    #[test]
    fn every_row_is_checked_only_when_the_rows_and_the_work_are_small() {
        let paper = |t: u32, world: u32| MoeConfig {
            world,
            tokens_per_rank: t,
            hidden: 2048,
            inter: 2048,
            experts: 8,
            top_k: 2,
            activation: Activation::Relu,
            ..MoeConfig::default()
        };
        assert_eq!(Sample::sized_for(&paper(4096, 1), 64), Sample::All);
        // Too many rows.
        let small = MoeConfig { tokens_per_rank: 8192, world: 2, ..MoeConfig::default() };
        assert_eq!(Sample::sized_for(&small, 8), Sample::Rows { per_rank: 8, seed: None });
        // Too much work: the paper layer at T = 8192 on one rank (2^38 multiply-adds).
        assert_eq!(
            Sample::sized_for(&paper(8192, 1), 64),
            Sample::Rows { per_rank: 64, seed: None }
        );
        // A real model's layer at T = 4096: DeepSeek-V3's routed experts.
        let v3 = MoeConfig {
            hidden: 7168,
            inter: 2048,
            experts: 256,
            top_k: 8,
            activation: Activation::SiluGated,
            ..paper(4096, 1)
        };
        assert!(matches!(Sample::sized_for(&v3, 64), Sample::Rows { .. }));
    }

    fn tiny(experts: u32, top_k: u32, activation: Activation, bias: bool) -> MoeConfig {
        MoeConfig {
            world: 1,
            tokens_per_rank: 1,
            hidden: 64,
            inter: 64,
            experts,
            top_k,
            activation,
            bias,
            dtype: DType::F32Exact,
            capacity: CapacityPolicy::Dropless,
            ..MoeConfig::default()
        }
    }

    fn zeros(c: &MoeConfig) -> LayerWeights {
        LayerWeights::zeros(c)
    }

    fn row(values: &[f32]) -> Vec<f32> {
        let mut v = values.to_vec();
        v.resize(64, 0.0);
        v
    }

    #[test]
    fn one_token_two_experts_by_hand() {
        // x = [ln 3, 2, 0, ...]; router: logit 0 = x[0] = ln 3, logit 1 = 0 -> p = [3/4, 1/4].
        // Expert 0: h = [relu(x0), relu(-x1)] = [ln 3, 0]; y = [2 h0, 0] = [2 ln 3, 0].
        // Expert 1: h = [x1] = [2]; y = [0, 3 h0] = [0, 6].
        // out = 3/4 [2 ln 3, 0] + 1/4 [0, 6] = [1.5 ln 3, 1.5].
        let c = tiny(2, 2, Activation::Relu, false);
        let mut w = zeros(&c);
        let (h, i) = (64, 64);
        w.router[0] = 1.0;
        w.up[0] = 1.0; // up[0][0][0]
        w.up[h + 1] = -1.0; // up[0][1][1]
        w.down[0] = 2.0; // down[0][0][0]
        w.up[i * h + 1] = 1.0; // up[1][0][1]
        w.down[h * i + i] = 3.0; // down[1][1][0]
        let x = row(&[3f32.ln(), 2.0]);
        let r = route(&c, &x, &w.router).unwrap();
        assert_eq!(r.experts, vec![0, 1]);
        let out = reference_rank(&c, &w, &x, &r).unwrap();
        let want = [1.5 * 3f64.ln(), 1.5];
        for (o, want) in out.iter().zip(want) {
            assert!((*o as f64 - want).abs() < 1e-6, "{o} vs {want}");
        }
        assert!(out[2..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn swiglu_with_biases_by_hand() {
        // One expert, k = 1 (weight 1). x = [1, 0, ...].
        // u0 = up[0][0] x0 + ub0 = 2 + 0.5; g0 = gate[0][0] x0 + gb0 = 1 + 0 -> h0 = silu(1) 2.5.
        // y0 = down[0][0] h0 + db0 = h0 - 0.25; y1 = db1 = 0.125.
        let c = tiny(1, 1, Activation::SiluGated, true);
        let mut w = zeros(&c);
        w.up[0] = 2.0;
        w.up_bias.as_mut().unwrap()[0] = 0.5;
        w.gate.as_mut().unwrap()[0] = 1.0;
        w.down[0] = 1.0;
        let db = w.down_bias.as_mut().unwrap();
        db[0] = -0.25;
        db[1] = 0.125;
        let x = row(&[1.0]);
        let r = route(&c, &x, &w.router).unwrap();
        let out = reference_rank(&c, &w, &x, &r).unwrap();
        let h0 = 2.5 / (1.0 + (-1f64).exp());
        assert!((out[0] as f64 - (h0 - 0.25)).abs() < 1e-6);
        assert_eq!(out[1], 0.125);
        assert_eq!(out[2], 0.0);
    }

    #[test]
    fn dropped_slots_contribute_nothing() {
        // T = 3, E = 2, k = 1, capacity ceil(0.5 * 3 / 2) = 1: all tokens pick expert 0, only
        // token 0 is kept; tokens 1 and 2 output zeros.
        let c = MoeConfig {
            tokens_per_rank: 3,
            capacity: CapacityPolicy::Factor(0.5),
            ..tiny(2, 1, Activation::Relu, false)
        };
        let mut w = zeros(&c);
        w.router[0] = 1.0;
        w.up[0] = 1.0;
        w.down[0] = 1.0;
        let x: Vec<f32> = [1.0, 2.0, 3.0].iter().flat_map(|&v| row(&[v])).collect();
        let r = route(&c, &x, &w.router).unwrap();
        assert_eq!(r.rows, vec![0, DROPPED, DROPPED]);
        let out = reference_rank(&c, &w, &x, &r).unwrap();
        assert_eq!(out[0], 1.0);
        assert!(out[64..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn outputs_are_representable_in_the_dtype() {
        let c = MoeConfig { world: 1, tokens_per_rank: 8, ..MoeConfig::default() };
        let w = LayerWeights::generate(&c, 3).unwrap();
        let x = generate_input(&c, 0, 3).unwrap();
        let r = route(&c, &x, &w.router).unwrap();
        let out = reference_rank(&c, &w, &x, &r).unwrap();
        assert!(out.iter().all(|&v| DType::Bf16.is_representable(v)));
        assert!(out.iter().any(|&v| v != 0.0));
        let rows = reference_rows(&c, &w, &x, &r, &[5, 2]).unwrap();
        assert_eq!(&rows[..256], &out[5 * 256..6 * 256]);
        assert_eq!(&rows[256..], &out[2 * 256..3 * 256]);
        assert_eq!(
            reference_rows(&c, &w, &x, &r, &[8]),
            Err(OracleError::Token { token: 8, tokens: 8 })
        );
    }

    /// An independent forward the way a backend computes it: `f32` accumulation, the same
    /// rounding points.
    fn f32_backend(c: &MoeConfig, w: &LayerWeights, x: &[f32], r: &RankRouting) -> Vec<f32> {
        let (h, i, k) = (c.hidden as usize, c.inter as usize, c.top_k as usize);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f32>();
        let mut out = vec![0.0; c.tokens_per_rank as usize * h];
        for t in 0..c.tokens_per_rank as usize {
            let xt = &x[t * h..][..h];
            let mut acc = vec![0.0f32; h];
            for j in 0..k {
                if r.rows[t * k + j] == DROPPED {
                    continue;
                }
                let e = r.experts[t * k + j] as usize;
                let hv: Vec<f32> = (0..i)
                    .map(|n| {
                        let ub = w.up_bias.as_ref().map_or(0.0, |b| b[e * i + n]);
                        let u = dot(xt, &w.up[(e * i + n) * h..][..h]) + ub;
                        let g = w.gate.as_ref().map_or(0.0, |g| {
                            let gb = w.gate_bias.as_ref().map_or(0.0, |b| b[e * i + n]);
                            dot(xt, &g[(e * i + n) * h..][..h]) + gb
                        });
                        c.dtype.round(c.activation.eval(u as f64, g as f64) as f32)
                    })
                    .collect();
                for (o, a) in acc.iter_mut().enumerate() {
                    let db = w.down_bias.as_ref().map_or(0.0, |b| b[e * h + o]);
                    let y = c.dtype.round(dot(&hv, &w.down[(e * h + o) * i..][..i]) + db);
                    *a += r.weights[t * k + j] * y;
                }
            }
            if let Some(shared) = c.shared {
                let si = shared.total_inter() as usize;
                let (up, gate) = (w.shared_up.as_ref().unwrap(), w.shared_gate.as_ref().unwrap());
                let hv: Vec<f32> = (0..si)
                    .map(|n| {
                        let (u, g) = (dot(xt, &up[n * h..][..h]), dot(xt, &gate[n * h..][..h]));
                        c.dtype.round(Activation::SiluGated.eval(u as f64, g as f64) as f32)
                    })
                    .collect();
                let gs = w.shared_gate_row.as_ref().map_or(1.0, |row| sigmoid(dot(xt, row)));
                let down = w.shared_down.as_ref().unwrap();
                for (o, a) in acc.iter_mut().enumerate() {
                    *a += gs * c.dtype.round(dot(&hv, &down[o * si..][..si]));
                }
            }
            for (o, a) in out[t * h..][..h].iter_mut().zip(acc) {
                *o = c.dtype.round(a);
            }
        }
        out
    }

    fn forward(c: &MoeConfig, w: &LayerWeights, seed: u64) -> (Vec<Vec<f32>>, Vec<RankOutput>) {
        let inputs: Vec<Vec<f32>> =
            (0..c.world).map(|r| generate_input(c, r, seed).unwrap()).collect();
        let outputs = inputs
            .iter()
            .map(|x| {
                let routing = route(c, x, w).unwrap();
                RankOutput {
                    output: f32_backend(c, w, x, &routing),
                    routing,
                    stats: RankStats::default(),
                    trace: None,
                }
            })
            .collect();
        (inputs, outputs)
    }

    #[test]
    fn an_f32_backend_passes_for_every_dtype_and_activation() {
        for dtype in DType::ALL {
            for activation in [Activation::Relu, Activation::Gelu, Activation::SiluGated] {
                let c = MoeConfig {
                    tokens_per_rank: 16,
                    hidden: 128,
                    inter: 256,
                    activation,
                    bias: activation == Activation::Gelu,
                    dtype,
                    ..MoeConfig::default()
                };
                let w = LayerWeights::generate(&c, 11).unwrap();
                let (inputs, outputs) = forward(&c, &w, 11);
                let report = verify(&c, &w, &inputs, &outputs, &VerifyOptions::default()).unwrap();
                assert!(report.passed(), "{dtype} {activation:?}: {report}");
                assert_eq!(report.rows_checked, 32);
                // Far from the bound: the tolerance leaves margin, but not orders of magnitude.
                assert!(report.max_rel < dtype.tolerance() / 2.0, "{dtype}: {report}");
            }
        }
    }

    /// Small layers of each real-model kind (issue 16), in `dtype`, with the shared ones'
    /// kinds first.
    fn model_kinds(dtype: DType) -> Vec<(&'static str, MoeConfig)> {
        crate::config::presets::small_model_kinds(dtype).into_iter().skip(2).collect()
    }

    #[test]
    fn an_f32_backend_passes_for_every_model_kind() {
        for dtype in DType::ALL {
            for (name, c) in model_kinds(dtype) {
                let w = LayerWeights::generate(&c, 12).unwrap();
                let (inputs, outputs) = forward(&c, &w, 12);
                let report = verify(&c, &w, &inputs, &outputs, &VerifyOptions::default()).unwrap();
                assert!(report.passed(), "{dtype} {name}: {report}");
                assert!(report.max_rel < dtype.tolerance() / 2.0, "{dtype} {name}: {report}");
            }
        }
    }

    #[test]
    fn a_missing_shared_expert_or_selection_bias_is_caught() {
        for (name, c) in model_kinds(DType::F32Exact).into_iter().take(3) {
            let w = LayerWeights::generate(&c, 13).unwrap();
            let (inputs, mut outputs) = forward(&c, &w, 13);
            // The layer without its shared experts: every row is off.
            let routed = MoeConfig { shared: None, ..c.clone() };
            let mut routed_w = w.clone();
            routed_w.shared_up = None;
            routed_w.shared_gate = None;
            routed_w.shared_down = None;
            routed_w.shared_gate_row = None;
            outputs[0].output = f32_backend(&routed, &routed_w, &inputs[0], &outputs[0].routing);
            let report = verify(&c, &w, &inputs, &outputs, &VerifyOptions::default()).unwrap();
            assert_eq!(report.failure_count, 16, "{name}: {report}");
        }
        // DeepSeek-V3 routed without its selection bias chooses other experts.
        let (_, c) = model_kinds(DType::F32Exact).swap_remove(2);
        let w = LayerWeights::generate(&c, 13).unwrap();
        let (inputs, outputs) = forward(&c, &w, 13);
        let mut unbiased = w.clone();
        unbiased.selection_bias.as_mut().unwrap().fill(0.0);
        let other = route(&c, &inputs[0], &unbiased).unwrap();
        assert_ne!(other.experts, outputs[0].routing.experts);
        let err = check_routing(&c, &w, &inputs[0], &other).unwrap_err();
        assert!(err.contains("not a near tie"), "{err}");
    }

    #[test]
    fn shared_expert_with_its_gate_by_hand() {
        // One routed expert (k = 1, weight 1) that outputs zero, and a shared expert of 64:
        // x = [1, 0, ...]; shared up[0][0] = 2, gate[0][0] = 1 -> h0 = silu(1) * 2;
        // down[0][0] = 1 -> ys0 = h0; gate row [ln 3, 0, ...] -> gs = sigmoid(ln 3) = 3/4.
        let c = MoeConfig {
            shared: Some(SharedExperts { count: 1, inter: 64, gate: SharedGate::Sigmoid }),
            activation: Activation::SiluGated,
            ..tiny(1, 1, Activation::SiluGated, false)
        };
        let mut w = zeros(&c);
        w.shared_up.as_mut().unwrap()[0] = 2.0;
        w.shared_gate.as_mut().unwrap()[0] = 1.0;
        w.shared_down.as_mut().unwrap()[0] = 1.0;
        w.shared_gate_row.as_mut().unwrap()[0] = 3f32.ln();
        let x = row(&[1.0]);
        let r = route(&c, &x, &w).unwrap();
        let out = reference_rank(&c, &w, &x, &r).unwrap();
        let h0 = 2.0 / (1.0 + (-1f64).exp());
        assert!((out[0] as f64 - 0.75 * h0).abs() < 1e-6, "{}", out[0]);
        assert!(out[1..].iter().all(|&v| v == 0.0));
        // Without the gate: the shared expert's output itself, added to the routed sum.
        let plain = MoeConfig {
            shared: Some(SharedExperts { count: 1, inter: 64, gate: SharedGate::None }),
            ..c.clone()
        };
        let mut w2 = zeros(&plain);
        w2.shared_up = w.shared_up.clone();
        w2.shared_gate = w.shared_gate.clone();
        w2.shared_down = w.shared_down.clone();
        w2.up[0] = 1.0; // routed expert: u0 = 1, g0 = 0 -> h0 = 0: contributes 0
        let out = reference_rank(&plain, &w2, &x, &route(&plain, &x, &w2).unwrap()).unwrap();
        assert!((out[0] as f64 - h0).abs() < 1e-6, "{}", out[0]);
        // A token whose slots are all dropped keeps its shared term.
        let dropped = RankRouting { rows: vec![DROPPED], ..r.clone() };
        let out = reference_rank(&c, &w, &x, &dropped).unwrap();
        assert!((out[0] as f64 - 0.75 * h0).abs() < 1e-6);
    }

    #[test]
    fn gpt_oss_expert_by_hand() {
        // One expert with biases: x = [1, 0, ...]; u0 = up 9 + ub 0.5 = 9.5 -> clamped to 7;
        // g0 = gate 1 + gb 0.25 = 1.25 -> h0 = (7 + 1) * 1.25 * sigmoid(1.702 * 1.25);
        // u1 = -9 -> -7, g1 = 8 -> 7: h1 = (-7 + 1) * 7 * sigmoid(11.914).
        // y0 = h0 + h1 + db0 (down[0][0] = down[0][1] = 1, db0 = 0.125).
        let c = tiny(1, 1, Activation::SwigluOss(SwigluOss::GPT_OSS), true);
        let c = MoeConfig { routing: Routing::GPT_OSS, ..c };
        let mut w = zeros(&c);
        w.up[0] = 9.0;
        w.up[64] = -9.0; // up[0][1][0]
        w.up_bias.as_mut().unwrap()[0] = 0.5;
        w.gate.as_mut().unwrap()[0] = 1.0;
        w.gate.as_mut().unwrap()[64] = 8.0;
        w.gate_bias.as_mut().unwrap()[0] = 0.25;
        w.down[0] = 1.0;
        w.down[1] = 1.0;
        w.down_bias.as_mut().unwrap()[0] = 0.125;
        let x = row(&[1.0]);
        let r = route(&c, &x, &w).unwrap();
        assert_eq!(r.weights, vec![1.0]);
        let out = reference_rank(&c, &w, &x, &r).unwrap();
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let h0 = 8.0 * 1.25 * sig(1.702 * 1.25);
        let h1 = -6.0 * 7.0 * sig(1.702 * 7.0);
        assert!((out[0] as f64 - (h0 + h1 + 0.125)).abs() < 1e-5, "{}", out[0]);
    }

    #[test]
    fn output_errors_are_caught_and_located() {
        let c = MoeConfig { tokens_per_rank: 16, ..MoeConfig::default() };
        let w = LayerWeights::generate(&c, 5).unwrap();
        let (inputs, mut outputs) = forward(&c, &w, 5);
        let h = c.hidden as usize;
        // Token 9 of rank 1 loses its second slot's contribution: far beyond bf16 tolerance.
        let bad_routing = {
            let mut r = outputs[1].routing.clone();
            r.rows[9 * 2 + 1] = DROPPED;
            r
        };
        let wrong = f32_backend(&c, &w, &inputs[1], &bad_routing);
        outputs[1].output[9 * h..10 * h].copy_from_slice(&wrong[9 * h..10 * h]);
        let report = verify(&c, &w, &inputs, &outputs, &VerifyOptions::default()).unwrap();
        assert!(!report.passed());
        assert_eq!(report.worst, Some(RowId { rank: 1, token: 9 }));
        assert_eq!(report.failure_count, 1);
        assert!(report.max_rel > 10.0 * c.dtype.tolerance());
        assert!(report.to_string().contains("rank 1 token 9"), "{report}");

        // A NaN fails; so does a wrong output length.
        let (_, mut outputs) = forward(&c, &w, 5);
        outputs[0].output[3] = f32::NAN;
        outputs[1].output.pop();
        let report = verify(&c, &w, &inputs, &outputs, &VerifyOptions::default()).unwrap();
        assert_eq!(report.failure_count, 2);
        assert!(matches!(report.failures[0], Failure::Row { rel, .. } if rel.is_infinite()));
        assert!(matches!(report.failures[1], Failure::OutputShape { rank: 1, .. }));

        // Mismatched world: a typed error.
        assert!(verify(&c, &w, &inputs[..1], &outputs, &VerifyOptions::default()).is_err());
    }

    #[test]
    fn sampled_rows_are_distinct_reproducible_and_reported() {
        let s = sample_tokens(100, 10, 42, 3);
        assert_eq!(s.len(), 10);
        assert!(s.windows(2).all(|p| p[0] < p[1]) && s.iter().all(|&t| t < 100));
        assert_eq!(s, sample_tokens(100, 10, 42, 3));
        assert_ne!(s, sample_tokens(100, 10, 42, 4));
        assert_eq!(sample_tokens(5, 10, 1, 0), vec![0, 1, 2, 3, 4]);

        let c = MoeConfig { tokens_per_rank: 16, ..MoeConfig::default() };
        let w = LayerWeights::generate(&c, 5).unwrap();
        let (inputs, outputs) = forward(&c, &w, 5);
        let opts =
            |seed| VerifyOptions { sample: Sample::Rows { per_rank: 4, seed }, tolerance: None };
        let report = verify(&c, &w, &inputs, &outputs, &opts(Some(7))).unwrap();
        assert!(report.passed(), "{report}");
        assert_eq!((report.rows_checked, report.rows_total, report.sample_seed), (8, 32, Some(7)));
        assert!(report.to_string().contains("sample seed 7"));
        // Without a seed one is drawn and reported.
        assert!(verify(&c, &w, &inputs, &outputs, &opts(None)).unwrap().sample_seed.is_some());
    }

    /// A config whose router gives experts 0 and 1 identical rows (exact ties) and expert 2 a
    /// distinct one.
    fn tied() -> (MoeConfig, LayerWeights, Vec<Vec<f32>>) {
        let c = MoeConfig {
            world: 1,
            tokens_per_rank: 4,
            hidden: 64,
            inter: 64,
            experts: 3,
            top_k: 1,
            ..MoeConfig::default()
        };
        let mut w = LayerWeights::generate(&c, 2).unwrap();
        let (first, rest) = w.router.split_at_mut(64);
        rest[..64].copy_from_slice(first);
        let inputs = vec![generate_input(&c, 0, 2).unwrap()];
        (c, w, inputs)
    }

    fn output_for(c: &MoeConfig, w: &LayerWeights, x: &[f32], routing: RankRouting) -> RankOutput {
        RankOutput {
            output: f32_backend(c, w, x, &routing),
            routing,
            stats: RankStats::default(),
            trace: None,
        }
    }

    #[test]
    fn near_ties_are_accepted_and_verified_with_the_backend_routing() {
        let (c, w, inputs) = tied();
        let cpu = route(&c, &inputs[0], &w.router).unwrap();
        // Swap 0 <-> 1 wherever the CPU chose one of the tied pair.
        let swapped: Vec<u32> = cpu.experts.iter().map(|&e| [1, 0, 2][e as usize]).collect();
        let ties = cpu.experts.iter().filter(|&&e| e < 2).count() as u64;
        assert!(ties > 0, "the seed must exercise a tie: {:?}", cpu.experts);
        let routing = RankRouting::from_choices(&c, swapped, cpu.weights.clone()).unwrap();
        let outputs = vec![output_for(&c, &w, &inputs[0], routing)];
        let report = verify(&c, &w, &inputs, &outputs, &VerifyOptions::default()).unwrap();
        assert!(report.passed(), "{report}");
        assert_eq!(report.near_ties, ties);
    }

    /// Grouped top-k over 4 experts in 2 groups (1 kept, top-1); with `tied_groups` group 1's
    /// router rows repeat group 0's, so the two groups' scores tie exactly for every token.
    fn grouped(tied_groups: bool) -> (MoeConfig, LayerWeights, Vec<f32>) {
        let c = MoeConfig {
            world: 1,
            tokens_per_rank: 8,
            hidden: 64,
            inter: 64,
            experts: 4,
            top_k: 1,
            routing: Routing {
                groups: Some(Groups { count: 2, keep: 1, score: GroupScore::Max }),
                ..Routing::SOFTMAX
            },
            ..MoeConfig::default()
        };
        let mut w = LayerWeights::generate(&c, 3).unwrap();
        if tied_groups {
            let (first, rest) = w.router.split_at_mut(128);
            rest.copy_from_slice(first);
        }
        let x = generate_input(&c, 0, 3).unwrap();
        (c, w, x)
    }

    #[test]
    fn near_ties_between_groups_are_accepted_within_the_groups_the_backend_kept() {
        let (c, w, x) = grouped(true);
        let cpu = route(&c, &x, &w).unwrap();
        assert!(cpu.experts.iter().all(|&e| e < 2), "ties go to group 0: {:?}", cpu.experts);
        // The backend kept group 1 instead: the same choice there.
        let moved: Vec<u32> = cpu.experts.iter().map(|&e| e + 2).collect();
        let r = RankRouting::from_choices(&c, moved, cpu.weights.clone()).unwrap();
        let checked = check_routing(&c, &w, &x, &r).unwrap();
        assert_eq!(checked.near_ties, 8);
        // Within the kept group the choice must still be the top one (no tie there).
        let wrong: Vec<u32> = cpu.experts.iter().map(|&e| 3 - e).collect();
        let r = RankRouting::from_choices(&c, wrong, cpu.weights.clone()).unwrap();
        let err = check_routing(&c, &w, &x, &r).unwrap_err();
        assert!(err.contains("not a near tie"), "{err}");
    }

    #[test]
    fn a_group_that_does_not_tie_the_kept_ones_is_refused() {
        let (c, w, x) = grouped(false);
        let cpu = route(&c, &x, &w).unwrap();
        // Each token's best expert of the group the CPU dropped.
        let scores = router_scores(&c, &x, &w).unwrap();
        let other: Vec<u32> = (0..8)
            .map(|t| {
                let dropped = if cpu.experts[t] < 2 { 2 } else { 0 };
                let s = scores.scores(t);
                (if s[dropped] >= s[dropped + 1] { dropped } else { dropped + 1 }) as u32
            })
            .collect();
        let r = RankRouting::from_choices(&c, other, cpu.weights.clone()).unwrap();
        let err = check_routing(&c, &w, &x, &r).unwrap_err();
        assert!(err.contains("not a near tie"), "{err}");
    }

    #[test]
    fn routing_errors_beyond_ties_fail_with_a_reason() {
        let (c, w, inputs) = tied();
        let x = &inputs[0];
        let cpu = route(&c, x, &w.router).unwrap();
        let check = |r: &RankRouting| check_routing(&c, &w.router, x, r).unwrap_err();

        // A different expert that is not tied.
        let mut experts = cpu.experts.clone();
        experts[0] = if experts[0] == 2 { 0 } else { 2 };
        let r = RankRouting::from_choices(&c, experts, cpu.weights.clone()).unwrap();
        assert!(check(&r).contains("not a near tie"), "{}", check(&r));
        let outputs = vec![output_for(&c, &w, x, r)];
        let report = verify(&c, &w, &inputs, &outputs, &VerifyOptions::default()).unwrap();
        assert!(matches!(&report.failures[..], [Failure::Routing { rank: 0, .. }]));

        // A wrong combine weight.
        let mut r = cpu.clone();
        r.weights[1] = 0.5;
        assert!(check(&r).contains("combine weight"), "{}", check(&r));

        // A drop the capacity rule does not make.
        let mut r = cpu.clone();
        r.rows[2] = DROPPED;
        assert!(check(&r).contains("packet row dropped"), "{}", check(&r));

        // Structural damage.
        let mut r = cpu;
        r.experts[3] = 7;
        assert!(check(&r).contains("out of range"), "{}", check(&r));
    }
}
