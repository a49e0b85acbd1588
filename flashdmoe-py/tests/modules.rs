//! The extension's modules import only downward: `engine` on `errors`, `spec` and `tensor`;
//! `errors` on `tensor`; `spec` and `tensor` on nothing of this crate.

#[path = "../../tests/support/module_graph.rs"]
mod module_graph;

#[test]
fn extension_modules_import_only_downward() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    module_graph::assert_acyclic(&src, 1);
}
