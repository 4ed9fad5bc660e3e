//! `ctl` against a remote daemon: over TLS with a pinned fingerprint (list, logs, events, the
//! terminal WebSocket over wss, `ctl attach`), a wrong pin or a bad token refused clearly, and
//! saved contexts with the precedence flags > environment > current context > local socket.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use celistra_client::{Client, Fingerprint, SseParser, TerminalEvent, next_chunk};
use celistra_proto::{AgentState, Event, TerminalRole};

use crate::tls::tls_health;
use crate::{BIN, Daemon, PATIENCE, spec};

/// Runs `celistrad ctl` with only the `CELISTRA_*` variables given, and a contexts directory of
/// the test's own (never the user's).
fn ctl(config: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("ctl")
        .args(args)
        .env_remove("CELISTRA_URL")
        .env_remove("CELISTRA_TOKEN")
        .env_remove("CELISTRA_FINGERPRINT")
        .env_remove("CELISTRA_HOME")
        .env("CELISTRA_CONFIG_DIR", config)
        .envs(env.iter().copied())
        .output()
        .expect("run ctl")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A TLS daemon and how to reach it: (daemon, https URL, secret, fingerprint).
async fn tls_daemon() -> (Daemon, String, String, String) {
    let daemon = Daemon::start_with_args(&["--tls"]).await;
    let url = format!("https://127.0.0.1:{}", daemon.tcp_addr().port());
    let secret = daemon.secret();
    let fingerprint = tls_health(&daemon).await.fingerprint_sha256;
    (daemon, url, secret, fingerprint)
}

/// `ab:cd:…` in capitals, the form openssl prints.
fn colon_form(fingerprint: &str) -> String {
    fingerprint
        .as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).to_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}

#[tokio::test]
async fn ctl_reaches_a_remote_daemon_over_tls_with_a_pinned_fingerprint() {
    let (daemon, url, secret, fingerprint) = tls_daemon().await;
    let config = tempfile::tempdir().unwrap();
    let marker = crate::marker();
    daemon
        .spawn(spec(
            "remote-one",
            &format!("echo hello-{marker}; exec sleep {marker}"),
        ))
        .await;
    daemon.wait_state("remote-one", AgentState::Running).await;

    for pin in [fingerprint.clone(), colon_form(&fingerprint)] {
        let flags = ["--url", &url, "--token", &secret, "--fingerprint", &pin];
        let out = ctl(config.path(), &[], &[&flags[..], &["ls"]].concat());
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("remote-one"), "{}", stdout(&out));
    }
    let flags = [
        "--url",
        &url,
        "--token",
        &secret,
        "--fingerprint",
        &fingerprint,
    ];
    let deadline = Instant::now() + PATIENCE;
    loop {
        let out = ctl(
            config.path(),
            &[],
            &[&flags[..], &["logs", "remote-one"]].concat(),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        if stdout(&out).contains(&format!("hello-{marker}")) {
            break;
        }
        assert!(Instant::now() < deadline, "logs: {}", stdout(&out));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let out = ctl(
        config.path(),
        &[],
        &[&flags[..], &["events", "--json"]].concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("agent_spawned"), "{}", stdout(&out));
}

#[tokio::test]
async fn events_and_the_terminal_websocket_work_over_tls_and_end_at_shutdown() {
    let (mut daemon, url, secret, fingerprint) = tls_daemon().await;
    let pin: Fingerprint = fingerprint.parse().unwrap();
    let client = Client::remote(&url, &secret, Some(pin), "test").expect("client");
    daemon.spawn(spec("echoer", "exec cat")).await;
    daemon.wait_state("echoer", AgentState::Running).await;

    // Server-sent events through the TLS stream.
    let mut body = client
        .send(hyper::Method::GET, "/v1/events?after=0", None)
        .await
        .expect("sse")
        .into_body();
    let mut parser = SseParser::default();
    let spawned = async {
        while let Some(chunk) = next_chunk(&mut body).await.expect("events") {
            for frame in parser.feed(&chunk) {
                let event: Event = serde_json::from_str(&frame.data).expect("event");
                if serde_json::to_string(&event).unwrap().contains("echoer") {
                    return;
                }
            }
        }
        panic!("the event stream ended");
    };
    tokio::time::timeout(PATIENCE, spawned)
        .await
        .expect("the spawn event over TLS");

    // The terminal over wss: input goes in, the echo comes back.
    let mut terminal = client
        .attach("echoer", TerminalRole::Writer)
        .await
        .expect("attach over wss");
    terminal.send_input("over-wss\r").await.unwrap();
    let mut seen = Vec::new();
    let echoed = async {
        loop {
            match terminal.next().await {
                TerminalEvent::Output(bytes) => {
                    seen.extend_from_slice(&bytes);
                    if String::from_utf8_lossy(&seen).contains("over-wss") {
                        return;
                    }
                }
                TerminalEvent::Control(_) => {}
                TerminalEvent::Closed { code, reason } => panic!("closed {code} {reason}"),
            }
        }
    };
    tokio::time::timeout(PATIENCE, echoed)
        .await
        .expect("the echo over wss");

    // Shutdown is graceful over TLS too: the open event stream and terminal end, the daemon exits.
    assert!(daemon.signal_and_wait("TERM").success());
    let closed = async {
        loop {
            if let TerminalEvent::Closed { .. } = terminal.next().await {
                return;
            }
        }
    };
    tokio::time::timeout(PATIENCE, closed)
        .await
        .expect("the terminal closed at shutdown");
    let ended = async { while let Ok(Some(_)) = next_chunk(&mut body).await {} };
    tokio::time::timeout(PATIENCE, ended)
        .await
        .expect("the event stream ended at shutdown");
}

/// Reads `pty` into `seen` until `needle` appears (bounded).
async fn read_until(pty: &mut pty_process::Pty, seen: &mut Vec<u8>, needle: &str) {
    use tokio::io::AsyncReadExt;
    let read = async {
        while !String::from_utf8_lossy(seen).contains(needle) {
            let mut buffer = [0u8; 4096];
            let n = pty.read(&mut buffer).await.unwrap_or(0);
            assert!(
                n > 0,
                "ctl ended before {needle:?}: {}",
                String::from_utf8_lossy(seen)
            );
            seen.extend_from_slice(&buffer[..n]);
        }
    };
    if tokio::time::timeout(PATIENCE, read).await.is_err() {
        panic!("never saw {needle:?}: {}", String::from_utf8_lossy(seen));
    }
}

#[tokio::test]
async fn ctl_attach_works_against_a_remote_daemon() {
    use tokio::io::AsyncWriteExt;
    let (daemon, url, secret, fingerprint) = tls_daemon().await;
    daemon.spawn(spec("remote-shell", "sh")).await;
    daemon.wait_state("remote-shell", AgentState::Running).await;
    let config = tempfile::tempdir().unwrap();
    let (mut pty, pts) = pty_process::open().expect("pty");
    pty.resize(pty_process::Size::new(24, 80)).expect("resize");
    let mut child = pty_process::Command::new(BIN)
        .args([
            "ctl",
            "--url",
            &url,
            "--token",
            &secret,
            "--fingerprint",
            &fingerprint,
        ])
        .args(["attach", "remote-shell"])
        .env_remove("CELISTRA_HOME")
        .env("CELISTRA_CONFIG_DIR", config.path())
        .kill_on_drop(true)
        .spawn_borrowed(&pts)
        .expect("start ctl attach");
    let mut seen = Vec::new();
    read_until(&mut pty, &mut seen, "[attached to remote-shell").await;
    // The shell computes the answer, so it cannot be a local echo of what was typed.
    pty.write_all(b"echo hel''lo-$((6*7))\r").await.unwrap();
    read_until(&mut pty, &mut seen, "hello-42").await;
    pty.write_all(b"\x1d").await.unwrap();
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("ctl attach exits after detaching")
        .unwrap();
    assert!(
        status.success(),
        "{status:?}: {}",
        String::from_utf8_lossy(&seen)
    );
}

#[tokio::test]
async fn a_wrong_fingerprint_a_missing_pin_and_a_bad_token_are_refused_clearly() {
    let (_daemon, url, secret, fingerprint) = tls_daemon().await;
    let config = tempfile::tempdir().unwrap();
    let wrong = format!(
        "{}{}",
        if fingerprint.starts_with('0') {
            "1"
        } else {
            "0"
        },
        &fingerprint[1..]
    );
    let out = ctl(
        config.path(),
        &[],
        &[
            "--url",
            &url,
            "--token",
            &secret,
            "--fingerprint",
            &wrong,
            "ls",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(
        message.contains(&fingerprint) && message.contains(&wrong),
        "{message}"
    );

    // Without a pin the platform's roots decide, and they do not know a self-signed certificate.
    let out = ctl(
        config.path(),
        &[],
        &["--url", &url, "--token", &secret, "ls"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--fingerprint"), "{}", stderr(&out));

    let out = ctl(
        config.path(),
        &[],
        &[
            "--url",
            &url,
            "--token",
            "not-the-token",
            "--fingerprint",
            &fingerprint,
            "ls",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(
        message.contains("401") && message.contains("wrong, expired or revoked"),
        "{message}"
    );

    // Usage errors: a malformed pin, a pin on plain http, a URL without a token.
    for args in [
        vec!["--url", &url, "--token", "t", "--fingerprint", "abc", "ls"],
        vec![
            "--url",
            "http://127.0.0.1:1",
            "--token",
            "t",
            "--fingerprint",
            &fingerprint,
            "ls",
        ],
        vec!["--url", &url, "ls"],
        vec!["--url", "ftp://127.0.0.1", "--token", "t", "ls"],
    ] {
        let out = ctl(config.path(), &[], &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn contexts_are_saved_privately_listed_without_tokens_used_and_removed() {
    let (daemon, url, secret, fingerprint) = tls_daemon().await;
    daemon.spawn(spec("in-context", "exec sleep 1000")).await;
    let config = tempfile::tempdir().unwrap();
    let dir = config.path().join("nested");
    let file = dir.join("contexts.json");
    let out = ctl(
        &dir,
        &[],
        &[
            "context",
            "add",
            "prod",
            "--url",
            &url,
            "--token",
            &secret,
            "--fingerprint",
            &colon_form(&fingerprint),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&dir), 0o700);

    let listed = ctl(&dir, &[], &["context", "ls"]);
    assert!(listed.status.success());
    assert!(stdout(&listed).contains("prod") && stdout(&listed).contains(&fingerprint));
    assert!(!stdout(&listed).contains(&secret), "{}", stdout(&listed));
    let json = ctl(&dir, &[], &["context", "ls", "--json"]);
    let contexts: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(contexts[0]["name"], "prod");
    assert_eq!(contexts[0]["url"], url.as_str());
    assert_eq!(contexts[0]["fingerprint"], fingerprint.as_str());
    assert_eq!(contexts[0]["current"], false);
    assert!(!stdout(&json).contains(&secret));

    assert_eq!(
        ctl(&dir, &[], &["context", "use", "nope"]).status.code(),
        Some(1)
    );
    assert!(ctl(&dir, &[], &["context", "use", "prod"]).status.success());
    let json = ctl(&dir, &[], &["context", "ls", "--json"]);
    let contexts: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(contexts[0]["current"], true);
    // No --home, no URL: the current context is the daemon.
    let out = ctl(&dir, &[], &["ls"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("in-context"));

    // Readable by others: refused, saying how to fix it.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = ctl(&dir, &[], &["ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();

    assert!(ctl(&dir, &[], &["context", "rm", "prod"]).status.success());
    assert_eq!(
        ctl(&dir, &[], &["context", "rm", "prod"]).status.code(),
        Some(1)
    );
    let json = ctl(&dir, &[], &["context", "ls", "--json"]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&json.stdout).unwrap(),
        serde_json::json!([])
    );
    assert_eq!(mode(&file), 0o600);
}

#[tokio::test]
async fn flags_beat_the_environment_which_beats_the_current_context() {
    let (daemon, url, secret, fingerprint) = tls_daemon().await;
    daemon.spawn(spec("precedence", "exec sleep 1000")).await;
    let config = tempfile::tempdir().unwrap();
    let dir = config.path();
    // The context holds a stale token.
    let out = ctl(
        dir,
        &[],
        &[
            "context",
            "add",
            "stale",
            "--url",
            &url,
            "--token",
            "stale-token",
            "--fingerprint",
            &fingerprint,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(ctl(dir, &[], &["context", "use", "stale"]).status.success());
    let refused = |out: &Output| out.status.code() == Some(1) && stderr(out).contains("401");

    assert!(
        refused(&ctl(dir, &[], &["ls"])),
        "the context's stale token"
    );
    let env_token = [("CELISTRA_TOKEN", secret.as_str())];
    let out = ctl(dir, &env_token, &["ls"]);
    assert!(
        out.status.success(),
        "env beats the context: {}",
        stderr(&out)
    );
    assert!(
        refused(&ctl(dir, &env_token, &["--token", "flag-token", "ls"])),
        "the flag beats the environment"
    );

    // An address from the environment beats the context's; a flag beats that.
    let unreachable = [
        ("CELISTRA_URL", "https://127.0.0.1:1"),
        ("CELISTRA_TOKEN", secret.as_str()),
        ("CELISTRA_FINGERPRINT", fingerprint.as_str()),
    ];
    let out = ctl(dir, &unreachable, &["ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("127.0.0.1:1"), "{}", stderr(&out));
    let out = ctl(dir, &unreachable, &["--url", &url, "ls"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("precedence"));

    // A context's token never goes to another address.
    let out = ctl(dir, &[], &["--url", "https://127.0.0.1:1", "ls"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no token"), "{}", stderr(&out));

    // Back to the local socket.
    assert!(
        ctl(dir, &[], &["context", "use", "--local"])
            .status
            .success()
    );
    let home = daemon.home().to_str().unwrap();
    let out = ctl(dir, &[], &["--home", home, "ls"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("precedence"));
}
