//! The launcher: the first program bubblewrap runs inside the sandbox. It restores the signal
//! state the agent should start with, confines itself (Landlock, then seccomp) and execs the
//! agent's program. It runs in a fresh process, so unlike `pre_exec` code it may allocate.

use std::convert::Infallible;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;

use super::confinement::{Confinement, LandlockError};
use super::syscall_filter;

/// `argv[1]` that makes a binary act as the launcher:
/// `<launcher> __sandbox-exec <encoded confinement> -- <program> [args…]`.
pub const LAUNCHER_ARG: &str = "__sandbox-exec";

/// Exit status when the launcher cannot start the program (the shell's "cannot execute").
const CANNOT_EXECUTE: i32 = 126;

#[derive(Debug, thiserror::Error)]
enum LaunchError {
    #[error("bad command line: expected `{LAUNCHER_ARG} <encoded policy> -- <program> [args…]`")]
    Usage,
    #[error("decoding the policy: {0}")]
    Decode(#[from] serde_json::Error),
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

/// Runs the launcher on this process's arguments and never returns: it execs the program, or
/// prints `celistra sandbox: <what failed>: <error>` and exits with 126. Call it first thing in
/// `main` when `argv[1]` is [`LAUNCHER_ARG`].
pub fn launcher_main() -> ! {
    let args: Vec<OsString> = std::env::args_os().skip(2).collect();
    let error = match launch(&args) {
        Ok(never) => match never {},
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

fn launch(args: &[OsString]) -> Result<Infallible, LaunchError> {
    let [encoded, separator, command @ ..] = args else {
        return Err(LaunchError::Usage);
    };
    if separator != "--" || command.is_empty() {
        return Err(LaunchError::Usage);
    }
    let ready = take_ready_fd();
    let encoded = encoded.to_str().ok_or(LaunchError::Usage)?;
    let confinement: Confinement = serde_json::from_str(encoded)?;
    let argv = command
        .iter()
        .map(|arg| CString::new(arg.as_bytes()).map_err(|_| LaunchError::Usage))
        .collect::<Result<Vec<CString>, _>>()?;
    reset_signals().map_err(LaunchError::Signals)?;
    let filters = syscall_filter::compile(confinement.subprocess)?;
    confinement.restrict_self()?;
    syscall_filter::install(&filters).map_err(LaunchError::InstallSeccomp)?;
    if let Some(fd) = ready {
        // SAFETY: a descriptor the daemon handed down for this purpose; written once, then closed
        // (the program must not inherit it).
        unsafe {
            libc::write(fd, b"r".as_ptr().cast(), 1);
            libc::close(fd);
        }
    }
    Err(exec(&argv))
}

/// The descriptor through which the daemon waits for the sandbox to be in place, taken out of the
/// environment so the agent's program never sees it.
fn take_ready_fd() -> Option<libc::c_int> {
    let fd = std::env::var(crate::spawn::READY_FD_ENV).ok()?.parse().ok();
    // SAFETY: the launcher is single-threaded; nothing reads the environment concurrently.
    unsafe { std::env::remove_var(crate::spawn::READY_FD_ENV) };
    fd
}

/// Gives SIGPIPE its default disposition, which Rust's runtime sets to ignored: a command-line
/// process whose stdout is closed (`ctl events | head -1`) then ends quietly, killed by SIGPIPE as
/// Unix filters are, instead of panicking in `println!`. Never for the daemon, whose writes to a
/// closed connection must stay errors, nor for a process that must restore a terminal on exit.
pub fn default_sigpipe() {
    // SAFETY: installs the default disposition; no handler code is involved.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// Gives every signal its default disposition and unblocks all of them. The daemon made the
/// sandbox's outer processes ignore terminating signals (so a signal to the process group reaches
/// the agent without killing bubblewrap first); the agent must get them as usual.
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
