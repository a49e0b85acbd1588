//! Multi-process tests: the test binary re-executes itself as ranks 1.. (the environment
//! variable [`ROLE`] selects [`child_process`]'s part, the torchrun variables its place), and
//! the test thread is rank 0, hosting the store on a listener bound to port 0 (no race). A
//! child reports through its exit status and stderr; a guard kills every child a failing test
//! leaves behind.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::mesh_tests::{fastest_1000_checks, mesh_opts};
use super::tests::{env_of, opts, wait_until};
use super::*;

/// Selects a child's part; unset in a normal test run.
const ROLE: &str = "FLASHDMOE_RDZV_TEST_ROLE";
const FINGERPRINT: &[u8] = b"layer config hash";
const VICTIM: usize = 2;
/// Long enough for a child to start on a loaded machine.
const MISSING_TIMEOUT: Duration = Duration::from_secs(2);

/// A child process's part; does nothing unless [`ROLE`] is set.
#[test]
fn child_process() {
    let Ok(role) = std::env::var(ROLE) else { return };
    let code = match child(&role) {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("child {role}: {message}");
            1
        }
    };
    std::process::exit(code);
}

fn child(role: &str) -> Result<(), String> {
    let env = Env::from_env().map_err(|e| e.to_string())?;
    if role == "missing" {
        // Rank 2 never starts: rank 0 tells this rank so, within the deadline.
        let err = Store::connect(&env, &opts(MISSING_TIMEOUT)).unwrap_err();
        return match err {
            RendezvousError::Timeout { op: Op::Connect, missing, .. } if missing == [2] => Ok(()),
            other => Err(format!("expected a timeout naming rank 2, got: {other}")),
        };
    }
    let mut store =
        Store::connect(&env, &opts(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let mesh = join(&mut store).map_err(|e| e.to_string())?;
    drop(store);
    match role {
        "clean" => {}
        "victim" => {
            // Killed by rank 0; reaching the end is a failure.
            wait_until(Duration::from_secs(30), || false);
            return Err("never killed".into());
        }
        "survivor" => {
            let start = Instant::now();
            if !wait_until(Duration::from_secs(5), || mesh.check().is_err()) {
                return Err("the victim's death went unnoticed for 5 s".into());
            }
            let gone = mesh.check().unwrap_err();
            if gone.rank != VICTIM {
                return Err(format!(
                    "{gone} (after {:?}), expected rank {VICTIM}",
                    start.elapsed()
                ));
            }
            let fastest = fastest_1000_checks(&mesh);
            if fastest > Duration::from_millis(1) {
                return Err(format!("later checks: 1000 took {fastest:?}"));
            }
        }
        other => return Err(format!("unknown role {other}")),
    }
    mesh.close();
    Ok(())
}

/// What every rank does after joining the store: the fingerprint check, an all-gather, a
/// broadcast, the mesh and a barrier.
fn join(store: &mut Store) -> Result<Liveness, RendezvousError> {
    let rank = store.rank();
    store.exchange_fingerprints(FINGERPRINT)?;
    let all = store.all_gather(format!("rank {rank} pid {}", std::process::id()).as_bytes())?;
    for (r, blob) in all.iter().enumerate() {
        let text = String::from_utf8_lossy(blob);
        let ok = text.starts_with(&format!("rank {r} pid "));
        let ok = ok && (r == rank) == (text.ends_with(&format!(" {}", std::process::id())));
        if !ok {
            let reason = format!("all-gather slot {r} holds {text:?}");
            return Err(RendezvousError::Aborted { rank, reason });
        }
    }
    let id = store.broadcast(if rank == 0 { b"nccl unique id" } else { &[] })?;
    if id != b"nccl unique id" {
        return Err(RendezvousError::Aborted { rank, reason: format!("broadcast gave {id:?}") });
    }
    let mesh = Liveness::start(store, &mesh_opts())?;
    store.barrier()?;
    Ok(mesh)
}

/// The children of a test; kills those still running when dropped.
struct Children(Vec<(usize, Child)>);

impl Children {
    fn spawn(world: usize, port: u16, roles: &[(usize, &str)]) -> Children {
        let exe = std::env::current_exe().unwrap();
        let children = roles.iter().map(|&(rank, role)| {
            let child = Command::new(&exe)
                .args([
                    "--exact",
                    "rendezvous::processes::child_process",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(ROLE, role)
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("LOCAL_WORLD_SIZE", world.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .env_remove("FLASHDMOE_MASTER_PORT")
                .env_remove("TORCHELASTIC_USE_AGENT_STORE")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (rank, child)
        });
        Children(children.collect())
    }

    fn kill(&mut self, rank: usize) {
        let (_, child) = self.0.iter_mut().find(|(r, _)| *r == rank).unwrap();
        child.kill().unwrap(); // SIGKILL
    }

    /// Waits (bounded) for every child but `except` and asserts it succeeded.
    fn expect_success(&mut self, except: Option<usize>) {
        for (rank, child) in self.0.iter_mut().filter(|(r, _)| Some(*r) != except) {
            let status = wait(child, Duration::from_secs(20));
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            assert!(status.is_some_and(|s| s.success()), "rank {rank}: {status:?}\n{stderr}");
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(timeout, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status
}

/// Rank 0 in this process, hosting on a fresh port; `roles` for the others.
fn rank_0(
    world: usize,
    roles: &[(usize, &str)],
    timeout: Duration,
) -> (Result<Store, RendezvousError>, Children) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let children = Children::spawn(world, port, roles);
    (Store::host(listener, &env_of(0, world, port), &opts(timeout)), children)
}

#[test]
fn processes_n2_and_n4_rendezvous_gather_and_leave_cleanly() {
    for n in [2, 4] {
        let roles: Vec<(usize, &str)> = (1..n).map(|r| (r, "clean")).collect();
        let (store, mut children) = rank_0(n, &roles, Duration::from_secs(10));
        let mut store = store.unwrap();
        let mesh = join(&mut store).unwrap();
        drop(store);
        children.expect_success(None);
        let everyone: RankSet = (1..n).collect();
        assert!(
            wait_until(Duration::from_secs(5), || mesh.left() == everyone),
            "{:?}",
            mesh.left()
        );
        assert_eq!(mesh.check(), Ok(()), "a clean exit is not a death");
        assert!(mesh.dead().is_empty());
        mesh.close();
    }
}

#[test]
fn a_killed_process_is_peer_gone_for_every_survivor() {
    let roles = [(1, "survivor"), (VICTIM, "victim"), (3, "survivor")];
    let (store, mut children) = rank_0(4, &roles, Duration::from_secs(10));
    let mut store = store.unwrap();
    let mesh = join(&mut store).unwrap();
    drop(store);
    let killed = Instant::now();
    children.kill(VICTIM);
    assert!(wait_until(Duration::from_secs(5), || mesh.check().is_err()), "unnoticed for 5 s");
    let noticed = killed.elapsed();
    let gone = mesh.check().unwrap_err();
    assert_eq!(gone.rank, VICTIM, "{gone}");
    assert!(matches!(gone.how, Gone::Closed | Gone::Reset), "{gone}");
    children.expect_success(Some(VICTIM));
    // The survivors closed cleanly after noticing: left, not dead; the victim stays dead.
    let survivors = RankSet::from_iter([1, 3]);
    assert!(wait_until(Duration::from_secs(5), || mesh.left() == survivors), "{:?}", mesh.left());
    assert_eq!(mesh.dead(), RankSet::from_iter([VICTIM]));
    assert_eq!(mesh.check(), Err(gone));
    eprintln!("rank {VICTIM} killed: rank 0 noticed after {noticed:?}");
    assert!(noticed < Duration::from_secs(2), "{noticed:?}");
}

#[test]
fn a_process_that_never_starts_is_named_by_every_rank() {
    let timeout = MISSING_TIMEOUT;
    let start = Instant::now();
    let (store, mut children) = rank_0(3, &[(1, "missing")], timeout);
    match store.unwrap_err() {
        RendezvousError::Timeout { op: Op::Connect, missing, .. } => assert_eq!(missing, [2]),
        other => panic!("{other}"),
    }
    assert!(start.elapsed() < timeout + Duration::from_secs(2), "{:?}", start.elapsed());
    children.expect_success(None);
}
