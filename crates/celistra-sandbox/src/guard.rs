//! A watchdog that outlives the daemon by a moment: when the daemon dies in any way, SIGKILL
//! included, the guard kills the daemon's whole agent cgroup so no agent process is left running.

use std::process::Stdio;

use crate::{CgroupRoot, spawn::spawn_lock};

/// The guard process. Dropping it (or the daemon's death) closes its stdin, which makes it act.
#[derive(Debug)]
pub struct DeathGuard {
    _child: tokio::process::Child,
    _stdin: tokio::process::ChildStdin,
}

impl DeathGuard {
    /// Starts a guard for `root`. It waits for end-of-file on a pipe only the daemon holds (the
    /// kernel closes it when the daemon dies), then writes `cgroup.kill` of the instance cgroup.
    /// It runs in its own process group so a Ctrl-C meant for the daemon does not stop it first.
    pub fn start(root: &CgroupRoot) -> std::io::Result<DeathGuard> {
        DeathGuard::for_cgroup(root.path())
    }

    /// Starts a guard that kills the cgroup at `cgroup` when its holder dies, then removes it and
    /// its agents' cgroups once they are empty (5 s at most): a keeper that ended leaves nothing.
    pub fn for_cgroup(cgroup: &std::path::Path) -> std::io::Result<DeathGuard> {
        let mut command = tokio::process::Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(
                "cat >/dev/null; [ -e \"$1/cgroup.kill\" ] || exit 0; echo 1 >\"$1/cgroup.kill\"; \
                 i=0; while [ $i -lt 100 ]; do rmdir \"$1\"/*/ 2>/dev/null; \
                 rmdir \"$1\" 2>/dev/null && exit 0; i=$((i+1)); sleep 0.05; done",
            )
            .arg("celistra-guard")
            .arg(cgroup)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(false);
        let mut child = {
            let _forking = spawn_lock();
            command.spawn()?
        };
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("guard has no stdin"))?;
        Ok(DeathGuard {
            _child: child,
            _stdin: stdin,
        })
    }
}
