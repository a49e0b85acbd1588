//! The GPU check of the device-resident forward (`CudaLayer::forward_device`, issue 14): on a
//! caller's stream, with fewer tokens than the layer was built for, and captured into a CUDA
//! graph that is replayed. What is right comes from the host-`f32` forward of the same layer,
//! which is verified against core's oracle first: outputs are deterministic, so the device path
//! must match it bitwise; a smaller batch is verified against the oracle of a layer of that
//! many tokens, with the routing the kernel computed.

use std::time::{Duration, Instant};

use cudarc::driver::sys::CUstreamCaptureMode;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, sys};
use flashdmoe_core::oracle::{VerifyOptions, verify};
use flashdmoe_core::{ForwardOptions, Layer, LayerWeights, MoeConfig, RankOutput, generate_input};
use flashdmoe_cuda::{CudaLayer, DeviceIo};
use std::sync::Arc;

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
            .map_err(|e| e.to_string())?;
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
    let io =
        DeviceIo { x: ptr(&ios[0].x, &stream), y: ptr(&ios[0].y, &stream), stream: raw(&stream) };
    // SAFETY: x and y are this GPU's allocations of [ranks][t][hidden] elements, written /
    // read only in `stream`'s order; the stream is a live stream of GPU 0's primary context.
    unsafe { layer.forward_device(t, &[io], timeout) }
        .map_err(|e| format!("forward_device: {e}"))?;
    stream.synchronize().map_err(|e| e.to_string())?;
    layer.device_status().map_err(|e| format!("device forward: {e}"))?;
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
    let io = DeviceIo { x: ptr(&io_s.x, &stream), y: ptr(&io_s.y, &stream), stream: raw(&stream) };
    // SAFETY: as above, for `small` tokens a rank.
    unsafe { layer.forward_device(small, &[io], timeout) }
        .map_err(|e| format!("forward_device: {e}"))?;
    stream.synchronize().map_err(|e| e.to_string())?;
    layer.device_status().map_err(|e| format!("device forward of {small} tokens: {e}"))?;
    let routing = layer.last_routing(small).map_err(|e| e.to_string())?;
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
    stream.synchronize().map_err(|e| e.to_string())?;
    stream
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
        .map_err(|e| format!("begin capture: {e}"))?;
    for io in &ios {
        let io = DeviceIo { x: ptr(&io.x, &stream), y: ptr(&io.y, &stream), stream: raw(&stream) };
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
            stream.memset_zeros(&mut io.y).map_err(|e| e.to_string())?;
        }
        graph.launch().map_err(|e| format!("replay: {e}"))?;
        stream.synchronize().map_err(|e| e.to_string())?;
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

    // 4. Host time of one call (no synchronisation), against the kernel's device time.
    let io =
        DeviceIo { x: ptr(&ios[0].x, &stream), y: ptr(&ios[0].y, &stream), stream: raw(&stream) };
    let mut host_us = Vec::new();
    let begin = stream.record_event(None).map_err(|e| e.to_string())?;
    let calls = 50;
    for _ in 0..calls {
        let t0 = Instant::now();
        // SAFETY: as in part 1.
        unsafe { layer.forward_device(t, &[io], timeout) }.map_err(|e| format!("timed: {e}"))?;
        host_us.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    let end = stream.record_event(None).map_err(|e| e.to_string())?;
    end.synchronize().map_err(|e| e.to_string())?;
    layer.device_status().map_err(|e| format!("timed: {e}"))?;
    let device_ms = begin.elapsed_ms(&end).map_err(|e| e.to_string())? as f64 / calls as f64;
    host_us.sort_by(f64::total_cmp);
    parts.push(format!(
        "host time a call: median {:.1} us (max {:.1}); device time a forward {:.3} ms back to back",
        host_us[host_us.len() / 2],
        host_us[host_us.len() - 1],
        device_ms
    ));
    Ok(ResidentReport { passed, detail: parts.join("; ") })
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

/// The ranks' outputs as f32 bits.
fn bits(ranks: &[RankOutput]) -> Vec<Vec<u32>> {
    ranks.iter().map(|r| r.output.iter().map(|v| v.to_bits()).collect()).collect()
}

fn ptr(slice: &CudaSlice<u8>, stream: &CudaStream) -> u64 {
    let (p, _sync) = slice.device_ptr(stream);
    p
}

fn raw(stream: &CudaStream) -> sys::CUstream {
    stream.cu_stream()
}
