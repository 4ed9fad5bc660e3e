//! `ctl attach` run in a real terminal (a test PTY): typing, sizes, the detach key and the terminal's
//! settings restored, read-only, piped input, a removed agent, and reconnecting across a daemon
//! restart.

use std::process::Stdio;
use std::time::Instant;

use celistra_client::{Terminal, TerminalEvent};
use celistra_proto::{AgentState, TerminalRole, TerminalServerMessage};
use rustix::termios::{self, SpecialCodeIndex, Termios};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{BIN, Daemon, PATIENCE, spec};

const DETACH: &[u8] = b"\x1d";

/// `celistrad ctl attach …` running in a test PTY of its own.
struct AttachedCtl {
    pty: pty_process::Pty,
    /// Held open so that the terminal's settings outlive ctl: a PTY's are reset at its last close.
    _pts: pty_process::Pts,
    child: tokio::process::Child,
    /// Everything ctl wrote (stdout and stderr: both are the PTY).
    transcript: Vec<u8>,
    /// Where the next [`AttachedCtl::expect`] starts searching.
    searched_to: usize,
}

impl AttachedCtl {
    async fn start(daemon: &Daemon, args: &[&str], rows: u16, cols: u16) -> AttachedCtl {
        let (pty, pts) = pty_process::open().expect("open a test pty");
        pty.resize(pty_process::Size::new(rows, cols))
            .expect("size the test pty");
        let child = pty_process::Command::new(BIN)
            .arg("ctl")
            .arg("--home")
            .arg(daemon.home())
            .arg("attach")
            .args(args)
            .kill_on_drop(true)
            .spawn_borrowed(&pts)
            .expect("start ctl attach");
        AttachedCtl {
            pty,
            _pts: pts,
            child,
            transcript: vec![],
            searched_to: 0,
        }
    }

    /// Reads ctl's output until `needle` appears after the previous match (bounded).
    async fn expect(&mut self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(at) = find(&self.transcript[self.searched_to..], needle.as_bytes()) {
                self.searched_to += at + needle.len();
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let mut buffer = [0; 4096];
            match tokio::time::timeout(left, self.pty.read(&mut buffer)).await {
                Ok(Ok(read)) if read > 0 => self.transcript.extend_from_slice(&buffer[..read]),
                outcome => panic!(
                    "never saw {needle:?} ({outcome:?}); ctl wrote {:?}",
                    self.text()
                ),
            }
        }
    }

    async fn type_bytes(&mut self, bytes: &[u8]) {
        self.pty.write_all(bytes).await.expect("type into ctl");
    }

    fn settings(&self) -> Termios {
        // On Linux, a PTY's master reads the settings of its terminal side.
        termios::tcgetattr(&self.pty).expect("tcgetattr")
    }

    /// Waits (bounded) for ctl to exit, reading what it still writes; returns its exit code.
    async fn exit_code(&mut self) -> i32 {
        let deadline = Instant::now() + PATIENCE;
        let mut buffer = [0; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::select! {
                status = self.child.wait() => return status.expect("wait for ctl").code().expect("an exit code"),
                Ok(read) = self.pty.read(&mut buffer) => self.transcript.extend_from_slice(&buffer[..read]),
                () = tokio::time::sleep(left) => panic!("ctl did not exit; it wrote {:?}", self.text()),
            }
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.transcript).into_owned()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The settings raw mode changes.
fn raw_relevant(settings: &Termios) -> impl PartialEq + std::fmt::Debug {
    (
        settings.input_modes,
        settings.output_modes,
        settings.control_modes,
        settings.local_modes,
        settings.special_codes[SpecialCodeIndex::VMIN],
        settings.special_codes[SpecialCodeIndex::VTIME],
    )
}

/// Watches the agent's terminal as a viewer until its size is `cols`×`rows` (bounded): then a
/// writer's resize has reached the agent's PTY.
async fn wait_size(daemon: &Daemon, agent: &str, cols: u16, rows: u16) {
    let mut viewer: Terminal = daemon
        .client
        .attach(agent, TerminalRole::Viewer)
        .await
        .expect("attach a viewer");
    let deadline = Instant::now() + PATIENCE;
    let mut sizes = vec![];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(event) = tokio::time::timeout(left, viewer.next()).await else {
            panic!("the size never became {cols}x{rows}; it was {sizes:?}");
        };
        let size = match event {
            TerminalEvent::Control(TerminalServerMessage::Hello { size, .. }) => {
                (size.cols, size.rows)
            }
            TerminalEvent::Control(TerminalServerMessage::Size { cols, rows }) => (cols, rows),
            TerminalEvent::Closed { code, reason } => panic!("viewer closed: {code} {reason}"),
            TerminalEvent::Output(_) | TerminalEvent::Control(_) => continue,
        };
        if size == (cols, rows) {
            return;
        }
        sizes.push(size);
    }
}

/// Attaches to `shell` through the API (a second client beside ctl).
async fn attach(daemon: &Daemon, role: TerminalRole) -> Terminal {
    daemon
        .client
        .attach("shell", role)
        .await
        .expect("attach through the API")
}

/// The agent's output (replay and live) until `needle` appears in it (bounded).
async fn output_until(terminal: &mut Terminal, needle: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    let mut seen = vec![];
    while find(&seen, needle.as_bytes()).is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, terminal.next()).await {
            Ok(TerminalEvent::Output(bytes)) => seen.extend_from_slice(&bytes),
            Ok(TerminalEvent::Control(_)) => {}
            other => panic!(
                "never saw {needle:?} ({other:?}); saw {:?}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// A daemon with an interactive shell agent called `shell`, running.
async fn daemon_with_shell() -> Daemon {
    let daemon = Daemon::start().await;
    daemon.spawn(spec("shell", "sh")).await;
    daemon.wait_state("shell", AgentState::Running).await;
    daemon
}

#[tokio::test]
async fn a_writer_types_resizes_and_detaches_restoring_the_terminal() {
    let daemon = daemon_with_shell().await;
    let mut ctl = AttachedCtl::start(&daemon, &["shell"], 30, 100).await;
    let before = ctl.settings();
    ctl.expect("[attached to shell (").await;
    ctl.expect("as writer; detach with Ctrl-]]").await;
    assert!(
        !termios::tcgetattr(&ctl.pty)
            .unwrap()
            .local_modes
            .intersects(termios::LocalModes::ICANON | termios::LocalModes::ECHO),
        "ctl did not switch its terminal to raw mode"
    );

    ctl.type_bytes(b"echo hel''lo-$((6*7))\r").await;
    ctl.expect("hello-42").await;

    wait_size(&daemon, "shell", 100, 30).await;
    ctl.type_bytes(b"stty size\r").await;
    ctl.expect("30 100").await;
    ctl.pty
        .resize(pty_process::Size::new(40, 120))
        .expect("resize the test pty");
    wait_size(&daemon, "shell", 120, 40).await;
    ctl.type_bytes(b"stty size\r").await;
    ctl.expect("40 120").await;

    // What precedes the key in the same read is sent; the key itself is not (the shell would echo
    // it as ^]).
    ctl.type_bytes(b"echo bye-$((6*7))\r\x1d").await;
    ctl.expect("[detached from shell]").await;
    assert_eq!(ctl.exit_code().await, 0, "{}", ctl.text());
    assert_eq!(raw_relevant(&ctl.settings()), raw_relevant(&before));
    let mut writer = attach(&daemon, TerminalRole::Writer).await;
    writer.send_input(&b"echo mark''er\r"[..]).await.unwrap();
    let output = output_until(&mut writer, "marker").await;
    assert!(
        output.contains("bye-42") && !output.contains("^]"),
        "{output:?}"
    );
}

#[tokio::test]
async fn sigterm_and_sighup_detach_restoring_the_terminal() {
    let daemon = daemon_with_shell().await;
    for signal in ["TERM", "HUP"] {
        let mut ctl = AttachedCtl::start(&daemon, &["shell"], 24, 80).await;
        let before = ctl.settings();
        ctl.expect("[attached to shell (").await;
        crate::run_kill(signal, ctl.child.id().expect("ctl runs"));
        ctl.expect("[detached from shell]").await;
        assert_eq!(ctl.exit_code().await, 0, "SIG{signal}: {}", ctl.text());
        assert_eq!(
            raw_relevant(&ctl.settings()),
            raw_relevant(&before),
            "SIG{signal}"
        );
    }
}

#[tokio::test]
async fn a_viewer_is_told_its_input_is_refused_and_the_agent_never_sees_it() {
    let daemon = daemon_with_shell().await;
    let mut ctl = AttachedCtl::start(&daemon, &["shell", "--read-only"], 24, 80).await;
    ctl.expect("as viewer; detach with Ctrl-]]").await;
    ctl.type_bytes(b"echo sec''ret-$((6*7))\r").await;
    ctl.expect("[celistra: this client is attached read-only")
        .await;

    // A writer's marker, seen by the viewer, shows that the agent has read everything before it.
    let mut writer = attach(&daemon, TerminalRole::Writer).await;
    writer
        .send_input(&b"echo mark''er-$((6*7))\r"[..])
        .await
        .unwrap();
    ctl.expect("marker-42").await;
    assert!(!ctl.text().contains("secret-42") && !ctl.text().contains("sec''ret"));

    ctl.type_bytes(DETACH).await;
    assert_eq!(ctl.exit_code().await, 0, "{}", ctl.text());
    let _ = writer.close().await;
}

#[tokio::test]
async fn a_custom_detach_key_detaches_and_unknown_keys_are_usage_errors() {
    let daemon = daemon_with_shell().await;
    let mut ctl = AttachedCtl::start(&daemon, &["shell", "--detach-key", "Ctrl-Q"], 24, 80).await;
    ctl.expect("detach with Ctrl-Q]").await;
    // Ctrl-] is an ordinary key now: it goes to the shell, which does not end ctl.
    ctl.type_bytes(b"\x1d\x15echo still-$((6*7))\r").await;
    ctl.expect("still-42").await;
    ctl.type_bytes(b"\x11").await;
    assert_eq!(ctl.exit_code().await, 0, "{}", ctl.text());

    let refused = daemon.ctl(&["attach", "shell", "--detach-key", "ctrl-1"]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("ctrl-], ctrl-\\, ctrl-^"), "{stderr}");
}

#[tokio::test]
async fn piped_input_is_sent_and_its_end_detaches() {
    let daemon = daemon_with_shell().await;
    let mut viewer = attach(&daemon, TerminalRole::Viewer).await;
    let mut ctl = tokio::process::Command::new(BIN)
        .arg("ctl")
        .arg("--home")
        .arg(daemon.home())
        .args(["attach", "shell"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start ctl attach");
    let mut stdin = ctl.stdin.take().unwrap();
    stdin.write_all(b"echo pi''ped-$((6*7))\n").await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(PATIENCE, ctl.wait_with_output())
        .await
        .expect("ctl exits at the end of its input")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("[detached from shell]"), "{stderr}");
    // Not a terminal: no screen clearing in what ctl printed.
    assert!(!output.stdout.starts_with(b"\x1b[H"));

    output_until(&mut viewer, "piped-42").await;
}

#[tokio::test]
async fn removing_the_agent_ends_the_attachment_successfully() {
    let daemon = daemon_with_shell().await;
    let mut ctl = AttachedCtl::start(&daemon, &["shell"], 24, 80).await;
    ctl.expect("[attached to shell (").await;
    let removed = daemon.ctl(&["rm", "shell"]);
    assert!(removed.status.success(), "{removed:?}");
    ctl.expect("[celistra: shell was removed]").await;
    assert_eq!(ctl.exit_code().await, 0, "{}", ctl.text());
}

#[tokio::test]
async fn a_daemon_restart_is_survived_by_reconnecting() {
    let mut daemon = daemon_with_shell().await;
    let mut ctl = AttachedCtl::start(&daemon, &["shell"], 24, 80).await;
    ctl.expect("[attached to shell (").await;

    assert!(daemon.signal_and_wait("TERM").success());
    ctl.expect("[celistra: connection lost (daemon stopping); reconnecting…]")
        .await;
    daemon.restart_process().await;
    ctl.expect("[attached to shell (").await;
    daemon.wait_state("shell", AgentState::Running).await;
    ctl.type_bytes(b"echo back-$((6*7))\r").await;
    ctl.expect("back-42").await;

    ctl.type_bytes(DETACH).await;
    assert_eq!(ctl.exit_code().await, 0, "{}", ctl.text());
}
