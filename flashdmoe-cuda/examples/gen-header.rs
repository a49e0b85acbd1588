//! Regenerates `flashdmoe-cuda/kernels/fdm_proto.h` from `flashdmoe_proto::c_header()`.
//!
//! Run `cargo run -p flashdmoe-cuda --example gen-header` after changing the protocol crate,
//! then commit the header; a unit test of `flashdmoe-cuda` fails while it is stale.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels").join("fdm_proto.h");
    let header = flashdmoe_proto::c_header();
    if std::fs::read_to_string(&path).is_ok_and(|current| current == header) {
        println!("{} is up to date", path.display());
        return ExitCode::SUCCESS;
    }
    if let Err(e) = std::fs::write(&path, header) {
        eprintln!("gen-header: cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    println!("wrote {}", path.display());
    ExitCode::SUCCESS
}
