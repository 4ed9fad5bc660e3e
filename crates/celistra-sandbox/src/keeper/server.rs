//! The keeper process (`celistra-keeper __keeper DIR`, or `celistrad __keeper DIR` where that
//! binary is not installed): the parent of every agent. It spawns them for the daemon, holds a
//! copy of each run's terminal (or pipes), reaps them, and while no daemon is connected reads
//! their output into a bounded buffer so that they never block, noting when each byte came. The
//! next daemon takes everything over with `Hello`. It exits once it holds no live run and no
//! daemon is connected, leaving what the next daemon must still learn (exit statuses, unread
//! output) in `leftover` beside its socket.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::wire::{
    CHUNK, Datagram, FromKeeper, HeldRun, KeptExit, Listener, OutputStream, Socket, ToKeeper,
    borrow_all,
};
use super::{LEFTOVER_FILE, LOCK_FILE, SOCKET_FILE, now_ms};
use crate::{Child, DeathGuard, ExitInfo, PtySize, Wake};

/// Output kept per run while no daemon reads it; the rest is read, dropped and counted.
pub const KEPT_PER_RUN: usize = 8 * 1024 * 1024;

/// Longest wait for a run's last output once its leader exited and no daemon is there.
const DRAIN_LIMIT: Duration = Duration::from_millis(500);

/// How long the keeper must have had nothing to do before it gives back its code pages and its
/// heap's free memory, as the daemon does (`code_pages.rs` there): what it spawned with, and the
/// requests of a burst of spawns, are not needed while its agents just run.
const QUIET: Duration = Duration::from_secs(10);

/// Output read while no daemon was connected.
#[derive(Default)]
struct Kept {
    chunks: VecDeque<(OutputStream, u64, Vec<u8>)>,
    bytes: usize,
    dropped: u64,
}

/// One run the keeper holds.
struct Held {
    /// Its `note` is `null`: see `note`.
    run: HeldRun,
    /// What the daemon noted with the run, as JSON text: parsed, it was a tree of small
    /// allocations (maps, strings) kept for the run's whole life.
    note: Box<str>,
    outputs: Vec<(OutputStream, Arc<AsyncFd<OwnedFd>>)>,
    input: Option<OwnedFd>,
    /// The agent's cgroup: what its leader leaves behind is killed when no daemon does it.
    cgroup: Option<PathBuf>,
    kept: Arc<Mutex<Kept>>,
    readers: Vec<JoinHandle<()>>,
    /// Set while the run is a standby nobody woke yet.
    wake: Option<Wake>,
}

impl Held {
    /// The run as a daemon is told of it, with `dropped` bytes of its output not kept.
    fn told(&self, dropped: u64) -> HeldRun {
        HeldRun {
            dropped_bytes: dropped,
            note: serde_json::from_str(&self.note).unwrap_or_default(),
            ..self.run.clone()
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts reading every output into the buffer (no daemon reads them now).
    fn read_unattended(&mut self) {
        if !self.readers.is_empty() {
            return;
        }
        for (stream, fd) in &self.outputs {
            self.readers.push(tokio::spawn(keep_output(
                *stream,
                Arc::clone(fd),
                Arc::clone(&self.kept),
            )));
        }
    }

    /// Stops reading: a daemon reads from here on.
    fn stop_reading(&mut self) {
        for reader in self.readers.drain(..) {
            reader.abort();
        }
    }

    /// The descriptors a daemon needs, duplicated: outputs (the master of a PTY), then stdin.
    fn descriptors(&self) -> Vec<OwnedFd> {
        let mut fds: Vec<OwnedFd> = self
            .outputs
            .iter()
            .filter_map(|(_, fd)| fd.get_ref().try_clone().ok())
            .collect();
        if let Some(input) = self.input.as_ref().and_then(|i| i.try_clone().ok()) {
            fds.push(input);
        }
        fds
    }

    /// Kills what the ended run left behind, as the daemon would.
    fn kill_leftovers(&self) {
        let _ = crate::signal_group(self.run.pid, libc::SIGKILL);
        if let Some(cgroup) = &self.cgroup {
            crate::cgroup::kill_all(cgroup, crate::CgroupVersion::V2);
        }
    }
}

/// Reads one output into `kept` until it ends (for a PTY: EIO once nothing holds its terminal).
async fn keep_output(stream: OutputStream, fd: Arc<AsyncFd<OwnedFd>>, kept: Arc<Mutex<Kept>>) {
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let Ok(mut ready) = fd.readable().await else {
            return;
        };
        match ready.try_io(|fd| rustix::io::read(fd.get_ref(), &mut buffer).map_err(Into::into)) {
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(n)) => {
                let mut kept = kept.lock().unwrap_or_else(PoisonError::into_inner);
                if kept.bytes + n > KEPT_PER_RUN {
                    kept.dropped += n as u64;
                } else {
                    kept.bytes += n;
                    kept.chunks
                        .push_back((stream, now_ms(), buffer[..n].to_vec()));
                }
            }
            Err(_would_block) => {}
        }
    }
}

enum Event {
    Connected(Socket),
    Request(u64, Datagram<ToKeeper>),
    Disconnected(u64),
    Exited(u32, ExitInfo),
}

struct Keeper {
    dir: PathBuf,
    runs: BTreeMap<u32, Held>,
    link: Option<(u64, Arc<Socket>, JoinHandle<()>)>,
    generation: u64,
    exiting: bool,
    guard: Option<DeathGuard>,
    unattended_since: Option<u64>,
    events: mpsc::UnboundedSender<Event>,
}

/// Runs the keeper in `dir` until it holds nothing. Returns the process's exit code. `ready` is
/// told once the socket listens.
pub async fn serve(dir: &Path, ready: impl FnOnce()) -> i32 {
    let _ = rustix::process::setsid();
    if let Err(e) = crate::become_subreaper() {
        tracing::warn!("the keeper cannot become the subreaper of agents' orphans: {e}");
    }
    let lock = match lock(dir) {
        Ok(lock) => lock,
        Err(e) => {
            tracing::error!("keeper in {}: {e}", dir.display());
            return 1;
        }
    };
    let listener = match Listener::bind(&dir.join(SOCKET_FILE)) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("keeper: cannot listen in {}: {e}", dir.display());
            return 1;
        }
    };
    let (events, mut incoming) = mpsc::unbounded_channel();
    let accepting = tokio::spawn(accept(listener, events.clone()));
    let reaping = tokio::spawn(reap_orphans_forever());
    ready();
    let mut keeper = Keeper {
        dir: dir.to_path_buf(),
        runs: BTreeMap::new(),
        link: None,
        generation: 0,
        exiting: false,
        guard: None,
        unattended_since: None,
        events,
    };
    // A keeper no daemon connects to does not linger.
    let first = tokio::time::timeout(Duration::from_secs(30), incoming.recv()).await;
    let mut next = match first {
        Ok(Some(event)) => Some(event),
        _ => None,
    };
    while let Some(event) = next {
        if keeper.handle(event).await {
            break;
        }
        next = next_or_release_when_quiet(&mut incoming).await;
    }
    accepting.abort();
    reaping.abort();
    let _ = std::fs::remove_file(dir.join(SOCKET_FILE));
    drop(keeper.guard.take());
    drop(lock);
    0
}

/// The next event; if none comes for [`QUIET`], the memory a burst of work left resident goes
/// back first (the code pages come back from the page cache when they run again).
async fn next_or_release_when_quiet(
    incoming: &mut mpsc::UnboundedReceiver<Event>,
) -> Option<Event> {
    match tokio::time::timeout(QUIET, incoming.recv()).await {
        Ok(event) => event,
        Err(_) => {
            if let Err(e) = crate::release_idle_memory() {
                tracing::debug!("the keeper's code pages stay: {e}");
            }
            incoming.recv().await
        }
    }
}

fn lock(dir: &Path) -> std::io::Result<OwnedFd> {
    let file = rustix::fs::open(
        dir.join(LOCK_FILE),
        rustix::fs::OFlags::CREATE | rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::from_raw_mode(0o600),
    )?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| std::io::Error::other("another keeper holds this state directory's agents"))?;
    // Who holds the agents, for an operator (and the tests) to find.
    rustix::fs::ftruncate(&file, 0)?;
    rustix::io::write(&file, format!("{}\n", std::process::id()).as_bytes())?;
    Ok(file)
}

async fn accept(listener: Listener, events: mpsc::UnboundedSender<Event>) {
    let own_uid = rustix::process::geteuid().as_raw();
    loop {
        match listener.accept().await {
            // Only the daemon's own user may take its agents over.
            Ok(socket) if socket.peer_uid().ok() == Some(own_uid) => {
                if events.send(Event::Connected(socket)).is_err() {
                    return;
                }
            }
            Ok(_) => tracing::warn!("keeper: refused a connection from another user"),
            Err(e) => {
                tracing::warn!("keeper: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn reap_orphans_forever() {
    let Ok(mut children) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
    else {
        return;
    };
    while children.recv().await.is_some() {
        crate::reap_orphans();
    }
}

async fn read_requests(generation: u64, socket: Arc<Socket>, events: mpsc::UnboundedSender<Event>) {
    loop {
        match socket.receive::<ToKeeper>().await {
            Ok(Some(request)) => {
                if events.send(Event::Request(generation, request)).is_err() {
                    return;
                }
            }
            Ok(None) | Err(_) => {
                let _ = events.send(Event::Disconnected(generation));
                return;
            }
        }
    }
}

impl Keeper {
    /// Handles one event; true when the keeper is done.
    async fn handle(&mut self, event: Event) -> bool {
        match event {
            Event::Connected(socket) => {
                // The newest connection wins: the daemon's lock on its state directory makes it
                // the only daemon, so an older connection is a daemon that is gone.
                self.detach();
                self.generation += 1;
                let socket = Arc::new(socket);
                let reader = tokio::spawn(read_requests(
                    self.generation,
                    Arc::clone(&socket),
                    self.events.clone(),
                ));
                self.link = Some((self.generation, socket, reader));
                false
            }
            Event::Request(generation, request) => {
                if self.link.as_ref().is_some_and(|(g, ..)| *g == generation) {
                    self.request(request).await;
                }
                self.done()
            }
            Event::Disconnected(generation) => {
                if self.link.as_ref().is_some_and(|(g, ..)| *g == generation) {
                    self.detach();
                }
                self.finish_if_idle().await
            }
            Event::Exited(pid, exit) => {
                let exit = KeptExit {
                    code: exit.code,
                    signal: exit.signal,
                    at_ms: now_ms(),
                };
                let attended = self.link.is_some();
                if self.runs.get(&pid).is_some_and(|held| held.wake.is_some()) {
                    // A standby nobody woke: nothing of an agent ran, nothing is to be told later.
                    self.runs.remove(&pid);
                } else if let Some(held) = self.runs.get_mut(&pid) {
                    held.run.exit = Some(exit);
                    if !attended {
                        held.kill_leftovers();
                    }
                }
                if let Some((_, socket, _)) = &self.link {
                    let _ = socket
                        .send(&FromKeeper::Exited { pid, exit }, &[], &[])
                        .await;
                }
                self.finish_if_idle().await
            }
        }
    }

    /// No daemon reads any more: keep every run's output from now on. Standbys end: only the
    /// daemon that asked for them knows what they are for.
    fn detach(&mut self) {
        if let Some((_, _, reader)) = self.link.take() {
            reader.abort();
            self.discard_standbys();
            self.unattended_since = Some(now_ms());
            for held in self.runs.values_mut() {
                held.run.unattended_since_ms = self.unattended_since;
                held.read_unattended();
            }
        }
    }

    /// Ends every standby nobody woke, and forgets them: their wake pipes close, so their agent
    /// processes exit without running anything, and the kill ends each sandbox at once. Only
    /// their process groups, never the cgroup, which a standby shares with its agent's run.
    fn discard_standbys(&mut self) {
        self.runs.retain(|&pid, held| {
            if held.wake.is_none() {
                return true;
            }
            let _ = crate::signal_group(pid, libc::SIGKILL);
            false
        });
    }

    fn live_runs(&self) -> usize {
        self.runs.values().filter(|h| h.run.exit.is_none()).count()
    }

    fn done(&self) -> bool {
        let done = self.exiting && self.runs.is_empty();
        if done {
            tracing::info!("keeper: the daemon stopped every agent; exiting");
        }
        done
    }

    /// With no daemon and no live run, leaves what is held for the next daemon and ends.
    async fn finish_if_idle(&mut self) -> bool {
        if self.link.is_some() || self.live_runs() > 0 {
            return self.done();
        }
        if self.runs.is_empty() {
            tracing::info!("keeper: no daemon and no run to hold; exiting");
            let _ = std::fs::remove_file(self.dir.join(LEFTOVER_FILE));
            return true;
        }
        // Their last words: the readers end at EIO or EOF once nothing holds the terminal.
        for held in self.runs.values_mut() {
            let readers = std::mem::take(&mut held.readers);
            let _ = tokio::time::timeout(DRAIN_LIMIT, futures_join(readers)).await;
        }
        tracing::info!(
            runs = self.runs.len(),
            "keeper: no daemon and every run ended; leaving their ends for the next daemon"
        );
        if let Err(e) = self.write_leftover() {
            tracing::error!(
                "keeper: cannot save the agents' exit statuses in {}: {e}",
                self.dir.display()
            );
        }
        true
    }

    /// Writes every held run and its kept output, as the frames a `Hello` would send.
    fn write_leftover(&self) -> std::io::Result<()> {
        let mut frames = Vec::new();
        for held in self.runs.values() {
            let kept = held.kept();
            let run = held.told(kept.dropped);
            frames.push(super::wire::encode(
                &FromKeeper::Held {
                    run,
                    descriptors: 0,
                },
                &[],
            )?);
            for (stream, at_ms, bytes) in &kept.chunks {
                frames.push(super::wire::encode(
                    &FromKeeper::Output {
                        pid: held.run.pid,
                        stream: *stream,
                        at_ms: *at_ms,
                    },
                    bytes,
                )?);
            }
        }
        super::write_frames(&self.dir.join(LEFTOVER_FILE), &frames)
    }

    async fn request(&mut self, datagram: Datagram<ToKeeper>) {
        let Some((_, socket, _)) = &self.link else {
            return;
        };
        let socket = Arc::clone(socket);
        match datagram.message {
            ToKeeper::Hello => self.welcome(&socket).await,
            ToKeeper::Guard { cgroup } => {
                if self.guard.is_none() {
                    match DeathGuard::for_cgroup(&cgroup) {
                        Ok(guard) => self.guard = Some(guard),
                        Err(e) => tracing::warn!("keeper: cannot start the death guard: {e}"),
                    }
                }
            }
            ToKeeper::Spawn {
                request,
                agent_id,
                run_id,
                launch,
                pty,
                note,
                standby,
            } => {
                let listener = datagram.fds.first().map(AsFd::as_fd);
                let answer = self.spawn(agent_id, run_id, &launch, pty, listener, note, standby);
                let sent = match answer {
                    Ok(Started {
                        pid,
                        fds,
                        ready,
                        audit_session,
                    }) => {
                        socket
                            .send(
                                &FromKeeper::Spawned {
                                    request,
                                    pid,
                                    ready,
                                    audit_session,
                                },
                                &[],
                                &borrow_all(&fds),
                            )
                            .await
                    }
                    Err(error) => {
                        socket
                            .send(&FromKeeper::SpawnFailed { request, error }, &[], &[])
                            .await
                    }
                };
                if let Err(e) = sent {
                    tracing::warn!("keeper: cannot answer a spawn: {e}");
                }
            }
            ToKeeper::Wake { pid, run_id, note } => {
                if let Some(held) = self.runs.get_mut(&pid)
                    && let Some(wake) = held.wake.take()
                {
                    held.run.run_id = run_id;
                    held.note = note.to_string().into_boxed_str();
                    if let Err(e) = wake.wake() {
                        tracing::warn!("keeper: cannot wake standby {pid}: {e}");
                    }
                }
            }
            ToKeeper::Forget { pid } => {
                if let Some(mut held) = self.runs.remove(&pid) {
                    held.stop_reading();
                }
            }
            ToKeeper::HangUp { pid } => {
                if let Some(held) = self.runs.get_mut(&pid) {
                    held.stop_reading();
                    held.outputs.clear();
                    held.input = None;
                }
            }
            ToKeeper::Exit => {
                self.discard_standbys();
                self.exiting = true;
            }
        }
    }

    /// Hands every run over to the daemon that just said hello.
    async fn welcome(&mut self, socket: &Socket) {
        let keeper_pid = std::process::id();
        if socket
            .send(
                &FromKeeper::Welcome {
                    keeper_pid,
                    standbys: true,
                },
                &[],
                &[],
            )
            .await
            .is_err()
        {
            return;
        }
        for held in self.runs.values_mut() {
            // Single-threaded: no reader runs again once aborted, so what is kept is all.
            held.stop_reading();
            let fds = held.descriptors();
            let (run, chunks) = {
                let mut kept = held.kept();
                let run = held.told(kept.dropped);
                kept.bytes = 0;
                kept.dropped = 0;
                (run, std::mem::take(&mut kept.chunks))
            };
            let held_message = FromKeeper::Held {
                run,
                descriptors: fds.len(),
            };
            if socket
                .send(&held_message, &[], &borrow_all(&fds))
                .await
                .is_err()
            {
                return;
            }
            for (stream, at_ms, bytes) in chunks {
                let output = FromKeeper::Output {
                    pid: held.run.pid,
                    stream,
                    at_ms,
                };
                if socket.send(&output, &bytes, &[]).await.is_err() {
                    return;
                }
            }
            held.run.unattended_since_ms = None;
        }
        self.unattended_since = None;
        let _ = socket.send(&FromKeeper::WelcomeDone, &[], &[]).await;
    }

    /// Spawns a run (a `standby` waits to be woken); answers its pid, the daemon's descriptors
    /// and whether the last one is the sandbox's readiness pipe.
    #[allow(
        clippy::too_many_arguments,
        reason = "the fields of one `ToKeeper::Spawn`, taken apart by the caller's match"
    )]
    fn spawn(
        &mut self,
        agent_id: String,
        run_id: u64,
        launch: &crate::Launch,
        pty: Option<(u16, u16)>,
        listener: Option<BorrowedFd<'_>>,
        note: serde_json::Value,
        standby: bool,
    ) -> Result<Started, String> {
        let (child, outputs, input, ready, wake) = match pty {
            Some((rows, cols)) => {
                let spawned = launch
                    .spawn_in_pty(PtySize { rows, cols }, listener, standby)
                    .map_err(|e| e.to_string())?;
                let master = spawned
                    .pty
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(|e| e.to_string())?;
                (
                    spawned.child,
                    vec![(OutputStream::Pty, master)],
                    None,
                    spawned.ready,
                    spawned.wake,
                )
            }
            None => {
                let spawned = launch
                    .spawn_with_pipes(listener, standby)
                    .map_err(|e| e.to_string())?;
                let stdout = spawned
                    .stdout
                    .into_nonblocking_fd()
                    .map_err(|e| e.to_string())?;
                let stderr = spawned
                    .stderr
                    .into_nonblocking_fd()
                    .map_err(|e| e.to_string())?;
                let stdin = spawned
                    .stdin
                    .into_nonblocking_fd()
                    .map_err(|e| e.to_string())?;
                (
                    spawned.child,
                    vec![
                        (OutputStream::Stdout, stdout),
                        (OutputStream::Stderr, stderr),
                    ],
                    Some(stdin),
                    spawned.ready,
                    spawned.wake,
                )
            }
        };
        let pid = child.pid();
        // The child is not reaped before `wait_for` runs, so its session is readable even if it
        // already ended.
        let audit_session = launch
            .starts_audit_session()
            .then(|| crate::audit_session_of(pid))
            .flatten();
        let outputs = outputs
            .into_iter()
            .map(|(stream, fd)| {
                super::wire::register(fd, tokio::io::Interest::READABLE)
                    .map(|fd| (stream, Arc::new(fd)))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let held = Held {
            run: HeldRun {
                agent_id,
                run_id,
                pid,
                pty: pty.is_some(),
                exit: None,
                dropped_bytes: 0,
                unattended_since_ms: None,
                note: serde_json::Value::Null,
            },
            note: note.to_string().into_boxed_str(),
            outputs,
            input,
            cgroup: launch.cgroup().map(Path::to_path_buf),
            kept: Arc::default(),
            readers: Vec::new(),
            wake,
        };
        let mut fds = held.descriptors();
        let has_ready = ready.is_some();
        if let Some(ready) = ready {
            fds.push(ready.into_fd());
        }
        self.runs.insert(pid, held);
        tokio::spawn(wait_for(child, self.events.clone()));
        Ok(Started {
            pid,
            fds,
            ready: has_ready,
            audit_session,
        })
    }
}

/// A run the keeper just started, as the daemon is told of it.
struct Started {
    pid: u32,
    /// Its output (and input) descriptors, then its readiness pipe if `ready`.
    fds: Vec<OwnedFd>,
    ready: bool,
    audit_session: Option<u32>,
}

async fn wait_for(mut child: Child, events: mpsc::UnboundedSender<Event>) {
    let pid = child.pid();
    let exit = child.wait().await.unwrap_or(ExitInfo {
        code: None,
        signal: None,
    });
    let _ = events.send(Event::Exited(pid, exit));
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for handle in handles {
        let _ = handle.await;
    }
}
