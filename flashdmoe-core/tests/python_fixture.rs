//! The fixture the PyTorch baselines' tests hold themselves to,
//! `bench/baselines/testdata/rust_reference.json`, is what `examples/python_fixture.rs` prints
//! from this crate now: a change to the generator, the router, the capacity rule or the oracle
//! fails here until the fixture is regenerated (and the Python side, tested against it,
//! follows).

#[allow(dead_code)] // its `main`
#[path = "../examples/python_fixture.rs"]
mod python_fixture;

#[test]
fn the_committed_python_fixture_is_current() {
    let path =
        concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/baselines/testdata/rust_reference.json");
    let committed = std::fs::read_to_string(path).expect("the fixture is committed");
    let now = python_fixture::fixture_json();
    if committed != now {
        let line = committed.lines().zip(now.lines()).position(|(a, b)| a != b);
        panic!(
            "{path} is stale (first differing line: {}): regenerate it with\n  \
             cargo run -q -p flashdmoe-core --example python_fixture > bench/baselines/testdata/rust_reference.json\n\
             then run the baselines' tests (python3 -m pytest bench/baselines), which hold the \
             Python generator, router and reference to it",
            line.map_or("a missing or extra line".into(), |l| (l + 1).to_string())
        );
    }
}
