//! Linux enforcement of a [`crate::Policy`]: the launcher's namespaces and mounts, then its
//! Landlock ruleset and seccomp filter on the agent, all planned in the daemon before fork.

mod confinement;
mod interp;
#[allow(
    unsafe_code,
    reason = "unshares, forks, reaps, restricts itself and execs the agent"
)]
mod launcher;
#[allow(
    unsafe_code,
    reason = "mounts, and the mount API's system calls rustix lacks"
)]
mod mounts;
#[allow(unsafe_code, reason = "asks the kernel for its Landlock ABI version")]
mod plan;
#[allow(unsafe_code, reason = "installs the seccomp filter")]
mod syscall_filter;
mod tools;

pub(crate) use launcher::RunAs;
pub use launcher::{LAUNCHER_ARG, default_sigpipe, launcher_main};
pub use plan::{PlanDescription, SandboxPlan, kernel_landlock_abi};
pub use tools::Tools;
pub(crate) use tools::keeper_binary;
