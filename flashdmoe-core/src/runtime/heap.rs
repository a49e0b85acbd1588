//! [`SymmetricHeap`]: the runtime's view of every rank's heap, addressed by proto offsets.

/// The symmetric heap of a world of ranks, as seen by one rank.
///
/// Offsets are byte offsets from a [`flashdmoe_proto::HeapLayout`]: signal offsets point at
/// 8-byte signal words, counter offsets at 4-byte counters, row offsets into the data sections.
/// An offset outside its section is a bug of the caller (implementations may panic on it).
///
/// The memory orderings are part of the contract, they are what the protocol relies on:
///
/// * [`store_signal`](SymmetricHeap::store_signal) is a **release** store (on a GPU: the data
///   stores, `__threadfence_system()`, then the flag store), so the data put before it is
///   visible to whoever acquires the word;
/// * [`load_signal`](SymmetricHeap::load_signal) is an **acquire** load;
/// * [`add_counter`](SymmetricHeap::add_counter) is an **acquire-release** increment.
///
/// A backend may delay, reorder or duplicate signal deliveries (the simulator's fault
/// injection does) as long as each delivered word is release-stored after its data.
pub trait SymmetricHeap: Sync {
    /// Acquire-loads the signal word at `offset` of `rank`'s heap.
    fn load_signal(&self, rank: u32, offset: u64) -> u64;

    /// Release-stores `word` into the signal at `offset` of `rank`'s heap.
    fn store_signal(&self, rank: u32, offset: u64, word: u64);

    /// Increments the counter at `offset` of `rank`'s heap (acquire-release) and returns the
    /// new value.
    fn add_counter(&self, rank: u32, offset: u64) -> u32;

    /// Zeroes every counter of `rank`'s heap. Called only by `rank` itself at the start of a
    /// forward, while no task of it is running.
    fn reset_counters(&self, rank: u32);

    /// Copies `bytes` to `offset` of `rank`'s heap.
    ///
    /// # Safety
    ///
    /// No other thread accesses these bytes concurrently: the protocol orders every other
    /// access before or after this one.
    unsafe fn put(&self, rank: u32, offset: u64, bytes: &[u8]);

    /// Copies bytes at `offset` of `rank`'s heap into `out`.
    ///
    /// # Safety
    ///
    /// No other thread writes these bytes concurrently.
    unsafe fn get(&self, rank: u32, offset: u64, out: &mut [u8]);
}

#[cfg(all(test, flashdmoe_loom))]
mod loom_tests {
    use flashdmoe_proto::{Epoch, Geometry, HeapLayout, SourcePlan, Stage, TaskKind, TileShape};

    use super::SymmetricHeap;
    use crate::runtime::{Poll, RankContext, RankState, Role, Subscriber, dispatch};
    use crate::sync::{Arc, AtomicU32, AtomicU64, Ordering, SharedBytes, thread};

    /// A minimal heap over the proto layout, with a switchable signal-store ordering.
    struct TestHeap {
        layout: HeapLayout,
        signals: Vec<Vec<AtomicU64>>,
        counters: Vec<Vec<AtomicU32>>,
        data: Vec<SharedBytes>,
        store: Ordering,
    }

    impl TestHeap {
        fn new(layout: HeapLayout, store: Ordering) -> Self {
            let p = layout.params();
            let world = p.world as usize;
            TestHeap {
                layout,
                signals: (0..world)
                    .map(|_| (0..p.row_tile_counters / 8).map(|_| AtomicU64::new(0)).collect())
                    .collect(),
                counters: (0..world)
                    .map(|_| {
                        let n = (p.dispatch_rows - p.row_tile_counters) / 4;
                        (0..n).map(|_| AtomicU32::new(0)).collect()
                    })
                    .collect(),
                data: (0..world)
                    .map(|_| SharedBytes::zeroed((p.total - p.dispatch_rows) as usize, 16))
                    .collect(),
                store,
            }
        }

        fn data_at(&self, offset: u64) -> usize {
            (offset - self.layout.params().dispatch_rows) as usize
        }

        fn counter(&self, rank: u32, offset: u64) -> &AtomicU32 {
            let start = self.layout.params().row_tile_counters;
            &self.counters[rank as usize][((offset - start) / 4) as usize]
        }
    }

    impl SymmetricHeap for TestHeap {
        fn load_signal(&self, rank: u32, offset: u64) -> u64 {
            self.signals[rank as usize][(offset / 8) as usize].load(Ordering::Acquire)
        }
        fn store_signal(&self, rank: u32, offset: u64, word: u64) {
            self.signals[rank as usize][(offset / 8) as usize].store(word, self.store);
        }
        fn add_counter(&self, rank: u32, offset: u64) -> u32 {
            self.counter(rank, offset).fetch_add(1, Ordering::AcqRel) + 1
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

    /// Rank 0 dispatches its one token to rank 1 with the real [`dispatch`]; rank 1's real
    /// [`Subscriber`] turns the signal into a GEMM0 task, after which rank 1 reads the row as an
    /// executor would. Every interleaving must read the dispatched bytes, race-free.
    fn publish_observe(store: Ordering) {
        loom::model(move || {
            let layout = HeapLayout::new(Geometry {
                world: 2,
                local_experts: 1,
                tokens: 1,
                capacity: 1,
                hidden: 4,
                inter: 4,
                elem_bytes: 4,
                tile: TileShape { bm: 1, bn: 4, bk: 4 },
            })
            .unwrap();
            let heap = Arc::new(TestHeap::new(layout, store));
            let epoch = Epoch::FIRST;
            let sender = {
                let heap = heap.clone();
                thread::spawn(move || {
                    let plan = SourcePlan::new(&layout, vec![vec![], vec![0]]).unwrap();
                    dispatch(&*heap, &layout, epoch, 0, &plan, &[7u8; 16]).unwrap();
                })
            };
            // Rank 1 sends its own zero-row packets so its bound closes.
            let own = SourcePlan::new(&layout, vec![vec![], vec![]]).unwrap();
            dispatch(&*heap, &layout, epoch, 1, &own, &[0u8; 16]).unwrap();
            let state = RankState::new(&layout, 1).unwrap();
            let ctx = RankContext { rank: 1, epoch, layout: &layout, heap: &*heap, state: &state };
            let mut subscriber = Subscriber::new(ctx, &own, 0, 1).unwrap();
            while subscriber.poll().unwrap() != Poll::Done {
                thread::yield_now();
            }
            let task = (0..state.tasks_queued())
                .filter_map(|i| state.tasks.get(i))
                .find(|t| t.kind == TaskKind::Gemm0 as u32)
                .expect("the GEMM0 task of the packet from rank 0");
            assert_eq!((task.source_rank, task.valid_rows), (0, 1));
            assert_eq!(task.input_offset, layout.row(Stage::Dispatch, 0, 0, 0, 0).unwrap());
            let mut row = [0u8; 16];
            // SAFETY: the row was published by the dispatch signal the subscriber acquired
            // (loom reports it otherwise).
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
}
