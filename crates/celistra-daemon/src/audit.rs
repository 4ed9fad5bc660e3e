//! What goes into the audit log, from where: the privileged events of the event bus (mapped in one
//! place, so each action is recorded exactly once with the actor that caused it), plus what is not an
//! event: each run's confinement, settings changes with their values, `apply`, changes of
//! `config.json` and `capabilities.json`, and failed authentications (rate-limited).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use celistra_audit::{AuditLog, NewEntry};
use celistra_proto::{AuditHealth, AuditVerification, EventKind};
use serde_json::{Value, json};

use crate::actor::Actor;

/// The daemon's audit log and the bookkeeping around it.
pub(crate) struct Auditor {
    log: AuditLog,
    auth_failures: Mutex<FailureWindow>,
    /// Content hashes of the configuration files as last seen, to record changes once.
    seen_files: Mutex<std::collections::HashMap<&'static str, String>>,
    /// The last verification's result, for `/v1/health`.
    last_verification: Mutex<Option<AuditVerification>>,
}

/// How often the whole log is verified in the background.
pub(crate) const VERIFY_EVERY: Duration = Duration::from_secs(3600);

/// Which part of the log a verification reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Every entry from the first.
    Full,
    /// The entries added since the last sound verification (each against what this daemon
    /// wrote), plus the checkpoint.
    SinceLastCheck,
}

impl Auditor {
    /// Verifies the log on a blocking thread and keeps the result for `/v1/health`. An altered
    /// log is logged here; announcing it is the caller's (see `Services::verify_audit`).
    pub(crate) async fn verify(self: &Arc<Self>, scope: Scope) -> AuditVerification {
        let from_seq = match (scope, &*lock(&self.last_verification)) {
            (Scope::SinceLastCheck, Some(last)) if last.ok => last.entries,
            _ => 0,
        };
        let audit = Arc::clone(self);
        let checked =
            tokio::task::spawn_blocking(move || audit.log().verify(from_seq, &mut |_, _| {})).await;
        let verification = match checked {
            Ok(Ok(verified)) => AuditVerification {
                ok: true,
                entries: from_seq + verified.entries,
                first_bad_seq: None,
                problem: None,
                checked_at_ms: crate::now_ms(),
            },
            Ok(Err(tamper)) => AuditVerification {
                ok: false,
                entries: tamper.seq.unwrap_or(0),
                first_bad_seq: tamper.seq,
                problem: Some(tamper.what.clone()),
                checked_at_ms: crate::now_ms(),
            },
            Err(e) => AuditVerification {
                ok: false,
                entries: 0,
                first_bad_seq: None,
                problem: Some(format!("the verification did not finish: {e}")),
                checked_at_ms: crate::now_ms(),
            },
        };
        if !verification.ok {
            tracing::error!(
                "the audit log is altered: {}",
                verification.problem.as_deref().unwrap_or("")
            );
        }
        *lock(&self.last_verification) = Some(verification.clone());
        verification
    }

    /// Signs a checkpoint of the log as it is now, on a blocking thread.
    pub(crate) async fn sign_checkpoint(self: &Arc<Self>) {
        let audit = Arc::clone(self);
        let signed = tokio::task::spawn_blocking(move || audit.log().checkpoint()).await;
        if let Ok(Err(e)) = signed {
            tracing::warn!("cannot sign the hourly audit checkpoint: {e}");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("entries", &self.log.tree_size())
            .finish_non_exhaustive()
    }
}

/// Failed authentications recorded per second at most; the rest are counted into the next entry.
const AUTH_FAILURES_PER_SECOND: u32 = 20;

#[derive(Debug)]
struct FailureWindow {
    started: Instant,
    recorded: u32,
    suppressed: u64,
}

impl Auditor {
    pub(crate) fn new(log: AuditLog) -> Auditor {
        Auditor {
            log,
            auth_failures: Mutex::new(FailureWindow {
                started: Instant::now(),
                recorded: 0,
                suppressed: 0,
            }),
            seen_files: Mutex::default(),
            last_verification: Mutex::default(),
        }
    }

    /// The audit part of `/v1/health`.
    pub(crate) fn health(&self) -> AuditHealth {
        AuditHealth {
            entries: self.log.tree_size(),
            last_verification: lock(&self.last_verification).clone(),
        }
    }

    pub(crate) fn log(&self) -> &AuditLog {
        &self.log
    }

    /// Appends one entry; secrets in `body` are redacted first (never after). A credential's role
    /// goes into the body as `actor_role`.
    pub(crate) fn record(&self, actor: &Actor, action: &str, target: &str, mut body: Value) {
        celistra_audit::redact(&mut body);
        if let (Some(role), Value::Object(fields)) = (actor.role, &mut body) {
            fields.insert("actor_role".into(), role.as_str().into());
        }
        self.log.append(NewEntry {
            actor: actor.name.clone(),
            action: action.to_owned(),
            target: target.to_owned(),
            body,
        });
    }

    /// Records an event of the bus if it is a privileged action.
    pub(crate) fn record_event(&self, event: &EventKind) {
        if let Some((actor, action, target, body)) = privileged_action(event) {
            self.record(&actor, action, &target, body);
        }
    }

    /// Records a request that failed authentication; at most [`AUTH_FAILURES_PER_SECOND`] a second,
    /// so guessing cannot flood the log: the others are counted in the next recorded one.
    pub(crate) fn record_auth_failure(&self, method: &str, path: &str, reason: &str) {
        let suppressed = {
            let mut window = lock(&self.auth_failures);
            if window.started.elapsed() >= Duration::from_secs(1) {
                window.started = Instant::now();
                window.recorded = 0;
            }
            if window.recorded >= AUTH_FAILURES_PER_SECOND {
                window.suppressed += 1;
                return;
            }
            window.recorded += 1;
            std::mem::take(&mut window.suppressed)
        };
        let nobody = Actor {
            name: "unauthenticated".into(),
            role: None,
        };
        self.record(
            &nobody,
            "auth_failed",
            path,
            json!({ "method": method, "reason": reason, "suppressed_before": suppressed }),
        );
    }

    /// Records `file` (`config.json`, `capabilities.json`) when its content differs from the last
    /// time it was read (the first read of a daemon's life included).
    pub(crate) fn note_file(&self, file: &'static str, content: Option<&str>) {
        let digest = content.map_or_else(|| "absent".to_owned(), content_digest);
        let mut seen = lock(&self.seen_files);
        if seen.get(file) == Some(&digest) {
            return;
        }
        seen.insert(file, digest.clone());
        drop(seen);
        self.record(
            &Actor::system(),
            "config_loaded",
            file,
            json!({ "sha256": digest, "present": content.is_some() }),
        );
    }
}

fn content_digest(content: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(content.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The audit entry of an event that records a privileged action: (actor, action, target, body).
/// Events that only report state (`agent_state`, `agent_exited`, …) are not audited: the actions
/// that caused them are.
fn privileged_action(event: &EventKind) -> Option<(Actor, &'static str, String, Value)> {
    let entry = match event {
        EventKind::DaemonStarted { pid, version } => (
            Actor::system(),
            "daemon_started",
            String::new(),
            json!({ "pid": pid, "version": version }),
        ),
        EventKind::DaemonStopping => (Actor::system(), "daemon_stopping", String::new(), json!({})),
        EventKind::MachineJoined {
            name: machine,
            address,
        } => (
            // The pairing code was the credential; the owner who minted it is audited there.
            Actor::system(),
            "machine_joined",
            machine.clone(),
            json!({ "address": address }),
        ),
        EventKind::MachineRevoked {
            name: machine,
            actor,
            actor_role,
        } => (
            Actor::recorded(actor, *actor_role),
            "machine_revoked",
            machine.clone(),
            json!({}),
        ),
        EventKind::MachineAuditTampered {
            name: machine,
            problem,
        } => (
            Actor::system(),
            "machine_audit_tampered",
            machine.clone(),
            json!({ "problem": problem }),
        ),
        EventKind::AgentSpawned {
            agent,
            actor,
            actor_role,
        } => (
            Actor::recorded(actor, *actor_role),
            "agent_spawned",
            agent.id.clone(),
            json!({
                "name": agent.name,
                "command": agent.command,
                "workspace": agent.workspace,
                "env_keys": agent.env_keys,
                "source": agent.source,
                "auto_restart": agent.auto_restart,
            }),
        ),
        EventKind::AgentRenamed {
            agent_id,
            old_name,
            new_name,
            actor,
            actor_role,
        } => (
            Actor::recorded(actor, *actor_role),
            "agent_renamed",
            agent_id.clone(),
            json!({ "old_name": old_name, "new_name": new_name }),
        ),
        EventKind::AgentSignalled {
            agent_id,
            name,
            signal,
            actor,
            actor_role,
        } => (
            Actor::recorded(actor, *actor_role),
            "agent_signalled",
            agent_id.clone(),
            json!({ "name": name, "signal": signal.to_string() }),
        ),
        EventKind::AgentStopRequested {
            agent_id,
            name,
            actor,
            actor_role,
        } => (
            Actor::recorded(actor, *actor_role),
            "agent_stop_requested",
            agent_id.clone(),
            json!({ "name": name }),
        ),
        EventKind::AgentStartRequested {
            agent_id,
            name,
            actor,
            actor_role,
        } => (
            Actor::recorded(actor, *actor_role),
            "agent_start_requested",
            agent_id.clone(),
            json!({ "name": name }),
        ),
        EventKind::AgentRemoved {
            agent_id,
            name,
            actor,
            actor_role,
        } => (
            Actor::recorded(actor, *actor_role),
            "agent_removed",
            agent_id.clone(),
            json!({ "name": name }),
        ),
        EventKind::SandboxSwitched {
            enabled,
            actor,
            actor_role,
        } => (
            Actor::recorded(actor, *actor_role),
            "sandbox_switched",
            String::new(),
            json!({ "enabled": enabled }),
        ),
        EventKind::SandboxBlock { block } => (
            // The kernel decided; the agent is the target.
            Actor::system(),
            "sandbox_block",
            block.agent_id.clone(),
            serde_json::to_value(block).unwrap_or(Value::Null),
        ),
        EventKind::ApprovalRequested { approval } => (
            // The agent asked: the agent is the actor.
            Actor {
                name: format!("agent:{}", approval.agent_id),
                role: None,
            },
            "approval_requested",
            approval.agent_id.clone(),
            serde_json::to_value(approval).unwrap_or(Value::Null),
        ),
        EventKind::ApprovalDecided { approval } => (
            approval
                .decided_by
                .clone()
                .map_or_else(Actor::system, |name| Actor {
                    name,
                    role: approval.decided_by_role,
                }),
            if approval.status == celistra_proto::ApprovalStatus::Expired {
                "approval_expired"
            } else {
                "approval_decided"
            },
            approval.agent_id.clone(),
            serde_json::to_value(approval).unwrap_or(Value::Null),
        ),
        EventKind::HistoryReset { moved_to, reason } => (
            Actor::system(),
            "history_reset",
            String::new(),
            json!({ "moved_to": moved_to, "reason": reason }),
        ),
        // The daemon starts (or restarts) an agent on its own because a schedule said so.
        EventKind::AgentScheduled {
            agent_id,
            name,
            action,
            due_at_ms,
        } => (
            Actor::system(),
            "agent_scheduled",
            agent_id.clone(),
            json!({ "name": name, "action": action, "due_at_ms": due_at_ms }),
        ),
        // The daemon restarts (or starts) an agent on its own because files it watches changed.
        EventKind::AgentWatchTriggered {
            agent_id,
            name,
            action,
            paths,
            changes,
            error,
        } => (
            Actor::watch(),
            "agent_watch_triggered",
            agent_id.clone(),
            json!({ "name": name, "action": action, "paths": paths, "changes": changes, "error": error }),
        ),
        // The daemon restarts an agent on its own because its liveness probe failed.
        EventKind::AgentUnhealthy {
            agent_id,
            name,
            run,
            failures,
            reason,
        } => (
            Actor::system(),
            "agent_unhealthy",
            agent_id.clone(),
            json!({ "name": name, "run": run, "failures": failures, "reason": reason }),
        ),
        // The daemon restarts an agent on its own because its memory stayed above its threshold.
        EventKind::AgentMemoryRestart {
            agent_id,
            name,
            memory_bytes,
            limit_bytes,
        } => (
            Actor::memory(),
            "agent_memory_restart",
            agent_id.clone(),
            json!({ "name": name, "memory_bytes": memory_bytes, "limit_bytes": limit_bytes }),
        ),
        // Settings changes are recorded with their values by the update itself, runs with their
        // confinement when they start; the rest only reports state.
        EventKind::AgentUpdated { .. }
        | EventKind::AgentUnsandboxed { .. }
        | EventKind::AgentState { .. }
        | EventKind::MachineOnline { .. }
        | EventKind::MachineOffline { .. }
        | EventKind::AgentExited { .. }
        | EventKind::AgentRestarted { .. }
        | EventKind::AgentAdopted { .. }
        | EventKind::AgentBackoff { .. }
        | EventKind::AgentCrashedOut { .. }
        | EventKind::AgentSpawnFailed { .. }
        | EventKind::LogsDropped { .. }
        | EventKind::LogsRecovered { .. }
        | EventKind::AuditVerifyFailed { .. }
        | EventKind::NotificationFailed { .. }
        | EventKind::AgentActivity { .. }
        | EventKind::AgentWaitingLimit { .. }
        | EventKind::AgentModelErrorsExhausted { .. }
        | EventKind::AgentReady { .. }
        | EventKind::Resync { .. } => return None,
    };
    Some(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use celistra_proto::Signal;

    #[test]
    fn privileged_events_map_to_entries_with_their_actor() {
        let (actor, action, target, body) = privileged_action(&EventKind::AgentSignalled {
            agent_id: "ag-abcd".into(),
            name: "web".into(),
            signal: Signal::Kill,
            actor: "token:ops".into(),
            actor_role: Some(celistra_proto::Role::Operator),
        })
        .expect("audited");
        assert_eq!(
            (actor.name.as_str(), actor.role, action, target.as_str()),
            (
                "token:ops",
                Some(celistra_proto::Role::Operator),
                "agent_signalled",
                "ag-abcd"
            )
        );
        assert_eq!(body["signal"], "KILL");
        assert!(
            privileged_action(&EventKind::AgentState {
                agent_id: "ag-abcd".into(),
                name: "web".into(),
                state: celistra_proto::AgentState::Running,
                pid: Some(1),
            })
            .is_none()
        );
    }
}
