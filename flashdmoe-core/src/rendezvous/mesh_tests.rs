//! Liveness mesh tests with one thread per rank (and a hand-played peer), on 127.0.0.1.
//! Every wait is bounded; a failed test never hangs.

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::tests::{env_of, opts, wait_until, world};
use super::*;

/// Generous set-up and heartbeat timeouts: a loaded host must not fake a death.
pub(super) fn mesh_opts() -> LivenessOptions {
    LivenessOptions {
        setup_timeout: Duration::from_secs(10),
        heartbeat_timeout: Duration::from_secs(10),
        ..LivenessOptions::default()
    }
}

/// The fastest of 20 batches of 1000 failing checks (robust to preemption on a loaded host).
pub(super) fn fastest_1000_checks(mesh: &Liveness) -> Duration {
    (0..20)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..1000 {
                assert!(mesh.check().is_err());
            }
            start.elapsed()
        })
        .min()
        .unwrap()
}

#[test]
fn a_world_of_one_needs_no_socket() {
    let mut store = Store::connect(&env_of(0, 1, 1), &opts(Duration::from_secs(1))).unwrap();
    assert_eq!(store.exchange_fingerprints(b"f").unwrap(), [b"f"]);
    assert_eq!(store.broadcast(b"id").unwrap(), b"id");
    let mesh = Liveness::start(&mut store, &mesh_opts()).unwrap();
    assert_eq!(mesh.check(), Ok(()));
    mesh.close();
}

/// Builds a store and a mesh for each rank on threads; `body` gets the mesh.
fn mesh_world<T: Send + 'static>(
    n: usize,
    body: impl Fn(usize, Liveness) -> T + Send + Sync + Copy + 'static,
) -> Vec<T> {
    let ranks: Vec<usize> = (0..n).collect();
    world(n, &ranks, Duration::from_secs(10), move |rank, store| {
        let mut store = store.unwrap();
        let mesh = Liveness::start(&mut store, &mesh_opts()).unwrap();
        store.barrier().unwrap();
        body(rank, mesh)
    })
}

#[test]
fn a_clean_close_is_a_goodbye_not_a_death() {
    mesh_world(3, |rank, mesh| {
        if rank == 2 {
            return mesh.close();
        }
        assert!(
            wait_until(Duration::from_secs(5), || mesh.left().contains(2)),
            "{:?}",
            mesh.left()
        );
        assert_eq!(mesh.check(), Ok(()));
        assert!(mesh.dead().is_empty());
    });
}

#[test]
fn an_abandoned_mesh_is_a_death_seen_by_every_peer() {
    let seen = mesh_world(3, |rank, mesh| {
        if rank == 1 {
            mesh.abandon();
            return None;
        }
        let start = Instant::now();
        assert!(wait_until(Duration::from_secs(5), || mesh.check().is_err()));
        let gone = mesh.check().unwrap_err();
        let took = start.elapsed();
        // Fail fast afterwards: one atomic load (1000 checks within 1 ms: 1 us each).
        let fastest = fastest_1000_checks(&mesh);
        assert!(fastest < Duration::from_millis(1), "1000 checks took {fastest:?}");
        Some((gone, took, mesh.dead(), mesh.watch().check()))
    });
    for (gone, took, dead, watched) in seen.into_iter().flatten() {
        assert_eq!(gone.rank, 1);
        assert!(matches!(gone.how, Gone::Closed | Gone::Reset), "{gone}");
        assert!(took < Duration::from_secs(5));
        assert_eq!(dead, RankSet::from_iter([1]));
        assert_eq!(watched, Err(gone));
    }
}

/// One end of a connected pair is watched; the test plays the peer by hand.
fn watched_pair(heartbeat_timeout: Duration) -> (Liveness, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (ours, _) = listener.accept().unwrap();
    ours.set_nonblocking(true).unwrap();
    let opts = LivenessOptions { heartbeat_timeout, ..LivenessOptions::default() };
    (Liveness::watch_links(vec![(3, ours)], &opts).unwrap(), peer)
}

#[test]
fn a_silent_or_garbling_peer_is_dead() {
    let start = Instant::now();
    let (mesh, _silent) = watched_pair(Duration::from_millis(300));
    assert!(wait_until(Duration::from_secs(5), || mesh.check().is_err()));
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(mesh.check(), Err(PeerGone { rank: 3, how: Gone::Silent }));

    use std::io::Write;
    let (mesh, mut garbling) = watched_pair(Duration::from_secs(10));
    garbling.write_all(b"GET /").unwrap();
    assert!(wait_until(Duration::from_secs(5), || mesh.check().is_err()));
    assert_eq!(mesh.check(), Err(PeerGone { rank: 3, how: Gone::Garbled }));
}

#[test]
fn rank_sets_are_bitmasks() {
    let set: RankSet = [0, 5, 63, 64, 200].into_iter().collect();
    assert_eq!(set.bits(), 1 | 1 << 5 | 1 << 63);
    assert_eq!(set.iter().collect::<Vec<_>>(), [0, 5, 63]);
    assert!(set.contains(63) && !set.contains(64) && !set.contains(1));
    assert_eq!(format!("{set:?}"), "{0, 5, 63}");
    assert!(RankSet::default().is_empty());
    assert_eq!(RankSet::from_bits(6), [1, 2].into_iter().collect());
}
