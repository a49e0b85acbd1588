//! The GPU check of the device-resident forward (`CudaLayer::forward_device`, issue 14): on a
//! caller's stream, with fewer tokens than the layer was built for, and captured into a CUDA
//! graph that is replayed. What is right comes from the host-`f32` forward of the same layer,
//! which is verified against core's oracle first: outputs are deterministic, so the device path
//! must match it bitwise; a smaller batch is verified against the oracle of a layer of that
//! many tokens, with the routing the kernel computed.

use std::time::{Duration, Instant};

use std::sync::Arc;

use cudarc::driver::sys::CUstreamCaptureMode;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, sys};
use flashdmoe_core::oracle::{VerifyOptions, reference_rank, verify};
use flashdmoe_core::routing::RankRouting;
use flashdmoe_core::{
    BackendError, ForwardOptions, Layer, LayerWeights, MoeConfig, RankOutput, generate_input,
};
use flashdmoe_cuda::{CudaLayer, DeviceIo, DeviceRouting};

/// What [`check`] found.
#[derive(Clone, Debug)]
pub struct ResidentReport {
    /// Every part passed.
    pub passed: bool,
    /// One clause per part.
    pub detail: String,
}

/// Device buffers of one forward: every local rank's rows, contiguous.
struct Io {
    x: CudaSlice<u8>,
    y: CudaSlice<u8>,
}

impl Io {
    /// The forward's [`DeviceIo`] on `stream`, routed by the layer's router.
    fn device(&self, stream: &CudaStream) -> DeviceIo {
        DeviceIo {
            x: ptr(&self.x, stream),
            y: ptr(&self.y, stream),
            stream: stream.cu_stream(),
            routing: None,
        }
    }
}

/// Runs the device-resident checks on `layer` (one GPU; `ranks_per_gpu` ranks on it) built
/// from `config` and `weights`: full batch bitwise against `forward`, a smaller batch against
/// the oracle, a graph of three forwards replayed `replays` times, and the host time of a call.
pub fn check(
    layer: &CudaLayer,
    config: &MoeConfig,
    weights: &LayerWeights,
    replays: usize,
) -> Result<ResidentReport, String> {
    let ctx = CudaContext::new(0).map_err(|e| format!("context: {e}"))?;
    let stream = ctx.new_stream().map_err(|e| format!("stream: {e}"))?;
    let timeout = Duration::from_secs(5);
    let t = config.tokens_per_rank;
    let mut parts = Vec::new();
    let mut passed = true;

    // Three inputs, their host-path outputs (verified against the oracle: the reference).
    let mut refs = Vec::new();
    let mut ios = Vec::new();
    for seed in [11u64, 12, 13] {
        let inputs = (0..config.world)
            .map(|r| generate_input(config, r, seed))
            .collect::<Result<Vec<_>, _>>()
            .map_err(at("stream"))?;
        let opts = ForwardOptions { trace: false, timeout };
        let out = layer.forward(&inputs, &opts).map_err(|e| format!("forward: {e}"))?;
        let report = verify(config, weights, &inputs, &out.ranks, &VerifyOptions::default())
            .map_err(|e| format!("verify: {e}"))?;
        if !report.passed() {
            return Err(format!("the host-path reference does not verify: {report}"));
        }
        ios.push(upload(&stream, config, &inputs, t)?);
        refs.push((inputs, out.ranks));
    }

    // 1. The full batch on the caller's stream: bitwise the host path's output.
    let io = ios[0].device(&stream);
    // SAFETY: x and y are this GPU's allocations of [ranks][t][hidden] elements, written /
    // read only in `stream`'s order; the stream is a live stream of GPU 0's primary context.
    unsafe { run_once(layer, t, io, &stream, timeout) }?
        .map_err(|e| format!("device forward: {e}"))?;
    let same = outputs(&stream, config, &ios[0].y, t)? == bits(&refs[0].1);
    passed &= same;
    parts.push(format!(
        "full batch on a caller stream: {}",
        if same { "bitwise = forward()" } else { "DIFFERS from forward()" }
    ));

    // 2. A smaller batch on the same layer: the oracle of a layer of that many tokens, with
    // the routing the kernel computed.
    let small = (t / 3).max(1);
    let config_s = MoeConfig { tokens_per_rank: small, ..config.clone() };
    let inputs_s: Vec<Vec<f32>> =
        refs[1].0.iter().map(|x| x[..small as usize * config.hidden as usize].to_vec()).collect();
    let io_s = upload(&stream, config, &inputs_s, small)?;
    let io = io_s.device(&stream);
    // SAFETY: as above, for `small` tokens a rank.
    unsafe { run_once(layer, small, io, &stream, timeout) }?
        .map_err(|e| format!("device forward of {small} tokens: {e}"))?;
    let routing = layer.last_routing(small).map_err(at("routing of the small batch"))?;
    let rows = outputs(&stream, config, &io_s.y, small)?;
    let ranks: Vec<RankOutput> = routing
        .into_iter()
        .zip(rows)
        .map(|(routing, output)| RankOutput {
            output: output.into_iter().map(f32::from_bits).collect(),
            routing,
            stats: Default::default(),
            trace: None,
        })
        .collect();
    let report = verify(&config_s, weights, &inputs_s, &ranks, &VerifyOptions::default())
        .map_err(|e| format!("verify {small} tokens: {e}"))?;
    passed &= report.passed();
    parts.push(format!("{small} of {t} tokens: {report}"));

    // 3. Three forwards captured into a graph and replayed: epochs advance on the device.
    // The buffers' addresses are taken before the capture: cudarc's `device_ptr` waits on
    // the buffer's last write event, recorded outside the capture, which would invalidate it.
    let captured: Vec<DeviceIo> = ios.iter().map(|io| io.device(&stream)).collect();
    stream.synchronize().map_err(at("synchronize before the capture"))?;
    stream
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
        .map_err(|e| format!("begin capture: {e}"))?;
    for &io in &captured {
        // SAFETY: as above; the launches are recorded into the graph, not run.
        unsafe { layer.forward_device(t, &[io], timeout) }.map_err(|e| format!("capture: {e}"))?;
    }
    let graph = stream
        .end_capture(sys::CUgraphInstantiate_flags(0))
        .map_err(|e| format!("end capture: {e}"))?
        .ok_or("the capture recorded nothing")?;
    let mut bad = 0;
    let start = Instant::now();
    for _ in 0..replays {
        for io in &mut ios {
            stream.memset_zeros(&mut io.y).map_err(at("replay: zero the outputs"))?;
        }
        graph.launch().map_err(|e| format!("replay: {e}"))?;
        stream.synchronize().map_err(at("replay: synchronize"))?;
        layer.device_status().map_err(|e| format!("replay: {e}"))?;
        for (io, (_, want)) in ios.iter().zip(&refs) {
            if outputs(&stream, config, &io.y, t)? != bits(want) {
                bad += 1;
            }
        }
    }
    let replay_ms = start.elapsed().as_secs_f64() * 1e3;
    passed &= bad == 0;
    parts.push(format!(
        "graph of 3 forwards replayed {replays} times: {} ({replay_ms:.1} ms with checks)",
        if bad == 0 {
            "every output bitwise = forward()".to_string()
        } else {
            format!("{bad} outputs DIFFER")
        }
    ));

    // 4. A routing given in device memory (the router skipped): every rank against the
    // oracle's rows for that routing; then an expert out of range fails the forward naming
    // the token, and the next forward is right again.
    let given: Vec<RankRouting> = (0..config.world).map(|r| skewed(config, r)).collect();
    let mut experts = Vec::new();
    let mut gweights = Vec::new();
    for g in &given {
        experts.extend(g.experts.iter().flat_map(|e| e.to_le_bytes()));
        gweights.extend(g.weights.iter().flat_map(|w| w.to_le_bytes()));
    }
    let dexperts = stream.clone_htod(&experts).map_err(at("upload given experts"))?;
    let dweights = stream.clone_htod(&gweights).map_err(at("upload given weights"))?;
    let routing =
        DeviceRouting { experts: ptr(&dexperts, &stream), weights: ptr(&dweights, &stream) };
    let io = DeviceIo { routing: Some(routing), ..ios[0].device(&stream) };
    // SAFETY: as in part 1; the routing arrays hold [ranks][t][k] u32 / f32 on this GPU.
    unsafe { run_once(layer, t, io, &stream, timeout) }?
        .map_err(|e| format!("routed forward: {e}"))?;
    let got = outputs(&stream, config, &ios[0].y, t)?;
    let mut worst = 0.0f64;
    for ((input, rows), g) in refs[0].0.iter().zip(&got).zip(&given) {
        let want = reference_rank(config, weights, input, g)
            .map_err(at("reference of a given routing"))?;
        worst = worst.max(row_error(rows, &want, config.hidden as usize));
    }
    let mut ok = worst <= config.dtype.tolerance();
    if config.world == 1 {
        // The host path's routed forward (`Layer::forward_rank_routed`): the same kernel, so
        // the same bits, and the routing it reports back is the one given.
        let opts = ForwardOptions { trace: false, timeout };
        let host = layer
            .forward_rank_routed(0, &refs[0].0[0], &given[0], &opts)
            .map_err(|e| format!("forward_rank_routed: {e}"))?;
        let same = host.routing == given[0]
            && host.output.iter().map(|v| v.to_bits()).collect::<Vec<_>>() == got[0];
        ok &= same;
        parts.push(format!(
            "forward_rank_routed: {}",
            if same { "its routing and bits = the device path's" } else { "DIFFERS" }
        ));
    }
    passed &= ok;
    parts.push(format!(
        "routing given on the device: worst row error {worst:.3e} (tolerance {:.3e}){}",
        config.dtype.tolerance(),
        if ok { "" } else { " FAILED" }
    ));
    let mut bad = experts.clone();
    bad[4..8].copy_from_slice(&config.experts.to_le_bytes()); // token 0, slot 1
    let dbad = stream.clone_htod(&bad).map_err(at("upload a bad routing"))?;
    let io_bad =
        DeviceIo { routing: Some(DeviceRouting { experts: ptr(&dbad, &stream), ..routing }), ..io };
    // SAFETY: as above.
    let refused = match unsafe { run_once(layer, t, io_bad, &stream, timeout) }? {
        Err(BackendError::Timeout(report)) => {
            let text = report.to_string();
            let named = text.contains("given routing");
            passed &= named;
            format!("an expert out of range: {text}{}", if named { "" } else { " (NOT NAMED)" })
        }
        other => {
            passed = false;
            format!("an expert out of range was NOT refused: {other:?}")
        }
    };
    let io = DeviceIo { routing: None, ..io };
    // SAFETY: as in part 1.
    unsafe { run_once(layer, t, io, &stream, timeout) }?
        .map_err(|e| format!("after the bad routing: {e}"))?;
    let again = outputs(&stream, config, &ios[0].y, t)? == bits(&refs[0].1);
    passed &= again;
    parts
        .push(format!("{refused}; next forward {}", if again { "bitwise right" } else { "WRONG" }));

    // 5. Host time of one call (no synchronisation), against the kernel's device time.
    let mut host_us = Vec::new();
    // Timing events: cudarc's default flags (`None`) disable timing.
    let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
    let begin = stream.record_event(timing).map_err(at("host timing: start event"))?;
    let calls = 50;
    for _ in 0..calls {
        let t0 = Instant::now();
        // SAFETY: as in part 1.
        unsafe { layer.forward_device(t, &[io], timeout) }.map_err(|e| format!("timed: {e}"))?;
        host_us.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    let end = stream.record_event(timing).map_err(at("host timing: end event"))?;
    end.synchronize().map_err(at("host timing: synchronize"))?;
    layer.device_status().map_err(|e| format!("timed: {e}"))?;
    let device_ms =
        begin.elapsed_ms(&end).map_err(at("host timing: elapsed"))? as f64 / calls as f64;
    host_us.sort_by(f64::total_cmp);
    parts.push(format!(
        "host time a call: median {:.1} us (max {:.1}); device time a forward {:.3} ms back to back",
        host_us[host_us.len() / 2],
        host_us[host_us.len() - 1],
        device_ms
    ));
    Ok(ResidentReport { passed, detail: parts.join("; ") })
}

/// How [`back_to_back_all`] runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackToBackOptions {
    /// Forwards timed (>= 1).
    pub calls: usize,
    /// Untimed device-resident forwards before them.
    pub warmup: usize,
    /// Deadline of every wait inside a forward.
    pub timeout: Duration,
}

/// What [`back_to_back_all`] measured on each GPU of a layer (the layer's GPU order).
#[derive(Clone, Debug, PartialEq)]
pub struct BackToBack {
    /// Forwards timed.
    pub calls: usize,
    /// Per GPU: device time a forward, (end event - start event) / `calls`.
    pub per_gpu_ms: Vec<f64>,
    /// Per GPU: each forward's time, between consecutive events on its stream (ms).
    pub forwards_ms: Vec<Vec<f64>>,
    /// Whether the last forward's output is bitwise the host path's of the same inputs on
    /// every GPU.
    pub same: bool,
}

impl BackToBack {
    /// Each forward's time on the slowest GPU (ms): the time a forward of the whole layer
    /// takes when every GPU must finish it.
    pub fn slowest_per_forward(&self) -> Vec<f64> {
        (0..self.calls).map(|i| self.forwards_ms.iter().map(|f| f[i]).fold(0.0, f64::max)).collect()
    }
}

/// What a model sees, on every GPU of `layer` (one process's part of a world of processes,
/// or one process driving every GPU): the inputs of the layer's local ranks (`inputs`, in
/// [`CudaLayer::local_ranks`] order) uploaded once per GPU, `warmup` device-resident forwards,
/// then `before()` (a group barrier across processes: every process queues its forwards
/// together), then `calls` forwards queued back to back on each GPU's own stream with an
/// event after each, and no host work between them. The last output is compared bitwise with
/// `host` (the host path's forward of the same inputs, verified against the oracle by the
/// caller): a time is never of unverified work.
pub fn back_to_back_all(
    layer: &CudaLayer,
    config: &MoeConfig,
    inputs: &[Vec<f32>],
    host: &[RankOutput],
    options: BackToBackOptions,
    before: &mut dyn FnMut() -> Result<(), String>,
) -> Result<BackToBack, String> {
    let BackToBackOptions { calls, warmup, timeout } = options;
    let ordinals = layer.gpu_ordinals();
    let r = layer.ranks_per_gpu() as usize;
    if calls == 0 {
        return Err("back to back: at least one forward".into());
    }
    if inputs.len() != ordinals.len() * r || host.len() != inputs.len() {
        return Err(format!(
            "back to back: {} inputs and {} host outputs for {} GPUs of {r} ranks",
            inputs.len(),
            host.len(),
            ordinals.len()
        ));
    }
    let t = config.tokens_per_rank;
    let mut streams = Vec::with_capacity(ordinals.len());
    let mut ios = Vec::with_capacity(ordinals.len());
    for (d, &ordinal) in ordinals.iter().enumerate() {
        let ctx = CudaContext::new(ordinal).map_err(at("back to back: context"))?;
        let stream = ctx.new_stream().map_err(at("back to back: stream"))?;
        ios.push(upload(&stream, config, &inputs[d * r..(d + 1) * r], t)?);
        streams.push(stream);
    }
    let dios: Vec<DeviceIo> = ios.iter().zip(&streams).map(|(io, s)| io.device(s)).collect();
    let sync = |step: &'static str| -> Result<(), String> {
        for s in &streams {
            s.synchronize().map_err(at(step))?;
        }
        Ok(())
    };
    for _ in 0..warmup {
        // SAFETY: `ios[d]` holds GPU `d`'s local ranks' `t` rows in the layer's dtype on that
        // GPU, used only on `streams[d]` (a stream of its primary context), and lives until
        // the synchronisations below.
        unsafe { layer.forward_device(t, &dios, timeout) }.map_err(at("back to back: warm-up"))?;
    }
    sync("back to back: warm-up")?;
    layer.device_status().map_err(at("back to back: warm-up"))?;
    before()?;
    let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
    let mut events: Vec<Vec<cudarc::driver::CudaEvent>> = Vec::with_capacity(streams.len());
    for s in &streams {
        events.push(vec![s.record_event(timing).map_err(at("back to back: start event"))?]);
    }
    for _ in 0..calls {
        // SAFETY: as above.
        unsafe { layer.forward_device(t, &dios, timeout) }.map_err(at("back to back"))?;
        for (s, e) in streams.iter().zip(&mut events) {
            e.push(s.record_event(timing).map_err(at("back to back: event"))?);
        }
    }
    sync("back to back: synchronize")?;
    layer.device_status().map_err(at("back to back"))?;
    let mut per_gpu_ms = Vec::with_capacity(streams.len());
    let mut forwards_ms = Vec::with_capacity(streams.len());
    for e in &events {
        let mut each = Vec::with_capacity(calls);
        for w in e.windows(2) {
            each.push(w[0].elapsed_ms(&w[1]).map_err(at("back to back: elapsed"))? as f64);
        }
        let total = e[0].elapsed_ms(&e[calls]).map_err(at("back to back: elapsed"))? as f64;
        per_gpu_ms.push(total / calls as f64);
        forwards_ms.push(each);
    }
    let mut same = true;
    for (d, (io, s)) in ios.iter().zip(&streams).enumerate() {
        same &= outputs(s, config, &io.y, t)? == bits(&host[d * r..(d + 1) * r]);
    }
    Ok(BackToBack { calls, per_gpu_ms, forwards_ms, same })
}

/// Queues one forward of `tokens` tokens on `io`, waits for its stream and returns the layer's
/// status (`Err` of the outer result: the call or the wait failed).
///
/// # Safety
///
/// As [`CudaLayer::forward_device`] for `io` and `tokens`, with `stream` being `io.stream`.
unsafe fn run_once(
    layer: &CudaLayer,
    tokens: u32,
    io: DeviceIo,
    stream: &CudaStream,
    timeout: Duration,
) -> Result<Result<(), BackendError>, String> {
    // SAFETY: the caller's contract.
    unsafe { layer.forward_device(tokens, &[io], timeout) }
        .map_err(|e| format!("forward_device: {e}"))?;
    stream.synchronize().map_err(at("synchronize"))?;
    Ok(layer.device_status())
}

/// Every rank's `tokens` rows of `inputs`, encoded, in one device buffer, and a zeroed output
/// buffer of the same size.
fn upload(
    stream: &Arc<CudaStream>,
    config: &MoeConfig,
    inputs: &[Vec<f32>],
    tokens: u32,
) -> Result<Io, String> {
    let row = config.hidden as usize;
    let mut bytes = Vec::new();
    for x in inputs {
        config.dtype.encode_into(&x[..tokens as usize * row], &mut bytes);
    }
    let x = stream.clone_htod(&bytes).map_err(|e| format!("upload: {e}"))?;
    let y = stream.alloc_zeros::<u8>(bytes.len()).map_err(|e| format!("alloc: {e}"))?;
    Ok(Io { x, y })
}

/// Each rank's `tokens` output rows from `y`, as f32 bits.
fn outputs(
    stream: &Arc<CudaStream>,
    config: &MoeConfig,
    y: &CudaSlice<u8>,
    tokens: u32,
) -> Result<Vec<Vec<u32>>, String> {
    let bytes = stream.clone_dtoh(y).map_err(|e| format!("read back: {e}"))?;
    let per_rank = tokens as usize * config.hidden as usize * config.dtype.elem_bytes() as usize;
    Ok(bytes
        .chunks(per_rank)
        .map(|b| {
            let mut v = Vec::new();
            config.dtype.decode_into(b, &mut v);
            v.into_iter().map(f32::to_bits).collect()
        })
        .collect())
}

/// A routing no router would make: token t to experts (t + shift + 2j) % E for its slots j,
/// with weights that do not sum to one (the given weights must reach the combine as given).
fn skewed(config: &MoeConfig, shift: u32) -> RankRouting {
    let (e, k) = (config.experts, config.top_k);
    let experts = (0..config.tokens_per_rank)
        .flat_map(|t| (0..k).map(move |j| (t + shift + 2 * j) % e))
        .collect();
    let weights = (0..config.tokens_per_rank)
        .flat_map(|t| {
            (0..k).map(move |j| if j == 0 { 0.25 + (t % 64) as f32 / 64.0 } else { -0.5 })
        })
        .collect();
    RankRouting::from_choices(config, experts, weights).expect("distinct experts in range")
}

/// The largest error of `rows` (f32 bits) against `want`, relative to each row's largest
/// reference value (the oracle's rule).
fn row_error(rows: &[u32], want: &[f32], hidden: usize) -> f64 {
    rows.chunks(hidden)
        .zip(want.chunks(hidden))
        .map(|(got, want)| {
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64)).max(1e-30);
            got.iter()
                .zip(want)
                .map(|(g, w)| (f32::from_bits(*g) as f64 - *w as f64).abs() / scale)
                .fold(0.0, f64::max)
        })
        .fold(0.0, f64::max)
}

/// The ranks' outputs as f32 bits.
fn bits(ranks: &[RankOutput]) -> Vec<Vec<u32>> {
    ranks.iter().map(|r| r.output.iter().map(|v| v.to_bits()).collect()).collect()
}

fn ptr(slice: &CudaSlice<u8>, stream: &CudaStream) -> u64 {
    let (p, _sync) = slice.device_ptr(stream);
    p
}

/// An error's message prefixed with the step that failed (a driver error alone does not say
/// which call it came from).
fn at<E: std::fmt::Display>(step: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{step}: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forward_takes_its_slowest_gpus_time() {
        let b2b = BackToBack {
            calls: 3,
            per_gpu_ms: vec![2.0, 2.1],
            forwards_ms: vec![vec![0.5, 0.9, 0.6], vec![0.7, 0.8, 0.6]],
            same: true,
        };
        assert_eq!(b2b.slowest_per_forward(), vec![0.7, 0.9, 0.6]);
    }
}
