//! The README's sample output is what `flashdmoe run` prints.
//!
//! Compared line by line, except the lines whose numbers depend on the machine and the moment
//! (`estimate:`, `time:`, `phases:`): routing, tasks, traffic and the verification (down to the
//! max error and the worst token) are deterministic. `scripts/readme-sample.sh` regenerates the
//! block.

mod common;

use common::{assert_exit, flashdmoe, stdout};

/// Lines whose content depends on the machine or the moment.
const UNSTABLE: [&str; 3] = ["estimate:", "time:", "phases:"];

/// The fenced block between the `readme-sample` markers of README.md.
fn readme_sample() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md is readable");
    let begin = readme
        .find("<!-- readme-sample: begin")
        .expect("README.md has a `<!-- readme-sample: begin` marker");
    let end = readme[begin..]
        .find("<!-- readme-sample: end")
        .map(|e| begin + e)
        .expect("README.md has a `<!-- readme-sample: end` marker after the begin marker");
    let block = &readme[begin..end];
    let open = block.find("```text\n").expect("a ```text fence after the begin marker") + 8;
    let close = block.rfind("```").filter(|&c| c >= open).expect("a closing fence");
    block[open..close].to_string()
}

fn stable(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !UNSTABLE.iter().any(|p| l.starts_with(p))).collect()
}

#[test]
fn readme_sample_is_what_flashdmoe_run_prints() {
    let o = flashdmoe(&["run"]);
    assert_exit(&o, 0);
    let printed = stdout(&o);
    let sample = readme_sample();
    // Every kind of line is in the sample, the unstable ones too (they are only not compared).
    for prefix in UNSTABLE.iter().chain(&["config:", "routing:", "tasks:", "traffic:", "verify:"]) {
        assert!(
            sample.lines().any(|l| l.starts_with(prefix)),
            "README.md's sample has no {prefix:?} line; regenerate it with scripts/readme-sample.sh"
        );
    }
    let (want, got) = (stable(&sample), stable(&printed));
    if want != got {
        let first =
            want.iter().zip(&got).position(|(a, b)| a != b).unwrap_or(want.len().min(got.len()));
        panic!(
            "README.md's sample output is stale: line {} differs\n  README:      {:?}\n  flashdmoe run: {:?}\n\
             regenerate it with scripts/readme-sample.sh (it runs `cargo run --release -- run` and \
             rewrites the block between the readme-sample markers)\n\nflashdmoe run printed:\n{printed}",
            first + 1,
            want.get(first).unwrap_or(&"<end>"),
            got.get(first).unwrap_or(&"<end>"),
        );
    }
}
