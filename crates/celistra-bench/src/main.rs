//! `celistra-bench`: owns the benchmark of a release `celistrad` (daemon RSS, spawn, restart, stop
//! and `ctl ls` latency; log throughput and search in [`logs`]; terminal fan-out in [`terminal`];
//! sandbox cost in [`sandbox`]; the audit log's own figures in [`audit`]; authentication per request in [`auth`]; a hub and its nodes in [`fleet`]; upgrades in place in [`upgrade`]; a socket shared by instances in [`socket`]; the cost of watching idle agents in [`monitor`]), each phase against a
//! fresh daemon in its own temporary state directory.

#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark starts daemons, `ctl` and load processes, and kills them"
)]
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a binary: its report goes to stdout, progress to stderr"
)]

mod approvals;
mod audit;
mod auth;
mod fleet;
mod logs;
mod monitor;
mod sandbox;
mod socket;
mod terminal;
mod upgrade;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use celistra_client::{Client, SseStream};
use celistra_proto::{AgentInfo, AgentSpec, AgentState, ApplyReport, ApplyRequest, EventsQuery};
use futures_util::future::join_all;
use rustix::process::{Pid, Resource, Rlimit, Signal};
use tokio::time::timeout;

/// Upper bound of every phase but the log phases (`logs::LOG_PHASE_TIMEOUT`).
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);
/// How many times latencies are sampled.
const SAMPLES: usize = 20;
/// Runs of each `ctl ls` variant at 1000 agents (interleaved).
const LS_1000_RUNS: usize = 30;

/// One line of the final table.
struct Figure {
    name: String,
    target: String,
    measured: String,
    verdict: &'static str,
}

#[derive(Default)]
struct Report {
    figures: Vec<Figure>,
}

impl Report {
    /// Records and prints one figure; `ok` is `None` when there is no target.
    fn add(&mut self, name: &str, target: &str, measured: String, ok: Option<bool>) {
        let verdict = match ok {
            Some(true) => "ok",
            Some(false) => "MISSED",
            None => "-",
        };
        println!("{name}: {measured} (target: {target}) [{verdict}]");
        self.figures.push(Figure {
            name: name.to_owned(),
            target: target.to_owned(),
            measured,
            verdict,
        });
    }
}

/// A running daemon in a temporary state directory; stopped (SIGTERM, then SIGKILL) when dropped.
struct Daemon {
    child: Child,
    home: tempfile::TempDir,
    /// A workspace outside the state directory (which sandboxes never see).
    work: tempfile::TempDir,
    binary: PathBuf,
    /// Set by `start` once the daemon answers.
    client: Option<Client>,
    pid: u32,
    /// Agent pids seen, killed by process group if the daemon had to be SIGKILLed.
    agent_pids: Vec<u32>,
}

impl Daemon {
    /// Starts a daemon; `config` is written to its `config.json` first.
    async fn start(binary: &Path, config: Option<&serde_json::Value>) -> Result<Daemon> {
        Daemon::start_with(binary, config, &[]).await
    }

    /// Starts a daemon with more command-line arguments (`--tls`).
    async fn start_with(
        binary: &Path,
        config: Option<&serde_json::Value>,
        args: &[&str],
    ) -> Result<Daemon> {
        let home = tempfile::Builder::new()
            .prefix("celistra-bench-")
            .tempdir()
            .context("creating a state directory")?;
        if let Some(config) = config {
            std::fs::write(home.path().join("config.json"), config.to_string())?;
        }
        let child = launch(binary, home.path(), args)?;
        let pid = child.id();
        let mut daemon = Daemon {
            child,
            client: None,
            home,
            work: tempfile::Builder::new()
                .prefix("celistra-bench-work-")
                .tempdir()
                .context("creating a workspace")?,
            binary: binary.to_owned(),
            pid,
            agent_pids: vec![],
        };
        daemon.wait_ready().await?;
        Ok(daemon)
    }

    /// Stops the daemon and starts it again on the same state directory with `args`; returns
    /// once it answers, with when the new process started.
    async fn restart_with(&mut self, args: &[&str]) -> Result<Instant> {
        self.stop();
        let started = Instant::now();
        self.child = launch(&self.binary, self.home.path(), args)?;
        self.pid = self.child.id();
        self.client = None;
        self.wait_ready().await?;
        Ok(started)
    }

    /// Polls `/v1/health` until the daemon answers.
    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "daemon exited early ({status}); log:\n{}",
                    std::fs::read_to_string(self.home.path().join("daemon.log"))
                        .unwrap_or_default()
                );
            }
            if let Ok(client) = Client::for_home(self.home.path(), "bench")
                && client.get_health().await.is_ok()
            {
                self.client = Some(client);
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("daemon did not answer /v1/health within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGTERM, then SIGKILL of the daemon and its agents' process groups if it has not exited
    /// 30 s later.
    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Some(pid) = Pid::from_raw(self.pid as i32) {
                let _ = rustix::process::kill_process(pid, Signal::TERM);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while let Ok(None) = self.child.try_wait() {
                if Instant::now() > deadline {
                    eprintln!("daemon {} ignored SIGTERM for 30 s; killing it", self.pid);
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    for &agent in &self.agent_pids {
                        if let Some(pid) = Pid::from_raw(agent as i32) {
                            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
                        }
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("set by Daemon::start")
    }

    fn home(&self) -> &Path {
        self.home.path()
    }

    fn work(&self) -> &Path {
        self.work.path()
    }

    /// The daemon's resident set size, in KiB.
    fn rss_kib(&self) -> Result<u64> {
        self.status_kib("VmRSS")
    }

    /// The daemon's peak resident set size since it started, in KiB.
    fn peak_rss_kib(&self) -> Result<u64> {
        self.status_kib("VmHWM")
    }

    /// A KiB field of `/proc/PID/status`.
    fn status_kib(&self, field: &str) -> Result<u64> {
        proc_kib(&format!("/proc/{}/status", self.pid), field)
    }

    /// CPU time (user + system, all threads) the daemon has used since it started.
    fn cpu_time(&self) -> Result<Duration> {
        stat_cpu_time(Path::new(&format!("/proc/{}/stat", self.pid)))
    }

    /// CPU time per thread name (same-named threads summed) of the daemon's live threads.
    fn cpu_by_thread(&self) -> Result<BTreeMap<String, Duration>> {
        let mut threads = BTreeMap::new();
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid))? {
            let dir = task?.path();
            // A thread may end between the listing and the reads.
            let (Ok(name), Ok(cpu)) = (
                std::fs::read_to_string(dir.join("comm")),
                stat_cpu_time(&dir.join("stat")),
            ) else {
                continue;
            };
            *threads.entry(name.trim().to_owned()).or_default() += cpu;
        }
        Ok(threads)
    }

    async fn agents(&mut self) -> Result<Vec<AgentInfo>> {
        let agents: Vec<AgentInfo> = self.client().list_agents().await?;
        for agent in &agents {
            if let Some(pid) = agent.pid
                && !self.agent_pids.contains(&pid)
            {
                self.agent_pids.push(pid);
            }
        }
        Ok(agents)
    }

    /// Creates `agents` in one apply; an error unless every one of them was created.
    async fn create_all(&self, agents: Vec<AgentSpec>) -> Result<()> {
        let count = agents.len();
        let request = ApplyRequest {
            agents,
            prune: false,
            dry_run: false,
        };
        let applied: ApplyReport = self.client().apply(&request).await?;
        if applied.created.len() != count {
            bail!(
                "apply created {} agents, not {count}",
                applied.created.len()
            );
        }
        Ok(())
    }

    /// Polls until `count` agents are listed and all are running.
    async fn wait_running(&mut self, count: usize) -> Result<()> {
        loop {
            let agents = self.agents().await?;
            if agents.len() == count && agents.iter().all(|a| a.state == AgentState::Running) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Wall time of `celistrad ctl --home DIR ls`, sampled `SAMPLES` times.
    async fn ctl_ls_samples(&self) -> Result<Vec<Duration>> {
        time_runs(SAMPLES, || self.ctl_ls()).await
    }

    /// `celistrad ctl --home DIR ls`: over the Unix socket.
    fn ctl_ls(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.binary);
        command.args(["ctl", "--home"]).arg(self.home()).arg("ls");
        command
    }

    /// `celistrad ctl --url https://… --token SECRET --fingerprint SHA256 ls`: over the TCP port,
    /// which must speak TLS (`--tls`), as a remote `ctl` would.
    async fn remote_ctl_ls(&self) -> Result<tokio::process::Command> {
        let health = self.client().get_health().await?;
        let fingerprint = health
            .tls
            .context("the daemon does not serve TLS")?
            .fingerprint_sha256;
        let address = std::fs::read_to_string(self.home().join("http.addr"))?;
        let auth: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(self.home().join("auth.json"))?)?;
        let secret = auth["secret"].as_str().context("no secret in auth.json")?;
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .arg("ctl")
            .args(["--url", &format!("https://{}", address.trim())])
            .args(["--token", secret, "--fingerprint", &fingerprint, "ls"]);
        Ok(command)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `binary` on the state directory `home` (log in `daemon.log` there), listening on a free
/// loopback port, with more arguments (`--tls`).
fn launch(binary: &Path, home: &Path, args: &[&str]) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.join("daemon.log"))?;
    Command::new(binary)
        .arg("--home")
        .arg(home)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))
}

/// A KiB field (`Field:   N kB`) of a `/proc` file such as `/proc/PID/status` or `smaps_rollup`.
fn proc_kib(path: &str, field: &str) -> Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let line = text
        .lines()
        .find(|l| {
            l.strip_prefix(field)
                .is_some_and(|rest| rest.starts_with(':'))
        })
        .with_context(|| format!("no {field} line in {path}"))?;
    let kib = line
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("malformed {field} line in {path}"))?
        .parse()?;
    Ok(kib)
}

/// User + system time from a `/proc/.../stat` file.
fn stat_cpu_time(path: &Path) -> Result<Duration> {
    /// Unit of `/proc/PID/stat` times (`USER_HZ`, 100 on Linux).
    const TICKS_PER_SECOND: u64 = 100;
    let stat = std::fs::read_to_string(path)?;
    // The command name may hold spaces; fields are counted from the `)` that ends it.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("malformed stat")?
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the line; the text after `)` starts at field 3.
    let ticks: u64 = fields
        .get(11..13)
        .context("short stat")?
        .iter()
        .map(|f| f.parse::<u64>())
        .sum::<Result<u64, _>>()?;
    Ok(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
}

/// An unsandboxed (`privileged`) sleeper: these phases measure the supervisor itself; the sandbox's
/// cost is measured apart ([`sandbox`]).
fn sleeper(name: String) -> AgentSpec {
    AgentSpec {
        name,
        command: "sleep 600".into(),
        workspace: Some("/tmp".into()),
        capabilities: vec!["privileged".into()],
        ..Default::default()
    }
}

fn sleepers(count: usize) -> Vec<AgentSpec> {
    (0..count)
        .map(|i| sleeper(format!("bench-{i:04}")))
        .collect()
}

/// Wall times of `runs` runs of a command, its output discarded; a failed run fails the phase.
async fn time_runs(
    runs: usize,
    make: impl Fn() -> tokio::process::Command,
) -> Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        samples.push(time_run(make()).await?);
    }
    Ok(samples)
}

/// Wall time of one run of a command, its output discarded; a failed run fails the phase.
async fn time_run(mut command: tokio::process::Command) -> Result<Duration> {
    let started = Instant::now();
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await?;
    let elapsed = started.elapsed();
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(elapsed)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Median and p95 (nearest rank) of the samples.
fn median_p95(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let n = samples.len();
    let median = if n.is_multiple_of(2) {
        (samples[n / 2 - 1] + samples[n / 2]) / 2
    } else {
        samples[n / 2]
    };
    let p95 = samples[(n * 95).div_ceil(100) - 1];
    (median, p95)
}

async fn phase<T>(name: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
    phase_within(PHASE_TIMEOUT, name, fut).await
}

async fn phase_within<T>(
    limit: Duration,
    name: &str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    match timeout(limit, fut).await {
        Ok(result) => result.with_context(|| format!("phase `{name}`")),
        Err(_) => bail!("phase `{name}` timed out after {limit:?}"),
    }
}

/// How long after its last request or agent event a daemon has given its code pages back (it
/// does so after 10 s of quiet: `code_pages.rs`), with a margin.
const SETTLED: Duration = Duration::from_secs(15);

/// Figure 1: RSS of an idle daemon, right after start and once settled.
async fn idle_rss(binary: &Path, report: &mut Report) -> Result<()> {
    let daemon = Daemon::start(binary, None).await?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let kib = daemon.rss_kib()?;
    report.add(
        "daemon RSS, 1 s after it answers",
        "none",
        format!("{:.1} MiB", mib(kib)),
        None,
    );
    tokio::time::sleep(SETTLED.saturating_sub(started.elapsed())).await;
    let kib = daemon.rss_kib()?;
    report.add(
        "daemon RSS, idle (15 s after it answers)",
        "<= 8 MiB",
        format!("{:.1} MiB", mib(kib)),
        Some(kib <= 8 * 1024),
    );
    Ok(())
}

/// Figures 2, 3, 5: Spawn 100 in one apply, RSS with 100, `ctl ls` with 100, stop all 100 concurrently.
async fn hundred(binary: &Path, report: &mut Report) -> Result<()> {
    let mut daemon = Daemon::start(binary, None).await?;
    let agents = sleepers(100);
    let names: Vec<String> = agents.iter().map(|spec| spec.name.clone()).collect();
    let started = Instant::now();
    daemon.create_all(agents).await?;
    let answered = started.elapsed();
    daemon.wait_running(100).await?;
    let all_running = started.elapsed();
    report.add(
        "spawn 100 (one apply) until all running",
        "<= 0.5 s",
        format!(
            "{:.0} ms (apply answered in {:.0} ms)",
            ms(all_running),
            ms(answered)
        ),
        Some(all_running <= Duration::from_millis(500)),
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    let kib = daemon.rss_kib()?;
    report.add(
        "daemon RSS, 100 agents, 1 s after all run",
        "none",
        format!("{:.1} MiB", mib(kib)),
        None,
    );
    tokio::time::sleep(SETTLED - Duration::from_secs(1)).await;
    let kib = daemon.rss_kib()?;
    report.add(
        "daemon RSS, 100 agents (15 s after all run)",
        "<= 16 MiB",
        format!("{:.1} MiB", mib(kib)),
        Some(kib <= 16 * 1024),
    );

    let (median, p95) = median_p95(daemon.ctl_ls_samples().await?);
    report.add(
        "`ctl ls`, 100 agents",
        "<= 20 ms",
        format!("median {:.1} ms, p95 {:.1} ms", ms(median), ms(p95)),
        Some(median <= Duration::from_millis(20)),
    );

    let started = Instant::now();
    let client = daemon.client();
    let answers = join_all(
        names
            .iter()
            .map(|name| async move { client.stop_agent(name).await }),
    )
    .await;
    let answered = started.elapsed();
    for answer in answers {
        answer?;
    }
    loop {
        let agents = daemon.agents().await?;
        if agents.iter().all(|a| a.state == AgentState::Stopped) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let all_stopped = started.elapsed();
    report.add(
        "stop 100 concurrently",
        "none",
        format!(
            "all answered in {:.0} ms, all stopped in {:.0} ms",
            ms(answered),
            ms(all_stopped)
        ),
        None,
    );
    Ok(())
}

/// Figure 2b: Spawn 100 with sequential `POST /v1/agents`.
async fn hundred_sequential(binary: &Path, report: &mut Report) -> Result<()> {
    let mut daemon = Daemon::start(binary, None).await?;
    let started = Instant::now();
    for spec in sleepers(100) {
        let _: AgentInfo = daemon.client().spawn_agent(&spec).await?;
    }
    let answered = started.elapsed();
    daemon.wait_running(100).await?;
    let all_running = started.elapsed();
    report.add(
        "spawn 100 (100 sequential POSTs) until all running",
        "none (0.5 s for one apply)",
        format!(
            "{:.0} ms (last POST answered at {:.0} ms)",
            ms(all_running),
            ms(answered)
        ),
        None,
    );
    Ok(())
}

/// Reads the event stream until an `agent_restarted` for `agent_id` with a pid other than `old`.
async fn next_restart(events: &mut SseStream, agent_id: &str, old: u32) -> Result<u32> {
    loop {
        let frame = events.next_frame().await?.context("event stream ended")?;
        if frame.event.as_deref() != Some("agent_restarted") {
            continue;
        }
        let data: serde_json::Value = serde_json::from_str(&frame.data)?;
        let pid = data["pid"].as_u64().unwrap_or(0) as u32;
        if data["agent_id"] == agent_id && pid != old && pid != 0 {
            return Ok(pid);
        }
    }
}

/// Figure 4: latency from SIGKILL of an auto-restarting agent's program to its `agent_restarted`
/// event, with default settings except that every crash counts as the first of a streak (the first
/// restart after a healthy run, which the policy makes immediate). Sandboxed, the program is the
/// process below the sandbox's own (as `../shared/bench` kills it, and as a crash ends it), and the
/// event comes once the new program runs inside its sandbox.
async fn restart_latency(binary: &Path, report: &mut Report, sandboxed: bool) -> Result<()> {
    let mut daemon = Daemon::start(binary, None).await?;
    let mut spec = AgentSpec {
        auto_restart: true,
        backoff_reset_secs: Some(0),
        restart_max: Some(1000),
        ..sleeper("bench-restart".into())
    };
    if sandboxed {
        spec.capabilities.clear();
        spec.workspace = Some(daemon.work().display().to_string());
    }
    let info: AgentInfo = daemon.client().spawn_agent(&spec).await?;
    daemon.wait_running(1).await?;
    let mut pid = daemon.agents().await?[0]
        .pid
        .context("running agent has no pid")?;
    let query = EventsQuery {
        after: Some(0),
        follow: true,
    };
    let mut events = daemon.client().stream_events(&query).await?;
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let program = if sandboxed {
            below_the_sandbox(pid).context("no program below the sandbox's own processes")?
        } else {
            pid
        };
        let target = Pid::from_raw(program as i32).context("bad pid")?;
        let started = Instant::now();
        rustix::process::kill_process(target, Signal::KILL)
            .with_context(|| format!("kill -9 {pid}"))?;
        let new = next_restart(&mut events, &info.id, pid).await?;
        samples.push(started.elapsed());
        daemon.agent_pids.push(new);
        pid = new;
    }
    let (median, p95) = median_p95(samples);
    let measured = format!("median {:.1} ms, p95 {:.1} ms", ms(median), ms(p95));
    if sandboxed {
        report.add(
            "first restart after SIGKILL of the program, sandboxed (until it runs again inside)",
            "median <= 5 ms, p95 <= 10 ms",
            measured,
            Some(median <= Duration::from_millis(5) && p95 <= Duration::from_millis(10)),
        );
    } else {
        report.add(
            "first restart after SIGKILL (to agent_restarted event)",
            "median <= 20 ms",
            measured,
            Some(median <= Duration::from_millis(20)),
        );
    }
    Ok(())
}

/// Processes a sandbox adds above the agent's program: the launcher as its init, or (in a daemon
/// from before issue 18's own sandbox, for same-run comparisons) bubblewrap's two.
const SANDBOX_PROCESSES: [&str; 2] = ["celistra-launch", "bwrap"];

/// The first process from `pid` down (the first child each time) that is not a sandbox's own.
fn below_the_sandbox(pid: u32) -> Option<u32> {
    sandbox_chain(pid).1
}

/// From `pid` down (the first child each time): the sandbox's own processes, then the first one
/// that is not (the agent's program), if it is there.
fn sandbox_chain(pid: u32) -> (Vec<u32>, Option<u32>) {
    let mut own = Vec::new();
    let mut current = pid;
    for _ in 0..4 {
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{current}/comm")) else {
            break;
        };
        if !SANDBOX_PROCESSES.contains(&comm.trim_end()) {
            return (own, Some(current));
        }
        own.push(current);
        let Some(child) = first_child(current) else {
            break;
        };
        current = child;
    }
    (own, None)
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn first_child(pid: u32) -> Option<u32> {
    children(pid).into_iter().min()
}

/// PSS in KiB of the processes a sandbox adds above each of `runs` (the runs' pids).
fn sandbox_pss(runs: &[u32]) -> Result<u64> {
    let mut total = 0;
    for &run in runs {
        for pid in sandbox_chain(run).0 {
            total += proc_kib(&format!("/proc/{pid}/smaps_rollup"), "Pss")?;
        }
    }
    Ok(total)
}

/// PSS in KiB of `roots` and every process below them except the agents' programs (the first
/// process below each of `runs` that is not a sandbox's own): the daemon and the keeper with
/// everything they start to keep agents.
fn tree_pss_without_programs(roots: &[u32], runs: &[u32]) -> Result<u64> {
    let programs: std::collections::HashSet<u32> = runs
        .iter()
        .filter_map(|&run| below_the_sandbox(run))
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut pending = roots.to_vec();
    while let Some(pid) = pending.pop() {
        if programs.contains(&pid) || !seen.insert(pid) {
            continue;
        }
        // A process may end between the listing and the read.
        if let Ok(pss) = proc_kib(&format!("/proc/{pid}/smaps_rollup"), "Pss") {
            total += pss;
        }
        pending.extend(children(pid));
    }
    Ok(total)
}

/// Starts a daemon and one apply of 1000 sleepers; the time until all run.
async fn start_thousand(binary: &Path, args: &[&str]) -> Result<(Daemon, Duration)> {
    let mut daemon = Daemon::start_with(binary, None, args).await?;
    let request = ApplyRequest {
        agents: sleepers(1000),
        prune: false,
        dry_run: false,
    };
    let started = Instant::now();
    let _: ApplyReport = daemon.client().apply(&request).await?;
    daemon.wait_running(1000).await?;
    Ok((daemon, started.elapsed()))
}

/// Figure 6: 1000 agents: spawn time, RSS and `ctl ls` over the Unix socket and over TLS (the
/// daemon serves its TCP port with `--tls`). With a `baseline` daemon (another build), that one
/// gets 1000 agents too and its own `ctl ls` over the socket is timed, the runs of the three
/// variants interleaved.
async fn thousand(binary: &Path, baseline: Option<&Path>, report: &mut Report) -> Result<()> {
    let (daemon, all_running) = start_thousand(binary, &["--tls"]).await?;
    report.add(
        "spawn 1000 (one apply) until all running",
        "none",
        format!("{:.0} ms", ms(all_running)),
        None,
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let kib = daemon.rss_kib()?;
    report.add(
        "daemon RSS, 1000 agents",
        "none",
        format!("{:.1} MiB", mib(kib)),
        None,
    );
    let old = match baseline {
        Some(binary) => Some(start_thousand(binary, &[]).await?.0),
        None => None,
    };
    let mut socket = Vec::with_capacity(LS_1000_RUNS);
    let mut tls = Vec::with_capacity(LS_1000_RUNS);
    let mut old_socket = Vec::with_capacity(LS_1000_RUNS);
    for run in 0..LS_1000_RUNS {
        for variant in 0..3 {
            match (run + variant) % 3 {
                0 => socket.push(time_run(daemon.ctl_ls()).await?),
                1 => tls.push(time_run(daemon.remote_ctl_ls().await?).await?),
                _ => {
                    if let Some(old) = &old {
                        old_socket.push(time_run(old.ctl_ls()).await?);
                    }
                }
            }
        }
    }
    let (median, p95) = median_p95(socket);
    report.add(
        "`ctl ls`, 1000 agents",
        "<= 20 ms",
        format!("median {:.1} ms, p95 {:.1} ms", ms(median), ms(p95)),
        Some(median <= Duration::from_millis(20)),
    );
    let (tls_median, tls_p95) = median_p95(tls);
    report.add(
        "`ctl ls`, 1000 agents, remote over TLS (`--url https://…`)",
        "none",
        format!("median {:.1} ms, p95 {:.1} ms", ms(tls_median), ms(tls_p95)),
        None,
    );
    if !old_socket.is_empty() {
        let (old_median, old_p95) = median_p95(old_socket);
        let change = (median.as_secs_f64() / old_median.as_secs_f64() - 1.0) * 100.0;
        report.add(
            "`ctl ls`, 1000 agents, baseline daemon",
            "none",
            format!("median {:.1} ms, p95 {:.1} ms", ms(old_median), ms(old_p95)),
            None,
        );
        report.add(
            "`ctl ls`, 1000 agents: this daemon vs the baseline",
            "<= +10 %",
            format!("{change:+.1} %"),
            Some(change <= 10.0),
        );
    }
    Ok(())
}

/// Which phases run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Only {
    All,
    /// Memory, spawn, restart, stop and `ctl ls`.
    Agents,
    /// Log throughput and search ([`logs`]).
    Logs,
    /// Log throughput only, without the minutes-long search phase.
    Throughput,
    /// Terminal fan-out to 1, 10 and 100 viewers ([`terminal`]).
    Terminal,
    /// Spawn cost of the sandbox, and 100 sandboxed agents at once ([`sandbox`]).
    Sandbox,
    /// Audit log append, verify and proofs ([`audit`]).
    Audit,
    /// Approval latency ([`approvals`]).
    Approvals,
    /// Authentication and role checks per request ([`auth`]).
    Auth,
    /// A hub and its nodes ([`fleet`]).
    Fleet,
    /// Upgrade in place with 100 agents, and the keeper's memory ([`upgrade`]).
    Upgrade,
    /// Only the restart latency of the agents phases (to compare builds quickly).
    Restart,
    /// Request throughput through a socket shared by 1 and 2 instances ([`socket`]).
    Socket,
    /// The daemon's CPU with many idle agents, with and without extra settings ([`monitor`]).
    Monitor,
}

struct Args {
    daemon: PathBuf,
    /// `--baseline PATH`: another `celistrad` to compare `ctl ls` at 1000 agents with.
    baseline: Option<PathBuf>,
    only: Only,
    monitor: monitor::MonitorOptions,
}

fn parse_args() -> Result<Args> {
    let mut daemon = None;
    let mut baseline = None;
    let mut only = Only::All;
    let mut monitor = monitor::MonitorOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--daemon" => {
                daemon = Some(PathBuf::from(args.next().context("--daemon needs a path")?))
            }
            "--baseline" => {
                baseline = Some(PathBuf::from(
                    args.next().context("--baseline needs a path")?,
                ))
            }
            "--only" => {
                only = match args.next().as_deref() {
                    Some("agents") => Only::Agents,
                    Some("logs") => Only::Logs,
                    Some("throughput") => Only::Throughput,
                    Some("terminal") => Only::Terminal,
                    Some("sandbox") => Only::Sandbox,
                    Some("audit") => Only::Audit,
                    Some("approvals") => Only::Approvals,
                    Some("auth") => Only::Auth,
                    Some("fleet") => Only::Fleet,
                    Some("upgrade") => Only::Upgrade,
                    Some("restart") => Only::Restart,
                    Some("socket") => Only::Socket,
                    Some("monitor") => Only::Monitor,
                    _ => bail!(
                        "--only needs `agents`, `restart`, `logs`, `throughput`, `terminal`, `sandbox`, `audit`, `approvals`, `auth`, `fleet`, `upgrade`, `socket` or `monitor`"
                    ),
                }
            }
            "--agents" => {
                monitor.agents = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .context("--agents needs a number")?
            }
            "--window" => {
                monitor.window = Duration::from_secs(
                    args.next()
                        .and_then(|n| n.parse().ok())
                        .context("--window needs a number of seconds")?,
                )
            }
            "--agent-spec-json" => {
                let text = args
                    .next()
                    .context("--agent-spec-json needs a JSON object")?;
                monitor.agent_spec_json = serde_json::from_str(&text)
                    .with_context(|| format!("--agent-spec-json `{text}`"))?;
            }
            "-h" | "--help" => {
                println!(
                    "usage: celistra-bench [--daemon PATH] [--baseline PATH] [--only agents|restart|logs|throughput|terminal|sandbox|audit|approvals|auth|fleet|upgrade|socket|monitor]\n\
                     \x20      [--agents N] [--window SECS] [--agent-spec-json JSON]\n\n\
                     Benchmarks a celistrad (default: `celistrad` next to this executable).\n\
                     --baseline PATH: another celistrad (an older build) whose `ctl ls` at 1000 agents\n\
                     is timed with this one's, the runs interleaved.\n\
                     --only agents: memory, spawn, restart, stop and `ctl ls` phases.\n\
                     --only restart: the restart latency of the agents phases, and sandboxed.\n\
                     --only logs: log throughput (PTY, pipe) and search phases.\n\
                     --only throughput: log throughput phases only.\n\
                     --only terminal: terminal fan-out to 1, 10 and 100 viewers.\n\
                     --only sandbox: spawn cost of the sandbox, 100 sandboxed agents at once.\n\
                     --only audit: audit log append, verify and proofs (library, no daemon).\n\
                     --only approvals: approval latency, ask to event and decision to answer.\n\
                     --only auth: authentication and role checks per request (in-process router).\n\
                     --only fleet: a hub with real and simulated nodes: fleet ls, hub memory per node,\n\
                     idle link traffic, keystroke echo, partitions and a hub restart (about 6 min).\n\
                     --only upgrade: 5 upgrades in place (SIGHUP) with 100 agents and an attached\n\
                     terminal; the keeper's memory idle and with 100 agents.\n\
                     --only socket: requests/s, p50 and p99 through one --socket served by 1, then 2\n\
                     --instances (a Python server with CPU work per request, fresh connections).\n\
                     --only monitor: the daemon's CPU per second with no agent, with --agents N idle agents\n\
                     (default 1000), and with them each given --agent-spec-json (default\n\
                     {{\"memory_restart\": 1073741824}}), each over --window SECS (default 30)."
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}`; see --help"),
        }
    }
    let daemon = match daemon {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .context("executable has no directory")?
            .join("celistrad"),
    };
    Ok(Args {
        daemon,
        baseline,
        only,
        monitor,
    })
}

/// Prints the load average: other work on the machine skews every figure.
fn print_load(when: &str) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at {when}: {}", load.trim());
}

/// Raises the soft open-files limit to the hard one; the daemon inherits it (1000 agents).
fn raise_nofile() {
    let limit = rustix::process::getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let _ = rustix::process::setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        );
    }
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    // The terminal phases' agent runs this executable as `celistra-bench emit BYTES`, the upgrade
    // phase's agents as `celistra-bench count`.
    match args.next().as_deref() {
        Some("emit") => terminal::emit(args.next().as_deref()),
        Some("count") => upgrade::count(),
        _ => bench(),
    }
}

#[tokio::main]
async fn bench() -> Result<()> {
    let Args {
        daemon: binary,
        baseline,
        only,
        monitor,
    } = parse_args()?;
    if !binary.is_file() {
        bail!(
            "no daemon at {}; build it with `cargo build --release -p celistrad` or pass --daemon",
            binary.display()
        );
    }
    raise_nofile();
    println!("celistra-bench: daemon {}", binary.display());
    print_load("start");
    let mut report = Report::default();
    let mut failed = false;
    let mut results = Vec::new();
    if only == Only::All || only == Only::Agents {
        results.extend([
            phase("idle RSS", idle_rss(&binary, &mut report)).await,
            phase("100 agents", hundred(&binary, &mut report)).await,
            phase("100 sequential", hundred_sequential(&binary, &mut report)).await,
            phase("restart", restart_latency(&binary, &mut report, false)).await,
        ]);
    }
    if only == Only::Restart {
        results.push(phase("restart", restart_latency(&binary, &mut report, false)).await);
        results.push(
            phase(
                "sandboxed restart",
                restart_latency(&binary, &mut report, true),
            )
            .await,
        );
    }
    if only == Only::All || only == Only::Agents {
        results.extend([phase_within(
            Duration::from_secs(180),
            "1000 agents",
            thousand(&binary, baseline.as_deref(), &mut report),
        )
        .await]);
    }
    if matches!(only, Only::All | Only::Logs | Only::Throughput) {
        let with_search = only != Only::Throughput;
        results.extend(logs::phases(&binary, with_search, &mut report).await);
    }
    if matches!(only, Only::All | Only::Terminal) {
        results.extend(terminal::phases(&binary, &mut report).await);
    }
    if matches!(only, Only::All | Only::Sandbox) {
        results.extend(sandbox::phases(&binary, &mut report).await);
    }
    if matches!(only, Only::All | Only::Audit) {
        results.extend(audit::phases(&mut report).await);
    }
    if matches!(only, Only::All | Only::Approvals) {
        results.extend(approvals::phases(&binary, &mut report).await);
    }
    if matches!(only, Only::All | Only::Auth) {
        results.extend(auth::phases(&mut report).await);
    }
    if matches!(only, Only::All | Only::Fleet) {
        results.extend(fleet::phases(&binary, &mut report).await);
    }
    if matches!(only, Only::All | Only::Upgrade) {
        results.extend(upgrade::phases(&binary, &mut report).await);
    }
    if matches!(only, Only::All | Only::Socket) {
        results.extend(socket::phases(&binary, &mut report).await);
    }
    if matches!(only, Only::All | Only::Monitor) {
        results.extend(monitor::phases(&binary, &monitor, &mut report).await);
    }
    for result in results {
        if let Err(e) = result {
            eprintln!("error: {e:#}");
            failed = true;
        }
    }
    print_load("end");
    println!();
    println!("| figure | target | measured | |");
    println!("|---|---|---|---|");
    for f in &report.figures {
        println!(
            "| {} | {} | {} | {} |",
            f.name, f.target, f.measured, f.verdict
        );
    }
    if failed {
        bail!("some phases failed");
    }
    Ok(())
}
