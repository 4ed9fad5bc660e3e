//! `GET /metrics`: the daemon in the Prometheus text format (0.0.4), for a scraper holding a
//! viewer token. Agents' states, restarts, CPU, memory and output are read from the registry when
//! scraped; latencies, dropped output and memory restarts come from `crate::metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use celistra_proto::{AgentState, AgentUsage};

use super::AppState;
use crate::metrics::{AgentCounters, CONTENT_TYPE, Exposition};

/// Every state, so a scrape shows zeros rather than missing series.
const STATES: [AgentState; 9] = [
    AgentState::Starting,
    AgentState::Running,
    AgentState::WaitingApproval,
    AgentState::Backoff,
    AgentState::Stopping,
    AgentState::Exited,
    AgentState::Failed,
    AgentState::Stopped,
    AgentState::CrashedOut,
];

/// What is known of one agent at a scrape.
struct AgentRow {
    id: String,
    name: String,
    restarts: u32,
    usage: Option<AgentUsage>,
    output_bytes: u64,
    counted: AgentCounters,
}

/// The per-agent families: name, type, help, and the agent's value (none: no sample yet).
type PerAgent = (
    &'static str,
    &'static str,
    &'static str,
    fn(&AgentRow) -> Option<f64>,
);

const PER_AGENT: [PerAgent; 6] = [
    (
        "celistra_agent_restarts_total",
        "counter",
        "Restarts of the agent since an operator last spawned or started it.",
        |row| Some(f64::from(row.restarts)),
    ),
    (
        "celistra_agent_cpu_seconds_total",
        "counter",
        "CPU time used by the agent's current run (cgroup, else process tree), as last sampled.",
        |row| row.usage.as_ref().map(|u| u.cpu_usec as f64 / 1e6),
    ),
    (
        "celistra_agent_memory_bytes",
        "gauge",
        "Memory used by the agent's processes, as last sampled.",
        |row| row.usage.as_ref().map(|u| u.memory_bytes as f64),
    ),
    (
        "celistra_agent_output_bytes_total",
        "counter",
        "Bytes of output read from the agent since the daemon started.",
        |row| Some(row.output_bytes as f64),
    ),
    (
        "celistra_agent_output_dropped_bytes_total",
        "counter",
        "Bytes of the agent's output not saved to the history (the writer fell behind or failed).",
        |row| Some(row.counted.dropped_bytes as f64),
    ),
    (
        "celistra_agent_memory_restarts_total",
        "counter",
        "Restarts because the agent's memory stayed above its memory_restart, since the daemon started.",
        |row| Some(row.counted.memory_restarts as f64),
    ),
];

/// The daemon's metrics in the Prometheus text exposition format 0.0.4: agents by state; per agent
/// (labels `agent_id`, `name`) restarts, CPU seconds and memory bytes (as last sampled, every
/// 2 s), output bytes read and dropped, memory restarts; audit entries; approval decision latency
/// and API request latency (per route template and method) histograms.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "get_metrics",
    tag = "daemon",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain", body = String))
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let supervisor = &state.supervisor;
    let mut out = Exposition::default();
    let agents = supervisor.oldest_first();
    let mut by_state: BTreeMap<&str, u64> = STATES.iter().map(|s| (s.as_str(), 0)).collect();
    for handle in &agents {
        *by_state.entry(handle.info().state.as_str()).or_default() += 1;
    }
    out.family("celistra_agents", "gauge", "Agents by state.");
    for (agent_state, count) in by_state {
        out.sample("celistra_agents", &[("state", agent_state)], count);
    }

    let rows: Vec<AgentRow> = agents
        .iter()
        .map(|handle| {
            let info = handle.info();
            AgentRow {
                id: handle.id.clone(),
                name: info.name.clone(),
                restarts: info.restarts,
                usage: handle.sampled().clone(),
                output_bytes: handle.output_bytes.load(Ordering::Relaxed),
                counted: supervisor.services.metrics.agent(&handle.id),
            }
        })
        .collect();
    for (name, kind, help, value) in PER_AGENT {
        out.family(name, kind, help);
        for row in &rows {
            if let Some(value) = value(row) {
                out.sample(name, &[("agent_id", &row.id), ("name", &row.name)], value);
            }
        }
    }

    out.family(
        "celistra_audit_entries_total",
        "counter",
        "Entries in the audit log.",
    );
    out.sample(
        "celistra_audit_entries_total",
        &[],
        supervisor.services.audit.health().entries,
    );
    supervisor.services.metrics.write_latencies(&mut out);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], out.into_text())
}
