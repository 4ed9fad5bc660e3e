//! Agent CLIs' hooks, client side: `ctl hooks install` writing Claude Code, Codex and Gemini CLI
//! settings (merged, idempotent, dry run, bad files untouched), and `celistrad hook <kind>`
//! reporting through an agent's socket (a stand-in HTTP server here) without ever failing the
//! agent's CLI.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{BIN, Daemon, spec};

/// `celistrad ctl hooks ARGS…`, which needs no daemon (`--home` points nowhere useful).
fn hooks(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["ctl", "hooks"])
        .args(args)
        .env_remove("CELISTRA_URL")
        .env_remove("CELISTRA_TOKEN")
        .output()
        .expect("run ctl hooks")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn install(cli: &str, dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["install", cli, "--workspace", dir.to_str().unwrap()];
    args.extend(extra);
    hooks(&args)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("settings")).expect("json")
}

/// Every command an event's hook groups run.
fn commands(settings: &serde_json::Value, event: &str) -> Vec<String> {
    settings["hooks"][event]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|group| group["hooks"].as_array().cloned().unwrap_or_default())
        .filter_map(|hook| hook["command"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn hooks_install_writes_each_clis_settings_into_an_empty_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let claude = install("claude", dir.path(), &[]);
    assert!(claude.status.success(), "{}", text(&claude.stderr));
    assert!(
        text(&claude.stdout)
            .contains("+ PermissionRequest (matcher *): celistrad ask --hook claude")
    );
    let settings = json(&dir.path().join(".claude/settings.json"));
    for event in [
        "UserPromptSubmit",
        "PreToolUse",
        "Notification",
        "Stop",
        "StopFailure",
        "SessionStart",
        "SessionEnd",
    ] {
        assert_eq!(
            commands(&settings, event),
            ["celistrad hook claude"],
            "{event}"
        );
    }
    assert_eq!(
        commands(&settings, "PermissionRequest"),
        ["celistrad hook claude", "celistrad ask --hook claude"]
    );

    let gemini = install("gemini", dir.path(), &[]);
    assert!(gemini.status.success(), "{}", text(&gemini.stderr));
    let settings = json(&dir.path().join(".gemini/settings.json"));
    for event in [
        "BeforeAgent",
        "AfterAgent",
        "BeforeTool",
        "AfterTool",
        "Notification",
        "SessionStart",
        "SessionEnd",
    ] {
        assert_eq!(
            commands(&settings, event),
            ["celistrad hook gemini"],
            "{event}"
        );
    }

    let codex = install("codex", dir.path(), &[]);
    assert!(codex.status.success(), "{}", text(&codex.stderr));
    let config = std::fs::read_to_string(dir.path().join(".codex/config.toml")).unwrap();
    assert!(
        config.contains(r#"notify = ["celistrad", "hook", "codex"]"#),
        "{config}"
    );
}

#[test]
fn hooks_install_keeps_the_users_hooks_and_a_second_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".claude/settings.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let user = r#"{
  "permissions": {"allow": ["Bash(ls:*)"]},
  "hooks": {
    "Stop": [{"hooks": [{"type": "command", "command": "notify-send done"}]}]
  }
}
"#;
    std::fs::write(&path, user).unwrap();
    let first = install("claude", dir.path(), &["--no-approvals"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let settings = json(&path);
    assert_eq!(settings["permissions"]["allow"][0], "Bash(ls:*)");
    assert_eq!(
        commands(&settings, "Stop"),
        ["notify-send done", "celistrad hook claude"]
    );
    assert_eq!(
        commands(&settings, "PermissionRequest"),
        ["celistrad hook claude"]
    );
    let written = std::fs::read(&path).unwrap();

    let second = install("claude", dir.path(), &["--no-approvals"]);
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert!(
        text(&second.stdout).contains("nothing to change"),
        "{}",
        text(&second.stdout)
    );
    assert_eq!(std::fs::read(&path).unwrap(), written);

    let codex_path = dir.path().join(".codex/config.toml");
    std::fs::create_dir_all(codex_path.parent().unwrap()).unwrap();
    std::fs::write(
        &codex_path,
        "# mine\nmodel = \"o3\"\n\n[tui]\nnotifications = true\n",
    )
    .unwrap();
    assert!(install("codex", dir.path(), &[]).status.success());
    let once = std::fs::read_to_string(&codex_path).unwrap();
    assert!(once.starts_with("# mine\nmodel = \"o3\"\n"), "{once}");
    let again = install("codex", dir.path(), &[]);
    assert!(text(&again.stdout).contains("nothing to change"));
    assert_eq!(std::fs::read_to_string(&codex_path).unwrap(), once);
}

#[test]
fn a_dry_run_writes_nothing_and_bad_settings_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let dry = install("gemini", dir.path(), &["--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    assert!(text(&dry.stdout).contains("would add"));
    assert!(!dir.path().join(".gemini").exists());

    let path = dir.path().join(".claude/settings.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let broken = "{\n  \"hooks\": {,\n}\n";
    std::fs::write(&path, broken).unwrap();
    let refused = install("claude", dir.path(), &[]);
    assert_eq!(refused.status.code(), Some(1));
    let said = text(&refused.stderr);
    assert!(
        said.contains("not valid JSON") && said.contains("left as it is"),
        "{said}"
    );
    assert!(said.contains("line 2"), "{said}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), broken);

    let codex = dir.path().join(".codex/config.toml");
    std::fs::create_dir_all(codex.parent().unwrap()).unwrap();
    std::fs::write(&codex, "notify = [\"my-notifier\"]\n").unwrap();
    let other = install("codex", dir.path(), &[]);
    assert_eq!(other.status.code(), Some(1));
    assert!(text(&other.stderr).contains("my-notifier"));
    assert_eq!(
        std::fs::read_to_string(&codex).unwrap(),
        "notify = [\"my-notifier\"]\n"
    );
}

#[tokio::test]
async fn hooks_install_finds_an_agents_workspace_through_the_daemon() {
    let daemon = Daemon::start().await;
    daemon.spawn(spec("coder", "true")).await;
    let out = daemon.ctl(&["hooks", "install", "claude", "--agent", "coder"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(daemon.work.path().join(".claude/settings.json").is_file());
}

/// `celistrad hook ARGS…` with `stdin`, and the socket variable set to `socket` (or unset).
fn run_hook(args: &[&str], stdin: &str, socket: Option<&Path>) -> (Output, Duration) {
    let mut command = Command::new(BIN);
    command
        .arg("hook")
        .args(args)
        .env_remove("CELISTRA_ASK_SOCKET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(socket) = socket {
        command.env("CELISTRA_ASK_SOCKET", socket);
    }
    let started = Instant::now();
    let mut child = command.spawn().expect("run celistrad hook");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().expect("wait");
    (out, started.elapsed())
}

/// One request as a stand-in agent socket received it: its head and body.
struct Received {
    head: String,
    body: serde_json::Value,
}

/// Serves one connection on a fresh socket with `answer` (None: never answers), handing the
/// request over.
fn stand_in_socket(
    dir: &Path,
    answer: Option<&'static str>,
) -> (std::path::PathBuf, std::sync::mpsc::Receiver<Received>) {
    let path = dir.join("ask.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let body = serde_json::from_slice(&body).unwrap();
        let _ = sender.send(Received { head, body });
        match answer {
            Some(answer) => {
                let mut stream = stream;
                stream.write_all(answer.as_bytes()).unwrap();
            }
            None => std::thread::sleep(Duration::from_secs(10)),
        }
    });
    (path, receiver)
}

#[test]
fn hook_outside_an_agent_says_so_and_exits_0_with_nothing_on_stdout() {
    let (out, _) = run_hook(&["claude"], r#"{"hook_event_name":"Stop"}"#, None);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("CELISTRA_ASK_SOCKET is not set"));
    let (bad_kind, _) = run_hook(&["Claude"], "{}", None);
    assert_eq!(bad_kind.status.code(), Some(2));
}

#[test]
fn hook_posts_the_payload_to_the_agents_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, received) = stand_in_socket(
        dir.path(),
        Some("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"),
    );
    let payload = r#"{"hook_event_name":"Notification","notification_type":"idle_prompt"}"#;
    let (out, _) = run_hook(&["claude"], payload, Some(&socket));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "{}",
        text(&out.stderr)
    );
    let request = received.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        request.head.starts_with("POST /v1/hook HTTP/1.1\r\n"),
        "{}",
        request.head
    );
    assert!(
        request
            .head
            .to_ascii_lowercase()
            .contains("content-type: application/json")
    );
    assert_eq!(request.body["kind"], "claude");
    assert_eq!(request.body["payload"]["notification_type"], "idle_prompt");

    // Codex: the JSON is notify's last argument.
    let dir = tempfile::tempdir().unwrap();
    let (socket, received) = stand_in_socket(
        dir.path(),
        Some("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"),
    );
    let turn = r#"{"type":"agent-turn-complete","turn-id":"7","last-assistant-message":"done"}"#;
    let (out, _) = run_hook(&["codex", turn], "", Some(&socket));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let request = received.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(request.body["kind"], "codex");
    assert_eq!(request.body["payload"]["type"], "agent-turn-complete");
}

#[test]
fn hook_never_fails_the_agent_when_the_daemon_refuses_is_gone_or_is_silent() {
    // Refused: the daemon's message on stderr, exit 0.
    let dir = tempfile::tempdir().unwrap();
    let refusal = "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 58\r\nConnection: close\r\n\r\n{\"code\":\"invalid_request\",\"message\":\"no such hook kind!!\"}";
    let (socket, _received) = stand_in_socket(dir.path(), Some(refusal));
    let (out, _) = run_hook(
        &["gemini"],
        r#"{"hook_event_name":"AfterAgent"}"#,
        Some(&socket),
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("not reported"),
        "{}",
        text(&out.stderr)
    );

    // No daemon behind the path: exit 0, one line why.
    let (out, _) = run_hook(&["claude"], "{}", Some(&dir.path().join("gone.sock")));
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert_eq!(
        text(&out.stderr).lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );

    // Not JSON: not sent, exit 0.
    let (out, _) = run_hook(&["claude"], "hello", Some(&dir.path().join("gone.sock")));
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("not JSON"));

    // A daemon that never answers: given up after 3 s.
    let silent = tempfile::tempdir().unwrap();
    let (socket, _received) = stand_in_socket(silent.path(), None);
    let (out, took) = run_hook(&["claude"], "{}", Some(&socket));
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("did not answer"),
        "{}",
        text(&out.stderr)
    );
    assert!(took < Duration::from_secs(6), "{took:?}");
}
