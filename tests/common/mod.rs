//! Helpers shared by the CLI tests: run the built `flashdmoe` binary and read its output.
#![allow(dead_code)] // each test crate uses its own subset

use std::process::{Command, Output};

/// Runs the built binary with `args`.
pub fn flashdmoe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flashdmoe")).args(args).output().expect("binary runs")
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code, showing both streams on failure.
pub fn assert_exit(o: &Output, code: i32) {
    assert_eq!(o.status.code(), Some(code), "stdout:\n{}\nstderr:\n{}", stdout(o), stderr(o));
}
