use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use flashdmoe_proto::graph::{gemm0_tasks_in, tile_rows};
use flashdmoe_proto::{Epoch, HeapLayout, TaskDescriptor, TaskKey, TileShape};

use super::*;
use crate::config::{CapacityPolicy, MoeConfig};
use crate::rng::SplitMix64;
use crate::routing::RankRouting;
use crate::runtime::{Queued, RankState, drive};

/// A heap that records every put (placers write rows and weights, nothing else).
#[derive(Default)]
struct Recording {
    puts: Mutex<BTreeMap<u64, Vec<u8>>>,
}

impl SymmetricHeap for Recording {
    fn load_signal(&self, _: u32, _: u64) -> u64 {
        unreachable!("a placer reads no signal")
    }
    fn store_signal(&self, _: u32, _: u64, _: u64) {
        unreachable!("a placer raises no signal")
    }
    fn add_counter(&self, _: u32, _: u64) -> u32 {
        unreachable!("a placer's counters are the board's")
    }
    fn load_counter(&self, _: u32, _: u64) -> u32 {
        unreachable!()
    }
    fn reset_counters(&self, _: u32) {
        unreachable!()
    }
    unsafe fn put(&self, rank: u32, offset: u64, bytes: &[u8]) {
        assert_eq!(rank, 0);
        let previous = self.puts.lock().unwrap().insert(offset, bytes.to_vec());
        assert!(previous.is_none(), "offset {offset} written twice");
    }
    unsafe fn get(&self, _: u32, _: u64, _: &mut [u8]) {
        unreachable!()
    }
}

/// A seeded one-rank layer and its routing: `tokens` tokens, `experts` experts of which each
/// token picks `k` (expert 0 and 1 hot, so capacity drops happen), `bm`-row tiles.
struct Case {
    config: MoeConfig,
    layout: HeapLayout,
    routing: RankRouting,
    input: Vec<u8>,
}

impl Case {
    fn new(
        seed: u64,
        tokens: u32,
        experts: u32,
        k: u32,
        capacity: CapacityPolicy,
        bm: u32,
    ) -> Case {
        let config = MoeConfig::builder()
            .world(1)
            .tokens_per_rank(tokens)
            .experts(experts)
            .top_k(k)
            .hidden(64)
            .inter(64)
            .capacity(capacity)
            .build()
            .unwrap();
        let layout = HeapLayout::new(config.geometry(TileShape::new(bm, 32, 32)).unwrap()).unwrap();
        let mut rng = SplitMix64::new(seed);
        let (mut chosen, mut weights) = (Vec::new(), Vec::new());
        for _ in 0..tokens {
            let mut mine: Vec<u32> = Vec::new();
            while mine.len() < k as usize {
                let r = rng.next();
                let e = if r.is_multiple_of(3) {
                    (r >> 8) as u32 % 2.min(experts)
                } else {
                    (r >> 8) as u32 % experts
                };
                if !mine.contains(&e) {
                    mine.push(e);
                }
            }
            weights.extend(mine.iter().map(|_| rng.next_unit()));
            chosen.extend(mine);
        }
        let routing = RankRouting::from_choices(&config, chosen, weights).unwrap();
        let row_bytes = layout.geometry().hidden as usize * 2;
        let input =
            (0..tokens as usize * row_bytes).map(|i| (i * 7 + seed as usize) as u8).collect();
        Case { config, layout, routing, input }
    }

    fn slots(&self) -> Slots<'_> {
        Slots {
            top_k: self.routing.top_k,
            packets: &self.routing.experts,
            weights: &self.routing.weights,
            input: &self.input,
        }
    }

    /// What [`super::super::dispatch`] puts for this routing: every kept row and its weight.
    fn expected_puts(&self) -> BTreeMap<u64, Vec<u8>> {
        let plan = self.routing.source_plan(&self.config, &self.layout).unwrap();
        let row_bytes = self.layout.geometry().hidden as usize * 2;
        let mut puts = BTreeMap::new();
        for le in 0..self.config.experts {
            for ((row, &t), w) in (0u32..).zip(plan.packet(0, le)).zip(plan.weights(0, le)) {
                let at = self.layout.row(Stage::Dispatch, 0, le, row, 0).unwrap();
                puts.insert(at, self.input[t as usize * row_bytes..][..row_bytes].to_vec());
                let at = self.layout.dispatch_weight(0, le, row).unwrap();
                puts.insert(at, w.to_le_bytes().to_vec());
            }
        }
        puts
    }

    /// Every packet's GEMM0 tasks as the whole-packet forms queue them (paired or not), keyed,
    /// with valid rows and whether each heads a pair.
    fn expected_tasks(&self, paired: bool) -> Vec<(TaskKey, u32, bool)> {
        let mut tasks: Vec<_> = (0..self.config.experts)
            .flat_map(|le| {
                let n = self.routing.expert_tokens[le as usize].len() as u32;
                gemm0_tasks_in(&self.layout, Epoch::FIRST, 0, 0, le, n, paired)
                    .map(|t| t.unwrap())
                    .map(|(t, head)| (t.key().unwrap(), t.valid_rows, head))
                    .collect::<Vec<_>>()
            })
            .collect();
        tasks.sort_unstable();
        tasks
    }

    /// Streams the placement with `placers` placers in chunks of `chunk` tokens, on `threads`
    /// threads (1: every placer polled in turn on this one), and checks the heap's bytes, the
    /// queued tasks and the row counts against the whole-packet forms.
    fn check(&self, chunk: u32, placers: u32, threads: bool, paired: bool) {
        let what = format!(
            "T{} E{} k{} cap {} bm {} chunk {chunk}, {placers} placers, paired {paired}",
            self.config.tokens_per_rank,
            self.config.experts,
            self.config.top_k,
            self.layout.geometry().capacity,
            self.layout.geometry().tile.bm
        );
        let heap = Recording::default();
        let mut state = RankState::new(&self.layout, 2).unwrap().with_pairs(paired);
        state.stream_placement(&self.layout, chunk).unwrap();
        let ctx = RankContext {
            rank: 0,
            epoch: Epoch::FIRST,
            layout: &self.layout,
            heap: &heap,
            state: &state,
        };
        let mut all: Vec<Placer<'_, Recording>> =
            (0..placers).map(|i| Placer::new(ctx, i, self.slots()).unwrap()).collect();
        let timeout = Duration::from_secs(20);
        if threads {
            std::thread::scope(|s| {
                for p in all.iter_mut() {
                    let state = &state;
                    s.spawn(move || drive(0, state, timeout, &mut [p as &mut dyn Role]).unwrap());
                }
            });
        } else {
            // Each placer claims a chunk in turn, then they go on in reverse: the later chunks
            // look back before the earlier ones have their prefixes, over their aggregates.
            for p in all.iter_mut() {
                assert_ne!(p.poll().unwrap(), Poll::Idle, "{what}: a claim never waits");
            }
            for _ in 0..100_000 {
                let mut done = true;
                for p in all.iter_mut().rev() {
                    done &= p.poll().unwrap() == Poll::Done;
                }
                if done {
                    break;
                }
            }
            assert!(all.iter_mut().all(|p| p.poll().unwrap() == Poll::Done), "{what}: not done");
        }
        assert_eq!(*heap.puts.lock().unwrap(), self.expected_puts(), "{what}: the heap's bytes");
        let queue: Vec<Queued> =
            (0..state.tasks_queued()).map(|i| state.tasks.get(i).unwrap()).collect();
        // A pair's second half right behind its head: the same column tile, the next row tile.
        let key = |t: TaskDescriptor| (t.local_expert, t.row_tile, t.col_tile);
        for (i, q) in queue.iter().enumerate().filter(|(_, q)| q.pair_head) {
            let second = queue.get(i + 1).unwrap_or_else(|| panic!("{what}: a pair's head last"));
            assert!(!second.pair_head, "{what}: two heads in a row at {i}");
            let (e, r, c) = key(q.task);
            assert_eq!(key(second.task), (e, r + 1, c), "{what}: the pair at {i}");
        }
        let mut queued: Vec<_> =
            queue.iter().map(|q| (q.task.key().unwrap(), q.task.valid_rows, q.pair_head)).collect();
        queued.sort_unstable();
        assert_eq!(queued, self.expected_tasks(paired), "{what}: the queued GEMM0 tasks");
        let rows: Vec<u32> =
            state.received_rows.iter().map(|r| r.load(Ordering::Relaxed)).collect();
        let expected: Vec<u32> =
            self.routing.expert_tokens.iter().map(|t| t.len() as u32).collect();
        assert_eq!(rows, expected, "{what}: the row counts");
        assert_eq!(state.packets_seen.load(Ordering::Relaxed), self.config.experts);
        let placed: u64 = all.iter().map(|p| p.rows_placed()).sum();
        assert_eq!(placed, expected.iter().map(|&n| n as u64).sum::<u64>(), "{what}");
        // Every placed counter is whole: its span where it has rows, 0 past the packet's end.
        let board = state.placement().unwrap();
        let span = self.layout.geometry().tile.bm * board.unit();
        for (p, &n) in (0u32..).zip(&rows) {
            for u in 0..board.units {
                let c = board.placed(p, u).load(Ordering::Relaxed);
                let want = if u * span < n {
                    span | if tile_rows(n, u, span) < span { PADDED } else { 0 }
                } else {
                    0
                };
                assert_eq!(c, want, "{what}: packet {p} counter {u}");
            }
        }
    }
}

#[test]
fn streamed_placement_puts_dispatch_s_bytes_and_queues_every_gemm0_task_once_paired_or_not() {
    let mut cases = 0;
    for seed in 0..6u64 {
        for &(tokens, experts, k) in
            &[(0u32, 3u32, 1u32), (1, 1, 1), (7, 3, 2), (64, 8, 2), (300, 5, 3), (129, 2, 2)]
        {
            for capacity in
                [CapacityPolicy::Dropless, CapacityPolicy::Factor(1.0), CapacityPolicy::Factor(0.5)]
            {
                for bm in [1u32, 4, 16] {
                    let case = Case::new(seed, tokens, experts, k, capacity, bm);
                    for (chunk, placers) in [(1u32, 1u32), (3, 2), (16, 3), (1000, 2)] {
                        for paired in [false, true] {
                            case.check(chunk, placers, false, paired);
                            cases += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(cases, 6 * 6 * 3 * 3 * 4 * 2);
}

#[test]
fn placers_on_threads_place_the_same_bytes() {
    for seed in 0..20u64 {
        let case = Case::new(seed, 257, 6, 2, CapacityPolicy::Factor(1.0), 8);
        case.check(5, 4, true, seed % 2 == 0);
        case.check(64, 3, true, seed % 2 == 1);
    }
}

/// A layout of `tokens` tokens, 2 experts, top-1, 2-row tiles.
fn small(tokens: u32) -> Case {
    Case::new(1, tokens, 2, 1, CapacityPolicy::Dropless, 2)
}

#[test]
fn a_chunk_claimed_and_not_counted_holds_the_look_back_and_a_timeout_names_it() {
    let case = small(4);
    let heap = Recording::default();
    let mut state = RankState::new(&case.layout, 1).unwrap();
    state.stream_placement(&case.layout, 2).unwrap();
    // Chunk 0 claimed by a placer that never publishes (a stuck block, or one not yet there).
    state.placement().unwrap().next.fetch_add(1, Ordering::Relaxed);
    let ctx = RankContext {
        rank: 0,
        epoch: Epoch::FIRST,
        layout: &case.layout,
        heap: &heap,
        state: &state,
    };
    let mut placer = Placer::new(ctx, 7, case.slots()).unwrap();
    assert_eq!(placer.poll().unwrap(), Poll::Progress, "claims chunk 1 and publishes its counts");
    assert_eq!(placer.poll().unwrap(), Poll::Idle, "waits for chunk 0's count");
    assert_eq!(placer.poll().unwrap(), Poll::Idle);
    let r = drive(0, &state, Duration::from_millis(50), &mut [&mut placer]);
    let Err(RuntimeError::Timeout(report)) = r else { panic!("expected a timeout, got {r:?}") };
    assert_eq!(report.role, "placer 7");
    assert!(report.awaited.contains("packet 0 in chunk 0 (placing chunk 1)"), "{}", report.awaited);
    assert_eq!(state.tasks_queued(), 0, "nothing of chunk 1 is queued before its prefix");
}

#[test]
fn no_tokens_make_no_chunk_and_a_known_bound() {
    let case = small(0);
    let mut state = RankState::new(&case.layout, 1).unwrap();
    state.stream_placement(&case.layout, 16).unwrap();
    assert_eq!(state.placement().unwrap().chunks(), 0);
    assert_eq!(state.packets_seen.load(Ordering::Relaxed), 2);
    let heap = Recording::default();
    let ctx = RankContext {
        rank: 0,
        epoch: Epoch::FIRST,
        layout: &case.layout,
        heap: &heap,
        state: &state,
    };
    let mut placer = Placer::new(ctx, 0, case.slots()).unwrap();
    assert_eq!(placer.poll().unwrap(), Poll::Done);
}

#[test]
fn streaming_is_refused_where_it_cannot_run() {
    let case = small(4);
    let layout = &case.layout;
    let field = |r: Result<(), RuntimeError>| match r {
        Err(RuntimeError::Proto(ProtoError::InvalidGeometry { field, .. })) => field,
        Err(RuntimeError::Proto(ProtoError::Inconsistent { field, .. })) => field,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let two =
        HeapLayout::new(flashdmoe_proto::Geometry { world: 2, ..*layout.geometry() }).unwrap();
    assert_eq!(field(RankState::new(&two, 1).unwrap().stream_placement(&two, 2)), "world");
    assert_eq!(
        field(RankState::new(layout, 1).unwrap().stream_placement(layout, 0)),
        "chunk_tokens"
    );
    let mut waved = RankState::new(layout, 1).unwrap();
    waved.post_waves(layout, Epoch::FIRST, &[1, 1]).unwrap();
    assert!(field(waved.stream_placement(layout, 2)).starts_with("streamed placement"));
    let mut twice = RankState::new(layout, 1).unwrap();
    twice.stream_placement(layout, 2).unwrap();
    assert!(twice.stream_placement(layout, 2).is_err(), "streamed twice");
}

#[test]
fn a_placer_checks_its_slots_and_its_state() {
    let case = small(4);
    let heap = Recording::default();
    let plain = RankState::new(&case.layout, 1).unwrap();
    let ctx = RankContext {
        rank: 0,
        epoch: Epoch::FIRST,
        layout: &case.layout,
        heap: &heap,
        state: &plain,
    };
    assert!(Placer::new(ctx, 0, case.slots()).is_err(), "a state that does not stream");
    let mut state = RankState::new(&case.layout, 1).unwrap();
    state.stream_placement(&case.layout, 2).unwrap();
    let ctx = RankContext { state: &state, ..ctx };
    let short = Slots { input: &case.input[1..], ..case.slots() };
    assert!(matches!(
        Placer::new(ctx, 0, short),
        Err(RuntimeError::Proto(ProtoError::BadLength { what: "placer slots: input", .. }))
    ));
    let far = [0, 1, 2, 0];
    let out = Slots { packets: &far, ..case.slots() };
    assert!(matches!(
        Placer::new(ctx, 0, out),
        Err(RuntimeError::Proto(ProtoError::OutOfRange {
            what: "placer slot's packet",
            value: 2,
            ..
        }))
    ));
}
