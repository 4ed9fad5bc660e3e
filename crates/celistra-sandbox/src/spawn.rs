//! Spawning a command as the leader of its own session and process group, with its standard streams
//! on a fresh PTY or on pipes.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use rustix::process::{Pid, Signal};

use crate::cgroup::join_cgroup;
use crate::{AgentCgroup, AgentLimits, Error};

/// Serialises every fork of this process. pty-process opens a PTY master and only then marks it
/// close-on-exec; a fork from another thread in between would leak one agent's terminal into another.
static SPAWN_LOCK: Mutex<()> = Mutex::new(());

/// Pids of children that a [`Child`] owns and will reap itself; the orphan reaper leaves them alone.
static OWNED: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

pub(crate) fn spawn_lock() -> MutexGuard<'static, ()> {
    SPAWN_LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn owned_pids() -> MutexGuard<'static, Option<HashSet<u32>>> {
    OWNED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtySize {
    pub rows: u16,
    pub cols: u16,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct SpawnSpec<'a> {
    pub program: String,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    /// The complete environment: nothing is inherited beyond it.
    pub env: Vec<(String, String)>,
    /// Cgroup the child joins before exec, so every descendant is tracked from its first instruction.
    pub cgroup: Option<&'a AgentCgroup>,
    /// Resource limits: the child joins their v1 cgroups and sets their rlimits before exec.
    pub limits: Option<&'a AgentLimits>,
}

/// A spawned child with its standard streams on pipes.
pub struct SpawnedPipes {
    pub child: Child,
    pub stdin: tokio::process::ChildStdin,
    pub stdout: tokio::process::ChildStdout,
    pub stderr: tokio::process::ChildStderr,
}

/// Size asked of the kernel for output pipes: fewer, larger reads for chatty programs.
const PIPE_SIZE: usize = 1024 * 1024;

/// A spawned child with the master side of its PTY.
pub struct SpawnedPty {
    pub child: Child,
    pub pty: pty_process::Pty,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// A child process that this crate reaps. Its pid is also its session id and process-group id.
#[derive(Debug)]
pub struct Child {
    inner: tokio::process::Child,
    pid: u32,
}

impl Child {
    fn adopt(inner: tokio::process::Child) -> Result<Child, std::io::Error> {
        let pid = inner
            .id()
            .ok_or_else(|| std::io::Error::other("child exited before its pid was read"))?;
        owned_pids().get_or_insert_with(HashSet::new).insert(pid);
        Ok(Child { inner, pid })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the process to exit and reaps it.
    pub async fn wait(&mut self) -> std::io::Result<ExitInfo> {
        let status = self.inner.wait().await?;
        Ok(ExitInfo {
            code: status.code(),
            signal: status.signal(),
        })
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(owned) = owned_pids().as_mut() {
            owned.remove(&self.pid);
        }
    }
}

/// What the child does between fork and exec, whatever its streams: it dies with the daemon, and it
/// joins its cgroup. Everything it needs is prepared before the fork.
fn supervise_child(
    spawn: &SpawnSpec<'_>,
    new_session: bool,
) -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
    let cgroup_procs: Option<CString> = spawn.cgroup.map(AgentCgroup::procs_path_c);
    let limits = spawn.limits.map(AgentLimits::for_child);
    let parent_pid = rustix::process::getpid();
    move || {
        if new_session {
            rustix::process::setsid()?;
        }
        rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
        if rustix::process::getppid() != Some(parent_pid) {
            // The daemon died between fork and prctl: do not run unsupervised.
            rustix::process::kill_process(rustix::process::getpid(), Signal::KILL)?;
        }
        if let Some(procs) = &cgroup_procs {
            join_cgroup(procs)?;
        }
        if let Some(limits) = &limits {
            limits.enter()?;
        }
        Ok(())
    }
}

fn spawn_error(spawn: &SpawnSpec<'_>, source: std::io::Error) -> Error {
    Error::Spawn {
        program: spawn.program.clone(),
        cwd: spawn.cwd.display().to_string(),
        source,
    }
}

/// Sets a PTY's size; the kernel sends SIGWINCH to the terminal's foreground process group.
pub fn resize_pty(pty: &pty_process::OwnedWritePty, size: PtySize) -> Result<(), Error> {
    pty.resize(pty_process::Size::new(size.rows, size.cols))
        .map_err(|e| Error::Pty(pty_error(e)))
}

/// Spawns `spawn.program` in a new PTY of `size`. The child is the leader of a new session whose
/// controlling terminal is that PTY, gets SIGKILL if the spawning thread dies, and joins its cgroup
/// before exec.
///
/// Call it from a long-lived thread (a tokio worker), never from `spawn_blocking`: the death signal is
/// tied to the spawning thread.
pub fn spawn_in_pty(spawn: &SpawnSpec<'_>, size: PtySize) -> Result<SpawnedPty, Error> {
    let mut command = pty_process::Command::new(&spawn.program)
        .args(&spawn.args)
        .current_dir(&spawn.cwd)
        .env_clear()
        .envs(spawn.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    // SAFETY: the closure only issues syscalls (prctl, getppid, open, write, close, kill, setrlimit)
    // on data prepared before fork; it allocates nothing and takes no locks. pty-process makes the
    // session.
    command = unsafe { command.pre_exec(supervise_child(spawn, false)) };
    let _forking = spawn_lock();
    let (pty, pts) = pty_process::open().map_err(|e| Error::Pty(pty_error(e)))?;
    pty.resize(pty_process::Size::new(size.rows, size.cols))
        .map_err(|e| Error::Pty(pty_error(e)))?;
    let child = command
        .spawn(pts)
        .map_err(|e| spawn_error(spawn, pty_error(e)))?;
    let child = Child::adopt(child).map_err(|e| spawn_error(spawn, e))?;
    Ok(SpawnedPty { child, pty })
}

/// Spawns `spawn.program` with stdin, stdout and stderr on pipes, as the leader of a new session
/// without a terminal; otherwise supervised like [`spawn_in_pty`] (same thread rule).
pub fn spawn_with_pipes(spawn: &SpawnSpec<'_>) -> Result<SpawnedPipes, Error> {
    let mut command = tokio::process::Command::new(&spawn.program);
    command
        .args(&spawn.args)
        .current_dir(&spawn.cwd)
        .env_clear()
        .envs(spawn.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(false);
    // SAFETY: as in `spawn_in_pty`; setsid is one more syscall.
    unsafe {
        command.pre_exec(supervise_child(spawn, true));
    }
    let _forking = spawn_lock();
    let mut child = command.spawn().map_err(|e| spawn_error(spawn, e))?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(spawn_error(
            spawn,
            std::io::Error::other("pipes were not created"),
        ));
    };
    for pipe in [stdout.as_fd(), stderr.as_fd()] {
        // A larger pipe only saves syscalls; the default size works too.
        let _ = rustix::pipe::fcntl_setpipe_size(pipe, PIPE_SIZE);
    }
    let child = Child::adopt(child).map_err(|e| spawn_error(spawn, e))?;
    Ok(SpawnedPipes {
        child,
        stdin,
        stdout,
        stderr,
    })
}

/// Sends signal number `signal` to every process in process group `pgid`. A group that no longer
/// exists is not an error.
pub fn signal_group(pgid: u32, signal: i32) -> std::io::Result<()> {
    let Some(pid) = i32::try_from(pgid).ok().and_then(Pid::from_raw) else {
        return Err(std::io::Error::other(format!(
            "invalid process group {pgid}"
        )));
    };
    let Some(signal) = Signal::from_named_raw(signal) else {
        return Err(std::io::Error::other(format!(
            "unknown signal number {signal}"
        )));
    };
    match rustix::process::kill_process_group(pid, signal) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn pty_error(err: pty_process::Error) -> std::io::Error {
    match err {
        pty_process::Error::Io(e) => e,
        pty_process::Error::Rustix(e) => e.into(),
        other => std::io::Error::other(other.to_string()),
    }
}
