//! Property tests of the config's front doors: any values at all in a [`MoeConfig`], and any
//! one field of a real Hugging Face `config.json` replaced, removed or given another type, are
//! either accepted as a config that holds together or refused with a typed error naming the
//! field; never a panic, an overflow or an allocation the size of a wild field.

use proptest::prelude::*;
use serde_json::Value;

use super::*;

/// Values around every edge a `u32` field has: zero, one, the sizes' multiple, the largest.
fn edgy_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(63),
        Just(64),
        Just(u16::MAX as u32),
        Just(u16::MAX as u32 + 1),
        Just(u32::MAX),
        (1u32..=64).prop_map(|x| 64 * x),
        any::<u32>(),
    ]
}

/// Mostly a value from `sane` (so that many configs validate and go on to the later checks),
/// else one at an edge.
fn mostly(sane: impl Strategy<Value = u32>) -> impl Strategy<Value = u32> {
    prop_oneof![4 => sane, 1 => edgy_u32()]
}

fn edgy_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => 0.25f64..4.0,
        1 => prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(0.0),
            Just(-1.0),
            Just(f64::MIN_POSITIVE),
            Just(f64::MAX),
        ],
    ]
}

fn any_config() -> impl Strategy<Value = MoeConfig> {
    let sizes = (
        mostly(1u32..=4),
        mostly(0u32..=4096),
        mostly((1u32..=64).prop_map(|x| 64 * x)),
        mostly((1u32..=64).prop_map(|x| 64 * x)),
        mostly(1u32..=300),
        mostly(1u32..=8),
    );
    let activation = prop_oneof![
        Just(Activation::Relu),
        Just(Activation::Gelu),
        Just(Activation::SiluGated),
        (edgy_f64(), edgy_f64())
            .prop_map(|(alpha, limit)| Activation::SwigluOss(SwigluOss { alpha, limit })),
    ];
    let capacity =
        prop_oneof![Just(CapacityPolicy::Dropless), edgy_f64().prop_map(CapacityPolicy::Factor)];
    let groups = prop::option::of((mostly(1u32..=8), mostly(1u32..=4), any::<bool>()).prop_map(
        |(count, keep, top2)| Groups {
            count,
            keep,
            score: if top2 { GroupScore::Top2Sum } else { GroupScore::Max },
        },
    ));
    let routing = (0usize..3, any::<bool>(), any::<bool>(), groups, edgy_f64()).prop_map(
        |(scoring, router_bias, selection_bias, groups, scaling)| Routing {
            scoring: [Scoring::Softmax, Scoring::Sigmoid, Scoring::TopKSoftmax][scoring],
            router_bias,
            selection_bias,
            groups,
            scaling,
        },
    );
    let shared = prop::option::of(
        (mostly(1u32..=4), mostly((1u32..=32).prop_map(|x| 64 * x)), any::<bool>()).prop_map(
            |(count, inter, sigmoid)| SharedExperts {
                count,
                inter,
                gate: if sigmoid { SharedGate::Sigmoid } else { SharedGate::None },
            },
        ),
    );
    let limit = prop_oneof![
        3 => Just(u64::MAX),
        1 => Just(80u64 << 30),
        1 => Just(0u64),
        1 => any::<u64>(),
    ];
    let flags = (any::<bool>(), any::<bool>(), prop::sample::select(DType::ALL.to_vec()));
    // The placement table: none, one owner per expert (in range or not), or a wrong length.
    let table =
        (0usize..4, prop::collection::vec(prop_oneof![8 => 0u32..4, 1 => edgy_u32()], 0..40));
    (sizes, activation, capacity, routing, shared, table, limit, flags).prop_map(
        |(
            (world, tokens_per_rank, hidden, inter, experts, top_k),
            activation,
            capacity,
            routing,
            shared,
            (table, owners),
            memory_limit,
            (bias, renormalize, dtype),
        )| {
            let placement = match table {
                0 | 1 => Placement::Contiguous,
                2 if experts <= 4096 => Placement::Table(
                    (0..experts as usize).map(|e| owners.get(e).copied().unwrap_or(0)).collect(),
                ),
                _ => Placement::Table(owners),
            };
            MoeConfig {
                world,
                tokens_per_rank,
                hidden,
                inter,
                experts,
                top_k,
                activation,
                bias,
                dtype,
                capacity,
                renormalize,
                routing,
                shared,
                placement,
                memory_limit,
            }
        },
    )
}

/// The fields [`MoeConfig::validate`] may name: the config's own, and the protocol
/// geometry's (`geometry` for a layout whose sizes overflow 64 bits).
const FIELDS: &[&str] = &[
    "world",
    "tokens_per_rank",
    "hidden",
    "inter",
    "experts",
    "top_k",
    "activation",
    "capacity",
    "renormalize",
    "routing.scaling",
    "routing.groups",
    "shared",
    "shared.inter",
    "placement",
    "memory_limit",
    "tile.bm",
    "tile.bn",
    "tile.bk",
    "tile.bn_hidden",
    "local_experts",
    "elem_bytes",
    "dtype",
    "geometry",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// A config with any values is valid or refused naming one of its fields; a valid one
    /// holds together: its memory estimate is within its limit, a packet's capacity is at most
    /// the tokens, every expert has one owner (for tables small enough to build here), and
    /// the nominal tile's geometry is computed or refused by name.
    #[test]
    fn any_config_is_valid_or_names_a_field(c in any_config()) {
        match c.validate() {
            Err(ConfigError::Invalid { field, reason }) => {
                prop_assert!(FIELDS.contains(&field), "{field}: {reason}");
                prop_assert!(!reason.is_empty());
            }
            Err(other) => prop_assert!(false, "not a field's error: {other:?}"),
            Ok(()) => {
                let m = c.memory_estimate().expect("a valid config's estimate");
                prop_assert!(m.total() <= c.memory_limit);
                prop_assert!(c.capacity_rows() <= c.tokens_per_rank);
                if c.experts <= 1 << 16 {
                    let map = c.expert_map().expect("a valid config's owners");
                    let owned: usize = (0..c.world).map(|r| map.experts_of(r).len()).sum();
                    prop_assert_eq!(owned, c.experts as usize);
                    for e in 0..c.experts {
                        let (rank, local) = map.owner(e);
                        prop_assert_eq!(map.global(rank, local), Some(e));
                    }
                }
                match c.geometry(NOMINAL_TILE) {
                    Ok(_) => {}
                    Err(ConfigError::Invalid { field, .. }) => {
                        prop_assert!(FIELDS.contains(&field), "{field}");
                    }
                    Err(other) => prop_assert!(false, "geometry: {other:?}"),
                }
            }
        }
    }
}

/// The committed real `config.json` files (`tests/data/hf/<model>/config.json`).
fn hf_samples() -> Vec<(String, Value)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/hf");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(dir)
        .expect("tests/data/hf")
        .flatten()
        .map(|d| {
            let text = std::fs::read_to_string(d.path().join("config.json")).expect("config.json");
            let name = d.file_name().to_string_lossy().into_owned();
            (name, serde_json::from_str(&text).expect("a JSON sample"))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// What a field may be replaced with: no value at all (`None`: the key removed), another
/// type, or a number at an edge.
fn replacement() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        Just(Some(Value::Bool(true))),
        Just(Some(Value::from(-1))),
        Just(Some(Value::from(0))),
        Just(Some(Value::from(1))),
        Just(Some(Value::from(3))),
        Just(Some(Value::from(u32::MAX as u64 + 1))),
        Just(Some(Value::from(u64::MAX))),
        Just(Some(Value::from(1.5))),
        Just(Some(Value::from(-0.0))),
        Just(Some(Value::from(1e300))),
        Just(Some(Value::from("sigmoid"))),
        Just(Some(Value::from(""))),
        Just(Some(Value::Array(vec![]))),
        Just(Some(serde_json::json!({}))),
    ]
}

/// Every key path of `v` (objects only; arrays are values).
fn key_paths(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    if let Value::Object(map) = v {
        for (k, child) in map {
            prefix.push(k.clone());
            out.push(prefix.clone());
            key_paths(child, prefix, out);
            prefix.pop();
        }
    }
}

/// Applies `edits` one after the other: each replaces (or with `None` removes) the key its
/// index picks among the keys `v` has by then.
fn mutate(v: &mut Value, edits: Vec<(prop::sample::Index, Option<Value>)>) {
    for (at, with) in edits {
        let mut paths = Vec::new();
        key_paths(v, &mut Vec::new(), &mut paths);
        if paths.is_empty() {
            break;
        }
        let path = paths[at.index(paths.len())].clone();
        replace(v, &path, with);
    }
}

fn replace(v: &mut Value, path: &[String], with: Option<Value>) {
    let Value::Object(map) = v else { return };
    let (last, rest) = path.split_last().expect("a non-empty path");
    let mut map = map;
    for k in rest {
        match map.get_mut(k) {
            Some(Value::Object(m)) => map = m,
            _ => return,
        }
    }
    match with {
        Some(value) => map.insert(last.clone(), value),
        None => map.remove(last),
    };
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    /// A real model's `config.json` with one or two fields replaced, removed or retyped is read
    /// as a config that validates, or refused with a typed error; never a panic.
    #[test]
    fn a_mutated_hf_config_is_read_or_refused(
        sample in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), replacement()), 1..=2),
    ) {
        let samples = hf_samples();
        let (name, mut v) = samples[sample.index(samples.len())].clone();
        mutate(&mut v, edits);
        match MoeConfig::from_hf_config_str(&v.to_string()) {
            Ok(c) => prop_assert_eq!(c.validate(), Ok(()), "{}", name),
            Err(
                ConfigError::HfField { .. }
                | ConfigError::Invalid { .. }
                | ConfigError::NotImplemented { .. }
                | ConfigError::Parse { .. },
            ) => {}
            Err(other) => prop_assert!(false, "{name}: unexpected error kind {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// Our own JSON schema (`tests/data/moe.json`, the fields `config/file.rs` documents) with
    /// one or two fields replaced, removed or retyped: a config that validates, or a parse or
    /// field error; never a panic.
    #[test]
    fn a_mutated_config_file_is_read_or_refused(
        edits in prop::collection::vec((any::<prop::sample::Index>(), replacement()), 1..=2),
    ) {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/moe.json");
        let mut v: Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("moe.json")).expect("JSON");
        mutate(&mut v, edits);
        match MoeConfig::from_json_str(&v.to_string()) {
            Ok(c) => prop_assert_eq!(c.validate(), Ok(())),
            Err(
                ConfigError::Parse { .. }
                | ConfigError::Invalid { .. }
                | ConfigError::UnknownPreset { .. },
            ) => {}
            Err(other) => prop_assert!(false, "unexpected error kind {other:?}"),
        }
    }
}
