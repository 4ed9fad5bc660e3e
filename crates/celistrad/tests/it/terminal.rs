//! Shared terminals: late-join replay, several writers, viewers, resize, a client that never reads,
//! restarts, and the ticket and origin checks, through real WebSocket connections.

use std::time::Instant;

use celistra_client::{ClientError, Terminal, TerminalEvent};
use celistra_proto::{
    AgentSpec, AgentState, ErrorCode, IoMode, TerminalClientMessage, TerminalRole,
    TerminalServerMessage, TicketRequest,
};

use crate::{Daemon, PATIENCE};

/// Everything one client received: bytes and control messages.
#[derive(Default)]
struct Seen {
    bytes: Vec<u8>,
    controls: Vec<TerminalServerMessage>,
}

impl Seen {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Reads events into `seen` until `done` holds (bounded by [`PATIENCE`]).
async fn read_until(
    terminal: &mut Terminal,
    seen: &mut Seen,
    what: &str,
    done: impl Fn(&Seen) -> bool,
) {
    let deadline = Instant::now() + PATIENCE;
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, terminal.next()).await {
            Ok(TerminalEvent::Output(bytes)) => seen.bytes.extend_from_slice(&bytes),
            Ok(TerminalEvent::Control(message)) => seen.controls.push(message),
            Ok(TerminalEvent::Closed { code, reason }) => {
                panic!(
                    "closed ({code} {reason}) before {what}; saw {:?}",
                    seen.text()
                )
            }
            Err(_) => panic!(
                "never {what}; saw {:?} and {:?}",
                seen.text(),
                seen.controls
            ),
        }
    }
}

/// Attaches and reads through `hello`, the replay and `replayed`.
async fn attach(daemon: &Daemon, agent: &str, role: TerminalRole) -> (Terminal, Seen) {
    let mut terminal = daemon.client.attach(agent, role).await.expect("attach");
    let mut seen = Seen::default();
    read_until(&mut terminal, &mut seen, "replayed", |s| {
        s.controls
            .iter()
            .any(|c| matches!(c, TerminalServerMessage::Replayed { .. }))
    })
    .await;
    assert!(
        matches!(seen.controls[0], TerminalServerMessage::Hello { role: r, .. } if r == role),
        "hello first: {:?}",
        seen.controls
    );
    (terminal, seen)
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

async fn spawn(daemon: &Daemon, name: &str, command: &str) {
    daemon
        .spawn(AgentSpec {
            name: name.into(),
            command: command.into(),
            ..AgentSpec::default()
        })
        .await;
    daemon.wait_state(name, AgentState::Running).await;
}

/// Spawns `name` printing `count` numbered lines of `format` (a printf format of `$i`) once the
/// first client says go, then echoing input; returns that writer with everything it saw, which
/// is every byte the agent wrote, up to the line containing `last`.
async fn attached_before_output(
    daemon: &Daemon,
    name: &str,
    count: u32,
    format: &str,
    last: &str,
) -> (Terminal, Seen) {
    let command = format!(
        "read go; i=0; while [ $i -lt {count} ]; do printf '{format}' $i $((i % 7)); i=$((i+1)); done; exec cat"
    );
    spawn(daemon, name, &command).await;
    let (mut first, mut seen) = attach(daemon, name, TerminalRole::Writer).await;
    first.send_input("go\r").await.unwrap();
    read_until(&mut first, &mut seen, last, |s| s.text().contains(last)).await;
    (first, seen)
}

#[tokio::test]
async fn a_late_joiner_sees_what_a_continuous_client_saw() {
    let daemon = Daemon::start().await;
    let (mut first, mut seen_first) = attached_before_output(
        &daemon,
        "painter",
        300,
        "line %d \\033[1;3%dmcolour\\033[0m\\n",
        "line 299 ",
    )
    .await;
    let (mut late, mut seen_late) = attach(&daemon, "painter", TerminalRole::Viewer).await;
    first.send_input("more\r").await.unwrap();
    for (terminal, seen) in [(&mut first, &mut seen_first), (&mut late, &mut seen_late)] {
        // The terminal echoes `more`, then cat prints it again.
        read_until(terminal, seen, "more twice", |s| {
            count(&s.text(), "more") == 2
        })
        .await;
    }
    assert_eq!(
        seen_late.text(),
        seen_first.text(),
        "replay plus live output differs from what the first client saw"
    );
}

#[tokio::test]
async fn two_writers_interleave_and_a_viewer_cannot_write() {
    let daemon = Daemon::start().await;
    spawn(&daemon, "echo", "exec cat").await;
    let (mut alice, mut seen_alice) = attach(&daemon, "echo", TerminalRole::Writer).await;
    let (mut bob, _) = attach(&daemon, "echo", TerminalRole::Writer).await;
    let (mut viewer, mut seen_viewer) = attach(&daemon, "echo", TerminalRole::Viewer).await;
    alice.send_input("alpha\r").await.unwrap();
    bob.send_input("bravo\r").await.unwrap();
    viewer.send_input("mallory\r").await.unwrap();
    read_until(&mut viewer, &mut seen_viewer, "the read_only error", |s| {
        s.controls
            .iter()
            .any(|c| matches!(c, TerminalServerMessage::Error { code, .. } if code == "read_only"))
    })
    .await;
    // Input is written in the order it arrives: the viewer's came before this one.
    alice.send_input("charlie\r").await.unwrap();
    read_until(&mut alice, &mut seen_alice, "all three words", |s| {
        let text = s.text();
        ["alpha", "bravo", "charlie"]
            .iter()
            .all(|word| count(&text, word) == 2)
    })
    .await;
    assert!(!seen_alice.text().contains("mallory"));
}

#[tokio::test]
async fn a_writers_resize_reaches_the_program_and_survives_a_restart() {
    let daemon = Daemon::start().await;
    spawn(&daemon, "sizer", "while read line; do stty size; done").await;
    let (mut writer, mut seen_writer) = attach(&daemon, "sizer", TerminalRole::Writer).await;
    let (mut viewer, mut seen_viewer) = attach(&daemon, "sizer", TerminalRole::Viewer).await;
    writer
        .send_control(&TerminalClientMessage::Resize {
            cols: 123,
            rows: 45,
        })
        .await
        .unwrap();
    read_until(&mut viewer, &mut seen_viewer, "the size", |s| {
        s.controls.contains(&TerminalServerMessage::Size {
            cols: 123,
            rows: 45,
        })
    })
    .await;
    // A viewer's resize changes nothing; it is told the size.
    viewer
        .send_control(&TerminalClientMessage::Resize { cols: 50, rows: 10 })
        .await
        .unwrap();
    let sizes = |s: &Seen| {
        s.controls
            .iter()
            .filter(|c| matches!(c, TerminalServerMessage::Size { .. }))
            .count()
    };
    read_until(&mut viewer, &mut seen_viewer, "a second size", |s| {
        sizes(s) == 2
    })
    .await;
    assert_eq!(
        seen_viewer.controls.last(),
        Some(&TerminalServerMessage::Size {
            cols: 123,
            rows: 45
        })
    );
    writer.send_input("\r").await.unwrap();
    read_until(&mut writer, &mut seen_writer, "45 123", |s| {
        s.text().contains("45 123")
    })
    .await;
    writer
        .send_control(&TerminalClientMessage::Resize { cols: 0, rows: 10 })
        .await
        .unwrap();
    read_until(&mut writer, &mut seen_writer, "bad_size", |s| {
        s.controls
            .iter()
            .any(|c| matches!(c, TerminalServerMessage::Error { code, .. } if code == "bad_size"))
    })
    .await;

    // The clients stay attached across a restart, see it, and the new run keeps the size.
    assert!(daemon.ctl(&["restart", "sizer"]).status.success());
    read_until(&mut writer, &mut seen_writer, "exit and restarted", |s| {
        let exit = s
            .controls
            .iter()
            .position(|c| matches!(c, TerminalServerMessage::Exit { run: 1, .. }));
        let restarted = s
            .controls
            .iter()
            .position(|c| matches!(c, TerminalServerMessage::Restarted { run: 2, .. }));
        matches!((exit, restarted), (Some(e), Some(r)) if e < r)
    })
    .await;
    let before = count(&seen_writer.text(), "45 123");
    writer.send_input("\r").await.unwrap();
    read_until(&mut writer, &mut seen_writer, "45 123 again", |s| {
        count(&s.text(), "45 123") > before
    })
    .await;
}

#[tokio::test]
async fn a_client_that_never_reads_slows_neither_the_agent_nor_another_client() {
    let daemon = Daemon::start().await;
    spawn(
        &daemon,
        "firehose",
        "read go; yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 40000000; echo; echo DONE; exec sleep 600",
    )
    .await;
    let (stalled, _) = attach(&daemon, "firehose", TerminalRole::Viewer).await;
    let (mut reader, _) = attach(&daemon, "firehose", TerminalRole::Writer).await;
    reader.send_input("go\r").await.unwrap();
    let started = Instant::now();
    // The reader keeps only the tail: 40 MB need not be held.
    let deadline = Instant::now() + PATIENCE;
    let mut tail = Vec::new();
    let mut resyncs = 0;
    while !String::from_utf8_lossy(&tail).contains("DONE") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, reader.next()).await {
            Ok(TerminalEvent::Output(bytes)) => {
                tail.extend_from_slice(&bytes);
                let keep = tail.len().saturating_sub(64);
                tail.drain(..keep);
            }
            Ok(TerminalEvent::Control(TerminalServerMessage::Resync { .. })) => resyncs += 1,
            Ok(TerminalEvent::Control(_)) => {}
            other => panic!("the reading client never saw DONE: {other:?}"),
        }
    }
    println!(
        "40 MB through the terminal in {:?}; the reading client was resynced {resyncs} times",
        started.elapsed()
    );
    // The stalled client's socket is full, yet the daemon still serves the API promptly.
    let info = daemon.agent("firehose").await;
    assert_eq!(info.state, AgentState::Running);
    // Once it reads again, it is told what it missed and gets a replay.
    let mut stalled = stalled;
    let mut seen_stalled = Seen::default();
    read_until(&mut stalled, &mut seen_stalled, "a resync", |s| {
        s.controls.iter().any(
            |c| matches!(c, TerminalServerMessage::Resync { skipped_bytes } if *skipped_bytes > 0),
        )
    })
    .await;
}

#[tokio::test]
async fn tickets_are_single_use_bound_to_their_agent_and_origins_are_checked() {
    let daemon = Daemon::start().await;
    spawn(&daemon, "one", "exec cat").await;
    spawn(&daemon, "two", "exec cat").await;
    let client = &daemon.client;
    let refused = |result: Result<Terminal, ClientError>| match result {
        Err(ClientError::Api(error)) => error.code,
        Err(other) => panic!("expected an API error, got {other}"),
        Ok(_) => panic!("expected a refusal"),
    };

    let ticket = client
        .issue_terminal_ticket(
            "one",
            &TicketRequest {
                role: TerminalRole::Writer,
            },
        )
        .await
        .unwrap();
    assert_eq!(ticket.ticket.len(), 64);
    let terminal = client.open_terminal(&ticket.path, None).await.unwrap();
    terminal.close().await.unwrap();
    assert_eq!(
        refused(client.open_terminal(&ticket.path, None).await),
        ErrorCode::Unauthorized,
        "a ticket is good for one connection"
    );

    let ticket = client
        .issue_terminal_ticket(
            "one",
            &TicketRequest {
                role: TerminalRole::Writer,
            },
        )
        .await
        .unwrap();
    let elsewhere = ticket
        .path
        .replace(&ticket.agent_id, &daemon.agent("two").await.id);
    assert_eq!(
        refused(client.open_terminal(&elsewhere, None).await),
        ErrorCode::Unauthorized
    );
    assert_eq!(
        refused(client.open_terminal(&ticket.path, None).await),
        ErrorCode::Unauthorized,
        "a failed attempt used the ticket up"
    );

    let no_ticket = format!("/v1/agents/{}/terminal", ticket.agent_id);
    assert_eq!(
        refused(client.open_terminal(&no_ticket, None).await),
        ErrorCode::Unauthorized
    );
    let ticket = client
        .issue_terminal_ticket(
            "one",
            &TicketRequest {
                role: TerminalRole::Viewer,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        refused(
            client
                .open_terminal(&ticket.path, Some("http://evil.example"))
                .await
        ),
        ErrorCode::OriginNotAllowed
    );
    // The client sends `Host: localhost`: that origin is the daemon's own.
    let ticket = client
        .issue_terminal_ticket(
            "one",
            &TicketRequest {
                role: TerminalRole::Viewer,
            },
        )
        .await
        .unwrap();
    let terminal = client
        .open_terminal(&ticket.path, Some("http://localhost"))
        .await
        .unwrap();
    terminal.close().await.unwrap();

    let anonymous = client.clone().with_secret("");
    match anonymous
        .issue_terminal_ticket(
            "one",
            &TicketRequest {
                role: TerminalRole::Writer,
            },
        )
        .await
    {
        Err(ClientError::Api(error)) => assert_eq!(error.code, ErrorCode::Unauthorized),
        other => panic!("a ticket without the secret: {other:?}"),
    }
}

#[tokio::test]
async fn removal_and_daemon_stop_close_the_connection_with_their_codes() {
    let mut daemon = Daemon::start().await;
    spawn(&daemon, "doomed", "exec cat").await;
    spawn(&daemon, "stays", "exec cat").await;
    let (mut doomed, _) = attach(&daemon, "doomed", TerminalRole::Viewer).await;
    let (mut stays, _) = attach(&daemon, "stays", TerminalRole::Viewer).await;
    assert!(daemon.ctl(&["rm", "doomed"]).status.success());
    let closed = |event: TerminalEvent| match event {
        TerminalEvent::Closed { code, .. } => code,
        other => panic!("expected a close, got {other:?}"),
    };
    let mut code = 0;
    while code == 0 {
        match next(&mut doomed).await {
            TerminalEvent::Control(_) => {}
            event => code = closed(event),
        }
    }
    assert_eq!(code, 1000, "agent removed");
    daemon.signal_and_wait("TERM");
    let mut code = 0;
    while code == 0 {
        match next(&mut stays).await {
            TerminalEvent::Control(_) | TerminalEvent::Output(_) => {}
            event => code = closed(event),
        }
    }
    assert_eq!(code, 1001, "daemon stopping");
}

async fn next(terminal: &mut Terminal) -> TerminalEvent {
    tokio::time::timeout(PATIENCE, terminal.next())
        .await
        .expect("an event in time")
}

#[tokio::test]
async fn a_pipe_agent_takes_input_on_stdin_and_has_no_size() {
    let daemon = Daemon::start().await;
    daemon
        .spawn(AgentSpec {
            name: "piped".into(),
            command: "exec cat".into(),
            no_pty: true,
            ..AgentSpec::default()
        })
        .await;
    daemon.wait_state("piped", AgentState::Running).await;
    let (mut writer, mut seen) = attach(&daemon, "piped", TerminalRole::Writer).await;
    assert!(
        matches!(
            seen.controls[0],
            TerminalServerMessage::Hello {
                mode: IoMode::Pipes,
                ..
            }
        ),
        "{:?}",
        seen.controls[0]
    );
    writer.send_input("through stdin\n").await.unwrap();
    read_until(&mut writer, &mut seen, "cat's copy", |s| {
        // No terminal echo on pipes: the line comes back once, from cat.
        s.text() == "through stdin\n"
    })
    .await;
    writer
        .send_control(&TerminalClientMessage::Resize {
            cols: 100,
            rows: 30,
        })
        .await
        .unwrap();
    read_until(&mut writer, &mut seen, "not_a_terminal", |s| {
        s.controls.iter().any(
            |c| matches!(c, TerminalServerMessage::Error { code, .. } if code == "not_a_terminal"),
        )
    })
    .await;
    writer.send_text("{\"type\":\"paste\"}").await.unwrap();
    read_until(&mut writer, &mut seen, "bad_message", |s| {
        s.controls.iter().any(
            |c| matches!(c, TerminalServerMessage::Error { code, .. } if code == "bad_message"),
        )
    })
    .await;
    // Stopped: input is refused with a reason, and the client is still attached.
    assert!(daemon.ctl(&["stop", "piped"]).status.success());
    read_until(&mut writer, &mut seen, "the exit", |s| {
        s.controls
            .iter()
            .any(|c| matches!(c, TerminalServerMessage::Exit { .. }))
    })
    .await;
    writer.send_input("anyone?\n").await.unwrap();
    read_until(&mut writer, &mut seen, "not_running", |s| {
        s.controls.iter().any(
            |c| matches!(c, TerminalServerMessage::Error { code, .. } if code == "not_running"),
        )
    })
    .await;
}

#[tokio::test]
async fn a_late_joiner_to_more_than_the_scrollback_starts_at_a_whole_line() {
    let daemon = Daemon::start().await;
    let (mut first, mut seen_first) = attached_before_output(
        &daemon,
        "counter",
        20000,
        "%05d \\033[3%dmok\\033[0m\\n",
        "19999",
    )
    .await;
    let (mut late, mut seen_late) = attach(&daemon, "counter", TerminalRole::Viewer).await;
    let replay = seen_late.text();
    assert!(
        replay.len() <= 64 * 1024 && replay.len() > 60 * 1024,
        "{}",
        replay.len()
    );
    let head = replay.as_bytes();
    assert!(
        head.len() > 6 && head[..5].iter().all(u8::is_ascii_digit) && head[5] == b' ',
        "starts at a whole line: {:?}",
        &replay[..20]
    );
    assert!(seen_first.text().ends_with(&replay));
    first.send_input("tail\r").await.unwrap();
    read_until(&mut late, &mut seen_late, "tail twice", |s| {
        count(&s.text(), "tail") == 2
    })
    .await;
    read_until(&mut first, &mut seen_first, "tail twice", |s| {
        count(&s.text(), "tail") == 2
    })
    .await;
    assert!(seen_first.text().ends_with(&seen_late.text()));
}

#[tokio::test]
async fn after_a_daemon_restart_the_scrollback_still_holds_the_earlier_output() {
    let mut daemon = Daemon::start().await;
    spawn(
        &daemon,
        "survivor",
        "if [ -e seen ]; then echo second-run; else touch seen; echo first-run; fi; exec sleep 600",
    )
    .await;
    let (mut terminal, mut seen) = attach(&daemon, "survivor", TerminalRole::Viewer).await;
    read_until(&mut terminal, &mut seen, "first-run", |s| {
        s.text().contains("first-run")
    })
    .await;
    daemon.signal_and_wait("TERM");
    assert!(matches!(
        terminal.next().await,
        TerminalEvent::Closed { code: 1001, .. }
    ));
    daemon.restart_process().await;
    daemon.wait_state("survivor", AgentState::Running).await;
    let (mut terminal, mut seen) = attach(&daemon, "survivor", TerminalRole::Viewer).await;
    read_until(&mut terminal, &mut seen, "both runs' output", |s| {
        let text = s.text();
        text.contains("first-run") && text.contains("second-run")
    })
    .await;
    assert!(seen.text().find("first-run") < seen.text().find("second-run"));
}

#[tokio::test]
async fn input_sent_right_before_closing_is_delivered() {
    let daemon = Daemon::start().await;
    daemon
        .spawn(AgentSpec {
            name: "sink".into(),
            command: "exec cat > received.txt".into(),
            no_pty: true,
            ..AgentSpec::default()
        })
        .await;
    daemon.wait_state("sink", AgentState::Running).await;
    let mut expected = String::new();
    for round in 0..10 {
        // Closing at once, while the daemon may still be sending hello and the replay.
        let mut terminal = daemon
            .client
            .attach("sink", TerminalRole::Writer)
            .await
            .unwrap();
        let line = format!("last words {round}\n");
        terminal.send_input(line.clone()).await.unwrap();
        terminal.close().await.unwrap();
        expected.push_str(&line);
    }
    let file = daemon.work.path().join("received.txt");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let received = std::fs::read_to_string(&file).unwrap_or_default();
        if received == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "received {received:?}, expected {expected:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_resize_sends_sigwinch_to_the_program() {
    let daemon = Daemon::start().await;
    spawn(
        &daemon,
        "winch",
        "trap 'echo got-winch' WINCH; echo ready; while :; do sleep 0.05; done",
    )
    .await;
    let (mut writer, mut seen) = attach(&daemon, "winch", TerminalRole::Writer).await;
    read_until(&mut writer, &mut seen, "ready", |s| {
        s.text().contains("ready")
    })
    .await;
    assert!(!seen.text().contains("got-winch"));
    writer
        .send_control(&TerminalClientMessage::Resize { cols: 90, rows: 33 })
        .await
        .unwrap();
    read_until(&mut writer, &mut seen, "got-winch", |s| {
        s.text().contains("got-winch")
    })
    .await;
}

#[tokio::test]
async fn an_input_message_over_64_kib_closes_with_1009() {
    let daemon = Daemon::start().await;
    spawn(&daemon, "big", "exec cat").await;
    let (mut terminal, _) = attach(&daemon, "big", TerminalRole::Writer).await;
    terminal
        .send_input(vec![b'x'; 64 * 1024 + 1])
        .await
        .unwrap();
    loop {
        if let TerminalEvent::Closed { code, reason } = next(&mut terminal).await {
            assert_eq!(code, 1009, "{reason}");
            assert!(reason.contains("64 KiB"), "{reason}");
            break;
        }
    }
    assert_eq!(daemon.agent("big").await.state, AgentState::Running);
}

#[tokio::test]
async fn every_refused_upgrade_spends_its_ticket() {
    let daemon = Daemon::start().await;
    spawn(&daemon, "one", "exec cat").await;
    spawn(&daemon, "doomed", "exec cat").await;
    let client = &daemon.client;
    let refused = |result: Result<Terminal, ClientError>| match result {
        Err(ClientError::Api(error)) => error.code,
        Err(other) => panic!("expected an API error, got {other}"),
        Ok(_) => panic!("expected a refusal"),
    };
    let ticket = |agent: &'static str| async move {
        client
            .issue_terminal_ticket(
                agent,
                &TicketRequest {
                    role: TerminalRole::Viewer,
                },
            )
            .await
            .unwrap()
    };
    let spent = |path: String, after: &'static str| async move {
        assert_eq!(
            refused(client.open_terminal(&path, None).await),
            ErrorCode::Unauthorized,
            "the ticket refused with {after} is spent"
        );
    };
    let addr = daemon.tcp_addr();
    let raw = |path: String, headers: &'static str| async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n");
        let (status, _, body) = crate::edge::exchange(tcp, request.as_bytes()).await;
        let error: celistra_proto::ApiError = serde_json::from_str(&body).unwrap();
        (status, error.code)
    };

    // 403: a browser of another origin.
    let t = ticket("one").await;
    assert_eq!(
        refused(
            client
                .open_terminal(&t.path, Some("http://evil.example"))
                .await
        ),
        ErrorCode::OriginNotAllowed
    );
    spent(t.path, "403").await;

    // 401: the ticket of another agent.
    let t = ticket("one").await;
    let elsewhere = t
        .path
        .replace(&t.agent_id, &daemon.agent("doomed").await.id);
    assert_eq!(
        refused(client.open_terminal(&elsewhere, None).await),
        ErrorCode::Unauthorized
    );
    spent(t.path, "401").await;

    // 400: not a WebSocket upgrade; an upgrade that does not offer the subprotocol.
    let t = ticket("one").await;
    assert_eq!(
        raw(
            t.path.clone(),
            "Sec-WebSocket-Protocol: celistra.terminal.v1\r\n"
        )
        .await,
        (400, ErrorCode::InvalidRequest)
    );
    spent(t.path, "400 (no upgrade)").await;
    let t = ticket("one").await;
    let upgrade = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    assert_eq!(
        raw(t.path.clone(), upgrade).await,
        (400, ErrorCode::InvalidRequest)
    );
    spent(t.path, "400 (no subprotocol)").await;

    // 404: the agent was removed after its ticket was issued.
    let t = ticket("doomed").await;
    assert!(daemon.ctl(&["rm", "doomed"]).status.success());
    assert_eq!(
        refused(client.open_terminal(&t.path, None).await),
        ErrorCode::NotFound
    );
    spent(t.path, "404").await;

    // 429: the agent has as many clients as it accepts (each counted once it said hello).
    let mut attached = vec![];
    for _ in 0..256 {
        let t = ticket("one").await;
        let mut terminal = client.open_terminal(&t.path, None).await.unwrap();
        assert!(matches!(
            next(&mut terminal).await,
            TerminalEvent::Control(TerminalServerMessage::Hello { .. })
        ));
        attached.push(terminal);
    }
    let t = ticket("one").await;
    assert_eq!(
        refused(client.open_terminal(&t.path, None).await),
        ErrorCode::TooManyClients
    );
    attached.pop().unwrap().close().await.unwrap();
    spent(t.path, "429").await;
}
