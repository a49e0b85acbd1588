//! NCCL environment variables that would break the symmetric heap, refused up front
//! (`docs/dev/process-model.md`, section 1.1: without `symmetricSupport` NCCL returns a local
//! registration handle instead of a window with peer mappings).

use crate::error::{CudaError, Result};

/// `(variable, the value that is refused, why)`: each would turn `symmetricSupport` off.
pub const REFUSED: [(&str, Refused, &str); 3] = [
    (
        "NCCL_P2P_DISABLE",
        Refused::Truthy,
        "it disables CUDA P2P, so NCCL's windows have no peer mappings",
    ),
    (
        "NCCL_CUMEM_ENABLE",
        Refused::Zero,
        "windows need cuMem (VMM) allocations that NCCL maps into every peer",
    ),
    ("NCCL_WIN_ENABLE", Refused::Zero, "it disables NCCL's symmetric memory windows"),
];

/// Which values of a variable are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Any value NCCL reads as on (a nonzero integer).
    Truthy,
    /// `0` (off).
    Zero,
}

impl Refused {
    fn matches(self, value: &str) -> bool {
        // NCCL parses these with strtoll: a leading integer, whitespace ignored.
        let n = value.trim().parse::<i64>().ok();
        match self {
            Refused::Truthy => n.is_some_and(|n| n != 0),
            Refused::Zero => n == Some(0),
        }
    }
}

/// `Err(CudaError::NcclEnv)` naming the first refused variable of `vars`.
pub fn check_vars<I, K, V>(vars: I) -> Result<()>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    for (k, v) in vars {
        for (var, refused, reason) in REFUSED {
            if k.as_ref() == var && refused.matches(v.as_ref()) {
                return Err(CudaError::NcclEnv { var, value: v.as_ref().to_owned(), reason });
            }
        }
    }
    Ok(())
}

/// [`check_vars`] of this process's environment.
pub fn check_env() -> Result<()> {
    check_vars(
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
    )
}

/// Whether `NCCL_NVLS_ENABLE=0` is set (the launcher and scripts set it; windows then never
/// bind multicast, which the GPU machines do not allow).
pub fn nvls_disabled() -> bool {
    std::env::var("NCCL_NVLS_ENABLE").is_ok_and(|v| v.trim() == "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_that_turn_windows_off_are_refused_by_name() {
        for (var, value) in
            [("NCCL_P2P_DISABLE", "1"), ("NCCL_CUMEM_ENABLE", "0"), ("NCCL_WIN_ENABLE", " 0")]
        {
            let err = check_vars([("PATH", "/bin"), (var, value)]).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, CudaError::NcclEnv { .. }), "{msg}");
            assert!(msg.starts_with(&format!("{var}={value} is set: ")), "{msg}");
            assert!(msg.contains("unset it"), "{msg}");
        }
        // Harmless values pass.
        for (var, value) in [
            ("NCCL_P2P_DISABLE", "0"),
            ("NCCL_CUMEM_ENABLE", "1"),
            ("NCCL_WIN_ENABLE", "1"),
            ("NCCL_NVLS_ENABLE", "0"),
            ("NCCL_P2P_DISABLE", ""),
        ] {
            assert!(check_vars([(var, value)]).is_ok(), "{var}={value}");
        }
    }
}
