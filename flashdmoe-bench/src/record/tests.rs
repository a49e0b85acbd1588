use std::time::Duration;

use super::*;
use flashdmoe_core::config::presets;

/// A baseline record exactly as `common.py` wrote it in the recorded run 5
/// (`docs/dev/gpu-runs/2026-11-28-run5-torch-single.jsonl`, T16384 E8 graph).
pub(crate) const TORCH_LINE: &str = r#"{"schema": "flashdmoe-bench/1", "impl": "torch-grouped-graph", "backend": "torch", "device": "NVIDIA H200", "world": 1, "config": {"tokens_per_rank": 16384, "hidden": 2048, "inter": 2048, "experts": 8, "top_k": 2, "activation": "relu", "dtype": "bf16", "capacity": 1.0, "bias": false}, "iterations": 20, "median_ms": 1.475167989730835, "p10_ms": 1.4731199741363525, "p90_ms": 1.4785824060440063, "min_ms": 1.472000002861023, "max_ms": 1.486624002456665, "verified": true, "max_rel_err": 0.008982035928143712, "flops": 550292684800.0, "tflops": 373.0373005859547, "timestamp": "2026-11-28T10:24:41+00:00", "seed": 0, "floor_ms": 0.6965730187341772, "notes": ""}"#;

/// A record of ours for tests: `median_ms` on the paper T16384 E8 layer.
pub(crate) fn ours(median_ms: f64, backend: &str) -> Record {
    let config = presets::paper(16384, 8);
    let flops = flashdmoe_core::perf::layer_flops(&config);
    Record {
        schema: SCHEMA.into(),
        implementation: if backend == "sim" { IMPL_SIM } else { IMPL_CUDA }.into(),
        backend: backend.into(),
        device: if backend == "sim" { "cpu" } else { "NVIDIA H200" }.into(),
        world: 1,
        config: LayerKey::of(&config),
        iterations: 10,
        median_ms,
        p10_ms: median_ms * 0.99,
        p90_ms: median_ms * 1.01,
        min_ms: median_ms * 0.98,
        max_ms: median_ms * 1.02,
        verified: true,
        max_rel_err: Some(6e-3),
        flops,
        tflops: tflops(flops, median_ms),
        timestamp: "2026-11-28T10:00:00+00:00".into(),
        seed: 0,
        floor_ms: (backend != "sim").then(|| flashdmoe_core::perf::floor_ms(&config, 8)),
        notes: String::new(),
        name: Some("paper-t16384-e8-cf1".into()),
        protocol: Some(ProtocolStats { gemm0_tasks: 4, ..ProtocolStats::default() }),
        processes: None,
        ranks_per_process: None,
        kernel: None,
        host_path_median_ms: None,
    }
}

#[test]
fn reads_the_baselines_records() {
    let r = &parse_jsonl(TORCH_LINE, "run5").unwrap()[0];
    assert_eq!(r.implementation, "torch-grouped-graph");
    assert!(!r.is_ours() && r.on_gpu());
    assert_eq!(r.config, LayerKey::of(&presets::paper(16384, 8)));
    assert_eq!(r.config.label(), "T16384 H2048 I2048 E8 k2 relu bf16 cf1");
    // The floor the baseline recorded is core's.
    let floor = flashdmoe_core::perf::floor_ms(&r.config.config(1), 8);
    assert!((r.floor_ms.unwrap() - floor).abs() < 1e-12);
    assert!((r.percent_of_floor().unwrap() - 47.22).abs() < 0.01);
    assert_eq!(r.name, None);
}

#[test]
fn our_records_round_trip_in_the_baselines_field_order() {
    let r = ours(1.954, "cuda");
    r.check().unwrap();
    let line = r.to_json_line();
    assert!(!line.contains('\n'));
    let fields: Vec<&str> = [
        "schema",
        "impl",
        "backend",
        "device",
        "world",
        "config",
        "iterations",
        "median_ms",
        "p10_ms",
        "p90_ms",
        "min_ms",
        "max_ms",
        "verified",
        "max_rel_err",
        "flops",
        "tflops",
        "timestamp",
        "seed",
        "floor_ms",
        "notes",
        "name",
        "protocol",
    ]
    .into();
    let positions: Vec<usize> =
        fields.iter().map(|f| line.find(&format!("\"{f}\":")).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{line}");
    assert!(line.contains(r#""capacity":1.0"#) && line.contains(r#""activation":"relu""#));
    assert_eq!(parse_jsonl(&to_jsonl(&[r.clone(), r.clone()]), "x").unwrap(), [r.clone(), r]);
    let mut dropless = ours(2.0, "sim");
    dropless.config.capacity = CapacityPolicy::Dropless;
    dropless.config.activation = Activation::SiluGated;
    let line = dropless.to_json_line();
    assert!(line.contains(r#""capacity":"dropless""#) && line.contains(r#""floor_ms":null"#));
    assert!(line.contains(r#""activation":"swiglu""#));
    assert_eq!(parse_jsonl(&line, "x").unwrap()[0], dropless);
    assert_eq!(dropless.percent_of_floor(), None);
    // The kernel the layer ran, when recorded, travels with the record; absent, no field.
    assert!(!line_has_kernel(&ours(1.0, "cuda")));
    let kernel = Record { kernel: Some("kernel: bf16-relu-wgmma-s3".into()), ..ours(1.0, "cuda") };
    assert!(line_has_kernel(&kernel));
    assert_eq!(parse_jsonl(&kernel.to_json_line(), "x").unwrap()[0], kernel);
}

#[test]
fn the_host_path_median_is_written_only_when_the_times_are_device_resident() {
    let plain = ours(1.0, "cuda");
    assert!(!plain.to_json_line().contains("host_path_median_ms"));
    let resident = Record { host_path_median_ms: Some(1.04), ..plain };
    assert!(resident.to_json_line().contains(r#""host_path_median_ms":1.04"#));
    assert_eq!(parse_jsonl(&resident.to_json_line(), "x").unwrap()[0], resident);
}

fn line_has_kernel(r: &Record) -> bool {
    r.to_json_line().contains(r#""kernel":"#)
}

#[test]
fn a_multi_process_record_says_so_and_a_single_process_one_is_unchanged() {
    let single = ours(0.45, "cuda").to_json_line();
    assert!(!single.contains("processes"), "{single}");
    let mut r = ours(0.45, "cuda");
    r.world = 2;
    (r.processes, r.ranks_per_process) = (Some(2), Some(1));
    let line = r.to_json_line();
    assert!(line.ends_with(r#""processes":2,"ranks_per_process":1}"#), "{line}");
    assert_eq!(parse_jsonl(&line, "x").unwrap()[0], r);
    // Older records (and the baselines') read as one process.
    let old = parse_jsonl(&single, "x").unwrap().remove(0);
    assert_eq!((old.processes, old.ranks_per_process), (None, None));
}

#[test]
fn units_and_order_are_checked() {
    let good = ours(2.0, "cuda");
    let mut seconds = good.clone();
    // Times in seconds while flops/tflops assume ms: the units check catches it.
    for t in [
        &mut seconds.median_ms,
        &mut seconds.p10_ms,
        &mut seconds.p90_ms,
        &mut seconds.min_ms,
        &mut seconds.max_ms,
    ] {
        *t /= 1e3;
    }
    assert!(seconds.check().unwrap_err().contains("ms"));
    let mut unordered = good.clone();
    unordered.p10_ms = unordered.p90_ms * 2.0;
    assert!(unordered.check().is_err());
    let mut nan = good.clone();
    nan.max_ms = f64::NAN;
    assert!(nan.check().is_err());
    let mut schema = good.clone();
    schema.schema = "flashdmoe-bench/0".into();
    assert!(schema.check().unwrap_err().contains("schema"));
    let mut zero = good.clone();
    zero.iterations = 0;
    assert!(zero.check().is_err());
    let mut floor = good;
    floor.floor_ms = Some(-1.0);
    assert!(floor.check().is_err());
}

#[test]
fn bad_lines_name_their_source_and_line() {
    let bad_capacity = TORCH_LINE.replace(r#""capacity": 1.0"#, r#""capacity": "none""#);
    let bad_dtype = TORCH_LINE.replace(r#""dtype": "bf16""#, r#""dtype": "int8""#);
    let missing = TORCH_LINE.replace(r#""median_ms": 1.475167989730835, "#, "");
    for (line, needle) in [
        (bad_capacity.as_str(), "capacity"),
        (bad_dtype.as_str(), "int8"),
        (missing.as_str(), "median_ms"),
        ("{", "EOF"),
    ] {
        let text = format!("{TORCH_LINE}\n\n{line}\n");
        match parse_jsonl(&text, "f.jsonl") {
            Err(BenchError::Record { source_name, line, message }) => {
                assert_eq!((source_name.as_str(), line), ("f.jsonl", 3));
                assert!(message.contains(needle), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}

/// A DeepSeek-V3 record's `config` as `flashdmoe bench` writes it (the fixture the Python
/// tests parse too: `bench/baselines/test_common.py`, `RUST_DEEPSEEK_CONFIG`).
pub(crate) const DEEPSEEK_V3_CONFIG: &str = r#"{"tokens_per_rank":4096,"hidden":7168,"inter":2048,"experts":256,"top_k":8,"activation":"swiglu","dtype":"bf16","capacity":"dropless","bias":false,"routing":{"scoring":"sigmoid","router_bias":false,"selection_bias":true,"groups":{"count":8,"keep":4,"score":"top2-sum"},"scaling":2.5},"shared":{"count":1,"inter":2048,"gate":"none"}}"#;

fn round_trip(config: &MoeConfig) -> LayerKey {
    let key = LayerKey::of(config);
    let json = serde_json::to_string(&key).unwrap();
    let back: LayerKey = serde_json::from_str(&json).unwrap();
    assert_eq!(back, key, "{json}");
    assert_eq!(back.config(config.world), *config, "{json}");
    key
}

#[test]
fn every_preset_and_small_model_kind_round_trips_through_json() {
    let mut labels = std::collections::BTreeSet::new();
    for m in presets::MODELS {
        let key = round_trip(&m.config());
        assert!(labels.insert(key.label()), "{}: {} twice", m.name, key.label());
    }
    for dtype in [flashdmoe_core::DType::Bf16, flashdmoe_core::DType::F32Exact] {
        for (kind, config) in presets::small_model_kinds(dtype) {
            let key = round_trip(&config);
            assert!(labels.insert(key.label()), "{kind}: {} twice", key.label());
        }
    }
    for (_, config) in presets::paper_grid() {
        round_trip(&config);
    }
    // gpt-oss's SwiGLU with another clamp keeps it.
    let mut oss = presets::preset("gpt-oss-20b").unwrap();
    oss.activation = Activation::SwigluOss(SwigluOss { alpha: 1.702, limit: 5.0 });
    let key = round_trip(&oss);
    assert!(serde_json::to_string(&key).unwrap().contains(r#""swiglu_limit":5.0"#));
}

#[test]
fn model_fields_are_written_only_where_the_layer_is_not_the_papers() {
    // The paper's layer: exactly the fields of before (run 5's baseline line, re-serialised).
    let paper = serde_json::to_string(&LayerKey::of(&presets::paper(16384, 8))).unwrap();
    assert_eq!(
        paper,
        r#"{"tokens_per_rank":16384,"hidden":2048,"inter":2048,"experts":8,"top_k":2,"activation":"relu","dtype":"bf16","capacity":1.0,"bias":false}"#
    );
    let v3 = presets::preset("deepseek-v3").unwrap();
    assert_eq!(serde_json::to_string(&LayerKey::of(&v3)).unwrap(), DEEPSEEK_V3_CONFIG);
    let parsed: LayerKey = serde_json::from_str(DEEPSEEK_V3_CONFIG).unwrap();
    assert_eq!(parsed.config(1), v3);
    assert_eq!(
        parsed.label(),
        "T4096 H7168 I2048 E256 k8 swiglu bf16 dropless sigmoid+sb g8/4t2 x2.5 shared1x2048"
    );
    let json = |name| serde_json::to_string(&LayerKey::of(&presets::preset(name).unwrap()));
    // OLMoE: only `renormalize`; gpt-oss: only its router (the activation is by name).
    assert!(json("olmoe-1b-7b").unwrap().ends_with(r#""bias":false,"renormalize":false}"#));
    let oss = json("gpt-oss-120b").unwrap();
    assert!(oss.contains(r#""activation":"swiglu-oss""#) && !oss.contains("swiglu_limit"));
    assert!(oss.ends_with(r#""routing":{"scoring":"topk-softmax","router_bias":true,"selection_bias":false,"scaling":1.0}}"#), "{oss}");
    let labels = |name| LayerKey::of(&presets::preset(name).unwrap()).label();
    assert_eq!(
        labels("gpt-oss-20b"),
        "T4096 H2880 I2880 E32 k4 swiglu-oss+bias bf16 dropless topk-softmax+rb"
    );
    assert_eq!(
        labels("qwen2-57b-a14b"),
        "T4096 H3584 I2560 E64 k8 swiglu bf16 dropless norenorm shared1x20480+gate"
    );
    assert_eq!(labels("mixtral-8x7b"), "T4096 H4096 I14336 E8 k2 swiglu bf16 dropless");
    // Absent model fields are the paper's; a partial routing object takes the rest from it.
    let partial = r#"{"tokens_per_rank":16,"hidden":64,"inter":64,"experts":8,"top_k":2,"activation":"swiglu","dtype":"bf16","capacity":"dropless","bias":false,"routing":{"groups":{"count":4,"keep":2,"score":"max"},"scaling":16}}"#;
    let k: LayerKey = serde_json::from_str(partial).unwrap();
    assert_eq!(k.routing.scoring, Scoring::Softmax);
    assert_eq!(k.routing.groups, Some(Groups { count: 4, keep: 2, score: GroupScore::Max }));
    assert_eq!((k.routing.scaling, k.renormalize, k.shared), (16.0, true, None));
}

#[test]
fn malformed_model_fields_name_their_path() {
    let cases = [
        (r#""keep":4"#, r#""keep":9"#, "config.routing.groups.keep"),
        (r#""keep":4"#, r#""keep":"4""#, "config.routing.groups.keep"),
        (r#""count":8"#, r#""count":0"#, "config.routing.groups.count"),
        (r#""top2-sum""#, r#""top3""#, "config.routing.groups.score"),
        (r#""sigmoid""#, r#""tanh""#, "config.routing.scoring"),
        (r#""scaling":2.5"#, r#""scaling":-1"#, "config.routing.scaling"),
        (r#""scaling":2.5"#, r#""scalling":2.5"#, "config.routing.scalling"),
        (r#""inter":2048,"gate""#, r#""inter":0,"gate""#, "config.shared.inter"),
        (r#""gate":"none""#, r#""gate":"relu""#, "config.shared.gate"),
        (r#""gate":"none""#, r#""gate":"none","x":1"#, "config.shared.x"),
        (r#""bias":false"#, r#""bias":false,"renormalize":1"#, "config.renormalize"),
        (r#""bias":false"#, r#""bias":false,"swiglu_limit":5"#, "config.swiglu_limit"),
        (r#""hidden":7168"#, r#""hidden":-1"#, "config.hidden"),
        (r#""shared":{"#, r#""shared":3,"s":{"#, "config.shared"),
    ];
    for (from, to, field) in cases {
        let json = DEEPSEEK_V3_CONFIG.replacen(from, to, 1);
        assert_ne!(json, DEEPSEEK_V3_CONFIG, "{from}");
        let err = serde_json::from_str::<LayerKey>(&json).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{field}:")), "{to}: {err}");
        let line = TORCH_LINE.replace(
            r#""config": {"tokens_per_rank": 16384, "hidden": 2048, "inter": 2048, "experts": 8, "top_k": 2, "activation": "relu", "dtype": "bf16", "capacity": 1.0, "bias": false}"#,
            &format!(r#""config": {json}"#),
        );
        let err = parse_jsonl(&line, "f.jsonl").unwrap_err().to_string();
        assert!(err.contains(field), "{err}");
    }
}

#[test]
fn timestamps_are_utc_iso_8601() {
    assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00+00:00");
    // 2026-11-28T10:24:41Z, the recorded run's, and a leap day.
    let t = UNIX_EPOCH + Duration::from_secs(1_795_861_481);
    assert_eq!(timestamp(t), "2026-11-28T10:24:41+00:00");
    let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
    assert_eq!(timestamp(leap), "2000-02-29T00:00:00+00:00");
}

#[test]
fn the_dense_ceiling_has_no_percent_of_the_layer_floor() {
    let mut r = parse_jsonl(TORCH_LINE, "run5").unwrap().remove(0);
    assert!(r.percent_of_floor().is_some());
    r.implementation = IMPL_DENSE_CEILING.into();
    assert!(r.is_ceiling());
    assert_eq!(r.percent_of_floor(), None);
}
