//! [`Waves`]: the tasks a one-rank layer posts before the scheduler starts -- the CUDA kernel's
//! OS block (`subscriber.cuh` `enqueue_in_place`, `post_gemm1_early`, `post_combines`; the
//! plan: docs/dev/waves-in-core.md).
//!
//! Where a rank's packets are read in place (the kernel: every source on this GPU; here: a
//! world of one rank), the rank queues every packet's GEMM0 tasks at once, before any role
//! runs ([`RankState::post_waves`]), and posts up to three waves into the mailboxes itself:
//!
//! | wave | words | gate before the task's inputs are read |
//! |---|---|---|
//! | first: processor `q < first` runs GEMM0 queue entry `q` | word 0, preposted | none |
//! | second: processor `q < second` runs GEMM1 entry `gemm1_base + q` | word 1, preposted | its row tile's counter at `cti` (acquired) |
//! | third: processor `q < third` runs combine entry `combine_base + q` | word 2, posted by the processor once word 0 is complete | the entry's ready flag (acquired), raised by the return subscriber |
//!
//! The second wave needs every GEMM0 task in the first (so nothing a gated GEMM1 task waits
//! for sits behind it in a mailbox): all the row tiles' GEMM1 tasks are then queued at the
//! start, behind the GEMM0s, and a GEMM0 that completes its row tile queues nothing. The third
//! needs the second to hold every GEMM1 task (no more GEMM1 tasks than GEMM0 tasks), and no
//! more combine tasks than GEMM1 tasks: every combine is then written at the start without its
//! ready flag, and the return subscriber that completes a (group, column) raises the flags of
//! its combines instead of queueing them. Were some GEMM1 tasks left to the scheduler, it could
//! post one behind a gated combine that waits for it, in the same mailbox: a deadlock (found by
//! the simulator's proptest on a layer with H > I; the kernel had the same rule until
//! session 37, perf-notes v50 (e)).
//!
//! Here the waves are in the mailboxes before any role runs, so a processor finds word 0 at
//! once. In the kernel the OS block posts them after placement, while the processors wait
//! (~7 µs, perf-notes v53 (a)); under the experiment `FDM_SELF_WAVE` (`waves.cuh`) a
//! first-wave processor derives word 0 itself (entry `q` of the GEMM0 tasks of the packets in
//! order, as [`Waves::choose`] counts them) and checks the OS block's post before it publishes
//! the task, which brings the kernel to this model.
//!
//! What the kernel does and this model does not: the one-chunk limit of the OS block's threads
//! (at most `kThreads` packets), the Hopper engine only (the mma.sync engine posts the first
//! wave alone), A4's remote copiers (none in a world of one rank), and virtual ranks sharing a
//! GPU (here every rank is a device of its own, so only a world of one has its packets in
//! place).
//!
//! ## Invariants
//!
//! * No deadlock: every task a gated one waits for is some processor's word 0 (a GEMM0 of the
//!   first wave) or a GEMM1 in the queue, and a processor takes its gated word only once it
//!   finished word 0; the scheduler hands out what is left in queue order.
//! * Exactly once: the scheduler starts past the preposted entries and never hands them out;
//!   it counts the waves' words as posted from the start ([`super::Mailbox`], "The waves").

use flashdmoe_proto::graph::{combine_task, gemm0_tasks, gemm1_tasks, tile_rows};
use flashdmoe_proto::{Epoch, HeapLayout, ProtoError, div_ceil};

use super::subscriber::paired_gemm0_tasks;
use super::{Queued, RankState, RuntimeError};
use crate::sync::Ordering;

/// How many processors each wave reaches, and where its tasks sit in the rank's queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Waves {
    /// Processors `0..first` run GEMM0 entries `0..first` as their word 0.
    pub first: u32,
    /// Processors `0..second` run GEMM1 entries `gemm1_base..gemm1_base + second` as word 1.
    pub second: u32,
    /// Processors `0..third` run combine entries `combine_base..combine_base + third` as word 2.
    pub third: u32,
    /// The first GEMM1 entry (every GEMM1 task is queued at the start where `second > 0`).
    pub gemm1_base: u32,
    /// The first combine entry (every combine task is written at the start where `third > 0`).
    pub combine_base: u32,
}

impl Waves {
    /// The waves the kernel posts for a rank of `processors` processors whose in-place packets
    /// (one per local expert, in order) hold `rows` rows, paired or not (`enqueue_in_place`'s
    /// conditions; module docs).
    pub fn choose(layout: &HeapLayout, processors: u32, paired: bool, rows: &[u32]) -> Waves {
        let g = layout.geometry();
        let (cti, cth, bm) = (g.col_tiles_inter(), g.col_tiles_hidden(), g.tile.bm);
        let row_tiles: u32 = rows.iter().map(|&r| div_ceil(r, bm)).sum();
        let gemm0 = row_tiles * cti;
        let gemm1 = row_tiles * cth;
        let combines = div_ceil(g.tokens, bm) * cth;
        let first = gemm0.min(processors);
        let early = !paired && gemm0 != 0 && gemm0 <= processors;
        let second = if early { gemm1.min(first) } else { 0 };
        let third = if early && gemm1 <= gemm0 && combines <= gemm1 { combines } else { 0 };
        Waves { first, second, third, gemm1_base: gemm0, combine_base: gemm0 + gemm1 }
    }

    /// The queue entries the waves posted, which the scheduler skips: sorted, disjoint.
    pub(crate) fn preposted(&self) -> [std::ops::Range<usize>; 3] {
        let at = |base: u32, n: u32| base as usize..(base + n) as usize;
        [at(0, self.first), at(self.gemm1_base, self.second), at(self.combine_base, self.third)]
    }
}

impl RankState {
    /// Before any role runs, on a world of one rank: queues the GEMM0 tasks of every packet
    /// (`rows[e]` rows for local expert `e`, as the rank's own dispatch sends them), reports
    /// their rows to the scheduler (the subscribers then watch no dispatch signal), and posts
    /// the waves [`Waves::choose`] picks (module docs). Returns them.
    pub fn post_waves(
        &mut self,
        layout: &HeapLayout,
        epoch: Epoch,
        rows: &[u32],
    ) -> Result<Waves, RuntimeError> {
        let g = layout.geometry();
        if g.world != 1 {
            return Err(ProtoError::InvalidGeometry {
                field: "world",
                reason: "the waves are posted on a world of one rank only",
            }
            .into());
        }
        if rows.len() != g.local_experts as usize {
            return Err(ProtoError::Inconsistent {
                field: "waves: packets' row counts",
                expected: g.local_experts as u64,
                found: rows.len() as u64,
            }
            .into());
        }
        if self.tasks_queued() != 0 || self.in_place {
            return Err(ProtoError::Inconsistent {
                field: "waves: tasks queued before the waves",
                expected: 0,
                found: self.tasks_queued() as u64,
            }
            .into());
        }
        let waves = Waves::choose(layout, self.processors(), self.paired, rows);
        for (le, &n) in (0u32..).zip(rows) {
            if self.paired {
                let tasks = paired_gemm0_tasks(layout, epoch, 0, 0, le, n)
                    .collect::<Result<Vec<_>, _>>()?;
                self.push_tasks(&tasks)?;
            } else {
                for task in gemm0_tasks(layout, epoch, 0, 0, le, n) {
                    self.push_task(task?)?;
                }
            }
            self.received_rows[le as usize].store(n, Ordering::Relaxed);
        }
        self.packets_seen.store(g.local_experts, Ordering::Relaxed);
        self.in_place = true;
        if waves.second > 0 {
            for (le, &n) in (0u32..).zip(rows) {
                for row_tile in 0..div_ceil(n, g.tile.bm) {
                    let valid = tile_rows(n, row_tile, g.tile.bm);
                    for task in gemm1_tasks(layout, epoch, 0, 0, le, row_tile, valid) {
                        self.push_task(task?)?;
                    }
                }
            }
        }
        if waves.third > 0 {
            let cth = g.col_tiles_hidden();
            let combines = (0..waves.third)
                .map(|j| {
                    let task = combine_task(layout, epoch, 0, j / cth, j % cth)?;
                    Ok(Queued { task, pair_head: false })
                })
                .collect::<Result<Vec<_>, ProtoError>>()?;
            self.tasks
                .reserve_unpublished(&combines)
                .map_err(|capacity| RuntimeError::QueueFull { queue: "task queue", capacity })?;
        }
        for (q, mailbox) in (0u32..).zip(self.mailboxes.iter_mut()) {
            let first = q >= waves.first || mailbox.prepost(q);
            let second = q >= waves.second || mailbox.prepost(waves.gemm1_base + q);
            if !(first && second) {
                return Err(ProtoError::Inconsistent {
                    field: "waves: a mailbox's room",
                    expected: 2,
                    found: mailbox.assigned() as u64,
                }
                .into());
            }
        }
        self.waves = waves;
        Ok(waves)
    }

    /// The waves posted ([`RankState::post_waves`]; all zero otherwise).
    pub fn waves(&self) -> Waves {
        self.waves
    }

    /// Whether the rank's packets were queued at the start ([`RankState::post_waves`]): its
    /// subscribers watch no dispatch signal.
    pub fn in_place(&self) -> bool {
        self.in_place
    }
}

#[cfg(all(test, not(flashdmoe_loom)))]
mod tests {
    use flashdmoe_proto::{Geometry, TileShape};

    use super::*;

    /// The paper layer (H = I = 2048, bf16, one rank) at `tokens` tokens and `experts`
    /// experts in `bm`-row tiles `bn` columns wide (GEMM0 and GEMM1 alike).
    fn paper(tokens: u32, experts: u32, bm: u32, bn: u32) -> HeapLayout {
        HeapLayout::new(Geometry {
            world: 1,
            local_experts: experts,
            tokens,
            capacity: tokens,
            hidden: 2048,
            inter: 2048,
            elem_bytes: 2,
            tile: TileShape::new(bm, bn, 64),
        })
        .unwrap()
    }

    /// The counts gpu-check's phase-A line read from the kernel in run 185 (131 processors):
    /// T128 E8 (64x128 tiles) "first wave 128 tasks, second wave 128, third wave 32", E16
    /// (64x256) "128, 128, 16", E32 and E128 "131, 0, 0". Top-2 of 128 tokens, spread evenly
    /// as the paper layer's router does at T128: 256 / E rows an expert.
    #[test]
    fn the_paper_t128_layers_post_the_waves_the_kernel_posted() {
        for (experts, bn, waves) in [
            (8, 128, (128, 128, 32)),
            (16, 256, (128, 128, 16)),
            (32, 256, (131, 0, 0)),
            (128, 256, (131, 0, 0)),
        ] {
            let rows = vec![256 / experts; experts as usize];
            let w = Waves::choose(&paper(128, experts, 64, bn), 131, false, &rows);
            assert_eq!((w.first, w.second, w.third), waves, "E{experts}");
        }
    }

    #[test]
    fn more_gemm0_tasks_than_processors_post_the_first_wave_alone() {
        // T16384 E8 in 128x256 tiles: 256 row tiles, 2048 GEMM0 tasks.
        let w = Waves::choose(&paper(16384, 8, 128, 256), 131, false, &[4096; 8]);
        assert_eq!((w.first, w.second, w.third), (131, 0, 0));
        // Paired layers post the first wave only (its pairs run solo).
        let w = Waves::choose(&paper(128, 8, 64, 128), 131, true, &[32; 8]);
        assert_eq!((w.first, w.second, w.third), (128, 0, 0));
        // No rows, no waves.
        assert_eq!(
            Waves::choose(&paper(128, 8, 64, 128), 131, false, &[0; 8]),
            Waves { gemm1_base: 0, combine_base: 0, ..Waves::default() }
        );
    }

    #[test]
    fn more_combines_than_gemm1_tasks_post_no_third_wave() {
        // One routed row at T512: one row tile's 8 GEMM1 tasks against 4 token tiles' 32
        // combines.
        let w = Waves::choose(&paper(512, 8, 128, 256), 131, false, &[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!((w.first, w.second, w.third), (8, 8, 0));
    }

    #[test]
    fn gemm1_tasks_left_to_the_scheduler_post_no_third_wave() {
        // H = 4 I: four times as many GEMM1 tasks as GEMM0 tasks; the second wave holds a
        // quarter of them, and a gated combine could wait for one the scheduler posts behind
        // it. Five row tiles (one token each) of 5 experts, as the proptest's failing case.
        let g = Geometry { hidden: 8192, ..*paper(5, 5, 64, 256).geometry() };
        let layout = HeapLayout::new(g).unwrap();
        let w = Waves::choose(&layout, 131, false, &[1; 5]);
        assert_eq!((w.first, w.second, w.third), (40, 40, 0));
    }

    #[test]
    fn posting_the_waves_fills_the_queue_and_the_mailboxes() {
        let layout = paper(128, 8, 64, 256);
        let mut state = RankState::new(&layout, 131).unwrap();
        let w = state.post_waves(&layout, Epoch::FIRST, &[32; 8]).unwrap();
        assert_eq!((w.first, w.second, w.third), (64, 64, 16));
        assert!(state.in_place());
        // 64 GEMM0 + 64 GEMM1 published, 16 combines written without their flags.
        assert_eq!(state.tasks_queued(), 144);
        assert!(state.tasks.get(127).is_some() && state.tasks.get(128).is_none());
        let m = &state.mailboxes;
        assert_eq!((m[0].assigned(), m[63].assigned(), m[64].assigned()), (2, 2, 0));
        assert_eq!(m[5].take(1), Some(super::super::Mail::Task(69)));
        assert!(state.post_waves(&layout, Epoch::FIRST, &[32; 8]).is_err(), "posted twice");
    }

    #[test]
    fn waves_refuse_a_world_of_several_ranks_and_a_wrong_packet_count() {
        let g = Geometry { world: 2, ..*paper(128, 8, 64, 256).geometry() };
        let two = HeapLayout::new(g).unwrap();
        let mut state = RankState::new(&two, 4).unwrap();
        assert!(matches!(
            state.post_waves(&two, Epoch::FIRST, &[1; 8]),
            Err(RuntimeError::Proto(ProtoError::InvalidGeometry { field: "world", .. }))
        ));
        let one = paper(128, 8, 64, 256);
        let mut state = RankState::new(&one, 4).unwrap();
        assert!(state.post_waves(&one, Epoch::FIRST, &[1; 7]).is_err());
    }
}
