//! Which processors of a rank pair up in a layer with paired GEMM0 tasks
//! (docs/dev/paired-tasks.md, "Which processors pair").
//!
//! On the GPU, blocks `2c` and `2c + 1` form 2-CTA cluster `c`, and a rank's block 0 is its OS
//! block, so the OS block's partner, processor 0, only ever takes solo tasks. Counted in
//! processors: cluster `k` is processors `2k + 1` and `2k + 2`, for every `k` with
//! `2k + 2 < processors`; with an even processor count the last processor has no partner either
//! (the kernel's `nclusters = (nproc - 1) / 2` in `scheduler.cuh`'s `handout_paired`, and
//! `in_pair_cluster` in `processor_wgmma.cuh`).

/// Clusters of a rank with `processors` processors: `(processors - 1) / 2` (0 for fewer than 3).
pub fn pair_clusters(processors: u32) -> u32 {
    processors.saturating_sub(1) / 2
}

/// The two processors of cluster `cluster`: `(2k + 1, 2k + 2)`; the first takes a pair's first
/// half (row tile `2p`), the second its second (row tile `2p + 1`).
pub fn cluster_processors(cluster: u32) -> (u32, u32) {
    (2 * cluster + 1, 2 * cluster + 2)
}

/// The cluster of `processor` among `processors`, or `None` for one that takes solo tasks only
/// (processor 0, the last of an even count, and any index out of range).
pub fn pair_cluster(processor: u32, processors: u32) -> Option<u32> {
    let cluster = processor.checked_sub(1)? / 2;
    (cluster < pair_clusters(processors)).then_some(cluster)
}

/// The cluster peer of `processor` among `processors` (`None` as for [`pair_cluster`]).
pub fn pair_peer(processor: u32, processors: u32) -> Option<u32> {
    let (first, second) = cluster_processors(pair_cluster(processor, processors)?);
    Some(if processor == first { second } else { first })
}

#[cfg(all(test, not(flashdmoe_loom)))]
mod tests {
    use super::*;

    #[test]
    fn processor_0_and_the_last_of_an_even_count_never_pair() {
        // Odd counts: every processor but 0 is in a cluster.
        assert_eq!(pair_clusters(5), 2);
        let clusters: Vec<_> = (0..5).map(|q| pair_cluster(q, 5)).collect();
        assert_eq!(clusters, [None, Some(0), Some(0), Some(1), Some(1)]);
        let peers: Vec<_> = (0..5).map(|q| pair_peer(q, 5)).collect();
        assert_eq!(peers, [None, Some(2), Some(1), Some(4), Some(3)]);
        // Even counts: the last processor has no partner.
        assert_eq!(pair_clusters(4), 1);
        let clusters: Vec<_> = (0..4).map(|q| pair_cluster(q, 4)).collect();
        assert_eq!(clusters, [None, Some(0), Some(0), None]);
        assert_eq!(pair_peer(3, 4), None);
        // No cluster below 3 processors; the kernel's 131 processors give 65.
        assert_eq!((0..3).map(pair_clusters).collect::<Vec<_>>(), [0, 0, 0]);
        assert_eq!(pair_clusters(3), 1);
        assert_eq!(pair_clusters(131), 65);
        assert_eq!(pair_clusters(132), 65);
        assert_eq!(pair_cluster(131, 132), None);
        assert_eq!(pair_cluster(7, 5), None, "out of range");
        for n in 0..40 {
            for k in 0..pair_clusters(n) {
                let (a, b) = cluster_processors(k);
                assert!(b < n && a >= 1);
                assert_eq!((pair_peer(a, n), pair_peer(b, n)), (Some(b), Some(a)));
            }
        }
    }
}
