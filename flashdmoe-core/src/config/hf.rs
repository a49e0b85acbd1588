//! Hugging Face `config.json`: a model's MoE layer, read by its model family.
//!
//! A config is read by its `model_type` (from `text_config` first for multimodal wrappers such
//! as Llama-4's): the family says which fields its reference MoE block reads and what an absent
//! one defaults to. Every such field that changes the layer's math is mapped, or refused with
//! [`ConfigError::NotImplemented`] naming it; nothing is dropped. A `model_type` outside the
//! table is refused ([`ConfigError::HfField`]): its router or experts may differ.
//!
//! | `model_type` | H, I, E, k | top-k weights renormalised | also read | refused (issue 16) |
//! |---|---|---|---|---|
//! | `mixtral` | `hidden_size`, `intermediate_size`, `num_local_experts`, `num_experts_per_tok` | always | | |
//! | `qwen2_moe` | `hidden_size`, `moe_intermediate_size`, `num_experts`, `num_experts_per_tok` | `norm_topk_prob` (absent: no) | a shared expert of `shared_expert_intermediate_size` (absent: 5632; 0: none) with its sigmoid `shared_expert_gate` | |
//! | `qwen3_moe` | as `qwen2_moe` | `norm_topk_prob` (absent: no) | | |
//! | `olmoe` | `hidden_size`, `intermediate_size`, `num_experts`, `num_experts_per_tok` | `norm_topk_prob` (absent: no) | | |
//! | `deepseek_v2` | `hidden_size`, `moe_intermediate_size`, `n_routed_experts`, `num_experts_per_tok` | never (`norm_topk_prob` true is refused: its references disagree) | softmax scores; `n_shared_experts` (absent: 0) shared experts of `moe_intermediate_size`; `topk_method` `greedy` (absent) or `group_limited_greedy` with `n_group` / `topk_group` (groups ranked by their best score); `routed_scaling_factor` (absent: 1) | |
//! | `deepseek_v3`, `kimi_k2` | as `deepseek_v2` | `norm_topk_prob` (absent: yes) | sigmoid scores (`scoring_func` must say so if present), the `noaux_tc` selection bias (`topk_method` likewise), groups `n_group` / `topk_group` (absent: 8 / 4) ranked by their top-two sum, `routed_scaling_factor` (absent: 2.5), `n_shared_experts` (absent: 1) | |
//! | `gpt_oss` | `hidden_size`, `intermediate_size`, `num_local_experts`, `num_experts_per_tok` / `experts_per_token` (biases) | always (a softmax over the top-k logits) | a router bias; SwiGLU with alpha 1.702, `up + 1` and `swiglu_limit` (absent: 7) | |
//! | `dbrx` | `d_model`, `ffn_config.ffn_hidden_size`, `ffn_config.moe_num_experts`, `ffn_config.moe_top_k` | `ffn_config.moe_normalize_expert_weights` 1 (absent: 1; null: no) | | other p-norms |
//! | `llama4` / `llama4_text` | in `text_config` | | its shared expert (`intermediate_size`) | its router (sigmoid scaling the expert input) |
//! | `jamba` | `hidden_size`, `intermediate_size`, `num_experts`, `num_experts_per_tok` | never | | |
//!
//! In every family: `hidden_act` must be `silu` (the experts are SwiGLU); `mlp_bias` true is
//! refused where the reference's experts have no biases; a `quantization_config` is refused
//! (the layer's math is that of the dequantized weights; the presets of those models compute
//! it). A field of the table that the family's reference does not read (`swiglu_limit` in a
//! Mixtral config, `n_shared_experts` in a Qwen3-MoE one, a `scoring_func` other than the
//! family's) is an [`ConfigError::HfField`] error unless its value leaves the layer alone: the
//! config contradicts its `model_type`. `norm_topk_prob` must agree with a family that does not
//! read it.
//!
//! Layers: the config describes the model's MoE layers, which all share this shape. A layer the
//! placement fields make dense (`first_k_dense_replace`, `moe_layer_freq`,
//! `decoder_sparse_step`, `mlp_only_layers`, `expert_layer_period` / `_offset`) is not an MoE
//! layer: a config in which every layer is dense is refused naming the field, and the
//! safetensors loader refuses a dense layer's prefix.
//!
//! Every other field (attention, positions, vocabulary, tokenizer ids, `architectures`,
//! dropouts, auxiliary-loss and jitter coefficients used only in training, ...) does not enter
//! these families' MoE forward and is ignored. `torch_dtype` / `dtype` gives the element type
//! (absent: bf16). Run parameters are those of the model presets: one rank, 4096 tokens,
//! dropless.

use serde_json::{Map, Value};

use super::presets::MODEL_TOKENS;
use super::{
    Activation, CapacityPolicy, ConfigError, DType, Feature, GroupScore, Groups, MoeConfig,
    Routing, SharedExperts, SharedGate, SwigluOss, Unsupported,
};

/// A model family whose MoE block flashdmoe knows (module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Mixtral,
    Qwen2Moe,
    Qwen3Moe,
    Olmoe,
    DeepseekV2,
    DeepseekV3,
    GptOss,
    Dbrx,
    Llama4,
    Jamba,
}

/// `model_type` values and their families.
const FAMILIES: [(&str, Family); 12] = [
    ("mixtral", Family::Mixtral),
    ("qwen2_moe", Family::Qwen2Moe),
    ("qwen3_moe", Family::Qwen3Moe),
    ("olmoe", Family::Olmoe),
    ("deepseek_v2", Family::DeepseekV2),
    ("deepseek_v3", Family::DeepseekV3),
    ("kimi_k2", Family::DeepseekV3),
    ("gpt_oss", Family::GptOss),
    ("dbrx", Family::Dbrx),
    ("llama4", Family::Llama4),
    ("llama4_text", Family::Llama4),
    ("jamba", Family::Jamba),
];

/// One JSON object of the config, with the path that names its fields in errors.
#[derive(Clone)]
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Obj<'a> {
    fn name(&self, key: &str) -> String {
        format!("{}{key}", self.path)
    }

    fn err(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::HfField { field: self.name(key), reason: reason.into() }
    }

    /// The field, `None` when absent or null.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn u32(&self, key: &str) -> Result<Option<u32>, ConfigError> {
        self.get(key)
            .map(|x| {
                x.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| self.err(key, format!("{x} is not a 32-bit unsigned integer")))
            })
            .transpose()
    }

    /// A size the layer's shape comes from.
    fn size(&self, key: &str) -> Result<u32, ConfigError> {
        self.u32(key)?.ok_or_else(|| self.err(key, "absent (the layer's shape comes from it)"))
    }

    fn f64(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        self.get(key)
            .map(|x| x.as_f64().ok_or_else(|| self.err(key, format!("{x} is not a number"))))
            .transpose()
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        self.get(key)
            .map(|x| x.as_bool().ok_or_else(|| self.err(key, format!("{x} is not a bool"))))
            .transpose()
    }

    fn str(&self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        self.get(key)
            .map(|x| x.as_str().ok_or_else(|| self.err(key, format!("{x} is not a string"))))
            .transpose()
    }

    fn obj(&self, key: &str) -> Result<Option<Obj<'a>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Obj { map, path: format!("{}.", self.name(key)) })),
            Some(x) => Err(self.err(key, format!("{x} is not an object"))),
        }
    }
}

/// The reading of one config: its objects, family, and the unsupported fields found so far.
struct Reader<'a> {
    top: Obj<'a>,
    /// The language model's fields: `text_config` when there is one, else `top`.
    layer: Obj<'a>,
    family: Family,
    model_type: &'a str,
    unsupported: Vec<Unsupported>,
}

/// The layer's shape and the fields it came from (named in validation errors).
struct Shape {
    sizes: [(u32, String); 4],
}

pub(super) fn from_hf(v: &Value) -> Result<MoeConfig, ConfigError> {
    let Value::Object(map) = v else {
        return Err(ConfigError::HfField {
            field: "config.json".into(),
            reason: "is not a JSON object".into(),
        });
    };
    let top = Obj { map, path: String::new() };
    let layer = top.obj("text_config")?.unwrap_or_else(|| top.clone());
    let typed = if layer.get("model_type").is_some() { &layer } else { &top };
    let known = || FAMILIES.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(", ");
    let model_type = typed.str("model_type")?.ok_or_else(|| {
        typed.err(
            "model_type",
            format!(
                "absent: the model family decides how the MoE layer computes (known: {})",
                known()
            ),
        )
    })?;
    let family =
        FAMILIES.iter().find(|(t, _)| *t == model_type).map(|&(_, f)| f).ok_or_else(|| {
            typed.err(
            "model_type",
            format!(
                "{model_type:?} is not a model family flashdmoe knows (known: {}): its router or \
                 experts may compute a different layer, so it is refused",
                known()
            ),
        )
        })?;
    let mut r = Reader { top, layer, family, model_type, unsupported: Vec::new() };
    let model = r.model()?;
    let renormalize = r.renormalize()?;
    if !r.unsupported.is_empty() {
        return Err(ConfigError::NotImplemented {
            origin: "config.json".into(),
            unsupported: r.unsupported,
            note: String::new(),
        });
    }
    r.check_moe_layers()?;
    let shape = r.shape()?;
    let dtype = r.dtype()?;
    let [(hidden, _), (inter, _), (experts, _), (top_k, _)] = &shape.sizes;
    let c = MoeConfig {
        world: 1,
        tokens_per_rank: MODEL_TOKENS,
        hidden: *hidden,
        inter: *inter,
        experts: *experts,
        top_k: *top_k,
        activation: model.activation,
        bias: family == Family::GptOss,
        dtype,
        capacity: CapacityPolicy::Dropless,
        renormalize,
        routing: model.routing,
        shared: model.shared.map(|(count, inter_override, gate)| SharedExperts {
            count,
            inter: inter_override.unwrap_or(*inter),
            gate,
        }),
        ..MoeConfig::default()
    };
    // Our fields of the routing and the shared experts, by the config.json field they came from.
    let shared_key = if family == Family::Qwen2Moe {
        "shared_expert_intermediate_size"
    } else {
        "n_shared_experts"
    };
    let model_fields = [
        ("routing.groups", r.layer.name("n_group")),
        ("routing.scaling", r.layer.name("routed_scaling_factor")),
        ("shared", r.layer.name(shared_key)),
        ("shared.inter", r.layer.name(shared_key)),
        ("activation", r.layer.name("swiglu_limit")),
    ];
    c.validate().map_err(|e| match &e {
        ConfigError::Invalid { field, reason } => match model_fields
            .iter()
            .find(|(f, _)| f == field)
        {
            Some((_, name)) => ConfigError::HfField { field: name.clone(), reason: reason.clone() },
            None => shape.rename(e),
        },
        _ => e,
    })?;
    Ok(c)
}

/// What the family's reference computes beside the layer's shape.
struct Model {
    routing: Routing,
    /// `(count, intermediate size if not the routed experts', gate)`.
    shared: Option<(u32, Option<u32>, SharedGate)>,
    activation: Activation,
}

impl Shape {
    /// A validation error about H, I, E or k, named by the config.json field it came from.
    fn rename(&self, e: ConfigError) -> ConfigError {
        let ConfigError::Invalid { field, reason } = &e else { return e };
        let ours = ["hidden", "inter", "experts", "top_k"];
        match ours.iter().position(|f| f == field) {
            Some(i) => {
                ConfigError::HfField { field: self.sizes[i].1.clone(), reason: reason.clone() }
            }
            None => e,
        }
    }
}

impl Reader<'_> {
    fn not_implemented(&mut self, field: String, value: String, feature: Feature) {
        self.unsupported.push(Unsupported { field, value, feature });
    }

    /// `torch_dtype` or `dtype`, of the language model first (absent: bf16).
    fn dtype(&self) -> Result<DType, ConfigError> {
        for obj in [&self.layer, &self.top] {
            for key in ["torch_dtype", "dtype"] {
                if let Some(d) = obj.str(key)? {
                    return d.parse().map_err(|e| obj.err(key, format!("{e}")));
                }
            }
        }
        Ok(DType::Bf16)
    }

    /// H, I, E and k.
    fn shape(&self) -> Result<Shape, ConfigError> {
        use Family::*;
        let l = &self.layer;
        let sized = |o: &Obj, key: &str| Ok::<_, ConfigError>((o.size(key)?, o.name(key)));
        if self.family == Dbrx {
            let ffn = self.top.obj("ffn_config")?.ok_or_else(|| {
                self.top.err("ffn_config", "absent (DBRX keeps its MoE layer's shape there)")
            })?;
            return Ok(Shape {
                sizes: [
                    sized(&self.top, "d_model")?,
                    sized(&ffn, "ffn_hidden_size")?,
                    sized(&ffn, "moe_num_experts")?,
                    sized(&ffn, "moe_top_k")?,
                ],
            });
        }
        let inter = match self.family {
            Qwen2Moe | Qwen3Moe | DeepseekV2 | DeepseekV3 => "moe_intermediate_size",
            _ => "intermediate_size",
        };
        let experts = match self.family {
            Mixtral | GptOss | Llama4 => "num_local_experts",
            DeepseekV2 | DeepseekV3 => "n_routed_experts",
            _ => "num_experts",
        };
        let hidden = sized(l, "hidden_size")?;
        let (inter, experts) = (sized(l, inter)?, sized(l, experts)?);
        // gpt-oss writes both names; its own code reads num_experts_per_tok.
        let top_k = match l.get("num_experts_per_tok") {
            None if l.get("experts_per_token").is_some() => sized(l, "experts_per_token")?,
            _ => sized(l, "num_experts_per_tok")?,
        };
        Ok(Shape { sizes: [hidden, inter, experts, top_k] })
    }

    /// Whether the reference renormalises the top-k weights (module doc).
    fn renormalize(&self) -> Result<bool, ConfigError> {
        use Family::*;
        let l = &self.layer;
        let fixed = |always: bool| match l.bool("norm_topk_prob")? {
            Some(b) if b != always => Err(l.err(
                "norm_topk_prob",
                format!(
                    "{b}: the {} reference {} the top-k weights and does not read this field",
                    self.model_type,
                    if always { "always renormalises" } else { "never renormalises" }
                ),
            )),
            _ => Ok(always),
        };
        match self.family {
            Mixtral | GptOss => fixed(true),
            Jamba | Llama4 => fixed(false),
            Qwen2Moe | Qwen3Moe | Olmoe => Ok(l.bool("norm_topk_prob")?.unwrap_or(false)),
            DeepseekV2 => match l.bool("norm_topk_prob")? {
                Some(true) => Err(l.err(
                    "norm_topk_prob",
                    "true: the deepseek_v2 references disagree on it (transformers' never \
                     renormalises and always applies routed_scaling_factor; DeepSeek's own code \
                     renormalises and then leaves the scaling out), so it is refused rather \
                     than guessed",
                )),
                _ => Ok(false),
            },
            DeepseekV3 => Ok(l.bool("norm_topk_prob")?.unwrap_or(true)),
            Dbrx => {
                let Some(ffn) = self.top.obj("ffn_config")? else { return Ok(true) };
                // transformers' default is 1; an explicit null means no normalisation.
                match ffn.map.get("moe_normalize_expert_weights") {
                    None => Ok(true),
                    Some(Value::Null) => Ok(false),
                    Some(p) if p.as_f64() == Some(1.0) => Ok(true),
                    Some(p) if p.is_number() => Ok(true), // refused in dbrx_features()
                    Some(p) => {
                        Err(ffn.err("moe_normalize_expert_weights", format!("{p} is not a number")))
                    }
                }
            }
        }
    }

    /// A field the family's reference does not read, set to a value that would change the
    /// layer if it did: the config describes another layer than the one its model_type runs.
    fn not_read(&self, key: &str, value: &Value, what: &str) -> ConfigError {
        self.layer.err(
            key,
            format!(
                "{value}: the {} reference {what} and does not read this field, so the config \
                 contradicts its model_type",
                self.model_type
            ),
        )
    }

    /// The layer's routing, shared experts and activation as the family's reference computes
    /// them (module doc); collects the fields whose feature flashdmoe lacks.
    fn model(&mut self) -> Result<Model, ConfigError> {
        use Family::*;
        let (l, mt, family) = (self.layer.clone(), self.model_type, self.family);
        let deepseek = matches!(family, DeepseekV2 | DeepseekV3);
        let v3 = family == DeepseekV3;

        // Shared experts.
        let shared = match family {
            Qwen2Moe => match l.u32("shared_expert_intermediate_size")?.unwrap_or(5632) {
                0 => None,
                inter => Some((1, Some(inter), SharedGate::Sigmoid)),
            },
            DeepseekV2 | DeepseekV3 => {
                match l.u32("n_shared_experts")?.unwrap_or(if v3 { 1 } else { 0 }) {
                    0 => None,
                    n => Some((n, None, SharedGate::None)),
                }
            }
            Llama4 => {
                let inter = l.u32("intermediate_size")?.unwrap_or(8192);
                self.not_implemented(
                    l.name("model_type"),
                    format!("{mt:?}"),
                    Feature::Llama4Router,
                );
                Some((1, Some(inter), SharedGate::None))
            }
            _ => None,
        };
        let shared_keys: &[&str] = match family {
            Qwen2Moe => &["n_shared_experts", "moe_shared_expert_intermediate_size"],
            DeepseekV2 | DeepseekV3 => {
                &["shared_expert_intermediate_size", "moe_shared_expert_intermediate_size"]
            }
            _ => &[
                "n_shared_experts",
                "shared_expert_intermediate_size",
                "moe_shared_expert_intermediate_size",
            ],
        };
        for &key in shared_keys {
            if l.u32(key)?.unwrap_or(0) > 0 {
                return Err(self.not_read(key, &l.map[key], "has no shared experts of this kind"));
            }
        }

        // The router.
        let scoring = l.str("scoring_func")?;
        match (v3, scoring) {
            (_, None) | (true, Some("sigmoid")) | (false, Some("softmax")) => {}
            (_, Some(_)) => {
                let how = if v3 { "scores with a sigmoid" } else { "scores with a softmax" };
                return Err(self.not_read("scoring_func", &l.map["scoring_func"], how));
            }
        }
        let method = l.str("topk_method")?;
        let grouped = match (family, method) {
            (DeepseekV3, None | Some("noaux_tc")) => true,
            (DeepseekV2, Some("group_limited_greedy")) => true,
            (_, None | Some("greedy")) if family != DeepseekV3 => false,
            (_, Some(m)) if deepseek => {
                let what = if v3 {
                    "always chooses by noaux_tc (sigmoid scores, a selection bias, groups)"
                } else {
                    "chooses by greedy or group_limited_greedy only"
                };
                return Err(l.err("topk_method", format!("{m:?}: the {mt} reference {what}")));
            }
            (_, _) => {
                return Err(self.not_read("topk_method", &l.map["topk_method"], "has no groups"));
            }
        };
        let n_group = l.u32("n_group")?.unwrap_or(if v3 { 8 } else { 1 });
        let topk_group = l.u32("topk_group")?.unwrap_or(if v3 { 4 } else { n_group });
        let groups = if grouped && n_group > 1 && topk_group < n_group {
            let score = if v3 { GroupScore::Top2Sum } else { GroupScore::Max };
            Some(Groups { count: n_group, keep: topk_group, score })
        } else {
            None
        };
        if !deepseek && n_group > 1 && topk_group < n_group && method.is_none() {
            return Err(self.not_read("n_group", &l.map["n_group"], "has no expert groups"));
        }
        let scaling = l.f64("routed_scaling_factor")?.unwrap_or(if v3 { 2.5 } else { 1.0 });
        if !deepseek && scaling != 1.0 {
            let v = &l.map["routed_scaling_factor"];
            return Err(self.not_read("routed_scaling_factor", v, "does not scale the weights"));
        }
        let routing = match family {
            DeepseekV3 => Routing { groups, scaling, ..Routing::deepseek_v3(None, 1.0) },
            DeepseekV2 => Routing { groups, scaling, ..Routing::SOFTMAX },
            GptOss => Routing::GPT_OSS,
            _ => Routing::SOFTMAX,
        };

        // The experts.
        let activation = if family == GptOss {
            let limit = l.f64("swiglu_limit")?.unwrap_or(7.0);
            Activation::SwigluOss(SwigluOss { limit, ..SwigluOss::GPT_OSS })
        } else {
            if let Some(v) = l.get("swiglu_limit") {
                return Err(self.not_read("swiglu_limit", v, "does not clamp its SwiGLU"));
            }
            Activation::SiluGated
        };
        if family == Dbrx {
            self.dbrx_features()?;
        } else if let Some(act) = l.str("hidden_act")?
            && act != "silu"
        {
            self.not_implemented(
                l.name("hidden_act"),
                format!("{act:?}"),
                Feature::GatedActivation,
            );
        }
        if family != GptOss && l.bool("mlp_bias")? == Some(true) {
            return Err(
                l.err("mlp_bias", format!("true: the {mt} reference's experts have no biases"))
            );
        }
        for obj in [&self.top.clone(), &l] {
            if let Some(q) = obj.obj("quantization_config")? {
                let method = q.get("quant_method").map_or("?".to_owned(), Value::to_string);
                let value = format!("{{quant_method: {method}}}");
                self.not_implemented(
                    obj.name("quantization_config"),
                    value,
                    Feature::QuantizedWeights,
                );
                break;
            }
        }
        Ok(Model { routing, shared, activation })
    }

    /// DBRX's `ffn_config`: activation, p-norm, uniform assignment.
    fn dbrx_features(&mut self) -> Result<(), ConfigError> {
        let Some(ffn) = self.top.obj("ffn_config")? else { return Ok(()) };
        if let Some(p) = ffn.f64("moe_normalize_expert_weights")?
            && p != 1.0
        {
            let key = "moe_normalize_expert_weights";
            self.not_implemented(ffn.name(key), p.to_string(), Feature::TopKNorm);
        }
        if let Some(act) = ffn.obj("ffn_act_fn")?
            && let Some(name) = act.str("name")?
            && name != "silu"
        {
            self.not_implemented(act.name("name"), format!("{name:?}"), Feature::GatedActivation);
        }
        if ffn.bool("uniform_expert_assignment")? == Some(true) {
            return Err(ffn.err(
                "uniform_expert_assignment",
                "true: DBRX's benchmarking mode that ignores the router is not a layer flashdmoe computes",
            ));
        }
        Ok(())
    }

    /// Refuses a config in which no layer is an MoE layer (module doc).
    fn check_moe_layers(&self) -> Result<(), ConfigError> {
        use Family::*;
        let l = &self.layer;
        let nonzero = |key: &str, default: u32| match l.u32(key)?.unwrap_or(default) {
            0 => Err(l.err(key, "0 is not a layer period")),
            n => Ok(n),
        };
        // Whether some layer below `layers` is an MoE layer, without walking every index (a
        // config may say any number of layers).
        let (field, any_moe): (&str, Box<dyn Fn(u64) -> bool>) = match self.family {
            Qwen2Moe | Qwen3Moe => {
                let step = nonzero("decoder_sparse_step", 1)? as u64;
                let dense: Vec<u64> = match l.get("mlp_only_layers") {
                    None => Vec::new(),
                    Some(x) => x
                        .as_array()
                        .and_then(|a| a.iter().map(Value::as_u64).collect())
                        .ok_or_else(|| {
                            l.err("mlp_only_layers", format!("{x} is not a list of layer indices"))
                        })?,
                };
                // Sparse layers are step - 1, 2 step - 1, ...: one of the first dense.len() + 1
                // is not listed dense.
                let any = move |layers: u64| {
                    (1..=dense.len() as u64 + 1)
                        .map(|k| k * step - 1)
                        .take_while(|&i| i < layers)
                        .any(|i| !dense.contains(&i))
                };
                ("decoder_sparse_step", Box::new(any))
            }
            DeepseekV2 | DeepseekV3 => {
                let first = l.u32("first_k_dense_replace")?.unwrap_or(0) as u64;
                let freq = nonzero("moe_layer_freq", 1)? as u64;
                (
                    "first_k_dense_replace",
                    Box::new(move |layers| first.div_ceil(freq) * freq < layers),
                )
            }
            Jamba => {
                let period = nonzero("expert_layer_period", 2)?;
                let offset = l.u32("expert_layer_offset")?.unwrap_or(1);
                let any = move |layers: u64| offset < period && (offset as u64) < layers;
                ("expert_layer_offset", Box::new(any))
            }
            _ => return Ok(()),
        };
        let Some(layers) = l.u32("num_hidden_layers")? else { return Ok(()) };
        if any_moe(layers as u64) {
            Ok(())
        } else {
            Err(l.err(
                field,
                format!(
                    "every one of the {layers} layers (num_hidden_layers) is dense by the layer \
                     placement fields: the model has no MoE layer"
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests;
