//! Run history and output logs, kept in one SQLite database (`history.db` in the state directory).
//!
//! Agents' output reaches [`History::append`], which never blocks: it queues the chunk for the one
//! writer thread, or drops and counts it when the queue is full. The writer batches chunks into
//! segments (one transaction every 100 ms or 8 MiB), enforces retention by size as it writes and by
//! age every minute, and in idle time merges small segments and adds them to an FTS5 index. Readers
//! use their own connections (WAL mode), so queries never wait for the writer. A damaged database is
//! moved aside and replaced by a fresh one while the daemon keeps running.
//!
//! Environment values never reach this crate: a run is recorded with the names of its variables only.

mod codec;
mod marks;
mod read;
mod schema;
mod segments;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{JoinHandle, Thread};

use bytes::Bytes;
use celistra_core::logtext::Stream;
use celistra_proto::{HistoryHealth, RunCause, RunRecord};
use rusqlite::Connection;

pub use read::{Cursor, LogFilter, Piece};

/// Bytes of output that may wait for the writer; beyond this, output is dropped and counted, so
/// memory stays bounded.
const QUEUE_LIMIT: usize = 12 * 1024 * 1024;
/// Longest an agent's output waits for room in a full queue while the writer is healthy. A program
/// that writes faster than output can be saved is paced to the saving rate, like a program writing
/// to a file; a writer that stalls or fails never holds an agent longer than this.
const MAX_WAIT_FOR_ROOM: std::time::Duration = std::time::Duration::from_millis(250);

/// Errors of the history database.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("history database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("history database is damaged: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Setup(String),
    #[error("the history writer has stopped")]
    Closed,
}

/// How much output to keep; the oldest goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_age_ms: u64,
    pub max_total_bytes: u64,
    pub max_agent_bytes: u64,
}

/// A run as it starts: its record, whose end fields are still empty. A record has no field for
/// environment values, only their names.
#[derive(Debug, Clone)]
pub struct RunStart {
    pub run_id: u64,
    pub record: RunRecord,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunEnd {
    pub ended_ms: u64,
    pub exit_code: Option<i32>,
    pub exit_signal: Option<String>,
    pub cause: RunCause,
    pub stopped_by: Option<String>,
    /// Why it ended, classified (absent for an operator's stop).
    pub exit_class: Option<celistra_proto::ExitClass>,
}

/// Something the daemon should announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryEvent {
    /// Output of `agent_id` was not saved.
    Dropped {
        agent_id: String,
        bytes: u64,
        reason: String,
    },
    /// Saving works again after drops.
    Recovered { dropped_bytes: u64 },
    /// The database was damaged and replaced by a fresh one.
    Reset { moved_to: String, reason: String },
}

pub(crate) enum Message {
    RunStarted(Box<RunStart>),
    RunEnded {
        run_id: u64,
        end: RunEnd,
    },
    Output {
        agent_id: Arc<str>,
        run_id: u64,
        stream: Stream,
        time_ms: u64,
        bytes: Bytes,
    },
    Clear {
        agent_id: String,
        reply: mpsc::SyncSender<Result<u64, String>>,
    },
    SetLimits(Limits),
    /// Writes everything queued before it, then replies.
    Sync(mpsc::SyncSender<()>),
    /// A reader filled `Inner::damaged`: the writer looks at it now rather than at its next wake.
    DamageFound,
    Stop,
}

/// State shared by the handle, the writer and the readers.
pub(crate) struct Inner {
    path: PathBuf,
    queued: AtomicUsize,
    /// Output dropped because the queue was full, per agent, not yet seen by the writer.
    queue_drops: Mutex<HashMap<Arc<str>, u64>>,
    health: Mutex<HistoryHealth>,
    /// Woken when the writer has taken output off the queue.
    room: tokio::sync::Notify,
    /// Whether output is being saved (the database is open and writes succeed).
    saving: AtomicBool,
    /// Bumped after every commit of output; followers wait on it.
    flushed: tokio::sync::watch::Sender<u64>,
    /// Bumped after every write to the database (output, and maintenance's merges and index);
    /// the checkpointer compares it with the write it last copied.
    writes: AtomicU64,
    /// The checkpoint thread, woken by a write: with nothing new to copy it sleeps.
    checkpointer: OnceLock<Thread>,
    /// Bumped when the file is replaced; pooled readers of an older generation are discarded.
    generation: AtomicU64,
    readers: Mutex<Vec<(u64, Connection)>>,
    /// Set by the start-up check when the file is damaged; the writer then replaces it.
    damaged: Mutex<Option<String>>,
    last_run_id: AtomicU64,
    /// Until when (ms since the epoch) output counts as flowing; background copying waits for it.
    busy_until: AtomicU64,
    stopping: AtomicBool,
    /// Set by [`History::leave`]: the WAL stays as it is for the next process, uncopied.
    keep_wal: AtomicBool,
}

impl Inner {
    /// Announces a commit of output to followers and to the checkpointer.
    fn committed(&self) {
        self.flushed.send_modify(|n| *n += 1);
        self.wrote();
    }

    /// Announces a write to the checkpointer.
    fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::SeqCst);
        if let Some(checkpointer) = self.checkpointer.get() {
            checkpointer.unpark();
        }
    }
}

/// Wall-clock time in ms since the epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The history database; cheap to clone.
#[derive(Clone)]
pub struct History {
    inner: Arc<Inner>,
    sender: Sender<Message>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl History {
    /// Opens (or creates) the database at `path` and starts its writer. A damaged file is moved aside
    /// and replaced at once; if no database can be opened at all, output is dropped and counted until
    /// one can. Announcements go to `events`.
    pub fn open(
        path: &Path,
        limits: Limits,
        events: tokio::sync::mpsc::UnboundedSender<HistoryEvent>,
        now_ms: u64,
    ) -> History {
        let inner = Arc::new(Inner {
            path: path.to_owned(),
            queued: AtomicUsize::new(0),
            queue_drops: Mutex::new(HashMap::new()),
            health: Mutex::new(HistoryHealth::default()),
            room: tokio::sync::Notify::new(),
            saving: AtomicBool::new(false),
            flushed: tokio::sync::watch::channel(0).0,
            writes: AtomicU64::new(0),
            checkpointer: OnceLock::new(),
            generation: AtomicU64::new(0),
            readers: Mutex::new(Vec::new()),
            damaged: Mutex::new(None),
            // Run ids are microseconds since the epoch (made unique), so they stay unique even
            // across a database that was replaced.
            last_run_id: AtomicU64::new(now_ms.saturating_mul(1000)),
            busy_until: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            keep_wal: AtomicBool::new(false),
        });
        let (sender, receiver) = mpsc::channel();
        let mut writer = writer::Writer::new(Arc::clone(&inner), receiver, limits, events);
        writer.open(now_ms);
        let mut threads = vec![];
        let spawned = std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || writer.run());
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(e) => tracing::error!("cannot start the history writer: {e}; output is not saved"),
        }
        let checkpointer = Arc::clone(&inner);
        if let Ok(handle) = std::thread::Builder::new()
            .name("history-checkpoint".into())
            .spawn(move || schema::checkpoint_loop(&checkpointer))
        {
            let _ = inner.checkpointer.set(handle.thread().clone());
            threads.push(handle);
        }
        History {
            inner,
            sender,
            threads: Arc::new(Mutex::new(threads)),
        }
    }

    /// A new run id, unique and increasing.
    pub fn next_run_id(&self, now_ms: u64) -> u64 {
        let candidate = now_ms.saturating_mul(1000);
        let previous = self
            .inner
            .last_run_id
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(candidate.max(last + 1))
            })
            .unwrap_or(candidate);
        candidate.max(previous + 1)
    }

    pub fn run_started(&self, start: RunStart) {
        let _ = self.sender.send(Message::RunStarted(Box::new(start)));
    }

    pub fn run_ended(&self, run_id: u64, end: RunEnd) {
        let _ = self.sender.send(Message::RunEnded { run_id, end });
    }

    /// Waits until the queue has room for `len` more bytes, for at most 250 ms, and only while output
    /// is being saved: with a failing disk, output is dropped at once and the agent never waits.
    pub async fn room_for(&self, len: usize) {
        let deadline = tokio::time::Instant::now() + MAX_WAIT_FOR_ROOM;
        loop {
            let mut taken = std::pin::pin!(self.inner.room.notified());
            taken.as_mut().enable();
            if self.inner.queued.load(Ordering::SeqCst) + len <= QUEUE_LIMIT
                || !self.inner.saving.load(Ordering::SeqCst)
            {
                return;
            }
            if tokio::time::timeout_at(deadline, taken).await.is_err() {
                return;
            }
        }
    }

    /// Queues a chunk of output. Never blocks: when the queue is full, the chunk is dropped and
    /// counted (`room_for` first gives a healthy writer the chance to catch up).
    pub fn append(
        &self,
        agent_id: &Arc<str>,
        run_id: u64,
        stream: Stream,
        time_ms: u64,
        bytes: Bytes,
    ) {
        let len = bytes.len();
        let queued = self.inner.queued.fetch_add(len, Ordering::SeqCst);
        if queued + len > QUEUE_LIMIT {
            self.inner.queued.fetch_sub(len, Ordering::SeqCst);
            *lock(&self.inner.queue_drops)
                .entry(Arc::clone(agent_id))
                .or_default() += len as u64;
            return;
        }
        let message = Message::Output {
            agent_id: Arc::clone(agent_id),
            run_id,
            stream,
            time_ms,
            bytes,
        };
        if self.sender.send(message).is_err() {
            self.inner.queued.fetch_sub(len, Ordering::SeqCst);
        }
    }

    /// Deletes every saved byte of an agent's output; returns how many. Blocks until done.
    pub fn clear(&self, agent_id: &str) -> Result<u64, Error> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.sender
            .send(Message::Clear {
                agent_id: agent_id.to_owned(),
                reply,
            })
            .map_err(|_| Error::Closed)?;
        answer
            .recv()
            .map_err(|_| Error::Closed)?
            .map_err(Error::Setup)
    }

    pub fn set_limits(&self, limits: Limits) {
        let _ = self.sender.send(Message::SetLimits(limits));
    }

    /// Waits until everything queued so far is written (or dropped). Blocks.
    pub fn sync(&self) -> Result<(), Error> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.sender
            .send(Message::Sync(reply))
            .map_err(|_| Error::Closed)?;
        answer.recv().map_err(|_| Error::Closed)
    }

    /// A receiver that changes after every commit.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.flushed.subscribe()
    }

    pub fn health(&self) -> HistoryHealth {
        lock(&self.inner.health).clone()
    }

    /// Writes what is queued and stops the writer, copying the WAL into the database. Blocks.
    pub fn close(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        let _ = self.sender.send(Message::Stop);
        let threads = std::mem::take(&mut *lock(&self.threads));
        for thread in threads {
            // The checkpointer sleeps between looks at the WAL: wake it to see `stopping`.
            thread.thread().unpark();
            let _ = thread.join();
        }
        let readers = std::mem::take(&mut *lock(&self.inner.readers));
        for (_, reader) in &readers {
            schema::keep_wal_on_close(reader, &self.inner);
        }
    }

    /// [`History::close`] for a process that hands the database to the next one at once (an
    /// upgrade): the WAL is left for it to open, not copied and truncated, which on a WAL of some
    /// MiB takes tens of milliseconds of fsync and truncation.
    pub fn leave(&self) {
        self.inner.keep_wal.store(true, Ordering::SeqCst);
        self.close();
    }
}
