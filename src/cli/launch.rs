//! `flashdmoe launch --nproc N <run|bench args...>`: one process per GPU on this machine.
//! Spawns `N` children of this binary with the environment torchrun would give them (`RANK`,
//! `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`) plus
//! `NCCL_NVLS_ENABLE=0`, prefixes their output with their rank, and waits. When one fails the
//! others get `--grace` seconds to report (a survivor's "peer rank N is gone" is the point of
//! the dying-rank test) and are then killed; the exit status names the first failing rank.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus as ProcessStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;

use super::CliError;

/// Arguments of `flashdmoe launch`.
#[derive(Debug, Args)]
pub(super) struct LaunchArgs {
    /// Processes to start, one GPU each (process r uses GPU r: LOCAL_RANK).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    nproc: u32,
    /// Port of rank 0's rendezvous store on 127.0.0.1 (default: a free one).
    #[arg(long, value_name = "PORT")]
    master_port: Option<u16>,
    /// Seconds the other processes get to finish after one failed, before they are killed.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    grace: f64,
    /// Test only: process rank R SIGKILLs itself right after launching its F-th forward
    /// (sets FLASHDMOE_TEST_DIE in the children; the CUDA backend honours it).
    #[arg(long, value_name = "rank=R,forward=F")]
    die: Option<String>,
    /// Give each process only its own GPU (CUDA_VISIBLE_DEVICES=LOCAL_RANK, and
    /// FLASHDMOE_DEVICE=0): for a CUDA runtime (inside NCCL) that does not follow the
    /// driver context made current.
    #[arg(long)]
    visible_devices: bool,
    /// What every process runs: `run ...` or `bench ...` with their usual flags.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "COMMAND"
    )]
    command: Vec<String>,
}

/// The environment of child `rank` of `nproc` (the variables torchrun sets, and NCCL's
/// multicast off).
pub(super) fn child_env(
    rank: u32,
    nproc: u32,
    port: u16,
    die: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("RANK", rank.to_string()),
        ("WORLD_SIZE", nproc.to_string()),
        ("LOCAL_RANK", rank.to_string()),
        ("LOCAL_WORLD_SIZE", nproc.to_string()),
        ("MASTER_ADDR", "127.0.0.1".to_string()),
        ("MASTER_PORT", port.to_string()),
        ("NCCL_NVLS_ENABLE", "0".to_string()),
    ];
    if let Some(die) = die {
        env.push(("FLASHDMOE_TEST_DIE", die.to_string()));
    }
    env
}

/// Checks the command is one a process rank can run.
pub(super) fn check_command(command: &[String]) -> Result<(), CliError> {
    match command.first().map(String::as_str) {
        Some("run" | "bench") => Ok(()),
        Some(other) => Err(CliError::Usage(format!(
            "flashdmoe launch runs `run ...` or `bench ...` in every process, not {other:?}"
        ))),
        None => Err(CliError::Usage("flashdmoe launch needs a command (run or bench)".into())),
    }
}

fn free_port() -> Result<u16, CliError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| CliError::Failed(format!("cannot find a free port: {e}")))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| CliError::Failed(e.to_string()))
}

/// Copies `from` line by line to stdout (or stderr) with `[rank r] ` in front.
fn relay(rank: u32, from: impl Read + Send + 'static, to_stderr: bool) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut lines = BufReader::new(from);
        let mut line = Vec::new();
        loop {
            line.clear();
            match lines.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end_matches(['\n', '\r']);
                    let out = format!("[rank {rank}] {text}\n");
                    // A closed stdout (a pipe to `head`) ends the relay, nothing else.
                    let ok = if to_stderr {
                        std::io::stderr().lock().write_all(out.as_bytes()).is_ok()
                    } else {
                        std::io::stdout().lock().write_all(out.as_bytes()).is_ok()
                    };
                    if !ok {
                        break;
                    }
                }
            }
        }
    })
}

/// How a child ended, in words.
pub(super) fn describe(status: ProcessStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            let name = match signal {
                9 => " (SIGKILL)",
                6 => " (SIGABRT)",
                11 => " (SIGSEGV)",
                15 => " (SIGTERM)",
                _ => "",
            };
            return format!("killed by signal {signal}{name}");
        }
    }
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => "ended without a status".into(),
    }
}

/// Runs the command; `Err` carries the exit status.
pub(super) fn launch(args: &LaunchArgs) -> Result<(), CliError> {
    check_command(&args.command)?;
    if !(args.grace.is_finite() && args.grace >= 0.0) {
        return Err(CliError::Usage(format!("--grace {} must be >= 0 seconds", args.grace)));
    }
    if let Some(die) = &args.die {
        flashdmoe::cuda::layer::parse_die(die)
            .map_err(|e| CliError::Usage(format!("--die {e}")))?;
    }
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Failed(format!("cannot find this program's path: {e}")))?;
    let port = match args.master_port {
        Some(p) => p,
        None => free_port()?,
    };
    println!(
        "launch: {} processes of `{}`, MASTER_ADDR=127.0.0.1 MASTER_PORT={port}",
        args.nproc,
        args.command.join(" ")
    );
    let mut children: Vec<(u32, Child)> = Vec::new();
    let mut relays = Vec::new();
    for rank in 0..args.nproc {
        let mut cmd = Command::new(&exe);
        cmd.args(&args.command)
            .env_remove("FLASHDMOE_MASTER_PORT")
            .envs(child_env(rank, args.nproc, port, args.die.as_deref()))
            .envs(if args.visible_devices {
                vec![("CUDA_VISIBLE_DEVICES", rank.to_string()), ("FLASHDMOE_DEVICE", "0".into())]
            } else {
                Vec::new()
            })
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                kill_all(&mut children);
                return Err(CliError::Failed(format!("cannot start rank {rank}: {e}")));
            }
        };
        if let Some(out) = child.stdout.take() {
            relays.push(relay(rank, out, false));
        }
        if let Some(err) = child.stderr.take() {
            relays.push(relay(rank, err, true));
        }
        children.push((rank, child));
    }
    let result = supervise(&mut children, Duration::from_secs_f64(args.grace));
    for r in relays {
        let _ = r.join();
    }
    result
}

/// Waits for every child; after the first failure the others get `grace`, then are killed.
fn supervise(children: &mut [(u32, Child)], grace: Duration) -> Result<(), CliError> {
    let mut done: Vec<Option<ProcessStatus>> = vec![None; children.len()];
    let mut first_failure: Option<(u32, ProcessStatus, Instant)> = None;
    loop {
        for (i, (rank, child)) in children.iter_mut().enumerate() {
            if done[i].is_some() {
                continue;
            }
            if let Ok(Some(status)) = child.try_wait() {
                done[i] = Some(status);
                if !status.success() {
                    eprintln!("launch: rank {rank} failed ({})", describe(status));
                    if first_failure.is_none() {
                        first_failure = Some((*rank, status, Instant::now()));
                    }
                }
            }
        }
        if done.iter().all(Option::is_some) {
            break;
        }
        if let Some((_, _, at)) = first_failure
            && at.elapsed() >= grace
        {
            for (i, (rank, child)) in children.iter_mut().enumerate() {
                if done[i].is_none() {
                    eprintln!(
                        "launch: killing rank {rank} ({} s after the first failure)",
                        grace.as_secs_f64()
                    );
                    let _ = child.kill();
                    done[i] = child.wait().ok();
                }
            }
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    match first_failure {
        None => Ok(()),
        Some((rank, status, _)) => Err(CliError::RankFailed {
            rank,
            how: describe(status),
            code: status.code().and_then(|c| u8::try_from(c).ok()).filter(|&c| c != 0),
        }),
    }
}

/// The child gets SIGKILL when the launcher dies (killed by `timeout`, Ctrl-C): a rank is
/// never left spinning on a GPU without its launcher.
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and calls only prctl(2),
    // getppid(2) and _exit(2), all async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The launcher may have died before the prctl: then the parent is init.
            if libc::getppid() == 1 {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}

fn kill_all(children: &mut [(u32, Child)]) {
    for (_, child) in children.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_get_the_torchrun_variables_and_nvls_off() {
        let env = child_env(1, 2, 29_500, Some("rank=1,forward=3"));
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("RANK"), Some("1"));
        assert_eq!(get("WORLD_SIZE"), Some("2"));
        assert_eq!(get("LOCAL_RANK"), Some("1"));
        assert_eq!(get("LOCAL_WORLD_SIZE"), Some("2"));
        assert_eq!(get("MASTER_ADDR"), Some("127.0.0.1"));
        assert_eq!(get("MASTER_PORT"), Some("29500"));
        assert_eq!(get("NCCL_NVLS_ENABLE"), Some("0"));
        assert_eq!(get("FLASHDMOE_TEST_DIE"), Some("rank=1,forward=3"));
        assert!(child_env(0, 1, 1, None).iter().all(|(k, _)| *k != "FLASHDMOE_TEST_DIE"));
        // The children's environment parses as rank 1 of 2.
        let parsed = flashdmoe::core::rendezvous::Env::from_vars(env.clone()).unwrap();
        assert_eq!((parsed.rank, parsed.world_size, parsed.local_rank), (1, 2, 1));
    }

    #[test]
    fn only_run_and_bench_are_launched() {
        assert!(check_command(&["run".into(), "--backend".into()]).is_ok());
        assert!(check_command(&["bench".into()]).is_ok());
        let err = check_command(&["launch".into()]).unwrap_err().to_string();
        assert!(err.contains("not \"launch\""), "{err}");
        assert!(check_command(&[]).is_err());
    }
}
