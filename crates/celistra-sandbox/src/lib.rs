//! The only place that creates, signals and reaps processes. It spawns agents in their own PTY (or
//! on pipes), session and process group, tracks every descendant in a per-agent cgroup where the kernel offers
//! one, kills the group (or cgroup) as a whole, and reaps orphans for a daemon that is a subreaper.
//! Everything that allocates happens before `fork`; code between `fork` and `exec` only makes syscalls.
//! The kernel sandbox (bubblewrap, Landlock, seccomp; Seatbelt on macOS) is built here from a
//! [`Policy`], and resource limits (cgroups, else rlimits) from [`ResourceLimits`].

mod cgroup;
mod guard;
mod limits;
mod policy;
mod reaper;
mod seatbelt;
mod spawn;

pub use cgroup::{AgentCgroup, CgroupLayout, CgroupRoot, CgroupVersion, V1Hierarchy};
pub use guard::DeathGuard;
pub use limits::{
    AgentLimits, AppliedLimit, AppliedLimits, ControlFile, Enforcement, LimitKind, ResourceControl,
    ResourceLimits,
};
pub use policy::{MacosGrants, Network, Policy};
pub use reaper::{become_subreaper, reap_orphans};
#[cfg(target_os = "macos")]
pub use seatbelt::sandbox_exec_argv;
pub use seatbelt::seatbelt_profile;
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
    #[error("invalid resource limit: {0}")]
    InvalidLimit(String),
}
