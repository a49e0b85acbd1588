//! The C header the CUDA kernel includes, generated from the Rust definitions.
//!
//! [`c_header`] emits the constants, the `fdm_task` and `fdm_layout` structs (field for field
//! the same as [`TaskDescriptor`] and [`LayoutParams`], with `static_assert`s on every size and
//! field offset computed here by `offset_of!`), the signal-word helpers and the layout offset
//! functions. The header compiles as CUDA C++ (NVRTC or nvcc) and as host C++17.

use alloc::format;
use alloc::string::String;
use core::fmt::Write;
use core::mem::{align_of, offset_of, size_of};

use crate::layout::{
    ALIGN, COUNTER_BYTES, LayoutParams, MAX_COMBINE_GROUPS, SIGNAL_BYTES, WEIGHT_BYTES,
};
use crate::task::{NO_OFFSET, TASK_BYTES, TaskDescriptor, TaskKind};

/// Field names and C types of [`TaskDescriptor`], in declaration order.
const TASK_FIELDS: [(&str, &str, usize); 12] = [
    ("kind", "unsigned int", offset_of!(TaskDescriptor, kind)),
    ("source_rank", "unsigned int", offset_of!(TaskDescriptor, source_rank)),
    ("owner_rank", "unsigned int", offset_of!(TaskDescriptor, owner_rank)),
    ("local_expert", "unsigned int", offset_of!(TaskDescriptor, local_expert)),
    ("row_tile", "unsigned int", offset_of!(TaskDescriptor, row_tile)),
    ("col_tile", "unsigned int", offset_of!(TaskDescriptor, col_tile)),
    ("valid_rows", "unsigned int", offset_of!(TaskDescriptor, valid_rows)),
    ("epoch", "unsigned int", offset_of!(TaskDescriptor, epoch)),
    ("input_offset", "unsigned long long", offset_of!(TaskDescriptor, input_offset)),
    ("output_offset", "unsigned long long", offset_of!(TaskDescriptor, output_offset)),
    ("signal_offset", "unsigned long long", offset_of!(TaskDescriptor, signal_offset)),
    ("counter_offset", "unsigned long long", offset_of!(TaskDescriptor, counter_offset)),
];

/// Field names and C types of [`LayoutParams`], in declaration order.
const LAYOUT_FIELDS: [(&str, &str, usize); 23] = [
    ("world", "unsigned int", offset_of!(LayoutParams, world)),
    ("local_experts", "unsigned int", offset_of!(LayoutParams, local_experts)),
    ("tokens", "unsigned int", offset_of!(LayoutParams, tokens)),
    ("capacity", "unsigned int", offset_of!(LayoutParams, capacity)),
    ("hidden", "unsigned int", offset_of!(LayoutParams, hidden)),
    ("inter", "unsigned int", offset_of!(LayoutParams, inter)),
    ("elem_bytes", "unsigned int", offset_of!(LayoutParams, elem_bytes)),
    ("bm", "unsigned int", offset_of!(LayoutParams, bm)),
    ("bn", "unsigned int", offset_of!(LayoutParams, bn)),
    ("bk", "unsigned int", offset_of!(LayoutParams, bk)),
    ("row_tiles", "unsigned int", offset_of!(LayoutParams, row_tiles)),
    ("token_tiles", "unsigned int", offset_of!(LayoutParams, token_tiles)),
    ("bn_hidden", "unsigned int", offset_of!(LayoutParams, bn_hidden)),
    ("gemm0_group", "unsigned int", offset_of!(LayoutParams, gemm0_group)),
    ("dispatch_signals", "unsigned long long", offset_of!(LayoutParams, dispatch_signals)),
    ("return_signals", "unsigned long long", offset_of!(LayoutParams, return_signals)),
    ("row_tile_counters", "unsigned long long", offset_of!(LayoutParams, row_tile_counters)),
    ("combine_counters", "unsigned long long", offset_of!(LayoutParams, combine_counters)),
    ("dispatch_rows", "unsigned long long", offset_of!(LayoutParams, dispatch_rows)),
    ("return_rows", "unsigned long long", offset_of!(LayoutParams, return_rows)),
    ("intermediate_rows", "unsigned long long", offset_of!(LayoutParams, intermediate_rows)),
    ("dispatch_weights", "unsigned long long", offset_of!(LayoutParams, dispatch_weights)),
    ("total", "unsigned long long", offset_of!(LayoutParams, total)),
];

/// One field of a C struct mirrored from a `#[repr(C)]` Rust struct: `(name, C type, byte
/// offset)`. An array member is written `"T@[N]"` (declared `T name[N];`).
pub type CField = (&'static str, &'static str, usize);

/// Appends `typedef struct name { ... } name;` for `fields`, followed by `static_assert`s on
/// its size and alignment and an `FDM_ASSERT_OFFSET` per field (defined by [`c_header`], so
/// headers built with this include `fdm_proto.h` first). Used for the protocol's own structs
/// and by other crates that pass their own `#[repr(C)]` structs to the same kernels.
pub fn c_struct(out: &mut String, name: &str, fields: &[CField], size: usize, align: usize) {
    let _ = writeln!(out, "typedef struct {name} {{");
    for (field, ty, _) in fields {
        match ty.split_once('@') {
            Some((ty, dims)) => {
                let _ = writeln!(out, "    {ty} {field}{dims};");
            }
            None => {
                let _ = writeln!(out, "    {ty} {field};");
            }
        }
    }
    let _ = writeln!(out, "}} {name};");
    let _ = writeln!(
        out,
        "static_assert(sizeof({name}) == {size}, \"{name} size drifted from Rust\");"
    );
    let _ = writeln!(
        out,
        "static_assert(alignof({name}) == {align}, \"{name} alignment drifted from Rust\");"
    );
    for (field, _, offset) in fields {
        let _ = writeln!(out, "FDM_ASSERT_OFFSET({name}, {field}, {offset});");
    }
    out.push('\n');
}

/// The complete header text. Deterministic: the committed copy in the CUDA crate is checked
/// against it.
pub fn c_header() -> String {
    let mut out = String::new();
    out.push_str(
        "// fdm_proto.h -- GENERATED by flashdmoe_proto::c_header(). Do not edit by hand:\n\
         // regenerate with `cargo run -p flashdmoe-cuda --example gen-header` (see docs/protocol.md).\n\
         #pragma once\n\n\
         #if defined(__CUDACC__) || defined(__CUDACC_RTC__)\n\
         #define FDM_FN __host__ __device__ __forceinline__\n\
         #else\n\
         #define FDM_FN static inline\n\
         #endif\n\
         // Field offsets are checked wherever offsetof is a constant expression (host C++,\n\
         // nvcc); NVRTC's front end has none, so there only the sizes are checked, and the\n\
         // host-compiler test in flashdmoe-proto pins the offsets (same C layout rules).\n\
         #if defined(__CUDACC_RTC__)\n\
         #define FDM_ASSERT_OFFSET(type, field, offset) static_assert(true, \"\")\n\
         #else\n\
         #include <stddef.h>\n\
         #define FDM_ASSERT_OFFSET(type, field, offset) \\\n\
             static_assert(offsetof(type, field) == (offset), #type \".\" #field \" offset drifted from Rust\")\n\
         #endif\n\
         \n",
    );
    let consts = [
        ("FDM_ALIGN", format!("{ALIGN}ull")),
        ("FDM_SIGNAL_BYTES", format!("{SIGNAL_BYTES}ull")),
        ("FDM_COUNTER_BYTES", format!("{COUNTER_BYTES}ull")),
        ("FDM_WEIGHT_BYTES", format!("{WEIGHT_BYTES}ull")),
        ("FDM_MAX_COMBINE_GROUPS", format!("{MAX_COMBINE_GROUPS}u")),
        ("FDM_PLACED_PADDED", format!("{}u", crate::graph::PLACED_PADDED)),
        ("FDM_TASK_BYTES", format!("{TASK_BYTES}")),
        ("FDM_NO_OFFSET", format!("0x{NO_OFFSET:X}ull")),
        ("FDM_STAGE_DISPATCH", "0".into()),
        ("FDM_STAGE_RETURN", "1".into()),
    ];
    for (name, value) in consts {
        let _ = writeln!(out, "#define {name} {value}");
    }
    for kind in TaskKind::ALL {
        let _ = writeln!(out, "#define FDM_TASK_{} {}", kind.name().to_uppercase(), kind as u32);
    }
    out.push('\n');
    c_struct(
        &mut out,
        "fdm_task",
        &TASK_FIELDS,
        size_of::<TaskDescriptor>(),
        align_of::<TaskDescriptor>(),
    );
    c_struct(
        &mut out,
        "fdm_layout",
        &LAYOUT_FIELDS,
        size_of::<LayoutParams>(),
        align_of::<LayoutParams>(),
    );
    out.push_str(LAYOUT_FUNCTIONS);
    out
}

/// The offset helpers, written once in C and checked against [`crate::HeapLayout`] by tests.
/// Callers pass in-range indices (the kernel only forms them from validated counts).
const LAYOUT_FUNCTIONS: &str = r#"// ---- signal words: epoch in bits 63..32, payload in bits 31..0 ----
FDM_FN unsigned long long fdm_signal(unsigned int epoch, unsigned int payload) {
    return ((unsigned long long)epoch << 32) | payload;
}
FDM_FN unsigned int fdm_signal_epoch(unsigned long long word) { return (unsigned int)(word >> 32); }
FDM_FN unsigned int fdm_signal_payload(unsigned long long word) { return (unsigned int)word; }
FDM_FN unsigned int fdm_epoch_next(unsigned int epoch) { return epoch == 0xFFFFFFFFu ? 1u : epoch + 1u; }

// ---- tiles ----
FDM_FN unsigned int fdm_div_ceil(unsigned int n, unsigned int d) { return n / d + (n % d != 0u ? 1u : 0u); }
FDM_FN unsigned int fdm_tile_rows(unsigned int rows, unsigned int row_tile, unsigned int bm) {
    unsigned long long start = (unsigned long long)row_tile * bm;
    if (start >= rows) return 0u;
    unsigned int left = rows - (unsigned int)start;
    return left < bm ? left : bm;
}
FDM_FN unsigned int fdm_col_tiles_hidden(const fdm_layout* l) { return fdm_div_ceil(l->hidden, l->bn_hidden); }
FDM_FN unsigned int fdm_col_tiles_inter(const fdm_layout* l) { return fdm_div_ceil(l->inter, l->bn); }
// Columns of column tile `col_tile` of an output `n` wide in tiles of `bn` (a ragged last tile
// has fewer; 0 past it): layout::tile_cols.
FDM_FN unsigned int fdm_tile_cols(unsigned int n, unsigned int bn, unsigned int col_tile) {
    unsigned long long start = (unsigned long long)col_tile * bn;
    if (start >= n) return 0u;
    return n - start < bn ? (unsigned int)(n - start) : bn;
}

// ---- heap offsets (bytes from the heap base) ----
FDM_FN unsigned long long fdm_packet_index(const fdm_layout* l, unsigned int peer, unsigned int le) {
    return (unsigned long long)peer * l->local_experts + le;
}
FDM_FN unsigned long long fdm_dispatch_signal(const fdm_layout* l, unsigned int source, unsigned int le) {
    return l->dispatch_signals + fdm_packet_index(l, source, le) * FDM_SIGNAL_BYTES;
}
FDM_FN unsigned int fdm_return_tile_id(const fdm_layout* l, unsigned int row_tile, unsigned int col_tile) {
    return row_tile * fdm_col_tiles_hidden(l) + col_tile;
}
FDM_FN unsigned long long fdm_return_signal(const fdm_layout* l, unsigned int owner, unsigned int le,
                                            unsigned int row_tile, unsigned int col_tile) {
    unsigned long long per_packet = (unsigned long long)l->row_tiles * fdm_col_tiles_hidden(l);
    return l->return_signals
        + (fdm_packet_index(l, owner, le) * per_packet + fdm_return_tile_id(l, row_tile, col_tile)) * FDM_SIGNAL_BYTES;
}
FDM_FN unsigned long long fdm_row_tile_counter(const fdm_layout* l, unsigned int source, unsigned int le,
                                               unsigned int row_tile) {
    return l->row_tile_counters + (fdm_packet_index(l, source, le) * l->row_tiles + row_tile) * FDM_COUNTER_BYTES;
}
FDM_FN unsigned int fdm_combine_groups_max(const fdm_layout* l) {
    return l->token_tiles < FDM_MAX_COMBINE_GROUPS ? l->token_tiles : FDM_MAX_COMBINE_GROUPS;
}
FDM_FN unsigned long long fdm_combine_counter(const fdm_layout* l, unsigned int group, unsigned int col_tile) {
    return l->combine_counters
        + ((unsigned long long)group * fdm_col_tiles_hidden(l) + col_tile) * FDM_COUNTER_BYTES;
}
FDM_FN unsigned long long fdm_element(const fdm_layout* l, unsigned long long base, unsigned int peer,
                                      unsigned int le, unsigned int row, unsigned int col, unsigned int width) {
    unsigned long long r = fdm_packet_index(l, peer, le) * l->capacity + row;
    return base + (r * width + col) * l->elem_bytes;
}
FDM_FN unsigned long long fdm_row(const fdm_layout* l, unsigned int stage, unsigned int peer, unsigned int le,
                                  unsigned int row, unsigned int col) {
    unsigned long long base = stage == FDM_STAGE_DISPATCH ? l->dispatch_rows : l->return_rows;
    return fdm_element(l, base, peer, le, row, col, l->hidden);
}
FDM_FN unsigned long long fdm_intermediate_row(const fdm_layout* l, unsigned int source, unsigned int le,
                                               unsigned int row, unsigned int col) {
    return fdm_element(l, l->intermediate_rows, source, le, row, col, l->inter);
}
// The routing weight (f32) of row `row` of packet (source, le): HeapLayout::dispatch_weight.
FDM_FN unsigned long long fdm_dispatch_weight(const fdm_layout* l, unsigned int source, unsigned int le,
                                              unsigned int row) {
    return l->dispatch_weights + (fdm_packet_index(l, source, le) * l->capacity + row) * FDM_WEIGHT_BYTES;
}
// The counters a forward resets (row-tile then combine counters, contiguous u32s):
// HeapLayout::counters.
FDM_FN unsigned long long fdm_counters_start(const fdm_layout* l) { return l->row_tile_counters; }
FDM_FN unsigned long long fdm_counters_bytes(const fdm_layout* l) {
    return l->combine_counters
        + (unsigned long long)fdm_combine_groups_max(l) * fdm_col_tiles_hidden(l) * FDM_COUNTER_BYTES
        - l->row_tile_counters;
}

// ---- the task graph ----
// Tasks of a rank that received `row_tiles` row tiles in all and holds `tokens` tokens this
// forward: TaskCounts::bound.
FDM_FN unsigned long long fdm_task_bound(const fdm_layout* l, unsigned long long row_tiles, unsigned int tokens) {
    return row_tiles * (fdm_col_tiles_inter(l) + fdm_col_tiles_hidden(l))
        + (unsigned long long)fdm_div_ceil(tokens, l->bm) * fdm_col_tiles_hidden(l);
}
// Task i of a packet's GEMM0 tasks in publication order: its row tile and column tile,
// graph::gemm0_tile (column tiles in groups of `group`, each group row tile by row tile).
// In 32 bits: a GPU divides 64-bit integers in software, and a task descriptor took ~2 us a
// thread with four such divisions (docs/dev/perf-notes.md v35). A group of more than
// 2^32 - 1 tasks is past every u32 i, so its quotient is 0 without dividing.
// fdm_gemm0_width: the width of i's column group; *first its first column tile, *j i's index in it.
FDM_FN unsigned int fdm_gemm0_width(unsigned int i, unsigned int row_tiles, unsigned int col_tiles,
                                    unsigned int group, unsigned int* first, unsigned int* j) {
    if (group == 0u || group > col_tiles) group = col_tiles;
    const unsigned int q = row_tiles > 0xFFFFFFFFu / group ? 0u : i / (row_tiles * group);
    *first = q * group;
    *j = q == 0u ? i : i - q * (row_tiles * group);
    return col_tiles - *first < group ? col_tiles - *first : group;
}
FDM_FN unsigned int fdm_gemm0_row_tile(unsigned int i, unsigned int row_tiles, unsigned int col_tiles,
                                       unsigned int group) {
    unsigned int first, j;
    unsigned int width = fdm_gemm0_width(i, row_tiles, col_tiles, group, &first, &j);
    return j / width;
}
FDM_FN unsigned int fdm_gemm0_col_tile(unsigned int i, unsigned int row_tiles, unsigned int col_tiles,
                                       unsigned int group) {
    unsigned int first, j;
    unsigned int width = fdm_gemm0_width(i, row_tiles, col_tiles, group, &first, &j);
    return first + j % width;
}
// graph::gemm0_tile_paired: i's row and column tile in a layer run in cluster pairs, and
// whether i heads a pair (1 or 0).
typedef struct fdm_paired_tile {
    unsigned int row_tile;
    unsigned int col_tile;
    unsigned int head;
} fdm_paired_tile;
FDM_FN fdm_paired_tile fdm_gemm0_paired(unsigned int i, unsigned int row_tiles, unsigned int col_tiles,
                                        unsigned int group) {
    unsigned int first, j;
    const unsigned long long width = fdm_gemm0_width(i, row_tiles, col_tiles, group, &first, &j);
    const unsigned long long paired = (unsigned long long)(row_tiles & ~1u) * width;
    fdm_paired_tile t;
    if (j < paired) {
        const unsigned long long p = j / (2ull * width), r = j % (2ull * width);
        t.row_tile = (unsigned int)(2ull * p + r % 2ull);
        t.col_tile = first + (unsigned int)(r / 2ull);
        t.head = r % 2ull == 0ull ? 1u : 0u;
    } else {
        t.row_tile = row_tiles - 1u;
        t.col_tile = first + (unsigned int)(j - paired);
        t.head = 0u;
    }
    return t;
}
// Token tiles per combine readiness group: graph::combine_group_tiles.
FDM_FN unsigned int fdm_combine_group_tiles(unsigned int token_tiles, unsigned int packets,
                                            unsigned long long row_tiles) {
    unsigned long long span = row_tiles == 0ull ? 1ull : (unsigned long long)packets * token_tiles / row_tiles;
    if (span == 0ull) span = 1ull;
    unsigned int group = 1u;
    while (group < 0x80000000u && (unsigned long long)group * 2ull <= span) group *= 2u;
    while (fdm_div_ceil(token_tiles, group) > FDM_MAX_COMBINE_GROUPS) group *= 2u;
    return group;
}
// The task log: combine tasks in slots [0, fdm_gemm_log_base), GEMM tasks from there:
// graph::combine_log_slots.
FDM_FN unsigned long long fdm_gemm_log_base(const fdm_layout* l) {
    return (unsigned long long)l->token_tiles * fdm_col_tiles_hidden(l);
}
// The descriptor TaskDescriptor::new builds, for arguments it accepts (the kernel forms them
// from validated counts; the Rust constructor is the one that checks them).
FDM_FN fdm_task fdm_task_init(const fdm_layout* l, unsigned int kind, unsigned int epoch, unsigned int source,
                              unsigned int owner, unsigned int le, unsigned int row_tile, unsigned int col_tile,
                              unsigned int valid_rows) {
    fdm_task t;
    t.kind = kind;
    t.source_rank = source;
    t.owner_rank = owner;
    t.local_expert = le;
    t.row_tile = row_tile;
    t.col_tile = col_tile;
    t.valid_rows = valid_rows;
    t.epoch = epoch;
    t.input_offset = FDM_NO_OFFSET;
    t.output_offset = FDM_NO_OFFSET;
    t.signal_offset = FDM_NO_OFFSET;
    t.counter_offset = FDM_NO_OFFSET;
    const unsigned int row = row_tile * l->bm;
    if (kind == FDM_TASK_GEMM0) {
        t.input_offset = fdm_row(l, FDM_STAGE_DISPATCH, source, le, row, 0u);
        t.output_offset = fdm_intermediate_row(l, source, le, row, col_tile * l->bn);
        t.counter_offset = fdm_row_tile_counter(l, source, le, row_tile);
    } else if (kind == FDM_TASK_GEMM1) {
        t.input_offset = fdm_intermediate_row(l, source, le, row, 0u);
        t.output_offset = fdm_row(l, FDM_STAGE_RETURN, owner, le, row, col_tile * l->bn_hidden);
        t.signal_offset = fdm_return_signal(l, owner, le, row_tile, col_tile);
    } else {
        t.output_offset = ((unsigned long long)row * l->hidden + (unsigned long long)col_tile * l->bn_hidden) * l->elem_bytes;
    }
    return t;
}
"#;

#[cfg(test)]
mod tests {
    //! Compiles the header as host C++17 and checks every helper against the Rust layout.
    //! The `static_assert`s inside the header check sizes and field offsets at compile time;
    //! the program's printed offsets check the helper functions' arithmetic at run time. The
    //! NVRTC compile of the same header is a `flashdmoe-cuda` test.

    extern crate std;

    use alloc::string::String;
    use alloc::vec::Vec;
    use core::fmt::Write;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use super::c_header;
    use crate::graph::{self, TaskCounts, combine_group_tiles, combine_log_slots, tile_rows};
    use crate::layout::{
        Geometry, HeapLayout, LayoutParams, Stage, TileShape, div_ceil, tile_cols,
    };
    use crate::task::{TaskDescriptor, TaskKind};
    use crate::{Epoch, signal};

    fn geometries() -> [Geometry; 5] {
        let g = |world, local_experts, tokens, capacity, hidden, inter, elem_bytes, bm, bn, bk| {
            Geometry {
                world,
                local_experts,
                tokens,
                capacity,
                hidden,
                inter,
                elem_bytes,
                tile: TileShape::new(bm, bn, bk),
            }
        };
        [
            g(2, 3, 10, 5, 16, 32, 2, 4, 8, 8),
            g(1, 1, 1, 1, 64, 64, 4, 16, 32, 32),
            // GEMM1 and combine tiles twice GEMM0's (a gated layer on the Hopper engine).
            Geometry {
                tile: TileShape::new(128, 128, 64).with_bn_hidden(256),
                ..g(8, 8, 4096, 1280, 4096, 14336, 2, 128, 128, 64)
            },
            // Large enough that 32-bit intermediate products would overflow.
            g(64, 32, 65536, 65536, 8192, 28672, 4, 128, 64, 32),
            // Ragged last column tiles (gpt-oss: 2880 = 22.5 x 128).
            g(4, 8, 4096, 512, 2880, 2880, 2, 128, 128, 64),
        ]
    }

    /// `fdm_layout` aggregate initializer for `p`, fields in declaration order.
    fn initializer(p: &LayoutParams) -> String {
        let u32s = [
            p.world,
            p.local_experts,
            p.tokens,
            p.capacity,
            p.hidden,
            p.inter,
            p.elem_bytes,
            p.bm,
            p.bn,
            p.bk,
            p.row_tiles,
            p.token_tiles,
            p.bn_hidden,
            p.gemm0_group,
        ];
        let u64s = [
            p.dispatch_signals,
            p.return_signals,
            p.row_tile_counters,
            p.combine_counters,
            p.dispatch_rows,
            p.return_rows,
            p.intermediate_rows,
            p.dispatch_weights,
            p.total,
        ];
        let mut fields: Vec<String> = u32s.iter().map(|v| alloc::format!("{v}u")).collect();
        fields.extend(u64s.iter().map(|v| alloc::format!("{v}ull")));
        fields.join(", ")
    }

    /// Appends one query: a C expression printed by the program, and the Rust value it must
    /// equal.
    struct Queries {
        program: String,
        expected: String,
    }

    impl Queries {
        fn push(&mut self, c_expr: &str, rust_value: u64) {
            let _ = writeln!(
                self.program,
                "    std::printf(\"%s = %llu\\n\", \"{c_expr}\", (unsigned long long)({c_expr}));"
            );
            let _ = writeln!(self.expected, "{c_expr} = {rust_value}");
        }
    }

    /// Indices to probe along an axis of `n` entries: both ends and the middle.
    fn probes(n: u32) -> Vec<u32> {
        let mut v = alloc::vec![0, n / 2, n.saturating_sub(1)];
        v.dedup();
        v
    }

    fn build_queries() -> Queries {
        let mut q = Queries { program: String::new(), expected: String::new() };
        // Signal and tile helpers, independent of any layout.
        for (epoch, payload) in [(1u32, 0u32), (7, 12345), (u32::MAX, u32::MAX)] {
            let e = Epoch::new(epoch).unwrap();
            q.push(&alloc::format!("fdm_signal({epoch}u, {payload}u)"), signal::encode(e, payload));
            let word = signal::encode(e, payload);
            q.push(&alloc::format!("fdm_signal_epoch({word}ull)"), epoch.into());
            q.push(&alloc::format!("fdm_signal_payload({word}ull)"), payload.into());
            q.push(&alloc::format!("fdm_epoch_next({epoch}u)"), e.next().get().into());
        }
        for (n, d) in [(0u32, 1u32), (5, 4), (8, 4), (u32::MAX, 128), (u32::MAX - 1, u32::MAX)] {
            q.push(&alloc::format!("fdm_div_ceil({n}u, {d}u)"), div_ceil(n, d).into());
        }
        for (n, bn, ct) in [
            (2880u32, 128u32, 21u32),
            (2880, 128, 22),
            (2880, 128, 23),
            (64, 64, 0),
            (u32::MAX, u32::MAX, u32::MAX),
        ] {
            q.push(
                &alloc::format!("fdm_tile_cols({n}u, {bn}u, {ct}u)"),
                tile_cols(n, bn, ct).into(),
            );
        }
        for (rows, rt, bm) in
            [(0u32, 0u32, 4u32), (5, 1, 4), (8, 1, 4), (9, 3, 4), (u32::MAX, 1, 128)]
        {
            q.push(
                &alloc::format!("fdm_tile_rows({rows}u, {rt}u, {bm}u)"),
                tile_rows(rows, rt, bm).into(),
            );
        }
        for (rts, cts, group) in [
            (1u32, 1u32, 0u32),
            (8, 112, 6),
            (8, 112, 0),
            (3, 7, 2),
            (5, 4, 1),
            (4, 45, 17),
            (2, 6, 99),
            // row_tiles x group past 2^32 - 1: the 32-bit form's saturated quotient.
            (0x0100_0000, 512, 300),
            (0xFFFF_FFFF, 2, 2),
        ] {
            let tasks = rts as u64 * cts as u64;
            let last = (tasks - 1).min(u32::MAX as u64) as u32;
            for i in [0, 1, (tasks / 2).min(u32::MAX as u64) as u32, last, u32::MAX]
                .into_iter()
                .filter(|&i| (i as u64) < tasks)
            {
                let (rt, c) = graph::gemm0_tile(i, rts, cts, group);
                let args = alloc::format!("{i}u, {rts}u, {cts}u, {group}u");
                q.push(&alloc::format!("fdm_gemm0_row_tile({args})"), rt.into());
                q.push(&alloc::format!("fdm_gemm0_col_tile({args})"), c.into());
                let (prt, pc, head) = graph::gemm0_tile_paired(i, rts, cts, group);
                q.push(&alloc::format!("fdm_gemm0_paired({args}).row_tile"), prt.into());
                q.push(&alloc::format!("fdm_gemm0_paired({args}).col_tile"), pc.into());
                q.push(&alloc::format!("fdm_gemm0_paired({args}).head"), u32::from(head).into());
            }
        }
        for (tiles, packets, rows) in [
            (0u32, 0u32, 0u64),
            (128, 8, 264),
            (128, 128, 384),
            (4096, 1, 4096),
            (u32::MAX, 1, u64::MAX),
            (u32::MAX, u32::MAX, 1),
            (3, 5, 2),
        ] {
            q.push(
                &alloc::format!("fdm_combine_group_tiles({tiles}u, {packets}u, {rows}ull)"),
                combine_group_tiles(tiles, packets, rows).into(),
            );
        }
        for (i, geometry) in geometries().into_iter().enumerate() {
            let l = HeapLayout::new(geometry).unwrap();
            let g = *l.geometry();
            let _ = writeln!(
                q.program,
                "    const fdm_layout l{i} = {{ {} }};",
                initializer(&l.params())
            );
            let lp = alloc::format!("&l{i}");
            q.push(&alloc::format!("fdm_col_tiles_hidden({lp})"), g.col_tiles_hidden().into());
            q.push(&alloc::format!("fdm_col_tiles_inter({lp})"), g.col_tiles_inter().into());
            for peer in probes(g.world) {
                for le in probes(g.local_experts) {
                    q.push(
                        &alloc::format!("fdm_dispatch_signal({lp}, {peer}u, {le}u)"),
                        l.dispatch_signal(peer, le).unwrap(),
                    );
                    for rt in probes(l.max_row_tiles()) {
                        q.push(
                            &alloc::format!("fdm_row_tile_counter({lp}, {peer}u, {le}u, {rt}u)"),
                            l.row_tile_counter(peer, le, rt).unwrap(),
                        );
                        for ct in probes(g.col_tiles_hidden()) {
                            q.push(
                                &alloc::format!("fdm_return_tile_id({lp}, {rt}u, {ct}u)"),
                                l.return_tile_id(rt, ct).unwrap().into(),
                            );
                            q.push(
                                &alloc::format!(
                                    "fdm_return_signal({lp}, {peer}u, {le}u, {rt}u, {ct}u)"
                                ),
                                l.return_signal(peer, le, rt, ct).unwrap(),
                            );
                        }
                    }
                    for row in probes(g.capacity) {
                        for col in probes(g.hidden) {
                            for (stage, c_stage) in [
                                (Stage::Dispatch, "FDM_STAGE_DISPATCH"),
                                (Stage::Return, "FDM_STAGE_RETURN"),
                            ] {
                                q.push(
                                    &alloc::format!(
                                        "fdm_row({lp}, {c_stage}, {peer}u, {le}u, {row}u, {col}u)"
                                    ),
                                    l.row(stage, peer, le, row, col).unwrap(),
                                );
                            }
                        }
                        for col in probes(g.inter) {
                            q.push(
                                &alloc::format!(
                                    "fdm_intermediate_row({lp}, {peer}u, {le}u, {row}u, {col}u)"
                                ),
                                l.intermediate_row(peer, le, row, col).unwrap(),
                            );
                        }
                        q.push(
                            &alloc::format!("fdm_dispatch_weight({lp}, {peer}u, {le}u, {row}u)"),
                            l.dispatch_weight(peer, le, row).unwrap(),
                        );
                    }
                }
            }
            q.push(&alloc::format!("fdm_combine_groups_max({lp})"), g.combine_groups().into());
            for group in probes(g.combine_groups()) {
                for ct in probes(g.col_tiles_hidden()) {
                    q.push(
                        &alloc::format!("fdm_combine_counter({lp}, {group}u, {ct}u)"),
                        l.combine_counter(group, ct).unwrap(),
                    );
                }
            }
            q.push(&alloc::format!("fdm_gemm_log_base({lp})"), combine_log_slots(&l));
            let (start, bytes) = l.counters();
            q.push(&alloc::format!("fdm_counters_start({lp})"), start);
            q.push(&alloc::format!("fdm_counters_bytes({lp})"), bytes);
            for row_tiles in [0u64, 1, 7, 1 << 20] {
                for tokens in [0, 1, g.tokens / 2, g.tokens] {
                    q.push(
                        &alloc::format!("fdm_task_bound({lp}, {row_tiles}ull, {tokens}u)"),
                        TaskCounts::bound(&l, row_tiles, tokens),
                    );
                }
            }
            // Every field of fdm_task_init against TaskDescriptor::new, per kind, at both
            // ends of the ranges.
            let epoch = Epoch::new(9).unwrap();
            let last = |n: u32| n.saturating_sub(1);
            let (src, own) = (last(g.world), 0);
            let le = last(g.local_experts);
            let mut cases = alloc::vec![];
            for rt in probes(l.max_row_tiles()) {
                let valid = tile_rows(g.capacity, rt, g.tile.bm);
                for ct in probes(g.col_tiles_inter()) {
                    cases.push((TaskKind::Gemm0, src, own, le, rt, ct, valid));
                }
                for ct in probes(g.col_tiles_hidden()) {
                    cases.push((TaskKind::Gemm1, src, own, le, rt, ct, valid));
                }
            }
            for tt in probes(l.token_tiles()) {
                for ct in probes(g.col_tiles_hidden()) {
                    let valid = tile_rows(g.tokens, tt, g.tile.bm);
                    cases.push((TaskKind::Combine, src, src, 0, tt, ct, valid));
                }
            }
            for (kind, s, o, e, rt, ct, valid) in cases {
                let t = TaskDescriptor::new(&l, kind, epoch, s, o, e, rt, ct, valid).unwrap();
                let call = alloc::format!(
                    "fdm_task_init({lp}, {}u, 9u, {s}u, {o}u, {e}u, {rt}u, {ct}u, {valid}u)",
                    kind as u32
                );
                let fields: [(&str, u64); 12] = [
                    ("kind", t.kind.into()),
                    ("source_rank", t.source_rank.into()),
                    ("owner_rank", t.owner_rank.into()),
                    ("local_expert", t.local_expert.into()),
                    ("row_tile", t.row_tile.into()),
                    ("col_tile", t.col_tile.into()),
                    ("valid_rows", t.valid_rows.into()),
                    ("epoch", t.epoch.into()),
                    ("input_offset", t.input_offset),
                    ("output_offset", t.output_offset),
                    ("signal_offset", t.signal_offset),
                    ("counter_offset", t.counter_offset),
                ];
                for (field, value) in fields {
                    q.push(&alloc::format!("{call}.{field}"), value);
                }
            }
        }
        q
    }

    /// The host C++ compiler, if any.
    fn cxx() -> Option<&'static str> {
        ["c++", "g++", "clang++"]
            .into_iter()
            .find(|cc| Command::new(cc).arg("--version").output().is_ok_and(|o| o.status.success()))
    }

    fn scratch_dir() -> PathBuf {
        let dir = std::env::temp_dir()
            .join(alloc::format!("flashdmoe-proto-header-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn compile_and_run(cc: &str, dir: &Path, program: &str) -> String {
        std::fs::write(dir.join("fdm_proto.h"), c_header()).unwrap();
        let main = alloc::format!(
            "#include \"fdm_proto.h\"\n#include \"fdm_proto.h\"\n#include <cstdio>\n\
             int main() {{\n{program}    return 0;\n}}\n"
        );
        std::fs::write(dir.join("main.cpp"), main).unwrap();
        let exe = dir.join("fdm_header_check");
        let out = Command::new(cc)
            .args(["-std=c++17", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&exe)
            .arg(dir.join("main.cpp"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the generated header does not compile:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let run = Command::new(&exe).output().unwrap();
        assert!(run.status.success());
        String::from_utf8(run.stdout).unwrap()
    }

    #[test]
    fn header_compiles_and_agrees_with_rust_layout() {
        let Some(cc) = cxx() else {
            std::println!("skipped: no C++ compiler");
            return;
        };
        let q = build_queries();
        let dir = scratch_dir();
        let printed = compile_and_run(cc, &dir, &q.program);
        let _ = std::fs::remove_dir_all(&dir);
        for (c_line, rust_line) in printed.lines().zip(q.expected.lines()) {
            assert_eq!(c_line, rust_line, "C helper disagrees with Rust");
        }
        assert_eq!(printed.lines().count(), q.expected.lines().count());
    }

    #[test]
    fn header_is_deterministic_and_asserts_every_field() {
        let h = c_header();
        assert_eq!(h, c_header());
        // One offset assertion per field of both structs, plus size and alignment of each.
        assert_eq!(h.matches("FDM_ASSERT_OFFSET(fdm_task,").count(), 12);
        assert_eq!(h.matches("FDM_ASSERT_OFFSET(fdm_layout,").count(), 23);
        assert_eq!(h.matches("static_assert(sizeof(").count(), 2);
        assert!(h.contains("#define FDM_TASK_GEMM0 0"));
        assert!(h.contains("#define FDM_TASK_COMBINE 2"));
    }
}
