//! What `celistrad ask` reads and prints in its two JSON modes: Claude Code's hook protocol
//! (`--hook claude`, for `PreToolUse` and `PermissionRequest` hooks) and the generic JSON-in/JSON-out
//! mode (`--hook generic`) for other agents' external approvers.
//!
//! The Claude Code shapes follow the hooks reference, <https://code.claude.com/docs/en/hooks>
//! (sections "Common input fields", "PreToolUse decision control", "PermissionRequest input" and
//! "PermissionRequest decision control"): the hook gets one JSON object on stdin with
//! `hook_event_name`, `tool_name` and `tool_input` (plus `session_id`, `cwd`, … which are not needed
//! here), and answers on stdout, with exit status 0, with a `hookSpecificOutput` object.

use celistra_proto::AskRequest;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use crate::approval_line::Decision;
use crate::approval_line::{TimeoutDefault, check_prompt, check_ttl, clip_detail};

/// Longest prompt built from a hook's tool call, in characters: one glanceable line. The whole tool
/// input is in the detail.
pub const MAX_HOOK_PROMPT_CHARS: usize = 200;

/// The `tool_input` fields that say best what a tool call does, most telling first (Bash `command`,
/// file tools' `file_path`, NotebookEdit's `notebook_path`, WebFetch `url`, WebSearch `query`,
/// Glob and Grep `pattern`, Task `description`).
const TELLING_FIELDS: [&str; 9] = [
    "command",
    "file_path",
    "notebook_path",
    "url",
    "query",
    "pattern",
    "path",
    "description",
    "prompt",
];

/// How a request was decided, as `celistrad ask` learns it from the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AskOutcome {
    pub decision: Decision,
    /// The decider's words, if any.
    pub reason: Option<String>,
    /// Who decided (absent for an expiry).
    pub decided_by: Option<String>,
}

/// The Claude Code hook events `celistrad ask --hook claude` can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaudeHookEvent {
    /// Runs before every matching tool call; answered with `permissionDecision`.
    PreToolUse,
    /// Runs when Claude Code is about to show a permission dialog; answered with `decision.behavior`.
    PermissionRequest,
}

impl ClaudeHookEvent {
    fn name(self) -> &'static str {
        match self {
            ClaudeHookEvent::PreToolUse => "PreToolUse",
            ClaudeHookEvent::PermissionRequest => "PermissionRequest",
        }
    }
}

/// A tool call Claude Code wants approved, ready to become a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookAsk {
    pub event: ClaudeHookEvent,
    /// One line, e.g. `Bash: git push origin main`.
    pub prompt: String,
    /// The tool input, pretty-printed, at most 4 KiB.
    pub detail: String,
}

/// What the broker is asked for a hook: the daemon's default TTL, denied when it runs out.
impl From<HookAsk> for AskRequest {
    fn from(ask: HookAsk) -> Self {
        AskRequest {
            prompt: ask.prompt,
            detail: Some(ask.detail),
            ttl_secs: None,
            on_timeout: TimeoutDefault::Deny,
            key: None,
        }
    }
}

/// A request in the generic mode: `{"prompt": "...", "detail": "...", "ttl": 300}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenericAsk {
    pub prompt: String,
    pub detail: Option<String>,
    pub ttl_secs: Option<u64>,
}

/// What the broker is asked in the generic mode: denied when the TTL runs out.
impl From<GenericAsk> for AskRequest {
    fn from(ask: GenericAsk) -> Self {
        AskRequest {
            prompt: ask.prompt,
            detail: ask.detail,
            ttl_secs: ask.ttl_secs,
            on_timeout: TimeoutDefault::Deny,
            key: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireGenericAsk {
    prompt: String,
    detail: Option<String>,
    ttl: Option<u64>,
}

const HOOK_USAGE: &str = "`celistrad ask --hook claude` reads the JSON Claude Code passes to a \
     PreToolUse or PermissionRequest command hook on stdin; register it as such a hook in settings.json \
     (see docs/approvals.md)";

const GENERIC_USAGE: &str = "`celistrad ask --hook generic` reads one object on stdin, \
     e.g. {\"prompt\": \"git push origin main\", \"detail\": \"3 commits\", \"ttl\": 300}";

/// Reads a Claude Code `PreToolUse` or `PermissionRequest` hook input.
pub fn claude_hook_request(stdin: &str) -> Result<HookAsk, String> {
    if stdin.trim().is_empty() {
        return Err(format!("stdin is empty; {HOOK_USAGE}"));
    }
    let input: Value = serde_json::from_str(stdin)
        .map_err(|err| format!("stdin is not JSON ({err}); {HOOK_USAGE}"))?;
    let Value::Object(fields) = input else {
        return Err(format!("stdin is JSON but not an object; {HOOK_USAGE}"));
    };
    let event = match fields.get("hook_event_name") {
        Some(Value::String(name)) if name == "PreToolUse" => ClaudeHookEvent::PreToolUse,
        Some(Value::String(name)) if name == "PermissionRequest" => {
            ClaudeHookEvent::PermissionRequest
        }
        Some(Value::String(name)) => {
            return Err(format!(
                "hook_event_name is `{}`, which this hook cannot answer; {HOOK_USAGE}",
                one_line(name, 60)
            ));
        }
        Some(_) => return Err(format!("hook_event_name is not a string; {HOOK_USAGE}")),
        None => {
            return Err(format!(
                "the field hook_event_name is missing; {HOOK_USAGE}"
            ));
        }
    };
    let tool_name = match fields.get("tool_name") {
        Some(Value::String(name)) if !name.trim().is_empty() => name,
        Some(_) => return Err(format!("tool_name is not a non-empty string; {HOOK_USAGE}")),
        None => return Err(format!("the field tool_name is missing; {HOOK_USAGE}")),
    };
    let tool_input = match fields.get("tool_input") {
        Some(Value::Object(input)) => input,
        Some(_) => return Err(format!("tool_input is not an object; {HOOK_USAGE}")),
        None => return Err(format!("the field tool_input is missing; {HOOK_USAGE}")),
    };
    let summary = TELLING_FIELDS
        .iter()
        .find_map(|field| match tool_input.get(*field) {
            Some(Value::String(text)) if !text.trim().is_empty() => Some(text.clone()),
            _ => None,
        })
        .or_else(|| {
            (!tool_input.is_empty()).then(|| Value::Object(tool_input.clone()).to_string())
        });
    let line = match summary {
        Some(summary) => format!("{tool_name}: {summary}"),
        None => tool_name.clone(),
    };
    let prompt = one_line(&line, MAX_HOOK_PROMPT_CHARS);
    check_prompt(&prompt).map_err(|err| format!("{err}; {HOOK_USAGE}"))?;
    let detail = serde_json::to_string_pretty(tool_input)
        .map_err(|err| format!("tool_input cannot be shown ({err}); {HOOK_USAGE}"))?;
    Ok(HookAsk {
        event,
        prompt,
        detail: clip_detail(&detail),
    })
}

/// The JSON to print on stdout (with exit status 0) for a decided hook request. An expired request
/// is denied, and the message says that nobody decided in time.
///
/// `PreToolUse`: `hookSpecificOutput.permissionDecision` `allow` or `deny` with
/// `permissionDecisionReason` (shown to Claude on deny). `PermissionRequest`:
/// `hookSpecificOutput.decision.behavior` `allow` or `deny`, with `message` on deny (it tells Claude
/// why). Both per <https://code.claude.com/docs/en/hooks>, "PreToolUse decision control" and
/// "PermissionRequest decision control".
pub fn claude_hook_response(event: ClaudeHookEvent, outcome: &AskOutcome) -> Value {
    let allowed = outcome.decision == Decision::Approved;
    let message = explain(outcome);
    match event {
        ClaudeHookEvent::PreToolUse => json!({
            "hookSpecificOutput": {
                "hookEventName": event.name(),
                "permissionDecision": if allowed { "allow" } else { "deny" },
                "permissionDecisionReason": message,
            }
        }),
        ClaudeHookEvent::PermissionRequest if allowed => json!({
            "hookSpecificOutput": {
                "hookEventName": event.name(),
                "decision": { "behavior": "allow" },
            }
        }),
        ClaudeHookEvent::PermissionRequest => json!({
            "hookSpecificOutput": {
                "hookEventName": event.name(),
                "decision": { "behavior": "deny", "message": message },
            }
        }),
    }
}

/// Reads a generic-mode request.
pub fn generic_request(stdin: &str) -> Result<GenericAsk, String> {
    if stdin.trim().is_empty() {
        return Err(format!("stdin is empty; {GENERIC_USAGE}"));
    }
    let wire: WireGenericAsk =
        crate::json::parse(stdin, "stdin").map_err(|err| format!("{err}; {GENERIC_USAGE}"))?;
    check_prompt(&wire.prompt).map_err(|err| format!("{err}; {GENERIC_USAGE}"))?;
    if let Some(ttl) = wire.ttl {
        check_ttl(ttl).map_err(|err| format!("{err}; {GENERIC_USAGE}"))?;
    }
    Ok(GenericAsk {
        prompt: wire.prompt,
        detail: wire.detail.as_deref().map(clip_detail),
        ttl_secs: wire.ttl,
    })
}

/// The generic-mode answer: `{"decision":"approved"|"denied"|"expired","reason":…,"decided_by":…}`
/// (`reason` and `decided_by` are `null` when unknown).
pub fn generic_response(outcome: &AskOutcome) -> Value {
    json!({
        "decision": outcome.decision.as_str(),
        "reason": outcome.reason,
        "decided_by": outcome.decided_by,
    })
}

/// The sentence a hook shows for an outcome, e.g. `Denied through Celistra by alice: not today`.
fn explain(outcome: &AskOutcome) -> String {
    let mut text = match outcome.decision {
        Decision::Approved => "Approved through Celistra".to_owned(),
        Decision::Denied => "Denied through Celistra".to_owned(),
        Decision::Expired => {
            "Denied: the Celistra approval request expired before anyone decided".to_owned()
        }
    };
    if let Some(who) = outcome.decided_by.as_deref().filter(|who| !who.is_empty()) {
        text.push_str(" by ");
        text.push_str(&one_line(who, 80));
    }
    if let Some(reason) = outcome.reason.as_deref().filter(|r| !r.trim().is_empty()) {
        text.push_str(": ");
        text.push_str(&one_line(reason, 500));
    }
    text
}

/// `text` on one line: runs of whitespace and control characters become one space, and text beyond
/// `max_chars` characters is replaced by `…`.
fn one_line(text: &str, max_chars: usize) -> String {
    let collapsed = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if collapsed.chars().count() <= max_chars {
        return collapsed;
    }
    let mut clipped: String = collapsed
        .chars()
        .take(max_chars.saturating_sub(1))
        .collect();
    clipped.push('…');
    clipped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval_line::MAX_DETAIL_BYTES;
    use proptest::prelude::*;

    /// The example input of the hooks reference ("Common input fields"), for a Bash call.
    fn hook_input(event: &str, tool_name: &str, tool_input: Value) -> String {
        json!({
            "session_id": "abc123",
            "transcript_path": "/home/user/.claude/projects/x/transcript.jsonl",
            "cwd": "/home/user/my-project",
            "permission_mode": "default",
            "hook_event_name": event,
            "tool_name": tool_name,
            "tool_input": tool_input,
            "tool_use_id": "toolu_01ABC123",
        })
        .to_string()
    }

    fn outcome(decision: Decision, reason: Option<&str>, by: Option<&str>) -> AskOutcome {
        AskOutcome {
            decision,
            reason: reason.map(str::to_owned),
            decided_by: by.map(str::to_owned),
        }
    }

    #[test]
    fn a_bash_call_becomes_its_command() {
        let stdin = hook_input(
            "PreToolUse",
            "Bash",
            json!({"command": "git push origin main", "description": "Push to main"}),
        );
        let ask = claude_hook_request(&stdin).unwrap();
        assert_eq!(ask.event, ClaudeHookEvent::PreToolUse);
        assert_eq!(ask.prompt, "Bash: git push origin main");
        assert_eq!(
            ask.detail,
            "{\n  \"command\": \"git push origin main\",\n  \"description\": \"Push to main\"\n}"
        );
    }

    #[test]
    fn each_tool_is_summed_up_by_its_most_telling_field() {
        let cases = [
            (
                "Write",
                json!({"file_path": "/p/a.rs", "content": "fn main() {}"}),
                "Write: /p/a.rs",
            ),
            (
                "Edit",
                json!({"file_path": "/p/b.rs", "old_string": "a", "new_string": "b"}),
                "Edit: /p/b.rs",
            ),
            (
                "WebFetch",
                json!({"url": "https://example.com", "prompt": "summarise"}),
                "WebFetch: https://example.com",
            ),
            (
                "WebSearch",
                json!({"query": "rust pty"}),
                "WebSearch: rust pty",
            ),
            (
                "Grep",
                json!({"pattern": "TODO", "path": "/p"}),
                "Grep: TODO",
            ),
            (
                "NotebookEdit",
                json!({"notebook_path": "/p/n.ipynb", "new_source": "x"}),
                "NotebookEdit: /p/n.ipynb",
            ),
            (
                "mcp__github__create_issue",
                json!({"repo": "a/b", "title": "t"}),
                r#"mcp__github__create_issue: {"repo":"a/b","title":"t"}"#,
            ),
            ("ExitPlanMode", json!({}), "ExitPlanMode"),
            ("Bash", json!({"command": "  "}), r#"Bash: {"command":" "}"#),
        ];
        for (tool, input, prompt) in cases {
            let ask = claude_hook_request(&hook_input("PermissionRequest", tool, input)).unwrap();
            assert_eq!(ask.event, ClaudeHookEvent::PermissionRequest);
            assert_eq!(ask.prompt, prompt);
            assert!(check_prompt(&ask.prompt).is_ok());
        }
    }

    #[test]
    fn prompts_are_one_short_line_and_details_are_clipped() {
        let script = format!("set -e\ncd /srv\n\t{}\n", "x".repeat(5000));
        let ask = claude_hook_request(&hook_input(
            "PreToolUse",
            "Bash",
            json!({"command": script}),
        ))
        .unwrap();
        assert!(
            ask.prompt.starts_with("Bash: set -e cd /srv xxx"),
            "{}",
            ask.prompt
        );
        assert!(ask.prompt.ends_with('…'));
        assert_eq!(ask.prompt.chars().count(), MAX_HOOK_PROMPT_CHARS);
        assert!(check_prompt(&ask.prompt).is_ok());
        assert!(ask.detail.len() <= MAX_DETAIL_BYTES);
        assert!(ask.detail.contains("bytes in all)"));
        // Multi-byte characters are cut on a boundary.
        let wide = "é".repeat(3000);
        let ask = claude_hook_request(&hook_input(
            "PreToolUse",
            "Write",
            json!({"file_path": wide}),
        ))
        .unwrap();
        assert!(ask.detail.len() <= MAX_DETAIL_BYTES);
    }

    #[test]
    fn hook_input_errors_say_what_is_wrong_and_what_to_do() {
        let cases = [
            ("".to_owned(), "stdin is empty"),
            ("git push".to_owned(), "not JSON"),
            ("[1, 2]".to_owned(), "not an object"),
            (
                r#"{"tool_name":"Bash","tool_input":{}}"#.to_owned(),
                "hook_event_name is missing",
            ),
            (
                hook_input("PostToolUse", "Bash", json!({})),
                "hook_event_name is `PostToolUse`",
            ),
            (
                r#"{"hook_event_name":7,"tool_name":"Bash","tool_input":{}}"#.to_owned(),
                "hook_event_name is not a string",
            ),
            (
                r#"{"hook_event_name":"PreToolUse","tool_input":{}}"#.to_owned(),
                "tool_name is missing",
            ),
            (hook_input("PreToolUse", " ", json!({})), "tool_name is not"),
            (
                r#"{"hook_event_name":"PreToolUse","tool_name":"Bash"}"#.to_owned(),
                "tool_input is missing",
            ),
            (
                hook_input("PreToolUse", "Bash", json!("ls")),
                "tool_input is not an object",
            ),
        ];
        for (stdin, expected) in cases {
            let err = claude_hook_request(&stdin).unwrap_err();
            assert!(err.contains(expected), "{stdin:?}: {err}");
            assert!(err.contains("settings.json"), "{err}");
        }
    }

    #[test]
    fn pre_tool_use_answers_with_a_permission_decision() {
        let approved = outcome(Decision::Approved, None, Some("alice"));
        assert_eq!(
            claude_hook_response(ClaudeHookEvent::PreToolUse, &approved),
            json!({"hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": "allow",
                "permissionDecisionReason": "Approved through Celistra by alice",
            }})
        );
        let denied = outcome(Decision::Denied, Some("not on a Friday"), Some("alice"));
        assert_eq!(
            claude_hook_response(ClaudeHookEvent::PreToolUse, &denied),
            json!({"hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": "deny",
                "permissionDecisionReason": "Denied through Celistra by alice: not on a Friday",
            }})
        );
        let expired = outcome(Decision::Expired, None, None);
        let answer = claude_hook_response(ClaudeHookEvent::PreToolUse, &expired);
        assert_eq!(answer["hookSpecificOutput"]["permissionDecision"], "deny");
        assert!(
            answer["hookSpecificOutput"]["permissionDecisionReason"]
                .as_str()
                .unwrap()
                .contains("expired")
        );
    }

    #[test]
    fn permission_request_answers_with_a_behavior() {
        let approved = outcome(Decision::Approved, Some("ok"), Some("alice"));
        assert_eq!(
            claude_hook_response(ClaudeHookEvent::PermissionRequest, &approved),
            json!({"hookSpecificOutput": {
                "hookEventName": "PermissionRequest",
                "decision": {"behavior": "allow"},
            }})
        );
        let denied = outcome(Decision::Denied, None, Some("bob"));
        assert_eq!(
            claude_hook_response(ClaudeHookEvent::PermissionRequest, &denied),
            json!({"hookSpecificOutput": {
                "hookEventName": "PermissionRequest",
                "decision": {"behavior": "deny", "message": "Denied through Celistra by bob"},
            }})
        );
        let expired = outcome(Decision::Expired, None, None);
        let answer = claude_hook_response(ClaudeHookEvent::PermissionRequest, &expired);
        assert_eq!(answer["hookSpecificOutput"]["decision"]["behavior"], "deny");
        assert!(
            answer["hookSpecificOutput"]["decision"]["message"]
                .as_str()
                .unwrap()
                .contains("expired before anyone decided")
        );
    }

    #[test]
    fn decider_words_are_kept_to_one_line() {
        let denied = outcome(
            Decision::Denied,
            Some("no\n\u{1b}[2Jway"),
            Some("eve\nmallory"),
        );
        let answer = claude_hook_response(ClaudeHookEvent::PreToolUse, &denied);
        assert_eq!(
            answer["hookSpecificOutput"]["permissionDecisionReason"],
            "Denied through Celistra by eve mallory: no [2Jway"
        );
    }

    #[test]
    fn generic_requests_parse_with_defaults() {
        assert_eq!(
            generic_request(
                r#"{"prompt": "git push origin main", "detail": "3 commits", "ttl": 300}"#
            )
            .unwrap(),
            GenericAsk {
                prompt: "git push origin main".into(),
                detail: Some("3 commits".into()),
                ttl_secs: Some(300),
            }
        );
        assert_eq!(
            generic_request(r#"{"prompt": "deploy"}"#).unwrap(),
            GenericAsk {
                prompt: "deploy".into(),
                detail: None,
                ttl_secs: None,
            }
        );
    }

    #[test]
    fn asks_become_the_brokers_requests_that_fail_closed() {
        let ask = generic_request(r#"{"prompt": "deploy", "ttl": 60}"#).unwrap();
        assert_eq!(
            AskRequest::from(ask),
            AskRequest {
                prompt: "deploy".into(),
                detail: None,
                ttl_secs: Some(60),
                on_timeout: TimeoutDefault::Deny,
                key: None,
            }
        );
        let stdin = hook_input("PreToolUse", "Bash", json!({"command": "ls"}));
        let request = AskRequest::from(claude_hook_request(&stdin).unwrap());
        assert_eq!(request.prompt, "Bash: ls");
        assert_eq!(
            request.detail.as_deref(),
            Some("{\n  \"command\": \"ls\"\n}")
        );
        assert_eq!(request.on_timeout, TimeoutDefault::Deny);
    }

    #[test]
    fn generic_request_errors_say_what_is_wrong_and_what_to_do() {
        let cases = [
            ("", "stdin is empty"),
            ("prompt=x", "stdin:1:1"),
            (r#"{"detail": "x"}"#, "missing field `prompt`"),
            (r#"{"prompt": "x", "tll": 3}"#, "unknown field `tll`"),
            (r#"{"prompt": "x", "ttl": "300"}"#, "field `ttl`"),
            (r#"{"prompt": "x", "ttl": 0}"#, "ttl 0 s is out of range"),
            (r#"{"prompt": "x", "ttl": 86401}"#, "1 to 86400"),
            (r#"{"prompt": "x", "ttl": -1}"#, "field `ttl`"),
            (r#"{"prompt": ""}"#, "prompt is empty"),
            (r#"{"prompt": "a\nb"}"#, "one line"),
            (r#"{"prompt": "x"} {"prompt": "y"}"#, "trailing"),
        ];
        for (stdin, expected) in cases {
            let err = generic_request(stdin).unwrap_err();
            assert!(err.contains(expected), "{stdin:?}: {err}");
            assert!(err.contains("e.g. {\"prompt\""), "{err}");
        }
    }

    #[test]
    fn generic_responses_always_have_three_fields() {
        assert_eq!(
            generic_response(&outcome(Decision::Denied, Some("no"), Some("alice"))),
            json!({"decision": "denied", "reason": "no", "decided_by": "alice"})
        );
        assert_eq!(
            generic_response(&outcome(Decision::Expired, None, None)),
            json!({"decision": "expired", "reason": null, "decided_by": null})
        );
        // The same shape as `AskOutcome` itself, so the outcome can be read back.
        let approved = outcome(Decision::Approved, None, Some("alice"));
        let back: AskOutcome = serde_json::from_value(generic_response(&approved)).unwrap();
        assert_eq!(back, approved);
    }

    #[test]
    fn one_line_collapses_and_clips() {
        assert_eq!(one_line("  a \n\t b  ", 10), "a b");
        assert_eq!(one_line("abcdef", 4), "abc…");
        assert_eq!(one_line("abcd", 4), "abcd");
        assert_eq!(one_line("ab cd", 4), "ab …");
        assert_eq!(one_line("", 4), "");
        assert_eq!(one_line("abc", 0), "…");
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "\\PC{0,30}".prop_map(Value::from),
            "[\\x00-\\x1f ]{0,5}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("hook_event_name".to_owned()),
                        Just("tool_name".to_owned()),
                        Just("tool_input".to_owned()),
                        Just("command".to_owned()),
                        Just("prompt".to_owned()),
                        Just("ttl".to_owned()),
                        "[a-z_]{1,8}",
                    ],
                    inner,
                    0..6,
                )
                .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn garbage_never_panics(text in "\\PC{0,200}", bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let lossy = String::from_utf8_lossy(&bytes);
            for stdin in [text.as_str(), lossy.as_ref()] {
                let _ = claude_hook_request(stdin);
                let _ = generic_request(stdin);
            }
        }

        #[test]
        fn any_json_either_parses_or_explains(value in json_value(), event in prop_oneof![
            Just("PreToolUse"), Just("PermissionRequest"), Just("Stop")
        ], tool in "\\PC{0,300}") {
            let stdin = value.to_string();
            if let Ok(ask) = generic_request(&stdin) {
                prop_assert!(check_prompt(&ask.prompt).is_ok());
            }
            let _ = claude_hook_request(&stdin);
            let stdin = json!({"hook_event_name": event, "tool_name": tool, "tool_input": value}).to_string();
            match claude_hook_request(&stdin) {
                Ok(ask) => {
                    prop_assert!(check_prompt(&ask.prompt).is_ok(), "{:?}", ask.prompt);
                    prop_assert!(ask.prompt.chars().count() <= MAX_HOOK_PROMPT_CHARS);
                    prop_assert!(ask.detail.len() <= MAX_DETAIL_BYTES);
                }
                Err(err) => prop_assert!(err.contains("settings.json")),
            }
        }

        #[test]
        fn responses_are_well_formed(
            decision in prop_oneof![Just(Decision::Approved), Just(Decision::Denied), Just(Decision::Expired)],
            reason in proptest::option::of("\\PC{0,40}"),
            by in proptest::option::of("\\PC{0,20}"),
        ) {
            let outcome = AskOutcome { decision, reason, decided_by: by };
            for event in [ClaudeHookEvent::PreToolUse, ClaudeHookEvent::PermissionRequest] {
                let answer = claude_hook_response(event, &outcome);
                let specific = &answer["hookSpecificOutput"];
                prop_assert_eq!(&specific["hookEventName"], event.name());
                let verdict = match event {
                    ClaudeHookEvent::PreToolUse => &specific["permissionDecision"],
                    ClaudeHookEvent::PermissionRequest => &specific["decision"]["behavior"],
                };
                prop_assert_eq!(verdict, if decision == Decision::Approved { "allow" } else { "deny" });
            }
            prop_assert_eq!(&generic_response(&outcome)["decision"], decision.as_str());
        }
    }
}
