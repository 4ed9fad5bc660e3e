//! Run history and output logs: runs recorded with redacted env, logs across restarts, filters,
//! search, pipe mode, retention, corrupt-file recovery, kill -9 mid-write and a full disk.

use std::time::{Duration, Instant};

use celistra_client::next_chunk;
use celistra_proto::{
    AgentSpec, AgentState, EventKind, Health, LogLine, LogsQuery, RunCause, RunRecord,
};

use crate::{Daemon, PATIENCE, marker, spec, wait_no_process_with};

/// Reads a whole logs (or search) response as text.
async fn logs(daemon: &Daemon, path: &str) -> String {
    crate::get_text(&daemon.client, path).await
}

/// Polls a logs path until `done` holds for its text (bounded).
async fn wait_logs(daemon: &Daemon, path: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = logs(daemon, path).await;
        if done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never matched; got:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn history_files(daemon: &Daemon) -> Vec<u8> {
    let mut bytes = vec![];
    for name in ["history.db", "history.db-wal"] {
        if let Ok(content) = std::fs::read(daemon.home().join(name)) {
            bytes.extend(content);
        }
    }
    bytes
}

#[tokio::test]
async fn runs_are_recorded_with_env_values_redacted() {
    let mut daemon = Daemon::start().await;
    let secret = format!("s3cr3t-{}-value", marker());
    let mut agent_spec = spec("redacted", "echo started; exit 3");
    agent_spec.env.insert("API_TOKEN".into(), secret.clone());
    daemon.spawn(agent_spec).await;
    daemon.wait_state("redacted", AgentState::Failed).await;
    let tag = marker();
    daemon.spawn(spec("stopped", &format!("sleep {tag}"))).await;
    daemon.wait_state("stopped", AgentState::Running).await;
    let out = daemon.ctl(&["stop", "stopped"]);
    assert!(out.status.success(), "{out:?}");

    let failed = daemon
        .wait_runs("redacted", |r| r.len() == 1 && r[0].cause.is_some())
        .await;
    assert_eq!(failed[0].exit_code, Some(3));
    assert_eq!(failed[0].cause, Some(RunCause::Crashed));
    assert_eq!(failed[0].env_keys, vec!["API_TOKEN".to_owned()]);
    assert_eq!((failed[0].run, failed[0].attempt), (1, 0));
    assert_eq!(failed[0].settings.stop_timeout_ms, 10_000);
    let stopped = daemon
        .wait_runs("stopped", |r| r.len() == 1 && r[0].cause.is_some())
        .await;
    assert_eq!(stopped[0].cause, Some(RunCause::Operator));
    assert_eq!(stopped[0].stopped_by.as_deref(), Some("machine-secret"));
    assert_eq!(stopped[0].exit_signal.as_deref(), Some("SIGTERM"));

    let table = daemon.ctl(&["history"]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.contains("crashed") && table.contains("operator (machine-secret)"),
        "{table}"
    );
    let json = daemon.ctl(&["history", "redacted", "--since", "1h", "--json"]);
    let listed: Vec<RunRecord> = serde_json::from_slice(&json.stdout).expect("history json");
    assert_eq!(listed.len(), 1);
    assert!(!String::from_utf8_lossy(&json.stdout).contains(&secret));

    // The secret's bytes are nowhere in the database files, before or after a clean stop.
    let needle = secret.as_bytes();
    let contains = |haystack: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(&history_files(&daemon)));
    assert!(daemon.signal_and_wait("TERM").success());
    assert!(!contains(&history_files(&daemon)));
    assert!(
        contains(&std::fs::read(daemon.home().join("agents.json")).unwrap()),
        "the spec keeps it"
    );
}

#[tokio::test]
async fn logs_follow_across_restarts_without_gap_or_duplicate() {
    let daemon = Daemon::start().await;
    // Each run prints its number and two more lines, then crashes; the agent restarts.
    let command = "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; \
                   echo \"run $n a\"; echo \"run $n b\"; printf 'run %s c\\n' $n; exit 1";
    let mut agent_spec = spec("looper", command);
    agent_spec.auto_restart = true;
    agent_spec.restart_max = Some(100);
    agent_spec.backoff_initial_ms = Some(50);
    agent_spec.backoff_max_ms = Some(50);
    let workspace = tempfile::tempdir().unwrap();
    agent_spec.workspace = Some(workspace.path().display().to_string());
    daemon.spawn(agent_spec).await;

    let follow = LogsQuery {
        follow: true,
        ..LogsQuery::default()
    };
    let mut body = daemon
        .client
        .get_logs("looper", &follow)
        .await
        .expect("follow");
    let mut text = String::new();
    let read = async {
        while !text.contains("run 4 c\n") {
            let chunk = next_chunk(&mut body).await.expect("stream").expect("open");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("followed output");
    let lines: Vec<&str> = text.lines().collect();
    let runs: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("run "))
        .collect();
    let expected: Vec<String> = (1..=4)
        .flat_map(|n| ["a", "b", "c"].map(|x| format!("run {n} {x}")))
        .collect();
    assert_eq!(runs, expected, "{text}");
    for n in 2..=4 {
        assert!(
            text.contains(&format!("-- celistra: run {n} started --")),
            "{text}"
        );
    }
    let _ = daemon.ctl(&["stop", "looper"]);
}

#[tokio::test]
async fn logs_filter_by_run_tail_time_and_keep_raw_bytes() {
    let daemon = Daemon::start().await;
    let command = "printf '\\033[31mred\\033[0m\\n'; printf 'progress 10%%\\rprogress 100%%\\n'; \
                   for i in 1 2 3 4 5; do echo \"line $i\"; done";
    daemon.spawn(spec("filters", command)).await;
    daemon.wait_state("filters", AgentState::Exited).await;
    let text = wait_logs(&daemon, "/v1/agents/filters/logs", |t| t.contains("line 5")).await;
    assert_eq!(
        text,
        "red\nprogress 100%\nline 1\nline 2\nline 3\nline 4\nline 5\n"
    );
    let raw = logs(&daemon, "/v1/agents/filters/logs?format=raw").await;
    assert!(raw.starts_with("\u{1b}[31mred\u{1b}[0m\r\n"), "{raw:?}");
    assert!(raw.contains("progress 10%\rprogress 100%\r\n"), "{raw:?}");
    assert_eq!(
        logs(&daemon, "/v1/agents/filters/logs?tail=2").await,
        "line 4\nline 5\n"
    );
    assert_eq!(
        logs(&daemon, "/v1/agents/filters/logs?tail=2&format=raw").await,
        "line 4\r\nline 5\r\n"
    );
    assert_eq!(logs(&daemon, "/v1/agents/filters/logs?tail=0").await, "");

    // A second run: --run picks one, timestamps prefix each line.
    assert!(daemon.ctl(&["start", "filters"]).status.success());
    daemon
        .wait_runs("filters", |r| r.len() == 2 && r[1].cause.is_some())
        .await;
    let both = wait_logs(&daemon, "/v1/agents/filters/logs", |t| {
        t.matches("line 5").count() == 2
    })
    .await;
    assert!(both.contains("-- celistra: run 2 started --"), "{both}");
    let second = daemon.ctl(&["logs", "filters", "--run", "2", "--timestamps", "-n", "1"]);
    let second = String::from_utf8_lossy(&second.stdout).into_owned();
    let (stamp, line) = second.trim_end().split_once(' ').expect("stamped line");
    assert_eq!(line, "line 5");
    assert!(
        stamp.len() == 24 && stamp.ends_with('Z') && stamp.contains('T'),
        "{stamp}"
    );
    let first_run = daemon.ctl(&["logs", "filters", "--run", "1"]);
    assert_eq!(
        String::from_utf8_lossy(&first_run.stdout)
            .matches("line")
            .count(),
        5
    );
    let future = daemon.ctl(&["logs", "filters", "--since", "2099-01-01"]);
    assert!(
        future.status.success() && future.stdout.is_empty(),
        "{future:?}"
    );
    let recent = daemon.ctl(&[
        "logs",
        "filters",
        "--since",
        "10m",
        "--until",
        "2099-01-01T00:00:00Z",
    ]);
    assert_eq!(String::from_utf8_lossy(&recent.stdout), both);
    let missing = daemon.ctl(&["logs", "filters", "--run", "9"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no run 9"),
        "{missing:?}"
    );
    let bad = daemon.ctl(&["logs", "filters", "--since", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2));
    // A removed agent's history stays readable by its name.
    assert!(daemon.ctl(&["rm", "filters"]).status.success());
    let removed = daemon.ctl(&["logs", "filters", "-n", "1"]);
    assert_eq!(String::from_utf8_lossy(&removed.stdout), "line 5\n");
}

#[tokio::test]
async fn grep_finds_lines_in_indexed_and_fresh_output_of_one_or_all_agents() {
    let daemon = Daemon::start().await;
    daemon
        .spawn(spec(
            "grep-a",
            "echo 'GET /api ok'; echo 'Connection refused (111)'; echo 'terror'",
        ))
        .await;
    daemon
        .spawn(spec(
            "grep-b",
            "echo 'error: connection refused by peer'; echo fine",
        ))
        .await;
    wait_logs(&daemon, "/v1/agents/grep-b/logs", |t| t.contains("fine")).await;
    wait_logs(&daemon, "/v1/agents/grep-a/logs", |t| t.contains("terror")).await;
    let one = daemon.ctl(&["logs", "grep-a", "--grep", "connection REFUSED"]);
    assert_eq!(
        String::from_utf8_lossy(&one.stdout),
        "Connection refused (111)\n"
    );
    let words = daemon.ctl(&["logs", "grep-a", "--grep", "err"]);
    assert!(words.stdout.is_empty(), "a word start is needed: {words:?}");
    let all = daemon.ctl(&["logs", "--grep", "connection ref"]);
    let all = String::from_utf8_lossy(&all.stdout).into_owned();
    assert_eq!(all.lines().count(), 2, "{all}");
    assert!(
        all.contains(" | Connection refused (111)")
            && all.contains(" | error: connection refused by peer"),
        "{all}"
    );
    let json = logs(&daemon, "/v1/logs?grep=refused&format=jsonl&limit=1").await;
    let line: LogLine = serde_json::from_str(json.trim()).expect("one json line");
    assert_eq!(line.stream, "pty");
    let symbols = logs(&daemon, "/v1/agents/grep-a/logs?grep=%2Fapi").await;
    assert_eq!(symbols, "GET /api ok\n");
    let usage = daemon.ctl(&["logs"]);
    assert_eq!(usage.status.code(), Some(2));
}

#[tokio::test]
async fn pipe_mode_keeps_stdout_and_stderr_apart() {
    let daemon = Daemon::start().await;
    let out = daemon.ctl(&[
        "spawn",
        "--name",
        "piped",
        "--no-pty",
        "--",
        "if [ -t 1 ]; then echo tty; else echo notty; fi; echo oops >&2; echo done",
    ]);
    assert!(out.status.success(), "{out:?}");
    daemon.wait_state("piped", AgentState::Exited).await;
    let both = wait_logs(&daemon, "/v1/agents/piped/logs", |t| {
        t.contains("done") && t.contains("oops")
    })
    .await;
    assert!(both.contains("notty\n"), "{both}");
    let stderr = daemon.ctl(&["logs", "piped", "--stderr"]);
    assert_eq!(String::from_utf8_lossy(&stderr.stdout), "oops\n");
    let stdout = daemon.ctl(&["logs", "piped", "--stdout"]);
    assert_eq!(String::from_utf8_lossy(&stdout.stdout), "notty\ndone\n");
    let json = daemon.ctl(&["logs", "piped", "--json"]);
    let lines: Vec<LogLine> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let streams: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l.stream.as_str(), l.text.as_str()))
        .collect();
    assert!(
        streams.contains(&("stderr", "oops")) && streams.contains(&("stdout", "done")),
        "{streams:?}"
    );
    let status = daemon.ctl(&["status", "piped"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("pipes"));
}

#[tokio::test]
async fn size_limits_drop_the_oldest_output_and_clear_empties_it() {
    let dir_config = r#"{"logs_max_agent_mb": 1, "logs_max_total_mb": 2}"#;
    let daemon = Daemon::start_with_config(dir_config).await;
    // About 2.9 MB of numbered lines; only the newest 1 MiB may stay.
    // About 11 MB of numbered lines (a few MiB once compressed); only the newest 1 MiB stays.
    daemon.spawn(spec("chatty", "seq 1 1500000")).await;
    daemon.spawn(spec("quiet", "echo keep-me")).await;
    let tail = wait_logs(&daemon, "/v1/agents/chatty/logs?tail=1", |t| {
        t == "1500000\n"
    })
    .await;
    assert_eq!(tail, "1500000\n");
    let health: Health = daemon.client.get_health().await.unwrap();
    assert!(
        health.history.stored_bytes <= 1024 * 1024 + 4096,
        "stored on disk beyond the agent's limit: {health:?}"
    );
    let kept = logs(&daemon, "/v1/agents/chatty/logs").await;
    let first: u64 = kept.lines().next().unwrap().parse().unwrap();
    assert!(
        first > 500_000,
        "the oldest lines went first; first kept is {first}"
    );
    let numbers: Vec<u64> = kept.lines().map(|l| l.parse().unwrap()).collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "kept lines are contiguous"
    );
    assert_eq!(
        logs(&daemon, "/v1/agents/quiet/logs").await,
        "keep-me\n",
        "the per-agent limit spares others"
    );

    let cleared = daemon.ctl(&["logs", "--clear", "chatty"]);
    assert!(
        String::from_utf8_lossy(&cleared.stdout).starts_with("cleared "),
        "{cleared:?}"
    );
    assert_eq!(logs(&daemon, "/v1/agents/chatty/logs").await, "");
    assert_eq!(logs(&daemon, "/v1/agents/quiet/logs").await, "keep-me\n");
}

#[tokio::test]
async fn a_corrupt_database_is_moved_aside_and_replaced() {
    let mut daemon = Daemon::start().await;
    daemon.spawn(spec("before", "echo before-corruption")).await;
    wait_logs(&daemon, "/v1/agents/before/logs", |t| {
        t.contains("before-corruption")
    })
    .await;
    assert!(daemon.signal_and_wait("TERM").success());
    let db = daemon.home().join("history.db");
    std::fs::write(&db, b"this is not a database, just garbage ".repeat(200)).unwrap();

    daemon.restart_process().await;
    let events = daemon
        .events_until(0, |e| matches!(e.kind, EventKind::HistoryReset { .. }))
        .await;
    let Some(EventKind::HistoryReset { moved_to, .. }) = events.last().map(|e| &e.kind) else {
        unreachable!()
    };
    assert!(
        std::fs::read(moved_to)
            .unwrap()
            .starts_with(b"this is not a database")
    );
    let health: Health = daemon.client.get_health().await.unwrap();
    assert!(health.history.ok, "{health:?}");
    // The restored agent's new run is saved in the fresh database.
    daemon.spawn(spec("after", "echo after-recovery")).await;
    wait_logs(&daemon, "/v1/agents/after/logs", |t| {
        t == "after-recovery\n"
    })
    .await;
}

#[tokio::test]
async fn kill_9_mid_write_loses_only_what_the_daemon_had_read_and_not_stored() {
    let mut daemon = Daemon::start().await;
    let tag = marker();
    let command = format!("i=0; while :; do i=$((i+1)); echo \"line $i\"; done # {tag}");
    daemon.spawn(spec("writer", &command)).await;
    wait_logs(&daemon, "/v1/agents/writer/logs?tail=1", |t| {
        t.strip_prefix("line ")
            .and_then(|n| n.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 20_000)
    })
    .await;
    assert!(!daemon.signal_and_wait("KILL").success());
    // The writer goes on into the keeper, and the next daemon takes it over.
    assert!(
        !crate::live_processes_with(&tag).is_empty(),
        "the writer ended"
    );
    daemon.restart_process().await;
    let adopted = daemon
        .events_until(0, |e| matches!(e.kind, EventKind::AgentAdopted { .. }))
        .await;
    let Some(EventKind::AgentAdopted { dropped_bytes, .. }) = adopted.last().map(|e| &e.kind)
    else {
        unreachable!()
    };
    let dropped_bytes = *dropped_bytes;
    let stopped = daemon.ctl(&["stop", "writer"]);
    assert!(stopped.status.success(), "{stopped:?}");
    wait_no_process_with(&tag).await;

    let kept = logs(&daemon, "/v1/agents/writer/logs?run=1").await;
    // A gap can tear the line it falls in: such a line is counted, not parsed.
    let (numbers, torn): (Vec<_>, Vec<_>) = kept
        .lines()
        .map(|l| l.strip_prefix("line ").and_then(|n| n.parse::<u64>().ok()))
        .partition(Option::is_some);
    let numbers: Vec<u64> = numbers.into_iter().flatten().collect();
    assert!(numbers.len() > 20_000, "kept {}", numbers.len());
    assert_eq!(numbers[0], 1);
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicate"
    );
    // One gap at most: what the killed daemon had read but not yet stored; and one more only if
    // the keeper had to drop output past what it keeps per run.
    let gaps = numbers.windows(2).filter(|w| w[1] != w[0] + 1).count();
    let most = 1 + usize::from(dropped_bytes > 0);
    assert!(
        gaps <= most && torn.len() <= most,
        "{gaps} gaps, {} torn lines, {dropped_bytes} bytes dropped",
        torn.len()
    );
    let first = daemon.wait_runs("writer", |r| !r.is_empty()).await;
    assert_eq!(
        first[0].cause,
        Some(RunCause::Operator),
        "one run, stopped by the operator"
    );
    let events = daemon
        .events_until(0, |e| matches!(e.kind, EventKind::DaemonStarted { .. }))
        .await;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.kind, EventKind::HistoryReset { .. }))
    );
}

/// A small tmpfs the test mounts and unmounts.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs needs root");
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_drops_output_without_slowing_the_agent_and_recovers() {
    let tmpfs = Tmpfs::mount("16m");
    let mut daemon = Daemon::start_in(tmpfs.dir.path().join("home")).await;
    let tag = marker();
    let workspace = tempfile::tempdir().unwrap();
    let go = workspace.path().join("go");
    let command = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; seq 1 100000; sleep {tag}",
        go.display()
    );
    let on_workspace = |agent_spec: AgentSpec| AgentSpec {
        workspace: Some(workspace.path().display().to_string()),
        ..agent_spec
    };
    daemon.spawn(on_workspace(spec("full", &command))).await;
    daemon.wait_state("full", AgentState::Running).await;

    // Fill the disk, then let the agent write.
    let filler = tmpfs.dir.path().join("filler");
    let _ = std::process::Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", filler.display()))
        .arg("bs=64k")
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    std::fs::write(&go, b"").unwrap();
    // The agent got through all its output: it was not blocked by the full disk.
    let deadline = Instant::now() + PATIENCE;
    while crate::live_processes_exactly(&format!("sleep {tag}")).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the agent is stuck writing output"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events = daemon
        .events_until(0, |e| matches!(e.kind, EventKind::LogsDropped { .. }))
        .await;
    let last = events.last().unwrap().id;
    let health: Health = daemon.client.get_health().await.unwrap();
    assert!(
        !health.history.ok && health.history.dropped_bytes > 0,
        "{health:?}"
    );

    std::fs::remove_file(&filler).unwrap();
    daemon
        .spawn(on_workspace(spec("later", "echo saved-again")))
        .await;
    daemon
        .events_until(last, |e| matches!(e.kind, EventKind::LogsRecovered { .. }))
        .await;
    wait_logs(&daemon, "/v1/agents/later/logs", |t| t == "saved-again\n").await;
    let health: Health = daemon.client.get_health().await.unwrap();
    assert!(health.history.ok, "{health:?}");
    let _ = daemon.ctl(&["stop", "full"]);
    assert!(daemon.signal_and_wait("TERM").success());
}
