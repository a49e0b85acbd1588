//! A `flashdmoe.MoE(..., group=pg)` of several processes, one GPU each: the bootstrap of
//! `flashdmoe-cuda`'s [`ProcessGroup`] through the caller's `torch.distributed` group.
//!
//! The Python half (`python/flashdmoe/moe.py`) drives it: rank 0 of the group calls
//! [`StoreHost::bind`] (our rendezvous store on an ephemeral port, already listening), the
//! address goes to every rank with `broadcast_object_list`, every rank calls [`probe`] and the
//! group all-gathers the answers (so a rank without NCCL, or two ranks on one GPU, fails every
//! rank at once, naming it, instead of leaving the others waiting), then every rank calls
//! [`Group::join`] with (address, rank in the group, world, its GPU). Every step has a
//! deadline (`timeout_s`, the store's and NCCL's).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, ToSocketAddrs};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flashdmoe_core::BackendError;
use flashdmoe_core::rendezvous::Env;
use flashdmoe_cuda::{GroupOptions, ProcessGroup};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

/// `host:port` (`[v6]:port`), for the store's address.
fn address(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// Binds the store's listener for `host` (the address the other ranks will connect to) on an
/// ephemeral port: the loopback address when `host` is one, else every interface (as the
/// store binds `MASTER_ADDR`). Returns the listener and `host:port`.
pub fn bind(host: &str) -> Result<(TcpListener, String), String> {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("an empty host name".into());
    }
    let ip = (host, 0u16)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} resolves to no address"))?
        .ip();
    let ip = match ip {
        ip if ip.is_loopback() => ip,
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let listener = TcpListener::bind((ip, 0)).map_err(|e| format!("bind {ip}:0: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    Ok((listener, address(host, port)))
}

/// The launcher environment of rank `rank` of `world` whose store is at `addr` (`host:port`).
pub fn env(addr: &str, rank: usize, world: usize) -> Result<Env, String> {
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| format!("{addr:?} is not host:port"))?;
    let (rank, world) = (rank.to_string(), world.to_string());
    Env::from_vars([
        ("RANK", rank.as_str()),
        ("WORLD_SIZE", world.as_str()),
        // Unused: the GPU is given to `join_on`; any valid value will do.
        ("LOCAL_RANK", rank.as_str()),
        ("MASTER_ADDR", host),
        ("MASTER_PORT", port),
    ])
    .map_err(|e| e.to_string())
}

/// Rank 0's store listener, bound and waiting for [`Group::join`].
#[pyclass(module = "flashdmoe._native")]
#[derive(Debug)]
pub struct StoreHost {
    listener: Mutex<Option<TcpListener>>,
    /// `host:port`, for the other ranks.
    #[pyo3(get)]
    address: String,
}

#[pymethods]
impl StoreHost {
    /// Binds the store for `host` (what the other ranks connect to: `MASTER_ADDR`, or
    /// `127.0.0.1` on one machine) on an ephemeral port.
    #[staticmethod]
    fn bind(host: &str) -> PyResult<StoreHost> {
        let (listener, address) = bind(host).map_err(|e| {
            PyRuntimeError::new_err(format!("flashdmoe: cannot bind the group's store: {e}"))
        })?;
        Ok(StoreHost { listener: Mutex::new(Some(listener)), address })
    }
}

/// Why this process cannot join a group on GPU `device`, or `None`: NCCL variables that turn
/// the windows off, NCCL not loadable or too old. (Cheap: no GPU work, no communicator.)
#[pyfunction]
pub fn probe() -> Option<String> {
    if let Err(e) = flashdmoe_cuda::nccl::env::check_env() {
        return Some(e.to_string());
    }
    flashdmoe_cuda::nccl::NcclApi::load().err().map(|e| e.to_string())
}

/// This process's membership of a group of processes, one GPU each.
#[pyclass(frozen, module = "flashdmoe._native")]
#[derive(Debug)]
pub struct Group {
    pub(crate) inner: Arc<ProcessGroup>,
}

#[pymethods]
impl Group {
    /// Joins as rank `rank` of `world` on GPU `device`, the store at `address` (hosted by rank
    /// 0 on `host`, which rank 0 must pass). Collective: every rank calls it; it returns once
    /// the NCCL communicator is up, or raises by `timeout_s`.
    #[staticmethod]
    #[pyo3(signature = (address, rank, world, device, host=None, timeout_s=120.0))]
    fn join(
        py: Python<'_>,
        address: &str,
        rank: usize,
        world: usize,
        device: usize,
        host: Option<&StoreHost>,
        timeout_s: f64,
    ) -> PyResult<Group> {
        let env = env(address, rank, world).map_err(PyValueError::new_err)?;
        let listener = match host {
            Some(h) => {
                let l = h.listener.lock().unwrap_or_else(PoisonError::into_inner).take();
                Some(l.ok_or_else(|| {
                    PyRuntimeError::new_err("this StoreHost was already used by a join")
                })?)
            }
            None => None,
        };
        if rank == 0 && world > 1 && listener.is_none() {
            return Err(PyValueError::new_err("rank 0 of a group must pass its StoreHost"));
        }
        if !(timeout_s > 0.0 && timeout_s.is_finite()) {
            return Err(PyValueError::new_err(format!("timeout_s={timeout_s} must be > 0")));
        }
        let options = GroupOptions { timeout: Duration::from_secs_f64(timeout_s) };
        let joined =
            py.detach(|| ProcessGroup::join_on(env, device, listener, &options)).map_err(|e| {
                let text = format!(
                    "flashdmoe: joining the group (rank {rank} of {world}, cuda:{device}) \
                     failed: {e}"
                );
                match e {
                    BackendError::InvalidInput { .. } | BackendError::Config(_) => {
                        PyValueError::new_err(text)
                    }
                    _ => PyRuntimeError::new_err(text),
                }
            })?;
        Ok(Group { inner: Arc::new(joined) })
    }

    /// This process's rank.
    #[getter]
    fn rank(&self) -> usize {
        self.inner.rank()
    }

    /// Processes in the group.
    #[getter]
    fn world(&self) -> usize {
        self.inner.world()
    }

    /// This process's GPU.
    #[getter]
    fn device(&self) -> usize {
        self.inner.device()
    }
}

#[cfg(test)]
mod tests {
    use flashdmoe_core::rendezvous::{Store, StoreOptions};

    use super::*;

    #[test]
    fn rank_0_binds_an_ephemeral_port_and_the_others_join_its_address() {
        let (listener, addr) = bind("127.0.0.1").unwrap();
        assert!(addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"), "{addr}");
        let opts = StoreOptions { timeout: Duration::from_secs(10) };
        let world = 3;
        let leaves: Vec<_> = (1..world)
            .map(|r| {
                let (addr, opts) = (addr.clone(), opts.clone());
                std::thread::spawn(move || {
                    let mut s = Store::connect(&env(&addr, r, world).unwrap(), &opts).unwrap();
                    s.broadcast(&[]).unwrap()
                })
            })
            .collect();
        let mut root = Store::host(listener, &env(&addr, 0, world).unwrap(), &opts).unwrap();
        assert_eq!(root.broadcast(b"hi").unwrap(), b"hi");
        for l in leaves {
            assert_eq!(l.join().unwrap(), b"hi");
        }
    }

    #[test]
    fn addresses_and_environments_are_checked() {
        assert_eq!(address("::1", 5), "[::1]:5");
        let (_l, v6) = bind("[::1]").unwrap_or_else(|_| bind("127.0.0.1").unwrap());
        assert!(v6.contains(':'));
        let e = env("[::1]:29500", 1, 2).unwrap();
        assert_eq!(
            (e.rank, e.world_size, e.master_addr.as_str(), e.master_port),
            (1, 2, "::1", 29500)
        );
        assert!(env("nohost", 0, 2).unwrap_err().contains("host:port"));
        assert!(env("h:1", 2, 2).unwrap_err().contains("RANK"));
        assert!(env("h:0", 0, 2).is_err(), "port 0 is not an address");
        assert!(bind("").is_err());
    }
}
