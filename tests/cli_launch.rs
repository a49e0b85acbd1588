//! `flashdmoe launch`, driven through the built binary with the simulator (every process runs
//! the whole simulated world: this checks the launcher, not NCCL) and, on a machine without a
//! GPU, the CUDA backend's refusal in every process.

mod common;

use common::{assert_exit, flashdmoe, stderr, stdout};

const SMALL: [&str; 10] =
    ["--world", "2", "--tokens", "8", "--hidden", "64", "--inter", "64", "--experts", "4"];

#[test]
fn every_process_runs_with_its_rank_in_front_of_its_lines() {
    let mut args = vec!["launch", "--nproc", "2", "run", "--backend", "sim"];
    args.extend(SMALL);
    let o = flashdmoe(&args);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("launch: 2 processes of `run --backend sim"), "{out}");
    assert!(out.contains("MASTER_ADDR=127.0.0.1 MASTER_PORT="), "{out}");
    for rank in 0..2 {
        assert!(out.contains(&format!("[rank {rank}] verify: PASS")), "rank {rank}:\n{out}");
        assert!(out.contains(&format!("[rank {rank}] note: RANK is set")), "rank {rank}:\n{out}");
    }
}

#[test]
fn a_failing_rank_is_named_and_its_status_kept() {
    let o = flashdmoe(&["launch", "--nproc", "2", "--grace", "5", "run", "--hidden", "65"]);
    assert_exit(&o, 2);
    let err = stderr(&o);
    assert!(err.contains("failed (exit status 2)"), "{err}");
    assert!(err.contains("error: rank ") && err.contains(" failed (exit status 2)"), "{err}");
}

#[test]
fn only_run_and_bench_are_launched_and_die_is_checked() {
    let o = flashdmoe(&["launch", "--nproc", "2", "info"]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("not \"info\""), "{}", stderr(&o));
    let o = flashdmoe(&["launch", "--nproc", "2", "--die", "rank=1", "run"]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("rank=R,forward=F"), "{}", stderr(&o));
}

#[test]
fn without_a_gpu_every_cuda_process_is_unavailable_and_named() {
    if flashdmoe::cuda::cuda_available().is_ok() {
        println!("skipped: a GPU is present (this checks the no-GPU path)");
        return;
    }
    let mut args = vec!["launch", "--nproc", "2", "--grace", "5", "run", "--backend", "cuda"];
    args.extend(SMALL);
    let o = flashdmoe(&args);
    assert_exit(&o, 4);
    let err = stderr(&o);
    assert!(err.contains("error: rank ") && err.contains("(exit status 4)"), "{err}");
}

#[test]
fn without_nccl_on_the_loader_path_info_says_how_to_get_it() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_flashdmoe"))
        .arg("info")
        .env("LD_LIBRARY_PATH", "")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let out = stdout(&o);
    if out.contains("NCCL 2.") {
        println!("skipped: NCCL is on the default loader path here");
        return;
    }
    assert!(out.contains("NCCL not usable"), "{out}");
    assert!(out.contains("scripts/install-nccl.sh"), "{out}");
}

#[test]
fn bench_as_process_ranks_runs_one_cuda_case_and_refuses_the_rest_by_name() {
    for (args, needle) in [
        (&["bench", "--backend", "sim", "--preset", "paper-t4096-e32"][..], "--backend cuda only"),
        (&["bench", "--backend", "cuda", "--grid", "small"][..], "runs one case"),
        (
            &["bench", "--backend", "cuda", "--preset", "paper-t4096-e32", "paper-t4096-e8"][..],
            "one case, not 2",
        ),
    ] {
        let mut line = vec!["launch", "--nproc", "2", "--grace", "5"];
        line.extend(args);
        let o = flashdmoe(&line);
        assert_exit(&o, 2);
        let err = stderr(&o);
        for rank in 0..2 {
            assert!(err.contains(&format!("[rank {rank}] error: ")), "{args:?}: {err}");
        }
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn without_a_gpu_a_bench_process_is_unavailable_before_joining() {
    if flashdmoe::cuda::cuda_available().is_ok() {
        println!("skipped: a GPU is present (this checks the no-GPU path)");
        return;
    }
    let o = flashdmoe(&[
        "launch",
        "--nproc",
        "2",
        "--grace",
        "5",
        "bench",
        "--backend",
        "cuda",
        "--preset",
        "paper-t4096-e32",
    ]);
    assert_exit(&o, 4);
    assert!(stderr(&o).contains("(exit status 4)"), "{}", stderr(&o));
}

#[test]
fn back_to_back_is_a_cuda_flag() {
    let mut args = vec!["run", "--backend", "sim", "--back-to-back", "5"];
    args.extend(SMALL);
    let o = flashdmoe(&args);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("--back-to-back applies to --backend cuda only"), "{}", stderr(&o));
    let o = flashdmoe(&["run", "--backend", "cuda", "--back-to-back", "0"]);
    assert_exit(&o, 2);
}
