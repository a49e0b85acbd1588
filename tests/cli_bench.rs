//! `flashdmoe bench` and `flashdmoe report`, driven through the built binary: a tiny sweep on
//! the simulator, the baselines as subprocesses (a stand-in interpreter), the report's files,
//! exit codes and error messages.

mod common;

use common::{assert_exit, flashdmoe, stderr, stdout};
use std::path::{Path, PathBuf};

use flashdmoe::bench::record::parse_jsonl;

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("flashdmoe-cli-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A grid of two tiny layers (one and two ranks) that the simulator runs in milliseconds.
const TINY_GRID: &str = "[[case]]\nname = \"tiny\"\ntokens_per_rank = 32\nhidden = 64\n\
                         inter = 128\nexperts = 4\n[sweep]\nworld = [1, 2]\n";

fn tiny_grid(dir: &Path) -> String {
    let path = dir.join("grid.toml");
    std::fs::write(&path, TINY_GRID).unwrap();
    path.display().to_string()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn a_tiny_sim_sweep_writes_verified_simulation_records() {
    let dir = scratch("sweep");
    let out = dir.join("out");
    let o = flashdmoe(&[
        "bench",
        "--config",
        &tiny_grid(&dir),
        "--iters",
        "3",
        "--warmup",
        "1",
        "--out",
        &s(&out),
    ]);
    assert_exit(&o, 0);
    let text = stdout(&o);
    for needle in ["SIMULATION", "tiny world=1", "tiny world=2", "flashdmoe-sim", "results.jsonl"] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let records =
        parse_jsonl(&std::fs::read_to_string(out.join("results.jsonl")).unwrap(), "results")
            .unwrap();
    assert_eq!(records.len(), 2);
    for (r, world) in records.iter().zip([1, 2]) {
        assert_eq!((r.backend.as_str(), r.device.as_str(), r.world), ("sim", "cpu", world));
        assert_eq!((r.iterations, r.config.tokens_per_rank, r.config.hidden), (3, 32, 64));
        assert!(r.verified && r.floor_ms.is_none() && r.median_ms > 0.0, "{r:?}");
        let p = r.protocol.as_ref().unwrap();
        assert!(p.gemm0_tasks > 0 && p.rows_sent > 0 && p.utilisation.is_some());
    }
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3);
    assert!(csv.starts_with("schema,impl,backend,device,world,name,"));

    // The report of simulator results: the protocol figures, each named as it is written,
    // and no GPU figure.
    let report = dir.join("report");
    let o = flashdmoe(&["report", &s(&out), "--out", &s(&report)]);
    assert_exit(&o, 0);
    let text = stdout(&o);
    for (file, title) in [
        ("sim-tasks.svg", "Simulator: tile tasks per forward"),
        ("sim-traffic.svg", "Simulator: bytes sent vs capacity-padded"),
        ("sim-utilisation.svg", "Simulator: processor utilisation"),
    ] {
        let line = format!("wrote {}: {title}", s(&report.join(file)));
        assert!(text.contains(&line), "missing {line:?} in:\n{text}");
        let texts = svg_texts(&report.join(file));
        assert!(texts.iter().any(|t| t == "tiny world=2"), "{file}: {texts:?}");
        assert!(!texts.iter().any(|t| t.contains("ms")), "{file} shows a time: {texts:?}");
    }
    assert!(text.contains("0 GPU and 2 simulator measurement(s)"), "{text}");
    assert!(!text.contains("not drawn") && !text.contains("no figure drawn"), "{text}");
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains("## Simulation (CPU simulator)") && md.contains("No GPU measurements."));
    assert!(md.contains("![Simulator: tile tasks per forward](sim-tasks.svg)"), "{md}");
    assert_eq!(std::fs::read_dir(&report).unwrap().count(), 4);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The texts of an SVG file's `<text>` elements (the file must be well-formed SVG).
fn svg_texts(path: &Path) -> Vec<String> {
    let svg = std::fs::read_to_string(path).unwrap();
    let doc =
        roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or_default().trim().to_owned())
        .collect()
}

/// A stand-in for `python3`: logs its arguments, then writes one baseline record of the tiny
/// one-rank layer (on the CPU) to the `--out` file and exits with `code`.
#[cfg(unix)]
fn fake_python(dir: &Path, code: i32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let record = r#"{"schema": "flashdmoe-bench/1", "impl": "torch-grouped-eager", "backend": "torch", "device": "cpu", "world": 1, "config": {"tokens_per_rank": 32, "hidden": 64, "inter": 128, "experts": 4, "top_k": 2, "activation": "relu", "dtype": "bf16", "capacity": 1.0, "bias": false}, "iterations": 3, "median_ms": 2.0, "p10_ms": 1.5, "p90_ms": 2.5, "min_ms": 1.0, "max_ms": 3.0, "verified": true, "max_rel_err": 0.01, "flops": 2113536.0, "tflops": 0.001056768, "timestamp": "2026-11-28T10:00:00+00:00", "seed": 0, "floor_ms": 0.001, "notes": ""}"#;
    let log = dir.join("args.log");
    let script = format!(
        "#!/bin/sh\necho \"$@\" >> '{}'\nwhile [ $# -gt 0 ]; do\n  if [ \"$1\" = --out ]; then \
         out=$2; fi\n  shift\ndone\necho '{record}' >> \"$out\"\nexit {code}\n",
        log.display()
    );
    let path = dir.join("python");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("torch_single.py"), "").unwrap();
    std::fs::write(dir.join("torch_ep.py"), "").unwrap();
    s(&path)
}

#[cfg(unix)]
#[test]
fn baselines_run_on_the_same_layers_and_are_never_compared_with_the_simulator() {
    let dir = scratch("baselines");
    let out = dir.join("out");
    let python = fake_python(&dir, 0);
    let args = [
        "bench",
        "--config",
        &tiny_grid(&dir),
        "--iters",
        "2",
        "--warmup",
        "0",
        "--seed",
        "5",
        "--baselines",
        "torch-single",
        "--python",
        &python,
        "--baseline-dir",
        &s(&dir),
        "--out",
        &s(&out),
    ];
    let o = flashdmoe(&args);
    assert_exit(&o, 0);
    let text = stdout(&o);
    assert!(text.contains("torch-single skipped: torch-single is one GPU; the layer has world 2"));
    // Ran once (world 1 only), with our layer as explicit flags, our seed and iterations.
    let log = std::fs::read_to_string(dir.join("args.log")).unwrap();
    assert_eq!(log.lines().count(), 1, "{log}");
    for flag in [
        "torch_single.py --tokens 32 --hidden 64 --inter 128 --experts 4 --top-k 2",
        "--capacity 1 --seed 5 --iters 2 --warmup 0",
        "--device cpu --no-bias --out",
    ] {
        assert!(log.contains(flag), "missing {flag:?} in {log}");
    }
    let records =
        parse_jsonl(&std::fs::read_to_string(out.join("results.jsonl")).unwrap(), "r").unwrap();
    let impls: Vec<&str> = records.iter().map(|r| r.implementation.as_str()).collect();
    assert_eq!(impls, ["flashdmoe-sim", "torch-grouped-eager", "flashdmoe-sim"]);
    // In the table the baseline sits under our case, without a speedup.
    let line = text.lines().find(|l| l.starts_with(' ') && l.contains("torch-grouped-eager"));
    assert!(line.unwrap().trim_end().ends_with(" - yes"), "{text}");
    assert!(!text.contains("x yes"), "{text}");

    // A baseline that fails: the sweep goes on, and the exit status says so.
    let python = fake_python(&dir, 2);
    let mut failing = args;
    failing[12] = python.as_str();
    let o = flashdmoe(&failing);
    assert_exit(&o, 1);
    assert!(stdout(&o).contains("FAILED: baseline torch-single: exit status: 2"), "{}", stdout(&o));
    assert!(stderr(&o).contains("error: 1 run(s) failed"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_command_lines_exit_2_with_a_message() {
    let dir = scratch("usage");
    let cases: [(&[&str], &str); 8] = [
        (&["bench", "--grid", "huge"], "unknown grid \"huge\""),
        (
            &["bench", "--grid", "small", "--tile", "256x64"],
            "--tile applies to --backend cuda only",
        ),
        (&["bench", "--tile", "x64"], "is not a tile: BMxBN"),
        (&["bench", "--preset", "llama"], "llama"),
        (&["bench", "--baselines", "megatron"], "unknown baseline \"megatron\""),
        (&["bench", "--timeout", "0"], "--timeout"),
        (&["bench", "--grid", "small", "--preset", "paper-t128-e8"], "cannot be used with"),
        (&["bench", "--config", "/nonexistent/grid.toml"], "/nonexistent/grid.toml"),
    ];
    for (args, needle) in cases {
        let o = flashdmoe(args);
        assert_exit(&o, 2);
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"schema\": \"flashdmoe-bench/1\"}\n").unwrap();
    let o = flashdmoe(&["report", &s(&bad), "--out", &s(&dir.join("r"))]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("bad.jsonl:1:"), "{}", stderr(&o));
    let o = flashdmoe(&["report", &s(&dir.join("missing.jsonl"))]);
    assert_exit(&o, 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cuda_without_a_gpu_fails_before_generating_anything() {
    if flashdmoe::cuda::cuda_available().is_ok() {
        println!("skipped: a GPU is present (this checks the no-GPU path)");
        return;
    }
    let dir = scratch("cuda");
    let o = flashdmoe(&["bench", "--backend", "cuda", "--out", &s(&dir)]);
    assert_exit(&o, 4);
    assert!(stderr(&o).contains("backend unavailable"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_report_of_recorded_gpu_results_draws_what_it_can_and_says_why_not() {
    let dir = scratch("report");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/bench/run10-sample.jsonl");
    let o = flashdmoe(&["report", fixture, "--out", &s(&dir)]);
    assert_exit(&o, 0);
    let text = stdout(&o);
    // Run 10 is the weak-scaling sweep: one layer on 1, 2 and 4 GPUs.
    for (file, needle) in [
        ("speedup.svg", "vs torch-ep-a2a-graph"),
        ("percent-of-floor.svg", "target: within 1.3x of the floor (77%)"),
        ("weak-scaling.svg", "GPUs (one rank each)"),
    ] {
        assert!(text.contains(&format!("wrote {}", s(&dir.join(file)))), "{file}: {text}");
        let texts = svg_texts(&dir.join(file));
        assert!(texts.iter().any(|t| t == needle), "{file}: {texts:?}");
    }
    for title in ["Latency vs tokens per GPU", "Latency vs experts"] {
        assert!(text.contains(&format!("not drawn: {title}: no implementation")), "{text}");
    }
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("| T8192 H2048 I2048 E32 k2 relu bf16 cf1 | 1 | flashdmoe-cuda | 0.989 |"));
    // The recorded PyTorch graph replay against ours at one GPU: 0.883200 / 0.989440.
    assert!(md.contains("| torch-grouped-graph | 0.883 |") && md.contains("| 0.89x |"), "{md}");
    assert!(md.contains("*Latency vs experts: not drawn:"), "{md}");
    assert!(!dir.join("latency-vs-tokens.svg").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
