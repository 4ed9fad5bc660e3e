//! Run history and output logs as the API shows them: one record per run, one record per log line.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::EffectiveSettings;

/// What ended a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RunCause {
    /// It exited by itself with code 0.
    Exited,
    /// It exited by itself with a non-zero code or an unrequested signal.
    Crashed,
    /// It crashed and the restart ceiling was reached, so no restart followed.
    CrashedOut,
    /// An operator stopped, killed, restarted or removed it (`stopped_by` says who).
    Operator,
    /// The daemon was shutting down.
    Shutdown,
    /// The daemon died while it ran; its end was recorded at the next start.
    DaemonLost,
    /// Its liveness probe failed `failure_threshold` times in a row, so the daemon restarted it.
    Unhealthy,
    /// It ended before its `start_secs` window passed: a failed start.
    FailedStart,
}

impl RunCause {
    pub fn as_str(self) -> &'static str {
        match self {
            RunCause::Exited => "exited",
            RunCause::Crashed => "crashed",
            RunCause::CrashedOut => "crashed-out",
            RunCause::Operator => "operator",
            RunCause::Shutdown => "shutdown",
            RunCause::DaemonLost => "daemon-lost",
            RunCause::Unhealthy => "unhealthy",
            RunCause::FailedStart => "failed-start",
        }
    }

    pub fn parse(text: &str) -> Option<RunCause> {
        [
            RunCause::Exited,
            RunCause::Crashed,
            RunCause::CrashedOut,
            RunCause::Operator,
            RunCause::Shutdown,
            RunCause::DaemonLost,
            RunCause::Unhealthy,
            RunCause::FailedStart,
        ]
        .into_iter()
        .find(|cause| cause.as_str() == text)
    }
}

/// How an agent's standard streams are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum IoMode {
    /// One PTY for input and output (the default).
    Pty,
    /// stdin, stdout and stderr on pipes (`--no-pty`): stdout and stderr are kept apart.
    Pipes,
}

impl IoMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IoMode::Pty => "pty",
            IoMode::Pipes => "pipes",
        }
    }
}

/// One run of one agent, from its spawn to its end. Environment values are never recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunRecord {
    pub agent_id: String,
    /// The agent's name when the run started.
    pub name: String,
    /// The agent's run number, 1 for its first run.
    pub run: u64,
    pub command: String,
    pub workspace: String,
    /// Names of the variables the spec set; their values are masked before they are stored.
    pub env_keys: Vec<String>,
    pub mode: IoMode,
    pub pid: u32,
    /// Automatic restarts in a row before this run (0: started by an operator or at daemon start).
    pub attempt: u32,
    pub settings: EffectiveSettings,
    pub started_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    pub exit_code: Option<i32>,
    pub exit_signal: Option<String>,
    /// Absent while the run is alive.
    pub cause: Option<RunCause>,
    /// The credential of the operator who stopped it, when `cause` is `operator`.
    pub stopped_by: Option<String>,
    /// Bytes of output this run wrote that are still kept.
    pub output_bytes: u64,
    /// Why it ended, classified from its hooks, JSON result and output (absent while it runs,
    /// and for an operator's stop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_class: Option<crate::ExitClass>,
}

/// One line of output (`format=jsonl`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    pub agent_id: String,
    pub run: u64,
    /// `pty`, `stdout` or `stderr`.
    pub stream: String,
    /// When the line's first byte arrived.
    pub time_ms: u64,
    pub text: String,
}

/// The state of the history database, in `/v1/health`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HistoryHealth {
    /// False while output cannot be saved (disk full, I/O errors); it is being dropped and counted.
    pub ok: bool,
    /// Output bytes kept.
    pub stored_bytes: u64,
    /// Output bytes not saved since the daemon started.
    pub dropped_bytes: u64,
    /// Kept bytes not yet in the search index (searched by a scan until they are).
    pub unindexed_bytes: u64,
    /// Kept bytes stored as they came during a burst, compressed in idle time (until then they
    /// take their full size on disk and in the size limits).
    #[serde(default)]
    pub uncompressed_bytes: u64,
}

/// How `GET /v1/agents/{agent}/logs` and `GET /v1/logs` print output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines: escape sequences removed, carriage-return overwrites applied.
    #[default]
    Text,
    /// The bytes exactly as the agent wrote them.
    Raw,
    /// One JSON `LogLine` per line.
    Jsonl,
}

/// Which of an agent's output streams to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// The terminal of an agent with a PTY.
    Pty,
    /// Standard output of an agent on pipes.
    Stdout,
    /// Standard error of an agent on pipes.
    Stderr,
    /// The daemon's notes of what the agent's sandbox blocked.
    Sandbox,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Pty => "pty",
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::Sandbox => "sandbox",
        }
    }
}

/// Most lines a tail may ask for, and most matches a search returns.
pub const MAX_TAIL: usize = 1_000_000;

/// Query of `GET /v1/agents/{agent}/logs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Only the last N lines (or, with `grep`, the last N matches).
    #[param(maximum = 1_000_000)]
    pub tail: Option<usize>,
    /// Keep the response open and stream new output, across restarts of the agent.
    #[serde(default)]
    pub follow: bool,
    /// Only output at or after this time (ms since the epoch).
    pub since: Option<u64>,
    /// Only output at or before this time (ms since the epoch).
    pub until: Option<u64>,
    /// Only this run (the agent's run number, 1 for its first).
    #[param(minimum = 1)]
    pub run: Option<u64>,
    /// Only lines matching: case-insensitive, the pattern starting at a word start. Not with
    /// `format=raw`.
    pub grep: Option<String>,
    /// Only this stream.
    #[param(inline)]
    pub stream: Option<LogStream>,
    /// Prefix each line with its time (RFC 3339, UTC).
    #[serde(default)]
    pub timestamps: bool,
    /// How to print the output (default `text`).
    #[serde(default)]
    #[param(inline)]
    pub format: LogFormat,
}

/// Query of `GET /v1/logs`: a search across agents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// The pattern: case-insensitive, starting at a word start.
    pub grep: String,
    /// Only this agent (id or name).
    pub agent: Option<String>,
    /// Only output at or after this time (ms since the epoch).
    pub since: Option<u64>,
    /// Only output at or before this time (ms since the epoch).
    pub until: Option<u64>,
    /// Only this stream.
    #[param(inline)]
    pub stream: Option<LogStream>,
    /// The newest N matches (default 1000).
    #[param(minimum = 1, maximum = 1_000_000)]
    pub limit: Option<usize>,
    /// Prefix each line with its time (RFC 3339, UTC).
    #[serde(default)]
    pub timestamps: bool,
    /// `text` (default) or `jsonl`; a search returns lines, so not `raw`.
    #[serde(default)]
    #[param(inline)]
    pub format: LogFormat,
}

/// Query of `GET /v1/history`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only this agent (id or name; removed agents too).
    pub agent: Option<String>,
    /// Runs alive at or after this time (ms since the epoch).
    pub since: Option<u64>,
    /// Runs started at or before this time.
    pub until: Option<u64>,
    /// The newest N runs (default 100).
    #[param(minimum = 1, maximum = 100_000)]
    pub limit: Option<usize>,
}

/// Answer of `DELETE /v1/agents/{agent}/logs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Cleared {
    pub agent_id: String,
    /// Bytes of saved output deleted.
    pub cleared_bytes: u64,
}
