//! Supervision with real processes: restart ceiling, backoff, group kill, daemon crash recovery.

use celistra_proto::{AgentSpec, AgentState, EventKind, ExitCause};

use crate::{Daemon, live_processes_with, marker, spec};

#[tokio::test]
async fn hot_loop_crashes_out_at_the_ceiling() {
    let daemon = Daemon::start().await;
    let agent = daemon
        .spawn(AgentSpec {
            auto_restart: true,
            ..spec("crasher", "exit 3")
        })
        .await;
    let done = daemon.wait_state(&agent.id, AgentState::CrashedOut).await;
    assert_eq!((done.restarts, done.exit_code, done.run), (5, Some(3), 6));
    let events = daemon
        .events_until(0, |e| matches!(e.kind, EventKind::AgentCrashedOut { .. }))
        .await;
    let restarts = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::AgentRestarted { .. }))
        .count();
    assert_eq!(restarts, 5);
    // `start` resets the ceiling: it runs (and crashes out) again.
    daemon.client.start_agent(&agent.id).await.unwrap();
    let again = daemon
        .wait_agent(&agent.id, "crashed out twice", |a| {
            a.state == AgentState::CrashedOut && a.run == 12
        })
        .await;
    assert_eq!(again.restarts, 10);
}

#[tokio::test]
async fn backoff_doubles_within_bounds() {
    let daemon = Daemon::start().await;
    let crasher = AgentSpec {
        auto_restart: true,
        backoff_initial_ms: Some(40),
        restart_max: Some(4),
        ..spec("b", "exit 1")
    };
    let agent = daemon.spawn(crasher).await;
    let events = daemon
        .events_until(0, |e| matches!(e.kind, EventKind::AgentCrashedOut { .. }))
        .await;
    let delays: Vec<u64> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::AgentBackoff { delay_ms, .. } => Some(delay_ms),
            _ => None,
        })
        .collect();
    assert_eq!(delays.len(), 4, "{delays:?}");
    // Immediate first restart, then 40 ms doubling, each cut by at most 25 % jitter.
    for (delay, nominal) in delays.iter().zip([0u64, 40, 80, 160]) {
        assert!(
            *delay <= nominal && *delay * 4 >= nominal * 3,
            "delay {delay}, nominal {nominal}"
        );
    }
    // Each restart happened no earlier than its announced delay after the exit before it.
    let mut exit_and_delay = (None, 0);
    for event in &events {
        match &event.kind {
            EventKind::AgentExited { .. } => exit_and_delay.0 = Some(event.time_ms),
            EventKind::AgentBackoff { delay_ms, .. } => exit_and_delay.1 = *delay_ms,
            EventKind::AgentRestarted { .. } => {
                let gap = event.time_ms - exit_and_delay.0.expect("exit before restart");
                assert!(
                    gap >= exit_and_delay.1,
                    "restart came {gap} ms after the exit, before its {} ms delay",
                    exit_and_delay.1
                );
            }
            _ => {}
        }
    }
    assert_eq!(daemon.agent(&agent.id).await.state, AgentState::CrashedOut);
}

#[tokio::test]
async fn stop_kills_the_whole_group_and_every_descendant() {
    let daemon = Daemon::start().await;
    let m = marker();
    // A leader that ignores TERM, a background child, and a grandchild that left the session.
    let command = format!(
        "trap '' TERM; sleep {m}1 & setsid sleep {m}2 & sh -c 'trap \"\" HUP TERM; sleep {m}3' & sleep {m}4"
    );
    let agent = daemon
        .spawn(AgentSpec {
            stop_timeout_ms: Some(300),
            ..spec("tree", &command)
        })
        .await;
    let deadline = std::time::Instant::now() + crate::PATIENCE;
    while (1..=4).any(|n| crate::live_processes_exactly(&format!("sleep {m}{n}")).is_empty()) {
        assert!(
            std::time::Instant::now() < deadline,
            "descendants never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let started = std::time::Instant::now();
    let stopped: celistra_proto::AgentInfo = daemon.client.stop_agent(&agent.id).await.unwrap();
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(300),
        "the grace period was not honoured"
    );
    assert_eq!(
        (stopped.state, stopped.exit_signal.as_deref()),
        (AgentState::Stopped, Some("SIGKILL"))
    );
    assert!(
        live_processes_with(&format!("sleep {m}")).is_empty(),
        "a descendant survived the stop"
    );
}

#[tokio::test]
async fn operator_kill_is_never_restarted() {
    let daemon = Daemon::start().await;
    let m = marker();
    let agent = daemon
        .spawn(AgentSpec {
            auto_restart: true,
            ..spec("k", &format!("sleep {m}"))
        })
        .await;
    for signal in ["KILL", "HUP"] {
        daemon.client.start_agent(&agent.id).await.unwrap();
        let running = daemon.wait_state(&agent.id, AgentState::Running).await;
        let body = celistra_proto::KillRequest {
            signal: signal.parse().unwrap(),
        };
        daemon.client.kill_agent(&agent.id, &body).await.unwrap();
        let after = daemon.wait_state(&agent.id, AgentState::Stopped).await;
        assert_eq!(
            after.restarts, running.restarts,
            "{signal} led to a restart"
        );
        assert_eq!(
            after.exit_signal.as_deref(),
            Some(if signal == "KILL" {
                "SIGKILL"
            } else {
                "SIGHUP"
            })
        );
    }
    let events = daemon
        .events_until(0, |e| {
            matches!(
                &e.kind,
                EventKind::AgentExited {
                    cause: ExitCause::Operator,
                    run: 2,
                    ..
                }
            )
        })
        .await;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.kind, EventKind::AgentRestarted { .. }))
    );
}

#[tokio::test]
async fn a_crash_is_restarted_with_a_new_pid() {
    let daemon = Daemon::start().await;
    let m = marker();
    let agent = daemon
        .spawn(AgentSpec {
            auto_restart: true,
            ..spec("svc", &format!("exec sleep {m}"))
        })
        .await;
    let first = agent.pid.expect("pid");
    crate::run_kill("KILL", first);
    let again = daemon
        .wait_agent(&agent.id, "restarted", |a| {
            a.state == AgentState::Running && a.pid != Some(first)
        })
        .await;
    assert_eq!((again.restarts, again.exit_signal), (1, None));
}

#[tokio::test]
async fn agents_outlive_a_daemon_sigkill_the_next_daemon_takes_them_over_and_a_stop_leaves_no_orphan()
 {
    let mut daemon = Daemon::start().await;
    let m = marker();
    let runner = daemon
        .spawn(spec(
            "runner",
            &format!("sh -c 'trap \"\" HUP; sleep {m}1' & sleep {m}2"),
        ))
        .await;
    let idle = daemon.spawn(spec("idle", &format!("sleep {m}3"))).await;
    daemon.client.stop_agent(&idle.id).await.unwrap();
    let deadline = std::time::Instant::now() + crate::PATIENCE;
    while crate::live_processes_exactly(&format!("sleep {m}1")).is_empty()
        || crate::live_processes_exactly(&format!("sleep {m}2")).is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "runner never started");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        live_processes_with(&format!("sleep {m}3")).is_empty(),
        "the stopped agent still runs"
    );

    let keeper = daemon.keeper_pid().expect("a keeper holds the agents");
    let status = daemon.signal_and_wait("KILL");
    assert!(!status.success());
    // The keeper holds the runner: every process of it goes on.
    for part in ["1", "2"] {
        assert_eq!(
            crate::live_processes_exactly(&format!("sleep {m}{part}")).len(),
            1,
            "sleep {m}{part} ended with the daemon"
        );
    }

    daemon.restart_process().await;
    let back = daemon.wait_state(&runner.id, AgentState::Running).await;
    assert_eq!(
        (back.pid, back.run, back.restarts),
        (runner.pid, runner.run, 0),
        "the same run, taken over"
    );
    assert_eq!(daemon.keeper_pid(), Some(keeper), "the same keeper");
    assert_eq!(daemon.agent("idle").await.state, AgentState::Stopped);

    // A graceful stop (SIGTERM) stops the agents' whole trees, the one that ignores SIGHUP
    // included, the keeper ends with nothing left to hold, and the agents come back on the next
    // start.
    let status = daemon.signal_and_wait("TERM");
    assert!(status.success(), "{status:?}");
    assert!(live_processes_with(&format!("sleep {m}")).is_empty());
    wait_gone(keeper).await;
    daemon.restart_process().await;
    let again = daemon.wait_state("runner", AgentState::Running).await;
    assert_ne!(again.pid, runner.pid);

    // Nor do the agents outlive what holds them: a keeper killed outright takes every process of
    // every agent with it (the one that ignores SIGHUP too), and the daemon starts again in place
    // with a new keeper and the agents that should run.
    let keeper = daemon.keeper_pid().expect("a new keeper");
    let deadline = std::time::Instant::now() + crate::PATIENCE;
    let before = loop {
        let before: Vec<u32> = ["1", "2"]
            .iter()
            .flat_map(|part| crate::live_processes_exactly(&format!("sleep {m}{part}")))
            .collect();
        if before.len() == 2 {
            break before;
        }
        assert!(std::time::Instant::now() < deadline, "{before:?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let daemon_pid = daemon.pid();
    crate::run_kill("KILL", keeper);
    for pid in before {
        wait_gone(pid).await;
    }
    let deadline = std::time::Instant::now() + crate::PATIENCE;
    while daemon.keeper_pid().is_none_or(|k| k == keeper) {
        assert!(std::time::Instant::now() < deadline, "no new keeper");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    daemon.client = crate::wait_until_serving(daemon.home()).await;
    let third = daemon.wait_state("runner", AgentState::Running).await;
    assert_ne!(third.pid, again.pid);
    assert_eq!(
        daemon.pid(),
        daemon_pid,
        "the daemon re-executed itself in place"
    );
}

/// Waits until process `pid` is gone (or a zombie).
async fn wait_gone(pid: u32) {
    let deadline = std::time::Instant::now() + crate::PATIENCE;
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if state.is_empty()
            || state
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} still runs"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn config_edits_apply_to_the_next_spawn() {
    let daemon = Daemon::start().await;
    std::fs::write(
        daemon.home().join("config.json"),
        r#"{"stop_timeout_ms": 1234, "restart_max": 2}"#,
    )
    .unwrap();
    let agent = daemon.spawn(spec("cfg", "sleep 100")).await;
    assert_eq!(
        (agent.settings.stop_timeout_ms, agent.settings.restart_max),
        (1234, 2)
    );
    std::fs::write(
        daemon.home().join("config.json"),
        "{\n  \"stop_timeout_ms\": \"soon\"\n}",
    )
    .unwrap();
    let err = daemon
        .client
        .spawn_agent(&spec("cfg2", "true"))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("config.json:2:") && message.contains("stop_timeout_ms"),
        "{message}"
    );
}
