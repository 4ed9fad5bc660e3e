//! Monitoring phases: what watching idle agents costs the daemon. A daemon with no agent, then
//! with N idle agents (1000 by default), then with N agents that each carry extra settings
//! (`--agent-spec-json`, by default a `memory_restart` threshold they never reach), each measured
//! as the daemon's CPU time per second of wall time over a window (`/proc/PID/stat`, every
//! thread). The usage sampler runs in all three; the settings run adds what those settings cost
//! (the memory check, or probes when given them).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use celistra_proto::AgentSpec;

use crate::{Daemon, Report, ms, phase_within, sleepers};

/// What `--only monitor` is asked to measure.
#[derive(Debug, Clone)]
pub(crate) struct MonitorOptions {
    pub agents: usize,
    /// Merged into every agent's spec for the second run (JSON object of `AgentSpec` fields).
    pub agent_spec_json: serde_json::Value,
    /// How long the daemon's CPU is measured, per run.
    pub window: Duration,
}

impl Default for MonitorOptions {
    fn default() -> MonitorOptions {
        MonitorOptions {
            agents: 1000,
            agent_spec_json: serde_json::json!({ "memory_restart": 1u64 << 30 }),
            window: Duration::from_secs(30),
        }
    }
}

/// Time to let a daemon settle after its agents run (spawn work, first samples) before measuring.
const SETTLE: Duration = Duration::from_secs(5);

pub(crate) async fn phases(
    binary: &Path,
    options: &MonitorOptions,
    report: &mut Report,
) -> Vec<Result<()>> {
    let limit = options.window * 4 + Duration::from_secs(240);
    vec![
        phase_within(
            limit,
            "monitoring cost",
            monitoring(binary, options, report),
        )
        .await,
    ]
}

/// `sleepers(count)` with `extra` merged into each spec; a field `AgentSpec` does not have is an
/// error naming it.
fn with_settings(count: usize, extra: &serde_json::Value) -> Result<Vec<AgentSpec>> {
    let extra = extra
        .as_object()
        .context("--agent-spec-json must be a JSON object of AgentSpec fields")?;
    sleepers(count)
        .into_iter()
        .map(|spec| {
            let mut value = serde_json::to_value(spec)?;
            for (field, setting) in extra {
                value[field] = setting.clone();
            }
            serde_json::from_value(value).context("--agent-spec-json does not fit an AgentSpec")
        })
        .collect()
}

async fn monitoring(binary: &Path, options: &MonitorOptions, report: &mut Report) -> Result<()> {
    let n = options.agents;
    let idle = daemon_cpu(binary, vec![], options.window).await?;
    report.add(
        "daemon CPU, no agents",
        "none",
        format!("{:.2} ms/s ({})", idle.ms_per_sec, idle.cgroups),
        None,
    );
    let plain = daemon_cpu(binary, sleepers(n), options.window).await?;
    report.add(
        &format!("daemon CPU, {n} idle agents (usage sampled every 2 s)"),
        "none",
        format!(
            "{:.2} ms/s, {:.2} µs/s per agent over no agents ({})",
            plain.ms_per_sec,
            (plain.ms_per_sec - idle.ms_per_sec) * 1000.0 / n as f64,
            plain.cgroups
        ),
        None,
    );
    let settings = daemon_cpu(
        binary,
        with_settings(n, &options.agent_spec_json)?,
        options.window,
    )
    .await?;
    let added = settings.ms_per_sec - plain.ms_per_sec;
    report.add(
        &format!(
            "daemon CPU, {n} idle agents with {}",
            options.agent_spec_json
        ),
        "no measurable cost (within the runs' noise)",
        format!(
            "{:.2} ms/s ({added:+.2} ms/s, {:+.2} µs/s per agent, over the same agents without)",
            settings.ms_per_sec,
            added * 1000.0 / n as f64
        ),
        None,
    );
    Ok(())
}

/// One run's measure.
struct Measured {
    /// Daemon CPU time per second of wall time, in ms (1000 is one core busy).
    ms_per_sec: f64,
    /// Whether agents had cgroups (`cgroups`) or were read from `/proc` (`/proc`).
    cgroups: &'static str,
}

/// Starts a daemon with `agents`, waits until they run and settle, then measures its CPU time
/// over `window`.
async fn daemon_cpu(binary: &Path, agents: Vec<AgentSpec>, window: Duration) -> Result<Measured> {
    let mut daemon = Daemon::start(binary, None).await?;
    let count = agents.len();
    if count > 0 {
        daemon.create_all(agents).await?;
        daemon.wait_running(count).await?;
    }
    let cgroups = if daemon.client().get_health().await?.cgroups {
        "cgroups"
    } else {
        "/proc"
    };
    tokio::time::sleep(SETTLE).await;
    let (cpu_before, started) = (daemon.cpu_time()?, Instant::now());
    tokio::time::sleep(window).await;
    let (cpu_after, elapsed) = (daemon.cpu_time()?, started.elapsed());
    let used = cpu_after.saturating_sub(cpu_before);
    Ok(Measured {
        ms_per_sec: ms(used) / elapsed.as_secs_f64(),
        cgroups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_settings_are_merged_into_every_spec_and_unknown_fields_refused() {
        let specs = with_settings(2, &serde_json::json!({ "memory_restart": 1024 })).expect("ok");
        assert!(specs.iter().all(|s| s.memory_restart == Some(1024)));
        assert!(with_settings(1, &serde_json::json!({ "no_such_field": 1 })).is_err());
        assert!(with_settings(1, &serde_json::json!([1])).is_err());
    }
}
