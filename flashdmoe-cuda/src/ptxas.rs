//! The ptxas resource report (`--ptxas-options=-v`) parsed out of the NVRTC log.
//!
//! ptxas prints, per function, its stack frame and spill traffic, and per entry function its
//! registers, barriers and static shared memory, e.g. (NVRTC 13.0):
//!
//! ```text
//! ptxas info    : Compiling entry function 'k' for 'sm_90'
//! ptxas info    : Function properties for k
//! ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
//! ptxas info    : Used 40 registers, used 1 barriers, 4096 bytes smem
//! ```
//!
//! ## Invariants
//!
//! * Spill traffic is never lost: a spill line that cannot be attributed to a named function is
//!   recorded under [`UNATTRIBUTED`], so [`CompileReport::spilling`] sees every spill in the log.
//! * Parsing never fails: unknown lines and fields are ignored (the full log is kept).

use std::fmt::Write as _;

use crate::arch::Arch;

/// Name under which spill lines without a preceding function header are recorded.
pub const UNATTRIBUTED: &str = "<unattributed>";

/// ptxas' resource usage of one function.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunctionReport {
    /// The (possibly mangled) function name.
    pub name: String,
    /// Whether it is a kernel entry point (`__global__`).
    pub entry: bool,
    /// Registers per thread (entry functions only).
    pub registers: Option<u32>,
    /// Named barriers used (entry functions only).
    pub barriers: Option<u32>,
    /// Static shared memory in bytes (entry functions only; 0 when none).
    pub smem_bytes: u32,
    /// Stack frame in bytes.
    pub stack_frame_bytes: u32,
    /// Bytes stored to local memory by register spills.
    pub spill_store_bytes: u32,
    /// Bytes loaded from local memory by register spills.
    pub spill_load_bytes: u32,
}

impl FunctionReport {
    /// Whether ptxas spilled registers in this function.
    pub fn spills(&self) -> bool {
        self.spill_store_bytes > 0 || self.spill_load_bytes > 0
    }
}

/// The result of one compilation: what ptxas reported, plus the whole log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileReport {
    /// The architecture compiled for.
    pub arch: Arch,
    /// Every function ptxas reported on, in log order.
    pub functions: Vec<FunctionReport>,
    /// The complete NVRTC log (ptxas report and any compiler warnings).
    pub log: String,
}

impl CompileReport {
    /// Parses the ptxas report out of an NVRTC log.
    pub fn parse(arch: Arch, log: &str) -> CompileReport {
        let mut functions: Vec<FunctionReport> = Vec::new();
        let mut current: Option<usize> = None;
        for line in log.lines() {
            if let Some(name) = quoted_after(line, "Compiling entry function '") {
                let index = find_or_insert(&mut functions, name);
                functions[index].entry = true;
                current = Some(index);
            } else if let Some(rest) = after(line, "Function properties for ") {
                current = Some(find_or_insert(&mut functions, rest.trim()));
            } else if line.contains("bytes spill stores") || line.contains("bytes stack frame") {
                let index = match quoted_after(line, "in function '") {
                    Some(name) => find_or_insert(&mut functions, name),
                    None => match current {
                        Some(index) => index,
                        None => find_or_insert(&mut functions, UNATTRIBUTED),
                    },
                };
                let f = &mut functions[index];
                for part in line.split(',') {
                    max_into(&mut f.stack_frame_bytes, number_before(part, "bytes stack frame"));
                    max_into(&mut f.spill_store_bytes, number_before(part, "bytes spill stores"));
                    max_into(&mut f.spill_load_bytes, number_before(part, "bytes spill loads"));
                }
            } else if line.contains("Used ") && line.contains(" registers") {
                let Some(index) = current else { continue };
                let f = &mut functions[index];
                for part in line.split(',') {
                    if let Some(n) = number_before(part, "registers") {
                        f.registers = Some(n);
                    }
                    if let Some(n) = number_before(part, "barriers") {
                        f.barriers = Some(n);
                    }
                    max_into(&mut f.smem_bytes, number_before(part, "bytes smem"));
                }
            }
        }
        CompileReport { arch, functions, log: log.to_owned() }
    }

    /// The report of the entry function `name`, if ptxas compiled one.
    pub fn entry(&self, name: &str) -> Option<&FunctionReport> {
        self.functions.iter().find(|f| f.entry && f.name == name)
    }

    /// ptxas's note that it serialised the image's wgmmas, if it made one: "Potential
    /// Performance Loss: wgmma.mma_async instructions are serialized due to ..." (C7510-C7520:
    /// a call, register pressure, or a run-time branch among the wgmmas, C7520). Each wgmma
    /// then waits for the one before it to finish (a `WARPGROUP.DEPBAR` after every HGMMA): the
    /// tile engine's two-slab images ran at ~40% of the tensor pipe that way (perf-notes v39).
    pub fn wgmma_serialized(&self) -> Option<&str> {
        self.log.lines().find(|l| l.contains("wgmma.mma_async instructions are serialized"))
    }

    /// Every function that spills registers.
    pub fn spilling(&self) -> impl Iterator<Item = &FunctionReport> {
        self.functions.iter().filter(|f| f.spills())
    }

    /// `name: N bytes stores, M bytes loads; ...` over the spilling functions (empty if none).
    pub fn spill_summary(&self) -> String {
        let mut out = String::new();
        for f in self.spilling() {
            if !out.is_empty() {
                out.push_str("; ");
            }
            let _ = write!(
                out,
                "{}: {} bytes stores, {} bytes loads",
                f.name, f.spill_store_bytes, f.spill_load_bytes
            );
        }
        out
    }
}

fn find_or_insert(functions: &mut Vec<FunctionReport>, name: &str) -> usize {
    match functions.iter().position(|f| f.name == name) {
        Some(index) => index,
        None => {
            functions.push(FunctionReport { name: name.to_owned(), ..FunctionReport::default() });
            functions.len() - 1
        }
    }
}

fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|at| &line[at + marker.len()..])
}

fn quoted_after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let rest = after(line, marker)?;
    rest.find('\'').map(|end| &rest[..end])
}

/// The decimal number directly before `keyword` in `part` ("... 832 bytes stack frame").
fn number_before(part: &str, keyword: &str) -> Option<u32> {
    let head = part[..part.find(keyword)?].trim_end();
    let digits = head.len() - head.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    head[head.len() - digits..].parse().ok()
}

fn max_into(slot: &mut u32, value: Option<u32>) {
    if let Some(value) = value {
        *slot = (*slot).max(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Verbatim NVRTC 13.0 output for two entry points (one spilling) and one device function.
    const LOG_13_0: &str = "\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'k2' for 'sm_90'
ptxas info    : Function properties for k2
ptxas         .     832 bytes stack frame, 20 bytes spill stores, 20 bytes spill loads
ptxas info    : Used 32 registers, used 0 barriers, 832 bytes cumulative stack size
ptxas info    : Compile time = 102.467 ms
ptxas info    : Compiling entry function 'k1' for 'sm_90'
ptxas info    : Function properties for k1
ptxas         .     256 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 256 bytes cumulative stack size, 4096 bytes smem
ptxas info    : Compile time = 7.021 ms
ptxas info    : Function properties for _Z6helperPfi
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
";

    #[test]
    fn parses_nvrtc_13_report() {
        let report = CompileReport::parse(Arch::SM90, LOG_13_0);
        assert_eq!(report.functions.len(), 3);
        let k2 = report.entry("k2").unwrap();
        assert_eq!(
            *k2,
            FunctionReport {
                name: "k2".into(),
                entry: true,
                registers: Some(32),
                barriers: Some(0),
                smem_bytes: 0,
                stack_frame_bytes: 832,
                spill_store_bytes: 20,
                spill_load_bytes: 20,
            }
        );
        let k1 = report.entry("k1").unwrap();
        assert_eq!((k1.registers, k1.barriers, k1.smem_bytes), (Some(40), Some(1), 4096));
        assert_eq!(k1.stack_frame_bytes, 256);
        assert!(!k1.spills());
        let helper = &report.functions[2];
        assert_eq!((helper.name.as_str(), helper.entry), ("_Z6helperPfi", false));
        assert_eq!(report.entry("_Z6helperPfi"), None);
        let spilling: Vec<&str> = report.spilling().map(|f| f.name.as_str()).collect();
        assert_eq!(spilling, ["k2"]);
        assert_eq!(report.spill_summary(), "k2: 20 bytes stores, 20 bytes loads");
        assert_eq!(report.log, LOG_13_0);
    }

    #[test]
    fn parses_older_used_line_with_cmem() {
        let log = "ptxas info    : Compiling entry function 'k' for 'sm_80'\n\
                   ptxas info    : Function properties for k\n    \
                   0 bytes stack frame, 0 bytes spill stores, 4 bytes spill loads\n\
                   ptxas info    : Used 255 registers, 49152 bytes smem, 380 bytes cmem[0]\n";
        let report = CompileReport::parse(Arch::SM80, log);
        let k = report.entry("k").unwrap();
        assert_eq!((k.registers, k.barriers, k.smem_bytes), (Some(255), None, 49152));
        assert!(k.spills(), "a load-only spill is a spill");
    }

    #[test]
    fn spill_lines_are_never_dropped() {
        let orphan =
            "ptxas         .     8 bytes stack frame, 8 bytes spill stores, 8 bytes spill loads\n";
        let report = CompileReport::parse(Arch::SM90, orphan);
        assert_eq!(report.spilling().next().unwrap().name, UNATTRIBUTED);

        let warning = "ptxas warning : Registers are spilled to local memory in function 'big', \
                       12 bytes spill stores, 12 bytes spill loads\n";
        let report = CompileReport::parse(Arch::SM90, warning);
        assert_eq!(report.spill_summary(), "big: 12 bytes stores, 12 bytes loads");
    }

    #[test]
    fn serialised_wgmma_is_found_in_the_log() {
        let log = "ptxas info    : (C7520) Potential Performance Loss: wgmma.mma_async instructions are \
                   serialized due to program dependence on compiler-inserted WG.AR in divergent path \
                   in the function 'k'\nptxas info    : Used 168 registers";
        let report = CompileReport::parse(Arch::SM90A, log);
        assert!(report.wgmma_serialized().is_some_and(|l| l.contains("C7520")));
        assert_eq!(
            CompileReport::parse(Arch::SM90A, "ptxas info    : Used 168 registers")
                .wgmma_serialized(),
            None
        );
    }

    #[test]
    fn clean_and_empty_logs_have_no_spills() {
        assert_eq!(CompileReport::parse(Arch::SM90, "").functions, vec![]);
        let report = CompileReport::parse(Arch::SM90, &LOG_13_0.replace("20 bytes", "0 bytes"));
        assert_eq!(report.spilling().count(), 0);
        assert_eq!(report.spill_summary(), "");
    }

    #[test]
    fn number_before_takes_the_adjacent_number() {
        assert_eq!(number_before("ptxas .  832 bytes stack frame", "bytes stack frame"), Some(832));
        assert_eq!(number_before(" used 3 barriers", "barriers"), Some(3));
        assert_eq!(number_before("bytes smem", "bytes smem"), None);
        assert_eq!(number_before("x bytes smem", "registers"), None);
    }
}
