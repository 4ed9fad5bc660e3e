//! The history store on its own: the search index, retention by age, merging of small segments, and
//! damage found inside the file. Each test uses its own database in a temporary directory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use celistra_core::logtext::{GrepPattern, Stream};
use celistra_history::{Cursor, History, HistoryEvent, Limits, LogFilter, Piece};

const DAY_MS: u64 = 86_400_000;
const PATIENCE: Duration = Duration::from_secs(20);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn limits() -> Limits {
    Limits {
        max_age_ms: 30 * DAY_MS,
        max_total_bytes: 1 << 30,
        max_agent_bytes: 1 << 30,
    }
}

struct Store {
    dir: tempfile::TempDir,
    history: History,
    events: tokio::sync::mpsc::UnboundedReceiver<HistoryEvent>,
}

impl Store {
    fn open() -> Store {
        let dir = tempfile::tempdir().unwrap();
        Store::open_in(dir)
    }

    fn open_in(dir: tempfile::TempDir) -> Store {
        let (sender, events) = tokio::sync::mpsc::unbounded_channel();
        let history = History::open(&dir.path().join("history.db"), limits(), sender, now_ms());
        Store {
            dir,
            history,
            events,
        }
    }

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.dir.path().join("history.db")).unwrap()
    }

    fn count(&self, sql: &str) -> i64 {
        self.db().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// Appends lines as separate commits, each timed `age_ms` ago.
    fn append_commits(&self, agent: &Arc<str>, lines: &[String], age_ms: u64) {
        for line in lines {
            self.history.append(
                agent,
                1,
                Stream::Stdout,
                now_ms() - age_ms,
                Bytes::from(format!("{line}\n")),
            );
            self.history.sync().unwrap();
        }
    }

    fn lines(&self, agent: &str) -> Vec<String> {
        let filter = LogFilter {
            agent_id: Some(agent.into()),
            ..LogFilter::default()
        };
        let mut cursor = Cursor::new(0, false);
        let mut lines = vec![];
        let mut keep = |piece: Piece| {
            if let Piece::Line { line, .. } = piece {
                lines.push(line.text);
            }
            true
        };
        self.history
            .read_forward(&filter, &mut cursor, &mut keep)
            .unwrap();
        self.history.finish_partial(&mut cursor, &mut keep);
        lines
    }

    fn grep(&self, pattern: &str) -> Vec<String> {
        let mut found = vec![];
        self.history
            .grep(
                &LogFilter::default(),
                &GrepPattern::new(pattern).unwrap(),
                None,
                &mut |piece| {
                    if let Piece::Line { line, .. } = piece {
                        found.push(line.text);
                    }
                    true
                },
            )
            .unwrap();
        found
    }
}

/// Polls until `done` (bounded).
fn wait(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn searches_go_through_the_index_once_output_is_indexed() {
    let store = Store::open();
    let agent: Arc<str> = Arc::from("ag-fts1");
    // Large output is indexed in idle time right away; small output once it settled (a minute).
    let mut text = String::new();
    for i in 0..4000 {
        text.push_str(&format!("INFO request {i} served in {}ms\n", i % 97));
    }
    text.push_str("ERROR upstream zanzibar refused the connection\n");
    store
        .history
        .append(&agent, 1, Stream::Stdout, now_ms(), Bytes::from(text));
    store.history.sync().unwrap();
    wait("everything indexed", || {
        store.history.health().unindexed_bytes == 0
    });
    assert_eq!(
        store.count("SELECT COUNT(*) FROM segments WHERE indexed = 0"),
        0
    );
    // Only the index can find it now: every segment is indexed, so none is scanned.
    assert_eq!(
        store.grep("zanzibar refused"),
        vec!["ERROR upstream zanzibar refused the connection".to_owned()]
    );
    assert_eq!(store.grep("request 3999 served").len(), 1);
    assert!(
        store.grep("anzibar").is_empty(),
        "matches start at a word start"
    );
    // The index is the only source: with its entries gone, the search finds nothing.
    store
        .db()
        .execute(
            "DELETE FROM segments_fts WHERE rowid IN (SELECT id FROM segments)",
            [],
        )
        .unwrap();
    assert!(store.grep("zanzibar").is_empty());
}

#[test]
fn old_output_is_removed_by_age() {
    let store = Store::open();
    let agent: Arc<str> = Arc::from("ag-age1");
    store.append_commits(&agent, &["from long ago".into()], 40 * DAY_MS);
    store.append_commits(&agent, &["from today".into()], 0);
    // A change of the limit sweeps at once (otherwise the sweep runs every minute).
    store.history.set_limits(Limits {
        max_age_ms: 30 * DAY_MS - 1,
        ..limits()
    });
    wait("the old line is gone", || {
        store.lines("ag-age1") == ["from today"]
    });
    store.history.set_limits(Limits {
        max_age_ms: 1,
        ..limits()
    });
    wait("everything aged out", || store.lines("ag-age1").is_empty());
    assert_eq!(store.count("SELECT COUNT(*) FROM segments"), 0);
}

#[test]
fn small_settled_segments_are_merged_and_stay_readable() {
    let store = Store::open();
    let agent: Arc<str> = Arc::from("ag-merge");
    let lines: Vec<String> = (0..30).map(|i| format!("line {i}")).collect();
    // Thirty commits of one line each, timed two minutes ago: settled, so due for merging.
    store.append_commits(&agent, &lines, 120_000);
    assert!(store.count("SELECT COUNT(*) FROM segments") >= 10);
    wait("merged into one segment", || {
        store.count("SELECT COUNT(*) FROM segments") == 1
            && store.count("SELECT COUNT(*) FROM segments WHERE indexed = 1") == 1
    });
    assert_eq!(store.lines("ag-merge"), lines);
    assert_eq!(store.grep("line 17"), vec!["line 17".to_owned()]);
}

#[test]
fn damage_inside_the_file_is_found_at_start_and_the_file_replaced() {
    let store = Store::open();
    let agent: Arc<str> = Arc::from("ag-dmg1");
    let block = "x".repeat(200) + "\n";
    store.history.append(
        &agent,
        1,
        Stream::Pty,
        now_ms(),
        Bytes::from(block.repeat(20_000)),
    );
    store.history.sync().unwrap();
    store.history.close();
    let Store { dir, .. } = store;
    // Overwrite pages in the middle of the file; its header stays intact.
    let path = dir.path().join("history.db");
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 200_000);
    let middle = bytes.len() / 2;
    bytes[middle..middle + 64 * 1024].fill(0xA5);
    bytes[16384..16384 + 8192].fill(0x5A);
    std::fs::write(&path, &bytes).unwrap();

    let mut store = Store::open_in(dir);
    let event = store.events.blocking_recv().unwrap();
    let HistoryEvent::Reset { moved_to, .. } = event else {
        panic!("expected a reset, got {event:?}");
    };
    assert!(std::path::Path::new(&moved_to).exists());
    // The fresh database works.
    store.append_commits(&agent, &["after the reset".into()], 0);
    wait("new output readable", || {
        store.lines("ag-dmg1") == ["after the reset"]
    });
    assert!(store.history.health().ok);
}

/// Varied log lines that compress about 3x, like the bench's input.
fn varied_lines(bytes: usize) -> String {
    let mut text = String::with_capacity(bytes + 128);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut i = 0u64;
    while text.len() < bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.push_str(&format!(
            "INFO worker-{} request id={i} path=/api/v1/items/{} took={}ms user={state:016x}\n",
            state % 16,
            state % 100_000,
            state % 900
        ));
        i += 1;
    }
    text
}

#[test]
fn a_burst_is_stored_and_then_compressed_and_reads_the_same() {
    let store = Store::open();
    let agent: Arc<str> = Arc::from("ag-burst");
    // One append larger than a commit: the writer is behind, so it stores first.
    let text = varied_lines(8 << 20);
    store.history.append(
        &agent,
        1,
        Stream::Stdout,
        now_ms(),
        Bytes::from(text.clone()),
    );
    store.history.sync().unwrap();
    // Compression waits for half a second without output; this runs right after the commit.
    assert!(store.history.health().uncompressed_bytes > 0);
    wait("the burst compressed", || {
        store.history.health().uncompressed_bytes == 0
    });
    assert_eq!(
        store.count("SELECT COUNT(*) FROM segments WHERE deferred = 1"),
        0
    );
    let stored = store.history.health().stored_bytes;
    assert!(
        stored * 2 < text.len() as u64,
        "stored {stored} of {} bytes",
        text.len()
    );
    assert_eq!(
        store.count("SELECT SUM(stored) FROM segments") as u64,
        stored
    );
    let lines = store.lines("ag-burst");
    assert_eq!(lines.len(), text.lines().count());
    assert!(lines.iter().map(String::as_str).eq(text.lines()));
}

#[test]
fn maintenance_keeps_up_with_output_that_never_pauses() {
    let store = Arc::new(Store::open());
    let agent: Arc<str> = Arc::from("ag-chatty");
    store.append_commits(&agent, &["from long ago".into()], 40 * DAY_MS);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let chatter = {
        let (store, agent, stop) = (Arc::clone(&store), Arc::clone(&agent), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let line = Bytes::from(format!("tick {i}\n"));
                store
                    .history
                    .append(&agent, 1, Stream::Stdout, now_ms(), line);
                i += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    // Output never pauses for the idle time maintenance waits for, yet the sweep still runs.
    store.history.set_limits(Limits {
        max_age_ms: 30 * DAY_MS - 1,
        ..limits()
    });
    let gone = (|| {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if store.lines("ag-chatty").first().map(String::as_str) == Some("tick 0") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    })();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    chatter.join().unwrap();
    assert!(
        gone,
        "the old line was never removed while output kept coming"
    );
}

#[test]
fn leaving_keeps_the_wal_for_the_next_process_and_closing_copies_it() {
    let store = Store::open();
    let agent: Arc<str> = Arc::from("ag-wal");
    let lines: Vec<String> = (0..50).map(|i| format!("line {i}")).collect();
    store.append_commits(&agent, &lines, 0);
    let wal = store.dir.path().join("history.db-wal");
    let wal_size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    store.history.leave();
    assert!(
        wal_size() > 0,
        "the WAL was copied and truncated on leaving"
    );

    // The next process reads every line from the WAL it was left, then closes for good.
    let Store { dir, .. } = store;
    let next = Store::open_in(dir);
    assert_eq!(next.lines("ag-wal"), lines);
    next.history.close();
    assert_eq!(wal_size(), 0, "closing copies the WAL into the database");
}

/// Times the threads of this process named `name` were scheduled off the CPU (voluntarily or
/// not): a thread that sleeps without waking keeps this count.
fn switches_of(name: &str) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        total += status
            .lines()
            .filter(|line| line.contains("ctxt_switches:"))
            .filter_map(|line| line.split_whitespace().last()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    total
}

#[test]
fn an_idle_store_sleeps_once_its_work_is_done_and_wakes_for_new_output() {
    let store = Store::open();
    let agent: Arc<str> = Arc::from("ag-idle");
    // Settled lines, so merging and indexing have work; then a burst to copy out of the WAL.
    let lines: Vec<String> = (0..10).map(|i| format!("line {i}")).collect();
    store.append_commits(&agent, &lines, 120_000);
    let burst = || {
        store.history.append(
            &agent,
            1,
            Stream::Stdout,
            now_ms(),
            Bytes::from(varied_lines(1 << 20)),
        );
        store.history.sync().unwrap();
    };
    burst();
    // The writer (merging, indexing, compressing) and the checkpointer (copying the WAL) finish,
    // then neither wakes for a whole window: they used to look every second and every 200 ms.
    let threads = || {
        (
            switches_of("history-writer"),
            switches_of("history-checkpo"),
        )
    };
    assert!(threads().0 > 0 && threads().1 > 0, "both threads run");
    let window = Duration::from_secs(2);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let before = threads();
        std::thread::sleep(window);
        let after = threads();
        if after == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the history threads kept waking: {before:?} then {after:?}"
        );
    }
    // Only output younger than a minute (the burst's small tail) waits to be merged and indexed.
    let settled = now_ms() - 60_000;
    assert_eq!(
        store.count(&format!(
            "SELECT COUNT(*) FROM segments WHERE (indexed = 0 AND t_last < {settled}) OR deferred = 1"
        )),
        0,
        "everything settled was indexed and compressed before the writer slept"
    );
    // New output wakes both: it is saved, and the checkpointer copies it into the main file.
    let db = store.dir.path().join("history.db");
    let db_size = || std::fs::metadata(&db).map_or(0, |m| m.len());
    let size_before = db_size();
    burst();
    wait("the new output copied into the database file", || {
        db_size() > size_before
    });
    assert_eq!(
        store.lines("ag-idle").len(),
        10 + 2 * varied_lines(1 << 20).lines().count()
    );
}
