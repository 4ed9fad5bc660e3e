//! Linux enforcement of a [`crate::Policy`]: bubblewrap for namespaces and mounts, then, inside,
//! the launcher's Landlock ruleset and seccomp filter, all planned in the daemon before fork.

mod confinement;
mod interp;
#[allow(unsafe_code, reason = "restricts itself and execs the agent")]
mod launcher;
#[allow(unsafe_code, reason = "asks the kernel for its Landlock ABI version")]
mod plan;
#[allow(unsafe_code, reason = "installs the seccomp filter")]
mod syscall_filter;
mod tools;

pub use launcher::{LAUNCHER_ARG, default_sigpipe, launcher_main};
pub use plan::{PlanDescription, SandboxPlan, kernel_landlock_abi};
pub use tools::Tools;
