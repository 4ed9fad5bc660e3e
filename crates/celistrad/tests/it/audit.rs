//! The audit log from the outside: every privileged action recorded once with its actor, queries
//! and the live tail, verification by `ctl audit verify` (and its refusals of an altered, rolled
//! back or re-keyed log), offline verification of an export, and the hourly check's event.

use celistra_proto::{AuditEntry, AuditPage, AuditQuery, AuditTailQuery, EventKind, Health};

use crate::{Daemon, PATIENCE, spec};

/// Entries of one action.
fn action(action: &str) -> AuditQuery {
    AuditQuery {
        action: Some(action.to_owned()),
        ..AuditQuery::default()
    }
}

async fn entries(daemon: &Daemon, filter: AuditQuery) -> Vec<AuditEntry> {
    let mut all = vec![];
    let mut after: Option<u64> = None;
    loop {
        let query = AuditQuery {
            after,
            limit: Some(1000),
            ..filter.clone()
        };
        let page: AuditPage = daemon.client.list_audit(&query).await.expect("audit query");
        all.extend(page.entries);
        match page.next_after {
            Some(next) => after = Some(next),
            None => {
                // Pages come newest first.
                all.sort_by_key(|e| e.seq);
                return all;
            }
        }
    }
}

fn actions_on<'a>(entries: &'a [AuditEntry], target: &str) -> Vec<&'a str> {
    entries
        .iter()
        .filter(|e| e.target == target)
        .map(|e| e.action.as_str())
        .collect()
}

/// `ctl audit verify`, remembering the checkpoint it saw in the test's work directory.
fn verify_audit(daemon: &Daemon) -> std::process::Output {
    let seen = daemon.work.path().join("seen");
    daemon.ctl(&["audit", "verify", "--seen", &seen.display().to_string()])
}

fn ok(output: &std::process::Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn every_privileged_action_is_recorded_once_with_its_actor() {
    let daemon = Daemon::start().await;
    let agent = daemon.spawn(spec("audited", "sleep 600")).await;
    let id = agent.id.clone();
    for verb in [
        vec!["stop", "audited"],
        vec!["start", "audited"],
        vec!["restart", "audited"],
        vec!["kill", "audited", "--signal", "TERM"],
        vec!["rename", "audited", "renamed"],
        vec!["set", "renamed", "--env", "TOKEN=hunter2"],
        vec!["sandbox", "off"],
        vec!["sandbox", "on"],
        vec!["rm", "renamed"],
    ] {
        ok(&daemon.ctl(&verb));
    }
    // A request with a wrong secret.
    let intruder = celistra_client::Client::for_home(daemon.home(), "test")
        .unwrap()
        .with_secret("0000");
    assert!(intruder.list_agents().await.is_err());
    let all = entries(&daemon, AuditQuery::default()).await;
    assert_eq!(
        actions_on(&all, &id),
        [
            "agent_spawned",
            "agent_run_started",
            "agent_stop_requested",
            "agent_start_requested",
            "agent_run_started",
            "agent_start_requested",
            "agent_run_started",
            "agent_signalled",
            "agent_renamed",
            "agent_updated",
            "agent_removed",
        ],
        "{all:#?}"
    );
    for entry in all.iter().filter(|e| e.target == id) {
        let expected =
            if entry.action == "agent_run_started" && entry.body["automatic_restart"] == true {
                "system"
            } else {
                "machine-secret"
            };
        assert_eq!(entry.actor, expected, "{entry:?}");
    }
    let update = all.iter().find(|e| e.action == "agent_updated").unwrap();
    assert!(
        !update.body.to_string().contains("hunter2"),
        "secret kept: {update:?}"
    );
    let switches: Vec<_> = all
        .iter()
        .filter(|e| e.action == "sandbox_switched")
        .collect();
    assert_eq!(switches.len(), 2);
    let refused = all
        .iter()
        .find(|e| e.action == "auth_failed")
        .expect("auth failure");
    assert_eq!(
        (refused.actor.as_str(), refused.target.as_str()),
        ("unauthenticated", "/v1/agents")
    );
    let run = all
        .iter()
        .find(|e| e.action == "agent_run_started")
        .unwrap();
    assert_eq!(run.body["sandbox"]["sandboxed"], true, "{run:?}");
    // Queries filter by action and agent.
    let spawned = entries(
        &daemon,
        AuditQuery {
            agent: Some(id.clone()),
            ..action("agent_spawned")
        },
    )
    .await;
    assert_eq!(spawned.len(), 1);
}

#[tokio::test]
async fn apply_and_config_changes_are_recorded() {
    let daemon = Daemon::start().await;
    let file = daemon.work.path().join("agents.json");
    let ws = daemon.work.path().display().to_string();
    std::fs::write(
        &file,
        serde_json::json!({"agents": [{"name": "a", "command": "sleep 600", "workspace": ws}]})
            .to_string(),
    )
    .unwrap();
    ok(&daemon.ctl(&["apply", &file.display().to_string()]));
    std::fs::write(daemon.home().join("config.json"), r#"{"restart_max": 7}"#).unwrap();
    daemon.spawn(spec("b", "sleep 600")).await;
    let all = entries(&daemon, AuditQuery::default()).await;
    let applied = all
        .iter()
        .find(|e| e.action == "config_applied")
        .expect("apply");
    assert_eq!(applied.body["report"]["created"][0], "a");
    let loads: Vec<_> = all
        .iter()
        .filter(|e| e.action == "config_loaded" && e.target == "config.json")
        .collect();
    assert_eq!(loads.len(), 2, "absent, then the new file: {loads:?}");
    assert_eq!(loads[1].body["present"], true);
}

#[tokio::test]
async fn the_live_tail_streams_new_entries() {
    let daemon = Daemon::start().await;
    let last = entries(&daemon, AuditQuery::default())
        .await
        .last()
        .map_or(0, |e| e.seq);
    let mut tail = daemon
        .client
        .tail_audit(&AuditTailQuery { after: Some(last) })
        .await
        .unwrap();
    let agent = daemon.spawn(spec("tailed", "sleep 600")).await;
    let seen = tokio::time::timeout(PATIENCE, async {
        loop {
            let frame = tail.next_frame().await.unwrap().expect("stream open");
            let entry: AuditEntry = serde_json::from_str(&frame.data).unwrap();
            assert!(entry.seq > last);
            if entry.target == agent.id && entry.action == "agent_spawned" {
                return entry;
            }
        }
    })
    .await
    .expect("the spawn reached the tail");
    assert_eq!(seen.actor, "machine-secret");
}

/// Edits line `seq`'s JSON with `change`, the daemon stopped.
fn edit_entry(path: &std::path::Path, seq: u64, change: impl Fn(&mut serde_json::Value)) {
    let text = std::fs::read_to_string(path).unwrap();
    let edited: Vec<String> = text
        .lines()
        .map(|line| {
            let mut entry: serde_json::Value = serde_json::from_str(line).unwrap();
            if entry["seq"] == seq {
                change(&mut entry);
                entry.to_string()
            } else {
                line.to_owned()
            }
        })
        .collect();
    std::fs::write(path, edited.join("\n") + "\n").unwrap();
}

#[tokio::test]
async fn verify_export_and_offline_verification_catch_an_edited_entry() {
    let mut daemon = Daemon::start().await;
    for i in 0..5 {
        daemon.spawn(spec(&format!("v{i}"), "true")).await;
    }
    let out = ok(&verify_audit(&daemon));
    assert!(out.starts_with("ok: "), "{out}");
    let bundle = daemon.work.path().join("bundle");
    ok(&daemon.ctl(&["audit", "export", "--out", &bundle.display().to_string()]));
    let offline = std::process::Command::new(crate::BIN)
        .args(["audit", "verify"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(ok(&offline).starts_with("ok: "));
    ok(&daemon.ctl(&[
        "audit",
        "export",
        "--out",
        &bundle.display().to_string(),
        "--format",
        "csv",
    ]));
    let csv = std::fs::read_to_string(bundle.join("audit.csv")).unwrap();
    assert!(csv.lines().count() > 5, "{csv}");

    // An edited entry in an export is caught offline, naming it.
    let victim = entries(&daemon, action("agent_spawned")).await[2].seq;
    edit_entry(&bundle.join("entries.jsonl"), victim, |e| {
        e["body"]["command"] = "evil".into()
    });
    let offline = std::process::Command::new(crate::BIN)
        .args(["audit", "verify"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert_eq!(offline.status.code(), Some(1));
    let err = String::from_utf8_lossy(&offline.stderr);
    assert!(err.contains(&victim.to_string()), "{err}");

    // The same edit in the daemon's own log: `ctl audit verify`, the daemon's check, its event and
    // its health all say so.
    daemon.signal_and_wait("TERM");
    edit_entry(&daemon.home().join("audit.log"), victim, |e| {
        e["body"]["command"] = "evil".into()
    });
    daemon.restart_process().await;
    let out = verify_audit(&daemon);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("altered") && err.contains(&victim.to_string()),
        "{err}"
    );
    let verification: celistra_proto::AuditVerification =
        daemon.client.verify_audit().await.unwrap();
    assert!(!verification.ok);
    assert_eq!(verification.first_bad_seq, Some(victim));
    daemon
        .events_until(0, |e| {
            matches!(&e.kind, EventKind::AuditVerifyFailed { first_bad_seq, .. } if *first_bad_seq == Some(victim))
        })
        .await;
    let health: Health = daemon.client.get_health().await.unwrap();
    assert_eq!(health.status, "audit_verify_failed");
}

#[tokio::test]
async fn a_rolled_back_or_rekeyed_log_fails_against_the_checkpoint_seen_before() {
    let mut daemon = Daemon::start().await;
    daemon.spawn(spec("early", "true")).await;
    daemon.client.sign_audit_checkpoint().await.unwrap();
    // An older copy of the log and of its checkpoint, consistent with each other.
    let old_log = std::fs::read(daemon.home().join("audit.log")).unwrap();
    let old_checkpoint = std::fs::read(daemon.home().join("audit.checkpoint")).unwrap();
    for i in 0..3 {
        daemon.spawn(spec(&format!("late{i}"), "true")).await;
    }
    ok(&verify_audit(&daemon));

    // Rolled back to the older copy: consistent in itself, but shorter than what was seen.
    daemon.signal_and_wait("TERM");
    let current = std::fs::read(daemon.home().join("audit.log")).unwrap();
    let current_checkpoint = std::fs::read(daemon.home().join("audit.checkpoint")).unwrap();
    std::fs::write(daemon.home().join("audit.log"), &old_log).unwrap();
    std::fs::write(daemon.home().join("audit.checkpoint"), &old_checkpoint).unwrap();
    daemon.restart_process().await;
    let out = verify_audit(&daemon);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("altered"),
        "{out:?}"
    );

    // The right log, but a new signing key.
    daemon.signal_and_wait("TERM");
    std::fs::write(daemon.home().join("audit.log"), &current).unwrap();
    // The attacker's own key, and a checkpoint signed with it.
    std::fs::remove_file(daemon.home().join("audit.checkpoint")).unwrap();
    let _ = current_checkpoint;
    for key in ["audit.key", "audit.pub"] {
        let _ = std::fs::remove_file(daemon.home().join(key));
    }
    daemon.restart_process().await;
    let out = verify_audit(&daemon);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another key"),
        "{out:?}"
    );
}

#[tokio::test]
async fn a_torn_last_entry_after_kill_9_is_cut_and_the_cut_recorded() {
    let mut daemon = Daemon::start().await;
    daemon.spawn(spec("before", "true")).await;
    daemon.signal_and_wait("KILL");
    // What a write interrupted by the crash leaves: half a line.
    let log = daemon.home().join("audit.log");
    let mut text = std::fs::read(&log).unwrap();
    text.extend_from_slice(br#"{"seq":999,"time_ms":17954"#);
    std::fs::write(&log, &text).unwrap();
    daemon.restart_process().await;
    let cut = entries(&daemon, action("audit_log_truncated")).await;
    assert_eq!(cut.len(), 1, "{cut:?}");
    assert_eq!(cut[0].actor, "system");
    let out = ok(&verify_audit(&daemon));
    assert!(out.starts_with("ok: "), "{out}");
}

#[tokio::test]
async fn prove_checks_an_entry_against_a_signed_checkpoint_as_text_or_json() {
    let daemon = Daemon::start().await;
    daemon.spawn(spec("proven", "sleep 100")).await;
    let text = daemon.ctl(&["audit", "prove", "1"]);
    assert!(text.status.success(), "{text:?}");
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("entry 1 is in the signed tree"),
        "{text:?}"
    );
    let json = daemon.ctl(&["audit", "prove", "1", "--json"]);
    assert!(json.status.success(), "{json:?}");
    let proof: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(proof["seq"], 1);
    assert!(proof["tree_size"].as_u64().unwrap() >= 1, "{proof}");
    assert!(proof["proof"].is_array(), "{proof}");
    assert!(
        proof["checkpoint"].as_str().unwrap().contains('\n'),
        "{proof}"
    );
}

/// docs/audit-format.md "Queries" names exactly these parameters.
#[tokio::test]
async fn the_documented_query_parameters_are_the_accepted_ones() {
    let daemon = Daemon::start().await;
    let documented = "/v1/audit?since=1h&until=2099-01-01T00:00:00Z&actor=a&action=b&agent=c&text=d&limit=5&after=10";
    let page: Result<AuditPage, _> = crate::get_json(&daemon.client, documented).await;
    assert!(page.is_ok(), "{page:?}");
    for undocumented in ["since_ms=0", "after_seq=1", "target=x"] {
        let page: Result<AuditPage, _> =
            crate::get_json(&daemon.client, &format!("/v1/audit?{undocumented}")).await;
        assert!(page.is_err(), "{undocumented} was accepted");
    }
}
