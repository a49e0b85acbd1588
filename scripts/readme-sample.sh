#!/usr/bin/env bash
# Regenerates the sample output in README.md ("Run" section, the block between the
# `readme-sample` markers) from what `flashdmoe run` prints now, built in release mode as the
# README says. tests/readme_sample.rs fails when the block and the command disagree on any line
# but the machine-dependent ones (estimate, times).
set -euo pipefail
cd "$(dirname "$0")/.."

sample="$(mktemp)"
trap 'rm -f "$sample"' EXIT
cargo run --release --quiet -- run >"$sample"

awk -v sample="$sample" '
    /^<!-- readme-sample: begin/ {
        print
        print "```text"
        while ((getline line < sample) > 0) print line
        print "```"
        skipping = 1
        found = 1
        next
    }
    /^<!-- readme-sample: end/ { skipping = 0 }
    !skipping { print }
    END { if (!found) { print "readme-sample: no begin marker in README.md" > "/dev/stderr"; exit 1 } }
' README.md >README.md.new
mv README.md.new README.md
echo "readme-sample: README.md updated from 'flashdmoe run'" >&2
