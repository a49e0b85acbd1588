//! One process per GPU (issue 14 items 5 and 6; `docs/dev/process-model.md`): a
//! [`ProcessGroup`] joined from the launcher's environment (rendezvous store, liveness mesh,
//! NCCL communicator), the symmetric heap the layer's kernel reaches its peers through, and
//! what a forward does when a peer process dies (the kernel's abort flag raised from the
//! host, [`BackendError::PeerGone`], later calls failing at once).
//!
//! ## Invariants
//!
//! * Nothing waits without a deadline: the store, the mesh and every NCCL collective have the
//!   group's timeout; a forward's kernel has its own.
//! * A dead peer seen by the liveness mesh during a forward raises the kernel's abort flag
//!   (`fdm_diag.abort`) with a copy from pinned memory on a stream of its own, ordered after
//!   the forward's start event (so the forward's diagnostics reset cannot clear it), and the
//!   forward returns [`BackendError::PeerGone`]; every later call returns it before any GPU
//!   work.
//! * The process ranks' GPUs hold only their own ranks' experts (the weight slots of
//!   `upload`), exactly as in one process.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cudarc::driver::{CudaContext, CudaEvent, CudaStream, PinnedHostSlice};
use flashdmoe_core::rendezvous::{
    Env, Liveness, LivenessOptions, PeerGone as Gone, RendezvousError, Store, StoreOptions, Watch,
};
use flashdmoe_core::{BackendError, TimeoutReport};
use sha2::{Digest, Sha256};

use crate::device::Device;
use crate::error::CudaError;
use crate::nccl::{self, Comm, NcclApi, SymmetricHeap, UniqueId};

/// The test hook's variable: `rank=R,forward=F` makes process rank `R` SIGKILL itself right
/// after launching its `F`-th forward (counted from 1).
pub const TEST_DIE: &str = "FLASHDMOE_TEST_DIE";
/// Overrides the GPU of a process (default: `LOCAL_RANK`).
pub const DEVICE_VAR: &str = "FLASHDMOE_DEVICE";

/// How long the group's bootstrap steps may take.
#[derive(Clone, Debug)]
pub struct GroupOptions {
    /// Each rendezvous operation, the mesh set-up and each NCCL collective (default 120 s:
    /// the processes meet again after building their kernels, and a first NVRTC compile of
    /// a large layer can take a minute).
    pub timeout: Duration,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions { timeout: Duration::from_secs(120) }
    }
}

fn rdv(e: RendezvousError) -> BackendError {
    BackendError::Bootstrap(e.to_string())
}

fn cuda(e: CudaError) -> BackendError {
    match e {
        CudaError::NcclMissing | CudaError::NcclTooOld { .. } => {
            BackendError::Unavailable(e.to_string())
        }
        other => BackendError::Bootstrap(other.to_string()),
    }
}

/// This process's membership of a world of processes, one GPU each: what
/// [`crate::CudaBackend::build_process`] builds a layer on.
#[derive(Debug)]
pub struct ProcessGroup {
    env: Env,
    api: NcclApi,
    nonce: u64,
    timeout: Duration,
    // Field order is drop order: the store first, then the mesh (goodbyes), then NCCL.
    store: std::sync::Mutex<Store>,
    liveness: Liveness,
    comm: Arc<Comm>,
    /// Holds the device's primary context (NCCL's communicator lives in it) for the group's
    /// life: dropped last.
    dev: Device,
}

impl ProcessGroup {
    /// Joins the world described by the environment (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
    /// `MASTER_ADDR`, `MASTER_PORT`, as torchrun or `flashdmoe launch` set them).
    pub fn from_env(options: &GroupOptions) -> Result<ProcessGroup, BackendError> {
        let env = Env::from_env().map_err(|e| BackendError::Bootstrap(e.to_string()))?;
        ProcessGroup::join(env, options)
    }

    /// Joins the world `env` describes: NCCL variables checked, NCCL loaded, the store and the
    /// liveness mesh connected, then the NCCL communicator (nonblocking, aborted on the
    /// deadline or a dead peer) on GPU `LOCAL_RANK` (or `FLASHDMOE_DEVICE`).
    pub fn join(env: Env, options: &GroupOptions) -> Result<ProcessGroup, BackendError> {
        let device = match std::env::var(DEVICE_VAR) {
            Ok(v) => v.trim().parse::<usize>().map_err(|_| BackendError::InvalidInput {
                what: "FLASHDMOE_DEVICE",
                reason: format!("{v:?} is not a device ordinal"),
            })?,
            Err(_) => env.local_rank,
        };
        ProcessGroup::join_on(env, device, None, options)
    }

    /// Joins the world `env` describes on GPU `device`, whatever `LOCAL_RANK` says. Rank 0
    /// hosts the store on `listener` when given (bound beforehand, e.g. to port 0, so its
    /// address can be handed to the others by another channel: the Python binding's
    /// `torch.distributed` group); otherwise it binds `env`'s address as [`Store::connect`]
    /// does. The other ranks ignore `listener` and connect to `env`'s address.
    pub fn join_on(
        env: Env,
        device: usize,
        listener: Option<std::net::TcpListener>,
        options: &GroupOptions,
    ) -> Result<ProcessGroup, BackendError> {
        let _range = nvtx::LocalRange::new(c"flashdmoe::ProcessGroup::join");
        nccl::env::check_env().map_err(cuda)?;
        if !nccl::env::nvls_disabled() {
            eprintln!(
                "warning: NCCL_NVLS_ENABLE=0 is not set: NCCL may try NVLink multicast, which \
                 the windows here do not need (flashdmoe launch sets it)"
            );
        }
        let api = NcclApi::load().map_err(cuda)?;
        let dev = Device::open(device)?;
        let store_options = StoreOptions { timeout: options.timeout };
        let mut store = match listener {
            Some(l) if env.rank == 0 && env.world_size > 1 => Store::host(l, &env, &store_options),
            _ => Store::connect(&env, &store_options),
        }
        .map_err(rdv)?;
        let liveness = Liveness::start(
            &mut store,
            &LivenessOptions { setup_timeout: options.timeout, ..LivenessOptions::default() },
        )
        .map_err(rdv)?;
        let mut blob = Vec::new();
        if env.rank == 0 {
            blob.extend_from_slice(&UniqueId::new(&api).map_err(cuda)?.0);
            blob.extend_from_slice(&fresh_nonce().to_le_bytes());
        }
        let blob = store.broadcast(&blob).map_err(rdv)?;
        if blob.len() != 136 {
            return Err(BackendError::Bootstrap(format!(
                "rank 0 sent {} bytes of NCCL id and nonce, 136 expected",
                blob.len()
            )));
        }
        let id = UniqueId::from_bytes(&blob[..128]).map_err(cuda)?;
        let nonce = u64::from_le_bytes(blob[128..].try_into().expect("8 bytes"));
        dev.context().bind_to_thread().map_err(|e| BackendError::Device(e.to_string()))?;
        let watch = liveness.watch();
        let cancel = || watch.check().err().map(|g| g.to_string());
        let comm = Comm::init(&api, &id, env.rank, env.world_size, options.timeout, &cancel)
            .map_err(cuda)?;
        let bound = comm.cu_device().map_err(cuda)?;
        if bound != device {
            return Err(BackendError::Bootstrap(format!(
                "NCCL bound rank {} to GPU {bound}, the layer uses GPU {device}",
                env.rank
            )));
        }
        store.barrier().map_err(rdv)?;
        Ok(ProcessGroup {
            env,
            api,
            nonce,
            timeout: options.timeout,
            store: std::sync::Mutex::new(store),
            liveness,
            comm: Arc::new(comm),
            dev,
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.env.rank
    }

    /// Processes in the world.
    pub fn world(&self) -> usize {
        self.env.world_size
    }

    /// The GPU this process owns.
    pub fn device(&self) -> usize {
        self.dev.ordinal()
    }

    /// `Err(PeerGone)` once a peer process is gone.
    pub fn check(&self) -> Result<(), BackendError> {
        self.liveness.check().map_err(|g| peer_gone(g, None))
    }

    /// Every process must build the same layer: `Err` naming the first rank whose
    /// `fingerprint` differs.
    pub(crate) fn agree(&self, fingerprint: &[u8]) -> Result<(), BackendError> {
        let mut store = self.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        store.exchange_fingerprints(fingerprint).map_err(rdv)?;
        Ok(())
    }

    /// A store barrier (every process reached this point), with the group's timeout: what a
    /// timing starts after, so that every process's forwards are queued together.
    pub fn barrier(&self) -> Result<(), BackendError> {
        let mut store = self.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        store.barrier().map_err(rdv)
    }

    /// Every process's `blob`, in rank order (through the rendezvous store, with the group's
    /// timeout): how a process's measurements reach the others.
    pub fn all_gather(&self, blob: &[u8]) -> Result<Vec<Vec<u8>>, BackendError> {
        let mut store = self.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        store.all_gather(blob).map_err(rdv)
    }

    /// The symmetric heap of `kernel_bytes` (collective), on `ctx`'s device.
    pub(crate) fn heap(
        &self,
        ctx: &Arc<CudaContext>,
        kernel_bytes: u64,
    ) -> Result<SymmetricHeap, BackendError> {
        let bytes = nccl::heap::heap_bytes(kernel_bytes).ok_or_else(|| {
            BackendError::Bootstrap(format!("a heap of {kernel_bytes} bytes overflows"))
        })?;
        let watch = self.liveness.watch();
        let cancel = || watch.check().err().map(|g| g.to_string());
        SymmetricHeap::new(
            &self.api,
            Arc::clone(&self.comm),
            Arc::clone(ctx),
            bytes,
            self.nonce,
            Instant::now() + self.timeout,
            &cancel,
        )
        .map_err(cuda)
    }

    /// The link a layer keeps to the group: liveness and the test hook.
    pub(crate) fn link(&self, ctx: &Arc<CudaContext>) -> Result<ProcessLink, BackendError> {
        let d = |e: cudarc::driver::DriverError| BackendError::Device(e.to_string());
        let stream = ctx.new_stream().map_err(d)?;
        // SAFETY: a pinned host buffer of one u32; initialised right below before any use.
        let mut one = unsafe { ctx.alloc_pinned::<u32>(1) }.map_err(d)?;
        one.as_mut_slice().map_err(d)?[0] = 1;
        let die = match std::env::var(TEST_DIE) {
            Ok(spec) => parse_die(&spec)
                .map_err(|reason| BackendError::InvalidInput {
                    what: "FLASHDMOE_TEST_DIE",
                    reason,
                })?
                .and_then(|(rank, forward)| (rank == self.rank()).then_some(forward)),
            Err(_) => None,
        };
        Ok(ProcessLink {
            watch: self.liveness.watch(),
            rank: self.rank(),
            abort_stream: stream,
            one,
            die,
            forwards: AtomicU64::new(0),
        })
    }
}

/// `rank=R,forward=F` (either order) -> `Some((R, F))`; empty -> `None`.
pub fn parse_die(spec: &str) -> Result<Option<(usize, u64)>, String> {
    if spec.trim().is_empty() {
        return Ok(None);
    }
    let (mut rank, mut forward) = (None, None);
    for part in spec.split(',') {
        let (k, v) = part.split_once('=').ok_or_else(|| format!("{part:?} is not key=value"))?;
        let bad = || format!("{v:?} is not a number in {spec:?}");
        match k.trim() {
            "rank" => rank = Some(v.trim().parse::<usize>().map_err(|_| bad())?),
            "forward" => forward = Some(v.trim().parse::<u64>().map_err(|_| bad())?),
            other => return Err(format!("unknown key {other:?} in {spec:?} (rank=R,forward=F)")),
        }
    }
    match (rank, forward) {
        (Some(r), Some(f)) if f >= 1 => Ok(Some((r, f))),
        _ => Err(format!("{spec:?}: give rank=R,forward=F with F >= 1")),
    }
}

fn fresh_nonce() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut h = Sha256::new();
    h.update(t.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    u64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

/// [`BackendError::PeerGone`] of a liveness verdict.
pub(crate) fn peer_gone(g: Gone, report: Option<TimeoutReport>) -> BackendError {
    BackendError::PeerGone { rank: g.rank as u32, how: g.how.to_string(), report }
}

/// What a layer of one process keeps of its group.
#[derive(Debug)]
pub(crate) struct ProcessLink {
    watch: Watch,
    rank: usize,
    /// Non-blocking stream of the abort copy (a copy engine: the persistent kernel holds
    /// every SM).
    abort_stream: Arc<CudaStream>,
    /// Pinned `1u32`, the abort flag's value.
    one: PinnedHostSlice<u32>,
    die: Option<u64>,
    forwards: AtomicU64,
}

impl ProcessLink {
    /// `Err(PeerGone)` once a peer is gone: one atomic load, before any GPU work.
    pub(crate) fn check(&self) -> Result<(), BackendError> {
        self.watch.check().map_err(|g| peer_gone(g, None))
    }

    /// Called right after a forward's launch: the test hook kills this process at its forward.
    pub(crate) fn launched(&self) {
        let n = self.forwards.fetch_add(1, Ordering::Relaxed) + 1;
        if self.die == Some(n) {
            eprintln!("{TEST_DIE}: rank {} kills itself after launching forward {n}", self.rank);
            // SAFETY: kill(2) on our own pid; SIGKILL ends the process here.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    }

    /// Waits for the forward between `start` and `end`; if a peer dies meanwhile, raises the
    /// kernel's abort flag at device address `abort_flag` and returns `PeerGone` once the
    /// kernel has ended (it polls the flag in every wait).
    pub(crate) fn wait(
        &self,
        start: &CudaEvent,
        end: &CudaEvent,
        abort_flag: u64,
    ) -> Result<(), BackendError> {
        let d = |e: cudarc::driver::DriverError| BackendError::Device(e.to_string());
        let mut gone: Option<Gone> = None;
        loop {
            if end.try_is_complete().map_err(d)? {
                break;
            }
            if gone.is_none()
                && let Err(g) = self.watch.check()
            {
                self.raise_abort(start, abort_flag).map_err(d)?;
                gone = Some(g);
            }
            std::thread::yield_now();
        }
        match gone {
            Some(g) => Err(peer_gone(g, None)),
            None => Ok(()),
        }
    }

    fn raise_abort(
        &self,
        start: &CudaEvent,
        abort_flag: u64,
    ) -> Result<(), cudarc::driver::DriverError> {
        let stream = self.abort_stream.cu_stream();
        let src = self.one.as_ptr()?;
        // SAFETY: the stream and the event are alive (owned by this link and the caller's
        // launch); waiting on the start event orders the copy after the forward's diagnostics
        // reset. The source is pinned host memory owned by `self` (alive until the copy ends:
        // the link outlives the forward, which waits for the kernel, and the copy is tiny);
        // `abort_flag` is the 4-byte `abort` word of the layer's live `Diag` buffer.
        unsafe {
            cudarc::driver::result::stream::wait_event(
                stream,
                start.cu_event(),
                cudarc::driver::sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT,
            )?;
            cudarc::driver::sys::cuMemcpyHtoDAsync_v2(
                abort_flag,
                src as *const std::ffi::c_void,
                4,
                stream,
            )
            .result()
        }
    }

    /// A forward's failure while a peer is gone is that peer's death: a kernel timeout
    /// becomes `PeerGone` with its report, a device error `PeerGone` naming it (should the
    /// dead peer's memory have faulted our context); other errors stay as they are.
    pub(crate) fn explain(&self, e: BackendError) -> BackendError {
        match (e, self.watch.check()) {
            (BackendError::Timeout(report), Err(g)) => peer_gone(g, Some(report)),
            (BackendError::Device(message), Err(g)) => BackendError::PeerGone {
                rank: g.rank as u32,
                how: format!("{}; the forward then failed: device error: {message}", g.how),
                report: None,
            },
            (e, _) => e,
        }
    }
}

/// What every process must agree on to run one layer: the config, the kernel chosen, the
/// partition of the grid and the heap layout (a hash; [`ProcessGroup::agree`] compares them).
pub(super) fn fingerprint(plan: &super::Plan, processes: usize) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(format!("{:?}", plan.config).as_bytes());
    h.update(format!("{:?}", plan.spec).as_bytes());
    h.update(format!("{:?}", plan.scratch).as_bytes());
    for n in [
        plan.layout.total_bytes(),
        plan.scratch_bytes,
        u64::from(plan.ranks_per_gpu),
        u64::from(plan.blocks_per_rank),
        processes as u64,
    ] {
        h.update(n.to_le_bytes());
    }
    h.finalize().to_vec()
}

impl super::CudaLayer {
    /// `Err(PeerGone)` once a peer process of this layer is gone (one atomic load); always
    /// `Ok` for a layer of one process.
    pub fn check_peers(&self) -> Result<(), BackendError> {
        match &self.peers {
            PeerHeaps::Local => Ok(()),
            PeerHeaps::Nccl(link) => link.check(),
        }
    }

    /// Whether this layer is one process's part of a world of processes.
    pub fn is_process_rank(&self) -> bool {
        matches!(self.peers, PeerHeaps::Nccl(_))
    }

    /// The global ranks this process runs (all of them for a layer of one process).
    pub fn local_ranks(&self) -> std::ops::Range<u32> {
        let first = match &self.peers {
            PeerHeaps::Local => 0,
            PeerHeaps::Nccl(link) => link.rank as u32 * self.plan.ranks_per_gpu,
        };
        first..first + self.gpus.len() as u32 * self.plan.ranks_per_gpu
    }

    /// The device ordinals of this process's GPUs, in the layer's order (the order
    /// [`Self::forward_device`]'s `io` follows).
    pub fn gpu_ordinals(&self) -> Vec<usize> {
        self.gpus
            .iter()
            .map(|g| g.lock().unwrap_or_else(std::sync::PoisonError::into_inner).device.ordinal())
            .collect()
    }

    /// The index in `gpus` of the GPU running `rank` (one of [`Self::local_ranks`]).
    pub(super) fn gpu_index(&self, rank: u32) -> usize {
        ((rank - self.local_ranks().start) / self.plan.ranks_per_gpu) as usize
    }

    /// Bytes of weights on each of this process's GPUs (router, biases and its ranks'
    /// expert slots), and the device memory in use on each as the driver reports it.
    pub fn memory_per_gpu(&self) -> Result<Vec<(usize, u64, u64)>, BackendError> {
        let mut out = Vec::with_capacity(self.gpus.len());
        for gpu in &self.gpus {
            let gpu = gpu.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let weights = gpu.weights.iter().flatten().map(|w| w.len() as u64).sum();
            gpu.device
                .context()
                .bind_to_thread()
                .map_err(|e| BackendError::Device(e.to_string()))?;
            let (free, total) = cudarc::driver::result::mem_get_info()
                .map_err(|e| BackendError::Device(e.to_string()))?;
            out.push((gpu.device.ordinal(), weights, (total - free) as u64));
        }
        Ok(out)
    }

    /// One forward of this process's ranks ([`Self::local_ranks`], `inputs` in that order):
    /// what a process of a world of processes runs, each process with its own inputs at the
    /// same time. Every GPU of the process is staged, then launched, then collected.
    pub fn forward_local(
        &self,
        inputs: &[Vec<f32>],
        options: &flashdmoe_core::ForwardOptions,
    ) -> Result<Vec<flashdmoe_core::RankOutput>, BackendError> {
        let _range = nvtx::LocalRange::new(c"flashdmoe::cuda::forward_local");
        let ranks = self.local_ranks();
        if inputs.len() != ranks.len() {
            return Err(BackendError::InvalidInput {
                what: "inputs",
                reason: format!(
                    "expected one input per rank of this process ({ranks:?}), got {}",
                    inputs.len()
                ),
            });
        }
        // A dead peer first: it is the cheapest check, and the call after a death must fail at
        // once (validating a paper-sized input alone took ~48 ms, run 28).
        self.check_peers()?;
        for (rank, input) in ranks.clone().zip(inputs) {
            flashdmoe_core::backend::check_rank_input(&self.plan.config, rank, input)?;
        }
        let mut guards: Vec<_> = self
            .gpus
            .iter()
            .map(|g| g.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
            .collect();
        let launched = self.stage_and_launch(&mut guards, inputs, options)?;
        self.launched();
        let mut outs = Vec::with_capacity(inputs.len());
        for (gpu, l) in guards.iter().zip(launched) {
            outs.extend(self.collect(gpu, l, options).map_err(|e| self.explain(e))?);
        }
        Ok(outs)
    }

    /// After a launch: the dying-rank test hook.
    pub(super) fn launched(&self) {
        if let PeerHeaps::Nccl(link) = &self.peers {
            link.launched();
        }
    }

    /// A forward's error, with a kernel timeout during a peer's death named as that death.
    pub(super) fn explain(&self, e: BackendError) -> BackendError {
        match &self.peers {
            PeerHeaps::Local => e,
            PeerHeaps::Nccl(link) => link.explain(e),
        }
    }

    /// Waits for `gpu`'s launch to end: a plain synchronize in one process; across processes
    /// a poll that raises the kernel's abort flag if a peer dies meanwhile.
    pub(super) fn wait(
        &self,
        gpu: &super::Gpu,
        launched: &super::Launched,
    ) -> Result<(), BackendError> {
        match &self.peers {
            PeerHeaps::Local => {
                launched.end.synchronize().map_err(|e| BackendError::Device(e.to_string()))
            }
            PeerHeaps::Nccl(link) => {
                // `Diag.abort` is the second u32 of the record (params.rs).
                let abort_flag = gpu.params.diag + 4;
                match link.wait(&launched.start, &launched.end, abort_flag) {
                    // The kernel's own report of the aborted forward, if a wait gave up.
                    Err(BackendError::PeerGone { rank, how, report: None }) => {
                        let report = match self.diag_status(gpu) {
                            Err(BackendError::Timeout(report)) => Some(report),
                            _ => None,
                        };
                        Err(BackendError::PeerGone { rank, how, report })
                    }
                    other => other,
                }
            }
        }
    }
}

/// A layer's peer heaps: in this process's GPUs (peer access) or across processes (NCCL).
#[derive(Debug)]
pub(crate) enum PeerHeaps {
    /// One process opens every GPU (`enable_peer_access`).
    Local,
    /// One process per GPU; the heaps are NCCL windows.
    Nccl(ProcessLink),
}

/// One GPU's heaps: a plain allocation, or this process's symmetric heap.
#[derive(Debug)]
pub(crate) enum Heaps {
    /// `cudaMalloc`-style memory of this process (peers reach it by peer access).
    Local(cudarc::driver::CudaSlice<u8>),
    /// `ncclMemAlloc` memory registered as an NCCL window.
    Nccl(SymmetricHeap),
}

impl Heaps {
    /// The heaps' device address.
    pub(crate) fn ptr(&self, stream: &Arc<CudaStream>) -> u64 {
        match self {
            Heaps::Local(s) => super::device_ptr(s, stream),
            Heaps::Nccl(h) => h.ptr(),
        }
    }

    /// Device address of local rank `rank`'s heap: the ranks' heaps lie `rank_bytes` apart
    /// (`HeapLayout::total_bytes`), the first at [`Self::ptr`].
    pub(crate) fn rank_ptr(&self, stream: &Arc<CudaStream>, rank_bytes: u64, rank: u32) -> u64 {
        self.ptr(stream) + u64::from(rank) * rank_bytes
    }

    /// `len` bytes at `offset`, after the stream's work.
    pub(crate) fn read(
        &self,
        stream: &Arc<CudaStream>,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, BackendError> {
        match self {
            Heaps::Local(s) => stream
                .clone_dtoh(&s.slice(offset as usize..(offset + len) as usize))
                .map_err(|e| BackendError::Device(e.to_string())),
            Heaps::Nccl(h) => {
                stream.synchronize().map_err(|e| BackendError::Device(e.to_string()))?;
                h.read(offset, len).map_err(|e| BackendError::Device(e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_die_hook_parses_rank_and_forward() {
        assert_eq!(parse_die("rank=1,forward=3"), Ok(Some((1, 3))));
        assert_eq!(parse_die(" forward=2 , rank=0 "), Ok(Some((0, 2))));
        assert_eq!(parse_die(""), Ok(None));
        assert!(parse_die("rank=1").unwrap_err().contains("rank=R,forward=F"));
        assert!(parse_die("rank=1,forward=0").is_err());
        assert!(parse_die("rank=x,forward=1").unwrap_err().contains("not a number"));
        assert!(parse_die("pid=1").unwrap_err().contains("unknown key"));
    }

    #[test]
    fn a_missing_or_old_nccl_is_unavailable_and_bootstrap_failures_name_their_step() {
        assert!(matches!(cuda(CudaError::NcclMissing), BackendError::Unavailable(_)));
        let old = cuda(CudaError::NcclTooOld { found: "2.27.3".into() });
        assert!(old.to_string().contains("2.28 or newer"), "{old}");
        let refused = cuda(CudaError::NcclEnv {
            var: "NCCL_P2P_DISABLE",
            value: "1".into(),
            reason: "no peer mappings",
        });
        assert!(matches!(refused, BackendError::Bootstrap(_)));
        assert!(refused.to_string().contains("NCCL_P2P_DISABLE=1 is set"), "{refused}");
        let stamp = cuda(CudaError::Bootstrap { step: "peer stamp", reason: "rank 1".into() });
        assert!(stamp.to_string().contains("bootstrap failed at peer stamp: rank 1"), "{stamp}");
    }

    #[test]
    fn a_timeout_while_a_peer_is_gone_names_the_peer() {
        let e = peer_gone(
            Gone { rank: 1, how: flashdmoe_core::rendezvous::Gone::Closed },
            Some(TimeoutReport {
                rank: 0,
                role: "subscriber".into(),
                awaited: "dispatch signal from rank 1 for local expert 0".into(),
                expected_epoch: 3,
                seen: 2,
            }),
        );
        let msg = e.to_string();
        assert!(
            msg.starts_with("peer rank 1 is gone (its connection closed without a goodbye)"),
            "{msg}"
        );
        assert!(msg.contains("dispatch signal from rank 1"), "{msg}");
        assert!(msg.contains("rebuild it"), "{msg}");
    }
}
