//! What a structured hook says about an agent's activity: the payload `celistrad hook <kind>`
//! forwards from Claude Code, Codex or Gemini CLI (or any script) becomes an activity, the
//! evidence for it, and for a failed turn its exit class.
//!
//! # Mapping
//!
//! **claude** (hook input on stdin, `hook_event_name`):
//!
//! | event | activity |
//! |---|---|
//! | `UserPromptSubmit`, `PreToolUse`, `PostToolUse`, `PostToolUseFailure`, `SubagentStart`, `PreCompact`, `ElicitationResult` | working |
//! | `PermissionRequest`; `Notification` with `notification_type` `permission_prompt` | waiting-approval |
//! | `Notification` `idle_prompt` or `elicitation_dialog`; `Elicitation` | needs-input |
//! | `Stop`, `SessionStart`, `SessionEnd` | idle |
//! | `StopFailure` | from its class (below) |
//! | anything else (`SubagentStop`, `Notification` `auth_success`, …) | none: recorded, no change |
//!
//! A `Notification` without `notification_type` (older versions) is read from its message:
//! `permission` means waiting-approval, `waiting for your input` needs-input.
//!
//! `StopFailure` is classified by [`classify_stop_failure`] into `failure`; its activity is
//! `waiting-limit` for a usage limit, `model-error` for the transient classes (overloaded, server
//! error, rate limited, network), and `needs-input` for auth and for an unclassified failure
//! (`invalid_request`, `max_output_tokens`, …): restarting will not help, a person must act.
//!
//! **codex**: the `notify` program's JSON argument: `agent-turn-complete` is idle,
//! `approval-requested` waiting-approval; other types none. A payload with `hook_event_name`
//! (Codex hooks use Claude Code's event names) is read like Claude Code's.
//!
//! **gemini** (hook input on stdin, `hook_event_name`): `BeforeAgent`, `BeforeModel`,
//! `AfterModel`, `BeforeToolSelection`, `BeforeTool`, `AfterTool` working; `AfterAgent`,
//! `SessionStart`, `SessionEnd` idle; `Notification` waiting-approval when its
//! `notification_type` is `ToolPermission`, else needs-input; anything else none.
//!
//! **any other kind** (and `generic`): `{"activity": "<name>", "message": "…"}`, where the name is
//! one of `working`, `needs-input`, `waiting-approval`, `waiting-limit`, `model-error`, `idle`,
//! or `null` for none; a `waiting-limit` or `model-error` message is classified too (so a usage
//! limit's reset is known). A payload with `hook_event_name` and no `activity` is read like
//! Claude Code's.
//!
//! A payload that is not an object, or lacks the field its kind needs, is an error saying what was
//! expected.

use celistra_proto::{Activity, Evidence, ExitClass, SignalTier};
use chrono_tz::Tz;
use serde_json::{Map, Value};

use super::classify::{Classified, classify_line, classify_stop_failure};
use super::clip_said;

/// What a hook said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSignal {
    /// The activity it means; `None`: recorded, but no change.
    pub activity: Option<Activity>,
    /// Which signal, e.g. `claude hook Notification (idle_prompt)`.
    pub signal: String,
    /// What it said (clipped to 200 characters).
    pub said: String,
    /// For a failed turn (`StopFailure`, a generic `waiting-limit` / `model-error`): its class.
    pub failure: Option<Classified>,
}

impl HookSignal {
    /// The evidence for the activity it sets (tier `hook`).
    pub fn evidence(&self, at_ms: u64) -> Evidence {
        Evidence {
            tier: SignalTier::Hook,
            signal: self.signal.clone(),
            said: self.said.clone(),
            at_ms,
        }
    }
}

/// Interprets the hook payload of an agent of `kind`.
pub fn interpret(
    kind: &str,
    payload: &Value,
    now_ms: u64,
    local: Tz,
) -> Result<HookSignal, String> {
    let Value::Object(fields) = payload else {
        return Err(format!(
            "a {kind} hook payload is a JSON object ({}); got {}",
            expected(kind),
            type_name(payload)
        ));
    };
    match kind {
        "claude" => claude(kind, fields, now_ms, local),
        "gemini" => gemini(fields),
        "codex" if !fields.contains_key("hook_event_name") => codex_notify(fields),
        "codex" => claude(kind, fields, now_ms, local),
        _ if !fields.contains_key("activity") && fields.contains_key("hook_event_name") => {
            claude(kind, fields, now_ms, local)
        }
        _ => generic(kind, fields, now_ms, local),
    }
}

fn expected(kind: &str) -> &'static str {
    match kind {
        "claude" => "Claude Code's hook input, with `hook_event_name`",
        "gemini" => "Gemini CLI's hook input, with `hook_event_name`",
        "codex" => {
            "Codex's notify argument, with `type` (e.g. `agent-turn-complete`), or its hook input with `hook_event_name`"
        }
        _ => "e.g. {\"activity\": \"needs-input\", \"message\": \"…\"}",
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn text<'a>(fields: &'a Map<String, Value>, name: &str) -> &'a str {
    fields.get(name).and_then(Value::as_str).unwrap_or_default()
}

/// The field a payload of `kind` must have, as a string.
fn required<'a>(kind: &str, fields: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    match fields.get(name) {
        Some(Value::String(value)) if !value.is_empty() => Ok(value),
        Some(other) => Err(format!(
            "`{name}` of a {kind} hook payload is a non-empty string; got {}",
            type_name(other)
        )),
        None => Err(format!(
            "a {kind} hook payload has `{name}` ({}); it is missing",
            expected(kind)
        )),
    }
}

fn signal(
    activity: Option<Activity>,
    signal: String,
    said: &str,
    failure: Option<Classified>,
) -> Result<HookSignal, String> {
    Ok(HookSignal {
        activity,
        signal,
        said: clip_said(said),
        failure,
    })
}

fn claude(
    kind: &str,
    fields: &Map<String, Value>,
    now_ms: u64,
    local: Tz,
) -> Result<HookSignal, String> {
    let event = required(kind, fields, "hook_event_name")?;
    let named = format!("{kind} hook {event}");
    let tool = text(fields, "tool_name");
    match event {
        "UserPromptSubmit" => signal(Some(Activity::Working), named, text(fields, "prompt"), None),
        "PreToolUse" | "PostToolUse" | "PostToolUseFailure" => {
            signal(Some(Activity::Working), named, tool, None)
        }
        "SubagentStart" | "PreCompact" | "ElicitationResult" => {
            signal(Some(Activity::Working), named, "", None)
        }
        "PermissionRequest" => signal(Some(Activity::WaitingApproval), named, tool, None),
        "Notification" => {
            let message = text(fields, "message");
            let kind_of = text(fields, "notification_type");
            let activity = match kind_of {
                "permission_prompt" => Some(Activity::WaitingApproval),
                "idle_prompt" | "elicitation_dialog" => Some(Activity::NeedsInput),
                "" if message.contains("permission") => Some(Activity::WaitingApproval),
                "" if message.contains("waiting for your input") => Some(Activity::NeedsInput),
                _ => None,
            };
            let named = if kind_of.is_empty() {
                named
            } else {
                format!("{named} ({kind_of})")
            };
            signal(activity, named, message, None)
        }
        "Elicitation" => signal(
            Some(Activity::NeedsInput),
            named,
            text(fields, "message"),
            None,
        ),
        "Stop" => signal(
            Some(Activity::Idle),
            named,
            text(fields, "last_assistant_message"),
            None,
        ),
        "SessionStart" => signal(Some(Activity::Idle), named, text(fields, "source"), None),
        "SessionEnd" => signal(Some(Activity::Idle), named, text(fields, "reason"), None),
        "StopFailure" => {
            let error = match fields.get("error") {
                Some(Value::String(error)) => error.clone(),
                Some(Value::Object(error)) => text(error, "type").to_owned(),
                _ => String::new(),
            };
            let named = if error.is_empty() {
                named
            } else {
                format!("{named} ({error})")
            };
            let failure = classify_stop_failure(&Value::Object(fields.clone()), now_ms, local);
            let activity = match failure.as_ref().map(|failure| failure.class) {
                Some(ExitClass::UsageLimit) => Activity::WaitingLimit,
                Some(class) if class.is_transient_model_error() => Activity::ModelError,
                _ => Activity::NeedsInput,
            };
            let said = match &failure {
                Some(failure) => failure.said.clone(),
                None => [
                    text(fields, "error_details"),
                    text(fields, "last_assistant_message"),
                    &error,
                ]
                .into_iter()
                .find(|text| !text.is_empty())
                .unwrap_or_default()
                .to_owned(),
            };
            signal(Some(activity), named, &said, failure)
        }
        _ => signal(None, named, text(fields, "message"), None),
    }
}

fn codex_notify(fields: &Map<String, Value>) -> Result<HookSignal, String> {
    let kind = required("codex", fields, "type")?;
    let named = format!("codex notify {kind}");
    match kind {
        "agent-turn-complete" => signal(
            Some(Activity::Idle),
            named,
            text(fields, "last-assistant-message"),
            None,
        ),
        "approval-requested" => signal(
            Some(Activity::WaitingApproval),
            named,
            text(fields, "message"),
            None,
        ),
        _ => signal(None, named, "", None),
    }
}

fn gemini(fields: &Map<String, Value>) -> Result<HookSignal, String> {
    let event = required("gemini", fields, "hook_event_name")?;
    let named = format!("gemini hook {event}");
    match event {
        "BeforeAgent" | "BeforeModel" | "AfterModel" | "BeforeToolSelection" => {
            signal(Some(Activity::Working), named, text(fields, "prompt"), None)
        }
        "BeforeTool" | "AfterTool" => signal(
            Some(Activity::Working),
            named,
            text(fields, "tool_name"),
            None,
        ),
        "AfterAgent" => signal(
            Some(Activity::Idle),
            named,
            text(fields, "prompt_response"),
            None,
        ),
        "SessionStart" => signal(Some(Activity::Idle), named, text(fields, "source"), None),
        "SessionEnd" => signal(Some(Activity::Idle), named, text(fields, "reason"), None),
        "Notification" => {
            let kind_of = text(fields, "notification_type");
            let activity = if kind_of == "ToolPermission" {
                Activity::WaitingApproval
            } else {
                Activity::NeedsInput
            };
            let named = if kind_of.is_empty() {
                named
            } else {
                format!("{named} ({kind_of})")
            };
            signal(Some(activity), named, text(fields, "message"), None)
        }
        _ => signal(None, named, "", None),
    }
}

fn generic(
    kind: &str,
    fields: &Map<String, Value>,
    now_ms: u64,
    local: Tz,
) -> Result<HookSignal, String> {
    let activity = match fields.get("activity") {
        Some(Value::Null) => None,
        Some(Value::String(name)) => Some(Activity::parse(name).ok_or_else(|| {
            format!(
                "`activity` `{name}` is not one of working, needs-input, waiting-approval, waiting-limit, model-error, idle"
            )
        })?),
        Some(other) => {
            return Err(format!(
                "`activity` of a {kind} hook payload is a string such as \"needs-input\"; got {}",
                type_name(other)
            ));
        }
        None => {
            return Err(format!(
                "a {kind} hook payload has `activity` ({}); it is missing",
                expected(kind)
            ));
        }
    };
    let message = text(fields, "message");
    let failure = match activity {
        Some(Activity::WaitingLimit | Activity::ModelError) => {
            classify_line(message, now_ms, local)
        }
        _ => None,
    };
    signal(activity, format!("{kind} hook"), message, failure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Activity::{Idle, ModelError, NeedsInput, WaitingApproval, WaitingLimit, Working};
    use chrono_tz::America;
    use serde_json::json;

    /// 2026-07-20T10:00:00Z.
    const NOW: u64 = 1_784_541_600_000;

    fn hook(kind: &str, payload: Value) -> HookSignal {
        interpret(kind, &payload, NOW, America::New_York).unwrap()
    }

    fn claude_event(event: &str) -> Value {
        json!({
            "session_id": "abc",
            "transcript_path": "/home/me/.claude/projects/p/abc.jsonl",
            "cwd": "/work",
            "permission_mode": "default",
            "hook_event_name": event,
        })
    }

    fn with(mut payload: Value, extra: Value) -> Value {
        let fields = payload.as_object_mut().unwrap();
        for (key, value) in extra.as_object().unwrap() {
            fields.insert(key.clone(), value.clone());
        }
        payload
    }

    #[test]
    fn claude_events_map_to_activities() {
        for (event, activity) in [
            ("UserPromptSubmit", Some(Working)),
            ("PreToolUse", Some(Working)),
            ("PostToolUse", Some(Working)),
            ("SubagentStart", Some(Working)),
            ("PermissionRequest", Some(WaitingApproval)),
            ("Stop", Some(Idle)),
            ("SessionStart", Some(Idle)),
            ("SessionEnd", Some(Idle)),
            ("SubagentStop", None),
            ("PreCompact", Some(Working)),
            ("TaskCompleted", None),
        ] {
            let signal = hook("claude", claude_event(event));
            assert_eq!(signal.activity, activity, "{event}");
            assert_eq!(signal.signal, format!("claude hook {event}"));
            assert_eq!(signal.failure, None);
        }
        let tool = hook(
            "claude",
            with(
                claude_event("PreToolUse"),
                json!({"tool_name": "Bash", "tool_input": {"command": "ls"}}),
            ),
        );
        assert_eq!(tool.said, "Bash");
        let stop = hook(
            "claude",
            with(
                claude_event("Stop"),
                json!({"stop_hook_active": false, "last_assistant_message": "All tests pass."}),
            ),
        );
        assert_eq!(
            (stop.activity, stop.said.as_str()),
            (Some(Idle), "All tests pass.")
        );
    }

    #[test]
    fn claude_notifications_by_type() {
        for (kind, message, activity) in [
            (
                "permission_prompt",
                "Claude needs your permission to use Bash",
                Some(WaitingApproval),
            ),
            (
                "idle_prompt",
                "Claude is waiting for your input",
                Some(NeedsInput),
            ),
            (
                "elicitation_dialog",
                "An MCP server asks for input",
                Some(NeedsInput),
            ),
            ("auth_success", "Logged in", None),
        ] {
            let signal = hook(
                "claude",
                with(
                    claude_event("Notification"),
                    json!({"message": message, "title": "Claude Code", "notification_type": kind}),
                ),
            );
            assert_eq!(signal.activity, activity, "{kind}");
            assert_eq!(signal.signal, format!("claude hook Notification ({kind})"));
            assert_eq!(signal.said, message);
        }
        let old = hook(
            "claude",
            with(
                claude_event("Notification"),
                json!({"message": "Claude needs your permission to use Write"}),
            ),
        );
        assert_eq!(
            (old.activity, old.signal.as_str()),
            (Some(WaitingApproval), "claude hook Notification")
        );
    }

    #[test]
    fn claude_stop_failures_carry_their_class() {
        let limit = hook(
            "claude",
            with(
                claude_event("StopFailure"),
                json!({"error": "rate_limit", "error_details": "429", "last_assistant_message": "You've hit your limit · resets 1pm (Europe/Lisbon)"}),
            ),
        );
        assert_eq!(limit.activity, Some(WaitingLimit));
        assert_eq!(limit.signal, "claude hook StopFailure (rate_limit)");
        let failure = limit.failure.unwrap();
        assert_eq!(
            (failure.class, failure.reset_at_ms),
            (ExitClass::UsageLimit, Some(1_784_548_800_000))
        );
        assert_eq!(
            limit.said,
            "You've hit your limit · resets 1pm (Europe/Lisbon)"
        );

        let overloaded = hook(
            "claude",
            with(claude_event("StopFailure"), json!({"error": "overloaded"})),
        );
        assert_eq!(overloaded.activity, Some(ModelError));
        assert_eq!(
            overloaded.failure.unwrap().class,
            ExitClass::ModelOverloaded
        );
        let server = hook(
            "claude",
            with(
                claude_event("StopFailure"),
                json!({"error": "server_error"}),
            ),
        );
        assert_eq!(
            (server.activity, server.failure.unwrap().class),
            (Some(ModelError), ExitClass::ServerError)
        );

        let auth = hook(
            "claude",
            with(
                claude_event("StopFailure"),
                json!({"error": "authentication_failed", "error_details": "Invalid API key · Please run /login"}),
            ),
        );
        assert_eq!(
            (auth.activity, auth.failure.unwrap().class),
            (Some(NeedsInput), ExitClass::Auth)
        );
        let invalid = hook(
            "claude",
            with(
                claude_event("StopFailure"),
                json!({"error": "invalid_request", "error_details": "prompt is too long"}),
            ),
        );
        assert_eq!(
            (invalid.activity, invalid.failure, invalid.said.as_str()),
            (Some(NeedsInput), None, "prompt is too long")
        );
    }

    #[test]
    fn codex_notify_and_hooks() {
        let complete = hook(
            "codex",
            json!({"type": "agent-turn-complete", "thread-id": "t1", "turn-id": "12345", "cwd": "/work", "input-messages": ["Rename foo to bar"], "last-assistant-message": "Rename complete."}),
        );
        assert_eq!(
            (
                complete.activity,
                complete.signal.as_str(),
                complete.said.as_str()
            ),
            (
                Some(Idle),
                "codex notify agent-turn-complete",
                "Rename complete."
            )
        );
        assert_eq!(
            hook("codex", json!({"type": "approval-requested"})).activity,
            Some(WaitingApproval)
        );
        assert_eq!(
            hook("codex", json!({"type": "something-new"})).activity,
            None
        );
        let permission = hook(
            "codex",
            json!({"hook_event_name": "PermissionRequest", "tool_name": "shell"}),
        );
        assert_eq!(
            (permission.activity, permission.signal.as_str()),
            (Some(WaitingApproval), "codex hook PermissionRequest")
        );
        assert_eq!(
            hook("codex", json!({"hook_event_name": "Stop"})).activity,
            Some(Idle)
        );
    }

    #[test]
    fn a_hook_signal_is_hook_tier_evidence() {
        let signal = hook(
            "claude",
            with(
                claude_event("Notification"),
                json!({"message": "Claude is waiting for your input", "notification_type": "idle_prompt"}),
            ),
        );
        assert_eq!(
            signal.evidence(NOW),
            Evidence {
                tier: SignalTier::Hook,
                signal: "claude hook Notification (idle_prompt)".into(),
                said: "Claude is waiting for your input".into(),
                at_ms: NOW,
            }
        );
    }

    #[test]
    fn gemini_events_map_to_activities() {
        for (event, activity) in [
            ("BeforeAgent", Some(Working)),
            ("BeforeModel", Some(Working)),
            ("BeforeTool", Some(Working)),
            ("AfterTool", Some(Working)),
            ("AfterAgent", Some(Idle)),
            ("SessionStart", Some(Idle)),
            ("SessionEnd", Some(Idle)),
            ("PreCompress", None),
        ] {
            let payload = json!({"session_id": "s", "cwd": "/work", "timestamp": "2026-07-20T10:00:00Z", "hook_event_name": event});
            let signal = hook("gemini", payload);
            assert_eq!(signal.activity, activity, "{event}");
            assert_eq!(signal.signal, format!("gemini hook {event}"));
        }
        let permission = hook(
            "gemini",
            json!({"hook_event_name": "Notification", "notification_type": "ToolPermission", "message": "Allow shell command: rm -rf build?"}),
        );
        assert_eq!(
            (permission.activity, permission.signal.as_str()),
            (
                Some(WaitingApproval),
                "gemini hook Notification (ToolPermission)"
            )
        );
        let other = hook(
            "gemini",
            json!({"hook_event_name": "Notification", "message": "Waiting for input"}),
        );
        assert_eq!(other.activity, Some(NeedsInput));
    }

    #[test]
    fn any_script_can_report_an_activity() {
        let signal = hook(
            "aider",
            json!({"activity": "needs-input", "message": "Waiting for you"}),
        );
        assert_eq!(
            (
                signal.activity,
                signal.signal.as_str(),
                signal.said.as_str()
            ),
            (Some(NeedsInput), "aider hook", "Waiting for you")
        );
        let limit = hook(
            "my-agent",
            json!({"activity": "waiting-limit", "message": "You've hit your usage limit. Try again at 4:05 PM."}),
        );
        let failure = limit.failure.unwrap();
        assert_eq!(
            (failure.class, failure.reset_at_ms),
            (ExitClass::UsageLimit, Some(1_784_577_900_000))
        );
        assert_eq!(hook("generic", json!({"activity": null})).activity, None);
        assert_eq!(
            hook("opencode", json!({"hook_event_name": "Stop"})).activity,
            Some(Idle)
        );
    }

    #[test]
    fn malformed_payloads_say_what_was_expected() {
        let err = |kind: &str, payload: Value| {
            interpret(kind, &payload, NOW, America::New_York).unwrap_err()
        };
        let e = err("claude", json!(["Stop"]));
        assert!(
            e.contains("JSON object") && e.contains("hook_event_name") && e.contains("an array"),
            "{e}"
        );
        let e = err("claude", json!({"session_id": "s"}));
        assert!(
            e.contains("`hook_event_name`") && e.contains("missing"),
            "{e}"
        );
        let e = err("gemini", json!({"hook_event_name": 3}));
        assert!(
            e.contains("non-empty string") && e.contains("a number"),
            "{e}"
        );
        let e = err("codex", json!({"thread-id": "t"}));
        assert!(
            e.contains("`type`") && e.contains("agent-turn-complete"),
            "{e}"
        );
        let e = err("generic", json!({"message": "hi"}));
        assert!(e.contains("`activity`") && e.contains("missing"), "{e}");
        let e = err("generic", json!({"activity": "busy"}));
        assert!(e.contains("`busy` is not one of working"), "{e}");
        let e = err("generic", json!("needs-input"));
        assert!(e.contains("a string"), "{e}");
    }
}
