//! `docs/architecture.md`'s code map names every Rust module and kernel header there is.
//!
//! The map (the fenced block under "### Crates and modules") gives each source folder a line
//! that starts with the folder's path, followed by its modules' names; continuation lines are
//! indented. A module file (`name.rs`, or a folder `name/` with a `mod.rs` or beside a
//! `name.rs`) or a kernel source (`name.cuh`, `name.cu`, `name.h`) that the folder's entry does
//! not name as a word fails this test, so the map cannot fall behind the code unnoticed.

use std::collections::BTreeMap;
use std::path::Path;

/// Entry (path prefix -> text) for each source folder of the code map.
fn code_map() -> BTreeMap<String, String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/architecture.md"))
        .expect("docs/architecture.md is readable");
    let section = doc.find("### Crates and modules").expect("a `### Crates and modules` section");
    let open = section + doc[section..].find("```\n").expect("a fenced code map") + 4;
    let close = open + doc[open..].find("```").expect("the code map's closing fence");
    let mut entries = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in doc[open..close].lines() {
        if line.starts_with(' ') {
            let key = current.as_ref().expect("a continuation line after an entry");
            entries.entry(key.clone()).and_modify(|t: &mut String| t.push_str(line));
        } else if let Some(path) = line.split_whitespace().next() {
            current = Some(path.to_owned());
            entries.insert(path.to_owned(), line[path.len()..].to_owned());
        }
    }
    entries
}

/// Whether `text` holds `name` as a whole word (letters, digits, `_`, `-` and `.` bind).
fn names(text: &str, name: &str) -> bool {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '.')).any(|w| {
        w == name || w.strip_suffix(".rs") == Some(name) || w.strip_suffix('/') == Some(name)
    })
}

/// Module names under a Rust source folder (recursively), or kernel file names.
fn modules(dir: &Path, kernels: bool, out: &mut Vec<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("a source folder").flatten().collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let path = e.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !kernels && name != "bin" {
                out.push(name.clone());
                modules(&path, kernels, out);
            }
        } else if kernels {
            if [".cuh", ".cu", ".h"].iter().any(|x| name.ends_with(x)) {
                out.push(name);
            }
        } else if let Some(stem) = name.strip_suffix(".rs")
            && !["lib", "main", "mod"].contains(&stem)
        {
            out.push(stem.to_owned());
        }
    }
}

#[test]
fn the_code_map_names_every_module_and_kernel_header() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let map = code_map();
    let folders = [
        ("flashdmoe-proto/src", false),
        ("flashdmoe-core/src", false),
        ("flashdmoe-sim/src", false),
        ("flashdmoe-cuda/src", false),
        ("flashdmoe-cuda/kernels", true),
        ("flashdmoe-bench/src", false),
        ("flashdmoe-py/src", false),
    ];
    let mut missing = Vec::new();
    for (folder, kernels) in folders {
        let text =
            map.get(folder).unwrap_or_else(|| panic!("the code map has no entry for {folder}"));
        let mut found = Vec::new();
        modules(&root.join(folder), kernels, &mut found);
        assert!(!found.is_empty(), "{folder} has no modules: the test reads the wrong place");
        missing.extend(
            found.into_iter().filter(|m| !names(text, m)).map(|m| format!("{folder}: {m}")),
        );
    }
    assert!(
        missing.is_empty(),
        "docs/architecture.md's code map does not name:\n{}",
        missing.join("\n")
    );
}

#[test]
fn a_missing_module_is_noticed() {
    let map = code_map();
    let text = &map["flashdmoe-core/src"];
    assert!(names(text, "oracle") && names(text, "rendezvous"));
    assert!(!names(text, "no_such_module"));
    assert!(!names(text, "ora"), "a word, not a prefix");
}
