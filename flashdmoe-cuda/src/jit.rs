//! NVRTC just-in-time compilation of the crate's kernels, with an in-memory and an on-disk
//! cache.
//!
//! [`Jit::compile`] turns a [`KernelSource`] plus [`Defines`] into a [`Cubin`] for one
//! [`Arch`]:
//!
//! 1. the request is validated (source and entry names, define names and values);
//! 2. the options are fixed: `-arch=sm_XX[a] -std=c++17 -default-device -lineinfo
//!    --ptxas-options=-v`, `--no-cache` (NVRTC 12.9+ otherwise answers a repeated compile
//!    from the driver's compute cache without running ptxas, so without the report), the CUDA
//!    include directories of `FLASHDMOE_CUDA_HOME` (`include/` and `include/cccl`) and the
//!    `-D` defines;
//! 3. the cache key is the SHA-256 of the NVRTC version, source, project headers and options;
//!    the in-memory map, then the disk directory are consulted;
//! 4. on a miss NVRTC compiles with the project headers passed as named headers, the cubin is
//!    fetched with `nvrtcGetCUBIN`, and the ptxas report is parsed ([`CompileReport`]);
//! 5. the result is accepted only if the entry point exists and **no function spills**; it is
//!    then stored in both caches.
//!
//! ## Invariants
//!
//! * A [`Cubin`] always carries an intact image, a report naming its entry point, and zero
//!   spills, whether it was compiled now or read from a cache (a cache hit re-parses and
//!   re-checks the stored log, and corrupt entries are recompiled: see the private `cache` module).
//! * Equal keys mean interchangeable images: everything that influences NVRTC's output is
//!   part of the key.
//! * No NVRTC call happens unless the library was found (a [`Jit`] holds the proof).

use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use cudarc::nvrtc::sys::nvrtcResult;

use crate::arch::Arch;
use crate::cache::{CacheKey, DiskCache, Entry};
use crate::device::{CudaVersion, nvrtc_api};
use crate::error::{CudaError, Result};
use crate::ffi::{NvrtcApi, NvrtcStatus, Program};
use crate::kernels::{Defines, HEADERS, KernelSource, KernelVariant};
use crate::ptxas::CompileReport;

/// Where compiled kernels are kept between processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheMode {
    /// Entries live in this directory (created if needed).
    Disk(PathBuf),
    /// Only the in-process cache.
    MemoryOnly,
}

/// How to build a [`Jit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JitConfig {
    /// A directory with `include/` (CUDA headers) and optionally `include/cccl`.
    pub cuda_home: PathBuf,
    /// The disk cache.
    pub cache: CacheMode,
    /// Defines added to every compile (they win over a kernel's own): a kernel experiment
    /// behind a `#ifdef` run against the default in one binary and one call,
    /// `FLASHDMOE_EXTRA_DEFINES=FDM_FRESH_TID gpu-check ...` (docs/dev/gpu-queue.md). Part
    /// of every cache key, like all options.
    pub extra_defines: Defines,
}

impl JitConfig {
    /// From the environment: `FLASHDMOE_CUDA_HOME` (default `/usr/local/cuda`), the disk
    /// cache at [`default_cache_dir`] (memory only if no directory can be derived), and
    /// `FLASHDMOE_EXTRA_DEFINES` ([`Defines::parse_list`]; unset or empty: none).
    pub fn from_env() -> JitConfig {
        let var = |name: &str| std::env::var_os(name);
        JitConfig {
            cuda_home: non_empty(var("FLASHDMOE_CUDA_HOME"))
                .map_or_else(|| PathBuf::from("/usr/local/cuda"), PathBuf::from),
            cache: cache_dir_from(var).map_or(CacheMode::MemoryOnly, CacheMode::Disk),
            extra_defines: extra_defines_from(var),
        }
    }
}

/// The default disk cache directory: `$FLASHDMOE_CACHE_DIR/jit`, else
/// `$XDG_CACHE_HOME/flashdmoe/jit`, else `$HOME/.cache/flashdmoe/jit` (empty variables count
/// as unset); `None` if none is set.
pub fn default_cache_dir() -> Option<PathBuf> {
    cache_dir_from(|name| std::env::var_os(name))
}

fn cache_dir_from(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let root = if let Some(dir) = non_empty(var("FLASHDMOE_CACHE_DIR")) {
        PathBuf::from(dir)
    } else if let Some(dir) = non_empty(var("XDG_CACHE_HOME")) {
        PathBuf::from(dir).join("flashdmoe")
    } else {
        PathBuf::from(non_empty(var("HOME"))?).join(".cache").join("flashdmoe")
    };
    Some(root.join("jit"))
}

/// `FLASHDMOE_EXTRA_DEFINES` parsed ([`Defines::parse_list`]), lossily if not UTF-8 (a mangled
/// name is then refused by [`Defines::validate`], named, at the first compile).
fn extra_defines_from(var: impl Fn(&str) -> Option<OsString>) -> Defines {
    var("FLASHDMOE_EXTRA_DEFINES")
        .map_or_else(Defines::new, |list| Defines::parse_list(&list.to_string_lossy()))
}

fn non_empty(value: Option<OsString>) -> Option<OsString> {
    value.filter(|v| !v.is_empty())
}

/// A compiled kernel image for one architecture, with its ptxas report. Always has its entry
/// point and no spills.
#[derive(PartialEq, Eq)]
pub struct Cubin {
    kernel: String,
    entry: String,
    nvrtc: CudaVersion,
    image: Vec<u8>,
    report: CompileReport,
}

impl Cubin {
    /// Accepts a compiled image only if the report names the entry and shows no spills.
    fn accept(
        source: &KernelSource,
        nvrtc: CudaVersion,
        arch: Arch,
        entry: Entry,
    ) -> Result<Cubin> {
        let report = CompileReport::parse(arch, &entry.log);
        if report.entry(source.entry).is_none() {
            return Err(CudaError::EntryMissing {
                kernel: source.file.to_owned(),
                entry: source.entry.to_owned(),
            });
        }
        if report.spilling().next().is_some() {
            return Err(CudaError::Spills {
                kernel: source.file.to_owned(),
                arch,
                summary: report.spill_summary(),
                log: entry.log,
            });
        }
        Ok(Cubin {
            kernel: source.file.to_owned(),
            entry: source.entry.to_owned(),
            nvrtc,
            image: entry.image,
            report,
        })
    }

    /// The source file it was compiled from.
    pub fn kernel(&self) -> &str {
        &self.kernel
    }

    /// The entry point's name.
    pub fn entry(&self) -> &str {
        &self.entry
    }

    /// The architecture it was compiled for.
    pub fn arch(&self) -> Arch {
        self.report.arch
    }

    /// The NVRTC that compiled it.
    pub fn nvrtc(&self) -> CudaVersion {
        self.nvrtc
    }

    /// The ELF image.
    pub fn image(&self) -> &[u8] {
        &self.image
    }

    /// The ptxas report.
    pub fn report(&self) -> &CompileReport {
        &self.report
    }
}

impl fmt::Debug for Cubin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cubin")
            .field("kernel", &self.kernel)
            .field("entry", &self.entry)
            .field("nvrtc", &self.nvrtc)
            .field("image_bytes", &self.image.len())
            .field("report", &self.report)
            .finish()
    }
}

/// Where a [`Compiled`] result came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// This process compiled it before.
    Memory,
    /// Read from the disk cache.
    Disk,
    /// NVRTC compiled it just now.
    Compiled,
}

/// The result of [`Jit::compile`].
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The image (shared with the in-memory cache).
    pub cubin: Arc<Cubin>,
    /// Which cache level answered, if any.
    pub origin: Origin,
    /// Whether [`Jit::compile_variant`] compiled the variant's fallback defines (its own
    /// spilled): correct, perhaps slower; a report should say so.
    pub fallback: bool,
}

/// The JIT compiler: NVRTC plus the CUDA include directories plus the caches.
///
/// Shareable between threads; concurrent compilations of one key may both run NVRTC (the
/// results are interchangeable), no lock is held while compiling.
#[derive(Debug)]
pub struct Jit {
    api: NvrtcApi,
    nvrtc: CudaVersion,
    include_dirs: Vec<PathBuf>,
    disk: Option<DiskCache>,
    memory: Mutex<HashMap<CacheKey, Arc<Cubin>>>,
    extra_defines: Defines,
}

impl Jit {
    /// A JIT configured from the environment ([`JitConfig::from_env`]).
    pub fn from_env() -> Result<Jit> {
        Jit::new(JitConfig::from_env())
    }

    /// A JIT for `config`: [`CudaError::NvrtcMissing`] without NVRTC,
    /// [`CudaError::CudaHeadersMissing`] without `cuda_home/include`, [`CudaError::Cache`] if
    /// the disk cache directory cannot be created.
    pub fn new(config: JitConfig) -> Result<Jit> {
        let (api, nvrtc) = nvrtc_api()?;
        let include = config.cuda_home.join("include");
        if !include.is_dir() {
            return Err(CudaError::CudaHeadersMissing { path: include });
        }
        let cccl = include.join("cccl");
        let include_dirs = if cccl.is_dir() { vec![include, cccl] } else { vec![include] };
        let disk = match config.cache {
            CacheMode::Disk(dir) => Some(DiskCache::open(dir)?),
            CacheMode::MemoryOnly => None,
        };
        Ok(Jit {
            api,
            nvrtc,
            include_dirs,
            disk,
            memory: Mutex::default(),
            extra_defines: config.extra_defines,
        })
    }

    /// The loaded NVRTC's version.
    pub fn nvrtc_version(&self) -> CudaVersion {
        self.nvrtc
    }

    /// The disk cache directory, if any.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.disk.as_ref().map(DiskCache::dir)
    }

    /// The CUDA include directories passed to NVRTC.
    pub fn include_dirs(&self) -> &[PathBuf] {
        &self.include_dirs
    }

    /// [`Jit::compile`] of a listed variant.
    ///
    /// When the variant's defines make ptxas spill and it names a fallback, the fallback is
    /// compiled instead (and must not spill). With a disk cache the spill itself is cached,
    /// so only the first process ever pays the failed compile.
    pub fn compile_variant(&self, variant: &KernelVariant, arch: Arch) -> Result<Compiled> {
        match (self.compile(&variant.source, arch, &variant.defines), &variant.fallback) {
            (Err(CudaError::Spills { .. }), Some(fallback)) => self
                .compile(&variant.source, arch, fallback)
                .map(|compiled| Compiled { fallback: true, ..compiled }),
            (result, _) => result,
        }
    }

    /// Compiles `source` with `defines` for `arch`, or returns the cached result.
    ///
    /// Errors: [`CudaError::InvalidSource`] / [`CudaError::InvalidDefine`] for a malformed
    /// request, [`CudaError::Compile`] with the log for compiler errors,
    /// [`CudaError::EntryMissing`], [`CudaError::Spills`] for any register spill,
    /// [`CudaError::Nvrtc`] for NVRTC failures, [`CudaError::Cache`] if the entry cannot be
    /// written to the disk cache.
    pub fn compile(
        &self,
        source: &KernelSource,
        arch: Arch,
        defines: &Defines,
    ) -> Result<Compiled> {
        let _range = nvtx::LocalRange::new(c"flashdmoe::jit::compile");
        source.validate()?;
        let defines = &defines.clone().with(&self.extra_defines);
        defines.validate()?;
        let options = options(self.nvrtc, arch, &self.include_dirs, defines);
        let key = self.key(source, &options);

        let memory = |cubin: &Arc<Cubin>| {
            let mut map = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(map.entry(key).or_insert_with(|| Arc::clone(cubin)))
        };
        if let Some(cubin) = self.memory.lock().unwrap_or_else(PoisonError::into_inner).get(&key) {
            return Ok(Compiled {
                cubin: Arc::clone(cubin),
                origin: Origin::Memory,
                fallback: false,
            });
        }
        if let Some(disk) = &self.disk {
            let cached = {
                let _range = nvtx::LocalRange::new(c"flashdmoe::jit::disk_cache");
                disk.load(&key)
            };
            // A stored spill is the answer for these inputs (compiling again would spill
            // again: the fallback chain skips straight on); an entry that fails any other
            // acceptance check is treated like a corrupt one.
            match cached.map(|e| Cubin::accept(source, self.nvrtc, arch, e)) {
                Some(Ok(cubin)) => {
                    return Ok(Compiled {
                        cubin: memory(&Arc::new(cubin)),
                        origin: Origin::Disk,
                        fallback: false,
                    });
                }
                Some(Err(e @ CudaError::Spills { .. })) => return Err(e),
                Some(Err(_)) | None => {}
            }
        }
        let entry = self.run_nvrtc(source, arch, &options)?;
        // Stored before the acceptance checks, so a spilling image is remembered too.
        if let Some(disk) = &self.disk {
            disk.store(&key, &entry)?;
        }
        let cubin = Cubin::accept(source, self.nvrtc, arch, entry)?;
        Ok(Compiled { cubin: memory(&Arc::new(cubin)), origin: Origin::Compiled, fallback: false })
    }

    fn key(&self, source: &KernelSource, options: &[String]) -> CacheKey {
        let version = [self.nvrtc.major.to_le_bytes(), self.nvrtc.minor.to_le_bytes()].concat();
        let count = |n: usize| (n as u64).to_le_bytes();
        let (header_count, option_count) = (count(HEADERS.len()), count(options.len()));
        let parts = [version.as_slice(), source.file.as_bytes(), source.text.as_bytes()]
            .into_iter()
            .chain([header_count.as_slice()])
            .chain(HEADERS.iter().flat_map(|h| [h.name.as_bytes(), h.text.as_bytes()]))
            .chain([option_count.as_slice()])
            .chain(options.iter().map(|o| o.as_bytes()));
        CacheKey::of(parts)
    }

    /// Runs NVRTC on a thread of its own with [`NVRTC_STACK_BYTES`] of stack (the caller may be
    /// any thread: a test's worker, an async runtime's, Python's).
    fn run_nvrtc(&self, source: &KernelSource, arch: Arch, options: &[String]) -> Result<Entry> {
        let _range = nvtx::LocalRange::new(c"flashdmoe::jit::nvrtc");
        std::thread::scope(|scope| {
            let worker = std::thread::Builder::new()
                .name("flashdmoe-nvrtc".into())
                .stack_size(NVRTC_STACK_BYTES)
                .spawn_scoped(scope, || self.run_nvrtc_here(source, arch, options))
                .map_err(|e| CudaError::Nvrtc {
                    op: "spawning the compile thread",
                    message: e.to_string(),
                })?;
            worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn run_nvrtc_here(
        &self,
        source: &KernelSource,
        arch: Arch,
        options: &[String],
    ) -> Result<Entry> {
        let nvrtc_error = |op, status: NvrtcStatus, detail: &str| CudaError::Nvrtc {
            op,
            message: format!("{}{detail}", status.describe(self.api)),
        };
        let c = |s: &str| {
            CString::new(s).map_err(|_| CudaError::InvalidSource {
                kernel: source.file.to_owned(),
                reason: "a source, header or option contains a NUL byte",
            })
        };
        let headers =
            HEADERS.iter().map(|h| Ok((c(h.name)?, c(h.text)?))).collect::<Result<Vec<_>>>()?;
        let c_options = options.iter().map(|o| c(o)).collect::<Result<Vec<_>>>()?;
        let program = Program::create(self.api, c(source.text)?, c(source.file)?, headers)
            .map_err(|status| nvrtc_error("nvrtcCreateProgram", status, ""))?;
        let compiled = program.compile(&c_options);
        let log = program.log().map_err(|status| nvrtc_error("nvrtcGetProgramLog", status, ""))?;
        match compiled {
            Ok(()) => {}
            Err(NvrtcStatus(nvrtcResult::NVRTC_ERROR_COMPILATION)) => {
                return Err(CudaError::Compile { kernel: source.file.to_owned(), arch, log });
            }
            Err(status) => {
                let hint = if status.0 == nvrtcResult::NVRTC_ERROR_BUILTIN_OPERATION_FAILURE {
                    " (libnvrtc-builtins.so must be on LD_LIBRARY_PATH next to libnvrtc)"
                } else {
                    ""
                };
                return Err(nvrtc_error("nvrtcCompileProgram", status, &format!("{hint}\n{log}")));
            }
        }
        let image = program.cubin().map_err(|status| nvrtc_error("nvrtcGetCUBIN", status, ""))?;
        Ok(Entry { log, image })
    }
}

/// The stack of the thread NVRTC compiles on. Its front end recurses deeply on the kernel's
/// templates: the fused combine's kernel crashed the process (SIGSEGV, a stack overflow) when
/// compiled on a 2 MiB thread, Rust's default for spawned threads, and compiled on a 256 MiB
/// one (docs/dev/fused-combine.md). Only the pages it touches are committed.
const NVRTC_STACK_BYTES: usize = 256 << 20;

/// The first NVRTC with its own compilation cache (on when a driver is present), which must be
/// turned off: a cache hit skips ptxas and so the resource report.
const NVRTC_CACHING: CudaVersion = CudaVersion { major: 12, minor: 9 };

/// The complete NVRTC option list of one compilation.
fn options(
    nvrtc: CudaVersion,
    arch: Arch,
    include_dirs: &[PathBuf],
    defines: &Defines,
) -> Vec<String> {
    let fixed = [
        format!("-arch={arch}"),
        "-std=c++17".to_owned(),
        "-default-device".to_owned(),
        "-lineinfo".to_owned(),
        "--ptxas-options=-v".to_owned(),
    ];
    let no_cache = (nvrtc >= NVRTC_CACHING).then(|| "--no-cache".to_owned());
    let includes = include_dirs.iter().map(|dir| format!("-I{}", dir.display()));
    fixed.into_iter().chain(no_cache).chain(includes).chain(defines.options()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_defines_come_from_their_variable() {
        let env = |list: &'static str| {
            move |name: &str| (name == "FLASHDMOE_EXTRA_DEFINES").then(|| OsString::from(list))
        };
        assert_eq!(
            extra_defines_from(env("FDM_LEADER_FENCE,FDM_STAGES=2")),
            Defines::new().flag("FDM_LEADER_FENCE").set("FDM_STAGES", 2)
        );
        assert!(extra_defines_from(env("")).is_empty());
        assert!(extra_defines_from(|_: &str| None).is_empty());
    }

    #[test]
    fn options_fix_the_report_and_disable_nvrtcs_own_cache() {
        let includes = [PathBuf::from("/cuda/include"), PathBuf::from("/cuda/include/cccl")];
        let defines = Defines::new().set("FDM_BM", 64).flag("FDM_GATED");
        let v13 = CudaVersion { major: 13, minor: 0 };
        assert_eq!(
            options(v13, Arch::SM90A, &includes, &defines),
            [
                "-arch=sm_90a",
                "-std=c++17",
                "-default-device",
                "-lineinfo",
                "--ptxas-options=-v",
                "--no-cache",
                "-I/cuda/include",
                "-I/cuda/include/cccl",
                "-DFDM_BM=64",
                "-DFDM_GATED",
            ]
        );
        // NVRTC before 12.9 has no cache and would reject the option.
        let v12_8 = CudaVersion { major: 12, minor: 8 };
        assert!(!options(v12_8, Arch::SM80, &includes, &defines).contains(&"--no-cache".into()));
        assert!(
            options(CudaVersion { major: 12, minor: 9 }, Arch::SM80, &[], &Defines::new())
                .contains(&"--no-cache".into())
        );
    }

    #[test]
    fn cache_dir_precedence() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| OsString::from(*v))
            }
        };
        let all = env(&[("FLASHDMOE_CACHE_DIR", "/f"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(cache_dir_from(all), Some(PathBuf::from("/f/jit")));
        let xdg = env(&[("FLASHDMOE_CACHE_DIR", ""), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(cache_dir_from(xdg), Some(PathBuf::from("/x/flashdmoe/jit")));
        let home = env(&[("HOME", "/h")]);
        assert_eq!(cache_dir_from(home), Some(PathBuf::from("/h/.cache/flashdmoe/jit")));
        assert_eq!(cache_dir_from(env(&[])), None);
    }
}
