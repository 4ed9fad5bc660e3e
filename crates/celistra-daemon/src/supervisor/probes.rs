//! The probe scheduler: one task holds every running agent's readiness and liveness probes in a
//! timer heap and starts each check when it falls due (not a task per agent sleeping). A check
//! is a short future of its own (an HTTP GET, a TCP connect, or the exec command run the way the
//! agent runs), bounded by its timeout; its result comes back here, goes into the agent's info,
//! and may publish `agent_ready` or make the agent's task restart the run (`agent_unhealthy`).
//! Line probes cost no check: the output pump matches lines and reports the first match.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use celistra_core::probe::{
    Check, Counter, HttpTarget, ProbeKind, STARTUP_INTERVAL_MS, Timing, Verdict,
};
use celistra_proto::EventKind;
use celistra_sandbox::{Launch, signal_group};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::agent::{AgentHandle, Command, Order};
use crate::actor::Actor;
use crate::now_ms;
use crate::services::Services;

/// Where an armed run keeps its line probe (readiness only, so at most one).
const LINE_SLOT: usize = 0;

/// One probe of a run, as the agent's task arms it.
pub(crate) struct ProbeSetup {
    pub kind: ProbeKind,
    pub check: Check,
    pub timing: Timing,
    /// For an exec probe: its command resolved like the agent's own launch.
    pub exec: Option<Launch>,
}

/// The scheduler's address: cheap to clone, one per agent task.
#[derive(Debug, Clone)]
pub(crate) struct Probes {
    sender: mpsc::UnboundedSender<Message>,
}

enum Message {
    Arm {
        handle: Arc<AgentHandle>,
        run: u64,
        probes: Vec<ProbeSetup>,
    },
    Disarm {
        agent_id: String,
        run: u64,
    },
    Result {
        agent_id: String,
        run: u64,
        slot: usize,
        ok: bool,
        message: String,
    },
}

impl Probes {
    /// Starts the scheduler; it ends when every `Probes` is dropped.
    pub(crate) fn start(services: Arc<Services>) -> Probes {
        let (sender, receiver) = mpsc::unbounded_channel();
        let probes = Probes { sender };
        tokio::spawn(
            Scheduler {
                services,
                armed: HashMap::new(),
                due: BinaryHeap::new(),
                results: probes.clone(),
            }
            .run(receiver),
        );
        probes
    }

    /// A run started: its probes are checked from now until [`Probes::disarm`].
    pub(crate) fn arm(&self, handle: Arc<AgentHandle>, run: u64, probes: Vec<ProbeSetup>) {
        if !probes.is_empty() {
            let _ = self.sender.send(Message::Arm {
                handle,
                run,
                probes,
            });
        }
    }

    /// The run ended: its probes stop.
    pub(crate) fn disarm(&self, agent_id: &str, run: u64) {
        let _ = self.sender.send(Message::Disarm {
            agent_id: agent_id.to_owned(),
            run,
        });
    }

    /// The run printed its readiness line.
    pub(crate) fn line_seen(&self, agent_id: &str, run: u64, line: &str) {
        let _ = self.sender.send(Message::Result {
            agent_id: agent_id.to_owned(),
            run,
            slot: LINE_SLOT,
            ok: true,
            message: format!("line: {}", clip(line)),
        });
    }

    fn report(&self, agent_id: String, run: u64, slot: usize, (ok, message): (bool, String)) {
        let _ = self.sender.send(Message::Result {
            agent_id,
            run,
            slot,
            ok,
            message,
        });
    }
}

/// A probe of an armed run.
struct Armed {
    setup: ProbeSetup,
    counter: Counter,
    in_flight: bool,
}

struct ArmedRun {
    handle: Arc<AgentHandle>,
    run: u64,
    probes: Vec<Armed>,
}

struct Scheduler {
    services: Arc<Services>,
    armed: HashMap<String, ArmedRun>,
    /// (when, agent id, run, slot): stale entries (a disarmed run) are skipped when they come up.
    due: BinaryHeap<Reverse<(Instant, String, u64, usize)>>,
    results: Probes,
}

impl Scheduler {
    async fn run(mut self, mut messages: mpsc::UnboundedReceiver<Message>) {
        loop {
            let next = self.due.peek().map(|Reverse((at, ..))| *at);
            tokio::select! {
                message = messages.recv() => match message {
                    Some(message) => self.on_message(message),
                    None => return,
                },
                () = sleep_until(next) => self.start_due_checks(),
            }
        }
    }

    fn on_message(&mut self, message: Message) {
        match message {
            Message::Arm {
                handle,
                run,
                probes,
            } => {
                let now = Instant::now();
                let agent_id = handle.id.clone();
                let mut armed = vec![];
                // The line probe takes `LINE_SLOT`, where `line_seen` reports it.
                let mut probes = probes;
                probes.sort_by_key(|p| !matches!(p.check, Check::Line(_)));
                for (slot, setup) in probes.into_iter().enumerate() {
                    if !matches!(setup.check, Check::Line(_)) {
                        let first = now + Duration::from_millis(setup.timing.initial_delay_ms);
                        self.due.push(Reverse((first, agent_id.clone(), run, slot)));
                    }
                    armed.push(Armed {
                        counter: Counter::new(setup.kind, setup.timing.failure_threshold),
                        setup,
                        in_flight: false,
                    });
                }
                self.armed.insert(
                    agent_id,
                    ArmedRun {
                        handle,
                        run,
                        probes: armed,
                    },
                );
            }
            Message::Disarm { agent_id, run } => {
                if self.armed.get(&agent_id).is_some_and(|a| a.run == run) {
                    self.armed.remove(&agent_id);
                }
            }
            Message::Result {
                agent_id,
                run,
                slot,
                ok,
                message,
            } => self.on_result(&agent_id, run, slot, ok, message),
        }
    }

    fn start_due_checks(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, ..))) = self.due.peek()
            && *at <= now
        {
            let Some(Reverse((_, agent_id, run, slot))) = self.due.pop() else {
                break;
            };
            let Some(armed) = self.armed.get_mut(&agent_id).filter(|a| a.run == run) else {
                continue;
            };
            let Some(probe) = armed.probes.get_mut(slot) else {
                continue;
            };
            if probe.in_flight {
                continue;
            }
            probe.in_flight = true;
            let check = probe.setup.check.clone();
            let exec = probe.setup.exec.clone();
            let timeout = Duration::from_millis(probe.setup.timing.timeout_ms);
            let results = self.results.clone();
            tokio::spawn(async move {
                let outcome = run_check(&check, exec.as_ref(), timeout).await;
                results.report(agent_id, run, slot, outcome);
            });
        }
    }

    fn on_result(&mut self, agent_id: &str, run: u64, slot: usize, ok: bool, message: String) {
        let Some(armed) = self.armed.get_mut(agent_id).filter(|a| a.run == run) else {
            return;
        };
        let Some(probe) = armed.probes.get_mut(slot) else {
            return;
        };
        probe.in_flight = false;
        let verdict = probe.counter.record(ok, message, now_ms());
        let kind = probe.setup.kind;
        let status = probe.counter.last().cloned();
        if !matches!(probe.setup.check, Check::Line(_)) {
            // Until the run is ready, readiness is checked at the start-up pace.
            let interval = match kind {
                ProbeKind::Readiness if !probe.counter.ready() => {
                    probe.setup.timing.interval_ms.min(STARTUP_INTERVAL_MS)
                }
                _ => probe.setup.timing.interval_ms,
            };
            self.due.push(Reverse((
                Instant::now() + Duration::from_millis(interval),
                agent_id.to_owned(),
                run,
                slot,
            )));
        }
        let handle = Arc::clone(&armed.handle);
        let name = {
            let mut info = handle.info_mut();
            if info.run != run {
                return;
            }
            match kind {
                ProbeKind::Readiness => info.readiness = status.clone().map(Box::new),
                ProbeKind::Liveness => info.liveness = status.clone().map(Box::new),
            }
            if let Verdict::Ready(ready) = verdict {
                info.ready = Some(ready);
            }
            info.name.clone()
        };
        let Some(status) = status else {
            return;
        };
        match verdict {
            Verdict::Same => {}
            Verdict::Ready(ready) => self.services.events.publish(EventKind::AgentReady {
                agent_id: agent_id.to_owned(),
                name,
                run,
                ready,
                probe: status,
            }),
            Verdict::Restart => {
                let reason = format!(
                    "liveness probe failed {} times in a row: {}",
                    probe.setup.timing.failure_threshold, status.message
                );
                self.services.events.publish(EventKind::AgentUnhealthy {
                    agent_id: agent_id.to_owned(),
                    name,
                    run,
                    failures: probe.setup.timing.failure_threshold,
                    reason: reason.clone(),
                });
                let (reply, _) = tokio::sync::oneshot::channel();
                let _ = handle.orders.give(Box::new(Order {
                    command: Command::Unhealthy(run, reason, reply),
                    actor: Actor::system(),
                }));
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs one check within `timeout`: whether it passed, and what it found.
async fn run_check(check: &Check, exec: Option<&Launch>, timeout: Duration) -> (bool, String) {
    let checking = async {
        match check {
            Check::Http(target) => http_get(target).await,
            Check::Tcp(address) => match tokio::net::TcpStream::connect(address.as_str()).await {
                Ok(_) => (true, format!("connected to {address}")),
                Err(e) => (false, format!("{address}: {e}")),
            },
            // Reported by the output pump, never scheduled.
            Check::Line(_) => (false, "no matching line yet".into()),
            Check::Exec(_) => (false, "the command could not be prepared".into()),
        }
    };
    if let (Check::Exec(_), Some(launch)) = (check, exec) {
        // It kills the command's process group itself when time is up.
        return exec_status(launch, timeout).await;
    }
    match tokio::time::timeout(timeout, checking).await {
        Ok(outcome) => outcome,
        Err(_) => (
            false,
            format!("no answer within {} ms", timeout.as_millis()),
        ),
    }
}

/// A GET on a fresh connection: 2xx and 3xx pass.
async fn http_get(target: &HttpTarget) -> (bool, String) {
    let stream = match tokio::net::TcpStream::connect(target.address.as_str()).await {
        Ok(stream) => stream,
        Err(e) => return (false, format!("{}: {e}", target.address)),
    };
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = match hyper::client::conn::http1::handshake(io).await {
        Ok(pair) => pair,
        Err(e) => return (false, format!("HTTP: {e}")),
    };
    let driving = tokio::spawn(connection);
    let request = hyper::Request::get(target.path.as_str())
        .header(hyper::header::HOST, target.host.as_str())
        .header(hyper::header::USER_AGENT, "celistrad-probe")
        .body(http_body_util::Empty::<bytes::Bytes>::new());
    let outcome = match request {
        Ok(request) => match sender.send_request(request).await {
            Ok(response) => {
                let status = response.status();
                (
                    status.is_success() || status.is_redirection(),
                    format!("HTTP {}", status.as_u16()),
                )
            }
            Err(e) => (false, format!("HTTP: {e}")),
        },
        Err(e) => (false, format!("HTTP: {e}")),
    };
    driving.abort();
    outcome
}

/// Runs the exec command to its end; on timeout its process group is killed.
async fn exec_status(launch: &Launch, timeout: Duration) -> (bool, String) {
    let spawned = match launch.spawn_with_pipes(None, false) {
        Ok(spawned) => spawned,
        Err(e) => return (false, format!("cannot run the command: {e}")),
    };
    drop(spawned.stdin);
    let mut child = spawned.child;
    let pid = child.pid();
    let reading = async {
        let (out, err) = tokio::join!(read_capped(spawned.stdout), read_capped(spawned.stderr));
        let status = child.wait().await;
        (status, if err.is_empty() { out } else { err })
    };
    match tokio::time::timeout(timeout, reading).await {
        Ok((Ok(exit), said)) => {
            let said = String::from_utf8_lossy(&said);
            let said = said.trim();
            let ok = exit.code == Some(0);
            let ended = match (exit.code, exit.signal) {
                (Some(code), _) => format!("exit code {code}"),
                (None, Some(signal)) => format!("killed by signal {signal}"),
                (None, None) => "ended".into(),
            };
            if said.is_empty() {
                (ok, ended)
            } else {
                (ok, format!("{ended}: {}", clip(said)))
            }
        }
        Ok((Err(e), _)) => (false, format!("cannot wait for the command: {e}")),
        Err(_) => {
            let _ = signal_group(pid, celistra_proto::Signal::Kill.number());
            (
                false,
                format!("no answer within {} ms", timeout.as_millis()),
            )
        }
    }
}

/// What a command prints, to its end, keeping the first 4 KiB: a chatty check never blocks on a
/// full pipe.
async fn read_capped(mut stream: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    const KEPT: usize = 4096;
    let (mut kept, mut buffer) = (Vec::new(), [0u8; KEPT]);
    while let Ok(read @ 1..) = stream.read(&mut buffer).await {
        let room = KEPT - kept.len();
        kept.extend_from_slice(&buffer[..read.min(room)]);
    }
    kept
}

/// At most 200 characters of what a check found.
fn clip(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}
