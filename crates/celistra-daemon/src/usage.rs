//! The usage sampler: one task for all agents that, every [`SAMPLE_INTERVAL`], reads each live
//! agent's CPU time and memory (its cgroup, else its process tree from one walk of `/proc`; the
//! reading is `celistra_sandbox`'s), keeps the reading in the agent's handle (`GET /v1/usage`,
//! `/metrics`) and its info (`AgentInfo.usage`: `ls`, `status`, `top`), and restarts an agent whose
//! memory stays above its `memory_restart` for [`SAMPLES_ABOVE`] samples in a row, as the actor
//! `memory`: an `agent_memory_restart` event (so an audit entry), a note on the agent's history,
//! then the registry's own `restart`, which counts in `restarts` but not toward the restart
//! ceiling (PM2 counts its memory restarts the same way: not as unstable restarts).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use celistra_core::duration::format_bytes;
use celistra_core::logtext::Stream;
use celistra_proto::{AgentState, AgentUsage, EventKind, Usage};
use celistra_sandbox::{ProcessTable, ResourceUse, UsageScope, cgroup_use};

use crate::actor::Actor;
use crate::now_ms;
use crate::supervisor::{AgentHandle, Supervisor};

/// How often every agent is sampled: often enough that `ctl top` moves and a runaway agent is
/// caught within seconds, rarely enough to cost nothing measurable (BENCHMARKS.md, "Resource
/// sampling").
pub(crate) const SAMPLE_INTERVAL: Duration = Duration::from_secs(2);

/// Samples in a row above `memory_restart` before the agent is restarted: a single spike (a
/// build step, a burst) does not restart it; memory that stays does.
pub(crate) const SAMPLES_ABOVE: u32 = 2;

/// What the sampler remembers of an agent between two samples.
#[derive(Debug)]
struct Previous {
    run: u64,
    at: Instant,
    cpu_usec: u64,
    /// Samples in a row above `memory_restart`.
    above: u32,
    /// The run a memory restart was already asked for.
    restarting: bool,
}

/// Samples every agent every [`SAMPLE_INTERVAL`] while the supervisor lives and has agents.
pub(crate) async fn run(supervisor: Weak<Supervisor>) {
    let mut every = tokio::time::interval(SAMPLE_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous: HashMap<String, Previous> = HashMap::new();
    let Some(mut count) = supervisor.upgrade().map(|s| s.agent_count()) else {
        return;
    };
    while crate::supervisor::some_agents(&mut count).await {
        every.tick().await;
        let Some(supervisor) = supervisor.upgrade() else {
            return;
        };
        sample(&supervisor, &mut previous);
    }
}

/// One sample of every agent.
fn sample(supervisor: &Arc<Supervisor>, previous: &mut HashMap<String, Previous>) {
    let handles = supervisor.handles();
    let cgroups = supervisor.services.cgroups.as_ref().map(|c| c.path());
    // The walk of /proc is made once, and only when some live agent has no cgroup to read.
    let mut processes: Option<ProcessTable> = None;
    let now = now_ms();
    let mut seen = Vec::with_capacity(handles.len());
    for handle in handles {
        let (pid, run, state) = {
            let info = handle.info();
            (info.pid, info.run, info.state)
        };
        let Some(pid) = pid else {
            if handle.info().usage.is_some() {
                handle.info_mut().usage = None;
            }
            *handle.sampled() = None;
            continue;
        };
        let cgroup_reading = cgroups
            .map(|root| root.join(&handle.id))
            .and_then(|dir| cgroup_use(&dir));
        let (reading, scope) = match cgroup_reading {
            Some(reading) => (Some(reading), UsageScope::Cgroup),
            None => (
                processes
                    .get_or_insert_with(ProcessTable::scan)
                    .tree_use(pid),
                UsageScope::ProcessTree,
            ),
        };
        let Some(reading) = reading else {
            continue;
        };
        seen.push(handle.id.clone());
        // Only a run that is up is restarted: one being stopped or started is left to that.
        let up = matches!(state, AgentState::Running | AgentState::WaitingApproval);
        let cpu_percent = record(supervisor, &handle, previous, run, up, reading);
        *handle.sampled() = Some(AgentUsage {
            agent_id: handle.id.clone(),
            cpu_usec: reading.cpu_usec,
            memory_bytes: reading.memory_bytes,
            scope: scope.as_str().to_owned(),
            time_ms: now,
            cpu_percent,
        });
        let usage = Some(Usage {
            cpu_percent: cpu_percent.unwrap_or(0.0),
            memory_bytes: reading.memory_bytes,
        });
        // Written only when it changed: a write drops the agent's cached JSON, which `ls` of
        // many (mostly idle) agents reuses.
        if handle.info().usage != usage {
            handle.info_mut().usage = usage;
        }
    }
    previous.retain(|id, _| seen.contains(id));
}

/// Compares a reading with the agent's previous one: its CPU load, and whether its memory has now
/// stayed above its `memory_restart` long enough to restart it (when its run is `up`).
fn record(
    supervisor: &Arc<Supervisor>,
    handle: &Arc<AgentHandle>,
    previous: &mut HashMap<String, Previous>,
    run: u64,
    up: bool,
    reading: ResourceUse,
) -> Option<f32> {
    let now = Instant::now();
    let fresh = Previous {
        run,
        at: now,
        cpu_usec: reading.cpu_usec,
        above: 0,
        restarting: false,
    };
    let entry = previous.entry(handle.id.clone()).or_insert(fresh);
    let cpu_percent = (entry.run == run && entry.at < now).then(|| {
        let elapsed_usec = now.duration_since(entry.at).as_micros() as f64;
        let used_usec = reading.cpu_usec.saturating_sub(entry.cpu_usec) as f64;
        (used_usec / elapsed_usec * 1000.0).round() as f32 / 10.0
    });
    if entry.run != run {
        entry.above = 0;
        entry.restarting = false;
    }
    entry.run = run;
    entry.at = now;
    entry.cpu_usec = reading.cpu_usec;
    let limit = handle.spec().memory_restart;
    match limit {
        Some(limit) if reading.memory_bytes > limit => entry.above += 1,
        _ => entry.above = 0,
    }
    if let Some(limit) = limit
        && entry.above >= SAMPLES_ABOVE
        && up
        && !entry.restarting
    {
        entry.restarting = true;
        restart_for_memory(supervisor, handle, reading.memory_bytes, limit);
    }
    cpu_percent
}

/// Records why, then restarts the agent gracefully (in its own task: the restart waits for the
/// agent's grace period, and other agents' samples do not).
fn restart_for_memory(
    supervisor: &Arc<Supervisor>,
    handle: &Arc<AgentHandle>,
    memory_bytes: u64,
    limit_bytes: u64,
) {
    let name = handle.info().name.clone();
    tracing::info!(
        agent = %handle.id,
        memory_bytes,
        limit_bytes,
        "memory stayed above memory_restart: restarting"
    );
    let note = format!(
        "celistra: restarting: memory {} stayed above --max-memory {} for {SAMPLES_ABOVE} samples \
         ({} s apart)\n",
        format_bytes(memory_bytes),
        format_bytes(limit_bytes),
        SAMPLE_INTERVAL.as_secs()
    );
    let agent_id: Arc<str> = Arc::from(handle.id.as_str());
    supervisor.services.history.append(
        &agent_id,
        handle.history_run.load(std::sync::atomic::Ordering::SeqCst),
        Stream::Sandbox,
        now_ms(),
        bytes::Bytes::from(note),
    );
    supervisor
        .services
        .events
        .publish(EventKind::AgentMemoryRestart {
            agent_id: handle.id.clone(),
            name,
            memory_bytes,
            limit_bytes,
        });
    let supervisor = Arc::clone(supervisor);
    let id = handle.id.clone();
    tokio::spawn(async move {
        if let Err(e) = supervisor.restart(&id, &Actor::memory()).await {
            tracing::warn!(agent = %id, "memory restart: {}", e.message);
        }
    });
}
