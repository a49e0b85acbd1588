//! An NCCL communicator that never blocks without a deadline and never panics: nonblocking
//! `ncclCommInitRankConfig`, every collective polled through `ncclCommGetAsyncError` until it
//! ends, a deadline passes or the caller's liveness check names a dead peer, and then
//! `ncclCommAbort` with a typed error (`docs/dev/process-model.md`, section 2 step 4).

use std::ffi::{CStr, c_int};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cudarc::nccl::sys;

use super::NcclApi;
use crate::error::{CudaError, Result};

/// How long between two polls of an NCCL operation in progress.
const POLL: Duration = Duration::from_millis(1);

/// An NCCL unique id: rank 0 makes it, the store carries it to the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UniqueId(pub [u8; 128]);

impl UniqueId {
    /// A fresh id (rank 0 only; it opens NCCL's bootstrap listener).
    pub fn new(_api: &NcclApi) -> Result<UniqueId> {
        let mut id = sys::ncclUniqueId { internal: [0; 128] };
        // SAFETY: NCCL is loaded (`NcclApi` proves it), and the call writes one id.
        let status = unsafe { sys::ncclGetUniqueId(&mut id) };
        check("ncclGetUniqueId", status)?;
        Ok(UniqueId(id.internal.map(|c| c as u8)))
    }

    /// The id in `bytes` (what [`UniqueId::new`] gave rank 0), or an error for another length.
    pub fn from_bytes(bytes: &[u8]) -> Result<UniqueId> {
        let id: [u8; 128] = bytes.try_into().map_err(|_| CudaError::Bootstrap {
            step: "NCCL unique id",
            reason: format!("{} bytes received, 128 expected", bytes.len()),
        })?;
        Ok(UniqueId(id))
    }

    fn raw(&self) -> sys::ncclUniqueId {
        sys::ncclUniqueId { internal: self.0.map(|b| b as std::ffi::c_char) }
    }
}

/// `Ok` for `ncclSuccess`, else [`CudaError::Nccl`] naming `op` and NCCL's words for `status`.
pub(crate) fn check(op: &'static str, status: sys::ncclResult_t) -> Result<()> {
    if status == sys::ncclResult_t::ncclSuccess {
        return Ok(());
    }
    Err(CudaError::Nccl { op, message: describe(status) })
}

/// `ncclInvalidUsage (invalid usage)`: the code and NCCL's string for it.
pub(crate) fn describe(status: sys::ncclResult_t) -> String {
    // SAFETY: only called after NCCL was loaded (every caller holds an `NcclApi` or a
    // `Comm`); `ncclGetErrorString` returns a static NUL-terminated string or null.
    let text = unsafe { sys::ncclGetErrorString(status) };
    if text.is_null() {
        return format!("{status:?}");
    }
    // SAFETY: non-null, NUL-terminated and static (checked above; NCCL's contract).
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    format!("{status:?} ({text})")
}

/// What a caller's liveness check says while an NCCL operation is pending: `Some(reason)`
/// stops the wait (a peer is gone).
pub type Cancel<'a> = &'a dyn Fn() -> Option<String>;

/// The raw communicator; every call through it is serialised by [`Comm`]'s mutex.
#[derive(Debug)]
struct Raw(sys::ncclComm_t);

// SAFETY: an `ncclComm_t` may be used from any thread as long as calls on it are not
// concurrent (NCCL's thread-safety rule); `Comm` only reaches it through a `Mutex`.
unsafe impl Send for Raw {}

/// One rank's NCCL communicator; dropping it calls `ncclCommAbort` (local: it never waits for
/// peers, unlike `ncclCommDestroy`).
#[derive(Debug)]
pub struct Comm {
    raw: Mutex<Raw>,
    rank: usize,
    world: usize,
}

impl Comm {
    /// Joins the communicator of `id` as `rank` of `world` on the CUDA device current on this
    /// thread (bind the device's context first): nonblocking init polled until it succeeds,
    /// `timeout` passes, or `cancel` names a reason (then aborted, with a typed error).
    pub fn init(
        api: &NcclApi,
        id: &UniqueId,
        rank: usize,
        world: usize,
        timeout: Duration,
        cancel: Cancel<'_>,
    ) -> Result<Comm> {
        let _ = api;
        let (rank_i, world_i) = (to_int(rank)?, to_int(world)?);
        let mut config = default_config();
        config.blocking = 0;
        config.commName = c"flashdmoe".as_ptr();
        let mut raw: sys::ncclComm_t = std::ptr::null_mut();
        // SAFETY: NCCL is loaded (`api`); `raw` and `config` outlive the call (NCCL copies the
        // config, and `commName` is a static string); `id` is passed by value.
        let status = unsafe {
            sys::ncclCommInitRankConfig(&mut raw, world_i, id.raw(), rank_i, &mut config)
        };
        if raw.is_null() {
            check("ncclCommInitRankConfig", status)?;
            return Err(CudaError::Nccl {
                op: "ncclCommInitRankConfig",
                message: "no communicator returned".into(),
            });
        }
        let comm = Comm { raw: Mutex::new(Raw(raw)), rank, world };
        if status != sys::ncclResult_t::ncclInProgress {
            // On error `comm` is dropped: aborted.
            comm.fail("ncclCommInitRankConfig", status)?;
        }
        comm.wait("ncclCommInitRankConfig", Instant::now() + timeout, cancel)?;
        let count = comm.query("ncclCommCount", sys::ncclCommCount)?;
        if count != world_i {
            return Err(CudaError::Bootstrap {
                step: "ncclCommCount",
                reason: format!("the communicator has {count} ranks, {world} expected"),
            });
        }
        Ok(comm)
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Processes in the communicator.
    pub fn world(&self) -> usize {
        self.world
    }

    /// The CUDA device ordinal NCCL bound this communicator to.
    pub fn cu_device(&self) -> Result<usize> {
        let d = self.query("ncclCommCuDevice", sys::ncclCommCuDevice)?;
        Ok(usize::try_from(d).unwrap_or(usize::MAX))
    }

    /// Runs `f` on the raw communicator (the lock held: no other call is concurrent).
    pub(crate) fn with_raw<T>(&self, f: impl FnOnce(sys::ncclComm_t) -> T) -> T {
        let raw = self.raw.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(raw.0)
    }

    fn query(
        &self,
        op: &'static str,
        f: unsafe fn(sys::ncclComm_t, *mut c_int) -> sys::ncclResult_t,
    ) -> Result<c_int> {
        let mut out: c_int = -1;
        // SAFETY: the communicator is initialised and alive (owned by `self`), and `f` is one
        // of NCCL's getters writing one int.
        let status = self.with_raw(|raw| unsafe { f(raw, &mut out) });
        check(op, status)?;
        Ok(out)
    }

    /// `status` (not `ncclSuccess`, not in progress) as an error with NCCL's last message.
    pub(crate) fn fail(&self, op: &'static str, status: sys::ncclResult_t) -> Result<()> {
        if status == sys::ncclResult_t::ncclSuccess {
            return Ok(());
        }
        // SAFETY: the communicator is alive; `ncclGetLastError` returns a NUL-terminated
        // string owned by NCCL (or null), copied at once.
        let last = self.with_raw(|raw| unsafe {
            let p = sys::ncclGetLastError(raw);
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        });
        let mut message = describe(status);
        if !last.is_empty() {
            message.push_str(": ");
            message.push_str(last.trim());
        }
        Err(CudaError::Nccl { op, message })
    }

    /// Polls the communicator's pending operation (`op`) until it ends, `deadline` passes or
    /// `cancel` gives a reason. On a timeout or cancel the caller drops the communicator,
    /// which aborts it (NCCL's documented way out of a stuck collective).
    pub(crate) fn wait(
        &self,
        op: &'static str,
        deadline: Instant,
        cancel: Cancel<'_>,
    ) -> Result<()> {
        let start = Instant::now();
        loop {
            let mut state = sys::ncclResult_t::ncclSuccess;
            // SAFETY: the communicator is alive; the call writes one result code.
            let status =
                self.with_raw(|raw| unsafe { sys::ncclCommGetAsyncError(raw, &mut state) });
            check("ncclCommGetAsyncError", status)?;
            match state {
                sys::ncclResult_t::ncclSuccess => return Ok(()),
                sys::ncclResult_t::ncclInProgress => {}
                other => return self.fail(op, other),
            }
            if let Some(reason) = cancel() {
                return Err(CudaError::Bootstrap { step: op, reason });
            }
            if Instant::now() >= deadline {
                return Err(CudaError::Bootstrap {
                    step: op,
                    reason: format!(
                        "still in progress after {:.1} s (a peer rank never joined, or NCCL is \
                         stuck; set NCCL_DEBUG=INFO to see where)",
                        start.elapsed().as_secs_f64()
                    ),
                });
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Comm {
    fn drop(&mut self) {
        let raw = self.raw.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        if raw.0.is_null() {
            return;
        }
        // SAFETY: the communicator is alive and no other call is in flight (`&mut self`);
        // abort frees it (local: it waits for no peer). Its result is ignored: nothing is
        // left to do about a failed abort in a destructor.
        let _ = unsafe { sys::ncclCommAbort(raw.0) };
        raw.0 = std::ptr::null_mut();
    }
}

fn to_int(n: usize) -> Result<c_int> {
    c_int::try_from(n).map_err(|_| CudaError::Bootstrap {
        step: "ncclCommInitRankConfig",
        reason: format!("{n} does not fit an int"),
    })
}

/// `NCCL_CONFIG_INITIALIZER` of nccl.h 2.28: every field undefined (`INT_MIN` / null), so
/// NCCL applies its defaults.
pub(crate) fn default_config() -> sys::ncclConfig_t {
    const UNDEF: c_int = c_int::MIN;
    sys::ncclConfig_t {
        size: std::mem::size_of::<sys::ncclConfig_t>(),
        magic: 0xcafe_beef,
        // NCCL_VERSION(2, 28, 0): the struct layout this binding has (`nccl-02028`).
        version: 22_800,
        blocking: UNDEF,
        cgaClusterSize: UNDEF,
        minCTAs: UNDEF,
        maxCTAs: UNDEF,
        netName: std::ptr::null(),
        splitShare: UNDEF,
        trafficClass: UNDEF,
        commName: std::ptr::null(),
        collnetEnable: UNDEF,
        CTAPolicy: UNDEF,
        shrinkShare: UNDEF,
        nvlsCTAs: UNDEF,
        nChannelsPerNetPeer: UNDEF,
        nvlinkCentricSched: UNDEF,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_initializer_matches_nccl_h() {
        let c = default_config();
        // 2.28.9's nccl.h: size_t, 2 uints, 13 ints and 2 pointers, 8-byte aligned.
        assert_eq!(c.size, 80);
        assert_eq!((c.magic, c.version), (0xcafe_beef, 22_800));
        assert_eq!(c.blocking, c_int::MIN);
        assert!(c.commName.is_null() && c.netName.is_null());
    }

    #[test]
    fn unique_ids_round_trip_and_wrong_lengths_are_errors() {
        let id = UniqueId([7; 128]);
        assert_eq!(UniqueId::from_bytes(&id.0).unwrap(), id);
        assert_eq!(id.raw().internal[5], 7);
        let err = UniqueId::from_bytes(&[0; 12]).unwrap_err();
        assert!(err.to_string().contains("12 bytes received, 128 expected"), "{err}");
    }

    #[test]
    fn without_a_gpu_init_is_a_typed_error_not_a_panic() {
        let Ok(api) = NcclApi::load() else {
            println!("skipped: NCCL not found (scripts/install-nccl.sh)");
            return;
        };
        if crate::device::cuda_available().is_ok() {
            println!("skipped: a GPU is present (this checks the no-GPU path)");
            return;
        }
        // A world of one needs no peer; with no CUDA device NCCL fails, typed.
        let id = match UniqueId::new(&api) {
            Ok(id) => id,
            Err(e) => {
                assert!(matches!(e, CudaError::Nccl { op: "ncclGetUniqueId", .. }), "{e}");
                return;
            }
        };
        let never = || None;
        let err = Comm::init(&api, &id, 0, 1, Duration::from_secs(5), &never).unwrap_err();
        println!("{err}");
        assert!(
            matches!(err, CudaError::Nccl { .. } | CudaError::Bootstrap { .. }),
            "unexpected error: {err}"
        );
    }
}
