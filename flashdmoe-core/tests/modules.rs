//! core's modules import only downward (no cycle in the module graph), and the checker that
//! says so finds a cycle when there is one.

#[path = "../../tests/support/module_graph.rs"]
mod module_graph;

use std::path::Path;

use module_graph::{ModuleGraph, assert_acyclic};

#[test]
fn core_modules_import_only_downward() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    // Top-level modules, then their children too (e.g. `config::file` and `config::presets`).
    assert_acyclic(&src, 1);
    assert_acyclic(&src, 2);
}

/// Writes a small crate's sources under a fresh temporary directory.
fn fake_crate(name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("flashdmoe-modules-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

/// The checker finds a cycle made of a braced `use` and an inline path, resolves `super::`
/// and the root's re-exports, and ignores comments, strings and test-only code.
#[test]
fn checker_finds_cycles_and_ignores_what_is_not_code() {
    let dir = fake_crate(
        "cycle",
        &[
            ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\npub mod d;\npub use b::Thing;\n"),
            ("a.rs", "use crate::{c, b::Thing};\n// use crate::d::Nothing;\n"),
            ("b.rs", "pub struct Thing;\npub fn f() -> u32 { crate::a::g() }\n"),
            (
                "c.rs",
                "pub const S: &str = \"crate::a::X\";\n#[cfg(test)]\nmod tests {\n    \
                 use crate::a;\n    fn f() { let _ = '{'; }\n}\n",
            ),
            ("d/mod.rs", "mod e;\n#[cfg(all(test, loom))]\nmod loom_tests;\n"),
            ("d/e.rs", "use super::super::c::S;\nuse super::Private;\n"),
            ("d/loom_tests.rs", "use crate::a::Y;\n"),
        ],
    );
    let graph = ModuleGraph::read(&dir, 1);
    let edges: Vec<(String, String)> = graph
        .edges
        .iter()
        .flat_map(|(from, to)| to.keys().map(move |to| (from.clone(), to.clone())))
        .collect();
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(edges, [pair("a", "b"), pair("a", "c"), pair("b", "a"), pair("d", "c")]);
    assert_eq!(graph.cycles(), [vec!["a".to_string(), "b".to_string()]]);
    let described = graph.describe(&graph.cycles());
    assert!(described.contains("a -> b  (a.rs:1)"), "{described}");
    assert!(described.contains("b -> a  (b.rs:2)"), "{described}");
    let caught = std::panic::catch_unwind(|| assert_acyclic(&dir, 1));
    assert!(caught.is_err(), "assert_acyclic must reject the cycle");
    // At depth 2 the child `d::e` is its own node; its edge to the parent `d` is structural.
    let deeper = ModuleGraph::read(&dir, 2);
    assert!(deeper.modules.contains("d::e"));
    assert!(deeper.edges["d::e"].contains_key("c") && !deeper.edges["d::e"].contains_key("d"));
    std::fs::remove_dir_all(&dir).unwrap();
}
