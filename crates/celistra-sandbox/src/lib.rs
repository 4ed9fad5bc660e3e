//! The only place that creates, signals and reaps processes. It spawns agents in their own PTY (or
//! on pipes), session and process group, tracks every descendant in a per-agent cgroup where the kernel offers
//! one, kills the group (or cgroup) as a whole, and reaps orphans for a daemon that is a subreaper.
//! Everything that allocates happens before `fork`; code between `fork` and `exec` only makes syscalls.
//! The kernel sandbox (namespaces, Landlock, seccomp; Seatbelt on macOS) is built here from a
//! [`Policy`], children can run as another user ([`Credentials`]), and resource limits (cgroups,
//! else rlimits) come from [`ResourceLimits`]. [`SystemTool`] runs a system tool (`systemctl`, …)
//! with a timeout and its output captured; [`Git`] is that for `git` (the daemon's worktrees), as
//! a given user. [`release_idle_memory`] gives back a quiet process's code pages and free heap.
//! [`cgroup_use`] and [`ProcessTable`] read what agents use (CPU time, memory).

// The workspace's clippy.toml refuses process creation and signals everywhere else; this crate is
// where they belong.
#![allow(
    clippy::disallowed_methods,
    reason = "the one crate that spawns and signals"
)]

mod audit;
mod browser;
mod cgroup;
mod credentials;
#[allow(unsafe_code, reason = "clone3, execve and _exit in the child")]
mod fork;
mod git;
mod guard;
pub mod keeper;
mod limits;
mod linux;
#[allow(
    unsafe_code,
    reason = "madvise on its own mappings, system calls by their instruction"
)]
mod memory;
mod policy;
mod reaper;
mod seatbelt;
#[allow(unsafe_code, reason = "fork-time syscalls on raw descriptors")]
mod spawn;
mod tool;
mod usage;

pub use audit::{
    AttributedBlock, BlockMonitor, Blocked, KernelBlock, MonitorError, StartReport, agent_of_pid,
    audit_session_of,
};
pub use browser::open_in_browser;
pub use cgroup::{AgentCgroup, CgroupLayout, CgroupRoot, CgroupVersion, V1Hierarchy};
pub use credentials::Credentials;
pub use git::{Git, GitError, GitOutput};
pub use guard::DeathGuard;
pub use limits::{
    AgentLimits, AppliedLimit, AppliedLimits, ControlFile, Enforcement, LimitKind, ResourceControl,
    ResourceLimits,
};
pub use linux::{
    LAUNCHER_ARG, PlanDescription, SandboxPlan, Tools, default_sigpipe, kernel_landlock_abi,
    launcher_main,
};
pub use memory::{limit_heap_arenas, release_idle_memory};
pub use policy::{AGENT_BIN_INSIDE, ASK_SOCKET_INSIDE, MacosGrants, Network, Policy};
pub use reaper::{BINARY_ENV, become_subreaper, reap_orphans, reexec};
#[cfg(target_os = "macos")]
pub use seatbelt::sandbox_exec_argv;
pub use seatbelt::seatbelt_profile;
pub use tool::{SystemTool, ToolError, ToolOutput};
pub use usage::{ProcessTable, ResourceUse, UsageScope, cgroup_use};
/// The PTY types handed out with a spawned child.
pub mod pty {
    pub use pty_process::{OwnedReadPty, OwnedWritePty, Pty};
}

pub use spawn::{
    Child, ExitInfo, LISTENER_FD, LISTENERS_ENV, Launch, PtySize, SandboxReady, SpawnSpec,
    SpawnedPipes, SpawnedPty, Wake, inherited_listener, resize_pty, signal_group, spawn_in_pty,
    spawn_with_pipes,
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
    #[error(
        "the sandbox launcher {} is not an executable file named by an absolute path; give the \
         daemon's own binary (its `__sandbox-exec` mode starts sandboxed programs)",
        path.display()
    )]
    LauncherMissing { path: std::path::PathBuf },
    #[error("sandbox policy path {path} {problem}; fix the agent's capabilities or workspace")]
    SandboxPath { path: String, problem: String },
    #[error(
        "the sandbox's seccomp filter knows x86_64 and aarch64, not {arch}; on this machine run \
         agents unsandboxed with `celistrad ctl sandbox off` or the `privileged` capability"
    )]
    UnsupportedArch { arch: &'static str },
    #[error("cannot encode the sandbox policy for the launcher: {0}")]
    PolicyEncoding(#[source] serde_json::Error),
    #[error(
        "user `{user}` is not in /etc/passwd: create it (useradd) or name an existing user or uid"
    )]
    UnknownUser { user: String },
    #[error("cannot read {path}: {source}")]
    UserDatabase {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "cannot run a child as {user} (uid {uid}): only a daemon running as root can switch users; \
         run the daemon as root or the agent as the daemon's own user"
    )]
    CredentialsNotPermitted { user: String, uid: u32 },
    #[error("invalid resource limit: {0}")]
    InvalidLimit(String),
}
