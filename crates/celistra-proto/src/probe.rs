//! Health and order: readiness and liveness probes, their last results, and the dependencies that
//! order agents' starts and stops.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A check of an agent's health: exactly one of `exec`, `http`, `tcp` or `line`. As `readiness`
/// it decides `AgentInfo.ready`; as `liveness` the agent is restarted after `failure_threshold`
/// failures in a row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// A command line run with `/bin/sh -c` the way the agent runs (its sandbox, user, workspace);
    /// exit 0 passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 4096)]
    pub exec: Option<String>,
    /// An `http://` URL; a 2xx or 3xx answer to a GET passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 2048)]
    pub http: Option<String>,
    /// `host:port`; a TCP connection accepted passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 300)]
    pub tcp: Option<String>,
    /// A line of the agent's output containing this text (or matching `/REGEX/`) makes it ready
    /// for the rest of the run. Readiness only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 1024)]
    pub line: Option<String>,
    /// Time between checks, in milliseconds (default 5000). Until a run is first ready, its
    /// readiness is checked at least every 500 ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 100, maximum = 86_400_000)]
    pub interval_ms: Option<u64>,
    /// How long one check may take before it counts as failed, in milliseconds (default 2000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 10, maximum = 600_000)]
    pub timeout_ms: Option<u64>,
    /// Failures in a row that make a ready agent not ready, or a live one restarted (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub failure_threshold: Option<u32>,
    /// Wait after a run starts before the first check, in milliseconds (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86_400_000)]
    pub initial_delay_ms: Option<u64>,
}

/// The last result of one of an agent's probes in its current run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProbeStatus {
    /// Whether the last check passed.
    pub ok: bool,
    /// When it was made (ms since the epoch).
    pub at_ms: u64,
    /// What it found, e.g. `HTTP 200`, `connection refused`, `exit code 1`, `line: listening`.
    pub message: String,
    /// Failed checks in a row.
    pub failures: u32,
}

/// When a dependency counts as met.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DependencyCondition {
    /// It runs (past its `start_secs` window, if it has one).
    Started,
    /// It runs and its readiness probe passes; one without a readiness probe is ready once started.
    #[default]
    Ready,
    /// It exited with code 0.
    Completed,
}

impl DependencyCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            DependencyCondition::Started => "started",
            DependencyCondition::Ready => "ready",
            DependencyCondition::Completed => "completed",
        }
    }

    pub fn parse(text: &str) -> Option<DependencyCondition> {
        match text {
            "started" => Some(DependencyCondition::Started),
            "ready" => Some(DependencyCondition::Ready),
            "completed" => Some(DependencyCondition::Completed),
            _ => None,
        }
    }
}

/// Another agent, by name, that must meet `condition` before this one starts; it stops after
/// this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    #[schema(max_length = 64)]
    pub agent: String,
    /// Default `ready`.
    #[serde(default)]
    pub condition: DependencyCondition,
}
