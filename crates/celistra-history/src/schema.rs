//! The database file: opening it with the right pragmas, versioned schema migrations, copying the
//! WAL into it in the background, and moving a damaged file aside so a fresh one can take its place.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};

use crate::{Error, Inner, now_ms};

/// Schema migrations; entry `n` takes `user_version` from `n` to `n + 1`. Only ever append.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    agent_id TEXT NOT NULL,
    name TEXT NOT NULL,
    run INTEGER NOT NULL,
    command TEXT NOT NULL,
    workspace TEXT NOT NULL,
    env_keys TEXT NOT NULL,
    mode TEXT NOT NULL,
    pid INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    settings TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    ended_ms INTEGER,
    exit_code INTEGER,
    exit_signal TEXT,
    cause TEXT,
    stopped_by TEXT
);
CREATE INDEX runs_by_agent ON runs (agent_id, run);
CREATE INDEX runs_by_start ON runs (started_ms);
CREATE INDEX runs_by_name ON runs (name);
-- Output in arrival order. `pos` counts every byte an agent ever wrote (dropped ones too), so a gap
-- between segments is output that could not be saved. `len` is the output's length, `stored` the
-- size of `bytes` (as codec.rs stores them). `bytes` is last: the other columns are read
-- without touching its overflow pages.
CREATE TABLE segments (
    id INTEGER PRIMARY KEY,
    agent_id TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    pos INTEGER NOT NULL,
    len INTEGER NOT NULL,
    stored INTEGER NOT NULL,
    t_first INTEGER NOT NULL,
    t_last INTEGER NOT NULL,
    indexed INTEGER NOT NULL DEFAULT 0,
    marks BLOB NOT NULL,
    bytes BLOB NOT NULL
);
CREATE INDEX segments_by_agent ON segments (agent_id, pos, len, stored);
CREATE INDEX segments_by_time ON segments (t_first);
CREATE INDEX segments_by_run ON segments (run_id);
CREATE INDEX segments_unindexed ON segments (id) WHERE indexed = 0;
CREATE VIRTUAL TABLE segments_fts USING fts5 (
    text, content = '', contentless_delete = 1, detail = none,
    tokenize = 'unicode61 remove_diacritics 0'
);
",
    r"
-- 1 while a segment's bytes are stored as they came (during a burst), until idle time compresses
-- them. Only read through the partial index, so it being after `bytes` costs nothing.
ALTER TABLE segments ADD COLUMN deferred INTEGER NOT NULL DEFAULT 0;
CREATE INDEX segments_deferred ON segments (id) WHERE deferred = 1;
",
    r"
-- Why a run ended, classified (model errors, usage limits, auth): `ExitClass` names.
ALTER TABLE runs ADD COLUMN exit_class TEXT;
",
];

/// Opens (creating if needed) the database for writing and brings its schema up to date.
pub(crate) fn open_writer(path: &Path) -> Result<Connection, Error> {
    let mut conn = open_file(path)?;
    // Write transactions take the write lock when they begin, so a lock held by the checkpointer is
    // waited out (busy timeout) instead of failing when a read turns into a write.
    conn.set_transaction_behavior(TransactionBehavior::Immediate);
    Ok(conn)
}

fn open_file(path: &Path) -> Result<Connection, Error> {
    // Created private before SQLite opens it; the WAL and shared-memory files copy its mode.
    if !path.exists() {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::Setup(format!("cannot create {}: {e}", path.display())))?;
    }
    let conn = Connection::open(path)?;
    // 16 KiB pages: large output is written at several hundred MiB/s (measured in BENCHMARKS.md).
    // It only takes effect on a new file, before WAL mode is set.
    conn.pragma_update(None, "page_size", 16384)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Setup(format!(
            "cannot switch {} to WAL mode (got {mode})",
            path.display()
        )));
    }
    // NORMAL in WAL mode: commits do not wait for the disk, a crash of the daemon loses nothing that
    // was committed, and a power loss at most the last commits. Checkpoints run on their own thread.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    migrate(&conn)?;
    Ok(conn)
}

/// Opens a connection that only reads.
/// Marks `conn` to leave the WAL alone when it closes, if [`crate::History::leave`] asked: the
/// last connection to close would otherwise copy it into the database.
pub(crate) fn keep_wal_on_close(conn: &Connection, inner: &Inner) {
    if inner.keep_wal.load(Ordering::SeqCst) {
        let _ = conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        );
    }
}

pub(crate) fn open_reader(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.pragma_update(None, "query_only", true)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

fn migrate(conn: &Connection) -> Result<(), Error> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(Error::Setup(format!(
            "the history database has schema version {version}, newer than this celistrad knows ({}); \
             run a newer celistrad or move the file aside",
            MIGRATIONS.len()
        )));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// Checks the whole file's structure; an error or any reported problem means it is damaged.
pub(crate) fn check(conn: &Connection) -> Result<(), Error> {
    let result: String = conn.pragma_query_value(None, "quick_check", |r| r.get(0))?;
    if result == "ok" {
        Ok(())
    } else {
        Err(Error::Corrupt(result))
    }
}

/// Whether an error means the file itself is unusable (rather than full disk or a passing I/O error).
pub(crate) fn is_damage(error: &Error) -> bool {
    match error {
        Error::Corrupt(_) => true,
        Error::Sqlite(e) => matches!(
            e.sqlite_error_code(),
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
        ),
        _ => false,
    }
}

/// Moves the database and its WAL and shared-memory files aside with a timestamp; returns the new
/// path of the main file.
pub(crate) fn move_aside(path: &Path, now_ms: u64) -> std::io::Result<PathBuf> {
    let aside = PathBuf::from(format!(
        "{}.corrupt-{}",
        path.display(),
        celistra_core::clock::format_rfc3339_ms(now_ms).replace(':', "")
    ));
    for suffix in ["-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        let to = PathBuf::from(format!("{}{suffix}", aside.display()));
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

/// WAL size that is copied into the database even in the middle of a burst.
const WAL_LIMIT: u64 = 512 * 1024 * 1024;
/// WAL size above which a quiet moment is used to truncate it.
const WAL_TRUNCATE_ABOVE: u64 = 64 * 1024 * 1024;

/// Copies the WAL into the database file in the background, so the writer never waits for it.
/// Between a full copy and the next commit it sleeps: an idle daemon's checkpointer never wakes.
pub(crate) fn checkpoint_loop(inner: &Inner) {
    let wal = std::path::PathBuf::from(format!("{}-wal", inner.path.display()));
    let mut conn: Option<(u64, Connection)> = None;
    let mut last = Instant::now();
    // The write (`Inner::writes`) whose WAL was last copied whole; `None` before the first look.
    let mut copied: Option<u64> = None;
    while !inner.stopping.load(Ordering::SeqCst) {
        let writes = inner.writes.load(Ordering::SeqCst);
        if copied == Some(writes) {
            // Unparked by the next write or by `History::close`.
            std::thread::park();
            continue;
        }
        // A spurious wake-up only looks at the WAL early.
        std::thread::park_timeout(Duration::from_millis(200));
        let size = std::fs::metadata(&wal).map_or(0, |m| m.len());
        if size == 0 {
            copied = Some(writes);
            continue;
        }
        // During a burst the WAL may grow (disk, not memory) so that copying it does not compete with
        // saving the burst; it is copied once output is quiet, or when it gets large.
        let quiet = inner.busy_until.load(Ordering::SeqCst) <= now_ms();
        let due = size > WAL_LIMIT || (quiet && last.elapsed() >= Duration::from_secs(1));
        if !due {
            continue;
        }
        let generation = inner.generation.load(Ordering::SeqCst);
        if conn.as_ref().is_none_or(|(g, _)| *g != generation) {
            conn = open_reader(&inner.path)
                .and_then(|c| {
                    c.pragma_update(None, "query_only", false)?;
                    Ok(c)
                })
                .ok()
                .map(|c| (generation, c));
        }
        if let Some((_, c)) = &conn {
            // A passive copy never waits, but cannot shrink a WAL that is written to all the time
            // (indexing after a burst). When output is quiet, a large WAL is copied and truncated,
            // which briefly holds the writer back: it is only indexing then.
            let mode = if quiet && size > WAL_TRUNCATE_ABOVE {
                "TRUNCATE"
            } else {
                "PASSIVE"
            };
            // (busy, frames in the WAL, frames copied): all copied means nothing is left to do.
            let done = c.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            });
            if let Ok((0, frames, copied_frames)) = done
                && frames == copied_frames
            {
                copied = Some(writes);
            }
        }
        last = Instant::now();
    }
    if let Some((_, c)) = &conn {
        keep_wal_on_close(c, inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_of_the_first_schema_is_migrated_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO segments (agent_id, run_id, pos, len, stored, t_first, t_last, marks, bytes) \
                 VALUES ('ag-old', 1, 0, 3, 7, 5, 5, x'', x'ffffffff616263')",
                [],
            )
            .unwrap();
        }
        let conn = open_writer(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
        let (agent, deferred): (String, i64) = conn
            .query_row("SELECT agent_id, deferred FROM segments", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((agent.as_str(), deferred), ("ag-old", 0));
        drop(conn);
        // Opening again is a no-op; a file from a newer celistrad is refused, not damaged.
        open_writer(&path).unwrap();
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let error = open_writer(&path).expect_err("refused").to_string();
        assert!(error.contains("newer than this celistrad knows"), "{error}");
    }
}
