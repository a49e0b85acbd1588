//! `flashdmoe run`, driven through the built binary: results, exit codes, error messages.

mod common;

use std::time::{Duration, Instant};

use common::{assert_exit, flashdmoe, stderr, stdout};

#[test]
fn default_run_is_verified_and_reports_everything() {
    let o = flashdmoe(&["run"]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    for needle in [
        "config: world 2 x 64 tokens, hidden 256, inter 512, 8 experts, top-2, relu, bf16",
        "backend: sim",
        "routing: rows per expert",
        "tasks: gemm0 ",
        "traffic: ",
        "capacity-padded",
        "time: forward ",
        "(slowest rank); host call ",
        "verify: PASS: 128/128 rows checked",
        "estimate: about ",
        "phases: weights ",
        ", build ",
        ", forwards ",
        ", verify ",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

#[test]
fn every_policy_combination_verifies_and_repeats_bitwise() {
    let o = flashdmoe(&[
        "run",
        "--world",
        "3",
        "--tokens",
        "37",
        "--hidden",
        "128",
        "--inter",
        "192",
        "--experts",
        "5",
        "--top-k",
        "3",
        "--activation",
        "swiglu",
        "--bias",
        "--dtype",
        "f16",
        "--dropless",
        "--no-renormalize",
        "--placement",
        "2,0,1,1,0",
        "--iterations",
        "2",
        "--seed",
        "7",
    ]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("swiglu + bias, f16"), "{out}");
    assert!(out.contains("time: 2 forwards, slowest rank median "), "{out}");
    assert!(out.contains("verify: PASS: 111/111 rows checked"), "{out}");
}

#[test]
fn paired_gemm0_tasks_run_on_the_simulator_and_verify() {
    let o = flashdmoe(&["run", "--pairs", "--processors", "5"]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("paired GEMM0 tasks on 2 clusters of 2 processors"), "{out}");
    assert!(out.contains("verify: PASS"), "{out}");
    // Too few processor threads for a cluster: said, and the run still verifies.
    let o = flashdmoe(&["run", "--pairs"]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("--pairs: no cluster with 2 processor threads"), "{out}");
    assert!(out.contains("verify: PASS"), "{out}");
    // --pairs and --no-pairs together: a usage error naming both, before anything runs.
    let o = flashdmoe(&["run", "--pairs", "--no-pairs"]);
    assert_exit(&o, 2);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--pairs") && err.contains("--no-pairs"), "{err}");
}

#[test]
fn the_simulator_posts_the_waves_on_one_rank_unless_told_not_to() {
    // 16 tokens, 2 experts, top-1 at the default tile: a few GEMM0 tasks, fewer than 16
    // processors, so all three waves where the rules allow.
    let layer = ["run", "--world", "1", "--tokens", "16", "--experts", "2", "--top-k", "1"];
    let with = flashdmoe(&[&layer[..], &["--processors", "16"]].concat());
    assert_exit(&with, 0);
    let out = stdout(&with);
    assert!(out.contains("the kernel's waves posted (one rank"), "{out}");
    assert!(out.contains("verify: PASS"), "{out}");
    let without = flashdmoe(&[&layer[..], &["--processors", "16", "--no-waves"]].concat());
    assert_exit(&without, 0);
    let out = stdout(&without);
    assert!(out.contains("no waves (--no-waves)"), "{out}");
    assert!(out.contains("verify: PASS"), "{out}");
    // A flag of the simulator's on the CUDA backend: a usage error naming it.
    let o = flashdmoe(&["run", "--backend", "cuda", "--no-waves"]);
    assert_exit(&o, 2);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--no-waves"), "{err}");
}

#[test]
fn capacity_drops_are_counted() {
    // 1 expert, top-1, capacity factor 0.5: half of each rank's 16 tokens are dropped.
    let o = flashdmoe(&[
        "run",
        "--world",
        "1",
        "--tokens",
        "16",
        "--experts",
        "1",
        "--top-k",
        "1",
        "--capacity-factor",
        "0.5",
    ]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("capacity factor 0.5 (8 rows/packet)"), "{out}");
    assert!(out.contains("  total             8        8"), "{out}");
    assert!(out.contains("verify: PASS"), "{out}");
}

#[test]
fn zero_tokens_is_a_valid_idle_layer() {
    let o = flashdmoe(&["run", "--tokens", "0"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("verify: PASS: 0/0 rows checked"), "{}", stdout(&o));
}

#[test]
fn dry_run_prints_the_config_only() {
    let o = flashdmoe(&["run", "--dry-run", "--experts", "16", "--top-k", "4"]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("16 experts, top-4"), "{out}");
    assert!(!out.contains("verify:"), "{out}");
}

#[test]
fn bad_flags_are_usage_errors() {
    let o = flashdmoe(&["run", "--no-such-flag"]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("--no-such-flag"), "{}", stderr(&o));

    let o = flashdmoe(&["run", "--tokens", "many"]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("invalid value 'many'"), "{}", stderr(&o));

    let o = flashdmoe(&["run", "--activation", "tanh"]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("possible values: relu, gelu, swiglu"), "{}", stderr(&o));

    let o = flashdmoe(&["run", "--dropless", "--capacity-factor", "2"]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));

    let o = flashdmoe(&["run", "--ranks-per-gpu", "2"]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("--backend cuda only"), "{}", stderr(&o));

    let o = flashdmoe(&["run", "--remote-copiers", "8"]);
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains("--remote-copiers applies to --backend cuda only"),
        "{}",
        stderr(&o)
    );

    let o = flashdmoe(&["run", "--backend", "cuda", "--remote-copiers", "0"]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("--remote-copiers"), "{}", stderr(&o));

    let o = flashdmoe(&["run", "--tile", "256x64"]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("--tile applies to --backend cuda only"), "{}", stderr(&o));

    let o = flashdmoe(&["run", "--backend", "cuda", "--tile", "256"]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("is not a tile: BMxBN"), "{}", stderr(&o));

    let o = flashdmoe(&["run", "--backend", "cuda", "--processors", "2"]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("--backend sim only"), "{}", stderr(&o));

    let o = flashdmoe(&["run", "--iterations", "0"]);
    assert_exit(&o, 2);

    let o = flashdmoe(&["run", "--timeout=-1"]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("--timeout"), "{}", stderr(&o));
}

#[test]
fn invalid_configs_name_the_field() {
    for (args, field) in [
        (&["run", "--hidden", "100"][..], "hidden"),
        (&["run", "--top-k", "9"][..], "top_k"),
        (&["run", "--world", "0"][..], "world"),
        (&["run", "--capacity-factor", "0"][..], "capacity"),
        (&["run", "--placement", "0,1"][..], "placement"),
        (&["run", "--placement", "0,1,x"][..], "--placement"),
    ] {
        let o = flashdmoe(args);
        assert_exit(&o, 2);
        let err = stderr(&o);
        assert!(err.starts_with("error: ") && err.contains(field), "{args:?}: {err}");
    }
}

#[test]
fn configs_come_from_presets_and_files_with_flag_overrides() {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    // Our TOML schema, run as is (4 ranks x 256 tokens, gelu + bias, f16).
    let o = flashdmoe(&["run", "--config", &format!("{data}/moe.toml")]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("world 4 x 256 tokens, hidden 512, inter 1024, 16 experts"), "{out}");
    assert!(out.contains("gelu + bias, f16"), "{out}");
    assert!(out.contains("verify: PASS: 1024/1024 rows checked"), "{out}");
    // A Hugging Face config.json, shrunk by flags to run on the simulator.
    let hf = format!("{data}/hf/mixtral-8x7b/config.json");
    let o =
        flashdmoe(&["run", "--config", &hf, "--tokens", "16", "--hidden", "128", "--inter", "64"]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("hidden 128, inter 64, 8 experts, top-2, swiglu"), "{out}");
    assert!(out.contains("verify: PASS"), "{out}");
    // A preset, likewise.
    let o = flashdmoe(&[
        "run",
        "--preset",
        "olmoe-1b-7b",
        "--world",
        "2",
        "--tokens",
        "8",
        "--hidden",
        "128",
        "--inter",
        "64",
    ]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("64 experts, top-8, swiglu"), "{out}");
    assert!(out.contains("verify: PASS: 16/16 rows checked"), "{out}");
}

/// `run` with `args` (`--config NAME` meaning `tests/data/hf/NAME/config.json`), then `more`.
fn run_argv(args: &[&str], more: &[&str]) -> Vec<String> {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/hf");
    let mut argv = vec!["run".to_owned()];
    for (i, a) in args.iter().enumerate() {
        match i.checked_sub(1).map(|j| args[j]) {
            Some("--config") => argv.push(format!("{data}/{a}/config.json")),
            _ => argv.push((*a).to_owned()),
        }
    }
    argv.extend(more.iter().map(|m| (*m).to_owned()));
    argv
}

/// `run` with `args` (as [`run_argv`]) fails with exit status 2 before anything runs, its
/// error naming `needle` and saying `also`.
fn assert_refused(args: &[&str], needle: &str, also: &str) {
    let argv = run_argv(args, &[]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let o = flashdmoe(&argv);
    assert_exit(&o, 2);
    let err = stderr(&o);
    assert!(err.starts_with("error: ") && err.contains(needle), "{argv:?}: {err}");
    assert!(err.contains(also), "{err}");
    assert!(!stdout(&o).contains("verify:"), "nothing may run: {}", stdout(&o));
}

#[test]
fn models_needing_unimplemented_features_are_refused_naming_them() {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/hf");
    let cases = [
        (
            vec!["--config", "deepseek-v3"],
            "config.json: quantization_config = {quant_method: \"fp8\"}: quantized expert \
             weights are not implemented yet",
        ),
        (vec!["--config", "gpt-oss-20b"], "quantization_config = {quant_method: \"mxfp4\"}"),
        (vec!["--config", "llama-4-scout-17b-16e"], "text_config.model_type = \"llama4_text\""),
    ];
    for (args, needle) in cases {
        assert_refused(&args, needle, "(issue 16)");
    }
    // Shared experts the CUDA kernel cannot run as routed experts: refused before anything
    // is generated (and before looking for a GPU), naming the field, exit status 2.
    for (args, needle) in [
        (
            vec!["--preset", "deepseek-v3", "--backend", "cuda", "--capacity-factor", "1.25"],
            "cuda: invalid input capacity: factor 1.25 with shared experts",
        ),
        (
            vec!["--preset", "qwen1.5-moe-a2.7b", "--backend", "cuda", "--inter", "1472"],
            "cuda: invalid input shared: the shared experts' 5632 intermediate rows are not a \
             multiple of the routed experts' 1472",
        ),
    ] {
        assert_refused(&args, needle, "--backend sim computes this layer");
    }
    // DBRX's nested ffn_config is read (and runs, shrunk by flags); the routed part of a model
    // runs under its own name.
    let dbrx = format!("{data}/dbrx-instruct/config.json");
    let shrink = ["--tokens", "8", "--hidden", "128", "--inter", "64"];
    let o = flashdmoe(&[&["run", "--config", &dbrx][..], &shrink].concat());
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("16 experts, top-4, swiglu"), "{}", stdout(&o));
    let o = flashdmoe(&[&["run", "--preset", "deepseek-v2-lite-routed"][..], &shrink].concat());
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("64 experts, top-6, swiglu"), "{}", stdout(&o));
}

#[test]
fn real_model_layers_run_on_the_sim_and_verify() {
    // Shrunk by flags (H 128, I 64, 8 tokens); the routing, shared experts (their own size)
    // and activation are the model's.
    let shrink = ["--world", "2", "--tokens", "8", "--hidden", "128", "--inter", "64"];
    let cases: [(&[&str], &str); 4] = [
        (
            &["--preset", "deepseek-v3"],
            "256 experts, top-8, swiglu, shared 1 x 2048, sigmoid router + selection bias, 4 of \
             8 groups (by top-2 sums), weights x2.5",
        ),
        (&["--preset", "gpt-oss-20b"], "swiglu-oss + bias, topk-softmax router + bias"),
        (&["--preset", "kimi-k2"], "384 experts, top-8, swiglu, shared 1 x 2048, sigmoid router"),
        (&["--config", "qwen1.5-moe-a2.7b"], "shared 1 x 5632 with a sigmoid gate"),
    ];
    for (args, needle) in cases {
        let argv = run_argv(args, &shrink);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let o = flashdmoe(&argv);
        assert_exit(&o, 0);
        let out = stdout(&o);
        assert!(out.contains(needle), "{argv:?}: {out}");
        assert!(out.contains("verify: PASS: 16/16 rows checked"), "{argv:?}: {out}");
    }
}

#[test]
fn unknown_preset_and_missing_file_are_usage_errors() {
    let o = flashdmoe(&["run", "--preset", "no-such-model"]);
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains("unknown preset \"no-such-model\" (known: mixtral-8x7b"),
        "{}",
        stderr(&o)
    );

    let o = flashdmoe(&["run", "--config", "/nonexistent/flashdmoe.toml"]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("/nonexistent/flashdmoe.toml"), "{}", stderr(&o));

    let o = flashdmoe(&["run", "--preset", "mixtral-8x7b", "--config", "x.toml"]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
}

#[test]
fn cuda_backend_without_a_gpu_is_unavailable_exit_4() {
    // CI and development machines have no GPU: the CUDA backend must say so, not crash, and
    // with its own exit code (1 means a forward ran and failed), before generating anything.
    if flashdmoe::cuda::cuda_available().is_ok() {
        println!("skipped: a GPU is present (this checks the no-GPU path)");
        return;
    }
    let o = flashdmoe(&["run", "--backend", "cuda", "--tokens", "8"]);
    assert_exit(&o, 4);
    assert!(stderr(&o).starts_with("error: backend unavailable: "), "{}", stderr(&o));
    assert!(!stdout(&o).contains("phases:"), "{}", stdout(&o));
    let help = stdout(&flashdmoe(&["--help"]));
    assert!(help.contains("4 the backend is unavailable here"), "{help}");
}

#[test]
fn a_layer_too_slow_for_the_simulator_is_refused_naming_the_flags() {
    // The Mixtral preset on the CPU simulator: about 3 TFLOP twice (forward and oracle) and
    // 12 GiB; refused before any weight is generated, so at once.
    let start = Instant::now();
    let o = flashdmoe(&["run", "--preset", "mixtral-8x7b"]);
    assert_exit(&o, 2);
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(out.contains("estimate: about ") && out.contains("host memory about "), "{out}");
    assert!(!out.contains("phases:"), "nothing may run: {out}");
    assert!(err.starts_with("error: refusing to run: the simulator would need about "), "{err}");
    assert!(err.contains("over --max-sim-seconds 300"), "{err}");
    assert!(err.contains("--allow-slow"), "{err}");
    // The limit is a flag; a small layer under a tiny limit is refused too.
    let o = flashdmoe(&["run", "--max-sim-seconds", "0.000001"]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("over --max-sim-seconds 0.000001"), "{}", stderr(&o));
    let o = flashdmoe(&["run", "--max-sim-seconds", "0"]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("--max-sim-seconds 0 must be > 0"), "{}", stderr(&o));
    // The simulator's limits are the simulator's.
    let o = flashdmoe(&["run", "--backend", "cuda", "--allow-slow"]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("apply to --backend sim only"), "{}", stderr(&o));
}

/// `flashdmoe ARGS` under a 4 GiB address-space limit (`ulimit -v`), so that every machine
/// has the same small memory whatever it has installed.
fn flashdmoe_in_4_gib(args: &[&str]) -> std::process::Output {
    std::process::Command::new("sh")
        .args(["-c", "ulimit -v 4194304 && exec \"$0\" \"$@\"", env!("CARGO_BIN_EXE_flashdmoe")])
        .args(args)
        .output()
        .expect("sh runs")
}

#[test]
fn a_layer_too_large_for_host_memory_is_refused_never_aborted() {
    // Issue 16's command line: a million experts pass the per-rank device limit, but their f32
    // weights alone are 32.8 GB on the host. Refused from the estimate, at once, exit 2.
    let issue = ["run", "--experts", "1000000", "--tokens", "8", "--hidden", "64", "--inter", "64"];
    let start = Instant::now();
    let o = flashdmoe_in_4_gib(&issue);
    assert_exit(&o, 2);
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(out.contains("1000000 experts") && out.contains("host memory about "), "{out}");
    assert!(!out.contains("phases:"), "nothing may run: {out}");
    assert!(
        err.starts_with("error: refusing to run: the simulator would need about ")
            && err.contains(" GiB of host memory for this layer, more than the ")
            && err.contains(" available"),
        "{err}"
    );
    // Forced past the estimate, the allocation itself is refused: a typed error naming the
    // tensor and its size, the same exit status, no abort (SIGABRT would have no code).
    let forced = [&issue[..], &["--allow-slow"]].concat();
    let start = Instant::now();
    let o = flashdmoe_in_4_gib(&forced);
    assert_exit(&o, 2);
    assert!(start.elapsed() < Duration::from_secs(20), "took {:?}", start.elapsed());
    let err = stderr(&o);
    assert!(
        err.starts_with(
            "error: cannot allocate 15.26 GiB of host memory for the up projection weights"
        ),
        "{err}"
    );
    // The exit status is documented.
    let help = stdout(&flashdmoe(&["--help"]));
    assert!(help.contains("a layer too large for this machine's memory"), "{help}");
}

#[test]
fn a_tiny_timeout_fails_fast_naming_the_simulators_deadline() {
    // A forward of seconds (2 x 1024 tokens, H = I = 2048) with a 1 us deadline: the first
    // microsecond without progress anywhere (any tile takes longer) ends the forward. Before,
    // a timed-out role left the others running, so it failed only after most of the forward.
    let o = flashdmoe(&[
        "run",
        "--tokens",
        "1024",
        "--hidden",
        "2048",
        "--inter",
        "2048",
        "--timeout",
        "0.000001",
    ]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(
        err.starts_with(
            "error: timeout: the simulator's deadline expired (--timeout 0.000001 s without progress): rank "
        ),
        "{err}"
    );
    assert!(err.contains("timed out waiting for"), "{err}");
    assert!(err.contains("raise --timeout if the layer is merely slow"), "{err}");
    let out = stdout(&o);
    let estimated = seconds_after(line(&out, "estimate:"), "1 forward ")
        .expect("the estimate names the forward's time");
    let ran = seconds_after(line(&out, "phases:"), "forwards ")
        .expect("the phases line names the forwards' time");
    assert!(estimated >= 5.0, "the layer must be slow enough to tell: {out}");
    assert!(ran < 3.0, "a 1 us deadline took {ran} s to fire:\n{out}");
}

#[test]
fn a_slow_forward_is_not_a_timeout() {
    // One rank: its subscriber waits for the first return signal while the processors compute
    // every GEMM0 tile first (half a second or more), over the 0.25 s timeout. Progress of any
    // role counts.
    let o = flashdmoe(&[
        "run",
        "--world",
        "1",
        "--tokens",
        "256",
        "--hidden",
        "2048",
        "--inter",
        "1024",
        "--timeout",
        "0.25",
    ]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("verify: PASS: 256/256 rows checked"), "{}", stdout(&o));
}

/// The first line of `text` starting with `prefix` (empty if none).
fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines().find(|l| l.starts_with(prefix)).unwrap_or("")
}

/// The seconds printed right after `label` (`1.234 s`, or `2.5 min`).
fn seconds_after(text: &str, label: &str) -> Option<f64> {
    let rest = &text[text.find(label)? + label.len()..];
    let mut words = rest.split_whitespace();
    let value: f64 = words.next()?.parse().ok()?;
    match words.next()?.trim_end_matches([',', ';', ')']) {
        "s" => Some(value),
        "min" => Some(value * 60.0),
        "h" => Some(value * 3600.0),
        _ => None,
    }
}

#[test]
fn trace_is_written_as_chrome_json_and_conforms() {
    let path =
        std::env::temp_dir().join(format!("flashdmoe-cli-trace-{}.json", std::process::id()));
    let o = flashdmoe(&["run", "--trace", path.to_str().expect("utf-8 temp path")]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("task events written to"), "{out}");
    assert!(out.contains("conforms to the task graph"), "{out}");
    // Where the time went: each kind's count and durations, and the gaps between tasks.
    let times = out.lines().find(|l| l.starts_with("task times: ")).expect("a task times line");
    for part in ["gemm0 256 x median ", "gemm1 128 x median ", "combine 64 x median "] {
        assert!(times.contains(part), "{times}");
    }
    assert!(times.contains("median gap between a processor's tasks: "), "{times}");
    // And by the kind of task after the gap (trace::gap_times): GEMM1 tasks follow others.
    assert!(times.contains(" (before ") && times.contains("gemm1 n="), "{times}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("trace file")).expect("JSON");
    let events = json["traceEvents"].as_array().expect("traceEvents array");
    // 448 tasks of the default layer (gemm0 256, gemm1 128, combine 64) as complete events.
    assert_eq!(events.iter().filter(|e| e["ph"] == "X").count(), 448);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn trace_to_an_unwritable_path_fails_cleanly() {
    let o = flashdmoe(&["run", "--trace", "/nonexistent-dir/trace.json"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("cannot write /nonexistent-dir/trace.json"), "{}", stderr(&o));
}
