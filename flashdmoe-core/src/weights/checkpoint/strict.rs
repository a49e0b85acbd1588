//! The strict rules: unexpected, duplicate and refused tensors are typed errors.

use safetensors::Dtype;

use super::names::JAMBA;
use super::tests_support::*;
use super::*;
use crate::config::SharedGate;
use crate::dtype::DType;

fn unexpected(r: Result<LayerWeights, WeightsError>) -> (String, String) {
    match r {
        Err(WeightsError::Unexpected { tensor, reason }) => (tensor, reason),
        other => panic!("expected Unexpected, got {other:?}"),
    }
}

#[test]
fn a_gate_in_a_relu_layer_and_biases_in_a_bias_free_one_are_unexpected() {
    let gated = cfg(DType::F32, Activation::SiluGated, true);
    let bytes = LayerWeights::generate(&gated, 1).unwrap().to_safetensors(&gated).unwrap();
    let relu = MoeConfig { activation: Activation::Relu, ..gated.clone() };
    let (tensor, reason) = unexpected(LayerWeights::from_safetensors(&relu, &bytes, None));
    assert_eq!(tensor, "experts.gate.bias");
    assert!(reason.contains("relu layer has no gate projection"), "{reason}");
    let no_bias = MoeConfig { bias: false, ..gated.clone() };
    let (tensor, reason) = unexpected(LayerWeights::from_safetensors(&no_bias, &bytes, None));
    assert_eq!(tensor, "experts.down.bias");
    assert!(reason.contains("no biases"), "{reason}");
    // Per-expert names too.
    let w = LayerWeights::generate(&gated, 1).unwrap();
    let t = per_expert(&gated, &w, &HF_MLP, "model.layers.2.");
    let (tensor, _) = unexpected(LayerWeights::from_safetensors(&no_bias, &serialize(t), None));
    assert_eq!(tensor, "model.layers.2.mlp.experts.0.down_proj.bias");
    // And a tensor nothing names.
    let mut t = per_expert(&gated, &w, &HF_MLP, "");
    t.push(("mlp.experts.0.extra.weight".into(), f32_tensor(vec![2], &[1.0, 2.0])));
    let (tensor, reason) = unexpected(LayerWeights::from_safetensors(&gated, &serialize(t), None));
    assert_eq!(tensor, "mlp.experts.0.extra.weight");
    assert!(reason.starts_with("no tensor of this layer (3 experts, swiglu, bias = true)"));
}

#[test]
fn shared_experts_selection_and_router_biases_of_a_layer_without_them_are_unexpected() {
    let c = cfg(DType::F32, Activation::SiluGated, false);
    let w = LayerWeights::generate(&c, 2).unwrap();
    let (h, e) = (c.hidden as usize, c.experts as usize);
    let cases = [
        ("model.layers.1.mlp.shared_expert.up_proj.weight", vec![128, h], "no shared experts"),
        ("model.layers.1.mlp.shared_expert_gate.weight", vec![1, h], "no shared experts"),
        ("model.layers.1.mlp.shared_experts.down_proj.weight", vec![h, 128], "no shared"),
        ("model.layers.1.mlp.gate.e_score_correction_bias", vec![e], "selection bias"),
        ("model.layers.1.mlp.gate.bias", vec![e], "a router bias"),
    ];
    for (name, shape, needle) in cases {
        let mut t = per_expert(&c, &w, &HF_MLP, "model.layers.1.");
        let len = shape.iter().product::<usize>();
        t.push((name.into(), f32_tensor(shape, &vec![0.5; len])));
        // A tensor outside the MoE block is none of the loader's business.
        t.push(("model.layers.1.self_attn.q_proj.weight".into(), f32_tensor(vec![1], &[1.0])));
        let (tensor, reason) = unexpected(LayerWeights::from_safetensors(&c, &serialize(t), None));
        assert_eq!(tensor, name);
        assert!(reason.contains(needle), "{reason}");
    }
}

/// A small layer with shared experts (`gate`) and DeepSeek-V3's routing.
fn with_shared(gate: SharedGate) -> MoeConfig {
    MoeConfig {
        experts: 4,
        top_k: 2,
        shared: Some(crate::config::SharedExperts { count: 2, inter: 64, gate }),
        routing: Routing::deepseek_v3(Some((2, 1)), 2.5),
        ..cfg(DType::F32, Activation::SiluGated, false)
    }
}

#[test]
fn deepseek_and_qwen_shared_expert_names_load_and_round_trip() {
    for gate in [SharedGate::None, SharedGate::Sigmoid] {
        let c = with_shared(gate);
        let w = LayerWeights::generate(&c, 8).unwrap();
        assert!(w.shared_up.is_some() && w.selection_bias.is_some());
        assert_eq!(w.shared_gate_row.is_some(), gate == SharedGate::Sigmoid);
        // Our stacked names.
        let bytes = w.to_safetensors(&c).unwrap();
        assert_eq!(LayerWeights::from_safetensors(&c, &bytes, None).unwrap(), w);
        // Hugging Face's: DeepSeek's shared_experts, or Qwen's shared_expert with its gate.
        let t = per_expert(&c, &w, &HF_MLP, "model.layers.4.");
        let names: Vec<&str> = t.iter().map(|(n, _)| n.as_str()).collect();
        let (shared, other) = match gate {
            SharedGate::None => ("mlp.shared_experts.", "mlp.shared_expert."),
            SharedGate::Sigmoid => ("mlp.shared_expert.", "mlp.shared_experts."),
        };
        assert!(names.contains(&&*format!("model.layers.4.{shared}down_proj.weight")));
        assert!(names.contains(&"model.layers.4.mlp.gate.e_score_correction_bias"));
        let bytes = serialize(t);
        assert_eq!(LayerWeights::from_safetensors(&c, &bytes, None).unwrap(), w);
        // The other family's naming is not read as this one's.
        let renamed: Vec<(String, Bytes)> = per_expert(&c, &w, &HF_MLP, "")
            .into_iter()
            .map(|(n, b)| (n.replace(shared, other), b))
            .collect();
        let (tensor, reason) =
            unexpected(LayerWeights::from_safetensors(&c, &serialize(renamed), None));
        assert!(tensor.starts_with(other), "{tensor}");
        assert!(reason.contains("other naming"), "{reason}");
    }
    // A Qwen gate in a layer whose shared experts have none.
    let c = with_shared(SharedGate::None);
    let w = LayerWeights::generate(&c, 8).unwrap();
    let mut t = per_expert(&c, &w, &HF_MLP, "");
    let h = c.hidden as usize;
    t.push(("mlp.shared_expert_gate.weight".into(), f32_tensor(vec![1, h], &vec![0.0; h])));
    let (tensor, reason) = unexpected(LayerWeights::from_safetensors(&c, &serialize(t), None));
    assert_eq!(tensor, "mlp.shared_expert_gate.weight");
    assert!(reason.contains("no sigmoid gate"), "{reason}");
    // A layer that needs its selection bias and lacks it.
    let mut t = per_expert(&c, &w, &HF_MLP, "");
    t.retain(|(n, _)| !n.ends_with("e_score_correction_bias"));
    assert_eq!(
        LayerWeights::from_safetensors(&c, &serialize(t), None),
        Err(WeightsError::Missing { tensor: "mlp.gate.e_score_correction_bias".into() })
    );
}

/// A header with tensor `a` listed twice, and its 4 data bytes.
fn repeated_header() -> Vec<u8> {
    let entry = r#"{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#;
    let header = format!(r#"{{"router.weight":{entry},"router.weight":{entry}}}"#);
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&1.0f32.to_le_bytes());
    bytes
}

#[test]
fn a_tensor_listed_twice_is_an_error_in_a_file_and_across_shards() {
    let c = cfg(DType::F32, Activation::Relu, false);
    assert_eq!(
        LayerWeights::from_safetensors(&c, &repeated_header(), None),
        Err(WeightsError::Duplicate { tensor: "router.weight".into(), file: "<memory>".into() })
    );
    let w = LayerWeights::generate(&c, 3).unwrap();
    let t = per_expert(&c, &w, &MIXTRAL, "");
    let dir = std::env::temp_dir();
    let paths: Vec<_> = (0..2)
        .map(|i| dir.join(format!("fdm-dup-{}-{i}.safetensors", std::process::id())))
        .collect();
    std::fs::write(&paths[0], serialize(per_expert(&c, &w, &MIXTRAL, ""))).unwrap();
    std::fs::write(
        &paths[1],
        serialize(t[..1].iter().map(|(n, b)| (n.clone(), b.copy())).collect()),
    )
    .unwrap();
    let loaded = LayerWeights::load_safetensors(&c, &paths, None);
    paths.iter().for_each(|p| std::fs::remove_file(p).unwrap());
    assert!(
        matches!(&loaded, Err(WeightsError::Duplicate { tensor, file })
            if tensor == "block_sparse_moe.gate.weight" && file.contains(" and ")),
        "{loaded:?}"
    );
}

#[test]
fn gpt_oss_hub_names_are_refused_as_its_layout_not_as_missing_tensors() {
    let c = cfg(DType::Bf16, Activation::SiluGated, true);
    let u8t = |shape: Vec<usize>| {
        let len = shape.iter().product();
        Bytes { dtype: Dtype::U8, shape, data: vec![0; len] }
    };
    let p = "model.layers.0.";
    let mxfp4 = vec![
        (format!("{p}mlp.router.weight"), f32_tensor(vec![3, 64], &[0.0; 192])),
        (format!("{p}mlp.router.bias"), f32_tensor(vec![3], &[0.0; 3])),
        (format!("{p}mlp.experts.gate_up_proj_blocks"), u8t(vec![3, 256, 2, 16])),
        (format!("{p}mlp.experts.gate_up_proj_scales"), u8t(vec![3, 256, 2])),
        (format!("{p}mlp.experts.down_proj_blocks"), u8t(vec![3, 64, 4, 16])),
        (format!("{p}mlp.experts.down_proj_scales"), u8t(vec![3, 64, 4])),
    ];
    let bytes = serialize(mxfp4);
    for prefix in [None, Some(p)] {
        match LayerWeights::from_safetensors(&c, &bytes, prefix) {
            Err(e @ WeightsError::Layout { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.starts_with(
                        "tensor model.layers.0.mlp.experts.gate_up_proj_blocks: the gpt-oss"
                    ),
                    "{msg}"
                );
                assert!(msg.ends_with("not supported yet (issue 16)"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn gpt_oss_bf16_layout_loads_deinterleaved_and_transposed() {
    let c = MoeConfig {
        activation: Activation::SwigluOss(crate::config::SwigluOss::GPT_OSS),
        routing: Routing::GPT_OSS,
        ..cfg(DType::F32, Activation::SiluGated, true)
    };
    let w = LayerWeights::generate(&c, 6).unwrap();
    let mut t = gpt_oss_layout(&c, &w, "model.layers.7.");
    t.push(("model.layers.7.self_attn.sinks".into(), f32_tensor(vec![1], &[1.0])));
    let bytes = serialize(t);
    assert_eq!(LayerWeights::from_safetensors(&c, &bytes, None).unwrap(), w);
    assert_eq!(LayerWeights::from_safetensors(&c, &bytes, Some("model.layers.7.")).unwrap(), w);
    // The standard SwiGLU shape preset's config has no router bias: refused, not misread.
    let shape =
        MoeConfig { routing: Routing::SOFTMAX, activation: Activation::SiluGated, ..c.clone() };
    let (tensor, reason) = unexpected(LayerWeights::from_safetensors(&shape, &bytes, None));
    assert_eq!(tensor, "model.layers.7.mlp.router.bias");
    assert!(reason.contains("router has none"), "{reason}");
    // A transposed tensor is a shape error naming it.
    let mut t = gpt_oss_layout(&c, &w, "");
    t[4].1.shape = vec![3, 64, 128];
    assert!(matches!(LayerWeights::from_safetensors(&c, &serialize(t), None),
        Err(WeightsError::Shape { tensor, .. }) if tensor == "mlp.experts.down_proj"));
}

#[test]
fn a_dense_layer_is_not_an_moe_layer() {
    let c = cfg(DType::F32, Activation::SiluGated, false);
    let w = LayerWeights::generate(&c, 4).unwrap();
    let mut t = per_expert(&c, &w, &HF_MLP, "model.layers.1.");
    for proj in ["gate_proj", "up_proj", "down_proj"] {
        t.push((format!("model.layers.0.mlp.{proj}.weight"), f32_tensor(vec![1], &[1.0])));
    }
    let bytes = serialize(t);
    assert_eq!(LayerWeights::from_safetensors(&c, &bytes, None).unwrap(), w);
    let dense = LayerWeights::from_safetensors(&c, &bytes, Some("model.layers.0."));
    assert_eq!(
        dense,
        Err(WeightsError::DenseLayer {
            prefix: "model.layers.0.".into(),
            tensor: "model.layers.0.mlp.up_proj.weight".into()
        })
    );
    assert!(dense.unwrap_err().to_string().contains("not an MoE layer"));
}

#[test]
fn jamba_names_load() {
    let c = cfg(DType::F32, Activation::SiluGated, false);
    let w = LayerWeights::generate(&c, 5).unwrap();
    let bytes = serialize(per_expert(&c, &w, &JAMBA, "model.layers.3."));
    assert_eq!(LayerWeights::from_safetensors(&c, &bytes, None).unwrap(), w);
}
