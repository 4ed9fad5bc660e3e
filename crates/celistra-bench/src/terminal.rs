//! Terminal fan-out phases: one agent writes 64 MiB of timestamped lines as fast as it can while 1,
//! 10 or 100 viewers are attached to its terminal over WebSockets (TCP loopback): what the viewers
//! cost the agent, how late lines reach them, whether they get every byte, and the daemon's peak RSS.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::fd::AsFd as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use celistra_client::{Client, Terminal, TerminalEvent};
use celistra_proto::{AgentInfo, AgentSpec, AgentState, TerminalRole, TerminalServerMessage};
use futures_util::future::try_join_all;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::logs::{CpuUse, SplitMix};
use crate::{Daemon, Report, mib, ms, phase_within};

/// What the agent writes in each phase.
const EMIT_BYTES: u64 = 64 * 1024 * 1024;
/// Length of every emitted line, `\n` included; the last line also takes the remainder.
const LINE_BYTES: u64 = 100;
/// The emitter writes this much at a time, so a line's timestamp is at most a few lines old when
/// the line reaches the terminal.
const EMIT_CHUNK: usize = 4096;
/// Padding characters: printable, varied, no escape sequences.
const TEXT: &[u8; 64] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -";
/// Viewer counts, one phase and one fresh daemon each.
const VIEWERS: [usize; 3] = [1, 10, 100];
/// Upper bound of each phase: attaching, 64 MiB, `DRAIN` and the daemon's stop.
const TERMINAL_PHASE_TIMEOUT: Duration = Duration::from_secs(180);
/// How often the agent's state is polled.
const POLL: Duration = Duration::from_millis(5);
/// How long viewers may take to receive the rest (and `exit`) after the agent exited.
const DRAIN: Duration = Duration::from_secs(30);
/// After `exit`, a viewer reads on until nothing came for this long: output the daemon read after
/// the run ended, or a resync it still owed, arrives after `exit`.
const AFTER_EXIT_IDLE: Duration = Duration::from_secs(1);
/// How long stopped viewers get to hand in what they counted.
const STOP_WAIT: Duration = Duration::from_secs(5);
const MIB: f64 = 1024.0 * 1024.0;

/// Microseconds since the Unix epoch (`CLOCK_REALTIME`): the emitter and the viewers are different
/// processes, so they need a clock both can read.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The agent's program, `celistra-bench emit BYTES`: `BYTES` in lines of `LINE_BYTES` (the last
/// one longer by the remainder), each `t=<now_us> ` and varied text, written as fast as the
/// terminal takes them.
pub(crate) fn emit(bytes: Option<&str>) -> Result<()> {
    let total: u64 = bytes
        .context("usage: celistra-bench emit BYTES")?
        .parse()
        .context("emit needs a byte count")?;
    if total < LINE_BYTES {
        bail!("emit needs at least {LINE_BYTES} bytes");
    }
    // Straight to the fd: std's stdout is line-buffered and would write each line on its own.
    let mut out = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    let mut rng = SplitMix(0x7E57_0001);
    let lines = total / LINE_BYTES;
    let mut chunk = Vec::with_capacity(EMIT_CHUNK + 2 * LINE_BYTES as usize);
    for line in 0..lines {
        let length = if line + 1 == lines {
            LINE_BYTES + total % LINE_BYTES
        } else {
            LINE_BYTES
        } as usize;
        let end = chunk.len() + length - 1;
        write!(chunk, "t={} ", now_us())?;
        while chunk.len() < end {
            // Eight characters per draw: the emitter's own CPU is taken from the daemon's cores.
            for byte in rng.next().to_le_bytes() {
                if chunk.len() < end {
                    chunk.push(TEXT[usize::from(byte) % TEXT.len()]);
                }
            }
        }
        chunk.push(b'\n');
        if chunk.len() >= EMIT_CHUNK {
            out.write_all(&chunk)?;
            chunk.clear();
        }
    }
    out.write_all(&chunk)?;
    Ok(())
}

/// What a viewer receives of `EMIT_BYTES`: the terminal turns each `\n` into `\r\n`.
fn expected_bytes() -> u64 {
    EMIT_BYTES + EMIT_BYTES / LINE_BYTES
}

/// Checks one received line (without its `\n`) and, if `time` is set, parses its timestamp:
/// `None` if it is not a whole emitted line (wrong start or length), which means output was lost,
/// reordered or corrupted; `Some(None)` for a sound line that was not timed.
fn line_shape(line: &[u8], time: bool) -> Option<Option<u64>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let length = line.len() as u64 + 1;
    if length != LINE_BYTES && length != LINE_BYTES + EMIT_BYTES % LINE_BYTES {
        return None;
    }
    let digits = line.strip_prefix(b"t=")?;
    if !time {
        return Some(None);
    }
    let digits = &digits[..digits.iter().position(|&b| b == b' ')?];
    Some(Some(std::str::from_utf8(digits).ok()?.parse().ok()?))
}

/// Latencies in microseconds: exact below 64 µs, then 32 buckets per power of two (each at most
/// 3 % wide), so that a viewer's 670,000 samples take a fixed 7 KiB; capped at `u32::MAX` µs.
struct Histogram {
    counts: Vec<u64>,
}

impl Histogram {
    const BUCKETS: usize = 64 + 26 * 32;

    fn bucket(us: u64) -> usize {
        let us = us.min(u64::from(u32::MAX));
        if us < 64 {
            return us as usize;
        }
        let top = 63 - us.leading_zeros() as usize;
        64 + (top - 6) * 32 + (us >> (top - 5)) as usize - 32
    }

    /// The smallest value of bucket `index`.
    fn lower_bound(index: usize) -> u64 {
        if index < 64 {
            return index as u64;
        }
        let top = (index - 64) / 32 + 6;
        (((index - 64) % 32 + 32) as u64) << (top - 5)
    }

    fn record(&mut self, us: u64) {
        self.counts[Self::bucket(us)] += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
    }

    fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The upper end of the bucket holding the nearest-rank `q` quantile (0 < q ≤ 1).
    fn quantile(&self, q: f64) -> Duration {
        let rank = ((self.count() as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Duration::from_micros(Self::lower_bound(index + 1));
            }
        }
        Duration::ZERO
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; Self::BUCKETS],
        }
    }
}

/// What one viewer received.
#[derive(Default)]
struct Viewer {
    /// Output bytes outside replays.
    live: u64,
    /// Output bytes of replays (after `hello` and each `resync`).
    replayed: u64,
    resyncs: u64,
    /// Sum of the `skipped_bytes` of its `resync`s.
    skipped: u64,
    /// Complete lines that are not whole emitted lines.
    malformed: u64,
    /// Write-to-receive time of each line that arrived live.
    latency: Histogram,
    /// Whether `exit` arrived (rather than the viewer being stopped while waiting for it).
    exit_seen: bool,
    /// Output bytes and resyncs that came after `exit`.
    output_after_exit: u64,
    resyncs_after_exit: u64,
    /// Close code and reason when the daemon closed the connection.
    closed: Option<(u16, String)>,
    /// The start of a line split across frames, and whether it arrived live.
    partial: Vec<u8>,
    partial_live: bool,
}

impl Viewer {
    /// Every byte the agent wrote either arrived live or was announced as skipped.
    fn complete(&self) -> bool {
        self.live + self.skipped == expected_bytes()
    }

    fn output(&mut self, bytes: &[u8], live: bool) {
        if live {
            self.live += bytes.len() as u64;
        } else {
            self.replayed += bytes.len() as u64;
        }
        let now = now_us();
        let mut rest = bytes;
        // Only the first line of each frame is timed (the oldest in it, so the figure errs high);
        // the others are only checked. Timing every line cost the viewers, which share the two
        // cores with the daemon and the agent, more CPU than the daemon spent on them.
        let mut timed = false;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            let (stamp, line_live) = if self.partial.is_empty() {
                (line_shape(&rest[..end], !timed), live)
            } else {
                self.partial.extend_from_slice(&rest[..end]);
                let stamp = line_shape(&self.partial, !timed);
                self.partial.clear();
                (stamp, self.partial_live)
            };
            match stamp {
                None => self.malformed += 1,
                // A line that started in a replay was written before the viewer caught up.
                Some(Some(written)) if line_live => {
                    self.latency.record(now.saturating_sub(written));
                    timed = true;
                }
                Some(_) => {}
            }
            rest = &rest[end + 1..];
        }
        if !rest.is_empty() {
            if self.partial.is_empty() {
                self.partial_live = live;
            }
            self.partial.extend_from_slice(rest);
        }
    }
}

/// Attaches a viewer and reads until `replayed`, so it is live before the agent writes.
async fn attach(client: &Client, agent: &str) -> Result<Terminal> {
    live(client.attach(agent, TerminalRole::Viewer).await?).await
}

/// Reads an opened terminal until `replayed`: what comes next is live.
pub(crate) async fn live(mut terminal: Terminal) -> Result<Terminal> {
    loop {
        match terminal.next().await {
            TerminalEvent::Control(TerminalServerMessage::Replayed { .. }) => return Ok(terminal),
            TerminalEvent::Closed { code, reason } => {
                bail!("terminal closed before `replayed`: {code} {reason}")
            }
            // `hello`, and the replay of what the gate wrote: nothing.
            _ => {}
        }
    }
}

/// Reads a viewer's events until `AFTER_EXIT_IDLE` after `exit`, the daemon closing it, or `stop`.
async fn view(mut terminal: Terminal, mut stop: watch::Receiver<bool>) -> Viewer {
    let mut viewer = Viewer::default();
    let mut live = true;
    loop {
        let event = tokio::select! {
            event = terminal.next() => event,
            _ = stop.changed() => break,
            _ = tokio::time::sleep(AFTER_EXIT_IDLE), if viewer.exit_seen => break,
        };
        match event {
            TerminalEvent::Output(bytes) => {
                if viewer.exit_seen {
                    viewer.output_after_exit += bytes.len() as u64;
                }
                viewer.output(&bytes, live);
            }
            TerminalEvent::Control(TerminalServerMessage::Resync { skipped_bytes }) => {
                if viewer.exit_seen {
                    viewer.resyncs_after_exit += 1;
                }
                viewer.resyncs += 1;
                viewer.skipped += skipped_bytes;
                // The skipped bytes broke the line; the replay starts at a line start.
                viewer.partial.clear();
                live = false;
            }
            TerminalEvent::Control(TerminalServerMessage::Replayed { .. }) => live = true,
            TerminalEvent::Control(TerminalServerMessage::Exit { .. }) => viewer.exit_seen = true,
            TerminalEvent::Control(_) => {}
            TerminalEvent::Closed { code, reason } => {
                viewer.closed = Some((code, reason));
                return viewer;
            }
        }
    }
    // Best effort: the daemon is stopped right after anyway.
    let _ = timeout(Duration::from_secs(1), terminal.close()).await;
    viewer
}

/// Moves finished viewers from `running` to `done` until none is left.
async fn collect(running: &mut JoinSet<Viewer>, done: &mut Vec<Viewer>) -> Result<()> {
    while let Some(viewer) = running.join_next().await {
        done.push(viewer.context("a viewer task failed")?);
    }
    Ok(())
}

/// Polls the agent until it has exited; the time since `started`.
async fn wait_exited(client: &Client, name: &str, started: Instant) -> Result<Duration> {
    loop {
        let agent: AgentInfo = client.get_agent(name).await?;
        match agent.state {
            AgentState::Exited => return Ok(started.elapsed()),
            AgentState::Starting | AgentState::Running => {}
            other => bail!(
                "agent is {other:?} (exit code {:?}, {:?})",
                agent.exit_code,
                agent.last_error
            ),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Runs the phases for 1, 10 and 100 viewers; one result per phase.
pub(crate) async fn phases(binary: &Path, report: &mut Report) -> Vec<Result<()>> {
    let mut single = None;
    let mut results = Vec::new();
    for viewers in VIEWERS {
        let result = phase_within(
            TERMINAL_PHASE_TIMEOUT,
            &format!("terminal, {viewers} viewers"),
            fan_out(binary, viewers, single, report),
        )
        .await;
        if viewers == 1 {
            single = result.as_ref().ok().copied();
        }
        results.push(result.map(drop));
    }
    results
}

/// One agent writes `EMIT_BYTES` to `count` viewers attached beforehand; returns how long the agent
/// took. `single` is that time with one viewer, to compare with.
async fn fan_out(
    binary: &Path,
    count: usize,
    single: Option<Duration>,
    report: &mut Report,
) -> Result<Duration> {
    let mut daemon = Daemon::start(binary, None).await?;
    // In the workspace: a sandboxed agent sees none of the daemon's state directory.
    let go = daemon.work().join("go");
    let name = "bench-terminal";
    let spec = AgentSpec {
        name: name.into(),
        // Gated, so that every viewer is attached and live before the first byte.
        command: format!(
            "while [ ! -e '{}' ]; do sleep 0.01; done; exec '{}' emit {EMIT_BYTES}",
            go.display(),
            std::env::current_exe()?.display()
        ),
        workspace: Some(daemon.work().display().to_string()),
        ..Default::default()
    };
    let _: AgentInfo = daemon.client().spawn_agent(&spec).await?;
    daemon.wait_running(1).await?;
    // Viewers connect over TCP, as browsers do.
    let addr: SocketAddr = std::fs::read_to_string(daemon.home().join("http.addr"))?
        .trim()
        .parse()?;
    let tcp = daemon.client().clone().over_tcp(addr);
    let terminals = try_join_all((0..count).map(|_| attach(&tcp, name))).await?;
    let (stop, stopped) = watch::channel(false);
    let mut running = JoinSet::new();
    for terminal in terminals {
        running.spawn(view(terminal, stopped.clone()));
    }

    let cpu_before = CpuUse::of(&daemon)?;
    std::fs::write(&go, "")?;
    let started = Instant::now();
    let elapsed = wait_exited(daemon.client(), name, started).await?;
    let cpu = CpuUse::of(&daemon)?.since(&cpu_before);

    // Viewers end at `exit`; those still behind get `DRAIN` to catch up, then are stopped.
    let mut viewers = Vec::with_capacity(count);
    let drained = timeout(DRAIN, collect(&mut running, &mut viewers)).await;
    if drained.is_err() {
        let _ = stop.send(true);
        timeout(STOP_WAIT, collect(&mut running, &mut viewers))
            .await
            .context("viewers did not stop")??;
    } else {
        drained??;
    }
    let peak = daemon.peak_rss_kib()?;

    let label = format!(
        "terminal, {count} viewer{}",
        if count == 1 { "" } else { "s" }
    );
    let slower = single.map(|one| elapsed.as_secs_f64() / one.as_secs_f64() - 1.0);
    report.add(
        &format!("{label}: agent writes 64 MiB, GO until exited"),
        if count == 100 {
            "<= 10 % slower than 1 viewer"
        } else {
            "none"
        },
        format!(
            "{:.0} ms, {:.0} MiB/s{}; daemon CPU {cpu}",
            ms(elapsed),
            EMIT_BYTES as f64 / MIB / elapsed.as_secs_f64(),
            slower.map_or(String::new(), |s| format!(
                ", {:+.1} % vs 1 viewer",
                100.0 * s
            ))
        ),
        slower.filter(|_| count == 100).map(|s| s <= 0.10),
    );

    let mut latency = Histogram::default();
    for viewer in &viewers {
        latency.merge(&viewer.latency);
    }
    let samples = latency.count();
    let p99 = latency.quantile(0.99);
    report.add(
        &format!("{label}: latency write to receive (all viewers' lines)"),
        if count == 10 { "p99 <= 20 ms" } else { "none" },
        if samples == 0 {
            "no samples".to_owned()
        } else {
            format!(
                "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({samples} lines)",
                ms(latency.quantile(0.5)),
                ms(p99),
                ms(latency.quantile(1.0))
            )
        },
        (count == 10).then_some(samples > 0 && p99 <= Duration::from_millis(20)),
    );

    let mut live: Vec<u64> = viewers.iter().map(|v| v.live).collect();
    live.sort_unstable();
    let median = live.get(live.len() / 2).copied().unwrap_or_default();
    let sum = |field: fn(&Viewer) -> u64| viewers.iter().map(field).sum::<u64>();
    report.add(
        &format!("{label}: received live per viewer (min / median); resyncs"),
        "none",
        format!(
            "{:.1} / {:.1} of {:.1} MiB; {} resyncs, {:.1} MiB skipped, {:.1} MiB replayed (all viewers)",
            live.first().copied().unwrap_or_default() as f64 / MIB,
            median as f64 / MIB,
            expected_bytes() as f64 / MIB,
            sum(|v| v.resyncs),
            sum(|v| v.skipped) as f64 / MIB,
            sum(|v| v.replayed) as f64 / MIB
        ),
        None,
    );

    let complete = viewers.iter().filter(|v| v.complete()).count();
    let exit_seen = viewers.iter().filter(|v| v.exit_seen).count();
    let malformed = sum(|v| v.malformed);
    let mut closes: Vec<String> = viewers
        .iter()
        .filter_map(|v| v.closed.as_ref())
        .map(|(code, reason)| format!("{code} {reason}"))
        .collect();
    closes.sort();
    closes.dedup();
    let late = viewers
        .iter()
        .filter(|v| v.output_after_exit > 0 || v.resyncs_after_exit > 0)
        .count();
    report.add(
        &format!("{label}: live + skipped = written, `exit` seen, lines intact"),
        "all viewers",
        format!(
            "{complete} and {exit_seen} of {count}, {malformed} malformed lines; \
             after `exit`: {late} viewers got {:.1} KiB of output, {} resyncs{}",
            sum(|v| v.output_after_exit) as f64 / 1024.0,
            sum(|v| v.resyncs_after_exit),
            if closes.is_empty() {
                String::new()
            } else {
                format!("; closed by the daemon: {}", closes.join(", "))
            }
        ),
        Some(viewers.len() == count && complete == count && exit_seen == count && malformed == 0),
    );

    report.add(
        &format!("{label}: daemon peak RSS (VmHWM)"),
        "none",
        format!("{:.1} MiB", mib(peak)),
        None,
    );
    Ok(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_contiguous_and_narrow() {
        for index in 0..Histogram::BUCKETS {
            let low = Histogram::lower_bound(index);
            let high = Histogram::lower_bound(index + 1);
            assert_eq!(Histogram::bucket(low), index);
            assert_eq!(Histogram::bucket(high - 1), index);
            assert!((high - low) as f64 <= 1.0_f64.max(low as f64 * 0.032));
        }
    }

    #[test]
    fn lines_split_across_frames_are_timed_once() {
        let mut viewer = Viewer::default();
        let stamp = format!("t={} ", now_us());
        let padding = "x".repeat(LINE_BYTES as usize - 1 - stamp.len());
        let line = format!("{stamp}{padding}\r\n");
        let (head, tail) = line.as_bytes().split_at(30);
        viewer.output(head, true);
        viewer.output(tail, true);
        viewer.output(b"t=12 short\r\n", true);
        assert_eq!(viewer.latency.count(), 1);
        assert_eq!(viewer.malformed, 1);
        assert_eq!(viewer.live, line.len() as u64 + 12);
        // Three whole lines in one frame: the first is timed, all are checked.
        viewer.output(line.repeat(3).as_bytes(), true);
        assert_eq!(viewer.latency.count(), 2);
        assert_eq!(viewer.malformed, 1);
    }
}
