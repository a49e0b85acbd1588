//! `flashdmoe info` and `--help`, driven through the built binary.

mod common;

use common::{flashdmoe, stdout};

#[test]
fn info_lists_presets_and_backends() {
    let o = flashdmoe(&["info"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    assert!(out.contains("presets"), "{out}");
    assert!(out.contains("mixtral-8x7b"), "{out}");
    // The real models with their features, and the parts the CUDA kernel runs.
    assert!(out.contains("qwen1.5-moe-a2.7b-routed"), "{out}");
    assert!(
        out.contains("  gpt-oss-20b  ")
            && out.contains("swiglu-oss + bias, topk-softmax router + bias, bf16"),
        "{out}"
    );
    assert!(out.contains("shared experts run on both backends"), "{out}");
    assert!(out.contains("sim   available"), "{out}");
    assert!(out.contains("cuda  "), "{out}");
}

#[test]
fn info_gives_each_presets_weights_per_rank_and_of_the_whole_layer() {
    let o = flashdmoe(&["info"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    assert!(out.contains("each rank holds the router and its own experts"), "{out}");
    // Mixtral 8x7B on its preset's world: each rank holds 1 of the 8 experts of 3 x 4096 x
    // 14336 bf16 (336 MiB) and the 64 KiB router.
    let lines: Vec<&str> = out.lines().collect();
    let at = lines.iter().position(|l| l.starts_with("  mixtral-8x7b ")).expect(&out);
    let weights = lines[at + 1].trim();
    assert!(weights.starts_with("weights per rank: "), "{weights}");
    assert!(weights.contains(" of 8 experts); whole layer: 2.6 GiB"), "{weights}");
    assert!(out.contains("(router and shared experts "), "{out}");
}

#[test]
fn info_with_layer_flags_gives_its_memory() {
    let o = flashdmoe(&["info", "--preset", "mixtral-8x7b", "--world", "8"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    let layer = &out[out.find("layer (from the flags):").expect(&out)..];
    assert!(layer.contains("config: world 8 x "), "{layer}");
    assert!(
        layer.contains(
            "weights per rank: 336.1 MiB (router 64.0 KiB + 1 of 8 experts); whole layer: 2.6 GiB"
        ),
        "{layer}"
    );
    assert!(layer.contains(" for all 8 ranks in one process"), "{layer}");
    // The kernel an H200 would run for one rank (the label `flashdmoe run` prints as `kernel:`).
    assert!(layer.contains("kernel on an H200: bf16-swiglu-H4096-I14336-E8-k2-"), "{layer}");
    assert!(layer.contains("--tile BMxBN[sS] runs another"), "{layer}");
    // Its GEMM0 weights (224 MiB an expert) go in column groups: paired by default.
    assert!(layer.contains("-pairs (tried first") && layer.contains("--no-pairs"), "{layer}");
    // Qwen3's fit in L2: unpaired.
    let o = flashdmoe(&["info", "--preset", "qwen3-30b-a3b"]);
    let out = stdout(&o);
    assert!(out.contains("kernel on an H200: ") && !out.contains("-pairs"), "{out}");
    // The same layer on 2 ranks holds 4 experts per rank.
    let o = flashdmoe(&["info", "--preset", "mixtral-8x7b", "--world", "2"]);
    assert!(stdout(&o).contains("(router 64.0 KiB + 4 of 8 experts)"));
    // A layer described wrongly is a usage error, before anything is printed.
    let o = flashdmoe(&["info", "--hidden", "100"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stdout(&o).is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("hidden"));
}

#[test]
fn help_documents_commands_flags_and_exit_codes() {
    let o = flashdmoe(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    for needle in ["run", "info", "Exit codes"] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    let o = flashdmoe(&["run", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    for flag in [
        "--preset",
        "--config",
        "--world",
        "--tokens",
        "--hidden",
        "--inter",
        "--experts",
        "--top-k",
        "--activation",
        "--bias",
        "--dtype",
        "--capacity-factor",
        "--dropless",
        "--no-renormalize",
        "--placement",
        "--backend",
        "--seed",
        "--iterations",
        "--timeout",
        "--processors",
        "--subscribers",
        "--ranks-per-gpu",
        "--dry-run",
    ] {
        assert!(out.contains(flag), "run --help lacks {flag}:\n{out}");
    }
}

#[test]
fn no_command_is_a_usage_error() {
    let o = flashdmoe(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Usage"));
}
