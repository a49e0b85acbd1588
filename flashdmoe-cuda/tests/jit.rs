//! The JIT against the real NVRTC (no GPU needed): error reporting and both cache levels.
//! Each test passes with a `skipped:` line when NVRTC is absent.

use std::fs;
use std::path::Path;

use flashdmoe_cuda::jit::CacheMode;
use flashdmoe_cuda::{
    Arch, CudaError, Defines, Jit, JitConfig, KernelSource, Origin, nvrtc_version,
};

const TINY: KernelSource =
    KernelSource { file: "tiny.cu", text: include_str!("kernels/tiny.cu"), entry: "fdm_tiny" };
const SPILLS: KernelSource = KernelSource {
    file: "spills.cu",
    text: include_str!("kernels/spills.cu"),
    entry: "fdm_test_spills",
};
const BROKEN: KernelSource = KernelSource {
    file: "broken.cu",
    text: include_str!("kernels/broken.cu"),
    entry: "fdm_test_broken",
};

fn nvrtc_present() -> bool {
    match nvrtc_version() {
        Ok(_) => true,
        Err(CudaError::NvrtcMissing) => {
            println!("skipped: NVRTC not found (see scripts/install-nvrtc.sh)");
            false
        }
        Err(e) => panic!("{e}"),
    }
}

fn jit(cache: CacheMode) -> Jit {
    Jit::new(JitConfig { cache, ..JitConfig::from_env() }).unwrap_or_else(|e| panic!("{e}"))
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

#[test]
fn compile_errors_carry_the_nvrtc_log() {
    if !nvrtc_present() {
        return;
    }
    match jit(CacheMode::MemoryOnly).compile(&BROKEN, Arch::SM90, &Defines::new()) {
        Err(CudaError::Compile { kernel, arch, log }) => {
            assert_eq!((kernel.as_str(), arch), ("broken.cu", Arch::SM90));
            assert!(log.contains("fdm_undeclared_identifier"), "log: {log}");
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
}

#[test]
fn any_spill_is_an_error() {
    if !nvrtc_present() {
        return;
    }
    for arch in Arch::SUPPORTED {
        match jit(CacheMode::MemoryOnly).compile(&SPILLS, arch, &Defines::new()) {
            Err(CudaError::Spills { kernel, summary, log, .. }) => {
                assert_eq!(kernel, "spills.cu");
                assert!(summary.starts_with("fdm_test_spills: "), "summary: {summary}");
                assert!(log.contains("bytes spill stores"), "log: {log}");
            }
            other => panic!("{arch}: expected a spill error, got {other:?}"),
        }
    }
}

#[test]
fn a_spill_is_cached_on_disk_too() {
    if !nvrtc_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = || jit(CacheMode::Disk(dir.path().to_owned()));
    let first = disk().compile(&SPILLS, Arch::SM90, &Defines::new());
    assert!(matches!(first, Err(CudaError::Spills { .. })), "{first:?}");
    let [name] = entries(dir.path()).try_into().expect("the spilling image is stored");
    let inode =
        || std::os::unix::fs::MetadataExt::ino(&fs::metadata(dir.path().join(&name)).unwrap());
    let before = inode();
    // A fresh process (a new Jit) gets the same error from the entry: NVRTC would have
    // rewritten it (a new file renamed over the old one).
    let again = disk().compile(&SPILLS, Arch::SM90, &Defines::new());
    assert_eq!(inode(), before, "the entry was not rewritten");
    match (first, again) {
        (Err(CudaError::Spills { log: a, .. }), Err(CudaError::Spills { log: b, .. })) => {
            assert_eq!(a, b)
        }
        other => panic!("expected the same spill twice, got {other:?}"),
    }
}

#[test]
fn a_missing_entry_point_is_an_error() {
    if !nvrtc_present() {
        return;
    }
    let misnamed = KernelSource { entry: "fdm_not_there", ..TINY };
    match jit(CacheMode::MemoryOnly).compile(&misnamed, Arch::SM90, &Defines::new()) {
        Err(CudaError::EntryMissing { entry, .. }) => assert_eq!(entry, "fdm_not_there"),
        other => panic!("expected EntryMissing, got {other:?}"),
    }
}

#[test]
fn malformed_requests_are_typed_errors() {
    if !nvrtc_present() {
        return;
    }
    let jit = jit(CacheMode::MemoryOnly);
    let nul = KernelSource { text: "\0", ..TINY };
    assert!(matches!(
        jit.compile(&nul, Arch::SM90, &Defines::new()),
        Err(CudaError::InvalidSource { .. })
    ));
    assert!(matches!(
        jit.compile(&TINY, Arch::SM90, &Defines::new().set("9LIVES", 1)),
        Err(CudaError::InvalidDefine { .. })
    ));
    let nowhere = JitConfig {
        cuda_home: "/nonexistent/cuda".into(),
        cache: CacheMode::MemoryOnly,
        extra_defines: Defines::new(),
    };
    assert!(matches!(Jit::new(nowhere), Err(CudaError::CudaHeadersMissing { .. })));
}

#[test]
fn report_describes_the_entry_point() {
    if !nvrtc_present() {
        return;
    }
    let compiled = jit(CacheMode::MemoryOnly).compile(&TINY, Arch::SM80, &Defines::new()).unwrap();
    let cubin = &compiled.cubin;
    assert_eq!((cubin.entry(), cubin.kernel(), cubin.arch()), ("fdm_tiny", "tiny.cu", Arch::SM80));
    assert!(cubin.image().starts_with(b"\x7fELF"));
    let entry = cubin.report().entry("fdm_tiny").unwrap();
    assert!(entry.registers.is_some_and(|r| r > 0 && r <= 255), "{entry:?}");
    assert_eq!((entry.spill_store_bytes, entry.spill_load_bytes), (0, 0));
}

#[test]
fn the_architecture_specific_variant_compiles() {
    if !nvrtc_present() {
        return;
    }
    let compiled = jit(CacheMode::MemoryOnly).compile(&TINY, Arch::SM90A, &Defines::new()).unwrap();
    assert_eq!(compiled.cubin.arch(), Arch::SM90A);
    assert!(
        compiled.cubin.report().log.contains("for 'sm_90a'"),
        "{}",
        compiled.cubin.report().log
    );
}

#[test]
fn memory_and_disk_caches_answer_repeated_compiles() {
    if !nvrtc_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = || CacheMode::Disk(dir.path().to_owned());
    let defines = Defines::new().set("FDM_TINY_SCALE", 3);

    let first = jit(disk());
    let fresh = first.compile(&TINY, Arch::SM90, &defines).unwrap();
    assert_eq!(fresh.origin, Origin::Compiled);
    let again = first.compile(&TINY, Arch::SM90, &defines).unwrap();
    assert_eq!(again.origin, Origin::Memory);
    assert!(std::sync::Arc::ptr_eq(&fresh.cubin, &again.cubin));
    let files = entries(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");

    // A new process (here: a new Jit) finds the entry on disk.
    let from_disk = jit(disk()).compile(&TINY, Arch::SM90, &defines).unwrap();
    assert_eq!(from_disk.origin, Origin::Disk);
    assert_eq!(*from_disk.cubin, *fresh.cubin, "the same image and log");

    // Anything that changes the output changes the key.
    let second = jit(disk());
    for (arch, d) in [(Arch::SM80, defines.clone()), (Arch::SM90, Defines::new())] {
        assert_eq!(second.compile(&TINY, arch, &d).unwrap().origin, Origin::Compiled);
    }
    assert_eq!(entries(dir.path()).len(), 3);
}

#[test]
fn corrupt_disk_entries_are_recompiled_and_repaired() {
    if !nvrtc_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = || CacheMode::Disk(dir.path().to_owned());
    let good = jit(disk()).compile(&TINY, Arch::SM90, &Defines::new()).unwrap();
    let [name] = entries(dir.path()).try_into().unwrap();
    let path = dir.path().join(name);
    let bytes = fs::read(&path).unwrap();

    for corrupt in [bytes[..bytes.len() / 2].to_vec(), {
        let mut flipped = bytes.clone();
        flipped[bytes.len() / 2] ^= 1;
        flipped
    }] {
        fs::write(&path, corrupt).unwrap();
        let recompiled = jit(disk()).compile(&TINY, Arch::SM90, &Defines::new()).unwrap();
        assert_eq!(recompiled.origin, Origin::Compiled);
        assert_eq!(recompiled.cubin.image(), good.cubin.image());
        let reread = jit(disk()).compile(&TINY, Arch::SM90, &Defines::new()).unwrap();
        assert_eq!(reread.origin, Origin::Disk, "the entry was rewritten");
    }
}

/// `JitConfig::extra_defines` (FLASHDMOE_EXTRA_DEFINES) reach every compile, win over a
/// kernel's own defines, and are part of the key; a bad name is refused, named.
#[test]
fn extra_defines_join_every_compile() {
    if !nvrtc_present() {
        return;
    }
    let with_extra = |extra: Defines| {
        Jit::new(JitConfig {
            cache: CacheMode::MemoryOnly,
            extra_defines: extra,
            ..JitConfig::from_env()
        })
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let plain = with_extra(Defines::new());
    let scaled = with_extra(Defines::parse_list("FDM_TINY_SCALE=3"));
    let image = |jit: &Jit, defines: &Defines| {
        jit.compile(&TINY, Arch::SM90, defines)
            .unwrap_or_else(|e| panic!("{e}"))
            .cubin
            .image()
            .to_vec()
    };
    let three = image(&plain, &Defines::new().set("FDM_TINY_SCALE", 3));
    assert_eq!(image(&scaled, &Defines::new()), three);
    assert_eq!(
        image(&scaled, &Defines::new().set("FDM_TINY_SCALE", 5)),
        three,
        "the extra define wins"
    );
    assert_ne!(image(&plain, &Defines::new()), three);
    match with_extra(Defines::parse_list("9LIVES")).compile(&TINY, Arch::SM90, &Defines::new()) {
        Err(CudaError::InvalidDefine { name, .. }) => assert_eq!(name, "9LIVES"),
        other => panic!("accepted: {other:?}"),
    }
}
