//! The only place that creates, signals and reaps processes. It spawns agents in their own PTY (or
//! on pipes), session and process group, tracks every descendant in a per-agent cgroup where the kernel offers
//! one, kills the group (or cgroup) as a whole, and reaps orphans for a daemon that is a subreaper.
//! Everything that allocates happens before `fork`; code between `fork` and `exec` only makes syscalls.
//! The kernel sandbox (bubblewrap, Landlock, seccomp) is built here from a [`Policy`].

mod audit;
mod cgroup;
mod guard;
mod policy;
mod reaper;
mod spawn;

pub use audit::{
    AttributedBlock, BlockMonitor, Blocked, KernelBlock, MonitorError, StartReport, agent_of_pid,
};
pub use cgroup::{AgentCgroup, CgroupRoot};
pub use guard::DeathGuard;
pub use policy::{MacosGrants, Network, Policy};
pub use reaper::{become_subreaper, reap_orphans};
/// The PTY types handed out with a spawned child.
pub mod pty {
    pub use pty_process::{OwnedReadPty, OwnedWritePty, Pty};
}

pub use spawn::{
    Child, ExitInfo, PtySize, SpawnSpec, SpawnedPipes, SpawnedPty, resize_pty, signal_group,
    spawn_in_pty, spawn_with_pipes,
};

/// Errors of process control, each naming what was being done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open a PTY: {0}")]
    Pty(#[source] std::io::Error),
    #[error("cannot start `{program}` in {cwd}: {source}")]
    Spawn {
        program: String,
        cwd: String,
        source: std::io::Error,
    },
    #[error("cgroup {path}: {source}")]
    Cgroup {
        path: String,
        source: std::io::Error,
    },
}
