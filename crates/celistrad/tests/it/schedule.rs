//! Schedules on a real daemon: a `* * * * *` agent starts at the next minute boundary (audited,
//! its next run moving on), bad expressions are refused naming the field (API and `ctl`), and a
//! run missed while the daemon was down starts once at its next start.

use std::time::{Duration, Instant};

use celistra_client::ClientError;
use celistra_core::schedule::{CronSchedule, Tz};
use celistra_proto::{
    AgentInfo, AgentState, ApplyRequest, AuditEntry, AuditQuery, ErrorCode, EventKind, MissedRuns,
    Overlap, RestartCron, Schedule, UpdateRequest,
};

use crate::{Daemon, PATIENCE, spec};

fn every(cron: &str, missed: MissedRuns) -> Schedule {
    Schedule {
        cron: cron.into(),
        time_zone: Some("UTC".into()),
        overlap: Overlap::Skip,
        missed,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// The `agent_scheduled` audit entries of an agent, once `done` holds for them (bounded).
async fn scheduled_entries(
    daemon: &Daemon,
    agent_id: &str,
    done: impl Fn(&[AuditEntry]) -> bool,
) -> Vec<AuditEntry> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let query = AuditQuery {
            action: Some("agent_scheduled".into()),
            agent: Some(agent_id.into()),
            limit: Some(100),
            ..AuditQuery::default()
        };
        let page = daemon.client.list_audit(&query).await.expect("audit query");
        if done(&page.entries) {
            return page.entries;
        }
        assert!(
            Instant::now() < deadline,
            "the audit log never showed the scheduled start: {:?}",
            page.entries
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_every_minute_schedule_starts_the_agent_at_the_next_minute_audited_and_moves_on() {
    let daemon = Daemon::start().await;
    let created = daemon
        .spawn(celistra_proto::AgentSpec {
            schedule: Some(Box::new(every("* * * * *", MissedRuns::Skip))),
            ..spec("cron-job", "echo scheduled-run")
        })
        .await;
    // Created, not started: it waits for its time.
    assert_eq!(created.state, AgentState::Stopped);
    assert_eq!(created.run, 0);
    let due = created.next_run_at_ms.expect("a next run");
    let spawned_at = now_ms();
    assert!(
        due > spawned_at - 1000 && due <= spawned_at + 60_000 && due % 60_000 == 0,
        "the next minute boundary: {due} (now {spawned_at})"
    );
    let listed = daemon.ctl(&["ls"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("next "),
        "ls shows the next run of an idle scheduled agent: {}",
        String::from_utf8_lossy(&listed.stdout)
    );

    // Started within the next minute boundary (bounded at 65 s in all).
    let deadline = Instant::now() + Duration::from_secs(65);
    let ran: AgentInfo = loop {
        let agent = daemon.agent(&created.id).await;
        if agent.run >= 1 {
            break agent;
        }
        assert!(
            Instant::now() < deadline,
            "not started by its schedule: {agent:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let started = ran.started_at_ms.expect("a start time");
    assert!(
        started >= due,
        "started at {started}, before its time {due}"
    );
    assert!(
        started < due + 10_000,
        "started at {started}, long after {due}"
    );
    assert!(
        ran.next_run_at_ms.is_some_and(|next| next >= due + 60_000),
        "the next run moved on: {ran:?}"
    );

    // Audited: the decision, by the daemon, and the start, by the actor `schedule`.
    let entries = scheduled_entries(&daemon, &created.id, |e| !e.is_empty()).await;
    let first = entries.iter().min_by_key(|e| e.seq).expect("an entry");
    assert_eq!(first.body["action"], "started");
    assert_eq!(first.body["due_at_ms"], due);
    let starts = daemon
        .client
        .list_audit(&AuditQuery {
            action: Some("agent_start_requested".into()),
            agent: Some(created.id.clone()),
            ..AuditQuery::default()
        })
        .await
        .expect("audit query");
    assert!(
        starts.entries.iter().any(|e| e.actor == "schedule"),
        "the start is the schedule's: {:?}",
        starts.entries
    );
    let events = daemon
        .events_until(0, |e| {
            matches!(&e.kind, EventKind::AgentScheduled { agent_id, .. } if *agent_id == created.id)
        })
        .await;
    assert!(events.iter().any(|e| matches!(
        &e.kind,
        EventKind::AgentScheduled { action, due_at_ms, .. } if action == "started" && *due_at_ms == due
    )));

    // `status` shows the schedule and the next run.
    let status = daemon.ctl(&["status", "cron-job"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("schedule:") && text.contains("* * * * * in UTC (overlap skip, missed skip)"),
        "{text}"
    );
    assert!(
        text.contains("next run:") && text.contains(" UTC (in "),
        "{text}"
    );
}

fn refusal(result: Result<impl std::fmt::Debug, ClientError>) -> String {
    match result {
        Err(ClientError::Api(e)) => {
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{e:?}");
            e.message
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_bad_cron_expression_is_refused_naming_the_field_by_the_api_and_ctl() {
    let daemon = Daemon::start().await;
    let work = daemon.work.path().display().to_string();
    let bad_hour = celistra_proto::AgentSpec {
        schedule: Some(Box::new(every("0 25 * * *", MissedRuns::Skip))),
        workspace: Some(work.clone()),
        ..spec("bad", "true")
    };
    let message = refusal(daemon.client.spawn_agent(&bad_hour).await);
    assert!(
        message.starts_with("schedule: hour field \"25\": "),
        "{message}"
    );

    let out = daemon.ctl(&[
        "spawn",
        "--workspace",
        &work,
        "--schedule",
        "0 9 * * *",
        "--tz",
        "Europe/Lisbonn",
        "true",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("schedule: unknown time zone \"Europe/Lisbonn\""),
        "{stderr}"
    );
    let out = daemon.ctl(&[
        "spawn",
        "--workspace",
        &work,
        "--restart-cron",
        "0 0 0 * * *",
        "true",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("restart_cron: cron expression \"0 0 0 * * *\" has 6 fields"),
        "{stderr}"
    );
    assert!(
        daemon.client.list_agents().await.expect("ls").is_empty(),
        "nothing was created"
    );

    // set (PATCH) and apply refuse too; a good schedule is taken and can be cleared.
    let agent = daemon.spawn(spec("svc", "sleep 3600")).await;
    let out = daemon.ctl(&["set", "svc", "--schedule", "*/5 * 32 * *"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("schedule: day-of-month field \"32\": "),
        "{stderr}"
    );
    let message = refusal(
        daemon
            .client
            .update_agent(
                "svc",
                &UpdateRequest {
                    restart_cron: Some(RestartCron {
                        cron: "61 * * * *".into(),
                        time_zone: None,
                    }),
                    ..UpdateRequest::default()
                },
            )
            .await,
    );
    assert!(
        message.starts_with("restart_cron: minute field \"61\": "),
        "{message}"
    );
    let applied = ApplyRequest {
        agents: vec![celistra_proto::AgentSpec {
            schedule: Some(Box::new(every("* * * 13 *", MissedRuns::Skip))),
            workspace: Some(work.clone()),
            ..spec("applied", "true")
        }],
        prune: false,
        dry_run: false,
    };
    let message = refusal(daemon.client.apply(&applied).await);
    assert!(message.contains("month field \"13\""), "{message}");

    let out = daemon.ctl(&[
        "set",
        "svc",
        "--restart-cron",
        "0 4 * * *",
        "--tz",
        "Europe/Lisbon",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let set = daemon.agent(&agent.id).await;
    assert!(set.next_restart_cron_at_ms.is_some_and(|t| t > now_ms()));
    assert_eq!(set.next_run_at_ms, None);
    let out = daemon.ctl(&["set", "svc", "--no-restart-cron"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cleared = daemon.agent(&agent.id).await;
    assert_eq!(
        (cleared.restart_cron, cleared.next_restart_cron_at_ms),
        (None, None)
    );
    let out = daemon.ctl(&["set", "svc", "--overlap", "queue"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--overlap belongs to a schedule"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The agents of `agents.json`, as stored.
fn stored_agents(daemon: &Daemon) -> serde_json::Value {
    let text = std::fs::read_to_string(daemon.home().join("agents.json")).expect("agents.json");
    serde_json::from_str(&text).expect("agents.json is JSON")
}

fn last_fire(daemon: &Daemon, id: &str) -> Option<u64> {
    stored_agents(daemon)["agents"]
        .as_array()?
        .iter()
        .find(|a| a["id"] == id)?["last_fire_ms"]
        .as_u64()
}

#[tokio::test]
async fn a_run_missed_while_the_daemon_was_down_starts_once_at_its_next_start() {
    let mut daemon = Daemon::start().await;
    // Once a year: never due while the test runs, so only a missed run can start them.
    let yearly = "0 0 1 1 *";
    let run_once = daemon
        .spawn(celistra_proto::AgentSpec {
            schedule: Some(Box::new(every(yearly, MissedRuns::RunOnce))),
            ..spec("catch-up", "echo caught-up")
        })
        .await;
    let skip = daemon
        .spawn(celistra_proto::AgentSpec {
            schedule: Some(Box::new(every(yearly, MissedRuns::Skip))),
            ..spec("no-catch-up", "echo never")
        })
        .await;
    // The schedule's "set at" is persisted as its first last fire.
    let deadline = Instant::now() + PATIENCE;
    while last_fire(&daemon, &run_once.id).is_none() || last_fire(&daemon, &skip.id).is_none() {
        assert!(Instant::now() < deadline, "last fires never persisted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Down over a New Year: the last fire goes back to mid-2020.
    assert!(daemon.signal_and_wait("TERM").success());
    let old = 1_590_969_600_000; // 2020-06-01T00:00:00Z
    let mut file = stored_agents(&daemon);
    for agent in file["agents"].as_array_mut().expect("agents") {
        agent["last_fire_ms"] = old.into();
    }
    std::fs::write(
        daemon.home().join("agents.json"),
        serde_json::to_vec(&file).expect("json"),
    )
    .expect("rewrite agents.json");
    let restarted_at = now_ms();
    daemon.restart_process().await;

    let ran = daemon
        .wait_agent(&run_once.id, "started once", |a| a.run >= 1)
        .await;
    assert_eq!(ran.run, 1);
    let expected = CronSchedule::new(yearly, Some("UTC"), Tz::UTC)
        .expect("valid")
        .missed(old, restarted_at)
        .expect("a missed run");
    let entries = scheduled_entries(&daemon, &run_once.id, |e| !e.is_empty()).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].body["action"], "missed");
    assert_eq!(entries[0].body["due_at_ms"], expected);
    // The catch-up is recorded, so it is not counted again.
    let deadline = Instant::now() + PATIENCE;
    while last_fire(&daemon, &run_once.id) != Some(expected)
        || last_fire(&daemon, &skip.id) != Some(expected)
    {
        assert!(Instant::now() < deadline, "the last fire never moved on");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // `missed: skip` did nothing.
    let skipped = daemon.agent(&skip.id).await;
    assert_eq!((skipped.state, skipped.run), (AgentState::Stopped, 0));
    let query = AuditQuery {
        action: Some("agent_scheduled".into()),
        agent: Some(skip.id.clone()),
        ..AuditQuery::default()
    };
    let none = daemon.client.list_audit(&query).await.expect("audit");
    assert!(none.entries.is_empty(), "{:?}", none.entries);
}

#[tokio::test]
async fn a_due_time_queues_behind_a_running_agent_and_restart_cron_restarts_one() {
    let daemon = Daemon::start().await;
    // Both agents must be set up within one minute: not across a boundary.
    let into_minute = now_ms() % 60_000;
    if into_minute > 55_000 {
        tokio::time::sleep(Duration::from_millis(60_000 - into_minute + 100)).await;
    }
    let queued = daemon
        .spawn(celistra_proto::AgentSpec {
            schedule: Some(Box::new(Schedule {
                overlap: Overlap::Queue,
                ..every("* * * * *", MissedRuns::Skip)
            })),
            ..spec("queued", "sleep 3617")
        })
        .await;
    daemon.client.start_agent("queued").await.expect("start");
    let restarted = daemon
        .spawn(celistra_proto::AgentSpec {
            restart_cron: Some(Box::new(RestartCron {
                cron: "* * * * *".into(),
                time_zone: None,
            })),
            ..spec("restarted", "sleep 3618")
        })
        .await;
    // Not a schedule: a restart cron leaves the spawn as it is, started.
    assert_eq!(restarted.run, 1);
    let due = restarted.next_restart_cron_at_ms.expect("a next restart");

    // At the next minute boundary (bounded at 65 s): one restarted, the other's start queued.
    let deadline = Instant::now() + Duration::from_secs(65);
    loop {
        let agent = daemon.agent(&restarted.id).await;
        if agent.run >= 2 && agent.state == AgentState::Running {
            break;
        }
        assert!(Instant::now() < deadline, "never restarted: {agent:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let entries = scheduled_entries(&daemon, &restarted.id, |e| !e.is_empty()).await;
    assert_eq!(entries[0].body["action"], "restarted");
    assert_eq!(entries[0].body["due_at_ms"], due);
    let entries = scheduled_entries(&daemon, &queued.id, |e| !e.is_empty()).await;
    let first = entries.iter().min_by_key(|e| e.seq).expect("an entry");
    assert_eq!(first.body["action"], "queued");
    assert_eq!(first.body["due_at_ms"], due);
    assert_eq!(daemon.agent(&queued.id).await.run, 1, "still its first run");

    // The run ends: the queued start happens.
    daemon.client.stop_agent("queued").await.expect("stop");
    let again = daemon
        .wait_agent(&queued.id, "started again", |a| a.run >= 2)
        .await;
    assert!(again.state.is_active(), "{again:?}");
    let entries = scheduled_entries(&daemon, &queued.id, |e| {
        e.iter().any(|e| e.body["action"] == "started")
    })
    .await;
    let started = entries
        .iter()
        .find(|e| e.body["action"] == "started")
        .expect("a start");
    assert_eq!(started.body["due_at_ms"], due, "the queued time");
}
