//! The one writer thread: it batches output into segments, records runs, enforces retention, merges
//! small segments, feeds the search index in idle time, and replaces a damaged database. A checkpoint
//! thread copies the WAL into the main file beside it, so large bursts are not slowed by checkpoints.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use celistra_core::logtext::Stream;
use rusqlite::{Connection, params};

use crate::marks::{self, Mark};
use crate::schema;
use crate::segments::{
    Packing, SEGMENT_MAX, SETTLE_MS, SMALL_SEGMENT, Segment, compress_deferred, delete_oldest,
    delete_where, index_some, merge_small, write_segments,
};
use crate::{Error, HistoryEvent, Inner, Limits, Message, RunEnd, RunStart, lock, now_ms};

/// How long output may wait in memory before it is committed: what a kill -9 can lose.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Pending output that triggers a commit before the interval is up.
const FLUSH_BYTES: usize = 4 * 1024 * 1024;
/// A partial last line waits this long for its end before it is written as it is.
const PARTIAL_LINE_WAIT_MS: u64 = 1_000;
/// Idle-time work waits until output has been quiet this long: bursts get the whole writer.
const QUIET_BEFORE_MAINTENANCE: Duration = Duration::from_millis(500);
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);
/// Output that never pauses still gets a maintenance step this often, so age retention, compression
/// and indexing keep up with an agent that logs all the time.
const MAINTENANCE_AT_LEAST_EVERY: Duration = Duration::from_secs(5);
const AGE_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Minimum time between two `logs_dropped` events.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(5);
/// How often to retry opening a database that could not be opened.
const REOPEN_INTERVAL: Duration = Duration::from_secs(10);

/// Output of one run of one agent that is not committed yet.
struct Pending {
    agent_id: Arc<str>,
    run_id: u64,
    pos: u64,
    bytes: Vec<u8>,
    marks: Vec<Mark>,
    /// The run has ended: no more output is expected, so a partial line need not wait.
    complete: bool,
}

#[derive(Default)]
struct AgentLog {
    /// Position of the next byte this agent writes.
    next_pos: u64,
    /// Bytes kept in the database.
    stored: u64,
}

pub(crate) struct Writer {
    inner: Arc<Inner>,
    receiver: Receiver<Message>,
    limits: Limits,
    events: tokio::sync::mpsc::UnboundedSender<HistoryEvent>,
    conn: Option<Connection>,
    last_open_attempt: Option<Instant>,
    /// Current pending output per agent, and older ones (of runs that ended) waiting for the commit.
    pending: HashMap<Arc<str>, Pending>,
    finished: Vec<Pending>,
    pending_bytes: usize,
    oldest_pending: Option<Instant>,
    agents: HashMap<Arc<str>, AgentLog>,
    total_stored: u64,
    /// Bytes kept but not yet in the search index.
    unindexed: u64,
    /// When the oldest segment not yet in the index has settled (small output is merged and
    /// indexed only then); `None` with everything indexed.
    unindexed_settles_at: Option<Instant>,
    /// Bytes kept as they came (a burst), not yet compressed.
    uncompressed: u64,
    /// Runs that have not ended, kept to re-record them in a replacement database. Boxed: the
    /// table keeps room for more runs than it holds, a pointer each rather than 296 bytes.
    open_runs: HashMap<u64, Box<RunStart>>,
    /// Why saving fails, while it does; and what was dropped meanwhile.
    failing: Option<String>,
    dropped_while_failing: u64,
    unreported_drops: HashMap<Arc<str>, (u64, String)>,
    last_drop_report: Option<Instant>,
    dropped_total: u64,
    last_maintenance: Instant,
    last_output: Option<Instant>,
    last_age_sweep: Option<Instant>,
    maintenance_behind: bool,
    /// Output was committed or cleared since the last maintenance step: there may be segments to
    /// merge. Without it, and with everything indexed and compressed, an idle writer does no work
    /// and sleeps until the next age sweep, so an idle daemon's SQLite code stays paged out.
    changed_since_maintenance: bool,
    /// The start-up check of the file's structure, while it runs: the writer looks at its verdict.
    check: Option<std::thread::JoinHandle<()>>,
    /// A run with pending output ended since the last commit.
    run_ended: bool,
}

impl Writer {
    pub(crate) fn new(
        inner: Arc<Inner>,
        receiver: Receiver<Message>,
        limits: Limits,
        events: tokio::sync::mpsc::UnboundedSender<HistoryEvent>,
    ) -> Writer {
        Writer {
            inner,
            receiver,
            limits,
            events,
            conn: None,
            last_open_attempt: None,
            pending: HashMap::new(),
            finished: Vec::new(),
            pending_bytes: 0,
            oldest_pending: None,
            agents: HashMap::new(),
            total_stored: 0,
            unindexed: 0,
            unindexed_settles_at: None,
            uncompressed: 0,
            open_runs: HashMap::new(),
            failing: None,
            dropped_while_failing: 0,
            unreported_drops: HashMap::new(),
            last_drop_report: None,
            dropped_total: 0,
            last_maintenance: Instant::now(),
            last_output: None,
            last_age_sweep: None,
            maintenance_behind: true,
            changed_since_maintenance: true,
            check: None,
            run_ended: false,
        }
    }

    /// Opens the database, replacing a damaged or unreadable file with a fresh one.
    pub(crate) fn open(&mut self, now_ms: u64) {
        self.last_open_attempt = Some(Instant::now());
        let path = self.inner.path.clone();
        let opened = schema::open_writer(&path).and_then(|conn| {
            self.load(&conn)?;
            Ok(conn)
        });
        match opened {
            Ok(conn) => {
                self.conn = Some(conn);
                self.start_check();
            }
            Err(error) if path.exists() && replaceable(&error) => {
                self.replace(&error.to_string(), now_ms);
            }
            Err(error) => {
                tracing::error!(
                    "cannot open {}: {error}; output is not saved until it can be",
                    path.display()
                );
                self.fail(error.to_string());
            }
        }
        self.publish_health();
    }

    /// Reads what the writer keeps in memory, and closes runs that a daemon crash left open.
    fn load(&mut self, conn: &Connection) -> Result<(), Error> {
        self.total_stored = 0;
        let mut statement = conn.prepare(
            "SELECT agent_id, SUM(stored), MAX(pos + len) FROM segments GROUP BY agent_id",
        )?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (agent_id, stored, end) = row?;
            let log = self.agents.entry(Arc::from(agent_id)).or_default();
            log.stored = stored.max(0) as u64;
            log.next_pos = log.next_pos.max(end.max(0) as u64);
            self.total_stored += log.stored;
        }
        let max_run: Option<i64> = conn.query_row("SELECT MAX(id) FROM runs", [], |r| r.get(0))?;
        if let Some(max_run) = max_run {
            self.inner
                .last_run_id
                .fetch_max(max_run.max(0) as u64, Ordering::SeqCst);
        }
        // Runs still open were cut short by a crash of the daemon: they ended with their last output.
        conn.execute(
            "UPDATE runs SET cause = 'daemon-lost', ended_ms = MAX(started_ms, \
             COALESCE((SELECT MAX(t_last) FROM segments WHERE run_id = runs.id), started_ms)) \
             WHERE ended_ms IS NULL AND id NOT IN (SELECT value FROM json_each(?1))",
            [
                serde_json::to_string(&self.open_runs.keys().collect::<Vec<_>>())
                    .unwrap_or_default(),
            ],
        )?;
        Ok(())
    }

    /// Runs the full structural check of the file on a thread of its own; a damaged file is replaced
    /// by the writer when the check reports.
    fn start_check(&mut self) {
        let inner = Arc::clone(&self.inner);
        let generation = inner.generation.load(Ordering::SeqCst);
        self.check = std::thread::Builder::new()
            .name("history-check".into())
            .spawn(move || {
                let result = schema::open_reader(&inner.path).and_then(|conn| schema::check(&conn));
                if let Err(error) = result
                    && schema::is_damage(&error)
                    && inner.generation.load(Ordering::SeqCst) == generation
                {
                    *lock(&inner.damaged) = Some(error.to_string());
                }
            })
            .ok();
    }

    /// Moves the damaged file aside and starts a fresh one, keeping the runs that are still open.
    fn replace(&mut self, reason: &str, now_ms: u64) {
        self.conn = None;
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        lock(&self.inner.readers).clear();
        let path = self.inner.path.clone();
        let moved_to = match schema::move_aside(&path, now_ms) {
            Ok(moved_to) => moved_to,
            Err(e) => {
                tracing::error!("cannot move the damaged {} aside: {e}", path.display());
                self.fail(format!(
                    "the database is damaged ({reason}) and cannot be moved aside: {e}"
                ));
                return;
            }
        };
        tracing::error!(
            "the history database {} was damaged ({reason}); it was moved to {} and a fresh one created",
            path.display(),
            moved_to.display()
        );
        let _ = self.events.send(HistoryEvent::Reset {
            moved_to: moved_to.display().to_string(),
            reason: reason.to_owned(),
        });
        for log in self.agents.values_mut() {
            log.stored = 0;
        }
        self.total_stored = 0;
        self.unindexed = 0;
        self.uncompressed = 0;
        match schema::open_writer(&path) {
            Ok(conn) => {
                let runs: Vec<Box<RunStart>> = self.open_runs.values().cloned().collect();
                for run in &runs {
                    if let Err(e) = insert_run(&conn, run) {
                        tracing::warn!("cannot re-record run {}: {e}", run.run_id);
                    }
                }
                self.conn = Some(conn);
            }
            Err(error) => {
                tracing::error!("cannot create a fresh {}: {error}", path.display());
                self.fail(error.to_string());
            }
        }
    }

    pub(crate) fn run(mut self) {
        loop {
            let timeout = self
                .next_deadline()
                .saturating_duration_since(Instant::now());
            match self.receiver.recv_timeout(timeout) {
                Ok(Message::Stop) => break,
                Ok(message) => {
                    self.handle(message);
                    // Take whatever else is queued before deciding to commit.
                    while self.pending_bytes < FLUSH_BYTES {
                        match self.receiver.try_recv() {
                            Ok(Message::Stop) => {
                                self.flush(true, Packing::Now);
                                return self.shut_down();
                            }
                            Ok(message) => self.handle(message),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.inner.room.notify_waiters();
            self.take_queue_drops();
            // The check's handle goes before its verdict is read, so a verdict is never missed.
            if self.check.as_ref().is_some_and(|c| c.is_finished()) {
                self.check = None;
            }
            let damaged = lock(&self.inner.damaged).take();
            if let Some(reason) = damaged {
                self.replace(&reason, now_ms());
            }
            if self.conn.is_none()
                && self
                    .last_open_attempt
                    .is_none_or(|at| at.elapsed() >= REOPEN_INTERVAL)
            {
                self.open(now_ms());
            }
            let due = self
                .oldest_pending
                .is_some_and(|t| t.elapsed() >= FLUSH_INTERVAL);
            // A commit that is due by size means output arrives faster than the interval commits
            // it: the writer is the bottleneck, so it stores now and compresses in idle time.
            if self.pending_bytes >= FLUSH_BYTES {
                self.flush(false, Packing::Later);
            } else if due || self.run_ended {
                self.flush(false, Packing::Now);
            }
            self.run_ended = false;
            self.report_drops(false);
            let idle = self.pending.is_empty()
                && self.finished.is_empty()
                && self
                    .last_output
                    .is_none_or(|at| at.elapsed() >= QUIET_BEFORE_MAINTENANCE);
            let since_maintenance = self.last_maintenance.elapsed();
            let step_due = (idle
                && (self.maintenance_behind || since_maintenance >= MAINTENANCE_INTERVAL))
                || since_maintenance >= MAINTENANCE_AT_LEAST_EVERY;
            if step_due && (self.has_maintenance_work() || self.age_sweep_due()) {
                self.maintain();
            }
        }
        self.flush(true, Packing::Now);
        self.shut_down();
    }

    fn shut_down(mut self) {
        self.report_drops(true);
        if let Some(conn) = self.conn.take() {
            if self.inner.keep_wal.load(Ordering::SeqCst) {
                crate::schema::keep_wal_on_close(&conn, &self.inner);
            } else {
                let _ = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE");
            }
        }
    }

    /// Whether a maintenance step may find segments to merge, compress or index (small output
    /// is merged and indexed once it settled, a minute after it was written).
    fn has_maintenance_work(&self) -> bool {
        self.changed_since_maintenance
            || self.maintenance_behind
            || self.uncompressed > 0
            || self
                .unindexed_settles_at
                .is_some_and(|at| at <= Instant::now())
    }

    fn age_sweep_due(&self) -> bool {
        self.last_age_sweep
            .is_none_or(|at| at.elapsed() >= AGE_SWEEP_INTERVAL)
    }

    /// When the writer must look again without a message: for a commit, a maintenance step, the
    /// next age sweep, a drop report, a reopen or the start-up check's verdict. With none of them
    /// pending it sleeps until the age sweep.
    fn next_deadline(&self) -> Instant {
        let now = Instant::now();
        let mut deadline = if self.has_maintenance_work() || self.check.is_some() {
            now + MAINTENANCE_INTERVAL
        } else {
            let sweep_at = self
                .last_age_sweep
                .map_or(self.last_maintenance + MAINTENANCE_INTERVAL, |at| {
                    at + AGE_SWEEP_INTERVAL
                });
            self.unindexed_settles_at
                .map_or(sweep_at, |at| at.min(sweep_at))
        };
        if !self.unreported_drops.is_empty() {
            let report_at = self
                .last_drop_report
                .map_or(now, |at| at + DROP_REPORT_INTERVAL);
            deadline = deadline.min(report_at);
        }
        if self.conn.is_none() {
            let reopen_at = self
                .last_open_attempt
                .map_or(now, |at| at + REOPEN_INTERVAL);
            deadline = deadline.min(reopen_at);
        }
        if let Some(oldest) = self.oldest_pending {
            deadline = deadline.min(oldest + FLUSH_INTERVAL);
        }
        if self.maintenance_behind {
            let quiet_at = self
                .last_output
                .map_or(now, |at| at + QUIET_BEFORE_MAINTENANCE);
            deadline = deadline.min(quiet_at.max(now));
        }
        deadline
    }

    fn handle(&mut self, message: Message) {
        match message {
            Message::Output {
                agent_id,
                run_id,
                stream,
                time_ms,
                bytes,
            } => {
                self.inner.queued.fetch_sub(bytes.len(), Ordering::SeqCst);
                self.add_output(agent_id, run_id, stream, time_ms, &bytes);
            }
            Message::RunStarted(start) => {
                if let Some(conn) = &self.conn {
                    match insert_run(conn, &start) {
                        Ok(()) => self.inner.wrote(),
                        Err(e) => self.on_error(e),
                    }
                }
                self.open_runs.insert(start.run_id, start);
            }
            Message::RunEnded { run_id, end } => {
                self.open_runs.remove(&run_id);
                for pending in self.pending.values_mut().chain(self.finished.iter_mut()) {
                    if pending.run_id == run_id {
                        pending.complete = true;
                        // Nothing more will come: its last output need not wait for the interval.
                        self.run_ended = true;
                    }
                }
                if let Some(conn) = &self.conn {
                    match end_run(conn, run_id, &end) {
                        Ok(()) => self.inner.wrote(),
                        Err(e) => self.on_error(e),
                    }
                }
            }
            Message::Clear { agent_id, reply } => {
                let _ = reply.send(self.clear(&agent_id));
            }
            Message::SetLimits(limits) if limits != self.limits => {
                self.limits = limits;
                self.maintenance_behind = true;
                self.last_age_sweep = None;
            }
            Message::Sync(reply) => {
                self.take_queue_drops();
                self.flush(true, Packing::Now);
                let _ = reply.send(());
            }
            Message::SetLimits(_) | Message::DamageFound | Message::Stop => {}
        }
    }

    fn add_output(
        &mut self,
        agent_id: Arc<str>,
        run_id: u64,
        stream: Stream,
        time_ms: u64,
        bytes: &[u8],
    ) {
        let log = self.agents.entry(Arc::clone(&agent_id)).or_default();
        let pos = log.next_pos;
        log.next_pos += bytes.len() as u64;
        let continues = self
            .pending
            .get(&agent_id)
            .is_some_and(|p| p.run_id == run_id && p.pos + p.bytes.len() as u64 == pos);
        if !continues {
            self.finish_pending(&agent_id);
            self.pending.insert(
                Arc::clone(&agent_id),
                Pending {
                    agent_id: Arc::clone(&agent_id),
                    run_id,
                    pos,
                    bytes: Vec::new(),
                    marks: Vec::new(),
                    complete: false,
                },
            );
        }
        if let Some(pending) = self.pending.get_mut(&agent_id) {
            pending.bytes.extend_from_slice(bytes);
            marks::push(
                &mut pending.marks,
                Mark {
                    stream,
                    len: bytes.len(),
                    time_ms,
                },
            );
        }
        self.pending_bytes += bytes.len();
        self.oldest_pending.get_or_insert_with(Instant::now);
        self.last_output = Some(Instant::now());
        self.inner.busy_until.store(
            now_ms() + QUIET_BEFORE_MAINTENANCE.as_millis() as u64,
            Ordering::SeqCst,
        );
    }

    /// Closes an agent's pending output: what follows starts a new segment.
    fn finish_pending(&mut self, agent_id: &str) {
        if let Some(mut older) = self.pending.remove(agent_id) {
            older.complete = true;
            if !older.bytes.is_empty() {
                self.finished.push(older);
            }
        }
    }

    /// Counts output the queue dropped: the agent's positions skip it, leaving a visible gap.
    fn take_queue_drops(&mut self) {
        let drops = std::mem::take(&mut *lock(&self.inner.queue_drops));
        for (agent_id, bytes) in drops {
            self.finish_pending(&agent_id);
            self.agents
                .entry(Arc::clone(&agent_id))
                .or_default()
                .next_pos += bytes;
            self.count_drop(&agent_id, bytes, "saving fell behind the agent's output");
        }
    }

    fn count_drop(&mut self, agent_id: &Arc<str>, bytes: u64, reason: &str) {
        self.dropped_total += bytes;
        if self.failing.is_some() {
            self.dropped_while_failing += bytes;
        }
        let entry = self
            .unreported_drops
            .entry(Arc::clone(agent_id))
            .or_insert_with(|| (0, reason.to_owned()));
        entry.0 += bytes;
        entry.1 = reason.to_owned();
    }

    /// Announces drops: at once after a quiet spell, then at most every few seconds.
    fn report_drops(&mut self, now: bool) {
        if self.unreported_drops.is_empty()
            || (!now
                && self
                    .last_drop_report
                    .is_some_and(|at| at.elapsed() < DROP_REPORT_INTERVAL))
        {
            return;
        }
        self.last_drop_report = Some(Instant::now());
        // Health first: whoever reacts to the event finds it up to date.
        self.publish_health();
        for (agent_id, (bytes, reason)) in self.unreported_drops.drain() {
            tracing::warn!(
                agent = &*agent_id,
                "{bytes} bytes of output not saved: {reason}"
            );
            let _ = self.events.send(HistoryEvent::Dropped {
                agent_id: agent_id.to_string(),
                bytes,
                reason,
            });
        }
    }

    fn fail(&mut self, reason: String) {
        if self.failing.is_none() {
            self.dropped_while_failing = 0;
        }
        self.failing = Some(reason);
        self.publish_health();
    }

    /// Handles an error of a write: a damaged file is replaced; anything else (a full disk, an I/O
    /// error) makes the writer drop output until a write succeeds again.
    fn on_error(&mut self, error: rusqlite::Error) {
        let error = Error::from(error);
        if schema::is_damage(&error) {
            self.replace(&error.to_string(), now_ms());
        } else {
            tracing::warn!("cannot save output: {error}");
            self.fail(error.to_string());
        }
    }

    fn publish_health(&self) {
        let saving = self.conn.is_some() && self.failing.is_none();
        self.inner.saving.store(saving, Ordering::SeqCst);
        if !saving {
            // Nobody waits for a writer that cannot save.
            self.inner.room.notify_waiters();
        }
        let mut health = lock(&self.inner.health);
        health.ok = saving;
        health.stored_bytes = self.total_stored;
        health.dropped_bytes = self.dropped_total;
        health.unindexed_bytes = self.unindexed;
        health.uncompressed_bytes = self.uncompressed;
    }

    /// Recounts what the writer tracks as it goes (merges and deletions change it too), in idle time.
    fn recount(&mut self) {
        let Some(conn) = &self.conn else { return };
        if let Ok(bytes) = conn.query_row(
            "SELECT COALESCE(SUM(len), 0) FROM segments WHERE indexed = 0",
            [],
            |r| r.get::<_, i64>(0),
        ) {
            self.unindexed = bytes.max(0) as u64;
        }
        if let Ok(oldest) = conn.query_row(
            "SELECT MIN(t_last) FROM segments WHERE indexed = 0",
            [],
            |r| r.get::<_, Option<i64>>(0),
        ) {
            self.unindexed_settles_at = oldest.map(|t_last| {
                let settled_ms = (t_last.max(0) as u64 + SETTLE_MS).saturating_sub(now_ms());
                Instant::now() + Duration::from_millis(settled_ms)
            });
        }
        if let Ok(bytes) = conn.query_row(
            "SELECT COALESCE(SUM(len), 0) FROM segments WHERE deferred = 1",
            [],
            |r| r.get::<_, i64>(0),
        ) {
            self.uncompressed = bytes.max(0) as u64;
        }
        let Ok(mut statement) =
            conn.prepare_cached("SELECT agent_id, SUM(stored) FROM segments GROUP BY agent_id")
        else {
            return;
        };
        let Ok(rows) =
            statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        else {
            return;
        };
        let sums: HashMap<String, u64> = rows
            .flatten()
            .map(|(agent, stored)| (agent, stored.max(0) as u64))
            .collect();
        for (agent_id, log) in &mut self.agents {
            log.stored = sums.get(&**agent_id).copied().unwrap_or(0);
        }
        self.total_stored = sums.values().sum();
    }

    /// Commits pending output. With `everything`, partial lines are written too.
    fn flush(&mut self, everything: bool, packing: Packing) {
        let now = now_ms();
        let mut segments = Vec::new();
        for mut pending in self.finished.drain(..) {
            cut_segments(&mut pending, true, now, &mut segments);
        }
        let mut remaining = 0;
        let mut emptied = vec![];
        for (agent_id, pending) in &mut self.pending {
            cut_segments(pending, everything, now, &mut segments);
            remaining += pending.bytes.len();
            if pending.bytes.is_empty() {
                emptied.push(Arc::clone(agent_id));
            }
        }
        for agent_id in emptied {
            self.pending.remove(&agent_id);
        }
        self.pending_bytes = remaining;
        self.oldest_pending = (remaining > 0).then(Instant::now);
        if segments.is_empty() {
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            for segment in &segments {
                self.count_drop(
                    &segment.agent_id,
                    segment.bytes.len() as u64,
                    "the history database cannot be opened",
                );
            }
            return;
        };
        let started = Instant::now();
        let written = write_segments(conn, &segments, packing);
        tracing::debug!(
            segments = segments.len(),
            bytes = segments.iter().map(|s| s.bytes.len()).sum::<usize>(),
            queued = self.inner.queued.load(Ordering::SeqCst),
            "committed in {:?}",
            started.elapsed()
        );
        match written {
            Ok(sizes) => {
                for (segment, stored) in segments.iter().zip(sizes) {
                    self.unindexed += segment.bytes.len() as u64;
                    if packing == Packing::Later {
                        self.uncompressed += segment.bytes.len() as u64;
                    }
                    self.agents
                        .entry(Arc::clone(&segment.agent_id))
                        .or_default()
                        .stored += stored;
                    self.total_stored += stored;
                }
                if let Err(e) = self.enforce_size_limits(&segments) {
                    tracing::warn!("cannot apply the size limits: {e}");
                }
                let recovered = self.failing.take().is_some();
                self.publish_health();
                if recovered {
                    tracing::info!("output is being saved again");
                    self.report_drops(true);
                    let _ = self.events.send(HistoryEvent::Recovered {
                        dropped_bytes: self.dropped_while_failing,
                    });
                    self.dropped_while_failing = 0;
                }
                self.changed_since_maintenance = true;
                self.inner.committed();
            }
            Err(error) => {
                let reason = error.to_string();
                self.on_error(error);
                for segment in &segments {
                    self.count_drop(&segment.agent_id, segment.bytes.len() as u64, &reason);
                }
                self.report_drops(false);
            }
        }
    }

    /// Deletes the oldest output of agents over their limit, then the oldest of all over the total.
    fn enforce_size_limits(&mut self, written: &[Segment]) -> Result<(), Error> {
        let Some(conn) = self.conn.as_ref() else {
            return Ok(());
        };
        let mut freed: Vec<(Arc<str>, u64)> = vec![];
        let mut agents: Vec<&Arc<str>> = written.iter().map(|s| &s.agent_id).collect();
        agents.dedup();
        for agent_id in agents {
            let stored = self.agents.get(agent_id).map_or(0, |l| l.stored);
            if stored > self.limits.max_agent_bytes {
                let excess = stored - self.limits.max_agent_bytes;
                freed.extend(delete_oldest(conn, Some(agent_id), excess)?);
            }
        }
        let total: u64 = self.total_stored - freed.iter().map(|(_, n)| n).sum::<u64>();
        if total > self.limits.max_total_bytes {
            freed.extend(delete_oldest(
                conn,
                None,
                total - self.limits.max_total_bytes,
            )?);
        }
        self.forget(freed);
        Ok(())
    }

    fn forget(&mut self, freed: Vec<(Arc<str>, u64)>) {
        for (agent_id, bytes) in freed {
            if let Some(log) = self.agents.get_mut(&agent_id) {
                log.stored = log.stored.saturating_sub(bytes);
            }
            self.total_stored = self.total_stored.saturating_sub(bytes);
        }
    }

    fn clear(&mut self, agent_id: &str) -> Result<u64, String> {
        if let Some(pending) = self.pending.remove(agent_id) {
            self.pending_bytes -= pending.bytes.len();
        }
        self.finished.retain(|p| &*p.agent_id != agent_id);
        let Some(conn) = self.conn.as_ref() else {
            return Err("the history database is not open; retry shortly".into());
        };
        let result = (|| -> Result<u64, Error> {
            let tx = conn.unchecked_transaction()?;
            let freed = delete_where(&tx, "agent_id = ?1", params![agent_id])?;
            tx.commit()?;
            Ok(freed.iter().map(|(_, n)| n).sum())
        })();
        match result {
            Ok(bytes) => {
                let key: Arc<str> = Arc::from(agent_id);
                let stored = self.agents.get(&key).map_or(0, |l| l.stored);
                self.forget(vec![(key, stored)]);
                self.changed_since_maintenance = true;
                self.inner.committed();
                self.publish_health();
                Ok(bytes)
            }
            Err(e) => Err(format!("cannot clear the logs: {e}")),
        }
    }

    /// Idle-time work: age retention, merging small segments, and indexing; a bounded amount per step.
    fn maintain(&mut self) {
        self.last_maintenance = Instant::now();
        self.changed_since_maintenance = false;
        if self.conn.is_none() {
            self.maintenance_behind = false;
            return;
        }
        let now = now_ms();
        if self
            .last_age_sweep
            .is_none_or(|at| at.elapsed() >= AGE_SWEEP_INTERVAL)
        {
            self.last_age_sweep = Some(Instant::now());
            if let Err(e) = self.sweep_old(now) {
                tracing::warn!("cannot remove old output: {e}");
            }
        }
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        let step = merge_small(conn, now)
            .and_then(|merged| Ok(merged + compress_deferred(conn)? + index_some(conn, now)?));
        match step {
            Ok(work) => {
                self.maintenance_behind = work > 0;
                if work > 0 {
                    self.inner.wrote();
                }
                self.recount();
                self.publish_health();
            }
            // The checkpointer holds the file for a moment: try again at the next step.
            Err(Error::Sqlite(e)) if is_busy(&e) => self.maintenance_behind = true,
            Err(Error::Sqlite(e)) => {
                self.maintenance_behind = false;
                self.on_error(e);
            }
            Err(e) => {
                self.maintenance_behind = false;
                tracing::warn!("history maintenance: {e}");
            }
        }
    }

    fn sweep_old(&mut self, now: u64) -> Result<(), Error> {
        let Some(conn) = self.conn.as_ref() else {
            return Ok(());
        };
        let cutoff = now.saturating_sub(self.limits.max_age_ms) as i64;
        let tx = conn.unchecked_transaction()?;
        let freed = delete_where(&tx, "t_first < ?1 AND t_last < ?1", params![cutoff])?;
        tx.execute("DELETE FROM runs WHERE ended_ms < ?1", params![cutoff])?;
        tx.commit()?;
        if !freed.is_empty() {
            self.forget(freed);
            self.inner.committed();
            self.publish_health();
        }
        Ok(())
    }
}

/// Whether another connection (the checkpointer) holds a lock the writer needed.
fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Whether a failure to open the file is cured by replacing it.
fn replaceable(error: &Error) -> bool {
    schema::is_damage(error)
        || matches!(error, Error::Sqlite(e) if matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::PermissionDenied | rusqlite::ErrorCode::ReadOnly)
        ))
}

/// Moves the committable part of `pending` into segments: all of it when `everything` (or the run
/// ended); otherwise a partial last line younger than a second stays, so lines are rarely split.
fn cut_segments(pending: &mut Pending, everything: bool, now: u64, out: &mut Vec<Segment>) {
    let complete = everything || pending.complete;
    let mut cut = pending.bytes.len();
    if !complete && pending.bytes.last() != Some(&b'\n') {
        let line_start = memchr::memrchr(b'\n', &pending.bytes).map_or(0, |i| i + 1);
        let tail_started = {
            let mut probe = pending.marks.clone();
            let tail = marks::split_off(&mut probe, line_start);
            tail.first().map_or(now, |m| m.time_ms)
        };
        let tail_len = pending.bytes.len() - line_start;
        if now.saturating_sub(tail_started) < PARTIAL_LINE_WAIT_MS && tail_len < SMALL_SEGMENT {
            cut = line_start;
        }
    }
    if cut == 0 {
        return;
    }
    let rest_bytes = pending.bytes[cut..].to_vec();
    let rest_marks = marks::split_off(&mut pending.marks, cut);
    let bytes = Bytes::from(std::mem::replace(&mut pending.bytes, rest_bytes));
    let mut all_marks = std::mem::replace(&mut pending.marks, rest_marks);
    let mut start = 0;
    while start < cut {
        let mut end = cut;
        if end - start > SEGMENT_MAX {
            let window = &bytes[start + SEGMENT_MAX / 2..start + SEGMENT_MAX];
            end = memchr::memrchr(b'\n', window)
                .map_or(start + SEGMENT_MAX, |i| start + SEGMENT_MAX / 2 + i + 1);
        }
        let tail_marks = marks::split_off(&mut all_marks, end - start);
        out.push(Segment {
            agent_id: Arc::clone(&pending.agent_id),
            run_id: pending.run_id,
            pos: pending.pos + start as u64,
            bytes: bytes.slice(start..end),
            marks: std::mem::replace(&mut all_marks, tail_marks),
        });
        start = end;
    }
    pending.pos += cut as u64;
}

fn insert_run(conn: &Connection, start: &RunStart) -> Result<(), rusqlite::Error> {
    let run = &start.record;
    conn.execute(
        "INSERT OR REPLACE INTO runs (id, agent_id, name, run, command, workspace, env_keys, mode, \
         pid, attempt, settings, started_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            start.run_id as i64,
            run.agent_id,
            run.name,
            run.run as i64,
            run.command,
            run.workspace,
            serde_json::to_string(&run.env_keys).unwrap_or_else(|_| "[]".into()),
            run.mode.as_str(),
            run.pid,
            run.attempt,
            serde_json::to_string(&run.settings).unwrap_or_else(|_| "{}".into()),
            run.started_at_ms as i64,
        ],
    )?;
    Ok(())
}

fn end_run(conn: &Connection, run_id: u64, end: &RunEnd) -> Result<(), rusqlite::Error> {
    conn.execute(
        "UPDATE runs SET ended_ms = ?2, exit_code = ?3, exit_signal = ?4, cause = ?5, stopped_by = ?6, \
         exit_class = ?7 WHERE id = ?1",
        params![
            run_id as i64,
            end.ended_ms as i64,
            end.exit_code,
            end.exit_signal,
            end.cause.as_str(),
            end.stopped_by,
            end.exit_class.map(celistra_proto::ExitClass::as_str),
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(bytes: &[u8], time_ms: u64) -> Pending {
        Pending {
            agent_id: Arc::from("ag-test"),
            run_id: 1,
            pos: 100,
            bytes: bytes.to_vec(),
            marks: vec![Mark {
                stream: Stream::Pty,
                len: bytes.len(),
                time_ms,
            }],
            complete: false,
        }
    }

    #[test]
    fn a_young_partial_line_waits_and_an_old_one_does_not() {
        let mut out = vec![];
        let mut young = pending(
            b"one
two
part",
            1_000,
        );
        cut_segments(&mut young, false, 1_500, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].pos, &out[0].bytes[..]),
            (
                100,
                &b"one
two
"[..]
            )
        );
        assert_eq!((young.pos, young.bytes.as_slice()), (108, &b"part"[..]));
        assert_eq!(young.marks.iter().map(|m| m.len).sum::<usize>(), 4);
        cut_segments(&mut young, false, 2_500, &mut out);
        assert_eq!(&out[1].bytes[..], b"part");
        assert!(young.bytes.is_empty());
    }

    #[test]
    fn large_output_is_cut_at_line_ends() {
        let line = b"0123456789abcdef0123456789abcde
";
        let bytes: Vec<u8> = line
            .iter()
            .copied()
            .cycle()
            .take(SEGMENT_MAX * 3 + 5)
            .collect();
        let mut big = pending(&bytes, 1_000);
        let mut out = vec![];
        cut_segments(&mut big, true, 1_000, &mut out);
        assert_eq!(out.len(), 4);
        let mut pos = 100;
        for segment in &out[..3] {
            assert_eq!(segment.pos, pos);
            assert_eq!(segment.bytes.last(), Some(&b'\n'));
            assert!(segment.bytes.len() <= SEGMENT_MAX);
            assert_eq!(
                segment.marks.iter().map(|m| m.len).sum::<usize>(),
                segment.bytes.len()
            );
            pos += segment.bytes.len() as u64;
        }
        let total: usize = out.iter().map(|s| s.bytes.len()).sum();
        assert_eq!(total, bytes.len());
    }
}
