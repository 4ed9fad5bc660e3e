//! Spawning a command as the leader of its own session and process group, with its standard streams
//! on a fresh PTY or on pipes.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use rustix::process::{Gid, Pid, Signal, Uid};

use serde::{Deserialize, Serialize};

use crate::cgroup::{join_cgroup, procs_path_c};
use crate::fork::{self, Forked, Image};
use crate::limits::{ChildLimits, LaunchLimits};
use crate::linux::RunAs;
use crate::{AgentCgroup, AgentLimits, Credentials, Error, SandboxPlan};

/// Serialises every fork of this process. pty-process opens a PTY master and only then marks it
/// close-on-exec; a fork from another thread in between would leak one agent's terminal into another.
/// It also keeps the orphan reaper from reaping a child before a [`Child`] owns it.
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
    /// Run `program args…` in this sandbox: the spawn itself runs the launcher around them.
    pub sandbox: Option<&'a SandboxPlan>,
    /// Run as this user (its PTY handed over too). Only a root daemon can switch; anyone may pass
    /// their own credentials, which changes nothing.
    pub credentials: Option<&'a Credentials>,
    /// Resource limits: the child joins their v1 cgroups and sets their rlimits before exec.
    pub limits: Option<&'a AgentLimits>,
    /// Start a new kernel audit session with this login uid (root only; ignored where refused), so
    /// every audit record of the run names it (`ses=`) even after its processes are gone. Read
    /// the session back with [`crate::audit_session_of`].
    pub audit_login_uid: Option<u32>,
}

/// A spawned child with its standard streams on pipes.
pub struct SpawnedPipes {
    pub child: Child,
    pub stdin: tokio::net::unix::pipe::Sender,
    pub stdout: tokio::net::unix::pipe::Receiver,
    pub stderr: tokio::net::unix::pipe::Receiver,
    /// For a sandboxed child: when its program starts (see [`SandboxReady`]).
    pub ready: Option<SandboxReady>,
    /// For a standby: what starts its program (see [`Wake`]).
    pub wake: Option<Wake>,
}

/// Size asked of the kernel for output pipes: fewer, larger reads for chatty programs.
const PIPE_SIZE: usize = 1024 * 1024;

/// A spawned child with the master side of its PTY.
pub struct SpawnedPty {
    pub child: Child,
    pub pty: pty_process::Pty,
    /// For a sandboxed child: when its program starts (see [`SandboxReady`]).
    pub ready: Option<SandboxReady>,
    /// For a standby: what starts its program (see [`Wake`]).
    pub wake: Option<Wake>,
}

/// The descriptor a shared listening socket has in an agent: the first after the standard streams,
/// as systemd socket activation (`LISTEN_FDS=1`) has it.
pub const LISTENER_FD: std::os::fd::RawFd = 3;

/// Variable naming the descriptor through which the launcher tells that the sandbox is in place
/// (it removes the variable before the agent's program starts).
pub(crate) const READY_FD_ENV: &str = "CELISTRA_SANDBOX_READY_FD";

/// Variable naming the descriptor on which a standby sandbox's agent waits, all set up, to be
/// woken (see [`Wake`]; the launcher removes the variable too).
pub(crate) const WAKE_FD_ENV: &str = "CELISTRA_SANDBOX_WAKE_FD";

/// What stands between the encoded user and the program in a standby's launcher arguments,
/// instead of `--`: a launcher from before standbys refuses it rather than start the program at
/// once.
pub(crate) const STANDBY_SEPARATOR: &str = "--standby";

/// The spawner's end of a standby sandbox: the launcher has built the sandbox and its agent
/// process has taken its user, Landlock and seccomp, and waits before `execve`. Waking it starts
/// the program at once; dropping it ends the standby without running anything. A restart that
/// finds one ready skips the sandbox's whole set-up.
#[derive(Debug)]
pub struct Wake {
    writer: OwnedFd,
}

impl Wake {
    /// Starts the standby's program.
    pub fn wake(self) -> std::io::Result<()> {
        rustix::io::write(&self.writer, b"w")?;
        Ok(())
    }
}

/// When a sandboxed child's own program starts. Until then its processes (the launcher and the
/// agent's process before exec) ignore or block the terminating signals, so a signal sent to the
/// run in that window (a few ms) would be lost: wait for this before signalling the run.
#[derive(Debug)]
pub struct SandboxReady {
    reader: OwnedFd,
}

impl SandboxReady {
    /// The read end of a readiness pipe made elsewhere (the keeper's spawn).
    pub fn from_fd(reader: OwnedFd) -> SandboxReady {
        SandboxReady { reader }
    }

    /// The read end, to hand to another process.
    pub fn into_fd(self) -> OwnedFd {
        self.reader
    }

    /// Waits until the launcher has put the sandbox in place and is starting the program, or the
    /// sandbox ended first, or `limit` passed. True only in the first case.
    pub async fn wait(self, limit: std::time::Duration) -> bool {
        use tokio::io::AsyncReadExt;
        let Ok(mut receiver) = tokio::net::unix::pipe::Receiver::from_owned_fd(self.reader) else {
            return false;
        };
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(limit, receiver.read(&mut byte)).await,
            Ok(Ok(1))
        )
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitInfo {
    /// The end of a sandboxed child, as the launcher (the sandbox's init) reports it. It exits
    /// with 128+N when the program was killed by signal N, so codes 129..=192 (signals 1 to 64)
    /// are read as that signal. A program that itself exits with such a code is reported as
    /// killed too; shells report both the same way. The launcher's own failure is 126.
    fn of_sandboxed(code: Option<i32>, signal: Option<i32>) -> ExitInfo {
        match code {
            Some(code @ 129..=192) => ExitInfo {
                code: None,
                signal: Some(code - 128),
            },
            _ => ExitInfo { code, signal },
        }
    }
}

/// A child process that this crate reaps. Its pid is also its session id and process-group id.
#[derive(Debug)]
pub struct Child {
    pidfd: tokio::io::unix::AsyncFd<OwnedFd>,
    pid: u32,
    /// The process is the launcher, which reports the program's death by signal as an exit code.
    sandboxed: bool,
    /// How it ended, once reaped.
    ended: Option<ExitInfo>,
}

impl Child {
    fn adopt(forked: Forked, sandboxed: bool) -> Result<Child, std::io::Error> {
        owned_pids()
            .get_or_insert_with(HashSet::new)
            .insert(forked.pid);
        Ok(Child {
            pidfd: crate::keeper::wire::register(forked.pidfd, tokio::io::Interest::READABLE)?,
            pid: forked.pid,
            sandboxed,
            ended: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the process to exit and reaps it. For a sandboxed child, an exit code of 128+N
    /// from the launcher is reported as signal N (see [`ExitInfo`]).
    pub async fn wait(&mut self) -> std::io::Result<ExitInfo> {
        loop {
            if let Some(ended) = self.ended {
                return Ok(ended);
            }
            // A pidfd is readable once its process has exited.
            let mut readable = self.pidfd.readable().await?;
            let reaped = rustix::process::waitid(
                rustix::process::WaitId::PidFd(self.pidfd.get_ref().as_fd()),
                rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOHANG,
            )?;
            let Some(status) = reaped else {
                readable.clear_ready();
                continue;
            };
            let code = status.exit_status().filter(|_| status.exited());
            let signal = status.terminating_signal();
            self.ended = Some(if self.sandboxed {
                ExitInfo::of_sandboxed(code, signal)
            } else {
                ExitInfo { code, signal }
            });
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(owned) = owned_pids().as_mut() {
            owned.remove(&self.pid);
        }
    }
}

/// Signals that would kill the launcher before it blocks them, when sent to the run's process
/// group, taking the agent down before it could handle them. They are ignored until then and
/// restored to defaults before the agent's program starts; SIGKILL still ends everything.
const IGNORED_ABOVE_THE_SANDBOX: [libc::c_int; 15] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGPIPE,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGIO,
    libc::SIGPWR,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
];

/// The user a child switches to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

impl Identity {
    /// `None` when nothing changes: no credentials, or the daemon's own.
    fn for_spawn(credentials: Option<&Credentials>) -> Result<Option<Identity>, Error> {
        let Some(credentials) = credentials else {
            return Ok(None);
        };
        let euid = rustix::process::geteuid();
        if !euid.is_root() {
            let egid = rustix::process::getegid();
            if credentials.uid == euid.as_raw() && credentials.gid == egid.as_raw() {
                return Ok(None);
            }
            return Err(Error::CredentialsNotPermitted {
                user: credentials.name.clone(),
                uid: credentials.uid,
            });
        }
        Ok(Some(Identity {
            uid: credentials.uid,
            gid: credentials.gid,
            groups: credentials.groups.clone(),
        }))
    }
}

/// A [`SpawnSpec`] resolved into plain data: the exact command line (the launcher's, for a
/// sandbox), the cgroups to join, the user and the limits. It is what crosses to the keeper
/// (`keeper`), which spawns every agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    program: PathBuf,
    args: Vec<String>,
    cwd: PathBuf,
    env: Vec<(String, String)>,
    /// The agent's v2 cgroup, joined before exec.
    cgroup: Option<PathBuf>,
    /// The program runs in the launcher's sandbox (see [`ExitInfo::of_sandboxed`]).
    sandboxed: bool,
    /// The user the child switches to; in a sandbox, the launcher's agent does (the child only
    /// hands the PTY over).
    identity: Option<Identity>,
    /// A sandbox of an unprivileged daemon: the uid and gid the child's new user namespace maps
    /// to root there, so the launcher can mount (its agent gets them back, see `RunAs::Mapped`).
    #[serde(default)]
    user_namespace: Option<(u32, u32)>,
    limits: LaunchLimits,
    audit_login_uid: Option<u32>,
    /// How errors name what was started: the agent's program, and the launcher around it.
    described: String,
}

impl SpawnSpec<'_> {
    /// Resolves the spec into what a spawn needs: nothing in it refers to this process.
    pub fn resolve(&self) -> Result<Launch, Error> {
        let identity = Identity::for_spawn(self.credentials)?;
        let euid = rustix::process::geteuid();
        let user_namespace = (self.sandbox.is_some() && !euid.is_root())
            .then(|| (euid.as_raw(), rustix::process::getegid().as_raw()));
        let (program, args) = match self.sandbox {
            Some(plan) => {
                let user = match (&identity, user_namespace) {
                    (Some(identity), _) => Some(RunAs::User {
                        uid: identity.uid,
                        gid: identity.gid,
                        groups: identity.groups.clone(),
                    }),
                    (None, Some((uid, gid))) => Some(RunAs::Mapped { uid, gid }),
                    (None, None) => None,
                };
                let (launcher, args) = plan.wrap(&self.program, &self.args, user.as_ref())?;
                (launcher.to_path_buf(), args)
            }
            None => (PathBuf::from(&self.program), self.args.clone()),
        };
        let described = match self.sandbox {
            Some(_) => format!("{} (sandboxing {})", program.display(), self.program),
            None => self.program.clone(),
        };
        Ok(Launch {
            program,
            args,
            cwd: self.cwd.clone(),
            env: self.env.clone(),
            cgroup: self.cgroup.map(|cgroup| cgroup.path().to_path_buf()),
            sandboxed: self.sandbox.is_some(),
            identity,
            user_namespace,
            limits: self.limits.map(AgentLimits::for_launch).unwrap_or_default(),
            audit_login_uid: self.audit_login_uid,
            described,
        })
    }
}

impl Launch {
    /// The agent's v2 cgroup, if it has one.
    pub fn cgroup(&self) -> Option<&std::path::Path> {
        self.cgroup.as_deref()
    }

    /// Whether the child starts its own kernel audit session (by writing its login uid).
    pub fn starts_audit_session(&self) -> bool {
        self.audit_login_uid.is_some()
    }

    fn error(&self, source: std::io::Error) -> Error {
        Error::Spawn {
            program: self.described.clone(),
            cwd: self.cwd.display().to_string(),
            source,
        }
    }

    /// The pipes of a sandboxed spawn: its readiness, and a standby's wake.
    fn sandbox_pipes(&self, standby: bool) -> Result<SandboxPipes, Error> {
        if standby && !self.sandboxed {
            return Err(self.error(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "only a sandboxed run can wait as a standby",
            )));
        }
        let ready = self
            .sandboxed
            .then(|| self.pipe_for_child(ChildEnd::Writes))
            .transpose()?;
        let wake = standby
            .then(|| self.pipe_for_child(ChildEnd::Reads))
            .transpose()?;
        Ok(SandboxPipes { ready, wake })
    }

    /// A close-on-exec pipe of which the child keeps one end across exec (see
    /// [`ChildSetup::enter`]): `(the spawner's end, the child's end)`. The child's end is above
    /// [`LISTENER_FD`], which a shared listening socket takes in the child.
    fn pipe_for_child(&self, child: ChildEnd) -> Result<(OwnedFd, OwnedFd), Error> {
        let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| self.error(e.into()))?;
        let (own, childs) = match child {
            ChildEnd::Writes => (reader, writer),
            ChildEnd::Reads => (writer, reader),
        };
        let childs = rustix::io::fcntl_dupfd_cloexec(&childs, LISTENER_FD + 1)
            .map_err(|e| self.error(e.into()))?;
        Ok((own, childs))
    }

    /// Starts the child with `streams` as its fds 0 to 2: in its cgroup from its first
    /// instruction, then [`ChildSetup::enter`], then `execve`.
    fn start(
        &self,
        streams: Streams<'_>,
        pipes: &SandboxPipes,
        listener: Option<RawFd>,
    ) -> Result<Child, Error> {
        let mut env = self.env.clone();
        let kept = pipes.childs_ends();
        for (variable, fd) in [(READY_FD_ENV, kept[0]), (WAKE_FD_ENV, kept[1])] {
            if let Some(fd) = fd {
                env.push((variable.to_owned(), fd.to_string()));
            }
        }
        // A run's arguments as they are; only a standby's are rewritten.
        let args = match pipes.wake {
            Some(_) => std::borrow::Cow::Owned(standby_args(&self.args)),
            None => std::borrow::Cow::Borrowed(self.args.as_slice()),
        };
        let image = Image::new(&self.program, &args, &env).map_err(|e| self.error(e))?;
        let setup = self
            .child_setup(streams, kept, listener)
            .map_err(|e| self.error(e))?;
        let cgroup = self
            .cgroup
            .as_deref()
            .map(fork::open_cgroup)
            .transpose()
            .map_err(|e| self.error(e))?;
        let forked = fork::spawn(
            cgroup.as_ref().map(AsFd::as_fd),
            self.namespaces(),
            &image,
            &mut |in_cgroup| setup.enter(in_cgroup),
        )
        .map_err(|e| self.error(e))?;
        Child::adopt(forked, self.sandboxed).map_err(|e| self.error(e))
    }

    /// The namespaces the child starts in: a sandbox's launcher is the first process of a PID
    /// namespace (and, for an unprivileged daemon, root of a user namespace, to mount).
    fn namespaces(&self) -> u64 {
        match (self.sandboxed, self.user_namespace) {
            (false, _) => 0,
            (true, None) => libc::CLONE_NEWPID as u64,
            (true, Some(_)) => (libc::CLONE_NEWPID | libc::CLONE_NEWUSER) as u64,
        }
    }

    /// What the child does between fork and exec, prepared before the fork.
    fn child_setup(
        &self,
        streams: Streams<'_>,
        kept: [Option<RawFd>; 2],
        listener: Option<RawFd>,
    ) -> std::io::Result<ChildSetup> {
        Ok(ChildSetup {
            streams: streams.raw(),
            cwd: CString::new(self.cwd.as_os_str().as_bytes()).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the working directory holds a NUL byte",
                )
            })?,
            cgroup_procs: self.cgroup.as_deref().map(procs_path_c).transpose()?,
            identity: self.identity.clone().map(|identity| {
                (
                    Uid::from_raw(identity.uid),
                    Gid::from_raw(identity.gid),
                    identity
                        .groups
                        .iter()
                        .map(|&g| Gid::from_raw(g))
                        .collect::<Vec<_>>(),
                )
            }),
            sandboxed: self.sandboxed,
            own_user_namespace: self
                .user_namespace
                .map(|(uid, gid)| (format!("0 {uid} 1"), format!("0 {gid} 1"))),
            limits: self.limits.for_child()?,
            audit_login: self.audit_login_uid.map(|uid| uid.to_string()),
            parent: rustix::process::pidfd_open(
                rustix::process::getpid(),
                rustix::process::PidfdFlags::empty(),
            )?,
            kept,
            listener,
        })
    }

    /// Spawns the program in a new PTY of `size`. The child is the leader of a new session whose
    /// controlling terminal is that PTY, gets SIGKILL if the spawning thread dies, and starts in
    /// its cgroup.
    ///
    /// Call it from a long-lived thread (a tokio worker), never from `spawn_blocking`: the death
    /// signal is tied to the spawning thread.
    ///
    /// A `listener` becomes the child's fd 3 (see [`LISTENER_FD`]).
    ///
    /// A `standby` (sandboxed only) waits, all set up, until [`Wake::wake`].
    pub fn spawn_in_pty(
        &self,
        size: PtySize,
        listener: Option<BorrowedFd<'_>>,
        standby: bool,
    ) -> Result<SpawnedPty, Error> {
        let pipes = self.sandbox_pipes(standby)?;
        let _forking = spawn_lock();
        let (pty, pts) = pty_process::open().map_err(|e| Error::Pty(pty_error(e)))?;
        pty.resize(pty_process::Size::new(size.rows, size.cols))
            .map_err(|e| Error::Pty(pty_error(e)))?;
        let child = self.start(
            Streams::Pty(pts.as_fd()),
            &pipes,
            listener.map(|fd| fd.as_raw_fd()),
        )?;
        let (ready, wake) = pipes.spawners_ends();
        Ok(SpawnedPty {
            child,
            pty,
            ready,
            wake,
        })
    }

    /// Spawns the program with stdin, stdout and stderr on pipes, as the leader of a new session
    /// without a terminal; otherwise supervised like [`Launch::spawn_in_pty`] (same thread rule).
    pub fn spawn_with_pipes(
        &self,
        listener: Option<BorrowedFd<'_>>,
        standby: bool,
    ) -> Result<SpawnedPipes, Error> {
        let pipes = self.sandbox_pipes(standby)?;
        let pipe = || {
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(|e| self.error(e.into()))
        };
        let (stdin_reader, stdin_writer) = pipe()?;
        let (stdout_reader, stdout_writer) = pipe()?;
        let (stderr_reader, stderr_writer) = pipe()?;
        for reader in [&stdout_reader, &stderr_reader] {
            // A larger pipe only saves syscalls; the default size works too.
            let _ = rustix::pipe::fcntl_setpipe_size(reader, PIPE_SIZE);
        }
        let child = {
            let _forking = spawn_lock();
            self.start(
                Streams::Pipes([
                    stdin_reader.as_fd(),
                    stdout_writer.as_fd(),
                    stderr_writer.as_fd(),
                ]),
                &pipes,
                listener.map(|fd| fd.as_raw_fd()),
            )?
        };
        // The child's ends are closed here, so a read sees the end once the child's are closed.
        drop((stdin_reader, stdout_writer, stderr_writer));
        let io = |e: std::io::Error| self.error(e);
        let (ready, wake) = pipes.spawners_ends();
        Ok(SpawnedPipes {
            child,
            stdin: tokio::net::unix::pipe::Sender::from_owned_fd(stdin_writer).map_err(io)?,
            stdout: tokio::net::unix::pipe::Receiver::from_owned_fd(stdout_reader).map_err(io)?,
            stderr: tokio::net::unix::pipe::Receiver::from_owned_fd(stderr_reader).map_err(io)?,
            ready,
            wake,
        })
    }
}

/// A standby's launcher arguments: the first `--` (the one after the encoded user) becomes
/// [`STANDBY_SEPARATOR`].
fn standby_args(args: &[String]) -> Vec<String> {
    let mut args = args.to_vec();
    if let Some(separator) = args.iter_mut().find(|arg| *arg == "--") {
        STANDBY_SEPARATOR.clone_into(separator);
    }
    args
}

/// Which end of a pipe the child keeps.
#[derive(Clone, Copy)]
enum ChildEnd {
    Reads,
    Writes,
}

/// A sandboxed spawn's pipes, each as `(the spawner's end, the child's end)`: its readiness, and
/// a standby's wake. The child's ends close in the spawner once the spawn returned.
struct SandboxPipes {
    ready: Option<(OwnedFd, OwnedFd)>,
    wake: Option<(OwnedFd, OwnedFd)>,
}

impl SandboxPipes {
    /// The descriptors the child keeps across exec: the readiness pipe's, then the wake's.
    fn childs_ends(&self) -> [Option<RawFd>; 2] {
        [&self.ready, &self.wake].map(|pipe| pipe.as_ref().map(|(_, child)| child.as_raw_fd()))
    }

    fn spawners_ends(self) -> (Option<SandboxReady>, Option<Wake>) {
        (
            self.ready.map(|(reader, _)| SandboxReady { reader }),
            self.wake.map(|(writer, _)| Wake { writer }),
        )
    }
}

/// Where the child's standard streams are.
#[derive(Clone, Copy)]
enum Streams<'a> {
    /// The slave side of a fresh PTY, which becomes the controlling terminal of the child's
    /// session.
    Pty(BorrowedFd<'a>),
    /// Pipes for stdin, stdout and stderr; the child's session has no terminal.
    Pipes([BorrowedFd<'a>; 3]),
}

impl Streams<'_> {
    fn raw(self) -> RawStreams {
        match self {
            Streams::Pty(slave) => RawStreams::Pty(slave.as_raw_fd()),
            Streams::Pipes(fds) => RawStreams::Pipes(fds.map(|fd| fd.as_raw_fd())),
        }
    }
}

/// [`Streams`] as the child takes them: descriptors the caller keeps open until the spawn returned.
#[derive(Clone, Copy)]
enum RawStreams {
    Pty(RawFd),
    Pipes([RawFd; 3]),
}

/// Everything the child does between fork and exec, as data prepared before the fork: its
/// standard streams and session, its working directory, its cgroups (while still root), its user,
/// death with its parent, and for a sandbox the signals the launcher must ignore.
struct ChildSetup {
    streams: RawStreams,
    cwd: CString,
    /// To join by writing, where the kernel could not start the child in its cgroup.
    cgroup_procs: Option<CString>,
    identity: Option<(Uid, Gid, Vec<Gid>)>,
    sandboxed: bool,
    /// The uid and gid maps of the user namespace the child starts in: it maps the spawner's
    /// ids to root there.
    own_user_namespace: Option<(String, String)>,
    limits: ChildLimits,
    audit_login: Option<String>,
    /// A pidfd of the spawner, readable once it has died. The child's parent pid cannot tell:
    /// in a new PID namespace it is 0 from the start.
    parent: OwnedFd,
    /// Descriptors the child keeps across exec: the readiness pipe's, a standby's wake.
    kept: [Option<RawFd>; 2],
    listener: Option<RawFd>,
}

impl ChildSetup {
    /// Runs in the child: only system calls on the prepared data; it allocates nothing and takes
    /// no lock.
    fn enter(&self, in_cgroup: bool) -> std::io::Result<()> {
        // The signal mask and SIGPIPE (which Rust ignores) are inherited across exec: reset them.
        // SAFETY: an empty set for sigprocmask, a default disposition; async-signal-safe.
        unsafe {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
        if let Some((uid_map, gid_map)) = &self.own_user_namespace {
            for (file, content) in [
                (c"/proc/self/uid_map", uid_map.as_str()),
                (c"/proc/self/setgroups", "deny"),
                (c"/proc/self/gid_map", gid_map.as_str()),
            ] {
                let fd =
                    rustix::fs::open(file, rustix::fs::OFlags::WRONLY, rustix::fs::Mode::empty())?;
                rustix::io::write(&fd, content.as_bytes())?;
            }
        }
        rustix::process::setsid()?;
        let standard = match self.streams {
            RawStreams::Pty(slave) => {
                // SAFETY: the caller keeps the PTY slave open until the spawn returned.
                let slave_fd = unsafe { BorrowedFd::borrow_raw(slave) };
                rustix::process::ioctl_tiocsctty(slave_fd)?;
                if let Some((uid, gid, _)) = &self.identity {
                    rustix::fs::fchown(slave_fd, Some(*uid), Some(*gid))?;
                }
                [slave; 3]
            }
            RawStreams::Pipes(fds) => fds,
        };
        for (target, fd) in standard.into_iter().enumerate() {
            // SAFETY: both numbers are descriptors of this process (fd is kept open by the
            // caller); dup2 makes a copy without close-on-exec. The sources are above 2, since
            // this process's own 0 to 2 are open.
            if unsafe { libc::dup2(fd, target as RawFd) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        rustix::process::chdir(self.cwd.as_c_str())?;
        // Joining a cgroup needs the spawner's privileges: before giving them up.
        if let Some(procs) = self.cgroup_procs.as_ref().filter(|_| !in_cgroup) {
            join_cgroup(procs)?;
        }
        self.limits.enter()?;
        if let Some(uid) = &self.audit_login {
            // Needs CAP_AUDIT_CONTROL, so before the credentials change. Best effort: without
            // it blocks are still enforced, only attributed by cgroup instead.
            if let Ok(fd) = rustix::fs::open(
                c"/proc/self/loginuid",
                rustix::fs::OFlags::WRONLY,
                rustix::fs::Mode::empty(),
            ) {
                let _ = rustix::io::write(&fd, uid.as_bytes());
            }
        }
        if let Some((uid, gid, groups)) = self.identity.as_ref().filter(|_| !self.sandboxed) {
            // The child has one thread, so the per-thread system calls change the process.
            rustix::thread::set_thread_groups(groups)?;
            rustix::thread::set_thread_gid(*gid)?;
            rustix::thread::set_thread_uid(*uid)?;
        }
        // After the credential change, which clears the death signal.
        rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
        let mut parent = [rustix::event::PollFd::new(
            &self.parent,
            rustix::event::PollFlags::IN,
        )];
        let now = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        if rustix::event::poll(&mut parent, Some(&now)).is_ok_and(|ready| ready > 0) {
            // The spawner died between fork and prctl: do not run unsupervised.
            rustix::process::kill_process(rustix::process::getpid(), Signal::KILL)?;
        }
        if let Some(fd) = self.listener {
            if fd == LISTENER_FD {
                // SAFETY: the caller keeps the socket open until the spawn returned.
                let fd = unsafe { BorrowedFd::borrow_raw(fd) };
                rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
            } else {
                // SAFETY: both numbers are descriptors of this process; dup2 makes the copy
                // without close-on-exec. fd 3 held nothing the child needs (the readiness
                // pipe is above it, the PTY or pipes are 0 to 2 by now).
                if unsafe { libc::dup2(fd, LISTENER_FD) } < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        for fd in self.kept.into_iter().flatten() {
            // SAFETY: the parent keeps the child's ends open until the spawn returned.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
        }
        if self.sandboxed {
            for signal in IGNORED_ABOVE_THE_SANDBOX {
                // SAFETY: sets a disposition, no handler; async-signal-safe.
                unsafe { libc::signal(signal, libc::SIG_IGN) };
            }
        }
        Ok(())
    }
}

/// Sets a PTY's size; the kernel sends SIGWINCH to the terminal's foreground process group.
pub fn resize_pty(pty: &pty_process::OwnedWritePty, size: PtySize) -> Result<(), Error> {
    pty.resize(pty_process::Size::new(size.rows, size.cols))
        .map_err(|e| Error::Pty(pty_error(e)))
}

/// Spawns `spawn.program` in a new PTY of `size` (see [`Launch::spawn_in_pty`]).
pub fn spawn_in_pty(spawn: &SpawnSpec<'_>, size: PtySize) -> Result<SpawnedPty, Error> {
    spawn.resolve()?.spawn_in_pty(size, None, false)
}

/// Spawns `spawn.program` with its standard streams on pipes (see [`Launch::spawn_with_pipes`]).
pub fn spawn_with_pipes(spawn: &SpawnSpec<'_>) -> Result<SpawnedPipes, Error> {
    spawn.resolve()?.spawn_with_pipes(None, false)
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

/// Names the listening sockets a daemon hands to the image an upgrade executes:
/// `NAME=FD,NAME=FD`.
pub const LISTENERS_ENV: &str = "CELISTRA_LISTEN_FDS";

/// The listening socket named `name` that the previous image of this process handed over (see
/// [`LISTENERS_ENV`]), made close-on-exec again. `None` when there is none, or the number does
/// not name an open socket.
pub fn inherited_listener(name: &str) -> Option<OwnedFd> {
    let list = std::env::var(LISTENERS_ENV).ok()?;
    let raw: std::os::fd::RawFd = list
        .split(',')
        .filter_map(|entry| entry.split_once('='))
        .find(|(key, _)| *key == name)?
        .1
        .parse()
        .ok()?;
    // Descriptors 0-2 are the standard streams, never a handed-over socket.
    if raw < 3 {
        return None;
    }
    // SAFETY: only looked at; `fstat` fails harmlessly on a number that is not open.
    let borrowed = unsafe { BorrowedFd::borrow_raw(raw) };
    let is_socket = rustix::fs::fstat(borrowed).is_ok_and(|stat| {
        rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Socket
    });
    if !is_socket {
        return None;
    }
    rustix::io::fcntl_setfd(borrowed, rustix::io::FdFlags::CLOEXEC).ok()?;
    // SAFETY: the previous image left this socket open for this process alone, and nothing else
    // in it owns the number: it is taken once, at start-up.
    Some(unsafe { std::os::fd::FromRawFd::from_raw_fd(raw) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launcher_codes_above_128_are_signals() {
        let signal = |n| ExitInfo {
            code: None,
            signal: Some(n),
        };
        let code = |n| ExitInfo {
            code: Some(n),
            signal: None,
        };
        assert_eq!(ExitInfo::of_sandboxed(Some(143), None), signal(15));
        assert_eq!(ExitInfo::of_sandboxed(Some(129), None), signal(1));
        assert_eq!(ExitInfo::of_sandboxed(Some(192), None), signal(64));
        for plain in [0, 1, 3, 126, 127, 128, 193, 255] {
            assert_eq!(ExitInfo::of_sandboxed(Some(plain), None), code(plain));
        }
        assert_eq!(ExitInfo::of_sandboxed(None, Some(9)), signal(9));
    }
}
