//! Why an agent's run ended or its turn failed: the exit class read from its output lines, the JSON
//! result of a headless run, or Claude Code's `StopFailure` hook, never from the exit code alone.
//!
//! # Decisive lines
//!
//! A line is *decisive* when [`classify_line`] gives it a class. These are, for each class (the
//! exact strings Claude Code, Codex, Gemini CLI and Aider print; the tests hold them all):
//!
//! - **usage-limit**: a plan or quota message: `Claude AI usage limit reached|<epoch>`, `Claude
//!   usage limit reached.`, `5-hour limit reached`, `You've hit your (session|usage|…) limit`, `You
//!   have reached your specified API usage limits`, `Quota exceeded. Check your plan and billing
//!   details`, Gemini's daily quota messages, `QUOTA_EXHAUSTED`, `INSUFFICIENT_G1_CREDITS_BALANCE`,
//!   and a rate limit whose retry delay is over [`TERMINAL_RETRY_MS`] (Gemini's rule). Its reset
//!   instant comes from [`parse_reset`]; `None` when the message names none.
//! - **auth**: `authentication_error`, `Invalid API key` (starting a line), `Please run /login`,
//!   `not able to authenticate you`, Gemini's `API key not valid` / `UNAUTHENTICATED`, a 401
//!   status.
//! - **network**, **model-overloaded**, **rate-limited**, **server-error**: their phrases (e.g.
//!   `Connection error.`, `fetch failed`, `ECONNRESET` in an `API Error`, `stream disconnected
//!   before completion`, `overloaded_error`, `servers are down or overloaded`, `experiencing high
//!   demand`, `rate_limit_error`, `RATE_LIMIT_EXCEEDED`, `MODEL_CAPACITY_EXHAUSTED`), then an HTTP
//!   status in a provider's error context (`API Error: 529`, `Error: 429 {`, `(Status: 503)`,
//!   `unexpected status 502`, `last status: 500`, `failed with status 429`): 529 overloaded, 429
//!   rate limited, 401 auth, 500/502/503/504 server error (overloaded if the line says
//!   `Overloaded`).
//!
//! Retry lines that name their error (`API Error (529 …) · Retrying in 4 seconds…`,
//! `✻ 529 Overloaded · Retrying in 4s · attempt 6/10`) are decisive too, with their delay as
//! `retry_after_ms`; the daemon shows them as activity `model-error`. A bare `Retrying in 0.5
//! seconds...` (Aider) is not decisive, but in [`classify_tail`] it lends its delay to the
//! decisive line above it. Warnings (`Approaching 5-hour limit`), ordinary programs printing
//! `error`, `limit`, `500` or `timeout`, and assistant text inside JSON lines are not decisive.
//!
//! # JSON lines
//!
//! A line that is a JSON object is read as JSON, never as prose: a headless result
//! (`{"type":"result",…}` of `claude -p --output-format json|stream-json`: `is_error`, `subtype`,
//! `result`; Codex `exec --json` `turn.failed` / `turn.completed`), an error event (`{"type":
//! "error",…}`, an object with an `error` field), Claude's synthetic `isApiErrorMessage` record, or
//! a `rate_limit_event` that was `rejected`. Anything else in JSON says nothing.

use std::sync::LazyLock;

use celistra_proto::{ExitClass, ExitClassification};
use chrono_tz::Tz;
use regex::Regex;
use serde_json::Value;

use super::clip_said;
use super::limit_reset::{parse_reset, relative_ms};

/// A retry delay above this (5 minutes) is a quota, not a rate limit (Gemini CLI's rule).
pub const TERMINAL_RETRY_MS: u64 = 300_000;

/// Most lines [`classify_tail`] looks at, from the last one back.
pub const TAIL_LINES: usize = 200;

/// A classified failure and what it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub class: ExitClass,
    /// The line or message it came from, trimmed, clipped to 200 characters.
    pub said: String,
    /// The provider's retry hint: `Retrying in 4 seconds`, `retry in 34.07s`, `Suggested retry
    /// after 60s`, `retry-after`.
    pub retry_after_ms: Option<u64>,
    /// Usage limit only: the reset instant, when the message states one.
    pub reset_at_ms: Option<u64>,
}

impl Classified {
    /// The wire form, with where it was read (`hook`, `result` or `output`, see
    /// [`Source::as_str`]) and when.
    pub fn into_classification(self, source: &str, at_ms: u64) -> ExitClassification {
        ExitClassification {
            class: self.class,
            source: source.to_owned(),
            said: self.said,
            retry_after_ms: self.retry_after_ms,
            reset_at_ms: self.reset_at_ms,
            at_ms,
        }
    }
}

/// Where [`classify_tail`] found its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A prose line of the output.
    Output,
    /// A JSON line of a headless run: its result, an error event, a rate-limit event.
    Result,
}

impl Source {
    /// The word used in `ExitClassification::source`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Output => "output",
            Source::Result => "result",
        }
    }
}

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("built-in pattern compiles")
}

static USAGE_LIMIT: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        r"usage limit reached\|\d+",
        r#"(?:^|: |"|· )Claude (?:AI )?usage limit reached"#,
        r#"(?i)(?:^|: |"|· )\d+-hour limit reached"#,
        r#"(?i)(?:^|: |"|· )(?:weekly|monthly|daily|session|opus|sonnet) limit reached"#,
        r#"(?:^|: |"|· )You(?:'|’)ve hit your (?:[\w-]+ )?limit\b"#,
        r"You have reached your specified API usage limits",
        r#"(?:^|: |")Quota exceeded\. Check your plan and billing details"#,
        r"You have reached your daily (?:\S+ )?quota limit",
        r"You have exhausted your daily quota",
        r"\bQUOTA_EXHAUSTED\b",
        r"\bINSUFFICIENT_G1_CREDITS_BALANCE\b",
    ]
    .into_iter()
    .map(regex)
    .collect()
});

/// Gemini CLI going on with another model after a quota or a rate limit (its `PRO_QUOTA` and
/// `RATE_LIMIT` messages, `errorParsing.ts`): the session continues, so this is a transient
/// rate limit, never a wait for a reset, although it says "daily quota limit".
static MODEL_FALLBACK: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"(?:You will be switched to|Switching to) the \S+ model for the rest of this session")
});

static AUTH: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        r"\bauthentication_error\b",
        r"^Invalid API key\b",
        r"Please run /login\b",
        r"not able to authenticate you",
        r"litellm\.AuthenticationError",
        r"API key not valid",
        r"\bAPI_KEY_INVALID\b",
        r"\bUNAUTHENTICATED\b",
        r"OAuth token (?:has expired|revoked)",
        r"^(?:Failed to login\. Message: |Error authenticating: )",
        r"access token could not be refreshed",
    ]
    .into_iter()
    .map(regex)
    .collect()
});

/// Phrases of transient classes, in the order they are tried.
static TRANSIENT: LazyLock<Vec<(ExitClass, Regex)>> = LazyLock::new(|| {
    use ExitClass::{ModelOverloaded, Network, RateLimited, ServerError};
    [
        // Aider's timeout says "overloaded" too, so it goes first.
        (Network, r"timed out without returning a response"),
        (
            Network,
            r"API Error.*(?:\b(?:ECONNRESET|ECONNREFUSED|ETIMEDOUT|EPIPE|ENOTFOUND|EAI_AGAIN)\b|socket hang up|Connection error\.|Request timed out\.|fetch failed|Unable to connect to API|Connection to the API was lost)",
        ),
        (Network, r"TypeError(?: \(|: )fetch failed"),
        (Network, r"stream disconnected before completion"),
        (Network, r"(?:^|error: )Connection failed: "),
        (Network, r"Error while reading the server response"),
        (Network, r"^Reconnecting\.\.\. \d+/\d+"),
        (Network, r"litellm\.(?:Timeout|APIConnectionError)\b"),
        (ModelOverloaded, r"\boverloaded_error\b"),
        (ModelOverloaded, r"API Error\b.*\bOverloaded\b"),
        (ModelOverloaded, r"^529 Overloaded\b"),
        (ModelOverloaded, r"servers are down or overloaded"),
        (ModelOverloaded, r"is down, overloaded or rate limiting"),
        (ModelOverloaded, r"litellm\.\w+Error: .*\bOverloaded\b"),
        (ModelOverloaded, r"experiencing high demand"),
        (RateLimited, r"\brate_limit_error\b"),
        (RateLimited, r"(?:^|API Error: )Rate limit reached\b"),
        (RateLimited, r"rate limited you"),
        (RateLimited, r"\bRATE_LIMIT_EXCEEDED\b"),
        (RateLimited, r"\bMODEL_CAPACITY_EXHAUSTED\b"),
        (RateLimited, r"\bRESOURCE_EXHAUSTED\b"),
        (
            RateLimited,
            r"Possible quota limitations in place or slow response times detected",
        ),
        (
            RateLimited,
            r"Please wait and try again later\. To increase your limits",
        ),
        (RateLimited, r"litellm\.RateLimitError\b"),
        (RateLimited, r"(?i)\bplease retry in \d+(?:\.\d+)?\s*m?s\b"),
        (
            ServerError,
            r"litellm\.(?:InternalServerError|ServiceUnavailableError|BadGatewayError)\b",
        ),
        (ServerError, r"^50[0234] (?:Internal [Ss]erver [Ee]rror|Service Unavailable|Bad Gateway)\b"),
    ]
    .into_iter()
    .map(|(class, pattern)| (class, regex(pattern)))
    .collect()
});

/// An HTTP status in a provider's error context.
static STATUS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        r"API Error:? ?\(?(\d{3})\b",
        r"^Error: (\d{3}) \{",
        r"\(Status: (\d{3})\)",
        r"last status: (\d{3})\b",
        r"unexpected status (\d{3})\b",
        r"failed with status (\d{3})\b",
        r#""error": ?\{ ?"code": ?(\d{3})\b"#,
    ]
    .into_iter()
    .map(regex)
    .collect()
});

static OVERLOADED_WORD: LazyLock<Regex> = LazyLock::new(|| regex(r"(?i)\boverloaded\b"));

static RETRY_HINTS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        r"(?i)\bretrying in (\d+(?:\.\d+)?\s*(?:ms|s|secs?|seconds?))\b",
        r"(?i)\bretrying \d+/\d+ in (\d+(?:\.\d+)?\s*(?:ms|s|secs?|seconds?))\b",
        r"(?i)\bretry (?:in|after) (\d+(?:\.\d+)?\s*(?:ms|s|secs?|seconds?))\b",
        r#"(?i)\bretry-after"?:? ?"?(\d+(?:\.\d+)?)"#,
        r#""retryDelay": ?"(\d+(?:\.\d+)?s)""#,
    ]
    .into_iter()
    .map(regex)
    .collect()
});

/// Classifies one line of output (ANSI already stripped): `None` unless it is decisive (see the
/// module documentation). A JSON object line is read as JSON.
pub fn classify_line(line: &str, now_ms: u64, local: Tz) -> Option<Classified> {
    match json_line(line, now_ms, local) {
        Some(Json::Final(Final::Failed(classified)) | Json::Event(classified)) => Some(classified),
        Some(_) => None,
        None => classify_text(line, now_ms, local),
    }
}

/// Classifies the end of an agent's output: `text` is its readable lines (ANSI already
/// stripped). At most the last [`TAIL_LINES`] lines are read, from the last one back:
///
/// 1. the last headless result (`{"type":"result"}`, Codex `turn.failed`/`turn.completed`)
///    decides if it is a classified failure; a successful one means nothing failed (`None`);
/// 2. otherwise the last decisive line wins (a 529 followed by a later usage-limit message is a
///    usage limit), JSON error events counting as lines; a bare retry line below it lends its
///    delay, and a usage-limit line without a readable reset is read again joined with the two
///    lines below it (a TUI wraps long messages: `… or try again at` / `4:05 PM.`).
pub fn classify_tail(text: &str, now_ms: u64, local: Tz) -> Option<(Classified, Source)> {
    let lines: Vec<&str> = text
        .lines()
        .rev()
        .filter(|line| !line.trim().is_empty())
        .take(TAIL_LINES)
        .collect();
    for line in &lines {
        match json_line(line, now_ms, local) {
            Some(Json::Final(Final::Failed(classified))) => {
                return Some((classified, Source::Result));
            }
            Some(Json::Final(Final::Succeeded)) => return None,
            Some(Json::Final(Final::Unclassified)) => break,
            _ => {}
        }
    }
    let mut later_hint = None;
    for (at, line) in lines.iter().enumerate() {
        let found = match json_line(line, now_ms, local) {
            Some(Json::Event(classified)) => Some((classified, Source::Result)),
            Some(_) => None,
            None => classify_text(line, now_ms, local).map(|c| (c, Source::Output)),
        };
        if let Some((mut classified, source)) = found {
            if classified.retry_after_ms.is_none() && classified.class.is_transient_model_error() {
                classified.retry_after_ms = later_hint;
            }
            if classified.class == ExitClass::UsageLimit
                && classified.reset_at_ms.is_none()
                && source == Source::Output
            {
                // A TUI may have wrapped the message: its reset can be on the next lines.
                let following: Vec<&str> = lines[at.saturating_sub(2)..at]
                    .iter()
                    .rev()
                    .map(|line| line.trim())
                    .collect();
                classified.reset_at_ms = [" ", ""].iter().find_map(|joint| {
                    let joined = format!("{}{joint}{}", line.trim(), following.join(joint));
                    parse_reset(&joined, now_ms, local)
                });
            }
            return Some((classified, source));
        }
        if later_hint.is_none() {
            later_hint = retry_hint_ms(line);
        }
    }
    None
}

/// Classifies the input of Claude Code's `StopFailure` hook: `error` (`rate_limit`,
/// `overloaded`, `server_error`, `authentication_failed`, `billing_error`, `invalid_request`, …),
/// `error_details` and `last_assistant_message`. The messages decide when they are decisive
/// (they carry the reset of a usage limit); otherwise the `error` kind: `authentication_failed` is
/// auth whatever the text says, `billing_error` a usage limit with no known reset, and
/// `invalid_request`, `max_output_tokens` and unknown kinds are `None` (other).
pub fn classify_stop_failure(payload: &Value, now_ms: u64, local: Tz) -> Option<Classified> {
    let fields = payload.as_object()?;
    let kind = match fields.get("error") {
        Some(Value::String(kind)) => kind.clone(),
        Some(Value::Object(error)) => error
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    };
    let texts: Vec<String> = ["last_assistant_message", "error_details", "error"]
        .iter()
        .filter_map(|field| match fields.get(*field)? {
            Value::String(text) if !text.is_empty() => Some(text.clone()),
            Value::Null | Value::String(_) => None,
            other => Some(other.to_string()),
        })
        .collect();
    let by_kind = class_of_error_kind(&kind);
    if by_kind != Some(ExitClass::Auth)
        && let Some(classified) = texts
            .iter()
            .find_map(|text| classify_text(text, now_ms, local))
    {
        return Some(classified);
    }
    let class = by_kind?;
    let said = texts.iter().find(|text| **text != kind).map_or_else(
        || format!("StopFailure: {kind}"),
        |text| format!("{kind}: {text}"),
    );
    let retry_after_ms = if class.is_transient_model_error() {
        texts.iter().find_map(|text| retry_hint_ms(text))
    } else {
        None
    };
    Some(Classified {
        class,
        said: clip_said(&said),
        retry_after_ms,
        reset_at_ms: None,
    })
}

/// The exit class a `StopFailure` error kind (or a transcript record's `error`) names.
fn class_of_error_kind(kind: &str) -> Option<ExitClass> {
    Some(match kind {
        "rate_limit" | "rate_limited" | "rate_limit_error" => ExitClass::RateLimited,
        "overloaded" | "overloaded_error" => ExitClass::ModelOverloaded,
        "server_error" | "api_error" | "internal_server_error" => ExitClass::ServerError,
        "network_error" | "connection_error" | "timeout" | "network" => ExitClass::Network,
        "authentication_failed"
        | "authentication_error"
        | "unauthorized"
        | "oauth_org_not_allowed" => ExitClass::Auth,
        "billing_error" | "usage_limit" | "quota_exceeded" => ExitClass::UsageLimit,
        _ => return None,
    })
}

/// The retry delay a line states (`Retrying in 4 seconds`, `retrying 1/5 in 196ms`, `retry in
/// 34.07s`, `Suggested retry after 60s`, `retry-after: 30`, `"retryDelay": "12s"`), in ms.
pub fn retry_hint_ms(line: &str) -> Option<u64> {
    RETRY_HINTS.iter().find_map(|hint| {
        let caps = hint.captures(line)?;
        let amount = &caps[1];
        if amount.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            relative_ms(&format!("{amount}s")) // a bare retry-after is seconds
        } else {
            relative_ms(amount)
        }
    })
}

/// Classifies prose: a line of output, or a message from a JSON field.
fn classify_text(text: &str, now_ms: u64, local: Tz) -> Option<Classified> {
    let text = text
        .trim()
        .trim_start_matches(|c: char| !c.is_alphanumeric() && c != '{' && c != '"');
    if text.is_empty() {
        return None;
    }
    let verdict = |class: ExitClass| {
        let mut classified = Classified {
            class,
            said: clip_said(text),
            retry_after_ms: None,
            reset_at_ms: None,
        };
        if class == ExitClass::UsageLimit {
            classified.reset_at_ms = parse_reset(text, now_ms, local);
        } else if class.is_transient_model_error() {
            classified.retry_after_ms = retry_hint_ms(text);
        }
        // A retry delay over 5 minutes is a quota (Gemini's TerminalQuotaError).
        if let Some(delay) = classified.retry_after_ms.filter(|d| *d > TERMINAL_RETRY_MS) {
            classified.class = ExitClass::UsageLimit;
            classified.retry_after_ms = None;
            classified.reset_at_ms = now_ms.checked_add(delay);
        }
        Some(classified)
    };
    if MODEL_FALLBACK.is_match(text) {
        return verdict(ExitClass::RateLimited);
    }
    if USAGE_LIMIT.iter().any(|pattern| pattern.is_match(text)) {
        return verdict(ExitClass::UsageLimit);
    }
    if AUTH.iter().any(|pattern| pattern.is_match(text)) {
        return verdict(ExitClass::Auth);
    }
    if let Some((class, _)) = TRANSIENT.iter().find(|(_, pattern)| pattern.is_match(text)) {
        return verdict(*class);
    }
    let status: u16 = STATUS.iter().find_map(|status| status.captures(text))?[1]
        .parse()
        .ok()?;
    let class = match status {
        529 => ExitClass::ModelOverloaded,
        429 => ExitClass::RateLimited,
        401 => ExitClass::Auth,
        500 | 502 | 503 | 504 if OVERLOADED_WORD.is_match(text) => ExitClass::ModelOverloaded,
        500 | 502 | 503 | 504 => ExitClass::ServerError,
        _ => return None,
    };
    verdict(class)
}

/// What a JSON line says.
enum Json {
    /// A headless run's final result.
    Final(Final),
    /// An error event, a synthetic API-error record, a rejected rate-limit event.
    Event(Classified),
    /// JSON that says nothing about a failure.
    Silent,
}

enum Final {
    Failed(Classified),
    /// It failed, for a reason not classified here.
    Unclassified,
    Succeeded,
}

/// Reads a line that is a JSON object; `None` for any other line.
fn json_line(line: &str, now_ms: u64, local: Tz) -> Option<Json> {
    let line = line.trim();
    if !line.starts_with('{') {
        return None;
    }
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(line) else {
        return None;
    };
    let text_of = |value: Option<&Value>| -> Option<String> {
        match value? {
            Value::String(text) => Some(text.clone()),
            Value::Object(object) => object
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| Some(Value::Object(object.clone()).to_string())),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    };
    let kind = fields
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match kind {
        "result" => {
            let is_error = fields.get("is_error").and_then(Value::as_bool) == Some(true)
                || fields
                    .get("subtype")
                    .and_then(Value::as_str)
                    .is_some_and(|subtype| subtype.starts_with("error"));
            if !is_error {
                return Some(Json::Final(Final::Succeeded));
            }
            let found = ["result", "error", "errors"]
                .iter()
                .filter_map(|field| text_of(fields.get(*field)))
                .find_map(|text| classify_text(&text, now_ms, local));
            Some(Json::Final(
                found.map_or(Final::Unclassified, Final::Failed),
            ))
        }
        "turn.completed" => Some(Json::Final(Final::Succeeded)),
        "turn.failed" => {
            let found =
                text_of(fields.get("error")).and_then(|text| classify_text(&text, now_ms, local));
            Some(Json::Final(
                found.map_or(Final::Unclassified, Final::Failed),
            ))
        }
        "rate_limit_event" => {
            let info = fields.get("rate_limit_info")?;
            if info.get("status").and_then(Value::as_str) != Some("rejected") {
                return Some(Json::Silent);
            }
            let reset_at_ms = info
                .get("resetsAt")
                .and_then(Value::as_u64)
                .and_then(|secs| secs.checked_mul(1000));
            Some(Json::Event(Classified {
                class: ExitClass::UsageLimit,
                said: clip_said(line),
                retry_after_ms: None,
                reset_at_ms,
            }))
        }
        _ if fields.get("isApiErrorMessage").and_then(Value::as_bool) == Some(true) => {
            // Claude's synthetic assistant record: its text, else its `error` kind.
            let text = fields
                .get("message")
                .and_then(|message| message.get("content"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|part| part.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" ");
            if let Some(classified) = classify_text(&text, now_ms, local) {
                return Some(Json::Event(classified));
            }
            let class = fields
                .get("error")
                .and_then(Value::as_str)
                .and_then(class_of_error_kind);
            Some(class.map_or(Json::Silent, |class| {
                Json::Event(Classified {
                    class,
                    said: clip_said(if text.is_empty() { line } else { &text }),
                    retry_after_ms: None,
                    reset_at_ms: None,
                })
            }))
        }
        "error" => {
            let text = text_of(fields.get("message")).unwrap_or_else(|| line.to_owned());
            Some(
                classify_text(&text, now_ms, local)
                    .or_else(|| classify_text(line, now_ms, local))
                    .map_or(Json::Silent, Json::Event),
            )
        }
        _ if matches!(fields.get("error"), Some(Value::Object(_))) => {
            // An API error body: `{"error": {"type": "overloaded_error", …}}`, Google's
            // `{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", …}}`.
            Some(classify_text(line, now_ms, local).map_or(Json::Silent, Json::Event))
        }
        _ => Some(Json::Silent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ExitClass::{Auth, ModelOverloaded, Network, RateLimited, ServerError, UsageLimit};
    use chrono::DateTime;
    use chrono_tz::{America, Europe};
    use serde_json::json;

    /// 2026-07-20T10:00:00Z.
    const NOW: u64 = 1_784_541_600_000;
    const NY: Tz = America::New_York;
    const LISBON: Tz = Europe::Lisbon;

    fn at(rfc3339: &str) -> u64 {
        u64::try_from(
            DateTime::parse_from_rfc3339(rfc3339)
                .unwrap()
                .timestamp_millis(),
        )
        .unwrap()
    }

    fn class_of(line: &str) -> Option<ExitClass> {
        classify_line(line, NOW, NY).map(|c| c.class)
    }

    #[track_caller]
    fn check(line: &str, class: ExitClass, retry_after_ms: Option<u64>, reset_at_ms: Option<u64>) {
        let classified =
            classify_line(line, NOW, NY).unwrap_or_else(|| panic!("unclassified: {line}"));
        assert_eq!(
            (
                classified.class,
                classified.retry_after_ms,
                classified.reset_at_ms
            ),
            (class, retry_after_ms, reset_at_ms),
            "{line}"
        );
        assert!(classified.said.chars().count() <= 200);
    }

    #[test]
    fn claude_code_overload_and_server_errors() {
        check(
            r#"⎿  API Error (529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":null}) · Retrying in 4 seconds… (attempt 4/10)"#,
            ModelOverloaded,
            Some(4000),
            None,
        );
        check(
            r#"API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded. https://docs.claude.com/en/api/errors"},"request_id":"req_…"}"#,
            ModelOverloaded,
            None,
            None,
        );
        check(
            "API Error: 529 Overloaded. This is a server-side issue, usually temporary — try again in a moment. If it persists, check https://status.claude.com.",
            ModelOverloaded,
            None,
            None,
        );
        check(
            "✻ 529 Overloaded · Retrying in 4s · attempt 6/10",
            ModelOverloaded,
            Some(4000),
            None,
        );
        check(
            r#"Agent "…" failed: Agent terminated early due to an API error: API Error: 529 Overloaded. …"#,
            ModelOverloaded,
            None,
            None,
        );
        check(
            r#"API Error: 500 {"type":"error","error":{"type":"api_error","message":"Overloaded"},"request_id":null}"#,
            ModelOverloaded,
            None,
            None,
        );
        check(
            r#"API Error: 500 {"type":"error","error":{"type":"api_error","message":"Internal server error"},"request_id":"req_…"}"#,
            ServerError,
            None,
            None,
        );
        check(
            "API Error: 500 Internal server error. This is a server-side issue, usually temporary — try again in a moment. If it persists, check status.claude.com.",
            ServerError,
            None,
            None,
        );
        check("API Error: 502 Bad Gateway", ServerError, None, None);
        check(
            "API Error: 503 Service Unavailable",
            ServerError,
            None,
            None,
        );
    }

    #[test]
    fn claude_code_rate_limits_and_network_errors() {
        check(
            r#"Error: 429 {"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your account's rate limit. Please try again later."}}"#,
            RateLimited,
            None,
            None,
        );
        check("API Error: Rate limit reached", RateLimited, None, None);
        check(
            "API Error (Connection error.) · Retrying in 1 seconds… (attempt 1/10)",
            Network,
            Some(1000),
            None,
        );
        check("⎿  TypeError (fetch failed)", Network, None, None);
        check(
            "API Error (Request timed out.) · Retrying in 8 seconds… (attempt 5/10)",
            Network,
            Some(8000),
            None,
        );
        check(
            "API Error: Unable to connect to API (ECONNRESET)",
            Network,
            None,
            None,
        );
        check(
            "API Error: Connection to the API was lost (ECONNRESET)",
            Network,
            None,
            None,
        );
    }

    #[test]
    fn claude_code_plan_limits_with_their_resets() {
        check(
            "Claude AI usage limit reached|1749924000",
            UsageLimit,
            None,
            Some(1_749_924_000_000),
        );
        check(
            "Claude usage limit reached. Your limit will reset at 1pm (Etc/GMT+5).",
            UsageLimit,
            None,
            Some(at("2026-07-20T18:00:00Z")),
        );
        // No zone named: the local one, and 5am has passed in New York (06:00 EDT).
        check(
            "5-hour limit reached ∙ resets 5am",
            UsageLimit,
            None,
            Some(at("2026-07-21T05:00:00-04:00")),
        );
        check(
            "You've hit your session limit · resets 12:50am (America/Los_Angeles)",
            UsageLimit,
            None,
            Some(at("2026-07-21T00:50:00-07:00")),
        );
        check(
            "You've hit your limit · resets Jul 23 at 6pm (America/Los_Angeles)",
            UsageLimit,
            None,
            Some(at("2026-07-23T18:00:00-07:00")),
        );
        check(
            "You've hit your limit · resets 1pm (Europe/Lisbon)",
            UsageLimit,
            None,
            Some(at("2026-07-20T13:00:00+01:00")),
        );
        check(
            r#"API Error: 400 {"type":"error","error":{"type":"invalid_request_error","message":"You have reached your specified API usage limits. You will regain access on 2026-04-01 at 00:00 UTC."}}"#,
            UsageLimit,
            None,
            Some(at("2026-04-01T00:00:00Z")),
        );
        // The zone named wins over the local one, whichever it is.
        let lisbon = classify_line(
            "You've hit your limit · resets 1pm (Europe/Lisbon)",
            NOW,
            America::Los_Angeles,
        );
        assert_eq!(
            lisbon.unwrap().reset_at_ms,
            Some(at("2026-07-20T12:00:00Z"))
        );
    }

    #[test]
    fn claude_code_warnings_and_follow_up_lines_are_not_decisive() {
        assert_eq!(class_of("Approaching 5-hour limit"), None);
        assert_eq!(
            class_of("/usage-credits to request more usage from your admin."),
            None
        );
    }

    #[test]
    fn claude_code_auth_errors() {
        check("Invalid API key · Please run /login", Auth, None, None);
        check(
            r#"API Error: 401 {"type":"error","error":{"type":"authentication_error","message":"OAuth token has expired. Please obtain a new token or refresh your existing token."},"request_id":"req_1"}"#,
            Auth,
            None,
            None,
        );
    }

    fn codex_at(local: Tz, t: &str) -> Option<u64> {
        classify_line(
            &format!("You've hit your usage limit. Try again at {t}."),
            NOW,
            local,
        )
        .and_then(|c| c.reset_at_ms)
    }

    #[test]
    fn codex_usage_limits_are_read_in_the_local_zone() {
        let plus = "You've hit your usage limit. Upgrade to Pro (https://openai.com/chatgpt/pricing), visit https://chatgpt.com/codex/settings/usage to purchase more credits or try again at 4:05 PM.";
        assert_eq!(
            classify_line(plus, NOW, NY).unwrap().reset_at_ms,
            Some(at("2026-07-20T16:05:00-04:00"))
        );
        assert_eq!(
            classify_line(plus, NOW, LISBON).unwrap().reset_at_ms,
            Some(at("2026-07-20T16:05:00+01:00"))
        );
        assert_ne!(codex_at(NY, "4:05 PM"), codex_at(LISBON, "4:05 PM"));
        check(
            "You've hit your usage limit. Visit https://chatgpt.com/codex/settings/usage to purchase more credits or try again at 4:05 PM.",
            UsageLimit,
            None,
            Some(at("2026-07-20T16:05:00-04:00")),
        );
        check(
            "You've hit your usage limit. To get more access now, send a request to your admin or try again at Aug 8th, 2026 12:30 PM.",
            UsageLimit,
            None,
            Some(at("2026-08-08T12:30:00-04:00")),
        );
        assert_eq!(
            codex_at(LISBON, "Aug 8th, 2026 12:30 PM"),
            Some(at("2026-08-08T12:30:00+01:00"))
        );
        check(
            "■ You've hit your usage limit. Upgrade to Pro (https://openai.com/chatgpt/pricing) or try again in 5 days 22 hours 11 minutes.",
            UsageLimit,
            None,
            Some(NOW + ((5 * 24 + 22) * 60 + 11) * 60_000),
        );
        check(
            "You've hit your usage limit. Try again in 4 days 20 hours 9 minutes.",
            UsageLimit,
            None,
            Some(NOW + ((4 * 24 + 20) * 60 + 9) * 60_000),
        );
    }

    #[test]
    fn codex_usage_limits_without_a_readable_reset_are_still_usage_limits() {
        for line in [
            "You've hit your usage limit. Upgrade to Plus to continue using Codex (https://openai.com/chatgpt/pricing).",
            "You've hit your usage limit. To get more access now, send a request to your admin or try again later.",
            "You've hit your usage limit. Try again later.",
            "You've hit your usage limit. Visit https://chatgpt.com/codex/settings/usage to purchase more credits or try again at 10 de jul. de 2026, 11:52",
            "🖐 You've hit your usage limit. Upgrade to Pro (https://openai.com/chatgpt/pricing), or wait for limits to reset (every 5h and every week.).",
            "Quota exceeded. Check your plan and billing details.",
        ] {
            check(line, UsageLimit, None, None);
        }
    }

    #[test]
    fn codex_transient_errors() {
        check(
            "We're currently experiencing high demand, which may cause temporary errors.",
            ModelOverloaded,
            None,
            None,
        );
        check(
            "exceeded retry limit, last status: 503 Service Unavailable, request id: 8f2c",
            ServerError,
            None,
            None,
        );
        check(
            "exceeded retry limit, last status: 500 Internal Server Error, request id: 8f2c",
            ServerError,
            None,
            None,
        );
        check(
            "exceeded retry limit, last status: 429 Too Many Requests, request id: 8f2c",
            RateLimited,
            None,
            None,
        );
        check(
            "stream disconnected before completion: error decoding response body",
            Network,
            None,
            None,
        );
        check(
            "Connection failed: error sending request for url (https://chatgpt.com/backend-api/codex/responses)",
            Network,
            None,
            None,
        );
        check(
            "Error while reading the server response: error decoding response body, request id: 8f2c",
            Network,
            None,
            None,
        );
        check(
            "unexpected status 502 Bad Gateway: upstream connect error, request id: 8f2c",
            ServerError,
            None,
            None,
        );
        check(
            "unexpected status 401 Unauthorized: {\"detail\":\"Unauthorized\"}, request id: 8f2c",
            Auth,
            None,
            None,
        );
        assert_eq!(
            class_of("unexpected status 400 Bad Request: bad input, request id: 8f2c"),
            None
        );
        assert_eq!(
            class_of(
                "Access blocked by Cloudflare. This usually happens when connecting from a restricted region (status 403 Forbidden)"
            ),
            None
        );
        assert_eq!(
            class_of(
                "Codex ran out of room in the model's context window. Start a new thread or clear earlier history before retrying."
            ),
            None
        );
    }

    #[test]
    fn gemini_quota_and_rate_limits() {
        check(
            "Possible quota limitations in place or slow response times detected. Switching to the gemini-2.5-flash model for the rest of this session.",
            RateLimited,
            None,
            None,
        );
        check(
            "You have reached your daily gemini-2.5-pro quota limit. You will be switched to the gemini-2.5-flash model for the rest of this session. To increase your limits, upgrade to a Gemini Code Assist Standard or Enterprise plan with higher limits at https://goo.gle/set-up-gemini-code-assist",
            // It goes on with the other model: not a wait for a reset.
            RateLimited,
            None,
            None,
        );
        check(
            "You have reached your daily quota limit. To increase your limits, upgrade.",
            UsageLimit,
            None,
            None,
        );
        check(
            "Please wait and try again later. To increase your limits, request a quota increase through AI Studio, or switch to another /auth method",
            RateLimited,
            None,
            None,
        );
        check(
            "You have exhausted your daily quota on this model.",
            UsageLimit,
            None,
            None,
        );
        check(
            r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"reason":"QUOTA_EXHAUSTED"}]}}"#,
            UsageLimit,
            None,
            None,
        );
        check("INSUFFICIENT_G1_CREDITS_BALANCE", UsageLimit, None, None);
        check(
            "[API Error: Quota exceeded for quota metric (Status: 429)] RATE_LIMIT_EXCEEDED",
            RateLimited,
            None,
            None,
        );
        check(
            "You exceeded your current quota, please check your plan and billing details. Please retry in 34.07s.",
            RateLimited,
            Some(34_070),
            None,
        );
        // Over 5 minutes: a quota, reset at now plus the delay.
        check(
            "Please retry in 3600s.",
            UsageLimit,
            None,
            Some(NOW + 3_600_000),
        );
        check(
            r#"Attempt 1 failed with status 429. Retrying with backoff... GaxiosError: [{"error":{"code":429,"message":"No capacity available for model gemini-3-flash-preview on the server","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"MODEL_CAPACITY_EXHAUSTED"#,
            RateLimited,
            None,
            None,
        );
        check(
            "[API Error: API key not valid. Please pass a valid API key. (Status: 400)]",
            Auth,
            None,
            None,
        );
    }

    #[test]
    fn gemini_suggested_retry_lends_its_delay() {
        let tail = "[API Error: Resource has been exhausted (Status: RATE_LIMIT_EXCEEDED)]\nSuggested retry after 60s.\n";
        let (classified, source) = classify_tail(tail, NOW, NY).unwrap();
        assert_eq!(
            (classified.class, classified.retry_after_ms, source),
            (RateLimited, Some(60_000), Source::Output)
        );
    }

    #[test]
    fn aider_errors() {
        check(
            "The API provider has rate limited you. Try again later or check your quotas.",
            RateLimited,
            None,
            None,
        );
        check(
            "The API provider's servers are down or overloaded.",
            ModelOverloaded,
            None,
            None,
        );
        check(
            "The API provider timed out without returning a response. They may be down or overloaded.",
            Network,
            None,
            None,
        );
        check(
            "The API provider is not able to authenticate you. Check your API key.",
            Auth,
            None,
            None,
        );
        check(
            "OpenRouter or the upstream API provider is down, overloaded or rate limiting your requests.",
            ModelOverloaded,
            None,
            None,
        );
        check(
            "litellm.InternalServerError: AnthropicException - Overloaded. Handle with `litellm.InternalServerError`.",
            ModelOverloaded,
            None,
            None,
        );
        check(
            r#"litellm.InternalServerError: AnthropicError - {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            ModelOverloaded,
            None,
            None,
        );
        assert_eq!(class_of("Retrying in 0.5 seconds..."), None);
        let tail = "litellm.InternalServerError: AnthropicException - Overloaded. Handle with `litellm.InternalServerError`.\nThe API provider's servers are down or overloaded.\nRetrying in 0.5 seconds...\n";
        let (classified, _) = classify_tail(tail, NOW, NY).unwrap();
        assert_eq!(
            (classified.class, classified.retry_after_ms),
            (ModelOverloaded, Some(500))
        );
    }

    #[test]
    fn ordinary_output_is_not_classified() {
        for line in [
            "error: could not compile `celistra-core` (lib) due to 2 previous errors",
            "error[E0425]: cannot find value `limit` in this scope",
            "warning: unused variable: `rate_limit`",
            "test agents::limit_reached ... ok",
            "thread 'main' panicked at src/main.rs:3:5: index out of bounds",
            "GET /api/users 500 12ms",
            "HTTP/1.1 429 Too Many Requests",
            "500 errors found in 3 files",
            "npm ERR! code ECONNRESET",
            "curl: (7) Failed to connect to localhost port 8080: Connection refused",
            "The connection timed out; retrying",
            "Error: ENOENT: no such file or directory, open 'x.json'",
            r#"Error: 404 {"message":"Not Found"}"#,
            "Overloaded operator + for Vector",
            "Rate limit: 100 requests per minute",
            r#"{"code": 500, "message": "boom"}"#,
            "Error: 500",
            "Error: Failed to login to registry.example.com",
            "Error: Invalid API key for the weather service",
            "the daily limit resets at midnight",
            "Retrying in 4 seconds",
            "Approaching 5-hour limit",
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":"API Error: 529 Overloaded is retried, and You've hit your limit is a usage limit"}]}}"#,
            r#"{"type":"result","subtype":"success","is_error":false,"result":"Fixed the handling of API Error: 529 Overloaded"}"#,
            "",
            "   ",
        ] {
            assert_eq!(class_of(line), None, "{line}");
        }
    }

    #[test]
    fn headless_results_are_read_as_json() {
        let rate = r#"{"type":"result","subtype":"success","is_error":true,"duration_ms":812,"result":"API Error: Rate limit reached","session_id":"s"}"#;
        check(rate, RateLimited, None, None);
        let usage = r#"{"type":"result","subtype":"success","is_error":true,"result":"Claude AI usage limit reached|1755772800"}"#;
        let (classified, source) = classify_tail(usage, NOW, NY).unwrap();
        assert_eq!(
            (classified.class, classified.reset_at_ms, source),
            (UsageLimit, Some(1_755_772_800_000), Source::Result)
        );
        assert_eq!(classified.said, "Claude AI usage limit reached|1755772800");
        let failed = r#"{"type":"turn.failed","error":{"message":"exceeded retry limit, last status: 429 Too Many Requests, request id: 1"}}"#;
        assert_eq!(
            classify_tail(failed, NOW, NY).map(|(c, s)| (c.class, s)),
            Some((RateLimited, Source::Result))
        );
        let reconnect = r#"{"type":"error","message":"Reconnecting... 2/5 (timeout waiting for child process to exit)"}"#;
        check(reconnect, Network, None, None);
        let recovered = format!("{reconnect}\n{{\"type\":\"turn.completed\",\"usage\":{{}}}}\n");
        assert_eq!(classify_tail(&recovered, NOW, NY), None);
    }

    #[test]
    fn a_json_result_wins_over_prose() {
        let text = "API Error: 529 Overloaded. This is a server-side issue\n{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":true,\"result\":\"Claude AI usage limit reached|1755772800\"}\nAPI Error: 500 Internal server error.\n";
        let (classified, source) = classify_tail(text, NOW, NY).unwrap();
        assert_eq!((classified.class, source), (UsageLimit, Source::Result));
        let text = "✻ 529 Overloaded · Retrying in 4s · attempt 6/10\n{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"done\"}\n";
        assert_eq!(classify_tail(text, NOW, NY), None);
        // A failed result that says nothing known leaves it to the lines before.
        let text = "API Error: Unable to connect to API (ECONNRESET)\n{\"type\":\"result\",\"subtype\":\"error_during_execution\",\"is_error\":true}\n";
        let (classified, source) = classify_tail(text, NOW, NY).unwrap();
        assert_eq!((classified.class, source), (Network, Source::Output));
    }

    #[test]
    fn transcript_records_and_rate_limit_events() {
        let record = r#"{"type":"assistant","error":"rate_limit","isApiErrorMessage":true,"apiErrorStatus":429,"message":{"model":"<synthetic>","content":[{"type":"text","text":"You've hit your limit · resets 1pm (Europe/Lisbon)"}]}}"#;
        check(
            record,
            UsageLimit,
            None,
            Some(at("2026-07-20T13:00:00+01:00")),
        );
        let bare = r#"{"type":"assistant","error":"rate_limit","isApiErrorMessage":true,"message":{"content":[]}}"#;
        check(bare, RateLimited, None, None);
        let rejected = r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","rateLimitType":"five_hour","resetsAt":1784563200}}"#;
        check(rejected, UsageLimit, None, Some(1_784_563_200_000));
        let allowed = r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed_warning","utilization":0.9}}"#;
        assert_eq!(class_of(allowed), None);
    }

    #[test]
    fn the_last_decisive_line_wins() {
        let text = "API Error (529 {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"},\"request_id\":null}) · Retrying in 4 seconds… (attempt 4/10)\nYou've hit your session limit · resets 12:50am (America/Los_Angeles)\n/usage-credits to request more usage from your admin.\n";
        let (classified, source) = classify_tail(text, NOW, NY).unwrap();
        assert_eq!((classified.class, source), (UsageLimit, Source::Output));
        assert_eq!(
            classified.reset_at_ms,
            Some(at("2026-07-21T00:50:00-07:00"))
        );
        let text = "You've hit your limit · resets 1pm (Europe/Lisbon)\nok\n✻ 529 Overloaded · Retrying in 4s · attempt 6/10\n";
        let (classified, _) = classify_tail(text, NOW, NY).unwrap();
        assert_eq!(
            (classified.class, classified.retry_after_ms),
            (ModelOverloaded, Some(4000))
        );
        assert_eq!(
            classify_tail(
                "cargo build\n   Compiling x\nerror: 2 previous errors\n",
                NOW,
                NY
            ),
            None
        );
    }

    #[test]
    fn a_wrapped_usage_limit_message_keeps_its_reset() {
        let text = "■ You've hit your usage limit. Upgrade to Pro (https://openai.com/chatgpt/pricing), visit\nhttps://chatgpt.com/codex/settings/usage to purchase more credits or try again at\n4:05 PM.\n› \n";
        let (classified, _) = classify_tail(text, NOW, NY).unwrap();
        assert_eq!(
            classified.reset_at_ms,
            Some(at("2026-07-20T16:05:00-04:00"))
        );
        let text = "You've hit your session limit · resets 12:50am (America/\nLos_Angeles)\n";
        let (classified, _) = classify_tail(text, NOW, NY).unwrap();
        assert_eq!(
            classified.reset_at_ms,
            Some(at("2026-07-21T00:50:00-07:00"))
        );
        let text = "You've hit your usage limit. Try again later.\nresets 4pm\n";
        let (classified, _) = classify_tail(text, NOW, NY).unwrap();
        assert_eq!(classified.class, UsageLimit);
    }

    #[test]
    fn only_the_last_200_lines_are_read() {
        let mut text = "API Error: 529 Overloaded.\n".to_owned();
        text.push_str(&"ordinary line\n".repeat(TAIL_LINES - 1));
        assert!(classify_tail(&text, NOW, NY).is_some());
        text.push_str("one more\n");
        assert_eq!(classify_tail(&text, NOW, NY), None);
    }

    #[test]
    fn stop_failure_hooks() {
        let stop = |payload: Value| classify_stop_failure(&payload, NOW, NY);
        let limit = stop(json!({
            "hook_event_name": "StopFailure",
            "error": "rate_limit",
            "error_details": "429 rate_limit_error",
            "last_assistant_message": "You've hit your limit · resets 1pm (Europe/Lisbon)",
        }))
        .unwrap();
        assert_eq!(
            (limit.class, limit.reset_at_ms),
            (UsageLimit, Some(at("2026-07-20T13:00:00+01:00")))
        );
        let overloaded = stop(json!({"error": "overloaded", "error_details": "API Error: 529 Overloaded. This is a server-side issue"})).unwrap();
        assert_eq!(overloaded.class, ModelOverloaded);
        let server = stop(json!({"error": "server_error"})).unwrap();
        assert_eq!(
            (server.class, server.said.as_str()),
            (ServerError, "StopFailure: server_error")
        );
        let rate =
            stop(json!({"error": "rate_limit", "error_details": "retry-after: 30"})).unwrap();
        assert_eq!(
            (rate.class, rate.retry_after_ms),
            (RateLimited, Some(30_000))
        );
        let auth = stop(json!({"error": "authentication_failed", "last_assistant_message": "API Error: 529 Overloaded."})).unwrap();
        assert_eq!(auth.class, Auth);
        let billing = stop(
            json!({"error": "billing_error", "error_details": "Your credit balance is too low"}),
        )
        .unwrap();
        assert_eq!((billing.class, billing.reset_at_ms), (UsageLimit, None));
        assert_eq!(
            stop(json!({"error": "invalid_request", "error_details": "prompt is too long"})),
            None
        );
        assert_eq!(stop(json!({"error": "max_output_tokens"})), None);
        assert_eq!(stop(json!("rate_limit")), None);
        assert_eq!(stop(json!({})), None);
    }

    #[test]
    fn the_wire_form_keeps_everything() {
        let classified =
            classify_line("Claude AI usage limit reached|1749924000", NOW, NY).unwrap();
        let wire = classified.into_classification(Source::Result.as_str(), NOW);
        assert_eq!(
            wire,
            ExitClassification {
                class: UsageLimit,
                source: "result".into(),
                said: "Claude AI usage limit reached|1749924000".into(),
                retry_after_ms: None,
                reset_at_ms: Some(1_749_924_000_000),
                at_ms: NOW,
            }
        );
    }

    #[test]
    fn retry_hints() {
        for (line, ms) in [
            ("Retrying in 4 seconds… (attempt 4/10)", 4000),
            ("· Retrying in 4s · attempt 6/10", 4000),
            ("Retrying in 0.5 seconds...", 500),
            (
                "stream error: stream disconnected; retrying 1/5 in 196ms…",
                196,
            ),
            ("Please retry in 34.07s.", 34_070),
            ("Suggested retry after 60s.", 60_000),
            ("retry-after: 30", 30_000),
            (r#""retryDelay": "12s""#, 12_000),
        ] {
            assert_eq!(retry_hint_ms(line), Some(ms), "{line}");
        }
        assert_eq!(retry_hint_ms("try again in a moment"), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,300}", now in 0u64..u64::MAX) {
            let _ = classify_line(&text, now, LISBON);
            let _ = classify_tail(&text, now, LISBON);
            let _ = classify_stop_failure(&json!({"error": "rate_limit", "last_assistant_message": text}), now, LISBON);
        }
    }
}
