//! The standard launcher environment (torchrun's variables), parsed and checked.
//!
//! Invariant: an [`Env`] has `rank < world_size <= MAX_PROCESSES`, `local_rank < world_size`
//! (and `< local_world_size <= world_size` when that is given), a non-empty master address and
//! a non-zero port. Every error names the variable it is about.

use std::fmt;

use thiserror::Error;

use super::MAX_PROCESSES;

/// Global rank of this process (`0..WORLD_SIZE`).
pub const RANK: &str = "RANK";
/// Number of processes.
pub const WORLD_SIZE: &str = "WORLD_SIZE";
/// Rank of this process on its node: the CUDA device it drives.
pub const LOCAL_RANK: &str = "LOCAL_RANK";
/// Number of processes on this node (optional).
pub const LOCAL_WORLD_SIZE: &str = "LOCAL_WORLD_SIZE";
/// Host of rank 0, where the rendezvous store listens.
pub const MASTER_ADDR: &str = "MASTER_ADDR";
/// Port of the rendezvous store.
pub const MASTER_PORT: &str = "MASTER_PORT";
/// Overrides [`MASTER_PORT`]: under a default torchrun the elastic agent's own store already
/// listens on `MASTER_PORT`, so rank 0 cannot bind it (`docs/dev/process-model.md` 1.4).
pub const FLASHDMOE_MASTER_PORT: &str = "FLASHDMOE_MASTER_PORT";
/// Set to `True` by torchrun when the workers share the agent's store on `MASTER_PORT`.
pub const TORCHELASTIC_USE_AGENT_STORE: &str = "TORCHELASTIC_USE_AGENT_STORE";

/// Every variable [`Env::from_env`] reads.
pub const VARS: [&str; 8] = [
    RANK,
    WORLD_SIZE,
    LOCAL_RANK,
    LOCAL_WORLD_SIZE,
    MASTER_ADDR,
    MASTER_PORT,
    FLASHDMOE_MASTER_PORT,
    TORCHELASTIC_USE_AGENT_STORE,
];

/// Why the launcher environment cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EnvError {
    /// A required variable is not set.
    #[error(
        "{var} is not set: start one process per GPU with torchrun, or set RANK, WORLD_SIZE, \
         LOCAL_RANK, MASTER_ADDR and MASTER_PORT"
    )]
    Missing {
        /// The variable.
        var: &'static str,
    },
    /// A variable's value does not parse.
    #[error("{var}={value:?} is not {expected}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// Its value (lossy UTF-8).
        value: String,
        /// What it should be, in words.
        expected: &'static str,
    },
    /// A variable parses but contradicts another or a limit.
    #[error("{var}={value} {problem}")]
    Inconsistent {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// The contradiction, in words.
        problem: String,
    },
}

/// One process's place in the world, from the launcher's environment. Built only by
/// [`Env::from_vars`] / [`Env::from_env`] (so it holds the module's invariant); fields are
/// read-only outside this crate.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Env {
    /// Global rank of this process.
    pub rank: usize,
    /// Number of processes.
    pub world_size: usize,
    /// Rank on this node (the CUDA device).
    pub local_rank: usize,
    /// Processes on this node, when the launcher says.
    pub local_world_size: Option<usize>,
    /// Host of rank 0 (name or IP literal, without brackets).
    pub master_addr: String,
    /// Port of the rendezvous store.
    pub master_port: u16,
    /// The variable the port came from ([`MASTER_PORT`] or [`FLASHDMOE_MASTER_PORT`]).
    pub port_var: &'static str,
    /// torchrun's agent store holds `MASTER_PORT` ([`TORCHELASTIC_USE_AGENT_STORE`] is `True`).
    pub agent_store: bool,
}

impl Env {
    /// Reads [`VARS`] from the process environment.
    pub fn from_env() -> Result<Env, EnvError> {
        let mut vars = Vec::new();
        for var in VARS {
            if let Some(value) = std::env::var_os(var) {
                let value = value.into_string().map_err(|raw| EnvError::Invalid {
                    var,
                    value: raw.to_string_lossy().into_owned(),
                    expected: "UTF-8",
                })?;
                vars.push((var, value));
            }
        }
        Env::from_vars(vars)
    }

    /// Reads the variables from `vars` (name, value) pairs; other names are ignored, and a
    /// name given twice keeps its last value, as in a process environment.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Env, EnvError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut values: [Option<String>; VARS.len()] = Default::default();
        for (name, value) in vars {
            if let Some(i) = VARS.iter().position(|v| *v == name.as_ref()) {
                values[i] = Some(value.as_ref().trim().to_string());
            }
        }
        let get = |var: &'static str| {
            let i = VARS.iter().position(|v| *v == var).expect("a known variable");
            values[i].as_deref()
        };
        let required = |var| get(var).ok_or(EnvError::Missing { var });
        let world_size = count(WORLD_SIZE, required(WORLD_SIZE)?)?;
        if world_size == 0 || world_size > MAX_PROCESSES {
            return Err(inconsistent(
                WORLD_SIZE,
                world_size,
                format!("is outside 1..={MAX_PROCESSES} (the processes a world supports)"),
            ));
        }
        let rank = count(RANK, required(RANK)?)?;
        if rank >= world_size {
            return Err(inconsistent(RANK, rank, format!("is not below WORLD_SIZE={world_size}")));
        }
        let local_rank = count(LOCAL_RANK, required(LOCAL_RANK)?)?;
        if local_rank >= world_size {
            let problem = format!("is not below WORLD_SIZE={world_size}");
            return Err(inconsistent(LOCAL_RANK, local_rank, problem));
        }
        let local_world_size =
            get(LOCAL_WORLD_SIZE).map(|v| count(LOCAL_WORLD_SIZE, v)).transpose()?;
        if let Some(local_world) = local_world_size {
            if local_world == 0 || local_world > world_size {
                let problem = format!("is outside 1..=WORLD_SIZE={world_size}");
                return Err(inconsistent(LOCAL_WORLD_SIZE, local_world, problem));
            }
            if local_rank >= local_world {
                let problem = format!("is not below LOCAL_WORLD_SIZE={local_world}");
                return Err(inconsistent(LOCAL_RANK, local_rank, problem));
            }
        }
        let master_addr = required(MASTER_ADDR)?.trim_start_matches('[').trim_end_matches(']');
        if master_addr.is_empty() {
            let expected = "a host name or IP address";
            return Err(EnvError::Invalid { var: MASTER_ADDR, value: String::new(), expected });
        }
        let port_var =
            if get(FLASHDMOE_MASTER_PORT).is_some() { FLASHDMOE_MASTER_PORT } else { MASTER_PORT };
        let master_port = port(port_var, required(port_var)?)?;
        Ok(Env {
            rank,
            world_size,
            local_rank,
            local_world_size,
            master_addr: master_addr.to_string(),
            master_port,
            port_var,
            agent_store: get(TORCHELASTIC_USE_AGENT_STORE)
                .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1"),
        })
    }

    /// `MASTER_ADDR:port`, for messages.
    pub fn master(&self) -> String {
        if self.master_addr.contains(':') {
            format!("[{}]:{}", self.master_addr, self.master_port)
        } else {
            format!("{}:{}", self.master_addr, self.master_port)
        }
    }
}

impl fmt::Display for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rank {} of {} (local rank {}), store at {} ({})",
            self.rank,
            self.world_size,
            self.local_rank,
            self.master(),
            self.port_var
        )
    }
}

fn count(var: &'static str, value: &str) -> Result<usize, EnvError> {
    value.parse().map_err(|_| EnvError::Invalid {
        var,
        value: value.to_string(),
        expected: "a non-negative integer",
    })
}

fn port(var: &'static str, value: &str) -> Result<u16, EnvError> {
    let port: u16 = value.parse().map_err(|_| EnvError::Invalid {
        var,
        value: value.to_string(),
        expected: "a TCP port (1..=65535)",
    })?;
    if port == 0 {
        let problem = "is not a rendezvous port: every rank must know the same non-zero port";
        return Err(inconsistent(var, 0, problem.to_string()));
    }
    Ok(port)
}

fn inconsistent(var: &'static str, value: usize, problem: String) -> EnvError {
    EnvError::Inconsistent { var, value: value.to_string(), problem }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TORCHRUN: [(&str, &str); 6] = [
        ("RANK", "3"),
        ("WORLD_SIZE", "4"),
        ("LOCAL_RANK", "1"),
        ("LOCAL_WORLD_SIZE", "2"),
        ("MASTER_ADDR", "node0"),
        ("MASTER_PORT", "29500"),
    ];

    /// Variables to set (`Some`) or remove (`None`).
    type Changes<'a> = &'a [(&'a str, Option<&'a str>)];

    /// The torchrun variables with `changes` applied.
    fn with(changes: Changes) -> Result<Env, EnvError> {
        let mut vars: Vec<(&str, &str)> = TORCHRUN.to_vec();
        for (name, value) in changes {
            vars.retain(|(n, _)| n != name);
            if let Some(value) = value {
                vars.push((name, value));
            }
        }
        Env::from_vars(vars)
    }

    #[test]
    fn torchrun_variables_parse() {
        let env = with(&[("PATH", Some("/bin")), ("TORCHELASTIC_USE_AGENT_STORE", Some("True"))])
            .unwrap();
        assert_eq!(
            env,
            Env {
                rank: 3,
                world_size: 4,
                local_rank: 1,
                local_world_size: Some(2),
                master_addr: "node0".into(),
                master_port: 29500,
                port_var: MASTER_PORT,
                agent_store: true,
            }
        );
        assert_eq!(
            env.to_string(),
            "rank 3 of 4 (local rank 1), store at node0:29500 (MASTER_PORT)"
        );
        let v6 = with(&[("MASTER_ADDR", Some("[::1]")), ("LOCAL_WORLD_SIZE", None)]).unwrap();
        assert_eq!((v6.master_addr.as_str(), v6.master().as_str()), ("::1", "[::1]:29500"));
        assert_eq!(v6.local_world_size, None);
        assert!(!v6.agent_store);
    }

    #[test]
    fn flashdmoe_master_port_overrides_and_master_port_is_then_not_read() {
        let env =
            with(&[("FLASHDMOE_MASTER_PORT", Some("29600")), ("MASTER_PORT", Some("x"))]).unwrap();
        assert_eq!((env.master_port, env.port_var), (29600, FLASHDMOE_MASTER_PORT));
        let env = with(&[("FLASHDMOE_MASTER_PORT", Some("29600")), ("MASTER_PORT", None)]).unwrap();
        assert_eq!(env.master_port, 29600);
    }

    #[test]
    fn missing_variables_are_named() {
        for var in [RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT] {
            let err = with(&[(var, None)]).unwrap_err();
            assert_eq!(err, EnvError::Missing { var });
            assert!(err.to_string().starts_with(&format!("{var} is not set")), "{err}");
        }
    }

    #[test]
    fn unparsable_values_are_named() {
        let cases = [
            (RANK, "-1"),
            (WORLD_SIZE, "four"),
            (LOCAL_RANK, "1.0"),
            (LOCAL_WORLD_SIZE, ""),
            (MASTER_PORT, "70000"),
            (FLASHDMOE_MASTER_PORT, "http"),
            (MASTER_ADDR, " [] "),
        ];
        for (var, value) in cases {
            match with(&[(var, Some(value))]) {
                Err(EnvError::Invalid { var: named, .. }) => assert_eq!(named, var, "{value}"),
                other => panic!("{var}={value:?}: {other:?}"),
            }
        }
        let err = with(&[(WORLD_SIZE, Some("four"))]).unwrap_err();
        assert_eq!(err.to_string(), "WORLD_SIZE=\"four\" is not a non-negative integer");
    }

    #[test]
    fn inconsistent_values_are_named() {
        let cases: [(Changes, &str, &str); 7] = [
            (&[(RANK, Some("4"))], RANK, "RANK=4 is not below WORLD_SIZE=4"),
            (&[(WORLD_SIZE, Some("0"))], WORLD_SIZE, "outside 1..=64"),
            (&[(WORLD_SIZE, Some("65")), (RANK, Some("0"))], WORLD_SIZE, "outside 1..=64"),
            (&[(LOCAL_RANK, Some("2"))], LOCAL_RANK, "not below LOCAL_WORLD_SIZE=2"),
            (&[(LOCAL_RANK, Some("4")), (LOCAL_WORLD_SIZE, None)], LOCAL_RANK, "WORLD_SIZE=4"),
            (&[(LOCAL_WORLD_SIZE, Some("5"))], LOCAL_WORLD_SIZE, "outside 1..=WORLD_SIZE=4"),
            (&[(MASTER_PORT, Some("0"))], MASTER_PORT, "MASTER_PORT=0 is not a rendezvous port"),
        ];
        for (changes, var, text) in cases {
            match with(changes) {
                Err(err @ EnvError::Inconsistent { var: named, .. }) => {
                    assert_eq!(named, var, "{err}");
                    assert!(err.to_string().contains(text), "{err} lacks {text:?}");
                }
                other => panic!("{changes:?}: {other:?}"),
            }
        }
    }
}
