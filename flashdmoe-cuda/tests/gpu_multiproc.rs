//! One process per GPU over NCCL (issue 14 items 5-6), as two processes of this test binary:
//! the parent test spawns itself twice with the launcher's environment; each child joins the
//! group, builds its part of a small layer, runs forwards and checks its rows against the
//! oracle. Prints `skipped: ...` and passes without 2 GPUs or without NCCL
//! (`eval "$(scripts/install-nccl.sh)"`).

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use flashdmoe_core::oracle::{self, Sample, VerifyOptions};
use flashdmoe_core::{BackendError, ForwardOptions, LayerWeights, MoeConfig, generate_input};
use flashdmoe_cuda::{CudaBackend, CudaOptions, GroupOptions, ProcessGroup, cuda_available, gpus};

/// Set in the children: which scenario to run.
const CHILD: &str = "FDM_MULTIPROC_CHILD";

fn config() -> MoeConfig {
    MoeConfig { world: 2, tokens_per_rank: 128, experts: 8, ..MoeConfig::default() }
}

/// `None` (after printing why) unless two GPUs and NCCL are here.
fn ready() -> Option<()> {
    if let Err(e) = cuda_available() {
        println!("skipped: no GPU ({e})");
        return None;
    }
    let n = gpus().map(|g| g.len()).unwrap_or(0);
    if n < 2 {
        println!("skipped: needs 2 GPUs ({n} here; NCCL refuses two ranks on one GPU)");
        return None;
    }
    if let Err(e) = flashdmoe_cuda::nccl::nccl_version() {
        println!("skipped: {e}");
        return None;
    }
    Some(())
}

/// Runs `scenario` in two children of this binary; returns their outputs (rank order). One
/// pair at a time: two pairs' persistent kernels on the same GPUs would only time-slice.
fn spawn_two(scenario: &str, test: &str) -> Vec<std::process::Output> {
    static ONE_PAIR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_PAIR.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|rank| {
            Command::new(&exe)
                .args(["--exact", test, "--ignored", "--nocapture", "--test-threads=1"])
                .env(CHILD, scenario)
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("LOCAL_RANK", rank.to_string())
                .env("LOCAL_WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .env("NCCL_NVLS_ENABLE", "0")
                .spawn()
                .unwrap()
        })
        .collect();
    children.into_iter().map(|c| c.wait_with_output().unwrap()).collect()
}

#[test]
fn two_processes_build_one_layer_and_match_the_oracle() {
    if ready().is_none() {
        return;
    }
    let outs = spawn_two("oracle", "child");
    for (rank, o) in outs.iter().enumerate() {
        assert!(o.status.success(), "rank {rank}: {:?}", o.status);
    }
}

#[test]
fn a_killed_rank_makes_the_other_return_peer_gone_then_fail_fast() {
    if ready().is_none() {
        return;
    }
    let outs = spawn_two("die", "child");
    // Rank 1 killed itself (SIGKILL); rank 0 checked PeerGone and exited 0.
    assert!(outs[0].status.success(), "rank 0: {:?}", outs[0].status);
    assert!(!outs[1].status.success(), "rank 1 should have died: {:?}", outs[1].status);
}

/// A child process (run by the tests above, never alone).
#[test]
#[ignore = "a child process of the multi-process tests"]
fn child() {
    let Ok(scenario) = std::env::var(CHILD) else { return };
    let config = config();
    let weights = LayerWeights::generate(&config, 7).unwrap();
    let group = ProcessGroup::from_env(&GroupOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    if scenario == "die" && group.rank() == 1 {
        // SAFETY: setting a variable before any other thread of this process reads it.
        unsafe { std::env::set_var(flashdmoe_cuda::layer::TEST_DIE, "rank=1,forward=3") };
    }
    let layer = CudaBackend::new(CudaOptions::default())
        .build_process(&config, &weights, &group)
        .unwrap_or_else(|e| panic!("{e}"));
    let ranks = layer.local_ranks();
    assert_eq!(ranks, group.rank() as u32..group.rank() as u32 + 1);
    let inputs: Vec<_> = ranks.clone().map(|r| generate_input(&config, r, 7).unwrap()).collect();
    let options = ForwardOptions { trace: false, timeout: Duration::from_secs(5) };
    for n in 1..=5 {
        let start = Instant::now();
        match layer.forward_local(&inputs, &options) {
            Ok(outs) => {
                let report = oracle::verify_ranks(
                    &config,
                    &weights,
                    ranks.start,
                    &inputs,
                    &outs,
                    &VerifyOptions { sample: Sample::All, tolerance: None },
                )
                .unwrap();
                println!("rank {}: forward {n}: {report}", group.rank());
                assert!(report.passed());
            }
            Err(e @ BackendError::PeerGone { rank: 1, .. }) if scenario == "die" => {
                let took = start.elapsed();
                println!("rank 0: forward {n} failed after {took:?}: {e}");
                assert!(took < options.timeout + Duration::from_secs(1), "{took:?}");
                let again = Instant::now();
                let e = layer.forward_local(&inputs, &options).unwrap_err();
                assert!(matches!(e, BackendError::PeerGone { rank: 1, .. }), "{e}");
                assert!(again.elapsed() < Duration::from_millis(1), "{:?}", again.elapsed());
                return;
            }
            Err(e) => panic!("rank {}: forward {n}: {e}", group.rank()),
        }
    }
    assert_ne!(scenario, "die", "rank {} never saw rank 1 die", group.rank());
}
