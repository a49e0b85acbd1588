//! The symmetric heap of one process: `ncclMemAlloc` memory registered as an NCCL window
//! (`NCCL_WIN_DEFAULT`, which maps every peer's buffer into this process over NVLink), the
//! peers' base addresses, and the stamp check that proves them (`docs/dev/process-model.md`,
//! section 2 steps 5-7).
//!
//! ## Invariants
//!
//! * A peer base is never guessed: every one is proven by reading that peer's stamp page
//!   (`{magic, rank, nonce}`) through it; any mismatch is [`CudaError::Bootstrap`].
//! * Teardown never unmaps memory our own kernel may still touch: [`SymmetricHeap`]'s drop
//!   synchronizes the context first, then deregisters the window (local) and frees the memory.
//!   Peers' mappings keep the physical memory alive for them.

use std::ffi::{c_int, c_void};
use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{CudaContext, result as cu};
use cudarc::nccl::sys;

use super::comm::{Cancel, Comm, check};
use super::{NcclApi, NcclVersion};
use crate::error::{CudaError, Result};

/// `NCCL_WIN_DEFAULT`: the LSA (NVLink) mapping without NCCL's own symmetric kernels.
const NCCL_WIN_DEFAULT: c_int = 0;
/// Windows start and end on this many bytes (`NCCL_WIN_REQUIRED_ALIGNMENT`, rounded up to the
/// 2 MiB cuMem granularity).
pub const HEAP_ALIGN: u64 = 2 << 20;
/// Bytes of the stamp page at the end of every heap (the kernel never touches it).
pub const STAMP_BYTES: u64 = 4096;
/// The stamp's magic word: `FDMSTAMP` read little-endian.
pub const STAMP_MAGIC: u64 = u64::from_le_bytes(*b"FDMSTAMP");

/// The first fields of NCCL 2.28's `struct ncclWindow_vidmem` (`nccl_device/impl/core__types.h`,
/// identical in 2.28.9 and 2.30.7): what `ncclWindow_t` points to, in device memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowRecord {
    /// `void* winHost`.
    pub win_host: u64,
    /// `char* lsaFlatBase`: LSA rank 0's mapping of this window.
    pub lsa_flat_base: u64,
    /// `int lsaRank`.
    pub lsa_rank: i32,
    /// `int worldRank`.
    pub world_rank: i32,
    /// `uint32_t stride4G`: the distance between two LSA ranks' mappings, in 4 GiB.
    pub stride4g: u32,
    /// `uint32_t mcOffset4K`.
    pub mc_offset4k: u32,
}

impl WindowRecord {
    /// Bytes read from the device.
    pub const BYTES: usize = 32;

    /// Decodes the record's little-endian bytes.
    pub fn parse(bytes: &[u8; Self::BYTES]) -> WindowRecord {
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
        WindowRecord {
            win_host: u64_at(0),
            lsa_flat_base: u64_at(8),
            lsa_rank: u32_at(16) as i32,
            world_rank: u32_at(20) as i32,
            stride4g: u32_at(24),
            mc_offset4k: u32_at(28),
        }
    }

    /// Checks the record belongs to `rank` and the LSA team is the whole world (one node).
    pub fn check(&self, rank: usize) -> Result<()> {
        let bad = |reason: String| Err(CudaError::Bootstrap { step: "window record", reason });
        if self.world_rank as i64 != rank as i64 {
            return bad(format!("worldRank {} in the record of rank {rank}", self.world_rank));
        }
        if self.lsa_rank != self.world_rank {
            return bad(format!(
                "rank {rank} is LSA rank {}: the ranks span NVLink domains, which needs NCCL's \
                 GIN (not supported)",
                self.lsa_rank
            ));
        }
        if self.stride4g == 0 || self.lsa_flat_base == 0 {
            return bad(format!(
                "no LSA mapping (lsaFlatBase {:#x}, stride4G {}): NCCL did not build a symmetric \
                 window (NCCL_P2P_DISABLE, NCCL_CUMEM_ENABLE=0 or no P2P between the GPUs?)",
                self.lsa_flat_base, self.stride4g
            ));
        }
        Ok(())
    }

    /// LSA peer `p`'s base address of the window: `ncclGetLsaPointer`'s
    /// `add4G(lsaFlatBase, p * stride4G)` (`nccl_device/impl/core__funcs.h`).
    pub fn peer_base(&self, p: usize) -> Option<u64> {
        (p as u64).checked_mul(u64::from(self.stride4g) << 32)?.checked_add(self.lsa_flat_base)
    }
}

/// The stamp of `rank` in a world bootstrapped with `nonce`: 24 bytes.
pub fn stamp(rank: usize, nonce: u64) -> [u8; 24] {
    let mut out = [0u8; 24];
    out[..8].copy_from_slice(&STAMP_MAGIC.to_le_bytes());
    out[8..16].copy_from_slice(&(rank as u64).to_le_bytes());
    out[16..].copy_from_slice(&nonce.to_le_bytes());
    out
}

/// `Ok` when `found` is `stamp(rank, nonce)`, else a bootstrap error saying what was read.
pub fn check_stamp(found: &[u8; 24], rank: usize, nonce: u64, via: u64) -> Result<()> {
    if *found == stamp(rank, nonce) {
        return Ok(());
    }
    let word = |o: usize| u64::from_le_bytes(found[o..o + 8].try_into().expect("8 bytes"));
    Err(CudaError::Bootstrap {
        step: "peer stamp",
        reason: format!(
            "the stamp read through rank {rank}'s heap pointer {via:#x} is {{magic {:#x}, rank \
             {}, nonce {:#x}}}, expected {{magic {STAMP_MAGIC:#x}, rank {rank}, nonce {nonce:#x}}}: \
             the peer pointer is wrong (window layout of this NCCL release?)",
            word(0),
            word(8),
            word(16)
        ),
    })
}

/// `n` rounded up to the heap alignment, with room for the stamp page.
pub fn heap_bytes(kernel_bytes: u64) -> Option<u64> {
    kernel_bytes.checked_add(STAMP_BYTES)?.checked_next_multiple_of(HEAP_ALIGN)
}

/// `ncclGetPeerDevicePointer` (2.29+; absent from 2.28.9's library).
type GetPeerPointer =
    unsafe extern "C" fn(sys::ncclWindow_t, usize, c_int, *mut *mut c_void) -> sys::ncclResult_t;

/// One process's heap: `ncclMemAlloc` memory registered as an NCCL window, with every peer's
/// base address, proven by the stamps.
#[derive(Debug)]
pub struct SymmetricHeap {
    comm: Arc<Comm>,
    ctx: Arc<CudaContext>,
    ptr: u64,
    bytes: u64,
    win: sys::ncclWindow_t,
    peers: Vec<u64>,
    state: State,
}

/// How far the heap got: what its drop may undo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Allocated, not registered: free it.
    Allocated,
    /// Registration started and did not finish (timeout, dead peer, error): NCCL may still be
    /// mapping it, so neither deregister nor free (the process is expected to exit; the
    /// communicator's abort reclaims what it can).
    Registering,
    /// Registered: deregister (local), then free.
    Registered,
}

// SAFETY: the window handle is only passed back to NCCL through `comm`'s lock (deregister, in
// drop) and read as bytes; the memory is device memory owned by this value.
unsafe impl Send for SymmetricHeap {}
// SAFETY: `&self` methods only copy from device memory (thread-safe driver calls).
unsafe impl Sync for SymmetricHeap {}

impl SymmetricHeap {
    /// Allocates `bytes` (a multiple of [`HEAP_ALIGN`], at least one stamp page) on `ctx`'s
    /// device, zeroes it, writes this rank's stamp in the last page, registers the window
    /// (collective: every rank calls it with the same size) and finds and proves every peer's
    /// base. The heap is usable by the kernel once this returns on every rank (the caller's
    /// store barrier).
    pub fn new(
        api: &NcclApi,
        comm: Arc<Comm>,
        ctx: Arc<CudaContext>,
        bytes: u64,
        nonce: u64,
        deadline: Instant,
        cancel: Cancel<'_>,
    ) -> Result<SymmetricHeap> {
        if bytes < STAMP_BYTES || !bytes.is_multiple_of(HEAP_ALIGN) {
            return Err(CudaError::Bootstrap {
                step: "ncclMemAlloc",
                reason: format!("{bytes} bytes is not a multiple of {HEAP_ALIGN}"),
            });
        }
        let cuda = |op: &'static str| {
            move |e: cudarc::driver::DriverError| CudaError::Bootstrap {
                step: op,
                reason: e.to_string(),
            }
        };
        ctx.bind_to_thread().map_err(cuda("cuCtxSetCurrent"))?;
        let mut raw: *mut c_void = std::ptr::null_mut();
        // SAFETY: NCCL is loaded (`api`); it allocates on the runtime's current device, which is
        // `ctx`'s (bound above: the runtime adopts the current driver context).
        check("ncclMemAlloc", unsafe { sys::ncclMemAlloc(&mut raw, bytes as usize) })?;
        let mut heap = SymmetricHeap {
            comm,
            ctx,
            ptr: raw as u64,
            bytes,
            win: std::ptr::null_mut(),
            peers: Vec::new(),
            state: State::Allocated,
        };
        let rank = heap.comm.rank();
        // SAFETY: `ptr` is a live allocation of `bytes` bytes on the current context.
        unsafe { cu::memset_d8_sync(heap.ptr, 0, bytes as usize) }.map_err(cuda("cuMemsetD8"))?;
        let mine = stamp(rank, nonce);
        // SAFETY: the stamp page lies inside the allocation (bytes >= STAMP_BYTES).
        unsafe { cu::memcpy_htod_sync(heap.stamp_ptr(), &mine[..]) }
            .map_err(cuda("cuMemcpyHtoD (stamp)"))?;
        heap.ctx.synchronize().map_err(cuda("cuCtxSynchronize"))?;
        // The window handle's slot lives on the heap, not this stack frame: a nonblocking
        // communicator may fill it when the registration completes in NCCL's thread, so it
        // is read only after `wait`, and leaked if the registration never finishes.
        let slot: *mut sys::ncclWindow_t = Box::into_raw(Box::new(std::ptr::null_mut()));
        // SAFETY: the buffer is an `ncclMemAlloc` allocation of `bytes` bytes (as registration
        // requires), the communicator is alive, and `slot` stays valid until read below (or
        // forever, leaked, if the registration does not finish).
        let status = heap.comm.with_raw(|c| unsafe {
            sys::ncclCommWindowRegister(c, raw, bytes as usize, slot, NCCL_WIN_DEFAULT)
        });
        heap.state = State::Registering;
        if status != sys::ncclResult_t::ncclInProgress {
            heap.comm.fail("ncclCommWindowRegister", status)?;
        }
        heap.comm.wait("ncclCommWindowRegister", deadline, cancel)?;
        // SAFETY: the registration completed (`wait`), so NCCL no longer writes the slot; it
        // came from `Box::into_raw` above and is freed exactly once, here.
        heap.win = unsafe { std::ptr::read_volatile(slot) };
        // SAFETY: as above: the slot's only owner, freed once.
        drop(unsafe { Box::from_raw(slot) });
        heap.state = State::Registered;
        if heap.win.is_null() {
            return Err(CudaError::Bootstrap {
                step: "ncclCommWindowRegister",
                reason: "no window returned".into(),
            });
        }
        heap.peers = heap.find_peers(api)?;
        for (p, &base) in heap.peers.iter().enumerate() {
            let mut found = [0u8; 24];
            // SAFETY: `base` is peer p's mapping of a window of `bytes` bytes (read from NCCL's
            // record and checked), so its stamp page is mapped and readable from this context.
            unsafe { cu::memcpy_dtoh_sync(&mut found[..], base + bytes - STAMP_BYTES) }
                .map_err(cuda("cuMemcpyDtoH (peer stamp)"))?;
            check_stamp(&found, p, nonce, base)?;
        }
        Ok(heap)
    }

    /// Every rank's base of this window (rank order): `ncclGetPeerDevicePointer` where the
    /// library has it (2.29+), else the window record's LSA formula.
    fn find_peers(&self, api: &NcclApi) -> Result<Vec<u64>> {
        let world = self.comm.world();
        if api.version() >= (NcclVersion { major: 2, minor: 29, patch: 0 }) {
            // SAFETY: NCCL is loaded (`api`), so `culib` does not panic; the symbol's type is
            // `nccl_device/core.h`'s declaration.
            let f = unsafe { sys::culib().get::<GetPeerPointer>(b"ncclGetPeerDevicePointer\0") };
            if let Ok(f) = f {
                let mut out = Vec::with_capacity(world);
                for p in 0..world {
                    let mut ptr: *mut c_void = std::ptr::null_mut();
                    // SAFETY: the window is registered and alive; the call writes one pointer.
                    let status = unsafe { f(self.win, 0, p as c_int, &mut ptr) };
                    check("ncclGetPeerDevicePointer", status)?;
                    if ptr.is_null() {
                        return Err(CudaError::Bootstrap {
                            step: "ncclGetPeerDevicePointer",
                            reason: format!("rank {p} is outside this rank's NVLink (LSA) team"),
                        });
                    }
                    out.push(ptr as u64);
                }
                return Ok(out);
            }
        }
        let record = self.record()?;
        record.check(self.comm.rank())?;
        (0..world)
            .map(|p| {
                record.peer_base(p).ok_or_else(|| CudaError::Bootstrap {
                    step: "window record",
                    reason: format!("rank {p}'s base overflows 64 bits"),
                })
            })
            .collect()
    }

    /// The window's device record, copied to the host.
    pub fn record(&self) -> Result<WindowRecord> {
        let mut bytes = [0u8; WindowRecord::BYTES];
        let fail = |e: String| CudaError::Bootstrap { step: "window record", reason: e };
        self.ctx.bind_to_thread().map_err(|e| fail(e.to_string()))?;
        // SAFETY: a registered `ncclWindow_t` points to a `ncclWindow_vidmem` whose first 32
        // bytes are the fields of `WindowRecord` (NCCL 2.28-2.30); `cuMemcpy` infers from the
        // unified address space whether it lies in device or host memory, so a release that
        // keeps the record on the host is read correctly too. `bytes` outlives the call.
        unsafe {
            cudarc::driver::sys::cuMemcpy(
                bytes.as_mut_ptr() as u64,
                self.win as u64,
                WindowRecord::BYTES,
            )
        }
        .result()
        .map_err(|e| fail(e.to_string()))?;
        Ok(WindowRecord::parse(&bytes))
    }

    /// This process's own heap (its device address).
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// Bytes of the heap (stamp page included).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Every rank's base address of its heap, in this process's address space.
    pub fn peers(&self) -> &[u64] {
        &self.peers
    }

    fn stamp_ptr(&self) -> u64 {
        self.ptr + self.bytes - STAMP_BYTES
    }

    /// `len` bytes of this process's heap at `offset` (synchronous).
    pub fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        if offset.checked_add(len).is_none_or(|end| end > self.bytes) {
            return Err(CudaError::Bootstrap {
                step: "heap read",
                reason: format!("{len} bytes at {offset} past the heap's {}", self.bytes),
            });
        }
        let mut out = vec![0u8; len as usize];
        self.ctx
            .bind_to_thread()
            .map_err(|e| CudaError::Bootstrap { step: "heap read", reason: e.to_string() })?;
        // SAFETY: the range lies inside this live allocation (checked above).
        unsafe { cu::memcpy_dtoh_sync(&mut out[..], self.ptr + offset) }
            .map_err(|e| CudaError::Bootstrap { step: "heap read", reason: e.to_string() })?;
        Ok(out)
    }
}

impl Drop for SymmetricHeap {
    fn drop(&mut self) {
        // Never unmap what our own kernel may still use: wait for the context first. Errors
        // are ignored: a destructor has nothing left to do about them.
        let _ = self.ctx.bind_to_thread();
        let _ = self.ctx.synchronize();
        match self.state {
            State::Registering => return,
            State::Registered if !self.win.is_null() => {
                let win = self.win;
                // SAFETY: the window is registered on this communicator; deregistration is
                // local (it waits for no peer).
                let status =
                    self.comm.with_raw(|c| unsafe { sys::ncclCommWindowDeregister(c, win) });
                if status == sys::ncclResult_t::ncclInProgress {
                    // A nonblocking communicator may finish it in the background: wait (bounded)
                    // before the memory goes.
                    let never = || None;
                    let deadline = Instant::now() + std::time::Duration::from_secs(10);
                    if self.comm.wait("ncclCommWindowDeregister", deadline, &never).is_err() {
                        return;
                    }
                }
            }
            _ => {}
        }
        // SAFETY: `ptr` came from `ncclMemAlloc`, is no longer registered, and nothing of ours
        // uses it any more (the context is idle).
        let _ = unsafe { sys::ncclMemFree(self.ptr as *mut c_void) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_records_parse_and_give_the_lsa_formula() {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&0x7000_0000u64.to_le_bytes());
        b[8..16].copy_from_slice(&0x7f00_0000_0000u64.to_le_bytes());
        b[16..20].copy_from_slice(&1i32.to_le_bytes());
        b[20..24].copy_from_slice(&1i32.to_le_bytes());
        b[24..28].copy_from_slice(&36u32.to_le_bytes()); // 144 GiB H200 rounded to 4 GiB
        let r = WindowRecord::parse(&b);
        assert_eq!(r.lsa_rank, 1);
        assert_eq!(r.stride4g, 36);
        assert!(r.check(1).is_ok());
        assert_eq!(r.peer_base(0), Some(0x7f00_0000_0000));
        assert_eq!(r.peer_base(1), Some(0x7f00_0000_0000 + (36u64 << 32)));
        // Another rank's record, a split LSA team, no mapping: typed errors.
        assert!(
            r.check(0).unwrap_err().to_string().contains("worldRank 1 in the record of rank 0")
        );
        let split = WindowRecord { lsa_rank: 0, ..r };
        assert!(split.check(1).unwrap_err().to_string().contains("GIN"));
        let none = WindowRecord { stride4g: 0, ..r };
        assert!(none.check(1).unwrap_err().to_string().contains("NCCL_P2P_DISABLE"));
    }

    #[test]
    fn stamps_prove_the_rank_and_nonce() {
        let s = stamp(3, 0xfeed);
        assert!(check_stamp(&s, 3, 0xfeed, 0x1000).is_ok());
        let err = check_stamp(&s, 2, 0xfeed, 0x1000).unwrap_err().to_string();
        assert!(err.contains("rank 2's heap pointer 0x1000") && err.contains("rank 3"), "{err}");
        assert!(check_stamp(&[0; 24], 0, 1, 0).is_err());
    }

    #[test]
    fn heaps_leave_room_for_the_stamp_and_align() {
        assert_eq!(heap_bytes(1), Some(HEAP_ALIGN));
        assert_eq!(heap_bytes(HEAP_ALIGN - STAMP_BYTES), Some(HEAP_ALIGN));
        assert_eq!(heap_bytes(HEAP_ALIGN), Some(2 * HEAP_ALIGN));
        assert_eq!(heap_bytes(u64::MAX), None);
    }
}
