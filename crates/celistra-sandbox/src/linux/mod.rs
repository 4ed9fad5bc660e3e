//! Linux enforcement of a [`crate::Policy`]: bubblewrap for namespaces and mounts, then, inside,
//! the launcher's Landlock ruleset and seccomp filter, all planned in the daemon before fork.

mod confinement;
mod interp;
mod launcher;
mod plan;
mod syscall_filter;
mod tools;

pub use launcher::{LAUNCHER_ARG, launcher_main};
pub use plan::{PlanDescription, SandboxPlan, kernel_landlock_abi};
pub use tools::Tools;
