//! `ctl events`: recent events from the daemon's backlog, optionally followed live.

use celistra_client::Client;
use celistra_proto::{Event, EventKind, EventsQuery, FleetEvent};
use clap::Args;

use super::{CtlResult, Failure};

#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
    /// Keep printing events as they happen (Ctrl-C to end).
    #[arg(long, short)]
    follow: bool,
    /// Print each event as one line of JSON.
    #[arg(long)]
    json: bool,
    /// Start after this event id instead of at the oldest one kept.
    #[arg(long, value_name = "ID", default_value_t = 0)]
    after: u64,
    /// Every machine's events, from the hub's merged stream, each line starting with its machine
    /// (ids are then the hub's).
    #[arg(long)]
    all_machines: bool,
}

pub(crate) async fn run(client: &Client, args: EventsArgs) -> CtlResult {
    let query = EventsQuery {
        after: Some(args.after),
        follow: args.follow,
    };
    if args.all_machines {
        return all_machines(client, &query, args.json).await;
    }
    let mut events = client.stream_events(&query).await?;
    while let Some(frame) = events.next_frame().await? {
        let event: Event = serde_json::from_str(&frame.data)
            .map_err(|e| Failure::Failed(format!("unexpected event from the daemon: {e}")))?;
        if args.json {
            println!("{}", frame.data);
        } else {
            println!("{}", describe(&event));
        }
    }
    Ok(())
}

/// `events --all-machines`: the hub's merged stream, one line per event prefixed with its machine.
async fn all_machines(client: &Client, query: &EventsQuery, json: bool) -> CtlResult {
    if client.machine().is_some() {
        return Err(Failure::Usage(
            "--all-machines follows every machine; leave out --machine".into(),
        ));
    }
    let mut events = client.stream_fleet_events(query).await?;
    while let Some(frame) = events.next_frame().await? {
        let event: FleetEvent = serde_json::from_str(&frame.data)
            .map_err(|e| Failure::Failed(format!("unexpected event from the hub: {e}")))?;
        if json {
            println!("{}", frame.data);
        } else {
            println!("{} {}", event.machine, describe(&event.event));
        }
    }
    Ok(())
}

/// Who did it: the credential and, for a credential, its role.
fn by(actor: &str, role: Option<celistra_proto::Role>) -> String {
    match role {
        Some(role) => format!("{actor} ({role})"),
        None => actor.to_owned(),
    }
}

/// One line for a person: id, time, type, then the event's essentials.
fn describe(event: &Event) -> String {
    let detail = match &event.kind {
        EventKind::DaemonStarted { pid, version } => format!("pid {pid}, version {version}"),
        EventKind::DaemonStopping => String::new(),
        EventKind::MachineJoined {
            name: machine,
            address,
        } => format!("{machine} from {address}"),
        EventKind::MachineOnline {
            name: machine,
            address,
        } => format!("{machine} from {address}"),
        EventKind::MachineOffline {
            name: machine,
            reason,
        } => format!("{machine}: {reason}"),
        EventKind::MachineRevoked {
            name: machine,
            actor,
            actor_role,
        } => format!("{machine} by {}", by(actor, *actor_role)),
        EventKind::MachineAuditTampered {
            name: machine,
            problem,
        } => format!("{machine}: {problem}"),
        EventKind::LogsDropped {
            agent_id,
            bytes,
            reason,
        } => format!("{agent_id}: {bytes} bytes of output not saved: {reason}"),
        EventKind::LogsRecovered { dropped_bytes } => {
            format!("output is saved again; {dropped_bytes} bytes were lost")
        }
        EventKind::HistoryReset { moved_to, reason } => {
            format!("history database damaged ({reason}); moved to {moved_to}, a fresh one started")
        }
        EventKind::AgentSpawned {
            agent,
            actor,
            actor_role,
        } => format!(
            "{} ({}) by {}: {}",
            agent.id,
            agent.name,
            by(actor, *actor_role),
            agent.command
        ),
        EventKind::AgentState {
            agent_id,
            name,
            state,
            pid,
        } => {
            format!(
                "{agent_id} ({name}) {}{}",
                state.as_str(),
                pid.map(|p| format!(" pid {p}")).unwrap_or_default()
            )
        }
        EventKind::AgentExited {
            agent_id,
            name,
            run,
            exit_code,
            exit_signal,
            cause,
            uptime_ms,
            class,
        } => format!(
            "{agent_id} ({name}) run {run} ended: {} after {uptime_ms} ms ({cause:?}){}",
            exit_code
                .map(|c| format!("code {c}"))
                .or(exit_signal.clone())
                .unwrap_or_else(|| "unknown".into()),
            class
                .as_ref()
                .map(|c| format!(", {}: {}", c.class.as_str(), c.said))
                .unwrap_or_default()
        ),
        EventKind::AgentRestarted {
            agent_id,
            name,
            attempt,
            pid,
        } => format!("{agent_id} ({name}) restart {attempt}, pid {pid}"),
        EventKind::AgentAdopted {
            agent_id,
            name,
            run,
            pid,
            kept_bytes,
            dropped_bytes,
            ..
        } => format!(
            "{agent_id} ({name}) run {run} (pid {pid}) taken over from the keeper: {kept_bytes} bytes \
             written meanwhile kept, {dropped_bytes} dropped"
        ),
        EventKind::AgentBackoff {
            agent_id,
            name,
            delay_ms,
            ..
        } => format!("{agent_id} ({name}) restarting in {delay_ms} ms"),
        EventKind::AgentCrashedOut {
            agent_id,
            name,
            restarts_in_window,
            window_secs,
        } => {
            format!(
                "{agent_id} ({name}) crashed out after {restarts_in_window} restarts in {window_secs} s"
            )
        }
        EventKind::AgentSpawnFailed {
            agent_id,
            name,
            error,
        } => format!("{agent_id} ({name}): {error}"),
        EventKind::AgentUnsandboxed {
            agent_id,
            name,
            run,
            because,
        } => format!("{agent_id} ({name}) run {run} is UNSANDBOXED ({because})"),
        EventKind::SandboxBlock { block } => format!(
            "{} ({}) pid {}: blocked {}{}",
            block.agent_id,
            block.name,
            block.pid,
            block.summary,
            if block.suppressed > 0 {
                format!(" ({} more not shown)", block.suppressed)
            } else {
                String::new()
            }
        ),
        EventKind::ApprovalRequested { approval } => format!(
            "{} ({}) asks: {} [{}; expires {}]",
            approval.agent_id,
            approval.agent_name,
            approval.prompt,
            approval.id,
            celistra_core::clock::format_rfc3339_ms(approval.expires_at_ms)
        ),
        EventKind::ApprovalDecided { approval } => format!(
            "{} ({}) {}: {:?} by {}",
            approval.agent_id,
            approval.agent_name,
            approval.id,
            approval.status,
            approval.decided_by.as_deref().unwrap_or("-")
        ),
        EventKind::NotificationFailed {
            channel,
            approval_id,
            attempts,
            error,
        } => format!(
            "{channel} gave up{} after {attempts} attempts: {error}",
            approval_id
                .as_deref()
                .map(|id| format!(" on {id}"))
                .unwrap_or_default()
        ),
        EventKind::AuditVerifyFailed {
            first_bad_seq,
            problem,
        } => format!(
            "the audit log is altered{}: {problem}",
            first_bad_seq
                .map(|seq| format!(" from entry {seq}"))
                .unwrap_or_default()
        ),
        EventKind::SandboxSwitched {
            enabled,
            actor,
            actor_role,
        } => format!(
            "sandbox switched {} by {}",
            if *enabled { "on" } else { "OFF" },
            by(actor, *actor_role)
        ),
        EventKind::AgentRenamed {
            agent_id,
            old_name,
            new_name,
            actor,
            actor_role,
        } => format!(
            "{agent_id} {old_name} -> {new_name} by {}",
            by(actor, *actor_role)
        ),
        EventKind::AgentUpdated {
            agent_id,
            name,
            actor,
            actor_role,
        }
        | EventKind::AgentStopRequested {
            agent_id,
            name,
            actor,
            actor_role,
        }
        | EventKind::AgentStartRequested {
            agent_id,
            name,
            actor,
            actor_role,
        }
        | EventKind::AgentRemoved {
            agent_id,
            name,
            actor,
            actor_role,
        } => format!("{agent_id} ({name}) by {}", by(actor, *actor_role)),
        EventKind::AgentSignalled {
            agent_id,
            name,
            signal,
            actor,
            actor_role,
        } => format!("{agent_id} ({name}) {signal} by {}", by(actor, *actor_role)),
        EventKind::Resync { oldest_available } => {
            format!("events were missed; oldest kept is {oldest_available}")
        }
        EventKind::AgentActivity {
            agent_id,
            name,
            activity,
        } => format!(
            "{agent_id} ({name}) {} ({}: {})",
            activity.activity.as_str(),
            activity.evidence.signal,
            activity.evidence.said
        ),
        EventKind::AgentWaitingLimit {
            agent_id,
            name,
            limit,
        } => format!(
            "{agent_id} ({name}) waits on a usage limit until {}, then {}",
            limit.reset_at_ms.map_or_else(
                || "an unknown time".to_owned(),
                celistra_core::clock::format_rfc3339_ms
            ),
            limit.action
        ),
        EventKind::AgentModelErrorsExhausted {
            agent_id,
            name,
            model_errors,
            window_secs,
        } => format!(
            "{agent_id} ({name}) stopped after {model_errors} model errors in {window_secs} s"
        ),
        EventKind::AgentScheduled {
            agent_id,
            name,
            action,
            due_at_ms,
        } => format!(
            "{agent_id} ({name}) schedule due {}: {action}",
            celistra_core::clock::format_rfc3339_ms(*due_at_ms)
        ),
        EventKind::AgentWatchTriggered {
            agent_id,
            name,
            action,
            paths,
            changes,
            error,
        } => match error {
            Some(error) => format!("{agent_id} ({name}) watch {action}: {error}"),
            None => format!(
                "{agent_id} ({name}) {action} after {changes} file changes ({})",
                paths.join(", ")
            ),
        },
        EventKind::AgentReady {
            agent_id,
            name,
            run,
            ready,
            probe,
        } => format!(
            "{agent_id} ({name}) run {run} {}: {}",
            if *ready { "ready" } else { "not ready" },
            probe.message
        ),
        EventKind::AgentUnhealthy {
            agent_id,
            name,
            run,
            reason,
            ..
        } => format!("{agent_id} ({name}) run {run} restarted: {reason}"),
        EventKind::AgentMemoryRestart {
            agent_id,
            name,
            memory_bytes,
            limit_bytes,
        } => format!(
            "{agent_id} ({name}) memory {} above --max-memory {}: restarting",
            celistra_core::duration::format_bytes(*memory_bytes),
            celistra_core::duration::format_bytes(*limit_bytes)
        ),
    };
    format!(
        "{:>6}  {}  {:<20} {detail}",
        event.id,
        super::table::clock(event.time_ms),
        event.kind.name()
    )
}
