//! Child subreaper support: orphaned descendants of agents are re-parented to the daemon, which must
//! reap them without stealing the exit status of the children a [`crate::Child`] waits for; and the
//! daemon re-executing itself for an upgrade ([`reexec`]).

use std::fs;

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
/// been put) with `arguments`, keeping its pid; if that cannot run (gone, not executable, not a
/// program), by the image this process was started from (`/proc/self/exe`, which stays readable
/// even when replaced on disk). Returns only when neither could be executed.
pub fn reexec(
    binary: Option<&std::path::Path>,
    arguments: &[std::ffi::OsString],
) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let mut error = std::io::Error::other("the daemon's path is unknown");
    for candidate in binary
        .into_iter()
        .chain([std::path::Path::new("/proc/self/exe")])
    {
        let _forking = spawn_lock();
        error = std::process::Command::new(candidate).args(arguments).exec();
        tracing::error!("cannot execute {}: {error}", candidate.display());
    }
    error
}
