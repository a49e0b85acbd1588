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
/// * [`add_counter`](SymmetricHeap::add_counter) is an **acquire-release** increment;
/// * [`load_counter`](SymmetricHeap::load_counter) is an **acquire** load (the second wave's
///   gate: a GEMM1 task posted before its row tile's GEMM0s were counted, [`super::Waves`]).
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

    /// Acquire-loads the counter at `offset` of `rank`'s heap.
    fn load_counter(&self, rank: u32, offset: u64) -> u32;

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
