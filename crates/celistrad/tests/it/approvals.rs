//! Approvals end to end with real agents: a script that runs `celistrad ask` in its sandbox and acts
//! on the answer; approve, deny, expiry, first decision wins, a daemon restart keeps the request,
//! and an agent cannot decide through its own socket.

use std::time::Instant;

use celistra_proto::{AgentState, Approval, ApprovalStatus, AuditPage, EventKind};

use crate::{BIN, Daemon, PATIENCE, spec};

/// A script that asks, then says what it was told.
pub(crate) fn asking(args: &str) -> String {
    format!(r#"if {BIN} ask {args}; then echo "verdict: go"; else echo "verdict: stop $?"; fi"#)
}

pub(crate) async fn pending_of(daemon: &Daemon, agent: &str) -> Approval {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let pending: Vec<Approval> = daemon
            .client
            .list_approvals(&celistra_proto::ApprovalsQuery { pending: true })
            .await
            .unwrap();
        if let Some(approval) = pending.into_iter().find(|a| a.agent_id == agent) {
            return approval;
        }
        assert!(Instant::now() < deadline, "{agent} never asked");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

pub(crate) async fn wait_output(daemon: &Daemon, agent: &str, text: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let body = daemon
            .client
            .get_logs(agent, &celistra_proto::LogsQuery::default())
            .await
            .unwrap();
        let out = crate::read_body(body).await;
        if out.contains(text) {
            return out;
        }
        assert!(Instant::now() < deadline, "no `{text}` in: {out}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_agent_asks_waits_and_goes_ahead_once_approved() {
    let daemon = Daemon::start().await;
    let agent = daemon
        .spawn(spec(
            "deployer",
            &asking("'git push origin main' --detail '3 commits'"),
        ))
        .await;
    let approval = pending_of(&daemon, &agent.id).await;
    assert_eq!(approval.prompt, "git push origin main");
    assert_eq!(approval.detail.as_deref(), Some("3 commits"));
    assert_eq!(approval.origin, "ask");
    let waiting = daemon
        .wait_state(&agent.id, AgentState::WaitingApproval)
        .await;
    // Its activity says so too, with the approval flow as the evidence.
    let activity = waiting.activity.expect("an activity");
    assert_eq!(
        (activity.activity, activity.evidence.tier),
        (
            celistra_proto::Activity::WaitingApproval,
            celistra_proto::SignalTier::Hook
        )
    );
    // As the README shows it: `--pending` without `ls`.
    let listed = daemon.ctl(&["approvals", "--pending", "--json"]);
    assert!(listed.status.success(), "{listed:?}");
    let listed: Vec<Approval> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, approval.id);
    let out = daemon.ctl(&[
        "approvals",
        "approve",
        &approval.id,
        "--reason",
        "looks fine",
    ]);
    assert!(out.status.success(), "{out:?}");
    wait_output(&daemon, &agent.id, "verdict: go").await;
    // The first decision won; a second one is refused, saying who decided.
    let again = daemon.ctl(&["approvals", "deny", &approval.id]);
    assert_eq!(again.status.code(), Some(1));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already approved by machine-secret"), "{err}");
    let decided: Approval = daemon.client.get_approval(&approval.id).await.unwrap();
    assert_eq!(decided.status, ApprovalStatus::Approved);
    assert_eq!(decided.reason.as_deref(), Some("looks fine"));
    assert_eq!(decided.decided_via.as_deref(), Some("cli"));
    // Asked and decided are events and audit entries with their actors.
    daemon
        .events_until(0, |e| matches!(&e.kind, EventKind::ApprovalDecided { approval } if approval.id == decided.id))
        .await;
    let audit: AuditPage = daemon
        .client
        .list_audit(&celistra_proto::AuditQuery {
            agent: Some(agent.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let actors: Vec<(&str, &str)> = audit
        .entries
        .iter()
        .filter(|e| e.action.starts_with("approval_"))
        .map(|e| (e.action.as_str(), e.actor.as_str()))
        .collect();
    let asker = format!("agent:{}", agent.id);
    assert!(
        actors.contains(&("approval_requested", asker.as_str())),
        "{actors:?}"
    );
    assert!(
        actors.contains(&("approval_decided", "machine-secret")),
        "{actors:?}"
    );
}

#[tokio::test]
async fn a_denial_and_an_expiry_stop_the_agent_with_their_exit_codes() {
    let daemon = Daemon::start().await;
    let denied = daemon
        .spawn(spec("denied", &asking("'rm -rf build'")))
        .await;
    let expiring = daemon
        .spawn(spec("expiring", &asking("'deploy' --ttl 1")))
        .await;
    let approval = pending_of(&daemon, &denied.id).await;
    let out = daemon.ctl(&["approvals", "deny", &approval.id]);
    assert!(out.status.success(), "{out:?}");
    wait_output(&daemon, &denied.id, "verdict: stop 1").await;
    wait_output(&daemon, &expiring.id, "verdict: stop 3").await;
    let expired: Vec<Approval> = daemon
        .client
        .list_approvals(&celistra_proto::ApprovalsQuery::default())
        .await
        .unwrap();
    let expired = expired.iter().find(|a| a.agent_id == expiring.id).unwrap();
    assert_eq!(expired.status, ApprovalStatus::Expired);
    assert_eq!(expired.decided_by.as_deref(), Some("system"));
    // Back to running once nothing is pending.
    let agent = daemon.agent(&denied.id).await;
    assert_ne!(agent.state, AgentState::WaitingApproval);
}

#[tokio::test]
async fn a_request_survives_a_daemon_restart_and_the_restarted_agent_joins_it() {
    let mut daemon = Daemon::start().await;
    let agent = daemon
        .spawn(spec(
            "patient",
            &asking("'migrate the database' --key migrate-1 --ttl 600"),
        ))
        .await;
    let before = pending_of(&daemon, &agent.id).await;
    daemon.signal_and_wait("TERM");
    daemon.restart_process().await;
    // The same request, still pending; the agent, started again, asks with the same key.
    let after = pending_of(&daemon, &agent.id).await;
    assert_eq!(after.id, before.id);
    daemon
        .wait_state(&agent.id, AgentState::WaitingApproval)
        .await;
    let out = daemon.ctl(&["approvals", "approve", &after.id]);
    assert!(out.status.success(), "{out:?}");
    wait_output(&daemon, &agent.id, "verdict: go").await;
}

#[tokio::test]
async fn an_agent_cannot_decide_through_its_own_socket() {
    let daemon = Daemon::start().await;
    let agent = daemon
        .spawn(spec(
            "sneaky",
            &format!(
                r#"{BIN} ask 'sudo things' --ttl 30 & curl -s -X POST --unix-socket "$CELISTRA_ASK_SOCKET" http://x/v1/approvals/any/approve -d '{{}}'; echo; echo tried; wait"#
            ),
        ))
        .await;
    let approval = pending_of(&daemon, &agent.id).await;
    let out = wait_output(&daemon, &agent.id, "tried").await;
    assert!(out.contains("not_found"), "{out}");
    let still: Approval = daemon.client.get_approval(&approval.id).await.unwrap();
    assert_eq!(still.status, ApprovalStatus::Pending);
}

#[tokio::test]
async fn a_claude_code_hook_gets_its_decision_json() {
    let daemon = Daemon::start().await;
    let hook_input = r#"{"session_id":"s1","hook_event_name":"PreToolUse","tool_name":"Bash","tool_input":{"command":"git push origin main"}}"#;
    let agent = daemon
        .spawn(spec(
            "claude",
            &format!("echo '{hook_input}' | {BIN} ask --hook claude; echo \"exit $?\""),
        ))
        .await;
    let approval = pending_of(&daemon, &agent.id).await;
    assert_eq!(approval.origin, "hook");
    assert!(
        approval.prompt.contains("git push origin main"),
        "{approval:?}"
    );
    let out = daemon.ctl(&["approvals", "approve", &approval.id]);
    assert!(out.status.success(), "{out:?}");
    let out = wait_output(&daemon, &agent.id, "exit 0").await;
    assert!(out.contains(r#""permissionDecision":"allow""#), "{out}");
}

#[tokio::test]
async fn a_json_line_on_the_terminal_is_hidden_asked_and_answered_on_stdin() {
    let daemon = Daemon::start().await;
    let line = r#"{"celistra":"permission_request","id":"r1","prompt":"rotate the keys"}"#;
    let agent = daemon
        .spawn(spec(
            "liner",
            &format!("stty -echo; echo before; echo '{line}'; read answer; echo \"got: $answer\""),
        ))
        .await;
    let approval = pending_of(&daemon, &agent.id).await;
    assert_eq!(
        (approval.origin.as_str(), approval.prompt.as_str()),
        ("line", "rotate the keys")
    );
    assert_eq!(approval.key.as_deref(), Some("r1"));
    let out = daemon.ctl(&["approvals", "approve", &approval.id]);
    assert!(out.status.success(), "{out:?}");
    let out = wait_output(&daemon, &agent.id, "got: ").await;
    assert!(
        out.contains(r#"got: {"celistra":"permission_response","id":"r1","decision":"approved"}"#),
        "{out}"
    );
    assert!(out.contains("before"), "{out}");
    assert!(
        !out.contains("permission_request"),
        "the request line was shown: {out}"
    );
}

#[tokio::test]
async fn an_agent_cannot_flood_the_inbox() {
    let daemon = Daemon::start().await;
    let agent = daemon
        .spawn(spec(
            "flooder",
            &format!(
                "for i in $(seq 40); do {BIN} ask \"spam $i\" --ttl 60 2>>refused.txt & done; wait; echo done"
            ),
        ))
        .await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let refused =
            std::fs::read_to_string(daemon.work.path().join("refused.txt")).unwrap_or_default();
        if refused.matches("already has 32 requests").count() == 8 {
            break;
        }
        assert!(Instant::now() < deadline, "refusals: {refused}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let pending: Vec<Approval> = daemon
        .client
        .list_approvals(&celistra_proto::ApprovalsQuery { pending: true })
        .await
        .unwrap();
    assert_eq!(
        pending.iter().filter(|a| a.agent_id == agent.id).count(),
        32
    );
}

#[tokio::test]
async fn an_ask_with_an_escape_sequence_or_a_newline_is_refused_and_never_pending() {
    let daemon = Daemon::start().await;
    // The prompt would redraw every approver's screen and forge a second line.
    let script =
        format!(r#"{BIN} ask "$(printf 'push\033[2J\nnow')"; echo "asked: $?"; sleep 100"#);
    let agent = daemon.spawn(spec("sneaky", &script)).await;
    let out = wait_output(&daemon, &agent.id, "asked: ").await;
    assert!(out.contains("control characters"), "{out}");
    assert!(out.contains("asked: 2"), "{out}");
    let all: Vec<Approval> = daemon
        .client
        .list_approvals(&Default::default())
        .await
        .unwrap();
    assert!(all.iter().all(|a| a.agent_id != agent.id), "{all:?}");
    assert_ne!(
        daemon.agent(&agent.id).await.state,
        AgentState::WaitingApproval
    );
}

/// The README's `celistrad ask`, as written: the agent finds `celistrad` on its `PATH` (the
/// daemon's own binary), in its sandbox (read-only there) and outside one, with nothing installed.
#[tokio::test]
async fn every_agent_finds_celistrad_on_its_path() {
    let daemon = Daemon::start().await;
    let asking = r#"where=$(command -v celistrad); echo "found at $where"
if celistrad ask 'may I?'; then echo "verdict: go"; else echo "verdict: stop $?"; fi"#;
    // Only inside the sandbox does the agent try to overwrite it: outside, a root agent could.
    let sandboxed = daemon
        .spawn(spec(
            "inside",
            &format!(
                r#"{asking}
if echo x 2>/dev/null >"$where"; then echo "overwrote it"; else echo "read-only"; fi
sleep 100"#
            ),
        ))
        .await;
    let unsandboxed = daemon
        .spawn(celistra_proto::AgentSpec {
            capabilities: vec!["privileged".into()],
            ..spec("outside", &format!("{asking}\nsleep 100"))
        })
        .await;
    for agent in [&sandboxed, &unsandboxed] {
        let approval = pending_of(&daemon, &agent.id).await;
        assert_eq!(approval.prompt, "may I?");
        let out = daemon.ctl(&["approvals", "approve", &approval.id]);
        assert!(out.status.success(), "{out:?}");
        wait_output(&daemon, &agent.id, "verdict: go").await;
    }
    let inside = wait_output(&daemon, &sandboxed.id, "read-only").await;
    assert!(
        inside.contains("found at /tmp/.celistra/bin/celistrad") && !inside.contains("overwrote"),
        "{inside}"
    );
    // Outside, a link to the daemon's own binary in its runtime directory.
    let outside = wait_output(&daemon, &unsandboxed.id, "found at").await;
    let found = outside
        .lines()
        .find_map(|line| line.strip_prefix("found at "))
        .expect("the path");
    assert!(found.ends_with("/bin/celistrad"), "{outside}");
    assert_eq!(
        std::fs::canonicalize(found).expect("a real file"),
        std::fs::canonicalize(crate::BIN).expect("the binary")
    );
}
