//! Upgrade in place with 100 agents (issue 18): SIGHUP until `/v1/health` answers with a new
//! `started_at_ms`, the gap an attached terminal sees and the lines it loses, every line kept once
//! in the history, and the memory of the keeper that holds the agents' terminals.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use celistra_client::{Client, TerminalEvent};
use celistra_proto::{AgentSpec, LogsQuery, TerminalRole};
use rustix::process::{Pid, Signal};

use crate::{Daemon, Report, median_p95, mib, ms, phase_within, proc_kib, sleeper};

/// Agents running while the daemon upgrades.
const AGENTS: usize = 100;
/// Upgrades (SIGHUP) measured.
const UPGRADES: usize = 5;
/// Each agent writes a numbered line this often.
const LINE_EVERY: Duration = Duration::from_millis(10);
/// How many agents' histories are checked line by line.
const HISTORIES: usize = 5;
/// How often `/v1/health` is polled after the signal.
const POLL: Duration = Duration::from_millis(1);
/// A health poll unanswered this long is given up on.
const POLL_LIMIT: Duration = Duration::from_millis(500);
/// Time between upgrades, for the terminal to reconnect and catch up.
const SETTLE: Duration = Duration::from_secs(1);
/// Upper bound of the phase: 100 agents, `UPGRADES` upgrades and the checks.
const UPGRADE_PHASE_TIMEOUT: Duration = Duration::from_secs(240);
/// Upper bound of one upgrade until the daemon and the terminal answer again.
const UPGRADE_WAIT: Duration = Duration::from_secs(30);

/// The agents' program, `celistra-bench count`: `line 1`, `line 2`, … one every `LINE_EVERY`,
/// until the terminal goes away. A shell loop (`echo; sleep 0.01`) would fork 10,000 times a
/// second for 100 agents, which on two cores starves the daemon for tens of seconds.
pub(crate) fn count() -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    for i in 1_u64.. {
        writeln!(out, "line {i}")?;
        out.flush()?;
        std::thread::sleep(LINE_EVERY);
    }
    Ok(())
}

/// Runs the upgrade phase; one result.
pub(crate) async fn phases(binary: &Path, report: &mut Report) -> Vec<Result<()>> {
    vec![
        phase_within(
            UPGRADE_PHASE_TIMEOUT,
            "upgrade, 100 agents",
            upgrades(binary, report),
        )
        .await,
    ]
}

/// What the terminal watcher saw, shared with the phase.
#[derive(Default)]
struct Seen {
    /// Every line number received, replays de-duplicated.
    lines: BTreeSet<u64>,
    /// When each frame that brought a line number never seen before arrived.
    fresh: Vec<Instant>,
    /// Connections that ended, and attaches that failed before one succeeded.
    drops: u64,
    failed_attaches: u64,
    /// Complete lines that are not `line N`.
    malformed: u64,
}

impl Seen {
    /// Takes one complete line (without `\n`); whether it was a number never seen before.
    fn line(&mut self, line: &[u8]) -> bool {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.strip_prefix("line "))
            .and_then(|n| n.parse().ok())
        {
            Some(n) => self.lines.insert(n),
            None => {
                self.malformed += 1;
                false
            }
        }
    }

    /// Numbers missing between the first and the last line seen.
    fn missing(&self) -> Vec<u64> {
        let (Some(&first), Some(&last)) = (self.lines.first(), self.lines.last()) else {
            return vec![];
        };
        (first..=last).filter(|n| !self.lines.contains(n)).collect()
    }

    /// The longest time between two frames with new lines from `from` on (the frame before
    /// `from` included): what a viewer saw of an upgrade starting at `from`.
    fn gap_since(&self, from: Instant) -> Option<Duration> {
        let start = self.fresh.iter().rposition(|&t| t < from)?;
        self.fresh[start..]
            .windows(2)
            .map(|pair| pair[1] - pair[0])
            .max()
    }
}

/// A viewer of `agent`'s terminal that attaches again (every 1 ms) whenever the connection ends.
async fn watch(client: Client, agent: String, seen: Arc<Mutex<Seen>>) {
    loop {
        let mut terminal = match client.attach(&agent, TerminalRole::Viewer).await {
            Ok(terminal) => terminal,
            Err(_) => {
                seen.lock().expect("not poisoned").failed_attaches += 1;
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        // The replay starts at a line start; a line cut by the drop is not counted.
        let mut partial = Vec::new();
        loop {
            match terminal.next().await {
                TerminalEvent::Output(bytes) => {
                    let now = Instant::now();
                    let mut seen = seen.lock().expect("not poisoned");
                    let mut fresh = false;
                    let mut rest = &bytes[..];
                    while let Some(end) = memchr::memchr(b'\n', rest) {
                        if partial.is_empty() {
                            fresh |= seen.line(&rest[..end]);
                        } else {
                            partial.extend_from_slice(&rest[..end]);
                            fresh |= seen.line(&partial);
                            partial.clear();
                        }
                        rest = &rest[end + 1..];
                    }
                    partial.extend_from_slice(rest);
                    if fresh {
                        seen.fresh.push(now);
                    }
                }
                TerminalEvent::Control(_) => {}
                TerminalEvent::Closed { .. } => {
                    seen.lock().expect("not poisoned").drops += 1;
                    break;
                }
            }
        }
    }
}

/// The keeper's pid, from `keeper/keeper.lock` in the state directory.
pub(crate) fn keeper_pid(daemon: &Daemon) -> Result<u32> {
    let text = std::fs::read_to_string(daemon.home().join("keeper/keeper.lock"))
        .context("reading keeper/keeper.lock")?;
    text.trim().parse().context("keeper.lock holds no pid")
}

/// RSS and PSS of the keeper, and RSS of the daemon, in KiB.
struct Memory {
    keeper_rss: u64,
    keeper_pss: u64,
    daemon_rss: u64,
}

impl Memory {
    fn of(daemon: &Daemon) -> Result<Memory> {
        let keeper = keeper_pid(daemon)?;
        Ok(Memory {
            keeper_rss: proc_kib(&format!("/proc/{keeper}/status"), "VmRSS")?,
            keeper_pss: proc_kib(&format!("/proc/{keeper}/smaps_rollup"), "Pss")?,
            daemon_rss: daemon.rss_kib()?,
        })
    }
}

/// Polls `/v1/health` every `POLL` until it answers with another `started_at_ms` than `old`;
/// returns the answer's pid, how many polls failed and how many got no answer within
/// `POLL_LIMIT` (given up on, the next poll sent on a new connection).
async fn wait_new_image(client: &Client, old: u64) -> Result<(u32, u64, u64)> {
    let (mut failed, mut hung) = (0, 0);
    loop {
        match tokio::time::timeout(POLL_LIMIT, client.get_health()).await {
            Ok(Ok(health)) if health.started_at_ms != old => {
                return Ok((health.pid, failed, hung));
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) => failed += 1,
            Err(_) => hung += 1,
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Checks that `agent`'s first run holds `line 1` up to some `line N`, each once and in order;
/// returns N.
async fn check_history(client: &Client, agent: &str) -> Result<u64> {
    let query = LogsQuery {
        run: Some(1),
        ..LogsQuery::default()
    };
    let text = crate::logs::read_text(client.get_logs(agent, &query).await?).await?;
    let mut expected = 1;
    for line in text.lines() {
        let number: Option<u64> = line
            .trim_end_matches('\r')
            .strip_prefix("line ")
            .and_then(|n| n.parse().ok());
        match number {
            Some(n) if n == expected => expected += 1,
            _ => bail!(
                "{agent}: after line {} the history has {line:?}",
                expected - 1
            ),
        }
    }
    Ok(expected - 1)
}

fn summary(samples: &[Duration]) -> String {
    let max = samples.iter().max().copied().unwrap_or_default();
    let (median, p95) = median_p95(samples.to_vec());
    format!(
        "median {:.1} ms, p95 {:.1} ms, max {:.1} ms ({} upgrades)",
        ms(median),
        ms(p95),
        ms(max),
        samples.len()
    )
}

/// 100 counting agents and a viewer of one of them; the daemon upgrades `UPGRADES` times.
async fn upgrades(binary: &Path, report: &mut Report) -> Result<()> {
    let mut daemon = Daemon::start(binary, None).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = Memory::of(&daemon)?;
    let command = format!("exec '{}' count", std::env::current_exe()?.display());
    let names: Vec<String> = (0..AGENTS).map(|i| format!("bench-up-{i:03}")).collect();
    daemon
        .create_all(
            names
                .iter()
                .map(|name| AgentSpec {
                    command: command.clone(),
                    ..sleeper(name.clone())
                })
                .collect(),
        )
        .await?;
    daemon.wait_running(AGENTS).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loaded = Memory::of(&daemon)?;
    let agents = AGENTS as f64;
    report.add(
        "keeper RSS / PSS, idle (0 agents)",
        "none",
        format!(
            "{:.2} / {:.2} MiB; daemon RSS {:.1} MiB",
            mib(idle.keeper_rss),
            mib(idle.keeper_pss),
            mib(idle.daemon_rss)
        ),
        None,
    );
    let per_agent = loaded.keeper_rss.saturating_sub(idle.keeper_rss) as f64 / agents;
    report.add(
        "keeper RSS / PSS, 100 agents",
        "<= 256 KiB RSS per agent",
        format!(
            "{:.2} / {:.2} MiB; per agent (with 100 - idle) / 100: {per_agent:.1} KiB RSS, {:.1} KiB PSS; \
             total / 100: {:.1} KiB RSS, {:.1} KiB PSS; daemon RSS {:.1} MiB",
            mib(loaded.keeper_rss),
            mib(loaded.keeper_pss),
            loaded.keeper_pss.saturating_sub(idle.keeper_pss) as f64 / agents,
            loaded.keeper_rss as f64 / agents,
            loaded.keeper_pss as f64 / agents,
            mib(loaded.daemon_rss)
        ),
        Some(per_agent <= 256.0),
    );

    let pids: Vec<Option<u32>> = daemon.agents().await?.iter().map(|a| a.pid).collect();
    let addr = std::fs::read_to_string(daemon.home().join("http.addr"))?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watcher = tokio::spawn(watch(
        daemon.client().clone(),
        names[0].clone(),
        seen.clone(),
    ));
    tokio::time::sleep(SETTLE).await;
    let mut answered = Vec::with_capacity(UPGRADES);
    let mut gaps = Vec::with_capacity(UPGRADES);
    let (mut failed_polls, mut hung_polls) = (0, 0);
    let mut problems = Vec::new();
    for round in 0..UPGRADES {
        let old = daemon.client().get_health().await?.started_at_ms;
        let target = Pid::from_raw(daemon.pid as i32).context("bad pid")?;
        let signalled = Instant::now();
        rustix::process::kill_process(target, Signal::HUP).context("kill -HUP")?;
        let (pid, failed, hung) =
            tokio::time::timeout(UPGRADE_WAIT, wait_new_image(daemon.client(), old))
                .await
                .context("no new image answered")??;
        let back = Instant::now();
        answered.push(back - signalled);
        failed_polls += failed;
        hung_polls += hung;
        if pid != daemon.pid {
            problems.push(format!("upgrade {round}: pid {} became {pid}", daemon.pid));
        }
        // The viewer is back once it got a line it never saw after the new image answered.
        let deadline = back + UPGRADE_WAIT;
        while seen
            .lock()
            .expect("not poisoned")
            .fresh
            .last()
            .is_none_or(|&t| t <= back)
        {
            if Instant::now() > deadline {
                bail!("upgrade {round}: the terminal got no new output");
            }
            tokio::time::sleep(POLL).await;
        }
        tokio::time::sleep(SETTLE).await;
        gaps.push(
            seen.lock()
                .expect("not poisoned")
                .gap_since(signalled)
                .context("no output before the upgrade")?,
        );
        let now: Vec<Option<u32>> = daemon.agents().await?.iter().map(|a| a.pid).collect();
        if now != pids {
            problems.push(format!("upgrade {round}: agent pids changed"));
        }
        let now_addr = std::fs::read_to_string(daemon.home().join("http.addr"))?;
        if now_addr != addr {
            problems.push(format!(
                "upgrade {round}: TCP address {} became {}",
                addr.trim(),
                now_addr.trim()
            ));
        }
    }
    watcher.abort();
    let _ = watcher.await;

    report.add(
        "upgrade, 100 agents: SIGHUP until /v1/health answers with a new started_at_ms",
        "<= 200 ms",
        format!(
            "{}; meanwhile {failed_polls} polls failed, {hung_polls} unanswered after {} ms",
            summary(&answered),
            POLL_LIMIT.as_millis()
        ),
        Some(answered.iter().all(|&d| d <= Duration::from_millis(200))),
    );
    let mut histories = Vec::new();
    for name in names.iter().take(HISTORIES) {
        match check_history(daemon.client(), name).await {
            Ok(lines) => histories.push(format!("{lines}")),
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    let seen = seen.lock().expect("not poisoned");
    report.add(
        "upgrade, 100 agents: attached terminal's gap (last output before, first new after)",
        "<= 200 ms",
        format!(
            "{}; {} reconnects, {} failed attaches",
            summary(&gaps),
            seen.drops,
            seen.failed_attaches
        ),
        Some(gaps.iter().all(|&d| d <= Duration::from_millis(200))),
    );
    let missing = seen.missing();
    report.add(
        "upgrade, 100 agents: lines the terminal lost",
        "0",
        format!(
            "{} missing of {} (lines {}..={}){}, {} malformed",
            missing.len(),
            seen.lines.len() + missing.len(),
            seen.lines.first().copied().unwrap_or_default(),
            seen.lines.last().copied().unwrap_or_default(),
            if missing.is_empty() {
                String::new()
            } else {
                format!(": {missing:?}")
            },
            seen.malformed
        ),
        Some(missing.is_empty() && seen.malformed == 0),
    );
    drop(seen);

    report.add(
        "upgrade, 100 agents: history of run 1 has every line once, in order",
        &format!("{HISTORIES} agents checked"),
        format!(
            "{} intact ({} lines)",
            histories.len(),
            histories.join(", ")
        ),
        Some(histories.len() == HISTORIES),
    );
    report.add(
        "upgrade, 100 agents: same pid, agents' pids and TCP address kept",
        "no problems",
        if problems.is_empty() {
            "kept".to_owned()
        } else {
            problems.join("; ")
        },
        Some(problems.is_empty()),
    );
    Ok(())
}
