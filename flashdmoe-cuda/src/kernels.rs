//! The CUDA sources of the crate, embedded from `flashdmoe-cuda/kernels/`, and the types that
//! name one compilation: a [`KernelSource`], its [`Defines`], a [`KernelVariant`] and the
//! [`Targets`] it is meant for.
//!
//! A registry only: it compiles nothing ([`crate::jit`] does) and does not know which variants
//! exist ([`crate::variants`] lists them, each family's module builds its own).
//!
//! ## Invariants
//!
//! * No CUDA text lives in Rust: every source and header is `include_str!`-ed from
//!   `kernels/`, so the files there are exactly what NVRTC compiles.
//! * Every compilation sees every project header ([`HEADERS`]) under its file name, so a
//!   kernel includes them as `#include "fdm_proto.h"`; the cache key covers all of them.
//! * `fdm_proto.h` is generated: it equals [`flashdmoe_proto::c_header`] byte for byte
//!   (tested; regenerate with `cargo run -p flashdmoe-cuda --example gen-header`).
//! * Every translation unit the crate compiles is a constant here ([`MOE`], [`TILE_BENCH`],
//!   [`SELFTEST`]).

use std::collections::BTreeMap;
use std::fmt;

use crate::arch::Arch;
use crate::error::{CudaError, Result};

/// A `.cu` translation unit with one `extern "C" __global__` entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelSource {
    /// File name under `kernels/` (also NVRTC's program name, shown in diagnostics).
    pub file: &'static str,
    /// The source text.
    pub text: &'static str,
    /// The unmangled name of the entry point.
    pub entry: &'static str,
}

impl KernelSource {
    /// Checks what NVRTC would otherwise reject late or obscurely: a non-empty file name and an
    /// entry point that is a C identifier ([`CudaError::InvalidSource`]).
    pub fn validate(&self) -> Result<()> {
        let invalid =
            |reason| Err(CudaError::InvalidSource { kernel: self.file.to_owned(), reason });
        if self.file.is_empty() {
            return invalid("the file name is empty");
        }
        if !is_identifier(self.entry) {
            return invalid("the entry point must be a C identifier");
        }
        Ok(())
    }
}

/// A project header, visible to every kernel under `name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The include name (`#include "<name>"`).
    pub name: &'static str,
    /// The header text.
    pub text: &'static str,
}

/// The generated protocol header (structs, constants, layout functions).
pub const PROTO_HEADER: Header =
    Header { name: "fdm_proto.h", text: include_str!("../kernels/fdm_proto.h") };

/// The generated launch-parameter header of the MoE kernel (see [`crate::params`]).
pub const PARAMS_HEADER: Header =
    Header { name: "fdm_params.h", text: include_str!("../kernels/fdm_params.h") };

/// The generated wgmma instruction wrappers of the Hopper engine (see [`crate::wgmma`]).
pub const WGMMA_OPS_HEADER: Header =
    Header { name: "fdm_wgmma_ops.h", text: include_str!("../kernels/fdm_wgmma_ops.h") };

/// The router's per-token math, plain C++ shared by the kernel (topk.cuh) and its host test
/// (`tests/router_math.rs`).
pub const ROUTER_MATH_HEADER: Header =
    Header { name: "router_math.h", text: include_str!("../kernels/router_math.h") };

/// The gated experts' activation, plain C++ shared by both engines' epilogues and its host test
/// (`tests/activation_math.rs`).
pub const ACTIVATION_MATH_HEADER: Header =
    Header { name: "activation_math.h", text: include_str!("../kernels/activation_math.h") };

/// Every project header, in the order given to NVRTC.
pub const HEADERS: &[Header] = &[
    PROTO_HEADER,
    Header { name: "tile_gemm.cuh", text: include_str!("../kernels/tile_gemm.cuh") },
    PARAMS_HEADER,
    Header { name: "hopper.cuh", text: include_str!("../kernels/hopper.cuh") },
    WGMMA_OPS_HEADER,
    Header { name: "tile_wgmma.cuh", text: include_str!("../kernels/tile_wgmma.cuh") },
    ROUTER_MATH_HEADER,
    ACTIVATION_MATH_HEADER,
    // The MoE kernel's roles (kernels/moe.cu lists them).
    Header { name: "config.cuh", text: include_str!("../kernels/config.cuh") },
    Header { name: "sync.cuh", text: include_str!("../kernels/sync.cuh") },
    Header { name: "heap.cuh", text: include_str!("../kernels/heap.cuh") },
    Header { name: "topk.cuh", text: include_str!("../kernels/topk.cuh") },
    Header { name: "router_wgmma.cuh", text: include_str!("../kernels/router_wgmma.cuh") },
    Header { name: "route.cuh", text: include_str!("../kernels/route.cuh") },
    Header { name: "dispatch.cuh", text: include_str!("../kernels/dispatch.cuh") },
    Header { name: "queue.cuh", text: include_str!("../kernels/queue.cuh") },
    Header { name: "mailbox.cuh", text: include_str!("../kernels/mailbox.cuh") },
    Header { name: "waves.cuh", text: include_str!("../kernels/waves.cuh") },
    Header { name: "subscriber.cuh", text: include_str!("../kernels/subscriber.cuh") },
    Header { name: "scheduler.cuh", text: include_str!("../kernels/scheduler.cuh") },
    Header { name: "placer.cuh", text: include_str!("../kernels/placer.cuh") },
    Header { name: "combine.cuh", text: include_str!("../kernels/combine.cuh") },
    Header { name: "combine_stream.cuh", text: include_str!("../kernels/combine_stream.cuh") },
    Header { name: "completion.cuh", text: include_str!("../kernels/completion.cuh") },
    Header { name: "processor.cuh", text: include_str!("../kernels/processor.cuh") },
    Header { name: "processor_wgmma.cuh", text: include_str!("../kernels/processor_wgmma.cuh") },
];

/// The persistent MoE kernel (specialised by [`crate::spec::MoeSpec`]).
pub const MOE: KernelSource = KernelSource {
    file: "moe.cu",
    text: include_str!("../kernels/moe.cu"),
    entry: "fdm_moe_forward",
};

/// The standalone tile-engine benchmark (see [`crate::tile_bench`]).
pub const TILE_BENCH: KernelSource = KernelSource {
    file: "tile_bench.cu",
    text: include_str!("../kernels/tile_bench.cu"),
    entry: "fdm_tile_bench",
};

/// The device self-test: cooperative grid arrival, dynamic shared memory, a by-value
/// parameter block and the protocol header's signal helpers (see [`crate::selftest`]).
pub const SELFTEST: KernelSource = KernelSource {
    file: "selftest.cu",
    text: include_str!("../kernels/selftest.cu"),
    entry: "fdm_selftest",
};

/// A kernel experiment: a define the kernel tests with `#ifdef`, off by default, that a GPU run
/// measures against the default in one binary through [`crate::JitConfig::extra_defines`]
/// (`FLASHDMOE_EXTRA_DEFINES`; docs/dev/gpu-queue.md). Listed so that CI compiles each: an
/// experiment that stopped compiling fails here, not on a GPU. One is removed once measured
/// (kept as the default, or dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelExperiment {
    /// The defines: `NAME`, `NAME=VALUE`, or a comma-separated list of them (as
    /// `FLASHDMOE_EXTRA_DEFINES` takes it: an experiment built on another names both).
    pub define: &'static str,
    /// What it changes, and where.
    pub what: &'static str,
}

/// The kernel experiments waiting for a GPU run (run 136 measured FDM_WG_EPILOGUE,
/// per-warpgroup epilogues, level and dropped; run 130 FDM_RELAXED_COMPLETION, kept as the
/// default after a fence; runs 127-129 session 23's four, FDM_PREFETCH_WEIGHTS and
/// FDM_WARP0_PUBLISHES: perf-notes v38-v40; run 145 FDM_CLUSTER_PROBE, the kernel in 2-CTA
/// clusters, launched and verified, removed: perf-notes v41 (g); run 146 FDM_A2_PAIRS, A2 two
/// tokens a warp, level, removed: perf-notes v42 (a); run 159 FDM_NO_NARROW, narrow ≤ half
/// tiles, level, and run 160 FDM_L2_WEIGHTS_FIRST (lost 4.5%) and FDM_L2_ROWS_LAST (level),
/// removed, their patches beside the runs' scripts: perf-notes v44; run 161
/// FDM_B_PREFETCH_AHEAD=8 (lost 27%) and FDM_GEMM1_HALF_CPASYNC (level), removed, one patch
/// beside run 161's script: perf-notes v44 (d), (e); run 167 FDM_A2_AHEAD2, A2's logits two
/// tokens ahead, level, removed, its patch beside run 167's script: perf-notes v45 (c); run 175
/// FDM_SCHED_EARLY, the scheduler warp before the in-place dispatch signals, kept as the
/// default: perf-notes v47 (a); run 177-178 FDM_TWO_WAVES, the OS block posting a second
/// wave, level on the new T128 tiles, removed, its patch beside run 178's script: perf-notes
/// v47 (b); run 180 FDM_ONE_CHUNK_PLACE, A3 without its grid barrier at T <= 128, kept as the
/// default: perf-notes v48 (a); runs 180-182 FDM_GEMM1_EARLY, the second wave, kept as the
/// default in its third form: perf-notes v48 (b); run 184 FDM_THIRD_WAVE, the combines posted
/// with the second wave, kept as the default: perf-notes v49 (a); run 186 FDM_GEMM1_DEFER,
/// the GEMM1s' second column groups at the log's end, mixed (T4096 E8 / E32 -2.5%, T16384 E8
/// +2%, T4096 E128 +3%), removed, its patch beside run 186's script: perf-notes v49 (c); run
/// 187 FDM_PDL, the kernel launched with programmatic stream serialization, level, removed,
/// its patch beside run 187's script: perf-notes v49 (d); run 189 FDM_GEMM1_WINDOW, the
/// GEMM1s' second column groups a window of row tiles behind, mixed (T16384 E128 -3%, E8 +3%,
/// T4096 E128 +2%), removed, its patch beside run 189's script: perf-notes v50 (a); runs 188, 192-193
/// FDM_BULK_DISPATCH, A4's rows by bulk copies, level with the register copies at P = 2 at
/// every copier count, removed, its patch beside run 193's script: perf-notes v51 (a); runs
/// 195-199 FDM_REDUCE_RETURN, GEMM1's rows reduced into the output, with FDM_REDUCE_BULK and
/// FDM_REDUCE_ZERO_ASYNC, exact, T128 -3.5%, T16384 +1.5%, removed, their patch beside run
/// 199's script: perf-notes v52 (a); run 200 A2's token half a lane group a token, level,
/// removed, its patch beside run 200's script: perf-notes v52 (b)), and diagnostics a GPU run
/// switches on. Waiting for a GPU: FDM_TMA_STORE, alone and with FDM_TMA_STORE_GEMM1 (perf-notes
/// v52 (e)); FDM_SELF_WAVE, FDM_A3_DEEP, FDM_ROUTER_WGMMA (v53); FDM_STREAM (v55).
pub const EXPERIMENTS: &[KernelExperiment] = &[
    KernelExperiment {
        define: "FDM_DEBUG_COMBINE_TIMEOUT",
        what: "scheduler.cuh: a combine-slot timeout reports the first (group, column) combine \
               counter off its expected count in the report's `seen` word (bits 63..48 g * cth \
               + col, 47..32 the counter, 31..16 the expected count): the mma.sync engine's \
               open combine timeout (docs/dev/gpu-queue.md)",
    },
    KernelExperiment {
        define: "FDM_TMA_STORE",
        what: "tile_wgmma.cuh store_either: a GEMM0 tile's staged chunks leave by tensor stores \
               through GEMM1's A map of the intermediate rows (consumer 0 issues one a chunk and \
               waits for its reads; warp 0 waits for the writes before it announces the tile) \
               instead of the consumers' 16-byte copies, the copy-out's ~3% of a task (perf-notes \
               v20, v52 (e))",
    },
    KernelExperiment {
        define: "FDM_TMA_STORE,FDM_TMA_STORE_GEMM1",
        what: "processor_wgmma.cuh gemm_consume: FDM_TMA_STORE's tensor stores for GEMM1's tiles \
               too, where the tile's source is on this GPU (the source's return rows mapped as \
               `tmap_return`, layer/upload.rs row_maps)",
    },
    KernelExperiment {
        define: "FDM_SELF_WAVE",
        what: "waves.cuh own_first_task: a first-wave processor derives its task number 0 from \
               the placement and starts it at once instead of waiting ~7 µs for the OS block's \
               post, which its consumers check before they publish the task (perf-notes v53 (a))",
    },
    KernelExperiment {
        define: "FDM_A3_DEEP",
        what: "route.cuh place_chunks: a thread's sum of the earlier chunks' counts loads 16 at \
               once (predicated) instead of 8 at a time and the remainder one by one: T16384 \
               E128's placement ~11 -> ~4 µs predicted (perf-notes v53 (b))",
    },
    KernelExperiment {
        define: "FDM_STREAM=32",
        what: "placer.cuh: the streamed placement (core's runtime::Placer; \
               docs/dev/streamed-placement.md): on one GPU holding a world of one rank and more \
               than one routing chunk, phase A is the counter reset and one grid barrier; the \
               first 32 processors route and place chunk by chunk, and each completed row \
               tile's GEMM0 tasks are queued at once, so the others start before the last token \
               is routed (T16384 E8 ~-3%, T4096 E8 ~-5% predicted; E128's row tiles need half \
               the tokens each: level)",
    },
    KernelExperiment {
        define: "FDM_ROUTER_WGMMA",
        what: "router_wgmma.cuh: A1's router tile of 64 or 128 columns on the first two \
               warpgroups' wgmmas from the mma.sync tile's own stages (the same loads; \
               docs/dev/router-wgmma.md), T16384 E128's router jobs 32 -> ~23 µs predicted \
               (perf-notes v53 (d))",
    },
];

/// Preprocessor defines (`-DNAME` / `-DNAME=VALUE`) specialising a kernel. Kept sorted by name
/// so equal sets give equal options (and cache keys) whatever the insertion order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Defines(BTreeMap<String, Option<String>>);

impl Defines {
    /// No defines.
    pub fn new() -> Defines {
        Defines::default()
    }

    /// Adds (or replaces) `-DNAME=VALUE`.
    pub fn set(mut self, name: impl Into<String>, value: impl fmt::Display) -> Defines {
        self.0.insert(name.into(), Some(value.to_string()));
        self
    }

    /// Adds (or replaces) `-DNAME` (defined as 1).
    pub fn flag(mut self, name: impl Into<String>) -> Defines {
        self.0.insert(name.into(), None);
        self
    }

    /// `(name, value)` pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.0.iter().map(|(name, value)| (name.as_str(), value.as_deref()))
    }

    /// Checks every name is a C identifier and no value holds a control character.
    pub fn validate(&self) -> Result<()> {
        for (name, value) in self.iter() {
            let invalid = |reason| Err(CudaError::InvalidDefine { name: name.to_owned(), reason });
            if !is_identifier(name) {
                return invalid("the name must be a C identifier");
            }
            if value.is_some_and(|v| v.chars().any(char::is_control)) {
                return invalid("the value must not contain control characters");
            }
        }
        Ok(())
    }

    /// Parses a comma-separated list of `NAME` or `NAME=VALUE` (the form of
    /// `FLASHDMOE_EXTRA_DEFINES`; surrounding spaces and empty items are ignored). Names are
    /// checked by [`Defines::validate`] when a kernel is compiled, which names a bad one.
    pub fn parse_list(list: &str) -> Defines {
        list.split(',').map(str::trim).filter(|item| !item.is_empty()).fold(
            Defines::new(),
            |defines, item| match item.split_once('=') {
                Some((name, value)) => defines.set(name.trim(), value.trim()),
                None => defines.flag(item),
            },
        )
    }

    /// These defines with `other`'s added (`other` wins a name both set).
    pub fn with(mut self, other: &Defines) -> Defines {
        self.0.extend(other.0.iter().map(|(name, value)| (name.clone(), value.clone())));
        self
    }

    /// Whether no define is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each define as `NAME=VALUE` or `NAME`, in name order: the items of
    /// [`Defines::parse_list`]'s list, which `items().join(",")` writes back.
    pub fn items(&self) -> impl Iterator<Item = String> + '_ {
        self.iter().map(|(name, value)| item(name, value))
    }

    /// The NVRTC options: `-DNAME=VALUE` or `-DNAME`, in name order.
    pub(crate) fn options(&self) -> impl Iterator<Item = String> + '_ {
        self.items().map(|item| format!("-D{item}"))
    }
}

/// One define as `NAME=VALUE`, or `NAME` without a value.
fn item(name: &str, value: Option<&str>) -> String {
    value.map_or_else(|| name.to_owned(), |v| format!("{name}={v}"))
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One compilable specialisation: a source plus its `-D` defines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelVariant {
    /// Short human-readable name (shown by the compile check).
    pub label: String,
    /// The translation unit.
    pub source: KernelSource,
    /// The specialisation.
    pub defines: Defines,
    /// A more conservative specialisation to compile instead when `defines` makes ptxas
    /// spill registers (its heuristics sit at the 255-register edge for the widest tiles and
    /// flip with unrelated code changes): [`crate::Jit::compile_variant`] falls back to it.
    pub fallback: Option<Defines>,
    /// The architectures it is meant for.
    pub targets: Targets,
}

/// Which architectures a variant compiles for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Targets {
    /// Every architecture of [`Arch::SUPPORTED`] (portable code: mma.sync, cp.async).
    Portable,
    /// Hopper's architecture-specific `sm_90a` only (wgmma, TMA, setmaxnreg).
    Hopper,
}

impl KernelVariant {
    /// The defines its fallback sets differently from its own, as `NAME` or `NAME=VALUE`
    /// (empty without a fallback): what a report names when the fallback was compiled.
    pub fn fallback_changes(&self) -> Vec<String> {
        let Some(fallback) = &self.fallback else { return Vec::new() };
        fallback
            .iter()
            .filter(|&(name, value)| {
                self.defines.iter().find(|&(own, _)| own == name).map(|(_, v)| v) != Some(value)
            })
            .map(|(name, value)| item(name, value))
            .collect()
    }

    /// The architectures the CI compile check compiles this variant for.
    pub fn archs(&self) -> &'static [Arch] {
        match self.targets {
            Targets::Portable => &Arch::SUPPORTED,
            Targets::Hopper => &[Arch::SM90A],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every define of an experiment is one a kernel source tests: a renamed or removed
    /// `#ifdef` would otherwise leave the GPU run measuring the default twice.
    #[test]
    fn every_experiment_is_tested_by_a_kernel_source() {
        for experiment in EXPERIMENTS {
            for (name, _) in Defines::parse_list(experiment.define).iter() {
                let test = format!("#ifdef {name}");
                assert!(
                    HEADERS.iter().any(|h| h.text.contains(&test)) || MOE.text.contains(&test),
                    "{}: no kernel source has `{test}`",
                    experiment.define
                );
            }
        }
    }

    #[test]
    fn proto_header_is_current() {
        assert!(
            PROTO_HEADER.text == flashdmoe_proto::c_header(),
            "flashdmoe-cuda/kernels/fdm_proto.h is stale: regenerate it with \
             `cargo run -p flashdmoe-cuda --example gen-header` and commit the result"
        );
    }

    #[test]
    fn wgmma_ops_header_is_current() {
        assert!(
            WGMMA_OPS_HEADER.text == crate::wgmma::ops_header(),
            "flashdmoe-cuda/kernels/fdm_wgmma_ops.h is stale: regenerate it with \
             `cargo run -p flashdmoe-cuda --example gen-header` and commit the result"
        );
    }

    #[test]
    fn params_header_is_current() {
        assert!(
            PARAMS_HEADER.text == crate::params::params_header(),
            "flashdmoe-cuda/kernels/fdm_params.h is stale: regenerate it with \
             `cargo run -p flashdmoe-cuda --example gen-header` and commit the result"
        );
    }

    /// A volatile access of a field of the `__grid_constant__` parameter block (through `p`,
    /// `r.p` or `params`) compiles to a generic load from address 0 plus the field's offset:
    /// run 103's helpers build read `&p->blocks_per_rank` so and faulted in every processor
    /// (perf-notes v33 (a)). A field reached through a pointer the block holds
    /// (`&p->diag->abort`) is global memory and fine.
    #[test]
    fn no_source_reads_the_parameter_block_through_a_volatile_pointer() {
        let sources = HEADERS
            .iter()
            .map(|h| (h.name, h.text))
            .chain([MOE, TILE_BENCH, SELFTEST].iter().map(|k| (k.file, k.text)));
        for (name, text) in sources {
            for (n, line) in text.lines().enumerate() {
                if !line.contains("volatile") {
                    continue;
                }
                for base in ["&p->", "&r.p->", "&params.", "&p."] {
                    for (at, _) in line.match_indices(base) {
                        let rest = &line[at + base.len()..];
                        let field: String =
                            rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                        let after = &rest[field.len()..];
                        assert!(
                            field.is_empty() || after.starts_with("->"),
                            "{name}:{}: a volatile access of the parameter block's field `{field}`: \
                             {line}",
                            n + 1
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn header_names_are_unique() {
        for (i, a) in HEADERS.iter().enumerate() {
            assert!(HEADERS[i + 1..].iter().all(|b| b.name != a.name), "{} twice", a.name);
        }
    }

    #[test]
    fn defines_are_sorted_and_validated() {
        let d = Defines::new().set("FDM_BN", 128).flag("FDM_GATED").set("FDM_BM", 64);
        let options: Vec<String> = d.options().collect();
        assert_eq!(options, ["-DFDM_BM=64", "-DFDM_BN=128", "-DFDM_GATED"]);
        assert_eq!(d, Defines::new().set("FDM_BM", 64).flag("FDM_GATED").set("FDM_BN", 128));
        assert!(d.validate().is_ok());
        assert!(Defines::new().set("X", "a b(c)").validate().is_ok(), "spaces are fine");

        for (name, value) in [("1X", "1"), ("", "1"), ("A-B", "1"), ("A B", "1"), ("OK", "x\ny")] {
            match Defines::new().set(name, value).validate() {
                Err(CudaError::InvalidDefine { name: n, .. }) => assert_eq!(n, name),
                other => panic!("{name:?}={value:?} accepted: {other:?}"),
            }
        }
    }

    #[test]
    fn a_fallback_is_named_by_what_it_changes() {
        let variant = KernelVariant {
            label: "v".into(),
            source: MOE,
            defines: Defines::new().set("FDM_BM", 128).set("FDM_FRAG_PIPE", 1),
            fallback: Some(
                Defines::new().set("FDM_BM", 128).set("FDM_FRAG_PIPE", 0).flag("FDM_FRESH_TID"),
            ),
            targets: Targets::Hopper,
        };
        assert_eq!(variant.fallback_changes(), ["FDM_FRAG_PIPE=0", "FDM_FRESH_TID"]);
        assert!(KernelVariant { fallback: None, ..variant }.fallback_changes().is_empty());
    }

    #[test]
    fn extra_define_lists_parse_and_override() {
        let extra = Defines::parse_list(" FDM_LEADER_FENCE , FDM_STAGES=2,, ");
        assert_eq!(extra, Defines::new().flag("FDM_LEADER_FENCE").set("FDM_STAGES", 2));
        assert!(Defines::parse_list("").is_empty());
        let merged = Defines::new().set("FDM_STAGES", 4).set("FDM_BM", 128).with(&extra);
        assert_eq!(
            merged,
            Defines::new().set("FDM_BM", 128).set("FDM_STAGES", 2).flag("FDM_LEADER_FENCE")
        );
        // A bad name parses and is refused, named, when a kernel would be compiled with it.
        match Defines::parse_list("FDM_OK,2BAD=1").validate() {
            Err(CudaError::InvalidDefine { name, .. }) => assert_eq!(name, "2BAD"),
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn malformed_sources_are_rejected_before_nvrtc() {
        let ok = KernelSource { file: "k.cu", text: "", entry: "k" };
        assert!(ok.validate().is_ok());
        for bad in [
            KernelSource { file: "", ..ok },
            KernelSource { entry: "not an identifier", ..ok },
            KernelSource { entry: "", ..ok },
        ] {
            assert!(matches!(bad.validate(), Err(CudaError::InvalidSource { .. })));
        }
    }
}
