//! File watching on a real daemon: a burst of changes restarts a watched agent once, after the
//! quiet time; ignored paths restart nothing; a failed agent is started by a change; bad watches
//! are refused (API and `ctl`), and `ctl` sets, shows and clears a watch.

use celistra_proto::{AgentState, EventKind, UpdateRequest, Watch};

use crate::{Daemon, spec};

/// The `agent_watch_triggered` events of `agent_id`, once `count` have come (bounded).
async fn triggers(
    daemon: &Daemon,
    agent_id: &str,
    count: usize,
) -> Vec<(String, Vec<String>, u64)> {
    let is_trigger = |kind: &EventKind| matches!(kind, EventKind::AgentWatchTriggered { agent_id: id, .. } if id == agent_id);
    let seen = std::sync::atomic::AtomicUsize::new(0);
    daemon
        .events_until(0, |event| {
            is_trigger(&event.kind)
                && seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == count
        })
        .await
        .into_iter()
        .filter_map(|event| match event.kind {
            EventKind::AgentWatchTriggered {
                agent_id: id,
                action,
                paths,
                changes,
                ..
            } if id == agent_id => Some((action, paths, changes)),
            _ => None,
        })
        .collect()
}

fn watch(paths: &[&str], ignore: Option<&[&str]>, delay_ms: u64) -> Watch {
    Watch {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        ignore: ignore.map(|globs| globs.iter().map(|g| (*g).to_owned()).collect()),
        delay_ms: Some(delay_ms),
    }
}

#[tokio::test]
async fn a_burst_of_changes_restarts_once_and_ignored_paths_restart_nothing() {
    let daemon = Daemon::start().await;
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("src")).unwrap();
    std::fs::create_dir_all(work.path().join("logs")).unwrap();
    let agent = daemon
        .spawn(celistra_proto::AgentSpec {
            workspace: Some(work.path().display().to_string()),
            watch: Some(Box::new(watch(
                &["src", "logs"],
                Some(&["*.log", ".*"]),
                300,
            ))),
            ..spec("watched", "exec sleep 1000")
        })
        .await;
    let first = daemon.wait_state(&agent.id, AgentState::Running).await;

    // Twenty files written at once: one restart, once they have been quiet for 300 ms.
    for i in 0..20 {
        std::fs::write(work.path().join(format!("src/file{i}.py")), "print(1)\n").unwrap();
    }
    let second = daemon
        .wait_agent(&agent.id, "restarted", |a| {
            a.run > first.run && a.state == AgentState::Running
        })
        .await;
    assert_eq!(second.run, first.run + 1);
    assert_ne!(second.pid, first.pid);

    // Changes to ignored paths gather nothing; the next real change is the only one its
    // trigger names. Had the burst restarted twice, the second trigger would name its files.
    std::fs::write(work.path().join("logs/app.log"), "noise\n").unwrap();
    std::fs::write(work.path().join("src/.app.py.swp"), "swap\n").unwrap();
    std::fs::write(work.path().join("src/sentinel.py"), "print(2)\n").unwrap();
    let seen = triggers(&daemon, &agent.id, 2).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    let (action, paths, changes) = &seen[0];
    assert_eq!(action, "restarted");
    assert!(*changes >= 20, "{seen:?}");
    assert!(paths.iter().all(|p| p.contains("/src/file")), "{seen:?}");
    let (action, paths, _) = &seen[1];
    assert_eq!(action, "restarted");
    assert_eq!(
        paths,
        &[work.path().join("src/sentinel.py").display().to_string()],
        "only the sentinel counts: {seen:?}"
    );
    let third = daemon
        .wait_agent(&agent.id, "restarted again", |a| {
            a.run > second.run && a.state == AgentState::Running
        })
        .await;
    assert_eq!(third.run, second.run + 1);

    // Each restart is audited, naming the actor `watch`.
    let audit = daemon
        .client
        .list_audit(&celistra_proto::AuditQuery {
            action: Some("agent_watch_triggered".into()),
            agent: Some(agent.id.clone()),
            ..celistra_proto::AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.entries.len(), 2);
    assert!(audit.entries.iter().all(|e| e.actor == "watch"));
}

#[tokio::test]
async fn a_change_starts_a_failed_agent_and_a_watched_file_is_seen_when_replaced() {
    let daemon = Daemon::start().await;
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("app.conf"), "broken\n").unwrap();
    std::fs::write(work.path().join("other.txt"), "\n").unwrap();
    // Fails while its config says `broken`, like a service with a bad config file.
    let agent = daemon
        .spawn(celistra_proto::AgentSpec {
            workspace: Some(work.path().display().to_string()),
            watch: Some(Box::new(watch(&["app.conf"], None, 100))),
            ..spec(
                "configured",
                "grep -q broken app.conf && exit 3; exec sleep 1000",
            )
        })
        .await;
    let failed = daemon.wait_state(&agent.id, AgentState::Failed).await;
    assert_eq!(failed.exit_code, Some(3));

    // A sibling of the watched file is not watched; replacing the file by a rename, as editors
    // do, is seen, and starts the failed agent.
    std::fs::write(work.path().join("other.txt"), "changed\n").unwrap();
    std::fs::write(work.path().join("app.conf.new"), "fixed\n").unwrap();
    std::fs::rename(
        work.path().join("app.conf.new"),
        work.path().join("app.conf"),
    )
    .unwrap();
    let running = daemon.wait_state(&agent.id, AgentState::Running).await;
    assert_eq!(running.run, failed.run + 1);
    let seen = triggers(&daemon, &agent.id, 1).await;
    let (action, paths, _) = &seen[0];
    assert_eq!(action, "started");
    assert_eq!(paths, &[work.path().join("app.conf").display().to_string()]);
}

#[tokio::test]
async fn bad_watches_are_refused_and_ctl_sets_shows_and_clears_one() {
    let daemon = Daemon::start().await;
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("src")).unwrap();
    let workspace = work.path().display().to_string();

    let missing = daemon
        .client
        .spawn_agent(&celistra_proto::AgentSpec {
            workspace: Some(workspace.clone()),
            watch: Some(Box::new(watch(&["nowhere"], None, 100))),
            ..spec("missing", "exec sleep 1000")
        })
        .await
        .unwrap_err();
    assert!(
        missing.to_string().contains("nowhere does not exist"),
        "{missing}"
    );
    let bad_glob = daemon
        .client
        .spawn_agent(&celistra_proto::AgentSpec {
            workspace: Some(workspace.clone()),
            watch: Some(Box::new(watch(&["src"], Some(&["src/["]), 100))),
            ..spec("bad-glob", "exec sleep 1000")
        })
        .await
        .unwrap_err();
    assert!(
        bad_glob.to_string().contains("`src/[` is not a glob"),
        "{bad_glob}"
    );

    let usage = daemon.ctl(&["spawn", "--watch-ignore", "*.log", "--", "sleep", "1000"]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&usage.stderr).contains("give --watch PATH with it"),
        "{usage:?}"
    );

    let spawned = daemon.ctl(&[
        "spawn",
        "--name",
        "dev",
        "--workspace",
        &workspace,
        "--watch",
        "src",
        "--watch-ignore",
        "*.log",
        "--watch-delay",
        "250ms",
        "--",
        "sleep",
        "1000",
    ]);
    assert!(spawned.status.success(), "{spawned:?}");
    let agent = daemon.agent("dev").await;
    assert_eq!(
        agent.watch.as_deref(),
        Some(&watch(&["src"], Some(&["*.log"]), 250))
    );
    let status = daemon.ctl(&["status", "dev"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("watch:        src (ignoring *.log; restart after 250 ms quiet)"),
        "{status}"
    );

    let cleared = daemon.ctl(&["set", "dev", "--no-watch"]);
    assert!(cleared.status.success(), "{cleared:?}");
    assert_eq!(daemon.agent("dev").await.watch, None);
    let both = daemon
        .client
        .update_agent(
            "dev",
            &UpdateRequest {
                watch: Some(watch(&["src"], None, 100)),
                clear_watch: true,
                ..UpdateRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert!(both.to_string().contains("give one"), "{both}");
}
