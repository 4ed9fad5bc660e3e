//! Log phases: how fast a daemon takes in and saves an agent's output (PTY and pipe mode) next to
//! what the kernel does without it, and how fast it searches 1 GiB of saved output. The input is a
//! generated file of varied log lines: LZ4 compresses it about 3x, where a repeated line (`yes`)
//! would compress 200x and flatter the daemon.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use celistra_client::{Client, next_chunk};
use celistra_proto::{
    AgentInfo, AgentSpec, AgentState, Health, HistoryQuery, LogsQuery, RunRecord, SearchQuery,
};
use hyper::body::Incoming;

use crate::{Daemon, Report, median_p95, mib, ms, phase_within, time_runs};

/// Upper bound of every log phase: they move 256 MiB to 1 GiB each.
const LOG_PHASE_TIMEOUT: Duration = Duration::from_secs(120);
/// Size of the generated input (the last line may end a little past it).
const INPUT_BYTES: u64 = 256 * 1024 * 1024;
/// Agents of the search phase, each writing the whole input: 1 GiB in all.
const SEARCH_AGENTS: usize = 4;
/// How often agent state and saved bytes are polled.
const POLL: Duration = Duration::from_millis(5);
/// How often the progress of idle-time work (compression, the search index) is polled.
const IDLE_WORK_POLL: Duration = Duration::from_millis(20);
/// Longest wait for idle-time work; the phase goes on (and says so) if it is not done by then.
const IDLE_WORK_WAIT: Duration = Duration::from_secs(90);
/// How long saved bytes may stand still after the agents exited before the phase gives up.
const STALL: Duration = Duration::from_secs(10);
/// Search agents write the input in chunks of this many MiB with `PACE_PAUSE` between: together
/// about 130 MiB/s, which the writer keeps up with, so the whole 1 GiB is saved. Four `cat`s at
/// full speed outrun it and may lose output; the pipe phase measures full speed.
const PACE_CHUNK_MIB: u64 = 2;
const PACE_PAUSE: &str = "0.05";
/// Timed runs of each raw pipeline (median taken) and of each search query.
const RAW_RUNS: usize = 3;
const SEARCH_RUNS: usize = 10;
const MIB: f64 = 1024.0 * 1024.0;

/// Retention high enough that nothing the bench writes is evicted.
fn bench_config() -> serde_json::Value {
    serde_json::json!({"logs_max_agent_mb": 4096, "logs_max_total_mb": 8192})
}

/// The daemon's CPU time at one moment, in all and per thread name.
pub(crate) struct CpuUse {
    total: Duration,
    threads: BTreeMap<String, Duration>,
}

impl CpuUse {
    pub(crate) fn of(daemon: &Daemon) -> Result<CpuUse> {
        Ok(CpuUse {
            total: daemon.cpu_time()?,
            threads: daemon.cpu_by_thread()?,
        })
    }

    /// "T s (thread t s, …)": what was used since `earlier`; threads under 10 ms left out.
    pub(crate) fn since(&self, earlier: &CpuUse) -> String {
        let threads: Vec<String> = self
            .threads
            .iter()
            .map(|(name, cpu)| {
                let before = earlier.threads.get(name).copied().unwrap_or_default();
                (name, cpu.saturating_sub(before))
            })
            .filter(|(_, used)| *used >= Duration::from_millis(10))
            .map(|(name, used)| format!("{name} {:.2}", used.as_secs_f64()))
            .collect();
        format!(
            "{:.2} s ({})",
            self.total.saturating_sub(earlier.total).as_secs_f64(),
            threads.join(", ")
        )
    }
}

/// The generated input file, deleted when dropped.
struct LogInput {
    dir: tempfile::TempDir,
    path: PathBuf,
    bytes: u64,
    lines: u64,
    last_line: String,
    /// A word on exactly one line of the file (`zanzibar-NNNNNN`), for selective searches.
    rare_word: String,
}

/// splitmix64: cheap and deterministic, so every run writes the same varied lines.
pub(crate) struct SplitMix(pub(crate) u64);

impl SplitMix {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl LogInput {
    /// Writes `INPUT_BYTES` of access-log-like lines: mostly INFO, some DEBUG and WARN, and one
    /// ERROR in about a thousand carrying a unique `zanzibar-NNNNNN`.
    fn generate() -> Result<LogInput> {
        const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
        const RESOURCES: [&str; 5] = ["items", "users", "orders", "carts", "invoices"];
        const STATUSES: [u16; 6] = [200, 200, 200, 201, 204, 404];
        let dir = tempfile::Builder::new()
            .prefix("celistra-bench-input-")
            .tempdir()?;
        let path = dir.path().join("input.log");
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
        let mut rng = SplitMix(0x00C0_FFEE);
        let mut line = String::new();
        let (mut bytes, mut lines, mut errors, mut clock_ms) = (0u64, 0u64, 0u64, 0u64);
        while bytes < INPUT_BYTES {
            let r = rng.next();
            clock_ms += r % 7;
            let time = 10 * 3_600_000 + clock_ms;
            line.clear();
            write!(
                line,
                "2026-11-23T{:02}:{:02}:{:02}.{:03}Z ",
                time / 3_600_000,
                time / 60_000 % 60,
                time / 1000 % 60,
                time % 1000
            )?;
            let worker = (r >> 3) % 16;
            let method = METHODS[(r >> 7) as usize % METHODS.len()];
            let resource = RESOURCES[(r >> 9) as usize % RESOURCES.len()];
            let item = (r >> 12) % 100_000;
            let took = (r >> 29) % 900 + 1;
            match (r >> 40) % 1000 {
                0 => {
                    write!(
                        line,
                        "ERROR worker-{worker} upstream failed id={lines} method={method} \
                         path=/api/v1/{resource}/{item} status=502 took={took}ms \
                         error=zanzibar-{errors:06}"
                    )?;
                    errors += 1;
                }
                1..=20 => write!(
                    line,
                    "WARN worker-{worker} slow request id={lines} method={method} \
                     path=/api/v1/{resource}/{item} status=200 took={}ms threshold=500ms",
                    took + 500
                )?,
                21..=60 => write!(
                    line,
                    "DEBUG worker-{worker} cache lookup id={lines} key={resource}:{item} \
                     hit={} status=200",
                    r & 1 == 1
                )?,
                _ => write!(
                    line,
                    "INFO worker-{worker} request id={lines} method={method} \
                     path=/api/v1/{resource}/{item} status={} took={took}ms user={:016x}",
                    STATUSES[(r >> 50) as usize % STATUSES.len()],
                    rng.next()
                )?,
            }
            line.push('\n');
            out.write_all(line.as_bytes())?;
            bytes += line.len() as u64;
            lines += 1;
        }
        out.flush()?;
        if errors == 0 {
            bail!("the input has no ERROR line to search for");
        }
        Ok(LogInput {
            dir,
            path,
            bytes,
            lines,
            last_line: line.trim_end().to_owned(),
            rare_word: format!("zanzibar-{:06}", errors / 2),
        })
    }

    fn cat(&self) -> String {
        format!("cat '{}'", self.path.display())
    }

    /// A `cat` of the file slowed to `PACE_CHUNK_MIB` per `PACE_PAUSE`.
    fn paced_cat(&self) -> String {
        let chunks = self.bytes.div_ceil(PACE_CHUNK_MIB << 20);
        format!(
            "i=0; while [ $i -lt {chunks} ]; do \
             dd if='{}' bs={PACE_CHUNK_MIB}M skip=$i count=1 status=none; \
             sleep {PACE_PAUSE}; i=$((i+1)); done",
            self.path.display()
        )
    }

    fn mib(&self) -> f64 {
        self.bytes as f64 / MIB
    }

    /// Throughput of the whole input in `elapsed`, in MiB/s.
    fn rate(&self, elapsed: Duration) -> f64 {
        self.mib() / elapsed.as_secs_f64()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Pty,
    Pipe,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Pty => "PTY",
            Mode::Pipe => "pipe",
        }
    }
}

/// What the kernel alone achieves, in MiB/s of input.
struct RawRates {
    pty: f64,
    pipe: f64,
}

impl RawRates {
    fn of(&self, mode: Mode) -> f64 {
        match mode {
            Mode::Pty => self.pty,
            Mode::Pipe => self.pipe,
        }
    }
}

/// Generates the input, then runs the log phases; one result per phase.
pub(crate) async fn phases(
    binary: &Path,
    with_search: bool,
    report: &mut Report,
) -> Vec<Result<()>> {
    let input = match phase_within(LOG_PHASE_TIMEOUT, "log input", async {
        tokio::task::spawn_blocking(LogInput::generate).await?
    })
    .await
    {
        Ok(input) => input,
        Err(e) => return vec![Err(e)],
    };
    println!(
        "log input: {} ({:.1} MiB, {} lines, rare word {})",
        input.path.display(),
        input.mib(),
        input.lines,
        input.rare_word
    );
    let raw = phase_within(LOG_PHASE_TIMEOUT, "raw limits", raw_limits(&input, report)).await;
    let rates = raw.as_ref().ok();
    let pty = phase_within(
        LOG_PHASE_TIMEOUT,
        "PTY throughput",
        throughput(binary, &input, Mode::Pty, rates, report),
    )
    .await;
    let pipe = phase_within(
        LOG_PHASE_TIMEOUT,
        "pipe throughput",
        throughput(binary, &input, Mode::Pipe, rates, report),
    )
    .await;
    let mut results = vec![raw.map(drop), pty, pipe];
    if with_search {
        results.push(
            phase_within(
                LOG_PHASE_TIMEOUT,
                "search 1 GiB",
                search(binary, &input, report),
            )
            .await,
        );
    }
    results
}

/// Median wall time of `RAW_RUNS` runs of `sh -c SCRIPT`.
async fn time_shell(script: &str) -> Result<Duration> {
    let samples = time_runs(RAW_RUNS, || {
        let mut command = tokio::process::Command::new("/bin/sh");
        command.args(["-c", script]);
        command
    })
    .await?;
    Ok(median_p95(samples).0)
}

/// The same transfers without the daemon: `cat` through a PTY (util-linux `script`) to /dev/null,
/// and through a pipe into a file.
async fn raw_limits(input: &LogInput, report: &mut Report) -> Result<RawRates> {
    let pty = time_shell(&format!("script -qc \"{}\" /dev/null", input.cat())).await?;
    // A file beside the daemons' state directories, so both write to the same filesystem.
    let out = tempfile::Builder::new()
        .prefix("celistra-bench-raw-")
        .tempdir()?;
    let pipe = time_shell(&format!(
        "{} | cat > '{}'",
        input.cat(),
        out.path().join("out.log").display()
    ))
    .await?;
    let rates = RawRates {
        pty: input.rate(pty),
        pipe: input.rate(pipe),
    };
    report.add(
        "raw PTY: `script -qc 'cat FILE' /dev/null` (median of 3)",
        "none (the limit)",
        format!("{:.0} ms, {:.0} MiB/s", ms(pty), rates.pty),
        None,
    );
    report.add(
        "raw pipe: `cat FILE | cat > OUT` (median of 3)",
        "none (the limit)",
        format!("{:.0} ms, {:.0} MiB/s", ms(pipe), rates.pipe),
        None,
    );
    Ok(rates)
}

fn agent(name: String, command: String, input: &LogInput, mode: Mode) -> AgentSpec {
    AgentSpec {
        name,
        command,
        workspace: Some(input.dir.path().display().to_string()),
        no_pty: mode == Mode::Pipe,
        ..Default::default()
    }
}

async fn spawn(daemon: &mut Daemon, spec: &AgentSpec) -> Result<()> {
    let info: AgentInfo = daemon.client().spawn_agent(spec).await?;
    daemon.agent_pids.extend(info.pid);
    Ok(())
}

/// How the output of a group of agents ended up.
struct Settled {
    /// From the spawn requests until every agent was `exited`.
    exited: Duration,
    /// From the spawn requests until every byte was saved or counted as dropped.
    settled: Duration,
    /// Sum of the agents' `output_bytes`.
    saved: u64,
    /// The daemon's `dropped_bytes` (all agents).
    dropped: u64,
}

impl Settled {
    /// Whether all `expected` bytes were saved; a rate over `settled` means nothing otherwise.
    fn complete(&self, expected: u64) -> bool {
        self.saved >= expected && self.dropped == 0
    }
}

/// Polls until every agent named has exited and its `expected` bytes are saved or counted as dropped
/// (the daemon drops output rather than slow an agent when saving falls behind).
async fn wait_settled(
    client: &Client,
    names: &[String],
    expected: u64,
    started: Instant,
) -> Result<Settled> {
    // One request per poll: every request costs the daemon CPU the agents compete for.
    let exited = loop {
        let agents: Vec<AgentInfo> = client.list_agents().await?;
        let mut done = 0;
        for agent in agents.iter().filter(|a| names.contains(&a.name)) {
            match agent.state {
                AgentState::Exited => done += 1,
                AgentState::Starting | AgentState::Running => {}
                other => bail!("agent {} is {other:?} ({:?})", agent.name, agent.last_error),
            }
        }
        if done == names.len() {
            break started.elapsed();
        }
        tokio::time::sleep(POLL).await;
    };
    let total = expected * names.len() as u64;
    let (mut last_seen, mut last_progress) = ((0, 0), Instant::now());
    loop {
        let query = HistoryQuery {
            limit: Some(1000),
            ..HistoryQuery::default()
        };
        let runs: Vec<RunRecord> = client.list_runs(&query).await?;
        let saved: u64 = runs
            .iter()
            .filter(|r| names.contains(&r.name))
            .map(|r| r.output_bytes)
            .sum();
        let dropped = if saved < total {
            let health: Health = client.get_health().await?;
            health.history.dropped_bytes
        } else {
            0
        };
        if saved + dropped >= total {
            return Ok(Settled {
                exited,
                settled: started.elapsed(),
                saved,
                dropped,
            });
        }
        if (saved, dropped) != last_seen {
            (last_seen, last_progress) = ((saved, dropped), Instant::now());
        } else if last_progress.elapsed() > STALL {
            bail!("output stuck at {saved} saved + {dropped} dropped of {total} bytes");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls the daemon's health until `done` (or `IDLE_WORK_WAIT` passed): the last health and the wait.
async fn wait_health(
    client: &Client,
    done: impl Fn(&Health) -> bool,
) -> Result<(Health, Duration)> {
    let started = Instant::now();
    loop {
        let health: Health = client.get_health().await?;
        if done(&health) || started.elapsed() > IDLE_WORK_WAIT {
            return Ok((health, started.elapsed()));
        }
        tokio::time::sleep(IDLE_WORK_POLL).await;
    }
}

/// A whole streamed response body as text.
pub(crate) async fn read_text(mut body: Incoming) -> Result<String> {
    let mut bytes = Vec::new();
    while let Some(chunk) = next_chunk(&mut body).await? {
        bytes.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// "N ms, R MiB/s" for saving `expected` bytes, or how much was not saved.
fn describe_saved(settled: &Settled, expected: u64) -> String {
    if settled.complete(expected) {
        format!(
            "{:.0} ms, {:.0} MiB/s",
            ms(settled.settled),
            expected as f64 / MIB / settled.settled.as_secs_f64()
        )
    } else {
        format!(
            "NOT ALL SAVED: {:.1} of {:.1} MiB saved, {:.1} MiB dropped (settled at {:.0} ms)",
            settled.saved as f64 / MIB,
            expected as f64 / MIB,
            settled.dropped as f64 / MIB,
            ms(settled.settled)
        )
    }
}

/// One agent `cat`s the input: time until it exited and until its output is saved, daemon CPU and
/// peak RSS, dropped bytes, and whether the last line reads back.
async fn throughput(
    binary: &Path,
    input: &LogInput,
    mode: Mode,
    raw: Option<&RawRates>,
    report: &mut Report,
) -> Result<()> {
    let mut daemon = Daemon::start(binary, Some(&bench_config())).await?;
    let label = mode.label();
    let name = format!("bench-{}", label.to_lowercase());
    // The terminal turns each `\n` into `\r\n`.
    let expected = match mode {
        Mode::Pty => input.bytes + input.lines,
        Mode::Pipe => input.bytes,
    };
    let cpu_before = CpuUse::of(&daemon)?;
    let started = Instant::now();
    spawn(&mut daemon, &agent(name.clone(), input.cat(), input, mode)).await?;
    let client = daemon.client();
    let settled = wait_settled(client, std::slice::from_ref(&name), expected, started).await?;
    let cpu = CpuUse::of(&daemon)?.since(&cpu_before);
    let health: Health = client.get_health().await?;

    let exit_rate = input.rate(settled.exited);
    let share = raw.map_or(String::new(), |raw| {
        format!(
            " = {:.0} % of raw {label}",
            100.0 * exit_rate / raw.of(mode)
        )
    });
    report.add(
        &format!("{label}: spawn `cat` of the input until agent exited"),
        match mode {
            Mode::Pty => ">= 90 % of raw PTY (issue 18)",
            Mode::Pipe => "none",
        },
        format!("{:.0} ms, {exit_rate:.0} MiB/s{share}", ms(settled.exited)),
        match mode {
            Mode::Pty => raw.map(|raw| exit_rate >= 0.9 * raw.pty),
            Mode::Pipe => None,
        },
    );
    report.add(
        &format!("{label}: spawn until all output saved (output_bytes)"),
        match mode {
            Mode::Pty => "none",
            Mode::Pipe => ">= 400 MiB/s",
        },
        describe_saved(&settled, expected),
        match mode {
            Mode::Pty => None,
            Mode::Pipe => Some(settled.complete(expected) && input.rate(settled.settled) >= 400.0),
        },
    );
    report.add(
        &format!("{label}: daemon CPU, spawn until saved (by thread)"),
        "none",
        cpu,
        None,
    );
    report.add(
        &format!("{label}: output not saved (dropped_bytes); stored once saved"),
        "dropped 0",
        format!(
            "dropped {} B; stored {:.1} MiB, compression {:.1}x",
            health.history.dropped_bytes,
            health.history.stored_bytes as f64 / MIB,
            settled.saved as f64 / health.history.stored_bytes.max(1) as f64
        ),
        Some(health.history.dropped_bytes == 0),
    );

    let started = Instant::now();
    let query = LogsQuery {
        tail: Some(1),
        ..LogsQuery::default()
    };
    let tail = read_text(client.get_logs(&name, &query).await?).await?;
    let read = started.elapsed();
    let same = tail.trim_end() == input.last_line;
    report.add(
        &format!("{label}: `logs?tail=1` is the input's last line"),
        "equal",
        format!(
            "{} in {:.0} ms",
            if same { "equal" } else { "DIFFERENT" },
            ms(read)
        ),
        Some(same),
    );
    if !same {
        println!("  got {tail:?}\n  expected {:?}", input.last_line);
    }

    // A burst is stored as it came and compressed once output is quiet.
    let cpu_before = CpuUse::of(&daemon)?;
    let (health, compressing) = wait_health(client, |h| h.history.uncompressed_bytes == 0).await?;
    let left = health.history.uncompressed_bytes;
    report.add(
        &format!("{label}: then until compressed (uncompressed_bytes = 0); stored"),
        "none",
        format!(
            "{}{:.0} ms; daemon CPU {}; stored {:.1} MiB, compression {:.1}x",
            if left == 0 {
                String::new()
            } else {
                format!("NOT DONE: {:.1} MiB left after ", left as f64 / MIB)
            },
            ms(compressing),
            CpuUse::of(&daemon)?.since(&cpu_before),
            health.history.stored_bytes as f64 / MIB,
            settled.saved as f64 / health.history.stored_bytes.max(1) as f64
        ),
        None,
    );

    // The peak since the daemon started, so read last.
    let peak = daemon.peak_rss_kib()?;
    report.add(
        &format!("{label}: daemon peak RSS (VmHWM)"),
        "< 64 MiB",
        format!("{:.1} MiB", mib(peak)),
        Some(peak < 64 * 1024),
    );
    Ok(())
}

/// A timed search: across agents, or in one agent's output.
enum Search {
    Across(SearchQuery),
    Within(String, LogsQuery),
}

/// Median and maximum latency of `SEARCH_RUNS` runs of a search, and its line count.
async fn time_search(client: &Client, search: &Search) -> Result<(Duration, Duration, usize)> {
    let mut samples = Vec::with_capacity(SEARCH_RUNS);
    let mut lines = 0;
    for _ in 0..SEARCH_RUNS {
        let started = Instant::now();
        let body = match search {
            Search::Across(query) => client.search_logs(query).await?,
            Search::Within(agent, query) => client.get_logs(agent, query).await?,
        };
        let text = read_text(body).await?;
        samples.push(started.elapsed());
        lines = text.lines().count();
    }
    let (median, max) = median_p95(samples);
    Ok((median, max, lines))
}

/// `SEARCH_AGENTS` paced pipe agents save 1 GiB; once it is indexed, three searches are timed.
async fn search(binary: &Path, input: &LogInput, report: &mut Report) -> Result<()> {
    let mut daemon = Daemon::start(binary, Some(&bench_config())).await?;
    let names: Vec<String> = (0..SEARCH_AGENTS)
        .map(|i| format!("bench-search-{i}"))
        .collect();
    let cpu_before = CpuUse::of(&daemon)?;
    let started = Instant::now();
    for name in &names {
        let spec = agent(name.clone(), input.paced_cat(), input, Mode::Pipe);
        spawn(&mut daemon, &spec).await?;
    }
    let client = daemon.client();
    let settled = wait_settled(client, &names, input.bytes, started).await?;
    let cpu_saved = CpuUse::of(&daemon)?;
    // Searches scan what is not indexed yet; they are timed once it is (or the wait is given up).
    let (health, indexing) = wait_health(client, |h| h.history.unindexed_bytes == 0).await?;
    let cpu_indexed = CpuUse::of(&daemon)?;
    let total = input.bytes * SEARCH_AGENTS as u64;
    report.add(
        &format!(
            "search: 4 pipe agents write the input ({PACE_CHUNK_MIB} MiB per {PACE_PAUSE} s each, \
             1 GiB in all) until all saved"
        ),
        "dropped 0",
        format!(
            "{}; all exited at {:.0} ms; daemon CPU {}",
            describe_saved(&settled, total),
            ms(settled.exited),
            cpu_saved.since(&cpu_before),
        ),
        Some(settled.complete(total)),
    );
    let unindexed = health.history.unindexed_bytes;
    report.add(
        "search: last byte saved until unindexed_bytes = 0",
        "none",
        format!(
            "{}{:.0} ms; daemon CPU {}",
            if unindexed == 0 {
                String::new()
            } else {
                format!(
                    "NOT DONE: {:.1} MiB unindexed after ",
                    unindexed as f64 / MIB
                )
            },
            ms(indexing),
            cpu_indexed.since(&cpu_saved)
        ),
        None,
    );
    let size = |file: &str| {
        std::fs::metadata(daemon.home().join(file)).map_or(0.0, |m| m.len() as f64 / MIB)
    };
    report.add(
        "search: history.db + -wal on disk",
        "none",
        format!(
            "{:.0} + {:.0} MiB (stored_bytes {:.0} MiB of {:.0} MiB saved, compression {:.1}x)",
            size("history.db"),
            size("history.db-wal"),
            health.history.stored_bytes as f64 / MIB,
            settled.saved as f64 / MIB,
            settled.saved as f64 / health.history.stored_bytes.max(1) as f64
        ),
        None,
    );

    let rare = &input.rare_word;
    let across = |grep: &str| {
        Search::Across(SearchQuery {
            grep: grep.to_owned(),
            limit: Some(1000),
            ..SearchQuery::default()
        })
    };
    let within = LogsQuery {
        grep: Some(rare.clone()),
        ..LogsQuery::default()
    };
    let queries = [
        (
            format!("/v1/logs?grep={rare}&limit=1000"),
            across(rare),
            SEARCH_AGENTS,
        ),
        (
            format!("/v1/agents/{}/logs?grep={rare}", names[0]),
            Search::Within(names[0].clone(), within),
            1,
        ),
        (
            "/v1/logs?grep=status&limit=1000".to_owned(),
            across("status"),
            1000,
        ),
    ];
    for (path, search, expected) in queries {
        let (median, max, lines) = time_search(client, &search).await?;
        report.add(
            &format!("search: `{path}` (median of {SEARCH_RUNS})"),
            "< 1 s",
            format!(
                "median {:.0} ms, max {:.0} ms, {lines} lines (expected {expected})",
                ms(median),
                ms(max)
            ),
            Some(median < Duration::from_secs(1) && lines == expected),
        );
    }
    Ok(())
}
