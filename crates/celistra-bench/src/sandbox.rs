//! Sandbox phases: what confinement costs per spawn, sandboxed vs. `privileged` (the spawn request's
//! answer, which for a sandboxed agent comes once its program runs inside the sandbox; and spawn to
//! exit of `true`, so the sandbox's teardown counts too), and 100 sandboxed agents started together
//! until each one's command is running.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use celistra_proto::{AgentInfo, AgentSpec, EventsQuery};

use crate::{Daemon, Report, median_p95, ms, phase};

/// Samples per kind of spawn.
const SPAWN_SAMPLES: usize = 50;

pub(crate) async fn phases(binary: &Path, report: &mut Report) -> Vec<Result<()>> {
    vec![
        phase("sandboxed spawn", spawn_cost(binary, report)).await,
        phase(
            "100 sandboxed",
            many_sandboxed(binary, report, 100, Duration::from_millis(200)),
        )
        .await,
        phase(
            "1000 sandboxed",
            many_sandboxed(binary, report, 1000, Duration::from_secs(2)),
        )
        .await,
        phase(
            "sandboxed restart",
            crate::restart_latency(binary, report, true),
        )
        .await,
    ]
}

/// Median time of `POST /v1/agents` of a `sleep` agent: the daemon answers once the spawn is done,
/// for a sandboxed agent once its program started inside the sandbox.
async fn spawn_answer(daemon: &Daemon, capabilities: &[&str], tag: &str) -> Result<Duration> {
    let client = daemon.client();
    let mut samples = Vec::with_capacity(SPAWN_SAMPLES);
    let mut spawned = Vec::with_capacity(SPAWN_SAMPLES);
    for i in 0..SPAWN_SAMPLES {
        let spec = AgentSpec {
            name: format!("{tag}-{i}"),
            command: "exec sleep 600".into(),
            workspace: Some(daemon.work().display().to_string()),
            capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect(),
            ..AgentSpec::default()
        };
        let started = Instant::now();
        let agent: AgentInfo = client.spawn_agent(&spec).await?;
        samples.push(started.elapsed());
        if let Some(error) = agent.last_error {
            bail!("spawn failed: {error}");
        }
        spawned.push(agent.id);
    }
    // Removed after the samples: a sandbox's teardown would otherwise overlap the next spawn.
    for id in spawned {
        client
            .remove_agent(&id, &celistra_proto::RemoveQuery::default())
            .await?;
    }
    Ok(median_p95(samples).0)
}

/// Median time from `POST /v1/agents` of a `true` agent to its `agent_exited` event.
async fn spawn_to_exit(daemon: &Daemon, capabilities: &[&str], tag: &str) -> Result<Duration> {
    let client = daemon.client();
    let mut events = client.stream_events(&EventsQuery::default()).await?;
    let mut samples = Vec::with_capacity(SPAWN_SAMPLES);
    for i in 0..SPAWN_SAMPLES {
        let spec = AgentSpec {
            name: format!("{tag}-{i}"),
            command: "true".into(),
            workspace: Some(daemon.work().display().to_string()),
            capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect(),
            ..AgentSpec::default()
        };
        let started = Instant::now();
        let agent: AgentInfo = client.spawn_agent(&spec).await?;
        if let Some(error) = agent.last_error {
            bail!("spawn failed: {error}");
        }
        'events: loop {
            let frame = events.next_frame().await?.context("event stream ended")?;
            if frame.event.as_deref() == Some("agent_exited") {
                let data: serde_json::Value = serde_json::from_str(&frame.data)?;
                if data["agent_id"] == agent.id.as_str() {
                    if data["exit_code"] != 0 {
                        bail!("`true` failed in {tag}: {data}");
                    }
                    break 'events;
                }
            }
        }
        samples.push(started.elapsed());
    }
    Ok(median_p95(samples).0)
}

async fn spawn_cost(binary: &Path, report: &mut Report) -> Result<()> {
    let daemon = Daemon::start(binary, None).await?;
    // Alternate the kinds so drift in machine load hits both alike.
    let (mut boxed_spawn, mut plain_spawn, mut boxed_run, mut plain_run) =
        (vec![], vec![], vec![], vec![]);
    for round in 0..3 {
        boxed_spawn.push(spawn_answer(&daemon, &[], &format!("bs{round}")).await?);
        plain_spawn.push(spawn_answer(&daemon, &["privileged"], &format!("ps{round}")).await?);
        boxed_run.push(spawn_to_exit(&daemon, &[], &format!("br{round}")).await?);
        plain_run.push(spawn_to_exit(&daemon, &["privileged"], &format!("pr{round}")).await?);
    }
    let compare = |boxed: Vec<Duration>, plain: Vec<Duration>| {
        let (boxed, plain) = (median_p95(boxed).0, median_p95(plain).0);
        let added = boxed.saturating_sub(plain);
        let text = format!(
            "{:.1} ms vs {:.1} ms: +{:.1} ms",
            ms(boxed),
            ms(plain),
            ms(added)
        );
        (text, added)
    };
    let (text, added) = compare(boxed_spawn, plain_spawn);
    report.add(
        "spawn until the program runs, sandboxed vs unsandboxed (median of 3×50)",
        "sandbox adds <= 10 ms",
        text,
        Some(added <= Duration::from_millis(10)),
    );
    let (text, _) = compare(boxed_run, plain_run);
    report.add(
        "spawn to exit of `true` (setup and teardown), sandboxed vs unsandboxed",
        "none",
        text,
        None,
    );
    Ok(())
}

/// `count` sandboxed `sleep` agents created in one apply: the time until every command runs inside
/// its sandbox, and what the sandboxes and the daemon with everything it starts cost in memory.
async fn many_sandboxed(
    binary: &Path,
    report: &mut Report,
    count: usize,
    start_target: Duration,
) -> Result<()> {
    let mut daemon = Daemon::start(binary, None).await?;
    let tag = format!("{}", 700_000 + std::process::id() % 100_000);
    let agents = (0..count)
        .map(|i| AgentSpec {
            name: format!("boxed-{i:04}"),
            command: format!("exec sleep {tag}"),
            workspace: Some(daemon.work().display().to_string()),
            ..AgentSpec::default()
        })
        .collect();
    let keeper = crate::upgrade::keeper_pid(&daemon)?;
    let mut inside = Inside::new(keeper, &tag);
    // Watched from /proc alone, as `../shared/bench` watches its peers: asking the daemon for its
    // list of agents every few milliseconds would load the daemon being measured.
    let started = Instant::now();
    daemon.create_all(agents).await?;
    while inside.count() < count {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let all_inside = started.elapsed();
    daemon.wait_running(count).await?;
    let all_running = started.elapsed();
    report.add(
        &format!("{count} sandboxed agents started together (until every command runs inside)"),
        &format!("<= {:.1} s", start_target.as_secs_f64()),
        format!(
            "{:.0} ms (all listed `running` by {:.0} ms)",
            ms(all_inside),
            ms(all_running)
        ),
        Some(all_inside <= start_target),
    );
    let runs: Vec<u32> = daemon
        .agents()
        .await?
        .iter()
        .filter_map(|a| a.pid)
        .collect();
    let per_agent = crate::sandbox_pss(&runs)? as f64 / runs.len() as f64;
    report.add(
        &format!("the sandbox's own processes, PSS per agent ({count} sandboxed)"),
        "<= 100 KiB",
        format!("{per_agent:.1} KiB"),
        Some(per_agent <= 100.0),
    );
    let total = crate::tree_pss_without_programs(&[daemon.pid, keeper], &runs)?;
    report.add(
        &format!("daemon, keeper and every sandbox, PSS ({count} sandboxed, programs not counted)"),
        "1000: < 38 MiB (supervisord's RSS)",
        format!("{:.1} MiB", total as f64 / 1024.0),
        (count == 1000).then_some(total < 38 * 1024),
    );
    // As an idle daemon's RSS is read: once the start's burst is over and its memory given back.
    tokio::time::sleep(crate::SETTLED).await;
    let settled = crate::tree_pss_without_programs(&[daemon.pid, keeper], &runs)?;
    report.add(
        &format!(
            "the same, {} s later ({count} sandboxed)",
            crate::SETTLED.as_secs()
        ),
        "1000: < 38 MiB (supervisord's RSS)",
        format!("{:.1} MiB", settled as f64 / 1024.0),
        (count == 1000).then_some(settled < 38 * 1024),
    );
    Ok(())
}

/// Counts the agents whose command runs inside its sandbox: the keeper's children are the
/// sandboxes' inits, and an init's child running `sleep TAG` is its agent's command. An init once
/// counted is not read again, so a scan costs what is still starting, not what already runs.
struct Inside {
    keeper: u32,
    wanted: Vec<u8>,
    counted: HashSet<u32>,
}

impl Inside {
    fn new(keeper: u32, tag: &str) -> Inside {
        Inside {
            keeper,
            wanted: format!("sleep\0{tag}\0").into_bytes(),
            counted: HashSet::new(),
        }
    }

    fn count(&mut self) -> usize {
        for init in children(self.keeper) {
            if self.counted.contains(&init) {
                continue;
            }
            let runs_inside = children(init).into_iter().any(|program| {
                std::fs::read(format!("/proc/{program}/cmdline"))
                    .is_ok_and(|cmdline| cmdline == self.wanted)
            });
            if runs_inside {
                self.counted.insert(init);
            }
        }
        self.counted.len()
    }
}

/// The children of every thread of `pid` (none once it is gone).
fn children(pid: u32) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"));
    tasks
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|child| child.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}
