//! Health and order flags of `spawn` and `set` (`--ready-*`, `--live-*`, `--probe-*`,
//! `--start-secs`, `--depends-on`, and `set`'s `--no-ready` / `--no-live` / `--no-depends-on`),
//! and how `status` shows probes, readiness and what an agent waits for.

use celistra_core::duration::parse_millis;
use celistra_proto::{
    AgentInfo, Dependency, DependencyCondition, Probe, ProbeStatus, UpdateRequest,
};
use clap::Args;

use super::Failure;
use super::table::{compact_duration, now_ms};

/// Probes, the start window and dependencies, shared by `spawn` and `set`.
#[derive(Debug, Args)]
pub(crate) struct HealthArgs {
    /// Ready when a GET of this http:// URL answers 2xx or 3xx.
    #[arg(long, value_name = "URL", group = "ready")]
    ready_http: Option<String>,
    /// Ready when HOST:PORT accepts a TCP connection.
    #[arg(long, value_name = "HOST:PORT", group = "ready")]
    ready_tcp: Option<String>,
    /// Ready when this command (run the way the agent runs) exits 0.
    #[arg(long, value_name = "COMMAND", group = "ready")]
    ready_cmd: Option<String>,
    /// Ready once the agent prints a line containing this text (or matching /REGEX/).
    #[arg(long, value_name = "PATTERN", group = "ready")]
    ready_line: Option<String>,
    /// Restart the agent when a GET of this http:// URL keeps failing (--probe-failures in a row).
    #[arg(long, value_name = "URL", group = "live")]
    live_http: Option<String>,
    /// Restart the agent when HOST:PORT keeps refusing connections.
    #[arg(long, value_name = "HOST:PORT", group = "live")]
    live_tcp: Option<String>,
    /// Restart the agent when this command keeps exiting non-zero.
    #[arg(long, value_name = "COMMAND", group = "live")]
    live_cmd: Option<String>,
    /// Time between checks of the probes given with it [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = parse_millis)]
    probe_interval: Option<u64>,
    /// Longest a check may take [default: 2s].
    #[arg(long, value_name = "DURATION", value_parser = parse_millis)]
    probe_timeout: Option<u64>,
    /// Failures in a row that make an agent not ready, or restart it [default: 3].
    #[arg(long, value_name = "N")]
    probe_failures: Option<u32>,
    /// Wait this long after a start before the first check [default: 0s].
    #[arg(long, value_name = "DURATION", value_parser = parse_millis)]
    probe_delay: Option<u64>,
    /// Start-success window in seconds (supervisord startsecs, PM2 min_uptime): a run that ends
    /// sooner is a failed start, retried within the restart ceiling. On `set`, 0 removes it.
    #[arg(long, value_name = "SECONDS")]
    start_secs: Option<u64>,
    /// Start only once AGENT is started, ready (the default) or completed (exited 0); stop
    /// before it (repeatable). On `set`, replaces the list.
    #[arg(long = "depends-on", value_name = "AGENT[:started|ready|completed]", value_parser = parse_dependency)]
    depends_on: Vec<Dependency>,
}

/// `set`'s flags that remove probes and dependencies.
#[derive(Debug, Args)]
pub(crate) struct ClearHealthArgs {
    /// Remove the readiness probe.
    #[arg(long, conflicts_with = "ready")]
    no_ready: bool,
    /// Remove the liveness probe.
    #[arg(long, conflicts_with = "live")]
    no_live: bool,
    /// Remove every dependency.
    #[arg(long, conflicts_with = "depends_on")]
    no_depends_on: bool,
}

/// `db:ready` → wait for `db` to be ready.
fn parse_dependency(text: &str) -> Result<Dependency, String> {
    let (agent, condition) = match text.split_once(':') {
        Some((agent, condition)) => (
            agent,
            DependencyCondition::parse(condition).ok_or_else(|| {
                format!("unknown condition `{condition}`; use started, ready or completed")
            })?,
        ),
        None => (text, DependencyCondition::default()),
    };
    Ok(Dependency {
        agent: agent.to_owned(),
        condition,
    })
}

impl HealthArgs {
    /// Puts the flags given into `update`.
    pub(crate) fn fill(&self, update: &mut UpdateRequest) -> Result<(), Failure> {
        let readiness = self.probe(
            self.ready_http.clone(),
            self.ready_tcp.clone(),
            self.ready_cmd.clone(),
            self.ready_line.clone(),
        );
        let liveness = self.probe(
            self.live_http.clone(),
            self.live_tcp.clone(),
            self.live_cmd.clone(),
            None,
        );
        let timing_given = self.probe_interval.is_some()
            || self.probe_timeout.is_some()
            || self.probe_failures.is_some()
            || self.probe_delay.is_some();
        if timing_given && readiness.is_none() && liveness.is_none() {
            return Err(Failure::Usage(
                "--probe-interval, --probe-timeout, --probe-failures and --probe-delay apply to \
                 the probes given with them; add --ready-… or --live-…"
                    .into(),
            ));
        }
        update.readiness = readiness;
        update.liveness = liveness;
        update.start_secs = self.start_secs;
        update.depends_on = (!self.depends_on.is_empty()).then(|| self.depends_on.clone());
        Ok(())
    }

    fn probe(
        &self,
        http: Option<String>,
        tcp: Option<String>,
        exec: Option<String>,
        line: Option<String>,
    ) -> Option<Probe> {
        if http.is_none() && tcp.is_none() && exec.is_none() && line.is_none() {
            return None;
        }
        Some(Probe {
            exec,
            http,
            tcp,
            line,
            interval_ms: self.probe_interval,
            timeout_ms: self.probe_timeout,
            failure_threshold: self.probe_failures,
            initial_delay_ms: self.probe_delay,
        })
    }
}

impl ClearHealthArgs {
    pub(crate) fn fill(&self, update: &mut UpdateRequest) {
        update.clear_readiness = self.no_ready;
        update.clear_liveness = self.no_live;
        if self.no_depends_on {
            update.depends_on = Some(vec![]);
        }
    }
}

/// The agents `keys` names, in waves to stop one after the other: dependents before what they
/// depend on (among those named). Agents of other machines are stopped as given, in one wave.
pub(crate) async fn stop_waves(
    client: &celistra_client::Client,
    keys: &[String],
) -> Result<Vec<Vec<String>>, Failure> {
    if keys.len() < 2 || keys.iter().any(|key| key.contains('/')) || client.machine().is_some() {
        return Ok(vec![keys.to_vec()]);
    }
    let agents: Vec<AgentInfo> = client.list_agents().await?;
    let named: Vec<(&String, &AgentInfo)> = keys
        .iter()
        .filter_map(|key| {
            let agent = agents.iter().find(|a| &a.id == key || &a.name == key)?;
            Some((key, agent))
        })
        .collect();
    if named.len() < keys.len() {
        // An unknown name gets its own error from the daemon.
        return Ok(vec![keys.to_vec()]);
    }
    let graph = celistra_core::depends::graph(
        named
            .iter()
            .map(|(_, a)| (a.name.as_str(), a.depends_on.as_slice())),
    );
    Ok(celistra_core::depends::stop_waves(&graph)
        .into_iter()
        .map(|wave| {
            named
                .iter()
                .filter(|(_, a)| wave.contains(&a.name))
                .map(|(key, _)| (*key).clone())
                .collect()
        })
        .collect())
}

/// `status`'s lines about readiness, probes and what the agent waits for (none when it has
/// neither probes nor dependencies).
pub(crate) fn status_lines(agent: &AgentInfo) -> Vec<(&'static str, String)> {
    let mut lines = vec![];
    if let Some(waiting_for) = &agent.waiting_for {
        lines.push(("waiting for", waiting_for.clone()));
    }
    if let Some(ready) = agent.ready {
        lines.push(("ready", if ready { "yes" } else { "no" }.to_owned()));
    }
    for (label, status) in [
        ("readiness", &agent.readiness),
        ("liveness", &agent.liveness),
    ] {
        if let Some(status) = status {
            lines.push((label, probe_text(status)));
        }
    }
    lines
}

/// `ok: HTTP 200 (3s ago)`, `FAILING ×2: connection refused (1s ago)`.
fn probe_text(status: &ProbeStatus) -> String {
    let ago = compact_duration(now_ms().saturating_sub(status.at_ms));
    if status.ok {
        format!("ok: {} ({ago} ago)", status.message)
    } else {
        format!(
            "FAILING ×{}: {} ({ago} ago)",
            status.failures, status.message
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dependency_reads_agent_and_condition_with_ready_by_default() {
        let db = parse_dependency("db").unwrap();
        assert_eq!(
            (db.agent.as_str(), db.condition),
            ("db", DependencyCondition::Ready)
        );
        let migrate = parse_dependency("migrate:completed").unwrap();
        assert_eq!(migrate.condition, DependencyCondition::Completed);
        assert!(
            parse_dependency("db:healthy")
                .unwrap_err()
                .contains("started, ready or completed")
        );
    }
}
