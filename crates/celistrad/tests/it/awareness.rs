//! AI-agent awareness end to end: stand-in agents print the real error and limit formats of
//! Claude Code, Codex and Gemini CLI and call their hooks; the daemon classifies exits, restarts
//! model errors outside the crash ceiling until their budget is spent, waits for usage limits to
//! reset (to the second), and shows each agent's activity with the evidence for it.

use std::time::Duration;

use celistra_proto::{
    Activity, ActivityNotify, AgentSpec, AgentState, EventKind, ExitClass, Notice, NoticeKind,
    SignalTier, TerminalRole,
};

use crate::approvals::wait_output;
use crate::notifications::Receiver;
use crate::{Daemon, spec};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A stand-in for `kind` running `command`.
fn stand_in(name: &str, kind: &str, command: &str) -> AgentSpec {
    AgentSpec {
        kind: Some(kind.into()),
        ..spec(name, command)
    }
}

#[tokio::test]
async fn model_errors_restart_outside_the_crash_ceiling_until_their_budget_is_spent() {
    let daemon = Daemon::start().await;
    // A crash ceiling of zero: any ordinary crash would end it at once.
    let agent = daemon
        .spawn(AgentSpec {
            restart_max: Some(0),
            model_error_max: Some(1),
            ..stand_in(
                "overloaded",
                "claude",
                r#"printf '%s\n' 'API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":null}'; exit 1"#,
            )
        })
        .await;
    let waiting = daemon
        .wait_agent(&agent.id, "in model-error backoff", |a| {
            a.state == AgentState::Backoff
        })
        .await;
    let class = waiting.exit_class.clone().expect("classified");
    assert_eq!(class.class, ExitClass::ModelOverloaded, "{class:?}");
    assert_eq!(class.source, "output");
    assert!(class.said.contains("529"), "{class:?}");
    assert_eq!(waiting.model_errors, 1);
    let current = waiting.activity.clone().expect("an activity");
    assert_eq!(current.activity, Activity::ModelError);
    // The model-error backoff: 1–2 s for the first, not the crash backoff's immediate restart.
    // It counts from when the run's last output was read, up to 500 ms after the exit; the upper
    // end leaves a loaded machine its scheduling delays (the delay's own bounds are unit-tested
    // in celistra-core).
    let delay = waiting.next_restart_at_ms.unwrap() - waiting.exited_at_ms.unwrap();
    assert!((900..=4_000).contains(&delay), "{delay} ms");
    let failed = daemon
        .wait_agent(&agent.id, "stopped by its budget", |a| {
            a.state == AgentState::Failed
        })
        .await;
    assert_eq!(failed.restarts, 1, "{failed:?}");
    let error = failed.last_error.clone().unwrap_or_default();
    assert!(error.contains("stopped after 2 model errors"), "{error}");
    let events = daemon
        .events_until(0, |e| {
            matches!(e.kind, EventKind::AgentModelErrorsExhausted { .. })
        })
        .await;
    assert!(events.iter().any(|e| matches!(
        &e.kind,
        EventKind::AgentExited { class: Some(c), .. } if c.class == ExitClass::ModelOverloaded
    )));
    let runs = daemon
        .wait_runs(&agent.id, |r| {
            r.len() == 2 && r.iter().all(|r| r.cause.is_some())
        })
        .await;
    assert!(
        runs.iter()
            .all(|r| r.exit_class == Some(ExitClass::ModelOverloaded)),
        "{runs:?}"
    );
}

/// A headless Claude Code run that meets its usage limit (resetting at `reset_s`) once, then
/// runs on.
fn limited_once(reset_s: u64) -> String {
    format!(
        "if [ -e limited ]; then echo resumed; exec sleep 600; fi; touch limited; \
         echo 'Claude AI usage limit reached|{reset_s}'; exit 1"
    )
}

/// The agent once its run ended on a usage limit and it waits for the reset. (While it still
/// runs, its screen may show the limit first: its exit then confirms it.)
async fn waiting_between_runs(daemon: &Daemon, agent: &str) -> celistra_proto::AgentInfo {
    daemon
        .wait_agent(agent, "waiting on its limit", |a| {
            a.limit.is_some() && a.state == AgentState::Backoff
        })
        .await
}

#[tokio::test]
async fn a_usage_limit_exit_waits_for_its_reset_to_the_second() {
    let daemon = Daemon::start().await;
    let reset_s = now_ms() / 1000 + 3;
    let agent = daemon
        .spawn(stand_in("limited", "claude", &limited_once(reset_s)))
        .await;
    let waiting = waiting_between_runs(&daemon, &agent.id).await;
    let limit = waiting.limit.clone().unwrap();
    assert_eq!(limit.reset_at_ms, Some(reset_s * 1000), "{limit:?}");
    // Jitter: at most a tenth of the wait.
    assert!(
        (reset_s * 1000..=reset_s * 1000 + 400).contains(&limit.resume_at_ms),
        "{limit:?}"
    );
    assert_eq!(
        waiting.activity.as_ref().map(|a| a.activity),
        Some(Activity::WaitingLimit)
    );
    assert_eq!(
        waiting.exit_class.as_ref().map(|c| c.class),
        Some(ExitClass::UsageLimit)
    );
    let resumed = daemon
        .wait_agent(&agent.id, "resumed after the reset", |a| {
            a.state == AgentState::Running && a.run == 2
        })
        .await;
    let started = resumed.started_at_ms.unwrap();
    assert!(
        started >= limit.resume_at_ms && started <= limit.resume_at_ms + 1_000,
        "started {started}, due {}",
        limit.resume_at_ms
    );
    assert!(resumed.limit.is_none());
    wait_output(&daemon, &agent.id, "resumed").await;
    // `ctl ls` showed the reset; `ctl status` shows the class.
    let status = daemon.ctl(&["status", "limited"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("exit class:   usage-limit"), "{text}");
}

#[tokio::test]
async fn a_running_agent_at_its_limit_gets_its_limit_input_at_the_reset() {
    let daemon = Daemon::start().await;
    let reset_s = now_ms() / 1000 + 2;
    let command = format!(
        "echo 'Claude AI usage limit reached|{reset_s}'; read line; echo \"got:$line\"; \
         exec sleep 600"
    );
    let agent = daemon
        .spawn(AgentSpec {
            limit_input: Some("continue".into()),
            ..stand_in("interactive", "claude", &command)
        })
        .await;
    let waiting = daemon
        .wait_agent(&agent.id, "waiting on its limit", |a| a.limit.is_some())
        .await;
    assert_eq!(waiting.state, AgentState::Running, "it keeps running");
    let limit = waiting.limit.unwrap();
    assert_eq!(limit.action, "input");
    assert_eq!(limit.reset_at_ms, Some(reset_s * 1000));
    wait_output(&daemon, &agent.id, "got:continue").await;
    let after = daemon.agent(&agent.id).await;
    assert!(now_ms() >= limit.resume_at_ms);
    assert_eq!((after.run, after.state), (1, AgentState::Running));
    assert!(after.limit.is_none());
}

#[tokio::test]
async fn an_auth_failure_is_not_restarted_and_says_why() {
    let daemon = Daemon::start().await;
    let agent = daemon
        .spawn(AgentSpec {
            auto_restart: true,
            ..stand_in(
                "logged-out",
                "claude",
                r#"printf '%s\n' 'API Error: 401 {"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}} · Please run /login'; exit 1"#,
            )
        })
        .await;
    let failed = daemon
        .wait_agent(&agent.id, "failed", |a| a.state == AgentState::Failed)
        .await;
    assert_eq!(failed.restarts, 0);
    assert_eq!(failed.exit_class.map(|c| c.class), Some(ExitClass::Auth));
    let error = failed.last_error.unwrap_or_default();
    assert!(error.contains("credentials"), "{error}");
}

#[tokio::test]
async fn a_clean_exit_after_a_retried_error_is_not_a_model_error() {
    let daemon = Daemon::start().await;
    let agent = daemon
        .spawn(stand_in(
            "recovered",
            "claude",
            r#"printf '%s\n' '⎿  API Error (529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":null}) · Retrying in 4 seconds… (attempt 4/10)' 'All done.'"#,
        ))
        .await;
    let exited = daemon.wait_state(&agent.id, AgentState::Exited).await;
    let class = exited.exit_class.unwrap();
    assert_eq!(
        (class.class, class.source.as_str()),
        (ExitClass::Other, "exit")
    );
}

/// The rules file's stand-in kind: a usage limit waits, `Proceed?` asks, `esc to interrupt`
/// works, a bell asks, and one quiet second without CPU is idle.
const RULES: &str = r#"{"kinds": {"stand-in": {
    "quiet_idle_secs": 1,
    "bell": "needs-input",
    "rules": [
        {"name": "limit", "activity": "waiting-limit", "pattern": "usage limit reached", "lines": 8},
        {"name": "asks", "activity": "needs-input", "pattern": "Proceed\\?", "lines": 1},
        {"name": "busy", "activity": "working", "pattern": "esc to interrupt", "lines": 1}
    ]
}}}"#;

/// A state directory holding the stand-in kind's rules file (and `config`).
fn with_rules(config: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("agent-rules.json"), RULES).unwrap();
    if let Some(config) = config {
        std::fs::write(dir.path().join("config.json"), config).unwrap();
    }
    dir
}

/// Acts on each line of input: `busy`, `ask`, `say TEXT`, `bell`, or `hook EVENT` (a Claude Code
/// hook through `celistrad hook claude`).
const DRIVEN: &str = r#"while read cmd arg; do case $cmd in
busy) echo 'Working… (esc to interrupt)';;
ask) printf 'Proceed? [y/n] ';;
say) printf '%s ' "$arg";;
bell) printf '\a';;
hook) printf '{"hook_event_name":"%s","notification_type":"idle_prompt","message":"Claude is waiting for your input","session_id":"s","cwd":"/"}' "$arg" | celistrad hook claude; echo hooked;;
esac; done"#;

/// A running [`DRIVEN`] stand-in of the rules file's kind, and a writer's terminal to it.
async fn driven(
    daemon: &Daemon,
    name: &str,
) -> (celistra_proto::AgentInfo, celistra_client::Terminal) {
    let agent = daemon.spawn(stand_in(name, "stand-in", DRIVEN)).await;
    daemon.wait_state(&agent.id, AgentState::Running).await;
    let terminal = daemon
        .client
        .attach(&agent.id, TerminalRole::Writer)
        .await
        .expect("attach");
    (agent, terminal)
}

#[tokio::test]
async fn activity_comes_from_each_tier_with_its_evidence_hooks_first() {
    let daemon = Daemon::start_on(with_rules(None)).await;
    let (agent, mut terminal) = driven(&daemon, "driven").await;
    let expect = async |activity: Activity, tier: SignalTier, signal: &str| {
        let seen = daemon
            .wait_agent(&agent.id, activity.as_str(), |a| {
                a.activity
                    .as_ref()
                    .is_some_and(|c| c.activity == activity && c.evidence.signal.contains(signal))
            })
            .await;
        assert_eq!(seen.activity.unwrap().evidence.tier, tier);
    };
    terminal.send_input("busy\r").await.unwrap();
    expect(Activity::Working, SignalTier::Screen, "stand-in/busy").await;
    terminal.send_input("ask\r").await.unwrap();
    expect(Activity::NeedsInput, SignalTier::Screen, "stand-in/asks").await;
    terminal.send_input("busy\r").await.unwrap();
    expect(Activity::Working, SignalTier::Screen, "stand-in/busy").await;
    terminal.send_input("bell\r").await.unwrap();
    expect(Activity::NeedsInput, SignalTier::Terminal, "BEL").await;
    terminal.send_input("busy\r").await.unwrap();
    expect(Activity::Working, SignalTier::Screen, "stand-in/busy").await;
    // Quiet, in `read`: idle after a second without output or CPU.
    expect(Activity::Idle, SignalTier::Screen, "no CPU").await;
    // A hook outranks the screen for the rest of the run.
    terminal.send_input("hook Notification\r").await.unwrap();
    expect(Activity::NeedsInput, SignalTier::Hook, "Notification").await;
    // (Typed only once the hook is done: the terminal would echo it before `hooked`.)
    wait_output(&daemon, &agent.id, "hooked").await;
    terminal.send_input("busy\r").await.unwrap();
    // The busy line is on the screen after the hook; give the screen rules a tick to look.
    wait_output(&daemon, &agent.id, "hooked\nbusy\nWorking").await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let still = daemon.agent(&agent.id).await.activity.unwrap();
    assert_eq!(
        (still.activity, still.evidence.tier),
        (Activity::NeedsInput, SignalTier::Hook),
        "the screen does not overrule a hook: {still:?}"
    );
    terminal.send_input("hook PreToolUse\r").await.unwrap();
    expect(Activity::Working, SignalTier::Hook, "PreToolUse").await;
    // The evidence is shown by `ctl status`.
    let status = daemon.ctl(&["status", "driven"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("activity:     working"), "{text}");
    assert!(text.contains("PreToolUse (hook"), "{text}");
    let events = daemon
        .events_until(0, |e| {
            matches!(&e.kind, EventKind::AgentActivity { activity, .. }
                if activity.evidence.signal.contains("PreToolUse"))
        })
        .await;
    let activities = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::AgentActivity { .. }))
        .count();
    assert!(activities >= 8, "{activities} activity events");
}

#[tokio::test]
async fn an_activity_that_lasts_is_notified_once() {
    let mut hook = Receiver::start(&[]).await;
    let config = serde_json::json!({"notifications": {"webhooks": [{
        "name": "ops", "url": hook.url("/hook"),
    }]}});
    let daemon = Daemon::start_on(with_rules(Some(&config.to_string()))).await;
    let agent = daemon
        .spawn(AgentSpec {
            notify_activity: vec![ActivityNotify {
                activity: Activity::NeedsInput,
                after_secs: 1,
            }],
            ..stand_in(
                "asker",
                "stand-in",
                "printf 'Proceed? [y/n] '; exec sleep 600",
            )
        })
        .await;
    let asked = daemon
        .wait_agent(&agent.id, "asking", |a| {
            a.activity
                .as_ref()
                .is_some_and(|c| c.activity == Activity::NeedsInput)
        })
        .await;
    let since = asked.activity.unwrap().since_ms;
    let hit = hook.next().await;
    assert!(now_ms() >= since + 1_000, "not before a second");
    assert_eq!(hit.headers["x-celistra-event"], "agent_activity");
    let notice: Notice = serde_json::from_slice(&hit.body).unwrap();
    assert_eq!(notice.kind, NoticeKind::AgentActivity);
    let about = notice.activity.unwrap();
    assert_eq!(about.agent_name, "asker");
    assert!(
        about.activity.evidence.said.contains("Proceed?"),
        "{about:?}"
    );
    // Once per spell: nothing more while it keeps asking.
    assert!(
        tokio::time::timeout(Duration::from_millis(2_500), hook.next_hit())
            .await
            .is_err(),
        "notified twice"
    );
}

#[tokio::test]
async fn a_headless_result_is_believed_over_its_exit_code_and_a_retry_hint_is_honoured() {
    let daemon = Daemon::start().await;
    // `claude -p --output-format json` ran into the limit: exit 0, the error in its result.
    let reset_s = now_ms() / 1000 + 3_600;
    let headless = format!(
        r#"printf '%s\n' '{{"type":"result","subtype":"success","is_error":true,"result":"Claude AI usage limit reached|{reset_s}"}}'"#
    );
    let agent = daemon
        .spawn(stand_in("headless", "claude", &headless))
        .await;
    let waiting = waiting_between_runs(&daemon, &agent.id).await;
    let class = waiting.exit_class.unwrap();
    assert_eq!(
        (class.class, class.source.as_str(), class.reset_at_ms),
        (ExitClass::UsageLimit, "result", Some(reset_s * 1000))
    );
    assert_eq!(waiting.exit_code, Some(0));
    // Gemini's per-minute quota: rate limited, and not retried before the 5 s it asked for.
    let gemini = daemon
        .spawn(stand_in(
            "quota",
            "gemini",
            r#"printf '%s\n' '[API Error: You exceeded your current quota. Please retry in 5.0s. (Status: RESOURCE_EXHAUSTED)]' 'Suggested retry after 5s.'; exit 1"#,
        ))
        .await;
    let backoff = daemon
        .wait_agent(&gemini.id, "in model-error backoff", |a| {
            a.state == AgentState::Backoff
        })
        .await;
    let class = backoff.exit_class.clone().unwrap();
    assert_eq!(class.class, ExitClass::RateLimited, "{class:?}");
    assert_eq!(class.retry_after_ms, Some(5_000));
    let delay = backoff.next_restart_at_ms.unwrap() - backoff.exited_at_ms.unwrap();
    assert!(delay >= 4_990, "{delay} ms");
}

#[tokio::test]
async fn a_reworded_prompt_needs_only_an_edited_rules_file_and_a_bad_one_changes_nothing() {
    let daemon = Daemon::start_on(with_rules(None)).await;
    let (agent, mut terminal) = driven(&daemon, "reworded").await;
    let rules = daemon.home().join("agent-rules.json");
    // A broken file is refused (the daemon logs why) and the rules before it stay.
    std::fs::write(
        &rules,
        r#"{"kinds": {"stand-in": {"rules": [{"name": "x", "pattern": "("#,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    terminal.send_input("ask\r").await.unwrap();
    daemon
        .wait_agent(&agent.id, "asking by the old rule", |a| {
            a.activity.as_ref().is_some_and(|c| {
                c.activity == Activity::NeedsInput && c.evidence.signal.contains("stand-in/asks")
            })
        })
        .await;
    // The CLI's new release asks "Continue?": one edited file, no new daemon.
    std::fs::write(
        &rules,
        RULES.replace(
            r#""name": "asks", "activity": "needs-input", "pattern": "Proceed\\?""#,
            r#""name": "asks-again", "activity": "needs-input", "pattern": "Continue\\?""#,
        ),
    )
    .unwrap();
    terminal.send_input("busy\r").await.unwrap();
    daemon
        .wait_agent(&agent.id, "working", |a| {
            a.activity
                .as_ref()
                .is_some_and(|c| c.activity == Activity::Working)
        })
        .await;
    terminal.send_input("say Continue?\r").await.unwrap();
    daemon
        .wait_agent(&agent.id, "asking by the new rule", |a| {
            a.activity
                .as_ref()
                .is_some_and(|c| c.evidence.signal.contains("stand-in/asks-again"))
        })
        .await;
}

#[tokio::test]
async fn working_again_before_the_reset_ends_the_wait_for_good() {
    let daemon = Daemon::start_on(with_rules(None)).await;
    let (agent, mut terminal) = driven(&daemon, "outlived").await;
    let reset_s = now_ms() / 1000 + 3_600;
    terminal
        .send_input(format!("say Claude AI usage limit reached|{reset_s}\r"))
        .await
        .unwrap();
    let waiting = daemon
        .wait_agent(&agent.id, "waiting on its limit", |a| a.limit.is_some())
        .await;
    assert_eq!(waiting.limit.unwrap().reset_at_ms, Some(reset_s * 1000));
    // More usage was bought, a person typed: the CLI works again.
    terminal
        .send_input("hook UserPromptSubmit\r")
        .await
        .unwrap();
    let working = daemon
        .wait_agent(&agent.id, "working", |a| {
            a.activity
                .as_ref()
                .is_some_and(|c| c.activity == Activity::Working)
        })
        .await;
    assert!(working.limit.is_none(), "{working:?}");
    // The old limit line is still on the screen: new output does not bring the wait back.
    wait_output(&daemon, &agent.id, "hooked").await;
    terminal.send_input("busy\r").await.unwrap();
    wait_output(&daemon, &agent.id, "hooked\nbusy\nWorking").await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let after = daemon.agent(&agent.id).await;
    assert!(after.limit.is_none(), "{after:?}");
    assert_eq!(after.activity.map(|c| c.activity), Some(Activity::Working));
}

#[tokio::test]
async fn a_daemon_restart_goes_on_waiting_for_the_reset() {
    let mut daemon = Daemon::start().await;
    let reset_s = now_ms() / 1000 + 8;
    let agent = daemon
        .spawn(stand_in("patient", "claude", &limited_once(reset_s)))
        .await;
    let waiting = waiting_between_runs(&daemon, &agent.id).await;
    let limit = waiting.limit.unwrap();
    let stopped = daemon.signal_and_wait("TERM");
    assert!(stopped.success(), "{stopped:?}");
    daemon.restart_process().await;
    // The new daemon does not start it into the limit again: it waits for the same reset.
    let still = daemon
        .wait_agent(&agent.id, "waiting again", |a| {
            a.state == AgentState::Backoff
        })
        .await;
    assert_eq!(still.limit.as_ref(), Some(&limit), "{still:?}");
    assert_eq!(still.run, 1, "no run was started into the limit");
    assert_eq!(
        still.activity.map(|a| a.activity),
        Some(Activity::WaitingLimit)
    );
    let resumed = daemon
        .wait_agent(&agent.id, "resumed after the reset", |a| {
            a.state == AgentState::Running && a.run == 2
        })
        .await;
    assert!(resumed.started_at_ms.unwrap() >= limit.resume_at_ms);
    wait_output(&daemon, &agent.id, "resumed").await;
}

#[tokio::test]
async fn an_agent_spamming_its_hooks_cannot_flood_the_events() {
    let daemon = Daemon::start().await;
    let started = now_ms();
    let agent = daemon
        .spawn(stand_in(
            "spammer",
            "spam",
            r#"i=0; while [ $i -lt 150 ]; do
echo '{"activity":"working","message":"busy"}' | celistrad hook spam
echo '{"activity":"idle","message":"done"}' | celistrad hook spam
i=$((i+1)); done; echo spammed; exec sleep 600"#,
        ))
        .await;
    wait_output(&daemon, &agent.id, "spammed").await;
    let finished = now_ms();
    // The last change is published within a tick even when it was held back.
    let events = daemon
        .events_until(0, |e| {
            matches!(&e.kind, EventKind::AgentActivity { agent_id, activity, .. }
                if *agent_id == agent.id && activity.activity == Activity::Idle
                    && activity.since_ms >= finished.saturating_sub(2_000))
        })
        .await;
    let published = events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::AgentActivity { agent_id, .. } if *agent_id == agent.id))
        .count() as u64;
    let seconds = (now_ms() - started).div_ceil(1000);
    assert!(
        published <= 10 * seconds + 2,
        "{published} activity events in {seconds} s for 300 changes"
    );
    assert_eq!(
        daemon.agent(&agent.id).await.activity.map(|a| a.activity),
        Some(Activity::Idle)
    );
}
