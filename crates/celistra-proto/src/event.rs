//! Typed events of `GET /v1/events`: one JSON object per Server-Sent Event, its `type` the SSE event
//! name and its `id` the SSE id (monotonically increasing for the life of the daemon's state dir).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{AgentInfo, AgentState, Signal};

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExitCause {
    /// The process ended by itself (exit or an unrequested signal).
    Exited,
    /// An operator stopped, killed, restarted or removed it.
    Operator,
    /// The daemon was shutting down.
    Shutdown,
    /// Its liveness probe failed: the daemon stopped it to restart it.
    Unhealthy,
}

/// One event. `actor` names the credential whose request caused it (`system` for the daemon itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub id: u64,
    pub time_ms: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The event's type and body; serialised with the type in the `type` field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    DaemonStarted {
        pid: u32,
        version: String,
    },
    DaemonStopping,
    AgentSpawned {
        agent: Box<AgentInfo>,
        actor: String,
        /// The role of the actor's credential (absent for the daemon itself).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        actor_role: Option<crate::Role>,
    },
    AgentState {
        agent_id: String,
        name: String,
        state: AgentState,
        pid: Option<u32>,
    },
    AgentExited {
        agent_id: String,
        name: String,
        run: u64,
        exit_code: Option<i32>,
        exit_signal: Option<String>,
        cause: ExitCause,
        uptime_ms: u64,
        /// Why it ended, classified from hooks, its JSON result and its output.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        class: Option<crate::ExitClassification>,
    },
    /// A daemon took over a run that the keeper held while no daemon ran (an upgrade, a crash).
    AgentAdopted {
        agent_id: String,
        name: String,
        run: u64,
        pid: u32,
        /// Since when no daemon read its output (ms since the epoch).
        unattended_since_ms: Option<u64>,
        /// Output written meanwhile, now stored with the times it came.
        kept_bytes: u64,
        /// Output written meanwhile beyond what the keeper keeps per run (8 MiB).
        dropped_bytes: u64,
    },
    AgentRestarted {
        agent_id: String,
        name: String,
        /// Restart number since the operator last started it.
        attempt: u32,
        pid: u32,
    },
    AgentBackoff {
        agent_id: String,
        name: String,
        delay_ms: u64,
        next_restart_at_ms: u64,
    },
    AgentCrashedOut {
        agent_id: String,
        name: String,
        restarts_in_window: u32,
        window_secs: u64,
    },
    AgentSpawnFailed {
        agent_id: String,
        name: String,
        error: String,
    },
    AgentRenamed {
        agent_id: String,
        old_name: String,
        new_name: String,
        actor: String,
        /// The role of the actor's credential (absent for the daemon itself).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        actor_role: Option<crate::Role>,
    },
    AgentUpdated {
        agent_id: String,
        name: String,
        actor: String,
        /// The role of the actor's credential (absent for the daemon itself).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        actor_role: Option<crate::Role>,
    },
    AgentSignalled {
        agent_id: String,
        name: String,
        #[schema(value_type = String)]
        signal: Signal,
        actor: String,
        /// The role of the actor's credential (absent for the daemon itself).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        actor_role: Option<crate::Role>,
    },
    AgentStopRequested {
        agent_id: String,
        name: String,
        actor: String,
        /// The role of the actor's credential (absent for the daemon itself).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        actor_role: Option<crate::Role>,
    },
    AgentStartRequested {
        agent_id: String,
        name: String,
        actor: String,
        /// The role of the actor's credential (absent for the daemon itself).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        actor_role: Option<crate::Role>,
    },
    AgentRemoved {
        agent_id: String,
        name: String,
        actor: String,
        /// The role of the actor's credential (absent for the daemon itself).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        actor_role: Option<crate::Role>,
    },
    /// Output could not be saved (the disk is full, an I/O error, or saving fell behind) and was
    /// dropped; the agent itself was not slowed. Sent at the first drop, then at most every few seconds.
    LogsDropped {
        agent_id: String,
        /// Bytes dropped since the last `logs_dropped` event for this agent.
        bytes: u64,
        reason: String,
    },
    /// Output is being saved again after drops.
    LogsRecovered {
        /// Bytes dropped while saving failed.
        dropped_bytes: u64,
    },
    /// The history database was unreadable or corrupt: it was moved aside and a fresh one created.
    HistoryReset {
        moved_to: String,
        reason: String,
    },
    /// A run started outside the kernel sandbox: the agent holds `privileged`, or the master switch
    /// is off.
    AgentUnsandboxed {
        agent_id: String,
        name: String,
        run: u64,
        /// `privileged` or `switched_off`.
        because: String,
    },
    /// The kernel refused a sandboxed process something.
    SandboxBlock {
        block: Box<crate::SandboxBlock>,
    },
    /// An agent asked for approval.
    ApprovalRequested {
        approval: Box<crate::Approval>,
    },
    /// A request was approved, denied or expired.
    ApprovalDecided {
        approval: Box<crate::Approval>,
    },
    /// A notification channel gave up on a delivery after every attempt.
    NotificationFailed {
        channel: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approval_id: Option<String>,
        attempts: u32,
        error: String,
    },
    /// Verifying the audit log found it altered: `first_bad_seq` is the first entry that is wrong.
    AuditVerifyFailed {
        first_bad_seq: Option<u64>,
        problem: String,
    },
    /// The sandbox master switch was turned.
    SandboxSwitched {
        enabled: bool,
        actor: String,
        /// The role of the actor's credential (absent for the daemon itself).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        actor_role: Option<crate::Role>,
    },
    /// A machine joined this hub's fleet (`ctl join` with a code from `ctl pair`).
    MachineJoined {
        name: String,
        address: String,
    },
    /// A machine's link to this hub came up.
    MachineOnline {
        name: String,
        address: String,
    },
    /// A machine's link to this hub went down (closed, or silent past the PING timeout).
    MachineOffline {
        name: String,
        reason: String,
    },
    /// A machine was cut off from this hub for good (`ctl machines revoke`).
    MachineRevoked {
        name: String,
        actor: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        actor_role: Option<crate::Role>,
    },
    /// A machine's new audit checkpoint does not extend the one this hub witnessed before: its
    /// audit history was rewritten or rolled back.
    MachineAuditTampered {
        name: String,
        problem: String,
    },
    /// The client asked to resume from an id older than the backlog holds: events were missed and the
    /// client should re-read `GET /v1/agents`.
    Resync {
        oldest_available: u64,
    },
    /// An agent's activity changed (see `AgentInfo::activity`).
    AgentActivity {
        agent_id: String,
        name: String,
        activity: crate::ActivityInfo,
    },
    /// An agent reported a usage limit and waits for its reset.
    AgentWaitingLimit {
        agent_id: String,
        name: String,
        limit: crate::LimitWait,
    },
    /// An agent used up its model-error budget (`model_error_max` in `model_error_window_secs`)
    /// and was stopped.
    AgentModelErrorsExhausted {
        agent_id: String,
        name: String,
        model_errors: u32,
        window_secs: u64,
    },
    /// An agent's readiness changed (see `AgentInfo::ready`).
    AgentReady {
        agent_id: String,
        name: String,
        run: u64,
        ready: bool,
        /// The check that decided it.
        probe: crate::ProbeStatus,
    },
    /// An agent's liveness probe failed `failures` times in a row: it is restarted.
    AgentUnhealthy {
        agent_id: String,
        name: String,
        run: u64,
        failures: u32,
        /// The last check's finding.
        reason: String,
    },
    /// A schedule or `restart_cron` fell due: `action` is `started`, `restarted`, `replaced`,
    /// `queued`, `skipped` (overlap) or `missed` (a run missed while the daemon was down, started).
    AgentScheduled {
        agent_id: String,
        name: String,
        action: String,
        /// The time the cron expression named.
        due_at_ms: u64,
    },
    /// Files an agent watches (`--watch`) changed and it was restarted (`action` `restarted`), or
    /// started after a failure (`started`); or its paths could not be watched (`failed`, with
    /// `error`).
    AgentWatchTriggered {
        agent_id: String,
        name: String,
        action: String,
        /// Some of the changed paths (at most 10), in the order they changed.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        paths: Vec<String>,
        /// How many changes were gathered.
        #[serde(default)]
        changes: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// An agent's memory stayed above its `memory_restart` (two samples in a row): the daemon
    /// restarts it (an `agent_start_requested` by the actor `memory` follows).
    AgentMemoryRestart {
        agent_id: String,
        name: String,
        /// Its memory at the last sample, in bytes.
        memory_bytes: u64,
        /// Its `memory_restart`, in bytes.
        limit_bytes: u64,
    },
}

impl EventKind {
    /// The agent whose listed state this event may change, for caches of `GET /v1/agents`.
    pub fn changed_agent(&self) -> Option<&str> {
        match self {
            EventKind::AgentSpawned { agent, .. } => Some(&agent.id),
            EventKind::AgentState { agent_id, .. }
            | EventKind::AgentExited { agent_id, .. }
            | EventKind::AgentRestarted { agent_id, .. }
            | EventKind::AgentAdopted { agent_id, .. }
            | EventKind::AgentBackoff { agent_id, .. }
            | EventKind::AgentCrashedOut { agent_id, .. }
            | EventKind::AgentSpawnFailed { agent_id, .. }
            | EventKind::AgentRenamed { agent_id, .. }
            | EventKind::AgentUpdated { agent_id, .. }
            | EventKind::AgentRemoved { agent_id, .. }
            | EventKind::AgentUnsandboxed { agent_id, .. }
            | EventKind::AgentActivity { agent_id, .. }
            | EventKind::AgentWaitingLimit { agent_id, .. }
            | EventKind::AgentModelErrorsExhausted { agent_id, .. }
            | EventKind::AgentScheduled { agent_id, .. }
            | EventKind::AgentWatchTriggered { agent_id, .. } => Some(agent_id),
            EventKind::AgentReady { agent_id, .. } | EventKind::AgentUnhealthy { agent_id, .. } => {
                Some(agent_id)
            }
            EventKind::AgentMemoryRestart { agent_id, .. } => Some(agent_id),
            _ => None,
        }
    }

    /// The `type` name, also used as the SSE `event:` field.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::DaemonStarted { .. } => "daemon_started",
            EventKind::DaemonStopping => "daemon_stopping",
            EventKind::MachineJoined { .. } => "machine_joined",
            EventKind::MachineOnline { .. } => "machine_online",
            EventKind::MachineOffline { .. } => "machine_offline",
            EventKind::MachineRevoked { .. } => "machine_revoked",
            EventKind::MachineAuditTampered { .. } => "machine_audit_tampered",
            EventKind::AgentSpawned { .. } => "agent_spawned",
            EventKind::AgentState { .. } => "agent_state",
            EventKind::AgentExited { .. } => "agent_exited",
            EventKind::AgentRestarted { .. } => "agent_restarted",
            EventKind::AgentAdopted { .. } => "agent_adopted",
            EventKind::AgentBackoff { .. } => "agent_backoff",
            EventKind::AgentCrashedOut { .. } => "agent_crashed_out",
            EventKind::AgentSpawnFailed { .. } => "agent_spawn_failed",
            EventKind::AgentRenamed { .. } => "agent_renamed",
            EventKind::AgentUpdated { .. } => "agent_updated",
            EventKind::AgentSignalled { .. } => "agent_signalled",
            EventKind::AgentStopRequested { .. } => "agent_stop_requested",
            EventKind::AgentStartRequested { .. } => "agent_start_requested",
            EventKind::AgentRemoved { .. } => "agent_removed",
            EventKind::LogsDropped { .. } => "logs_dropped",
            EventKind::LogsRecovered { .. } => "logs_recovered",
            EventKind::HistoryReset { .. } => "history_reset",
            EventKind::AgentUnsandboxed { .. } => "agent_unsandboxed",
            EventKind::SandboxBlock { .. } => "sandbox_block",
            EventKind::SandboxSwitched { .. } => "sandbox_switched",
            EventKind::AuditVerifyFailed { .. } => "audit_verify_failed",
            EventKind::ApprovalRequested { .. } => "approval_requested",
            EventKind::ApprovalDecided { .. } => "approval_decided",
            EventKind::NotificationFailed { .. } => "notification_failed",
            EventKind::Resync { .. } => "resync",
            EventKind::AgentActivity { .. } => "agent_activity",
            EventKind::AgentWaitingLimit { .. } => "agent_waiting_limit",
            EventKind::AgentModelErrorsExhausted { .. } => "agent_model_errors_exhausted",
            EventKind::AgentScheduled { .. } => "agent_scheduled",
            EventKind::AgentWatchTriggered { .. } => "agent_watch_triggered",
            EventKind::AgentReady { .. } => "agent_ready",
            EventKind::AgentUnhealthy { .. } => "agent_unhealthy",
            EventKind::AgentMemoryRestart { .. } => "agent_memory_restart",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_field_matches_name() {
        let event = Event {
            id: 7,
            time_ms: 1,
            kind: EventKind::AgentRenamed {
                agent_id: "ag-abcd".into(),
                old_name: "a".into(),
                new_name: "b".into(),
                actor: "machine-secret".into(),
                actor_role: Some(crate::Role::Owner),
            },
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], event.kind.name());
        assert_eq!(json["id"], 7);
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}

/// Query of `GET /v1/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Resume after this event id (same as the `Last-Event-ID` header, which wins).
    pub after: Option<u64>,
    /// `false`: end the stream once the replay is sent (default `true`: stay open for live events).
    #[serde(default = "follow_by_default")]
    #[param(default = true)]
    pub follow: bool,
}

fn follow_by_default() -> bool {
    true
}

impl Default for EventsQuery {
    fn default() -> Self {
        EventsQuery {
            after: None,
            follow: follow_by_default(),
        }
    }
}
