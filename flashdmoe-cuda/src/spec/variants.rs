//! The representative specialisations CI compile-checks ([`variants`]) and the GPU check's
//! small layers they include.

use flashdmoe_core::config::{Routing, presets};
use flashdmoe_core::{Activation, DType, MoeConfig, SharedGate};
use flashdmoe_proto::TileShape;

use super::tile::{bk, widest_bn};
use super::{CombineForm, H200_PROCESSORS, MoeSpec, RouterSpec, TileChoice, TileEngine, computes};
use crate::arch::Arch;
use crate::kernels::KernelVariant;

/// The MoE variants CI compile-checks: every dtype x activation x row tile on a paper-grid
/// shape, with and without biases, plus each model preset's last-resort specialisation (H, I
/// not multiples of 128 included, which select `bn` = 64).
pub fn variants() -> Vec<KernelVariant> {
    let mut out = Vec::new();
    let base =
        |dtype, activation, bias, bm, (hidden, inter, experts, top_k): (u32, u32, u32, u32)| {
            let bn = widest_bn(activation, dtype, hidden, inter, false);
            MoeSpec {
                dtype,
                activation,
                bias,
                renormalize: true,
                router: RouterSpec::PAPER,
                hidden,
                inter,
                experts,
                router_experts: experts,
                top_k,
                slots: top_k,
                shared_gate: false,
                tile: TileShape::new(bm, bn, bk(dtype)),
                engine: TileEngine::MmaSync,
                router_split: 1,
                router_rows: 64,
                combine: CombineForm::Registers,
                pairs: false,
            }
        };
    for dtype in [DType::Bf16, DType::F16, DType::F32, DType::F32Exact] {
        for activation in [Activation::Relu, Activation::Gelu, Activation::SiluGated] {
            for bm in [64, 128] {
                let spec = base(dtype, activation, bm == 64, bm, (2048, 2048, 32, 2));
                out.push(spec.variant());
                // The same specialisation on the Hopper engine (every tensor-core dtype).
                out.extend(spec.on_hopper().map(|s| s.variant()));
            }
        }
    }
    // A small batch's router split into 8 K parts (T = 128 on an H200), both engines.
    let small = MoeSpec {
        router_split: 8,
        ..base(DType::Bf16, Activation::Relu, false, 64, (2048, 2048, 8, 2))
    };
    out.push(small.variant());
    out.extend(small.on_hopper().map(|s| s.variant()));
    // A large batch's 128-row router jobs (T = 16384 on an H200), both engines, ReLU and SwiGLU.
    for activation in [Activation::Relu, Activation::SiluGated] {
        let large = MoeSpec {
            router_rows: 128,
            ..base(DType::Bf16, activation, false, 128, (2048, 2048, 8, 2))
        };
        out.push(large.variant());
        out.extend(large.on_hopper().map(|s| s.variant()));
    }
    // Every real model's router (and gpt-oss's experts) on the paper-grid shape, both
    // engines (core's small model kinds, without their shared experts).
    for (_, model) in presets::small_model_kinds(DType::Bf16) {
        let router = RouterSpec::of(&model.routing);
        if router == RouterSpec::PAPER && !matches!(model.activation, Activation::SwigluOss(_)) {
            continue;
        }
        let spec = MoeSpec {
            router,
            renormalize: model.renormalize,
            ..base(DType::Bf16, model.activation, model.bias, 128, (2048, 2048, 32, 2))
        };
        out.push(spec.variant());
        out.extend(spec.on_hopper().map(|s| s.variant()));
    }
    // The routed parts of the presets with shared experts, whose routers the kernel computes
    // (DeepSeek-V3's, Kimi-K2's): their first and last-resort specialisations.
    for model in presets::MODELS.iter().filter(|m| m.shared.is_some()) {
        let config = MoeConfig { shared: None, ..model.config() };
        if !computes(&config) || config.routing == Routing::SOFTMAX {
            continue;
        }
        let candidates = MoeSpec::candidates(&config, H200_PROCESSORS, Arch::SM90);
        out.extend(candidates.first().map(MoeSpec::variant));
        out.extend(candidates.last().map(MoeSpec::variant));
    }
    // Shared experts as virtual experts, at the GPU check's small shape ([`shared_kinds`]):
    // DeepSeek-V2's kind (m = 2, grouped softmax router) and Qwen2-MoE's (m = 4, sigmoid gate),
    // on one rank (first and last-resort specialisations) and on four (the first).
    for (world, last) in [(1, true), (4, false)] {
        for (_, config) in shared_kinds(world) {
            let candidates = MoeSpec::candidates(&config, H200_PROCESSORS, Arch::SM90);
            out.extend(candidates.first().map(MoeSpec::variant));
            out.extend(candidates.last().filter(|_| last).map(MoeSpec::variant));
        }
    }
    // Chosen 256-row tiles (`--tile 256x64`: two 64-row slabs a consumer warpgroup;
    // docs/dev/whole-expert-tiles.md), which no preset chooses yet: DeepSeek-V3's layer and
    // gpt-oss-120b's (clamped SwiGLU with biases, a ragged-free 2880 in 64-column tiles).
    let tile = TileChoice::new(256, 64);
    let models =
        ["deepseek-v3", "gpt-oss-120b"].into_iter().filter_map(|n| presets::preset(n).ok());
    // The two-rank kind compiles to the one-rank kind's image.
    let kinds = chosen_tile_kinds()
        .into_iter()
        .filter(|(_, _, config)| config.world == 1)
        .map(|(_, tile, config)| (tile, config));
    for (tile, config) in models.map(|config| (tile, config)).chain(kinds) {
        let spec = MoeSpec::with_tile(&config, H200_PROCESSORS, Arch::SM90, tile);
        out.extend(spec.ok().map(|s| s.variant()));
    }
    // A specialisation with combine tasks streamed, where that applies.
    let streamed = |s: &MoeSpec| {
        Some(s.with_combine(CombineForm::Streamed))
            .filter(|s| s.combine == CombineForm::Streamed)
            .map(|s| s.variant())
    };
    // The model presets' first and last-resort specialisations on an H200 (131 processors):
    // they must compile (`tests/nvrtc_compile.rs` also runs each preset's whole candidate
    // list). Presets the kernel does not compute are refused, never compiled.
    for model in presets::MODELS.iter().filter(|m| computes(&m.config())) {
        let candidates = MoeSpec::candidates(&model.config(), H200_PROCESSORS, Arch::SM90);
        out.extend(
            candidates.first().filter(|s| s.engine != TileEngine::MmaSync).map(MoeSpec::variant),
        );
        out.extend(candidates.last().map(MoeSpec::variant));
        // Their Hopper specialisation with combine tasks streamed, where that applies (4+
        // slots a token: Qwen3, OLMoE, DeepSeek, Kimi-K2 (through its FDM_FRESH_TID fallback),
        // Qwen2, gpt-oss's ragged 2880 tiles).
        out.extend(candidates.first().and_then(streamed));
    }
    // Paired GEMM0 tasks (docs/dev/paired-tasks.md), where a layer's weights stream from HBM:
    // DeepSeek-V3's and Kimi-K2's first specialisations as the build chooses them (combine
    // streamed), paired.
    for config in ["deepseek-v3", "kimi-k2"].into_iter().filter_map(|n| presets::preset(n).ok()) {
        let candidates = MoeSpec::candidates(&config, H200_PROCESSORS, Arch::SM90);
        let first = candidates.first().map(|s| s.with_combine(CombineForm::Streamed));
        out.extend(first.and_then(|s| s.with_pairs().ok()).map(|s| s.variant()));
    }
    // The shared kinds at the GPU check's small shape, streamed (6 and 4 slots a token), and
    // its top-8 layer (64 accumulators a consumer thread: the producer's 96 registers).
    let top8 = MoeConfig { top_k: 8, ..check_layer(DType::Bf16, Activation::SiluGated, false) };
    for config in shared_kinds(1).into_iter().map(|(_, c)| c).chain([top8]) {
        out.extend(
            MoeSpec::candidates(&config, H200_PROCESSORS, Arch::SM90).first().and_then(streamed),
        );
    }
    out
}

/// The GPU check's small layer (`gpu-check`'s `small` cases): one rank of 384 tokens, H 512,
/// I 1024, 8 experts, top-2, dropless, in `dtype` with `activation` and `bias`.
pub fn check_layer(dtype: DType, activation: Activation, bias: bool) -> MoeConfig {
    MoeConfig {
        world: 1,
        tokens_per_rank: 384,
        hidden: 512,
        inter: 1024,
        experts: 8,
        top_k: 2,
        activation,
        bias,
        dtype,
        capacity: flashdmoe_core::CapacityPolicy::Dropless,
        ..MoeConfig::default()
    }
}

/// The GPU check's layers in chosen 256-row tiles (`--tile`; docs/dev/whole-expert-tiles.md),
/// each with its name and tile: SwiGLU in 256x64 (with and without biases, and over two
/// ranks) and ReLU in 256x128, at H 512, I 1024, 8 experts, top-2, bf16, dropless, 1536 tokens
/// a rank (~384 rows an expert: a full and a partial row tile, whose empty slabs are skipped).
/// `gpu-check` verifies them against the oracle and CI compile-checks them ([`variants`]).
pub fn chosen_tile_kinds() -> Vec<(String, TileChoice, MoeConfig)> {
    let layer = |activation, bias, world| MoeConfig {
        world,
        tokens_per_rank: 1536,
        ..check_layer(DType::Bf16, activation, bias)
    };
    let (gated, relu) = (TileChoice::new(256, 64), TileChoice::new(256, 128));
    [
        ("swiglu", gated, layer(Activation::SiluGated, false, 1)),
        ("swiglu bias", gated, layer(Activation::SiluGated, true, 1)),
        ("relu", relu, layer(Activation::Relu, false, 1)),
        ("swiglu virtual P=2", gated, layer(Activation::SiluGated, false, 2)),
    ]
    .into_iter()
    .map(|(name, tile, config)| (format!("{tile} {name}"), tile, config))
    .collect()
}

/// Layers with shared experts of DeepSeek-V2's kind (two shared experts of the routed size:
/// m = 2, its grouped softmax router with scaling) and Qwen2-MoE's (one of four times the
/// routed size: m = 4, its sigmoid gate) at the GPU check's small shape (H 512, I 1024, 8
/// experts a rank, top-2, bf16, dropless) with T 192 (its Hopper tile, 64x64, is the small
/// layers' that compiles without spills; at T 384 the parts' rows ask for 128-row tiles, whose
/// 128x64 Hopper image spills at this shape with or without shared experts) on `world` ranks:
/// what `gpu-check` verifies against the oracle and CI compile-checks ([`variants`]). Each
/// with a name: the kind, `m` and the gate (`qwen2-moe m4 gated`).
pub fn shared_kinds(world: u32) -> Vec<(String, MoeConfig)> {
    presets::small_model_kinds(DType::Bf16)
        .into_iter()
        .filter_map(|(kind, model)| {
            let shared = model.shared?;
            let parts = match kind {
                "deepseek-v2" => 2,
                "qwen2-moe" => 4,
                _ => return None,
            };
            let inter = 1024;
            let gated = if shared.gate == SharedGate::Sigmoid { " gated" } else { "" };
            let config = MoeConfig {
                world,
                tokens_per_rank: 192,
                hidden: 512,
                inter,
                experts: 8 * world,
                shared: Some(flashdmoe_core::SharedExperts {
                    inter: parts * inter / shared.count,
                    ..shared
                }),
                ..model
            };
            Some((format!("{kind} m{parts}{gated}"), config))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique() {
        let v = variants();
        let mut labels: Vec<_> = v.iter().map(|v| v.label.clone()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), v.len());
    }
}
