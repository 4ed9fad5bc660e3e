//! Fleet phases (issue 16): `fleet ls` through a hub with 10 real nodes × 100 agents and with 1,000
//! simulated nodes × 10 agents, the hub's memory per linked node, idle link traffic, keystroke echo
//! through the hub against a direct terminal, reconnection after a partition heals, and a hub
//! restart with 100 nodes. Simulated nodes run in this process on the daemon's own link code
//! ([`celistra_daemon::fleet_link`]), each serving a tiny fixed router.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use axum::Json;
use axum::body::Body;
use axum::extract::Path as UrlPath;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use celistra_client::{Client, SseParser, TerminalEvent};
use celistra_proto::{
    AgentInfo, AgentSpec, AgentState, ApplyReport, ApplyRequest, EffectiveSettings, EventsQuery,
    FleetEvent, Health, IoMode, JoinRequest, Machine, MachineAgents, PairingCode, Signal,
    TerminalRole, TerminalTicket, TicketRequest,
};
use futures_util::StreamExt;
use futures_util::future::try_join_all;
use hyper::Method;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{Daemon, Report, mib, ms, phase_within, sleeper, sleepers, time_run, time_runs};

/// Real node daemons, and agents on each.
const REAL_NODES: usize = 10;
const REAL_AGENTS: usize = 100;
/// Simulated nodes and their agents for the large `fleet ls`.
const SIM_NODES: usize = 1000;
const SIM_AGENTS: usize = 10;
/// Simulated nodes per group of the memory phase (idle, then with a 100-agent cache); the second
/// group's hub is then restarted.
const MEMORY_NODES: usize = 100;
const CACHE_AGENTS: usize = 100;
/// Requests of `GET /v1/fleet/agents` timed per size.
const LS_REAL_RUNS: usize = 300;
const LS_SIM_RUNS: usize = 150;
/// Keystrokes timed per path (direct and through the hub, interleaved).
const ECHOES: usize = 300;
/// How long an idle link's bytes are counted.
const IDLE_WINDOW: Duration = Duration::from_secs(60);
/// A link is idle this long after its last event: the hub witnesses 10 s after events.
const SETTLE: Duration = Duration::from_secs(15);
/// Partitions, shorter and longer than the links' PING timeouts (hub 20 s, node 25 s).
const PARTITIONS: [Duration; 6] = [
    Duration::from_secs(3),
    Duration::from_secs(3),
    Duration::from_secs(8),
    Duration::from_secs(8),
    Duration::from_secs(35),
    Duration::from_secs(35),
];
/// Enrolments in flight at once (the hub paces handshakes at 100/s anyway), and how often one that
/// could not reach the hub is tried again.
const ENROLLING: usize = 64;
const JOIN_ATTEMPTS: usize = 3;
const ALL_ONLINE_TIMEOUT: Duration = Duration::from_secs(120);
const REAL_PHASE_TIMEOUT: Duration = Duration::from_secs(420);
const SIM_PHASE_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs the fleet phases; one result per phase.
pub(crate) async fn phases(binary: &Path, report: &mut Report) -> Vec<Result<()>> {
    vec![
        phase_within(
            REAL_PHASE_TIMEOUT,
            "fleet, real nodes",
            real_nodes(binary, report),
        )
        .await,
        phase_within(
            SIM_PHASE_TIMEOUT,
            "fleet, 1000 simulated nodes",
            thousand_simulated(binary, report),
        )
        .await,
        phase_within(
            SIM_PHASE_TIMEOUT,
            "fleet, memory and hub restart",
            memory_and_restart(binary, report),
        )
        .await,
    ]
}

/// Nearest-rank quantile `q` (0 < q ≤ 1) of sorted samples.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn p50_p99(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (quantile(&samples, 0.5), quantile(&samples, 0.99))
}

/// Sends a request and decodes its JSON answer.
async fn call<T: DeserializeOwned>(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<T> {
    let (status, bytes) = fetch(client, method, path, body).await?;
    celistra_client::decode(status, &bytes).with_context(|| path.to_owned())
}

/// Sends a request and reads its whole answer.
async fn fetch(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(StatusCode, Vec<u8>)> {
    let mut response = client.send(method, path, body).await?;
    let status = response.status();
    let mut bytes = Vec::new();
    while let Some(chunk) = celistra_client::next_chunk(response.body_mut()).await? {
        bytes.extend_from_slice(&chunk);
    }
    Ok((status, bytes))
}

/// A hub daemon (`--hub`), its link address and certificate fingerprint.
struct Hub {
    daemon: Daemon,
    link: SocketAddr,
    fingerprint: String,
}

impl Hub {
    async fn start(binary: &Path) -> Result<Hub> {
        let daemon = Daemon::start_with(binary, None, &hub_args("127.0.0.1:0")).await?;
        let link = std::fs::read_to_string(daemon.home().join("hub.addr"))?
            .trim()
            .parse()?;
        let fingerprint = daemon.pairing_code().await?.fingerprint;
        Ok(Hub {
            daemon,
            link,
            fingerprint,
        })
    }

    /// A join request with a fresh pairing code, to dial `via` (the link address, or a relay's).
    async fn join_request(&self, via: SocketAddr) -> Result<JoinRequest> {
        let code = self.daemon.pairing_code().await?;
        Ok(JoinRequest {
            hub: via.to_string(),
            code: code.code,
            fingerprint: self.fingerprint.clone(),
        })
    }

    /// The hub's API over TCP, as a browser or a remote `ctl` reaches it.
    fn tcp_client(&self) -> Result<Client> {
        let addr: SocketAddr = std::fs::read_to_string(self.daemon.home().join("http.addr"))?
            .trim()
            .parse()?;
        Ok(self.daemon.client().clone().over_tcp(addr))
    }

    /// Polls `GET /v1/machines` until every machine of `names` is online.
    async fn wait_online(&self, names: &BTreeSet<String>) -> Result<()> {
        let started = Instant::now();
        loop {
            let machines: Vec<Machine> =
                call(self.daemon.client(), Method::GET, "/v1/machines", None).await?;
            let online = machines
                .iter()
                .filter(|m| m.online && names.contains(&m.name))
                .count();
            if online == names.len() {
                return Ok(());
            }
            if started.elapsed() > ALL_ONLINE_TIMEOUT {
                bail!(
                    "{online} of {} machines online after {ALL_ONLINE_TIMEOUT:?}",
                    names.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `GET /v1/fleet/agents` until the cache holds `count` agents of other machines.
    async fn wait_cached(&self, count: usize) -> Result<()> {
        let started = Instant::now();
        loop {
            let cached = cached_agents(self.daemon.client()).await?;
            if cached == count {
                return Ok(());
            }
            if started.elapsed() > ALL_ONLINE_TIMEOUT {
                bail!("the hub caches {cached} of {count} agents after {ALL_ONLINE_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn hub_args(link: &str) -> [&str; 5] {
    ["--hub", "--hub-listen", link, "--machine-name", "hub"]
}

/// Agents listed by `GET /v1/fleet/agents`, the hub's own excluded.
async fn cached_agents(client: &Client) -> Result<usize> {
    let all: Vec<MachineAgents> = call(client, Method::GET, FLEET_AGENTS, None).await?;
    Ok(count_agents(&all))
}

const FLEET_AGENTS: &str = "/v1/fleet/agents";

fn count_agents(all: &[MachineAgents]) -> usize {
    all.iter()
        .filter(|m| m.machine != "hub")
        .map(|m| m.agents.len())
        .sum()
}

impl Daemon {
    async fn pairing_code(&self) -> Result<PairingCode> {
        call(self.client(), Method::POST, "/v1/fleet/pairing-codes", None).await
    }
}

/// A node daemon with `agents` unsandboxed sleepers, joined to `hub` through `via`.
async fn real_node(
    binary: &Path,
    name: &str,
    agents: usize,
    hub: &Hub,
    via: SocketAddr,
) -> Result<Daemon> {
    let mut node = Daemon::start_with(binary, None, &["--machine-name", name]).await?;
    let request = ApplyRequest {
        agents: sleepers(agents),
        prune: false,
        dry_run: false,
    };
    let _: ApplyReport = node.client().apply(&request).await?;
    node.wait_running(agents).await?;
    let join = serde_json::to_vec(&hub.join_request(via).await?)?;
    let _: serde_json::Value =
        call(node.client(), Method::POST, "/v1/fleet/join", Some(join)).await?;
    Ok(node)
}

/// `GET /v1/fleet/agents` over TCP `runs` times, each on a new connection and its count checked:
/// the report's text (p50 and p99 until the last byte, and with the JSON decoded) and the p99
/// with the JSON decoded, which is the end-to-end figure.
async fn time_fleet_ls(client: &Client, runs: usize, count: usize) -> Result<(String, Duration)> {
    let mut received = Vec::with_capacity(runs);
    let mut decoded = Vec::with_capacity(runs);
    let mut size = 0;
    for _ in 0..runs {
        let started = Instant::now();
        let (status, bytes) = fetch(client, Method::GET, FLEET_AGENTS, None).await?;
        received.push(started.elapsed());
        let all: Vec<MachineAgents> = celistra_client::decode(status, &bytes)?;
        decoded.push(started.elapsed());
        let listed = count_agents(&all);
        ensure!(listed == count, "listed {listed} agents, not {count}");
        size = bytes.len();
    }
    let (received_p50, received_p99) = p50_p99(received);
    let (p50, p99) = p50_p99(decoded);
    let text = format!(
        "decoded: p50 {:.1} ms, p99 {:.1} ms; last byte: p50 {:.1} ms, p99 {:.1} ms ({:.0} KiB)",
        ms(p50),
        ms(p99),
        ms(received_p50),
        ms(received_p99),
        size as f64 / 1024.0
    );
    Ok((text, p99))
}

/// Figures 1, 4, 5 and 6: a hub and 10 real node daemons of 100 agents each, the last one linked
/// through a relay that counts and partitions.
async fn real_nodes(binary: &Path, report: &mut Report) -> Result<()> {
    let hub = Hub::start(binary).await?;
    let relay = Relay::start(hub.link).await?;
    let names: Vec<String> = (0..REAL_NODES).map(|i| format!("node-{i:02}")).collect();
    let nodes = try_join_all(names.iter().enumerate().map(|(i, name)| {
        let via = if i + 1 == REAL_NODES {
            relay.addr
        } else {
            hub.link
        };
        real_node(binary, name, REAL_AGENTS, &hub, via)
    }))
    .await?;
    let joined = Instant::now();
    hub.wait_online(&names.iter().cloned().collect()).await?;
    hub.wait_cached(REAL_NODES * REAL_AGENTS).await?;
    eprintln!("fleet: {REAL_NODES} real nodes linked and cached");

    let tcp = hub.tcp_client()?;
    // First while the hub still takes each node's event backlog (one agent fetch per event),
    // then once it is idle.
    let (text, p99) = time_fleet_ls(&tcp, LS_REAL_RUNS, REAL_NODES * REAL_AGENTS).await?;
    report.add(
        "`GET /v1/fleet/agents` on the hub, 10 real nodes × 100 agents, right after their caches filled",
        "p99 <= 50 ms",
        text,
        Some(p99 <= Duration::from_millis(50)),
    );
    wait_idle(&hub.daemon).await?;
    let quiet = joined.elapsed();
    let (text, p99) = time_fleet_ls(&tcp, LS_REAL_RUNS, REAL_NODES * REAL_AGENTS).await?;
    report.add(
        "`GET /v1/fleet/agents` on the hub, 10 real nodes × 100 agents, hub idle (TCP, new connection each)",
        "p99 <= 50 ms",
        format!("{text}; hub idle {:.1} s after the nodes joined", quiet.as_secs_f64()),
        Some(p99 <= Duration::from_millis(50)),
    );
    ctl_ls_all_machines(&hub.daemon, report).await?;

    echo(&hub, &nodes[0], &names[0], report).await?;

    eprintln!("fleet: counting a link's idle traffic for {IDLE_WINDOW:?}");
    tokio::time::sleep(SETTLE.saturating_sub(joined.elapsed())).await;
    let before = relay.bytes();
    tokio::time::sleep(IDLE_WINDOW).await;
    let bytes = relay.bytes() - before;
    let rate = bytes as f64 / IDLE_WINDOW.as_secs_f64();
    report.add(
        "idle link traffic per node, both directions, TCP payload (TLS records included)",
        "<= 50 B/s",
        format!("{rate:.1} B/s ({bytes} B in {} s)", IDLE_WINDOW.as_secs()),
        Some(rate <= 50.0),
    );

    partitions(
        &hub,
        &nodes[REAL_NODES - 1],
        &names[REAL_NODES - 1],
        &relay,
        report,
    )
    .await
}

/// Waits until the daemon used under 2 % of a core over a second.
async fn wait_idle(daemon: &Daemon) -> Result<()> {
    let started = Instant::now();
    loop {
        let cpu = daemon.cpu_time()?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        if daemon.cpu_time()? - cpu < Duration::from_millis(20) {
            return Ok(());
        }
        ensure!(
            started.elapsed() < ALL_ONLINE_TIMEOUT,
            "the hub is still busy after {ALL_ONLINE_TIMEOUT:?}"
        );
    }
}

/// `celistrad ctl ls --all-machines` on the hub, if this build has it.
async fn ctl_ls_all_machines(hub: &Daemon, report: &mut Report) -> Result<()> {
    let command = || {
        let mut command = hub.ctl_ls();
        // A build without the flag says so on stderr; the report says it instead.
        command
            .arg("--all-machines")
            .stderr(std::process::Stdio::null());
        command
    };
    if time_run(command()).await.is_err() {
        report.add(
            "`ctl ls --all-machines`, 10 real nodes × 100 agents",
            "p99 <= 50 ms",
            "not measured: this celistrad has no `ctl ls --all-machines`".into(),
            None,
        );
        return Ok(());
    }
    let (p50, p99) = p50_p99(time_runs(crate::SAMPLES * 5, command).await?);
    report.add(
        "`ctl ls --all-machines` wall time, 10 real nodes × 100 agents",
        "p99 <= 50 ms",
        format!("p50 {:.1} ms, p99 {:.1} ms", ms(p50), ms(p99)),
        Some(p99 <= Duration::from_millis(50)),
    );
    Ok(())
}

/// Figure 5: one keystroke's echo from a raw-mode `cat`, directly on the node and through the
/// hub, interleaved; one agent each, so that neither terminal sees the other's echoes.
async fn echo(hub: &Hub, node: &Daemon, machine: &str, report: &mut Report) -> Result<()> {
    let mut agents = Vec::new();
    for name in ["bench-echo-direct", "bench-echo-hub"] {
        let spec = AgentSpec {
            command: "stty raw -echo && exec cat".into(),
            ..sleeper(name.into())
        };
        let info: AgentInfo = node.client().spawn_agent(&spec).await?;
        agents.push(info.id);
    }
    // `stty` has run by then: a keystroke typed before it would be echoed twice (by the cooked
    // terminal, then by `cat`), and the second echo would end the next sample early.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let node_addr: SocketAddr = std::fs::read_to_string(node.home().join("http.addr"))?
        .trim()
        .parse()?;
    let direct = node.client().clone().over_tcp(node_addr);
    let mut direct =
        crate::terminal::live(direct.attach(&agents[0], TerminalRole::Writer).await?).await?;
    let hub_tcp = hub.tcp_client()?;
    let request = serde_json::to_vec(&TicketRequest {
        role: TerminalRole::Writer,
    })?;
    let prefix = format!("/v1/machines/{machine}/");
    let ticket: TerminalTicket = call(
        &hub_tcp,
        Method::POST,
        &format!("{prefix}agents/{}/terminal/tickets", agents[1]),
        Some(request),
    )
    .await?;
    let path = ticket.path.replacen("/v1/", &prefix, 1);
    let mut through = crate::terminal::live(hub_tcp.open_terminal(&path, None).await?).await?;
    for terminal in [&mut direct, &mut through] {
        tokio::time::timeout(Duration::from_secs(10), keystroke(terminal)).await??;
    }
    let mut direct_samples = Vec::with_capacity(ECHOES);
    let mut hub_samples = Vec::with_capacity(ECHOES);
    for _ in 0..ECHOES {
        direct_samples.push(keystroke(&mut direct).await?);
        hub_samples.push(keystroke(&mut through).await?);
    }
    let (direct_p50, direct_p99) = p50_p99(direct_samples);
    let (hub_p50, hub_p99) = p50_p99(hub_samples);
    report.add(
        "keystroke echo, direct to the node (WebSocket over TCP)",
        "none (the baseline)",
        format!("p50 {:.2} ms, p99 {:.2} ms", ms(direct_p50), ms(direct_p99)),
        None,
    );
    let extra_p50 = hub_p50.saturating_sub(direct_p50);
    let extra_p99 = hub_p99.saturating_sub(direct_p99);
    report.add(
        "keystroke echo through the hub (WebSocket to the hub, extended CONNECT over the link)",
        "p50 within 2 ms, p99 within 10 ms of direct",
        format!(
            "p50 {:.2} ms (+{:.2}), p99 {:.2} ms (+{:.2})",
            ms(hub_p50),
            ms(extra_p50),
            ms(hub_p99),
            ms(extra_p99)
        ),
        Some(extra_p50 <= Duration::from_millis(2) && extra_p99 <= Duration::from_millis(10)),
    );
    Ok(())
}

/// Sends one byte and times its echo.
async fn keystroke(terminal: &mut celistra_client::Terminal) -> Result<Duration> {
    let started = Instant::now();
    terminal.send_input(Bytes::from_static(b"x")).await?;
    loop {
        match terminal.next().await {
            TerminalEvent::Output(bytes) if bytes.contains(&b'x') => return Ok(started.elapsed()),
            TerminalEvent::Closed { code, reason } => bail!("terminal closed: {code} {reason}"),
            _ => {}
        }
    }
}

/// Figure 6: partitions of `machine`'s link (through `relay`) while it has events; after each
/// heal, the time until the hub's merged stream has them all; none may be lost or repeated.
async fn partitions(
    hub: &Hub,
    node: &Daemon,
    machine: &str,
    relay: &Relay,
    report: &mut Report,
) -> Result<()> {
    let (merged, mut arrivals) = mpsc::unbounded_channel();
    // Subscribed before the first partition: the hub answers once the subscription exists.
    let stream = hub
        .daemon
        .client()
        .send(Method::GET, "/v1/fleet/events?follow=true", None)
        .await?;
    ensure!(
        stream.status().is_success(),
        "/v1/fleet/events answered {}",
        stream.status()
    );
    let follower = tokio::spawn(follow_merged(stream, machine.to_owned(), merged));
    let _stop_following = AbortOnDrop(follower);
    let base = node_event_ids(node.client(), 0)
        .await?
        .last()
        .copied()
        .unwrap_or(0);
    let mut received: BTreeMap<u64, usize> = BTreeMap::new();
    let mut samples = Vec::with_capacity(PARTITIONS.len());
    let mut last = base;
    for (round, hold) in PARTITIONS.into_iter().enumerate() {
        relay.partition(true);
        let cut = Instant::now();
        let name = format!("bench-partition-{round}");
        let _: AgentInfo = node.client().spawn_agent(&sleeper(name.clone())).await?;
        let _: AgentInfo = node.client().stop_agent(&name).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let caused = node_event_ids(node.client(), last).await?;
        last = caused.last().copied().unwrap_or(last);
        tokio::time::sleep(hold.saturating_sub(cut.elapsed())).await;
        relay.partition(false);
        let healed = Instant::now();
        let mut missing: BTreeSet<u64> = caused.into_iter().collect();
        missing.retain(|id| !received.contains_key(id));
        while !missing.is_empty() {
            let id = tokio::time::timeout(Duration::from_secs(60), arrivals.recv())
                .await
                .with_context(|| format!("events {missing:?} not merged 60 s after the heal"))?
                .context("the merged stream ended")?;
            *received.entry(id).or_default() += 1;
            missing.remove(&id);
        }
        samples.push(healed.elapsed());
        eprintln!(
            "partition {round}: {:?} cut, events merged {:.0} ms after the heal",
            hold,
            ms(healed.elapsed())
        );
    }
    // Stragglers (a repeat would come now), then every event of the node since `base`.
    tokio::time::sleep(Duration::from_secs(2)).await;
    while let Ok(id) = arrivals.try_recv() {
        *received.entry(id).or_default() += 1;
    }
    let expected = node_event_ids(node.client(), base).await?;
    let lost = expected
        .iter()
        .filter(|id| !received.contains_key(id))
        .count();
    let repeated = received.values().filter(|&&n| n > 1).count();
    let rounds = samples.len();
    let mut sorted = samples.clone();
    sorted.sort();
    let p95 = quantile(&sorted, 0.95);
    report.add(
        "partition healed → all its events in the hub's merged stream",
        "p95 <= 5 s, none lost",
        format!(
            "p95 {:.0} ms over {rounds} rounds ({}); {} events, {lost} lost, {repeated} repeated",
            ms(p95),
            samples
                .iter()
                .zip(PARTITIONS)
                .map(|(s, hold)| format!("{}s cut: {:.0} ms", hold.as_secs(), ms(*s)))
                .collect::<Vec<_>>()
                .join(", "),
            expected.len()
        ),
        Some(p95 <= Duration::from_secs(5) && lost == 0 && repeated == 0),
    );
    Ok(())
}

/// Aborts a task when dropped (when its phase ends or fails).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The ids of a node's own events after `after` (its backlog, not followed).
async fn node_event_ids(client: &Client, after: u64) -> Result<Vec<u64>> {
    let query = EventsQuery {
        after: Some(after),
        follow: false,
    };
    let mut stream = client.stream_events(&query).await?;
    let mut ids = Vec::new();
    while let Some(frame) = stream.next_frame().await? {
        if let Some(id) = frame.id.and_then(|id| id.parse().ok()) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// Reads the hub's merged stream, sending on each of `machine`'s event ids.
async fn follow_merged(
    mut response: hyper::Response<hyper::body::Incoming>,
    machine: String,
    to: mpsc::UnboundedSender<u64>,
) {
    let mut parser = SseParser::default();
    while let Ok(Some(chunk)) = celistra_client::next_chunk(response.body_mut()).await {
        for frame in parser.feed(&chunk) {
            if let Ok(event) = serde_json::from_str::<FleetEvent>(&frame.data)
                && event.machine == machine
                && to.send(event.machine_event_id).is_err()
            {
                return;
            }
        }
    }
}

/// A TCP relay to a hub's link port that counts the bytes it forwards and can partition: while
/// partitioned it forwards nothing either way (held, as a silent network would) and closes new
/// connections at once.
struct Relay {
    addr: SocketAddr,
    bytes: Arc<AtomicU64>,
    partitioned: watch::Sender<bool>,
    _accepting: AbortOnDrop,
}

impl Relay {
    async fn start(target: SocketAddr) -> Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let bytes = Arc::new(AtomicU64::new(0));
        let (partitioned, gate) = watch::channel(false);
        let accepting = tokio::spawn(relay_forever(listener, target, Arc::clone(&bytes), gate));
        Ok(Relay {
            addr,
            bytes,
            partitioned,
            _accepting: AbortOnDrop(accepting),
        })
    }

    fn partition(&self, cut: bool) {
        self.partitioned.send_replace(cut);
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

async fn relay_forever(
    listener: TcpListener,
    target: SocketAddr,
    bytes: Arc<AtomicU64>,
    gate: watch::Receiver<bool>,
) {
    // Dropped with this task: every connection's pumps end with it.
    let mut pumps = JoinSet::new();
    while let Ok((node, _)) = listener.accept().await {
        if *gate.borrow() {
            continue;
        }
        let Ok(hub) = TcpStream::connect(target).await else {
            continue;
        };
        let _ = (node.set_nodelay(true), hub.set_nodelay(true));
        let (node_read, node_write) = node.into_split();
        let (hub_read, hub_write) = hub.into_split();
        pumps.spawn(pump(node_read, hub_write, Arc::clone(&bytes), gate.clone()));
        pumps.spawn(pump(hub_read, node_write, Arc::clone(&bytes), gate.clone()));
        while pumps.try_join_next().is_some() {}
    }
}

/// Copies one direction, holding whatever it read (and an end) while partitioned.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    bytes: Arc<AtomicU64>,
    mut gate: watch::Receiver<bool>,
) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        if gate.wait_for(|cut| !cut).await.is_err() {
            return;
        }
        let read = from.read(&mut buffer).await.unwrap_or(0);
        if gate.wait_for(|cut| !cut).await.is_err() {
            return;
        }
        if read == 0 || to.write_all(&buffer[..read]).await.is_err() {
            let _ = to.shutdown().await;
            return;
        }
        bytes.fetch_add(read as u64, Ordering::Relaxed);
    }
}

/// Simulated nodes in this process, each with its own link key and link; all links end on drop.
struct SimNodes {
    homes: tempfile::TempDir,
    stop: CancellationToken,
    groups: Vec<(BTreeSet<String>, CancellationToken)>,
}

impl SimNodes {
    fn new() -> Result<SimNodes> {
        Ok(SimNodes {
            homes: tempfile::Builder::new()
                .prefix("celistra-bench-fleet-")
                .tempdir()?,
            stop: CancellationToken::new(),
            groups: Vec::new(),
        })
    }

    /// Enrols `count` more nodes named `{prefix}-NNNN`, each serving `agents` fake agents; returns
    /// the group's index and how many joins had to be tried again.
    async fn add(
        &mut self,
        hub: &Hub,
        prefix: &str,
        count: usize,
        agents: usize,
    ) -> Result<(usize, usize)> {
        let listed = Arc::new(fake_agents(agents));
        let group = self.stop.child_token();
        let names: BTreeSet<String> = (0..count).map(|i| format!("{prefix}-{i:04}")).collect();
        let retried = AtomicU64::new(0);
        let joins = futures_util::stream::iter(&names)
            .map(|name| {
                let home = self.homes.path().join(name);
                let router = fake_router(name, Arc::clone(&listed));
                let (stop, retried) = (group.clone(), &retried);
                async move {
                    std::fs::create_dir(&home)?;
                    // Links queue behind the hub's handshake pacing (100/s) with the enrolments:
                    // in a storm of 1000 an enrolment may wait past its 10 s dial timeout. The
                    // code was not used then; a node's operator would run the join again.
                    let mut attempt = 0;
                    loop {
                        let request = hub.join_request(hub.link).await?;
                        match celistra_daemon::fleet_link(
                            &home,
                            name,
                            router.clone(),
                            request,
                            stop.clone(),
                        )
                        .await
                        {
                            Ok(()) => return Ok(()),
                            Err(e) if attempt < JOIN_ATTEMPTS && e.contains("cannot reach") => {
                                attempt += 1;
                                retried.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => bail!("{name} cannot join: {e}"),
                        }
                    }
                }
            })
            .buffer_unordered(ENROLLING)
            .collect::<Vec<Result<()>>>()
            .await;
        joins.into_iter().collect::<Result<Vec<()>>>()?;
        self.groups.push((names, group));
        Ok((self.groups.len() - 1, retried.into_inner() as usize))
    }

    fn names(&self, group: usize) -> &BTreeSet<String> {
        &self.groups[group].0
    }

    /// Ends a group's links.
    fn stop(&self, group: usize) {
        self.groups[group].1.cancel();
    }
}

impl Drop for SimNodes {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What a simulated node lists: `count` running agents.
fn fake_agents(count: usize) -> Vec<AgentInfo> {
    (0..count)
        .map(|i| AgentInfo {
            id: format!("sim{i:08x}"),
            name: format!("agent-{i:04}"),
            state: AgentState::Running,
            pid: Some(100_000 + i as u32),
            restarts: 0,
            exit_code: None,
            exit_signal: None,
            command: "sleep 100000".into(),
            workspace: "/tmp".into(),
            env_keys: Vec::new(),
            auto_restart: false,
            source: "bench".into(),
            run: 1,
            created_at_ms: 1,
            started_at_ms: Some(1),
            exited_at_ms: None,
            next_restart_at_ms: None,
            last_error: None,
            settings: EffectiveSettings {
                stop_signal: Signal::Term,
                stop_timeout_ms: 10_000,
                restart_max: 5,
                restart_window_secs: 60,
                backoff_initial_ms: 0,
                backoff_max_ms: 30_000,
                backoff_reset_secs: 60,
                scrollback_kb: 256,
            },
            mode: IoMode::Pty,
            sandbox: None,
            kind: String::new(),
            activity: None,
            exit_class: None,
            limit: None,
            model_errors: 0,
            schedule: None,
            restart_cron: None,
            next_run_at_ms: None,
            next_restart_cron_at_ms: None,
            worktree: None,
            watch: None,
            ready: None,
            readiness: None,
            liveness: None,
            waiting_for: None,
            depends_on: vec![],
            usage: None,
        })
        .collect()
}

/// A simulated node's API: health, its agents, and an event stream on which nothing happens. The
/// hub's audit checkpoint request gets a 404, so it witnesses nothing.
fn fake_router(machine: &str, agents: Arc<Vec<AgentInfo>>) -> axum::Router {
    let health = Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        machine_id: format!("sim-{machine}"),
        machine_name: machine.to_owned(),
        hostname: "localhost".into(),
        pid: std::process::id(),
        started_at_ms: 1,
        agents: agents.len() as u32,
        agents_running: agents.len() as u32,
        cgroups: false,
        history: Default::default(),
        audit: Default::default(),
        tls: None,
    };
    let one = Arc::clone(&agents);
    axum::Router::new()
        .route("/v1/health", get(move || async move { Json(health) }))
        .route(
            "/v1/agents",
            get(move || async move { Json(agents.as_ref().clone()) }),
        )
        .route(
            "/v1/agents/{id}",
            get(move |UrlPath(id): UrlPath<String>| async move {
                match one.iter().find(|a| a.id == id) {
                    Some(agent) => Json(agent.clone()).into_response(),
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            }),
        )
        .route("/v1/events", get(idle_events))
}

async fn idle_events() -> Response {
    let body = Body::from_stream(futures_util::stream::pending::<Result<Bytes, Infallible>>());
    ([("content-type", "text/event-stream")], body).into_response()
}

/// Figure 2: `fleet ls` with 1000 simulated nodes × 10 agents; and the hub's memory per such node.
async fn thousand_simulated(binary: &Path, report: &mut Report) -> Result<()> {
    let hub = Hub::start(binary).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = hub.daemon.rss_kib()?;
    let mut sims = SimNodes::new()?;
    let started = Instant::now();
    let (group, retried) = sims.add(&hub, "sim", SIM_NODES, SIM_AGENTS).await?;
    hub.wait_online(sims.names(group)).await?;
    hub.wait_cached(SIM_NODES * SIM_AGENTS).await?;
    let linked = started.elapsed();
    eprintln!("fleet: {SIM_NODES} simulated nodes linked and cached");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = hub.daemon.rss_kib()?;
    let (text, p99) =
        time_fleet_ls(&hub.tcp_client()?, LS_SIM_RUNS, SIM_NODES * SIM_AGENTS).await?;
    report.add(
        "`GET /v1/fleet/agents` on the hub, 1000 simulated nodes × 10 agents",
        "p99 <= 100 ms",
        format!(
            "{text} (all 1000 enrolled, linked and cached in {:.1} s; {retried} joins tried \
             again after a dial timeout)",
            linked.as_secs_f64()
        ),
        Some(p99 <= Duration::from_millis(100)),
    );
    report.add(
        "hub RSS per linked node with a 10-agent cache (1000 nodes)",
        "none",
        format!(
            "{:.0} KiB (hub {:.1} → {:.1} MiB)",
            after.saturating_sub(before) as f64 / SIM_NODES as f64,
            mib(before),
            mib(after)
        ),
        None,
    );
    Ok(())
}

/// Figures 3 and 7: the hub's RSS per idle linked node, then per node with a 100-agent cache;
/// then the hub restarted with the 100 nodes of the second group linked.
async fn memory_and_restart(binary: &Path, report: &mut Report) -> Result<()> {
    let mut hub = Hub::start(binary).await?;
    let mut sims = SimNodes::new()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base = hub.daemon.rss_kib()?;
    let (idle, _) = sims.add(&hub, "idle", MEMORY_NODES, 0).await?;
    hub.wait_online(sims.names(idle)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let linked = hub.daemon.rss_kib()?;
    let per_link = linked.saturating_sub(base) / MEMORY_NODES as u64;
    report.add(
        "hub RSS per idle linked node (100 nodes, no agents)",
        "<= 256 KiB",
        format!(
            "{per_link} KiB (hub {:.1} → {:.1} MiB)",
            mib(base),
            mib(linked)
        ),
        Some(per_link <= 256),
    );
    let (cached, _) = sims.add(&hub, "cache", MEMORY_NODES, CACHE_AGENTS).await?;
    hub.wait_online(sims.names(cached)).await?;
    hub.wait_cached(MEMORY_NODES * CACHE_AGENTS).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let full = hub.daemon.rss_kib()?;
    let per_cached = full.saturating_sub(linked) / MEMORY_NODES as u64;
    report.add(
        "hub RSS per linked node with a 100-agent cache (100 nodes)",
        "<= 2 MiB",
        format!(
            "{per_cached} KiB (hub {:.1} → {:.1} MiB)",
            mib(linked),
            mib(full)
        ),
        Some(per_cached <= 2048),
    );

    eprintln!("fleet: restarting the hub");
    sims.stop(idle);
    let link = hub.link.to_string();
    let stopping = Instant::now();
    let restarted = hub.daemon.restart_with(&hub_args(&link)).await?;
    hub.wait_online(sims.names(cached)).await?;
    let back = restarted.elapsed();
    report.add(
        "hub restart (SIGTERM, same state and link port) with 100 nodes: all online again",
        "<= 10 s",
        format!(
            "{:.2} s from the new hub's start ({:.2} s from SIGTERM)",
            back.as_secs_f64(),
            stopping.elapsed().as_secs_f64()
        ),
        Some(back <= Duration::from_secs(10)),
    );
    Ok(())
}
