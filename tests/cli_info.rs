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
    assert!(out.contains("the cuda backend refuses them until its kernel has them"), "{out}");
    assert!(out.contains("sim   available"), "{out}");
    assert!(out.contains("cuda  "), "{out}");
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
