//! Run history and output logs as the API shows them: one record per run, one record per log line.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
