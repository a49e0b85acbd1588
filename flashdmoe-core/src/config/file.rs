//! Config files: our TOML/JSON schema and Hugging Face `config.json`.
//!
//! ## Our schema (TOML or JSON, same keys)
//!
//! Every key is optional; absent keys come from `preset` when given, else from
//! [`MoeConfig::default`]. Unknown keys are errors (a typo must not silently fall back).
//!
//! ```toml
//! preset = "mixtral-8x7b"   # optional base: a name from config::presets
//! world = 2                 # ranks P
//! tokens_per_rank = 4096    # T
//! hidden = 4096             # H, multiple of 64
//! inter = 14336             # I, multiple of 64
//! experts = 8               # E
//! top_k = 2                 # k
//! activation = "swiglu"     # "relu" | "gelu" | "swiglu"
//! bias = false
//! dtype = "bf16"            # "bf16" | "f16" | "f32" (TF32 on GPU) | "f32-exact"
//! capacity = 1.25           # a capacity factor, or "dropless"
//! renormalize = true        # renormalise the top-k weights
//! placement = "contiguous"  # or a table: [0, 0, 1, 1, ...] (rank of each expert)
//! memory_limit_gib = 120    # per-rank memory limit
//!
//! # Real models' features (issue 16; the CUDA kernel refuses them, the simulator computes them)
//! activation = "swiglu-oss" # gpt-oss's clamped SwiGLU (alpha 1.702)
//! swiglu_limit = 7.0        # its clamp
//! scoring = "sigmoid"       # "softmax" | "sigmoid" | "topk-softmax" (gpt-oss)
//! router_bias = false       # a bias on the router's logits (gpt-oss)
//! selection_bias = true     # a bias on the scores for the choice only (DeepSeek-V3)
//! groups = [8, 4]           # grouped top-k: n_group, topk_group ([] for none)
//! group_score = "top2-sum"  # "top2-sum" (DeepSeek-V3) or "max" (DeepSeek-V2)
//! routed_scaling = 2.5      # the combine weights' scale
//! shared_experts = [1, 2048] # count, intermediate size ([] for none)
//! shared_gate = "none"      # "none" | "sigmoid" (Qwen's shared_expert_gate)
//! ```
//!
//! ## Hugging Face `config.json`
//!
//! Read by the model's family (`model_type`): what is read, what is refused because it needs
//! a feature flashdmoe lacks, and what is ignored is documented in `config/hf.rs`.
//!
//! ## Which is which
//!
//! [`MoeConfig::load`] reads `.toml` as our schema; a `.json` file is a Hugging Face config
//! when it has any of `model_type`, `architectures`, `hidden_size`, `d_model` or `text_config`
//! (none of which is ours), else our JSON schema. Errors say which schema they come from:
//! "flashdmoe JSON config" / "flashdmoe TOML config" for ours, "Hugging Face config.json"
//! for theirs.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::Deserialize;
use serde_json::Value;

use super::hf::from_hf;
use super::presets::preset;
use super::{
    Activation, CapacityPolicy, ConfigError, GroupScore, Groups, MoeConfig, Placement, Scoring,
    SharedExperts, SharedGate, SwigluOss, invalid,
};

impl Activation {
    /// The name used in config files and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Gelu => "gelu",
            Activation::SiluGated => "swiglu",
            Activation::SwigluOss(_) => "swiglu-oss",
        }
    }
}

impl fmt::Display for Activation {
    /// The name; gpt-oss's SwiGLU with other than its own alpha and limit shows them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Activation::SwigluOss(p) if *p != SwigluOss::GPT_OSS => {
                write!(f, "swiglu-oss(alpha {}, limit {})", p.alpha, p.limit)
            }
            _ => f.write_str(self.name()),
        }
    }
}

impl FromStr for Activation {
    type Err = ConfigError;

    /// `relu`, `gelu`, `swiglu` (also `silu-gated`, `silu_gated`), `swiglu-oss` (gpt-oss's
    /// alpha 1.702 and limit 7; also `swiglu_oss`), case-insensitive.
    fn from_str(s: &str) -> Result<Activation, ConfigError> {
        match s.to_ascii_lowercase().as_str() {
            "relu" => Ok(Activation::Relu),
            "gelu" => Ok(Activation::Gelu),
            "swiglu" | "silu-gated" | "silu_gated" => Ok(Activation::SiluGated),
            "swiglu-oss" | "swiglu_oss" => Ok(Activation::SwigluOss(SwigluOss::GPT_OSS)),
            _ => {
                Err(invalid("activation", format!("{s:?} is not relu, gelu, swiglu or swiglu-oss")))
            }
        }
    }
}

impl fmt::Display for CapacityPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapacityPolicy::Factor(x) => write!(f, "{x}"),
            CapacityPolicy::Dropless => f.write_str("dropless"),
        }
    }
}

impl FromStr for CapacityPolicy {
    type Err = ConfigError;

    /// `dropless` or a capacity factor (e.g. `1.25`); the factor's range is checked by
    /// [`MoeConfig::validate`].
    fn from_str(s: &str) -> Result<CapacityPolicy, ConfigError> {
        if s.eq_ignore_ascii_case("dropless") {
            return Ok(CapacityPolicy::Dropless);
        }
        s.trim().parse().map(CapacityPolicy::Factor).map_err(|_| {
            invalid("capacity", format!("{s:?} is neither a capacity factor nor \"dropless\""))
        })
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::Contiguous => f.write_str("contiguous"),
            Placement::Table(t) => {
                let ranks: Vec<String> = t.iter().map(u32::to_string).collect();
                f.write_str(&ranks.join(","))
            }
        }
    }
}

impl FromStr for Placement {
    type Err = ConfigError;

    /// `contiguous` or a comma-separated table of ranks, one per expert (`0,0,1,1`).
    fn from_str(s: &str) -> Result<Placement, ConfigError> {
        if s.eq_ignore_ascii_case("contiguous") {
            return Ok(Placement::Contiguous);
        }
        s.split(',')
            .map(|r| r.trim().parse::<u32>())
            .collect::<Result<Vec<_>, _>>()
            .map(Placement::Table)
            .map_err(|_| {
                invalid("placement", format!("{s:?} is neither \"contiguous\" nor a rank table"))
            })
    }
}

/// Our file schema (module doc).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    preset: Option<String>,
    world: Option<u32>,
    tokens_per_rank: Option<u32>,
    hidden: Option<u32>,
    inter: Option<u32>,
    experts: Option<u32>,
    top_k: Option<u32>,
    activation: Option<String>,
    bias: Option<bool>,
    dtype: Option<String>,
    capacity: Option<CapacityValue>,
    renormalize: Option<bool>,
    placement: Option<PlacementValue>,
    memory_limit_gib: Option<f64>,
    swiglu_limit: Option<f64>,
    scoring: Option<String>,
    router_bias: Option<bool>,
    selection_bias: Option<bool>,
    groups: Option<Vec<u32>>,
    group_score: Option<String>,
    routed_scaling: Option<f64>,
    shared_experts: Option<Vec<u32>>,
    shared_gate: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum CapacityValue {
    Factor(f64),
    Name(String),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PlacementValue {
    Name(String),
    Table(Vec<u32>),
}

impl ConfigFile {
    fn into_config(self) -> Result<MoeConfig, ConfigError> {
        let mut c = match &self.preset {
            Some(name) => preset(name)?,
            None => MoeConfig::default(),
        };
        let set = |dst: &mut u32, v: Option<u32>| {
            if let Some(v) = v {
                *dst = v;
            }
        };
        set(&mut c.world, self.world);
        set(&mut c.tokens_per_rank, self.tokens_per_rank);
        set(&mut c.hidden, self.hidden);
        set(&mut c.inter, self.inter);
        set(&mut c.experts, self.experts);
        set(&mut c.top_k, self.top_k);
        if let Some(a) = &self.activation {
            c.activation = a.parse()?;
        }
        if let Some(b) = self.bias {
            c.bias = b;
        }
        if let Some(d) = &self.dtype {
            c.dtype = d.parse().map_err(|e| invalid("dtype", format!("{e}")))?;
        }
        match &self.capacity {
            Some(CapacityValue::Factor(f)) => c.capacity = CapacityPolicy::Factor(*f),
            Some(CapacityValue::Name(n)) => c.capacity = n.parse()?,
            None => {}
        }
        if let Some(r) = self.renormalize {
            c.renormalize = r;
        }
        match &self.placement {
            Some(PlacementValue::Name(n)) => c.placement = n.parse()?,
            Some(PlacementValue::Table(t)) => c.placement = Placement::Table(t.clone()),
            None => {}
        }
        self.model_features(&mut c)?;
        if let Some(gib) = self.memory_limit_gib {
            if !(gib.is_finite() && gib > 0.0) {
                return Err(invalid("memory_limit_gib", format!("{gib} must be finite and > 0")));
            }
            c.memory_limit = (gib * (1u64 << 30) as f64) as u64;
        }
        c.validate()?;
        Ok(c)
    }
}

impl ConfigFile {
    /// The real models' keys (module doc) over `c`'s routing, shared experts and activation.
    fn model_features(&self, c: &mut MoeConfig) -> Result<(), ConfigError> {
        if let Some(limit) = self.swiglu_limit {
            let Activation::SwigluOss(p) = &mut c.activation else {
                return Err(invalid("swiglu_limit", "only the swiglu-oss activation is clamped"));
            };
            p.limit = limit;
        }
        let r = &mut c.routing;
        if let Some(s) = &self.scoring {
            r.scoring = match s.as_str() {
                "softmax" => Scoring::Softmax,
                "sigmoid" => Scoring::Sigmoid,
                "topk-softmax" => Scoring::TopKSoftmax,
                _ => {
                    return Err(invalid(
                        "scoring",
                        format!("{s:?} is not softmax, sigmoid or topk-softmax"),
                    ));
                }
            };
        }
        if let Some(b) = self.router_bias {
            r.router_bias = b;
        }
        if let Some(b) = self.selection_bias {
            r.selection_bias = b;
        }
        let score = match self.group_score.as_deref() {
            None => r.groups.map_or(GroupScore::Top2Sum, |g| g.score),
            Some("top2-sum") => GroupScore::Top2Sum,
            Some("max") => GroupScore::Max,
            Some(other) => {
                return Err(invalid("group_score", format!("{other:?} is not top2-sum or max")));
            }
        };
        match self.groups.as_deref() {
            None => r.groups = r.groups.map(|g| Groups { score, ..g }),
            Some([]) => r.groups = None,
            Some(&[count, keep]) => r.groups = Some(Groups { count, keep, score }),
            Some(other) => {
                return Err(invalid("groups", format!("{other:?} is not [n_group, keep] or []")));
            }
        }
        if let Some(scaling) = self.routed_scaling {
            r.scaling = scaling;
        }
        let gate = match self.shared_gate.as_deref() {
            None => c.shared.map_or(SharedGate::None, |s| s.gate),
            Some("none") => SharedGate::None,
            Some("sigmoid") => SharedGate::Sigmoid,
            Some(other) => {
                return Err(invalid("shared_gate", format!("{other:?} is not none or sigmoid")));
            }
        };
        match self.shared_experts.as_deref() {
            None => c.shared = c.shared.map(|s| SharedExperts { gate, ..s }),
            Some([]) => c.shared = None,
            Some(&[count, inter]) => c.shared = Some(SharedExperts { count, inter, gate }),
            Some(other) => {
                return Err(invalid(
                    "shared_experts",
                    format!("{other:?} is not [count, inter] or []"),
                ));
            }
        }
        Ok(())
    }
}

/// The format label of our TOML schema's errors.
const OURS_TOML: &str = "flashdmoe TOML";
/// The format label of our JSON schema's errors.
const OURS_JSON: &str = "flashdmoe JSON";
/// The format label of a Hugging Face config's syntax errors.
const HF_JSON: &str = "Hugging Face config.json";

/// Keys that mark a JSON file as a Hugging Face config (none of them is ours).
const HF_KEYS: [&str; 5] = ["model_type", "architectures", "hidden_size", "d_model", "text_config"];

/// A parse error of `format`; an unknown key of our schema says which schema it is.
fn parse_error(format: &'static str, e: impl fmt::Display) -> ConfigError {
    let mut message = e.to_string();
    if format != HF_JSON && message.contains("unknown field") {
        message.push_str(
            " (flashdmoe's own schema, documented in flashdmoe-core/src/config/file.rs; a \
             Hugging Face config.json is recognised by its model_type field)",
        );
    }
    ConfigError::Parse { format, message }
}

impl MoeConfig {
    /// A config from our TOML schema (module doc), validated.
    pub fn from_toml_str(text: &str) -> Result<MoeConfig, ConfigError> {
        toml::from_str::<ConfigFile>(text).map_err(|e| parse_error(OURS_TOML, e))?.into_config()
    }

    /// A config from our JSON schema (module doc), validated.
    pub fn from_json_str(text: &str) -> Result<MoeConfig, ConfigError> {
        serde_json::from_str::<ConfigFile>(text)
            .map_err(|e| parse_error(OURS_JSON, e))?
            .into_config()
    }

    /// A config from a Hugging Face `config.json` (`config/hf.rs`), validated.
    pub fn from_hf_config_str(text: &str) -> Result<MoeConfig, ConfigError> {
        let v: Value = serde_json::from_str(text).map_err(|e| parse_error(HF_JSON, e))?;
        from_hf(&v)
    }

    /// A config from a file: `.toml` is our TOML schema; `.json` is a Hugging Face config when
    /// it has one of their keys (module doc), else our JSON schema.
    pub fn load(path: &Path) -> Result<MoeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("toml") => MoeConfig::from_toml_str(&text),
            Some("json") => {
                let v: Value = serde_json::from_str(&text).map_err(|e| parse_error("JSON", e))?;
                if HF_KEYS.iter().any(|k| v.get(k).is_some()) {
                    from_hf(&v)
                } else {
                    MoeConfig::from_json_str(&text)
                }
            }
            _ => Err(ConfigError::Io {
                path: path.display().to_string(),
                message: "unknown extension (expected .toml or .json)".to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;

    fn data(rel: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data").join(rel)
    }

    #[test]
    fn sample_toml_and_json_files() {
        let t = MoeConfig::load(&data("moe.toml")).unwrap();
        assert_eq!((t.world, t.tokens_per_rank, t.hidden, t.inter), (4, 256, 512, 1024));
        assert_eq!((t.experts, t.top_k, t.activation, t.bias), (16, 2, Activation::Gelu, true));
        assert_eq!((t.dtype, t.capacity), (DType::F16, CapacityPolicy::Factor(1.25)));
        assert_eq!(t.placement, Placement::Contiguous);
        assert_eq!(t.memory_limit, 8 << 30);

        let j = MoeConfig::load(&data("moe.json")).unwrap();
        // A preset base with overrides.
        assert_eq!((j.hidden, j.inter, j.experts, j.top_k), (4096, 14336, 8, 2));
        assert_eq!((j.world, j.tokens_per_rank, j.capacity), (2, 128, CapacityPolicy::Dropless));
        assert_eq!(j.placement, Placement::Table(vec![0, 1, 0, 1, 0, 1, 0, 1]));
        assert_eq!(j.dtype, DType::F32);
    }

    #[test]
    fn schema_errors() {
        let field = |text: &str| match MoeConfig::from_toml_str(text) {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field("top_k = 0"), "top_k");
        assert_eq!(field("hidden = 100"), "hidden");
        assert_eq!(field("capacity = -1"), "capacity");
        assert_eq!(field("capacity = \"lots\""), "capacity");
        assert_eq!(field("activation = \"tanh\""), "activation");
        assert_eq!(field("dtype = \"int8\""), "dtype");
        assert_eq!(field("placement = [0, 1]"), "placement");
        assert_eq!(field("placement = \"round-robin\""), "placement");
        assert_eq!(field("memory_limit_gib = 0"), "memory_limit_gib");
        assert!(matches!(
            MoeConfig::from_toml_str("preset = \"nope\""),
            Err(ConfigError::UnknownPreset { .. })
        ));
        let unknown = MoeConfig::from_toml_str("hiden = 64").unwrap_err();
        assert!(
            matches!(&unknown, ConfigError::Parse { format: OURS_TOML, message }
                if message.contains("hiden") && message.contains("flashdmoe's own schema")),
            "{unknown}"
        );
        assert!(matches!(
            MoeConfig::from_json_str("{\"world\": \"two\"}"),
            Err(ConfigError::Parse { format: OURS_JSON, .. })
        ));
        assert!(matches!(
            MoeConfig::load(Path::new("/nonexistent/x.toml")),
            Err(ConfigError::Io { .. })
        ));
        // capacity as an integer is a factor.
        assert_eq!(
            MoeConfig::from_toml_str("capacity = 2").unwrap().capacity,
            CapacityPolicy::Factor(2.0)
        );
    }

    #[test]
    fn real_model_features_in_our_schema() {
        let c = MoeConfig::from_toml_str(
            "hidden = 128\ninter = 64\nexperts = 16\ntop_k = 4\nactivation = \"swiglu\"\n\
             scoring = \"sigmoid\"\nselection_bias = true\ngroups = [4, 2]\n\
             routed_scaling = 2.5\nshared_experts = [1, 128]",
        )
        .unwrap();
        assert_eq!(c.routing, crate::config::Routing::deepseek_v3(Some((4, 2)), 2.5));
        assert_eq!(c.shared, Some(SharedExperts { count: 1, inter: 128, gate: SharedGate::None }));
        // Over a preset: gpt-oss with another clamp; DeepSeek-V3 without its groups, or as
        // DeepSeek-V2's groups; Qwen's shared expert without its gate.
        let oss = MoeConfig::from_toml_str("preset = \"gpt-oss-20b\"\nswiglu_limit = 5.0").unwrap();
        assert_eq!(oss.activation, Activation::SwigluOss(SwigluOss { alpha: 1.702, limit: 5.0 }));
        let v3 =
            |extra: &str| MoeConfig::from_toml_str(&format!("preset = \"deepseek-v3\"\n{extra}"));
        assert_eq!(v3("groups = []").unwrap().routing.groups, None);
        assert_eq!(
            v3("group_score = \"max\"").unwrap().routing.groups.unwrap().score,
            GroupScore::Max
        );
        let q = MoeConfig::from_json_str(r#"{"preset": "qwen2-57b-a14b", "shared_gate": "none"}"#)
            .unwrap();
        assert_eq!(q.shared.unwrap().gate, SharedGate::None);
        let field = |text: &str| match MoeConfig::from_toml_str(text) {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field("swiglu_limit = 7.0"), "swiglu_limit");
        assert_eq!(field("scoring = \"tanh\""), "scoring");
        assert_eq!(field("groups = [3]"), "groups");
        assert_eq!(field("groups = [3, 1]"), "routing.groups"); // 3 groups do not divide 8
        assert_eq!(field("shared_experts = [1, 100]"), "shared.inter");
        assert_eq!(field("shared_gate = \"relu\""), "shared_gate");
    }

    #[test]
    fn display_and_parse_round_trip() {
        for a in [
            Activation::Relu,
            Activation::Gelu,
            Activation::SiluGated,
            Activation::SwigluOss(SwigluOss::GPT_OSS),
        ] {
            assert_eq!(a.to_string().parse::<Activation>(), Ok(a));
        }
        for c in [CapacityPolicy::Dropless, CapacityPolicy::Factor(1.25)] {
            assert_eq!(c.to_string().parse::<CapacityPolicy>(), Ok(c));
        }
        for p in [Placement::Contiguous, Placement::Table(vec![1, 0, 2])] {
            assert_eq!(p.to_string().parse::<Placement>(), Ok(p));
        }
    }
}
