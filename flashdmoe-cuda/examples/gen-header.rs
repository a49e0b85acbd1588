//! Regenerates the generated kernel headers: `flashdmoe-cuda/kernels/fdm_proto.h` from
//! `flashdmoe_proto::c_header()` and `flashdmoe-cuda/kernels/fdm_params.h` from
//! `flashdmoe_cuda::params::params_header()`.
//!
//! Run `cargo run -p flashdmoe-cuda --example gen-header` after changing the protocol crate or
//! the kernel parameters, then commit the headers; unit tests of `flashdmoe-cuda` fail while
//! either is stale.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let headers = [
        ("fdm_proto.h", flashdmoe_proto::c_header()),
        ("fdm_params.h", flashdmoe_cuda::params::params_header()),
        ("fdm_wgmma_ops.h", flashdmoe_cuda::wgmma::ops_header()),
    ];
    for (name, text) in headers {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).is_ok_and(|current| current == text) {
            println!("{} is up to date", path.display());
            continue;
        }
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("gen-header: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
