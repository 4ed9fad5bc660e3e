//! The launcher: the program the keeper starts as the first process of a sandbox's new PID
//! namespace. It unshares the other namespaces, builds the sandbox's filesystem
//! ([`super::mounts`]), and starts the agent as its child, which takes its user, drops every
//! capability, restores the signal state the agent should start with, confines itself (Landlock,
//! then seccomp) and execs the agent's program. The launcher stays as the namespace's init: it
//! reaps orphans and exits with the agent's status (128+N for death by signal N); its exit ends
//! every process left in the namespace. It runs in a fresh process, so unlike code between fork
//! and exec it may allocate. A standby's agent waits, confined, for the keeper's wake before it
//! execs (see `Wake`).

use std::convert::Infallible;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;

use serde::{Deserialize, Serialize};

use super::confinement::{Confinement, LandlockError};
use super::mounts::{self, MountError, MountStep};
use super::syscall_filter;

/// `argv[1]` that makes a binary act as the launcher:
/// `<launcher> __sandbox-exec <encoded sandbox> <encoded user> -- <program> [args…]`.
pub const LAUNCHER_ARG: &str = "__sandbox-exec";

/// Exit status when the launcher cannot start the program (the shell's "cannot execute").
const CANNOT_EXECUTE: i32 = 126;

/// Everything a plan has the launcher set up, as its command line carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SandboxSetup {
    pub mounts: Vec<MountStep>,
    /// The agent's working directory inside.
    pub workdir: String,
    /// A network namespace of its own (only loopback), or the host's.
    pub own_network: bool,
    pub confinement: Confinement,
}

/// Who the agent runs as, when not as the launcher itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RunAs {
    /// A root daemon's agent of another user: the agent switches to it.
    User {
        uid: u32,
        gid: u32,
        groups: Vec<u32>,
    },
    /// An unprivileged daemon's agent. The launcher is root of a user namespace of its own (to
    /// mount); the agent gets the daemon's ids back through a nested one.
    Mapped { uid: u32, gid: u32 },
}

#[derive(Debug, thiserror::Error)]
enum LaunchError {
    #[error(
        "bad command line: expected `{LAUNCHER_ARG} <encoded sandbox> <encoded user> -- <program> [args…]` (`--standby` instead of `--` for a standby)"
    )]
    Usage,
    #[error("a standby needs its wake pipe (CELISTRA_SANDBOX_WAKE_FD)")]
    StandbyWithoutWake,
    #[error("decoding the sandbox: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("making the sandbox's namespaces: {0}")]
    Namespaces(std::io::Error),
    #[error("building the sandbox's filesystem: {0}")]
    Mounts(#[from] MountError),
    #[error("bringing up the sandbox's loopback: {0}")]
    Loopback(std::io::Error),
    #[error("starting the agent's process: {0}")]
    Fork(std::io::Error),
    #[error("taking the agent's user: {0}")]
    User(std::io::Error),
    #[error("dropping capabilities: {0}")]
    Capabilities(std::io::Error),
    #[error("resetting the signal mask: {0}")]
    Signals(std::io::Error),
    #[error("compiling the seccomp filter: {0}")]
    CompileSeccomp(#[from] seccompiler::BackendError),
    #[error("applying Landlock: {0}")]
    Landlock(#[from] LandlockError),
    #[error("installing the seccomp filter: {0}")]
    InstallSeccomp(std::io::Error),
    #[error("executing {program}: {source}")]
    Exec {
        program: String,
        source: std::io::Error,
    },
}

/// Runs the launcher on this process's arguments and never returns: it exits with the agent's
/// status, or prints `celistra sandbox: <what failed>: <error>` and exits with 126. Call it first
/// thing in `main` when `argv[1]` is [`LAUNCHER_ARG`].
pub fn launcher_main() -> ! {
    let args: Vec<OsString> = std::env::args_os().skip(2).collect();
    let error = match launch(&args) {
        Ok(agent) => {
            // What the init keeps for the agent's whole run: nothing from the set-up.
            drop(args);
            // SAFETY: returns free heap memory to the kernel; no other thread runs.
            unsafe { libc::malloc_trim(0) };
            be_init(agent)
        }
        Err(error) => error,
    };
    #[allow(
        clippy::print_stderr,
        reason = "inside the sandbox before exec, stderr is the agent's terminal: the only way to say why it did not start"
    )]
    {
        eprintln!("celistra sandbox: {error}");
    }
    std::process::exit(CANNOT_EXECUTE)
}

/// Sets the sandbox up and starts the agent: in the init, returns the agent's pid; in the agent,
/// returns only an error.
fn launch(args: &[OsString]) -> Result<libc::pid_t, LaunchError> {
    let [setup, user, separator, command @ ..] = args else {
        return Err(LaunchError::Usage);
    };
    let standby = match separator.to_str() {
        Some("--") => false,
        Some(crate::spawn::STANDBY_SEPARATOR) => true,
        _ => return Err(LaunchError::Usage),
    };
    if command.is_empty() {
        return Err(LaunchError::Usage);
    }
    let ready = take_fd(crate::spawn::READY_FD_ENV);
    let wake = take_fd(crate::spawn::WAKE_FD_ENV);
    let wake = match (standby, wake) {
        (true, None) => return Err(LaunchError::StandbyWithoutWake),
        (true, wake) => wake,
        (false, _) => None,
    };
    let setup: SandboxSetup = serde_json::from_str(setup.to_str().ok_or(LaunchError::Usage)?)?;
    let user: Option<RunAs> = serde_json::from_str(user.to_str().ok_or(LaunchError::Usage)?)?;
    let argv = command
        .iter()
        .map(|arg| CString::new(arg.as_bytes()).map_err(|_| LaunchError::Usage))
        .collect::<Result<Vec<CString>, _>>()?;
    // The cgroup namespace's root is the agent's cgroup, which the keeper started this process in.
    let mut namespaces =
        libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWCGROUP;
    if setup.own_network {
        namespaces |= libc::CLONE_NEWNET;
    }
    // SAFETY: this process has one thread, so unsharing changes all of it.
    if unsafe { libc::unshare(namespaces) } != 0 {
        return Err(LaunchError::Namespaces(std::io::Error::last_os_error()));
    }
    if setup.own_network {
        mounts::loopback_up().map_err(LaunchError::Loopback)?;
    }
    mounts::build_root(&setup.mounts, &setup.workdir)?;
    block_all_signals().map_err(LaunchError::Signals)?;
    // SAFETY: this process has one thread; the child only runs this function's code to exec.
    let agent = unsafe { libc::fork() };
    if agent < 0 {
        return Err(LaunchError::Fork(std::io::Error::last_os_error()));
    }
    if agent == 0 {
        return match start_agent(&setup.confinement, user.as_ref(), ready, wake, &argv) {
            Ok(never) => match never {},
            Err(error) => Err(error),
        };
    }
    Ok(agent)
}

/// The agent's side of the fork: its user, no capability, default signals, Landlock and seccomp,
/// then its program. A standby sandbox (`wake`) waits, all set up, until the keeper wakes it.
fn start_agent(
    confinement: &Confinement,
    user: Option<&RunAs>,
    ready: Option<libc::c_int>,
    wake: Option<libc::c_int>,
    argv: &[CString],
) -> Result<Infallible, LaunchError> {
    if let Some(RunAs::Mapped { uid, gid }) = user {
        map_back(*uid, *gid).map_err(LaunchError::User)?;
    }
    drop_bounding_capabilities().map_err(LaunchError::Capabilities)?;
    if let Some(RunAs::User { uid, gid, groups }) = user {
        let groups: Vec<rustix::process::Gid> = groups
            .iter()
            .map(|&g| rustix::process::Gid::from_raw(g))
            .collect();
        rustix::thread::set_thread_groups(&groups).map_err(|e| LaunchError::User(e.into()))?;
        rustix::thread::set_thread_gid(rustix::process::Gid::from_raw(*gid))
            .map_err(|e| LaunchError::User(e.into()))?;
        rustix::thread::set_thread_uid(rustix::process::Uid::from_raw(*uid))
            .map_err(|e| LaunchError::User(e.into()))?;
    }
    drop_capabilities().map_err(LaunchError::Capabilities)?;
    reset_signals().map_err(LaunchError::Signals)?;
    let filters = syscall_filter::compile(confinement.subprocess)?;
    confinement.restrict_self()?;
    syscall_filter::install(&filters).map_err(LaunchError::InstallSeccomp)?;
    if let Some(fd) = wake {
        wait_to_be_woken(fd);
    }
    if let Some(fd) = ready {
        // SAFETY: a descriptor the daemon handed down for this purpose; written once, then closed
        // (the program must not inherit it).
        unsafe {
            libc::write(fd, b"r".as_ptr().cast(), 1);
            libc::close(fd);
        }
    }
    Err(exec(argv))
}

/// The init's side: no capability, no descriptor the agent needs to see closed, none of the
/// set-up's memory, and reaping until the agent ends. Signals stay blocked and are only waited
/// for: a terminating signal sent to the run's process group is the agent's to handle, and the
/// init ignores it.
fn be_init(agent: libc::pid_t) -> ! {
    // SAFETY: closes this process's descriptors above the standard streams (the readiness pipe,
    // a shared listener), which the agent has its own copies of.
    unsafe { libc::close_range(3, libc::c_uint::MAX, 0) };
    let _ = drop_bounding_capabilities();
    let _ = drop_capabilities();
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    wait_as_init(agent)
}

/// The init's loop, in a frame of its own that it never returns from: it gives back all the
/// memory the launcher wrote but that frame (and its command line), then waits for signals and
/// reaps with system calls made by their instruction.
#[inline(never)]
fn wait_as_init(agent: libc::pid_t) -> ! {
    use crate::memory::syscall_without_libc;
    let all = every_signal();
    if crate::memory::CAN_GIVE_BACK {
        // SAFETY: one thread, and this frame never returns: from here on the init reads only
        // `all`, `agent` and `status`, here, and calls nothing but `syscall_without_libc`.
        unsafe { crate::memory::give_back_private_memory(&raw const all as usize) };
    }
    loop {
        // SAFETY: `all` is an initialised signal set, of which the kernel reads its 64 signals;
        // null info and timeout pointers are allowed (`sigwaitinfo`).
        let signal = unsafe {
            syscall_without_libc(
                libc::SYS_rt_sigtimedwait,
                &raw const all as usize,
                0,
                0,
                KERNEL_SIGSET_BYTES,
            )
        };
        if signal != libc::SIGCHLD as isize {
            continue;
        }
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: a valid status pointer and a null rusage; WNOHANG never blocks (`waitpid`).
            let reaped = unsafe {
                syscall_without_libc(
                    libc::SYS_wait4,
                    usize::MAX, // -1: any child
                    &raw mut status as usize,
                    libc::WNOHANG as usize,
                    0,
                )
            };
            if reaped <= 0 {
                break;
            }
            if reaped == agent as isize {
                // Without WUNTRACED or WCONTINUED, an exit or a killing signal (its number in the
                // low 7 bits), told apart as `WIFSIGNALED` does, but calling nothing.
                let signal = status & 0x7f;
                let code = if signal == 0 {
                    (status >> 8) & 0xff
                } else {
                    128 + signal
                };
                // SAFETY: ends the process at once, running nothing of its memory; it does not
                // return.
                unsafe { syscall_without_libc(libc::SYS_exit_group, code as usize, 0, 0, 0) };
            }
        }
    }
}

/// The size of the kernel's signal set (`_NSIG / 8`), which `rt_sigtimedwait` takes.
const KERNEL_SIGSET_BYTES: libc::size_t = 8;

/// Blocks every signal, so none is lost between the fork and the init's first wait.
fn block_all_signals() -> std::io::Result<()> {
    let all = every_signal();
    // SAFETY: `all` is an initialised signal set that outlives the call.
    if unsafe { libc::sigprocmask(libc::SIG_SETMASK, &raw const all, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn every_signal() -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is valid storage, and sigfillset initialises it.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&raw mut all);
        all
    }
}

/// Enters a nested user namespace where this process (root of the launcher's) is `uid`:`gid`,
/// the daemon's own ids.
fn map_back(uid: u32, gid: u32) -> std::io::Result<()> {
    // SAFETY: this process has one thread.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    std::fs::write("/proc/self/setgroups", "deny")?;
    std::fs::write("/proc/self/uid_map", format!("{uid} 0 1"))?;
    std::fs::write("/proc/self/gid_map", format!("{gid} 0 1"))
}

/// Removes every capability from the bounding set, so no program executed later gets one back.
/// Needs CAP_SETPCAP, so before any change of user.
fn drop_bounding_capabilities() -> std::io::Result<()> {
    for capability in 0..64 {
        // SAFETY: PR_CAPBSET_DROP takes a capability number and touches no memory.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, capability, 0, 0, 0) } != 0 {
            let error = std::io::Error::last_os_error();
            // Past the kernel's last capability.
            if error.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(error);
        }
    }
    Ok(())
}

/// Empties the effective, permitted, inheritable and ambient capability sets.
fn drop_capabilities() -> std::io::Result<()> {
    rustix::thread::clear_ambient_capability_set()?;
    let none = rustix::thread::CapabilitySet::empty();
    rustix::thread::set_capabilities(
        None,
        rustix::thread::CapabilitySets {
            effective: none,
            permitted: none,
            inheritable: none,
        },
    )?;
    Ok(())
}

/// The descriptor through which the daemon waits for the sandbox to be in place, taken out of the
/// environment so the agent's program never sees it.
fn take_fd(variable: &str) -> Option<libc::c_int> {
    let fd = std::env::var(variable).ok()?.parse().ok();
    // SAFETY: the launcher is single-threaded; nothing reads the environment concurrently.
    unsafe { std::env::remove_var(variable) };
    fd
}

/// Blocks until the keeper wakes this standby (one byte on `fd`). If the keeper drops the standby
/// instead (or dies), the pipe ends and the process exits without running anything.
fn wait_to_be_woken(fd: libc::c_int) {
    let mut byte = 0u8;
    let woken = loop {
        // SAFETY: reads one byte into a local from a descriptor the keeper handed down.
        let read = unsafe { libc::read(fd, (&raw mut byte).cast(), 1) };
        if read >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break read == 1;
        }
    };
    // SAFETY: the descriptor is not used again; the program must not inherit it.
    unsafe { libc::close(fd) };
    if !woken {
        // SAFETY: ends this process at once; nothing of the agent ran.
        unsafe { libc::_exit(0) };
    }
}

/// Gives SIGPIPE its default disposition, which Rust's runtime sets to ignored: a command-line
/// process whose stdout is closed (`ctl events | head -1`) then ends quietly, killed by SIGPIPE as
/// Unix filters are, instead of panicking in `println!`. Never for the daemon, whose writes to a
/// closed connection must stay errors, nor for a process that must restore a terminal on exit.
pub fn default_sigpipe() {
    // SAFETY: installs the default disposition; no handler code is involved.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// Gives every signal its default disposition and unblocks all of them. The keeper made the
/// launcher ignore terminating signals, and the launcher blocked all of them; the agent must get
/// them as usual.
fn reset_signals() -> std::io::Result<()> {
    for signal in 1..=libc::SIGRTMAX() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installs the default disposition; no handler code is involved. It fails only for
        // the signals glibc reserves for itself (32 and 33), which are left as they are.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
    // SAFETY: `none` is a valid, initialised (emptied) signal set that outlives both calls.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut none);
        if libc::sigprocmask(libc::SIG_SETMASK, &raw const none, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `execv(argv[0], argv)`: the environment is kept, `$PATH` is not searched. Returns only on
/// failure.
fn exec(argv: &[CString]) -> LaunchError {
    let mut pointers: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    pointers.push(std::ptr::null());
    // SAFETY: `pointers` is a null-terminated array of pointers to NUL-terminated strings owned by
    // `argv`, all alive for the call; execv returns only on failure.
    unsafe { libc::execv(pointers[0], pointers.as_ptr()) };
    LaunchError::Exec {
        program: argv[0].to_string_lossy().into_owned(),
        source: std::io::Error::last_os_error(),
    }
}
