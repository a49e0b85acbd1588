//! Which results the report shows where: the latest of repeated measurements, the paper layer,
//! our results joined with the baselines of their layer, and the names the charts give them.

use std::collections::BTreeSet;

use flashdmoe_core::{Activation, CapacityPolicy, DType};

use crate::record::{IMPL_CUDA, LayerKey, Record};
use crate::results::Sourced;

/// A measurement and its file.
pub type Measured = Sourced<Record>;

/// `items` with later duplicates (same `key`) replacing earlier ones at the earlier one's
/// place, and how many were replaced.
pub fn latest<T, K: PartialEq>(items: &[T], key: impl Fn(&T) -> K) -> (Vec<&T>, usize) {
    let mut out: Vec<&T> = Vec::new();
    let mut replaced = 0;
    for item in items {
        match out.iter_mut().find(|o| key(o) == key(item)) {
            Some(slot) => {
                *slot = item;
                replaced += 1;
            }
            None => out.push(item),
        }
    }
    (out, replaced)
}

/// What makes two measurements the same: implementation, backend, world and layer.
pub fn measurement_key(r: &Record) -> (String, String, u32, String) {
    (r.implementation.clone(), r.backend.clone(), r.world, r.config.label())
}

/// The paper layer (H = I = 2048, top-2, ReLU, bf16, no bias) with capacity factor 1.
pub fn paper_cf1(l: &LayerKey) -> bool {
    (l.hidden, l.inter, l.top_k, l.activation, l.dtype, l.bias)
        == (2048, 2048, 2, Activation::Relu, DType::Bf16, false)
        && l.capacity == CapacityPolicy::Factor(1.0)
}

/// The implementations of `records`, ours first, then by name.
pub fn implementations<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<String> {
    let set: BTreeSet<(bool, String)> =
        records.into_iter().map(|r| (!r.is_ours(), r.implementation.clone())).collect();
    set.into_iter().map(|(_, i)| i).collect()
}

/// Our measurements, each with the baselines of its world and layer. Only
/// `flashdmoe-cuda` results get baselines: virtual ranks run P ranks on one GPU, a baseline of
/// world P runs on P GPUs.
pub fn pairs<'a>(gpu: &[&'a Measured]) -> Vec<(&'a Measured, Vec<&'a Measured>)> {
    let same = |a: &Record, b: &Record| {
        a.implementation == IMPL_CUDA && a.world == b.world && a.config.label() == b.config.label()
    };
    gpu.iter()
        .filter(|m| m.is_ours())
        .map(|&o| (o, gpu.iter().copied().filter(|b| !b.is_ours() && same(o, b)).collect()))
        .collect()
}

/// `dropless` or `cf<F>`.
pub fn capacity(l: &LayerKey) -> String {
    match l.capacity {
        CapacityPolicy::Dropless => "dropless".to_owned(),
        CapacityPolicy::Factor(f) => format!("cf{f}"),
    }
}

/// A chart's name for a result: `T<T> E<E> <capacity>`, then what differs from the paper layer
/// on one GPU (H and I, k, activation, biases, dtype, world) and the implementation when it is
/// not `flashdmoe-cuda`.
pub fn short_label(r: &Record) -> String {
    let l = &r.config;
    let mut parts = vec![format!("T{} E{} {}", l.tokens_per_rank, l.experts, capacity(l))];
    if (l.hidden, l.inter) != (2048, 2048) {
        parts.push(format!("H{} I{}", l.hidden, l.inter));
    }
    if l.top_k != 2 {
        parts.push(format!("k{}", l.top_k));
    }
    if l.activation != Activation::Relu {
        parts.push(l.activation.to_string());
    }
    if l.bias {
        parts.push("+bias".into());
    }
    if l.dtype != DType::Bf16 {
        parts.push(l.dtype.to_string());
    }
    if r.world != 1 {
        parts.push(format!("P{}", r.world));
    }
    if r.implementation != IMPL_CUDA {
        parts.push(r.implementation.clone());
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::ours;

    fn sourced(value: Record) -> Measured {
        Sourced { source: "x.jsonl".into(), value }
    }

    #[test]
    fn later_measurements_replace_earlier_ones_in_place() {
        let a = ours(2.0, "cuda");
        let mut b = ours(2.0, "cuda");
        b.world = 2;
        let mut again = a.clone();
        again.median_ms = 1.5;
        let items = [a, b, again];
        let (kept, replaced) = latest(&items, measurement_key);
        assert_eq!(replaced, 1);
        assert_eq!(
            kept.iter().map(|r| (r.world, r.median_ms)).collect::<Vec<_>>(),
            [(1, 1.5), (2, 2.0)]
        );
    }

    #[test]
    fn only_one_rank_per_gpu_results_of_ours_get_baselines() {
        let mut torch = ours(1.475, "cuda");
        torch.implementation = "torch-grouped-graph".into();
        let mut virtual_ranks = ours(1.9, "cuda");
        virtual_ranks.implementation = "flashdmoe-cuda-virtual".into();
        let mut other_world = torch.clone();
        other_world.world = 2;
        let records: Vec<Measured> = [ours(1.954, "cuda"), torch, virtual_ranks, other_world]
            .into_iter()
            .map(sourced)
            .collect();
        let refs: Vec<&Measured> = records.iter().collect();
        let p = pairs(&refs);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].1.len(), 1);
        assert_eq!(p[0].1[0].implementation, "torch-grouped-graph");
        assert!(p[1].1.is_empty());
        assert_eq!(
            implementations(records.iter().map(|m| &m.value)),
            ["flashdmoe-cuda", "flashdmoe-cuda-virtual", "torch-grouped-graph"]
        );
    }

    #[test]
    fn labels_name_what_differs_from_the_paper_layer() {
        let mut r = ours(1.0, "cuda");
        assert_eq!(short_label(&r), "T16384 E8 cf1");
        assert!(paper_cf1(&r.config));
        r.world = 2;
        r.config.activation = Activation::SiluGated;
        r.config.capacity = CapacityPolicy::Dropless;
        r.implementation = "torch-ep-a2a-graph".into();
        assert_eq!(short_label(&r), "T16384 E8 dropless, swiglu, P2, torch-ep-a2a-graph");
        assert!(!paper_cf1(&r.config));
    }
}
