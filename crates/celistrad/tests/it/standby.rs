//! Standbys: the sandbox of an agent's next run, set up ahead once it was restarted
//! automatically. A restart wakes it (the new run's pid is the standby's); it runs nothing before;
//! one that no longer fits is ended; a stop and the daemon's end leave none behind.

use std::time::{Duration, Instant};

use celistra_proto::{AgentInfo, AgentSpec, AgentState};

use crate::{Daemon, PATIENCE, marker, spec};

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim_end()
        .to_owned()
}

/// A sandbox's launcher: `celistra-launch`, or `celistrad __sandbox-exec` where the daemon's
/// binary was installed without it (as an unprivileged test daemon's copy is).
fn is_launcher(pid: u32) -> bool {
    matches!(comm(pid).as_str(), "celistra-launch" | "celistrad")
}

/// The sandboxes under the keeper, other than run `run`'s, whose agent process has not exec'd
/// (still the launcher's image): the standbys.
fn standbys(keeper: u32, run: Option<u32>) -> Vec<u32> {
    children(keeper)
        .into_iter()
        .filter(|&launcher| {
            Some(launcher) != run
                && is_launcher(launcher)
                && children(launcher)
                    .first()
                    .is_some_and(|&agent| comm(agent) == comm(launcher))
        })
        .collect()
}

/// Waits (bounded) until process `pid` is gone or a zombie.
async fn wait_ended(pid: u32) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| stat.rsplit_once(')')?.1.trim_start().chars().next());
        if matches!(state, None | Some('Z')) {
            return;
        }
        assert!(Instant::now() < deadline, "standby {pid} lives on");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (bounded) until the keeper holds exactly `count` standbys beside `agent`'s run; returns
/// them.
async fn wait_standbys(daemon: &Daemon, agent: &AgentInfo, count: usize) -> Vec<u32> {
    let keeper = daemon.keeper_pid().expect("a keeper");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let run = daemon.agent(&agent.id).await.pid;
        let found = standbys(keeper, run);
        if found.len() == count {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "the keeper holds standbys {found:?}, not {count}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (bounded) until the keeper holds no sandbox at all, standby or run.
async fn wait_no_sandbox(daemon: &Daemon) {
    let keeper = daemon.keeper_pid().expect("a keeper");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left: Vec<u32> = children(keeper)
            .into_iter()
            .filter(|&pid| is_launcher(pid))
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sandboxes {left:?} outlived the agent"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (bounded) for the process running the agent's command inside its sandbox (`sleep
/// MARKER`, the first descendant of `run` down the first children).
async fn program(run: u32, marker: &str) -> u32 {
    let command = format!("sleep {marker}");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut current = Some(run);
        for _ in 0..4 {
            let Some(pid) = current else { break };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .trim_end()
                == command
            {
                return pid;
            }
            current = children(pid).first().copied();
        }
        assert!(Instant::now() < deadline, "no `{command}` below {run}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (bounded) until the agent's runs counted `count` in all.
async fn wait_runs_counted(daemon: &Daemon, count: usize) {
    let deadline = Instant::now() + PATIENCE;
    while runs_counted(daemon) < count {
        assert!(Instant::now() < deadline, "the runs never counted {count}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(runs_counted(daemon), count);
}

/// Kills the agent's program and waits for run `next`.
async fn crash(daemon: &Daemon, agent: &AgentInfo, marker: &str, next: u64) -> AgentInfo {
    let now = daemon.agent(&agent.id).await;
    let pid = program(now.pid.expect("running"), marker).await;
    crate::run_kill("KILL", pid);
    daemon
        .wait_agent(&agent.id, "running again", |a| {
            a.run == next && a.state == AgentState::Running
        })
        .await
}

/// A sandboxed agent that restarts at once, counting its runs in `runs` (in its workspace).
async fn counting_agent(daemon: &Daemon, name: &str, marker: &str) -> AgentInfo {
    let agent = daemon
        .spawn(AgentSpec {
            auto_restart: true,
            backoff_reset_secs: Some(0),
            restart_max: Some(100),
            ..spec(name, &format!("echo run >> runs; exec sleep {marker}"))
        })
        .await;
    assert!(
        agent.sandbox.as_ref().is_some_and(|s| s.sandboxed),
        "{agent:?}"
    );
    daemon
        .wait_agent(&agent.id, "running", |a| a.state == AgentState::Running)
        .await
}

fn runs_counted(daemon: &Daemon) -> usize {
    std::fs::read_to_string(daemon.work.path().join("runs"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[tokio::test]
async fn a_restart_wakes_the_standby_which_ran_nothing_before_and_a_stop_ends_it() {
    restart_into_the_standby(&Daemon::start().await).await;
}

#[tokio::test]
async fn an_unprivileged_daemon_restarts_into_its_standby_too() {
    let daemon = Daemon::start_as(crate::sandbox::test_user()).await;
    restart_into_the_standby(&daemon).await;
}

/// An agent restarted once has a standby that ran nothing; the next restart wakes it; a stop
/// leaves no sandbox.
async fn restart_into_the_standby(daemon: &Daemon) {
    let marker = marker();
    let agent = counting_agent(daemon, "standby", &marker).await;
    assert!(
        wait_standbys(daemon, &agent, 0).await.is_empty(),
        "an agent that never restarted has none"
    );
    crash(daemon, &agent, &marker, 2).await;
    wait_runs_counted(daemon, 2).await;
    let standby = wait_standbys(daemon, &agent, 1).await[0];
    assert_eq!(runs_counted(daemon), 2, "the standby ran something");

    let third = crash(daemon, &agent, &marker, 3).await;
    assert_eq!(third.pid, Some(standby), "the restart woke the standby");
    assert_eq!(third.restarts, 2);
    program(standby, &marker).await;
    let next = wait_standbys(daemon, &agent, 1).await[0];
    assert_ne!(next, standby, "a new standby for the next restart");
    wait_runs_counted(daemon, 3).await;

    let stopped = daemon.ctl(&["stop", "standby"]);
    assert!(stopped.status.success(), "{stopped:?}");
    crate::wait_no_process_with(&marker).await;
    wait_no_sandbox(daemon).await;
    assert_eq!(runs_counted(daemon), 3);
}

#[tokio::test]
async fn a_standby_that_no_longer_fits_is_ended_and_the_restart_builds_a_new_sandbox() {
    let daemon = Daemon::start().await;
    let marker = marker();
    let agent = counting_agent(&daemon, "regranted", &marker).await;
    crash(&daemon, &agent, &marker, 2).await;
    let standby = wait_standbys(&daemon, &agent, 1).await[0];
    // A grant read at the next spawn changes the sandbox the standby was built without.
    let outside = tempfile::tempdir_in("/var/tmp").unwrap();
    let granted = format!("write:{}", outside.path().display());
    let grants = serde_json::json!({"version": 1, "grants": [
        {"match": {"name": "regranted"}, "capabilities": [granted]},
    ]});
    std::fs::write(daemon.home().join("capabilities.json"), grants.to_string()).unwrap();
    let third = crash(&daemon, &agent, &marker, 3).await;
    assert_ne!(third.pid, Some(standby), "the stale standby was woken");
    assert!(
        third
            .sandbox
            .as_ref()
            .is_some_and(|s| s.capabilities.contains(&granted)),
        "{third:?}"
    );
    wait_ended(standby).await;
    wait_runs_counted(&daemon, 3).await;
    let removed = daemon.ctl(&["rm", "regranted"]);
    assert!(removed.status.success(), "{removed:?}");
    crate::wait_no_process_with(&marker).await;
    wait_no_sandbox(&daemon).await;
}

#[tokio::test]
async fn the_keeper_ends_standbys_when_the_daemon_dies_and_the_next_daemon_adopts_only_the_run() {
    let mut daemon = Daemon::start().await;
    let marker = marker();
    let agent = counting_agent(&daemon, "orphan", &marker).await;
    let second = crash(&daemon, &agent, &marker, 2).await;
    wait_runs_counted(&daemon, 2).await;
    let standby = wait_standbys(&daemon, &agent, 1).await[0];
    assert!(!daemon.signal_and_wait("KILL").success());
    wait_ended(standby).await;
    daemon.restart_process().await;
    let adopted = daemon
        .wait_agent(&agent.id, "adopted", |a| a.state == AgentState::Running)
        .await;
    assert_eq!((adopted.pid, adopted.run), (second.pid, 2));
    assert_eq!(runs_counted(&daemon), 2);
    let stopped = daemon.ctl(&["stop", "orphan"]);
    assert!(stopped.status.success(), "{stopped:?}");
    crate::wait_no_process_with(&marker).await;
}
