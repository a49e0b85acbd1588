//! loom models of the runtime's cross-thread protocol, over a minimal in-test heap and a
//! byte-copying executor (the simulator's loom suite runs whole two-rank forwards with the real
//! tile math). Each model also runs with one ordering weakened, which loom must catch.

use flashdmoe_proto::{
    Epoch, Geometry, HeapLayout, SourcePlan, Stage, TaskDescriptor, TaskKind, TileShape,
};

use super::{
    Poll, Processor, RankContext, RankState, Role, RuntimeError, Scheduler, Subscriber,
    SymmetricHeap, TileExecutor, dispatch, drive,
};
use std::time::Duration;

use crate::sync::{Arc, AtomicU32, AtomicU64, Ordering, SharedBytes, thread};

/// A heap over the proto layout whose signal-store and counter orderings are switchable.
struct TestHeap {
    layout: HeapLayout,
    signals: Vec<Vec<AtomicU64>>,
    counters: Vec<Vec<AtomicU32>>,
    data: Vec<SharedBytes>,
    signal_store: Ordering,
    counter_add: Ordering,
    /// The second wave's gate ([`SymmetricHeap::load_counter`]): `Acquire` unless a model
    /// weakens it.
    counter_load: Ordering,
}

impl TestHeap {
    fn new(layout: HeapLayout, signal_store: Ordering, counter_add: Ordering) -> Self {
        let p = layout.params();
        let world = p.world as usize;
        let counters = (p.dispatch_rows - p.row_tile_counters) / 4;
        TestHeap {
            layout,
            signals: (0..world)
                .map(|_| (0..p.row_tile_counters / 8).map(|_| AtomicU64::new(0)).collect())
                .collect(),
            counters: (0..world)
                .map(|_| (0..counters).map(|_| AtomicU32::new(0)).collect())
                .collect(),
            data: (0..world)
                .map(|_| SharedBytes::zeroed((p.total - p.dispatch_rows) as usize, 16))
                .collect(),
            signal_store,
            counter_add,
            counter_load: Ordering::Acquire,
        }
    }

    fn with_counter_load(mut self, counter_load: Ordering) -> Self {
        self.counter_load = counter_load;
        self
    }

    fn data_at(&self, offset: u64) -> usize {
        (offset - self.layout.params().dispatch_rows) as usize
    }
}

impl SymmetricHeap for TestHeap {
    fn load_signal(&self, rank: u32, offset: u64) -> u64 {
        self.signals[rank as usize][(offset / 8) as usize].load(Ordering::Acquire)
    }
    fn store_signal(&self, rank: u32, offset: u64, word: u64) {
        self.signals[rank as usize][(offset / 8) as usize].store(word, self.signal_store);
    }
    fn add_counter(&self, rank: u32, offset: u64) -> u32 {
        let index = ((offset - self.layout.params().row_tile_counters) / 4) as usize;
        self.counters[rank as usize][index].fetch_add(1, self.counter_add) + 1
    }
    fn load_counter(&self, rank: u32, offset: u64) -> u32 {
        let index = ((offset - self.layout.params().row_tile_counters) / 4) as usize;
        self.counters[rank as usize][index].load(self.counter_load)
    }
    fn reset_counters(&self, rank: u32) {
        self.counters[rank as usize].iter().for_each(|c| c.store(0, Ordering::Relaxed));
    }
    unsafe fn put(&self, rank: u32, offset: u64, bytes: &[u8]) {
        // SAFETY: forwarded from the caller.
        unsafe { self.data[rank as usize].write(self.data_at(offset), bytes) }
    }
    unsafe fn get(&self, rank: u32, offset: u64, out: &mut [u8]) {
        // SAFETY: forwarded from the caller.
        unsafe { self.data[rank as usize].read(self.data_at(offset), out) }
    }
}

/// f32 elements, 4 per row of hidden, `4 * inter_tiles` per intermediate row: one 16-byte
/// loom chunk per column tile.
fn layout(world: u32, inter_tiles: u32) -> HeapLayout {
    layout_tokens(world, inter_tiles, 1)
}

/// [`layout`] with `tokens` tokens per rank (and as many rows per packet), one per row tile.
fn layout_tokens(world: u32, inter_tiles: u32, tokens: u32) -> HeapLayout {
    HeapLayout::new(Geometry {
        world,
        local_experts: 1,
        tokens,
        capacity: tokens,
        hidden: 4,
        inter: 4 * inter_tiles,
        elem_bytes: 4,
        tile: TileShape::new(1, 4, 4),
    })
    .unwrap()
}

/// Rank 0 dispatches its one token to rank 1 with the real [`dispatch`]; rank 1's real
/// [`Subscriber`] turns the signal into a GEMM0 task, after which rank 1 reads the row as an
/// executor would. Every interleaving must read the dispatched bytes, race-free.
fn publish_observe(signal_store: Ordering) {
    loom::model(move || {
        let layout = layout(2, 1);
        let heap = Arc::new(TestHeap::new(layout, signal_store, Ordering::AcqRel));
        let epoch = Epoch::FIRST;
        let sender = {
            let heap = heap.clone();
            thread::spawn(move || {
                let plan = SourcePlan::new(&layout, vec![vec![], vec![0]]).unwrap();
                dispatch(&*heap, &layout, epoch, 0, &plan, &[7u8; 16]).unwrap();
            })
        };
        // Rank 1 sends its own zero-row packets.
        let own = SourcePlan::new(&layout, vec![vec![], vec![]]).unwrap();
        dispatch(&*heap, &layout, epoch, 1, &own, &[0u8; 16]).unwrap();
        let state = RankState::new(&layout, 1).unwrap();
        let ctx = RankContext { rank: 1, epoch, layout: &layout, heap: &*heap, state: &state };
        let mut subscriber = Subscriber::new(ctx, &own, 0, 1).unwrap();
        while subscriber.poll().unwrap() != Poll::Done {
            thread::yield_now();
        }
        let task = (0..state.tasks_queued())
            .filter_map(|i| state.tasks.get(i).map(|q| q.task))
            .find(|t| t.kind == TaskKind::Gemm0 as u32)
            .expect("the GEMM0 task of the packet from rank 0");
        assert_eq!((task.source_rank, task.valid_rows), (0, 1));
        assert_eq!(task.input_offset, layout.row(Stage::Dispatch, 0, 0, 0, 0).unwrap());
        let mut row = [0u8; 16];
        // SAFETY: the row was published by the dispatch signal the subscriber acquired (loom
        // reports it otherwise).
        unsafe { heap.get(1, task.input_offset, &mut row) };
        assert_eq!(row, [7u8; 16]);
        sender.join().unwrap();
    });
}

#[test]
fn loom_signal_publish_observe() {
    publish_observe(Ordering::Release);
}

/// The model bites: a `Relaxed` signal store lets the read race the put.
#[test]
#[should_panic(expected = "Causality violation")]
fn loom_relaxed_signal_store_is_caught() {
    publish_observe(Ordering::Relaxed);
}

/// Moves bytes instead of multiplying: GEMM0 copies the token row into its column tile of the
/// intermediate row; GEMM1 reads the whole intermediate row (every GEMM0's tile) and returns
/// its last column tile; Combine copies token tile `t`'s returned row (`return_rows[t]`) to
/// the output. The output equals the input only if every hand-over was ordered.
struct CopyExecutor<'a> {
    rank: u32,
    layout: &'a HeapLayout,
    heap: &'a TestHeap,
    output: &'a SharedBytes,
    return_rows: Vec<u64>,
}

impl<'a> CopyExecutor<'a> {
    /// Rank 0's executor; its one token's returned row is row 0 of local expert 0's packet.
    fn new(layout: &'a HeapLayout, heap: &'a TestHeap, output: &'a SharedBytes) -> Self {
        let return_rows = vec![layout.row(Stage::Return, 0, 0, 0, 0).unwrap()];
        CopyExecutor { rank: 0, layout, heap, output, return_rows }
    }

    fn get(&self, offset: u64, out: &mut [u8]) {
        // SAFETY: the runtime orders every task's reads after the writes they depend on; loom
        // reports any access it did not order.
        unsafe { self.heap.get(self.rank, offset, out) }
    }

    fn put(&self, rank: u32, offset: u64, bytes: &[u8]) {
        // SAFETY: as in `get`: each tile has one writer, ordered before its readers.
        unsafe { self.heap.put(rank, offset, bytes) }
    }
}

impl TileExecutor for CopyExecutor<'_> {
    fn execute(&self, task: &TaskDescriptor) -> Result<(), RuntimeError> {
        let inter = self.layout.geometry().inter as usize * 4;
        match task.task_kind()? {
            TaskKind::Gemm0 => {
                let mut row = [0u8; 16];
                self.get(task.input_offset, &mut row);
                self.put(self.rank, task.output_offset, &row);
            }
            TaskKind::Gemm1 => {
                let mut row = vec![0u8; inter];
                self.get(task.input_offset, &mut row);
                self.put(task.source_rank, task.output_offset, &row[inter - 16..]);
            }
            TaskKind::Combine => {
                let mut row = [0u8; 16];
                self.get(self.return_rows[task.row_tile as usize], &mut row);
                // SAFETY: one Combine task writes the output, after its inputs arrived.
                unsafe { self.output.write(task.output_offset as usize, &row) };
            }
        }
        Ok(())
    }
}

/// Runs rank 0 of a one-rank world with two processors after `input` was dispatched by `plan`:
/// processor 1 on a thread of its own; the subscriber, the scheduler and processor 0 share
/// the calling thread (more spinning threads make loom's exploration explode). Combine tasks
/// read token tile `t`'s returned row at `return_rows[t]`. Returns the completed task counts
/// and the output's first `out.len()` bytes in `out`.
fn run_two_processors(
    layout: HeapLayout,
    heap: Arc<TestHeap>,
    state: Arc<RankState>,
    plan: &SourcePlan,
    input: &[u8],
    return_rows: Vec<u64>,
    out: &mut [u8],
) -> (u64, u64, u64) {
    let epoch = Epoch::FIRST;
    let output = Arc::new(SharedBytes::zeroed(out.len(), 16));
    dispatch(&*heap, &layout, epoch, 0, plan, input).unwrap();
    let peer = {
        let (heap, state, output) = (heap.clone(), state.clone(), output.clone());
        let return_rows = return_rows.clone();
        thread::spawn(move || {
            let ctx = RankContext { rank: 0, epoch, layout: &layout, heap: &*heap, state: &state };
            let executor =
                CopyExecutor { return_rows, ..CopyExecutor::new(&layout, &heap, &output) };
            let mut processor = Processor::new(ctx, 1, &executor, None).unwrap();
            drive(0, &state, Duration::MAX, &mut [&mut processor]).unwrap();
        })
    };
    let ctx = RankContext { rank: 0, epoch, layout: &layout, heap: &*heap, state: &state };
    let executor = CopyExecutor { return_rows, ..CopyExecutor::new(&layout, &heap, &output) };
    let mut subscriber = Subscriber::new(ctx, plan, 0, 1).unwrap();
    let mut scheduler = Scheduler::new(&layout, &state, epoch.get());
    let mut processor = Processor::new(ctx, 0, &executor, None).unwrap();
    let mut roles: [&mut dyn Role; 3] = [&mut subscriber, &mut scheduler, &mut processor];
    drive(0, &state, Duration::MAX, &mut roles).unwrap();
    peer.join().unwrap();
    // SAFETY: both processors are done.
    unsafe { output.read(0, out) };
    let counts = scheduler.completed();
    (counts.gemm0, counts.gemm1, counts.combine)
}

/// One rank routing its token to its own expert, with two GEMM0 column tiles and two
/// processors. Processor 1 has a thread of its own; dispatch, the subscriber, the scheduler and
/// processor 0 share the main thread (more spinning threads make loom's exploration explode).
/// So the two GEMM0s race for the row-tile counter across threads, and the GEMM1 and the
/// Combine go to whichever processor the scheduler finds idle. Three preemptions: the
/// interleaving that exposes a weak counter (processor 1 runs a GEMM0 and is preempted between
/// its counter increment and its completion report) needs them.
fn one_rank_two_processors(counter_add: Ordering) {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(move || {
        let layout = layout(1, 2);
        let heap = Arc::new(TestHeap::new(layout, Ordering::Release, counter_add));
        let state = Arc::new(RankState::new(&layout, 2).unwrap());
        let plan = SourcePlan::new(&layout, vec![vec![0]]).unwrap();
        let returned = vec![layout.row(Stage::Return, 0, 0, 0, 0).unwrap()];
        let mut out = [0u8; 16];
        let counts = run_two_processors(layout, heap, state, &plan, &[3; 16], returned, &mut out);
        assert_eq!(counts, (2, 1, 1));
        assert_eq!(out, [3u8; 16]);
    });
}

#[test]
fn loom_one_rank_two_processors() {
    one_rank_two_processors(Ordering::AcqRel);
}

/// The model bites: with a `Relaxed` row-tile counter, the GEMM0 completing the row tile does
/// not acquire the other GEMM0's write, so the GEMM1 that follows reads it unordered.
#[test]
#[should_panic(expected = "Causality violation")]
fn loom_relaxed_row_tile_counter_is_caught() {
    one_rank_two_processors(Ordering::Relaxed);
}

/// [`one_rank_two_processors`] with the waves posted before the roles run
/// ([`RankState::post_waves`], the kernel's OS block): both GEMM0s in the first wave
/// (processor `q` runs column tile `q`), the GEMM1 in the second (processor 0's word 1, posted
/// before the GEMM0s ran), the combine in the third (processor 0 posts it itself once its
/// GEMM0 is done, gated on the ready flag the subscriber raises). The scheduler hands out
/// nothing: it counts the three waves' completions and stops. Processor 0's GEMM1 reads
/// processor 1's column of the intermediate row, so its gate, an acquire of the row-tile
/// counter, is the only edge ordering that read across the threads.
fn one_rank_waves(counter_load: Ordering) {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(move || {
        let layout = layout(1, 2);
        let heap = Arc::new(
            TestHeap::new(layout, Ordering::Release, Ordering::AcqRel)
                .with_counter_load(counter_load),
        );
        let mut state = RankState::new(&layout, 2).unwrap();
        let waves = state.post_waves(&layout, Epoch::FIRST, &[1]).unwrap();
        assert_eq!((waves.first, waves.second, waves.third), (2, 1, 1));
        let plan = SourcePlan::new(&layout, vec![vec![0]]).unwrap();
        let returned = vec![layout.row(Stage::Return, 0, 0, 0, 0).unwrap()];
        let mut out = [0u8; 16];
        let state = Arc::new(state);
        let counts = run_two_processors(layout, heap, state, &plan, &[3; 16], returned, &mut out);
        assert_eq!(counts, (2, 1, 1));
        assert_eq!(out, [3u8; 16]);
    });
}

#[test]
fn loom_one_rank_waves() {
    one_rank_waves(Ordering::Acquire);
}

/// The model bites: with a `Relaxed` load of the row-tile counter, the second wave's GEMM1
/// reads processor 1's GEMM0 output unordered.
#[test]
#[should_panic(expected = "Causality violation")]
fn loom_relaxed_second_wave_gate_is_caught() {
    one_rank_waves(Ordering::Relaxed);
}

/// The third wave across threads: one rank, two local experts, two tokens, token 0 routed to
/// expert 1 and token 1 to expert 0 (one row each; one column tile everywhere), two
/// processors. All three waves: processor 0 runs expert 0's GEMM0 and GEMM1 (token 1's row)
/// and token 0's combine, processor 1 expert 1's (token 0's row) and token 1's combine. So
/// each combine reads a row the other processor returned. Processor 1's combine (its own
/// thread) reads a row written on the main thread, ordered before it only by the ready flag
/// the return subscriber (main thread) raised once it acquired the return signal: the flag's
/// release and the processor's acquire are the only edge.
fn third_wave_across_threads(publish: Ordering) {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(2);
    model.check(move || {
        let layout = HeapLayout::new(Geometry {
            world: 1,
            local_experts: 2,
            tokens: 2,
            capacity: 2,
            hidden: 4,
            inter: 4,
            elem_bytes: 4,
            tile: TileShape::new(1, 4, 4),
        })
        .unwrap();
        let heap = Arc::new(TestHeap::new(layout, Ordering::Release, Ordering::AcqRel));
        let mut state = RankState::new(&layout, 2).unwrap();
        state.tasks.weaken_publish(publish);
        let waves = state.post_waves(&layout, Epoch::FIRST, &[1, 1]).unwrap();
        assert_eq!((waves.first, waves.second, waves.third), (2, 2, 2));
        let plan = SourcePlan::new(&layout, vec![vec![1], vec![0]]).unwrap();
        let input: Vec<u8> = [[5u8; 16], [6u8; 16]].concat();
        // Token t's returned row: row 0 of the packet of the expert it went to.
        let returned = vec![
            layout.row(Stage::Return, 0, 1, 0, 0).unwrap(),
            layout.row(Stage::Return, 0, 0, 0, 0).unwrap(),
        ];
        let mut out = [0u8; 32];
        let state = Arc::new(state);
        let counts = run_two_processors(layout, heap, state, &plan, &input, returned, &mut out);
        assert_eq!(counts, (2, 2, 2));
        assert_eq!(out, *input, "each token's row back in its place");
    });
}

#[test]
fn loom_third_wave_across_threads() {
    third_wave_across_threads(Ordering::Release);
}

/// The model bites: with a `Relaxed` ready flag, processor 1's combine reads the row
/// processor 0 returned unordered.
#[test]
#[should_panic(expected = "Causality violation")]
fn loom_relaxed_third_wave_flag_is_caught() {
    third_wave_across_threads(Ordering::Relaxed);
}

/// The CUDA kernel's dispatch (A4, `dispatch_packets` in `kernels/moe.cu`): several copiers
/// each put part of one packet's rows into the owner's region, then count them on the
/// packet's counter; the copier whose count completes the packet stores the epoch-stamped
/// signal. The owner acquires the signal and reads every row. On the GPU each copier fences
/// before its `atomicAdd` and the completer fences again before the release store: an
/// `AcqRel` read-modify-write here.
fn split_packet_copy(counter_add: Ordering) {
    loom::model(move || {
        const ROWS: u32 = 2;
        let rows = Arc::new(SharedBytes::zeroed(16 * ROWS as usize, 16));
        let copied = Arc::new(AtomicU32::new(0));
        let signal = Arc::new(AtomicU64::new(0));
        let word = flashdmoe_proto::signal::encode_dispatch(Epoch::FIRST, ROWS);
        let copiers: Vec<_> = (0..ROWS)
            .map(|row| {
                let (rows, copied, signal) = (rows.clone(), copied.clone(), signal.clone());
                thread::spawn(move || {
                    // SAFETY: each copier writes its own row; the owner reads only after the
                    // signal (loom reports it otherwise).
                    unsafe { rows.write(16 * row as usize, &[row as u8 + 1; 16]) };
                    if copied.fetch_add(1, counter_add) + 1 == ROWS {
                        signal.store(word, Ordering::Release);
                    }
                })
            })
            .collect();
        while signal.load(Ordering::Acquire) != word {
            thread::yield_now();
        }
        let mut out = [0u8; 16];
        for row in 0..ROWS {
            // SAFETY: published by the signal acquired above.
            unsafe { rows.read(16 * row as usize, &mut out) };
            assert_eq!(out, [row as u8 + 1; 16]);
        }
        copiers.into_iter().for_each(|c| c.join().unwrap());
    });
}

#[test]
fn loom_split_packet_copy() {
    split_packet_copy(Ordering::AcqRel);
}

/// The model bites: with a `Relaxed` packet counter, the completer's signal does not carry the
/// other copier's row, so the owner's read of it races the write.
#[test]
#[should_panic(expected = "Causality violation")]
fn loom_relaxed_packet_counter_is_caught() {
    split_packet_copy(Ordering::Relaxed);
}

/// An executor that computes nothing (the paired model checks the handout and the rendezvous;
/// the data hand-overs are the other models').
struct NullExecutor;

impl TileExecutor for NullExecutor {
    fn execute(&self, _: &TaskDescriptor) -> Result<(), RuntimeError> {
        Ok(())
    }
}

/// A paired layer (docs/dev/paired-tasks.md): one rank routing its two tokens to its own
/// expert, three GEMM0 column tiles, so the packet's GEMM0 tasks are three pairs (row tiles 0
/// and 1 of each column tile), followed by two solo GEMM1 and two solo Combine tasks. Three
/// processors: 1 and 2 form the one cluster, 0 is unpaired. The handout gives the first pair
/// to the cluster, the second to idle processor 0 as two solo tasks, the third to the cluster
/// (one outstanding each). Processor 1 has a thread of its own; dispatch, the subscriber, the
/// scheduler, processor 0 and processor 2 share the main thread, so the pair rendezvous is
/// across threads. (Not a thread per processor: loom's scheduler is not fair, and with three
/// polling threads two of them can yield to each other forever while the third is never
/// resumed, an endless execution that is no deadlock.) In every interleaving (up to
/// `preemptions` preemptions): no deadlock, every task runs exactly once, the pairs run on the
/// cluster only (row tile 0 on processor 1, row tile 1 on processor 2), and both peers start
/// their pairs in the same order.
fn paired_cluster(preemptions: usize) {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(preemptions);
    model.check(|| {
        let layout = layout_tokens(1, 3, 2);
        let heap = Arc::new(TestHeap::new(layout, Ordering::Release, Ordering::AcqRel));
        let state = Arc::new(RankState::new(&layout, 3).unwrap().with_pairs(true));
        let epoch = Epoch::FIRST;
        let plan = SourcePlan::new(&layout, vec![vec![0, 1]]).unwrap();
        dispatch(&*heap, &layout, epoch, 0, &plan, &[5u8; 32]).unwrap();
        let origin = std::time::Instant::now();
        let peer = {
            let (heap, state) = (heap.clone(), state.clone());
            thread::spawn(move || {
                let ctx =
                    RankContext { rank: 0, epoch, layout: &layout, heap: &*heap, state: &state };
                let mut processor = Processor::new(ctx, 1, &NullExecutor, Some(origin)).unwrap();
                drive(0, &state, Duration::MAX, &mut [&mut processor]).unwrap();
                (processor.pairs_reached(), processor.into_trace())
            })
        };
        let ctx = RankContext { rank: 0, epoch, layout: &layout, heap: &*heap, state: &state };
        let mut subscriber = Subscriber::new(ctx, &plan, 0, 1).unwrap();
        let mut scheduler = Scheduler::new(&layout, &state, epoch.get());
        let mut solo = Processor::new(ctx, 0, &NullExecutor, Some(origin)).unwrap();
        let mut second = Processor::new(ctx, 2, &NullExecutor, Some(origin)).unwrap();
        let mut roles: [&mut dyn Role; 4] =
            [&mut subscriber, &mut scheduler, &mut solo, &mut second];
        drive(0, &state, Duration::MAX, &mut roles).unwrap();
        let counts = scheduler.completed();
        assert_eq!((counts.gemm0, counts.gemm1, counts.combine), (6, 2, 2));
        let (pairs1, trace1) = peer.join().unwrap();
        assert_eq!((solo.pairs_reached(), pairs1, second.pairs_reached()), (0, 2, 2));
        let (trace0, trace2) = (solo.into_trace(), second.into_trace());
        // Every task exactly once.
        let mut ran: Vec<_> = [&trace0, &trace1, &trace2]
            .into_iter()
            .flatten()
            .map(|e| (e.kind as u32, e.row_tile, e.col_tile))
            .collect();
        ran.sort_unstable();
        ran.dedup();
        assert_eq!(ran.len(), 10, "{ran:?}");
        assert_eq!(trace0.len() + trace1.len() + trace2.len(), 10, "a task ran twice");
        // The pairs on the cluster, the heads on processor 1, in one order on both.
        let gemm0 = |trace: &[crate::trace::TraceEvent]| -> Vec<(u32, u32)> {
            trace
                .iter()
                .filter(|e| e.kind == TaskKind::Gemm0)
                .map(|e| (e.row_tile, e.col_tile))
                .collect()
        };
        // Processor 0 ran the second pair's halves as two solo tasks, one column tile.
        let alone = gemm0(&trace0);
        assert!(alone.len() == 2 && alone[0].1 == alone[1].1, "processor 0: {alone:?}");
        let (first, second) = (gemm0(&trace1), gemm0(&trace2));
        assert!(first.iter().all(|&(r, _)| r == 0) && second.iter().all(|&(r, _)| r == 1));
        let columns = |pairs: &[(u32, u32)]| pairs.iter().map(|&(_, c)| c).collect::<Vec<_>>();
        assert_eq!(first.len(), 2);
        assert_eq!(columns(&first), columns(&second), "both peers' pairs in one order");
    });
}

#[test]
fn loom_paired_gemm0_cluster() {
    paired_cluster(2);
}

/// Two placers place one chunk (one token) each into the same two-row tile, one on a thread of
/// its own, one on the calling thread, which then waits for the tile's GEMM0 task and reads
/// both rows and weights as the processor would. Every interleaving (three preemptions) must
/// queue the task once, after both rows, race-free.
fn placers_across_threads(placed: Ordering) {
    use super::{Placer, Slots};

    static PACKETS: [u32; 2] = [0, 0];
    static WEIGHTS: [f32; 2] = [0.25, 0.5];
    static INPUT: [u8; 32] = {
        let mut rows = [3u8; 32];
        let mut i = 16;
        while i < 32 {
            rows[i] = 4;
            i += 1;
        }
        rows
    };
    fn place(layout: &HeapLayout, heap: &TestHeap, state: &RankState, index: u32) {
        let ctx = RankContext { rank: 0, epoch: Epoch::FIRST, layout, heap, state };
        let slots = Slots { top_k: 1, packets: &PACKETS, weights: &WEIGHTS, input: &INPUT };
        let mut placer = Placer::new(ctx, index, slots).unwrap();
        while placer.poll().unwrap() != Poll::Done {
            thread::yield_now();
        }
    }

    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(move || {
        let layout = HeapLayout::new(Geometry {
            world: 1,
            local_experts: 1,
            tokens: 2,
            capacity: 2,
            hidden: 4,
            inter: 4,
            elem_bytes: 4,
            tile: TileShape::new(2, 4, 4),
        })
        .unwrap();
        let mut heap = TestHeap::new(layout, Ordering::Release, Ordering::AcqRel);
        // 4-byte cells: the two placers write neighbouring weights.
        let bytes = (layout.params().total - layout.params().dispatch_rows) as usize;
        heap.data = vec![SharedBytes::zeroed(bytes, 4)];
        let heap = Arc::new(heap);
        let mut state = RankState::new(&layout, 1).unwrap();
        state.stream_placement(&layout, 1).unwrap();
        state.placement_mut().unwrap().weaken_placed(placed);
        let state = Arc::new(state);
        let other = {
            let (heap, state) = (heap.clone(), state.clone());
            thread::spawn(move || place(&layout, &heap, &state, 1))
        };
        place(&layout, &heap, &state, 0);
        let task = loop {
            if let Some(q) = state.tasks.get(0) {
                break q.task;
            }
            thread::yield_now();
        };
        assert_eq!((task.kind, task.row_tile, task.valid_rows), (TaskKind::Gemm0 as u32, 0, 2));
        let mut rows = [0u8; 32];
        let mut weights = [0u8; 8];
        // SAFETY: the task was queued by the placer whose addition completed the row tile,
        // after both placers' puts (loom reports it otherwise).
        unsafe {
            heap.get(0, task.input_offset, &mut rows);
            heap.get(0, layout.dispatch_weight(0, 0, 0).unwrap(), &mut weights);
        }
        assert_eq!(rows, INPUT);
        assert_eq!(weights, [0.25f32.to_le_bytes(), 0.5f32.to_le_bytes()].concat()[..]);
        other.join().unwrap();
        assert_eq!(state.tasks_queued(), 1, "the row tile queued once");
    });
}

#[test]
fn loom_placers_across_threads() {
    placers_across_threads(Ordering::AcqRel);
}

/// The model bites: with relaxed placed counters the tile's completer does not see the other
/// placer's row.
#[test]
#[should_panic(expected = "Causality violation")]
fn loom_relaxed_placed_counter_is_caught() {
    placers_across_threads(Ordering::Relaxed);
}
