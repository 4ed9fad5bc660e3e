//! The `ctl` command line: JSON shapes, human tables, exit codes, usage errors, a dead daemon.

use celistra_proto::{AgentState, EventKind};

use crate::{BIN, Daemon};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn spawn_ls_status_and_json_shapes() {
    let daemon = Daemon::start().await;
    let ws = daemon.work.path().display().to_string();
    let out = daemon.ctl(&[
        "spawn",
        "--name",
        "scraper",
        "--auto-restart",
        "--workspace",
        &ws,
        "--env",
        "A=1",
        "sleep 100",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_owned();
    assert!(id.starts_with("ag-") && id.len() >= 7, "{id}");

    let out = daemon.ctl(&["ls", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let agent = &list.as_array().expect("array")[0];
    for field in [
        "id",
        "name",
        "state",
        "pid",
        "restarts",
        "exit_code",
        "command",
        "workspace",
        "auto_restart",
    ] {
        assert!(
            agent.get(field).is_some(),
            "ls --json lacks {field}: {agent}"
        );
    }
    assert_eq!(
        (agent["name"].as_str(), agent["auto_restart"].as_bool()),
        (Some("scraper"), Some(true))
    );

    let out = daemon.ctl(&["status", "scraper", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["id"], id.as_str());
    assert_eq!(status["env_keys"], serde_json::json!(["A"]));

    let table = text(&daemon.ctl(&["ls"]).stdout);
    let header = table.lines().next().unwrap();
    let row = table.lines().nth(1).unwrap();
    assert!(header.starts_with("ID") && header.contains("STATE"));
    assert_eq!(
        row.find("scraper"),
        header.find("NAME"),
        "columns are not aligned:\n{table}"
    );

    for (args, done) in [
        (vec!["stop", &id], "stopped"),
        (vec!["start", "scraper"], "started"),
        (vec!["rename", &id, "crawler"], "renamed"),
    ] {
        let out = daemon.ctl(&args);
        assert!(
            out.status.success() && text(&out.stdout).starts_with(done),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(
        daemon.wait_state("crawler", AgentState::Running).await.id,
        id
    );
    let out = daemon.ctl(&["rm", "crawler"]);
    assert!(out.status.success());
    assert_eq!(text(&daemon.ctl(&["ls", "--json"]).stdout).trim(), "[]");
}

#[tokio::test]
async fn exit_codes_distinguish_failure_from_usage() {
    let daemon = Daemon::start().await;
    let out = daemon.ctl(&["stop", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no agent with id or name `ghost`"));
    assert_eq!(daemon.ctl(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(
        daemon.ctl(&["kill", "x", "--signal", "USR1"]).status.code(),
        Some(2)
    );
    assert_eq!(
        daemon
            .ctl(&["spawn", "--env", "NOEQUALS", "true"])
            .status
            .code(),
        Some(2)
    );
    let out = daemon.ctl(&["spawn", "--workspace", "/nope/nope", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nope/nope"));
}

#[tokio::test]
async fn apply_file_errors_name_file_line_column_and_field() {
    let daemon = Daemon::start().await;
    let file = daemon.home().join("agents.apply.json");
    std::fs::write(&file, "{\"agents\": [\n  {\"name\": \"w\", \"command\": \"sleep 1\"},\n  {\"name\": \"x\", \"command\": \"sleep 1\", \"stop_signal\": \"NOPE\"}\n]}").unwrap();
    let out = daemon.ctl(&["apply", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{}:3:", file.display())) && err.contains("agents[1].stop_signal"),
        "{err}"
    );

    std::fs::write(
        &file,
        "{\"agents\": [{\"name\": \"web\", \"command\": \"sleep 100\", \"workspace\": \".\"}]}",
    )
    .unwrap();
    let out = daemon.ctl(&["apply", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).split_whitespace().collect::<Vec<_>>(),
        ["created", "web"]
    );
    let out = daemon.ctl(&["apply", file.to_str().unwrap()]);
    assert_eq!(
        text(&out.stdout).split_whitespace().collect::<Vec<_>>(),
        ["unchanged", "web"]
    );
}

#[tokio::test]
async fn a_dead_daemon_is_named_not_traced() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["ctl", "--home"])
        .arg(dir.path())
        .arg("ls")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("daemon not running at {}", dir.path().display()))
            && err.contains("start it with `celistrad`"),
        "{err}"
    );

    let mut daemon = Daemon::start().await;
    let second = std::process::Command::new(BIN)
        .arg("--home")
        .arg(daemon.home())
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(
        text(&second.stderr).contains(&format!("(pid {})", daemon.pid())),
        "{}",
        text(&second.stderr)
    );
    daemon.signal_and_wait("TERM");
    let out = daemon.ctl(&["ls"]);
    assert!(
        text(&out.stderr).contains("daemon not running"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn a_closed_output_pipe_ends_ctl_quietly_by_sigpipe() {
    use std::os::unix::process::ExitStatusExt;
    let daemon = Daemon::start().await;
    daemon.spawn(crate::spec("piped", "sleep 100")).await;
    for args in [
        &["events"][..],
        &["audit", "ls", "--json"],
        &["ls", "--json"],
    ] {
        // A pipe whose reader is gone before ctl starts: its first write fails, every time.
        let (reader, writer) = rustix::pipe::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(BIN)
            .arg("ctl")
            .arg("--home")
            .arg(daemon.home())
            .args(args)
            .stdout(std::process::Stdio::from(writer))
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(rustix::process::Signal::PIPE.as_raw()),
            "{args:?}: {:?}, stderr: {}",
            out.status,
            text(&out.stderr)
        );
        assert!(out.stderr.is_empty(), "{args:?}: {}", text(&out.stderr));
    }
}

#[test]
fn bash_completes_the_clap_tree_and_the_other_shells_get_their_scripts() {
    // Bash itself completes `celistrad ctl sp` and `celistrad ctl spawn --work` with the script.
    // As bash calls it: the words so far, and the function's arguments (command, current word,
    // previous word).
    let complete = |words: &str| {
        let script = format!(
            "source <('{BIN}' completions bash) && COMP_WORDS=({words}) && \
             n=${{#COMP_WORDS[@]}} && COMP_CWORD=$((n - 1)) && \
             _celistrad celistrad \"${{COMP_WORDS[n-1]}}\" \"${{COMP_WORDS[n-2]}}\" && \
             echo \"${{COMPREPLY[@]}}\""
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &script])
            .output()
            .expect("bash");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let verbs = complete("celistrad ctl sp");
    assert!(verbs.split_whitespace().any(|w| w == "spawn"), "{verbs}");
    let flags = complete("celistrad ctl spawn --work");
    assert!(
        flags.split_whitespace().any(|w| w == "--worktree")
            && flags.split_whitespace().any(|w| w == "--workspace"),
        "{flags}"
    );
    for (shell, opening) in [
        ("zsh", "#compdef celistrad"),
        ("fish", "complete -c celistrad"),
    ] {
        let out = std::process::Command::new(BIN)
            .args(["completions", shell])
            .output()
            .expect("completions");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && script.contains(opening),
            "{shell}: {script}"
        );
        assert!(
            script.contains("limit-input"),
            "{shell} lacks spawn's flags"
        );
    }
    let unknown = std::process::Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .expect("completions");
    assert_eq!(unknown.status.code(), Some(2), "{unknown:?}");
}

#[test]
fn the_manual_pages_render_one_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .arg("man")
        .arg("--out")
        .arg(dir.path())
        .output()
        .expect("man");
    assert!(out.status.success(), "{out:?}");
    let pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for page in [
        "celistrad.1",
        "celistrad-ctl.1",
        "celistrad-ctl-spawn.1",
        "celistrad-hook.1",
    ] {
        assert!(pages.iter().any(|p| p == page), "{page} missing: {pages:?}");
    }
    // groff renders the spawn page without a warning (UTF-8 through preconv, `-k`, as man does),
    // with its text and flags.
    let rendered = std::process::Command::new("groff")
        .args(["-k", "-man", "-Tutf8", "-ww", "-P-cbou"])
        .arg(dir.path().join("celistrad-ctl-spawn.1"))
        .output()
        .expect("groff (scripts/setup installs groff-base)");
    // (groff sets `-` as a hyphen or minus sign.)
    let text = String::from_utf8_lossy(&rendered.stdout).replace(['\u{2010}', '\u{2212}'], "-");
    assert!(
        rendered.status.success() && rendered.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    assert!(
        text.contains("--worktree") && text.contains("--schedule"),
        "{text}"
    );
    // An unwritable place is an error that says where.
    let refused = std::process::Command::new(BIN)
        .args(["man", "--out", "/nonexistent/man1"])
        .output()
        .expect("man");
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("/nonexistent/man1"));
}

#[tokio::test]
async fn ctl_stops_many_agents_at_once_and_reports_each_in_order() {
    let daemon = Daemon::start().await;
    // Each takes a second to stop: one after the other, six would take six.
    let names: Vec<String> = (0..6).map(|i| format!("slow-{i}")).collect();
    for name in &names {
        daemon
            .spawn(crate::spec(
                name,
                "trap 'sleep 1; exit 0' TERM; while :; do sleep 0.1; done",
            ))
            .await;
        daemon.wait_state(name, AgentState::Running).await;
    }
    let mut args = vec!["stop"];
    args.extend(names.iter().map(String::as_str));
    let out = daemon.ctl(&args);
    assert!(out.status.success(), "{out:?}");
    let reported: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            line.rsplit('(')
                .next()
                .unwrap_or("")
                .trim_end_matches(')')
                .to_owned()
        })
        .collect();
    assert_eq!(reported, names, "each reported, in the order given");
    // Every stop was asked for before the first agent had finished stopping.
    let events = daemon
        .events_until(0, |e| {
            matches!(
                &e.kind,
                EventKind::AgentState {
                    state: AgentState::Stopped,
                    ..
                }
            )
        })
        .await;
    let requested = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::AgentStopRequested { .. }))
        .count();
    assert_eq!(requested, names.len(), "all six asked before one stopped");
}
