//! What an AI agent is doing and why: its activity with evidence, how its last run ended (model
//! errors, usage limits), the wait for a usage limit's reset, and its schedules.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What an agent is doing, separate from its process state (`AgentState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Activity {
    /// Busy on a turn: thinking, running a tool, printing.
    Working,
    /// Blocked on a question or prompt that needs a person.
    NeedsInput,
    /// Blocked on a permission request.
    WaitingApproval,
    /// Out of usage or quota until a reset.
    WaitingLimit,
    /// Its model provider failed (overloaded, server error, rate limited, network).
    ModelError,
    /// Done with its turn, or quiet and not using the CPU.
    Idle,
}

impl Activity {
    pub const ALL: [Activity; 6] = [
        Activity::Working,
        Activity::NeedsInput,
        Activity::WaitingApproval,
        Activity::WaitingLimit,
        Activity::ModelError,
        Activity::Idle,
    ];

    /// The activity of a kebab-case name (`needs-input`).
    pub fn parse(name: &str) -> Option<Activity> {
        Activity::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// The kebab-case name used on the wire and in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Activity::Working => "working",
            Activity::NeedsInput => "needs-input",
            Activity::WaitingApproval => "waiting-approval",
            Activity::WaitingLimit => "waiting-limit",
            Activity::ModelError => "model-error",
            Activity::Idle => "idle",
        }
    }
}

/// Where a signal came from, most trusted first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum SignalTier {
    /// A structured signal: a hook (`celistrad hook <kind>`) or the agent's JSON result.
    Hook,
    /// A terminal signal: BEL, an OSC 9 notification, an OSC 0/2 title.
    Terminal,
    /// A screen rule of the rules file, or the quiet-and-no-CPU rule.
    Screen,
}

/// Why an agent's activity is what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Evidence {
    pub tier: SignalTier,
    /// Which signal: e.g. `claude hook Notification (idle_prompt)`, `BEL`, `OSC 0 title`,
    /// `screen rule claude/permission-prompt`, `quiet 30 s, no CPU`.
    pub signal: String,
    /// What it said (clipped to 200 characters).
    pub said: String,
    pub at_ms: u64,
}

/// An agent's activity and the evidence for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ActivityInfo {
    pub activity: Activity,
    /// Since when it has been in this activity.
    pub since_ms: u64,
    pub evidence: Evidence,
}

/// Why an agent's run ended (or its turn failed), classified from its hooks, its JSON result and
/// the tail of its output, never from the exit code alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ExitClass {
    /// The model is overloaded (529, or 500 "Overloaded"). Transient.
    ModelOverloaded,
    /// The provider's server failed (500, 502, 503). Transient.
    ServerError,
    /// Rate limited (429); its retry hint is honoured. Transient.
    RateLimited,
    /// The connection to the provider failed (reset, timeout). Transient.
    Network,
    /// A usage or quota limit: the agent waits for the reset.
    UsageLimit,
    /// The provider refused the credentials: restarting will not help.
    Auth,
    /// Anything else: an ordinary crash or exit.
    Other,
}

impl ExitClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitClass::ModelOverloaded => "model-overloaded",
            ExitClass::ServerError => "server-error",
            ExitClass::RateLimited => "rate-limited",
            ExitClass::Network => "network",
            ExitClass::UsageLimit => "usage-limit",
            ExitClass::Auth => "auth",
            ExitClass::Other => "other",
        }
    }

    pub fn parse(name: &str) -> Option<ExitClass> {
        [
            ExitClass::ModelOverloaded,
            ExitClass::ServerError,
            ExitClass::RateLimited,
            ExitClass::Network,
            ExitClass::UsageLimit,
            ExitClass::Auth,
            ExitClass::Other,
        ]
        .into_iter()
        .find(|class| class.as_str() == name)
    }

    /// A transient model error: restarted with its own backoff, outside the crash ceiling.
    pub fn is_transient_model_error(self) -> bool {
        matches!(
            self,
            ExitClass::ModelOverloaded
                | ExitClass::ServerError
                | ExitClass::RateLimited
                | ExitClass::Network
        )
    }
}

/// A classified exit or failed turn, with what it was classified from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExitClassification {
    pub class: ExitClass,
    /// `hook` (e.g. Claude Code's `StopFailure`), `result` (a headless run's JSON result) or
    /// `output` (the tail of its output).
    pub source: String,
    /// The line or message it was classified from (clipped to 200 characters).
    pub said: String,
    /// The provider's retry hint, when it gave one (`retry-after`, "retry in N s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// For a usage limit: when it resets, if the message said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_at_ms: Option<u64>,
    pub at_ms: u64,
}

/// An agent waiting on a usage limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LimitWait {
    /// When the limit resets, as the agent's message said; absent: the message named no time
    /// (the agent then tries again at `resume_at_ms`, an hour later).
    pub reset_at_ms: Option<u64>,
    /// When the daemon resumes it: the reset plus jitter.
    pub resume_at_ms: u64,
    /// `restart` (the agent is restarted) or `input` (its `limit_input` is typed into it).
    pub action: String,
    /// The message it was read from (clipped to 200 characters).
    pub said: String,
}

/// Notify (through the daemon's notification channels) when an agent has been in `activity` for
/// `after_secs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivityNotify {
    pub activity: Activity,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 86_400)]
    pub after_secs: u64,
}

/// What a schedule does when a start falls due while the previous run still runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Overlap {
    /// Leave the running one alone; this start does not happen.
    #[default]
    Skip,
    /// Start again once the running one ends (at most one start waits).
    Queue,
    /// Stop the running one and start anew.
    Replace,
}

/// What a schedule does about starts missed while the daemon was not running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MissedRuns {
    /// Nothing: wait for the next time.
    #[default]
    Skip,
    /// Start once at daemon start, however many were missed.
    RunOnce,
}

/// Start an agent at the times of a cron expression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Five fields: minute, hour, day of month, month, day of week (e.g. `30 9 * * 1-5`).
    #[schema(max_length = 256)]
    pub cron: String,
    /// IANA time zone the times are in (e.g. `Europe/Lisbon`); absent: the machine's zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 64)]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub missed: MissedRuns,
}

/// Restart a running agent at the times of a cron expression (PM2's `cron_restart`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartCron {
    /// Five fields, as in `Schedule`.
    #[schema(max_length = 256)]
    pub cron: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 64)]
    pub time_zone: Option<String>,
}

/// Body of `POST /v1/hook` on an agent's own socket (`celistrad hook <kind>`): one structured
/// signal from the agent's CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HookReport {
    /// The agent kind whose hook this is: `claude`, `codex`, `gemini`, or another name.
    #[schema(max_length = 32)]
    pub kind: String,
    /// The payload exactly as the CLI gave it (stdin for Claude Code and Gemini CLI hooks, the
    /// last argument for Codex `notify`).
    pub payload: serde_json::Value,
}
