//! Child subreaper support: orphaned descendants of agents are re-parented to the daemon, which must
//! reap them without stealing the exit status of the children a [`crate::Child`] waits for; and the
//! daemon re-executing itself for an upgrade ([`reexec`]).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::process::{Pid, WaitOptions};

use crate::spawn::{owned_pids, spawn_lock};

/// Makes this process the reaper of its orphaned descendants (`PR_SET_CHILD_SUBREAPER`).
pub fn become_subreaper() -> std::io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).map_err(Into::into)
}

/// Reaps every exited child that no [`crate::Child`] owns. Returns how many were reaped.
pub fn reap_orphans() -> usize {
    // Holding the spawn lock means no child is between fork and registration as owned.
    let _no_spawn = spawn_lock();
    let owned = owned_pids();
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let mut reaped = 0;
    for task in tasks.flatten() {
        let Ok(children) = fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            if owned
                .as_ref()
                .is_some_and(|set| set.contains(&pid.unsigned_abs()))
            {
                continue;
            }
            if let Some(pid) = Pid::from_raw(pid)
                && let Ok(Some(_)) = rustix::process::waitpid(Some(pid), WaitOptions::NOHANG)
            {
                reaped += 1;
            }
        }
    }
    reaped
}

/// Replaces this process's image by `binary` (the daemon's own path, where a new version may have
/// been put) with `arguments`, keeping its pid; if that is not a working program (gone, not
/// executable, not a program, or it fails `--version`), by the image this process was started from
/// (`/proc/self/exe`, which stays readable even when replaced on disk). Returns only when neither
/// could be executed.
pub fn reexec(
    binary: Option<&Path>,
    arguments: &[std::ffi::OsString],
    listeners: &[(String, std::os::fd::OwnedFd)],
) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let mut error = std::io::Error::other("the daemon's path is unknown");
    let new = binary.filter(|binary| match answers_version(binary) {
        Ok(()) => true,
        Err(why) => {
            tracing::error!(
                "{} is not a working celistrad ({why}); starting the running version again",
                binary.display()
            );
            false
        }
    });
    // The listening sockets stay open across exec, so no connection is refused meanwhile.
    let mut passed = vec![];
    for (name, fd) in listeners {
        if rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty()).is_ok() {
            passed.push(format!("{name}={}", std::os::fd::AsRawFd::as_raw_fd(fd)));
        }
    }
    for candidate in new.into_iter().chain([Path::new("/proc/self/exe")]) {
        let mut command = std::process::Command::new(candidate);
        command.env(crate::LISTENERS_ENV, passed.join(","));
        // The next image knows its path (its own says `(deleted)` once replaced) and shows it.
        if let Some(binary) = binary {
            command.arg0(binary).env(BINARY_ENV, binary);
        }
        let _forking = spawn_lock();
        error = command.args(arguments).exec();
        tracing::error!("cannot execute {}: {error}", candidate.display());
    }
    error
}

/// Names the daemon's binary to the image an upgrade executes, which may be the old one.
pub const BINARY_ENV: &str = "CELISTRA_BINARY";

/// Longest a new binary may take to answer `--version` before an upgrade.
const PROBE_LIMIT: Duration = Duration::from_secs(5);

/// Whether `binary --version` runs and succeeds in time: what an upgrade asks of a new binary
/// before leaving the running one (a shell script, a truncated file or another architecture fail).
fn answers_version(binary: &Path) -> Result<(), String> {
    let mut child = {
        let _forking = spawn_lock();
        std::process::Command::new(binary)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?
    };
    let deadline = Instant::now() + PROBE_LIMIT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("`--version` ended with {status}")),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`--version` did not answer within {} s",
                    PROBE_LIMIT.as_secs()
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}
