//! Store tests with one thread per rank, on 127.0.0.1. Ports: rank 0 hosts on a
//! listener bound to port 0 (no race), except where binding the environment's port is the
//! point. Every wait is bounded; a failed test never hangs.

use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use super::*;

/// The torchrun variables of `rank` in a world of `world` on 127.0.0.1:`port`.
pub(super) fn env_of(rank: usize, world: usize, port: u16) -> Env {
    let vars = [
        ("RANK", rank.to_string()),
        ("WORLD_SIZE", world.to_string()),
        ("LOCAL_RANK", rank.to_string()),
        ("MASTER_ADDR", "127.0.0.1".to_string()),
        ("MASTER_PORT", port.to_string()),
    ];
    Env::from_vars(vars).unwrap()
}

pub(super) fn opts(timeout: Duration) -> StoreOptions {
    StoreOptions { timeout }
}

/// Polls `done` every 2 ms until it holds or `timeout` passes; whether it held.
pub(super) fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > timeout {
            return false;
        }
        thread::sleep(Duration::from_millis(2));
    }
    true
}

/// Runs `body(rank, store result)` for each rank in `ranks` on its own thread, rank 0 hosting
/// on a fresh listener; returns the results by position in `ranks`.
pub(super) fn world<T: Send + 'static>(
    world: usize,
    ranks: &[usize],
    timeout: Duration,
    body: impl Fn(usize, Result<Store, RendezvousError>) -> T + Send + Sync + Copy + 'static,
) -> Vec<T> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut listener = Some(listener);
    let threads: Vec<_> = ranks
        .iter()
        .map(|&rank| {
            let env = env_of(rank, world, port);
            let listener = if rank == 0 { listener.take() } else { None };
            thread::spawn(move || {
                let store = match listener {
                    Some(l) => Store::host(l, &env, &opts(timeout)),
                    None => Store::connect(&env, &opts(timeout)),
                };
                body(rank, store)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn n2_and_n4_fingerprints_all_gather_broadcast_barrier() {
    for n in [2, 4] {
        let ranks: Vec<usize> = (0..n).collect();
        world(n, &ranks, Duration::from_secs(10), move |rank, store| {
            let mut store = store.unwrap();
            assert_eq!((store.rank(), store.world()), (rank, n));
            let fps = store.exchange_fingerprints(b"layer-config").unwrap();
            assert_eq!(fps, vec![b"layer-config".to_vec(); n]);
            let all = store.all_gather(format!("addr of {rank}").as_bytes()).unwrap();
            let expected: Vec<Vec<u8>> =
                (0..n).map(|r| format!("addr of {r}").into_bytes()).collect();
            assert_eq!(all, expected);
            let id = store.broadcast(if rank == 0 { b"unique id" } else { b"ignored" }).unwrap();
            assert_eq!(id, b"unique id");
            store.barrier().unwrap();
            assert_eq!(store.all_gather(&[]).unwrap(), vec![Vec::<u8>::new(); n]);
        });
    }
}

#[test]
fn a_fingerprint_mismatch_names_the_lowest_differing_rank_on_every_rank() {
    let errors = world(4, &[0, 1, 2, 3], Duration::from_secs(10), |rank, store| {
        let fingerprint = if rank >= 2 { [rank as u8; 4] } else { [0xaa; 4] };
        store.unwrap().exchange_fingerprints(&fingerprint).unwrap_err()
    });
    for err in errors {
        let expected = RendezvousError::FingerprintMismatch {
            rank: 2,
            expected: "aaaaaaaa".into(),
            found: "02020202".into(),
        };
        assert_eq!(err, expected);
    }
}

/// A rank that never starts: every rank that did reports it, within the deadline.
#[test]
fn a_missing_rank_times_out_naming_it_on_every_rank() {
    let timeout = Duration::from_millis(1000);
    let start = Instant::now();
    let errors = world(4, &[0, 1, 3], timeout, |_, store| store.unwrap_err());
    let took = start.elapsed();
    for err in errors {
        match err {
            RendezvousError::Timeout { op: Op::Connect, missing, .. } => assert_eq!(missing, [2]),
            other => panic!("{other}"),
        }
    }
    assert!(took >= timeout && took < timeout + Duration::from_secs(3), "{took:?}");
}

/// A rank that joins but never calls the collective the others are in.
#[test]
fn a_rank_absent_from_an_all_gather_is_named() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let timeout = opts(Duration::from_millis(800));
    let (t0, t1, t2) = (timeout.clone(), timeout.clone(), timeout);
    let root =
        thread::spawn(move || Store::host(listener, &env_of(0, 3, port), &t0)?.all_gather(b"0"));
    let one = thread::spawn(move || Store::connect(&env_of(1, 3, port), &t1)?.all_gather(b"1"));
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let two = thread::spawn(move || {
        let _joined_but_idle = Store::connect(&env_of(2, 3, port), &t2).unwrap();
        wait.recv_timeout(Duration::from_secs(10)).ok()
    });
    let absent = [root.join().unwrap(), one.join().unwrap()];
    done.send(()).unwrap();
    two.join().unwrap();
    for result in absent {
        match result.unwrap_err() {
            RendezvousError::Timeout { op: Op::AllGather, missing, .. } => assert_eq!(missing, [2]),
            other => panic!("{other}"),
        }
    }
}

#[test]
fn no_rank_0_times_out_naming_rank_0() {
    let port = {
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        closed.local_addr().unwrap().port()
    };
    let start = Instant::now();
    let err = Store::connect(&env_of(1, 2, port), &opts(Duration::from_millis(500))).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(
        matches!(&err, RendezvousError::Timeout { op: Op::Connect, missing, .. } if missing == &[0])
    );
    assert!(err.to_string().contains("FLASHDMOE_MASTER_PORT"), "{err}");
}

/// Rank 0 binding the environment's port, after the others started retrying. The port is
/// picked by binding port 0 and releasing it; if another process takes it in between, the
/// bind error says so and the scenario is retried on a new port.
#[test]
fn rank_0_started_late_binds_the_env_port_and_is_waited_for() {
    for _attempt in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let others: Vec<_> = (1..3)
            .map(|rank| {
                thread::spawn(move || {
                    let mut store =
                        Store::connect(&env_of(rank, 3, port), &opts(Duration::from_secs(10)))?;
                    store.all_gather(&[rank as u8])
                })
            })
            .collect();
        // The scenario, not a synchronisation: the others are retrying meanwhile.
        thread::sleep(Duration::from_millis(150));
        match Store::connect(&env_of(0, 3, port), &opts(Duration::from_secs(10))) {
            Ok(mut root) => {
                assert_eq!(root.all_gather(&[0]).unwrap(), [[0], [1], [2]]);
                for t in others {
                    assert_eq!(t.join().unwrap().unwrap(), [[0], [1], [2]]);
                }
                return;
            }
            Err(RendezvousError::Bind { .. }) => {
                // Taken meanwhile: the others time out against whoever holds it; move on.
                drop(others);
                continue;
            }
            Err(other) => panic!("{other}"),
        }
    }
    panic!("no free port in five attempts");
}

#[test]
fn a_port_in_use_names_torchruns_agent_store() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let vars = |agent: &str| {
        let port = port.to_string();
        let vars =
            [("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1")];
        let more = [("MASTER_PORT", port.as_str()), ("TORCHELASTIC_USE_AGENT_STORE", agent)];
        Env::from_vars(vars.into_iter().chain(more)).unwrap()
    };
    let short = opts(Duration::from_millis(100));
    let err = Store::connect(&vars("True"), &short).unwrap_err();
    assert!(matches!(err, RendezvousError::Bind { .. }), "{err}");
    assert!(err.to_string().contains("TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1"), "{err}");
    let err = Store::connect(&vars("False"), &short).unwrap_err();
    assert!(err.to_string().ends_with("set FLASHDMOE_MASTER_PORT to a free port"), "{err}");
}

#[test]
fn duplicate_ranks_and_world_mismatches_are_refused_on_every_rank() {
    // Rank 1 twice (rank 2 never comes): rank 0 refuses the second and tells both.
    let errors = world(3, &[0, 1, 1], Duration::from_secs(5), |_, store| store.unwrap_err());
    assert!(matches!(errors[0], RendezvousError::DuplicateRank { rank: 1, .. }), "{}", errors[0]);
    for err in &errors[1..] {
        assert!(
            matches!(err, RendezvousError::Aborted { rank: 0, reason } if reason.contains("claim rank 1")),
            "{err}"
        );
    }
    // A rank told the world has 3 processes, rank 0 told 2.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let t =
        thread::spawn(move || Store::connect(&env_of(1, 3, port), &opts(Duration::from_secs(5))));
    let err =
        Store::host(listener, &env_of(0, 2, port), &opts(Duration::from_secs(5))).unwrap_err();
    let expected = RendezvousError::WorldMismatch { rank: 1, expected: 2, found: 3 };
    assert_eq!(err, expected);
    let err = t.join().unwrap().unwrap_err();
    assert!(
        matches!(&err, RendezvousError::Aborted { reason, .. } if reason.contains("says the world has 3")),
        "{err}"
    );
}

#[test]
fn ranks_out_of_step_fail_and_the_store_stays_poisoned() {
    let errors = world(2, &[0, 1], Duration::from_secs(5), |rank, store| {
        let mut store = store.unwrap();
        let first = if rank == 0 {
            store.all_gather(b"x").map(drop)
        } else {
            store.broadcast(b"").map(drop)
        };
        let err = first.unwrap_err();
        assert_eq!(store.barrier().unwrap_err(), err, "poisoned with the first error");
        err
    });
    let expected = RendezvousError::OutOfStep {
        rank: 1,
        expected: "all-gather #1".into(),
        found: "broadcast #1".into(),
    };
    assert_eq!(errors[0], expected);
    assert!(
        matches!(&errors[1], RendezvousError::Aborted { rank: 0, reason } if reason.contains("out of step"))
    );
}

/// Rank 0 gives up (it cannot produce what it should broadcast), or rank 2 does and rank 0
/// passes it on: every other rank gets the reason.
#[test]
fn an_abort_reaches_every_rank_with_its_reason() {
    for (aborter, reason) in [(0, "ncclGetUniqueId failed"), (2, "no GPU")] {
        let errors = world(3, &[0, 1, 2], Duration::from_secs(5), move |rank, store| {
            let mut store = store.unwrap();
            if rank == aborter {
                store.abort(reason);
                return None;
            }
            Some(store.broadcast(&[]).unwrap_err())
        });
        for err in errors.into_iter().flatten() {
            assert_eq!(err, RendezvousError::Aborted { rank: aborter, reason: reason.into() });
        }
    }
}

#[test]
fn a_foreign_server_on_the_port_is_named() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().unwrap();
        let mut hello = [0u8; 12];
        s.read_exact(&mut hello).unwrap();
        s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").unwrap();
    });
    let err = Store::connect(&env_of(1, 2, port), &opts(Duration::from_secs(5))).unwrap_err();
    server.join().unwrap();
    assert!(
        matches!(&err, RendezvousError::Protocol { problem, .. } if problem.contains("agent store")),
        "{err}"
    );
}
