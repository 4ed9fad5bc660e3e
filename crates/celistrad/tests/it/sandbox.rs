//! The sandbox from the outside: escape attempts by real agents under a real daemon (as root, and as
//! an unprivileged user), each asserting that the attempt failed, by evidence on the host where there
//! is some, and that the kernel's block decision reached the event stream where the kernel reports
//! one. Also the master switch, grants, explain, and refusals.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use celistra_proto::{
    AgentInfo, AgentSpec, AgentState, Event, EventKind, SandboxExplanation, SandboxStatus,
};

use crate::{Daemon, PATIENCE, marker, spec};

/// An unprivileged user for the tests, created when missing. Tests run in parallel processes, so
/// "already exists" from a concurrent `useradd` counts as success.
pub(crate) fn test_user() -> (u32, u32) {
    const NAME: &str = "celistra-test";
    let lookup = || {
        let out = Command::new("id").args(["-u", NAME]).output().ok()?;
        let uid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
        let out = Command::new("id").args(["-g", NAME]).output().ok()?;
        let gid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
        Some((uid, gid))
    };
    if let Some(ids) = lookup() {
        return ids;
    }
    let status = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            NAME,
        ])
        .status()
        .expect("run useradd");
    assert!(
        status.success() || status.code() == Some(9),
        "useradd failed: {status}"
    );
    lookup().expect("test user exists")
}

/// A directory outside every workspace and outside `/tmp` (which is private inside a sandbox), so a
/// write that lands here has escaped.
fn outside_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("celistra-outside-")
        .tempdir_in("/var/tmp")
        .expect("outside dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// A fresh workspace owned by `owner` (so a root daemon runs the agent as that user).
fn workspace(owner: Option<(u32, u32)>) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("celistra-ws-")
        .tempdir_in("/var/tmp")
        .expect("workspace");
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown workspace");
    }
    dir
}

/// The agent's saved output once `done` holds for it, or its last state after [`PATIENCE`] (the
/// readers may still be saving what the agent wrote just before it ended).
async fn wait_output(daemon: &Daemon, agent: &str, done: impl Fn(&str) -> bool) -> String {
    wait_output_of(daemon, &format!("/v1/agents/{agent}/logs"), done).await
}

/// [`wait_output`] for any logs path (a stream, a filter).
async fn wait_output_of(daemon: &Daemon, path: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let out = read_all(daemon, path).await;
        if done(&out) || Instant::now() >= deadline {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `command` as a pipe-mode agent in `workspace` until it ends; returns the agent and its output.
async fn run_agent(daemon: &Daemon, mut agent: AgentSpec, workspace: &Path) -> (AgentInfo, String) {
    agent.workspace = Some(workspace.display().to_string());
    agent.no_pty = true;
    let info = daemon.spawn(agent).await;
    assert!(info.last_error.is_none(), "spawn failed: {info:?}");
    let info = daemon
        .wait_agent(&info.id, "ended", |a| {
            matches!(a.state, AgentState::Exited | AgentState::Failed)
        })
        .await;
    (info.clone(), output(daemon, &info.id).await)
}

async fn output(daemon: &Daemon, agent: &str) -> String {
    read_all(daemon, &format!("/v1/agents/{agent}/logs")).await
}

async fn read_all(daemon: &Daemon, path: &str) -> String {
    crate::get_text(&daemon.client, path).await
}

/// Waits for a `sandbox_block` of `agent` whose summary contains `what`.
async fn block_event(daemon: &Daemon, agent: &str, what: &str) -> celistra_proto::SandboxBlock {
    let events = daemon
        .events_until(0, |event| is_block(event, agent, what))
        .await;
    match events.into_iter().last().map(|e| e.kind) {
        Some(EventKind::SandboxBlock { block }) => *block,
        other => panic!("no block event: {other:?}"),
    }
}

fn is_block(event: &Event, agent: &str, what: &str) -> bool {
    matches!(&event.kind, EventKind::SandboxBlock { block }
        if block.agent_id == agent && block.summary.contains(what))
}

/// One escape attempt: what the agent runs, with which capabilities, what its output must show, and
/// the block the kernel must report (when running as root, where audit records are readable).
struct Attempt {
    name: &'static str,
    command: String,
    add: Vec<&'static str>,
    drop: Vec<&'static str>,
    /// A fragment of the output that proves the attempt was refused (an errno's text).
    refused_with: &'static [&'static str],
    /// Part of the block event's summary, when the kernel reports this kind of refusal.
    reported_as: Option<String>,
}

impl Attempt {
    fn new(name: &'static str, command: impl Into<String>) -> Attempt {
        Attempt {
            name,
            command: command.into(),
            add: vec![],
            drop: vec![],
            refused_with: &[],
            reported_as: None,
        }
    }

    fn refused_with(mut self, texts: &'static [&'static str]) -> Attempt {
        self.refused_with = texts;
        self
    }

    fn reported_as(mut self, what: impl Into<String>) -> Attempt {
        self.reported_as = Some(what.into());
        self
    }

    fn caps(mut self, add: &[&'static str], drop: &[&'static str]) -> Attempt {
        self.add = add.to_vec();
        self.drop = drop.to_vec();
        self
    }
}

/// How the escape suite runs: the daemon as root (agents as the workspace's owner), or the daemon
/// itself as an unprivileged user.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Root,
    UnprivilegedDaemon,
}

async fn start_daemon(mode: Mode) -> (Daemon, Option<(u32, u32)>) {
    match mode {
        Mode::Root => (Daemon::start().await, None),
        Mode::UnprivilegedDaemon => {
            let user = test_user();
            (Daemon::start_as(user).await, Some(user))
        }
    }
}

async fn escape_suite(mode: Mode) {
    let (daemon, daemon_user) = start_daemon(mode).await;
    let outside = outside_dir();
    let target = outside.path().join("escaped");
    let secret_file = outside.path().join("secret");
    std::fs::write(&secret_file, "top secret\n").unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let hard_target = outside.path().join("hard-target");
    std::fs::write(&hard_target, "original\n").unwrap();
    std::fs::set_permissions(&hard_target, std::fs::Permissions::from_mode(0o666)).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let home = daemon.home().display().to_string();
    let target_s = target.display().to_string();
    // Landlock names the directory a file would have been created in.
    let outside_s = outside.path().display().to_string();
    let daemon_pid = daemon.pid();

    let attempts = vec![
        Attempt::new("absolute path", format!("echo x > {target_s}"))
            .refused_with(&["Permission denied"])
            .reported_as(format!("make_reg {outside_s}")),
        Attempt::new(
            "dot-dot",
            format!("echo x > ../../..{target_s}"),
        )
        .refused_with(&["Permission denied"])
        .reported_as(format!("make_reg {outside_s}")),
        Attempt::new(
            "symlink planted in the workspace",
            format!("ln -s {outside_s} link && echo x > link/escaped"),
        )
        .refused_with(&["Permission denied"])
        .reported_as(format!("make_reg {outside_s}")),
        Attempt::new(
            "hard link to an outside file",
            format!("ln {} hard && echo pwned > hard", hard_target.display()),
        )
        .refused_with(&["Invalid cross-device link", "Operation not permitted", "Permission denied"]),
        Attempt::new(
            "write into the daemon's state dir",
            format!("ls -A {home}; cat {home}/auth.json; echo x > {home}/auth.json"),
        )
        .refused_with(&["No such file"]),
        // Without read_anywhere, paths outside the granted ones are not even mounted.
        Attempt::new(
            "read outside read: paths",
            format!("cat {}", secret_file.display()),
        )
        .caps(&["read:/usr", "read:/etc"], &["read_anywhere"])
        .refused_with(&["No such file", "Permission denied"]),
        Attempt::new(
            "connect to loopback without network",
            format!("bash -c 'echo > /dev/tcp/127.0.0.1/{port}'"),
        )
        .caps(&[], &["network"])
        .refused_with(&["Network is unreachable", "Connection refused", "Cannot assign"]),
        Attempt::new(
            "connect to a port not granted",
            format!("bash -c 'echo > /dev/tcp/127.0.0.1/{port}'"),
        )
        .caps(&["connect:1"], &["network"])
        .refused_with(&["Permission denied"])
        .reported_as(format!("port {port}")),
        Attempt::new(
            "ptrace a sibling",
            "sleep 30 & perl -e '$r = syscall(101, 16, $ARGV[0], 0, 0); print \"ptrace=$r $!\\n\"; exit($r == 0 ? 0 : 1)' $!",
        )
        .refused_with(&["Operation not permitted"])
        .reported_as("ptrace"),
        Attempt::new("mount", "mount -t tmpfs none /mnt")
            .refused_with(&["ermission denied", "not permitted", "must be superuser"])
            .reported_as("mount"),
        Attempt::new("remount / read-write", "mount -o remount,rw /")
            .refused_with(&["ermission denied", "not permitted", "must be superuser"])
            .reported_as("mount"),
        Attempt::new("create a user namespace", "unshare -U true")
            .refused_with(&["Operation not permitted"])
            .reported_as("unshare"),
        Attempt::new("signal the daemon", format!("kill -TERM {daemon_pid}"))
            .refused_with(&["No such process"]),
        Attempt::new("see the daemon", format!("cat /proc/{daemon_pid}/cmdline"))
            .refused_with(&["No such file"]),
        Attempt::new("write a kernel knob", "echo 1 > /proc/sys/kernel/panic")
            .refused_with(&["Read-only file system", "Permission denied"]),
        Attempt::new(
            "talk to the daemon's socket",
            format!("curl -sS --max-time 5 --unix-socket {home}/celistrad.sock http://x/v1/health"),
        )
        .refused_with(&["Couldn't connect", "Failed to connect", "No such file"]),
        Attempt::new("exec a binary not granted", "exec /usr/bin/id")
            .caps(&[], &["subprocess"])
            .refused_with(&["Permission denied"])
            .reported_as("/usr/bin/id"),
    ];
    let workspace_owner = daemon_user.or(Some(test_user()));
    let mut failures = vec![];
    for attempt in &attempts {
        let ws = workspace(workspace_owner);
        let strings = |t: &[&str]| t.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let agent = AgentSpec {
            capabilities: strings(&attempt.add),
            drop_capabilities: strings(&attempt.drop),
            ..spec("", &attempt.command)
        };
        let (info, _) = run_agent(&daemon, agent, ws.path()).await;
        let out = wait_output(&daemon, &info.id, |out| {
            attempt.refused_with.iter().any(|text| out.contains(text))
        })
        .await;
        let sandbox = info.sandbox.clone().expect("sandbox info");
        if !sandbox.sandboxed {
            failures.push(format!("{}: ran unsandboxed: {sandbox:?}", attempt.name));
        }
        if info.exit_code == Some(0) {
            failures.push(format!("{}: exited 0, output: {out}", attempt.name));
        }
        if !attempt.refused_with.iter().any(|text| out.contains(text)) {
            failures.push(format!(
                "{}: output shows none of {:?}: {out}",
                attempt.name, attempt.refused_with
            ));
        }
        if mode == Mode::Root
            && let Some(what) = &attempt.reported_as
        {
            let found =
                tokio::time::timeout(Duration::from_secs(5), block_event(&daemon, &info.id, what))
                    .await;
            if found.is_err() {
                failures.push(format!(
                    "{}: no sandbox_block naming `{what}`",
                    attempt.name
                ));
            }
        }
    }
    if mode == Mode::Root {
        // The first attempt's block is also a line in that agent's history.
        let first = daemon.client.list_agents().await.unwrap()[0].id.clone();
        let notes = wait_output_of(
            &daemon,
            &format!("/v1/agents/{first}/logs?stream=sandbox"),
            |out| out.contains("celistra sandbox: blocked make_reg"),
        )
        .await;
        assert!(notes.contains(&outside_s), "{notes}");
        // And each block is in the audit log, the kernel's decision against the agent.
        let query = celistra_proto::AuditQuery {
            action: Some("sandbox_block".into()),
            agent: Some(first.clone()),
            ..celistra_proto::AuditQuery::default()
        };
        let blocks = daemon.client.list_audit(&query).await.unwrap();
        assert!(
            blocks.entries.iter().any(|e| e.actor == "system"
                && e.body["summary"]
                    .as_str()
                    .is_some_and(|s| s.contains(&outside_s))),
            "{blocks:?}"
        );
    }
    assert!(!target.exists(), "a write escaped to {}", target.display());
    assert_eq!(std::fs::read_to_string(&hard_target).unwrap(), "original\n");
    assert!(daemon.process.is_some());
    let status: SandboxStatus = daemon.client.get_sandbox().await.unwrap();
    if mode == Mode::UnprivilegedDaemon {
        assert!(
            status.block_reporting.contains("root"),
            "{}",
            status.block_reporting
        );
    }
    assert!(failures.is_empty(), "escapes:\n{}", failures.join("\n"));
}

#[tokio::test]
async fn escapes_fail_and_are_reported_under_a_root_daemon() {
    escape_suite(Mode::Root).await;
}

#[tokio::test]
async fn escapes_fail_under_an_unprivileged_daemon() {
    escape_suite(Mode::UnprivilegedDaemon).await;
}

#[tokio::test]
async fn a_stop_right_after_spawn_reaches_the_sandboxed_program() {
    let daemon = Daemon::start().await;
    for round in 0..5 {
        let name = format!("quick-{round}");
        let agent = daemon.spawn(spec(&name, "exec sleep 600")).await;
        assert_eq!(agent.state, AgentState::Running, "{agent:?}");
        let out = daemon.ctl(&["stop", &name]);
        assert!(out.status.success(), "{out:?}");
        let stopped = daemon.agent(&name).await;
        // A TERM lost while the launcher was still setting up would end in SIGKILL after the grace.
        assert_eq!(
            stopped.exit_signal.as_deref(),
            Some("SIGTERM"),
            "{stopped:?}"
        );
    }
}

#[tokio::test]
async fn the_launcher_beside_celistrad_confines_the_agent_and_celistrad_stays_inside() {
    let daemon = Daemon::start().await;
    let launcher = std::path::Path::new(crate::BIN).with_file_name("celistra-launch");
    assert!(
        launcher.is_file(),
        "cargo builds {} with the tests",
        launcher.display()
    );
    // The keeper is its own small binary, beside the daemon's too.
    let keeper = daemon.keeper_pid().expect("a keeper");
    assert_eq!(
        std::fs::read_link(format!("/proc/{keeper}/exe")).unwrap(),
        std::fs::canonicalize(crate::BIN)
            .unwrap()
            .with_file_name("celistra-keeper")
    );
    let agent = daemon
        .spawn(spec("launched", "celistrad --version; exec sleep 600"))
        .await;
    assert_eq!(agent.state, AgentState::Running, "{agent:?}");
    let pid = agent.pid.unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let argv: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    assert_eq!(
        argv[..2],
        [launcher.display().to_string(), "__sandbox-exec".to_owned()],
        "{argv:?}"
    );
    // The run's process is the launcher, the first process of the sandbox's PID namespace.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ns_pids = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert_eq!(ns_pids.split_whitespace().last(), Some("1"), "{ns_pids}");
    // The agent's own `celistrad` is still the daemon's binary.
    let out = wait_output(&daemon, "launched", |out| out.contains("celistrad ")).await;
    assert!(!out.contains("celistra sandbox:"), "{out}");
}

#[tokio::test]
async fn a_denial_loop_is_rate_limited_and_counted() {
    let daemon = Daemon::start().await;
    let ws = workspace(Some(test_user()));
    let outside = outside_dir();
    let loop_writes = format!(
        "i=0; while [ $i -lt 200 ]; do echo x > {}/f$i 2>/dev/null; i=$((i+1)); done; echo done",
        outside.path().display()
    );
    let (info, _) = run_agent(&daemon, spec("looper", &loop_writes), ws.path()).await;
    let out = wait_output(&daemon, &info.id, |out| out.contains("done")).await;
    assert!(out.contains("done"), "{out}");
    // Every denial is delivered or counted as suppressed in a later delivered one, and far fewer
    // than 200 events were sent.
    let accounted = std::cell::Cell::new(0u64);
    let events = daemon
        .events_until(0, |event| {
            if let EventKind::SandboxBlock { block } = &event.kind
                && block.agent_id == info.id
            {
                accounted.set(accounted.get() + 1 + block.suppressed);
            }
            accounted.get() >= 200
        })
        .await;
    let delivered = events
        .iter()
        .filter(
            |e| matches!(&e.kind, EventKind::SandboxBlock { block } if block.agent_id == info.id),
        )
        .count();
    assert_eq!(accounted.get(), 200);
    assert!((20..100).contains(&delivered), "{delivered} block events");
}

#[tokio::test]
async fn agents_run_as_the_given_user_and_a_non_root_daemon_refuses_others() {
    let (uid, _) = test_user();
    let daemon = Daemon::start().await;
    let ws = workspace(None);
    let agent = AgentSpec {
        user: Some("celistra-test".into()),
        ..spec("as-user", "id -u; echo $HOME $USER")
    };
    let (info, _) = run_agent(&daemon, agent, ws.path()).await;
    let out = wait_output(&daemon, &info.id, |out| out.lines().count() >= 2).await;
    assert!(out.starts_with(&format!("{uid}\n")), "{out}");
    assert!(out.contains("celistra-test"), "{out}");
    assert_eq!(info.sandbox.unwrap().user, format!("celistra-test ({uid})"));
    let unprivileged = Daemon::start_as(test_user()).await;
    let refused = unprivileged
        .spawn(AgentSpec {
            user: Some("root".into()),
            ..spec("as-root", "true")
        })
        .await;
    let error = refused.last_error.expect("refused");
    assert!(error.contains("cannot start agents as `root`"), "{error}");
    // An unprivileged daemon's launcher is root of its own user namespace while it mounts; its
    // agent has the daemon's ids back.
    let own_ws = workspace(Some(test_user()));
    let (mine, _) = run_agent(
        &unprivileged,
        spec("as-daemon", "id -u; id -g"),
        own_ws.path(),
    )
    .await;
    let out = wait_output(&unprivileged, &mine.id, |out| out.lines().count() >= 2).await;
    let (uid, gid) = test_user();
    assert_eq!(out, format!("{uid}\n{gid}\n"));
    assert!(mine.sandbox.unwrap().sandboxed);
}

#[tokio::test]
async fn a_setuid_binary_does_not_raise_privileges() {
    let user = test_user();
    let daemon = Daemon::start().await;
    let ws = workspace(Some(user));
    let copy = ws.path().join("id-suid");
    std::fs::copy("/usr/bin/id", &copy).unwrap();
    std::os::unix::fs::chown(&copy, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let (info, _) = run_agent(&daemon, spec("suid", "./id-suid -u; id -u"), ws.path()).await;
    let out = wait_output(&daemon, &info.id, |out| out.lines().count() >= 2).await;
    assert_eq!(info.exit_code, Some(0), "{out}");
    let uid = user.0.to_string();
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [uid.as_str(), uid.as_str()],
        "{out}"
    );
}

#[tokio::test]
async fn a_fork_bomb_stops_at_pids_max_and_the_daemon_lives_on() {
    let daemon = Daemon::start().await;
    let ws = workspace(Some(test_user()));
    let tag = marker();
    let agent = AgentSpec {
        pids_max: Some(24),
        no_pty: true,
        workspace: Some(ws.path().display().to_string()),
        ..spec(
            "bomb",
            &format!(
                r#"perl -e '$| = 1; for (1..200) {{ my $p = fork(); if (!defined $p) {{ print "fork: $!\n"; last }} exec("sleep", "{tag}") if $p == 0 }} print "spawned\n"; sleep 600'"#
            ),
        )
    };
    let info = daemon.spawn(agent).await;
    let limits = info.sandbox.as_ref().expect("sandbox").limits.join("; ");
    assert!(limits.contains("pids"), "{limits}");
    let deadline = Instant::now() + PATIENCE;
    let out = loop {
        let out = output(&daemon, &info.id).await;
        if out.contains("spawned") {
            break out;
        }
        assert!(Instant::now() < deadline, "the loop never finished: {out}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let sleeping = crate::live_processes_exactly(&format!("sleep {tag}")).len();
    assert!(
        (1..24).contains(&sleeping),
        "{sleeping} sleeps with pids_max 24"
    );
    assert!(
        out.contains("fork: Resource temporarily unavailable"),
        "{out}"
    );
    let health: celistra_proto::Health = daemon.client.get_health().await.unwrap();
    assert_eq!(health.status, "ok");
    daemon.ctl(&["stop", "bomb"]);
    crate::wait_no_process_with(&tag).await;
}

#[tokio::test]
async fn allocating_past_memory_max_kills_the_agent() {
    let daemon = Daemon::start().await;
    let ws = workspace(Some(test_user()));
    let agent = AgentSpec {
        memory_max: Some(64 << 20),
        ..spec("hog", "head -c 512M /dev/zero | tail > /dev/null")
    };
    let (info, out) = run_agent(&daemon, agent, ws.path()).await;
    let limits = info.sandbox.as_ref().expect("sandbox").limits.join("; ");
    assert!(limits.contains("memory"), "{limits}");
    assert!(
        info.exit_signal.as_deref() == Some("SIGKILL") || info.exit_code == Some(137),
        "not killed: {info:?} {out}"
    );
}

#[tokio::test]
async fn the_master_switch_and_privileged_run_unsandboxed_and_are_flagged() {
    let daemon = Daemon::start().await;
    let ws = workspace(None);
    let probe = "cat /proc/self/status | grep -c NoNewPrivs:.*1; true";
    let (info, _) = run_agent(&daemon, spec("boxed", probe), ws.path()).await;
    assert!(info.sandbox.unwrap().sandboxed);
    let out = daemon.ctl(&["sandbox", "off"]);
    assert!(out.status.success(), "{out:?}");
    let (info, _) = run_agent(&daemon, spec("free", probe), ws.path()).await;
    let run = info.sandbox.clone().unwrap();
    assert!(!run.sandboxed);
    assert_eq!(run.unsandboxed_because.as_deref(), Some("switched_off"));
    let ls = String::from_utf8(daemon.ctl(&["ls"]).stdout).unwrap();
    let free_row = ls.lines().find(|l| l.contains("free")).unwrap();
    assert!(free_row.contains("OFF"), "{ls}");
    let status = String::from_utf8(daemon.ctl(&["status", "free"]).stdout).unwrap();
    assert!(status.contains("OFF: runs unsandboxed"), "{status}");
    let events = daemon
        .events_until(0, |e| {
            matches!(&e.kind, EventKind::AgentUnsandboxed { agent_id, because, .. }
                if *agent_id == info.id && because == "switched_off")
        })
        .await;
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.kind, EventKind::SandboxSwitched { enabled: false, .. }))
    );
    // The switch survives a daemon restart.
    let mut daemon = daemon;
    daemon.signal_and_wait("TERM");
    daemon.restart_process().await;
    let status: SandboxStatus = daemon.client.get_sandbox().await.unwrap();
    assert!(!status.enabled);
    daemon.ctl(&["sandbox", "on"]);
    let privileged = AgentSpec {
        capabilities: vec!["privileged".into()],
        ..spec("root-ok", probe)
    };
    let (info, _) = run_agent(&daemon, privileged, ws.path()).await;
    assert_eq!(
        info.sandbox.unwrap().unsandboxed_because.as_deref(),
        Some("privileged")
    );
}

#[tokio::test]
async fn grants_apply_at_the_next_spawn_and_a_broken_file_refuses_spawns() {
    let daemon = Daemon::start().await;
    let ws = workspace(None);
    let outside = outside_dir();
    let out_s = outside.path().display().to_string();
    let write = format!("echo granted > {out_s}/file");
    let (info, _) = run_agent(&daemon, spec("writer-1", &write), ws.path()).await;
    assert_ne!(info.exit_code, Some(0));
    let grants = serde_json::json!({"version": 1, "grants": [
        {"match": {"name": "writer-*", "source": "cli"}, "capabilities": ["network"]},
        {"match": {"name": "writer-*", "command": "echo granted*"}, "capabilities": [format!("write:{out_s}")]},
    ]});
    std::fs::write(daemon.home().join("capabilities.json"), grants.to_string()).unwrap();
    let (info, out) = run_agent(&daemon, spec("writer-2", &write), ws.path()).await;
    assert_eq!(info.exit_code, Some(0), "{out}");
    assert_eq!(
        std::fs::read_to_string(outside.path().join("file")).unwrap(),
        "granted\n"
    );
    let explained: SandboxExplanation = daemon
        .client
        .explain_sandbox(&celistra_proto::ExplainRequest {
            agent: Some(info.id.clone()),
            spec: None,
        })
        .await
        .unwrap();
    assert!(explained.sources.iter().any(|s| s.origin == "grant 1"));
    assert!(
        !explained.sources.iter().any(|s| s.origin == "grant 0"),
        "source is api, not test"
    );
    assert!(
        explained.mounts[0].contains("every capability dropped"),
        "{:?}",
        explained.mounts
    );
    assert!(explained.mounts.iter().any(|m| m.starts_with("proc ")));
    std::fs::write(
        daemon.home().join("capabilities.json"),
        "{\"version\": 1, \"grants\": [{]}",
    )
    .unwrap();
    let refused: Result<AgentInfo, _> = daemon
        .client
        .spawn_agent(&AgentSpec {
            workspace: Some(ws.path().display().to_string()),
            ..spec("writer-3", "true")
        })
        .await;
    let agent = refused.expect("the agent is created, its spawn refused");
    let error = agent.last_error.expect("spawn refused");
    assert!(error.contains("capabilities.json"), "{error}");
}

#[tokio::test]
async fn unknown_capabilities_are_refused_naming_the_token() {
    let daemon = Daemon::start().await;
    let out = daemon.ctl(&["spawn", "--cap", "teleport", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`teleport`"), "{stderr}");
}

#[tokio::test]
async fn explain_prints_capabilities_and_the_concrete_sandbox() {
    let daemon = Daemon::start().await;
    let ws = workspace(None);
    let out = daemon.ctl(&[
        "sandbox",
        "explain",
        "--name",
        "probe",
        "--workspace",
        &ws.path().display().to_string(),
        "--drop-cap",
        "network",
        "--cap",
        "connect:443",
        "curl https://example.com",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    for expected in [
        "capabilities:",
        "connect:443",
        "dropped:",
        "launcher:",
        "mounts:",
        "every capability dropped",
        "landlock:",
        "seccomp:",
        "ptrace",
        "-c 'curl https://example.com'",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
}

#[tokio::test]
async fn a_sandbox_needs_no_program_from_the_search_path() {
    let daemon = Daemon::start_with_env(&[("PATH", "/nonexistent")]).await;
    let ws = workspace(None);
    let (info, out) = run_agent(&daemon, spec("no-path", "/bin/echo sandboxed"), ws.path()).await;
    assert_eq!(info.exit_code, Some(0), "{info:?} {out}");
    assert_eq!(out, "sandboxed\n");
    assert!(info.last_error.is_none(), "{info:?}");
}
