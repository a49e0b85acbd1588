//! The router and the per-rank routing plan.

/// Marks a `(token, slot)` pair dropped for capacity in [`RankRouting::rows`].
pub const DROPPED: u32 = u32::MAX;

/// One rank's routing of its tokens.
///
/// Slot `j` of token `t` is index `t * top_k + j`; slots are ordered by descending router
/// probability, ties to the lower expert index.
#[derive(Clone, Debug, PartialEq)]
pub struct RankRouting {
    /// Experts per token k.
    pub top_k: u32,
    /// `[tokens][top_k]` chosen global expert indices.
    pub experts: Vec<u32>,
    /// `[tokens][top_k]` combine weights.
    pub weights: Vec<f32>,
    /// `[tokens][top_k]` row of the slot within its `(this rank, expert)` packet, or
    /// [`DROPPED`].
    pub rows: Vec<u32>,
    /// `[experts]` kept token indices per expert, ascending (row `i` carries the `i`-th).
    pub expert_tokens: Vec<Vec<u32>>,
}
