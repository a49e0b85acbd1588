use safetensors::Dtype;

use super::read::READ_CHUNK;
use super::tests_support::*;
use super::*;
use crate::dtype::DType;

#[test]
fn stacked_round_trip_in_every_dtype() {
    for dtype in DType::ALL {
        for (activation, bias) in [(Activation::SiluGated, true), (Activation::Relu, false)] {
            let c = cfg(dtype, activation, bias);
            let w = LayerWeights::generate(&c, 4).unwrap();
            let bytes = w.to_safetensors(&c).unwrap();
            assert_eq!(LayerWeights::from_safetensors(&c, &bytes, None).unwrap(), w);
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let up = st.tensor("experts.up.weight").unwrap();
            assert_eq!(up.shape(), &[3, 128, 64]);
            assert_eq!(up.dtype().bitsize(), 8 * dtype.elem_bytes() as usize);
        }
    }
}

#[test]
fn tensors_larger_than_a_read_and_a_one_expert_layer_load() {
    // The router and biases of 64 experts span several reads (READ_CHUNK is 4 KiB in tests).
    let c = MoeConfig {
        hidden: 64,
        inter: 64,
        experts: 64,
        bias: true,
        ..cfg(DType::F32, Activation::SiluGated, true)
    };
    let w = LayerWeights::generate(&c, 2).unwrap();
    assert!(w.router.len() * 4 > 2 * READ_CHUNK as usize);
    assert_eq!(LayerWeights::from_safetensors(&c, &w.to_safetensors(&c).unwrap(), None), Ok(w));
    // One expert in per-expert names: one tensor per expert is still one per expert.
    let one = MoeConfig { experts: 1, top_k: 1, ..cfg(DType::F32, Activation::SiluGated, false) };
    let w = LayerWeights::generate(&one, 2).unwrap();
    let bytes = serialize(per_expert(&one, &w, &MIXTRAL, ""));
    assert_eq!(LayerWeights::from_safetensors(&one, &bytes, None), Ok(w));
}

#[test]
fn file_round_trip() {
    let c = cfg(DType::Bf16, Activation::Gelu, true);
    let w = LayerWeights::generate(&c, 8).unwrap();
    let path = std::env::temp_dir().join(format!("fdm-weights-{}.safetensors", std::process::id()));
    w.save_safetensors(&c, &path).unwrap();
    let loaded = LayerWeights::load_safetensors(&c, &[&path], None);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(loaded.unwrap(), w);
    let missing = LayerWeights::load_safetensors(&c, &[&path], None);
    assert!(matches!(missing, Err(WeightsError::Io { .. })));
}

#[test]
fn mixtral_naming_with_prefix_detection_and_rounding() {
    // Written in F32 from f32 weights; loading into a bf16 config rounds them, which gives
    // exactly the bf16 generator's values.
    let c32 = cfg(DType::F32, Activation::SiluGated, false);
    let w32 = LayerWeights::generate(&c32, 6).unwrap();
    let c16 = MoeConfig { dtype: DType::Bf16, ..c32.clone() };
    let bytes = serialize(per_expert(&c32, &w32, &MIXTRAL, "model.layers.5."));
    let loaded = LayerWeights::from_safetensors(&c16, &bytes, None).unwrap();
    assert_eq!(loaded, LayerWeights::generate(&c16, 6).unwrap());
    let explicit = LayerWeights::from_safetensors(&c32, &bytes, Some("model.layers.5.")).unwrap();
    assert_eq!(explicit, w32);
    assert!(matches!(
        LayerWeights::from_safetensors(&c32, &bytes, Some("model.layers.4.")),
        Err(WeightsError::Missing { .. })
    ));
}

#[test]
fn two_layers_need_a_prefix_and_shards_combine() {
    let c = cfg(DType::F32, Activation::SiluGated, true);
    let w = LayerWeights::generate(&c, 1).unwrap();
    let mut layer0 = per_expert(&c, &w, &HF_MLP, "model.layers.0.");
    let layer1 =
        per_expert(&c, &LayerWeights::generate(&c, 2).unwrap(), &HF_MLP, "model.layers.1.");
    let both = serialize(layer0.drain(..).chain(layer1).collect());
    match LayerWeights::from_safetensors(&c, &both, None) {
        Err(WeightsError::Ambiguous { candidates }) => {
            assert_eq!(candidates, vec!["model.layers.0.", "model.layers.1."]);
        }
        other => panic!("{other:?}"),
    }
    let one = LayerWeights::from_safetensors(&c, &both, Some("model.layers.0.")).unwrap();
    assert_eq!(one, w);

    // The same layer split over two shard files.
    let mut tensors = per_expert(&c, &w, &HF_MLP, "");
    let second = tensors.split_off(tensors.len() / 2);
    let dir = std::env::temp_dir();
    let paths: Vec<_> = (0..2)
        .map(|i| dir.join(format!("fdm-shard-{}-{i}.safetensors", std::process::id())))
        .collect();
    std::fs::write(&paths[0], serialize(tensors)).unwrap();
    std::fs::write(&paths[1], serialize(second)).unwrap();
    let loaded = LayerWeights::load_safetensors(&c, &paths, None);
    let only_first = LayerWeights::load_safetensors(&c, &paths[..1], None);
    paths.iter().for_each(|p| std::fs::remove_file(p).unwrap());
    assert_eq!(loaded.unwrap(), w);
    assert!(matches!(only_first, Err(WeightsError::Missing { .. })));
}

#[test]
fn bad_checkpoints_are_typed_errors() {
    let c = cfg(DType::F32, Activation::SiluGated, false);
    let w = LayerWeights::generate(&c, 3).unwrap();
    let load = |tensors: Vec<(String, Bytes)>| {
        LayerWeights::from_safetensors(&c, &serialize(tensors), None)
    };

    let mut t = per_expert(&c, &w, &MIXTRAL, "");
    t.retain(|(n, _)| n != "block_sparse_moe.experts.2.w2.weight");
    assert_eq!(
        load(t),
        Err(WeightsError::Missing { tensor: "block_sparse_moe.experts.2.w2.weight".into() })
    );

    let mut t = per_expert(&c, &w, &MIXTRAL, "");
    let (_, b) = t.iter_mut().find(|(n, _)| n == "block_sparse_moe.experts.1.w1.weight").unwrap();
    b.shape = vec![64, 128]; // transposed
    assert!(matches!(load(t), Err(WeightsError::Shape { tensor, found, .. })
        if tensor == "block_sparse_moe.experts.1.w1.weight" && found == vec![64, 128]));

    let mut t = per_expert(&c, &w, &MIXTRAL, "");
    let (_, b) = t.iter_mut().find(|(n, _)| n == "block_sparse_moe.gate.weight").unwrap();
    b.dtype = Dtype::I32;
    assert!(matches!(load(t), Err(WeightsError::DType { dtype, .. }) if dtype == "I32"));

    let mut t = per_expert(&c, &w, &MIXTRAL, "");
    t[0].1.data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(matches!(load(t), Err(WeightsError::Value { index: 0, .. })));

    // A stacked file for another activation lacks the gate.
    let relu = cfg(DType::F32, Activation::Relu, false);
    let bytes = LayerWeights::generate(&relu, 3).unwrap().to_safetensors(&relu).unwrap();
    assert_eq!(
        LayerWeights::from_safetensors(&c, &bytes, None),
        Err(WeightsError::Missing { tensor: "experts.gate.weight".into() })
    );

    // Not safetensors at all, truncated, or empty: Format errors, never panics.
    let good = w.to_safetensors(&c).unwrap();
    for bad in [&b"hello world, not a file"[..], &good[..good.len() - 1], &[], &good[..8]] {
        assert!(matches!(
            LayerWeights::from_safetensors(&c, bad, None),
            Err(WeightsError::Format { .. })
        ));
    }
    // A weights/config mismatch on save is a typed error too.
    assert!(matches!(w.to_safetensors(&relu), Err(WeightsError::Unexpected { .. })));
}
