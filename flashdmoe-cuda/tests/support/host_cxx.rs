//! Compiles and runs a kernel header's host-side check: the header (plain C++ for host and
//! device), a `main.cpp` and the layer's `FDM_*` defines, through the host C++ compiler.

use std::path::PathBuf;
use std::process::Command;

use flashdmoe_cuda::kernels::Header;
use flashdmoe_cuda::spec::MoeSpec;

/// The host C++ compiler, or `None` (the caller prints its `skipped:` line).
pub fn cxx() -> Option<&'static str> {
    ["c++", "g++", "clang++"]
        .into_iter()
        .find(|cc| Command::new(cc).arg("--version").output().is_ok_and(|o| o.status.success()))
}

/// Writes `header` and `main` (a whole program) into a scratch folder named after `name`,
/// compiles them with `spec`'s defines (`-Wall -Wextra -Werror`), runs the program and returns
/// what it printed. Panics with the compiler's message when it does not compile.
pub fn run(cc: &str, name: &str, header: &Header, spec: &MoeSpec, main: &str) -> String {
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "flashdmoe-host-cxx-{}-{}",
        std::process::id(),
        name.replace(' ', "-")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(header.name), header.text).unwrap();
    std::fs::write(dir.join("main.cpp"), main).unwrap();
    let exe = dir.join("check");
    let mut cmd = Command::new(cc);
    cmd.args(["-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(dir.join("main.cpp"));
    for (define, value) in spec.defines().iter() {
        cmd.arg(match value {
            Some(v) => format!("-D{define}={v}"),
            None => format!("-D{define}"),
        });
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{} does not compile on the host:\n{}",
        header.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(run.status.success(), "{name}: the host check failed");
    String::from_utf8(run.stdout).unwrap()
}
