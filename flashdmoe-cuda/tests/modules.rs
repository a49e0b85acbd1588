//! flashdmoe-cuda's modules import only downward: no cycle in its module graph (the checker is
//! shared by every crate and tested in flashdmoe-core's `tests/modules.rs`).

#[path = "../../tests/support/module_graph.rs"]
mod module_graph;

#[test]
fn modules_import_only_downward() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    module_graph::assert_acyclic(&src, 1);
}
