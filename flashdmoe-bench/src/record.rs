//! Result records: one JSON object per line (JSONL), schema `flashdmoe-bench/1`.
//!
//! The schema is the PyTorch baselines' (`bench/baselines/common.py`, `RECORD_FIELDS`):
//!
//! `schema, impl, backend, device, world, config {tokens_per_rank, hidden, inter, experts,
//! top_k, activation, dtype, capacity (a factor or "dropless"), bias, [renormalize], [routing],
//! [shared], [swiglu_alpha], [swiglu_limit]}, iterations, median_ms, p10_ms, p90_ms, min_ms,
//! max_ms, verified, max_rel_err (null if not finite), flops, tflops, timestamp, seed,
//! floor_ms, notes`
//!
//! The bracketed `config` fields describe a real model's layer (issue 16; core's
//! `MoeConfig::renormalize`, `Routing`, `SharedExperts`, `SwigluOss`). Each is written only
//! where the layer differs from the paper's, and an absent one means the paper's, so a paper
//! layer's record is byte for byte what it was before they existed and every older record
//! reads as the layer it measured:
//!
//! * `renormalize`: `false` when the top-k weights are not renormalised (absent: `true`);
//! * `routing`: `{scoring: "softmax" | "sigmoid" | "topk-softmax", router_bias,
//!   selection_bias, groups: {count, keep, score: "top2-sum" | "max"} (absent: none),
//!   scaling}` when the router is not the paper's (softmax, no biases, no groups, scaling 1);
//!   every field is written, and on reading an absent one is the paper router's;
//! * `shared`: `{count, inter, gate: "none" | "sigmoid"}` for shared experts (absent: none);
//! * `swiglu_alpha`, `swiglu_limit`: for `activation: "swiglu-oss"` with other than gpt-oss's
//!   1.702 and 7 (absent: those).
//!
//! DeepSeek-V3: `"routing": {"scoring": "sigmoid", "router_bias": false, "selection_bias":
//! true, "groups": {"count": 8, "keep": 4, "score": "top2-sum"}, "scaling": 2.5}, "shared":
//! {"count": 1, "inter": 2048, "gate": "none"}`. A malformed `config` is a
//! [`LayerKeyError`] naming the field (`config.routing.groups.keep`); unknown keys inside
//! `routing`, `groups` and `shared` are errors (a misspelt key must not read as the paper's
//! default), elsewhere ignored like every unknown field.
//!
//! Ours add optional fields after them: `name` (the case name), `protocol`
//! ([`ProtocolStats`]: tasks, rows, bytes and utilisation of the forward, the simulator's
//! figures of merit), and for a layer run as one process per GPU (`flashdmoe launch --nproc N
//! bench`) `processes` and `ranks_per_process` (absent: one process ran every rank), `kernel`
//! (the specialisation that ran) and `host_path_median_ms` (ours on a GPU: the host path's
//! median beside the record's device-resident times). Our `impl` is `flashdmoe-cuda` or `flashdmoe-sim`, `backend` `cuda` or
//! `sim`; a simulator record has `floor_ms: null` (a floor is a GPU's). Readers ignore fields
//! they do not know.
//!
//! Invariants (checked by [`Record::check`] on every record read or written): times are
//! milliseconds, finite, `min <= p10 <= median <= p90 <= max`; `flops` are per rank per
//! forward and `tflops = flops / median / 1e9` (units: FLOP, ms, TFLOP/s); `iterations >= 1`.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::BenchError;
use flashdmoe_core::config::{Scoring, SharedGate, SwigluOss};
use flashdmoe_core::{
    Activation, CapacityPolicy, DType, GroupScore, Groups, MoeConfig, Routing, SharedExperts,
};

/// The schema tag of every record.
pub const SCHEMA: &str = "flashdmoe-bench/1";

/// Our implementation names, by backend.
pub const IMPL_CUDA: &str = "flashdmoe-cuda";
/// See [`IMPL_CUDA`].
pub const IMPL_SIM: &str = "flashdmoe-sim";
/// Ours on the GPU with several ranks per GPU (virtual ranks): never compared with a
/// baseline, whose ranks each have a GPU of their own.
pub const IMPL_CUDA_VIRTUAL: &str = "flashdmoe-cuda-virtual";
/// The practical ceiling `torch_single.py --variants dense` records: the layer's GEMM FLOPs as
/// one dense cuBLAS pair. Not an MoE layer (it reads one weight set, not E), so it has no
/// percent of the layer's floor; its time is compared as a ceiling.
pub const IMPL_DENSE_CEILING: &str = "cublas-dense";

/// The `config` object of a record: the layer a comparison must agree on, the paper's fields
/// and the real models' (module doc). The world size is the record's `world`; placement is not
/// part of the schema (the baselines place experts contiguously).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "RawLayer")]
pub struct LayerKey {
    /// Tokens per rank T.
    pub tokens_per_rank: u32,
    /// Hidden size H.
    pub hidden: u32,
    /// Expert intermediate size I.
    pub inter: u32,
    /// Experts E.
    pub experts: u32,
    /// Experts per token k.
    pub top_k: u32,
    /// Expert activation (gpt-oss's with its alpha and limit).
    pub activation: Activation,
    /// Element type.
    pub dtype: DType,
    /// Capacity policy.
    pub capacity: CapacityPolicy,
    /// Biases on the expert projections.
    pub bias: bool,
    /// Whether the top-k weights are renormalised (absent in JSON: true).
    pub renormalize: bool,
    /// The router (absent in JSON: the paper's, [`Routing::SOFTMAX`]).
    pub routing: Routing,
    /// Shared experts (absent in JSON: none).
    pub shared: Option<SharedExperts>,
}

impl LayerKey {
    /// The key of `config`.
    pub fn of(config: &MoeConfig) -> LayerKey {
        LayerKey {
            tokens_per_rank: config.tokens_per_rank,
            hidden: config.hidden,
            inter: config.inter,
            experts: config.experts,
            top_k: config.top_k,
            activation: config.activation,
            dtype: config.dtype,
            capacity: config.capacity,
            bias: config.bias,
            renormalize: config.renormalize,
            routing: config.routing,
            shared: config.shared,
        }
    }

    /// The layer on `world` ranks with core's defaults for what the key does not hold
    /// (contiguous placement, the default memory limit).
    pub fn config(&self, world: u32) -> MoeConfig {
        MoeConfig {
            world,
            tokens_per_rank: self.tokens_per_rank,
            hidden: self.hidden,
            inter: self.inter,
            experts: self.experts,
            top_k: self.top_k,
            activation: self.activation,
            bias: self.bias,
            dtype: self.dtype,
            capacity: self.capacity,
            renormalize: self.renormalize,
            routing: self.routing,
            shared: self.shared,
            ..MoeConfig::default()
        }
    }

    /// `T16384 H2048 I2048 E8 k2 relu bf16 cf1`: the baselines' label of the same layer, so the
    /// label identifies a layer in joins and tables. A real model's layer appends what differs
    /// from the paper's ([`LayerKey::model_suffix`]).
    pub fn label(&self) -> String {
        let cap = match self.capacity {
            CapacityPolicy::Dropless => "dropless".to_owned(),
            CapacityPolicy::Factor(f) => format!("cf{f}"),
        };
        format!(
            "T{} H{} I{} E{} k{} {}{} {} {cap}{}",
            self.tokens_per_rank,
            self.hidden,
            self.inter,
            self.experts,
            self.top_k,
            self.activation,
            if self.bias { "+bias" } else { "" },
            self.dtype,
            self.model_suffix()
        )
    }

    /// What the label appends for a real model's layer, each part led by a space, in this
    /// order (empty for the paper's layer): ` norenorm` (top-k weights not renormalised); the
    /// scoring when not softmax or with a bias, `+rb` for the router bias, `+sb` for the
    /// selection bias (` sigmoid+sb`); ` g<count>/<keep>` and `t2` or `max` for grouped top-k;
    /// ` x<scaling>`; ` shared<count>x<inter>`, `+gate` for Qwen's sigmoid gate. DeepSeek-V3:
    /// ` sigmoid+sb g8/4t2 x2.5 shared1x2048`.
    pub fn model_suffix(&self) -> String {
        let mut out = String::new();
        if !self.renormalize {
            out.push_str(" norenorm");
        }
        let r = &self.routing;
        if r.scoring != Scoring::Softmax || r.router_bias || r.selection_bias {
            out.push(' ');
            out.push_str(r.scoring.name());
            if r.router_bias {
                out.push_str("+rb");
            }
            if r.selection_bias {
                out.push_str("+sb");
            }
        }
        if let Some(g) = r.groups {
            let score = match g.score {
                GroupScore::Top2Sum => "t2",
                GroupScore::Max => "max",
            };
            out.push_str(&format!(" g{}/{}{score}", g.count, g.keep));
        }
        if r.scaling != 1.0 {
            out.push_str(&format!(" x{}", r.scaling));
        }
        if let Some(s) = self.shared {
            out.push_str(&format!(" shared{}x{}", s.count, s.inter));
            if s.gate == SharedGate::Sigmoid {
                out.push_str("+gate");
            }
        }
        out
    }
}

impl fmt::Display for LayerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// A malformed `config` object: the field, by its path in the record (`config.routing.groups.keep`),
/// and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct LayerKeyError {
    /// The field's path, e.g. `config.shared.inter`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

fn bad(field: &str, reason: impl Into<String>) -> LayerKeyError {
    LayerKeyError { field: format!("config.{field}"), reason: reason.into() }
}

/// The JSON form of [`LayerKey`] as written: names for the enums, `"dropless"` or a number for
/// the capacity, and the model fields only where they differ from the paper's layer (so a
/// paper record is what it was before they existed).
#[derive(Serialize)]
struct RawLayer {
    tokens_per_rank: u32,
    hidden: u32,
    inter: u32,
    experts: u32,
    top_k: u32,
    activation: String,
    dtype: String,
    capacity: RawCapacity,
    bias: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    renormalize: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    routing: Option<RawRouting>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shared: Option<RawShared>,
    #[serde(skip_serializing_if = "Option::is_none")]
    swiglu_alpha: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    swiglu_limit: Option<f64>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum RawCapacity {
    Factor(f64),
    Name(String),
}

#[derive(Serialize)]
struct RawRouting {
    scoring: &'static str,
    router_bias: bool,
    selection_bias: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    groups: Option<RawGroups>,
    scaling: f64,
}

#[derive(Serialize)]
struct RawGroups {
    count: u32,
    keep: u32,
    score: &'static str,
}

#[derive(Serialize)]
struct RawShared {
    count: u32,
    inter: u32,
    gate: &'static str,
}

const fn group_score_name(score: GroupScore) -> &'static str {
    match score {
        GroupScore::Top2Sum => "top2-sum",
        GroupScore::Max => "max",
    }
}

const fn shared_gate_name(gate: SharedGate) -> &'static str {
    match gate {
        SharedGate::None => "none",
        SharedGate::Sigmoid => "sigmoid",
    }
}

impl From<LayerKey> for RawLayer {
    fn from(k: LayerKey) -> RawLayer {
        let r = k.routing;
        let oss = match k.activation {
            Activation::SwigluOss(p) if p != SwigluOss::GPT_OSS => Some(p),
            _ => None,
        };
        RawLayer {
            tokens_per_rank: k.tokens_per_rank,
            hidden: k.hidden,
            inter: k.inter,
            experts: k.experts,
            top_k: k.top_k,
            activation: k.activation.name().to_owned(),
            dtype: k.dtype.name().to_owned(),
            capacity: match k.capacity {
                CapacityPolicy::Dropless => RawCapacity::Name("dropless".into()),
                CapacityPolicy::Factor(f) => RawCapacity::Factor(f),
            },
            bias: k.bias,
            renormalize: (!k.renormalize).then_some(false),
            routing: (r != Routing::SOFTMAX).then(|| RawRouting {
                scoring: r.scoring.name(),
                router_bias: r.router_bias,
                selection_bias: r.selection_bias,
                groups: r.groups.map(|g| RawGroups {
                    count: g.count,
                    keep: g.keep,
                    score: group_score_name(g.score),
                }),
                scaling: r.scaling,
            }),
            shared: k.shared.map(|s| RawShared {
                count: s.count,
                inter: s.inter,
                gate: shared_gate_name(s.gate),
            }),
            swiglu_alpha: oss.map(|p| p.alpha),
            swiglu_limit: oss.map(|p| p.limit),
        }
    }
}

/// Reads a JSON object's fields by name, reporting errors under `path` (`routing.groups`).
struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: &'a str,
}

impl<'a> Fields<'a> {
    fn of(value: &'a Value, path: &'a str) -> Result<Fields<'a>, LayerKeyError> {
        match value {
            Value::Object(map) => Ok(Fields { map, path }),
            other => Err(LayerKeyError {
                field: if path.is_empty() { "config".into() } else { format!("config.{path}") },
                reason: format!("{other} is not an object"),
            }),
        }
    }

    fn name(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_owned() } else { format!("{}.{key}", self.path) }
    }

    fn error(&self, key: &str, reason: impl Into<String>) -> LayerKeyError {
        bad(&self.name(key), reason)
    }

    /// The field, `None` when absent or `null`.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn required(&self, key: &str) -> Result<&'a Value, LayerKeyError> {
        self.get(key).ok_or_else(|| self.error(key, "missing"))
    }

    fn u32(&self, key: &str) -> Result<u32, LayerKeyError> {
        let v = self.required(key)?;
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| self.error(key, format!("{v} is not an integer from 0 to 2^32 - 1")))
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>, LayerKeyError> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| self.error(key, format!("{v} is not a boolean"))))
            .transpose()
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>, LayerKeyError> {
        self.get(key)
            .map(|v| v.as_f64().ok_or_else(|| self.error(key, format!("{v} is not a number"))))
            .transpose()
    }

    fn opt_str(&self, key: &str) -> Result<Option<&'a str>, LayerKeyError> {
        self.get(key)
            .map(|v| v.as_str().ok_or_else(|| self.error(key, format!("{v} is not a string"))))
            .transpose()
    }

    fn str(&self, key: &str) -> Result<&'a str, LayerKeyError> {
        self.opt_str(key)?.ok_or_else(|| self.error(key, "missing"))
    }

    /// Errors on a key not in `known` (the model objects are strict: a misspelt field must not
    /// read as the paper's default).
    fn only(&self, known: &[&str]) -> Result<(), LayerKeyError> {
        match self.map.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(self.error(k, format!("unknown field (expected {})", known.join(", ")))),
            None => Ok(()),
        }
    }
}

impl TryFrom<Value> for LayerKey {
    type Error = LayerKeyError;

    /// Reads a `config` object; absent model fields are the paper's layer's (module doc).
    fn try_from(value: Value) -> Result<LayerKey, LayerKeyError> {
        let f = Fields::of(&value, "")?;
        let capacity = match f.required("capacity")? {
            Value::Number(n) => match n.as_f64() {
                Some(x) if x.is_finite() && x > 0.0 => CapacityPolicy::Factor(x),
                _ => return Err(bad("capacity", format!("{n} must be > 0"))),
            },
            Value::String(s) if s == "dropless" => CapacityPolicy::Dropless,
            other => {
                return Err(bad(
                    "capacity",
                    format!("{other} is neither a factor nor \"dropless\""),
                ));
            }
        };
        let mut activation: Activation =
            f.str("activation")?.parse().map_err(|e| bad("activation", format!("{e}")))?;
        let (alpha, limit) = (f.opt_f64("swiglu_alpha")?, f.opt_f64("swiglu_limit")?);
        match &mut activation {
            Activation::SwigluOss(p) => {
                p.alpha = alpha.unwrap_or(p.alpha);
                p.limit = limit.unwrap_or(p.limit);
                if !(p.alpha.is_finite() && p.limit.is_finite() && p.limit > 0.0) {
                    return Err(bad(
                        "swiglu_limit",
                        format!(
                            "alpha {} and limit {} must be finite, limit > 0",
                            p.alpha, p.limit
                        ),
                    ));
                }
            }
            _ if alpha.is_some() || limit.is_some() => {
                let key = if alpha.is_some() { "swiglu_alpha" } else { "swiglu_limit" };
                return Err(bad(key, "set, but the activation is not swiglu-oss"));
            }
            _ => {}
        }
        Ok(LayerKey {
            tokens_per_rank: f.u32("tokens_per_rank")?,
            hidden: f.u32("hidden")?,
            inter: f.u32("inter")?,
            experts: f.u32("experts")?,
            top_k: f.u32("top_k")?,
            activation,
            dtype: f.str("dtype")?.parse().map_err(|e| bad("dtype", format!("{e}")))?,
            capacity,
            bias: f.opt_bool("bias")?.ok_or_else(|| bad("bias", "missing"))?,
            renormalize: f.opt_bool("renormalize")?.unwrap_or(true),
            routing: match f.get("routing") {
                None => Routing::SOFTMAX,
                Some(v) => routing(&Fields::of(v, "routing")?)?,
            },
            shared: f.get("shared").map(|v| shared(&Fields::of(v, "shared")?)).transpose()?,
        })
    }
}

/// A `routing` object: every field optional, the paper's router's when absent.
fn routing(f: &Fields<'_>) -> Result<Routing, LayerKeyError> {
    f.only(&["scoring", "router_bias", "selection_bias", "groups", "scaling"])?;
    let p = Routing::SOFTMAX;
    let scoring = match f.opt_str("scoring")? {
        None => p.scoring,
        Some(s) => [Scoring::Softmax, Scoring::Sigmoid, Scoring::TopKSoftmax]
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                f.error("scoring", format!("{s:?} is not softmax, sigmoid or topk-softmax"))
            })?,
    };
    let groups = match f.get("groups") {
        None => None,
        Some(v) => {
            let g = Fields::of(v, "routing.groups")?;
            g.only(&["count", "keep", "score"])?;
            let (count, keep) = (g.u32("count")?, g.u32("keep")?);
            if count == 0 {
                return Err(g.error("count", "must be >= 1"));
            }
            if keep == 0 || keep > count {
                return Err(g.error("keep", format!("{keep} must be 1 to count ({count})")));
            }
            let score = match g.opt_str("score")? {
                None | Some("top2-sum") => GroupScore::Top2Sum,
                Some("max") => GroupScore::Max,
                Some(s) => return Err(g.error("score", format!("{s:?} is not top2-sum or max"))),
            };
            Some(Groups { count, keep, score })
        }
    };
    let scaling = f.opt_f64("scaling")?.unwrap_or(p.scaling);
    if !(scaling.is_finite() && scaling > 0.0) {
        return Err(f.error("scaling", format!("{scaling} must be finite and > 0")));
    }
    Ok(Routing {
        scoring,
        router_bias: f.opt_bool("router_bias")?.unwrap_or(p.router_bias),
        selection_bias: f.opt_bool("selection_bias")?.unwrap_or(p.selection_bias),
        groups,
        scaling,
    })
}

/// A `shared` object: `count` and `inter` (both >= 1), `gate` (default `none`).
fn shared(f: &Fields<'_>) -> Result<SharedExperts, LayerKeyError> {
    f.only(&["count", "inter", "gate"])?;
    let (count, inter) = (f.u32("count")?, f.u32("inter")?);
    for (key, v) in [("count", count), ("inter", inter)] {
        if v == 0 {
            return Err(f.error(key, "must be >= 1"));
        }
    }
    let gate = match f.opt_str("gate")? {
        None | Some("none") => SharedGate::None,
        Some("sigmoid") => SharedGate::Sigmoid,
        Some(s) => return Err(f.error("gate", format!("{s:?} is not none or sigmoid"))),
    };
    Ok(SharedExperts { count, inter, gate })
}

/// What one forward did, summed over the ranks (ours only): the protocol's figures, which
/// the simulator reproduces exactly, so they catch protocol regressions there.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProtocolStats {
    /// GEMM0 tasks executed.
    pub gemm0_tasks: u64,
    /// GEMM1 tasks executed.
    pub gemm1_tasks: u64,
    /// Combine tasks executed.
    pub combine_tasks: u64,
    /// Token rows dispatched.
    pub rows_sent: u64,
    /// Bytes put into peers' heaps (dispatched and returned rows).
    pub bytes_sent: u64,
    /// Bytes a capacity-padded protocol would have sent.
    pub padded_bytes: u64,
    /// `(token, slot)` pairs dropped for capacity.
    pub dropped: u64,
    /// Processors' busy time over the traced forward's task phase (0..1), when traced.
    pub utilisation: Option<f64>,
}

/// One result (module doc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// Implementation, e.g. `flashdmoe-cuda`, `torch-grouped-graph`.
    #[serde(rename = "impl")]
    pub implementation: String,
    /// `cuda`, `sim` (ours) or `torch` (baselines).
    pub backend: String,
    /// GPU name, or `cpu`.
    pub device: String,
    /// Ranks P.
    pub world: u32,
    /// The layer.
    pub config: LayerKey,
    /// Timed iterations.
    pub iterations: u32,
    /// Median time of one forward (ms).
    pub median_ms: f64,
    /// 10th percentile (ms).
    pub p10_ms: f64,
    /// 90th percentile (ms).
    pub p90_ms: f64,
    /// Fastest (ms).
    pub min_ms: f64,
    /// Slowest (ms).
    pub max_ms: f64,
    /// Whether the output was verified in the same run.
    pub verified: bool,
    /// Largest relative error found by the verification (`null` if not finite).
    pub max_rel_err: Option<f64>,
    /// Nominal FLOPs of one forward per rank.
    pub flops: f64,
    /// `flops / median` in TFLOP/s.
    pub tflops: f64,
    /// When the result was measured, ISO 8601 UTC (`2026-11-28T10:24:41+00:00`).
    pub timestamp: String,
    /// Seed of the generated weights and inputs.
    pub seed: u64,
    /// The floor of docs/performance.md (ms); `null` for the simulator.
    pub floor_ms: Option<f64>,
    /// Why a result is not verified, or anything else a reader must know.
    pub notes: String,
    /// The case name (ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the forward did (ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<ProtocolStats>,
    /// Ours run as one process per GPU (`flashdmoe launch --nproc N bench`): the processes
    /// (absent: one process ran every rank).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<u32>,
    /// With `processes`: the ranks each process ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranks_per_process: Option<u32>,
    /// What ran the layer, as the layer describes itself (`Layer::describe`: the CUDA
    /// kernel's specialisation and any it fell back from); absent where not recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// Ours on a GPU, single process: the median of the host path's forwards (host f32 in and
    /// out, CUDA events around each launch), where the record's times are of device-resident
    /// forwards queued back to back (`runner` module doc); absent where those are the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path_median_ms: Option<f64>,
}

impl Record {
    /// Whether this is one of ours (as opposed to a baseline's).
    pub fn is_ours(&self) -> bool {
        [IMPL_CUDA, IMPL_SIM, IMPL_CUDA_VIRTUAL].contains(&self.implementation.as_str())
    }

    /// Whether the time was measured on a GPU (not the simulator, not a CPU baseline): only
    /// such records are compared with each other or with a floor.
    pub fn on_gpu(&self) -> bool {
        self.backend != "sim" && self.device != "cpu"
    }

    /// Whether this is the dense-pair ceiling ([`IMPL_DENSE_CEILING`]), not a layer.
    pub fn is_ceiling(&self) -> bool {
        self.implementation == IMPL_DENSE_CEILING
    }

    /// `floor / median` as a percentage, for GPU records of a layer with a floor (not the
    /// ceiling: its work is not the layer's).
    pub fn percent_of_floor(&self) -> Option<f64> {
        self.floor_ms
            .filter(|_| self.on_gpu() && !self.is_ceiling())
            .map(|f| 100.0 * f / self.median_ms)
    }

    /// Checks the module's invariants.
    pub fn check(&self) -> Result<(), String> {
        if self.schema != SCHEMA {
            return Err(format!("schema {:?}, expected {SCHEMA:?}", self.schema));
        }
        if self.implementation.is_empty() || self.backend.is_empty() {
            return Err("impl and backend must not be empty".into());
        }
        if self.iterations == 0 || self.world == 0 {
            return Err("iterations and world must be >= 1".into());
        }
        let times = [self.min_ms, self.p10_ms, self.median_ms, self.p90_ms, self.max_ms];
        if times.iter().any(|t| !(t.is_finite() && *t > 0.0)) {
            return Err(format!("times must be finite and > 0 ms: {times:?}"));
        }
        if times.windows(2).any(|w| w[0] > w[1]) {
            return Err(format!("expected min <= p10 <= median <= p90 <= max: {times:?}"));
        }
        if !(self.flops.is_finite() && self.flops > 0.0) {
            return Err(format!("flops {} must be finite and > 0", self.flops));
        }
        let tflops = self.flops / self.median_ms / 1e9;
        if (self.tflops - tflops).abs() > 1e-6 * tflops {
            return Err(format!(
                "tflops {} is not flops / median ({tflops}): are the times in ms?",
                self.tflops
            ));
        }
        if let Some(f) = self.floor_ms
            && !(f.is_finite() && f > 0.0)
        {
            return Err(format!("floor_ms {f} must be finite and > 0"));
        }
        Ok(())
    }

    /// The record as one line of JSON (no newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self)
            .expect("a record always serialises (no maps with non-string keys)")
    }
}

/// `flops / median_ms` in TFLOP/s.
pub fn tflops(flops: f64, median_ms: f64) -> f64 {
    flops / median_ms / 1e9
}

/// The non-blank lines of JSONL text, with their 1-based line numbers.
pub fn jsonl_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(|(i, l)| (i + 1, l))
}

/// One JSON line as a [`Record::check`]ed record.
pub fn parse_record(line: &str) -> Result<Record, String> {
    let record: Record = serde_json::from_str(line).map_err(|e| e.to_string())?;
    record.check()?;
    Ok(record)
}

/// Parses JSONL text (blank lines skipped); each record is [`Record::check`]ed. `source`
/// names the text in errors.
pub fn parse_jsonl(text: &str, source: &str) -> Result<Vec<Record>, BenchError> {
    jsonl_lines(text)
        .map(|(line, json)| {
            parse_record(json).map_err(|message| BenchError::Record {
                source_name: source.to_owned(),
                line,
                message,
            })
        })
        .collect()
}

/// `records` as JSONL text, one line each, newline-terminated.
pub fn to_jsonl(records: &[Record]) -> String {
    records.iter().map(|r| r.to_json_line() + "\n").collect()
}

/// `time` as ISO 8601 UTC with second precision and a `+00:00` offset (the baselines'
/// format); times before 1970 are clamped to the epoch.
pub fn timestamp(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+00:00", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The proleptic Gregorian `(year, month, day)` of `days` since 1970-01-01 (H. Hinnant's
/// `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
pub(crate) mod tests;
