//! End to end through the real launcher (namespaces, mounts), Landlock and seccomp: sandboxed `/bin/sh -c` scripts on
//! pipes (and a PTY), judged by their exit status and output and by the host's files afterwards.
//! Needs root (it creates the user `celistra-test` and switches to it).

#![allow(
    clippy::disallowed_methods,
    reason = "creates the test user with `useradd`"
)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use celistra_sandbox::{
    Credentials, ExitInfo, Network, Policy, PtySize, SandboxPlan, SpawnSpec, Tools, signal_group,
    spawn_in_pty, spawn_with_pipes,
};
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Every run ends within this, or the test fails (and its processes are killed).
const TIME_LIMIT: Duration = Duration::from_secs(20);
const TEST_USER: &str = "celistra-test";
const SIGKILL: i32 = 9;

fn tools() -> Tools {
    Tools::find(PathBuf::from(env!("CARGO_BIN_EXE_celistra-sandbox-exec"))).expect("the launcher")
}

/// A directory under /var/tmp (the sandbox's /tmp is private, so the host's must not be used for
/// "outside" files), traversable by the test user. Removed when dropped.
fn scratch() -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("celistra-sandbox-test-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `scratch/name`, created, with `files` (name, contents) in it.
fn dir_with(scratch: &TempDir, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = scratch.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    for (file, contents) in files {
        std::fs::write(dir.join(file), contents).unwrap();
    }
    dir
}

/// A writable workspace, no network, subprocesses allowed, nothing else.
fn policy(workspace: &Path) -> Policy {
    Policy {
        workspace: workspace.to_path_buf(),
        workspace_writable: true,
        read_anywhere: false,
        network: Network::None,
        subprocess: true,
        read: Vec::new(),
        write: Vec::new(),
        exec: Vec::new(),
        hidden: Vec::new(),
        macos: Default::default(),
        ask_socket: None,
    }
}

/// The unprivileged test user, created once if absent.
fn test_user() -> &'static Credentials {
    static USER: OnceLock<Credentials> = OnceLock::new();
    USER.get_or_init(|| {
        if Credentials::lookup(TEST_USER).is_err() {
            let status = std::process::Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .arg(TEST_USER)
                .status()
                .expect("useradd (these tests run as root)");
            // 9: created meanwhile by another test binary.
            assert!(status.success() || status.code() == Some(9), "{status}");
        }
        Credentials::lookup(TEST_USER).unwrap()
    })
}

fn chown_to(path: &Path, user: &Credentials) {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).unwrap();
}

/// How a run ended and what it printed.
#[derive(Debug)]
struct Outcome {
    exit: ExitInfo,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn code(&self) -> Option<i32> {
        self.exit.code
    }
}

fn shell<'a>(
    workspace: &Path,
    script: &str,
    sandbox: Option<&'a SandboxPlan>,
    credentials: Option<&'a Credentials>,
) -> SpawnSpec<'a> {
    SpawnSpec {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        cwd: workspace.to_path_buf(),
        env: vec![("PATH".into(), "/usr/bin:/bin:/usr/sbin:/sbin".into())],
        cgroup: None,
        sandbox,
        credentials,
        limits: None,
        audit_login_uid: None,
    }
}

/// Runs `script` in the sandbox of `policy`, optionally as `user`, to its end.
async fn run(policy: &Policy, user: Option<&Credentials>, script: &str) -> Outcome {
    let plan = SandboxPlan::new(policy, &tools()).unwrap();
    run_spec(&shell(&policy.workspace, script, Some(&plan), user)).await
}

async fn run_spec(spec: &SpawnSpec<'_>) -> Outcome {
    let mut spawned = spawn_with_pipes(spec).unwrap();
    drop(spawned.stdin);
    let pid = spawned.child.pid();
    let finished = tokio::time::timeout(TIME_LIMIT, async {
        let (mut stdout, mut stderr) = (String::new(), String::new());
        let (out, err) = tokio::join!(
            spawned.stdout.read_to_string(&mut stdout),
            spawned.stderr.read_to_string(&mut stderr)
        );
        out.unwrap();
        err.unwrap();
        let exit = spawned.child.wait().await.unwrap();
        Outcome {
            exit,
            stdout,
            stderr,
        }
    })
    .await;
    finished.unwrap_or_else(|_| {
        let _ = signal_group(pid, SIGKILL);
        panic!("{:?} did not end within {TIME_LIMIT:?}", spec.args)
    })
}

/// Reads `stream` until `marker` has appeared, within the time limit.
async fn read_until(stream: &mut (impl AsyncRead + Unpin), marker: &str) -> String {
    let deadline = Instant::now() + TIME_LIMIT;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(marker) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
            other => panic!(
                "no {marker:?} in {:?}: {other:?}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn writes_outside_the_workspace_are_denied_however_they_are_spelt() {
    let scratch = scratch();
    let outside = dir_with(&scratch, "outside", &[("target", "original")]);
    let workspace = dir_with(&scratch, "ws", &[]);
    std::os::unix::fs::symlink(outside.join("target"), workspace.join("link")).unwrap();
    let mut policy = policy(&workspace);
    // Everything is visible, so only Landlock stands between the script and the host.
    policy.read_anywhere = true;
    let out = outside.display();
    let script = format!(
        "echo x > {out}/new && echo absolute
         echo x > ../outside/new && echo dotdot
         echo x > link && echo symlink
         echo x >> {out}/target && echo append
         ln {out}/target made && echo hardlink
         mv {out}/target stolen && echo moved
         echo inside > inside && echo inside"
    );
    let outcome = run(&policy, None, &script).await;
    assert_eq!(outcome.stdout, "inside\n", "{outcome:?}");
    // EACCES is Landlock's answer (audited), not EROFS from a read-only mount.
    assert!(outcome.stderr.contains("Permission denied"), "{outcome:?}");
    assert!(
        !outcome.stderr.contains("Read-only file system"),
        "{outcome:?}"
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("target")).unwrap(),
        "original"
    );
    assert!(!outside.join("new").exists());
    assert_eq!(
        std::fs::read_to_string(workspace.join("inside")).unwrap(),
        "inside\n"
    );
}

/// Landlock rules are about paths, so a hard link inside the workspace is writable like any
/// workspace file, whatever it points at. The agent cannot make one to a file it may not write
/// (Landlock refuses links across the boundary, and `protected_hardlinks` files it does not own),
/// and one planted by root still meets file permissions, because agents run as an unprivileged
/// user.
#[tokio::test]
async fn a_planted_hard_link_gives_an_unprivileged_agent_nothing() {
    assert_eq!(
        std::fs::read_to_string("/proc/sys/fs/protected_hardlinks")
            .unwrap()
            .trim(),
        "1"
    );
    let user = test_user();
    let scratch = scratch();
    let outside = dir_with(&scratch, "outside", &[("root-file", "original")]);
    let workspace = dir_with(&scratch, "ws", &[]);
    std::fs::hard_link(outside.join("root-file"), workspace.join("planted")).unwrap();
    chown_to(&workspace, user);
    let mut policy = policy(&workspace);
    policy.read_anywhere = true;
    let script = format!(
        "echo x >> planted && echo appended
         ln {}/root-file mine && echo linked
         cat planted",
        outside.display()
    );
    let outcome = run(&policy, Some(user), &script).await;
    assert_eq!(outcome.stdout, "original", "{outcome:?}");
    assert_eq!(
        std::fs::read_to_string(outside.join("root-file")).unwrap(),
        "original"
    );
    assert!(!workspace.join("mine").exists());
}

#[tokio::test]
async fn hidden_paths_are_empty_inside_even_within_the_workspace() {
    let scratch = scratch();
    let workspace = dir_with(&scratch, "ws", &[]);
    let hidden_inside = dir_with(&scratch, "ws/.state", &[("secret", "s3cret")]);
    let hidden_outside = dir_with(&scratch, "state", &[("secret", "s3cret")]);
    std::fs::write(workspace.join("token"), "s3cret").unwrap();
    let mut policy = policy(&workspace);
    policy.read_anywhere = true;
    policy.hidden = vec![
        hidden_inside.clone(),
        hidden_outside.clone(),
        workspace.join("token"),
    ];
    let script = format!(
        "ls -A {inside} {outside}; cat {inside}/secret {outside}/secret token
         echo x > {inside}/planted && echo planted",
        inside = hidden_inside.display(),
        outside = hidden_outside.display()
    );
    let outcome = run(&policy, None, &script).await;
    assert!(!outcome.stdout.contains("s3cret"), "{outcome:?}");
    assert!(!outcome.stdout.contains("secret\n"), "{outcome:?}");
    assert!(!outcome.stdout.contains("planted"), "{outcome:?}");
    assert!(!hidden_inside.join("planted").exists());
}

#[tokio::test]
async fn tmp_is_private_and_writable() {
    let scratch = scratch();
    let workspace = dir_with(&scratch, "ws", &[]);
    let host_marker = tempfile::NamedTempFile::new_in("/tmp").unwrap();
    let inner_name = format!("/tmp/celistra-inner-{}", std::process::id());
    let script = format!(
        "test -e {} && echo host-tmp-visible
         echo mine > {inner_name} && cat {inner_name}",
        host_marker.path().display()
    );
    let outcome = run(&policy(&workspace), None, &script).await;
    assert_eq!(outcome.stdout, "mine\n", "{outcome:?}");
    assert!(!Path::new(&inner_name).exists());
}

#[tokio::test]
async fn without_read_anywhere_only_granted_paths_are_readable() {
    let scratch = scratch();
    let workspace = dir_with(&scratch, "ws", &[]);
    let granted = dir_with(&scratch, "granted", &[("file", "granted-text")]);
    let outside = dir_with(&scratch, "outside", &[("file", "outside-text")]);
    let mut policy = policy(&workspace);
    policy.read = vec![granted.clone()];
    let script = format!(
        "cat {granted}/file; echo
         cat {outside}/file || echo outside-unreadable
         echo x > {granted}/file || echo granted-read-only",
        granted = granted.display(),
        outside = outside.display()
    );
    let outcome = run(&policy, None, &script).await;
    assert_eq!(
        outcome.stdout, "granted-text\noutside-unreadable\ngranted-read-only\n",
        "{outcome:?}"
    );
    assert_eq!(
        std::fs::read_to_string(granted.join("file")).unwrap(),
        "granted-text"
    );
}

#[tokio::test]
async fn a_read_only_workspace_is_read_but_not_written() {
    let scratch = scratch();
    let workspace = dir_with(&scratch, "ws", &[("file", "kept")]);
    let mut policy = policy(&workspace);
    policy.workspace_writable = false;
    let script = "cat file; echo; echo x > file || echo not-written; mkdir sub || echo no-mkdir";
    let outcome = run(&policy, None, script).await;
    assert_eq!(
        outcome.stdout, "kept\nnot-written\nno-mkdir\n",
        "{outcome:?}"
    );
    assert!(
        !outcome.stderr.contains("Read-only file system"),
        "{outcome:?}"
    );
    assert_eq!(
        std::fs::read_to_string(workspace.join("file")).unwrap(),
        "kept"
    );
}

/// A script that reports whether a TCP connection to 127.0.0.1:`port` succeeds.
fn connect_script(port: u16) -> String {
    format!(
        "perl -MIO::Socket::INET -e 'print IO::Socket::INET->new(PeerAddr => \"127.0.0.1:{port}\", \
         Timeout => 5) ? \"{port}:connected\\n\" : \"{port}:failed: $!\\n\"'"
    )
}

fn loopback_listener() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

#[tokio::test]
async fn no_network_cannot_reach_a_host_listener() {
    let scratch = scratch();
    let workspace = dir_with(&scratch, "ws", &[]);
    let (_listener, port) = loopback_listener();
    let outcome = run(&policy(&workspace), None, &connect_script(port)).await;
    assert!(
        outcome.stdout.starts_with(&format!("{port}:failed")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn full_network_reaches_a_host_listener() {
    let scratch = scratch();
    let workspace = dir_with(&scratch, "ws", &[]);
    let (_listener, port) = loopback_listener();
    let mut policy = policy(&workspace);
    policy.network = Network::Full;
    let outcome = run(&policy, None, &connect_script(port)).await;
    assert_eq!(outcome.stdout, format!("{port}:connected\n"), "{outcome:?}");
}

#[tokio::test]
async fn port_network_connects_only_to_listed_ports() {
    let scratch = scratch();
    let workspace = dir_with(&scratch, "ws", &[]);
    let (_allowed_listener, allowed) = loopback_listener();
    let (_other_listener, other) = loopback_listener();
    let mut policy = policy(&workspace);
    policy.network = Network::Ports {
        connect: vec![allowed],
        bind: Vec::new(),
    };
    let script = format!("{}; {}", connect_script(allowed), connect_script(other));
    let outcome = run(&policy, None, &script).await;
    assert_eq!(
        outcome.stdout,
        format!("{allowed}:connected\n{other}:failed: Permission denied\n"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn namespaces_and_mounts_are_out_of_reach() {
    let scratch = scratch();
    let workspace = dir_with(&scratch, "ws", &[]);
    let mut policy = policy(&workspace);
    policy.read_anywhere = true;
    let script = "unshare -U true && echo unshared
        mount -t tmpfs none /mnt && echo mounted
        mount -o remount,rw / && echo remounted
        echo done";
    let outcome = run(&policy, None, script).await;
    assert_eq!(outcome.stdout, "done\n", "{outcome:?}");
}

/// PTRACE_ATTACH to its own child: allowed outside the sandbox (no Yama here), denied inside.
#[cfg(target_arch = "x86_64")]
#[tokio::test]
async fn ptrace_is_denied() {
    let scratch = scratch();
    let workspace = dir_with(&scratch, "ws", &[]);
    let script = "perl -e 'my $pid = fork // die; if (!$pid) { sleep 30; exit 0 }
        my $r = syscall(101, 16, $pid, 0, 0); print $r == 0 ? \"attached\\n\" : \"denied: $!\\n\";
        kill 9, $pid; waitpid $pid, 0'";
    let outside = run_spec(&shell(&workspace, script, None, None)).await;
    assert_eq!(outside.stdout, "attached\n", "{outside:?}");
    let inside = run(&policy(&workspace), None, script).await;
    assert_eq!(
        inside.stdout, "denied: Operation not permitted\n",
        "{inside:?}"
    );
}

#[tokio::test]
async fn without_subprocess_only_exec_paths_run_and_nothing_forks() {
    let scratch = scratch();
    let workspace = dir_with(&scratch, "ws", &[]);
    let mut policy = policy(&workspace);
    policy.subprocess = false;
    policy.exec = vec![PathBuf::from("/usr/bin/printf")];

    let allowed = run(&policy, None, "exec /usr/bin/printf allowed").await;
    assert_eq!(
        (allowed.code(), allowed.stdout.as_str()),
        (Some(0), "allowed"),
        "{allowed:?}"
    );

    let other = run(&policy, None, "exec /usr/bin/id -u").await;
    assert_eq!(
        (other.code(), other.stdout.as_str()),
        (Some(126), ""),
        "{other:?}"
    );
    assert!(other.stderr.contains("Permission denied"), "{other:?}");

    let forked = run(&policy, None, "(echo from-subshell); echo after").await;
    assert!(!forked.stdout.contains("from-subshell"), "{forked:?}");
    assert!(forked.stderr.to_lowercase().contains("fork"), "{forked:?}");
}

#[tokio::test]
async fn a_setuid_root_copy_does_not_raise_privileges() {
    let user = test_user();
    let scratch = scratch();
    let workspace = dir_with(&scratch, "ws", &[]);
    let id = workspace.join("id");
    std::fs::copy("/usr/bin/id", &id).unwrap();
    std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o4755)).unwrap();
    assert_eq!(std::fs::metadata(&id).unwrap().uid(), 0);
    chown_to(&workspace, user);
    // Control: outside the sandbox the copy does give euid 0.
    let outside = run_spec(&shell(&workspace, "./id -u", None, Some(user))).await;
    assert_eq!(outside.stdout, "0\n", "{outside:?}");
    let inside = run(&policy(&workspace), Some(user), "./id -u").await;
    assert_eq!(inside.stdout, format!("{}\n", user.uid), "{inside:?}");
}

#[tokio::test]
async fn credentials_choose_the_user_inside() {
    let user = test_user();
    let scratch = scratch();
    let workspace = dir_with(&scratch, "ws", &[]);
    chown_to(&workspace, user);
    let outcome = run(
        &policy(&workspace),
        Some(user),
        "id -u; id -g; echo x > mine",
    )
    .await;
    assert_eq!(
        outcome.stdout,
        format!("{}\n{}\n", user.uid, user.gid),
        "{outcome:?}"
    );
    assert_eq!(
        std::fs::metadata(workspace.join("mine")).unwrap().uid(),
        user.uid
    );
}

#[tokio::test]
async fn credentials_hand_the_pty_to_the_user() {
    let user = test_user();
    let scratch = scratch();
    let workspace = dir_with(&scratch, "ws", &[]);
    let spec = shell(
        &workspace,
        "echo \"uid=$(id -u) tty=$(stat -L -c %u /proc/self/fd/0) end\"",
        None,
        Some(user),
    );
    let mut spawned = spawn_in_pty(&spec, PtySize { rows: 24, cols: 80 }).unwrap();
    let seen = read_until(&mut spawned.pty, "end").await;
    assert!(
        seen.contains(&format!("uid={0} tty={0} end", user.uid)),
        "{seen:?}"
    );
    let exit = tokio::time::timeout(TIME_LIMIT, spawned.child.wait())
        .await
        .unwrap();
    assert_eq!(exit.unwrap().code, Some(0));
}

#[tokio::test]
async fn a_sandboxed_agent_keeps_its_pty_as_controlling_terminal() {
    let scratch = scratch();
    let workspace = dir_with(&scratch, "ws", &[]);
    let plan = SandboxPlan::new(&policy(&workspace), &tools()).unwrap();
    let spec = shell(
        &workspace,
        "stty size; echo via-dev-tty > /dev/tty; echo end",
        Some(&plan),
        None,
    );
    let mut spawned = spawn_in_pty(&spec, PtySize { rows: 33, cols: 99 }).unwrap();
    let seen = read_until(&mut spawned.pty, "end").await;
    assert!(
        seen.contains("33 99") && seen.contains("via-dev-tty"),
        "{seen:?}"
    );
    let exit = tokio::time::timeout(TIME_LIMIT, spawned.child.wait())
        .await
        .unwrap();
    assert_eq!(exit.unwrap().code, Some(0));
}

/// Starts `script` sandboxed on pipes, waits for `ready` on its stdout, sends SIGTERM to its
/// process group (as the daemon's stop does) and returns how it ended and what it printed after.
async fn terminate_when_ready(script: &str) -> (ExitInfo, String) {
    let scratch = scratch();
    let workspace = dir_with(&scratch, "ws", &[]);
    let plan = SandboxPlan::new(&policy(&workspace), &tools()).unwrap();
    let mut spawned = spawn_with_pipes(&shell(&workspace, script, Some(&plan), None)).unwrap();
    read_until(&mut spawned.stdout, "ready").await;
    signal_group(spawned.child.pid(), 15).unwrap();
    let mut rest = String::new();
    let ended = tokio::time::timeout(TIME_LIMIT, async {
        spawned.stdout.read_to_string(&mut rest).await.unwrap();
        spawned.child.wait().await.unwrap()
    })
    .await;
    let exit = ended.unwrap_or_else(|_| {
        let _ = signal_group(spawned.child.pid(), SIGKILL);
        panic!("TERM did not end {script:?}")
    });
    (exit, rest)
}

#[tokio::test]
async fn term_to_the_group_reaches_the_agent_past_the_sandboxs_init() {
    let (exit, rest) =
        terminate_when_ready("trap 'echo bye; exit 3' TERM; echo ready; sleep 1000 & wait").await;
    assert_eq!(rest, "bye\n");
    assert_eq!(
        exit,
        ExitInfo {
            code: Some(3),
            signal: None
        }
    );
}

#[tokio::test]
async fn a_program_killed_by_term_is_reported_as_signal_15() {
    let (exit, _) = terminate_when_ready("echo ready; exec sleep 1000").await;
    assert_eq!(
        exit,
        ExitInfo {
            code: None,
            signal: Some(15)
        }
    );
}

#[tokio::test]
async fn a_launch_failure_says_what_failed_and_exits_126() {
    let scratch = scratch();
    let workspace = dir_with(&scratch, "ws", &[]);
    let plan = SandboxPlan::new(&policy(&workspace), &tools()).unwrap();
    let mut spec = shell(&workspace, "", Some(&plan), None);
    spec.program = "/nonexistent/program".into();
    let outcome = run_spec(&spec).await;
    assert_eq!(outcome.code(), Some(126), "{outcome:?}");
    assert!(
        outcome
            .stderr
            .starts_with("celistra sandbox: executing /nonexistent/program: No such file"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn the_agent_sees_only_its_sandbox_and_cannot_end_its_init() {
    let scratch = scratch();
    let workspace = dir_with(&scratch, "ws", &[]);
    let script = format!(
        "echo \"self=$$\"; test -e /proc/{host} && echo host-visible
         kill -KILL 1; kill -TERM 1; test -d /proc/1 && echo init-alive
         echo 1 > /proc/sys/kernel/panic && echo knob-written
         grep -c . /proc/self/uid_map",
        host = std::process::id()
    );
    let outcome = run(&policy(&workspace), None, &script).await;
    assert_eq!(outcome.stdout, "self=2\ninit-alive\n1\n", "{outcome:?}");
    assert!(
        ["Read-only file system", "Permission denied"]
            .iter()
            .any(|refusal| outcome
                .stderr
                .contains(&format!("/proc/sys/kernel/panic: {refusal}"))),
        "{outcome:?}"
    );
}

/// Host processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let cmdline = std::fs::read(entry.ok()?.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(marker).then_some(cmdline)
        })
        .collect()
}

#[tokio::test]
async fn orphans_are_reaped_and_nothing_outlives_the_agent() {
    let scratch = scratch();
    let workspace = dir_with(&scratch, "ws", &[]);
    let marker = format!("7{}.5", std::process::id());
    // An orphan's zombie stays until the sandbox's init reaps it; the loop is bounded (5 s).
    let script = format!(
        "(true &)
         i=0; while grep -qs ') Z ' /proc/[0-9]*/stat; do
           i=$((i+1)); [ $i -gt 500 ] && {{ echo zombie-left; break; }}; sleep 0.01
         done
         sleep {marker} </dev/null >/dev/null 2>&1 &
         echo left-behind"
    );
    let outcome = run(&policy(&workspace), None, &script).await;
    assert_eq!(outcome.stdout, "left-behind\n", "{outcome:?}");
    // The init's exit ended every process of the namespace before the run was reaped.
    assert_eq!(processes_with(&marker), Vec::<String>::new());
}

/// Waits (bounded) until the agent process of standby `launcher` has set everything up and sits
/// in `read` of its wake pipe, as `/proc/PID/syscall` shows; returns its pid.
async fn standby_waiting(launcher: u32) -> u32 {
    let deadline = Instant::now() + TIME_LIMIT;
    loop {
        let agent = std::fs::read_to_string(format!("/proc/{launcher}/task/{launcher}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .find_map(|pid| pid.parse::<u32>().ok());
        let in_read = agent.and_then(|agent| {
            let syscall = std::fs::read_to_string(format!("/proc/{agent}/syscall")).ok()?;
            let number: i64 = syscall.split_whitespace().next()?.parse().ok()?;
            (number == libc::SYS_read).then_some(agent)
        });
        if let Some(agent) = in_read {
            return agent;
        }
        assert!(
            Instant::now() < deadline,
            "the standby's agent never waited"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_standby_runs_nothing_until_woken_and_nothing_at_all_when_dropped() {
    let scratch = scratch();
    let workspace = dir_with(&scratch, "ws", &[]);
    let plan = SandboxPlan::new(&policy(&workspace), &tools()).unwrap();
    let script = "echo ran >> ran; echo woken";
    let launch = shell(&workspace, script, Some(&plan), None)
        .resolve()
        .unwrap();

    let mut woken = launch.spawn_with_pipes(None, true).unwrap();
    standby_waiting(woken.child.pid()).await;
    assert!(
        !workspace.join("ran").exists(),
        "it ran before it was woken"
    );
    woken.wake.take().expect("a standby's wake").wake().unwrap();
    assert!(woken.ready.take().unwrap().wait(TIME_LIMIT).await);
    read_until(&mut woken.stdout, "woken").await;
    let exit = tokio::time::timeout(TIME_LIMIT, woken.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.code, Some(0));
    assert_eq!(
        std::fs::read_to_string(workspace.join("ran")).unwrap(),
        "ran\n"
    );

    let mut dropped = launch.spawn_with_pipes(None, true).unwrap();
    let agent = standby_waiting(dropped.child.pid()).await;
    drop(dropped.wake.take());
    assert!(
        !dropped.ready.take().unwrap().wait(TIME_LIMIT).await,
        "a dropped standby said its program starts"
    );
    let exit = tokio::time::timeout(TIME_LIMIT, dropped.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.code, Some(0), "its agent process left quietly");
    let mut printed = String::new();
    dropped.stdout.read_to_string(&mut printed).await.unwrap();
    assert_eq!(printed, "");
    assert!(!Path::new(&format!("/proc/{agent}")).exists());
    assert_eq!(
        std::fs::read_to_string(workspace.join("ran")).unwrap(),
        "ran\n"
    );

    let unsandboxed = shell(&workspace, script, None, None).resolve().unwrap();
    assert!(unsandboxed.spawn_with_pipes(None, true).is_err());
}

#[test]
fn a_launcher_told_to_wait_without_a_wake_pipe_refuses_before_anything_runs() {
    let scratch = scratch();
    let workspace = dir_with(&scratch, "ws", &[]);
    let plan = SandboxPlan::new(&policy(&workspace), &tools()).unwrap();
    let mut argv = plan.describe().launch_argv;
    let separator = argv
        .iter()
        .position(|arg| arg == "--")
        .expect("a separator");
    argv[separator] = "--standby".into();
    argv.extend(["/bin/sh".into(), "-c".into(), "echo ran >> ran".into()]);
    let output = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(&workspace)
        .env_remove("CELISTRA_SANDBOX_WAKE_FD")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(126), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("wake pipe"),
        "{output:?}"
    );
    assert!(!workspace.join("ran").exists());
}
