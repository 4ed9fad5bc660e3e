//! Agents that outlive the daemon (issue 18): an upgrade in place (SIGHUP, `ctl daemon
//! upgrade`), `kill -9` of the daemon at random moments, output written while no daemon runs,
//! agents that end meanwhile, `ctl daemon stop --keep-agents`, and a new binary that fails.

use std::time::{Duration, Instant};

use celistra_proto::{AgentSpec, AgentState, EventKind, Health, RunCause};

use crate::{Daemon, PATIENCE, marker, spec, wait_no_process_with};

/// Signals the daemon (`HUP`: an upgrade; `KILL`: a crash, then starts it again) and waits until
/// a new daemon image answers, whose health it returns.
async fn upgrade(daemon: &mut Daemon) -> Health {
    let before: Health = daemon.client.get_health().await.unwrap();
    crate::run_kill("HUP", daemon.pid());
    answered_after(daemon, before.started_at_ms).await
}

/// Waits until a daemon started after `started_at_ms` answers (its client replaces the old one).
async fn answered_after(daemon: &mut Daemon, started_at_ms: u64) -> Health {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(health) = daemon.client.get_health().await
            && health.started_at_ms > started_at_ms
        {
            return health;
        }
        assert!(Instant::now() < deadline, "no new daemon answered");
        // The new daemon may listen on another port: find it again.
        if let Ok(client) = celistra_client::Client::for_home(daemon.home(), "test") {
            daemon.client = client;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The numbers of the `line N` lines of an agent's run 1, in the order stored.
async fn line_numbers(daemon: &Daemon, agent: &str) -> Vec<u64> {
    let text = crate::get_text(&daemon.client, &format!("/v1/agents/{agent}/logs?run=1")).await;
    text.lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("line "))
        .map(|n| n.parse().expect("a whole number"))
        .collect()
}

async fn wait_lines(daemon: &Daemon, agent: &str, last: u64) -> Vec<u64> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let numbers = line_numbers(daemon, agent).await;
        if numbers.last() == Some(&last) {
            return numbers;
        }
        assert!(
            Instant::now() < deadline,
            "{agent} stopped at {:?}",
            numbers.last()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A shell loop printing `line 1` … `line N`, a line every 2 ms, then waiting.
fn writer(lines: u64, tag: &str) -> String {
    format!(
        "i=0; while [ $i -lt {lines} ]; do i=$((i+1)); echo \"line $i\"; sleep 0.002; done; \
         sleep 600 # {tag}"
    )
}

#[tokio::test]
async fn an_upgrade_keeps_every_agent_its_pid_its_counters_and_every_line_once_in_order() {
    let mut daemon = Daemon::start().await;
    let tag = marker();
    let flag = daemon.work.path().join("crashed-once");
    let on_pty = daemon.spawn(spec("pty", &writer(2000, &tag))).await;
    let on_pipes = daemon
        .spawn(AgentSpec {
            no_pty: true,
            ..spec("pipes", &writer(2000, &tag))
        })
        .await;
    let crashed = daemon
        .spawn(AgentSpec {
            auto_restart: true,
            ..spec(
                "crashed",
                &format!(
                    "[ -e {f} ] || {{ touch {f}; exit 3; }}; sleep 600 # {tag}",
                    f = flag.display()
                ),
            )
        })
        .await;
    let crashed = daemon
        .wait_agent(&crashed.id, "restarted once", |a| {
            a.restarts == 1 && a.state == AgentState::Running
        })
        .await;
    let pid = daemon.pid();
    // Connections made during the upgrades wait for the new image: none is refused, the port
    // stays.
    let addr = daemon.tcp_addr();
    let connecting = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let prober = std::thread::spawn({
        let connecting = std::sync::Arc::clone(&connecting);
        move || {
            let (mut made, mut refused) = (0u32, 0u32);
            while connecting.load(std::sync::atomic::Ordering::SeqCst) {
                match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                    Ok(_) => made += 1,
                    Err(_) => refused += 1,
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            (made, refused)
        }
    });

    // Three upgrades while they write, one through `ctl daemon upgrade`.
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if round == 1 {
            let before: Health = daemon.client.get_health().await.unwrap();
            let asked = daemon.ctl(&["daemon", "upgrade"]);
            assert!(asked.status.success(), "{asked:?}");
            answered_after(&mut daemon, before.started_at_ms).await;
        } else {
            upgrade(&mut daemon).await;
        }
        assert_eq!(daemon.pid(), pid, "the daemon keeps its pid");
    }
    connecting.store(false, std::sync::atomic::Ordering::SeqCst);
    let (made, refused) = prober.join().unwrap();
    assert!(made > 100, "{made} connections");
    assert_eq!(
        refused,
        0,
        "{refused} of {} connections refused",
        made + refused
    );
    assert_eq!(daemon.tcp_addr(), addr, "the same port");
    for (agent, before) in [
        ("pty", &on_pty),
        ("pipes", &on_pipes),
        ("crashed", &crashed),
    ] {
        let now = daemon.agent(agent).await;
        assert_eq!(
            (now.state, now.pid, now.run, now.restarts),
            (AgentState::Running, before.pid, before.run, before.restarts),
            "{agent}"
        );
    }
    for agent in ["pty", "pipes"] {
        let numbers = wait_lines(&daemon, agent, 2000).await;
        assert_eq!(
            numbers,
            (1..=2000).collect::<Vec<_>>(),
            "{agent}: every line once, in order"
        );
    }
    let adopted = daemon
        .events_until(
            0,
            |e| matches!(&e.kind, EventKind::AgentAdopted { name, .. } if name == "crashed"),
        )
        .await;
    assert!(adopted.iter().all(|e| match &e.kind {
        EventKind::AgentAdopted { dropped_bytes, .. } => *dropped_bytes == 0,
        _ => true,
    }));
}

#[tokio::test]
async fn kill_9_of_the_daemon_at_random_moments_loses_no_agent_adopts_each_once_and_a_stop_leaves_nothing()
 {
    let mut daemon = Daemon::start().await;
    let tag = marker();
    let mut agents = vec![];
    for n in 0..4 {
        let agent = daemon
            .spawn(AgentSpec {
                no_pty: n == 3,
                ..spec(
                    &format!("a{n}"),
                    &format!("while :; do echo tick; sleep 0.05; done # {tag}"),
                )
            })
            .await;
        agents.push(agent);
    }
    let keeper = daemon.keeper_pid().expect("a keeper");
    let mut random = crate::marker()
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    for iteration in 0..20 {
        random = random
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        // From at once after it answered (mid take-over) to 150 ms later.
        tokio::time::sleep(Duration::from_millis((random >> 33) % 150)).await;
        assert!(!daemon.signal_and_wait("KILL").success());
        daemon.restart_process().await;
        for before in &agents {
            let now = daemon
                .wait_agent(&before.id, "running", |a| a.state == AgentState::Running)
                .await;
            assert_eq!(
                (now.pid, now.run, now.restarts),
                (before.pid, before.run, 0),
                "iteration {iteration}: {} was not taken over as it was",
                before.name
            );
        }
        assert_eq!(daemon.keeper_pid(), Some(keeper), "iteration {iteration}");
        // Each run is held once: as many of the agents' shells as agents (not counting a shell's
        // child between its fork and its exec of `sleep`, which shows the same command line).
        let shells = crate::live_processes_exactly(&format!(
            "/bin/sh -c while :; do echo tick; sleep 0.05; done # {tag}"
        ));
        let shells: Vec<u32> = shells
            .iter()
            .copied()
            .filter(|pid| !shells.contains(&crate::parent_of(*pid)))
            .collect();
        assert_eq!(
            shells.len(),
            agents.len(),
            "iteration {iteration}: {shells:?}"
        );
    }
    // Nothing is corrupted: the state file parses, the history is healthy, the audit log verifies.
    let text = std::fs::read_to_string(daemon.home().join("agents.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).expect("agents.json parses");
    let health: Health = daemon.client.get_health().await.unwrap();
    assert!(health.history.ok, "{health:?}");
    let verified = daemon.ctl(&["audit", "verify"]);
    assert!(verified.status.success(), "{verified:?}");
    for agent in &agents {
        let logs = crate::get_text(
            &daemon.client,
            &format!("/v1/agents/{}/logs?run=1", agent.name),
        )
        .await;
        assert!(logs.lines().count() > 20, "{}: {logs}", agent.name);
    }
    // An explicit stop still kills whole trees, and the keeper ends with them.
    let status = daemon.signal_and_wait("TERM");
    assert!(status.success(), "{status:?}");
    wait_no_process_with(&tag).await;
    assert_eq!(daemon.keeper_pid(), None);
}

#[tokio::test]
async fn output_written_while_no_daemon_runs_is_kept_with_its_times_up_to_8_mib_and_never_blocks() {
    const FLOOD: u64 = 12 * 1024 * 1024;
    let mut daemon = Daemon::start().await;
    let tag = marker();
    let go = daemon.work.path().join("go");
    let done = daemon.work.path().join("wrote-everything");
    // Waits for the daemon to be gone, writes 12 MiB at once, then says it was never held up.
    daemon
        .spawn(AgentSpec {
            no_pty: true,
            ..spec(
                "flood",
                &format!(
                    "while [ ! -e {go} ]; do sleep 0.01; done; head -c {FLOOD} /dev/zero | tr '\\0' x; \
                     touch {done}; sleep 600 # {tag}",
                    go = go.display(),
                    done = done.display()
                ),
            )
        })
        .await;
    // And a slow writer: a line every 50 ms, whose times must survive the gap.
    daemon
        .spawn(spec(
            "ticker",
            &format!("i=0; while :; do i=$((i+1)); echo \"tick $i\"; sleep 0.05; done # {tag}"),
        ))
        .await;
    let killed_at = crate::now_ms();
    assert!(!daemon.signal_and_wait("KILL").success());
    std::fs::write(&go, "").unwrap();
    let deadline = Instant::now() + PATIENCE;
    while !done.exists() {
        assert!(
            Instant::now() < deadline,
            "the writer was held up with no daemon"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let restarted_at = crate::now_ms();
    daemon.restart_process().await;
    let events = daemon
        .events_until(
            0,
            |e| matches!(&e.kind, EventKind::AgentAdopted { name, .. } if name == "flood"),
        )
        .await;
    let flood = events.iter().find_map(|e| match &e.kind {
        EventKind::AgentAdopted {
            name,
            kept_bytes,
            dropped_bytes,
            unattended_since_ms,
            ..
        } if name == "flood" => Some((*kept_bytes, *dropped_bytes, *unattended_since_ms)),
        _ => None,
    });
    let (kept, dropped, since) = flood.expect("the flood was taken over");
    assert_eq!(kept + dropped, FLOOD, "every byte kept or counted");
    let limit = 8 * 1024 * 1024;
    assert!((limit - 256 * 1024..=limit).contains(&kept), "kept {kept}");
    let since = since.expect("when the gap began");
    assert!((killed_at..restarted_at).contains(&since), "{since}");
    // The ticker's lines of the gap carry the times they were written, 50 ms apart, not the
    // time of the take-over.
    // Stored as soon as the history's writer commits them.
    let deadline = Instant::now() + PATIENCE;
    let times = loop {
        let text = crate::get_text(
            &daemon.client,
            &format!(
                "/v1/agents/ticker/logs?run=1&format=jsonl&since={since}&until={restarted_at}"
            ),
        )
        .await;
        let times: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<celistra_proto::LogLine>(l)
                    .expect("a log line")
                    .time_ms
            })
            .collect();
        if times.len() >= 5 {
            break times;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // A read can take two lines at once: they share its time.
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(
        times.last().unwrap() - times.first().unwrap() >= 200,
        "{times:?}"
    );
}

#[tokio::test]
async fn an_agent_that_ends_while_no_daemon_runs_is_recorded_with_its_real_status() {
    let mut daemon = Daemon::start().await;
    let tag = marker();
    let go = daemon.work.path().join("go");
    daemon
        .spawn(spec(
            "ender",
            &format!(
                "echo started; while [ ! -e {} ]; do sleep 0.01; done; echo ending; exit 7 # {tag}",
                go.display()
            ),
        ))
        .await;
    daemon
        .wait_agent("ender", "running", |a| a.state == AgentState::Running)
        .await;
    // Stored before the crash (what a killed daemon had read and not stored is lost with it).
    let deadline = Instant::now() + PATIENCE;
    while !crate::get_text(&daemon.client, "/v1/agents/ender/logs?run=1")
        .await
        .contains("started")
    {
        assert!(Instant::now() < deadline, "no output");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let keeper = daemon.keeper_pid().expect("a keeper");
    assert!(!daemon.signal_and_wait("KILL").success());
    std::fs::write(&go, "").unwrap();
    wait_no_process_with(&tag).await;
    // Holding no live run and no daemon, the keeper leaves what it knows and ends.
    let deadline = Instant::now() + PATIENCE;
    while std::fs::metadata(format!("/proc/{keeper}")).is_ok() {
        assert!(Instant::now() < deadline, "the keeper outlived its agents");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // It reaped the run before it ended.
    let ended_at = crate::now_ms();
    daemon.restart_process().await;
    let agent = daemon
        .wait_agent("ender", "failed", |a| a.state == AgentState::Failed)
        .await;
    assert_eq!((agent.exit_code, agent.run), (Some(7), 1));
    assert!(
        agent.exited_at_ms.is_some_and(|at| at <= ended_at),
        "{agent:?}"
    );
    let runs = daemon
        .client
        .list_runs(&celistra_proto::HistoryQuery {
            agent: Some("ender".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (runs[0].exit_code, runs[0].cause),
        (Some(7), Some(RunCause::Crashed))
    );
    let text = crate::get_text(&daemon.client, "/v1/agents/ender/logs?run=1").await;
    assert!(
        text.contains("started") && text.contains("ending"),
        "{text}"
    );
}

#[tokio::test]
async fn stop_keep_agents_leaves_them_to_the_next_daemon() {
    let mut daemon = Daemon::start().await;
    let tag = marker();
    let agent = daemon
        .spawn(spec("kept", &format!("sleep 600 # {tag}")))
        .await;
    let stopped = daemon.ctl(&["daemon", "stop", "--keep-agents"]);
    assert!(stopped.status.success(), "{stopped:?}");
    assert!(daemon.wait_exit().success());
    assert!(
        !crate::live_processes_with(&tag).is_empty(),
        "the agent was stopped"
    );
    daemon.restart_process().await;
    let back = daemon
        .wait_agent(&agent.id, "running", |a| a.state == AgentState::Running)
        .await;
    assert_eq!(back.pid, agent.pid);
}

#[tokio::test]
async fn a_new_binary_that_cannot_run_or_fails_at_once_loses_no_agent() {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("celistrad");
    std::fs::copy(crate::BIN, &binary).unwrap();
    let mut daemon = Daemon::start_from(&binary).await;
    // No launcher beside this copy: the daemon's own binary is the keeper.
    let keeper = daemon.keeper_pid().expect("a keeper");
    assert_eq!(
        std::fs::read_link(format!("/proc/{keeper}/exe")).unwrap(),
        binary
    );
    let tag = marker();
    let agent = daemon
        .spawn(spec("steady", &format!("sleep 600 # {tag}")))
        .await;
    let pid = daemon.pid();

    // Not a program at all: the upgrade falls back to the image running now.
    replace(&binary, b"this is not a program\n");
    upgrade(&mut daemon).await;
    assert_eq!(daemon.pid(), pid);
    assert_eq!(daemon.agent("steady").await.pid, agent.pid);

    // Nor one that fails `--version`, which an upgrade asks first.
    replace(&binary, b"#!/bin/sh\nexit 1\n");
    upgrade(&mut daemon).await;
    assert_eq!(daemon.pid(), pid);
    assert_eq!(daemon.agent("steady").await.pid, agent.pid);

    // A program that answers `--version` and then fails at once: the daemon is gone, the agent
    // is not, and the next working binary takes it over.
    replace(
        &binary,
        b"#!/bin/sh\n[ \"$1\" = --version ] && exit 0\necho broken >&2\nexit 1\n",
    );
    assert!(
        !daemon.signal_and_wait("HUP").success(),
        "the broken binary failed"
    );
    assert!(
        !crate::live_processes_with(&tag).is_empty(),
        "the agent died with the binary"
    );
    std::fs::copy(crate::BIN, dir.path().join("fixed")).unwrap();
    std::fs::rename(dir.path().join("fixed"), &binary).unwrap();
    daemon.restart_process().await;
    let back = daemon
        .wait_agent(&agent.id, "running", |a| a.state == AgentState::Running)
        .await;
    assert_eq!((back.pid, back.run), (agent.pid, agent.run));
}

/// Agent `agent_id`'s socket (a root daemon's, in `/run/celistra-TAG/AGENT/ask.sock`).
fn ask_socket_of(agent_id: &str) -> std::path::PathBuf {
    std::fs::read_dir("/run")
        .unwrap()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("celistra-"))
        .map(|entry| entry.path().join(agent_id).join("ask.sock"))
        .find(|path| path.exists())
        .unwrap_or_else(|| panic!("no socket of {agent_id} in /run/celistra-*"))
}

/// Replaces the file at `path` the way a package upgrade does: a new file renamed over it.
fn replace(path: &std::path::Path, content: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let new = path.with_extension("new");
    std::fs::write(&new, content).unwrap();
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&new, path).unwrap();
}

#[tokio::test]
async fn a_sandboxed_agent_reaches_the_daemon_through_its_socket_after_an_upgrade() {
    let mut daemon = Daemon::start().await;
    let go = daemon.work.path().join("go");
    let agent = daemon
        .spawn(AgentSpec {
            kind: Some("custom".into()),
            ..spec(
                "hooked",
                &format!(
                    "while [ ! -e {} ]; do sleep 0.01; done; echo '{{\"activity\":\"needs-input\",\"message\":\"after the upgrade\"}}' | celistrad hook custom; echo hooked; exec sleep 600",
                    go.display()
                ),
            )
        })
        .await;
    assert!(
        agent.sandbox.as_ref().is_some_and(|s| s.sandboxed),
        "{agent:?}"
    );
    let socket = ask_socket_of(&agent.id);
    // A socket bound again is a new file: its birth time tells (its inode number may be reused).
    let born = || std::fs::metadata(&socket).unwrap().created().unwrap();
    let before = born();
    upgrade(&mut daemon).await;
    assert_eq!(
        before,
        born(),
        "the same socket, handed to the new image, not bound again"
    );
    std::fs::write(&go, "").unwrap();
    let agent = daemon
        .wait_agent(&agent.id, "told by its hook", |a| {
            a.activity.as_ref().is_some_and(|a| {
                a.activity == celistra_proto::Activity::NeedsInput
                    && a.evidence.tier == celistra_proto::SignalTier::Hook
            })
        })
        .await;
    assert_eq!(agent.run, 1, "the same run");
}

/// This daemon's instance cgroup (`celistra-TAG-KEEPER` beside the test's own cgroup), if any.
fn instance_cgroup_of(keeper: u32) -> Option<std::path::PathBuf> {
    let parent = celistra_sandbox::CgroupLayout::detect().ok()?.unified?;
    let suffix = format!("-{keeper}");
    std::fs::read_dir(parent)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .map(|name| name.to_string_lossy())
                .is_some_and(|name| name.starts_with("celistra-") && name.ends_with(&suffix))
        })
}

#[tokio::test]
async fn a_keeper_that_ends_with_nothing_to_hold_leaves_no_cgroup_behind() {
    let mut daemon = Daemon::start().await;
    let keeper = daemon.keeper_pid().expect("a keeper");
    let instance = instance_cgroup_of(keeper).expect("the instance cgroup of a root daemon");
    // Killed outright, the daemon cannot remove it; its keeper, holding no run, ends by itself.
    assert!(!daemon.signal_and_wait("KILL").success());
    let deadline = Instant::now() + PATIENCE;
    while instance.exists() {
        assert!(
            Instant::now() < deadline,
            "{} is still there",
            instance.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `RssFile` of process `pid`, in KiB: the pages of its executable and libraries it has resident.
fn resident_file_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("the process lives")
        .lines()
        .find_map(|line| line.strip_prefix("RssFile:"))
        .and_then(|value| value.trim().trim_end_matches(" kB").parse().ok())
        .expect("an RssFile line")
}

#[tokio::test]
async fn a_keeper_with_nothing_to_do_gives_its_code_pages_back() {
    let daemon = Daemon::start().await;
    let agent = daemon.spawn(spec("quiet", "exec sleep 600")).await;
    assert_eq!(agent.state, AgentState::Running, "{agent:?}");
    let keeper = daemon.keeper_pid().expect("a keeper");
    let after_spawn = resident_file_kib(keeper);
    // Ten seconds after its last event (`QUIET` in the keeper), its code goes back.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = resident_file_kib(keeper);
        if now * 2 < after_spawn {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the keeper still has {now} KiB of its files resident ({after_spawn} KiB after the spawn)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
