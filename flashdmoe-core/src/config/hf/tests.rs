use std::path::Path;

use super::*;
use crate::config::presets::preset;
use crate::config::{GroupScore, Groups};

fn sample(name: &str) -> Result<MoeConfig, ConfigError> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/hf");
    MoeConfig::load(&dir.join(name).join("config.json"))
}

/// A small config of `model_type` with every family's size keys, plus `extra` fields.
fn small(model_type: &str, extra: &str) -> Result<MoeConfig, ConfigError> {
    let sep = if extra.is_empty() { "" } else { "," };
    MoeConfig::from_hf_config_str(&format!(
        r#"{{"model_type": "{model_type}", "hidden_size": 2048, "intermediate_size": 1024,
            "moe_intermediate_size": 512, "num_experts": 8, "num_local_experts": 8,
            "n_routed_experts": 8, "num_experts_per_tok": 2{sep} {extra}}}"#
    ))
}

/// The `(field, feature)` pairs of a refusal.
fn refused(r: Result<MoeConfig, ConfigError>) -> Vec<(String, Feature)> {
    match r {
        Err(ConfigError::NotImplemented { origin, unsupported, .. }) => {
            assert_eq!(origin, "config.json");
            unsupported.into_iter().map(|u| (u.field, u.feature)).collect()
        }
        other => panic!("expected NotImplemented, got {other:?}"),
    }
}

/// The field of a HfField error.
fn field(r: Result<MoeConfig, ConfigError>) -> String {
    match r {
        Err(ConfigError::HfField { field, .. }) => field,
        other => panic!("expected HfField, got {other:?}"),
    }
}

fn pairs(list: &[(&str, Feature)]) -> Vec<(String, Feature)> {
    list.iter().map(|&(f, x)| (f.to_owned(), x)).collect()
}

/// A sample config.json without its `quantization_config` (the presets compute the
/// dequantized layer).
fn dequantized(name: &str) -> Result<MoeConfig, ConfigError> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/hf")
        .join(name)
        .join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("quantization_config");
    from_hf(&v)
}

#[test]
fn supported_samples_load_with_their_references_routing() {
    let cases = [
        ("mixtral-8x7b", 4096, 14336, 8, 2, true),
        ("olmoe-1b-7b", 2048, 1024, 64, 8, false),
        ("qwen3-30b-a3b", 2048, 768, 128, 8, true),
        ("dbrx-instruct", 6144, 10752, 16, 4, true),
        ("jamba-v0.1", 4096, 14336, 16, 2, false),
    ];
    for (name, h, i, e, k, renorm) in cases {
        let c = sample(name).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!((c.hidden, c.inter, c.experts, c.top_k), (h, i, e, k), "{name}");
        assert_eq!((c.renormalize, c.activation, c.bias), (renorm, Activation::SiluGated, false));
        assert_eq!((c.dtype, c.world, c.capacity), (DType::Bf16, 1, CapacityPolicy::Dropless));
        assert_eq!((c.routing, c.shared), (Routing::SOFTMAX, None), "{name}");
    }
}

#[test]
fn every_model_preset_is_its_config_json() {
    use crate::config::presets::MODELS;
    let mut checked = 0;
    for m in MODELS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/hf").join(m.name);
        if !dir.exists() {
            // The parts of models (-routed, -shape) have no config.json of their own.
            assert!(m.name.ends_with("-routed") || m.name.ends_with("-shape"), "{}", m.name);
            continue;
        }
        let c = dequantized(m.name).unwrap_or_else(|e| panic!("{}: {e}", m.name));
        assert_eq!(c, m.config(), "{}", m.name);
        checked += 1;
    }
    assert_eq!(checked, 10);
}

#[test]
fn shared_experts_routing_and_gpt_oss_experts_are_read() {
    let q = sample("qwen2-57b-a14b").unwrap();
    assert_eq!(q.shared, Some(SharedExperts { count: 1, inter: 20480, gate: SharedGate::Sigmoid }));
    assert_eq!((q.inter, q.renormalize, q.routing), (2560, false, Routing::SOFTMAX));
    let lite = sample("deepseek-v2-lite").unwrap();
    assert_eq!(lite.shared, Some(SharedExperts { count: 2, inter: 1408, gate: SharedGate::None }));
    assert_eq!(lite.routing, Routing::SOFTMAX);
    let v3 = dequantized("deepseek-v3").unwrap();
    assert_eq!(v3.routing, Routing::deepseek_v3(Some((8, 4)), 2.5));
    let kimi = dequantized("kimi-k2").unwrap();
    // n_group 1: no groups.
    assert_eq!((kimi.experts, kimi.routing), (384, Routing::deepseek_v3(None, 2.827)));
    let oss = dequantized("gpt-oss-120b").unwrap();
    assert_eq!((oss.experts, oss.top_k, oss.bias), (128, 4, true));
    assert_eq!(
        (oss.activation, oss.routing),
        (Activation::SwigluOss(SwigluOss::GPT_OSS), Routing::GPT_OSS)
    );
    // DeepSeek-V2's group_limited_greedy: groups ranked by their best score.
    let grouped = r#""topk_method": "group_limited_greedy", "n_group": 4, "topk_group": 2,
                    "routed_scaling_factor": 16.0"#;
    let c = small("deepseek_v2", grouped).unwrap();
    assert_eq!(c.routing.groups, Some(Groups { count: 4, keep: 2, score: GroupScore::Max }));
    assert_eq!(c.routing.scaling, 16.0);
    // The family defaults of an absent field: 8 groups of 8 experts / 8 = 1 have no top two.
    assert_eq!(field(small("deepseek_v3", "")), "n_group");
    let v3 = small("deepseek_v3", r#""n_group": 4"#).unwrap();
    assert_eq!(v3.routing, Routing::deepseek_v3(None, 2.5)); // keeps 4 of 4 groups
    assert_eq!(v3.shared.map(|s| (s.count, s.inter)), Some((1, 512)));
    let v3 = small("deepseek_v3", r#""n_group": 4, "topk_group": 1"#).unwrap();
    assert_eq!(v3.routing, Routing::deepseek_v3(Some((4, 1)), 2.5));
    assert!(v3.renormalize);
    let oss = small("gpt_oss", r#""swiglu_limit": 5.5"#).unwrap();
    assert_eq!(oss.activation, Activation::SwigluOss(SwigluOss { alpha: 1.702, limit: 5.5 }));
}

#[test]
fn quantized_and_llama4_samples_are_refused_naming_each_field() {
    use Feature::*;
    for name in ["deepseek-v3", "kimi-k2", "gpt-oss-20b", "gpt-oss-120b"] {
        assert_eq!(
            refused(sample(name)),
            pairs(&[("quantization_config", QuantizedWeights)]),
            "{name}"
        );
    }
    assert_eq!(
        refused(sample("llama-4-scout-17b-16e")),
        pairs(&[("text_config.model_type", Llama4Router)])
    );
    // The message names field, value and feature, and the issue.
    let msg = sample("gpt-oss-20b").unwrap_err().to_string();
    assert_eq!(
        msg,
        "config.json: quantization_config = {quant_method: \"mxfp4\"}: quantized expert \
         weights are not implemented yet (issue 16)"
    );
}

#[test]
fn without_their_shared_experts_the_configs_are_the_routed_presets() {
    for (name, shared, none) in [
        ("qwen1.5-moe-a2.7b", "shared_expert_intermediate_size", 0),
        ("deepseek-v2-lite", "n_shared_experts", 0),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/hf")
            .join(name)
            .join("config.json");
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        v[shared] = none.into();
        let routed = from_hf(&v).unwrap();
        assert_eq!(routed, preset(&format!("{name}-routed")).unwrap(), "{name}");
    }
}

#[test]
fn an_absent_norm_topk_prob_follows_the_familys_reference() {
    let renorm = |mt: &str, extra: &str| small(mt, extra).unwrap().renormalize;
    assert!(!renorm("qwen2_moe", ""));
    assert!(!renorm("qwen3_moe", ""));
    assert!(!renorm("olmoe", ""));
    assert!(!renorm("deepseek_v2", ""));
    assert!(renorm("deepseek_v3", r#""n_group": 1"#));
    assert!(!renorm("jamba", ""));
    assert!(renorm("mixtral", ""));
    assert!(renorm("qwen3_moe", r#""norm_topk_prob": true"#));
    // A family that does not read the field must not be told otherwise.
    assert_eq!(field(small("mixtral", r#""norm_topk_prob": false"#)), "norm_topk_prob");
    assert_eq!(field(small("jamba", r#""norm_topk_prob": true"#)), "norm_topk_prob");
    assert_eq!(field(small("gpt_oss", r#""norm_topk_prob": false"#)), "norm_topk_prob");
    assert!(renorm("mixtral", r#""norm_topk_prob": true"#));
    // DeepSeek-V2's references disagree on it.
    assert_eq!(field(small("deepseek_v2", r#""norm_topk_prob": true"#)), "norm_topk_prob");
    // Qwen2-MoE without the field has transformers' default shared expert (5632).
    let q = small("qwen2_moe", "").unwrap();
    assert_eq!(q.shared, Some(SharedExperts { count: 1, inter: 5632, gate: SharedGate::Sigmoid }));
}

#[test]
fn fields_a_family_does_not_read_are_contradictions_unless_they_change_nothing() {
    let cases = [
        (r#""n_shared_experts": 2"#, "n_shared_experts"),
        (r#""shared_expert_intermediate_size": 128"#, "shared_expert_intermediate_size"),
        (r#""scoring_func": "sigmoid""#, "scoring_func"),
        (r#""topk_method": "noaux_tc""#, "topk_method"),
        (r#""n_group": 4, "topk_group": 2"#, "n_group"),
        (r#""routed_scaling_factor": 2.0"#, "routed_scaling_factor"),
        (r#""swiglu_limit": 7.0"#, "swiglu_limit"),
    ];
    for (extra, name) in cases {
        let err = small("qwen3_moe", extra).unwrap_err();
        assert!(
            matches!(&err, ConfigError::HfField { field, reason }
                if field == name && reason.contains("the qwen3_moe reference")),
            "{extra}: {err}"
        );
    }
    // The same fields at values that leave the math alone are accepted.
    for extra in [
        r#""n_shared_experts": 0"#,
        r#""scoring_func": "softmax""#,
        r#""topk_method": "greedy", "n_group": 8, "topk_group": 3"#,
        r#""n_group": 4, "topk_group": 4"#,
        r#""routed_scaling_factor": 1.0"#,
        r#""hidden_act": "silu", "mlp_bias": false"#,
    ] {
        assert!(small("qwen3_moe", extra).is_ok(), "{extra}");
    }
    // The DeepSeek families' own fields must agree with their references.
    assert_eq!(field(small("deepseek_v3", r#""scoring_func": "softmax""#)), "scoring_func");
    assert_eq!(field(small("deepseek_v3", r#""topk_method": "greedy""#)), "topk_method");
    assert_eq!(field(small("deepseek_v2", r#""scoring_func": "sigmoid""#)), "scoring_func");
    assert_eq!(field(small("deepseek_v2", r#""topk_method": "noaux_tc""#)), "topk_method");
    assert_eq!(field(small("deepseek_v2", r#""topk_method": "best""#)), "topk_method");
    assert_eq!(field(small("qwen2_moe", r#""n_shared_experts": 1"#)), "n_shared_experts");
    assert_eq!(field(small("mixtral", r#""mlp_bias": true"#)), "mlp_bias");
    // Still refused in any family: other activations, quantized weights.
    use Feature::*;
    assert_eq!(
        refused(small("qwen3_moe", r#""hidden_act": "gelu""#)),
        pairs(&[("hidden_act", GatedActivation)])
    );
    assert_eq!(
        refused(small("qwen3_moe", r#""quantization_config": {"quant_method": "fp8"}"#)),
        pairs(&[("quantization_config", QuantizedWeights)])
    );
}

#[test]
fn unknown_or_absent_model_types_are_refused() {
    let err = small("phimoe", "").unwrap_err();
    assert!(matches!(&err, ConfigError::HfField { field, .. } if field == "model_type"));
    assert!(err.to_string().contains("\"phimoe\" is not a model family flashdmoe knows"));
    let none = r#"{"hidden_size": 2048, "intermediate_size": 1024, "num_experts": 8,
                   "num_experts_per_tok": 2}"#;
    assert_eq!(field(MoeConfig::from_hf_config_str(none)), "model_type");
}

#[test]
fn nested_configs_are_read_by_their_family() {
    let dbrx = |ffn: &str| {
        MoeConfig::from_hf_config_str(&format!(
            r#"{{"model_type": "dbrx", "d_model": 512, "attn_config": {{"clip_qkv": 8}},
                "ffn_config": {{"ffn_hidden_size": 256, "moe_num_experts": 4,
                                "moe_top_k": 2 {ffn}}}}}"#
        ))
    };
    let c = dbrx("").unwrap();
    assert_eq!((c.hidden, c.inter, c.experts, c.top_k, c.renormalize), (512, 256, 4, 2, true));
    assert!(!dbrx(r#", "moe_normalize_expert_weights": null"#).unwrap().renormalize);
    assert!(dbrx(r#", "moe_normalize_expert_weights": 1"#).unwrap().renormalize);
    assert_eq!(
        refused(dbrx(r#", "moe_normalize_expert_weights": 2"#)),
        pairs(&[("ffn_config.moe_normalize_expert_weights", Feature::TopKNorm)])
    );
    assert_eq!(
        refused(dbrx(r#", "ffn_act_fn": {"name": "gelu"}"#)),
        pairs(&[("ffn_config.ffn_act_fn.name", Feature::GatedActivation)])
    );
    assert_eq!(
        field(dbrx(r#", "uniform_expert_assignment": true"#)),
        "ffn_config.uniform_expert_assignment"
    );
    assert_eq!(field(dbrx(r#", "moe_top_k": 5"#)), "ffn_config.moe_top_k");
    // A multimodal wrapper: the language model's text_config is read, errors say so.
    let wrapped = |text: &str| {
        MoeConfig::from_hf_config_str(&format!(
            r#"{{"model_type": "some_vlm", "architectures": ["X"], "vision_config": {{}},
                "text_config": {{"model_type": "mixtral", "num_local_experts": 8,
                                 "num_experts_per_tok": 2 {text}}}}}"#
        ))
    };
    let c = wrapped(r#", "hidden_size": 1024, "intermediate_size": 2048"#).unwrap();
    assert_eq!((c.hidden, c.inter, c.experts), (1024, 2048, 8));
    assert_eq!(field(wrapped(r#", "intermediate_size": 2048"#)), "text_config.hidden_size");
    // Our schema's message never appears for theirs.
    let err = sample("dbrx-instruct").map(|_| ()).and_then(|()| wrapped("")).unwrap_err();
    assert!(!err.to_string().contains("unknown field"), "{err}");
}

#[test]
fn a_model_whose_layers_are_all_dense_has_no_moe_layer() {
    let dense = r#""num_hidden_layers": 4, "first_k_dense_replace": 4"#;
    assert_eq!(field(small("deepseek_v2", dense)), "first_k_dense_replace");
    assert!(small("deepseek_v2", r#""num_hidden_layers": 4, "first_k_dense_replace": 3"#).is_ok());
    let only = r#""num_hidden_layers": 2, "mlp_only_layers": [0, 1]"#;
    assert_eq!(field(small("qwen3_moe", only)), "decoder_sparse_step");
    assert_eq!(field(small("qwen3_moe", r#""decoder_sparse_step": 0"#)), "decoder_sparse_step");
    let jamba = r#""num_hidden_layers": 2, "expert_layer_period": 2, "expert_layer_offset": 5"#;
    assert_eq!(field(small("jamba", jamba)), "expert_layer_offset");
    assert!(small("jamba", r#""num_hidden_layers": 2"#).is_ok());
    let qwen = |extra: &str| small("qwen3_moe", &format!(r#""num_hidden_layers": 6, {extra}"#));
    assert!(qwen(r#""decoder_sparse_step": 3, "mlp_only_layers": [2]"#).is_ok()); // layer 5
    let none = r#""decoder_sparse_step": 3, "mlp_only_layers": [2, 5]"#;
    assert_eq!(field(qwen(none)), "decoder_sparse_step");
    assert_eq!(field(qwen(r#""decoder_sparse_step": 7"#)), "decoder_sparse_step");
    let ds = |extra: &str| small("deepseek_v2", &format!(r#""num_hidden_layers": 6, {extra}"#));
    assert!(ds(r#""first_k_dense_replace": 1, "moe_layer_freq": 5"#).is_ok()); // layer 5
    assert_eq!(
        field(ds(r#""first_k_dense_replace": 1, "moe_layer_freq": 6"#)),
        "first_k_dense_replace"
    );
    // Any number of layers is answered at once.
    let many = r#""num_hidden_layers": 4294967295, "first_k_dense_replace": 4294967295"#;
    assert_eq!(field(small("deepseek_v2", many)), "first_k_dense_replace");
}

#[test]
fn malformed_fields_are_named() {
    assert_eq!(field(MoeConfig::from_hf_config_str(r#"{"model_type": "olmoe"}"#)), "hidden_size");
    let no_inter = r#"{"model_type": "qwen3_moe", "hidden_size": 2048, "num_experts": 8,
                       "num_experts_per_tok": 2, "intermediate_size": 64}"#;
    assert_eq!(field(MoeConfig::from_hf_config_str(no_inter)), "moe_intermediate_size");
    assert_eq!(field(small("qwen3_moe", r#""norm_topk_prob": "yes""#)), "norm_topk_prob");
    assert_eq!(field(small("qwen3_moe", r#""torch_dtype": "int8""#)), "torch_dtype");
    assert_eq!(field(small("qwen3_moe", r#""hidden_size": -1"#)), "hidden_size");
    // Semantic validation names the config.json field: k > E, H not a multiple of 64.
    assert_eq!(field(small("qwen3_moe", r#""num_experts_per_tok": 9"#)), "num_experts_per_tok");
    assert_eq!(field(small("mixtral", r#""hidden_size": 100"#)), "hidden_size");
    assert_eq!(small("qwen3_moe", r#""torch_dtype": "float16""#).unwrap().dtype, DType::F16);
    assert!(matches!(
        MoeConfig::from_hf_config_str("{"),
        Err(ConfigError::Parse { format: "Hugging Face config.json", .. })
    ));
    assert_eq!(field(MoeConfig::from_hf_config_str("[1]")), "config.json");
}
