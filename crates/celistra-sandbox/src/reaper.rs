//! Child subreaper support: orphaned descendants of agents are re-parented to the daemon, which must
//! reap them without stealing the exit status of the children a [`crate::Child`] waits for.

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
