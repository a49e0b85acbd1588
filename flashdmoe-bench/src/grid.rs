//! What a benchmark sweeps: named cases, each a validated layer config.
//!
//! Sources:
//!
//! * [`builtin`] grids: `paper` (docs/performance.md's 40 configs: H = I = 2048, top-2, ReLU, bf16,
//!   T in {128, 4096, 8192, 16384} x E in {8, 16, 32, 64, 128} x {capacity factor 1,
//!   dropless}, one rank, named like the baselines' presets `paper-t<T>-e<E>-{cf1,dropless}`)
//!   `small` (layers the CPU simulator runs in milliseconds, for protocol regressions) and
//!   `models-t4096` ([`models`]: real models' layers at T = 4096 per rank, one rank, bf16,
//!   dropless; the PyTorch baselines' `--grid models-t4096`).
//! * [`presets`]: core's preset names, optionally suffixed `-dropless` or `-cf<F>` to set the
//!   capacity (so the baselines' names such as `paper-t16384-e8-dropless` work too).
//! * [`from_file`] / [`from_str`]: a grid file, TOML or JSON:
//!
//! ```toml
//! # Each [[case]] is a layer in flashdmoe's config schema (flashdmoe-core config/file.rs:
//! # `preset` plus overrides), with an optional `name`.
//! [[case]]
//! name = "tiny"
//! tokens_per_rank = 32
//! hidden = 64
//! inter = 128
//! # Optional: every case runs once per combination of these values (lists of schema values).
//! [sweep]
//! world = [1, 2]
//! capacity = [1.0, "dropless"]
//! ```
//!
//! Invariants: every case's config is validated by core; names are unique within a grid, and
//! so are layers (the same `(world, layer)` twice would make the comparison table ambiguous).

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::BenchError;
use crate::record::LayerKey;
use flashdmoe_core::config::presets as core_presets;
use flashdmoe_core::{Activation, CapacityPolicy, MoeConfig};

/// One configuration of a sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    /// Name shown in tables and records (unique within the grid).
    pub name: String,
    /// The layer, validated.
    pub config: MoeConfig,
}

/// Names of the built-in grids.
pub const BUILTIN: [&str; 3] = ["paper", "small", "models-t4096"];

/// A built-in grid by name (see the module doc).
pub fn builtin(name: &str) -> Result<Vec<Case>, BenchError> {
    match name.to_ascii_lowercase().as_str() {
        "paper" => Ok(paper()),
        "small" => Ok(small()),
        "models-t4096" => Ok(models()),
        _ => Err(BenchError::Grid(format!(
            "unknown grid {name:?} (built-in grids: {})",
            BUILTIN.join(", ")
        ))),
    }
}

/// docs/performance.md's paper grid, T-major, then E, then capacity factor 1 before dropless (the order of
/// the baselines' `--grid paper`).
fn paper() -> Vec<Case> {
    let mut cases = Vec::new();
    for (name, config) in core_presets::paper_grid() {
        cases.push(Case { name: format!("{name}-cf1"), config: config.clone() });
        let config = MoeConfig { capacity: CapacityPolicy::Dropless, ..config };
        cases.push(Case { name: format!("{name}-dropless"), config });
    }
    cases
}

/// Small layers for the simulator: H 256, I 512, top-2, ReLU, bf16, capacity factor 1,
/// T in {64, 256} x E in {8, 32} x world in {1, 2}, plus a SwiGLU layer with biases, dropless.
fn small() -> Vec<Case> {
    let base = MoeConfig { hidden: 256, inter: 512, top_k: 2, ..MoeConfig::default() };
    let mut cases = Vec::new();
    for tokens in [64, 256] {
        for experts in [8, 32] {
            for world in [1, 2] {
                cases.push(Case {
                    name: format!("small-t{tokens}-e{experts}-p{world}"),
                    config: MoeConfig { world, tokens_per_rank: tokens, experts, ..base.clone() },
                });
            }
        }
    }
    let swiglu = MoeConfig {
        world: 2,
        tokens_per_rank: 128,
        activation: Activation::SiluGated,
        bias: true,
        capacity: CapacityPolicy::Dropless,
        ..base
    };
    cases.push(Case { name: "small-t128-e8-p2-swiglu-dropless".into(), config: swiglu });
    cases
}

/// The presets of `models-t4096`, in order (`bench/baselines/common.py` `MODELS_T4096` holds
/// the same names).
pub const MODELS_T4096: [&str; 8] = [
    "deepseek-v3-routed",
    "kimi-k2-routed",
    "qwen3-30b-a3b",
    "mixtral-8x7b",
    "olmoe-1b-7b",
    "gpt-oss-20b",
    "gpt-oss-120b",
    "deepseek-v3",
];

/// `models-t4096`: real models' MoE layers at core's preset run parameters (T = 4096 per rank,
/// one rank, bf16, dropless), each computed by the CUDA kernel: DeepSeek-V3's and Kimi-K2's
/// routed experts (`-routed`: their grouped sigmoid routers without the shared expert),
/// Qwen3-30B-A3B, Mixtral-8x7B, OLMoE, gpt-oss-20b and -120b (their router and clamped SwiGLU);
/// then the whole DeepSeek-V3 layer with its shared expert (in the kernel as a virtual expert
/// of each rank: core's `virtual_experts`).
fn models() -> Vec<Case> {
    MODELS_T4096
        .iter()
        .map(|&name| {
            let config = match name.strip_suffix("-routed") {
                Some(model) => MoeConfig { shared: None, ..preset_config(model) },
                None => preset_config(name),
            };
            Case { name: name.to_owned(), config }
        })
        .collect()
}

/// A preset [`models`] names (a test holds every name to core's presets).
fn preset_config(name: &str) -> MoeConfig {
    core_presets::MODELS
        .iter()
        .find(|m| m.name == name)
        .map_or_else(MoeConfig::default, |m| m.config())
}

/// Cases for preset names: core's presets, each optionally suffixed `-dropless` or `-cf<F>`.
pub fn presets(names: &[String]) -> Result<Vec<Case>, BenchError> {
    let cases = names
        .iter()
        .map(|name| Ok(Case { name: name.clone(), config: preset(name)? }))
        .collect::<Result<Vec<_>, BenchError>>()?;
    check_unique(cases)
}

/// One preset with an optional capacity suffix.
fn preset(name: &str) -> Result<MoeConfig, BenchError> {
    let unknown = |e| BenchError::Grid(format!("{e}; a name may end in -dropless or -cf<F>"));
    let err = match core_presets::preset(name) {
        Ok(c) => return Ok(c),
        Err(e) => e,
    };
    let (stem, capacity) = match name.rsplit_once('-') {
        Some((stem, "dropless")) => (stem, CapacityPolicy::Dropless),
        Some((stem, suffix)) => match suffix.strip_prefix("cf").map(str::parse::<f64>) {
            Some(Ok(f)) => (stem, CapacityPolicy::Factor(f)),
            _ => return Err(unknown(err)),
        },
        None => return Err(unknown(err)),
    };
    let config = MoeConfig { capacity, ..core_presets::preset(stem).map_err(unknown)? };
    config.validate()?;
    Ok(config)
}

/// Reads a grid file: `.toml` or `.json` (module doc).
pub fn from_file(path: &Path) -> Result<Vec<Case>, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|e| BenchError::io(path, e))?;
    let json = match path.extension().and_then(|e| e.to_str()) {
        Some(ext) if ext.eq_ignore_ascii_case("json") => true,
        Some(ext) if ext.eq_ignore_ascii_case("toml") => false,
        _ => return Err(BenchError::io(path, "unknown extension (expected .toml or .json)")),
    };
    from_str(&text, json).map_err(|e| match e {
        BenchError::Grid(m) => BenchError::Grid(format!("{}: {m}", path.display())),
        other => other,
    })
}

/// Parses a grid file's text (`json`: JSON, else TOML).
pub fn from_str(text: &str, json: bool) -> Result<Vec<Case>, BenchError> {
    let value: Value = if json {
        serde_json::from_str(text).map_err(|e| BenchError::Grid(format!("JSON: {e}")))?
    } else {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| BenchError::Grid(format!("TOML: {e}")))?;
        serde_json::to_value(table).map_err(|e| BenchError::Grid(format!("TOML: {e}")))?
    };
    let Value::Object(mut top) = value else {
        return Err(BenchError::Grid("a grid file is a table with `case` and `sweep`".into()));
    };
    let cases = match top.remove("case") {
        Some(Value::Array(cases)) if !cases.is_empty() => cases,
        _ => return Err(BenchError::Grid("`case` must be a non-empty list of tables".into())),
    };
    let sweep = match top.remove("sweep") {
        None => Vec::new(),
        Some(Value::Object(s)) => sweep_points(s)?,
        Some(_) => return Err(BenchError::Grid("`sweep` must be a table of lists".into())),
    };
    if let Some(key) = top.keys().next() {
        return Err(BenchError::Grid(format!("unknown key {key:?} (expected `case`, `sweep`)")));
    }
    let mut out = Vec::new();
    for (i, case) in cases.into_iter().enumerate() {
        let Value::Object(mut fields) = case else {
            return Err(BenchError::Grid(format!("case {}: not a table", i + 1)));
        };
        let name = match fields.remove("name") {
            None => None,
            Some(Value::String(n)) if !n.trim().is_empty() => Some(n),
            Some(v) => {
                return Err(BenchError::Grid(format!("case {}: name {v} is not a string", i + 1)));
            }
        };
        for point in sweep_or_single(&sweep) {
            let mut layer = fields.clone();
            layer.extend(point.iter().cloned());
            let config = MoeConfig::from_json_str(&Value::Object(layer).to_string())
                .map_err(|e| BenchError::Grid(format!("case {}: {e}", i + 1)))?;
            let suffix: Vec<String> = point
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k}={s}"),
                    v => format!("{k}={v}"),
                })
                .collect();
            let name = match (&name, suffix.is_empty()) {
                (Some(n), true) => n.clone(),
                (Some(n), false) => format!("{n} {}", suffix.join(" ")),
                (None, _) => label(&config),
            };
            out.push(Case { name, config });
        }
    }
    check_unique(out)
}

/// `(key, value)` assignments of one sweep point.
type Point = Vec<(String, Value)>;

/// The cartesian product of a sweep table's lists, in key order, the last key varying fastest.
fn sweep_points(sweep: Map<String, Value>) -> Result<Vec<Point>, BenchError> {
    let mut points: Vec<Point> = vec![Vec::new()];
    for (key, values) in sweep {
        if key == "name" {
            return Err(BenchError::Grid("sweep: `name` cannot be swept".into()));
        }
        let values = match values {
            Value::Array(v) if !v.is_empty() => v,
            _ => return Err(BenchError::Grid(format!("sweep: {key} must be a non-empty list"))),
        };
        let mut next = Vec::with_capacity(points.len() * values.len());
        for p in &points {
            for v in &values {
                let mut p = p.clone();
                p.push((key.clone(), v.clone()));
                next.push(p);
            }
        }
        points = next;
    }
    Ok(points)
}

/// The sweep's points, or one empty point when there is no sweep.
fn sweep_or_single(sweep: &[Point]) -> Vec<Point> {
    if sweep.is_empty() { vec![Vec::new()] } else { sweep.to_vec() }
}

/// A case's default name: the layer label, with the world size when it is not 1.
fn label(config: &MoeConfig) -> String {
    let l = LayerKey::of(config).label();
    if config.world == 1 { l } else { format!("{l} P{}", config.world) }
}

/// Errors when two cases share a name or a layer.
fn check_unique(cases: Vec<Case>) -> Result<Vec<Case>, BenchError> {
    let mut names = BTreeSet::new();
    let mut layers = BTreeSet::new();
    for c in &cases {
        if !names.insert(c.name.as_str()) {
            return Err(BenchError::Grid(format!("case {:?} appears twice", c.name)));
        }
        if !layers.insert(label(&c.config)) {
            return Err(BenchError::Grid(format!(
                "case {:?} repeats the layer of an earlier case ({})",
                c.name,
                label(&c.config)
            )));
        }
    }
    Ok(cases)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashdmoe_core::DType;

    #[test]
    fn real_models_layers_are_cases_their_records_describe() {
        let g = presets(&["deepseek-v3".to_owned(), "gpt-oss-20b".to_owned()]).unwrap();
        let key = LayerKey::of(&g[0].config);
        assert_eq!(key.config(1), g[0].config);
        assert!(label(&g[0].config).ends_with("sigmoid+sb g8/4t2 x2.5 shared1x2048"));
        assert!(label(&g[1].config).ends_with("topk-softmax+rb"));
        // The same shape with another router is another layer, not a repeat.
        let both = ["qwen1.5-moe-a2.7b".to_owned(), "qwen1.5-moe-a2.7b-routed".to_owned()];
        assert_eq!(presets(&both).unwrap().len(), 2);
    }

    #[test]
    fn models_grid_is_the_real_models_at_t4096() {
        let g = builtin("models-t4096").unwrap();
        let names: Vec<&str> = g.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, MODELS_T4096);
        for c in &g {
            let k = &c.config;
            assert!(c.config.validate().is_ok(), "{}", c.name);
            assert_eq!((k.world, k.tokens_per_rank), (1, 4096), "{}", c.name);
            assert_eq!((k.dtype, k.capacity), (DType::Bf16, CapacityPolicy::Dropless));
            // Every name is core's preset, or its routed part.
            let model = c.name.strip_suffix("-routed").unwrap_or(&c.name);
            let preset = core_presets::preset(model).unwrap();
            assert_eq!(*k, MoeConfig { shared: k.shared, ..preset.clone() }, "{}", c.name);
            assert_eq!(k.shared.is_none(), c.name.ends_with("-routed") || preset.shared.is_none());
            // Every layer is computed by the CUDA kernel, the whole DeepSeek-V3 with its
            // shared expert included.
            assert!(flashdmoe_cuda::spec::computes(k), "{}", c.name);
        }
        assert_eq!(g[0].config.routing, g[7].config.routing);
    }

    /// `bench/baselines/testdata/models_t4096.json`: `models-t4096`'s layers as records'
    /// `config` objects, one `{"name", "config"}` per line, which `test_common.py` holds the
    /// Python grid to.
    fn models_fixture() -> String {
        let lines: Vec<String> = builtin("models-t4096")
            .unwrap()
            .iter()
            .map(|c| {
                let config = serde_json::to_string(&LayerKey::of(&c.config)).unwrap();
                format!("  {{\"name\": {:?}, \"config\": {config}}}", c.name)
            })
            .collect();
        format!("[\n{}\n]\n", lines.join(",\n"))
    }

    #[test]
    fn the_python_baselines_fixture_holds_the_models_grid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../bench/baselines/testdata/models_t4096.json");
        let expected = models_fixture();
        if std::env::var_os("FLASHDMOE_BLESS").is_some() {
            std::fs::write(&path, &expected).unwrap();
        }
        let found = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            found == expected,
            "{} is stale: rerun this test with FLASHDMOE_BLESS=1 to rewrite it",
            path.display()
        );
    }

    #[test]
    fn paper_grid_has_the_40_configs_in_the_baselines_order() {
        let g = builtin("paper").unwrap();
        assert_eq!(g.len(), 40);
        assert_eq!(g[0].name, "paper-t128-e8-cf1");
        assert_eq!(g[1].name, "paper-t128-e8-dropless");
        assert_eq!(g[1].config.capacity, CapacityPolicy::Dropless);
        assert_eq!(g[39].name, "paper-t16384-e128-dropless");
        for c in &g {
            let k = &c.config;
            assert_eq!((k.world, k.hidden, k.inter, k.top_k), (1, 2048, 2048, 2));
            assert_eq!((k.activation, k.dtype), (Activation::Relu, DType::Bf16));
        }
    }

    #[test]
    fn small_grid_is_valid_and_small() {
        let g = builtin("SMALL").unwrap();
        assert_eq!(g.len(), 9);
        assert!(g.iter().all(|c| c.config.validate().is_ok()));
        assert!(g.iter().all(|c| c.config.tokens_per_rank <= 256 && c.config.hidden == 256));
        assert!(
            matches!(builtin("huge"), Err(BenchError::Grid(m)) if m.contains("paper, small, models-t4096"))
        );
    }

    #[test]
    fn presets_take_capacity_suffixes() {
        let names: Vec<String> =
            ["paper-t16384-e8", "paper-t16384-e8-dropless", "mixtral-8x7b-cf1.25"]
                .map(String::from)
                .into();
        let g = presets(&names).unwrap();
        assert_eq!(g[0].config.capacity, CapacityPolicy::Factor(1.0));
        assert_eq!(g[1].config.capacity, CapacityPolicy::Dropless);
        assert_eq!(g[2].config.capacity, CapacityPolicy::Factor(1.25));
        assert_eq!(g[2].config.inter, 14336);
        for bad in ["llama", "paper-t16384-e8-cfx", "paper-t16384-e8-cf-1", "nope-dropless"] {
            assert!(presets(&[bad.to_owned()]).is_err(), "{bad}");
        }
        // `paper-t16384-e8-cf1` is the same layer as `paper-t16384-e8`.
        let dup = ["paper-t16384-e8".to_owned(), "paper-t16384-e8-cf1".to_owned()];
        assert!(matches!(presets(&dup), Err(BenchError::Grid(m)) if m.contains("repeats")));
    }

    #[test]
    fn grid_files_sweep_cases_in_the_config_schema() {
        let text = r#"
            [[case]]
            name = "tiny"
            tokens_per_rank = 32
            hidden = 64
            inter = 128
            [[case]]
            preset = "paper-t128-e8"
            [sweep]
            world = [1, 2]
            capacity = [1.0, "dropless"]
        "#;
        let g = from_str(text, false).unwrap();
        assert_eq!(g.len(), 8);
        assert_eq!(g[0].name, "tiny capacity=1.0 world=1");
        assert_eq!(g[1].name, "tiny capacity=1.0 world=2");
        assert_eq!(g[2].name, "tiny capacity=dropless world=1");
        assert_eq!((g[1].config.world, g[1].config.tokens_per_rank), (2, 32));
        assert_eq!(g[2].config.capacity, CapacityPolicy::Dropless);
        assert_eq!(g[4].name, "T128 H2048 I2048 E8 k2 relu bf16 cf1");
        assert_eq!(g[5].name, "T128 H2048 I2048 E8 k2 relu bf16 cf1 P2");
        let json = r#"{"case": [{"tokens_per_rank": 16, "hidden": 64, "inter": 64}]}"#;
        assert_eq!(from_str(json, true).unwrap()[0].config.tokens_per_rank, 16);
    }

    #[test]
    fn bad_grid_files_are_errors_naming_the_problem() {
        let cases = [
            ("x = 1", "`case`"),
            ("case = []", "`case`"),
            ("[[case]]\nhiden = 64", "hiden"),
            ("[[case]]\nhidden = 65", "hidden"),
            ("[[case]]\n[sweep]\nworld = []", "world"),
            ("[[case]]\n[sweep]\nworld = 2", "world"),
            ("[[case]]\n[sweep]\nname = [\"a\"]", "name"),
            ("[[case]]\nname = 3", "name"),
            ("[[case]]\n[[case]]", "twice"),
            ("[[case]]\nfoo = [", "TOML"),
            ("[[case]]\nhidden = 64\n[sweep]\nfoo = [1]", "foo"),
            ("[[case]]\n[extra]", "extra"),
        ];
        for (text, needle) in cases {
            match from_str(text, false) {
                Err(BenchError::Grid(m)) => assert!(m.contains(needle), "{text:?}: {m}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert!(from_str("[1, 2]", true).is_err());
        let missing = from_file(Path::new("/nonexistent/grid.toml")).unwrap_err();
        assert!(matches!(missing, BenchError::Io { .. }));
        assert!(matches!(from_file(Path::new("grid.yaml")), Err(BenchError::Io { .. })));
    }
}
