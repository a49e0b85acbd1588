//! Data parallelism for the CPU-heavy host computations (generators, router, oracle): split an
//! output buffer into contiguous row blocks and fill them on scoped threads.
//!
//! Invariant: the result never depends on the number of threads; each row is computed by
//! exactly one call of the same function, in its own fixed order.

use std::num::NonZeroUsize;

/// Below this much work (row count times the caller's per-row cost estimate) everything runs on
/// the calling thread.
const MIN_PARALLEL_WORK: usize = 1 << 22;

/// Fills `out` (whole rows of `row_len` values each) by calling `fill(first_row, block)` on
/// contiguous blocks of whole rows, in parallel when `rows * cost_per_row` is large.
pub(crate) fn fill_rows<T: Send>(
    out: &mut [T],
    row_len: usize,
    cost_per_row: usize,
    fill: impl Fn(usize, &mut [T]) + Sync,
) {
    let rows = out.len().checked_div(row_len).unwrap_or(0);
    let threads = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    if threads < 2 || rows < 2 || rows.saturating_mul(cost_per_row.max(1)) < MIN_PARALLEL_WORK {
        fill(0, out);
        return;
    }
    let rows_per_block = rows.div_ceil(threads);
    let fill = &fill;
    std::thread::scope(|s| {
        for (i, block) in out.chunks_mut(rows_per_block * row_len).enumerate() {
            s.spawn(move || fill(i * rows_per_block, block));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_filled_once_in_place() {
        for (rows, row_len, cost) in [(0, 3, 1), (1, 5, 1 << 30), (1000, 7, 1 << 20), (17, 1, 1)] {
            let mut out = vec![usize::MAX; rows * row_len];
            fill_rows(&mut out, row_len, cost, |first, block| {
                for (i, v) in block.iter_mut().enumerate() {
                    *v = first * row_len + i;
                }
            });
            assert!(out.iter().enumerate().all(|(i, &v)| v == i));
        }
    }
}
