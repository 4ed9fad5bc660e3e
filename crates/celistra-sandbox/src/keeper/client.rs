//! A daemon's link to its keeper: connecting (starting the keeper when none runs), taking over
//! the runs it holds, spawning through it and learning how runs end.

use std::collections::HashMap;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

use super::wire::{Datagram, FromKeeper, HeldRun, KeptExit, OutputStream, Socket, ToKeeper};
use super::{KEEPER_ARG, LEFTOVER_FILE, SOCKET_FILE};
use crate::{ExitInfo, Launch, PtySize, SandboxReady};

/// Longest wait for a keeper just started to listen.
const START_LIMIT: Duration = Duration::from_secs(10);

/// Why the keeper could not be reached or asked.
#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    #[error(
        "cannot start the keeper ({binary} {KEEPER_ARG} {dir}): {source}; agents cannot run \
         without it"
    )]
    Start {
        binary: String,
        dir: String,
        source: std::io::Error,
    },
    #[error("cannot reach the keeper at {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the keeper, which holds every agent, is gone (its agents ended with it); restart the \
         daemon to start a new one"
    )]
    Gone,
    #[error("the keeper sent a message out of turn: {0}")]
    Protocol(String),
    #[error("{0}")]
    Spawn(String),
}

/// Output a run wrote while no daemon read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptOutput {
    pub stream: OutputStream,
    /// When the keeper read it (ms since the epoch).
    pub at_ms: u64,
    pub bytes: Vec<u8>,
}

/// A run a daemon takes over from the keeper (or from what an earlier keeper left).
#[derive(Debug)]
pub struct AdoptedRun {
    pub run: HeldRun,
    /// Its output descriptors: a PTY's master, else stdout and stderr then stdin. Empty for a run
    /// left by a keeper that ended.
    pub fds: Vec<OwnedFd>,
    pub output: Vec<KeptOutput>,
    /// How it ends (already set in `run.exit` when it did).
    pub child: KeptChild,
}

/// A run spawned through the keeper.
#[derive(Debug)]
pub struct SpawnedRun {
    pub child: KeptChild,
    /// A PTY's master, else stdout, stderr, stdin.
    pub fds: Vec<OwnedFd>,
    pub ready: Option<SandboxReady>,
    /// Its kernel audit session, when it started one.
    pub audit_session: Option<u32>,
}

/// A process the keeper holds: its pid, and its end once the keeper reaped it.
#[derive(Debug)]
pub struct KeptChild {
    pid: u32,
    exit: Option<oneshot::Receiver<KeptExit>>,
    ended: Option<KeptExit>,
}

impl KeptChild {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits until the keeper reaped the process. If the keeper itself died, so did the process
    /// (it was its parent, and the death signal of every run is SIGKILL).
    pub async fn wait(&mut self) -> std::io::Result<ExitInfo> {
        if let Some(ended) = self.ended {
            return Ok(ended.info());
        }
        let exit = match self.exit.as_mut() {
            Some(exit) => exit.await.ok(),
            None => None,
        };
        let ended = exit.unwrap_or(KeptExit {
            code: None,
            signal: Some(libc::SIGKILL),
            at_ms: super::now_ms(),
        });
        self.exit = None;
        self.ended = Some(ended);
        Ok(ended.info())
    }

    /// Whether the process ended, without waiting (a keeper that is gone took it along).
    pub fn has_ended(&mut self) -> bool {
        if self.ended.is_some() {
            return true;
        }
        let exit = match self.exit.as_mut().map(oneshot::Receiver::try_recv) {
            Some(Err(oneshot::error::TryRecvError::Empty)) => return false,
            Some(Ok(exit)) => exit,
            Some(Err(oneshot::error::TryRecvError::Closed)) | None => KeptExit {
                code: None,
                signal: Some(libc::SIGKILL),
                at_ms: super::now_ms(),
            },
        };
        self.exit = None;
        self.ended = Some(exit);
        true
    }

    /// When and how the process ended, once [`KeptChild::wait`] returned.
    pub fn ended(&self) -> Option<KeptExit> {
        self.ended
    }
}

type Pending = oneshot::Sender<Result<SpawnedRun, KeeperError>>;

#[derive(Default)]
struct Waiters {
    spawns: HashMap<u64, Pending>,
    exits: HashMap<u32, oneshot::Sender<KeptExit>>,
}

/// The daemon's end of the link.
#[derive(Debug)]
pub struct Keeper {
    socket: Arc<Socket>,
    pid: u32,
    /// It sets standbys up (a keeper started by an older daemon may not).
    standbys: bool,
    next_request: AtomicU64,
    waiters: Arc<Mutex<WaitersCell>>,
    reader: tokio::task::JoinHandle<()>,
    /// Becomes true when the link closes.
    gone: tokio::sync::watch::Receiver<bool>,
}

/// The waiters, and whether the link is gone (then nothing waits any more).
#[derive(Default)]
struct WaitersCell {
    waiters: Waiters,
    gone: bool,
}

impl std::fmt::Debug for WaitersCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiters")
            .field("spawns", &self.waiters.spawns.len())
            .field("exits", &self.waiters.exits.len())
            .field("gone", &self.gone)
            .finish()
    }
}

fn lock(waiters: &Mutex<WaitersCell>) -> MutexGuard<'_, WaitersCell> {
    waiters.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Keeper {
    /// Connects to the keeper of `dir`, starting one when none listens, and takes over every run
    /// it holds, plus the runs a keeper that ended left in `dir`. `binary` is the daemon's: the
    /// keeper is `celistra-keeper` installed beside it, else `binary` itself.
    pub async fn connect(
        dir: &Path,
        binary: Option<&Path>,
    ) -> Result<(Keeper, Vec<AdoptedRun>), KeeperError> {
        let path = dir.join(SOCKET_FILE);
        let socket = match Socket::connect(&path) {
            Ok(socket) => socket,
            Err(_) => {
                let Some(binary) = binary else {
                    return Err(KeeperError::Start {
                        binary: "celistrad".into(),
                        dir: dir.display().to_string(),
                        source: std::io::Error::other("this daemon does not know its own binary"),
                    });
                };
                start(&crate::linux::keeper_binary(binary), dir).await?;
                Socket::connect(&path).map_err(|source| KeeperError::Connect {
                    path: path.display().to_string(),
                    source,
                })?
            }
        };
        let mut adopted = left_over(dir);
        socket
            .send(&ToKeeper::Hello, &[], &[])
            .await
            .map_err(|_| KeeperError::Gone)?;
        let (pid, standbys) = match receive(&socket).await? {
            Datagram {
                message:
                    FromKeeper::Welcome {
                        keeper_pid,
                        standbys,
                    },
                ..
            } => (keeper_pid, standbys),
            other => return Err(KeeperError::Protocol(format!("{:?}", other.message))),
        };
        let mut waiters = WaitersCell::default();
        loop {
            let datagram = receive(&socket).await?;
            match datagram.message {
                FromKeeper::Held { run, .. } => {
                    let child = waiters.watch(run.pid, run.exit);
                    adopted.push(AdoptedRun {
                        run,
                        fds: datagram.fds,
                        output: vec![],
                        child,
                    });
                }
                FromKeeper::Output { pid, stream, at_ms } => {
                    if let Some(run) = adopted.iter_mut().rev().find(|r| r.run.pid == pid) {
                        run.output.push(KeptOutput {
                            stream,
                            at_ms,
                            bytes: datagram.payload,
                        });
                    }
                }
                FromKeeper::WelcomeDone => break,
                other => return Err(KeeperError::Protocol(format!("{other:?}"))),
            }
        }
        let socket = Arc::new(socket);
        let waiters = Arc::new(Mutex::new(waiters));
        let (closed, gone) = tokio::sync::watch::channel(false);
        let reader = tokio::spawn(read_news(Arc::clone(&socket), Arc::clone(&waiters), closed));
        Ok((
            Keeper {
                socket,
                pid,
                standbys,
                next_request: AtomicU64::new(1),
                waiters,
                reader,
                gone,
            },
            adopted,
        ))
    }

    /// The keeper's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the keeper sets standbys up: one started by a daemon from before them, and kept
    /// across upgrades, does not.
    pub fn sets_up_standbys(&self) -> bool {
        self.standbys
    }

    /// Whether the keeper is still there.
    pub fn is_alive(&self) -> bool {
        !lock(&self.waiters).gone
    }

    /// Resolves when the keeper is gone (it died, and its agents with it).
    pub async fn lost(&self) {
        let mut gone = self.gone.clone();
        let _ = gone.wait_for(|gone| *gone).await;
    }

    /// Spawns `launch` through the keeper: in a PTY of `pty`, else on pipes. The keeper keeps
    /// `note` with the run and gives it to the daemon that takes the run over. A `standby`
    /// (sandboxed only) is set up and waits until [`Keeper::wake`]; until then it is not a run:
    /// its readiness pipe stays silent and the keeper ends it if this daemon goes.
    #[allow(
        clippy::too_many_arguments,
        reason = "the fields of one `ToKeeper::Spawn`"
    )]
    pub async fn spawn(
        &self,
        agent_id: &str,
        run_id: u64,
        launch: Launch,
        pty: Option<PtySize>,
        listener: Option<BorrowedFd<'_>>,
        note: serde_json::Value,
        standby: bool,
    ) -> Result<SpawnedRun, KeeperError> {
        if standby && !self.standbys {
            return Err(KeeperError::Spawn(
                "this keeper predates standbys: it would start the program at once".into(),
            ));
        }
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        {
            let mut waiters = lock(&self.waiters);
            if waiters.gone {
                return Err(KeeperError::Gone);
            }
            waiters.waiters.spawns.insert(request, reply);
        }
        let message = ToKeeper::Spawn {
            request,
            agent_id: agent_id.to_owned(),
            run_id,
            launch: Box::new(launch),
            pty: pty.map(|size| (size.rows, size.cols)),
            note,
            standby,
        };
        let fds: Vec<BorrowedFd<'_>> = listener.into_iter().collect();
        if self.socket.send(&message, &[], &fds).await.is_err() {
            lock(&self.waiters).waiters.spawns.remove(&request);
            return Err(KeeperError::Gone);
        }
        answer.await.map_err(|_| KeeperError::Gone)?
    }

    /// Starts standby `pid`'s program, as run `run_id` (with `note`) from now on.
    pub async fn wake(
        &self,
        pid: u32,
        run_id: u64,
        note: serde_json::Value,
    ) -> Result<(), KeeperError> {
        let message = ToKeeper::Wake { pid, run_id, note };
        self.socket
            .send(&message, &[], &[])
            .await
            .map_err(|_| KeeperError::Gone)
    }

    /// Tells the keeper the end of run `pid` is recorded: it forgets the run.
    pub async fn forget(&self, pid: u32) {
        let _ = self.socket.send(&ToKeeper::Forget { pid }, &[], &[]).await;
    }

    /// Lets go of run `pid`'s descriptors, so that the daemon's closing them hangs its terminal up.
    pub async fn hang_up(&self, pid: u32) {
        let _ = self.socket.send(&ToKeeper::HangUp { pid }, &[], &[]).await;
    }

    /// Asks the keeper to kill `cgroup` if it dies.
    pub async fn guard(&self, cgroup: &Path) {
        let message = ToKeeper::Guard {
            cgroup: cgroup.to_path_buf(),
        };
        let _ = self.socket.send(&message, &[], &[]).await;
    }

    /// Every agent was stopped: the keeper exits once it holds no run.
    pub async fn release(&self) {
        let _ = self.socket.send(&ToKeeper::Exit, &[], &[]).await;
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl WaitersCell {
    /// A [`KeptChild`] for `pid`, already ended when `exit` is known.
    fn watch(&mut self, pid: u32, exit: Option<KeptExit>) -> KeptChild {
        if exit.is_some() {
            return KeptChild {
                pid,
                exit: None,
                ended: exit,
            };
        }
        let (sender, receiver) = oneshot::channel();
        self.waiters.exits.insert(pid, sender);
        KeptChild {
            pid,
            exit: Some(receiver),
            ended: None,
        }
    }
}

async fn receive(socket: &Socket) -> Result<Datagram<FromKeeper>, KeeperError> {
    match socket.receive::<FromKeeper>().await {
        Ok(Some(datagram)) => Ok(datagram),
        Ok(None) => Err(KeeperError::Gone),
        Err(e) => Err(KeeperError::Protocol(e.to_string())),
    }
}

/// Dispatches the keeper's answers and news until the link closes.
async fn read_news(
    socket: Arc<Socket>,
    waiters: Arc<Mutex<WaitersCell>>,
    closed: tokio::sync::watch::Sender<bool>,
) {
    loop {
        let datagram = match receive(&socket).await {
            Ok(datagram) => datagram,
            Err(e) => {
                if !matches!(e, KeeperError::Gone) {
                    tracing::error!("the link to the keeper broke: {e}");
                }
                let mut cell = lock(&waiters);
                cell.gone = true;
                // Dropping the senders wakes every waiter: their runs died with the keeper.
                cell.waiters = Waiters::default();
                closed.send_replace(true);
                return;
            }
        };
        let mut cell = lock(&waiters);
        match datagram.message {
            FromKeeper::Spawned {
                request,
                pid,
                ready,
                audit_session,
            } => {
                let mut fds = datagram.fds;
                let ready = ready
                    .then(|| fds.pop())
                    .flatten()
                    .map(SandboxReady::from_fd);
                let child = cell.watch(pid, None);
                if let Some(reply) = cell.waiters.spawns.remove(&request) {
                    let _ = reply.send(Ok(SpawnedRun {
                        child,
                        fds,
                        ready,
                        audit_session,
                    }));
                }
            }
            FromKeeper::SpawnFailed { request, error } => {
                if let Some(reply) = cell.waiters.spawns.remove(&request) {
                    let _ = reply.send(Err(KeeperError::Spawn(error)));
                }
            }
            FromKeeper::Exited { pid, exit } => {
                if let Some(waiter) = cell.waiters.exits.remove(&pid) {
                    let _ = waiter.send(exit);
                }
            }
            other => tracing::warn!("the keeper sent {other:?} out of turn; ignored"),
        }
    }
}

/// The runs a keeper that ended with no daemon left in `dir` (read once, then removed).
fn left_over(dir: &Path) -> Vec<AdoptedRun> {
    let path = dir.join(LEFTOVER_FILE);
    let frames = match super::read_frames(&path) {
        Ok(frames) => frames,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return vec![],
        Err(e) => {
            tracing::error!(
                "cannot read what the last keeper left in {}: {e}",
                path.display()
            );
            return vec![];
        }
    };
    let mut runs: Vec<AdoptedRun> = vec![];
    for frame in frames {
        match super::wire::decode::<FromKeeper>(&frame) {
            Ok((FromKeeper::Held { run, .. }, _)) => runs.push(AdoptedRun {
                child: KeptChild {
                    pid: run.pid,
                    exit: None,
                    ended: run.exit,
                },
                run,
                fds: vec![],
                output: vec![],
            }),
            Ok((FromKeeper::Output { pid, stream, at_ms }, bytes)) => {
                if let Some(run) = runs.iter_mut().rev().find(|r| r.run.pid == pid) {
                    run.output.push(KeptOutput {
                        stream,
                        at_ms,
                        bytes,
                    });
                }
            }
            Ok(_) | Err(_) => tracing::warn!("skipped a damaged entry of {}", path.display()),
        }
    }
    let _ = std::fs::remove_file(&path);
    runs
}

/// Starts a keeper for `dir` and waits until it listens (it prints one line then).
async fn start(binary: &Path, dir: &Path) -> Result<(), KeeperError> {
    let failed = |source: std::io::Error| KeeperError::Start {
        binary: binary.display().to_string(),
        dir: dir.display().to_string(),
        source,
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("keeper.log"))
        .map_err(failed)?;
    let mut command = tokio::process::Command::new(binary);
    command
        .arg(KEEPER_ARG)
        .arg(dir)
        .env_remove("CELISTRA_LISTEN_FDS")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .kill_on_drop(false);
    let mut child = {
        let _forking = crate::spawn::spawn_lock();
        command.spawn().map_err(failed)?
    };
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| failed(std::io::Error::other("no stdout")))?;
    let mut line = [0u8; 1];
    match tokio::time::timeout(START_LIMIT, stdout.read(&mut line)).await {
        Ok(Ok(1)) => {}
        Ok(_) => {
            return Err(failed(std::io::Error::other(format!(
                "it ended at once; see {}",
                dir.join("keeper.log").display()
            ))));
        }
        Err(_) => {
            return Err(failed(std::io::Error::other(format!(
                "it did not listen within {} s",
                START_LIMIT.as_secs()
            ))));
        }
    }
    // Reaped by the daemon's orphan reaper (or init) when it ends, long after this.
    drop(child);
    Ok(())
}

/// The directory a keeper of state directory `home` uses.
pub fn keeper_dir(home: &Path) -> PathBuf {
    home.join("keeper")
}
