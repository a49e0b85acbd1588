//! Property tests of the protocol against independent models.
//!
//! * Layout: for arbitrary geometries (mostly invalid or overflowing ones among them),
//!   [`HeapLayout::new`] never panics, succeeds exactly when a `u128` model of the section
//!   sizes says it must, and then every section is aligned, disjoint and inside the heap, and
//!   every offset accessor lands inside its section, is strictly monotone in its indices, and
//!   rejects out-of-range indices.
//! * Signals: words round-trip through encode/decode at every epoch including the wrap from
//!   `u32::MAX` to 1, a word of another epoch is pending, and arbitrary words never panic.
//! * Descriptors: arbitrary bytes never panic, and whatever decodes re-encodes to the same bytes.
//! * Task graph: for random routings (zero-row packets, empty ranks and one hot expert
//!   included) every task of a model enumeration is generated exactly once, the per-rank bound
//!   derived from decoded dispatch signals equals the tasks each rank executes, prerequisites
//!   exist and precede their task, and arbitrary plans are rejected without panicking.

use std::collections::{HashMap, HashSet};

use flashdmoe_proto::graph::{self, tile_rows};
use flashdmoe_proto::signal::{self, SignalState};
use flashdmoe_proto::{
    ALIGN, COUNTER_BYTES, Epoch, Geometry, HeapLayout, ProtoError, RoutingPlan, SIGNAL_BYTES,
    SourcePlan, Stage, TASK_BYTES, TaskCounts, TaskDescriptor, TaskKey, TaskKind, TileShape,
    div_ceil,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// `cases` per property; failures are persisted in `proptest-regressions/tests/props.txt` of
/// this crate (proptest's default location, which it cannot find by itself for a file under
/// `tests/`: it would warn on every test and fall back to a path it cannot write).
fn config(cases: u32) -> ProptestConfig {
    let regressions = concat!(env!("CARGO_MANIFEST_DIR"), "/proptest-regressions/tests/props.txt");
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Layout
// ---------------------------------------------------------------------------------------------

/// A `u32` drawn mostly from the interesting places: 0, small, powers of two, near `u32::MAX`.
fn edgy_u32(small: u32) -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => 1..=small,
        1 => Just(0u32),
        1 => (0u32..32).prop_map(|s| 1u32 << s),
        1 => u32::MAX - 4..=u32::MAX,
        1 => any::<u32>(),
    ]
}

/// Geometries of every kind: valid small ones, valid huge ones, invalid and overflowing ones.
fn any_geometry() -> impl Strategy<Value = Geometry> {
    let tile = (0u32..9, 0u32..9, 0u32..9, edgy_u32(256)).prop_map(|(n, k, m, bm)| {
        TileShape::new(bm, 1 << n, 1 << k.min(n + m % 2)).with_bn_hidden((1 << n) << (m % 3))
    });
    (
        edgy_u32(8),
        edgy_u32(8),
        edgy_u32(300),
        edgy_u32(300),
        (1u32..=64, 1u32..=64, edgy_u32(4)),
        prop_oneof![Just(2u32), Just(4u32), 0u32..8],
        tile,
    )
        .prop_map(
            |(world, local_experts, tokens, capacity, (hm, im, wild), elem_bytes, tile)| {
                // Mostly multiples of the tile width (valid), sometimes a wild value.
                let (hidden, inter) = if wild % 5 == 0 {
                    (wild, hm.wrapping_mul(wild))
                } else {
                    (tile.bn.saturating_mul(hm), tile.bn.saturating_mul(im))
                };
                Geometry { world, local_experts, tokens, capacity, hidden, inter, elem_bytes, tile }
            },
        )
}

/// What the layout must be, computed independently in `u128`: `None` when `HeapLayout::new`
/// must fail.
fn model_sections(g: &Geometry) -> Option<[(u128, u128); 8]> {
    let t = g.tile;
    let nonzero =
        [g.world, g.local_experts, g.hidden, g.inter, g.elem_bytes, t.bm, t.bn, t.bk, t.bn_hidden];
    if nonzero.contains(&0) || !matches!(g.elem_bytes, 2 | 4) || g.world > 65535 {
        return None;
    }
    let divides = |d: u32| g.hidden.is_multiple_of(d) && g.inter.is_multiple_of(d);
    if !divides(t.bk) {
        return None;
    }
    // GEMM1 and combine tiles: a multiple of bn (column tiles may be ragged).
    if !t.bn_hidden.is_multiple_of(t.bn) {
        return None;
    }
    let (p, le, cap) = (g.world as u128, g.local_experts as u128, g.capacity as u128);
    let (h, i, eb) = (g.hidden as u128, g.inter as u128, g.elem_bytes as u128);
    let rt = cap.div_ceil(t.bm as u128);
    let cth = h.div_ceil(t.bn_hidden as u128);
    if rt * cth > u32::MAX as u128 || !(h * eb).is_multiple_of(16) || !(i * eb).is_multiple_of(16) {
        return None;
    }
    let fits = |v: u128| v <= u64::MAX as u128;
    if !fits(g.tokens as u128 * h * eb) {
        return None;
    }
    let sizes = [
        p * le * 8,
        p * le * rt * cth * 8,
        p * le * rt * 4,
        (g.tokens as u128).div_ceil(t.bm as u128).min(1024) * cth * 4,
        p * le * cap * h * eb,
        p * le * cap * h * eb,
        p * le * cap * i * eb,
        (p * le * cap + t.bm as u128) * 4,
    ];
    let mut out = [(0u128, 0u128); 8];
    let mut cursor = 0u128;
    for (slot, size) in out.iter_mut().zip(sizes) {
        if !fits(size) || !fits(cursor + size + ALIGN as u128 - 1) {
            return None;
        }
        *slot = (cursor, size);
        cursor = (cursor + size).div_ceil(ALIGN as u128) * ALIGN as u128;
    }
    Some(out)
}

/// An index in `0..n` picked by `pick`, or `None` for an empty axis.
fn index(pick: u32, n: u32) -> Option<u32> {
    (n > 0).then(|| pick % n)
}

/// Asserts `offset .. offset + width` lies inside section `(start, len)`.
fn assert_inside(what: &str, offset: u64, width: u64, (start, len): (u64, u64)) {
    assert!(
        offset >= start && offset + width <= start + len,
        "{what}: offset {offset} (+{width}) outside section {start}..{}",
        start + len
    );
}

fn assert_out_of_range<T: std::fmt::Debug>(what: &str, r: Result<T, ProtoError>) {
    assert!(
        matches!(r, Err(ProtoError::OutOfRange { .. })),
        "{what}: expected OutOfRange, got {r:?}"
    );
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn layout_matches_model_and_sections_are_disjoint_aligned_in_bounds(g in any_geometry()) {
        let result = HeapLayout::new(g);
        let Some(model) = model_sections(&g) else {
            prop_assert!(result.is_err(), "accepted {g:?}");
            return Ok(());
        };
        let l = result.expect("the model says this geometry is valid");
        let sections = l.sections();
        let mut end = 0u64;
        for ((name, start, len), (m_start, m_len)) in sections.iter().zip(model) {
            prop_assert_eq!((*start as u128, *len as u128), (m_start, m_len), "{}", name);
            prop_assert_eq!(start % ALIGN, 0, "{} is not aligned", name);
            prop_assert!(*start >= end, "{} overlaps the previous section", name);
            end = start + len;
        }
        prop_assert!(end <= l.total_bytes());
        prop_assert_eq!(l.total_bytes() % ALIGN, 0);
        prop_assert!(l.total_bytes() - end < ALIGN);
        prop_assert_eq!(l.control_bytes(), sections[4].1);
        let p = l.params();
        prop_assert_eq!(
            [p.dispatch_signals, p.return_signals, p.row_tile_counters, p.combine_counters,
             p.dispatch_rows, p.return_rows, p.intermediate_rows, p.dispatch_weights],
            sections.map(|s| s.1)
        );
        prop_assert_eq!((p.row_tiles, p.token_tiles, p.total),
            (l.max_row_tiles(), l.token_tiles(), l.total_bytes()));
    }

    #[test]
    fn offsets_land_in_their_section_and_reject_out_of_range(
        g in any_geometry(),
        picks in prop::array::uniform6(any::<u32>()),
    ) {
        let Ok(l) = HeapLayout::new(g) else { return Ok(()) };
        let s = l.sections().map(|(_, start, len)| (start, len));
        let eb = g.elem_bytes as u64;
        let (rt_n, ct_n) = (l.max_row_tiles(), g.col_tiles_hidden());
        let peer = picks[0] % g.world;
        let le = picks[1] % g.local_experts;
        assert_inside("dispatch signal", l.dispatch_signal(peer, le).unwrap(), SIGNAL_BYTES, s[0]);
        if let (Some(rt), Some(ct)) = (index(picks[2], rt_n), index(picks[3], ct_n)) {
            let tile = l.return_tile_id(rt, ct).unwrap();
            prop_assert!((tile as u64) < rt_n as u64 * ct_n as u64);
            let off = l.return_signal(peer, le, rt, ct).unwrap();
            assert_inside("return signal", off, SIGNAL_BYTES, s[1]);
            assert_inside("row-tile counter", l.row_tile_counter(peer, le, rt).unwrap(),
                COUNTER_BYTES, s[2]);
        }
        let groups = g.combine_groups();
        if let (Some(group), Some(ct)) = (index(picks[2], groups), index(picks[3], ct_n)) {
            assert_inside("combine counter", l.combine_counter(group, ct).unwrap(),
                COUNTER_BYTES, s[3]);
            assert_out_of_range("combine group", l.combine_counter(groups, ct));
        }
        if let Some(row) = index(picks[4], g.capacity) {
            let col = picks[5] % g.hidden;
            assert_inside("dispatch row", l.row(Stage::Dispatch, peer, le, row, col).unwrap(),
                eb, s[4]);
            assert_inside("return row", l.row(Stage::Return, peer, le, row, col).unwrap(), eb, s[5]);
            assert_inside("intermediate row",
                l.intermediate_row(peer, le, row, picks[5] % g.inter).unwrap(), eb, s[6]);
        }
        // Every index at its limit is rejected.
        assert_out_of_range("peer", l.dispatch_signal(g.world, le));
        assert_out_of_range("local expert", l.dispatch_signal(peer, g.local_experts));
        assert_out_of_range("row tile", l.return_signal(peer, le, rt_n, 0));
        assert_out_of_range("row tile", l.row_tile_counter(peer, le, rt_n));
        assert_out_of_range("column tile", l.return_tile_id(0, ct_n));
        if groups > 0 {
            assert_out_of_range("column tile", l.combine_counter(0, ct_n));
        }
        assert_out_of_range("row", l.row(Stage::Return, peer, le, g.capacity, 0));
        assert_out_of_range("column", l.row(Stage::Dispatch, peer, le, 0, g.hidden));
        assert_out_of_range("column", l.intermediate_row(peer, le, 0, g.inter));
    }

    #[test]
    fn offsets_are_strictly_monotone_in_their_indices(
        g in any_geometry(),
        a in prop::array::uniform4(any::<u32>()),
        b in prop::array::uniform4(any::<u32>()),
    ) {
        // Lexicographic order of indices == order of offsets: distinct indices never share a
        // location, and regions of different packets never interleave.
        let Ok(l) = HeapLayout::new(g) else { return Ok(()) };
        let row_idx = |p: [u32; 4]| -> Option<[u32; 4]> {
            Some([p[0] % g.world, p[1] % g.local_experts, index(p[2], g.capacity)?, p[3] % g.hidden])
        };
        if let (Some(x), Some(y)) = (row_idx(a), row_idx(b)) {
            for stage in [Stage::Dispatch, Stage::Return] {
                let ox = l.row(stage, x[0], x[1], x[2], x[3]).unwrap();
                let oy = l.row(stage, y[0], y[1], y[2], y[3]).unwrap();
                prop_assert_eq!(x.cmp(&y), ox.cmp(&oy));
            }
        }
        let sig_idx = |p: [u32; 4]| -> Option<[u32; 4]> {
            Some([p[0] % g.world, p[1] % g.local_experts, index(p[2], l.max_row_tiles())?,
                  index(p[3], g.col_tiles_hidden())?])
        };
        if let (Some(x), Some(y)) = (sig_idx(a), sig_idx(b)) {
            let ox = l.return_signal(x[0], x[1], x[2], x[3]).unwrap();
            let oy = l.return_signal(y[0], y[1], y[2], y[3]).unwrap();
            prop_assert_eq!(x.cmp(&y), ox.cmp(&oy));
            let cx = l.row_tile_counter(x[0], x[1], x[2]).unwrap();
            let cy = l.row_tile_counter(y[0], y[1], y[2]).unwrap();
            prop_assert_eq!(x[..3].cmp(&y[..3]), cx.cmp(&cy));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Signals and epochs
// ---------------------------------------------------------------------------------------------

fn any_epoch() -> impl Strategy<Value = Epoch> {
    prop_oneof![1u32..=8, u32::MAX - 8..=u32::MAX, 1u32..=u32::MAX]
        .prop_map(|raw| Epoch::new(raw).expect("never 0"))
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn signals_round_trip_across_epoch_wrap(start in any_epoch(), steps in 0u32..20,
                                            payload in any::<u32>()) {
        let mut e = start;
        for _ in 0..steps {
            let next = e.next();
            prop_assert_ne!(next.get(), 0);
            prop_assert_ne!(next, e);
            prop_assert_eq!(next.prev(), e);
            prop_assert_eq!(next.get(), if e.get() == u32::MAX { 1 } else { e.get() + 1 });
            // What this forward wrote is ready now and pending in the next forward.
            let d = signal::encode_dispatch(e, payload);
            prop_assert_eq!(signal::decode_dispatch(d, e, payload), Ok(SignalState::Ready(payload)));
            prop_assert_eq!(signal::decode_dispatch(d, next, payload),
                Ok(SignalState::Pending { seen_epoch: e.get() }));
            let r = signal::encode_return(e, payload);
            prop_assert_eq!(signal::decode_return(r, e, payload), Ok(SignalState::Ready(payload)));
            prop_assert_eq!(signal::decode_return(r, next, payload),
                Ok(SignalState::Pending { seen_epoch: e.get() }));
            // A fresh (zeroed) word is never ready.
            prop_assert_eq!(signal::decode_dispatch(0, next, 0),
                Ok(SignalState::Pending { seen_epoch: 0 }));
            e = next;
        }
    }

    #[test]
    fn decoding_arbitrary_words_never_panics(word in any::<u64>(), current in any_epoch(),
                                             limit in any::<u32>()) {
        let ready = signal::epoch_bits(word) == current.get();
        match signal::decode_dispatch(word, current, limit) {
            Ok(SignalState::Ready(rows)) => prop_assert!(ready && rows <= limit),
            Ok(SignalState::Pending { seen_epoch }) => {
                prop_assert!(!ready && seen_epoch == signal::epoch_bits(word))
            }
            Err(_) => prop_assert!(ready && signal::payload_bits(word) > limit),
        }
        match signal::decode_return(word, current, limit) {
            Ok(SignalState::Ready(tile)) => prop_assert!(ready && tile == limit),
            Ok(SignalState::Pending { .. }) => prop_assert!(!ready),
            Err(_) => prop_assert!(ready && signal::payload_bits(word) != limit),
        }
        prop_assert_eq!(signal::encode(current, signal::payload_bits(word)) >> 32,
            current.get() as u64);
    }
}

// ---------------------------------------------------------------------------------------------
// Task descriptors
// ---------------------------------------------------------------------------------------------

/// Small valid geometries, including empty ones (no tokens, zero capacity).
fn small_geometry() -> impl Strategy<Value = Geometry> {
    (1u32..=4, 1u32..=3, 0u32..=40, prop_oneof![Just(1u32), Just(2), Just(3), Just(4), Just(16)])
        .prop_flat_map(|(world, local_experts, tokens, bm)| {
            (
                Just((world, local_experts, tokens, bm)),
                prop_oneof![Just(tokens), 0..=tokens + 4],
                prop_oneof![Just(8u32), Just(16)],
                1u32..=3,
                1u32..=3,
                prop_oneof![Just(2u32), Just(4)],
                any::<bool>(),
            )
        })
        .prop_map(|((world, local_experts, tokens, bm), capacity, bn, hm, im, elem_bytes, half)| {
            Geometry {
                world,
                local_experts,
                tokens,
                capacity,
                hidden: bn * hm,
                inter: bn * im,
                elem_bytes,
                // Wider GEMM1 tiles where they divide hidden (a gated layer's on Hopper).
                tile: TileShape::new(bm, bn, if half { bn / 2 } else { bn })
                    .with_bn_hidden(if hm % 2 == 0 { 2 * bn } else { bn }),
            }
        })
}

/// Descriptor bytes built from fields near their valid ranges and offsets that are either
/// right or arbitrary, so decoding gets past the cheap checks.
fn near_valid_descriptor(g: Geometry) -> impl Strategy<Value = [u8; TASK_BYTES]> {
    let small = |n: u32| prop_oneof![0..=n.saturating_add(1), any::<u32>()];
    (
        (
            0u32..=3,
            small(g.world),
            small(g.world),
            small(g.local_experts),
            small(div_ceil(g.capacity.max(g.tokens), g.tile.bm)),
            small(g.hidden / g.tile.bn),
            small(g.tile.bm),
            prop_oneof![Just(0u32), 1u32..=3, any::<u32>()],
        ),
        prop::array::uniform4(prop_oneof![3 => Just(None), 1 => any::<u64>().prop_map(Some)]),
    )
        .prop_map(move |((kind, src, own, le, rt, ct, valid, epoch), tamper)| {
            let layout = HeapLayout::new(g).unwrap();
            let fields = [kind, src, own, le, rt, ct, valid, epoch];
            // Offsets: the ones `new` derives when the fields are valid, else arbitrary.
            let derived = Epoch::new(epoch).and_then(|e| {
                let kind = TaskKind::from_tag(kind).ok()?;
                TaskDescriptor::new(&layout, kind, e, src, own, le, rt, ct, valid).ok()
            });
            let mut offsets = derived.map_or([0; 4], |d| {
                [d.input_offset, d.output_offset, d.signal_offset, d.counter_offset]
            });
            for (o, t) in offsets.iter_mut().zip(tamper) {
                if let Some(v) = t {
                    *o = v;
                }
            }
            let mut bytes = [0u8; TASK_BYTES];
            for (chunk, w) in bytes[..32].chunks_exact_mut(4).zip(fields) {
                chunk.copy_from_slice(&w.to_le_bytes());
            }
            for (chunk, w) in bytes[32..].chunks_exact_mut(8).zip(offsets) {
                chunk.copy_from_slice(&w.to_le_bytes());
            }
            bytes
        })
}

/// Whatever decodes must be exactly what `encode` writes for it: nothing is lost or ignored.
fn check_decode(bytes: &[u8], layout: &HeapLayout) -> Result<(), TestCaseError> {
    if let Ok(t) = TaskDescriptor::decode(bytes, layout) {
        prop_assert_eq!(&t.encode()[..], bytes);
        prop_assert!(t.task_kind().is_ok());
        prop_assert!(t.valid_rows >= 1 && t.valid_rows <= layout.geometry().tile.bm);
        prop_assert_ne!(t.epoch, 0);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(g in small_geometry(),
                                             bytes in prop::collection::vec(any::<u8>(), 0..80)) {
        let layout = HeapLayout::new(g).unwrap();
        let r = TaskDescriptor::decode(&bytes, &layout);
        if bytes.len() != TASK_BYTES {
            prop_assert!(matches!(r, Err(ProtoError::BadLength { .. })), "{:?}", r);
        }
        check_decode(&bytes, &layout)?;
    }

    #[test]
    fn decoding_near_valid_descriptors_accepts_exactly_the_consistent_ones(
        (g, bytes) in small_geometry().prop_flat_map(|g| (Just(g), near_valid_descriptor(g))),
        flip in any::<Option<(prop::sample::Index, u8)>>(),
    ) {
        let layout = HeapLayout::new(g).unwrap();
        check_decode(&bytes, &layout)?;
        let mut flipped = bytes;
        if let Some((i, bit)) = flip {
            flipped[i.index(TASK_BYTES)] ^= 1 << (bit % 8);
        }
        check_decode(&flipped, &layout)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Task graph
// ---------------------------------------------------------------------------------------------

/// How one source rank routes its tokens.
#[derive(Clone, Debug)]
enum Routing {
    /// Token `t` goes to packet `p` when `bits[t * packets + p]`.
    Random(Vec<bool>),
    /// The rank sends nothing (every packet has zero rows).
    Empty,
    /// Every token goes to one packet: one hot expert.
    Hot(prop::sample::Index),
}

fn routing(tokens: u32, packets: u32) -> impl Strategy<Value = Routing> {
    let n = (tokens * packets) as usize;
    prop_oneof![
        3 => prop::collection::vec(prop::bool::weighted(0.3), n).prop_map(Routing::Random),
        1 => Just(Routing::Empty),
        1 => any::<prop::sample::Index>().prop_map(Routing::Hot),
    ]
}

/// Packets of one source: ascending token lists, truncated to capacity (lowest tokens kept).
fn packets(g: &Geometry, r: &Routing) -> Vec<Vec<u32>> {
    let n = (g.world * g.local_experts) as usize;
    let mut packets = vec![Vec::new(); n];
    for t in 0..g.tokens {
        for (p, packet) in packets.iter_mut().enumerate() {
            let routed = match r {
                Routing::Random(bits) => bits[t as usize * n + p],
                Routing::Empty => false,
                Routing::Hot(i) => i.index(n) == p,
            };
            if routed && packet.len() < g.capacity as usize {
                packet.push(t);
            }
        }
    }
    packets
}

fn geometry_and_plan() -> impl Strategy<Value = (Geometry, Vec<Routing>)> {
    small_geometry().prop_flat_map(|g| {
        let r = routing(g.tokens, g.world * g.local_experts);
        (Just(g), prop::collection::vec(r, g.world as usize))
    })
}

/// Every task the graph must contain, enumerated straight from the definition.
fn model_tasks(g: &Geometry, plan: &RoutingPlan) -> HashSet<TaskKey> {
    let (bm, cti, cth) = (g.tile.bm, g.col_tiles_inter(), g.col_tiles_hidden());
    let mut keys = HashSet::new();
    for s in 0..g.world {
        for o in 0..g.world {
            for e in 0..g.local_experts {
                for rt in 0..div_ceil(plan.source(s).packet(o, e).len() as u32, bm) {
                    keys.extend((0..cti).map(|c| (TaskKind::Gemm0, s, o, e, rt, c)));
                    keys.extend((0..cth).map(|c| (TaskKind::Gemm1, s, o, e, rt, c)));
                }
            }
        }
        for tt in 0..div_ceil(g.tokens, bm) {
            keys.extend((0..cth).map(|c| (TaskKind::Combine, s, s, 0, tt, c)));
        }
    }
    keys
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn every_task_once_bound_exact_prerequisites_precede(
        (g, routings) in geometry_and_plan(),
        epoch in any_epoch(),
    ) {
        let layout = HeapLayout::new(g).unwrap();
        let sources = routings
            .iter()
            .map(|r| SourcePlan::new(&layout, packets(&g, r)))
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let plan = RoutingPlan::new(&layout, sources).unwrap();
        let tasks: Vec<TaskDescriptor> =
            graph::graph_tasks(&layout, &plan, epoch).collect::<Result<_, _>>().unwrap();

        // Exactly once: no duplicates, and the same set as the model.
        let position: HashMap<TaskKey, usize> =
            tasks.iter().enumerate().map(|(i, t)| (t.key().unwrap(), i)).collect();
        prop_assert_eq!(position.len(), tasks.len(), "a task was generated twice");
        let keys: HashSet<TaskKey> = position.keys().copied().collect();
        prop_assert_eq!(&keys, &model_tasks(&g, &plan));

        for t in &tasks {
            // Every descriptor is valid and survives the wire.
            prop_assert_eq!(t.epoch, epoch.get());
            prop_assert!(t.valid_rows >= 1 && t.valid_rows <= g.tile.bm);
            prop_assert_eq!(TaskDescriptor::decode(&t.encode(), &layout), Ok(*t));
            // Prerequisites exist and come earlier: the emission order is topological, so the
            // graph is acyclic; sorting by key (kind first) is topological too.
            let key = t.key().unwrap();
            let pre = graph::prerequisites(&layout, &plan, t).unwrap();
            for p in &pre {
                let at = position.get(p);
                prop_assert!(at.is_some_and(|&i| i < position[&key]),
                    "prerequisite {:?} of {:?} missing or later", p, key);
                prop_assert!(*p < key);
            }
            match key.0 {
                TaskKind::Gemm0 => prop_assert!(pre.is_empty()),
                TaskKind::Gemm1 => {
                    prop_assert_eq!(pre.len() as u32, graph::gemm0_per_row_tile(&layout))
                }
                TaskKind::Combine => {
                    // As many as its group's counter waits for, and every returned row the
                    // combine reads among them: a token of this tile routed to a packet needs
                    // the row tile holding it.
                    let src = plan.source(t.source_rank);
                    let readiness = src.combine_readiness(g.tile.bm);
                    let group = readiness.group_of(t.row_tile);
                    prop_assert_eq!(pre.len() as u32, readiness.expected(group));
                    for o in 0..g.world {
                        for e in 0..g.local_experts {
                            for (row, &token) in src.packet(o, e).iter().enumerate() {
                                if token / g.tile.bm == t.row_tile {
                                    let prt = row as u32 / g.tile.bm;
                                    let need = (TaskKind::Gemm1, t.source_rank, o, e, prt, t.col_tile);
                                    prop_assert!(pre.contains(&need),
                                        "combine {:?} does not wait for {:?}", key, need);
                                }
                            }
                        }
                    }
                }
            }
        }

        // Rows are covered exactly: per packet by its GEMM0 tiles of column 0, per rank by its
        // combine tiles of column 0.
        let mut covered: HashMap<(u32, u32, u32), u32> = HashMap::new();
        let mut combined = vec![0u32; g.world as usize];
        for t in tasks.iter().filter(|t| t.col_tile == 0) {
            match t.task_kind().unwrap() {
                TaskKind::Gemm0 => {
                    *covered.entry((t.source_rank, t.owner_rank, t.local_expert)).or_default() +=
                        t.valid_rows
                }
                TaskKind::Combine => combined[t.source_rank as usize] += t.valid_rows,
                TaskKind::Gemm1 => {}
            }
        }
        for s in 0..g.world {
            prop_assert_eq!(combined[s as usize], g.tokens);
            for o in 0..g.world {
                for e in 0..g.local_experts {
                    let rows = plan.source(s).rows(o, e);
                    prop_assert_eq!(covered.get(&(s, o, e)).copied().unwrap_or(0), rows);
                }
            }
        }

        // The termination bound, derived from the dispatch signals each rank decodes, equals
        // the tasks that rank executes, in any arrival order.
        for rank in 0..g.world {
            let mut produced = TaskCounts::default();
            for t in tasks.iter().filter(|t| t.executor() == rank) {
                produced.add(t.task_kind().unwrap());
            }
            let received: Vec<u32> = plan
                .received_rows(rank)
                .into_iter()
                .map(|rows| {
                    let word = signal::encode_dispatch(epoch, rows);
                    match signal::decode_dispatch(word, epoch, g.capacity) {
                        Ok(SignalState::Ready(n)) => n,
                        other => panic!("dispatch signal of {rows} rows decoded as {other:?}"),
                    }
                })
                .collect();
            prop_assert_eq!(TaskCounts::for_rank(&layout, received.iter().copied()), produced);
            let row_tiles: u64 = received.iter().map(|&n| div_ceil(n, g.tile.bm) as u64).sum();
            prop_assert_eq!(TaskCounts::bound(&layout, row_tiles, g.tokens), produced.total());
            prop_assert_eq!(TaskCounts::for_rank(&layout, received.into_iter().rev()), produced);
        }
    }

    /// A forward may carry fewer tokens than its layout (the device-resident forward): its
    /// bound is that of a layout built for that many tokens, and never more than the full one.
    #[test]
    fn a_forward_of_fewer_tokens_is_bounded_like_a_layer_of_that_many(
        g in small_geometry(),
        tokens in 0u32..=40,
        row_tiles in 0u64..64,
    ) {
        let t = tokens.min(g.tokens);
        let layout = HeapLayout::new(g).unwrap();
        let fewer = TaskCounts::bound(&layout, row_tiles, t);
        if let Ok(smaller) = HeapLayout::new(Geometry { tokens: t, ..g }) {
            prop_assert_eq!(fewer, TaskCounts::bound(&smaller, row_tiles, t));
        }
        prop_assert!(fewer <= TaskCounts::bound(&layout, row_tiles, g.tokens));
    }

    #[test]
    fn arbitrary_plans_are_validated_without_panicking(
        g in small_geometry(),
        lists in prop::collection::vec(
            prop::collection::vec(prop_oneof![0u32..48, any::<u32>()], 0..12), 0..14),
        other in small_geometry(),
    ) {
        let layout = HeapLayout::new(g).unwrap();
        let shape_ok = lists.len() == (g.world * g.local_experts) as usize;
        let lists_ok = lists.iter().all(|l| {
            l.len() <= g.capacity as usize
                && l.windows(2).all(|w| w[0] < w[1])
                && l.iter().all(|&t| t < g.tokens)
        });
        let plan = SourcePlan::new(&layout, lists);
        prop_assert_eq!(plan.is_ok(), shape_ok && lists_ok, "{:?}", plan);
        if let Ok(p) = plan {
            // A plan built for another layout is rejected, never indexed out of bounds.
            let other = HeapLayout::new(other).unwrap();
            let same = other.geometry().tokens == g.tokens
                && other.geometry().local_experts == g.local_experts
                && other.geometry().world == g.world;
            let r = RoutingPlan::new(&other, vec![p; other.geometry().world as usize]);
            prop_assert_eq!(r.is_ok(), same, "{:?}", r);
        }
    }
}

/// A hand-computed graph with every edge case at once: one hot expert, a rank that sends
/// nothing, zero-row packets and a partial last tile.
#[test]
fn hot_expert_and_empty_rank_hand_computed() {
    let g = Geometry {
        world: 2,
        local_experts: 2,
        tokens: 5,
        capacity: 5,
        hidden: 16,
        inter: 8,
        elem_bytes: 2,
        tile: TileShape::new(2, 8, 8),
    };
    let layout = HeapLayout::new(g).unwrap();
    // Rank 0 sends all 5 tokens to expert (owner 1, local 0); rank 1 sends nothing.
    let hot = SourcePlan::new(&layout, vec![vec![], vec![], (0..5).collect(), vec![]]).unwrap();
    let empty = SourcePlan::new(&layout, vec![vec![]; 4]).unwrap();
    let plan = RoutingPlan::new(&layout, vec![hot, empty]).unwrap();
    // Rank 1 receives 5 rows: 3 row tiles (2, 2, 1 rows) x (1 GEMM0 + 2 GEMM1) = 9 tasks,
    // plus its own combine: 3 token tiles x 2 columns = 6.
    let c1 = TaskCounts::for_rank(&layout, plan.received_rows(1));
    assert_eq!((c1.gemm0, c1.gemm1, c1.combine), (3, 6, 6));
    // Rank 0 receives nothing: only its combine.
    let c0 = TaskCounts::for_rank(&layout, plan.received_rows(0));
    assert_eq!((c0.gemm0, c0.gemm1, c0.combine), (0, 0, 6));
    // Rank 0: 3 token tiles, 3 row tiles over 1 packet: each row tile spans one token tile, a
    // group is one tile, and each group waits for the one row tile holding its tokens.
    let r0 = plan.source(0).combine_readiness(2);
    assert_eq!((r0.group_tiles(), r0.groups()), (1, 3));
    assert_eq!((0..3).map(|g| r0.expected(g)).collect::<Vec<_>>(), vec![1, 1, 1]);
    // Rank 1 sent nothing: span 1, and no group waits for anything.
    let r1 = plan.source(1).combine_readiness(2);
    assert_eq!((r1.groups(), r1.expected(0), r1.expected(2)), (3, 0, 0));
    let tasks: Vec<_> =
        graph::graph_tasks(&layout, &plan, Epoch::FIRST).collect::<Result<_, _>>().unwrap();
    assert_eq!(tasks.len(), 21);
    let last_gemm0 = tasks
        .iter()
        .find(|t| t.task_kind() == Ok(TaskKind::Gemm0) && t.row_tile == 2)
        .expect("a third row tile");
    assert_eq!((last_gemm0.source_rank, last_gemm0.owner_rank, last_gemm0.valid_rows), (0, 1, 1));
    assert_eq!(tile_rows(5, 2, 2), 1);
}
