//! Shards: sliced, generated and loaded alike, and loaded reading only their experts' bytes.

use std::io::{Cursor, Read, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use safetensors::Dtype;

use super::super::checkpoint::tests_support::{
    cfg, f32_tensor, gpt_oss_layout, per_expert, serialize,
};
use super::super::checkpoint::{Bytes, Checkpoint, HF_MLP, MIXTRAL, Shard};
use super::*;
use crate::config::{Activation, Placement, Routing, SharedExperts, SharedGate, SwigluOss};
use crate::dtype::DType;

/// A 6-expert SwiGLU layer with biases, DeepSeek-V3 routing and Qwen's gated shared expert:
/// every kind of tensor a shard holds, whole or sliced.
fn full() -> MoeConfig {
    MoeConfig {
        world: 3,
        experts: 6,
        top_k: 2,
        shared: Some(SharedExperts { count: 1, inter: 64, gate: SharedGate::Sigmoid }),
        routing: Routing::deepseek_v3(Some((2, 1)), 2.5),
        ..cfg(DType::Bf16, Activation::SiluGated, true)
    }
}

/// Every tensor of a shard as bits, by name (bitwise comparison: `-0.0 != 0.0` here).
fn bits(s: &ShardWeights) -> Vec<(&'static str, Vec<u32>)> {
    ["router", "up", "down"]
        .into_iter()
        .chain(OPTIONAL)
        .filter_map(|n| Some((n, s.tensor(n)?.iter().map(|v| v.to_bits()).collect())))
        .collect()
}

const LISTS: [&[u32]; 5] = [&[], &[0], &[1, 4, 5], &[2, 3], &[0, 1, 2, 3, 4, 5]];

#[test]
fn the_shard_of_the_generated_layer_is_the_generated_shard_bitwise() {
    let relu = MoeConfig { bias: false, ..cfg(DType::F32, Activation::Relu, false) };
    let relu = MoeConfig { experts: 6, world: 2, ..relu };
    for c in [full(), relu] {
        let w = LayerWeights::generate(&c, 11).unwrap();
        for experts in LISTS {
            let sliced = w.shard(&c, experts).unwrap();
            let generated = ShardWeights::generate(&c, 11, experts).unwrap();
            assert_eq!(bits(&sliced), bits(&generated), "{experts:?}");
            assert_eq!(generated.experts(), experts);
            assert_eq!(generated.check(&c), Ok(()));
            let per = (c.inter * c.hidden) as usize;
            assert_eq!(generated.up().len(), experts.len() * per);
            // The router and the shared experts are whole in every shard.
            assert_eq!(generated.router(), &w.router[..]);
            assert_eq!(generated.shared_gate_row(), w.shared_gate_row.as_deref());
        }
        // All experts: the whole layer.
        let all: Vec<u32> = (0..c.experts).collect();
        let s = ShardWeights::generate(&c, 11, &all).unwrap();
        assert_eq!(s.down(), &w.down[..]);
        assert_eq!(s.gate(), w.gate.as_deref());
    }
}

#[test]
fn rank_shards_split_the_experts_and_the_memory() {
    let c = MoeConfig { placement: Placement::Table(vec![2, 0, 2, 1, 0, 2]), ..full() };
    let w = LayerWeights::generate(&c, 3).unwrap();
    let whole = w.shard(&c, &(0..6).collect::<Vec<_>>()).unwrap().host_bytes();
    let (mut experts, mut routed) = (Vec::new(), 0);
    for rank in 0..3 {
        let s = w.rank_shard(&c, rank).unwrap();
        assert_eq!(s.experts(), c.expert_map().unwrap().experts_of(rank));
        assert_eq!(ShardWeights::rank_experts(&c, rank).unwrap(), s.experts());
        for (j, &e) in s.experts().iter().enumerate() {
            assert_eq!(s.local(e), Some(j));
            let b = s.down_bias().unwrap();
            assert_eq!(b[j * 64..][..64], w.down_bias.as_ref().unwrap()[e as usize * 64..][..64]);
        }
        experts.extend_from_slice(s.experts());
        let empty = w.shard(&c, &[]).unwrap().host_bytes();
        routed += s.host_bytes() - empty;
    }
    experts.sort_unstable();
    assert_eq!(experts, [0, 1, 2, 3, 4, 5]);
    assert_eq!(routed, whole - w.shard(&c, &[]).unwrap().host_bytes());
    assert_eq!(w.rank_shard(&c, 0).unwrap().local(0), None);
    let err = ShardWeights::rank_experts(&c, 3).unwrap_err();
    assert!(matches!(err, WeightsError::Config(ConfigError::Invalid { field: "world", .. })));
}

#[test]
fn bad_expert_lists_are_typed_errors_naming_the_entry() {
    let c = full();
    let w = LayerWeights::generate(&c, 1).unwrap();
    let bytes = w.to_safetensors(&c).unwrap();
    let cases: [(&[u32], usize, u32, &str); 3] = [
        (&[0, 6], 1, 6, "out of range: the layer has 6 experts"),
        (&[1, 1], 1, 1, "repeats experts[0]"),
        (&[0, 4, 2], 2, 2, "follows experts[1] = 4: the list must be ascending"),
    ];
    for (list, at, id, reason) in cases {
        let expect = WeightsError::Experts { index: at, expert: id, reason: reason.into() };
        assert_eq!(w.shard(&c, list), Err(expect.clone()));
        assert_eq!(ShardWeights::generate(&c, 1, list), Err(expect.clone()));
        assert_eq!(ShardWeights::from_safetensors(&c, &bytes, None, list), Err(expect.clone()));
        assert_eq!(ShardWeights::from_tensors(&c, &[], None, list), Err(expect.clone()));
        let none: [&str; 0] = [];
        assert_eq!(ShardWeights::load_safetensors(&c, &none, None, list), Err(expect.clone()));
        assert!(expect.to_string().starts_with(&format!("shard experts[{at}] = {id}: ")));
    }
    // Weights that do not fit the config, and a shard checked against another config.
    let relu = MoeConfig { activation: Activation::Relu, ..c.clone() };
    assert!(matches!(w.shard(&relu, &[0]), Err(WeightsError::Unexpected { tensor, .. })
        if tensor == "gate"));
    let s = w.shard(&c, &[0, 5]).unwrap();
    let wider = MoeConfig { hidden: 128, ..c.clone() };
    assert!(matches!(s.check(&wider), Err(WeightsError::Shape { tensor, .. })
        if tensor == "router"));
    let mut bad = s.clone();
    bad.w.up[3] = f32::NAN;
    assert!(matches!(bad.check(&c), Err(WeightsError::Value { index: 3, .. })));
    bad.w.up.pop();
    assert!(matches!(bad.check(&c), Err(WeightsError::Shape { tensor, expected, .. })
        if tensor == "up" && expected == vec![2, 128, 64]));
}

/// `c`'s layer under seed `seed` in stacked names, written to a temporary file.
fn stacked_file(c: &MoeConfig, w: &LayerWeights, tag: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("fdm-shard-{tag}-{}.st", std::process::id()));
    w.save_safetensors(c, &path).unwrap();
    path
}

#[test]
fn a_shard_loaded_from_stacked_names_is_the_slice_of_the_whole_load() {
    let c = full();
    let w = LayerWeights::generate(&c, 5).unwrap();
    let path = stacked_file(&c, &w, "stacked");
    let whole = LayerWeights::load_safetensors(&c, &[&path], None).unwrap();
    let loaded: Vec<_> = LISTS
        .iter()
        .map(|&list| (list, ShardWeights::load_safetensors(&c, &[&path], None, list)))
        .collect();
    std::fs::remove_file(&path).unwrap();
    for (list, shard) in loaded {
        assert_eq!(bits(&shard.unwrap()), bits(&whole.shard(&c, list).unwrap()), "{list:?}");
    }
    // In memory, as a file and as borrowed tensors.
    let bytes = w.to_safetensors(&c).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names = st.names();
    let views: Vec<_> = names.iter().map(|n| (*n, st.tensor(n).unwrap())).collect();
    let tensors: Vec<TensorBytes<'_>> = views
        .iter()
        .map(|(n, v)| TensorBytes {
            name: n,
            dtype: "BF16",
            shape: v.shape().to_vec(),
            data: v.data(),
        })
        .collect();
    for list in LISTS {
        let slice = w.shard(&c, list).unwrap();
        assert_eq!(ShardWeights::from_safetensors(&c, &bytes, None, list).unwrap(), slice);
        assert_eq!(ShardWeights::from_tensors(&c, &tensors, None, list).unwrap(), slice);
    }
}

#[test]
fn a_shard_loaded_from_per_expert_and_gpt_oss_names_is_the_slice() {
    let c = MoeConfig { dtype: DType::F32, ..full() };
    let w = LayerWeights::generate(&c, 7).unwrap();
    let mixtral = MoeConfig { shared: None, routing: Routing::SOFTMAX, ..c.clone() };
    let wm = LayerWeights::generate(&mixtral, 7).unwrap();
    let files = [
        (&mixtral, &wm, serialize(per_expert(&mixtral, &wm, &MIXTRAL, "model.layers.1."))),
        (&c, &w, serialize(per_expert(&c, &w, &HF_MLP, "model.layers.2."))),
    ];
    for (c, w, bytes) in &files {
        for list in LISTS {
            let shard = ShardWeights::from_safetensors(c, bytes, None, list).unwrap();
            assert_eq!(bits(&shard), bits(&w.shard(c, list).unwrap()), "{list:?}");
        }
    }
    let oss = MoeConfig {
        activation: Activation::SwigluOss(SwigluOss::GPT_OSS),
        routing: Routing::GPT_OSS,
        shared: None,
        ..c.clone()
    };
    let w = LayerWeights::generate(&oss, 2).unwrap();
    let bytes = serialize(gpt_oss_layout(&oss, &w, "model.layers.0."));
    for list in LISTS {
        let shard = ShardWeights::from_safetensors(&oss, &bytes, None, list).unwrap();
        assert_eq!(bits(&shard), bits(&w.shard(&oss, list).unwrap()), "{list:?}");
    }
}

/// A reader that counts the bytes read through it.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl<R: Seek> Seek for Counting<R> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(to)
    }
}

/// Bytes read to load the shard of `experts` from `bytes`, and the shard.
fn count_reads(c: &MoeConfig, bytes: &[u8], experts: &[u32]) -> (u64, ShardWeights) {
    let read = Arc::new(AtomicU64::new(0));
    let reader = Counting { inner: Cursor::new(bytes), read: read.clone() };
    let mut ck = Checkpoint::new(vec![Shard::open("<counted>".into(), reader).unwrap()]).unwrap();
    let w = ck.load_experts(c, None, Some(experts)).unwrap();
    let shard = ShardWeights::checked(c, experts, w).unwrap();
    (read.load(Ordering::Relaxed), shard)
}

#[test]
fn loading_a_shard_reads_the_header_the_router_and_its_experts_bytes_only() {
    let c = full();
    let w = LayerWeights::generate(&c, 9).unwrap();
    let header = |b: &[u8]| 8 + u64::from_le_bytes(b[..8].try_into().unwrap());
    // Stacked names (bf16): the header, then whole tensors of the layer, and the routed
    // tensors' rows of the listed experts.
    let bytes = w.to_safetensors(&c).unwrap();
    for list in LISTS {
        let (read, shard) = count_reads(&c, &bytes, list);
        // bf16 in the file, f32 on the host.
        assert_eq!(read, header(&bytes) + shard.host_bytes() / 2, "{list:?}");
        assert_eq!(shard, w.shard(&c, list).unwrap());
    }
    let (all, _) = count_reads(&c, &bytes, LISTS[4]);
    let (two, _) = count_reads(&c, &bytes, LISTS[3]);
    assert!(two < all / 2, "{two} of {all} bytes");
    // Per-expert names (F32): the same, other experts' tensors never read.
    let c32 = MoeConfig { dtype: DType::F32, ..c };
    let w = LayerWeights::generate(&c32, 9).unwrap();
    let bytes = serialize(per_expert(&c32, &w, &HF_MLP, ""));
    for list in LISTS {
        let (read, shard) = count_reads(&c32, &bytes, list);
        assert_eq!(read, header(&bytes) + shard.host_bytes(), "{list:?}");
        assert_eq!(shard, w.shard(&c32, list).unwrap());
    }
}

/// Named tensors to write.
type Tensors = Vec<(String, Bytes)>;

#[test]
fn other_experts_bytes_may_be_garbage_but_their_tensors_must_be_there() {
    let c = MoeConfig { dtype: DType::F32, ..full() };
    let w = LayerWeights::generate(&c, 4).unwrap();
    // Expert 3's up rows of the stacked tensor hold NaN: rank 0 (experts 0, 1) loads, the
    // whole layer and the rank holding expert 3 do not.
    let mut bytes = w.to_safetensors(&c).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let up = st.tensor("experts.up.weight").unwrap();
    let at = up.data().as_ptr() as usize - bytes.as_ptr() as usize + 3 * 128 * 64 * 4;
    for b in bytes[at..at + 128 * 64 * 4].chunks_exact_mut(4) {
        b.copy_from_slice(&f32::NAN.to_le_bytes());
    }
    let rank0 = ShardWeights::from_safetensors(&c, &bytes, None, &[0, 1]).unwrap();
    assert_eq!(rank0, w.rank_shard(&c, 0).unwrap());
    assert!(matches!(LayerWeights::from_safetensors(&c, &bytes, None),
        Err(WeightsError::Value { tensor, .. }) if tensor == "up"));
    assert!(matches!(ShardWeights::from_safetensors(&c, &bytes, None, &[2, 3]),
        Err(WeightsError::Value { tensor, .. }) if tensor == "up"));

    // Per-expert names: another expert's tensor with NaN data loads; missing, misshapen or
    // of an unloadable type it is an error, as for the whole layer; a tensor no expert of
    // the layer has is unexpected.
    let hf = |edit: &dyn Fn(&mut Tensors)| {
        let mut t = per_expert(&c, &w, &HF_MLP, "");
        edit(&mut t);
        ShardWeights::from_safetensors(&c, &serialize(t), None, &[0, 1])
    };
    let name = "mlp.experts.4.down_proj.weight";
    let find = |t: &mut Tensors| t.iter().position(|(n, _)| n == name).unwrap();
    let nan = hf(&|t| {
        let i = find(t);
        t[i].1.data.iter_mut().for_each(|b| *b = 0xff);
    });
    assert_eq!(nan.unwrap(), w.rank_shard(&c, 0).unwrap());
    let missing = hf(&|t| {
        let i = find(t);
        t.remove(i);
    });
    assert_eq!(missing, Err(WeightsError::Missing { tensor: name.into() }));
    let shape = hf(&|t| {
        let i = find(t);
        t[i].1.shape = vec![128, 64];
    });
    assert!(matches!(shape, Err(WeightsError::Shape { tensor, .. }) if tensor == name));
    let dtype = hf(&|t| {
        let i = find(t);
        t[i].1.dtype = Dtype::I32;
    });
    assert!(matches!(dtype, Err(WeightsError::DType { tensor, .. }) if tensor == name));
    let extra = hf(&|t| {
        t.push(("mlp.experts.6.up_proj.weight".into(), f32_tensor(vec![1], &[0.0])));
    });
    assert!(matches!(extra, Err(WeightsError::Unexpected { tensor, .. })
        if tensor == "mlp.experts.6.up_proj.weight"));
}

#[test]
fn the_memory_estimate_per_rank_is_the_largest_shard_and_the_layer_is_all_of_them() {
    // f32: a shard's host bytes are its device bytes.
    let c = MoeConfig { world: 4, experts: 10, dtype: DType::F32, ..full() };
    let c = MoeConfig { routing: Routing::deepseek_v3(Some((5, 2)), 2.5), ..c };
    let m = c.memory_estimate().unwrap();
    let shards: Vec<u64> = (0..4)
        .map(|r| ShardWeights::generate(&c, 1, &ShardWeights::rank_experts(&c, r).unwrap()))
        .map(|s| s.unwrap().host_bytes())
        .collect();
    assert_eq!(shards.iter().max(), Some(&m.weights));
    assert_eq!(ShardWeights::generate(&c, 1, &[]).unwrap().host_bytes(), m.replicated_weights);
    let all: u64 = shards.iter().map(|s| s - m.replicated_weights).sum();
    assert_eq!(all + m.replicated_weights, m.layer_weights);
}
