//! Readiness and liveness probes on real servers, the start-success window, and dependencies
//! ordering starts (and stops, reversed), with cycles refused.

use std::time::{Duration, Instant};

use celistra_proto::{
    AgentSpec, AgentState, ApplyRequest, Dependency, DependencyCondition, EventKind, Probe,
};

use crate::{Daemon, PATIENCE, spec};

/// A TCP port free a moment ago, for an agent's server.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A Python HTTP server of the workspace's files on `port`, after `delay`.
fn http_server(delay: &str, port: u16) -> String {
    format!("sleep {delay}; exec python3 -m http.server {port} --bind 127.0.0.1")
}

fn probe(f: impl FnOnce(&mut Probe)) -> Option<Box<Probe>> {
    let mut probe = Probe {
        interval_ms: Some(200),
        timeout_ms: Some(1000),
        ..Probe::default()
    };
    f(&mut probe);
    Some(Box::new(probe))
}

#[tokio::test]
async fn readiness_over_http_turns_ready_once_the_server_answers() {
    let daemon = Daemon::start().await;
    let port = free_port();
    let agent = daemon
        .spawn(AgentSpec {
            readiness: probe(|p| p.http = Some(format!("http://127.0.0.1:{port}/"))),
            ..spec("web", &http_server("1", port))
        })
        .await;
    // Running at once, not ready until the server listens.
    assert_eq!(
        (agent.state, agent.ready),
        (AgentState::Running, Some(false))
    );
    let ready = daemon
        .wait_agent("web", "ready", |a| a.ready == Some(true))
        .await;
    let status = ready.readiness.expect("readiness result");
    assert!(status.ok && status.message == "HTTP 200", "{status:?}");
    let events = daemon
        .events_until(0, |e| matches!(e.kind, EventKind::AgentReady { .. }))
        .await;
    let Some(EventKind::AgentReady { ready, run, .. }) = events.last().map(|e| &e.kind) else {
        unreachable!()
    };
    assert_eq!((*ready, *run), (true, 1));
    let shown = daemon.ctl(&["status", "web"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("ready:") && text.contains("ok: HTTP 200"),
        "{text}"
    );
}

#[tokio::test]
async fn readiness_over_tcp_and_by_an_output_line_from_ctl_flags() {
    let daemon = Daemon::start().await;
    let port = free_port();
    let work = daemon.work.path().display().to_string();
    let spawned = daemon.ctl(&[
        "spawn",
        "--name",
        "tcp",
        "--workspace",
        &work,
        "--ready-tcp",
        &format!("127.0.0.1:{port}"),
        "--probe-interval",
        "200ms",
        "--",
        &http_server("0.5", port),
    ]);
    assert!(spawned.status.success(), "{spawned:?}");
    let spawned = daemon.ctl(&[
        "spawn",
        "--name",
        "line",
        "--workspace",
        &work,
        "--ready-line",
        "/listening on \\d+/",
        "--",
        "echo booting; sleep 0.5; printf '\\033[32mlistening on 8080\\033[0m\\n'; sleep 30",
    ]);
    assert!(spawned.status.success(), "{spawned:?}");
    let line = daemon.agent("line").await;
    assert_eq!(line.ready, Some(false), "{line:?}");
    for name in ["tcp", "line"] {
        daemon
            .wait_agent(name, "ready", |a| a.ready == Some(true))
            .await;
    }
    let line = daemon.agent("line").await;
    assert_eq!(
        line.readiness.map(|s| s.message),
        Some("line: listening on 8080".into())
    );
    let tcp = daemon.agent("tcp").await;
    assert!(tcp.readiness.unwrap().message.starts_with("connected to"));
}

#[tokio::test]
async fn a_failing_liveness_probe_restarts_the_agent_and_says_why() {
    let daemon = Daemon::start().await;
    let port = free_port();
    let health = daemon.work.path().join("health");
    std::fs::write(&health, "ok").expect("health file");
    let agent = daemon
        .spawn(AgentSpec {
            liveness: probe(|p| {
                p.http = Some(format!("http://127.0.0.1:{port}/health"));
                p.failure_threshold = Some(2);
                // Time for Python to start serving.
                p.initial_delay_ms = Some(1500);
            }),
            restart_max: Some(100),
            ..spec("svc", &http_server("0", port))
        })
        .await;
    daemon
        .wait_agent("svc", "live", |a| a.liveness.as_ref().is_some_and(|s| s.ok))
        .await;
    assert_eq!(agent.run, 1);
    // Its health endpoint starts failing: two failures in a row restart it.
    std::fs::remove_file(&health).expect("remove health file");
    let restarted = daemon.wait_agent("svc", "restarted", |a| a.run >= 2).await;
    assert!(restarted.restarts >= 1);
    let audit = daemon
        .client
        .list_audit(&celistra_proto::AuditQuery {
            action: Some("agent_unhealthy".into()),
            ..Default::default()
        })
        .await
        .expect("audit");
    let entry = audit.entries.first().expect("audited");
    assert_eq!(entry.actor, "system");
    assert!(
        entry.body["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("HTTP 404")
    );
    let events = daemon
        .events_until(0, |e| matches!(e.kind, EventKind::AgentRestarted { .. }))
        .await;
    let unhealthy = events.iter().find_map(|e| match &e.kind {
        EventKind::AgentUnhealthy {
            run,
            failures,
            reason,
            ..
        } => Some((*run, *failures, reason.clone())),
        _ => None,
    });
    let (run, failures, reason) = unhealthy.expect("agent_unhealthy event");
    assert_eq!((run, failures), (1, 2));
    assert!(reason.contains("HTTP 404"), "{reason}");
    assert!(events.iter().any(|e| matches!(
        e.kind,
        EventKind::AgentExited {
            cause: celistra_proto::ExitCause::Unhealthy,
            ..
        }
    )));
}

#[tokio::test]
async fn runs_that_end_inside_the_start_window_are_failed_starts_up_to_the_ceiling() {
    let daemon = Daemon::start().await;
    // Without auto_restart, like supervisord's startretries: retried, then crashed out.
    daemon
        .spawn(AgentSpec {
            start_secs: Some(5),
            restart_max: Some(2),
            ..spec("flaky", "exit 3")
        })
        .await;
    let out = daemon.wait_state("flaky", AgentState::CrashedOut).await;
    assert_eq!((out.run, out.restarts), (3, 2));
    let error = out.last_error.unwrap_or_default();
    assert!(
        error.starts_with("failed start: it ended (exit code 3)"),
        "{error}"
    );
    // A run that lives through the window is starting, then running.
    let steady = daemon
        .spawn(AgentSpec {
            start_secs: Some(1),
            ..spec("steady", "sleep 30")
        })
        .await;
    assert_eq!(steady.state, AgentState::Starting);
    let running = daemon.wait_state("steady", AgentState::Running).await;
    assert_eq!(running.run, 1);
}

/// An agent that notes when it starts and when it is stopped in `log`.
fn noting(name: &str, log: &str, after: &[(&str, DependencyCondition)]) -> AgentSpec {
    AgentSpec {
        depends_on: after
            .iter()
            .map(|(agent, condition)| Dependency {
                agent: (*agent).into(),
                condition: *condition,
            })
            .collect(),
        ..spec(
            name,
            &format!(
                "trap 'echo stop {name} >> {log}; exit 0' TERM; echo start {name} >> {log}; \
                 echo up; while :; do sleep 0.05; done"
            ),
        )
    }
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The lines of `path` once it has `count` of them (the agents' shells write them).
async fn wait_for_lines(path: &std::path::Path, count: usize) -> Vec<String> {
    let deadline = Instant::now() + PATIENCE;
    while lines(path).len() < count {
        assert!(
            Instant::now() < deadline,
            "only {:?} in {path:?}",
            lines(path)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lines(path)
}

#[tokio::test]
async fn dependencies_order_the_start_and_reverse_the_stop() {
    let mut daemon = Daemon::start().await;
    let log_path = daemon.work.path().join("order");
    let log = log_path.display().to_string();
    let work = daemon.work.path().display().to_string();
    let mut api = noting("api", &log, &[("db", DependencyCondition::Started)]);
    // api is ready a moment after its line: web waits for that.
    api.readiness = probe(|p| p.line = Some("up".into()));
    let agents: Vec<AgentSpec> = [
        noting("web", &log, &[("api", DependencyCondition::Ready)]),
        api,
        AgentSpec {
            start_secs: Some(1),
            ..noting("db", &log, &[])
        },
    ]
    .into_iter()
    .map(|a| AgentSpec {
        workspace: Some(work.clone()),
        ..a
    })
    .collect();
    daemon
        .client
        .apply(&ApplyRequest {
            agents,
            prune: false,
            dry_run: false,
        })
        .await
        .expect("apply");
    let web = daemon.agent("web").await;
    assert_eq!(web.state, AgentState::Waiting);
    assert_eq!(web.waiting_for.as_deref(), Some("api (ready)"));
    daemon.wait_state("web", AgentState::Running).await;
    assert_eq!(
        wait_for_lines(&log_path, 3).await,
        ["start db", "start api", "start web"]
    );
    // The daemon stops them dependents first.
    std::fs::write(&log_path, "").expect("clear log");
    daemon.signal_and_wait("TERM");
    assert_eq!(lines(&log_path), ["stop web", "stop api", "stop db"]);
    // and brings them back in order when it starts again.
    std::fs::write(&log_path, "").expect("clear log");
    daemon.restart_process().await;
    assert_eq!(
        wait_for_lines(&log_path, 3).await,
        ["start db", "start api", "start web"]
    );
}

#[tokio::test]
async fn a_start_waits_for_stopped_dependencies_and_cycles_are_refused_naming_them() {
    let daemon = Daemon::start().await;
    let work = daemon.work.path().display().to_string();
    daemon.spawn(spec("db", "sleep 30")).await;
    let spawned = daemon.ctl(&[
        "spawn",
        "--name",
        "app",
        "--workspace",
        &work,
        "--depends-on",
        "db",
        "--",
        "sleep 30",
    ]);
    assert!(spawned.status.success(), "{spawned:?}");
    daemon.wait_state("app", AgentState::Running).await;
    for name in ["app", "db"] {
        daemon.client.stop_agent(name).await.expect("stop");
    }
    // Started while db is stopped, app waits for it, and starts once it runs.
    let waiting = daemon.client.start_agent("app").await.expect("start");
    assert_eq!(
        (waiting.state, waiting.waiting_for.as_deref()),
        (AgentState::Waiting, Some("db (ready)"))
    );
    // Renamed meanwhile, db takes its dependents along: app now waits for `base`.
    let renamed = daemon.ctl(&["rename", "db", "base"]);
    assert!(renamed.status.success(), "{renamed:?}");
    let follower = daemon.client.get_agent_spec("app").await.expect("spec");
    assert_eq!(follower.depends_on[0].agent, "base");
    daemon.client.start_agent("base").await.expect("start base");
    daemon.wait_state("app", AgentState::Running).await;

    let cycle = daemon.ctl(&["set", "base", "--depends-on", "app:started"]);
    assert_eq!(cycle.status.code(), Some(1), "{cycle:?}");
    let said = String::from_utf8_lossy(&cycle.stderr);
    assert!(
        said.contains("depends_on cycle: base → app → base"),
        "{said}"
    );
    let unknown = daemon.ctl(&[
        "spawn",
        "--name",
        "x",
        "--workspace",
        &work,
        "--depends-on",
        "nobody",
        "--",
        "true",
    ]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no agent is named `nobody`"));
}

#[tokio::test]
async fn an_exec_probe_runs_inside_the_agents_sandbox_in_its_workspace() {
    let daemon = Daemon::start().await;
    let home = daemon.home().display().to_string();
    // Passes once the agent made its file, and only where the daemon's state is out of sight.
    let check = format!("test -f made && ! test -e {home}/auth.json");
    daemon
        .spawn(AgentSpec {
            readiness: probe(|p| p.exec = Some(check)),
            ..spec("maker", "sleep 0.5; touch made; sleep 30")
        })
        .await;
    let ready = daemon
        .wait_agent("maker", "ready", |a| a.ready == Some(true))
        .await;
    assert!(ready.sandbox.is_some_and(|s| s.sandboxed));
    assert_eq!(
        ready.readiness.map(|s| s.message),
        Some("exit code 0".into())
    );
}

#[tokio::test]
async fn ctl_stop_of_several_agents_stops_dependents_first() {
    let daemon = Daemon::start().await;
    let log_path = daemon.work.path().join("order");
    let log = log_path.display().to_string();
    daemon.spawn(noting("db", &log, &[])).await;
    daemon
        .spawn(noting("api", &log, &[("db", DependencyCondition::Started)]))
        .await;
    // Both are up, their traps set.
    wait_for_lines(&log_path, 2).await;
    std::fs::write(&log_path, "").expect("clear log");
    // Named in the wrong order on purpose.
    let stopped = daemon.ctl(&["stop", "db", "api"]);
    assert!(stopped.status.success(), "{stopped:?}");
    assert_eq!(lines(&log_path), ["stop api", "stop db"]);
    assert_eq!(
        String::from_utf8_lossy(&stopped.stdout).lines().count(),
        2,
        "{stopped:?}"
    );
}
